//! The sync server over real sockets: handshake, convergence, durability across SIGKILL, the
//! district index, read scoping, ephemeral relay, peer replacement, auth before upgrade, HTTP.

mod common;

use std::time::Duration;

use automerge::Automerge;
use common::{append_description, proposal};
use crdt_core::schema::{Index, Proposal};
use crdt_core::wire::{EphemeralMessage, Message};
use crdt_core::{DocumentId, Ubigeo};
use minka_tests::harness::{token, token_with, Event, ProtoClient, TestServer, TEST_SECRET};

fn comas_leader(sub: &str) -> String {
    token(sub, &["leader"], "150110")
}

#[tokio::test]
async fn two_clients_converge_through_the_server() {
    let server = TestServer::start().unwrap();
    let id = DocumentId::random();
    let mut a_doc = proposal(Ubigeo::COMAS, "u-ana", "Veredas en Collique", &["u-beto"]);
    let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
        .await
        .unwrap();
    a.sync_doc(id, &mut a_doc).await.unwrap();

    let mut b = ProtoClient::connect(&server.ws_url(&comas_leader("u-beto")), "peer-b")
        .await
        .unwrap();
    let mut b_doc = Automerge::new();
    b.request_doc(id, &mut b_doc).await.unwrap();
    assert_eq!(b_doc.get_heads(), a_doc.get_heads());

    // Concurrent offline edits on both sides, then sync both.
    append_description(&mut a_doc, " — tramo A");
    append_description(&mut b_doc, " — tramo B");
    a.sync_doc(id, &mut a_doc).await.unwrap();
    b.sync_doc(id, &mut b_doc).await.unwrap();
    // A hears about B's change from the server push.
    a.sync_doc(id, &mut a_doc).await.unwrap();
    assert_eq!(a_doc.get_heads(), b_doc.get_heads());
    let p = Proposal::read(&a_doc).unwrap();
    assert!(p.description.contains("tramo A") && p.description.contains("tramo B"));
}

#[tokio::test]
async fn acknowledged_changes_survive_sigkill() {
    let mut server = TestServer::start().unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Parque en Collique", &[]);
    {
        let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
            .await
            .unwrap();
        for i in 0..20 {
            append_description(&mut doc, &format!(" edición {i}"));
        }
        a.sync_doc(id, &mut doc).await.unwrap();
        // The server's reply shows our heads: the acknowledgement, sent only once durable.
        assert_eq!(a.server_heads(id), Some(doc.get_heads()));
    }
    server.kill9();
    server.restart().unwrap();
    let mut fresh = Automerge::new();
    let mut c = ProtoClient::connect(&server.ws_url(&comas_leader("u-carla")), "peer-c")
        .await
        .unwrap();
    c.request_doc(id, &mut fresh).await.unwrap();
    assert_eq!(fresh.get_heads(), doc.get_heads());
    // The store is locked while the server runs: the offline tool says so instead of racing it.
    let (ok, out) = server.tool(&["check"]).unwrap();
    assert!(!ok && out.contains("lock"), "{out}");
    assert!(server.terminate());
    let (ok, out) = server.tool(&["check"]).unwrap();
    assert!(ok && out.contains("store OK"), "{out}");
}

#[tokio::test]
async fn new_documents_are_listed_in_the_district_index() {
    let server = TestServer::start().unwrap();
    let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
        .await
        .unwrap();
    let ids: Vec<DocumentId> = (0..3).map(|_| DocumentId::random()).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut d = proposal(Ubigeo::COMAS, "u-ana", &format!("Propuesta {i}"), &[]);
        a.sync_doc(*id, &mut d).await.unwrap();
    }
    let index_id = DocumentId::index_for(Ubigeo::COMAS, 2027);
    let mut b = ProtoClient::connect(&server.ws_url(&comas_leader("u-beto")), "peer-b")
        .await
        .unwrap();
    // The index is written asynchronously after each creation; poll briefly.
    let mut listed = Vec::new();
    for _ in 0..50 {
        let mut index = Automerge::new();
        b.reset(index_id);
        b.request_doc(index_id, &mut index).await.unwrap();
        if let Ok(ix) = Index::read(&index) {
            listed = ix.docs.keys().copied().collect::<Vec<_>>();
            if ids.iter().all(|i| listed.contains(i)) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        assert!(listed.contains(id), "{id} missing from index {listed:?}");
    }
}

#[tokio::test]
async fn other_district_reads_get_doc_unavailable_and_unknown_docs_too() {
    let server = TestServer::start().unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Losa deportiva", &[]);
    let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
        .await
        .unwrap();
    a.sync_doc(id, &mut doc).await.unwrap();

    let sjm = token("u-sjm", &["leader"], "150133");
    let mut s = ProtoClient::connect(&server.ws_url(&sjm), "peer-sjm")
        .await
        .unwrap();
    let mut empty = Automerge::new();
    let events = s.request_doc(id, &mut empty).await.unwrap();
    assert!(
        events.iter().any(|e| matches!(e, Event::Message(Message::DocUnavailable(d)) if d.document_id == id.to_string())),
        "{events:?}"
    );
    assert!(
        empty.get_heads().is_empty(),
        "nothing of the Comas document may leak"
    );

    let unknown = DocumentId::random();
    let events = a.request_doc(unknown, &mut Automerge::new()).await.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Message(Message::DocUnavailable(_)))));

    // A province-wide reviewer reads it.
    let star = token("u-mml", &["vigilancia"], "*");
    let mut r = ProtoClient::connect(&server.ws_url(&star), "peer-star")
        .await
        .unwrap();
    let mut got = Automerge::new();
    r.request_doc(id, &mut got).await.unwrap();
    assert_eq!(got.get_heads(), doc.get_heads());
}

#[tokio::test]
async fn ephemeral_messages_reach_the_other_peer() {
    let server = TestServer::start().unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Alumbrado", &[]);
    let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
        .await
        .unwrap();
    a.sync_doc(id, &mut doc).await.unwrap();
    let mut b = ProtoClient::connect(&server.ws_url(&comas_leader("u-beto")), "peer-b")
        .await
        .unwrap();
    let mut b_doc = Automerge::new();
    b.request_doc(id, &mut b_doc).await.unwrap();

    a.send(&Message::Ephemeral(EphemeralMessage {
        sender_id: "peer-a".into(),
        target_id: a.server_peer_id.clone(),
        document_id: id.to_string(),
        session_id: "s1".into(),
        count: 1,
        data: b"cursor:12".to_vec(),
    }))
    .await
    .unwrap();
    let mut got = None;
    while let Some(ev) = b.next(Duration::from_secs(5)).await.unwrap() {
        if let Event::Message(Message::Ephemeral(e)) = ev {
            got = Some(e);
            break;
        }
    }
    let e = got.expect("ephemeral message relayed");
    assert_eq!(e.data, b"cursor:12");
    assert_eq!(e.sender_id, "peer-a");
    assert_eq!(e.target_id, "peer-b");
}

#[tokio::test]
async fn second_join_with_same_peer_id_replaces_old_socket() {
    let server = TestServer::start().unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Muro de contención", &[]);
    let url = server.ws_url(&comas_leader("u-ana"));
    let mut old = ProtoClient::connect(&url, "phone-1").await.unwrap();
    old.sync_doc(id, &mut doc).await.unwrap();
    let mut new = ProtoClient::connect(&url, "phone-1").await.unwrap();
    // The old socket is closed by the server.
    let mut closed = false;
    while let Some(ev) = old.next(Duration::from_secs(5)).await.unwrap() {
        if let Event::Closed(_) = ev {
            closed = true;
            break;
        }
    }
    assert!(closed, "old connection must be closed");
    // The new one syncs normally and then goes quiet: no sync loop.
    let mut copy = Automerge::new();
    new.request_doc(id, &mut copy).await.unwrap();
    assert_eq!(copy.get_heads(), doc.get_heads());
    let before = new.received.len();
    assert!(new
        .next(Duration::from_millis(800))
        .await
        .unwrap()
        .is_none());
    assert_eq!(new.received.len(), before);
}

#[tokio::test]
async fn websocket_upgrade_needs_a_valid_token() {
    let server = TestServer::start().unwrap();
    let url = format!("ws://{}/sync", server.addr);
    let status = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    };
    assert_eq!(status(tokio_tungstenite::connect_async(&url).await), 401);
    let expired = token_with("u-x", &["leader"], "150110", 1_000, TEST_SECRET);
    assert_eq!(
        status(tokio_tungstenite::connect_async(format!("{url}?token={expired}")).await),
        401
    );
    let foreign = token_with(
        "u-x",
        &["leader"],
        "150110",
        u64::MAX / 2,
        "another-secret-entirely",
    );
    assert_eq!(
        status(tokio_tungstenite::connect_async(format!("{url}?token={foreign}")).await),
        401
    );
    assert_eq!(
        status(tokio_tungstenite::connect_async(format!("{url}?token=garbage")).await),
        401
    );
    // alg: none (unsigned), and a correctly signed token missing claims.
    let b64 = |b: &[u8]| {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    let claims = format!(
        r#"{{"sub":"u-x","name":"x","roles":["admin"],"district":"*","iat":1,"exp":{}}}"#,
        u64::MAX / 4
    );
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.as_bytes())
    );
    assert_eq!(
        status(tokio_tungstenite::connect_async(format!("{url}?token={none}")).await),
        401
    );
    let missing = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "u-x", "exp": u64::MAX / 4, "iat": 1}),
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        status(tokio_tungstenite::connect_async(format!("{url}?token={missing}")).await),
        401
    );
    let (code, _) = server.http_get("/metrics", Some(&none)).unwrap();
    assert_eq!(code, 401);
    let good = comas_leader("u-ana");
    assert_eq!(
        status(tokio_tungstenite::connect_async(format!("{url}?token={good}")).await),
        101
    );
    assert!(!server.log().contains(&good), "tokens must never be logged");
}

#[tokio::test]
async fn healthz_and_metrics_for_admins_only() {
    let server = TestServer::start().unwrap();
    let (status, _) = server.http_get("/healthz", None).unwrap();
    assert_eq!(status, 200);
    let (status, _) = server.http_get("/metrics", None).unwrap();
    assert_eq!(status, 401);
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Módulo de seguridad", &[]);
    let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
        .await
        .unwrap();
    a.sync_doc(id, &mut doc).await.unwrap();
    // Metrics reveal activity across districts: a district's leader (or reviewer) may not read them.
    for t in [
        comas_leader("u-ana"),
        token("u-vig", &["vigilancia", "tecnico"], "150110"),
        token("u-vig-all", &["vigilancia"], "*"),
    ] {
        let (status, body) = server.http_get("/metrics", Some(&t)).unwrap();
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("admin"), "{body}");
    }
    let (status, body) = server
        .http_get("/metrics", Some(&token("u-admin", &["admin"], "*")))
        .unwrap();
    assert_eq!(status, 200);
    for name in [
        "minka_connections 1",
        "minka_changes_applied_total",
        "minka_fsync_seconds_bucket",
        "minka_batch_seconds_count",
        "minka_bytes_in_total",
        "minka_loaded_documents",
    ] {
        assert!(body.contains(name), "{name} missing in\n{body}");
    }
    let applied: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("minka_changes_applied_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(applied >= 1);
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let mut server = TestServer::start().unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::ATE, "u-ana", "Agua para Huaycán", &[]);
    let mut a = ProtoClient::connect(
        &server.ws_url(&token("u-ana", &["leader"], "150103")),
        "peer-a",
    )
    .await
    .unwrap();
    a.sync_doc(id, &mut doc).await.unwrap();
    assert!(
        server.terminate(),
        "minka must exit 0 on SIGTERM; log:\n{}",
        server.log()
    );
    assert!(server.log().contains("shutdown complete"));
    let (ok, out) = server.tool(&["check"]).unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("store OK"));
}

#[tokio::test]
async fn silent_peers_are_dropped_by_the_heartbeat() {
    let server = TestServer::start_with(&["--heartbeat-secs", "1"]).unwrap();
    let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
        .await
        .unwrap();
    // Not reading means not answering the server's pings (tungstenite answers while reading).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut closed = false;
    while let Some(ev) = a.next(Duration::from_secs(3)).await.unwrap() {
        if let Event::Closed(_) = ev {
            closed = true;
            break;
        }
    }
    assert!(closed, "a peer that never answers pings is disconnected");
    assert_eq!(server.metric("minka_connections").unwrap(), 0.0);
}

#[tokio::test]
async fn incrementals_are_compacted_into_a_snapshot_and_survive_restart() {
    let mut server = TestServer::start().unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Biblioteca comunal", &[]);
    let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
        .await
        .unwrap();
    a.sync_doc(id, &mut doc).await.unwrap();
    for i in 0..40 {
        append_description(
            &mut doc,
            &format!(" párrafo {i} con más detalle del proyecto"),
        );
        a.sync_doc(id, &mut doc).await.unwrap();
    }
    assert!(server.metric("minka_compactions_total").unwrap() >= 1.0);
    assert!(server.terminate());
    let (ok, out) = server.tool(&["check"]).unwrap();
    assert!(ok, "{out}");
    server.restart().unwrap();
    let mut fresh = Automerge::new();
    let mut c = ProtoClient::connect(&server.ws_url(&comas_leader("u-beto")), "peer-b")
        .await
        .unwrap();
    c.request_doc(id, &mut fresh).await.unwrap();
    assert_eq!(fresh.get_heads(), doc.get_heads());
}

/// A phone that sends a change without its parent (its bloom filter wrongly said the server had
/// it) must be asked for the parent, and the change must land once the parent arrives: not be
/// dropped (the phone never re-sends a hash it has sent, so dropping it loops forever).
#[tokio::test]
async fn a_change_sent_without_its_parent_is_held_and_the_parent_requested() {
    use automerge::sync::{self, SyncDoc};
    use automerge::ReadDoc;
    let server = TestServer::start().unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Cancha de fulbito", &[]);
    let mut a = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-a")
        .await
        .unwrap();
    a.sync_doc(id, &mut doc).await.unwrap();
    append_description(&mut doc, " — primera etapa");
    let w = doc.get_heads()[0];
    append_description(&mut doc, " — segunda etapa");
    let y = doc.get_heads()[0];
    let change = |h| doc.get_change_by_hash(&h).unwrap().raw_bytes().to_vec();
    let server_peer = a.server_peer_id.clone();
    let send = |changes: Vec<Vec<u8>>, heads: Vec<automerge::ChangeHash>| {
        let mut msg = doc
            .clone()
            .generate_sync_message(&mut sync::State::new())
            .unwrap();
        msg.heads = heads;
        msg.changes = changes.into();
        Message::Sync(crdt_core::wire::SyncMessage {
            sender_id: "peer-a".into(),
            target_id: server_peer.clone(),
            document_id: id.to_string(),
            data: msg.encode(),
        })
    };
    // Only Y, whose parent W the server lacks.
    a.send(&send(vec![change(y)], vec![y])).await.unwrap();
    let mut asked_for_w = false;
    while let Some(ev) = a.next(Duration::from_secs(3)).await.unwrap() {
        if let Event::Message(Message::Sync(s)) = ev {
            let m = sync::Message::decode(&s.data).unwrap();
            assert!(!m.heads.contains(&y), "Y cannot be applied without W");
            if m.need.contains(&w) {
                asked_for_w = true;
                break;
            }
        }
    }
    assert!(asked_for_w, "the server asks for the missing parent");
    a.send(&send(vec![change(w)], vec![y])).await.unwrap();
    let mut landed = false;
    while let Some(ev) = a.next(Duration::from_secs(3)).await.unwrap() {
        if let Event::Message(Message::Sync(s)) = ev {
            if sync::Message::decode(&s.data).unwrap().heads == vec![y] {
                landed = true;
                break;
            }
        }
    }
    assert!(landed, "Y lands once W arrives");
}
