//! `sealpush manifest`: the content-addressed manifest of a tree (or of an archive's content).
//!
//! stdout carries the canonical manifest bytes (or the identity, or JSON); the summary goes to
//! stderr. The encoding is specified in `store-layout.md`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Context;
use sealpush::manifest::{self, EntryKind};

use super::{Exit, Globals};

const HELP: &str =
    "Every file (size, sha256, exec bit), symlink (target) and directory, in bytewise path order, \
plus the recipe digest (`cd PARENT && find NAME -type f | LC_ALL=C sort | xargs sha256sum | \
sha256sum`) on a trailing `recipe` line. The sha256 of everything before that line is the \
tree's identity. The encoding is specified in store-layout.md.

Check a tree against a manifest with coreutils alone, from inside the tree:
  sed -n 's/^[fx] [0-9]* //p' manifest.txt | sha256sum -c --quiet";

/// Content-addressed manifest of a tree (files, exec bits, symlinks, directories).
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// The directory to describe, or a tar.zst/tar.gz archive (its checked content; no recipe line).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Print only the tree identity (64 hex digits).
    #[arg(long, conflicts_with = "json")]
    pub identity: bool,
    /// Print `{"identity", "recipe_digest", "recipe_locale", "files", "bytes", "entries"}`
    /// (refused for a name or symlink target that is not UTF-8, which a JSON string cannot hold).
    #[arg(long)]
    pub json: bool,
    /// Worker threads for hashing, 1 to 1024 (default: all cores).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=super::MAX_THREADS))]
    pub threads: Option<u32>,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    let progress = globals.progress();
    let from_archive = args.path.is_file();
    let m = if from_archive {
        sealpush::pack::derive_manifest(&args.path)
            .with_context(|| format!("reading {}", args.path.display()))?
    } else {
        manifest::scan_dir(
            &args.path,
            args.threads.map(|n| n as usize),
            progress.as_ref(),
        )
        .with_context(|| format!("scanning {}", args.path.display()))?
    };
    let identity = m.identity();
    let mut out = std::io::stdout().lock();
    if args.identity {
        writeln!(out, "{identity}")?;
    } else if args.json {
        // Names are bytes; a lossy spelling would print two names as one: refused, as every
        // --json refuses a path that is not UTF-8.
        let text = |what: &str, bytes: &[u8]| -> anyhow::Result<String> {
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(bytes));
            Ok(super::json_path(what, path)?.to_string())
        };
        let entries = m
            .entries
            .iter()
            .map(|e| {
                let path = text("the entry", &e.path)?;
                Ok(match &e.kind {
                    EntryKind::File {
                        size,
                        sha256,
                        executable,
                    } => serde_json::json!({"path": path, "type": "file", "size": size,
                        "sha256": sha256, "executable": executable}),
                    EntryKind::Symlink { target } => serde_json::json!({"path": path,
                        "type": "symlink", "target": text("the symlink target", target)?}),
                    EntryKind::Dir => serde_json::json!({"path": path, "type": "dir"}),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let v = serde_json::json!({
            "identity": identity,
            "recipe_digest": m.recipe.as_ref().map(|r| r.digest),
            "recipe_locale": m.recipe.as_ref().map(|r| r.locale.clone()),
            "files": m.file_count(),
            "bytes": m.total_bytes(),
            "entries": entries,
        });
        writeln!(out, "{v}")?;
    } else {
        out.write_all(&m.encode())?;
    }
    out.flush()?;
    globals.note(format_args!(
        "identity {identity}: {} entries, {} files, {} bytes{}",
        m.entries.len(),
        m.file_count(),
        m.total_bytes(),
        if m.recipe.is_none() && from_archive {
            // The recipe digest spells paths from the tree's directory, which an archive lacks.
            " (no recipe digest: an archive does not name its tree's directory; run manifest on the unpacked tree)"
        } else if m.recipe.is_none() {
            " (no recipe digest: the recipe cannot hash this tree)"
        } else {
            ""
        }
    ));
    Ok(Exit::Ok)
}
