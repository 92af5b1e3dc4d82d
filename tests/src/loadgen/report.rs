//! The markdown results tables, with minka's ratio to the better reference peer. With several
//! runs every figure is `min / median / max` over the runs; ratios use the medians.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::stock::StockResult;
use super::workloads::{IdleResult, OfflineResult, ProbeResult, StormResult};

fn one() -> usize {
    1
}

/// Everything one invocation measured (every run kept).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Repetitions of every workload (target order alternating between runs).
    #[serde(default = "one")]
    pub runs: usize,
    pub offline: Vec<OfflineResult>,
    #[serde(default)]
    pub ingest: Vec<OfflineResult>,
    pub storm: Vec<StormResult>,
    pub idle: Vec<IdleResult>,
    #[serde(default)]
    pub stock: Vec<StockResult>,
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

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// `v`, or `min / median / max` of several.
fn fmt_spread(v: &[f64]) -> String {
    match v.len() {
        0 => "—".into(),
        1 => fmt_num(v[0]),
        _ => {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{} / {} / {}",
                fmt_num(min),
                fmt_num(median(v).unwrap_or(f64::NAN)),
                fmt_num(max)
            )
        }
    }
}

/// The runs of one target in one table.
struct Column<'r, R> {
    name: String,
    runs: Vec<&'r R>,
    complete: usize,
}

impl<R> Column<'_, R> {
    /// The figures of the complete runs (of all runs, when none completed).
    fn values(&self, complete: &dyn Fn(&R) -> bool, f: &dyn Fn(&R) -> Option<f64>) -> Vec<f64> {
        let use_complete = self.complete > 0;
        self.runs
            .iter()
            .filter(|r| !use_complete || complete(r))
            .filter_map(|r| f(r).filter(|v| v.is_finite()))
            .collect()
    }
}

/// One table: a row per metric, a column per target (its runs aggregated), then minka ÷ the
/// better peer (medians; only targets with at least one complete run).
fn table<R>(
    out: &mut String,
    rows: &[&R],
    name: impl Fn(&R) -> String,
    complete: impl Fn(&R) -> bool,
    metrics: &[Metric<'_, R>],
) {
    let mut cols: Vec<Column<'_, R>> = Vec::new();
    for r in rows {
        let n = name(r);
        let i = match cols.iter().position(|c| c.name == n) {
            Some(i) => i,
            None => {
                cols.push(Column {
                    name: n,
                    runs: Vec::new(),
                    complete: 0,
                });
                cols.len() - 1
            }
        };
        cols[i].runs.push(r);
        if complete(r) {
            cols[i].complete += 1;
        }
    }
    let has_ratio = cols.iter().any(|c| c.name == "minka" && c.complete > 0)
        && cols
            .iter()
            .any(|c| PEERS.contains(&c.name.as_str()) && c.complete > 0);
    let _ = write!(out, "| metric |");
    let mut incomplete = false;
    for c in &cols {
        if c.complete == c.runs.len() {
            let _ = write!(out, " {} |", c.name);
        } else {
            incomplete = true;
            if c.runs.len() == 1 {
                let _ = write!(out, " {} (did not finish) |", c.name);
            } else {
                let _ = write!(
                    out,
                    " {} (did not finish {} of {} runs) |",
                    c.name,
                    c.runs.len() - c.complete,
                    c.runs.len()
                );
            }
        }
    }
    if has_ratio {
        let _ = write!(out, " minka ÷ better peer |");
    }
    out.push('\n');
    let _ = write!(out, "|---|");
    for _ in &cols {
        let _ = write!(out, "---:|");
    }
    if has_ratio {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (label, better, f) in metrics {
        let _ = write!(out, "| {label} |");
        for c in &cols {
            let _ = write!(out, " {} |", fmt_spread(&c.values(&complete, f)));
        }
        if has_ratio {
            let med = |c: &Column<'_, R>| {
                if c.complete == 0 {
                    None
                } else {
                    median(&c.values(&complete, f))
                }
            };
            let minka = cols.iter().find(|c| c.name == "minka").and_then(med);
            let peers: Vec<f64> = cols
                .iter()
                .filter(|c| PEERS.contains(&c.name.as_str()))
                .filter_map(med)
                .collect();
            let best = match better {
                Better::Higher => peers.iter().copied().reduce(f64::max),
                Better::Lower => peers.iter().copied().reduce(f64::min),
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
    if incomplete {
        out.push_str(
            "\nA run that did not finish is left out of its column when another run of that server \
             finished (otherwise the figures cover the time until the phase was stopped) and out \
             of the ratios.\n",
        );
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn changes_metrics<'a>(ingest: bool) -> Vec<Metric<'a, OfflineResult>> {
    let mut m: Vec<Metric<'a, OfflineResult>> = vec![
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
    ];
    if !ingest {
        m.push((
            "time until every phone converged (s)",
            Better::Lower,
            &|r: &OfflineResult| r.converge_secs,
        ));
    }
    m.extend::<Vec<Metric<'a, OfflineResult>>>(vec![
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
            "raw automerge apply_changes of the same changes, CPU (ms)",
            Better::None,
            &|r: &OfflineResult| r.raw_apply.as_ref().map(|a| a.cpu_secs * 1000.0),
        ),
        (
            "server CPU ÷ raw apply",
            Better::Lower,
            &|r: &OfflineResult| ratio(r.server_cpu_secs, r.raw_apply.as_ref().map(|a| a.cpu_secs)),
        ),
        (
            "fsyncs (minka /metrics)",
            Better::None,
            &|r: &OfflineResult| r.fsync.map(|f| f.fsyncs),
        ),
        (
            "batches per fsync (mean group size)",
            Better::None,
            &|r: &OfflineResult| r.fsync.and_then(|f| f.mean_group_size),
        ),
        ("changes per fsync", Better::None, &|r: &OfflineResult| {
            r.fsync
                .filter(|f| f.fsyncs > 0.0)
                .map(|f| r.changes as f64 / f.fsyncs)
        }),
        (
            "mean fsync time (ms)",
            Better::None,
            &|r: &OfflineResult| r.fsync.and_then(|f| f.mean_fsync_ms),
        ),
        (
            "load generator CPU (s)",
            Better::None,
            &|r: &OfflineResult| r.client_cpu_secs,
        ),
    ]);
    m
}

fn storm_metrics<'a>() -> Vec<Metric<'a, StormResult>> {
    vec![
        (
            "time until every document settled (s)",
            Better::Lower,
            &|r: &StormResult| r.settle_secs,
        ),
        (
            "time until the server went quiet (s)",
            Better::Lower,
            &|r: &StormResult| r.quiet_secs,
        ),
        (
            "documents settled by an equal-heads reply (%)",
            Better::None,
            &|r: &StormResult| {
                let docs = (r.phones * r.docs_per_phone) as f64;
                (docs > 0.0).then(|| r.docs_answered as f64 * 100.0 / docs)
            },
        ),
        (
            "documents settled by the server's silence (%)",
            Better::None,
            &|r: &StormResult| {
                let docs = (r.phones * r.docs_per_phone) as f64;
                (docs > 0.0).then(|| r.docs_silent as f64 * 100.0 / docs)
            },
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
            "bytes per document, phone → server",
            Better::Lower,
            &|r: &StormResult| Some(r.bytes_per_doc_up),
        ),
        (
            "bytes per document, server → phone",
            Better::Lower,
            &|r: &StormResult| Some(r.bytes_per_doc_down),
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
            "fsyncs during the storm (minka /metrics)",
            Better::None,
            &|r: &StormResult| r.fsync.map(|f| f.fsyncs),
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
    ]
}

fn stock_metrics<'a>() -> Vec<Metric<'a, StockResult>> {
    vec![
        (
            "sync/request messages per document, client → server",
            Better::Lower,
            &|r: &StockResult| Some(r.msgs_per_doc_up),
        ),
        (
            "sync/request messages per document, server → client",
            Better::Lower,
            &|r: &StockResult| Some(r.msgs_per_doc_down),
        ),
        (
            "bytes per document, client → server",
            Better::Lower,
            &|r: &StockResult| Some(r.bytes_per_doc_up),
        ),
        (
            "bytes per document, server → client",
            Better::Lower,
            &|r: &StockResult| Some(r.bytes_per_doc_down),
        ),
        (
            "documents the server sent no sync about (%)",
            Better::None,
            &|r: &StockResult| {
                let d = r.report.docs_total as f64;
                (d > 0.0).then(|| r.report.docs_without_server_sync as f64 * 100.0 / d)
            },
        ),
        (
            "documents with a persisted sync state before reconnecting (%)",
            Better::None,
            &|r: &StockResult| {
                let d = r.report.docs_total as f64;
                (d > 0.0).then(|| r.report.persisted_sync_states as f64 * 100.0 / d)
            },
        ),
        (
            "time until the wire went quiet (s)",
            Better::Lower,
            &|r: &StockResult| r.quiet_secs,
        ),
        (
            "server CPU during the reconnect (s)",
            Better::Lower,
            &|r: &StockResult| r.server_cpu_secs,
        ),
        (
            "server peak RSS (MiB)",
            Better::Lower,
            &|r: &StockResult| r.server_peak_rss_mib,
        ),
        (
            "node (clients + proxy) CPU during the reconnect (s)",
            Better::None,
            &|r: &StockResult| r.client_cpu_secs,
        ),
        (
            "first sync of all clients, in waves (s)",
            Better::None,
            &|r: &StockResult| Some(r.report.initial_secs),
        ),
        (
            "restarted clients loading their documents from storage, offline (s)",
            Better::None,
            &|r: &StockResult| Some(r.report.reopen_secs),
        ),
    ]
}

/// Distinct values of `key` in first-seen order, sorted ascending.
fn sizes<R>(rows: &[R], key: impl Fn(&R) -> usize) -> Vec<usize> {
    let mut v: Vec<usize> = rows.iter().map(key).collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl Results {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let runs = self.runs.max(1);
        if runs > 1 {
            let _ = writeln!(
                out,
                "Every workload ran {runs} times, the servers in alternating order (run 1 in the \
                 order given, run 2 reversed, …); each figure is **min / median / max** over the \
                 runs, and the ratio column divides medians.\n"
            );
        }
        if let Some(r) = self.offline.first() {
            let _ = writeln!(
                out,
                "### Workload 1: offline edits ({} phones × {} edits over {} proposals = {} changes, all connect at once)\n",
                r.phones, r.edits, r.docs, r.changes
            );
            let rows: Vec<&OfflineResult> = self.offline.iter().collect();
            table(
                &mut out,
                &rows,
                |r| r.target.clone(),
                |r| r.durable_secs.is_some() && r.converge_secs.is_some(),
                &changes_metrics(false),
            );
            out.push('\n');
        }
        if let Some(r) = self.ingest.first() {
            let _ = writeln!(
                out,
                "### Workload 1b: ingest ({} phones × {} edits to {} proposals of their own = {} changes, no fan-out, all connect at once)\n",
                r.phones, r.edits, r.docs, r.changes
            );
            let rows: Vec<&OfflineResult> = self.ingest.iter().collect();
            table(
                &mut out,
                &rows,
                |r| r.target.clone(),
                |r| r.durable_secs.is_some(),
                &changes_metrics(true),
            );
            out.push('\n');
        }
        let storm_sizes = sizes(&self.storm, |r| r.phones);
        if storm_sizes.len() > 1 {
            self.storm_curve(&mut out, &storm_sizes);
        }
        for size in &storm_sizes {
            let rows: Vec<&StormResult> = self.storm.iter().filter(|r| r.phones == *size).collect();
            let r = rows[0];
            let _ = writeln!(
                out,
                "### Workload 2: reconnect storm ({} phones × {} already-synced documents from a pool of {}, all reconnect at once)\n",
                r.phones, r.docs_per_phone, r.pool
            );
            table(
                &mut out,
                &rows,
                |r| r.target.clone(),
                |r| r.settle_secs.is_some(),
                &storm_metrics(),
            );
            out.push('\n');
        }
        if let Some(r) = self.idle.first() {
            let _ = writeln!(
                out,
                "### Workload 3: {} idle connections (each joined and fetched one document)\n",
                r.connections
            );
            let rows: Vec<&IdleResult> = self.idle.iter().collect();
            table(
                &mut out,
                &rows,
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
        for size in sizes(&self.stock, |r| r.clients) {
            let rows: Vec<&StockResult> = self.stock.iter().filter(|r| r.clients == size).collect();
            let r = rows[0];
            let _ = writeln!(
                out,
                "### Workload 4: stock automerge-repo 2.5.6 clients reconnect ({} clients × {} synced documents from a pool of {}, through a counting proxy)\n",
                r.clients, r.docs_per_client, r.pool
            );
            table(
                &mut out,
                &rows,
                |r| r.target.clone(),
                |r| r.quiet_secs.is_some() && r.note.is_none(),
                &stock_metrics(),
            );
            out.push('\n');
        }
        self.notes(&mut out);
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

    /// The storm as a curve: phones down, servers across; median over the complete runs.
    fn storm_curve(&self, out: &mut String, storm_sizes: &[usize]) {
        let mut targets: Vec<String> = Vec::new();
        for r in &self.storm {
            if !targets.contains(&r.target) {
                targets.push(r.target.clone());
            }
        }
        type Pick = fn(&StormResult) -> Option<f64>;
        let curves: [(&str, Pick); 3] = [
            ("time until every document settled (s)", |r| r.settle_secs),
            ("time until the server went quiet (s)", |r| r.quiet_secs),
            ("server CPU during the storm (s)", |r| {
                r.settle_secs.and(r.server_cpu_secs)
            }),
        ];
        for (what, pick) in curves {
            let _ = writeln!(
                out,
                "### Reconnect storm curve: {what}, median of the runs that settled\n"
            );
            let _ = write!(out, "| phones |");
            for t in &targets {
                let _ = write!(out, " {t} |");
            }
            out.push_str("\n|---:|");
            for _ in &targets {
                out.push_str("---:|");
            }
            out.push('\n');
            for size in storm_sizes {
                let _ = write!(out, "| {size} |");
                for t in &targets {
                    let rows: Vec<&StormResult> = self
                        .storm
                        .iter()
                        .filter(|r| r.phones == *size && &r.target == t)
                        .collect();
                    let v: Vec<f64> = rows.iter().filter_map(|r| pick(r)).collect();
                    match median(&v) {
                        Some(m) if v.len() == rows.len() => {
                            let _ = write!(out, " {} |", fmt_num(m));
                        }
                        Some(m) => {
                            let _ = write!(
                                out,
                                " {} ({} of {} runs) |",
                                fmt_num(m),
                                v.len(),
                                rows.len()
                            );
                        }
                        None if rows.is_empty() => out.push_str(" |"),
                        None => out.push_str(" did not settle |"),
                    }
                }
                out.push('\n');
            }
            out.push('\n');
        }
    }

    fn notes(&self, out: &mut String) {
        let runs = self.runs.max(1);
        let tag = |w: &str, t: &str, run: usize| {
            if runs > 1 {
                format!("{w}, {t}, run {run}")
            } else {
                format!("{w}, {t}")
            }
        };
        let mut notes = Vec::new();
        for (w, rows) in [("offline edits", &self.offline), ("ingest", &self.ingest)] {
            for r in rows {
                if let Some(n) = &r.note {
                    notes.push(format!("{}: {n}", tag(w, &r.target, r.run)));
                }
                if r.traffic.doc_unavailable > 0 || !r.traffic.first_errors.is_empty() {
                    notes.push(format!(
                        "{}: {} doc-unavailable; first errors: {:?}",
                        tag(w, &r.target, r.run),
                        r.traffic.doc_unavailable,
                        r.traffic.first_errors
                    ));
                }
            }
        }
        for r in &self.storm {
            let w = format!("reconnect storm {}", r.phones);
            if let Some(n) = &r.note {
                notes.push(format!("{}: {n}", tag(&w, &r.target, r.run)));
            }
            if !r.traffic.first_errors.is_empty() {
                notes.push(format!(
                    "{}: first errors: {:?}",
                    tag(&w, &r.target, r.run),
                    r.traffic.first_errors
                ));
            }
        }
        for r in &self.idle {
            if let Some(n) = &r.note {
                notes.push(format!("{}: {n}", tag("idle", &r.target, r.run)));
            }
        }
        for r in &self.stock {
            if let Some(n) = &r.note {
                let w = format!("stock reconnect {}", r.clients);
                notes.push(format!("{}: {n}", tag(&w, &r.target, r.run)));
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_and_medians() {
        assert_eq!(fmt_spread(&[]), "—");
        assert_eq!(fmt_spread(&[1.5]), "1.50");
        assert_eq!(fmt_spread(&[3.0, 1.0, 2.0]), "1.00 / 2.00 / 3.00");
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
