//! The wire codec: round trips for every message type, the tolerance the JS client needs, and
//! the errors for frames that are not messages.

use std::collections::BTreeMap;

use ciborium::Value;
use crdt_core::wire::{
    DocUnavailableMessage, EphemeralMessage, ErrorMessage, JoinMessage, LeaveMessage, Message,
    PeerMessage, PeerMetadata, RemoteHeads, RemoteHeadsChangedMessage,
    RemoteSubscriptionChangeMessage, RequestMessage, SyncMessage, WireError, MESSAGE_TYPES,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Hand-built CBOR. ciborium's `Value` cannot express `undefined`, so frames are assembled from
// pre-encoded pieces.

const UNDEFINED: &[u8] = &[0xf7];

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn t(s: &str) -> Vec<u8> {
    enc(&Value::Text(s.into()))
}

fn f64_bytes(f: f64) -> Vec<u8> {
    let mut out = vec![0xfb];
    out.extend_from_slice(&f.to_be_bytes());
    out
}

/// A CBOR map with text keys and pre-encoded values, written with a 16-bit length as cbor-x does.
fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0xb9];
    out.extend_from_slice(&u16::try_from(entries.len()).unwrap().to_be_bytes());
    for (k, v) in entries {
        out.extend(t(k));
        out.extend_from_slice(v);
    }
    out
}

fn sync_entries() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("type", t("sync")),
        ("senderId", t("a")),
        ("targetId", t("b")),
        ("documentId", t("doc")),
        ("data", enc(&Value::Bytes(vec![1, 2, 3]))),
    ]
}

fn with(mut entries: Vec<(&'static str, Vec<u8>)>, key: &'static str, value: Vec<u8>) -> Vec<u8> {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => entries.push((key, value)),
    }
    map(&entries)
}

fn without(entries: Vec<(&'static str, Vec<u8>)>, key: &str) -> Vec<u8> {
    map(&entries
        .into_iter()
        .filter(|(k, _)| *k != key)
        .collect::<Vec<_>>())
}

// ---------------------------------------------------------------------------------------------
// Round trips.

fn arb_id() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[1-9A-HJ-NP-Za-km-z]{20,30}"]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

fn arb_strings() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(arb_id(), 0..4)
}

/// Arbitrary CBOR values as metadata may hold them (no NaN: it is not equal to itself).
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| Value::Integer(i.into())),
        any::<u64>().prop_map(|i| Value::Integer(i.into())),
        arb_bytes().prop_map(Value::Bytes),
        any::<f64>()
            .prop_filter("NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        any::<String>().prop_map(Value::Text),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((any::<String>().prop_map(Value::Text), inner.clone()), 0..4)
                .prop_map(Value::Map),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..3).prop_map(Value::Map),
            (prop_oneof![Just(64u64), Just(1000)], inner)
                .prop_map(|(tag, v)| Value::Tag(tag, Box::new(v))),
        ]
    })
}

fn arb_metadata() -> impl Strategy<Value = Option<PeerMetadata>> {
    prop_oneof![
        Just(None),
        (proptest::option::of(arb_id()), any::<bool>())
            .prop_map(|(s, e)| Some(PeerMetadata::new(s.as_deref(), e))),
        arb_value()
            .prop_filter("null metadata reads as absent", |v| !v.is_null())
            .prop_map(|v| Some(PeerMetadata(v))),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (arb_id(), arb_strings(), arb_metadata(), arb_metadata()).prop_map(|(s, v, pm, m)| {
            Message::Join(JoinMessage {
                sender_id: s,
                supported_protocol_versions: v,
                peer_metadata: pm,
                metadata: m,
            })
        }),
        (arb_id(), arb_id(), arb_id(), arb_metadata(), arb_metadata()).prop_map(
            |(s, t, v, pm, m)| {
                Message::Peer(PeerMessage {
                    sender_id: s,
                    target_id: t,
                    selected_protocol_version: v,
                    peer_metadata: pm,
                    metadata: m,
                })
            }
        ),
        (
            proptest::option::of(arb_id()),
            proptest::option::of(arb_id()),
            any::<String>()
        )
            .prop_map(|(s, t, message)| Message::Error(ErrorMessage {
                sender_id: s,
                target_id: t,
                message,
            })),
        arb_id().prop_map(|s| Message::Leave(LeaveMessage { sender_id: s })),
        (arb_id(), arb_id(), arb_id(), arb_bytes()).prop_map(|(s, t, d, data)| {
            Message::Request(RequestMessage {
                sender_id: s,
                target_id: t,
                document_id: d,
                data,
            })
        }),
        (arb_id(), arb_id(), arb_id(), arb_bytes()).prop_map(|(s, t, d, data)| {
            Message::Sync(SyncMessage {
                sender_id: s,
                target_id: t,
                document_id: d,
                data,
            })
        }),
        (arb_id(), arb_id(), arb_id()).prop_map(|(s, t, d)| {
            Message::DocUnavailable(DocUnavailableMessage {
                sender_id: s,
                target_id: t,
                document_id: d,
            })
        }),
        (
            arb_id(),
            arb_id(),
            arb_id(),
            arb_id(),
            any::<u64>(),
            arb_bytes()
        )
            .prop_map(|(s, t, d, session, count, data)| {
                Message::Ephemeral(EphemeralMessage {
                    sender_id: s,
                    target_id: t,
                    document_id: d,
                    session_id: session,
                    count,
                    data,
                })
            }),
        (
            arb_id(),
            arb_id(),
            proptest::option::of(arb_strings()),
            proptest::option::of(arb_strings())
        )
            .prop_map(|(s, t, add, remove)| {
                Message::RemoteSubscriptionChange(RemoteSubscriptionChangeMessage {
                    sender_id: s,
                    target_id: t,
                    add,
                    remove,
                })
            }),
        (
            arb_id(),
            arb_id(),
            arb_id(),
            proptest::collection::btree_map(
                arb_id(),
                (arb_strings(), any::<u64>())
                    .prop_map(|(heads, timestamp)| RemoteHeads { heads, timestamp }),
                0..4
            )
        )
            .prop_map(|(s, t, d, new_heads)| {
                Message::RemoteHeadsChanged(RemoteHeadsChangedMessage {
                    sender_id: s,
                    target_id: t,
                    document_id: d,
                    new_heads,
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips(m in arb_message()) {
        let frame = m.encode();
        prop_assert_eq!(Message::decode(&frame), Ok(m.clone()));
        prop_assert!(MESSAGE_TYPES.contains(&m.type_name()));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn decoding_arbitrary_maps_never_panics(
        entries in proptest::collection::vec((prop_oneof![
            Just("type".to_string()), Just("senderId".to_string()), Just("data".to_string()),
            Just("newHeads".to_string()), any::<String>()
        ], arb_value()), 0..6),
        ty in proptest::sample::select(MESSAGE_TYPES.to_vec()),
    ) {
        let mut entries: Vec<(Value, Value)> =
            entries.into_iter().map(|(k, v)| (Value::Text(k), v)).collect();
        entries.insert(0, (Value::Text("type".into()), Value::Text(ty.into())));
        let _ = Message::decode(&enc(&Value::Map(entries)));
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding shape: what cbor-x on the JS side expects.

#[test]
fn encoding_writes_text_keys_byte_strings_and_no_absent_fields() {
    let m = Message::Sync(SyncMessage {
        sender_id: "server".into(),
        target_id: "client".into(),
        document_id: "doc".into(),
        data: vec![0x42, 0, 7],
    });
    let v: Value = ciborium::from_reader(m.encode().as_slice()).unwrap();
    let entries = v.as_map().unwrap();
    assert_eq!(
        entries[0],
        (Value::Text("type".into()), Value::Text("sync".into()))
    );
    assert!(entries.iter().all(|(k, _)| k.is_text()));
    let data = entries
        .iter()
        .find(|(k, _)| k.as_text() == Some("data"))
        .unwrap();
    assert_eq!(data.1, Value::Bytes(vec![0x42, 0, 7]));
    // Major type 2, length 3, then the bytes.
    let frame = m.encode();
    assert!(frame.windows(4).any(|w| w == [0x43, 0x42, 0, 7]));

    let m = Message::RemoteSubscriptionChange(RemoteSubscriptionChangeMessage {
        sender_id: "a".into(),
        target_id: "b".into(),
        add: Some(vec!["s".into()]),
        remove: None,
    });
    let v: Value = ciborium::from_reader(m.encode().as_slice()).unwrap();
    let keys: Vec<_> = v
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_text().unwrap())
        .collect();
    assert_eq!(keys, ["type", "senderId", "targetId", "add"]);
}

#[test]
fn large_numbers_are_encoded_as_js_numbers_not_64_bit_integers() {
    // cbor-x turns an 8-byte CBOR integer into a BigInt; Date.now() must come back a number.
    let m = Message::RemoteHeadsChanged(RemoteHeadsChangedMessage {
        sender_id: "a".into(),
        target_id: "b".into(),
        document_id: "doc".into(),
        new_heads: BTreeMap::from([(
            "s".to_string(),
            RemoteHeads {
                heads: vec![],
                timestamp: 1_764_288_000_123,
            },
        )]),
    });
    let frame = m.encode();
    let mut float64 = vec![0xfb];
    float64.extend_from_slice(&1_764_288_000_123f64.to_be_bytes());
    assert!(frame.windows(9).any(|w| w == float64.as_slice()));
    assert!(!frame.contains(&0x1b));
    assert_eq!(Message::decode(&frame), Ok(m));
}

#[test]
fn peer_metadata_is_encoded_as_the_js_client_reads_it() {
    let m = Message::Peer(PeerMessage {
        sender_id: "server".into(),
        target_id: "client".into(),
        selected_protocol_version: "1".into(),
        peer_metadata: Some(PeerMetadata::new(Some("store-1"), false)),
        metadata: None,
    });
    let v: Value = ciborium::from_reader(m.encode().as_slice()).unwrap();
    let pm = v
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("peerMetadata"))
        .unwrap()
        .1
        .clone();
    assert_eq!(
        pm,
        Value::Map(vec![
            (
                Value::Text("storageId".into()),
                Value::Text("store-1".into())
            ),
            (Value::Text("isEphemeral".into()), Value::Bool(false)),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Tolerance.

#[test]
fn undefined_optional_fields_read_as_absent() {
    let frame = map(&[
        ("type", t("join")),
        ("senderId", t("client")),
        ("peerMetadata", UNDEFINED.to_vec()),
        ("metadata", enc(&Value::Null)),
        (
            "supportedProtocolVersions",
            enc(&Value::Array(vec![Value::Text("1".into())])),
        ),
    ]);
    let Message::Join(j) = Message::decode(&frame).unwrap() else {
        panic!("not a join")
    };
    assert_eq!(j.peer_metadata, None);
    assert_eq!(j.metadata, None);
    assert_eq!(j.supported_protocol_versions, ["1"]);

    let frame = map(&[
        ("type", t("remote-subscription-change")),
        ("targetId", t("server")),
        ("add", enc(&Value::Array(vec![Value::Text("s1".into())]))),
        ("remove", UNDEFINED.to_vec()),
        ("senderId", t("client")),
    ]);
    assert_eq!(
        Message::decode(&frame),
        Ok(Message::RemoteSubscriptionChange(
            RemoteSubscriptionChangeMessage {
                sender_id: "client".into(),
                target_id: "server".into(),
                add: Some(vec!["s1".into()]),
                remove: None,
            }
        ))
    );

    let frame = map(&[
        ("type", t("error")),
        ("senderId", UNDEFINED.to_vec()),
        ("message", t("boom")),
    ]);
    assert_eq!(
        Message::decode(&frame),
        Ok(Message::Error(ErrorMessage {
            sender_id: None,
            target_id: None,
            message: "boom".into()
        }))
    );
}

#[test]
fn undefined_inside_metadata_reads_as_null() {
    // What the JS client sends without storage: {storageId: undefined, isEphemeral: true}.
    let metadata = map(&[
        ("storageId", UNDEFINED.to_vec()),
        ("isEphemeral", vec![0xf5]),
    ]);
    let frame = map(&[
        ("type", t("join")),
        ("senderId", t("client")),
        ("peerMetadata", metadata),
        (
            "supportedProtocolVersions",
            enc(&Value::Array(vec![Value::Text("1".into())])),
        ),
    ]);
    let Message::Join(j) = Message::decode(&frame).unwrap() else {
        panic!("not a join")
    };
    let pm = j.peer_metadata.unwrap();
    assert_eq!(pm.storage_id(), None);
    assert_eq!(pm.is_ephemeral(), Some(true));
}

#[test]
fn undefined_required_field_is_missing() {
    let frame = with(sync_entries(), "data", UNDEFINED.to_vec());
    assert_eq!(
        Message::decode(&frame),
        Err(WireError::MissingField {
            message_type: "sync",
            field: "data".into()
        })
    );
}

#[test]
fn integers_sent_as_floats_are_accepted() {
    let frame = map(&[
        ("type", t("ephemeral")),
        ("senderId", t("a")),
        ("targetId", t("b")),
        ("documentId", t("doc")),
        ("sessionId", t("session")),
        ("count", f64_bytes(3.0)),
        ("data", enc(&Value::Bytes(vec![0xa0]))),
    ]);
    let Message::Ephemeral(e) = Message::decode(&frame).unwrap() else {
        panic!("not ephemeral")
    };
    assert_eq!(e.count, 3);

    // Half and single precision too (ciborium writes 7.0 as a half float).
    let frame = map(&[
        ("type", t("ephemeral")),
        ("senderId", t("a")),
        ("targetId", t("b")),
        ("documentId", t("doc")),
        ("sessionId", t("session")),
        ("count", enc(&Value::Float(7.0))),
        ("data", enc(&Value::Bytes(vec![]))),
    ]);
    let Message::Ephemeral(e) = Message::decode(&frame).unwrap() else {
        panic!("not ephemeral")
    };
    assert_eq!(e.count, 7);

    // Date.now() as cbor-x writes it: float64.
    let heads = map(&[
        ("heads", enc(&Value::Array(vec![Value::Text("h1".into())]))),
        ("timestamp", f64_bytes(1_764_288_000_123.0)),
    ]);
    let frame = map(&[
        ("type", t("remote-heads-changed")),
        ("senderId", t("a")),
        ("targetId", t("b")),
        ("documentId", t("doc")),
        ("newHeads", map(&[("storage-1", heads)])),
    ]);
    let Message::RemoteHeadsChanged(r) = Message::decode(&frame).unwrap() else {
        panic!("not remote-heads-changed")
    };
    assert_eq!(
        r.new_heads,
        BTreeMap::from([(
            "storage-1".to_string(),
            RemoteHeads {
                heads: vec!["h1".into()],
                timestamp: 1_764_288_000_123
            }
        )])
    );
}

#[test]
fn fractional_or_negative_numbers_are_not_integers() {
    for (bytes, found) in [
        (f64_bytes(3.5), "non-integral or negative float"),
        (f64_bytes(-1.0), "non-integral or negative float"),
        (enc(&Value::Integer((-4).into())), "negative integer"),
        (t("3"), "text"),
    ] {
        let frame = map(&[
            ("type", t("ephemeral")),
            ("senderId", t("a")),
            ("targetId", t("b")),
            ("documentId", t("doc")),
            ("sessionId", t("s")),
            ("count", bytes),
            ("data", enc(&Value::Bytes(vec![]))),
        ]);
        assert_eq!(
            Message::decode(&frame),
            Err(WireError::WrongType {
                message_type: "ephemeral",
                field: "count".into(),
                expected: "a non-negative integer",
                found,
            })
        );
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let mut entries = sync_entries();
    entries.push((
        "extra",
        enc(&Value::Map(vec![(Value::Integer(1.into()), Value::Null)])),
    ));
    entries.push(("peerMetadata", UNDEFINED.to_vec()));
    entries.push(("anotherOne", enc(&Value::Array(vec![Value::Bool(true)]))));
    let frame = map(&entries);
    // A non-text key is just another unknown field.
    let mut v: Value = ciborium::from_reader(frame.as_slice()).unwrap();
    if let Value::Map(m) = &mut v {
        m.push((Value::Integer(7.into()), Value::Text("x".into())));
    }
    for frame in [frame, enc(&v)] {
        assert_eq!(
            Message::decode(&frame),
            Ok(Message::Sync(SyncMessage {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: "doc".into(),
                data: vec![1, 2, 3],
            }))
        );
    }
}

#[test]
fn typed_array_tags_are_read_as_bytes() {
    let tagged = enc(&Value::Tag(64, Box::new(Value::Bytes(vec![9, 8]))));
    let Message::Sync(s) = Message::decode(&with(sync_entries(), "data", tagged)).unwrap() else {
        panic!("not sync")
    };
    assert_eq!(s.data, [9, 8]);
}

#[test]
fn duplicate_keys_last_one_wins_as_in_javascript() {
    let mut entries = sync_entries();
    entries.push(("senderId", t("z")));
    let Message::Sync(s) = Message::decode(&map(&entries)).unwrap() else {
        panic!("not sync")
    };
    assert_eq!(s.sender_id, "z");
}

#[test]
fn invalid_document_ids_are_kept_for_the_server_to_judge() {
    let frame = with(sync_entries(), "documentId", t("not a document id!"));
    assert_eq!(
        Message::decode(&frame).unwrap().document_id(),
        Some("not a document id!")
    );
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn garbage_is_not_cbor() {
    // Lengths far beyond the frame must fail on the missing bytes, not allocate them.
    let huge_bytes = [0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1];
    let huge_array = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1];
    let truncated_map = map(&sync_entries());
    let truncated_map = &truncated_map[..truncated_map.len() - 1];
    for frame in [
        &[][..],
        &[0xff][..],
        &[0x1c],
        &[0x5b, 0, 0, 0, 0, 0, 0, 0, 9, 1],
        &huge_bytes,
        &huge_array,
        truncated_map,
    ] {
        assert!(
            matches!(Message::decode(frame), Err(WireError::NotCbor(_))),
            "{frame:?} decoded as {:?}",
            Message::decode(frame)
        );
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut frame = map(&sync_entries());
    frame.push(0x00);
    assert_eq!(Message::decode(&frame), Err(WireError::TrailingBytes(1)));
}

#[test]
fn non_maps_are_rejected() {
    assert_eq!(
        Message::decode(&enc(&Value::Array(vec![]))),
        Err(WireError::NotAMap("array"))
    );
    assert_eq!(Message::decode(&t("sync")), Err(WireError::NotAMap("text")));
    assert_eq!(Message::decode(&[0xf6]), Err(WireError::NotAMap("null")));
}

#[test]
fn type_must_be_present_text_and_known() {
    assert_eq!(
        Message::decode(&without(sync_entries(), "type")),
        Err(WireError::MissingType)
    );
    assert_eq!(
        Message::decode(&with(sync_entries(), "type", UNDEFINED.to_vec())),
        Err(WireError::MissingType)
    );
    assert_eq!(
        Message::decode(&with(
            sync_entries(),
            "type",
            enc(&Value::Integer(1.into()))
        )),
        Err(WireError::TypeNotText("integer"))
    );
    let err = Message::decode(&with(sync_entries(), "type", t("synk"))).unwrap_err();
    assert_eq!(err, WireError::UnknownType("synk".into()));
    assert_eq!(err.to_string(), r#"unknown message type "synk""#);
}

#[test]
fn missing_fields_are_named() {
    for field in ["senderId", "targetId", "documentId", "data"] {
        let err = Message::decode(&without(sync_entries(), field)).unwrap_err();
        assert_eq!(
            err,
            WireError::MissingField {
                message_type: "sync",
                field: field.into()
            }
        );
        assert_eq!(
            err.to_string(),
            format!("`sync` message is missing field `{field}`")
        );
    }
    let frame = map(&[
        ("type", t("join")),
        ("senderId", t("c")),
        ("peerMetadata", map(&[])),
    ]);
    assert_eq!(
        Message::decode(&frame),
        Err(WireError::MissingField {
            message_type: "join",
            field: "supportedProtocolVersions".into()
        })
    );
}

#[test]
fn wrong_field_types_are_named() {
    let err = Message::decode(&with(sync_entries(), "data", t("AQID"))).unwrap_err();
    assert_eq!(
        err,
        WireError::WrongType {
            message_type: "sync",
            field: "data".into(),
            expected: "a byte string",
            found: "text"
        }
    );
    assert_eq!(
        err.to_string(),
        "field `data` of `sync` message must be a byte string, found text"
    );
    assert!(matches!(
        Message::decode(&with(sync_entries(), "documentId", enc(&Value::Bytes(vec![1])))),
        Err(WireError::WrongType { field, found: "bytes", .. }) if field == "documentId"
    ));

    let heads = map(&[
        (
            "heads",
            enc(&Value::Array(vec![
                Value::Text("h".into()),
                Value::Integer(5.into()),
            ])),
        ),
        ("timestamp", enc(&Value::Integer(5.into()))),
    ]);
    let frame = map(&[
        ("type", t("remote-heads-changed")),
        ("senderId", t("a")),
        ("targetId", t("b")),
        ("documentId", t("doc")),
        ("newHeads", map(&[("s1", heads)])),
    ]);
    assert_eq!(
        Message::decode(&frame),
        Err(WireError::WrongType {
            message_type: "remote-heads-changed",
            field: "newHeads.s1.heads[1]".into(),
            expected: "text",
            found: "integer"
        })
    );

    let frame = map(&[
        ("type", t("remote-heads-changed")),
        ("senderId", t("a")),
        ("targetId", t("b")),
        ("documentId", t("doc")),
        (
            "newHeads",
            map(&[("s1", map(&[("heads", enc(&Value::Array(vec![])))]))]),
        ),
    ]);
    assert_eq!(
        Message::decode(&frame),
        Err(WireError::MissingField {
            message_type: "remote-heads-changed",
            field: "newHeads.s1.timestamp".into()
        })
    );
}
