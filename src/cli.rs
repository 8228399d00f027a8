//! Command-line grammar (clap derive only). Each command's arguments live beside its code in
//! `cmd/`, so this file is the table of contents.

use clap::{Parser, Subcommand};

use crate::cmd;

/// sealpush: content-addressed artifacts, pushed verifiably.
///
/// Hash a tree exactly as `find DIR -type f | sort | xargs sha256sum | sha256sum` would (only
/// faster), pack it into a reproducible archive, survey a host read-only, deploy side by side
/// with an atomic promote, prove the old version untouched, and roll back.
///
/// Exit status: 0 ok; 1 a check failed (verdict FAIL, digest mismatch, a tree the recipe
/// cannot hash); 2 usage or I/O error; 130 interrupted.
#[derive(Parser, Debug)]
#[command(name = "sealpush", version, about, long_about, max_term_width = 100)]
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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tree hash, byte-identical to `find PATH... -type f | sort | xargs sha256sum | sha256sum`.
    Hash(cmd::hash::Args),
    /// Content-addressed manifest of a tree (files, exec bits, symlinks, directories).
    Manifest(cmd::manifest::Args),
    /// Time `sealpush hash` against the shell recipe on your own tree.
    Bench(cmd::bench::Args),
    /// Pack a tree into a reproducible tar.zst / tar.gz artifact in the local store.
    Pack(cmd::pack::Args),
    /// Safely unpack an artifact into a new directory.
    Unpack(cmd::unpack::Args),
    /// Re-hash an artifact and its content against its manifest.
    Verify(cmd::verify::Args),
    /// Look inside and maintain the local artifact store.
    Store(cmd::store::Args),
    /// Read-only survey of a host; writes a locked deploy plan with its rollback.
    Preflight(cmd::preflight::Args),
    /// Execute a locked plan: push, verify, stage, promote, prove.
    Deploy(cmd::deploy::Args),
    /// Remove exactly what a deploy created, and re-prove the anchor.
    Rollback(cmd::rollback::Args),
    /// Re-verify a deployed target against its receipt and deploy manifest.
    Status(cmd::status::Args),
    /// The whole flow on the bundled fixtures, on this machine (no server needed).
    Demo(cmd::demo::Args),
}
