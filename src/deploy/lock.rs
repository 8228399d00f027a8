//! The host lock, `<work_dir>/lock`: one run at a time changes a target, whether it deploys it
//! or rolls it back. Taken by the deploy (step 2) and by the rollback, with the same
//! guarantees:
//!
//! - written whole: the JSON goes into a file of this run's own in the work dir, which is then
//!   hard-linked to the lock's name (one atomic step that fails if the name exists) and
//!   removed, so the lock never exists without its content. A run cut off while taking it
//!   leaves at most that file, which its rerun removes (the journal names it), never the empty
//!   lock a server stalled between a create and its write made, which cannot be told from
//!   another run's lock about to be written. Where the host cannot link (no
//!   `hardlink@openssh.com`, a filesystem without hard links), the lock is created in place;
//! - journalled before it is taken, like every remote mutation;
//! - a lock held by another run is reported with its owner, age, plan and whether the owner
//!   runs, and removed only on request (`--clear-stale-lock`) and never while its owner
//!   provably runs; one left by a dead run of this same plan on this machine is this run's
//!   own, which it takes over;
//! - released only while it still holds the exact bytes this run wrote.

use std::path::{Path, PathBuf};

use super::journal::{self, rfc3339, unix_now, Journal, Phase, Step};
use super::{at, kind_name, local_hostname, pid_alive, DeployError};
use crate::digest::Digest;
use crate::remote::{FileKind, Remote, RemoteError};

/// What a run holding the lock does, so that whoever finds the lock knows which command
/// finishes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockAction {
    /// Also what took a lock an older sealpush wrote, which has no `action`.
    #[default]
    Deploy,
    Rollback,
    /// A command of a later sealpush, which this version does not know: its lock is still read
    /// for its owner (never written by this version).
    #[serde(other)]
    Other,
}

impl LockAction {
    pub fn name(self) -> &'static str {
        match self {
            LockAction::Deploy => "deploy",
            LockAction::Rollback => "rollback",
            LockAction::Other => "run",
        }
    }
}

/// Contents of the lock file.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LockInfo {
    /// The machine sealpush runs on (not the host being deployed to).
    pub owner_host: String,
    pub pid: u32,
    pub since: String,
    pub since_unix: u64,
    pub plan_digest: Digest,
    pub target: PathBuf,
    pub tool_version: String,
    #[serde(default)]
    pub action: LockAction,
}

impl LockInfo {
    /// Taken by a deploy or rollback of `plan` on this machine whose process is gone: a killed
    /// run of that very plan, whose lock a rerun of its deploy or rollback takes over. Not a
    /// command this version does not know, whose rerun it cannot be.
    pub fn is_dead_run_of(&self, plan: &Digest) -> bool {
        self.action != LockAction::Other
            && self.plan_digest == *plan
            && self.owner_host == local_hostname()
            && !pid_alive(self.pid)
    }
}

/// Who holds a lock, for [`DeployError::Locked`].
#[derive(Debug)]
pub struct LockHolder {
    pub owner_host: String,
    pub pid: u32,
    pub since: String,
    /// Human age (`3m07s`).
    pub age: String,
    /// `a deploy of plan 0123456789abcdef`, or empty when the lock cannot be read.
    pub run: String,
    /// Whether the owner runs, as far as sealpush can tell.
    pub state: String,
    /// What to do.
    pub hint: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} since {} ({} ago, {})",
            self.pid, self.owner_host, self.since, self.age, self.state
        )?;
        if !self.run.is_empty() {
            write!(f, ", {}", self.run)?;
        }
        write!(f, "; {}", self.hint)
    }
}

/// The name prefix of the file a run writes its lock in before linking it to the lock's
/// name; preflight and status look for it too.
pub const LOCK_TEMP_PREFIX: &str = "lock.new-";

/// `<work_dir>/lock.new-<plan digest, 16 hex>-<16 random hex>`: where one run writes its lock
/// before linking it to `<work_dir>/lock`. New to each run, so two runs of one plan (from two
/// machines) never share it and nobody can plant it in advance; the journal names it.
fn new_lock_temp(work_dir: &Path, plan: &Digest) -> std::io::Result<PathBuf> {
    let hex = crate::preflight::unguessable_hex()?;
    Ok(work_dir.join(format!("{LOCK_TEMP_PREFIX}{}-{hex}", &plan.to_hex()[..16])))
}

/// The lock temp files that the runs journalled in `history` set out to create: the paths of
/// such a file in `work_dir` that begin a line of a `lock` intent record and end it, less
/// those a `lock` failure record names so (found already there: someone else's). The line is
/// found by the work dir's own spelling, not by splitting the record at newlines: a path may
/// hold one (the temp's own name never does).
fn recorded_lock_temps(history: &journal::History, work_dir: &Path) -> Vec<PathBuf> {
    let prefix = work_dir.join(LOCK_TEMP_PREFIX).display().to_string();
    let mut out: Vec<PathBuf> = Vec::new();
    for r in history.records.iter().filter(|r| r.step == Step::Lock) {
        let d = r.detail.as_str();
        let mut from = 0;
        while let Some(i) = d[from..].find(&prefix) {
            let start = from + i;
            from = start + prefix.len();
            if start > 0 && d.as_bytes()[start - 1] != b'\n' {
                continue;
            }
            let end = d[from..].find('\n').map_or(d.len(), |j| from + j);
            let p = Path::new(&d[start..end]);
            if p.parent() != Some(work_dir) {
                continue;
            }
            out.retain(|q| q != p);
            if r.phase == Phase::Intent {
                out.push(p.to_path_buf());
            }
        }
    }
    out
}

/// Journals one record when the run keeps a journal (a library caller of the rollback may
/// not); the deploy and the `rollback` command always do.
fn record(
    journal: &mut Option<&mut Journal>,
    remote: &dyn Remote,
    step: Step,
    phase: Phase,
    detail: impl Into<String>,
) -> Result<(), DeployError> {
    match journal {
        Some(j) => j.record(remote, step, phase, detail),
        None => Ok(()),
    }
}

/// One run's hold on `<work_dir>/lock` (see the module docs).
#[derive(Debug)]
pub struct HostLock {
    /// `<work_dir>/lock`.
    pub path: PathBuf,
    work_dir: PathBuf,
    plan: Digest,
    target: PathBuf,
    action: LockAction,
    /// The digest and size of the lock this run wrote, while it holds it.
    held: Option<(Digest, u64)>,
    /// The file this run writes its lock in before linking it to the lock's name, while it may
    /// be on the host.
    temp: Option<PathBuf>,
    /// This run set out to create the lock in place, not by a link (see [`HostLock::place`]).
    in_place: bool,
}

impl HostLock {
    pub fn new(work_dir: &Path, plan: Digest, target: &Path, action: LockAction) -> HostLock {
        HostLock {
            path: work_dir.join("lock"),
            work_dir: work_dir.to_path_buf(),
            plan,
            target: target.to_path_buf(),
            action,
            held: None,
            temp: None,
            in_place: false,
        }
    }

    /// A lock request the host did not answer may still be carried out: `err` with what the
    /// same command run again does about it, after `done` (what this run did not get to). The
    /// rerun removes the files its earlier runs wrote their lock in and takes over a lock of
    /// this plan whose process is gone (see [`HostLock::take`]); a lock created in place may be
    /// left empty, which nobody can tell from one about to be written. Any other error, and
    /// clearing a stale lock (which the rerun does only when asked again), as they are.
    pub fn explain_unanswered(&self, err: DeployError, done: &str) -> DeployError {
        let DeployError::Remote { step, cause, note } = err else {
            return err;
        };
        if step != "lock" || !cause.went_unanswered() || !note.is_empty() {
            return DeployError::Remote { step, cause, note };
        }
        let command = self.action.name();
        let (others, then) = match self.action {
            LockAction::Rollback => ("no deploy or other rollback of this target runs", "goes on"),
            _ => ("no other deploy of this target runs", "starts over"),
        };
        let note = if self.in_place {
            format!("; {done}, and the lock may be left empty (this host gets it created in place): rerun the same {command}, and if it reports that lock unreadable and {others}, rerun it with --clear-stale-lock")
        } else {
            format!("; {done}; rerun the same {command}, which removes or takes over what this run left of its lock and {then}")
        };
        DeployError::Remote { step, cause, note }
    }

    /// This run holds the lock (taken, not yet released).
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// Nothing of this run's lock is on the host, nor may be: neither the lock nor its temp.
    pub fn leaves_nothing(&self) -> bool {
        self.temp.is_none() && self.held.is_none()
    }

    /// Takes the lock (see the module docs). On an error nothing of it is kept past this run
    /// while the host answers; what a stall or a kill leaves, the rerun removes or takes over.
    pub fn take(
        &mut self,
        remote: &dyn Remote,
        journal: &mut Option<&mut Journal>,
        clear_stale: bool,
    ) -> Result<(), DeployError> {
        let taken = self.take_whole_or_in_place(remote, journal, clear_stale);
        if taken.is_err() {
            let _ = self.remove_temp(remote);
            if self.held.is_some() {
                let _ = self.release(remote, journal);
            }
        }
        taken
    }

    fn take_whole_or_in_place(
        &mut self,
        remote: &dyn Remote,
        journal: &mut Option<&mut Journal>,
        clear_stale: bool,
    ) -> Result<(), DeployError> {
        let now = unix_now();
        let info = LockInfo {
            owner_host: local_hostname(),
            pid: std::process::id(),
            since: rfc3339(now),
            since_unix: now,
            plan_digest: self.plan,
            target: self.target.clone(),
            tool_version: crate::TOOL_VERSION.into(),
            action: self.action,
        };
        let bytes = serde_json::to_vec_pretty(&info).expect("lock serializes");
        let temp = if remote.supports_hard_links() {
            let t =
                new_lock_temp(&self.work_dir, &self.plan).map_err(|e| DeployError::LocalState {
                    path: "/dev/urandom".into(),
                    reason: e.to_string(),
                })?;
            Some(t)
        } else {
            None
        };
        // The lock, then the file it is written in: a rerun removes the files its earlier
        // runs named here (see `recorded_lock_temps`).
        let mut detail = self.path.display().to_string();
        if let Some(t) = &temp {
            detail.push('\n');
            detail.push_str(&t.display().to_string());
        }
        record(journal, remote, Step::Lock, Phase::Intent, detail)?;
        self.remove_earlier_temps(remote, journal)?;
        if let Some(t) = temp {
            self.write_temp(remote, journal, t, &bytes)?;
        }
        match self.place(remote, journal, &bytes)? {
            Ok(()) => {}
            Err(RemoteError::Exists { .. }) => {
                let (holder, state, stale) = self.holder(remote);
                // Left by an earlier run of this very plan on this machine whose process is
                // gone (its deploy or its rollback): this run's own lock, which running the
                // same command again takes over.
                let own_dead_run = holder
                    .as_ref()
                    .is_some_and(|i| i.is_dead_run_of(&self.plan));
                if !((clear_stale && stale) || own_dead_run) {
                    let other_plan = holder.as_ref().filter(|i| i.plan_digest != self.plan);
                    let hint = match other_plan {
                        // Clearing it would strand that deploy's staged tree beside the target
                        // (and fail every later preflight): its own plan finishes or removes it.
                        Some(i) if stale && i.action == LockAction::Deploy => format!(
                            "it is the lock of a deploy of another plan ({}), cut off: run `sealpush deploy` on that plan again, which finishes it or removes what it staged; --clear-stale-lock would leave its staging behind",
                            &i.plan_digest.to_hex()[..16]
                        ),
                        Some(i) if stale && i.action == LockAction::Rollback => format!(
                            "it is the lock of a rollback of another plan ({}), cut off: run `sealpush rollback` on that plan again, which finishes it and releases the lock, or, if no run of this target is going on, rerun with --clear-stale-lock",
                            &i.plan_digest.to_hex()[..16]
                        ),
                        _ if stale => "if no deploy or rollback of this target is running, rerun with --clear-stale-lock".to_string(),
                        _ => "wait for it to finish".to_string(),
                    };
                    record(journal, remote, Step::Lock, Phase::Failed, state.clone())?;
                    return Err(self.locked_error(holder, state, hint));
                }
                record(
                    journal,
                    remote,
                    Step::Lock,
                    Phase::Intent,
                    if own_dead_run {
                        format!("taking over the lock of a dead run of this plan: {state}")
                    } else {
                        format!("clearing stale lock: {state}")
                    },
                )?;
                remote
                    .remove_file(&self.path)
                    .map_err(at("clear stale lock"))?;
                match self.place(remote, journal, &bytes)? {
                    Ok(()) => {}
                    Err(RemoteError::Exists { .. }) => {
                        let (holder, state, _) = self.holder(remote);
                        return Err(self.locked_error(
                            holder,
                            state,
                            "another run took it first".into(),
                        ));
                    }
                    Err(e) => return Err(at("lock")(e)),
                }
            }
            Err(e) => return Err(at("lock")(e)),
        }
        self.held = Some((Digest::of(&bytes), bytes.len() as u64));
        self.remove_temp(remote).map_err(at("lock"))?;
        record(journal, remote, Step::Lock, Phase::Done, "")
    }

    /// Writes the lock's content into `temp`, a name new to this run: exclusive create, fsynced
    /// where the server can. Anything already there was put there by someone else, who read
    /// the name in the journal: it is neither written through nor removed, now or by a rerun
    /// (the failure record names it).
    fn write_temp(
        &mut self,
        remote: &dyn Remote,
        journal: &mut Option<&mut Journal>,
        temp: PathBuf,
        bytes: &[u8],
    ) -> Result<(), DeployError> {
        match remote.write_new(&temp, bytes, 0o600, true) {
            Ok(()) => {
                self.temp = Some(temp);
                Ok(())
            }
            Err(e @ RemoteError::Exists { .. }) => {
                let kind = remote
                    .lstat(&temp)
                    .ok()
                    .flatten()
                    .map_or_else(|| "something".into(), |m| kind_name(m.kind));
                record(
                    journal,
                    remote,
                    Step::Lock,
                    Phase::Failed,
                    format!(
                        "{}\nalready there ({kind}), not this run's: {e}",
                        temp.display()
                    ),
                )?;
                Err(DeployError::Foreign { path: temp, kind })
            }
            Err(e) => {
                // The create may have happened (the write failed, or no answer came): the
                // name is this run's to remove.
                if !matches!(
                    e,
                    RemoteError::NotFound { .. } | RemoteError::PermissionDenied { .. }
                ) {
                    self.temp = Some(temp);
                }
                Err(at("lock")(e))
            }
        }
    }

    /// Creates the lock's name: a hard link to the file the lock was written in, else the lock
    /// written in place. A host that refuses the link (a filesystem without hard links, a
    /// server that denies the request) gets the lock in place, as a host without the
    /// extension does. The inner result is the host's answer; the outer one, the journal's.
    fn place(
        &mut self,
        remote: &dyn Remote,
        journal: &mut Option<&mut Journal>,
        bytes: &[u8],
    ) -> Result<Result<(), RemoteError>, DeployError> {
        if let Some(temp) = self.temp.clone() {
            match remote.hard_link(&temp, &self.path) {
                Err(e @ (RemoteError::PermissionDenied { .. } | RemoteError::Failed { .. })) => {
                    record(
                        journal,
                        remote,
                        Step::Lock,
                        Phase::Intent,
                        format!("the host refused the hard link ({e}): writing the lock in place"),
                    )?;
                    if let Err(e) = self.remove_temp(remote) {
                        return Ok(Err(e));
                    }
                }
                other => return Ok(other),
            }
        }
        self.in_place = true;
        Ok(remote.write_new(&self.path, bytes, 0o600, true))
    }

    /// Removes this run's lock temp file, if it may be on the host; gone already is fine.
    fn remove_temp(&mut self, remote: &dyn Remote) -> Result<(), RemoteError> {
        let Some(temp) = &self.temp else {
            return Ok(());
        };
        match remote.remove_file(temp) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.temp = None;
        Ok(())
    }

    /// Removes the lock temp files that earlier runs of this plan (since the last reset) set
    /// out to create and left: cut off between the create and the removal, or answered too late
    /// (a stalled server creates the file when it resumes). Only regular files: nothing else
    /// at such a name is a run's.
    fn remove_earlier_temps(
        &mut self,
        remote: &dyn Remote,
        journal: &mut Option<&mut Journal>,
    ) -> Result<(), DeployError> {
        let recorded = match journal {
            Some(j) => recorded_lock_temps(&j.history, &self.work_dir),
            None => Vec::new(),
        };
        if recorded.is_empty() {
            return Ok(());
        }
        let mut left = Vec::new();
        for (p, m) in recorded.iter().zip(remote.lstats(&recorded)) {
            if m.map_err(at("lock"))?
                .is_some_and(|m| m.kind == FileKind::File)
            {
                left.push(p);
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
        record(
            journal,
            remote,
            Step::Lock,
            Phase::Intent,
            format!(
                "removing what earlier runs of this plan left of their lock: {}",
                shown.join(", ")
            ),
        )?;
        for p in left {
            match remote.remove_file(p) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(at("lock")(e)),
            }
        }
        Ok(())
    }

    /// Who holds the lock, a description, and whether it is provably or possibly stale.
    fn holder(&self, remote: &dyn Remote) -> (Option<LockInfo>, String, bool) {
        let info = remote
            .read_file(&self.path, 64 * 1024)
            .ok()
            .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok());
        match &info {
            None => (None, "unreadable lock".into(), true),
            Some(i) if i.owner_host == local_hostname() => {
                if pid_alive(i.pid) {
                    (
                        info.clone(),
                        "the owner process is still running".into(),
                        false,
                    )
                } else {
                    (
                        info.clone(),
                        "the owner process is not running: stale".into(),
                        true,
                    )
                }
            }
            Some(_) => (
                info.clone(),
                "the owner runs on another machine; sealpush cannot tell whether it is alive"
                    .into(),
                true,
            ),
        }
    }

    fn locked_error(&self, holder: Option<LockInfo>, state: String, hint: String) -> DeployError {
        let now = unix_now();
        let (owner_host, pid, since, age, run) = match holder {
            Some(i) => (
                i.owner_host,
                i.pid,
                i.since,
                journal::human_age(now.saturating_sub(i.since_unix)),
                format!(
                    "a {} of plan {}",
                    i.action.name(),
                    &i.plan_digest.to_hex()[..16]
                ),
            ),
            None => (
                "unknown".into(),
                0,
                "unknown".into(),
                "unknown".into(),
                String::new(),
            ),
        };
        DeployError::Locked {
            path: self.path.clone(),
            holder: Box::new(LockHolder {
                owner_host,
                pid,
                since,
                age,
                run,
                state,
                hint,
            }),
        }
    }

    /// Removes the lock if this run holds it and it still holds the exact bytes this run wrote.
    pub fn release(
        &mut self,
        remote: &dyn Remote,
        journal: &mut Option<&mut Journal>,
    ) -> Result<(), DeployError> {
        let Some((digest, size)) = self.held else {
            return Ok(());
        };
        record(journal, remote, Step::Unlock, Phase::Intent, "")?;
        // Only our own lock, byte for byte: a cleared-and-retaken lock belongs to someone else
        // now. (Hashed with its size as the hint: no end-of-file request.)
        // A lost or stalled connection says nothing about whose lock it is: an error, so the
        // lock is reported as left rather than journalled as "no longer ours". Anything the
        // host answered (gone, a directory now) means it is not ours.
        let ours = match super::hash_sized(remote, &self.path, size, &crate::progress::NoProgress) {
            Ok(got) => got == (digest, size),
            Err(e) if e.went_unanswered() => return Err(at("unlock")(e)),
            Err(_) => false,
        };
        if ours {
            remote.remove_file(&self.path).map_err(at("unlock"))?;
        }
        self.held = None;
        record(
            journal,
            remote,
            Step::Unlock,
            Phase::Done,
            if ours { "" } else { "lock was no longer ours" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_lock_temps_are_the_temp_paths_of_lock_intents_in_the_work_dir() {
        let rec = |step, phase, detail: &str| journal::Record {
            seq: 1,
            run: "1@1".into(),
            time: String::new(),
            step,
            phase,
            detail: detail.into(),
        };
        let w = Path::new("/p/.sealpush/t");
        let history = journal::History {
            records: vec![
                rec(
                    Step::Lock,
                    Phase::Intent,
                    "/p/.sealpush/t/lock\n/p/.sealpush/t/lock.new-a-1",
                ),
                // In place: no temp.
                rec(Step::Lock, Phase::Intent, "/p/.sealpush/t/lock"),
                // Free text naming a temp is not a line of its own.
                rec(
                    Step::Lock,
                    Phase::Intent,
                    "removing ...: /p/.sealpush/t/lock.new-a-1",
                ),
                rec(
                    Step::Lock,
                    Phase::Intent,
                    "/p/.sealpush/t/lock\n/p/.sealpush/t/lock.new-a-2",
                ),
                // Again (the same run's takeover does not name it twice, but dedup anyway).
                rec(Step::Lock, Phase::Intent, "/p/.sealpush/t/lock.new-a-2"),
                // Another step, another phase, another dir, another name: none of them.
                rec(Step::WorkDir, Phase::Done, "/p/.sealpush/t/lock.new-a-3"),
                rec(Step::Lock, Phase::Done, "/p/.sealpush/t/lock.new-a-4"),
                rec(
                    Step::Lock,
                    Phase::Intent,
                    "/elsewhere/lock.new-a-5\n/p/.sealpush/t/x-6",
                ),
                rec(Step::Lock, Phase::Intent, "/p/.sealpush/t/sub/lock.new-a-7"),
                // Found already there, by the run that named it: not that run's.
                rec(
                    Step::Lock,
                    Phase::Intent,
                    "/p/.sealpush/t/lock\n/p/.sealpush/t/lock.new-a-8",
                ),
                rec(
                    Step::Lock,
                    Phase::Failed,
                    "/p/.sealpush/t/lock.new-a-8\nalready there",
                ),
            ],
        };
        assert_eq!(
            recorded_lock_temps(&history, w),
            [w.join("lock.new-a-1"), w.join("lock.new-a-2")]
        );
        assert!(recorded_lock_temps(&journal::History::default(), w).is_empty());
        // A work dir whose path holds a newline: the record's lines are not its paths.
        let w = Path::new("/p/a\nb/.sealpush/t");
        let history = journal::History {
            records: vec![
                rec(
                    Step::Lock,
                    Phase::Intent,
                    "/p/a\nb/.sealpush/t/lock\n/p/a\nb/.sealpush/t/lock.new-a-1",
                ),
                rec(
                    Step::Lock,
                    Phase::Intent,
                    "/p/a\nb/.sealpush/t/lock\n/p/a\nb/.sealpush/t/lock.new-a-2",
                ),
                rec(
                    Step::Lock,
                    Phase::Failed,
                    "/p/a\nb/.sealpush/t/lock.new-a-2\nalready there",
                ),
                // Only the lines' ends in another directory.
                rec(
                    Step::Lock,
                    Phase::Intent,
                    "/p/a\nb/.sealpush/t/lock.new-a-3",
                ),
                rec(
                    Step::Lock,
                    Phase::Intent,
                    "/q/a\nb/.sealpush/t/lock.new-a-4",
                ),
            ],
        };
        assert_eq!(
            recorded_lock_temps(&history, w),
            [w.join("lock.new-a-1"), w.join("lock.new-a-3")]
        );
    }

    /// A lock is read for its owner, to tell whether it runs. One a later sealpush wrote for a
    /// command this version does not know must still be read so: taken for unreadable, it was
    /// called stale, and `--clear-stale-lock` removed it while its owner ran here.
    #[test]
    fn a_lock_of_an_action_this_version_does_not_know_is_still_read() {
        let lock = |action: &str| {
            format!(
                r#"{{"owner_host":"h","pid":7,"since":"s","since_unix":1,"plan_digest":"{}","target":"/t","tool_version":"sealpush 9.9.9"{action}}}"#,
                "11".repeat(32)
            )
        };
        for (action, want) in [
            ("", LockAction::Deploy),
            (r#","action":"deploy""#, LockAction::Deploy),
            (r#","action":"rollback""#, LockAction::Rollback),
            (r#","action":"repair""#, LockAction::Other),
        ] {
            let info: LockInfo = serde_json::from_str(&lock(action)).unwrap();
            assert_eq!((info.action, info.pid), (want, 7), "{action}");
        }
    }

    #[test]
    fn a_new_lock_temp_is_named_by_the_plan_and_new_each_time() {
        let w = Path::new("/p/.sealpush/t");
        let plan = Digest::of(b"plan");
        let a = new_lock_temp(w, &plan).unwrap();
        let b = new_lock_temp(w, &plan).unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        let rest = name
            .strip_prefix(&format!("{LOCK_TEMP_PREFIX}{}-", &plan.to_hex()[..16]))
            .unwrap();
        assert!(rest.len() == 16 && rest.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.parent(), Some(w));
        // What a rerun finds again in the intent record.
        let history = journal::History {
            records: vec![journal::Record {
                seq: 1,
                run: "1@1".into(),
                time: String::new(),
                step: Step::Lock,
                phase: Phase::Intent,
                detail: format!("{}\n{}", w.join("lock").display(), a.display()),
            }],
        };
        assert_eq!(recorded_lock_temps(&history, w), [a]);
    }
}
