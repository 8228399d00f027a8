//! `sealpush preflight`: the read-only survey of a host, printed as a report in the seed's style
//! (or JSON), with the locked plan written on PASS. Exit 0 on PASS, 1 on FAIL (including a host
//! that cannot be reached or whose key is not trusted), 2 when the survey itself cannot run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sealpush::plan::HostRef;
use sealpush::preflight::{preflight, render_report, PreflightRequest};
use sealpush::remote::RemoteError;
use sealpush::store::Store;

use super::{CheckFailed, Exit, Globals, SshArgs};

const HELP: &str =
    "Exit status: 0 verdict PASS; 1 verdict FAIL (the report says every reason; an unknown or
changed host key is a FAIL too, with the key's fingerprint); 2 could not run (bad arguments, no
such artifact, a plan that cannot be written).

Examples:
  sealpush preflight --host contabo --artifact iu-cutter-v0.6 \\
      --target /opt/incomex/dot/iu-cutter-v0.6 --anchor /opt/incomex/dot/iu-cutter \\
      --plan-out deploy.plan
  sealpush preflight --host ssh://deploy@10.0.0.5:2222 --artifact 3f2a --target /srv/app-v2 --json
  sealpush preflight --host local --artifact site --target /tmp/try/site-v2 --staging /tmp/try";

/// Survey a host read-only and lock a deploy plan.
///
/// Nothing on the host is changed: sealpush only reads metadata, lists directories, reads files
/// and runs the `--probe` commands you give. The report ends with `verdict: PASS` or
/// `verdict: FAIL` and every reason.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// The host: an ssh destination (`contabo` from ~/.ssh/config, `root@203.0.113.5`,
    /// `ssh://deploy@host:2222`), or `local` for this machine.
    #[arg(long, value_name = "HOST", value_parser = super::parse_host)]
    pub host: String,
    /// The artifact to deploy: a store id (or an unambiguous prefix of 4 or more characters), an
    /// artifact name, or a path to an archive (see `sealpush store list`).
    #[arg(long, value_name = "REF")]
    pub artifact: String,
    /// Absolute path on the host the tree will be promoted to. It must not exist.
    #[arg(long, value_name = "PATH")]
    pub target: PathBuf,
    /// The old version beside the target that must stay untouched; its recipe digest
    /// (`find NAME -type f | sort | xargs sha256sum | sha256sum` from its parent) is recorded.
    #[arg(long, value_name = "PATH")]
    pub anchor: Option<PathBuf>,
    /// Stage in this directory instead of beside the target. It must be on the target's
    /// filesystem (so the promote is an atomic rename); shared directories such as /tmp draw a
    /// warning.
    #[arg(long, value_name = "DIR")]
    pub staging: Option<PathBuf>,
    /// A command to run on the host over ssh; its output goes into the report and the plan.
    /// Repeatable. Nothing else is ever run on the host.
    #[arg(long = "probe", value_name = "CMD", value_parser = super::non_blank_command)]
    pub probes: Vec<String>,
    /// Write the sealed plan here on PASS (atomically); `sealpush deploy FILE` executes it.
    #[arg(long, value_name = "FILE")]
    pub plan_out: Option<PathBuf>,
    /// Print the sealed plan as JSON on stdout instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Store directory (default: $XDG_DATA_HOME/sealpush/store or ~/.local/share/sealpush/store).
    #[arg(long, env = "SEALPUSH_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub ssh: SshArgs,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    // A --plan-out that cannot be written is refused before the survey, not after it.
    if let Some(file) = &args.plan_out {
        super::output::check("--plan-out", file)?;
    }
    let store =
        Store::open_for_reading(args.store.as_deref()).context("opening the artifact store")?;
    let artifact = store
        .resolve(&args.artifact)
        .with_context(|| format!("resolving artifact {:?}", args.artifact))?;
    let opts = args.ssh.options();
    globals.note(format!("connecting to {}", args.host));
    let remote = match sealpush::remote::connect(&args.host, &opts) {
        Ok(r) => r,
        // Unreachable, refused, unknown or changed host key: a FAIL verdict, not a crash.
        Err(e @ (RemoteError::Connect { .. } | RemoteError::Disconnected { .. })) => {
            return connection_failed(&args, &e);
        }
        Err(e) => return Err(e).context("connecting"),
    };
    // The plan is run later, perhaps from another directory: relative paths (an `--artifact
    // ./x.tar.zst`, a `--store s`, an `--ssh-config cfg`) are recorded as absolute ones, against
    // the directory preflight ran in. Symlinks are kept as given.
    let absolute = |p: &Path| {
        std::path::absolute(p).with_context(|| format!("making {} absolute", p.display()))
    };
    let mut artifact_ref = artifact.artifact_ref();
    artifact_ref.path = absolute(&artifact_ref.path)?;
    let ssh_config = opts.ssh_config.as_deref().map(absolute).transpose()?;
    let req = PreflightRequest {
        host: HostRef {
            destination: args.host.clone(),
            transport: remote.transport().to_string(),
            ssh_config,
        },
        artifact: artifact_ref,
        target: args.target.clone(),
        anchor: args.anchor.clone(),
        staging: args.staging.clone(),
        probes: args.probes.clone(),
    };
    let progress = globals.progress();
    let plan = preflight(remote.as_ref(), &req, progress.as_ref())
        .with_context(|| format!("surveying {}", args.host))?;
    let pass = plan.verdict.pass;
    let reasons = plan.verdict.reasons.clone();
    let sealed = plan.seal();
    let mut out = std::io::stdout().lock();
    if args.json {
        out.write_all(sealed.to_json().as_bytes())?;
    } else {
        out.write_all(render_report(&sealed.plan).as_bytes())?;
    }
    out.flush()?;
    if let Some(file) = &args.plan_out {
        if pass {
            write_atomic(file, sealed.to_json().as_bytes())
                .with_context(|| format!("writing the plan to {}", file.display()))?;
            globals.note(format!(
                "plan {} written to {} (run `sealpush deploy {}`)",
                sealed.digest,
                file.display(),
                file.display()
            ));
        } else {
            globals.note(format!(
                "no plan written to {}: the verdict is FAIL",
                file.display()
            ));
        }
    } else if pass && !args.json {
        // The report shows a locked plan; without this, nothing says it went nowhere.
        globals.note(
            "no plan written: add --plan-out FILE to write the plan `sealpush deploy FILE` runs",
        );
    }
    if pass {
        Ok(Exit::Ok)
    } else {
        let n = reasons
            .iter()
            .filter(|r| !r.starts_with("warning:"))
            .count();
        Err(CheckFailed(format!(
            "preflight verdict FAIL ({n} reason{}): {}",
            if n == 1 { "" } else { "s" },
            reasons
                .iter()
                .filter(|r| !r.starts_with("warning:"))
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ))
        .into())
    }
}

/// A host we could not reach: the report's first section and a FAIL verdict.
fn connection_failed(args: &Args, e: &RemoteError) -> anyhow::Result<Exit> {
    let reason = format!("connection: {e}");
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "host": args.host,
            "verdict": { "pass": false, "reasons": [reason] },
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        write!(
            out,
            "1. Host\nhost: {}\nconnection: FAIL ({e})\nResult\nverdict: FAIL\nreason: {reason}\n",
            args.host
        )?;
    }
    out.flush()?;
    Err(CheckFailed(format!("preflight verdict FAIL: {reason}")).into())
}

/// Writes `data` to a temp file beside `path`, fsyncs it, and renames it into place, so a reader
/// never sees half a plan.
fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    // 0600 less the umask, as tempfile makes it: a plan names hosts and paths.
    let mut tmp = super::output::temp_beside(path, ".sealpush-plan-", 0o600)?;
    tmp.as_file_mut().write_all(data)?;
    tmp.as_file().sync_all()?;
    super::output::persist(tmp, "--plan-out", path)
}
