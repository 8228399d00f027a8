//! Stage 1 of the recipe: `find PATH... -type f` (rules F1–F7 of `recipe-semantics.md`).
//!
//! Guarantees: PATH arguments in the order given, each classified with `lstat` (a symlink PATH
//! is not followed, `ld/` is, through the kernel); spelling never normalised (child = parent +
//! `/` + name unless the parent ends in `/`); pre-order, entries in readdir order, except that a
//! directory with more than 10,000 entries on a filesystem other than tmpfs/NFS/CIFS is visited
//! in inode order, as gnulib fts does; only regular files (by lstat / d_type) are listed; raw
//! bytes; no path length limit (directories are opened relative to their parent's descriptor,
//! as fts does). find's errors become warnings and the walk goes on.
//!
//! Two walkers share these rules: [`walk_source`] over any [`TreeSource`] (sequential, for remote
//! hosts) and [`walk_local`] (parallel over subdirectories with rayon, optionally hashing each
//! regular file as it is found; the output order is rebuilt from the tree, never from thread
//! timing). The inode-order rule is applied by the local walkers only: SFTP listings carry no
//! inode numbers, and the rule can only show in the order of lines that strcoll calls equal.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use rayon::prelude::*;

use super::hasher::{hash_at, hash_many_at, Opened};
use super::{show, FileKind, TreeSource};
use crate::progress::Progress;

/// gnulib fts: `FTS_INODE_SORT_DIR_ENTRIES_THRESHOLD`.
pub const INODE_SORT_THRESHOLD: usize = 10_000;

/// What find printed, and what it said on stderr.
#[derive(Debug, Default)]
pub struct WalkOut {
    /// Regular files, in find's order, spelled as find spells them.
    pub files: Vec<Vec<u8>>,
    /// find's error messages.
    pub warnings: Vec<String>,
    /// When the local walk hashes as it goes: each file's content, opened relative to its
    /// directory's descriptor, parallel to `files`. Empty otherwise.
    pub hashes: Vec<io::Result<Opened>>,
}

impl WalkOut {
    fn append(&mut self, mut other: WalkOut) {
        self.files.append(&mut other.files);
        self.warnings.append(&mut other.warnings);
        self.hashes.append(&mut other.hashes);
    }

    fn error(path: &[u8], err: &io::Error) -> WalkOut {
        WalkOut {
            warnings: vec![find_error(path, err)],
            ..WalkOut::default()
        }
    }

    fn push_file(&mut self, path: Vec<u8>, hash: Option<io::Result<Opened>>) {
        self.files.push(path);
        if let Some(h) = hash {
            self.hashes.push(h);
        }
    }
}

/// Hashes `name` relative to `dirfd` when the walk hashes as it goes.
fn hash_entry(
    dirfd: RawFd,
    name: &[u8],
    hashing: Option<&dyn Progress>,
) -> Option<io::Result<Opened>> {
    let progress = hashing?;
    let r = cstring(name).and_then(|c| hash_at(dirfd, &c));
    report(&r, progress);
    Some(r)
}

/// The regular files of `run`, hashed together ([`hash_many_at`]), one result each in order.
fn hash_run(dirfd: RawFd, run: &[RawEntry], progress: &dyn Progress) -> Vec<io::Result<Opened>> {
    let names: Vec<io::Result<CString>> = run
        .iter()
        .filter(|e| e.kind == FileKind::File)
        .map(|e| cstring(&e.name))
        .collect();
    let valid: Vec<&CStr> = names.iter().flatten().map(|c| c.as_c_str()).collect();
    let mut hashed = hash_many_at(dirfd, &valid).into_iter();
    names
        .into_iter()
        .map(|name| {
            let r = name.and_then(|_| hashed.next().expect("a result per name"));
            report(&r, progress);
            r
        })
        .collect()
}

/// A file hashed: its bytes and itself count as done.
fn report(r: &io::Result<Opened>, progress: &dyn Progress) {
    if let Ok(Opened::Hashed(_, n)) = r {
        progress.advance(*n, 1);
    }
}

/// `parent` + name, inserting `/` unless `parent` already ends in one (F3).
pub fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !parent.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// find's message for an error on `path`.
pub fn find_error(path: &[u8], err: &io::Error) -> String {
    format!("find: '{}': {}", show(path), super::sha256sum::reason(err))
}

/// The walk over any source, one directory at a time.
pub fn walk_source<S: TreeSource + ?Sized>(src: &S, roots: &[Vec<u8>]) -> WalkOut {
    let mut out = WalkOut::default();
    for root in roots {
        match src.lstat_kind(root) {
            Err(e) => out.warnings.push(find_error(root, &e)),
            Ok(FileKind::File) => out.files.push(root.clone()),
            Ok(FileKind::Dir) => walk_source_dir(src, root, &mut out),
            Ok(_) => {}
        }
    }
    out
}

fn walk_source_dir<S: TreeSource + ?Sized>(src: &S, dir: &[u8], out: &mut WalkOut) {
    let entries = match src.read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            out.warnings.push(find_error(dir, &e));
            return;
        }
    };
    for (name, kind) in entries {
        match kind {
            FileKind::File => out.files.push(child_path(dir, &name)),
            FileKind::Dir => walk_source_dir(src, &child_path(dir, &name), out),
            _ => {}
        }
    }
}

/// One raw directory entry.
pub(crate) struct RawEntry {
    pub name: Vec<u8>,
    pub kind: FileKind,
    pub ino: u64,
}

fn kind_of_mode(mode: libc::mode_t) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        _ => FileKind::Other,
    }
}

fn kind_of_dtype(t: u8) -> Option<FileKind> {
    Some(match t {
        libc::DT_REG => FileKind::File,
        libc::DT_DIR => FileKind::Dir,
        libc::DT_LNK => FileKind::Symlink,
        libc::DT_FIFO => FileKind::Fifo,
        libc::DT_SOCK => FileKind::Socket,
        libc::DT_CHR => FileKind::CharDevice,
        libc::DT_BLK => FileKind::BlockDevice,
        _ => return None,
    })
}

/// `fstatat(dirfd, path)`'s kind; `follow` = stat, else lstat.
pub(crate) fn stat_kind_at(dirfd: RawFd, path: &CStr, follow: bool) -> io::Result<FileKind> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: path is NUL-terminated, st is a valid out-pointer filled on success.
    let r = unsafe { libc::fstatat(dirfd, path.as_ptr(), st.as_mut_ptr(), flags) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so st is initialised.
    Ok(kind_of_mode(unsafe { st.assume_init() }.st_mode))
}

pub(crate) fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens directory `path` relative to `dirfd` (following a trailing-slash symlink, as the
/// kernel does for `ld/`).
pub(crate) fn open_dir_at(dirfd: RawFd, path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: path is NUL-terminated; on success the descriptor is owned by the OwnedFd.
    let fd = unsafe {
        libc::openat(
            dirfd,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads a directory's entries in find's order (readdir order, or inode order above the fts
/// threshold on filesystems where fts sorts). Entry kinds come from d_type, or lstat when the
/// filesystem does not fill it in.
pub(crate) fn read_entries(dir: &OwnedFd) -> io::Result<Vec<RawEntry>> {
    // fdopendir takes ownership of its descriptor; give it a duplicate so `dir` stays usable for
    // openat of the children.
    // SAFETY: dup of a valid descriptor.
    let dup = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup is a fresh directory descriptor; on success DIR owns it (closedir closes it).
    let dp = unsafe { libc::fdopendir(dup) };
    if dp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so we still own dup.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut entries = Vec::new();
    let result = loop {
        // readdir signals errors only through errno, so clear it first.
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: dp is a valid open DIR used by this thread only.
        let ent = unsafe { libc::readdir64(dp) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error().unwrap_or(0) != 0 {
                Err(e)
            } else {
                Ok(())
            };
        }
        // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated; it stays
        // valid until the next readdir on dp, and we copy it before that.
        let (name, dtype, ino) = unsafe {
            let e = &*ent;
            (
                CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(),
                e.d_type,
                e.d_ino,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match kind_of_dtype(dtype) {
            Some(k) => k,
            None => {
                let c = cstring(&name)?;
                stat_kind_at(dir.as_raw_fd(), &c, false).unwrap_or(FileKind::Other)
            }
        };
        entries.push(RawEntry { name, kind, ino });
    };
    // SAFETY: dp is valid and closed exactly once (this also closes dup).
    unsafe { libc::closedir(dp) };
    result?;
    if entries.len() > INODE_SORT_THRESHOLD && inode_sort_applies(dir) {
        // gnulib fts sorts with qsort on d_ino; inode numbers are unique within a directory
        // except for hard links to the same file, whose relative order cannot show after sort.
        entries.sort_by_key(|e| e.ino);
    }
    Ok(entries)
}

/// gnulib's `dirent_inode_sort_may_be_useful`: false on tmpfs, NFS and CIFS.
fn inode_sort_applies(dir: &OwnedFd) -> bool {
    let mut sfs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: valid descriptor and out-pointer.
    if unsafe { libc::fstatfs(dir.as_raw_fd(), sfs.as_mut_ptr()) } != 0 {
        return true;
    }
    // SAFETY: fstatfs succeeded.
    let t = unsafe { sfs.assume_init() }.f_type as u64;
    !matches!(t, 0x0102_1994 | 0x6969 | 0xFF53_4D42)
}

/// The parallel local walk, relative to `base` (a directory descriptor or `AT_FDCWD`). With
/// `hashing`, every regular file is also hashed as soon as it is found, opened relative to its
/// directory (no second path lookup), with progress reported there; [`WalkOut::hashes`] holds
/// the results.
pub fn walk_local(base: RawFd, roots: &[Vec<u8>], hashing: Option<&dyn Progress>) -> WalkOut {
    let mut out = WalkOut::default();
    for root in roots {
        let c = match cstring(root) {
            Ok(c) => c,
            Err(e) => {
                out.warnings.push(find_error(root, &e));
                continue;
            }
        };
        match stat_kind_at(base, &c, false) {
            Err(e) => out.warnings.push(find_error(root, &e)),
            Ok(FileKind::File) => {
                let h = hash_entry(base, root, hashing);
                out.push_file(root.clone(), h)
            }
            Ok(FileKind::Dir) => match open_dir_at(base, &c) {
                Ok(fd) => out.append(walk_fd(fd, root.clone(), 0, hashing)),
                Err(e) => out.warnings.push(find_error(root, &e)),
            },
            Ok(_) => {}
        }
    }
    out
}

/// Below this depth the walk fans out over rayon (recursively); deeper subtrees are walked by
/// [`walk_deep`] with an explicit stack, so a tree thousands of levels deep (find handles them)
/// cannot overflow a worker's stack.
const PARALLEL_DEPTH: usize = 48;

fn walk_fd(fd: OwnedFd, path: Vec<u8>, depth: usize, hashing: Option<&dyn Progress>) -> WalkOut {
    if depth >= PARALLEL_DEPTH {
        return walk_deep(fd, path, hashing);
    }
    let entries = match read_entries(&fd) {
        Ok(e) => e,
        Err(e) => return WalkOut::error(&path, &e),
    };
    // Files are hashed below, in runs; `visit` only lists them.
    let visit = |e: &RawEntry| -> Option<WalkOut> {
        match e.kind {
            FileKind::File => {
                let mut one = WalkOut::default();
                one.push_file(child_path(&path, &e.name), None);
                Some(one)
            }
            FileKind::Dir => {
                let child = child_path(&path, &e.name);
                Some(
                    match cstring(&e.name).and_then(|c| open_dir_at(fd.as_raw_fd(), &c)) {
                        Ok(cfd) => walk_fd(cfd, child, depth + 1, hashing),
                        Err(err) => WalkOut::error(&child, &err),
                    },
                )
            }
            _ => None,
        }
    };
    // Subdirectories, and files when they are hashed here, fan out over rayon; collect() keeps
    // entry order. A leaf that is only listed is walked inline: a task per name costs more
    // than it saves. When hashing, each subdirectory is a task of its own and the other
    // entries go in runs of up to 16, whose files are hashed together (four SHA-256 lanes at
    // once); a run that held directories too serialised the tree's upper levels.
    let items: Vec<WalkOut> = if let Some(progress) = hashing {
        let tasks: Vec<&[RawEntry]> = entries
            .chunk_by(|a, b| a.kind != FileKind::Dir && b.kind != FileKind::Dir)
            .flat_map(|run| run.chunks(16))
            .collect();
        let runs: Vec<Vec<WalkOut>> = tasks
            .par_iter()
            .with_max_len(1)
            .map(|run| {
                let mut hashed = hash_run(fd.as_raw_fd(), run, progress).into_iter();
                run.iter()
                    .filter_map(|e| {
                        if e.kind != FileKind::File {
                            return visit(e);
                        }
                        let mut one = WalkOut::default();
                        let h = hashed.next().expect("a result per file");
                        one.push_file(child_path(&path, &e.name), Some(h));
                        Some(one)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        runs.into_iter().flatten().collect()
    } else if entries.iter().any(|e| e.kind == FileKind::Dir) {
        entries
            .par_iter()
            .with_max_len(16)
            .filter_map(visit)
            .collect()
    } else {
        entries.iter().filter_map(visit).collect()
    };
    let mut out = WalkOut::default();
    for it in items {
        out.append(it);
    }
    out
}

/// The same walk, sequential and iterative: one frame per open directory on an explicit stack.
/// Each level holds one descriptor (as a recursive openat walk must), so the limit is the
/// process's descriptor limit, reported as find would report EMFILE, not a crash.
fn walk_deep(fd: OwnedFd, path: Vec<u8>, hashing: Option<&dyn Progress>) -> WalkOut {
    struct Frame {
        fd: OwnedFd,
        path: Vec<u8>,
        entries: std::vec::IntoIter<RawEntry>,
    }
    let mut out = WalkOut::default();
    let mut stack: Vec<Frame> = Vec::new();
    match read_entries(&fd) {
        Ok(e) => stack.push(Frame {
            fd,
            path,
            entries: e.into_iter(),
        }),
        Err(e) => {
            out.warnings.push(find_error(&path, &e));
            return out;
        }
    }
    while let Some(top) = stack.last_mut() {
        let Some(e) = top.entries.next() else {
            stack.pop();
            continue;
        };
        match e.kind {
            FileKind::File => {
                let h = hash_entry(top.fd.as_raw_fd(), &e.name, hashing);
                out.push_file(child_path(&top.path, &e.name), h);
            }
            FileKind::Dir => {
                let child = child_path(&top.path, &e.name);
                let opened = cstring(&e.name).and_then(|c| open_dir_at(top.fd.as_raw_fd(), &c));
                match opened.and_then(|cfd| read_entries(&cfd).map(|list| (cfd, list))) {
                    Ok((cfd, list)) => stack.push(Frame {
                        fd: cfd,
                        path: child,
                        entries: list.into_iter(),
                    }),
                    Err(err) => out.warnings.push(find_error(&child, &err)),
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_paths_keep_the_spelling() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"d", b"d/a"),
            (b"d/", b"d/a"),
            (b"d//", b"d//a"),
            (b"./d", b"./d/a"),
            (b"d/.", b"d/./a"),
            (b".", b"./a"),
            (b"/", b"/a"),
        ];
        for (parent, want) in cases {
            assert_eq!(child_path(parent, b"a"), want.to_vec());
        }
    }
}
