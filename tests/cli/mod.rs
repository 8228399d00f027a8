//! Integration tests of command-line edges that span commands: where outputs may be written,
//! which paths a plan records, how references and arguments are checked.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::TestCommand;

/// `sealpush ARGS` in `cwd` with a private state dir and no inherited store.
fn sealpush<I, S>(cwd: &Path, args: I) -> TestCommand
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = TestCommand::sealpush(cwd, args)
        .env("SEALPUSH_STATE_DIR", cwd.join("state"))
        .env("SEALPUSH_FAULT", "");
    c.cmd
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("SEALPUSH_STORE");
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
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
