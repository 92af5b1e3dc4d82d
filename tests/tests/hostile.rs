//! Hostile input over real sockets, beyond the malformed frames of `bad_input.rs`: truncated,
//! deeply nested and length-lying CBOR, sync messages that claim what they do not carry, changes
//! whose dependencies never arrive, writes to reserved index ids, and forged or oversized tokens.
//! Each test asserts what the server answers (an `error` and a close, an `error` on an open
//! connection, or an HTTP status before any upgrade), that `/healthz` stays 200, and that a
//! well-behaved client keeps syncing, its changes acknowledged, during and after.
//! Latency under these inputs is measured separately (`scripts/bench-hostile`), never asserted.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use automerge::{Automerge, ChangeHash};
use ciborium::Value;
use common::misbehave::{assert_healthy, bad_client, cbor, comas_leader, map, text, Good};
use common::{append_description, fork, proposal};
use crdt_core::wire::{JoinMessage, Message, PeerMetadata, SyncMessage};
use crdt_core::{DocumentId, Ubigeo};
use minka_tests::harness::{now_unix, Event, ProtoClient, TestServer, TEST_SECRET};

/// The next non-sync event must be an `error` containing every needle, then the close.
async fn expect_error_then_close(bad: &mut ProtoClient, needles: &[&str]) -> String {
    let text = loop {
        match bad.next(Duration::from_secs(10)).await.unwrap() {
            Some(Event::Message(Message::Error(e))) => break e.message,
            Some(Event::Message(Message::Sync(_))) => continue,
            other => panic!("expected an `error` message, got {other:?}"),
        }
    };
    for n in needles {
        assert!(text.contains(n), "error {text:?} should mention {n:?}");
    }
    match bad.next(Duration::from_secs(10)).await.unwrap() {
        Some(Event::Closed(_)) => {}
        other => panic!("expected the server to close after the error, got {other:?}"),
    }
    text
}

/// The next non-sync event must be an `error` containing every needle; the connection stays open.
async fn expect_error_stays_open(bad: &mut ProtoClient, needles: &[&str]) -> String {
    let text = loop {
        match bad.next(Duration::from_secs(10)).await.unwrap() {
            Some(Event::Message(Message::Error(e))) => break e.message,
            Some(Event::Message(Message::Sync(_))) => continue,
            other => panic!("expected an `error` message, got {other:?}"),
        }
    };
    for n in needles {
        assert!(text.contains(n), "error {text:?} should mention {n:?}");
    }
    text
}

/// The bad client's connection is still usable: it fetches the good document as it is.
async fn still_usable(bad: &mut ProtoClient, good: &Good) {
    bad.reset(good.id);
    let mut copy = Automerge::new();
    let events = bad.request_doc(good.id, &mut copy).await.unwrap();
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, Event::Closed(_) | Event::Message(Message::Error(_)))),
        "{events:?}"
    );
    assert_eq!(copy.get_heads(), good.doc.get_heads());
}

#[tokio::test]
async fn truncated_cbor_is_refused_at_every_length() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    // A real sync message carrying the whole good document.
    let data = {
        let mut state = automerge::sync::State::new();
        automerge::sync::SyncDoc::generate_sync_message(&good.doc, &mut state)
            .unwrap()
            .encode()
    };
    let frame = Message::Sync(SyncMessage {
        sender_id: "peer-cut".into(),
        target_id: "minka-server".into(),
        document_id: good.id.to_string(),
        data,
    })
    .encode();
    assert!(Message::decode(&frame).is_ok());
    for len in 1..frame.len() {
        let mut bad = bad_client(&server, &format!("peer-cut-{len}")).await;
        bad.send_raw(frame[..len].to_vec()).await.unwrap();
        expect_error_then_close(&mut bad, &["malformed message", "not valid CBOR"]).await;
        if len % 64 == 0 {
            good.still_syncs().await;
        }
    }
    good.still_syncs().await;
    assert_healthy(&server);
}

#[tokio::test]
async fn cbor_fields_of_the_wrong_type_are_refused() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let doc = good.id.to_string();
    let cases: Vec<(Value, &[&str])> = vec![
        (
            map(&[
                ("type", Value::Integer(7.into())),
                ("senderId", text("peer-bad")),
            ]),
            &["`type` must be text"],
        ),
        (
            map(&[
                ("type", text("sync")),
                ("senderId", text("peer-bad")),
                ("targetId", text("minka-server")),
                ("documentId", Value::Integer(42.into())),
                ("data", Value::Bytes(vec![])),
            ]),
            &["field `documentId`", "must be"],
        ),
        (
            map(&[
                ("type", text("sync")),
                ("senderId", map(&[("x", text("y"))])),
                ("targetId", text("minka-server")),
                ("documentId", text(&doc)),
                ("data", Value::Bytes(vec![])),
            ]),
            &["field `senderId`", "must be"],
        ),
        (
            map(&[
                ("type", text("request")),
                ("senderId", text("peer-bad")),
                ("targetId", text("minka-server")),
                ("documentId", text(&doc)),
                ("data", Value::Array(vec![Value::Integer(1.into())])),
            ]),
            &["field `data`", "must be"],
        ),
        (
            map(&[
                ("type", text("ephemeral")),
                ("senderId", text("peer-bad")),
                ("targetId", text("minka-server")),
                ("documentId", text(&doc)),
                ("sessionId", text("s")),
                ("count", text("one")),
                ("data", Value::Bytes(vec![1])),
            ]),
            &["field `count`", "must be"],
        ),
        (
            map(&[
                ("type", text("sync")),
                ("senderId", text("peer-bad")),
                ("targetId", Value::Null),
                ("documentId", text(&doc)),
                ("data", Value::Bytes(vec![])),
            ]),
            &["`targetId`"],
        ),
    ];
    for (i, (value, needles)) in cases.into_iter().enumerate() {
        let mut bad = bad_client(&server, &format!("peer-bad-{i}")).await;
        bad.send_raw(cbor(&value)).await.unwrap();
        expect_error_then_close(&mut bad, needles).await;
        good.still_syncs().await;
    }
    // Before join: `supportedProtocolVersions` as text.
    let mut bad = ProtoClient::connect_unjoined(&server.ws_url(&comas_leader("u-malo")), "p")
        .await
        .unwrap();
    let join = map(&[
        ("type", text("join")),
        ("senderId", text("p")),
        ("supportedProtocolVersions", text("1")),
    ]);
    bad.send_raw(cbor(&join)).await.unwrap();
    expect_error_then_close(&mut bad, &["field `supportedProtocolVersions`"]).await;
    good.still_syncs().await;
    assert_healthy(&server);
}

/// `depth` nested CBOR items of one kind around a zero.
fn nested(prefix: &[u8], depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() * depth + 1);
    for _ in 0..depth {
        out.extend_from_slice(prefix);
    }
    out.push(0x00);
    out
}

#[tokio::test]
async fn deeply_nested_cbor_is_refused_without_exhausting_the_stack() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let mut frames = vec![
        // 100,000 nested one-element arrays, maps {0: ...}, tags, and indefinite arrays.
        nested(&[0x81], 100_000),
        nested(&[0xa1, 0x00], 100_000),
        nested(&[0xc6], 100_000),
        nested(&[0x9f], 100_000),
    ];
    // Inside a valid-looking join's `peerMetadata`.
    let mut join = cbor(&map(&[
        ("type", text("join")),
        ("senderId", text("peer-deep")),
        ("supportedProtocolVersions", Value::Array(vec![text("1")])),
    ]));
    join[0] += 1; // one more map entry
    join.extend(cbor(&text("peerMetadata")));
    join.extend(nested(&[0x81], 100_000));
    frames.push(join);
    for (i, frame) in frames.into_iter().enumerate() {
        let mut bad = if i == 4 {
            ProtoClient::connect_unjoined(&server.ws_url(&comas_leader("u-malo")), "p")
                .await
                .unwrap()
        } else {
            bad_client(&server, &format!("peer-deep-{i}")).await
        };
        bad.send_raw(frame).await.unwrap();
        expect_error_then_close(&mut bad, &["not valid CBOR", "RecursionLimitExceeded"]).await;
        good.still_syncs().await;
        assert_healthy(&server);
    }
}

#[tokio::test]
async fn cbor_headers_declaring_huge_lengths_are_refused() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let four_gb = (4u64 << 30).to_be_bytes();
    let huge = |major: u8| {
        let mut f = vec![major | 27];
        f.extend_from_slice(&four_gb);
        f.extend_from_slice(b"only a few bytes follow");
        f
    };
    let mut frames = vec![
        huge(0x40),                                             // byte string of 4 GiB
        huge(0x60),                                             // text string of 4 GiB
        huge(0x80),                                             // array of 4 Gi items
        huge(0xa0),                                             // map of 4 Gi entries
        [vec![0xbb], u64::MAX.to_be_bytes().to_vec()].concat(), // map of 2^64-1 entries
    ];
    // A sync message whose `data` claims 4 GiB.
    let mut sync = cbor(&map(&[
        ("type", text("sync")),
        ("senderId", text("peer-huge")),
        ("targetId", text("minka-server")),
        ("documentId", text(&good.id.to_string())),
    ]));
    sync[0] += 1;
    sync.extend(cbor(&text("data")));
    sync.extend(huge(0x40));
    frames.push(sync);
    for (i, frame) in frames.into_iter().enumerate() {
        let mut bad = bad_client(&server, &format!("peer-huge-{i}")).await;
        bad.send_raw(frame).await.unwrap();
        expect_error_then_close(&mut bad, &["malformed message", "not valid CBOR"]).await;
        good.still_syncs().await;
    }
    assert_healthy(&server);
}

/// Unsigned LEB128, as automerge's sync messages write counts and lengths.
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

fn hashes(out: &mut Vec<u8>, hs: &[ChangeHash]) {
    leb(out, hs.len() as u64);
    for h in hs {
        out.extend_from_slice(&h.0);
    }
}

/// An automerge sync message written by hand, so that it may lie: `haves` are (last sync heads,
/// raw Bloom filter bytes).
fn raw_sync(
    heads: &[ChangeHash],
    need: &[ChangeHash],
    haves: &[(Vec<ChangeHash>, Vec<u8>)],
    changes: &[Vec<u8>],
) -> Vec<u8> {
    let mut out = vec![0x42];
    hashes(&mut out, heads);
    hashes(&mut out, need);
    leb(&mut out, haves.len() as u64);
    for (last_sync, bloom) in haves {
        hashes(&mut out, last_sync);
        leb(&mut out, bloom.len() as u64);
        out.extend_from_slice(bloom);
    }
    leb(&mut out, changes.len() as u64);
    for c in changes {
        leb(&mut out, c.len() as u64);
        out.extend_from_slice(c);
    }
    out
}

fn random_hashes(n: usize) -> Vec<ChangeHash> {
    (0..n).map(|_| ChangeHash(rand::random())).collect()
}

fn sync_msg(bad: &ProtoClient, doc: DocumentId, data: Vec<u8>) -> Message {
    Message::Sync(SyncMessage {
        sender_id: bad.peer_id.clone(),
        target_id: bad.server_peer_id.clone(),
        document_id: doc.to_string(),
        data,
    })
}

/// Everything the server says to `c` until `quiet` passes without a message.
async fn drain(c: &mut ProtoClient, quiet: Duration) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(ev) = c.next(quiet).await.unwrap() {
        let closed = matches!(ev, Event::Closed(_));
        out.push(ev);
        if closed {
            break;
        }
    }
    out
}

fn no_error_or_close(events: &[Event]) {
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, Event::Closed(_) | Event::Message(Message::Error(_)))),
        "{events:?}"
    );
}

#[tokio::test]
async fn sync_messages_that_claim_what_they_do_not_carry_change_nothing() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let mut bad = bad_client(&server, "peer-liar").await;
    let id = good.id;
    let empty_have = || vec![(Vec::new(), Vec::new())];

    // Heads naming changes it never sends: the server asks for them (a `need`), nothing more.
    let phantom = random_hashes(3);
    bad.send(&sync_msg(
        &bad,
        id,
        raw_sync(&phantom, &[], &empty_have(), &[]),
    ))
    .await
    .unwrap();
    let events = drain(&mut bad, Duration::from_millis(500)).await;
    no_error_or_close(&events);
    good.still_syncs().await;

    // `have` with last-sync heads the server never saw.
    let haves = vec![(random_hashes(5), Vec::new())];
    bad.send(&sync_msg(&bad, id, raw_sync(&[], &[], &haves, &[])))
        .await
        .unwrap();
    no_error_or_close(&drain(&mut bad, Duration::from_millis(500)).await);
    good.still_syncs().await;

    // `need` of 5,000 random hashes: nothing to send for them.
    bad.send(&sync_msg(
        &bad,
        id,
        raw_sync(&[], &random_hashes(5000), &empty_have(), &[]),
    ))
    .await
    .unwrap();
    no_error_or_close(&drain(&mut bad, Duration::from_millis(500)).await);
    good.still_syncs().await;

    // Bloom filters of garbage: zero bits per entry (the probe modulo would be zero), billions
    // of probes, and 1,000 `have` entries.
    let bloom_zero_bits = vec![(Vec::new(), vec![1, 0, 7])];
    let bloom_many_probes = vec![(
        Vec::new(),
        vec![
            5, 10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xaa, 0x55, 0xaa, 0x55, 0xaa, 0x55, 0xaa,
        ],
    )];
    let many_haves: Vec<_> = (0..1000)
        .map(|_| (Vec::new(), vec![1, 10, 7, 0xff, 0xff]))
        .collect();
    for (haves, needle) in [
        (bloom_zero_bits, "0 bits per entry"),
        (bloom_many_probes, "4294967295 probes"),
        (many_haves, "1000 `have` entries"),
    ] {
        bad.send(&sync_msg(&bad, id, raw_sync(&[], &[], &haves, &[])))
            .await
            .unwrap();
        expect_error_stays_open(&mut bad, &[&id.to_string(), "invalid sync message", needle]).await;
        good.still_syncs().await;
    }

    // 5,000 heads.
    bad.send(&sync_msg(
        &bad,
        id,
        raw_sync(&random_hashes(5000), &[], &empty_have(), &[]),
    ))
    .await
    .unwrap();
    expect_error_stays_open(&mut bad, &["invalid sync message", "5000 heads"]).await;
    good.still_syncs().await;

    // The liar's connection still works, and the document is exactly the good client's.
    still_usable(&mut bad, &good).await;
    good.still_syncs().await;
    assert_healthy(&server);
}

/// The raw bytes of a change of `doc`.
fn change_bytes(doc: &Automerge, hash: ChangeHash) -> Vec<u8> {
    automerge::ReadDoc::get_change_by_hash(doc, &hash)
        .unwrap()
        .raw_bytes()
        .to_vec()
}

/// The document as a fresh connection of `sub` fetches it from the server.
async fn fetch(server: &TestServer, sub: &str, id: DocumentId) -> (Automerge, Vec<Event>) {
    let mut reader = ProtoClient::connect(
        &server.ws_url(&comas_leader(sub)),
        &format!("peer-{sub}-reader-{}", rand::random::<u32>()),
    )
    .await
    .unwrap();
    let mut doc = Automerge::new();
    let events = reader.request_doc(id, &mut doc).await.unwrap();
    (doc, events)
}

#[tokio::test]
async fn changes_whose_dependencies_never_arrive_are_held_then_dropped_with_their_sender() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    // The holder's own proposal, stored.
    let mut holder = bad_client(&server, "peer-holder").await;
    let pid = DocumentId::random();
    let mut base = proposal(Ubigeo::COMAS, "u-malo", "Parque del holder", &[]);
    holder.sync_doc(pid, &mut base).await.unwrap();
    assert_eq!(holder.server_heads(pid), Some(base.get_heads()));
    let stored_heads = base.get_heads();

    // Two more changes offline; only the second is sent, its dependency never.
    let mut local = fork(&base);
    append_description(&mut local, " — primero");
    let c1 = local.get_heads()[0];
    append_description(&mut local, " — segundo");
    let c2 = local.get_heads()[0];
    let data = raw_sync(
        &[c2],
        &[],
        &[(stored_heads.clone(), Vec::new())],
        &[change_bytes(&local, c2)],
    );
    holder.send(&sync_msg(&holder, pid, data)).await.unwrap();
    // The server asks for the missing dependency instead of applying the change.
    let events = drain(&mut holder, Duration::from_millis(800)).await;
    no_error_or_close(&events);
    let asked = events.iter().any(|e| match e {
        Event::Message(Message::Sync(s)) => automerge::sync::Message::decode(&s.data)
            .map(|m| m.need.contains(&c1))
            .unwrap_or(false),
        _ => false,
    });
    assert!(
        asked,
        "the server should ask for the missing dependency: {events:?}"
    );
    good.still_syncs().await;
    let (now, _) = fetch(&server, "u-carla", pid).await;
    assert_eq!(
        now.get_heads(),
        stored_heads,
        "a held change must not be applied"
    );

    // 2,000 more held changes, each on a dependency that never comes: the good client is
    // unaffected; the server holds up to its limit (1,000 per document and per connection) and
    // says the rest were not kept.
    let mut flood = Vec::new();
    let mut far = fork(&base);
    append_description(&mut far, " — nunca llega");
    for i in 0..2000 {
        let mut next = fork(&far);
        append_description(&mut next, &format!(" {i}"));
        let h = next.get_heads()[0];
        flood.push(change_bytes(&next, h));
    }
    for chunk in flood.chunks(200) {
        holder
            .send(&sync_msg(
                &holder,
                pid,
                raw_sync(&[], &[], &[(stored_heads.clone(), Vec::new())], chunk),
            ))
            .await
            .unwrap();
        good.still_syncs().await;
    }
    let told = drain(&mut holder, Duration::from_millis(500)).await;
    assert!(
        told.iter().all(|e| match e {
            Event::Message(Message::Error(e)) => e.message.contains("changes not kept"),
            Event::Closed(_) => false,
            _ => true,
        }),
        "only 'not kept' errors, no close: {:?}",
        told.iter()
            .filter(|e| !matches!(e, Event::Message(Message::Sync(_))))
            .collect::<Vec<_>>()
    );
    assert!(
        told.iter()
            .any(|e| matches!(e, Event::Message(Message::Error(_)))),
        "the changes over the limit are reported"
    );

    // The holder leaves. Its first change arrives later from another connection: the held
    // change it carried left with its sender and is not applied now.
    drop(holder);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = bad_client(&server, "peer-holder-2").await;
    let data = raw_sync(
        &[c1],
        &[],
        &[(stored_heads.clone(), Vec::new())],
        &[change_bytes(&local, c1)],
    );
    again.send(&sync_msg(&again, pid, data)).await.unwrap();
    let acked = loop {
        match again.next(Duration::from_secs(10)).await.unwrap() {
            Some(Event::Message(Message::Sync(s))) => {
                let m = automerge::sync::Message::decode(&s.data).unwrap();
                if m.heads.contains(&c1) {
                    break true;
                }
            }
            other => panic!("expected the acknowledgement of the first change, got {other:?}"),
        }
    };
    assert!(acked);
    let (now, events) = fetch(&server, "u-carla", pid).await;
    no_error_or_close(&events);
    assert_eq!(
        now.get_heads(),
        vec![c1],
        "only the change that arrived is applied; the held one left with its sender"
    );
    assert!(automerge::ReadDoc::get_change_by_hash(&now, &c2).is_none());
    good.still_syncs().await;
    assert_healthy(&server);
}

#[tokio::test]
async fn writes_to_reserved_index_ids_are_refused_and_nothing_is_stored() {
    let mut server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let mut bad = bad_client(&server, "peer-planter").await;
    // Comas's 2027 index exists (the good client's proposal is listed in it); 2031's does not.
    let existing = DocumentId::index_for(Ubigeo::COMAS, 2027);
    let absent = DocumentId::index_for(Ubigeo::COMAS, 2031);
    let (index_before, _) = fetch(&server, "u-carla", existing).await;
    assert!(!index_before.get_heads().is_empty());

    for id in [absent, existing] {
        let mut planted = proposal(Ubigeo::COMAS, "u-malo", "Plantada", &[]);
        if id == existing {
            // Built on the real index: a change that would edit it.
            planted = fork(&index_before);
            let mut tx = planted.transaction();
            automerge::transaction::Transactable::put(&mut tx, automerge::ROOT, "hacked", true)
                .unwrap();
            tx.commit();
        }
        let events = bad.sync_doc(id, &mut planted).await.unwrap();
        let refused = events.iter().any(|e| {
            matches!(e, Event::Message(Message::Error(m))
                if m.message.contains(&id.to_string()) && m.message.contains("reserved for the index"))
        });
        assert!(refused, "{events:?}");
        good.still_syncs().await;
    }
    let (absent_now, events) = fetch(&server, "u-carla", absent).await;
    assert!(absent_now.get_heads().is_empty());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Message(Message::DocUnavailable(_)))),
        "{events:?}"
    );
    let (index_now, _) = fetch(&server, "u-carla", existing).await;
    assert_eq!(index_now.get_heads(), index_before.get_heads());
    assert_healthy(&server);

    // Nothing of it was stored: the same after a restart.
    server.restart().unwrap();
    let (absent_now, _) = fetch(&server, "u-carla", absent).await;
    assert!(absent_now.get_heads().is_empty());
    let (index_now, _) = fetch(&server, "u-carla", existing).await;
    assert_eq!(index_now.get_heads(), index_before.get_heads());
    let mut good = Good::start(&server).await;
    good.still_syncs().await;
}

// ---- tokens ----

fn b64url(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn claims(overrides: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "sub": "u-malo", "name": "Malo", "roles": ["leader"], "district": "150110",
        "iat": now_unix(), "exp": now_unix() + 3600,
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A token with any header and claims, signed HS256 with `secret` whatever the header says.
fn forged_hmac(header: serde_json::Value, claims: &serde_json::Value, secret: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{signing_input}.{sig}")
}

fn hs256(claims: &serde_json::Value) -> String {
    forged_hmac(
        serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
        TEST_SECRET,
    )
}

/// `GET /sync` as a WebSocket upgrade with `token` in the query: the status and body of the
/// refusal, or `None` if the server upgraded.
async fn ws_refusal(server: &TestServer, token: &str) -> Option<(u16, String)> {
    match tokio_tungstenite::connect_async(server.ws_url(token)).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Some((
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_refused_before_the_upgrade() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let ok_claims = claims(serde_json::json!({}));
    // Keys generated for these tests only (openssl), known to nobody else.
    let rsa =
        jsonwebtoken::EncodingKey::from_rsa_der(include_bytes!("hostile-keys/rsa-2048-pkcs1.der"));
    let ec =
        jsonwebtoken::EncodingKey::from_ec_der(include_bytes!("hostile-keys/ec-p256-pkcs8.der"));
    let sign_with = |alg, key: &jsonwebtoken::EncodingKey| {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &ok_claims, key).unwrap()
    };
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(ok_claims.to_string().as_bytes())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned, "only HS256"),
        (
            "alg None with the right signature",
            forged_hmac(serde_json::json!({"alg": "None"}), &ok_claims, TEST_SECRET),
            "only HS256",
        ),
        (
            "wrong secret",
            forged_hmac(
                serde_json::json!({"alg": "HS256"}),
                &ok_claims,
                "another-secret-0123456789",
            ),
            "signature does not match",
        ),
        (
            "RS256 header, HMAC signature with the server's secret",
            forged_hmac(serde_json::json!({"alg": "RS256"}), &ok_claims, TEST_SECRET),
            "RS256 is not accepted",
        ),
        (
            "ES256 header, HMAC signature with the server's secret",
            forged_hmac(serde_json::json!({"alg": "ES256"}), &ok_claims, TEST_SECRET),
            "ES256 is not accepted",
        ),
        (
            "RS256 signed with a random RSA key",
            sign_with(jsonwebtoken::Algorithm::RS256, &rsa),
            "RS256 is not accepted",
        ),
        (
            "ES256 signed with a random EC key",
            sign_with(jsonwebtoken::Algorithm::ES256, &ec),
            "ES256 is not accepted",
        ),
        (
            "HS512 with the server's secret",
            sign_with(
                jsonwebtoken::Algorithm::HS512,
                &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
            ),
            "HS512 is not accepted",
        ),
        (
            "missing exp",
            hs256(&claims(serde_json::json!({"exp": null}))),
            "missing field `exp`",
        ),
        (
            "exp in the past",
            hs256(&claims(serde_json::json!({"exp": now_unix() - 3600}))),
            "token expired",
        ),
        (
            "exp 1e20 as a float",
            hs256(&claims(serde_json::json!({"exp": 1e20}))),
            "exp",
        ),
        (
            "negative exp",
            hs256(&claims(serde_json::json!({"exp": -5}))),
            "exp",
        ),
        (
            "exp as text",
            hs256(&claims(serde_json::json!({"exp": "mañana"}))),
            "exp",
        ),
        (
            "missing sub",
            hs256(&claims(serde_json::json!({"sub": null}))),
            "missing field `sub`",
        ),
        (
            "missing roles",
            hs256(&claims(serde_json::json!({"roles": null}))),
            "missing field `roles`",
        ),
        (
            "missing district",
            hs256(&claims(serde_json::json!({"district": null}))),
            "missing field `district`",
        ),
        (
            "roles as text",
            hs256(&claims(serde_json::json!({"roles": "admin"}))),
            "invalid type",
        ),
        (
            "district as a number",
            hs256(&claims(serde_json::json!({"district": 150110}))),
            "invalid type",
        ),
        (
            "sub as a number",
            hs256(&claims(serde_json::json!({"sub": 7}))),
            "sub",
        ),
        (
            "unknown role",
            hs256(&claims(serde_json::json!({"roles": ["alcalde"]}))),
            "invalid token",
        ),
        (
            "1,000 roles (over the token size limit)",
            hs256(&claims(serde_json::json!({"roles": vec!["leader"; 1000]}))),
            "at most 8192 are accepted",
        ),
        ("not a JWT", "not-a-jwt".into(), "invalid token"),
        ("three empty parts", "..".into(), "invalid token"),
        ("bad base64", "@@@.@@@.@@@".into(), "invalid token"),
    ];
    for (what, token, needle) in &cases {
        let refusal = ws_refusal(&server, &urlencode(token)).await;
        let Some((status, body)) = refusal else {
            panic!("{what}: the server upgraded the connection");
        };
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            body.contains(needle),
            "{what}: {body:?} should mention {needle:?}"
        );
        // The same in the `Authorization` header of an API request.
        let (status, body) = server.http_get("/api/v1/docs", Some(token)).unwrap();
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            body.contains(needle),
            "{what}: {body:?} should mention {needle:?}"
        );
    }
    good.still_syncs().await;
    assert_healthy(&server);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends a raw HTTP request (written from another thread: the server may answer before reading
/// it all) and returns the status code (`None` if the server closed without one) and the body.
fn raw_http(addr: &str, request: Vec<u8>) -> (Option<u16>, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&request);
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let complete = |buf: &[u8]| {
        let text = String::from_utf8_lossy(buf);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        body.len() >= len
    };
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if complete(&buf) {
                    break;
                }
            }
        }
    }
    drop(s);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn upgrade_request(addr: &str, path: &str, extra_header: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_header}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_the_upgrade() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let addr = server.addr.clone();
    let mega = "A".repeat(1 << 20);
    let ten_thousand_roles = hs256(&claims(
        serde_json::json!({"roles": vec!["leader"; 10_000]}),
    ));
    // actix refuses a request head over its buffer (far below 1 MB) with 431; a token that
    // fits it but exceeds the server's 8 KiB token limit gets 401.
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "1 MB token in the Authorization header",
            upgrade_request(&addr, "/sync", &format!("Authorization: Bearer {mega}\r\n")),
            431,
        ),
        (
            "1 MB token in the query",
            upgrade_request(&addr, &format!("/sync?token={mega}"), ""),
            431,
        ),
        (
            "10,000 roles in the Authorization header",
            upgrade_request(
                &addr,
                "/sync",
                &format!("Authorization: Bearer {ten_thousand_roles}\r\n"),
            ),
            401,
        ),
        (
            "10,000 roles in the query",
            upgrade_request(&addr, &format!("/sync?token={ten_thousand_roles}"), ""),
            400,
        ),
    ];
    for (what, request, expected) in cases {
        let addr = addr.clone();
        let (status, body) = tokio::task::spawn_blocking(move || raw_http(&addr, request))
            .await
            .unwrap();
        assert_eq!(status, Some(expected), "{what}: {body}");
        if expected == 401 {
            assert!(body.contains("at most 8192 are accepted"), "{what}: {body}");
        }
        good.still_syncs().await;
        assert_healthy(&server);
    }
    // Under actix's limit but over the token limit: 401 with the reason.
    let big = hs256(&claims(serde_json::json!({"name": "x".repeat(20_000)})));
    let (status, body) = ws_refusal(&server, &big).await.expect("no upgrade");
    assert_eq!(status, 401);
    assert!(body.contains("at most 8192 are accepted"), "{body}");
    good.still_syncs().await;
    assert_healthy(&server);
}

#[tokio::test]
async fn a_token_with_a_huge_expiry_works_without_breaking_timers() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let forever = hs256(&claims(serde_json::json!({"exp": u64::MAX})));
    // A sync connection with it works (its expiry timer is far but finite).
    let mut c = ProtoClient::connect(&server.ws_url(&forever), "peer-forever")
        .await
        .unwrap();
    let id = DocumentId::random();
    let mut doc = proposal(Ubigeo::COMAS, "u-malo", "Para siempre", &[]);
    c.sync_doc(id, &mut doc).await.unwrap();
    assert_eq!(c.server_heads(id), Some(doc.get_heads()));
    // The event stream, whose deadline is "now + expiry", answers too (it panicked on overflow).
    for _ in 0..3 {
        let (status, body) = server.http_get("/api/v1/events", Some(&forever)).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    good.still_syncs().await;
    append_description(&mut doc, " — y más");
    let events = c.sync_doc(id, &mut doc).await.unwrap();
    no_error_or_close(&events);
    assert_eq!(c.server_heads(id), Some(doc.get_heads()));
    assert_healthy(&server);
}

/// A `join` whose peer id is 1 MB long is refused: the server would otherwise keep it and echo
/// it as `targetId` in every message to that peer.
#[tokio::test]
async fn a_join_with_a_huge_peer_id_is_refused() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let mut bad = ProtoClient::connect_unjoined(&server.ws_url(&comas_leader("u-malo")), "p")
        .await
        .unwrap();
    let big_metadata = Value::Map(
        (0..10_000)
            .map(|i| (text(&format!("k{i}")), Value::Integer(i.into())))
            .collect(),
    );
    bad.send(&Message::Join(JoinMessage {
        sender_id: "x".repeat(1 << 20),
        supported_protocol_versions: vec!["1".into()],
        peer_metadata: Some(PeerMetadata(big_metadata)),
        metadata: None,
    }))
    .await
    .unwrap();
    expect_error_then_close(&mut bad, &["peer id", "1048576 bytes"]).await;
    assert!(!bad.received.iter().any(|m| matches!(m, Message::Peer(_))));
    good.still_syncs().await;
    assert_healthy(&server);
}
