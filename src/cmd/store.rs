//! `sealpush store`: look inside and maintain the local artifact store.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sealpush::store::{Store, StoredArtifact};

use super::verify::chain;
use super::{CheckFailed, Exit, Globals};

const HELP: &str = "Exit status: 0 ok; 1 `verify` found a damaged artifact; 2 could not run.

Examples:
  sealpush store list
  sealpush store show iu-cutter-v0.6 --json
  sealpush store verify
  sealpush store gc --dry-run";

/// Look inside and maintain the local artifact store.
///
/// Layout (see store-layout.md): STORE/artifacts/<id>/{archive.tar.zst|archive.tar.gz,
/// manifest.txt, meta.json}, where <id> is <tree identity>-<name>.l<level>.<format>, and
/// STORE/tmp/ for packs in progress.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// Store directory (default: $XDG_DATA_HOME/sealpush/store or ~/.local/share/sealpush/store).
    #[arg(long, env = "SEALPUSH_STORE", value_name = "DIR", global = true)]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// One line per artifact: id, name, format, files, unpacked and archive bytes.
    List {
        /// Print a JSON array of the artifacts' metadata (refused for a store path that is not
        /// UTF-8).
        #[arg(long)]
        json: bool,
    },
    /// An artifact's metadata and paths (or its manifest).
    Show {
        /// A store id, an unambiguous id prefix (4 characters or more), an artifact
        /// name, or a path to an archive.
        #[arg(value_name = "REF")]
        reference: String,
        /// Print the canonical manifest instead.
        #[arg(long, conflicts_with = "json")]
        manifest: bool,
        /// Print JSON (refused for an archive path that is not UTF-8).
        #[arg(long)]
        json: bool,
    },
    /// Re-hash one artifact, or every artifact, against its metadata and manifest (exit 1 if
    /// any fails).
    Verify {
        /// A store id, prefix or name, or a path to an archive (default: every artifact).
        #[arg(value_name = "REF")]
        reference: Option<String>,
    },
    /// Remove temp leftovers older than 10 minutes, anything that is not part of the layout, and
    /// artifacts whose parts are missing or disagree with each other. Archives are not re-hashed
    /// (that is `verify`), and nothing else is removed: the store does not know which artifacts
    /// are still in use, so it never removes a sound one.
    Gc {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    let store = Store::open_for_reading(args.store.as_deref()).context("opening the store")?;
    let mut out = std::io::stdout().lock();
    match args.command {
        StoreCommand::List { json } => {
            if json {
                super::json_path("the store", store.root())?;
            }
            let mut metas = Vec::new();
            let all = store.list()?;
            if all.is_empty() {
                // An empty listing looks the same as a wrong --store or SEALPUSH_STORE.
                let what = if store.root().exists() {
                    "no artifacts in"
                } else {
                    "no store at"
                };
                globals.note(format_args!(
                    "{what} {} (pack one with `sealpush pack DIR`, or give the store \
                     with --store)",
                    store.root().display()
                ));
            }
            for (id, a) in all {
                match a {
                    Ok(a) => {
                        if json {
                            let archive = super::json_path("the archive", &a.archive)?;
                            metas.push(
                                serde_json::json!({"id": id, "archive": archive, "meta": a.meta}),
                            );
                        } else {
                            let m = &a.meta;
                            writeln!(
                                out,
                                "{id}\t{}\t{}\t{} files\t{} bytes\t{} archive bytes",
                                m.name, m.format, m.files, m.unpacked_bytes, m.archive_size
                            )?;
                        }
                    }
                    Err(e) if e.is_damage() => globals.note(format_args!(
                        "broken artifact {id}: {} (see `sealpush store gc`)",
                        chain(&e)
                    )),
                    Err(e) => {
                        globals.note(format_args!("cannot read artifact {id}: {}", chain(&e)))
                    }
                }
            }
            if json {
                writeln!(out, "{}", serde_json::Value::Array(metas))?;
            }
        }
        StoreCommand::Show {
            reference,
            manifest,
            json,
        } => {
            let a = store
                .resolve(&reference)
                .with_context(|| format!("finding artifact {reference}"))?;
            if manifest {
                out.write_all(&a.manifest.encode())?;
            } else if json {
                let archive = super::json_path("the archive", &a.archive)?;
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": a.id, "archive": archive, "meta": a.meta})
                )?;
            } else {
                show(&mut out, &a)?;
            }
        }
        StoreCommand::Verify { reference } => {
            let targets: Vec<(String, Result<StoredArtifact, _>)> = match reference {
                // A REF that names no artifact (none, several, not an archive) is a usage
                // error (exit 2), not a failed verification: nothing was verified.
                Some(r) => match store.resolve(&r) {
                    Err(e) if !e.is_damage() && !e.is_check_failure() => {
                        return Err(e).with_context(|| format!("finding artifact {r}"));
                    }
                    found => vec![(r.clone(), found)],
                },
                None => store.list()?,
            };
            let progress = globals.progress();
            let mut failed = Vec::new();
            for (label, a) in targets {
                let result = a.and_then(|a| Store::verify_reporting(&a, progress.as_ref()));
                match result {
                    Ok(unchecked) => {
                        writeln!(out, "ok\t{label}")?;
                        for u in unchecked {
                            globals.note(format_args!("{label}: {u}"));
                        }
                    }
                    Err(e) => {
                        writeln!(out, "FAILED\t{label}\t{}", chain(&e))?;
                        failed.push(label);
                    }
                }
            }
            if !failed.is_empty() {
                return Err(CheckFailed(format!(
                    "{} artifact(s) failed verification: {}",
                    failed.len(),
                    failed.join(", ")
                ))
                .into());
            }
        }
        StoreCommand::Gc { dry_run } => {
            let items = store.gc(dry_run).context(
                "gc stopped at an error that does not show an artifact damaged; nothing more \
                 was removed (fix its cause and run gc again)",
            )?;
            for it in &items {
                writeln!(out, "{}\t{}", it.path.display(), it.reason)?;
            }
            globals.note(format_args!(
                "{} {} item(s)",
                if dry_run { "would remove" } else { "removed" },
                items.len()
            ));
        }
    }
    out.flush()?;
    Ok(Exit::Ok)
}

fn show(out: &mut impl Write, a: &StoredArtifact) -> std::io::Result<()> {
    let m = &a.meta;
    writeln!(
        out,
        "id: {}",
        a.id.as_deref().unwrap_or("(not in the store)")
    )?;
    writeln!(out, "name: {}", m.name)?;
    writeln!(out, "archive: {}", a.archive.display())?;
    writeln!(out, "format: {}", m.format)?;
    if let Some(l) = m.level {
        writeln!(out, "level: {l}")?;
    }
    writeln!(out, "archive-sha256: {}", m.archive_sha256)?;
    writeln!(out, "archive-size: {}", m.archive_size)?;
    writeln!(out, "tree-identity: {}", m.tree_identity)?;
    match (&m.recipe_digest, &m.recipe_locale) {
        (Some(d), Some(l)) => writeln!(out, "recipe-digest: {d} ({l})")?,
        _ => writeln!(out, "recipe-digest: none")?,
    }
    writeln!(out, "files: {}", m.files)?;
    writeln!(out, "unpacked-bytes: {}", m.unpacked_bytes)?;
    if !m.tool_version.is_empty() {
        writeln!(out, "tool-version: {}", m.tool_version)?;
    }
    Ok(())
}
