//! Integration tests for `sealpush deploy`, `rollback` and `status`: the seed's scenario end to
//! end and every fault of issue 5, against the local transport (pure engine logic) and a real
//! OpenSSH sshd (`sshd.rs`). Expected values come from the real tools: the recipe digest from
//! `bash -c 'find | sort | xargs sha256sum | sha256sum'` run on the host, `sha256sum -c` on the
//! host, and snapshots of the host's filesystem taken with std::fs.
//!
//! Plans come from the real `sealpush preflight`; the anchor digest it records is checked
//! against the real pipeline on the host before each deploy.

mod local;
mod sshd;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use sealpush::digest::Digest;
use sealpush::progress::NoProgress;
use sealpush::store::{Store, StoredArtifact};

use crate::support::{fixtures, TestCommand};

/// Where a test deploys to.
#[derive(Clone, Debug)]
pub enum Host {
    Local,
    Ssh { alias: String, config: PathBuf },
}

/// One scenario: a "host" tree (this machine's filesystem, also what sshd serves) with the v0.4
/// anchor at `<parent>/iu-cutter`, a store holding the packed v0.6, a state dir, plan files.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub host: Host,
    pub parent: PathBuf,
    pub anchor: PathBuf,
    pub target: PathBuf,
    pub state: PathBuf,
}

/// The v0.6 artifact, packed once per test binary into a shared store (read-only afterwards).
fn v06() -> &'static (tempfile::TempDir, StoredArtifact) {
    static ART: std::sync::OnceLock<(tempfile::TempDir, StoredArtifact)> =
        std::sync::OnceLock::new();
    ART.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("sealpush-deploy-store-")
            .tempdir()
            .unwrap();
        let store = Store::open(Some(d.path())).unwrap();
        let opts = sealpush::pack::PackOptions::new(sealpush::pack::Format::TarZst);
        let art = store
            .add_dir(&fixtures().join("iu-cutter-v0.6"), None, &opts, &NoProgress)
            .unwrap();
        // A static is never dropped, so its TempDir would stay in /tmp after every run (288 of
        // them here): removed when the test binary exits instead.
        extern "C" fn remove_store() {
            if let Some((d, _)) = ART.get() {
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
        // SAFETY: registers a plain function with no arguments; it runs once, at exit.
        unsafe {
            libc::atexit(remove_store);
        }
        (d, art)
    })
}

pub fn copy_tree(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Env {
    pub fn new(host: Host) -> Env {
        Env::new_in(host, None)
    }

    /// `host_dir`: put the host side there (a tmpfs, ...) instead of a fresh temp dir.
    pub fn new_in(host: Host, host_dir: Option<&Path>) -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("sealpush-deploy-")
            .tempdir()
            .unwrap();
        let base = host_dir.map_or_else(|| tmp.path().join("host"), Path::to_path_buf);
        let parent = base.join("opt/incomex/dot");
        std::fs::create_dir_all(&parent).unwrap();
        let anchor = parent.join("iu-cutter");
        copy_tree(&fixtures().join("iu-cutter"), &anchor);
        let state = tmp.path().join("state");
        Env {
            target: parent.join("iu-cutter-v0.6"),
            tmp,
            host,
            parent,
            anchor,
            state,
        }
    }

    /// A shell command run "on the host": over real ssh for the sshd host, else locally.
    pub fn host_sh(&self, cmd: &str) -> Output {
        match &self.host {
            Host::Local => std::process::Command::new("bash")
                .arg("-c")
                .arg(cmd)
                .output()
                .unwrap(),
            Host::Ssh { alias, config } => std::process::Command::new("ssh")
                .arg("-F")
                .arg(config)
                .arg(alias)
                .arg("--")
                .arg(cmd)
                .output()
                .unwrap(),
        }
    }

    /// The seed's recipe, run for real on the host.
    pub fn real_recipe(&self, dir: &Path) -> String {
        let cmd = format!(
            "cd '{}' && find '{}' -type f | LC_ALL=C sort | xargs sha256sum | sha256sum",
            dir.parent().unwrap().display(),
            dir.file_name().unwrap().to_string_lossy()
        );
        let out = self.host_sh(&cmd);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    }

    /// The plan for deploying v0.6 to `self.target` beside the anchor, written by the real
    /// `sealpush preflight` (which must PASS).
    pub fn plan(&self) -> PathBuf {
        let (store, art) = v06();
        self.plan_for(store.path(), art)
    }

    /// Packs `src` (level 1: these trees are random bytes) into a new store `<tmp>/<name>`.
    pub fn store_tree(&self, src: &Path, name: &str) -> (PathBuf, StoredArtifact) {
        let store_dir = self.tmp.path().join(name);
        let store = Store::open(Some(&store_dir)).unwrap();
        let mut opts = sealpush::pack::PackOptions::new(sealpush::pack::Format::TarZst);
        opts.level = 1;
        let art = store.add_dir(src, None, &opts, &NoProgress).unwrap();
        (store_dir, art)
    }

    /// The plan for deploying `art` (from the store at `store`) to `self.target`.
    pub fn plan_for(&self, store: &Path, art: &StoredArtifact) -> PathBuf {
        self.plan_with(store, art, &[])
    }

    /// [`Env::plan_for`] with `extra` preflight arguments.
    pub fn plan_with(&self, store: &Path, art: &StoredArtifact, extra: &[&str]) -> PathBuf {
        let path = self.tmp.path().join("plan.json");
        let mut args: Vec<std::ffi::OsString> = vec![
            "preflight".into(),
            "--host".into(),
            self.destination().into(),
            "--artifact".into(),
            art.id.clone().expect("stored artifact has an id").into(),
            "--store".into(),
            store.into(),
            "--target".into(),
            self.target.clone().into(),
            "--anchor".into(),
            self.anchor.clone().into(),
            "--plan-out".into(),
            path.clone().into(),
        ];
        if let Host::Ssh { config, .. } = &self.host {
            args.push("--ssh-config".into());
            args.push(config.into());
        }
        args.extend(extra.iter().map(Into::into));
        let out = self.sealpush(args).ok();
        // Independent check of what preflight recorded: the real recipe on the host.
        let plan: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            plan["plan"]["anchor"]["recipe_digest"].as_str(),
            Some(self.real_recipe(&self.anchor).as_str()),
            "{}",
            stdout(&out)
        );
        path
    }

    pub fn destination(&self) -> String {
        match &self.host {
            Host::Local => "local".into(),
            Host::Ssh { alias, .. } => alias.clone(),
        }
    }

    /// `sealpush status` of the target passes, then `sealpush rollback PLAN` re-proves the
    /// anchor and leaves the host exactly as `before`.
    pub fn status_passes_then_rollback_restores(
        &self,
        plan: &Path,
        before: &BTreeMap<PathBuf, String>,
    ) {
        let mut args = self.status_args();
        let st = self.sealpush(&args).ok();
        assert!(stdout(&st).ends_with("verdict: PASS\n"), "{}", stdout(&st));
        // The same report for scripts.
        args.push("--json".into());
        let st: serde_json::Value =
            serde_json::from_slice(&self.sealpush(&args).ok().stdout).unwrap();
        assert_eq!(st["problems"], serde_json::json!([]), "{st}");
        assert_eq!(st["target"], self.target.to_str().unwrap(), "{st}");
        assert!(st["files_checked"].as_u64().unwrap() > 0, "{st}");
        let rb = self.rollback(plan, &["--json"]).ok();
        let rb: serde_json::Value = serde_json::from_slice(&rb.stdout).unwrap();
        assert_eq!(rb["complete"], true, "{rb}");
        assert_eq!(rb["anchor"]["expected"], rb["anchor"]["actual"], "{rb}");
        assert_eq!(&self.snapshot(), before, "host not exactly as before");
    }

    /// `status --host … --target …` of this env's target.
    pub fn status_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "status".into(),
            "--host".into(),
            self.destination().into(),
            "--target".into(),
            self.target.clone().into(),
        ];
        if let Host::Ssh { config, .. } = &self.host {
            args.extend(["--ssh-config".into(), config.clone().into()]);
        }
        args
    }

    /// `sealpush ARGS` with this env's state dir.
    pub fn sealpush<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        TestCommand::sealpush(self.tmp.path(), args)
            .env("SEALPUSH_STATE_DIR", &self.state)
            .env("SEALPUSH_FAULT", "")
    }

    /// A deploy held just before `step` by the test-only `SEALPUSH_FAULT=wait-before:` hook,
    /// returned once it has reached the step; [`Paused::release`] lets it go on.
    pub fn deploy_paused_at(&self, plan: &Path, extra: &[&str], step: &str) -> Paused {
        self.paused_at(self.deploy(plan, extra), step)
    }

    /// `cmd` held just before `step` (see [`Env::deploy_paused_at`]).
    pub fn paused_at(&self, cmd: TestCommand, step: &str) -> Paused {
        let gate = self.tmp.path().join("gate");
        let child = cmd
            .env(
                "SEALPUSH_FAULT",
                format!("wait-before:{step}:{}", gate.display()),
            )
            .cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(&gate.with_extension("reached"));
        Paused { child, gate }
    }

    /// The deploy's staging directory beside the target, once it exists.
    pub fn staging_dir(&self) -> Option<PathBuf> {
        entry_containing(&self.parent, "sealpush-stage")
    }

    /// Deploys the v0.6 plan with `--check CHECK --rollback-on-check-failure` and `extra`: the
    /// check fails, the report shows `expect` and the rollback, the verdict is FAIL, and the
    /// host is exactly as before.
    pub fn check_fails_and_rolls_back(&self, check: &str, extra: &[&str], expect: &str) {
        let before = self.snapshot();
        let plan = self.plan();
        let mut args = vec!["--check", check, "--rollback-on-check-failure"];
        args.extend_from_slice(extra);
        let out = self.deploy(&plan, &args).expect_code(1);
        let r = stdout(&out);
        assert!(
            r.contains(expect) && r.contains("rolled_back: YES") && r.ends_with("verdict: FAIL\n"),
            "{r}"
        );
        assert_eq!(self.snapshot(), before);
    }

    /// Deploys `plan` with `--verify host-sha256sum`: it passes, and the receipt says which
    /// verify ran.
    pub fn deploy_host_checked(&self, plan: &Path) {
        let out = self
            .deploy(plan, &["--verify", "host-sha256sum", "--json"])
            .ok();
        let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(receipt["verify"], "host-sha256sum");
        assert_eq!(receipt["verdict"]["pass"], true);
    }

    /// Deploys `plan` with `SEALPUSH_FAULT=FAULT` (`abort-before:STEP`, `abort-after:STEP`)
    /// and asserts that it was killed there, as `kill -9` would.
    pub fn deploy_killed(&self, plan: &Path, fault: &str) {
        let out = self.deploy(plan, &[]).env("SEALPUSH_FAULT", fault).output();
        assert_eq!(
            out.status.code(),
            None,
            "not killed at {fault}: {}",
            stderr(&out)
        );
    }

    /// `sealpush rollback FILE EXTRA` (a plan or a receipt) with this env's state dir.
    pub fn rollback(&self, file: &Path, extra: &[&str]) -> TestCommand {
        let mut args: Vec<std::ffi::OsString> = vec!["rollback".into(), file.into()];
        args.extend(extra.iter().map(Into::into));
        self.sealpush(args)
    }

    /// `name` in the local state dir of the one plan this env deployed (`receipt.json`,
    /// `journal.jsonl`).
    pub fn state_file(&self, name: &str) -> PathBuf {
        std::fs::read_dir(self.state.join("deploys"))
            .unwrap()
            .map(|e| e.unwrap().path().join(name))
            .next()
            .expect("a deployed plan's state dir")
    }

    /// The host's copy of the receipt of the one plan this env deployed, beside its lock.
    pub fn host_receipt(&self) -> PathBuf {
        std::fs::read_dir(self.parent.join(".sealpush/iu-cutter-v0.6"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("receipt-")
            })
            .expect("a host receipt")
    }

    pub fn deploy(&self, plan: &Path, extra: &[&str]) -> TestCommand {
        let mut args: Vec<std::ffi::OsString> = vec!["deploy".into(), plan.into()];
        args.extend(extra.iter().map(Into::into));
        self.sealpush(args)
    }

    /// Everything under the host parent dir: path -> (kind, mode, size, mtime, sha256 of content
    /// or link target). The parent's own mtime is left out (creating and removing a name in it
    /// changes it, which a rollback cannot undo over SFTP).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.parent.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let content = if m.is_file() {
                    Digest::of(&std::fs::read(&p).unwrap()).to_hex()
                } else if m.file_type().is_symlink() {
                    std::fs::read_link(&p).unwrap().display().to_string()
                } else {
                    stack.push(p.clone());
                    String::new()
                };
                let mtime = if m.is_dir() { 0 } else { m.mtime() };
                out.insert(
                    p,
                    format!("{:o} {} {} {}", m.mode(), m.size(), mtime, content),
                );
            }
        }
        out
    }

    /// The invariant every fault test asserts: the target is absent or complete (its tree
    /// equals the artifact plus DEPLOY-MANIFEST.txt, checked with `sha256sum -c` on the host),
    /// and the anchor's real recipe digest is the plan's.
    pub fn assert_absent_or_complete(&self, anchor_digest: &str) {
        assert_eq!(
            self.real_recipe(&self.anchor),
            anchor_digest,
            "anchor changed"
        );
        if std::fs::symlink_metadata(&self.target).is_ok() {
            self.assert_complete();
        }
    }

    pub fn assert_complete(&self) {
        self.assert_audit();
        // Same file set as the artifact (plus the deploy manifest): the real recipe over the
        // target without DEPLOY-MANIFEST.txt equals the real recipe over the fixture.
        self.assert_same_as_fixture();
    }

    /// `sha256sum -c` of DEPLOY-MANIFEST.txt's file lines, on the host, in the target.
    pub fn assert_audit(&self) {
        let out = self.host_sh(&format!(
            "cd '{}' && grep -E '^\\\\?[0-9a-f]{{64}}  ' DEPLOY-MANIFEST.txt | sha256sum -c --strict --quiet",
            self.target.display()
        ));
        assert!(
            out.status.success(),
            "sha256sum -c in the target failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn assert_same_as_fixture(&self) {
        let cmd = format!(
            "cd '{}' && find iu-cutter-v0.6 -type f ! -path iu-cutter-v0.6/DEPLOY-MANIFEST.txt ! -path '*/__pycache__/*' ! -path '*/made-by-check/*' | LC_ALL=C sort | xargs sha256sum | sha256sum",
            self.parent.display()
        );
        let got = String::from_utf8(self.host_sh(&cmd).stdout).unwrap();
        let want = std::process::Command::new("bash")
            .arg("-c")
            .arg("find iu-cutter-v0.6 -type f ! -path '*/__pycache__/*' ! -path '*/made-by-check/*' | LC_ALL=C sort | xargs sha256sum | sha256sum")
            .current_dir(fixtures())
            .output()
            .unwrap();
        assert_eq!(
            got,
            String::from_utf8(want.stdout).unwrap(),
            "target tree differs from the fixture"
        );
        // The recipe digest DEPLOY-MANIFEST.txt records is the real recipe's.
        let dm = std::fs::read_to_string(self.target.join("DEPLOY-MANIFEST.txt")).unwrap();
        let recorded = dm
            .lines()
            .find_map(|l| l.strip_prefix("recipe_sha256: "))
            .expect("recipe_sha256 line");
        assert_eq!(recorded, &got[..64], "DEPLOY-MANIFEST.txt recipe_sha256");
    }

    /// After a finished deploy: the host journal holds, byte for byte, every local journal
    /// record from its first one on the host through `unlock done` (done records reach the host
    /// late, with the next record, but none may be lost), and nothing else.
    pub fn assert_host_journal_complete(&self) {
        let local = self.state_file("journal.jsonl");
        let lines: Vec<(String, String)> = std::fs::read_to_string(&local)
            .unwrap()
            .lines()
            .map(|l| {
                let r: serde_json::Value = serde_json::from_str(l).unwrap();
                let name = format!(
                    "{:06}-{}-{}",
                    r["seq"].as_u64().unwrap(),
                    r["step"].as_str().unwrap(),
                    r["phase"].as_str().unwrap()
                );
                (name, format!("{l}\n"))
            })
            .collect();
        let work = self
            .parent
            .join(".sealpush")
            .join(self.target.file_name().unwrap());
        let dir = entry_containing(&work, "journal-").expect("a host journal");
        let mut host: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        host.sort();
        let first = lines
            .iter()
            .position(|(n, _)| Some(n) == host.first().map(|(n, _)| n))
            .expect("the host's first record is a local one");
        let last = lines
            .iter()
            .position(|(n, _)| n.ends_with("-unlock-done"))
            .expect("unlock done");
        let want = &lines[first..=last];
        let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&host), names(want), "host journal records");
        assert_eq!(host, want, "host journal contents");
    }

    /// After a finished deploy: the work dir holds its records (host journal, receipt, a kept
    /// archive) and nothing of the lock, neither the lock nor the file it was written in.
    pub fn assert_work_dir_holds_only_records(&self) {
        let work = self
            .parent
            .join(".sealpush")
            .join(self.target.file_name().unwrap());
        let names: Vec<String> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with("journal-")
                || n.starts_with("receipt-")
                || n.ends_with(".tar.zst")),
            "{names:?}"
        );
    }

    /// The file the last run that set out to take the lock wrote it in: named by its `lock`
    /// intent record in the local journal (before the file is made).
    pub fn recorded_lock_temp(&self) -> PathBuf {
        let journal = std::fs::read_to_string(self.state_file("journal.jsonl")).unwrap();
        journal
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["step"] == "lock" && r["phase"] == "intent")
            .find_map(|r| {
                r["detail"]
                    .as_str()?
                    .lines()
                    .find(|l| l.contains("/lock.new-"))
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| panic!("no lock intent names the lock's file: {journal}"))
    }

    /// Names beside the target that a deploy may leave: staging dirs and the work dir.
    pub fn leftovers(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "iu-cutter")
            .collect();
        v.sort();
        v
    }
}

/// The first entry of `dir` whose name contains `part`.
pub fn entry_containing(dir: &Path, part: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains(part))
}

pub use crate::support::{stderr, stdout};

/// `deploy --json` output that stopped before a receipt: a FAIL verdict whose first reason
/// says `reason`. Returns the JSON for further checks.
pub fn json_fail_verdict(out: &Output, reason: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["pass"], false, "{v}");
    let first = v["verdict"]["reasons"][0].as_str().unwrap_or_default();
    assert!(first.contains(reason), "{v}");
    v
}

/// `n` bytes from /dev/urandom.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut data = vec![0u8; n];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data)
        .unwrap();
    data
}

/// Waits (60 s at most) until `path` exists.
pub fn wait_for(path: &Path) {
    use std::time::{Duration, Instant};
    let until = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A deploy process held at a step (see [`Env::deploy_paused_at`]).
pub struct Paused {
    pub child: std::process::Child,
    gate: PathBuf,
}

impl Paused {
    /// Lets the deploy continue past the step.
    pub fn release(&self) {
        std::fs::write(&self.gate, b"").unwrap();
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_with_output(self) -> std::process::Output {
        self.child.wait_with_output().unwrap()
    }
}

/// Flips one bit of a file's first byte, as a faulty disk or another process would.
pub fn flip_first_byte(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    data[0] ^= 1;
    std::fs::write(path, data).unwrap();
}
