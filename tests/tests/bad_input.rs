//! Bad input over real sockets: every malformed or out-of-protocol frame closes only the offending
//! connection, after an `error` message saying what was wrong; invalid document ids and undecodable
//! sync data get an `error` and the connection stays usable. In every test a well-behaved client
//! keeps syncing through it, its changes acknowledged by the server, and `/healthz` stays 200.

mod common;

use std::time::Duration;

use automerge::Automerge;
use ciborium::Value;
use common::misbehave::{assert_healthy, bad_client, cbor, comas_leader, map, text, Good};
use crdt_core::wire::{
    EphemeralMessage, JoinMessage, Message, PeerMetadata, RequestMessage, SyncMessage,
};
use crdt_core::DocumentId;
use minka_tests::harness::{Event, ProtoClient, TestServer};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The next event must be an `error` whose text contains every one of `needles`, then the close.
/// Returns the error text.
async fn expect_error_then_close(bad: &mut ProtoClient, needles: &[&str]) -> String {
    let text = match bad.next(Duration::from_secs(10)).await.unwrap() {
        Some(Event::Message(Message::Error(e))) => e.message,
        other => panic!("expected an `error` message, got {other:?}"),
    };
    for n in needles {
        assert!(text.contains(n), "error {text:?} should mention {n:?}");
    }
    match bad.next(Duration::from_secs(10)).await.unwrap() {
        Some(Event::Closed(_)) => {}
        other => panic!("expected the server to close after the error, got {other:?}"),
    }
    // Nothing after the close: the stream has ended.
    assert!(matches!(
        bad.next(Duration::from_secs(2)).await.unwrap(),
        Some(Event::Closed(_))
    ));
    text
}

/// The next event must be an `error` containing every one of `needles`; the connection stays open.
async fn expect_error_stays_open(bad: &mut ProtoClient, needles: &[&str]) -> String {
    let text = match bad.next(Duration::from_secs(10)).await.unwrap() {
        Some(Event::Message(Message::Error(e))) => e.message,
        other => panic!("expected an `error` message, got {other:?}"),
    };
    for n in needles {
        assert!(text.contains(n), "error {text:?} should mention {n:?}");
    }
    text
}

fn protocol_errors(server: &TestServer) -> f64 {
    server.metric("minka_protocol_errors_total").unwrap()
}

#[tokio::test]
async fn frame_that_is_not_cbor_closes_only_that_connection() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;

    // After join.
    let mut bad = bad_client(&server, "peer-bad").await;
    bad.send_raw(b"\xff\xfe this is not CBOR".to_vec())
        .await
        .unwrap();
    expect_error_then_close(&mut bad, &["malformed message", "not valid CBOR"]).await;
    good.still_syncs().await;

    // Before join, and a valid CBOR item followed by junk.
    let mut bad = ProtoClient::connect_unjoined(&server.ws_url(&comas_leader("u-malo")), "p")
        .await
        .unwrap();
    bad.send_raw(vec![0x1c, 0x00, 0x01]).await.unwrap();
    expect_error_then_close(&mut bad, &["not valid CBOR"]).await;
    let mut bad = bad_client(&server, "peer-bad-2").await;
    let mut frame = cbor(&map(&[("type", text("leave")), ("senderId", text("x"))]));
    frame.extend_from_slice(b"junk");
    bad.send_raw(frame).await.unwrap();
    expect_error_then_close(&mut bad, &["trailing bytes"]).await;

    good.still_syncs().await;
    assert!(protocol_errors(&server) >= 3.0);
    assert_healthy(&server);
}

#[tokio::test]
async fn unknown_message_type_closes_only_that_connection() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let mut bad = bad_client(&server, "peer-bad").await;
    let frame = cbor(&map(&[
        ("type", text("frobnicate")),
        ("senderId", text("peer-bad")),
        ("targetId", text(&bad.server_peer_id.clone())),
    ]));
    bad.send_raw(frame).await.unwrap();
    let msg = expect_error_then_close(&mut bad, &["unknown message type", "frobnicate"]).await;
    assert!(msg.starts_with("malformed message"), "{msg}");
    good.still_syncs().await;
    assert_healthy(&server);
}

#[tokio::test]
async fn messages_with_missing_or_mistyped_fields_close_only_that_connection() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let doc = good.id.to_string();
    let cases: Vec<(Value, &[&str])> = vec![
        (
            // `sync` without `data`.
            map(&[
                ("type", text("sync")),
                ("senderId", text("peer-bad")),
                ("targetId", text("minka")),
                ("documentId", text(&doc)),
            ]),
            &["`sync`", "missing field `data`"],
        ),
        (
            // `data` as text instead of bytes.
            map(&[
                ("type", text("sync")),
                ("senderId", text("peer-bad")),
                ("targetId", text("minka")),
                ("documentId", text(&doc)),
                ("data", text("AAAA")),
            ]),
            &["field `data`", "must be"],
        ),
        (
            // `request` without `documentId`.
            map(&[
                ("type", text("request")),
                ("senderId", text("peer-bad")),
                ("targetId", text("minka")),
                ("data", Value::Bytes(vec![])),
            ]),
            &["missing field `documentId`"],
        ),
        (map(&[("senderId", text("peer-bad"))]), &["no `type` field"]),
        (
            Value::Array(vec![text("sync"), text(&doc)]),
            &["must be a CBOR map"],
        ),
    ];
    for (i, (value, needles)) in cases.into_iter().enumerate() {
        let mut bad = bad_client(&server, &format!("peer-bad-{i}")).await;
        bad.send_raw(cbor(&value)).await.unwrap();
        expect_error_then_close(&mut bad, needles).await;
        good.still_syncs().await;
    }
    assert_healthy(&server);
}

#[tokio::test]
async fn text_frame_closes_only_that_connection() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let mut bad = bad_client(&server, "peer-bad").await;
    bad.send_ws(WsMessage::Text(r#"{"type":"request"}"#.into()))
        .await
        .unwrap();
    expect_error_then_close(&mut bad, &["text frames", "binary"]).await;
    good.still_syncs().await;
    assert_healthy(&server);
}

#[tokio::test]
async fn message_before_join_and_second_join_close_only_that_connection() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let url = server.ws_url(&comas_leader("u-malo"));

    let mut bad = ProtoClient::connect_unjoined(&url, "peer-bad")
        .await
        .unwrap();
    bad.send(&Message::Request(RequestMessage {
        sender_id: "peer-bad".into(),
        target_id: "minka".into(),
        document_id: good.id.to_string(),
        data: vec![],
    }))
    .await
    .unwrap();
    expect_error_then_close(&mut bad, &["expected `join` first", "`request`"]).await;
    good.still_syncs().await;

    let mut bad = bad_client(&server, "peer-bad-2").await;
    bad.send(&Message::Join(JoinMessage {
        sender_id: "peer-bad-2".into(),
        supported_protocol_versions: vec!["1".into()],
        peer_metadata: Some(PeerMetadata::new(None, false)),
        metadata: None,
    }))
    .await
    .unwrap();
    expect_error_then_close(&mut bad, &["`join` sent twice"]).await;
    good.still_syncs().await;
    assert_healthy(&server);
}

/// An `ephemeral` message for `doc` whose encoded frame is exactly `size` bytes.
fn ephemeral_of_size(doc: DocumentId, target: &str, size: usize) -> Vec<u8> {
    let msg = |len: usize| {
        Message::Ephemeral(EphemeralMessage {
            sender_id: "peer-bad".into(),
            target_id: target.to_string(),
            document_id: doc.to_string(),
            session_id: "s1".into(),
            count: 1,
            data: vec![b'x'; len],
        })
        .encode()
    };
    // The byte string header is 3 bytes for 256..65536 bytes of data.
    let overhead = msg(300).len() - 300;
    let frame = msg(size - overhead);
    assert_eq!(frame.len(), size);
    frame
}

#[tokio::test]
async fn frames_over_max_frame_bytes_close_only_that_connection() {
    let server = TestServer::start_with(&["--max-frame-bytes", "4096"]).unwrap();
    let mut good = Good::start(&server).await;
    let mut bad = bad_client(&server, "peer-bad").await;
    let target = bad.server_peer_id.clone();

    // A frame of exactly the limit is accepted: it is relayed to the good client.
    bad.send_raw(ephemeral_of_size(good.id, &target, 4096))
        .await
        .unwrap();
    let mut relayed = None;
    while let Some(ev) = good.client.next(Duration::from_secs(5)).await.unwrap() {
        if let Event::Message(Message::Ephemeral(e)) = ev {
            relayed = Some(e);
            break;
        }
    }
    let relayed = relayed.expect("a frame at the limit must be accepted and relayed");
    assert_eq!(relayed.sender_id, "peer-bad");
    assert!(relayed.data.len() > 3900);
    good.still_syncs().await;

    // 10 KB is refused.
    bad.send_raw(ephemeral_of_size(good.id, &target, 10 * 1024))
        .await
        .unwrap();
    expect_error_then_close(&mut bad, &["exceeds the limit of 4096 bytes"]).await;
    good.still_syncs().await;
    // The good client never saw the refused frame.
    assert!(!good
        .client
        .received
        .iter()
        .any(|m| matches!(m, Message::Ephemeral(e) if e.data.len() > 4096)));

    // Before join too.
    let mut bad = ProtoClient::connect_unjoined(&server.ws_url(&comas_leader("u-malo")), "p")
        .await
        .unwrap();
    bad.send_raw(vec![0u8; 10 * 1024]).await.unwrap();
    expect_error_then_close(&mut bad, &["exceeds the limit"]).await;
    good.still_syncs().await;
    assert_healthy(&server);
}

#[tokio::test]
async fn sync_data_that_is_not_an_automerge_sync_message_gets_an_error_naming_the_document() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let mut bad = bad_client(&server, "peer-bad").await;
    let target = bad.server_peer_id.clone();
    for request in [false, true] {
        let data = b"\x42 definitely not an automerge sync message".to_vec();
        let msg = if request {
            Message::Request(RequestMessage {
                sender_id: "peer-bad".into(),
                target_id: target.clone(),
                document_id: good.id.to_string(),
                data,
            })
        } else {
            Message::Sync(SyncMessage {
                sender_id: "peer-bad".into(),
                target_id: target.clone(),
                document_id: good.id.to_string(),
                data,
            })
        };
        bad.send(&msg).await.unwrap();
        expect_error_stays_open(&mut bad, &[&good.id.to_string(), "invalid sync message"]).await;
        good.still_syncs().await;
    }
    // The connection is still usable: the same client fetches the document.
    let mut copy = Automerge::new();
    let events = bad.request_doc(good.id, &mut copy).await.unwrap();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(copy.get_heads(), good.doc.get_heads());
    good.still_syncs().await;
    assert_healthy(&server);
}

#[tokio::test]
async fn invalid_document_ids_get_an_error_and_the_connection_stays_usable() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let mut bad = bad_client(&server, "peer-bad").await;
    let target = bad.server_peer_id.clone();

    // A valid base58 string whose checksum is wrong: change the last character.
    let valid = good.id.to_string();
    let mut bad_checksum = valid.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == '2' { '3' } else { '2' });
    assert!(bad_checksum.parse::<DocumentId>().is_err());

    let cases: Vec<(Message, &str, &str)> = vec![
        (
            Message::Request(RequestMessage {
                sender_id: "peer-bad".into(),
                target_id: target.clone(),
                document_id: "not-a-doc-id".into(),
                data: vec![],
            }),
            "not-a-doc-id",
            "not base58",
        ),
        (
            Message::Sync(SyncMessage {
                sender_id: "peer-bad".into(),
                target_id: target.clone(),
                document_id: bad_checksum.clone(),
                data: vec![],
            }),
            &bad_checksum,
            "checksum",
        ),
        (
            Message::Sync(SyncMessage {
                sender_id: "peer-bad".into(),
                target_id: target.clone(),
                document_id: String::new(),
                data: vec![],
            }),
            "\"\"",
            "empty",
        ),
        (
            Message::Ephemeral(EphemeralMessage {
                sender_id: "peer-bad".into(),
                target_id: target.clone(),
                document_id: "3xTooShort".into(),
                session_id: "s".into(),
                count: 1,
                data: vec![1],
            }),
            "3xTooShort",
            "bytes",
        ),
    ];
    for (msg, names, reason) in &cases {
        bad.send(msg).await.unwrap();
        expect_error_stays_open(&mut bad, &["invalid document id", names, reason]).await;
        good.still_syncs().await;
    }
    // The same connection still syncs a valid document, and nothing else arrived meanwhile.
    let mut copy = Automerge::new();
    let events = bad.request_doc(good.id, &mut copy).await.unwrap();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(copy.get_heads(), good.doc.get_heads());
    good.still_syncs().await;
    assert_eq!(protocol_errors(&server), 0.0, "no connection was closed");
    assert_healthy(&server);
}

#[tokio::test]
async fn join_with_an_unsupported_protocol_version_is_refused() {
    let server = TestServer::start().unwrap();
    let mut good = Good::start(&server).await;
    let mut bad = ProtoClient::connect_unjoined(&server.ws_url(&comas_leader("u-malo")), "p")
        .await
        .unwrap();
    bad.send(&Message::Join(JoinMessage {
        sender_id: "peer-future".into(),
        supported_protocol_versions: vec!["99".into()],
        peer_metadata: Some(PeerMetadata::new(None, false)),
        metadata: None,
    }))
    .await
    .unwrap();
    let msg = expect_error_then_close(&mut bad, &["unsupported protocol", "99"]).await;
    assert!(
        msg.contains("\"1\""),
        "the error should say what is supported: {msg}"
    );
    // The refused peer never got a `peer` message.
    assert!(!bad.received.iter().any(|m| matches!(m, Message::Peer(_))));
    good.still_syncs().await;
    assert_healthy(&server);
}
