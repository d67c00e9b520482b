//! SIP header fields: an order-preserving multimap over raw values, with canonical
//! names (compact forms expanded) and typed access on demand.

use std::fmt;

use super::scan;

macro_rules! header_names {
    ($( $variant:ident => $canon:literal $(, $compact:literal)? ; )*) => {
        /// A header field name. Known names are compared case-insensitively and
        /// compact forms (`v`, `f`, `t`, `i`, `m`, `l`, ...) map to their long form.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $(
                #[doc = $canon]
                $variant,
            )*
            /// Any other name, as received.
            Other(Box<str>),
        }

        impl HeaderName {
            /// Maps a received name (any case, compact or long) to a [`HeaderName`].
            pub fn parse(name: &str) -> Self {
                $(
                    if name.eq_ignore_ascii_case($canon) $(|| name.eq_ignore_ascii_case($compact))? {
                        return Self::$variant;
                    }
                )*
                Self::Other(name.into())
            }

            /// The canonical (long) spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $canon, )*
                    Self::Other(s) => s,
                }
            }
        }
    };
}

header_names! {
    Accept => "Accept";
    AcceptContact => "Accept-Contact", "a";
    AcceptEncoding => "Accept-Encoding";
    Allow => "Allow";
    AllowEvents => "Allow-Events", "u";
    Authorization => "Authorization";
    CallId => "Call-ID", "i";
    Contact => "Contact", "m";
    ContentDisposition => "Content-Disposition";
    ContentEncoding => "Content-Encoding", "e";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    CSeq => "CSeq";
    Date => "Date";
    Event => "Event", "o";
    Expires => "Expires";
    FlowTimer => "Flow-Timer";
    From => "From", "f";
    MaxForwards => "Max-Forwards";
    MinExpires => "Min-Expires";
    Path => "Path";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyRequire => "Proxy-Require";
    RecordRoute => "Record-Route";
    ReferTo => "Refer-To", "r";
    ReferredBy => "Referred-By", "b";
    RejectContact => "Reject-Contact", "j";
    Require => "Require";
    RetryAfter => "Retry-After";
    Route => "Route";
    Server => "Server";
    SessionExpires => "Session-Expires", "x";
    Subject => "Subject", "s";
    Supported => "Supported", "k";
    Timestamp => "Timestamp";
    To => "To", "t";
    Unsupported => "Unsupported";
    UserAgent => "User-Agent";
    Via => "Via", "v";
    Warning => "Warning";
    WwwAuthenticate => "WWW-Authenticate";
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field line (after unfolding), value trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name.
    pub name: HeaderName,
    /// Raw value.
    pub value: String,
}

/// Header fields in received order; repeated names stay repeated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// An empty set.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// An empty set with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Appends a field.
    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Inserts a field before all others (e.g. a new top Via).
    pub fn push_front(&mut self, name: HeaderName, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name,
                value: value.into(),
            },
        );
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.0
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// All field lines of `name`, in order (a line may hold a comma-separated list).
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// All values of a list header (`Via`, `Contact`, `Route`...), splitting lines at
    /// commas that are outside quotes and angle brackets.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name).flat_map(split_list)
    }

    /// How many field lines have `name`.
    pub fn count(&self, name: &HeaderName) -> usize {
        self.0.iter().filter(|h| &h.name == name).count()
    }

    /// Removes every field named `name`.
    pub fn remove_all(&mut self, name: &HeaderName) {
        self.0.retain(|h| &h.name != name);
    }

    /// Iterates over all fields in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of field lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes the first value of a list header (`Via`, `Route`...), whether it stands
    /// alone on its line or first in a comma-separated line.
    pub fn remove_first_value(&mut self, name: &HeaderName) {
        self.take_end_value(name, true);
    }

    /// Removes and returns the last value of a list header, whether it stands alone on
    /// its line or last in a comma-separated line.
    pub fn take_last_value(&mut self, name: &HeaderName) -> Option<String> {
        self.take_end_value(name, false)
    }

    fn take_end_value(&mut self, name: &HeaderName, first: bool) -> Option<String> {
        let pos = if first {
            self.0.iter().position(|h| &h.name == name)
        } else {
            self.0.iter().rposition(|h| &h.name == name)
        }?;
        let mut values: Vec<&str> = split_list(&self.0[pos].value).collect();
        let taken = if first {
            (!values.is_empty()).then(|| values.remove(0))
        } else {
            values.pop()
        }
        .map(str::to_string);
        if values.is_empty() {
            self.0.remove(pos);
        } else {
            self.0[pos].value = values.join(", ");
        }
        taken
    }

    /// Mutable access to the first field named `name`.
    pub fn first_mut(&mut self, name: &HeaderName) -> Option<&mut Header> {
        self.0.iter_mut().find(|h| &h.name == name)
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Splits a header value at top-level commas (not inside `"..."` or `<...>`), trimming
/// each part and skipping empty ones.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> + '_ {
    SplitList { rest: Some(value) }
        .map(str::trim_ascii)
        .filter(|p| !p.is_empty())
}

/// The first value of a list line (trimmed) and the rest of the line from the comma
/// after it (empty when it is the only value).
pub fn first_value(value: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    for part in (SplitList { rest: Some(value) }) {
        let end = offset + part.len();
        let trimmed = part.trim_ascii();
        if !trimmed.is_empty() {
            return Some((trimmed, &value[end..]));
        }
        offset = end + 1;
    }
    None
}

/// The parts of a list value, untrimmed; no allocation.
struct SplitList<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for SplitList<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let value = self.rest?;
        let bytes = value.as_bytes();
        let (mut in_quotes, mut in_angle, mut i) = (false, false, 0);
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_quotes => i += 1,
                b'"' => in_quotes = !in_quotes,
                b'<' if !in_quotes => in_angle = true,
                b'>' if !in_quotes => in_angle = false,
                b',' if !in_quotes && !in_angle => {
                    self.rest = Some(&value[i + 1..]);
                    return Some(&value[..i]);
                }
                _ => {}
            }
            i += 1;
        }
        self.rest = None;
        Some(value)
    }
}

/// Parameters `;name[=value]` as ordered pairs; names lower-cased on lookup only.
pub type Params = Vec<(String, Option<String>)>;

/// Looks up a parameter case-insensitively.
pub fn param<'a>(params: &'a Params, name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// Parses `;a=b;c;d="x;y"` (the leading `;` optional) into params. Quoted values keep
/// their quotes.
pub fn parse_params(s: &str) -> Result<Params, &'static str> {
    let mut out = Vec::new();
    each_param(s, |n, v| out.push((n.to_string(), v.map(str::to_string))))?;
    Ok(out)
}

/// Checks parameters as [`parse_params`] does, without building them.
pub fn check_params(s: &str) -> Result<(), &'static str> {
    each_param(s, |_, _| {})
}

/// The one parameter grammar: calls `f` with each name and value (trimmed, quotes
/// kept) in order, or fails at the first bad one.
fn each_param<'a>(
    s: &'a str,
    mut f: impl FnMut(&'a str, Option<&'a str>),
) -> Result<(), &'static str> {
    for part in param_parts(s) {
        if part.is_empty() {
            return Err("empty parameter");
        }
        let (n, v) = split_param(part);
        if n.is_empty() || !n.bytes().all(is_token_char) {
            return Err("invalid parameter name");
        }
        if let Some(v) = v {
            if v.is_empty() {
                return Err("parameter without value after '='");
            }
            if v.starts_with('"') && !(v.len() >= 2 && v.ends_with('"')) {
                return Err("unterminated quoted parameter");
            }
        }
        f(n, v);
    }
    Ok(())
}

/// Each parameter of a parameter string already checked by [`check_params`] (or
/// [`parse_params`]): name and value, trimmed, quotes kept; no allocation.
pub fn params_of(s: &str) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
    param_parts(s).filter(|p| !p.is_empty()).map(split_param)
}

/// The `;`-separated parts of a parameter string (the leading `;` optional), trimmed;
/// none for a blank string.
fn param_parts(s: &str) -> impl Iterator<Item = &str> + '_ {
    let s = s.trim_ascii();
    let s = s.strip_prefix(';').unwrap_or(s).trim_ascii();
    split_outside_quotes(s, b';')
        .take_while(move |_| !s.is_empty())
        .map(str::trim_ascii)
}

/// `name=value` or `name`, both trimmed.
fn split_param(part: &str) -> (&str, Option<&str>) {
    match scan::split_once(part, b'=') {
        Some((n, v)) => (n.trim_ascii(), Some(v.trim_ascii())),
        None => (part, None),
    }
}

/// Looks up a parameter of a checked parameter string case-insensitively (see
/// [`params_of`]).
pub fn find_param<'a>(s: &'a str, name: &str) -> Option<Option<&'a str>> {
    params_of(s)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Splits at `sep` outside double quotes; no allocation.
pub(crate) fn split_outside_quotes(s: &str, sep: u8) -> impl Iterator<Item = &str> + '_ {
    scan::split_at_each(s, move |rest| find_unquoted(rest, sep))
}

/// Where the first `c` outside double quotes is (backslash escapes honoured inside
/// quotes).
pub(crate) fn find_unquoted(s: &str, c: u8) -> Option<usize> {
    let b = s.as_bytes();
    let (mut in_q, mut i) = (false, 0);
    while i < b.len() {
        match b[i] {
            b'\\' if in_q => i += 1,
            b'"' => in_q = !in_q,
            x if x == c && !in_q => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Writes params back as `;a=b;c`.
pub fn write_params(f: &mut impl fmt::Write, params: &Params) -> fmt::Result {
    for (n, v) in params {
        f.write_str(";")?;
        f.write_str(n)?;
        if let Some(v) = v {
            f.write_str("=")?;
            f.write_str(v)?;
        }
    }
    Ok(())
}

/// RFC 3261 `token` characters.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case() {
        assert_eq!(HeaderName::parse("v"), HeaderName::Via);
        assert_eq!(HeaderName::parse("VIA"), HeaderName::Via);
        assert_eq!(HeaderName::parse("i"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("call-id"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("l").as_str(), "Content-Length");
        assert_eq!(HeaderName::parse("X-Foo").as_str(), "X-Foo");
    }

    #[test]
    fn list_splitting_respects_quotes_and_brackets() {
        let v: Vec<_> = split_list(r#""A, B" <sip:a@b;x=1,2>;q=1, <sip:c@d> , "#).collect();
        assert_eq!(v, [r#""A, B" <sip:a@b;x=1,2>;q=1"#, "<sip:c@d>"]);
    }

    #[test]
    fn first_value_and_rest() {
        assert_eq!(first_value("a, b ,c"), Some(("a", ", b ,c")));
        assert_eq!(first_value(" , <x,y> ;q=1"), Some(("<x,y> ;q=1", "")));
        assert_eq!(first_value(" , "), None);
    }

    #[test]
    fn params() {
        let p = parse_params(";branch=z9hG4bK1;rport;x=\"a;b\"").unwrap();
        assert_eq!(param(&p, "BRANCH"), Some(Some("z9hG4bK1")));
        assert_eq!(param(&p, "rport"), Some(None));
        assert_eq!(param(&p, "x"), Some(Some("\"a;b\"")));
        assert!(parse_params(";a=").is_err());
        assert!(parse_params(";;").is_err());
        let mut s = String::new();
        write_params(&mut s, &p).unwrap();
        assert_eq!(s, ";branch=z9hG4bK1;rport;x=\"a;b\"");
    }
}
