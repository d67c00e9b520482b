//! A plugin's standard output and error, turned into log lines.
//!
//! Guests built with a language runtime print there: an uncaught JavaScript exception,
//! a Python traceback, a Rust panic message. Each complete line becomes a log line
//! naming the plugin (stdout at `info`, stderr at `warn`), under the same per-call
//! quota and length cap as the `log` import, and the last stderr line is kept so that
//! a failure report can say what the guest printed before it trapped. Writes never
//! fail and never block: a guest cannot stall or fill the host with its output.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest log line a plugin can write; the rest is cut.
pub(crate) const MAX_LOG_LINE: usize = 4096;
/// Most log lines per call; the rest are dropped (with one note).
pub(crate) const MAX_LOG_LINES_PER_CALL: u32 = 64;
/// What one `write` may carry (the permit `check-write` gives).
const WRITE_PERMIT: usize = 64 << 10;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Where a plugin's log lines go: the `log` import and both output streams of one
/// store share it, so one quota covers all three.
#[derive(Debug)]
pub(crate) struct LogSink {
    plugin: Arc<str>,
    state: Mutex<SinkState>,
}

#[derive(Debug, Default)]
struct SinkState {
    lines: u32,
    partial_out: Vec<u8>,
    partial_err: Vec<u8>,
    last_err: Option<String>,
    /// The Call-ID of the SIP request the call is about, for its lines.
    call_id: Option<String>,
}

/// The level of a log line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LineLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogSink {
    pub(crate) fn new(plugin: &str) -> Arc<Self> {
        Arc::new(Self {
            plugin: plugin.into(),
            state: Mutex::new(SinkState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a call: a fresh quota, no remembered stderr line.
    pub(crate) fn begin_call(&self) {
        let mut s = self.lock();
        s.lines = 0;
        s.last_err = None;
    }

    /// Ends a call: lines the guest left unterminated are logged as they are.
    pub(crate) fn end_call(&self) {
        let mut s = self.lock();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(match stream {
                Stream::Stdout => &mut s.partial_out,
                Stream::Stderr => &mut s.partial_err,
            });
            if !rest.is_empty() {
                self.emit_output(&mut s, stream, &rest);
            }
        }
    }

    /// The Call-ID of the SIP request this call is about (`None` after it): the
    /// plugin's lines carry it.
    pub(crate) fn set_call_id(&self, call_id: Option<&str>) {
        self.lock().call_id = call_id.map(str::to_string);
    }

    /// The last line the guest wrote to stderr in this call, if any.
    pub(crate) fn last_stderr(&self) -> Option<String> {
        self.lock().last_err.clone()
    }

    /// A line from the `log` import.
    pub(crate) fn log(&self, level: LineLevel, message: &str) {
        let mut s = self.lock();
        self.emit(&mut s, level, message);
    }

    fn write(&self, stream: Stream, mut bytes: &[u8]) {
        let mut s = self.lock();
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(nl);
            bytes = &rest[1..];
            let mut whole = std::mem::take(match stream {
                Stream::Stdout => &mut s.partial_out,
                Stream::Stderr => &mut s.partial_err,
            });
            whole.extend_from_slice(line);
            self.emit_output(&mut s, stream, &whole);
        }
        let partial = match stream {
            Stream::Stdout => &mut s.partial_out,
            Stream::Stderr => &mut s.partial_err,
        };
        let room = MAX_LOG_LINE.saturating_sub(partial.len());
        partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit_output(&self, s: &mut SinkState, stream: Stream, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return;
        }
        match stream {
            Stream::Stdout => self.emit(s, LineLevel::Info, line),
            Stream::Stderr => {
                // Rust's panic hook ends with a hint that says nothing about the cause.
                if !line.starts_with("note: run with `RUST_BACKTRACE") {
                    s.last_err = Some(cut(line).to_string());
                }
                self.emit(s, LineLevel::Warn, line);
            }
        }
    }

    fn emit(&self, s: &mut SinkState, level: LineLevel, message: &str) {
        s.lines += 1;
        let plugin = &*self.plugin;
        if s.lines > MAX_LOG_LINES_PER_CALL {
            if s.lines == MAX_LOG_LINES_PER_CALL + 1 {
                tracing::warn!(
                    plugin,
                    "plugin log lines beyond {MAX_LOG_LINES_PER_CALL} in one call dropped"
                );
            }
            return;
        }
        let msg = cut(message);
        // Debug formatting escapes control characters: a plugin cannot forge log lines.
        macro_rules! line {
            ($mac:ident) => {
                match &s.call_id {
                    Some(call_id) => tracing::$mac!(plugin, call_id = %call_id, "{msg:?}"),
                    None => tracing::$mac!(plugin, "{msg:?}"),
                }
            };
        }
        match level {
            LineLevel::Trace => line!(trace),
            LineLevel::Debug => line!(debug),
            LineLevel::Info => line!(info),
            LineLevel::Warn => line!(warn),
            LineLevel::Error => line!(error),
        }
    }
}

/// `s` cut to [`MAX_LOG_LINE`] bytes on a character boundary.
fn cut(s: &str) -> &str {
    if s.len() <= MAX_LOG_LINE {
        return s;
    }
    let mut end = MAX_LOG_LINE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One of a store's output streams, for [`wasmtime_wasi::WasiCtxBuilder::stdout`] and
/// `stderr`.
#[derive(Debug, Clone)]
pub(crate) struct GuestOutput {
    sink: Arc<LogSink>,
    stream: Stream,
}

impl GuestOutput {
    pub(crate) fn new(sink: Arc<LogSink>, stream: Stream) -> Self {
        Self { sink, stream }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.sink.write(self.stream, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_the_last_stderr_line_kept() {
        let sink = LogSink::new("t");
        sink.begin_call();
        sink.write(Stream::Stderr, b"Error: boom\n  at onHttp");
        assert_eq!(sink.last_stderr().as_deref(), Some("Error: boom"));
        sink.write(Stream::Stderr, b"Request (guest.js:3)\n");
        assert_eq!(
            sink.last_stderr().as_deref(),
            Some("  at onHttpRequest (guest.js:3)")
        );
        sink.begin_call();
        assert_eq!(sink.last_stderr(), None);
    }

    #[test]
    fn an_endless_line_is_capped() {
        let sink = LogSink::new("t");
        for _ in 0..100 {
            sink.write(Stream::Stdout, &[b'x'; 1000]);
        }
        assert_eq!(sink.lock().partial_out.len(), MAX_LOG_LINE);
        sink.end_call();
        assert!(sink.lock().partial_out.is_empty());
    }

    #[test]
    fn the_quota_counts_every_line() {
        let sink = LogSink::new("t");
        sink.begin_call();
        for _ in 0..200 {
            sink.write(Stream::Stdout, b"line\n");
        }
        assert_eq!(sink.lock().lines, 200);
        sink.begin_call();
        assert_eq!(sink.lock().lines, 0);
    }
}
