//! The configuration's checks, one function per table, each error naming its key.

use std::time::Duration;

use super::{AllowedHost, Config, ListenTransport};

/// A key and what is wrong with its value.
pub(super) type Invalid = (String, String);

impl Config {
    /// Checks every key (see [`Invalid`]); the first problem found is the error.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        self.check_server()?;
        self.check_listeners()?;
        self.check_sip()?;
        self.check_admin()?;
        self.check_plugins()?;
        self.check_http()?;
        self.check_websocket()?;
        self.check_runtime()?;
        self.media.check()?;
        self.dns.check()?;
        self.tls_client.check()?;
        self.capture.check()?;
        self.check_gateways()?;
        if let Some(c) = &self.cluster {
            c.check(&self.listen)?;
        }
        self.check_keys()?;
        Ok(())
    }

    /// `[keys.NAME]` names (each becomes a file name) and each plugin's grants; the
    /// user store's realm.
    fn check_keys(&self) -> Result<(), Invalid> {
        if let Some(r) = &self.users.realm
            && !crate::users::name_is_valid(r)
        {
            return Err((
                "users.realm".into(),
                "a realm is 1 to 256 characters, no `:` and no control characters".into(),
            ));
        }
        for name in self.keys.keys() {
            if !crate::keys::name_is_valid(name) {
                return Err((
                    format!("keys.{name}"),
                    "a key name is 1 to 64 letters, digits, - and _".into(),
                ));
            }
        }
        for (plugin, p) in &self.plugins {
            for k in &p.keys {
                if !self.keys.contains_key(k) {
                    return Err((
                        format!("plugins.{plugin}.keys"),
                        format!("no key named {k:?} in [keys]"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The server's own keys, and that there is something to listen on.
    fn check_server(&self) -> Result<(), Invalid> {
        if self.listen.is_empty() {
            return Err(("listen".into(), "at least one [[listen]] is needed".into()));
        }
        if self.server.domains.is_empty() {
            return Err((
                "server.domains".into(),
                "must name at least one domain".into(),
            ));
        }
        for (i, d) in self.server.domains.iter().enumerate() {
            if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
                return Err((
                    format!("server.domains[{i}]"),
                    format!("{d:?} is not a host name"),
                ));
            }
        }
        if self.server.server_header.contains(['\r', '\n', '\0']) {
            return Err((
                "server.server-header".into(),
                "must not contain CR, LF or NUL".into(),
            ));
        }
        Ok(())
    }

    /// Each `[[listen]]`: its plugin or routes, its address, its certificate.
    fn check_listeners(&self) -> Result<(), Invalid> {
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.listen.iter().enumerate() {
            let key = |k: &str| format!("listen[{i}].{k}");
            let has_plugin = l.plugin.is_some() || !l.routes.is_empty();
            if has_plugin && !l.transport.is_web() {
                return Err((
                    key("plugin"),
                    format!(
                        "only ws and wss listeners take a plugin, not {}",
                        l.transport
                    ),
                ));
            }
            if !has_plugin && l.transport.is_web() {
                return Err((
                    key("plugin"),
                    format!("a {} listener needs a plugin (or routes)", l.transport),
                ));
            }
            if let Some(p) = &l.plugin
                && !self.plugins.contains_key(p)
            {
                return Err((key("plugin"), format!("no plugin named {p:?} in [plugins]")));
            }
            if l.identity == super::IdentityMode::Enforce && !l.transport.is_web() {
                return Err((
                    key("identity"),
                    format!(
                        "only ws and wss listeners have an identity to enforce (a plugin attaches it at upgrade), not {}",
                        l.transport
                    ),
                ));
            }
            for (prefix, p) in &l.routes {
                if !prefix.starts_with('/') {
                    return Err((
                        key("routes"),
                        format!("prefix {prefix:?} must start with /"),
                    ));
                }
                if !self.plugins.contains_key(p) {
                    return Err((
                        key("routes"),
                        format!("no plugin named {p:?} in [plugins] (for {prefix:?})"),
                    ));
                }
            }
            // SIP listeners put their address in Via and Record-Route, where phones must
            // be able to reach it: 0.0.0.0 would send their in-dialog requests nowhere.
            // (A ws/wss listener may be a wildcard: browsers' in-dialog requests come
            // back over their own connection, found by the flow token.)
            if !l.transport.is_web() && l.address.ip().is_unspecified() {
                return Err((
                    key("address"),
                    format!(
                        "{} is a wildcard address; a {} listener's address goes into Via and \
                         Record-Route, so it must be one phones can reach: give the \
                         address itself (one [[listen]] per address)",
                        l.address, l.transport
                    ),
                ));
            }
            // UDP and TCP may share a port; two stream listeners may not.
            let kind = l.transport == ListenTransport::Udp;
            if l.address.port() != 0 && !seen.insert((l.address, kind)) {
                return Err((
                    key("address"),
                    format!("{} is used by two listeners", l.address),
                ));
            }
            match (l.transport.is_tls(), &l.tls_cert, &l.tls_key) {
                (false, None, None) => {}
                (false, _, _) => {
                    return Err((
                        key("tls-cert"),
                        "only tls and wss listeners take a certificate".into(),
                    ));
                }
                (true, Some(_), None) => {
                    return Err((
                        key("tls-key"),
                        "tls-cert is set, so tls-key is needed too".into(),
                    ));
                }
                (true, None, Some(_)) => {
                    return Err((
                        key("tls-cert"),
                        "tls-key is set, so tls-cert is needed too".into(),
                    ));
                }
                (true, _, _) => {}
            }
        }
        Ok(())
    }

    /// `[sip]` (and `[limits]`), the router plugin, and no open registrar off loopback unless asked for.
    fn check_sip(&self) -> Result<(), Invalid> {
        let sip = &self.sip;
        if sip.max_message_bytes < 1024 || sip.max_message_bytes > 65_535 {
            return Err((
                "sip.max-message-bytes".into(),
                "must be between 1KiB and 65535".into(),
            ));
        }
        if sip.min_expires == 0 || sip.min_expires > sip.max_expires {
            return Err((
                "sip.min-expires".into(),
                "must be at least 1 and at most sip.max-expires".into(),
            ));
        }
        if sip.default_expires < sip.min_expires || sip.default_expires > sip.max_expires {
            return Err((
                "sip.default-expires".into(),
                "must be between sip.min-expires and sip.max-expires".into(),
            ));
        }
        if sip.t1 < Duration::from_millis(10) || sip.t2 < sip.t1 || sip.t4 < sip.t1 {
            return Err((
                "sip.t1".into(),
                "T1 must be at least 10ms and at most T2 and T4".into(),
            ));
        }
        self.limits.validate()?;
        if sip.max_bindings == 0 {
            return Err(("sip.max-bindings".into(), "must be at least 1".into()));
        }
        if sip.max_contacts == 0 || sip.max_contacts > 10_000 {
            return Err((
                "sip.max-contacts".into(),
                "must be between 1 and 10000".into(),
            ));
        }
        if sip.timer_c < Duration::from_secs(1) {
            return Err(("sip.timer-c".into(), "must be at least 1s".into()));
        }
        if sip.failover_after < Duration::from_millis(100) || sip.failover_after > 64 * sip.t1 {
            return Err((
                "sip.failover-after".into(),
                "must be between 100ms and 64*T1 (the transaction timeout)".into(),
            ));
        }
        for (key, d) in [
            ("sip.auth-failure-window", sip.auth_failure_window),
            ("sip.auth-ban", sip.auth_ban),
        ] {
            if d < Duration::from_secs(1) || d > Duration::from_secs(7 * 24 * 3600) {
                return Err((key.into(), "must be between 1s and 7 days".into()));
            }
        }
        let algs = &self.sip.digest_algorithms;
        if algs.is_empty()
            || algs.iter().any(|a| a != "MD5" && a != "SHA-256")
            || (algs.len() == 2 && algs[0] == algs[1])
            || algs.len() > 2
        {
            return Err((
                "sip.digest-algorithms".into(),
                "list \"MD5\" and/or \"SHA-256\", each once, in the order to offer them".into(),
            ));
        }
        if let Some(r) = &self.sip.router
            && !self.plugins.contains_key(r)
        {
            return Err((
                "sip.router".into(),
                format!("no plugin named {r:?} in [plugins]"),
            ));
        }
        // Without a router, the registrar takes every REGISTER it is sent: fine on
        // loopback (the embedded default), a registration hijack on a public address.
        if self.sip.router.is_none()
            && !self.sip.open_registration
            && let Some((i, l)) = self
                .listen
                .iter()
                .enumerate()
                .find(|(_, l)| !l.address.ip().is_loopback())
        {
            return Err((
                "sip.open-registration".into(),
                format!(
                    "listen[{i}] ({} {}) is not on loopback and there is no sip.router: \
                         anyone who reaches it could register, unregister or look up any \
                         address-of-record. Set sip.router to a plugin that authenticates \
                         (e.g. call-policy), or set sip.open-registration = true if an open \
                         registrar is what you want",
                    l.transport, l.address
                ),
            ));
        }
        Ok(())
    }

    /// `[admin]`: a token off loopback, host names.
    fn check_admin(&self) -> Result<(), Invalid> {
        if let Some(admin) = &self.admin {
            match &admin.token {
                None if !admin.listen.ip().is_loopback() => {
                    return Err((
                        "admin.token".into(),
                        format!(
                            "admin.listen ({}) is not on loopback: set a token (at least 32 \
                             characters) that clients send as `Authorization: Bearer …`",
                            admin.listen
                        ),
                    ));
                }
                Some(t) if t.len() < 32 || !t.bytes().all(|b| b.is_ascii_graphic()) => {
                    return Err((
                        "admin.token".into(),
                        "must be at least 32 printable characters, no spaces".into(),
                    ));
                }
                _ => {}
            }
            if let Some(h) = admin.hosts.iter().find(|h| {
                h.is_empty()
                    || h.contains(|c: char| c.is_whitespace() || c == '/' || c == '@' || c == ':')
            }) {
                return Err((
                    "admin.hosts".into(),
                    format!("{h:?} is not a host name (names only, without a port)"),
                ));
            }
        }
        Ok(())
    }

    /// Each `[plugins.NAME]`.
    fn check_plugins(&self) -> Result<(), Invalid> {
        for (name, p) in &self.plugins {
            let key = |k: &str| format!("plugins.{name}.{k}");
            match (&p.path, &p.builtin) {
                (Some(_), Some(_)) => {
                    return Err((
                        key("builtin"),
                        "set either path or builtin, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err((key("path"), "set path (a .wasm file) or builtin".into()));
                }
                (None, Some(b)) if !crate::builtin::NAMES.contains(&b.as_str()) => {
                    return Err((
                        key("builtin"),
                        format!(
                            "unknown builtin {b:?}; builtins: {}",
                            crate::builtin::NAMES.join(", ")
                        ),
                    ));
                }
                _ => {}
            }
            if p.deadline < Duration::from_millis(1) || p.deadline > Duration::from_secs(10) {
                return Err((key("deadline"), "must be between 1ms and 10s".into()));
            }
            if p.memory_limit < (1 << 20) || p.memory_limit > (4 << 30) - 1 {
                return Err((key("memory-limit"), "must be between 1MiB and 4GiB".into()));
            }
            if p.max_reuse == 0 {
                return Err((key("max-reuse"), "must be at least 1".into()));
            }
            for entry in &p.allowed_outbound_hosts {
                AllowedHost::parse(entry).map_err(|e| (key("allowed-outbound-hosts"), e))?;
            }
            if p.outbound_timeout.is_zero() || p.outbound_timeout > Duration::from_secs(60) {
                return Err((
                    key("outbound-timeout"),
                    "must be between 1ms and 60s".into(),
                ));
            }
        }
        Ok(())
    }

    /// `[http]`.
    fn check_http(&self) -> Result<(), Invalid> {
        let h = &self.http;
        if h.max_head_bytes < 256 {
            return Err(("http.max-head-bytes".into(), "must be at least 256".into()));
        }
        if h.max_headers == 0 {
            return Err(("http.max-headers".into(), "must be at least 1".into()));
        }
        if h.head_timeout.is_zero() {
            return Err(("http.head-timeout".into(), "must be more than 0".into()));
        }
        if h.idle_timeout.is_zero() {
            return Err(("http.idle-timeout".into(), "must be more than 0".into()));
        }
        Ok(())
    }

    /// `[websocket]`.
    fn check_websocket(&self) -> Result<(), Invalid> {
        let w = &self.websocket;
        if w.max_message_bytes < 1024 {
            return Err((
                "websocket.max-message-bytes".into(),
                "must be at least 1KiB".into(),
            ));
        }
        if w.read_buffer_bytes < 256 {
            return Err((
                "websocket.read-buffer-bytes".into(),
                "must be at least 256".into(),
            ));
        }
        if w.ping_interval < Duration::from_millis(100) {
            return Err((
                "websocket.ping-interval".into(),
                "must be at least 100ms".into(),
            ));
        }
        if w.pong_timeout < Duration::from_millis(100) {
            return Err((
                "websocket.pong-timeout".into(),
                "must be at least 100ms".into(),
            ));
        }
        if w.send_queue == 0 {
            return Err(("websocket.send-queue".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    /// `[plugin-runtime]`, and that the plugins' instances fit its pool.
    fn check_runtime(&self) -> Result<(), Invalid> {
        let r = &self.plugin_runtime;
        if r.pool_instances == 0 {
            return Err((
                "plugin-runtime.pool-instances".into(),
                "must be at least 1".into(),
            ));
        }
        self.check_plugin_slots()?;
        if r.watch_interval < Duration::from_millis(100) {
            return Err((
                "plugin-runtime.watch-interval".into(),
                "must be at least 100ms".into(),
            ));
        }
        if r.epoch_tick < Duration::from_millis(1) || r.epoch_tick > Duration::from_secs(1) {
            return Err((
                "plugin-runtime.epoch-tick".into(),
                "must be between 1ms and 1s".into(),
            ));
        }
        Ok(())
    }
}
