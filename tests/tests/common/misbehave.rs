//! What the misbehaving-client tests (`bad_input.rs`, `hostile.rs`) share: a well-behaved client
//! that must keep syncing through it all, the hostile but authenticated one, and CBOR builders.

use automerge::Automerge;
use ciborium::Value;
use crdt_core::wire::Message;
use crdt_core::{DocumentId, Ubigeo};
use minka_tests::harness::{token, Event, ProtoClient, TestServer};

use super::{append_description, proposal};

pub fn comas_leader(sub: &str) -> String {
    token(sub, &["leader"], "150110")
}

/// A well-behaved client with one proposal it keeps editing and syncing.
pub struct Good {
    pub client: ProtoClient,
    pub id: DocumentId,
    pub doc: Automerge,
    edits: usize,
}

impl Good {
    pub async fn start(server: &TestServer) -> Self {
        let mut client = ProtoClient::connect(&server.ws_url(&comas_leader("u-beto")), "peer-good")
            .await
            .unwrap();
        let id = DocumentId::random();
        let mut doc = proposal(Ubigeo::COMAS, "u-beto", "Pistas en Año Nuevo", &[]);
        client.sync_doc(id, &mut doc).await.unwrap();
        assert_eq!(client.server_heads(id), Some(doc.get_heads()));
        Self {
            client,
            id,
            doc,
            edits: 0,
        }
    }

    /// Makes one more change, syncs it, and checks the server acknowledged it (its heads are ours).
    pub async fn still_syncs(&mut self) {
        self.edits += 1;
        append_description(&mut self.doc, &format!(" — edición {}", self.edits));
        let events = self.client.sync_doc(self.id, &mut self.doc).await.unwrap();
        assert!(
            events
                .iter()
                .all(|e| !matches!(e, Event::Closed(_) | Event::Message(Message::Error(_)))),
            "the good client was disturbed: {events:?}"
        );
        assert_eq!(
            self.client.server_heads(self.id),
            Some(self.doc.get_heads()),
            "the server must acknowledge the good client's change"
        );
    }
}

/// The server process still answers `/healthz`.
pub fn assert_healthy(server: &TestServer) {
    let (status, body) = server.http_get("/healthz", None).unwrap();
    assert_eq!(status, 200, "{body}");
}

/// A connected client of the hostile user `u-malo` (a Comas leader).
pub async fn bad_client(server: &TestServer, peer: &str) -> ProtoClient {
    ProtoClient::connect(&server.ws_url(&comas_leader("u-malo")), peer)
        .await
        .unwrap()
}

pub fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

pub fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::Text(k.to_string()), v.clone()))
            .collect(),
    )
}

pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}
