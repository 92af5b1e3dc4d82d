//! The wire codec against the stock JavaScript automerge-repo stack.
//!
//! `fixtures/js-frames/NNN-<type>.cbor` are frames recorded from `@automerge/automerge-repo` 2.5.x
//! by `tests/js/record-frames.mjs`; their `manifest.json` holds cbor-x's own decoding of each.
//! `fixtures/rust-frames/` are frames this codec encodes, which `tests/js/accept-frames.mjs`
//! serves to a stock JS client; the test here keeps them in step with the encoder.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ROOT};
use ciborium::Value;
use crdt_core::wire::{
    DocUnavailableMessage, EphemeralMessage, ErrorMessage, Message, PeerMessage, PeerMetadata,
    RemoteHeads, RemoteHeadsChangedMessage, RemoteSubscriptionChangeMessage, SyncMessage,
    PROTOCOL_V1,
};
use serde_json::json;
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The recorded JS frames, as (file name, type named by the file name, bytes).
fn js_frames() -> Vec<(String, String, Vec<u8>)> {
    let dir = fixtures().join("js-frames");
    let mut frames: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cbor"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            let stem = name.strip_suffix(".cbor").unwrap();
            let (number, ty) = stem
                .split_once('-')
                .unwrap_or_else(|| panic!("{name} is not NNN-<type>.cbor"));
            assert!(number.chars().all(|c| c.is_ascii_digit()), "{name}");
            (name.clone(), ty.to_owned(), fs::read(&p).unwrap())
        })
        .collect();
    frames.sort();
    assert!(!frames.is_empty(), "no fixtures in {}", dir.display());
    frames
}

#[test]
fn every_js_frame_decodes_as_its_file_name_says_and_round_trips() {
    for (name, ty, bytes) in js_frames() {
        let message = Message::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(message.type_name(), ty, "{name}");
        let again = Message::decode(&message.encode()).unwrap();
        assert_eq!(again, message, "{name} changed in a round trip");
    }
}

#[test]
fn js_frames_cover_every_type_a_js_peer_sends() {
    let types: BTreeSet<_> = js_frames().into_iter().map(|(_, ty, _)| ty).collect();
    // `leave` is documented but not sent by automerge-repo 2.5.x.
    for ty in [
        "join",
        "peer",
        "error",
        "request",
        "sync",
        "doc-unavailable",
        "ephemeral",
        "remote-subscription-change",
        "remote-heads-changed",
    ] {
        assert!(types.contains(ty), "no recorded `{ty}` frame");
    }
}

/// JSON as the recorder writes cbor-x's decoding: bytes as `{"bytes": hex}`, null/undefined
/// fields dropped, whole floats as integers (JSON.stringify does not tell them apart).
fn cbor_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Integer(i) => {
            let i = i128::from(*i);
            match (u64::try_from(i), i64::try_from(i)) {
                (Ok(u), _) => json!(u),
                (_, Ok(s)) => json!(s),
                _ => json!(i as f64),
            }
        }
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => json!(*f as i64),
        Value::Float(f) => json!(f),
        Value::Bytes(b) => json!({ "bytes": hex::encode(b) }),
        Value::Text(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::Null => serde_json::Value::Null,
        Value::Tag(_, inner) => cbor_to_json(inner),
        Value::Array(items) => items.iter().map(cbor_to_json).collect(),
        Value::Map(entries) => entries
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.as_text().unwrap().to_owned(), cbor_to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => panic!("unexpected CBOR value {other:?}"),
    }
}

#[test]
fn js_frames_decode_to_what_cbor_x_decoded() {
    let path = fixtures().join("js-frames/manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let listed = manifest["frames"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        js_frames().len(),
        "manifest and files disagree"
    );
    for entry in listed {
        let file = entry["file"].as_str().unwrap();
        let bytes = fs::read(fixtures().join("js-frames").join(file)).unwrap();
        let ours = cbor_to_json(&Message::decode(&bytes).unwrap().to_value());
        assert_eq!(
            ours, entry["message"],
            "{file}: Rust and cbor-x read it differently"
        );
    }
}

#[test]
fn js_quirks_are_present_in_the_recording_and_handled() {
    let messages: Vec<_> = js_frames()
        .into_iter()
        .map(|(_, _, b)| Message::decode(&b).unwrap())
        .collect();
    // A client without storage sends {storageId: undefined, isEphemeral: true}.
    assert!(messages.iter().any(|m| matches!(m,
        Message::Join(j) if j.peer_metadata.as_ref().is_some_and(|pm|
            pm.storage_id().is_none() && pm.is_ephemeral() == Some(true)
                && pm.value().as_map().is_some_and(|e| e.iter().any(|(_, v)| v.is_null())))
    )));
    assert!(messages.iter().any(|m| matches!(m,
        Message::Join(j) if j.peer_metadata.as_ref().and_then(PeerMetadata::storage_id).is_some()
    )));
    // `remove: undefined` when only adding.
    assert!(messages.iter().any(|m| matches!(m,
        Message::RemoteSubscriptionChange(r) if r.add.is_some() && r.remove.is_none()
    )));
    // Date.now() timestamps arrive as float64.
    assert!(messages.iter().any(|m| matches!(m,
        Message::RemoteHeadsChanged(r) if r.new_heads.values().any(|h| h.timestamp > 1_600_000_000_000)
    )));
}

// ---------------------------------------------------------------------------------------------
// Frames encoded here and served to the JS client by tests/js/accept-frames.mjs.

const CLIENT_PEER: &str = "js-client";
const SERVER_PEER: &str = "minka-rust";
const SERVER_STORAGE: &str = "minka-rust-storage";
const WATCHED_STORAGE: &str = "storage-watched-by-js";
const TITLE: &str = "Acta desde Rust";
const MONTO: i64 = 120_000;
const HEADS_TIMESTAMP: u64 = 1_764_288_000_000;
const UPDATE_ENV: &str = "MINKA_UPDATE_RUST_FRAMES";

/// base58check without a version byte, as automerge-repo writes document ids and URL heads.
fn base58check(payload: &[u8]) -> String {
    let checksum = Sha256::digest(Sha256::digest(payload));
    let mut bytes = payload.to_vec();
    bytes.extend_from_slice(&checksum[..4]);
    bs58::encode(bytes).into_string()
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

/// The frames, in the order accept-frames.mjs uses them, and the manifest it reads.
fn rust_frames() -> (Vec<(String, Vec<u8>)>, serde_json::Value) {
    let document_id = base58check(&[0x4d; 16]);
    let missing_document_id = base58check(&[0x6e; 16]);

    // A document with fixed actor and time, so the frames are reproducible.
    let mut doc = AutoCommit::new().with_actor(ActorId::from([0xab; 16]));
    doc.put(ROOT, "title", TITLE).unwrap();
    doc.put(ROOT, "monto", MONTO).unwrap();
    doc.commit_with(CommitOptions::default().with_time(0));
    let heads: Vec<String> = doc.get_heads().iter().map(|h| base58check(&h.0)).collect();

    // The sync message a peer with nothing gets: answer an empty peer's first message.
    let mut empty = AutoCommit::new();
    let (mut ours, mut theirs) = (sync::State::new(), sync::State::new());
    let first = empty.sync().generate_sync_message(&mut theirs).unwrap();
    doc.sync().receive_sync_message(&mut ours, first).unwrap();
    let sync_data = doc
        .sync()
        .generate_sync_message(&mut ours)
        .unwrap()
        .encode();

    let ephemeral_payload = Value::Map(vec![
        (Value::Text("hello".into()), Value::Text("rust".into())),
        (Value::Text("n".into()), Value::Integer(3.into())),
    ]);

    let messages: Vec<Message> = vec![
        PeerMessage {
            sender_id: SERVER_PEER.into(),
            target_id: CLIENT_PEER.into(),
            selected_protocol_version: PROTOCOL_V1.into(),
            peer_metadata: Some(PeerMetadata::new(Some(SERVER_STORAGE), false)),
            metadata: None,
        }
        .into(),
        SyncMessage {
            sender_id: SERVER_PEER.into(),
            target_id: CLIENT_PEER.into(),
            document_id: document_id.clone(),
            data: sync_data,
        }
        .into(),
        ErrorMessage {
            sender_id: Some(SERVER_PEER.into()),
            target_id: Some(CLIENT_PEER.into()),
            message: format!("change to {document_id} rejected: not allowed"),
        }
        .into(),
        EphemeralMessage {
            sender_id: SERVER_PEER.into(),
            target_id: CLIENT_PEER.into(),
            document_id: document_id.clone(),
            session_id: "rust-session".into(),
            count: 1,
            data: cbor(&ephemeral_payload),
        }
        .into(),
        RemoteHeadsChangedMessage {
            sender_id: SERVER_PEER.into(),
            target_id: CLIENT_PEER.into(),
            document_id: document_id.clone(),
            new_heads: [(
                WATCHED_STORAGE.to_owned(),
                RemoteHeads {
                    heads: heads.clone(),
                    timestamp: HEADS_TIMESTAMP,
                },
            )]
            .into(),
        }
        .into(),
        RemoteSubscriptionChangeMessage {
            sender_id: SERVER_PEER.into(),
            target_id: CLIENT_PEER.into(),
            add: Some(vec![WATCHED_STORAGE.into()]),
            remove: None,
        }
        .into(),
        DocUnavailableMessage {
            sender_id: SERVER_PEER.into(),
            target_id: CLIENT_PEER.into(),
            document_id: missing_document_id.clone(),
        }
        .into(),
    ];
    let frames: Vec<(String, Vec<u8>)> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("{:03}-{}.cbor", i + 1, m.type_name()), m.encode()))
        .collect();
    let manifest = json!({
        "generatedBy": format!("{UPDATE_ENV}=1 cargo test -p crdt-core --test wire_js_fixtures"),
        "clientPeerId": CLIENT_PEER,
        "serverPeerId": SERVER_PEER,
        "serverStorageId": SERVER_STORAGE,
        "watchedStorageId": WATCHED_STORAGE,
        "documentId": document_id,
        "missingDocumentId": missing_document_id,
        "expectedDoc": { "title": TITLE, "monto": MONTO },
        "ephemeralMessage": cbor_to_json(&ephemeral_payload),
        "heads": heads,
        "headsTimestamp": HEADS_TIMESTAMP,
        "frames": frames.iter().map(|(name, _)| name).collect::<Vec<_>>(),
    });
    (frames, manifest)
}

#[test]
fn rust_frames_are_reproducible() {
    assert_eq!(rust_frames(), rust_frames());
}

/// Regenerate with `MINKA_UPDATE_RUST_FRAMES=1 cargo test -p crdt-core --test wire_js_fixtures`,
/// then re-run `node tests/js/accept-frames.mjs`.
#[test]
fn rust_frames_fixtures_match_the_encoder() {
    let dir = fixtures().join("rust-frames");
    let (frames, manifest) = rust_frames();
    let manifest = serde_json::to_string_pretty(&manifest).unwrap() + "\n";
    if std::env::var_os(UPDATE_ENV).is_some() {
        fs::create_dir_all(&dir).unwrap();
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "cbor") {
                fs::remove_file(path).unwrap();
            }
        }
        for (name, bytes) in &frames {
            fs::write(dir.join(name), bytes).unwrap();
        }
        fs::write(dir.join("manifest.json"), manifest).unwrap();
        return;
    }
    let stale = format!(
        "{} is stale: run `{UPDATE_ENV}=1 cargo test -p crdt-core --test wire_js_fixtures`, \
         then `node tests/js/accept-frames.mjs`",
        dir.display()
    );
    for (name, bytes) in &frames {
        assert_eq!(
            fs::read(dir.join(name)).ok().as_ref(),
            Some(bytes),
            "{name}: {stale}"
        );
    }
    let on_disk = fs::read_to_string(dir.join("manifest.json")).unwrap_or_default();
    assert_eq!(on_disk, manifest, "manifest.json: {stale}");
}
