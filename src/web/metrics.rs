//! `GET /metrics`: the server's counters in the Prometheus text exposition format (0.0.4),
//! written by hand: `# HELP` and `# TYPE` lines, then `name{label="value"} number` samples.
//!
//! It costs nothing when never scraped: every figure is computed at scrape time from the atomics
//! the server keeps anyway (the [`crate::stats::Stats`] counters, the memory meter) and from
//! `/proc/self/status` for the resident memory; nothing is counted or kept for this route
//! alone. Counters end in `_total`. Like `/healthz`, it needs no session: it says how busy the
//! box is, never who is in it. Label names come from the same field names `/healthz` uses.

use super::State;
use crate::stats::Snapshot;
use std::fmt::Write;
use tide::{Request, Response, StatusCode};

/// The content type Prometheus expects for the text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Adds the route.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/metrics").get(metrics);
}

async fn metrics(req: Request<State>) -> tide::Result {
    let state = req.state();
    let meter = state.registry.meter();
    let figures = Figures {
        stats: state.stats.snapshot(),
        accounted_bytes: meter.used(),
        budget_bytes: meter.budget(),
        // Not on Linux (no /proc): the gauge is left out rather than made up.
        resident_bytes: crate::loadgen::rss_kib(std::process::id())
            .ok()
            .map(|kib| kib << 10),
        max_connections: state.live.get().max_connections as u64,
    };
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(render(&figures));
    res.insert_header("Content-Type", CONTENT_TYPE);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

/// Everything one scrape reports, read once.
struct Figures {
    stats: Snapshot,
    accounted_bytes: u64,
    budget_bytes: Option<u64>,
    resident_bytes: Option<u64>,
    max_connections: u64,
}

/// The exposition text.
fn render(f: &Figures) -> String {
    let s = &f.stats;
    let mut out = Exposition(String::with_capacity(4096));
    out.family(
        "smolchat_build_info",
        "gauge",
        "The running build; the value is always 1.",
    );
    out.sample(
        "smolchat_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.gauge(
        "smolchat_connections",
        "Open WebSocket connections.",
        s.connections,
    );
    out.gauge(
        "smolchat_max_connections",
        "WebSockets allowed open at once (--max-connections).",
        f.max_connections,
    );
    out.gauge("smolchat_rooms", "Rooms with a running task.", s.rooms);
    out.counter(
        "smolchat_messages_received_total",
        "Chat messages accepted from clients and broadcast to their room.",
        s.messages,
    );
    out.counter(
        "smolchat_deliveries_total",
        "Frames the rooms queued for their members, one per recipient (messages out).",
        s.delivered,
    );
    out.family(
        "smolchat_dropped_total",
        "counter",
        "Connections the server let go: too_slow (queue full), backlog (memory short), \
         flooding (held back too long).",
    );
    for (reason, n) in [
        ("too_slow", s.dropped),
        ("backlog", s.dropped_for_backlog),
        ("flooding", s.flooders_closed),
    ] {
        out.sample("smolchat_dropped_total", &[("reason", reason)], n);
    }
    out.counter(
        "smolchat_senders_held_back_total",
        "Times a sender began to be held back for posting too fast.",
        s.held_back,
    );
    out.labelled(
        "smolchat_refused_total",
        "Requests refused by a limit, per reason.",
        "reason",
        &serde_json::to_value(s.refused).unwrap_or_default(),
    );
    out.labelled(
        "smolchat_host_actions_total",
        "Host actions (and authors' own deletions), per kind.",
        "kind",
        &serde_json::to_value(s.moderated).unwrap_or_default(),
    );
    out.counter(
        "smolchat_disk_written_bytes_total",
        "Bytes of history written to disk.",
        s.disk_bytes,
    );
    if let Some(bytes) = f.resident_bytes {
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory of the server process.",
            bytes,
        );
    }
    out.gauge(
        "smolchat_memory_accounted_bytes",
        "Memory the server counts as held for its clients (see --memory-budget).",
        f.accounted_bytes,
    );
    if let Some(bytes) = f.budget_bytes {
        out.gauge(
            "smolchat_memory_budget_bytes",
            "The memory budget (--memory-budget).",
            bytes,
        );
    }
    out.0
}

/// The text being written. Writing to a `String` cannot fail, hence the ignored results.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                let comma = if i == 0 { "" } else { "," };
                let _ = write!(self.0, "{comma}{label}=\"{}\"", escape(text));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    /// A counter with one sample per field of `fields` (a JSON object of numbers), labelled
    /// `label="<field>"`.
    fn labelled(&mut self, name: &str, help: &str, label: &str, fields: &serde_json::Value) {
        self.family(name, "counter", help);
        for (field, n) in fields.as_object().into_iter().flatten() {
            self.sample(name, &[(label, field)], n.as_u64().unwrap_or(0));
        }
    }
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Refusal, Stats};

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let stats = Stats::default();
        stats.refused(Refusal::Origin);
        stats.moderated("kick");
        let text = render(&Figures {
            stats: stats.snapshot(),
            accounted_bytes: 5,
            budget_bytes: None,
            resident_bytes: Some(4096),
            max_connections: 7,
        });
        assert!(
            text.contains("smolchat_refused_total{reason=\"origin\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("smolchat_host_actions_total{kind=\"kick\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("smolchat_max_connections 7\n"), "{text}");
        assert!(
            !text.contains("smolchat_memory_budget_bytes"),
            "no budget, no gauge"
        );
        let mut kind = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, k) = rest.split_once(' ').unwrap();
                assert_eq!(k == "counter", name.ends_with("_total"), "{line}");
                kind = Some(name.to_owned());
            } else if !line.starts_with("# HELP ") {
                let family = kind.as_deref().expect("a sample after its TYPE line");
                assert!(line.starts_with(family), "{line} outside {family}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
