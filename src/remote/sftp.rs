//! The SFTP transport: every [`Remote`] operation over one `ssh -s DEST sftp` child process,
//! driven by `openssh-sftp-client` on a tokio runtime owned by [`SftpRemote`].
//!
//! Why this shape, and what it guarantees:
//! - **The system `ssh`**, so `~/.ssh/config` aliases, keys, agents, ProxyJump and known_hosts
//!   behave as they do for the user. `ssh://user@host:port` destinations are ssh's own syntax.
//! - **Strict host keys**: `StrictHostKeyChecking=yes` on the command line (it wins over any config
//!   file), or `accept-new` with [`ConnectOptions::accept_new_host_key`] (still refuses a changed
//!   key). An unknown or changed key ends in [`RemoteError::Connect`] naming the key's SHA256
//!   fingerprint and how to trust it.
//! - **No ssh master, no control socket**: we spawn plain `ssh` children with
//!   `ControlMaster=no`, `ControlPath=none` (a user's `ControlPersist` cannot daemonize a master
//!   on our behalf) and `PR_SET_PDEATHSIG(SIGKILL)`, so when sealpush dies, even by `kill -9`,
//!   the kernel kills its ssh children and the server ends the session. (The `openssh` crate's
//!   mux master defaults to `ControlPersist` forever and orphaned masters in a study here.)
//! - **Timeouts**: every request is bounded by [`ConnectOptions::op_timeout`]; a stalled server
//!   (SIGSTOP) ends in [`RemoteError::Timeout`]. After a timeout the connection is marked
//!   stalled and later calls fail at once instead of waiting again.
//! - **Diagnosed failures**: OpenSSH answers most errors with a bare `Failure`; we then lstat the
//!   path and its components and statvfs its filesystem, and report `Exists`, `NotFound` or the
//!   real reason (read-only filesystem, no space, not a directory, not empty, other filesystem).
//! - **A rename that never clobbers**: `openssh-sftp-client` sends `posix-rename@openssh.com`
//!   whenever the server offers it, and that replaces an existing file or empty directory. We hide
//!   that one extension from the client library (see [`ServerFilter`]), so `Fs::rename` sends
//!   the protocol's own SSH_FXP_RENAME, which OpenSSH's sftp-server implements as link()+unlink()
//!   for a file (refuses any existing name) and as `stat(new)` then `rename` only if absent for a
//!   directory or symlink. We lstat the target first and verify afterwards. Residual race: a
//!   name created at the target *between the server's stat and its rename* (microseconds, inside
//!   sftp-server) is replaced if it is an empty directory; nothing at the SFTP level can close
//!   that window (there is no renameat2 extension). A file source has no window (link(2) is
//!   atomic); a non-directory appearing at the target makes a directory rename fail (ENOTDIR).
//! - **Names that are not UTF-8**: the client library can neither send nor decode them. Sending
//!   fails before anything leaves; in answers, [`ServerFilter`] turns them into lossy names that
//!   `read_dir`/`read_link` refuse with a clear error, so the session survives and no lossy name
//!   is ever used as a real one.
//! - **Fast paths** (sftp-notes §3): uploads through `write_all_zero_copy` in 255 KiB chunks with
//!   many requests and many files in flight; read-back hashing with pipelined chunk reads; never
//!   the byte-by-byte serializer of `File::write`.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io::SeekFrom;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt, TryStreamExt};
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::metadata::{MetaData, Permissions};
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use sha2::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use super::{
    ConnectOptions, DirEntry, ExecOutput, FileKind, FsStats, HostFacts, Listed, Meta, NewFile,
    Payload, Remote, RemoteError, Result, StreamedFiles, STREAM_ENDED,
};
use crate::digest::Digest;
use crate::progress::Progress;

/// How a remote command runs (`sh -c WRAPPER sealpush COMMAND`): so that it cannot outlive
/// sealpush. sshd gives each session a process group of its own; a watchdog in that group waits
/// for the end of the channel's stdin, which sealpush holds open while it waits. When sealpush
/// kills its ssh (the command ran past its time limit) or dies, the channel closes, and the
/// watchdog sends TERM to the group, then KILL 5 s later. A command that ends stops the
/// watchdog first, so what it started on purpose is left alone. The command's own stdin is
/// /dev/null, as before; fd 3 carries the channel to the watchdog because a background job's
/// stdin is /dev/null in a shell without job control.
const EXEC_WRAPPER: &str = r#"exec 3<&0 </dev/null
{ cat <&3 >/dev/null 2>&1; trap '' TERM; kill -TERM 0; sleep 5; kill -KILL 0; } >/dev/null 2>&1 &
w=$!
exec 3<&-
sh -c "$1"
s=$?
kill "$w" 2>/dev/null
exit "$s""#;

/// Bytes per read/write request: OpenSSH's `limits@openssh.com` maximum (256 KiB - 1 KiB).
/// Smaller chunks doubled server CPU in the study (sftp-notes §4).
const CHUNK: usize = 261_120;
/// Files in flight for bulk operations (upload, hashing; removal and links too when near) on a
/// host whose round trip is under [`FAR`]. Each small file costs two round trips one after the
/// other (open, then the rest), so this bounds throughput only when round trips are long; near,
/// the CPU does.
/// On loopback 64 is the sweet spot (sftp-notes: 10k small files; session 3: the anchor survey
/// 2% and the overlapped read-back 5% faster than 256 with the current-thread runtime, 16 and 32
/// clearly slower).
const FILES_IN_FLIGHT_NEAR: usize = 64;
/// Files read and hashed at once on a near host (the anchor survey, the read-back, status). A
/// wider window than the upload's: more requests per pipe read and per SSH packet on every side.
/// Session 11, the `small` anchor over loopback (5 alternated runs each): median 3.31 s with
/// 192 against 3.43 s with 64 (160 and 256 alike, 512 worse); the same window for the upload
/// made its phase about 5% slower, so that one stays at 64.
const HASH_FILES_IN_FLIGHT_NEAR: usize = 192;
/// Files in flight when the round trip is [`FAR`] or more. Through a proxy adding 10 ms each way,
/// a 2,000-file deploy took 4.2 s instead of 5.2 s (the upload phase 0.87 s instead of 1.68 s,
/// about rsync's 0.8 s) and its rollback 2.0 s instead of 3.6 s. 1,024 was no better for the
/// upload: the same with its 256-file batches, twice as slow with 1,024-file batches (less of
/// the read-back overlaps). Memory:
/// at most 256 small files (255 KiB each) in flight.
const FILES_IN_FLIGHT_FAR: usize = 256;
/// Requests that open no handle (remove, symlink, readlink) in flight on a far host: each costs
/// the server one system call and the wire a few dozen bytes, so the window can be wider than
/// for files, whose handles count against the server's open-file limit. Rolling back 2,000
/// files through a 20 ms round trip (`benches/wan.sh`) took 1.37 s instead of 1.52 s with 256.
/// Near, the file window is used.
const NAMES_IN_FLIGHT_FAR: usize = 1024;
/// The round trip from which a host counts as far. A LAN is about 0.2-0.5 ms and a link to a
/// VPS 10 ms or more; the margin keeps a busy machine's loopback (the shortest of three probes)
/// near, and a far window on a near host would only cost a little memory and CPU.
const FAR: Duration = Duration::from_millis(5);
/// Directories listed (`read_dirs`) or created (`mkdirs`) concurrently on a near host. A far
/// host gets the far file window: a walk or a staging tree goes one level at a time, and each
/// wave of a level costs its round trips (a listing three: open, entries, end), so a level of
/// 200 directories took 7 waves with 32.
const DIRS_IN_FLIGHT_NEAR: usize = 32;
/// Chunk requests in flight for the large-file phase of bulk operations, shared by all files:
/// bounds memory to about 16 MiB however many large files there are.
const BIG_CHUNKS_IN_FLIGHT: usize = 64;
/// Chunk requests in flight per large file.
const CHUNKS_PER_FILE: usize = 16;

/// Operations that create a name (a `Failure` on them usually means the name exists).
const CREATING: &[&str] = &["mkdir", "symlink", "hard_link", "rename", "create"];

/// The extension whose use would make `Fs::rename` replace an existing target.
const HIDDEN_EXTENSION: &[u8] = b"posix-rename@openssh.com";

/// A host reached over SFTP.
pub struct SftpRemote {
    host: String,
    opts: ConnectOptions,
    /// ssh arguments shared by the sftp channel and `exec` (options only, no destination).
    ssh_args: Vec<OsString>,
    rt: Runtime,
    sftp: Option<Sftp>,
    child: Mutex<Option<tokio::process::Child>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Set after a timeout: the connection is presumed stalled.
    stalled: AtomicBool,
    /// Files in flight for bulk operations, chosen from the round trip at connect.
    in_flight: usize,
    fsync: bool,
    /// The server offers `hardlink@openssh.com`.
    hardlink: bool,
    statvfs: bool,
    filter: Arc<FilterStats>,
    /// The mode an exclusive create without attributes gives here (the server's umask, or a
    /// default ACL), learned from the first file: [`CREATE_MODE_KNOWN`] | mode, 0 until then.
    create_mode: AtomicU32,
    /// Dropped last: ends the thread that spawned ssh (whose death would kill ssh).
    _keeper: std::sync::mpsc::Sender<()>,
}

/// Marks [`SftpRemote::create_mode`] as learned.
const CREATE_MODE_KNOWN: u32 = 1 << 16;

impl std::fmt::Debug for SftpRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpRemote")
            .field("host", &self.host)
            .finish()
    }
}

/// The base ssh arguments for `host` (everything but the destination and the command).
fn ssh_args(opts: &ConnectOptions) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    if let Some(cfg) = &opts.ssh_config {
        a.push("-F".into());
        a.push(cfg.into());
    }
    let secs = |d: Duration| d.as_secs().max(1);
    // A server that stops answering keepalives ends the ssh process after 3 intervals; the
    // interval is longer than op_timeout so a stalled request is reported as our Timeout first.
    let alive = secs(opts.op_timeout).max(5);
    for o in [
        "BatchMode=yes".to_string(),
        format!(
            "StrictHostKeyChecking={}",
            if opts.accept_new_host_key {
                "accept-new"
            } else {
                "yes"
            }
        ),
        format!("ConnectTimeout={}", secs(opts.connect_timeout)),
        format!("ServerAliveInterval={alive}"),
        "ServerAliveCountMax=3".into(),
        // Never start or use a multiplexing master: nothing may outlive sealpush.
        "ControlMaster=no".into(),
        "ControlPath=none".into(),
        "ControlPersist=no".into(),
        "ClearAllForwardings=yes".into(),
    ] {
        a.push("-o".into());
        a.push(o.into());
    }
    // No tty, no X11, no agent forwarding.
    for f in ["-T", "-x", "-a"] {
        a.push(f.into());
    }
    a
}

/// Builds an ssh child that the kernel kills when the spawning thread (for the sftp channel, a
/// thread that lives as long as the [`SftpRemote`]; for `exec`, the caller, which waits for it)
/// or the whole process dies.
fn ssh_command(args: &[OsString], dest: &str, tail: &[&OsStr]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(args)
        .arg("--")
        .arg(dest)
        .args(tail)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure only calls the async-signal-safe prctl and getppid between fork and
    // exec. If the parent died before prctl took effect, ppid changed: exit rather than orphan.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd
}

impl SftpRemote {
    /// Connects to `host` (an ssh destination) and starts the SFTP subsystem.
    pub fn connect(host: &str, opts: &ConnectOptions) -> Result<SftpRemote> {
        let connect_err = |message: String| RemoteError::Connect {
            host: host.to_string(),
            message,
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(connect_err("not an ssh destination".into()));
        }
        // One thread drives the connection: whichever thread is inside `block_on` runs the
        // crate's read and flush tasks and its own requests, with no cross-thread wake-ups
        // per response. On 2 cores shared with ssh and the server that is 10-12% faster for
        // trees of small files than 2 worker threads, and no slower for large ones.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| connect_err(format!("cannot start the I/O runtime: {e}")))?;
        let mut args = ssh_args(opts);
        if !opts.keep_cipher_order {
            if let Some(list) = preferred_ciphers(host, opts) {
                args.push("-o".into());
                args.push(format!("Ciphers={list}").into());
            }
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));

        // Spawn from a thread that lives exactly as long as this SftpRemote: PR_SET_PDEATHSIG
        // follows the spawning *thread*, and the caller's thread may end first.
        let (keeper, mut child) = {
            // `-s`: the last non-option argument names a subsystem, not a command.
            let mut a = args.clone();
            a.push("-s".into());
            let mut cmd = ssh_command(&a, host, &[OsStr::new("sftp")]);
            let handle = rt.handle().clone();
            let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
            let (keeper, until_dropped) = std::sync::mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("sealpush-ssh".into())
                .spawn(move || {
                    let spawned = {
                        let _rt = handle.enter();
                        cmd.spawn()
                    };
                    let _ = spawned_tx.send(spawned);
                    // Returns when the sender (in the SftpRemote) is dropped.
                    let _ = until_dropped.recv();
                })
                .map_err(|e| connect_err(format!("cannot start a thread: {e}")))?;
            let child = spawned_rx
                .recv()
                .map_err(|e| connect_err(format!("cannot spawn ssh: {e}")))?
                .map_err(|e| connect_err(format!("cannot run ssh: {e}")))?;
            (keeper, child)
        };
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        widen_pipe(&stdin);
        widen_pipe(&stdout);
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        let stderr_task = rt.spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                // Keep the head: host key and auth messages come first.
                if s.len() < 64 * 1024 {
                    s.extend_from_slice(&buf[..n]);
                }
            }
        });

        let filter = Arc::new(FilterStats::default());
        let limit = opts.connect_timeout + Duration::from_secs(5);
        let started = rt.block_on(async {
            tokio::time::timeout(
                limit,
                Sftp::new(
                    stdin,
                    ServerFilter::with_stats(stdout, filter.clone()),
                    // Send each request at once: the default 0.5 ms batching delay is paid on
                    // every sequential step (open, read, close) of every small file, and
                    // measured 2x slower for trees of small files here.
                    SftpOptions::new().flush_interval(Duration::ZERO),
                ),
            )
            .await
        });
        let sftp = match started {
            Ok(Ok(sftp)) => sftp,
            failed => {
                // ssh has printed why (host key, auth, refused): let it finish, then read it.
                let _ = child.start_kill();
                rt.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
                });
                let text =
                    String::from_utf8_lossy(&stderr.lock().unwrap_or_else(|e| e.into_inner()))
                        .into_owned();
                let message = match failed {
                    Err(_) if text.trim().is_empty() => format!(
                        "no SFTP session within {}s (host unreachable or stalled)",
                        limit.as_secs()
                    ),
                    Ok(Err(e)) if text.trim().is_empty() => {
                        let e = e.to_string();
                        // A shell startup file that prints: its text is read as the SFTP
                        // server's first packet, whose length then makes no sense.
                        let hint = if e.contains("hello message") || e.contains("length") {
                            "; the login's shell printed something before the SFTP server \
                             started (a startup file such as ~/.bashrc that writes to stdout): \
                             make it print nothing for non-interactive sessions"
                        } else {
                            ""
                        };
                        format!("sftp subsystem failed: {e}{hint}")
                    }
                    _ => explain_ssh_failure(host, opts, &text),
                };
                return Err(connect_err(message));
            }
        };
        let fsync = sftp.support_fsync();
        let hardlink = sftp.support_hardlink();
        let statvfs = sftp.support_statvfs();
        let in_flight = match rt.block_on(round_trip(&sftp, opts.op_timeout)) {
            Some(rtt) if rtt >= FAR => FILES_IN_FLIGHT_FAR,
            _ => FILES_IN_FLIGHT_NEAR,
        };
        Ok(SftpRemote {
            host: host.to_string(),
            opts: opts.clone(),
            ssh_args: args,
            rt,
            sftp: Some(sftp),
            child: Mutex::new(Some(child)),
            stderr,
            stalled: AtomicBool::new(false),
            create_mode: AtomicU32::new(0),
            in_flight,
            _keeper: keeper,
            fsync,
            hardlink,
            statvfs,
            filter,
        })
    }

    fn sftp(&self) -> &Sftp {
        self.sftp.as_ref().expect("sftp lives until drop")
    }

    /// pid of the ssh child carrying the SFTP channel (for tests and diagnostics).
    pub fn ssh_pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|c| c.id())
    }

    /// Hashes files (with optional size hints), many in flight; results in input order.
    fn hash_many(
        &self,
        files: &[(&Path, Option<u64>)],
        progress: &dyn Progress,
    ) -> Vec<Result<(Digest, u64)>> {
        let c = self.ctx();
        let items = files
            .iter()
            .enumerate()
            .map(|(i, (p, hint))| (i, *p, *hint));
        // No overall timeout: each request is bounded by op_timeout inside `hash_one`.
        let mut out = self
            .rt
            .block_on(hash_stream(c, stream::iter(items), progress));
        out.resize_with(files.len(), || None);
        out.into_iter()
            .map(|r| r.expect("a result for every file"))
            .collect()
    }

    /// An error if `name` may be a lossy stand-in for a name that is not valid UTF-8 (see
    /// [`ServerFilter`]).
    fn check_lossy(&self, op: &'static str, path: &Path, name: &[u8]) -> Result<()> {
        const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();
        if self.filter.lossy_names.load(Ordering::Relaxed) > 0
            && name.windows(REPLACEMENT.len()).any(|w| w == REPLACEMENT)
        {
            return Err(RemoteError::Failed {
                op,
                path: path.to_path_buf(),
                reason: format!(
                    "holds a name that is not valid UTF-8 ({}), which the SFTP client library \
                     cannot represent",
                    String::from_utf8_lossy(name)
                ),
            });
        }
        Ok(())
    }

    /// A listing's names checked for lossy stand-ins, and a broken session explained.
    fn checked_listing(&self, path: &Path, res: Result<Vec<DirEntry>>) -> Result<Vec<DirEntry>> {
        if let Ok(list) = &res {
            for e in list {
                self.check_lossy("read_dir", path, &e.name)?;
            }
        }
        match res {
            // The client library decodes names as UTF-8 and drops the whole session when one is
            // not. If ssh itself is still running, that is the likely cause: say so.
            Err(RemoteError::Disconnected { .. }) if self.ssh_running() => {
                Err(RemoteError::Failed {
                    op: "read_dir",
                    path: path.to_path_buf(),
                    reason:
                        "the SFTP session broke while listing this directory; the likely cause is \
                         a name that is not valid UTF-8, which the SFTP client library cannot \
                         decode (the session is unusable now)"
                            .into(),
                })
            }
            other => other,
        }
    }

    /// True while the ssh child carrying the SFTP channel is alive.
    fn ssh_running(&self) -> bool {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Files kept in flight by bulk operations: more when the host's round trip is long.
    pub fn files_in_flight(&self) -> usize {
        self.in_flight
    }

    /// Directories listed or created at once: more when the host's round trip is long.
    pub fn dirs_in_flight(&self) -> usize {
        self.ctx().dirs_in_flight()
    }

    /// True when the server offers `fsync@openssh.com`.
    pub fn supports_fsync(&self) -> bool {
        self.fsync
    }

    /// Runs a shell command with an explicit time limit (for long checks such as a test suite);
    /// [`Remote::exec`] uses `op_timeout`.
    pub fn exec_with_timeout(&self, command: &str, limit: Duration) -> Result<ExecOutput> {
        let wrapper = shell_quote(EXEC_WRAPPER);
        let quoted = shell_quote(command);
        let cmd = ssh_command(
            &self.ssh_args,
            &self.host,
            &[
                OsStr::new("sh"),
                OsStr::new("-c"),
                OsStr::new(&wrapper),
                OsStr::new("sealpush"),
                OsStr::new(&quoted),
            ],
        );
        // stdin stays piped (ssh_command) and open until the command ends: its end is what
        // tells the wrapper on the host that sealpush gave up.
        let out = self.rt.block_on(async move {
            let mut cmd = cmd;
            let mut child = tokio::spawn(async move { cmd.spawn() })
                .await
                .map_err(std::io::Error::other)??;
            let _channel_open = child.stdin.take();
            match tokio::time::timeout(limit, child.wait_with_output()).await {
                Ok(r) => r.map(Some),
                // Dropping the future drops the child, and kill_on_drop kills it.
                Err(_) => Ok(None),
            }
        });
        match out {
            Ok(Some(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                // ssh itself exits 255 when it cannot connect: that is not the command's status.
                if out.status.code() == Some(255)
                    && out.stdout.is_empty()
                    && looks_like_ssh_error(&stderr)
                {
                    return Err(RemoteError::Connect {
                        host: self.host.clone(),
                        message: explain_ssh_failure(&self.host, &self.opts, &stderr),
                    });
                }
                Ok(ExecOutput {
                    command: command.to_string(),
                    status: out.status.code(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr,
                })
            }
            Ok(None) => Err(RemoteError::Timeout {
                op: "exec",
                path: PathBuf::from(command_label(command)),
                secs: limit.as_secs(),
            }),
            Err(e) => Err(RemoteError::Failed {
                op: "exec",
                path: PathBuf::from(command),
                reason: format!("cannot run ssh: {e}"),
            }),
        }
    }

    /// Runs `fut` (one remote operation) under the op timeout, mapping errors for `path`.
    fn run<T, F>(&self, op: &'static str, path: &Path, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        if self.stalled.load(Ordering::Relaxed) {
            return Err(self.stalled_error(op, path));
        }
        let limit = self.opts.op_timeout;
        match self
            .rt
            .block_on(async { tokio::time::timeout(limit, fut).await })
        {
            Ok(r) => r,
            Err(_) => {
                self.stalled.store(true, Ordering::Relaxed);
                Err(RemoteError::Timeout {
                    op,
                    path: path.to_path_buf(),
                    secs: limit.as_secs(),
                })
            }
        }
    }

    fn stalled_error(&self, op: &'static str, path: &Path) -> RemoteError {
        RemoteError::Timeout {
            op,
            path: path.to_path_buf(),
            secs: self.opts.op_timeout.as_secs(),
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            sftp: self.sftp(),
            host: &self.host,
            stderr: &self.stderr,
            statvfs: self.statvfs,
            limit: self.opts.op_timeout,
            stalled: &self.stalled,
            create_mode: &self.create_mode,
            in_flight: self.in_flight,
            chunk: self
                .opts
                .max_request
                .map_or(CHUNK, |n| (n as usize).min(CHUNK)),
        }
    }
}

impl Drop for SftpRemote {
    fn drop(&mut self) {
        if let Some(sftp) = self.sftp.take() {
            // close() waits for outstanding requests; a stalled server must not hang the drop.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), sftp.close()).await
            });
        }
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.start_kill();
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), child.wait()).await
            });
        }
    }
}

/// What async helpers need from the remote, borrowed.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    sftp: &'a Sftp,
    host: &'a str,
    stderr: &'a Mutex<Vec<u8>>,
    statvfs: bool,
    limit: Duration,
    stalled: &'a AtomicBool,
    create_mode: &'a AtomicU32,
    /// Files in flight for bulk operations ([`SftpRemote::in_flight`]).
    in_flight: usize,
    /// Most bytes one read or write request carries: [`CHUNK`], or the user's smaller cap
    /// ([`ConnectOptions::max_request`]). The client library splits further at the server's
    /// own limit.
    chunk: usize,
}

impl Ctx<'_> {
    fn names_in_flight(&self) -> usize {
        if self.in_flight >= FILES_IN_FLIGHT_FAR {
            NAMES_IN_FLIGHT_FAR
        } else {
            self.in_flight
        }
    }

    fn dirs_in_flight(&self) -> usize {
        if self.in_flight >= FILES_IN_FLIGHT_FAR {
            self.in_flight
        } else {
            DIRS_IN_FLIGHT_NEAR
        }
    }

    /// One request under the op timeout (for the bulk paths, where each request is bounded).
    async fn t<T>(
        &self,
        op: &'static str,
        path: &Path,
        fut: impl Future<Output = Result<T, SftpError>>,
    ) -> Result<T> {
        let timeout = || RemoteError::Timeout {
            op,
            path: path.to_path_buf(),
            secs: self.limit.as_secs(),
        };
        if self.stalled.load(Ordering::Relaxed) {
            return Err(timeout());
        }
        match tokio::time::timeout(self.limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map(op, path, e).await),
            Err(_) => {
                self.stalled.store(true, Ordering::Relaxed);
                Err(timeout())
            }
        }
    }

    /// Maps a client error; a bare `Failure` is diagnosed (see [`Ctx::diagnose`]).
    async fn map(&self, op: &'static str, path: &Path, e: SftpError) -> RemoteError {
        match e {
            SftpError::SftpError(SftpErrorKind::NoSuchFile, _) => {
                // For a create, the missing name is a component of the parent: say which.
                if CREATING.contains(&op) {
                    if let Some(missing) = self.first_missing_component(path).await {
                        return RemoteError::NotFound { op, path: missing };
                    }
                }
                RemoteError::NotFound {
                    op,
                    path: path.to_path_buf(),
                }
            }
            SftpError::SftpError(SftpErrorKind::PermDenied, _) => RemoteError::PermissionDenied {
                op,
                path: path.to_path_buf(),
            },
            SftpError::SftpError(SftpErrorKind::Failure, _) => self.diagnose(op, path).await,
            SftpError::SftpError(kind, msg) => RemoteError::Failed {
                op,
                path: path.to_path_buf(),
                reason: format!("server answered {kind:?}: {msg}"),
            },
            SftpError::FormatError(_) if path.to_str().is_none() => RemoteError::Failed {
                op,
                path: path.to_path_buf(),
                reason: "the name is not valid UTF-8, which the SFTP client library cannot send"
                    .into(),
            },
            SftpError::FormatError(e) => RemoteError::Failed {
                op,
                path: path.to_path_buf(),
                reason: format!(
                    "cannot encode or decode the SFTP message (a name that is not valid UTF-8?): {e}"
                ),
            },
            SftpError::UnsupportedExtension(ext) => RemoteError::Failed {
                op,
                path: path.to_path_buf(),
                reason: format!("the server does not offer the {ext} extension"),
            },
            other => {
                let tail = ssh_tail(self.stderr);
                RemoteError::Disconnected {
                    host: self.host.to_string(),
                    message: if tail.is_empty() {
                        format!("{op} {}: {}", path.display(), short_error(&other))
                    } else {
                        format!("{op} {}: {tail}", path.display())
                    },
                }
            }
        }
    }

    /// A lookup made to explain an error: under the op timeout, not sent once the connection
    /// is found stalled, and marking it stalled when it times out. Otherwise an error met
    /// just before a stall would wait a full limit for each of its lookups, one after another.
    /// `None` when not sent or unanswered.
    async fn probe<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        if self.stalled.load(Ordering::Relaxed) {
            return None;
        }
        match tokio::time::timeout(self.limit, fut).await {
            Ok(v) => Some(v),
            Err(_) => {
                self.stalled.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// The first component of `path`'s parent that does not exist (lstat), if any.
    async fn first_missing_component(&self, path: &Path) -> Option<PathBuf> {
        let mut fs = self.sftp.fs();
        let mut prefix = PathBuf::new();
        for c in path.parent()?.components() {
            prefix.push(c);
            if matches!(c, Component::RootDir) {
                continue;
            }
            match self.probe(fs.symlink_metadata(&prefix)).await {
                Some(Err(SftpError::SftpError(SftpErrorKind::NoSuchFile, _))) => {
                    return Some(prefix)
                }
                Some(_) => {}
                None => return None,
            }
        }
        None
    }

    /// Finds the real cause of a bare SFTP `Failure` on `path`: the name exists, a component is
    /// missing or not a directory, the filesystem is read-only or full.
    async fn diagnose(&self, op: &'static str, path: &Path) -> RemoteError {
        let mut fs = self.sftp.fs();
        let failed = |reason: String| RemoteError::Failed {
            op,
            path: path.to_path_buf(),
            reason,
        };
        let creating = CREATING.contains(&op);
        let lst = self.probe(fs.symlink_metadata(path)).await;
        if let Some(Ok(meta)) = &lst {
            let kind = kind_of(meta);
            if creating {
                return RemoteError::Exists {
                    op,
                    path: path.to_path_buf(),
                };
            }
            if op == "remove_dir" {
                if kind != FileKind::Dir {
                    return failed("not a directory".into());
                }
                if let Some(Ok(d)) = self.probe(fs.open_dir(path)).await {
                    // Under the limit too: a stall between the open and the listing would
                    // otherwise wait for good (a bulk removal has no outer timeout).
                    let entries: Vec<_> = self
                        .probe(d.read_dir().try_collect::<Vec<_>>())
                        .await
                        .and_then(Result::ok)
                        .unwrap_or_default();
                    if entries
                        .iter()
                        .any(|e| !matches!(e.filename().as_os_str().as_bytes(), b"." | b".."))
                    {
                        return failed("directory not empty".into());
                    }
                }
            }
            if op == "remove_file" && kind == FileKind::Dir {
                return failed("is a directory".into());
            }
        }
        // Walk the components of the parent: the first missing one or non-directory is the cause.
        let mut prefix = PathBuf::new();
        let parent = path.parent().unwrap_or(Path::new("/"));
        for c in parent.components() {
            prefix.push(c);
            if matches!(c, Component::RootDir) {
                continue;
            }
            match self.probe(fs.metadata(&prefix)).await {
                Some(Ok(m)) if kind_of(&m) != FileKind::Dir => {
                    return failed(format!("{} is not a directory", prefix.display()));
                }
                Some(Err(SftpError::SftpError(SftpErrorKind::NoSuchFile, _))) => {
                    return RemoteError::NotFound {
                        op,
                        path: prefix.clone(),
                    };
                }
                Some(Err(SftpError::SftpError(SftpErrorKind::PermDenied, _))) => {
                    return RemoteError::PermissionDenied {
                        op,
                        path: prefix.clone(),
                    };
                }
                Some(_) => {}
                None => break,
            }
        }
        if self.statvfs {
            if let Some(Ok(st)) = self.probe(fs.statvfs(parent)).await {
                if st.flag & 1 != 0 {
                    return failed(format!("read-only filesystem at {}", parent.display()));
                }
                if st.bavail == 0 {
                    return failed(format!(
                        "no space left on the filesystem of {}",
                        parent.display()
                    ));
                }
                if st.favail == 0 && st.files > 0 {
                    return failed(format!(
                        "no free inodes on the filesystem of {}",
                        parent.display()
                    ));
                }
            }
        }
        if self.stalled.load(Ordering::Relaxed) {
            return failed(format!(
                "the server reported a failure, then did not answer the lookups for its cause within {}s (the connection stalled)",
                self.limit.as_secs()
            ));
        }
        failed("the server reported a failure without a cause, and none was found".into())
    }
}

/// The last meaningful lines ssh printed.
fn ssh_tail(stderr: &Mutex<Vec<u8>>) -> String {
    let text =
        String::from_utf8_lossy(&stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

/// One-line text of a client error without its doubled causes (openssh-sftp-error repeats
/// sources under `{:#}`).
fn short_error(e: &SftpError) -> String {
    match e {
        SftpError::BackgroundTaskFailure(_) | SftpError::IOError(_) => {
            "the sftp channel closed".into()
        }
        other => {
            let s = other.to_string();
            s.trim_end_matches('.').to_lowercase()
        }
    }
}

fn kind_of(m: &MetaData) -> FileKind {
    match m.file_type() {
        Some(t) if t.is_file() => FileKind::File,
        Some(t) if t.is_dir() => FileKind::Dir,
        Some(t) if t.is_symlink() => FileKind::Symlink,
        Some(t) if t.is_fifo() => FileKind::Fifo,
        Some(t) if t.is_socket() => FileKind::Socket,
        Some(t) if t.is_char_device() => FileKind::CharDevice,
        Some(t) if t.is_block_device() => FileKind::BlockDevice,
        _ => FileKind::Other,
    }
}

fn meta_of(m: &MetaData) -> Meta {
    Meta {
        kind: kind_of(m),
        mode: m
            .permissions()
            .map(|p| p.as_raw().bits() & 0o7777)
            .unwrap_or(0),
        size: m.len().unwrap_or(0),
        uid: m.uid().unwrap_or(0),
        gid: m.gid().unwrap_or(0),
        mtime: m
            .modified()
            .map(|t| t.as_duration().as_secs() as i64)
            .unwrap_or(0),
    }
}

fn perms(mode: u32) -> Permissions {
    Permissions::from((mode & 0o7777) as u16)
}

/// POSIX single-quoting for `sh -c`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r#"'\''"#))
}

fn looks_like_ssh_error(stderr: &str) -> bool {
    [
        "Host key verification failed",
        "Permission denied (",
        "Connection refused",
        "Connection timed out",
        "Could not resolve hostname",
        "No route to host",
        "Connection closed by",
        "kex_exchange_identification",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// Turns ssh's stderr after a failed connection into a message a user can act on. For host key
/// problems it fetches the server's key fingerprints with `ssh-keyscan` and says how to trust
/// them.
fn explain_ssh_failure(host: &str, opts: &ConnectOptions, stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("@@@") && !l.starts_with("IT IS POSSIBLE"))
        .collect();
    let changed = stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED");
    let unknown = !changed
        && (stderr.contains("host key is known")
            || stderr.contains("Host key verification failed"));
    if !changed && !unknown {
        let tail = &lines[lines.len().saturating_sub(3)..];
        let mut msg = if tail.is_empty() {
            "ssh exited without a message".to_string()
        } else {
            tail.join("; ")
        };
        if stderr.contains("subsystem request failed") {
            msg.push_str(
                "; the server offers no sftp subsystem: add `Subsystem sftp internal-sftp` \
                 (or the path of sftp-server) to its sshd_config and reload sshd",
            );
        }
        return msg;
    }
    let resolved = resolve_with_ssh_g(host, opts);
    let (hostname, port, known_hosts) = resolved
        .clone()
        .unwrap_or_else(|| (host.to_string(), 22, "~/.ssh/known_hosts".to_string()));
    let display = if port == 22 {
        hostname.clone()
    } else {
        format!("[{hostname}]:{port}")
    };
    let scanned = keyscan(&hostname, port);
    let mut msg = String::new();
    if changed {
        msg.push_str(&format!(
            "the host key of {display} has CHANGED since it was recorded in {known_hosts}; this \
             may be an attack or a reinstalled server, so sealpush stops"
        ));
        if let Some(l) = lines.iter().find(|l| l.starts_with("Offending")) {
            msg.push_str(&format!(" ({})", l.trim_end_matches('.').to_lowercase()));
        }
    } else {
        msg.push_str(&format!(
            "the host key of {display} is not in {known_hosts} (strict host key checking)"
        ));
    }
    if scanned.is_empty() {
        msg.push_str("; the server's key could not be fetched with ssh-keyscan");
    } else {
        msg.push_str("; the server offers ");
        msg.push_str(
            &scanned
                .iter()
                .map(|(fp, _)| fp.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if changed {
        msg.push_str(&format!(
            "; if the change is expected, verify the fingerprint out of band, remove the old entry \
             with `ssh-keygen -R '{display}' -f {known_hosts}`, then rerun with \
             --accept-new-host-key"
        ));
    } else {
        msg.push_str("; verify the fingerprint out of band, then rerun with --accept-new-host-key");
        if let Some((_, line)) = scanned.first() {
            msg.push_str(&format!(" or add this line to {known_hosts}: {line}"));
        }
    }
    msg
}

/// The cipher list to pass to ssh: the one its configuration gives for `host` (`ssh -G`), with
/// the AES-GCM ciphers moved to the front, when this CPU has AES and carry-less multiply
/// instructions. `None` (leave ssh alone) otherwise, or when the list already starts with one.
///
/// Why: OpenSSH puts chacha20-poly1305 first because it is fast without AES hardware; with it,
/// AES-GCM moves bulk data at a fraction of the CPU cost, and on a loopback push (where client
/// and server share the cores) that was 1.4x scp's default throughput here. The set of
/// allowed ciphers is exactly the configured one, so a hardened configuration stays hardened;
/// the server still picks the first cipher of this list that it supports.
pub fn preferred_ciphers(host: &str, opts: &ConnectOptions) -> Option<String> {
    if !cpu_has_aes() {
        return None;
    }
    let configured = ssh_g(host, opts)?;
    let field = configured
        .lines()
        .find_map(|l| l.strip_prefix("ciphers "))?;
    gcm_first(field.trim())
}

/// `list` (comma-separated) with its `aes*-gcm@openssh.com` entries first, in their order; `None`
/// when it has none or already starts with one.
pub fn gcm_first(list: &str) -> Option<String> {
    let all: Vec<&str> = list.split(',').filter(|c| !c.is_empty()).collect();
    let is_gcm = |c: &str| c.starts_with("aes") && c.ends_with("-gcm@openssh.com");
    if all.first().map_or(true, |c| is_gcm(c)) || !all.iter().any(|c| is_gcm(c)) {
        return None;
    }
    let (gcm, rest): (Vec<&str>, Vec<&str>) = all.iter().partition(|c| is_gcm(c));
    Some([gcm, rest].concat().join(","))
}

fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// `ssh [-F FILE] -G -- host`: the configuration ssh would use, one `key value` a line.
fn ssh_g(host: &str, opts: &ConnectOptions) -> Option<String> {
    let mut cmd = std::process::Command::new("ssh");
    if let Some(cfg) = &opts.ssh_config {
        cmd.arg("-F").arg(cfg);
    }
    let out = cmd
        .arg("-G")
        .arg("--")
        .arg(host)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ssh -G`: the hostname, port and first UserKnownHostsFile ssh would use for `host`.
fn resolve_with_ssh_g(host: &str, opts: &ConnectOptions) -> Option<(String, u16, String)> {
    let text = ssh_g(host, opts)?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(' ')))
            .map(|s| s.to_string())
    };
    let hostname = field("hostname")?;
    let port = field("port")?.parse().ok()?;
    let kh = field("userknownhostsfile")
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "~/.ssh/known_hosts".into());
    Some((hostname, port, kh))
}

/// `ssh-keyscan -p PORT HOST | ssh-keygen -lf -`: (fingerprint description, known_hosts line).
fn keyscan(hostname: &str, port: u16) -> Vec<(String, String)> {
    let Ok(out) = std::process::Command::new("ssh-keyscan")
        .args(["-T", "5", "-p", &port.to_string(), "--", hostname])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let mut res = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fp = std::process::Command::new("ssh-keygen")
            .args(["-l", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("piped").write_all(line.as_bytes())?;
                c.wait_with_output()
            });
        if let Ok(o) = fp {
            // "256 SHA256:xxxx [127.0.0.1]:2222 (ED25519)" -> "ED25519 key SHA256:xxxx"
            let t = String::from_utf8_lossy(&o.stdout);
            let parts: Vec<&str> = t.split_whitespace().collect();
            if parts.len() >= 4 {
                let kind = parts[parts.len() - 1].trim_matches(|c| c == '(' || c == ')');
                res.push((format!("{kind} key {}", parts[1]), line.to_string()));
            }
        }
    }
    // ed25519 first: it is what a current ssh negotiates.
    res.sort_by_key(|(fp, _)| !fp.starts_with("ED25519"));
    res
}

/// A command as errors name it: its first line, cut at 60 characters (sealpush's own commands
/// are whole shell scripts).
pub(crate) fn command_label(command: &str) -> String {
    let line = command.lines().next().unwrap_or("");
    let mut label: String = line.chars().take(60).collect();
    if label.len() < command.len() {
        label.push('…');
    }
    label
}

/// The server-to-client stream, filtered on its way to the client library. Two rewrites, each
/// keeping the framing valid:
/// - in the first packet (SSH_FXP_VERSION), the `posix-rename@openssh.com` extension is renamed
///   (same length) so the library never uses it: its `Fs::rename` would then replace existing
///   targets;
/// - in SSH_FXP_NAME answers (readdir, readlink, realpath), a file name that is not valid UTF-8
///   is replaced by its lossy UTF-8 form (U+FFFD for each bad sequence) and counted in
///   [`FilterStats`]: the library decodes names as UTF-8 and otherwise drops the whole session.
///   Callers treat a U+FFFD name as an error when the count is non-zero, so no lossy name is
///   ever used as if it were real.
///
/// Every other packet passes through unchanged (one copy through an internal buffer).
pub struct ServerFilter<R> {
    inner: R,
    inbuf: Vec<u8>,
    pos: usize,
    /// Bytes of the current packet still to pass through unchanged.
    pass: usize,
    /// A rewritten packet waiting to be delivered.
    out: Vec<u8>,
    out_pos: usize,
    first: bool,
    stats: Arc<FilterStats>,
}

/// What the filter changed.
#[derive(Debug, Default)]
pub struct FilterStats {
    /// Whether the server offered posix-rename (now hidden).
    pub hid_posix_rename: AtomicBool,
    /// Names that were not valid UTF-8 and were replaced by a lossy form.
    pub lossy_names: std::sync::atomic::AtomicU64,
}

const SSH_FXP_NAME: u8 = 104;
/// Packets larger than this are passed through unparsed.
const MAX_PARSED_PACKET: usize = 16 << 20;

impl<R> ServerFilter<R> {
    pub fn new(inner: R) -> Self {
        ServerFilter::with_stats(inner, Arc::default())
    }

    pub fn with_stats(inner: R, stats: Arc<FilterStats>) -> Self {
        ServerFilter {
            inner,
            inbuf: Vec::with_capacity(64 * 1024),
            pos: 0,
            pass: 0,
            out: Vec::new(),
            out_pos: 0,
            first: true,
            stats,
        }
    }
}

/// Rewrites the hidden extension's name inside one SSH_FXP_VERSION packet (with its 4-byte
/// length). Returns true when it was found. Malformed packets are left alone.
pub fn hide_in_version_packet(packet: &mut [u8]) -> bool {
    const SSH_FXP_VERSION: u8 = 2;
    if packet.len() < 9 || packet[4] != SSH_FXP_VERSION {
        return false;
    }
    let mut i = 9;
    let mut found = false;
    while i < packet.len() {
        let Some(nlen) = be32(packet, i) else { break };
        let name_at = i + 4;
        let Some(name) = packet.get(name_at..name_at + nlen) else {
            break;
        };
        if name == HIDDEN_EXTENSION {
            packet[name_at] = b'x';
            found = true;
        }
        let data_at = name_at + nlen;
        let Some(dlen) = be32(packet, data_at) else {
            break;
        };
        i = data_at + 4 + dlen;
    }
    found
}

fn be32(p: &[u8], at: usize) -> Option<usize> {
    p.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Length of an SFTP v3 ATTRS structure starting at `at`.
fn attrs_len(p: &[u8], at: usize) -> Option<usize> {
    let flags = be32(p, at)?;
    let mut i = at + 4;
    if flags & 0x1 != 0 {
        i += 8; // size
    }
    if flags & 0x2 != 0 {
        i += 8; // uid, gid
    }
    if flags & 0x4 != 0 {
        i += 4; // permissions
    }
    if flags & 0x8 != 0 {
        i += 8; // atime, mtime
    }
    if flags & 0x8000_0000 != 0 {
        let n = be32(p, i)?;
        i += 4;
        for _ in 0..n {
            for _ in 0..2 {
                let l = be32(p, i)?;
                i += 4 + l;
            }
        }
    }
    (i <= p.len()).then_some(i - at)
}

/// Replaces file names that are not valid UTF-8 in one SSH_FXP_NAME packet (with its length)
/// by their lossy form. Returns the rewritten packet and the number of names replaced, or `None`
/// when nothing needed to change (or the packet does not parse).
pub fn lossy_names_in_name_packet(packet: &[u8]) -> Option<(Vec<u8>, u64)> {
    if packet.len() < 13 || packet[4] != SSH_FXP_NAME {
        return None;
    }
    let count = be32(packet, 9)?;
    // First pass: find whether any name is bad (the common case is none: no copy).
    let mut i = 13;
    let mut bad = false;
    for _ in 0..count {
        let n = be32(packet, i)?;
        let name = packet.get(i + 4..i + 4 + n)?;
        bad |= std::str::from_utf8(name).is_err();
        i += 4 + n;
        let l = be32(packet, i)?;
        i += 4 + l;
        i += attrs_len(packet, i)?;
    }
    if !bad {
        return None;
    }
    let mut out = Vec::with_capacity(packet.len() + 64);
    out.extend_from_slice(&packet[..13]);
    let mut i = 13;
    let mut replaced = 0;
    for _ in 0..count {
        let n = be32(packet, i)?;
        let name = &packet[i + 4..i + 4 + n];
        match std::str::from_utf8(name) {
            Ok(_) => out.extend_from_slice(&packet[i..i + 4 + n]),
            Err(_) => {
                let lossy = String::from_utf8_lossy(name);
                out.extend_from_slice(&(lossy.len() as u32).to_be_bytes());
                out.extend_from_slice(lossy.as_bytes());
                replaced += 1;
            }
        }
        i += 4 + n;
        let l = be32(packet, i)?;
        let a = attrs_len(packet, i + 4 + l)?;
        out.extend_from_slice(&packet[i..i + 4 + l + a]);
        i += 4 + l + a;
    }
    out.extend_from_slice(&packet[i..]);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Some((out, replaced))
}

impl<R: AsyncRead + Unpin> AsyncRead for ServerFilter<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            // 1. A rewritten packet first.
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                return Poll::Ready(Ok(()));
            }
            let avail = this.inbuf.len() - this.pos;
            // 2. The rest of a pass-through packet.
            if this.pass > 0 && avail > 0 {
                let n = this.pass.min(avail).min(buf.remaining());
                buf.put_slice(&this.inbuf[this.pos..this.pos + n]);
                this.pos += n;
                this.pass -= n;
                return Poll::Ready(Ok(()));
            }
            // 3. The next packet's header.
            if this.pass == 0 && avail >= 5 {
                let p = &this.inbuf[this.pos..];
                let total = 4 + be32(p, 0).expect("5 bytes available");
                let kind = p[4];
                let parse = (this.first || kind == SSH_FXP_NAME) && total <= MAX_PARSED_PACKET;
                if !parse {
                    this.first = false;
                    this.pass = total;
                    continue;
                }
                if avail >= total {
                    let mut packet = this.inbuf[this.pos..this.pos + total].to_vec();
                    this.pos += total;
                    if this.first {
                        this.first = false;
                        if hide_in_version_packet(&mut packet) {
                            this.stats.hid_posix_rename.store(true, Ordering::Relaxed);
                        }
                    } else if let Some((rewritten, n)) = lossy_names_in_name_packet(&packet) {
                        this.stats.lossy_names.fetch_add(n, Ordering::Relaxed);
                        packet = rewritten;
                    }
                    this.out = packet;
                    this.out_pos = 0;
                    continue;
                }
            }
            // 4. More input.
            if this.pos > 0 {
                this.inbuf.drain(..this.pos);
                this.pos = 0;
            }
            let len = this.inbuf.len();
            this.inbuf.resize(len + 64 * 1024, 0);
            let mut rb = ReadBuf::new(&mut this.inbuf[len..]);
            let res = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let got = rb.filled().len();
            this.inbuf.truncate(len + got);
            ready!(res)?;
            if got == 0 {
                // EOF: hand over any partial packet as it is, then EOF.
                if this.inbuf.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.pass = this.inbuf.len();
                this.first = false;
            }
        }
    }
}

/// Creates one directory (exclusive: fails if the name exists in any form) with exactly `mode`.
async fn make_dir(c: Ctx<'_>, path: &Path, mode: u32) -> Result<()> {
    let (mut fs, mut look) = (c.sftp.fs(), c.sftp.fs());
    // The mkdir and an lstat of the name in one round trip: the server answers a channel's
    // requests in order, so the lstat sees what the mkdir made (and is ignored if it failed).
    let (made, seen) = in_order(
        c.t(
            "mkdir",
            path,
            fs.dir_builder().permissions(perms(mode)).create(path),
        ),
        c.t("lstat", path, look.symlink_metadata(path)),
    )
    .await;
    made?;
    let seen = meta_of(&seen?);
    if seen.kind != FileKind::Dir {
        // Replaced between the two requests; a chmod by name would follow a symlink.
        return Err(RemoteError::Failed {
            op: "mkdir",
            path: path.to_path_buf(),
            reason: format!(
                "replaced by a {} right after it was created",
                seen.kind.noun()
            ),
        });
    }
    // The server applied its umask (or a default ACL) to the requested mode: set it exactly,
    // which costs a round trip only when that changed it.
    if seen.mode != mode & 0o7777 {
        c.t("mkdir", path, fs.set_permissions(path, perms(mode)))
            .await?;
    }
    Ok(())
}

/// lstat of one name; `None` when it does not exist.
async fn lstat_one(c: Ctx<'_>, path: &Path) -> Result<Option<Meta>> {
    let mut fs = c.sftp.fs();
    match c.t("lstat", path, fs.symlink_metadata(path)).await {
        Ok(m) => Ok(Some(meta_of(&m))),
        Err(RemoteError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The entries of one directory (without `.` and `..`), each request under the op timeout.
async fn list_dir(c: Ctx<'_>, path: &Path) -> Result<Vec<DirEntry>> {
    let mut fs = c.sftp.fs();
    let dir = c.t("read_dir", path, fs.open_dir(path)).await?;
    let entries: Vec<_> = c
        .t("read_dir", path, dir.read_dir().try_collect::<Vec<_>>())
        .await?;
    Ok(entries
        .into_iter()
        .filter(|e| !matches!(e.filename().as_os_str().as_bytes(), b"." | b".."))
        .map(|e| DirEntry {
            name: e.filename().as_os_str().as_bytes().to_vec(),
            meta: meta_of(&e.metadata()),
        })
        .collect())
}

/// Reads a whole file (sequentially; short files only) of at most `limit` bytes.
async fn read_small(c: Ctx<'_>, path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut f = c.t("read", path, c.sftp.open(path)).await?;
    let mut out = Vec::new();
    loop {
        let off = out.len() as u64;
        set_offset(&mut f, off);
        match c
            .t("read", path, f.read(c.chunk as u32, BytesMut::new()))
            .await?
        {
            None => break,
            Some(b) => {
                out.extend_from_slice(&b);
                if out.len() as u64 > limit {
                    return Err(RemoteError::Failed {
                        op: "read",
                        path: path.to_path_buf(),
                        reason: format!("larger than the {limit}-byte limit"),
                    });
                }
            }
        }
    }
    // Dropping the handle sends the close without waiting for its answer (read-only: nothing
    // to learn from it).
    drop(f);
    Ok(out)
}

/// Bytes of a pipe to or from ssh (Linux's default is 64 KiB; 1 MiB is the default ceiling for
/// an unprivileged process, `/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Grows a pipe to ssh to [`PIPE_BYTES`], best effort. With the default 64 KiB, a 255 KiB
/// request or response crosses it in several wake-ups of each side; with 1 MiB, a 1 GiB file's
/// upload took 10% less time on loopback, its read-back 15% less. Trees of small files: no
/// change. A refusal (the user's pipe quota is spent) leaves the default, which is only slower.
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int and touches no memory.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
    }
}

/// The shortest of three round trips (an lstat of `/`), or `None` if one failed.
async fn round_trip(sftp: &Sftp, limit: Duration) -> Option<Duration> {
    let mut best = None;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let mut fs = sftp.fs();
        tokio::time::timeout(limit, fs.symlink_metadata("/"))
            .await
            .ok()?
            .ok()?;
        let d = t.elapsed();
        best = Some(best.map_or(d, |b: Duration| b.min(d)));
    }
    best
}

/// Moves a file handle's local offset (no request is sent: SFTP reads and writes carry their
/// offset, the crate keeps it client-side).
fn set_offset(f: &mut openssh_sftp_client::file::File, at: u64) {
    use tokio::io::AsyncSeek;
    // A seek from the start to a non-negative offset cannot fail.
    let _ = Pin::new(f).start_seek(SeekFrom::Start(at));
}

/// What the first read of a file tells about the rest of it.
#[derive(Debug, PartialEq, Eq)]
enum AfterFirst {
    /// The whole file: nothing more to read.
    Whole,
    /// More to come: fstat for the size, read the rest in pieces of this many bytes, many at
    /// once, then on to EOF.
    Pieces(usize),
    /// Read on, one request at a time, until EOF.
    Tail,
}

/// Decides from the first read (`asked` bytes asked, `got` returned; `hint` the size just
/// listed, if known) how to read the rest:
/// - short, and exactly the listed size: the whole file. OpenSSH's sftp-server answers a read
///   with one read(2), which is short on a regular file only at its end;
/// - full: the file may go on, in pieces of that size;
/// - short, but the file was listed larger: the server answers at most `got` bytes (its own
///   limit is below ours; 20 KiB is common without the limits extension), so the rest comes in
///   pieces of `got` bytes, many at once, rather than one request per round trip;
/// - anything else (EOF, no hint): read on until EOF.
fn after_first(asked: usize, got: usize, hint: Option<u64>) -> AfterFirst {
    match hint {
        _ if got == 0 => AfterFirst::Tail,
        Some(n) if got < asked && got as u64 == n => AfterFirst::Whole,
        _ if got >= asked => AfterFirst::Pieces(got),
        Some(n) if (got as u64) < n => AfterFirst::Pieces(got),
        _ => AfterFirst::Tail,
    }
}

/// Reads and hashes the files `files` yields (id, path, size hint; paths borrowed or owned), up to the bulk window at
/// once; the result for id `i` is at index `i`. A small file read whole comes back unhashed
/// and waits for others: they are hashed [`HASH_TOGETHER`] at a time, four messages side by
/// side ([`crate::sha256_many`]).
async fn hash_stream<P: AsRef<Path>>(
    c: Ctx<'_>,
    files: impl futures_util::Stream<Item = (usize, P, Option<u64>)>,
    progress: &dyn Progress,
) -> Vec<Option<Result<(Digest, u64)>>> {
    let big = Semaphore::new(BIG_CHUNKS_IN_FLIGHT);
    let window = c.in_flight.max(HASH_FILES_IN_FLIGHT_NEAR);
    let mut out: Vec<Option<Result<(Digest, u64)>>> = Vec::new();
    let put = |out: &mut Vec<Option<_>>, i: usize, r| {
        if out.len() <= i {
            out.resize_with(i + 1, || None);
        }
        out[i] = Some(r);
    };
    let hash_whole = |whole: &mut Vec<(usize, Bytes)>, out: &mut Vec<Option<_>>| {
        let contents: Vec<&[u8]> = whole.iter().map(|(_, b)| &b[..]).collect();
        let digests = crate::sha256_many::digest_many(&contents);
        for ((i, b), d) in whole.drain(..).zip(digests) {
            put(out, i, Ok((d, b.len() as u64)));
        }
    };
    let mut whole: Vec<(usize, Bytes)> = Vec::with_capacity(HASH_TOGETHER);
    let big = &big;
    let mut reads =
        std::pin::pin!(files
            .map(|(i, path, hint)| async move {
                (i, hash_one(c, path.as_ref(), hint, big, progress).await)
            })
            .buffer_unordered(window));
    while let Some((i, r)) = reads.next().await {
        match r {
            Ok(Read::Whole(b)) => {
                whole.push((i, b));
                if whole.len() == HASH_TOGETHER {
                    hash_whole(&mut whole, &mut out);
                }
            }
            Ok(Read::Hashed(d, n)) => put(&mut out, i, Ok((d, n))),
            Err(e) => put(&mut out, i, Err(e)),
        }
    }
    hash_whole(&mut whole, &mut out);
    out
}

/// What [`hash_one`] gives back.
enum Read {
    /// A small file read whole in one request: its bytes, to be hashed with others'.
    Whole(Bytes),
    /// Digest and size of a file read in pieces, hashed as they came.
    Hashed(Digest, u64),
}

/// Whole small files hashed together by [`SftpRemote::hash_many`] (a multiple of the four
/// lanes of [`crate::sha256_many`]; about 160 KiB of the `small` corpus).
const HASH_TOGETHER: usize = 16;

/// sha256 and size of one file, reading it to EOF (see [`after_first`]). A small file of the
/// listed size: open, read, close (unawaited). Larger ones: after the first read, fstat gives
/// the size and the remaining pieces are read with up to [`CHUNKS_PER_FILE`] requests in flight
/// (permits from `big`), then reading continues until EOF in case the file grew.
async fn hash_one(
    c: Ctx<'_>,
    path: &Path,
    hint: Option<u64>,
    big: &Semaphore,
    progress: &dyn Progress,
) -> Result<Read> {
    let op = "hash";
    let file = c.t(op, path, c.sftp.open(path)).await?;
    let mut hasher = sha2::Sha256::new();
    let mut off: u64 = 0;
    let mut f = file.clone();
    // Size the buffer by the hint: a 255 KiB allocation per small file costs more than the
    // hashing (large allocations are mmap'd and unmapped each time).
    let chunk = c.chunk;
    let cap = hint.map_or(chunk, |n| (n as usize).saturating_add(1).min(chunk));
    let first = c
        .t(op, path, f.read(chunk as u32, BytesMut::with_capacity(cap)))
        .await?;
    let after = after_first(chunk, first.as_ref().map_or(0, |b| b.len()), hint);
    let read_some = first.is_some();
    if let Some(b) = first {
        progress.advance(b.len() as u64, 0);
        if after == AfterFirst::Whole {
            // No end-of-file request; the close is sent by dropping the handle, without
            // waiting. The caller hashes the bytes together with other files'.
            drop(f);
            drop(file);
            progress.advance(0, 1);
            return Ok(Read::Whole(b.freeze()));
        }
        off = b.len() as u64;
        hasher.update(&b);
    }
    if let AfterFirst::Pieces(piece) = after {
        let mut g = file.clone();
        let size = c.t(op, path, g.metadata()).await?.len().unwrap_or(0);
        if size > off {
            let n = ((size - off) as usize).div_ceil(piece);
            let depth = n.min(CHUNKS_PER_FILE);
            let _permits = big
                .acquire_many(depth as u32)
                .await
                .expect("semaphore never closed");
            let start = off;
            let mut chunks = stream::iter(0..n)
                .map(|i| {
                    let mut h = file.clone();
                    let at = start + (i * piece) as u64;
                    let len = ((size - at) as usize).min(piece);
                    async move {
                        set_offset(&mut h, at);
                        let got = c
                            .t(op, path, h.read(len as u32, BytesMut::with_capacity(len)))
                            .await?;
                        Ok::<_, RemoteError>((len, got))
                    }
                })
                .buffered(depth);
            // In order; a short chunk (the file shrank, or the server returned less) ends the
            // pipelined phase and the sequential tail continues from there.
            while let Some(chunk) = chunks.next().await {
                let (want, got) = chunk?;
                let Some(b) = got else { break };
                hasher.update(&b);
                off += b.len() as u64;
                progress.advance(b.len() as u64, 0);
                if b.len() < want {
                    break;
                }
            }
        }
    }
    if read_some {
        // Read until EOF: what sha256sum would have read.
        loop {
            let mut h = file.clone();
            set_offset(&mut h, off);
            match c
                .t(
                    op,
                    path,
                    h.read(chunk as u32, BytesMut::with_capacity(chunk)),
                )
                .await?
            {
                None => break,
                Some(b) => {
                    hasher.update(&b);
                    off += b.len() as u64;
                    progress.advance(b.len() as u64, 0);
                }
            }
        }
    }
    // Dropping the last handle clone sends the close without waiting for its answer.
    drop(f);
    drop(file);
    progress.advance(0, 1);
    Ok(Read::Hashed(Digest(hasher.finalize().into()), off))
}

/// Uploads one local file by exclusive create; chunks of large files go with many requests in
/// flight. Sets the mode, fsyncs when asked and offered, closes.
async fn put_one(
    c: Ctx<'_>,
    remote: &Path,
    source: Body<'_>,
    mode: u32,
    fsync: bool,
    big: &Semaphore,
    progress: &dyn Progress,
) -> Result<()> {
    // O_CREAT|O_EXCL on the server: never through an existing name or a planted symlink.
    let file = c
        .t(
            "create",
            remote,
            c.sftp.options().write(true).create_new(true).open(remote),
        )
        .await?;
    let filled = match source {
        Body::Source(s) => fill(c, remote, file, s, mode, fsync, big, progress).await,
        Body::Pieces(len, rx) => {
            fill_pieces(c, remote, file, len, rx, mode, fsync, big, progress).await
        }
    };
    match filled {
        Ok(()) => {
            progress.advance(0, 1);
            Ok(())
        }
        Err(e) => {
            // The file is ours (exclusive create): do not leave a partial one behind. Best
            // effort, and not tried on a connection found stalled (the error may be that very
            // timeout): waiting a second op timeout for its answer would double the time a
            // stall takes to be reported. The deploy's cleanup or its rerun removes the file.
            if !c.stalled.load(Ordering::Relaxed) {
                let mut fs = c.sftp.fs();
                if tokio::time::timeout(c.limit, fs.remove_file(remote))
                    .await
                    .is_err()
                {
                    c.stalled.store(true, Ordering::Relaxed);
                }
            }
            Err(e)
        }
    }
}

/// Writes, sets the mode, fsyncs and closes a freshly created file. Errors are reported with
/// the step (`write`, `chmod`, `fsync`, `close`) so a bare `Failure` is diagnosed as a write
/// failure (space, read-only), not as "the name exists".
#[allow(clippy::too_many_arguments)]
async fn fill(
    c: Ctx<'_>,
    remote: &Path,
    file: openssh_sftp_client::file::File,
    source: Source<'_>,
    mode: u32,
    fsync: bool,
    big: &Semaphore,
    progress: &dyn Progress,
) -> Result<()> {
    let len = source.len();
    let n = len.div_ceil(CHUNK as u64) as usize;
    if n <= 1 {
        // One write request at most: it goes out with the chmod and fsync (see finish_file).
        let data = match n {
            0 => None,
            _ => Some(
                source
                    .chunk(0, len as usize)
                    .map_err(|e| RemoteError::Failed {
                        op: "write",
                        path: remote.to_path_buf(),
                        reason: format!("reading the local source: {e}"),
                    })?,
            ),
        };
        finish_file(c, remote, file, data, mode, fsync).await?;
        progress.advance(len, 0);
        return Ok(());
    }
    let depth = n.clamp(1, CHUNKS_PER_FILE);
    let _permits = if n > 1 {
        Some(
            big.acquire_many(depth as u32)
                .await
                .expect("semaphore never closed"),
        )
    } else {
        None
    };
    let f0 = file.clone();
    let source = &source;
    stream::iter(0..n)
        .map(|i| {
            let mut h = f0.clone();
            let at = (i * CHUNK) as u64;
            let clen = (len - at).min(CHUNK as u64) as usize;
            async move {
                let data = source.chunk(at, clen).map_err(|e| RemoteError::Failed {
                    op: "write",
                    path: remote.to_path_buf(),
                    reason: format!("reading the local source: {e}"),
                })?;
                write_at(c, remote, &mut h, at, data).await?;
                progress.advance(clen as u64, 0);
                Ok::<_, RemoteError>(())
            }
        })
        .buffer_unordered(depth)
        .try_collect::<()>()
        .await?;
    drop(f0);
    finish_file(c, remote, file, None, mode, fsync).await
}

/// One new file from memory, by [`put_one`] (`fsync` already limited to what the server offers).
async fn put_memory(
    c: Ctx<'_>,
    path: &Path,
    data: &[u8],
    mode: u32,
    fsync: bool,
    big: &Semaphore,
) -> Result<()> {
    let body = Body::Source(Source::Memory(data));
    put_one(
        c,
        path,
        body,
        mode,
        fsync,
        big,
        &crate::progress::NoProgress,
    )
    .await
}

/// Writes `whole` (the whole content, at most one write request) to a new file when given,
/// sets its mode, fsyncs it when asked, closes it.
///
/// The write, chmod and fsync are queued back to back and answered together: sftp-server
/// handles a channel's requests in the order they arrive, so the fsync covers the write. After
/// a successful fsync the close is sent by dropping the handle, without waiting for its answer:
/// the data is already on disk, and the verify re-reads it. Without fsync the close is awaited,
/// because then it is the last place a write error can surface. A small file costs one round
/// trip after its open instead of three.
///
/// The chmod is skipped when the server is known to create files with `mode` already: one
/// request fewer per file. That is learned once per connection with an lstat of the first file
/// (the sftp-server's umask is fixed for its life); the deploy's verify re-checks every file's
/// mode from the listing.
async fn finish_file(
    c: Ctx<'_>,
    remote: &Path,
    mut file: openssh_sftp_client::file::File,
    whole: Option<Bytes>,
    mode: u32,
    fsync: bool,
) -> Result<()> {
    let created = c.create_mode.load(Ordering::Relaxed);
    // Until the mode a create gives here is known, every file is chmodded, and an lstat of the
    // name (the handle is write-only; the name is ours, exclusive) goes first to learn it: in
    // the same round trip as the rest, since the server answers in order.
    let learn = created == 0;
    let chmod = learn || created != CREATE_MODE_KNOWN | (mode & 0o7777);
    let look = async {
        if learn {
            let m = c
                .t("chmod", remote, c.sftp.fs().symlink_metadata(remote))
                .await?;
            let learned = CREATE_MODE_KNOWN | meta_of(&m).mode;
            c.create_mode.store(learned, Ordering::Relaxed);
        }
        Ok::<_, RemoteError>(())
    };
    let (mut w, mut m) = (file.clone(), file.clone());
    let whole_len = whole.as_ref().map_or(0, |d| d.len() as u64);
    let write = async {
        match whole {
            // One request; a server with a smaller write limit (or the user's cap) takes a
            // part (see below).
            Some(data) => {
                let first = data.slice(..data.len().min(c.chunk));
                let n = c.t("write", remote, w.write_zero_copy(&[first])).await?;
                Ok(data.slice(n..))
            }
            None => Ok(Bytes::new()),
        }
    };
    let chmod = async {
        if chmod {
            c.t("chmod", remote, m.set_permissions(perms(mode))).await?;
        }
        Ok(())
    };
    let sync = async {
        if fsync {
            c.t("fsync", remote, file.sync_all()).await?;
        }
        Ok(())
    };
    let (looked, (written, (moded, synced))) =
        in_order(look, in_order(write, in_order(chmod, sync))).await;
    drop(m);
    looked?;
    let rest = written?;
    moded?;
    synced?;
    if !rest.is_empty() {
        // The fsync above did not cover this part: write it, then fsync again.
        let at = whole_len - rest.len() as u64;
        write_at(c, remote, &mut w, at, rest).await?;
        if fsync {
            c.t("fsync", remote, file.sync_all()).await?;
        }
    }
    drop(w);
    if fsync {
        drop(file);
        return Ok(());
    }
    c.t("close", remote, file.close()).await
}

/// Writes all of `data` at offset `at`, in requests of at most [`Ctx::chunk`] bytes, one after
/// another (the client library splits further at the server's own limit).
async fn write_at(
    c: Ctx<'_>,
    remote: &Path,
    h: &mut openssh_sftp_client::file::File,
    at: u64,
    data: Bytes,
) -> Result<()> {
    let mut done = 0;
    while done < data.len() {
        let end = (done + c.chunk).min(data.len());
        set_offset(h, at + done as u64);
        c.t(
            "write",
            remote,
            h.write_all_zero_copy(&mut [data.slice(done..end)]),
        )
        .await?;
        done = end;
    }
    Ok(())
}

/// Runs `first` and `then` together, `first`'s request queued before any of `then`'s: the
/// client library queues a request when its future is first polled, so `first` is polled once
/// before `then` starts.
async fn in_order<A: Future, B: Future>(first: A, then: B) -> (A::Output, B::Output) {
    let mut first = std::pin::pin!(first);
    let early = std::future::poll_fn(|cx| Poll::Ready(first.as_mut().poll(cx))).await;
    match early {
        Poll::Ready(a) => (a, then.await),
        Poll::Pending => futures_util::future::join(first, then).await,
    }
}

/// [`fill`] from pieces that arrive in order ([`Payload::Pieces`]): each piece is one write
/// request at its offset, up to [`CHUNKS_PER_FILE`] in flight.
#[allow(clippy::too_many_arguments)]
async fn fill_pieces(
    c: Ctx<'_>,
    remote: &Path,
    file: openssh_sftp_client::file::File,
    len: u64,
    pieces: tokio::sync::mpsc::Receiver<Bytes>,
    mode: u32,
    fsync: bool,
    big: &Semaphore,
    progress: &dyn Progress,
) -> Result<()> {
    let depth = (len.div_ceil(CHUNK as u64) as usize).clamp(1, CHUNKS_PER_FILE);
    let _permits = big
        .acquire_many(depth as u32)
        .await
        .expect("semaphore never closed");
    let f0 = file.clone();
    let mut at = 0u64;
    let arriving = stream::unfold(
        pieces,
        |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
    );
    arriving
        .map(|data: Bytes| {
            let mut h = f0.clone();
            let off = at;
            at += data.len() as u64;
            async move {
                if data.len() > CHUNK || off + data.len() as u64 > len {
                    return Err(RemoteError::Failed {
                        op: "write",
                        path: remote.to_path_buf(),
                        reason: format!(
                            "the artifact stream sent more than the {len} bytes expected"
                        ),
                    });
                }
                let n = data.len() as u64;
                write_at(c, remote, &mut h, off, data).await?;
                progress.advance(n, 0);
                Ok::<_, RemoteError>(n)
            }
        })
        .buffer_unordered(depth)
        .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
        .await
        .and_then(|written| {
            if written == len {
                Ok(())
            } else {
                Err(RemoteError::Failed {
                    op: "write",
                    path: remote.to_path_buf(),
                    reason: format!("{STREAM_ENDED}: {written} of {len} bytes"),
                })
            }
        })?;
    drop(f0);
    finish_file(c, remote, file, None, mode, fsync).await
}

/// What a new file is filled from.
enum Body<'a> {
    Source(Source<'a>),
    /// Expected length, pieces in order.
    Pieces(u64, tokio::sync::mpsc::Receiver<Bytes>),
}

/// Where upload bytes come from, read at any offset.
enum Source<'a> {
    Memory(&'a [u8]),
    Local(&'a std::fs::File, u64),
    Bytes(Bytes),
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Memory(d) => d.len() as u64,
            Source::Local(_, n) => *n,
            Source::Bytes(b) => b.len() as u64,
        }
    }
    fn chunk(&self, at: u64, len: usize) -> std::io::Result<Bytes> {
        match self {
            Source::Memory(d) => Ok(Bytes::copy_from_slice(&d[at as usize..at as usize + len])),
            Source::Bytes(b) => Ok(b.slice(at as usize..at as usize + len)),
            Source::Local(f, _) => {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, at)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

impl Remote for SftpRemote {
    fn name(&self) -> &str {
        &self.host
    }

    fn transport(&self) -> &'static str {
        "sftp"
    }

    fn facts(&self) -> Result<HostFacts> {
        const FILES: [&str; 6] = [
            "/etc/hostname",
            "/proc/sys/kernel/hostname",
            "/proc/sys/kernel/ostype",
            "/proc/sys/kernel/osrelease",
            "/proc/sys/kernel/version",
            "/etc/os-release",
        ];
        let c = self.ctx();
        // All at once: one file after the other was two dozen round trips.
        let (texts, home) = self.run("facts", Path::new("/"), async {
            let reads = futures_util::future::join_all(
                FILES.map(|p| async move { read_small(c, Path::new(p), 64 * 1024).await }),
            );
            let home = async {
                let mut fs = c.sftp.fs();
                c.t("canonicalize", Path::new("."), fs.canonicalize("."))
                    .await
            };
            let (texts, home) = futures_util::future::join(reads, home).await;
            Ok((texts, home?))
        })?;
        let [etc_hostname, proc_hostname, ostype, osrelease, version, os_release] =
            <[String; 6]>::try_from(
                texts
                    .into_iter()
                    .map(|r| {
                        r.map(|b| String::from_utf8_lossy(&b).trim().to_string())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>(),
            )
            .expect("one text per file");
        let hostname = if etc_hostname.is_empty() {
            proc_hostname
        } else {
            etc_hostname
        };
        let kernel = [ostype, osrelease, version]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let os_release = os_release
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        Ok(HostFacts {
            hostname,
            kernel,
            os_release,
            home: home.to_string_lossy().into_owned(),
        })
    }

    fn lstat(&self, path: &Path) -> Result<Option<Meta>> {
        self.run("lstat", path, lstat_one(self.ctx(), path))
    }

    fn lstats(&self, paths: &[PathBuf]) -> Vec<Result<Option<Meta>>> {
        let c = self.ctx();
        // Each request is bounded by op_timeout inside `c.t`.
        self.rt.block_on(
            stream::iter(paths)
                .map(|p| lstat_one(c, p))
                .buffered(c.names_in_flight())
                .collect(),
        )
    }

    fn stat(&self, path: &Path) -> Result<Option<Meta>> {
        let c = self.ctx();
        self.run("stat", path, async {
            let mut fs = c.sftp.fs();
            match c.t("stat", path, fs.metadata(path)).await {
                Ok(m) => Ok(Some(meta_of(&m))),
                Err(RemoteError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>> {
        let c = self.ctx();
        let res = self.run("read_dir", path, list_dir(c, path));
        self.checked_listing(path, res)
    }

    fn read_dirs(&self, paths: &[PathBuf]) -> Vec<Result<Vec<DirEntry>>> {
        let c = self.ctx();
        // No overall timeout: each request is bounded by op_timeout inside `list_dir` (and
        // fails at once on a connection already found stalled).
        let listed: Vec<Result<Vec<DirEntry>>> = self.rt.block_on(
            stream::iter(paths)
                .map(|p| list_dir(c, p))
                .buffered(c.dirs_in_flight())
                .collect(),
        );
        paths
            .iter()
            .zip(listed)
            .map(|(p, res)| self.checked_listing(p, res))
            .collect()
    }

    fn read_dirs_hashed(&self, paths: &[PathBuf], progress: &dyn Progress) -> Vec<Result<Listed>> {
        let c = self.ctx();
        // The lister sends each file it finds to the readers at once, numbered in the order
        // found; the readers run beside it, so a level's files are read while the rest of the
        // level is still being listed.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, PathBuf, Option<u64>)>();
        let found = AtomicUsize::new(0);
        let found = &found;
        let lister = async move {
            let tx = tx; // dropped when the listing ends, which ends the readers' stream
            let tx = &tx;
            stream::iter(paths)
                .map(|dir| async move {
                    let entries = self.checked_listing(dir, list_dir(c, dir).await)?;
                    let ids: Vec<Option<usize>> = entries
                        .iter()
                        .map(|e| {
                            (e.meta.kind == FileKind::File).then(|| {
                                let id = found.fetch_add(1, Ordering::Relaxed);
                                let path = dir.join(OsStr::from_bytes(&e.name));
                                // The readers outlive the lister: the send cannot fail.
                                let _ = tx.send((id, path, Some(e.meta.size)));
                                id
                            })
                        })
                        .collect();
                    Ok((entries, ids))
                })
                .buffered(c.dirs_in_flight())
                .collect::<Vec<Result<_>>>()
                .await
        };
        let files = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let (listed, mut hashed) = self.rt.block_on(futures_util::future::join(
            lister,
            hash_stream(c, files, progress),
        ));
        listed
            .into_iter()
            .map(|l| {
                let (entries, ids) = l?;
                Ok(entries
                    .into_iter()
                    .zip(ids)
                    .map(|(e, id)| {
                        let h = id.map(|i| hashed[i].take().expect("every file found is read"));
                        (e, h)
                    })
                    .collect())
            })
            .collect()
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        let c = self.ctx();
        let target = self.run("read_link", path, async {
            let mut fs = c.sftp.fs();
            c.t("read_link", path, fs.read_link(path)).await
        })?;
        self.check_lossy("read_link", path, target.as_os_str().as_bytes())?;
        Ok(target)
    }

    fn canonicalize(&self, path: &Path) -> Result<PathBuf> {
        let c = self.ctx();
        let real = self.run("realpath", path, async {
            let mut fs = c.sftp.fs();
            c.t("realpath", path, fs.canonicalize(path)).await
        })?;
        self.check_lossy("realpath", path, real.as_os_str().as_bytes())?;
        Ok(real)
    }

    fn read_links(&self, paths: &[PathBuf]) -> Vec<Result<PathBuf>> {
        let c = self.ctx();
        // Each request is bounded by op_timeout inside `c.t`.
        let read: Vec<Result<PathBuf>> = self.rt.block_on(
            stream::iter(paths)
                .map(|p| async move {
                    let mut fs = c.sftp.fs();
                    c.t("read_link", p, fs.read_link(p)).await
                })
                .buffered(c.names_in_flight())
                .collect(),
        );
        paths
            .iter()
            .zip(read)
            .map(|(p, res)| {
                let target = res?;
                self.check_lossy("read_link", p, target.as_os_str().as_bytes())?;
                Ok(target)
            })
            .collect()
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats> {
        let c = self.ctx();
        self.run("statvfs", path, async {
            let mut fs = c.sftp.fs();
            let st = c.t("statvfs", path, fs.statvfs(path)).await?;
            Ok(FsStats {
                frsize: if st.frsize == 0 { st.bsize } else { st.frsize },
                blocks: st.blocks,
                blocks_avail: st.bavail,
                fsid: st.fsid,
                read_only: st.flag & 1 != 0,
                name_max: st.namemax,
                inodes_avail: (st.files > 0).then_some(st.favail),
            })
        })
    }

    fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>> {
        let c = self.ctx();
        self.run("read", path, read_small(c, path, limit))
    }

    fn hash_files(&self, paths: &[PathBuf], progress: &dyn Progress) -> Vec<Result<(Digest, u64)>> {
        let files: Vec<(&Path, Option<u64>)> = paths.iter().map(|p| (p.as_path(), None)).collect();
        self.hash_many(&files, progress)
    }

    fn hash_files_sized(
        &self,
        files: &[(PathBuf, u64)],
        progress: &dyn Progress,
    ) -> Vec<Result<(Digest, u64)>> {
        let files: Vec<(&Path, Option<u64>)> =
            files.iter().map(|(p, n)| (p.as_path(), Some(*n))).collect();
        self.hash_many(&files, progress)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> Result<()> {
        self.run("mkdir", path, make_dir(self.ctx(), path, mode))
    }

    fn mkdirs(&self, paths: &[PathBuf], mode: u32) -> Result<()> {
        let c = self.ctx();
        // No overall timeout: each request is bounded by op_timeout inside `make_dir` (and
        // fails at once on a connection already found stalled).
        let made: Vec<Result<()>> = self.rt.block_on(
            stream::iter(paths)
                .map(|p| make_dir(c, p, mode))
                .buffered(c.dirs_in_flight())
                .collect(),
        );
        made.into_iter().collect()
    }

    fn write_new(&self, path: &Path, data: &[u8], mode: u32, fsync: bool) -> Result<()> {
        let c = self.ctx();
        let big = Semaphore::new(BIG_CHUNKS_IN_FLIGHT);
        let fsync = fsync && self.fsync;
        self.run(
            "write_new",
            path,
            put_memory(c, path, data, mode, fsync, &big),
        )
        .map_err(|e| rename_op(e, "write_new"))
    }

    fn write_new_all(&self, files: &[(PathBuf, Vec<u8>)], mode: u32, fsync: bool) -> Result<()> {
        let c = self.ctx();
        let big = Semaphore::new(BIG_CHUNKS_IN_FLIGHT);
        let fsync = fsync && self.fsync;
        // Each request is bounded by op_timeout inside `put_one`.
        self.rt
            .block_on(
                stream::iter(files)
                    .map(|(path, data)| put_memory(c, path, data, mode, fsync, &big))
                    .buffer_unordered(c.in_flight)
                    .try_collect::<()>(),
            )
            .map_err(|e| rename_op(e, "write_new"))
    }

    fn put_new_files(&self, files: &[NewFile], fsync: bool, progress: &dyn Progress) -> Result<()> {
        let c = self.ctx();
        let big = Semaphore::new(BIG_CHUNKS_IN_FLIGHT);
        let fsync = fsync && self.fsync;
        // Each request is bounded by op_timeout inside `put_one`.
        self.rt.block_on(
            stream::iter(files)
                .map(|nf| {
                    let big = &big;
                    async move {
                        let local =
                            std::fs::File::open(&nf.local).map_err(|e| RemoteError::Failed {
                                op: "put",
                                path: nf.remote.clone(),
                                reason: format!("cannot open local {}: {e}", nf.local.display()),
                            })?;
                        let actual = local.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                        if actual != nf.len {
                            return Err(RemoteError::Failed {
                                op: "put",
                                path: nf.remote.clone(),
                                reason: format!(
                                    "local {} is {actual} bytes, expected {}",
                                    nf.local.display(),
                                    nf.len
                                ),
                            });
                        }
                        put_one(
                            c,
                            &nf.remote,
                            Body::Source(Source::Local(&local, nf.len)),
                            nf.mode,
                            fsync,
                            big,
                            progress,
                        )
                        .await
                    }
                })
                .buffer_unordered(c.in_flight)
                .try_collect::<()>(),
        )
    }

    fn put_streamed(
        &self,
        files: &mut StreamedFiles,
        count: usize,
        fsync: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        let c = self.ctx();
        let big = Semaphore::new(BIG_CHUNKS_IN_FLIGHT);
        let fsync = fsync && self.fsync;
        // A producer that stops early (it does when an upload fails and drops what it was
        // fed) ends this stream; the shortfall is reported only after the files in flight have
        // finished, so that the failure that stopped it, not its echo, is what the user sees.
        let received = std::cell::Cell::new(0usize);
        let arriving = stream::unfold((files, count), |(rx, left)| async move {
            if left == 0 {
                return None;
            }
            let f = rx.recv().await?;
            Some((f, (rx, left - 1)))
        });
        // Each request is bounded by op_timeout inside `put_one`; waiting for the producer is
        // not (it is local work).
        let mut uploads = std::pin::pin!(arriving
            .map(|f| {
                received.set(received.get() + 1);
                let big = &big;
                async move {
                    let body = match f.data {
                        Payload::Whole(b) if b.len() as u64 == f.len => {
                            Body::Source(Source::Bytes(b))
                        }
                        Payload::Whole(b) => {
                            return Err(RemoteError::Failed {
                                op: "put",
                                path: f.remote,
                                reason: format!("{STREAM_ENDED}: {} of {} bytes", b.len(), f.len),
                            })
                        }
                        Payload::Pieces(rx) => Body::Pieces(f.len, rx),
                    };
                    put_one(c, &f.remote, body, f.mode, fsync, big, progress).await
                }
            })
            .buffer_unordered(c.in_flight));
        self.rt.block_on(async {
            let mut ended_early = None;
            while let Some(r) = uploads.next().await {
                match r {
                    Ok(()) => {}
                    Err(e) if is_stream_end(&e) => {
                        ended_early.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            match ended_early {
                Some(e) => Err(e),
                None if received.get() < count => Err(RemoteError::Failed {
                    op: "put",
                    path: PathBuf::new(),
                    reason: format!(
                        "{STREAM_ENDED}: {} of {count} files arrived",
                        received.get()
                    ),
                }),
                None => Ok(()),
            }
        })
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        let c = self.ctx();
        self.run("symlink", link, async {
            let mut fs = c.sftp.fs();
            c.t("symlink", link, fs.symlink(target, link)).await
        })
    }

    fn symlinks(&self, links: &[(PathBuf, PathBuf)]) -> Result<()> {
        let c = self.ctx();
        // Each request is bounded by op_timeout inside `c.t`.
        let made: Vec<Result<()>> = self.rt.block_on(
            stream::iter(links)
                .map(|(target, link)| async move {
                    let mut fs = c.sftp.fs();
                    c.t("symlink", link, fs.symlink(target, link)).await
                })
                .buffered(c.names_in_flight())
                .collect(),
        );
        made.into_iter().collect()
    }

    fn hard_link(&self, existing: &Path, link: &Path) -> Result<()> {
        let c = self.ctx();
        self.run("hard_link", link, async {
            let mut fs = c.sftp.fs();
            c.t("hard_link", link, fs.hard_link(existing, link)).await
        })
    }

    fn supports_hard_links(&self) -> bool {
        self.hardlink
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> Result<()> {
        let c = self.ctx();
        self.run("rename", to, async {
            let mut fs = c.sftp.fs();
            // Existence probes are `lstat` ops: their expected "no such file" needs no
            // diagnosis of which component is missing (a round trip per component).
            let (mut fs_to, mut fs_from) = (c.sftp.fs(), c.sftp.fs());
            // 1. The target must not exist in any form (lstat: a dangling symlink counts); the
            //    source's kind, for step 3. Both at once.
            let (target, source) = futures_util::future::join(
                c.t("lstat", to, fs_to.symlink_metadata(to)),
                c.t("rename", from, fs_from.symlink_metadata(from)),
            )
            .await;
            match target {
                Ok(_) => {
                    return Err(RemoteError::Exists {
                        op: "rename",
                        path: to.to_path_buf(),
                    })
                }
                Err(RemoteError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let before = source.map(|m| kind_of(&m))?;
            // 2. Legacy SSH_FXP_RENAME (posix-rename is hidden): refuses an existing target.
            if let Err(e) = c.t("rename", to, fs.rename(from, to)).await {
                if let RemoteError::Failed { .. } = e {
                    // Not "exists" (diagnose checked): maybe another filesystem.
                    if c.statvfs {
                        let pf = from.parent().unwrap_or(Path::new("/"));
                        let pt = to.parent().unwrap_or(Path::new("/"));
                        if let (Ok(a), Ok(b)) = (fs.statvfs(pf).await, fs.statvfs(pt).await) {
                            if a.fsid != b.fsid {
                                return Err(RemoteError::Failed {
                                    op: "rename",
                                    path: to.to_path_buf(),
                                    reason: format!(
                                        "{} and {} are on different filesystems",
                                        pf.display(),
                                        pt.display()
                                    ),
                                });
                            }
                        }
                    }
                }
                return Err(e);
            }
            // 3. Verify: the source is gone and the target is what the source was.
            let (source, target) = futures_util::future::join(
                c.t("lstat", from, fs_from.symlink_metadata(from)),
                c.t("rename", to, fs_to.symlink_metadata(to)),
            )
            .await;
            let gone = matches!(source, Err(RemoteError::NotFound { .. }));
            let now = target.map(|m| kind_of(&m));
            if !gone || now.as_ref().ok() != Some(&before) {
                return Err(RemoteError::Failed {
                    op: "rename",
                    path: to.to_path_buf(),
                    reason: format!(
                        "the server reported success but afterwards the source {} and the \
                         target is {:?}",
                        if gone { "is gone" } else { "still exists" },
                        now.ok()
                    ),
                });
            }
            Ok(())
        })
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        let c = self.ctx();
        self.run("remove_file", path, async {
            let mut fs = c.sftp.fs();
            c.t("remove_file", path, fs.remove_file(path)).await
        })
    }

    fn remove_dir(&self, path: &Path) -> Result<()> {
        let c = self.ctx();
        self.run("remove_dir", path, async {
            let mut fs = c.sftp.fs();
            c.t("remove_dir", path, fs.remove_dir(path)).await
        })
    }

    fn remove_all(&self, entries: &[(PathBuf, bool)], progress: &dyn Progress) -> Vec<Result<()>> {
        let c = self.ctx();
        super::remove_in_groups(entries, |group| {
            // Each request is bounded by op_timeout inside `c.t` (and fails at once on a
            // connection already found stalled).
            self.rt.block_on(
                stream::iter(group)
                    .map(|&i| async move {
                        let (path, dir) = &entries[i];
                        let mut fs = c.sftp.fs();
                        let r = if *dir {
                            c.t("remove_dir", path, fs.remove_dir(path)).await
                        } else {
                            c.t("remove_file", path, fs.remove_file(path)).await
                        };
                        progress.advance(0, 1);
                        r
                    })
                    .buffered(c.names_in_flight())
                    .collect(),
            )
        })
    }

    fn exec(&self, command: &str) -> Result<ExecOutput> {
        self.exec_with_timeout(command, self.opts.op_timeout)
    }
}

/// A file cut short because the producer stopped: an echo of the failure that stopped it.
fn is_stream_end(e: &RemoteError) -> bool {
    matches!(e, RemoteError::Failed { reason, .. } if reason.starts_with(STREAM_ENDED))
}

fn rename_op(e: RemoteError, op: &'static str) -> RemoteError {
    match e {
        RemoteError::NotFound { path, .. } => RemoteError::NotFound { op, path },
        RemoteError::Exists { path, .. } => RemoteError::Exists { op, path },
        RemoteError::PermissionDenied { path, .. } => RemoteError::PermissionDenied { op, path },
        RemoteError::Failed { path, reason, .. } => RemoteError::Failed { op, path, reason },
        RemoteError::Timeout { path, secs, .. } => RemoteError::Timeout { op, path, secs },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_read_decides_how_the_rest_is_read() {
        use AfterFirst::*;
        const ASK: usize = CHUNK;
        // Short and of the listed size: the whole file, no end-of-file request.
        assert_eq!(after_first(ASK, 10, Some(10)), Whole);
        // A full answer: pieces of the same size.
        assert_eq!(after_first(ASK, ASK, Some(10 * ASK as u64)), Pieces(ASK));
        assert_eq!(after_first(ASK, ASK, None), Pieces(ASK));
        // Exactly one full request's worth listed: it may have grown, so still read on.
        assert_eq!(after_first(ASK, ASK, Some(ASK as u64)), Pieces(ASK));
        // A server whose limit is below the ask (20 KiB without the limits extension), on a
        // file listed larger: pieces of what it gave, not one request per round trip.
        assert_eq!(after_first(ASK, 20_480, Some(1 << 20)), Pieces(20_480));
        // Short, but neither the listed size nor less than it: the file changed since the
        // listing (or no listing): read on to EOF.
        assert_eq!(after_first(ASK, 10, Some(5)), Tail);
        assert_eq!(after_first(ASK, 10, None), Tail);
        // Nothing read: EOF at once.
        assert_eq!(after_first(ASK, 0, Some(0)), Tail);
        assert_eq!(after_first(ASK, 0, Some(100)), Tail);
    }

    fn version_packet(exts: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut body = vec![2u8, 0, 0, 0, 3];
        for (n, d) in exts {
            body.extend_from_slice(&(n.len() as u32).to_be_bytes());
            body.extend_from_slice(n);
            body.extend_from_slice(&(d.len() as u32).to_be_bytes());
            body.extend_from_slice(d);
        }
        let mut p = (body.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn hides_posix_rename_and_keeps_framing() {
        let mut p = version_packet(&[
            (b"posix-rename@openssh.com", b"1"),
            (b"statvfs@openssh.com", b"2"),
        ]);
        let len = p.len();
        assert!(hide_in_version_packet(&mut p));
        assert_eq!(p.len(), len);
        assert_eq!(
            p,
            version_packet(&[
                (b"xosix-rename@openssh.com", b"1"),
                (b"statvfs@openssh.com", b"2"),
            ])
        );
    }

    #[test]
    fn leaves_other_packets_and_garbage_alone() {
        let mut p = version_packet(&[(b"statvfs@openssh.com", b"2")]);
        let orig = p.clone();
        assert!(!hide_in_version_packet(&mut p));
        assert_eq!(p, orig);
        let mut status = orig.clone();
        status[4] = 101;
        assert!(!hide_in_version_packet(&mut status));
        // Truncated extension data must not panic.
        let mut short = version_packet(&[(b"posix-rename@openssh.com", b"1")]);
        short.truncate(20);
        hide_in_version_packet(&mut short);
    }

    /// A reader that returns at most the next of `sizes` bytes per read (cycling), so packet
    /// boundaries land anywhere inside a read.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        reads: usize,
    }

    impl Trickle {
        fn new(data: Vec<u8>, sizes: &[usize]) -> Trickle {
            Trickle {
                data,
                at: 0,
                sizes: sizes.to_vec(),
                reads: 0,
            }
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let cap = self.sizes[self.reads % self.sizes.len()];
            self.reads += 1;
            let n = (self.data.len() - self.at).min(cap).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn filter_rewrites_only_the_first_packet_across_split_reads() {
        let mut first = version_packet(&[(b"posix-rename@openssh.com", b"1")]);
        let second = version_packet(&[(b"posix-rename@openssh.com", b"1")]); // later: untouched
        first.extend_from_slice(&second);
        // A reader that returns 3 bytes at a time.
        let mut r = ServerFilter::new(Trickle::new(first.clone(), &[3]));
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        let mut expect = version_packet(&[(b"xosix-rename@openssh.com", b"1")]);
        expect.extend_from_slice(&second);
        assert_eq!(got, expect);
    }

    fn name_packet(names: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![SSH_FXP_NAME, 0, 0, 0, 7];
        body.extend_from_slice(&(names.len() as u32).to_be_bytes());
        for n in names {
            body.extend_from_slice(&(n.len() as u32).to_be_bytes());
            body.extend_from_slice(n);
            body.extend_from_slice(&3u32.to_be_bytes()); // longname
            body.extend_from_slice(b"-rw");
            // attrs: size + permissions + an extended pair
            body.extend_from_slice(&(0x1u32 | 0x4 | 0x8000_0000).to_be_bytes());
            body.extend_from_slice(&42u64.to_be_bytes());
            body.extend_from_slice(&0o100644u32.to_be_bytes());
            body.extend_from_slice(&1u32.to_be_bytes());
            for s in [&b"k"[..], &b"v"[..]] {
                body.extend_from_slice(&(s.len() as u32).to_be_bytes());
                body.extend_from_slice(s);
            }
        }
        let mut p = (body.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn non_utf8_names_become_lossy_and_framing_stays_valid() {
        let ok = name_packet(&[b"plain", "caf\u{e9}".as_bytes()]);
        assert_eq!(lossy_names_in_name_packet(&ok), None);
        let bad = name_packet(&[b"plain", b"bad\xffname", b"x\xfe\xfdy"]);
        let (fixed, n) = lossy_names_in_name_packet(&bad).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            fixed,
            name_packet(&[
                b"plain",
                "bad\u{fffd}name".as_bytes(),
                "x\u{fffd}\u{fffd}y".as_bytes()
            ])
        );
        // Truncated packets are left alone, never a panic.
        for cut in 5..bad.len() {
            let _ = lossy_names_in_name_packet(&bad[..cut]);
        }
    }

    #[tokio::test]
    async fn filter_passes_data_through_and_fixes_name_packets() {
        let mut stream = version_packet(&[(b"posix-rename@openssh.com", b"1")]);
        let data = {
            let mut b = vec![103u8, 0, 0, 0, 1, 0, 0, 0, 5];
            b.extend_from_slice(b"\xff\xfe\x00ab");
            let mut p = (b.len() as u32).to_be_bytes().to_vec();
            p.extend_from_slice(&b);
            p
        };
        stream.extend_from_slice(&data);
        stream.extend_from_slice(&name_packet(&[b"bad\xff"]));
        let stats = Arc::new(FilterStats::default());
        let mut r = ServerFilter::with_stats(&stream[..], stats.clone());
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        let mut expect = version_packet(&[(b"xosix-rename@openssh.com", b"1")]);
        expect.extend_from_slice(&data);
        expect.extend_from_slice(&name_packet(&["bad\u{fffd}".as_bytes()]));
        assert_eq!(got, expect);
        assert!(stats.hid_posix_rename.load(Ordering::Relaxed));
        assert_eq!(stats.lossy_names.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn filter_output_is_the_same_whatever_the_read_sizes() {
        // Whatever the split of the input and the caller's buffer sizes, the bytes out are the
        // whole-stream result.
        let data = |len: usize, seed: u8| {
            let mut b = vec![103u8, 0, 0, 0, seed];
            b.extend_from_slice(&(len as u32).to_be_bytes());
            b.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
            let mut p = (b.len() as u32).to_be_bytes().to_vec();
            p.extend_from_slice(&b);
            p
        };
        let mut stream = version_packet(&[(b"posix-rename@openssh.com", b"1")]);
        for (i, len) in [70_000usize, 3, 0, 200_000, 17].into_iter().enumerate() {
            stream.extend_from_slice(&data(len, i as u8));
            stream.extend_from_slice(&name_packet(&[b"ok", b"bad\xff"]));
        }
        // A listing of several hundred KiB, larger than one read from the pipe, parsed whole.
        let long: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("{i:0>200}").into_bytes())
            .collect();
        let mut names: Vec<&[u8]> = long.iter().map(|n| n.as_slice()).collect();
        names.push(b"bad\xff");
        let big = name_packet(&names);
        assert!(big.len() > 512 * 1024);
        stream.extend_from_slice(&big);
        stream.extend_from_slice(&data(10, 9));
        let mut whole = Vec::new();
        ServerFilter::new(&stream[..])
            .read_to_end(&mut whole)
            .await
            .unwrap();
        for caller in [1usize, 5, 4096, 1 << 20] {
            let mut r = ServerFilter::new(Trickle::new(stream.clone(), &[13, 40, 97, 1, 64, 109]));
            let mut got = Vec::new();
            let mut b = vec![0u8; caller];
            loop {
                let n = r.read(&mut b).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&b[..n]);
            }
            assert_eq!(got.len(), whole.len(), "caller reads of {caller}");
            assert!(got == whole, "caller reads of {caller}");
        }
        // And the name packets were fixed, the data untouched.
        assert_eq!(whole.len(), stream.len() + 6 * 2);
        assert!(whole.ends_with(&data(10, 9)));
    }

    #[test]
    fn a_command_is_named_by_its_start() {
        assert_eq!(command_label("sync -f /srv"), "sync -f /srv");
        assert_eq!(command_label("cd /x || exit 2;\nmore"), "cd /x || exit 2;…");
        let long = "x".repeat(100);
        assert_eq!(command_label(&long), format!("{}…", "x".repeat(60)));
        assert_eq!(
            command_label("é".repeat(61).as_str()),
            format!("{}…", "é".repeat(60))
        );
    }

    /// A server without an sftp subsystem: ssh's bare words, then what to change.
    #[test]
    fn a_missing_sftp_subsystem_is_explained() {
        let opts = ConnectOptions::default();
        let msg = explain_ssh_failure("h", &opts, "subsystem request failed on channel 0\n");
        assert!(
            msg.starts_with("subsystem request failed on channel 0"),
            "{msg}"
        );
        assert!(msg.contains("Subsystem sftp internal-sftp"), "{msg}");
        let other = explain_ssh_failure("h", &opts, "Permission denied (publickey).\n");
        assert_eq!(other, "Permission denied (publickey).");
    }

    #[test]
    fn gcm_first_reorders_without_changing_the_set() {
        let default = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,\
                       aes128-gcm@openssh.com,aes256-gcm@openssh.com";
        assert_eq!(
            gcm_first(default).as_deref(),
            Some(
                "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,\
                 aes128-ctr,aes192-ctr,aes256-ctr"
            )
        );
        // Nothing to gain, or nothing allowed to move: leave ssh's own order.
        assert_eq!(
            gcm_first("aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"),
            None
        );
        assert_eq!(gcm_first("chacha20-poly1305@openssh.com,aes256-ctr"), None);
        assert_eq!(gcm_first(""), None);
    }

    /// Against the real ssh: the list comes from the user's configuration, and a
    /// configuration without AES-GCM gets no cipher it did not allow.
    #[test]
    fn preferred_ciphers_follow_the_real_ssh_configuration() {
        if std::process::Command::new("ssh")
            .arg("-V")
            .output()
            .is_err()
        {
            assert!(std::env::var_os("CI").is_none(), "ssh is missing");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("config");
        let opts = |cfg: &Path| ConnectOptions {
            ssh_config: Some(cfg.to_path_buf()),
            ..ConnectOptions::default()
        };
        std::fs::write(
            &cfg,
            "Host h\n  Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com\n",
        )
        .unwrap();
        let want = cpu_has_aes()
            .then(|| "aes256-gcm@openssh.com,chacha20-poly1305@openssh.com".to_string());
        assert_eq!(preferred_ciphers("h", &opts(&cfg)), want);
        std::fs::write(&cfg, "Host h\n  Ciphers chacha20-poly1305@openssh.com\n").unwrap();
        assert_eq!(preferred_ciphers("h", &opts(&cfg)), None);
    }

    #[test]
    fn shell_quote_round_trips_quotes() {
        assert_eq!(shell_quote("a'b"), r#"'a'\''b'"#);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote("it's $HOME `x` \"q\"")))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"it's $HOME `x` \"q\"");
    }
}
