//! The client side of the automerge-repo v1 protocol as a sans-IO state machine, shared by the
//! client SDK, the load generator and the system-test harness.
//!
//! [`ClientEngine`] owns one automerge sync state per document and decides what to send: the
//! `join` that opens a connection, the `request` or `sync` that announces a document, the reply to
//! each incoming frame, the `doc-unavailable` for a document it does not hold. It reports what
//! happened as [`Output`]s (a remote change, an acknowledgement, a rejection, a state to persist).
//! It never touches a socket, a disk or a clock: the caller feeds it frames and documents
//! ([`Documents`]) and executes the outputs. [`Backoff`] and [`Keepalive`] are the timing policies,
//! equally pure: the caller passes the time and the random number.
//!
//! **Acknowledgement.** A document counts as acknowledged when the heads the server last reported
//! (or, after a reconnect, the shared heads persisted from an earlier session) cover every change
//! the document holds. Minka's server reports a rejected change's dependencies in its place, so a
//! rejected change stays unacknowledged until the application discards or re-applies it.
//!
//! **Persisted sync state.** [`ClientEngine::persisted_state`] is the part of a document's sync
//! state worth keeping across sessions (automerge's encoded state: the shared heads) tagged with the
//! server's storage id; it is reused only with a server that announces the same storage id, as
//! automerge-repo does. With it, a reconnect with nothing new costs one small `sync` per document,
//! which Minka's server does not even answer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, ChangeHash};

use crate::ids::DocumentId;
use crate::wire::{
    DocUnavailableMessage, JoinMessage, Message, PeerMetadata, RequestMessage, SyncMessage,
    WireError, PROTOCOL_V1,
};

/// Where the engine finds the documents a frame is about.
pub trait Documents {
    /// The document with this id, if the caller holds it (an empty document counts: the engine
    /// fills it from the server).
    fn get_mut(&mut self, id: &DocumentId) -> Option<&mut Automerge>;
}

impl Documents for HashMap<DocumentId, Automerge> {
    fn get_mut(&mut self, id: &DocumentId) -> Option<&mut Automerge> {
        HashMap::get_mut(self, id)
    }
}

/// What the caller must do or may want to know after a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this frame to the server.
    Send(Vec<u8>),
    /// The server answered `join`: announce the documents now ([`ClientEngine::announce`]).
    Ready {
        server_peer_id: String,
        server_storage_id: Option<String>,
    },
    /// The server's changes were applied to this document (its heads moved).
    RemoteChange(DocumentId),
    /// The server now holds every change of this document.
    Acknowledged(DocumentId),
    /// This document's persisted sync state changed: store [`ClientEngine::persisted_state`]
    /// after the document itself.
    PersistState(DocumentId),
    /// The server does not have this document (or it may not be read by this user).
    Unavailable(DocumentId),
    /// The server refused a change of this document. `change` is the first refused change when the
    /// server named it (changes that depend on it are refused too).
    Rejected {
        doc: DocumentId,
        change: Option<ChangeHash>,
        reason: String,
    },
    /// Any other `error` from the server.
    ServerError(String),
}

/// A frame the engine cannot use.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("undecodable frame: {0}")]
    Wire(#[from] WireError),
    #[error("document {doc}: bad sync message: {reason}")]
    Sync { doc: DocumentId, reason: String },
    #[error("the server sent `{0}` before answering `join`")]
    NotJoined(&'static str),
}

/// How one document stands against the server, from the engine's view (the SDK adds rejections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// The server has never confirmed any of it.
    LocalOnly,
    /// The server lacks this many of its changes.
    Pending(usize),
    /// The server holds every change.
    Synced,
}

#[derive(Debug, Default)]
struct DocSync {
    state: sync::State,
    /// The storage id of the server `state` belongs to.
    server_storage_id: Option<String>,
}

/// The server a connection reached.
#[derive(Debug, Clone)]
struct Server {
    peer_id: String,
    storage_id: Option<String>,
}

/// The client side of the protocol for one peer (one phone), across connections.
#[derive(Debug)]
pub struct ClientEngine {
    peer_id: String,
    storage_id: Option<String>,
    server: Option<Server>,
    /// Set between `join` and the server's `peer`.
    joining: bool,
    docs: HashMap<DocumentId, DocSync>,
}

impl ClientEngine {
    /// An engine for a peer with this id and (for a peer that persists documents) storage id.
    pub fn new(peer_id: impl Into<String>, storage_id: Option<String>) -> Self {
        Self {
            peer_id: peer_id.into(),
            storage_id,
            server: None,
            joining: false,
            docs: HashMap::new(),
        }
    }

    /// This peer's id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The server's peer id while connected.
    pub fn server_peer_id(&self) -> Option<&str> {
        self.server.as_ref().map(|s| s.peer_id.as_str())
    }

    /// The server's storage id while connected.
    pub fn server_storage_id(&self) -> Option<&str> {
        self.server.as_ref().and_then(|s| s.storage_id.as_deref())
    }

    /// Whether the server has answered `join` on the current connection.
    pub fn is_connected(&self) -> bool {
        self.server.is_some()
    }

    /// Starts a connection: the `join` frame to send first.
    pub fn join(&mut self) -> Vec<u8> {
        self.disconnected();
        self.joining = true;
        Message::Join(JoinMessage {
            sender_id: self.peer_id.clone(),
            supported_protocol_versions: vec![PROTOCOL_V1.to_string()],
            peer_metadata: Some(PeerMetadata::new(self.storage_id.as_deref(), false)),
            metadata: None,
        })
        .encode()
    }

    /// The connection ended: in-flight sync state is dropped, the persisted part is kept.
    pub fn disconnected(&mut self) {
        self.server = None;
        self.joining = false;
        for d in self.docs.values_mut() {
            d.state = reload(&d.state);
        }
    }

    /// Makes the engine track a document (idempotent). Does not send anything.
    pub fn track(&mut self, id: DocumentId) {
        self.docs.entry(id).or_default();
    }

    /// Stops tracking a document.
    pub fn forget(&mut self, id: &DocumentId) {
        self.docs.remove(id);
    }

    /// Documents tracked.
    pub fn tracked(&self) -> impl Iterator<Item = &DocumentId> {
        self.docs.keys()
    }

    /// Restores a document's sync state saved by [`Self::persisted_state`]. A state that does not
    /// decode is ignored (the next sync starts from scratch, which costs bytes, never data).
    pub fn load_state(&mut self, id: DocumentId, bytes: &[u8]) {
        let entry = self.docs.entry(id).or_default();
        if let Some((storage, state)) = decode_persisted(bytes) {
            entry.state = state;
            entry.server_storage_id = storage;
        }
    }

    /// The part of a document's sync state to keep across sessions (see the module docs).
    pub fn persisted_state(&self, id: &DocumentId) -> Option<Vec<u8>> {
        let d = self.docs.get(id)?;
        let storage = d.server_storage_id.as_deref().unwrap_or("");
        let state = d.state.encode();
        let mut out = Vec::with_capacity(1 + storage.len() + state.len());
        out.push(u8::try_from(storage.len()).unwrap_or(0));
        out.extend_from_slice(&storage.as_bytes()[..usize::from(out[0])]);
        out.extend_from_slice(&state);
        Some(out)
    }

    /// Forgets what the server was told about a document in this session (after the document was
    /// rebuilt without some changes), keeping what it is known to hold.
    pub fn reset_session(&mut self, id: &DocumentId) {
        if let Some(d) = self.docs.get_mut(id) {
            d.state = reload(&d.state);
        }
    }

    /// The heads the server is known to hold for a document: those it reported in this session,
    /// else the shared heads of the persisted state.
    pub fn server_heads(&self, id: &DocumentId) -> Vec<ChangeHash> {
        match self.docs.get(id) {
            Some(d) => match &d.state.their_heads {
                Some(h) => h.clone(),
                None => d.state.shared_heads.clone(),
            },
            None => Vec::new(),
        }
    }

    /// The changes of `doc` the server is not known to hold.
    pub fn unacknowledged(&self, id: &DocumentId, doc: &Automerge) -> Vec<ChangeHash> {
        match self.docs.get(id) {
            Some(d) => unacknowledged(&d.state, doc),
            None => unacknowledged(&sync::State::new(), doc),
        }
    }

    /// How a document stands against the server.
    pub fn status(&self, id: &DocumentId, doc: &Automerge) -> SyncStatus {
        let pending = self.unacknowledged(id, doc).len();
        if pending == 0 {
            SyncStatus::Synced
        } else if self.server_heads(id).is_empty() {
            SyncStatus::LocalOnly
        } else {
            SyncStatus::Pending(pending)
        }
    }

    /// Announces a document on the current connection: a `request` when the caller holds none of
    /// it (the server answers with the document, or `doc-unavailable`), a `sync` otherwise. Also
    /// what to call after a local change. `None` when not connected or nothing needs saying.
    pub fn announce(&mut self, id: DocumentId, doc: &Automerge) -> Option<Vec<u8>> {
        let server = self.server.clone()?;
        let d = self.docs.entry(id).or_default();
        // A document first tracked during this session belongs to this server's state too.
        d.server_storage_id.clone_from(&server.storage_id);
        let msg = doc.generate_sync_message(&mut d.state)?;
        let request = doc.get_heads().is_empty();
        Some(sync_frame(&self.peer_id, &server.peer_id, id, msg, request))
    }

    /// Handles one frame from the server.
    pub fn handle_frame(
        &mut self,
        frame: &[u8],
        docs: &mut dyn Documents,
    ) -> Result<Vec<Output>, EngineError> {
        let msg = Message::decode(frame)?;
        let mut out = Vec::new();
        match msg {
            Message::Peer(p) => {
                let storage = p
                    .peer_metadata
                    .as_ref()
                    .or(p.metadata.as_ref())
                    .and_then(|m| m.storage_id().map(str::to_string));
                for d in self.docs.values_mut() {
                    if storage.is_none() || d.server_storage_id != storage {
                        d.state = sync::State::new();
                        d.server_storage_id = storage.clone();
                    }
                }
                self.joining = false;
                self.server = Some(Server {
                    peer_id: p.sender_id.clone(),
                    storage_id: storage.clone(),
                });
                out.push(Output::Ready {
                    server_peer_id: p.sender_id,
                    server_storage_id: storage,
                });
            }
            Message::Sync(SyncMessage {
                document_id, data, ..
            })
            | Message::Request(RequestMessage {
                document_id, data, ..
            }) => {
                let server = self.server.clone().ok_or(EngineError::NotJoined("sync"))?;
                let Ok(id) = document_id.parse::<DocumentId>() else {
                    return Ok(out);
                };
                let (Some(doc), Some(d)) = (docs.get_mut(&id), self.docs.get_mut(&id)) else {
                    out.push(Output::Send(
                        Message::DocUnavailable(DocUnavailableMessage {
                            sender_id: self.peer_id.clone(),
                            target_id: server.peer_id,
                            document_id,
                        })
                        .encode(),
                    ));
                    return Ok(out);
                };
                let msg = sync::Message::decode(&data).map_err(|e| EngineError::Sync {
                    doc: id,
                    reason: e.to_string(),
                })?;
                let was_acked = unacknowledged(&d.state, doc).is_empty();
                let before = doc.get_heads();
                doc.receive_sync_message(&mut d.state, msg)
                    .map_err(|e| EngineError::Sync {
                        doc: id,
                        reason: e.to_string(),
                    })?;
                d.server_storage_id.clone_from(&server.storage_id);
                if doc.get_heads() != before {
                    out.push(Output::RemoteChange(id));
                }
                out.push(Output::PersistState(id));
                if !was_acked
                    && !doc.get_heads().is_empty()
                    && unacknowledged(&d.state, doc).is_empty()
                {
                    out.push(Output::Acknowledged(id));
                }
                if let Some(reply) = doc.generate_sync_message(&mut d.state) {
                    out.push(Output::Send(sync_frame(
                        &self.peer_id,
                        &server.peer_id,
                        id,
                        reply,
                        false,
                    )));
                }
            }
            Message::DocUnavailable(m) => {
                if let Ok(id) = m.document_id.parse() {
                    out.push(Output::Unavailable(id));
                }
            }
            Message::Error(e) => out.push(match parse_rejection(&e.message) {
                Some((doc, change, reason)) => Output::Rejected {
                    doc,
                    change,
                    reason,
                },
                None => Output::ServerError(e.message),
            }),
            // `join`, `leave`, `ephemeral`, remote-heads messages: nothing for a phone to do.
            _ => {}
        }
        Ok(out)
    }
}

/// The changes of `doc` not covered by the heads the server reported in this session (else the
/// persisted shared heads).
fn unacknowledged(state: &sync::State, doc: &Automerge) -> Vec<ChangeHash> {
    let heads = state.their_heads.as_ref().unwrap_or(&state.shared_heads);
    let known: Vec<ChangeHash> = heads
        .iter()
        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
        .copied()
        .collect();
    doc.get_changes_meta(&known)
        .into_iter()
        .map(|c| c.hash)
        .collect()
}

/// The persisted part of a sync state, as a fresh session starts with it.
fn reload(state: &sync::State) -> sync::State {
    sync::State::decode(&state.encode()).unwrap_or_default()
}

fn decode_persisted(bytes: &[u8]) -> Option<(Option<String>, sync::State)> {
    let len = usize::from(*bytes.first()?);
    let storage = std::str::from_utf8(bytes.get(1..1 + len)?).ok()?;
    let state = sync::State::decode(bytes.get(1 + len..)?).ok()?;
    Some(((!storage.is_empty()).then(|| storage.to_string()), state))
}

fn sync_frame(
    sender: &str,
    target: &str,
    id: DocumentId,
    msg: sync::Message,
    request: bool,
) -> Vec<u8> {
    let (sender_id, target_id, document_id, data) = (
        sender.to_string(),
        target.to_string(),
        id.to_string(),
        msg.encode(),
    );
    if request {
        Message::Request(RequestMessage {
            sender_id,
            target_id,
            document_id,
            data,
        })
    } else {
        Message::Sync(SyncMessage {
            sender_id,
            target_id,
            document_id,
            data,
        })
    }
    .encode()
}

/// Reads Minka's rejection notice, `document <id>: change <hash> rejected: <reason>`. For a change
/// refused because it builds on a refused one (`depends on a rejected change: <root>`), the change
/// returned is the root: dropping it drops the other too.
pub fn parse_rejection(message: &str) -> Option<(DocumentId, Option<ChangeHash>, String)> {
    let rest = message.strip_prefix("document ")?;
    let (id, rest) = rest.split_once(": ")?;
    let doc: DocumentId = id.parse().ok()?;
    let rest = rest.strip_prefix("change ")?;
    let (hash, reason) = rest.split_once(" rejected: ")?;
    // A change refused because it builds on a refused one names that one: it is what to drop.
    let root = reason
        .strip_prefix("depends on a rejected change: ")
        .and_then(|r| r.get(..64))
        .and_then(|h| h.parse::<ChangeHash>().ok());
    let change = root.or_else(|| hash.parse::<ChangeHash>().ok());
    Some((doc, change, reason.to_string()))
}

/// Reconnect delays: exponential backoff with full jitter.
///
/// The n-th consecutive failed attempt waits a uniformly random time in `[0, min(cap, base·2ⁿ)]`
/// (AWS's "full jitter", which spreads a crowd of phones reconnecting after an outage). The
/// attempt counter resets only when a connection has stayed up for `stable_after`: a link that
/// connects and drops at once keeps backing off instead of reconnecting every `base`.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub stable_after: Duration,
    attempt: u32,
    connected_at: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(500),
            Duration::from_secs(60),
            Duration::from_secs(30),
        )
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, stable_after: Duration) -> Self {
        Self {
            base,
            cap,
            stable_after,
            attempt: 0,
            connected_at: None,
        }
    }

    /// Consecutive attempts since the counter was last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt, given a uniform random number in `[0, 1)`; counts the
    /// attempt.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let delay = self.ceiling().mul_f64(random.clamp(0.0, 1.0));
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// A connection was established (the server answered `join`) at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection ended at `now`: the counter resets if it had stayed up long enough.
    pub fn disconnected(&mut self, now: Instant) {
        if let Some(at) = self.connected_at.take() {
            if now.saturating_duration_since(at) >= self.stable_after {
                self.attempt = 0;
            }
        }
    }
}

/// Keepalive on an idle connection: ping after `interval` of silence from the server, give the
/// connection up after `idle_timeout` of silence (a mobile socket that died without a FIN).
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub interval: Duration,
    pub idle_timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(45),
        }
    }
}

/// What [`Keepalive::poll`] says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// Nothing until the returned instant.
    Wait(Instant),
    /// Send a ping now, then poll again.
    Ping,
    /// The connection is dead: close it and reconnect.
    Dead,
}

impl Keepalive {
    /// Given when anything last arrived from the server and when the last ping went out.
    pub fn poll(
        &self,
        now: Instant,
        last_received: Instant,
        last_ping: Option<Instant>,
    ) -> KeepaliveAction {
        let silent = now.saturating_duration_since(last_received);
        if silent >= self.idle_timeout {
            return KeepaliveAction::Dead;
        }
        let pinged_since = last_ping.is_some_and(|p| p >= last_received);
        if silent >= self.interval && !pinged_since {
            return KeepaliveAction::Ping;
        }
        let next = if pinged_since {
            last_received + self.idle_timeout
        } else {
            last_received + self.interval
        };
        KeepaliveAction::Wait(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    fn server_peer(engine_docs: &mut HashMap<DocumentId, Automerge>) -> (ClientEngine, Vec<u8>) {
        let _ = engine_docs;
        let mut e = ClientEngine::new("phone-1", Some("store-1".into()));
        let join = e.join();
        (e, join)
    }

    fn peer_frame(storage: &str) -> Vec<u8> {
        Message::Peer(crate::wire::PeerMessage {
            sender_id: "server".into(),
            target_id: "phone-1".into(),
            selected_protocol_version: PROTOCOL_V1.into(),
            peer_metadata: Some(PeerMetadata::new(Some(storage), false)),
            metadata: None,
        })
        .encode()
    }

    fn edit(doc: &mut Automerge, key: &str, value: i64) {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, value).unwrap();
        tx.commit();
    }

    /// Runs the engine against an automerge peer standing in for the server until quiet; returns
    /// the frames the engine sent.
    fn exchange(
        engine: &mut ClientEngine,
        docs: &mut HashMap<DocumentId, Automerge>,
        server: &mut HashMap<DocumentId, (Automerge, sync::State)>,
        mut outbox: Vec<Vec<u8>>,
    ) -> (usize, Vec<Output>) {
        let mut sent = 0;
        let mut outputs = Vec::new();
        while let Some(frame) = outbox.pop() {
            sent += 1;
            let (document_id, data) = match Message::decode(&frame).unwrap() {
                Message::Sync(m) => (m.document_id, m.data),
                Message::Request(m) => (m.document_id, m.data),
                _ => continue,
            };
            let id: DocumentId = document_id.parse().unwrap();
            let (sdoc, sstate) = server.entry(id).or_default();
            sdoc.receive_sync_message(sstate, sync::Message::decode(&data).unwrap())
                .unwrap();
            if let Some(reply) = sdoc.generate_sync_message(sstate) {
                let frame = sync_frame("server", "phone-1", id, reply, false);
                for o in engine.handle_frame(&frame, docs).unwrap() {
                    match o {
                        Output::Send(f) => outbox.push(f),
                        other => outputs.push(other),
                    }
                }
            }
        }
        (sent, outputs)
    }

    #[test]
    fn a_document_is_acknowledged_once_the_server_holds_every_change() {
        let mut docs = HashMap::new();
        let id = DocumentId::random();
        let mut doc = Automerge::new();
        edit(&mut doc, "a", 1);
        docs.insert(id, doc);
        let (mut e, _join) = server_peer(&mut docs);
        e.track(id);
        assert_eq!(e.status(&id, &docs[&id]), SyncStatus::LocalOnly);
        let out = e.handle_frame(&peer_frame("srv-1"), &mut docs).unwrap();
        assert!(matches!(out[0], Output::Ready { .. }));
        let first = e.announce(id, &docs[&id]).unwrap();
        let mut server = HashMap::new();
        let (_, outputs) = exchange(&mut e, &mut docs, &mut server, vec![first]);
        assert!(outputs.contains(&Output::Acknowledged(id)), "{outputs:?}");
        assert_eq!(e.status(&id, &docs[&id]), SyncStatus::Synced);
        assert_eq!(server[&id].0.get_heads(), docs[&id].get_heads());

        // A local change is pending until the server has it.
        edit(docs.get_mut(&id).unwrap(), "b", 2);
        assert_eq!(e.status(&id, &docs[&id]), SyncStatus::Pending(1));
        let f = e.announce(id, &docs[&id]).unwrap();
        let (_, outputs) = exchange(&mut e, &mut docs, &mut server, vec![f]);
        assert!(outputs.contains(&Output::Acknowledged(id)), "{outputs:?}");
        assert_eq!(e.status(&id, &docs[&id]), SyncStatus::Synced);
    }

    #[test]
    fn a_persisted_state_makes_a_reconnect_cost_one_small_message() {
        let mut docs = HashMap::new();
        let id = DocumentId::random();
        let mut doc = Automerge::new();
        for i in 0..50 {
            edit(&mut doc, "n", i);
        }
        docs.insert(id, doc);
        let (mut e, _) = server_peer(&mut docs);
        e.track(id);
        e.handle_frame(&peer_frame("srv-1"), &mut docs).unwrap();
        let first = e.announce(id, &docs[&id]).unwrap();
        let mut server = HashMap::new();
        exchange(&mut e, &mut docs, &mut server, vec![first]);
        let saved = e.persisted_state(&id).unwrap();

        // A new process: a fresh engine restores the state.
        let mut e2 = ClientEngine::new("phone-1", Some("store-1".into()));
        e2.load_state(id, &saved);
        assert_eq!(e2.status(&id, &docs[&id]), SyncStatus::Synced);
        e2.join();
        e2.handle_frame(&peer_frame("srv-1"), &mut docs).unwrap();
        let hello = e2.announce(id, &docs[&id]).unwrap();
        assert!(hello.len() < 200, "{} bytes", hello.len());
        let decoded = match Message::decode(&hello).unwrap() {
            Message::Sync(s) => sync::Message::decode(&s.data).unwrap(),
            other => panic!("expected sync, got {other:?}"),
        };
        assert!(decoded.changes.is_empty());

        // Another server (other storage id): the state is not trusted.
        let mut e3 = ClientEngine::new("phone-1", Some("store-1".into()));
        e3.load_state(id, &saved);
        e3.join();
        e3.handle_frame(&peer_frame("srv-2"), &mut docs).unwrap();
        assert_eq!(e3.status(&id, &docs[&id]), SyncStatus::LocalOnly);
    }

    #[test]
    fn a_document_first_synced_mid_session_keeps_its_state_across_reconnects() {
        let mut docs = HashMap::new();
        let (mut e, _) = server_peer(&mut docs);
        e.handle_frame(&peer_frame("srv-1"), &mut docs).unwrap();
        // Created after the server answered `join`.
        let id = DocumentId::random();
        let mut doc = Automerge::new();
        edit(&mut doc, "a", 1);
        docs.insert(id, doc);
        let first = e.announce(id, &docs[&id]).unwrap();
        let mut server = HashMap::new();
        exchange(&mut e, &mut docs, &mut server, vec![first]);
        let saved = e.persisted_state(&id).unwrap();
        let mut e2 = ClientEngine::new("phone-1", Some("store-1".into()));
        e2.load_state(id, &saved);
        e2.join();
        e2.handle_frame(&peer_frame("srv-1"), &mut docs).unwrap();
        assert_eq!(e2.status(&id, &docs[&id]), SyncStatus::Synced);
    }

    #[test]
    fn an_empty_document_is_requested_and_an_unknown_one_is_declined() {
        let mut docs = HashMap::new();
        let id = DocumentId::random();
        docs.insert(id, Automerge::new());
        let (mut e, _) = server_peer(&mut docs);
        e.handle_frame(&peer_frame("srv"), &mut docs).unwrap();
        let f = e.announce(id, &docs[&id]).unwrap();
        assert_eq!(Message::decode(&f).unwrap().type_name(), "request");

        let other = DocumentId::random();
        let mut sdoc = Automerge::new();
        edit(&mut sdoc, "x", 1);
        let msg = sdoc.generate_sync_message(&mut sync::State::new()).unwrap();
        let out = e
            .handle_frame(
                &sync_frame("server", "phone-1", other, msg, false),
                &mut docs,
            )
            .unwrap();
        let [Output::Send(f)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(Message::decode(f).unwrap().type_name(), "doc-unavailable");
    }

    #[test]
    fn a_sync_before_peer_is_an_error() {
        let mut docs = HashMap::new();
        let mut e = ClientEngine::new("p", None);
        let msg = Automerge::new()
            .generate_sync_message(&mut sync::State::new())
            .unwrap();
        let f = sync_frame("s", "p", DocumentId::random(), msg, false);
        assert!(matches!(
            e.handle_frame(&f, &mut docs),
            Err(EngineError::NotJoined(_))
        ));
        assert!(matches!(
            e.handle_frame(b"\xff\x00", &mut docs),
            Err(EngineError::Wire(_))
        ));
    }

    #[test]
    fn rejection_notices_are_parsed() {
        let id = DocumentId::random();
        let hash = ChangeHash([7u8; 32]);
        let msg = format!("document {id}: change {hash} rejected: status: no (and 2 more)");
        assert_eq!(
            parse_rejection(&msg),
            Some((id, Some(hash), "status: no (and 2 more)".to_string()))
        );
        assert_eq!(
            parse_rejection(&format!("document {id}: sync message rejected: bad")),
            None
        );
        assert_eq!(parse_rejection("too many documents"), None);
        let root = ChangeHash([9u8; 32]);
        let msg =
            format!("document {id}: change {hash} rejected: depends on a rejected change: {root}");
        assert_eq!(parse_rejection(&msg).unwrap().1, Some(root));
    }

    #[test]
    fn backoff_follows_full_jitter_with_a_cap() {
        let mut b = Backoff::default();
        let expected_ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0];
        for ceiling in expected_ceilings {
            assert_eq!(b.ceiling(), Duration::from_secs_f64(ceiling));
            // The largest random number gives the ceiling; the smallest, no wait.
            let mut probe = b.clone();
            assert_eq!(probe.next_delay(0.0), Duration::ZERO);
            let d = b.next_delay(0.999_999);
            assert!(d <= Duration::from_secs_f64(ceiling), "{d:?}");
            assert!(d >= Duration::from_secs_f64(ceiling * 0.99), "{d:?}");
        }
        // Many attempts never overflow and stay at the cap.
        for _ in 0..100 {
            b.next_delay(0.5);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
    }

    #[test]
    fn backoff_resets_only_after_a_stable_connection() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.next_delay(0.5);
        }
        // A flapping link: connected, dropped after 2 s: keeps backing off.
        b.connected(t0);
        b.disconnected(t0 + Duration::from_secs(2));
        assert_eq!(b.attempt(), 5);
        assert_eq!(b.ceiling(), Duration::from_secs(16));
        // Up for 30 s: the next failure starts from the base again.
        b.connected(t0 + Duration::from_secs(10));
        b.disconnected(t0 + Duration::from_secs(40));
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn keepalive_pings_then_gives_up() {
        let k = Keepalive::default();
        let t0 = Instant::now();
        assert_eq!(
            k.poll(t0 + Duration::from_secs(5), t0, None),
            KeepaliveAction::Wait(t0 + Duration::from_secs(20))
        );
        assert_eq!(
            k.poll(t0 + Duration::from_secs(20), t0, None),
            KeepaliveAction::Ping
        );
        let pinged = t0 + Duration::from_secs(20);
        assert_eq!(
            k.poll(t0 + Duration::from_secs(21), t0, Some(pinged)),
            KeepaliveAction::Wait(t0 + Duration::from_secs(45))
        );
        assert_eq!(
            k.poll(t0 + Duration::from_secs(45), t0, Some(pinged)),
            KeepaliveAction::Dead
        );
        // A pong (anything received) after the ping restarts the clock.
        let pong = t0 + Duration::from_secs(22);
        assert_eq!(
            k.poll(t0 + Duration::from_secs(30), pong, Some(pinged)),
            KeepaliveAction::Wait(pong + Duration::from_secs(20))
        );
    }
}
