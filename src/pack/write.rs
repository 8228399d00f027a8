//! Writing a deterministic archive from a live directory.
//!
//! Two threads: a producer walks the manifest order, reads each file (never following a
//! symlink), hashes it while it is being copied into the tar stream, and checks afterwards that
//! the file is still the one the walk saw (same inode, size, mtime and ctime; the read ended at
//! the walked size); the consumer compresses and hashes the compressed bytes. The manifest is
//! built from the hashes of the bytes actually archived, so the archive and its manifest agree by
//! construction, and a file written to during the pack (which always moves its ctime) fails it.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::digest::Digest;
use crate::manifest::{self, Entry, EntryKind, Found, Manifest, ManifestError, Stamp};
use crate::progress::Progress;
use crate::tree::hasher::read_spare;

use super::check::{Checker, RawEntry, Rule};
use super::layout::{self, TarKind};
use super::zstd_writer::ZstdWriter;
use super::{io_err, Format, PackOptions};

/// Why packing failed. No archive is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Scan(#[from] ManifestError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: changed while it was packed ({what})")]
    Changed { path: PathBuf, what: String },
    #[error("{path}: not a regular file any more")]
    Replaced { path: PathBuf },
    #[error(
        "{path}: cannot go into an artifact: {rule} (unpack and deploy refuse such an entry): \
         remove or replace it, or pack a copy of the tree without it"
    )]
    Unpackable { path: PathBuf, rule: Rule },
    #[error(
        "mtime {mtime} (SOURCE_DATE_EPOCH) is past 8589934591 (2242-03-16T12:56:31Z), the largest \
         a tar header's 11 octal digits hold: set SOURCE_DATE_EPOCH to that or less"
    )]
    Mtime { mtime: u64 },
    #[error(
        "level {level} is out of range for {format}: use {} to {}",
        .format.levels().start(),
        .format.levels().end()
    )]
    Level { format: Format, level: i32 },
    #[error("interrupted; the partial archive has been removed")]
    Interrupted,
    #[error("compressing")]
    Compress(#[source] io::Error),
    #[error("writing the archive")]
    Output(#[source] io::Error),
}

/// What a pack produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// The manifest of exactly what was archived.
    pub manifest: Manifest,
    pub archive_sha256: Digest,
    pub archive_size: u64,
}

/// A chunk handed from the producer to the compressor.
const CHUNK: usize = 1 << 20;

/// Packs `dir` into `out`. The recipe digest of the tree is recorded in the returned manifest.
pub fn pack_dir<W: Write + Send>(
    dir: &Path,
    out: W,
    opts: &PackOptions,
    progress: &dyn Progress,
) -> Result<Packed, PackError> {
    opts.validate()?;
    let found = manifest::walk(dir)?;

    // Hard links: the first name in manifest order is stored as a file, every later name with
    // the same (dev, inode) as a tar hardlink to it.
    let mut first_name: HashMap<(u64, u64), usize> = HashMap::new();
    let mut link_to: Vec<Option<usize>> = vec![None; found.len()];
    let mut total = 0u64;
    for (i, (_, f)) in found.iter().enumerate() {
        if let Found::File { stamp, size, .. } = f {
            if stamp.nlink > 1 {
                match first_name.get(&(stamp.dev, stamp.ino)) {
                    Some(&j) => link_to[i] = Some(j),
                    None => {
                        first_name.insert((stamp.dev, stamp.ino), i);
                        total += size;
                    }
                }
                continue;
            }
            total += size;
        }
    }
    progress.start("packing", Some(total), None);

    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
    // The entry rules are checked beside the packing, not before it (a serial pass over every
    // entry while the other core idled); a refusal stops the producer and is the error given.
    let refused = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let checker = s.spawn(|| {
            let checked = refuse_unpackable(dir, &found, &link_to);
            if checked.is_err() {
                refused.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            checked
        });
        let producer = s.spawn(|| {
            let entries = produce(dir, &found, &link_to, opts.mtime, tx, &refused, progress)?;
            // The channel is closed: the manifest and its recipe digest are built here while
            // the compressor finishes the last chunks, not after it.
            let mut manifest = Manifest::from_entries(entries, None)?;
            manifest.recipe = manifest::recipe_record(dir, &manifest.entries)?;
            Ok::<_, PackError>(manifest)
        });
        let consumed = consume(rx, out, opts);
        let produced = producer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        checker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        match (produced, consumed) {
            (Ok(manifest), Ok((sha, size))) => Ok((manifest, sha, size)),
            // The producer only fails to send because the consumer failed: its error is the cause.
            (Err(PackError::Output(_)), Err(e)) => Err(e),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        }
    });
    progress.finish();
    let (manifest, archive_sha256, archive_size) = result?;
    Ok(Packed {
        manifest,
        archive_sha256,
        archive_size,
    })
}

/// Applies unpack's entry rules to the entries as they will be written, so that no artifact
/// holds what unpack and deploy would refuse (a symlink to `/etc/x` or `../../x`, say): the
/// pack fails at once, naming the entry, instead of the deploy failing later.
fn refuse_unpackable(
    dir: &Path,
    found: &[(Vec<u8>, Found)],
    link_to: &[Option<usize>],
) -> Result<(), PackError> {
    use tar::EntryType as T;
    let mut checker = Checker::new();
    for (i, (rel, f)) in found.iter().enumerate() {
        let (entry_type, mode, size, link) = match f {
            Found::Dir => (T::Directory, 0o755, 0, None),
            Found::Symlink(target) => (T::Symlink, 0o777, 0, Some(&target[..])),
            Found::File {
                size, executable, ..
            } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                match link_to[i] {
                    Some(j) => (T::Link, mode, 0, Some(&found[j].0[..])),
                    None => (T::Regular, mode, *size, None),
                }
            }
        };
        let raw = RawEntry {
            path: rel,
            entry_type,
            mode,
            size,
            link,
            pax: &[],
            pax_malformed: false,
        };
        checker
            .check(raw)
            .map_err(|rejected| PackError::Unpackable {
                path: manifest::join(dir, rel),
                rule: rejected.rule,
            })?;
    }
    Ok(())
}

/// Packs `dir` into the file `dest` through a temporary file in the same directory, renamed into
/// place only on success (replacing `dest` if it exists).
pub fn pack_to_file(
    dir: &Path,
    dest: &Path,
    opts: &PackOptions,
    progress: &dyn Progress,
) -> Result<Packed, PackError> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // 0666 less the umask, as for any new file (tempfile's default 0600 is for secrets).
    let tmp = tempfile::Builder::new()
        .prefix(".sealpush-pack-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(parent)
        .map_err(io_err(parent))?;
    let packed = pack_dir(
        dir,
        io::BufWriter::with_capacity(CHUNK, tmp.as_file()),
        opts,
        progress,
    )?;
    tmp.persist(dest).map_err(|e| io_err(dest)(e.error))?;
    Ok(packed)
}

/// Files up to this size are read (and hashed) ahead, in parallel, in batches; larger ones are
/// streamed by the producer itself so memory stays bounded.
const SMALL_FILE: u64 = 1 << 20;
/// A batch closes at this many bytes or files.
const BATCH_BYTES: u64 = 4 << 20;
const BATCH_FILES: usize = 512;
/// Batches read ahead of the producer (bounds memory to about WINDOW x BATCH_BYTES).
const WINDOW: usize = 6;

/// Opens a file of the tree for reading without following a symlink or blocking on a fifo that
/// replaced it.
fn open_member(path: &Path) -> Result<fs::File, PackError> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err(path))
}

/// After reading `size` bytes: the file must still be the file the walk saw, with the size,
/// mtime and ctime the walk saw. (No probe read for EOF: a file that grew has another size.)
fn check_unchanged(
    path: &Path,
    file: &fs::File,
    size: u64,
    stamp: &Stamp,
) -> Result<(), PackError> {
    let md = file.metadata().map_err(io_err(path))?;
    if !md.is_file() {
        return Err(PackError::Replaced {
            path: path.to_path_buf(),
        });
    }
    let now = Stamp::of(&md);
    if (now.dev, now.ino) != (stamp.dev, stamp.ino) {
        return Err(PackError::Changed {
            path: path.to_path_buf(),
            what: "it was replaced".into(),
        });
    }
    if (now.size, now.mtime, now.ctime) != (size, stamp.mtime, stamp.ctime) {
        return Err(PackError::Changed {
            path: path.to_path_buf(),
            what: "it was written to".into(),
        });
    }
    Ok(())
}

/// [`open_member`] by name inside an open directory: no path walk from the root per file
/// (100,000 small files spent a tenth of the pack's kernel time looking up their paths).
fn open_member_at(dir: &fs::File, name: &[u8], path: &Path) -> Result<fs::File, PackError> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = std::ffi::CString::new(name).map_err(|e| io_err(path)(io::Error::other(e)))?;
    // SAFETY: a valid directory fd and a NUL-terminated name; the new fd is owned by the File.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io_err(path)(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

/// The directory last opened by a reader, reused while its files follow each other (they do:
/// manifest order keeps a directory's files together).
#[derive(Default)]
struct DirCache {
    dir: Option<(PathBuf, fs::File)>,
}

impl DirCache {
    fn open(&mut self, path: &Path) -> Result<fs::File, PackError> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return open_member(path);
        };
        if self.dir.as_ref().map(|(p, _)| p.as_path()) != Some(parent) {
            let d = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(parent)
                .map_err(io_err(parent))?;
            self.dir = Some((parent.to_path_buf(), d));
        }
        let (_, d) = self.dir.as_ref().expect("just set");
        use std::os::unix::ffi::OsStrExt;
        open_member_at(d, name.as_bytes(), path)
    }
}

/// Reads a whole (small) file and checks it did not change.
fn read_whole(
    dirs: &mut DirCache,
    path: &Path,
    size: u64,
    stamp: &Stamp,
) -> Result<Vec<u8>, PackError> {
    let file = dirs.open(path)?;
    let data = read_up_to(&file, size as usize).map_err(io_err(path))?;
    if (data.len() as u64) < size {
        return Err(PackError::Changed {
            path: path.to_path_buf(),
            what: "it shrank".into(),
        });
    }
    check_unchanged(path, &file, size, stamp)?;
    Ok(data)
}

/// Reads a batch of small files, then hashes them together: four at a time with the SHA
/// extensions ([`crate::sha256_many`]), where one at a time left the SHA unit mostly idle.
fn read_batch(jobs: &[(PathBuf, u64, Stamp)]) -> Prefetched {
    let mut dirs = DirCache::default();
    let read: Vec<Result<Vec<u8>, PackError>> = jobs
        .iter()
        .map(|(p, size, stamp)| read_whole(&mut dirs, p, *size, stamp))
        .collect();
    let contents: Vec<&[u8]> = read.iter().flatten().map(|d| d.as_slice()).collect();
    let mut digests = crate::sha256_many::digest_many(&contents).into_iter();
    read.into_iter()
        .map(|r| r.map(|d| (d, digests.next().expect("a digest per file read"))))
        .collect()
}

/// Reads at most `size` bytes of `file` into a new buffer: fewer only at end of file. The bytes
/// go straight into the buffer's spare capacity ([`read_spare`]), in one read(2) for a regular
/// file that has them. std's `read_to_end` through `Take` caps its first read at 8 KiB, which
/// cost a second syscall for every file over that size: half of the small corpus, 53,000 of
/// its 153,000 reads. No end-of-file probe either: a file that grew has a new size, which
/// `check_unchanged` sees.
fn read_up_to(file: &fs::File, size: usize) -> io::Result<Vec<u8>> {
    let mut data: Vec<u8> = Vec::with_capacity(size);
    while data.len() < size {
        let want = size - data.len();
        if read_spare(file, &mut data, want)? == 0 {
            break;
        }
    }
    Ok(data)
}

type Prefetched = Vec<Result<(Vec<u8>, Digest), PackError>>;

/// Writes the tar stream into `tx` in manifest order; returns the manifest entries with the
/// digests of the bytes that were sent.
fn produce(
    dir: &Path,
    found: &[(Vec<u8>, Found)],
    link_to: &[Option<usize>],
    mtime: u64,
    tx: mpsc::SyncSender<Vec<u8>>,
    refused: &std::sync::atomic::AtomicBool,
    progress: &dyn Progress,
) -> Result<Vec<Entry>, PackError> {
    use sha2::Digest as _;
    // Small files, grouped in manifest order into batches that rayon reads ahead.
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut batch_of: Vec<Option<usize>> = vec![None; found.len()];
    let mut cur_bytes = 0u64;
    for (i, (_, f)) in found.iter().enumerate() {
        if let Found::File { size, .. } = f {
            if link_to[i].is_none() && *size <= SMALL_FILE {
                let full = batches
                    .last()
                    .map_or(true, |b| cur_bytes >= BATCH_BYTES || b.len() >= BATCH_FILES);
                if full {
                    batches.push(Vec::new());
                    cur_bytes = 0;
                }
                batches.last_mut().expect("just pushed").push(i);
                cur_bytes += size;
                batch_of[i] = Some(batches.len() - 1);
            }
        }
    }
    let spawn_batch = |b: usize| -> mpsc::Receiver<Prefetched> {
        let (btx, brx) = mpsc::sync_channel(1);
        let jobs: Vec<(PathBuf, u64, Stamp)> = batches[b]
            .iter()
            .map(|&i| match &found[i].1 {
                Found::File { size, stamp, .. } => {
                    (manifest::join(dir, &found[i].0), *size, *stamp)
                }
                _ => unreachable!("batches hold files"),
            })
            .collect();
        rayon::spawn(move || {
            // The producer may have stopped on an error: nobody to tell.
            let _ = btx.send(read_batch(&jobs));
        });
        brx
    };
    let mut pending: std::collections::VecDeque<mpsc::Receiver<Prefetched>> = Default::default();
    let mut next_spawn = 0usize;
    let mut current: std::vec::IntoIter<Result<(Vec<u8>, Digest), PackError>> =
        Vec::new().into_iter();
    let mut current_batch: Option<usize> = None;

    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 64 * 1024);
    let mut entries: Vec<Entry> = Vec::with_capacity(found.len());
    let send = |buf: &mut Vec<u8>| -> Result<(), PackError> {
        stop_if_interrupted()?;
        let full = std::mem::replace(buf, Vec::with_capacity(CHUNK + 64 * 1024));
        // The consumer only hangs up after an error of its own, which it reports.
        tx.send(full)
            .map_err(|_| PackError::Output(io::Error::other("compressor stopped")))
    };
    for (i, (rel, f)) in found.iter().enumerate() {
        stop_if_interrupted()?;
        if refused.load(std::sync::atomic::Ordering::Relaxed) {
            // pack_dir reports the refusal itself, not this.
            return Err(PackError::Interrupted);
        }
        match f {
            Found::Dir => {
                layout::write_header(rel, TarKind::Dir, mtime, &mut buf);
                entries.push(Entry::dir(rel.clone()));
            }
            Found::Symlink(target) => {
                layout::write_header(rel, TarKind::Symlink { target }, mtime, &mut buf);
                entries.push(Entry::symlink(rel.clone(), target.clone()));
            }
            Found::File {
                size,
                executable,
                stamp,
            } => {
                if let Some(j) = link_to[i] {
                    let kind = TarKind::HardLink {
                        target: &found[j].0,
                        executable: *executable,
                    };
                    layout::write_header(rel, kind, mtime, &mut buf);
                    // Same inode as an earlier name: same content, already hashed.
                    let EntryKind::File { sha256, .. } = entries[j].kind else {
                        unreachable!("hard link targets are files")
                    };
                    entries.push(Entry::file(rel.clone(), *size, sha256, *executable));
                    continue;
                }
                let kind = TarKind::File {
                    size: *size,
                    executable: *executable,
                };
                if let Some(b) = batch_of[i] {
                    if current_batch != Some(b) {
                        while next_spawn < batches.len() && next_spawn <= b + WINDOW {
                            pending.push_back(spawn_batch(next_spawn));
                            next_spawn += 1;
                        }
                        let rx = pending.pop_front().expect("batch b was spawned");
                        let got = rx.recv().map_err(|_| {
                            PackError::Output(io::Error::other("a reader thread died"))
                        })?;
                        current = got.into_iter();
                        current_batch = Some(b);
                    }
                    let (data, digest) = current.next().expect("one result per file")?;
                    layout::write_header(rel, kind, mtime, &mut buf);
                    buf.extend_from_slice(&data);
                    layout::pad(*size, &mut buf);
                    entries.push(Entry::file(rel.clone(), *size, digest, *executable));
                    progress.advance(*size, 1);
                    if buf.len() >= CHUNK {
                        send(&mut buf)?;
                    }
                    continue;
                }
                let path = manifest::join(dir, rel);
                let mut file = open_member(&path)?;
                layout::write_header(rel, kind, mtime, &mut buf);
                let mut h = sha2::Sha256::new();
                let mut left = *size;
                while left > 0 {
                    if buf.len() >= CHUNK {
                        send(&mut buf)?;
                    }
                    let start = buf.len();
                    let want =
                        (CHUNK.saturating_sub(start).max(64 * 1024) as u64).min(left) as usize;
                    buf.resize(start + want, 0);
                    let n = match file.read(&mut buf[start..]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                        Err(e) => return Err(io_err(&path)(e)),
                    };
                    buf.truncate(start + n);
                    if n == 0 {
                        // EINTR retries; EOF before the walked size means it shrank.
                        if file.metadata().map_err(io_err(&path))?.len() < *size {
                            return Err(PackError::Changed {
                                path,
                                what: "it shrank".into(),
                            });
                        }
                        continue;
                    }
                    h.update(&buf[start..]);
                    left -= n as u64;
                    progress.advance(n as u64, 0);
                }
                check_unchanged(&path, &file, *size, stamp)?;
                layout::pad(*size, &mut buf);
                entries.push(Entry::file(
                    rel.clone(),
                    *size,
                    Digest(h.finalize().into()),
                    *executable,
                ));
                progress.advance(0, 1);
            }
        }
        if buf.len() >= CHUNK {
            send(&mut buf)?;
        }
    }
    buf.extend_from_slice(&layout::TRAILER);
    send(&mut buf)?;
    Ok(entries)
}

/// Stops the producer at the next entry or chunk once a stop was asked for
/// ([`crate::interrupt`]), so the caller removes its partial archive rather than leaving it.
fn stop_if_interrupted() -> Result<(), PackError> {
    if crate::interrupt::requested() {
        return Err(PackError::Interrupted);
    }
    Ok(())
}

/// Counts and hashes what passes through to the real output.
struct Tally<W> {
    inner: W,
    hash: sha2::Sha256,
    len: u64,
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.write(data)?;
        self.hash.update(&data[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compression threads: `-j`, else all cores; never 0.
fn workers_for(opts: &PackOptions) -> usize {
    opts.threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Input bytes per independently compressed gzip block.
const GZ_BLOCK: usize = 1 << 20;

/// One raw deflate block stream for `data`: byte-aligned by a sync flush (an empty stored
/// block) unless it is the `last`, which ends the deflate stream (BFINAL).
fn deflate_block(data: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(out),
            // zlib's rule: a flush is complete when it returns with output space to spare.
            _ if !last && all_in && room_left => return Ok(out),
            _ => out.reserve(64 * 1024),
        }
    }
}

/// gzip in the manner of `pigz --independent`, with fixed block boundaries so the bytes do not
/// depend on the thread count: the tar stream is cut into [`GZ_BLOCK`] pieces, each deflated
/// on its own (no shared dictionary) on one of `workers` threads, and the pieces are
/// concatenated into one deflate stream in one gzip member. Header: no name, MTIME 0, XFL as
/// flate2 sets it from the level, OS 255 ("unknown"), so nothing depends on the machine;
/// deflate by miniz_oxide (pure Rust), so nothing depends on a system zlib.
fn gzip_parallel<W: Write>(
    rx: mpsc::Receiver<Vec<u8>>,
    mut out: W,
    level: i32,
    workers: usize,
) -> Result<W, PackError> {
    let level = level.clamp(0, 9) as u32;
    let xfl = match level {
        9 => 2,
        0 | 1 => 4,
        _ => 0,
    };
    let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255];
    out.write_all(&header).map_err(PackError::Output)?;
    let mut crc = flate2::Crc::new();
    let mut pending: Vec<u8> = Vec::new();
    let group = workers * GZ_BLOCK;
    let mut emit = |blocks: &[&[u8]], last: bool, out: &mut W| -> Result<(), PackError> {
        let n = blocks.len();
        let compressed: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = blocks
                .iter()
                .enumerate()
                .map(|(i, b)| s.spawn(move || deflate_block(b, level, last && i + 1 == n)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for (b, c) in blocks.iter().zip(compressed) {
            crc.update(b);
            out.write_all(&c.map_err(PackError::Compress)?)
                .map_err(PackError::Output)?;
        }
        Ok(())
    };
    for chunk in rx {
        pending.extend_from_slice(&chunk);
        // Keep at least one byte back: the final block must be compressed as the last one.
        if pending.len() > group {
            let blocks: Vec<&[u8]> = pending[..group].chunks(GZ_BLOCK).collect();
            emit(&blocks, false, &mut out)?;
            pending.drain(..group);
        }
    }
    let mut blocks: Vec<&[u8]> = pending.chunks(GZ_BLOCK).collect();
    if blocks.is_empty() {
        blocks.push(&[]);
    }
    emit(&blocks, true, &mut out)?;
    let mut trailer = [0u8; 8];
    trailer[..4].copy_from_slice(&crc.sum().to_le_bytes());
    trailer[4..].copy_from_slice(&crc.amount().to_le_bytes());
    out.write_all(&trailer).map_err(PackError::Output)?;
    Ok(out)
}

/// Compresses the tar stream from `rx` into `out`; returns (sha256, size) of the compressed bytes.
fn consume<W: Write>(
    rx: mpsc::Receiver<Vec<u8>>,
    out: W,
    opts: &PackOptions,
) -> Result<(Digest, u64), PackError> {
    use sha2::Digest as _;
    let tally = Tally {
        inner: out,
        hash: sha2::Sha256::new(),
        len: 0,
    };
    let tally = match opts.format {
        Format::TarZst => {
            // zstd's multithreaded format depends on whether workers are used at all (0 vs >= 1),
            // never on how many: ZstdWriter uses >= 1 so the thread count cannot change the bytes.
            let workers = u32::try_from(workers_for(opts)).unwrap_or(u32::MAX);
            let mut enc =
                ZstdWriter::new(tally, opts.level, workers).map_err(PackError::Compress)?;
            for chunk in rx {
                // Not the chunks still queued: compressing them is the slow part of stopping.
                stop_if_interrupted()?;
                enc.write_all(&chunk).map_err(PackError::Output)?;
            }
            stop_if_interrupted()?;
            enc.finish().map_err(PackError::Output)?
        }
        Format::TarGz => gzip_parallel(rx, tally, opts.level, workers_for(opts))?,
    };
    let mut tally = tally;
    tally.flush().map_err(PackError::Output)?;
    Ok((Digest(tally.hash.finalize().into()), tally.len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole files of every size around std's 8 KiB first read and the small corpus' 16 KiB,
    /// a size larger than the file (it shrank: what is there, no error), and never more than
    /// asked for (it grew: `check_unchanged` finds that).
    #[test]
    fn read_up_to_reads_exactly_what_is_asked_or_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 8191, 8192, 8193, 16384, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            fs::write(&p, &data).unwrap();
            let f = fs::File::open(&p).unwrap();
            assert_eq!(read_up_to(&f, len).unwrap(), data, "{len}");
            let f = fs::File::open(&p).unwrap();
            assert_eq!(read_up_to(&f, len + 10).unwrap(), data, "shrank: {len}");
            if len > 0 {
                let f = fs::File::open(&p).unwrap();
                assert_eq!(
                    read_up_to(&f, len - 1).unwrap(),
                    data[..len - 1],
                    "grew: {len}"
                );
            }
        }
    }

    /// Deterministic, moderately compressible bytes (so zstd has real work in every job).
    fn data(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    b'a' + (x % 4) as u8
                } else {
                    (x >> 24) as u8 & 0x3f
                }
            })
            .collect()
    }

    /// The zstd crate's encoder with libzstd's defaults (pre-splitter on); `workers` 0 means
    /// single-threaded mode.
    fn compress_default(input: &[u8], workers: u32) -> Vec<u8> {
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.multithread(workers).unwrap();
        enc.include_checksum(true).unwrap();
        enc.include_contentsize(false).unwrap();
        for c in input.chunks(CHUNK) {
            enc.write_all(c).unwrap();
        }
        enc.finish().unwrap()
    }

    fn compress(input: &[u8], workers: u32) -> Vec<u8> {
        let mut enc = ZstdWriter::new(Vec::new(), 3, workers).unwrap();
        for c in input.chunks(CHUNK) {
            enc.write_all(c).unwrap();
        }
        enc.finish().unwrap()
    }

    /// Why `consume` never uses 0 workers: zstd's output is the same for 1, 2 or 4 workers but
    /// not for 0 (single-threaded mode cuts blocks differently once the input exceeds a job).
    #[test]
    fn zstd_output_depends_on_workers_only_through_zero() {
        let input = data(24 << 20);
        let one = compress_default(&input, 1);
        assert_eq!(one, compress_default(&input, 2));
        assert_eq!(one, compress_default(&input, 4));
        assert_ne!(one, compress_default(&input, 0));
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), input);
    }

    /// ZstdWriter: the same bytes for any worker count (it never uses 0), a frame any decoder
    /// reads back, and the pre-splitter really off: its output differs from libzstd's default
    /// (if the parameter were ignored the two would be equal).
    #[test]
    fn zstd_writer_is_independent_of_workers_and_turns_the_splitter_off() {
        // Content whose statistics change every few KiB (text-like, then binary-like), as in
        // a tar of many small files: where the pre-splitter finds places to cut blocks.
        let mut input = Vec::new();
        let noise = data(24 << 20);
        let (mut at, mut text) = (0, true);
        while at + 90_000 < noise.len() {
            let len = 7_000 + (noise[at] as usize) * 300;
            let seg = &noise[at..at + len];
            if text {
                input.extend(seg.iter().map(|b| b'a' + b % 26));
            } else {
                input.extend(seg.iter().map(|b| 0x80 | (b & 0x0f)));
            }
            text = !text;
            at += len;
        }
        let one = compress(&input, 1);
        assert!(one == compress(&input, 2));
        assert!(one == compress(&input, 4));
        assert!(one == compress(&input, 0));
        assert!(zstd::decode_all(&one[..]).unwrap() == input);
        let default = compress_default(&input, 1);
        assert!(one != default, "the pre-splitter setting changed nothing");
        assert_eq!(zstd::decode_all(&compress(&[], 2)[..]).unwrap(), b"");
    }

    fn gzip(input: &[u8], workers: usize, level: i32) -> Vec<u8> {
        let (tx, rx) = mpsc::sync_channel(1000);
        for c in input.chunks(300_000) {
            tx.send(c.to_vec()).unwrap();
        }
        drop(tx);
        gzip_parallel(rx, Vec::new(), level, workers).unwrap()
    }

    /// Block boundaries are fixed, so the thread count never changes the bytes; the result is
    /// one valid gzip member (checked by flate2's decoder here, by GNU tar in tests/pack).
    #[test]
    fn parallel_gzip_is_independent_of_workers_and_decodes() {
        use std::io::Read as _;
        for len in [0, 1, GZ_BLOCK, 5 * GZ_BLOCK + 12345] {
            let input = data(len);
            for level in [0, 1, 6, 9] {
                let one = gzip(&input, 1, level);
                assert_eq!(one, gzip(&input, 2, level), "len {len} level {level}");
                assert_eq!(one, gzip(&input, 3, level), "len {len} level {level}");
                let mut back = Vec::new();
                flate2::read::GzDecoder::new(&one[..])
                    .read_to_end(&mut back)
                    .unwrap();
                assert!(back == input, "len {len} level {level}");
            }
        }
    }
}
