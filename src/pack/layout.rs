//! Pure tar header normalisation: the exact bytes of every header sealpush writes.
//!
//! Headers are built by hand (not through `tar::Builder`) so that every byte is pinned here and
//! specified in `store-layout.md`: POSIX ustar headers, uid/gid 0, empty uname/gname, fixed mtime,
//! modes 0644/0755/0777 from the entry kind and exec bit, devmajor/devminor zero, and a PAX
//! extended header (`typeflag x`) only when a path or link target does not fit ustar's 100-byte
//! field or a size does not fit 11 octal digits. Nothing here reads a clock, an environment or
//! the file system.

use crate::manifest::{Entry, EntryKind};

pub const BLOCK: usize = 512;

/// Name of every PAX extended header (fixed: GNU tar's default embeds a pid).
const PAX_NAME: &[u8] = b"././@PaxHeader";

/// The largest size an 11-digit octal field holds.
const MAX_OCTAL_11: u64 = 0o77777777777;

/// What one manifest entry becomes in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarKind<'a> {
    File {
        size: u64,
        executable: bool,
    },
    /// A later name of a hard-linked file: typeflag `1`, pointing at the first name.
    HardLink {
        target: &'a [u8],
        executable: bool,
    },
    Symlink {
        target: &'a [u8],
    },
    Dir,
}

impl<'a> TarKind<'a> {
    pub fn of(entry: &'a Entry, hardlink_to: Option<&'a [u8]>) -> TarKind<'a> {
        match (&entry.kind, hardlink_to) {
            (EntryKind::File { executable, .. }, Some(target)) => TarKind::HardLink {
                target,
                executable: *executable,
            },
            (
                EntryKind::File {
                    size, executable, ..
                },
                None,
            ) => TarKind::File {
                size: *size,
                executable: *executable,
            },
            (EntryKind::Symlink { target }, _) => TarKind::Symlink { target },
            (EntryKind::Dir, _) => TarKind::Dir,
        }
    }
}

/// Appends the header block(s) for one entry (PAX header + ustar header) to `out`. File data
/// and its padding are the caller's.
pub fn write_header(path: &[u8], kind: TarKind<'_>, mtime: u64, out: &mut Vec<u8>) {
    // Directories carry a trailing slash, as GNU tar writes them.
    let mut name = path.to_vec();
    let (typeflag, mode, size, link): (u8, u32, u64, &[u8]) = match kind {
        TarKind::File { size, executable } => (b'0', file_mode(executable), size, b""),
        TarKind::HardLink { target, executable } => (b'1', file_mode(executable), 0, target),
        TarKind::Symlink { target } => (b'2', 0o777, 0, target),
        TarKind::Dir => {
            name.push(b'/');
            (b'5', 0o755, 0, b"")
        }
    };
    // Records in key order: hdrcharset, linkpath, path, size.
    let mut pax = Vec::new();
    let long_name = name.len() > 100;
    let long_link = link.len() > 100;
    let binary = (long_name && std::str::from_utf8(&name).is_err())
        || (long_link && std::str::from_utf8(link).is_err());
    if binary {
        // PAX values are UTF-8 unless declared otherwise; a non-UTF-8 name is declared raw
        // bytes, which GNU tar and the tar crate both take verbatim.
        pax_record(b"hdrcharset", b"BINARY", &mut pax);
    }
    if long_link {
        pax_record(b"linkpath", link, &mut pax);
    }
    if long_name {
        pax_record(b"path", &name, &mut pax);
    }
    if size > MAX_OCTAL_11 {
        pax_record(b"size", size.to_string().as_bytes(), &mut pax);
    }
    if !pax.is_empty() {
        // Records are sorted by key so their order is fixed.
        let mut h = [0u8; BLOCK];
        fill(&mut h, PAX_NAME, b'x', 0o644, pax.len() as u64, mtime, b"");
        out.extend_from_slice(&h);
        out.extend_from_slice(&pax);
        pad(pax.len() as u64, out);
    }
    let mut h = [0u8; BLOCK];
    let size_field = if size > MAX_OCTAL_11 { 0 } else { size };
    fill(&mut h, &name, typeflag, mode, size_field, mtime, link);
    out.extend_from_slice(&h);
}

fn file_mode(executable: bool) -> u32 {
    if executable {
        0o755
    } else {
        0o644
    }
}

/// Zero bytes that bring `len` up to a multiple of 512.
pub fn pad(len: u64, out: &mut Vec<u8>) {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.resize(out.len() + BLOCK - rem, 0);
    }
}

/// The end-of-archive marker: two zero blocks (no padding to a 10 KiB record: not needed by
/// readers, and it would only add bytes).
pub const TRAILER: [u8; 2 * BLOCK] = [0u8; 2 * BLOCK];

/// `"<len> <key>=<value>\n"` where `<len>` counts the whole record, itself included.
fn pax_record(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len += 1;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Fills a ustar header. Over-long name/link fields are truncated (a PAX record precedes them).
fn fill(
    h: &mut [u8; BLOCK],
    name: &[u8],
    typeflag: u8,
    mode: u32,
    size: u64,
    mtime: u64,
    link: &[u8],
) {
    copy(&mut h[0..100], name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime.min(MAX_OCTAL_11));
    h[156] = typeflag;
    copy(&mut h[157..257], link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // uname, gname: empty (all NUL). devmajor/devminor: zero.
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    // Checksum: computed with its own field as spaces, stored as 6 octal digits, NUL, space.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(s.as_bytes());
    h[154] = 0;
    h[155] = b' ';
}

fn copy(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal filling the field but its last byte, which stays NUL.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        // Examples from the POSIX pax spec arithmetic: "30 mtime=1350244992.023960108\n".
        let mut v = Vec::new();
        pax_record(b"mtime", b"1350244992.023960108", &mut v);
        assert_eq!(v, b"30 mtime=1350244992.023960108\n");
        v.clear();
        pax_record(b"p", b"abcd", &mut v);
        assert_eq!(v, b"9 p=abcd\n");
        // Crossing a digit boundary: 9 bytes + 1 digit = 10 needs 2 digits, so 11.
        v.clear();
        pax_record(b"p", b"abcde", &mut v);
        assert_eq!(v, b"11 p=abcde\n");
    }

    #[test]
    fn headers_are_parsed_back_by_the_tar_crate() {
        let long = "d/".repeat(60) + "file";
        let mut out = Vec::new();
        write_header(b"d", TarKind::Dir, 1153704088, &mut out);
        write_header(
            long.as_bytes(),
            TarKind::File {
                size: 3,
                executable: true,
            },
            7,
            &mut out,
        );
        out.extend_from_slice(b"abc");
        pad(3, &mut out);
        write_header(b"l", TarKind::Symlink { target: b"d" }, 7, &mut out);
        out.extend_from_slice(&TRAILER);
        let mut ar = tar::Archive::new(&out[..]);
        let got: Vec<(Vec<u8>, u32, u64, u64, tar::EntryType)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path_bytes().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.size().unwrap(),
                    h.entry_type(),
                )
            })
            .collect();
        assert_eq!(
            got[0],
            (
                b"d/".to_vec(),
                0o755,
                1153704088,
                0,
                tar::EntryType::Directory
            )
        );
        assert_eq!(
            got[1],
            (long.into_bytes(), 0o755, 7, 3, tar::EntryType::Regular)
        );
        assert_eq!(got[2].0, b"l");
        assert_eq!(got[2].1, 0o777);
    }

    #[test]
    fn checksum_matches_the_tar_crate() {
        let mut out = Vec::new();
        write_header(
            b"a",
            TarKind::File {
                size: 0,
                executable: false,
            },
            0,
            &mut out,
        );
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&out[..BLOCK]);
        let stored = h.cksum().unwrap();
        h.set_cksum();
        assert_eq!(h.cksum().unwrap(), stored);
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.uid().unwrap(), 0);
    }
}
