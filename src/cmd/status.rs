//! `sealpush status --host H --target PATH`: re-verifies a deployed target against its
//! receipt and DEPLOY-MANIFEST.txt, reading every byte back.

use std::path::PathBuf;

use sealpush::deploy;

use super::{CheckFailed, Exit, Globals, SshArgs};

const HELP: &str = "Examples:
  sealpush status --host contabo --target /opt/incomex/dot/iu-cutter-v0.6
  sealpush status --host local --target /srv/app-v2";

/// Re-verify a deployed target against its receipt and deploy manifest.
///
/// Reads DEPLOY-MANIFEST.txt in the target and the receipt in the work dir beside it
/// (`PARENT/.sealpush/NAME/`), then reads every file of the target back and compares names,
/// kinds, permission bits (files 0644 or 0755, directories at most 0755), symlink targets and
/// sha256. It says so when the deploy or a rollback of it was cut off. Exit 0 when the target
/// is exactly as deployed by a deploy that passed, 1 when anything differs or the receipt's
/// verdict is FAIL (a failed --check, say).
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// The host: `local`, an ssh alias, `user@host` or `ssh://user@host:port`.
    #[arg(long, value_name = "HOST", value_parser = super::parse_host)]
    pub host: String,
    /// The deployed directory (absolute).
    #[arg(long, value_name = "PATH")]
    pub target: PathBuf,
    /// Print the report as JSON (`problems` empty when the target is exactly as deployed).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    let remote = sealpush::remote::connect(&args.host, &args.ssh.options())
        .map_err(|e| super::connect_error(e, &args.host))?;
    let progress = globals.progress();
    let report = deploy::status(remote.as_ref(), &args.target, progress.as_ref())
        // The error names its step and path ("status: lstat /srv/app: ..."); no context.
        .map_err(anyhow::Error::new)?;
    if args.json {
        super::emit(&format!("{}\n", super::to_json(&report)?))?;
    } else {
        super::emit(&deploy::render_status(&report))?;
    }
    if report.ok() {
        Ok(Exit::Ok)
    } else {
        Err(CheckFailed(format!(
            "{} differs from its deploy: {}",
            args.target.display(),
            report.problems.first().map(String::as_str).unwrap_or("")
        ))
        .into())
    }
}
