//! A local file's stamp: what tells one version of its bytes from another without reading them
//! (device, inode, size, mtime, ctime), as `make`, git's index and rsync's quick check use.
//!
//! Preflight hashes the artifact's archive and records its stamp in the plan when the stamp can
//! vouch for the bytes it hashed. The deploy then streams the archive without hashing it again
//! when the file still has that stamp from before its first byte is read to after its last:
//! rewriting the file in place, replacing it, or renaming another over it changes the ctime,
//! which only the kernel sets. Every byte that reaches the host is still compared with the
//! manifest there (read back, or `sha256sum -c`), so the stamp saves a local pass and vouches
//! for nothing the host check does not also prove. See `store-layout.md`, `## Plan`.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Device, inode, size, and mtime and ctime in seconds and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

/// How long before a hash began the file must have last changed for its stamp to vouch for the
/// bytes hashed. A write within the same timestamp tick as the change before it leaves the
/// ctime as it was; ticks are a few milliseconds on Linux filesystems and a whole second on
/// some (ext3's small inodes, FAT's two), so two seconds covers them.
pub const SETTLED: Duration = Duration::from_secs(2);

impl FileStamp {
    pub fn of(m: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime_sec: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }

    /// The stamp of the file open as `f` (fstat: the very file read, whatever its name
    /// points to meanwhile).
    pub fn of_file(f: &std::fs::File) -> std::io::Result<FileStamp> {
        f.metadata().map(|m| FileStamp::of(&m))
    }

    /// The ctime in nanoseconds since the epoch.
    fn ctime_ns(&self) -> i128 {
        i128::from(self.ctime_sec) * 1_000_000_000 + i128::from(self.ctime_nsec)
    }
}

/// The stamp to record for a file read whole (`read` bytes) between two looks at the open
/// handle, `before` and `after`, the reading having begun at `began`: `before` when the file
/// did not change meanwhile and had settled (last changed at least [`SETTLED`] before), so
/// that any later change must move its ctime; `None` otherwise.
pub fn settled(
    before: FileStamp,
    after: FileStamp,
    read: u64,
    began: SystemTime,
) -> Option<FileStamp> {
    let began_ns = i128::try_from(began.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
    let settled_ns = i128::try_from(SETTLED.as_nanos()).ok()?;
    (before == after && read == before.size && before.ctime_ns() + settled_ns <= began_ns)
        .then_some(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(ctime_sec: i64) -> FileStamp {
        FileStamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_sec: 4,
            mtime_nsec: 5,
            ctime_sec,
            ctime_nsec: 500_000_000,
        }
    }

    fn at(sec: u64, nsec: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(sec, nsec)
    }

    #[test]
    fn a_settled_unchanged_file_is_stamped() {
        let s = stamp(1000);
        assert_eq!(settled(s, s, 3, at(1002, 500_000_000)), Some(s));
        assert_eq!(settled(s, s, 3, at(1010, 0)), Some(s));
    }

    #[test]
    fn a_recent_change_or_a_change_while_reading_is_not() {
        let s = stamp(1000);
        // Changed less than two seconds before the read began: a write in the same tick
        // could follow unseen.
        assert_eq!(settled(s, s, 3, at(1002, 499_999_999)), None);
        assert_eq!(settled(s, s, 3, at(999, 0)), None);
        // Changed while it was read.
        assert_eq!(settled(s, stamp(1001), 3, at(1010, 0)), None);
        let grown = FileStamp { size: 4, ..s };
        assert_eq!(settled(s, grown, 3, at(1010, 0)), None);
        // Read a different length from the size it had.
        assert_eq!(settled(s, s, 2, at(1010, 0)), None);
    }

    #[test]
    fn a_real_file_rewritten_in_place_gets_another_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"one").unwrap();
        let first = FileStamp::of(&std::fs::metadata(&p).unwrap());
        std::thread::sleep(Duration::from_millis(20));
        // Same size, and the mtime set back: only the ctime tells.
        std::fs::write(&p, b"two").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::new(first.mtime_sec as u64, first.mtime_nsec as u32))
            .unwrap();
        let second = FileStamp::of(&std::fs::metadata(&p).unwrap());
        assert_eq!(
            (second.size, second.mtime_sec, second.mtime_nsec),
            (first.size, first.mtime_sec, first.mtime_nsec)
        );
        assert_ne!(first, second);
    }
}
