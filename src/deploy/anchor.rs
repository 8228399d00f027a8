//! Proving the anchor (the old version beside the target) untouched: its recipe digest,
//! `cd PARENT && find NAME -type f | sort | xargs sha256sum | sha256sum`, recomputed over the
//! transport with sealpush's recipe ([`crate::tree::recipe_with`]) and compared with the plan.
//!
//! [`RemoteSource`] lets the recipe run on any [`Remote`]: relative paths resolve against a
//! remote directory (the `cd PARENT`), errors map to the errno sha256sum would have seen.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::progress::Progress;
use crate::remote::{FileKind, Remote, RemoteError};
use crate::tree::{Collation, RecipeOptions, TreeSource};

/// A remote directory tree as a [`TreeSource`].
pub struct RemoteSource<'a> {
    pub remote: &'a dyn Remote,
    /// What relative paths resolve against.
    pub cwd: PathBuf,
}

impl RemoteSource<'_> {
    fn abs(&self, path: &[u8]) -> PathBuf {
        self.cwd.join(OsStr::from_bytes(path))
    }
}

fn to_io(e: RemoteError) -> io::Error {
    let errno = match &e {
        RemoteError::NotFound { .. } => libc::ENOENT,
        RemoteError::PermissionDenied { .. } => libc::EACCES,
        RemoteError::Exists { .. } => libc::EEXIST,
        _ => libc::EIO,
    };
    match errno {
        libc::EIO => io::Error::other(e.to_string()),
        n => io::Error::from_raw_os_error(n),
    }
}

impl TreeSource for RemoteSource<'_> {
    fn lstat_kind(&self, path: &[u8]) -> io::Result<FileKind> {
        match self.remote.lstat(&self.abs(path)).map_err(to_io)? {
            Some(m) => Ok(m.kind),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<(Vec<u8>, FileKind)>> {
        Ok(self
            .remote
            .read_dir(&self.abs(path))
            .map_err(to_io)?
            .into_iter()
            .map(|e| (e.name, e.meta.kind))
            .collect())
    }

    fn stat_kind(&self, path: &[u8]) -> io::Result<FileKind> {
        match self.remote.stat(&self.abs(path)).map_err(to_io)? {
            Some(m) => Ok(m.kind),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    fn hash_files(
        &self,
        paths: &[&[u8]],
        progress: &dyn Progress,
    ) -> Vec<io::Result<(Digest, u64)>> {
        let abs: Vec<PathBuf> = paths.iter().map(|p| self.abs(p)).collect();
        self.remote
            .hash_files(&abs, progress)
            .into_iter()
            .map(|r| r.map_err(to_io))
            .collect()
    }
}

/// The recipe digest of `dir` on the host, spelled as `cd PARENT && find NAME ...` in the
/// collation named `locale` ("C" unless the plan says otherwise).
pub fn recipe_digest(
    remote: &dyn Remote,
    dir: &Path,
    locale: &str,
    progress: &dyn Progress,
) -> Result<Digest, String> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(format!("{} has no parent directory", dir.display()));
    };
    let src = RemoteSource {
        remote,
        cwd: parent.to_path_buf(),
    };
    let collation = if locale.is_empty() || locale == "C" || locale == "POSIX" {
        Collation::c()
    } else {
        Collation::from_name(locale)
    };
    let opts = RecipeOptions {
        threads: None,
        collation,
    };
    crate::tree::recipe_with(&src, &[name.as_bytes().to_vec()], &opts, progress)
        .map(|o| o.digest)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::remote::local::LocalRemote;

    #[test]
    fn remote_recipe_equals_the_real_pipeline() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("anchor");
        std::fs::create_dir_all(root.join("sub dir")).unwrap();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("sub dir/b"), b"b").unwrap();
        std::fs::write(root.join("Z"), b"z").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let got = recipe_digest(&LocalRemote::new(), &root, "C", &NoProgress).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg("find anchor -type f | sort | xargs sha256sum | sha256sum")
            .current_dir(d.path())
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let want = String::from_utf8(out.stdout).unwrap();
        assert_eq!(got.to_hex(), want[..64]);
    }
}
