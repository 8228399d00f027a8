//! The local side of a deploy: the artifact named by the plan, checked before anything is sent.
//! Its archive's sha256 must equal the plan's; it is unpacked with every check of `sealpush
//! unpack` ([`crate::pack::unpack`]: no absolute or `..` paths, no escaping symlinks, no
//! devices, ...) into a private temp dir; the unpacked tree's identity must equal the plan's.
//! Only then is the tree streamed to the host, file by file, from that checked copy.
//!
//! For an artifact of the store (its manifest beside the archive, with the plan's identity) the
//! local copy is skipped: [`stream_files`] decompresses the archive during the upload, checks
//! every entry as `sealpush unpack` does and against the manifest in order, and hashes the
//! archive file on the way; the deploy checks that digest before anything is promoted, and
//! compares every byte read back from the host with the manifest.

use std::path::PathBuf;

use super::shape::{Kind, Shape};
use super::{DeployError, Names};
use crate::digest::Digest;
use crate::manifest::{Entry, EntryKind, Manifest};
use crate::pack::CheckedKind;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::remote::{Payload, StreamedFile};
use crate::tree::{Collation, RecipeOptions};

/// [`Receipt::archive_check`](super::receipt::Receipt::archive_check) when the archive was
/// hashed again and matched the plan.
pub const ARCHIVE_REHASHED: &str = "sha256";
/// ... when it had the plan's stamp from before it was read to after (not hashed again).
pub const ARCHIVE_UNCHANGED: &str = "stamp";

/// A checked artifact, ready to be sent.
pub struct Prepared {
    /// Removed on drop.
    _tmp: Option<tempfile::TempDir>,
    /// How the archive was vouched for, when the unpack read it ([`ARCHIVE_REHASHED`] or
    /// [`ARCHIVE_UNCHANGED`]); empty when the deploy streams it (the stream decides).
    pub archive_check: &'static str,
    pub contents: Contents,
    pub manifest: Manifest,
    /// The manifest as a shape.
    pub expected: Shape,
    /// `cd <tmp> && find NAME -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`: the
    /// target's recipe digest once deployed, without DEPLOY-MANIFEST.txt; `Err(why)` when the
    /// recipe cannot hash the tree (`xargs` stops at an unmatched quote, a piece of a name
    /// would be read as an option, ...). That is information for the operator, not a reason to
    /// refuse: `pack` stores such a tree, preflight passes it, and the audit (`sha256sum -c` of
    /// DEPLOY-MANIFEST.txt) covers every name.
    pub recipe_digest: Result<Digest, String>,
}

/// Where the bytes of a [`Prepared`] artifact come from.
pub enum Contents {
    /// The tree unpacked into a private temp dir (`<tmp>/<target name>`, so its recipe spelling
    /// matches the target's), every check done.
    Unpacked(PathBuf),
    /// The archive, read during the upload by [`stream_files`].
    Archive(PathBuf),
}

impl Prepared {
    /// (files, bytes).
    pub fn totals(&self) -> (u64, u64) {
        (self.manifest.file_count(), self.manifest.total_bytes())
    }
}

/// Checks and unpacks the plan's artifact.
pub fn prepare(
    plan: &Plan,
    names: &Names,
    progress: &dyn Progress,
) -> Result<Prepared, DeployError> {
    use std::os::unix::ffi::OsStrExt;
    let a = &plan.artifact;
    let bad = |reason: String| DeployError::Artifact {
        path: a.path.clone(),
        reason,
    };
    let stored = stored_manifest(&a.path, &a.tree_identity);
    if let Some(m) = stored.as_ref().filter(|m| streamable(m)) {
        if m.get(super::DEPLOY_MANIFEST.as_bytes()).is_none() {
            if let Some(recipe_digest) =
                crate::manifest::recipe_from_entries(&names.name, &m.entries)
            {
                return Ok(Prepared {
                    _tmp: None,
                    // Decided by the stream, which reads it.
                    archive_check: "",
                    contents: Contents::Archive(a.path.clone()),
                    expected: shape_of(m),
                    manifest: m.clone(),
                    recipe_digest: Ok(recipe_digest),
                });
            }
        }
    }
    let base = scratch_base(a.unpacked_bytes, a.files);
    sweep_orphans(&base);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{ORPHAN_PREFIX}{}-", std::process::id()))
        .tempdir_in(&base)
        .map_err(|e| {
            bad(format!(
                "cannot create a temp dir in {}: {e}",
                base.display()
            ))
        })?;
    let tree = tmp.path().join(std::ffi::OsStr::from_bytes(&names.name));
    // The archive's sha256 is computed on another thread while the checked unpack reads it:
    // both results are checked before anything is sent, and the unpack writes only into our
    // private temp dir, so overlapping them costs no safety and saves a pass on one core.
    // With the store's manifest (vouched for by the plan's tree identity), the unpack checks
    // structure and sizes but does not hash the content: every byte is compared with this
    // manifest when it is read back from the host (or by sha256sum -c there), before the
    // promote. Hashing it here too cost a second of CPU per 2 GiB on the critical path.
    // The archive is opened once, and everything here reads that one file: the stamp is looked
    // at through the handle (following a symlink, as preflight's open did), the hash reads it
    // with positioned reads, the unpack through a clone of it. A name swapped meanwhile (the
    // archive replaced by a rename and put back, a directory above it renamed away and back,
    // neither of which moves the file's ctime) cannot have one file vouched for and another
    // unpacked. A file that still has the plan's stamp before and after the unpack is not
    // hashed again (see `crate::stamp`).
    let file = std::fs::File::open(&a.path).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let look = |f: &std::fs::File| crate::stamp::FileStamp::of_file(f).ok();
    let unchanged = a.archive_stamp.filter(|s| look(&file) == Some(*s));
    let read = file
        .try_clone()
        .map_err(|e| bad(format!("cannot open it: {e}")))?;
    let (digest, manifest) = std::thread::scope(|s| {
        let hasher = s.spawn(|| match unchanged {
            Some(_) => Ok(None),
            None => sha256_at(&file).map(Some),
        });
        let manifest = crate::pack::unpack_opened(&a.path, read, &tree, stored.as_ref(), progress);
        (hasher.join().expect("hash thread"), manifest)
    });
    let archive_check = match digest.map_err(|e| bad(e.to_string()))? {
        Some((digest, _)) if digest != a.archive_sha256 => {
            return Err(DeployError::ArchiveMismatch {
                path: a.path.clone(),
                expected: a.archive_sha256,
                actual: digest,
            })
        }
        Some(_) => ARCHIVE_REHASHED,
        None if look(&file) != unchanged => {
            return Err(bad(
                "changed while it was unpacked (its size, mtime or ctime moved)".into(),
            ))
        }
        None => ARCHIVE_UNCHANGED,
    };
    let manifest = manifest.map_err(|e| {
        let reason = e.to_string();
        unpack_failed(&a.path, e, reason)
    })?;
    if manifest.identity() != a.tree_identity {
        return Err(DeployError::IdentityMismatch {
            expected: a.tree_identity,
            actual: manifest.identity(),
        });
    }
    if manifest.get(super::DEPLOY_MANIFEST.as_bytes()).is_some() {
        return Err(bad(format!(
            "the tree already holds a top-level {}, the name sealpush writes the deploy manifest to",
            super::DEPLOY_MANIFEST
        )));
    }
    // For plain names the recipe follows from the manifest's digests (no second read of the
    // tree); otherwise the recipe itself runs over the unpacked copy.
    let recipe_digest = match crate::manifest::recipe_from_entries(&names.name, &manifest.entries) {
        Some(d) => Ok(d),
        None => match crate::tree::recipe_digest_of_dir(
            &tree,
            &RecipeOptions {
                threads: None,
                collation: Collation::c(),
            },
        ) {
            Ok(out) => Ok(out.digest),
            // The pipeline itself has no digest for this tree (as `pack` records it: none).
            Err(
                e @ (crate::tree::RecipeError::Break { .. }
                | crate::tree::RecipeError::Refuse { .. }),
            ) => Err(e.to_string()),
            // Our own copy could not be read: that is a failure of this run.
            Err(e) => return Err(bad(e.to_string())),
        },
    };
    Ok(Prepared {
        _tmp: Some(tmp),
        archive_check,
        expected: shape_of(&manifest),
        contents: Contents::Unpacked(tree),
        manifest,
        recipe_digest,
    })
}

/// The manifest stored beside `archive` (the store's layout), if its identity is `identity`.
fn stored_manifest(archive: &std::path::Path, identity: &Digest) -> Option<Manifest> {
    let bytes = std::fs::read(archive.parent()?.join("manifest.txt")).ok()?;
    Manifest::decode(&bytes)
        .ok()
        .filter(|m| m.identity() == *identity)
}

/// Whether [`stream_files`] can send this tree: a hard link's content is its target's, which
/// the stream has already passed, so a tree where two non-empty files share their content (as
/// every hard link does) goes through the unpacked copy instead.
fn streamable(m: &Manifest) -> bool {
    let mut seen = std::collections::HashSet::new();
    m.entries.iter().all(|e| match &e.kind {
        EntryKind::File { size, sha256, .. } if *size > 0 => seen.insert((*size, *sha256)),
        _ => true,
    })
}

/// Files up to this size travel whole; larger ones in pieces, so memory stays bounded.
const WHOLE: u64 = crate::remote::STREAM_PIECE as u64;

/// Sends every file of `archive` (the artifact whose manifest is `manifest`) into `files`, as
/// a new file under `root`, in archive order. Every entry is checked as `sealpush unpack`
/// checks it, and must be the manifest's next entry (same path, kind, size, exec bit, link
/// target); contents are not hashed here (the deploy compares what it reads back from the host
/// with the manifest). Returns how the archive file was vouched for, read once for that and
/// the entries: its sha256 and size, or, when it has the stamp `unchanged` (the plan's), that
/// stamp throughout (see [`crate::stamp`]); `None` when the receiving side hung up first (its
/// own error is the one to report).
pub fn stream_files(
    archive: &std::path::Path,
    manifest: &Manifest,
    unchanged: Option<&crate::stamp::FileStamp>,
    root: &std::path::Path,
    files: tokio::sync::mpsc::Sender<StreamedFile>,
) -> Result<Option<crate::pack::ArchiveRead>, DeployError> {
    let hung_up = std::cell::Cell::new(false);
    let stopped = || {
        hung_up.set(true);
        crate::pack::UnpackError::Io {
            path: archive.to_path_buf(),
            source: std::io::Error::other("the upload stopped"),
        }
    };
    let mut next = manifest.entries.iter();
    let streamed =
        crate::pack::read_checked_streaming(archive, manifest, unchanged, |entry, data| {
            let want = next.next();
            // Ok(None): not a file; Ok(Some((size, exec))): a file to send; Err: not the manifest's.
            let file = match (&entry.kind, want.map(|w| &w.kind)) {
                _ if want.map_or(true, |w| w.path != entry.path) => Err(()),
                (CheckedKind::Dir, Some(EntryKind::Dir)) => Ok(None),
                (CheckedKind::Symlink { target }, Some(EntryKind::Symlink { target: t }))
                    if target == t =>
                {
                    Ok(None)
                }
                (
                    CheckedKind::File { size, executable },
                    Some(EntryKind::File {
                        size: s,
                        executable: x,
                        ..
                    }),
                ) if size == s && executable == x => Ok(Some((*size, *executable))),
                // Only an empty file can be a hard link here (see `streamable`).
                (
                    CheckedKind::HardLink { .. },
                    Some(EntryKind::File {
                        size: 0,
                        executable,
                        ..
                    }),
                ) => Ok(Some((0, *executable))),
                _ => Err(()),
            };
            let Ok(file) = file else {
                return Err(crate::pack::UnpackError::Mismatch {
                    path: archive.to_path_buf(),
                    detail: format!(
                        "entry {:?} is not the manifest's next entry ({})",
                        crate::manifest::show(&entry.path),
                        want.map_or("none left".into(), |w| format!(
                            "{:?}",
                            crate::manifest::show(&w.path)
                        ))
                    ),
                });
            };
            let Some((len, executable)) = file else {
                return Ok(());
            };
            let remote = super::shape::join(root, &entry.path);
            let mode = if executable { 0o755 } else { 0o644 };
            if len <= WHOLE {
                let mut buf = Vec::with_capacity(len as usize);
                data.read_to_end(&mut buf)
                    .map_err(|source| crate::pack::UnpackError::Corrupt {
                        path: archive.to_path_buf(),
                        source,
                    })?;
                let data = Payload::Whole(buf.into());
                return files
                    .blocking_send(StreamedFile {
                        remote,
                        len,
                        mode,
                        data,
                    })
                    .map_err(|_| stopped());
            }
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            files
                .blocking_send(StreamedFile {
                    remote,
                    len,
                    mode,
                    data: Payload::Pieces(rx),
                })
                .map_err(|_| stopped())?;
            let mut left = len;
            while left > 0 {
                let want = left.min(crate::remote::STREAM_PIECE as u64) as usize;
                // Into spare capacity: no zeroing of bytes about to be overwritten.
                let mut piece = Vec::with_capacity(want);
                use std::io::Read as _;
                let got = <&mut dyn std::io::Read as std::io::Read>::take(&mut *data, want as u64)
                    .read_to_end(&mut piece)
                    .map_err(|source| crate::pack::UnpackError::Corrupt {
                        path: archive.to_path_buf(),
                        source,
                    })?;
                if got < want {
                    return Err(crate::pack::UnpackError::Corrupt {
                        path: archive.to_path_buf(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "entry {:?} is truncated",
                                crate::manifest::show(&entry.path)
                            ),
                        ),
                    });
                }
                tx.blocking_send(piece.into()).map_err(|_| stopped())?;
                left -= want as u64;
            }
            Ok(())
        });
    if streamed.is_err() && hung_up.get() {
        return Ok(None);
    }
    let (got, read) = streamed.map_err(|e| {
        // "corrupt or truncated archive: <decoder's words>", without repeating the path.
        let text = e.to_string();
        let mut reason = text
            .strip_prefix(&format!("{}: ", archive.display()))
            .unwrap_or(&text)
            .to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            reason.push_str(&format!(": {c}"));
            cause = c.source();
        }
        unpack_failed(archive, e, reason)
    })?;
    if next.next().is_some() || got.identity() != manifest.identity() {
        return Err(DeployError::ArtifactDamaged {
            path: archive.to_path_buf(),
            reason: "the archive's entries differ from its manifest".into(),
        });
    }
    Ok(Some(read))
}

/// The sha256 and size of `f`, read whole with positioned reads: the file offset, which a clone
/// of the handle shares, is left to the reader of that clone.
fn sha256_at(f: &std::fs::File) -> std::io::Result<(Digest, u64)> {
    use sha2::Digest as _;
    use std::os::unix::fs::FileExt;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        match f.read_at(&mut buf, at) {
            Ok(0) => return Ok((Digest(h.finalize().into()), at)),
            Ok(n) => {
                h.update(&buf[..n]);
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Prefix of the private unpack dirs: `sealpush-unpack-<pid>-<random>`.
const ORPHAN_PREFIX: &str = "sealpush-unpack-";

/// Where to unpack: `$SEALPUSH_TMPDIR` if set; else `/dev/shm` when it is a tmpfs with room for
/// twice the tree (creating 100,000 small files there took 3 s here, against 50 s on the
/// loaded ext4 `/tmp`: file creation, not bandwidth, dominates small trees); else the system
/// temp dir.
fn scratch_base(unpacked_bytes: u64, files: u64) -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("SEALPUSH_TMPDIR").filter(|v| !v.is_empty()) {
        return d.into();
    }
    let shm = std::path::Path::new("/dev/shm");
    let need = unpacked_bytes
        .saturating_add(files.saturating_mul(4096))
        .saturating_mul(2);
    let local = crate::remote::local::LocalRemote::new();
    if let Ok(st) = crate::remote::Remote::statvfs(&local, shm) {
        // TMPFS_MAGIC is not in statvfs; a writable shm with room is what matters.
        if !st.read_only
            && st.avail_bytes() > need
            && std::fs::metadata(shm).is_ok_and(|m| m.is_dir())
        {
            return shm.to_path_buf();
        }
    }
    std::env::temp_dir()
}

/// Removes unpack dirs left in `base` by deploys that were killed (`kill -9` skips the temp
/// dir's destructor): only names with our prefix whose pid no longer runs.
fn sweep_orphans(base: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(ORPHAN_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest
            .split_once('-')
            .and_then(|(p, _)| p.parse::<i32>().ok())
            .filter(|&p| p > 0)
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A manifest as a shape.
pub fn shape_of(m: &Manifest) -> Shape {
    m.entries
        .iter()
        .map(|e| {
            let k = match &e.kind {
                EntryKind::File {
                    size,
                    sha256,
                    executable,
                } => Kind::File {
                    size: *size,
                    sha256: Some(*sha256),
                    executable: *executable,
                },
                EntryKind::Symlink { target } => Kind::Symlink {
                    target: target.clone(),
                },
                EntryKind::Dir => Kind::Dir,
            };
            (e.path.clone(), k)
        })
        .collect()
}

/// The manifest identity of a walked and hashed shape.
pub fn identity_of(s: &Shape) -> Result<Digest, String> {
    manifest_of(s).map(|m| m.identity())
}

/// A shape (every file hashed) as a manifest.
pub fn manifest_of(s: &Shape) -> Result<Manifest, String> {
    let mut entries = Vec::with_capacity(s.len());
    for (p, k) in s {
        entries.push(match k {
            Kind::File {
                size,
                sha256: Some(d),
                executable,
            } => Entry::file(p.clone(), *size, *d, *executable),
            Kind::File { sha256: None, .. } => {
                return Err(format!("{} was not hashed", String::from_utf8_lossy(p)))
            }
            Kind::Dir => Entry::dir(p.clone()),
            Kind::Symlink { target } => Entry::symlink(p.clone(), target.clone()),
            Kind::Other(k) => {
                return Err(format!(
                    "{} is a {}, which no artifact holds",
                    String::from_utf8_lossy(p),
                    k.noun()
                ))
            }
        });
    }
    Manifest::from_entries(entries, None).map_err(|e| e.to_string())
}

/// An unpack error as the deploy reports it: one that says the archive's bytes are not the
/// plan's (corrupt, rejected, not matching its manifest) is [`DeployError::ArtifactDamaged`],
/// a failed check; anything else (a temp dir that cannot be written, say) is this run's.
fn unpack_failed(
    path: &std::path::Path,
    e: crate::pack::UnpackError,
    reason: String,
) -> DeployError {
    use crate::pack::UnpackError as U;
    let path = path.to_path_buf();
    match e {
        U::UnknownFormat { .. }
        | U::Corrupt { .. }
        | U::Rejected { .. }
        | U::Mismatch { .. }
        | U::ArchiveMismatch { .. }
        | U::Manifest { .. } => DeployError::ArtifactDamaged { path, reason },
        _ => DeployError::Artifact { path, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_dead_owners_dirs_with_our_prefix() {
        let d = tempfile::tempdir().unwrap();
        // pid 0x7fff_fff0 is above any pid_max, so never running.
        let dead = d.path().join(format!("{ORPHAN_PREFIX}2147483632-abc"));
        let live = d
            .path()
            .join(format!("{ORPHAN_PREFIX}{}-abc", std::process::id()));
        let other = d.path().join("sealpush-unpack-notapid");
        let foreign = d.path().join("someone-else-2147483632-abc");
        for p in [&dead, &live, &other, &foreign] {
            std::fs::create_dir(p).unwrap();
            std::fs::write(p.join("f"), b"x").unwrap();
        }
        sweep_orphans(d.path());
        assert!(!dead.exists());
        assert!(live.exists() && other.exists() && foreign.exists());
    }
}
