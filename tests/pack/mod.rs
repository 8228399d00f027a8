//! Integration tests: manifest, reproducible packing, the store, checked unpacking.
//!
//! Oracles are independent tools: GNU tar lists and extracts what sealpush packs, the real
//! `find | sort | xargs sha256sum | sha256sum` pipeline digests trees, `sha256sum -c` checks
//! manifests. Hostile archives are built byte by byte with the tar crate's raw header API.

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sealpush::manifest::{self, Manifest};
use sealpush::pack::{self, Format, PackError, PackOptions};
use sealpush::progress::Progress;
use sealpush::store::Store;

use crate::support::TestCommand;

/// Runs `script` with bash in `cwd` (LC_ALL=C), asserting success; returns stdout.
fn sh(cwd: &Path, script: &str) -> Vec<u8> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env("LC_ALL", "C")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "script failed: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The real recipe on `parent/name`, run from `parent`: the first token of its output.
fn real_recipe(parent: &Path, name: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "find '{name}' -type f | sort | xargs sha256sum | sha256sum"
        ))
        .current_dir(parent)
        .env("LC_ALL", "C")
        .output()
        .expect("bash runs");
    let s = String::from_utf8(out.stdout).unwrap();
    s.split_whitespace().next().unwrap().to_string()
}

use crate::support::{sealpush_clean as sealpush, stderr, stdout};

/// Every path under `dir` (relative), sorted: to assert that nothing else appeared.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            v.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    v.sort();
    v
}

/// The same tree, built by a shell with the given umask, creation order and timestamps.
/// Contents: text, an executable and a hard link to it, a ~2 MB compressible file, an empty
/// directory, symlinks (relative, into a sibling directory), a >100-byte path (PAX), a
/// non-UTF-8 name.
fn build_tree(root: &Path, umask: &str, reverse: bool, mtime: &str, owner: Option<&str>) {
    let long = format!("{}/{}", "d".repeat(60), "f".repeat(70));
    let mut steps = vec![
        "mkdir -p bin data/empty docs".to_string(),
        "printf 'hello\\n' > README.md".to_string(),
        "printf '#!/bin/sh\\necho run\\n' > bin/run && chmod +x bin/run".to_string(),
        "ln bin/run bin/run-again".to_string(),
        "seq 1 300000 > data/numbers.txt".to_string(),
        "ln -s ../README.md docs/readme-link".to_string(),
        "ln -s bin top-link".to_string(),
        format!("mkdir -p {} && printf long > {long}", "d".repeat(60)),
        "printf latin1 > $'caf\\xe9.txt'".to_string(),
        format!(
            "mkdir -p {d} && printf binary-long > {d}/$'\\xe9'{}",
            "g".repeat(60),
            d = "d".repeat(60)
        ),
    ];
    if reverse {
        // Directories must exist first; everything else in reverse order.
        let first = steps.remove(0);
        steps.reverse();
        // The hard link needs its target: swap those two back.
        let a = steps
            .iter()
            .position(|s| s.starts_with("ln bin/run"))
            .unwrap();
        let b = steps.iter().position(|s| s.contains("> bin/run")).unwrap();
        steps.swap(a, b);
        steps.insert(0, first);
    }
    fs::create_dir_all(root).unwrap();
    let mut script = format!("set -e; umask {umask}; {}", steps.join("; "));
    script.push_str(&format!("; find . -exec touch -h -d '{mtime}' {{}} +"));
    if let Some(o) = owner {
        script.push_str(&format!("; chown -h -R {o} ."));
    }
    sh(root, &script);
}

#[test]
fn same_tree_gives_identical_bytes_and_gnu_tar_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = (tmp.path().join("a"), tmp.path().join("b"));
    build_tree(&pa.join("app"), "022", false, "2024-01-02 03:04:05", None);
    build_tree(&pb.join("app"), "077", true, "@1", Some("12345:54321"));
    let source_recipe = real_recipe(&pa, "app");
    assert_eq!(source_recipe, real_recipe(&pb, "app"));

    for format in ["tar.zst", "tar.gz"] {
        let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
        for (label, parent) in [("a", &pa), ("b", &pb)] {
            for threads in ["1", "2"] {
                let store = tmp.path().join(format!("store-{label}-{format}-{threads}"));
                let out_file = tmp.path().join(format!("{label}-{threads}.{format}"));
                let out = sealpush(
                    parent,
                    [
                        "pack", "app", "--json", "--format", format, "-j", threads, "--store",
                    ]
                    .map(std::ffi::OsString::from)
                    .into_iter()
                    .chain([
                        store.into_os_string(),
                        "--out".into(),
                        out_file.clone().into(),
                    ]),
                )
                .ok();
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(v["recipe_digest"], source_recipe.as_str(), "{v}");
                assert_eq!(v["recipe_locale"], "C");
                let bytes = fs::read(&out_file).unwrap();
                outputs.push((format!("tree {label}, {threads} thread(s)"), bytes));
            }
        }
        for (label, bytes) in &outputs[1..] {
            assert!(
                bytes == &outputs[0].1,
                "{format}: {label} differs from {}",
                outputs[0].0
            );
        }

        // GNU tar lists it with normalised metadata and extracts it; the real recipe agrees.
        let archive = tmp.path().join(format!("a-1.{format}"));
        let listing_out = sh(tmp.path(), &format!("tar -tvf '{}'", archive.display()));
        let text = String::from_utf8_lossy(&listing_out);
        assert!(text.contains("-rwxr-xr-x 0/0"), "{text}");
        assert!(
            text.contains("hrwxr-xr-x 0/0") || text.contains("bin/run-again link to bin/run"),
            "{text}"
        );
        assert!(text.contains("lrwxrwxrwx 0/0"), "{text}");
        assert!(text.contains("2006-07-24"), "{text}");
        assert!(!text.contains("12345"), "{text}");
        let x = tmp.path().join(format!("x-{format}"));
        fs::create_dir_all(x.join("app")).unwrap();
        let flag = if format == "tar.zst" {
            "--zstd -xf"
        } else {
            "-xzf"
        };
        sh(
            &x.join("app"),
            &format!("tar {flag} '{}'", archive.display()),
        );
        assert_eq!(real_recipe(&x, "app"), source_recipe, "{format}");
        assert!(x.join("app/data/empty").is_dir());
        assert_eq!(
            fs::read_link(x.join("app/docs/readme-link")).unwrap(),
            Path::new("../README.md")
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(x.join("app/bin/run")).unwrap().ino(),
            fs::metadata(x.join("app/bin/run-again")).unwrap().ino(),
            "hard link kept"
        );
    }
}

#[test]
fn source_date_epoch_sets_the_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    let mut sizes = Vec::new();
    for (epoch, date) in [(None, "2006-07-24"), (Some("1700000000"), "2023-11-14")] {
        let out_file = tmp.path().join(format!("{date}.tar.zst"));
        let mut c = sealpush(
            tmp.path(),
            [
                "pack",
                "t",
                "--store",
                "s",
                "--out",
                out_file.to_str().unwrap(),
            ],
        );
        if let Some(e) = epoch {
            c = c.env("SOURCE_DATE_EPOCH", e);
        }
        c.ok();
        let text = String::from_utf8(sh(
            tmp.path(),
            &format!("tar -tvf '{}'", out_file.display()),
        ))
        .unwrap();
        assert!(text.contains(date), "{text}");
        sizes.push(fs::read(&out_file).unwrap());
    }
    assert_ne!(sizes[0], sizes[1]);
}

#[test]
fn packing_twice_stores_one_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = crate::support::fixtures().join("iu-cutter-v0.6");
    let store = tmp.path().join("store");
    let args = [
        "pack",
        fixture.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ];
    let first = sealpush(tmp.path(), args).ok();
    let second = sealpush(tmp.path(), args).ok();
    assert_eq!(first.stdout, second.stdout);
    assert!(
        stderr(&second).contains("already stored"),
        "{}",
        stderr(&second)
    );
    let list = sealpush(
        tmp.path(),
        ["store", "list", "--store", store.to_str().unwrap()],
    )
    .ok();
    assert_eq!(stdout(&list).lines().count(), 1, "{}", stdout(&list));
    assert!(listing(&store.join("tmp")).is_empty());
    // The stored manifest's recipe record matches the real pipeline on the fixture.
    let show = sealpush(
        tmp.path(),
        [
            "store",
            "show",
            "iu-cutter-v0.6",
            "--store",
            store.to_str().unwrap(),
        ],
    )
    .ok();
    let want = real_recipe(&crate::support::fixtures(), "iu-cutter-v0.6");
    assert!(
        stdout(&show).contains(&format!("recipe-digest: {want} (C)")),
        "{}",
        stdout(&show)
    );
    // And the store's own check passes, then gc finds nothing to do.
    sealpush(
        tmp.path(),
        ["store", "verify", "--store", store.to_str().unwrap()],
    )
    .ok();
    let gc = sealpush(
        tmp.path(),
        ["store", "gc", "--store", store.to_str().unwrap()],
    )
    .ok();
    assert_eq!(stdout(&gc), "");
}

#[test]
fn special_files_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    fs::create_dir_all(t.join("sub")).unwrap();
    fs::write(t.join("a"), "a").unwrap();
    sh(&t, "mkfifo sub/pipe");
    let store = tmp.path().join("store");
    let out = sealpush(
        tmp.path(),
        [
            "pack",
            "t",
            "--store",
            store.to_str().unwrap(),
            "--out",
            "copy.tar.zst",
        ],
    )
    .expect_code(2);
    let err = stderr(&out);
    assert!(err.contains("sub/pipe") && err.contains("fifo"), "{err}");
    // And what to do about it.
    assert!(err.contains("remove it from the tree"), "{err}");
    assert!(listing(&store.join("artifacts")).is_empty());
    assert!(listing(&store.join("tmp")).is_empty());
    assert!(!tmp.path().join("copy.tar.zst").exists());
}

/// A symlink that unpack would refuse (absolute, or climbing out of the tree) stops the pack,
/// naming it: an artifact that no unpack or deploy accepts is never stored. One that stays
/// inside the tree is packed and unpacked.
#[test]
fn symlinks_unpack_would_refuse_are_refused_by_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    fs::create_dir_all(t.join("sub")).unwrap();
    fs::write(t.join("sub/f"), "f").unwrap();
    let store = tmp.path().join("store");
    let pack = || {
        sealpush(
            tmp.path(),
            ["pack", "t", "--store", store.to_str().unwrap()],
        )
    };
    for (link, target) in [("abs", "/etc/passwd"), ("sub/up", "../../x")] {
        std::os::unix::fs::symlink(target, t.join(link)).unwrap();
        let out = pack().expect_code(2);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("t/{link}: cannot go into an artifact"))
                && err.contains("points outside")
                && err.contains("remove or replace it"),
            "{err}"
        );
        assert!(listing(&store.join("artifacts")).is_empty());
        fs::remove_file(t.join(link)).unwrap();
    }
    std::os::unix::fs::symlink("../sub/f", t.join("sub/ok")).unwrap();
    pack().ok();
    let dest = tmp.path().join("x");
    sealpush(
        tmp.path(),
        ["unpack", "t", "x", "--store", store.to_str().unwrap()],
    )
    .ok();
    assert_eq!(fs::read(dest.join("sub/ok")).unwrap(), b"f");
}

/// Several packs of one tree at once over a broken artifact under its id: one replaces it, and
/// the others report the winner's valid artifact as already stored instead of failing
/// ("Directory not empty", "already exists" before).
#[test]
fn concurrent_packs_over_a_broken_artifact_all_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    fs::create_dir(&tree).unwrap();
    for i in 0..200 {
        fs::write(tree.join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    let store = Store::open(Some(&tmp.path().join("s"))).unwrap();
    let opts = PackOptions {
        threads: Some(1),
        ..PackOptions::default()
    };
    let none = sealpush::progress::NoProgress;
    let pack = || store.add_dir_reporting(&tree, None, &opts, &none);
    let (a, _) = pack().unwrap();
    let dir = a.archive.parent().unwrap().to_path_buf();
    for round in 0..12 {
        // Broken: no meta.json, and enough junk that removing it takes a while.
        let _ = fs::remove_file(dir.join("meta.json"));
        fs::create_dir_all(dir.join("junk")).unwrap();
        for i in 0..300 {
            fs::write(dir.join("junk").join(i.to_string()), "").unwrap();
        }
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|_| s.spawn(pack)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &results {
            assert!(r.is_ok(), "round {round}: {}", r.as_ref().unwrap_err());
        }
        let stored = store.load(a.id.as_deref().unwrap()).unwrap();
        Store::verify(&stored, &none).unwrap();
        assert!(!dir.join("junk").exists(), "round {round}");
    }
    assert!(listing(&tmp.path().join("s/tmp")).is_empty());
}

/// A SOURCE_DATE_EPOCH that is set but not a number stops the pack (the reproducible-builds
/// spec), instead of quietly packing with the default mtime; an empty one counts as unset.
#[test]
fn a_malformed_source_date_epoch_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    for bad in ["yesterday", "-5", "1.5"] {
        let out = sealpush(tmp.path(), ["pack", "t", "--store", "s"])
            .env("SOURCE_DATE_EPOCH", bad)
            .expect_code(2);
        assert!(
            stderr(&out).contains("SOURCE_DATE_EPOCH"),
            "{bad}: {}",
            stderr(&out)
        );
        assert!(!tmp.path().join("s").exists(), "{bad}: nothing is stored");
    }
    sealpush(tmp.path(), ["pack", "t", "--store", "s"])
        .env("SOURCE_DATE_EPOCH", "")
        .ok();
}

/// Modifies a file the moment packing starts (after the walk, before the file is read).
struct Saboteur(PathBuf);

impl Progress for Saboteur {
    fn start(&self, phase: &str, _: Option<u64>, _: Option<u64>) {
        if phase == "packing" {
            let mut f = fs::OpenOptions::new().append(true).open(&self.0).unwrap();
            f.write_all(b"late write").unwrap();
        }
    }
}

#[test]
fn a_file_changed_while_packing_fails_the_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    fs::create_dir(&t).unwrap();
    fs::write(t.join("a"), "stable").unwrap();
    fs::write(t.join("b"), "will change").unwrap();
    let store = Store::open(Some(&tmp.path().join("store"))).unwrap();
    let err = store
        .add_dir(&t, None, &PackOptions::default(), &Saboteur(t.join("b")))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("changed while it was packed"), "{msg}");
    assert!(msg.contains("/t/b"), "{msg}");
    assert!(matches!(
        err,
        sealpush::store::StoreError::Pack(PackError::Changed { .. })
    ));
    assert!(listing(&store.root().join("artifacts")).is_empty());
    assert!(listing(&store.root().join("tmp")).is_empty());
    // pack_to_file leaves nothing behind either.
    let dest = tmp.path().join("out/x.tar.zst");
    fs::create_dir(dest.parent().unwrap()).unwrap();
    let err = pack::pack_to_file(&t, &dest, &PackOptions::default(), &Saboteur(t.join("b")));
    assert!(err.is_err());
    assert!(listing(dest.parent().unwrap()).is_empty());
}

/// A raw tar entry for hostile archives.
struct Raw<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    mode: u32,
    link: &'a [u8],
    data: &'a [u8],
    /// Header size when it must lie about the data.
    size: Option<u64>,
}

fn raw<'a>(name: &'a [u8], kind: tar::EntryType) -> Raw<'a> {
    let mode = if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    };
    Raw {
        name,
        kind,
        mode,
        link: b"",
        data: b"",
        size: None,
    }
}

/// Builds a tar stream with raw headers (no path validation), compressed with zstd or gzip.
fn hostile_archive(entries: &[Raw<'_>], gz: bool) -> Vec<u8> {
    let mut tar = raw_tar(entries);
    tar.resize(tar.len() + 1024, 0);
    if gz {
        gzip(&tar)
    } else {
        zstd_frame(&tar)
    }
}

/// The entries' headers and data, without the end-of-archive marker.
fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name);
            old.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.resize(out.len() + pad, 0);
    }
    out
}

/// One gzip member, as `gzip -c` writes it.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// One zstd frame with a content checksum, as the zstd CLI writes it.
fn zstd_frame(data: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Unpacks `archive` into `work/dest`, expecting rejection with `rule` naming `entry`; checks
/// that nothing appeared anywhere under `work` (including temp dirs) and the sentinel is intact.
/// Each case's entries, built alternately as tar.zst and tar.gz, are rejected naming the entry
/// and the rule ([`assert_rejected`]).
fn assert_each_rejected(cases: Vec<(Vec<Raw<'_>>, &str, &str)>) {
    for (i, (entries, entry, rule)) in cases.into_iter().enumerate() {
        let gz = i % 2 == 1;
        assert_rejected(&hostile_archive(&entries, gz), entry, rule, gz);
    }
}

fn assert_rejected(archive: &[u8], entry: &str, rule: &str, gz: bool) {
    let tmp = tempfile::tempdir().unwrap();
    // `work/inner` is where DEST goes; `work` holds a sentinel that `..` would reach.
    let work = tmp.path().join("work");
    let inner = work.join("inner");
    fs::create_dir_all(&inner).unwrap();
    fs::write(work.join("sentinel"), "keep").unwrap();
    let file = tmp.path().join(if gz { "h.tar.gz" } else { "h.tar.zst" });
    fs::write(&file, archive).unwrap();
    let before = listing(tmp.path());
    let out = sealpush(
        &inner,
        [
            "unpack".as_ref(),
            file.as_os_str(),
            "dest".as_ref(),
            "--store".as_ref(),
            tmp.path().join("store").as_os_str(),
        ],
    )
    .expect_code(1);
    let err = stderr(&out);
    assert!(err.contains(entry), "expected entry {entry:?} in: {err}");
    assert!(err.contains(rule), "expected rule {rule:?} in: {err}");
    let after: Vec<PathBuf> = listing(tmp.path())
        .into_iter()
        .filter(|p| !p.starts_with("store"))
        .collect();
    assert_eq!(after, before, "something was written");
    assert_eq!(fs::read(work.join("sentinel")).unwrap(), b"keep");
}

#[test]
fn hostile_archives_are_rejected_with_their_rule() {
    use tar::EntryType as T;
    let file = |name: &'static [u8]| Raw {
        data: b"evil",
        ..raw(name, T::Regular)
    };
    let cases: Vec<(Vec<Raw>, &str, &str)> = vec![
        (vec![file(b"../evil")], "../evil", "path contains `..`"),
        (
            vec![raw(b"d", T::Directory), file(b"d/../../evil")],
            "d/../../evil",
            "`..`",
        ),
        (
            vec![file(b"/tmp/sealpush-evil-abs")],
            "/tmp/sealpush-evil-abs",
            "absolute path",
        ),
        (
            vec![Raw {
                link: b"/etc",
                ..raw(b"l", T::Symlink)
            }],
            "\"l\"",
            "points outside the destination",
        ),
        (
            vec![Raw {
                link: b"../..",
                ..raw(b"l", T::Symlink)
            }],
            "\"l\"",
            "points outside the destination",
        ),
        (
            vec![
                raw(b"d", T::Directory),
                Raw {
                    link: b"../d",
                    ..raw(b"d/l", T::Symlink)
                },
                file(b"d/l/evil"),
            ],
            "d/l/evil",
            "would write through symlink \"d/l\"",
        ),
        (
            vec![Raw {
                link: b"/etc/passwd",
                ..raw(b"h", T::Link)
            }],
            "\"h\"",
            "hard link target \"/etc/passwd\" is outside",
        ),
        (
            vec![
                Raw {
                    link: b"later",
                    ..raw(b"h", T::Link)
                },
                file(b"later"),
            ],
            "\"h\"",
            "not an earlier regular file entry",
        ),
        (vec![raw(b"dev", T::Char)], "\"dev\"", "device or fifo"),
        (vec![raw(b"fifo", T::Fifo)], "\"fifo\"", "device or fifo"),
        (
            vec![Raw {
                mode: 0o4755,
                ..file(b"suid")
            }],
            "\"suid\"",
            "setuid, setgid or sticky",
        ),
        (
            vec![file(b"twice"), file(b"twice")],
            "\"twice\"",
            "duplicate entry",
        ),
        (
            vec![file(b"nodir/f")],
            "nodir/f",
            "not an earlier directory entry",
        ),
        (
            vec![Raw {
                data: b"data",
                ..raw(b"d", T::Directory)
            }],
            "\"d\"",
            "must not carry data",
        ),
    ];
    assert_each_rejected(cases);
    assert!(!Path::new("/tmp/sealpush-evil-abs").exists());
}

#[test]
fn hostile_archives_made_by_gnu_tar_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    sh(&src, "mkfifo pipe && printf x > f && chmod 4755 f");
    let fifo = sh(&src, "tar -cf - pipe | zstd -q -c");
    assert_rejected(&fifo, "pipe", "device or fifo", false);
    let suid = sh(&src, "tar -cf - f | gzip -c");
    assert_rejected(&suid, "\"f\"", "setuid", true);
    let abs = sh(&src, "tar -P -cf - \"$PWD/f\" 2>/dev/null | gzip -c");
    assert_rejected(&abs, "/src/f", "absolute path", true);
}

#[test]
fn truncated_and_corrupted_archives_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    fs::create_dir(&t).unwrap();
    sh(&t, "seq 1 100000 > numbers && printf hi > small");
    let store = tmp.path().join("store");
    for format in ["tar.zst", "tar.gz"] {
        let good = tmp.path().join(format!("good.{format}"));
        sealpush(
            tmp.path(),
            [
                "pack",
                "t",
                "--format",
                format,
                "--store",
                store.to_str().unwrap(),
                "--out",
                good.to_str().unwrap(),
            ],
        )
        .ok();
        let bytes = fs::read(&good).unwrap();
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        let cases = [
            ("truncated", bytes[..bytes.len() * 6 / 10].to_vec()),
            ("cut at the end", bytes[..bytes.len() - 3].to_vec()),
            ("flipped", flipped),
            (
                "trailing garbage",
                [&bytes[..], b"garbage after the end"].concat(),
            ),
        ];
        for (what, data) in cases {
            let work = tmp.path().join(format!("w-{format}-{what}"));
            fs::create_dir(&work).unwrap();
            let bad = work.join(format!("bad.{format}"));
            fs::write(&bad, &data).unwrap();
            let out = sealpush(
                &work,
                [
                    "unpack",
                    bad.to_str().unwrap(),
                    "dest",
                    "--store",
                    store.to_str().unwrap(),
                ],
            )
            .output();
            assert!(!out.status.success(), "{format} {what}: accepted");
            let err = stderr(&out);
            assert!(
                err.contains("corrupt or truncated") || err.contains("rejected"),
                "{format} {what}: {err}"
            );
            assert_eq!(
                listing(&work),
                vec![PathBuf::from(format!("bad.{format}"))],
                "{format} {what}"
            );
            // verify says so too, with exit 1.
            sealpush(
                &work,
                [
                    "verify",
                    bad.to_str().unwrap(),
                    "--store",
                    store.to_str().unwrap(),
                ],
            )
            .expect_code(1);
        }
    }
}

#[test]
fn store_verify_catches_a_flipped_byte_in_a_stored_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let fixture = crate::support::fixtures().join("iu-cutter-v0.6");
    let out = sealpush(
        tmp.path(),
        [
            "pack",
            fixture.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
    )
    .ok();
    let archive = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("artifact: ").map(PathBuf::from))
        .unwrap();
    let mut bytes = fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&archive, &bytes).unwrap();
    let out = sealpush(
        tmp.path(),
        [
            "verify",
            "iu-cutter-v0.6",
            "--store",
            store.to_str().unwrap(),
        ],
    )
    .expect_code(1);
    assert!(
        stderr(&out).contains("archive sha256: expected"),
        "{}",
        stderr(&out)
    );
    sealpush(
        tmp.path(),
        ["store", "verify", "--store", store.to_str().unwrap()],
    )
    .expect_code(1);
    // unpack refuses it too, and DEST never appears.
    sealpush(
        tmp.path(),
        [
            "unpack",
            "iu-cutter-v0.6",
            "dest",
            "--store",
            store.to_str().unwrap(),
        ],
    )
    .output();
    assert!(!tmp.path().join("dest").exists());
}

#[test]
fn unpack_round_trips_and_refuses_an_existing_dest() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    build_tree(&t, "022", false, "@5", None);
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    sealpush(tmp.path(), ["pack", "t", "--store", s]).ok();
    // An existing DEST, even an empty directory, is refused and left alone.
    fs::create_dir(tmp.path().join("taken")).unwrap();
    let out = sealpush(tmp.path(), ["unpack", "t", "taken", "--store", s]).expect_code(2);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(listing(&tmp.path().join("taken")).is_empty());
    // A fresh DEST gets exactly the tree (the real recipe agrees), modes normalised.
    fs::create_dir(tmp.path().join("x")).unwrap();
    sealpush(tmp.path(), ["unpack", "t", "x/t", "--store", s]).ok();
    assert_eq!(
        real_recipe(&tmp.path().join("x"), "t"),
        real_recipe(tmp.path(), "t")
    );
    let a = manifest::scan_dir(&t, None, &sealpush::progress::NoProgress).unwrap();
    let b = manifest::scan_dir(
        &tmp.path().join("x/t"),
        None,
        &sealpush::progress::NoProgress,
    )
    .unwrap();
    assert_eq!(a.diff(&b), None);
    assert_eq!(
        listing(&tmp.path().join("x"))
            .iter()
            .filter(|p| p.to_string_lossy().contains("sealpush"))
            .count(),
        0
    );
    // An archive made by GNU tar (with `./` names) unpacks to the same identity.
    let gnu = tmp.path().join("gnu.tar.zst");
    sh(&t, &format!("tar --zstd -cf '{}' .", gnu.display()));
    sealpush(
        tmp.path(),
        ["unpack", gnu.to_str().unwrap(), "y", "--store", s],
    )
    .ok();
    let c =
        manifest::scan_dir(&tmp.path().join("y"), None, &sealpush::progress::NoProgress).unwrap();
    assert_eq!(a.identity(), c.identity());
}

#[test]
fn manifest_file_lines_pass_sha256sum_check_and_fail_after_a_flip() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    fs::create_dir(&t).unwrap();
    for name in [
        &b"plain"[..],
        b"sp ace",
        b"back\\slash",
        b"new\nline",
        b"car\rriage",
        b"tab\tname",
        b"caf\xe9",
        b"-dash",
    ] {
        fs::write(t.join(std::ffi::OsStr::from_bytes(name)), name).unwrap();
    }
    fs::create_dir(t.join("sub")).unwrap();
    fs::write(t.join("sub/x"), "x").unwrap();
    let out = sealpush(tmp.path(), ["manifest", "t"]).ok();
    let mpath = tmp.path().join("manifest.txt");
    fs::write(&mpath, &out.stdout).unwrap();
    let m = Manifest::decode(&out.stdout).unwrap();
    assert_eq!(m.file_count(), 9);
    // The command documented in store-layout.md, run from inside the tree.
    let check = format!(
        "sed -n 's/^[fx] [0-9]* //p' '{}' | sha256sum -c --quiet",
        mpath.display()
    );
    sh(&t, &check);
    // sha256sum_lines with a prefix, checked from the parent.
    fs::write(tmp.path().join("lines"), m.sha256sum_lines(b"t/")).unwrap();
    sh(tmp.path(), "sha256sum -c --quiet lines");
    // A flipped byte fails both.
    fs::write(t.join("back\\slash"), b"back\\slasH").unwrap();
    let status = Command::new("bash")
        .arg("-c")
        .arg(&check)
        .current_dir(&t)
        .output()
        .unwrap();
    assert!(!status.status.success());
    let status = Command::new("sha256sum")
        .args(["-c", "--quiet", "lines"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!status.status.success());
}

#[test]
fn store_resolves_ids_prefixes_names_and_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(Some(&tmp.path().join("store"))).unwrap();
    let fixture = crate::support::fixtures().join("iu-cutter-v0.6");
    let a = store
        .add_dir(
            &fixture,
            None,
            &PackOptions::default(),
            &sealpush::progress::NoProgress,
        )
        .unwrap();
    let id = a.id.clone().unwrap();
    for r in [
        id.as_str(),
        &id[..12],
        "iu-cutter-v0.6",
        a.archive.to_str().unwrap(),
    ] {
        assert_eq!(store.resolve(r).unwrap(), a, "{r}");
    }
    let gz = store
        .add_dir(
            &fixture,
            None,
            &PackOptions::new(Format::TarGz),
            &sealpush::progress::NoProgress,
        )
        .unwrap();
    assert_ne!(gz.id, a.id);
    assert!(store
        .resolve("iu-cutter-v0.6")
        .unwrap_err()
        .to_string()
        .contains("ambiguous"));
    // By name, a broken namesake is no candidate; two broken ones are still ambiguous.
    let gz_manifest = gz.archive.parent().unwrap().join("manifest.txt");
    let a_manifest = a.archive.parent().unwrap().join("manifest.txt");
    let (gz_good, a_good) = (
        fs::read(&gz_manifest).unwrap(),
        fs::read(&a_manifest).unwrap(),
    );
    fs::write(&gz_manifest, b"garbage\n").unwrap();
    assert_eq!(store.resolve("iu-cutter-v0.6").unwrap(), a);
    fs::write(&a_manifest, b"garbage\n").unwrap();
    let err = store.resolve("iu-cutter-v0.6").unwrap_err().to_string();
    assert!(err.contains("ambiguous"), "{err}");
    fs::write(&gz_manifest, gz_good).unwrap();
    fs::write(&a_manifest, &a_good).unwrap();
    assert!(store
        .resolve("nope")
        .unwrap_err()
        .to_string()
        .contains("no artifact matches"));
    let r = a.artifact_ref();
    assert_eq!(r.tree_identity, a.manifest.identity());
    assert_eq!(
        r.recipe_digest.to_hex(),
        real_recipe(&crate::support::fixtures(), "iu-cutter-v0.6")
    );
    assert_eq!(r.format, "tar.zst");
    assert_eq!(r.files, 9);
    // An archive outside the store resolves to its derived manifest.
    let outside = tmp.path().join("copy.tar.zst");
    fs::copy(&a.archive, &outside).unwrap();
    let o = store.resolve(outside.to_str().unwrap()).unwrap();
    assert_eq!(o.id, None);
    assert_eq!(o.meta.tree_identity, a.meta.tree_identity);
    assert_eq!(o.meta.archive_sha256, a.meta.archive_sha256);
    // gc removes a crashed pack's leftovers (once old enough) and broken artifacts.
    let leftover = store.root().join("tmp/add-crashed");
    fs::create_dir(&leftover).unwrap();
    sh(store.root(), "touch -d '2000-01-01' tmp/add-crashed");
    fs::remove_file(gz.archive.parent().unwrap().join("meta.json")).unwrap();
    let removed = store.gc(false).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(!leftover.exists());
    assert!(!gz.archive.exists());
    assert!(a.archive.exists());
    // A name held only by a broken artifact says why it cannot be used, not "no match".
    fs::write(&a_manifest, b"garbage\n").unwrap();
    let err = format!(
        "{:#}",
        anyhow::Error::from(store.resolve("iu-cutter-v0.6").unwrap_err())
    );
    assert!(err.contains("manifest"), "{err}");
    assert!(!err.contains("no artifact matches"), "{err}");
}

/// Packing a tree the store already holds keeps the stored artifact. Stored by another
/// sealpush version with other archive bytes (versions may write other bytes for a tree), it
/// is still kept and the pack says by whom; the same version with other bytes is an error.
#[test]
fn packing_a_stored_tree_again_keeps_it_unless_the_same_version_made_other_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let store = Store::open(Some(&store_dir)).unwrap();
    let fixture = crate::support::fixtures().join("iu-cutter-v0.6");
    let pack = || {
        store.add_dir_reporting(
            &fixture,
            None,
            &PackOptions::default(),
            &sealpush::progress::NoProgress,
        )
    };
    let (a, added) = pack().unwrap();
    assert!(added);
    assert_eq!(a.meta.tool_version, sealpush::TOOL_VERSION);
    let (again, added) = pack().unwrap();
    assert!(!added);
    assert_eq!(again, a);

    // The stored artifact now holds other bytes of the same size, and its record says so (as if
    // this very version had written them; the digest from sha256sum): refused. A record that
    // disagrees with its archive is damage, which packing again repairs (see
    // packing_again_replaces_a_damaged_stored_archive_and_out_gets_the_printed_bytes).
    let mut bytes = fs::read(&a.archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&a.archive, &bytes).unwrap();
    let dir = a.archive.parent().unwrap();
    let other = String::from_utf8(sh(dir, "sha256sum < archive.tar.zst")).unwrap();
    let meta_path = dir.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    meta["archive_sha256"] = serde_json::json!(other[..64]);
    fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let err = pack().unwrap_err().to_string();
    assert!(err.contains("packed again with other bytes"), "{err}");

    // From another version: kept, and the CLI says by whom.
    meta["tool_version"] = serde_json::json!("sealpush 0.1.0");
    fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let (kept, added) = pack().unwrap();
    assert!(!added);
    assert_eq!(kept.meta.tool_version, "sealpush 0.1.0");
    assert_eq!(kept.manifest, a.manifest);
    let out = TestCommand::sealpush(
        tmp.path(),
        [
            "pack".as_ref(),
            fixture.as_os_str(),
            "--store".as_ref(),
            store_dir.as_os_str(),
        ],
    )
    .ok();
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("already stored: (packed by sealpush 0.1.0, kept)"),
        "{note}"
    );
}

#[test]
fn a_deep_tree_packs_and_unpacks() {
    // 600 levels: deeper than the parallel walk goes, shallow enough for PATH_MAX.
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    fs::create_dir(&t).unwrap();
    sh(
        &t,
        "p=$(printf 'd/%.0s' $(seq 600)); mkdir -p \"$p\" && printf deep > \"$p/f\"",
    );
    let store = Store::open(Some(&tmp.path().join("store"))).unwrap();
    let a = store
        .add_dir(
            &t,
            None,
            &PackOptions::default(),
            &sealpush::progress::NoProgress,
        )
        .unwrap();
    assert_eq!(a.manifest.entries.len(), 601);
    assert_eq!(
        a.meta.recipe_digest.unwrap().to_hex(),
        real_recipe(tmp.path(), "t")
    );
    let m = pack::unpack(
        &a.archive,
        &tmp.path().join("u"),
        Some(&a.manifest),
        &sealpush::progress::NoProgress,
    )
    .unwrap();
    assert_eq!(m.identity(), a.manifest.identity());
}

/// The deploy's unpack against a trusted manifest checks structure and sizes but leaves content
/// to the read-back: a manifest that differs in a size is refused, one that differs only in a
/// digest is not (which is why the deploy must, and does, compare every byte read back from the
/// host with the manifest; tests/deploy covers that a changed byte stops it).
#[test]
fn unhashed_unpack_checks_structure_and_sizes_not_content() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    build_tree(&t, "022", false, "@5", None);
    let archive = tmp.path().join("t.tar.zst");
    let opts = PackOptions::default();
    fs::create_dir(tmp.path().join("x")).unwrap();
    let packed = pack::pack_to_file(&t, &archive, &opts, &sealpush::progress::NoProgress).unwrap();
    let m = packed.manifest;
    let got = pack::unpack_unhashed(
        &archive,
        &tmp.path().join("x/t"),
        &m,
        &sealpush::progress::NoProgress,
    )
    .unwrap();
    assert_eq!(got.identity(), m.identity());
    assert_eq!(
        real_recipe(&tmp.path().join("x"), "t"),
        real_recipe(tmp.path(), "t")
    );

    let file = |m: &Manifest| {
        m.entries
            .iter()
            .position(|e| matches!(e.kind, manifest::EntryKind::File { size, .. } if size > 0))
            .unwrap()
    };
    let mut other_size = m.clone();
    let i = file(&other_size);
    if let manifest::EntryKind::File { size, .. } = &mut other_size.entries[i].kind {
        *size += 1;
    }
    let err = pack::unpack_unhashed(
        &archive,
        &tmp.path().join("b"),
        &other_size,
        &sealpush::progress::NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(!tmp.path().join("b").exists());

    let mut other_digest = m.clone();
    let i = file(&other_digest);
    if let manifest::EntryKind::File { sha256, .. } = &mut other_digest.entries[i].kind {
        sha256.0[0] ^= 1;
    }
    let got = pack::unpack_unhashed(
        &archive,
        &tmp.path().join("c"),
        &other_digest,
        &sealpush::progress::NoProgress,
    )
    .unwrap();
    assert_eq!(got.identity(), other_digest.identity());
}

/// Plays someone who owns DEST's parent and races the unpack: once the first file has been
/// handed out (a deterministic point inside the extraction), it records the temp dir's mode,
/// renames the temp dir away and plants a symlink to `victim` under its name.
struct Swapper {
    parent: PathBuf,
    victim: PathBuf,
    seen_mode: std::sync::Mutex<Option<u32>>,
}

impl Progress for Swapper {
    fn advance(&self, _: u64, _: u64) {
        use std::os::unix::fs::PermissionsExt;
        let mut seen = self.seen_mode.lock().unwrap();
        if seen.is_some() {
            return;
        }
        let tmp = fs::read_dir(&self.parent)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().as_bytes().starts_with(b".dest."))
            .expect("the temp dir exists beside DEST while extracting");
        *seen = Some(fs::symlink_metadata(&tmp).unwrap().permissions().mode() & 0o7777);
        fs::rename(&tmp, self.parent.join("stolen")).unwrap();
        std::os::unix::fs::symlink(&self.victim, &tmp).unwrap();
    }
}

/// The temp dir is private (0700) while entries are written, and a symlink swapped in for it
/// mid-extraction is never written through: later entries, the final chmod and the rename all
/// act on the directory sealpush created, so the victim directory stays empty and 0700, DEST
/// never appears, and the unpack fails instead of claiming success.
#[test]
fn a_temp_dir_swapped_for_a_symlink_is_never_written_through() {
    use std::os::unix::fs::PermissionsExt;
    use tar::EntryType as T;
    let tmp = tempfile::tempdir().unwrap();
    let (parent, victim) = (tmp.path().join("shared"), tmp.path().join("victim"));
    fs::create_dir(&parent).unwrap();
    fs::create_dir(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
    let big = vec![7u8; 3 << 20];
    let archive = tmp.path().join("a.tar.zst");
    fs::write(
        &archive,
        hostile_archive(
            &[
                Raw {
                    data: b"first",
                    ..raw(b"a", T::Regular)
                },
                raw(b"d", T::Directory),
                Raw {
                    data: b"inside d",
                    ..raw(b"d/b", T::Regular)
                },
                Raw {
                    data: &big,
                    ..raw(b"d/big", T::Regular)
                },
                Raw {
                    link: b"a",
                    ..raw(b"s", T::Symlink)
                },
                Raw {
                    link: b"a",
                    ..raw(b"h", T::Link)
                },
            ],
            false,
        ),
    )
    .unwrap();
    let swapper = Swapper {
        parent: parent.clone(),
        victim: victim.clone(),
        seen_mode: Default::default(),
    };
    let err = pack::unpack(&archive, &parent.join("dest"), None, &swapper).unwrap_err();
    assert_eq!(*swapper.seen_mode.lock().unwrap(), Some(0o700));
    assert!(err.to_string().contains("replaced"), "{err}");
    assert_eq!(listing(&victim), Vec::<PathBuf>::new(), "written through");
    let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "victim's mode changed");
    assert!(fs::symlink_metadata(parent.join("dest")).is_err());
}

/// What follows the tar end-of-archive marker, or a missing marker, or a second compressed
/// frame/member: GNU tar with `-i` (ignore zero blocks) extracts entries hidden there, so
/// `verify` and `unpack` must refuse them rather than see a different archive. sealpush's own
/// archives (both formats, several levels) and GNU tar's (padded with zeros to a 10240-byte
/// record) still pass.
#[test]
fn data_after_the_end_of_the_archive_is_refused() {
    use tar::EntryType as T;
    let a = raw_tar(&[Raw {
        data: b"hello",
        ..raw(b"a", T::Regular)
    }]);
    let hidden = raw_tar(&[Raw {
        data: b"hidden payload",
        ..raw(b"hidden", T::Regular)
    }]);
    let end = vec![0u8; 1024];
    let cat = |parts: &[&[u8]]| parts.concat();
    let no_check = {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_checksum(false).unwrap();
        enc.write_all(&cat(&[&a, &end])).unwrap();
        enc.finish().unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "entries after the marker",
            zstd_frame(&cat(&[&a, &end, &hidden, &end])),
            false,
            "data after the end-of-archive marker",
        ),
        (
            "one zero block, then entries",
            gzip(&cat(&[&a, &[0u8; 512], &hidden, &end])),
            true,
            "data after the end-of-archive marker",
        ),
        (
            "garbage after the marker",
            zstd_frame(&cat(&[&a, &end, b"GARBAGE"])),
            false,
            "data after the end-of-archive marker",
        ),
        (
            "no marker",
            zstd_frame(&a),
            false,
            "no end-of-archive marker",
        ),
        (
            "a second zstd frame",
            cat(&[
                &zstd_frame(&cat(&[&a, &end])),
                &zstd_frame(&cat(&[&hidden, &end])),
            ]),
            false,
            "data after the zstd frame",
        ),
        (
            "a second gzip member",
            cat(&[&gzip(&cat(&[&a, &end])), &gzip(&cat(&[&hidden, &end]))]),
            true,
            "data after the gzip member",
        ),
        (
            "zstd frame without a checksum",
            no_check,
            false,
            "no content checksum",
        ),
    ];
    for (what, bytes, gz, msg) in cases {
        eprintln!("case: {what}");
        assert_rejected(&bytes, "corrupt or truncated", msg, gz);
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join(if gz { "h.tar.gz" } else { "h.tar.zst" });
        fs::write(&file, &bytes).unwrap();
        let out = sealpush(tmp.path(), ["verify", file.to_str().unwrap()]).expect_code(1);
        assert!(stderr(&out).contains(msg), "{what}: {}", stderr(&out));
        // Named once: the error's own path, not a context repeating it.
        let named = stderr(&out).matches(file.to_str().unwrap()).count();
        assert_eq!(named, 1, "{what}: {}", stderr(&out));
    }

    // What must still pass: sealpush's own output at several levels, and GNU tar's.
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    fs::create_dir(&t).unwrap();
    sh(&t, "seq 1 20000 > numbers && printf hi > small && mkdir d");
    let store = tmp.path().join("store");
    for (format, level) in [
        ("tar.zst", "1"),
        ("tar.zst", "19"),
        ("tar.gz", "1"),
        ("tar.gz", "9"),
    ] {
        let out_file = tmp.path().join(format!("l{level}.{format}"));
        sealpush(
            tmp.path(),
            [
                "pack",
                "t",
                "--format",
                format,
                "--level",
                level,
                "--store",
                store.to_str().unwrap(),
                "--out",
                out_file.to_str().unwrap(),
            ],
        )
        .ok();
        let dest = tmp.path().join(format!("u-{level}-{format}"));
        sealpush(
            tmp.path(),
            ["unpack", out_file.to_str().unwrap(), dest.to_str().unwrap()],
        )
        .ok();
    }
    for (flag, ext) in [("--zstd", "tar.zst"), ("-z", "tar.gz")] {
        let file = tmp.path().join(format!("gnu.{ext}"));
        sh(&t, &format!("tar {flag} -cf '{}' .", file.display()));
        let size = sh(
            tmp.path(),
            &format!(
                "{} -dc '{}' | wc -c",
                if ext == "tar.zst" { "zstd" } else { "gzip" },
                file.display()
            ),
        );
        let size: u64 = String::from_utf8_lossy(&size).trim().parse().unwrap();
        assert_eq!(size % 10240, 0, "GNU tar pads to its 10240-byte record");
        sealpush(tmp.path(), ["verify", file.to_str().unwrap()]).ok();
    }
}

/// One PAX record, `LEN key=value\n`, LEN counting itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut n = rest + 1;
    while n.to_string().len() + rest != n {
        n += 1;
    }
    [n.to_string().as_bytes(), b" ", key, b"=", value, b"\n"].concat()
}

/// Entries that tar parsers read differently (so `verify` would vouch for something other than
/// what GNU tar extracts) are refused, naming the entry: PAX sparse files (GNU tar extracts
/// `GNU.sparse.name` with the mapped data, the tar crate a plain file holding the map), a name
/// or link name given by both a GNU long-name record and a PAX record that disagree (GNU tar
/// takes PAX, the tar crate the GNU record), a PAX `size` that is not plain decimal (the tar
/// crate ignores it and uses the header's size), a NUL inside a PAX `path`/`linkpath`, and a
/// key given twice (first or last wins, depending on the reader).
#[test]
fn pax_and_gnu_records_that_parsers_read_differently_are_refused() {
    use tar::EntryType as T;
    let pax = |records: &[(&[u8], &[u8])]| Raw {
        data: Box::leak(
            records
                .iter()
                .flat_map(|(k, v)| pax_record(k, v))
                .collect::<Vec<u8>>()
                .into_boxed_slice(),
        ),
        ..raw(b"././@PaxHeader", T::XHeader)
    };
    let long = |kind, name: &'static [u8]| Raw {
        data: Box::leak([name, b"\0"].concat().into_boxed_slice()),
        ..raw(b"././@LongLink", kind)
    };
    let file = |name: &'static [u8]| Raw {
        data: b"x",
        ..raw(name, T::Regular)
    };
    let cases: Vec<(Vec<Raw>, &str, &str)> = vec![
        (
            vec![
                pax(&[
                    (b"GNU.sparse.major", b"1"),
                    (b"GNU.sparse.minor", b"0"),
                    (b"GNU.sparse.name", b"payload.sh"),
                    (b"GNU.sparse.realsize", b"4"),
                ]),
                file(b"GNUSparseFile.0"),
            ],
            "\"GNUSparseFile.0\"",
            "sparse entries are not supported",
        ),
        (
            vec![
                long(T::GNULongName, b"from_longname"),
                pax(&[(b"path", b"from_pax")]),
                file(b"from_ustar"),
            ],
            "from_longname",
            "GNU long-name record and a PAX `path`",
        ),
        (
            vec![
                pax(&[(b"path", b"from_pax")]),
                long(T::GNULongName, b"from_longname"),
                file(b"from_ustar"),
            ],
            "from_longname",
            "GNU long-name record and a PAX `path`",
        ),
        (
            vec![
                file(b"t1"),
                file(b"t2"),
                long(T::GNULongLink, b"t1"),
                pax(&[(b"linkpath", b"t2")]),
                Raw {
                    link: b"t0",
                    ..raw(b"l", T::Symlink)
                },
            ],
            "\"l\"",
            "GNU long-link record and a PAX `linkpath`",
        ),
        (
            vec![pax(&[(b"size", b"-1")]), file(b"a")],
            "\"a\"",
            "malformed PAX header: `size` \"-1\" is not a decimal number",
        ),
        (
            vec![pax(&[(b"size", b"1e3")]), file(b"a")],
            "\"a\"",
            "malformed PAX header: `size` \"1e3\" is not a decimal number",
        ),
        (
            vec![pax(&[(b"size", b"+1")]), file(b"a")],
            "\"a\"",
            "malformed PAX header: `size` \"+1\" is not a decimal number",
        ),
        (
            vec![pax(&[(b"path", b"a\0b")]), file(b"x")],
            "a\\0b",
            "malformed PAX header: `path` contains a NUL byte",
        ),
        (
            vec![
                file(b"t"),
                pax(&[(b"linkpath", b"t\0u")]),
                Raw {
                    link: b"t",
                    ..raw(b"l", T::Symlink)
                },
            ],
            "\"l\"",
            "malformed PAX header: `linkpath` contains a NUL byte",
        ),
        (
            vec![pax(&[(b"path", b"ok"), (b"path", b"other")]), file(b"x")],
            "\"ok\"",
            "malformed PAX header: key `path` appears twice",
        ),
    ];
    assert_each_rejected(cases);
}

/// A path names the file to read, even when that file sits in an artifact directory (beside
/// meta.json and manifest.txt) without being its archive: `unpack` and `verify` read that file,
/// not the artifact's `archive.*`. The artifact's own archive path still means the artifact.
#[test]
fn a_file_beside_an_artifact_is_read_as_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let fixture = crate::support::fixtures().join("iu-cutter-v0.6");
    let out = sealpush(
        tmp.path(),
        ["pack", fixture.to_str().unwrap(), "--store", s],
    )
    .ok();
    let archive = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("artifact: ").map(PathBuf::from))
        .unwrap();
    let dir = archive.parent().unwrap();
    let mine = dir.join("mine.tar.zst");
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("OTHER_CONTENT"), "the file the user asked for\n").unwrap();
    sh(
        &src,
        &format!("tar --zstd -cf '{}' OTHER_CONTENT", mine.display()),
    );

    sealpush(
        tmp.path(),
        ["unpack", mine.to_str().unwrap(), "dest", "--store", s],
    )
    .ok();
    assert_eq!(
        listing(&tmp.path().join("dest")),
        vec![PathBuf::from("OTHER_CONTENT")]
    );
    let out = sealpush(tmp.path(), ["verify", mine.to_str().unwrap(), "--store", s]).ok();
    assert!(
        stdout(&out).contains(&format!("ok: {}", mine.display())),
        "{}",
        stdout(&out)
    );
    // The archive itself still resolves to the stored artifact (its manifest, its recipe).
    let out = sealpush(
        tmp.path(),
        ["verify", archive.to_str().unwrap(), "--store", s],
    )
    .ok();
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let sha = meta["archive_sha256"].as_str().unwrap();
    assert!(stdout(&out).contains(sha), "{}", stdout(&out));
}

/// `unpack` of a store artifact checks the archive's sha256 against meta.json, as
/// store-layout.md promises, even when the archive's content matches its manifest: a meta.json
/// that records other bytes (a digest no archive here has) fails the unpack, and nothing is
/// left behind.
#[test]
fn unpack_checks_the_stored_archive_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let fixture = crate::support::fixtures().join("iu-cutter-v0.6");
    let out = sealpush(
        tmp.path(),
        ["pack", fixture.to_str().unwrap(), "--store", s],
    )
    .ok();
    let archive = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("artifact: ").map(PathBuf::from))
        .unwrap();
    let meta_path = archive.parent().unwrap().join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    meta["archive_sha256"] = serde_json::json!("ab".repeat(32));
    fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    let out = sealpush(&work, ["unpack", "iu-cutter-v0.6", "dest", "--store", s]).expect_code(1);
    let err = stderr(&out);
    assert!(err.contains("archive sha256"), "{err}");
    assert!(err.contains(&"ab".repeat(32)), "{err}");
    assert_eq!(listing(&work), Vec::<PathBuf>::new());
}

/// Ctrl-C or SIGTERM while `unpack` writes a large file: the temp dir is removed, DEST never
/// appears, and the exit status is 130. The signal is sent once the temp dir exists (so the
/// handler is installed and extraction has begun) and long before 512 MiB can be written.
#[test]
fn an_interrupted_unpack_leaves_nothing_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("big.tar.zst");
    {
        let size = 512u64 << 20;
        let mut h = tar::Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        let file = fs::File::create(&archive).unwrap();
        let mut enc = zstd::stream::write::Encoder::new(file, 1).unwrap();
        enc.include_checksum(true).unwrap();
        enc.write_all(h.as_bytes()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            enc.write_all(&chunk).unwrap();
        }
        enc.write_all(&[0u8; 1024]).unwrap();
        enc.finish().unwrap();
    }
    for (signal, name) in [(libc::SIGINT, "INT"), (libc::SIGTERM, "TERM")] {
        let work = tmp.path().join(name);
        fs::create_dir(&work).unwrap();
        let mut cmd = sealpush(&work, ["unpack", archive.to_str().unwrap(), "dest"]).cmd;
        let child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let started = std::time::Instant::now();
        while listing(&work).is_empty() {
            assert!(started.elapsed().as_secs() < 20, "no temp dir appeared");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(130), "SIG{name}: {err}");
        assert!(err.contains("interrupted"), "SIG{name}: {err}");
        assert_eq!(listing(&work), Vec::<PathBuf>::new(), "SIG{name}");
    }
}

/// Names the file system would refuse are refused by rule, naming the entry (not a raw I/O
/// error naming the temp path), and a hard link to a directory says so.
#[test]
fn unwritable_names_and_links_to_directories_are_refused_by_rule() {
    use tar::EntryType as T;
    let long_name: &'static [u8] = Box::leak(vec![b'n'; 300].into_boxed_slice());
    let gnu_long = |kind, name: &[u8]| Raw {
        data: Box::leak([name, b"\0"].concat().into_boxed_slice()),
        ..raw(b"././@LongLink", kind)
    };
    let cases: Vec<(Vec<Raw>, &str, &str)> = vec![
        (
            vec![
                gnu_long(T::GNULongName, long_name),
                Raw {
                    data: b"x",
                    ..raw(b"short", T::Regular)
                },
            ],
            "nnnnnnnnnn",
            "a component is longer than 255 bytes",
        ),
        (
            vec![
                gnu_long(T::GNULongLink, b"a\0b"),
                Raw {
                    link: b"x",
                    ..raw(b"l", T::Symlink)
                },
            ],
            "\"l\"",
            "symlink target contains a NUL byte",
        ),
        (
            vec![
                raw(b"d/", T::Directory),
                Raw {
                    link: b"d/",
                    ..raw(b"h", T::Link)
                },
            ],
            "\"h\"",
            "hard link target \"d/\" is a directory",
        ),
        (
            vec![
                raw(b"d/", T::Directory),
                Raw {
                    link: b"d",
                    ..raw(b"h", T::Link)
                },
            ],
            "\"h\"",
            "hard link target \"d\" is a directory",
        ),
    ];
    assert_each_rejected(cases);
}

/// `unpack FILE` and `verify FILE` of an archive outside the store read that file and create
/// nothing else: no default store directories under $HOME. The summary says what was checked
/// (a plain archive has no separate manifest to be verified against). A DEST name near the
/// 255-byte limit still leaves room for the temp dir's name.
#[test]
fn plain_archives_touch_no_store_and_say_what_was_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    fs::create_dir(&t).unwrap();
    fs::write(t.join("f"), "x").unwrap();
    let archive = tmp.path().join("t.tar.zst");
    sh(&t, &format!("tar --zstd -cf '{}' f", archive.display()));
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let run = |args: &[&str]| {
        sealpush(tmp.path(), args)
            .env("HOME", &home)
            .env_remove_xdg()
            .ok()
    };
    let long = "n".repeat(250);
    let out = run(&["unpack", archive.to_str().unwrap(), &long]);
    assert!(tmp.path().join(&long).join("f").is_file());
    let note = stderr(&out);
    assert!(!note.contains("verified against the manifest"), "{note}");
    assert!(note.contains("checked"), "{note}");
    let out = run(&["verify", archive.to_str().unwrap()]);
    assert!(
        !stderr(&out).contains("against the manifest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listing(&home), Vec::<PathBuf>::new(), "store dirs created");
    assert!(!listing(tmp.path())
        .iter()
        .any(|p| p.to_string_lossy().contains("sealpush-unpack")));
}

/// `pack --out FILE` gives FILE the mode any new file gets (0666 less the umask), as `touch`
/// does under the same umask, not a temp file's private 0600.
#[test]
fn pack_out_file_gets_the_usual_mode() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    let bin = crate::support::bin();
    let modes = sh(
        tmp.path(),
        &format!(
            "umask 027; '{}' -q pack t --store s --out o.tar.zst >/dev/null && touch ref && stat -c %a o.tar.zst ref",
            bin.display()
        ),
    );
    let modes = String::from_utf8(modes).unwrap();
    let lines: Vec<&str> = modes.lines().collect();
    assert_eq!(lines, ["640", "640"], "{modes}");
}

/// A store whose `tmp/` or `artifacts/` is a symlink is refused by every command before anything
/// is read or removed through the link (gc used to delete old files in the link's target). The
/// store root itself may be reached through a symlink: that is the user's choice of place.
#[test]
fn a_symlinked_tmp_or_artifacts_dir_is_refused_and_nothing_outside_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    sealpush(tmp.path(), ["pack", "t", "--store", "s"]).ok();
    let outside = tmp.path().join("outside");
    fs::create_dir_all(outside.join("project")).unwrap();
    fs::write(outside.join("old-report.txt"), "precious").unwrap();
    sh(
        tmp.path(),
        "touch -d 2020-01-01 outside/old-report.txt outside/project",
    );
    let want = [PathBuf::from("old-report.txt"), PathBuf::from("project")];
    for sub in ["tmp", "artifacts"] {
        let link = tmp.path().join("s").join(sub);
        let real = tmp.path().join(format!("real-{sub}"));
        fs::rename(&link, &real).unwrap();
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let commands: [&[&str]; 5] = [
            &["store", "gc"],
            &["store", "gc", "--dry-run"],
            &["store", "list"],
            &["store", "verify"],
            &["pack", "t"],
        ];
        for args in commands {
            let out = sealpush(tmp.path(), args.iter().chain(&["--store", "s"])).expect_code(2);
            let err = stderr(&out);
            assert!(
                err.contains(&format!("s/{sub}: is a symlink")),
                "{args:?}: {err}"
            );
            assert_eq!(listing(&outside), want, "{args:?} acted through the link");
        }
        fs::remove_file(&link).unwrap();
        fs::rename(&real, &link).unwrap();
    }
    std::os::unix::fs::symlink(tmp.path().join("s"), tmp.path().join("via")).unwrap();
    sealpush(tmp.path(), ["store", "verify", "--store", "via"]).ok();
    let gc = sealpush(tmp.path(), ["store", "gc", "--store", "via"]).ok();
    assert_eq!(stdout(&gc), "");
}

/// `sealpush ARGS` under a 1 GiB address-space limit, killed after 20 s: a command that reads
/// an endless device or blocks on a fifo fails the test instead of hanging it or eating memory.
fn sealpush_bounded(cwd: &Path, args: &[&str]) -> Output {
    TestCommand::new("bash", cwd)
        .cmd_args([
            "-c",
            "ulimit -v 1048576; exec timeout -s KILL 20 \"$@\"",
            "bash",
        ])
        .cmd_arg(crate::support::bin())
        .cmd_args(args)
        .output()
}

/// Parts of an artifact that are fifos, links to /dev/zero or links out of the store make the
/// artifact broken: list, verify and gc neither block nor read them, and gc removes the links,
/// never their targets.
#[test]
fn planted_fifos_and_links_in_an_artifact_are_broken_and_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    sealpush(tmp.path(), ["pack", "t", "--store", "s"]).ok();
    let arts = tmp.path().join("s/artifacts");
    let id = fs::read_dir(&arts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let id = id.to_str().unwrap().to_string();
    let outside = tmp.path().join("outside.tar.zst");
    fs::copy(arts.join(&id).join("archive.tar.zst"), &outside).unwrap();
    let plants = [
        ("zero-manifest", "ln -s /dev/zero manifest.txt"),
        ("zero-meta", "ln -s /dev/zero meta.json"),
        ("fifo-meta", "mkfifo meta.json"),
        ("fifo-manifest", "mkfifo manifest.txt"),
        ("fifo-archive", "mkfifo archive.tar.zst"),
        (
            "linked-archive",
            &format!("ln -s '{}' archive.tar.zst", outside.display()),
        ),
    ];
    for (suffix, how) in plants {
        let d = arts.join(format!("{id}.{suffix}"));
        sh(
            tmp.path(),
            &format!("cp -a '{}' '{}'", arts.join(&id).display(), d.display()),
        );
        let part = how.rsplit(' ').next().unwrap();
        fs::remove_file(d.join(part)).unwrap();
        sh(&d, how);
    }
    let list = sealpush_bounded(tmp.path(), &["store", "list", "--store", "s"]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    assert_eq!(stdout(&list).lines().count(), 1, "{}", stdout(&list));
    for (suffix, _) in plants {
        assert!(
            stderr(&list).contains(&format!("{id}.{suffix}")),
            "{}",
            stderr(&list)
        );
    }
    // By name: the reference is looked up in every meta.json.
    let show = sealpush_bounded(tmp.path(), &["store", "show", "t", "--store", "s"]);
    assert_eq!(show.status.code(), Some(0), "{}", stderr(&show));
    let verify = sealpush_bounded(tmp.path(), &["store", "verify", "--store", "s"]);
    assert_eq!(verify.status.code(), Some(1), "{}", stderr(&verify));
    assert!(
        stdout(&verify).contains(&format!("ok\t{id}\n")),
        "{}",
        stdout(&verify)
    );
    let gc = sealpush_bounded(tmp.path(), &["store", "gc", "--store", "s"]);
    assert_eq!(gc.status.code(), Some(0), "{}", stderr(&gc));
    assert_eq!(listing(&arts).len(), 4, "{:?}", listing(&arts));
    assert!(outside.is_file());
    assert!(Path::new("/dev/zero").exists());
    sealpush(tmp.path(), ["store", "verify", "--store", "s"]).ok();
}

/// JSON strings cannot hold a path that is not UTF-8: `--json` refuses such a store or `--out`
/// path with a clear error, before anything is stored (it used to panic after the pack).
#[test]
fn json_output_refuses_paths_that_are_not_utf8_before_packing() {
    use std::ffi::OsStr;
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    let bad = OsStr::from_bytes(b"st\xffore");
    let out = sealpush(
        tmp.path(),
        [
            "pack".as_ref(),
            "t".as_ref(),
            "--json".as_ref(),
            "--store".as_ref(),
            bad,
        ],
    )
    .expect_code(2);
    assert!(stderr(&out).contains("not UTF-8"), "{}", stderr(&out));
    assert!(
        !tmp.path().join(bad).join("artifacts").exists()
            || listing(&tmp.path().join(bad).join("artifacts")).is_empty()
    );
    let bad_out = OsStr::from_bytes(b"o\xff.tar.zst");
    let out = sealpush(
        tmp.path(),
        [
            "pack".as_ref(),
            "t".as_ref(),
            "--json".as_ref(),
            "--store".as_ref(),
            "ok".as_ref(),
            "--out".as_ref(),
            bad_out,
        ],
    )
    .expect_code(2);
    assert!(stderr(&out).contains("--out"), "{}", stderr(&out));
    assert!(!tmp.path().join(bad_out).exists());
    assert!(
        !tmp.path().join("ok/artifacts").exists()
            || listing(&tmp.path().join("ok/artifacts")).is_empty()
    );
    // Without --json the same store works, and then list/show --json refuse it clearly.
    sealpush(
        tmp.path(),
        ["pack".as_ref(), "t".as_ref(), "--store".as_ref(), bad],
    )
    .ok();
    for args in [
        &["store", "list", "--json"][..],
        &["store", "show", "t", "--json"],
    ] {
        let out = sealpush(
            tmp.path(),
            args.iter()
                .map(OsStr::new)
                .chain([OsStr::new("--store"), bad]),
        )
        .expect_code(2);
        assert!(stderr(&out).contains("not UTF-8"), "{}", stderr(&out));
    }
}

/// A stored archive damaged in place (same size) is not "already stored": packing the tree
/// again replaces it, and `--out` gets exactly the bytes whose sha256 is printed (checked with
/// sha256sum).
#[test]
fn packing_again_replaces_a_damaged_stored_archive_and_out_gets_the_printed_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    sh(tmp.path(), "seq 1 30000 > t/f");
    sealpush(
        tmp.path(),
        ["pack", "t", "--store", "s", "--out", "good.tar.zst"],
    )
    .ok();
    let arts = tmp.path().join("s/artifacts");
    let dir = fs::read_dir(&arts).unwrap().next().unwrap().unwrap().path();
    let archive = dir.join("archive.tar.zst");
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 4].copy_from_slice(&[0, 0, 0, 0]);
    fs::write(&archive, &bytes).unwrap();
    let out = sealpush(
        tmp.path(),
        ["pack", "t", "--store", "s", "--out", "out.tar.zst"],
    )
    .ok();
    let printed = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("archive-sha256: ").map(String::from))
        .unwrap();
    let actual = String::from_utf8(sh(tmp.path(), "sha256sum < out.tar.zst")).unwrap();
    assert_eq!(
        actual[..64],
        printed,
        "--out does not hold the printed bytes"
    );
    assert!(
        fs::read(tmp.path().join("out.tar.zst")).unwrap()
            == fs::read(tmp.path().join("good.tar.zst")).unwrap()
    );
    assert!(fs::read(&archive).unwrap() == fs::read(tmp.path().join("good.tar.zst")).unwrap());
    sealpush(tmp.path(), ["store", "verify", "--store", "s"]).ok();
}

/// `store verify` checks every field of meta.json that follows from the archive, the manifest
/// and the id, and the manifest's recipe line against the recipe computed from its entries
/// (independently: the real pipeline gives the expected digest). `tool_version` is
/// informational. Where the recipe cannot be computed from the entries, verify says so.
#[test]
fn store_verify_checks_every_derivable_meta_field_and_the_recipe_line() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "hi\n").unwrap();
    fs::write(tmp.path().join("t/g"), "there\n").unwrap();
    sealpush(tmp.path(), ["pack", "t", "--store", "s"]).ok();
    let dir = fs::read_dir(tmp.path().join("s/artifacts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (meta_path, man_path) = (dir.join("meta.json"), dir.join("manifest.txt"));
    let meta0: serde_json::Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    let man0 = fs::read(&man_path).unwrap();
    let recipe = real_recipe(tmp.path(), "t");
    assert!(String::from_utf8_lossy(&man0).contains(&format!("recipe {recipe} C\n")));
    let other = "1".repeat(64);
    let verify = |edit: &dyn Fn(&mut serde_json::Value, &mut String), expect: i32| {
        let mut meta = meta0.clone();
        let mut man = String::from_utf8(man0.clone()).unwrap();
        edit(&mut meta, &mut man);
        fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
        fs::write(&man_path, &man).unwrap();
        let out = sealpush(tmp.path(), ["store", "verify", "--store", "s"]).expect_code(expect);
        format!("{}{}", stdout(&out), stderr(&out))
    };
    type Edit<'a> = Box<dyn Fn(&mut serde_json::Value, &mut String) + 'a>;
    let cases: Vec<(&str, Edit<'_>)> = vec![
        ("files", Box::new(|m, _| m["files"] = 999.into())),
        (
            "unpacked",
            Box::new(|m, _| m["unpacked_bytes"] = 1_000_000_000_000_000u64.into()),
        ),
        (
            "recipe",
            Box::new(|m, _| m["recipe_digest"] = "0".repeat(64).into()),
        ),
        (
            "recipe",
            Box::new(|m, _| m["recipe_locale"] = "en_US.UTF-8".into()),
        ),
        (
            "recipe",
            Box::new(|m, _| m["recipe_digest"] = serde_json::Value::Null),
        ),
        ("id", Box::new(|m, _| m["level"] = 19.into())),
        ("id", Box::new(|m, _| m["name"] = "other".into())),
        ("id", Box::new(|m, _| m["mtime"] = 5.into())),
        (
            "recipe",
            Box::new(|_, man| *man = man.replace(&recipe, &other)),
        ),
        // Both records agree with each other, but not with the entries.
        (
            "recipe",
            Box::new(|m, man| {
                *man = man.replace(&recipe, &other);
                m["recipe_digest"] = other.clone().into();
            }),
        ),
    ];
    for (what, edit) in &cases {
        let out = verify(edit.as_ref(), 1);
        assert!(
            out.contains("FAILED") && out.contains(what),
            "{what}: {out}"
        );
    }
    let out = verify(&|m, _| m["tool_version"] = "sealpush 0.1.0".into(), 0);
    assert!(out.contains("ok\t"), "{out}");

    // An artifact named other than its directory (--name) still verifies; one whose recipe
    // cannot follow from its entries (a name with a space) verifies and says what it skipped.
    fs::write(&meta_path, serde_json::to_vec_pretty(&meta0).unwrap()).unwrap();
    fs::write(&man_path, &man0).unwrap();
    sealpush(
        tmp.path(),
        ["pack", "t", "--store", "s", "--name", "renamed"],
    )
    .ok();
    fs::write(tmp.path().join("t/a b"), "spaced\n").unwrap();
    sealpush(tmp.path(), ["pack", "t", "--store", "s"]).ok();
    let out = sealpush(tmp.path(), ["store", "verify", "--store", "s"]).ok();
    assert_eq!(stdout(&out).matches("ok\t").count(), 3, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("recipe digest not re-derived"),
        "{}",
        stderr(&out)
    );
}

/// A ustar header holds an mtime of at most 11 octal digits (8589934591, 2242-03-16): a larger
/// SOURCE_DATE_EPOCH is refused rather than clamped in the archive while the id records it.
#[test]
fn a_source_date_epoch_past_the_ustar_limit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    for too_big in ["8589934592", "18446744073709551615"] {
        let out = sealpush(tmp.path(), ["pack", "t", "--store", "s"])
            .env("SOURCE_DATE_EPOCH", too_big)
            .expect_code(2);
        assert!(stderr(&out).contains("8589934591"), "{}", stderr(&out));
        assert!(
            !tmp.path().join("s/artifacts").exists()
                || listing(&tmp.path().join("s/artifacts")).is_empty()
        );
    }
    sealpush(
        tmp.path(),
        ["pack", "t", "--store", "s", "--out", "o.tar.zst"],
    )
    .env("SOURCE_DATE_EPOCH", "8589934591")
    .ok();
    let text = String::from_utf8(sh(tmp.path(), "TZ=UTC tar --full-time -tvf o.tar.zst")).unwrap();
    assert!(text.contains("2242-03-16 12:56:31"), "{text}");
}

/// A store inside the tree being packed would pack the pack's own temp file: refused.
#[test]
fn packing_a_tree_that_contains_the_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    let out = sealpush(tmp.path(), ["pack", "t", "--store", "t/.store"]).expect_code(2);
    assert!(stderr(&out).contains("inside the tree"), "{}", stderr(&out));
    // A store beside the tree is fine.
    sealpush(tmp.path(), ["pack", "t", "--store", "s"]).ok();
}

/// `sh -c 'ulimit -n N; exec sealpush ARGS'` in `cwd`: a command that runs out of file
/// descriptors part-way (EMFILE works as root, where permission bits would not stop it).
fn sealpush_with_fd_limit(cwd: &Path, limit: u32, args: &[&str]) -> Output {
    TestCommand::new("sh", cwd)
        .cmd_args(["-c", &format!("ulimit -n {limit}; exec \"$@\""), "sh"])
        .cmd_arg(crate::support::bin())
        .cmd_args(args)
        .output()
}

/// An error that says nothing about an artifact (here EMFILE: 4 descriptors leave one for gc
/// after stdin, stdout and stderr) is not damage: gc stops with exit 2 naming the path and
/// removes nothing. It used to call every artifact broken and delete them all, and likewise to
/// treat a temp dir whose entries it could not read as old.
#[test]
fn gc_stops_at_an_error_that_is_not_damage_and_removes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    sealpush(tmp.path(), ["pack", "t", "--store", "s"]).ok();
    let arts = tmp.path().join("s/artifacts");
    let before = listing(&arts);
    assert_eq!(before.len(), 4, "{before:?}");
    for args in [
        &["store", "gc", "--store", "s"][..],
        &["store", "gc", "--dry-run", "--store", "s"],
    ] {
        let out = sealpush_with_fd_limit(tmp.path(), 4, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("meta.json: Too many open files"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("broken"), "{args:?}: {err}");
        assert_eq!(stdout(&out), "", "{args:?}");
        assert_eq!(listing(&arts), before, "{args:?}");
    }
    // A pack in progress: its temp dir is old, the archive being written in it is new.
    let inflight = tmp.path().join("s/tmp/add-inflight");
    fs::create_dir(&inflight).unwrap();
    fs::write(inflight.join("archive.tar.zst"), "partial").unwrap();
    sh(tmp.path(), "touch -d 2020-01-01 s/tmp/add-inflight");
    let out = sealpush_with_fd_limit(tmp.path(), 4, &["store", "gc", "--store", "s"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("add-inflight"), "{}", stderr(&out));
    assert!(inflight.join("archive.tar.zst").is_file());
    // Without the limit, everything is healthy or young: nothing to remove.
    let gc = sealpush(tmp.path(), ["store", "gc", "--store", "s"]).ok();
    assert_eq!(stdout(&gc), "");
    assert_eq!(listing(&arts), before);
}

/// `--out` at a fifo, a device, a directory or a symlink is refused before anything is packed,
/// and the thing at the path is left as it was (the temp file's rename used to replace any of
/// them with a regular file). A regular file is still replaced.
#[test]
fn pack_out_refuses_what_is_not_a_regular_file_and_leaves_it() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    fs::write(tmp.path().join("kept"), "precious").unwrap();
    sh(
        tmp.path(),
        "mkfifo fifo && ln -s kept link && ln -s missing dangling && mkdir dir",
    );
    // /dev/full's numbers, made here: a test must never risk the real one.
    let device = sh(
        tmp.path(),
        "mknod full c 1 7 2>/dev/null && echo yes || true",
    ) == b"yes\n";
    let mut cases = vec![
        ("fifo", "is a fifo"),
        ("link", "is a symlink"),
        ("dangling", "is a symlink"),
        ("dir", "is a directory"),
    ];
    if device {
        cases.push(("full", "is a device"));
    }
    for (name, why) in cases {
        let out = sealpush(tmp.path(), ["pack", "t", "--store", "s", "--out", name]).expect_code(2);
        let err = stderr(&out);
        assert!(err.contains(&format!("--out {name}: {why}")), "{err}");
        assert!(
            !tmp.path().join("s/artifacts").exists()
                || listing(&tmp.path().join("s/artifacts")).is_empty(),
            "{name}: packed before refusing"
        );
    }
    let t = |n: &str| {
        fs::symlink_metadata(tmp.path().join(n))
            .unwrap()
            .file_type()
    };
    assert!(t("fifo").is_fifo());
    assert!(t("link").is_symlink() && t("dangling").is_symlink() && t("dir").is_dir());
    assert!(!device || t("full").is_char_device());
    assert_eq!(fs::read(tmp.path().join("kept")).unwrap(), b"precious");
    assert!(!tmp.path().join("missing").exists());
    // A regular file is replaced by the archive.
    sealpush(tmp.path(), ["pack", "t", "--store", "s", "--out", "kept"]).ok();
    assert!(t("kept").is_file());
    assert_eq!(
        &fs::read(tmp.path().join("kept")).unwrap()[..4],
        [0x28, 0xb5, 0x2f, 0xfd]
    );
}

/// `--out` in a directory that does not exist is refused before packing, naming the directory
/// (it used to pack, store, then fail naming a temp file the user never chose).
#[test]
fn pack_out_into_a_missing_directory_is_refused_before_packing() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    fs::write(tmp.path().join("file"), "x").unwrap();
    for (out, dir, why) in [
        ("nodir/o.tar.zst", "nodir", "does not exist"),
        ("file/o.tar.zst", "file", "is not a directory"),
        // A trailing slash names a directory: the rename failed only after the pack.
        ("new.tar.zst/", "new.tar.zst/:", "ends with `/`"),
        ("new.tar.zst/.", "new.tar.zst/.:", "ends with `/`"),
    ] {
        let o = sealpush(tmp.path(), ["pack", "t", "--store", "s", "--out", out]).expect_code(2);
        let err = stderr(&o);
        assert!(err.contains(&format!("--out {out}: ")), "{err}");
        assert!(err.contains(&format!("{dir} {why}")), "{err}");
        assert!(!err.contains(".sealpush-out"), "{err}");
        assert_eq!(stdout(&o), "");
        let stored = tmp.path().join("s/artifacts");
        assert!(
            !stored.exists() || listing(&stored).is_empty(),
            "{out}: packed first"
        );
    }
}

/// When writing `--out` fails after the pack (here: its directory is on a read-only mount), the
/// error names the `--out` path and its directory, not the temp file's random name.
#[test]
fn a_failed_out_write_names_the_out_path_not_the_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    let Some(_ro) = crate::support::Mounted::tmpfs(&tmp.path().join("ro"), "1m") else {
        return;
    };
    sh(tmp.path(), "mount -o remount,ro ro");
    let out = sealpush(
        tmp.path(),
        ["pack", "t", "--store", "s", "--out", "ro/o.tar.zst"],
    )
    .expect_code(2);
    let err = stderr(&out);
    assert!(
        err.contains("writing ro/o.tar.zst: creating a temp file in ro: Read-only"),
        "{err}"
    );
    assert!(!err.contains(".sealpush-out"), "{err}");
}

/// Ctrl-C or SIGTERM during `pack`: the pack stops at its next entry or chunk, removes its temp
/// dir in the store (and, during the copy to `--out`, the temp file beside it), says
/// "interrupted" and exits 130; `--out` is never written. SIGINT is sent once the store's temp
/// dir exists, SIGTERM once the `--out` temp file does; 192 MiB of incompressible bytes keep
/// both steps going far longer than the polling takes.
#[test]
fn an_interrupted_pack_leaves_no_temp_files_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    fs::create_dir(&tree).unwrap();
    {
        let mut f = std::io::BufWriter::new(fs::File::create(tree.join("noise")).unwrap());
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..192 {
            for w in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
        f.flush().unwrap();
    }
    let has = |dir: &Path, prefix: &str| {
        fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    };
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    for (signal, name, dir, prefix, said) in [
        (
            libc::SIGINT,
            "INT",
            work.join("s/tmp"),
            "add-",
            "interrupted; the partial archive has been removed; nothing was stored",
        ),
        (
            libc::SIGTERM,
            "TERM",
            work.join("out"),
            ".sealpush-out-",
            "writing out/t.tar.zst: interrupted",
        ),
    ] {
        fs::create_dir_all(work.join("out")).unwrap();
        let mut cmd = sealpush(
            &work,
            [
                "pack".as_ref(),
                tree.as_os_str(),
                "--store".as_ref(),
                "s".as_ref(),
                "--level".as_ref(),
                "1".as_ref(),
                "--out".as_ref(),
                "out/t.tar.zst".as_ref(),
            ],
        )
        .cmd;
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !has(&dir, prefix) {
            assert!(
                started.elapsed().as_secs() < 60,
                "SIG{name}: no {prefix} appeared"
            );
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(130), "SIG{name}: {err}");
        assert!(err.contains(said), "SIG{name}: {err}");
        assert_eq!(stdout(&out), "", "SIG{name}");
        assert_eq!(
            listing(&work.join("s/tmp")),
            Vec::<PathBuf>::new(),
            "SIG{name}"
        );
        assert_eq!(
            listing(&work.join("out")),
            Vec::<PathBuf>::new(),
            "SIG{name}"
        );
    }
}

/// `manifest --json` refuses a name or symlink target that is not UTF-8, as every `--json`
/// does, naming it with its bytes escaped; it used to print `f\xffg` and `f\xfeg` both as
/// `f\u{fffd}g`, two files as one. The text manifest still carries them byte for byte.
#[test]
fn manifest_json_refuses_names_that_are_not_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    for (tree, script, named) in [
        (
            "names",
            "printf 1 > $'f\\xffg' && printf 2 > $'f\\xfeg'",
            r#""f\xFEg""#,
        ),
        ("target", "ln -s $'to\\xff' link", r#""to\xFF""#),
    ] {
        let dir = tmp.path().join(tree);
        fs::create_dir(&dir).unwrap();
        sh(&dir, script);
        let out = sealpush(tmp.path(), ["manifest", "--json", tree]).expect_code(2);
        let err = stderr(&out);
        assert!(err.contains("not UTF-8"), "{err}");
        assert!(err.contains(named), "{err}");
        assert_eq!(stdout(&out), "", "{tree}");
        let text = sealpush(tmp.path(), ["manifest", tree]).ok().stdout;
        let want: &[u8] = if tree == "names" {
            b"f\xfeg"
        } else {
            b"to\xff"
        };
        assert!(text.windows(want.len()).any(|w| w == want), "{tree}");
    }
}

/// A level out of range says which levels the format takes (zstd's documented 1 to 22, gzip's
/// 0 to 9), before anything is packed.
#[test]
fn a_level_out_of_range_names_the_valid_range() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    for (format, level, said) in [
        (
            "tar.zst",
            "0",
            "level 0 is out of range for tar.zst: use 1 to 22",
        ),
        (
            "tar.zst",
            "23",
            "level 23 is out of range for tar.zst: use 1 to 22",
        ),
        (
            "tar.gz",
            "10",
            "level 10 is out of range for tar.gz: use 0 to 9",
        ),
        (
            "tar.gz",
            "-1",
            "level -1 is out of range for tar.gz: use 0 to 9",
        ),
    ] {
        let args = ["pack", "t", "--store", "s", "--format", format];
        let out = sealpush(tmp.path(), args)
            .cmd_arg(format!("--level={level}"))
            .expect_code(2);
        assert!(stderr(&out).contains(said), "{}", stderr(&out));
        assert_eq!(
            listing(&tmp.path().join("s/artifacts")),
            Vec::<PathBuf>::new()
        );
    }
}

/// The deploy streams an archive without hashing it when the file has the stamp preflight
/// recorded (`sealpush::stamp`). The stamp must hold from the open to after the last byte: a
/// change while the file is read (here a chmod, which moves only the ctime) is an error, and a
/// file without that stamp is hashed, giving the digest `pack` computed.
#[test]
fn streaming_trusts_a_stamp_only_while_the_file_keeps_it() {
    use sealpush::pack::ArchiveRead;
    use sealpush::stamp::FileStamp;
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    build_tree(&t, "022", false, "@5", None);
    let archive = tmp.path().join("t.tar.zst");
    let packed = pack::pack_to_file(
        &t,
        &archive,
        &PackOptions::default(),
        &sealpush::progress::NoProgress,
    )
    .unwrap();
    let m = &packed.manifest;
    let stamp = FileStamp::of(&fs::metadata(&archive).unwrap());
    let read = |unchanged: Option<&FileStamp>, touch: bool| {
        let mut first = true;
        pack::read_checked_streaming(&archive, m, unchanged, |_, _| {
            if touch && std::mem::take(&mut first) {
                // Past any timestamp tick the creation fell in, so the ctime must move.
                std::thread::sleep(std::time::Duration::from_millis(20));
                fs::set_permissions(&archive, fs::Permissions::from_mode(0o600)).unwrap();
            }
            Ok(())
        })
        .map(|(got, how)| {
            assert_eq!(got.identity(), m.identity());
            how
        })
    };
    assert_eq!(
        read(Some(&stamp), false).unwrap(),
        ArchiveRead::Unchanged(packed.archive_size)
    );
    let other = FileStamp {
        ctime_nsec: (stamp.ctime_nsec + 1) % 1_000_000_000,
        ..stamp
    };
    assert_eq!(
        read(Some(&other), false).unwrap(),
        ArchiveRead::Hashed(packed.archive_sha256, packed.archive_size)
    );
    assert_eq!(
        read(None, false).unwrap(),
        ArchiveRead::Hashed(packed.archive_sha256, packed.archive_size)
    );
    let e = read(Some(&stamp), true).unwrap_err();
    assert!(
        matches!(e, pack::UnpackError::Changed { .. }),
        "{e}: the stamp moved while the archive was read"
    );
    assert!(e.to_string().contains("changed while it was read"), "{e}");
}

/// `--out` whose name says the other format (or an uncompressed tar) is refused before
/// packing: `pack t --out site.tar.gz` wrote zstd bytes under a `.tar.gz` name, which `tar -xzf`
/// then rejects on the host. A name that says nothing about the format is still written.
#[test]
fn pack_out_named_for_another_format_is_refused_before_packing() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    for (format, out, said) in [
        ("tar.zst", "o.tar.gz", "--format tar.gz"),
        ("tar.zst", "o.TGZ", "--format tar.gz"),
        ("tar.gz", "o.tar.zst", "--format tar.zst"),
        ("tar.gz", "o.tzst", "--format tar.zst"),
        ("tar.zst", "o.tar", "name the file *.tar.zst"),
    ] {
        let args = [
            "pack", "t", "--store", "s", "--format", format, "--out", out,
        ];
        let o = sealpush(tmp.path(), args).expect_code(2);
        let err = stderr(&o);
        assert!(err.contains(&format!("--out {out}: ")), "{err}");
        assert!(err.contains(said), "{err}");
        assert!(!tmp.path().join(out).exists());
        assert!(!tmp.path().join("s").exists(), "nothing packed: {err}");
    }
    for (format, out, magic) in [
        ("tar.zst", "o.tar.zst", &[0x28, 0xb5, 0x2f, 0xfd][..]),
        ("tar.gz", "o.tgz", &[0x1f, 0x8b][..]),
        ("tar.zst", "o.bin", &[0x28, 0xb5, 0x2f, 0xfd][..]),
    ] {
        let args = [
            "-q", "pack", "t", "--store", "s", "--format", format, "--out", out,
        ];
        sealpush(tmp.path(), args).ok();
        assert!(fs::read(tmp.path().join(out)).unwrap().starts_with(magic));
    }
}

/// DEST under a regular file (`unpack a file/x`) names the file as the problem, as a missing
/// parent is named; it blamed DEST itself ("file/x: Not a directory").
#[test]
fn unpack_under_a_file_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("t")).unwrap();
    fs::write(tmp.path().join("t/f"), "x").unwrap();
    fs::write(tmp.path().join("file"), "kept").unwrap();
    sealpush(tmp.path(), ["-q", "pack", "t", "--store", "s"]).ok();
    let out = sealpush(tmp.path(), ["unpack", "t", "file/x", "--store", "s"]).expect_code(2);
    let err = stderr(&out);
    assert!(err.contains(": file: Not a directory"), "{err}");
    assert!(!err.contains("file/x: Not a directory"), "{err}");
    // Deeper, the file is still what is named: `file/x` does not exist to be wrong.
    let out = sealpush(tmp.path(), ["unpack", "t", "file/x/y/d", "--store", "s"]).expect_code(2);
    let err = stderr(&out);
    assert!(err.contains(": file: Not a directory"), "{err}");
    assert_eq!(fs::read(tmp.path().join("file")).unwrap(), b"kept");
}
