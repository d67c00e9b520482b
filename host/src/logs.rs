//! `--log-format json`: one JSON object a line on standard error, for log shippers.
//! Every line has `time` (RFC 3339, UTC, microseconds), `level`, `target` and
//! `message`; `call-id`, `flow`, `source` and `plugin` come at the top level when the
//! line or a span around it has them (a request's lines carry its Call-ID: the core's
//! refusals name it, and so do the routing plugin's lines and failures while it
//! decides about it); other fields go under `fields`.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The layer that writes JSON lines.
#[derive(Debug, Default)]
pub struct JsonLines;

/// Fields recorded on a span (kept in its extensions).
#[derive(Debug, Default)]
struct SpanFields(Vec<(&'static str, Value)>);

/// Collects fields as JSON values.
#[derive(Default)]
struct Collect(Vec<(&'static str, Value)>);

impl Collect {
    fn put(&mut self, field: &Field, v: Value) {
        self.0.push((field.name(), v));
    }
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
}

/// The top-level key of a field, when it is one of the fixed ones.
fn top_level(name: &str) -> Option<&'static str> {
    match name {
        "message" => Some("message"),
        "call_id" | "call-id" => Some("call-id"),
        "flow" => Some("flow"),
        "source" | "peer" | "remote" => Some("source"),
        "plugin" => Some("plugin"),
        _ => None,
    }
}

/// `t` as RFC 3339 in UTC with microseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

impl<S> tracing_subscriber::Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut c = Collect::default();
        attrs.record(&mut c);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(c.0));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut c = Collect::default();
        values.record(&mut c);
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            match ext.get_mut::<SpanFields>() {
                Some(f) => f.0.extend(c.0),
                None => ext.insert(SpanFields(c.0)),
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("time".into(), Value::String(rfc3339(SystemTime::now())));
        line.insert(
            "level".into(),
            Value::String(meta.level().as_str().to_ascii_lowercase()),
        );
        line.insert("target".into(), Value::String(meta.target().to_string()));
        let mut fields = Map::new();
        let mut put = |name: &str, v: Value| match top_level(name) {
            Some(key) => {
                line.insert(key.into(), v);
            }
            None => {
                fields.insert(name.to_string(), v);
            }
        };
        // Outer spans first; the event's own fields win.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    for (name, v) in &f.0 {
                        put(name, v.clone());
                    }
                }
            }
        }
        let mut c = Collect::default();
        event.record(&mut c);
        for (name, v) in c.0 {
            put(name, v);
        }
        line.entry("message")
            .or_insert(Value::String(String::new()));
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_796_549_917_123_456);
        assert_eq!(rfc3339(t), "2026-12-06T09:38:37.123456Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }
}
