//! Proving the anchor (the old version beside the target) untouched: its recipe digest
//! (`cd PARENT && find NAME -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`) and its
//! manifest identity, recomputed over the transport by the same survey preflight ran
//! ([`crate::preflight::survey_anchor`], each file read once), so "unchanged" means the same
//! thing before and after the deploy.

use std::path::Path;

use super::DeployError;
use crate::digest::Digest;
use crate::preflight::{survey_anchor, PreflightError};
use crate::progress::Progress;

/// The anchor's (recipe digest, tree identity) now.
pub fn survey(
    remote: &dyn crate::remote::Remote,
    path: &Path,
    progress: &dyn Progress,
) -> Result<(Digest, Digest), DeployError> {
    match survey_anchor(remote, path, progress) {
        Ok((a, _)) => Ok((a.recipe_digest, a.tree_identity)),
        Err(PreflightError::Remote(cause)) => Err(DeployError::Remote {
            step: "anchor",
            cause,
            note: String::new(),
        }),
        Err(e) => Err(DeployError::Anchor {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}
