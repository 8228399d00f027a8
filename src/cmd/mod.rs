//! Commands: each turns parsed arguments into library calls and output. stdout carries data
//! only; messages and progress go to stderr.

pub mod bench;
pub mod demo;
pub mod deploy;
pub mod hash;
pub mod manifest;
pub mod output;
pub mod pack;
pub mod preflight;
pub mod rollback;
pub mod status;
pub mod store;
pub mod unpack;
pub mod verify;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use sealpush::progress::{Bars, NoProgress, Progress};

/// The most threads any `-j` takes: far more than any machine's cores, few enough that a typo
/// (`-j 4294967295`) is refused at once instead of spending seconds spawning threads, or
/// failing with EAGAIN blamed on a path.
pub const MAX_THREADS: i64 = 1024;

/// Options every command sees.
#[derive(Clone, Debug, Default)]
pub struct Globals {
    pub quiet: bool,
    pub no_progress: bool,
}

impl Globals {
    /// Bars only when stderr is a terminal and the user did not opt out.
    pub fn progress(&self) -> Box<dyn Progress> {
        if !self.quiet && !self.no_progress && std::io::stderr().is_terminal() {
            Box::new(Bars::new())
        } else {
            Box::new(NoProgress)
        }
    }

    /// A one-line message on stderr unless `-q`.
    pub fn note(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }
}

/// Checks `RAYON_NUM_THREADS` as `-j` is checked. rayon takes any count from it, and a typo
/// such as `100000` left `hash` spawning threads for minutes; it ignores what does not parse,
/// which would hide a typo of the other kind (rayon does not trim blanks either: " 5" is
/// refused). 0 is rayon's "all cores", so it stays allowed.
pub fn check_rayon_threads(value: Option<&std::ffi::OsStr>) -> Result<(), String> {
    let Some(value) = value else { return Ok(()) };
    match value.to_str().map(|s| s.parse::<i64>()) {
        Some(Ok(n)) if (0..=MAX_THREADS).contains(&n) => Ok(()),
        _ => Err(format!(
            "RAYON_NUM_THREADS={}: use 1 to {MAX_THREADS} worker threads (0 or unset: all cores)",
            value.to_string_lossy()
        )),
    }
}

/// Documented exit statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// A check failed: verdict FAIL, digest mismatch, a tree the recipe cannot hash.
    CheckFailed = 1,
    /// Usage or I/O error.
    Error = 2,
    /// Ctrl-C.
    Interrupted = 130,
}

/// An error that means "a check failed" (exit 1) rather than "could not run" (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// Maps a command's outcome to the process exit status, printing the error once.
pub fn exit_status(result: anyhow::Result<Exit>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            // A closed stdout (`sealpush hash d | head -c1`) is not an error.
            if err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::from(Exit::Ok as u8);
            }
            eprintln!("sealpush: error: {err:#}");
            let code = if err.chain().any(|c| c.is::<CheckFailed>()) {
                Exit::CheckFailed
            } else {
                Exit::Error
            };
            ExitCode::from(code as u8)
        }
    }
}

/// A failed connection as the commands report it: ssh's own failure already names the host
/// ("cannot connect to h: ..."), which a context would say twice; anything else gets it.
pub fn connect_error(e: sealpush::remote::RemoteError, host: &str) -> anyhow::Error {
    match e {
        e @ sealpush::remote::RemoteError::Connect { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("connecting to {host}")),
    }
}

/// A command for the host (`--probe`, `--check`) must say something to run: an empty one ran
/// an empty command and recorded its success, which proves nothing about the host.
pub fn non_blank_command(cmd: &str) -> Result<String, String> {
    if cmd.trim().is_empty() {
        return Err("is empty: give the command to run on the host (e.g. 'df -h /opt')".into());
    }
    Ok(cmd.to_string())
}

/// `--host` as ssh would read it, checked before anything runs: ssh given `ssh://` or a bad
/// port answers with its usage text, which says nothing about the flag.
pub fn parse_host(host: &str) -> Result<String, String> {
    const FORMS: &str = "give `local`, an ssh alias, `user@host` or `ssh://user@host:port`";
    if host.is_empty() {
        return Err(format!("is empty: {FORMS}"));
    }
    if host.starts_with('-') {
        return Err(format!(
            "starts with `-`, which ssh reads as an option: {FORMS}"
        ));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("contains a blank or control character: {FORMS}"));
    }
    // ssh reads the scheme without regard to case (`SSH://h:99999` is the URI form too).
    let scheme = host.get(..6).filter(|s| s.eq_ignore_ascii_case("ssh://"));
    let (authority, uri) = match scheme.map(|s| &host[s.len()..]) {
        Some(rest) => match rest.split_once('/') {
            Some((_, path)) if !path.is_empty() => {
                return Err(
                    "has a path, which an ssh destination cannot have: give the \
                            directory with --target"
                        .to_string(),
                )
            }
            Some((authority, _)) => (authority, true),
            None => (rest, true),
        },
        None => (host, false),
    };
    let name = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if !uri {
        if name.is_empty() {
            return Err(format!("has no host name after `@`: {FORMS}"));
        }
        return Ok(host.to_string());
    }
    // ssh://[::1]:22 or ssh://host:22: the port is what follows the host's last `:`.
    let (name, port) = match name.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) => (addr, rest.strip_prefix(':')),
            None => return Err(format!("has no `]` after its IPv6 address: {FORMS}")),
        },
        None => match name.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (name, None),
        },
    };
    if name.is_empty() {
        return Err(format!("has no host name: {FORMS}"));
    }
    if let Some(p) = port {
        if !matches!(p.parse::<u16>(), Ok(n) if n > 0) {
            return Err(format!(
                "port {p} is not a port number (1 to 65535): {FORMS}"
            ));
        }
    }
    Ok(host.to_string())
}

/// A week: longer than any step should take, and small enough that a deadline computed from
/// it (now + timeout) cannot overflow, which a typo like `--op-timeout 9999999999999` did.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// How to reach a host; shared by preflight, deploy, rollback and status.
#[derive(clap::Args, Debug, Clone)]
pub struct SshArgs {
    /// ssh config file passed to ssh as `-F FILE` (aliases, keys, ports).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<std::path::PathBuf>,
    /// Trust and record the host key if the host is not yet in known_hosts. A changed key is
    /// always refused.
    #[arg(long)]
    pub accept_new_host_key: bool,
    /// Seconds to wait for the connection (1 to 604800, a week).
    #[arg(long, default_value_t = 15, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub connect_timeout: u64,
    /// Seconds any single remote operation may take before sealpush gives up on a stalled host
    /// (1 to 604800, a week; a `--check` is one operation).
    #[arg(long, default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub op_timeout: u64,
    /// Use ssh's cipher order exactly as configured. Without it, sealpush asks ssh to prefer
    /// the AES-GCM ciphers your configuration already allows when this CPU has AES
    /// instructions (about 1.4x scp's throughput on loopback here); the set of allowed ciphers
    /// never changes, only their order.
    #[arg(long)]
    pub keep_cipher_order: bool,
    /// Largest payload of one SFTP read or write request, in bytes. The default is the
    /// server's own limit (255 KiB for OpenSSH); lower it for a server or proxy that fails on
    /// large packets, as `sftp -B` does. At least 512.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(512..))]
    pub sftp_request_size: Option<u32>,
}

impl SshArgs {
    pub fn options(&self) -> sealpush::remote::ConnectOptions {
        sealpush::remote::ConnectOptions {
            ssh_config: self.ssh_config.clone(),
            accept_new_host_key: self.accept_new_host_key,
            connect_timeout: Duration::from_secs(self.connect_timeout),
            op_timeout: Duration::from_secs(self.op_timeout),
            keep_cipher_order: self.keep_cipher_order,
            max_request: self.sftp_request_size,
        }
    }
}

extern "C" fn on_stop_signal(sig: libc::c_int) {
    if sealpush::interrupt::requested() {
        // A second signal: the user will not wait for the safe point (a zstd job at level 19
        // can take seconds to finish). The default action ends the process now; what it
        // leaves is what a kill leaves, which the journal and the temp-file sweeps handle.
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    // Only an atomic store: async-signal-safe.
    sealpush::interrupt::request();
}

/// Makes `signals` set the flag that deploy and unpack check at their safe points, so they stop
/// there (and clean up) instead of dying mid-step. A second signal ends the process at once.
pub fn stop_at_safe_points_on(signals: &[libc::c_int]) {
    for &sig in signals {
        // SAFETY: `on_stop_signal` only performs an atomic store, which is async-signal-safe;
        // the handler stays valid for the life of the process.
        unsafe {
            libc::signal(
                sig,
                on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// `value` as pretty JSON for `--json`. Only a path that is not UTF-8 can fail: JSON strings
/// are text, and a lossy spelling would name another file, so the text report is the way then.
pub fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    use anyhow::Context as _;
    serde_json::to_string_pretty(value)
        .context("--json: the report names a path that is not valid UTF-8; leave out --json")
}

/// A path as a JSON string, or an error saying why it cannot be one. JSON strings are UTF-8;
/// rather than print another path than the real one (lossily, or escaped in a way a reader
/// would have to know about), `--json` refuses; the text output is for people. The error
/// spells the path with its odd bytes escaped (`f\xFFg`), so that two such paths differ.
pub fn json_path<'a>(what: &str, path: &'a std::path::Path) -> anyhow::Result<&'a str> {
    path.to_str().ok_or_else(|| {
        anyhow::anyhow!(
            "--json cannot print {what} {path:?}: the path is not UTF-8, which a JSON string \
             must be (use a UTF-8 path, or leave out --json for the text output)"
        )
    })
}

/// Writes `text` to stdout. Unlike `print!`, a closed stdout (`sealpush status … | head`) is an
/// error the caller returns, which [`exit_status`] ends quietly, instead of a panic.
pub fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}
