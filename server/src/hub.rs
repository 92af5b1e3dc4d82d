//! The document hub: one task per loaded document.
//!
//! Connections send [`DocCmd`]s through a bounded channel; the document's task takes every command
//! waiting (a batch), applies the incoming sync messages, writes the new changes as one incremental
//! chunk, waits for the group commit (flush + fsync), and only then generates sync messages for every
//! peer of the document. A peer therefore never sees heads from the server that are not durable.
//!
//! Idle documents with no peers are unloaded after [`HubConfig::idle_unload`], and the least
//! recently used ones are evicted when more than [`HubConfig::max_loaded_docs`] are loaded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge, ChangeHash, ReadDoc};
use crdt_core::schema::{
    apply_edits, budget_violations, Acta, ActaStatus, BudgetContext, DocType, DocumentHeader, Edit,
    IndexEntry, NewDocument, NewIndex,
};
use crdt_core::wire::{
    DocUnavailableMessage, EphemeralMessage, ErrorMessage, Message, SyncMessage,
};
use crdt_core::{DocumentId, Ubigeo};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{now_unix, AuthUser};
use crate::durability::Durability;
use crate::gate::{parse_chunks, refused_root, sanitize_heads, Gate};
use crate::held::{Held, HeldLimits, NotHeld, PeerHeld};
use crate::metrics::Metrics;
use crate::store::{assemble, ChunkKey, ChunkLedger, DocStore, StoreError};

/// Tuning of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The server's peer id on the wire.
    pub server_peer_id: String,
    /// Most documents kept in memory; beyond it, idle ones are evicted least recently used first.
    pub max_loaded_docs: usize,
    /// A document with no peers is unloaded after this long without commands.
    pub idle_unload: Duration,
    /// Capacity of each document's command channel.
    pub doc_queue: usize,
    /// Most commands handled in one batch.
    pub max_batch: usize,
    /// Judge every incoming change (actor binding, permissions). Only the benchmark turns it off.
    pub check_writes: bool,
    /// Most absent documents one connection may wait on.
    pub max_waiting_per_conn: usize,
    /// Bounds of the changes held until their dependencies arrive.
    pub held: HeldLimits,
    /// Most refused changes kept in the quarantine for one user.
    pub max_quarantine_per_user: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            server_peer_id: "minka-server".into(),
            max_loaded_docs: 10_000,
            idle_unload: Duration::from_secs(60),
            doc_queue: 1024,
            max_batch: 512,
            check_writes: true,
            max_waiting_per_conn: 10_000,
            held: HeldLimits::default(),
            max_quarantine_per_user: crate::gate::MAX_QUARANTINE_PER_USER,
        }
    }
}

/// The sending half of a connection, as the hub sees it.
#[derive(Clone)]
pub struct PeerHandle {
    pub conn_id: u64,
    /// The peer id the client announced in `join`.
    pub peer_id: String,
    pub user: Arc<AuthUser>,
    out: mpsc::Sender<Vec<u8>>,
    kill: Arc<Killer>,
    metrics: Arc<Metrics>,
    /// What this connection has held, over all its documents.
    pub(crate) held: Arc<PeerHeld>,
    /// Charges the bytes of sync replies to this peer's own messages to its user's budget.
    reply_cost: Option<Arc<ReplyCost>>,
    /// Bounds the bytes queued for the connection, besides `out`'s bound in frames (unbounded
    /// unless [`Self::with_queue`] sets it).
    queue: Arc<SendQueue>,
}

/// Bytes queued for one connection and not yet taken by it for its socket. A client that does
/// not read is disconnected once they pass the limit: a bound in frames alone lets a queue of
/// large frames (big documents, 1 MiB ephemeral messages) hold hundreds of MiB.
pub struct SendQueue {
    bytes: AtomicUsize,
    max: usize,
}

impl SendQueue {
    pub fn new(max: usize) -> Self {
        Self {
            bytes: AtomicUsize::new(0),
            max,
        }
    }

    /// Counts `len` more bytes queued; false (counting nothing) when that would pass the limit
    /// with something already queued (one message over the limit still goes out alone).
    fn put(&self, len: usize) -> bool {
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before.saturating_add(len) > self.max {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The connection took `len` bytes off the queue.
    pub fn taken(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::Relaxed);
    }
}

/// Called with the size in bytes of each sync reply a document sends a peer in answer to the
/// peer's own message (relays of others' changes are not charged to it).
pub type ReplyCost = dyn Fn(usize) + Send + Sync;

/// Ends a connection from outside its task, with a reason it reports to the client.
#[derive(Default)]
pub struct Killer {
    token: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl Killer {
    pub fn kill(&self, reason: impl Into<String>) {
        let mut r = self.reason.lock().unwrap();
        if r.is_none() {
            *r = Some(reason.into());
        }
        self.token.cancel();
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().unwrap().clone()
    }
}

impl PeerHandle {
    pub fn new(
        conn_id: u64,
        peer_id: String,
        user: Arc<AuthUser>,
        out: mpsc::Sender<Vec<u8>>,
        kill: Arc<Killer>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            conn_id,
            peer_id,
            user,
            out,
            kill,
            metrics,
            held: Arc::default(),
            reply_cost: None,
            queue: Arc::new(SendQueue::new(usize::MAX)),
        }
    }

    /// Bounds what is queued for this peer in bytes too (see [`SendQueue`]).
    pub fn with_queue(mut self, queue: Arc<SendQueue>) -> Self {
        self.queue = queue;
        self
    }

    /// Charges the replies to this peer's messages with `cost` (see [`ReplyCost`]).
    pub fn with_reply_cost(mut self, cost: Arc<ReplyCost>) -> Self {
        self.reply_cost = Some(cost);
        self
    }

    /// Queues a message without waiting. A full queue means the client does not read: the
    /// connection is closed rather than letting its queue grow without bound.
    pub fn send(&self, msg: &Message) -> bool {
        let frame = msg.encode();
        let len = frame.len();
        if !self.queue.put(len) {
            self.not_reading(format!(
                "send queue full: the client is not reading (over {} bytes waiting)",
                self.queue.max
            ));
            return false;
        }
        match self.out.try_send(frame) {
            Ok(()) => true,
            Err(e) => {
                self.queue.taken(len);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.not_reading("send queue full: the client is not reading".into());
                }
                false
            }
        }
    }

    /// Closes a connection whose client does not read, counting it.
    fn not_reading(&self, why: String) {
        self.metrics.slow_consumers_closed.add(1);
        self.kill.kill(why);
    }

    /// Sends `doc-unavailable` for a document.
    pub fn send_unavailable(&self, from: &str, doc: &DocumentId) {
        self.send(&Message::DocUnavailable(DocUnavailableMessage {
            sender_id: from.to_string(),
            target_id: self.peer_id.clone(),
            document_id: doc.to_string(),
        }));
    }

    /// Sends an `error` message naming the document.
    pub fn send_error(&self, from: &str, text: String) {
        self.send(&Message::Error(ErrorMessage {
            sender_id: Some(from.to_string()),
            target_id: Some(self.peer_id.clone()),
            message: text,
        }));
    }
}

/// What a connection (or the server itself) asks of a document's task.
pub enum DocCmd {
    /// A `sync` or `request` message from a peer.
    Sync {
        peer: PeerHandle,
        data: Vec<u8>,
        request: bool,
    },
    /// An `ephemeral` message to relay to the document's other peers.
    Ephemeral {
        from: PeerHandle,
        msg: EphemeralMessage,
    },
    /// The connection closed.
    Leave { conn_id: u64 },
    /// Add a document to this index document (the server's own write).
    IndexAdd {
        district: Ubigeo,
        process_year: u16,
        doc: DocumentId,
        entry: IndexEntry,
    },
    /// A copy of the current document, for readers such as the HTTP API.
    Snapshot { reply: oneshot::Sender<Automerge> },
    /// Seal an acta (the server's own write), after checking signatures and the budget.
    Seal {
        user: Arc<AuthUser>,
        budget: BudgetContext,
        reply: oneshot::Sender<Result<SealRecord, SealError>>,
    },
    /// Another node sharing the store wrote this document: read what is new from the store and
    /// relay it to this node's peers.
    Refresh,
    /// Persist and stop (eviction or shutdown).
    Unload,
}

/// What sealing stores: the sealed heads and the SHA-256 of the sealed state's canonical JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SealRecord {
    pub document_id: String,
    pub heads: Vec<String>,
    pub sha256: String,
    pub sealed_by: String,
    pub sealed_at: u64,
}

/// Why an acta could not be sealed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SealError {
    #[error("{0}")]
    NotSealable(String),
    #[error("budget invariants violated")]
    Budget(Vec<crdt_core::schema::Warning>),
    #[error("server error: {0}")]
    Internal(String),
}

/// The SHA-256 (hex) of a document's canonical JSON at `heads`.
pub fn state_hash(doc: &Automerge, heads: &[ChangeHash]) -> String {
    use sha2::{Digest, Sha256};
    let json = crdt_core::schema::to_json_at(doc, heads);
    hex::encode(Sha256::digest(serde_json::to_vec(&json).expect("json")))
}

/// The district a batch of changes writes into the document's header, if any.
fn claimed_district(doc: &Automerge, changes: &[automerge::Change]) -> Option<Ubigeo> {
    let mut scratch = doc.clone();
    scratch.apply_changes(changes.iter().cloned()).ok()?;
    DocumentHeader::read(&scratch).ok().map(|h| h.district)
}

/// ` (and N more)` after the first of `count` changes a notice names; nothing when it is the only one.
fn and_more(count: usize) -> String {
    match count {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    }
}

/// Meta table of seal records, keyed by document id bytes.
pub const SEALS: &str = "seals";

/// Meta table of documents stored but not yet durably listed in their district index, keyed by
/// document id bytes. Written with a document's first persist, removed once the index lists it,
/// replayed at start ([`Hub::repair_index`]).
pub const UNINDEXED: &str = "unindexed";

/// What the index needs of a document, kept until the index lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexMarker {
    pub district: String,
    pub process_year: u16,
    pub doc_type: String,
    pub created_at: i64,
}

impl IndexMarker {
    fn new(header: &DocumentHeader, created_at: i64) -> Self {
        Self {
            district: header.district.to_string(),
            process_year: header.process_year,
            doc_type: header.doc_type.to_string(),
            created_at,
        }
    }
}

/// Peers waiting on documents that do not exist yet, for the life of their connection (a stock
/// client never asks twice). Kept in the hub, not in a document task, so that an absent
/// document holds no task; bounded per connection.
#[derive(Default)]
struct Waiting {
    by_doc: HashMap<DocumentId, HashMap<u64, PeerState>>,
    per_conn: HashMap<u64, usize>,
}

struct Slot {
    tx: mpsc::Sender<DocCmd>,
    last_used: Arc<AtomicU64>,
    peers: Arc<AtomicUsize>,
}

struct Inner {
    store: Arc<dyn DocStore>,
    durability: Durability,
    metrics: Arc<Metrics>,
    config: HubConfig,
    actor: ActorId,
    docs: Mutex<HashMap<DocumentId, Slot>>,
    clock: AtomicU64,
    tracker: TaskTracker,
    runtime: tokio::runtime::Handle,
    stopping: AtomicBool,
    /// Fires when shutdown starts (ends the store follower).
    stopped: CancellationToken,
    gate: Gate,
    waiting: Mutex<Waiting>,
    /// Peers waiting in total, so the common case (none) skips the lock.
    waiters: AtomicUsize,
    events: tokio::sync::broadcast::Sender<DocEvent>,
}

/// A document changed durably (for the review page's live updates).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DocEvent {
    pub id: String,
    pub district: String,
    #[serde(rename = "type")]
    pub doc_type: String,
}

/// Handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

/// The hub is shutting down and takes no new commands.
#[derive(Debug, thiserror::Error)]
#[error("server is shutting down")]
pub struct HubStopped;

impl Hub {
    /// Starts a hub whose document tasks run on `runtime`.
    pub fn new(
        store: Arc<dyn DocStore>,
        durability: Durability,
        metrics: Arc<Metrics>,
        config: HubConfig,
        actor: ActorId,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let gate = Gate::with_limits(
            crate::gate::MAX_CACHED_BINDINGS,
            config.max_quarantine_per_user,
        );
        Hub(Arc::new(Inner {
            store,
            durability,
            metrics,
            config,
            actor,
            docs: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            tracker: TaskTracker::new(),
            runtime,
            stopping: AtomicBool::new(false),
            stopped: CancellationToken::new(),
            gate,
            waiting: Mutex::new(Waiting::default()),
            waiters: AtomicUsize::new(0),
            events: tokio::sync::broadcast::channel(1024).0,
        }))
    }

    /// Follows the writes of other nodes sharing the store (`DocStore::watch`): each document
    /// another node wrote is re-read from the store if it is loaded here or someone here waits
    /// for it, and what is new goes to this node's peers. A node that falls behind the
    /// notifications re-reads every such document. Ends when the store's notifier ends.
    pub fn follow_store(&self) {
        let Some(mut rx) = self.0.store.watch() else {
            return;
        };
        let hub = self.clone();
        self.0.tracker.spawn_on(
            async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let next = tokio::select! {
                        _ = hub.0.stopped.cancelled() => break,
                        next = rx.recv() => next,
                    };
                    match next {
                        Ok(id) => hub.refresh(id),
                        Err(RecvError::Lagged(missed)) => {
                            hub.0.metrics.relay_lagged.add(1);
                            tracing::warn!(
                                missed,
                                "behind the store's notifications: re-reading every live document"
                            );
                            let mut ids: HashSet<DocumentId> =
                                hub.0.docs.lock().unwrap().keys().copied().collect();
                            ids.extend(hub.0.waiting.lock().unwrap().by_doc.keys().copied());
                            for id in ids {
                                hub.refresh(id);
                            }
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
            },
            &self.0.runtime,
        );
    }

    /// Asks a document's task to re-read the store, if the document is live here: loaded, or
    /// waited for by a peer (then it is loaded, and the waiters get it).
    fn refresh(&self, id: DocumentId) {
        let loaded = self.0.docs.lock().unwrap().get(&id).map(|s| s.tx.clone());
        match loaded {
            Some(tx) => {
                if let Err(mpsc::error::TrySendError::Full(cmd)) = tx.try_send(DocCmd::Refresh) {
                    // A busy document: deliver from a task rather than stall the follower.
                    self.0.runtime.spawn(async move {
                        let _ = tx.send(cmd).await;
                    });
                }
            }
            None => {
                let waited = self.0.waiters.load(Ordering::Acquire) > 0
                    && self.0.waiting.lock().unwrap().by_doc.contains_key(&id);
                if waited {
                    let hub = self.clone();
                    self.0.runtime.spawn(async move {
                        let _ = hub.send(id, DocCmd::Refresh).await;
                    });
                }
            }
        }
    }

    /// Durable document changes from now on (a slow subscriber misses some and is told so).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<DocEvent> {
        self.0.events.subscribe()
    }

    /// The actor the server writes with (index documents, seals).
    pub fn server_actor(&self) -> &ActorId {
        &self.0.actor
    }

    pub fn server_peer_id(&self) -> &str {
        &self.0.config.server_peer_id
    }

    fn over_limit(&self) -> bool {
        self.0.docs.lock().unwrap().len() > self.0.config.max_loaded_docs
    }

    /// Sends a command to a document's task, loading the document if needed.
    pub async fn send(&self, id: DocumentId, mut cmd: DocCmd) -> Result<(), HubStopped> {
        loop {
            let tx = self.slot(id)?;
            match tx.send(cmd).await {
                Ok(()) => return Ok(()),
                // The task closed between lookup and send (unloading): load it again.
                Err(mpsc::error::SendError(back)) => {
                    cmd = back;
                    self.forget(id, &tx);
                }
            }
        }
    }

    /// Sends a command only if the document is loaded (used for `Leave`).
    pub fn send_if_loaded(&self, id: DocumentId, cmd: DocCmd) {
        let tx = self.0.docs.lock().unwrap().get(&id).map(|s| s.tx.clone());
        if let Some(tx) = tx {
            if let Err(mpsc::error::TrySendError::Full(cmd)) = tx.try_send(cmd) {
                // Leave must not be lost: deliver it from a task.
                self.0.runtime.spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
    }

    /// A copy of the document as the hub has it (loaded from the store if needed).
    pub async fn snapshot(&self, id: DocumentId) -> Result<Automerge, HubStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(id, DocCmd::Snapshot { reply }).await?;
        rx.await.map_err(|_| HubStopped)
    }

    fn forget(&self, id: DocumentId, tx: &mpsc::Sender<DocCmd>) {
        let mut docs = self.0.docs.lock().unwrap();
        if docs.get(&id).is_some_and(|s| s.tx.same_channel(tx)) {
            docs.remove(&id);
        }
    }

    fn slot(&self, id: DocumentId) -> Result<mpsc::Sender<DocCmd>, HubStopped> {
        if self.0.stopping.load(Ordering::Acquire) {
            return Err(HubStopped);
        }
        let tick = self.0.clock.fetch_add(1, Ordering::Relaxed);
        let mut docs = self.0.docs.lock().unwrap();
        if let Some(slot) = docs.get(&id) {
            slot.last_used.store(tick, Ordering::Relaxed);
            return Ok(slot.tx.clone());
        }
        if docs.len() >= self.0.config.max_loaded_docs {
            let excess = docs.len() + 1 - self.0.config.max_loaded_docs;
            Self::evict(&mut docs, excess);
        }
        let (tx, rx) = mpsc::channel(self.0.config.doc_queue);
        let slot = Slot {
            tx: tx.clone(),
            last_used: Arc::new(AtomicU64::new(tick)),
            peers: Arc::new(AtomicUsize::new(0)),
        };
        let task = DocTask::new(self.clone(), id, slot.peers.clone(), tx.clone());
        docs.insert(id, slot);
        self.0.metrics.loaded_documents.inc();
        let metrics = self.0.metrics.clone();
        self.0.tracker.spawn_on(
            async move {
                task.run(rx).await;
                metrics.loaded_documents.dec();
            },
            &self.0.runtime,
        );
        Ok(tx)
    }

    /// Unloads up to `n` documents without peers, least recently used first.
    fn evict(docs: &mut HashMap<DocumentId, Slot>, n: usize) {
        let mut idle: Vec<(u64, DocumentId)> = docs
            .iter()
            .filter(|(_, s)| s.peers.load(Ordering::Relaxed) == 0)
            .map(|(id, s)| (s.last_used.load(Ordering::Relaxed), *id))
            .collect();
        idle.sort_unstable();
        let mut evicted = 0;
        for (_, id) in idle {
            if evicted == n {
                break;
            }
            let Some(slot) = docs.get(&id) else { continue };
            // A document whose queue is full is busy, not idle. Forgetting it without its
            // `Unload` would leave its task running unseen (it holds its own sender, so its
            // queue never closes): a second task for the same document, and one that shutdown
            // waits on for ever.
            match slot.tx.try_send(DocCmd::Unload) {
                Err(mpsc::error::TrySendError::Full(_)) => continue,
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                    docs.remove(&id);
                    evicted += 1;
                }
            }
        }
    }

    /// Stops taking commands, lets every document finish its batch and persist, and waits.
    pub async fn shutdown(&self) {
        self.0.stopping.store(true, Ordering::Release);
        self.0.stopped.cancel();
        let slots: Vec<Slot> = self
            .0
            .docs
            .lock()
            .unwrap()
            .drain()
            .map(|(_, s)| s)
            .collect();
        for slot in slots {
            let _ = slot.tx.send(DocCmd::Unload).await;
        }
        self.0.tracker.close();
        self.0.tracker.wait().await;
    }

    /// Keeps a peer waiting on an absent document; false when its connection already waits on
    /// the most it may.
    fn wait_for(&self, doc: DocumentId, mut peer: PeerState) -> bool {
        let conn = peer.handle.conn_id;
        // Keep only what is needed to send the document later: the peer's heads (few, unless it
        // is hostile) and "has nothing we sent", not the bloom filters and needs it sent.
        peer.state.their_have = Some(Vec::new());
        peer.state.their_need = Some(Vec::new());
        peer.state.sent_hashes.clear();
        if peer
            .state
            .their_heads
            .as_ref()
            .is_some_and(|h| h.len() > 64)
        {
            peer.state.their_heads = Some(Vec::new());
        }
        let mut w = self.0.waiting.lock().unwrap();
        let Waiting { by_doc, per_conn } = &mut *w;
        let count = per_conn.entry(conn).or_insert(0);
        let peers = by_doc.entry(doc).or_default();
        if !peers.contains_key(&conn) {
            if *count >= self.0.config.max_waiting_per_conn {
                if peers.is_empty() {
                    by_doc.remove(&doc);
                }
                return false;
            }
            *count += 1;
            self.0.waiters.fetch_add(1, Ordering::Relaxed);
        }
        peers.insert(conn, peer);
        self.0
            .metrics
            .waiting_peers
            .set(self.0.waiters.load(Ordering::Relaxed) as u64);
        true
    }

    fn unwait(w: &mut Waiting, conn: u64) {
        if let Some(n) = w.per_conn.get_mut(&conn) {
            *n -= 1;
            if *n == 0 {
                w.per_conn.remove(&conn);
            }
        }
    }

    /// The waiting state of one peer on a document, removed from the waiting set.
    fn take_waiter(&self, doc: DocumentId, conn: u64) -> Option<PeerState> {
        if self.0.waiters.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut w = self.0.waiting.lock().unwrap();
        let peers = w.by_doc.get_mut(&doc)?;
        let peer = peers.remove(&conn)?;
        if peers.is_empty() {
            w.by_doc.remove(&doc);
        }
        Self::unwait(&mut w, conn);
        self.0.waiters.fetch_sub(1, Ordering::Relaxed);
        self.0
            .metrics
            .waiting_peers
            .set(self.0.waiters.load(Ordering::Relaxed) as u64);
        Some(peer)
    }

    /// Every peer waiting on a document, removed from the waiting set.
    fn take_waiters(&self, doc: DocumentId) -> Vec<PeerState> {
        if self.0.waiters.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut w = self.0.waiting.lock().unwrap();
        let Some(peers) = w.by_doc.remove(&doc) else {
            return Vec::new();
        };
        for conn in peers.keys() {
            Self::unwait(&mut w, *conn);
        }
        self.0.waiters.fetch_sub(peers.len(), Ordering::Relaxed);
        self.0
            .metrics
            .waiting_peers
            .set(self.0.waiters.load(Ordering::Relaxed) as u64);
        peers.into_values().collect()
    }

    /// A connection closed: it waits on nothing any more.
    pub fn stop_waiting<'a>(&self, conn: u64, docs: impl IntoIterator<Item = &'a DocumentId>) {
        if self.0.waiters.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut w = self.0.waiting.lock().unwrap();
        if !w.per_conn.contains_key(&conn) {
            return;
        }
        let mut removed = 0;
        for doc in docs {
            if let Some(peers) = w.by_doc.get_mut(doc) {
                if peers.remove(&conn).is_some() {
                    removed += 1;
                    if peers.is_empty() {
                        w.by_doc.remove(doc);
                    }
                }
            }
        }
        w.per_conn.remove(&conn);
        self.0.waiters.fetch_sub(removed, Ordering::Relaxed);
        self.0
            .metrics
            .waiting_peers
            .set(self.0.waiters.load(Ordering::Relaxed) as u64);
    }

    /// Lists in their district index every document stored without a durable index entry (a
    /// crash between a document's first persist and its index's). Run at start.
    pub fn repair_index(&self) -> Result<usize, StoreError> {
        let markers = self.0.store.meta_scan(UNINDEXED, b"")?;
        let mut n = 0;
        for (key, value) in markers {
            let Ok(bytes) = <[u8; 16]>::try_from(&key[..]) else {
                continue;
            };
            let doc = DocumentId::from_bytes(bytes);
            let marker: IndexMarker = match serde_json::from_slice(&value) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(doc.id = %doc, error = %e, "unreadable index marker");
                    continue;
                }
            };
            let (Ok(district), Ok(doc_type)) = (marker.district.parse(), marker.doc_type.parse())
            else {
                tracing::warn!(doc.id = %doc, "index marker with an invalid district or type");
                continue;
            };
            let header = DocumentHeader {
                doc_type,
                schema_version: crdt_core::schema::SCHEMA_VERSION,
                district,
                process_year: marker.process_year,
            };
            self.register_in_index(doc, &header, marker.created_at);
            n += 1;
        }
        if n > 0 {
            tracing::info!(
                documents = n,
                "repairing district indexes after an unclean stop"
            );
        }
        Ok(n)
    }

    fn register_in_index(&self, doc: DocumentId, header: &DocumentHeader, created_at: i64) {
        if header.doc_type == DocType::Index {
            return;
        }
        let index = DocumentId::index_for(header.district, header.process_year);
        let cmd = DocCmd::IndexAdd {
            district: header.district,
            process_year: header.process_year,
            doc,
            entry: IndexEntry {
                doc_type: header.doc_type,
                created_at,
            },
        };
        let hub = self.clone();
        // From a task: a document's task must never wait on another document's channel.
        self.0.tracker.spawn_on(
            async move {
                let _ = hub.send(index, cmd).await;
            },
            &self.0.runtime,
        );
    }
}

struct PeerState {
    handle: PeerHandle,
    state: sync::State,
    /// This peer was reminded (once per connection) that it holds a change refused earlier.
    reminded: bool,
}

/// The task that owns one loaded document.
struct DocTask {
    hub: Hub,
    id: DocumentId,
    peers_gauge: Arc<AtomicUsize>,
    /// Our own channel, so an idle task removes its slot only if the slot is still ours.
    own_tx: mpsc::Sender<DocCmd>,
    doc: Automerge,
    persisted: Vec<ChangeHash>,
    ledger: ChunkLedger,
    peers: HashMap<u64, PeerState>,
    header: Option<DocumentHeader>,
    /// Rejected changes of this document with their dependencies.
    rejected: HashMap<ChangeHash, Vec<ChangeHash>>,
    /// Changes whose dependencies have not arrived yet, with the peer that sent them; judged as
    /// soon as the dependencies land (automerge itself would queue them, unjudged).
    pending: Held,
    /// Rejections to announce once the batch is durable.
    announce: Vec<(PeerHandle, String)>,
    /// Connections some of whose changes were dropped unapplied (held too long, or over the held
    /// limits). Automerge never sends a change twice on one connection, so such a peer would not
    /// send them again: our next message to it carries a sync reset, which makes it forget what
    /// it sent.
    reset_due: HashSet<u64>,
    /// The batch wrote to the store's side tables (quarantine): wait for durability even when
    /// the document itself did not change.
    wrote_meta: bool,
}

impl DocTask {
    fn new(
        hub: Hub,
        id: DocumentId,
        peers_gauge: Arc<AtomicUsize>,
        own_tx: mpsc::Sender<DocCmd>,
    ) -> Self {
        let (held_limits, metrics) = (hub.0.config.held.clone(), hub.0.metrics.clone());
        Self {
            hub,
            id,
            peers_gauge,
            own_tx,
            doc: Automerge::new(),
            persisted: Vec::new(),
            ledger: ChunkLedger::default(),
            peers: HashMap::new(),
            header: None,
            rejected: HashMap::new(),
            pending: Held::new(held_limits, metrics),
            announce: Vec::new(),
            reset_due: HashSet::new(),
            wrote_meta: false,
        }
    }

    fn server_id(&self) -> &str {
        &self.hub.0.config.server_peer_id
    }

    async fn load(&mut self) -> Result<(), String> {
        let store = self.hub.0.store.clone();
        let id = self.id;
        // Store reads are blocking I/O: off the async workers.
        let (doc, chunks, rejected) = tokio::task::spawn_blocking(move || {
            let chunks = store.load(&id)?;
            let doc = assemble(&id, &chunks)?;
            let rejected = Gate::rejected_changes(store.as_ref(), &id)?;
            Ok::<_, StoreError>((doc, chunks, rejected))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        self.doc = doc;
        self.ledger = ChunkLedger::from_chunks(&chunks);
        self.rejected = rejected;
        self.persisted = self.doc.get_heads();
        self.header = DocumentHeader::read(&self.doc).ok();
        self.doc.set_actor(self.hub.0.actor.clone());
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<DocCmd>) {
        if let Err(e) = self.load().await {
            tracing::error!(doc.id = %self.id, error = %e, "cannot load document");
            rx.close();
            while let Some(cmd) = rx.recv().await {
                if let DocCmd::Sync { peer, .. } = cmd {
                    peer.send_error(
                        self.server_id(),
                        format!("document {}: cannot be loaded", self.id),
                    );
                }
            }
            return;
        }
        let idle = self.hub.0.config.idle_unload;
        let max_batch = self.hub.0.config.max_batch;
        let mut unloading = false;
        loop {
            let first = if self.peers.is_empty() {
                match tokio::time::timeout(idle, rx.recv()).await {
                    Ok(cmd) => cmd,
                    Err(_) => {
                        // Idle: stop taking commands; senders that race us reload the document.
                        self.hub.forget(self.id, &self.own_tx);
                        rx.close();
                        unloading = true;
                        rx.recv().await
                    }
                }
            } else if let Some(due) = self.pending.next_expiry() {
                // Held changes expire even when no message comes.
                match tokio::time::timeout_at(due.into(), rx.recv()).await {
                    Ok(cmd) => cmd,
                    Err(_) => {
                        let dropped = self.pending.expire(Instant::now());
                        self.reset_due.extend(dropped);
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            if batch.iter().any(|c| matches!(c, DocCmd::Unload)) && !unloading {
                rx.close();
                unloading = true;
            }
            if unloading {
                // This task no longer owns the document: a new task may already be serving it,
                // so answering from this copy could be stale (e.g. park a waiter on a document
                // that was just created). Hand the commands to whichever task owns it now.
                self.forward(batch);
                continue;
            }
            if !self.handle_batch(batch).await {
                break;
            }
            // Over the limit and no one connected: unload now rather than wait to be evicted.
            if !unloading && self.peers.is_empty() && self.hub.over_limit() {
                self.hub.forget(self.id, &self.own_tx);
                rx.close();
                unloading = true;
            }
        }
        self.peers_gauge.store(0, Ordering::Relaxed);
    }

    /// Sends commands that reached this task after it stopped owning its document to the task
    /// that owns it now (loading it again if needed), in order, from a spawned task.
    fn forward(&self, batch: Vec<DocCmd>) {
        let cmds: Vec<DocCmd> = batch
            .into_iter()
            .filter(|c| !matches!(c, DocCmd::Unload))
            .collect();
        if cmds.is_empty() {
            return;
        }
        let (hub, id) = (self.hub.clone(), self.id);
        self.hub.0.tracker.spawn_on(
            async move {
                for cmd in cmds {
                    if hub.send(id, cmd).await.is_err() {
                        break; // shutting down: nothing from these commands was acknowledged
                    }
                }
            },
            &self.hub.0.runtime,
        );
    }

    fn may_read(&self, user: &AuthUser) -> bool {
        match &self.header {
            Some(h) => user.district.covers(h.district),
            // A document without a valid header holds no schema data yet (being created).
            None => true,
        }
    }

    /// Handles one batch; false when the task must stop (persisting failed).
    ///
    /// Nothing the batch decided is said before it is durable: sync replies, rejections (`error`),
    /// snapshots for HTTP readers and seals all go out after the group commit that covers them.
    async fn handle_batch(&mut self, batch: Vec<DocCmd>) -> bool {
        let started = Instant::now();
        let metrics = self.hub.0.metrics.clone();
        metrics.batch_messages.observe(batch.len() as f64);
        let mut touched: HashSet<u64> = HashSet::new();
        // Peers that sent a message this batch: their replies are charged to them.
        let mut asked: HashSet<u64> = HashSet::new();
        let mut requested: HashSet<u64> = HashSet::new();
        // Peers whose changes this batch judged: each gets a reply showing our heads.
        let mut acked: HashSet<u64> = HashSet::new();
        let mut seal_replies = Vec::new();
        let mut snapshot_replies = Vec::new();
        let mut indexed = Vec::new();
        let had_header = self.header.is_some();
        if !self.pending.is_empty() {
            let dropped = self.pending.expire(started);
            touched.extend(dropped.iter().copied());
            self.reset_due.extend(dropped);
        }
        // Other nodes' writes first, while everything of ours is persisted (see `refresh`).
        if batch.iter().any(|c| matches!(c, DocCmd::Refresh)) {
            match self.refresh().await {
                Ok(0) => {}
                Ok(_) => {
                    touched.extend(self.peers.keys().copied());
                    self.judge_ready();
                }
                Err(e) => {
                    tracing::error!(doc.id = %self.id, error = %e, "cannot re-read document from the store");
                }
            }
        }
        for cmd in batch {
            match cmd {
                DocCmd::Sync {
                    peer,
                    data,
                    request,
                } => {
                    if !self.may_read(&peer.user) {
                        self.unavailable(&peer);
                        continue;
                    }
                    let decoded = sync::Message::decode(&data).map_err(|e| e.to_string());
                    let mut msg = match decoded.and_then(crate::sync_limits::checked) {
                        Ok(m) => m,
                        Err(e) => {
                            peer.send_error(
                                self.server_id(),
                                format!("document {}: invalid sync message: {e}", self.id),
                            );
                            continue;
                        }
                    };
                    let conn = peer.conn_id;
                    // A peer that waited while the document was absent resumes with its state.
                    if !self.peers.contains_key(&conn) {
                        if let Some(waiter) = self.hub.take_waiter(self.id, conn) {
                            self.peers.insert(conn, waiter);
                        }
                    }
                    let chunks = std::mem::replace(&mut msg.changes, sync::ChunkList::empty());
                    if !chunks.is_empty() {
                        let changes = match parse_chunks(&self.doc, chunks.iter()) {
                            Ok(c) => c,
                            Err(e) => {
                                peer.send_error(
                                    self.server_id(),
                                    format!("document {}: {e}", self.id),
                                );
                                continue;
                            }
                        };
                        if self.carries_unread_foreign(&peer, &changes) {
                            // A phone that moved here from another node carries what that node
                            // relayed to it, other users' changes this node has not read yet:
                            // read the shared store first, so they are known, not judged as
                            // writing in another person's name.
                            match self.refresh().await {
                                Ok(0) => {}
                                Ok(_) => touched.extend(self.peers.keys().copied()),
                                Err(e) => {
                                    tracing::error!(doc.id = %self.id, error = %e, "cannot re-read document from the store");
                                }
                            }
                        }
                        if !self.admit(&peer, changes) {
                            continue;
                        }
                    }
                    let entry = self.peers.entry(conn).or_insert_with(|| PeerState {
                        handle: peer,
                        state: sync::State::new(),
                        reminded: false,
                    });
                    if let Err(e) = self.doc.receive_sync_message(&mut entry.state, msg) {
                        entry.handle.send_error(
                            &self.hub.0.config.server_peer_id,
                            format!("document {}: sync message rejected: {e}", self.id),
                        );
                        continue;
                    }
                    if !chunks.is_empty() {
                        acked.insert(conn);
                    }
                    if !self.rejected.is_empty() || !self.pending.is_empty() {
                        let theirs = entry.state.their_heads.clone().unwrap_or_default();
                        // The peer still holds a change refused earlier (it may have lost the
                        // notice with a cut connection): say so once per connection. Durable
                        // already, so the notice may go out with this batch.
                        // A notice already due to this peer in this batch (its change was just
                        // refused) is the one it needs.
                        if self.announce.iter().any(|(p, _)| p.conn_id == conn) {
                            entry.reminded = true;
                        }
                        if !entry.reminded {
                            if let Some(h) = theirs.iter().find(|h| self.rejected.contains_key(h)) {
                                entry.reminded = true;
                                let notice = Self::repeat_notice(
                                    self.hub.0.store.as_ref(),
                                    &self.id,
                                    &self.rejected,
                                    *h,
                                );
                                self.announce.push((entry.handle.clone(), notice));
                            }
                        }
                        let (rejected, pending) = (&self.rejected, &self.pending);
                        let substitute = |h: &ChangeHash| {
                            rejected
                                .get(h)
                                .cloned()
                                .or_else(|| pending.get(h).map(|p| p.change.deps().to_vec()))
                        };
                        if let Some(clean) = sanitize_heads(&theirs, substitute, &self.doc) {
                            entry.state.their_heads = Some(clean);
                        }
                    }
                    touched.insert(conn);
                    asked.insert(conn);
                    if request {
                        requested.insert(conn);
                    }
                }
                DocCmd::Ephemeral { from, msg } => {
                    if !self.may_read(&from.user) {
                        continue;
                    }
                    for p in self
                        .peers
                        .values()
                        .filter(|p| p.handle.conn_id != from.conn_id)
                    {
                        p.handle.send(&Message::Ephemeral(EphemeralMessage {
                            target_id: p.handle.peer_id.clone(),
                            ..msg.clone()
                        }));
                    }
                }
                DocCmd::Leave { conn_id } => {
                    self.peers.remove(&conn_id);
                    self.reset_due.remove(&conn_id);
                    // Nothing held was acknowledged: the phone sends it again when it is back.
                    self.pending.drop_peer(conn_id);
                    touched.remove(&conn_id);
                    // A batch that raced the connection's close may have parked it as a waiter.
                    self.hub.take_waiter(self.id, conn_id);
                }
                DocCmd::IndexAdd {
                    district,
                    process_year,
                    doc,
                    entry,
                } => {
                    if self.index_add(district, process_year, doc, entry) {
                        indexed.push(doc);
                    }
                }
                DocCmd::Snapshot { reply } => snapshot_replies.push(reply),
                DocCmd::Seal {
                    user,
                    budget,
                    reply,
                } => {
                    let result = self.seal(&user, &budget);
                    if let Err(e) = &result {
                        let _ = reply.send(Err(e.clone()));
                    } else {
                        seal_replies.push((reply, result));
                    }
                }
                DocCmd::Unload | DocCmd::Refresh => {}
            }
        }

        // Seal records are written before the commit that makes the sealed state durable.
        let mut seal_replies: Vec<_> = seal_replies
            .into_iter()
            .map(|(reply, result)| {
                let result = result.and_then(|record| {
                    self.hub
                        .0
                        .store
                        .meta_put(
                            SEALS,
                            self.id.as_bytes(),
                            &serde_json::to_vec(&record).expect("json"),
                        )
                        .map_err(|e| SealError::Internal(e.to_string()))?;
                    Ok(record)
                });
                (reply, result)
            })
            .collect();

        let heads = self.doc.get_heads();
        if heads != self.persisted {
            // The document's first header: it goes into its district index. The marker is
            // durable with the document, so a crash before the index has it is repaired at start.
            let new_header = match &self.header {
                None => DocumentHeader::read(&self.doc).ok(),
                Some(_) => None,
            };
            if let Some(h) = new_header.as_ref().filter(|h| h.doc_type != DocType::Index) {
                let marker = IndexMarker::new(h, now_unix() as i64);
                if let Err(e) = self.hub.0.store.meta_put(
                    UNINDEXED,
                    self.id.as_bytes(),
                    &serde_json::to_vec(&marker).expect("json"),
                ) {
                    tracing::error!(doc.id = %self.id, error = %e, "cannot write index marker");
                    self.hub
                        .0
                        .durability
                        .fail(format!("cannot write index marker: {e}"));
                    self.refuse_unstored(&acked);
                    return false;
                }
            }
            if !self.persist(&heads).await {
                self.refuse_unstored(&acked);
                if seal_replies.iter().any(|(_, r)| r.is_ok()) {
                    // The sealed state was not stored: its record must not outlive it.
                    let _ = self.hub.0.store.meta_delete(SEALS, self.id.as_bytes());
                }
                return false;
            }
            if let Some(header) = new_header {
                self.hub
                    .register_in_index(self.id, &header, now_unix() as i64);
                self.header = Some(header);
            }
            // Everyone connected to this document hears about the new changes.
            touched.extend(self.peers.keys().copied());
            if let Some(h) = self
                .header
                .as_ref()
                .filter(|h| h.doc_type != DocType::Index)
            {
                let _ = self.hub.0.events.send(DocEvent {
                    id: self.id.to_string(),
                    district: h.district.to_string(),
                    doc_type: h.doc_type.to_string(),
                });
            }
        } else if self.wrote_meta || !seal_replies.is_empty() {
            if let Err(e) = self.hub.0.durability.wait().await {
                tracing::error!(doc.id = %self.id, error = %e, "cannot make the batch durable");
                return false;
            }
        }
        self.wrote_meta = false;

        // Everything below is durable now.
        for doc in indexed {
            // The index lists it durably: the marker has done its work (losing this delete is
            // harmless, the repair at start is idempotent).
            if let Err(e) = self.hub.0.store.meta_delete(UNINDEXED, doc.as_bytes()) {
                tracing::warn!(doc.id = %doc, error = %e, "cannot clear index marker");
            }
        }
        for (peer, text) in std::mem::take(&mut self.announce) {
            peer.send_error(self.server_id(), text);
        }
        for reply in snapshot_replies {
            let _ = reply.send(self.doc.clone());
        }
        for (reply, result) in seal_replies.drain(..) {
            let _ = reply.send(result);
        }

        if self.header.is_some() {
            if !had_header {
                // Peers that registered before the document had a header are judged again now:
                // outside its district they get `doc-unavailable` and nothing of its content.
                let outsiders: Vec<u64> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| !self.may_read(&p.handle.user))
                    .map(|(c, _)| *c)
                    .collect();
                for conn in outsiders {
                    if let Some(p) = self.peers.remove(&conn) {
                        self.unavailable(&p.handle);
                    }
                    touched.remove(&conn);
                }
            }
            // Peers that asked while the document was absent get it now, if they may read it.
            for waiter in self.hub.take_waiters(self.id) {
                if self.may_read(&waiter.handle.user) {
                    touched.insert(waiter.handle.conn_id);
                    self.peers.insert(waiter.handle.conn_id, waiter);
                }
            }
        }

        let heads = self.doc.get_heads();
        let empty = heads.is_empty();
        let server_id = self.hub.0.config.server_peer_id.clone();
        for conn in touched {
            let Some(p) = self.peers.get_mut(&conn) else {
                continue;
            };
            if empty && requested.contains(&conn) {
                p.handle.send_unavailable(&server_id, &self.id);
                continue;
            }
            let agrees = p.state.their_heads.as_deref() == Some(&heads[..])
                && p.state.their_need.as_ref().is_none_or(|n| n.is_empty());
            // ... and the peer knows it: its last sync with us already ended at these heads. A
            // peer whose record is older (it crashed before saving our last acknowledgement)
            // cannot tell its changes are stored unless we answer.
            let peer_knows = p.state.their_have.as_ref().is_some_and(|haves| {
                haves.iter().any(|h| {
                    let mut last = h.last_sync.clone();
                    last.sort_unstable();
                    last == heads
                })
            });
            if agrees && peer_knows && !acked.contains(&conn) && !requested.contains(&conn) {
                // The peer's message shows we already agree, and it knows: nothing to send,
                // nothing new to acknowledge, so say nothing (a reconnecting phone costs one
                // message per document, not two). Its state still records what it has for the
                // next change.
                continue;
            }
            if self.reset_due.remove(&conn) {
                p.state.needs_reset = true;
            }
            if acked.contains(&conn) {
                // The gate applied this peer's changes before automerge saw the message, so to
                // automerge it looked like one that changes nothing and our new heads were
                // recorded as already sent: forget that, so the acknowledgement goes out.
                p.state.last_sent_heads.clear();
            }
            if let Some(msg) = self.doc.generate_sync_message(&mut p.state) {
                let data = msg.encode();
                if let Some(cost) = p
                    .handle
                    .reply_cost
                    .as_ref()
                    .filter(|_| asked.contains(&conn))
                {
                    cost(data.len());
                }
                p.handle.send(&Message::Sync(SyncMessage {
                    sender_id: server_id.clone(),
                    target_id: p.handle.peer_id.clone(),
                    document_id: self.id.to_string(),
                    data,
                }));
            }
        }
        if empty {
            // An absent document holds no task for its askers: they wait in the hub, for the
            // life of their connection, and get the document when it appears.
            for (_, p) in std::mem::take(&mut self.peers) {
                let handle = p.handle.clone();
                if !self.hub.wait_for(self.id, p) {
                    handle.send_error(
                        self.server_id(),
                        format!(
                            "document {}: not waiting for it: this connection already waits on {} documents that do not exist yet",
                            self.id, self.hub.0.config.max_waiting_per_conn
                        ),
                    );
                }
            }
        }
        let peers = &self.peers;
        self.reset_due.retain(|c| peers.contains_key(c));
        self.peers_gauge.store(self.peers.len(), Ordering::Relaxed);
        metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        true
    }

    /// Runs a peer's changes through the write gate and applies the accepted ones. False when the
    /// message could not be judged at all (the peer got an `error`).
    fn admit(&mut self, peer: &PeerHandle, changes: Vec<automerge::Change>) -> bool {
        let held_before = self.pending.len();
        if !self.judge(peer, changes) {
            return false;
        }
        self.judge_ready();
        if self.pending.len() > held_before && self.hub.0.store.shared() {
            // Their dependencies may be in the shared store already, written by another node
            // this one has not heard from yet (a phone that moved here from a node that died).
            let _ = self.own_tx.try_send(DocCmd::Refresh);
        }
        true
    }

    /// Whether, on a store other nodes share, `changes` hold one this document lacks by an actor
    /// bound to a user other than the sender (which only another node can have relayed).
    fn carries_unread_foreign(&self, peer: &PeerHandle, changes: &[automerge::Change]) -> bool {
        let inner = &self.hub.0;
        inner.store.shared()
            && changes.iter().any(|c| {
                self.doc.get_change_by_hash(&c.hash()).is_none()
                    && matches!(
                        inner.gate.binding(inner.store.as_ref(), c.actor_id()),
                        Ok(Some(owner)) if owner != peer.user.user
                    )
            })
    }

    /// Judges held changes whose dependencies have now landed, as their senders' (each sender's
    /// ready changes as one batch).
    fn judge_ready(&mut self) {
        while !self.pending.is_empty() {
            let ready = self.pending.take_ready(&self.doc);
            if ready.is_empty() {
                break;
            }
            let mut by_sender: HashMap<u64, (PeerHandle, Vec<automerge::Change>)> = HashMap::new();
            for (c, sender) in ready {
                by_sender
                    .entry(sender.conn_id)
                    .or_insert_with(|| (sender, Vec::new()))
                    .1
                    .push(c);
            }
            for (_, (sender, changes)) in by_sender {
                self.judge(&sender, changes);
            }
        }
    }

    /// The notice repeated to a peer that still holds `held`, a change refused earlier: it names
    /// the change refused for its own sake (which `held` may build on) with the reason stored in
    /// the quarantine, worded as the first notice was.
    fn repeat_notice(
        store: &dyn DocStore,
        id: &DocumentId,
        rejected: &HashMap<ChangeHash, Vec<ChangeHash>>,
        held: ChangeHash,
    ) -> String {
        let root = refused_root(&[held], rejected).unwrap_or(held);
        let reason = Gate::refusal_reason(store, id, &root)
            .ok()
            .flatten()
            .unwrap_or_else(|| "refused earlier (see the quarantine)".into());
        format!("document {id}: change {root} rejected: {reason}")
    }

    /// Runs changes through the write gate as `peer`'s and applies the accepted ones.
    fn judge(&mut self, peer: &PeerHandle, changes: Vec<automerge::Change>) -> bool {
        let inner = &self.hub.0;
        // A rejected creation has no stored header: file it under the district the changes claim,
        // else the writer's own, so the district's reviewers (and the writer) can see it.
        let district = self
            .header
            .as_ref()
            .map(|h| h.district)
            .or_else(|| claimed_district(&self.doc, &changes))
            .or(match peer.user.district {
                crdt_core::DistrictScope::One(d) => Some(d),
                crdt_core::DistrictScope::All => None,
            })
            .map(|d| d.to_string());
        let admission = match inner.gate.admit(
            inner.store.as_ref(),
            &self.id,
            district,
            &self.doc,
            &peer.user,
            changes,
            &mut self.rejected,
            inner.config.check_writes,
        ) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(doc.id = %self.id, error = %e, "write gate failed");
                peer.send_error(
                    self.server_id(),
                    format!("document {}: server error, try again", self.id),
                );
                return false;
            }
        };
        let mut not_held = None;
        let mut dropped = 0;
        for c in admission.held {
            if let Err(why) = self.pending.hold(c, peer) {
                not_held = Some(why);
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.reset_due.insert(peer.conn_id);
        }
        if let Some(why) = not_held {
            let limits = &inner.config.held;
            let (whose, changes, bytes) = match why {
                NotHeld::DocumentFull => (
                    "this document",
                    limits.per_doc_changes,
                    limits.per_doc_bytes,
                ),
                NotHeld::PeerFull => (
                    "this connection",
                    limits.per_peer_changes,
                    limits.per_peer_bytes,
                ),
            };
            tracing::info!(doc.id = %self.id, user = %peer.user.user, dropped, "held changes over the limit");
            peer.send_error(
                self.server_id(),
                format!(
                    "document {}: {dropped} changes not kept: their dependencies have not arrived and \
                     {whose} already holds the most changes waiting for theirs ({changes} changes, \
                     {bytes} bytes); send their dependencies first",
                    self.id
                ),
            );
        }
        if let Some(first) = admission.unrecorded.first() {
            inner
                .metrics
                .changes_unrecorded
                .add(admission.unrecorded.len() as u64);
            tracing::warn!(doc.id = %self.id, user = %peer.user.user, refused = admission.unrecorded.len(), "quarantine limit reached; refused changes not kept");
            peer.send_error(
                self.server_id(),
                format!(
                    "document {}: change {first} refused and not kept{}: user {} already has {} refused \
                     changes in the quarantine, the most the server keeps for one user; nothing of it \
                     was stored",
                    self.id,
                    and_more(admission.unrecorded.len()),
                    peer.user.user,
                    inner.config.max_quarantine_per_user
                ),
            );
        }
        if let Some(doc) = admission.doc {
            self.doc = doc;
            self.doc.set_actor(inner.actor.clone());
        }
        if !admission.unchecked.is_empty() {
            if let Err(e) = self.doc.apply_changes(admission.unchecked) {
                peer.send_error(self.server_id(), format!("document {}: {e}", self.id));
                return false;
            }
        }
        if let (None, Some(hash)) = (
            admission.rejected.first(),
            admission.rejected_before.first(),
        ) {
            // Already durable in the quarantine; the peer re-sent it, so it may have missed the
            // first notice.
            let notice = Self::repeat_notice(inner.store.as_ref(), &self.id, &self.rejected, *hash);
            self.announce.push((peer.clone(), notice));
        }
        if let Some((hash, reason)) = admission.rejected.first() {
            inner
                .metrics
                .changes_rejected
                .add(admission.rejected.len() as u64);
            tracing::info!(doc.id = %self.id, user = %peer.user.user, rejected = admission.rejected.len(), %reason, "changes quarantined");
            let more = and_more(admission.rejected.len());
            // Announced only once the quarantine entry is durable (end of the batch).
            self.wrote_meta = true;
            self.announce.push((
                peer.clone(),
                format!(
                    "document {}: change {hash} rejected: {reason}{more}",
                    self.id
                ),
            ));
        }
        true
    }

    /// Checks and writes the seal; the caller persists it with the batch.
    fn seal(&mut self, user: &AuthUser, budget: &BudgetContext) -> Result<SealRecord, SealError> {
        let acta = Acta::read(&self.doc)
            .map_err(|e| SealError::NotSealable(format!("not an acta: {e}")))?;
        if !user.district.covers(acta.header.district) {
            return Err(SealError::NotSealable(
                "not an acta of your district".into(),
            ));
        }
        if acta.status != ActaStatus::Signing {
            return Err(SealError::NotSealable(format!(
                "acta status is `{}`; only an acta in `signing` can be sealed",
                acta.status
            )));
        }
        if !acta.has_signing_majority() {
            let (signed, voters) = acta.voter_signatures();
            return Err(SealError::NotSealable(format!(
                "{signed} of {voters} voting attendees have signed; a majority is needed"
            )));
        }
        let violations = match &budget.process {
            Some(process) => budget_violations(process, &acta, &budget.proposal_zones),
            None => {
                return Err(SealError::NotSealable(format!(
                    "district {} has no process document for {} (its ceilings)",
                    acta.header.district, acta.header.process_year
                )))
            }
        };
        if !violations.is_empty() {
            return Err(SealError::Budget(violations));
        }
        let now = now_unix();
        let edit = Edit::SetActaStatus(ActaStatus::Sealed);
        apply_edits(
            &mut self.doc,
            &[edit],
            &format!("sealed by {}", user.user),
            now as i64,
        )
        .map_err(|e| SealError::Internal(e.to_string()))?;
        let heads = self.doc.get_heads();
        Ok(SealRecord {
            document_id: self.id.to_string(),
            heads: heads.iter().map(|h| h.to_string()).collect(),
            sha256: state_hash(&self.doc, &heads),
            sealed_by: user.user.to_string(),
            sealed_at: now,
        })
    }

    fn unavailable(&self, peer: &PeerHandle) {
        peer.send_unavailable(self.server_id(), &self.id);
    }

    /// Adds `doc` to this index document, creating the index if it is absent. Refuses (false) when
    /// this id holds anything but the index of that district and year: a peer may not plant a
    /// document at an index id, and the server must not write a district's list into it.
    fn index_add(
        &mut self,
        district: Ubigeo,
        process_year: u16,
        doc: DocumentId,
        entry: IndexEntry,
    ) -> bool {
        if self.id != DocumentId::index_for(district, process_year) {
            tracing::error!(doc.id = %self.id, %district, process_year, "index entry sent to a document that is not that index");
            return false;
        }
        let now = now_unix() as i64;
        if self.doc.get_heads().is_empty() {
            let new = NewIndex {
                district,
                process_year,
                docs: Default::default(),
            };
            let mut tx = self.doc.transaction();
            if let Err(e) = new.write_into(&mut tx) {
                tracing::error!(doc.id = %self.id, error = %e, "cannot create index document");
                tx.rollback();
                return false;
            }
            tx.commit_with(crdt_core::schema::commit_options("create index", now));
            self.header = DocumentHeader::read(&self.doc).ok();
        }
        let is_this_index = self.header.as_ref().is_some_and(|h| {
            h.doc_type == DocType::Index && h.district == district && h.process_year == process_year
        });
        if !is_this_index {
            tracing::error!(doc.id = %self.id, %district, process_year, "the document at this index id is not the server's index; not listing {doc} in it");
            return false;
        }
        let already = automerge::ReadDoc::get(&self.doc, automerge::ROOT, "docs")
            .ok()
            .flatten()
            .and_then(|(_, docs)| {
                automerge::ReadDoc::get(&self.doc, &docs, doc.to_string())
                    .ok()
                    .flatten()
            })
            .is_some();
        if !already {
            let edit = Edit::AddToIndex { id: doc, entry };
            if let Err(e) = apply_edits(&mut self.doc, &[edit], &format!("index {doc}"), now) {
                tracing::error!(doc.id = %self.id, error = %e, "cannot add to index");
                return false;
            }
        }
        true
    }

    /// Applies what other nodes stored since this task last read the store; returns how many
    /// changes were new. Runs at the start of a batch, when everything this task applied is
    /// persisted, so the persisted heads move with the document; the ledger becomes the store's
    /// chunk list, and every chunk in it is applied here, so a later compaction by this task
    /// still removes only chunks its snapshot covers.
    async fn refresh(&mut self) -> Result<usize, String> {
        let store = self.hub.0.store.clone();
        let id = self.id;
        let known: HashSet<ChunkKey> = self.ledger.keys.iter().copied().collect();
        let (chunks, rejected) = tokio::task::spawn_blocking(move || {
            let chunks = store.load(&id)?;
            let rejected = Gate::rejected_changes(store.as_ref(), &id)?;
            Ok::<_, StoreError>((chunks, rejected))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        self.hub.0.metrics.relay_refreshes.add(1);
        let all_persisted = self.persisted == self.doc.get_heads();
        let before = self.doc.get_heads();
        for c in chunks.iter().filter(|c| !known.contains(&c.key)) {
            self.doc
                .load_incremental(&c.bytes)
                .map_err(|e| format!("chunk {}: {e}", hex::encode(c.key.hash)))?;
        }
        self.ledger = ChunkLedger::from_chunks(&chunks);
        self.rejected.extend(rejected);
        let new = self.doc.get_changes(&before).len();
        if new == 0 {
            return Ok(0);
        }
        if all_persisted {
            self.persisted = self.doc.get_heads();
        }
        self.hub.0.metrics.relay_changes.add(new as u64);
        if self.header.is_none() {
            // Created on another node (which put it in its district's index).
            self.header = DocumentHeader::read(&self.doc).ok();
        }
        if let Some(h) = self
            .header
            .as_ref()
            .filter(|h| h.doc_type != DocType::Index)
        {
            let _ = self.hub.0.events.send(DocEvent {
                id: self.id.to_string(),
                district: h.district.to_string(),
                doc_type: h.doc_type.to_string(),
            });
        }
        Ok(new)
    }

    /// Writes the changes since the last persisted heads and waits for them to be durable.
    async fn persist(&mut self, heads: &[ChangeHash]) -> bool {
        let metrics = &self.hub.0.metrics;
        let new_changes = self.doc.get_changes(&self.persisted).len();
        let chunk = self.doc.save_after(&self.persisted);
        let key = match self.hub.0.store.append(&self.id, &chunk) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(doc.id = %self.id, error = %e, "cannot write chunk");
                self.hub
                    .0
                    .durability
                    .fail(format!("cannot write chunk: {e}"));
                return false;
            }
        };
        if let Err(e) = self.hub.0.durability.wait().await {
            tracing::error!(doc.id = %self.id, error = %e, "cannot make chunk durable");
            return false;
        }
        self.ledger.record(key, chunk.len());
        self.persisted = heads.to_vec();
        metrics.changes_applied.add(new_changes as u64);
        if self.ledger.should_compact() {
            self.compact();
        }
        true
    }

    /// Tells the peers whose changes a batch judged that they were not stored (the batch could not
    /// be persisted), instead of leaving them without an answer.
    fn refuse_unstored(&self, acked: &HashSet<u64>) {
        for conn in acked {
            if let Some(p) = self.peers.get(conn) {
                p.handle.send_error(
                    self.server_id(),
                    format!(
                        "document {}: your changes were not stored: the server cannot write to its store (disk full, read-only or I/O error); nothing of them is acknowledged",
                        self.id
                    ),
                );
            }
        }
    }

    /// Replaces the document's chunks by one snapshot (one atomic store batch).
    fn compact(&mut self) {
        let snapshot = self.doc.save();
        match self
            .hub
            .0
            .store
            .compact(&self.id, &snapshot, &self.ledger.keys)
        {
            Ok(key) => {
                self.ledger = ChunkLedger::default();
                self.ledger.record(key, snapshot.len());
                self.hub.0.metrics.compactions.add(1);
            }
            Err(e) => tracing::warn!(doc.id = %self.id, error = %e, "compaction failed"),
        }
    }
}
