//! Checked reading and extraction of tar.zst / tar.gz archives.
//!
//! The tar crate is used only to split the stream into entries (headers, PAX and GNU long
//! names); its own `unpack` is never called, because it silently skips or rewrites entries that
//! sealpush must refuse. Every entry goes through [`Checker`] before anything is done with it.
//! [`unpack`] writes into a fresh temporary directory beside DEST (files created exclusively,
//! parents always directories it created itself, so no symlink is ever followed), verifies the
//! result against the expected manifest, and only then renames it to DEST without replacing
//! anything; on any failure the temporary directory is removed and DEST never appears.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::manifest::{self, Entry, EntryKind, Manifest, ManifestError};
use crate::progress::Progress;

use super::check::{CheckedEntry, CheckedKind, Checker, RawEntry, Rejected};
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

/// sha256 and length of every byte read from the archive file, shared with the caller while the
/// decoder owns the reader.
type ArchiveTally = std::sync::Arc<std::sync::Mutex<(sha2::Sha256, u64)>>;

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
            t.0.update(&buf[..n]);
            t.1 += n as u64;
        }
        Ok(n)
    }
}

/// Opens `archive` and returns a decompressing reader, format chosen by magic bytes.
fn open_decoder(archive: &Path, tally: Option<ArchiveTally>) -> Result<Box<dyn Read>, UnpackError> {
    let open = |source| UnpackError::Open {
        path: archive.to_path_buf(),
        source,
    };
    let file = fs::File::open(archive).map_err(open)?;
    let mut f = BufReader::with_capacity(1 << 20, Tallied { file, tally });
    let head = {
        use io::BufRead;
        f.fill_buf().map_err(open)?.to_vec()
    };
    match Format::sniff(&head) {
        Some(Format::TarZst) => Ok(Box::new(
            zstd::stream::read::Decoder::with_buffer(f).map_err(open)?,
        )),
        // Multi-member so that anything after the first member must itself be valid gzip:
        // trailing garbage is an error, not silently ignored.
        Some(Format::TarGz) => Ok(Box::new(flate2::bufread::MultiGzDecoder::new(f))),
        None => Err(UnpackError::UnknownFormat {
            path: archive.to_path_buf(),
        }),
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
    read_checked_tallied(archive, known, None, visit)
}

/// [`read_checked`] against a known manifest (contents not hashed, as in [`unpack_unhashed`]),
/// also returning the sha256 and size of the archive file itself, computed from the very bytes
/// that were decompressed: one read of the file serves both the archive check and the entries.
pub fn read_checked_streaming(
    archive: &Path,
    known: &Manifest,
    visit: impl FnMut(&CheckedEntry, &mut dyn Read) -> Result<(), UnpackError>,
) -> Result<(Manifest, Digest, u64), UnpackError> {
    use sha2::Digest as _;
    let tally: ArchiveTally = Default::default();
    let m = read_checked_tallied(archive, Some(known), Some(tally.clone()), visit)?;
    let (h, n) = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((m, Digest(h.finalize().into()), n))
}

fn read_checked_tallied(
    archive: &Path,
    known: Option<&Manifest>,
    tally: Option<ArchiveTally>,
    mut visit: impl FnMut(&CheckedEntry, &mut dyn Read) -> Result<(), UnpackError>,
) -> Result<Manifest, UnpackError> {
    let corrupt = |source| UnpackError::Corrupt {
        path: archive.to_path_buf(),
        source,
    };
    let mut ar = tar::Archive::new(open_decoder(archive, tally)?);
    let mut checker = Checker::new();
    let mut entries: Vec<Entry> = Vec::new();
    // Index by path of the files seen, for hard links.
    let mut files: std::collections::HashMap<Vec<u8>, (u64, Digest, bool)> = Default::default();
    for e in ar.entries().map_err(corrupt)? {
        let mut e = e.map_err(corrupt)?;
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
        let Some(checked) = checker
            .check(RawEntry {
                path: &path,
                entry_type,
                mode,
                size,
                link: link.as_deref(),
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
    // Drain the rest of the compressed stream: this is where zstd checks its checksum and gzip
    // its CRC and length.
    io::copy(&mut ar.into_inner(), &mut io::sink()).map_err(corrupt)?;
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
    unpack_with(archive, dest, expected, true, progress)
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
    unpack_with(archive, dest, Some(expected), false, progress)
}

fn unpack_with(
    archive: &Path,
    dest: &Path,
    expected: Option<&Manifest>,
    hash: bool,
    progress: &dyn Progress,
) -> Result<Manifest, UnpackError> {
    match fs::symlink_metadata(dest) {
        Ok(_) => {
            return Err(UnpackError::Exists {
                path: dest.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
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
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(name.as_bytes());
    prefix.extend_from_slice(b".sealpush-unpack-");
    let tmp = tempfile::Builder::new()
        .prefix(std::ffi::OsStr::from_bytes(&prefix))
        .tempdir_in(parent)
        .map_err(io_at(parent))?;
    let root = tmp.path().to_path_buf();
    progress.start("unpacking", expected.map(|m| m.total_bytes()), None);
    let umask = current_umask();
    // Only chmod when the umask narrowed the mode (saves a syscall per file in the usual case).
    let narrowed = |mode: u32| umask.map_or(true, |m| mode & !m != mode);
    // Small files are written by worker threads while this thread decompresses and checks the
    // next entries; directories are created here, before any entry inside them is handed out.
    // Hard links wait until every file is written (their targets must be complete).
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let failed: std::sync::Mutex<Option<UnpackError>> = std::sync::Mutex::new(None);
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(PathBuf, Vec<u8>, u32)>(256);
    let rx = std::sync::Mutex::new(rx);
    let result = std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((path, data, mode)) = job else { break };
                if let Err(e) = write_file(&path, &data, mode, narrowed(mode)) {
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                }
            });
        }
        let mut buf = vec![0u8; 256 * 1024];
        let known = if hash { None } else { expected };
        let r = read_checked_with(archive, known, |entry, data| {
            if let Some(e) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Err(e);
            }
            let path = root.join(std::ffi::OsStr::from_bytes(&entry.path));
            match &entry.kind {
                CheckedKind::Dir => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(io_at(&path))?;
                    if narrowed(0o755) {
                        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                            .map_err(io_at(&path))?;
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
                        tx.send((path, content, mode))
                            .expect("workers live until the sender is dropped");
                        return Ok(());
                    }
                    let mut f = create_file(&path, mode)?;
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
                    }
                    if narrowed(mode) {
                        f.set_permissions(fs::Permissions::from_mode(mode))
                            .map_err(io_at(&path))?;
                    }
                    progress.advance(0, 1);
                }
                CheckedKind::Symlink { target } => {
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                        .map_err(io_at(&path))?;
                }
                CheckedKind::HardLink { target } => {
                    links.push((root.join(std::ffi::OsStr::from_bytes(target)), path));
                }
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
            // linkat without AT_SYMLINK_FOLLOW: links the name itself, a checked regular file.
            fs::hard_link(target, path).map_err(io_at(path))?;
        }
        Ok(m)
    });
    progress.finish();
    let mut got = result?;
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
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).map_err(io_at(&root))?;
    rename_noreplace(&root, dest)?;
    // Renamed away: nothing left for the guard to remove.
    let _ = tmp.keep();
    Ok(got)
}

/// Files up to this size are handed to the writer threads whole.
const PARALLEL_FILE: u64 = 1 << 20;

/// A new file, created exclusively and never through a symlink.
fn create_file(path: &Path, mode: u32) -> Result<fs::File, UnpackError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_at(path))
}

fn write_file(path: &Path, data: &[u8], mode: u32, chmod: bool) -> Result<(), UnpackError> {
    let mut f = create_file(path, mode)?;
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
