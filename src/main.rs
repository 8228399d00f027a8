//! The `sealpush` binary: parse, dispatch, map the outcome to an exit status.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_allocator();
    let cli = cli::Cli::parse();
    if let Err(msg) = cmd::check_rayon_threads(std::env::var_os("RAYON_NUM_THREADS").as_deref()) {
        eprintln!("sealpush: error: {msg}");
        return ExitCode::from(cmd::Exit::Error as u8);
    }
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

/// Keeps freed buffers in the process. glibc's defaults hand a freed block above its (adaptive)
/// mmap threshold back to the kernel, and trim the heap top above 128 KiB, so the pack's 1 MiB
/// tar chunks, its per-file reads and the transports' 255 KiB requests are mapped and
/// zero-filled again and again: half of a `pack`'s page faults, 3% of its CPU on `small`. Fixed
/// thresholds (32 MiB, 64 MiB) keep them; peak memory is unchanged.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
