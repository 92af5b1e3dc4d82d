//! `sdk-bench`: the Rust client SDK (`minka-client`) against the stock automerge-repo JS client,
//! side by side on one `minka serve`, plus the SDK's local edit latency. See BENCHMARKS.md,
//! section "Client SDK"; `scripts/bench-sdk` builds everything and runs this.
//!
//! 1. One release `minka serve` on a fresh data directory is seeded through the protocol by SDK
//!    clients: `--leaders` leaders of district 150110 each create their share of `--proposals`
//!    proposals and edit them offline (cost, title, description, status), sync, then support and
//!    comment on the others' proposals offline and sync again (5 to 10 edits per proposal).
//! 2. Each run (`--runs`, SDK first on odd runs, JS first on even ones):
//!    - SDK download: `Client::open` on a fresh directory, `connect` with a new leader's token,
//!      until every document the district index lists (and the index) is held and `Synced`;
//!    - SDK reconnect: that client disconnects, a new `Client::open` on the same directory
//!      connects, until it is `Connected` with every document `Synced`;
//!    - JS download: tests/js/bench-download.mjs, a fresh stock `Repo` without storage, finds the
//!      index and every listed document until all are ready;
//!    - JS reconnect: the same script with a NodeFS storage adapter downloads, shuts its `Repo`
//!      down, and a new `Repo` over the same directory finds everything again;
//!    - edit latency: `client-sdk/examples/phone.rs edits N` (durable `set_estimated_cost`), and
//!      the same edit on an in-memory `automerge::Automerge` in this process.
//!
//! Bytes and messages are the server's own counters (`minka_bytes_in_total`,
//! `minka_bytes_out_total`, `minka_messages_in_total`, `minka_messages_out_total` from
//! `GET /metrics` with an admin token) before a phase and after the wire went quiet (no change for
//! `--quiet-ms`); only the measured client is connected then, so the difference is its traffic.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use crdt_core::schema::{apply_edits, Edit};
use crdt_core::{DocumentId, Ubigeo};
use minka_client::store::LocalStore;
use minka_client::{Client, ConnectionState, DocStatus, ProposalDraft, ProposalStatus};
use minka_tests::loadgen::measure::admin_token;
use minka_tests::loadgen::server::{prometheus_value, read_cpu_secs, ServerProc, Target};
use minka_tests::loadgen::workloads::token;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::broadcast::error::TryRecvError;

const DISTRICT: &str = "150110";
const YEAR: u16 = 2027;

#[derive(Parser, Debug)]
#[command(
    name = "sdk-bench",
    about = "Client SDK benchmark: the Rust SDK and the stock JS client on one minka"
)]
struct Args {
    /// Repetitions; the SDK goes first on odd runs, the JS client on even ones.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Proposals in the district.
    #[arg(long, default_value_t = 500)]
    proposals: usize,
    /// Leaders who write them (at least 4: up to 3 others support each proposal).
    #[arg(long, default_value_t = 5)]
    leaders: usize,
    /// Durable edits timed by `phone edits N`, and raw automerge edits.
    #[arg(long, default_value_t = 1000)]
    edits: usize,
    /// The minka binary (a release build).
    #[arg(long, default_value = "target/release/minka")]
    minka_bin: PathBuf,
    /// The SDK's example phone (`cargo build --release -p minka-client --example phone`).
    #[arg(long, default_value = "target/release/examples/phone")]
    phone_bin: PathBuf,
    /// The stock-client script, run with node (needs tests/js/node_modules).
    #[arg(long, default_value = "tests/js/bench-download.mjs")]
    js_script: PathBuf,
    /// Diagnostic: give the SDK phone a peer id as long as the stock client's (`peer-` and 9
    /// base-36 characters, written to its fresh store before `Client::open`) instead of the one
    /// the SDK makes, to show what the id's length costs on the wire.
    #[arg(long)]
    sdk_js_like_peer_id: bool,
    /// A phase has ended once the server's byte and message counters stood still this long.
    #[arg(long, default_value_t = 500)]
    quiet_ms: u64,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Markdown results.
    #[arg(long, default_value = "target/bench/sdk-results.md")]
    out: PathBuf,
    /// Every run's figures as JSON.
    #[arg(long, default_value = "target/bench/sdk-results.json")]
    json: PathBuf,
    /// Server and node logs.
    #[arg(long, default_value = "target/bench/logs")]
    log_dir: PathBuf,
}

// ---- the server's traffic counters ----

/// `minka_{bytes,messages}_{in,out}_total` at one moment (in: client → server).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
struct Counters {
    msgs_up: f64,
    msgs_down: f64,
    bytes_up: f64,
    bytes_down: f64,
}

impl Counters {
    async fn read(server: &ServerProc, admin: &str) -> Result<Self> {
        let text = server
            .metrics_text(admin)
            .await
            .ok_or_else(|| anyhow!("GET /metrics failed"))?;
        let v = |name: &str| {
            prometheus_value(&text, name).ok_or_else(|| anyhow!("{name} missing from /metrics"))
        };
        Ok(Self {
            msgs_up: v("minka_messages_in_total")?,
            msgs_down: v("minka_messages_out_total")?,
            bytes_up: v("minka_bytes_in_total")?,
            bytes_down: v("minka_bytes_out_total")?,
        })
    }

    fn minus(self, before: Self) -> Self {
        Self {
            msgs_up: self.msgs_up - before.msgs_up,
            msgs_down: self.msgs_down - before.msgs_down,
            bytes_up: self.bytes_up - before.bytes_up,
            bytes_down: self.bytes_down - before.bytes_down,
        }
    }
}

/// One measured phase of one client.
#[derive(Debug, Clone, Serialize)]
struct Phase {
    client: &'static str,
    phase: &'static str,
    run: usize,
    docs: usize,
    /// Until the client's goal (SDK: all held and Synced; JS: all ready).
    secs: f64,
    /// Until the last change of the server's counters.
    quiet_secs: f64,
    traffic: Counters,
    server_cpu_secs: Option<f64>,
    client_cpu_secs: Option<f64>,
    /// JS with storage: documents whose sync state was persisted before the restart.
    persisted_sync_states: Option<usize>,
}

impl Phase {
    /// A phase whose client reached its goal after `secs`; [`Bench::finish`] adds the rest.
    fn new(
        client: &'static str,
        phase: &'static str,
        run: usize,
        docs: usize,
        secs: f64,
        client_cpu_secs: Option<f64>,
    ) -> Self {
        Self {
            client,
            phase,
            run,
            docs,
            secs,
            quiet_secs: secs,
            traffic: Counters::default(),
            server_cpu_secs: None,
            client_cpu_secs,
            persisted_sync_states: None,
        }
    }
}

/// The measuring context: the server, its admin token, the limits.
struct Bench<'a> {
    server: &'a ServerProc,
    admin: String,
    secret: String,
    quiet: Duration,
    timeout: Duration,
}

/// What a phase's caller measured before handing over to [`Bench::finish`].
struct Started {
    before: Counters,
    server_cpu: Option<f64>,
}

impl Bench<'_> {
    async fn start(&self) -> Result<Started> {
        Ok(Started {
            before: Counters::read(self.server, &self.admin).await?,
            server_cpu: self.server.cpu_secs(),
        })
    }

    /// Waits until the counters stood still for the quiet window (from now, when the client
    /// reached its goal), then fills in the traffic, the server's CPU and the quiet time.
    async fn finish(&self, s: Started, mut p: Phase) -> Result<Phase> {
        let done = Instant::now();
        let mut last = Counters::read(self.server, &self.admin).await?;
        let mut changed = done;
        while changed.elapsed() < self.quiet {
            if done.elapsed() > self.timeout {
                bail!("{} {}: the wire did not go quiet", p.client, p.phase);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            let now = Counters::read(self.server, &self.admin).await?;
            if now != last {
                last = now;
                changed = Instant::now();
            }
        }
        p.quiet_secs = p.secs + changed.duration_since(done).as_secs_f64();
        p.traffic = last.minus(s.before);
        p.server_cpu_secs = self.server.cpu_secs().zip(s.server_cpu).map(|(a, b)| a - b);
        Ok(p)
    }

    fn token(&self, user: &str) -> String {
        token(&self.secret, user, &["leader"])
    }

    fn url(&self) -> &str {
        self.server.base_url()
    }
}

fn own_cpu() -> Option<f64> {
    read_cpu_secs("self")
}

// ---- SDK clients ----

/// Waits until the district index lists every document of `expected`, and each of them and the
/// index is held and `Synced` on a connected client.
async fn all_synced(client: &Client, expected: &[DocumentId], limit: Duration) -> Result<()> {
    let district: Ubigeo = DISTRICT.parse()?;
    let mut pending: Vec<DocumentId> = expected.to_vec();
    pending.push(DocumentId::index_for(district, YEAR));
    let mut listed = false;
    let mut events = client.events();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if !listed {
            let index: BTreeSet<DocumentId> = client.district_index().into_iter().collect();
            listed = expected.iter().all(|id| index.contains(id));
        }
        if listed {
            pending.retain(|id| {
                let held = client.heads(id).is_ok_and(|h| !h.is_empty());
                !(held
                    && client
                        .status(id)
                        .is_ok_and(|s| s.status == DocStatus::Synced))
            });
            if pending.is_empty() && client.connection_state() == ConnectionState::Connected {
                return Ok(());
            }
        }
        tokio::select! {
            _ = events.recv() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = tokio::time::sleep_until(deadline) => bail!(
                "not synced in {limit:?}: index complete {listed}, {} documents pending, connection {:?}",
                pending.len(),
                client.connection_state()
            ),
        }
        // Whatever else arrived meanwhile is covered by the next look.
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = events.try_recv() {}
    }
}

/// SDK download then reconnect, on a fresh directory.
async fn sdk_phases(
    b: &Bench<'_>,
    run: usize,
    ids: &[DocumentId],
    js_like_peer_id: bool,
) -> Result<Vec<Phase>> {
    let dir = tempfile::Builder::new()
        .prefix("minka-sdk-phone-")
        .tempdir()?;
    if js_like_peer_id {
        let store = LocalStore::open(dir.path())?;
        let id: String = (0..9)
            .map(|_| char::from_digit(rand::random::<u32>() % 36, 36).unwrap_or('0'))
            .collect();
        store.put_meta("peer_id", format!("peer-{id}").as_bytes())?;
        store.sync()?;
    }
    let token = b.token(&format!("bench-sdk-phone-{run}"));
    let mut out = Vec::new();
    for phase in ["download", "reconnect"] {
        let s = b.start().await?;
        let (t0, cpu0) = (Instant::now(), own_cpu());
        let client = Client::open(dir.path())?;
        client.connect(b.url(), &token)?;
        all_synced(&client, ids, b.timeout).await?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = own_cpu().zip(cpu0).map(|(a, b)| a - b);
        let p = Phase::new("sdk", phase, run, ids.len(), secs, cpu);
        out.push(b.finish(s, p).await?);
        client.disconnect().await;
    }
    Ok(out)
}

// ---- the stock JS client ----

/// tests/js/bench-download.mjs in node, spoken to line by line.
struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
}

impl Node {
    async fn start(
        script: &Path,
        b: &Bench<'_>,
        user: &str,
        storage: Option<&Path>,
        log: PathBuf,
    ) -> Result<Self> {
        let script = std::fs::canonicalize(script)
            .with_context(|| format!("the JS script {}", script.display()))?;
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .args(["--url", b.url(), "--token", &b.token(user)])
            .args(["--timeout-s", &b.timeout.as_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .kill_on_drop(true);
        if let Some(dir) = storage {
            cmd.arg("--storage").arg(dir);
        }
        if let Some(dir) = script.parent() {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().context("starting node")?;
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Ok(Self {
            child,
            stdin,
            lines,
            log,
        })
    }

    /// Sends a command (if any), then waits for the event named `event`.
    async fn step(
        &mut self,
        command: Option<&str>,
        event: &str,
        limit: Duration,
    ) -> Result<serde_json::Value> {
        if let Some(c) = command {
            self.stdin.write_all(format!("{c}\n").as_bytes()).await?;
            self.stdin.flush().await?;
        }
        let read = async {
            while let Some(line) = self.lines.next_line().await? {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["event"] == event {
                    return Ok(v);
                }
            }
            bail!("node exited before `{event}`")
        };
        tokio::time::timeout(limit, read)
            .await
            .map_err(|_| anyhow!("no `{event}` from node in {limit:?}"))?
            .with_context(|| format!("see {}", self.log.display()))
    }

    async fn exit(mut self) {
        let _ = self.stdin.write_all(b"exit\n").await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The phase a `ready` event of the script reports (its own time and CPU since `new Repo`).
fn ready_phase(
    v: &serde_json::Value,
    phase: &'static str,
    run: usize,
    expected: usize,
) -> Result<Phase> {
    let docs = v["docs"].as_u64().unwrap_or(0) as usize;
    if docs != expected {
        bail!("the JS client saw {docs} listed documents, not {expected}");
    }
    let secs = v["secs"]
        .as_f64()
        .ok_or_else(|| anyhow!("no secs in {v}"))?;
    Ok(Phase::new(
        "js",
        phase,
        run,
        docs,
        secs,
        v["cpu_secs"].as_f64(),
    ))
}

/// JS download without storage, then download and reconnect with NodeFS storage.
async fn js_phases(
    b: &Bench<'_>,
    args: &Args,
    run: usize,
    ids: &[DocumentId],
) -> Result<Vec<Phase>> {
    let limit = b.timeout + Duration::from_secs(30);
    let log = |name: &str| args.log_dir.join(format!("js-{name}-run{run}.log"));
    let n = ids.len();
    let mut out = Vec::new();

    let s = b.start().await?;
    let user = format!("bench-js-phone-{run}");
    let mut node = Node::start(&args.js_script, b, &user, None, log("download")).await?;
    let p = ready_phase(&node.step(None, "ready", limit).await?, "download", run, n)?;
    out.push(b.finish(s, p).await?);
    node.exit().await;

    let storage = tempfile::Builder::new()
        .prefix("minka-js-phone-")
        .tempdir()?;
    let user = format!("bench-js-stored-phone-{run}");
    let s = b.start().await?;
    let mut node = Node::start(
        &args.js_script,
        b,
        &user,
        Some(storage.path()),
        log("stored"),
    )
    .await?;
    let p = ready_phase(
        &node.step(None, "ready", limit).await?,
        "download-stored",
        run,
        n,
    )?;
    out.push(b.finish(s, p).await?);
    let closed = node.step(Some("restart"), "closed", limit).await?;
    let s = b.start().await?;
    let ready = node.step(Some("reconnect"), "ready", limit).await?;
    let mut p = ready_phase(&ready, "reconnect", run, n)?;
    p.persisted_sync_states = closed["sync_states"].as_u64().map(|k| k as usize);
    out.push(b.finish(s, p).await?);
    node.exit().await;
    Ok(out)
}

// ---- seeding through the protocol, with SDK clients ----

/// Proposal `i` of the district, as its author drafts it.
fn draft(i: usize) -> ProposalDraft {
    ProposalDraft {
        title: format!("Mejoramiento de la losa deportiva del sector {i}"),
        description: "Construcción de graderías y cerco perimétrico.".into(),
        zone: format!("Zona {}", i % 5 + 1),
        category: "infraestructura".into(),
        beneficiaries: 300 + i as i64,
        estimated_cost: 45_000_000 + 10_000 * i as i64,
        cofinancing: 2_000_000,
    }
}

struct Leader {
    client: Client,
    token: String,
    _dir: tempfile::TempDir,
}

/// Leader `k` writes proposals k, k + leaders, …: create, then cost, description, sometimes the
/// title and a second cost, and submits. Offline; every call is durable. Returns (i, id, edits).
fn author(
    client: &Client,
    k: usize,
    n: usize,
    leaders: usize,
) -> Result<Vec<(usize, DocumentId, usize)>> {
    let mut out = Vec::new();
    for i in (k..n).step_by(leaders) {
        let id = client.create_proposal(draft(i))?;
        let mut edits = 0;
        let mut edit = |r: Result<Option<automerge::ChangeHash>, minka_client::Error>| {
            r.map(|h| edits += usize::from(h.is_some()))
        };
        edit(client.set_estimated_cost(&id, 47_500_000 + 10_000 * i as i64))?;
        edit(client.set_description(
            &id,
            &format!(
                "Construcción de graderías, cerco perimétrico e iluminación LED para la losa \
                 deportiva del sector {i}, con drenaje pluvial y rampas de acceso. Beneficia a \
                 las familias de la zona y a los clubes deportivos del barrio."
            ),
        ))?;
        if i % 2 == 0 {
            edit(client.set_title(&id, &format!("Losa deportiva iluminada del sector {i}")))?;
        }
        if i % 5 == 0 {
            edit(client.set_estimated_cost(&id, 49_000_000 + 10_000 * i as i64))?;
        }
        edit(client.set_proposal_status(&id, ProposalStatus::Submitted))?;
        out.push((i, id, edits));
    }
    Ok(out)
}

/// Leader `k` supports (1 to 3 supporters a proposal) and comments on (1 or 2 comments) the
/// proposals of the leaders after their owner: 5 to 10 edits a proposal with [`author`]'s. Offline. Returns the edits per proposal index.
fn react(client: &Client, k: usize, ids: &[DocumentId], leaders: usize) -> Result<Vec<usize>> {
    let mut edits = vec![0; ids.len()];
    for (i, id) in ids.iter().enumerate() {
        let rank = (k + leaders - i % leaders) % leaders;
        if rank == 0 {
            continue;
        }
        if rank <= 1 + (i / 2) % 3 && client.support(id)?.is_some() {
            edits[i] += 1;
        }
        let comment = format!(
            "Apoyamos la propuesta {i}; pedimos revisar el costo del cerco con la junta vecinal."
        );
        if rank <= 1 + (i / 3) % 2 && client.comment(id, &comment)?.is_some() {
            edits[i] += 1;
        }
    }
    Ok(edits)
}

/// What seeding made.
#[derive(Debug, Clone, Serialize)]
struct Seeding {
    proposals: usize,
    leaders: usize,
    /// Edits after creation, per proposal: min, max, total.
    edits_min: usize,
    edits_max: usize,
    edits_total: usize,
    /// Heads per proposal once seeded (concurrent edits leave several): mean and max.
    heads_mean: f64,
    heads_max: usize,
    secs: f64,
}

async fn sync_all(leaders: &[Leader], b: &Bench<'_>, ids: &[DocumentId]) -> Result<()> {
    for l in leaders {
        l.client.connect(b.url(), &l.token)?;
    }
    for l in leaders {
        all_synced(&l.client, ids, b.timeout).await?;
    }
    for l in leaders {
        l.client.disconnect().await;
    }
    Ok(())
}

async fn seed(b: &Bench<'_>, n: usize, m: usize) -> Result<(Vec<DocumentId>, Seeding)> {
    let t0 = Instant::now();
    let mut leaders = Vec::new();
    for k in 0..m {
        let dir = tempfile::Builder::new()
            .prefix("minka-sdk-leader-")
            .tempdir()?;
        let client = Client::open(dir.path())?;
        let token = b.token(&format!("bench-leader-{k}"));
        client.set_token(&token)?;
        leaders.push(Leader {
            client,
            token,
            _dir: dir,
        });
    }
    let mut tasks = Vec::new();
    for (k, l) in leaders.iter().enumerate() {
        let client = l.client.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            author(&client, k, n, m)
        }));
    }
    let mut ids = vec![None; n];
    let mut edits = vec![0; n];
    for t in tasks {
        for (i, id, e) in t.await?? {
            ids[i] = Some(id);
            edits[i] += e;
        }
    }
    let ids: Vec<DocumentId> = ids
        .into_iter()
        .map(|i| i.expect("every index written"))
        .collect();
    sync_all(&leaders, b, &ids).await?;
    let mut tasks = Vec::new();
    for (k, l) in leaders.iter().enumerate() {
        let (client, ids) = (l.client.clone(), ids.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            react(&client, k, &ids, m)
        }));
    }
    for t in tasks {
        for (i, e) in t.await??.into_iter().enumerate() {
            edits[i] += e;
        }
    }
    sync_all(&leaders, b, &ids).await?;
    let heads: Vec<usize> = ids
        .iter()
        .map(|id| leaders[0].client.heads(id).map_or(0, |h| h.len()))
        .collect();
    let seeding = Seeding {
        proposals: n,
        leaders: m,
        edits_min: edits.iter().copied().min().unwrap_or(0),
        edits_max: edits.iter().copied().max().unwrap_or(0),
        edits_total: edits.iter().sum(),
        heads_mean: heads.iter().sum::<usize>() as f64 / n as f64,
        heads_max: heads.iter().copied().max().unwrap_or(0),
        secs: t0.elapsed().as_secs_f64(),
    };
    Ok((ids, seeding))
}

// ---- local edit latency ----

/// min / median / max of one latency series, milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    min: f64,
    median: f64,
    max: f64,
}

/// `phone --dir FRESH --token T edits N`: its stderr line with min / median / max.
async fn phone_edits(bin: &Path, token: &str, n: usize) -> Result<Latency> {
    let dir = tempfile::Builder::new()
        .prefix("minka-sdk-edits-")
        .tempdir()?;
    let out = Command::new(bin)
        .arg("--dir")
        .arg(dir.path())
        .args(["--token", token, "edits", &n.to_string()])
        .stdout(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", bin.display()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("phone edits failed: {err}");
    }
    // "edit latency over N: min A ms, median B ms, max C ms"
    let line = err
        .lines()
        .find(|l| l.starts_with("edit latency"))
        .ok_or_else(|| anyhow!("no latency line from phone: {err}"))?;
    let num = |key: &str| -> Result<f64> {
        let rest = &line[line.find(key).ok_or_else(|| anyhow!("{key} in {line}"))? + key.len()..];
        Ok(rest.split_whitespace().next().unwrap_or("").parse()?)
    };
    Ok(Latency {
        min: num("min ")?,
        median: num("median ")?,
        max: num("max ")?,
    })
}

/// The same edit (`estimatedCost`, one change each) on an in-memory `automerge::Automerge`: a
/// proposal the SDK created, loaded from its store and edited without the SDK (no permission
/// check, no store, no fsync).
fn raw_edits(token: &str, n: usize) -> Result<Latency> {
    let dir = tempfile::Builder::new()
        .prefix("minka-raw-edits-")
        .tempdir()?;
    let id = {
        let client = Client::open(dir.path())?;
        client.set_token(token)?;
        client.create_proposal(draft(0))?
    };
    let (mut doc, _) = LocalStore::open(dir.path())?.load(&id)?;
    let at = minka_tests::harness::now_unix() as i64;
    let mut times = Vec::with_capacity(n);
    for i in 1..=n {
        let edit = Edit::SetScalar {
            field: "estimatedCost".into(),
            value: (i as i64).into(),
        };
        let t = Instant::now();
        apply_edits(
            &mut doc,
            std::slice::from_ref(&edit),
            "set estimatedCost",
            at,
        )?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(Latency {
        min: times[0],
        median: times[n / 2],
        max: times[n - 1],
    })
}

#[derive(Debug, Clone, Serialize)]
struct Edits {
    run: usize,
    sdk: Latency,
    raw: Latency,
}

// ---- the report ----

#[derive(Debug, Serialize)]
struct Results {
    commit: String,
    /// server/, client-sdk/ or crdt-core/ had uncommitted changes.
    dirty: bool,
    seeding: Seeding,
    phases: Vec<Phase>,
    edits: Vec<Edits>,
}

/// min / median / max of a series (upper median for an even count).
fn spread(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    Some((*v.first()?, v[v.len() / 2], *v.last()?))
}

fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 1000.0 => {
            let s = format!("{v:.0}");
            let (neg, digits) = s.strip_prefix('-').map_or((false, &s[..]), |d| (true, d));
            let mut grouped = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(c);
            }
            format!("{}{grouped}", if neg { "-" } else { "" })
        }
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

fn cell(v: Vec<f64>) -> String {
    spread(v).map_or("—".into(), |(a, m, z)| {
        format!("{} / {} / {}", num(a), num(m), num(z))
    })
}

fn median(v: Vec<f64>) -> Option<f64> {
    spread(v).map(|(_, m, _)| m)
}

type Figure = (&'static str, fn(&Phase) -> Option<f64>);

const DOWNLOAD_ROWS: &[Figure] = &[
    ("time until all held and Synced / ready (s)", |p| {
        Some(p.secs)
    }),
    ("time until the wire went quiet (s)", |p| Some(p.quiet_secs)),
    ("messages, client → server", |p| Some(p.traffic.msgs_up)),
    ("messages, server → client", |p| Some(p.traffic.msgs_down)),
    ("bytes, client → server", |p| Some(p.traffic.bytes_up)),
    ("bytes, server → client", |p| Some(p.traffic.bytes_down)),
    ("bytes, both ways", |p| {
        Some(p.traffic.bytes_up + p.traffic.bytes_down)
    }),
    ("server CPU (s)", |p| p.server_cpu_secs),
    ("client CPU (s)", |p| p.client_cpu_secs),
];

/// Per document: the listed documents and the index.
fn per_doc(p: &Phase, v: f64) -> f64 {
    v / (p.docs + 1) as f64
}

const RECONNECT_ROWS: &[Figure] = &[
    ("messages per document, client → server", |p| {
        Some(per_doc(p, p.traffic.msgs_up))
    }),
    ("messages per document, server → client", |p| {
        Some(per_doc(p, p.traffic.msgs_down))
    }),
    ("bytes per document, client → server", |p| {
        Some(per_doc(p, p.traffic.bytes_up))
    }),
    ("bytes per document, server → client", |p| {
        Some(per_doc(p, p.traffic.bytes_down))
    }),
    ("messages in all, both ways", |p| {
        Some(p.traffic.msgs_up + p.traffic.msgs_down)
    }),
    ("bytes in all, both ways", |p| {
        Some(p.traffic.bytes_up + p.traffic.bytes_down)
    }),
    ("time until connected and Synced / all ready (s)", |p| {
        Some(p.secs)
    }),
    ("time until the wire went quiet (s)", |p| Some(p.quiet_secs)),
    ("server CPU (s)", |p| p.server_cpu_secs),
    ("sync states persisted before the restart", |p| {
        p.persisted_sync_states.map(|n| n as f64)
    }),
];

fn table(out: &mut String, r: &Results, rows: &[Figure], cols: &[(&str, &str, &str)]) {
    let series = |client: &str, phase: &str, f: fn(&Phase) -> Option<f64>| -> Vec<f64> {
        r.phases
            .iter()
            .filter(|p| p.client == client && p.phase == phase)
            .filter_map(f)
            .collect()
    };
    let _ = write!(out, "| |");
    for (title, _, _) in cols {
        let _ = write!(out, " {title} |");
    }
    let _ = writeln!(out, " SDK ÷ JS (medians) |");
    let _ = writeln!(out, "|---|{}---:|", "---:|".repeat(cols.len()));
    for (label, f) in rows {
        let _ = write!(out, "| {label} |");
        for (_, client, phase) in cols {
            let _ = write!(out, " {} |", cell(series(client, phase, *f)));
        }
        let (sdk, js) = (cols[0], cols[1]);
        let ratio = median(series(sdk.1, sdk.2, *f))
            .zip(median(series(js.1, js.2, *f)))
            .filter(|(_, j)| *j != 0.0)
            .map_or("—".into(), |(s, j)| format!("{:.2}×", s / j));
        let _ = writeln!(out, " {ratio} |");
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn markdown(r: &Results, args: &Args) -> String {
    let s = &r.seeding;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Commit `{}`{}, {} runs (SDK first on odd runs, JS first on even ones); every figure is \
         min / median / max over the runs. District: {} proposals by {} leaders, each created \
         then edited {}–{} times ({} edits in all; cost, description, title, status, supporters, \
         comments; {:.1} heads per proposal on average, at most {}), seeded through the protocol \
         by SDK clients in {:.1} s.{}\n",
        r.commit,
        if r.dirty {
            " (with uncommitted changes in server/, client-sdk/ or crdt-core/)"
        } else {
            ""
        },
        args.runs,
        s.proposals,
        s.leaders,
        s.edits_min,
        s.edits_max,
        s.edits_total,
        s.heads_mean,
        s.heads_max,
        s.secs,
        if args.sdk_js_like_peer_id {
            " **Diagnostic run: the SDK phone's peer id was as long as the stock client's.**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "#### 1. A fresh phone downloads the district ({} proposals + the index)\n",
        s.proposals
    );
    table(
        &mut o,
        r,
        DOWNLOAD_ROWS,
        &[
            ("SDK", "sdk", "download"),
            ("JS, no storage", "js", "download"),
            ("JS + NodeFS storage", "js", "download-stored"),
        ],
    );
    let _ = writeln!(
        o,
        "\n#### 2. Reconnect with nothing new (restarted app, same store; per document = ÷ {})\n",
        s.proposals + 1
    );
    table(
        &mut o,
        r,
        RECONNECT_ROWS,
        &[
            ("SDK", "sdk", "reconnect"),
            ("JS + NodeFS storage", "js", "reconnect"),
        ],
    );
    let ser = |f: fn(&Edits) -> f64| r.edits.iter().map(f).collect::<Vec<f64>>();
    let _ = writeln!(
        o,
        "\n#### 3. Local edit latency ({} edits of `estimatedCost`, ms)\n",
        args.edits
    );
    let _ = writeln!(o, "| | min | median | max |\n|---|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| SDK `set_estimated_cost`, durable (`phone edits {}`) | {} | {} | {} |",
        args.edits,
        cell(ser(|e| e.sdk.min)),
        cell(ser(|e| e.sdk.median)),
        cell(ser(|e| e.sdk.max))
    );
    let _ = writeln!(
        o,
        "| raw automerge, in memory (`apply_edits`) | {} | {} | {} |",
        cell(ser(|e| e.raw.min)),
        cell(ser(|e| e.raw.median)),
        cell(ser(|e| e.raw.max))
    );
    let sdk_med = median(ser(|e| e.sdk.median)).unwrap_or(f64::NAN);
    let raw_med = median(ser(|e| e.raw.median)).unwrap_or(f64::NAN);
    let _ = writeln!(
        o,
        "\nSDK ÷ raw automerge (median of the runs' medians): {:.0}×.\n",
        sdk_med / raw_med
    );

    let med = |client: &str, phase: &str, f: fn(&Phase) -> Option<f64>| {
        median(
            r.phases
                .iter()
                .filter(|p| p.client == client && p.phase == phase)
                .filter_map(f)
                .collect(),
        )
        .unwrap_or(f64::NAN)
    };
    let bytes = |p: &Phase| Some(p.traffic.bytes_up + p.traffic.bytes_down);
    let secs = |p: &Phase| Some(p.secs);
    let (sb, jb) = (med("sdk", "download", bytes), med("js", "download", bytes));
    let (st, jt) = (med("sdk", "download", secs), med("js", "download", secs));
    let _ = writeln!(
        o,
        "#### Targets\n\n| target | measured (medians) | verdict |\n|---|---|---|"
    );
    let _ = writeln!(
        o,
        "| download: SDK bytes ≤ JS bytes | {} vs {} bytes ({:.2}×) | {} |",
        num(sb),
        num(jb),
        sb / jb,
        verdict(sb <= jb)
    );
    let _ = writeln!(
        o,
        "| download: SDK time ≤ JS time | {:.2} vs {:.2} s ({:.2}×) | {} |",
        st,
        jt,
        st / jt,
        verdict(st <= jt)
    );
    let _ = writeln!(
        o,
        "| local edit: median < 5 ms | {:.2} ms | {} |",
        sdk_med,
        verdict(sdk_med < 5.0)
    );
    o
}

/// `git rev-parse --short HEAD`, and whether the code under test differs from it.
fn commit() -> (String, bool) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "server",
        "client-sdk",
        "crdt-core",
    ])
    .is_some_and(|s| !s.is_empty());
    (head, dirty)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.leaders < 4 || args.proposals == 0 || args.edits == 0 {
        bail!("--leaders must be at least 4, --proposals and --edits at least 1");
    }
    let secret = "minka-sdk-bench-secret-0123456789".to_string();
    let admin = admin_token(&secret);
    std::fs::create_dir_all(&args.log_dir)?;
    let target = Target::Minka {
        bin: args.minka_bin.clone(),
        name: "minka".into(),
        args: Vec::new(),
    };
    let server = ServerProc::start(&target, &secret, &admin, &args.log_dir, "sdk-bench").await?;
    let b = Bench {
        server: &server,
        admin,
        secret,
        quiet: Duration::from_millis(args.quiet_ms),
        timeout: Duration::from_secs(args.timeout),
    };
    eprintln!(
        "== seeding {} proposals by {} leaders",
        args.proposals, args.leaders
    );
    let (ids, seeding) = seed(&b, args.proposals, args.leaders).await?;
    eprintln!(
        "   {} edits after creation ({}–{} per proposal) in {:.1} s",
        seeding.edits_total, seeding.edits_min, seeding.edits_max, seeding.secs
    );
    let (commit, dirty) = commit();
    let mut results = Results {
        commit,
        dirty,
        seeding,
        phases: Vec::new(),
        edits: Vec::new(),
    };
    for run in 1..=args.runs {
        let sdk_first = run % 2 == 1;
        for sdk in [sdk_first, !sdk_first] {
            let phases = if sdk {
                sdk_phases(&b, run, &ids, args.sdk_js_like_peer_id).await?
            } else {
                js_phases(&b, &args, run, &ids).await?
            };
            for p in &phases {
                eprintln!(
                    "   run {run} {} {}: {:.2} s (quiet {:.2} s), {} / {} messages, {} / {} bytes up / down",
                    p.client,
                    p.phase,
                    p.secs,
                    p.quiet_secs,
                    p.traffic.msgs_up,
                    p.traffic.msgs_down,
                    p.traffic.bytes_up,
                    p.traffic.bytes_down
                );
            }
            results.phases.extend(phases);
        }
        let phone_token = b.token("bench-edits");
        let sdk = phone_edits(&args.phone_bin, &phone_token, args.edits).await?;
        let n = args.edits;
        let raw = tokio::task::spawn_blocking(move || raw_edits(&phone_token, n)).await??;
        eprintln!(
            "   run {run} edits: SDK median {:.2} ms, raw automerge median {:.4} ms",
            sdk.median, raw.median
        );
        results.edits.push(Edits { run, sdk, raw });
    }
    server.stop().await;
    let md = markdown(&results, &args);
    for path in [&args.out, &args.json] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&args.out, &md)?;
    std::fs::write(&args.json, serde_json::to_string_pretty(&results)?)?;
    println!("{md}");
    Ok(())
}
