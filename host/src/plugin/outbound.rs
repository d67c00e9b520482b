//! Outbound HTTP from plugins (`wasi:http/outgoing-handler`), denied by default: a
//! request goes out only to a scheme and authority listed in the plugin's
//! `allowed-outbound-hosts`, with the plugin's `outbound-timeout` on connecting, the
//! first byte and between bytes (and the whole call still within its deadline).

use std::sync::Arc;
use std::time::Duration;

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::AllowedHost;

/// The `wasi:http` hooks of one plugin's instances.
#[derive(Debug, Clone)]
pub(crate) struct OutboundHooks {
    plugin: Arc<str>,
    allowed: Arc<[AllowedHost]>,
    timeout: Duration,
    /// Outbound requests open now over all the plugin's instances (a request is open
    /// until its connection task ends: the response body read or dropped).
    open: Arc<std::sync::atomic::AtomicUsize>,
    max_open: usize,
    /// Refusals' log lines, once a minute per reason.
    log: Arc<std::sync::Mutex<crate::core::limits::LogGate>>,
}

/// One open outbound request's place; freed when dropped.
struct OpenRequest(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl OutboundHooks {
    pub(crate) fn new(
        plugin: &str,
        allowed: Arc<[AllowedHost]>,
        timeout: Duration,
        max_open: usize,
    ) -> Self {
        Self {
            plugin: plugin.into(),
            allowed,
            timeout,
            open: Arc::default(),
            max_open,
            log: Arc::default(),
        }
    }

    /// Whether to log a refusal for `why` now (once a minute per reason).
    fn log_now(&self, why: &'static str) -> bool {
        self.log.lock().expect("log gate lock").allow(
            why,
            std::net::IpAddr::from([0, 0, 0, 0]),
            std::time::Instant::now(),
        )
    }

    /// A place for one more open request, unless `max-outbound` are open.
    fn take_place(&self) -> Option<OpenRequest> {
        use std::sync::atomic::Ordering::Relaxed;
        self.open
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max_open).then_some(n + 1))
            .ok()
            .map(|_| OpenRequest(self.open.clone()))
    }

    /// Whether a request to this URI may go out.
    pub(crate) fn permits(&self, uri: &http::Uri) -> bool {
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return false,
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        self.allowed.iter().any(|a| a.allows(https, &host, port))
    }
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri().clone();
        if !self.permits(&uri) {
            if self.log_now("denied") {
                tracing::warn!(
                    plugin = &*self.plugin,
                    "outbound request to {}://{} refused: not in allowed-outbound-hosts (logged at most once a minute)",
                    uri.scheme_str().unwrap_or("?"),
                    uri.authority().map_or("?", |a| a.as_str())
                );
            }
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        // Open requests hold sockets and buffers: they count against the plugin's
        // limit until their connection ends.
        let Some(place) = self.take_place() else {
            if self.log_now("max-outbound") {
                tracing::warn!(
                    plugin = &*self.plugin,
                    limit = self.max_open,
                    "outbound request refused: max-outbound requests open (logged at most once a minute)"
                );
            }
            return Box::new(async { Err(HttpError::ConnectionLimitReached) });
        };
        // The guest may ask for shorter timeouts, never longer ones.
        let cap =
            |asked: Option<Duration>| Some(asked.map_or(self.timeout, |a| a.min(self.timeout)));
        let asked = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: cap(asked.connect_timeout),
            first_byte_timeout: cap(asked.first_byte_timeout),
            between_bytes_timeout: cap(asked.between_bytes_timeout),
        };
        tracing::debug!(plugin = &*self.plugin, %uri, "outbound request");
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            // The place is held by the connection task (it ends with the body).
            let io = async move {
                let _place = place;
                io.await
            };
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(list: &[&str]) -> OutboundHooks {
        let allowed: Vec<AllowedHost> = list
            .iter()
            .map(|s| AllowedHost::parse(s).unwrap())
            .collect();
        OutboundHooks::new("t", allowed.into(), Duration::from_secs(1), 2)
    }

    #[test]
    fn allow_list_entries() {
        let h = hooks(&[
            "http://127.0.0.1:8089",
            "https://auth.example.org",
            "https://*.corp.example",
            "http://[::1]:*",
        ]);
        for ok in [
            "http://127.0.0.1:8089/check?t=1",
            "https://auth.example.org/",
            "https://AUTH.example.org:443/x",
            "https://a.b.corp.example/",
            "http://[::1]:1234/",
        ] {
            assert!(h.permits(&ok.parse().unwrap()), "{ok}");
        }
        for denied in [
            "http://127.0.0.1:8090/",
            "https://127.0.0.1:8089/",
            "http://auth.example.org/",
            "https://auth.example.org:8443/",
            "https://evil.example/",
            "https://corp.example/",
            "https://notcorp.example/",
            "http://localhost:8089/",
        ] {
            assert!(!h.permits(&denied.parse().unwrap()), "{denied}");
        }
        assert!(!hooks(&[]).permits(&"http://127.0.0.1/".parse().unwrap()));
    }
}
