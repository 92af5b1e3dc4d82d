//! Process metrics in Prometheus text format, kept in atomics (no globals: one [`Metrics`] per server).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in micro-units, so it fits an integer atomic.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if v <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Every metric the server exports.
pub struct Metrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub loaded_documents: Gauge,
    pub changes_applied: Counter,
    pub changes_rejected: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub protocol_errors: Counter,
    pub slow_consumers_closed: Counter,
    pub batch_messages: Histogram,
    pub batch_seconds: Histogram,
    pub fsync_seconds: Histogram,
    pub fsync_group_size: Histogram,
    pub compactions: Counter,
    pub waiting_peers: Gauge,
    pub fsync_failures: Counter,
    pub held_changes: Gauge,
    pub held_dropped_limit: Counter,
    pub held_dropped_expired: Counter,
    pub held_dropped_left: Counter,
    pub changes_unrecorded: Counter,
    pub ephemeral_dropped: Counter,
    pub ephemeral_throttled: Counter,
    pub sync_throttled: Counter,
    pub connections_refused: Counter,
    pub documents_refused: Counter,
    pub relay_refreshes: Counter,
    pub relay_changes: Counter,
    pub relay_lagged: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            loaded_documents: Gauge::default(),
            changes_applied: Counter::default(),
            changes_rejected: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            protocol_errors: Counter::default(),
            slow_consumers_closed: Counter::default(),
            batch_messages: Histogram::new(SIZES),
            batch_seconds: Histogram::new(SECONDS),
            fsync_seconds: Histogram::new(SECONDS),
            fsync_group_size: Histogram::new(SIZES),
            compactions: Counter::default(),
            waiting_peers: Gauge::default(),
            fsync_failures: Counter::default(),
            held_changes: Gauge::default(),
            held_dropped_limit: Counter::default(),
            held_dropped_expired: Counter::default(),
            held_dropped_left: Counter::default(),
            changes_unrecorded: Counter::default(),
            ephemeral_dropped: Counter::default(),
            ephemeral_throttled: Counter::default(),
            sync_throttled: Counter::default(),
            connections_refused: Counter::default(),
            documents_refused: Counter::default(),
            relay_refreshes: Counter::default(),
            relay_changes: Counter::default(),
            relay_lagged: Counter::default(),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut scalar = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        scalar(
            "minka_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections.get(),
        );
        scalar(
            "minka_connections_total",
            "counter",
            "WebSocket connections accepted.",
            self.connections_total.get(),
        );
        scalar(
            "minka_loaded_documents",
            "gauge",
            "Documents loaded in memory.",
            self.loaded_documents.get(),
        );
        scalar(
            "minka_changes_applied_total",
            "counter",
            "Automerge changes applied and persisted.",
            self.changes_applied.get(),
        );
        scalar(
            "minka_changes_rejected_total",
            "counter",
            "Changes rejected and quarantined.",
            self.changes_rejected.get(),
        );
        scalar(
            "minka_bytes_in_total",
            "counter",
            "WebSocket payload bytes received.",
            self.bytes_in.get(),
        );
        scalar(
            "minka_bytes_out_total",
            "counter",
            "WebSocket payload bytes sent.",
            self.bytes_out.get(),
        );
        scalar(
            "minka_messages_in_total",
            "counter",
            "Protocol messages received.",
            self.messages_in.get(),
        );
        scalar(
            "minka_messages_out_total",
            "counter",
            "Protocol messages sent.",
            self.messages_out.get(),
        );
        scalar(
            "minka_protocol_errors_total",
            "counter",
            "Connections closed for bad input.",
            self.protocol_errors.get(),
        );
        scalar(
            "minka_slow_consumers_closed_total",
            "counter",
            "Connections closed for not reading: their send queue was full, or a write waited two heartbeats.",
            self.slow_consumers_closed.get(),
        );
        scalar(
            "minka_compactions_total",
            "counter",
            "Document compactions.",
            self.compactions.get(),
        );
        scalar(
            "minka_waiting_peers",
            "gauge",
            "Peers waiting on a document that does not exist yet.",
            self.waiting_peers.get(),
        );
        scalar(
            "minka_fsync_failures_total",
            "counter",
            "Failed group commits (after one the server acknowledges nothing more and exits).",
            self.fsync_failures.get(),
        );
        scalar(
            "minka_held_changes",
            "gauge",
            "Changes held until their dependencies arrive.",
            self.held_changes.get(),
        );
        scalar(
            "minka_changes_unrecorded_total",
            "counter",
            "Refused changes not kept: their user has the most quarantine entries kept per user.",
            self.changes_unrecorded.get(),
        );
        scalar(
            "minka_ephemeral_dropped_total",
            "counter",
            "Ephemeral messages dropped by the per-connection rate limit.",
            self.ephemeral_dropped.get(),
        );
        scalar(
            "minka_ephemeral_throttled_total",
            "counter",
            "Times a connection was read more slowly for going on sending ephemeral messages after a burst's worth was dropped.",
            self.ephemeral_throttled.get(),
        );
        scalar(
            "minka_relay_refreshes_total",
            "counter",
            "Loaded documents re-read from the shared store after another node wrote them.",
            self.relay_refreshes.get(),
        );
        scalar(
            "minka_relay_changes_total",
            "counter",
            "Changes written by other nodes and relayed to this node's peers.",
            self.relay_changes.get(),
        );
        scalar(
            "minka_relay_lagged_total",
            "counter",
            "Times this node fell behind the store's notifications and re-read every live document.",
            self.relay_lagged.get(),
        );
        scalar(
            "minka_sync_throttled_total",
            "counter",
            "Times a connection was read more slowly for sending sync messages over its budget.",
            self.sync_throttled.get(),
        );
        scalar(
            "minka_connections_refused_total",
            "counter",
            "Connections refused (HTTP 429) because their user has the most connections allowed.",
            self.connections_refused.get(),
        );
        scalar(
            "minka_documents_refused_total",
            "counter",
            "Messages refused because their connection already syncs the most documents allowed.",
            self.documents_refused.get(),
        );
        let _ = writeln!(
            out,
            "# HELP minka_held_changes_dropped_total Held changes dropped, by reason.\n\
             # TYPE minka_held_changes_dropped_total counter"
        );
        for (reason, c) in [
            ("limit", &self.held_dropped_limit),
            ("expired", &self.held_dropped_expired),
            ("peer_left", &self.held_dropped_left),
        ] {
            let _ = writeln!(
                out,
                "minka_held_changes_dropped_total{{reason=\"{reason}\"}} {}",
                c.get()
            );
        }
        self.batch_messages.render(
            &mut out,
            "minka_batch_messages",
            "Messages handled per document batch.",
        );
        self.batch_seconds.render(
            &mut out,
            "minka_batch_seconds",
            "Time to apply, persist and fan out one batch.",
        );
        self.fsync_seconds.render(
            &mut out,
            "minka_fsync_seconds",
            "Time of one group commit (flush + fsync).",
        );
        self.fsync_group_size.render(
            &mut out,
            "minka_fsync_group_size",
            "Batches made durable by one fsync.",
        );
        out
    }
}
