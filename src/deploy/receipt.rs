//! The receipt: what a deploy created, with digests, and how it went. Written locally
//! (`<local_state>/deploys/<plan digest>/receipt.json`) and on the host
//! (`<work_dir>/receipt-<plan digest, 16 hex>.json`), so rollback and status work from either
//! side. Rollback trusts nothing else: it removes exactly the paths listed here, and only while
//! they still have the recorded content.
//!
//! Paths inside the tree are raw bytes; JSON needs text, so they are spelled with
//! [`escape_path`]: `\` becomes `\\`, and bytes that are not UTF-8 become `\xNN`. The spelling is
//! lossless ([`unescape_path`] inverts it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::plan::{ArtifactRef, HostRef, Verdict};
use crate::remote::ExecOutput;

/// Current receipt format.
pub const RECEIPT_FORMAT: u32 = 1;

/// The kind of a created path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreatedKind {
    File,
    Dir,
    Symlink,
    /// Only ever made by a `--check` (a test suite's fifo or unix socket, say): the deploy
    /// writes files, directories and symlinks alone.
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

/// One entry of the deployed tree, relative to the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Escaped relative path ([`escape_path`]).
    pub path: String,
    pub kind: CreatedKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// Escaped symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Created by the `--check` command, not written by the deploy: its mode is the host's
    /// umask's, not one the deploy set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_check: bool,
}

/// A path outside the tree that the deploy created (work dir, kept archive, receipt, journal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedPath {
    pub path: PathBuf,
    pub kind: CreatedKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
}

/// The anchor's recipe digest and tree identity, before (the plan) and after the deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorProof {
    pub path: PathBuf,
    /// Recipe digest recorded by preflight.
    pub expected: Digest,
    /// Recipe digest now.
    pub actual: Digest,
    pub expected_identity: Digest,
    pub actual_identity: Digest,
}

/// Output of `--check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub output: ExecOutput,
    pub passed: bool,
}

/// Everything a deploy did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub format: u32,
    pub tool_version: String,
    pub plan_digest: Digest,
    pub host: HostRef,
    /// The host's own name (from its facts).
    pub hostname: String,
    pub artifact: ArtifactRef,
    pub target: PathBuf,
    pub staging: PathBuf,
    pub work_dir: PathBuf,
    pub started: String,
    pub finished: String,
    /// "read-back" (every byte read over the transport and hashed here) or "host-sha256sum".
    pub verify: String,
    /// How the local archive was vouched for before the promote (before anything was sent
    /// from an unpacked copy; after its last byte when streamed): "sha256" (hashed again,
    /// matching the plan) or "stamp" (it kept the device, inode, size, mtime and ctime it had
    /// when preflight hashed it; see `store-layout.md`); empty when this run did not read it
    /// (a rerun finishing a deploy whose promote had happened, when the tree is streamed from
    /// the archive). Either way the host's copy is checked against the manifest by `verify`.
    #[serde(default)]
    pub archive_check: String,
    /// Recipe digest of the deployed tree without DEPLOY-MANIFEST.txt, as
    /// `cd PARENT && find NAME -type f | sort | xargs sha256sum | sha256sum` (LC_ALL=C);
    /// `null` when the recipe cannot hash the tree (DEPLOY-MANIFEST.txt says why).
    pub tree_recipe_digest: Option<Digest>,
    /// sha256 of DEPLOY-MANIFEST.txt.
    pub deploy_manifest_sha256: Digest,
    /// The tree under `target`, including DEPLOY-MANIFEST.txt; the target directory itself is
    /// created too.
    pub tree: Vec<TreeEntry>,
    /// Paths outside the tree, in creation order.
    pub created: Vec<CreatedPath>,
    pub kept_archive: Option<PathBuf>,
    pub anchor: Option<AnchorProof>,
    pub check: Option<CheckRecord>,
    /// `sync -f` output when `--sync` was given.
    pub sync: Option<ExecOutput>,
    /// What this run found from an earlier, interrupted run and what it did about it.
    pub resume: String,
    pub files: u64,
    pub bytes: u64,
    /// Seconds spent uploading (tree and archive) and verifying.
    pub upload_secs: f64,
    pub verify_secs: f64,
    /// Seconds spent checking and unpacking the artifact locally before connecting work began.
    #[serde(default)]
    pub prepare_secs: f64,
    /// Seconds from the start of the command's deploy call to the receipt.
    pub total_secs: f64,
    /// Set by `--rollback-on-check-failure` when the deploy was rolled back.
    pub rolled_back: bool,
    pub verdict: Verdict,
}

impl Receipt {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("receipt serializes") + "\n"
    }
    /// Parses a receipt. Fields this version does not know would be dropped, and a receipt
    /// of a later sealpush may list more that its deploy created (a rollback would then
    /// remove less than it should, silently): such a receipt is refused, as a later
    /// sealpush's when its `tool_version` says so, else as edited.
    pub fn from_json(text: &[u8]) -> Result<Receipt, ReceiptError> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let (r, unknown): (Receipt, _) = crate::plan::with_unknown_fields(&mut de)
            .and_then(|r| de.end().map(|()| r))
            .map_err(|e| ReceiptError::Parse(e.to_string()))?;
        if r.format != RECEIPT_FORMAT {
            return Err(ReceiptError::Format { found: r.format });
        }
        if !unknown.is_empty() {
            return Err(if crate::plan::is_later(&r.tool_version) {
                ReceiptError::Newer {
                    made_by: r.tool_version,
                    fields: unknown,
                }
            } else {
                ReceiptError::Unknown {
                    made_by: r.tool_version,
                    fields: unknown,
                }
            });
        }
        Ok(r)
    }
}

/// Why a receipt was refused (the caller names the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("not a sealpush receipt: {0}")]
    Parse(String),
    #[error(
        "receipt format {found} is not supported (this sealpush reads format {RECEIPT_FORMAT})"
    )]
    Format { found: u32 },
    #[error("it was written by {made_by}, which recorded fields this sealpush ({}) does not know: {}; roll back with {made_by} or later, which removes what they list too (this one would leave it)", crate::TOOL_VERSION, fields.join(", "))]
    Newer {
        made_by: String,
        fields: Vec<String>,
    },
    #[error("it has fields that no sealpush up to this one ({}) writes: {}, though it says it was written by {made_by:?}: it was edited, or is not a sealpush receipt; nothing was touched; roll back with the receipt the deploy wrote (the local copy in the state dir, or the host's beside the target)", crate::TOOL_VERSION, fields.join(", "))]
    Unknown {
        made_by: String,
        fields: Vec<String>,
    },
}

/// Lossless text spelling of raw path bytes (see the module docs).
pub fn escape_path(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Inverse of [`escape_path`]; `None` for a spelling it never produces.
pub fn unescape_path(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The receipt as a report in the seed's style (`key: value` lines by section, ending with the
/// verdict).
pub fn render_receipt(r: &Receipt) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "1. Deploy");
    let _ = writeln!(
        s,
        "host: {} ({}, {})",
        r.hostname, r.host.destination, r.host.transport
    );
    let _ = writeln!(s, "plan: {}", r.plan_digest);
    let _ = writeln!(s, "artifact: {}", r.artifact.path.display());
    let _ = writeln!(s, "archive_sha256: {}", r.artifact.archive_sha256);
    let _ = writeln!(s, "tree_identity: {}", r.artifact.tree_identity);
    let _ = writeln!(s, "started: {}", r.started);
    let _ = writeln!(s, "finished: {}", r.finished);
    if !r.resume.is_empty() {
        let _ = writeln!(s, "resume: {}", r.resume);
    }
    let _ = writeln!(s, "2. Transfer and verification");
    let _ = writeln!(
        s,
        "materialised: {} files, {} bytes in {:.2}s",
        r.files, r.bytes, r.upload_secs
    );
    let _ = writeln!(s, "verify: {} ({:.2}s)", r.verify, r.verify_secs);
    match r.archive_check.as_str() {
        "" => {}
        "stamp" => {
            let _ = writeln!(
                s,
                "archive_check: stamp (unchanged since preflight hashed it: same device, inode, size, mtime, ctime)"
            );
        }
        other => {
            let _ = writeln!(s, "archive_check: {other} (hashed again: matches the plan)");
        }
    }
    let _ = writeln!(
        s,
        "local_check_and_unpack: {:.2}s; total: {:.2}s",
        r.prepare_secs, r.total_secs
    );
    match &r.kept_archive {
        Some(p) => {
            let _ = writeln!(s, "kept_archive: {}", p.display());
        }
        None => {
            let _ = writeln!(s, "kept_archive: no");
        }
    }
    let _ = writeln!(s, "3. Promote");
    let _ = writeln!(s, "staging: {}", r.staging.display());
    let _ = writeln!(s, "target: {}", r.target.display());
    match &r.tree_recipe_digest {
        Some(d) => {
            let _ = writeln!(s, "target_recipe_sha256: {d}");
        }
        None => {
            let _ = writeln!(
                s,
                "target_recipe_sha256: none (the recipe cannot hash this tree; see DEPLOY-MANIFEST.txt)"
            );
        }
    }
    let _ = writeln!(
        s,
        "deploy_manifest: {}/DEPLOY-MANIFEST.txt",
        r.target.display()
    );
    let _ = writeln!(
        s,
        "audit: cd {} && grep -E '^\\\\?[0-9a-f]{{64}}  ' DEPLOY-MANIFEST.txt | sha256sum -c --strict --quiet",
        shell_quote(&r.target.to_string_lossy())
    );
    match &r.sync {
        Some(o) => {
            let _ = writeln!(s, "sync: `{}` exit {}", o.command, status_text(o.status));
        }
        None => {
            let _ = writeln!(
                s,
                "sync: no (SFTP cannot fsync a directory; --sync runs `sync -f` on the host)"
            );
        }
    }
    let _ = writeln!(s, "4. Anchor");
    render_anchor(&mut s, r.anchor.as_ref());
    if let Some(c) = &r.check {
        let _ = writeln!(s, "5. Check");
        let _ = writeln!(s, "command: {}", c.output.command);
        let _ = writeln!(s, "exit: {}", status_text(c.output.status));
        let tail: Vec<&str> = c
            .output
            .stderr
            .lines()
            .chain(c.output.stdout.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        for l in tail.iter().skip(tail.len().saturating_sub(3)) {
            let _ = writeln!(s, "output: {l}");
        }
        let _ = writeln!(s, "check: {}", if c.passed { "PASS" } else { "FAIL" });
    }
    let _ = writeln!(s, "6. Result");
    let _ = writeln!(
        s,
        "created: {} tree entries + {} other paths",
        r.tree.len() + 1,
        r.created.len()
    );
    if r.rolled_back {
        let _ = writeln!(s, "rolled_back: YES (--rollback-on-check-failure)");
    }
    for reason in &r.verdict.reasons {
        let _ = writeln!(s, "reason: {reason}");
    }
    let _ = writeln!(
        s,
        "verdict: {}",
        if r.verdict.pass { "PASS" } else { "FAIL" }
    );
    s
}

fn status_text(s: Option<i32>) -> String {
    s.map_or_else(|| "killed by a signal".into(), |c| c.to_string())
}

/// Quotes a string for a POSIX shell (single quotes; `'` as `'\''`).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The anchor section shared by the receipt and the rollback report: before/after digests and
/// the verdict on them, in the seed's `key: value` style.
pub(crate) fn render_anchor(s: &mut String, anchor: Option<&AnchorProof>) {
    use std::fmt::Write as _;
    match anchor {
        Some(a) => {
            let _ = writeln!(s, "anchor_path: {}", a.path.display());
            let _ = writeln!(s, "anchor_tree_sha256_before: {}", a.expected);
            let _ = writeln!(s, "anchor_tree_sha256_after: {}", a.actual);
            let _ = writeln!(s, "anchor_tree_identity: {}", a.actual_identity);
            let unchanged = a.expected == a.actual && a.expected_identity == a.actual_identity;
            let _ = writeln!(
                s,
                "anchor_unchanged: {}",
                if unchanged { "YES" } else { "NO" }
            );
        }
        None => {
            let _ = writeln!(s, "anchor: none");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receipt as this version writes it, as JSON to edit.
    fn receipt_json() -> serde_json::Value {
        let d = Digest::of(b"x");
        let r = Receipt {
            format: RECEIPT_FORMAT,
            tool_version: crate::TOOL_VERSION.into(),
            plan_digest: d,
            host: HostRef {
                destination: "local".into(),
                transport: "local".into(),
                ssh_config: None,
            },
            hostname: "h".into(),
            artifact: ArtifactRef {
                path: "/a.tar.zst".into(),
                format: "tar.zst".into(),
                archive_sha256: d,
                archive_size: 1,
                tree_identity: d,
                recipe_digest: d,
                files: 1,
                unpacked_bytes: 1,
                archive_stamp: None,
            },
            target: "/p/t".into(),
            staging: "/p/.t.sealpush-stage-x".into(),
            work_dir: "/p/.sealpush/t".into(),
            started: String::new(),
            finished: String::new(),
            verify: "read-back".into(),
            archive_check: "sha256".into(),
            tree_recipe_digest: None,
            deploy_manifest_sha256: d,
            tree: vec![],
            created: vec![CreatedPath {
                path: "/p/.sealpush".into(),
                kind: CreatedKind::Dir,
                sha256: None,
            }],
            kept_archive: None,
            anchor: None,
            check: None,
            sync: None,
            resume: String::new(),
            files: 1,
            bytes: 1,
            upload_secs: 0.0,
            verify_secs: 0.0,
            prepare_secs: 0.0,
            total_secs: 0.0,
            rolled_back: false,
            verdict: Verdict {
                pass: true,
                reasons: vec![],
            },
        };
        serde_json::from_str(&r.to_json()).unwrap()
    }

    fn read(v: &serde_json::Value) -> Result<Receipt, ReceiptError> {
        Receipt::from_json(&serde_json::to_vec_pretty(v).unwrap())
    }

    /// A later sealpush may record more in a receipt (more created paths, say): dropped, a
    /// rollback would remove less than that deploy made, silently. Such a receipt is refused,
    /// naming the version and the fields; one with fields this version's own writes never
    /// have is refused as edited. This version's own receipt is read as ever.
    #[test]
    fn a_receipt_with_fields_this_version_does_not_know_is_refused() {
        let ours = receipt_json();
        assert!(read(&ours).is_ok());
        let mut later = ours.clone();
        later["tool_version"] = "sealpush 99.0.0".into();
        assert!(read(&later).is_ok(), "a later version alone is fine");
        later["created_elsewhere"] = serde_json::json!(["/p/.sealpush/t/x"]);
        later["created"][0]["owner"] = "root".into();
        let e = read(&later).unwrap_err();
        assert_eq!(
            e,
            ReceiptError::Newer {
                made_by: "sealpush 99.0.0".into(),
                fields: vec!["created.0.owner".into(), "created_elsewhere".into()],
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("sealpush 99.0.0 or later") && text.contains("created_elsewhere"),
            "{text}"
        );
        for version in [crate::TOOL_VERSION, "sealpush 0.1.0", "not a version"] {
            let mut edited = later.clone();
            edited["tool_version"] = version.into();
            match read(&edited) {
                Err(ReceiptError::Unknown { made_by, fields }) => {
                    assert_eq!(made_by, version);
                    assert_eq!(fields, ["created.0.owner", "created_elsewhere"]);
                }
                other => panic!("{version}: {other:?}"),
            }
        }
        // Trailing content is no receipt either.
        let mut text = serde_json::to_vec(&ours).unwrap();
        text.extend_from_slice(b" {}");
        assert!(matches!(
            Receipt::from_json(&text),
            Err(ReceiptError::Parse(_))
        ));
    }

    #[test]
    fn path_escaping_round_trips() {
        for raw in [
            &b"plain/name.txt"[..],
            b"back\\slash",
            b"caf\xc3\xa9",
            b"bad\xff\xfebytes",
            b"\\x41 literal",
            b"new\nline",
        ] {
            let s = escape_path(raw);
            assert_eq!(unescape_path(&s).as_deref(), Some(raw), "{s}");
        }
        assert_eq!(escape_path(b"a\\b"), "a\\\\b");
        assert_eq!(escape_path(b"\xff"), "\\xff");
        assert_eq!(unescape_path("\\q"), None);
    }

    #[test]
    fn shell_quote_is_understood_by_sh() {
        for s in ["simple/path", "it's here", "a b", "$(rm -rf /)", ""] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }
}
