//! Differential tests: `sealpush hash` against the real GNU pipeline
//! (`find PATH... -type f | sort | xargs sha256sum [| sha256sum]`), byte for byte, in `C`,
//! `C.UTF-8` and `en_US.UTF-8`, on adversarial trees built here. Every expected value comes from
//! the GNU tools; none from sealpush.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::{in_ci, TestCommand};

const C_LOCALES: [&str; 2] = ["C", "C.UTF-8"];
const EN_US: &str = "en_US.UTF-8";

/// The locales to compare in: en_US.UTF-8 only when generated (in CI it must be: an
/// ungenerated locale silently sorts as C in both tools and the test would prove nothing).
fn locales() -> Vec<&'static str> {
    let out = Command::new("locale")
        .arg("-a")
        .output()
        .expect("locale -a");
    let have = String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.eq_ignore_ascii_case("en_US.utf8") || l == "en_US.UTF-8");
    if !have {
        assert!(
            !in_ci(),
            "en_US.UTF-8 is not generated (`locale -a`); .ci/run must run locale-gen"
        );
        eprintln!("note: en_US.UTF-8 not generated here; comparing in C and C.UTF-8 only");
        return C_LOCALES.to_vec();
    }
    let mut v = C_LOCALES.to_vec();
    v.push(EN_US);
    v
}

/// A tree built from code in a temp dir (removed on drop).
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            dir: tempfile::Builder::new()
                .prefix("sealpush-recipe-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn abs(&self, rel: &[u8]) -> std::path::PathBuf {
        self.root().join(OsStr::from_bytes(rel))
    }

    fn file(&self, rel: &[u8], content: &[u8]) -> &Tree {
        let p = self.abs(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("writing {p:?}: {e}"));
        self
    }

    fn dir(&self, rel: &[u8]) -> &Tree {
        std::fs::create_dir_all(self.abs(rel)).unwrap();
        self
    }

    fn symlink(&self, target: &[u8], rel: &[u8]) -> &Tree {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), self.abs(rel)).unwrap();
        self
    }

    fn fifo(&self, rel: &[u8]) -> &Tree {
        let c = CString::new(self.abs(rel).as_os_str().as_bytes()).unwrap();
        // SAFETY: c is NUL-terminated.
        assert_eq!(
            unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
            0,
            "mkfifo {rel:?}"
        );
        self
    }

    fn listing(&self) -> String {
        let out = Command::new("find")
            .arg(".")
            .current_dir(self.root())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The real pipeline's stdout (the lines) and stderr.
fn pipeline(cwd: &Path, locale: &str, args: &[&[u8]]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"find "$@" -type f | sort | xargs sha256sum"#)
        .arg("bash")
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .current_dir(cwd)
        .env("LC_ALL", locale)
        .env_remove("POSIXLY_CORRECT")
        .stdin(Stdio::null());
    cmd.output().expect("bash")
}

/// The real final `sha256sum` of `lines`.
fn gnu_sha256sum(lines: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(lines).unwrap();
    child.wait_with_output().unwrap().stdout
}

fn sealpush(cwd: &Path, locale: &str, args: &[&[u8]], extra: &[&str]) -> TestCommand {
    let mut all: Vec<&OsStr> = vec![OsStr::new("hash")];
    all.extend(extra.iter().map(OsStr::new));
    all.push(OsStr::new("--"));
    all.extend(args.iter().map(|a| OsStr::from_bytes(a)));
    TestCommand::sealpush(cwd, all).env("LC_ALL", locale)
}

fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string().replace("\\n", "\\n\n")
}

/// How strictly to compare in en_US.UTF-8.
#[derive(Clone, Copy, PartialEq)]
enum Ties {
    /// No strcoll ties in this tree: exact bytes in every locale.
    None,
    /// The tree has strcoll ties in en_US (S4): compare lines as a multiset there.
    InEnUs,
}

/// Asserts `sealpush hash --lines` and `sealpush hash` equal the pipeline in every locale.
fn same_as_recipe(tree: &Tree, cwd: &Path, args: &[&[u8]], ties: Ties) {
    for locale in locales() {
        let want = pipeline(cwd, locale, args);
        let mut cmd = sealpush(cwd, locale, args, &["--lines"]);
        let got = cmd.ok();
        let exact = !(ties == Ties::InEnUs && locale == EN_US);
        let (w, g) = if exact {
            (want.stdout.clone(), got.stdout.clone())
        } else {
            let sorted = |b: &[u8]| {
                let mut v: Vec<&[u8]> = b.split(|&c| c == b'\n').collect();
                v.sort();
                v.join(&b'\n')
            };
            (sorted(&want.stdout), sorted(&got.stdout))
        };
        if w != g {
            panic!(
                "{}\nlocale {locale}, args {:?}\n--- recipe lines\n{}\n--- sealpush lines\n{}\n--- recipe stderr\n{}\n--- tree\n{}",
                cmd.report(&got, "sealpush --lines differs from the recipe"),
                args.iter().map(|a| esc(a)).collect::<Vec<_>>(),
                esc(&want.stdout),
                esc(&got.stdout),
                String::from_utf8_lossy(&want.stderr),
                tree.listing()
            );
        }
        if exact {
            let want_digest = gnu_sha256sum(&want.stdout);
            let mut cmd = sealpush(cwd, locale, args, &[]);
            let got = cmd.ok();
            assert_eq!(
                String::from_utf8_lossy(&got.stdout),
                String::from_utf8_lossy(&want_digest),
                "{}",
                cmd.report(&got, &format!("digest differs in {locale}"))
            );
        }
    }
}

/// The adversarial names of the issue, in one directory `d` (no unmatched quotes, no piece
/// that starts with `-`, no piece naming a FIFO: those are the Break/Refuse cases below).
fn adversarial(tree: &Tree) {
    let names: &[&[u8]] = &[
        b"plain",
        b"with space",
        b"two  spaces",
        b"trailing ",
        b"tab\tin",
        b"q'x y'z",
        b"\"dq\"",
        b"mixed'\"'quote",
        b"back\\slash",
        b"end\\",
        b"new\nline",
        b"new\n\rline2",
        b"cr\rin",
        b"-lead",
        b"--long",
        b"x -",
        b"a '' b",
        b"''",
        b"vt\x0bff\x0c",
        b"nbsp\xc2\xa0sp",
        b"nel\xc2\x85x",
        b"\xff\xfe",
        b"lat\xe9n",
        "Å".as_bytes(),
        "A\u{30a}".as_bytes(),
        "é".as_bytes(),
        "e\u{301}".as_bytes(),
        "ß".as_bytes(),
        "中".as_bytes(),
        "😀".as_bytes(),
        b".dot",
        b"_",
    ];
    for (i, n) in names.iter().enumerate() {
        let mut p = b"d/".to_vec();
        p.extend_from_slice(n);
        tree.file(&p, format!("content {i}\n").as_bytes());
    }
    tree.file(b"d/sub/inner", b"inner")
        .file(b"d/.hidden/h", b"h")
        .dir(b"d/empty")
        .symlink(b"plain", b"d/link-file")
        .symlink(b"sub", b"d/link-dir")
        .symlink(b"nowhere", b"d/link-broken")
        .symlink(b"loop", b"d/loop")
        .fifo(b"d/fifo");
    std::fs::hard_link(tree.abs(b"d/plain"), tree.abs(b"d/sub/hardlink")).unwrap();
    // A piece of a split name that names a real file relative to the cwd.
    tree.file(b"b", b"top-level b");
}

#[test]
fn adversarial_names_match_in_every_locale() {
    let tree = Tree::new();
    adversarial(&tree);
    // No two distinct lines here collate equal in en_US (checked with `sort -u`), so every
    // locale compares exactly.
    same_as_recipe(&tree, tree.root(), &[b"d"], Ties::None);
}

#[test]
fn names_whose_strxfrm_keys_disagree_with_strcoll_sort_as_sort_does() {
    // glibc's strxfrm and strcoll order these pairs differently in en_US.UTF-8 (and other
    // collating locales); sort uses strcoll. Found by a differential fuzz; no two of these
    // lines collate equal (`sort -u` keeps all twelve).
    let tree = Tree::new();
    for n in [
        "file1-A.txt",
        "file1a.txt",
        "file1.A.txt",
        "file1 A.txt",
        "v1-A",
        "v1a",
        "v1.A",
        "v1 A",
        "x-B2",
        "xb2",
        "2.B",
        "2b",
    ] {
        tree.file(format!("d/{n}").as_bytes(), n.as_bytes());
    }
    same_as_recipe(&tree, tree.root(), &[b"d"], Ties::None);
}

#[test]
fn strcoll_ties_keep_their_lines() {
    // In en_US.UTF-8 any two distinct invalid bytes collate equal (S4); their order follows
    // find's readdir order, which the contract does not fix: compare as a multiset there.
    let tree = Tree::new();
    for n in [
        vec![0xffu8],
        vec![0xc3],
        vec![0xfe],
        b"a\x80b".to_vec(),
        b"z".to_vec(),
        b"\xe9t\xe9".to_vec(),
    ] {
        let mut p = b"d/".to_vec();
        p.extend_from_slice(&n);
        tree.file(&p, &n);
    }
    same_as_recipe(&tree, tree.root(), &[b"d"], Ties::InEnUs);
}

#[test]
fn path_spellings_match() {
    let tree = Tree::new();
    tree.file(b"d/a", b"1")
        .file(b"d/s/b", b"2")
        .file(b"d/s/c d", b"3")
        .file(b"f", b"4")
        .dir(b"e")
        .symlink(b"d", b"ld")
        .symlink(b"f", b"lf");
    let abs = tree.abs(b"d");
    let cases: &[&[&[u8]]] = &[
        &[b"d"],
        &[b"./d"],
        &[b"d/"],
        &[b"d//"],
        &[b"d/."],
        &[b"d/s/.."],
        &[b"."],
        &[],
        &[abs.as_os_str().as_bytes()],
        &[b"d", b"e", b"f"],
        &[b"d", b"d"],
        &[b"d", b"d/s"],
        &[b"e"],
        &[b"./d/s/b"],
        &[b"ld"],
        &[b"ld/"],
        &[b"lf"],
        &[b"f/"],
        &[b"missing", b"d"],
    ];
    for args in cases {
        same_as_recipe(&tree, tree.root(), args, Ties::None);
    }
}

#[test]
fn ordering_tables_of_the_semantics_doc_match() {
    let tree = Tree::new();
    let words = "A AA Ab B Z a aB aa b z \
                 #x -x .x @x [x] _x a! a%b a(1) a+b a,b a-b a.b a=b a_b ab a~b x {x} ~x \
                 01 1 1-5 1.5 10 100 2 9 a-1 a1 a10 a2 a_1 \
                 ä ø ı 中 ﬁ fi ss I o f e";
    for w in words.split(' ') {
        tree.file(format!("d/{w}").as_bytes(), w.as_bytes());
    }
    // `/` inside lines: a-b a.b a/a/a a/b a0 a_ aa/c ab.
    for p in [
        "s/a-b", "s/a.b", "s/a/a/a", "s/a/b", "s/a0", "s/a_", "s/aa/c", "s/ab",
    ] {
        tree.file(p.as_bytes(), p.as_bytes());
    }
    same_as_recipe(&tree, tree.root(), &[b"d", b"s"], Ties::None);
}

#[test]
fn backslash_newline_joins_into_a_real_file() {
    // `d/p\` then `q` are adjacent sorted lines; xargs joins them into `d/p⏎q`, the real name,
    // and sha256sum escapes it (H2).
    let tree = Tree::new();
    tree.file(b"d/p\\\nq", b"joined");
    same_as_recipe(&tree, tree.root(), &[b"d"], Ties::None);
}

#[test]
fn empty_tree_hashes_dev_null() {
    let tree = Tree::new();
    tree.dir(b"empty").symlink(b"x", b"empty/dangling");
    same_as_recipe(&tree, tree.root(), &[b"empty"], Ties::None);
    same_as_recipe(&tree, tree.root(), &[b"missing"], Ties::None);
}

#[test]
fn deep_nesting_past_path_max_matches() {
    // find prints paths of any length; sha256sum fails on those over 4095 bytes (ENAMETOOLONG)
    // and the pipeline drops their lines.
    let tree = Tree::new();
    let seg = "n".repeat(200);
    let mut p = b"deep".to_vec();
    for i in 0..24 {
        p.extend_from_slice(format!("/{i:02}{seg}").as_bytes());
        let mut f = p.clone();
        f.extend_from_slice(b"/f");
        if f.len() < 4000 {
            tree.file(&f, &f[..16]);
        } else {
            // Beyond PATH_MAX std cannot create it in one call; go through a descriptor.
            make_deep_file(tree.root(), &f);
        }
    }
    same_as_recipe(&tree, tree.root(), &[b"deep"], Ties::None);
}

/// Creates `rel` (parents included) relative to `root` with openat/mkdirat, so any length works.
fn make_deep_file(root: &Path, rel: &[u8]) {
    let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    let c = CString::new(root.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain libc calls on NUL-terminated strings; every fd opened is closed below.
    unsafe {
        let mut fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(fd >= 0);
        for dir in &parts[..parts.len() - 1] {
            let d = CString::new(*dir).unwrap();
            libc::mkdirat(fd, d.as_ptr(), 0o755);
            let next = libc::openat(fd, d.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            assert!(next >= 0, "openat {dir:?}");
            libc::close(fd);
            fd = next;
        }
        let name = CString::new(*parts.last().unwrap()).unwrap();
        let f = libc::openat(fd, name.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644);
        assert!(f >= 0);
        assert_eq!(libc::write(f, b"deep".as_ptr().cast(), 4), 4);
        libc::close(f);
        libc::close(fd);
    }
}

#[test]
fn twenty_thousand_files_and_threads_agree() {
    // More than 10,000 entries in one directory: fts visits them in inode order on ext4, which
    // matters only for ties (none here).
    let tree = Tree::new();
    tree.dir(b"big/flat");
    for i in 0..20_000u32 {
        let name = format!(
            "big/flat/{}-{i:05}",
            ["x", "Y", "z_", "a.b"][(i % 4) as usize]
        );
        std::fs::write(tree.abs(name.as_bytes()), i.to_le_bytes()).unwrap();
    }
    same_as_recipe(&tree, tree.root(), &[b"big"], Ties::None);
    // find's own order before sort (F5: readdir order, or inode order for this directory of
    // more than 10,000 entries unless it sits on tmpfs) is what the walk reproduces.
    let abs = tree.abs(b"big");
    let raw = Command::new("find")
        .arg(&abs)
        .args(["-type", "f"])
        .output()
        .unwrap()
        .stdout;
    let walked = sealpush::tree::walk::walk_local(
        libc::AT_FDCWD,
        &[abs.as_os_str().as_bytes().to_vec()],
        None,
    );
    let mut ours = walked.files.join(&b'\n');
    ours.push(b'\n');
    assert!(ours == raw, "walk order differs from find's order");
    let one = sealpush(tree.root(), "C", &[b"big"], &["-j", "1"])
        .ok()
        .stdout;
    let two = sealpush(tree.root(), "C", &[b"big"], &["-j", "2"])
        .ok()
        .stdout;
    assert_eq!(one, two);
}

#[test]
fn a_fifty_mib_file_matches() {
    let tree = Tree::new();
    let mut data = vec![0u8; 50 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    tree.file(b"big/blob.bin", &data).file(b"big/small", b"s");
    let want = pipeline(tree.root(), "C", &[b"big"]);
    let got = sealpush(tree.root(), "C", &[b"big"], &["--lines"]).ok();
    assert_eq!(esc(&got.stdout), esc(&want.stdout));
}

#[test]
fn json_reports_the_recipe_digest_and_skips() {
    let tree = Tree::new();
    tree.file(b"d/ok", b"1").file(b"d/split me", b"2");
    let want = pipeline(tree.root(), "C", &[b"d"]);
    let want_digest = gnu_sha256sum(&want.stdout);
    let out = sealpush(tree.root(), "C", &[b"d"], &["--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(v["digest"].as_str().unwrap().as_bytes(), &want_digest[..64]);
    assert_eq!(v["files"], 1);
    assert_eq!(v["locale"], "C");
    assert_eq!(v["skipped"][0]["path"], "d/split");
    assert_eq!(v["skipped"][1]["path"], "me");
    assert_eq!(v["skipped"][0]["reason"], "No such file or directory");
    // The pipeline's own complaints, in sha256sum's words.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sha256sum: d/split: No such file or directory"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&want.stderr)
        .contains("sha256sum: d/split: No such file or directory"));
    // The same complaints in the JSON, for a script that does not read stderr; a missing PATH
    // is one of them (exit 0, as the pipeline's), in find's words.
    let warned =
        |v: &serde_json::Value, w: &str| v["warnings"].as_array().unwrap().iter().any(|x| x == w);
    assert!(
        warned(&v, "sha256sum: d/split: No such file or directory"),
        "{v}"
    );
    let want = pipeline(tree.root(), "C", &[b"d", b"gone"]);
    let out = sealpush(tree.root(), "C", &[b"d", b"gone"], &["--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = "find: 'gone': No such file or directory";
    assert!(String::from_utf8_lossy(&want.stderr).contains(find));
    assert!(warned(&v, find), "{v}");
}

#[test]
fn missing_path_warns_like_find_and_still_hashes_the_rest() {
    let tree = Tree::new();
    tree.file(b"d/a", b"1");
    let out = sealpush(tree.root(), "C", &[b"nope", b"d"], &[]).ok();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("find: 'nope': No such file or directory"),
        "{err}"
    );
    let want = pipeline(tree.root(), "C", &[b"nope", b"d"]);
    assert!(String::from_utf8_lossy(&want.stderr).contains("No such file or directory"));
    assert_eq!(out.stdout, gnu_sha256sum(&want.stdout));
}

#[test]
fn paths_find_reads_as_its_expression_are_refused() {
    // Directories really named `!`, `(` and `-x`: find takes each as the start of its
    // expression instead (`find ! -type f` lists what is *not* a regular file), so the recipe
    // hashes something else than the directory, and sealpush says so rather than guess.
    // `)` is a plain path to find, and hashes as such.
    let tree = Tree::new();
    for d in ["!", "(", "-x", ")"] {
        tree.file(format!("{d}/f").as_bytes(), d.as_bytes());
    }
    let real = pipeline(tree.root(), "C", &[b"!"]);
    assert!(
        !String::from_utf8_lossy(&real.stdout).contains("!/f"),
        "find would have listed !/f"
    );
    for d in ["!", "(", "-x"] {
        let err = assert_no_digest(tree.root(), &[d.as_bytes()], d);
        assert!(err.contains("start of its expression"), "{err}");
    }
    same_as_recipe(&tree, tree.root(), &[b")"], Ties::None);
    // Nor does a manifest of the tree `!` record a recipe digest the recipe never prints.
    let out = TestCommand::sealpush(tree.root(), ["manifest", "!"]).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("\nrecipe "), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no recipe digest"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts sealpush refuses or breaks: exit 1, no digest, the file named on stderr.
fn assert_no_digest(cwd: &Path, args: &[&[u8]], names: &str) -> String {
    let mut cmd = sealpush(cwd, "C", args, &[]);
    let out = cmd.expect_code(1);
    assert!(
        out.stdout.is_empty(),
        "{}",
        cmd.report(&out, "a digest was printed")
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(names),
        "{}",
        cmd.report(&out, &format!("stderr does not name {names}"))
    );
    err
}

#[test]
fn unmatched_quotes_break() {
    for (name, word) in [(&b"d/it's"[..], "single"), (b"d/say \"hi", "double")] {
        let tree = Tree::new();
        tree.file(b"d/a", b"1").file(name, b"2");
        let shown = String::from_utf8_lossy(name).into_owned();
        let err = assert_no_digest(tree.root(), &[b"d"], &shown);
        assert!(err.contains(&format!("unmatched {word} quote")), "{err}");
        // The real pipeline does break there.
        let real = pipeline(tree.root(), "C", &[b"d"]);
        let real_err = String::from_utf8_lossy(&real.stderr);
        assert!(
            real_err.contains(&format!("unmatched {word} quote")),
            "{real_err}"
        );
    }
}

#[test]
fn a_small_stack_limit_shrinks_the_longest_argument_as_for_xargs() {
    // 510 names ending in `\`, which xargs joins with the next line into one argument of about
    // 128.5 KB: under the default 131,061-byte limit, but over xargs' limit when the stack
    // limit is 256 KiB (ARG_MAX is then 128 KiB, less the environment and 2,048 bytes).
    let tree = Tree::new();
    for i in 0..510 {
        tree.file(format!("d/{}{i:05}\\", "a".repeat(243)).as_bytes(), b"");
    }
    tree.file(b"d/0first", b"0").file(b"d/zz", b"z");
    let in_small_stack = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &format!("ulimit -s 256 && {cmd}"), "sh"])
            .arg(env!("CARGO_BIN_EXE_sealpush"))
            .current_dir(tree.root())
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    };
    // The oracle: the real xargs under that limit gives up on the long argument.
    let real = in_small_stack("find d -type f | sort | xargs sha256sum >/dev/null");
    let real_err = String::from_utf8_lossy(&real.stderr);
    assert!(real_err.contains("argument line too long"), "{real_err}");
    let out = in_small_stack("exec \"$1\" hash -- d");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "a digest was printed");
    assert!(err.contains("argument line too long"), "{err}");
    // With the usual limit the same tree hashes, as the pipeline does.
    same_as_recipe(&tree, tree.root(), &[b"d"], Ties::None);
}

#[test]
fn over_long_argument_breaks() {
    // A path over 131,061 bytes: find prints it, xargs dies with "argument line too long".
    let tree = Tree::new();
    let seg = "L".repeat(250);
    let mut p = b"long".to_vec();
    while p.len() < 131_100 {
        p.extend_from_slice(b"/");
        p.extend_from_slice(seg.as_bytes());
    }
    p.extend_from_slice(b"/the-file");
    make_deep_file(tree.root(), &p);
    tree.file(
        b"long0",
        b"sorted first, hashed by the real pipeline before it dies",
    );
    let err = assert_no_digest(tree.root(), &[b"long", b"long0"], "the-file");
    assert!(
        err.contains("argument line too long"),
        "{}",
        &err[err.len().saturating_sub(300)..]
    );
    let real = pipeline(tree.root(), "C", &[b"long", b"long0"]);
    assert!(String::from_utf8_lossy(&real.stderr).contains("argument line too long"));
}

#[test]
fn option_pieces_are_refused() {
    for (name, piece) in [
        (&b"d/f -b"[..], "-b"),
        (b"d/x\n--tag", "--tag"),
        (b"d/y --", "--"),
    ] {
        let tree = Tree::new();
        tree.file(b"d/a", b"1").file(name, b"2");
        let err = assert_no_digest(tree.root(), &[b"d"], piece);
        assert!(err.contains("option"), "{err}");
    }
    // Evidence that the real pipeline's output depends on the option: `-b` switches the
    // separator to ` *`.
    let tree = Tree::new();
    tree.file(b"d/a", b"1").file(b"d/f -b", b"2");
    let real = pipeline(tree.root(), "C", &[b"d"]);
    assert!(String::from_utf8_lossy(&real.stdout).contains(" *d/a"));
}

#[test]
fn fifo_pieces_are_refused_without_running_the_pipeline() {
    // `d/x p` splits into `d/x` and `p`; `p` is a FIFO in the cwd: sha256sum would block
    // forever (the real pipeline is not run: it would hang).
    let tree = Tree::new();
    tree.file(b"d/x p", b"1").fifo(b"p");
    let err = assert_no_digest(tree.root(), &[b"d"], "p");
    assert!(err.contains("FIFO"), "{err}");
    // A symlink to the FIFO is followed, as fopen follows it.
    let tree = Tree::new();
    tree.file(b"d/x q", b"1").fifo(b"p").symlink(b"p", b"q");
    assert_no_digest(tree.root(), &[b"d"], "FIFO");
}

#[test]
fn lines_and_digest_are_consistent_with_gnu_sha256sum() {
    // `sealpush hash` prints the final sha256sum line: digest, two spaces, `-`.
    let tree = Tree::new();
    tree.file(b"d/a", b"1");
    let lines = sealpush(tree.root(), "C", &[b"d"], &["--lines"])
        .ok()
        .stdout;
    let digest = sealpush(tree.root(), "C", &[b"d"], &[]).ok().stdout;
    assert_eq!(digest, gnu_sha256sum(&lines));
    assert!(digest.ends_with(b"  -\n"));
}

#[test]
fn library_entry_points_match_the_recipe() {
    use sealpush::tree::{self, Collation, LocalSource, RecipeOptions};
    let tree = Tree::new();
    adversarial(&tree);
    let want = pipeline(tree.root(), "C", &[b"d"]);
    let opts = RecipeOptions {
        threads: Some(2),
        collation: Collation::c(),
    };
    // The generic pipeline over a TreeSource (what remote anchors use).
    let src = LocalSource::at(tree.root()).unwrap();
    let generic = tree::recipe_with(
        &src,
        &[b"d".to_vec()],
        &opts,
        &sealpush::progress::NoProgress,
    )
    .unwrap();
    assert_eq!(esc(&generic.lines), esc(&want.stdout));
    // `cd parent && find NAME ...`.
    let of_dir = tree::recipe_digest_of_dir(&tree.abs(b"d"), &opts).unwrap();
    assert_eq!(esc(&of_dir.lines), esc(&want.stdout));
    assert_eq!(
        of_dir.digest.to_hex().as_bytes(),
        &gnu_sha256sum(&want.stdout)[..64]
    );
    // One file, against GNU sha256sum.
    let (d, n) = tree::hash_file(&tree.abs(b"d/plain")).unwrap();
    let gnu = Command::new("sha256sum")
        .arg(tree.abs(b"d/plain"))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(d.to_hex().as_bytes(), &gnu[..64]);
    assert_eq!(n, std::fs::metadata(tree.abs(b"d/plain")).unwrap().len());
}

#[test]
fn bench_command_agrees_with_the_recipe_and_reports_a_speedup() {
    let tree = Tree::new();
    tree.file(b"d/a", b"1").file(b"d/b c", b"2");
    let want = gnu_sha256sum(&pipeline(tree.root(), "C", &[b"d"]).stdout);
    let out = TestCommand::sealpush(tree.root(), ["bench", "--runs", "1", "--json", "d"])
        .env("LC_ALL", "C")
        .ok();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["digest"].as_str().unwrap().as_bytes(), &want[..64]);
    assert!(v["median_speedup"].as_f64().unwrap() > 0.0);
    assert_eq!(v["sealpush_mode"], "in-process");
    // A missing tree is nothing to measure, not a 200x speedup.
    let out = TestCommand::sealpush(tree.root(), ["bench", "--runs", "1", "gone"]).expect_code(2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gone: nothing to measure"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bench_command_stops_when_the_recipe_disagrees() {
    // A machine whose `sort` is not the one sealpush reproduces (here `sort -r` first on PATH):
    // the two digests differ at the warm-up, and bench says so instead of timing anything.
    use std::os::unix::fs::PermissionsExt;
    let tree = Tree::new();
    tree.file(b"d/a", b"1").file(b"d/b", b"2");
    let bin = tree.root().join("odd-bin");
    std::fs::create_dir(&bin).unwrap();
    let sort = bin.join("sort");
    let real = String::from_utf8(
        Command::new("bash")
            .args(["-c", "command -v sort"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        &sort,
        format!("#!/bin/sh\nexec {} -r \"$@\"\n", real.trim()),
    )
    .unwrap();
    std::fs::set_permissions(&sort, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = TestCommand::sealpush(tree.root(), ["bench", "--runs", "1", "d"])
        .env("LC_ALL", "C")
        .env("PATH", path)
        .expect_code(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("digests disagree at warm-up"), "{err}");
    assert!(err.contains("sealpush hash --lines"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn locale_comes_from_the_environment_as_sort_reads_it() {
    // LC_ALL > LC_COLLATE > LANG; an uninstalled locale anywhere means C for everything
    // (setlocale(LC_ALL, "") fails as a whole). The case-pair table sorts differently in C and
    // en_US, so each environment's order shows.
    let has_en_us = locales().contains(&EN_US);
    let tree = Tree::new();
    for w in "A AA Ab B Z a aB aa b z".split(' ') {
        tree.file(format!("d/{w}").as_bytes(), w.as_bytes());
    }
    let envs: &[&[(&str, &str)]] = &[
        &[("LC_COLLATE", "C"), ("LANG", "en_US.UTF-8")],
        &[("LANG", "en_US.UTF-8")],
        &[("LC_ALL", "en_US.UTF-8"), ("LC_COLLATE", "C")],
        &[("LC_ALL", "xx_YY.UTF-8")],
        &[("LANG", "en_US.UTF-8"), ("LC_CTYPE", "xx_YY.UTF-8")],
        &[],
    ];
    let mut orders = std::collections::BTreeSet::new();
    for env in envs {
        let prepare = |cmd: &mut Command| {
            for k in ["LC_ALL", "LC_COLLATE", "LC_CTYPE", "LANG", "LANGUAGE"] {
                cmd.env_remove(k);
            }
            for (k, v) in env.iter() {
                cmd.env(k, v);
            }
        };
        let mut real = Command::new("bash");
        real.arg("-c")
            .arg("find d -type f | sort | xargs sha256sum")
            .current_dir(tree.root());
        prepare(&mut real);
        let want = real.output().unwrap().stdout;
        let mut ours = TestCommand::sealpush(tree.root(), ["hash", "--lines", "d"]);
        prepare(&mut ours.cmd);
        let got = ours.ok();
        assert_eq!(esc(&got.stdout), esc(&want), "environment {env:?}");
        orders.insert(want);
    }
    if has_en_us {
        assert_eq!(orders.len(), 2, "both C and en_US orders were exercised");
    }
}

#[test]
fn thousands_of_levels_do_not_overflow_the_stack() {
    // find walks any depth; so must sealpush (an explicit stack below the parallel levels).
    let tree = Tree::new();
    let mut p = b"d".to_vec();
    // 2,500 levels: the recursive walk this replaced overflowed at a few thousand; deeper
    // trees only make creating and deleting them slow.
    for i in 0..2500 {
        p.extend_from_slice(b"/d");
        if i % 1000 == 0 {
            let mut f = p.clone();
            f.extend_from_slice(b"/f");
            make_deep_file(tree.root(), &f);
        }
    }
    p.extend_from_slice(b"/f");
    make_deep_file(tree.root(), &p);
    let want = pipeline(tree.root(), "C", &[b"d"]);
    let got = sealpush(tree.root(), "C", &[b"d"], &["--lines"]).ok();
    assert_eq!(esc(&got.stdout), esc(&want.stdout));
    // Lines exist only for the paths under 4096 bytes; the rest failed in sha256sum.
    assert_eq!(got.stdout.iter().filter(|&&b| b == b'\n').count(), 3);
    assert!(
        got.stderr.len() > 4096,
        "sha256sum's complaint about the deepest file"
    );
}

#[test]
fn permission_denied_as_an_unprivileged_user_matches() {
    // F6: as `nobody`, find reports the unreadable directory and skips it; a mode-000 file is
    // listed, sha256sum fails on it and its line is dropped. Both sides run as nobody.
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 || !Path::new("/usr/sbin/runuser").exists() {
        assert!(!in_ci(), "CI runs as root with runuser (util-linux)");
        eprintln!("note: needs root and runuser; skipped");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tree = Tree::new();
    tree.file(b"d/ok", b"1")
        .file(b"d/locked", b"2")
        .file(b"d/closed/x", b"3")
        .file(b"d/open/y", b"4");
    let mode = |rel: &[u8], m: u32| {
        std::fs::set_permissions(tree.abs(rel), std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(b"", 0o755);
    mode(b"d/locked", 0o000);
    mode(b"d/closed", 0o000);
    let as_nobody = |program: &OsStr, args: &[&OsStr]| {
        let mut c = Command::new("/usr/sbin/runuser");
        c.args(["-u", "nobody", "--"])
            .arg(program)
            .args(args)
            .current_dir(tree.root())
            .env("LC_ALL", "C");
        c.output().unwrap()
    };
    let want = as_nobody(
        OsStr::new("bash"),
        &[
            OsStr::new("-c"),
            OsStr::new("find d -type f | sort | xargs sha256sum"),
        ],
    );
    let bin = crate::support::bin();
    let got = as_nobody(
        bin.as_os_str(),
        &[OsStr::new("hash"), OsStr::new("--lines"), OsStr::new("d")],
    );
    // Restore so the temp dir can be removed by anyone.
    mode(b"d/locked", 0o644);
    mode(b"d/closed", 0o755);
    assert_eq!(
        got.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(esc(&got.stdout), esc(&want.stdout));
    let (we, ge) = (
        String::from_utf8_lossy(&want.stderr),
        String::from_utf8_lossy(&got.stderr),
    );
    for msg in ["d/closed", "d/locked", "Permission denied"] {
        assert!(
            we.contains(msg) && ge.contains(msg),
            "{msg}: recipe said {we}, sealpush said {ge}"
        );
    }
}
