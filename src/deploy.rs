//! The deploy: gates G4 and G5 of the seed executed from a locked plan, with nothing lost
//! whatever happens. In order, each step journalled before it runs ([`journal`]):
//!
//! 1. re-check the plan's digest and the live host (target and staging absent, same filesystem,
//!    space, anchor digest); any drift stops the deploy before it writes anything;
//! 2. take a lock beside the target (`<work_dir>/lock`, naming owner pid, host and time; written
//!    whole in a file of its own, then hard-linked to that name, which fails if it exists, so the
//!    lock never exists without its content); a stale lock is reported with its owner and age
//!    and cleared only on request, except one left by a dead run of this same plan on this
//!    machine, which a re-run takes over;
//! 3. materialise the artifact's tree in a fresh staging directory: `STAGING` (mode 0700, so
//!    nobody else can reach into it) holding `STAGING/NAME`, the tree that will be promoted (as
//!    the seed staged `/tmp/o6b-stage/iu-cutter-v0.6/`). The tree comes from the local archive,
//!    whose sha256 is checked first and which is unpacked with every check of `sealpush
//!    unpack`; every remote create is exclusive and never follows a symlink; files are
//!    uploaded many at a time and fsynced where the server offers it (with `--sync`, one
//!    `sync -f` before the promote replaces the per-file fsyncs, see below);
//! 4. verify byte for byte: every staged file read back over the transport and hashed here
//!    (each upload batch is read back while the next one uploads, always after its own upload
//!    completed), or, with `--verify host-sha256sum`, `sha256sum -c` on the host; never a
//!    size-only check;
//! 5. `--keep-archive`: the archive uploaded into the work dir, exclusively, verified the same way;
//! 6. the staged tree as a whole (walked: names, kinds, exec bits, symlink targets, digests)
//!    equals the artifact's manifest, nothing missing, nothing extra;
//! 7. `DEPLOY-MANIFEST.txt` written into the staged tree (see [`deploy_manifest_text`]);
//! 8. promote: one `rename_noreplace(STAGING/NAME, TARGET)`, which fails if the target exists in
//!    any form, even as an empty directory;
//! 9. prove: the anchor's recipe digest is unchanged and the target has the verified shape;
//! 10. receipt written on the host and locally ([`receipt`]); lock released.
//!
//! Resume: before the promote, a re-run *cleans up and starts over* (removes exactly the
//! staged entries it recorded and the partial kept archive): a half-written file is
//! indistinguishable from a whole one until it is read back, and uploading again is the cheap,
//! obviously correct path. After the promote (the journal holds the promote intent and the
//! target exists while the staged tree does not), the tree is complete and was verified before
//! the rename, so a re-run *finishes*: prove, check, receipt, unlock.
//!
//! Durability: SFTP can fsync files but not directories, so neither the staged names nor the
//! promote's rename are made durable by SFTP alone. By default every file is fsynced
//! (`fsync@openssh.com`). `--sync` runs `sync -f` on the host over ssh twice instead: on the
//! staging directory before the promote (every staged file and name is on disk before the
//! rename can make it visible) and on the target after it (the rename). It is both more
//! durable and, for many small files, much faster: OpenSSH's sftp-server serves one request at
//! a time, so per-file fsyncs serialise.

pub mod anchor;
pub mod artifact;
pub mod journal;
pub mod lock;
pub mod receipt;
pub mod rollback;
pub mod shape;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::digest::Digest;
use crate::plan::{canonical_bytes, SealedPlan, Verdict};
use crate::progress::Progress;
use crate::remote::{ExecOutput, FileKind, NewFile, Remote, RemoteError};

pub use journal::{Phase, Step};
pub use lock::{LockAction, LockHolder, LockInfo, LOCK_TEMP_PREFIX};
pub use receipt::{render_receipt, Receipt};
pub use rollback::{
    find_receipt, render_rollback, render_status, rollback, status, RollbackReport, StatusReport,
};

use journal::{rfc3339, unix_now, Journal, StateDir};
use receipt::{AnchorProof, CheckRecord, CreatedKind, CreatedPath, TreeEntry};
use shape::Kind;

/// Name of the deploy manifest inside the deployed tree.
pub const DEPLOY_MANIFEST: &str = "DEPLOY-MANIFEST.txt";

/// How staged files are verified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerifyMode {
    /// Every staged file read back over the transport and hashed by sealpush (independent of
    /// the host's tools).
    #[default]
    ReadBack,
    /// `sha256sum -c` run on the host over ssh (faster on slow links; trusts the host).
    HostSha256sum,
}

impl VerifyMode {
    pub fn name(self) -> &'static str {
        match self {
            VerifyMode::ReadBack => "read-back",
            VerifyMode::HostSha256sum => "host-sha256sum",
        }
    }
}

impl std::str::FromStr for VerifyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read-back" => Ok(VerifyMode::ReadBack),
            "host-sha256sum" => Ok(VerifyMode::HostSha256sum),
            _ => Err(format!(
                "unknown verify mode {s:?} (expected read-back or host-sha256sum)"
            )),
        }
    }
}

/// What the deploy does beyond the plan.
#[derive(Clone, Debug)]
pub struct DeployOptions {
    /// Also upload the archive into the work dir beside the target, verified.
    pub keep_archive: bool,
    pub verify: VerifyMode,
    /// Command run over ssh in the deployed target (gate G5); its output goes into the receipt.
    pub check: Option<String>,
    /// Roll back when the check fails.
    pub rollback_on_check_failure: bool,
    /// `sync -f TARGET` on the host after the promote (SFTP cannot fsync a directory).
    pub sync: bool,
    /// Remove a lock whose owner is not running (or runs elsewhere) instead of refusing.
    pub clear_stale_lock: bool,
    /// Where local journals and receipts live (`default_local_state()`).
    pub local_state: PathBuf,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            keep_archive: false,
            verify: VerifyMode::ReadBack,
            check: None,
            rollback_on_check_failure: false,
            sync: false,
            clear_stale_lock: false,
            local_state: default_local_state(),
        }
    }
}

/// `$XDG_STATE_HOME/sealpush`, else `~/.local/state/sealpush`, else `./.sealpush-state`.
pub fn default_local_state() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("sealpush");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/state/sealpush");
    }
    PathBuf::from(".sealpush-state")
}

/// Why a deploy, rollback or status did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("plan was edited after preflight: its digest is {recorded} but its content hashes to {actual}; run preflight again")]
    PlanTampered { recorded: Digest, actual: Digest },
    #[error("plan verdict is FAIL; fix the reasons and run preflight again")]
    PlanFailed,
    #[error("plan is for the {expected} transport but the host was opened over {actual}")]
    TransportMismatch { expected: String, actual: String },
    #[error("plan path {}: {reason}", path.display())]
    BadPlanPath { path: PathBuf, reason: String },
    #[error("the host no longer matches the plan, nothing was written:\n  - {}", changes.join("\n  - "))]
    Drift { changes: Vec<String> },
    #[error("the host no longer matches the plan, so its interrupted deploy cannot finish:\n  - {}\n{outcome}", changes.join("\n  - "))]
    DriftCleanedUp {
        changes: Vec<String>,
        outcome: String,
    },
    #[error("another sealpush run of this plan is under way on this machine (it holds {}); wait for it to end, then run again", journal.display())]
    Busy { journal: PathBuf },
    #[error("{} is held by {holder}", path.display())]
    Locked {
        path: PathBuf,
        holder: Box<LockHolder>,
    },
    #[error("artifact {}: expected sha256 {expected}, found {actual}: it is not the archive the plan was made from (damaged or changed since); pack the tree again and make a new plan with `sealpush preflight`", path.display())]
    ArchiveMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("artifact {}: {reason}", path.display())]
    Artifact { path: PathBuf, reason: String },
    /// The archive's bytes are not those the plan was made from: a check failed (exit 1), as
    /// for a sha256 mismatch, whichever of the two checks saw it first.
    #[error("artifact {}: {reason}: it is not the archive the plan was made from (damaged or changed since); `sealpush verify` on it says more; pack the tree again and make a new plan with `sealpush preflight`", path.display())]
    ArtifactDamaged { path: PathBuf, reason: String },
    #[error("artifact tree identity: expected {expected}, found {actual}")]
    IdentityMismatch { expected: Digest, actual: Digest },
    #[error("staged file {}: expected sha256 {expected}, read back {actual}", path.display())]
    DigestMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{} does not match the artifact: {}", path.display(), differences.join("; "))]
    TreeMismatch {
        path: PathBuf,
        differences: Vec<String>,
    },
    #[error("host sha256sum check of {} failed (exit {status}): {output}", path.display())]
    HostVerify {
        path: PathBuf,
        status: String,
        output: String,
    },
    #[error("{} exists as {kind}, which this deploy did not create; remove it or run preflight again", path.display())]
    Foreign { path: PathBuf, kind: String },
    #[error("{} holds names this deploy did not create, left alone: {}; remove them by hand, then rerun the same deploy", path.display(), names.join(", "))]
    ForeignEntries { path: PathBuf, names: Vec<String> },
    #[error("{} holds the deploy of plan {theirs} (its {DEPLOY_MANIFEST} says so), not of this receipt's plan {ours}; nothing was removed (not even with --force): roll back with that plan or its receipt", target.display())]
    NotThisDeploy {
        target: PathBuf,
        theirs: String,
        ours: Digest,
    },
    #[error("{} holds entries the receipt lists but no {DEPLOY_MANIFEST}: it is not a tree a deploy made (a receipt can be edited to name any directory), so nothing was removed, not even with --force; if it is the deployed tree and that file was deleted, remove the tree by hand", target.display())]
    NotADeploy { target: PathBuf },
    /// An error after which the cleanup could not remove everything: `note` says what is left
    /// and what to do.
    #[error("{error}{note}")]
    WithLeftovers {
        error: Box<DeployError>,
        note: String,
    },
    #[error("promote refused: {} appeared after the checks (someone else created it); nothing of it was touched and the staged copy {} was removed", target.display(), staged.display())]
    TargetAppeared { target: PathBuf, staged: PathBuf },
    #[error("interrupted during {step}; {state}")]
    Interrupted { step: &'static str, state: String },
    #[error("this plan was already deployed (receipt {}); roll it back first to deploy it again", receipt.display())]
    AlreadyDeployed { receipt: PathBuf },
    #[error("no receipt for plan {plan}: looked in {}", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "))]
    NoReceipt { plan: Digest, looked: Vec<PathBuf> },
    #[error("no receipt for plan {plan} yet: its deploy did not finish (journal {}); run `sealpush deploy` on this plan again, which finishes it (after the promote) or removes what it staged (before), then roll back if you still want to", journal.display())]
    DeployUnfinished { plan: Digest, journal: PathBuf },
    #[error("receipt {}: {reason}", path.display())]
    BadReceipt { path: PathBuf, reason: String },
    #[error("this receipt is of an earlier deploy of plan {plan}: a deploy of that plan on this machine was cut off before it wrote its receipt (journal {}), and rolling back with this one would remove that run's lock and journal and strand what it staged; nothing was touched; run `sealpush deploy` on the plan again, which finishes it (after the promote) or removes what it staged (before), then roll back if you still want to", journal.display())]
    EarlierReceipt { plan: Digest, journal: PathBuf },
    #[error("rollback refused, nothing was removed: these changed since the deploy (use --force to remove them anyway):\n  - {}", changed.join("\n  - "))]
    RollbackRefused { changed: Vec<String> },
    #[error("local state {}: {reason}", path.display())]
    LocalState { path: PathBuf, reason: String },
    #[error("anchor {}: {reason}", path.display())]
    Anchor { path: PathBuf, reason: String },
    // The cause is part of the message (before the note), not a separate source: anyhow's
    // `{:#}` would print it twice.
    #[error("{step}: {cause}{note}")]
    Remote {
        step: &'static str,
        cause: RemoteError,
        /// What was left behind and what to do (empty when nothing).
        note: String,
    },
}

impl DeployError {
    /// True when the error is "a check failed" (exit 1) rather than "could not run" (exit 2).
    pub fn is_check_failure(&self) -> bool {
        if let DeployError::WithLeftovers { error, .. } = self {
            return error.is_check_failure();
        }
        matches!(
            self,
            DeployError::PlanTampered { .. }
                | DeployError::PlanFailed
                | DeployError::Drift { .. }
                | DeployError::DriftCleanedUp { .. }
                | DeployError::ArchiveMismatch { .. }
                | DeployError::ArtifactDamaged { .. }
                | DeployError::IdentityMismatch { .. }
                | DeployError::DigestMismatch { .. }
                | DeployError::TreeMismatch { .. }
                | DeployError::HostVerify { .. }
                | DeployError::RollbackRefused { .. }
                | DeployError::NotThisDeploy { .. }
                | DeployError::NotADeploy { .. }
        )
    }
}

impl From<RemoteError> for DeployError {
    fn from(source: RemoteError) -> Self {
        DeployError::Remote {
            step: "remote",
            cause: source,
            note: String::new(),
        }
    }
}

fn at(step: &'static str) -> impl Fn(RemoteError) -> DeployError {
    move |cause| DeployError::Remote {
        step,
        cause,
        note: String::new(),
    }
}

/// The paths a plan implies.
#[derive(Clone, Debug)]
pub struct Names {
    pub target: PathBuf,
    pub parent: PathBuf,
    /// The target's file name, raw.
    pub name: Vec<u8>,
    /// The staging directory (0700).
    pub staging: PathBuf,
    /// `staging/NAME`: the tree that is promoted.
    pub staged_tree: PathBuf,
    /// `<parent>/.sealpush`.
    pub work_root: PathBuf,
    /// `<parent>/.sealpush/<name>`.
    pub work_dir: PathBuf,
    pub lock: PathBuf,
    /// `<work_dir>/journal-<plan 16 hex>`.
    pub journal_dir: PathBuf,
    /// `<work_dir>/receipt-<plan 16 hex>.json`.
    pub host_receipt: PathBuf,
    /// `<work_dir>/<name>-<archive sha 12 hex>.<format>` (`--keep-archive`).
    pub kept_archive: PathBuf,
}

impl Names {
    pub fn of(plan: &crate::plan::Plan, plan_digest: &Digest) -> Result<Names, DeployError> {
        use std::os::unix::ffi::OsStrExt;
        let bad = |path: &Path, reason: &str| DeployError::BadPlanPath {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        for p in [&plan.target, &plan.staging, &plan.work_dir] {
            if !p.is_absolute()
                || p.components().any(|c| {
                    matches!(
                        c,
                        std::path::Component::ParentDir | std::path::Component::CurDir
                    )
                })
            {
                return Err(bad(p, "must be absolute, without `.` or `..`"));
            }
        }
        let (Some(parent), Some(name)) = (plan.target.parent(), plan.target.file_name()) else {
            return Err(bad(&plan.target, "has no parent directory"));
        };
        let Some(work_root) = plan.work_dir.parent() else {
            return Err(bad(&plan.work_dir, "has no parent directory"));
        };
        let name_s = name.to_string_lossy();
        Ok(Names {
            target: plan.target.clone(),
            parent: parent.to_path_buf(),
            name: name.as_bytes().to_vec(),
            staging: plan.staging.clone(),
            staged_tree: plan.staging.join(name),
            work_root: work_root.to_path_buf(),
            work_dir: plan.work_dir.clone(),
            lock: plan.work_dir.join("lock"),
            journal_dir: host_journal_dir(&plan.work_dir, plan_digest),
            host_receipt: host_receipt_path(&plan.work_dir, plan_digest),
            kept_archive: plan.work_dir.join(format!(
                "{name_s}-{}.{}",
                &plan.artifact.archive_sha256.to_hex()[..12],
                plan.artifact.format
            )),
        })
    }
}

/// This machine's name, for lock owners.
pub fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A work dir whose mkdir answered that the name exists (another run made it a moment ago):
/// taken only if it is a directory now. The lstat before the mkdir saw nothing there, so
/// whatever is there came in between, and a symlink would carry the lock and the journal
/// wherever it points.
fn made_meanwhile(remote: &dyn Remote, dir: &Path) -> Result<(), DeployError> {
    match remote.lstat(dir).map_err(at("work dir"))? {
        Some(m) if m.kind == FileKind::Dir => Ok(()),
        Some(m) => Err(DeployError::Foreign {
            path: dir.to_path_buf(),
            kind: kind_name(m.kind),
        }),
        None => Err(at("work dir")(RemoteError::NotFound {
            op: "mkdir",
            path: dir.to_path_buf(),
        })),
    }
}

fn kind_name(k: FileKind) -> String {
    format!("a {}", k.noun())
}

/// How much of each of a `--check`'s output streams the receipt keeps: its end, where a test
/// runner prints its summary. A chatty suite printed 3 MB into every copy of the receipt.
const CHECK_OUTPUT_KEPT: usize = 256 * 1024;

/// The last `keep` bytes of `text` (from a character boundary), after a line saying how much
/// was left out.
fn keep_tail(text: String, keep: usize) -> String {
    if text.len() <= keep {
        return text;
    }
    let mut start = text.len() - keep;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!(
        "[sealpush: the first {start} bytes of this output are left out]\n{}",
        &text[start..]
    )
}

/// `<work_dir>/receipt-<plan digest, 16 hex>.json`: the host's copy of a deploy's receipt.
pub fn host_receipt_path(work_dir: &Path, plan: &Digest) -> PathBuf {
    work_dir.join(format!("receipt-{}.json", &plan.to_hex()[..16]))
}

/// `<work_dir>/journal-<plan digest, 16 hex>`: the host's copy of a deploy's journal.
pub fn host_journal_dir(work_dir: &Path, plan: &Digest) -> PathBuf {
    work_dir.join(format!("journal-{}", &plan.to_hex()[..16]))
}

/// The work dirs a `work-dir` `done` record says its run made: its detail is the spellings of
/// those it made of `.sealpush` and the work dir, in that order, one a line. The detail is
/// compared whole with each of the four texts that can be, not split at newlines: a path may
/// hold one (preflight accepts a parent whose path does), and its pieces are no dirs of ours.
/// A detail that is none of them names nothing.
fn recorded_work_dirs(detail: &str, names: &Names) -> Vec<PathBuf> {
    let (root, work) = (&names.work_root, &names.work_dir);
    [vec![], vec![root], vec![work], vec![root, work]]
        .into_iter()
        .find(|made| {
            let lines: Vec<String> = made.iter().map(|p| p.display().to_string()).collect();
            lines.join("\n") == detail
        })
        .map_or_else(Vec::new, |made| made.into_iter().cloned().collect())
}

/// The text of DEPLOY-MANIFEST.txt: `key: value` header lines, then the per-file list in the
/// form `sha256sum -c` reads. Audit on a host with only coreutils:
/// `cd TARGET && grep -E '^\\?[0-9a-f]{64}  ' DEPLOY-MANIFEST.txt | sha256sum -c --strict`.
pub fn deploy_manifest_text(
    plan: &SealedPlan,
    tree_recipe: &Result<Digest, String>,
    manifest: &crate::manifest::Manifest,
    hostname: &str,
    time: &str,
) -> Vec<u8> {
    let p = &plan.plan;
    let files = manifest.file_count();
    let bytes = manifest.total_bytes();
    let target = receipt::shell_quote(&p.target.to_string_lossy());
    let mut s = format!(
        "# DEPLOY-MANIFEST.txt, written by sealpush before the promote.\n\
         # Audit this tree on the host with coreutils only:\n\
         #   cd {target} && grep -E '^\\\\?[0-9a-f]{{64}}  ' DEPLOY-MANIFEST.txt | sha256sum -c --strict\n\
         # The recipe digest below is of the tree as deployed (before any --check ran), without this file:\n\
         #   cd {parent} && find {name} -type f ! -path {name}/DEPLOY-MANIFEST.txt | LC_ALL=C sort | xargs sha256sum | sha256sum\n\
         artifact: {artifact}\n\
         artifact_format: {format}\n\
         archive_sha256: {archive}\n\
         tree_identity: {identity}\n\
         recipe_sha256: {recipe}\n\
         recipe_locale: C\n\
         plan_digest: {plan_digest}\n\
         host: {hostname} ({dest})\n\
         target: {target_raw}\n\
         deployed: {time}\n\
         tool_version: {tool}\n\
         files: {files}\n\
         bytes: {bytes}\n",
        parent = receipt::shell_quote(&p.target.parent().unwrap_or(Path::new("/")).to_string_lossy()),
        name = receipt::shell_quote(&p.target.file_name().unwrap_or_default().to_string_lossy()),
        artifact = p.artifact.path.display(),
        format = p.artifact.format,
        archive = p.artifact.archive_sha256,
        identity = p.artifact.tree_identity,
        recipe = match tree_recipe {
            Ok(d) => d.to_hex(),
            // One header line whatever the reason holds (a name may hold a newline).
            Err(why) => format!(
                "none (the recipe cannot hash this tree: {})",
                why.replace(['\n', '\r'], " ")
            ),
        },
        plan_digest = plan.digest,
        dest = p.host.destination,
        target_raw = p.target.display(),
        tool = crate::TOOL_VERSION,
    )
    .into_bytes();
    s.extend_from_slice(&manifest.sha256sum_lines(b""));
    s
}

/// Reads one `key: value` header of a deploy manifest.
pub fn deploy_manifest_field<'a>(text: &'a [u8], key: &str) -> Option<&'a str> {
    text.split(|&b| b == b'\n').find_map(|l| {
        let l = std::str::from_utf8(l).ok()?;
        l.strip_prefix(key)?.strip_prefix(": ")
    })
}

/// The digest and length of one file as read back over the transport.
type ReadBack = Result<(Digest, u64), RemoteError>;

/// One run of the deploy engine.
struct Run<'a> {
    remote: &'a dyn Remote,
    sealed: &'a SealedPlan,
    opts: &'a DeployOptions,
    progress: &'a dyn Progress,
    names: Names,
    state: StateDir,
    journal: Journal,
    art: artifact::Prepared,
    hostname: String,
    started: String,
    t0: Instant,
    prepare_secs: f64,
    upload_secs: f64,
    verify_secs: f64,
    /// The host lock, this run's while it holds it.
    lock: lock::HostLock,
    /// The work dirs this run's own mkdir made (not found there, not made by an earlier run).
    made_work_dirs: Vec<PathBuf>,
    promoted: bool,
    /// The receipt is written, locally and on the host: what a rerun has left to do is the
    /// unlock.
    receipt_written: bool,
    /// The promote's rename went unanswered (a stall, a lost connection): the host may still
    /// carry it out, so the target is absent or complete, and which one is not known here.
    promote_unanswered: bool,
    resume: String,
    /// Paths outside the tree this deploy created (including by earlier runs since a reset).
    created: Vec<CreatedPath>,
    deploy_manifest: Option<Digest>,
    /// Digests read back while the upload ran (read-back mode), by remote path.
    read_back: Option<std::collections::HashMap<PathBuf, ReadBack>>,
    /// This run journalled an upload of the kept archive (see [`Run::remove_staged`]).
    archive_intended: bool,
    /// [`Receipt::archive_check`]: how this run vouched for the local archive it read.
    archive_check: &'static str,
}

/// Executes a locked plan (see the module docs). Returns the receipt, whose verdict is FAIL
/// when the prove or the `--check` failed (the tree is deployed, or rolled back with
/// `--rollback-on-check-failure`). Errors leave the target absent or complete, never partial.
pub fn deploy(
    remote: &dyn Remote,
    plan: &SealedPlan,
    opts: &DeployOptions,
    progress: &dyn Progress,
) -> Result<Receipt, DeployError> {
    let actual = Digest::of(&canonical_bytes(&plan.plan));
    if actual != plan.digest {
        return Err(DeployError::PlanTampered {
            recorded: plan.digest,
            actual,
        });
    }
    if !plan.plan.verdict.pass {
        return Err(DeployError::PlanFailed);
    }
    if plan.plan.host.transport != remote.transport() {
        return Err(DeployError::TransportMismatch {
            expected: plan.plan.host.transport.clone(),
            actual: remote.transport().into(),
        });
    }
    let names = Names::of(&plan.plan, &plan.digest)?;
    let state = StateDir::open(&opts.local_state, &plan.digest)?;
    let mut journal = Journal::open(&state)?;
    if journal.history.done(Step::Finished) {
        // Rolled back from another machine (through the host's receipt, which a complete
        // rollback removes with the tree and the host journal): nothing of that deploy is
        // left, so this one starts afresh rather than ask for a rollback there is nothing for.
        let mut gone = true;
        for m in remote.lstats(&[
            names.target.clone(),
            names.host_receipt.clone(),
            names.journal_dir.clone(),
        ]) {
            gone &= m.map_err(at("recheck"))?.is_none();
        }
        if !gone {
            return Err(DeployError::AlreadyDeployed {
                receipt: state.receipt_path(),
            });
        }
        journal.record(
            remote,
            Step::Reset,
            Phase::Done,
            "rolled back elsewhere: the target, the host's receipt and journal are gone",
        )?;
        journal.history = journal::History::default();
    }
    // Reading only: the archive's sha256 and a checked local unpack.
    let t0 = Instant::now();
    let art = artifact::prepare(&plan.plan, &names, progress)?;
    let archive_check = art.archive_check;
    let prepare_secs = t0.elapsed().as_secs_f64();
    let hostname = remote.facts().map(|f| f.hostname).unwrap_or_default();
    let mut run = Run {
        remote,
        sealed: plan,
        opts,
        progress,
        names,
        state,
        journal,
        art,
        hostname,
        started: rfc3339(unix_now()),
        t0,
        prepare_secs,
        upload_secs: 0.0,
        verify_secs: 0.0,
        lock: lock::HostLock::new(
            &plan.plan.work_dir,
            plan.digest,
            &plan.plan.target,
            LockAction::Deploy,
        ),
        made_work_dirs: Vec::new(),
        promoted: false,
        receipt_written: false,
        promote_unanswered: false,
        resume: String::new(),
        created: Vec::new(),
        deploy_manifest: None,
        read_back: None,
        archive_intended: false,
        archive_check,
    };
    run.execute()
}

impl Run<'_> {
    fn record(
        &mut self,
        step: Step,
        phase: Phase,
        detail: impl Into<String>,
    ) -> Result<(), DeployError> {
        self.journal.record(self.remote, step, phase, detail)
    }

    fn execute(&mut self) -> Result<Receipt, DeployError> {
        let prior = self.journal.history.clone();
        let promoted_before = prior.intended(Step::Promote) && self.promote_happened()?;
        self.record(Step::Recheck, Phase::Intent, "")?;
        if promoted_before {
            self.promoted = true;
        } else {
            let (drift, benign_only) = self.drift(&prior)?;
            if !drift.is_empty() {
                self.record(Step::Recheck, Phase::Failed, drift.join("; "))?;
                if benign_only && prior.intended(Step::WorkDir) {
                    return Err(self.clean_up_after_drift(&prior, drift));
                }
                return Err(DeployError::Drift { changes: drift });
            }
        }
        self.record(Step::Recheck, Phase::Done, "")?;
        self.enter_work_dir(&prior)?;
        if let Err(e) = self.take_lock() {
            return Err(self.without_the_lock(&prior, e));
        }
        let result = if promoted_before {
            self.resume = "finished an interrupted deploy whose promote had happened".into();
            self.open_host_journal().and_then(|()| self.after_promote())
        } else {
            self.target_still_absent()
                .and_then(|()| self.open_host_journal())
                .and_then(|()| self.before_promote(&prior))
                .and_then(|()| self.after_promote())
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// True when an earlier run's promote took effect: target present, staged tree gone, and
    /// the target's deploy manifest naming this plan. A directory someone else put at the target
    /// meanwhile is not taken for ours: the recheck then reports it as drift.
    fn promote_happened(&self) -> Result<bool, DeployError> {
        let target = self
            .remote
            .lstat(&self.names.target)
            .map_err(at("recheck"))?;
        let staged = self
            .remote
            .lstat(&self.names.staged_tree)
            .map_err(at("recheck"))?;
        if !(matches!(target, Some(m) if m.kind == FileKind::Dir) && staged.is_none()) {
            return Ok(false);
        }
        let ours = match self
            .remote
            .read_file(&self.names.target.join(DEPLOY_MANIFEST), 1 << 30)
        {
            Ok(text) => {
                deploy_manifest_field(&text, "plan_digest") == Some(&self.sealed.digest.to_hex())
            }
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(at("recheck")(e)),
        };
        Ok(ours)
    }

    /// Step 1: every way the host may have drifted from the plan, and whether every one of
    /// them is about the anchor or the space only: drift that leaves the paths this deploy
    /// writes to as preflight saw them, so an earlier run's leftovers can still be removed.
    fn drift(&mut self, prior: &journal::History) -> Result<(Vec<String>, bool), DeployError> {
        let plan = &self.sealed.plan;
        let r = self.remote;
        let mut out = Vec::new();
        // How many of `out` are about the anchor or the space.
        let mut benign = 0;
        // All at once: no lookup depends on another.
        let [target, staging, receipt]: [_; 3] = r
            .lstats(&[
                self.names.target.clone(),
                self.names.staging.clone(),
                self.names.host_receipt.clone(),
            ])
            .try_into()
            .expect("one result per path");
        // A receipt of this plan on the host with no target (this is not a resume after the
        // promote): a rollback of its deploy did not finish, and owns what is left.
        let receipt_there = receipt.map_err(at("recheck"))?.is_some();
        if receipt_there {
            out.push(format!(
                "a receipt of this plan is on the host ({}): its deploy is there, or its rollback did not finish; run `sealpush rollback` on this plan first",
                self.names.host_receipt.display()
            ));
        }
        // A rollback of any earlier deploy of this target, cut off or still running, moved its
        // tree aside into the work dir: a new deploy now would make that rollback's target
        // another plan's, which it must refuse, and leave it unable to finish.
        let journal_name = self
            .names
            .journal_dir
            .file_name()
            .map(std::os::unix::ffi::OsStrExt::as_bytes);
        let mut journal_there = false;
        match r.read_dir(&self.names.work_dir) {
            Ok(entries) => {
                journal_there = entries
                    .iter()
                    .any(|e| Some(e.name.as_slice()) == journal_name);
                for e in entries.iter().filter(|e| {
                    e.name.starts_with(rollback::ASIDE_PREFIX.as_bytes())
                        && e.meta.kind == FileKind::Dir
                }) {
                    out.push(format!(
                        "{} is what is left of a rollback of an earlier deploy of this target, cut off or still running: finish it (`sealpush rollback` on that deploy's plan or receipt, in {}) first",
                        shape::join(&self.names.work_dir, &e.name).display(),
                        self.names.work_dir.display()
                    ));
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(at("recheck")(e)),
        }
        // This plan's host journal with nothing in the local one: a run of this plan from
        // another machine (or state dir) got that far; only its local journal can resume it.
        // (Not with its receipt there: that deploy finished, and its journal stays until the
        // rollback; running it again there says "already deployed".)
        // (Seen in the work dir's listing above: no request of its own.)
        let elsewhere = journal_there
            && !receipt_there
            && prior.records.iter().all(|r| r.step == Step::Recheck);
        let or_elsewhere = |change: String| {
            if elsewhere {
                format!(
                    "{change}: a run of this plan from another machine or state dir got this far (its host journal is {}); run the deploy again there, where its local journal is",
                    self.names.journal_dir.display()
                )
            } else {
                change
            }
        };
        if let Some(m) = target.map_err(at("recheck"))? {
            out.push(or_elsewhere(format!(
                "target {} now exists as {} (it was absent at preflight)",
                self.names.target.display(),
                kind_name(m.kind)
            )));
        }
        match staging.map_err(at("recheck"))? {
            None => {}
            // Ours once the journal holds the intent to make it: a kill between the mkdir and
            // its `done` record leaves it there with only the intent, and the name is the
            // plan's unguessable one (preflight saw it absent). The cleanup removes only what
            // the artifact names, never through a symlink.
            Some(m) if m.kind == FileKind::Dir && prior.intended(Step::Staging) => {}
            Some(m) => out.push(or_elsewhere(format!(
                "staging {} exists as {}, which this deploy did not create",
                self.names.staging.display(),
                kind_name(m.kind)
            ))),
        }
        // Every component of the target's and the staging's parents as preflight requires them:
        // no symlink, none world-writable without the sticky bit. The plan's verdict is not
        // taken on trust (its digest is a checksum, not a signature), and a path changed since
        // the survey would redirect every write.
        let mut components: Vec<PathBuf> = Vec::new();
        for dir in [
            Some(self.names.parent.as_path()),
            self.names.staging.parent(),
        ]
        .into_iter()
        .flatten()
        {
            for p in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
                if !components.iter().any(|c| c == p) {
                    components.push(p.to_path_buf());
                }
            }
        }
        for (p, m) in components.iter().zip(r.lstats(&components)) {
            match m.map_err(at("recheck"))? {
                Some(m) if m.kind == FileKind::Symlink => out.push(format!(
                    "{} is a symlink: the deploy would write where it points",
                    p.display()
                )),
                Some(m) if m.open_to_swaps() => {
                    out.push(format!(
                        "{} is world-writable without the sticky bit (mode {:04o}): anyone could swap names in it",
                        p.display(),
                        m.mode
                    ))
                }
                _ => {}
            }
        }
        let parent_fs = r.statvfs(&self.names.parent);
        match &parent_fs {
            Ok(st) => {
                if st.fsid != plan.target_fs.fsid {
                    out.push(format!(
                        "filesystem of {} changed: id {:#x}, plan {:#x}",
                        self.names.parent.display(),
                        st.fsid,
                        plan.target_fs.fsid
                    ));
                }
                if st.read_only {
                    out.push(format!("{} is now read-only", self.names.parent.display()));
                }
                // The same rule as preflight's (archive + tree + margin); an earlier run's
                // leftovers are about to be removed, so the check is skipped on resume.
                let need = crate::preflight::space_needed(&plan.artifact, st.frsize);
                if st.avail_bytes() < need && !prior.done(Step::Staging) {
                    benign += 1;
                    out.push(format!(
                        "not enough space on {}: {} bytes available, {need} needed with margin",
                        self.names.parent.display(),
                        st.avail_bytes(),
                    ));
                }
            }
            Err(e) => out.push(format!(
                "cannot statvfs {}: {e}",
                self.names.parent.display()
            )),
        }
        if let Some(sp) = self.names.staging.parent() {
            // Beside the target (the default), the staging parent is the target's parent.
            let staging_fs = match &parent_fs {
                Ok(st) if sp == self.names.parent => Ok(st.clone()),
                _ => r.statvfs(sp),
            };
            if let Ok(st) = staging_fs {
                if st.fsid != plan.target_fs.fsid {
                    out.push(format!(
                        "staging parent {} is not on the target's filesystem (id {:#x}, target {:#x}): the promote would not be an atomic rename",
                        sp.display(),
                        st.fsid,
                        plan.target_fs.fsid
                    ));
                }
            }
        }
        if let Some(a) = &plan.anchor {
            let before = out.len();
            match r.lstat(&a.path).map_err(at("recheck"))? {
                None => out.push(format!("anchor {} is gone", a.path.display())),
                Some(_) => {
                    let (d, id) = anchor::survey(r, &a.path, self.progress)?;
                    if d != a.recipe_digest {
                        out.push(format!(
                            "anchor {} changed: its recipe digest is {d}, the plan recorded {}",
                            a.path.display(),
                            a.recipe_digest
                        ));
                    } else if id != a.tree_identity {
                        out.push(format!(
                            "anchor {} changed (modes, symlinks or empty directories): tree identity {id}, the plan recorded {}",
                            a.path.display(),
                            a.tree_identity
                        ));
                    }
                }
            }
            benign += out.len() - before;
        }
        let benign_only = benign == out.len();
        Ok((out, benign_only))
    }

    /// An earlier run of this plan was cut off before its promote, and the host has since
    /// drifted so that the plan can never finish (the anchor was edited, say). Left alone,
    /// its staged tree, lock and host journal would stay for good: this deploy drifts again
    /// each time, rollback finds no receipt, preflight fails on them. They are removed as a
    /// failed deploy removes its own, under the lock; the drift is reported as the cause.
    fn clean_up_after_drift(
        &mut self,
        prior: &journal::History,
        changes: Vec<String>,
    ) -> DeployError {
        let taken = self
            .enter_work_dir(prior)
            .and_then(|()| self.take_lock())
            .and_then(|()| self.open_host_journal());
        if let Err(e) = taken {
            // Taken before opening the host journal failed: not kept past this run.
            let _ = self.release_lock();
            return DeployError::DriftCleanedUp {
                changes,
                outcome: format!(
                    "what the interrupted run left is still there: {e}; fix that, then rerun the same deploy to remove it"
                ),
            };
        }
        let removed = "what that run had staged, its lock and its host journal were removed; run preflight again for a new plan";
        match self.fail(DeployError::DriftCleanedUp {
            changes,
            outcome: removed.into(),
        }) {
            // Not all of it went: fail's note says what is left; the outcome must not say
            // otherwise.
            DeployError::WithLeftovers { error, note } => match *error {
                DeployError::DriftCleanedUp { changes, .. } => DeployError::WithLeftovers {
                    error: Box::new(DeployError::DriftCleanedUp {
                        changes,
                        outcome: "removing what the interrupted run left did not finish".into(),
                    }),
                    note,
                },
                other => DeployError::WithLeftovers {
                    error: Box::new(other),
                    note,
                },
            },
            other => other,
        }
    }

    /// `<parent>/.sealpush/<name>/`, created if absent (never through a symlink).
    fn enter_work_dir(&mut self, prior: &journal::History) -> Result<(), DeployError> {
        // Earlier runs since the last reset may have created them; they count as ours, unless
        // a run refused the lock removed them again (see `without_the_lock`).
        for r in &prior.records {
            match (r.step, r.phase) {
                (Step::WorkDir, Phase::Done) => {
                    for p in recorded_work_dirs(&r.detail, &self.names) {
                        self.note_created(p, CreatedKind::Dir, None);
                    }
                }
                (Step::Cleanup, Phase::Done) => {
                    for p in recorded_work_dirs(&r.detail, &self.names) {
                        self.created.retain(|c| c.path != p);
                    }
                }
                _ => {}
            }
        }
        self.record(
            Step::WorkDir,
            Phase::Intent,
            self.names.work_dir.display().to_string(),
        )?;
        let mut made = Vec::new();
        for dir in [self.names.work_root.clone(), self.names.work_dir.clone()] {
            match self.remote.lstat(&dir).map_err(at("work dir"))? {
                Some(m) if m.kind == FileKind::Dir => {}
                Some(m) => {
                    return Err(DeployError::Foreign {
                        path: dir,
                        kind: kind_name(m.kind),
                    })
                }
                None => match self.remote.mkdir(&dir, 0o700) {
                    Ok(()) => made.push(dir),
                    // Another deploy (of another target) made it a moment ago: fine if a dir.
                    Err(RemoteError::Exists { .. }) => made_meanwhile(self.remote, &dir)?,
                    Err(e) => return Err(at("work dir")(e)),
                },
            }
        }
        let detail: Vec<String> = made.iter().map(|p| p.display().to_string()).collect();
        for p in &made {
            self.note_created(p.clone(), CreatedKind::Dir, None);
        }
        self.made_work_dirs = made;
        self.record(Step::WorkDir, Phase::Done, detail.join("\n"))
    }

    /// The lock was not taken. Refused by the host's answer (another deploy or a rollback holds
    /// the lock, or a name not this run's is at the file it writes the lock in), this run
    /// touches nothing of theirs, and removes the work dirs its own mkdir made a moment ago:
    /// not one it found, which may be another deploy's, nor one an earlier run made. The
    /// holder's lock is in the work dir, so that is empty only once the holder is gone;
    /// otherwise it stays, and the journal keeps it as this deploy's, so the same deploy run
    /// again takes it on.
    ///
    /// A request the host did not answer (a stall, a lost connection) may still be carried
    /// out: the error says what running the same deploy again does about it.
    fn without_the_lock(&mut self, prior: &journal::History, err: DeployError) -> DeployError {
        // The rerun also counts the work dirs this run made as its own.
        let err = self
            .lock
            .explain_unanswered(err, "the target was not created");
        let refused = matches!(
            err,
            DeployError::Locked { .. } | DeployError::Foreign { .. }
        );
        if !refused || self.made_work_dirs.is_empty() {
            return err;
        }
        let made = std::mem::take(&mut self.made_work_dirs);
        let shown: Vec<String> = made.iter().map(|p| p.display().to_string()).collect();
        let intent = format!(
            "the lock is not this run's: removing the work dirs it made, if empty: {}",
            shown.join(", ")
        );
        if self.record(Step::Cleanup, Phase::Intent, intent).is_err() {
            // Not journalled, not removed: the work-dir record keeps them as this deploy's.
            return err;
        }
        let mut removed = Vec::new();
        let mut kept = None;
        // The work dir first: `.sealpush` holds it.
        for dir in made.iter().rev() {
            match self.remote.remove_dir(dir) {
                Ok(()) => removed.push(dir),
                Err(e) if e.is_not_found() => removed.push(dir),
                Err(e) => {
                    kept = Some((dir, e));
                    break;
                }
            }
        }
        // Spelled as the work-dir record is: a rerun takes these off what earlier runs made.
        let detail: Vec<String> = removed
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let _ = self.record(Step::Cleanup, Phase::Done, detail.join("\n"));
        let Some((dir, e)) = kept else {
            // Nothing of this run or an earlier one is on the host: the history restarts.
            let nothing_earlier = prior.records.iter().all(|r| r.step == Step::Recheck);
            if nothing_earlier && self.lock.leaves_nothing() {
                let _ = self.record(
                    Step::Reset,
                    Phase::Done,
                    "the lock was not this run's; the work dirs it made were removed",
                );
            }
            return err;
        };
        // The path is in `e` already. The work dir kept, the `.sealpush` around it stays too
        // when this run made that as well (it was next in line).
        let (kept, both) = if *dir != self.names.work_dir {
            (
                format!("the dir .sealpush this run made stays ({e})"),
                false,
            )
        } else if made.contains(&self.names.work_root) {
            (format!("the work dir this run made stays ({e}), as does the dir .sealpush it made around it"), true)
        } else {
            (format!("the work dir this run made stays ({e})"), false)
        };
        let (also, they) = if both {
            (", and .sealpush too,", "them")
        } else {
            (",", "it")
        };
        let note = format!(
            "; {kept}: the same deploy run again counts it as its own{also} so its rollback, or its cleanup after a failure, removes {they} if nothing else is in {they} then"
        );
        DeployError::WithLeftovers {
            error: Box::new(err),
            note,
        }
    }

    fn note_created(&mut self, path: PathBuf, kind: CreatedKind, sha256: Option<Digest>) {
        self.created.retain(|c| c.path != path);
        self.created.push(CreatedPath { path, kind, sha256 });
    }

    /// Step 2: the lock, written whole (see [`lock`]).
    fn take_lock(&mut self) -> Result<(), DeployError> {
        self.lock.take(
            self.remote,
            &mut Some(&mut self.journal),
            self.opts.clear_stale_lock,
        )
    }

    /// The recheck ran before the lock: another deploy of this plan or target (from another
    /// machine) may have finished while this one waited. Seen under the lock, before this run
    /// writes a host journal record or stages anything, it leaves that deploy's work alone.
    fn target_still_absent(&mut self) -> Result<(), DeployError> {
        let Some(m) = self
            .remote
            .lstat(&self.names.target)
            .map_err(at("recheck"))?
        else {
            return Ok(());
        };
        let change = format!(
            "target {} now exists as {} (another deploy finished while this one waited for the lock)",
            self.names.target.display(),
            kind_name(m.kind)
        );
        self.record(Step::Recheck, Phase::Failed, change.clone())?;
        Err(DeployError::Drift {
            changes: vec![change],
        })
    }

    /// Creates (or, for a rerun, finds) the host copy of the journal and attaches it.
    fn open_host_journal(&mut self) -> Result<(), DeployError> {
        // The host copy of the journal lives beside the lock, written only while it is held.
        // Named by the plan, it exists only when an earlier run of this plan made it: create
        // first, and look only then. It is this run's to remove on failure only if it made it,
        // or an earlier run of this plan from this machine (whose journal says it got the
        // lock) did; a run of the same plan from elsewhere keeps its records.
        let mut ours = self.journal.history.done(Step::Lock);
        match self.remote.mkdir(&self.names.journal_dir, 0o700) {
            Ok(()) => ours = true,
            Err(RemoteError::Exists { .. }) => match self
                .remote
                .lstat(&self.names.journal_dir)
                .map_err(at("journal"))?
            {
                Some(m) if m.kind == FileKind::Dir => {}
                Some(m) => {
                    return Err(DeployError::Foreign {
                        path: self.names.journal_dir.clone(),
                        kind: kind_name(m.kind),
                    })
                }
                None => {
                    return Err(at("journal")(RemoteError::NotFound {
                        op: "lstat",
                        path: self.names.journal_dir.clone(),
                    }))
                }
            },
            Err(e) => return Err(at("journal")(e)),
        }
        if ours {
            self.note_created(self.names.journal_dir.clone(), CreatedKind::Dir, None);
        }
        self.journal.attach_host(self.names.journal_dir.clone());
        Ok(())
    }

    fn check_interrupt(&mut self, step: Step) -> Result<(), DeployError> {
        if crate::interrupt::requested() {
            self.record(step, Phase::Failed, "interrupted")?;
            return Err(DeployError::Interrupted {
                step: step.name(),
                state: String::new(),
            });
        }
        Ok(())
    }

    /// Steps 3 to 8.
    fn before_promote(&mut self, prior: &journal::History) -> Result<(), DeployError> {
        if prior.intended(Step::Staging) || prior.intended(Step::UploadArchive) {
            self.record(
                Step::Cleanup,
                Phase::Intent,
                "leftovers of an interrupted run",
            )?;
            self.remove_staged()?;
            self.record(Step::Cleanup, Phase::Done, "")?;
            self.resume = format!(
                "cleaned up an interrupted deploy's staging {} and started over",
                self.names.staging.display()
            );
        }
        self.check_interrupt(Step::Staging)?;
        self.record(
            Step::Staging,
            Phase::Intent,
            self.names.staging.display().to_string(),
        )?;
        self.remote
            .mkdir(&self.names.staging, 0o700)
            .map_err(at("staging"))?;
        self.remote
            .mkdir(&self.names.staged_tree, 0o755)
            .map_err(at("staging"))?;
        self.record(Step::Staging, Phase::Done, "")?;
        self.materialise()?;
        if self.opts.keep_archive {
            self.check_interrupt(Step::UploadArchive)?;
            self.upload_archive()?;
        }
        self.check_interrupt(Step::Verify)?;
        self.verify_staged()?;
        self.check_interrupt(Step::DeployManifest)?;
        self.write_deploy_manifest()?;
        self.check_interrupt(Step::Promote)?;
        self.promote()
    }

    fn materialise(&mut self) -> Result<(), DeployError> {
        let t = Instant::now();
        let (files, bytes) = self.art.totals();
        self.record(
            Step::Materialise,
            Phase::Intent,
            format!("{files} files, {bytes} bytes"),
        )?;
        let root = self.names.staged_tree.clone();
        let dirs: Vec<Vec<u8>> = self
            .art
            .expected
            .iter()
            .filter(|(_, k)| matches!(k, Kind::Dir))
            .map(|(p, _)| p.clone())
            .collect();
        if !dirs.is_empty() {
            self.progress
                .start("directories", None, Some(dirs.len() as u64));
            // One depth at a time, parents first; the directories of one depth are created
            // concurrently.
            let mut levels: Vec<Vec<PathBuf>> = Vec::new();
            for d in &dirs {
                let depth = d.iter().filter(|&&b| b == b'/').count();
                if levels.len() <= depth {
                    levels.resize(depth + 1, Vec::new());
                }
                levels[depth].push(shape::join(&root, d));
            }
            for level in &levels {
                self.remote
                    .mkdirs(level, 0o755)
                    .map_err(at("materialise"))?;
                self.progress.advance(0, level.len() as u64);
            }
            self.progress.finish();
        }
        let uploads: Vec<NewFile> = self
            .art
            .expected
            .iter()
            .filter_map(|(p, k)| match k {
                Kind::File {
                    size, executable, ..
                } => Some(NewFile {
                    remote: shape::join(&root, p),
                    local: match &self.art.contents {
                        artifact::Contents::Unpacked(tree) => shape::join(tree, p),
                        // Streamed: no local file; only `remote`, `len` and `mode` are used.
                        artifact::Contents::Archive(_) => PathBuf::new(),
                    },
                    len: *size,
                    mode: if *executable { 0o755 } else { 0o644 },
                }),
                _ => None,
            })
            .collect();
        self.progress.start("uploading", Some(bytes), Some(files));
        // Batches bound how long a Ctrl-C waits for a safe point; each batch still has many
        // files and requests in flight inside the transport. The read-back of a batch overlaps
        // the upload of the next, so a tree of a few thousand files is cut into about 8
        // batches (at least 256 files each), not uploaded as one and read back after it: over a
        // link with 20 ms of round trip that was a second of read-back after the upload.
        let batch_files = (uploads.len() / 8).clamp(256, 4096);
        let mut batches = Vec::new();
        let mut batch_start = 0;
        while batch_start < uploads.len() {
            let mut end = batch_start;
            let mut batch_bytes = 0u64;
            while end < uploads.len()
                && (end == batch_start
                    || (end - batch_start < batch_files && batch_bytes < 128 << 20))
            {
                batch_bytes += uploads[end].len;
                end += 1;
            }
            batches.push(batch_start..end);
            batch_start = end;
        }
        // With read-back verification, each batch is read back while the next one uploads
        // (a second thread on the same connection): a file is read back only after its upload
        // (and fsync) completed, exactly as if the steps ran one after the other, but the
        // transfer and the read-back share the wall time.
        let overlap = self.opts.verify == VerifyMode::ReadBack;
        let remote = self.remote;
        let fsync = self.per_file_fsync();
        let progress = self.progress;
        let uploads_ref = &uploads;
        let streamed_from = match &self.art.contents {
            artifact::Contents::Archive(a) => Some(a.as_path()),
            artifact::Contents::Unpacked(_) => None,
        };
        let manifest = &self.art.manifest;
        let root_ref = &root;
        // When the last upload returned: the read-back still running after it is verify time.
        let mut uploaded_at: Option<Instant> = None;
        // The stream's producer: Some(its outcome) once joined.
        let mut produced: Option<Result<Option<crate::pack::ArchiveRead>, DeployError>> = None;
        let stamp = self.sealed.plan.artifact.archive_stamp;
        let produced_ref = &mut produced;
        let result: Result<Vec<ReadBack>, DeployError> = std::thread::scope(|scope| {
            // Files decompressed from the archive during the upload, when streaming: a small
            // bound, so memory stays at a few MiB of small files plus pieces of large ones.
            let (file_tx, mut file_rx) = tokio::sync::mpsc::channel(64);
            let producer = streamed_from.map(|archive| {
                scope.spawn(move || {
                    artifact::stream_files(archive, manifest, stamp.as_ref(), root_ref, file_tx)
                })
            });
            let (tx, rx) = std::sync::mpsc::channel::<std::ops::Range<usize>>();
            let reader = overlap.then(|| {
                scope.spawn(move || {
                    let mut out = Vec::with_capacity(uploads_ref.len());
                    let mut first = true;
                    for range in rx {
                        if first {
                            journal::wait_point(Step::Verify);
                            first = false;
                        }
                        // The plan's size as the hint: a file of exactly that size costs no
                        // end-of-file request; any other size is read on to its end.
                        let files: Vec<(PathBuf, u64)> = uploads_ref[range]
                            .iter()
                            .map(|f| (f.remote.clone(), f.len))
                            .collect();
                        out.extend(remote.hash_files_sized(&files, &crate::progress::NoProgress));
                    }
                    out
                })
            });
            let mut outcome = Ok(());
            for range in &batches {
                let put = if streamed_from.is_some() {
                    remote.put_streamed(&mut file_rx, range.len(), fsync, progress)
                } else {
                    remote.put_new_files(&uploads_ref[range.clone()], fsync, progress)
                };
                if let Err(e) = put {
                    outcome = Err(at("materialise")(e));
                    break;
                }
                if overlap {
                    let _ = tx.send(range.clone());
                }
                if crate::interrupt::requested() {
                    outcome = Err(DeployError::Interrupted {
                        step: Step::Materialise.name(),
                        state: String::new(),
                    });
                    break;
                }
            }
            drop(tx);
            // Unblocks a producer still sending after an error; then its outcome.
            drop(file_rx);
            *produced_ref = producer.map(|h| h.join().expect("archive stream thread"));
            uploaded_at = Some(Instant::now());
            let read = reader
                .map(|h| h.join().expect("read-back thread"))
                .unwrap_or_default();
            outcome.map(|()| read)
        });
        self.progress.finish();
        if let Some(u) = uploaded_at {
            self.verify_secs += u.elapsed().as_secs_f64();
            self.upload_secs -= u.elapsed().as_secs_f64();
        }
        // A stream that failed is the cause of whatever the upload then said ("the artifact
        // stream ended early"); a stream that ended well must have read the plan's archive.
        match produced {
            Some(Err(e)) if !matches!(result, Err(DeployError::Interrupted { .. })) => {
                return Err(e)
            }
            Some(Ok(None)) if result.is_ok() => {
                return Err(DeployError::Artifact {
                    path: self.sealed.plan.artifact.path.clone(),
                    reason: "the archive stream stopped before its end".into(),
                })
            }
            Some(Ok(Some(read))) if result.is_ok() => {
                let a = &self.sealed.plan.artifact;
                match read {
                    crate::pack::ArchiveRead::Hashed(digest, size) => {
                        if digest != a.archive_sha256 || size != a.archive_size {
                            return Err(DeployError::ArchiveMismatch {
                                path: a.path.clone(),
                                expected: a.archive_sha256,
                                actual: digest,
                            });
                        }
                        self.archive_check = artifact::ARCHIVE_REHASHED;
                    }
                    // The stamp includes the size: a shortfall would be the file's own.
                    crate::pack::ArchiveRead::Unchanged(size) => {
                        if size != a.archive_size {
                            return Err(DeployError::Artifact {
                                path: a.path.clone(),
                                reason: format!(
                                    "read {size} bytes of the archive, whose size is {}",
                                    a.archive_size
                                ),
                            });
                        }
                        self.archive_check = artifact::ARCHIVE_UNCHANGED;
                    }
                }
            }
            _ => {}
        }
        match result {
            Ok(read) => {
                if overlap {
                    let mut map = std::collections::HashMap::with_capacity(read.len());
                    for (f, r) in uploads.iter().zip(read) {
                        map.insert(f.remote.clone(), r);
                    }
                    self.read_back = Some(map);
                }
            }
            Err(DeployError::Interrupted { .. }) => {
                return self.check_interrupt(Step::Materialise);
            }
            Err(e) => return Err(e),
        }
        self.progress.finish();
        let links: Vec<(PathBuf, PathBuf)> = self
            .art
            .expected
            .iter()
            .filter_map(|(p, k)| match k {
                Kind::Symlink { target } => {
                    use std::os::unix::ffi::OsStrExt;
                    Some((
                        PathBuf::from(std::ffi::OsStr::from_bytes(target)),
                        shape::join(&root, p),
                    ))
                }
                _ => None,
            })
            .collect();
        self.remote.symlinks(&links).map_err(at("materialise"))?;
        self.upload_secs += t.elapsed().as_secs_f64();
        self.record(Step::Materialise, Phase::Done, "")
    }

    fn upload_archive(&mut self) -> Result<(), DeployError> {
        let t = Instant::now();
        let plan = &self.sealed.plan;
        let path = self.names.kept_archive.clone();
        self.record(
            Step::UploadArchive,
            Phase::Intent,
            path.display().to_string(),
        )?;
        self.archive_intended = true;
        self.progress
            .start("archive", Some(plan.artifact.archive_size), Some(1));
        let put = self.remote.put_new_files(
            &[NewFile {
                remote: path.clone(),
                local: plan.artifact.path.clone(),
                len: plan.artifact.archive_size,
                mode: 0o444,
            }],
            self.per_file_fsync(),
            self.progress,
        );
        self.progress.finish();
        put.map_err(at("upload archive"))?;
        self.upload_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (digest, _) = self
            .remote
            .hash_files(std::slice::from_ref(&path), self.progress)
            .pop()
            .expect("one result")
            .map_err(at("verify archive"))?;
        self.verify_secs += t.elapsed().as_secs_f64();
        if digest != plan.artifact.archive_sha256 {
            return Err(DeployError::DigestMismatch {
                path,
                expected: plan.artifact.archive_sha256,
                actual: digest,
            });
        }
        self.note_created(path, CreatedKind::File, Some(digest));
        self.record(Step::UploadArchive, Phase::Done, "")
    }

    /// Steps 4 and 6: read back and compare the whole staged tree.
    fn verify_staged(&mut self) -> Result<(), DeployError> {
        let t = Instant::now();
        let (files, bytes) = self.art.totals();
        self.record(Step::Verify, Phase::Intent, self.opts.verify.name())?;
        let root = self.names.staged_tree.clone();
        let (mut actual, odd) =
            shape::walk_deployed(self.remote, &root, &self.art.expected).map_err(at("verify"))?;
        if !odd.is_empty() {
            return Err(DeployError::TreeMismatch {
                path: root,
                differences: odd
                    .iter()
                    .take(10)
                    .map(|(p, m)| {
                        format!(
                            "{}: mode {m:04o}, expected 0644 or 0755",
                            String::from_utf8_lossy(p)
                        )
                    })
                    .collect(),
            });
        }
        match self.opts.verify {
            VerifyMode::ReadBack => {
                // Files already read back during the upload take those digests; anything
                // else (none, normally) is read now.
                let mut rest = shape::Shape::new();
                let mut read_back = self.read_back.take().unwrap_or_default();
                for (p, k) in actual.iter_mut() {
                    if let Kind::File { size, sha256, .. } = k {
                        match read_back.remove(&shape::join(&root, p)) {
                            Some(Ok((d, n))) if n == *size => *sha256 = Some(d),
                            // Listed at one size, read back at another: the file changed
                            // on the host between the two.
                            Some(Ok((_, n))) => {
                                return Err(DeployError::TreeMismatch {
                                    path: root.clone(),
                                    differences: vec![format!(
                                        "{}: listed with {} bytes, {n} bytes read back",
                                        String::from_utf8_lossy(p),
                                        *size
                                    )],
                                })
                            }
                            Some(Err(e)) => return Err(at("verify")(e)),
                            None => {
                                rest.insert(p.clone(), k.clone());
                            }
                        }
                    }
                }
                if !rest.is_empty() {
                    self.progress.start("verifying", Some(bytes), Some(files));
                    let r = shape::hash_shape(self.remote, &root, &mut rest, self.progress);
                    self.progress.finish();
                    r.map_err(at("verify"))?;
                    actual.extend(rest);
                }
            }
            // A tree without regular files has nothing for sha256sum to check (and `-c` of an
            // empty list fails); its directories and symlinks are checked below either way.
            VerifyMode::HostSha256sum if files > 0 => {
                let list = self
                    .names
                    .journal_dir
                    .join(format!("sha256sums-{}.txt", unix_now()));
                self.remote
                    .write_new(&list, &self.art.manifest.sha256sum_lines(b""), 0o600, false)
                    .map_err(at("verify"))?;
                let cmd = host_check_command(&root, &list, files);
                let out = self.remote.exec(&cmd).map_err(at("verify"))?;
                if out.status != Some(0) {
                    let mut text = out.stdout.clone();
                    text.push_str(&out.stderr);
                    return Err(DeployError::HostVerify {
                        path: root,
                        status: out.status.map_or("signal".into(), |s| s.to_string()),
                        output: text.lines().take(5).collect::<Vec<_>>().join(" | "),
                    });
                }
            }
            VerifyMode::HostSha256sum => {}
        }
        self.verify_secs += t.elapsed().as_secs_f64();
        let diffs = shape::compare(&self.art.expected, &actual);
        if let Some(first) = diffs.first() {
            if let shape::Difference::Changed {
                path,
                expected: Kind::File {
                    sha256: Some(e), ..
                },
                actual: Kind::File {
                    sha256: Some(a), ..
                },
            } = first
            {
                if e != a {
                    return Err(DeployError::DigestMismatch {
                        path: shape::join(&root, path),
                        expected: *e,
                        actual: *a,
                    });
                }
            }
            return Err(DeployError::TreeMismatch {
                path: root,
                differences: diffs.iter().take(10).map(|d| d.to_string()).collect(),
            });
        }
        // Step 6: the tree's identity, recomputed from what is on the host.
        if self.opts.verify == VerifyMode::ReadBack {
            let id = artifact::identity_of(&actual).map_err(|reason| DeployError::Artifact {
                path: root.clone(),
                reason,
            })?;
            if id != self.sealed.plan.artifact.tree_identity {
                return Err(DeployError::IdentityMismatch {
                    expected: self.sealed.plan.artifact.tree_identity,
                    actual: id,
                });
            }
        }
        self.record(Step::Verify, Phase::Done, "")
    }

    fn write_deploy_manifest(&mut self) -> Result<(), DeployError> {
        let path = self.names.staged_tree.join(DEPLOY_MANIFEST);
        self.record(
            Step::DeployManifest,
            Phase::Intent,
            path.display().to_string(),
        )?;
        let text = deploy_manifest_text(
            self.sealed,
            &self.art.recipe_digest,
            &self.art.manifest,
            &self.hostname,
            &rfc3339(unix_now()),
        );
        self.remote
            .write_new(&path, &text, 0o644, self.per_file_fsync())
            .map_err(at("deploy manifest"))?;
        let want = Digest::of(&text);
        // Its size as the hint: no end-of-file request when the file is exactly that long.
        let (got, _) = hash_sized(self.remote, &path, text.len() as u64, self.progress)
            .map_err(at("deploy manifest"))?;
        if got != want {
            return Err(DeployError::DigestMismatch {
                path,
                expected: want,
                actual: got,
            });
        }
        self.deploy_manifest = Some(want);
        self.record(Step::DeployManifest, Phase::Done, want.to_hex())
    }

    /// Per-file `fsync@openssh.com` unless `--sync`: OpenSSH's sftp-server handles requests
    /// one at a time, so per-file fsyncs serialise (about 1,000 small files/s here, against
    /// several thousand without), while one `sync -f` before the promote makes every staged
    /// file and name durable at once (and a second one makes the rename durable).
    fn per_file_fsync(&self) -> bool {
        !self.opts.sync
    }

    /// `sync -f PATH` on the host; a failure is an error (the user asked for durability).
    fn sync_fs(
        &mut self,
        path: &Path,
        what: &str,
    ) -> Result<crate::remote::ExecOutput, DeployError> {
        self.record(Step::Sync, Phase::Intent, what)?;
        let cmd = format!("sync -f {}", receipt::shell_quote(&path.to_string_lossy()));
        let out = self.remote.exec(&cmd).map_err(at("sync"))?;
        if out.status != Some(0) {
            self.record(Step::Sync, Phase::Failed, out.stderr.clone())?;
            return Err(DeployError::Remote {
                step: "sync",
                cause: RemoteError::Failed {
                    op: "sync -f",
                    path: path.to_path_buf(),
                    reason: format!("{}: {}", exit_text(out.status), out.stderr.trim()),
                },
                note: String::new(),
            });
        }
        self.record(Step::Sync, Phase::Done, what)?;
        Ok(out)
    }

    /// Step 8.
    fn promote(&mut self) -> Result<(), DeployError> {
        if self.opts.sync {
            // Everything staged is on disk before the rename can make it visible.
            let staging = self.names.staging.clone();
            self.sync_fs(&staging, "before promote")?;
        }
        self.record(
            Step::Promote,
            Phase::Intent,
            format!(
                "{} -> {}",
                self.names.staged_tree.display(),
                self.names.target.display()
            ),
        )?;
        match self
            .remote
            .rename_noreplace(&self.names.staged_tree, &self.names.target)
        {
            Ok(()) => {}
            Err(RemoteError::Exists { .. }) => {
                self.record(Step::Promote, Phase::Failed, "target exists")?;
                return Err(DeployError::TargetAppeared {
                    target: self.names.target.clone(),
                    staged: self.names.staged_tree.clone(),
                });
            }
            Err(e) => {
                // Without an answer the rename may still happen on the host (a stopped server
                // resumes and carries out what it received): the error must not say that the
                // target was not created. The rerun finds out (`promote_happened`).
                self.promote_unanswered = e.went_unanswered();
                return Err(at("promote")(e));
            }
        }
        self.promoted = true;
        self.record(Step::Promote, Phase::Done, "")
    }

    /// Steps 9 and 10 (and everything after a promote on resume).
    fn after_promote(&mut self) -> Result<Receipt, DeployError> {
        let target = self.names.target.clone();
        if let Some(m) = self
            .remote
            .lstat(&self.names.staging)
            .map_err(at("remove staging"))?
        {
            if m.kind == FileKind::Dir {
                self.record(
                    Step::RemoveStaging,
                    Phase::Intent,
                    self.names.staging.display().to_string(),
                )?;
                self.remote
                    .remove_dir(&self.names.staging)
                    .map_err(at("remove staging"))?;
                self.record(Step::RemoveStaging, Phase::Done, "")?;
            }
        }
        if self.journal.history.done(Step::UploadArchive) || self.opts.keep_archive {
            if let Some(m) = self
                .remote
                .lstat(&self.names.kept_archive)
                .map_err(at("prove"))?
            {
                if m.kind == FileKind::File {
                    let p = self.names.kept_archive.clone();
                    self.note_created(
                        p,
                        CreatedKind::File,
                        Some(self.sealed.plan.artifact.archive_sha256),
                    );
                }
            }
        }
        let sync = if self.opts.sync {
            Some(self.sync_fs(&target, "after promote")?)
        } else {
            None
        };
        // Step 9: prove.
        self.record(Step::Prove, Phase::Intent, "")?;
        let mut reasons = Vec::new();
        let anchor = match &self.sealed.plan.anchor {
            Some(a) => {
                let (d, id) = anchor::survey(self.remote, &a.path, self.progress)?;
                if d != a.recipe_digest || id != a.tree_identity {
                    reasons.push(format!(
                        "anchor {} changed during the deploy: recipe digest {d} (plan {}), tree identity {id} (plan {})",
                        a.path.display(),
                        a.recipe_digest,
                        a.tree_identity
                    ));
                }
                Some(AnchorProof {
                    path: a.path.clone(),
                    expected: a.recipe_digest,
                    actual: d,
                    expected_identity: a.tree_identity,
                    actual_identity: id,
                })
            }
            None => None,
        };
        // The bytes were read back before the promote and a rename does not touch them; the
        // prove checks the promoted tree's shape (names, kinds, sizes, exec bits, symlink
        // targets) and re-reads the deploy manifest. `sealpush status` re-reads everything.
        let actual =
            shape::walk_expecting(self.remote, &target, &self.art.expected).map_err(at("prove"))?;
        let dm_path = target.join(DEPLOY_MANIFEST);
        let changed = || format!("{} changed after it was written", dm_path.display());
        let listed = match actual.get(DEPLOY_MANIFEST.as_bytes()) {
            Some(Kind::File { size, .. }) => Some(*size),
            _ => None,
        };
        let (dm_digest, dm_size) = match (self.deploy_manifest, listed) {
            // Written by this run: its digest is all the prove needs, read with the listed size
            // as the hint (no end-of-file request; a large one in pipelined chunks).
            (Some(want), Some(size)) => {
                let (digest, n) =
                    hash_sized(self.remote, &dm_path, size, &crate::progress::NoProgress)
                        .map_err(at("prove"))?;
                if digest != want {
                    reasons.push(changed());
                }
                (digest, n)
            }
            (want, _) => {
                let dm_text = self
                    .remote
                    .read_file(&dm_path, 1 << 30)
                    .map_err(at("prove"))?;
                let digest = Digest::of(&dm_text);
                match want {
                    Some(want) if want != digest => reasons.push(changed()),
                    Some(_) => {}
                    None if deploy_manifest_field(&dm_text, "plan_digest")
                        != Some(&self.sealed.digest.to_hex()) =>
                    {
                        reasons.push(format!("{} is not this plan's", dm_path.display()))
                    }
                    None => {}
                }
                (digest, dm_text.len() as u64)
            }
        };
        let mut expected = self.art.expected.clone();
        expected.insert(
            DEPLOY_MANIFEST.as_bytes().to_vec(),
            Kind::File {
                size: dm_size,
                sha256: None,
                executable: false,
            },
        );
        // An interrupted earlier run may already have run the check, which may have created
        // names (`__pycache__`); those are recorded below like this run's, not a failure.
        let check_ran_before = self.journal.history.intended(Step::Check);
        for d in shape::compare(&expected, &actual)
            .iter()
            .filter(|d| !(check_ran_before && matches!(d, shape::Difference::Extra { .. })))
            .take(10)
        {
            reasons.push(format!("target {}: {d}", target.display()));
        }
        self.record(Step::Prove, Phase::Done, reasons.join("; "))?;
        // G5: the check.
        let mut by_check = shape::Shape::new();
        let check = match &self.opts.check {
            Some(cmd) => {
                self.record(Step::Check, Phase::Intent, cmd.clone())?;
                let full = format!(
                    "cd {} && {cmd}",
                    receipt::shell_quote(&target.to_string_lossy())
                );
                // A check still running at --op-timeout has not passed: it is recorded as a
                // failed check (its ssh is stopped), so --rollback-on-check-failure acts on it.
                // Were the connection stalled instead, the steps that follow would say so.
                let (mut out, timed_out) = match self.remote.exec(&full) {
                    Err(RemoteError::Timeout { secs, .. }) => (
                        ExecOutput {
                            command: String::new(), // set below, as for a finished check
                            status: None,
                            stdout: String::new(),
                            stderr: format!(
                                "sealpush: no result within {secs}s (--op-timeout); stopped"
                            ),
                        },
                        Some(secs),
                    ),
                    r => (r.map_err(at("check"))?, None),
                };
                out.command = cmd.clone();
                out.stdout = keep_tail(std::mem::take(&mut out.stdout), CHECK_OUTPUT_KEPT);
                out.stderr = keep_tail(std::mem::take(&mut out.stderr), CHECK_OUTPUT_KEPT);
                let passed = out.status == Some(0);
                if let Some(secs) = timed_out {
                    reasons.push(format!(
                        "check `{cmd}` did not finish within {secs}s (--op-timeout)"
                    ));
                } else if !passed {
                    reasons.push(format!("check `{cmd}` failed: {}", exit_text(out.status)));
                }
                self.record(Step::Check, Phase::Done, exit_text(out.status))?;
                // What the check created in the target (`__pycache__`, test output) was created
                // by this deploy too: it goes into the receipt so rollback removes it, and
                // nothing else.
                let mut after =
                    shape::walk_expecting(self.remote, &target, &expected).map_err(at("check"))?;
                after.retain(|p, _| !expected.contains_key(p));
                shape::hash_shape(self.remote, &target, &mut after, self.progress)
                    .map_err(at("check"))?;
                by_check = after;
                Some(CheckRecord {
                    output: out,
                    passed,
                })
            }
            None => None,
        };
        // Step 10: the receipt.
        let mut all = expected.clone();
        all.extend(by_check);
        let mut tree: Vec<TreeEntry> = all
            .iter()
            .map(|(p, k)| {
                let mut e = TreeEntry {
                    path: receipt::escape_path(p),
                    kind: CreatedKind::File,
                    sha256: None,
                    size: None,
                    executable: false,
                    target: None,
                    by_check: !expected.contains_key(p),
                };
                match k {
                    Kind::File {
                        size,
                        sha256,
                        executable,
                    } => {
                        e.size = Some(*size);
                        e.sha256 = *sha256;
                        e.executable = *executable;
                    }
                    Kind::Dir => e.kind = CreatedKind::Dir,
                    Kind::Symlink { target } => {
                        e.kind = CreatedKind::Symlink;
                        e.target = Some(receipt::escape_path(target));
                    }
                    // What a --check left that is none of those (a fifo, a socket): recorded
                    // as what it is, so status and rollback see the kind they find.
                    Kind::Other(k) => {
                        e.kind = match k {
                            FileKind::Fifo => CreatedKind::Fifo,
                            FileKind::Socket => CreatedKind::Socket,
                            FileKind::CharDevice => CreatedKind::CharDevice,
                            FileKind::BlockDevice => CreatedKind::BlockDevice,
                            _ => CreatedKind::Other,
                        }
                    }
                }
                e
            })
            .collect();
        if let Some(e) = tree.iter_mut().find(|e| e.path == DEPLOY_MANIFEST) {
            e.sha256 = Some(dm_digest);
        }
        let host_receipt = self.names.host_receipt.clone();
        self.note_created(host_receipt.clone(), CreatedKind::File, None);
        let (files, bytes) = self.art.totals();
        let mut receipt = Receipt {
            format: receipt::RECEIPT_FORMAT,
            tool_version: crate::TOOL_VERSION.into(),
            plan_digest: self.sealed.digest,
            host: self.sealed.plan.host.clone(),
            hostname: self.hostname.clone(),
            artifact: self.sealed.plan.artifact.clone(),
            target: target.clone(),
            staging: self.names.staging.clone(),
            work_dir: self.names.work_dir.clone(),
            started: self.started.clone(),
            finished: rfc3339(unix_now()),
            verify: self.opts.verify.name().into(),
            archive_check: self.archive_check.into(),
            tree_recipe_digest: self.art.recipe_digest.as_ref().ok().copied(),
            deploy_manifest_sha256: dm_digest,
            tree,
            created: self.created.clone(),
            kept_archive: self
                .created
                .iter()
                .find(|c| c.path == self.names.kept_archive)
                .map(|c| c.path.clone()),
            anchor,
            check,
            sync,
            resume: self.resume.clone(),
            files,
            bytes,
            upload_secs: self.upload_secs,
            verify_secs: self.verify_secs,
            prepare_secs: self.prepare_secs,
            total_secs: self.t0.elapsed().as_secs_f64(),
            rolled_back: false,
            verdict: Verdict {
                pass: reasons.is_empty(),
                reasons,
            },
        };
        self.record(
            Step::Receipt,
            Phase::Intent,
            host_receipt.display().to_string(),
        )?;
        let json = receipt.to_json();
        match self
            .remote
            .write_new(&host_receipt, json.as_bytes(), 0o644, true)
        {
            Ok(()) => {}
            // An earlier run of this plan was killed after writing it: ours to replace.
            Err(RemoteError::Exists { .. }) if self.journal.history.intended(Step::Receipt) => {
                self.remote
                    .remove_file(&host_receipt)
                    .map_err(at("receipt"))?;
                self.remote
                    .write_new(&host_receipt, json.as_bytes(), 0o644, true)
                    .map_err(at("receipt"))?;
            }
            Err(e) => return Err(at("receipt")(e)),
        }
        write_local_atomic(&self.state.receipt_path(), json.as_bytes())?;
        self.receipt_written = true;
        self.record(Step::Receipt, Phase::Done, "")?;
        let roll_back = !receipt.check.as_ref().map_or(true, |c| c.passed)
            && self.opts.rollback_on_check_failure;
        // The automatic rollback gets the lock as it is held: released in between, another
        // run could take it and the rollback would be refused, leaving the failed deploy in
        // place. A kill meanwhile leaves the lock of a dead run of this plan, which
        // `sealpush rollback` on the plan takes over.
        if !roll_back {
            self.release_lock()?;
        }
        self.journal.detach_host(self.remote)?;
        self.record(Step::Finished, Phase::Done, "")?;
        if roll_back {
            // In this run's own journal (it holds the plan's, see `Journal::open`), which
            // the rollback's unlock records go into and which it resets when complete.
            let rolled = rollback::rollback_in(
                self.remote,
                &receipt,
                &rollback::RollbackOptions {
                    force: false,
                    local_state: None,
                    clear_stale_lock: false,
                },
                Some(&mut self.journal),
                Some(&mut self.lock),
                self.progress,
            );
            // A rollback that stopped before its unlock (it refused the receipt, say) leaves
            // the lock with this run, which releases it now.
            let left = self.release_lock().err();
            match rolled {
                Ok(report) => {
                    receipt.rolled_back = report.complete;
                    if !report.complete {
                        receipt.verdict.reasons.push(format!(
                            "automatic rollback incomplete: {}",
                            report.kept.join("; ")
                        ));
                    }
                }
                // The report must still say that the deploy is in place, with a failed check
                // (a check that edited a deployed file makes the rollback refuse).
                Err(e) => receipt.verdict.reasons.push(format!(
                    "automatic rollback not done, so {} stays deployed (roll it back with `sealpush rollback` on this plan, adding --force to remove changed files too): {e}",
                    self.names.target.display()
                )),
            }
            if let Some(e) = left {
                receipt.verdict.reasons.push(format!(
                    "the lock {} may be left ({e}): `sealpush rollback` on this plan takes it over",
                    self.names.lock.display()
                ));
            }
            write_local_atomic(&self.state.receipt_path(), receipt.to_json().as_bytes())?;
        }
        Ok(receipt)
    }

    fn release_lock(&mut self) -> Result<(), DeployError> {
        self.lock.release(self.remote, &mut Some(&mut self.journal))
    }

    /// Removes the staged entries (only names the artifact has, plus the deploy manifest), the
    /// staging directories and a partial kept archive. Never follows a symlink: the staged tree
    /// is walked first, and only entries found still of the kind the deploy made are removed,
    /// so a staged directory that someone replaced by a symlink is neither removed nor entered.
    /// Missing names are fine (the earlier run stopped before creating them).
    fn remove_staged(&mut self) -> Result<(), DeployError> {
        let r = self.remote;
        let root = self.names.staged_tree.clone();
        let gone = |e: &RemoteError| e.is_not_found();
        match r.lstat(&self.names.staging).map_err(at("cleanup"))? {
            None => {}
            Some(m) if m.kind != FileKind::Dir => {
                return Err(DeployError::Foreign {
                    path: self.names.staging.clone(),
                    kind: kind_name(m.kind),
                })
            }
            Some(_) => {
                if let Some(m) = r.lstat(&root).map_err(at("cleanup"))? {
                    if m.kind != FileKind::Dir {
                        return Err(DeployError::Foreign {
                            path: root,
                            kind: kind_name(m.kind),
                        });
                    }
                    let mut expected = self.art.expected.clone();
                    expected.insert(
                        DEPLOY_MANIFEST.as_bytes().to_vec(),
                        Kind::File {
                            size: 0,
                            sha256: None,
                            executable: false,
                        },
                    );
                    let actual =
                        shape::walk_expecting(r, &root, &expected).map_err(at("cleanup"))?;
                    let plan = shape::removal(&expected, &actual);
                    let entries: Vec<(PathBuf, bool)> = plan
                        .ours
                        .iter()
                        .map(|(p, is_dir)| (shape::join(&root, p), *is_dir))
                        .collect();
                    let foreign: Vec<String> = plan
                        .replaced
                        .iter()
                        .map(|p| {
                            let now = actual.get(p).map_or_else(String::new, shape::describe);
                            format!("{} (now {now})", crate::manifest::show(p))
                        })
                        .chain(plan.extra.iter().map(|p| crate::manifest::show(p)))
                        .collect();
                    // A name gone since the walk is fine. A directory holding a foreign name
                    // stays with it (reported below, as the rerun cannot remove it either);
                    // anything else stops here.
                    for ((_, is_dir), res) in entries
                        .iter()
                        .zip(r.remove_all(&entries, &crate::progress::NoProgress))
                    {
                        match res {
                            Ok(()) => {}
                            Err(e) if gone(&e) => {}
                            Err(_) if *is_dir && !foreign.is_empty() => {}
                            Err(e) => return Err(at("cleanup")(e)),
                        }
                    }
                    if !foreign.is_empty() {
                        return Err(DeployError::ForeignEntries {
                            path: root,
                            names: foreign,
                        });
                    }
                    r.remove_dir(&root).map_err(at("cleanup"))?;
                }
                match r.remove_dir(&self.names.staging) {
                    Ok(()) => {}
                    Err(e) if gone(&e) => {}
                    Err(e) => {
                        // Names beside the staged tree are none of the deploy's: name them
                        // rather than report a bare "directory not empty" a rerun repeats.
                        let names: Vec<String> = r
                            .read_dir(&self.names.staging)
                            .map(|entries| {
                                entries
                                    .iter()
                                    .map(|e| crate::manifest::show(&e.name))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if names.is_empty() {
                            return Err(at("cleanup")(e));
                        }
                        return Err(DeployError::ForeignEntries {
                            path: self.names.staging.clone(),
                            names,
                        });
                    }
                }
            }
        }
        // The kept archive's name is the same for every plan of the artifact: a file there is
        // this plan's only when this run or an earlier one of it set out to upload it. (A run
        // that stopped under the lock because another deploy finished meanwhile must not take
        // that deploy's kept archive for a partial one of its own.)
        let archive_ours =
            self.archive_intended || self.journal.history.intended(Step::UploadArchive);
        match r.lstat(&self.names.kept_archive).map_err(at("cleanup"))? {
            Some(m) if m.kind == FileKind::File && archive_ours => r
                .remove_file(&self.names.kept_archive)
                .map_err(at("cleanup"))?,
            _ => {}
        }
        self.created.retain(|c| c.path != self.names.kept_archive);
        Ok(())
    }

    /// After an error: before the promote, remove everything this deploy created and release
    /// the lock (the host is as before); after it, release the lock (the target is complete and
    /// a re-run finishes). When the host is unreachable, say what is left and what to do.
    fn fail(&mut self, err: DeployError) -> DeployError {
        let _ = self.record(Step::Finished, Phase::Failed, err.to_string());
        let mut left = Vec::new();
        if !self.promoted {
            // Journalled first like every mutation; a host copy that cannot be written (full
            // disk, lost connection) must not stop the local record or the cleanup attempt.
            let _ = self.record(Step::Cleanup, Phase::Intent, "after a failure");
            if let Err(e) = self.remove_staged() {
                left.push(format!("staging {} ({e})", self.names.staging.display()));
            }
        }
        if let Err(e) = self.release_lock() {
            left.push(format!("lock {} ({e})", self.names.lock.display()));
        }
        if left.is_empty() && !self.promoted && !self.promote_unanswered {
            // Nothing of ours is left but bookkeeping: remove it too, so the host is as before.
            // A record that cannot be written must not stop the cleanup (as above).
            let _ = self.journal.detach_host(self.remote);
            let _ = self.record(Step::Cleanup, Phase::Intent, "host journal and work dirs");
            if self.remove_bookkeeping().is_ok() {
                let _ = self.record(Step::Reset, Phase::Done, "cleaned up after a failed deploy");
            }
        }
        let note = if self.promoted && self.receipt_written {
            format!(
                "; the target {} is complete and its receipt written; rerun the same deploy to finish (release the lock)",
                self.names.target.display()
            )
        } else if self.promoted {
            format!(
                "; the target {} is complete; rerun the same deploy to finish (prove, receipt)",
                self.names.target.display()
            )
        } else if self.promote_unanswered {
            let left = if left.is_empty() {
                String::new()
            } else {
                format!("; left on the host: {}", left.join(", "))
            };
            format!(
                "{left}; the promote got no answer, so the host may still carry it out: the target {} is either absent or complete; rerun the same deploy, which finishes it if the promote took effect and otherwise cleans up and starts over",
                self.names.target.display()
            )
        } else if !left.is_empty() {
            format!(
                "; left on the host: {}; the target was not created; rerun the same deploy to clean up and start over",
                left.join(", ")
            )
        } else {
            String::new()
        };
        match err {
            DeployError::Remote { step, cause, .. } => DeployError::Remote { step, cause, note },
            DeployError::Interrupted { step, .. } => DeployError::Interrupted {
                step,
                state: if self.promoted {
                    format!(
                        "the target {} is complete; rerun the same deploy to finish",
                        self.names.target.display()
                    )
                } else if left.is_empty() {
                    "nothing was left on the host".into()
                } else {
                    format!("left on the host: {}; rerun to clean up", left.join(", "))
                },
            },
            // A failed verification, say: its own message, then what is left.
            other if !note.is_empty() => DeployError::WithLeftovers {
                error: Box::new(other),
                note,
            },
            other => other,
        }
    }

    /// Removes the host journal, the work dir and `.sealpush` when this deploy created them and
    /// they hold nothing else.
    fn remove_bookkeeping(&mut self) -> Result<(), DeployError> {
        if self
            .created
            .iter()
            .any(|c| c.path == self.names.journal_dir)
        {
            rollback::remove_journal_dir(self.remote, &self.names.journal_dir)?;
        }
        for dir in [self.names.work_dir.clone(), self.names.work_root.clone()] {
            if self.created.iter().any(|c| c.path == dir) {
                match self.remote.remove_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(at("cleanup")(e)),
                }
            }
        }
        Ok(())
    }
}

/// How a remote command ended, for people: `exit 3`, or `killed by a signal` (ssh reports no
/// status then).
fn exit_text(status: Option<i32>) -> String {
    status.map_or("killed by a signal".into(), |s| format!("exit {s}"))
}

/// Writes a local file by temp + fsync + rename, so a reader sees the old or the new content.
pub fn write_local_atomic(path: &Path, data: &[u8]) -> Result<(), DeployError> {
    use std::io::Write;
    let err = |e: std::io::Error| DeployError::LocalState {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(data).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Most parts [`host_check_command`] cuts the list into, whatever the host's CPU count.
const HOST_CHECK_MAX_PARTS: u32 = 64;

/// The shell command of `--verify host-sha256sum`: `sha256sum -c` of `list` (of `files` >= 1
/// lines, paths relative to `root`), cut into one part per CPU of the host (`nproc`, at most
/// [`HOST_CHECK_MAX_PARTS`]) checked in parallel, so a many-core host is not held to one core.
/// Every part has at least one line (`-c` of an empty list fails). Exit status 0 only when
/// every part passed; the parts are removed, the list stays beside the journal. POSIX sh and
/// GNU coreutils (`nproc`, `split`), which `sha256sum --strict` already required.
fn host_check_command(root: &Path, list: &Path, files: u64) -> String {
    let q = |s: &str| receipt::shell_quote(s);
    let list_s = list.to_string_lossy();
    // Parts are `<list>-part-aa.txt` ...: names rollback recognises as verify lists, should an
    // interrupted check leave any behind.
    let part = q(&format!(
        "{}-part-",
        list_s.strip_suffix(".txt").unwrap_or(&list_s)
    ));
    format!(
        "cd {root} || exit 2; \
         n=$(nproc 2>/dev/null || echo 1); [ \"$n\" -gt {max} ] && n={max}; \
         k=$(( ({files} + n - 1) / n )); \
         split -l \"$k\" --additional-suffix=.txt {list} {part} || exit 2; \
         pids=; for p in {part}*; do sha256sum --strict --quiet -c \"$p\" & pids=\"$pids $!\"; done; \
         rc=0; for p in $pids; do wait \"$p\" || rc=1; done; \
         rm -f {part}*; exit $rc",
        root = q(&root.to_string_lossy()),
        list = q(&list_s),
        max = HOST_CHECK_MAX_PARTS,
    )
}

/// sha256 and size of one file, read with its expected `size` as the hint (no end-of-file
/// request when it is exactly that long; a large one in pipelined chunks).
fn hash_sized(
    remote: &dyn Remote,
    path: &Path,
    size: u64,
    progress: &dyn crate::progress::Progress,
) -> Result<(Digest, u64), RemoteError> {
    remote
        .hash_files_sized(&[(path.to_path_buf(), size)], progress)
        .pop()
        .expect("one result per file")
}

#[cfg(test)]
mod tests {
    #[test]
    fn keep_tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(super::keep_tail("short".into(), 10), "short");
        let t = super::keep_tail("aaaé".into(), 2);
        // "é" is two bytes: the cut moves forward to the boundary before it.
        assert_eq!(
            t,
            "[sealpush: the first 3 bytes of this output are left out]\né"
        );
        let t = super::keep_tail("abcdef".into(), 3);
        assert!(t.ends_with("\ndef"), "{t}");
    }

    use super::*;

    /// The names of a deploy of `<parent>/t`.
    fn names_under(parent: &str) -> Names {
        let parent = PathBuf::from(parent);
        let work_root = parent.join(".sealpush");
        let work_dir = work_root.join("t");
        let plan = Digest::of(b"plan");
        Names {
            target: parent.join("t"),
            staging: parent.join(".t.sealpush-stage-0"),
            staged_tree: parent.join(".t.sealpush-stage-0/t"),
            name: b"t".to_vec(),
            lock: work_dir.join("lock"),
            journal_dir: host_journal_dir(&work_dir, &plan),
            host_receipt: host_receipt_path(&work_dir, &plan),
            kept_archive: work_dir.join("t-0.tar.zst"),
            parent,
            work_root,
            work_dir,
        }
    }

    #[test]
    fn recorded_work_dirs_are_read_whole_not_split_at_newlines() {
        for parent in ["/p", "/p/a\nb", "/p/a\n/p"] {
            let n = names_under(parent);
            let (r, w) = (n.work_root.clone(), n.work_dir.clone());
            let both = format!("{}\n{}", r.display(), w.display());
            let cases: [(&str, Vec<PathBuf>); 6] = [
                ("", vec![]),
                (r.to_str().unwrap(), vec![r.clone()]),
                (w.to_str().unwrap(), vec![w.clone()]),
                (&both, vec![r.clone(), w.clone()]),
                // Not what a run of this plan writes: nothing of it is taken for ours.
                ("/p", vec![]),
                (&format!("{}\n", w.display()), vec![]),
            ];
            for (detail, want) in cases {
                assert_eq!(recorded_work_dirs(detail, &n), want, "{detail:?}");
            }
        }
    }

    /// Runs the host check with `sh` here, with `nproc` pinned to `cpus` (OMP_NUM_THREADS is
    /// what coreutils' nproc honours); returns the exit status and what is left beside the list.
    fn run_check(root: &Path, lines: &[u8], files: u64, cpus: u32) -> (i32, Vec<String>) {
        let journal = root.parent().unwrap().join("the host's journal");
        std::fs::create_dir_all(&journal).unwrap();
        let list = journal.join("sha256sums-1.txt");
        std::fs::write(&list, lines).unwrap();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(host_check_command(root, &list, files))
            .env("OMP_NUM_THREADS", cpus.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&journal)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        std::fs::remove_dir_all(&journal).unwrap();
        (status.code().unwrap_or(-1), left)
    }

    /// The list comes from the real `sha256sum` (GNU coreutils), the check runs the real
    /// `sh`, `nproc`, `split` and `sha256sum -c`: a good tree passes with any number of parts
    /// (more CPUs than files too), one changed or missing file fails the whole check, and only
    /// the list is left behind.
    #[test]
    fn host_check_runs_in_parts_and_any_failing_part_fails_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree dir");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let mut names = Vec::new();
        for i in 0..7 {
            let name = if i % 2 == 0 {
                format!("f{i}")
            } else {
                format!("sub/g {i}")
            };
            std::fs::write(root.join(&name), format!("content {i}\n")).unwrap();
            names.push(name);
        }
        let listed = std::process::Command::new("sha256sum")
            .args(&names)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(listed.status.success());
        let lines = listed.stdout;
        for cpus in [1, 2, 3, 7, 16] {
            let (rc, left) = run_check(&root, &lines, 7, cpus);
            assert_eq!(rc, 0, "{cpus} cpus");
            assert_eq!(left, ["sha256sums-1.txt"], "{cpus} cpus");
        }
        // Parts are named as rollback recognises verify lists, should one be left behind.
        let cmd = host_check_command(&root, Path::new("/j/sha256sums-1.txt"), 7);
        assert!(cmd.contains("/j/sha256sums-1-part-"), "{cmd}");
        let one_line: Vec<u8> = lines
            .split_inclusive(|&b| b == b'\n')
            .next()
            .unwrap()
            .to_vec();
        assert_eq!(run_check(&root, &one_line, 1, 4).0, 0);
        for cpus in [1, 2, 3, 7] {
            std::fs::write(root.join("sub/g 5"), "changed\n").unwrap();
            let (rc, left) = run_check(&root, &lines, 7, cpus);
            assert_ne!(rc, 0, "{cpus} cpus: a changed file passed");
            assert_eq!(left, ["sha256sums-1.txt"]);
            std::fs::remove_file(root.join("sub/g 5")).unwrap();
            assert_ne!(
                run_check(&root, &lines, 7, cpus).0,
                0,
                "{cpus} cpus: a missing file passed"
            );
            std::fs::write(root.join("sub/g 5"), "content 5\n").unwrap();
        }
    }
}
