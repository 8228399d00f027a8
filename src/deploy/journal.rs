//! The deploy journal: every remote mutation is recorded *before* it happens, so an interrupted
//! deploy (Ctrl-C, `kill -9`, a dropped connection, a full disk) can be finished or cleaned up by
//! running the same deploy again.
//!
//! Two copies:
//! - locally, `<local_state>/deploys/<plan digest>/journal.jsonl`: one JSON record per line,
//!   appended and fsynced before the step it announces runs. This is the copy resume reads.
//! - on the host, `<work_dir>/journal-<plan digest, 16 hex>/NNNNNN-<step>-<phase>`: one small,
//!   exclusively created file per record (appending over SFTP is not atomic; a new name is), so
//!   someone looking at the host sees what the deploy was doing. Written only while the lock is
//!   held (before that, the work dir may not exist yet). An intent or failure record is on the
//!   host before the next step runs; a done record goes with the next record written there (or
//!   when the host journal is detached), in the same round trips, since it only reports what
//!   already happened.
//!
//! Test hook: `SEALPUSH_FAULT=abort-before:<step>` or `abort-after:<step>` makes the process kill
//! itself with SIGKILL right after the intent record of `<step>` is durable (before the
//! mutation) or right after the step completes: the precise equivalent of `kill -9` at that
//! point, used by the fault tests. `SEALPUSH_FAULT=wait-before:<step>:<file>` instead creates
//! `<file>.reached` once the intent is durable and waits until `<file>` exists, so a test can
//! tamper with the host at that exact point; after two minutes without it the process aborts.
//! `wait-before:<step>,<step>...:<file>` waits at each of those steps in turn, on its own gate
//! `<file>.<step>` (created `<file>.<step>.reached`). Steps are the [`Step`] names.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DeployError;
use crate::digest::Digest;
use crate::remote::Remote;

/// The steps of a deploy, in order; their names appear in journals and in `SEALPUSH_FAULT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Re-check plan and host (no mutation).
    Recheck,
    /// Create `<parent>/.sealpush/<name>/` if absent.
    WorkDir,
    /// The lock file: written whole in a file of its own (the intent names it), hard-linked to
    /// the lock's name, which fails if it exists, then removed; or created in place, exclusive,
    /// where the host cannot link.
    Lock,
    /// Remove what an interrupted earlier run left (staging, partial archive).
    Cleanup,
    /// mkdir of the staging directory (0700) and the tree root inside it.
    Staging,
    /// Upload of the tree's directories, files and symlinks.
    Materialise,
    /// Upload of the archive (`--keep-archive`).
    UploadArchive,
    /// Read-back of every staged file and of the staged tree's shape.
    Verify,
    /// DEPLOY-MANIFEST.txt inside the staged tree.
    DeployManifest,
    /// Rename of the staged tree onto the target.
    Promote,
    /// Removal of the now empty staging directory.
    RemoveStaging,
    /// `sync -f` on the host (`--sync`).
    Sync,
    /// Anchor digest and target shape re-proven.
    Prove,
    /// `--check CMD` in the target.
    Check,
    /// Receipt on the host and locally.
    Receipt,
    /// Removal of the lock file.
    Unlock,
    /// The deploy is complete (marker).
    Finished,
    /// Everything this deploy created was removed again (marker: history restarts).
    Reset,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Recheck => "recheck",
            Step::WorkDir => "work-dir",
            Step::Lock => "lock",
            Step::Cleanup => "cleanup",
            Step::Staging => "staging",
            Step::Materialise => "materialise",
            Step::UploadArchive => "upload-archive",
            Step::Verify => "verify",
            Step::DeployManifest => "deploy-manifest",
            Step::Promote => "promote",
            Step::RemoveStaging => "remove-staging",
            Step::Sync => "sync",
            Step::Prove => "prove",
            Step::Check => "check",
            Step::Receipt => "receipt",
            Step::Unlock => "unlock",
            Step::Finished => "finished",
            Step::Reset => "reset",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// About to run the step.
    Intent,
    /// The step completed.
    Done,
    /// The step failed (detail says why).
    Failed,
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Identifies the sealpush process that wrote it (`<pid>@<unix time>`).
    pub run: String,
    pub time: String,
    pub step: Step,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What earlier runs of this plan did, since the last [`Step::Reset`].
#[derive(Clone, Debug, Default)]
pub struct History {
    pub records: Vec<Record>,
}

impl History {
    pub fn intended(&self, step: Step) -> bool {
        self.records
            .iter()
            .any(|r| r.step == step && r.phase == Phase::Intent)
    }
    pub fn done(&self, step: Step) -> bool {
        self.records
            .iter()
            .any(|r| r.step == step && r.phase == Phase::Done)
    }
    /// Detail of the last `Done` record of `step`.
    pub fn done_detail(&self, step: Step) -> Option<&str> {
        self.records
            .iter()
            .rev()
            .find(|r| r.step == step && r.phase == Phase::Done)
            .map(|r| r.detail.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// The local state directory of one plan: `<local_state>/deploys/<plan digest>/`.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn open(local_state: &Path, plan: &Digest) -> Result<StateDir, DeployError> {
        let dir = local_state.join("deploys").join(plan.to_hex());
        fs::create_dir_all(&dir).map_err(|e| DeployError::LocalState {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        Ok(StateDir { dir })
    }
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }
    pub fn receipt_path(&self) -> PathBuf {
        self.dir.join("receipt.json")
    }
}

/// Reads a local journal; a torn last line (killed mid-write) is ignored, as it announces a
/// step that therefore never started.
pub fn read_records(path: &Path) -> Result<Vec<Record>, DeployError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(DeployError::LocalState {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| DeployError::LocalState {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if let Ok(r) = serde_json::from_str::<Record>(&line) {
            out.push(r);
        }
    }
    Ok(out)
}

/// History since the last reset (or since the deploy finished, for [`History::done`] of
/// [`Step::Finished`]).
pub fn history_of(records: &[Record]) -> History {
    let start = records
        .iter()
        .rposition(|r| r.step == Step::Reset && r.phase == Phase::Done)
        .map_or(0, |i| i + 1);
    History {
        records: records[start..].to_vec(),
    }
}

/// Appends records locally (fsynced) and, once [`Journal::attach_host`] was called, on the host.
pub struct Journal {
    path: PathBuf,
    /// `None` until the first record of a journal opened with [`Journal::open_lazily`] whose
    /// state dir did not exist.
    file: Option<File>,
    run: String,
    seq: u64,
    host_dir: Option<PathBuf>,
    /// Done records not yet written on the host (name, line): see the module docs.
    host_pending: Vec<(PathBuf, Vec<u8>)>,
    pub history: History,
}

impl Journal {
    pub fn open(state: &StateDir) -> Result<Journal, DeployError> {
        let path = state.journal_path();
        let (file, records) = open_locked(&path)?;
        let seq = records.last().map_or(0, |r| r.seq);
        Ok(Journal {
            path,
            file: Some(file),
            run: format!("{}@{}", std::process::id(), unix_now()),
            seq,
            host_dir: None,
            host_pending: Vec::new(),
            history: history_of(&records),
        })
    }

    /// [`Journal::open`] of the plan's state dir if it exists; else a journal with no history
    /// whose dir and file are made with its first record, so that a run that writes nothing
    /// (a rollback refusing its receipt) leaves no state dir behind.
    pub fn open_lazily(local_state: &Path, plan: &Digest) -> Result<Journal, DeployError> {
        let dir = local_state.join("deploys").join(plan.to_hex());
        if dir.exists() {
            return Journal::open(&StateDir::open(local_state, plan)?);
        }
        Ok(Journal {
            path: StateDir { dir }.journal_path(),
            file: None,
            run: format!("{}@{}", std::process::id(), unix_now()),
            seq: 0,
            host_dir: None,
            host_pending: Vec::new(),
            history: History::default(),
        })
    }

    /// Path of the local journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now on, records are also written on the host into `dir` (which must exist).
    pub fn attach_host(&mut self, dir: PathBuf) {
        self.host_dir = Some(dir);
    }

    /// Stops writing on the host, after writing the records still pending there.
    pub fn detach_host(&mut self, remote: &dyn Remote) -> Result<(), DeployError> {
        self.host_dir = None;
        self.flush_host(remote, None)
    }

    /// Writes the pending done records and `then`, concurrently; fsynced, like the data: the
    /// host copy survives a crash of the host too.
    fn flush_host(
        &mut self,
        remote: &dyn Remote,
        then: Option<(PathBuf, Vec<u8>)>,
    ) -> Result<(), DeployError> {
        let mut records = std::mem::take(&mut self.host_pending);
        records.extend(then);
        if records.is_empty() {
            return Ok(());
        }
        remote.write_new_all(&records, 0o600, true)?;
        Ok(())
    }

    /// Writes one record, locally first (fsync), then on the host; then honours the fault hook.
    pub fn record(
        &mut self,
        remote: &dyn Remote,
        step: Step,
        phase: Phase,
        detail: impl Into<String>,
    ) -> Result<(), DeployError> {
        if self.file.is_none() {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(dir).map_err(|e| DeployError::LocalState {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
            // A run of this plan that made it meanwhile (it may have been cut off, leaving work
            // this run's empty history knows nothing of): this run decided on a stale reading,
            // and stops before its first step, changing nothing.
            let (file, records) = open_locked(&self.path)?;
            if !records.is_empty() {
                return Err(DeployError::LocalState {
                    path: self.path.clone(),
                    reason: "another run of this plan on this machine started this journal \
                             meanwhile; nothing was changed: run this again, which reads what \
                             that run did"
                        .into(),
                });
            }
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        self.seq += 1;
        let rec = Record {
            seq: self.seq,
            run: self.run.clone(),
            time: rfc3339(unix_now()),
            step,
            phase,
            detail: detail.into(),
        };
        let mut line = serde_json::to_vec(&rec).expect("record serializes");
        line.push(b'\n');
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| DeployError::LocalState {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        if let Some(dir) = &self.host_dir {
            let phase_name = match phase {
                Phase::Intent => "intent",
                Phase::Done => "done",
                Phase::Failed => "failed",
            };
            let name = format!("{:06}-{}-{}", rec.seq, step.name(), phase_name);
            let record = (dir.join(name), line);
            match phase {
                Phase::Done => self.host_pending.push(record),
                Phase::Intent | Phase::Failed => self.flush_host(remote, Some(record))?,
            }
        }
        fault_point(step, phase);
        Ok(())
    }
}

/// Opens (creating) the journal at `path`, holds it (see [`lock_exclusive`]) and reads it:
/// locked before it is read, so a run of this plan that ends meanwhile has written its last
/// record, and this run starts from it.
fn open_locked(path: &Path) -> Result<(File, Vec<Record>), DeployError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| DeployError::LocalState {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    lock_exclusive(&file, path)?;
    Ok((file, read_records(path)?))
}

/// Holds `file` exclusively for as long as it is open (where its filesystem has locks): two runs of one plan on this machine
/// would otherwise interleave their records in one journal, and each take the other's host
/// work for its own. The kernel drops the lock when the process ends, however it ends, so a
/// killed run leaves nothing stale behind.
fn lock_exclusive(file: &File, path: &Path) -> Result<(), DeployError> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor owned by `file`, which outlives the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EWOULDBLOCK) => Err(DeployError::Busy {
            journal: path.to_path_buf(),
        }),
        // A filesystem without locks (ENOLCK, EOPNOTSUPP on some network mounts): the run goes
        // on as it did before this guard existed, since the host lock still serialises deploys
        // of one target; refusing would make such a state dir unusable.
        _ => Ok(()),
    }
}

/// The `wait-before:<step>:<file>` hook alone, for a point that is not a journal record (the
/// read-back that runs alongside the upload).
pub fn wait_point(step: Step) {
    if std::env::var("SEALPUSH_FAULT").is_ok_and(|v| v.starts_with("wait-before:")) {
        fault_point(step, Phase::Intent);
    }
}

/// `SEALPUSH_FAULT=abort-before:<step>|abort-after:<step>`: SIGKILL ourselves at that point.
fn fault_point(step: Step, phase: Phase) {
    let Ok(spec) = std::env::var("SEALPUSH_FAULT") else {
        return;
    };
    if let (Phase::Intent, Some(rest)) = (phase, spec.strip_prefix("wait-before:")) {
        if let Some((steps, file)) = rest.split_once(':') {
            let steps: Vec<&str> = steps.split(',').collect();
            if steps.contains(&step.name()) {
                // One step keeps the gate its tests name; several get one gate each.
                let file = if steps.len() == 1 {
                    file.to_string()
                } else {
                    format!("{file}.{}", step.name())
                };
                let file = file.as_str();
                let _ = fs::write(format!("{file}.reached"), b"");
                let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
                while !Path::new(file).exists() {
                    if std::time::Instant::now() >= until {
                        // Going on would run the step untampered, and a test could pass for
                        // the wrong reason: stop where the test can see it.
                        eprintln!(
                            "sealpush: SEALPUSH_FAULT={spec}: {file} did not appear within 120 s; aborting"
                        );
                        std::process::abort();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        return;
    }
    let want = match phase {
        Phase::Intent => format!("abort-before:{}", step.name()),
        Phase::Done => format!("abort-after:{}", step.name()),
        Phase::Failed => return,
    };
    if spec == want {
        // SAFETY: kill(2) on our own pid with SIGKILL has no memory-safety preconditions; it is
        // the exact fault being simulated (no destructors, no flushes).
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// UTC RFC 3339 (`2026-05-21T10:00:00Z`) from seconds since the epoch (one implementation,
/// shared with the plan's timestamps).
pub use crate::preflight::rfc3339;

/// Human duration: `42s`, `3m07s`, `2h05m`, `3d04h`.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal opened lazily (its plan's dir absent) that finds, at its first record, that
    /// another run of the plan started the journal meanwhile refuses to record: its decisions
    /// were taken on an empty history. Nothing is appended. One whose dir stays its own
    /// records as usual.
    #[test]
    fn a_lazy_journal_refuses_a_journal_another_run_started_meanwhile() {
        let remote = crate::remote::local::LocalRemote::new();
        let state = tempfile::tempdir().unwrap();
        let plan = Digest::of(b"plan");
        let mut lazy = Journal::open_lazily(state.path(), &plan).unwrap();
        assert!(!state.path().join("deploys").exists());
        {
            let mut other = Journal::open(&StateDir::open(state.path(), &plan).unwrap()).unwrap();
            other
                .record(&remote, Step::WorkDir, Phase::Intent, "")
                .unwrap();
        }
        let e = lazy
            .record(&remote, Step::Lock, Phase::Intent, "")
            .unwrap_err();
        assert!(
            e.to_string().contains("started this journal meanwhile"),
            "{e}"
        );
        assert_eq!(read_records(lazy.path()).unwrap().len(), 1);

        let alone = tempfile::tempdir().unwrap();
        let mut lazy = Journal::open_lazily(alone.path(), &plan).unwrap();
        lazy.record(&remote, Step::Lock, Phase::Intent, "").unwrap();
        assert_eq!(read_records(lazy.path()).unwrap().len(), 1);
    }

    #[test]
    fn history_restarts_after_reset_and_ignores_torn_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j.jsonl");
        let rec = |seq, step, phase| Record {
            seq,
            run: "1@1".into(),
            time: rfc3339(0),
            step,
            phase,
            detail: String::new(),
        };
        let mut text = String::new();
        for r in [
            rec(1, Step::Staging, Phase::Intent),
            rec(2, Step::Staging, Phase::Done),
            rec(3, Step::Reset, Phase::Done),
            rec(4, Step::Lock, Phase::Intent),
        ] {
            text += &serde_json::to_string(&r).unwrap();
            text.push('\n');
        }
        text += "{\"seq\":5,\"run\":\"1@1\",\"ti"; // torn by a kill
        fs::write(&p, text).unwrap();
        let all = read_records(&p).unwrap();
        assert_eq!(all.len(), 4);
        let h = history_of(&all);
        assert!(!h.done(Step::Staging));
        assert!(h.intended(Step::Lock));
        assert!(!h.done(Step::Lock));
    }

    #[test]
    fn a_done_record_reaches_the_host_with_the_next_record_or_at_detach() {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::open(&d.path().join("state"), &Digest([7; 32])).unwrap();
        let host = d.path().join("host");
        fs::create_dir(&host).unwrap();
        let remote = crate::remote::local::LocalRemote::new();
        let mut j = Journal::open(&state).unwrap();
        j.attach_host(host.clone());
        let on_host = || {
            let mut v: Vec<String> = fs::read_dir(&host)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        j.record(&remote, Step::Staging, Phase::Intent, "").unwrap();
        assert_eq!(on_host(), ["000001-staging-intent"]);
        j.record(&remote, Step::Staging, Phase::Done, "").unwrap();
        assert_eq!(on_host(), ["000001-staging-intent"], "done waits");
        j.record(&remote, Step::Promote, Phase::Intent, "").unwrap();
        let both = [
            "000001-staging-intent",
            "000002-staging-done",
            "000003-promote-intent",
        ];
        assert_eq!(on_host(), both);
        j.record(&remote, Step::Promote, Phase::Done, "").unwrap();
        j.detach_host(&remote).unwrap();
        assert_eq!(on_host().last().unwrap(), "000004-promote-done");
        // Locally, every record was written at once, in order.
        let local: Vec<u64> = read_records(&state.journal_path())
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(local, [1, 2, 3, 4]);
        assert_eq!(
            fs::read(host.join("000002-staging-done")).unwrap(),
            fs::read_to_string(state.journal_path())
                .unwrap()
                .lines()
                .nth(1)
                .map(|l| format!("{l}\n"))
                .unwrap()
                .as_bytes()
        );
    }

    #[test]
    fn human_age_spellings() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(187), "3m07s");
        assert_eq!(human_age(7500), "2h05m");
        assert_eq!(human_age(3 * 86_400 + 4 * 3600), "3d04h");
    }
}
