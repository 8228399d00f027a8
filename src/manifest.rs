//! The content-addressed manifest of a tree, and its canonical text encoding.
//!
//! A manifest lists every entry of a tree (regular file with size, sha256 and exec bit, symlink
//! with its target, directory, empty or not) by relative path in bytewise (memcmp) order. Its
//! canonical encoding ([`Manifest::encode`], specified in `store-layout.md`) is a byte string whose
//! sha256 over the *entry section* is the tree's identity ([`Manifest::identity`]), as Nix names a
//! store path by its NAR hash. The recipe digest (`find NAME -type f | sort | xargs sha256sum |
//! sha256sum`) is recorded in a trailer beside the entries and is deliberately not part of the
//! identity: it depends on a locale and on the tree's name, the identity must not.
//!
//! Guarantees: encoding is a bijection (decode accepts only canonical bytes, so
//! `encode(decode(b)) == b`), every path is relative, `/`-separated, without empty, `.` or `..`
//! parts, unique, and every parent of an entry is itself a directory entry. File lines are
//! `sha256sum -c` lines behind a fixed-shape prefix, so a host with only coreutils can check a tree
//! (`sed -n 's/^[fx] [0-9]* //p' manifest.txt | sha256sum -c`). Everything but [`scan_dir`] is pure.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::digest::Digest;
use crate::progress::Progress;
use crate::tree::sha256sum::escape_into;

/// First line of every encoded manifest; part of the identity, so a future format change
/// changes every identity rather than silently colliding with this one.
pub const MAGIC: &[u8] = b"sealpush-manifest 1\n";

/// A tree's manifest: entries in bytewise path order, plus the recipe digest recorded beside them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<Entry>,
    pub recipe: Option<RecipeRecord>,
}

/// `cd PARENT && find NAME -type f | sort | xargs sha256sum | sha256sum`, and the collation
/// locale `sort` used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipeRecord {
    pub digest: Digest,
    /// "C" unless the user chose another.
    pub locale: String,
}

/// One entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative, `/`-separated, no `.`/`..`/empty parts; raw bytes (names need not be UTF-8).
    pub path: Vec<u8>,
    pub kind: EntryKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
        sha256: Digest,
        executable: bool,
    },
    Symlink {
        target: Vec<u8>,
    },
    Dir,
}

/// Why a manifest could not be built, decoded or scanned.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("invalid entry path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("duplicate entry {path:?}")]
    Duplicate { path: String },
    #[error("entry {path:?} has no parent directory entry {parent:?}")]
    MissingParent { path: String, parent: String },
    #[error("symlink {path:?} has an empty target or one with a NUL byte")]
    BadTarget { path: String },
    #[error("manifest line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error(
        "{path}: cannot pack a {kind}: an artifact holds only files, directories and symlinks \
         (remove it from the tree, or pack a copy without it)"
    )]
    Special { path: PathBuf, kind: &'static str },
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("recipe digest of {path}: {reason}")]
    Recipe { path: PathBuf, reason: String },
}

/// Lossy display of a raw path, for messages only.
pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

impl Entry {
    pub fn file(path: impl Into<Vec<u8>>, size: u64, sha256: Digest, executable: bool) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                size,
                sha256,
                executable,
            },
        }
    }
    pub fn symlink(path: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        }
    }
    pub fn dir(path: impl Into<Vec<u8>>) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
        }
    }
}

/// Checks that `path` is relative, `/`-separated, with no empty, `.` or `..` part and no NUL.
pub fn check_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.contains(&0) {
        return Err("contains a NUL byte");
    }
    if path[0] == b'/' {
        return Err("absolute path");
    }
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" => return Err("empty path component"),
            b"." => return Err("`.` component"),
            b".." => return Err("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// The parent of a relative path, `None` for a top-level name.
pub fn parent_of(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&b| b == b'/').map(|i| &path[..i])
}

impl Manifest {
    /// Sorts the entries bytewise by path and checks every invariant (valid paths, no
    /// duplicates, every parent a directory entry, no empty symlink targets).
    pub fn from_entries(
        mut entries: Vec<Entry>,
        recipe: Option<RecipeRecord>,
    ) -> Result<Manifest, ManifestError> {
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        // The index of the last parent found: the entries of one directory mostly come
        // together, and a hit there saves the search.
        let mut last_parent: Option<usize> = None;
        for (i, e) in entries.iter().enumerate() {
            check_path(&e.path).map_err(|reason| ManifestError::BadPath {
                path: show(&e.path),
                reason,
            })?;
            if i > 0 && entries[i - 1].path == e.path {
                return Err(ManifestError::Duplicate {
                    path: show(&e.path),
                });
            }
            if let EntryKind::Symlink { target } = &e.kind {
                if target.is_empty() || target.contains(&0) {
                    return Err(ManifestError::BadTarget {
                        path: show(&e.path),
                    });
                }
            }
            if let Some(parent) = parent_of(&e.path) {
                // In bytewise order a parent sorts before its children, but not necessarily
                // immediately before them ("a", "a-b", "a/c"): binary search the sorted prefix.
                let found = match last_parent {
                    Some(j) if entries[j].path == parent => Some(j),
                    _ => entries[..i]
                        .binary_search_by(|p| p.path.as_slice().cmp(parent))
                        .ok(),
                };
                let ok = found.is_some_and(|j| entries[j].kind == EntryKind::Dir);
                if ok {
                    last_parent = found;
                } else {
                    return Err(ManifestError::MissingParent {
                        path: show(&e.path),
                        parent: show(parent),
                    });
                }
            }
        }
        Ok(Manifest { entries, recipe })
    }

    /// The canonical encoding: the entry section (whose sha256 is the identity), then the recipe
    /// trailer line if any. See `store-layout.md`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.entry_section();
        if let Some(r) = &self.recipe {
            out.extend_from_slice(b"recipe ");
            out.extend_from_slice(r.digest.to_hex().as_bytes());
            out.push(b' ');
            out.extend_from_slice(r.locale.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// The bytes the identity covers: the magic line and one line per entry.
    fn entry_section(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + self.entries.len() * 100);
        out.extend_from_slice(MAGIC);
        for e in &self.entries {
            encode_entry(e, &mut out);
        }
        out
    }

    /// Parses canonical bytes only: anything [`Manifest::encode`] would not have produced is
    /// rejected, so equal manifests always have equal bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let syntax = |line: usize, reason: &str| ManifestError::Syntax {
            line,
            reason: reason.to_string(),
        };
        let Some(rest) = bytes.strip_prefix(MAGIC) else {
            return Err(syntax(1, "expected `sealpush-manifest 1`"));
        };
        if !rest.is_empty() && !rest.ends_with(b"\n") {
            return Err(syntax(0, "missing final newline"));
        }
        let mut entries = Vec::new();
        let mut recipe = None;
        let lines = rest.split(|&b| b == b'\n');
        let count = rest.iter().filter(|&&b| b == b'\n').count();
        for (i, line) in lines.take(count).enumerate() {
            let n = i + 2;
            if recipe.is_some() {
                return Err(syntax(n, "text after the recipe line"));
            }
            if let Some(r) = line.strip_prefix(b"recipe ") {
                let s =
                    std::str::from_utf8(r).map_err(|_| syntax(n, "recipe line is not UTF-8"))?;
                let (hex, locale) = s
                    .split_once(' ')
                    .ok_or_else(|| syntax(n, "expected `recipe HEX LOCALE`"))?;
                let digest = Digest::from_hex(hex)
                    .filter(|d| d.to_hex() == hex)
                    .ok_or_else(|| syntax(n, "bad recipe digest"))?;
                if locale.is_empty() || locale.contains(|c: char| c.is_whitespace()) {
                    return Err(syntax(n, "bad recipe locale"));
                }
                recipe = Some(RecipeRecord {
                    digest,
                    locale: locale.to_string(),
                });
                continue;
            }
            entries.push(decode_entry(line).map_err(|r| syntax(n, r))?);
        }
        let m = Manifest::from_entries(entries, recipe)?;
        if m.encode() != bytes {
            return Err(syntax(0, "not in canonical form (order or escaping)"));
        }
        Ok(m)
    }

    /// sha256 of the entry section of [`Manifest::encode`] (everything before the recipe line).
    pub fn identity(&self) -> Digest {
        Digest::of(&self.entry_section())
    }

    /// Number of regular-file entries (each hard-linked name counts).
    pub fn file_count(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .count() as u64
    }

    /// Sum of file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    /// `sha256sum -c` input for the files, each path prefixed by `prefix` (e.g.
    /// `b"iu-cutter-v0.6/"`), escaped exactly as sha256sum escapes (a leading `\` on the line, `\`
    /// `\n` `\r` in the name as `\\` `\n` `\r`).
    pub fn sha256sum_lines(&self, prefix: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut name = Vec::new();
        for e in &self.entries {
            if let EntryKind::File { sha256, .. } = &e.kind {
                name.clear();
                name.extend_from_slice(prefix);
                name.extend_from_slice(&e.path);
                sha256sum_line(sha256, &name, &mut out);
            }
        }
        out
    }

    /// The first difference between `self` (expected) and `other` (found), human readable.
    /// The recipe record is compared too, after the entries.
    pub fn diff(&self, other: &Manifest) -> Option<String> {
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.entries, &other.entries);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.path == y.path => {
                    if x.kind != y.kind {
                        return Some(format!(
                            "{}: expected {}, found {}",
                            show(&x.path),
                            describe(&x.kind),
                            describe(&y.kind)
                        ));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), y) if y.map_or(true, |y| x.path < y.path) => {
                    return Some(format!(
                        "{}: expected {}, found nothing",
                        show(&x.path),
                        describe(&x.kind)
                    ));
                }
                (_, Some(y)) => {
                    return Some(format!(
                        "{}: expected nothing, found {}",
                        show(&y.path),
                        describe(&y.kind)
                    ));
                }
                _ => unreachable!("loop condition guarantees one side has an entry"),
            }
        }
        if self.recipe != other.recipe {
            let r = |r: &Option<RecipeRecord>| match r {
                Some(r) => format!("recipe digest {} ({})", r.digest, r.locale),
                None => "no recipe digest".to_string(),
            };
            return Some(format!(
                "recipe: expected {}, found {}",
                r(&self.recipe),
                r(&other.recipe)
            ));
        }
        None
    }

    /// Looks an entry up by path.
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_slice().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }
}

fn describe(kind: &EntryKind) -> String {
    match kind {
        EntryKind::File {
            size,
            sha256,
            executable,
        } => format!(
            "{} of {size} bytes with sha256 {sha256}",
            if *executable {
                "executable file"
            } else {
                "file"
            }
        ),
        EntryKind::Symlink { target } => format!("symlink to {:?}", show(target)),
        EntryKind::Dir => "directory".to_string(),
    }
}

/// The symlink-target escaping: sha256sum's, plus space as `\s` so the target is one field.
fn escape_target_into(target: &[u8], out: &mut Vec<u8>) {
    for &b in target {
        match b {
            b' ' => out.extend_from_slice(b"\\s"),
            _ => escape_into(&[b], out),
        }
    }
}

fn unescape(s: &[u8], allow_space_escape: bool) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b's') if allow_space_escape => out.push(b' '),
            _ => return Err("bad escape sequence"),
        }
    }
    Ok(out)
}

/// One line exactly as `sha256sum` prints it for `name` (the recipe's own formatter, so the
/// manifest's file lines and `sealpush hash --lines` can never disagree on escaping).
fn sha256sum_line(digest: &Digest, name: &[u8], out: &mut Vec<u8>) {
    crate::tree::sha256sum::push_line(out, digest, name);
}

fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    match &e.kind {
        EntryKind::File {
            size,
            sha256,
            executable,
        } => {
            out.extend_from_slice(if *executable { b"x " } else { b"f " });
            out.extend_from_slice(size.to_string().as_bytes());
            out.push(b' ');
            sha256sum_line(sha256, &e.path, out);
        }
        EntryKind::Symlink { target } => {
            out.extend_from_slice(b"l ");
            escape_target_into(target, out);
            out.push(b' ');
            escape_into(&e.path, out);
            out.push(b'\n');
        }
        EntryKind::Dir => {
            out.extend_from_slice(b"d ");
            escape_into(&e.path, out);
            out.push(b'\n');
        }
    }
}

fn decode_entry(line: &[u8]) -> Result<Entry, &'static str> {
    let (tag, rest) = match line {
        [t, b' ', rest @ ..] => (*t, rest),
        _ => return Err("expected `KIND ` at the start of the line"),
    };
    match tag {
        b'f' | b'x' => {
            let sp = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or("expected a size")?;
            let size_s = std::str::from_utf8(&rest[..sp]).map_err(|_| "bad size")?;
            if size_s.is_empty() || (size_s.len() > 1 && size_s.starts_with('0')) {
                return Err("bad size");
            }
            let size: u64 = size_s.parse().map_err(|_| "bad size")?;
            let mut rest = &rest[sp + 1..];
            let escaped = if let Some(r) = rest.strip_prefix(b"\\") {
                rest = r;
                true
            } else {
                false
            };
            if rest.len() < 66 || &rest[64..66] != b"  " {
                return Err("expected `HEX  PATH`");
            }
            let hex = std::str::from_utf8(&rest[..64]).map_err(|_| "bad digest")?;
            let sha256 = Digest::from_hex(hex)
                .filter(|d| d.to_hex() == hex)
                .ok_or("bad digest (64 lowercase hex digits)")?;
            let name = &rest[66..];
            let path = if escaped {
                unescape(name, false)?
            } else {
                name.to_vec()
            };
            Ok(Entry::file(path, size, sha256, tag == b'x'))
        }
        b'l' => {
            let sp = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or("expected `l TARGET PATH`")?;
            let target = unescape(&rest[..sp], true)?;
            let path = unescape(&rest[sp + 1..], false)?;
            Ok(Entry::symlink(path, target))
        }
        b'd' => Ok(Entry::dir(unescape(rest, false)?)),
        _ => Err("unknown entry kind"),
    }
}

/// What the walk found before hashing: a file is hashed later, in parallel.
pub(crate) enum Found {
    File {
        size: u64,
        executable: bool,
        stamp: Stamp,
    },
    Symlink(Vec<u8>),
    Dir,
}

/// What identifies a file's state for change detection: any write moves ctime (which no user
/// can set), a replacement changes the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stamp {
    pub fn of(md: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

/// Lists `dir` recursively without following symlinks, refusing sockets, fifos and devices.
/// Returns (relative path, kind) in bytewise path order.
pub(crate) fn walk(dir: &Path) -> Result<Vec<(Vec<u8>, Found)>, ManifestError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ManifestError::Io { path, source }
    };
    let meta = fs::metadata(dir).map_err(io(dir))?;
    if !meta.is_dir() {
        return Err(ManifestError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut out = walk_rec(dir.to_path_buf(), Vec::new(), 0)?;
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Below this depth subdirectories are listed in parallel; deeper ones with an explicit stack,
/// so a very deep tree cannot overflow a rayon worker's stack.
const PARALLEL_DEPTH: usize = 24;

/// One directory's entries, then its subdirectories' in parallel (rayon): a tree of many small
/// directories is listed on every core.
fn walk_rec(
    abs: PathBuf,
    rel: Vec<u8>,
    depth: usize,
) -> Result<Vec<(Vec<u8>, Found)>, ManifestError> {
    let mut out = Vec::new();
    if depth >= PARALLEL_DEPTH {
        let mut stack = vec![(abs, rel)];
        while let Some((abs, rel)) = stack.pop() {
            stack.extend(list_dir(&abs, &rel, &mut out)?);
        }
        return Ok(out);
    }
    let subdirs = list_dir(&abs, &rel, &mut out)?;
    let nested = subdirs
        .into_par_iter()
        .map(|(a, r)| walk_rec(a, r, depth + 1))
        .collect::<Result<Vec<_>, _>>()?;
    for n in nested {
        out.extend(n);
    }
    Ok(out)
}

/// Appends one directory's entries to `out`; returns its subdirectories (absolute, relative).
fn list_dir(
    abs: &Path,
    rel: &[u8],
    out: &mut Vec<(Vec<u8>, Found)>,
) -> Result<Vec<(PathBuf, Vec<u8>)>, ManifestError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ManifestError::Io { path, source }
    };
    let mut subdirs = Vec::new();
    for de in fs::read_dir(abs).map_err(io(abs))? {
        let de = de.map_err(io(abs))?;
        let child = de.path();
        // lstat relative to the open directory (std uses fstatat on the DIR's fd): no path walk.
        let md = de.metadata().map_err(io(&child))?;
        let mut r = rel.to_vec();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(de.file_name().as_bytes());
        let ft = md.file_type();
        let found = if ft.is_file() {
            Found::File {
                size: md.len(),
                executable: md.permissions().mode() & 0o100 != 0,
                stamp: Stamp::of(&md),
            }
        } else if ft.is_symlink() {
            let t = fs::read_link(&child).map_err(io(&child))?;
            Found::Symlink(t.into_os_string().into_encoded_bytes())
        } else if ft.is_dir() {
            subdirs.push((child.clone(), r.clone()));
            Found::Dir
        } else {
            let kind = if ft.is_fifo() {
                "fifo"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            return Err(ManifestError::Special { path: child, kind });
        };
        out.push((r, found));
    }
    Ok(subdirs)
}

/// Joins a relative manifest path onto a directory.
pub(crate) fn join(dir: &Path, rel: &[u8]) -> PathBuf {
    dir.join(std::ffi::OsStr::from_bytes(rel))
}

/// Scans and hashes `dir` (files in parallel on `threads` workers, default all cores) and records
/// its recipe digest in the C locale. Symlinks are recorded, never followed; sockets, fifos and
/// devices are refused with an error naming them.
pub fn scan_dir(
    dir: &Path,
    threads: Option<usize>,
    progress: &dyn Progress,
) -> Result<Manifest, ManifestError> {
    let found = walk(dir)?;
    let total: u64 = found
        .iter()
        .map(|(_, f)| match f {
            Found::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    progress.start("hashing", Some(total), None);
    let hash_all = || {
        found
            .into_par_iter()
            .map(|(rel, f)| {
                let kind = match f {
                    Found::File { executable, .. } => {
                        let p = join(dir, &rel);
                        let (sha256, size) = crate::tree::hash_file(&p)
                            .map_err(|source| ManifestError::Io { path: p, source })?;
                        progress.advance(size, 1);
                        EntryKind::File {
                            size,
                            sha256,
                            executable,
                        }
                    }
                    Found::Symlink(target) => EntryKind::Symlink { target },
                    Found::Dir => EntryKind::Dir,
                };
                Ok(Entry { path: rel, kind })
            })
            .collect::<Result<Vec<Entry>, ManifestError>>()
    };
    let entries = match threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .map_err(|e| ManifestError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(e),
            })?
            .install(hash_all)?,
        None => hash_all()?,
    };
    progress.finish();
    let mut m = Manifest::from_entries(entries, None)?;
    m.recipe = recipe_record(dir, &m.entries)?;
    Ok(m)
}

/// The recipe digest of `dir` as seen from its parent, in the C locale.
///
/// When every file path is "plain" (see [`recipe_from_entries`]) the digest follows from the
/// manifest alone, without reading the files a second time. Otherwise the tree module's full
/// emulation of the pipeline (xargs tokenising, sha256sum options and escaping) decides.
pub(crate) fn recipe_record(
    dir: &Path,
    entries: &[Entry],
) -> Result<Option<RecipeRecord>, ManifestError> {
    let abs = fs::canonicalize(dir).map_err(|source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let Some(name) = abs.file_name() else {
        // `/` has no name to spell the recipe's paths with.
        return Ok(None);
    };
    if let Some(digest) = recipe_from_entries(name.as_bytes(), entries) {
        return Ok(Some(RecipeRecord {
            digest,
            locale: "C".to_string(),
        }));
    }
    let opts = crate::tree::RecipeOptions {
        threads: None,
        collation: crate::tree::Collation::c(),
    };
    match crate::tree::recipe_digest_of_dir(&abs, &opts) {
        Ok(out) => Ok(Some(RecipeRecord {
            digest: out.digest,
            locale: "C".to_string(),
        })),
        // The pipeline itself cannot hash this tree (it would abort, hang or read a name as an
        // option): there is no recipe digest to record, which the manifest says by omission.
        Err(crate::tree::RecipeError::Break { .. } | crate::tree::RecipeError::Refuse { .. }) => {
            Ok(None)
        }
        Err(e) => Err(ManifestError::Recipe {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Is `b` a byte the C-locale pipeline passes through untouched? Whitespace splits xargs
/// tokens, quotes and backslashes are xargs syntax (and `\` makes sha256sum escape), control
/// bytes are excluded to stay clear of `\r` escaping and terminal oddities.
fn plain_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b'\'' | b'"' | b'\\')
}

/// `find NAME -type f | LC_ALL=C sort | xargs sha256sum | sha256sum` for a tree named `name`
/// with these entries, when every file path (`NAME/rel`) consists of plain bytes and find
/// reads `NAME` as a path (it does not start with `-` and is not `!` or `(`, which begin find's
/// expression): then each file is one xargs token, one sha256sum line
/// `HEX  NAME/rel`, and C-locale `sort` order is the manifest's bytewise order. `None` when the
/// pipeline's quirks could matter. No files: xargs still runs `sha256sum` once, on empty stdin,
/// which prints `e3b0...  -`.
pub fn recipe_from_entries(name: &[u8], entries: &[Entry]) -> Option<Digest> {
    use sha2::Digest as _;
    if name.is_empty()
        || name[0] == b'-'
        || matches!(name, b"!" | b"(")
        || !name.iter().all(|&b| plain_byte(b))
    {
        return None;
    }
    let mut h = sha2::Sha256::new();
    let mut any = false;
    for e in entries {
        if let EntryKind::File { sha256, .. } = &e.kind {
            if !e.path.iter().all(|&b| plain_byte(b)) {
                return None;
            }
            any = true;
            h.update(sha256.to_hex().as_bytes());
            h.update(b"  ");
            h.update(name);
            h.update(b"/");
            h.update(&e.path);
            h.update(b"\n");
        }
    }
    if !any {
        h.update(Digest::of(b"").to_hex().as_bytes());
        h.update(b"  -\n");
    }
    Some(Digest(h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn sample() -> Manifest {
        Manifest::from_entries(
            vec![
                Entry::file("a/b c", 3, d("x"), false),
                Entry::dir("a"),
                Entry::file("a-b", 0, d(""), true),
                Entry::symlink("a/link", "../a-b with space"),
                Entry::dir("a/empty"),
                Entry::file(b"a/back\\slash\nnl\r".to_vec(), 5, d("y"), false),
                Entry::file(b"a/\xff\xfe".to_vec(), 1, d("z"), false),
            ],
            Some(RecipeRecord {
                digest: d("r"),
                locale: "C".into(),
            }),
        )
        .unwrap()
    }

    #[test]
    fn encoding_round_trips_and_is_canonical() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        // memcmp order: "a" < "a-b" < "a/..." ('-' is 0x2d, '/' is 0x2f).
        let paths: Vec<&[u8]> = m.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(paths[0], b"a");
        assert_eq!(paths[1], b"a-b");
        let text = bytes.clone();
        assert!(text.starts_with(MAGIC));
        // The backslash name carries sha256sum's marker and escapes.
        let want = format!("f 5 \\{}  a/back\\\\slash\\nnl\\r\n", d("y"));
        assert!(
            text.windows(want.len()).any(|w| w == want.as_bytes()),
            "{}",
            show(&text)
        );
        assert!(show(&text).contains("l ../a-b\\swith\\sspace a/link\n"));
    }

    #[test]
    fn identity_ignores_the_recipe_record() {
        let mut m = sample();
        let id = m.identity();
        m.recipe = None;
        assert_eq!(m.identity(), id);
        assert_eq!(Digest::of(&m.encode()), id);
        m.entries.push(Entry::dir("zz"));
        assert_ne!(
            Manifest::from_entries(m.entries, None).unwrap().identity(),
            id
        );
    }

    #[test]
    fn decode_rejects_non_canonical_input() {
        let good = sample().encode();
        let h = d("x").to_hex();
        let bad: Vec<Vec<u8>> = vec![
            b"sealpush-manifest 2\n".to_vec(),
            [MAGIC, b"d b\nd a\n"].concat(), // order
            [MAGIC, b"d a\nd a\n"].concat(), // duplicate
            [MAGIC, b"d a/b\n"].concat(),    // missing parent
            [MAGIC, b"d ../a\n"].concat(),   // dot-dot
            [MAGIC, b"d /a\n"].concat(),     // absolute
            [MAGIC, b"d a"].concat(),        // no final newline
            [MAGIC, format!("f 01 {h}  a\n").as_bytes()].concat(), // leading zero
            [MAGIC, format!("f 1 {}  a\n", h.to_uppercase()).as_bytes()].concat(),
            [MAGIC, format!("f 1 {h}  a\\b\n").as_bytes()].concat(), // unmarked backslash
            [MAGIC, format!("f 1 \\{h}  ab\n").as_bytes()].concat(), // needless marker
            [MAGIC, b"d a\\q\n"].concat(),                           // unknown escape
            [MAGIC, b"recipe 00 C\n"].concat(),
            [&good[..], b"d zz\n"].concat(), // entry after recipe
        ];
        for b in bad {
            assert!(Manifest::decode(&b).is_err(), "accepted {:?}", show(&b));
        }
    }

    #[test]
    fn from_entries_checks_parents_and_paths() {
        let err = |v: Vec<Entry>| Manifest::from_entries(v, None).unwrap_err().to_string();
        assert!(err(vec![Entry::dir("a/b")]).contains("no parent"));
        assert!(err(vec![Entry::symlink("a", "x"), Entry::dir("a/b")]).contains("no parent"));
        assert!(err(vec![Entry::dir("a//b")]).contains("empty path component"));
        assert!(err(vec![Entry::dir("./a")]).contains("`.`"));
        assert!(err(vec![Entry::dir("")]).contains("empty path"));
        assert!(err(vec![Entry::symlink("a", "")]).contains("empty target"));
    }

    #[test]
    fn sha256sum_lines_match_coreutils_format() {
        let m = sample();
        let lines = m.sha256sum_lines(b"t/");
        let s = show(&lines);
        assert!(s.contains(&format!("{}  t/a/b c\n", d("x"))));
        assert!(s.contains(&format!("\\{}  t/a/back\\\\slash\\nnl\\r\n", d("y"))));
        assert_eq!(s.lines().count(), 4);
    }

    #[test]
    fn diff_names_the_first_difference() {
        let a = sample();
        assert_eq!(a.diff(&a), None);
        let mut b = a.clone();
        b.entries.retain(|e| e.path != b"a/empty");
        let msg = a.diff(&b).unwrap();
        assert!(
            msg.starts_with("a/empty: expected directory, found nothing"),
            "{msg}"
        );
        let msg = b.diff(&a).unwrap();
        assert!(
            msg.starts_with("a/empty: expected nothing, found directory"),
            "{msg}"
        );
        let mut c = a.clone();
        if let EntryKind::File { sha256, .. } = &mut c.entries[1].kind {
            *sha256 = d("other");
        }
        assert!(a
            .diff(&c)
            .unwrap()
            .starts_with("a-b: expected executable file of 0 bytes"));
        let mut r = a.clone();
        r.recipe = None;
        assert!(a.diff(&r).unwrap().starts_with("recipe:"));
    }
}
