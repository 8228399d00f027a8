//! Command-line grammar (clap derive only). Each command's arguments live beside its code in
//! `cmd/`, so this file is the table of contents.

use clap::{Parser, Subcommand};

use crate::cmd;

const HELP: &str = "Environment:
  SEALPUSH_STORE       the local artifact store (--store; default $XDG_DATA_HOME/sealpush/store,
                       else ~/.local/share/sealpush/store)
  SEALPUSH_STATE_DIR   deploy journals and receipts (--state-dir; default
                       $XDG_STATE_HOME/sealpush, else ~/.local/state/sealpush)
  SOURCE_DATE_EPOCH    the mtime recorded in packed archives (default 1153704088)
  SEALPUSH_TMPDIR      where deploy unpacks an artifact it cannot stream (default /dev/shm
                       when it has room, else the system temp dir)
  RAYON_NUM_THREADS    worker threads where -j is not given (1 to 1024; 0 or unset: all cores)

The main job, on the bundled fixtures and no server: sealpush demo
Each command's --help has its details and examples; the formats are in store-layout.md.";

/// sealpush: content-addressed artifacts, pushed verifiably.
///
/// Hash a tree exactly as `find DIR -type f | sort | xargs sha256sum | sha256sum` would (only
/// faster), pack it into a reproducible archive, survey a host read-only, deploy side by side
/// with an atomic promote, prove the old version untouched, and roll back.
///
/// Exit status: 0 ok; 1 a check failed (verdict FAIL, digest mismatch, a tree the recipe
/// cannot hash); 2 usage or I/O error; 130 interrupted.
#[derive(Parser, Debug)]
#[command(
    name = "sealpush",
    version,
    about,
    long_about,
    max_term_width = 100,
    after_long_help = HELP
)]
pub struct Cli {
    /// Print only data on stdout: no progress, no summaries on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Never draw progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(long, global = true)]
    pub no_progress: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Each command's description is the doc comment of its `Args` in `cmd/`: a doc comment here
/// would replace it whole, and `--help` would lose the paragraphs after the first line.
#[derive(Subcommand, Debug)]
pub enum Command {
    Hash(cmd::hash::Args),
    Manifest(cmd::manifest::Args),
    Bench(cmd::bench::Args),
    Pack(cmd::pack::Args),
    Unpack(cmd::unpack::Args),
    Verify(cmd::verify::Args),
    Store(cmd::store::Args),
    Preflight(cmd::preflight::Args),
    Deploy(cmd::deploy::Args),
    Rollback(cmd::rollback::Args),
    Status(cmd::status::Args),
    Demo(cmd::demo::Args),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The paragraphs after a command's first line reach its `--help`: an operator whose deploy
    /// was cut off reads there that running it again finishes or cleans up.
    #[test]
    fn long_help_keeps_each_commands_whole_description() {
        Cli::command().debug_assert();
        let mut cli = Cli::command();
        let long_help = |cli: &mut clap::Command, name: &str| {
            let sub = cli.find_subcommand_mut(name).expect("subcommand exists");
            sub.render_long_help().to_string()
        };
        for (name, later_paragraph) in [
            ("deploy", "run the same command again"),
            (
                "rollback",
                "Names the deploy did not create are never removed",
            ),
            ("preflight", "Nothing on the host is changed"),
            ("status", "reads every file of the target back"),
            ("verify", "Exit 1 on any mismatch"),
            ("store", "Layout (see store-layout.md)"),
        ] {
            let help = long_help(&mut cli, name);
            let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(later_paragraph), "{name} --help:\n{help}");
        }
    }

    /// A zero timeout would fail every remote operation at once ("no answer within 0s"); a
    /// huge one overflowed the deadline.
    #[test]
    fn zero_timeouts_are_refused_at_parse_time() {
        for flag in ["--op-timeout", "--connect-timeout"] {
            let args = [
                "sealpush", "status", "--host", "h", "--target", "/t", flag, "0",
            ];
            let err = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(err.contains(flag) && err.contains("not in 1.."), "{err}");
            let ok = [
                "sealpush", "status", "--host", "h", "--target", "/t", flag, "1",
            ];
            assert!(Cli::try_parse_from(ok).is_ok());
            // A deadline of now + u64::MAX seconds overflowed (a panic, mid-deploy).
            let huge = [
                "sealpush",
                "status",
                "--host",
                "h",
                "--target",
                "/t",
                flag,
                "18446744073709551615",
            ];
            let err = Cli::try_parse_from(huge).unwrap_err().to_string();
            assert!(err.contains("604800"), "{err}");
        }
    }

    /// Every form of destination ssh takes still passes `--host`'s check (which refuses only
    /// what cannot name a host: tests/cli `a_host_that_names_no_host_is_refused_before_connecting`).
    #[test]
    fn host_accepts_every_ssh_destination_form() {
        for host in [
            "local",
            "local:",
            "contabo",
            "root@203.0.113.5",
            "root@::1",
            "ssh://contabo",
            "ssh://deploy@host:2222",
            "SSH://deploy@host:2222",
            "ssh://deploy@host/",
            "ssh://[::1]:22",
            "ssh://[::1]",
            "ssh://a@b@host:65535",
        ] {
            let args = ["sealpush", "status", "--target", "/t", "--host", host];
            let parsed = Cli::try_parse_from(args);
            assert!(parsed.is_ok(), "{host}: {}", parsed.unwrap_err());
        }
    }
}
