//! The client SDK against the real `minka` binary, real sled on both sides, over real sockets
//! (through a TCP proxy the tests control where they cut or stall connections).

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use minka_client::{
    Backoff, Client, ConnectionState, DocStatus, DocumentId, Error, Event, Keepalive, Options,
    ProposalDraft, ProposalStatus,
};
use minka_tests::harness::{token, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const COMAS: &str = "150110";

/// A TCP proxy between phones and the server: the upstream address can change (a restarted
/// server listens on a new port), connections can be cut at once or after some bytes, or
/// stalled (nothing forwarded, sockets left open: a dead mobile link).
struct Proxy {
    addr: String,
    upstream: Arc<Mutex<String>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Cut each new connection once this many bytes went through it, both ways (0: never).
    cut_after: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    /// Connections cut because their byte budget ran out (in the middle of the traffic).
    cuts: Arc<AtomicU64>,
    /// For new connections: drop every `sync`/`request` from the server except those about
    /// this document (the server's other answers never reach the phone).
    only_doc: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let upstream = Arc::new(Mutex::new(upstream.to_string()));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let cut_after = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let only_doc: Arc<Mutex<Option<String>>> = Arc::default();
        let cuts = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (upstream, conns, cut_after, stalled, accepted, only, cuts) = (
                upstream.clone(),
                conns.clone(),
                cut_after.clone(),
                stalled.clone(),
                accepted.clone(),
                only_doc.clone(),
                cuts.clone(),
            );
            async move {
                while let Ok((phone, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let to = upstream.lock().unwrap().clone();
                    let limit = cut_after.load(Ordering::SeqCst);
                    let keep = only.lock().unwrap().clone();
                    let cuts = cuts.clone();
                    let stalled = stalled.clone();
                    let h = tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&to).await else {
                            return;
                        };
                        let (pr, pw) = phone.into_split();
                        let (sr, sw) = server.into_split();
                        let budget = Arc::new(AtomicU64::new(limit));
                        let up = pipe(pr, sw, budget.clone(), stalled.clone());
                        match keep {
                            Some(doc) => {
                                let down = pipe_only(sr, pw, doc);
                                tokio::select! { _ = up => {}, _ = down => {} }
                            }
                            None => {
                                let down = pipe(sr, pw, budget.clone(), stalled);
                                tokio::select! { _ = up => {}, _ = down => {} }
                                if limit > 0 && budget.load(Ordering::SeqCst) == 0 {
                                    cuts.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    });
                    conns.lock().unwrap().push(h);
                }
            }
        });
        Ok(Proxy {
            addr,
            upstream,
            conns,
            cut_after,
            stalled,
            accepted,
            cuts,
            only_doc,
            task,
        })
    }

    fn url(&self) -> String {
        format!("ws://{}/sync", self.addr)
    }

    fn set_upstream(&self, addr: &str) {
        *self.upstream.lock().unwrap() = addr.to_string();
    }

    /// Drops every live connection (both sockets close).
    fn cut_all(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut_all();
        self.task.abort();
    }
}

/// Copies bytes until either side closes, or until the connection's byte budget (shared by both
/// directions; 0 at the start: unlimited) runs out, in the middle of whatever frame is passing.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    budget: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
) {
    let limited = budget.load(Ordering::SeqCst) > 0;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stalled.load(Ordering::SeqCst) {
            // A dead link: keep the sockets, forward nothing.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.load(Ordering::SeqCst) {
            continue;
        }
        let n = if limited {
            let left = budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    Some(b.saturating_sub(n as u64))
                })
                .unwrap_or(0);
            n.min(left as usize)
        } else {
            n
        };
        if n > 0 && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if limited && budget.load(Ordering::SeqCst) == 0 {
            return;
        }
    }
}

/// Server → phone: passes the HTTP upgrade answer, then WebSocket frames one by one, dropping
/// binary frames about any document but `keep`.
async fn pipe_only(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    keep: String,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut upgraded = false;
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if !upgraded {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            if to.write_all(&buf[..end + 4]).await.is_err() {
                return;
            }
            buf.drain(..end + 4);
            upgraded = true;
        }
        // Server frames are unmasked: header, extended length, payload.
        while buf.len() >= 2 {
            let (len, head) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(l) as usize, 10)
                }
                126 | 127 => break,
                l => (l as usize, 2),
            };
            if buf.len() < head + len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..head + len).collect();
            let binary = frame[0] & 0x0f == 2;
            let other_doc = binary
                && crdt_core::wire::Message::decode(&frame[head..])
                    .ok()
                    .and_then(|m| m.document_id().map(|d| d != keep))
                    .unwrap_or(false);
            if !other_doc && to.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}

/// Options for tests: quick retries and keepalive.
fn quick() -> Options {
    Options {
        backoff: Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
            Duration::from_secs(2),
        ),
        keepalive: Keepalive {
            interval: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(2),
        },
        connect_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

fn phone(dir: &std::path::Path, user: &str, roles: &[&str]) -> Result<(Client, String)> {
    let c = Client::open_with(dir, quick())?;
    let t = token(user, roles, COMAS);
    c.set_token(&t)?;
    Ok((c, t))
}

fn draft(title: &str, cost: i64) -> ProposalDraft {
    ProposalDraft {
        title: title.into(),
        description: "Construir veredas en el jirón.".into(),
        zone: "zona-1".into(),
        category: "vías y veredas".into(),
        beneficiaries: 800,
        estimated_cost: cost,
        cofinancing: 0,
    }
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

/// Waits until `c` holds the proposal with this status.
async fn sees(c: &Client, id: &DocumentId, status: ProposalStatus, what: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(20), || {
        c.proposal(id).map(|p| p.status) == Ok(status)
    })
    .await
}

/// Waits until the server acknowledged every change of the document on `c`.
async fn acked(c: &Client, id: &DocumentId, what: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(20), || synced(c, id)).await
}

fn synced(c: &Client, id: &DocumentId) -> bool {
    c.status(id)
        .map(|s| s.status == DocStatus::Synced)
        .unwrap_or(false)
}

/// The document as the server serves it to a reviewer (`state` and `heads`).
fn server_doc(server: &TestServer, id: &DocumentId) -> Result<serde_json::Value> {
    let t = token("u-vig", &["vigilancia"], COMAS);
    let (status, body) = server.http_get(&format!("/api/v1/docs/{id}"), Some(&t))?;
    if status != 200 {
        bail!("GET /api/v1/docs/{id}: {status} {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

fn sorted_heads(v: &serde_json::Value) -> Vec<String> {
    let mut h: Vec<String> = v["heads"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    h.sort();
    h
}

fn phone_heads(c: &Client, id: &DocumentId) -> Vec<String> {
    let mut h = c.heads(id).unwrap_or_default();
    h.sort();
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_offline_phones_converge_and_a_stock_client_sees_the_same_state() -> Result<()> {
    let server = TestServer::start()?;
    let proxy = Proxy::start(&server.addr).await?;
    let tmp = tempfile::tempdir()?;
    // Rosa writes on her phone, offline; then syncs once.
    let (a, ta) = phone(&tmp.path().join("a"), "u-rosa", &["leader"])?;
    let id = a.create_proposal(draft("Veredas Los Olivos", 45_000_000))?;
    assert_eq!(a.status(&id)?.status, DocStatus::LocalOnly);
    a.connect(&proxy.url(), &ta)?;
    acked(&a, &id, "the proposal acknowledged").await?;
    // Her second phone learns of it through the district index.
    let (b, tb) = phone(&tmp.path().join("b"), "u-rosa", &["leader"])?;
    b.connect(&proxy.url(), &tb)?;
    wait_for(
        "the second phone to download it",
        Duration::from_secs(20),
        || b.proposal(&id).is_ok() && synced(&b, &id),
    )
    .await?;
    assert!(b.district_index().contains(&id));
    a.disconnect().await;
    b.disconnect().await;

    // Both edit offline: different fields, and the same field concurrently.
    a.set_title(&id, "Veredas y rampas Los Olivos")?;
    a.set_estimated_cost(&id, 48_000_000)?;
    b.set_description(&id, "Veredas con rampas para sillas de ruedas.")?;
    b.set_estimated_cost(&id, 47_500_000)?;
    assert_eq!(a.status(&id)?.status, DocStatus::Pending);
    assert_eq!(a.status(&id)?.unacknowledged, 2);

    a.connect(&proxy.url(), &ta)?;
    b.connect(&proxy.url(), &tb)?;
    wait_for("both phones to converge", Duration::from_secs(30), || {
        synced(&a, &id) && synced(&b, &id) && phone_heads(&a, &id) == phone_heads(&b, &id)
    })
    .await?;
    let pa = a.proposal(&id)?;
    assert_eq!(pa, b.proposal(&id)?);
    assert_eq!(pa.title, "Veredas y rampas Los Olivos");
    assert_eq!(pa.description, "Veredas con rampas para sillas de ruedas.");
    // Two concurrent costs: one wins everywhere, both are visible.
    let all = a.get_all(&id, &["estimatedCost"])?;
    let values: HashSet<i64> = all.iter().filter_map(|v| v.value.as_i64()).collect();
    assert_eq!(values, HashSet::from([48_000_000, 47_500_000]), "{all:?}");
    assert_eq!(all.iter().filter(|v| v.winner).count(), 1);
    assert_eq!(
        all.iter().find(|v| v.winner).and_then(|v| v.value.as_i64()),
        Some(pa.estimated_cost)
    );
    // The server holds exactly this.
    let on_server = server_doc(&server, &id)?;
    assert_eq!(sorted_heads(&on_server), phone_heads(&a, &id));

    // A stock automerge-repo client sees the same state.
    let stock = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/js/stock-doc.mjs"))
        .arg(server.ws_url(&token("u-stock", &["leader"], COMAS)))
        .arg(id.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("run node (npm install in tests/js first)")?;
    if !stock.status.success() {
        bail!("stock client failed");
    }
    let js: serde_json::Value = serde_json::from_slice(&stock.stdout)?;
    let mut js_heads: Vec<String> = serde_json::from_value(js["heads"].clone())?;
    js_heads.sort();
    assert_eq!(js_heads, phone_heads(&a, &id));
    assert_eq!(js["doc"]["title"], pa.title.as_str());
    assert_eq!(js["doc"]["description"], pa.description.as_str());
    assert_eq!(js["doc"]["estimatedCost"], pa.estimated_cost);
    assert_eq!(js["doc"]["status"], "draft");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_and_a_killed_server_lose_nothing_acknowledged() -> Result<()> {
    let mut server = TestServer::start()?;
    let proxy = Proxy::start(&server.addr).await?;
    let tmp = tempfile::tempdir()?;
    let (a, ta) = phone(&tmp.path().join("a"), "u-rosa", &["leader"])?;
    // Offline: 20 proposals with some history, so the first sync is many frames.
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = a.create_proposal(draft(&format!("Propuesta {i}"), 1_000_000 + i))?;
        for k in 0..5 {
            a.set_estimated_cost(&id, 2_000_000 + i * 10 + k)?;
        }
        ids.push(id);
    }
    // Every connection is cut after a byte budget (both ways, the HTTP upgrade included) that
    // grows with each attempt, so each session gets further into the upload before the cut
    // lands in the middle of a frame.
    let budget = proxy.cut_after.clone();
    let accepted = proxy.accepted.clone();
    let growing = tokio::spawn(async move {
        loop {
            let n = accepted.load(Ordering::SeqCst);
            budget.store(2_000 + 3_000 * n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    a.connect(&proxy.url(), &ta)?;
    wait_for("three cut sessions", Duration::from_secs(60), || {
        proxy.cuts.load(Ordering::SeqCst) >= 3
    })
    .await?;
    growing.abort();
    proxy.cut_after.store(0, Ordering::SeqCst);
    proxy.cut_all();
    wait_for("everything acknowledged", Duration::from_secs(30), || {
        ids.iter().all(|id| synced(&a, id))
    })
    .await?;
    assert!(server.metric("minka_changes_applied_total")? >= (ids.len() * 6) as f64);

    // SIGKILL the server while the phone writes; what it acknowledged must survive.
    let mut acknowledged: Vec<(DocumentId, Vec<String>)> = Vec::new();
    for round in 0..3 {
        let id = ids[round];
        a.set_estimated_cost(&id, 9_000_000 + round as i64)?;
        acked(&a, &id, "the edit acknowledged").await?;
        acknowledged.push((id, phone_heads(&a, &id)));
        // An edit the server may or may not have received when it dies.
        a.set_title(&ids[round + 10], &format!("Título {round}"))?;
        server.kill9();
        let (ok, out) = server.tool(&["check"])?;
        assert!(ok, "minka check after SIGKILL {round}: {out}");
        server.restart()?;
        proxy.set_upstream(&server.addr);
        proxy.cut_all();
    }
    for (id, heads) in &acknowledged {
        for h in heads {
            assert!(
                history_has(&server, id, h)?,
                "acknowledged change {h} of {id} is missing after SIGKILL"
            );
        }
    }
    wait_for(
        "the phone to converge again",
        Duration::from_secs(30),
        || ids.iter().all(|id| synced(&a, id)),
    )
    .await?;
    for id in &ids {
        assert_eq!(sorted_heads(&server_doc(&server, id)?), phone_heads(&a, id));
    }
    Ok(())
}

fn history_has(server: &TestServer, id: &DocumentId, hash: &str) -> Result<bool> {
    let t = token("u-vig", &["vigilancia"], COMAS);
    let (status, body) = server.http_get(&format!("/api/v1/docs/{id}/history"), Some(&t))?;
    if status != 200 {
        bail!("history: {status} {body}");
    }
    Ok(body.contains(hash))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_phone_process_loses_nothing_it_saved() -> Result<()> {
    // The phone process edits while syncing in the background; SIGKILL lands anywhere: in an
    // fsync, between a document and its sync state, in the middle of a frame.
    let server = TestServer::start()?;
    let url = format!("ws://{}/sync", server.addr);
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("phone");
    let t = token("u-rosa", &["leader"], COMAS);
    let example = minka_tests::harness::minka_bin()
        .parent()
        .map(|p| p.join("examples/phone"))
        .ok_or_else(|| anyhow!("no target dir"))?;
    if !example.exists() {
        bail!(
            "{} is missing: `cargo test` builds examples (cargo build -p minka-client --examples)",
            example.display()
        );
    }
    let mut saved = Vec::new();
    for round in 0..3u64 {
        let mut child = Command::new(&example)
            .args([
                "--dir",
                dir.to_str().unwrap(),
                "--token",
                &t,
                "edits",
                "100000",
                "--sync",
                &url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().unwrap();
        // Read what it reports as saved, kill it at a random moment.
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = std::thread::spawn({
            let lines = lines.clone();
            move || {
                use std::io::BufRead;
                for l in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    lines.lock().unwrap().push(l);
                }
            }
        });
        let wait = 300 + rand::random::<u64>() % 700 + round * 100;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill()?;
        child.wait()?;
        reader.join().unwrap();
        let lines = lines.lock().unwrap().clone();
        let id: DocumentId = lines
            .iter()
            .find_map(|l| l.strip_prefix("created "))
            .ok_or_else(|| anyhow!("the phone printed nothing: {lines:?}"))?
            .parse()?;
        let last_saved: i64 = lines
            .iter()
            .filter_map(|l| l.strip_prefix("saved ").and_then(|n| n.parse().ok()))
            .max()
            .unwrap_or(0);
        assert!(last_saved > 0, "no edit saved before the kill");
        let c = Client::open(&dir)?;
        let cost = c.proposal(&id)?.estimated_cost;
        assert!(
            cost >= last_saved,
            "round {round}: edit {last_saved} was reported saved, the store has {cost}"
        );
        saved.push((id, cost));
    }
    // Reopened and connected, the phone converges with the server: every document synced, and
    // the server holds exactly the phone's state.
    let c = Client::open_with(&dir, quick())?;
    c.connect(&url, &t)?;
    wait_for(
        "the reopened phone to sync",
        Duration::from_secs(30),
        || saved.iter().all(|(id, _)| synced(&c, id)),
    )
    .await?;
    for (id, cost) in &saved {
        let on_server = server_doc(&server, id)?;
        assert_eq!(sorted_heads(&on_server), phone_heads(&c, id));
        assert_eq!(on_server["state"]["estimatedCost"], *cost);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_change_is_reported_and_can_be_discarded_or_reapplied() -> Result<()> {
    let server = TestServer::start()?;
    let tmp = tempfile::tempdir()?;
    let url = format!("ws://{}/sync", server.addr);
    let (leader, tl) = phone(&tmp.path().join("leader"), "u-rosa", &["leader"])?;
    let (tecnico, tt) = phone(&tmp.path().join("tecnico"), "u-tec", &["tecnico"])?;
    let id = leader.create_proposal(draft("Parque Señor de los Milagros", 30_000_000))?;
    leader.set_proposal_status(&id, ProposalStatus::Submitted)?;
    leader.connect(&url, &tl)?;
    tecnico.connect(&url, &tt)?;
    wait_for(
        "the técnico to download it",
        Duration::from_secs(20),
        || {
            tecnico.proposal(&id).map(|p| p.status) == Ok(ProposalStatus::Submitted)
                && synced(&leader, &id)
        },
    )
    .await?;

    // Local checks: what the server would refuse fails on the phone, before anything is written.
    let before = leader.heads(&id)?;
    assert!(matches!(
        leader.set_proposal_status(&id, ProposalStatus::Eligible),
        Err(Error::NotPermitted(_))
    ));
    assert!(matches!(
        leader.set_estimated_cost(&id, -5),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        tecnico.set_title(&id, "Otro título"),
        Err(Error::NotPermitted(_))
    ));
    assert_eq!(leader.heads(&id)?, before);

    // The leader goes offline and edits; meanwhile the técnico starts the evaluation.
    leader.disconnect().await;
    leader.set_title(&id, "Parque y losa deportiva Señor de los Milagros")?;
    tecnico.set_proposal_status(&id, ProposalStatus::InEvaluation)?;
    acked(&tecnico, &id, "the evaluation to reach the server").await?;
    let mut events = leader.events();
    leader.connect(&url, &tl)?;
    let reason = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(Event::Rejected { doc, reason }) = events.recv().await {
                if doc == id {
                    return reason;
                }
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no rejection event"))?;
    assert!(!reason.is_empty());
    assert_eq!(
        leader.status(&id)?.status,
        DocStatus::Rejected {
            reason: reason.clone()
        }
    );
    assert_eq!(leader.rejections(&id).len(), 1);
    // The document keeps syncing: the técnico's status arrives.
    sees(
        &leader,
        &id,
        ProposalStatus::InEvaluation,
        "the evaluation to reach the leader",
    )
    .await?;
    // Re-applying now is not something this user may do: nothing changes.
    assert!(matches!(
        leader.reapply_rejected(&id),
        Err(Error::NotPermitted(_))
    ));
    assert_eq!(leader.rejections(&id).len(), 1);

    // Discard: back to the accepted history, in sync with the server.
    assert_eq!(leader.discard_rejected(&id)?, 1);
    assert_eq!(leader.proposal(&id)?.title, "Parque Señor de los Milagros");
    acked(&leader, &id, "the discarded document to be in sync").await?;
    assert_eq!(
        sorted_heads(&server_doc(&server, &id)?),
        phone_heads(&leader, &id)
    );

    // Again: the técnico sends it back for changes, the leader (in sync) edits offline, while
    // from her second phone the proposal is submitted again and the técnico takes it back into
    // evaluation. Her offline edit is refused; once it is observed again, re-apply succeeds.
    tecnico.set_proposal_status(&id, ProposalStatus::Observed)?;
    sees(
        &leader,
        &id,
        ProposalStatus::Observed,
        "the observation to reach the leader",
    )
    .await?;
    leader.disconnect().await;
    leader.set_description(&id, "Parque con juegos y una losa deportiva.")?;
    let (second, t2) = phone(&tmp.path().join("leader-2"), "u-rosa", &["leader"])?;
    second.connect(&url, &t2)?;
    sees(
        &second,
        &id,
        ProposalStatus::Observed,
        "the second phone to download it",
    )
    .await?;
    second.set_proposal_status(&id, ProposalStatus::Submitted)?;
    sees(
        &tecnico,
        &id,
        ProposalStatus::Submitted,
        "the técnico to see it submitted",
    )
    .await?;
    tecnico.set_proposal_status(&id, ProposalStatus::InEvaluation)?;
    acked(&tecnico, &id, "the evaluation to reach the server").await?;
    leader.connect(&url, &tl)?;
    wait_for("the second rejection", Duration::from_secs(20), || {
        matches!(
            leader.status(&id).map(|s| s.status),
            Ok(DocStatus::Rejected { .. })
        )
    })
    .await?;
    tecnico.set_proposal_status(&id, ProposalStatus::Observed)?;
    sees(
        &leader,
        &id,
        ProposalStatus::Observed,
        "the observation to reach the leader",
    )
    .await?;
    let hash = leader.reapply_rejected(&id)?;
    assert!(hash.is_some());
    assert_eq!(
        leader.proposal(&id)?.description,
        "Parque con juegos y una losa deportiva."
    );
    wait_for(
        "the re-applied change to be accepted",
        Duration::from_secs(20),
        || synced(&leader, &id) && leader.rejections(&id).is_empty(),
    )
    .await?;
    let on_server = server_doc(&server, &id)?;
    assert_eq!(
        on_server["state"]["description"],
        "Parque con juegos y una losa deportiva."
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_waits_for_a_new_one_and_a_new_token_reconnects() -> Result<()> {
    let server = TestServer::start()?;
    let proxy = Proxy::start(&server.addr).await?;
    let tmp = tempfile::tempdir()?;
    let c = Client::open_with(tmp.path(), quick())?;
    let bad = minka_tests::harness::token_with(
        "u-rosa",
        &["leader"],
        COMAS,
        minka_tests::harness::now_unix() + 3600,
        "not-the-servers-secret-at-all",
    );
    c.connect(&proxy.url(), &bad)?;
    wait_for("NeedsToken", Duration::from_secs(10), || {
        matches!(c.connection_state(), ConnectionState::NeedsToken { .. })
    })
    .await?;
    let attempts = proxy.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        proxy.accepted.load(Ordering::SeqCst),
        attempts,
        "a refused token was retried"
    );
    c.set_token(&token("u-rosa", &["leader"], COMAS))?;
    wait_for("Connected", Duration::from_secs(10), || {
        c.connection_state() == ConnectionState::Connected
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_nothing_new_costs_one_message_per_document() -> Result<()> {
    let server = TestServer::start()?;
    let tmp = tempfile::tempdir()?;
    let url = format!("ws://{}/sync", server.addr);
    let dir = tmp.path().join("a");
    let ids: Vec<DocumentId> = {
        let (a, ta) = phone(&dir, "u-rosa", &["leader"])?;
        let ids = (0..10)
            .map(|i| a.create_proposal(draft(&format!("P{i}"), 100 + i)))
            .collect::<Result<Vec<_>, _>>()?;
        a.connect(&url, &ta)?;
        wait_for("all acknowledged", Duration::from_secs(20), || {
            ids.iter().all(|id| synced(&a, id)) && a.district_index().len() == ids.len()
        })
        .await?;
        a.disconnect().await;
        ids
    };
    // A new process on the same store: the sync states were persisted.
    let (a, ta) = phone(&dir, "u-rosa", &["leader"])?;
    assert!(ids.iter().all(|id| synced(&a, id)));
    let msgs_in = server.metric("minka_messages_in_total")?;
    let msgs_out = server.metric("minka_messages_out_total")?;
    let bytes_in = server.metric("minka_bytes_in_total")?;
    a.connect(&url, &ta)?;
    wait_for("Connected", Duration::from_secs(10), || {
        a.connection_state() == ConnectionState::Connected
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let docs = ids.len() as f64 + 1.0; // and the district index
    let got_in = server.metric("minka_messages_in_total")? - msgs_in;
    let got_out = server.metric("minka_messages_out_total")? - msgs_out;
    let got_bytes = server.metric("minka_bytes_in_total")? - bytes_in;
    assert_eq!(got_in, 1.0 + docs, "join + one sync per document");
    assert_eq!(
        got_out, 1.0,
        "only `peer`: the server agrees and stays silent"
    );
    assert!(
        got_bytes / docs < 300.0,
        "{got_bytes} bytes for {docs} documents"
    );
    assert!(ids.iter().all(|id| synced(&a, id)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_link_is_noticed_and_network_changed_retries_at_once() -> Result<()> {
    let mut server = TestServer::start()?;
    let proxy = Proxy::start(&server.addr).await?;
    let tmp = tempfile::tempdir()?;
    let (a, ta) = phone(&tmp.path().join("a"), "u-rosa", &["leader"])?;
    a.connect(&proxy.url(), &ta)?;
    wait_for("Connected", Duration::from_secs(10), || {
        a.connection_state() == ConnectionState::Connected
    })
    .await?;
    // The link dies silently: no FIN, nothing forwarded. Keepalive gives up (idle 2 s here).
    let mut conn = a.watch_connection();
    proxy.stalled.store(true, Ordering::SeqCst);
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), async {
        while conn.changed().await.is_ok() {
            if matches!(*conn.borrow(), ConnectionState::Retrying { .. }) {
                return;
            }
        }
    })
    .await
    .map_err(|_| anyhow!("the dead link was not noticed"))?;
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    proxy.stalled.store(false, Ordering::SeqCst);
    proxy.cut_all();
    wait_for("reconnected", Duration::from_secs(10), || {
        a.connection_state() == ConnectionState::Connected
    })
    .await?;
    a.disconnect().await;

    // With the server down and a long backoff, network_changed() retries at once.
    server.kill9();
    let c = Client::open_with(
        tmp.path().join("b"),
        Options {
            backoff: Backoff::new(
                Duration::from_secs(60),
                Duration::from_secs(60),
                Duration::from_secs(30),
            ),
            ..quick()
        },
    )?;
    c.set_token(&ta)?;
    let id = c.create_proposal(draft("Sin señal", 5))?;
    c.connect(&proxy.url(), &ta)?;
    // Wait until it is waiting a long time (full jitter may pick a short delay: then it fails
    // again, and draws again).
    let mut conn = c.watch_connection();
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let ConnectionState::Retrying { in_, .. } = &*conn.borrow_and_update() {
                if *in_ >= Duration::from_secs(15) {
                    return;
                }
            }
            if conn.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .map_err(|_| anyhow!("never waited long"))?;
    server.restart()?;
    proxy.set_upstream(&server.addr);
    c.network_changed();
    wait_for(
        "synced right after network_changed",
        Duration::from_secs(5),
        || synced(&c, &id),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_user_on_the_same_phone_writes_as_themselves() -> Result<()> {
    // A community phone shared by two leaders: each writes with an actor of their own, which the
    // server binds to them; neither is refused for writing "in the other's name".
    let server = TestServer::start()?;
    let url = format!("ws://{}/sync", server.addr);
    let tmp = tempfile::tempdir()?;
    let (c, rosa) = phone(tmp.path(), "u-rosa", &["leader"])?;
    let first = c.create_proposal(draft("Veredas", 100))?;
    c.connect(&url, &rosa)?;
    acked(&c, &first, "Rosa's proposal").await?;
    c.disconnect().await;
    let juan = token("u-juan", &["leader"], COMAS);
    c.set_token(&juan)?;
    let second = c.create_proposal(draft("Alumbrado", 200))?;
    c.connect(&url, &juan)?;
    acked(&c, &second, "Juan's proposal").await?;
    assert!(c.rejections(&second).is_empty());
    let history = c.history(&second)?;
    let rosa_actor = &c.history(&first)?[0].actor;
    assert_ne!(&history[0].actor, rosa_actor);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_the_stored_index_lists_are_fetched_after_a_restart() -> Result<()> {
    let server = TestServer::start()?;
    let url = format!("ws://{}/sync", server.addr);
    let tmp = tempfile::tempdir()?;
    let (a, ta) = phone(&tmp.path().join("a"), "u-rosa", &["leader"])?;
    let ids = (0..150)
        .map(|i| a.create_proposal(draft(&format!("Propuesta {i}"), 100 + i)))
        .collect::<Result<Vec<_>, _>>()?;
    a.connect(&url, &ta)?;
    wait_for("the district listed", Duration::from_secs(60), || {
        ids.iter().all(|id| synced(&a, id)) && a.district_index().len() == ids.len()
    })
    .await?;

    // A second phone receives the index but none of the documents (the proxy drops them), and
    // the app is closed.
    let proxy = Proxy::start(&server.addr).await?;
    let index = DocumentId::index_for(COMAS.parse()?, 2027);
    *proxy.only_doc.lock().unwrap() = Some(index.to_string());
    let dir = tmp.path().join("b");
    {
        let (b, tb) = phone(&dir, "u-carla", &["leader"])?;
        b.connect(&proxy.url(), &tb)?;
        wait_for("the index", Duration::from_secs(20), || {
            b.district_index().len() == ids.len()
        })
        .await?;
        // Its requests for the listed documents went out; the answers never arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.disconnect().await;
        assert_eq!(b.list().len(), 0);
    }
    // Reopened: the index is stored and says nothing new, yet what it lists is fetched.
    let (b, tb) = phone(&dir, "u-carla", &["leader"])?;
    assert_eq!(b.district_index().len(), ids.len());
    b.connect(&url, &tb)?;
    wait_for("every listed document", Duration::from_secs(60), || {
        b.list().len() == ids.len() && ids.iter().all(|id| synced(&b, id))
    })
    .await?;
    Ok(())
}
