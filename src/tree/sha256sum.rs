//! Stage 4 of the recipe: what `sha256sum` (coreutils 9.1) prints for each argument. Rules
//! H1–H3 of `recipe-semantics.md`: the output line and its escaping, the empty-input line, the
//! error messages, and which arguments sealpush refuses instead of emulating.

use crate::digest::Digest;

/// sha256 of the empty input: what `sha256sum` prints for `-` (stdin is /dev/null under xargs)
/// and when xargs runs it with no arguments (X7).
pub const EMPTY: Digest = Digest([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// True when getopt would read `arg` as an option (or the `--` end marker): it starts with `-`
/// and is not `-` itself (H3). sealpush refuses these rather than emulate the option parser.
pub fn is_option(arg: &[u8]) -> bool {
    arg.len() > 1 && arg[0] == b'-'
}

/// True when `arg` means standard input.
pub fn is_stdin(arg: &[u8]) -> bool {
    arg == b"-"
}

/// Appends `HEX  NAME\n`, escaped as coreutils >= 9.0 does (H2): if NAME contains `\`, `\n` or
/// `\r`, the line starts with `\` and those bytes become `\\`, `\n`, `\r`.
pub fn push_line(out: &mut Vec<u8>, digest: &Digest, name: &[u8]) {
    let escape = name.iter().any(|&b| matches!(b, b'\\' | b'\n' | b'\r'));
    if escape {
        out.push(b'\\');
    }
    out.extend_from_slice(digest.to_hex().as_bytes());
    out.extend_from_slice(b"  ");
    if escape {
        escape_into(name, out);
    } else {
        out.extend_from_slice(name);
    }
    out.push(b'\n');
}

/// sha256sum's escaping of a name (coreutils >= 9.0): `\` `\n` `\r` as `\\` `\n` `\r`.
pub fn escape_into(name: &[u8], out: &mut Vec<u8>) {
    for &b in name {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// The reason part of sha256sum's message for a failed argument: strerror without Rust's
/// " (os error N)" suffix.
pub fn reason(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => {
            let s = std::io::Error::from_raw_os_error(code).to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
        None => err.to_string(),
    }
}

/// sha256sum's warning line for a failed argument: `sha256sum: NAME: REASON`.
pub fn warning(name: &[u8], reason: &str) -> String {
    format!("sha256sum: {}: {reason}", super::show(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_is_the_published_vector() {
        assert_eq!(EMPTY, Digest::of(b""));
    }

    #[test]
    fn escaping_table() {
        let d = Digest::of(b"");
        let hex = d.to_hex();
        let cases: &[(&[u8], String)] = &[
            (b"d/a", format!("{hex}  d/a\n")),
            (b"d/a b", format!("{hex}  d/a b\n")),
            (b"d/a\\b", format!("\\{hex}  d/a\\\\b\n")),
            (b"d/p\nq", format!("\\{hex}  d/p\\nq\n")),
            (b"d/a\rb", format!("\\{hex}  d/a\\rb\n")),
            (b"d/a\tb", format!("{hex}  d/a\tb\n")),
            (b"-", format!("{hex}  -\n")),
        ];
        for (name, want) in cases {
            let mut out = Vec::new();
            push_line(&mut out, &d, name);
            assert_eq!(String::from_utf8(out).unwrap(), *want, "{name:?}");
        }
    }

    #[test]
    fn options_are_dash_something() {
        for (arg, opt) in [
            (&b"-"[..], false),
            (b"-b", true),
            (b"--", true),
            (b"--tag", true),
            (b"a-b", false),
            (b"", false),
        ] {
            assert_eq!(is_option(arg), opt, "{arg:?}");
        }
    }

    #[test]
    fn reason_drops_the_os_error_suffix() {
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(reason(&e), "No such file or directory");
        assert_eq!(
            warning(b"d/x", &reason(&e)),
            "sha256sum: d/x: No such file or directory"
        );
    }
}
