//! The entry rules every extraction applies, in archive order, before an entry is acted on.
//!
//! Pure: a [`Checker`] sees each entry's header facts and either returns a [`CheckedEntry`]
//! (a normalised relative path and kind) or a [`Rejected`] naming the entry and the [`Rule`].
//! Together the rules guarantee that writing the accepted entries in order under a fresh
//! directory, never following a symlink, cannot touch anything outside that directory:
//! - paths are relative, without `..`, `.` or empty parts (a trailing `/` on a directory is fine);
//! - every parent is an *earlier directory entry* (so nothing is written through a symlink,
//!   and nothing needs an implicit directory);
//! - no path appears twice;
//! - a symlink target is relative, and its leading `..` parts never climb above the root; a `..`
//!   after a name is refused (it could climb out through a symlinked name);
//! - a hard link names an earlier regular file entry (so it is inside and already written);
//! - only regular files, directories, symlinks and hard links: no devices, fifos, sparse or
//!   other types; no setuid, setgid or sticky bit; non-file entries carry no data;
//! - PAX records every reader reads alike: no `GNU.sparse.*`, no `path`/`linkpath` that a GNU
//!   long-name record contradicts, a plain decimal `size`, no NUL, no key twice.

use std::collections::HashMap;

use crate::manifest::{check_path, parent_of};

/// An entry that passed every rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedEntry {
    /// Relative, `/`-separated, validated; no trailing slash.
    pub path: Vec<u8>,
    pub kind: CheckedKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckedKind {
    File {
        size: u64,
        executable: bool,
    },
    /// Another name for the earlier regular file `target` (a validated relative path).
    HardLink {
        target: Vec<u8>,
    },
    Symlink {
        target: Vec<u8>,
    },
    Dir,
}

/// The header facts the rules look at.
#[derive(Clone, Copy, Debug)]
pub struct RawEntry<'a> {
    pub path: &'a [u8],
    pub entry_type: tar::EntryType,
    pub mode: u32,
    pub size: u64,
    pub link: Option<&'a [u8]>,
    /// The records of the entry's PAX extended header (empty without one), in order.
    pub pax: &'a [PaxRecord],
    /// The PAX header held a record that does not parse (the tar crate skips those).
    pub pax_malformed: bool,
}

/// One PAX record: key and value.
pub type PaxRecord = (Vec<u8>, Vec<u8>);

/// Which rule an entry broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rule {
    #[error("absolute path")]
    Absolute,
    #[error("path contains `..`")]
    DotDot,
    #[error("invalid path: {0}")]
    BadPath(&'static str),
    #[error("device or fifo entries are not allowed")]
    Device,
    #[error("unsupported entry type {0:?}")]
    Unsupported(char),
    #[error("mode {0:o} has setuid, setgid or sticky bits")]
    SpecialBits(u32),
    #[error("a {0} entry must not carry data (size {1})")]
    DataOnNonFile(&'static str, u64),
    #[error("duplicate entry")]
    Duplicate,
    #[error("parent {0:?} is not an earlier directory entry")]
    MissingParent(String),
    #[error("would write through symlink {0:?}")]
    ThroughSymlink(String),
    #[error("symlink target {0:?} points outside the destination")]
    SymlinkEscapes(String),
    #[error("symlink target {0:?} has `..` after a name")]
    SymlinkDotDotAfterName(String),
    #[error("symlink has an empty target")]
    SymlinkEmpty,
    #[error("hard link target {0:?} is outside the destination")]
    HardLinkOutside(String),
    #[error("hard link target {0:?} is a directory")]
    HardLinkToDir(String),
    #[error("symlink target contains a NUL byte")]
    SymlinkNul,
    #[error("symlink target is longer than 4095 bytes")]
    SymlinkTooLong,
    #[error("hard link target {0:?} is not an earlier regular file entry")]
    HardLinkNotEarlier(String),
    #[error("{0} entry has no link name")]
    NoLinkName(&'static str),
    #[error("sparse entries are not supported")]
    Sparse,
    #[error("its {0} is given by both a GNU {1} record and a PAX `{2}` record, and they differ")]
    TwoNameSources(&'static str, &'static str, &'static str),
    #[error("malformed PAX header: {0}")]
    BadPax(String),
}

/// An entry the rules refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry:?} rejected: {rule}")]
pub struct Rejected {
    pub entry: String,
    pub rule: Rule,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    File,
    Dir,
    Symlink,
}

/// Applies the rules to a sequence of entries.
#[derive(Default)]
pub struct Checker {
    seen: HashMap<Vec<u8>, Seen>,
}

fn show(b: &[u8]) -> String {
    crate::manifest::show(b)
}

/// Validates a member path; `allow_trailing_slash` for directories. A leading `./` (as
/// `tar -C dir -cf x .` writes) is dropped; the result is empty for the root itself.
fn normalise(path: &[u8], allow_trailing_slash: bool) -> Result<Vec<u8>, Rule> {
    let mut p = path;
    if allow_trailing_slash {
        while p.len() > 1 && p.ends_with(b"/") {
            p = &p[..p.len() - 1];
        }
    }
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
        if allow_trailing_slash && p.is_empty() {
            return Ok(Vec::new());
        }
    }
    if allow_trailing_slash && p == b"." {
        return Ok(Vec::new());
    }
    if p.starts_with(b"/") {
        return Err(Rule::Absolute);
    }
    if p.split(|&b| b == b'/').any(|c| c == b"..") {
        return Err(Rule::DotDot);
    }
    check_path(p).map_err(Rule::BadPath)?;
    // NAME_MAX: no Linux file system takes a longer name (mkdir/open would fail mid-extraction).
    if p.split(|&b| b == b'/').any(|c| c.len() > 255) {
        return Err(Rule::BadPath("a component is longer than 255 bytes"));
    }
    Ok(p.to_vec())
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    /// Checks one entry in archive order. `Ok(None)` for an entry naming the root directory
    /// itself (`./`), which the destination already is.
    pub fn check(&mut self, raw: RawEntry<'_>) -> Result<Option<CheckedEntry>, Rejected> {
        let reject = |rule: Rule| Rejected {
            entry: show(raw.path),
            rule,
        };
        use tar::EntryType as T;
        check_pax(&raw).map_err(reject)?;
        let is_dir = raw.entry_type == T::Directory;
        let path = normalise(raw.path, is_dir).map_err(reject)?;
        if raw.mode & 0o7000 != 0 {
            return Err(reject(Rule::SpecialBits(raw.mode)));
        }
        if path.is_empty() {
            if raw.size != 0 {
                return Err(reject(Rule::DataOnNonFile("directory", raw.size)));
            }
            return Ok(None);
        }
        let kind = match raw.entry_type {
            T::Regular => CheckedKind::File {
                size: raw.size,
                executable: raw.mode & 0o100 != 0,
            },
            T::Directory => CheckedKind::Dir,
            T::Symlink => {
                let target = raw
                    .link
                    .ok_or_else(|| reject(Rule::NoLinkName("symlink")))?;
                check_symlink_target(&path, target).map_err(reject)?;
                CheckedKind::Symlink {
                    target: target.to_vec(),
                }
            }
            T::Link => {
                let target = raw
                    .link
                    .ok_or_else(|| reject(Rule::NoLinkName("hard link")))?;
                // A trailing `/` can only name a directory: say that, not "invalid".
                let t = normalise(target, true).map_err(|rule| match rule {
                    Rule::Absolute | Rule::DotDot => reject(Rule::HardLinkOutside(show(target))),
                    other => reject(other),
                })?;
                if self.seen.get(&t) == Some(&Seen::Dir) || t.is_empty() {
                    return Err(reject(Rule::HardLinkToDir(show(target))));
                }
                if self.seen.get(&t) != Some(&Seen::File) || target.ends_with(b"/") {
                    return Err(reject(Rule::HardLinkNotEarlier(show(target))));
                }
                CheckedKind::HardLink { target: t }
            }
            T::Char | T::Block | T::Fifo => return Err(reject(Rule::Device)),
            other => return Err(reject(Rule::Unsupported(char::from(other.as_byte())))),
        };
        if !matches!(kind, CheckedKind::File { .. }) && raw.size != 0 {
            let what = match kind {
                CheckedKind::Dir => "directory",
                CheckedKind::Symlink { .. } => "symlink",
                _ => "hard link",
            };
            return Err(reject(Rule::DataOnNonFile(what, raw.size)));
        }
        if self.seen.contains_key(&path) {
            return Err(reject(Rule::Duplicate));
        }
        // Every ancestor must be an earlier directory: checking the parent suffices, since the
        // parent itself was only accepted with its own parent a directory.
        if let Some(parent) = parent_of(&path) {
            match self.seen.get(parent) {
                Some(Seen::Dir) => {}
                Some(Seen::Symlink) => return Err(reject(Rule::ThroughSymlink(show(parent)))),
                _ => {
                    // Name the symlink if one sits higher up, else the missing parent.
                    return Err(reject(Rule::MissingParent(show(parent))));
                }
            }
        }
        let seen = match kind {
            CheckedKind::File { .. } | CheckedKind::HardLink { .. } => Seen::File,
            CheckedKind::Dir => Seen::Dir,
            CheckedKind::Symlink { .. } => Seen::Symlink,
        };
        self.seen.insert(path.clone(), seen);
        Ok(Some(CheckedEntry { path, kind }))
    }
}

/// The PAX rules: readers disagree on everything else, so an entry is only accepted when every
/// reader would see the same name, link name, size and content.
/// - `GNU.sparse.*` keys (PAX sparse formats 0.x/1.0): GNU tar extracts `GNU.sparse.name` with
///   the data mapped, the tar crate a plain file named `GNUSparseFile.0/...` holding the map.
/// - `path`/`linkpath` given both here and by a GNU `L`/`K` record: GNU tar takes PAX, the tar
///   crate (and so `raw.path`/`raw.link`) the GNU record. Only a difference is visible here;
///   when both say the same, every reader agrees anyway.
/// - `size` must be plain decimal digits that fit u64: the tar crate ignores any other value
///   (and accepts `+1`), using the header's size, where another reader would not.
/// - NUL inside `path` or `linkpath` (C readers stop at it), and any of `path`, `linkpath`,
///   `size` given twice (the first or the last wins depending on the reader).
fn check_pax(raw: &RawEntry<'_>) -> Result<(), Rule> {
    if raw.pax_malformed {
        return Err(Rule::BadPax("a record does not parse".into()));
    }
    let mut seen: Vec<&[u8]> = Vec::new();
    for (key, value) in raw.pax {
        let key = &key[..];
        if key.starts_with(b"GNU.sparse.") {
            return Err(Rule::Sparse);
        }
        if !matches!(key, b"path" | b"linkpath" | b"size") {
            continue;
        }
        let name = show(key);
        if seen.contains(&key) {
            return Err(Rule::BadPax(format!("key `{name}` appears twice")));
        }
        seen.push(key);
        if key != b"size" && value.contains(&0) {
            return Err(Rule::BadPax(format!("`{name}` contains a NUL byte")));
        }
        match key {
            b"path" if value[..] != *raw.path => {
                return Err(Rule::TwoNameSources("name", "long-name", "path"))
            }
            b"linkpath" if Some(&value[..]) != raw.link => {
                return Err(Rule::TwoNameSources("link name", "long-link", "linkpath"))
            }
            b"size" => {
                let digits = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
                if !digits || show(value).parse::<u64>().is_err() {
                    return Err(Rule::BadPax(format!(
                        "`size` {:?} is not a decimal number that fits 64 bits",
                        show(value)
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The symlink rule: relative; leading `..` climb at most to the root from the link's directory;
/// no `..` after a name. With every target of this shape, following any chain of symlinks
/// inside the tree only ever descends from a point inside the tree, so it stays inside.
fn check_symlink_target(link: &[u8], target: &[u8]) -> Result<(), Rule> {
    if target.is_empty() {
        return Err(Rule::SymlinkEmpty);
    }
    if target.contains(&0) {
        return Err(Rule::SymlinkNul);
    }
    // PATH_MAX - 1: symlinkat refuses longer targets.
    if target.len() > 4095 {
        return Err(Rule::SymlinkTooLong);
    }
    if target.starts_with(b"/") {
        return Err(Rule::SymlinkEscapes(show(target)));
    }
    let depth = link.iter().filter(|&&b| b == b'/').count();
    let mut ups = 0usize;
    let mut named = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if named => return Err(Rule::SymlinkDotDotAfterName(show(target))),
            b".." => {
                ups += 1;
                if ups > depth {
                    return Err(Rule::SymlinkEscapes(show(target)));
                }
            }
            _ => named = true,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType as T;

    fn raw<'a>(path: &'a str, t: T, link: Option<&'a str>) -> RawEntry<'a> {
        RawEntry {
            path: path.as_bytes(),
            entry_type: t,
            mode: 0o644,
            size: 0,
            link: link.map(str::as_bytes),
            pax: &[],
            pax_malformed: false,
        }
    }

    /// Runs `entries` through one checker; returns the rule of the first rejection.
    fn first_rejection(entries: &[RawEntry<'_>]) -> Option<Rule> {
        let mut c = Checker::new();
        entries
            .iter()
            .find_map(|e| c.check(*e).err().map(|r| r.rule))
    }

    #[test]
    fn rules_table() {
        let d = |p| raw(p, T::Directory, None);
        let f = |p| raw(p, T::Regular, None);
        let l = |p, t| raw(p, T::Symlink, Some(t));
        let h = |p, t| raw(p, T::Link, Some(t));
        let cases: Vec<(Vec<RawEntry>, Option<Rule>)> = vec![
            (
                vec![d("a/"), f("a/b"), l("a/c", "b"), h("a/d", "a/b")],
                None,
            ),
            (vec![d("a"), l("a/up", "../x")], None),
            (vec![l("up", "./x/./y")], None),
            (vec![f("/etc/passwd")], Some(Rule::Absolute)),
            (vec![f("../x")], Some(Rule::DotDot)),
            (vec![d("a"), f("a/../../x")], Some(Rule::DotDot)),
            (vec![f("a//b")], Some(Rule::BadPath("empty path component"))),
            (vec![f("a/./b")], Some(Rule::BadPath("`.` component"))),
            (vec![d("./"), d("./a/"), f("./a/b"), h("c", "./a/b")], None),
            (vec![f("./")], Some(Rule::BadPath("empty path"))),
            (vec![f("a"), f("a")], Some(Rule::Duplicate)),
            (vec![d("a"), d("a/")], Some(Rule::Duplicate)),
            (vec![f("a/b")], Some(Rule::MissingParent("a".into()))),
            (
                vec![l("a", "d"), d("d"), f("a/x")],
                Some(Rule::ThroughSymlink("a".into())),
            ),
            (
                vec![l("a", "/etc")],
                Some(Rule::SymlinkEscapes("/etc".into())),
            ),
            (vec![l("a", "..")], Some(Rule::SymlinkEscapes("..".into()))),
            (
                vec![d("d"), l("d/a", "../../x")],
                Some(Rule::SymlinkEscapes("../../x".into())),
            ),
            (
                vec![l("a", "w/..")],
                Some(Rule::SymlinkDotDotAfterName("w/..".into())),
            ),
            (vec![l("a", "")], Some(Rule::SymlinkEmpty)),
            (
                vec![h("a", "/etc/passwd")],
                Some(Rule::HardLinkOutside("/etc/passwd".into())),
            ),
            (
                vec![h("a", "../x")],
                Some(Rule::HardLinkOutside("../x".into())),
            ),
            (
                vec![h("a", "b"), f("b")],
                Some(Rule::HardLinkNotEarlier("b".into())),
            ),
            (
                vec![d("b"), h("a", "b")],
                Some(Rule::HardLinkToDir("b".into())),
            ),
            (
                vec![d("b"), h("a", "b/")],
                Some(Rule::HardLinkToDir("b/".into())),
            ),
            (vec![h("a", "./")], Some(Rule::HardLinkToDir("./".into()))),
            (
                vec![f("b"), h("a", "b/")],
                Some(Rule::HardLinkNotEarlier("b/".into())),
            ),
            (
                vec![h("a", "x//y")],
                Some(Rule::BadPath("empty path component")),
            ),
            (vec![l("a", "x\0y")], Some(Rule::SymlinkNul)),
            (
                vec![f(Box::leak("n".repeat(256).into_boxed_str()))],
                Some(Rule::BadPath("a component is longer than 255 bytes")),
            ),
            (vec![f(Box::leak("n".repeat(255).into_boxed_str()))], None),
            (vec![raw("c", T::Char, None)], Some(Rule::Device)),
            (vec![raw("c", T::Block, None)], Some(Rule::Device)),
            (vec![raw("c", T::Fifo, None)], Some(Rule::Device)),
            (
                vec![raw("c", T::GNUSparse, None)],
                Some(Rule::Unsupported('S')),
            ),
            (
                vec![RawEntry {
                    mode: 0o4755,
                    ..f("s")
                }],
                Some(Rule::SpecialBits(0o4755)),
            ),
            (
                vec![RawEntry {
                    mode: 0o1777,
                    ..d("t")
                }],
                Some(Rule::SpecialBits(0o1777)),
            ),
            (
                vec![RawEntry {
                    size: 5,
                    ..l("s", "x")
                }],
                Some(Rule::DataOnNonFile("symlink", 5)),
            ),
        ];
        for (entries, want) in cases {
            assert_eq!(first_rejection(&entries), want, "{entries:?}");
        }
    }

    #[test]
    fn pax_rules_table() {
        let rec = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let cases: Vec<(Vec<PaxRecord>, Option<Rule>)> = vec![
            (
                vec![rec("path", "f"), rec("size", "0"), rec("mtime", "1.5")],
                None,
            ),
            (vec![rec("GNU.sparse.size", "4")], Some(Rule::Sparse)),
            (
                vec![rec("path", "g")],
                Some(Rule::TwoNameSources("name", "long-name", "path")),
            ),
            (
                vec![rec("linkpath", "t")],
                Some(Rule::TwoNameSources("link name", "long-link", "linkpath")),
            ),
            (
                vec![rec("size", "18446744073709551616")],
                Some(Rule::BadPax(
                    "`size` \"18446744073709551616\" is not a decimal number that fits 64 bits"
                        .into(),
                )),
            ),
            (
                vec![rec("size", "")],
                Some(Rule::BadPax(
                    "`size` \"\" is not a decimal number that fits 64 bits".into(),
                )),
            ),
            (
                vec![rec("size", "0"), rec("size", "0")],
                Some(Rule::BadPax("key `size` appears twice".into())),
            ),
        ];
        for (pax, want) in cases {
            let got = Checker::new()
                .check(RawEntry {
                    pax: &pax,
                    ..raw("f", T::Regular, None)
                })
                .err()
                .map(|r| r.rule);
            assert_eq!(got, want, "{pax:?}");
        }
        let e = Checker::new()
            .check(RawEntry {
                pax_malformed: true,
                ..raw("f", T::Regular, None)
            })
            .unwrap_err();
        assert_eq!(e.rule, Rule::BadPax("a record does not parse".into()));
    }

    #[test]
    fn rejection_names_entry_and_rule() {
        let mut c = Checker::new();
        let e = c.check(raw("../evil", T::Regular, None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "entry \"../evil\" rejected: path contains `..`"
        );
    }
}
