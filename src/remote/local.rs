//! The local-directory transport (being written).

pub struct LocalRemote;

impl LocalRemote {
    pub fn new() -> LocalRemote {
        LocalRemote
    }
}

#[allow(unused_imports)]
use std::path::{Path, PathBuf};

#[allow(unused_imports)]
use super::{DirEntry, ExecOutput, FsStats, HostFacts, Meta, NewFile, RemoteError, Result};
#[allow(unused_imports)]
use crate::digest::Digest;
#[allow(unused_imports)]
use crate::progress::Progress;

fn gone(op: &'static str, path: &Path) -> RemoteError {
    RemoteError::Failed {
        op,
        path: path.to_path_buf(),
        reason: "transport not built yet".into(),
    }
}
impl super::Remote for LocalRemote {
    #[allow(unused_variables)]
    fn name(&self) -> &str {
        "placeholder"
    }
    #[allow(unused_variables)]
    fn transport(&self) -> &'static str {
        "placeholder"
    }
    #[allow(unused_variables)]
    fn facts(&self) -> Result<HostFacts> {
        Err(gone("facts", Path::new("/")))
    }
    #[allow(unused_variables)]
    fn lstat(&self, path: &Path) -> Result<Option<Meta>> {
        Err(gone("lstat", path))
    }
    #[allow(unused_variables)]
    fn stat(&self, path: &Path) -> Result<Option<Meta>> {
        Err(gone("stat", path))
    }
    #[allow(unused_variables)]
    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>> {
        Err(gone("read_dir", path))
    }
    #[allow(unused_variables)]
    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        Err(gone("read_link", path))
    }
    #[allow(unused_variables)]
    fn statvfs(&self, path: &Path) -> Result<FsStats> {
        Err(gone("statvfs", path))
    }
    #[allow(unused_variables)]
    fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>> {
        Err(gone("read_file", path))
    }
    #[allow(unused_variables)]
    fn hash_files(&self, paths: &[PathBuf], progress: &dyn Progress) -> Vec<Result<(Digest, u64)>> {
        paths.iter().map(|p| Err(gone("hash", p))).collect()
    }
    #[allow(unused_variables)]
    fn mkdir(&self, path: &Path, mode: u32) -> Result<()> {
        Err(gone("mkdir", path))
    }
    #[allow(unused_variables)]
    fn write_new(&self, path: &Path, data: &[u8], mode: u32, fsync: bool) -> Result<()> {
        Err(gone("write_new", path))
    }
    #[allow(unused_variables)]
    fn put_new_files(&self, files: &[NewFile], fsync: bool, progress: &dyn Progress) -> Result<()> {
        Err(gone("put_new_files", Path::new("/")))
    }
    #[allow(unused_variables)]
    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        Err(gone("symlink", target))
    }
    #[allow(unused_variables)]
    fn hard_link(&self, existing: &Path, link: &Path) -> Result<()> {
        Err(gone("hard_link", existing))
    }
    #[allow(unused_variables)]
    fn rename_noreplace(&self, from: &Path, to: &Path) -> Result<()> {
        Err(gone("rename_noreplace", from))
    }
    #[allow(unused_variables)]
    fn remove_file(&self, path: &Path) -> Result<()> {
        Err(gone("remove_file", path))
    }
    #[allow(unused_variables)]
    fn remove_dir(&self, path: &Path) -> Result<()> {
        Err(gone("remove_dir", path))
    }
    #[allow(unused_variables)]
    fn exec(&self, command: &str) -> Result<ExecOutput> {
        Err(gone("exec", Path::new("/")))
    }
}
