//! Sync correctness over real sockets against the real binary, for what a stock automerge-repo
//! client cannot provoke (the stock-client side is in `tests/js/late-docs.test.mjs` and
//! `tests/js/isolation.test.mjs`): the bound on documents a connection waits for, a peer that
//! registered before a document had a header, durability of rejections and of index registration
//! across SIGKILL, the reconnect economy, and that a default build cannot switch off write checks.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use automerge::transaction::CommitOptions;
use automerge::Automerge;
use common::{append_description, proposal};
use crdt_core::schema::Index;
use crdt_core::wire::Message;
use crdt_core::{DocumentId, Ubigeo};
use minka_tests::harness::{token, Event, ProtoClient, TestServer};

fn comas_leader(sub: &str) -> String {
    token(sub, &["leader"], "150110")
}

fn ate_leader(sub: &str) -> String {
    token(sub, &["leader"], "150103")
}

/// Uploads a new document and returns as soon as the server's acknowledgement (a sync showing our
/// heads) arrives — not a moment later, so a test can kill the server right then.
async fn upload_until_acked(
    c: &mut ProtoClient,
    id: DocumentId,
    doc: &mut Automerge,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    c.send_sync(id, doc).await?;
    while Instant::now() < deadline {
        match c.next(Duration::from_secs(5)).await? {
            Some(Event::Message(Message::Sync(s))) if s.document_id == id.to_string() => {
                c.receive_sync(id, doc, &s).await?;
                if c.server_heads(id).as_deref() == Some(&doc.get_heads()[..]) {
                    return Ok(());
                }
            }
            Some(Event::Message(Message::Error(e))) => bail!("server error: {}", e.message),
            Some(Event::Closed(why)) => bail!("closed: {why:?}"),
            Some(_) => {}
            None => bail!("no acknowledgement for {id}"),
        }
    }
    bail!("no acknowledgement for {id} in 20 s")
}

/// Waits for a message matching `pick`; other messages are skipped.
async fn wait_for<T>(
    c: &mut ProtoClient,
    limit: Duration,
    mut pick: impl FnMut(&Message) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match c.next(deadline - Instant::now()).await.ok()?? {
            Event::Message(m) => {
                if let Some(t) = pick(&m) {
                    return Some(t);
                }
            }
            Event::Closed(_) => return None,
        }
    }
    None
}

#[tokio::test]
async fn a_connection_waits_on_a_bounded_number_of_absent_documents() {
    let server = TestServer::start_with(&["--max-waiting-docs", "20"]).unwrap();
    let mut asker = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-asker")
        .await
        .unwrap();
    let ids: Vec<DocumentId> = (0..21).map(|_| DocumentId::random()).collect();
    for id in &ids[..20] {
        asker.send_request(*id).await.unwrap();
    }
    let mut unavailable = 0;
    while unavailable < 20 {
        match wait_for(&mut asker, Duration::from_secs(10), |m| match m {
            Message::DocUnavailable(_) => Some(()),
            _ => None,
        })
        .await
        {
            Some(()) => unavailable += 1,
            None => panic!("only {unavailable} of 20 doc-unavailable answers"),
        }
    }
    // The 21st is one too many: a clear error naming the document and the limit.
    asker.send_request(ids[20]).await.unwrap();
    let text = wait_for(&mut asker, Duration::from_secs(10), |m| match m {
        Message::Error(e) => Some(e.message.clone()),
        _ => None,
    })
    .await
    .expect("an error for the document beyond the limit");
    assert!(text.contains(&ids[20].to_string()), "{text}");
    assert!(text.contains("20 documents"), "{text}");
    assert_eq!(server.metric("minka_waiting_peers").unwrap(), 20.0);

    // The connection still works and still waits on the first 20: one of them appears.
    let mut author = ProtoClient::connect(&server.ws_url(&comas_leader("u-beto")), "peer-author")
        .await
        .unwrap();
    let mut doc = proposal(Ubigeo::COMAS, "u-beto", "Losa deportiva", &[]);
    author.sync_doc(ids[3], &mut doc).await.unwrap();
    let got = wait_for(&mut asker, Duration::from_secs(10), |m| match m {
        Message::Sync(s) if s.document_id == ids[3].to_string() => Some(s.clone()),
        _ => None,
    })
    .await
    .expect("the waiting connection receives the document when it appears");
    let mut copy = Automerge::new();
    asker.receive_sync(ids[3], &mut copy, &got).await.unwrap();
    let events = asker.sync_doc(ids[3], &mut copy).await.unwrap();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(copy.get_heads(), doc.get_heads());

    // Closing the connection releases its waits.
    drop(asker);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("minka_waiting_peers").unwrap() != 0.0 {
        assert!(Instant::now() < deadline, "waits not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_peer_registered_before_the_header_is_judged_again_when_it_appears() {
    let server = TestServer::start().unwrap();
    let id = DocumentId::random();
    // The author's phone sends automerge-repo's empty first change before any content.
    let mut doc = Automerge::new();
    doc.empty_commit(CommitOptions::default().with_time(1_790_000_000));
    let mut author = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-ana")
        .await
        .unwrap();
    author.sync_doc(id, &mut doc).await.unwrap();

    // Two phones subscribe while the document has no header: one of Ate, one of Comas.
    let mut ate = ProtoClient::connect(&server.ws_url(&ate_leader("u-ate")), "peer-ate")
        .await
        .unwrap();
    let mut comas = ProtoClient::connect(&server.ws_url(&comas_leader("u-carla")), "peer-carla")
        .await
        .unwrap();
    let mut ate_copy = Automerge::new();
    let mut comas_copy = Automerge::new();
    ate.request_doc(id, &mut ate_copy).await.unwrap();
    comas.request_doc(id, &mut comas_copy).await.unwrap();

    // Now the author writes the header and content (a Comas proposal).
    let mut content = proposal(Ubigeo::COMAS, "u-ana", "Parque en Collique", &[]);
    doc.merge(&mut content).unwrap();
    author.sync_doc(id, &mut doc).await.unwrap();

    // Comas gets it; Ate gets doc-unavailable and no content, now or after later edits.
    comas.sync_doc(id, &mut comas_copy).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while comas_copy.get_heads() != doc.get_heads() {
        assert!(
            Instant::now() < deadline,
            "the Comas phone never got the content"
        );
        if let Some(Event::Message(Message::Sync(s))) =
            comas.next(Duration::from_millis(500)).await.unwrap()
        {
            comas.receive_sync(id, &mut comas_copy, &s).await.unwrap();
        }
    }
    append_description(&mut doc, " Con bancas.");
    author.sync_doc(id, &mut doc).await.unwrap();
    let mut saw_unavailable = false;
    while let Some(ev) = ate.next(Duration::from_secs(2)).await.unwrap() {
        match ev {
            Event::Message(Message::DocUnavailable(d)) if d.document_id == id.to_string() => {
                saw_unavailable = true
            }
            Event::Message(Message::Sync(s)) if s.document_id == id.to_string() => {
                let mut probe = ate_copy.clone();
                ate.receive_sync(id, &mut probe, &s).await.unwrap();
                assert!(
                    crdt_core::schema::DocumentHeader::read(&probe).is_err(),
                    "the Ate phone received the Comas proposal's content"
                );
            }
            _ => {}
        }
    }
    assert!(
        saw_unavailable,
        "the Ate phone was not told doc-unavailable"
    );
    assert!(crdt_core::schema::DocumentHeader::read(&ate_copy).is_err());
}

#[tokio::test]
async fn a_rejection_is_durable_before_it_is_announced() {
    let mut server = TestServer::start().unwrap();
    let mut hashes = Vec::new();
    for round in 0..4 {
        let mut c = ProtoClient::connect(
            &server.ws_url(&comas_leader("u-ana")),
            &format!("peer-{round}"),
        )
        .await
        .unwrap();
        // A Comas leader creates a proposal in Ate: forbidden.
        let id = DocumentId::random();
        let mut doc = proposal(Ubigeo::ATE, "u-ana", "Fuera de mi distrito", &[]);
        hashes.push(doc.get_heads()[0].to_string());
        c.send_sync(id, &doc).await.unwrap();
        let mut announced = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !announced && Instant::now() < deadline {
            match c.next(Duration::from_secs(5)).await.unwrap() {
                Some(Event::Message(Message::Sync(s))) => {
                    c.receive_sync(id, &mut doc, &s).await.unwrap()
                }
                Some(Event::Message(Message::Error(e))) => {
                    assert!(e.message.contains("rejected"), "{}", e.message);
                    announced = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(announced, "no rejection announced");
        // The instant it is announced, the server dies.
        server.kill9();
        server.restart().unwrap();
    }
    let (status, body) = server
        .http_get("/api/v1/quarantine", Some(&comas_leader("u-ana")))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    for h in &hashes {
        assert!(
            body.contains(h.as_str()),
            "rejected change {h} lost: {body}"
        );
    }
}

#[tokio::test]
async fn a_stored_document_is_in_its_index_after_sigkill() {
    let mut server = TestServer::start().unwrap();
    let mut ids = Vec::new();
    for round in 0..4 {
        let mut c = ProtoClient::connect(
            &server.ws_url(&comas_leader("u-ana")),
            &format!("peer-{round}"),
        )
        .await
        .unwrap();
        let id = DocumentId::random();
        let mut doc = proposal(Ubigeo::COMAS, "u-ana", &format!("Propuesta {round}"), &[]);
        upload_until_acked(&mut c, id, &mut doc).await.unwrap();
        // Killed right at the acknowledgement: the index entry is a separate write.
        server.kill9();
        ids.push(id);
        let (ok, report) = server.tool(&["check"]).unwrap();
        assert!(ok, "minka check after SIGKILL:\n{report}");
        server.restart().unwrap();
    }
    let mut reader = ProtoClient::connect(&server.ws_url(&comas_leader("u-carla")), "peer-reader")
        .await
        .unwrap();
    let index_id = DocumentId::index_for(Ubigeo::COMAS, 2027);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut index = Automerge::new();
        reader.reset(index_id);
        reader.request_doc(index_id, &mut index).await.unwrap();
        let listed = Index::read(&index).map(|i| i.docs).unwrap_or_default();
        if ids.iter().all(|id| listed.contains_key(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "index lists {:?}, expected all of {ids:?}",
            listed.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        reader = ProtoClient::connect(&server.ws_url(&comas_leader("u-carla")), "peer-reader")
            .await
            .unwrap();
    }
    // Listed durably: the markers are gone and a clean check finds nothing pending.
    let mut server = server;
    assert!(server.terminate());
    let (ok, report) = server.tool(&["check"]).unwrap();
    assert!(ok, "{report}");
    assert!(!report.contains("waiting to be listed"), "{report}");
}

#[tokio::test]
async fn a_reconnect_that_agrees_costs_one_message_per_document() {
    let server = TestServer::start().unwrap();
    let url = server.ws_url(&comas_leader("u-ana"));
    let mut first = ProtoClient::connect(&url, "peer-phone").await.unwrap();
    let ids: Vec<DocumentId> = (0..5).map(|_| DocumentId::random()).collect();
    let mut docs: Vec<Automerge> = (0..5)
        .map(|i| proposal(Ubigeo::COMAS, "u-ana", &format!("P{i}"), &[]))
        .collect();
    for (id, doc) in ids.iter().zip(docs.iter_mut()) {
        first.sync_doc(*id, doc).await.unwrap();
    }
    let states = first.export_states();
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The same phone comes back with nothing new: one sync per document, and no answer.
    let mut phone = ProtoClient::connect(&url, "peer-phone").await.unwrap();
    phone.import_states(&states).unwrap();
    for (id, doc) in ids.iter().zip(docs.iter()) {
        assert!(phone.send_sync(*id, doc).await.unwrap());
    }
    let mut answers = 0;
    while let Some(ev) = phone.next(Duration::from_millis(1500)).await.unwrap() {
        if let Event::Message(Message::Sync(_)) = ev {
            answers += 1;
        }
    }
    assert_eq!(
        answers, 0,
        "the server answered a reconnect that showed agreement"
    );

    // The silent session still carries new changes both ways.
    let mut other = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-laptop")
        .await
        .unwrap();
    let mut laptop_copy = docs[2].fork();
    append_description(&mut laptop_copy, " Segunda etapa.");
    other.sync_doc(ids[2], &mut laptop_copy).await.unwrap();
    let s = wait_for(&mut phone, Duration::from_secs(10), |m| match m {
        Message::Sync(s) if s.document_id == ids[2].to_string() => Some(s.clone()),
        _ => None,
    })
    .await
    .expect("the phone hears of the laptop's edit");
    phone.receive_sync(ids[2], &mut docs[2], &s).await.unwrap();
    phone.sync_doc(ids[2], &mut docs[2]).await.unwrap();
    assert_eq!(docs[2].get_heads(), laptop_copy.get_heads());
    append_description(&mut docs[4], " Con iluminación.");
    phone.sync_doc(ids[4], &mut docs[4]).await.unwrap();
    assert_eq!(phone.server_heads(ids[4]).unwrap(), docs[4].get_heads());
}

#[tokio::test]
async fn a_default_build_cannot_switch_off_write_checks() {
    // The flag does not exist outside benchmark builds...
    let out = std::process::Command::new(minka_tests::harness::minka_bin())
        .args([
            "serve",
            "--unsafe-skip-write-checks",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsafe-skip-write-checks"), "{err}");

    // ...and its environment variable changes nothing: a forbidden change is still rejected.
    std::env::set_var("MINKA_UNSAFE_SKIP_WRITE_CHECKS", "true");
    let server = TestServer::start();
    std::env::remove_var("MINKA_UNSAFE_SKIP_WRITE_CHECKS");
    let server = server.unwrap();
    let mut c = ProtoClient::connect(&server.ws_url(&comas_leader("u-ana")), "peer-x")
        .await
        .unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::ATE, "u-ana", "Fuera de mi distrito", &[]);
    let events = c.sync_doc(id, &mut doc).await.unwrap();
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Message(Message::Error(m)) if m.message.contains("rejected"))
        ),
        "{events:?}"
    );
}

#[tokio::test]
async fn the_server_writes_a_district_list_only_into_that_districts_index() {
    // A store from before index ids were reserved: a Comas proposal planted at Ate's 2027 index id.
    let mut server = TestServer::unstarted(&[]).unwrap();
    let planted_id = DocumentId::index_for(Ubigeo::ATE, 2027);
    let planted = proposal(Ubigeo::COMAS, "u-mallory", "Plantada", &[]);
    let planted_heads = planted.get_heads();
    {
        let store = minka_server::store::SledStore::open(&server.data_dir).unwrap();
        minka_server::tools::write_documents(&store, [(planted_id, planted)]).unwrap();
    }
    server.restart().unwrap();
    // An Ate leader creates a proposal: the server must not list it in the planted document.
    let mut ate = ProtoClient::connect(&server.ws_url(&ate_leader("u-ate")), "peer-ate")
        .await
        .unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::ATE, "u-ate", "Parque en Ate", &[]);
    upload_until_acked(&mut ate, id, &mut doc).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.terminate());
    let store = minka_server::store::SledStore::open(&server.data_dir).unwrap();
    let chunks = minka_server::store::DocStore::load(&store, &planted_id).unwrap();
    let stored = minka_server::store::assemble(&planted_id, &chunks).unwrap();
    assert_eq!(
        stored.get_heads(),
        planted_heads,
        "the server wrote into the planted document"
    );
    assert!(
        server.log().contains("not the server's index"),
        "{}",
        server.log()
    );
    // `minka check` points at the planted document; the Ate proposal stays marked for listing.
    drop(store);
    let (ok, report) = server.tool(&["check"]).unwrap();
    assert!(!ok, "{report}");
    assert!(
        report.contains(&format!(
            "document {planted_id}: sits at the reserved index id"
        )),
        "{report}"
    );
    assert!(
        report.contains("1 documents are waiting to be listed"),
        "{report}"
    );
    assert_eq!(report.matches("PROBLEM").count(), 1, "{report}");
}

/// Waits for the next `error` on `c` (syncing `doc` meanwhile); `None` if none within `limit`.
async fn next_error(
    c: &mut ProtoClient,
    id: DocumentId,
    doc: &mut Automerge,
    limit: Duration,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match c.next(Duration::from_millis(500)).await.unwrap() {
            Some(Event::Message(Message::Sync(s))) => c.receive_sync(id, doc, &s).await.unwrap(),
            Some(Event::Message(Message::Error(e))) => return Some(e.message),
            _ => {}
        }
    }
    None
}

#[tokio::test]
async fn a_refused_change_sent_again_is_refused_again_with_a_notice() {
    // A phone whose connection dropped before the notice arrived must still learn of it: when it
    // re-sends the change on its next connection, the server says again that it was refused.
    let server = TestServer::start().unwrap();
    let url = server.ws_url(&comas_leader("u-ana"));
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::ATE, "u-ana", "Fuera de mi distrito", &[]);
    let refused = doc.get_heads()[0];
    let mut c = ProtoClient::connect(&url, "peer-a").await.unwrap();
    c.send_sync(id, &doc).await.unwrap();
    let first = next_error(&mut c, id, &mut doc, Duration::from_secs(10))
        .await
        .expect("no rejection notice");
    assert!(
        first.contains(&format!("change {refused} rejected")),
        "{first}"
    );
    drop(c);

    // Same phone, next connection, nothing learned: it sends the change again.
    let mut c = ProtoClient::connect(&url, "peer-a").await.unwrap();
    c.send_sync(id, &doc).await.unwrap();
    let again = next_error(&mut c, id, &mut doc, Duration::from_secs(10))
        .await
        .expect("the re-sent refused change got no notice");
    // Worded as the first notice, with the same reason.
    assert_eq!(again, first);
    let (phone, hash, _) = crdt_core::engine::parse_rejection(&again).unwrap();
    assert_eq!((phone, hash), (id, Some(refused)));
    // Once per re-send: no loop of notices.
    assert_eq!(
        next_error(&mut c, id, &mut doc, Duration::from_secs(2)).await,
        None
    );
}

/// Sends one hand-made sync message for `id` (heads, changes as given; no `have`).
async fn send_made(
    c: &mut ProtoClient,
    id: DocumentId,
    heads: Vec<automerge::ChangeHash>,
    chunks: Vec<Vec<u8>>,
    version: automerge::sync::MessageVersion,
) {
    let mut flags = automerge::sync::MessageFlags::new();
    flags.set(automerge::sync::MessageFlags::SUPPORTS_SYNC_RESET);
    let msg = automerge::sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: automerge::sync::ChunkList::from(chunks),
        flags: Some(flags),
        version,
    };
    let frame = Message::Sync(crdt_core::wire::SyncMessage {
        sender_id: c.peer_id.clone(),
        target_id: c.server_peer_id.clone(),
        document_id: id.to_string(),
        data: msg.encode(),
    });
    c.send(&frame).await.unwrap();
}

/// The next sync message the server sends about `id`, decoded.
async fn next_sync_about(c: &mut ProtoClient, id: DocumentId) -> automerge::sync::Message {
    let s = wait_for(c, Duration::from_secs(10), |m| match m {
        Message::Sync(s) if s.document_id == id.to_string() => Some(s.clone()),
        _ => None,
    })
    .await
    .expect("a sync message from the server");
    automerge::sync::Message::decode(&s.data).unwrap()
}

#[tokio::test]
async fn a_v2_message_that_lacks_its_first_change_is_held_and_completed_by_asking_for_it() {
    // A v2 sync message carries its changes as one run of concatenated change chunks. When the
    // first change after what both sides share is left out (its hash was a false positive in the
    // server's Bloom filter), the rest cannot be applied yet. The server must hold them and ask
    // for the missing one: a peer never sends a change twice on one connection, so dropping
    // them left the two sides asking each other for ever (seen as a livelock under cut
    // connections in `faults.rs`).
    let server = TestServer::start().unwrap();
    let url = server.ws_url(&comas_leader("u-ana"));
    let mut c = ProtoClient::connect(&url, "peer-phone").await.unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-ana", "Losa deportiva", &[]);
    upload_until_acked(&mut c, id, &mut doc).await.unwrap();
    let shared = doc.get_heads();
    for i in 0..4 {
        append_description(&mut doc, &format!(" Etapa {i}."));
    }
    let later = doc.get_changes(&shared);
    assert_eq!(later.len(), 4);
    let run: Vec<u8> = later[1..]
        .iter()
        .flat_map(|c| c.raw_bytes().to_vec())
        .collect();
    use automerge::sync::MessageVersion::V2;
    send_made(&mut c, id, doc.get_heads(), vec![run], V2).await;
    let reply = next_sync_about(&mut c, id).await;
    assert_eq!(
        reply.need,
        vec![later[0].hash()],
        "the server should ask for the missing parent, holding the three it got"
    );
    assert_eq!(reply.heads, shared);
    // The parent alone completes the document: the three held changes were kept.
    let parent = later[0].raw_bytes().to_vec();
    send_made(&mut c, id, doc.get_heads(), vec![parent], V2).await;
    let reply = next_sync_about(&mut c, id).await;
    assert_eq!(reply.heads, doc.get_heads());
}
