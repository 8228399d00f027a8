//! Rollback and status, both driven by the receipt.
//!
//! Rollback removes exactly what the deploy created and nothing else: the tree's entries as the
//! receipt lists them, the target directory, the kept archive, the host receipt and journal,
//! and the work directories the deploy created. It first examines everything and refuses,
//! before removing anything, when an entry changed since the deploy (content, kind, exec bit or
//! symlink target), unless forced. Names it did not create are never removed (so a directory
//! that gained a file stays, with that file, and the report says so). The anchor is never
//! touched, and its digest is re-proven afterwards. A tree of nothing but the deploy's entries
//! first leaves the target in one rename (into the work dir), so an interrupted rollback leaves
//! the target absent, not half removed; re-running it finishes it there, skipping names already
//! gone. The host's receipt and journal go last, only when the tree is wholly gone.
//!
//! Like a deploy, a rollback holds the target's host lock ([`super::lock`]) from before it
//! examines the tree until its receipt and journal are gone, so it never interleaves with a
//! deploy or another rollback of the target; a lock someone else holds stops it before it
//! removes anything.
//!
//! Status reads the receipt and DEPLOY-MANIFEST.txt on the host and re-verifies the deployed
//! tree over the transport, every byte.

use std::path::{Path, PathBuf};

use super::lock::{HostLock, LockAction};
use super::receipt::{escape_path, unescape_path, CreatedKind, Receipt, ReceiptError};
use super::shape::{self, Kind, Shape};
use super::{anchor, journal, DeployError, DEPLOY_MANIFEST};
use crate::digest::Digest;
use crate::plan::SealedPlan;
use crate::progress::Progress;
use crate::remote::{FileKind, Remote, RemoteError};

/// How to roll back.
#[derive(Clone, Debug, Default)]
pub struct RollbackOptions {
    /// Remove entries that changed since the deploy too (never entries it did not create).
    pub force: bool,
    /// Local state dir: its journal for this plan is reset so the plan can be deployed again.
    pub local_state: Option<PathBuf>,
    /// Remove a host lock whose owner is not running (or runs elsewhere) instead of refusing,
    /// as the deploy's `clear_stale_lock` does.
    pub clear_stale_lock: bool,
}

/// What a rollback did (`rollback --json` prints it as is).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RollbackReport {
    pub target: PathBuf,
    /// Names removed.
    pub removed: u64,
    /// Names that were already gone.
    pub already_gone: u64,
    /// Changed entries removed because of `--force`.
    pub forced: Vec<String>,
    /// What stays, and why (names the deploy did not create, directories holding them).
    pub kept: Vec<String>,
    /// The anchor, re-proven.
    pub anchor: Option<super::receipt::AnchorProof>,
    /// True when everything the deploy created is gone and the anchor is unchanged.
    pub complete: bool,
}

fn at(step: &'static str) -> impl Fn(RemoteError) -> DeployError {
    move |cause| DeployError::Remote {
        step,
        cause,
        note: String::new(),
    }
}

/// The receipt's tree as a shape.
fn receipt_shape(r: &Receipt) -> Result<Shape, DeployError> {
    let bad = |p: &str| DeployError::BadReceipt {
        path: r.target.clone(),
        reason: format!("bad path spelling {p:?}"),
    };
    let mut s = Shape::new();
    for e in &r.tree {
        let path = unescape_path(&e.path).ok_or_else(|| bad(&e.path))?;
        let kind = match e.kind {
            CreatedKind::File => Kind::File {
                size: e.size.unwrap_or(0),
                sha256: e.sha256,
                executable: e.executable,
            },
            CreatedKind::Dir => Kind::Dir,
            CreatedKind::Symlink => Kind::Symlink {
                target: e
                    .target
                    .as_deref()
                    .map(|t| unescape_path(t).ok_or_else(|| bad(t)))
                    .transpose()?
                    .unwrap_or_default(),
            },
            CreatedKind::Fifo => Kind::Other(FileKind::Fifo),
            CreatedKind::Socket => Kind::Other(FileKind::Socket),
            CreatedKind::CharDevice => Kind::Other(FileKind::CharDevice),
            CreatedKind::BlockDevice => Kind::Other(FileKind::BlockDevice),
            CreatedKind::Other => Kind::Other(FileKind::Other),
        };
        s.insert(path, kind);
    }
    Ok(s)
}

/// Finds the receipt of a plan: the local copy first, then the host's.
pub fn find_receipt(
    remote: &dyn Remote,
    plan: &SealedPlan,
    local_state: &Path,
) -> Result<Receipt, DeployError> {
    let local = local_state
        .join("deploys")
        .join(plan.digest.to_hex())
        .join("receipt.json");
    let names = super::Names::of(&plan.plan, &plan.digest)?;
    let parse = |bytes: &[u8], path: PathBuf| {
        let receipt = Receipt::from_json(bytes).map_err(|e| DeployError::BadReceipt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        match plan_mismatch(&receipt, plan, &names) {
            None => Ok(receipt),
            Some(reason) => Err(DeployError::BadReceipt { path, reason }),
        }
    };
    // A deploy of this plan that was cut off before its receipt: only running it again
    // finishes it or cleans up after it. (A run stopped by drift before it wrote anything
    // leaves only recheck records.)
    let records = journal::read_records(&local.with_file_name("journal.jsonl")).unwrap_or_default();
    let history = journal::history_of(&records);
    let unfinished = cut_off_before_receipt(&history);
    // The local receipt is written once per deploy and never removed: while such a cut-off
    // deploy is in the journal, a receipt there is an earlier deploy's of the same plan (rolled
    // back since, here or from elsewhere), which would remove the cut-off run's lock and host
    // journal, reset its journal and strand its staging.
    if !unfinished {
        if let Ok(bytes) = std::fs::read(&local) {
            let mine = parse(&bytes, local.clone())?;
            // This machine's receipt may describe an earlier deploy of the plan, rolled back
            // from another machine, which then deployed the plan again: the tree there is that
            // deploy's, and its receipt is the host's. Taken only when the target's deploy
            // manifest is the one the host's receipt records and not the one this machine's
            // does.
            let here = remote
                .read_file(&names.target.join(super::DEPLOY_MANIFEST), 1 << 30)
                .ok()
                .map(|text| Digest::of(&text));
            if here.is_some_and(|d| d != mine.deploy_manifest_sha256) {
                let theirs_bytes = remote.read_file(&names.host_receipt, 1 << 30).ok();
                // A later sealpush's receipt may be that deploy's: said, rather than this
                // machine's receipt taken for a tree it does not describe.
                if let Some(Err(e @ ReceiptError::Newer { .. })) =
                    theirs_bytes.as_deref().map(Receipt::from_json)
                {
                    return Err(DeployError::BadReceipt {
                        path: names.host_receipt.clone(),
                        reason: e.to_string(),
                    });
                }
                let theirs = theirs_bytes.and_then(|b| parse(&b, names.host_receipt.clone()).ok());
                if let Some(theirs) = theirs.filter(|t| Some(t.deploy_manifest_sha256) == here) {
                    return Ok(theirs);
                }
            }
            return Ok(mine);
        }
    }
    match remote.read_file(&names.host_receipt, 1 << 30) {
        Ok(bytes) => parse(&bytes, names.host_receipt.clone()),
        Err(e) if e.is_not_found() => {
            // Say so rather than only "no receipt".
            if unfinished {
                return Err(DeployError::DeployUnfinished {
                    plan: plan.digest,
                    journal: local.with_file_name("journal.jsonl"),
                });
            }
            Err(DeployError::NoReceipt {
                plan: plan.digest,
                looked: vec![local, names.host_receipt.clone()],
            })
        }
        Err(e) => Err(at("read receipt")(e)),
    }
}

/// A deploy of the plan whose journal this is was cut off before it wrote its receipt: only
/// running it again finishes it or cleans up after it. (A run stopped by drift before it
/// wrote anything leaves only recheck records.)
fn cut_off_before_receipt(history: &journal::History) -> bool {
    history.intended(journal::Step::WorkDir)
        && !history.done(journal::Step::Receipt)
        && !history.done(journal::Step::Finished)
}

/// Why `receipt` is not the record of `plan`'s deploy, if it is not. A receipt is found by the
/// plan's name for it, and the host's copy can be edited by anyone who may write there; the
/// plan is what the user chose, so where the two disagree on what to remove or what to leave
/// alone, the receipt is refused rather than obeyed.
fn plan_mismatch(receipt: &Receipt, plan: &SealedPlan, names: &super::Names) -> Option<String> {
    let mut out = Vec::new();
    let mut differs = |what: &str, theirs: String, ours: String| {
        if theirs != ours {
            out.push(format!("{what} {theirs}, the plan's {ours}"));
        }
    };
    let show = |p: &Path| p.display().to_string();
    differs(
        "its plan digest is",
        receipt.plan_digest.to_hex(),
        plan.digest.to_hex(),
    );
    differs("its target is", show(&receipt.target), show(&names.target));
    differs(
        "its staging is",
        show(&receipt.staging),
        show(&names.staging),
    );
    differs(
        "its work dir is",
        show(&receipt.work_dir),
        show(&names.work_dir),
    );
    differs(
        "its archive sha256 is",
        receipt.artifact.archive_sha256.to_hex(),
        plan.plan.artifact.archive_sha256.to_hex(),
    );
    let anchor = |a: Option<(&Path, Digest)>| {
        a.map_or("none".to_string(), |(p, d)| {
            format!("{} ({d})", p.display())
        })
    };
    differs(
        "its anchor is",
        anchor(
            receipt
                .anchor
                .as_ref()
                .map(|a| (a.path.as_path(), a.expected)),
        ),
        anchor(
            plan.plan
                .anchor
                .as_ref()
                .map(|a| (a.path.as_path(), a.recipe_digest)),
        ),
    );
    if let Some(k) = &receipt.kept_archive {
        differs("its kept archive is", show(k), show(&names.kept_archive));
    }
    for c in &receipt.created {
        let known = [
            &names.work_root,
            &names.work_dir,
            &names.journal_dir,
            &names.kept_archive,
            &names.host_receipt,
        ];
        if !known.contains(&&c.path) {
            out.push(format!(
                "it lists {} as created, which the plan's deploy never makes",
                c.path.display()
            ));
        }
    }
    (!out.is_empty()).then(|| {
        format!(
            "it is not the receipt of this plan's deploy ({}); roll back with the plan that made it, or with its own receipt",
            out.join("; ")
        )
    })
}

/// Removes the host journal directory: its record files (`NNNNNN-step-phase`) and verify
/// lists (`sha256sums-*.txt`), then the directory. Anything else in it stays (and so does the
/// directory).
pub fn remove_journal_dir(remote: &dyn Remote, dir: &Path) -> Result<(), DeployError> {
    let entries = match remote.read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(at("remove journal")(e)),
    };
    let mut doomed: Vec<(PathBuf, bool)> = entries
        .iter()
        .filter(|e| {
            let n = &e.name;
            let record = n.len() > 7 && n[..6].iter().all(u8::is_ascii_digit) && n[6] == b'-';
            let list = n.starts_with(b"sha256sums-") && n.ends_with(b".txt");
            e.meta.kind == FileKind::File && (record || list)
        })
        .map(|e| (shape::join(dir, &e.name), false))
        .collect();
    doomed.push((dir.to_path_buf(), true));
    // The files' results first, the directory's last: the first error in that order.
    for r in remote.remove_all(&doomed, &crate::progress::NoProgress) {
        match r {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(at("remove journal")(e)),
        }
    }
    Ok(())
}

/// Removes what the deploy of `receipt` created (see the module docs).
pub fn rollback(
    remote: &dyn Remote,
    receipt: &Receipt,
    opts: &RollbackOptions,
    progress: &dyn Progress,
) -> Result<RollbackReport, DeployError> {
    // This plan's local journal, held (see `Journal::open`) for the whole rollback: a deploy
    // of the same plan running on this machine meanwhile would be undone under its feet.
    // Made only when the rollback writes to it: one that refuses its receipt leaves no state.
    // Until then it is not held; a run of the plan that starts the journal in that window
    // makes this rollback stop at its first record, before it changes anything.
    let mut journal = match &opts.local_state {
        Some(dir) => Some(journal::Journal::open_lazily(dir, &receipt.plan_digest)?),
        None => None,
    };
    // As `find_receipt` does for a plan, for a receipt given as such: while a deploy of its
    // plan cut off before its receipt is in this machine's journal, a receipt is an earlier
    // deploy's (the local copy is never removed), unless it is the one now on the host.
    // Rolling back with it would remove the cut-off run's lock and journal and strand its
    // staging.
    if let Some(j) = &journal {
        if cut_off_before_receipt(&j.history) {
            let on_host = super::host_receipt_path(
                &crate::preflight::work_dir_for(&receipt.target),
                &receipt.plan_digest,
            );
            let current = remote
                .read_file(&on_host, 1 << 30)
                .ok()
                .and_then(|b| Receipt::from_json(&b).ok())
                .is_some_and(|h| h == *receipt);
            if !current {
                return Err(DeployError::EarlierReceipt {
                    plan: receipt.plan_digest,
                    journal: j.path().to_path_buf(),
                });
            }
        }
    }
    rollback_in(remote, receipt, opts, journal.as_mut(), None, progress)
}

/// [`rollback`], journalled in `journal` (the plan's, which the caller holds; the deploy's
/// own for `--rollback-on-check-failure`). `held`: the target's lock, already held by the
/// caller (the deploy, for its automatic rollback), used as the rollback's own and released
/// by it, so that no other run can take the target between the deploy and its rollback. On
/// an error before the rollback released it, the caller still holds it.
pub(super) fn rollback_in(
    remote: &dyn Remote,
    receipt: &Receipt,
    opts: &RollbackOptions,
    mut journal: Option<&mut journal::Journal>,
    held: Option<&mut HostLock>,
    progress: &dyn Progress,
) -> Result<RollbackReport, DeployError> {
    let target = receipt.target.clone();
    receipt_shape(receipt)?;
    if let Some(a) = &receipt.anchor {
        if target == a.path || target.starts_with(&a.path) || a.path.starts_with(&target) {
            return Err(DeployError::BadReceipt {
                path: target,
                reason: format!("target overlaps the anchor {}", a.path.display()),
            });
        }
    }
    // Everything the rollback touches outside the tree lives in the target's own work dir, as
    // the deploy made it: a receipt (edited, or copied from elsewhere) that puts it anywhere
    // else, the anchor say, is refused before anything is read or moved there.
    let work_dir = crate::preflight::work_dir_for(&target);
    let mut outside: Vec<String> = receipt
        .kept_archive
        .iter()
        .chain(receipt.created.iter().map(|c| &c.path))
        .filter(|p| {
            **p != work_dir && !p.starts_with(&work_dir) && Some(p.as_path()) != work_dir.parent()
        })
        .map(|p| p.display().to_string())
        .collect();
    if receipt.work_dir != work_dir {
        outside.push(format!("its work dir {}", receipt.work_dir.display()));
    }
    if !outside.is_empty() {
        return Err(DeployError::BadReceipt {
            path: target,
            reason: format!(
                "it names {} outside the target's work dir {}, where a deploy keeps what it makes beside the tree; nothing was touched",
                outside.join(", "),
                work_dir.display()
            ),
        });
    }
    // `.sealpush`, the work dir, the target and the aside name, in one round trip.
    let aside = aside_path(receipt);
    let work_root = work_dir.parent().unwrap_or(Path::new("/")).to_path_buf();
    let [at_root, at_work, at_target, at_aside]: [_; 4] = remote
        .lstats(&[
            work_root.clone(),
            work_dir.clone(),
            target.clone(),
            aside.clone(),
        ])
        .try_into()
        .expect("one result per path");
    // The work dir and `.sealpush` must be directories, never symlinks: the deploy refuses
    // them otherwise, and the move aside and the bookkeeping would go where a link points.
    let mut missing = Vec::new();
    for (dir, meta) in [(&work_root, at_root), (&work_dir, at_work)] {
        match meta.map_err(at("rollback"))? {
            Some(m) if m.kind != FileKind::Dir => {
                return Err(DeployError::Foreign {
                    path: dir.clone(),
                    kind: super::kind_name(m.kind),
                })
            }
            Some(_) => {}
            None => missing.push(dir.clone()),
        }
    }
    let mut at_target = at_target.map_err(at("rollback"))?;
    let mut at_aside = at_aside.map_err(at("rollback"))?;
    // The host lock, as a deploy takes it (`super::lock`), held from before the tree is
    // examined until after the host's receipt and journal are gone: a deploy or another
    // rollback of this target cannot run meanwhile, and a lock someone else holds stops the
    // rollback before it removes anything.
    let mut own = HostLock::new(
        &work_dir,
        receipt.plan_digest,
        &target,
        LockAction::Rollback,
    );
    let lock = match held {
        Some(l) if l.holds() && l.path == own.path => l,
        _ => &mut own,
    };
    // Work dirs this run made to hold its lock.
    let mut made = Vec::new();
    if !missing.is_empty() && at_target.is_some() {
        // The tree is there but its work dir is not (removed by hand): made as the deploy
        // makes it, to hold the lock, and removed again at the end.
        record(
            &mut journal,
            remote,
            journal::Step::Lock,
            journal::Phase::Intent,
            format!(
                "creating {} to hold the lock",
                missing
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )?;
        for dir in missing.drain(..) {
            match remote.mkdir(&dir, 0o700) {
                Ok(()) => made.push(dir),
                // A run made it a moment ago: fine if a directory, never a symlink.
                Err(RemoteError::Exists { .. }) => {
                    if let Err(e) = super::made_meanwhile(remote, &dir) {
                        remove_made(remote, &made);
                        return Err(e);
                    }
                }
                Err(e) => {
                    remove_made(remote, &made);
                    return Err(at("work dir")(e));
                }
            }
        }
    }
    // The lock, in the work dir that is there (or was just made). With no work dir and no
    // tree, nothing of the deploy is on the host and no deploy of this target can be running
    // (it keeps its lock there): no lock then, and nothing changes on the host, where making
    // the work dir only to lock it would leave it behind.
    if missing.is_empty() && !lock.holds() {
        if let Err(e) = lock.take(remote, &mut journal, opts.clear_stale_lock) {
            remove_made(remote, &made);
            return Err(lock.explain_unanswered(e, "nothing of the deploy was removed"));
        }
        // Looked at again under the lock: a run that held it may have moved or removed the
        // tree meanwhile.
        let [t, a]: [_; 2] = remote
            .lstats(&[target.clone(), aside.clone()])
            .try_into()
            .expect("one result per path");
        let looked = t.and_then(|t| Ok((t, a?)));
        match looked {
            Ok((t, a)) => (at_target, at_aside) = (t, a),
            Err(e) => {
                let _ = lock.release(remote, &mut journal);
                remove_made(remote, &made);
                return Err(at("rollback")(e));
            }
        }
    }
    let removed = remove_under_lock(remote, receipt, opts, progress, at_target, at_aside);
    // Released however the removal ended; a rollback cut off by a kill leaves it to its
    // rerun, which takes it over (a dead run of this plan).
    let released = lock.release(remote, &mut journal);
    let (mut report, tidy) = match (removed, released) {
        (Ok(r), Ok(())) => r,
        (Err(e), Ok(())) => {
            remove_made(remote, &made);
            return Err(e);
        }
        // What the removal kept (a name someone added to the tree, say) is said with the lock:
        // the rerun takes the lock over but keeps those again.
        (Ok((r, _)), Err(e)) => {
            let done = if r.kept.is_empty() {
                "everything else of the deploy was removed, but".to_string()
            } else {
                format!(
                    "the rollback kept {} (remove or move them, then roll back again), and",
                    r.kept.join("; ")
                )
            };
            return Err(DeployError::WithLeftovers {
                error: Box::new(e),
                note: format!(
                    "; {done} the rollback's lock {} may be left: running the same rollback again takes it over and finishes",
                    lock.path.display()
                ),
            });
        }
        (Err(e), Err(left)) => {
            return Err(DeployError::WithLeftovers {
                error: Box::new(e),
                note: format!(
                    "; the rollback's lock {} is left too ({left}): running the same rollback again takes it over",
                    lock.path.display()
                ),
            })
        }
    };
    remove_made(remote, &made);
    if tidy {
        // The work dirs the deploy created, now that the lock is gone from them.
        let journal_dir = super::host_journal_dir(&receipt.work_dir, &receipt.plan_digest);
        for c in receipt.created.iter().rev() {
            if c.kind == CreatedKind::Dir && c.path != journal_dir {
                match remote.remove_dir(&c.path) {
                    Ok(()) => report.removed += 1,
                    Err(e) if e.is_not_found() => {}
                    // Another deploy's lock or journal lives there: it stays.
                    Err(_) => report
                        .kept
                        .push(format!("{} (in use by another deploy)", c.path.display())),
                }
            }
        }
    }
    finish(remote, receipt, report, journal, progress)
}

/// Removes the work dirs a rollback made to hold its lock, when they are empty again.
fn remove_made(remote: &dyn Remote, made: &[PathBuf]) {
    for dir in made.iter().rev() {
        let _ = remote.remove_dir(dir);
    }
}

/// Journals one record when the rollback keeps a journal.
fn record(
    journal: &mut Option<&mut journal::Journal>,
    remote: &dyn Remote,
    step: journal::Step,
    phase: journal::Phase,
    detail: impl Into<String>,
) -> Result<(), DeployError> {
    match journal {
        Some(j) => j.record(remote, step, phase, detail),
        None => Ok(()),
    }
}

/// Steps 1 and 2 and the host's receipt and journal: what the rollback does while it holds
/// the lock (or, with no work dir, needs none). Returns the report and whether the work dirs
/// may go too (nothing of the tree is kept).
fn remove_under_lock(
    remote: &dyn Remote,
    receipt: &Receipt,
    opts: &RollbackOptions,
    progress: &dyn Progress,
    at_target: Option<crate::remote::Meta>,
    at_aside: Option<crate::remote::Meta>,
) -> Result<(RollbackReport, bool), DeployError> {
    let target = receipt.target.clone();
    let aside = aside_path(receipt);
    let expected = receipt_shape(receipt)?;
    let mut report = RollbackReport {
        target: target.clone(),
        removed: 0,
        already_gone: 0,
        forced: Vec::new(),
        kept: Vec::new(),
        anchor: None,
        complete: false,
    };
    // Where the tree is: at the target while the target carries this deploy's manifest; else,
    // when an earlier rollback of it was cut off after moving it aside (step 2), in the work
    // dir, whatever is at the target now. (A directory planted under the aside name, with the
    // tree still at the target, must not stand in for the tree.) The manifest is read only
    // when both exist.
    let mut root = target.clone();
    if matches!(&at_aside, Some(m) if m.kind == FileKind::Dir) {
        let ours_at_target = match &at_target {
            Some(m) if m.kind == FileKind::Dir => {
                match remote.read_file(&target.join(DEPLOY_MANIFEST), 1 << 30) {
                    Ok(dm) => {
                        super::deploy_manifest_field(&dm, "plan_digest")
                            == Some(&receipt.plan_digest.to_hex())
                    }
                    Err(e) if e.is_not_found() => false,
                    Err(e) => return Err(at("rollback")(e)),
                }
            }
            _ => false,
        };
        if !ours_at_target {
            root = aside.clone();
        }
    }
    // 1. Examine everything before removing anything.
    let mut changed = Vec::new();
    let root_meta = if root == target { at_target } else { at_aside };
    let actual: Option<Shape> = match root_meta {
        None => None,
        Some(m) if m.kind != FileKind::Dir => {
            changed.push(format!(
                "{} is now {}, not the directory the deploy created",
                root.display(),
                super::kind_name(m.kind)
            ));
            None
        }
        Some(_) => {
            let mut s = shape::walk_expecting(remote, &root, &expected).map_err(at("rollback"))?;
            progress.start("checking", None, Some(s.len() as u64));
            let r = shape::hash_shape(remote, &root, &mut s, progress);
            progress.finish();
            r.map_err(at("rollback"))?;
            Some(s)
        }
    };
    if let Some(actual) = &actual {
        // A later deploy of another plan to the same target (this one rolled back since) is
        // not ours, however alike its tree: its deploy manifest names its plan.
        if let Some(Kind::File { .. }) = actual.get(DEPLOY_MANIFEST.as_bytes()) {
            let dm = remote
                .read_file(&root.join(DEPLOY_MANIFEST), 1 << 30)
                .map_err(at("rollback"))?;
            let theirs = super::deploy_manifest_field(&dm, "plan_digest");
            if let Some(theirs) = theirs.filter(|t| *t != receipt.plan_digest.to_hex()) {
                return Err(DeployError::NotThisDeploy {
                    target,
                    theirs: theirs.to_string(),
                    ours: receipt.plan_digest,
                });
            }
        }
        // Only a tree that carries its deploy manifest is one a deploy made: a receipt edited
        // to name another directory (the anchor, with the anchor left out of it) and a tree
        // listing that matches it must not get that directory removed. The manifest is
        // removed last (step 2), so a rollback cut off in place still finds it; the tree moved
        // aside into the work dir is the rollback's own.
        if root == target
            && !actual.contains_key(DEPLOY_MANIFEST.as_bytes())
            && !shape::removal(&expected, actual).ours.is_empty()
        {
            return Err(DeployError::NotADeploy { target });
        }
        for d in shape::compare(&expected, actual) {
            if let shape::Difference::Changed { .. } = d {
                changed.push(format!("{}/{d}", root.display()))
            }
        }
    }
    let archive_ok = match &receipt.kept_archive {
        Some(p) => match remote.lstat(p).map_err(at("rollback"))? {
            None => None,
            Some(m) if m.kind != FileKind::File => {
                changed.push(format!("{} is no longer a file", p.display()));
                Some(false)
            }
            Some(_) => {
                let got = remote
                    .hash_files(std::slice::from_ref(p), progress)
                    .pop()
                    .expect("one result")
                    .map_err(at("rollback"))?
                    .0;
                if got != receipt.artifact.archive_sha256 {
                    changed.push(format!(
                        "{}: expected sha256 {}, found {got}",
                        p.display(),
                        receipt.artifact.archive_sha256
                    ));
                }
                Some(got == receipt.artifact.archive_sha256)
            }
        },
        None => None,
    };
    if !changed.is_empty() && !opts.force {
        return Err(DeployError::RollbackRefused { changed });
    }
    report.forced = changed;
    // 2. Remove: files and symlinks, then directories children first, then the target.
    let gone_ok =
        |r: Result<(), RemoteError>, report: &mut RollbackReport| -> Result<bool, DeployError> {
            match r {
                Ok(()) => {
                    report.removed += 1;
                    Ok(true)
                }
                Err(e) if e.is_not_found() => {
                    report.already_gone += 1;
                    Ok(false)
                }
                Err(e) => Err(at("rollback")(e)),
            }
        };
    if let Some(actual) = &actual {
        // Everything the deploy created and that is still of its kind, then the target itself
        // (the shallowest directory, so removed last).
        let mut plan = shape::removal(&expected, actual);
        stop_if_interrupted("rollback", "nothing was removed yet")?;
        // 2. The tree leaves the target in one rename, into the work dir: from then on the
        // target is absent, however the rest of the rollback ends, and a rollback run again
        // finds what is left there. Only a tree of nothing but the deploy's own entries moves:
        // a name someone added stays where they put it, and the tree is removed in place.
        // The fault tests' `wait-before:cleanup:FILE` pauses here, checked, not yet moved.
        journal::wait_point(journal::Step::Cleanup);
        // A rename that got no answer (a stalled or lost connection) may still be carried out
        // by the host: where the tree is is not known here, and nothing is removed.
        let unanswered = |e: RemoteError, now: String| {
            if !e.went_unanswered() {
                return Ok(());
            }
            Err(DeployError::Remote {
                step: "rollback",
                cause: e,
                note: format!(
                    "; nothing was removed; the host may still carry out that rename, so the tree is {now}; run the rollback again, which finds it in either place"
                ),
            })
        };
        if root == target && plan.extra.is_empty() && plan.replaced.is_empty() {
            // Refused (another filesystem, a name in the way): removed in place, as before.
            let moved = match remote.rename_noreplace(&target, &aside) {
                Ok(()) => true,
                Err(e) => {
                    unanswered(
                        e,
                        format!("at {} or in {}", target.display(), aside.display()),
                    )?;
                    false
                }
            };
            if moved {
                root = aside.clone();
                // A name added while the tree was being checked (seconds, on a large tree)
                // moved with it. The work dir is private (0700), so this listing sees every
                // such name; if there is one, the tree goes back to the target, to be removed
                // in place around it.
                let now =
                    shape::walk_expecting(remote, &aside, &expected).map_err(at("rollback"))?;
                let again = shape::removal(&expected, &now);
                if !again.extra.is_empty() || !again.replaced.is_empty() {
                    match remote.rename_noreplace(&aside, &target) {
                        Ok(()) => root = target.clone(),
                        Err(e) => unanswered(
                            e,
                            format!("in {} or back at {}", aside.display(), target.display()),
                        )?,
                    }
                    plan = again;
                }
            }
        }
        // The fault tests' `wait-before:reset:FILE` pauses here, the tree moved, none removed.
        journal::wait_point(journal::Step::Reset);
        report.already_gone += plan.gone;
        // A changed entry of another kind (a file replaced by a directory) is not ours.
        for p in &plan.replaced {
            report.kept.push(format!(
                "{} (replaced by someone else)",
                shape::join(&root, p).display()
            ));
        }
        for p in &plan.extra {
            report.kept.push(format!(
                "{} (not created by the deploy)",
                shape::join(&root, p).display()
            ));
        }
        // Everything but the deploy manifest, then the manifest and the root (see step 1).
        let manifest = DEPLOY_MANIFEST.as_bytes();
        let doomed: Vec<(PathBuf, bool)> = plan
            .ours
            .iter()
            .filter(|(p, _)| p != manifest)
            .map(|(p, dir)| (shape::join(&root, p), *dir))
            .collect();
        let mut last = Vec::new();
        if plan.ours.iter().any(|(p, _)| p == manifest) {
            last.push((shape::join(&root, manifest), false));
        }
        last.push((root.clone(), true));
        let left = if root == target {
            format!("the target {} is partly removed", target.display())
        } else {
            format!(
                "the target {} is gone; what is left of it is in {}",
                target.display(),
                root.display()
            )
        };
        stop_if_interrupted(
            "rollback",
            &format!("{left}; run the rollback again to finish"),
        )?;
        progress.start("removing", None, Some((doomed.len() + last.len()) as u64));
        // Moved aside, the tree is in the private work dir, where nobody adds names and no
        // rerun needs the manifest as a mark: one round, one round trip fewer.
        let (doomed, last) = if root == aside {
            (doomed.into_iter().chain(last).collect(), Vec::new())
        } else {
            (doomed, last)
        };
        let first = remove_round(remote, &doomed, &mut report, progress);
        // The manifest and the root go only when nothing else of the tree is kept: a rerun
        // after the user moved their names away must still find the manifest.
        let rest = match first {
            Ok(()) if last.is_empty() => Ok(()),
            Ok(()) if report.kept.is_empty() => remove_round(remote, &last, &mut report, progress),
            Ok(()) => {
                report.kept.push(format!(
                    "{} (with its {DEPLOY_MANIFEST}, until the names above are gone)",
                    root.display()
                ));
                Ok(())
            }
            Err(e) => Err(e),
        };
        progress.finish();
        if let Err(e) = rest {
            return Err(DeployError::Remote {
                step: "rollback",
                cause: e,
                note: format!("; {left}; run the rollback again to finish"),
            });
        }
    }
    if let (Some(p), Some(ok)) = (&receipt.kept_archive, archive_ok) {
        if ok || opts.force {
            gone_ok(remote.remove_file(p), &mut report)?;
        }
    }
    // Bookkeeping: host receipt, journal, lock of this plan (a crashed run's), work dirs. Only
    // once the tree is wholly gone: until then the host's receipt is what lets a rollback run
    // from anywhere finish the job.
    if !report.kept.is_empty() {
        return Ok((report, false));
    }
    let host_receipt = super::host_receipt_path(&receipt.work_dir, &receipt.plan_digest);
    let journal_dir = super::host_journal_dir(&receipt.work_dir, &receipt.plan_digest);
    match remote.lstat(&host_receipt).map_err(at("rollback"))? {
        Some(m) if m.kind == FileKind::File => {
            gone_ok(remote.remove_file(&host_receipt), &mut report)?;
        }
        _ => {}
    }
    remove_journal_dir(remote, &journal_dir)?;
    // A lock left by a run of this very deploy killed between its receipt and its unlock was
    // taken over when the rollback took its own, which it releases next.
    Ok((report, true))
}

/// Removes `doomed` (see `Remote::remove_all`), counting into `report`: a directory that is
/// not empty holds names someone else put there, which stay, and it is kept; the first other
/// error is returned.
fn remove_round(
    remote: &dyn Remote,
    doomed: &[(PathBuf, bool)],
    report: &mut RollbackReport,
    progress: &dyn Progress,
) -> Result<(), RemoteError> {
    let mut failed = None;
    for ((path, dir), r) in doomed.iter().zip(remote.remove_all(doomed, progress)) {
        match r {
            Ok(()) => report.removed += 1,
            Err(e) if e.is_not_found() => report.already_gone += 1,
            Err(_) if *dir => report.kept.push(format!(
                "{} (holds names the deploy did not create)",
                path.display()
            )),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Step 3: re-proves the anchor; a complete rollback resets the plan's local journal, so the
/// plan can be deployed again.
fn finish(
    remote: &dyn Remote,
    receipt: &Receipt,
    mut report: RollbackReport,
    journal: Option<&mut journal::Journal>,
    progress: &dyn Progress,
) -> Result<RollbackReport, DeployError> {
    let mut anchor_ok = true;
    if let Some(a) = &receipt.anchor {
        let (actual, actual_identity) = anchor::survey(remote, &a.path, progress)?;
        anchor_ok = actual == a.expected && actual_identity == a.expected_identity;
        report.anchor = Some(super::receipt::AnchorProof {
            path: a.path.clone(),
            expected: a.expected,
            actual,
            expected_identity: a.expected_identity,
            actual_identity,
        });
    }
    report.complete = report.kept.is_empty() && anchor_ok;
    if let (Some(j), true) = (journal, report.complete) {
        j.record(
            remote,
            journal::Step::Reset,
            journal::Phase::Done,
            "rolled back",
        )?;
    }
    Ok(report)
}

/// The entries of `target`'s work dir (`PARENT/.sealpush/NAME/`), sorted; none when there is
/// no work dir.
fn work_dir_listing(remote: &dyn Remote, target: &Path) -> Result<Vec<PathBuf>, DeployError> {
    let dir = crate::preflight::work_dir_for(target);
    let mut out: Vec<PathBuf> = match remote.read_dir(&dir) {
        Ok(entries) => entries.iter().map(|e| shape::join(&dir, &e.name)).collect(),
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(at("status")(e)),
    };
    out.sort();
    Ok(out)
}

/// The first entry of a [`work_dir_listing`] whose name starts with `prefix`.
fn first_named<'a>(listing: &'a [PathBuf], prefix: &str) -> Option<&'a PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    listing.iter().find(|p| {
        p.file_name()
            .is_some_and(|n| n.as_bytes().starts_with(prefix.as_bytes()))
    })
}

/// The name prefix of a tree a rollback moved aside (see [`aside_path`]); deploy, preflight and
/// status look for it too.
pub const ASIDE_PREFIX: &str = "rolling-back-";

/// Where a rollback moves the deployed tree before removing it: `<work dir>/rolling-back-<plan
/// 16 hex>`, beside the receipt, on the target's filesystem.
pub fn aside_path(receipt: &Receipt) -> PathBuf {
    receipt.work_dir.join(format!(
        "{ASIDE_PREFIX}{}",
        &receipt.plan_digest.to_hex()[..16]
    ))
}

/// A safe point: after a Ctrl-C (see `sealpush::interrupt`), stops with what `state` says.
fn stop_if_interrupted(step: &'static str, state: &str) -> Result<(), DeployError> {
    if crate::interrupt::requested() {
        return Err(DeployError::Interrupted {
            step,
            state: state.to_string(),
        });
    }
    Ok(())
}

/// Seed-style report of a rollback.
pub fn render_rollback(r: &RollbackReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "1. Rollback");
    let _ = writeln!(s, "target: {}", r.target.display());
    let _ = writeln!(s, "removed: {}", r.removed);
    let _ = writeln!(s, "already_gone: {}", r.already_gone);
    if r.removed == 0 && r.already_gone == 0 && r.kept.is_empty() {
        let _ = writeln!(s, "note: nothing of this deploy was left on the host");
    }
    for f in &r.forced {
        let _ = writeln!(s, "forced: {f}");
    }
    for k in &r.kept {
        let _ = writeln!(s, "kept: {k}");
    }
    let _ = writeln!(s, "2. Anchor");
    super::receipt::render_anchor(&mut s, r.anchor.as_ref());
    let _ = writeln!(s, "verdict: {}", if r.complete { "PASS" } else { "FAIL" });
    s
}

/// What `status` found (`status --json` prints it as is).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StatusReport {
    pub target: PathBuf,
    pub plan_digest: Option<Digest>,
    /// Where the receipt was read from, if found.
    pub receipt: Option<PathBuf>,
    pub deployed: Option<String>,
    pub artifact_identity: Option<Digest>,
    pub files_checked: u64,
    pub bytes_checked: u64,
    /// Every difference found; empty means the target is exactly as deployed.
    pub problems: Vec<String>,
}

impl StatusReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Re-verifies a deployed target: its DEPLOY-MANIFEST.txt, its receipt in the work dir beside
/// it, and every byte of its files read back over the transport.
pub fn status(
    remote: &dyn Remote,
    target: &Path,
    progress: &dyn Progress,
) -> Result<StatusReport, DeployError> {
    let mut report = StatusReport {
        target: target.to_path_buf(),
        plan_digest: None,
        receipt: None,
        deployed: None,
        artifact_identity: None,
        files_checked: 0,
        bytes_checked: 0,
        problems: Vec::new(),
    };
    let root_meta = match remote.lstat(target).map_err(at("status"))? {
        None => {
            let mut problem = format!("{} does not exist", target.display());
            // One listing of the work dir answers them all: a tree moved aside, a journal, its
            // receipt, a lock's temp file.
            let listing = work_dir_listing(remote, target)?;
            if let Some(p) = first_named(&listing, ASIDE_PREFIX) {
                problem.push_str(&format!(
                    ": a rollback of its deploy was cut off, and what is left of the tree is in {}; run `sealpush rollback` on its plan or receipt again to finish",
                    p.display()
                ));
            } else if let Some(j) = first_named(&listing, "journal-") {
                // A host journal stays after a deploy, finished or cut off; its receipt beside
                // it says which.
                let receipt = j.with_file_name(format!(
                    "receipt-{}.json",
                    j.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_prefix("journal-"))
                        .unwrap_or_default()
                ));
                problem.push_str(&if listing.contains(&receipt) {
                    format!(
                        ": its deploy finished (receipt {}), and the target was removed since, not by `sealpush rollback`",
                        receipt.display()
                    )
                } else {
                    format!(
                        ": a deploy of it was cut off before its promote (its journal is {}); run `sealpush deploy` on that plan again, which finishes it or removes what it staged",
                        j.display()
                    )
                });
            } else if let Some(t) = first_named(&listing, super::LOCK_TEMP_PREFIX) {
                // Made before the host journal: a deploy that got no further than its lock, or
                // a rollback (which also takes it) cut off while taking it.
                problem.push_str(&format!(
                    ": a deploy or rollback of it is taking its lock or was cut off while taking it, and left {}, the file it writes the lock in; run `sealpush deploy` on that plan again (`sealpush rollback`, if it was a rollback), which removes it",
                    t.display()
                ));
            }
            report.problems.push(problem);
            return Ok(report);
        }
        Some(m) if m.kind != FileKind::Dir => {
            report.problems.push(format!(
                "{} is {}, not a deployed directory",
                target.display(),
                super::kind_name(m.kind)
            ));
            return Ok(report);
        }
        Some(m) => m,
    };
    let dm_path = target.join(DEPLOY_MANIFEST);
    let dm = match remote.read_file(&dm_path, 1 << 30) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            // A rollback removes the deploy manifest last of the tree, and the receipt after
            // it: a receipt with no manifest means the file was removed by someone else.
            let listing = work_dir_listing(remote, target)?;
            report.problems.push(match first_named(&listing, "receipt-") {
                None => format!("{} is missing: not a sealpush deploy", dm_path.display()),
                Some(r) => format!(
                    "{} is missing, though {} records a deploy here: the file was removed, and without it neither status nor rollback takes this tree for the deploy's (if nothing but the target's root is left, a rollback was cut off: `sealpush rollback` on its plan, or on a local copy of that receipt, finishes it)",
                    dm_path.display(),
                    r.display()
                ),
            });
            return Ok(report);
        }
        Err(e) => return Err(at("status")(e)),
    };
    report.plan_digest =
        super::deploy_manifest_field(&dm, "plan_digest").and_then(Digest::from_hex);
    report.deployed = super::deploy_manifest_field(&dm, "deployed").map(str::to_string);
    report.artifact_identity =
        super::deploy_manifest_field(&dm, "tree_identity").and_then(Digest::from_hex);
    // The receipt beside the target.
    let receipt = match report.plan_digest {
        Some(pd) => {
            let p = super::host_receipt_path(&crate::preflight::work_dir_for(target), &pd);
            match remote.read_file(&p, 1 << 30) {
                Ok(b) => match Receipt::from_json(&b) {
                    Ok(r) => {
                        report.receipt = Some(p);
                        Some(r)
                    }
                    Err(e) => {
                        report
                            .problems
                            .push(format!("receipt {}: {e}", p.display()));
                        None
                    }
                },
                Err(e) if e.is_not_found() => {
                    let journal =
                        super::host_journal_dir(&crate::preflight::work_dir_for(target), &pd);
                    // A journal that records the receipt written: it was removed since, by
                    // hand; one that does not: the deploy was cut off before writing it.
                    let receipt_written = match remote.read_dir(&journal) {
                        Ok(records) => {
                            Some(records.iter().any(|r| r.name.ends_with(b"-receipt-done")))
                        }
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(at("status")(e)),
                    };
                    report.problems.push(match receipt_written {
                        Some(true) => format!(
                            "receipt {} is missing: the deploy wrote it (its journal {} says so), and it was removed since",
                            p.display(),
                            journal.display()
                        ),
                        Some(false) => format!(
                            "receipt {} is missing: the deploy was cut off after its promote (its journal is {}); run `sealpush deploy` on that plan again to finish it (prove, receipt)",
                            p.display(),
                            journal.display()
                        ),
                        None => format!("receipt {} is missing", p.display()),
                    });
                    None
                }
                Err(e) => return Err(at("status")(e)),
            }
        }
        None => {
            report
                .problems
                .push(format!("{} names no plan digest", dm_path.display()));
            None
        }
    };
    // Expected: the receipt's tree, else the deploy manifest's file list.
    let dm_digest = Digest::of(&dm);
    let listed: Vec<(Vec<u8>, Digest)> = shape::parse_sha256sum_lines(&dm);
    let mut expected: Shape = match &receipt {
        Some(r) => {
            // The tree may be intact and still not a good deploy: its --check failed (and it
            // was not rolled back). Said here, or status would pass what the deploy failed.
            if !r.verdict.pass {
                report.problems.push(format!(
                    "the deploy's verdict was FAIL ({}); the tree was left in place: `sealpush rollback` on its plan or receipt removes it",
                    r.verdict.reasons.join("; ")
                ));
            }
            if r.deploy_manifest_sha256 != dm_digest {
                report.problems.push(format!(
                    "{}: expected sha256 {} (receipt), found {dm_digest}",
                    dm_path.display(),
                    r.deploy_manifest_sha256
                ));
            }
            receipt_shape(r)?
        }
        None => listed
            .iter()
            .map(|(p, d)| {
                (
                    p.clone(),
                    Kind::File {
                        size: 0,
                        sha256: Some(*d),
                        executable: false,
                    },
                )
            })
            .collect(),
    };
    // Every line of the deploy manifest must agree with the receipt.
    if receipt.is_some() {
        for (p, d) in &listed {
            match expected.get(p) {
                Some(Kind::File {
                    sha256: Some(e), ..
                }) if e == d => {}
                _ => report.problems.push(format!(
                    "{}: lists {} with sha256 {d}, which the receipt does not",
                    dm_path.display(),
                    escape_path(p)
                )),
            }
        }
    }
    // Permission bits too: a file or directory opened up since the deploy is a change (the
    // shape itself keeps only the exec bit). Only for what the deploy wrote, whose modes it
    // set: what a `--check` created got the host's umask (the receipt marks it). Without a
    // receipt: the listed files, the deploy manifest and their directories.
    let mut written: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    match &receipt {
        Some(r) => {
            for e in r.tree.iter().filter(|e| !e.by_check) {
                written.extend(unescape_path(&e.path));
            }
        }
        None => {
            written.insert(DEPLOY_MANIFEST.as_bytes().to_vec());
            for (p, _) in &listed {
                let mut at = p.as_slice();
                written.insert(at.to_vec());
                while let Some(i) = at.iter().rposition(|&b| b == b'/') {
                    at = &at[..i];
                    written.insert(at.to_vec());
                }
            }
        }
    }
    let mut modes = Vec::new();
    let mut odd = |path: PathBuf, meta: &crate::remote::Meta| {
        if let Some(why) = shape::odd_mode(meta) {
            modes.push(format!(
                "{}: mode {:04o} ({why})",
                path.display(),
                meta.mode
            ));
        }
    };
    odd(target.to_path_buf(), &root_meta);
    let mut actual = shape::walk_seen(remote, target, Some(&expected), &mut |rel, meta| {
        if written.contains(rel) {
            odd(shape::join(target, rel), meta)
        }
    })
    .map_err(at("status"))?;
    report.problems.append(&mut modes);
    let files = actual
        .values()
        .filter(|k| matches!(k, Kind::File { .. }))
        .count() as u64;
    progress.start("verifying", None, Some(files));
    let r = shape::hash_shape(remote, target, &mut actual, progress);
    progress.finish();
    r.map_err(at("status"))?;
    for k in actual.values() {
        if let Kind::File { size, .. } = k {
            report.files_checked += 1;
            report.bytes_checked += size;
        }
    }
    if receipt.is_none() {
        // Without a receipt only the listed files' contents can be compared.
        expected.insert(
            DEPLOY_MANIFEST.as_bytes().to_vec(),
            actual
                .get(DEPLOY_MANIFEST.as_bytes())
                .cloned()
                .unwrap_or(Kind::Dir),
        );
        for (p, k) in actual.iter() {
            if !matches!(k, Kind::File { .. }) {
                expected.entry(p.clone()).or_insert_with(|| k.clone());
            }
        }
        for v in expected.values_mut() {
            if let Kind::File { size, .. } = v {
                *size = 0;
            }
        }
        for v in actual.values_mut() {
            if let Kind::File {
                size, executable, ..
            } = v
            {
                *size = 0;
                *executable = false;
            }
        }
    }
    for d in shape::compare(&expected, &actual) {
        report.problems.push(d.to_string());
    }
    Ok(report)
}

/// Seed-style report of a status check.
pub fn render_status(r: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "1. Deployed tree");
    let _ = writeln!(s, "target: {}", r.target.display());
    if let Some(p) = &r.plan_digest {
        let _ = writeln!(s, "plan: {p}");
    }
    if let Some(d) = &r.deployed {
        let _ = writeln!(s, "deployed: {d}");
    }
    if let Some(i) = &r.artifact_identity {
        let _ = writeln!(s, "tree_identity: {i}");
    }
    match &r.receipt {
        Some(p) => {
            let _ = writeln!(s, "receipt: {}", p.display());
        }
        None => {
            let _ = writeln!(s, "receipt: not found");
        }
    }
    let _ = writeln!(s, "2. Verification (every byte read back)");
    let _ = writeln!(s, "files_checked: {}", r.files_checked);
    let _ = writeln!(s, "bytes_checked: {}", r.bytes_checked);
    for p in &r.problems {
        let _ = writeln!(s, "problem: {p}");
    }
    let _ = writeln!(s, "verdict: {}", if r.ok() { "PASS" } else { "FAIL" });
    s
}
