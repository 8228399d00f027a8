//! `sealpush unpack`: checked extraction of an artifact into a new directory.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sealpush::pack::{self, UnpackError};
use sealpush::store::Store;

use super::{CheckFailed, Exit, Globals};

const HELP: &str =
    "Every entry is checked before it is written: no absolute paths or `..`, no symlink pointing \
outside DEST or written through, no hard link outside or to a later entry, no devices or \
fifos, no setuid/setgid/sticky bits, no duplicates, sizes consistent; the tar stream must end \
with its end-of-archive marker and nothing but zeros after it, in one zstd frame (with its \
checksum) or one gzip member. Extraction happens in a \
fresh temporary directory beside DEST, is verified against the artifact's manifest, and is \
renamed to DEST only then; a rejected archive leaves nothing behind. Exit 1 when the archive \
is rejected, corrupt or does not match its manifest.";

/// Safely unpack an artifact into DEST, which must not exist.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// A store id, an unambiguous id prefix, an artifact name, or a path to a tar.zst/tar.gz.
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
    let store = Store::open(args.store.as_deref()).context("opening the store")?;
    let given = std::path::Path::new(&args.artifact);
    // An archive from outside the store has no separate manifest: it is read once, its entries
    // checked and its content verified as read. Anything else is looked up in the store.
    let (archive, expected) = if given.is_file() && !sealpush::store::is_artifact_archive(given) {
        (given.to_path_buf(), None)
    } else {
        let a = store
            .resolve(&args.artifact)
            .with_context(|| format!("finding artifact {}", args.artifact))?;
        (a.archive, Some(a.manifest))
    };
    let progress = globals.progress();
    let m = match pack::unpack(&archive, &args.dest, expected.as_ref(), progress.as_ref()) {
        Ok(m) => m,
        Err(
            e @ (UnpackError::Rejected { .. }
            | UnpackError::Mismatch { .. }
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
    globals.note(format_args!(
        "unpacked {} files ({} bytes), verified against the manifest",
        m.file_count(),
        m.total_bytes()
    ));
    Ok(Exit::Ok)
}
