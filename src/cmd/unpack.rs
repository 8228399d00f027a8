//! `sealpush unpack`: checked extraction of an artifact into a new directory.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sealpush::pack::{self, UnpackError};
use sealpush::store;

use super::{CheckFailed, Exit, Globals};

const HELP: &str =
    "Every entry is checked before it is written: no absolute paths or `..`, no symlink pointing \
outside DEST or written through, no hard link outside or to a later entry, no devices, fifos \
or sparse files, no setuid/setgid/sticky bits, no duplicates, sizes consistent, no PAX or GNU \
records that tar readers disagree on; the tar stream must end with its end-of-archive marker \
and nothing but zeros after it, in one zstd frame (with its checksum) or one gzip member. \
Extraction happens in a fresh private (0700) directory beside DEST, written only through its \
open handle, so renaming or swapping names in DEST's parent cannot redirect it. It is verified \
against the artifact's manifest (and, for a stored artifact, the archive's sha256 against its \
meta.json) and renamed to DEST only then; a rejected or interrupted (Ctrl-C) unpack leaves \
nothing behind. Exit 1 when the archive is rejected, corrupt or does not match its manifest or \
its sha256.

Examples:
  sealpush unpack iu-cutter-v0.6 /tmp/iu-cutter-v0.6
  sealpush unpack ./site.tar.gz /srv/site-check";

/// Safely unpack an artifact into DEST, which must not exist.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// A store id, an unambiguous id prefix (4 characters or more), an artifact
    /// name, or a path to a tar.zst/tar.gz.
    #[arg(value_name = "ARTIFACT")]
    pub artifact: String,
    /// The directory to create.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    /// Store directory (default: $XDG_DATA_HOME/sealpush/store or ~/.local/share/sealpush/store).
    #[arg(long, env = "SEALPUSH_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    // Ctrl-C and SIGTERM stop the unpack at its next entry or chunk, so it removes its temp dir
    // instead of dying and leaving it.
    super::stop_at_safe_points_on(&[libc::SIGINT, libc::SIGTERM]);
    let given = std::path::Path::new(&args.artifact);
    // An archive from outside the store has no separate manifest: it is read once, its entries
    // checked and its content verified as read. Anything else is looked up (a path without
    // opening, and so creating, the store).
    let artifact = if given.is_file()
        && !store::is_artifact_archive(given)
        && store::is_plainly_a_path(&args.artifact, args.store.as_deref())
    {
        None
    } else {
        let found = store::resolve_anywhere(&args.artifact, args.store.as_deref());
        Some(found.with_context(|| format!("finding artifact {}", args.artifact))?)
    };
    let progress = globals.progress();
    let (dest, progress) = (&args.dest, progress.as_ref());
    let result = match &artifact {
        // An artifact (of the store, or an external archive the resolver already read) has a
        // recorded sha256: checked on the bytes as they are unpacked.
        Some(a) => pack::unpack_artifact(
            &a.archive,
            dest,
            &a.manifest,
            a.meta.archive_sha256,
            a.meta.archive_size,
            progress,
        ),
        None => pack::unpack(given, dest, None, progress),
    };
    let m = match result {
        Ok(m) => m,
        Err(e @ UnpackError::Interrupted) => {
            eprintln!(
                "sealpush: error: unpacking into {}: {e}",
                args.dest.display()
            );
            return Ok(Exit::Interrupted);
        }
        Err(
            e @ (UnpackError::Rejected { .. }
            | UnpackError::Mismatch { .. }
            | UnpackError::ArchiveMismatch { .. }
            | UnpackError::Corrupt { .. }),
        ) => {
            let msg = super::verify::chain(&e);
            return Err(
                CheckFailed(format!("unpacking into {}: {msg}", args.dest.display())).into(),
            );
        }
        Err(e) => return Err(e).with_context(|| format!("unpacking into {}", args.dest.display())),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "unpacked: {}", args.dest.display())?;
    writeln!(out, "tree-identity: {}", m.identity())?;
    let checked = match &artifact {
        Some(a) if a.id.is_some() => "verified against the manifest and the archive sha256",
        _ => "every entry checked as read (a plain archive has no separate manifest)",
    };
    globals.note(format_args!(
        "unpacked {} files ({} bytes), {checked}",
        m.file_count(),
        m.total_bytes()
    ));
    Ok(Exit::Ok)
}
