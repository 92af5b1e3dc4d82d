//! The stock-client reconnect benchmark: stock `@automerge/automerge-repo` 2.5.6 clients (in
//! node, tests/js/bench-reconnect.mjs) that hold synced documents reconnect through a counting
//! WebSocket proxy. The load generator starts the server, runs the script against it and reads the
//! server's CPU around the reconnect.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::server::{read_cpu_secs, ServerProc, Target};
use super::workloads::{token, Config};

/// Sizes of the stock-client reconnect.
#[derive(Debug, Clone)]
pub struct StockConfig {
    /// The node script (tests/js/bench-reconnect.mjs).
    pub script: PathBuf,
    pub clients: usize,
    pub docs_per_client: usize,
    pub pool: usize,
    /// Clients doing their first sync at the same time (the clients all live in one node process).
    pub concurrency: usize,
}

/// One direction of the proxy's counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Direction {
    /// Frames by protocol message type.
    pub msgs: BTreeMap<String, u64>,
    /// WebSocket payload bytes.
    pub bytes: u64,
}

impl Direction {
    /// `sync` and `request` messages: the ones about a document.
    pub fn doc_msgs(&self) -> u64 {
        self.msgs.get("sync").copied().unwrap_or(0) + self.msgs.get("request").copied().unwrap_or(0)
    }
}

/// What the script reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScriptReport {
    pub clients: usize,
    pub docs: usize,
    pub pool: usize,
    /// Client documents (clients × docs).
    pub docs_total: usize,
    /// Client documents whose sync state with the server was in the client's storage before the
    /// reconnect (automerge-repo throttles these saves per server storage id).
    pub persisted_sync_states: usize,
    pub initial_secs: f64,
    /// Seconds the restarted clients took to load their documents from storage, offline (client
    /// side only; before the reconnect).
    #[serde(default)]
    pub reopen_secs: f64,
    /// From the reconnect until the last frame through the proxy (the quiet window not counted).
    pub quiet_secs: Option<f64>,
    pub clients_connected: usize,
    /// Client documents the server sent no `sync` about during the reconnect.
    pub docs_without_server_sync: usize,
    pub up: Direction,
    pub down: Direction,
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockResult {
    pub target: String,
    pub run: usize,
    pub clients: usize,
    pub docs_per_client: usize,
    pub pool: usize,
    pub msgs_per_doc_up: f64,
    pub msgs_per_doc_down: f64,
    pub bytes_per_doc_up: f64,
    pub bytes_per_doc_down: f64,
    pub quiet_secs: Option<f64>,
    pub server_cpu_secs: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
    pub client_cpu_secs: Option<f64>,
    pub report: ScriptReport,
    pub note: Option<String>,
}

/// Runs the script against a fresh server of `target`.
pub async fn stock_reconnect(
    target: &Target,
    cfg: &Config,
    sc: &StockConfig,
) -> Result<StockResult> {
    let health = token(&cfg.jwt_secret, "bench-c0", &["leader"]);
    let server = ServerProc::start(
        target,
        &cfg.jwt_secret,
        &health,
        &cfg.log_dir,
        &format!("stock{}", sc.clients),
    )
    .await?;
    let script = std::fs::canonicalize(&sc.script)
        .with_context(|| format!("stock reconnect script {}", sc.script.display()))?;
    std::fs::create_dir_all(&cfg.log_dir)?;
    let log_path = cfg
        .log_dir
        .join(format!("{}-stock{}-client.log", target.name(), sc.clients));
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .args(["--url", server.base_url()])
        .args(["--clients", &sc.clients.to_string()])
        .args(["--docs", &sc.docs_per_client.to_string()])
        .args(["--pool", &sc.pool.to_string()])
        .args(["--concurrency", &sc.concurrency.to_string()])
        .args(["--quiet-ms", &cfg.quiet.as_millis().to_string()])
        .args(["--timeout-s", &cfg.timeout.as_secs().to_string()])
        .env("BENCH_JWT_SECRET", &cfg.jwt_secret)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    if let Some(dir) = script.parent() {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .spawn()
        .context("starting node for the stock reconnect")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut cpu0 = None;
    let mut client_cpu0 = None;
    let mut report: Option<ScriptReport> = None;
    let mut cpu1 = None;
    let mut client_cpu1 = None;
    let run = async {
        while let Some(line) = lines.next_line().await? {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            match v.get("event").and_then(|e| e.as_str()) {
                Some("reconnect") => {
                    cpu0 = server.cpu_secs();
                    client_cpu0 = child.id().and_then(|p| read_cpu_secs(&p.to_string()));
                }
                Some("result") => {
                    cpu1 = server.cpu_secs();
                    client_cpu1 = child.id().and_then(|p| read_cpu_secs(&p.to_string()));
                    report = Some(serde_json::from_value(v)?);
                }
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    let limit = cfg.timeout * 3 + Duration::from_secs(60);
    let outcome = tokio::time::timeout(limit, run).await;
    let mem = server.mem();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    server.stop().await;
    match outcome {
        Err(_) => bail!(
            "the stock reconnect script did not finish in {} s; see {}",
            limit.as_secs(),
            log_path.display()
        ),
        Ok(Err(e)) => return Err(e.context(format!("see {}", log_path.display()))),
        Ok(Ok(())) => {}
    }
    let report = report.ok_or_else(|| {
        anyhow!(
            "the stock reconnect script reported nothing (exit {:?}); see {}",
            status.ok().and_then(|s| s.ok()),
            log_path.display()
        )
    })?;
    let docs = report.docs_total.max(1) as f64;
    let note = (report.quiet_secs.is_none() || !report.errors.is_empty()).then(|| {
        format!(
            "{}{} client(s) connected of {}; errors: {:?}",
            if report.quiet_secs.is_none() {
                "did not go quiet before the timeout; "
            } else {
                ""
            },
            report.clients_connected,
            report.clients,
            report.errors
        )
    });
    Ok(StockResult {
        target: target.name(),
        run: cfg.run,
        clients: sc.clients,
        docs_per_client: sc.docs_per_client,
        pool: sc.pool,
        msgs_per_doc_up: report.up.doc_msgs() as f64 / docs,
        msgs_per_doc_down: report.down.doc_msgs() as f64 / docs,
        bytes_per_doc_up: report.up.bytes as f64 / docs,
        bytes_per_doc_down: report.down.bytes as f64 / docs,
        quiet_secs: report.quiet_secs,
        server_cpu_secs: cpu1.zip(cpu0).map(|(a, b)| a - b),
        server_peak_rss_mib: mem.map(|m| m.hwm_kib as f64 / 1024.0),
        client_cpu_secs: client_cpu1.zip(client_cpu0).map(|(a, b)| a - b),
        report,
        note,
    })
}
