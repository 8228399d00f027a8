//! `sealpush preflight` against the real sshd: read-only (snapshot before == after), the anchor
//! digest equal to the real recipe run on the server, and every FAIL reason provoked.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sealpush::plan::{HostRef, Plan, SealedPlan};
use sealpush::preflight::{preflight, survey_anchor, PreflightRequest};
use sealpush::progress::NoProgress;
use sealpush::remote::sftp::SftpRemote;
use sealpush::store::{Store, StoredArtifact};

use super::sftp::{connect, opts, scratch};
use crate::support::sshd::Sshd;
use crate::support::Mounted;
use crate::support::{fixtures, TestCommand};

/// A remote layout like the seed's: `BASE/dot/iu-cutter` (the v0.4 anchor) and the v0.6
/// artifact packed into a private store.
struct Scene {
    _remote: tempfile::TempDir,
    _store: tempfile::TempDir,
    base: PathBuf,
    store: PathBuf,
    artifact: StoredArtifact,
}

impl Scene {
    fn new() -> Scene {
        let remote = scratch();
        let base = remote.path().join("dot");
        std::fs::create_dir(&base).unwrap();
        copy_tree(&fixtures().join("iu-cutter"), &base.join("iu-cutter"));
        let store = tempfile::tempdir().unwrap();
        let artifact = Store::open(Some(store.path()))
            .unwrap()
            .add_dir(
                &fixtures().join("iu-cutter-v0.6"),
                Some("iu-cutter-v0.6"),
                &Default::default(),
                &NoProgress,
            )
            .unwrap();
        Scene {
            base,
            store: store.path().to_path_buf(),
            artifact,
            _remote: remote,
            _store: store,
        }
    }
    fn anchor(&self) -> PathBuf {
        self.base.join("iu-cutter")
    }
    fn target(&self) -> PathBuf {
        self.base.join("iu-cutter-v0.6")
    }
    fn request(&self, remote: &SftpRemote) -> PreflightRequest {
        use sealpush::remote::Remote;
        PreflightRequest {
            host: HostRef {
                destination: remote.name().into(),
                transport: "sftp".into(),
                ssh_config: None,
            },
            artifact: self.artifact.artifact_ref(),
            target: self.target(),
            anchor: Some(self.anchor()),
            staging: None,
            probes: Vec::new(),
        }
    }
    fn cli(&self, sshd: &Sshd, config: &Path, alias: &str, extra: &[&str]) -> TestCommand {
        let mut args: Vec<std::ffi::OsString> = vec![
            "preflight".into(),
            "--host".into(),
            alias.into(),
            "--ssh-config".into(),
            config.into(),
            "--store".into(),
            self.store.clone().into(),
            "--artifact".into(),
            "iu-cutter-v0.6".into(),
            "--target".into(),
            self.target().into(),
            "--anchor".into(),
            self.anchor().into(),
            "--op-timeout".into(),
            "20".into(),
        ];
        args.extend(extra.iter().map(Into::into));
        let _ = sshd;
        TestCommand::sealpush(&self.base, args)
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The real recipe, run on the server over ssh: the independent oracle for anchor digests.
fn real_recipe(sshd: &Sshd, dir: &Path) -> String {
    let parent = dir.parent().unwrap().to_str().unwrap();
    let name = dir.file_name().unwrap().to_str().unwrap();
    let out = sshd.exec_ok(&format!(
        "cd '{parent}' && find '{name}' -type f | LC_ALL=C sort | LC_ALL=C xargs sha256sum | sha256sum"
    ));
    out[..64].to_string()
}

/// Paths, kinds, modes, sizes, mtimes (ns), owners and content digests of every entry.
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let content = if ft.is_file() {
            sealpush::digest::Digest::of(&std::fs::read(&p).unwrap()).to_hex()
        } else if ft.is_symlink() {
            std::fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.insert(
            p.as_os_str().as_bytes().to_vec(),
            format!(
                "{:o} {} {}.{} {}:{} {content}",
                md.mode(),
                md.size(),
                md.mtime(),
                md.mtime_nsec(),
                md.uid(),
                md.gid()
            ),
        );
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

fn failed_checks(plan: &Plan) -> Vec<String> {
    plan.checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn pass_is_read_only_and_anchor_matches_the_real_recipe() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let scene = Scene::new();
    let before = snapshot(&scene.base);
    let plan_file = scene.base.parent().unwrap().join("plan.json");
    let out = scene
        .cli(
            sshd,
            &sshd.config_path(),
            sshd.alias(),
            &[
                "--plan-out",
                plan_file.to_str().unwrap(),
                "--probe",
                "echo probe-ran",
            ],
        )
        .ok();
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(snapshot(&scene.base), before, "preflight changed the host");
    assert!(
        report.ends_with("verdict: PASS\n") || report.contains("verdict: PASS\nreason: warning"),
        "{report}"
    );
    let expected = real_recipe(sshd, &scene.anchor());
    assert!(
        report.contains(&format!("anchor_tree_sha256: {expected}")),
        "{report}"
    );
    assert!(report.contains("stdout: probe-ran"), "{report}");
    let sealed = SealedPlan::from_json(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    let plan = sealed.plan;
    assert_eq!(
        plan.anchor.as_ref().unwrap().recipe_digest.to_hex(),
        expected
    );
    assert_eq!(plan.target, scene.target());
    assert!(plan.staging.starts_with(&scene.base));
    assert!(plan
        .staging
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(".iu-cutter-v0.6.sealpush-stage-"));
    assert_eq!(plan.facts.home, "/root");
    assert!(!plan.operations.is_empty() && !plan.rollback.is_empty());
    // The plan's anchor also matches the real recipe recomputed independently now.
    assert_eq!(real_recipe(sshd, &scene.anchor()), expected);
    // Nothing but the plan file appeared next to the scene.
    assert_eq!(snapshot(&scene.base), before);

    // --json prints the same sealed plan shape.
    let out = scene
        .cli(sshd, &sshd.config_path(), sshd.alias(), &["--json"])
        .ok();
    let json = String::from_utf8(out.stdout).unwrap();
    let again = SealedPlan::from_json(&json).unwrap();
    assert_eq!(again.plan.anchor.unwrap().recipe_digest.to_hex(), expected);
}

#[test]
fn anchor_digest_over_sftp_equals_the_real_recipe_on_awkward_names() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let d = scratch();
    let root = d.path().join("awk ward");
    std::fs::create_dir(&root).unwrap();
    let names: &[&str] = &[
        "plain.txt",
        "with space",
        "tab\there",
        "new\nline",
        "back\\slash",
        "-leading-dash",
        "caf\u{e9}",
        "cafe\u{301}",
        "UPPER",
        "lower",
        "sub dir/inner file",
        "sub dir/deeper/x",
        "empty",
        "dots..name",
        "trailing-space ",
    ];
    for (i, n) in names.iter().enumerate() {
        let p = root.join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("content {i}\n").repeat(i * 100)).unwrap();
    }
    std::fs::create_dir(root.join("empty dir")).unwrap();
    std::os::unix::fs::symlink("plain.txt", root.join("link to file")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    std::fs::write(root.join("big"), vec![7u8; 3_000_000]).unwrap();
    std::fs::set_permissions(
        root.join("plain.txt"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let (anchor, manifest) = survey_anchor(&r, &root, &NoProgress).unwrap();
    assert_eq!(anchor.recipe_digest.to_hex(), real_recipe(sshd, &root));
    // The same walk gave the manifest: it equals a local scan of the same tree.
    let local = sealpush::manifest::scan_dir(&root, Some(1), &NoProgress).unwrap();
    assert_eq!(manifest.entries, local.entries);
    assert_eq!(anchor.tree_identity, local.identity());

    // And on the bundled fixtures.
    for f in ["iu-cutter", "iu-cutter-v0.6"] {
        let dst = d.path().join(f);
        copy_tree(&fixtures().join(f), &dst);
        let (a, _) = survey_anchor(&r, &dst, &NoProgress).unwrap();
        assert_eq!(a.recipe_digest.to_hex(), real_recipe(sshd, &dst), "{f}");
    }
}

#[test]
fn target_that_exists_in_any_form_fails() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let scene = Scene::new();
    let t = scene.target();
    for make in ["file", "empty dir", "dangling symlink", "symlink to dir"] {
        match make {
            "file" => std::fs::write(&t, b"").unwrap(),
            "empty dir" => std::fs::create_dir(&t).unwrap(),
            "dangling symlink" => std::os::unix::fs::symlink("nowhere", &t).unwrap(),
            _ => std::os::unix::fs::symlink(scene.anchor(), &t).unwrap(),
        }
        let before = snapshot(&scene.base);
        let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
        assert_eq!(snapshot(&scene.base), before);
        assert!(!plan.verdict.pass, "{make}");
        assert_eq!(
            failed_checks(&plan),
            vec!["target-absent"],
            "{make}: {:?}",
            plan.verdict
        );
        assert!(
            plan.verdict.reasons[0].contains("already exists"),
            "{:?}",
            plan.verdict
        );
        if make == "empty dir" {
            std::fs::remove_dir(&t).unwrap();
        } else {
            std::fs::remove_file(&t).unwrap();
        }
    }
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert!(plan.verdict.pass, "{:?}", plan.verdict);
}

#[test]
fn paths_and_names_the_deploy_cannot_use_safely_fail_the_survey() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let scene = Scene::new();
    let name = scene.anchor().file_name().unwrap().to_owned();
    let has = |plan: &Plan, check: &str| failed_checks(plan).iter().any(|c| c == check);

    // The anchor spelled through an alias of its parent (`alias -> .`), the target inside the
    // anchor's real path: the spellings share no prefix, the resolved paths do.
    std::os::unix::fs::symlink(".", scene.base.join("alias")).unwrap();
    let mut req = scene.request(&r);
    req.anchor = Some(scene.base.join("alias").join(&name));
    req.target = scene.anchor().join("new");
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert!(has(&plan, "anchor-disjoint"), "{:?}", plan.verdict);

    // --staging inside the anchor.
    let mut req = scene.request(&r);
    req.staging = Some(scene.anchor());
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert!(has(&plan, "anchor-disjoint"), "{:?}", plan.verdict);

    // A dangling symlink at the target, spelled with a trailing `/` (which lstat follows).
    std::os::unix::fs::symlink("nowhere", scene.target()).unwrap();
    let mut req = scene.request(&r);
    req.target = PathBuf::from(format!("{}/", scene.target().display()));
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert!(has(&plan, "target-absent"), "{:?}", plan.verdict);
    std::fs::remove_file(scene.target()).unwrap();

    // An artifact with a name the SFTP client cannot send: FAIL now, not halfway into the
    // deploy. (Over the local transport the same artifact is fine.)
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("ok"), b"a").unwrap();
    std::fs::write(
        tree.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        b"b",
    )
    .unwrap();
    let odd = Store::open(Some(&scene.store))
        .unwrap()
        .add_dir(tree.path(), Some("odd"), &Default::default(), &NoProgress)
        .unwrap();
    let mut req = scene.request(&r);
    req.artifact = odd.artifact_ref();
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert_eq!(
        failed_checks(&plan),
        vec!["artifact-names"],
        "{:?}",
        plan.verdict
    );

    // A target the plan's JSON cannot spell: an error that says so.
    let mut req = scene.request(&r);
    req.target = scene.base.join(std::ffi::OsStr::from_bytes(b"new\xff"));
    let err = preflight(&r, &req, &NoProgress).unwrap_err().to_string();
    assert!(err.contains("not valid UTF-8"), "{err}");
}

#[test]
fn leftovers_symlinked_and_world_writable_parents_fail() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let scene = Scene::new();

    // A half-finished deploy: a staging leftover, then a lock in the work dir.
    let leftover = scene
        .base
        .join(".iu-cutter-v0.6.sealpush-stage-0123456789abcdef");
    std::fs::create_dir(&leftover).unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert_eq!(failed_checks(&plan), vec!["no-unfinished-deploy"]);
    std::fs::remove_dir(&leftover).unwrap();
    let work = scene.base.join(".sealpush/iu-cutter-v0.6");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("lock"), b"pid 1").unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert_eq!(failed_checks(&plan), vec!["no-unfinished-deploy"]);
    assert!(
        plan.verdict.reasons[0].contains("lock"),
        "{:?}",
        plan.verdict
    );
    // What a deploy cut off while taking the lock left: the file the lock is written in.
    std::fs::remove_file(work.join("lock")).unwrap();
    let temp = work.join("lock.new-0123456789abcdef-0123456789abcdef");
    std::fs::write(&temp, b"").unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert_eq!(failed_checks(&plan), vec!["no-unfinished-deploy"]);
    assert!(
        plan.verdict.reasons[0].contains("cut off while taking it"),
        "{:?}",
        plan.verdict
    );
    std::fs::remove_file(&temp).unwrap();
    // A work dir the deploy would refuse: `.sealpush` as a symlink.
    let elsewhere = scene.base.parent().unwrap().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::rename(scene.base.join(".sealpush"), elsewhere.join(".sealpush")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join(".sealpush"), scene.base.join(".sealpush")).unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert_eq!(failed_checks(&plan), vec!["work-dir"], "{:?}", plan.verdict);
    assert!(
        plan.verdict.reasons[0].contains("is a symlink"),
        "{:?}",
        plan.verdict
    );
    std::fs::remove_file(scene.base.join(".sealpush")).unwrap();
    std::fs::rename(elsewhere.join(".sealpush"), scene.base.join(".sealpush")).unwrap();
    std::fs::write(work.join("lock"), b"pid 1").unwrap();
    // What a rollback cut off after moving the tree aside left.
    std::fs::remove_file(work.join("lock")).unwrap();
    std::fs::create_dir(work.join("rolling-back-0123456789abcdef")).unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert_eq!(failed_checks(&plan), vec!["no-unfinished-deploy"]);
    assert!(
        plan.verdict.reasons[0].contains("a rollback that did not finish"),
        "{:?}",
        plan.verdict
    );
    std::fs::remove_dir_all(scene.base.join(".sealpush")).unwrap();
    // Look-alikes only warn.
    std::fs::write(scene.base.join("iu-cutter-v0.6.tar.gz"), b"").unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert!(plan.verdict.pass);
    assert!(plan
        .verdict
        .reasons
        .iter()
        .any(|w| w.starts_with("warning:") && w.contains("iu-cutter-v0.6.tar.gz")));

    // A parent that does not exist: two reasons, neither claiming what could not be checked.
    let mut req = scene.request(&r);
    req.target = scene.base.join("no-such-dir/iu-cutter-v0.6");
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert_eq!(
        failed_checks(&plan),
        vec!["parent-directory", "staging-same-filesystem"]
    );
    assert!(plan.verdict.reasons[0].contains("does not exist"));
    assert!(
        plan.verdict.reasons[1].contains("is not a usable directory"),
        "{:?}",
        plan.verdict
    );

    // A symlink among the target's components.
    let via = scene.base.parent().unwrap().join("via-link");
    std::os::unix::fs::symlink(&scene.base, &via).unwrap();
    let mut req = scene.request(&r);
    req.target = via.join("iu-cutter-v0.6");
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert!(
        failed_checks(&plan).contains(&"parent-no-symlink-components".to_string()),
        "{:?}",
        plan.verdict
    );

    // A world-writable parent without the sticky bit.
    std::fs::set_permissions(&scene.base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert_eq!(
        failed_checks(&plan),
        vec!["parent-no-world-writable-components"]
    );
    std::fs::set_permissions(&scene.base, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert!(plan.verdict.pass, "sticky is fine: {:?}", plan.verdict);
}

/// Preflight with `--staging dir` fails on staging-same-filesystem alone, for the reason `why`.
fn assert_staging_refused(r: &SftpRemote, req: &mut PreflightRequest, dir: &Path, why: &str) {
    req.staging = Some(dir.to_path_buf());
    let plan = preflight(r, req, &NoProgress).unwrap();
    assert_eq!(
        failed_checks(&plan),
        vec!["staging-same-filesystem"],
        "{:?}",
        plan.verdict
    );
    assert!(plan.verdict.reasons[0].contains(why), "{:?}", plan.verdict);
}

#[test]
fn staging_on_another_filesystem_and_lack_of_space_fail() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let scene = Scene::new();
    let Some(other) = Mounted::tmpfs(&scene.base.parent().unwrap().join("other-fs"), "64m") else {
        return;
    };
    let mut req = scene.request(&r);
    assert_staging_refused(&r, &mut req, &other.0, "different filesystems");
    // A shared staging dir on the same filesystem passes with a warning.
    let shared = scene.base.parent().unwrap().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    req.staging = Some(shared.clone());
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert!(plan.verdict.pass, "{:?}", plan.verdict);
    assert!(plan.staging.starts_with(&shared));
    assert!(
        plan.verdict.reasons.iter().any(|w| w.contains("shared")),
        "{:?}",
        plan.verdict
    );

    // Not enough space: the target's parent on a 1 MiB tmpfs.
    let small = Mounted::tmpfs(&scene.base.parent().unwrap().join("small"), "1m").unwrap();
    let mut req = scene.request(&r);
    req.target = small.0.join("iu-cutter-v0.6");
    req.anchor = None;
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert_eq!(failed_checks(&plan), vec!["space"], "{:?}", plan.verdict);
    drop(small);

    // Bytes to spare but almost no inodes (a tmpfs with nr_inodes): the deploy would run out
    // at its first mkdir.
    let few = Mounted::tmpfs(
        &scene.base.parent().unwrap().join("few-inodes"),
        "64m,nr_inodes=8",
    )
    .unwrap();
    let mut req = scene.request(&r);
    req.target = few.0.join("iu-cutter-v0.6");
    req.anchor = None;
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert_eq!(failed_checks(&plan), vec!["inodes"], "{:?}", plan.verdict);
    drop(few);
    drop(other);
}

/// A bind mount shows the same filesystem id as its source, yet a rename out of it fails
/// (EXDEV): staging there must not pass as "same filesystem".
#[test]
fn staging_behind_a_bind_mount_fails() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let scene = Scene::new();
    let top = scene.base.parent().unwrap();
    std::fs::create_dir(top.join("bind-src")).unwrap();
    let Some(bound) = Mounted::bind(&top.join("bind-src"), &top.join("bind-at")) else {
        return;
    };
    let mut req = scene.request(&r);
    assert_staging_refused(&r, &mut req, &bound.0, "different mounts");
    // Proof that the check is about the mount, not the filesystem: the bind mount's source,
    // the same directory on the target's own mount, passes, and says why.
    req.staging = Some(top.join("bind-src"));
    let plan = preflight(&r, &req, &NoProgress).unwrap();
    assert!(plan.verdict.pass, "{:?}", plan.verdict);
    let evidence = &plan
        .checks
        .iter()
        .find(|c| c.name == "staging-same-filesystem")
        .unwrap()
        .evidence;
    assert!(evidence.contains("the same mount"), "{evidence}");
    drop(bound);
}

#[test]
fn unprivileged_login_fails_with_permission_denied() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let c = sshd.client_unprivileged();
    let r = SftpRemote::connect(&c.alias, &opts(&c.path)).unwrap();
    let scene = Scene::new();
    // The scene is under a root-owned dir; let the user look but not write.
    for p in [scene.base.parent().unwrap(), &scene.base] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A service login whose home root owns (as www-data's /var/www) is still not taken for
    // root: who the login is comes from the server process itself, not from its home's owner.
    struct Restore(PathBuf, u32, u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::os::unix::fs::chown(&self.0, Some(self.1), Some(self.2));
        }
    }
    let home = PathBuf::from("/home").join(crate::support::sshd::TEST_USER);
    let owner = std::fs::metadata(&home).unwrap();
    let _restore = Restore(home.clone(), owner.uid(), owner.gid());
    std::os::unix::fs::chown(&home, Some(0), Some(0)).unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert_eq!(
        failed_checks(&plan),
        vec!["parent-writable"],
        "{:?}",
        plan.verdict
    );
    assert!(
        plan.verdict.reasons[0].contains("permission denied"),
        "{:?}",
        plan.verdict
    );
    // A parent the user cannot even read: cannot tell whether the target exists -> FAIL.
    std::fs::set_permissions(&scene.base, std::fs::Permissions::from_mode(0o700)).unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert!(!plan.verdict.pass);
    assert!(
        plan.verdict
            .reasons
            .iter()
            .any(|x| x.contains("permission denied")),
        "{:?}",
        plan.verdict
    );
}

#[test]
fn unreachable_and_untrusted_hosts_fail_with_exit_1() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let scene = Scene::new();
    let unknown = sshd.client_with_known_hosts("unknown-key-preflight", "");
    let out = scene
        .cli(sshd, &unknown.path, &unknown.alias, &[])
        .expect_code(1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verdict: FAIL"), "{stdout}");
    assert!(
        stdout.contains("--accept-new-host-key") && stdout.contains("SHA256:"),
        "{stdout}"
    );
    let changed = sshd.client_changed_key();
    let out = scene
        .cli(
            sshd,
            &changed.path,
            &changed.alias,
            &["--accept-new-host-key"],
        )
        .expect_code(1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("CHANGED"));
    let refused = crate::support::RefusedPort::bind();
    let port = refused.port;
    let out = scene
        .cli(
            sshd,
            &sshd.config_path(),
            &format!("ssh://root@127.0.0.1:{port}"),
            &[],
        )
        .expect_code(1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("verdict: FAIL") && stdout.contains("Connection refused"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sealpush: error: preflight verdict FAIL: connection"),
        "{stderr}"
    );
}

#[test]
fn killing_sealpush_mid_operation_leaves_no_ssh_behind() {
    let sshd = crate::sshd_or_skip!();
    let scene = Scene::new();
    let marker = scene.base.parent().unwrap().join("probe-started");
    let probe = format!("touch '{}'; sleep 30", marker.display());
    let mut cmd = scene.cli(
        &sshd,
        &sshd.config_path(),
        sshd.alias(),
        &["--probe", &probe],
    );
    let mut child = cmd
        .cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !marker.exists() {
        assert!(t.elapsed().as_secs() < 60, "the probe never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // sealpush now waits on the probe: its ssh children are the sftp channel and the probe.
    let kids = crate::support::sshd::descendants(child.id());
    let ssh: Vec<u32> = kids
        .iter()
        .copied()
        .filter(|p| crate::support::sshd::cmdline(*p).starts_with("ssh "))
        .collect();
    assert!(
        ssh.len() >= 2,
        "expected the sftp and probe ssh children: {:?}",
        kids.iter()
            .map(|p| crate::support::sshd::cmdline(*p))
            .collect::<Vec<_>>()
    );
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let t = std::time::Instant::now();
    loop {
        let alive: Vec<String> = ssh
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| !s.contains(") Z"))
            })
            .map(|p| crate::support::sshd::cmdline(*p))
            .collect();
        if alive.is_empty() {
            break;
        }
        // Generous for a loaded machine: the property is that none is left, not how fast.
        assert!(
            t.elapsed().as_secs() < 60,
            "ssh outlived a killed sealpush: {alive:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn anchor_with_a_non_utf8_name_fails_clearly() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let r = connect(sshd);
    let scene = Scene::new();
    std::fs::write(
        scene
            .anchor()
            .join(std::ffi::OsStr::from_bytes(b"latin1-\xe9")),
        b"x",
    )
    .unwrap();
    let plan = preflight(&r, &scene.request(&r), &NoProgress).unwrap();
    assert_eq!(failed_checks(&plan), vec!["anchor"], "{:?}", plan.verdict);
    assert!(
        plan.verdict.reasons[0].contains("not valid UTF-8"),
        "{:?}",
        plan.verdict
    );
}

/// An anchor with unreadable files: the error names the first of them in byte order (here
/// the deepest, the last a breadth-first walk finds), whichever read fails first among the
/// hundreds in flight; a directory that cannot be listed stops the survey with its own error;
/// and the session still works afterwards.
#[test]
fn anchor_read_errors_name_the_first_unreadable_path_in_byte_order() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let c = sshd.client_unprivileged();
    let r = SftpRemote::connect(&c.alias, &opts(&c.path)).unwrap();
    let remote = scratch();
    let anchor = remote.path().join("old");
    let deep = anchor.join("a/deep/deeper");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::create_dir_all(anchor.join("b")).unwrap();
    // Plenty to read; an unreadable file among them, and one at depth 3, found last but first
    // in byte order.
    for i in 0..400 {
        std::fs::write(anchor.join(format!("b/f{i:03}")), format!("file {i}")).unwrap();
    }
    std::fs::write(anchor.join("b/y-unreadable"), b"y").unwrap();
    std::fs::write(deep.join("x-unreadable"), b"x").unwrap();
    let mut dirs = vec![remote.path().to_path_buf()];
    dirs.extend(
        ["old", "old/a", "old/a/deep", "old/a/deep/deeper", "old/b"].map(|d| remote.path().join(d)),
    );
    for d in &dirs {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in [anchor.join("b/y-unreadable"), deep.join("x-unreadable")] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o000)).unwrap();
    }

    for _ in 0..3 {
        let err = survey_anchor(&r, &anchor, &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a/deep/deeper/x-unreadable") && err.contains("permission denied"),
            "{err}"
        );
    }

    // A directory that cannot be listed: its error.
    std::fs::set_permissions(
        anchor.join("a/deep"),
        std::fs::Permissions::from_mode(0o311),
    )
    .unwrap();
    let err = survey_anchor(&r, &anchor, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a/deep") && !err.contains("unreadable") && err.contains("permission denied"),
        "{err}"
    );
    // The session is still usable afterwards.
    std::fs::set_permissions(
        anchor.join("a/deep"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        anchor.join("b/y-unreadable"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(
        deep.join("x-unreadable"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (a, _) = survey_anchor(&r, &anchor, &NoProgress).unwrap();
    assert_eq!(a.files, 402);
    assert_eq!(a.recipe_digest.to_hex(), real_recipe(sshd, &anchor));
}
