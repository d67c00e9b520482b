//! `sipwasm ctl`: the control API from a shell. It finds the admin listener and its
//! token in the configuration (`admin.listen`, `admin.token` or the data directory's
//! `admin-token`), or takes `--url` and `--token` / `SIPWASM_ADMIN_TOKEN`, and prints
//! the answers as tables (or as they came with `--json`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach the admin API.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` of the admin listener.
    pub authority: String,
    /// The bearer token.
    pub token: String,
}

impl Endpoint {
    /// From `--url` (`http://host:port`, a trailing `/` allowed) or the configuration.
    pub fn resolve(
        url: Option<&str>,
        token: Option<String>,
        config: &crate::config::Config,
    ) -> Result<Self, String> {
        let authority = match url {
            Some(u) => {
                let rest = u.strip_prefix("http://").ok_or_else(|| {
                    format!("--url {u}: the admin listener speaks plain http:// (keep it on loopback or a management network)")
                })?;
                rest.trim_end_matches('/').to_string()
            }
            None => {
                let admin = config
                    .admin
                    .as_ref()
                    .ok_or("the configuration has no [admin] listener: add one, or give --url")?;
                // A listener on every address is reached on loopback (and the
                // `Host` it checks must be an address it has).
                let mut addr = admin.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(if addr.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                addr.to_string()
            }
        };
        let token = match token {
            Some(t) => t,
            None => match config.admin.as_ref().and_then(|a| a.token.clone()) {
                Some(t) => t,
                None => {
                    let file = config.data_dir().join("admin-token");
                    std::fs::read_to_string(&file)
                        .map(|t| t.trim().to_string())
                        .map_err(|e| {
                            format!(
                                "no admin token: give --token or SIPWASM_ADMIN_TOKEN, or let me read {} ({e})",
                                file.display()
                            )
                        })?
                }
            },
        };
        Ok(Self { authority, token })
    }

    /// Sends one request and returns (status, JSON body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let addr: SocketAddr = self
            .authority
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", self.authority))?
            .next()
            .ok_or_else(|| format!("{}: no address", self.authority))?;
        let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|e| format!("cannot reach the admin API at {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Accept: application/json\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.authority,
            self.token,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()))
            .map_err(|e| format!("sending to {addr}: {e}"))?;
        let mut raw = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if Instant::now() > deadline || raw.len() > 64 << 20 {
                return Err(format!("{addr}: the answer took too long or was too large"));
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("reading from {addr}: {e}")),
            }
        }
        parse_answer(&raw)
    }
}

/// Splits an HTTP/1.1 answer read to its end into status and JSON body.
fn parse_answer(raw: &[u8]) -> Result<(u16, Value), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an answer that is not HTTP")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "an answer that is not HTTP")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("an answer that is not HTTP")?;
    let body = &raw[end + 4..];
    let value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).trim().to_string()));
    Ok((status, value))
}

/// Percent-encodes a path segment (an AoR has `:` and `@`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lines of a table: a header, then rows, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// The human form of an answer of `path`'s kind.
pub fn render(kind: &str, v: &Value) -> String {
    let rows = |list: &Value, cols: &[&str]| -> Vec<Vec<String>> {
        list.as_array()
            .map(|a| {
                a.iter()
                    .map(|item| cols.iter().map(|c| cell(&item[*c])).collect())
                    .collect()
            })
            .unwrap_or_default()
    };
    match kind {
        "registrations" => {
            let mut out_rows = Vec::new();
            for r in v["registrations"].as_array().into_iter().flatten() {
                for b in r["bindings"].as_array().into_iter().flatten() {
                    out_rows.push(vec![
                        cell(&r["aor"]),
                        cell(&b["id"]),
                        cell(&b["contact"]),
                        cell(&b["transport"]),
                        cell(&b["source"]),
                        cell(&b["expires_in"]),
                        cell(&b["user_agent"]),
                    ]);
                }
            }
            let mut out = table(
                &[
                    "AOR",
                    "ID",
                    "CONTACT",
                    "TRANSPORT",
                    "SOURCE",
                    "EXPIRES",
                    "USER-AGENT",
                ],
                &out_rows,
            );
            out.push_str(&format!(
                "{} binding(s){}\n",
                cell(&v["total"]),
                if v["truncated"] == Value::Bool(true) {
                    " (list cut: use --limit)"
                } else {
                    ""
                }
            ));
            out
        }
        "registration" => render(
            "registrations",
            &serde_json::json!({ "registrations": [v], "total": v["bindings"].as_array().map_or(0, Vec::len), "truncated": false }),
        ),
        "flows" => {
            let cols = [
                "id",
                "transport",
                "remote",
                "identity",
                "age_seconds",
                "bytes_in",
                "bytes_out",
            ];
            table(
                &[
                    "ID",
                    "TRANSPORT",
                    "REMOTE",
                    "IDENTITY",
                    "AGE(S)",
                    "BYTES-IN",
                    "BYTES-OUT",
                ],
                &rows(&v["flows"], &cols),
            )
        }
        "transactions" => {
            let mut out = format!(
                "server {}  client {}  proxied {}\n",
                cell(&v["server"]),
                cell(&v["client"]),
                cell(&v["proxied"])
            );
            out.push_str(&table(
                &[
                    "ID", "KIND", "METHOD", "STATE", "AGE(MS)", "PEER", "CALL-ID",
                ],
                &rows(
                    &v["transactions"],
                    &["id", "kind", "method", "state", "age_ms", "peer", "call_id"],
                ),
            ));
            out
        }
        "dialogs" => {
            let mut out = format!("{} dialog(s)\n", cell(&v["count"]));
            out.push_str(&table(
                &["CALL-ID", "FROM", "TO", "CALLER", "AGE(S)"],
                &rows(
                    &v["dialogs"],
                    &["call_id", "from", "to", "caller", "age_seconds"],
                ),
            ));
            out
        }
        "plugins" => table(
            &[
                "NAME", "WORLD", "SOURCE", "HASH", "CALLS", "FAILURES", "P50(MS)", "P99(MS)",
            ],
            &rows(
                &v["plugins"],
                &[
                    "name", "world", "source", "hash", "calls", "failures", "p50_ms", "p99_ms",
                ],
            ),
        ),
        "drain" => format!(
            "draining {}  exit when empty {}  flows {}  dialogs {}  transactions {}  empty {}\n",
            cell(&v["draining"]),
            cell(&v["exit_when_empty"]),
            cell(&v["flows"]),
            cell(&v["dialogs"]),
            cell(&v["transactions"]),
            cell(&v["empty"])
        ),
        "status" => format!(
            "sipwasm {} (commit {}){}\nup {} s{}\nflows {}  AoRs {}  bindings {}  dialogs {}  transactions {} server / {} client\n",
            cell(&v["version"]),
            cell(&v["commit"]),
            match &v["node"] {
                Value::String(n) => format!(", node {n}"),
                _ => String::new(),
            },
            cell(&v["uptime_seconds"]),
            if v["draining"] == Value::Bool(true) {
                ", DRAINING"
            } else {
                ""
            },
            cell(&v["flows"]),
            cell(&v["registrations"]["aors"]),
            cell(&v["registrations"]["bindings"]),
            cell(&v["dialogs"]),
            cell(&v["transactions"]["server"]),
            cell(&v["transactions"]["client"]),
        ),
        _ => serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(
            encode_segment("sip:alice@example.com"),
            "sip%3Aalice%40example.com"
        );
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn answers_are_parsed() {
        let (s, v) =
            parse_answer(b"HTTP/1.1 404 Not Found\r\nA: b\r\n\r\n{\"error\":\"x\"}").unwrap();
        assert_eq!(s, 404);
        assert_eq!(v["error"], "x");
        assert!(parse_answer(b"garbage").is_err());
    }

    #[test]
    fn tables_line_up() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    w\n");
    }
}
