//! The local content-addressed artifact store; mirrors `store-layout.md` ("Store layout").
//!
//! ```text
//! STORE/
//!   artifacts/<id>/archive.tar.zst | archive.tar.gz
//!                  manifest.txt        canonical manifest (identity + recipe record)
//!                  meta.json           ArtifactMeta
//!   tmp/<random>/                      an add in progress (or a crashed one: `gc` removes it)
//! ```
//! `<id>` is `<tree identity hex>-<name>.l<level>[.m<mtime>].<format>`: a function of the tree's
//! content, its name and the archive options, so packing the same tree twice with the same options
//! stores one artifact. An artifact directory is built completely under `tmp/` and appears
//! under `artifacts/` by one rename that never replaces anything, so readers only ever see
//! complete artifacts, and two concurrent adds of the same tree keep exactly one.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifest::{Manifest, ManifestError};
use crate::pack::{self, Format, PackError, PackOptions, UnpackError};
use crate::plan::ArtifactRef;
use crate::progress::Progress;

/// The small metadata record beside each stored archive (`meta.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// The artifact's name (the packed directory's name unless given).
    pub name: String,
    pub format: Format,
    /// Compression level; `None` for an archive that sealpush did not pack.
    pub level: Option<i32>,
    /// The mtime every entry carries (`SOURCE_DATE_EPOCH` or the default); `None` for an archive
    /// that sealpush did not pack.
    #[serde(default)]
    pub mtime: Option<u64>,
    pub archive_sha256: Digest,
    pub archive_size: u64,
    /// sha256 of the manifest's entry section.
    pub tree_identity: Digest,
    /// `find NAME -type f | sort | xargs sha256sum | sha256sum` from the tree's parent.
    pub recipe_digest: Option<Digest>,
    /// Collation locale of `recipe_digest` ("C").
    pub recipe_locale: Option<String>,
    pub files: u64,
    pub unpacked_bytes: u64,
    /// The sealpush that packed it (informational: nothing checks it).
    pub tool_version: String,
    /// The packed directory's name, which the recipe's paths start with (it differs from `name`
    /// under `--name`); `None` when not UTF-8, or for artifacts stored before 0.2.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_name: Option<String>,
}

/// An artifact: its archive, its manifest and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredArtifact {
    pub archive: PathBuf,
    pub manifest: Manifest,
    pub meta: ArtifactMeta,
    /// The store id, `None` for an archive file outside the store.
    pub id: Option<String>,
}

impl StoredArtifact {
    /// The artifact as a plan refers to it.
    pub fn artifact_ref(&self) -> ArtifactRef {
        ArtifactRef {
            path: self.archive.clone(),
            format: self.meta.format.to_string(),
            archive_sha256: self.meta.archive_sha256,
            archive_size: self.meta.archive_size,
            tree_identity: self.meta.tree_identity,
            // An archive without a recipe record (not packed by sealpush) has the all-zero
            // digest here, which matches no real tree.
            recipe_digest: self.meta.recipe_digest.unwrap_or_default(),
            files: self.meta.files,
            unpacked_bytes: self.meta.unpacked_bytes,
            // Set by preflight, which hashes the archive.
            archive_stamp: None,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no store location: set SEALPUSH_STORE, XDG_DATA_HOME or HOME, or pass --store")]
    NoLocation,
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("{path}: invalid manifest")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error("{path}: invalid metadata")]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid artifact name {name:?}: {reason} (choose one with --name)")]
    BadName { name: String, reason: &'static str },
    #[error("no artifact matches {reference:?} in {store}{hint} (see `sealpush store list`)")]
    NotFound {
        reference: String,
        store: PathBuf,
        /// Why a near miss did not match (starting with `: `), or empty.
        hint: String,
    },
    #[error("{path}: {reason} ({hint})")]
    NotAnArtifact {
        path: PathBuf,
        reason: String,
        hint: String,
    },
    #[error("{reference:?} is ambiguous: it matches {} (give one of these instead)", candidates.join(", "))]
    Ambiguous {
        reference: String,
        candidates: Vec<String>,
    },
    #[error("{path}: {what}: expected {expected}, found {actual}")]
    Mismatch {
        path: PathBuf,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{path}: content does not match the manifest: {detail}")]
    ContentMismatch { path: PathBuf, detail: String },
    #[error("{path}: broken artifact: {reason}")]
    Broken { path: PathBuf, reason: String },
    #[error(
        "{path}: is a symlink; the store reads, writes and removes only through its own \
         directories, never through a link out of it: replace the link with a directory, or \
         pass the link's target as --store if it is a store of its own"
    )]
    LinkedLayout { path: PathBuf },
    #[error(
        "the store {store} is inside the tree {tree}, so the pack would archive its own temp \
         files: pass a --store outside the tree"
    )]
    StoreInTree { store: PathBuf, tree: PathBuf },
    #[error("{path}: is not a directory; remove it so that the store can create its own")]
    NotADirectory { path: PathBuf },
    #[error("{path}: is not a directory, so it cannot be a store: give --store (or SEALPUSH_STORE) a directory")]
    RootNotADirectory { path: PathBuf },
    #[error(
        "{path} is not a sealpush store (it has neither artifacts/ nor tmp/), so gc removed \
         nothing from it: give the store with --store or SEALPUSH_STORE"
    )]
    NotAStore { path: PathBuf },
}

impl StoreError {
    /// True when the error means "a check failed" (a digest or content mismatch, a broken
    /// artifact) rather than "could not run".
    pub fn is_check_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Mismatch { .. }
                | StoreError::ContentMismatch { .. }
                | StoreError::Broken { .. }
                | StoreError::Unpack(UnpackError::Mismatch { .. })
                | StoreError::Unpack(UnpackError::ArchiveMismatch { .. })
                | StoreError::Unpack(UnpackError::Corrupt { .. })
                | StoreError::Unpack(UnpackError::Rejected { .. })
        )
    }

    /// True when the error proves the artifact damaged (a part missing or of the wrong kind, or
    /// content that does not parse or agree); false when reading it failed for a reason that
    /// says nothing about it (too many open files, EIO, EACCES).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            StoreError::Broken { .. } | StoreError::Meta { .. } | StoreError::Manifest { .. }
        )
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One `list` row: a store id and its artifact, or why it could not be loaded.
pub type Listed = (String, Result<StoredArtifact, StoreError>);

/// What `gc` removed (or would remove), and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GcItem {
    pub path: PathBuf,
    pub reason: String,
}

/// Temp directories younger than this are left alone by `gc`: they may be a pack in progress.
pub const GC_TMP_GRACE: Duration = Duration::from_secs(600);

/// A local artifact store.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `dir`, or by default at `$SEALPUSH_STORE`, else
    /// `$XDG_DATA_HOME/sealpush/store`, else `~/.local/share/sealpush/store`.
    pub fn open(dir: Option<&Path>) -> Result<Store, StoreError> {
        let root = match dir {
            Some(d) => d.to_path_buf(),
            None => default_location()?,
        };
        refuse_a_file_root(&root)?;
        for sub in ["artifacts", "tmp"] {
            let p = root.join(sub);
            if fs::symlink_metadata(&p).is_err() {
                fs::create_dir_all(&p).map_err(io_at(&p))?;
            }
        }
        let store = Store { root };
        store.check_layout()?;
        Ok(store)
    }

    /// Opens the store at `dir` (or the default location) for reading only: a store that is
    /// not there reads as empty and is not created, so a read-only command (or a mistyped
    /// `--store`) leaves nothing behind. The parts that are there are checked as by
    /// [`Store::open`].
    pub fn open_for_reading(dir: Option<&Path>) -> Result<Store, StoreError> {
        let root = match dir {
            Some(d) => d.to_path_buf(),
            None => default_location()?,
        };
        refuse_a_file_root(&root)?;
        let store = Store { root };
        store.check_layout_of_what_is_there()?;
        Ok(store)
    }

    /// [`Store::check_layout`] of the parts that exist.
    fn check_layout_of_what_is_there(&self) -> Result<(), StoreError> {
        self.check_parts(false)
    }

    /// Refuses a `tmp/` or `artifacts/` that is a symlink (or not a directory): gc removes what
    /// it finds in them and add writes there, which through a link would act outside the store.
    /// The root itself may be a link: that is the user's choice of place.
    fn check_layout(&self) -> Result<(), StoreError> {
        self.check_parts(true)
    }

    /// Both parts of the layout checked; a missing one is an error only when `required`.
    fn check_parts(&self, required: bool) -> Result<(), StoreError> {
        for sub in ["artifacts", "tmp"] {
            let path = self.root.join(sub);
            match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(e) => return Err(io_at(&path)(e)),
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(StoreError::LinkedLayout { path })
                }
                Ok(md) if !md.is_dir() => return Err(StoreError::NotADirectory { path }),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn artifacts_dir(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// Packs `dir` into the store (see [`Store::add_dir_reporting`]).
    pub fn add_dir(
        &self,
        dir: &Path,
        name: Option<&str>,
        opts: &PackOptions,
        progress: &dyn Progress,
    ) -> Result<StoredArtifact, StoreError> {
        self.add_dir_reporting(dir, name, opts, progress)
            .map(|(a, _)| a)
    }

    /// Packs `dir` into the store; the bool is false when an identical artifact was already
    /// stored (then the stored one is returned and the new bytes are discarded).
    pub fn add_dir_reporting(
        &self,
        dir: &Path,
        name: Option<&str>,
        opts: &PackOptions,
        progress: &dyn Progress,
    ) -> Result<(StoredArtifact, bool), StoreError> {
        let abs = fs::canonicalize(dir).map_err(io_at(dir))?;
        // The pack's own temp archive would be in the tree it packs.
        let root = fs::canonicalize(&self.root).map_err(io_at(&self.root))?;
        if root.starts_with(&abs) {
            return Err(StoreError::StoreInTree {
                store: root,
                tree: abs,
            });
        }
        let dir_name = abs.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
        let tree_name = std::str::from_utf8(dir_name).ok().map(String::from);
        let name = match name {
            Some(n) => n.to_string(),
            None => tree_name.clone().ok_or_else(|| StoreError::BadName {
                name: String::from_utf8_lossy(dir_name).into_owned(),
                reason: "not UTF-8",
            })?,
        };
        check_name(&name)?;
        let tmp_root = self.root.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix("add-")
            .tempdir_in(&tmp_root)
            .map_err(io_at(&tmp_root))?;
        let archive_name = format!("archive.{}", opts.format.extension());
        let archive = tmp.path().join(&archive_name);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&archive)
            .map_err(io_at(&archive))?;
        let packed = pack::pack_dir(
            dir,
            io::BufWriter::with_capacity(1 << 20, &file),
            opts,
            progress,
        )?;
        // The last safe point before the artifact appears: a stop asked for during the pack's
        // last steps still stores nothing (`tmp` is removed when dropped).
        if crate::interrupt::requested() {
            return Err(PackError::Interrupted.into());
        }
        // No fsync, deliberately: the store is a cache of verifiable content. Every reader
        // checks what it uses (load: sizes and identity; unpack, verify and deploy: sha256 and
        // content against the manifest), so a crash can cost a re-pack, never a wrong deploy,
        // and `gc` drops artifacts whose parts disagree. Syncing 2 GiB made `pack` disk-bound
        // (15 s against 6 s for `tar | zstd`, which does not sync either).
        let m = &packed.manifest;
        let meta = ArtifactMeta {
            name: name.clone(),
            format: opts.format,
            level: Some(opts.level),
            mtime: Some(opts.mtime),
            archive_sha256: packed.archive_sha256,
            archive_size: packed.archive_size,
            tree_identity: m.identity(),
            recipe_digest: m.recipe.as_ref().map(|r| r.digest),
            recipe_locale: m.recipe.as_ref().map(|r| r.locale.clone()),
            files: m.file_count(),
            unpacked_bytes: m.total_bytes(),
            tool_version: crate::TOOL_VERSION.to_string(),
            tree_name,
        };
        write_new(&tmp.path().join("manifest.txt"), &m.encode())?;
        let mut json = serde_json::to_vec_pretty(&meta).expect("meta serialises");
        json.push(b'\n');
        write_new(&tmp.path().join("meta.json"), &json)?;
        let id = expected_id(&meta);
        let final_dir = self.artifacts_dir().join(&id);
        let published = StoredArtifact {
            archive: final_dir.join(archive_name),
            manifest: packed.manifest,
            meta,
            id: Some(id.clone()),
        };
        match pack::rename_noreplace(tmp.path(), &final_dir) {
            Ok(()) => {
                let _ = tmp.keep();
                Ok((published, true))
            }
            Err(UnpackError::Exists { .. }) => {
                // `load` checks sizes, not bytes: an archive damaged in place still loads, and
                // must not be trusted as "already stored" (nor copied to --out). The archive
                // just packed is known good, so a stored one that is not what its meta.json
                // records is replaced, as a broken artifact is.
                let existing = match self.load(&id).and_then(|a| {
                    if archive_intact(&a) {
                        Ok(a)
                    } else {
                        Err(StoreError::Broken {
                            path: a.archive,
                            reason: "archive sha256 differs from meta.json's".into(),
                        })
                    }
                }) {
                    Ok(a) => a,
                    Err(
                        StoreError::Broken { .. }
                        | StoreError::Manifest { .. }
                        | StoreError::Meta { .. },
                    ) => {
                        // A crashed or damaged artifact under this id: moved aside into tmp/
                        // (one rename, so of packs racing here one moves it and the others find
                        // it gone) and removed from there, then the complete one just built is
                        // published. A pack that loses the race to publish finds the winner's
                        // artifact and reports it as stored.
                        let aside = tempfile::Builder::new()
                            .prefix("broken-")
                            .tempdir_in(&tmp_root)
                            .map_err(io_at(&tmp_root))?;
                        match fs::rename(&final_dir, aside.path().join("artifact")) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io_at(&final_dir)(e)),
                        }
                        return match pack::rename_noreplace(tmp.path(), &final_dir) {
                            Ok(()) => {
                                let _ = tmp.keep();
                                Ok((published, true))
                            }
                            Err(UnpackError::Exists { .. }) => {
                                let winner = self.load(&id)?;
                                if !archive_intact(&winner) {
                                    return Err(StoreError::Broken {
                                        path: winner.archive,
                                        reason: "replaced meanwhile by another pack with an archive that is not what its meta.json records".into(),
                                    });
                                }
                                Ok((winner, false))
                            }
                            Err(e) => Err(e.into()),
                        };
                    }
                    Err(e) => return Err(e),
                };
                if existing.meta.archive_sha256 != published.meta.archive_sha256 {
                    // Another sealpush may write other bytes for the same tree (0.2.0 turned
                    // zstd's pre-splitter off): the stored artifact holds the same tree and
                    // manifest, and is kept. The same version writing other bytes is a broken
                    // promise of reproducibility, or a damaged store: an error.
                    if existing.meta.tool_version != published.meta.tool_version {
                        return Ok((existing, false));
                    }
                    return Err(StoreError::Mismatch {
                        path: existing.archive,
                        what: "stored archive sha256 (packed again with other bytes: run `sealpush store verify`)",
                        expected: published.meta.archive_sha256.to_hex(),
                        actual: existing.meta.archive_sha256.to_hex(),
                    });
                }
                Ok((existing, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Loads the artifact with store id `id`, checking that its parts agree with each other
    /// (not re-hashing the archive: that is [`Store::verify`]).
    pub fn load(&self, id: &str) -> Result<StoredArtifact, StoreError> {
        load_dir(&self.artifacts_dir().join(id), Some(id.to_string()))
    }

    /// The name recorded in an artifact's meta.json, if it can be read.
    fn meta_name(&self, id: &str) -> Option<String> {
        let bytes = read_part(&self.artifacts_dir().join(id).join("meta.json"), META_MAX).ok()?;
        serde_json::from_slice::<ArtifactMeta>(&bytes)
            .ok()
            .map(|m| m.name)
    }

    /// Every store id, sorted.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.artifacts_dir();
        let mut ids = Vec::new();
        for e in read_dir_or_empty(&dir)? {
            let e = e.map_err(io_at(&dir))?;
            if let Some(s) = e.file_name().to_str() {
                if e.file_type().map_err(io_at(&e.path()))?.is_dir() {
                    ids.push(s.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Every stored artifact (or why it could not be loaded), by id.
    pub fn list(&self) -> Result<Vec<Listed>, StoreError> {
        Ok(self
            .ids()?
            .into_iter()
            .map(|id| {
                let a = self.load(&id);
                (id, a)
            })
            .collect())
    }

    /// Resolves a REF: a path to an archive file (in the store or not), a path to an artifact
    /// directory, a store id, an unambiguous id prefix, or an artifact name (unambiguous).
    pub fn resolve(&self, reference: &str) -> Result<StoredArtifact, StoreError> {
        let here = resolve_path(Path::new(reference));
        if reference.contains('/') {
            if let Some(found) = here {
                return found;
            }
        } else if let Some(found) = here {
            // A bare name that is also a file here: the store's artifact of that name or id
            // would be silently passed over for whatever the file holds. Both: ambiguous.
            return match self.resolve_in_store(reference) {
                Err(StoreError::NotFound { .. }) => found,
                // The store has nothing by that name, and the file here is an archive: it is
                // the answer (the store's "not an archive" fallback judged only its name).
                Err(StoreError::NotAnArtifact { .. }) if found.is_ok() => found,
                Ok(stored)
                    if found
                        .as_ref()
                        .is_ok_and(|f| same_file(&f.archive, &stored.archive)) =>
                {
                    Ok(stored)
                }
                Ok(stored) => Err(StoreError::Ambiguous {
                    reference: reference.to_string(),
                    candidates: vec![
                        format!("./{reference} (here, in the working directory; write it so to mean it)"),
                        stored.id.unwrap_or_default(),
                    ],
                }),
                Err(e) => Err(e),
            };
        }
        self.resolve_in_store(reference)
    }

    /// [`Store::resolve`] for a reference that is not a path: a store id, an unambiguous id
    /// prefix, or an artifact name.
    fn resolve_in_store(&self, reference: &str) -> Result<StoredArtifact, StoreError> {
        let ids = self.ids()?;
        if ids.iter().any(|id| id == reference) {
            return self.load(reference);
        }
        let by_prefix: Vec<&String> = if reference.len() >= 4 {
            ids.iter().filter(|id| id.starts_with(reference)).collect()
        } else {
            Vec::new()
        };
        let pick = |found: Vec<&String>| -> Result<StoredArtifact, StoreError> {
            match found.as_slice() {
                [one] => self.load(one),
                _ => Err(StoreError::Ambiguous {
                    reference: reference.to_string(),
                    candidates: found.iter().map(|s| s.to_string()).collect(),
                }),
            }
        };
        if !by_prefix.is_empty() {
            return pick(by_prefix);
        }
        // Names are in meta.json: read only that (a full load decodes and hashes the manifest,
        // which for a tree of 100,000 files costs more than the lookup is worth).
        let mut by_name: Vec<&String> = ids
            .iter()
            .filter(|id| self.meta_name(id).as_deref() == Some(reference))
            .collect();
        if by_name.len() > 1 {
            // Of several with that name, a broken one is not a candidate (unless all are).
            let loadable: Vec<&String> = by_name
                .iter()
                .copied()
                .filter(|id| self.load(id).is_ok())
                .collect();
            if !loadable.is_empty() {
                by_name = loadable;
            }
        }
        if !by_name.is_empty() {
            return pick(by_name);
        }
        // Not in the store, but there is something by that name here that is not an archive
        // (a dangling link, a loop, a fifo): its problem is the better answer. A directory is
        // more likely a tree whose artifact was meant.
        if let Ok(md) = fs::symlink_metadata(reference) {
            if !md.is_dir() {
                let hint = format!(
                    "and no artifact in {} has that id or name",
                    self.root.display()
                );
                return Err(not_an_artifact(Path::new(reference), hint));
            }
        }
        // A short prefix of a real id: the artifact is there, the prefix is too short.
        let hint = if ids.iter().any(|id| id.starts_with(reference)) && !reference.is_empty() {
            ": an id prefix needs at least 4 characters".to_string()
        } else {
            String::new()
        };
        Err(StoreError::NotFound {
            reference: reference.to_string(),
            store: self.root.clone(),
            hint,
        })
    }

    /// Re-hashes the archive (sha256 and size against the metadata) and its content against
    /// the manifest. A mismatch is an error for which [`StoreError::is_check_failure`] holds.
    pub fn verify(artifact: &StoredArtifact, progress: &dyn Progress) -> Result<(), StoreError> {
        verify_artifact(artifact, progress).map(drop)
    }

    /// [`Store::verify`], also returning what could not be checked (each a sentence).
    pub fn verify_reporting(
        artifact: &StoredArtifact,
        progress: &dyn Progress,
    ) -> Result<Vec<String>, StoreError> {
        verify_artifact(artifact, progress)
    }

    /// Removes temp leftovers older than [`GC_TMP_GRACE`], anything in the store that is not part
    /// of the layout, and artifacts whose parts are missing or disagree (it does not re-hash
    /// archives; `verify` does). With `dry_run`, only reports. Only proven damage condemns an
    /// artifact: any other error (too many open files, EIO, EACCES) stops gc, before anything
    /// is removed when it is met while looking.
    pub fn gc(&self, dry_run: bool) -> Result<Vec<GcItem>, StoreError> {
        // A directory with neither part of the layout is no store (a mistyped --store, a home
        // directory): everything in it would count as "not part of the layout".
        let part = |sub| fs::symlink_metadata(self.root.join(sub)).is_ok();
        if !part("artifacts") && !part("tmp") && read_dir_or_empty(&self.root)?.next().is_some() {
            return Err(StoreError::NotAStore {
                path: self.root.clone(),
            });
        }
        let mut out = Vec::new();
        let now = SystemTime::now();
        let tmp = self.root.join("tmp");
        for e in read_dir_or_empty(&tmp)? {
            let e = e.map_err(io_at(&tmp))?;
            let p = e.path();
            // An error reading a temp dir's times says nothing about its age: stop, rather than
            // remove a pack in progress.
            match newest_mtime(&p).map_err(io_at(&p))? {
                None => continue,
                Some(t) if now.duration_since(t).unwrap_or_default() < GC_TMP_GRACE => continue,
                Some(_) => {}
            }
            out.push(GcItem {
                path: p,
                reason: "leftover of an interrupted pack".into(),
            });
        }
        for e in read_dir_or_empty(&self.root)? {
            let e = e.map_err(io_at(&self.root))?;
            let n = e.file_name();
            if n != "artifacts" && n != "tmp" {
                out.push(GcItem {
                    path: e.path(),
                    reason: "not part of the store layout".into(),
                });
            }
        }
        let arts = self.artifacts_dir();
        // Which directory each condemned artifact was when examined: a pack may replace it
        // under the same id before the removal (see `remove_examined`).
        let mut examined: Vec<Option<(u64, u64)>> = vec![None; out.len()];
        for e in read_dir_or_empty(&arts)? {
            let e = e.map_err(io_at(&arts))?;
            let p = e.path();
            let md = e.metadata().map_err(io_at(&p))?;
            let is_dir = md.is_dir();
            let id = e.file_name().to_str().map(String::from);
            let reason = match (&id, is_dir) {
                (Some(id), true) => match self.load(id) {
                    Ok(a) => {
                        let expected = expected_id(&a.meta);
                        if &expected != id {
                            Some(format!("named {id} but its content says {expected}"))
                        } else {
                            None
                        }
                    }
                    // Only proven damage condemns an artifact. Any other error (too many
                    // open files, EIO, EACCES) says nothing about it: gc stops, removing nothing.
                    Err(err) if err.is_damage() => Some(format!("broken: {}", error_chain(&err))),
                    Err(err) => return Err(err),
                },
                _ => Some("not an artifact directory".into()),
            };
            if let Some(reason) = reason {
                out.push(GcItem { path: p, reason });
                examined.push(is_dir.then(|| (md.dev(), md.ino())));
            }
        }
        if !dry_run {
            let tmp_root = self.root.join("tmp");
            // A condemned artifact is moved into tmp/ first: a store opened for reading may
            // have lost it.
            if examined.iter().any(Option::is_some) {
                match fs::create_dir(&tmp_root) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                        return Err(io_at(&tmp_root)(e))
                    }
                    _ => {}
                }
            }
            // Once more just before removing: the layout may have changed since `open`.
            self.check_layout_of_what_is_there()?;
            for (item, stamp) in out.iter_mut().zip(&examined) {
                if let Some(stamp) = stamp {
                    if !remove_examined(&item.path, *stamp, &tmp_root)? {
                        item.reason
                            .push_str(" (replaced by a pack meanwhile: kept)");
                    }
                    continue;
                }
                let md = fs::symlink_metadata(&item.path).map_err(io_at(&item.path))?;
                if md.is_dir() {
                    fs::remove_dir_all(&item.path).map_err(io_at(&item.path))?;
                } else {
                    fs::remove_file(&item.path).map_err(io_at(&item.path))?;
                }
            }
        }
        Ok(out)
    }
}

/// A store root that exists (through a symlink, which is allowed) but is not a directory: said
/// of the root, not of the `artifacts/` that cannot be made or read under it.
fn refuse_a_file_root(root: &Path) -> Result<(), StoreError> {
    match fs::metadata(root) {
        Ok(md) if !md.is_dir() => Err(StoreError::RootNotADirectory {
            path: root.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// The entries of `dir`; none when it does not exist (a store opened for reading that is not
/// there, or only in part).
fn read_dir_or_empty(
    dir: &Path,
) -> Result<Box<dyn Iterator<Item = std::io::Result<fs::DirEntry>>>, StoreError> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(Box::new(rd)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Box::new(std::iter::empty())),
        Err(e) => Err(io_at(dir)(e)),
    }
}

/// Resolves REF as [`Store::resolve`] does, without creating a store to do it: a path (REF
/// with a `/`) is read as is, and a bare name that is a file here is read as that file when
/// there is no store (at `dir`, or the default location) that could also hold it.
pub fn resolve_anywhere(reference: &str, dir: Option<&Path>) -> Result<StoredArtifact, StoreError> {
    if let Some(found) = resolve_path(Path::new(reference)) {
        if is_plainly_a_path(reference, dir) {
            return found;
        }
    }
    Store::open_for_reading(dir)?.resolve(reference)
}

/// True when REF can only mean a path: it has a `/`, or there is no store (at `dir`, or the
/// default location) whose artifacts a bare name could also name.
pub fn is_plainly_a_path(reference: &str, dir: Option<&Path>) -> bool {
    reference.contains('/')
        || !match dir {
            Some(d) => d.is_dir(),
            None => default_location().is_ok_and(|d| d.is_dir()),
        }
}

/// True when `a` and `b` name the same file (however spelled).
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// Removes the artifact directory at `path` if it is still the one examined (`stamp`: device
/// and inode), and reports whether it did. It is first moved into `tmp_root` in one rename, so
/// a pack that publishes a complete artifact under the same id meanwhile (after moving the
/// broken one aside) is never removed instead: a directory that is not the one examined is
/// moved back, or, if yet another was published meanwhile, left to the next gc in `tmp/`.
fn remove_examined(path: &Path, stamp: (u64, u64), tmp_root: &Path) -> Result<bool, StoreError> {
    let aside = tempfile::Builder::new()
        .prefix("gc-")
        .tempdir_in(tmp_root)
        .map_err(io_at(tmp_root))?;
    let moved = aside.path().join("artifact");
    match fs::rename(path, &moved) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(io_at(path)(e)),
    }
    // From here on, what was moved may be a good artifact: on any error it stays in tmp/
    // (the TempDir would remove it when dropped), for the next gc to judge once it is old.
    let md = match fs::symlink_metadata(&moved) {
        Ok(md) => md,
        Err(e) => {
            let _ = aside.keep();
            return Err(io_at(&moved)(e));
        }
    };
    if (md.dev(), md.ino()) == stamp {
        fs::remove_dir_all(&moved).map_err(io_at(&moved))?;
        return Ok(true);
    }
    match pack::rename_noreplace(&moved, path) {
        Ok(()) => {}
        // Yet another was published: this one stays in tmp/ (a complete artifact, but not
        // the one in use), where the next gc removes it once it is old.
        Err(UnpackError::Exists { .. }) => {
            let _ = aside.keep();
        }
        Err(e) => {
            let _ = aside.keep();
            return Err(e.into());
        }
    }
    Ok(false)
}

/// Resolves a REF that is a path to an archive file or an artifact directory, without a store
/// (nothing is created); `None` when it is neither, and the store must be asked.
///
/// A store id or name never contains `/`, so a reference that does is a path, and when it names
/// no archive or artifact directory the answer is what is wrong with it (missing, a symlink
/// loop, a directory), not a store lookup.
pub fn resolve_path(p: &Path) -> Option<Result<StoredArtifact, StoreError>> {
    let is_path = p.as_os_str().as_bytes().contains(&b'/');
    let Ok(md) = fs::metadata(p) else {
        return is_path.then(|| Err(not_an_artifact(p, PATH_HINT.into())));
    };
    let id_of = |dir: &Path| dir.file_name().and_then(|n| n.to_str()).map(String::from);
    if md.is_file() {
        if is_artifact_archive(p) {
            let dir = p.parent().unwrap_or(Path::new("."));
            let a = match load_dir(dir, id_of(dir)) {
                Ok(a) => a,
                Err(e) => return Some(Err(e)),
            };
            // meta.json names the format: the other `archive.*` is not the artifact's.
            if a.archive.file_name() == p.file_name() {
                return Some(Ok(a));
            }
        }
        return Some(external(p));
    }
    if md.is_dir() && p.join("meta.json").is_file() {
        return Some(load_dir(p, id_of(p)));
    }
    is_path.then(|| Err(not_an_artifact(p, PATH_HINT.into())))
}

const PATH_HINT: &str = "a reference with `/` is a path, to an archive or an artifact directory";

/// Why `p`, which is not a readable archive file, is no artifact.
fn not_an_artifact(p: &Path, hint: String) -> StoreError {
    let reason = match fs::metadata(p) {
        Ok(md) if md.is_dir() => {
            "is a directory without meta.json: neither an archive nor an artifact directory".into()
        }
        Ok(md) if md.is_file() => "is not a tar.zst or tar.gz archive".into(),
        Ok(_) => "is a fifo, socket or device, not an archive".into(),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            "is a symlink loop: too many levels of symbolic links".into()
        }
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                && fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            "is a symlink whose target does not exist".into()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => "no such file or directory".into(),
        Err(e) => e.to_string(),
    };
    StoreError::NotAnArtifact {
        path: p.to_path_buf(),
        reason,
        hint,
    }
}

/// Is `path` named as an artifact's archive (`archive.tar.zst` or `archive.tar.gz`) in a
/// directory that holds meta.json and manifest.txt? Any other file there is just a file: the
/// path names what is read, never a neighbour.
pub fn is_artifact_archive(path: &Path) -> bool {
    let named = path
        .file_name()
        .is_some_and(|n| n == "archive.tar.zst" || n == "archive.tar.gz");
    let dir = path.parent().unwrap_or(Path::new("."));
    named && dir.join("meta.json").is_file() && dir.join("manifest.txt").is_file()
}

/// The store id an artifact with this metadata has: every input of the archive's bytes, the
/// mtime only when it is not the default (`SOURCE_DATE_EPOCH` was set).
pub fn expected_id(meta: &ArtifactMeta) -> String {
    let mtime = match meta.mtime {
        Some(t) if t != pack::DEFAULT_MTIME => format!(".m{t}"),
        _ => String::new(),
    };
    let level = meta
        .level
        .map_or_else(|| "?".to_string(), |l| l.to_string());
    format!(
        "{}-{}.l{level}{mtime}.{}",
        meta.tree_identity.to_hex(),
        meta.name,
        meta.format.extension()
    )
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

/// The newest mtime of `p` and, for a directory, of its entries; `None` when `p` is gone (a
/// pack just published it).
fn newest_mtime(p: &Path) -> io::Result<Option<SystemTime>> {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let md = match fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut t = md.modified()?;
    if md.is_dir() {
        let rd = match fs::read_dir(p) {
            Ok(rd) => rd,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        for e in rd {
            match e.and_then(|e| e.metadata()) {
                Ok(m) => t = t.max(m.modified()?),
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Some(t))
}

fn default_location() -> Result<PathBuf, StoreError> {
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(p) = abs(std::env::var_os("SEALPUSH_STORE")) {
        return Ok(p);
    }
    if let Some(p) = abs(std::env::var_os("XDG_DATA_HOME")) {
        return Ok(p.join("sealpush/store"));
    }
    if let Some(p) = abs(std::env::var_os("HOME")) {
        return Ok(p.join(".local/share/sealpush/store"));
    }
    Err(StoreError::NoLocation)
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::BadName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 128 {
        return bad("longer than 128 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("starts with `.` or `-`");
    }
    if name
        .chars()
        .any(|c| c == '/' || c.is_control() || c.is_whitespace())
    {
        return bad("contains `/`, whitespace or a control character");
    }
    Ok(())
}

fn write_new(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_at(path))?;
    f.write_all(data).map_err(io_at(path))
}

/// Does the stored archive hash to what its meta.json records? Any failure to read it counts
/// as no.
fn archive_intact(a: &StoredArtifact) -> bool {
    open_part(&a.archive)
        .map_err(part_at(&a.archive))
        .and_then(|(f, _)| sha256_reader(f, &a.archive))
        .is_ok_and(|(sha, size)| sha == a.meta.archive_sha256 && size == a.meta.archive_size)
}

/// Most bytes read of a meta.json: sealpush writes well under 1 KiB.
const META_MAX: u64 = 1 << 20;
/// Most bytes read of a manifest.txt: about 4 million entries of ordinary path lengths.
const MANIFEST_MAX: u64 = 512 << 20;

/// Why a part of an artifact could not be read.
#[derive(Debug)]
enum PartError {
    /// What is there proves the artifact damaged: the part is missing, a symlink, not a regular
    /// file, or larger than sealpush ever writes.
    Damaged(String),
    /// An error that says nothing about the artifact (too many open files, EIO, EACCES): the
    /// artifact may be healthy, so nothing may be concluded (or removed) from it.
    Io(io::Error),
}

impl From<io::Error> for PartError {
    fn from(e: io::Error) -> PartError {
        PartError::Io(e)
    }
}

impl PartError {
    /// `Broken` for damage, `Io` naming `path` otherwise.
    fn at(self, dir: &Path, path: &Path) -> StoreError {
        match self {
            PartError::Damaged(reason) => StoreError::Broken {
                path: dir.to_path_buf(),
                reason: format!(
                    "{}: {reason}",
                    path.strip_prefix(dir).unwrap_or(path).display()
                ),
            },
            PartError::Io(source) => StoreError::Io {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

/// [`PartError::at`] for a part named by its path.
fn part_at(path: &Path) -> impl FnOnce(PartError) -> StoreError + '_ {
    move |e| e.at(path.parent().unwrap_or(Path::new(".")), path)
}

/// Opens a part of an artifact (its archive, manifest or meta) for reading, with its size. sealpush
/// writes each as a regular file: a symlink is not followed (it could lead to /dev/zero or out
/// of the store) and a fifo or device is refused before it is read (`O_NONBLOCK`: opening a fifo
/// does not wait for a writer). Such a part, or a missing one, makes its artifact broken.
fn open_part(path: &Path) -> Result<(fs::File, u64), PartError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                PartError::Damaged("is a symlink (sealpush writes none here)".into())
            }
            Some(libc::ENOENT) => PartError::Damaged(e.to_string()),
            // A socket, or a device without a driver: a part of the wrong type.
            Some(libc::ENXIO | libc::ENODEV) => PartError::Damaged(not_regular()),
            _ => PartError::Io(e),
        })?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(PartError::Damaged(not_regular()));
    }
    Ok((f, md.len()))
}

fn not_regular() -> String {
    "is not a regular file (a fifo, device or directory)".into()
}

/// Reads a small part of an artifact (see [`open_part`]), refusing one larger than `max`.
fn read_part(path: &Path, max: u64) -> Result<Vec<u8>, PartError> {
    let (f, len) = open_part(path)?;
    let too_big = || PartError::Damaged(format!("is larger than {max} bytes, the most read of it"));
    if len > max {
        return Err(too_big());
    }
    let mut buf = Vec::with_capacity(len as usize);
    // The file may grow after the fstat: read one byte past the limit to notice.
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(too_big());
    }
    Ok(buf)
}

/// Loads an artifact directory and checks that its parts agree.
fn load_dir(dir: &Path, id: Option<String>) -> Result<StoredArtifact, StoreError> {
    let broken = |reason: String| StoreError::Broken {
        path: dir.to_path_buf(),
        reason,
    };
    let meta_path = dir.join("meta.json");
    let meta_bytes = read_part(&meta_path, META_MAX).map_err(|e| e.at(dir, &meta_path))?;
    let meta: ArtifactMeta =
        serde_json::from_slice(&meta_bytes).map_err(|source| StoreError::Meta {
            path: meta_path,
            source,
        })?;
    let man_path = dir.join("manifest.txt");
    let man_bytes = read_part(&man_path, MANIFEST_MAX).map_err(|e| e.at(dir, &man_path))?;
    let manifest = Manifest::decode(&man_bytes).map_err(|source| StoreError::Manifest {
        path: man_path,
        source,
    })?;
    if manifest.identity() != meta.tree_identity {
        return Err(broken(format!(
            "manifest identity {} differs from meta.json's {}",
            manifest.identity(),
            meta.tree_identity
        )));
    }
    let archive = dir.join(format!("archive.{}", meta.format.extension()));
    let size = open_part(&archive).map_err(|e| e.at(dir, &archive))?.1;
    if size != meta.archive_size {
        return Err(broken(format!(
            "archive size {size} differs from meta.json's {}",
            meta.archive_size
        )));
    }
    Ok(StoredArtifact {
        archive,
        manifest,
        meta,
        id,
    })
}

/// sha256 and size of a file.
pub fn sha256_file(path: &Path) -> Result<(Digest, u64), StoreError> {
    sha256_reader(fs::File::open(path).map_err(io_at(path))?, path)
}

/// [`sha256_file`], and the file's stamp when it can vouch for the bytes hashed (see
/// [`crate::stamp::settled`]): looked at through the open handle before and after the read.
pub fn sha256_file_stamped(
    path: &Path,
) -> Result<(Digest, u64, Option<crate::stamp::FileStamp>), StoreError> {
    use crate::stamp::{settled, FileStamp};
    let f = fs::File::open(path).map_err(io_at(path))?;
    let before = FileStamp::of_file(&f).map_err(io_at(path))?;
    let began = std::time::SystemTime::now();
    let (digest, n) = sha256_reader(&f, path)?;
    let after = FileStamp::of_file(&f).map_err(io_at(path))?;
    Ok((digest, n, settled(before, after, n, began)))
}

/// sha256 and size of what `f` reads to its end (`path` names it in errors).
fn sha256_reader(mut f: impl Read, path: &Path) -> Result<(Digest, u64), StoreError> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_at(path)(e)),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((Digest(h.finalize().into()), n))
}

/// An archive file outside the store: its manifest is derived from its checked content.
fn external(path: &Path) -> Result<StoredArtifact, StoreError> {
    let mut head = [0u8; 4];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io_at(path))?;
    let format = Format::sniff(&head[..n]).ok_or_else(|| UnpackError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    let (archive_sha256, archive_size) = sha256_file(path)?;
    let manifest = pack::derive_manifest(path)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = file_name
        .strip_suffix(".tar.zst")
        .or_else(|| file_name.strip_suffix(".tar.gz"))
        .or_else(|| file_name.strip_suffix(".tgz"))
        .unwrap_or(&file_name)
        .to_string();
    let meta = ArtifactMeta {
        name,
        format,
        level: None,
        mtime: None,
        archive_sha256,
        archive_size,
        tree_identity: manifest.identity(),
        recipe_digest: None,
        recipe_locale: None,
        files: manifest.file_count(),
        unpacked_bytes: manifest.total_bytes(),
        tool_version: String::new(),
        tree_name: None,
    };
    Ok(StoredArtifact {
        archive: path.to_path_buf(),
        manifest,
        meta,
        id: None,
    })
}

fn verify_artifact(a: &StoredArtifact, progress: &dyn Progress) -> Result<Vec<String>, StoreError> {
    progress.start("verifying", Some(a.meta.archive_size), None);
    // A stored archive is read only as the regular file it must be; an archive outside the
    // store is the file the user named, links included.
    let file = if a.id.is_some() {
        open_part(&a.archive).map_err(part_at(&a.archive))?.0
    } else {
        fs::File::open(&a.archive).map_err(io_at(&a.archive))?
    };
    let (sha, size) = sha256_reader(file, &a.archive)?;
    progress.finish();
    if size != a.meta.archive_size {
        return Err(StoreError::Mismatch {
            path: a.archive.clone(),
            what: "archive size",
            expected: a.meta.archive_size.to_string(),
            actual: size.to_string(),
        });
    }
    if sha != a.meta.archive_sha256 {
        return Err(StoreError::Mismatch {
            path: a.archive.clone(),
            what: "archive sha256",
            expected: a.meta.archive_sha256.to_hex(),
            actual: sha.to_hex(),
        });
    }
    let derived = pack::derive_manifest(&a.archive)?;
    let mut want = a.manifest.clone();
    want.recipe = None;
    if let Some(detail) = want.diff(&derived) {
        return Err(StoreError::ContentMismatch {
            path: a.archive.clone(),
            detail,
        });
    }
    if a.manifest.identity() != a.meta.tree_identity {
        return Err(StoreError::Mismatch {
            path: a.archive.clone(),
            what: "tree identity",
            expected: a.meta.tree_identity.to_hex(),
            actual: a.manifest.identity().to_hex(),
        });
    }
    if a.id.is_none() {
        // An archive outside the store: its record was derived from it just now.
        return Ok(Vec::new());
    }
    check_meta(a)
}

/// The fields of a stored artifact's meta.json that follow from its checked manifest and its
/// id, and the manifest's recipe line against the recipe computed from its entries. Returns
/// what could not be checked.
fn check_meta(a: &StoredArtifact) -> Result<Vec<String>, StoreError> {
    let (m, man) = (&a.meta, &a.manifest);
    let mismatch = |what, expected: String, actual: String| {
        Err(StoreError::Mismatch {
            path: a.archive.clone(),
            what,
            expected,
            actual,
        })
    };
    if m.files != man.file_count() {
        return mismatch(
            "files in meta.json",
            man.file_count().to_string(),
            m.files.to_string(),
        );
    }
    if m.unpacked_bytes != man.total_bytes() {
        let (want, got) = (man.total_bytes().to_string(), m.unpacked_bytes.to_string());
        return mismatch("unpacked_bytes in meta.json", want, got);
    }
    let mut head = [0u8; 4];
    let (mut f, _) = open_part(&a.archive).map_err(part_at(&a.archive))?;
    let n = f.read(&mut head).map_err(io_at(&a.archive))?;
    if Format::sniff(&head[..n]) != Some(m.format) {
        return mismatch(
            "format in meta.json",
            "the archive's magic bytes".into(),
            m.format.to_string(),
        );
    }
    // Name, level, mtime and format are recorded nowhere else: the id is their second record.
    let id = a.id.as_deref().unwrap_or_default();
    if expected_id(m) != id {
        let what = "id (meta.json's name, level, mtime or format against the directory's name)";
        return mismatch(what, id.to_string(), expected_id(m));
    }
    let recorded = man.recipe.as_ref().map(|r| (r.digest, r.locale.clone()));
    if recorded != m.recipe_digest.zip(m.recipe_locale.clone()) {
        let show =
            |r: Option<(Digest, String)>| r.map_or("none".into(), |(d, l)| format!("{d} {l}"));
        let meta = m.recipe_digest.zip(m.recipe_locale.clone());
        return mismatch(
            "recipe digest in meta.json against manifest.txt",
            show(recorded),
            show(meta),
        );
    }
    let Some(tree_name) = &m.tree_name else {
        return Ok(vec![
            "recipe digest not re-derived: meta.json does not record the packed \
                        directory's name, which the recipe's paths start with"
                .into(),
        ]);
    };
    match (
        crate::manifest::recipe_from_entries(tree_name.as_bytes(), &man.entries),
        &man.recipe,
    ) {
        (Some(d), Some(r)) if r.locale == "C" && d != r.digest => mismatch(
            "recipe line of manifest.txt (computed from its entries)",
            d.to_hex(),
            r.digest.to_hex(),
        ),
        // sealpush records the recipe whenever it follows from the entries.
        (Some(d), None) => mismatch(
            "recipe line of manifest.txt (computed from its entries)",
            d.to_hex(),
            "none".into(),
        ),
        (Some(_), Some(r)) if r.locale != "C" => Ok(vec![format!(
            "recipe digest not re-derived: it is recorded for locale {}, not C",
            r.locale
        )]),
        (None, Some(_)) => Ok(vec![
            "recipe digest not re-derived: a path needs the pipeline's \
                                    quirks (xargs quoting, sha256sum escaping), which only the \
                                    real files can answer"
                .into(),
        ]),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gc condemned a directory, then a pack replaced it under the same id: the replacement
    /// is not removed. The one examined is.
    #[test]
    fn gc_removes_only_the_directory_it_examined() {
        let d = tempfile::tempdir().unwrap();
        let (art, tmp) = (d.path().join("artifact-id"), d.path().join("tmp"));
        fs::create_dir(&tmp).unwrap();
        fs::create_dir(&art).unwrap();
        let md = fs::symlink_metadata(&art).unwrap();
        let stamp = (md.dev(), md.ino());
        // Replaced: the examined directory moved away, a new one published at the same name.
        fs::rename(&art, d.path().join("old")).unwrap();
        fs::create_dir(&art).unwrap();
        fs::write(art.join("meta.json"), "good").unwrap();
        assert!(!remove_examined(&art, stamp, &tmp).unwrap());
        assert_eq!(fs::read(art.join("meta.json")).unwrap(), b"good");
        // The examined one itself is removed.
        let md = fs::symlink_metadata(&art).unwrap();
        assert!(remove_examined(&art, (md.dev(), md.ino()), &tmp).unwrap());
        assert!(!art.exists());
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "nothing left in tmp/"
        );
    }
}
