//! The local transport (`--host local`): every [`Remote`](super::Remote) operation on this
//! machine's own filesystem, for the bundled demo, for trying sealpush without a server, and for
//! testing the deploy engine's logic without ssh.
//!
//! It keeps the guarantees the SFTP transport gives, so a deploy that is safe here is safe there:
//! - creates are exclusive: files with `O_CREAT|O_EXCL|O_NOFOLLOW` (a name that exists in any
//!   form, including a dangling symlink, is refused, and nothing is written through a symlink);
//!   directories with `mkdir` (fails on an existing name); symlinks and hard links with
//!   `symlink`/`link` (both refuse an existing name);
//! - [`rename_noreplace`](super::Remote::rename_noreplace) is `renameat2(RENAME_NOREPLACE)`: the
//!   kernel refuses atomically when the destination exists, even as an empty directory (plain
//!   `rename(2)` would silently replace an empty directory or a file);
//! - the mode asked for is the mode set (an explicit `fchmod`/`chmod`, so the umask cannot widen
//!   or narrow it);
//! - removes never follow symlinks (`unlink`, `rmdir`).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{
    DirEntry, ExecOutput, FileKind, FsStats, HostFacts, Meta, NewFile, Payload, RemoteError,
    Result, StreamedFiles, STREAM_ENDED,
};
use crate::digest::Digest;
use crate::progress::Progress;

/// This machine's filesystem as a [`Remote`](super::Remote).
#[derive(Debug, Default, Clone)]
pub struct LocalRemote {
    /// How long [`Remote::exec`](super::Remote::exec) lets a command run; `None`: no limit.
    exec_limit: Option<std::time::Duration>,
}

impl LocalRemote {
    pub fn new() -> LocalRemote {
        LocalRemote::default()
    }

    /// A local transport whose commands (`--check`, ...) are stopped after `limit`, as over SFTP
    /// (`--op-timeout`).
    pub fn with_exec_limit(limit: std::time::Duration) -> LocalRemote {
        LocalRemote {
            exec_limit: Some(limit),
        }
    }
}

/// Maps an I/O error to the transport-neutral error, keeping the errno's meaning.
fn io_err(op: &'static str, path: &Path, e: std::io::Error) -> RemoteError {
    let path = path.to_path_buf();
    match e.kind() {
        std::io::ErrorKind::NotFound => RemoteError::NotFound { op, path },
        std::io::ErrorKind::AlreadyExists => RemoteError::Exists { op, path },
        std::io::ErrorKind::PermissionDenied => RemoteError::PermissionDenied { op, path },
        _ => match e.raw_os_error() {
            // ENOTEMPTY/EEXIST from rmdir and renameat2 both mean "something is there".
            Some(libc::ENOTEMPTY) if op == "rename" => RemoteError::Exists { op, path },
            // O_NOFOLLOW on a symlink: the name exists, as a symlink.
            Some(libc::ELOOP) if op == "create" => RemoteError::Exists { op, path },
            _ => RemoteError::Failed {
                op,
                path,
                reason: e.to_string().to_lowercase(),
            },
        },
    }
}

fn require_absolute(op: &'static str, path: &Path) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(RemoteError::Failed {
            op,
            path: path.to_path_buf(),
            reason: "remote paths must be absolute".into(),
        })
    }
}

fn cpath(op: &'static str, path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| RemoteError::Failed {
        op,
        path: path.to_path_buf(),
        reason: "path contains a NUL byte".into(),
    })
}

fn meta_of(m: &fs::Metadata) -> Meta {
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else {
        FileKind::Other
    };
    Meta {
        kind,
        mode: m.mode() & 0o7777,
        size: m.size(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
    }
}

fn optional(
    op: &'static str,
    path: &Path,
    r: std::io::Result<fs::Metadata>,
) -> Result<Option<Meta>> {
    match r {
        Ok(m) => Ok(Some(meta_of(&m))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(op, path, e)),
    }
}

/// sha256 and length of a file, read in 256 KiB blocks.
fn hash_path(path: &Path, progress: &dyn Progress) -> std::io::Result<(Digest, u64)> {
    use sha2::Digest as _;
    let mut f = File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
        progress.advance(k as u64, 0);
    }
    Ok((Digest(h.finalize().into()), n))
}

/// Creates `path` exclusively (never through a symlink) with exactly `mode`.
fn create_exclusive(path: &Path, mode: u32) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode & 0o777)
        .open(path)
        .map_err(|e| io_err("create", path, e))?;
    // The umask narrowed the mode given to open(2); set it exactly on the open descriptor.
    f.set_permissions(fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| io_err("chmod", path, e))?;
    Ok(f)
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl super::Remote for LocalRemote {
    fn name(&self) -> &str {
        "local"
    }

    fn transport(&self) -> &'static str {
        "local"
    }

    fn facts(&self) -> Result<HostFacts> {
        let hostname = read_trimmed("/etc/hostname")
            .or_else(|| read_trimmed("/proc/sys/kernel/hostname"))
            .unwrap_or_default();
        let kernel = ["ostype", "osrelease", "version"]
            .iter()
            .filter_map(|k| read_trimmed(&format!("/proc/sys/kernel/{k}")))
            .collect::<Vec<_>>()
            .join(" ");
        let os_release = fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim().trim_matches('"').to_string())
                })
            })
            .unwrap_or_default();
        let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());
        Ok(HostFacts {
            hostname,
            kernel,
            os_release,
            home,
        })
    }

    fn lstat(&self, path: &Path) -> Result<Option<Meta>> {
        require_absolute("lstat", path)?;
        optional("lstat", path, fs::symlink_metadata(path))
    }

    fn stat(&self, path: &Path) -> Result<Option<Meta>> {
        require_absolute("stat", path)?;
        optional("stat", path, fs::metadata(path))
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>> {
        require_absolute("read_dir", path)?;
        let mut out = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| io_err("read_dir", path, e))? {
            let entry = entry.map_err(|e| io_err("read_dir", path, e))?;
            let child = entry.path();
            let meta = fs::symlink_metadata(&child).map_err(|e| io_err("lstat", &child, e))?;
            out.push(DirEntry {
                name: entry.file_name().as_bytes().to_vec(),
                meta: meta_of(&meta),
            });
        }
        Ok(out)
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        require_absolute("read_link", path)?;
        fs::read_link(path).map_err(|e| io_err("read_link", path, e))
    }

    fn canonicalize(&self, path: &Path) -> Result<PathBuf> {
        require_absolute("realpath", path)?;
        fs::canonicalize(path).map_err(|e| io_err("realpath", path, e))
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats> {
        require_absolute("statvfs", path)?;
        let c = cpath("statvfs", path)?;
        // SAFETY: `st` is plain old data that statvfs fully initialises on success; `c` is a
        // valid NUL-terminated string that outlives the call.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(io_err("statvfs", path, std::io::Error::last_os_error()));
        }
        Ok(FsStats {
            frsize: st.f_frsize as u64,
            blocks: st.f_blocks as u64,
            blocks_avail: st.f_bavail as u64,
            fsid: st.f_fsid as u64,
            read_only: (st.f_flag & libc::ST_RDONLY) != 0,
            name_max: st.f_namemax as u64,
            inodes_avail: (st.f_files > 0).then_some(st.f_favail as u64),
        })
    }

    fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>> {
        require_absolute("read_file", path)?;
        let f = File::open(path).map_err(|e| io_err("read_file", path, e))?;
        let mut data = Vec::new();
        // Read one byte past the limit to tell "exactly at the limit" from "too big".
        f.take(limit.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| io_err("read_file", path, e))?;
        if data.len() as u64 > limit {
            return Err(RemoteError::Failed {
                op: "read_file",
                path: path.to_path_buf(),
                reason: format!("larger than the {limit}-byte limit"),
            });
        }
        Ok(data)
    }

    fn hash_files(&self, paths: &[PathBuf], progress: &dyn Progress) -> Vec<Result<(Digest, u64)>> {
        paths
            .par_iter()
            .map(|p| {
                require_absolute("hash", p)?;
                let r = hash_path(p, progress).map_err(|e| io_err("hash", p, e));
                progress.advance(0, 1);
                r
            })
            .collect()
    }

    fn mkdir(&self, path: &Path, mode: u32) -> Result<()> {
        require_absolute("mkdir", path)?;
        fs::DirBuilder::new()
            .mode(mode & 0o7777)
            .create(path)
            .map_err(|e| io_err("mkdir", path, e))?;
        // mkdir(2) applied the umask; set the asked-for mode exactly. The directory is ours
        // (just created), and chmod on a name we created a moment ago in a parent we control.
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| io_err("chmod", path, e))
    }

    fn write_new(&self, path: &Path, data: &[u8], mode: u32, fsync: bool) -> Result<()> {
        require_absolute("write_new", path)?;
        let mut f = create_exclusive(path, mode)?;
        f.write_all(data).map_err(|e| io_err("write", path, e))?;
        if fsync {
            f.sync_all().map_err(|e| io_err("fsync", path, e))?;
        }
        Ok(())
    }

    fn put_new_files(&self, files: &[NewFile], fsync: bool, progress: &dyn Progress) -> Result<()> {
        files.par_iter().try_for_each(|nf| {
            require_absolute("put", &nf.remote)?;
            let mut src = File::open(&nf.local).map_err(|e| io_err("open", &nf.local, e))?;
            let mut dst = create_exclusive(&nf.remote, nf.mode)?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0u64;
            loop {
                let k = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_err("read", &nf.local, e)),
                };
                dst.write_all(&buf[..k])
                    .map_err(|e| io_err("write", &nf.remote, e))?;
                n += k as u64;
                progress.advance(k as u64, 0);
            }
            if n != nf.len {
                return Err(RemoteError::Failed {
                    op: "put",
                    path: nf.local.clone(),
                    reason: format!("expected {} bytes, read {n} (the source changed)", nf.len),
                });
            }
            if fsync {
                dst.sync_all().map_err(|e| io_err("fsync", &nf.remote, e))?;
            }
            progress.advance(0, 1);
            Ok(())
        })
    }

    fn put_streamed(
        &self,
        files: &mut StreamedFiles,
        count: usize,
        fsync: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        for _ in 0..count {
            let f = files.blocking_recv().ok_or_else(|| RemoteError::Failed {
                op: "put",
                path: PathBuf::new(),
                reason: STREAM_ENDED.into(),
            })?;
            require_absolute("put", &f.remote)?;
            let mut dst = create_exclusive(&f.remote, f.mode)?;
            let mut n = 0u64;
            let mut put = |b: &[u8]| {
                dst.write_all(b)
                    .map_err(|e| io_err("write", &f.remote, e))?;
                n += b.len() as u64;
                progress.advance(b.len() as u64, 0);
                Ok::<_, RemoteError>(())
            };
            match f.data {
                Payload::Whole(b) => put(&b)?,
                Payload::Pieces(mut rx) => {
                    while let Some(b) = rx.blocking_recv() {
                        put(&b)?;
                    }
                }
            }
            if n != f.len {
                return Err(RemoteError::Failed {
                    op: "put",
                    path: f.remote.clone(),
                    reason: format!("{STREAM_ENDED}: {n} of {} bytes", f.len),
                });
            }
            if fsync {
                dst.sync_all().map_err(|e| io_err("fsync", &f.remote, e))?;
            }
            progress.advance(0, 1);
        }
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        require_absolute("symlink", link)?;
        std::os::unix::fs::symlink(target, link).map_err(|e| io_err("symlink", link, e))
    }

    fn hard_link(&self, existing: &Path, link: &Path) -> Result<()> {
        require_absolute("hard_link", link)?;
        require_absolute("hard_link", existing)?;
        // link(2) on Linux does not follow a symlink at `existing`, and refuses an existing `link`.
        fs::hard_link(existing, link).map_err(|e| io_err("hard_link", link, e))
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> Result<()> {
        require_absolute("rename", from)?;
        require_absolute("rename", to)?;
        let cf = cpath("rename", from)?;
        let ct = cpath("rename", to)?;
        // SAFETY: both strings are valid, NUL-terminated and outlive the call; AT_FDCWD with
        // absolute paths needs no directory descriptor.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                cf.as_ptr(),
                libc::AT_FDCWD,
                ct.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // The source is gone: say so about the source, not the destination.
            Some(libc::ENOENT) if fs::symlink_metadata(from).is_err() => {
                Err(io_err("rename", from, e))
            }
            // No fallback to rename(2) on filesystems without RENAME_NOREPLACE: that would
            // reintroduce the clobbering this method exists to prevent.
            Some(libc::EINVAL) => Err(RemoteError::Failed {
                op: "rename",
                path: to.to_path_buf(),
                reason: "the filesystem does not support a non-replacing rename".into(),
            }),
            _ => Err(io_err("rename", to, e)),
        }
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        require_absolute("remove_file", path)?;
        fs::remove_file(path).map_err(|e| io_err("remove_file", path, e))
    }

    fn remove_dir(&self, path: &Path) -> Result<()> {
        require_absolute("remove_dir", path)?;
        fs::remove_dir(path).map_err(|e| io_err("remove_dir", path, e))
    }

    /// `sh -c COMMAND` in a process group of its own. Past the limit the group gets TERM, then
    /// KILL once the shell is gone or 5 s later, as the SFTP transport's wrapper does on a host.
    fn exec(&self, command: &str) -> Result<ExecOutput> {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
        use std::time::{Duration, Instant};
        let spawn_err = |e| io_err("exec", Path::new("/bin/sh"), e);
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(spawn_err)?;
        // Drained on threads, so a chatty command never blocks on a full pipe.
        fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = pipe.read_to_end(&mut v);
                v
            })
        }
        let out = drain(child.stdout.take().expect("piped stdout"));
        let err = drain(child.stderr.take().expect("piped stderr"));
        let deadline = self.exec_limit.map(|d| Instant::now() + d);
        loop {
            if let Some(status) = child.try_wait().map_err(spawn_err)? {
                let text = |h: std::thread::JoinHandle<Vec<u8>>| {
                    String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
                };
                return Ok(ExecOutput {
                    command: command.to_string(),
                    status: status.code(),
                    stdout: text(out),
                    stderr: text(err),
                });
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let group = -(child.id() as libc::pid_t);
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let grace = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; whatever ignored TERM goes now.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = child.wait();
        Err(RemoteError::Timeout {
            op: "exec",
            path: PathBuf::from(super::sftp::command_label(command)),
            secs: self.exec_limit.map_or(0, |d| d.as_secs()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::remote::Remote;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn write_new_is_exclusive_and_sets_exact_mode() {
        let d = tmp();
        let r = LocalRemote::new();
        let p = d.path().join("f");
        r.write_new(&p, b"hello", 0o640, true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        let err = r.write_new(&p, b"other", 0o644, false).unwrap_err();
        assert!(matches!(err, RemoteError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"hello");
    }

    #[test]
    fn write_new_never_follows_a_planted_symlink() {
        let d = tmp();
        let r = LocalRemote::new();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(r.write_new(&link, b"evil", 0o644, false).is_err());
        // A dangling symlink must be refused too (O_CREAT alone would create its target).
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(r.write_new(&dangling, b"evil", 0o644, false).is_err());
        assert!(!d.path().join("nowhere").exists());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let nf = NewFile {
            remote: link.clone(),
            local: victim.clone(),
            len: 8,
            mode: 0o644,
        };
        assert!(r.put_new_files(&[nf], false, &NoProgress).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn rename_noreplace_refuses_every_existing_kind() {
        let d = tmp();
        let r = LocalRemote::new();
        let src = d.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a"), b"a").unwrap();
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let file = d.path().join("file");
        fs::write(&file, b"f").unwrap();
        let sl = d.path().join("sl");
        std::os::unix::fs::symlink("nowhere", &sl).unwrap();
        let full = d.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("x"), b"x").unwrap();
        for dst in [&empty, &file, &sl, &full] {
            let err = r.rename_noreplace(&src, dst).unwrap_err();
            assert!(
                matches!(err, RemoteError::Exists { .. }),
                "{}: {err}",
                dst.display()
            );
            assert!(src.join("a").exists());
        }
        assert!(fs::read_dir(&empty).unwrap().next().is_none());
        assert_eq!(fs::read(&file).unwrap(), b"f");
        let dst = d.path().join("dst");
        r.rename_noreplace(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("a")).unwrap(), b"a");
        assert!(!src.exists());
        let err = r
            .rename_noreplace(&src, &d.path().join("again"))
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn mkdir_symlink_hard_link_refuse_existing_names() {
        let d = tmp();
        let r = LocalRemote::new();
        let dir = d.path().join("d");
        r.mkdir(&dir, 0o700).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        assert!(matches!(
            r.mkdir(&dir, 0o755),
            Err(RemoteError::Exists { .. })
        ));
        let f = dir.join("f");
        r.write_new(&f, b"x", 0o644, false).unwrap();
        assert!(matches!(
            r.symlink(Path::new("f"), &f),
            Err(RemoteError::Exists { .. })
        ));
        assert!(matches!(
            r.hard_link(&f, &f),
            Err(RemoteError::Exists { .. })
        ));
        r.symlink(Path::new("f"), &dir.join("s")).unwrap();
        assert_eq!(r.read_link(&dir.join("s")).unwrap(), PathBuf::from("f"));
        r.hard_link(&f, &dir.join("h")).unwrap();
        assert_eq!(fs::metadata(dir.join("h")).unwrap().nlink(), 2);
        let mut names: Vec<_> = r
            .read_dir(&dir)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        assert_eq!(names, vec![b"f".to_vec(), b"h".to_vec(), b"s".to_vec()]);
        assert_eq!(
            r.lstat(&dir.join("s")).unwrap().unwrap().kind,
            FileKind::Symlink
        );
        assert_eq!(
            r.stat(&dir.join("s")).unwrap().unwrap().kind,
            FileKind::File
        );
        assert_eq!(r.lstat(&dir.join("nope")).unwrap(), None);
        // remove_file never follows: removing the symlink leaves its target.
        r.remove_file(&dir.join("s")).unwrap();
        assert!(f.exists());
        assert!(r.remove_dir(&dir).is_err());
    }

    #[test]
    fn hashes_match_published_vectors_and_report_missing() {
        let d = tmp();
        let r = LocalRemote::new();
        let a = d.path().join("abc");
        fs::write(&a, b"abc").unwrap();
        let res = r.hash_files(&[a.clone(), d.path().join("missing")], &NoProgress);
        let (dg, n) = res[0].as_ref().unwrap();
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            dg.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(*n, 3);
        assert!(res[1].as_ref().unwrap_err().is_not_found());
    }

    #[test]
    fn put_new_files_copies_bytes_and_modes() {
        let d = tmp();
        let r = LocalRemote::new();
        let src = d.path().join("src");
        fs::write(&src, vec![7u8; 300_000]).unwrap();
        let files: Vec<NewFile> = (0..4)
            .map(|i| NewFile {
                remote: d.path().join(format!("out{i}")),
                local: src.clone(),
                len: 300_000,
                mode: if i % 2 == 0 { 0o755 } else { 0o644 },
            })
            .collect();
        r.put_new_files(&files, true, &NoProgress).unwrap();
        for f in &files {
            assert_eq!(fs::read(&f.remote).unwrap(), vec![7u8; 300_000]);
            assert_eq!(fs::metadata(&f.remote).unwrap().mode() & 0o777, f.mode);
        }
        // A wrong expected length (the source changed) is an error.
        let bad = NewFile {
            remote: d.path().join("bad"),
            local: src,
            len: 1,
            mode: 0o644,
        };
        assert!(r.put_new_files(&[bad], false, &NoProgress).is_err());
    }

    #[test]
    fn read_file_limit_statvfs_facts_exec() {
        let d = tmp();
        let r = LocalRemote::new();
        let p = d.path().join("f");
        fs::write(&p, b"12345").unwrap();
        assert_eq!(r.read_file(&p, 5).unwrap(), b"12345");
        assert!(r.read_file(&p, 4).is_err());
        let st = r.statvfs(d.path()).unwrap();
        assert!(st.total_bytes() > 0 && st.name_max > 0);
        // Same filesystem, same id; /proc is another filesystem.
        assert_eq!(st.fsid, r.statvfs(&p).unwrap().fsid);
        assert_ne!(st.fsid, r.statvfs(Path::new("/proc")).unwrap().fsid);
        let facts = r.facts().unwrap();
        assert!(facts.kernel.starts_with("Linux"), "{}", facts.kernel);
        let out = r.exec("echo out; echo err >&2; exit 3").unwrap();
        assert_eq!(
            (out.status, out.stdout.as_str(), out.stderr.as_str()),
            (Some(3), "out\n", "err\n")
        );
        assert!(r.lstat(Path::new("relative")).is_err());
    }
}
