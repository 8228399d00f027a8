//! Remote hosts: the operations sealpush needs from a host, over SFTP ([`sftp`]) or on this
//! machine's own filesystem ([`local`], the `--host local` transport for demos and trials).
//!
//! The trait is synchronous; the SFTP implementation owns a tokio runtime and pipelines the bulk
//! operations ([`Remote::hash_files`], [`Remote::put_new_files`]) internally. Every remote path is
//! absolute. Every mutating operation is *exclusive*: it fails rather than replace or follow
//! something that already exists at the name.

pub mod local;
pub mod sftp;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::progress::Progress;

/// What a name is, as `lstat` (or `stat` for [`Remote::stat`]) reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

impl FileKind {
    /// The kind in words, for messages (`character device`, not Rust's `CharDevice`).
    pub fn noun(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
            FileKind::Other => "special file",
        }
    }
}

/// Metadata of one name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

impl Meta {
    /// A directory anyone may write in without the sticky bit: anyone could rename or replace
    /// the names in it, so nothing sealpush creates there stays where it put it.
    pub fn open_to_swaps(&self) -> bool {
        self.kind == FileKind::Dir && self.mode & 0o002 != 0 && self.mode & 0o1000 == 0
    }
}

/// One directory entry, in the server's readdir order. Never `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Raw name bytes (no `/`).
    pub name: Vec<u8>,
    /// The entry's own kind (lstat: a symlink is `Symlink`).
    pub meta: Meta,
}

/// statvfs of the filesystem holding a path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FsStats {
    /// Fragment size: the unit of `blocks` and `blocks_avail`.
    pub frsize: u64,
    pub blocks: u64,
    /// Blocks available to an unprivileged user.
    pub blocks_avail: u64,
    /// Filesystem id: equal ids mean the same filesystem, so a rename between them is atomic.
    pub fsid: u64,
    pub read_only: bool,
    pub name_max: u64,
    /// Inodes (files, directories, links) an unprivileged user may still create; `None` when
    /// the filesystem sets no such limit (it reports no inodes at all, as btrfs does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_avail: Option<u64>,
}

impl FsStats {
    pub fn total_bytes(&self) -> u64 {
        self.frsize.saturating_mul(self.blocks)
    }
    pub fn avail_bytes(&self) -> u64 {
        self.frsize.saturating_mul(self.blocks_avail)
    }
}

/// Facts about a host that need no remote command.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostFacts {
    /// `/etc/hostname` (or `/proc/sys/kernel/hostname`).
    pub hostname: String,
    /// `/proc/sys/kernel/ostype` + `osrelease` + `/proc/sys/kernel/version`, as far as readable.
    pub kernel: String,
    /// `PRETTY_NAME` from `/etc/os-release`.
    pub os_release: String,
    /// The login's home directory (what a relative remote path would resolve against).
    pub home: String,
}

/// Output of a remote command.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    pub command: String,
    /// Exit status; `None` if killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// One file for [`Remote::put_new_files`]: uploaded from a local file.
#[derive(Clone, Debug)]
pub struct NewFile {
    /// Absolute remote path; must not exist (exclusive create).
    pub remote: PathBuf,
    /// Local source file, read whole.
    pub local: PathBuf,
    /// Expected size of the local file.
    pub len: u64,
    /// Permission bits to set on the remote file (0o644 or 0o755).
    pub mode: u32,
}

/// The receiving end of a stream of files to upload ([`Remote::put_streamed`]).
pub type StreamedFiles = tokio::sync::mpsc::Receiver<StreamedFile>;

/// One file for [`Remote::put_streamed`]: its bytes come from a producer (a deploy decompressing
/// its archive) rather than from a local file.
#[derive(Debug)]
pub struct StreamedFile {
    /// Absolute remote path; must not exist (exclusive create).
    pub remote: PathBuf,
    /// Size the content must have; fewer bytes (a producer that stopped) is an error.
    pub len: u64,
    /// Permission bits to set on the remote file (0o644 or 0o755).
    pub mode: u32,
    pub data: Payload,
}

/// The content of a [`StreamedFile`].
#[derive(Debug)]
pub enum Payload {
    /// All of it at once (small files).
    Whole(bytes::Bytes),
    /// In order, in pieces of at most [`STREAM_PIECE`] bytes (large files, so memory stays
    /// bounded); the producer drops the sender at the end, or early when it fails.
    Pieces(tokio::sync::mpsc::Receiver<bytes::Bytes>),
}

/// Why a streamed upload stopped short: the producer ended (its own error tells the cause).
pub const STREAM_ENDED: &str = "the artifact stream ended early";

/// Largest piece of a [`Payload::Pieces`]: one SFTP write request.
pub const STREAM_PIECE: usize = 261_120;

/// Errors from remote operations. Each carries the operation and path it is about; `Failed`
/// carries the cause that sealpush diagnosed when the server only said "Failure".
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{op} {}: no such file or directory", path.display())]
    NotFound { op: &'static str, path: PathBuf },
    #[error("{op} {}: already exists", path.display())]
    Exists { op: &'static str, path: PathBuf },
    #[error("{op} {}: permission denied", path.display())]
    PermissionDenied { op: &'static str, path: PathBuf },
    #[error("{op} {}: {reason}", path.display())]
    Failed {
        op: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{op} {}: no answer within {secs}s (the connection may be stalled, or the operation needs \
         longer: --op-timeout sets the limit)",
        path.display()
    )]
    Timeout {
        op: &'static str,
        path: PathBuf,
        secs: u64,
    },
    #[error("cannot connect to {host}: {message}")]
    Connect { host: String, message: String },
    #[error("connection to {host} lost: {message}")]
    Disconnected { host: String, message: String },
}

impl RemoteError {
    /// True for errors that say the name is absent.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RemoteError::NotFound { .. })
    }

    /// True when the request got no answer (a stalled or lost connection): the host may still
    /// carry it out, or may have already, so nothing can be concluded about what it did.
    pub fn went_unanswered(&self) -> bool {
        matches!(
            self,
            RemoteError::Timeout { .. } | RemoteError::Disconnected { .. }
        )
    }
}

pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// A directory's entries, each regular file's with its digest and the bytes read (see
/// [`Remote::read_dirs_hashed`]).
pub type Listed = Vec<(DirEntry, Option<Result<(Digest, u64)>>)>;

/// The operations sealpush performs on a host.
pub trait Remote: Send + Sync {
    /// How the user named the host ("local", "contabo", "root@10.0.0.1").
    fn name(&self) -> &str;
    /// "sftp" or "local".
    fn transport(&self) -> &'static str;
    /// Facts read from files on the host (no remote command).
    fn facts(&self) -> Result<HostFacts>;
    /// lstat; `Ok(None)` when the name does not exist.
    fn lstat(&self, path: &Path) -> Result<Option<Meta>>;
    /// stat (follows symlinks); `Ok(None)` when the name (or its target) does not exist.
    fn stat(&self, path: &Path) -> Result<Option<Meta>>;
    /// [`Remote::lstat`] of each path, results in the order of `paths`; a transport with round
    /// trips asks for them all at once.
    fn lstats(&self, paths: &[PathBuf]) -> Vec<Result<Option<Meta>>> {
        paths.iter().map(|p| self.lstat(p)).collect()
    }
    /// Entries of a directory in the server's readdir order, without `.` and `..`.
    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>>;
    /// [`Remote::read_dir`] of each path, results in the order of `paths`; a transport with
    /// round trips lists them concurrently (SFTP: a walk of 1,111 directories in 0.45 s instead of 1.0 s).
    fn read_dirs(&self, paths: &[PathBuf]) -> Vec<Result<Vec<DirEntry>>> {
        paths.iter().map(|p| self.read_dir(p)).collect()
    }
    /// [`Remote::read_dirs`], and each regular file listed read and hashed as by
    /// [`Remote::hash_files_sized`] with the listed size: `Some(result)` beside a file's entry,
    /// `None` beside every other kind. A transport with round trips starts reading a
    /// directory's files as soon as its listing arrives, while the other directories are still
    /// being listed. The default lists everything first, then hashes.
    fn read_dirs_hashed(&self, paths: &[PathBuf], progress: &dyn Progress) -> Vec<Result<Listed>> {
        let listed = self.read_dirs(paths);
        let files: Vec<(PathBuf, u64)> = paths
            .iter()
            .zip(&listed)
            .filter_map(|(dir, l)| l.as_ref().ok().map(|l| (dir, l)))
            .flat_map(|(dir, l)| {
                l.iter()
                    .filter(|e| e.meta.kind == FileKind::File)
                    .map(|e| (dir.join(OsStr::from_bytes(&e.name)), e.meta.size))
            })
            .collect();
        let mut hashed = self.hash_files_sized(&files, progress).into_iter();
        listed
            .into_iter()
            .map(|l| {
                Ok(l?
                    .into_iter()
                    .map(|e| {
                        let h = (e.meta.kind == FileKind::File)
                            .then(|| hashed.next().expect("a result for every file"));
                        (e, h)
                    })
                    .collect())
            })
            .collect()
    }
    /// Target of a symlink, raw.
    fn read_link(&self, path: &Path) -> Result<PathBuf>;
    /// The path with every symlink in it resolved (`realpath`); the path must exist.
    fn canonicalize(&self, path: &Path) -> Result<PathBuf>;
    /// [`Remote::read_link`] of each path, results in the order of `paths`; a transport with
    /// round trips reads them concurrently.
    fn read_links(&self, paths: &[PathBuf]) -> Vec<Result<PathBuf>> {
        paths.iter().map(|p| self.read_link(p)).collect()
    }
    fn statvfs(&self, path: &Path) -> Result<FsStats>;
    /// Reads a whole file of at most `limit` bytes (journals, receipts, manifests).
    fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>>;
    /// sha256 and size of each file, reading the bytes (following symlinks as `fopen` does),
    /// pipelined; results in the order of `paths`.
    fn hash_files(&self, paths: &[PathBuf], progress: &dyn Progress) -> Vec<Result<(Digest, u64)>>;
    /// [`Remote::hash_files`] with each file's expected size (from a listing just made), which
    /// lets a transport skip requests (SFTP: no separate end-of-file read when a short read
    /// returns exactly that size). The result is the same; the default ignores the sizes.
    fn hash_files_sized(
        &self,
        files: &[(PathBuf, u64)],
        progress: &dyn Progress,
    ) -> Vec<Result<(Digest, u64)>> {
        let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
        self.hash_files(&paths, progress)
    }
    /// Creates a directory; fails with `Exists` if the name exists in any form.
    fn mkdir(&self, path: &Path, mode: u32) -> Result<()>;
    /// [`Remote::mkdir`] of each path. None may lie inside another (callers pass one level of a
    /// tree at a time), so a transport with round trips creates them concurrently. Returns the
    /// first error in the order of `paths`.
    fn mkdirs(&self, paths: &[PathBuf], mode: u32) -> Result<()> {
        paths.iter().try_for_each(|p| self.mkdir(p, mode))
    }
    /// Creates a new file with `data` (exclusive create, never through a symlink), sets `mode`,
    /// and fsyncs it when `fsync` and the server can.
    fn write_new(&self, path: &Path, data: &[u8], mode: u32, fsync: bool) -> Result<()>;
    /// [`Remote::write_new`] of each `(path, data)`, all with `mode`; the first error ends it. A
    /// transport with round trips writes them concurrently (a handful of small records in the
    /// round trips of one).
    fn write_new_all(&self, files: &[(PathBuf, Vec<u8>)], mode: u32, fsync: bool) -> Result<()> {
        files
            .iter()
            .try_for_each(|(path, data)| self.write_new(path, data, mode, fsync))
    }
    /// Uploads many files, each by exclusive create, many in flight. Parents must exist.
    fn put_new_files(&self, files: &[NewFile], fsync: bool, progress: &dyn Progress) -> Result<()>;
    /// Uploads the next `count` files received from `files`, as [`Remote::put_new_files`] does.
    /// The channel closing before `count` files, or a file's pieces ending short of its
    /// length, is an error (the producer's own error says why).
    fn put_streamed(
        &self,
        files: &mut StreamedFiles,
        count: usize,
        fsync: bool,
        progress: &dyn Progress,
    ) -> Result<()>;
    /// Creates a symlink at `link` pointing to `target`; fails if `link` exists.
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    /// [`Remote::symlink`] of each `(target, link)`, all attempted; returns the first error in
    /// the order of `links`. A transport with round trips creates them concurrently.
    fn symlinks(&self, links: &[(PathBuf, PathBuf)]) -> Result<()> {
        let mut first = Ok(());
        for (target, link) in links {
            if let Err(e) = self.symlink(target, link) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
    /// Creates a hard link `link` to the existing file `existing`; fails if `link` exists.
    fn hard_link(&self, existing: &Path, link: &Path) -> Result<()>;
    /// Whether [`Remote::hard_link`] can be asked at all (SFTP: the server offers
    /// `hardlink@openssh.com`). A filesystem may still refuse a link.
    fn supports_hard_links(&self) -> bool {
        true
    }
    /// Renames `from` to `to`, failing (never replacing) if `to` exists in any form,
    /// including as an empty directory.
    fn rename_noreplace(&self, from: &Path, to: &Path) -> Result<()>;
    /// Removes a file or symlink (never follows it).
    fn remove_file(&self, path: &Path) -> Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> Result<()>;
    /// Removes each entry (`true`: an empty directory, `false`: a file or symlink, never
    /// followed); results in the order of `entries`. Everything is attempted, in
    /// [`remove_in_groups`] order: files and symlinks first, then directories deepest first, so a
    /// directory whose listed contents are gone is empty by its turn. A transport with round
    /// trips removes each group concurrently (SFTP: a rollback of 100,000 files is not 100,000
    /// round trips one after the other).
    fn remove_all(&self, entries: &[(PathBuf, bool)], progress: &dyn Progress) -> Vec<Result<()>> {
        remove_in_groups(entries, |group| {
            group
                .iter()
                .map(|&i| {
                    let (path, dir) = &entries[i];
                    let r = if *dir {
                        self.remove_dir(path)
                    } else {
                        self.remove_file(path)
                    };
                    progress.advance(0, 1);
                    r
                })
                .collect()
        })
    }
    /// Runs a shell command on the host (only where the user asked for one).
    fn exec(&self, command: &str) -> Result<ExecOutput>;
}

/// Runs `remove_group` on the groups [`Remote::remove_all`] removes one after the other (all
/// non-directories, then the directories of each depth, deepest first; within a group no entry
/// contains another, so its removals may run in any order, or at once) and returns the results
/// in the order of `entries`. `remove_group` gets indexes into `entries` and answers in their
/// order.
pub fn remove_in_groups(
    entries: &[(PathBuf, bool)],
    mut remove_group: impl FnMut(&[usize]) -> Vec<Result<()>>,
) -> Vec<Result<()>> {
    let depth = |i: usize| entries[i].0.components().count();
    let files: Vec<usize> = (0..entries.len()).filter(|&i| !entries[i].1).collect();
    let mut dirs: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].1).collect();
    // Stable: the directories of one depth keep their order.
    dirs.sort_by_key(|&i| std::cmp::Reverse(depth(i)));
    let mut out: Vec<Option<Result<()>>> = entries.iter().map(|_| None).collect();
    let groups = std::iter::once(files.as_slice())
        .chain(dirs.chunk_by(|&a, &b| depth(a) == depth(b)))
        .filter(|g| !g.is_empty());
    for group in groups {
        for (&i, r) in group.iter().zip(remove_group(group)) {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.expect("every entry is in a group, answered"))
        .collect()
}

/// How to reach a host.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// `ssh -F FILE`.
    pub ssh_config: Option<PathBuf>,
    /// Trust and record an unknown host key (ssh's `accept-new`); never a changed one.
    pub accept_new_host_key: bool,
    /// Limit for establishing the connection.
    pub connect_timeout: std::time::Duration,
    /// Limit for any single remote operation; a stalled server ends in [`RemoteError::Timeout`].
    pub op_timeout: std::time::Duration,
    /// Keep ssh's cipher order as configured. By default sealpush moves the AES-GCM ciphers
    /// that the configuration already allows to the front when this CPU has AES instructions
    /// (see `sftp::prefer_aes_gcm`).
    pub keep_cipher_order: bool,
    /// Largest payload of one SFTP read or write request, below the server's own limit
    /// (`None`: the server's limit, 255 KiB for OpenSSH), for servers or proxies that fail on
    /// large packets (what `sftp -B` is for).
    pub max_request: Option<u32>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            ssh_config: None,
            accept_new_host_key: false,
            connect_timeout: std::time::Duration::from_secs(15),
            op_timeout: std::time::Duration::from_secs(60),
            keep_cipher_order: false,
            max_request: None,
        }
    }
}

/// Opens a host: `local` (or `local:`) is this machine's filesystem; anything else is an ssh
/// destination (alias from `~/.ssh/config`, `user@host`, `ssh://user@host:port`).
pub fn connect(host: &str, opts: &ConnectOptions) -> Result<Box<dyn Remote>> {
    if host == "local" || host == "local:" {
        Ok(Box::new(local::LocalRemote::with_exec_limit(
            opts.op_timeout,
        )))
    } else {
        Ok(Box::new(sftp::SftpRemote::connect(host, opts)?))
    }
}
