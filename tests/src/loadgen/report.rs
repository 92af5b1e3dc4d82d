//! The markdown results table, with minka's ratio to the better reference peer.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::workloads::{IdleResult, OfflineResult, ProbeResult, StormResult};

/// Everything one run measured.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Results {
    pub offline: Vec<OfflineResult>,
    pub storm: Vec<StormResult>,
    pub idle: Vec<IdleResult>,
    pub probe: Vec<ProbeResult>,
    /// Workloads that could not run at all against a target: (workload, target, error).
    pub errors: Vec<(String, String, String)>,
}

const PEERS: &[&str] = &["js", "samod"];

/// A table row: label, which direction is better, and how to read the figure from a result.
type Metric<'a, R> = (&'a str, Better, &'a dyn Fn(&R) -> Option<f64>);

#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
    /// Shown, no ratio.
    None,
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One table: a row per metric, a column per target, then minka ÷ the better peer.
fn table<R>(
    out: &mut String,
    rows: &[R],
    name: impl Fn(&R) -> String,
    complete: impl Fn(&R) -> bool,
    metrics: &[Metric<'_, R>],
) {
    let targets: Vec<String> = rows.iter().map(&name).collect();
    let incomplete = rows.iter().any(|r| !complete(r));
    let has_ratio =
        targets.iter().any(|t| t == "minka") && targets.iter().any(|t| PEERS.contains(&t.as_str()));
    let _ = write!(out, "| metric |");
    for (t, r) in targets.iter().zip(rows) {
        if complete(r) {
            let _ = write!(out, " {t} |");
        } else {
            let _ = write!(out, " {t} (did not finish) |");
        }
    }
    if has_ratio {
        let _ = write!(out, " minka ÷ better peer |");
    }
    out.push('\n');
    let _ = write!(out, "|---|");
    for _ in &targets {
        let _ = write!(out, "---:|");
    }
    if has_ratio {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (label, better, f) in metrics {
        let _ = write!(out, "| {label} |");
        for r in rows {
            match f(r).filter(|v| v.is_finite()) {
                Some(v) => {
                    let _ = write!(out, " {} |", fmt_num(v));
                }
                None => {
                    let _ = write!(out, " — |");
                }
            }
        }
        if has_ratio {
            let minka = rows
                .iter()
                .filter(|r| complete(r))
                .find(|r| name(r) == "minka")
                .and_then(f)
                .filter(|v| v.is_finite());
            let peers: Vec<f64> = rows
                .iter()
                .filter(|r| complete(r) && PEERS.contains(&name(r).as_str()))
                .filter_map(|r| f(r).filter(|v| v.is_finite()))
                .collect();
            let best = match better {
                Better::Higher => peers
                    .iter()
                    .copied()
                    .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v)))),
                Better::Lower => peers
                    .iter()
                    .copied()
                    .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.min(v)))),
                Better::None => None,
            };
            match (minka, best) {
                (Some(m), Some(b)) if b != 0.0 => {
                    let _ = write!(out, " {:.2}× |", m / b);
                }
                _ => {
                    let _ = write!(out, " |");
                }
            }
        }
        out.push('\n');
    }
    if incomplete && has_ratio {
        out.push_str(
            "\nA server marked \"did not finish\" is left out of the ratios; its figures cover the time \
             until the phase was stopped.\n",
        );
    }
}

impl Results {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        if let Some(r) = self.offline.first() {
            let _ = writeln!(
                out,
                "### Workload 1: offline edits ({} phones × {} edits over {} proposals = {} changes, all connect at once)\n",
                r.phones, r.edits, r.docs, r.changes
            );
            table(
                &mut out,
                &self.offline,
                |r| r.target.clone(),
                |r| r.durable_secs.is_some() && r.converge_secs.is_some(),
                &[
                    (
                        "durable changes/s (higher is better)",
                        Better::Higher,
                        &|r: &OfflineResult| r.durable_changes_per_sec,
                    ),
                    (
                        "time until every phone's changes acknowledged (s)",
                        Better::Lower,
                        &|r: &OfflineResult| r.durable_secs,
                    ),
                    (
                        "time until every phone converged (s)",
                        Better::Lower,
                        &|r: &OfflineResult| r.converge_secs,
                    ),
                    (
                        "bytes on the wire per change",
                        Better::Lower,
                        &|r: &OfflineResult| Some(r.bytes_per_change),
                    ),
                    (
                        "sync messages, phones → server",
                        Better::None,
                        &|r: &OfflineResult| Some(r.traffic.sync_out as f64),
                    ),
                    (
                        "sync messages, server → phones",
                        Better::None,
                        &|r: &OfflineResult| Some(r.traffic.sync_in as f64),
                    ),
                    (
                        "server peak RSS (MiB)",
                        Better::Lower,
                        &|r: &OfflineResult| r.server_peak_rss_mib,
                    ),
                    ("server CPU (s)", Better::Lower, &|r: &OfflineResult| {
                        r.server_cpu_secs
                    }),
                    (
                        "load generator CPU (s)",
                        Better::None,
                        &|r: &OfflineResult| r.client_cpu_secs,
                    ),
                ],
            );
            out.push('\n');
        }
        if let Some(r) = self.storm.first() {
            let _ = writeln!(
                out,
                "### Workload 2: reconnect storm ({} phones × {} already-synced documents from a pool of {}, all reconnect at once)\n",
                r.phones, r.docs_per_phone, r.pool
            );
            table(
                &mut out,
                &self.storm,
                |r| r.target.clone(),
                |r| r.settle_secs.is_some(),
                &[
                    (
                        "time until every document settled (s)",
                        Better::Lower,
                        &|r: &StormResult| r.settle_secs,
                    ),
                    (
                        "sync messages per document, phone → server",
                        Better::Lower,
                        &|r: &StormResult| Some(r.msgs_per_doc_up),
                    ),
                    (
                        "sync messages per document, server → phone",
                        Better::Lower,
                        &|r: &StormResult| Some(r.msgs_per_doc_down),
                    ),
                    (
                        "bytes on the wire per document",
                        Better::Lower,
                        &|r: &StormResult| Some(r.bytes_per_doc),
                    ),
                    (
                        "server peak RSS (MiB)",
                        Better::Lower,
                        &|r: &StormResult| r.server_peak_rss_mib,
                    ),
                    (
                        "server CPU during the storm (s)",
                        Better::Lower,
                        &|r: &StormResult| r.server_cpu_secs,
                    ),
                    (
                        "load generator CPU (s)",
                        Better::None,
                        &|r: &StormResult| r.client_cpu_secs,
                    ),
                    (
                        "first sync of all phones, in waves (s)",
                        Better::None,
                        &|r: &StormResult| Some(r.initial_sync_secs),
                    ),
                ],
            );
            out.push('\n');
        }
        if let Some(r) = self.idle.first() {
            let _ = writeln!(
                out,
                "### Workload 3: {} idle connections (each joined and fetched one document)\n",
                r.connections
            );
            table(
                &mut out,
                &self.idle,
                |r| r.target.clone(),
                |r| r.connected == r.connections,
                &[
                    (
                        "server RSS growth (MiB)",
                        Better::Lower,
                        &|r: &IdleResult| r.delta_rss_mib,
                    ),
                    ("per connection (KiB)", Better::Lower, &|r: &IdleResult| {
                        r.per_connection_kib
                    }),
                    (
                        "server RSS before (MiB)",
                        Better::None,
                        &|r: &IdleResult| r.baseline_rss_mib,
                    ),
                    (
                        "server RSS with the connections (MiB)",
                        Better::Lower,
                        &|r: &IdleResult| r.idle_rss_mib,
                    ),
                    (
                        "connections that got their document",
                        Better::None,
                        &|r: &IdleResult| Some(r.connected as f64),
                    ),
                ],
            );
            out.push('\n');
        }
        let mut notes = Vec::new();
        for r in &self.offline {
            if let Some(n) = &r.note {
                notes.push(format!("offline edits, {}: {n}", r.target));
            }
            if r.traffic.doc_unavailable > 0 || !r.traffic.first_errors.is_empty() {
                notes.push(format!(
                    "offline edits, {}: {} doc-unavailable; first errors: {:?}",
                    r.target, r.traffic.doc_unavailable, r.traffic.first_errors
                ));
            }
        }
        for r in &self.storm {
            if let Some(n) = &r.note {
                notes.push(format!("reconnect storm, {}: {n}", r.target));
            }
            if !r.traffic.first_errors.is_empty() {
                notes.push(format!(
                    "reconnect storm, {}: first errors: {:?}",
                    r.target, r.traffic.first_errors
                ));
            }
        }
        for r in &self.idle {
            if let Some(n) = &r.note {
                notes.push(format!("idle, {}: {n}", r.target));
            }
        }
        for (w, t, e) in &self.errors {
            notes.push(format!("{w}, {t}: could not run: {e}"));
        }
        if !notes.is_empty() {
            out.push_str("Notes:\n");
            for n in notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        if !self.probe.is_empty() {
            out.push('\n');
        }
        for r in &self.probe {
            let _ = writeln!(out, "### Protocol probe: {}\n", r.target);
            for step in &r.steps {
                let _ = writeln!(out, "{} — {}\n\n```", step.what, step.outcome);
                for line in &step.transcript {
                    let _ = writeln!(out, "{line}");
                }
                out.push_str("```\n\n");
            }
        }
        out
    }
}
