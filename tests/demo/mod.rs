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
