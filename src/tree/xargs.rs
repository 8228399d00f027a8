//! Stage 3 of the recipe: how GNU `xargs` (findutils 4.9, no options) turns sort's output into
//! `sha256sum` arguments and batches. Rules X1–X7 of `recipe-semantics.md`.
//!
//! This is a transcription of findutils' `read_line` state machine (SPACE, NORM, QUOTE,
//! BACKSLASH), fed the sorted lines each followed by `\n`. It is pure: lines in, tokens out.
//! Where xargs would abort (unmatched quote, argument over [`Limits::max_arg`] bytes) the result carries
//! a [`Break`] and the tokens complete before it; the caller decides what that means.

use std::borrow::Cow;

/// The size of one command line as xargs counts it with any ordinary environment and stack
/// limit: 128 KiB (see [`Limits`]).
pub const ARG_BUFFER: usize = 131_072;

/// The longest argument xargs accepts then: the buffer minus `sha256sum\0` minus the
/// terminating NUL (findutils: `endbuf = linebuf + arg_max - cmd_initial_argv_chars - 1`).
pub const MAX_ARG: usize = ARG_BUFFER - COMMAND_COST - 1;

/// The cost of `sha256sum\0`, charged once per batch.
const COMMAND_COST: usize = 10;

/// xargs' command-line buffer (X5, X6): `min(128 KiB, ARG_MAX - environment - 2048)`, and
/// never below 4,096 (findutils' `bc_init_controlinfo` and `bc_use_sensible_arg_max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub buffer: usize,
}

impl Limits {
    /// What xargs uses with any ordinary environment and stack limit (and what sealpush
    /// assumes on a remote host, whose environment it does not see).
    pub const DEFAULT: Limits = Limits { buffer: ARG_BUFFER };

    /// What an xargs started from this process would use: ARG_MAX as glibc reports it (a
    /// quarter of the stack limit, at least 128 KiB), less the environment's size (each
    /// `NAME=value` and its NUL). A stack limit under about 520 KiB or an environment over
    /// about 1.9 MB makes it smaller than [`Limits::DEFAULT`].
    pub fn of_this_process() -> Limits {
        // SAFETY: sysconf has no preconditions.
        let arg_max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
        let Ok(arg_max) = usize::try_from(arg_max) else {
            return Limits::DEFAULT;
        };
        let env: usize = std::env::vars_os()
            .map(|(k, v)| k.len() + 1 + v.len() + 1)
            .sum();
        let room = arg_max.saturating_sub(env).saturating_sub(2048);
        Limits {
            buffer: room.clamp(4096, ARG_BUFFER),
        }
    }

    /// The longest argument xargs accepts: the buffer minus `sha256sum\0` minus the NUL.
    pub fn max_arg(&self) -> usize {
        self.buffer - COMMAND_COST - 1
    }
}

/// Why xargs stops reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakKind {
    /// A quote still open at the end of a line (`'` or `"`).
    UnmatchedQuote(u8),
    /// An argument longer than this many bytes ([`Limits::max_arg`]).
    TooLong(usize),
}

/// Where and why xargs stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    pub kind: BreakKind,
    /// Index (into the input lines) of the line where the offending argument began.
    pub line: usize,
}

impl Break {
    /// xargs' own words.
    pub fn reason(&self) -> String {
        match self.kind {
            BreakKind::UnmatchedQuote(q) => format!(
                "xargs stops here with \"unmatched {} quote\"",
                if q == b'"' { "double" } else { "single" }
            ),
            BreakKind::TooLong(max) => format!(
                "xargs stops here with \"argument line too long\" (an argument over {max} bytes)"
            ),
        }
    }
}

/// One argument for sha256sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// The argument bytes. Borrowed when the argument is exactly one whole input line.
    pub bytes: Cow<'a, [u8]>,
    /// Index of the line where the argument began.
    pub line: usize,
}

impl Token<'_> {
    /// True when the argument is one input line, unchanged.
    pub fn is_whole_line(&self) -> bool {
        matches!(self.bytes, Cow::Borrowed(_))
    }
}

/// Everything xargs makes of its input.
#[derive(Debug, Default)]
pub struct Tokens<'a> {
    /// Arguments in order, up to (not including) a break.
    pub tokens: Vec<Token<'a>>,
    /// Set when xargs would abort.
    pub brk: Option<Break>,
}

fn is_space(c: u8) -> bool {
    // isspace in C and in glibc's UTF-8 locales for single bytes: bytes >= 0x80 are not
    // characters there, so NBSP (0xa0) and NEL (0x85) never separate (checked, X1).
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Space,
    Norm,
    Quote(u8),
    Backslash,
}

/// Tokenizes `lines` (each as if followed by `\n`) exactly as `xargs` reads them.
pub fn tokenize<'a>(lines: &[&'a [u8]], limits: Limits) -> Tokens<'a> {
    let max_arg = limits.max_arg();
    let mut out = Tokens::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut state = State::Space;
    // Line where the current argument began, and whether it is still a verbatim copy of that
    // line from its first byte (no skipped blanks, quotes or backslashes).
    let mut start_line = 0usize;
    let mut verbatim = true;

    for (li, line) in lines.iter().enumerate() {
        for pos in 0..=line.len() {
            let c = if pos < line.len() { line[pos] } else { b'\n' };
            let mut st = state;
            if st == State::Space {
                if is_space(c) {
                    continue;
                }
                st = State::Norm;
                start_line = li;
                verbatim = pos == 0;
            }
            match st {
                State::Norm => {
                    if c == b'\n' {
                        if buf.is_empty() {
                            // A blank line (or a bare `''` at the end of one): no argument.
                            state = State::Space;
                            continue;
                        }
                        let whole = verbatim && start_line == li && buf.len() == line.len();
                        push(&mut out, &mut buf, start_line, whole.then_some(*line));
                        state = State::Space;
                        continue;
                    }
                    if is_blank(c) {
                        push(&mut out, &mut buf, start_line, None);
                        state = State::Space;
                        continue;
                    }
                    match c {
                        b'\\' => {
                            verbatim = false;
                            state = State::Backslash;
                            continue;
                        }
                        b'\'' | b'"' => {
                            verbatim = false;
                            state = State::Quote(c);
                            continue;
                        }
                        _ => {}
                    }
                    state = State::Norm;
                }
                State::Quote(q) => {
                    if c == b'\n' {
                        out.brk = Some(Break {
                            kind: BreakKind::UnmatchedQuote(q),
                            line: start_line,
                        });
                        return out;
                    }
                    if c == q {
                        state = State::Norm;
                        continue;
                    }
                    state = st;
                }
                State::Backslash => {
                    state = State::Norm;
                }
                State::Space => unreachable!("handled above"),
            }
            if buf.len() >= max_arg {
                out.brk = Some(Break {
                    kind: BreakKind::TooLong(max_arg),
                    line: start_line,
                });
                return out;
            }
            buf.push(c);
        }
    }
    // End of input: a pending argument (one ending in an escaped newline) is still pushed.
    if !buf.is_empty() {
        push(&mut out, &mut buf, start_line, None);
    }
    out
}

fn push<'a>(out: &mut Tokens<'a>, buf: &mut Vec<u8>, line: usize, whole: Option<&'a [u8]>) {
    let bytes = match whole {
        Some(l) => Cow::Borrowed(l),
        None => Cow::Owned(buf.clone()),
    };
    buf.clear();
    out.tokens.push(Token { bytes, line });
}

/// Splits arguments into the batches xargs would run (X6): each batch costs 10 bytes plus
/// `len + 1` per argument and holds at most `limits.buffer` bytes. Returns the index of the
/// first argument of each batch (one empty batch when there are no arguments: X7).
pub fn batches(tokens: &[Token<'_>], limits: Limits) -> Vec<usize> {
    let mut starts = vec![0];
    let mut used = COMMAND_COST;
    for (i, t) in tokens.iter().enumerate() {
        let cost = t.bytes.len() + 1;
        if used + cost > limits.buffer && used > COMMAND_COST {
            starts.push(i);
            used = COMMAND_COST;
        }
        used += cost;
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(lines: &[&[u8]]) -> (Vec<Vec<u8>>, Option<Break>) {
        let t = tokenize(lines, Limits::DEFAULT);
        (
            t.tokens.into_iter().map(|t| t.bytes.into_owned()).collect(),
            t.brk,
        )
    }

    fn ok(lines: &[&[u8]]) -> Vec<Vec<u8>> {
        let (t, b) = toks(lines);
        assert_eq!(b, None, "{lines:?}");
        t
    }

    #[test]
    fn table_of_tokenizations() {
        type Case<'a> = (&'a [&'a [u8]], &'a [&'a [u8]]);
        let cases: &[Case] = &[
            (&[b"d/a"], &[b"d/a"]),
            (&[b"d/a b"], &[b"d/a", b"b"]),
            (&[b"d/a\tb"], &[b"d/a", b"b"]),
            (&[b"d/a  b "], &[b"d/a", b"b"]),
            // Leading isspace skipped, inner \r \v \f kept (X1).
            (&[b"a \rb"], &[b"a", b"b"]),
            (&[b"\rz"], &[b"z"]),
            (&[b"d/a\rb"], &[b"d/a\rb"]),
            (&[b"d/a\x0bb\x0c"], &[b"d/a\x0bb\x0c"]),
            // NBSP and NEL are not separators.
            (&["d/a\u{a0}b".as_bytes()], &["d/a\u{a0}b".as_bytes()]),
            (&[b"d/a\x85b"], &[b"d/a\x85b"]),
            (&[b"_"], &[b"_"]),
            (&[b""], &[]),
            // Quotes group and vanish (X2).
            (&[b"x'a b'y"], &[b"xa by"]),
            (&[b"d/\"q\" r"], &[b"d/q", b"r"]),
            (&[b"d/'a\\b'"], &[b"d/a\\b"]),
            (&[b"d/''"], &[b"d/"]),
            (&[b"a '' b"], &[b"a", b"", b"b"]),
            // A bare '' at the end of a line is a blank line to xargs, not an empty argument.
            (&[b"a ''"], &[b"a"]),
            // Backslash (X3).
            (&[b"d/a\\ b"], &[b"d/a b"]),
            (&[b"x\\\\y"], &[b"x\\y"]),
            (&[b"d/m\\", b"d/n"], &[b"d/m\nd/n"]),
            (&[b"d/p\\", b"q"], &[b"d/p\nq"]),
            (&[b"d/p\\"], &[b"d/p\n"]),
            (&[b"d/f -b"], &[b"d/f", b"-b"]),
        ];
        for (input, want) in cases {
            let want: Vec<Vec<u8>> = want.iter().map(|w| w.to_vec()).collect();
            assert_eq!(ok(input), want, "input {input:?}");
        }
    }

    #[test]
    fn whole_lines_are_borrowed() {
        let t = tokenize(&[b"d/a", b"d/b c", b" d/e"], Limits::DEFAULT);
        let whole: Vec<bool> = t.tokens.iter().map(|t| t.is_whole_line()).collect();
        assert_eq!(whole, [true, false, false, false]);
    }

    #[test]
    fn unmatched_quote_breaks_with_tokens_so_far() {
        let (t, b) = toks(&[b"d/a", b"d/x \"b"]);
        assert_eq!(t, vec![b"d/a".to_vec(), b"d/x".to_vec()]);
        assert_eq!(
            b,
            Some(Break {
                kind: BreakKind::UnmatchedQuote(b'"'),
                line: 1
            })
        );
        let (_, b) = toks(&[b"it's"]);
        assert_eq!(b.unwrap().kind, BreakKind::UnmatchedQuote(b'\''));
    }

    #[test]
    fn argument_length_limit_is_131061() {
        let fits = vec![b'a'; MAX_ARG];
        assert_eq!(ok(&[&fits]).len(), 1);
        let over = vec![b'a'; MAX_ARG + 1];
        let (t, b) = toks(&[b"x", &over]);
        assert_eq!(t.len(), 1);
        assert_eq!(b.unwrap().kind, BreakKind::TooLong(MAX_ARG));
    }

    #[test]
    fn batches_split_where_an_argument_no_longer_fits() {
        let names: Vec<Vec<u8>> = (0..3).map(|_| vec![b'n'; 60_000]).collect();
        let lines: Vec<&[u8]> = names.iter().map(|n| n.as_slice()).collect();
        let t = tokenize(&lines, Limits::DEFAULT);
        // 10 + 60001 + 60001 = 120012 fits, a third does not.
        assert_eq!(batches(&t.tokens, Limits::DEFAULT), vec![0, 2]);
        assert_eq!(batches(&[], Limits::DEFAULT), vec![0]);
        // A smaller buffer (small stack limit, big environment) cuts sooner, and caps arguments.
        let small = Limits { buffer: 100_000 };
        assert_eq!(batches(&t.tokens, small), vec![0, 1, 2]);
        let (_, b) = {
            let t = tokenize(&lines, Limits { buffer: 60_000 });
            (t.tokens, t.brk)
        };
        assert_eq!(b.unwrap().kind, BreakKind::TooLong(60_000 - 11));
    }
}
