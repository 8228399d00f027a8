//! The locked deploy plan: what preflight established, what the deploy will do, in order, and
//! how each step is undone. Written before any host mutation; sealed by its own digest so the
//! deploy can refuse a plan edited without recomputing it. The digest is a checksum, not a
//! signature: whoever can write the plan can recompute it, so the deploy re-checks on the host
//! everything its safety rests on (see `store-layout.md`, `## Plan`).
//!
//! Pure: values in, values out. The file format is documented in `store-layout.md`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::remote::{ExecOutput, FsStats, HostFacts};
use crate::stamp::FileStamp;

/// Current plan format version.
pub const PLAN_FORMAT: u32 = 1;

/// A locked plan. Serialized as pretty JSON with a trailing `"digest"` (see [`SealedPlan`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: u32,
    pub tool_version: String,
    /// UTC, RFC 3339 (`2026-05-21T10:00:00Z`).
    pub created: String,
    pub host: HostRef,
    pub facts: HostFacts,
    pub artifact: ArtifactRef,
    /// Absolute path the tree is promoted to. Must not exist.
    pub target: PathBuf,
    /// statvfs of the target's parent at preflight time.
    pub target_fs: FsStats,
    /// The old version that must stay byte-identical.
    pub anchor: Option<Anchor>,
    /// Fresh, unguessable staging directory (same filesystem as the target).
    pub staging: PathBuf,
    /// Directory beside the target for sealpush's lock, journal, receipt and kept archives
    /// (`<parent>/.sealpush/<target name>/`).
    pub work_dir: PathBuf,
    /// The ordered operations the deploy performs.
    pub operations: Vec<Operation>,
    /// Undo, in the order to run it: removes only what the operations create.
    pub rollback: Vec<Operation>,
    /// Every check preflight made, with its evidence.
    pub checks: Vec<Check>,
    /// Output of `--probe` commands.
    pub probes: Vec<ExecOutput>,
    pub verdict: Verdict,
}

/// How to reach the host again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRef {
    /// As the user gave it (`contabo`, `root@host`, `local`).
    pub destination: String,
    /// "sftp" or "local".
    pub transport: String,
    pub ssh_config: Option<PathBuf>,
}

/// The artifact to deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// Local path of the archive (normally inside the store).
    pub path: PathBuf,
    /// "tar.zst" or "tar.gz".
    pub format: String,
    pub archive_sha256: Digest,
    pub archive_size: u64,
    /// sha256 of the artifact's canonical manifest.
    pub tree_identity: Digest,
    /// Recipe digest of the tree (C locale) as recorded in its manifest.
    pub recipe_digest: Digest,
    pub files: u64,
    /// Sum of file sizes once unpacked.
    pub unpacked_bytes: u64,
    /// The archive's stamp when preflight hashed it, if the stamp could vouch for the bytes
    /// hashed (see [`crate::stamp`]): the deploy does not hash a file that still has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_stamp: Option<FileStamp>,
}

/// The old version next to the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub path: PathBuf,
    /// `cd <parent> && find <name> -type f | sort | xargs sha256sum | sha256sum`, computed by
    /// sealpush over the transport.
    pub recipe_digest: Digest,
    /// The collation locale the digest was computed in ("C" unless the user chose another).
    pub recipe_locale: String,
    /// Identity of the anchor's manifest.
    pub tree_identity: Digest,
    pub files: u64,
    pub bytes: u64,
}

/// One step of a deploy or a rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Operation {
    /// Exclusive create of the lock file.
    TakeLock { path: PathBuf },
    /// Exclusive mkdir of the staging directory (mode 0700 until promote).
    MakeStaging { path: PathBuf },
    /// Upload the artifact's tree into the staging directory.
    Materialize {
        staging: PathBuf,
        files: u64,
        bytes: u64,
    },
    /// Upload the archive itself (`--keep-archive`).
    UploadArchive { path: PathBuf, sha256: Digest },
    /// Read every staged file back and compare with the manifest.
    VerifyStaged { staging: PathBuf },
    /// Write DEPLOY-MANIFEST.txt inside the staged tree.
    WriteDeployManifest { path: PathBuf },
    /// Rename staging to target; fails if the target exists in any form.
    Promote { from: PathBuf, to: PathBuf },
    /// Re-hash the anchor and the target.
    Prove,
    /// Write the receipt beside the target.
    WriteReceipt { path: PathBuf },
    /// Remove the lock file.
    ReleaseLock { path: PathBuf },
    /// Rollback: remove a tree that the deploy created, only if it still matches `identity`.
    RemoveTree { path: PathBuf, identity: Digest },
    /// Rollback: remove a file that the deploy created, only if it still has `sha256`.
    RemoveFile {
        path: PathBuf,
        sha256: Option<Digest>,
    },
}

/// One preflight check with its evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Short key (`target-absent`, `same-filesystem`, `space`, ...).
    pub name: String,
    pub ok: bool,
    /// What was observed ("lstat /opt/x: no such file").
    pub evidence: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    /// Every reason for FAIL (and warnings for PASS).
    pub reasons: Vec<String>,
}

/// A plan together with its digest, as written to disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SealedPlan {
    pub plan: Plan,
    /// sha256 of [`canonical_bytes`] of `plan`.
    pub digest: Digest,
}

/// The bytes the plan digest covers: compact JSON of the plan with struct fields in declaration
/// order (serde_json's order for derived structs, stable across runs).
pub fn canonical_bytes(plan: &Plan) -> Vec<u8> {
    serde_json::to_vec(plan).expect("plan serializes")
}

impl Plan {
    /// Seals the plan with its digest.
    pub fn seal(self) -> SealedPlan {
        let digest = Digest::of(&canonical_bytes(&self));
        SealedPlan { plan: self, digest }
    }
}

/// The digest of a plan file's `plan` as its writer computed it, whatever fields it has: its
/// compact JSON is the pretty JSON of the file without the whitespace between tokens.
fn written_digest(text: &str) -> Option<Digest> {
    #[derive(Deserialize)]
    struct Written<'a> {
        #[serde(borrow)]
        plan: &'a serde_json::value::RawValue,
    }
    let written: Written = serde_json::from_str(text).ok()?;
    Some(Digest::of(&compact(written.plan.get())))
}

/// Deserializes a `T`, with the path of every field `T` does not know: serde drops them
/// silently, and a plan or receipt that had some is a later sealpush's or was edited.
pub(crate) fn with_unknown_fields<'de, T, D>(de: D) -> Result<(T, Vec<String>), D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    let mut unknown = Vec::new();
    let value = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))?;
    Ok((value, unknown))
}

/// Whether `tool_version` (`sealpush X.Y.Z`, as [`crate::TOOL_VERSION`]) names a later version
/// than this one. Each part counts by its leading digits (`1.0.0-rc1` is 1.0.0); a name that is
/// not of that form is not taken for a later sealpush.
pub(crate) fn is_later(tool_version: &str) -> bool {
    fn parts(v: &str) -> Option<Vec<u64>> {
        v.strip_prefix("sealpush ")?
            .split('.')
            .map(|p| {
                let digits = p.bytes().take_while(u8::is_ascii_digit).count();
                p[..digits].parse().ok()
            })
            .collect()
    }
    match (parts(tool_version), parts(crate::TOOL_VERSION)) {
        (Some(theirs), Some(ours)) => theirs > ours,
        _ => false,
    }
}

/// JSON text without the whitespace outside its strings.
fn compact(json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

/// Why a plan file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("not a sealpush plan: {0} (give the file `sealpush preflight --plan-out` wrote, or run preflight again)")]
    Parse(String),
    #[error("plan format {found} is not supported (this sealpush reads format {PLAN_FORMAT})")]
    Format { found: u32 },
    #[error("plan was edited after preflight: its digest is {recorded} but its content hashes to {actual}; run preflight again")]
    Tampered { recorded: Digest, actual: Digest },
    #[error("plan was made by {made_by}, which wrote fields this sealpush ({}) does not know: {}; deploy it with {made_by} or later, or run preflight again with this one", crate::TOOL_VERSION, fields.join(", "))]
    Newer {
        made_by: String,
        fields: Vec<String>,
    },
    #[error("plan verdict is FAIL: {0}; fix the reasons and run preflight again")]
    Failed(String),
}

impl SealedPlan {
    /// Pretty JSON for the plan file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plan serializes") + "\n"
    }

    /// Parses a plan file and checks its digest and verdict.
    pub fn from_json(text: &str) -> Result<SealedPlan, PlanError> {
        // Fields this version does not know are dropped when read, and what it re-encodes is
        // not what was sealed: noted, to tell a later sealpush's plan from an edited one.
        let (sealed, unknown): (SealedPlan, _) =
            with_unknown_fields(&mut serde_json::Deserializer::from_str(text))
                .map_err(|e| PlanError::Parse(e.to_string()))?;
        if sealed.plan.format != PLAN_FORMAT {
            return Err(PlanError::Format {
                found: sealed.plan.format,
            });
        }
        let actual = if unknown.is_empty() {
            Digest::of(&canonical_bytes(&sealed.plan))
        } else {
            // Its writer hashed fields this version drops: intact if the file's own compact
            // JSON still hashes to the digest (a later sealpush's plan), else edited.
            let written = written_digest(text);
            let later = is_later(&sealed.plan.tool_version);
            match written {
                Some(w) if w == sealed.digest && later => {
                    return Err(PlanError::Newer {
                        made_by: sealed.plan.tool_version,
                        fields: unknown,
                    })
                }
                // This version, or an earlier one, writes no field this one does not know:
                // they were added by hand. With the digest recomputed over them, what this
                // version reads is checked as it always was: a field in `plan` is an edit,
                // one beside it the digest does not cover.
                Some(w) if w == sealed.digest => Digest::of(&canonical_bytes(&sealed.plan)),
                Some(w) => w,
                None => Digest::of(&canonical_bytes(&sealed.plan)),
            }
        };
        if actual != sealed.digest {
            return Err(PlanError::Tampered {
                recorded: sealed.digest,
                actual,
            });
        }
        if !sealed.plan.verdict.pass {
            return Err(PlanError::Failed(sealed.plan.verdict.reasons.join("; ")));
        }
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a writer hashes is serde_json's compact JSON; what it stores is the pretty JSON of
    /// the same value. Taking the whitespace between tokens out of the second must give the
    /// first byte for byte, whatever the strings hold: escapes (a backslash before a quote, a
    /// string ending in a backslash), whitespace and JSON punctuation inside strings, control
    /// characters, non-ASCII text, empty and nested containers.
    #[test]
    fn a_later_version_is_one_whose_numbers_are_greater() {
        let ours = crate::TOOL_VERSION;
        let later = ours.replacen("sealpush ", "sealpush 9", 1);
        for (v, want) in [
            (ours, false),
            (later.as_str(), true),
            ("sealpush 0.2.2", false),
            ("sealpush 0.1.99", false),
            ("sealpush 9.9.9", true),
            ("sealpush 10.0.0-rc1", true),
            ("sealpush 0.2.2.1", false),
            ("sealpush", false),
            ("9.9.9", false),
            ("sealpush x.y", false),
        ] {
            assert_eq!(is_later(v), want, "{v}");
        }
    }

    #[test]
    fn compact_of_the_pretty_json_is_the_compact_json() {
        let values = [
            serde_json::json!({}),
            serde_json::json!([]),
            serde_json::json!({"a": [], "b": {}, "c": [[], [{}]]}),
            serde_json::json!({"k": "a \"quoted\" word", "l": "ends in a backslash\\"}),
            serde_json::json!({"p": "/opt/a b/\t{x}: [y], \"z\"\n\r", "q": "\\\"\\\\\""}),
            serde_json::json!({"u": "\u{1}\u{1f}\u{7f}", "v": "é ü 日本 🙂", "w": "\u{2028}"}),
            serde_json::json!({"n": [0, -1, 1.5, 1e300, null, true, false]}),
            serde_json::json!({"key with spaces": {"\"": "\\"}}),
        ];
        for v in values {
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            assert_eq!(
                String::from_utf8(compact(&pretty)).unwrap(),
                serde_json::to_string(&v).unwrap(),
                "{pretty}"
            );
        }
    }
}
