//! The shape of a tree as the deploy compares it: every entry's relative path and kind, with
//! size, digest and exec bit for files and the target for symlinks. Built from an artifact's
//! manifest (what must be there) or by walking a remote tree (what is there), and compared with
//! messages that name the first path that differs and say what was expected and found.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::remote::{FileKind, Listed, Meta, Remote, RemoteError};

/// What one name is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `sha256` is `None` when only the shape was looked at (no bytes read).
    File {
        size: u64,
        sha256: Option<Digest>,
        executable: bool,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// Anything a deploy never creates (fifo, socket, device).
    Other(FileKind),
}

/// Relative path (raw bytes, `/`-separated) → kind, in byte order (parents before children).
pub type Shape = BTreeMap<Vec<u8>, Kind>;

/// `root` joined with a relative raw path.
pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn kind_of(meta: &Meta) -> Kind {
    match meta.kind {
        FileKind::File => Kind::File {
            size: meta.size,
            sha256: None,
            executable: meta.mode & 0o100 != 0,
        },
        FileKind::Dir => Kind::Dir,
        FileKind::Symlink => Kind::Symlink { target: Vec::new() },
        other => Kind::Other(other),
    }
}

/// Walks `root` on the host (lstat view; never follows a symlink), reading symlink targets.
/// File digests are left `None`; see [`hash_shape`].
pub fn walk(remote: &dyn Remote, root: &Path) -> Result<Shape, RemoteError> {
    walk_seen(remote, root, None, &mut |_, _| {})
}

/// [`walk`] of a tree expected to be `expected`: the same result, in fewer round trips when
/// the tree is as expected (see [`walk_seen`]).
pub fn walk_expecting(
    remote: &dyn Remote,
    root: &Path,
    expected: &Shape,
) -> Result<Shape, RemoteError> {
    walk_seen(remote, root, Some(expected), &mut |_, _| {})
}

/// Relative paths of files with a mode a deploy never gives, and that mode.
pub type OddModes = Vec<(Vec<u8>, u32)>;

/// [`walk_expecting`], and every file whose permission bits are not exactly 0644 or 0755 (the
/// only modes a deploy gives), with its mode: the exec-bit comparison alone would not see a 0664.
pub fn walk_deployed(
    remote: &dyn Remote,
    root: &Path,
    expected: &Shape,
) -> Result<(Shape, OddModes), RemoteError> {
    let mut odd = Vec::new();
    let shape = walk_seen(remote, root, Some(expected), &mut |rel, meta| {
        if meta.kind == FileKind::File && odd_mode(meta).is_some() {
            odd.push((rel.to_vec(), meta.mode));
        }
    })?;
    Ok((shape, odd))
}

/// Why an entry's permission bits are not what a deploy leaves, if they are not: a file is
/// exactly 0644 or 0755 (the deploy sets them so, whatever the server's umask); a directory at
/// most 0755 (created 0755, less under a strict umask), so never writable by group or others.
pub fn odd_mode(meta: &Meta) -> Option<&'static str> {
    match meta.kind {
        FileKind::File if meta.mode != 0o644 && meta.mode != 0o755 => {
            Some("a deploy leaves files 0644 or 0755")
        }
        FileKind::Dir if meta.mode & !0o755 != 0 => {
            Some("a deploy leaves directories at most 0755")
        }
        _ => None,
    }
}

/// [`walk`], showing `seen` every entry (its relative path and metadata) as it is listed: the
/// entries of one directory together, in the server's readdir order, a parent's before its
/// children's.
///
/// With `expected`, the root and every directory `expected` holds are listed first, all at
/// once: over a link with round trips a deep tree then costs one wave of listings, not one per
/// level. The walk itself is unchanged: it goes level by level over what its listings show, and
/// uses an early listing only for a directory its parent's listing shows as one. Others are
/// listed when reached, and an early listing that failed is made again then, so an error is
/// reported as the plain walk reports it. (An expected directory that is now a symlink is
/// listed early through the link, and that listing is dropped unused.)
pub fn walk_seen(
    remote: &dyn Remote,
    root: &Path,
    expected: Option<&Shape>,
    seen: &mut dyn FnMut(&[u8], &Meta),
) -> Result<Shape, RemoteError> {
    walk_listing(remote, root, expected, None, seen)
}

/// [`walk_seen`] and [`hash_shape`] in one: every regular file is read and hashed as soon as
/// its directory's listing arrives ([`Remote::read_dirs_hashed`]), so over SFTP the reads use
/// the time the walk spends waiting on the server. The result and the errors are those of the
/// two calls in turn: a listing error first, as the walk reports it, then the first read error
/// in the shape's order.
pub fn walk_hashed(
    remote: &dyn Remote,
    root: &Path,
    seen: &mut dyn FnMut(&[u8], &Meta),
    progress: &dyn crate::progress::Progress,
) -> Result<Shape, RemoteError> {
    walk_listing(remote, root, None, Some(progress), seen)
}

/// The walk of [`walk_seen`]; with `hashing`, through [`Remote::read_dirs_hashed`].
fn walk_listing(
    remote: &dyn Remote,
    root: &Path,
    expected: Option<&Shape>,
    hashing: Option<&dyn crate::progress::Progress>,
    seen: &mut dyn FnMut(&[u8], &Meta),
) -> Result<Shape, RemoteError> {
    let list = |paths: &[PathBuf]| -> Vec<Result<Listed, RemoteError>> {
        match hashing {
            Some(progress) => remote.read_dirs_hashed(paths, progress),
            None => remote
                .read_dirs(paths)
                .into_iter()
                .map(|l| Ok(l?.into_iter().map(|e| (e, None)).collect()))
                .collect(),
        }
    };
    let mut early: std::collections::HashMap<Vec<u8>, Listed> = Default::default();
    if let Some(expected) = expected {
        let dirs: Vec<Vec<u8>> = std::iter::once(Vec::new())
            .chain(
                expected
                    .iter()
                    .filter(|(_, k)| **k == Kind::Dir)
                    .map(|(p, _)| p.clone()),
            )
            .collect();
        let paths: Vec<PathBuf> = dirs.iter().map(|rel| join(root, rel)).collect();
        for (rel, listed) in dirs.into_iter().zip(list(&paths)) {
            if let Ok(entries) = listed {
                early.insert(rel, entries);
            }
        }
    }
    let mut shape = Shape::new();
    // The read error of the first file in the shape's order, reported once the walk is done.
    let mut unread: Option<(Vec<u8>, RemoteError)> = None;
    // Breadth-first, one level at a time, so the transport can list a level's directories
    // concurrently.
    let mut level: Vec<Vec<u8>> = vec![Vec::new()];
    while !level.is_empty() {
        // The level's directories without an early listing, listed now, in level order.
        let paths: Vec<PathBuf> = level
            .iter()
            .filter(|rel| !early.contains_key(*rel))
            .map(|rel| join(root, rel))
            .collect();
        let mut late = list(&paths).into_iter();
        let mut next = Vec::new();
        let mut links = Vec::new();
        for rel in &level {
            let listed = match early.remove(rel) {
                Some(entries) => entries,
                None => late.next().expect("a listing for each late directory")?,
            };
            for (e, hashed) in listed {
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(&e.name);
                seen(&child, &e.meta);
                let mut k = kind_of(&e.meta);
                match (&mut k, hashed) {
                    // As `hash_shape`: the size is what was read, so a comparison reports it.
                    (Kind::File { size, sha256, .. }, Some(Ok((digest, n)))) => {
                        *size = n;
                        *sha256 = Some(digest);
                    }
                    (_, Some(Err(e)))
                        if unread.as_ref().map_or(true, |(first, _)| child < *first) =>
                    {
                        unread = Some((child.clone(), e));
                    }
                    _ => {}
                }
                match &k {
                    Kind::Dir => next.push(child.clone()),
                    Kind::Symlink { .. } => links.push(child.clone()),
                    _ => {}
                }
                shape.insert(child, k);
            }
        }
        // The level's symlink targets, read concurrently; the first error in order stops.
        let link_paths: Vec<PathBuf> = links.iter().map(|rel| join(root, rel)).collect();
        for (rel, read) in links.iter().zip(remote.read_links(&link_paths)) {
            if let Some(Kind::Symlink { target }) = shape.get_mut(rel) {
                *target = read?.as_os_str().as_bytes().to_vec();
            }
        }
        level = next;
    }
    match unread {
        Some((_, e)) => Err(e),
        None => Ok(shape),
    }
}

/// Reads every file of `shape` back over the transport and fills in its digest; a read error
/// is returned with its path. The size from the walk is checked against the bytes read.
pub fn hash_shape(
    remote: &dyn Remote,
    root: &Path,
    shape: &mut Shape,
    progress: &dyn crate::progress::Progress,
) -> Result<(), RemoteError> {
    // The walk's sizes are hints: a file still of that size needs no end-of-file request.
    let files: Vec<(PathBuf, u64)> = shape
        .iter()
        .filter_map(|(rel, k)| match k {
            Kind::File { size, .. } => Some((join(root, rel), *size)),
            _ => None,
        })
        .collect();
    let mut results = remote.hash_files_sized(&files, progress).into_iter();
    // The results are in the shape's own order: filled in one pass, without a lookup per file.
    for kind in shape.values_mut() {
        if let Kind::File { size, sha256, .. } = kind {
            let (digest, n) = results.next().expect("a result for every file")?;
            // A size that differs from the walk's is recorded as read, so the comparison
            // reports it.
            *size = n;
            *sha256 = Some(digest);
        }
    }
    Ok(())
}

/// One difference between the expected and the actual shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    Missing {
        path: Vec<u8>,
        expected: Kind,
    },
    Extra {
        path: Vec<u8>,
        actual: Kind,
    },
    Changed {
        path: Vec<u8>,
        expected: Kind,
        actual: Kind,
    },
}

impl Difference {
    pub fn path(&self) -> &[u8] {
        match self {
            Difference::Missing { path, .. }
            | Difference::Extra { path, .. }
            | Difference::Changed { path, .. } => path,
        }
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = String::from_utf8_lossy(self.path());
        match self {
            Difference::Missing { expected, .. } => {
                write!(f, "{p}: missing (expected {})", describe(expected))
            }
            Difference::Extra { actual, .. } => {
                write!(f, "{p}: not in the artifact (found {})", describe(actual))
            }
            Difference::Changed {
                expected, actual, ..
            } => write!(
                f,
                "{p}: expected {}, found {}",
                describe(expected),
                describe(actual)
            ),
        }
    }
}

/// What a cleanup may remove of a tree it created as `expected`, given the tree `actual` as
/// walked now (never through a symlink).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// Entries still of the kind they were created as, children before their parents (reverse
    /// byte order), with `true` for directories.
    pub ours: Vec<(Vec<u8>, bool)>,
    /// Entries of `expected` that are gone already.
    pub gone: u64,
    /// Entries of `expected` now of another kind (a directory replaced by a symlink, say): not
    /// ours any more, and whatever is under them was never reached.
    pub replaced: Vec<Vec<u8>>,
    /// Entries of `actual` that `expected` never had.
    pub extra: Vec<Vec<u8>>,
}

/// Splits `expected` against `actual` into what is ours to remove and what is not (see
/// [`Removal`]). Pure: the caller walked `actual` and does the removing.
pub fn removal(expected: &Shape, actual: &Shape) -> Removal {
    let mut out = Removal::default();
    for (p, k) in expected.iter().rev() {
        match actual.get(p) {
            None => out.gone += 1,
            Some(now) if std::mem::discriminant(now) != std::mem::discriminant(k) => {
                out.replaced.push(p.clone())
            }
            Some(_) => out.ours.push((p.clone(), matches!(k, Kind::Dir))),
        }
    }
    out.extra = actual
        .keys()
        .filter(|p| !expected.contains_key(*p))
        .cloned()
        .collect();
    out
}

/// Short human spelling of a kind.
pub fn describe(k: &Kind) -> String {
    match k {
        Kind::File {
            size,
            sha256,
            executable,
        } => {
            let x = if *executable { "executable " } else { "" };
            match sha256 {
                Some(d) => format!("{x}file of {size} bytes with sha256 {d}"),
                None => format!("{x}file of {size} bytes"),
            }
        }
        Kind::Dir => "a directory".into(),
        Kind::Symlink { target } => {
            format!("symlink to {}", String::from_utf8_lossy(target))
        }
        Kind::Other(k) => format!("a {}", k.noun()),
    }
}

/// Does `actual` satisfy `expected`? A digest is compared only when both sides have one.
pub fn same(expected: &Kind, actual: &Kind) -> bool {
    match (expected, actual) {
        (
            Kind::File {
                size: s1,
                sha256: d1,
                executable: x1,
            },
            Kind::File {
                size: s2,
                sha256: d2,
                executable: x2,
            },
        ) => s1 == s2 && x1 == x2 && (d1.is_none() || d2.is_none() || d1 == d2),
        (a, b) => a == b,
    }
}

/// Every difference, in path order.
pub fn compare(expected: &Shape, actual: &Shape) -> Vec<Difference> {
    let mut out = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => out.push(Difference::Missing {
                path: p.clone(),
                expected: e.clone(),
            }),
            Some(a) if !same(e, a) => out.push(Difference::Changed {
                path: p.clone(),
                expected: e.clone(),
                actual: a.clone(),
            }),
            Some(_) => {}
        }
    }
    for (p, a) in actual {
        if !expected.contains_key(p) {
            out.push(Difference::Extra {
                path: p.clone(),
                actual: a.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// Parses `sha256sum` lines (as GNU sha256sum and `Manifest::sha256sum_lines` write them) into (path, digest) pairs;
/// other lines are skipped.
pub fn parse_sha256sum_lines(text: &[u8]) -> Vec<(Vec<u8>, Digest)> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let (escaped, rest) = match line.strip_prefix(b"\\") {
            Some(r) => (true, r),
            None => (false, line),
        };
        if rest.len() < 66 || &rest[64..66] != b"  " {
            continue;
        }
        let Some(d) = std::str::from_utf8(&rest[..64])
            .ok()
            .filter(|h| {
                h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            .and_then(Digest::from_hex)
        else {
            continue;
        };
        let name = &rest[66..];
        let path = if escaped {
            let mut p = Vec::with_capacity(name.len());
            let mut it = name.iter();
            while let Some(&b) = it.next() {
                if b == b'\\' {
                    match it.next() {
                        Some(b'n') => p.push(b'\n'),
                        Some(b'r') => p.push(b'\r'),
                        Some(&c) => p.push(c),
                        None => p.push(b'\\'),
                    }
                } else {
                    p.push(b);
                }
            }
            p
        } else {
            name.to_vec()
        };
        out.push((path, d));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Progress;

    #[test]
    fn removal_keeps_what_changed_kind_and_what_it_never_made() {
        let file = || Kind::File {
            size: 1,
            sha256: None,
            executable: false,
        };
        let link = |t: &[u8]| Kind::Symlink { target: t.to_vec() };
        let made: Shape = [
            (b"a".to_vec(), Kind::Dir),
            (b"a/f".to_vec(), file()),
            (b"d".to_vec(), Kind::Dir),
            (b"d/g".to_vec(), file()),
            (b"gone".to_vec(), file()),
            (b"l".to_vec(), link(b"a/f")),
        ]
        .into();
        // `d` is now a symlink (whatever it points to was never walked), `l` was edited (same
        // kind: still ours), `x` is someone else's.
        let now: Shape = [
            (b"a".to_vec(), Kind::Dir),
            (b"a/f".to_vec(), file()),
            (b"d".to_vec(), link(b"/home/user")),
            (b"l".to_vec(), link(b"elsewhere")),
            (b"x".to_vec(), file()),
        ]
        .into();
        let r = removal(&made, &now);
        assert_eq!(
            r.ours,
            [
                (b"l".to_vec(), false),
                (b"a/f".to_vec(), false),
                (b"a".to_vec(), true)
            ]
        );
        assert_eq!(r.gone, 2, "gone and d/g");
        assert_eq!(r.replaced, [b"d".to_vec()]);
        assert_eq!(r.extra, [b"x".to_vec()]);
    }
    use crate::remote::local::LocalRemote;
    use crate::remote::{DirEntry, ExecOutput, FsStats, HostFacts, NewFile, StreamedFiles};
    use std::sync::Mutex;

    /// The local transport, recording the non-empty `read_dirs` calls (each one wave of
    /// round trips over SFTP).
    #[derive(Default)]
    struct Waves {
        inner: LocalRemote,
        waves: Mutex<Vec<usize>>,
    }

    type R<T> = crate::remote::Result<T>;

    impl Remote for Waves {
        fn read_dirs(&self, paths: &[PathBuf]) -> Vec<R<Vec<DirEntry>>> {
            if !paths.is_empty() {
                self.waves.lock().unwrap().push(paths.len());
            }
            self.inner.read_dirs(paths)
        }
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn transport(&self) -> &'static str {
            self.inner.transport()
        }
        fn facts(&self) -> R<HostFacts> {
            self.inner.facts()
        }
        fn lstat(&self, p: &Path) -> R<Option<Meta>> {
            self.inner.lstat(p)
        }
        fn stat(&self, p: &Path) -> R<Option<Meta>> {
            self.inner.stat(p)
        }
        fn read_dir(&self, p: &Path) -> R<Vec<DirEntry>> {
            self.inner.read_dir(p)
        }
        fn read_link(&self, p: &Path) -> R<PathBuf> {
            self.inner.read_link(p)
        }
        fn canonicalize(&self, p: &Path) -> R<PathBuf> {
            self.inner.canonicalize(p)
        }
        fn statvfs(&self, p: &Path) -> R<FsStats> {
            self.inner.statvfs(p)
        }
        fn read_file(&self, p: &Path, limit: u64) -> R<Vec<u8>> {
            self.inner.read_file(p, limit)
        }
        fn hash_files(&self, p: &[PathBuf], g: &dyn Progress) -> Vec<R<(Digest, u64)>> {
            self.inner.hash_files(p, g)
        }
        fn mkdir(&self, p: &Path, mode: u32) -> R<()> {
            self.inner.mkdir(p, mode)
        }
        fn write_new(&self, p: &Path, data: &[u8], mode: u32, fsync: bool) -> R<()> {
            self.inner.write_new(p, data, mode, fsync)
        }
        fn put_new_files(&self, f: &[NewFile], fsync: bool, g: &dyn Progress) -> R<()> {
            self.inner.put_new_files(f, fsync, g)
        }
        fn put_streamed(
            &self,
            f: &mut StreamedFiles,
            n: usize,
            fsync: bool,
            g: &dyn Progress,
        ) -> R<()> {
            self.inner.put_streamed(f, n, fsync, g)
        }
        fn symlink(&self, target: &Path, link: &Path) -> R<()> {
            self.inner.symlink(target, link)
        }
        fn hard_link(&self, existing: &Path, link: &Path) -> R<()> {
            self.inner.hard_link(existing, link)
        }
        fn rename_noreplace(&self, from: &Path, to: &Path) -> R<()> {
            self.inner.rename_noreplace(from, to)
        }
        fn remove_file(&self, p: &Path) -> R<()> {
            self.inner.remove_file(p)
        }
        fn remove_dir(&self, p: &Path) -> R<()> {
            self.inner.remove_dir(p)
        }
        fn exec(&self, command: &str) -> R<ExecOutput> {
            self.inner.exec(command)
        }
    }

    /// a/b/c/d with a file in each, and a symlink at the top.
    fn deep_tree(root: &Path) {
        let mut d = root.to_path_buf();
        for name in ["a", "b", "c", "d"] {
            d.push(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("f"), name).unwrap();
        }
        std::os::unix::fs::symlink("a/f", root.join("l")).unwrap();
    }

    #[test]
    fn a_tree_as_expected_is_listed_in_one_wave() {
        let t = tempfile::tempdir().unwrap();
        deep_tree(t.path());
        let r = Waves::default();
        let plain = walk(&r, t.path()).unwrap();
        assert_eq!(
            *r.waves.lock().unwrap(),
            [1, 1, 1, 1, 1],
            "one wave per level"
        );
        r.waves.lock().unwrap().clear();
        assert_eq!(walk_expecting(&r, t.path(), &plain).unwrap(), plain);
        assert_eq!(
            *r.waves.lock().unwrap(),
            [5],
            "the root and a, b, c, d at once"
        );
    }

    #[test]
    fn walk_expecting_finds_what_walk_finds_whatever_changed() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        deep_tree(t.path());
        let r = Waves::default();
        let expected = walk(&r, t.path()).unwrap();
        let root = t.path();
        // An expected directory replaced by a symlink to a directory elsewhere (its early
        // listing goes through the link and must not be used), another by a file, one gone,
        // and an unexpected directory with contents.
        std::fs::rename(root.join("a/b/c"), root.join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("a/b/c")).unwrap();
        std::fs::remove_dir_all(root.join("moved")).unwrap();
        std::fs::remove_file(root.join("a/b/f")).unwrap();
        std::fs::create_dir_all(root.join("new/deeper")).unwrap();
        std::fs::write(root.join("new/deeper/g"), b"g").unwrap();
        let plain = walk(&r, root).unwrap();
        assert_eq!(walk_expecting(&r, root, &expected).unwrap(), plain);
        assert_eq!(
            plain.get(b"a/b/c".as_slice()),
            Some(&Kind::Symlink {
                target: outside.path().as_os_str().as_bytes().to_vec()
            })
        );
        assert!(!plain.keys().any(|k| k.ends_with(b"secret")));
        assert!(plain.contains_key(b"new/deeper/g".as_slice()));
        // The top expected directory replaced by a file.
        std::fs::remove_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a"), b"now a file").unwrap();
        let plain = walk(&r, root).unwrap();
        assert_eq!(walk_expecting(&r, root, &expected).unwrap(), plain);
        assert!(matches!(
            plain.get(b"a".as_slice()),
            Some(Kind::File { .. })
        ));
    }

    fn file(data: &[u8]) -> Kind {
        Kind::File {
            size: data.len() as u64,
            sha256: Some(Digest::of(data)),
            executable: false,
        }
    }

    #[test]
    fn compare_names_each_kind_of_difference() {
        let mut e = Shape::new();
        e.insert(b"a".to_vec(), file(b"a"));
        e.insert(b"d".to_vec(), Kind::Dir);
        e.insert(
            b"l".to_vec(),
            Kind::Symlink {
                target: b"a".to_vec(),
            },
        );
        let mut a = e.clone();
        assert!(compare(&e, &a).is_empty());
        a.insert(b"a".to_vec(), file(b"b"));
        a.remove(b"d".as_slice());
        a.insert(b"x".to_vec(), Kind::Dir);
        let diffs = compare(&e, &a);
        let text: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(
            text[0].starts_with("a: expected file of 1 bytes with sha256 ca97"),
            "{}",
            text[0]
        );
        assert_eq!(text[1], "d: missing (expected a directory)");
        assert_eq!(text[2], "x: not in the artifact (found a directory)");
    }

    #[test]
    fn parses_what_gnu_sha256sum_prints() {
        let d = tempfile::tempdir().unwrap();
        let names: [&[u8]; 5] = [
            b"plain",
            b"with space",
            b"back\\slash",
            b"new\nline",
            b"cr\rname",
        ];
        let mut want = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let data = format!("content {i}");
            std::fs::write(d.path().join(OsStr::from_bytes(n)), &data).unwrap();
            want.push((n.to_vec(), Digest::of(data.as_bytes())));
        }
        let gnu = std::process::Command::new("sh")
            .arg("-c")
            .arg("sha256sum -- *")
            .current_dir(d.path())
            .output()
            .unwrap();
        assert!(gnu.status.success());
        let mut parsed = parse_sha256sum_lines(&gnu.stdout);
        parsed.sort();
        want.sort();
        assert_eq!(parsed, want);
    }
}
