//! Which mount a path is on, from a Linux `/proc/self/mountinfo` (proc(5)).
//!
//! `statvfs` tells filesystems apart, but not mounts: a bind mount of a directory shows the
//! same filesystem id as its source, and Linux still refuses a rename from one mount to the
//! other (`EXDEV`). Preflight reads the host's mountinfo over SFTP (the server process's own
//! view, the one the deploy's rename will have) to tell whether `--staging` and the target's
//! parent are on one mount. Pure: text in, answers out.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// One line of mountinfo: the fields sealpush uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Unique id of the mount (field 1).
    pub id: u64,
    /// Id of the mount it is mounted on (field 2; its own id for the namespace's root).
    pub parent: u64,
    /// The directory of the filesystem that this mount shows at its mount point (field 4):
    /// `/` for a whole filesystem, a subdirectory for a bind mount of it.
    pub root: Vec<u8>,
    /// Where it is mounted, relative to the process's root (field 5), unescaped.
    pub point: Vec<u8>,
    /// Filesystem type (the field after the `-` separator).
    pub fstype: String,
}

/// Parses mountinfo text. Lines that do not have the documented shape are skipped: a kernel
/// that adds fields keeps the ones read here where they are.
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let sep = fields.iter().position(|f| *f == b"-")?;
            if sep < 6 || fields.len() < sep + 2 {
                return None;
            }
            Some(Mount {
                id: std::str::from_utf8(fields[0]).ok()?.parse().ok()?,
                parent: std::str::from_utf8(fields[1]).ok()?.parse().ok()?,
                root: unescape(fields[3]),
                point: unescape(fields[4]),
                fstype: String::from_utf8_lossy(fields[sep + 1]).into_owned(),
            })
        })
        .collect()
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let oct = field.get(i + 1..i + 4).filter(|d| {
            field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match oct {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// The mount that `path` (absolute, with symlinks already resolved) is on: the mount tree is
/// followed from the root, one component at a time, through the mounts on that component's
/// path whose parent is the mount reached so far (the last of a stack is on top). A mount that
/// a later mount on an ancestor hides is so never reached, though its mount point is the
/// longer prefix. None for a relative path or a table without a root.
pub fn mount_of<'m>(mounts: &'m [Mount], path: &Path) -> Option<&'m Mount> {
    if !path.is_absolute() {
        return None;
    }
    // Climbs a stack: a mount on `point` whose parent is `cur` is on top of it.
    let climb = |mut cur: &'m Mount, point: &[u8]| {
        while let Some(m) = mounts
            .iter()
            .rev()
            .find(|m| m.id != cur.id && m.parent == cur.id && m.point == point)
        {
            cur = m;
        }
        cur
    };
    // The bottom of the root's stack: a mount on `/` whose parent is no other mount on `/`.
    let root = mounts.iter().find(|m| {
        m.point == b"/"
            && !mounts
                .iter()
                .any(|o| o.id != m.id && o.id == m.parent && o.point == b"/")
    })?;
    let mut cur = climb(root, b"/");
    let mut prefix = Vec::new();
    for c in path.components() {
        if let Component::Normal(n) = c {
            prefix.push(b'/');
            prefix.extend_from_slice(n.as_bytes());
            cur = climb(cur, &prefix);
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The first line is proc(5)'s own example (its parent made 22 here); the rest are shaped
    // like this machine's /proc/self/mountinfo after `mount --bind /srv/data "/srv/a b"`, a
    // second tmpfs on /tmp, and a bind on /q/inner then hidden by a tmpfs mounted on /q.
    const SAMPLE: &[u8] =
        b"36 22 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
        22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        40 22 0:35 / /tmp rw,nosuid shared:20 - tmpfs tmpfs rw\n\
        41 22 8:1 /srv/data /srv/a\\040b rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        42 40 0:36 / /tmp rw - tmpfs tmpfs rw\n\
        43 22 8:1 /srv/data /q/inner rw - ext4 /dev/sda1 rw\n\
        44 22 0:37 / /q rw - tmpfs tmpfs rw\n\
        not a mountinfo line\n";

    #[test]
    fn parses_the_documented_fields_and_unescapes_paths() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 7);
        assert_eq!(
            m[0],
            Mount {
                id: 36,
                parent: 22,
                root: b"/mnt1".to_vec(),
                point: b"/mnt2".to_vec(),
                fstype: "ext3".into()
            }
        );
        assert_eq!(m[3].point, b"/srv/a b");
        assert_eq!(m[3].root, b"/srv/data");
        assert_eq!(unescape(b"a\\134b\\011\\012\\9x\\"), b"a\\b\t\n\\9x\\");
    }

    #[test]
    fn a_path_is_on_the_mount_reached_through_the_tree_and_the_top_one_of_a_stack() {
        let m = parse(SAMPLE);
        let id = |p: &str| mount_of(&m, Path::new(p)).map(|m| m.id);
        assert_eq!(id("/"), Some(22));
        assert_eq!(id("/srv/data/x"), Some(22));
        // A bind mount of a directory of the root filesystem is another mount.
        assert_eq!(id("/srv/a b/x"), Some(41));
        assert_eq!(id("/srv/a"), Some(22));
        // Two tmpfs stacked on /tmp: the later one is the one seen.
        assert_eq!(id("/tmp/x"), Some(42));
        // Component-wise: /mnt20 is not under /mnt2.
        assert_eq!(id("/mnt2/y"), Some(36));
        assert_eq!(id("/mnt20"), Some(22));
        assert_eq!(id("relative"), None);
        assert_eq!(mount_of(&[], Path::new("/x")), None);
        // The bind on /q/inner is hidden by the tmpfs mounted on /q after it: /q/inner is on
        // the tmpfs (a rename from there to /q/p works).
        assert_eq!(id("/q/inner"), Some(44));
        assert_eq!(id("/q/p"), Some(44));
        // A namespace's root is its own parent.
        let own = parse(b"7 7 8:1 / / rw - ext4 /dev/sda1 rw\n8 7 0:3 / /t rw - tmpfs t rw\n");
        assert_eq!(mount_of(&own, Path::new("/t/x")).map(|m| m.id), Some(8));
        assert_eq!(mount_of(&own, Path::new("/u")).map(|m| m.id), Some(7));
    }
}
