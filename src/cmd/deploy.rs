//! `sealpush deploy PLAN`: executes a locked plan (see `sealpush::deploy` for the steps and
//! their guarantees), prints the receipt in the seed's style on stdout, and exits 0 on PASS,
//! 1 on FAIL (drift, verification failure, failed check), 2 on other errors, 130 on Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use sealpush::deploy::{self, DeployOptions, VerifyMode};
use sealpush::plan::SealedPlan;

use super::{CheckFailed, Exit, Globals, SshArgs};

const HELP: &str =
    "Exit status: 0 deployed and proven (and the --check passed); 1 a check failed (the plan was
edited or failed, the host drifted from it, a verification mismatch, a failed --check); 2 could
not run (PLAN is no plan this sealpush reads, say cut short) or was cut off (the error says
what is left on the host and to run the same command again); 130 interrupted.

Examples:
  sealpush deploy deploy.plan
  sealpush deploy deploy.plan --check 'python3 -m unittest discover -s tests -p \"test_*.py\"'
  sealpush deploy deploy.plan --keep-archive --sync --json > receipt.json";

/// Push, verify, stage, promote and prove, from a plan written by `sealpush preflight`.
///
/// Every remote mutation is journalled before it happens (locally under the state dir and on
/// the host in the plan's work dir). If the deploy is interrupted (Ctrl-C, kill, lost
/// connection, full disk), the target is either absent or complete; run the same command again
/// to clean up and start over (before the promote) or to finish (after it). Audit a deployed
/// tree on the host with coreutils only:
/// `cd TARGET && grep -E '^\\?[0-9a-f]{64}  ' DEPLOY-MANIFEST.txt | sha256sum -c --strict`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// The plan file written by `sealpush preflight --plan-out`.
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    /// Also upload the archive into the work dir beside the target (exclusive, verified), so
    /// the host keeps an auditable copy.
    #[arg(long)]
    pub keep_archive: bool,
    /// How staged files are verified: `read-back` reads every byte back over SFTP and hashes it
    /// here; `host-sha256sum` runs `sha256sum -c` on the host over ssh, on all its CPUs (faster,
    /// trusts the host).
    #[arg(long, default_value = "read-back", value_name = "MODE")]
    pub verify: VerifyMode,
    /// Command run over ssh in the deployed target after the promote (gate G5), e.g.
    /// `python3 -m unittest discover -s tests -p 'test_*.py'`; its output and status go into
    /// the receipt, and a failure makes the verdict FAIL. A check still running at
    /// --op-timeout counts as failed, and is stopped on the host (TERM, then KILL 5 s later).
    #[arg(long, value_name = "CMD", value_parser = super::non_blank_command)]
    pub check: Option<String>,
    /// Roll the deploy back automatically when --check fails, under the lock the deploy holds
    /// (no other run can take the target in between); if that is cut off, `sealpush rollback`
    /// on the plan finishes it.
    #[arg(long, requires = "check")]
    pub rollback_on_check_failure: bool,
    /// Make the deploy durable with `sync -f` on the host (over ssh): once on the staging dir
    /// before the promote, once on the target after it. SFTP can fsync files but not
    /// directories, so without it the names and the promote's rename may not survive a power
    /// cut. Replaces the per-file fsyncs (which the single-threaded sftp-server serialises), so
    /// it is also the faster choice for trees of many small files.
    #[arg(long)]
    pub sync: bool,
    /// Remove a lock left by a deploy or rollback that is no longer running (its owner, plan
    /// and age are shown when the lock is found) instead of refusing. Not needed for a lock left by a killed run
    /// of this same plan on this machine: running the deploy again takes that one over.
    #[arg(long)]
    pub clear_stale_lock: bool,
    /// Where journals and receipts are kept locally [default: $XDG_STATE_HOME/sealpush, else
    /// ~/.local/state/sealpush].
    #[arg(long, value_name = "DIR", env = "SEALPUSH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the receipt as JSON instead of the report; when the deploy of a readable plan
    /// stops before a receipt exists (the host unreachable, drift, a failure),
    /// `{plan_digest, target, verdict: {pass: false, reasons}}`.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// Reads and checks a plan file (digest, format, verdict). A file that is no plan this
/// sealpush reads (not JSON, cut short, another format, a later sealpush's) is bad input, exit 2, as an unreadable
/// receipt or a file that is no archive is; a plan edited since preflight, or one whose verdict
/// is FAIL, is a failed check, exit 1.
pub fn read_plan(path: &std::path::Path) -> anyhow::Result<SealedPlan> {
    use sealpush::plan::PlanError;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading plan {}", path.display()))?;
    SealedPlan::from_json(&text)
        .map_err(|e| match e {
            PlanError::Parse(_) | PlanError::Format { .. } | PlanError::Newer { .. } => {
                anyhow::Error::new(e)
            }
            PlanError::Tampered { .. } | PlanError::Failed(_) => {
                anyhow::Error::new(CheckFailed(e.to_string()))
            }
        })
        .with_context(|| format!("plan {}", path.display()))
}

/// Opens the plan's host: the ssh config from the command line, else the plan's.
pub fn connect(
    destination: &str,
    plan_config: Option<&PathBuf>,
    ssh: &SshArgs,
) -> anyhow::Result<Box<dyn sealpush::remote::Remote>> {
    let mut opts = ssh.options();
    if opts.ssh_config.is_none() {
        opts.ssh_config = plan_config.cloned();
    }
    sealpush::remote::connect(destination, &opts).map_err(|e| super::connect_error(e, destination))
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    let plan = read_plan(&args.plan)?;
    let remote = match connect(
        &plan.plan.host.destination,
        plan.plan.host.ssh_config.as_ref(),
        &args.ssh,
    ) {
        Ok(r) => r,
        Err(e) => {
            if args.json {
                let _ = super::emit(&format!(
                    "{}\n",
                    failure_json(&plan, vec![format!("{e:#}")])
                ));
            }
            return Err(e);
        }
    };
    let opts = DeployOptions {
        keep_archive: args.keep_archive,
        verify: args.verify,
        check: args.check,
        rollback_on_check_failure: args.rollback_on_check_failure,
        sync: args.sync,
        clear_stale_lock: args.clear_stale_lock,
        local_state: args.state_dir.unwrap_or_else(deploy::default_local_state),
    };
    // Ctrl-C stops the deploy at its next safe point instead of killing it.
    super::stop_at_safe_points_on(&[libc::SIGINT]);
    globals.note(format!(
        "deploying {} to {}:{}",
        plan.plan.artifact.path.display(),
        plan.plan.host.destination,
        plan.plan.target.display()
    ));
    let progress = globals.progress();
    let result = deploy::deploy(remote.as_ref(), &plan, &opts, progress.as_ref());
    if let (Err(e), true) = (&result, args.json) {
        // A script reading stdout gets a verdict whatever happened, not an empty page.
        let reasons = match e {
            deploy::DeployError::Drift { changes } => changes.clone(),
            other => vec![other.to_string()],
        };
        // Best effort: a closed stdout must not hide the deploy's own error and exit status.
        let _ = super::emit(&format!("{}\n", failure_json(&plan, reasons)));
    }
    match result {
        Ok(receipt) => {
            if args.json {
                super::emit(&receipt.to_json())?;
            } else {
                super::emit(&deploy::render_receipt(&receipt))?;
            }
            if receipt.verdict.pass {
                Ok(Exit::Ok)
            } else {
                Err(CheckFailed(format!(
                    "deploy verdict FAIL: {}",
                    receipt.verdict.reasons.join("; ")
                ))
                .into())
            }
        }
        Err(e @ deploy::DeployError::Interrupted { .. }) => {
            eprintln!("sealpush: error: {e}");
            Ok(Exit::Interrupted)
        }
        // A Ctrl-C from a terminal also reaches ssh (same process group), so the connection
        // may drop before the next safe point: still an interruption (the error says what
        // was left and what to do).
        Err(e) if sealpush::interrupt::requested() => {
            eprintln!("sealpush: error: interrupted: {e}");
            Ok(Exit::Interrupted)
        }
        Err(e) if e.is_check_failure() => Err(CheckFailed(e.to_string()).into()),
        Err(e) => Err(anyhow::Error::new(e).context("deploy")),
    }
}

/// What `deploy --json` prints when no receipt was written: the plan, the target and a FAIL
/// verdict whose reasons are the error (each drift on its own).
fn failure_json(plan: &SealedPlan, reasons: Vec<String>) -> serde_json::Value {
    serde_json::json!({
        "plan_digest": plan.digest,
        "target": plan.plan.target.to_string_lossy(),
        "verdict": {"pass": false, "reasons": reasons},
    })
}
