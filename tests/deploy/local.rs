//! The deploy engine's logic over the local transport (`--host local`): fast, no server, every
//! journal step. The same faults over a real sshd are in `sshd.rs`.

use std::path::{Path, PathBuf};

use super::{copy_tree, flip_first_byte, stderr, stdout, Env, Host};

/// Steps at which `SEALPUSH_FAULT` kills the process (before the mutation and after it).
const STEPS: &[&str] = &[
    "work-dir",
    "lock",
    "staging",
    "materialise",
    "upload-archive",
    "verify",
    "deploy-manifest",
    "promote",
    "remove-staging",
    "sync",
    "prove",
    "check",
    "receipt",
    "unlock",
    "finished",
];

/// A check that creates a name in the target, as `python3 -m unittest` creates `__pycache__`.
const CHECK: &str = "mkdir -p made-by-check && echo ran > made-by-check/out";

#[test]
fn local_deploy_status_rollback_end_to_end() {
    let env = Env::new(Host::Local);
    let before = env.snapshot();
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    let out = env.deploy(&plan, &["--keep-archive", "--sync"]).ok();
    let report = stdout(&out);
    assert!(report.ends_with("verdict: PASS\n"), "{report}");
    assert!(
        report.contains(&format!("anchor_tree_sha256_after: {anchor}")),
        "{report}"
    );
    assert!(report.contains("anchor_unchanged: YES"), "{report}");
    env.assert_complete();
    env.assert_host_journal_complete();
    env.assert_work_dir_holds_only_records();
    assert_eq!(env.real_recipe(&env.anchor), anchor);
    // The tree's modes: directories 0755 (staging was 0700, the tree inside it was not).
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&env.target).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(env.leftovers(), vec![".sealpush", "iu-cutter-v0.6"]);
    let kept = std::fs::read_dir(env.parent.join(".sealpush/iu-cutter-v0.6"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .count();
    assert_eq!(kept, 1, "kept archive");
    // The same plan twice: refused, nothing touched.
    let again = env.deploy(&plan, &[]).expect_code(2);
    assert!(
        stderr(&again).contains("already deployed"),
        "{}",
        stderr(&again)
    );
    // status re-reads everything.
    let st = env
        .sealpush(["status", "--host", "local", "--target"])
        .env("X", "")
        .output();
    assert!(!st.status.success(), "status needs a target value");
    // rollback from the plan: the host is exactly as before.
    env.status_passes_then_rollback_restores(&plan, &before);
    // Rolled back: the plan can be deployed again.
    env.deploy(&plan, &[]).ok();
    env.assert_complete();
}

#[test]
fn kill_at_every_journal_step_leaves_target_absent_or_complete_and_rerun_finishes() {
    for step in STEPS {
        for when in ["abort-before", "abort-after"] {
            if *step == "finished" && when == "abort-before" {
                continue; // a marker: it has no intent record
            }
            let env = Env::new(Host::Local);
            let before = env.snapshot();
            let anchor = env.real_recipe(&env.anchor);
            let plan = env.plan();
            let fault = format!("{when}:{step}");
            let out = env
                .deploy(&plan, &["--keep-archive", "--sync", "--check", CHECK])
                .env("SEALPUSH_FAULT", &fault)
                .output();
            assert_eq!(
                out.status.code(),
                None,
                "{fault}: not killed: {}",
                stderr(&out)
            );
            env.assert_absent_or_complete(&anchor);
            // Re-run: finishes or cleans up and starts over.
            let rerun = env
                .deploy(
                    &plan,
                    // No --clear-stale-lock: the dead run's lock is this deploy's own.
                    &["--keep-archive", "--sync", "--check", CHECK],
                )
                .output();
            if *step == "finished" && when == "abort-after" {
                // The deploy had completed; the re-run says so.
                assert!(
                    stderr(&rerun).contains("already deployed"),
                    "{fault}: {}",
                    stderr(&rerun)
                );
            } else {
                assert!(
                    rerun.status.success(),
                    "{fault}: rerun failed: {}",
                    stderr(&rerun)
                );
                assert!(stdout(&rerun).ends_with("verdict: PASS\n"), "{fault}");
            }
            env.assert_complete();
            assert_eq!(
                env.leftovers(),
                vec![".sealpush", "iu-cutter-v0.6"],
                "{fault}"
            );
            let rb = env.rollback(&plan, &[]).output();
            assert!(rb.status.success(), "{fault}: rollback: {}", stderr(&rb));
            assert_eq!(
                env.snapshot(),
                before,
                "{fault}: host not as before after rollback"
            );
        }
    }
}

/// A dead deploy's lock that names another plan (the lock of this plan's own dead run is taken
/// over by a re-run: the kill tests above re-run without the flag).
#[test]
fn stale_lock_names_owner_and_age_and_is_cleared_only_on_request() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy_killed(&plan, "abort-after:materialise");
    let lock = env.parent.join(".sealpush/iu-cutter-v0.6/lock");
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
    info["plan_digest"] = "00".repeat(32).into();
    std::fs::write(&lock, serde_json::to_vec(&info).unwrap()).unwrap();
    let again = env.deploy(&plan, &[]).expect_code(2);
    let e = stderr(&again);
    assert!(
        e.contains("is held by pid") && e.contains(" ago") && e.contains("not running: stale"),
        "{e}"
    );
    assert!(e.contains("--clear-stale-lock"), "{e}");
    assert!(!env.target.exists());
    env.deploy(&plan, &["--clear-stale-lock"]).ok();
    env.assert_complete();
}

#[test]
fn drift_after_preflight_stops_before_writing_anything_local() {
    drift_after_preflight_stops_before_writing_anything(Host::Local);
}

pub fn drift_after_preflight_stops_before_writing_anything(host: Host) {
    // Target created by someone else (file, empty dir), anchor modified, symlink planted at
    // the staging name: each stops the deploy, writes nothing, and says what changed.
    type Setup = fn(&Env, &Path);
    let cases: &[(&str, Setup, &str)] = &[
        (
            "target file",
            |e, _| std::fs::write(&e.target, b"x").unwrap(),
            "now exists as a file",
        ),
        (
            "target empty dir",
            |e, _| std::fs::create_dir(&e.target).unwrap(),
            "now exists as a directory",
        ),
        (
            "anchor modified",
            |e, _| std::fs::write(e.anchor.join("README.md"), b"edited").unwrap(),
            "anchor",
        ),
        (
            "symlink at staging",
            |_, staging| std::os::unix::fs::symlink("/etc", staging).unwrap(),
            "which this deploy did not create",
        ),
    ];
    for (name, setup, expect) in cases {
        let env = Env::new(host.clone());
        let anchor = env.real_recipe(&env.anchor);
        let plan = env.plan();
        let staging =
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&plan).unwrap())
                .unwrap()["plan"]["staging"]
                .as_str()
                .unwrap()
                .to_string();
        setup(&env, Path::new(&staging));
        let before = env.snapshot();
        let out = env.deploy(&plan, &[]).expect_code(1);
        let e = stderr(&out);
        assert!(
            e.contains("no longer matches the plan") && e.contains(expect),
            "{name}: {e}"
        );
        assert_eq!(env.snapshot(), before, "{name}: something was written");
        if *name != "anchor modified" {
            assert_eq!(env.real_recipe(&env.anchor), anchor);
        }
    }
}

#[test]
fn edited_plan_is_refused() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    let text = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(&plan, text.replace("iu-cutter-v0.6\"", "iu-cutter-v0.7\"")).unwrap();
    let out = env.deploy(&plan, &[]).expect_code(1);
    assert!(
        stderr(&out).contains("edited after preflight"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// A plan file's sealed plan, the compact JSON its digest covers, and the `tool_version`
/// member spelled as in that JSON (a place to put fields in).
fn plan_as_hashed(plan: &Path) -> (sealpush::plan::SealedPlan, String, String) {
    let sealed =
        sealpush::plan::SealedPlan::from_json(&std::fs::read_to_string(plan).unwrap()).unwrap();
    let ours = String::from_utf8(sealpush::plan::canonical_bytes(&sealed.plan)).unwrap();
    let current = format!("\"tool_version\":\"{}\"", sealed.plan.tool_version);
    assert!(ours.contains(&current), "{ours}");
    (sealed, ours, current)
}

/// A plan from a later sealpush, with a field this one does not know, is intact but not
/// readable here: it is refused as such (bad input, exit 2), not called edited, and nothing is
/// done. With the same field added by hand (the digest left as it was) it is an edit.
#[test]
fn a_later_sealpushs_plan_is_refused_as_such_not_as_edited() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    // What a later version writes: its own fields in its compact JSON, hashed, then the file.
    let (sealed, ours, current) = plan_as_hashed(&plan);
    let later = ours.replacen(
        &current,
        "\"tool_version\":\"sealpush 9.9.9\",\"rollout\":{\"waves\":3}",
        1,
    );
    let digest = sealpush::digest::Digest::of(later.as_bytes());
    std::fs::write(
        &plan,
        format!(
            "{{\n  \"plan\": {later},\n  \"digest\": \"{}\"\n}}\n",
            digest.to_hex()
        ),
    )
    .unwrap();
    for mut run in [env.deploy(&plan, &[]), env.rollback(&plan, &[])] {
        let out = run.expect_code(2);
        let e = stderr(&out);
        assert!(
            e.contains("made by sealpush 9.9.9")
                && e.contains("plan.rollout")
                && !e.contains("edited"),
            "{e}"
        );
    }
    // The same field put in by hand: the digest no longer covers the content.
    let edited = ours.replacen(
        &current,
        &format!("{current},\"rollout\":{{\"waves\":3}}"),
        1,
    );
    std::fs::write(
        &plan,
        format!(
            "{{\"plan\":{edited},\"digest\":\"{}\"}}",
            sealed.digest.to_hex()
        ),
    )
    .unwrap();
    let out = env.deploy(&plan, &[]).expect_code(1);
    assert!(
        stderr(&out).contains("edited after preflight"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// Fields this sealpush does not know in a plan that names this very version as its maker were
/// not written by a later one: they were added by hand. Such a plan was refused "as made by
/// sealpush 0.2.3, which wrote fields this sealpush (sealpush 0.2.3) does not know". In `plan`,
/// with its digest recomputed, it is an edit (exit 1); beside `plan`, outside what the digest
/// covers, it is read as before 0.2.3 (the field ignored) and deploys.
#[test]
fn unknown_fields_in_a_plan_of_this_very_version_are_no_later_sealpushs() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    let text = std::fs::read_to_string(&plan).unwrap();
    let (_, ours, current) = plan_as_hashed(&plan);
    let added = ours.replacen(&current, &format!("{current},\"note\":\"ops\""), 1);
    let recomputed = sealpush::digest::Digest::of(added.as_bytes());
    std::fs::write(
        &plan,
        format!(
            "{{\"plan\":{added},\"digest\":\"{}\"}}",
            recomputed.to_hex()
        ),
    )
    .unwrap();
    let out = env.deploy(&plan, &[]).expect_code(1);
    assert!(
        stderr(&out).contains("edited after preflight") && !stderr(&out).contains("made by"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.leftovers(), Vec::<String>::new());
    let beside = text.trim_end().strip_suffix('}').unwrap().to_string() + ",\"note\":\"ops\"}\n";
    std::fs::write(&plan, beside).unwrap();
    env.deploy(&plan, &[]).ok();
    env.rollback(&plan, &[]).ok();
}

/// A plan cut short is no plan: bad input (exit 2), as a receipt cut short is for rollback.
/// Before, deploy called it a failed check (exit 1), and the two commands disagreed. Both say
/// what to give instead.
#[test]
fn truncated_plan_is_bad_input() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    let text = std::fs::read(&plan).unwrap();
    std::fs::write(&plan, &text[..text.len() / 2]).unwrap();
    let out = env.deploy(&plan, &[]).expect_code(2);
    assert!(
        stderr(&out).contains("not a sealpush plan"),
        "{}",
        stderr(&out)
    );
    // Both say what to do: the file preflight wrote, or a new plan.
    assert!(
        stderr(&out).contains("run preflight again"),
        "{}",
        stderr(&out)
    );
    let out = env.rollback(&plan, &[]).expect_code(2);
    assert!(stderr(&out).contains("is not JSON"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("give the deploy's receipt.json or its plan file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn byte_changed_between_upload_and_read_back_stops_the_deploy_local() {
    byte_changed_between_upload_and_read_back_stops_the_deploy(Host::Local);
}

pub fn byte_changed_between_upload_and_read_back_stops_the_deploy(host: Host) {
    let env = Env::new(host.clone());
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &[], "verify");
    // Flip one byte of a staged file, as a faulty disk or another process would.
    let staged = env.staging_dir().unwrap().join("iu-cutter-v0.6/README.md");
    flip_first_byte(&staged);
    child.release();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("README.md: expected sha256"), "{e}");
    assert!(!env.target.exists());
    env.assert_absent_or_complete(&anchor);
    // Everything the failed deploy created was removed again.
    assert_eq!(env.leftovers(), Vec::<String>::new());
    env.deploy(&plan, &[]).ok();
    env.assert_complete();
}

/// Killed after its receipt, before its unlock: the deploy is complete but its lock remains.
/// Rolling it back straight away (no re-run) removes the lock too, since it names this plan and
/// its owner is provably gone, and leaves the host exactly as before.
#[test]
fn rollback_after_a_kill_before_the_unlock_removes_the_dead_runs_lock() {
    for fault in ["abort-after:receipt", "abort-before:unlock"] {
        let env = Env::new(Host::Local);
        let before = env.snapshot();
        let plan = env.plan();
        let out = env.deploy(&plan, &[]).env("SEALPUSH_FAULT", fault).output();
        assert_eq!(out.status.code(), None, "{fault}: not killed");
        assert!(env.parent.join(".sealpush/iu-cutter-v0.6/lock").exists());
        let rb = env.rollback(&plan, &[]).output();
        assert!(rb.status.success(), "{fault}: rollback: {}", stderr(&rb));
        assert!(stdout(&rb).ends_with("verdict: PASS\n"), "{fault}");
        assert_eq!(env.snapshot(), before, "{fault}");
    }
}

/// Plan A deployed and rolled back, then plan B (same artifact, same target) deployed: A's
/// receipt, still on file, must not roll back B's tree, even forced, though every entry but
/// the deploy manifest matches.
#[test]
fn a_stale_receipt_never_rolls_back_a_later_plans_deploy() {
    let env = Env::new(Host::Local);
    let plan_a = env.tmp.path().join("plan-a.json");
    std::fs::rename(env.plan(), &plan_a).unwrap();
    env.deploy(&plan_a, &[]).ok();
    env.rollback(&plan_a, &[]).ok();
    let plan_b = env.plan();
    env.deploy(&plan_b, &[]).ok();
    let deployed = env.snapshot();
    for extra in [&[][..], &["--force"]] {
        let out = env.rollback(&plan_a, extra).output();
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("holds the deploy of plan"),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert_eq!(env.snapshot(), deployed, "{extra:?}");
    }
    env.rollback(&plan_b, &[]).ok();
    assert!(!env.target.exists());
}

/// Killed just before its promote; then the stray staging dir is removed by hand and someone
/// else creates the target. The re-run must not take that directory for its own promoted tree:
/// it reports the drift and touches nothing.
#[test]
fn a_foreign_target_after_a_kill_before_the_promote_is_drift_not_ours() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy_killed(&plan, "abort-before:promote");
    std::fs::remove_dir_all(env.staging_dir().unwrap()).unwrap();
    std::fs::create_dir(&env.target).unwrap();
    std::fs::write(env.target.join("theirs.txt"), "someone else's").unwrap();
    let before = env.snapshot();
    let again = env.deploy(&plan, &[]).expect_code(1);
    let e = stderr(&again);
    assert!(e.contains("now exists as a directory"), "{e}");
    assert_eq!(env.snapshot(), before, "{e}");
}

/// After the survey, a component of the target's parent becomes world-writable, then a
/// symlink: the deploy re-checks the path itself (the plan's verdict is not taken on trust) and
/// writes nothing until it is as preflight saw it.
#[test]
fn a_parent_path_changed_since_preflight_stops_the_deploy() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(Host::Local);
    let plan = env.plan();
    let before = env.snapshot();
    let mode = |m| std::fs::set_permissions(&env.parent, std::fs::Permissions::from_mode(m));
    mode(0o777).unwrap();
    let e = stderr(&env.deploy(&plan, &[]).expect_code(1));
    assert!(e.contains("world-writable without the sticky bit"), "{e}");
    mode(0o755).unwrap();
    let up = env.parent.parent().unwrap();
    let real = up.with_file_name("incomex-real");
    std::fs::rename(up, &real).unwrap();
    std::os::unix::fs::symlink("incomex-real", up).unwrap();
    let e = stderr(&env.deploy(&plan, &[]).expect_code(1));
    assert!(e.contains("is a symlink"), "{e}");
    std::fs::remove_file(up).unwrap();
    std::fs::rename(&real, up).unwrap();
    assert_eq!(env.snapshot(), before);
    env.deploy(&plan, &[]).ok();
    env.assert_complete();
}

#[test]
fn cleanup_never_reaches_through_a_symlink_planted_in_the_staged_tree_local() {
    cleanup_never_reaches_through_a_symlink_planted_in_the_staged_tree(Host::Local);
}

/// While the deploy waits before its verify, a staged directory is replaced by a symlink to a
/// user's directory whose names match the artifact's. The verify fails, and the cleanup
/// removes what the deploy made but neither the symlink nor anything behind it, and says what
/// it left; once the symlink is gone, a re-run cleans up and deploys.
pub fn cleanup_never_reaches_through_a_symlink_planted_in_the_staged_tree(host: Host) {
    let env = Env::new(host.clone());
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    // The user's directory holds the very names the artifact has under iu_cutter/.
    let theirs = env.tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    for name in ["__init__.py", "config.py", "cutter.py", "notes.txt"] {
        std::fs::write(theirs.join(name), format!("user data in {name}\n")).unwrap();
    }
    let child = env.deploy_paused_at(&plan, &[], "verify");
    let staged = env.staging_dir().unwrap().join("iu-cutter-v0.6");
    std::fs::remove_dir_all(staged.join("iu_cutter")).unwrap();
    std::os::unix::fs::symlink(&theirs, staged.join("iu_cutter")).unwrap();
    child.release();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    for name in ["__init__.py", "config.py", "cutter.py", "notes.txt"] {
        assert_eq!(
            std::fs::read_to_string(theirs.join(name)).ok(),
            Some(format!("user data in {name}\n")),
            "{name} behind the symlink was touched: {e}"
        );
    }
    assert!(e.contains("iu_cutter"), "{e}");
    assert!(e.contains("did not create, left alone"), "{e}");
    assert!(e.contains("left on the host"), "{e}");
    // Only the planted symlink is left of the staged tree.
    let left: Vec<String> = crate::support::walkdir(&staged)
        .into_iter()
        .map(|p| p.strip_prefix(&staged).unwrap().display().to_string())
        .collect();
    assert_eq!(left, ["iu_cutter"], "{e}");
    assert!(!env.target.exists());
    env.assert_absent_or_complete(&anchor);
    std::fs::remove_file(staged.join("iu_cutter")).unwrap();
    env.deploy(&plan, &["--clear-stale-lock"]).ok();
    env.assert_complete();
}

#[test]
fn a_lock_retaken_by_someone_else_is_left_to_them_local() {
    a_lock_retaken_by_someone_else_is_left_to_them(Host::Local);
}

/// Between the unlock's intent and the removal, the lock is cleared and taken by another
/// deploy: the finishing deploy leaves it alone (its bytes are not the ones this run wrote).
pub fn a_lock_retaken_by_someone_else_is_left_to_them(host: Host) {
    let env = Env::new(host.clone());
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &[], "unlock");
    let lock = env.parent.join(".sealpush/iu-cutter-v0.6/lock");
    let theirs = std::fs::read(&lock)
        .unwrap()
        .iter()
        .map(|&b| if b == b'1' { b'2' } else { b })
        .collect::<Vec<u8>>();
    std::fs::remove_file(&lock).unwrap();
    std::fs::write(&lock, &theirs).unwrap();
    child.release();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.assert_complete();
    assert_eq!(
        std::fs::read(&lock).unwrap(),
        theirs,
        "their lock is untouched"
    );
}

/// A run cut off while taking the lock leaves the file it wrote the lock in (its `lock` intent
/// record names it): empty, when the server stalled between the create and the write, or whole
/// and linked to the lock, when the run was cut off before removing it. The same deploy run
/// again removes it (taking over the dead run's lock in the second case), and neither the deploy
/// nor its rollback leaves anything of it.
#[test]
fn a_lock_temp_left_by_a_cut_off_run_is_removed_by_the_rerun() {
    for (fault, left) in [
        ("abort-before:lock", "empty"),
        ("abort-after:lock", "linked to the lock"),
    ] {
        let env = Env::new(Host::Local);
        let before = env.snapshot();
        let plan = env.plan();
        env.deploy_killed(&plan, fault);
        let temp = env.recorded_lock_temp();
        let lock = env.parent.join(".sealpush/iu-cutter-v0.6/lock");
        if left == "empty" {
            assert!(!lock.exists(), "{left}");
            std::fs::write(&temp, b"").unwrap();
        } else {
            // That run linked its file and removed it: back to the moment between the two.
            std::fs::hard_link(&lock, &temp).unwrap();
        }
        let out = env.deploy(&plan, &[]).ok();
        assert!(stdout(&out).ends_with("verdict: PASS\n"), "{left}");
        assert!(
            !temp.exists(),
            "{left}: the cut-off run's lock file is left"
        );
        env.assert_complete();
        env.assert_work_dir_holds_only_records();
        env.rollback(&plan, &[]).ok();
        assert_eq!(env.snapshot(), before, "{left}");
    }
}

/// The same beside a target whose parent's path holds a newline (a valid UTF-8 path preflight
/// accepts): the rerun read the journal's `lock` intent line by line, found no line that was
/// the lock's file, and left it (linked to nothing) in the work dir, where every later
/// preflight of the target fails on it.
#[test]
fn a_lock_temp_left_by_a_cut_off_run_is_removed_by_the_rerun_under_a_parent_with_a_newline() {
    let base = tempfile::tempdir().unwrap();
    let env = Env::new_in(Host::Local, Some(&base.path().join("a\nb")));
    let plan = env.plan();
    env.deploy_killed(&plan, "abort-after:lock");
    let work = env.parent.join(".sealpush/iu-cutter-v0.6");
    let lock = work.join("lock");
    // `recorded_lock_temp` reads lines: the intent is the lock's path, a newline, the temp's.
    let journal = std::fs::read_to_string(env.state_file("journal.jsonl")).unwrap();
    let intent: serde_json::Value = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["step"] == "lock" && r["phase"] == "intent")
        .unwrap();
    let detail = intent["detail"].as_str().unwrap();
    let temp = PathBuf::from(
        detail
            .strip_prefix(&format!("{}\n", lock.display()))
            .unwrap_or_else(|| panic!("{detail:?}")),
    );
    assert_eq!(temp.parent(), Some(work.as_path()));
    // That run linked its file and removed it: back to the moment between the two.
    std::fs::hard_link(&lock, &temp).unwrap();
    let out = env.deploy(&plan, &[]).ok();
    assert!(stdout(&out).ends_with("verdict: PASS\n"));
    assert!(!temp.exists(), "the cut-off run's lock file is left");
    env.assert_work_dir_holds_only_records();
}

/// The same with the anchor edited before the rerun: the plan can never finish, and the rerun
/// removes what the cut-off run left, as after a kill before the promote, the lock's file
/// included, so nothing of the deploy is left.
#[test]
fn a_drifted_rerun_removes_a_lock_temp_left_by_a_cut_off_run() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy_killed(&plan, "abort-before:lock");
    let temp = env.recorded_lock_temp();
    std::fs::write(&temp, b"").unwrap();
    std::fs::write(env.anchor.join("README.md"), "hotfix\n").unwrap();
    let e = stderr(&env.deploy(&plan, &[]).expect_code(1));
    assert!(e.contains("anchor") && e.contains("were removed"), "{e}");
    assert_eq!(env.leftovers(), Vec::<String>::new(), "{e}");
}

#[test]
fn a_name_planted_at_the_lock_temp_is_neither_written_through_nor_removed_local() {
    a_name_planted_at_the_lock_temp_is_neither_written_through_nor_removed(Host::Local);
}

/// The file the lock is written in has a name new to each run, which the journal says before
/// the file is made: a name planted there in between (a symlink to a file elsewhere, a file)
/// is not written through, and the run stops, naming it, with no lock taken. The same deploy
/// run again leaves it alone too (its journal says it was found there), and runs.
pub fn a_name_planted_at_the_lock_temp_is_neither_written_through_nor_removed(host: Host) {
    for planted in ["symlink", "file"] {
        let env = Env::new(host.clone());
        let before = env.snapshot();
        let plan = env.plan();
        let elsewhere = env.tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, b"not the lock's").unwrap();
        let child = env.deploy_paused_at(&plan, &[], "lock");
        let temp = env.recorded_lock_temp();
        if planted == "symlink" {
            std::os::unix::fs::symlink(&elsewhere, &temp).unwrap();
        } else {
            std::fs::write(&temp, b"theirs").unwrap();
        }
        let untouched = |env: &Env| {
            assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not the lock's");
            if planted == "symlink" {
                assert_eq!(std::fs::read_link(&temp).unwrap(), elsewhere);
            } else {
                assert_eq!(std::fs::read(&temp).unwrap(), b"theirs");
            }
            assert!(!env.parent.join(".sealpush/iu-cutter-v0.6/lock").exists());
        };
        child.release();
        let out = child.wait_with_output();
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{planted}: {e}");
        assert!(
            e.contains(&format!("{} exists as a {planted}", temp.display())),
            "{e}"
        );
        untouched(&env);
        assert!(!env.target.exists());
        env.deploy(&plan, &[]).ok();
        env.assert_complete();
        untouched(&env);
        std::fs::remove_file(&temp).unwrap();
        env.rollback(&plan, &[]).ok();
        assert_eq!(env.snapshot(), before, "{planted}");
    }
}

#[test]
fn deploy_manifest_changed_before_the_prove_fails_it_local() {
    deploy_manifest_changed_before_the_prove_fails_it(Host::Local);
}

/// The prove re-reads DEPLOY-MANIFEST.txt after the promote: a byte changed since this run wrote
/// it makes the verdict FAIL, whatever the transport reads it with.
pub fn deploy_manifest_changed_before_the_prove_fails_it(host: Host) {
    let env = Env::new(host.clone());
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &[], "prove");
    flip_first_byte(&env.target.join("DEPLOY-MANIFEST.txt"));
    child.release();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("DEPLOY-MANIFEST.txt changed after it was written"),
        "{all}"
    );
    assert_eq!(env.real_recipe(&env.anchor), anchor);
}

#[test]
fn mode_changed_between_upload_and_verify_stops_the_deploy_local() {
    mode_changed_between_upload_and_verify_stops_the_deploy(Host::Local);
}

/// The exec-bit comparison alone would accept a group-writable file; the verify checks every
/// staged file's exact mode (SFTP uploads skip the chmod when the server already creates files
/// with the right mode, so this check is what guarantees it).
pub fn mode_changed_between_upload_and_verify_stops_the_deploy(host: Host) {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(host.clone());
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &[], "verify");
    let staged = env.staging_dir().unwrap().join("iu-cutter-v0.6/README.md");
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o664)).unwrap();
    child.release();
    let out = child.wait_with_output();
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("README.md: mode 0664, expected 0644 or 0755"),
        "{e}"
    );
    assert!(!env.target.exists());
    assert_eq!(env.leftovers(), Vec::<String>::new());
    env.deploy(&plan, &[]).ok();
    env.assert_complete();
}

#[test]
fn target_created_between_checks_and_promote_is_never_clobbered_local() {
    target_created_between_checks_and_promote_is_never_clobbered(Host::Local);
}

pub fn target_created_between_checks_and_promote_is_never_clobbered(host: Host) {
    let env = Env::new(host.clone());
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &[], "promote");
    std::fs::create_dir(&env.target).unwrap();
    child.release();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("promote refused"), "{}", stderr(&out));
    // The empty directory someone made is still there, still empty.
    assert_eq!(std::fs::read_dir(&env.target).unwrap().count(), 0);
    assert_eq!(env.leftovers(), vec!["iu-cutter-v0.6"]);
}

#[test]
fn two_deploys_of_one_target_cannot_both_run_local() {
    two_deploys_of_one_target_cannot_both_run(Host::Local);
}

pub fn two_deploys_of_one_target_cannot_both_run(host: Host) {
    let env = Env::new(host.clone());
    let plan = env.plan();
    let first = env.deploy_paused_at(&plan, &[], "materialise");
    // A second deploy (another state dir, as from another machine or user) of the same target.
    let other_state = env.tmp.path().join("other-state");
    let second = env
        .deploy(&plan, &[])
        .env("SEALPUSH_STATE_DIR", &other_state)
        .expect_code(1);
    let e = stderr(&second);
    assert!(e.contains("staging") || e.contains("is held by pid"), "{e}");
    // Even with --clear-stale-lock: the owner is alive, so the lock stays.
    let third = env
        .deploy(&plan, &["--clear-stale-lock"])
        .env("SEALPUSH_STATE_DIR", env.tmp.path().join("third-state"))
        .output();
    assert!(!third.status.success());
    first.release();
    let out = first.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_complete();
}

#[test]
fn two_runs_of_one_plan_on_one_machine_cannot_both_run_local() {
    two_runs_of_one_plan_on_one_machine_cannot_both_run(Host::Local);
}

/// The same plan run twice at once from one state dir: the second stops at once, before it
/// touches the host or the first run's journal.
pub fn two_runs_of_one_plan_on_one_machine_cannot_both_run(host: Host) {
    let env = Env::new(host.clone());
    let plan = env.plan();
    let first = env.deploy_paused_at(&plan, &[], "materialise");
    let before = env.snapshot();
    let second = env.deploy(&plan, &[]).expect_code(2);
    let e = stderr(&second);
    assert!(e.contains("another sealpush run of this plan"), "{e}");
    assert_eq!(env.snapshot(), before);
    first.release();
    let out = first.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_complete();
    env.assert_host_journal_complete();
}

#[test]
fn a_run_that_waited_for_the_lock_leaves_the_winners_deploy_alone_local() {
    a_run_that_waited_for_the_lock_leaves_the_winners_deploy_alone(Host::Local);
}

/// One plan deployed from two machines: one run passes its recheck and waits before the lock
/// while the other deploys it whole. The late run then finds the target under the lock and
/// stops, and the winner's tree, receipt and host journal stay as they were.
pub fn a_run_that_waited_for_the_lock_leaves_the_winners_deploy_alone(host: Host) {
    let env = Env::new(host.clone());
    let plan = env.plan();
    let late = env.deploy_paused_at(&plan, &[], "lock");
    env.deploy(&plan, &[])
        .env("SEALPUSH_STATE_DIR", env.tmp.path().join("other-machine"))
        .ok();
    env.assert_complete();
    let after_winner = env.snapshot();
    late.release();
    let out = late.wait_with_output();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another deploy finished while this one waited"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.snapshot(), after_winner);
}

#[test]
fn rollback_by_plan_refuses_a_host_receipt_that_is_not_the_plans_local() {
    rollback_by_plan_refuses_a_host_receipt_that_is_not_the_plans(Host::Local);
}

/// Rolled back by its plan from a machine without the local receipt, the deploy's record is
/// the host's receipt, which anyone who may write there can edit: pointed at a copy of the
/// target, or at the anchor with the anchor left out, it must be refused, not obeyed.
pub fn rollback_by_plan_refuses_a_host_receipt_that_is_not_the_plans(host: Host) {
    type Edit = fn(&mut serde_json::Value, &Env);
    let env = Env::new(host.clone());
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let backup = env.parent.join("iu-cutter-v0.6-backup");
    copy_tree(&env.target, &backup);
    let receipt = env.host_receipt();
    let original = std::fs::read(&receipt).unwrap();
    let elsewhere = env.tmp.path().join("another-machine");
    let cases: [(Edit, &[&str]); 2] = [
        (
            |r, e| r["target"] = e.parent.join("iu-cutter-v0.6-backup").to_str().into(),
            &[],
        ),
        (
            |r, e| {
                r["target"] = e.anchor.to_str().into();
                r["anchor"] = serde_json::Value::Null;
            },
            &["--force"],
        ),
    ];
    for (edit, extra) in cases {
        let mut r: serde_json::Value = serde_json::from_slice(&original).unwrap();
        edit(&mut r, &env);
        std::fs::write(&receipt, serde_json::to_vec(&r).unwrap()).unwrap();
        let before = env.snapshot();
        let out = env
            .rollback(&plan, extra)
            .env("SEALPUSH_STATE_DIR", &elsewhere)
            .expect_code(2);
        assert!(
            stderr(&out).contains("not the receipt of this plan's deploy"),
            "{}",
            stderr(&out)
        );
        assert_eq!(env.snapshot(), before);
    }
    // The real receipt still rolls back from there, and the copy stays.
    std::fs::write(&receipt, &original).unwrap();
    env.rollback(&plan, &[])
        .env("SEALPUSH_STATE_DIR", &elsewhere)
        .ok();
    assert!(!env.target.exists());
    assert!(backup.join("DEPLOY-MANIFEST.txt").exists());
}

#[test]
fn a_rollback_cut_off_leaves_no_target_and_finishes_when_run_again_local() {
    a_rollback_cut_off_leaves_no_target_and_finishes_when_run_again(Host::Local);
}

/// A rollback killed between moving the tree aside and removing it: the target is already
/// absent, `status` says what happened, the plan cannot be deployed again meanwhile (from a
/// machine without its journal), and the rollback run again finishes: the host is as before.
pub fn a_rollback_cut_off_leaves_no_target_and_finishes_when_run_again(host: Host) {
    let env = Env::new(host.clone());
    let before = env.snapshot();
    // Another plan for the same target, made while it is free (preflight would now refuse).
    let (store, art) = env.store_tree(&crate::support::fixtures().join("iu-cutter"), "other");
    let other = env.tmp.path().join("plan-b.json");
    std::fs::rename(env.plan_for(&store, &art), &other).unwrap();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let mut cut = env.paused_at(env.rollback(&plan, &[]), "reset");
    cut.child.kill().unwrap();
    cut.child.wait().unwrap();
    assert!(!env.target.exists(), "the target is gone at once");
    let st = env.sealpush(env.status_args()).expect_code(1);
    assert!(
        stdout(&st).contains("a rollback of its deploy was cut off"),
        "{}",
        stdout(&st)
    );
    let again = env
        .deploy(&plan, &[])
        .env("SEALPUSH_STATE_DIR", env.tmp.path().join("elsewhere"))
        .expect_code(1);
    assert!(
        stderr(&again).contains("its rollback did not finish"),
        "{}",
        stderr(&again)
    );
    // Nor can another plan's deploy take the target meanwhile: the rollback could then never
    // finish (the target would hold another plan's deploy).
    let out = env.deploy(&other, &[]).expect_code(1);
    assert!(
        stderr(&out).contains("is what is left of a rollback"),
        "{}",
        stderr(&out)
    );
    env.rollback(&plan, &[]).ok();
    assert_eq!(env.snapshot(), before, "host not exactly as before");
}

#[test]
fn a_directory_planted_under_the_aside_name_does_not_stand_in_for_the_tree_local() {
    a_directory_planted_under_the_aside_name_does_not_stand_in_for_the_tree(Host::Local);
}

/// An empty directory planted as `rolling-back-<plan>` while the tree is still at the target:
/// the rollback removes the tree at the target, and does not report PASS over an empty stand-in.
pub fn a_directory_planted_under_the_aside_name_does_not_stand_in_for_the_tree(host: Host) {
    let env = Env::new(host.clone());
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let short = &v["digest"].as_str().unwrap()[..16];
    let planted = env
        .parent
        .join(".sealpush/iu-cutter-v0.6")
        .join(format!("rolling-back-{short}"));
    std::fs::create_dir(&planted).unwrap();
    let out = env.rollback(&plan, &[]).output();
    assert!(
        !env.target.exists(),
        "the tree at the target is removed: {}",
        stdout(&out)
    );
    assert!(
        planted.is_dir(),
        "the planted directory is not the rollback's to remove"
    );
}

#[test]
fn rollback_never_moves_or_removes_through_a_work_dir_that_is_not_the_targets_local() {
    rollback_never_moves_or_removes_through_a_work_dir_that_is_not_the_targets(Host::Local);
}

/// The move aside and the bookkeeping go into the target's own work dir: one that is a
/// symlink (to the anchor, say), or a receipt that names another, is refused before anything
/// is moved, and the anchor is untouched.
pub fn rollback_never_moves_or_removes_through_a_work_dir_that_is_not_the_targets(host: Host) {
    let env = Env::new(host.clone());
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let anchor = env.real_recipe(&env.anchor);
    // A receipt whose work dir is the anchor.
    let local = env.state_file("receipt.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&local).unwrap()).unwrap();
    r["work_dir"] = env.anchor.to_str().into();
    let edited = env.tmp.path().join("edited-receipt.json");
    std::fs::write(&edited, serde_json::to_vec(&r).unwrap()).unwrap();
    let before = env.snapshot();
    let out = env.rollback(&edited, &[]).expect_code(2);
    assert!(
        stderr(&out).contains("outside the target's work dir"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.snapshot(), before);
    // The work dir swapped for a symlink to the anchor.
    let work = env.parent.join(".sealpush/iu-cutter-v0.6");
    std::fs::rename(&work, env.tmp.path().join("real-work")).unwrap();
    std::os::unix::fs::symlink(&env.anchor, &work).unwrap();
    let before = env.snapshot();
    let out = env.rollback(&plan, &[]).expect_code(2);
    assert!(
        stderr(&out).contains("exists as a symlink"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.snapshot(), before);
    assert_eq!(env.real_recipe(&env.anchor), anchor);
}

#[test]
fn a_name_added_while_a_rollback_checks_stays_where_it_was_put_local() {
    a_name_added_while_a_rollback_checks_stays_where_it_was_put(Host::Local);
}

/// A name someone adds to the deployed tree after the rollback has checked it, before the
/// tree is moved aside, stays at the target: the rollback looks again after the move, moves
/// the tree back and removes around the name.
pub fn a_name_added_while_a_rollback_checks_stays_where_it_was_put(host: Host) {
    let env = Env::new(host.clone());
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let paused = env.paused_at(env.rollback(&plan, &[]), "cleanup");
    let note = env.target.join("docs/NOTE.txt");
    std::fs::write(&note, b"mine\n").unwrap();
    paused.release();
    let out = paused.wait_with_output();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("NOTE.txt (not created by the deploy)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read(&note).unwrap(), b"mine\n");
}

#[test]
fn rollback_never_removes_a_tree_without_its_deploy_manifest_local() {
    rollback_never_removes_a_tree_without_its_deploy_manifest(Host::Local);
}

/// A receipt is a file anyone with write access on the host can edit. One edited to name the
/// anchor as its target, with a tree listing that matches the anchor (here: the receipt of a
/// deploy of the anchor's own tree) and no anchor, must not get the anchor removed, not even
/// with --force: the anchor carries no deploy manifest.
pub fn rollback_never_removes_a_tree_without_its_deploy_manifest(host: Host) {
    let env = Env::new(host.clone());
    let (store, art) = env.store_tree(&crate::support::fixtures().join("iu-cutter"), "same-tree");
    let plan = env.plan_for(&store, &art);
    env.deploy(&plan, &[]).ok();
    let local = env.state_file("receipt.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&local).unwrap()).unwrap();
    r["target"] = env.anchor.to_str().into();
    r["anchor"] = serde_json::Value::Null;
    // Consistent with that target, so that only the missing manifest can stop it.
    r["work_dir"] = env.parent.join(".sealpush/iu-cutter").to_str().into();
    r["created"] = serde_json::json!([]);
    r["kept_archive"] = serde_json::Value::Null;
    r["tree"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["path"] != "DEPLOY-MANIFEST.txt");
    let forged = env.tmp.path().join("forged-receipt.json");
    std::fs::write(&forged, serde_json::to_vec(&r).unwrap()).unwrap();
    let before = env.snapshot();
    let out = env.rollback(&forged, &["--force"]).expect_code(1);
    assert!(
        stderr(&out).contains("it is not a tree a deploy made"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.snapshot(), before);
}

#[test]
fn rollback_refuses_edited_files_unless_forced_and_never_removes_foreign_names_local() {
    rollback_refuses_edited_files_unless_forced_and_never_removes_foreign_names(Host::Local);
}

pub fn rollback_refuses_edited_files_unless_forced_and_never_removes_foreign_names(host: Host) {
    let env = Env::new(host.clone());
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let edited = env.target.join("README.md");
    std::fs::write(&edited, b"edited on the host").unwrap();
    let foreign = env.target.join("operator-notes.txt");
    std::fs::write(&foreign, b"mine").unwrap();
    let receipt = env.state_file("receipt.json");
    let out = env.rollback(&receipt, &[]).expect_code(1);
    let e = stderr(&out);
    assert!(
        e.contains("rollback refused") && e.contains("README.md"),
        "{e}"
    );
    assert_eq!(std::fs::read(&edited).unwrap(), b"edited on the host");
    assert!(
        env.target.join("DEPLOY-MANIFEST.txt").exists(),
        "nothing removed"
    );
    let forced = env.rollback(&receipt, &["--force"]).expect_code(1);
    assert!(
        stdout(&forced).contains("operator-notes.txt (not created by the deploy)"),
        "{}",
        stdout(&forced)
    );
    assert_eq!(std::fs::read(&foreign).unwrap(), b"mine");
    assert!(!edited.exists());
    std::fs::remove_file(&foreign).unwrap();
    // A second run finishes the job.
    env.rollback(&receipt, &[]).ok();
    assert_eq!(env.snapshot(), before);
}

#[test]
fn status_reports_a_changed_byte() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let f = env.target.join("README.md");
    let mut data = std::fs::read(&f).unwrap();
    data[3] ^= 0x20;
    std::fs::write(&f, data).unwrap();
    let target = env.target.to_str().unwrap().to_string();
    let out = env
        .sealpush(["status", "--host", "local", "--target", &target])
        .expect_code(1);
    assert!(
        stdout(&out).contains("problem: README.md: expected file"),
        "{}",
        stdout(&out)
    );
}

/// `deploy --json` prints a verdict even when it stops before a receipt exists.
#[test]
fn deploy_json_prints_a_fail_verdict_when_the_host_drifted() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    std::fs::create_dir(&env.target).unwrap();
    let out = env.deploy(&plan, &["--json"]).expect_code(1);
    let v = super::json_fail_verdict(&out, "now exists as a directory");
    assert_eq!(v["target"], env.target.to_str().unwrap());
}

/// Permission bits opened up since the deploy are a difference: a deploy leaves files 0644 or
/// 0755 and directories at most 0755.
#[test]
fn status_reports_opened_up_modes() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let set = |rel: &str, mode: u32| {
        std::fs::set_permissions(env.target.join(rel), std::fs::Permissions::from_mode(mode))
            .unwrap()
    };
    for (rel, odd, back) in [("README.md", 0o666, 0o644), ("docs", 0o777, 0o755)] {
        set(rel, odd);
        let out = env.sealpush(env.status_args()).expect_code(1);
        assert!(
            stdout(&out).contains(&format!("{rel}: mode {odd:04o}")),
            "{}",
            stdout(&out)
        );
        set(rel, back);
    }
    env.sealpush(env.status_args()).ok();
    // An empty directory and one holding only a symlink were written by the deploy too.
    let env = Env::new(Host::Local);
    let src = env.tmp.path().join("shapes-src");
    std::fs::create_dir_all(src.join("e")).unwrap();
    std::fs::create_dir_all(src.join("s")).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    std::os::unix::fs::symlink("../f", src.join("s/l")).unwrap();
    let (store, art) = env.store_tree(&src, "shapes");
    env.deploy(&env.plan_for(&store, &art), &[]).ok();
    for rel in ["e", "s"] {
        std::fs::set_permissions(env.target.join(rel), std::fs::Permissions::from_mode(0o777))
            .unwrap();
    }
    let out = env.sealpush(env.status_args()).expect_code(1);
    for rel in ["e", "s"] {
        assert!(
            stdout(&out).contains(&format!("{rel}: mode 0777")),
            "{}",
            stdout(&out)
        );
    }
    // What a --check creates gets the host's umask, not a deploy's modes: not a difference.
    let env = Env::new(Host::Local);
    let plan = env.plan();
    let check = "umask 002; mkdir made && echo x > made/out.txt";
    env.deploy(&plan, &["--check", check]).ok();
    assert_eq!(
        std::fs::metadata(env.target.join("made"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o775
    );
    env.sealpush(env.status_args()).ok();
}

#[test]
fn a_rollback_that_stops_short_can_be_finished_from_another_machine_local() {
    a_rollback_that_stops_short_can_be_finished_from_another_machine(Host::Local);
}

/// A rollback that keeps a name someone added keeps the host's receipt too: from a machine
/// without the deploy's journal, that receipt is what a second rollback needs to finish.
pub fn a_rollback_that_stops_short_can_be_finished_from_another_machine(host: Host) {
    let env = Env::new(host.clone());
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let note = env.target.join("docs/NOTE.txt");
    std::fs::write(&note, b"mine\n").unwrap();
    let elsewhere = env.tmp.path().join("elsewhere");
    let rollback = || {
        env.rollback(&plan, &[])
            .env("SEALPUSH_STATE_DIR", &elsewhere)
    };
    let out = rollback().expect_code(1);
    assert!(stdout(&out).contains("NOTE.txt"), "{}", stdout(&out));
    assert_eq!(std::fs::read(&note).unwrap(), b"mine\n");
    std::fs::remove_file(&note).unwrap();
    rollback().ok();
    assert_eq!(env.snapshot(), before, "host not exactly as before");
}

#[test]
fn ctrl_c_stops_a_rollback_at_a_safe_point_that_says_what_is_left() {
    let env = Env::new(Host::Local);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let paused = env.paused_at(env.rollback(&plan, &[]), "reset");
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(paused.id() as i32, libc::SIGINT);
    }
    paused.release();
    let out = paused.wait_with_output();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is gone; what is left of it is in")
            && stderr(&out).contains("run the rollback again to finish"),
        "{}",
        stderr(&out)
    );
    assert!(!env.target.exists());
    env.rollback(&plan, &[]).ok();
    assert_eq!(env.snapshot(), before, "host not exactly as before");
}

/// The first Ctrl-C waits for the next safe point; a second one ends the process at once, for
/// a user who will not wait (what it leaves, the next run cleans up, as after a kill).
#[test]
fn a_second_ctrl_c_ends_the_deploy_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new(Host::Local);
    let plan = env.plan();
    let paused = env.deploy_paused_at(&plan, &[], "materialise");
    for _ in 0..2 {
        // Two signals pending at once are one signal: the second is sent only once the first
        // has been taken (no longer pending for any of its threads), so its handler has run or
        // runs first with SIGINT blocked. A fixed pause here was a guess at scheduling.
        wait_until_no_sigint_pending(paused.id());
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(paused.id() as i32, libc::SIGINT);
        }
    }
    // Never released: only the second signal can have ended it.
    let out = paused.wait_with_output();
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{:?}", out.status);
    // The same deploy run again cleans up and finishes.
    env.deploy(&plan, &[]).ok();
    env.assert_complete();
}

/// Waits (60 s at most) until no thread of `pid` has SIGINT pending (`SigPnd`, `ShdPnd` in
/// /proc/PID/task/*/status), i.e. any SIGINT sent to it has been delivered.
fn wait_until_no_sigint_pending(pid: u32) {
    let bit = 1u64 << (libc::SIGINT - 1);
    let pending = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false; // gone: nothing pending
        };
        tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("SigPnd:")
                        .or_else(|| l.strip_prefix("ShdPnd:"))
                })
                .any(|v| u64::from_str_radix(v.trim(), 16).is_ok_and(|m| m & bit != 0))
        })
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pending() {
        assert!(
            std::time::Instant::now() < until,
            "SIGINT still pending for {pid} after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn ctrl_c_stops_at_a_safe_point_and_exits_130() {
    let env = Env::new(Host::Local);
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    let child = env.deploy_paused_at(&plan, &[], "materialise");
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    child.release();
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    env.assert_absent_or_complete(&anchor);
    assert_eq!(env.leftovers(), Vec::<String>::new());
    env.deploy(&plan, &[]).ok();
}

#[test]
fn failing_check_with_rollback_on_check_failure_leaves_the_host_as_before() {
    Env::new(Host::Local).check_fails_and_rolls_back(
        "touch made-by-check && exit 3",
        &[],
        "exit: 3",
    );
}

/// A failing check that also edited a deployed file: the automatic rollback refuses (the file
/// changed since the deploy), and the report still says the deploy is in place, with what to do.
#[test]
fn a_refused_automatic_rollback_still_reports_the_live_deploy() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    let out = env
        .deploy(
            &plan,
            &[
                "--check",
                "echo edited >> README.md; exit 3",
                "--rollback-on-check-failure",
            ],
        )
        .output();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(report.contains("exit: 3"), "{report}");
    assert!(report.contains("stays deployed"), "{report}");
    assert!(report.contains("README.md"), "{report}");
    assert!(report.ends_with("verdict: FAIL\n"), "{report}");
    assert!(env.target.join("README.md").exists());
    // As the report says: a forced rollback removes it.
    env.rollback(&plan, &["--force"]).ok();
    assert!(!env.target.exists());
}

#[test]
fn kill_during_the_cleanup_of_a_resumed_run_then_rerun_finishes() {
    let env = Env::new(Host::Local);
    let before = env.snapshot();
    let anchor = env.real_recipe(&env.anchor);
    let plan = env.plan();
    for fault in [
        "abort-after:materialise",
        "abort-before:cleanup",
        "abort-after:cleanup",
    ] {
        let out = env
            .deploy(&plan, &["--clear-stale-lock"])
            .env("SEALPUSH_FAULT", fault)
            .output();
        assert_eq!(out.status.code(), None, "{fault}: {}", stderr(&out));
        env.assert_absent_or_complete(&anchor);
        assert!(!env.target.exists(), "{fault}");
    }
    let out = env.deploy(&plan, &["--clear-stale-lock"]).ok();
    assert!(
        stdout(&out).contains("resume: cleaned up"),
        "{}",
        stdout(&out)
    );
    env.assert_complete();
    env.rollback(&plan, &[]).ok();
    assert_eq!(env.snapshot(), before);
}

/// A tree with a large file (sent in pieces) and small ones, packed into its own store.
fn mixed_artifact(env: &Env, hard_link: bool) -> (PathBuf, sealpush::store::StoredArtifact) {
    let src = env.tmp.path().join("mixed/payload");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let big = super::random_bytes(3 << 20);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("sub/f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    if hard_link {
        std::fs::hard_link(src.join("big.bin"), src.join("sub/big-again.bin")).unwrap();
    }
    env.store_tree(&src, "mixed-store")
}

/// Preflight hashes the archive and records its stamp (device, inode, size, mtime, ctime) when
/// the file last changed at least 2 s before; the deploy then reads it without hashing it again
/// while it keeps that stamp, streamed or through the unpacked copy (a tree with hard links).
/// An archive rewritten after the preflight, even with the same bytes, is hashed again; the
/// receipt says which was done.
#[test]
fn deploy_hashes_the_archive_again_unless_it_kept_the_stamp_preflight_recorded() {
    let env = Env::new(Host::Local);
    let (streamed, stream_art) = mixed_artifact(&env, false);
    let (rewritten, rewritten_art) = env.store_tree(&env.tmp.path().join("mixed/payload"), "b");
    let (linked, linked_art) = {
        let src = env.tmp.path().join("linked");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.bin"), super::random_bytes(1 << 20)).unwrap();
        std::fs::hard_link(src.join("a.bin"), src.join("b.bin")).unwrap();
        env.store_tree(&src, "c")
    };
    // Settled: last changed more than the 2 s `sealpush::stamp::SETTLED` before the preflights.
    std::thread::sleep(sealpush::stamp::SETTLED + std::time::Duration::from_millis(200));
    let stamp_of = |plan: &Path| {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(plan).unwrap()).unwrap();
        v["plan"]["artifact"]["archive_stamp"].clone()
    };
    let deployed_with = |plan: &Path, how: &str| {
        let out = env.deploy(plan, &["--json"]).ok();
        let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(receipt["archive_check"], how);
        env.assert_audit();
        env.rollback(plan, &[]).ok();
    };
    let plan = env.plan_for(&streamed, &stream_art);
    assert!(stamp_of(&plan)["ctime_sec"].is_i64(), "{}", stamp_of(&plan));
    let out = env.deploy(&plan, &[]).ok();
    assert!(
        stdout(&out).contains("archive_check: stamp (unchanged since preflight hashed it"),
        "{}",
        stdout(&out)
    );
    env.rollback(&plan, &[]).ok();
    let plan = env.plan_for(&linked, &linked_art);
    assert!(stamp_of(&plan).is_object());
    deployed_with(&plan, "stamp");
    let plan = env.plan_for(&rewritten, &rewritten_art);
    assert!(stamp_of(&plan).is_object());
    let bytes = std::fs::read(&rewritten_art.archive).unwrap();
    std::fs::write(&rewritten_art.archive, bytes).unwrap();
    deployed_with(&plan, "sha256");
    // Rewritten just now: the next preflight records no stamp.
    let plan = env.plan_for(&rewritten, &rewritten_art);
    assert!(stamp_of(&plan).is_null(), "{}", stamp_of(&plan));
}

/// The unpacked-copy path (a tree with hard links) looked at the archive's stamp by its path,
/// and the unpack opened that path again: a directory above the archive renamed away and back
/// around the open (which moves no ctime of the archive) had another file's bytes unpacked, with
/// the stamp taken for the plan's file and nothing hashed. Without a stamp, the hash was read
/// through an open of its own, made before the swap: the plan's file hashed, the other one
/// unpacked. What is vouched for (by the stamp or the hash) must be the file the unpack reads.
#[test]
fn the_unpacked_copy_reads_the_file_it_vouched_for() {
    for stamped in [true, false] {
        the_unpacked_copy_reads_the_file_it_vouched_for_when(stamped);
    }
}

fn the_unpacked_copy_reads_the_file_it_vouched_for_when(stamped: bool) {
    use sealpush::deploy::artifact::{prepare, Contents};
    let env = Env::new(Host::Local);
    let tree = |name: &str| {
        let src = env.tmp.path().join(name);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.bin"), super::random_bytes(1 << 16)).unwrap();
        std::fs::hard_link(src.join("a.bin"), src.join("b.bin")).unwrap();
        src
    };
    let (store, art) = env.store_tree(&tree("ours"), "ours-store");
    let (_, theirs) = env.store_tree(&tree("theirs"), "theirs-store");
    if stamped {
        std::thread::sleep(sealpush::stamp::SETTLED + std::time::Duration::from_millis(200));
    }
    let plan = env.plan_for(&store, &art);
    let sealed =
        sealpush::plan::SealedPlan::from_json(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(sealed.plan.artifact.archive_stamp.is_some(), stamped);
    let names = sealpush::deploy::Names::of(&sealed.plan, &sealed.digest).unwrap();
    // A copy of the store's directory with the other tree's archive (same names and sizes) at
    // the archive's place.
    let swapped = env.tmp.path().join("swapped-store");
    super::copy_tree(&store, &swapped);
    let rel = art.archive.strip_prefix(&store).unwrap();
    std::fs::copy(&theirs.archive, swapped.join(rel)).unwrap();
    let aside = env.tmp.path().join("ours-store-aside");
    /// Swaps the store's directory for the copy when the unpack starts, and back when it ends.
    struct Swap<'a>(&'a Path, &'a Path, &'a Path);
    impl sealpush::progress::Progress for Swap<'_> {
        fn start(&self, phase: &str, _: Option<u64>, _: Option<u64>) {
            if phase == "unpacking" {
                std::fs::rename(self.0, self.2).unwrap();
                std::fs::rename(self.1, self.0).unwrap();
            }
        }
        fn finish(&self) {
            if self.2.exists() {
                std::fs::rename(self.0, self.1).unwrap();
                std::fs::rename(self.2, self.0).unwrap();
            }
        }
    }
    let prepared = prepare(&sealed.plan, &names, &Swap(&store, &swapped, &aside));
    assert!(!aside.exists(), "the swap was undone");
    let p = prepared.unwrap_or_else(|e| panic!("stamped {stamped}: {e}"));
    let Contents::Unpacked(dir) = &p.contents else {
        panic!("a tree with hard links is unpacked first");
    };
    let digest = |p: &Path| sealpush::digest::Digest::of(&std::fs::read(p).unwrap());
    assert!(
        digest(&dir.join("a.bin")) == digest(&env.tmp.path().join("ours/a.bin")),
        "unpacked another file's bytes, vouched for by the {}",
        p.archive_check
    );
    assert_eq!(p.archive_check, if stamped { "stamp" } else { "sha256" });
}

#[test]
fn corrupted_stored_archive_stops_the_deploy_before_the_promote_local() {
    corrupted_stored_archive_stops_the_deploy_before_the_promote(Host::Local);
}

/// The deploy streams a store artifact straight from its archive: a byte that rotted in the
/// archive after the preflight (which re-hashed it) is caught by the stream's own checks (zstd's
/// checksum, the archive sha256), the target never appears, and the error says what to do.
pub fn corrupted_stored_archive_stops_the_deploy_before_the_promote(host: Host) {
    let env = Env::new(host);
    let anchor = env.real_recipe(&env.anchor);
    let (store, art) = mixed_artifact(&env, false);
    let plan = env.plan_for(&store, &art);
    // In the middle of the big file's stored (incompressible) bytes.
    let archive = art.archive.clone();
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&archive, &bytes).unwrap();
    // A failed check (exit 1) whichever check sees it first: the stream's decoder used to
    // make it "could not run" (exit 2), with nothing to do about it.
    let e = stderr(&env.deploy(&plan, &[]).expect_code(1));
    assert!(
        e.contains(&format!("artifact {}: corrupt", archive.display()))
            || e.contains(&format!("artifact {}: expected sha256", archive.display())),
        "{e}"
    );
    assert!(e.contains("pack the tree again"), "{e}");
    assert!(!env.target.exists());
    env.assert_absent_or_complete(&anchor);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// Hard links cannot be streamed (a link's bytes are its target's, already passed): such a tree
/// goes through the checked local copy and arrives complete, the link as a file of its own.
#[test]
fn tree_with_hard_links_deploys_through_the_unpacked_copy() {
    let env = Env::new(Host::Local);
    let (store, art) = mixed_artifact(&env, true);
    let plan = env.plan_for(&store, &art);
    env.deploy(&plan, &[]).ok();
    let a = std::fs::read(env.target.join("big.bin")).unwrap();
    let b = std::fs::read(env.target.join("sub/big-again.bin")).unwrap();
    assert_eq!(a.len(), 3 << 20);
    assert_eq!(a, b);
    env.assert_audit();
}

/// `--verify host-sha256sum` of a tree with no regular file: nothing for `sha256sum -c` to
/// check (which fails on an empty list), so the deploy passes on the shape check alone.
#[test]
fn host_sha256sum_verify_of_a_tree_without_files_passes() {
    let env = Env::new(Host::Local);
    let src = env.tmp.path().join("nofiles/payload");
    std::fs::create_dir_all(src.join("empty/deeper")).unwrap();
    std::os::unix::fs::symlink("empty", src.join("link")).unwrap();
    let (store, art) = env.store_tree(&src, "nofiles-store");
    let plan = env.plan_for(&store, &art);
    env.deploy_host_checked(&plan);
    assert!(env.target.join("empty/deeper").is_dir());
    assert_eq!(
        std::fs::read_link(env.target.join("link")).unwrap(),
        Path::new("empty")
    );
}

#[test]
fn check_still_running_at_the_op_timeout_is_stopped_local() {
    check_still_running_at_the_op_timeout_is_stopped(Host::Local);
}

/// A check that outlives --op-timeout fails, is rolled back, and does not run on: over SFTP the
/// wrapper on the host stops it, locally the transport stops its process group.
pub fn check_still_running_at_the_op_timeout_is_stopped(host: Host) {
    let env = Env::new(host);
    // The check leaves its pid outside the host tree (the snapshot must not change), then
    // hangs; the sleep ignores TERM, so only the final KILL ends it. The limit is 10 s, not
    // less: it also bounds every other request of the deploy, and the check's shell must have
    // started and run its `trap` (ssh session, shell start-up) before it passes, which a loaded
    // CI machine does not always do within 3 s. The sleep outlasts the limit, the 5 s grace
    // and the wait below together, so a check that was not stopped still fails the test.
    let pidfile = env.tmp.path().join("check.pid");
    let check = format!("echo $$ > {}; trap '' TERM; sleep 300", pidfile.display());
    env.check_fails_and_rolls_back(
        &check,
        &["--op-timeout", "10"],
        "did not finish within 10s (--op-timeout)",
    );
    // The host is this machine: the command's shell must be gone (or a zombie) soon after
    // sealpush gave up, not 300 s later. TERM, then KILL after 5 s at most.
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("the check never started within the 10 s limit")
        .trim()
        .parse()
        .unwrap();
    // State and start time (field 22) from /proc: the start time first seen tells a pid that
    // another process took over meanwhile from the check's shell.
    let stat = |pid: u32| -> Option<(String, String)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        Some((rest.first()?.to_string(), rest.get(19)?.to_string()))
    };
    let first = stat(pid).map(|(_, start)| start);
    let gone = |pid: u32| match (stat(pid), &first) {
        (Some((state, start)), Some(first)) => state == "Z" || &start != first,
        _ => true,
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !gone(pid) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gone(pid), "the check (pid {pid}) still runs on the host");
}

/// A deploy killed before its promote leaves its staging; before the re-run someone puts a
/// file of their own into a staged directory, or beside the staged tree in the staging dir.
/// The re-run's cleanup keeps that file and everything holding it, names it, and says to
/// remove it by hand (not "rerun to clean up", which would fail the same way forever); once
/// it is gone, the re-run cleans up and deploys.
#[test]
fn a_name_added_to_an_interrupted_deploys_staging_is_named_and_kept() {
    for inside_tree in [true, false] {
        let env = Env::new(Host::Local);
        let anchor = env.real_recipe(&env.anchor);
        let plan = env.plan();
        env.deploy_killed(&plan, "abort-before:promote");
        let staging = env.staging_dir().unwrap();
        let mine = if inside_tree {
            staging.join("iu-cutter-v0.6/docs/mine.txt")
        } else {
            staging.join("mine.txt")
        };
        std::fs::write(&mine, "mine\n").unwrap();
        for _ in 0..2 {
            let again = env.deploy(&plan, &[]).output();
            let e = stderr(&again);
            assert!(!again.status.success(), "{e}");
            assert!(e.contains("mine.txt"), "inside_tree {inside_tree}: {e}");
            assert!(
                e.contains("did not create, left alone"),
                "inside_tree {inside_tree}: {e}"
            );
            assert_eq!(std::fs::read_to_string(&mine).unwrap(), "mine\n");
            assert!(!env.target.exists());
            env.assert_absent_or_complete(&anchor);
        }
        std::fs::remove_file(&mine).unwrap();
        env.deploy(&plan, &[]).ok();
        env.assert_complete();
        assert_eq!(env.leftovers(), vec![".sealpush", "iu-cutter-v0.6"]);
    }
}

/// A deploy killed before its promote, then the anchor is edited (a hotfix of the running
/// version). Before, the re-run reported the drift, found before it takes the lock, and left
/// the killed run's staged tree, lock and host journal for good: the same deploy drifted
/// again, rollback found no receipt (and said to run the deploy again), preflight failed on
/// the unfinished deploy. Now the re-run removes what the killed run of this plan created
/// (drift in the anchor or the space leaves the paths it writes to as they were), journals
/// the reset, and reports the drift.
#[test]
fn an_anchor_edited_after_a_kill_before_the_promote_does_not_strand_the_staging() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy_killed(&plan, "abort-before:promote");
    std::fs::write(env.anchor.join("README.md"), "hotfix\n").unwrap();
    let again = env.deploy(&plan, &[]).expect_code(1);
    let e = stderr(&again);
    assert!(e.contains("anchor") && e.contains("changed"), "{e}");
    assert!(e.contains("were removed"), "{e}");
    assert!(env.staging_dir().is_none(), "staging left: {e}");
    // Reset in the journal: nothing of that deploy is left to roll back.
    let out = env.rollback(&plan, &[]).expect_code(2);
    assert!(
        stderr(&out).contains("no receipt for plan") && !stderr(&out).contains("did not finish"),
        "{}",
        stderr(&out)
    );
    assert!(
        !env.parent.join(".sealpush/iu-cutter-v0.6/lock").exists(),
        "lock left: {e}"
    );
    // A new plan for the edited anchor can then be made and deployed.
    let plan2 = env.plan();
    env.deploy(&plan2, &[]).ok();
    env.assert_complete();
}

/// The same with a file someone put in the killed run's staging: it stays, with the
/// directory holding it, and the message says what is left instead of "were removed".
#[test]
fn a_drifted_rerun_that_cannot_remove_everything_says_what_is_left() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy_killed(&plan, "abort-before:promote");
    let staging = env.staging_dir().expect("the killed run's staging");
    std::fs::write(staging.join("iu-cutter-v0.6/mine.txt"), "mine\n").unwrap();
    std::fs::write(env.anchor.join("README.md"), "hotfix\n").unwrap();
    let e = stderr(&env.deploy(&plan, &[]).expect_code(1));
    assert!(e.contains("anchor") && e.contains("changed"), "{e}");
    assert!(
        e.contains("did not finish") && e.contains("mine.txt") && !e.contains("were removed"),
        "{e}"
    );
    assert!(staging.join("iu-cutter-v0.6/mine.txt").exists());
}

/// `rollback PLAN` of a deploy killed before it wrote its receipt (before or after the
/// promote) cannot roll anything back (it follows the receipt), and preflight's hint for the
/// leftovers names it: it says the deploy did not finish and that running the same deploy
/// again finishes it or cleans up, instead of only "no receipt", and touches nothing.
#[test]
fn rollback_of_a_deploy_cut_off_before_its_receipt_says_to_run_the_deploy_again() {
    for fault in ["abort-before:promote", "abort-after:promote"] {
        let env = Env::new(Host::Local);
        let before = env.snapshot();
        let plan = env.plan();
        let out = env.deploy(&plan, &[]).env("SEALPUSH_FAULT", fault).output();
        assert_eq!(
            out.status.code(),
            None,
            "{fault}: not killed: {}",
            stderr(&out)
        );
        let cut = env.snapshot();
        let rb = env.rollback(&plan, &[]).expect_code(2);
        let e = stderr(&rb);
        assert!(
            e.contains("did not finish") && e.contains("run `sealpush deploy` on this plan again"),
            "{fault}: {e}"
        );
        assert_eq!(env.snapshot(), cut, "{fault}: rollback touched the host");
        env.deploy(&plan, &[]).ok();
        env.assert_complete();
        env.rollback(&plan, &[]).ok();
        assert_eq!(env.snapshot(), before, "{fault}");
    }
}

/// Two plans for one target; the first is killed before its promote. Its lock stopped the
/// second with "rerun with --clear-stale-lock", and doing so deployed the second beside the
/// first's staged tree, which then only a rollback of the second and a rerun of the first
/// could remove. The hint now names the other plan and says to run its deploy again.
#[test]
fn a_cut_off_deploy_of_another_plan_is_named_by_its_lock() {
    let env = Env::new(Host::Local);
    let first = env.tmp.path().join("first.json");
    std::fs::copy(env.plan(), &first).unwrap();
    let second = env.tmp.path().join("second.json");
    std::fs::copy(env.plan(), &second).unwrap();
    env.deploy_killed(&first, "abort-before:promote");
    let digest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
    let digest = digest["digest"].as_str().unwrap().to_string();
    let e = stderr(&env.deploy(&second, &[]).expect_code(2));
    assert!(
        e.contains("a deploy of another plan") && e.contains(&digest[..16]),
        "{e}"
    );
    assert!(
        e.contains("run `sealpush deploy` on that plan again"),
        "{e}"
    );
    // As the hint says: the first plan's deploy finishes.
    env.deploy(&first, &[]).ok();
    env.assert_complete();
}

/// `status` of a target whose deploy was cut off said only "does not exist" (before the
/// promote) or "receipt is missing" (after it): nothing about the unfinished deploy, or that
/// running it again finishes it. It now says both, from the deploy's host journal.
#[test]
fn status_names_a_cut_off_deploy_and_what_finishes_it() {
    for (fault, said) in [
        ("abort-before:promote", "cut off before its promote"),
        ("abort-after:promote", "cut off after its promote"),
    ] {
        let env = Env::new(Host::Local);
        let plan = env.plan();
        env.deploy_killed(&plan, fault);
        let e = stderr(&env.sealpush(env.status_args()).expect_code(1));
        assert!(
            e.contains(said) && e.contains("run `sealpush deploy` on that plan again"),
            "{fault}: {e}"
        );
        env.deploy(&plan, &[]).ok();
        env.sealpush(env.status_args()).ok();
    }
}

/// A deploy cut off while taking its lock leaves the file it writes the lock in, and no host
/// journal yet: `status` said only "does not exist". It now names the file and what removes it.
#[test]
fn status_names_a_deploy_cut_off_while_taking_its_lock() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy_killed(&plan, "abort-before:lock");
    let temp = env.recorded_lock_temp();
    std::fs::write(&temp, b"").unwrap();
    let e = stderr(&env.sealpush(env.status_args()).expect_code(1));
    assert!(
        e.contains("cut off while taking it")
            && e.contains(&temp.display().to_string())
            && e.contains("run `sealpush deploy` on that plan again"),
        "{e}"
    );
    env.deploy(&plan, &[]).ok();
    env.sealpush(env.status_args()).ok();
}

/// The same plan deployed from a second machine (another state dir) after the first run was
/// cut off: it said only that the staging (or the target) exists and "this deploy did not
/// create" it. It now says a run of this plan from elsewhere got that far and where to resume.
#[test]
fn a_cut_off_run_from_another_machine_is_named_by_its_host_journal() {
    for fault in ["abort-before:promote", "abort-after:promote"] {
        let env = Env::new(Host::Local);
        let plan = env.plan();
        env.deploy_killed(&plan, fault);
        let before = env.snapshot();
        let elsewhere = env.tmp.path().join("other-machine-state");
        let e = stderr(
            &env.deploy(&plan, &[])
                .env("SEALPUSH_STATE_DIR", &elsewhere)
                .expect_code(1),
        );
        assert!(
            e.contains("a run of this plan from another machine or state dir got this far")
                && e.contains("journal-"),
            "{fault}: {e}"
        );
        assert_eq!(env.snapshot(), before, "{fault}: {e}");
        // Where its local journal is, it finishes.
        env.deploy(&plan, &[]).ok();
        env.assert_complete();
    }
}

#[test]
fn a_tree_the_recipe_cannot_hash_deploys_and_rolls_back_local() {
    a_tree_the_recipe_cannot_hash_deploys_and_rolls_back(Host::Local);
}

/// `pack` stores a tree whose names the seed's recipe cannot get through (`xargs` stops at an
/// unmatched quote; sha256sum would read a blank-separated `-b` as an option) with recipe
/// digest "none", and preflight passes its plan: the deploy must then deploy it too, recording
/// that there is no recipe digest, rather than stop at its first step. The recipe digest is
/// information for the operator; the audit (`sha256sum -c` of DEPLOY-MANIFEST.txt) covers
/// every name.
pub fn a_tree_the_recipe_cannot_hash_deploys_and_rolls_back(host: Host) {
    let env = Env::new(host);
    let before = env.snapshot();
    let src = env.tmp.path().join("quotes/payload");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("it's.txt"), "apostrophe\n").unwrap();
    std::fs::write(src.join("sub/say \"hi\".txt"), "quotes\n").unwrap();
    std::fs::write(src.join("a -b"), "option-like\n").unwrap();
    std::fs::write(src.join("plain.txt"), "plain\n").unwrap();
    let (store, art) = env.store_tree(&src, "quotes-store");
    let plan = env.plan_for(&store, &art);
    // The report says there is none, not 64 zeros (the plan's spelling of "none").
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(report["plan"]["artifact"]["recipe_digest"], "0".repeat(64));
    let mut args: Vec<std::ffi::OsString> = vec![
        "preflight".into(),
        "--host".into(),
        env.destination().into(),
        "--artifact".into(),
        art.id.clone().unwrap().into(),
        "--store".into(),
        store.clone().into(),
        "--target".into(),
        env.target.clone().into(),
    ];
    if let Host::Ssh { config, .. } = &env.host {
        args.extend(["--ssh-config".into(), config.into()]);
    }
    let shown = stdout(&env.sealpush(args).ok());
    assert!(
        shown.contains("recipe_digest: none (the recipe cannot hash this tree)"),
        "{shown}"
    );
    let out = env.deploy(&plan, &[]).output();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a plan preflight passed must deploy: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let dm = std::fs::read_to_string(env.target.join("DEPLOY-MANIFEST.txt")).unwrap();
    assert!(
        dm.lines()
            .any(|l| l.starts_with("recipe_sha256: none (the recipe cannot hash this tree")),
        "{dm}"
    );
    assert!(
        stdout(&out).contains("target_recipe_sha256: none"),
        "{}",
        stdout(&out)
    );
    let receipt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file("receipt.json")).unwrap())
            .unwrap();
    assert_eq!(receipt["tree_recipe_digest"], serde_json::Value::Null);
    env.assert_audit();
    assert_eq!(
        std::fs::read_to_string(env.target.join("sub/say \"hi\".txt")).unwrap(),
        "quotes\n"
    );
    env.status_passes_then_rollback_restores(&plan, &before);
    // And the same plan deploys again.
    env.deploy(&plan, &[]).ok();
    env.rollback(&plan, &[]).ok();
    assert_eq!(env.snapshot(), before);
}

/// A `--check` that leaves a fifo (or a unix socket, as a test suite's server might) in the
/// target: the receipt records it as what it is, so `status` right after the PASS deploy
/// passes and `rollback` removes it without `--force`. Before, the receipt recorded it as a
/// file of unknown size, so `status` failed ("expected file of 0 bytes, found a fifo") and
/// the rollback refused.
#[test]
fn a_fifo_made_by_the_check_is_recorded_and_rolled_back_local() {
    a_fifo_made_by_the_check_is_recorded_and_rolled_back(Host::Local);
}

pub fn a_fifo_made_by_the_check_is_recorded_and_rolled_back(host: Host) {
    let env = Env::new(host);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &["--check", "mkfifo made-by-check-fifo"])
        .ok();
    env.status_passes_then_rollback_restores(&plan, &before);
}

/// A deploy whose `--check` failed, without `--rollback-on-check-failure`, leaves its tree in
/// place with verdict FAIL. `status` re-verified the tree and said PASS (exit 0), as if the
/// deploy had been good; it now names the receipt's FAIL and exits 1, and after the
/// rollback the host is as before.
#[test]
fn status_of_a_deploy_whose_check_failed_is_not_a_pass() {
    let env = Env::new(Host::Local);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &["--check", "exit 3"]).expect_code(1);
    let e = stderr(&env.sealpush(env.status_args()).expect_code(1));
    assert!(e.contains("the deploy's verdict was FAIL"), "{e}");
    env.rollback(&plan, &[]).ok();
    assert_eq!(env.snapshot(), before);
}

/// Deployed from machine A, rolled back from machine B (through the host's receipt): A's
/// journal still said "finished", so deploying the plan again from A was refused with "roll
/// it back first", though nothing of that deploy was left. It now starts afresh.
#[test]
fn a_plan_rolled_back_from_another_machine_deploys_again() {
    let env = Env::new(Host::Local);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let elsewhere = env.tmp.path().join("machine-b-state");
    env.rollback(&plan, &[])
        .env("SEALPUSH_STATE_DIR", &elsewhere)
        .ok();
    assert_eq!(env.snapshot(), before);
    env.deploy(&plan, &[]).ok();
    env.assert_complete();
    // Still refused while the deploy is there.
    let e = stderr(&env.deploy(&plan, &[]).expect_code(2));
    assert!(e.contains("already deployed"), "{e}");
    env.rollback(&plan, &[]).ok();
    assert_eq!(env.snapshot(), before);
}

/// Deployed from machine A, rolled back and deployed again from machine B: the tree is B's
/// deploy of the same plan. A rollback of the plan from A used A's own receipt, of the
/// earlier deploy, and refused ("DEPLOY-MANIFEST.txt changed since the deploy"). It now takes
/// the host's receipt, which records the deploy manifest that is there.
#[test]
fn rollback_from_a_machine_whose_receipt_is_of_an_earlier_deploy_of_the_plan() {
    let env = Env::new(Host::Local);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let b = env.tmp.path().join("machine-b-state");
    env.rollback(&plan, &[]).env("SEALPUSH_STATE_DIR", &b).ok();
    // A second later, so the deploy manifest's time differs.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.deploy(&plan, &[]).env("SEALPUSH_STATE_DIR", &b).ok();
    env.rollback(&plan, &[]).ok();
    assert_eq!(env.snapshot(), before);
    // An edited deploy manifest is still a change, whichever receipt is asked.
    env.deploy(&plan, &[]).ok();
    let dm = env.target.join("DEPLOY-MANIFEST.txt");
    let text = std::fs::read_to_string(&dm).unwrap();
    std::fs::write(&dm, text.replacen("plan_digest", "plan_digest ", 1)).unwrap();
    let e = stderr(&env.rollback(&plan, &[]).expect_code(1));
    assert!(e.contains("DEPLOY-MANIFEST.txt"), "{e}");
}

/// Deployed, rolled back (here or from another machine), deployed again and cut off before
/// the promote: the first deploy's local receipt.json is still in the state dir, and
/// `rollback PLAN` reads the local receipt first. It must not take that stale receipt for
/// the cut-off deploy's: it would remove the cut-off run's host journal and lock, reset the
/// local journal ("complete"), and strand its staging, which no rerun then removes.
#[test]
fn rollback_after_a_redeploy_cut_off_before_its_receipt_ignores_the_old_receipt() {
    for elsewhere in [false, true] {
        let env = Env::new(Host::Local);
        let before = env.snapshot();
        let plan = env.plan();
        env.deploy(&plan, &[]).ok();
        let other = env.tmp.path().join("machine-b-state");
        let mut rb = env.rollback(&plan, &[]);
        if elsewhere {
            rb = rb.env("SEALPUSH_STATE_DIR", &other);
        }
        rb.ok();
        assert_eq!(env.snapshot(), before);
        env.deploy_killed(&plan, "abort-before:promote");
        let cut = env.snapshot();
        let e = stderr(&env.rollback(&plan, &[]).expect_code(2));
        assert!(
            e.contains("did not finish") && e.contains("run `sealpush deploy` on this plan again"),
            "elsewhere {elsewhere}: {e}"
        );
        assert_eq!(
            env.snapshot(),
            cut,
            "elsewhere {elsewhere}: rollback touched the host"
        );
        // As it says: the deploy, run again, finishes.
        env.deploy(&plan, &[]).ok();
        env.assert_complete();
        env.rollback(&plan, &[]).ok();
        assert_eq!(env.snapshot(), before, "elsewhere {elsewhere}");
    }
}

/// As `a_run_that_waited_for_the_lock_leaves_the_winners_deploy_alone`, the winner with
/// `--keep-archive`: the late run stops under the lock and cleans up as a failed deploy,
/// and that cleanup removed the kept archive by its name (the same for every plan of the
/// artifact) though the late run never made it; the winner's receipt still lists it.
#[test]
fn a_run_that_waited_for_the_lock_leaves_the_winners_kept_archive_alone() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    let late = env.deploy_paused_at(&plan, &[], "lock");
    env.deploy(&plan, &["--keep-archive"])
        .env("SEALPUSH_STATE_DIR", env.tmp.path().join("other-machine"))
        .ok();
    env.assert_complete();
    let after_winner = env.snapshot();
    late.release();
    let out = late.wait_with_output();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(env.snapshot(), after_winner);
}

/// The plan deployed whole from another machine (its host journal stays, as after every
/// deploy, until the rollback): a run of it from here must not say that run "got this far"
/// and is to be run again there (it would say "already deployed"); the host's receipt says
/// it is deployed.
#[test]
fn a_deploy_finished_from_another_machine_is_not_called_cut_off() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy(&plan, &[])
        .env("SEALPUSH_STATE_DIR", env.tmp.path().join("other-machine"))
        .ok();
    let before = env.snapshot();
    let e = stderr(&env.deploy(&plan, &[]).expect_code(1));
    assert!(e.contains("a receipt of this plan is on the host"), "{e}");
    assert!(!e.contains("got this far"), "{e}");
    assert_eq!(env.snapshot(), before);
}

/// A kill -9 between the staging mkdir and its `done` record (simulated: killed just after
/// it, the `done` line then dropped from the local journal, as a kill a moment earlier
/// leaves it). The staging dir has the plan's unguessable name and the journal holds the
/// intent to make it: the rerun must take it for its own and clean up, not report it as
/// "staging ... which this deploy did not create" on every rerun.
#[test]
fn a_kill_between_the_staging_mkdir_and_its_record_is_finished_by_a_rerun() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy_killed(&plan, "abort-after:staging");
    let j = env.state_file("journal.jsonl");
    let text = std::fs::read_to_string(&j).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !(l.contains("\"step\":\"staging\"") && l.contains("\"phase\":\"done\"")))
        .collect();
    assert_eq!(kept.len() + 1, text.lines().count(), "{text}");
    std::fs::write(&j, kept.join("\n") + "\n").unwrap();
    assert!(env.staging_dir().is_some());
    let out = env.deploy(&plan, &[]).output();
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_complete();
}

/// A finished deploy keeps its host journal, so after a hand removal of its target or its
/// host receipt `status` called it "cut off". The receipt (or the journal's record of it)
/// tells the two apart.
#[test]
fn status_does_not_call_a_finished_deploy_cut_off() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let work = env.parent.join(".sealpush/iu-cutter-v0.6");
    let receipt = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("receipt-"))
        .expect("host receipt");
    let aside = env.tmp.path().join("receipt-aside.json");
    std::fs::rename(&receipt, &aside).unwrap();
    let e = stderr(&env.sealpush(env.status_args()).expect_code(1));
    assert!(
        e.contains("the deploy wrote it") && !e.contains("cut off"),
        "{e}"
    );
    std::fs::rename(&aside, &receipt).unwrap();
    std::fs::rename(&env.target, env.tmp.path().join("target-aside")).unwrap();
    let e = stderr(&env.sealpush(env.status_args()).expect_code(1));
    assert!(
        e.contains("its deploy finished") && !e.contains("cut off"),
        "{e}"
    );
}

/// A `--check` that prints a lot: the receipt keeps the end of each stream (where a test
/// runner's summary is), not all of it (3 MB went into every copy of the receipt before).
#[test]
fn a_chatty_check_keeps_the_end_of_its_output() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    let check = "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo SUMMARY: ok";
    let out = env.deploy(&plan, &["--check", check, "--json"]).ok();
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stdout = receipt["check"]["output"]["stdout"].as_str().unwrap();
    assert!(stdout.len() < 300 * 1024, "{} bytes kept", stdout.len());
    assert!(
        stdout.starts_with("[sealpush: the first ") && stdout.ends_with("SUMMARY: ok\n"),
        "{}",
        &stdout[..200]
    );
}

/// A receipt of a later sealpush, with a field this version does not know (more created
/// paths, say), is refused on every path that reads a receipt, naming the version and the
/// field, and nothing is removed: read without the field, a rollback removed less than that
/// deploy made, silently. The same field under this version's name is an edit.
#[test]
fn a_receipt_with_fields_this_version_does_not_know_is_refused_everywhere() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let local = env.state_file("receipt.json");
    let host = env.host_receipt();
    let original = std::fs::read(&local).unwrap();
    let mut r: serde_json::Value = serde_json::from_slice(&original).unwrap();
    r["tool_version"] = "sealpush 99.0.0".into();
    r["created_more"] = serde_json::json!([{"path": "/x", "kind": "file"}]);
    let later = serde_json::to_vec_pretty(&r).unwrap();
    r["tool_version"] = sealpush::TOOL_VERSION.into();
    let edited = serde_json::to_vec_pretty(&r).unwrap();
    let copy = env.tmp.path().join("later-receipt.json");
    let refused = |out: &std::process::Output, what: &str| {
        let e = stderr(out);
        assert!(e.contains("created_more"), "{what}: {e}");
        e
    };
    // Given as a file.
    std::fs::write(&copy, &later).unwrap();
    let out = env.rollback(&copy, &[]).expect_code(2);
    let e = refused(&out, "file");
    assert!(
        e.contains("written by sealpush 99.0.0") && e.contains("sealpush 99.0.0 or later"),
        "{e}"
    );
    std::fs::write(&copy, &edited).unwrap();
    let out = env.rollback(&copy, &[]).expect_code(2);
    assert!(
        refused(&out, "edited").contains("edited"),
        "{}",
        stderr(&out)
    );
    // Found by the plan: the local receipt, then the host's.
    std::fs::write(&local, &later).unwrap();
    let out = env.rollback(&plan, &[]).expect_code(2);
    assert!(refused(&out, "local").contains(local.to_str().unwrap()));
    std::fs::remove_file(&local).unwrap();
    std::fs::write(&host, &later).unwrap();
    let out = env.rollback(&plan, &[]).expect_code(2);
    assert!(refused(&out, "host").contains(host.to_str().unwrap()));
    let target = env.target.to_str().unwrap().to_string();
    let out = env
        .sealpush(["status", "--host", "local", "--target", &target])
        .expect_code(1);
    assert!(stdout(&out).contains("created_more"), "{}", stdout(&out));
    env.assert_complete();
    // Its own receipt back: rolled back as ever.
    std::fs::write(&host, &original).unwrap();
    env.rollback(&plan, &[]).ok();
    assert!(!env.target.exists());
}

/// A rollback that refuses its receipt (another format, one naming a work dir not the
/// target's, one that is not the plan's deploy's) writes nothing, locally either: the state
/// dir it was given stays absent. (It used to be made, with the plan's dir and an empty
/// journal, before the receipt was looked at.)
#[test]
fn a_refused_receipt_leaves_no_local_state_dir() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let original = std::fs::read(env.state_file("receipt.json")).unwrap();
    let fresh = env.tmp.path().join("fresh-state");
    let state_dir = ["--state-dir", fresh.to_str().unwrap()];
    let edit = |field: &str, value: serde_json::Value| {
        let mut r: serde_json::Value = serde_json::from_slice(&original).unwrap();
        r[field] = value;
        let path = env.tmp.path().join(format!("receipt-{field}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
        path
    };
    for (receipt, says) in [
        (edit("format", 2.into()), "format 2"),
        (
            edit("work_dir", env.anchor.to_str().into()),
            "outside the target's work dir",
        ),
    ] {
        let out = env.rollback(&receipt, &state_dir).expect_code(2);
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!fresh.exists(), "{says}: {} made", fresh.display());
    }
    // By the plan, with the host's receipt (none in the fresh state dir) edited to name
    // another staging.
    let host = env.host_receipt();
    std::fs::copy(edit("staging", "/elsewhere".into()), &host).unwrap();
    let out = env.rollback(&plan, &state_dir).expect_code(2);
    assert!(
        stderr(&out).contains("not the receipt of this plan's deploy"),
        "{}",
        stderr(&out)
    );
    assert!(!fresh.exists(), "plan mismatch: {} made", fresh.display());
    env.assert_complete();
    // A rollback that goes ahead journals, so it makes the state dir.
    std::fs::write(&host, &original).unwrap();
    env.rollback(&plan, &state_dir).ok();
    assert!(fresh.join("deploys").exists());
    assert!(!env.target.exists());
}

/// As `rollback_after_a_redeploy_cut_off_before_its_receipt_ignores_the_old_receipt`, with the
/// first deploy's receipt given as such (the state dir's copy, or one copied elsewhere): it is
/// refused, touching nothing, since it would remove the cut-off run's lock and journal and
/// strand its staging; the deploy run again finishes, and its own receipt rolls it back.
#[test]
fn rollback_of_an_old_receipt_while_a_redeploy_is_cut_off_is_refused() {
    let env = Env::new(Host::Local);
    let before = env.snapshot();
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let local = env.state_file("receipt.json");
    let copy = env.tmp.path().join("old-receipt.json");
    std::fs::copy(&local, &copy).unwrap();
    env.rollback(&plan, &[]).ok();
    env.deploy_killed(&plan, "abort-before:promote");
    let cut = env.snapshot();
    let journal = std::fs::read(env.state_file("journal.jsonl")).unwrap();
    for receipt in [&local, &copy] {
        let e = stderr(&env.rollback(receipt, &[]).expect_code(2));
        assert!(
            e.contains("earlier deploy") && e.contains("run `sealpush deploy` on the plan again"),
            "{}: {e}",
            receipt.display()
        );
        assert_eq!(env.snapshot(), cut, "{}: host touched", receipt.display());
        assert_eq!(
            std::fs::read(env.state_file("journal.jsonl")).unwrap(),
            journal
        );
    }
    env.deploy(&plan, &[]).ok();
    env.assert_complete();
    env.rollback(&local, &[]).ok();
    assert_eq!(env.snapshot(), before);
}

/// A deployed file replaced by a character device is named in words by `status` and by the
/// refused rollback ("a character device"); they spelled Rust's variant, "a chardevice".
#[test]
fn a_device_in_the_deployed_tree_is_named_in_words() {
    let env = Env::new(Host::Local);
    let plan = env.plan();
    env.deploy(&plan, &[]).ok();
    let victim = env.target.join("README.md");
    std::fs::remove_file(&victim).unwrap();
    let c = std::ffi::CString::new(victim.as_os_str().as_encoded_bytes()).unwrap();
    // /dev/null's numbers; making a device needs root (CI runs as root).
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
    if made != 0 {
        assert!(
            !crate::support::in_ci(),
            "mknod: {}",
            std::io::Error::last_os_error()
        );
        eprintln!("skipped: mknod needs root");
        return;
    }
    let e = stderr(&env.sealpush(env.status_args()).expect_code(1));
    assert!(e.contains("a character device"), "{e}");
    assert!(!e.to_lowercase().contains("chardevice"), "{e}");
    let e = stderr(&env.rollback(&plan, &[]).expect_code(1));
    assert!(e.contains("a character device"), "{e}");
    assert!(!e.to_lowercase().contains("chardevice"), "{e}");
}
