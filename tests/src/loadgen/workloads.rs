//! The workloads: offline edits, ingest, reconnect storm, idle connections, and the protocol
//! probe. Each starts its own server (fresh data directory), seeds it, runs, measures and stops it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use automerge::{ActorId, Automerge, Change, ChangeHash};
use crdt_core::DocumentId;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::measure::{
    admin_token, fsync_delta, fsync_snapshot, raw_apply, wait_settled_quiet, FsyncStats, RawApply,
};
use super::phone::{run_session, Goal, Phone, PhoneDoc, Progress, SessionStats};
use super::proposal::{self, DISTRICT};
use super::server::{read_cpu_secs, ServerProc, Target};

/// Sizes and knobs for a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub phones: usize,
    pub edits: usize,
    pub docs: usize,
    /// Phones of the reconnect storm (one size; the command line runs a curve of them).
    pub storm_phones: usize,
    pub storm_docs_per_phone: usize,
    pub storm_pool: usize,
    /// Ingest: phones, and proposals each phone creates and edits (its own, nobody else's).
    pub ingest_phones: usize,
    pub ingest_docs: usize,
    pub idle_conns: usize,
    pub idle_wait: Duration,
    pub timeout: Duration,
    pub seed_concurrency: usize,
    /// The quiet window that ends a settle phase (no frames, server idle).
    pub quiet: Duration,
    /// Repetitions of the raw `apply_changes` cost floor (the median is reported).
    pub raw_reps: usize,
    pub jwt_secret: String,
    pub log_dir: PathBuf,
    /// Which repetition of the benchmark this is (1-based), recorded in every result.
    pub run: usize,
}

/// An HS256 token for `sub`, as minka expects it (leader of the benchmark district).
pub fn token(secret: &str, sub: &str, roles: &[&str]) -> String {
    token_in(secret, sub, roles, DISTRICT)
}

/// An HS256 token for `sub` with `roles` in `district` (`"*"`: every district).
pub fn token_in(secret: &str, sub: &str, roles: &[&str], district: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = serde_json::json!({
        "sub": sub,
        "name": format!("Dirigente {sub}"),
        "roles": roles,
        "district": district,
        "iat": now,
        "exp": now + 8 * 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

fn user(prefix: &str, i: usize) -> String {
    format!("bench-{prefix}{i}")
}

/// Waits until `n` phones are done or failed, or the deadline. True when all finished.
async fn wait_all(progress: &Progress, n: usize, deadline: Instant) -> bool {
    loop {
        let notified = progress.notify.notified();
        let finished =
            progress.done.load(Ordering::SeqCst) + progress.failed.load(Ordering::SeqCst);
        if finished >= n {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ =
            tokio::time::timeout((deadline - now).min(Duration::from_millis(200)), notified).await;
    }
}

type Handle = tokio::task::JoinHandle<(Phone, SessionStats)>;

fn spawn_session(
    mut phone: Phone,
    server: &ServerProc,
    goal: Goal,
    t0: Instant,
    stop: &watch::Receiver<bool>,
    progress: &Arc<Progress>,
) -> Handle {
    let url = server.url(&phone.token);
    let stop = stop.clone();
    let progress = progress.clone();
    tokio::spawn(async move {
        let stats = run_session(&mut phone, &url, goal, t0, stop, progress).await;
        (phone, stats)
    })
}

async fn join_all(handles: Vec<Handle>) -> Result<(Vec<Phone>, Vec<SessionStats>)> {
    let mut phones = Vec::with_capacity(handles.len());
    let mut stats = Vec::with_capacity(handles.len());
    for h in handles {
        let (p, s) = h.await.map_err(|e| anyhow!("phone task panicked: {e}"))?;
        phones.push(p);
        stats.push(s);
    }
    Ok((phones, stats))
}

/// Uploads `docs` through one connection as `creator` and waits until the server acknowledged
/// them all.
async fn seed(
    server: &ServerProc,
    cfg: &Config,
    creator: &str,
    docs: &[(DocumentId, Automerge)],
) -> Result<()> {
    let phone_docs = docs
        .iter()
        .map(|(id, doc)| {
            let mut d = PhoneDoc::new(*id, doc.clone());
            d.ack_heads = doc.get_heads();
            d
        })
        .collect();
    let phone = Phone::new(
        usize::MAX,
        creator.to_string(),
        token(&cfg.jwt_secret, creator, &["leader"]),
        phone_docs,
    );
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let h = spawn_session(phone, server, Goal::Converge, t0, &stop_rx, &progress);
    let finished = wait_all(&progress, 1, t0 + cfg.timeout).await;
    let _ = stop_tx.send(true);
    let (_, stats) = join_all(vec![h]).await?;
    let s = &stats[0];
    if let Some(f) = &s.failure {
        return Err(anyhow!("seeding failed: {f}"));
    }
    if !finished || s.done_at.is_none() {
        return Err(anyhow!(
            "seeding {} documents was not acknowledged within {:?} (errors: {:?})",
            docs.len(),
            cfg.timeout,
            s.errors
        ));
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Totals over all sessions of a phase.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Traffic {
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub sync_out: u64,
    pub sync_in: u64,
    pub sync_in_after_done: u64,
    pub sync_out_after_done: u64,
    pub doc_unavailable: u64,
    pub failures: usize,
    pub first_failure: Option<String>,
    pub first_errors: Vec<String>,
}

fn traffic(stats: &[SessionStats]) -> Traffic {
    let mut t = Traffic::default();
    for s in stats {
        t.bytes_out += s.bytes_out;
        t.bytes_in += s.bytes_in;
        t.sync_out += s.sync_out;
        t.sync_in += s.sync_in;
        t.sync_in_after_done += s.sync_in_after_done;
        t.sync_out_after_done += s.sync_out_after_done;
        t.doc_unavailable += s.doc_unavailable;
        if let Some(f) = &s.failure {
            t.failures += 1;
            if t.first_failure.is_none() {
                t.first_failure = Some(f.clone());
            }
        }
        for e in &s.errors {
            if t.first_errors.len() < 5 {
                t.first_errors.push(e.clone());
            }
        }
    }
    t
}

/// A result of the offline-edits or the ingest workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfflineResult {
    pub target: String,
    #[serde(default)]
    pub run: usize,
    pub phones: usize,
    pub edits: usize,
    /// Offline edits: proposals every phone holds. Ingest: proposals each phone owns.
    pub docs: usize,
    pub changes: usize,
    /// Seconds from connect until every phone's changes were acknowledged.
    pub durable_secs: Option<f64>,
    pub durable_changes_per_sec: Option<f64>,
    /// Seconds from connect until every phone held the union of all edits.
    pub converge_secs: Option<f64>,
    pub bytes_per_change: f64,
    pub phones_acked: usize,
    pub phones_converged: usize,
    pub server_peak_rss_mib: Option<f64>,
    pub server_cpu_secs: Option<f64>,
    pub client_cpu_secs: Option<f64>,
    /// minka's fsync counters (`/metrics`) over the phase; None for the peers.
    #[serde(default)]
    pub fsync: Option<FsyncStats>,
    /// The cost floor: a raw `apply_changes` of the same changes onto copies of the seeded
    /// documents, in the load generator.
    #[serde(default)]
    pub raw_apply: Option<RawApply>,
    pub traffic: Traffic,
    pub note: Option<String>,
}

/// Workload 1: N phones each make M offline edits spread over K proposals, then connect at once.
pub async fn offline_edits(target: &Target, cfg: &Config) -> Result<OfflineResult> {
    let (n, m, k) = (cfg.phones, cfg.edits, cfg.docs);
    let users: Vec<String> = (0..n).map(|p| user("u", p)).collect();
    let health = token(&cfg.jwt_secret, &users[0], &["leader"]);
    let server =
        ServerProc::start(target, &cfg.jwt_secret, &health, &cfg.log_dir, "offline").await?;

    // Seed: K proposals created by phone 0's user, co-authored by every phone user.
    let seeded: Vec<(DocumentId, Automerge)> = (0..k)
        .map(|i| {
            let doc = proposal::new_proposal(ActorId::random(), i, &users[0], &users)?;
            Ok((DocumentId::random(), doc))
        })
        .collect::<Result<_>>()?;
    seed(&server, cfg, &users[0], &seeded).await?;

    // Offline edits: phone p's e-th edit goes to proposal (p + e) mod K.
    let mut phones = Vec::with_capacity(n);
    let mut merged: Vec<Automerge> = seeded.iter().map(|(_, d)| d.fork()).collect();
    let mut sent: Vec<Vec<Change>> = vec![Vec::new(); k];
    let seed_heads: Vec<Vec<ChangeHash>> = seeded.iter().map(|(_, d)| d.get_heads()).collect();
    for (p, u) in users.iter().enumerate() {
        let actor = ActorId::random();
        let mut docs: Vec<Automerge> = seeded
            .iter()
            .map(|(_, d)| d.fork().with_actor(actor.clone()))
            .collect();
        let mut edited = vec![false; k];
        for e in 0..m {
            let i = (p + e) % k;
            proposal::edit(&mut docs[i], u, e)?;
            edited[i] = true;
        }
        let mut phone_docs = Vec::with_capacity(k);
        for (i, doc) in docs.into_iter().enumerate() {
            let changes = doc.get_changes(&seed_heads[i]);
            sent[i].extend(changes.iter().cloned());
            merged[i].apply_changes(changes)?;
            let mut d = PhoneDoc::new(seeded[i].0, doc);
            if edited[i] {
                d.ack_heads = d.doc.get_heads();
            }
            phone_docs.push(d);
        }
        phones.push(Phone::new(
            p,
            u.clone(),
            token(&cfg.jwt_secret, u, &["leader"]),
            phone_docs,
        ));
    }
    for phone in &mut phones {
        for (i, d) in phone.docs.iter_mut().enumerate() {
            d.target_heads = Some(merged[i].get_heads());
        }
    }
    drop(merged);
    let floor_work: Vec<(Automerge, Vec<Change>)> =
        seeded.iter().map(|(_, d)| d.clone()).zip(sent).collect();
    changes_phase(target, cfg, server, phones, m, k, floor_work).await
}

/// The measured part of offline edits and ingest: all phones connect at once and run until every
/// phone's changes are acknowledged and every document converged; then the cost floor.
async fn changes_phase(
    target: &Target,
    cfg: &Config,
    server: ServerProc,
    phones: Vec<Phone>,
    m: usize,
    k: usize,
    floor_work: Vec<(Automerge, Vec<Change>)>,
) -> Result<OfflineResult> {
    let n = phones.len();
    let admin = admin_token(&cfg.jwt_secret);
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let fsync0 = fsync_snapshot(&server, &admin).await;
    let client_cpu0 = read_cpu_secs("self");
    let server_cpu0 = server.cpu_secs();
    let t0 = Instant::now();
    let handles: Vec<Handle> = phones
        .into_iter()
        .map(|p| spawn_session(p, &server, Goal::Converge, t0, &stop_rx, &progress))
        .collect();
    let finished = wait_all(&progress, n, t0 + cfg.timeout).await;
    let waited = t0.elapsed();
    let _ = stop_tx.send(true);
    let client_cpu = read_cpu_secs("self").zip(client_cpu0).map(|(a, b)| a - b);
    let server_cpu = server.cpu_secs().zip(server_cpu0).map(|(a, b)| a - b);
    let mem = server.mem();
    let fsync1 = fsync_snapshot(&server, &admin).await;
    let (_, stats) = join_all(handles).await?;
    server.stop().await;
    // The floor is measured with the server stopped, so it has a core to itself.
    let raw = raw_apply(floor_work, cfg.raw_reps).await?;

    let acked: Vec<Duration> = stats.iter().filter_map(|s| s.acked_at).collect();
    let done: Vec<Duration> = stats.iter().filter_map(|s| s.done_at).collect();
    let durable = (acked.len() == n)
        .then(|| acked.iter().max().copied())
        .flatten();
    let converge = (done.len() == n)
        .then(|| done.iter().max().copied())
        .flatten();
    let t = traffic(&stats);
    let changes = n * m;
    let note = (!finished || durable.is_none() || converge.is_none()).then(|| {
        format!(
            "did not settle in {:.0} s: {}/{n} phones acknowledged, {}/{n} converged, {} failed{}",
            secs(waited),
            acked.len(),
            done.len(),
            t.failures,
            t.first_failure
                .as_ref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        )
    });
    Ok(OfflineResult {
        target: target.name(),
        run: cfg.run,
        phones: n,
        edits: m,
        docs: k,
        changes,
        durable_secs: durable.map(secs),
        durable_changes_per_sec: durable.map(|d| changes as f64 / secs(d)),
        converge_secs: converge.map(secs),
        bytes_per_change: (t.bytes_in + t.bytes_out) as f64 / changes as f64,
        phones_acked: acked.len(),
        phones_converged: done.len(),
        server_peak_rss_mib: mem.map(|m| mib(m.hwm_kib)),
        server_cpu_secs: server_cpu,
        client_cpu_secs: client_cpu,
        fsync: fsync_delta(fsync0, fsync1),
        raw_apply: Some(raw),
        traffic: t,
        note,
    })
}

/// Phones that ran one session each, in waves of `cfg.seed_concurrency`.
struct Waves {
    phones: Vec<Phone>,
    /// Seconds the waves took; for [`Goal::Settle`] each wave counts until it went quiet (the
    /// quiet window itself is not counted).
    secs: f64,
    failures: usize,
    first_failure: Option<String>,
}

/// One session per phone, `cfg.seed_concurrency` at a time, each wave until its phones reached
/// `goal` (a [`Goal::Settle`] wave also until it went quiet, so late replies are not cut off).
async fn in_waves(
    server: &ServerProc,
    cfg: &Config,
    phones: Vec<Phone>,
    goal: Goal,
) -> Result<Waves> {
    let n = phones.len();
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    let mut out = Waves {
        phones: Vec::with_capacity(n),
        secs: 0.0,
        failures: 0,
        first_failure: None,
    };
    let mut rest = phones.into_iter();
    loop {
        let wave: Vec<Phone> = rest.by_ref().take(cfg.seed_concurrency.max(1)).collect();
        if wave.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            out.failures += wave.len() + rest.len();
            out.first_failure
                .get_or_insert_with(|| "not started: out of time".into());
            out.phones.extend(wave);
            out.phones.extend(rest.by_ref());
            break;
        }
        let count = wave.len();
        let progress = Arc::new(Progress::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let t0 = Instant::now();
        let handles: Vec<Handle> = wave
            .into_iter()
            .map(|p| spawn_session(p, server, goal, t0, &stop_rx, &progress))
            .collect();
        let took = match goal {
            Goal::Settle => {
                let q = wait_settled_quiet(&progress, count, t0, deadline, cfg.quiet, server).await;
                q.quiet_at.unwrap_or(q.waited)
            }
            Goal::Converge => {
                wait_all(&progress, count, deadline).await;
                t0.elapsed()
            }
        };
        out.secs += secs(took);
        let _ = stop_tx.send(true);
        let (ps, stats) = join_all(handles).await?;
        for s in &stats {
            let ok = match goal {
                Goal::Settle => s.settled_at.is_some(),
                Goal::Converge => s.done_at.is_some(),
            };
            if !ok {
                out.failures += 1;
                if out.first_failure.is_none() {
                    out.first_failure = Some(
                        s.failure
                            .clone()
                            .unwrap_or_else(|| format!("did not reach {goal:?}")),
                    );
                }
            }
        }
        out.phones.extend(ps);
    }
    if out.secs == 0.0 {
        out.secs = secs(started.elapsed());
    }
    Ok(out)
}

/// Ingest: every phone creates `cfg.ingest_docs` proposals of its own (uploaded and acknowledged
/// first, in waves), makes M offline edits to them (edit e goes to its own proposal e mod K), and
/// then all phones connect at once. Nobody else holds a phone's proposals, so the server only
/// ingests: no fan-out to other holders.
pub async fn ingest(target: &Target, cfg: &Config) -> Result<OfflineResult> {
    let (n, m, k) = (cfg.ingest_phones, cfg.edits, cfg.ingest_docs.max(1));
    let users: Vec<String> = (0..n).map(|p| user("g", p)).collect();
    let health = token(&cfg.jwt_secret, &users[0], &["leader"]);
    let server =
        ServerProc::start(target, &cfg.jwt_secret, &health, &cfg.log_dir, "ingest").await?;

    // Each phone's own proposals, created with its own actor, then uploaded by that phone.
    let mut phones = Vec::with_capacity(n);
    for (p, u) in users.iter().enumerate() {
        let actor = ActorId::random();
        let docs = (0..k)
            .map(|i| {
                let doc =
                    proposal::new_proposal(actor.clone(), p * k + i, u, std::slice::from_ref(u))?;
                let mut d = PhoneDoc::new(DocumentId::random(), doc);
                d.ack_heads = d.doc.get_heads();
                Ok(d)
            })
            .collect::<Result<Vec<_>>>()?;
        phones.push(Phone::new(
            p,
            u.clone(),
            token(&cfg.jwt_secret, u, &["leader"]),
            docs,
        ));
    }
    let seeded = in_waves(&server, cfg, phones, Goal::Converge).await?;
    if seeded.failures > 0 {
        server.stop().await;
        return Err(anyhow!(
            "uploading the phones' own proposals failed for {}/{n} phones (first: {})",
            seeded.failures,
            seeded.first_failure.unwrap_or_default()
        ));
    }
    // Let the server finish writing what the uploads left behind.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Offline edits by the same phones (which keep their sync states, as a real phone would).
    let mut phones = seeded.phones;
    let mut floor_work = Vec::with_capacity(n * k);
    for phone in &mut phones {
        let bases: Vec<(Automerge, Vec<ChangeHash>)> = phone
            .docs
            .iter()
            .map(|d| (d.doc.clone(), d.doc.get_heads()))
            .collect();
        let u = phone.user.clone();
        let mut edited = vec![false; k];
        for e in 0..m {
            let i = e % k;
            proposal::edit(&mut phone.docs[i].doc, &u, e)?;
            edited[i] = true;
        }
        for (i, (base, heads)) in bases.into_iter().enumerate() {
            let d = &mut phone.docs[i];
            let heads_now = d.doc.get_heads();
            d.ack_heads = if edited[i] {
                heads_now.clone()
            } else {
                Vec::new()
            };
            d.target_heads = Some(heads_now);
            if edited[i] {
                floor_work.push((base, d.doc.get_changes(&heads)));
            }
        }
    }
    changes_phase(target, cfg, server, phones, m, k, floor_work).await
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormResult {
    pub target: String,
    #[serde(default)]
    pub run: usize,
    pub phones: usize,
    pub docs_per_phone: usize,
    pub pool: usize,
    /// Seconds the first (seeding) sync of every phone took, in waves (each until quiet).
    pub initial_sync_secs: f64,
    /// Seconds from reconnect until every document of every phone settled (see
    /// [`Goal::Settle`]): the latest of the documents' settle instants, each the server's last
    /// (equal-heads) message about it, or the phone's agreeing opening `sync` when the server
    /// said nothing about it. Only counted once the phase went quiet with all of them settled.
    pub settle_secs: Option<f64>,
    /// Seconds from reconnect until the phase went quiet: the last data frame on any connection
    /// or the last 100 ms in which the server used ≥ 30% of a core, whichever came later (found
    /// by waiting for a quiet window, which is not counted).
    #[serde(default)]
    pub quiet_secs: Option<f64>,
    pub phones_settled: usize,
    /// Documents settled by an equal-heads reply, and by the server's silence.
    #[serde(default)]
    pub docs_answered: u64,
    #[serde(default)]
    pub docs_silent: u64,
    /// Sync messages per document and direction during the storm (until it went quiet).
    pub msgs_per_doc_up: f64,
    pub msgs_per_doc_down: f64,
    pub bytes_per_doc: f64,
    #[serde(default)]
    pub bytes_per_doc_up: f64,
    #[serde(default)]
    pub bytes_per_doc_down: f64,
    pub server_peak_rss_mib: Option<f64>,
    pub server_cpu_secs: Option<f64>,
    pub client_cpu_secs: Option<f64>,
    #[serde(default)]
    pub fsync: Option<FsyncStats>,
    pub traffic: Traffic,
    pub note: Option<String>,
}

/// Workload 2: phones that hold already-synced documents all reconnect at once.
pub async fn reconnect_storm(target: &Target, cfg: &Config) -> Result<StormResult> {
    let (n, d, pool) = (
        cfg.storm_phones,
        cfg.storm_docs_per_phone,
        cfg.storm_pool.max(1),
    );
    let d = d.min(pool);
    let creator = user("s", 0);
    let health = token(&cfg.jwt_secret, &creator, &["leader"]);
    let admin = admin_token(&cfg.jwt_secret);
    let server = ServerProc::start(
        target,
        &cfg.jwt_secret,
        &health,
        &cfg.log_dir,
        &format!("storm{n}"),
    )
    .await?;

    let seeded: Vec<(DocumentId, Automerge)> = (0..pool)
        .map(|i| {
            let doc = proposal::new_proposal(
                ActorId::random(),
                i,
                &creator,
                std::slice::from_ref(&creator),
            )?;
            Ok((DocumentId::random(), doc))
        })
        .collect::<Result<_>>()?;
    seed(&server, cfg, &creator, &seeded).await?;
    let saved: Vec<Vec<u8>> = seeded.iter().map(|(_, doc)| doc.save()).collect();
    let heads: Vec<Vec<ChangeHash>> = seeded.iter().map(|(_, doc)| doc.get_heads()).collect();

    let step = (pool / d).max(1);
    let mut phones = Vec::with_capacity(n);
    for p in 0..n {
        let u = user("s", p);
        let docs = (0..d)
            .map(|j| {
                let i = (p + j * step) % pool;
                let mut pd = PhoneDoc::new(seeded[i].0, Automerge::load(&saved[i])?);
                pd.target_heads = Some(heads[i].clone());
                Ok(pd)
            })
            .collect::<Result<Vec<_>>>()?;
        phones.push(Phone::new(
            p,
            u.clone(),
            token(&cfg.jwt_secret, &u, &["leader"]),
            docs,
        ));
    }
    drop(seeded);

    // First sync, in waves: afterwards every phone and the server know each other's heads.
    let waves = in_waves(&server, cfg, phones, Goal::Settle).await?;
    let initial_sync_secs = waves.secs;
    if waves.failures > 0 {
        let mem = server.mem();
        server.stop().await;
        return Ok(StormResult {
            target: target.name(),
            run: cfg.run,
            phones: n,
            docs_per_phone: d,
            pool,
            initial_sync_secs,
            settle_secs: None,
            quiet_secs: None,
            phones_settled: 0,
            docs_answered: 0,
            docs_silent: 0,
            msgs_per_doc_up: f64::NAN,
            msgs_per_doc_down: f64::NAN,
            bytes_per_doc: f64::NAN,
            bytes_per_doc_up: f64::NAN,
            bytes_per_doc_down: f64::NAN,
            server_peak_rss_mib: mem.map(|m| mib(m.hwm_kib)),
            server_cpu_secs: None,
            client_cpu_secs: None,
            fsync: None,
            traffic: Traffic::default(),
            note: Some(format!(
                "the storm did not run: {}/{n} phones did not finish their first \
                 sync within {:.0} s (first: {})",
                waves.failures,
                cfg.timeout.as_secs_f64(),
                waves.first_failure.unwrap_or_default()
            )),
        });
    }
    // Let the server finish writing what the first sync left behind.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The storm: all phones reconnect at once; the phase ends when every document settled and
    // nothing has moved (no frame, no server CPU) for the quiet window.
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let fsync0 = fsync_snapshot(&server, &admin).await;
    let client_cpu0 = read_cpu_secs("self");
    let server_cpu0 = server.cpu_secs();
    let t0 = Instant::now();
    let handles: Vec<Handle> = waves
        .phones
        .into_iter()
        .map(|p| spawn_session(p, &server, Goal::Settle, t0, &stop_rx, &progress))
        .collect();
    let quiet = wait_settled_quiet(&progress, n, t0, t0 + cfg.timeout, cfg.quiet, &server).await;
    let _ = stop_tx.send(true);
    let client_cpu = read_cpu_secs("self").zip(client_cpu0).map(|(a, b)| a - b);
    let server_cpu = server.cpu_secs().zip(server_cpu0).map(|(a, b)| a - b);
    let mem = server.mem();
    let fsync1 = fsync_snapshot(&server, &admin).await;
    let (_, stats) = join_all(handles).await?;
    server.stop().await;

    let settled: Vec<Duration> = stats.iter().filter_map(|s| s.settled_at).collect();
    let settle = (quiet.finished && settled.len() == n)
        .then(|| settled.iter().max().copied())
        .flatten();
    let t = traffic(&stats);
    let doc_count = (n * d) as f64;
    let mut notes = Vec::new();
    if settle.is_none() {
        notes.push(format!(
            "did not settle in {:.0} s: {}/{n} phones settled, {} failed{}",
            secs(quiet.waited),
            settled.len(),
            t.failures,
            t.first_failure
                .as_ref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        ));
    }
    Ok(StormResult {
        target: target.name(),
        run: cfg.run,
        phones: n,
        docs_per_phone: d,
        pool,
        initial_sync_secs,
        settle_secs: settle.map(secs),
        // The last frame is stamped as it is handed to the socket, a settle instant just after:
        // the phase cannot have gone quiet before its last document settled.
        quiet_secs: settle.zip(quiet.quiet_at).map(|(s, q)| secs(s.max(q))),
        phones_settled: settled.len(),
        docs_answered: stats.iter().map(|s| s.docs_answered).sum(),
        docs_silent: stats.iter().map(|s| s.docs_silent).sum(),
        msgs_per_doc_up: t.sync_out as f64 / doc_count,
        msgs_per_doc_down: t.sync_in as f64 / doc_count,
        bytes_per_doc: (t.bytes_in + t.bytes_out) as f64 / doc_count,
        bytes_per_doc_up: t.bytes_out as f64 / doc_count,
        bytes_per_doc_down: t.bytes_in as f64 / doc_count,
        server_peak_rss_mib: mem.map(|m| mib(m.hwm_kib)),
        server_cpu_secs: server_cpu,
        client_cpu_secs: client_cpu,
        fsync: fsync_delta(fsync0, fsync1),
        traffic: t,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleResult {
    pub target: String,
    #[serde(default)]
    pub run: usize,
    pub connections: usize,
    pub connected: usize,
    pub baseline_rss_mib: Option<f64>,
    pub idle_rss_mib: Option<f64>,
    pub delta_rss_mib: Option<f64>,
    pub per_connection_kib: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
    pub note: Option<String>,
}

/// Workload 3: many connections that each join, fetch one document and then sit idle.
pub async fn idle(target: &Target, cfg: &Config) -> Result<IdleResult> {
    let n = cfg.idle_conns;
    let creator = user("i", 0);
    let health = token(&cfg.jwt_secret, &creator, &["leader"]);
    let server = ServerProc::start(target, &cfg.jwt_secret, &health, &cfg.log_dir, "idle").await?;
    let doc = proposal::new_proposal(
        ActorId::random(),
        0,
        &creator,
        std::slice::from_ref(&creator),
    )?;
    let id = DocumentId::random();
    let heads = doc.get_heads();
    seed(&server, cfg, &creator, &[(id, doc)]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = server.mem();

    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let deadline = t0 + cfg.timeout;
    let mut handles = Vec::with_capacity(n);
    // Open the connections in batches (this workload measures idle cost, not a storm).
    let batch = cfg.seed_concurrency.max(1);
    let mut opened = 0;
    while opened < n {
        let upto = (opened + batch).min(n);
        for p in opened..upto {
            let u = user("i", p);
            let mut d = PhoneDoc::new(id, Automerge::new());
            d.target_heads = Some(heads.clone());
            let phone = Phone::new(
                p,
                u.clone(),
                token(&cfg.jwt_secret, &u, &["leader"]),
                vec![d],
            );
            handles.push(spawn_session(
                phone,
                &server,
                Goal::Converge,
                t0,
                &stop_rx,
                &progress,
            ));
        }
        opened = upto;
        if !wait_all(&progress, opened, deadline).await {
            break;
        }
    }
    let finished = wait_all(&progress, n, deadline).await;
    let connected = progress.done.load(Ordering::SeqCst);
    tokio::time::sleep(cfg.idle_wait).await;
    let idle_mem = server.mem();
    let _ = stop_tx.send(true);
    let (_, stats) = join_all(handles).await?;
    server.stop().await;
    let t = traffic(&stats);
    let delta = baseline
        .zip(idle_mem)
        .map(|(b, i)| mib(i.rss_kib) - mib(b.rss_kib));
    Ok(IdleResult {
        target: target.name(),
        run: cfg.run,
        connections: n,
        connected,
        baseline_rss_mib: baseline.map(|m| mib(m.rss_kib)),
        idle_rss_mib: idle_mem.map(|m| mib(m.rss_kib)),
        delta_rss_mib: delta,
        per_connection_kib: delta.map(|d| d * 1024.0 / connected.max(1) as f64),
        server_peak_rss_mib: idle_mem.map(|m| mib(m.hwm_kib)),
        note: (!finished || connected < n).then(|| {
            format!(
                "only {connected}/{n} connections got their document in {:.0} s ({} failed{})",
                cfg.timeout.as_secs_f64(),
                t.failures,
                t.first_failure
                    .as_ref()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            )
        }),
    })
}

/// What the server said in one scripted exchange of the protocol probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeStep {
    pub what: String,
    pub transcript: Vec<String>,
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    pub target: String,
    pub steps: Vec<ProbeStep>,
}

/// One recorded session: runs until the goal (or `cfg.timeout`), then `grace` longer.
async fn probe_step(
    server: &ServerProc,
    cfg: &Config,
    mut phone: Phone,
    goal: Goal,
    grace: Duration,
    what: &str,
) -> Result<(Phone, ProbeStep)> {
    phone.record = true;
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let h = spawn_session(phone, server, goal, t0, &stop_rx, &progress);
    let limit = cfg.timeout.min(Duration::from_secs(10));
    let finished = wait_all(&progress, 1, t0 + limit).await;
    tokio::time::sleep(grace).await;
    let _ = stop_tx.send(true);
    let (mut phones, mut stats) = join_all(vec![h]).await?;
    // Let the server see the disconnect before the next session (the JS server otherwise takes
    // the old socket's close for the new connection of the same peer id).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = stats.pop().expect("one session");
    let outcome = match (&s.failure, s.done_at) {
        (Some(f), _) => format!("failed: {f}"),
        (None, Some(at)) => format!(
            "goal reached after {:.0} ms; {} sync messages up, {} down ({} down after the goal)",
            at.as_secs_f64() * 1000.0,
            s.sync_out,
            s.sync_in,
            s.sync_in_after_done
        ),
        (None, None) if !finished => format!(
            "goal not reached in {:?}; {} sync messages up, {} down",
            limit, s.sync_out, s.sync_in
        ),
        (None, None) => "goal not reached".to_string(),
    };
    Ok((
        phones.pop().expect("one phone"),
        ProbeStep {
            what: what.to_string(),
            transcript: s.transcript.unwrap_or_default(),
            outcome,
        },
    ))
}

/// The protocol probe: a few scripted exchanges whose transcripts show how a server answers
/// (unknown document, new document, reconnect with nothing new, a second phone fetching).
pub async fn probe(target: &Target, cfg: &Config) -> Result<ProbeResult> {
    let u0 = user("p", 0);
    let u1 = user("p", 1);
    let tok0 = token(&cfg.jwt_secret, &u0, &["leader"]);
    let tok1 = token(&cfg.jwt_secret, &u1, &["leader"]);
    let server = ServerProc::start(target, &cfg.jwt_secret, &tok0, &cfg.log_dir, "probe").await?;
    let mut steps = Vec::new();
    let grace = Duration::from_secs(2);

    let unknown = Phone::new(
        0,
        u0.clone(),
        tok0.clone(),
        vec![PhoneDoc::new(DocumentId::random(), Automerge::new())],
    );
    let (_, step) = probe_step(
        &server,
        cfg,
        unknown,
        Goal::Converge,
        grace,
        "`request` for a document the server does not have",
    )
    .await?;
    steps.push(step);

    let id = DocumentId::random();
    let doc = proposal::new_proposal(ActorId::random(), 0, &u0, &[u0.clone(), u1.clone()])?;
    let heads = doc.get_heads();
    let mut d = PhoneDoc::new(id, doc);
    d.ack_heads = heads.clone();
    let author = Phone::new(1, u0.clone(), tok0.clone(), vec![d]);
    let (author, step) = probe_step(
        &server,
        cfg,
        author,
        Goal::Converge,
        grace,
        "`sync` uploading a new document (one change)",
    )
    .await?;
    steps.push(step);

    let (author, step) = probe_step(
        &server,
        cfg,
        author,
        Goal::Settle,
        grace,
        "the same phone reconnects; nothing changed on either side",
    )
    .await?;
    steps.push(step);
    drop(author);

    let mut d = PhoneDoc::new(id, Automerge::new());
    d.target_heads = Some(heads);
    let reader = Phone::new(2, u1.clone(), tok1, vec![d]);
    let (_, step) = probe_step(
        &server,
        cfg,
        reader,
        Goal::Converge,
        grace,
        "a second phone without the document sends `request` for it",
    )
    .await?;
    steps.push(step);

    server.stop().await;
    Ok(ProbeResult {
        target: target.name(),
        steps,
    })
}
