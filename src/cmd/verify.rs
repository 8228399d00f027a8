//! `sealpush verify`: re-hash an artifact and its content against its manifest.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sealpush::store::{self, Store};

use super::{CheckFailed, Exit, Globals};

const HELP: &str = "Examples:
  sealpush verify iu-cutter-v0.6
  sealpush verify ./iu-cutter-v0.6.tar.zst";

/// Re-hash an artifact and its content against its manifest.
///
/// The archive's sha256 and size are checked against its metadata, and every entry's content
/// against the manifest (entries checked as `unpack` checks them). Exit 1 on any mismatch.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// A store id, an unambiguous id prefix (4 characters or more), an artifact
    /// name, or a path to a tar.zst/tar.gz.
    #[arg(value_name = "ARTIFACT")]
    pub artifact: String,
    /// Store directory (default: $XDG_DATA_HOME/sealpush/store or ~/.local/share/sealpush/store).
    #[arg(long, env = "SEALPUSH_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    // A path is read without opening (and so creating) the store.
    let found = store::resolve_anywhere(&args.artifact, args.store.as_deref());
    let a = match found {
        Ok(a) => a,
        Err(e) if e.is_check_failure() => {
            // The chain names the path already.
            return Err(CheckFailed(format!("verify failed: {}", chain(&e))).into());
        }
        Err(e) => return Err(e).with_context(|| format!("finding artifact {}", args.artifact)),
    };
    let progress = globals.progress();
    match Store::verify(&a, progress.as_ref()) {
        Ok(()) => {}
        Err(e) if e.is_check_failure() => {
            return Err(CheckFailed(format!("verify failed: {}", chain(&e))).into())
        }
        Err(e) => return Err(e).with_context(|| format!("verifying {}", a.archive.display())),
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ok: {}", a.archive.display())?;
    writeln!(out, "archive-sha256: {}", a.meta.archive_sha256)?;
    writeln!(out, "tree-identity: {}", a.meta.tree_identity)?;
    if a.id.is_some() {
        globals.note(format_args!(
            "verified {} files ({} bytes) against the manifest",
            a.meta.files, a.meta.unpacked_bytes
        ));
    } else {
        globals.note(format_args!(
            "checked {} files ({} bytes): every entry as unpack checks it (a plain archive has no separate manifest)",
            a.meta.files, a.meta.unpacked_bytes
        ));
    }
    Ok(Exit::Ok)
}

/// An error and its sources on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
