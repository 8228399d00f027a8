//! Directory handles for extraction: every call names one component inside a directory this
//! process holds open, and none follows a symlink.
//!
//! Paths are resolved again on every use, so whoever can rename entries in DEST's parent could
//! swap the temporary directory (or any directory inside it) for a symlink between two calls and
//! redirect them. Holding the directory open and using the `*at` calls (`mkdirat`,
//! `openat(O_NOFOLLOW)`, `symlinkat`, `linkat`, `fchmod`, `renameat2`) makes every operation land
//! in the directory that was created, whatever happens to its name.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An open directory.
#[derive(Debug)]
pub(super) struct Dir(OwnedFd);

/// (device, inode): what a name must still lead to for it to be the directory opened.
pub(super) type FileId = (u64, u64);

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A name as the `*at` calls take it; a NUL inside is refused (the checker refuses it earlier).
pub(super) fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

impl Dir {
    /// Opens the directory at `path`, which may be reached through symlinks: it is the caller's
    /// own choice of place (DEST's parent), not a name from the archive.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = cname(path.as_os_str().as_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated string; the returned fd is owned by us.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just opened and is not owned by anything else.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The directory `name` inside this one; fails (ELOOP or ENOTDIR) if `name` is a symlink or
    /// not a directory.
    pub fn open_dir(&self, name: &CStr) -> io::Result<Dir> {
        // SAFETY: valid fd and NUL-terminated name; the returned fd is owned by us.
        let fd = cvt(unsafe { libc::openat(self.fd(), name.as_ptr(), DIR_FLAGS) })?;
        // SAFETY: `fd` was just opened and is not owned by anything else.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens the directory `rel` (a validated relative path, no `.`/`..`), one component at a
    /// time, none a symlink.
    pub fn open_path(&self, rel: &[u8]) -> io::Result<Dir> {
        let mut parts = rel.split(|&b| b == b'/');
        let first = parts.next().unwrap_or(b"");
        let mut d = self.open_dir(&cname(first)?)?;
        for p in parts {
            d = d.open_dir(&cname(p)?)?;
        }
        Ok(d)
    }

    pub fn mkdir(&self, name: &CStr, mode: u32) -> io::Result<()> {
        // SAFETY: valid fd and NUL-terminated name.
        cvt(unsafe { libc::mkdirat(self.fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
    }

    /// A new regular file, created exclusively (an existing name of any kind, a symlink
    /// included, is EEXIST).
    pub fn create_file(&self, name: &CStr, mode: u32) -> io::Result<File> {
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: valid fd and NUL-terminated name; the returned fd is owned by the File.
        let fd =
            cvt(unsafe { libc::openat(self.fd(), name.as_ptr(), flags, mode as libc::c_uint) })?;
        // SAFETY: `fd` was just opened and is not owned by anything else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    pub fn symlink(&self, target: &CStr, name: &CStr) -> io::Result<()> {
        // SAFETY: valid fd and NUL-terminated strings.
        cvt(unsafe { libc::symlinkat(target.as_ptr(), self.fd(), name.as_ptr()) }).map(drop)
    }

    /// `linkat` without `AT_SYMLINK_FOLLOW`: links the name `target` itself.
    pub fn hard_link(&self, target: &CStr, to: &Dir, name: &CStr) -> io::Result<()> {
        // SAFETY: valid fds and NUL-terminated names.
        cvt(unsafe { libc::linkat(self.fd(), target.as_ptr(), to.fd(), name.as_ptr(), 0) })
            .map(drop)
    }

    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        // SAFETY: valid fd.
        cvt(unsafe { libc::fchmod(self.fd(), mode as libc::mode_t) }).map(drop)
    }

    /// Device, inode and uid of the open directory.
    pub fn stat(&self) -> io::Result<(FileId, u32)> {
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and a pointer to a `stat` we own.
        cvt(unsafe { libc::fstat(self.fd(), &mut st) })?;
        Ok(((st.st_dev, st.st_ino), st.st_uid))
    }

    /// Device and inode of whatever `name` is now (not following a symlink).
    pub fn id_of(&self, name: &CStr) -> io::Result<FileId> {
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, NUL-terminated name, a pointer to a `stat` we own.
        cvt(unsafe {
            libc::fstatat(self.fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW)
        })?;
        Ok((st.st_dev, st.st_ino))
    }

    /// `renameat2(RENAME_NOREPLACE)`: fails with EEXIST if `to` exists in any form.
    pub fn rename_noreplace(&self, from: &CStr, to_dir: &Dir, to: &CStr) -> io::Result<()> {
        // SAFETY: valid fds and NUL-terminated names.
        cvt(unsafe {
            libc::renameat2(
                self.fd(),
                from.as_ptr(),
                to_dir.fd(),
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        })
        .map(drop)
    }

    /// Removes the empty directory `name`.
    pub fn rmdir(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: valid fd and NUL-terminated name.
        cvt(unsafe { libc::unlinkat(self.fd(), name.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
    }

    /// Removes everything inside this directory, descending only through directories opened
    /// with `O_NOFOLLOW`. Best effort: stops at the first error.
    pub fn remove_contents(&self) -> io::Result<()> {
        for name in self.names()? {
            // SAFETY: valid fd and NUL-terminated name.
            let rc = unsafe { libc::unlinkat(self.fd(), name.as_ptr(), 0) };
            if rc == 0 {
                continue;
            }
            let err = io::Error::last_os_error();
            // Linux answers EISDIR for a directory.
            if err.raw_os_error() != Some(libc::EISDIR) {
                return Err(err);
            }
            self.open_dir(&name)?.remove_contents()?;
            self.rmdir(&name)?;
        }
        Ok(())
    }

    /// The names in this directory, `.` and `..` excepted.
    fn names(&self) -> io::Result<Vec<CString>> {
        // fdopendir takes ownership of its fd: give it a duplicate.
        // SAFETY: valid fd.
        let dup = cvt(unsafe { libc::fcntl(self.fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: `dup` is a valid directory fd that the DIR stream now owns.
        let dir = unsafe { libc::fdopendir(dup) };
        if dir.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `dup` is still ours to close.
            unsafe { libc::close(dup) };
            return Err(err);
        }
        // A fresh duplicate shares the file offset of `self`: start from the beginning.
        // SAFETY: `dir` is a valid DIR stream.
        unsafe { libc::rewinddir(dir) };
        let mut names = Vec::new();
        loop {
            // SAFETY: `dir` is a valid DIR stream; the entry is only read before the next call.
            let e = unsafe { libc::readdir(dir) };
            if e.is_null() {
                break;
            }
            // SAFETY: `d_name` is a NUL-terminated string inside the entry.
            let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) };
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name.to_owned());
            }
        }
        // SAFETY: `dir` is a valid DIR stream, closed once (this also closes `dup`).
        unsafe { libc::closedir(dir) };
        Ok(names)
    }

    fn fd(&self) -> libc::c_int {
        self.0.as_raw_fd()
    }
}
