//! `sealpush demo`, the README's first command: the whole flow on the bundled fixtures must pass,
//! and the anchor digest it reports must equal the real GNU recipe run on the same fixture.

use crate::support::{fixtures, TestCommand};

#[test]
fn demo_runs_the_whole_flow_and_its_anchor_digest_matches_the_real_recipe() {
    let work = tempfile::tempdir().unwrap();
    let keep = work.path().join("demo");
    let out = TestCommand::sealpush(work.path(), ["demo", "--keep"])
        .env("LC_ALL", "C")
        .cmd_arg(&keep)
        .ok();
    let stdout = String::from_utf8(out.stdout).unwrap();
    for gate in [
        "== G3 preflight",
        "== G4/G5 deploy",
        "== status",
        "== rollback",
    ] {
        assert!(stdout.contains(gate), "missing {gate} in:\n{stdout}");
    }
    assert!(stdout.trim_end().ends_with("verdict: PASS"), "{stdout}");

    // Independent oracle: the operator's recipe, by the real GNU tools, on the repo's fixture.
    let real = TestCommand::new("bash", &fixtures())
        .env("LC_ALL", "C")
        .cmd_args([
            "-c",
            "set -o pipefail; find iu-cutter -type f | sort | xargs sha256sum | sha256sum",
        ])
        .ok();
    let real = String::from_utf8(real.stdout).unwrap();
    let real = real.split_whitespace().next().unwrap();
    let reported: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("anchor_tree_sha256_after:"))
        .map(str::trim)
        .collect();
    assert!(!reported.is_empty(), "{stdout}");
    assert!(
        reported.iter().all(|d| *d == real),
        "demo {reported:?} vs recipe {real}"
    );

    // Rolled back: the target is gone, the anchor is still there.
    let dot = keep.join("host/opt/incomex/dot");
    assert!(!dot.join("iu-cutter-v0.6").exists());
    assert!(dot.join("iu-cutter/iu_cutter/__init__.py").is_file());
}

/// `demo --keep DIR` on a DIR that exists says that DIR must be new (it said only "File
/// exists"), and leaves what is there alone.
#[test]
fn demo_keep_on_an_existing_directory_says_to_pick_a_new_one() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("mine"), "kept").unwrap();
    let out = TestCommand::sealpush(work.path(), ["demo", "--keep", "."]).expect_code(2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--keep .: already exists")
            && err.contains("a directory that does not exist yet"),
        "{err}"
    );
    assert_eq!(std::fs::read(work.path().join("mine")).unwrap(), b"kept");
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 1);
}
