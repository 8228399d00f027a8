//! `sealpush hash`: the recipe's tree hash, its lines, or a JSON summary.
//!
//! stdout carries exactly one of: the final `sha256sum` line (`HEX  -`), the pipeline's lines
//! (`--lines`), or JSON (`--json`). Everything the pipeline would print on stderr (find's errors,
//! sha256sum's complaints) and sealpush's own notes go to stderr.

use std::ffi::OsString;
use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use sealpush::tree::{self, Collation, RecipeError, RecipeOptions};

use super::{CheckFailed, Exit, Globals};

/// Tree hash, byte-identical to `find PATH... -type f | sort | xargs sha256sum | sha256sum`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// Paths to walk, spelled as you would give them to find (default: `.`).
    #[arg(value_name = "PATH")]
    pub paths: Vec<OsString>,
    /// Print the lines of `find PATH... -type f | sort | xargs sha256sum` instead of their
    /// digest, byte for byte.
    #[arg(long, conflicts_with = "json")]
    pub lines: bool,
    /// Print `{"digest", "files", "bytes", "skipped": [{"path", "reason"}], "warnings": [what
    /// is printed on stderr: find's and sha256sum's errors, and sealpush's notes], "locale"}`.
    #[arg(long)]
    pub json: bool,
    /// Worker threads for walking and hashing, 1 to 1024 (default: all cores, or
    /// RAYON_NUM_THREADS).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=super::MAX_THREADS))]
    pub threads: Option<u32>,
}

// The one-line about is the doc comment on `Args`; the teaching text lives here.
const HELP: &str = "\
Run it where you would run the recipe: same working directory, same PATH spelling (`d`, `./d` \
and `d/` give different lines, as with find), same locale (LC_ALL, then LC_COLLATE, then LANG \
decide the sort order, exactly as for `sort`; `LC_ALL=C` for byte order).

Names the pipeline splits or rewrites (blanks, quotes, backslashes, newlines) are hashed the way \
the pipeline hashes them, with a warning on stderr; pieces that name nothing are skipped with \
sha256sum's own complaint, as the pipeline does (exit 0).

Where the pipeline would abort (an unmatched quote, an argument longer than xargs takes: \
131,061 bytes, less under a small stack limit or a huge environment), hang (a piece \
naming a FIFO or device) or depend on sha256sum reading a piece of a name as an option \
(`a -b`), sealpush prints no digest, names the file and exits 1. So it does for a PATH that \
find would read as part of its expression instead (`!`, `(`, `-name`): spell it `./!`.

Examples:
  # the digest `find iu-cutter -type f | sort | xargs sha256sum | sha256sum` prints:
  sealpush hash iu-cutter
  # the lines before the last sha256sum, in byte order:
  LC_ALL=C sealpush hash --lines src
  # digest, counts and skipped names for scripts, on two threads:
  sealpush hash --json -j 2 .";

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    let opts = RecipeOptions {
        threads: args.threads.map(|n| n as usize),
        collation: Collation::from_env(),
    };
    let start = Instant::now();
    let progress = globals.progress();
    let out = match tree::recipe_local(&args.paths, &opts, progress.as_ref()) {
        Ok(out) => out,
        Err(e @ (RecipeError::Break { .. } | RecipeError::Refuse { .. })) => {
            return Err(CheckFailed(e.to_string()).into())
        }
        Err(e) => return Err(e).context("hashing the tree"),
    };
    let elapsed = start.elapsed();
    // Warnings are the pipeline's own stderr; they are printed even with -q, as the pipeline
    // would print them.
    for w in &out.warnings {
        eprintln!("{w}");
    }
    let mut stdout = std::io::stdout().lock();
    if args.lines {
        stdout.write_all(&out.lines)?;
    } else if args.json {
        let skipped: Vec<_> = out
            .skipped
            .iter()
            .map(|s| serde_json::json!({ "path": tree::show(&s.path), "reason": s.reason }))
            .collect();
        let v = serde_json::json!({
            "digest": out.digest.to_hex(),
            "files": out.files,
            "bytes": out.bytes,
            "skipped": skipped,
            "warnings": out.warnings,
            "locale": opts.collation.name(),
        });
        writeln!(stdout, "{v}")?;
    } else {
        writeln!(stdout, "{}  -", out.digest)?;
    }
    stdout.flush()?;
    globals.note(format!(
        "hashed {} files ({}) in {:.2}s",
        thousands(out.files),
        human_bytes(out.bytes),
        elapsed.as_secs_f64()
    ));
    Ok(Exit::Ok)
}

/// `1204` -> `1,204`, as cargo prints counts.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Binary units with one decimal: `38.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sizes_read_like_cargo() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(40_055_603), "38.2 MiB");
    }
}
