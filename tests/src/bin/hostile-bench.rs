//! `hostile-bench`: a well-behaved client's edit latency while hostile input hits the server.
//! `scripts/bench-hostile` builds the release `minka` and runs this; results go into
//! RELIABILITY-hostile.md.
//!
//! Each run starts one release `minka serve` on a fresh data directory (default limits). A
//! well-behaved leader creates a proposal, then, per scenario, makes `--edits` edits with no
//! attack and `--edits` more under the attack: each is one change sent in a sync message and
//! timed until the server's sync reply acknowledges it (the server's heads equal ours), with
//! `--pause-ms` between edits during which it keeps reading. A scenario's ratio is to the quiet
//! edits just before it. The client runs on its own thread and runtime; the attacks run on
//! another runtime (each scenario as a user of its own), started `--warmup-ms` before the first
//! edit under attack and stopped after the last:
//!
//! - `baseline`: no attack (measured first and again last, `baseline-end`);
//! - `malformed-frames`: 4 connections in a loop, each joins and sends one of: non-CBOR bytes, a
//!   sync message truncated at a random length, 100,000 nested CBOR arrays, a byte string header
//!   claiming 4 GiB; the server answers `error` and closes;
//! - `giant-frames`: 2 connections in a loop sending `ephemeral` frames of exactly the frame limit
//!   (16 MiB, accepted, for a document of their own) and one byte over it (refused, closed);
//! - `jwt-garbage`: 4 loops of WebSocket upgrades with forged tokens (alg none, wrong key, RS256
//!   header, expired, missing claims, not a JWT); each gets 401;
//! - `mega-token`: 2 loops of upgrades carrying a 1 MB token in `Authorization` (431);
//! - `held-changes`: 2 connections flooding the good client's document with changes whose
//!   dependency never arrives (a chain of 10,000 built on one unsent change), 100 per message;
//! - `need-flood`: 2 connections sending sync messages for the good document with `need` lists of
//!   5,000 random hashes;
//! - `ephemeral-flood`: 2 connections sending 100-byte `ephemeral` messages on the good client's
//!   document as fast as they can (relayed to the good client, which keeps reading them);
//! - `random-requests`: one connection at a time sends 10,000 `request`s for random document ids
//!   (the server answers `doc-unavailable` and keeps it waiting on each), then reconnects.
//!
//! Printed: p50/p99 per scenario and its ratio to the baseline, attack operations done, and
//! whether `/healthz` answered 200 after each scenario.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use automerge::{ActorId, Automerge, ChangeHash};
use clap::Parser;
use crdt_core::schema::{apply_edit, Edit, NewDocument, NewProposal};
use crdt_core::wire::{
    EphemeralMessage, JoinMessage, Message, PeerMetadata, RequestMessage, SyncMessage,
};
use crdt_core::{DocumentId, Ubigeo, UserId};
use futures_util::{SinkExt, StreamExt};
use minka_tests::harness::{
    connect_raw, now_unix, token, token_with, Event, ProtoClient, TestServer,
};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Parser, Debug)]
#[command(
    name = "hostile-bench",
    about = "Edit latency of a well-behaved client under hostile input"
)]
struct Args {
    /// The release `minka` binary.
    #[arg(long)]
    minka_bin: String,
    /// Repetitions (a fresh server each).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Timed edits per scenario.
    #[arg(long, default_value_t = 200)]
    edits: usize,
    /// Pause between edits (the client keeps reading meanwhile).
    #[arg(long, default_value_t = 10)]
    pause_ms: u64,
    /// How long each attack runs before the first timed edit.
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    /// Only these scenarios (comma-separated); default all.
    #[arg(long)]
    only: Option<String>,
    /// Where to write every run as JSON.
    #[arg(long, default_value = "target/bench/hostile-results.json")]
    json: String,
}

const SCENARIOS: &[&str] = &[
    "baseline",
    "malformed-frames",
    "giant-frames",
    "jwt-garbage",
    "mega-token",
    "held-changes",
    "need-flood",
    "ephemeral-flood",
    "random-requests",
    "baseline-end",
];

const FRAME_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Serialize)]
struct ScenarioResult {
    name: String,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    attack_ops: u64,
    healthy_after: bool,
    /// The same client's p50 and p99 measured just before, with no attack: the ratio is to
    /// these, so drift over the run (a growing document, a busier machine) is not blamed on
    /// the attack.
    quiet_p50_ms: f64,
    quiet_p99_ms: f64,
    /// CPU time the server used during the scenario (user + system), in ms.
    server_cpu_ms: f64,
    /// How the server's counters of refusals and pacing moved during the scenario.
    counters: Vec<(String, f64)>,
}

/// Counters of what the server refused, dropped or paced, reported per scenario.
const COUNTERS: [&str; 6] = [
    "minka_connections_total",
    "minka_connections_refused_total",
    "minka_sync_throttled_total",
    "minka_ephemeral_dropped_total",
    "minka_ephemeral_throttled_total",
    "minka_messages_in_total",
];

fn counters(server: &TestServer) -> Vec<f64> {
    COUNTERS
        .iter()
        .map(|c| server.metric(c).unwrap_or(f64::NAN))
        .collect()
}

/// User + system CPU time of a process so far, in ms (Linux `/proc/PID/stat`).
fn cpu_ms(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks/s.
    (ticks(11) + ticks(12)) * 10.0
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::env::set_var("MINKA_BIN", &args.minka_bin);
    // The server logs each refused input at info; keep the log volume out of the measurement.
    std::env::set_var("MINKA_TEST_LOG", "warn");
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let only: Option<Vec<String>> = args
        .only
        .as_ref()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let mut runs: Vec<Vec<ScenarioResult>> = Vec::new();
    for run in 1..=args.runs {
        eprintln!("== run {run}/{}", args.runs);
        let results = one_run(&args, &attack_rt, only.as_deref())?;
        runs.push(results);
    }
    if let Some(dir) = std::path::Path::new(&args.json).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&runs)?)?;
    print_summary(&runs);
    Ok(())
}

fn one_run(
    args: &Args,
    attack_rt: &tokio::runtime::Runtime,
    only: Option<&[String]>,
) -> Result<Vec<ScenarioResult>> {
    let server = TestServer::start().context("start minka")?;
    let addr = server.addr.clone();
    let (mut good, good_id) = GoodClient::start(&server)?;
    let mut out = Vec::new();
    for name in SCENARIOS {
        if let Some(only) = only {
            if !name.starts_with("baseline") && !only.iter().any(|o| o == name) {
                continue;
            }
        }
        let quiet = if name.starts_with("baseline") {
            None
        } else {
            Some(good.edits(args.edits, Duration::from_millis(args.pause_ms))?)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let ctx = AttackCtx {
            addr: addr.clone(),
            // A user of its own per scenario: what one attack left behind (connections still
            // open, a budget in debt) does not limit the next one.
            url: server.ws_url(&token(&format!("u-malo-{name}"), &["leader"], "150110")),
            good_doc: good_id,
            stop: stop.clone(),
            ops: ops.clone(),
        };
        let counters_before = counters(&server);
        let cpu_before = cpu_ms(server.pid());
        let handles = attack_rt.block_on(start_attack(name, ctx))?;
        std::thread::sleep(Duration::from_millis(if handles.is_empty() {
            0
        } else {
            args.warmup_ms
        }));
        let latencies = good.edits(args.edits, Duration::from_millis(args.pause_ms))?;
        stop.store(true, Ordering::Relaxed);
        // An attacker blocked on a socket the server reads slowly (paced) does not see `stop`
        // soon: abort it after a second. The good client is not polled meanwhile, and the
        // server closes a connection silent for two heartbeats (30 s).
        let stopping = Instant::now();
        let aborted = attack_rt.block_on(async {
            let mut aborted = 0;
            for mut h in handles {
                let left = Duration::from_secs(1).saturating_sub(stopping.elapsed());
                if tokio::time::timeout(left, &mut h).await.is_err() {
                    h.abort();
                    aborted += 1;
                }
            }
            aborted
        });
        if aborted > 0 {
            eprintln!("{name}: {aborted} attack tasks aborted after 1 s");
        }
        let healthy_after = matches!(server.http_get("/healthz", None), Ok((200, _)));
        let server_cpu_ms = cpu_ms(server.pid()) - cpu_before;
        let counters = COUNTERS
            .iter()
            .zip(counters(&server).iter().zip(&counters_before))
            .map(|(c, (after, before))| {
                (c.trim_start_matches("minka_").to_string(), after - before)
            })
            .filter(|(_, d)| *d != 0.0)
            .collect();
        let r = ScenarioResult {
            name: name.to_string(),
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: percentile(&latencies, 1.0),
            attack_ops: ops.load(Ordering::Relaxed),
            healthy_after,
            quiet_p50_ms: quiet.as_ref().map_or(f64::NAN, |q| percentile(q, 0.50)),
            quiet_p99_ms: quiet.as_ref().map_or(f64::NAN, |q| percentile(q, 0.99)),
            server_cpu_ms,
            counters,
        };
        eprintln!(
            "{:<17} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  (quiet before: p50 {:.2} p99 {:.2})  attack ops {:>7}  healthy {}  server cpu {:.0} ms  {:?}",
            r.name, r.p50_ms, r.p99_ms, r.max_ms, r.quiet_p50_ms, r.quiet_p99_ms, r.attack_ops, r.healthy_after, r.server_cpu_ms, r.counters
        );
        out.push(r);
        // Let the server settle (closing connections, idle documents) before the next scenario.
        std::thread::sleep(Duration::from_millis(500));
        good.drain(Duration::from_millis(200))?;
    }
    drop(good);
    drop(server);
    Ok(out)
}

fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s[i.min(s.len() - 1)]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn print_summary(runs: &[Vec<ScenarioResult>]) {
    println!("| scenario | p50 ms (runs) | p99 ms (runs) | p50 ratio to quiet min/median/max | p99 ratio to quiet min/median/max | attack ops/run | healthy |");
    println!("|---|---|---|---|---|---|---|");
    let names: Vec<String> = runs[0].iter().map(|r| r.name.clone()).collect();
    for name in names {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        let mut r50 = Vec::new();
        let mut r99 = Vec::new();
        let mut ops = Vec::new();
        let mut healthy = true;
        for run in runs {
            let base = &run[0];
            let Some(r) = run.iter().find(|r| r.name == name) else {
                continue;
            };
            p50s.push(format!("{:.2}", r.p50_ms));
            p99s.push(format!("{:.2}", r.p99_ms));
            // An attack against the quiet edits just before it; baselines against the first.
            let (q50, q99) = if r.quiet_p50_ms.is_nan() {
                (base.p50_ms, base.p99_ms)
            } else {
                (r.quiet_p50_ms, r.quiet_p99_ms)
            };
            r50.push(r.p50_ms / q50);
            r99.push(r.p99_ms / q99);
            ops.push(r.attack_ops.to_string());
            healthy &= r.healthy_after;
        }
        let fmt = |v: &mut Vec<f64>| {
            let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = v.iter().cloned().fold(0.0, f64::max);
            format!("{min:.2} / {:.2} / {max:.2}", median(v))
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            p50s.join(", "),
            p99s.join(", "),
            fmt(&mut r50),
            fmt(&mut r99),
            ops.join(", "),
            if healthy { "yes" } else { "NO" }
        );
    }
}

// ---- the well-behaved client ----

/// The measuring client, on its own thread with a current-thread runtime.
struct GoodClient {
    rt: tokio::runtime::Runtime,
    client: ProtoClient,
    id: DocumentId,
    doc: Automerge,
    n: usize,
}

fn new_proposal(by: &str, title: &str) -> Automerge {
    NewProposal {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: title.into(),
        description: "Veredas".into(),
        zone: "Collique".into(),
        category: "vías y veredas".into(),
        beneficiaries: 100,
        estimated_cost: 1_000_000,
        cofinancing: 0,
        created_by: UserId::new(by).unwrap(),
        coauthors: Default::default(),
    }
    .create(Some(ActorId::random()), now_unix() as i64)
}

fn append(doc: &mut Automerge, text: &str) {
    let len = automerge::ReadDoc::get(doc, automerge::ROOT, "description")
        .ok()
        .flatten()
        .and_then(|(_, obj)| automerge::ReadDoc::text(doc, obj).ok())
        .map(|t| t.chars().count())
        .unwrap_or(0);
    apply_edit(
        doc,
        &Edit::SpliceText {
            field: "description".into(),
            pos: len,
            delete: 0,
            insert: text.into(),
        },
        now_unix() as i64,
    )
    .unwrap();
}

impl GoodClient {
    fn start(server: &TestServer) -> Result<(Self, DocumentId)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let url = server.ws_url(&token("u-beto", &["leader"], "150110"));
        let id = DocumentId::random();
        let mut doc = new_proposal("u-beto", "Pistas medidas");
        let client = rt.block_on(async {
            let mut c = ProtoClient::connect(&url, "peer-good").await?;
            c.sync_doc(id, &mut doc).await?;
            if c.server_heads(id) != Some(doc.get_heads()) {
                bail!("the good document was not acknowledged");
            }
            Ok::<_, anyhow::Error>(c)
        })?;
        Ok((
            Self {
                rt,
                client,
                id,
                doc,
                n: 0,
            },
            id,
        ))
    }

    /// Reads whatever arrives for `quiet`.
    fn drain(&mut self, quiet: Duration) -> Result<()> {
        let Self {
            rt,
            client,
            id,
            doc,
            ..
        } = self;
        rt.block_on(async {
            let until = Instant::now() + quiet;
            while Instant::now() < until {
                match client.next(until - Instant::now()).await? {
                    Some(Event::Message(Message::Sync(s))) if s.document_id == id.to_string() => {
                        client.receive_sync(*id, doc, &s).await?;
                    }
                    Some(Event::Closed(r)) => bail!("the good client was closed: {r:?}"),
                    Some(_) => {}
                    None => break,
                }
            }
            Ok(())
        })
    }

    /// `n` timed edits; returns their latencies in milliseconds.
    fn edits(&mut self, n: usize, pause: Duration) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            self.n += 1;
            append(&mut self.doc, &format!(" {}", self.n));
            let Self {
                rt,
                client,
                id,
                doc,
                ..
            } = self;
            let elapsed = rt.block_on(async {
                let started = Instant::now();
                client.send_sync(*id, doc).await?;
                loop {
                    if client.server_heads(*id) == Some(doc.get_heads()) {
                        return Ok::<_, anyhow::Error>(started.elapsed());
                    }
                    match client.next(Duration::from_secs(30)).await? {
                        Some(Event::Message(Message::Sync(s)))
                            if s.document_id == id.to_string() =>
                        {
                            client.receive_sync(*id, doc, &s).await?;
                        }
                        Some(Event::Message(Message::Error(e))) => {
                            bail!("the good client got an error: {}", e.message)
                        }
                        Some(Event::Closed(r)) => bail!("the good client was closed: {r:?}"),
                        Some(_) => {}
                        None => bail!("no acknowledgement within 30 s"),
                    }
                }
            })?;
            out.push(elapsed.as_secs_f64() * 1000.0);
            self.drain(pause)?;
        }
        Ok(out)
    }
}

// ---- attacks ----

#[derive(Clone)]
struct AttackCtx {
    addr: String,
    url: String,
    good_doc: DocumentId,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
}

impl AttackCtx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    fn op(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }
}

type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    WsMessage,
>;

/// A joined raw connection whose incoming frames are read (and dropped) by a task, so the server
/// never sees it as a client that does not read. Returns the sink and the server's peer id.
/// The reading half of an attacker's connection; dropping it ends the connection (the attacker
/// reconnects with a new one, so old ones must not linger and count against its user's limit).
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn attacker(url: &str, peer: &str) -> Result<(Sink, String, Reader)> {
    let ws = connect_raw(url).await?;
    let (mut sink, mut stream) = ws.split();
    let join = Message::Join(JoinMessage {
        sender_id: peer.to_string(),
        supported_protocol_versions: vec!["1".into()],
        peer_metadata: Some(PeerMetadata::new(None, true)),
        metadata: None,
    });
    sink.send(WsMessage::Binary(join.encode())).await?;
    let server_peer = loop {
        match stream.next().await {
            Some(Ok(WsMessage::Binary(b))) => {
                if let Ok(Message::Peer(p)) = Message::decode(&b) {
                    break p.sender_id;
                }
            }
            Some(Ok(_)) => continue,
            _ => bail!("closed before `peer`"),
        }
    };
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    Ok((sink, server_peer, Reader(reader)))
}

fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// An automerge sync message written by hand (empty `have` filter).
fn raw_sync(
    heads: &[ChangeHash],
    need: &[ChangeHash],
    have: &[ChangeHash],
    changes: &[Vec<u8>],
) -> Vec<u8> {
    let mut out = vec![0x42];
    for list in [heads, need] {
        leb(&mut out, list.len() as u64);
        for h in list {
            out.extend_from_slice(&h.0);
        }
    }
    leb(&mut out, 1);
    leb(&mut out, have.len() as u64);
    for h in have {
        out.extend_from_slice(&h.0);
    }
    leb(&mut out, 0);
    leb(&mut out, changes.len() as u64);
    for c in changes {
        leb(&mut out, c.len() as u64);
        out.extend_from_slice(c);
    }
    out
}

fn sync_frame(peer: &str, server: &str, doc: DocumentId, data: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage {
        sender_id: peer.into(),
        target_id: server.into(),
        document_id: doc.to_string(),
        data,
    })
    .encode()
}

fn ephemeral_frame(peer: &str, server: &str, doc: DocumentId, size: usize) -> Vec<u8> {
    let make = |len: usize| {
        Message::Ephemeral(EphemeralMessage {
            sender_id: peer.into(),
            target_id: server.into(),
            document_id: doc.to_string(),
            session_id: "s".into(),
            count: 1,
            data: vec![b'x'; len],
        })
        .encode()
    };
    if size < 1000 {
        return make(size); // small: `size` bytes of data, the frame a little larger
    }
    let overhead = make(1000).len() - 1000;
    // The byte string header grows with the length: adjust once.
    let mut f = make(size.saturating_sub(overhead));
    if f.len() != size {
        let diff = f.len() as isize - size as isize;
        f = make((size as isize - overhead as isize - diff) as usize);
    }
    f
}

async fn start_attack(name: &str, ctx: AttackCtx) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut hs = Vec::new();
    match name {
        "baseline" | "baseline-end" => {}
        "malformed-frames" => {
            for i in 0..4 {
                hs.push(tokio::spawn(malformed_loop(ctx.clone(), i)));
            }
        }
        "giant-frames" => {
            for i in 0..2 {
                hs.push(tokio::spawn(giant_loop(ctx.clone(), i)));
            }
        }
        "jwt-garbage" => {
            for i in 0..4 {
                hs.push(tokio::spawn(jwt_loop(ctx.clone(), i)));
            }
        }
        "mega-token" => {
            for _ in 0..2 {
                hs.push(tokio::spawn(mega_token_loop(ctx.clone())));
            }
        }
        "held-changes" => {
            let chain = held_chain(&ctx).await?;
            let chain = Arc::new(chain);
            for i in 0..2 {
                hs.push(tokio::spawn(held_loop(ctx.clone(), chain.clone(), i)));
            }
        }
        "need-flood" => {
            for i in 0..2 {
                hs.push(tokio::spawn(need_loop(ctx.clone(), i)));
            }
        }
        "ephemeral-flood" => {
            for i in 0..2 {
                hs.push(tokio::spawn(ephemeral_loop(ctx.clone(), i)));
            }
        }
        "random-requests" => hs.push(tokio::spawn(random_requests_loop(ctx.clone()))),
        other => return Err(anyhow!("unknown scenario {other}")),
    }
    Ok(hs)
}

async fn malformed_loop(ctx: AttackCtx, i: usize) {
    let mut deep = vec![0x81u8; 100_000];
    deep.push(0);
    let mut huge = vec![0x5b];
    huge.extend_from_slice(&(4u64 << 30).to_be_bytes());
    huge.extend_from_slice(b"short");
    let valid = sync_frame(
        "p",
        "minka-server",
        ctx.good_doc,
        raw_sync(&[], &[], &[], &[vec![0; 200]]),
    );
    let mut n = 0usize;
    while !ctx.stopped() {
        n += 1;
        let Ok((mut sink, _, mut reader)) =
            attacker(&ctx.url, &format!("peer-malformed-{i}-{n}")).await
        else {
            continue;
        };
        let frame = match n % 4 {
            0 => b"\xff\xfe not cbor".to_vec(),
            1 => valid[..1 + rand::random::<usize>() % (valid.len() - 1)].to_vec(),
            2 => deep.clone(),
            _ => huge.clone(),
        };
        let _ = sink.send(WsMessage::Binary(frame)).await;
        // The server answers with `error` and closes: wait for it.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut reader.0).await;
        ctx.op();
    }
}

async fn giant_loop(ctx: AttackCtx, i: usize) {
    let own_doc = DocumentId::random();
    let mut n = 0usize;
    let at_limit = ephemeral_frame(
        &format!("peer-giant-{i}"),
        "minka-server",
        own_doc,
        FRAME_LIMIT,
    );
    let over = ephemeral_frame(
        &format!("peer-giant-{i}"),
        "minka-server",
        own_doc,
        FRAME_LIMIT + 1,
    );
    while !ctx.stopped() {
        n += 1;
        let Ok((mut sink, _, mut reader)) =
            attacker(&ctx.url, &format!("peer-giant-{i}-{n}")).await
        else {
            continue;
        };
        // Three frames at the limit (accepted), then one over it (refused, closed).
        for _ in 0..3 {
            if sink
                .send(WsMessage::Binary(at_limit.clone()))
                .await
                .is_err()
            {
                break;
            }
            ctx.op();
        }
        let _ = sink.send(WsMessage::Binary(over.clone())).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut reader.0).await;
        ctx.op();
    }
}

fn forged_tokens() -> Vec<String> {
    let b64 = |b: &[u8]| {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let x = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(x[0]) << 16) | (u32::from(x[1]) << 8) | u32::from(x[2]);
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    let claims = format!(
        r#"{{"sub":"u-x","name":"x","roles":["admin"],"district":"*","iat":{0},"exp":{1}}}"#,
        now_unix(),
        now_unix() + 3600
    );
    vec![
        format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims.as_bytes())),
        format!(
            "{}.{}.c2ln",
            b64(br#"{"alg":"RS256"}"#),
            b64(claims.as_bytes())
        ),
        token_with(
            "u-x",
            &["admin"],
            "*",
            now_unix() + 3600,
            "wrong-secret-0123456789",
        ),
        token_with(
            "u-x",
            &["admin"],
            "*",
            now_unix() - 3600,
            minka_tests::harness::TEST_SECRET,
        ),
        "not-a-jwt".into(),
        "a.b.c".into(),
    ]
}

async fn jwt_loop(ctx: AttackCtx, i: usize) {
    let tokens = forged_tokens();
    let mut n = i;
    while !ctx.stopped() {
        n += 1;
        let url = format!("ws://{}/sync?token={}", ctx.addr, tokens[n % tokens.len()]);
        let _ = connect_raw(&url).await; // 401
        ctx.op();
    }
}

async fn mega_token_loop(ctx: AttackCtx) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mega = "A".repeat(1 << 20);
    let request = format!(
        "GET /sync HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {mega}\r\n\r\n",
        ctx.addr
    )
    .into_bytes();
    while !ctx.stopped() {
        let Ok(s) = tokio::net::TcpStream::connect(&ctx.addr).await else {
            continue;
        };
        let (mut r, mut w) = s.into_split();
        let req = request.clone();
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&req).await;
        });
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf)).await;
        writer.abort();
        ctx.op();
    }
}

/// 10,000 changes in a chain on the good document, built on one change that is never sent.
async fn held_chain(ctx: &AttackCtx) -> Result<Vec<Vec<u8>>> {
    let mut c = ProtoClient::connect(&ctx.url, "peer-held-setup").await?;
    let mut doc = Automerge::new();
    c.request_doc(ctx.good_doc, &mut doc).await?;
    let mut local = doc.fork().with_actor(ActorId::random());
    append(&mut local, " nunca llega");
    let root = local.get_heads();
    for i in 0..10_000 {
        append(&mut local, &format!("{}", i % 10));
    }
    let changes = local.get_changes(&root);
    Ok(changes.iter().map(|c| c.raw_bytes().to_vec()).collect())
}

async fn held_loop(ctx: AttackCtx, chain: Arc<Vec<Vec<u8>>>, i: usize) {
    let mut n = 0usize;
    while !ctx.stopped() {
        n += 1;
        let peer = format!("peer-held-{i}-{n}");
        let Ok((mut sink, server, _reader)) = attacker(&ctx.url, &peer).await else {
            continue;
        };
        for chunk in chain.chunks(100) {
            if ctx.stopped() {
                break;
            }
            let frame = sync_frame(&peer, &server, ctx.good_doc, raw_sync(&[], &[], &[], chunk));
            if sink.send(WsMessage::Binary(frame)).await.is_err() {
                break;
            }
            ctx.op();
        }
    }
}

async fn need_loop(ctx: AttackCtx, i: usize) {
    let mut n = 0usize;
    while !ctx.stopped() {
        n += 1;
        let peer = format!("peer-need-{i}-{n}");
        let Ok((mut sink, server, _reader)) = attacker(&ctx.url, &peer).await else {
            continue;
        };
        while !ctx.stopped() {
            let need: Vec<ChangeHash> = (0..5000).map(|_| ChangeHash(rand::random())).collect();
            let frame = sync_frame(&peer, &server, ctx.good_doc, raw_sync(&[], &need, &[], &[]));
            if sink.send(WsMessage::Binary(frame)).await.is_err() {
                break;
            }
            ctx.op();
        }
    }
}

async fn ephemeral_loop(ctx: AttackCtx, i: usize) {
    let mut n = 0usize;
    while !ctx.stopped() {
        n += 1;
        let peer = format!("peer-eph-{i}-{n}");
        let Ok((mut sink, server, _reader)) = attacker(&ctx.url, &peer).await else {
            continue;
        };
        let frame = ephemeral_frame(&peer, &server, ctx.good_doc, 100);
        while !ctx.stopped() {
            if sink.send(WsMessage::Binary(frame.clone())).await.is_err() {
                break;
            }
            ctx.op();
        }
    }
}

async fn random_requests_loop(ctx: AttackCtx) {
    let mut n = 0usize;
    while !ctx.stopped() {
        n += 1;
        let peer = format!("peer-random-{n}");
        let Ok((mut sink, server, _reader)) = attacker(&ctx.url, &peer).await else {
            continue;
        };
        for _ in 0..10_000 {
            if ctx.stopped() {
                break;
            }
            let frame = Message::Request(RequestMessage {
                sender_id: peer.clone(),
                target_id: server.clone(),
                document_id: DocumentId::random().to_string(),
                data: raw_sync(&[], &[], &[], &[]),
            })
            .encode();
            if sink.send(WsMessage::Binary(frame)).await.is_err() {
                break;
            }
            ctx.op();
        }
    }
}
