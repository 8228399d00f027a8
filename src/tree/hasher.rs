//! Hashing local files: the one place that chooses *how* to read (b3sum's `hash_path` habit).
//! Small files are read into a per-thread buffer; large ones are mapped in fixed windows, so the
//! page cache is hashed in place without a copy while resident memory stays bounded by
//! `threads × WINDOW`, whatever the file sizes.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Files at least this large are mapped rather than read. Below it, one read() into a warm
/// buffer costs less than setting up and tearing down a mapping.
pub const MMAP_MIN: u64 = 256 * 1024;

/// Bytes mapped at a time. Small enough that two workers stay far below the 100 MiB RSS target
/// (mapped file pages count as resident), large enough that the map/unmap cost is noise.
pub const WINDOW: u64 = 8 * 1024 * 1024;

/// Read buffer size for the buffered path (one per thread, reused).
const BUF: usize = 128 * 1024;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; BUF]);
}

/// What a path names when opened (following symlinks, as sha256sum's fopen does).
#[derive(Debug)]
pub enum Opened {
    /// A regular file, hashed: digest and bytes read.
    Hashed(Digest, u64),
    /// A FIFO or device: reading it could block forever or never end.
    Special(super::FileKind),
}

/// Hashes one local file (mmap or buffered inside).
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    match hash_at(libc::AT_FDCWD, &c)? {
        Opened::Hashed(d, n) => Ok((d, n)),
        Opened::Special(kind) => Err(io::Error::other(format!(
            "not a regular file (a {})",
            kind.noun()
        ))),
    }
}

/// Opens `path` relative to `dirfd` the way sha256sum would (following symlinks, a fifo
/// reported rather than waited on, a directory giving EISDIR) and hashes it.
pub fn hash_at(dirfd: RawFd, path: &CString) -> io::Result<Opened> {
    match open_at(dirfd, path)? {
        Open::File(file, size) => {
            let (d, n) = hash_open(&file, size)?;
            Ok(Opened::Hashed(d, n))
        }
        Open::Special(kind) => Ok(Opened::Special(kind)),
    }
}

/// [`hash_at`] of several names in one directory, results in the order of `names`. Files below
/// [`MMAP_MIN`] are read whole, then hashed together, four at a time side by side
/// ([`crate::sha256_many`]); larger ones are hashed alone, as `hash_at` does.
pub fn hash_many_at(dirfd: RawFd, names: &[&CStr]) -> Vec<io::Result<Opened>> {
    let mut out: Vec<Option<io::Result<Opened>>> = Vec::with_capacity(names.len());
    let mut small: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let r = open_at(dirfd, name).and_then(|opened| match opened {
            Open::File(file, size) if size < MMAP_MIN => {
                small.push((i, read_whole(&file, size)?));
                Ok(None)
            }
            Open::File(file, size) => {
                let (d, n) = hash_open(&file, size)?;
                Ok(Some(Opened::Hashed(d, n)))
            }
            Open::Special(kind) => Ok(Some(Opened::Special(kind))),
        });
        out.push(r.transpose());
    }
    let contents: Vec<&[u8]> = small.iter().map(|(_, d)| d.as_slice()).collect();
    let digests = crate::sha256_many::digest_many(&contents);
    for ((i, data), d) in small.iter().zip(digests) {
        out[*i] = Some(Ok(Opened::Hashed(d, data.len() as u64)));
    }
    out.into_iter()
        .map(|r| r.expect("every name has a result"))
        .collect()
}

/// An opened name: a regular file with fstat's size, or a kind that is not read.
enum Open {
    File(File, u64),
    Special(super::FileKind),
}

/// Opens `path` relative to `dirfd` as sha256sum's fopen would (following symlinks),
/// non-blocking, so a FIFO is reported instead of waiting for a writer. A directory gives
/// EISDIR, as reading one through fopen does.
fn open_at(dirfd: RawFd, path: &CStr) -> io::Result<Open> {
    // SAFETY: `path` is NUL-terminated; the returned descriptor is owned by `file` below.
    let fd = unsafe {
        libc::openat(
            dirfd,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    let meta = file.metadata()?;
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    if ft.is_fifo() {
        return Ok(Open::Special(super::FileKind::Fifo));
    }
    if ft.is_char_device() {
        return Ok(Open::Special(super::FileKind::CharDevice));
    }
    if ft.is_block_device() {
        return Ok(Open::Special(super::FileKind::BlockDevice));
    }
    // O_NONBLOCK stays set: it has no effect on regular files (Linux open(2)), and clearing it
    // would cost a syscall per file.
    Ok(Open::File(file, meta.len()))
}

/// A small file's bytes to end of file, as [`read_all_into`] reads them (one read when fstat's
/// size is right), into a buffer of its own.
fn read_whole(file: &File, expect: u64) -> io::Result<Vec<u8>> {
    // One spare byte: a file of the expected size ends on a short read, with no second call.
    let mut data: Vec<u8> = Vec::with_capacity(expect as usize + 1);
    loop {
        if data.len() == data.capacity() {
            data.reserve(BUF);
        }
        let room = data.capacity() - data.len();
        let n = read_spare(file, &mut data, room)?;
        if n == 0 || (n < room && data.len() as u64 == expect && expect > 0) {
            return Ok(data);
        }
    }
}

/// One read(2) of at most `max` bytes (no more than `data`'s spare capacity) appended to
/// `data`, straight into the spare capacity: zeroing it first would be a memset of every byte
/// read. Retries EINTR; 0 at end of file.
pub(crate) fn read_spare(file: &File, data: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = &mut data.spare_capacity_mut()[..max];
    loop {
        // SAFETY: read(2) writes at most `spare.len()` bytes at the start of `spare`, memory
        // this Vec owns and nothing else refers to; `set_len` below counts only those bytes.
        let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n >= 0 {
            // SAFETY: the first `n` bytes of the spare capacity were just written.
            unsafe { data.set_len(data.len() + n as usize) };
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn hash_open(file: &File, size: u64) -> io::Result<(Digest, u64)> {
    let mut h = Sha256::new();
    if size >= MMAP_MIN {
        let mut off = 0u64;
        while off < size {
            let len = WINDOW.min(size - off);
            // SAFETY: the mapping is read-only and private to this call. If another process
            // truncates the file while it is mapped, touching the lost pages raises SIGBUS;
            // sealpush hashes quiescent trees (the recipe's own contract is a tree that does
            // not change while it runs), as b3sum and ripgrep accept the same risk.
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(off)
                    .len(len as usize)
                    .populate()
                    .map(file)?
            };
            h.update(&map[..]);
            off += len;
        }
        // A file that grew after fstat: hash the rest with reads, as a reader would see it.
        let mut rest = file;
        use std::io::Seek;
        rest.seek(io::SeekFrom::Start(off))?;
        let tail = read_all_into(&mut h, rest, 0)?;
        return Ok((Digest(h.finalize().into()), off + tail));
    }
    let n = read_all_into(&mut h, file, size)?;
    Ok((Digest(h.finalize().into()), n))
}

/// Reads to end of file. `expect` is fstat's size: a regular file returns a short read only at
/// end of file, so a short read that brings the total to `expect` ends the loop without the
/// extra zero-length read (one syscall per file saved; the tree is quiescent by contract).
fn read_all_into(h: &mut Sha256, mut r: impl Read, expect: u64) -> io::Result<u64> {
    BUFFER.with(|b| {
        let mut buf = b.borrow_mut();
        let mut total = 0u64;
        loop {
            match r.read(&mut buf[..]) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    h.update(&buf[..n]);
                    total += n as u64;
                    if n < buf.len() && total == expect && expect > 0 {
                        return Ok(total);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })
}

/// Single-core SHA-256 throughput of this build on this machine, in bytes per second: in-memory
/// data hashed for about `budget` (the ceiling `sealpush bench` compares against).
pub fn sha256_ceiling(budget: std::time::Duration) -> f64 {
    let data = vec![0x5au8; 1 << 20];
    let start = std::time::Instant::now();
    let mut h = Sha256::new();
    let mut done = 0usize;
    while done < (8 << 20) || start.elapsed() < budget {
        h.update(&data);
        done += data.len();
    }
    std::hint::black_box(h.finalize());
    done as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffered_and_mapped_paths_agree_with_one_shot_digest() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            0usize,
            1,
            4096,
            MMAP_MIN as usize - 1,
            MMAP_MIN as usize,
            WINDOW as usize + 12345,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let p = dir.path().join(format!("f{size}"));
            std::fs::write(&p, &data).unwrap();
            let (d, n) = hash_file(&p).unwrap();
            assert_eq!(n, size as u64);
            assert_eq!(d, Digest::of(&data), "size {size}");
        }
    }

    /// `hash_many_at` gives each name what `hash_at` gives it, in order: small files hashed
    /// together, a mapped one alone, and the errors and special files in their places.
    #[test]
    fn hash_many_at_answers_each_name_as_hash_at_does() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        for (i, size) in [0usize, 1, 55, 56, 64, 4096, 9000, MMAP_MIN as usize + 3, 17]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
            std::fs::write(dir.path().join(format!("f{i}")), &data).unwrap();
            names.push(format!("f{i}"));
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let fifo = CString::new(dir.path().join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        names.splice(3..3, ["missing".to_string(), "sub".to_string()]);
        names.push("fifo".into());
        let names: Vec<CString> = names
            .into_iter()
            .map(|n| CString::new(n).unwrap())
            .collect();
        let refs: Vec<&CStr> = names.iter().map(|n| n.as_c_str()).collect();
        let d = File::open(dir.path()).unwrap();
        let many = hash_many_at(d.as_raw_fd(), &refs);
        assert_eq!(many.len(), names.len());
        for (name, got) in names.iter().zip(many) {
            let want = hash_at(d.as_raw_fd(), name);
            let show = name.to_string_lossy();
            match (got, want) {
                (Ok(Opened::Hashed(a, n)), Ok(Opened::Hashed(b, m))) => {
                    assert_eq!((a, n), (b, m), "{show}")
                }
                (Ok(Opened::Special(a)), Ok(Opened::Special(b))) => assert_eq!(a, b, "{show}"),
                (Err(a), Err(b)) => assert_eq!(a.raw_os_error(), b.raw_os_error(), "{show}"),
                (got, want) => panic!("{show}: {got:?} against {want:?}"),
            }
        }
    }

    #[test]
    fn directory_is_eisdir_and_missing_is_enoent() {
        let dir = tempfile::tempdir().unwrap();
        let e = hash_file(dir.path()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
        let e = hash_file(&dir.path().join("nope")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
