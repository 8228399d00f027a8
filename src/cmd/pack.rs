//! `sealpush pack`: a reproducible archive of a tree, added to the local store.
//!
//! stdout: `key: value` lines (artifact, id, archive-sha256, tree-identity, recipe-digest) or
//! JSON; a one-line summary on stderr.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use sealpush::pack::{Format, PackError, PackOptions};
use sealpush::store::{Store, StoreError};
use sha2::Digest as _;

use super::{Exit, Globals};

const HELP: &str =
    "The archive's bytes depend only on the tree's content: entries in bytewise path order, \
mtime fixed (SOURCE_DATE_EPOCH, else 1153704088), owner 0:0 without names, modes 0644/0755 \
from the exec bit, no atime/ctime, no timestamps or names in the zstd/gzip headers. Symlinks \
are stored as symlinks, hard links as hard links to their first name; sockets, fifos and \
devices are refused. A file that changes while it is packed fails the pack. Packing the same \
tree again stores nothing new. The exact format is in store-layout.md.

Examples:
  sealpush pack ./iu-cutter-v0.6
  sealpush pack ./site --format tar.gz --out site.tar.gz
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) sealpush pack ./build --json";

/// Pack a tree into a reproducible tar.zst / tar.gz artifact in the local store.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// The directory to pack.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Archive format: tar.zst or tar.gz.
    #[arg(long, default_value = "tar.zst", value_name = "FORMAT")]
    pub format: Format,
    /// Compression level (zstd 1-22, default 3; gzip 0-9, default 6). Changes the bytes.
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,
    /// Compression threads, 1 to 1024 (zstd workers, or gzip pieces compressed at once;
    /// default: all cores). Never changes the bytes.
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=super::MAX_THREADS))]
    pub threads: Option<u32>,
    /// Artifact name (default: the directory's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Store directory (default: $XDG_DATA_HOME/sealpush/store or ~/.local/share/sealpush/store).
    #[arg(long, env = "SEALPUSH_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Also write a plain copy of the archive to FILE (replaced atomically if it exists). A
    /// name ending in another format's suffix (`.tar.gz` for tar.zst, `.tar`) is refused.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print JSON instead of `key: value` lines. Refused, before packing, when the store or
    /// --out path is not UTF-8 (a JSON string cannot hold it).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    // Ctrl-C and SIGTERM stop the pack at its next entry or chunk, so it removes its temp
    // archive (and --out's temp file) instead of dying and leaving them.
    super::stop_at_safe_points_on(&[libc::SIGINT, libc::SIGTERM]);
    // The reproducible-builds spec: a malformed SOURCE_DATE_EPOCH is an error, not the default
    // (which would quietly give other bytes than the build asked for).
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        if !v.trim().is_empty() && v.trim().parse::<u64>().is_err() {
            anyhow::bail!(
                "SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds since 1970-01-01 UTC: \
                 unset it, or set it as `SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)`"
            );
        }
    }
    // A bad --out is refused before the pack, not found out after it stored the artifact.
    if let Some(out) = &args.out {
        super::output::check("--out", out)?;
        check_out_suffix(out, args.format)?;
    }
    let mut opts = PackOptions::new(args.format);
    if let Some(l) = args.level {
        opts.level = l;
    }
    opts.threads = args.threads.map(|n| n as usize);
    let store = Store::open(args.store.as_deref()).context("opening the store")?;
    // Decided before packing: a JSON answer that cannot be printed must not follow a pack that
    // stored an artifact and wrote --out. The artifact's path is the store's plus a UTF-8 id.
    if args.json {
        super::json_path("the store", store.root())?;
        if let Some(out) = &args.out {
            super::json_path("--out", out)?;
        }
    }
    let start = Instant::now();
    let progress = globals.progress();
    let (a, added) =
        match store.add_dir_reporting(&args.dir, args.name.as_deref(), &opts, progress.as_ref()) {
            Ok(found) => found,
            Err(e @ StoreError::Pack(PackError::Interrupted)) => {
                eprintln!(
                    "sealpush: error: packing {}: {e}; nothing was stored",
                    args.dir.display()
                );
                return Ok(Exit::Interrupted);
            }
            Err(e) => return Err(e).with_context(|| format!("packing {}", args.dir.display())),
        };
    if let Some(out) = &args.out {
        let copied = copy_atomically(&a.archive, out, a.meta.archive_sha256)
            .with_context(|| format!("writing {}", out.display()))?;
        if !copied {
            eprintln!(
                "sealpush: error: writing {}: interrupted; its temp file has been removed and \
                 it is left as it was (the artifact is stored: {})",
                out.display(),
                a.archive.display()
            );
            return Ok(Exit::Interrupted);
        }
    }
    let m = &a.meta;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let out = match &args.out {
            Some(p) => Some(super::json_path("--out", p)?),
            None => None,
        };
        let v = serde_json::json!({
            "artifact": super::json_path("the artifact", &a.archive)?,
            "id": a.id,
            "name": m.name,
            "format": m.format,
            "level": m.level,
            "archive_sha256": m.archive_sha256,
            "archive_size": m.archive_size,
            "tree_identity": m.tree_identity,
            "recipe_digest": m.recipe_digest,
            "recipe_locale": m.recipe_locale,
            "files": m.files,
            "unpacked_bytes": m.unpacked_bytes,
            "new": added,
            "out": out,
        });
        writeln!(stdout, "{v}")?;
    } else {
        writeln!(stdout, "artifact: {}", a.archive.display())?;
        writeln!(stdout, "id: {}", a.id.as_deref().unwrap_or(""))?;
        writeln!(stdout, "archive-sha256: {}", m.archive_sha256)?;
        writeln!(stdout, "tree-identity: {}", m.tree_identity)?;
        match (&m.recipe_digest, &m.recipe_locale) {
            (Some(d), Some(l)) => writeln!(stdout, "recipe-digest: {d} ({l})")?,
            _ => writeln!(
                stdout,
                "recipe-digest: none (the recipe cannot hash this tree)"
            )?,
        }
        if let Some(out) = &args.out {
            writeln!(stdout, "out: {}", out.display())?;
        }
    }
    stdout.flush()?;
    let stored_by = if !added && m.tool_version != sealpush::TOOL_VERSION {
        format!(" (packed by {}, kept)", m.tool_version)
    } else {
        String::new()
    };
    globals.note(format_args!(
        "{}{stored_by} {} files ({} bytes) into {} bytes of {} in {:.2}s",
        if added { "packed" } else { "already stored:" },
        m.files,
        m.unpacked_bytes,
        m.archive_size,
        m.format,
        start.elapsed().as_secs_f64()
    ));
    Ok(Exit::Ok)
}

/// Refuses an --out whose name says another format than the one packed: zstd bytes under a
/// `.tar.gz` name fail later, on the host, in `tar -xzf`. A name without a known suffix is
/// the user's choice.
fn check_out_suffix(out: &std::path::Path, format: Format) -> anyhow::Result<()> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let says = if [".tar.zst", ".tzst", ".zst"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        Some(Format::TarZst)
    } else if [".tar.gz", ".tgz", ".gz"].iter().any(|s| name.ends_with(s)) {
        Some(Format::TarGz)
    } else if name.ends_with(".tar") {
        anyhow::bail!(
            "--out {}: the name says an uncompressed tar, but sealpush writes only compressed \
             archives (this one {format}): name the file *.{}",
            out.display(),
            format.extension()
        );
    } else {
        None
    };
    match says {
        Some(named) if named != format => anyhow::bail!(
            "--out {}: the name says {named}, but the archive is {format}: pack with --format \
             {named}, or name the file *.{}",
            out.display(),
            format.extension()
        ),
        _ => Ok(()),
    }
}

/// Copies `from` to `to` through a temp file beside `to`, renamed into place only if the bytes
/// copied hash to `sha256`: --out gets exactly the bytes whose digest is printed, whatever
/// happened to the stored file since it was checked. False when a stop was asked for: then
/// the temp file is removed and `to` left as it was.
fn copy_atomically(
    from: &std::path::Path,
    to: &std::path::Path,
    sha256: sealpush::digest::Digest,
) -> anyhow::Result<bool> {
    // 0666 less the umask, as for any new file (tempfile's default 0600 is for secrets).
    let mut tmp = super::output::temp_beside(to, ".sealpush-out-", 0o666)?;
    let mut src =
        std::fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let mut hashing = Hashing {
        inner: tmp.as_file_mut(),
        hash: sha2::Sha256::new(),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // A safe point per chunk: `tmp` is removed when dropped.
        if sealpush::interrupt::requested() {
            return Ok(false);
        }
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
        };
        hashing.write_all(&buf[..n])?;
    }
    let copied = sealpush::digest::Digest(hashing.hash.finalize().into());
    if copied != sha256 {
        anyhow::bail!(
            "{} changed since it was checked: its bytes hash to {copied}, not {sha256} \
             (run `sealpush store verify`, then pack again)",
            from.display()
        );
    }
    super::output::persist(tmp, "--out", to)?;
    Ok(true)
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
