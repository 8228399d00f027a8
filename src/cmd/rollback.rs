//! `sealpush rollback RECEIPT|PLAN`: removes exactly what a deploy created (refusing when
//! something changed since, unless `--force`), then re-proves the anchor.

use std::path::PathBuf;

use anyhow::Context;
use sealpush::deploy::{self, receipt::Receipt, rollback::RollbackOptions};

use super::{CheckFailed, Exit, Globals, SshArgs};

const HELP: &str = "Examples:
  sealpush rollback deploy.plan
  sealpush rollback ~/.local/state/sealpush/deploys/<plan digest>/receipt.json --force";

/// Remove exactly what a deploy created, and re-prove the anchor.
///
/// Give the receipt (from the state dir or copied from the host) or the plan (its receipt is
/// looked up locally, then on the host). Everything is examined before anything is removed:
/// if a deployed file, symlink or the kept archive changed since the deploy, nothing is removed
/// unless --force. Names the deploy did not create are never removed. The anchor is never
/// touched; its digest is recomputed afterwards. Like a deploy, the rollback holds the
/// target's host lock (in the work dir beside it) while it examines and removes, so it never
/// runs at the same time as a deploy or another rollback of that target: a lock held by one is
/// reported with its owner and the rollback removes nothing. The tree first leaves the target in
/// one rename, so an interrupted rollback (Ctrl-C stops it at a safe point) leaves no half tree
/// there; run it again to finish (a killed rollback's lock is taken over by that rerun). Exit 0
/// when everything is gone and the anchor is unchanged, 1 when something is kept or changed, 2
/// when it could not run (the host unreachable, the lock held by another run).
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// A receipt (`receipt.json`) or a plan file.
    #[arg(value_name = "RECEIPT|PLAN")]
    pub file: PathBuf,
    /// Also remove entries whose content changed since the deploy.
    #[arg(long)]
    pub force: bool,
    /// Remove a host lock left by a deploy or rollback that is no longer running (its owner,
    /// plan and age are shown when the lock is found) instead of refusing. Not needed for a
    /// lock left by a killed run of this same plan on this machine: running the rollback again
    /// takes that one over. A lock whose owner still runs here is never removed.
    #[arg(long)]
    pub clear_stale_lock: bool,
    /// Host to use instead of the one recorded in the receipt or plan.
    #[arg(long, value_name = "HOST", value_parser = super::parse_host)]
    pub host: Option<String>,
    /// Where journals and receipts are kept locally [default: $XDG_STATE_HOME/sealpush, else
    /// ~/.local/state/sealpush].
    #[arg(long, value_name = "DIR", env = "SEALPUSH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the report as JSON (`complete` true when everything is gone and the anchor is
    /// unchanged); when there is no report (an error, an interruption), `{complete: false,
    /// error}`.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    let json = args.json;
    let mut reported = false;
    let result = roll_back(args, globals, &mut reported);
    if json && !reported {
        // A script reading stdout gets an answer whatever happened, not an empty page.
        let error = match &result {
            Err(e) => format!("{e:#}"),
            Ok(_) => "interrupted".to_string(),
        };
        super::emit(&format!(
            "{}\n",
            serde_json::json!({"complete": false, "error": error})
        ))?;
    }
    result
}

fn roll_back(args: Args, globals: &Globals, reported: &mut bool) -> anyhow::Result<Exit> {
    let text =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let local_state = args
        .state_dir
        .clone()
        .unwrap_or_else(deploy::default_local_state);
    let value: serde_json::Value = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not JSON, so neither a receipt nor a plan (give the deploy's \
                 receipt.json or its plan file)",
            args.file.display()
        )
    })?;
    // With a plan, the receipt may have to be read from the host: that connection is kept for
    // the rollback when the receipt names the same host (it does unless the receipt was edited).
    let (receipt, opened) = if value.get("plan_digest").is_some() {
        let receipt = Receipt::from_json(&text)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("receipt {}", args.file.display()))?;
        (receipt, None)
    } else {
        let plan = super::deploy::read_plan(&args.file)?;
        let host = args
            .host
            .clone()
            .unwrap_or_else(|| plan.plan.host.destination.clone());
        let config = plan.plan.host.ssh_config.clone();
        let remote = super::deploy::connect(&host, config.as_ref(), &args.ssh)?;
        let receipt = deploy::find_receipt(remote.as_ref(), &plan, &local_state)?;
        (receipt, Some((host, config, remote)))
    };
    let host = args
        .host
        .clone()
        .unwrap_or_else(|| receipt.host.destination.clone());
    let remote = match opened {
        Some((h, config, remote)) if h == host && config == receipt.host.ssh_config => remote,
        _ => super::deploy::connect(&host, receipt.host.ssh_config.as_ref(), &args.ssh)?,
    };
    globals.note(format!(
        "rolling back {}:{}",
        host,
        receipt.target.display()
    ));
    let progress = globals.progress();
    let opts = RollbackOptions {
        force: args.force,
        local_state: Some(local_state),
        clear_stale_lock: args.clear_stale_lock,
    };
    // Ctrl-C or a TERM stops the rollback at its next safe point, which says what is left.
    super::stop_at_safe_points_on(&[libc::SIGINT, libc::SIGTERM]);
    let report = match deploy::rollback(remote.as_ref(), &receipt, &opts, progress.as_ref()) {
        Ok(r) => r,
        Err(e @ deploy::DeployError::Interrupted { .. }) => {
            eprintln!("sealpush: error: {e}");
            return Ok(Exit::Interrupted);
        }
        // The connection may drop before the safe point (ssh got the Ctrl-C too).
        Err(e) if sealpush::interrupt::requested() => {
            eprintln!("sealpush: error: interrupted: {e}");
            return Ok(Exit::Interrupted);
        }
        Err(e) if e.is_check_failure() => return Err(CheckFailed(e.to_string()).into()),
        // The error names its step ("rollback: ..."); a context would say it twice.
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    // The rollback ran: whatever happens to its report now, `{complete: false}` would be false.
    *reported = true;
    if args.json {
        super::emit(&format!("{}\n", super::to_json(&report)?))?;
    } else {
        super::emit(&deploy::render_rollback(&report))?;
    }
    if report.complete {
        Ok(Exit::Ok)
    } else {
        Err(CheckFailed(format!("rollback incomplete: {}", report.kept.join("; "))).into())
    }
}
