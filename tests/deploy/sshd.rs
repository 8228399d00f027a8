//! Deploys over SFTP to a real OpenSSH sshd (see `tests/support/sshd.rs`): the seed's scenario
//! end to end, and the faults that need a real server (connection cut, stalled server, full
//! disk, external kill -9 at a random time).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{flip_first_byte, stderr, stdout, Env, Host};
use crate::support::sshd::{descendants, Sshd};
use crate::support::walkdir;

fn ssh_env(sshd: &Sshd) -> Env {
    Env::new(ssh_host(sshd))
}

fn ssh_host(sshd: &Sshd) -> Host {
    Host::Ssh {
        alias: sshd.alias().to_string(),
        config: sshd.config_path(),
    }
}

/// Per-connection sshd processes (children of the listener), oldest first.
fn connections(sshd: &Sshd) -> Vec<u32> {
    descendants(sshd.pid())
}

fn signal_all(pids: &[u32], sig: i32) {
    for &p in pids {
        // SAFETY: signalling processes of the test's own sshd.
        unsafe {
            libc::kill(p as i32, sig);
        }
    }
}

#[test]
fn seed_scenario_side_by_side_with_unittest_check_then_rollback() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let env = ssh_env(sshd);
    let before = env.snapshot();
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    let check = "python3 -m unittest discover -s tests -p 'test_*.py'";
    let out = env
        .deploy(&plan, &["--keep-archive", "--check", check, "--sync"])
        .ok();
    let r = stdout(&out);
    assert!(r.ends_with("verdict: PASS\n"), "{r}");
    assert!(r.contains("check: PASS") && r.contains("output: OK"), "{r}");
    assert!(
        r.contains(&format!("anchor_tree_sha256_after: {anchor}")),
        "{r}"
    );
    // Independently: the real recipe over ssh, sha256sum -c on the host.
    assert_eq!(env.real_recipe(&env.anchor), anchor);
    env.assert_complete();
    env.assert_host_journal_complete();
    env.assert_work_dir_holds_only_records();
    env.status_passes_then_rollback_restores(&plan, &before);
}

/// A server that does not offer `hardlink@openssh.com` (`-P hardlink`: OpenSSH then leaves it
/// out of the extensions it announces) gets the lock created in place, as before the lock was
/// linked, with no file of its own: the deploy passes, and its rollback leaves the host as it
/// was.
#[test]
fn a_server_without_hard_links_gets_the_lock_in_place() {
    let sshd = Sshd::start_with_sftp("-P hardlink");
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let before = env.snapshot();
    let plan = env.plan();
    let out = env.deploy(&plan, &[]).ok();
    assert!(
        stdout(&out).ends_with("verdict: PASS\n"),
        "{}",
        stdout(&out)
    );
    let journal = std::fs::read_to_string(env.state_file("journal.jsonl")).unwrap();
    assert!(!journal.contains("lock.new-"), "{journal}");
    env.assert_complete();
    env.assert_work_dir_holds_only_records();
    env.status_passes_then_rollback_restores(&plan, &before);
}

/// A server that offers the extension on a filesystem that refuses the link (strace makes the
/// server's link(2) fail with EPERM, which sftp-server answers "permission denied") gets the
/// lock in place too, and the file it was written in is removed.
#[test]
fn a_refused_hard_link_gets_the_lock_in_place() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let before = env.snapshot();
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &[], "lock");
    let Some(tracers) = InjectedSyscalls::failing(&connections(&sshd), "link,linkat", "EPERM")
    else {
        child.release();
        return;
    };
    child.release();
    let out = child.wait_with_output();
    drop(tracers);
    assert!(out.status.success(), "{}", stderr(&out));
    let journal = std::fs::read_to_string(env.state_file("journal.jsonl")).unwrap();
    assert!(journal.contains("refused the hard link"), "{journal}");
    env.assert_complete();
    env.assert_work_dir_holds_only_records();
    env.status_passes_then_rollback_restores(&plan, &before);
}

/// A work dir planted as a symlink between the deploy's look at the name and its mkdir (strace
/// makes the server's first lstat of `PARENT/.sealpush` say "no such file", and the symlink is
/// there by the time of the mkdir, which then answers that the name exists): the deploy stops
/// with the symlink named, and nothing is written where it points. Before, "exists" was taken
/// for a directory another run had just made, and the lock and the journal went through it.
#[test]
fn a_work_dir_planted_as_a_symlink_between_look_and_mkdir_is_not_written_through() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let plan = env.plan();
    let elsewhere = tempfile::tempdir().unwrap();
    let root = env.parent.join(".sealpush");
    let child = env.deploy_paused_at(&plan, &[], "work-dir");
    let Some(tracers) = InjectedSyscalls::failing_once_on(
        &connections(&sshd),
        &root,
        "newfstatat,lstat,statx",
        "ENOENT",
    ) else {
        child.release();
        return;
    };
    std::os::unix::fs::symlink(elsewhere.path(), &root).unwrap();
    child.release();
    let out = child.wait_with_output();
    drop(tracers);
    let e = stderr(&out);
    assert!(!out.status.success(), "{e}");
    assert!(
        e.contains(&format!("{} exists as a symlink", root.display())),
        "{e}"
    );
    let written: Vec<_> = std::fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    assert!(
        written.is_empty(),
        "written through the symlink: {written:?}"
    );
    assert!(!env.target.exists());
    std::fs::remove_file(&root).unwrap();
}

/// A target whose parent's path holds a newline (a valid UTF-8 path preflight accepts), a run
/// killed right after it made the work dirs, then the rerun: the rerun read the `work-dir`
/// record (the dirs made, one a line) line by line, so it took pieces of their paths for
/// dirs the deploy made (one of them relative, one an ancestor of the target) and the work
/// dirs themselves for someone else's. Its receipt then listed paths the plan never makes,
/// and the rollback refused it, leaving the tree and the work dirs for good.
#[test]
fn work_dirs_made_by_a_cut_off_run_under_a_parent_with_a_newline_are_rolled_back() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let base = tempfile::Builder::new()
        .prefix("sealpush-newline-")
        .tempdir()
        .unwrap();
    let env = Env::new_in(ssh_host(sshd), Some(&base.path().join("a\nb")));
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy_killed(&plan, "abort-after:work-dir");
    let work = env.parent.join(".sealpush/iu-cutter-v0.6");
    assert!(work.is_dir(), "the killed run made no work dir");
    let re = env.deploy(&plan, &["--json"]).ok();
    let receipt: serde_json::Value = serde_json::from_slice(&re.stdout).unwrap();
    assert_eq!(receipt["verdict"]["pass"], true, "{receipt}");
    let created: Vec<&str> = receipt["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    let root = env.parent.join(".sealpush");
    assert_eq!(
        created[..2],
        [root.to_str().unwrap(), work.to_str().unwrap()],
        "{receipt}"
    );
    env.status_passes_then_rollback_restores(&plan, &before);
}

/// A deploy (B) makes the work dirs, and before it links its lock another deploy of the
/// target (A, another plan) takes the lock there and is cut off. B is refused ("run `sealpush
/// deploy` on that plan again"), and left the work dirs it had made: A, which found them,
/// never removes them, so once A was run again and rolled back they stayed for good. B now
/// removes them when empty; here A is done by then, and the host ends as it began.
#[test]
fn a_run_refused_the_lock_removes_the_work_dirs_it_made() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let env = ssh_env(sshd);
    let before = env.snapshot();
    let (plan_a, plan_b, work) = two_plans(&env);
    let gate = env.tmp.path().join("gate-b");
    let gated = |step: &str| gate.with_extension(format!("{step}.reached"));
    let mut b = env
        .deploy(&plan_b, &[])
        .env(
            "SEALPUSH_FAULT",
            format!("wait-before:lock,cleanup:{}", gate.display()),
        )
        .cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    super::wait_for(&gated("lock"));
    assert!(work.is_dir(), "B made no work dir");
    env.deploy_killed(&plan_a, "abort-after:lock");
    assert!(work.join("lock").is_file(), "A holds no lock");
    std::fs::write(gate.with_extension("lock"), b"").unwrap();
    // B is refused; it stops before removing anything, or ends.
    let until = Instant::now() + Duration::from_secs(60);
    while !gated("cleanup").exists() && b.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < until,
            "B neither ended nor reached its cleanup"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let b_stopped = gated("cleanup").exists();
    // A's lock is in the work dir, so that stays while A is there; A run again finishes, and
    // its rollback removes what it made, and not the dirs it found.
    env.deploy(&plan_a, &[]).ok();
    env.rollback(&plan_a, &[]).ok();
    assert!(
        work.is_dir(),
        "A's rollback removed a work dir A did not make"
    );
    std::fs::write(gate.with_extension("cleanup"), b"").unwrap();
    let out = b.wait_with_output().unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("is held by") && e.contains("run `sealpush deploy` on that plan again"),
        "{e}"
    );
    assert_eq!(env.snapshot(), before, "B left what it made: {e}");
    assert!(b_stopped, "B did not set out to remove its work dirs: {e}");
    // Nothing of B is on the host: its journal starts afresh, and B deploys and rolls back.
    let journal = std::fs::read_to_string(
        env.state
            .join("deploys")
            .join(plan_digest(&plan_b))
            .join("journal.jsonl"),
    )
    .unwrap();
    assert!(journal.trim_end().ends_with(r#""phase":"done","detail":"the lock was not this run's; the work dirs it made were removed"}"#), "{journal}");
    env.deploy(&plan_b, &[]).ok();
    env.status_passes_then_rollback_restores(&plan_b, &before);
}

/// The same, with A still there when B is refused: the work dir holds A's lock, so it stays,
/// and B's error says so and what removes it. As it says, B run again (once A is done) takes
/// the dirs as its own, and its rollback leaves the host as it began.
#[test]
fn a_run_refused_the_lock_says_which_work_dir_it_made_stays() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let env = ssh_env(sshd);
    let before = env.snapshot();
    let (plan_a, plan_b, work) = two_plans(&env);
    let b = env.deploy_paused_at(&plan_b, &[], "lock");
    env.deploy_killed(&plan_a, "abort-after:lock");
    b.release();
    let out = b.wait_with_output();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains(&format!(
            "the work dir this run made stays (remove_dir {}: ",
            work.display()
        )) && e.contains("the same deploy run again counts it as its own"),
        "{e}"
    );
    // B made .sealpush too: that stays as well, around the work dir.
    assert!(
        e.contains("as does the dir .sealpush it made around it"),
        "{e}"
    );
    assert!(work.join("lock").is_file(), "A's lock is gone: {e}");
    env.deploy(&plan_a, &[]).ok();
    env.rollback(&plan_a, &[]).ok();
    assert!(work.is_dir());
    env.deploy(&plan_b, &[]).ok();
    env.status_passes_then_rollback_restores(&plan_b, &before);
}

/// A plan file's digest.
fn plan_digest(plan: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan).unwrap()).unwrap();
    v["digest"].as_str().unwrap().to_string()
}

#[test]
fn connection_cut_mid_deploy_leaves_target_absent_and_rerun_completes() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &[], "verify");
    signal_all(&connections(&sshd), libc::SIGKILL);
    child.release();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("rerun the same deploy"), "{e}");
    assert!(!env.target.exists());
    env.assert_absent_or_complete(&anchor);
    let re = env.deploy(&plan, &["--clear-stale-lock"]).ok();
    assert!(
        stdout(&re).contains("resume: cleaned up"),
        "{}",
        stdout(&re)
    );
    env.assert_complete();
    assert_eq!(env.leftovers(), vec![".sealpush", "iu-cutter-v0.6"]);
}

#[test]
fn connection_cut_mid_upload_leaves_target_absent_and_rerun_completes() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    // An artifact big enough that the upload is still running when the connection dies.
    let src = env.tmp.path().join("big/payload");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("blob.bin"), super::random_bytes(32 << 20)).unwrap();
    let (store_dir, art) = env.store_tree(&src, "big-store");
    let plan = env.plan_for(&store_dir, &art);
    let anchor = env.real_recipe(&env.anchor);
    // 4 KiB requests: 8,192 of them, so the upload lasts long enough that a test thread the
    // scheduler sets aside for a while still cuts it midway (255 KiB requests took ~50 ms).
    let child = env.deploy_paused_at(&plan, &["--sftp-request-size", "4096"], "materialise");
    child.release();
    // Wait until bytes are arriving in the staged file, then cut the connection.
    let staged = |env: &Env| env.staging_dir().map(|p| p.join("iu-cutter-v0.6/blob.bin"));
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let len = staged(&env)
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        if len > 0 {
            break;
        }
        assert!(Instant::now() < until, "upload never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal_all(&connections(&sshd), libc::SIGKILL);
    let partial = staged(&env)
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("materialise"), "{}", stderr(&out));
    assert!(
        partial < 32 << 20,
        "the upload had already finished; make the artifact bigger"
    );
    assert!(!env.target.exists());
    assert_eq!(env.real_recipe(&env.anchor), anchor);
    let re = env.deploy(&plan, &["--clear-stale-lock"]).ok();
    assert!(
        stdout(&re).contains("resume: cleaned up"),
        "{}",
        stdout(&re)
    );
    env.assert_audit();
    assert_eq!(env.leftovers(), vec![".sealpush", "iu-cutter-v0.6"]);
}

#[test]
fn stalled_server_ends_in_a_clear_error() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let plan = env.plan();
    let start = Instant::now();
    // 10 s, not less: the limit also bounds every request before the stall (the lock, the
    // staging dirs, their fsyncs), which a loaded CI machine can take seconds to answer.
    let child = env.deploy_paused_at(&plan, &["--op-timeout", "10"], "materialise");
    let out = run_with_the_server_stopped(&sshd, child);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no answer within 10s"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--op-timeout"), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(!env.target.exists());
    // The server is back: the same deploy cleans up and completes.
    env.deploy(&plan, &["--clear-stale-lock"]).ok();
    env.assert_complete();
}

/// A stall at the unlock, after the receipt was written: the note said "rerun the same deploy
/// to finish (prove, receipt)", though only the unlock was left. It now says so, and the
/// rerun finishes.
#[test]
fn a_stall_at_the_unlock_says_only_the_unlock_is_left() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &["--op-timeout", "5"], "unlock");
    let out = run_with_the_server_stopped(&sshd, child);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("its receipt written") && e.contains("release the lock"),
        "{e}"
    );
    assert!(!e.contains("(prove, receipt)"), "{e}");
    env.deploy(&plan, &[]).ok();
    env.assert_complete();
}

/// A stall in the middle of a large file's upload ends within one --op-timeout (and the
/// teardown), not two: the partial file's removal, on a connection already found stalled, must
/// not wait for an answer of its own.
#[test]
fn stall_in_the_middle_of_a_large_file_ends_within_one_op_timeout() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let src = env.tmp.path().join("big/payload");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("blob.bin"), super::random_bytes(32 << 20)).unwrap();
    let (store_dir, art) = env.store_tree(&src, "big-store");
    let plan = env.plan_for(&store_dir, &art);
    let anchor = env.real_recipe(&env.anchor);
    // 4 KiB requests: the upload lasts long enough to be caught in the middle (see
    // `connection_cut_mid_upload_leaves_target_absent_and_rerun_completes`).
    let args = ["--op-timeout", "10", "--sftp-request-size", "4096"];
    let child = env.deploy_paused_at(&plan, &args, "materialise");
    child.release();
    let staged = |env: &Env| env.staging_dir().map(|p| p.join("iu-cutter-v0.6/blob.bin"));
    let until = Instant::now() + Duration::from_secs(60);
    while staged(&env)
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
        == 0
    {
        assert!(Instant::now() < until, "upload never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let conns = connections(&sshd);
    signal_all(&conns, libc::SIGSTOP);
    let stalled = Instant::now();
    let partial = staged(&env)
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    let out = child.wait_with_output();
    let took = stalled.elapsed();
    signal_all(&conns, libc::SIGCONT);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        partial < 32 << 20,
        "the upload had already finished; make the artifact bigger"
    );
    assert!(
        e.contains("materialise") && e.contains("blob.bin") && e.contains("no answer within 10s"),
        "{e}"
    );
    // One op-timeout (10 s) and the teardown (at most 4 s), with slack; two were 22 s.
    assert!(took < Duration::from_secs(18), "took {took:?}: {e}");
    assert!(!env.target.exists());
    assert_eq!(env.real_recipe(&env.anchor), anchor);
    // The server is back: the same deploy cleans up and completes.
    env.deploy(&plan, &args).ok();
    env.assert_audit();
}

/// A stall while the lock is being taken: the create request reaches the server, which makes
/// the file (empty: the write never came) when it resumes. A lock created in place was then
/// empty, "unreadable", and the rerun refused it, asking for --clear-stale-lock. The lock is now
/// written whole in a file of its own and linked to its name: the stall leaves that file, never
/// the lock, and the same deploy run again removes it and finishes.
#[test]
fn stall_while_taking_the_lock_then_the_same_deploy_finishes() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    let args = ["--op-timeout", "10"];
    let child = env.deploy_paused_at(&plan, &args, "lock");
    let out = run_with_the_server_stopped(&sshd, child);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("lock") && e.contains("no answer within 10s"),
        "{e}"
    );
    // What to do, and (below) that it does what it says.
    assert!(
        e.contains("; the target was not created; rerun the same deploy, which removes or takes over what this run left of its lock and starts over"),
        "{e}"
    );
    env.assert_absent_or_complete(&anchor);
    // The resumed server carries out the create it had queued: the lock's own file, empty.
    let work = env.parent.join(".sealpush/iu-cutter-v0.6");
    let temp = || super::entry_containing(&work, "lock.new-");
    let until = Instant::now() + Duration::from_secs(10);
    while temp().is_none() {
        assert!(Instant::now() < until, "the queued create never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::metadata(temp().unwrap()).unwrap().len(), 0);
    assert!(!work.join("lock").exists(), "a lock without its content");
    let re = env.deploy(&plan, &args).output();
    assert!(re.status.success(), "{}", stderr(&re));
    env.assert_complete();
    env.assert_work_dir_holds_only_records();
}

/// The same stall on a server without `hardlink@openssh.com`, where the lock is created in
/// place: the queued create leaves the lock itself, empty, which nobody can tell from a lock
/// about to be written. The error says so and what to do, and doing it finishes the deploy.
#[test]
fn stall_while_creating_the_lock_in_place_says_how_to_finish() {
    let sshd = Sshd::start_with_sftp("-P hardlink");
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let plan = env.plan();
    let args = ["--op-timeout", "10"];
    let child = env.deploy_paused_at(&plan, &args, "lock");
    let out = run_with_the_server_stopped(&sshd, child);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("no answer within 10s")
            && e.contains("; the target was not created, and the lock may be left empty (this host gets it created in place): rerun the same deploy, and if it reports that lock unreadable and no other deploy of this target runs, rerun it with --clear-stale-lock"),
        "{e}"
    );
    let lock = env.parent.join(".sealpush/iu-cutter-v0.6/lock");
    let until = Instant::now() + Duration::from_secs(10);
    while !lock.exists() {
        assert!(Instant::now() < until, "the queued create never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::metadata(&lock).unwrap().len(), 0);
    let re = env.deploy(&plan, &args).output();
    assert!(stderr(&re).contains("unreadable lock"), "{}", stderr(&re));
    env.deploy(&plan, &["--op-timeout", "10", "--clear-stale-lock"])
        .ok();
    env.assert_complete();
    env.assert_work_dir_holds_only_records();
}

/// A rollback whose lock request gets no answer (the server stopped): the error was the bare
/// "lock: ... no answer within 10s", though the host may still carry the request out and the
/// operator cannot tell whether the target stays locked. It says that nothing of the deploy was
/// removed and that the same rollback run again goes on; done, that finishes, and the host is
/// as before.
#[test]
fn stall_while_a_rollback_takes_the_lock_says_how_to_finish() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let args = ["--op-timeout", "10"];
    let child = env.paused_at(env.rollback(&plan, &args), "lock");
    let out = run_with_the_server_stopped(&sshd, child);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("no answer within 10s")
            && e.contains("; nothing of the deploy was removed; rerun the same rollback, which removes or takes over what this run left of its lock and goes on"),
        "{e}"
    );
    env.assert_complete();
    let re = env.rollback(&plan, &args).ok();
    assert!(stdout(&re).ends_with("verdict: PASS\n"), "{}", stdout(&re));
    assert_eq!(env.snapshot(), before, "host not exactly as before");
}

/// A rollback that keeps a name someone added to the tree, and whose lock release then gets no
/// answer: its error said that everything else of the deploy was removed and that running it
/// again finishes, neither of which is so. It now says what was kept.
#[test]
fn a_rollback_whose_unlock_stalls_says_what_it_kept() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let note = env.target.join("docs/NOTE.txt");
    std::fs::write(&note, b"mine\n").unwrap();
    let args = ["--op-timeout", "10"];
    let child = env.paused_at(env.rollback(&plan, &args), "unlock");
    let out = run_with_the_server_stopped(&sshd, child);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("no answer within 10s")
            && !e.contains("everything else of the deploy was removed")
            && e.contains("NOTE.txt (not created by the deploy)")
            && e.contains("may be left"),
        "{e}"
    );
    assert_eq!(std::fs::read(&note).unwrap(), b"mine\n");
}

/// The promote's rename reaches the server, which carries it out only after sealpush gave up
/// waiting (strace holds the server's rename syscalls for 15 s, as a stopped server resumed
/// later would): the error must not say that the target was not created, and the same deploy
/// run again finishes it.
#[test]
fn promote_answered_too_late_is_not_reported_as_not_created() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    let args = ["--op-timeout", "5"];
    let child = env.deploy_paused_at(&plan, &args, "promote");
    let Some((out, _tracers)) = run_with_renames_held(&sshd, child) else {
        return;
    };
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("promote") && e.contains("no answer within 5s"),
        "{e}"
    );
    assert!(!e.contains("the target was not created"), "{e}");
    assert!(e.contains("either absent or complete"), "{e}");
    // The server carries out the rename it received.
    delayed_rename_happens(|| env.target.exists());
    env.assert_absent_or_complete(&anchor);
    let re = env.deploy(&plan, &args).ok();
    assert!(stdout(&re).ends_with("verdict: PASS\n"), "{}", stdout(&re));
    env.assert_complete();
}

/// The rollback's rename of the tree aside reaches the server, which carries it out only
/// after sealpush gave up waiting. `is_ok()` took the timeout for a refusal, the removal in
/// place then failed at once, and the error said "the target is partly removed" while the
/// whole tree had moved, intact. It now says nothing was removed and where the tree may be,
/// and the rollback run again finishes with the host as before.
#[test]
fn rollback_rename_answered_too_late_says_where_the_tree_may_be() {
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let args = ["--op-timeout", "5"];
    let child = env.paused_at(env.rollback(&plan, &args), "cleanup");
    let Some((out, tracers)) = run_with_renames_held(&sshd, child) else {
        return;
    };
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("nothing was removed") && e.contains("carry out that rename"),
        "{e}"
    );
    assert!(!e.contains("partly removed"), "{e}");
    // The server carries out the rename it received: the target goes, intact, aside.
    delayed_rename_happens(|| !env.target.exists());
    drop(tracers);
    env.rollback(&plan, &[]).ok();
    assert_eq!(env.snapshot(), before);
}

/// Releases `child` with the server side of its connection stopped (SIGSTOP), waits for it to
/// end, then lets the server go on.
fn run_with_the_server_stopped(sshd: &Sshd, child: super::Paused) -> std::process::Output {
    let conns = connections(sshd);
    signal_all(&conns, libc::SIGSTOP);
    child.release();
    let out = child.wait_with_output();
    signal_all(&conns, libc::SIGCONT);
    out
}

/// Releases `child` with the server's renames held for 15 s ([`InjectedSyscalls`]) and waits
/// for it to end; `None` (the test skips, said loudly) when strace cannot hold them.
fn run_with_renames_held(
    sshd: &Sshd,
    child: super::Paused,
) -> Option<(std::process::Output, InjectedSyscalls)> {
    let Some(tracers) = InjectedSyscalls::attach(
        &connections(sshd),
        "rename,renameat,renameat2",
        Duration::from_secs(15),
    ) else {
        child.release();
        return None;
    };
    child.release();
    Some((child.wait_with_output(), tracers))
}

/// Waits (up to 30 s) until `done`: the held rename has been carried out.
fn delayed_rename_happens(done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < until, "the delayed rename never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `strace -e inject=SYSCALLS:...` attached to processes (the server side of a connection):
/// each of those system calls starts only after a delay ([`InjectedSyscalls::attach`]), or
/// fails ([`InjectedSyscalls::failing`]). Detached on drop.
struct InjectedSyscalls(Vec<std::process::Child>);

impl InjectedSyscalls {
    /// `None` (after a loud message) when strace is missing or cannot attach.
    fn attach(pids: &[u32], syscalls: &str, delay: Duration) -> Option<InjectedSyscalls> {
        let inject = format!("inject={syscalls}:delay_enter={}", delay.as_micros());
        InjectedSyscalls::inject(pids, &inject)
    }

    /// Each of `syscalls` fails with `errno` (`EPERM`) instead of running.
    fn failing(pids: &[u32], syscalls: &str, errno: &str) -> Option<InjectedSyscalls> {
        InjectedSyscalls::inject(pids, &format!("inject={syscalls}:error={errno}"))
    }

    /// The first of `syscalls` on `path` in each process fails with `errno`; calls on other
    /// paths, and later ones on it, run. `path` must not exist yet (strace would resolve a
    /// symlink there).
    fn failing_once_on(
        pids: &[u32],
        path: &Path,
        syscalls: &str,
        errno: &str,
    ) -> Option<InjectedSyscalls> {
        let inject = format!("inject={syscalls}:error={errno}:when=1");
        InjectedSyscalls::inject_with(pids, &inject, &["-P".as_ref(), path.as_os_str()])
    }

    fn inject(pids: &[u32], inject: &str) -> Option<InjectedSyscalls> {
        InjectedSyscalls::inject_with(pids, inject, &[])
    }

    fn inject_with(
        pids: &[u32],
        inject: &str,
        extra: &[&std::ffi::OsStr],
    ) -> Option<InjectedSyscalls> {
        let mut tracers = InjectedSyscalls(Vec::new());
        for &pid in pids {
            let spawned = std::process::Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-e", inject])
                .args(extra)
                .arg("-p")
                .arg(pid.to_string())
                .stderr(std::process::Stdio::null())
                .spawn();
            match spawned {
                Ok(c) => tracers.0.push(c),
                Err(e) => {
                    eprintln!("\n*** SKIPPING: cannot run strace ({e}) ***\n");
                    return None;
                }
            }
        }
        // Attached once the kernel names a tracer for every process.
        let traced = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("TracerPid:"))
                    .is_some_and(|v| v.trim() != "0")
            })
        };
        let until = Instant::now() + Duration::from_secs(10);
        while !pids.iter().all(|&p| traced(p)) {
            if Instant::now() > until {
                eprintln!("\n*** SKIPPING: strace cannot attach (ptrace not permitted?) ***\n");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(tracers)
    }
}

impl Drop for InjectedSyscalls {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn disk_full_during_upload_leaves_target_absent() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let mnt = tempfile::Builder::new()
        .prefix("sealpush-tmpfs-")
        .tempdir()
        .unwrap();
    let Some(_fs) = crate::support::Mounted::tmpfs(mnt.path(), "8m") else {
        return;
    };
    let env = Env::new_in(ssh_host(sshd), Some(mnt.path()));
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &[], "materialise");
    // Fill the filesystem after the space check, as another writer would.
    let filler = mnt.path().join("filler");
    let _ = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=64k")
        .output();
    child.release();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The cause, not its echo ("the artifact stream ended early", once the upload that hit the
    // full disk had stopped the producer).
    assert!(
        stderr(&out).contains("materialise") && stderr(&out).contains("no space left"),
        "{}",
        stderr(&out)
    );
    env.assert_absent_or_complete(&anchor);
    assert!(!env.target.exists());
    std::fs::remove_file(&filler).unwrap();
    let re = env.deploy(&plan, &["--clear-stale-lock"]).output();
    assert!(re.status.success(), "{}", stderr(&re));
    env.assert_complete();
}

/// The disk fills up in the middle of a large file's upload: the error names the cause (no
/// space, and where), not its echo from the files cut short when the upload stopped.
#[test]
fn disk_full_in_the_middle_of_a_large_file_says_no_space() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let mnt = tempfile::Builder::new()
        .prefix("sealpush-tmpfs-")
        .tempdir()
        .unwrap();
    let Some(_fs) = crate::support::Mounted::tmpfs(mnt.path(), "32m") else {
        return;
    };
    let env = Env::new_in(ssh_host(sshd), Some(mnt.path()));
    // 8 MB of random bytes (the archive cannot shrink them) and small files after it.
    let src = env.tmp.path().join("big-tree");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..8 << 20)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    std::fs::write(src.join("a-big.bin"), &big).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("d/f{i:02}")), format!("{i}\n")).unwrap();
    }
    let (store, art) = env.store_tree(&src, "big");
    let plan = env.plan_for(&store, &art);
    let child = env.deploy_paused_at(&plan, &[], "materialise");
    // Leave 2 MB: the large file starts, and the disk fills in the middle of it.
    let avail = {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(mnt.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let filler = mnt.path().join("filler");
    std::fs::write(&filler, vec![0u8; (avail - (2 << 20)) as usize]).unwrap();
    child.release();
    let out = child.wait_with_output();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("no space left") && e.contains("a-big.bin"),
        "{e}"
    );
    assert!(!e.contains("stream ended early"), "{e}");
    assert!(!env.target.exists());
}

#[test]
fn external_kill_9_at_random_times_then_rerun() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    // A pseudo-random delay per run, different each time the suite runs.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    for i in 0..3u32 {
        let env = ssh_env(sshd);
        let anchor = env.real_recipe(&env.anchor);
        let before = env.snapshot();
        let plan = env.plan();
        let delay = Duration::from_millis(u64::from((seed >> (i * 3)) % 1500));
        let mut child = env
            .deploy(&plan, &["--keep-archive"])
            .cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        env.assert_absent_or_complete(&anchor);
        let re = env
            .deploy(&plan, &["--keep-archive", "--clear-stale-lock"])
            .output();
        let msg = format!("killed after {delay:?}: {}", stderr(&re));
        assert!(
            re.status.success() || stderr(&re).contains("already deployed"),
            "{msg}"
        );
        env.assert_complete();
        let rb = env.rollback(&plan, &[]).output();
        assert!(rb.status.success(), "{msg}: rollback {}", stderr(&rb));
        assert_eq!(env.snapshot(), before, "{msg}");
    }
}

#[test]
fn kill_9_at_journal_steps_over_sftp() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    for fault in [
        "abort-after:materialise",
        "abort-before:promote",
        "abort-after:promote",
        "abort-before:receipt",
    ] {
        let env = ssh_env(sshd);
        let anchor = env.real_recipe(&env.anchor);
        let plan = env.plan();
        let out = env.deploy(&plan, &[]).env("SEALPUSH_FAULT", fault).output();
        assert_eq!(out.status.code(), None, "{fault}: {}", stderr(&out));
        env.assert_absent_or_complete(&anchor);
        let re = env.deploy(&plan, &["--clear-stale-lock"]).output();
        assert!(re.status.success(), "{fault}: {}", stderr(&re));
        env.assert_complete();
        assert_eq!(
            env.leftovers(),
            vec![".sealpush", "iu-cutter-v0.6"],
            "{fault}"
        );
    }
}

/// The engine-logic faults of `local.rs`, over SFTP.
macro_rules! over_sftp {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let sshd = crate::sshd_or_skip!(shared);
            let _log = sshd.log_on_panic();
            crate::deploy::local::$name(ssh_host(sshd));
        }
    )*};
}

mod sftp {
    use super::ssh_host;
    over_sftp!(
        drift_after_preflight_stops_before_writing_anything,
        a_lock_retaken_by_someone_else_is_left_to_them,
        a_name_planted_at_the_lock_temp_is_neither_written_through_nor_removed,
        byte_changed_between_upload_and_read_back_stops_the_deploy,
        cleanup_never_reaches_through_a_symlink_planted_in_the_staged_tree,
        deploy_manifest_changed_before_the_prove_fails_it,
        mode_changed_between_upload_and_verify_stops_the_deploy,
        target_created_between_checks_and_promote_is_never_clobbered,
        two_deploys_of_one_target_cannot_both_run,
        two_runs_of_one_plan_on_one_machine_cannot_both_run,
        a_run_that_waited_for_the_lock_leaves_the_winners_deploy_alone,
        rollback_by_plan_refuses_a_host_receipt_that_is_not_the_plans,
        a_rollback_cut_off_leaves_no_target_and_finishes_when_run_again,
        a_rollback_that_stops_short_can_be_finished_from_another_machine,
        rollback_never_removes_a_tree_without_its_deploy_manifest,
        a_name_added_while_a_rollback_checks_stays_where_it_was_put,
        a_directory_planted_under_the_aside_name_does_not_stand_in_for_the_tree,
        rollback_never_moves_or_removes_through_a_work_dir_that_is_not_the_targets,
        rollback_refuses_edited_files_unless_forced_and_never_removes_foreign_names,
    );
}

/// The target's work dir, where the host lock lives.
fn work_dir(env: &Env) -> std::path::PathBuf {
    env.parent
        .join(".sealpush")
        .join(env.target.file_name().unwrap())
}

/// Two plans of the one target, A made first (`plan-a.json`), and the work dir both lock in.
fn two_plans(env: &Env) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let plan_a = env.tmp.path().join("plan-a.json");
    std::fs::rename(env.plan(), &plan_a).unwrap();
    (plan_a, env.plan(), work_dir(env))
}

/// `sealpush rollback` on `plan` passes and leaves the host exactly as `before` (`what` names
/// the case in the failure).
fn rolled_back_to(
    env: &Env,
    plan: &Path,
    before: &std::collections::BTreeMap<std::path::PathBuf, String>,
    what: &str,
) {
    let re = env.rollback(plan, &[]).ok();
    assert!(
        stdout(&re).ends_with("verdict: PASS\n"),
        "{what}: {}",
        stdout(&re)
    );
    assert_eq!(
        env.snapshot(),
        *before,
        "{what}: host not exactly as before"
    );
}

/// Writes at the lock's name what a run of `action` of another plan, with process `pid` on
/// this machine, would have written there.
fn plant_foreign_lock(env: &Env, pid: u32, action: &str) -> Vec<u8> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = serde_json::json!({
        "owner_host": hostname.trim_end(),
        "pid": pid,
        "since": "2026-05-21T10:00:00Z",
        "since_unix": 1779357600u64,
        "plan_digest": "11".repeat(32),
        "target": env.target,
        "tool_version": "sealpush 0.2.2",
        "action": action,
    });
    let bytes = serde_json::to_vec_pretty(&lock).unwrap();
    std::fs::write(work_dir(env).join("lock"), &bytes).unwrap();
    bytes
}

/// The work dir's names, sorted.
fn work_dir_names(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(work_dir(env))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A pid that ran on this machine and no longer does.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child.id()
}

/// A rollback run while another run holds the target's lock (a deploy of another plan, here
/// this test process, which runs) is refused before it removes anything, naming the holder;
/// `--clear-stale-lock` does not move a lock whose owner runs. Rollback took no lock, and
/// removed the tree under the other run's feet.
#[test]
fn a_rollback_while_another_run_holds_the_lock_is_refused_and_removes_nothing() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let env = ssh_env(sshd);
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let held = plant_foreign_lock(&env, std::process::id(), "deploy");
    let names = work_dir_names(&env);
    for extra in [&[][..], &["--clear-stale-lock"][..]] {
        let out = env.rollback(&plan, extra).expect_code(2);
        let e = stderr(&out);
        assert!(
            e.contains(&format!("is held by pid {}", std::process::id()))
                && e.contains("the owner process is still running")
                && e.contains("a deploy of plan 1111111111111111")
                && e.contains("wait for it to finish"),
            "{extra:?}: {e}"
        );
        env.assert_complete();
        assert_eq!(std::fs::read(work_dir(&env).join("lock")).unwrap(), held);
        assert_eq!(work_dir_names(&env), names, "{extra:?}");
    }
}

/// A lock whose owner is gone (a deploy of another plan, killed) stops the rollback before it
/// removes anything, and says how to go on; with `--clear-stale-lock` the rollback removes it
/// and completes, leaving the host as before the deploy.
#[test]
fn a_rollback_clears_a_stale_foreign_lock_only_on_request() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let env = ssh_env(sshd);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let held = plant_foreign_lock(&env, dead_pid(), "deploy");
    let out = env.rollback(&plan, &[]).expect_code(2);
    let e = stderr(&out);
    assert!(
        e.contains("not running: stale")
            && e.contains("a deploy of plan 1111111111111111")
            && e.contains("--clear-stale-lock"),
        "{e}"
    );
    env.assert_complete();
    assert_eq!(std::fs::read(work_dir(&env).join("lock")).unwrap(), held);
    let out = env.rollback(&plan, &["--clear-stale-lock"]).ok();
    assert!(
        stdout(&out).ends_with("verdict: PASS\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.snapshot(), before, "host not exactly as before");
}

/// A rollback killed (`kill -9`) while it holds its lock, with the tree still there or already
/// removed, leaves a lock that names the rollback of this plan; the same rollback run again,
/// without `--clear-stale-lock`, takes it over, finishes, and leaves no lock.
#[test]
fn a_rollback_killed_holding_its_lock_is_finished_by_running_it_again() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    for fault in ["abort-after:lock", "abort-before:unlock"] {
        let env = ssh_env(sshd);
        let before = env.snapshot();
        let plan = env.plan();
        env.deploy(&plan, &[]).ok();
        let out = env
            .rollback(&plan, &[])
            .env("SEALPUSH_FAULT", fault)
            .output();
        assert_eq!(
            out.status.code(),
            None,
            "{fault}: not killed: {}",
            stderr(&out)
        );
        let lock: serde_json::Value =
            serde_json::from_slice(&std::fs::read(work_dir(&env).join("lock")).unwrap()).unwrap();
        assert_eq!(lock["action"], "rollback", "{fault}: {lock}");
        rolled_back_to(&env, &plan, &before, fault);
    }
}

/// The rollback holds the lock while it removes (seen paused just before it moves the tree),
/// and a rollback that ends normally leaves neither the lock nor the file it was written in.
/// The work dir was there before the deploy, so the rollback keeps it: its listing shows
/// what the lock left.
#[test]
fn a_rollback_holds_the_lock_while_it_removes_and_leaves_none() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let env = ssh_env(sshd);
    std::fs::create_dir_all(work_dir(&env)).unwrap();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let digest = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&plan).unwrap())
        .unwrap()["digest"]
        .clone();
    let child = env.paused_at(env.rollback(&plan, &[]), "cleanup");
    let lock = std::fs::read(work_dir(&env).join("lock"));
    let lock: serde_json::Value = match lock {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(e) => {
            child.release();
            panic!("no lock while the rollback removes: {e}");
        }
    };
    assert_eq!(lock["action"], "rollback", "{lock}");
    assert_eq!(lock["pid"], child.id(), "{lock}");
    assert_eq!(lock["plan_digest"], digest, "{lock}");
    assert!(env.target.exists(), "paused before the tree moves");
    child.release();
    let out = child.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("verdict: PASS\n"),
        "{}",
        stdout(&out)
    );
    assert!(!env.target.exists());
    let temp = env.recorded_lock_temp();
    assert_eq!(temp.parent(), Some(work_dir(&env).as_path()));
    assert!(!temp.exists(), "{} left", temp.display());
    assert_eq!(work_dir_names(&env), Vec::<String>::new());
}

/// A rollback that finds neither the tree nor the work dir (run again after a complete one)
/// has nothing to remove and nothing to lock: it writes nothing on the host, not even the
/// work dir a lock would need.
#[test]
fn a_rollback_with_nothing_left_takes_no_lock_and_writes_nothing() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let env = ssh_env(sshd);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    env.rollback(&plan, &[]).ok();
    assert_eq!(env.snapshot(), before);
    let again = env.rollback(&plan, &[]).ok();
    let r = stdout(&again);
    assert!(
        r.contains("nothing of this deploy was left") && r.ends_with("verdict: PASS\n"),
        "{r}"
    );
    assert_eq!(
        env.snapshot(),
        before,
        "the second rollback wrote on the host"
    );
}

/// A script that asks for JSON gets JSON on stdout even when the host cannot be reached:
/// deploy a FAIL verdict naming the plan, rollback `complete: false` with the error.
#[test]
fn json_output_when_the_host_cannot_be_reached() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let env = ssh_env(sshd);
    let plan = env.plan();
    // A port held bound and not listening: refused for sure (port 1 is refused only while
    // nothing on the machine listens there).
    let refused = crate::support::RefusedPort::bind();
    let bad = env.tmp.path().join("bad-config");
    std::fs::write(
        &bad,
        format!(
            "Host {}\n  HostName 127.0.0.1\n  Port {}\n",
            sshd.alias(),
            refused.port
        ),
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let out = env
        .deploy(&plan, &["--json", "--ssh-config", bad])
        .expect_code(2);
    // ssh's failure names the host once ("connecting to h: cannot connect to h" said it twice).
    let v = crate::deploy::json_fail_verdict(&out, "cannot connect to");
    let reason = v["verdict"]["reasons"][0].as_str().unwrap();
    assert!(!reason.contains("connecting to"), "{reason}");
    let out = env
        .rollback(&plan, &["--json"])
        .cmd_args(["--ssh-config", bad])
        .expect_code(2);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["complete"], false, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("cannot connect to") && !error.contains("connecting to"),
        "{v}"
    );
}

#[test]
fn modes_are_exact_whatever_the_servers_umask() {
    // sealpush learns the mode the server gives a new file and chmods only when it differs:
    // under umask 002 new files come out 0664, so every file still needs its chmod.
    use std::os::unix::fs::PermissionsExt;
    for umask in ["002", "077"] {
        let sshd = Sshd::start_with_sftp(&format!("-u {umask}"));
        let _log = sshd.log_on_panic();
        let env = ssh_env(&sshd);
        let plan = env.plan();
        env.deploy(&plan, &[]).ok();
        env.assert_complete();
        let src = crate::support::fixtures().join("iu-cutter-v0.6");
        let mut checked = 0;
        for e in walkdir(&env.target) {
            let m = std::fs::symlink_metadata(&e).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let rel = e.strip_prefix(&env.target).unwrap();
            if m.is_dir() {
                assert_eq!(mode, 0o755, "umask {umask}: {}", rel.display());
            } else if m.is_file() && rel != Path::new("DEPLOY-MANIFEST.txt") {
                let exec = std::fs::metadata(src.join(rel))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o100;
                let want = if exec != 0 { 0o755 } else { 0o644 };
                assert_eq!(mode, want, "umask {umask}: {}", rel.display());
                checked += 1;
            }
        }
        assert!(checked > 5, "only {checked} files checked");
    }
}

#[test]
fn host_sha256sum_verify_is_recorded_and_catches_a_changed_byte() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    // A byte flipped between upload and the host's sha256sum -c: refused, nothing promoted.
    let env = ssh_env(sshd);
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &["--verify", "host-sha256sum"], "verify");
    let staged = env.staging_dir().unwrap().join("iu-cutter-v0.6/README.md");
    flip_first_byte(&staged);
    child.release();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("host sha256sum check"),
        "{}",
        stderr(&out)
    );
    assert!(!env.target.exists());
    assert_eq!(env.leftovers(), Vec::<String>::new());
    // And a clean run records the mode in the receipt.
    env.deploy_host_checked(&plan);
    env.assert_complete();
}

#[test]
fn corrupted_stored_archive_stops_the_deploy_before_the_promote_over_sftp() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    super::local::corrupted_stored_archive_stops_the_deploy_before_the_promote(ssh_host(sshd));
}

#[test]
fn check_still_running_at_the_op_timeout_fails_rolls_back_and_is_killed_on_the_host() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    super::local::check_still_running_at_the_op_timeout_is_stopped(ssh_host(sshd));
}

#[test]
fn rollback_of_a_plan_connects_once() {
    // A private server: its log counts only this test's connections.
    let sshd = Sshd::start();
    let _log = sshd.log_on_panic();
    let env = ssh_env(&sshd);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let logins = || sshd.log().matches("Accepted publickey").count();
    let n = logins();
    let rb = env.rollback(&plan, &[]).ok();
    assert!(
        stdout(&rb).contains("anchor_unchanged: YES"),
        "{}",
        stdout(&rb)
    );
    // The connection that looked for the receipt is the one the rollback used.
    assert_eq!(logins(), n + 1, "{}", sshd.log());
    assert_eq!(env.snapshot(), before, "host not exactly as before");
}

#[test]
fn capped_request_size_splits_every_read_and_write_and_the_tree_arrives_whole() {
    // `--sftp-request-size` makes sealpush work as against a server with a small request limit:
    // a file that would go in one write request (with its chmod and fsync behind it) goes in
    // parts, the rest after the fsync and fsynced again; larger files go in capped pieces;
    // reads (the anchor, the read-back) come back in capped pieces.
    use std::os::unix::fs::PermissionsExt;
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    const CAP: usize = 4096;
    let sizes = [
        0,
        1,
        CAP - 1,
        CAP,
        CAP + 1,
        50_000,
        261_119,
        261_120,
        261_121,
        700_001,
    ];
    for extra in [&[][..], &["--sync"][..]] {
        let env = ssh_env(sshd);
        let src = env.tmp.path().join("sizes/payload");
        std::fs::create_dir_all(&src).unwrap();
        for (i, n) in sizes.iter().enumerate() {
            let f = src.join(format!("f{i}-{n}"));
            std::fs::write(&f, super::random_bytes(*n)).unwrap();
            if i % 3 == 0 {
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let (store_dir, art) = env.store_tree(&src, "sizes-store");
        let cap = CAP.to_string();
        // The preflight reads the anchor with capped requests; plan_with checks its digest
        // against the real recipe on the host. The read-back of the larger files goes in
        // pipelined 4 KiB pieces.
        let plan = env.plan_with(&store_dir, &art, &["--sftp-request-size", &cap]);
        let mut args = vec!["--sftp-request-size", cap.as_str()];
        args.extend_from_slice(extra);
        let out = env.deploy(&plan, &args).ok();
        assert!(
            stdout(&out).ends_with("verdict: PASS\n"),
            "{}",
            stdout(&out)
        );
        env.assert_audit();
        for (i, n) in sizes.iter().enumerate() {
            let name = format!("f{i}-{n}");
            let (a, b) = (src.join(&name), env.target.join(&name));
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "{extra:?}: {name} differs"
            );
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode(&b), mode(&a), "{extra:?}: {name}");
        }
    }
}

#[test]
fn a_tree_the_recipe_cannot_hash_deploys_and_rolls_back_over_sftp() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    super::local::a_tree_the_recipe_cannot_hash_deploys_and_rolls_back(ssh_host(sshd));
}

#[test]
fn a_fifo_made_by_the_check_is_recorded_and_rolled_back_over_sftp() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    super::local::a_fifo_made_by_the_check_is_recorded_and_rolled_back(ssh_host(sshd));
}

/// The local journal's `(step, phase)` pairs, in order.
fn journal_steps(env: &Env) -> Vec<(String, String)> {
    std::fs::read_to_string(env.state_file("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                r["step"].as_str().unwrap().to_string(),
                r["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `--rollback-on-check-failure`: the deploy's lock passes to its automatic rollback without
/// ever being released. Seen paused where the rollback is about to move the tree: the lock is
/// the deploy's own (same pid, same bytes as when it was taken) and nothing was unlocked yet;
/// in the end the lock was taken once and released once, after the deploy finished and the
/// rollback removed the tree. (Released after the receipt and taken again by the rollback,
/// another run could take the target in between and the rollback was refused.)
#[test]
fn an_automatic_rollback_keeps_the_deploys_lock_throughout() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    let env = ssh_env(sshd);
    let before = env.snapshot();
    let plan = env.plan();
    let child = env.deploy_paused_at(
        &plan,
        &["--check", "exit 3", "--rollback-on-check-failure"],
        "cleanup",
    );
    let lock = std::fs::read(work_dir(&env).join("lock"));
    let steps = journal_steps(&env);
    child.release();
    let lock: serde_json::Value = serde_json::from_slice(&lock.unwrap()).unwrap();
    assert_eq!(lock["pid"], child.id(), "{lock}");
    assert_eq!(lock["action"], "deploy", "{lock}");
    let count = |steps: &[(String, String)], step: &str, phase: &str| {
        steps
            .iter()
            .filter(|(s, p)| s == step && p == phase)
            .count()
    };
    assert_eq!(count(&steps, "finished", "done"), 1, "{steps:?}");
    assert_eq!(count(&steps, "unlock", "intent"), 0, "{steps:?}");
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("rolled_back: YES"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.snapshot(), before, "host not exactly as before");
    let steps = journal_steps(&env);
    assert_eq!(count(&steps, "lock", "done"), 1, "{steps:?}");
    assert_eq!(count(&steps, "unlock", "intent"), 1, "{steps:?}");
    assert_eq!(count(&steps, "unlock", "done"), 1, "{steps:?}");
    let at = |step: &str, phase: &str| {
        steps
            .iter()
            .position(|(s, p)| s == step && p == phase)
            .unwrap()
    };
    assert!(at("finished", "done") < at("unlock", "intent"), "{steps:?}");
    assert!(at("unlock", "done") < at("reset", "done"), "{steps:?}");
}

/// A deploy killed (`kill -9`) while it hands its lock to its automatic rollback, or while the
/// rollback holds it, leaves the lock of a dead run of this plan: `sealpush rollback` on the
/// plan takes it over and leaves the host as before.
#[test]
fn an_automatic_rollback_killed_is_finished_by_rollback_on_the_plan() {
    let sshd = crate::sshd_or_skip!(shared);
    let _log = sshd.log_on_panic();
    for fault in [
        "abort-after:receipt",
        "abort-after:finished",
        "abort-before:unlock",
    ] {
        let env = ssh_env(sshd);
        let before = env.snapshot();
        let plan = env.plan();
        let out = env
            .deploy(&plan, &["--check", "exit 3", "--rollback-on-check-failure"])
            .env("SEALPUSH_FAULT", fault)
            .output();
        assert_eq!(
            out.status.code(),
            None,
            "{fault}: not killed: {}",
            stderr(&out)
        );
        assert!(
            work_dir(&env).join("lock").exists(),
            "{fault}: no lock left"
        );
        rolled_back_to(&env, &plan, &before, fault);
    }
}
