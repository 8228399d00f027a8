//! The recipe-exact tree hash: `find PATH... -type f | sort | xargs sha256sum | sha256sum`,
//! computed in-process, in parallel, with the pipeline's exact output.
//!
//! Each stage of the pipeline is one module, transcribing the rules of
//! `../shared/recipe-semantics.md`: [`walk`] (find), [`collate`] (sort), [`xargs`] (tokenizer and
//! batches), [`sha256sum`] (lines, escaping, refusals); [`hasher`] only chooses how to read a
//! local file. This module chains them over a [`TreeSource`] (this machine, or a host over SFTP).
//!
//! Guarantees: wherever the pipeline runs to completion, [`RecipeOutput::lines`] is byte for byte
//! its output and [`RecipeOutput::digest`] the final sha256sum's digest; the output order is the
//! pipeline's, never thread timing; memory grows with the number of names, not with the bytes
//! hashed. Where the pipeline would abort or hang, or where its result would depend on
//! sha256sum parsing a piece of a name as an option, the result is a [`RecipeError`] instead.

pub mod collate;
pub mod hasher;
pub mod sha256sum;
pub mod walk;
pub mod xargs;

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use rayon::prelude::*;

pub use crate::remote::FileKind;
pub use collate::Collation;
pub use hasher::hash_file;

use crate::digest::Digest;
use crate::progress::{NoProgress, Progress};

/// Trees with at least this many files report progress from the start...
pub const PROGRESS_MIN_FILES: u64 = 2_000;
/// ...smaller ones only once this many bytes are hashed (a few large files); tiny trees finish
/// before a bar would be worth drawing.
pub const PROGRESS_MIN_BYTES: u64 = 256 << 20;

/// sha256sum cannot open a path of this many bytes or more (ENAMETOOLONG); find lists them.
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// Forwards the hashing phase to the caller's [`Progress`] only once the work proves large.
struct Deferred<'a> {
    inner: &'a dyn Progress,
    /// Files to hash, when known before hashing starts.
    items: Option<u64>,
    bytes_done: AtomicU64,
    items_done: AtomicU64,
    started: Once,
}

impl<'a> Deferred<'a> {
    fn new(inner: &'a dyn Progress, items: Option<u64>) -> Deferred<'a> {
        let d = Deferred {
            inner,
            items,
            bytes_done: AtomicU64::new(0),
            items_done: AtomicU64::new(0),
            started: Once::new(),
        };
        if items.is_some_and(|n| n >= PROGRESS_MIN_FILES) {
            d.started.call_once(|| inner.start("hashing", None, items));
        }
        d
    }
}

impl Progress for Deferred<'_> {
    fn advance(&self, bytes: u64, items: u64) {
        if self.started.is_completed() {
            self.inner.advance(bytes, items);
            return;
        }
        let b = self.bytes_done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let i = self.items_done.fetch_add(items, Ordering::Relaxed) + items;
        if b >= PROGRESS_MIN_BYTES || (self.items.is_none() && i >= PROGRESS_MIN_FILES) {
            let mut ran = false;
            self.started.call_once(|| {
                ran = true;
                self.inner.start("hashing", None, self.items);
                self.inner.advance(b, i);
            });
            if !ran {
                // Another worker started the bar; its snapshot may miss this advance (the
                // count is cosmetic either way).
                self.inner.advance(bytes, items);
            }
        }
    }

    fn finish(&self) {
        if self.started.is_completed() {
            self.inner.finish();
        }
    }
}

/// How to run the recipe.
#[derive(Clone, Debug)]
pub struct RecipeOptions {
    /// Worker threads; `None` = rayon's global pool (all cores, or `RAYON_NUM_THREADS`).
    pub threads: Option<usize>,
    /// The order `sort` would use.
    pub collation: Collation,
}

impl Default for RecipeOptions {
    /// All cores, the collation of this process's environment (as `sort` would read it).
    fn default() -> Self {
        RecipeOptions {
            threads: None,
            collation: Collation::from_env(),
        }
    }
}

/// An argument sha256sum could not read: no line in the output, a warning on stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The argument as sha256sum received it.
    pub path: Vec<u8>,
    /// strerror text: "No such file or directory", "Is a directory", ...
    pub reason: String,
}

/// The pipeline's result.
#[derive(Clone, Debug)]
pub struct RecipeOutput {
    /// sha256 of `lines`: the recipe's tree hash.
    pub digest: Digest,
    /// Exactly the bytes of `find|sort|xargs sha256sum`.
    pub lines: Vec<u8>,
    /// Arguments hashed.
    pub files: u64,
    /// Bytes read while hashing them.
    pub bytes: u64,
    /// Arguments sha256sum would complain about (their lines are missing, as in the pipeline).
    pub skipped: Vec<Skipped>,
    /// stderr material: find's errors, sha256sum's complaints, names xargs rewrites.
    pub warnings: Vec<String>,
}

/// Why there is no tree hash.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// xargs would abort part-way (unmatched quote, over-long argument); the pipeline's partial
    /// output is not a tree hash.
    #[error("the recipe breaks at {}: {reason}", show(.path))]
    Break { path: Vec<u8>, reason: String },
    /// The pipeline would hang (a FIFO or device) or its output would depend on sha256sum
    /// reading a piece of a name as an option.
    #[error("refusing to hash {}: {reason}", show(.path))]
    Refuse { path: Vec<u8>, reason: String },
    /// The tree could not be read at all.
    #[error("cannot open {}", .path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    /// The requested worker pool could not be started.
    #[error("cannot start {threads} worker threads")]
    Threads {
        threads: usize,
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
}

/// A filesystem the recipe can run on: this machine, or a remote host over SFTP (implemented by
/// the `remote` helper in src/preflight.rs). Paths are raw bytes exactly as the pipeline would
/// spell them, relative paths resolved against the source's working directory.
pub trait TreeSource: Sync {
    fn lstat_kind(&self, path: &[u8]) -> io::Result<FileKind>;
    /// Entries in readdir order (name, lstat kind); no "." or "..".
    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<(Vec<u8>, FileKind)>>;
    /// Kind following symlinks (sha256sum's fopen view: FIFO refusal, EISDIR).
    fn stat_kind(&self, path: &[u8]) -> io::Result<FileKind>;
    /// sha256 and size of each path, in order; errors as io::Error with the raw errno
    /// (ENOENT, EISDIR, ENAMETOOLONG, EACCES) so the messages match sha256sum's.
    fn hash_files(
        &self,
        paths: &[&[u8]],
        progress: &dyn Progress,
    ) -> Vec<io::Result<(Digest, u64)>>;
}

/// This machine's filesystem, with relative paths resolved against a directory (the process's
/// working directory, or one opened with [`LocalSource::at`], like `cd DIR` before the recipe).
pub struct LocalSource {
    base: Option<OwnedFd>,
}

impl LocalSource {
    /// Relative paths resolve against the process's working directory.
    pub fn cwd() -> LocalSource {
        LocalSource { base: None }
    }

    /// Relative paths resolve against `dir`, as after `cd dir`.
    pub fn at(dir: &Path) -> io::Result<LocalSource> {
        let c = walk::cstring(dir.as_os_str().as_bytes())?;
        Ok(LocalSource {
            base: Some(walk::open_dir_at(libc::AT_FDCWD, &c)?),
        })
    }

    fn fd(&self) -> RawFd {
        self.base.as_ref().map_or(libc::AT_FDCWD, |f| f.as_raw_fd())
    }
}

impl TreeSource for LocalSource {
    fn lstat_kind(&self, path: &[u8]) -> io::Result<FileKind> {
        walk::stat_kind_at(self.fd(), &walk::cstring(path)?, false)
    }

    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<(Vec<u8>, FileKind)>> {
        let dir = walk::open_dir_at(self.fd(), &walk::cstring(path)?)?;
        Ok(walk::read_entries(&dir)?
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect())
    }

    fn stat_kind(&self, path: &[u8]) -> io::Result<FileKind> {
        walk::stat_kind_at(self.fd(), &walk::cstring(path)?, true)
    }

    fn hash_files(
        &self,
        paths: &[&[u8]],
        progress: &dyn Progress,
    ) -> Vec<io::Result<(Digest, u64)>> {
        hash_local(self.fd(), paths, progress)
            .into_iter()
            .map(|r| match r {
                Ok(hasher::Opened::Hashed(d, n)) => Ok((d, n)),
                Ok(hasher::Opened::Special(k)) => Err(io::Error::other(format!(
                    "a {} is not a regular file",
                    k.noun()
                ))),
                Err(e) => Err(e),
            })
            .collect()
    }
}

fn hash_local(
    base: RawFd,
    paths: &[&[u8]],
    progress: &dyn Progress,
) -> Vec<io::Result<hasher::Opened>> {
    paths
        .par_iter()
        .map(|p| {
            let r = walk::cstring(p).and_then(|c| hasher::hash_at(base, &c));
            if let Ok(hasher::Opened::Hashed(_, n)) = &r {
                progress.advance(*n, 1);
            }
            r
        })
        .collect()
}

/// The generic pipeline over any source (used for remote anchors).
pub fn recipe_with<S: TreeSource>(
    src: &S,
    paths: &[Vec<u8>],
    opts: &RecipeOptions,
    progress: &dyn Progress,
) -> Result<RecipeOutput, RecipeError> {
    in_pool(opts.threads, || {
        let roots = find_paths(paths.to_vec())?;
        let walked = walk::walk_source(src, &roots);
        run(walked, opts, progress, &Hashing::Source(src))
    })
}

/// The fast local pipeline (cwd = process cwd), same result as `recipe_with(LocalSource, ..)`.
pub fn recipe_local(
    paths: &[OsString],
    opts: &RecipeOptions,
    progress: &dyn Progress,
) -> Result<RecipeOutput, RecipeError> {
    let roots: Vec<Vec<u8>> = paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    local_at(libc::AT_FDCWD, roots, opts, progress)
}

/// Convenience: recipe digest of one directory as `cd parent && find NAME -type f | sort | ...`.
pub fn recipe_digest_of_dir(dir: &Path, opts: &RecipeOptions) -> Result<RecipeOutput, RecipeError> {
    let io_err = |source| RecipeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    // `a/..` or `/` have no name to cd out of: resolve them first.
    let dir = match dir.file_name() {
        Some(_) => dir.to_path_buf(),
        None => std::fs::canonicalize(dir).map_err(io_err)?,
    };
    let (parent, name) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => (Path::new("/"), std::ffi::OsStr::new(".")),
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let src = LocalSource::at(parent).map_err(io_err)?;
    local_at(src.fd(), vec![name.as_bytes().to_vec()], opts, &NoProgress)
}

fn local_at(
    base: RawFd,
    roots: Vec<Vec<u8>>,
    opts: &RecipeOptions,
    progress: &dyn Progress,
) -> Result<RecipeOutput, RecipeError> {
    in_pool(opts.threads, || {
        let roots = find_paths(roots)?;
        // Hash while walking: no second path lookup per file, and the walk overlaps the I/O.
        let deferred = Deferred::new(progress, None);
        let walked = walk::walk_local(base, &roots, Some(&deferred));
        let result = run(
            walked,
            opts,
            &deferred,
            &Hashing::<LocalSource>::Local(base),
        );
        // Also after Break/Refuse: never leave a bar drawn above the error.
        deferred.finish();
        result
    })
}

/// `find` with no PATH walks `.`.
/// The paths find reads from `roots`, `.` when there are none. An argument that is `(` or `!`,
/// or a `-` followed by anything, is where find's expression begins (findutils'
/// `looks_like_expression`): the recipe would then run another command (`find ! -type f`
/// lists everything but regular files), so that is refused rather than hashed as a path.
fn find_paths(mut roots: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, RecipeError> {
    let expression = |r: &[u8]| matches!(r, b"(" | b"!") || (r.len() > 1 && r[0] == b'-');
    if let Some(r) = roots.iter().find(|r| expression(r)) {
        return Err(RecipeError::Refuse {
            path: r.clone(),
            reason: "find reads an argument that is `(`, `!` or starts with `-` as the start of \
                     its expression, not as a path, so the recipe would run another command \
                     (`./NAME` is read as a path)"
                .into(),
        });
    }
    if roots.is_empty() {
        roots.push(b".".to_vec());
    }
    Ok(roots)
}

fn in_pool<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T, RecipeError> + Send,
) -> Result<T, RecipeError> {
    match threads {
        None => f(),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|source| RecipeError::Threads { threads: n, source })?;
            pool.install(f)
        }
    }
}

/// How the hashing stage reads files.
enum Hashing<'a, S: TreeSource + ?Sized> {
    /// Through the source's own (possibly remote, pipelined) operations.
    Source(&'a S),
    /// Directly on this machine, relative to a directory descriptor.
    Local(RawFd),
}

/// Stages 2–4 and the final sha256sum, after find.
fn run<S: TreeSource + ?Sized>(
    walked: walk::WalkOut,
    opts: &RecipeOptions,
    progress: &dyn Progress,
    hashing: &Hashing<'_, S>,
) -> Result<RecipeOutput, RecipeError> {
    let walk::WalkOut {
        files: paths,
        mut warnings,
        hashes,
    } = walked;
    // Hashes the local walk took on the way, by path index (consumed at most once: a path
    // without a newline is one line, hence at most one exact token).
    let mut pre: Vec<Option<io::Result<hasher::Opened>>> = hashes.into_iter().map(Some).collect();

    // Stage 2: sort sees find's output split at '\n' (S1); each line remembers its file.
    let mut lines: Vec<(&[u8], u32)> = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter().enumerate() {
        lines.extend(p.split(|&b| b == b'\n').map(|piece| (piece, i as u32)));
    }
    collate::sort_by_line(&mut lines, &opts.collation, |l| l.0);
    let line_bytes: Vec<&[u8]> = lines.iter().map(|l| l.0).collect();

    // Stage 3: xargs.
    // xargs' buffer: this process's own when the recipe runs here, the usual 128 KiB on a
    // remote host (whose environment and stack limit sealpush does not see).
    let limits = match hashing {
        Hashing::Local(_) => xargs::Limits::of_this_process(),
        Hashing::Source(_) => xargs::Limits::DEFAULT,
    };
    let tok = xargs::tokenize(&line_bytes, limits);
    drop(line_bytes);
    let path_of_line = |li: usize| -> &[u8] { &paths[lines[li].1 as usize] };
    // A token that is exactly a path find printed names a regular file (find checked it with
    // lstat); anything else is a piece or a rewrite, and needs a look before it is opened.
    let exact: Vec<bool> = tok
        .tokens
        .iter()
        .map(|t| t.is_whole_line() && !path_of_line(t.line).contains(&b'\n'))
        .collect();
    warn_mangled(&paths, &lines, &tok.tokens, &exact, &mut warnings);

    // sha256sum options (H3): refused, never emulated.
    if let Some((i, t)) = tok
        .tokens
        .iter()
        .enumerate()
        .find(|(_, t)| sha256sum::is_option(&t.bytes))
    {
        let starts = xargs::batches(&tok.tokens, limits);
        let batch = starts.partition_point(|&s| s <= i);
        return Err(RecipeError::Refuse {
            path: path_of_line(t.line).to_vec(),
            reason: format!(
                "xargs passes the piece {} to sha256sum (batch {batch}), which would read it as an option; \
                 the recipe's output would depend on option parsing",
                show(&t.bytes)
            ),
        });
    }
    if let Some(brk) = &tok.brk {
        return Err(RecipeError::Break {
            path: path_of_line(brk.line).to_vec(),
            reason: brk.reason(),
        });
    }

    // Stage 4: sha256sum. Pieces that are not find's own paths could name FIFOs or devices
    // (the pipeline would block forever reading them): look first, follow symlinks as fopen does.
    let look: Vec<usize> = (0..tok.tokens.len())
        .filter(|&i| !exact[i] && !sha256sum::is_stdin(&tok.tokens[i].bytes))
        .collect();
    let kinds: Vec<(usize, io::Result<FileKind>)> = look
        .par_iter()
        .map(|&i| {
            let b = &tok.tokens[i].bytes;
            let k = match hashing {
                Hashing::Source(s) => s.stat_kind(b),
                Hashing::Local(fd) => {
                    walk::cstring(b).and_then(|c| walk::stat_kind_at(*fd, &c, true))
                }
            };
            (i, k)
        })
        .collect();
    for (i, k) in kinds {
        if let Ok(kind @ (FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice)) = k {
            return Err(special(
                &tok.tokens[i].bytes,
                kind,
                path_of_line(tok.tokens[i].line),
            ));
        }
    }

    // Which arguments still need reading: all of them for a generic source; for the local
    // walk, only those it could not hash on the way (pieces and rewrites of names, and paths of
    // PATH_MAX bytes or more, which sha256sum cannot open: ENAMETOOLONG).
    let n = tok.tokens.len();
    let mut results: Vec<Option<io::Result<(Digest, u64)>>> = (0..n).map(|_| None).collect();
    let mut need: Vec<usize> = Vec::new();
    for (i, t) in tok.tokens.iter().enumerate() {
        if sha256sum::is_stdin(&t.bytes) {
            continue;
        }
        let early = if exact[i] && t.bytes.len() < PATH_MAX && !pre.is_empty() {
            pre[lines[t.line].1 as usize].take()
        } else {
            None
        };
        match early {
            Some(Ok(hasher::Opened::Hashed(d, n))) => results[i] = Some(Ok((d, n))),
            Some(Ok(hasher::Opened::Special(kind))) => {
                // Became special after find looked (a race): same refusal.
                return Err(special(&t.bytes, kind, &t.bytes));
            }
            Some(Err(e)) => results[i] = Some(Err(e)),
            None => need.push(i),
        }
    }
    let to_hash: Vec<&[u8]> = need.iter().map(|&i| &tok.tokens[i].bytes[..]).collect();
    let deferred;
    let progress: &dyn Progress = if pre.is_empty() {
        deferred = Deferred::new(progress, Some(to_hash.len() as u64));
        &deferred
    } else {
        // The local walk already reported through the caller's (deferred) progress.
        progress
    };
    let fresh: Vec<io::Result<(Digest, u64)>> = match hashing {
        Hashing::Source(s) => s.hash_files(&to_hash, progress),
        Hashing::Local(fd) => {
            let raw = hash_local(*fd, &to_hash, progress);
            let mut out = Vec::with_capacity(raw.len());
            for (r, name) in raw.into_iter().zip(&to_hash) {
                out.push(match r {
                    Ok(hasher::Opened::Hashed(d, n)) => Ok((d, n)),
                    Ok(hasher::Opened::Special(kind)) => {
                        progress.finish();
                        return Err(special(name, kind, name));
                    }
                    Err(e) => Err(e),
                });
            }
            out
        }
    };
    progress.finish();
    for (i, r) in need.into_iter().zip(fresh) {
        results[i] = Some(r);
    }

    // The output, in argument order.
    let mut out = Vec::with_capacity(n * 80);
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut skipped = Vec::new();
    if tok.tokens.is_empty() {
        // X7: xargs runs sha256sum once with no arguments; it hashes /dev/null.
        sha256sum::push_line(&mut out, &sha256sum::EMPTY, b"-");
    }
    for (t, r) in tok.tokens.iter().zip(results) {
        if sha256sum::is_stdin(&t.bytes) {
            sha256sum::push_line(&mut out, &sha256sum::EMPTY, b"-");
            files += 1;
            continue;
        }
        match r {
            Some(Ok((d, n))) => {
                sha256sum::push_line(&mut out, &d, &t.bytes);
                files += 1;
                bytes += n;
            }
            Some(Err(e)) => {
                let reason = sha256sum::reason(&e);
                warnings.push(sha256sum::warning(&t.bytes, &reason));
                skipped.push(Skipped {
                    path: t.bytes.to_vec(),
                    reason,
                });
            }
            None => {
                // A source that returned fewer results than asked is a bug in that source;
                // treat the rest as unreadable rather than shift lines.
                let reason = "no result from the source".to_string();
                warnings.push(sha256sum::warning(&t.bytes, &reason));
                skipped.push(Skipped {
                    path: t.bytes.to_vec(),
                    reason,
                });
            }
        }
    }
    Ok(RecipeOutput {
        digest: Digest::of(&out),
        lines: out,
        files,
        bytes,
        skipped,
        warnings,
    })
}

fn special(token: &[u8], kind: FileKind, path: &[u8]) -> RecipeError {
    let what = match kind {
        FileKind::Fifo => "a FIFO",
        FileKind::CharDevice => "a character device",
        _ => "a block device",
    };
    let of = if token == path {
        String::new()
    } else {
        format!(" (a piece of the name {})", show(path))
    };
    RecipeError::Refuse {
        path: token.to_vec(),
        reason: format!("sha256sum would open {what}{of} and the recipe would block or never end"),
    }
}

/// Warns once per find path that xargs does not pass through as one argument.
fn warn_mangled(
    paths: &[Vec<u8>],
    lines: &[(&[u8], u32)],
    tokens: &[xargs::Token<'_>],
    exact: &[bool],
    warnings: &mut Vec<String>,
) {
    let mut intact = vec![false; paths.len()];
    for (t, &e) in tokens.iter().zip(exact) {
        if e {
            intact[lines[t.line].1 as usize] = true;
        }
    }
    for (p, ok) in paths.iter().zip(intact) {
        if !ok {
            warnings.push(format!(
                "the recipe does not hash {} as one file: sort splits names at newlines and xargs \
                 splits at blanks and removes quotes and backslashes",
                show(p)
            ));
        }
    }
}

/// Raw name bytes for messages: UTF-8 shown as is, control characters and invalid bytes
/// escaped (`\n`, `\x80`), so every name is visible and unambiguous on one line.
pub fn show(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                s.extend(c.escape_default());
            } else {
                s.push(c);
            }
        }
        for &x in chunk.invalid() {
            s.push_str(&format!("\\x{x:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Record(std::sync::Mutex<Vec<String>>);

    impl Progress for Record {
        fn start(&self, phase: &str, _b: Option<u64>, items: Option<u64>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("start {phase} {items:?}"));
        }
        fn advance(&self, bytes: u64, items: u64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("advance {bytes} {items}"));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push("finish".into());
        }
    }

    #[test]
    fn progress_only_for_large_work() {
        let small = Record::default();
        let d = Deferred::new(&small, Some(10));
        d.advance(4096, 1);
        d.finish();
        assert!(small.0.lock().unwrap().is_empty());

        let many = Record::default();
        let d = Deferred::new(&many, Some(PROGRESS_MIN_FILES));
        d.advance(1, 1);
        d.finish();
        assert_eq!(
            *many.0.lock().unwrap(),
            ["start hashing Some(2000)", "advance 1 1", "finish"]
        );

        let big = Record::default();
        let d = Deferred::new(&big, Some(3));
        d.advance(PROGRESS_MIN_BYTES - 1, 1);
        d.advance(2, 1);
        d.advance(5, 1);
        d.finish();
        let want = [
            "start hashing Some(3)".to_string(),
            format!("advance {} 2", PROGRESS_MIN_BYTES + 1),
            "advance 5 1".to_string(),
            "finish".to_string(),
        ];
        assert_eq!(*big.0.lock().unwrap(), want);
    }

    #[test]
    fn show_escapes_controls_and_invalid_bytes() {
        assert_eq!(show(b"d/a b"), "d/a b");
        assert_eq!(show(b"d/a\nb\r"), "d/a\\nb\\r");
        assert_eq!(show(b"\xff\xc3"), "\\xff\\xc3");
        assert_eq!(show("é".as_bytes()), "é");
    }
}
