//! The order `sort` (no options) puts lines in: rules S2–S4 of `recipe-semantics.md`.
//!
//! The locale is resolved from the environment exactly as `setlocale(LC_ALL, "")` resolves it
//! (LC_ALL, then LC_COLLATE, then LANG; an uninstalled locale anywhere silently means C), and
//! lines are compared with glibc's own collation on their raw bytes. There is no byte tie-break:
//! lines that collate equal keep their input (find) order, because the sort is stable.
//!
//! Decision: instead of calling `setlocale` (process-global, not thread-safe while other threads
//! use locale functions) we build a private `locale_t` with `newlocale` and use `strcoll_l` /
//! `strxfrm_l`. glibc resolves `newlocale(LC_ALL_MASK, "", 0)` from the same variables, with the
//! same all-or-nothing failure as `setlocale(LC_ALL, "")`, so the order is the same as sort's,
//! and two collations can coexist in one process (tests, benches).

use std::ffi::CString;

use rayon::prelude::*;

/// Where the collation order comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Collation {
    /// Byte order (`memcmp`): the C and POSIX locales.
    C,
    /// A libc locale name such as `en_US.UTF-8` or `C.UTF-8`. A name libc does not know sorts as
    /// C, as `sort` does, without a warning.
    Locale(String),
}

impl Collation {
    /// The collation `sort` would use in this environment: `LC_ALL` > `LC_COLLATE` > `LANG`.
    /// If the locale setup would fail as a whole (any category names an uninstalled locale),
    /// sort stays in C, and so does this.
    pub fn from_env() -> Collation {
        // SAFETY: newlocale with an empty name reads the environment and returns either a new
        // locale object (freed below) or null; it touches no global state.
        let all = unsafe { libc::newlocale(libc::LC_ALL_MASK, c"".as_ptr(), std::ptr::null_mut()) };
        if all.is_null() {
            return Collation::C;
        }
        // SAFETY: `all` is a valid locale object we own and free exactly once.
        unsafe { libc::freelocale(all) };
        let name = ["LC_ALL", "LC_COLLATE", "LANG"]
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .find(|v| !v.is_empty())
            .unwrap_or_else(|| "C".to_string());
        Collation::from_name(&name)
    }

    /// Byte order.
    pub fn c() -> Collation {
        Collation::C
    }

    /// The collation named `name` (`C` and `POSIX` are byte order).
    pub fn from_name(name: &str) -> Collation {
        match name {
            "C" | "POSIX" | "" => Collation::C,
            _ => Collation::Locale(name.to_string()),
        }
    }

    /// The locale name in effect: "C", "en_US.UTF-8", ...
    pub fn name(&self) -> String {
        match self {
            Collation::C => "C".to_string(),
            Collation::Locale(n) => n.clone(),
        }
    }

    /// A ready-to-use comparator for this collation.
    pub fn collator(&self) -> Collator {
        let Collation::Locale(name) = self else {
            return Collator { loc: None };
        };
        // C.UTF-8 on glibc >= 2.35 collates as strcmp for every byte string (checked
        // differentially in tests/recipe.rs), so it takes the memcmp fast path.
        if is_c_utf8(name) {
            return Collator { loc: None };
        }
        let Ok(cname) = CString::new(name.as_bytes()) else {
            return Collator { loc: None };
        };
        // SAFETY: `cname` is NUL-terminated; a null result (unknown locale) means C order.
        let loc =
            unsafe { libc::newlocale(libc::LC_COLLATE_MASK, cname.as_ptr(), std::ptr::null_mut()) };
        Collator {
            loc: (!loc.is_null()).then(|| Locale(loc)),
        }
    }
}

fn is_c_utf8(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "c.utf-8" || lower == "c.utf8"
}

/// An owned glibc locale object.
struct Locale(libc::locale_t);

// SAFETY: a locale_t is immutable after newlocale returns; glibc documents strcoll_l and
// strxfrm_l as MT-Safe, so sharing it between rayon workers is sound.
unsafe impl Send for Locale {}
// SAFETY: see above; only read-only libc calls use the pointer.
unsafe impl Sync for Locale {}

impl Drop for Locale {
    fn drop(&mut self) {
        // SAFETY: the pointer came from newlocale, is non-null and is freed exactly once.
        unsafe { libc::freelocale(self.0) }
    }
}

extern "C" {
    // glibc exports both since 2.3; the libc crate does not declare them for linux-gnu.
    fn strcoll_l(
        a: *const libc::c_char,
        b: *const libc::c_char,
        loc: libc::locale_t,
    ) -> libc::c_int;
    fn strxfrm_l(
        dst: *mut libc::c_char,
        src: *const libc::c_char,
        n: libc::size_t,
        loc: libc::locale_t,
    ) -> libc::size_t;
}

/// Compares lines in one collation. `None` = byte order.
pub struct Collator {
    loc: Option<Locale>,
}

impl Collator {
    /// True when this is plain byte order.
    pub fn is_bytes(&self) -> bool {
        self.loc.is_none()
    }

    /// strcoll of two lines (which never contain NUL: they are pieces of file names).
    pub fn compare(&self, a: &[u8], b: &[u8]) -> std::cmp::Ordering {
        if self.loc.is_none() {
            return a.cmp(b);
        }
        self.compare_c(&nul_terminated(a), &nul_terminated(b))
    }

    /// [`Collator::compare`] of lines already NUL-terminated.
    fn compare_c(&self, a: &std::ffi::CStr, b: &std::ffi::CStr) -> std::cmp::Ordering {
        let Some(loc) = &self.loc else {
            return a.to_bytes().cmp(b.to_bytes());
        };
        // SAFETY: both strings are NUL-terminated and live across the call; loc is valid.
        let r = unsafe { strcoll_l(a.as_ptr(), b.as_ptr(), loc.0) };
        r.cmp(&0)
    }

    /// The strxfrm key of a line: comparing keys bytewise gives the strcoll order.
    pub fn key(&self, a: &[u8]) -> Vec<u8> {
        let Some(loc) = &self.loc else {
            return a.to_vec();
        };
        let c = nul_terminated(a);
        let mut out: Vec<u8> = Vec::with_capacity(a.len() * 4 + 16);
        loop {
            // SAFETY: `out` has `capacity` writable bytes; strxfrm_l writes at most n bytes and
            // returns the length it needs (excluding the NUL).
            let need =
                unsafe { strxfrm_l(out.as_mut_ptr().cast(), c.as_ptr(), out.capacity(), loc.0) };
            if need < out.capacity() {
                // SAFETY: strxfrm_l wrote `need` bytes plus a NUL within the capacity.
                unsafe { out.set_len(need) };
                return out;
            }
            out.reserve(need + 1);
        }
    }
}

fn nul_terminated(a: &[u8]) -> CString {
    // File names cannot contain NUL, so neither can their lines; a NUL would be a caller bug,
    // and truncating at it is what the C library would see anyway.
    let end = a.iter().position(|&b| b == 0).unwrap_or(a.len());
    CString::new(&a[..end]).unwrap_or_default()
}

/// Sorts `items` by their line (`line_of`) the way `sort` would: stably, in this collation.
pub fn sort_by_line<T: Send + Sync>(
    items: &mut Vec<T>,
    collation: &Collation,
    line_of: fn(&T) -> &[u8],
) {
    let coll = collation.collator();
    if coll.is_bytes() {
        // Equal byte strings are indistinguishable, so stability cannot show; but ties still
        // carry different payloads (path indices), so keep the stable sort.
        items.par_sort_by(|a, b| line_of(a).cmp(line_of(b)));
        return;
    }
    // Precompute the strxfrm keys in parallel, then a stable sort on key bytes: fast, and
    // almost always sort's order. Almost: glibc's strxfrm and strcoll disagree on some pairs
    // (in en_US.UTF-8, `file1-A.txt` collates before `file1a.txt`, but its key sorts after;
    // about 2 in 10,000 random pairs), and sort uses strcoll. So an insertion pass with
    // strcoll then puts every line in strcoll order: n - 1 comparisons, plus one per pair the
    // keys got wrong. It moves a line only past lines strcoll calls greater, so it is stable.
    let (keys, lines): (Vec<Vec<u8>>, Vec<CString>) = items
        .par_iter()
        .map(|t| (coll.key(line_of(t)), nul_terminated(line_of(t))))
        .unzip();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.par_sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    drop(keys);
    for i in 1..order.len() {
        let mut j = i;
        while j > 0
            && coll
                .compare_c(&lines[order[j - 1]], &lines[order[j]])
                .is_gt()
        {
            order.swap(j - 1, j);
            j -= 1;
        }
    }
    drop(lines);
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(
        order
            .into_iter()
            .map(|i| slots[i].take().expect("each index once")),
    );
}

/// True when libc can load the collation of locale `name`.
pub fn is_installed(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: c is NUL-terminated; a non-null result is freed at once.
    let loc = unsafe { libc::newlocale(libc::LC_COLLATE_MASK, c.as_ptr(), std::ptr::null_mut()) };
    if loc.is_null() {
        return false;
    }
    // SAFETY: non-null locale from newlocale, freed once.
    unsafe { libc::freelocale(loc) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(coll: &Collation, input: &[&str]) -> Vec<String> {
        let mut v: Vec<Vec<u8>> = input.iter().map(|s| s.as_bytes().to_vec()).collect();
        sort_by_line(&mut v, coll, |x| x.as_slice());
        v.into_iter()
            .map(|x| String::from_utf8(x).unwrap())
            .collect()
    }

    fn words(s: &str) -> Vec<&str> {
        s.split(' ').collect()
    }

    #[test]
    fn c_order_is_bytes_with_prefix_first() {
        let want = words("A AA Ab B Z a aB aa b z");
        let mut shuffled = want.clone();
        shuffled.reverse();
        assert_eq!(sorted(&Collation::C, &shuffled), want);
        let utf8 = Collation::Locale("C.UTF-8".into());
        assert_eq!(sorted(&utf8, &shuffled), want);
    }

    // Tables from recipe-semantics.md, observed with GNU sort on glibc 2.36.
    const EN_US_TABLES: &[&str] = &[
        "a A aa AA aB Ab b B z Z",
        "a a! a(1) a%b a+b a,b a-b a.b a=b a_b a~b ab #x -x .x @x [x] _x {x} ~x x",
        "01 1 10 100 1-5 1.5 2 9 a-1 a_1 a1 a10 a2",
        "a_ a0 a/a/a aa/c a-b a.b a/b ab",
    ];

    /// True when en_US.UTF-8 is generated; in CI its absence is a failure, not a skip.
    fn have_en_us() -> bool {
        let have = is_installed("en_US.UTF-8");
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(
            have || !ci,
            "en_US.UTF-8 must be generated in CI (locale-gen)"
        );
        have
    }

    #[test]
    fn en_us_order_matches_gnu_sort_tables() {
        if !have_en_us() {
            return;
        }
        let en = Collation::Locale("en_US.UTF-8".into());
        for table in EN_US_TABLES {
            let want = words(table);
            let mut shuffled = want.clone();
            shuffled.reverse();
            assert_eq!(sorted(&en, &shuffled), want, "table {table}");
        }
    }

    /// The sort follows strcoll (what `sort` calls), also on lines whose strxfrm keys order
    /// them the other way: the set holds such pairs, and the test checks it does.
    #[test]
    fn sorted_lines_follow_strcoll_where_strxfrm_keys_disagree() {
        if !have_en_us() {
            return;
        }
        let en = Collation::Locale("en_US.UTF-8".into());
        let coll = en.collator();
        let mut set: Vec<Vec<u8>> = Vec::new();
        for t in EN_US_TABLES {
            set.extend(t.split(' ').map(|w| w.as_bytes().to_vec()));
        }
        for s in [
            "\u{e000}",
            "\u{e001}",
            "A\u{30a}",
            "Å",
            "ä",
            "e",
            "e\u{301}",
            "é",
            "ﬁ",
            "fi",
            "ß",
            "ss",
            "中",
            "😀",
            "ı",
            "I",
            "x y",
            "x\ty",
            "x\ry",
            "d/a b",
            "d/-b",
            "",
            "file1-A.txt",
            "file1a.txt",
            "1.A",
            "1a",
            "1 A",
            "\u{301}a",
            "\u{301}b",
        ] {
            set.push(s.as_bytes().to_vec());
        }
        let disagree = set.iter().any(|a| {
            set.iter()
                .any(|b| coll.compare(a, b) != coll.key(a).cmp(&coll.key(b)))
        });
        assert!(
            disagree,
            "no pair where strxfrm and strcoll disagree: the test proves nothing"
        );
        let mut sorted = set.clone();
        sort_by_line(&mut sorted, &en, |x| x.as_slice());
        for w in sorted.windows(2) {
            assert!(
                coll.compare(&w[0], &w[1]).is_le(),
                "{:?} before {:?}",
                w[0].escape_ascii().to_string(),
                w[1].escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn invalid_bytes_tie_and_keep_input_order() {
        if !have_en_us() {
            return;
        }
        let en = Collation::Locale("en_US.UTF-8".into());
        let mut v: Vec<(Vec<u8>, usize)> = vec![(vec![0xff], 0), (vec![0xc3], 1), (vec![0xfe], 2)];
        sort_by_line(&mut v, &en, |x| x.0.as_slice());
        assert_eq!(v.iter().map(|x| x.1).collect::<Vec<_>>(), [0, 1, 2]);
        let mut v: Vec<(Vec<u8>, usize)> = vec![(vec![0xfe], 0), (vec![0xff], 1), (vec![0xc3], 2)];
        sort_by_line(&mut v, &en, |x| x.0.as_slice());
        assert_eq!(v.iter().map(|x| x.1).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn c_utf8_strcoll_is_strcmp_so_memcmp_is_exact() {
        // The fast path's premise (glibc >= 2.35): in C.UTF-8, strcoll orders every byte string,
        // invalid UTF-8 included, exactly as strcmp. Checked here with glibc's own strcoll_l.
        let name = CString::new("C.UTF-8").unwrap();
        // SAFETY: NUL-terminated name; the locale is freed by Locale's Drop.
        let loc =
            unsafe { libc::newlocale(libc::LC_COLLATE_MASK, name.as_ptr(), std::ptr::null_mut()) };
        assert!(!loc.is_null(), "C.UTF-8 is built into glibc >= 2.35");
        let coll = Collator {
            loc: Some(Locale(loc)),
        };
        let mut set: Vec<Vec<u8>> = (1u8..=255).map(|b| vec![b]).collect();
        for s in [
            "a", "A", "é", "e\u{301}", "ß", "中", "😀", "\u{e000}", "a b", "a-b", "ab",
        ] {
            set.push(s.as_bytes().to_vec());
        }
        for pair in [
            [0xc3u8, 0xa9],
            [0xc3, 0x28],
            [0xe2, 0x82],
            [0xf0, 0x9f],
            [0xed, 0xa0],
        ] {
            set.push(pair.to_vec());
            set.push([&b"x"[..], &pair[..], b"y"].concat());
        }
        for a in &set {
            for b in &set {
                assert_eq!(coll.compare(a, b), a.cmp(b), "{:?} vs {:?}", a, b);
            }
        }
    }

    #[test]
    fn unknown_locale_sorts_as_c() {
        let xx = Collation::Locale("xx_YY.UTF-8".into());
        assert!(xx.collator().is_bytes());
        assert_eq!(Collation::from_name("POSIX"), Collation::C);
    }
}
