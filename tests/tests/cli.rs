//! The `minka` command line against the real binary: `token` (accepted by the server, expiring live
//! connections, refusing bad claims), `demo` then `serve` (district index, read scoping), `check`,
//! `compact`, corruption found by `check`, and the secret generated when none is configured.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::{Automerge, ChangeHash};
use common::proposal;
use crdt_core::schema::{DocType, Index, Proposal};
use crdt_core::wire::Message;
use crdt_core::{DocumentId, Ubigeo};
use minka_tests::harness::{minka_bin, token, Event, ProtoClient, TestServer, TEST_SECRET};

/// Runs `minka token …` with the test secret; returns (success, stdout, stderr).
fn mint(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(minka_bin())
        .arg("token")
        .args(args)
        .env("MINKA_JWT_SECRET", TEST_SECRET)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn events_text(events: &[Event]) -> String {
    format!("{events:?}")
}

#[tokio::test]
async fn minted_tokens_are_accepted_and_expire_on_live_connections() {
    let server = TestServer::start().unwrap();
    let (ok, tok, err) = mint(&[
        "--sub",
        "u-rosa",
        "--name",
        "Rosa Quispe",
        "--roles",
        "leader,vigilancia",
        "--district",
        "150110",
    ]);
    assert!(ok, "{err}");
    assert_eq!(tok.lines().count(), 1, "only the token on stdout: {tok}");
    assert_eq!(tok.split('.').count(), 3, "a JWT: {tok}");
    // The server accepts it for HTTP and for a sync that stores a proposal.
    let (status, _) = server.http_get("/api/v1/quarantine", Some(&tok)).unwrap();
    assert_eq!(status, 200);
    let mut c = ProtoClient::connect(&server.ws_url(&tok), "peer-rosa")
        .await
        .unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-rosa", "Escaleras en Collique", &[]);
    let events = c.sync_doc(id, &mut doc).await.unwrap();
    assert!(events.is_empty(), "{}", events_text(&events));
    let mut copy = Automerge::new();
    let mut other = ProtoClient::connect(&server.ws_url(&tok), "peer-rosa-2")
        .await
        .unwrap();
    other.request_doc(id, &mut copy).await.unwrap();
    assert_eq!(copy.get_heads(), doc.get_heads());

    // A one-second token: the live connection is ended when it expires.
    let (ok, short, err) = mint(&[
        "--sub",
        "u-rosa",
        "--name",
        "Rosa Quispe",
        "--roles",
        "leader",
        "--district",
        "150110",
        "--ttl",
        "1s",
    ]);
    assert!(ok, "{err}");
    let minted = Instant::now();
    let mut c = ProtoClient::connect(&server.ws_url(&short), "peer-short")
        .await
        .unwrap();
    let mut error = None;
    let closed = loop {
        match c.next(Duration::from_secs(5)).await.unwrap() {
            Some(Event::Message(Message::Error(e))) => error = Some(e.message),
            Some(Event::Message(_)) => {}
            Some(Event::Closed(_)) => break Some(minted.elapsed()),
            None => break None,
        }
    };
    let closed = closed.expect("the server must close a connection whose token expired");
    assert!(
        closed <= Duration::from_secs(3),
        "closed {closed:?} after minting a 1 s token"
    );
    let error = error.expect("an `error` message before the close");
    assert!(error.contains("token expired"), "{error}");
    // The long-lived connection is untouched.
    let (again, events) = fetch(&mut other, id).await;
    assert!(events.is_empty(), "{}", events_text(&events));
    assert_eq!(again.get_heads(), doc.get_heads());
}

#[test]
fn token_refuses_bad_claims_with_a_clear_message() {
    let base = |roles: &str, district: &str, ttl: &str| {
        mint(&[
            "--sub",
            "u-x",
            "--name",
            "X",
            "--roles",
            roles,
            "--district",
            district,
            "--ttl",
            ttl,
        ])
    };
    let cases = [
        (
            base("leader,chief", "150110", "8h"),
            "unknown role \"chief\"",
        ),
        (base("", "150110", "8h"), "unknown role"),
        (
            base("leader", "999999", "8h"),
            "not a district of Metropolitan Lima",
        ),
        (base("leader", "15011", "8h"), "must be 6 digits"),
        (base("leader", "comas", "8h"), "must be 6 digits"),
        (base("leader", "150110", "5x"), "unknown --ttl unit"),
        (base("leader", "150110", "soon"), "bad --ttl"),
    ];
    for ((ok, stdout, stderr), needle) in cases {
        assert!(!ok, "must fail: {stdout}");
        assert!(stdout.is_empty(), "no token printed: {stdout}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    // Good claims, province-wide.
    let (ok, tok, err) = base("vigilancia", "*", "30m");
    assert!(ok && !tok.is_empty(), "{err}");

    // No secret anywhere: a clear message, and nothing created.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = Command::new(minka_bin())
        .args(["token", "--sub", "u-x", "--name", "X", "--roles", "leader"])
        .args(["--district", "150110", "--data-dir"])
        .arg(&dir)
        .env_remove("MINKA_JWT_SECRET")
        .env_remove("MINKA_JWT_SECRET_FILE")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no secret"), "{stderr}");
    assert!(stderr.contains("MINKA_JWT_SECRET"), "{stderr}");
    assert!(!dir.join("jwt-secret").exists());
}

/// Fetches a document with a fresh sync state; returns it and what else arrived.
async fn fetch(c: &mut ProtoClient, id: DocumentId) -> (Automerge, Vec<Event>) {
    let mut doc = Automerge::new();
    c.reset(id);
    let events = c.request_doc(id, &mut doc).await.unwrap();
    (doc, events)
}

fn is_unavailable(events: &[Event], id: DocumentId) -> bool {
    events.iter().any(
        |e| matches!(e, Event::Message(Message::DocUnavailable(d)) if d.document_id == id.to_string()),
    )
}

/// Every Comas document the index lists, with its heads, as a Comas leader sees them.
async fn comas_documents(server: &TestServer) -> BTreeMap<DocumentId, Vec<ChangeHash>> {
    let mut c = ProtoClient::connect(
        &server.ws_url(&token("u-lider-comas", &["leader"], "150110")),
        "peer-comas",
    )
    .await
    .unwrap();
    let index_id = DocumentId::index_for(Ubigeo::COMAS, 2027);
    let (index, events) = fetch(&mut c, index_id).await;
    assert!(events.is_empty(), "{}", events_text(&events));
    let index = Index::read(&index).unwrap();
    assert_eq!(index.header.district, Ubigeo::COMAS);
    let mut out = BTreeMap::new();
    for id in index.docs.keys() {
        let (doc, events) = fetch(&mut c, *id).await;
        assert!(events.is_empty(), "{id}: {}", events_text(&events));
        assert!(!doc.get_heads().is_empty(), "{id} is empty");
        out.insert(*id, doc.get_heads());
    }
    let (index, _) = fetch(&mut c, index_id).await;
    out.insert(index_id, index.get_heads());
    out
}

#[tokio::test]
async fn demo_then_serve_then_check_and_compact() {
    let mut server = TestServer::unstarted(&[]).unwrap();
    let (ok, out) = server.tool(&["demo"]).unwrap();
    assert!(ok && out.contains("seeded"), "{out}");
    let (ok, out) = server.tool(&["check"]).unwrap();
    assert!(ok && out.contains("store OK"), "{out}");
    server.restart().unwrap();

    // A Comas leader discovers the district's documents through the index.
    let leader = token("u-lider-comas", &["leader"], "150110");
    let mut c = ProtoClient::connect(&server.ws_url(&leader), "peer-leader")
        .await
        .unwrap();
    let index_id = DocumentId::index_for(Ubigeo::COMAS, 2027);
    let (index_doc, events) = fetch(&mut c, index_id).await;
    assert!(events.is_empty(), "{}", events_text(&events));
    let index = Index::read(&index_doc).unwrap();
    assert!(index.docs.len() >= 5, "{:?}", index.docs);
    let (&proposal_id, _) = index
        .docs
        .iter()
        .find(|(_, e)| e.doc_type == DocType::Proposal)
        .expect("the demo has Comas proposals");
    let (p_doc, events) = fetch(&mut c, proposal_id).await;
    assert!(events.is_empty(), "{}", events_text(&events));
    let p = Proposal::read(&p_doc).unwrap();
    assert_eq!(p.header.district, Ubigeo::COMAS);
    assert!(!p.title.is_empty());

    // A San Juan de Miraflores leader may read none of it.
    let sjm = token("u-lider-sjm", &["leader"], "150133");
    let mut s = ProtoClient::connect(&server.ws_url(&sjm), "peer-sjm")
        .await
        .unwrap();
    for id in [proposal_id, index_id] {
        let (doc, events) = fetch(&mut s, id).await;
        assert!(is_unavailable(&events, id), "{}", events_text(&events));
        assert!(doc.get_heads().is_empty(), "nothing may leak");
    }
    // ...but its own district's index.
    let (sjm_index, events) = fetch(
        &mut s,
        DocumentId::index_for(Ubigeo::SAN_JUAN_DE_MIRAFLORES, 2027),
    )
    .await;
    assert!(events.is_empty(), "{}", events_text(&events));
    assert!(!Index::read(&sjm_index).unwrap().docs.is_empty());

    // A new proposal gives the store incremental chunks to compact.
    let new_id = DocumentId::random();
    let mut new_doc = proposal(Ubigeo::COMAS, "u-lider-comas", "Biohuerto comunal", &[]);
    let events = c.sync_doc(new_id, &mut new_doc).await.unwrap();
    // Only pushes of other documents this connection syncs (the index grows) may arrive meanwhile.
    assert!(
        events.iter().all(
            |e| matches!(e, Event::Message(Message::Sync(s)) if s.document_id != new_id.to_string())
        ),
        "{}",
        events_text(&events)
    );
    // The index lists it (written asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let docs = comas_documents(&server).await;
        if docs.contains_key(&new_id) || Instant::now() > deadline {
            break docs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(before.contains_key(&new_id), "new proposal not indexed");
    assert_eq!(before[&new_id], new_doc.get_heads());
    drop((c, s));

    assert!(server.terminate(), "log:\n{}", server.log());
    let (ok, out) = server.tool(&["check"]).unwrap();
    assert!(ok && out.contains("store OK"), "{out}");
    let (ok, out) = server.tool(&["compact"]).unwrap();
    assert!(ok, "{out}");
    let compacted: usize = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected compact output {out}"));
    assert!(compacted >= 2, "the new proposal and the index: {out}");
    let (ok, out) = server.tool(&["check"]).unwrap();
    assert!(ok && out.contains("store OK"), "{out}");
    // Compacting again has nothing to do.
    let (ok, out) = server.tool(&["compact"]).unwrap();
    assert!(ok && out.contains("compacted 0 of"), "{out}");

    // Served again, every document loads with the same heads.
    server.restart().unwrap();
    let after = comas_documents(&server).await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn check_finds_corrupt_chunks() {
    let mut server = TestServer::unstarted(&[]).unwrap();
    let (ok, out) = server.tool(&["demo"]).unwrap();
    assert!(ok, "{out}");

    // Chunks whose bytes do not parse, stored under their correct hashes: the only chunk of a
    // document, and one after the snapshot of a demo document (automerge's incremental load
    // would skip it silently).
    let garbage_doc = DocumentId::random();
    let index_id = DocumentId::index_for(Ubigeo::ATE, 2027);
    {
        use minka_server::store::DocStore;
        let store = minka_server::store::SledStore::open(&server.data_dir).unwrap();
        store
            .append(&garbage_doc, b"these bytes are not an automerge chunk")
            .unwrap();
        let snapshot = &store.load(&index_id).unwrap()[0].bytes;
        store
            .append(&index_id, &snapshot[..snapshot.len() / 2])
            .unwrap();
        store.sync().unwrap();
    }
    let (ok, out) = server.tool(&["check"]).unwrap();
    assert!(!ok, "{out}");
    assert!(!out.contains("store OK"), "{out}");
    for id in [garbage_doc, index_id] {
        assert!(
            out.lines().any(|l| l.starts_with("PROBLEM")
                && l.contains(&id.to_string())
                && l.contains("does not load")),
            "{id} not reported:\n{out}"
        );
    }

    // A stored chunk whose bytes changed on disk (one flipped byte).
    let mut second = TestServer::unstarted(&[]).unwrap();
    let (ok, out) = second.tool(&["demo"]).unwrap();
    assert!(ok, "{out}");
    let flipped_doc = flip_a_byte(&second.data_dir);
    let (ok, out) = second.tool(&["check"]).unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains(&flipped_doc.to_string()), "{out}");
    assert!(out.contains("does not match its hash"), "{out}");

    // The server still starts on the first store and serves the healthy documents.
    server.restart().unwrap();
    let mut c = ProtoClient::connect(
        &server.ws_url(&token("u-lider-comas", &["leader"], "150110")),
        "peer-comas",
    )
    .await
    .unwrap();
    let (index, events) = fetch(&mut c, DocumentId::index_for(Ubigeo::COMAS, 2027)).await;
    assert!(events.is_empty(), "{}", events_text(&events));
    assert!(Index::read(&index).is_ok());
    let (status, _) = server.http_get("/healthz", None).unwrap();
    assert_eq!(status, 200);
    second.kill9();
}

/// Flips one byte in the middle of the first stored chunk; returns its document.
fn flip_a_byte(data_dir: &Path) -> DocumentId {
    let db = sled::open(data_dir).unwrap();
    let chunks = db.open_tree("chunks").unwrap();
    let (key, value) = chunks.iter().next().unwrap().unwrap();
    let mut bytes = value.to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    chunks.insert(&key, bytes).unwrap();
    db.flush().unwrap();
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[..16]);
    DocumentId::from_bytes(id)
}

/// A `minka serve` started with no secret configured at all.
struct Unconfigured {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Unconfigured {
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(minka_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("MINKA_JWT_SECRET")
            .env_remove("MINKA_JWT_SECRET_FILE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listen=") {
                    let addr: String = line[i + 7..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("minka reports its address");
        let s = Self { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while minka_tests::harness::http_request(&s.addr, "GET", "/healthz", None)
            .map(|(st, _)| st)
            .unwrap_or(0)
            != 200
        {
            assert!(Instant::now() < deadline, "not healthy:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Unconfigured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `minka token` with the secret of a data directory (no env).
fn mint_from_data_dir(dir: &Path) -> String {
    let out = Command::new(minka_bin())
        .args([
            "token", "--sub", "u-rosa", "--name", "Rosa", "--roles", "leader",
        ])
        .args(["--district", "150110", "--data-dir"])
        .arg(dir)
        .env_remove("MINKA_JWT_SECRET")
        .env_remove("MINKA_JWT_SECRET_FILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn serve_without_a_secret_generates_one_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Unconfigured::start(&dir);
    let secret_path = dir.join("jwt-secret");
    let log = server.log();
    assert!(
        log.contains("generated") && log.contains(&secret_path.display().to_string()),
        "the server must say it generated a secret and where:\n{log}"
    );
    let secret = std::fs::read_to_string(&secret_path).unwrap();
    assert!(secret.trim().len() >= 32, "a strong secret");
    assert!(!log.contains(secret.trim()), "the secret is never logged");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "only the owner may read the secret: {mode:o}"
        );
    }

    // `minka token` on the same data directory signs with it; the test secret is refused.
    let tok = mint_from_data_dir(&dir);
    let url = |t: &str| format!("ws://{}/sync?token={t}", server.addr);
    ProtoClient::connect(&url(&tok), "peer-rosa").await.unwrap();
    let foreign = token("u-rosa", &["leader"], "150110");
    match tokio_tungstenite::connect_async(url(&foreign)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!("a token signed with another secret must get 401, got {other:?}"),
    }

    // Restarted, the server keeps the same secret and does not generate another.
    drop(server);
    let server = Unconfigured::start(&dir);
    assert!(!server.log().contains("generated"), "{}", server.log());
    assert_eq!(std::fs::read_to_string(&secret_path).unwrap(), secret);
    ProtoClient::connect(
        &format!("ws://{}/sync?token={tok}", server.addr),
        "peer-rosa",
    )
    .await
    .unwrap();
}
