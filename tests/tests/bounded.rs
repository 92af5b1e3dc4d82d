//! Bounded memory over real sockets: `--max-loaded-docs` keeps at most that many idle documents in
//! memory while every document stays servable, and many idle connections are accepted, counted in
//! `/metrics` and released when they close.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use automerge::{Automerge, ChangeHash};
use common::{append_description, proposal};
use crdt_core::wire::{EphemeralMessage, Message};
use crdt_core::{DocumentId, Ubigeo};
use futures_util::future::join_all;
use minka_tests::harness::{token, wait_metric, Event, ProtoClient, TestServer};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const MAX_LOADED: f64 = 5.0;

fn comas_leader(sub: &str) -> String {
    token(sub, &["leader"], "150110")
}

/// Closes a client with a WebSocket close handshake.
async fn close(mut c: ProtoClient) {
    let _ = c.send_ws(WsMessage::Close(None)).await;
    while let Ok(Some(ev)) = c.next(Duration::from_secs(5)).await {
        if matches!(ev, Event::Closed(_)) {
            break;
        }
    }
}

/// Creates 20 proposals over one connection, then disconnects; returns their heads.
async fn create_twenty(server: &TestServer) -> BTreeMap<DocumentId, Vec<ChangeHash>> {
    let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
        .await
        .unwrap();
    let mut heads = BTreeMap::new();
    for i in 0..20 {
        let id = DocumentId::random();
        let mut doc = proposal(Ubigeo::COMAS, "u-ana", &format!("Propuesta {i}"), &[]);
        append_description(&mut doc, &format!(" número {i}"));
        a.sync_doc(id, &mut doc).await.unwrap();
        assert_eq!(a.server_heads(id), Some(doc.get_heads()), "doc {i} acked");
        heads.insert(id, doc.get_heads());
    }
    close(a).await;
    heads
}

/// Fetches every document over its own short connection, checking its heads and sampling
/// `minka_loaded_documents` after each; returns the largest sample.
async fn fetch_each_alone(
    server: &TestServer,
    heads: &BTreeMap<DocumentId, Vec<ChangeHash>>,
) -> f64 {
    let mut most: f64 = 0.0;
    for (i, (id, expected)) in heads.iter().enumerate() {
        let mut c = ProtoClient::connect(
            &server.ws_url(&comas_leader("u-carla")),
            &format!("peer-c-{i}"),
        )
        .await
        .unwrap();
        let mut doc = Automerge::new();
        let events = c.request_doc(*id, &mut doc).await.unwrap();
        assert!(events.is_empty(), "{id}: {events:?}");
        assert_eq!(&doc.get_heads(), expected, "{id} served with its heads");
        close(c).await;
        // Evicted documents leave memory when their task has finished: allow a moment.
        let n = wait_metric(
            server,
            "minka_loaded_documents",
            Duration::from_secs(2),
            |v| v <= MAX_LOADED + 1.0,
        )
        .await;
        most = most.max(n);
    }
    most
}

#[tokio::test]
async fn idle_documents_beyond_max_loaded_docs_are_unloaded_and_still_served() {
    let server = TestServer::start_with(&["--max-loaded-docs", "5"]).unwrap();
    let heads = create_twenty(&server).await;

    // A document is unloaded only when no peer syncs it (its sync state lives with it), so the
    // bound applies once the writer has gone: the next load evicts the idle ones beyond the limit.
    // The count includes the district index, which the server loads to register each new document.
    let fresh = DocumentId::random();
    let mut d = ProtoClient::connect(&server.ws_url(&comas_leader("u-dora")), "peer-d")
        .await
        .unwrap();
    let events = d.request_doc(fresh, &mut Automerge::new()).await.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Message(Message::DocUnavailable(_)))));
    close(d).await;
    let n = wait_metric(
        &server,
        "minka_loaded_documents",
        Duration::from_secs(10),
        |v| v <= MAX_LOADED,
    )
    .await;
    assert!(
        n <= MAX_LOADED,
        "{n} documents loaded with --max-loaded-docs 5"
    );

    // Every document is still served, each by a connection of its own; while they come and go
    // the count stays at the limit, plus at most the one whose reader is just leaving.
    let most = fetch_each_alone(&server, &heads).await;
    assert!(
        most <= MAX_LOADED + 1.0,
        "{most} documents loaded at once with --max-loaded-docs 5"
    );
    let n = wait_metric(
        &server,
        "minka_loaded_documents",
        Duration::from_secs(10),
        |v| v <= MAX_LOADED,
    )
    .await;
    assert!(
        n <= MAX_LOADED,
        "{n} documents loaded after the readers left"
    );

    // And all of them over one connection too (they stay loaded while it syncs them).
    let mut e = ProtoClient::connect(&server.ws_url(&comas_leader("u-eva")), "peer-e")
        .await
        .unwrap();
    for (id, expected) in &heads {
        let mut doc = Automerge::new();
        e.request_doc(*id, &mut doc).await.unwrap();
        assert_eq!(&doc.get_heads(), expected);
    }
    close(e).await;
    let (status, _) = server.http_get("/healthz", None).unwrap();
    assert_eq!(status, 200);
}

/// The bound without help from a later load: once the last peer of the idle documents leaves,
/// the ones beyond `--max-loaded-docs` are unloaded promptly (not only after the idle timeout).
#[tokio::test]
async fn idle_documents_beyond_max_loaded_docs_are_unloaded_when_their_last_peer_leaves() {
    let server = TestServer::start_with(&["--max-loaded-docs", "5"]).unwrap();
    create_twenty(&server).await;
    let n = wait_metric(
        &server,
        "minka_loaded_documents",
        Duration::from_secs(5),
        |v| v <= MAX_LOADED,
    )
    .await;
    assert!(
        n <= MAX_LOADED,
        "{n} documents still loaded 5 s after the only client left"
    );
}

#[tokio::test]
async fn many_idle_connections_are_accepted_counted_and_released() {
    const N: usize = 200;
    let server = TestServer::start().unwrap();
    // One connection per user: a user may hold at most `--max-connections-per-user` (16).
    let url = |batch: usize, i: usize| server.ws_url(&comas_leader(&format!("u-idle-{batch}-{i}")));

    // A client that keeps syncing throughout.
    let mut busy = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-busy")
        .await
        .unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Mercado de Collique", &[]);
    busy.sync_doc(id, &mut doc).await.unwrap();

    let mut idle = Vec::with_capacity(N);
    for batch in 0..N / 50 {
        let connects = (0..50).map(|i| {
            let url = url(batch, i);
            async move { ProtoClient::connect(&url, &format!("peer-idle-{batch}-{i}")).await }
        });
        for c in join_all(connects).await {
            idle.push(c.unwrap());
        }
    }
    let n = wait_metric(&server, "minka_connections", Duration::from_secs(10), |v| {
        v == (N + 1) as f64
    })
    .await;
    assert_eq!(n, (N + 1) as f64, "every idle connection is counted");

    append_description(&mut doc, " — con 200 conexiones abiertas");
    busy.sync_doc(id, &mut doc).await.unwrap();
    assert_eq!(busy.server_heads(id), Some(doc.get_heads()));

    // Half close politely, half just drop the socket.
    let polite: Vec<ProtoClient> = idle.drain(..N / 2).collect();
    join_all(polite.into_iter().map(close)).await;
    drop(idle);
    let n = wait_metric(&server, "minka_connections", Duration::from_secs(10), |v| {
        v == 1.0
    })
    .await;
    assert_eq!(n, 1.0, "closed connections are released");
    assert!(server.metric("minka_connections_total").unwrap() >= (N + 1) as f64);

    append_description(&mut doc, " — después");
    busy.sync_doc(id, &mut doc).await.unwrap();
    assert_eq!(busy.server_heads(id), Some(doc.get_heads()));
    close(busy).await;
    let n = wait_metric(&server, "minka_connections", Duration::from_secs(10), |v| {
        v == 0.0
    })
    .await;
    assert_eq!(n, 0.0);
    let (status, _) = server.http_get("/healthz", None).unwrap();
    assert_eq!(status, 200);
}

/// A client that stops reading is disconnected once its send queue is full, instead of letting
/// its queue grow or its socket stall the server; the writer it stopped listening to is not slowed.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    sleeper_is_disconnected(&["--send-queue", "8"]).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_by_the_bytes_queued_for_it() {
    // A queue of at most 100,000 frames, but 4 MiB: the frames are 1 MiB each, so the bound in
    // bytes is the one that holds (before it, only the frame count did: 100,000 MiB).
    sleeper_is_disconnected(&["--send-queue", "100000", "--send-queue-bytes", "4194304"]).await;
}

/// A client that stops reading while 1 MiB messages are relayed to it is disconnected, with a
/// close it finds when it reads again, and the writer goes on.
async fn sleeper_is_disconnected(args: &[&str]) {
    let server = TestServer::start_with(args).unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Losa multiusos", &[]);
    let mut writer = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-w")
        .await
        .unwrap();
    writer.sync_doc(id, &mut doc).await.unwrap();
    let mut sleeper = ProtoClient::connect(&server.ws_url(&comas_leader("u-beto")), "peer-s")
        .await
        .unwrap();
    let mut copy = Automerge::new();
    sleeper.request_doc(id, &mut copy).await.unwrap();
    assert_eq!(copy.get_heads(), doc.get_heads());

    // The sleeper stops reading. The writer sends large `ephemeral` messages (relayed to the
    // sleeper, cheap for the server) until the server gives up on the sleeper, and keeps syncing
    // small changes in between.
    let target = writer.server_peer_id.clone();
    let mut sent_mib = 0;
    while server.metric("minka_slow_consumers_closed_total").unwrap() < 1.0 {
        assert!(sent_mib < 128, "the sleeper was never disconnected");
        for _ in 0..4 {
            sent_mib += 1;
            writer
                .send(&Message::Ephemeral(EphemeralMessage {
                    sender_id: "peer-w".into(),
                    target_id: target.clone(),
                    document_id: id.to_string(),
                    session_id: "cursor".into(),
                    count: sent_mib,
                    data: vec![b'x'; 1024 * 1024],
                }))
                .await
                .unwrap();
        }
        append_description(&mut doc, &format!(" {sent_mib}"));
        writer.sync_doc(id, &mut doc).await.unwrap();
        assert_eq!(writer.server_heads(id), Some(doc.get_heads()));
    }
    // The sleeper's connection is released on the server...
    let n = wait_metric(&server, "minka_connections", Duration::from_secs(10), |v| {
        v == 1.0
    })
    .await;
    assert_eq!(n, 1.0, "the non-reading connection must be closed");
    // ...and when it reads again it finds the end of the stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut error = None;
    loop {
        assert!(Instant::now() < deadline, "no close after {sent_mib} MiB");
        match sleeper.next(Duration::from_secs(10)).await {
            Ok(Some(Event::Closed(_))) | Err(_) => break,
            Ok(Some(Event::Message(Message::Error(e)))) => error = Some(e.message),
            Ok(Some(Event::Message(_))) => {}
            Ok(None) => panic!("the sleeper's socket is still open and silent"),
        }
    }
    if let Some(e) = error {
        assert!(e.contains("not reading"), "{e}");
    }
    // The writer goes on.
    append_description(&mut doc, " — sigue");
    writer.sync_doc(id, &mut doc).await.unwrap();
    assert_eq!(writer.server_heads(id), Some(doc.get_heads()));
}
