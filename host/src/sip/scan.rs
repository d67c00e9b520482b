//! Searching text for one ASCII byte.
//!
//! `str::find(char)` and friends search for a UTF-8 sequence: `memchr` for its last
//! byte, then a `memcmp` call to compare the whole sequence at every candidate (that
//! call showed in profiles of the parser). SIP's separators are ASCII: these compare
//! one byte, with a plain loop for one search in a short value and `memchr` for
//! splitting. An ASCII byte never occurs inside a multi-byte UTF-8 sequence, so every
//! position found is a char boundary.

/// Where ASCII byte `b` first occurs in `s`.
#[inline]
pub(crate) fn find(s: &str, b: u8) -> Option<usize> {
    debug_assert!(b.is_ascii());
    s.bytes().position(|c| c == b)
}

/// Where ASCII byte `b` last occurs in `s`.
#[inline]
pub(crate) fn rfind(s: &str, b: u8) -> Option<usize> {
    debug_assert!(b.is_ascii());
    s.bytes().rposition(|c| c == b)
}

/// `s` split around the first `b`, which belongs to neither side.
#[inline]
pub(crate) fn split_once(s: &str, b: u8) -> Option<(&str, &str)> {
    find(s, b).map(|i| (&s[..i], &s[i + 1..]))
}

/// `s` split around the last `b`, which belongs to neither side.
#[inline]
pub(crate) fn rsplit_once(s: &str, b: u8) -> Option<(&str, &str)> {
    rfind(s, b).map(|i| (&s[..i], &s[i + 1..]))
}

/// The parts of `s` between occurrences of `b` (like `str::split`), searched with
/// `memchr` (vectorised on long text such as a message head).
pub(crate) fn split(s: &str, b: u8) -> impl Iterator<Item = &str> + '_ {
    debug_assert!(b.is_ascii());
    split_at_each(s, move |text| memchr::memchr(b, text.as_bytes()))
}

/// The parts of `s` around each separator byte that `find` locates in what is left:
/// `find` returns the index of an ASCII byte (a char boundary), which belongs to
/// neither side.
pub(crate) fn split_at_each<'a>(
    s: &'a str,
    find: impl Fn(&str) -> Option<usize> + 'a,
) -> impl Iterator<Item = &'a str> + 'a {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let text = rest?;
        match find(text) {
            Some(i) => {
                rest = Some(&text[i + 1..]);
                Some(&text[..i])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_str() {
        for s in [
            "",
            ":",
            "a:b:c",
            "é:ü",
            "no separator",
            "::",
            "ü",
            "[::1]:5060",
        ] {
            assert_eq!(find(s, b':'), s.find(':'), "{s:?}");
            assert_eq!(rfind(s, b':'), s.rfind(':'), "{s:?}");
            assert_eq!(split_once(s, b':'), s.split_once(':'), "{s:?}");
            assert_eq!(rsplit_once(s, b':'), s.rsplit_once(':'), "{s:?}");
            assert_eq!(
                split(s, b':').collect::<Vec<_>>(),
                s.split(':').collect::<Vec<_>>(),
                "{s:?}"
            );
        }
    }
}
