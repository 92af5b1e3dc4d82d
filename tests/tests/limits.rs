//! Limits on what one authenticated but hostile client may make the server hold, over real sockets
//! with the real binary: connections per user, documents per connection, ephemeral messages per
//! second, changes held for missing dependencies (count, bytes, time, sender gone), refused changes
//! kept per user, and 10,000 `request`s on one connection. Each limit refuses with a clear `error`
//! (or HTTP 429), is counted in `/metrics`, and a well-behaved client keeps syncing.

mod common;

use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge, ChangeHash};
use common::{append_description, proposal};
use crdt_core::schema::{apply_edits, Edit, ProposalStatus};
use crdt_core::wire::{EphemeralMessage, Message, RequestMessage, SyncMessage};
use crdt_core::{DocumentId, Ubigeo};
use minka_tests::harness::{token, wait_metric, Event, ProtoClient, TestServer};

fn comas_leader(sub: &str) -> String {
    token(sub, &["leader"], "150110")
}

/// Every `error` text received within `wait` (stops early after `want` of them).
async fn errors(c: &mut ProtoClient, want: usize, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match c.next(left).await.unwrap() {
            Some(Event::Message(Message::Error(e))) => out.push(e.message),
            Some(Event::Closed(r)) => panic!("connection closed: {r:?}"),
            Some(_) => {}
            None => break,
        }
    }
    out
}

/// A well-behaved leader of Comas: creates a proposal and gets it acknowledged.
async fn well_behaved(server: &TestServer) -> (ProtoClient, DocumentId, Automerge) {
    let mut c = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-ana")
        .await
        .unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Losa deportiva", &[]);
    c.sync_doc(id, &mut doc).await.unwrap();
    assert_eq!(c.server_heads(id), Some(doc.get_heads()));
    (c, id, doc)
}

async fn still_syncs(c: &mut ProtoClient, id: DocumentId, doc: &mut Automerge, text: &str) {
    append_description(doc, text);
    c.sync_doc(id, doc).await.unwrap();
    assert_eq!(
        c.server_heads(id),
        Some(doc.get_heads()),
        "the well-behaved client's change is acknowledged"
    );
}

/// Like [`still_syncs`] while the server is under load: waits up to `limit` for the
/// acknowledgement instead of giving up after a quiet spell.
async fn acked_within(
    c: &mut ProtoClient,
    id: DocumentId,
    doc: &mut Automerge,
    text: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    append_description(doc, text);
    c.sync_doc(id, doc).await.unwrap();
    while c.server_heads(id) != Some(doc.get_heads()) {
        assert!(
            started.elapsed() < limit,
            "the well-behaved client's change is not acknowledged after {limit:?}"
        );
        if let Some(Event::Message(Message::Sync(s))) =
            c.next(Duration::from_millis(500)).await.unwrap()
        {
            if s.document_id == id.to_string() {
                c.receive_sync(id, doc, &s).await.unwrap();
            }
        }
    }
    started.elapsed()
}

/// A sync message carrying exactly `changes` (raw bytes) and claiming `heads`.
fn sync_with(
    doc: &Automerge,
    id: DocumentId,
    from: &str,
    to: &str,
    changes: Vec<Vec<u8>>,
    heads: Vec<ChangeHash>,
) -> Message {
    let mut msg = doc
        .clone()
        .generate_sync_message(&mut sync::State::new())
        .unwrap();
    msg.heads = heads;
    msg.changes = changes.into();
    Message::Sync(SyncMessage {
        sender_id: from.into(),
        target_id: to.into(),
        document_id: id.to_string(),
        data: msg.encode(),
    })
}

#[tokio::test]
async fn a_user_has_at_most_max_connections_per_user_open() {
    let server = TestServer::start_with(&["--max-connections-per-user", "2"]).unwrap();
    let url = server.ws_url(&comas_leader("u-many"));
    let a = ProtoClient::connect(&url, "peer-1").await.unwrap();
    let _b = ProtoClient::connect(&url, "peer-2").await.unwrap();
    let third = ProtoClient::connect(&url, "peer-3").await;
    let err = format!("{:#}", third.err().expect("a third connection is refused"));
    assert!(
        err.contains("429"),
        "refused with 429 Too Many Requests: {err}"
    );
    assert_eq!(
        server.metric("minka_connections_refused_total").unwrap(),
        1.0
    );
    // Another user is not affected.
    let (mut ana, id, mut doc) = well_behaved(&server).await;
    still_syncs(&mut ana, id, &mut doc, " — otra usuaria").await;
    // Closing one makes room again.
    drop(a);
    let n = wait_metric(&server, "minka_connections", Duration::from_secs(10), |v| {
        v == 2.0
    })
    .await;
    assert_eq!(n, 2.0);
    ProtoClient::connect(&url, "peer-4")
        .await
        .expect("a connection is accepted once another closed");
}

#[tokio::test]
async fn a_connection_syncs_at_most_max_docs_per_connection() {
    let server = TestServer::start_with(&["--max-docs-per-connection", "5"]).unwrap();
    let mut c = ProtoClient::connect(&server.ws_url(&comas_leader("u-beto")), "peer-beto")
        .await
        .unwrap();
    let ids: Vec<DocumentId> = (0..8).map(|_| DocumentId::random()).collect();
    for id in &ids {
        c.send_request(*id).await.unwrap();
    }
    let errs = errors(&mut c, 3, Duration::from_secs(5)).await;
    assert_eq!(errs.len(), 3, "{errs:?}");
    for (e, id) in errs.iter().zip(&ids[5..]) {
        assert!(
            e.contains(&id.to_string()) && e.contains("already syncs 5 documents"),
            "{e}"
        );
    }
    assert_eq!(server.metric("minka_documents_refused_total").unwrap(), 3.0);
    assert_eq!(
        wait_metric(
            &server,
            "minka_waiting_peers",
            Duration::from_secs(5),
            |v| v == 5.0
        )
        .await,
        5.0,
        "only the first five are waited on"
    );
    // A document the connection already has stays usable: create one at the first id.
    let mut doc = proposal(Ubigeo::COMAS, "u-beto", "Parque", &[]);
    c.sync_doc(ids[0], &mut doc).await.unwrap();
    assert_eq!(c.server_heads(ids[0]), Some(doc.get_heads()));
}

#[tokio::test]
async fn an_ephemeral_flood_is_cut_to_the_rate_limit_and_then_read_at_it() {
    let server =
        TestServer::start_with(&["--ephemeral-per-second", "10", "--ephemeral-burst", "20"])
            .unwrap();
    let (mut ana, id, mut doc) = well_behaved(&server).await;
    let mut flood = ProtoClient::connect(&server.ws_url(&comas_leader("u-flood")), "peer-flood")
        .await
        .unwrap();
    let mut copy = Automerge::new();
    flood.request_doc(id, &mut copy).await.unwrap();
    // Small enough to sit in the socket buffers: sending does not wait for the server.
    const SENT: usize = 500;
    let started = Instant::now();
    for i in 0..SENT {
        flood
            .send(&Message::Ephemeral(EphemeralMessage {
                sender_id: "peer-flood".into(),
                target_id: ana.server_peer_id.clone(),
                count: i as u64,
                session_id: "s".into(),
                document_id: id.to_string(),
                data: vec![0xa0],
            }))
            .await
            .unwrap();
    }
    let told = errors(&mut flood, 1, Duration::from_secs(5)).await;
    assert!(
        told.len() == 1 && told[0].contains("ephemeral messages over 10 per second"),
        "{told:?}"
    );
    // What reached the other peer: at most the burst plus what the rate allows. Ana keeps
    // editing meanwhile, and her edits are acknowledged at once.
    let mut relayed = 0;
    while let Some(ev) = ana.next(Duration::from_millis(500)).await.unwrap() {
        if let Event::Message(Message::Ephemeral(_)) = ev {
            relayed += 1;
        }
    }
    append_description(&mut doc, " y una banca");
    let edit = Instant::now();
    ana.sync_doc(id, &mut doc).await.unwrap();
    assert_eq!(ana.server_heads(id), Some(doc.get_heads()));
    let edit = edit.elapsed();
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 20.0 + 10.0 * elapsed + 1.0;
    assert!(
        relayed >= 20 && (relayed as f64) <= allowed,
        "relayed {relayed} of {SENT} in {elapsed:.2}s (at most {allowed:.0})"
    );
    // Once another burst's worth was dropped, the server stopped reading the flood faster than
    // the rate: most of it is still unread, and every drop so far is counted.
    let dropped = server.metric("minka_ephemeral_dropped_total").unwrap() as usize;
    let read_at_most = 20.0 + 20.0 + 10.0 * started.elapsed().as_secs_f64() + 2.0;
    assert!(
        dropped >= 20 && (relayed + dropped) as f64 <= read_at_most,
        "read {relayed} relayed + {dropped} dropped of {SENT} in {elapsed:.2}s: not paced \
         (at most {read_at_most:.0})"
    );
    assert!(server.metric("minka_ephemeral_throttled_total").unwrap() >= 1.0);
    println!("flood: {relayed} relayed, {dropped} dropped, {SENT} sent; ana's edit took {edit:?}");
}

/// Ana's proposal, and `n` later changes of hers of which the first is left out: the other `n - 1`
/// cannot be applied until it comes.
fn orphans(doc: &Automerge, n: usize, pad: usize) -> (Vec<u8>, Vec<Vec<u8>>, Vec<ChangeHash>) {
    let mut work = doc.clone();
    let base = doc.get_heads();
    for i in 0..n {
        append_description(&mut work, &format!(" {i}{}", "x".repeat(pad)));
    }
    let changes = work.get_changes(&base);
    let raw: Vec<Vec<u8>> = changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
    (raw[0].clone(), raw[1..].to_vec(), work.get_heads())
}

/// Whether a sync message about `id` carrying automerge's sync-reset flag (or, for a peer that
/// does not understand it, empty heads) arrived: among those received from index `since` on, or
/// within `wait` more.
async fn sync_reset_within(
    c: &mut ProtoClient,
    id: DocumentId,
    since: usize,
    wait: Duration,
) -> bool {
    let is_reset = |m: &Message| match m {
        Message::Sync(s) if s.document_id == id.to_string() => {
            let m = sync::Message::decode(&s.data).unwrap();
            m.flags
                .is_some_and(|f| f.contains(sync::MessageFlags::SYNC_RESET))
        }
        _ => false,
    };
    if c.received[since..].iter().any(is_reset) {
        return true;
    }
    let deadline = Instant::now() + wait;
    while let Some(Event::Message(m)) = c
        .next(deadline.saturating_duration_since(Instant::now()))
        .await
        .unwrap()
    {
        if is_reset(&m) {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn held_changes_are_bounded_expire_and_leave_with_their_sender() {
    let server =
        TestServer::start_with(&["--max-held-changes", "5", "--held-ttl-secs", "2"]).unwrap();
    let (mut ana, id, mut doc) = well_behaved(&server).await;
    let server_peer = ana.server_peer_id.clone();

    // Ten changes whose parent never comes: five are held, five refused with an error.
    let (_, held, heads) = orphans(&doc, 11, 0);
    ana.send(&sync_with(&doc, id, "peer-ana", &server_peer, held, heads))
        .await
        .unwrap();
    let errs = errors(&mut ana, 1, Duration::from_secs(5)).await;
    assert!(
        errs.len() == 1 && errs[0].contains("5 changes not kept") && errs[0].contains("5 changes"),
        "{errs:?}"
    );
    assert_eq!(server.metric("minka_held_changes").unwrap(), 5.0);
    assert_eq!(
        server
            .metric("minka_held_changes_dropped_total{reason=\"limit\"}")
            .unwrap(),
        5.0
    );
    // The sender believes it sent the five dropped ones, and automerge never sends a change twice
    // on one connection: the server's answer tells it to forget what it sent.
    assert!(
        sync_reset_within(&mut ana, id, 0, Duration::from_secs(5)).await,
        "no sync reset after changes were dropped over the limit"
    );
    // They expire after the time to live, with no message needed.
    let held_now = wait_metric(
        &server,
        "minka_held_changes",
        Duration::from_secs(10),
        |v| v == 0.0,
    )
    .await;
    assert_eq!(held_now, 0.0, "held changes expire");
    assert_eq!(
        server
            .metric("minka_held_changes_dropped_total{reason=\"expired\"}")
            .unwrap(),
        5.0
    );
    // The well-behaved path still works, and nothing held was ever applied. The expired changes'
    // sender is told to forget what it sent in the next answer it gets.
    let before = ana.received.len();
    still_syncs(&mut ana, id, &mut doc, " — sigue").await;
    assert!(
        sync_reset_within(&mut ana, id, before, Duration::ZERO).await,
        "no sync reset after held changes expired"
    );

    // Held changes of a connection that closes are dropped with it.
    let mut beto = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-ana-2")
        .await
        .unwrap();
    let mut copy = Automerge::new();
    beto.request_doc(id, &mut copy).await.unwrap();
    let (_, held, heads) = orphans(&copy, 4, 0);
    beto.send(&sync_with(
        &copy,
        id,
        "peer-ana-2",
        &server_peer,
        held,
        heads,
    ))
    .await
    .unwrap();
    assert_eq!(
        wait_metric(&server, "minka_held_changes", Duration::from_secs(5), |v| v
            == 3.0)
        .await,
        3.0
    );
    drop(beto);
    assert_eq!(
        wait_metric(
            &server,
            "minka_held_changes",
            Duration::from_secs(10),
            |v| v == 0.0
        )
        .await,
        0.0,
        "a closed connection's held changes are dropped"
    );
    assert_eq!(
        server
            .metric("minka_held_changes_dropped_total{reason=\"peer_left\"}")
            .unwrap(),
        3.0
    );
    let mut check = Automerge::new();
    let mut reader = ProtoClient::connect(&server.ws_url(&comas_leader("u-carla")), "peer-c")
        .await
        .unwrap();
    reader.request_doc(id, &mut check).await.unwrap();
    assert_eq!(
        check.get_heads(),
        doc.get_heads(),
        "nothing held was applied"
    );
}

#[tokio::test]
async fn held_bytes_are_bounded_per_connection_over_all_its_documents() {
    let server = TestServer::start_with(&["--max-held-bytes", "20000"]).unwrap();
    let (mut ana, id, doc) = well_behaved(&server).await;
    let server_peer = ana.server_peer_id.clone();
    let id2 = DocumentId::random();
    let mut doc2 = proposal(Ubigeo::COMAS, "u-ana", "Segunda", &[]);
    ana.sync_doc(id2, &mut doc2).await.unwrap();
    // About 6 KB per change: three fit in 20,000 bytes, over both documents together.
    let (_, held, heads) = orphans(&doc, 3, 6_000);
    ana.send(&sync_with(&doc, id, "peer-ana", &server_peer, held, heads))
        .await
        .unwrap();
    assert_eq!(
        wait_metric(&server, "minka_held_changes", Duration::from_secs(5), |v| v
            == 2.0)
        .await,
        2.0
    );
    let (_, held, heads) = orphans(&doc2, 3, 6_000);
    ana.send(&sync_with(
        &doc2,
        id2,
        "peer-ana",
        &server_peer,
        held,
        heads,
    ))
    .await
    .unwrap();
    let errs = errors(&mut ana, 1, Duration::from_secs(5)).await;
    assert!(
        errs.len() == 1 && errs[0].contains("this connection already holds"),
        "{errs:?}"
    );
    assert_eq!(server.metric("minka_held_changes").unwrap(), 3.0);
}

/// A change a leader may not make: setting her own proposal to `prioritized`, from a new actor.
fn forbidden(doc: &Automerge, t: i64) -> Vec<u8> {
    let mut f = doc.fork().with_actor(ActorId::random());
    apply_edits(
        &mut f,
        &[Edit::SetProposalStatus(ProposalStatus::Prioritized)],
        "priorizar",
        t,
    )
    .unwrap();
    f.get_changes(&doc.get_heads())[0].raw_bytes().to_vec()
}

#[tokio::test]
async fn refused_changes_kept_per_user_are_bounded() {
    let server = TestServer::start_with(&["--max-quarantine-per-user", "3"]).unwrap();
    let (mut ana, id, mut doc) = well_behaved(&server).await;
    let server_peer = ana.server_peer_id.clone();
    let bad: Vec<Vec<u8>> = (0..5).map(|i| forbidden(&doc, 1_790_000_200 + i)).collect();
    let heads = doc.get_heads();
    ana.send(&sync_with(&doc, id, "peer-ana", &server_peer, bad, heads))
        .await
        .unwrap();
    let errs = errors(&mut ana, 2, Duration::from_secs(5)).await;
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("rejected") && e.contains("(and 2 more)")),
        "three are quarantined: {errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("refused and not kept (and 1 more)")
                && e.contains("already has 3 refused changes")),
        "two are refused without being kept: {errs:?}"
    );
    assert_eq!(server.metric("minka_changes_rejected_total").unwrap(), 3.0);
    assert_eq!(
        server.metric("minka_changes_unrecorded_total").unwrap(),
        2.0
    );
    // The quarantine holds three entries for her.
    let reviewer = token("u-rev", &["vigilancia"], "150110");
    let (status, body) = server
        .http_get("/api/v1/quarantine?district=150110", Some(&reviewer))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let q: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(q["total"], 3, "{body}");
    // Her allowed edits still land.
    still_syncs(&mut ana, id, &mut doc, " — permitido").await;
}

#[tokio::test]
async fn ten_thousand_requests_on_one_connection_are_bounded() {
    let server = TestServer::start_with(&[
        "--max-waiting-docs",
        "1000",
        "--max-docs-per-connection",
        "2000",
        "--max-loaded-docs",
        "100",
        "--sync-per-second",
        "5000",
    ])
    .unwrap();
    let (mut ana, id, mut doc) = well_behaved(&server).await;
    let mut flood = ProtoClient::connect(&server.ws_url(&comas_leader("u-flood")), "peer-flood")
        .await
        .unwrap();
    let server_peer = flood.server_peer_id.clone();
    let empty = Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap()
        .encode();
    for _ in 0..10_000 {
        flood
            .send(&Message::Request(RequestMessage {
                sender_id: "peer-flood".into(),
                target_id: server_peer.clone(),
                document_id: DocumentId::random().to_string(),
                data: empty.clone(),
            }))
            .await
            .unwrap();
    }
    let took = acked_within(
        &mut ana,
        id,
        &mut doc,
        " — durante la avalancha",
        Duration::from_secs(60),
    )
    .await;
    eprintln!("acknowledged during the flood after {took:?}");
    // The connection tracks at most 2,000 documents and waits on at most 1,000.
    let refused = wait_metric(
        &server,
        "minka_documents_refused_total",
        Duration::from_secs(60),
        |v| v == 8_000.0,
    )
    .await;
    assert_eq!(refused, 8_000.0);
    let waiting = wait_metric(
        &server,
        "minka_waiting_peers",
        Duration::from_secs(60),
        |v| v == 1_000.0,
    )
    .await;
    assert_eq!(waiting, 1_000.0);
    // Evicted tasks finish their last batch and go: the loaded set settles within the limit.
    let loaded = wait_metric(
        &server,
        "minka_loaded_documents",
        Duration::from_secs(30),
        |v| v <= 100.0,
    )
    .await;
    assert!(loaded <= 100.0, "loaded documents stay bounded: {loaded}");
    drop(flood);
    assert_eq!(
        wait_metric(
            &server,
            "minka_waiting_peers",
            Duration::from_secs(10),
            |v| v == 0.0
        )
        .await,
        0.0,
        "a closed connection waits on nothing"
    );
    still_syncs(&mut ana, id, &mut doc, " — después").await;
    let (status, _) = server.http_get("/healthz", None).unwrap();
    assert_eq!(status, 200);
}

/// Connects as `u-flood`, sends `n` `request`s for random ids and waits until every one is
/// answered (`doc-unavailable`), then closes the connection.
async fn requests_answered(server: &TestServer, n: usize) {
    let mut flood = ProtoClient::connect(&server.ws_url(&comas_leader("u-flood")), "peer-flood")
        .await
        .unwrap();
    let server_peer = flood.server_peer_id.clone();
    let empty = Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap()
        .encode();
    for _ in 0..n {
        flood
            .send(&Message::Request(RequestMessage {
                sender_id: "peer-flood".into(),
                target_id: server_peer.clone(),
                document_id: DocumentId::random().to_string(),
                data: empty.clone(),
            }))
            .await
            .unwrap();
    }
    // Every request is answered: paced, none dropped.
    let mut answered = 0;
    while answered < n {
        match flood.next(Duration::from_secs(10)).await.unwrap() {
            Some(Event::Message(Message::DocUnavailable(_))) => answered += 1,
            Some(Event::Closed(r)) => panic!("closed: {r:?}"),
            Some(_) => {}
            None => panic!("only {answered} of {n} requests answered"),
        }
    }
}

#[tokio::test]
async fn sync_messages_over_the_budget_are_paced_not_dropped() {
    const SENT: usize = 400;
    let server =
        TestServer::start_with(&["--sync-per-second", "200", "--sync-burst", "50"]).unwrap();
    let (mut ana, id, mut doc) = well_behaved(&server).await;
    let started = Instant::now();
    requests_answered(&server, SENT).await;
    let took = started.elapsed().as_secs_f64();
    // 50 at once, then 200 a second: the server cannot have read them all sooner.
    let least = (SENT - 50) as f64 / 200.0;
    assert!(
        took >= least * 0.95,
        "{SENT} requests answered in {took:.2}s; the budget allows no less than {least:.2}s"
    );
    assert!(server.metric("minka_sync_throttled_total").unwrap() >= 1.0);
    still_syncs(&mut ana, id, &mut doc, " — a su ritmo").await;
}

#[tokio::test]
async fn reconnecting_does_not_renew_a_users_sync_budget() {
    // Each connection stays under the burst; together they are far over it. A client that
    // reconnected after every burst once got a fresh one each time (the held-changes flood).
    const CONNECTIONS: usize = 8;
    const PER_CONNECTION: usize = 40;
    let server =
        TestServer::start_with(&["--sync-per-second", "100", "--sync-burst", "50"]).unwrap();
    let started = Instant::now();
    for _ in 0..CONNECTIONS {
        requests_answered(&server, PER_CONNECTION).await;
    }
    let took = started.elapsed().as_secs_f64();
    let least = (CONNECTIONS * PER_CONNECTION - 50) as f64 / 100.0;
    assert!(
        took >= least * 0.95,
        "{} requests over {CONNECTIONS} connections answered in {took:.2}s; the user's budget allows no less than {least:.2}s",
        CONNECTIONS * PER_CONNECTION
    );
    assert!(server.metric("minka_sync_throttled_total").unwrap() >= 1.0);
}

#[tokio::test]
async fn downloading_a_document_again_and_again_is_paced_by_what_it_costs_to_send() {
    // A `sync` from nothing is cheap to send and answered with the whole document: the reply's
    // bytes count against the asker's budget, and a new connection of a user in debt is not read
    // until the debt is paid (a reconnecting reader once got a full copy per connection).
    const RATE: f64 = 5.0;
    let server = TestServer::start_with(&["--sync-per-second", "5", "--sync-burst", "10"]).unwrap();
    let (_ana, id, doc) = {
        let mut c = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-ana")
            .await
            .unwrap();
        let id = DocumentId::random();
        let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Losa deportiva", &[]);
        // Text that does not compress: what is sent is about what is stored.
        let text: String = (0..15 * 1024)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        append_description(&mut doc, &text);
        // Ana's own upload costs her budget too: a debug build judging it may be quiet for a
        // while, so sync until the server has it.
        for _ in 0..10 {
            c.sync_doc_within(id, &mut doc, Duration::from_secs(30))
                .await
                .unwrap();
            if c.server_heads(id) == Some(doc.get_heads()) {
                break;
            }
        }
        assert_eq!(c.server_heads(id), Some(doc.get_heads()));
        (c, id, doc)
    };
    const DOWNLOADS: usize = 3;
    let started = Instant::now();
    let mut waits = Vec::new();
    let mut least = 0.0;
    let mut last_done = started;
    for i in 0..DOWNLOADS {
        let mut reader = ProtoClient::connect_within(
            &server.ws_url(&comas_leader("u-lector")),
            &format!("peer-lector-{i}"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let mut copy = Automerge::new();
        reader
            .request_doc_within(id, &mut copy, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(copy.get_heads(), doc.get_heads(), "download {i} incomplete");
        waits.push(last_done.elapsed().as_secs_f64());
        last_done = Instant::now();
        // What this download cost: a unit per message sent, a unit per KiB received. All but
        // the last are waited out by the next connection, less what the burst covers.
        let units = reader.bytes_in as f64 / 1024.0;
        if i + 1 < DOWNLOADS {
            least += units / RATE;
        }
    }
    let took = started.elapsed().as_secs_f64();
    least -= 10.0 / RATE;
    assert!(
        took >= least * 0.9,
        "{DOWNLOADS} downloads took {took:.2}s ({waits:.2?} each); the budget allows no less than {least:.2}s"
    );
    assert!(server.metric("minka_sync_throttled_total").unwrap() >= (DOWNLOADS - 1) as f64);
    println!("{DOWNLOADS} downloads took {took:.2}s ({waits:.2?} each; at least {least:.2}s)");
}
