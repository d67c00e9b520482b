//! `plugins.NAME.allowed-outbound-hosts`: the entries a plugin's outbound HTTP may
//! reach ([`crate::plugin`]'s `wasi:http` hooks check each request against them).

/// One entry of `allowed-outbound-hosts`: `http://127.0.0.1:8089`,
/// `https://auth.example.org` (port 443 implied), `https://*.example.org` (any
/// subdomain), `http://127.0.0.1:*` (any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    https: bool,
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.org`: names ending in `.example.org`.
    Suffix(String),
}

impl AllowedHost {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!("{s:?}: write scheme://host[:port], e.g. https://auth.example.org")
        })?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            other => return Err(format!("{s:?}: scheme {other:?} is not http or https")),
        };
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return Err(format!("{s:?}: only scheme://host[:port], no path or user"));
        }
        let (host, port) =
            split_host_port(rest).ok_or_else(|| format!("{s:?}: bad host or port"))?;
        let port = match port {
            None => Some(if https { 443 } else { 80 }),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?}: port {p:?} is not a port number or *"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        let host = match host.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                HostPattern::Suffix(format!(".{suffix}"))
            }
            _ if host.contains('*') => {
                return Err(format!("{s:?}: a wildcard may only be a leading *. label"));
            }
            _ => HostPattern::Exact(host),
        };
        Ok(Self { https, host, port })
    }

    pub(crate) fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        if self.https != https || self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.host {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.ends_with(s.as_str()),
        }
    }
}

/// `host:port`, `[v6]:port`, `host` → (host without brackets, port text).
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            a => Some((host, Some(a.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && !h.is_empty() => Some((h, Some(p))),
        Some(_) => None,
        None => Some((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_entries_say_why() {
        for (bad, why) in [
            ("127.0.0.1:80", "scheme://host"),
            ("ftp://x", "not http or https"),
            ("http://x/path", "no path"),
            ("http://x:http", "not a port number"),
            ("http://a.*.b", "wildcard"),
            ("http://", "no path or user"),
        ] {
            let e = AllowedHost::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
