//! A real OpenSSH `sshd` on 127.0.0.1 for the SFTP tests: its own config, generated ed25519
//! host and client keys, a strict `known_hosts` (`[127.0.0.1]:PORT` form) and a client
//! `ssh_config` with a `Host` alias, so the code under test talks to a real server exactly as it
//! would to `contabo`.
//!
//! Guarantees:
//! - `Sshd::start()` gives a private server, killed (with every per-connection child) on drop,
//!   its temp dir removed; `Sshd::shared()` gives one server per test binary, killed at exit.
//! - The server is ready when returned (polled until it answers with its banner).
//! - Its log (`-E`) is printed when a test panics: automatically for `start()` instances, through
//!   [`Sshd::log_on_panic`] for the shared one.
//! - Both sshd and its keys live under a fresh temp dir; the server runs as root here, so the
//!   "remote" filesystem is this machine's (tests use fresh temp dirs under /tmp as remote paths).
//! - No sshd binary: panic in CI (`support::in_ci()`), otherwise `None` from `try_*` and a loud
//!   message (use the `sshd_or_skip!` macro).

#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
/// The unprivileged login used by permission tests (created on demand with `useradd`).
pub const TEST_USER: &str = "sealpush-test";

/// Returns an `Sshd` or skips the test (outside CI only): `let sshd = sshd_or_skip!();`
#[macro_export]
macro_rules! sshd_or_skip {
    () => {
        match $crate::support::sshd::Sshd::try_start() {
            Some(s) => s,
            None => return,
        }
    };
    (shared) => {
        match $crate::support::sshd::Sshd::try_shared() {
            Some(s) => s,
            None => return,
        }
    };
}

/// A running sshd and the client files to reach it.
pub struct Sshd {
    dir: PathBuf,
    /// Keeps the temp dir alive for `start()` instances (None for the shared one, which
    /// removes its dir at exit).
    _tmp: Option<tempfile::TempDir>,
    child: Mutex<Option<Child>>,
    port: u16,
    alias: String,
}

/// A client configuration for an existing server (another user, another known_hosts).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub path: PathBuf,
    pub alias: String,
}

impl ClientConfig {
    /// `ssh -F path alias -- cmd`, output captured.
    pub fn exec(&self, cmd: &str) -> Output {
        ssh_exec(&self.path, &self.alias, cmd)
    }
}

fn available() -> bool {
    if Path::new(SSHD).exists() {
        return true;
    }
    if super::in_ci() {
        panic!("{SSHD} is missing: install openssh-server (CI must not skip the sshd tests)");
    }
    eprintln!("\n*** SKIPPING sshd test: {SSHD} is missing (apt-get install openssh-server) ***\n");
    false
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "sealpush-test", "-f"])
            .arg(path),
    );
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn ssh_exec(config: &Path, alias: &str, cmd: &str) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(config)
        .arg(alias)
        .arg("--")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

/// The public key line (`ssh-ed25519 AAAA...`) of a `.pub` file, without its comment.
fn pub_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pids of every descendant of `pid` (from /proc), children before grandchildren.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                // "pid (comm) state ppid ...": comm may hold spaces and parens, so split after
                // the last ')'.
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok())
                    {
                        parent_of.push((p, ppid));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// The command line of a process (NULs replaced by spaces), or "" if gone.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we read from /proc or spawned; at worst ESRCH.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Sshd {
    /// A private server for one test; panics if sshd cannot start (skips: see `try_start`).
    pub fn start() -> Sshd {
        Sshd::try_start().expect("sshd is not installed")
    }

    /// `None` (after a loud message) when sshd is missing outside CI.
    pub fn try_start() -> Option<Sshd> {
        Sshd::try_start_with_sftp("")
    }

    /// A private server whose sftp subsystem runs as `internal-sftp {args}` (for example
    /// `-u 002`, a umask that makes new files group-writable).
    pub fn start_with_sftp(args: &str) -> Sshd {
        Sshd::try_start_with_sftp(args).expect("sshd is not installed")
    }

    fn try_start_with_sftp(sftp_args: &str) -> Option<Sshd> {
        if !available() {
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("sealpush-sshd-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let (child, port) = launch(&dir, sftp_args);
        Some(Sshd {
            dir,
            _tmp: Some(tmp),
            child: Mutex::new(Some(child)),
            port,
            alias: "sealpush-test".into(),
        })
    }

    /// One server for the whole test binary (started on first use, killed at exit).
    pub fn shared() -> &'static Sshd {
        Sshd::try_shared().expect("sshd is not installed")
    }

    pub fn try_shared() -> Option<&'static Sshd> {
        static SHARED: OnceLock<Option<Sshd>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                if !available() {
                    return None;
                }
                let dir = tempfile::Builder::new()
                    .prefix("sealpush-sshd-shared-")
                    .tempdir()
                    .expect("tempdir")
                    .keep();
                // sshd is started with PR_SET_PDEATHSIG, which fires when the *thread* that
                // spawned it ends; test threads end, so spawn from a thread that never does.
                let (tx, rx) = std::sync::mpsc::channel();
                let d = dir.clone();
                std::thread::spawn(move || {
                    tx.send(launch(&d, "")).unwrap();
                    loop {
                        std::thread::park();
                    }
                });
                let (child, port) = rx.recv().expect("sshd launcher thread");
                SHARED_CLEANUP
                    .set((child.id(), dir.clone()))
                    .expect("shared sshd started once");
                // SAFETY: registering a plain extern "C" fn with no captured state; the test
                // harness leaves through exit(), which runs atexit handlers.
                unsafe {
                    libc::atexit(cleanup_shared);
                }
                Some(Sshd {
                    dir,
                    _tmp: None,
                    child: Mutex::new(Some(child)),
                    port,
                    alias: "sealpush-test".into(),
                })
            })
            .as_ref()
    }

    /// The `Host` alias in [`Sshd::config_path`] (root login).
    pub fn alias(&self) -> &str {
        &self.alias
    }
    /// Client `ssh_config` file (pass as `ssh -F` / `--ssh-config`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("client/config")
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The strict known_hosts file the client config uses.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("client/known_hosts")
    }
    /// The client's private key.
    pub fn identity(&self) -> PathBuf {
        self.dir.join("client/id_ed25519")
    }
    /// The server's host public key line (`ssh-ed25519 AAAA...`).
    pub fn host_key(&self) -> String {
        pub_key(&self.dir.join("sshd/host_ed25519.pub"))
    }
    /// The listener's pid (per-connection sshd processes are its descendants).
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .map(|c| c.id())
            .unwrap_or(0)
    }
    /// The harness's own directory (keys, configs, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sshd/sshd.log")
    }
    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `cmd` on the server over real ssh (root login): for oracles such as the real recipe.
    pub fn exec(&self, cmd: &str) -> Output {
        ssh_exec(&self.config_path(), &self.alias, cmd)
    }

    /// Runs `cmd` over ssh and returns its stdout, panicking (with stderr and the log) on failure.
    pub fn exec_ok(&self, cmd: &str) -> String {
        let out = self.exec(cmd);
        assert!(
            out.status.success(),
            "ssh exec {cmd:?} failed: {}\n--- stderr\n{}\n--- sshd log\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Prints the server log if the current test panics while the guard is alive.
    pub fn log_on_panic(&self) -> LogOnPanic<'_> {
        LogOnPanic(self)
    }

    /// A client config for this server with a known_hosts holding exactly `known_hosts`
    /// (e.g. "" for an unknown host key). Alias `name`, root login, strict checking.
    pub fn client_with_known_hosts(&self, name: &str, known_hosts: &str) -> ClientConfig {
        let kh = self.dir.join(format!("client/known_hosts.{name}"));
        write(&kh, known_hosts, 0o644);
        let path = self.dir.join(format!("client/config.{name}"));
        write(
            &path,
            &client_config(name, self.port, "root", &self.identity(), &kh),
            0o644,
        );
        ClientConfig {
            path,
            alias: name.into(),
        }
    }

    /// Client whose known_hosts does not know this server (empty file).
    pub fn client_unknown_key(&self) -> ClientConfig {
        self.client_with_known_hosts("unknown-key", "")
    }

    /// Client whose known_hosts holds another key for `[127.0.0.1]:PORT` (a changed host key).
    pub fn client_changed_key(&self) -> ClientConfig {
        let other = self.dir.join("client/other_host_key");
        if !other.exists() {
            keygen(&other);
        }
        let line = format!(
            "[127.0.0.1]:{} {}\n",
            self.port,
            pub_key(&other.with_extension("pub"))
        );
        self.client_with_known_hosts("changed-key", &line)
    }

    /// Client that logs in as the unprivileged [`TEST_USER`] (created if needed) with the same
    /// client key and the strict known_hosts. The user cannot write under root-owned 0755 dirs.
    pub fn client_unprivileged(&self) -> ClientConfig {
        ensure_test_user();
        let ak = self.dir.join(format!("sshd/authorized_keys/{TEST_USER}"));
        write(
            &ak,
            &(pub_key(&self.identity().with_extension("pub")) + "\n"),
            0o644,
        );
        let path = self.dir.join("client/config.unprivileged");
        write(
            &path,
            &client_config(
                "unprivileged",
                self.port,
                TEST_USER,
                &self.identity(),
                &self.known_hosts(),
            ),
            0o644,
        );
        ClientConfig {
            path,
            alias: "unprivileged".into(),
        }
    }

    /// Kills the server and every per-connection child now.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            kill_tree(child.id());
            let _ = child.wait();
        }
    }
}

/// Guard from [`Sshd::log_on_panic`].
pub struct LogOnPanic<'a>(&'a Sshd);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- sshd log ({}) ---\n{}--- end of sshd log ---",
                self.0.log_path().display(),
                self.0.log()
            );
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- sshd log ({}) ---\n{}--- end of sshd log ---",
                self.log_path().display(),
                self.log()
            );
        }
        self.stop();
    }
}

fn kill_tree(pid: u32) {
    let kids = descendants(pid);
    signal(pid, libc::SIGKILL);
    for k in kids {
        // A stopped (SIGSTOP) child must be continued to die promptly on some kernels; SIGKILL
        // works on stopped processes anyway, CONT is harmless.
        signal(k, libc::SIGKILL);
        signal(k, libc::SIGCONT);
    }
}

static SHARED_CLEANUP: OnceLock<(u32, PathBuf)> = OnceLock::new();

extern "C" fn cleanup_shared() {
    if let Some((pid, dir)) = SHARED_CLEANUP.get() {
        kill_tree(*pid);
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn client_config(
    alias: &str,
    port: u16,
    user: &str,
    identity: &Path,
    known_hosts: &Path,
) -> String {
    format!(
        "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {}\n  \
         IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
         StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n",
        identity.display(),
        known_hosts.display()
    )
}

/// Writes keys and configs under `dir`, starts sshd on a free port (retrying on a collision),
/// and waits until it answers.
fn launch(dir: &Path, sftp_args: &str) -> (Child, u16) {
    let sshd_dir = dir.join("sshd");
    let client_dir = dir.join("client");
    // 0755 so the unprivileged test user can read its authorized_keys (sshd reads it as the user).
    for d in [
        dir,
        &sshd_dir,
        &client_dir,
        &sshd_dir.join("authorized_keys"),
    ] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd (privilege separation dir)");
    let host_key = sshd_dir.join("host_ed25519");
    let id = client_dir.join("id_ed25519");
    keygen(&host_key);
    keygen(&id);
    write(
        &sshd_dir.join("authorized_keys/root"),
        &(pub_key(&id.with_extension("pub")) + "\n"),
        0o644,
    );
    let log = sshd_dir.join("sshd.log");

    // `SetEnv SHLVL=1` below: bash runs `~/.bashrc` for a command started by sshd, but only as
    // a top-level shell (SHLVL < 2). Without it every remote command of every test ran the
    // runner's own root dotfiles: on a machine whose ~/.bashrc does `pyenv init` that is a
    // `pyenv rehash` under a global lock file, so parallel sessions queued behind each other,
    // and a session killed mid-startup by a fault test left the lock behind: every later
    // remote command on the machine then waited 60 s for it (and wrote "cannot overwrite
    // existing file" to stderr), failing exec and probe tests with `no answer within 20s`.
    // The server under test is this harness's, not the machine's login environment.
    for attempt in 0..20 {
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile none\n\
             AuthorizedKeysFile {ak}/%u\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             Subsystem sftp internal-sftp {sftp_args}\nMaxSessions 64\nMaxStartups 64:30:100\nLogLevel VERBOSE\n\
             UseDNS no\nPrintMotd no\nX11Forwarding no\nAllowTcpForwarding no\nClientAliveInterval 0\n\
             SetEnv SHLVL=1\n",
            hk = host_key.display(),
            ak = sshd_dir.join("authorized_keys").display(),
        );
        let cfg_path = sshd_dir.join("sshd_config");
        write(&cfg_path, &config, 0o644);
        write(
            &client_dir.join("known_hosts"),
            &format!(
                "[127.0.0.1]:{port} {}\n",
                pub_key(&host_key.with_extension("pub"))
            ),
            0o644,
        );
        write(
            &client_dir.join("config"),
            &client_config(
                "sealpush-test",
                port,
                "root",
                &id,
                &client_dir.join("known_hosts"),
            ),
            0o644,
        );
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&cfg_path)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL sshd if the
        // spawning thread dies, so no server outlives a crashed test binary.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let _ = std::fs::remove_file(&log);
        let mut child = cmd.spawn().expect("spawn sshd");
        // Generous: on a loaded CI machine key loading and the first accept can take seconds.
        let deadline = Instant::now() + Duration::from_secs(60);
        // Our sshd says so in its log once it listens. A banner alone is not enough: the port
        // was free when `free_port` looked, but another test's server (or anything) may have
        // taken it since, and its banner would make us hand out a server that is not ours
        // (its host key fails our known_hosts) while ours exits with "Address already in use".
        let listening = format!("Server listening on 127.0.0.1 port {port}.");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Address already in use") && attempt < 19 {
                    break; // port taken between bind and sshd: try another
                }
                panic!("sshd exited early ({status}):\n{text}");
            }
            if std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&listening)) && banner(port) {
                return (child, port);
            }
            if Instant::now() > deadline {
                kill_tree(child.id());
                let _ = child.wait();
                panic!(
                    "sshd did not answer on port {port} within 60s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    unreachable!("20 port collisions in a row")
}

/// True when something on `port` answers with an SSH banner.
fn banner(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

/// Creates [`TEST_USER`] once (idempotent across threads and test binaries) with an unlocked
/// account (sshd refuses a locked `!` password even for key logins when PAM is off).
pub fn ensure_test_user() {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exists = Command::new("id")
        .arg("-u")
        .arg(TEST_USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", TEST_USER])
            .output()
            .expect("run useradd");
        // 9: the user exists (another test binary created it meanwhile).
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd {TEST_USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    run_ok(Command::new("usermod").args(["-p", "*", TEST_USER]));
}
