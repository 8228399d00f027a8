//! Integration tests of command-line edges that span commands: where outputs may be written,
//! which paths a plan records, how references and arguments are checked.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::TestCommand;

use crate::support::{sealpush_clean, stderr, stdout};

/// `sealpush ARGS` in `cwd` with a private state dir and no inherited store.
fn sealpush<I, S>(cwd: &Path, args: I) -> TestCommand
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    sealpush_clean(cwd, args)
        .env("SEALPUSH_STATE_DIR", cwd.join("state"))
        .env("SEALPUSH_FAULT", "")
}

/// Runs `script` with sh in `cwd`, asserting success.
fn sh(cwd: &Path, script: &str) {
    let st = Command::new("sh")
        .args(["-c", script])
        .current_dir(cwd)
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

/// A scratch dir holding a tree `t` (one file) packed into the store `s`, and a host parent
/// dir `host/` to deploy into.
fn packed() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("t")).unwrap();
    fs::create_dir_all(tmp.path().join("host")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    sealpush(tmp.path(), ["-q", "pack", "t", "--store", "s"]).ok();
    tmp
}

/// `preflight --host local` (run in `cwd`) of a target `host/t-v2` under `dir`, with `extra`
/// arguments.
fn preflight(cwd: &Path, dir: &Path, extra: &[&str]) -> TestCommand {
    let target = dir.join("host/t-v2");
    let args = ["-q", "preflight", "--host", "local", "--target"];
    sealpush(cwd, args).cmd_arg(target).cmd_args(extra)
}

/// `--plan-out` at a fifo, a symlink or a directory is refused before the survey, and what is
/// there is left as it was (it used to be replaced by a regular file); a missing directory is
/// named. A regular file is still replaced.
#[test]
fn plan_out_refuses_what_is_not_a_regular_file_and_leaves_it() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = packed();
    let d = tmp.path();
    fs::write(d.join("kept"), "precious").unwrap();
    sh(d, "mkfifo fifo && ln -s kept link && mkdir dir");
    for (out, why) in [
        ("fifo", "fifo: is a fifo"),
        ("link", "link: is a symlink"),
        ("dir", "dir: is a directory"),
        (
            "nodir/plan",
            "nodir/plan: the directory nodir does not exist",
        ),
    ] {
        let args = ["--artifact", "t", "--store", "s", "--plan-out", out];
        let o = preflight(d, d, &args).expect_code(2);
        assert!(
            stderr(&o).contains(&format!("--plan-out {why}")),
            "{}",
            stderr(&o)
        );
        assert_eq!(stdout(&o), "", "{out}: surveyed before refusing");
    }
    let t = |n: &str| fs::symlink_metadata(d.join(n)).unwrap().file_type();
    assert!(t("fifo").is_fifo() && t("link").is_symlink() && t("dir").is_dir());
    assert_eq!(fs::read(d.join("kept")).unwrap(), b"precious");
    assert!(!d.join("nodir").exists());
    let args = ["--artifact", "t", "--store", "s", "--plan-out", "kept"];
    preflight(d, d, &args).ok();
    let plan: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("kept")).unwrap()).unwrap();
    assert_eq!(plan["plan"]["verdict"]["pass"], true, "{plan}");
}

/// A relative `--artifact` path, `--store` dir or `--ssh-config` file is recorded in the plan
/// as an absolute path (against the directory preflight ran in), so the plan deploys from any
/// directory; it used to be sealed as written, and `deploy` elsewhere failed to find the
/// archive.
#[test]
fn relative_artifact_and_store_paths_are_sealed_absolute() {
    let tmp = packed();
    let d = tmp.path();
    let stored = String::from_utf8(
        sealpush(d, ["store", "show", "t", "--store", "s"])
            .ok()
            .stdout,
    )
    .unwrap();
    let archive = stored
        .lines()
        .find_map(|l| l.strip_prefix("archive: "))
        .unwrap()
        .to_string();
    fs::copy(d.join(&archive), d.join("good.tar.zst")).unwrap();
    fs::create_dir(d.join("elsewhere")).unwrap();
    fs::write(d.join("ssh.cfg"), "").unwrap();
    for (n, artifact) in [("1", "./good.tar.zst"), ("2", "t")] {
        let plan = format!("plan{n}.json");
        let target = format!("host/t-v{n}");
        let args = [
            "-q",
            "preflight",
            "--host",
            "local",
            "--store",
            "s",
            "--artifact",
            artifact,
            "--target",
        ];
        sealpush(d, args)
            .cmd_arg(d.join(&target))
            .cmd_args(["--plan-out", &plan, "--ssh-config", "ssh.cfg"])
            .ok();
        let sealed: serde_json::Value =
            serde_json::from_slice(&fs::read(d.join(&plan)).unwrap()).unwrap();
        let recorded = sealed["plan"]["artifact"]["path"].as_str().unwrap();
        let want = if n == "1" {
            d.join("good.tar.zst").to_str().unwrap().to_string()
        } else {
            // The store's own spelling of its path, made absolute.
            d.join(&archive).to_str().unwrap().to_string()
        };
        assert_eq!(recorded, want, "{artifact}");
        let cfg = d.join("ssh.cfg");
        assert_eq!(sealed["plan"]["host"]["ssh_config"], cfg.to_str().unwrap());
        let out = sealpush(&d.join("elsewhere"), ["-q", "deploy"])
            .cmd_arg(d.join(&plan))
            .output();
        assert!(out.status.success(), "{artifact}: {}", stderr(&out));
        assert_eq!(fs::read(d.join(&target).join("f")).unwrap(), b"x");
    }
}

/// A reference that is a path (it has a `/`; no store id or name does) and names no archive
/// gets its path's real problem, from verify, unpack and store show alike; it used to be "no
/// artifact matches" in the store. Without a `/`, a name the store lacks that is a broken link
/// here says so too; a name that is a directory is still looked up in the store.
#[test]
fn a_path_that_is_no_artifact_says_what_is_wrong_with_it() {
    let tmp = packed();
    let d = tmp.path();
    sh(
        d,
        "ln -s self.tar.zst self.tar.zst && mkdir dir.tar.zst && ln -s nowhere dangling \
         && mkfifo fifo && echo text > notes",
    );
    let cases = [
        ("./self.tar.zst", "./self.tar.zst: is a symlink loop"),
        (
            "/nonexistent/x.tar.zst",
            "/nonexistent/x.tar.zst: no such file or directory",
        ),
        (
            "./dir.tar.zst",
            "./dir.tar.zst: is a directory without meta.json",
        ),
        (
            "./dangling",
            "./dangling: is a symlink whose target does not exist",
        ),
        ("./fifo", "./fifo: is a fifo, socket or device"),
        ("./notes", "./notes: not a tar.zst or tar.gz archive"),
        ("self.tar.zst", "self.tar.zst: is a symlink loop"),
        ("dir.tar.zst", "no artifact matches \"dir.tar.zst\""),
    ];
    for (reference, said) in cases {
        for cmd in [
            &["verify", reference][..],
            &["unpack", reference, "dest"],
            &["store", "show", reference],
        ] {
            let out = sealpush(d, cmd).cmd_args(["--store", "s"]).expect_code(2);
            let err = stderr(&out);
            assert!(err.contains(said), "{cmd:?}: {err}");
            if reference.contains('/') {
                assert!(!err.contains("no artifact matches"), "{cmd:?}: {err}");
            }
        }
    }
    assert!(!d.join("dest").exists());
    // A name and a path to an archive still resolve.
    sealpush(d, ["-q", "verify", "t", "--store", "s"]).ok();
}

/// A bare name that is both an artifact in the store and a file here is ambiguous: before, the
/// file won silently, and preflight would have planned whatever archive it held.
#[test]
fn a_name_that_is_also_a_file_here_is_ambiguous() {
    let tmp = packed();
    let d = tmp.path();
    sh(d, "mkdir sub && echo notes > sub/t");
    let sub = d.join("sub");
    for cmd in [
        &["verify", "t"][..],
        &["unpack", "t", "dest"],
        &["store", "show", "t"],
        // Not a failed verification (exit 1): nothing was verified.
        &["store", "verify", "t"],
    ] {
        let out = sealpush(&sub, cmd)
            .cmd_args(["--store", "../s"])
            .expect_code(2);
        assert!(
            stderr(&out).contains("ambiguous")
                && stderr(&out).contains("./t (here, in the working directory"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    // Spelled as a path it is the file; the store's id is the artifact.
    let out = sealpush(&sub, ["verify", "./t", "--store", "../s"]).expect_code(2);
    assert!(
        stderr(&out).contains("not a tar.zst or tar.gz archive"),
        "{}",
        stderr(&out)
    );
    sh(d, "rm sub/t");
    sealpush(&sub, ["-q", "verify", "t", "--store", "../s"]).ok();
}

/// Every `-j` takes 1 to 1024 threads: a typo such as `-j 5000` is refused at once (exit 2,
/// naming the range) instead of spawning thousands of threads or failing with EAGAIN blamed on
/// the path. The largest value still runs.
#[test]
fn every_thread_count_is_capped_at_1024() {
    let tmp = packed();
    let d = tmp.path();
    for cmd in [
        &["hash", "t"][..],
        &["manifest", "t"],
        &["pack", "t", "--store", "s2"],
        &["bench", "t", "--runs", "1"],
    ] {
        for bad in ["5000", "4294967295", "0"] {
            let out = sealpush(d, cmd).cmd_args(["-j", bad]).expect_code(2);
            assert!(
                stderr(&out).contains(&format!("{bad} is not in 1..=1024")),
                "{cmd:?} -j {bad}: {}",
                stderr(&out)
            );
        }
    }
    assert!(!d.join("s2").exists());
    sealpush(d, ["-q", "manifest", "t", "-j", "1024"]).ok();
}

/// `RAYON_NUM_THREADS` is held to the same range: rayon itself took `100000` and `hash` spent
/// minutes spawning threads (a `timeout 60` ran out), and it ignores a value that does not
/// parse. 0 stays rayon's "all cores".
#[test]
fn rayon_num_threads_is_capped_like_j() {
    let tmp = packed();
    let d = tmp.path();
    for bad in ["100000", "1025", "-1", "four", " 5"] {
        let out = sealpush(d, ["hash", "t"])
            .env("RAYON_NUM_THREADS", bad)
            .expect_code(2);
        assert!(
            stderr(&out).contains(&format!("RAYON_NUM_THREADS={bad}: use 1 to 1024")),
            "{bad}: {}",
            stderr(&out)
        );
    }
    for good in ["0", "1", "1024"] {
        sealpush(d, ["-q", "hash", "t"])
            .env("RAYON_NUM_THREADS", good)
            .ok();
    }
}

/// A `--host` that cannot name a host is refused when the arguments are read (exit 2, saying
/// which part is wrong), by preflight, status and rollback alike. Before, ssh was started with
/// it and its usage text came back as the error (`ssh://`, a bad port), or preflight reported
/// it as a verdict FAIL (exit 1) of the host.
#[test]
fn a_host_that_names_no_host_is_refused_before_connecting() {
    let tmp = packed();
    let d = tmp.path();
    fs::write(d.join("receipt.json"), "{}").unwrap();
    let cases = [
        ("", "is empty"),
        ("ssh://", "no host name"),
        ("ssh://deploy@", "no host name"),
        ("root@", "no host name"),
        ("ssh://h:99999", "port 99999"),
        ("SSH://h:99999", "port 99999"),
        ("ssh://h:", "port"),
        ("ssh://h:22/opt/app", "path"),
        ("a b", "blank"),
        ("-oProxyCommand=x", "starts with `-`"),
    ];
    for (host, why) in cases {
        for cmd in [
            &[
                "preflight",
                "--artifact",
                "t",
                "--store",
                "s",
                "--target",
                "/t",
                "--plan-out",
                "p.json",
            ][..],
            &["status", "--target", "/t"],
            &["rollback", "receipt.json"],
        ] {
            let out = sealpush(d, cmd)
                .cmd_arg(format!("--host={host}"))
                .expect_code(2);
            let err = stderr(&out);
            assert!(
                err.contains("--host") && err.contains(why),
                "{host:?} {cmd:?}: {err}"
            );
            assert!(!err.contains("login_name"), "ssh's usage: {err}");
            assert_eq!(stdout(&out), "", "{host:?} {cmd:?}");
        }
    }
    assert!(!d.join("p.json").exists());
}

/// An id prefix shorter than the 4 characters a prefix needs is not "no artifact matches":
/// the artifact is there (`store list` shows it), so the error says the prefix is too short.
#[test]
fn a_too_short_id_prefix_says_so() {
    let tmp = packed();
    let d = tmp.path();
    let out = sealpush(d, ["-q", "store", "list", "--store", "s"]).ok();
    let id = stdout(&out).split('\t').next().unwrap().to_string();
    for cmd in [&["verify"][..], &["store", "show"]] {
        let out = sealpush(d, cmd)
            .cmd_args([&id[..3], "--store", "s"])
            .expect_code(2);
        let err = stderr(&out);
        assert!(err.contains("at least 4 characters"), "{cmd:?}: {err}");
        sealpush(d, ["-q"])
            .cmd_args(cmd)
            .cmd_args([&id[..4], "--store", "s"])
            .ok();
    }
    // A short string no id starts with stays plainly unmatched.
    let other = if id.starts_with('0') { "1" } else { "0" };
    let out = sealpush(d, ["verify", other, "--store", "s"]).expect_code(2);
    assert!(!stderr(&out).contains("at least 4"), "{}", stderr(&out));
}

/// A name packed in two formats is ambiguous, and the error says what to type instead: one of
/// the ids it lists (before, it listed them and stopped there).
#[test]
fn an_ambiguous_name_says_to_give_an_id() {
    let tmp = packed();
    let d = tmp.path();
    sealpush(d, ["-q", "pack", "t", "--store", "s", "--format", "tar.gz"]).ok();
    let out = sealpush(d, ["verify", "t", "--store", "s"]).expect_code(2);
    let err = stderr(&out);
    assert!(
        err.contains("is ambiguous")
            && err.contains("-t.l6.tar.gz")
            && err.contains("-t.l3.tar.zst"),
        "{err}"
    );
    assert!(err.contains("give one of these instead"), "{err}");
}

/// A PASS without `--plan-out` says that no plan was written and how to write one: the report
/// ends "verdict: PASS" under "Locked deploy plan", and `sealpush deploy` then had nothing to
/// run. With `--json` the plan is on stdout, and `-q` keeps stderr quiet.
#[test]
fn a_pass_without_plan_out_says_no_plan_was_written() {
    let tmp = packed();
    let d = tmp.path();
    let target = d.join("host/t-v2");
    let args = [
        "preflight",
        "--host",
        "local",
        "--artifact",
        "t",
        "--store",
        "s",
    ];
    let out = sealpush(d, args).cmd_arg("--target").cmd_arg(&target).ok();
    assert!(stdout(&out).contains("verdict: PASS"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no plan written: add --plan-out FILE"),
        "{}",
        stderr(&out)
    );
    for extra in ["--json", "-q"] {
        let out = sealpush(d, args)
            .cmd_args([extra, "--target"])
            .cmd_arg(&target)
            .ok();
        assert!(
            !stderr(&out).contains("no plan written"),
            "{}",
            stderr(&out)
        );
    }
}

/// An archive file here named without a `/` (`verify app.tar.zst`) is that archive when the
/// store has nothing by that name: it was refused as "is not a tar.zst or tar.gz archive",
/// which it is, and only `./app.tar.zst` worked.
#[test]
fn a_bare_archive_name_here_resolves_to_the_archive() {
    let tmp = packed();
    let d = tmp.path();
    sealpush(
        d,
        [
            "-q",
            "pack",
            "t",
            "--store",
            "other",
            "--out",
            "app.tar.zst",
        ],
    )
    .ok();
    for cmd in [
        &["verify", "app.tar.zst"][..],
        &["store", "show", "app.tar.zst"],
        &["unpack", "app.tar.zst", "dest"],
    ] {
        let out = sealpush(d, cmd).cmd_args(["--store", "s"]).ok();
        assert!(
            !stderr(&out).contains("not a tar.zst"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(fs::read(d.join("dest/f")).unwrap(), b"x");
    // A file here that is no archive still says so, and that the store has nothing by its name.
    fs::write(d.join("notes"), "text").unwrap();
    let out = sealpush(d, ["verify", "notes", "--store", "s"]).expect_code(2);
    let err = stderr(&out);
    assert!(
        err.contains("notes: is not a tar.zst or tar.gz archive (and no artifact"),
        "{err}"
    );
}

/// `store list` on an empty store (a mistyped `--store` or SEALPUSH_STORE gives one) says on
/// stderr which store it looked in; stdout stays empty, or `[]` with --json.
#[test]
fn store_list_of_an_empty_store_names_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = sealpush(d, ["store", "list", "--store", "typo"]).ok();
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("no store at typo"),
        "{}",
        stderr(&out)
    );
    let out = sealpush(d, ["store", "list", "--json", "--store", "typo"]).ok();
    assert_eq!(stdout(&out).trim(), "[]");
    let out = sealpush(d, ["-q", "store", "list", "--store", "typo"]).ok();
    assert_eq!(stderr(&out), "");
    fs::create_dir(d.join("empty")).unwrap();
    let out = sealpush(d, ["store", "list", "--store", "empty"]).ok();
    assert!(
        stderr(&out).contains("no artifacts in empty"),
        "{}",
        stderr(&out)
    );
}

/// Commands that only read the store do not create one where there is none: a mistyped
/// --store used to leave an empty store behind (`typo/artifacts`, `typo/tmp`). What they
/// say of the missing artifact or store is unchanged, and pack still creates its store.
#[test]
fn commands_that_read_the_store_create_none() {
    let tmp = packed();
    let d = tmp.path();
    let typo = d.join("typo");
    let runs: [(&[&str], bool); 6] = [
        (&["store", "list", "--store", "typo"], true),
        (&["store", "gc", "--store", "typo"], true),
        (&["store", "verify", "--store", "typo"], true),
        (&["store", "show", "t", "--store", "typo"], false),
        (&["verify", "t", "--store", "typo"], false),
        (&["unpack", "t", "out", "--store", "typo"], false),
    ];
    for (args, ok) in runs {
        let out = sealpush(d, args).output();
        assert_eq!(out.status.success(), ok, "{args:?}\n{}", stderr(&out));
        if !ok {
            assert!(
                stderr(&out).contains("no artifact matches \"t\" in typo"),
                "{args:?}\n{}",
                stderr(&out)
            );
        }
        assert!(
            !typo.exists(),
            "{args:?} created the store\n{}",
            stderr(&out)
        );
    }
    let out = preflight(d, d, &["--artifact", "t", "--store", "typo"]).output();
    assert!(!out.status.success());
    assert!(!typo.exists(), "preflight created the store");
    assert!(!d.join("out").exists());
    sealpush(d, ["-q", "pack", "t", "--store", "typo"]).ok();
    assert!(typo.join("artifacts").is_dir());
}

/// `store gc` given a directory that is no store (neither `artifacts/` nor `tmp/`: a mistyped
/// --store, a home directory) removes nothing from it: it used to remove every entry as "not
/// part of the store layout".
#[test]
fn gc_of_a_directory_that_is_no_store_removes_nothing() {
    let tmp = packed();
    let d = tmp.path();
    fs::write(d.join("host/precious"), "x").unwrap();
    for dry in [true, false] {
        let mut args = vec!["store", "gc", "--store", "host"];
        if dry {
            args.push("--dry-run");
        }
        let out = sealpush(d, &args).expect_code(2);
        assert!(
            stderr(&out).contains("is not a sealpush store"),
            "{}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "");
    }
    assert_eq!(fs::read(d.join("host/precious")).unwrap(), b"x");
    // An empty directory is an empty store, as one that is not there.
    fs::create_dir(d.join("empty")).unwrap();
    sealpush(d, ["store", "gc", "--store", "empty"]).ok();
}

/// `store gc` of a store that lost its `tmp/` (read-only commands no longer create it) still
/// removes a broken artifact, which it moves into `tmp/` first: it stopped at "tmp: No such
/// file or directory".
#[test]
fn gc_removes_a_broken_artifact_from_a_store_without_tmp() {
    let tmp = packed();
    let d = tmp.path();
    let arts = d.join("s/artifacts");
    let id = fs::read_dir(&arts).unwrap().next().unwrap().unwrap().path();
    fs::remove_file(id.join("meta.json")).unwrap();
    fs::remove_dir(d.join("s/tmp")).unwrap();
    let out = sealpush(d, ["store", "gc", "--store", "s"]).ok();
    assert!(stdout(&out).contains("broken"), "{}", stdout(&out));
    assert_eq!(fs::read_dir(&arts).unwrap().count(), 0);
}

/// Preflight's reasons speak to the operator: a probe's failure gives its exit status as a
/// number (it printed Rust's `Some(4)`), and a missing --staging directory says to choose
/// another --staging (it said "another target", which would not help).
#[test]
fn preflight_reasons_name_the_status_and_the_flag_to_change() {
    let tmp = packed();
    let d = tmp.path();
    let args = ["--artifact", "t", "--store", "s", "--probe", "exit 4"];
    let out = preflight(d, d, &args).ok();
    let report = stdout(&out);
    assert!(
        report.contains("probe `exit 4` exited with status 4"),
        "{report}"
    );
    assert!(!report.contains("Some("), "{report}");
    let staging = d.join("nostage");
    let out = preflight(d, d, &["--artifact", "t", "--store", "s", "--staging"])
        .cmd_arg(&staging)
        .expect_code(1);
    let report = stdout(&out);
    assert!(
        report.contains(&format!(
            "{} does not exist (create the directory first, or choose another --staging)",
            staging.display()
        )),
        "{report}"
    );
}

/// An empty or blank `--probe` or `--check` is a usage error (exit 2) before anything runs:
/// it ran an empty command on the host and recorded its success.
#[test]
fn an_empty_host_command_is_refused() {
    let tmp = packed();
    let d = tmp.path();
    for cmd in ["", "  "] {
        let out =
            preflight(d, d, &["--artifact", "t", "--store", "s", "--probe", cmd]).expect_code(2);
        assert!(
            stderr(&out).contains("is empty: give the command"),
            "{}",
            stderr(&out)
        );
        let out = sealpush(d, ["deploy", "plan.json", "--check", cmd]).expect_code(2);
        assert!(
            stderr(&out).contains("is empty: give the command"),
            "{}",
            stderr(&out)
        );
    }
}

/// `--store` naming a regular file is refused by name, by the commands that write the store
/// and those that read it, and the file is left as it was. The error named `FILE/artifacts`,
/// a path that cannot exist, with "Not a directory".
#[test]
fn a_store_that_is_a_file_is_named_as_such() {
    let tmp = packed();
    let d = tmp.path();
    fs::write(d.join("notes"), "mine").unwrap();
    for args in [
        &["pack", "t", "--store", "notes"][..],
        &["store", "list", "--store", "notes"],
        &["verify", "t", "--store", "notes"],
    ] {
        let out = sealpush(d, args).output();
        assert!(!out.status.success(), "{args:?}");
        let e = stderr(&out);
        assert!(
            e.contains("notes: is not a directory, so it cannot be a store"),
            "{args:?}: {e}"
        );
        assert!(!e.contains("notes/artifacts"), "{args:?}: {e}");
    }
    assert_eq!(fs::read_to_string(d.join("notes")).unwrap(), "mine");
}
