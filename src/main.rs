//! The `sealpush` binary: parse, dispatch, map the outcome to an exit status.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let globals = cmd::Globals {
        quiet: cli.quiet,
        no_progress: cli.no_progress,
    };
    let result = match cli.command {
        cli::Command::Hash(a) => cmd::hash::run(a, &globals),
        cli::Command::Manifest(a) => cmd::manifest::run(a, &globals),
        cli::Command::Bench(a) => cmd::bench::run(a, &globals),
        cli::Command::Pack(a) => cmd::pack::run(a, &globals),
        cli::Command::Unpack(a) => cmd::unpack::run(a, &globals),
        cli::Command::Verify(a) => cmd::verify::run(a, &globals),
        cli::Command::Store(a) => cmd::store::run(a, &globals),
        cli::Command::Preflight(a) => cmd::preflight::run(a, &globals),
        cli::Command::Deploy(a) => cmd::deploy::run(a, &globals),
        cli::Command::Rollback(a) => cmd::rollback::run(a, &globals),
        cli::Command::Status(a) => cmd::status::run(a, &globals),
        cli::Command::Demo(a) => cmd::demo::run(a, &globals),
    };
    cmd::exit_status(result)
}
