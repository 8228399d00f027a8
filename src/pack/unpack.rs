//! Checked reading and extraction of tar.zst / tar.gz archives.
//!
//! The tar crate is used only to split the stream into entries (headers, PAX and GNU long
//! names); its own `unpack` is never called, because it silently skips or rewrites entries that
//! sealpush must refuse. Every entry goes through [`Checker`] before anything is done with it.
//! [`unpack`] writes into a fresh private directory beside DEST, held open from creation to
//! rename: every file, directory and link is created relative to a directory handle opened from
//! it (`openat(O_NOFOLLOW)`, `mkdirat`, `symlinkat`, `linkat`), files exclusively, so nothing
//! is ever written through a symlink, not even one swapped in for a directory's name by someone
//! who can write in DEST's parent. The result is verified against the expected manifest and only
//! then renamed to DEST without replacing anything; on any failure what was written is removed
//! and DEST never appears.

use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::manifest::{self, Entry, EntryKind, Manifest, ManifestError};
use crate::progress::Progress;
use crate::stamp::FileStamp;

use super::check::{CheckedEntry, CheckedKind, Checker, RawEntry, Rejected};
use super::fsat::{self, Dir};
use super::Format;

/// Why an archive could not be read, checked or extracted.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a tar.zst or tar.gz archive")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: corrupt or truncated archive")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}")]
    Rejected {
        path: PathBuf,
        #[source]
        source: Rejected,
    },
    #[error("{path}: already exists (the destination must not exist)")]
    Exists { path: PathBuf },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: content does not match the manifest: {detail}")]
    Mismatch { path: PathBuf, detail: String },
    #[error("{path}: replaced while unpacking: {detail} (someone else can rename entries in its directory: unpack where only you can write)")]
    Replaced { path: PathBuf, detail: &'static str },
    #[error("{path}: archive sha256: expected {expected} (its record), found {actual}: the archive was changed or damaged since it was stored (`sealpush store verify` checks the store)")]
    ArchiveMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{path}: changed while it was read (its size, mtime or ctime moved): if something writes to the store, let it finish, then run this again")]
    Changed { path: PathBuf },
    #[error("interrupted; what was written so far has been removed")]
    Interrupted,
    #[error("{path}: archive entries do not form a valid manifest")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 (when hashing) and length of every byte read from the archive file, shared with the
/// caller while the decoder owns the reader.
type ArchiveTally = std::sync::Arc<std::sync::Mutex<(Option<sha2::Sha256>, u64)>>;

fn hashing_tally() -> ArchiveTally {
    std::sync::Arc::new(std::sync::Mutex::new((Some(sha2::Digest::new()), 0)))
}

/// The archive file, tallied when asked.
struct Tallied {
    file: fs::File,
    tally: Option<ArchiveTally>,
}

impl Read for Tallied {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.file.read(buf)?;
        if let Some(t) = &self.tally {
            let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = &mut t.0 {
                h.update(&buf[..n]);
            }
            t.1 += n as u64;
        }
        Ok(n)
    }
}

/// Opens `archive` (unless given it open) and returns a decompressing reader, format chosen by
/// magic bytes.
fn open_decoder(
    archive: &Path,
    opened: Option<fs::File>,
    tally: Option<ArchiveTally>,
) -> Result<Decoded, UnpackError> {
    let open = |source| UnpackError::Open {
        path: archive.to_path_buf(),
        source,
    };
    let file = match opened {
        Some(f) => f,
        None => fs::File::open(archive).map_err(open)?,
    };
    let mut f = BufReader::with_capacity(1 << 20, Tallied { file, tally });
    let head = {
        use io::BufRead;
        f.fill_buf().map_err(open)?.to_vec()
    };
    let inner = match Format::sniff(&head) {
        Some(Format::TarZst) => {
            // Frame_Header_Descriptor, bit 2: Content_Checksum_flag. sealpush and the zstd CLI
            // always set it; without it a damaged frame can decompress to other bytes unseen.
            if head.get(4).is_some_and(|d| d & 0x04 == 0) {
                return Err(UnpackError::Corrupt {
                    path: archive.to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the zstd frame has no content checksum (written without one, \
                         e.g. `zstd --no-check`: recompress it with the zstd defaults)",
                    ),
                });
            }
            Decompress::Zstd(
                zstd::stream::read::Decoder::with_buffer(f)
                    .map_err(open)?
                    .single_frame(),
            )
        }
        Some(Format::TarGz) => Decompress::Gz(flate2::bufread::GzDecoder::new(f)),
        None => {
            return Err(UnpackError::UnknownFormat {
                path: archive.to_path_buf(),
            })
        }
    };
    Ok(Decoded {
        inner,
        ended: false,
    })
}

enum Decompress {
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Tallied>>),
    Gz(flate2::bufread::GzDecoder<BufReader<Tallied>>),
}

/// Exactly one zstd frame or one gzip member, and nothing after it in the file: a second frame
/// or member would be read by `zstd -d`/`gunzip` (and so by GNU tar) as more of the same tar
/// stream, which the entries already checked end before.
struct Decoded {
    inner: Decompress,
    ended: bool,
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use io::BufRead;
        let n = match &mut self.inner {
            Decompress::Zstd(d) => d.read(buf)?,
            Decompress::Gz(d) => d.read(buf)?,
        };
        if n == 0 && !buf.is_empty() && !self.ended {
            let (rest, what) = match &mut self.inner {
                Decompress::Zstd(d) => (d.get_mut().fill_buf()?, "zstd frame"),
                Decompress::Gz(d) => (d.get_mut().fill_buf()?, "gzip member"),
            };
            if !rest.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("data after the {what}"),
                ));
            }
            self.ended = true;
        }
        Ok(n)
    }
}

/// Counts the decompressed bytes the tar reader consumed.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Counts, and hashes unless told not to, what is read through it.
struct HashingReader<'a, R> {
    inner: &'a mut R,
    hash: Option<sha2::Sha256>,
    len: u64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }
}

/// Reads every entry of `archive`, checks it, and hands it to `visit` with a reader of its data
/// (empty for non-files) before looking at the next one. Returns the archive's manifest
/// (derived from the bytes read; no recipe record). Also checks the compressed stream to its end
/// (zstd checksum, gzip CRC), so trailing corruption is an error too.
///
/// A callback rather than an iterator: entries borrow the one decompressing stream, and this
/// keeps memory bounded whatever the file sizes.
pub fn read_checked(
    archive: &Path,
    visit: impl FnMut(&CheckedEntry, &mut dyn Read) -> Result<(), UnpackError>,
) -> Result<Manifest, UnpackError> {
    read_checked_with(archive, None, visit)
}

/// [`read_checked`], but with `known` given, file contents are not hashed: each file entry takes
/// the digest `known` has for its path (a zero digest if it has none, which no comparison with
/// `known` accepts). For callers that verify every byte elsewhere against `known`.
fn read_checked_with(
    archive: &Path,
    known: Option<&Manifest>,
    visit: impl FnMut(&CheckedEntry, &mut dyn Read) -> Result<(), UnpackError>,
) -> Result<Manifest, UnpackError> {
    read_checked_tallied(archive, known, None, None, visit)
}

/// How [`read_checked_streaming`] vouched for the archive file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveRead {
    /// The sha256 and size of the bytes read, computed from the very bytes decompressed.
    Hashed(Digest, u64),
    /// Not hashed: the file had the stamp it was given from before its first byte was read to
    /// after its last (see [`crate::stamp`]); the size is of the bytes read.
    Unchanged(u64),
}

/// [`read_checked`] against a known manifest (contents not hashed, as in [`unpack_unhashed`]),
/// also vouching for the archive file itself (one read serves both): by its sha256, or, when
/// the file has the stamp `unchanged` when opened, by that stamp, looked at again at the end.
pub fn read_checked_streaming(
    archive: &Path,
    known: &Manifest,
    unchanged: Option<&FileStamp>,
    visit: impl FnMut(&CheckedEntry, &mut dyn Read) -> Result<(), UnpackError>,
) -> Result<(Manifest, ArchiveRead), UnpackError> {
    use sha2::Digest as _;
    let file = fs::File::open(archive).map_err(|source| UnpackError::Open {
        path: archive.to_path_buf(),
        source,
    })?;
    let look = |f: &fs::File| FileStamp::of_file(f).map_err(io_at(archive));
    let trusted = match unchanged {
        Some(s) if look(&file)? == *s => Some((*s, file.try_clone().map_err(io_at(archive))?)),
        _ => None,
    };
    let tally = match trusted {
        Some(_) => ArchiveTally::default(),
        None => hashing_tally(),
    };
    let m = read_checked_tallied(archive, Some(known), Some(file), Some(tally.clone()), visit)?;
    let (h, n) = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    match (trusted, h) {
        (Some((stamp, f)), _) => {
            if look(&f)? != stamp {
                return Err(UnpackError::Changed {
                    path: archive.to_path_buf(),
                });
            }
            Ok((m, ArchiveRead::Unchanged(n)))
        }
        (None, Some(h)) => Ok((m, ArchiveRead::Hashed(Digest(h.finalize().into()), n))),
        (None, None) => unreachable!("the tally hashes unless the stamp vouches"),
    }
}

fn read_checked_tallied(
    archive: &Path,
    known: Option<&Manifest>,
    opened: Option<fs::File>,
    tally: Option<ArchiveTally>,
    mut visit: impl FnMut(&CheckedEntry, &mut dyn Read) -> Result<(), UnpackError>,
) -> Result<Manifest, UnpackError> {
    let corrupt = |source| UnpackError::Corrupt {
        path: archive.to_path_buf(),
        source,
    };
    let mut ar = tar::Archive::new(Counted {
        inner: open_decoder(archive, opened, tally)?,
        n: 0,
    });
    // Where the last entry's data, padded to a block, ends in the tar stream.
    let mut end = 0u64;
    let mut checker = Checker::new();
    let mut entries: Vec<Entry> = Vec::new();
    // Index by path of the files seen, for hard links.
    let mut files: std::collections::HashMap<Vec<u8>, (u64, Digest, bool)> = Default::default();
    for e in ar.entries().map_err(corrupt)? {
        let mut e = e.map_err(corrupt)?;
        end = e
            .raw_file_position()
            .saturating_add(e.size().div_ceil(512).saturating_mul(512));
        let h = e.header();
        let entry_type = h.entry_type();
        if entry_type == tar::EntryType::XGlobalHeader {
            // Global PAX headers (e.g. `git archive`'s commit comment) describe no file.
            continue;
        }
        let mode = h.mode().map_err(corrupt)?;
        let size = e.size();
        let path = e.path_bytes().into_owned();
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let mut pax = Vec::new();
        let mut pax_malformed = false;
        if let Some(records) = e.pax_extensions().map_err(corrupt)? {
            for r in records {
                match r {
                    Ok(r) => pax.push((r.key_bytes().to_vec(), r.value_bytes().to_vec())),
                    Err(_) => pax_malformed = true,
                }
            }
        }
        let Some(checked) = checker
            .check(RawEntry {
                path: &path,
                entry_type,
                mode,
                size,
                link: link.as_deref(),
                pax: &pax,
                pax_malformed,
            })
            .map_err(|source| UnpackError::Rejected {
                path: archive.to_path_buf(),
                source,
            })?
        else {
            continue;
        };
        let mut r = HashingReader {
            inner: &mut e,
            hash: known.is_none().then(sha2::Digest::new),
            len: 0,
        };
        visit(&checked, &mut r)?;
        // Whatever the visitor left unread still counts (and must be readable).
        io::copy(&mut r, &mut io::sink()).map_err(corrupt)?;
        let len = r.len;
        let digest = match (r.hash, known) {
            (Some(h), _) => Digest(sha2::Digest::finalize(h).into()),
            (None, Some(m)) => match m.get(&checked.path).map(|e| &e.kind) {
                Some(EntryKind::File { sha256, .. }) => *sha256,
                _ => Digest([0; 32]),
            },
            (None, None) => unreachable!("hashing is on without a known manifest"),
        };
        let kind = match checked.kind {
            CheckedKind::File { size, executable } => {
                if len != size {
                    return Err(corrupt(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry {:?} is truncated", manifest::show(&checked.path)),
                    )));
                }
                files.insert(checked.path.clone(), (size, digest, executable));
                EntryKind::File {
                    size,
                    sha256: digest,
                    executable,
                }
            }
            CheckedKind::HardLink { ref target } => {
                let (size, sha256, executable) = files[target];
                files.insert(checked.path.clone(), (size, sha256, executable));
                EntryKind::File {
                    size,
                    sha256,
                    executable,
                }
            }
            CheckedKind::Symlink { ref target } => EntryKind::Symlink {
                target: target.clone(),
            },
            CheckedKind::Dir => EntryKind::Dir,
        };
        entries.push(Entry {
            path: checked.path,
            kind,
        });
    }
    // tar stops at the first zero block (consumed: `rest.n - end` is 512) or at the end of the
    // stream (0). The end-of-archive marker is two zero blocks, and only zeros may follow it
    // (GNU tar pads to a 10240-byte record): GNU tar `-i` reads on past a zero block, so
    // entries hidden there would be extracted by it and never seen here. Reading to the end
    // is also where zstd checks its checksum and gzip its CRC and length.
    let mut rest = ar.into_inner();
    let mut zeros = rest.n.saturating_sub(end);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(corrupt(io::Error::new(
                io::ErrorKind::InvalidData,
                "data after the end-of-archive marker",
            )));
        }
        zeros += n as u64;
    }
    if zeros < 1024 {
        return Err(corrupt(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "no end-of-archive marker (two zero blocks): the tar stream is truncated",
        )));
    }
    Manifest::from_entries(entries, None).map_err(|source| UnpackError::Manifest {
        path: archive.to_path_buf(),
        source,
    })
}

/// The manifest of an archive's content (every entry checked), writing nothing.
pub fn derive_manifest(archive: &Path) -> Result<Manifest, UnpackError> {
    read_checked(archive, |_, _| Ok(()))
}

/// Extracts `archive` into the new directory `dest` (which must not exist), checking every
/// entry first and the result against `expected` (or, without one, against the archive's own
/// content as read), and returns the manifest of what was extracted. The recipe record of
/// `expected` is carried over when the entries match.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    expected: Option<&Manifest>,
    progress: &dyn Progress,
) -> Result<Manifest, UnpackError> {
    unpack_with(archive, None, dest, expected, true, None, progress)
}

/// [`unpack`] of a stored artifact: also checks the archive file's sha256 and size, computed
/// from the very bytes that are decompressed (one read), against its record before DEST
/// appears.
pub fn unpack_artifact(
    archive: &Path,
    dest: &Path,
    expected: &Manifest,
    archive_sha256: Digest,
    archive_size: u64,
    progress: &dyn Progress,
) -> Result<Manifest, UnpackError> {
    let want = Some((archive_sha256, archive_size));
    unpack_with(archive, None, dest, Some(expected), true, want, progress)
}

/// [`unpack`] against `expected` with every check except the content digests: paths, kinds,
/// sizes, exec bits and link targets are compared, the bytes are not hashed. Only for a caller
/// that verifies every file's content against `expected` itself before trusting it (a deploy
/// reads each file back from the host and compares it with the manifest before the promote).
pub fn unpack_unhashed(
    archive: &Path,
    dest: &Path,
    expected: &Manifest,
    progress: &dyn Progress,
) -> Result<Manifest, UnpackError> {
    unpack_with(archive, None, dest, Some(expected), false, None, progress)
}

/// [`unpack`] without a manifest (`expected` `None`), or [`unpack_unhashed`] against one, of
/// the archive its caller already opened (`archive` names it in errors): what is unpacked is
/// the very file the caller looked at (its stamp, say), whatever `archive` names meanwhile.
pub fn unpack_opened(
    archive: &Path,
    file: fs::File,
    dest: &Path,
    expected: Option<&Manifest>,
    progress: &dyn Progress,
) -> Result<Manifest, UnpackError> {
    unpack_with(
        archive,
        Some(file),
        dest,
        expected,
        expected.is_none(),
        None,
        progress,
    )
}

fn unpack_with(
    archive: &Path,
    opened: Option<fs::File>,
    dest: &Path,
    expected: Option<&Manifest>,
    hash: bool,
    archive_digest: Option<(Digest, u64)>,
    progress: &dyn Progress,
) -> Result<Manifest, UnpackError> {
    match fs::symlink_metadata(dest) {
        Ok(_) => {
            return Err(UnpackError::Exists {
                path: dest.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        // ENOTDIR: an ancestor is a file; name it, not DEST or the names between (which are
        // not there to be wrong).
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            let file = dest
                .ancestors()
                .skip(1)
                .find(|a| fs::symlink_metadata(a).is_ok_and(|m| !m.is_dir()))
                .unwrap_or(dest);
            return Err(io_at(file)(e));
        }
        Err(e) => return Err(io_at(dest)(e)),
    }
    let name = dest.file_name().ok_or_else(|| UnpackError::Io {
        path: dest.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "destination has no name"),
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = TempRoot::create(parent, name.as_bytes())?;
    let root_path = tmp.path();
    // What an I/O error on an entry names: the entry's place in the temp dir.
    let at = |rel: &[u8]| root_path.join(std::ffi::OsStr::from_bytes(rel));
    progress.start("unpacking", expected.map(|m| m.total_bytes()), None);
    let umask = current_umask();
    // Only chmod when the umask narrowed the mode (saves a syscall per file in the usual case).
    let narrowed = |mode: u32| umask.map_or(true, |m| mode & !m != mode);
    // Small files are written by worker threads while this thread decompresses and checks the
    // next entries; directories are created here, before any entry inside them is handed out.
    // Hard links wait until every file is written (their targets must be complete). Every
    // operation is relative to a directory handle opened from the temp dir's own handle, so a
    // name swapped in the meantime (by whoever can write in DEST's parent) is never followed.
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let failed: std::sync::Mutex<Option<UnpackError>> = std::sync::Mutex::new(None);
    let mut links: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut dirs = Parents::new(tmp.root.clone());
    let tally = archive_digest.map(|_| hashing_tally());
    type Job = (Arc<Dir>, CString, PathBuf, Vec<u8>, u32);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(256);
    let rx = std::sync::Mutex::new(rx);
    let result = std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((dir, name, path, data, mode)) = job else {
                    break;
                };
                if let Err(e) = write_file(&dir, &name, &path, &data, mode, narrowed(mode)) {
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                }
            });
        }
        let mut buf = vec![0u8; 256 * 1024];
        let known = if hash { None } else { expected };
        let r = read_checked_tallied(archive, known, opened, tally.clone(), |entry, data| {
            if let Some(e) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Err(e);
            }
            stop_if_interrupted()?;
            if let CheckedKind::HardLink { target } = &entry.kind {
                links.push((target.clone(), entry.path.clone()));
                return Ok(());
            }
            let (dir, name) = dirs
                .parent_of(&entry.path)
                .map_err(io_at(&at(&entry.path)))?;
            match &entry.kind {
                CheckedKind::Dir => {
                    dir.mkdir(&name, 0o755).map_err(io_at(&at(&entry.path)))?;
                    if narrowed(0o755) {
                        dir.open_dir(&name)
                            .and_then(|d| d.chmod(0o755))
                            .map_err(io_at(&at(&entry.path)))?;
                    }
                }
                CheckedKind::File { executable, size } => {
                    let mode = if *executable { 0o755 } else { 0o644 };
                    if *size <= PARALLEL_FILE {
                        let mut content = Vec::with_capacity(*size as usize);
                        data.read_to_end(&mut content)
                            .map_err(|source| UnpackError::Corrupt {
                                path: archive.to_path_buf(),
                                source,
                            })?;
                        progress.advance(content.len() as u64, 1);
                        tx.send((dir, name, at(&entry.path), content, mode))
                            .expect("workers live until the sender is dropped");
                        return Ok(());
                    }
                    let path = at(&entry.path);
                    let mut f = dir.create_file(&name, mode).map_err(io_at(&path))?;
                    loop {
                        let n = match data.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(source) => {
                                return Err(UnpackError::Corrupt {
                                    path: archive.to_path_buf(),
                                    source,
                                })
                            }
                        };
                        f.write_all(&buf[..n]).map_err(io_at(&path))?;
                        progress.advance(n as u64, 0);
                        stop_if_interrupted()?;
                    }
                    if narrowed(mode) {
                        f.set_permissions(fs::Permissions::from_mode(mode))
                            .map_err(io_at(&path))?;
                    }
                    progress.advance(0, 1);
                }
                CheckedKind::Symlink { target } => {
                    let t = fsat::cname(target).map_err(io_at(&at(&entry.path)))?;
                    dir.symlink(&t, &name).map_err(io_at(&at(&entry.path)))?;
                }
                CheckedKind::HardLink { .. } => unreachable!("handled above"),
            }
            Ok(())
        });
        drop(tx);
        r
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let result = result.and_then(|m| {
        for (target, path) in &links {
            let mut link = || -> io::Result<()> {
                let (tdir, tname) = dirs.parent_of(target)?;
                let (dir, name) = dirs.parent_of(path)?;
                tdir.hard_link(&tname, &dir, &name)
            };
            link().map_err(io_at(&at(path)))?;
        }
        Ok(m)
    });
    progress.finish();
    let mut got = result?;
    if let (Some((sha256, size)), Some(t)) = (archive_digest, tally) {
        use sha2::Digest as _;
        let (h, n) = std::mem::take(&mut *t.lock().unwrap_or_else(|e| e.into_inner()));
        let actual = Digest(h.expect("a hashing tally").finalize().into());
        if actual != sha256 || n != size {
            return Err(UnpackError::ArchiveMismatch {
                path: archive.to_path_buf(),
                expected: sha256,
                actual,
            });
        }
    }
    if let Some(want) = expected {
        let mut want_entries = want.clone();
        want_entries.recipe = None;
        if let Some(detail) = want_entries.diff(&got) {
            return Err(UnpackError::Mismatch {
                path: archive.to_path_buf(),
                detail,
            });
        }
        got.recipe = want.recipe.clone();
    }
    drop(dirs);
    stop_if_interrupted()?;
    tmp.publish(name.as_bytes(), dest)?;
    Ok(got)
}

/// Stops at the next entry or chunk once a stop was asked for ([`crate::interrupt`]), so the
/// temp dir is removed (by [`TempRoot`]'s drop) rather than left behind by a killed process.
fn stop_if_interrupted() -> Result<(), UnpackError> {
    if crate::interrupt::requested() {
        return Err(UnpackError::Interrupted);
    }
    Ok(())
}

/// Files up to this size are handed to the writer threads whole.
const PARALLEL_FILE: u64 = 1 << 20;

/// The private directory an unpack writes into, beside DEST, held open from its creation to its
/// rename. Dropped before [`TempRoot::publish`] succeeds, it removes what was written (through
/// its handle) and then its name, if the name still leads to it.
struct TempRoot {
    parent: Dir,
    parent_path: PathBuf,
    name: CString,
    root: Arc<Dir>,
    id: fsat::FileId,
    published: bool,
}

impl TempRoot {
    /// `.<DEST name, at most 32 bytes>.sealpush-unpack-<8 hex>` in `parent`, mode 0700: short
    /// whatever DEST's name (a DEST name near the 255-byte limit must still leave room).
    fn create(parent_path: &Path, dest_name: &[u8]) -> Result<TempRoot, UnpackError> {
        use std::hash::{BuildHasher, Hasher};
        let parent = Dir::open(parent_path).map_err(io_at(parent_path))?;
        let stem = &dest_name[..dest_name.len().min(32)];
        let mut attempt = 0;
        let name = loop {
            // RandomState is seeded randomly per process and differs on every call.
            let r = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let mut n = b".".to_vec();
            n.extend_from_slice(stem);
            n.extend_from_slice(format!(".sealpush-unpack-{:08x}", r as u32).as_bytes());
            let c = fsat::cname(&n).map_err(io_at(parent_path))?;
            match parent.mkdir(&c, 0o700) {
                Ok(()) => break c,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(io_at(&parent_path.join(OsStr::from_bytes(&n)))(e)),
            }
        };
        let path = parent_path.join(OsStr::from_bytes(name.as_bytes()));
        let root = parent.open_dir(&name).map_err(io_at(&path))?;
        let (id, uid) = root.stat().map_err(io_at(&path))?;
        let mut t = TempRoot {
            parent,
            parent_path: parent_path.to_path_buf(),
            name,
            root: Arc::new(root),
            id,
            published: false,
        };
        // Between mkdirat and openat the name may have been swapped for someone else's
        // directory (O_NOFOLLOW only stops a symlink): ours has our uid.
        // SAFETY: geteuid has no preconditions.
        if uid != unsafe { libc::geteuid() } {
            t.published = true; // not ours: neither empty nor remove it
            return Err(UnpackError::Replaced {
                path,
                detail: "the temporary directory was swapped as it was created",
            });
        }
        // The umask may have narrowed the mode below what we need to write in it.
        t.root.chmod(0o700).map_err(io_at(&path))?;
        Ok(t)
    }

    fn path(&self) -> PathBuf {
        self.parent_path
            .join(OsStr::from_bytes(self.name.as_bytes()))
    }

    /// Gives the directory its final mode and renames it to `dest_name` (the last component of
    /// `dest`) without replacing anything, then checks that `dest` is the directory written.
    fn publish(mut self, dest_name: &[u8], dest: &Path) -> Result<(), UnpackError> {
        let replaced = |path: PathBuf, detail| UnpackError::Replaced { path, detail };
        if self.parent.id_of(&self.name).ok() != Some(self.id) {
            return Err(replaced(
                self.path(),
                "its name no longer leads to the directory sealpush wrote; nothing was unpacked",
            ));
        }
        self.root.chmod(0o755).map_err(io_at(&self.path()))?;
        let to = fsat::cname(dest_name).map_err(io_at(dest))?;
        match self.parent.rename_noreplace(&self.name, &self.parent, &to) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                return Err(UnpackError::Exists {
                    path: dest.to_path_buf(),
                })
            }
            Err(e) => return Err(io_at(dest)(e)),
        }
        // The name may have been swapped between the check above and the rename.
        if self.parent.id_of(&to).ok() != Some(self.id) {
            return Err(replaced(
                dest.to_path_buf(),
                "the rename put something else there, not the directory sealpush wrote; do not use it",
            ));
        }
        self.published = true;
        Ok(())
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let _ = self.root.remove_contents();
        if self.parent.id_of(&self.name).ok() == Some(self.id) {
            let _ = self.parent.rmdir(&self.name);
        }
    }
}

/// Opens the directory each entry goes into, walking from the temp dir's handle one component
/// at a time (never through a symlink), and keeps the last one: archives list siblings together,
/// and a directory's entries follow it.
struct Parents {
    root: Arc<Dir>,
    last: Option<(Vec<u8>, Arc<Dir>)>,
}

impl Parents {
    fn new(root: Arc<Dir>) -> Parents {
        Parents { root, last: None }
    }

    /// The directory holding `path` (a checked relative path) and `path`'s last component.
    fn parent_of(&mut self, path: &[u8]) -> io::Result<(Arc<Dir>, CString)> {
        let (parent, name) = match manifest::parent_of(path) {
            Some(p) => (p, &path[p.len() + 1..]),
            None => (&b""[..], path),
        };
        let name = fsat::cname(name)?;
        if parent.is_empty() {
            return Ok((self.root.clone(), name));
        }
        if let Some((p, d)) = &self.last {
            if p == parent {
                return Ok((d.clone(), name));
            }
        }
        let below_last = self.last.as_ref().and_then(|(p, d)| {
            let rest = parent.strip_prefix(&p[..])?.strip_prefix(b"/")?;
            Some((d.clone(), rest))
        });
        let dir = Arc::new(match below_last {
            Some((d, rest)) => d.open_path(rest)?,
            None => self.root.open_path(parent)?,
        });
        self.last = Some((parent.to_vec(), dir.clone()));
        Ok((dir, name))
    }
}

fn write_file(
    dir: &Dir,
    name: &CStr,
    path: &Path,
    data: &[u8],
    mode: u32,
    chmod: bool,
) -> Result<(), UnpackError> {
    let mut f = dir.create_file(name, mode).map_err(io_at(path))?;
    f.write_all(data).map_err(io_at(path))?;
    if chmod {
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_at(path))?;
    }
    Ok(())
}

/// The process umask, read without changing it (`umask(2)` can only be read by setting it,
/// which would race with other threads): the `Umask:` line of /proc/self/status (Linux 4.7+).
fn current_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// `renameat2(RENAME_NOREPLACE)`: fails if `to` exists in any form, even as an empty directory
/// (plain `rename` would replace that silently).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<(), UnpackError> {
    use std::ffi::CString;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| UnpackError::Io {
            path: p.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"),
        })
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; AT_FDCWD
    // makes relative paths resolve against the working directory, as std's rename does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => Err(UnpackError::Exists {
            path: to.to_path_buf(),
        }),
        _ => Err(io_at(to)(err)),
    }
}
