//! Embeds `fixtures/` into the binary so `sealpush demo` runs from any directory, with nothing
//! but the binary: each file's bytes via `include_bytes!`, symlinks as their target, exec bits kept.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("fixtures");
    println!("cargo:rerun-if-changed=fixtures");
    let mut entries = Vec::new();
    if root.is_dir() {
        walk(&root, &root, &mut entries);
    }
    entries.sort();
    let mut out = String::from(
        "/// Bundled fixtures: (relative path, kind, bytes or symlink target).\n\
         pub static FIXTURES: &[(&str, FixtureKind, &[u8])] = &[\n",
    );
    for (rel, kind, abs) in entries {
        match kind {
            Kind::File(exec) => writeln!(
                out,
                "    ({rel:?}, FixtureKind::File {{ executable: {exec} }}, include_bytes!({abs:?})),"
            ),
            Kind::Symlink(target) => writeln!(
                out,
                "    ({rel:?}, FixtureKind::Symlink, {target:?}.as_bytes()),"
            ),
            Kind::Dir => writeln!(out, "    ({rel:?}, FixtureKind::Dir, b\"\"),"),
        }
        .unwrap();
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("fixtures.rs");
    fs::write(dest, out).unwrap();
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    File(bool),
    Symlink(String),
    Dir,
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Kind, String)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap().to_str().unwrap().to_string();
            out.push((rel, Kind::Symlink(target), String::new()));
        } else if meta.is_dir() {
            out.push((rel, Kind::Dir, String::new()));
            walk(root, &path, out);
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            out.push((rel, Kind::File(exec), path.to_str().unwrap().to_string()));
        }
    }
}
