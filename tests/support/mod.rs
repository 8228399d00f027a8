//! Shared test helpers: run the sealpush binary and, on failure, show everything needed to
//! reproduce (command, cwd, status, stdout, stderr).

#![allow(dead_code)]

pub mod sshd;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the built `sealpush` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sealpush"))
}

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A command with a readable failure report.
pub struct TestCommand {
    pub cmd: Command,
}

impl TestCommand {
    /// `sealpush ARGS...` in `cwd`, with a clean, quiet environment.
    pub fn sealpush<I, S>(cwd: &Path, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin());
        cmd.args(args).current_dir(cwd).env("RUST_BACKTRACE", "0");
        TestCommand { cmd }
    }

    /// Any program.
    pub fn new(program: impl AsRef<OsStr>, cwd: &Path) -> TestCommand {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd);
        TestCommand { cmd }
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> TestCommand {
        self.cmd.env(k, v);
        self
    }

    /// Without XDG_DATA_HOME (so the store's default location follows HOME).
    pub fn env_remove_xdg(mut self) -> TestCommand {
        self.cmd.env_remove("XDG_DATA_HOME");
        self
    }

    pub fn cmd_arg(mut self, a: impl AsRef<OsStr>) -> TestCommand {
        self.cmd.arg(a);
        self
    }

    pub fn cmd_args<I, S>(mut self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn output(&mut self) -> Output {
        self.cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.cmd))
    }

    /// Runs and asserts exit status `code`, returning the output.
    pub fn expect_code(&mut self, code: i32) -> Output {
        let out = self.output();
        if out.status.code() != Some(code) {
            panic!("{}", self.report(&out, &format!("expected exit {code}")));
        }
        out
    }

    /// Runs and asserts success.
    pub fn ok(&mut self) -> Output {
        self.expect_code(0)
    }

    /// Everything needed to reproduce a failure.
    pub fn report(&self, out: &Output, why: &str) -> String {
        format!(
            "{why}\ncommand: {:?}\ncwd: {:?}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd,
            self.cmd.get_current_dir(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// True when running under CI (`CI=true`): there, a test that cannot find what it needs fails
/// instead of skipping.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Every path under `root` (not following symlinks), root excluded, sorted.
pub fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A mount made for one test (a tmpfs, or a bind mount), unmounted on drop. Needs root: outside
/// CI a test without it is skipped, in CI it fails.
pub struct Mounted(pub PathBuf);

impl Mounted {
    pub fn tmpfs(at: &Path, size: &str) -> Option<Mounted> {
        let opts = format!("size={size},mode=0755");
        Mounted::run(at, &["-t", "tmpfs", "-o", &opts, "tmpfs"], "a tmpfs")
    }

    /// `from` shown again at `at`: the same filesystem (same statvfs id), another mount.
    pub fn bind(from: &Path, at: &Path) -> Option<Mounted> {
        let from = from.to_str().expect("test paths are UTF-8");
        Mounted::run(at, &["--bind", from], "a bind mount")
    }

    fn run(at: &Path, args: &[&str], what: &str) -> Option<Mounted> {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(args)
            .arg(at)
            .status()
            .unwrap();
        if !st.success() {
            assert!(!in_ci(), "cannot mount {what} in CI");
            eprintln!("*** SKIPPING: cannot mount {what} here (not root?) ***");
            return None;
        }
        Some(Mounted(at.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `sealpush ARGS` in `cwd` with no `SOURCE_DATE_EPOCH` and no inherited store: what a test of
/// packing or of references expects, whatever the caller's environment holds.
pub fn sealpush_clean<I, S>(cwd: &Path, args: I) -> TestCommand
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = TestCommand::sealpush(cwd, args);
    c.cmd
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("SEALPUSH_STORE");
    c
}

/// A command's stderr as text (lossy: for assertions and messages).
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command's stdout as text (lossy: for assertions and messages).
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A port on 127.0.0.1 that refuses connections for as long as this lives: a socket is bound to
/// it but never listens, so a connect gets a reset ("Connection refused"). A port merely freed
/// after `bind(127.0.0.1:0)` can be taken meanwhile by anything that picks free ports the same
/// way (every test sshd does), and the "unreachable" host then answers.
pub struct RefusedPort {
    _socket: std::os::fd::OwnedFd,
    pub port: u16,
}

impl RefusedPort {
    pub fn bind() -> RefusedPort {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: plain socket calls on a descriptor we own (OwnedFd closes it), with a
        // zero-initialised sockaddr_in of the size we pass.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let socket = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let sa = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
            assert_eq!(
                libc::bind(socket.as_raw_fd(), sa, len),
                0,
                "bind: {}",
                std::io::Error::last_os_error()
            );
            let mut got = len;
            assert_eq!(
                libc::getsockname(socket.as_raw_fd(), sa, &mut got),
                0,
                "getsockname: {}",
                std::io::Error::last_os_error()
            );
            RefusedPort {
                _socket: socket,
                port: u16::from_be(addr.sin_port),
            }
        }
    }
}
