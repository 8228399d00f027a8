//! Files the commands write at a path the user names (`pack --out`, `preflight --plan-out`):
//! written to a temp file beside the path and renamed into place, so a reader never sees half
//! a file. The rename replaces whatever is at the path, so anything but a regular file there
//! (a fifo, a device, a directory, a symlink whose target the user meant) is refused first.

use std::fs;
use std::io;
use std::path::Path;

use anyhow::{bail, Context};
use tempfile::NamedTempFile;

/// The directory a temp file for `path` goes in.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuses, before any work, an output path that is not a regular file or a new name in an
/// existing directory. `flag` names the option in the error.
pub fn check(flag: &str, path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    // `new.tar.zst/`, `x/.` and `x/..` name directories, which a file cannot be written as (the
    // rename would fail after all the work; `Path` itself drops a trailing `.`).
    let last = path
        .as_os_str()
        .as_encoded_bytes()
        .rsplit(|&b| b == b'/')
        .next();
    if matches!(last, Some(b"" | b"." | b"..")) {
        bail!(
            "{flag} {shown}: ends with `/`, `/.` or `/..`, which name a directory: name the \
             file to write"
        );
    }
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_file() => {}
        Ok(md) if md.file_type().is_symlink() => bail!(
            "{flag} {shown}: is a symlink, and sealpush writes a new regular file in its place \
             (the link would be replaced, its target left as it was): pass the target's path, \
             or remove the link"
        ),
        Ok(md) => bail!(
            "{flag} {shown}: is {}, not a regular file, and writing it would replace it: remove \
             it or choose another path",
            kind(md.file_type())
        ),
        // Nothing there (ENOTDIR: the parent is not a directory, said just below).
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {}
        Err(e) => return Err(e).with_context(|| format!("{flag} {shown}")),
    }
    let dir = dir_of(path);
    match fs::metadata(dir) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => bail!("{flag} {shown}: {} is not a directory", dir.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "{flag} {shown}: the directory {} does not exist: create it first",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("{flag} {shown}: {}", dir.display())),
    }
}

/// What a file that is neither a regular file nor a symlink is, for a message.
fn kind(t: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a file of another kind"
    }
}

/// A new temp file beside `path` (named `prefix` and random letters), created with `mode` less
/// the umask; removed when dropped unless [`persist`]ed. An error names the directory, not the
/// temp name, which the user never chose.
pub fn temp_beside(path: &Path, prefix: &str, mode: u32) -> anyhow::Result<NamedTempFile> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = dir_of(path);
    tempfile::Builder::new()
        .prefix(prefix)
        .make_in(dir, |p| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(p)
        })
        .with_context(|| format!("creating a temp file in {}", dir.display()))
}

/// Renames `tmp` to `path`, checking `path` once more just before: something may have appeared
/// there since [`check`].
pub fn persist(tmp: NamedTempFile, flag: &str, path: &Path) -> anyhow::Result<()> {
    check(flag, path)?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the temp file to {}", path.display()))?;
    Ok(())
}
