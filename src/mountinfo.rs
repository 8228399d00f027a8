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

/// The mount that `path` (absolute, with symlinks already resolved) is on: the one with the
/// longest mount point that contains it, and of those the last listed, which is the one on
/// top. None for a relative path or when nothing contains it.
pub fn mount_of<'m>(mounts: &'m [Mount], path: &Path) -> Option<&'m Mount> {
    if !path.is_absolute() {
        return None;
    }
    let parts: Vec<&[u8]> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect();
    let mut best: Option<(&Mount, usize)> = None;
    for m in mounts {
        let Some(depth) = contains(&m.point, &parts) else {
            continue;
        };
        if best.map_or(true, |(_, d)| depth >= d) {
            best = Some((m, depth));
        }
    }
    best.map(|(m, _)| m)
}

/// How many components deep `point` is, if it is `parts` or one of its ancestors.
fn contains(point: &[u8], parts: &[&[u8]]) -> Option<usize> {
    let own: Vec<&[u8]> = point
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    (own.len() <= parts.len() && own.iter().zip(parts).all(|(a, b)| a == b)).then_some(own.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The first line is proc(5)'s own example; the rest are shaped like this machine's
    // /proc/self/mountinfo after `mount --bind /srv/data "/srv/a b"`.
    const SAMPLE: &[u8] =
        b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
        22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        40 22 0:35 / /tmp rw,nosuid shared:20 - tmpfs tmpfs rw\n\
        41 22 8:1 /srv/data /srv/a\\040b rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        42 40 0:36 / /tmp rw - tmpfs tmpfs rw\n\
        not a mountinfo line\n";

    #[test]
    fn parses_the_documented_fields_and_unescapes_paths() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[0],
            Mount {
                id: 36,
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
    fn a_path_is_on_the_deepest_mount_that_contains_it_and_the_top_one_of_a_stack() {
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
    }
}
