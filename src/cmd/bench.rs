//! `sealpush bench`: what sealpush buys on your own tree. Runs the shell recipe and sealpush's
//! hasher alternately on the same paths, checks that every digest agrees (a disagreement is an
//! error, exit 1), and reports times, rates, the median speedup and how close sealpush came to
//! this machine's SHA-256 ceiling.
//!
//! sealpush's side runs in-process (the same library call `sealpush hash` makes), so its times
//! exclude process start-up (about a millisecond); the recipe's include bash and its four
//! processes, as a user would pay them.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sealpush::progress::NoProgress;
use sealpush::tree::{self, hasher, Collation, RecipeError, RecipeOptions};

use super::hash::{human_bytes, thousands};
use super::{CheckFailed, Exit, Globals};

/// Time `sealpush hash` against the shell recipe on your own tree.
#[derive(clap::Args, Debug)]
#[command(after_long_help = HELP)]
pub struct Args {
    /// Paths to hash, as you would give them to find.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<OsString>,
    /// Timed pairs (recipe + sealpush) after the warm-up.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// sealpush worker threads, 1 to 1024 (default: all cores, or RAYON_NUM_THREADS).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=super::MAX_THREADS))]
    pub threads: Option<u32>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

// The one-line about is the doc comment on `Args`; the teaching text lives here.
const HELP: &str = "\
Both run in this directory with this environment, alternately (recipe, sealpush, recipe, ...), \
after one untimed warm-up of each, so both see the same page cache. Every digest must agree; a \
disagreement is an error (exit 1), never a footnote.

sealpush's side runs in-process (the library call `sealpush hash` makes, without process \
start-up); the recipe runs under `bash -c` with its four processes, as you would run it. The \
report ends with this machine's SHA-256 ceiling (single-core throughput measured here, times the \
threads used) and how close sealpush came to it.

Example:
  sealpush bench --runs 7 iu-cutter";

/// How long to hash in-memory data to measure single-core SHA-256 throughput.
const CEILING_SAMPLE: Duration = Duration::from_millis(700);

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<Exit> {
    let opts = RecipeOptions {
        threads: args.threads.map(|n| n as usize),
        collation: Collation::from_env(),
    };
    let threads = match opts.threads {
        Some(n) => n,
        None => rayon::current_num_threads(),
    };
    // A missing PATH is hashed as nothing by both sides, in no time: a speedup of that
    // measures process start-up, not hashing.
    for p in &args.paths {
        std::fs::symlink_metadata(p).with_context(|| {
            format!("{}: nothing to measure", std::path::Path::new(p).display())
        })?;
    }
    let script = recipe_script(&args.paths);

    globals.note("measuring single-core SHA-256 throughput");
    let ceiling_one = hasher::sha256_ceiling(CEILING_SAMPLE);

    globals.note("warm-up (untimed)");
    let (want, _) = run_recipe(&script)?;
    let first = run_sealpush(&args.paths, &opts)?;
    check(&want, &first.0, "warm-up")?;
    let (files, bytes) = (first.1.files, first.1.bytes);

    let mut recipe_t = Vec::new();
    let mut ours_t = Vec::new();
    for i in 1..=args.runs {
        let (d, t) = run_recipe(&script)?;
        check(&want, &d, &format!("run {i} (recipe)"))?;
        let start = Instant::now();
        let (d2, _) = run_sealpush(&args.paths, &opts)?;
        let t2 = start.elapsed();
        check(&want, &d2, &format!("run {i} (sealpush)"))?;
        globals.note(format!(
            "run {i}: recipe {:.3}s, sealpush {:.3}s ({:.1}x)",
            t.as_secs_f64(),
            t2.as_secs_f64(),
            t.as_secs_f64() / t2.as_secs_f64()
        ));
        recipe_t.push(t);
        ours_t.push(t2);
    }

    let ratios: Vec<f64> = recipe_t
        .iter()
        .zip(&ours_t)
        .map(|(r, o)| r.as_secs_f64() / o.as_secs_f64())
        .collect();
    let speedup = median(&ratios);
    let (r_med, o_med) = (median_d(&recipe_t), median_d(&ours_t));
    let ceiling = ceiling_one * threads as f64;
    let ours_rate = bytes as f64 / o_med;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "digest": want,
            "files": files,
            "bytes": bytes,
            "locale": opts.collation.name(),
            "threads": threads,
            "sealpush_mode": "in-process",
            "recipe_seconds": recipe_t.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(),
            "sealpush_seconds": ours_t.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(),
            "median_recipe_seconds": r_med,
            "median_sealpush_seconds": o_med,
            "median_speedup": speedup,
            "sha256_single_core_bytes_per_second": ceiling_one,
            "sha256_ceiling_bytes_per_second": ceiling,
            "fraction_of_ceiling": ours_rate / ceiling,
        });
        writeln!(stdout, "{v}")?;
    } else {
        writeln!(
            stdout,
            "tree: {} files, {} (digest {want})",
            thousands(files),
            human_bytes(bytes)
        )?;
        for (i, (r, o)) in recipe_t.iter().zip(&ours_t).enumerate() {
            writeln!(
                stdout,
                "run {}: recipe {:>8.3}s {:>9} {:>12}   sealpush {:>8.3}s {:>9} {:>12}   {:>6.1}x",
                i + 1,
                r.as_secs_f64(),
                rate(bytes, r.as_secs_f64()),
                per_sec(files, r.as_secs_f64()),
                o.as_secs_f64(),
                rate(bytes, o.as_secs_f64()),
                per_sec(files, o.as_secs_f64()),
                r.as_secs_f64() / o.as_secs_f64()
            )?;
        }
        writeln!(
            stdout,
            "median: recipe {r_med:.3}s, sealpush {o_med:.3}s (in-process, {threads} threads)"
        )?;
        writeln!(
            stdout,
            "SHA-256 ceiling: {} per core x {threads} = {}; sealpush reached {} ({:.0}% of it)",
            rate(1, 1.0 / ceiling_one),
            rate(1, 1.0 / ceiling),
            rate(bytes, o_med),
            100.0 * ours_rate / ceiling
        )?;
        writeln!(stdout, "median speedup vs recipe: {speedup:.1}x")?;
    }
    Ok(Exit::Ok)
}

fn check(want: &str, got: &str, what: &str) -> anyhow::Result<()> {
    if want != got {
        return Err(CheckFailed(format!(
            "digests disagree at {what}: recipe {want}, sealpush {got}; run `sealpush hash --lines` \
             and the recipe without the last `| sha256sum` and diff them"
        ))
        .into());
    }
    Ok(())
}

/// The recipe as bash would be given it, each PATH single-quoted.
fn recipe_script(paths: &[OsString]) -> OsString {
    let mut s = b"find".to_vec();
    for p in paths {
        s.extend_from_slice(b" '");
        for &b in p.as_bytes() {
            if b == b'\'' {
                s.extend_from_slice(b"'\\''");
            } else {
                s.push(b);
            }
        }
        s.push(b'\'');
    }
    s.extend_from_slice(b" -type f | sort | xargs sha256sum | sha256sum");
    OsString::from_vec(s)
}

fn run_recipe(script: &OsStr) -> anyhow::Result<(String, Duration)> {
    let start = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running the recipe with bash")?;
    let t = start.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let digest = text.get(..64).unwrap_or("").to_string();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("the recipe printed no digest (stdout: {text:?})");
    }
    Ok((digest, t))
}

fn run_sealpush(
    paths: &[OsString],
    opts: &RecipeOptions,
) -> anyhow::Result<(String, tree::RecipeOutput)> {
    match tree::recipe_local(paths, opts, &NoProgress) {
        Ok(out) => Ok((out.digest.to_hex(), out)),
        Err(e @ (RecipeError::Break { .. } | RecipeError::Refuse { .. })) => {
            Err(CheckFailed(e.to_string()).into())
        }
        Err(e) => Err(e).context("hashing the tree"),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn median_d(v: &[Duration]) -> f64 {
    median(&v.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>())
}

fn rate(bytes: u64, secs: f64) -> String {
    format!("{:.0} MB/s", bytes as f64 / secs / 1e6)
}

fn per_sec(files: u64, secs: f64) -> String {
    format!("{} files/s", thousands((files as f64 / secs) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_script_quotes_every_path() {
        let s = recipe_script(&[OsString::from("a b"), OsString::from("it's")]);
        assert_eq!(
            s,
            OsString::from("find 'a b' 'it'\\''s' -type f | sort | xargs sha256sum | sha256sum")
        );
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
