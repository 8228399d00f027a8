//! Preflight: the read-only survey of a host before a deploy (gate G3 of the seed), and the
//! locked plan it produces.
//!
//! Guarantees:
//! - **Read-only**: only lstat/stat/readdir/readlink/statvfs/read requests (and the user's own
//!   `--probe` commands) reach the host. Nothing is created, not even the work directory or the
//!   staging directory: their names are chosen here and created by the deploy.
//! - Every check is recorded with its evidence ([`Check`]); the verdict is PASS only when every
//!   check holds, and lists every reason otherwise (warnings are listed on PASS too).
//! - The anchor's digest is the seed's recipe, `cd PARENT && find NAME -type f | sort | xargs
//!   sha256sum | sha256sum` in the C locale, computed by sealpush's own recipe
//!   ([`crate::tree::recipe_with`]) over the transport ([`RemoteSource`]), or straight from the
//!   manifest when no path has a byte the pipeline treats specially; the manifest comes from
//!   the same walk, every file read once.
//! - The plan holds the ordered operations and their rollback before any write; the deploy's
//!   step 1 re-runs the live checks against it (`src/deploy.rs`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::deploy::shape::{self, Kind};
use crate::digest::Digest;
use crate::manifest::{Entry, EntryKind, Manifest, RecipeRecord};
use crate::mountinfo;
use crate::plan::{Anchor, ArtifactRef, Check, HostRef, Operation, Plan, Verdict, PLAN_FORMAT};
use crate::progress::Progress;
use crate::remote::{FileKind, FsStats, Meta, Remote, RemoteError};
use crate::tree::{Collation, RecipeOptions, TreeSource};

/// What to survey.
#[derive(Clone, Debug)]
pub struct PreflightRequest {
    pub host: HostRef,
    pub artifact: ArtifactRef,
    /// Absolute path the tree will be promoted to; must not exist.
    pub target: PathBuf,
    /// The old version that must stay untouched (its digest is recorded).
    pub anchor: Option<PathBuf>,
    /// A directory to stage in instead of beside the target (must be on the same filesystem).
    pub staging: Option<PathBuf>,
    /// Commands to run on the host (only these; their output is recorded).
    pub probes: Vec<String>,
}

/// Why the survey could not be completed (as opposed to a FAIL verdict, which is a result).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("target {}: {reason}", path.display())]
    BadTarget { path: PathBuf, reason: &'static str },
    #[error("{what} {}: not valid UTF-8; the plan records paths as JSON text, so pick a path spelled in UTF-8 (rename it, or use a parent that is)", path.display())]
    NotUtf8 { what: &'static str, path: PathBuf },
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("anchor {}: the recipe cannot hash it", path.display())]
    Recipe {
        path: PathBuf,
        #[source]
        source: crate::tree::RecipeError,
    },
    #[error("anchor {}: cannot build its manifest", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: crate::manifest::ManifestError,
    },
}

/// Space kept free beyond the archive and the tree: 10% of them plus 4 MiB.
pub fn space_needed(artifact: &ArtifactRef, frsize: u64) -> u64 {
    let block = frsize.max(512);
    // Each file occupies whole blocks; directories are ignored (a few blocks at most).
    let tree = artifact.unpacked_bytes + artifact.files * block;
    let base = artifact.archive_size + tree;
    base + base / 10 + 4 * 1024 * 1024
}

/// 16 hex digits from `/dev/urandom`: a name part nobody can guess and plant in advance.
pub fn unguessable_hex() -> io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The staging directory's name beside the target: `.<name>.sealpush-stage-<16 random hex>`.
pub fn staging_name(target_name: &OsStr) -> io::Result<PathBuf> {
    let hex = unguessable_hex()?;
    let mut n = b".".to_vec();
    n.extend_from_slice(target_name.as_bytes());
    n.extend_from_slice(b".sealpush-stage-");
    n.extend_from_slice(hex.as_bytes());
    Ok(PathBuf::from(OsStr::from_bytes(&n)))
}

/// `<parent>/.sealpush/<name>/`: lock, journal and receipt of deploys to this target.
pub fn work_dir_for(target: &Path) -> PathBuf {
    let parent = target.parent().unwrap_or(Path::new("/"));
    parent
        .join(".sealpush")
        .join(target.file_name().unwrap_or(OsStr::new("")))
}

fn zero_fs() -> FsStats {
    FsStats {
        frsize: 0,
        blocks: 0,
        blocks_avail: 0,
        fsid: 0,
        read_only: false,
        name_max: 0,
        inodes_avail: None,
    }
}

/// Only connection-level errors stop the survey; the others become failed checks.
fn fatal(e: RemoteError) -> Result<RemoteError, PreflightError> {
    match e {
        RemoteError::Timeout { .. }
        | RemoteError::Disconnected { .. }
        | RemoteError::Connect { .. } => Err(PreflightError::Remote(e)),
        other => Ok(other),
    }
}

fn describe(m: &Meta) -> String {
    let kind = m.kind.noun();
    format!(
        "{kind} (mode {:04o}, uid {}, {} bytes)",
        m.mode, m.uid, m.size
    )
}

struct Checks(Vec<Check>, Vec<String>);

impl Checks {
    fn add(&mut self, name: &str, ok: bool, evidence: impl Into<String>) {
        self.0.push(Check {
            name: name.into(),
            ok,
            evidence: evidence.into(),
        });
    }
    fn warn(&mut self, w: impl Into<String>) {
        self.1.push(w.into());
    }
}

/// Checks that `dir` and each of its ancestors is a real directory (not a symlink) and not
/// world-writable without the sticky bit. Returns (symlink-free evidence, writable evidence).
fn check_components(
    remote: &dyn Remote,
    dir: &Path,
    checks: &mut Checks,
    label: &str,
) -> Result<bool, PreflightError> {
    let mut prefix = PathBuf::new();
    let mut symlinks = Vec::new();
    let mut open = Vec::new();
    let mut missing = None;
    let mut seen = Vec::new();
    for c in dir.components() {
        prefix.push(c);
        let meta = match remote.lstat(&prefix) {
            Ok(Some(m)) => m,
            Ok(None) => {
                missing = Some(format!("{} does not exist", prefix.display()));
                break;
            }
            Err(e) => {
                missing = Some(fatal(e)?.to_string());
                break;
            }
        };
        seen.push(format!("{} {:04o}", prefix.display(), meta.mode));
        if meta.kind == FileKind::Symlink {
            let to = remote
                .read_link(&prefix)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            symlinks.push(format!("{} -> {to}", prefix.display()));
            // Do not walk through it: the rest would describe the link's target.
            break;
        }
        if meta.kind != FileKind::Dir {
            missing = Some(format!("{} is a {}", prefix.display(), describe(&meta)));
            break;
        }
        if meta.open_to_swaps() {
            open.push(format!("{} (mode {:04o})", prefix.display(), meta.mode));
        }
    }
    let name = |s: &str| format!("{label}{s}");
    let ok_dir = missing.is_none();
    checks.add(
        &name("directory"),
        ok_dir,
        match &missing {
            Some(m) if label == "staging-" => {
                format!("{m} (create the directory first, or choose another --staging)")
            }
            Some(m) => format!("{m} (create the directory first, or choose another target)"),
            None => format!("{} is a directory", dir.display()),
        },
    );
    checks.add(
        &name("no-symlink-components"),
        symlinks.is_empty(),
        if symlinks.is_empty() {
            format!("lstat of every component: {}", seen.join(", "))
        } else {
            format!(
                "symlink in the path: {} (give the path without symlinks, as the host resolves it)",
                symlinks.join(", ")
            )
        },
    );
    checks.add(
        &name("no-world-writable-components"),
        open.is_empty(),
        if open.is_empty() {
            "no component is world-writable without the sticky bit".to_string()
        } else {
            format!(
                "world-writable without the sticky bit (anyone could swap names): {}",
                open.join(", ")
            )
        },
    );
    Ok(ok_dir && symlinks.is_empty())
}

/// The request with its paths spelled as the plan records them: valid UTF-8 (the plan is JSON),
/// and without a trailing `/` or doubled separators. A trailing `/` matters: `lstat("link/")`
/// follows the symlink, so a dangling symlink at the target would pass as absent.
fn plainly_spelled(req: &PreflightRequest) -> Result<PreflightRequest, PreflightError> {
    let plain = |what, p: &PathBuf| -> Result<PathBuf, PreflightError> {
        if p.to_str().is_none() {
            return Err(PreflightError::NotUtf8 {
                what,
                path: p.clone(),
            });
        }
        Ok(p.components().collect())
    };
    Ok(PreflightRequest {
        target: plain("target", &req.target)?,
        anchor: req
            .anchor
            .as_ref()
            .map(|a| plain("anchor", a))
            .transpose()?,
        staging: req
            .staging
            .as_ref()
            .map(|s| plain("staging", s))
            .transpose()?,
        ..req.clone()
    })
}

/// Runs the survey and returns the plan (PASS or FAIL). Errors only when the host cannot be
/// surveyed at all (connection lost, timeout) or the request is malformed.
pub fn preflight(
    remote: &dyn Remote,
    req: &PreflightRequest,
    progress: &dyn Progress,
) -> Result<Plan, PreflightError> {
    let req = &plainly_spelled(req)?;
    let target = &req.target;
    let bad = |reason| PreflightError::BadTarget {
        path: target.clone(),
        reason,
    };
    if !target.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    if target
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad("must not contain `.` or `..` components"));
    }
    let (Some(name), Some(parent)) = (target.file_name(), target.parent()) else {
        return Err(bad("has no name (the root cannot be a target)"));
    };
    let mut checks = Checks(Vec::new(), Vec::new());

    // Host facts.
    let facts = remote.facts()?;

    // The target: absent in every form.
    match remote.lstat(target) {
        Ok(None) => checks.add(
            "target-absent",
            true,
            format!("lstat {}: no such file or directory", target.display()),
        ),
        Ok(Some(m)) => checks.add(
            "target-absent",
            false,
            format!(
                "{} already exists as a {} (choose a target that does not exist; sealpush never replaces one)",
                target.display(),
                describe(&m)
            ),
        ),
        Err(e) => checks.add(
            "target-absent",
            false,
            format!("cannot tell whether it exists: {}", fatal(e)?),
        ),
    }
    let parent_ok = check_components(remote, parent, &mut checks, "parent-")?;

    // Can the login create entries in the parent? SFTP does not say who we are. On Linux,
    // `/proc/self` (followed) is the server process's own directory, owned by the login's
    // uid and gid; elsewhere the owner of the login's home is the guess, which a service login
    // whose home root owns (`/var/www`) would get wrong.
    let target_fs = if parent_ok {
        let pm = remote
            .lstat(parent)
            .map_err(|e| fatal(e).err())
            .ok()
            .flatten();
        let login = match remote.stat(Path::new("/proc/self")) {
            Ok(Some(m)) if m.kind == FileKind::Dir => Some((m.uid, m.gid, "its /proc/self")),
            _ => remote
                .lstat(Path::new(&facts.home))
                .ok()
                .flatten()
                .map(|h| (h.uid, h.gid, "owner of its home")),
        };
        if let (Some(pm), Some((uid, login_gid, how))) = (pm, login) {
            let (ok, why) = if uid == 0 {
                (true, "the login is root".to_string())
            } else if pm.mode & 0o002 != 0 {
                (true, "the directory is world-writable".to_string())
            } else if pm.uid == uid && pm.mode & 0o200 != 0 {
                (
                    true,
                    format!("the login (uid {uid}) owns it with write permission"),
                )
            } else if pm.gid == login_gid && pm.mode & 0o020 != 0 {
                (
                    true,
                    format!("group {} may write and it is the login's group", pm.gid),
                )
            } else if pm.mode & 0o020 != 0 {
                checks.warn(format!(
                    "{} is group-writable (gid {}); whether the login (uid {uid}) is in that group cannot be read over SFTP",
                    parent.display(),
                    pm.gid
                ));
                (
                    true,
                    format!("group-writable (gid {}), membership not verifiable", pm.gid),
                )
            } else {
                (
                    false,
                    format!(
                        "permission denied: {} is owned by uid {} with mode {:04o}; the login (uid {uid}, {how}) cannot create entries in it: deploy as its owner, or choose a target in a directory the login may write",
                        parent.display(),
                        pm.uid,
                        pm.mode,
                    ),
                )
            };
            checks.add("parent-writable", ok, why);
        }
        match remote.statvfs(parent) {
            Ok(st) => st,
            Err(e) => {
                checks.add("target-filesystem", false, fatal(e)?.to_string());
                zero_fs()
            }
        }
    } else {
        zero_fs()
    };
    if target_fs.read_only {
        checks.add(
            "target-filesystem-writable",
            false,
            format!(
                "{} is on a read-only filesystem (remount it read-write, or choose a target elsewhere)",
                parent.display()
            ),
        );
    }

    // Conflicts: leftovers of earlier or half-finished deploys beside the target.
    let work_dir = work_dir_for(target);
    if parent_ok {
        conflicts(remote, parent, name, &work_dir, &mut checks)?;
    }

    // Staging.
    let stage_name = staging_name(name).map_err(|e| RemoteError::Failed {
        op: "staging name",
        path: target.clone(),
        reason: format!("cannot read /dev/urandom: {e}"),
    })?;
    let (staging, stage_fs) = match &req.staging {
        None => {
            let s = parent.join(&stage_name);
            let why = if parent_ok {
                format!(
                    "staging {} is beside the target, in the same directory, so the promote is one atomic rename",
                    s.display()
                )
            } else {
                format!(
                    "staging {} would be beside the target, but {} is not a usable directory (see the parent-* reasons)",
                    s.display(),
                    parent.display()
                )
            };
            checks.add("staging-same-filesystem", parent_ok, why);
            (s, target_fs.clone())
        }
        Some(dir) => {
            let s = dir.join(&stage_name);
            let dir_ok = if dir.is_absolute() {
                check_components(remote, dir, &mut checks, "staging-")?
            } else {
                checks.add(
                    "staging-directory",
                    false,
                    "--staging must be an absolute path",
                );
                false
            };
            let fs = if dir_ok {
                match remote.statvfs(dir) {
                    Ok(st) => {
                        let same = st.fsid == target_fs.fsid && parent_ok;
                        let mounts = same.then(|| mounts_of(remote, dir, parent)).flatten();
                        let same = same && mounts.as_ref().map_or(true, |(a, b)| a.id == b.id);
                        checks.add(
                            "staging-same-filesystem",
                            same,
                            match (&mounts, same) {
                                (Some((a, _)), true) => format!(
                                    "{} and {} are on the same filesystem (fsid {:016x}) and the same mount ({}, per the host's /proc/self/mountinfo): the promote is an atomic rename",
                                    dir.display(),
                                    parent.display(),
                                    st.fsid,
                                    String::from_utf8_lossy(&a.point)
                                ),
                                (Some((a, b)), false) => format!(
                                    "{} and {} are on one filesystem (fsid {:016x}) but on different mounts of it ({} and {}, per the host's /proc/self/mountinfo; a bind mount is one): Linux refuses a rename between mounts, so the promote could not be an atomic rename (stage beside the target: leave out --staging)",
                                    dir.display(),
                                    parent.display(),
                                    st.fsid,
                                    String::from_utf8_lossy(&a.point),
                                    String::from_utf8_lossy(&b.point)
                                ),
                                (None, true) => format!(
                                    "{} and {} are on the same filesystem (fsid {:016x}): the promote is an atomic rename, unless one of them is reached through a bind mount of it (the host shows no /proc/self/mountinfo to tell; the promote would then fail, and the staged copy be removed)",
                                    dir.display(),
                                    parent.display(),
                                    st.fsid
                                ),
                                (None, false) if !parent_ok => format!(
                                    "the promote from {} would rename into {}, which is not a usable directory (see the parent-* reasons)",
                                    dir.display(),
                                    parent.display()
                                ),
                                (None, false) => format!(
                                    "{} (fsid {:016x}) and {} (fsid {:016x}) are on different filesystems: the promote could not be an atomic rename (stage beside the target: leave out --staging)",
                                    dir.display(),
                                    st.fsid,
                                    parent.display(),
                                    target_fs.fsid
                                ),
                            },
                        );
                        if let Ok(Some(m)) = remote.lstat(dir) {
                            if m.mode & 0o002 != 0 {
                                checks.warn(format!(
                                    "staging directory {} is shared (mode {:04o}): other users can see and plant names there; sealpush stages under an unguessable name with exclusive creates, but a private directory beside the target is safer",
                                    dir.display(),
                                    m.mode
                                ));
                            }
                        }
                        st
                    }
                    Err(e) => {
                        checks.add("staging-filesystem", false, fatal(e)?.to_string());
                        zero_fs()
                    }
                }
            } else {
                zero_fs()
            };
            (s, fs)
        }
    };
    match remote.lstat(&staging) {
        Ok(None) => {}
        Ok(Some(m)) => checks.add(
            "staging-absent",
            false,
            format!(
                "{} exists as a {} (run preflight again for a fresh staging name)",
                staging.display(),
                describe(&m)
            ),
        ),
        Err(e) => {
            fatal(e)?;
        }
    }

    // Inodes: a filesystem can run out of them with bytes to spare (many small files, a tmpfs
    // with nr_inodes). Every file takes one, and so do the directories and symlinks and the
    // deploy's bookkeeping (lock, journal records, receipt): the files plus a margin is a floor.
    if let Some(avail) = stage_fs.inodes_avail {
        let need = req
            .artifact
            .files
            .saturating_add(req.artifact.files / 8)
            .saturating_add(64);
        checks.add(
            "inodes",
            avail >= need,
            if avail >= need {
                format!("need about {need} (the tree's {} files, its directories and links, the deploy's bookkeeping), available {avail}", req.artifact.files)
            } else {
                format!(
                    "need about {need} inodes (the tree's {} files, its directories and links, the deploy's bookkeeping), available {avail} (free some there, or choose a target on another filesystem)",
                    req.artifact.files
                )
            },
        );
    }

    // Space, on the filesystem the tree is written to.
    if stage_fs.frsize > 0 {
        let need = space_needed(&req.artifact, stage_fs.frsize);
        let avail = stage_fs.avail_bytes();
        checks.add(
            "space",
            avail >= need,
            format!(
                "need {} (archive {} + tree {} in {} files + 10% + 4 MiB margin), available {} of {}{}",
                human_bytes(need),
                human_bytes(req.artifact.archive_size),
                human_bytes(req.artifact.unpacked_bytes),
                req.artifact.files,
                human_bytes(avail),
                human_bytes(stage_fs.total_bytes()),
                if avail >= need {
                    ""
                } else {
                    " (free space there, or choose a target on another filesystem)"
                }
            ),
        );
    }

    // The local artifact is what the plan says it is.
    let mut archive_stamp = None;
    match crate::store::sha256_file_stamped(&req.artifact.path) {
        Ok((d, n, stamp)) => {
            let ok = d == req.artifact.archive_sha256 && n == req.artifact.archive_size;
            if ok {
                archive_stamp = stamp;
            }
            checks.add(
                "artifact-intact",
                ok,
                if ok {
                    format!(
                        "re-hashed {}: sha256 and size ({n} B) match{}",
                        req.artifact.path.display(),
                        if stamp.is_some() {
                            "; its stamp (device, inode, size, mtime, ctime) is in the plan: the deploy hashes it again only if that changes"
                        } else {
                            "; it changed within 2 s of this check, so the deploy hashes it again"
                        }
                    )
                } else {
                    format!(
                        "{}: sha256 {d}, {n} B, but the store recorded {}, {} B",
                        req.artifact.path.display(),
                        req.artifact.archive_sha256,
                        req.artifact.archive_size
                    )
                },
            )
        }
        Err(e) => checks.add("artifact-intact", false, e.to_string()),
    }
    // The SFTP client library takes names as UTF-8 text: a deploy would stop at the first name
    // or symlink target that is not, so the survey says so now. (The store keeps the manifest
    // beside the archive; an archive from elsewhere is checked by the deploy itself.)
    if remote.transport() == "sftp" {
        let manifest = std::fs::read(req.artifact.path.with_file_name("manifest.txt"))
            .ok()
            .and_then(|text| Manifest::decode(&text).ok());
        if let Some(m) = manifest {
            let not_utf8 = |b: &[u8]| std::str::from_utf8(b).is_err();
            let bad: Vec<String> = m
                .entries
                .iter()
                .filter(|e| {
                    not_utf8(&e.path)
                        || matches!(&e.kind, EntryKind::Symlink { target } if not_utf8(target))
                })
                .map(|e| crate::manifest::show(&e.path))
                .collect();
            checks.add(
                "artifact-names",
                bad.is_empty(),
                if bad.is_empty() {
                    "every name and symlink target is UTF-8, as SFTP needs".to_string()
                } else {
                    format!(
                        "names or symlink targets that are not UTF-8, which the SFTP client cannot create on the host: {} (the first: {}); rename them and pack again",
                        bad.len(),
                        bad[0]
                    )
                },
            );
        }
    }

    // The anchor.
    let anchor = match &req.anchor {
        None => None,
        Some(a) => survey_anchor_checked(
            remote,
            a,
            target,
            req.staging.as_deref(),
            &mut checks,
            progress,
        )?,
    };

    // Probes (only what the user asked for).
    let mut probes = Vec::new();
    for p in &req.probes {
        match remote.exec(p) {
            Ok(out) => {
                if out.status != Some(0) {
                    checks.warn(match out.status {
                        Some(n) => format!("probe `{p}` exited with status {n}"),
                        None => format!("probe `{p}` was killed by a signal"),
                    });
                }
                probes.push(out);
            }
            Err(e) => {
                let e = fatal(e)?;
                checks.warn(format!("probe `{p}` could not run: {e}"));
            }
        }
    }

    let Checks(checks, warnings) = checks;
    let mut reasons: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.evidence))
        .collect();
    reasons.extend(warnings.into_iter().map(|w| format!("warning: {w}")));
    let pass = checks.iter().all(|c| c.ok);
    let promote_from = staging.join(name);
    let (operations, rollback) = operations(req, &staging, &promote_from, &work_dir);
    Ok(Plan {
        format: PLAN_FORMAT,
        tool_version: crate::TOOL_VERSION.to_string(),
        created: now_rfc3339(),
        host: req.host.clone(),
        facts,
        artifact: ArtifactRef {
            archive_stamp,
            ..req.artifact.clone()
        },
        target: target.clone(),
        target_fs,
        anchor,
        staging,
        work_dir,
        operations,
        rollback,
        checks,
        probes,
        verdict: Verdict { pass, reasons },
    })
}

/// The deploy's ordered operations and their rollback (see `store-layout.md`, `## Plan`).
fn operations(
    req: &PreflightRequest,
    staging: &Path,
    promote_from: &Path,
    work_dir: &Path,
) -> (Vec<Operation>, Vec<Operation>) {
    let lock = work_dir.join("lock");
    // The plan cannot name its own digest; the deploy writes `receipt-<first 16 hex of the plan
    // digest>.json`, one receipt per plan, so an old receipt never blocks a later deploy.
    let receipt = work_dir.join("receipt-<plan digest>.json");
    let ops = vec![
        Operation::TakeLock { path: lock.clone() },
        Operation::MakeStaging {
            path: staging.to_path_buf(),
        },
        Operation::Materialize {
            staging: promote_from.to_path_buf(),
            files: req.artifact.files,
            bytes: req.artifact.unpacked_bytes,
        },
        Operation::VerifyStaged {
            staging: promote_from.to_path_buf(),
        },
        Operation::WriteDeployManifest {
            path: promote_from.join("DEPLOY-MANIFEST.txt"),
        },
        Operation::Promote {
            from: promote_from.to_path_buf(),
            to: req.target.clone(),
        },
        Operation::Prove,
        Operation::WriteReceipt {
            path: receipt.clone(),
        },
        Operation::ReleaseLock { path: lock.clone() },
    ];
    let rollback = vec![
        // After the promote: the deployed tree (the artifact's tree plus DEPLOY-MANIFEST.txt;
        // the receipt records the identity of the tree as promoted).
        Operation::RemoveTree {
            path: req.target.clone(),
            identity: req.artifact.tree_identity,
        },
        // Before it: whatever was staged.
        Operation::RemoveTree {
            path: staging.to_path_buf(),
            identity: req.artifact.tree_identity,
        },
        Operation::RemoveFile {
            path: receipt,
            sha256: None,
        },
        Operation::RemoveFile {
            path: lock,
            sha256: None,
        },
    ];
    (ops, rollback)
}

/// Siblings that look like an earlier or half-finished deploy of this target, and a lock.
fn conflicts(
    remote: &dyn Remote,
    parent: &Path,
    name: &OsStr,
    work_dir: &Path,
    checks: &mut Checks,
) -> Result<(), PreflightError> {
    let n = name.as_bytes();
    let entries = match remote.read_dir(parent) {
        Ok(e) => e,
        Err(e) => {
            checks.add(
                "no-conflicts",
                false,
                format!("cannot list {}: {}", parent.display(), fatal(e)?),
            );
            return Ok(());
        }
    };
    let mut stage_prefix = b".".to_vec();
    stage_prefix.extend_from_slice(n);
    stage_prefix.extend_from_slice(b".sealpush-stage-");
    let mut leftovers = Vec::new();
    let mut lookalikes = Vec::new();
    for e in &entries {
        let show = parent
            .join(OsStr::from_bytes(&e.name))
            .display()
            .to_string();
        if e.name.starts_with(&stage_prefix) {
            leftovers.push(show);
        } else if e.name.len() > n.len()
            && e.name.starts_with(n)
            && matches!(e.name[n.len()], b'.' | b'-')
        {
            lookalikes.push(show);
        }
    }
    // The deploy keeps its lock, journal and receipt in `.sealpush/NAME` and refuses to use
    // either through a symlink or as anything but a directory: say so now, not at deploy time.
    let mut bad_work = Vec::new();
    for dir in [work_dir.parent(), Some(work_dir)].into_iter().flatten() {
        match remote.lstat(dir) {
            Ok(Some(m)) if m.kind != FileKind::Dir => {
                bad_work.push(format!("{} is a {}", dir.display(), describe(&m)))
            }
            Ok(_) => {}
            Err(e) => {
                fatal(e)?;
            }
        }
    }
    checks.add(
        "work-dir",
        bad_work.is_empty(),
        if bad_work.is_empty() {
            format!(
                "{} is absent or a directory (the deploy keeps its lock, journal and receipt there)",
                work_dir.display()
            )
        } else {
            format!(
                "{}: the deploy keeps its lock, journal and receipt there and uses only directories, never a symlink; remove or rename it",
                bad_work.join(", ")
            )
        },
    );
    let mut lock = None;
    let mut work_files = Vec::new();
    match remote.read_dir(work_dir) {
        Ok(list) => {
            for e in list {
                let p = work_dir.join(OsStr::from_bytes(&e.name));
                if e.name == b"lock" {
                    lock = Some(p.display().to_string());
                } else if e
                    .name
                    .starts_with(crate::deploy::LOCK_TEMP_PREFIX.as_bytes())
                {
                    // The file a deploy writes its lock in before linking it to `lock`: that
                    // deploy is taking the lock now, or was cut off doing so.
                    leftovers.push(format!(
                        "{} (a deploy or rollback taking the lock, or cut off while taking it)",
                        p.display()
                    ));
                } else if e
                    .name
                    .starts_with(crate::deploy::rollback::ASIDE_PREFIX.as_bytes())
                    && e.meta.kind == FileKind::Dir
                {
                    // What a cut-off rollback left (see `deploy::rollback::aside_path`).
                    leftovers.push(format!(
                        "{} (a rollback that did not finish: run it again)",
                        p.display()
                    ));
                } else {
                    work_files.push(p.display().to_string());
                }
            }
        }
        Err(RemoteError::NotFound { .. }) => {}
        Err(e) => {
            let e = fatal(e)?;
            checks.warn(format!(
                "cannot list the work directory {}: {e}",
                work_dir.display()
            ));
        }
    }
    checks.add(
        "no-unfinished-deploy",
        leftovers.is_empty() && lock.is_none(),
        match (&lock, leftovers.is_empty()) {
            (None, true) => format!(
                "no staging leftovers ({}*), no lock and no unfinished rollback in {}",
                parent.join(OsStr::from_bytes(&stage_prefix)).display(),
                work_dir.display()
            ),
            _ => {
                let mut v = leftovers.clone();
                if let Some(l) = &lock {
                    v.push(format!(
                        "{l} (a deploy or rollback of this target is running or was interrupted)"
                    ));
                }
                format!(
                    "half-finished deploy: {} (finish or roll it back with its plan: `sealpush deploy PLAN` or `sealpush rollback PLAN`; remove by hand only what you know is not running)",
                    v.join(", ")
                )
            }
        },
    );
    if !lookalikes.is_empty() {
        checks.warn(format!(
            "paths that look like an earlier deploy of this target: {}",
            lookalikes.join(", ")
        ));
    }
    if !work_files.is_empty() {
        checks.warn(format!(
            "records of earlier deploys of this target: {}",
            work_files.join(", ")
        ));
    }
    Ok(())
}

/// The mounts that `staging` and `parent` are on, from the host's `/proc/self/mountinfo` (read
/// by the server process, so it is the deploy's own view), with both paths resolved by the
/// host. None where the host has no such file (not Linux, a chroot without /proc) or a path
/// cannot be resolved: then the filesystem id is all there is to go on.
fn mounts_of(
    remote: &dyn Remote,
    staging: &Path,
    parent: &Path,
) -> Option<(mountinfo::Mount, mountinfo::Mount)> {
    let text = remote
        .read_file(Path::new("/proc/self/mountinfo"), MOUNTINFO_LIMIT)
        .ok()?;
    let mounts = mountinfo::parse(&text);
    let on = |p: &Path| {
        let real = remote.canonicalize(p).ok()?;
        mountinfo::mount_of(&mounts, &real).cloned()
    };
    Some((on(staging)?, on(parent)?))
}

/// A host with thousands of mounts (containers) has a mountinfo of a few hundred KiB.
const MOUNTINFO_LIMIT: u64 = 16 << 20;

fn survey_anchor_checked(
    remote: &dyn Remote,
    anchor: &Path,
    target: &Path,
    staging: Option<&Path>,
    checks: &mut Checks,
    progress: &dyn Progress,
) -> Result<Option<Anchor>, PreflightError> {
    if !anchor.is_absolute() || anchor.file_name().is_none() {
        checks.add(
            "anchor",
            false,
            "--anchor must be an absolute path with a name",
        );
        return Ok(None);
    }
    // Compared as spelled and as resolved: a symlink in either path can make two spellings name
    // one place (an anchor `/srv/alias/old`, with `alias -> .`, holds a target `/srv/old/new`).
    // The deploy writes the target, in its parent (work dir, default staging) and in
    // `--staging`: none of it may be in the anchor, nor the anchor in the target. The target
    // does not exist yet, so its parent is resolved.
    let real = |p: &Path| remote.canonicalize(p).ok();
    let parent = target.parent().unwrap_or(Path::new("/"));
    let name = target.file_name().unwrap_or_default();
    let writes_in = |a: &Path, target: &Path, parent: &Path, staging: Option<&Path>| {
        target.starts_with(a)
            || a.starts_with(target)
            || parent.starts_with(a)
            || staging.is_some_and(|s| s.starts_with(a))
    };
    let anchor_real = real(anchor);
    let target_real = real(parent).map(|p| p.join(name));
    let staging_real = staging.and_then(real);
    let overlap = writes_in(anchor, target, parent, staging)
        || match (&anchor_real, &target_real) {
            (Some(a), Some(t)) => writes_in(a, t, t.parent().unwrap_or(t), staging_real.as_deref()),
            _ => false,
        };
    let disjoint = !overlap;
    checks.add(
        "anchor-disjoint",
        disjoint,
        if disjoint {
            format!(
                "{} and {} do not contain each other, and nothing the deploy writes is in the anchor (paths resolved by the host)",
                anchor.display(),
                target.display()
            )
        } else {
            format!(
                "{} (resolved: {}) and what the deploy writes ({}, beside it{}) overlap: deploying would change the anchor; choose a target and staging outside it",
                anchor.display(),
                anchor_real.as_deref().unwrap_or(anchor).display(),
                target.display(),
                staging.map_or(String::new(), |s| format!(", and in {}", s.display())),
            )
        },
    );
    match remote.lstat(anchor) {
        Ok(Some(m)) if m.kind == FileKind::Dir => {}
        Ok(Some(m)) => {
            checks.add(
                "anchor",
                false,
                format!(
                    "{} is a {}, not a directory (give the old version's directory{})",
                    anchor.display(),
                    describe(&m),
                    if m.kind == FileKind::Symlink {
                        " by its real path"
                    } else {
                        ""
                    }
                ),
            );
            return Ok(None);
        }
        Ok(None) => {
            checks.add(
                "anchor",
                false,
                format!("{} does not exist", anchor.display()),
            );
            return Ok(None);
        }
        Err(e) => {
            checks.add("anchor", false, fatal(e)?.to_string());
            return Ok(None);
        }
    }
    match survey_anchor(remote, anchor, progress) {
        Ok((a, _)) => {
            checks.add(
                "anchor",
                true,
                format!(
                    "recipe digest {} over {} files ({}), tree identity {}",
                    a.recipe_digest,
                    a.files,
                    human_bytes(a.bytes),
                    a.tree_identity
                ),
            );
            Ok(Some(a))
        }
        Err(PreflightError::Remote(e)) => {
            let e = fatal(e)?;
            checks.add("anchor", false, format!("cannot read it: {e}"));
            Ok(None)
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            checks.add("anchor", false, msg);
            Ok(None)
        }
    }
}

/// A directory's entries as the recipe's walk sees them: names and lstat kinds.
type Listing = Vec<(Vec<u8>, FileKind)>;

/// A remote directory tree as a [`TreeSource`]: relative paths resolve against `cwd` (the
/// recipe's `cd PARENT`); errors carry the errno sha256sum would have seen (ENOENT, EACCES,
/// EISDIR). Listings, kinds and file digests gathered by a previous walk can be pre-loaded so
/// the recipe reads nothing twice.
pub struct RemoteSource<'a> {
    remote: &'a dyn Remote,
    cwd: PathBuf,
    dirs: HashMap<Vec<u8>, Listing>,
    kinds: HashMap<Vec<u8>, FileKind>,
    hashes: Mutex<HashMap<Vec<u8>, (Digest, u64)>>,
    /// The first connection-level error (timeout, disconnect): the recipe sees EIO, the caller
    /// gets the real error.
    fatal: Mutex<Option<RemoteError>>,
}

impl<'a> RemoteSource<'a> {
    pub fn new(remote: &'a dyn Remote, cwd: PathBuf) -> RemoteSource<'a> {
        RemoteSource {
            remote,
            cwd,
            dirs: HashMap::new(),
            kinds: HashMap::new(),
            hashes: Mutex::new(HashMap::new()),
            fatal: Mutex::new(None),
        }
    }

    fn abs(&self, path: &[u8]) -> PathBuf {
        self.cwd.join(OsStr::from_bytes(path))
    }

    fn io(&self, e: RemoteError) -> io::Error {
        let errno = match &e {
            RemoteError::NotFound { .. } => libc::ENOENT,
            RemoteError::PermissionDenied { .. } => libc::EACCES,
            RemoteError::Exists { .. } => libc::EEXIST,
            RemoteError::Failed { reason, .. } if reason.contains("is a directory") => libc::EISDIR,
            RemoteError::Failed { reason, .. } if reason.contains("not a directory") => {
                libc::ENOTDIR
            }
            _ => 0,
        };
        if errno != 0 {
            return io::Error::from_raw_os_error(errno);
        }
        let text = e.to_string();
        if matches!(
            e,
            RemoteError::Timeout { .. }
                | RemoteError::Disconnected { .. }
                | RemoteError::Connect { .. }
        ) {
            self.fatal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        }
        io::Error::other(text)
    }

    /// The first connection-level error met, if any.
    pub fn take_fatal(&self) -> Option<RemoteError> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl TreeSource for RemoteSource<'_> {
    fn lstat_kind(&self, path: &[u8]) -> io::Result<FileKind> {
        if let Some(k) = self.kinds.get(path) {
            return Ok(*k);
        }
        match self.remote.lstat(&self.abs(path)) {
            Ok(Some(m)) => Ok(m.kind),
            Ok(None) => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            Err(e) => Err(self.io(e)),
        }
    }

    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<(Vec<u8>, FileKind)>> {
        if let Some(d) = self.dirs.get(path) {
            return Ok(d.clone());
        }
        match self.remote.read_dir(&self.abs(path)) {
            Ok(list) => Ok(list.into_iter().map(|e| (e.name, e.meta.kind)).collect()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn stat_kind(&self, path: &[u8]) -> io::Result<FileKind> {
        if let Some(k) = self.kinds.get(path) {
            if *k != FileKind::Symlink {
                return Ok(*k);
            }
        }
        match self.remote.stat(&self.abs(path)) {
            Ok(Some(m)) => Ok(m.kind),
            Ok(None) => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            Err(e) => Err(self.io(e)),
        }
    }

    fn hash_files(
        &self,
        paths: &[&[u8]],
        progress: &dyn Progress,
    ) -> Vec<io::Result<(Digest, u64)>> {
        let mut out: Vec<Option<io::Result<(Digest, u64)>>> = Vec::with_capacity(paths.len());
        let mut todo = Vec::new();
        let mut todo_idx = Vec::new();
        {
            let cache = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
            for (i, p) in paths.iter().enumerate() {
                match cache.get(*p) {
                    Some(h) => out.push(Some(Ok(*h))),
                    None => {
                        // sha256sum opens what find listed: a directory gives EISDIR.
                        if self.kinds.get(*p) == Some(&FileKind::Dir) {
                            out.push(Some(Err(io::Error::from_raw_os_error(libc::EISDIR))));
                            continue;
                        }
                        out.push(None);
                        todo.push(self.abs(p));
                        todo_idx.push(i);
                    }
                }
            }
        }
        if !todo.is_empty() {
            let got = self.remote.hash_files(&todo, progress);
            for (i, r) in todo_idx.into_iter().zip(got) {
                out[i] = Some(r.map_err(|e| self.io(e)));
            }
        }
        out.into_iter()
            .map(|r| r.expect("every slot filled"))
            .collect()
    }
}

/// The anchor's recipe digest (C locale) and manifest, reading every file once: one walk over
/// the transport gives the listing, kinds, modes and symlink targets, and the digests of the
/// files it finds, read while it goes on ([`shape::walk_hashed`]). The digest then follows from the manifest when
/// every path is plain ([`crate::manifest::recipe_from_entries`]); otherwise the recipe's
/// emulation runs on the walk and digests (see [`RemoteSource`]).
pub fn survey_anchor(
    remote: &dyn Remote,
    anchor: &Path,
    progress: &dyn Progress,
) -> Result<(Anchor, Manifest), PreflightError> {
    let parent = anchor.parent().unwrap_or(Path::new("/")).to_path_buf();
    let name = anchor
        .file_name()
        .unwrap_or(OsStr::new(""))
        .as_bytes()
        .to_vec();
    let root = remote.lstat(anchor)?.ok_or_else(|| RemoteError::NotFound {
        op: "lstat",
        path: anchor.to_path_buf(),
    })?;

    // One walk (a level's directories listed concurrently) gives kinds, sizes, exec bits,
    // symlink targets and digests; each directory's listing is also kept, in readdir order,
    // for the recipe's emulation.
    let mut listings: HashMap<Vec<u8>, Listing> = HashMap::from([(Vec::new(), Vec::new())]);
    // The files are read as their directories are listed, so the total is not known up front.
    progress.start("hashing anchor", None, None);
    let walked = shape::walk_hashed(
        remote,
        anchor,
        &mut |rel, meta| {
            let (dir, base) = match rel.iter().rposition(|&b| b == b'/') {
                Some(i) => (&rel[..i], &rel[i + 1..]),
                None => (&[][..], rel),
            };
            listings
                .entry(dir.to_vec())
                .or_default()
                .push((base.to_vec(), meta.kind));
            if meta.kind == FileKind::Dir {
                listings.entry(rel.to_vec()).or_default();
            }
        },
        progress,
    );
    progress.finish();
    let shape = walked?;
    let mut specials = Vec::new();
    let entries: Vec<Entry> = shape
        .into_iter()
        .filter_map(|(rel, k)| match k {
            Kind::Dir => Some(Entry::dir(rel)),
            Kind::Symlink { target } => Some(Entry::symlink(rel, target)),
            Kind::File {
                size,
                sha256,
                executable,
            } => Some(Entry::file(
                rel,
                size,
                sha256.expect("hash_shape fills every file"),
                executable,
            )),
            Kind::Other(_) => {
                specials.push(rel);
                None
            }
        })
        .collect();

    if !specials.is_empty() {
        // find -type f skips them, so the recipe is unaffected; the manifest cannot hold them.
        return Err(PreflightError::Manifest {
            path: anchor.to_path_buf(),
            source: crate::manifest::ManifestError::BadPath {
                path: crate::manifest::show(&specials[0]),
                reason: "is a socket, fifo or device, which a manifest cannot record",
            },
        });
    }
    let mut manifest =
        Manifest::from_entries(entries, None).map_err(|source| PreflightError::Manifest {
            path: anchor.to_path_buf(),
            source,
        })?;
    // The recipe digest (C locale: the seed's pipeline under LC_ALL=C). When every path is
    // plain it follows from the manifest alone; otherwise the pipeline's emulation runs over
    // the cached walk, quirks and all.
    // The two digests over the whole listing, side by side.
    let (plain_recipe, tree_identity) = rayon::join(
        || crate::manifest::recipe_from_entries(&name, &manifest.entries),
        || manifest.identity(),
    );
    let (digest, files, bytes) = match plain_recipe {
        Some(d) => (d, manifest.file_count(), manifest.total_bytes()),
        None => {
            // The walk and the digests as the emulation's source (paths from the parent).
            let mut src = RemoteSource::new(remote, parent);
            src.kinds.insert(name.clone(), root.kind);
            for (rel, kinds) in listings {
                for (n, k) in &kinds {
                    src.kinds.insert(join_rel(&name, &join_rel(&rel, n)), *k);
                }
                src.dirs.insert(join_rel(&name, &rel), kinds);
            }
            let cache = src.hashes.get_mut().unwrap_or_else(|p| p.into_inner());
            for e in &manifest.entries {
                if let EntryKind::File { size, sha256, .. } = &e.kind {
                    cache.insert(join_rel(&name, &e.path), (*sha256, *size));
                }
            }
            let opts = RecipeOptions {
                threads: Some(1),
                collation: Collation::c(),
            };
            let out = crate::tree::recipe_with(
                &src,
                std::slice::from_ref(&name),
                &opts,
                &crate::progress::NoProgress,
            );
            if let Some(e) = src.take_fatal() {
                return Err(PreflightError::Remote(e));
            }
            let out = out.map_err(|source| PreflightError::Recipe {
                path: anchor.to_path_buf(),
                source,
            })?;
            (out.digest, out.files, out.bytes)
        }
    };
    manifest.recipe = Some(RecipeRecord {
        digest,
        locale: "C".into(),
    });
    let anchor = Anchor {
        path: anchor.to_path_buf(),
        recipe_digest: digest,
        recipe_locale: "C".into(),
        tree_identity,
        files,
        bytes,
    };
    Ok((anchor, manifest))
}

fn join_rel(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    if b.is_empty() {
        return a.to_vec();
    }
    let mut v = a.to_vec();
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

/// `1.5 MiB`-style sizes with the exact byte count.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n} B)", UNITS[u])
    }
}

/// Now, UTC, RFC 3339 to the second.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's civil_from_days).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The report in the seed's voice: `key: value` lines grouped by numbered section, ending with
/// `verdict: PASS|FAIL` and every reason.
pub fn render_report(plan: &Plan) -> String {
    let mut r = Report(String::new());
    let check = |name: &str| plan.checks.iter().find(|c| c.name == name);
    let mark = |c: Option<&Check>| match c {
        Some(c) if c.ok => format!("OK ({})", c.evidence),
        Some(c) => format!("FAIL ({})", c.evidence),
        None => "not checked".to_string(),
    };
    r.kv(
        "sealpush preflight",
        &format!("{} ({})", plan.created, plan.tool_version),
    );

    r.section("1. Host");
    r.kv("host", &plan.host.destination);
    r.kv("transport", &plan.host.transport);
    if let Some(c) = &plan.host.ssh_config {
        r.kv("ssh_config", &c.display().to_string());
    }
    r.kv("hostname", &plan.facts.hostname);
    r.kv("kernel", &plan.facts.kernel);
    r.kv("os", &plan.facts.os_release);
    r.kv("home", &plan.facts.home);
    r.kv(
        "disk",
        &format!(
            "{} total, {} available (fsid {:016x}{})",
            human_bytes(plan.target_fs.total_bytes()),
            human_bytes(plan.target_fs.avail_bytes()),
            plan.target_fs.fsid,
            if plan.target_fs.read_only {
                ", read-only"
            } else {
                ""
            }
        ),
    );

    r.section("2. Artifact");
    r.kv("archive", &plan.artifact.path.display().to_string());
    r.kv("format", &plan.artifact.format);
    r.kv("archive_sha256", &plan.artifact.archive_sha256.to_hex());
    r.kv("archive_size", &human_bytes(plan.artifact.archive_size));
    r.kv("tree_identity", &plan.artifact.tree_identity.to_hex());
    // The plan holds zeros where the store says "none" (a tree the recipe cannot hash).
    if plan.artifact.recipe_digest == Digest::default() {
        r.kv("recipe_digest", "none (the recipe cannot hash this tree)");
    } else {
        r.kv("recipe_digest", &plan.artifact.recipe_digest.to_hex());
    }
    r.kv("files", &plan.artifact.files.to_string());
    r.kv("unpacked", &human_bytes(plan.artifact.unpacked_bytes));
    r.kv("intact", &mark(check("artifact-intact")));
    if plan.checks.iter().any(|c| c.name == "artifact-names") {
        r.kv("names", &mark(check("artifact-names")));
    }

    r.section("3. Pre-state anchor (must be unchanged after deploy)");
    match &plan.anchor {
        Some(a) => {
            r.kv("anchor_path", &a.path.display().to_string());
            r.kv("anchor_tree_sha256", &a.recipe_digest.to_hex());
            let name = a
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parent = a
                .path
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            r.kv(
                "recipe",
                &format!(
                    "cd {parent} && find {name} -type f | LC_ALL={} sort | xargs sha256sum | sha256sum",
                    a.recipe_locale
                ),
            );
            r.kv("anchor_identity", &a.tree_identity.to_hex());
            r.kv(
                "anchor_files",
                &format!("{} ({})", a.files, human_bytes(a.bytes)),
            );
            r.kv("anchor_disjoint", &mark(check("anchor-disjoint")));
        }
        None => match check("anchor") {
            Some(c) => r.kv("anchor", &mark(Some(c))),
            None => r.kv("anchor", "none given"),
        },
    }

    r.section("4. Target");
    r.kv("target", &plan.target.display().to_string());
    r.kv("target_absent", &mark(check("target-absent")));
    r.kv("parent_directory", &mark(check("parent-directory")));
    r.kv(
        "parent_no_symlinks",
        &mark(check("parent-no-symlink-components")),
    );
    r.kv(
        "parent_not_world_writable",
        &mark(check("parent-no-world-writable-components")),
    );
    r.kv("parent_writable", &mark(check("parent-writable")));
    if let Some(c) = check("target-filesystem-writable") {
        r.kv("filesystem_writable", &mark(Some(c)));
    }
    r.kv("unfinished_deploys", &mark(check("no-unfinished-deploy")));
    r.kv("work_dir", &plan.work_dir.display().to_string());

    r.section("5. Staging and space");
    r.kv("staging", &plan.staging.display().to_string());
    for c in plan
        .checks
        .iter()
        .filter(|c| c.name.starts_with("staging-"))
    {
        r.kv(&c.name.replace('-', "_"), &mark(Some(c)));
    }
    r.kv("space", &mark(check("space")));
    if plan.checks.iter().any(|c| c.name == "inodes") {
        r.kv("inodes", &mark(check("inodes")));
    }

    r.section("6. Locked deploy plan");
    for (i, op) in plan.operations.iter().enumerate() {
        r.kv(&format!("step_{}", i + 1), &describe_op(op));
    }

    r.section("7. Rollback plan (defined before any host write)");
    for (i, op) in plan.rollback.iter().enumerate() {
        r.kv(&format!("undo_{}", i + 1), &describe_op(op));
    }
    if let Some(a) = &plan.anchor {
        r.kv("anchor", &format!("{} is never touched", a.path.display()));
    }

    if !plan.probes.is_empty() {
        r.section("8. Probes");
        for p in &plan.probes {
            r.kv("probe", &p.command);
            let status = p
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "killed".into());
            r.kv("status", &status);
            for (k, text) in [("stdout", &p.stdout), ("stderr", &p.stderr)] {
                for t in text.lines() {
                    r.kv(k, t);
                }
            }
        }
    }

    r.section("Result");
    r.kv("verdict", if plan.verdict.pass { "PASS" } else { "FAIL" });
    for reason in &plan.verdict.reasons {
        r.kv("reason", reason);
    }
    r.0
}

/// Accumulates the report's lines.
struct Report(String);

impl Report {
    fn section(&mut self, title: &str) {
        self.0.push_str(title);
        self.0.push('\n');
    }
    fn kv(&mut self, k: &str, v: &str) {
        self.0.push_str(k);
        self.0.push_str(": ");
        self.0.push_str(v);
        self.0.push('\n');
    }
}

fn describe_op(op: &Operation) -> String {
    match op {
        Operation::TakeLock { path } => format!(
            "take lock {} (written whole, then hard-linked to that name: fails if it exists)",
            path.display()
        ),
        Operation::MakeStaging { path } => {
            format!("mkdir {} (mode 0700, exclusive)", path.display())
        }
        Operation::Materialize {
            staging,
            files,
            bytes,
        } => format!(
            "materialise the artifact into {} ({files} files, {})",
            staging.display(),
            human_bytes(*bytes)
        ),
        Operation::UploadArchive { path, sha256 } => {
            format!("upload the archive to {} (sha256 {sha256})", path.display())
        }
        Operation::VerifyStaged { staging } => {
            format!(
                "read back every file under {} and compare with the manifest",
                staging.display()
            )
        }
        Operation::WriteDeployManifest { path } => format!("write {}", path.display()),
        Operation::Promote { from, to } => format!(
            "rename {} -> {} (fails if the target exists in any form)",
            from.display(),
            to.display()
        ),
        Operation::Prove => {
            "re-hash the anchor (unchanged) and the target (matches the manifest)".into()
        }
        Operation::WriteReceipt { path } => format!("write receipt {}", path.display()),
        Operation::ReleaseLock { path } => format!("remove lock {}", path.display()),
        Operation::RemoveTree { path, identity } => format!(
            "remove {} only if it still holds exactly what the deploy created (artifact tree \
             {identity}, plus DEPLOY-MANIFEST.txt once written; the receipt lists every entry)",
            path.display()
        ),
        Operation::RemoveFile { path, sha256 } => match sha256 {
            Some(d) => format!("remove {} only if its sha256 is still {d}", path.display()),
            None => format!("remove {}", path.display()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_gnu_date() {
        // Expected values from `date -u -d @SECS +%Y-%m-%dT%H:%M:%SZ`.
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_779_357_600, "2026-05-21T10:00:00Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(secs), want, "{secs}");
        }
    }

    #[test]
    fn staging_names_are_fresh_and_hidden() {
        let a = staging_name(OsStr::new("iu-cutter-v0.6")).unwrap();
        let b = staging_name(OsStr::new("iu-cutter-v0.6")).unwrap();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert!(s.starts_with(".iu-cutter-v0.6.sealpush-stage-"), "{s}");
        assert_eq!(s.len(), ".iu-cutter-v0.6.sealpush-stage-".len() + 16);
    }

    #[test]
    fn work_dir_is_beside_the_target() {
        assert_eq!(
            work_dir_for(Path::new("/opt/incomex/dot/iu-cutter-v0.6")),
            PathBuf::from("/opt/incomex/dot/.sealpush/iu-cutter-v0.6")
        );
    }

    #[test]
    fn space_counts_archive_tree_blocks_and_margin() {
        let a = ArtifactRef {
            path: PathBuf::from("/x"),
            format: "tar.zst".into(),
            archive_sha256: Digest::default(),
            archive_size: 1000,
            tree_identity: Digest::default(),
            recipe_digest: Digest::default(),
            files: 10,
            unpacked_bytes: 5000,
            archive_stamp: None,
        };
        let base = 1000 + 5000 + 10 * 4096;
        assert_eq!(space_needed(&a, 4096), base + base / 10 + 4 * 1024 * 1024);
    }

    #[test]
    fn human_bytes_is_exact_too() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(1536), "1.5 KiB (1536 B)");
    }
}
