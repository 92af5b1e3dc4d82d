//! One WebSocket connection at `/sync`: the automerge-repo v1 handshake, routing of `request`,
//! `sync` and `ephemeral` to the hub, heartbeat, token expiry, and bad-input handling.
//!
//! Bad input closes only this connection, after an `error` message saying what was wrong: a frame
//! that is not CBOR or not a known message, a text frame, a message before `join`, a frame over
//! `--max-frame-bytes`. An invalid document id gets an `error` and the connection stays open.
//!
//! What one client may hold is bounded: connections per user (`--max-connections-per-user`,
//! beyond it 429 before the upgrade), documents per connection (`--max-docs-per-connection`,
//! beyond it an `error` per new document), and ephemeral messages per connection (a token
//! bucket: `--ephemeral-per-second` sustained, `--ephemeral-burst` at once; beyond it they are
//! dropped, counted, and the peer is told once; a connection that goes on sending them after
//! another burst's worth was dropped is read no faster than the rate, so a flood costs the
//! server what the rate allows, not what the sender can write). `sync` and `request` messages
//! are paced, not dropped: a user whose connections together spend more than `--sync-burst`
//! units (one per message, one per KiB of it and one per KiB of the server's sync replies to it)
//! faster than `--sync-per-second` is not read until back within budget, so one client cannot
//! keep the documents it shares with others busy. What is queued for a connection is bounded in
//! frames (`--send-queue`) and bytes (`--send-queue-bytes`); a client that does not read is
//! disconnected.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use crdt_core::wire::{ErrorMessage, Message, PeerMessage, PeerMetadata, PROTOCOL_V1};
use crdt_core::{DocumentId, UserId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::{now_unix, AuthUser};
use crate::error::ApiError;
use crate::hub::{DocCmd, Hub, Killer, PeerHandle, SendQueue};
use crate::metrics::Metrics;
use crate::AppState;

/// Limits of a connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub max_frame_bytes: usize,
    /// Most documents one connection may sync.
    pub max_docs: usize,
    /// Most open connections of one user.
    pub max_connections_per_user: usize,
    pub ephemeral_per_second: u32,
    pub ephemeral_burst: u32,
    /// `sync`/`request` messages per second a connection is read at once over its burst.
    pub sync_per_second: u32,
    pub sync_burst: u32,
    pub send_queue: usize,
    /// Most bytes queued for one connection (see [`crate::hub::SendQueue`]).
    pub send_queue_bytes: usize,
    pub heartbeat: Duration,
    /// The server's storage id, announced in `peer`.
    pub storage_id: String,
}

/// Live connections by user and announced peer id. A peer id is not an identity: a second `join`
/// with the same id replaces the first only when it comes from the same user (a phone reconnecting
/// before its old socket timed out). Another user's join with that id disturbs nobody — neither a
/// hijack of the first connection nor a squat that would lock its owner out of reconnecting: the
/// server routes by connection, so the two live side by side as who they are.
#[derive(Default)]
pub struct PeerRegistry {
    peers: Mutex<HashMap<(UserId, String), Claim>>,
    /// Per user: open connections and the `sync`/`request` budget they share (see [`UserSlot`]).
    open: Arc<Mutex<HashMap<UserId, UserSlot>>>,
}

/// What a user's connections share. The sync budget is the user's, not a connection's: a client
/// that reconnects after every burst would otherwise get a fresh burst each time (the held-changes
/// flood of `hostile-bench` did exactly that). An entry leaves once the user has no connection
/// open and the budget has refilled; entries of users who left are pruned when the map grows past
/// [`PRUNE_USER_SLOTS`], so it holds at most the users connected now or within the last refill
/// time (burst ÷ rate, 4 s by default).
struct UserSlot {
    open: usize,
    sync: TokenBucket,
}

/// Above this many entries, `open` drops those of users with nothing open and a full budget.
const PRUNE_USER_SLOTS: usize = 4096;

/// One open connection of a user, counted until it is dropped.
pub struct OpenTicket {
    budget: SyncBudget,
}

/// A user's sync budget, as the user's connections and the document tasks answering them see it.
#[derive(Clone)]
pub struct SyncBudget {
    open: Arc<Mutex<HashMap<UserId, UserSlot>>>,
    user: UserId,
}

impl SyncBudget {
    /// Charges `cost` units; how long to stop reading the user's connections if it is in debt.
    pub fn charge(&self, cost: f64) -> Option<Duration> {
        let mut open = self.open.lock().unwrap();
        let slot = open.get_mut(&self.user)?;
        slot.sync.charge(cost, Instant::now());
        slot.sync.deficit()
    }

    /// How long until the budget is out of debt, if it is in debt.
    fn deficit(&self) -> Option<Duration> {
        self.charge(0.0)
    }
}

impl Drop for OpenTicket {
    fn drop(&mut self) {
        let mut open = self.budget.open.lock().unwrap();
        if let Some(slot) = open.get_mut(&self.budget.user) {
            slot.open -= 1;
            if slot.open == 0 && slot.sync.is_full(Instant::now()) {
                open.remove(&self.budget.user);
            }
        }
    }
}

/// Which budget a connection's reading was paused for.
#[derive(Clone, Copy, Debug)]
enum Debt {
    Sync,
    Ephemeral,
}

/// Who holds a (user, peer id): the connection and the switch that ends it.
type Claim = (u64, Arc<Killer>);

impl PeerRegistry {
    /// Counts a new connection of `user`; `None` when the user already has `max` open. A user
    /// new to the map starts with a full sync budget of `sync_burst` units, refilled at
    /// `sync_rate` a second.
    pub fn open(
        &self,
        user: &UserId,
        max: usize,
        sync_rate: u32,
        sync_burst: u32,
    ) -> Option<OpenTicket> {
        let mut open = self.open.lock().unwrap();
        if open.len() >= PRUNE_USER_SLOTS {
            let now = Instant::now();
            open.retain(|_, slot| slot.open > 0 || !slot.sync.is_full(now));
        }
        let slot = open.entry(user.clone()).or_insert_with(|| UserSlot {
            open: 0,
            sync: TokenBucket::new(sync_rate, sync_burst),
        });
        if slot.open >= max {
            if slot.open == 0 {
                open.remove(user);
            }
            return None;
        }
        slot.open += 1;
        Some(OpenTicket {
            budget: SyncBudget {
                open: self.open.clone(),
                user: user.clone(),
            },
        })
    }

    fn claim(&self, peer_id: &str, conn_id: u64, user: &UserId, killer: Arc<Killer>) {
        let key = (user.clone(), peer_id.to_string());
        let old = self.peers.lock().unwrap().insert(key, (conn_id, killer));
        if let Some((old_conn, old_killer)) = old {
            if old_conn != conn_id {
                old_killer.kill("replaced by a new connection with the same peer id");
            }
        }
    }

    fn release(&self, user: &UserId, peer_id: &str, conn_id: u64) {
        let key = (user.clone(), peer_id.to_string());
        let mut peers = self.peers.lock().unwrap();
        if peers.get(&key).is_some_and(|(c, _)| *c == conn_id) {
            peers.remove(&key);
        }
    }
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// `GET /sync`: authenticates (401 before any upgrade), then upgrades to a WebSocket.
pub async fn sync_ws(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = state
        .keys
        .authenticate(&req)
        .map_err(ApiError::Unauthorized)?;
    let max_open = state.conn.max_connections_per_user;
    let Some(ticket) = state.registry.open(
        &user.user,
        max_open,
        state.conn.sync_per_second,
        state.conn.sync_burst,
    ) else {
        state.metrics.connections_refused.add(1);
        tracing::info!(user = %user.user, "connection refused: too many open connections");
        return Err(ApiError::TooMany(format!(
            "user {} already has {max_open} open sync connections, the most allowed; close one first",
            user.user
        )));
    };
    let (response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let max = state.conn.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let conn = Connection {
        id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        user: Arc::new(user),
        hub: state.hub.clone(),
        metrics: state.metrics.clone(),
        config: state.conn.clone(),
        registry: state.registry.clone(),
        shutdown: state.shutdown.clone(),
        store_failed: state.durability.fatal(),
        killer: Arc::new(Killer::default()),
        peer: None,
        docs: HashSet::new(),
        ephemeral: TokenBucket::new(state.conn.ephemeral_per_second, state.conn.ephemeral_burst),
        told_ephemeral: false,
        read_debt: None,
        queued: Arc::new(SendQueue::new(state.conn.send_queue_bytes)),
        ticket,
    };
    tracing::debug!(conn = conn.id, user = %conn.user.user, "connection opened");
    actix_web::rt::spawn(conn.run(session, stream));
    Ok(response)
}

/// Why a connection ends.
enum End {
    /// Close with this code and reason, after an `error` message if `error` is set.
    Close {
        code: CloseCode,
        reason: String,
        error: bool,
    },
    /// The client went away.
    Gone,
}

impl End {
    fn bad_input(reason: impl Into<String>) -> Self {
        End::Close {
            code: CloseCode::Policy,
            reason: reason.into(),
            error: true,
        }
    }

    fn not_reading() -> Self {
        End::Close {
            code: CloseCode::Policy,
            reason: "the client is not reading".into(),
            error: true,
        }
    }
}

/// Longest peer id a `join` may announce (automerge-repo's are a few dozen bytes); it is kept
/// for the connection's life and echoed in every message to the peer.
const MAX_PEER_ID_BYTES: usize = 256;

/// Why every connection closes when the store cannot write (an `error` message, then the close).
pub const STORE_FAILED: &str =
    "server stopping: its store cannot write (disk full, read-only or I/O error); unacknowledged changes were not stored";

/// How long the `error` and close frames may take to leave before a connection is dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The outcome of one write to the WebSocket.
enum Sent {
    Done,
    /// The client went away.
    Gone,
    /// Shutdown or the kill switch fired while the write waited; the main loop says why.
    Interrupted,
    /// The write waited longer than two heartbeats: the client stopped reading.
    Stalled,
}

struct Connection {
    id: u64,
    user: Arc<AuthUser>,
    hub: Hub,
    metrics: Arc<Metrics>,
    config: ConnConfig,
    registry: Arc<PeerRegistry>,
    shutdown: CancellationToken,
    /// Fired when the store cannot write: the shutdown that follows says so to the peer.
    store_failed: CancellationToken,
    killer: Arc<Killer>,
    peer: Option<PeerHandle>,
    docs: HashSet<DocumentId>,
    ephemeral: TokenBucket,
    /// The peer was told that its ephemeral messages are being dropped.
    told_ephemeral: bool,
    /// Counts this connection against its user's limit and carries the user's sync budget
    /// (`sync` and `request` messages: beyond it the connection is read more slowly).
    ticket: OpenTicket,
    /// Stop reading for this long after the current frame, and why: the user's sync budget or
    /// this connection's ephemeral budget is in debt.
    read_debt: Option<(Duration, Debt)>,
    /// Bytes queued for this connection and not yet handed to the socket.
    queued: Arc<SendQueue>,
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Spends `cost` tokens even when there are not enough (see [`Self::deficit`]).
    fn charge(&mut self, cost: f64, now: Instant) {
        self.refill(now);
        self.tokens -= cost;
    }

    /// Whether the bucket has refilled to its burst.
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// How long until the bucket is out of debt, if it is in debt.
    fn deficit(&self) -> Option<Duration> {
        (self.tokens < 0.0 && self.rate > 0.0)
            .then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }

    /// How long until the bucket is back above minus one burst, if it has been overdrawn below
    /// that (for budgets whose excess is dropped, not owed: pause only for persistent excess).
    fn overdraft(&self) -> Option<Duration> {
        let below = -self.burst - self.tokens;
        (below > 0.0 && self.rate > 0.0).then(|| Duration::from_secs_f64(below / self.rate))
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Connection {
    async fn run(mut self, mut session: Session, mut stream: AggregatedMessageStream) {
        self.metrics.connections.inc();
        self.metrics.connections_total.add(1);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(self.config.send_queue);
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        heartbeat.tick().await;
        let mut last_seen = Instant::now();
        let expires_in = Duration::from_secs(self.user.exp.saturating_sub(now_unix()));
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let kill = self.killer.token().clone();
        // While the connection has spent more than its sync budget, its socket is not read (the
        // client is slowed by TCP backpressure; nothing it sent is dropped), but pings and what
        // the server sends it keep going.
        let throttle = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(throttle);
        let mut throttled = false;
        // A user in debt does not get a fresh connection read at once: each new connection's
        // first message would otherwise be answered in full (a whole document for a `sync` from
        // nothing) before the debt is seen.
        if let Some(wait) = self.ticket.budget.deficit() {
            self.metrics.sync_throttled.add(1);
            throttle.as_mut().reset(tokio::time::Instant::now() + wait);
            throttled = true;
        }

        let end = loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break match self.store_failed.is_cancelled() {
                    true => End::Close { code: CloseCode::Error, reason: STORE_FAILED.into(), error: true },
                    false => End::Close { code: CloseCode::Away, reason: "server shutting down".into(), error: false },
                },
                _ = kill.cancelled() => break End::Close {
                    code: CloseCode::Policy,
                    reason: self.killer.reason().unwrap_or_else(|| "closed by server".into()),
                    error: true,
                },
                _ = &mut expiry => break End::Close { code: CloseCode::Policy, reason: "token expired".into(), error: true },
                Some(frame) = out_rx.recv() => {
                    self.queued.taken(frame.len());
                    self.metrics.bytes_out.add(frame.len() as u64);
                    self.metrics.messages_out.add(1);
                    match self.guarded(session.binary(frame), &kill).await {
                        Sent::Done => {}
                        Sent::Gone => break End::Gone,
                        Sent::Interrupted => continue,
                        Sent::Stalled => break self.stalled(),
                    }
                }
                _ = heartbeat.tick() => {
                    if last_seen.elapsed() > self.config.heartbeat * 2 {
                        break End::Close { code: CloseCode::Away, reason: "heartbeat timeout".into(), error: false };
                    }
                    match self.guarded(session.ping(b""), &kill).await {
                        Sent::Done => {}
                        Sent::Gone => break End::Gone,
                        Sent::Interrupted => continue,
                        Sent::Stalled => break self.stalled(),
                    }
                }
                _ = &mut throttle, if throttled => throttled = false,
                msg = stream.recv(), if !throttled => {
                    last_seen = Instant::now();
                    match msg {
                        None => break End::Gone,
                        Some(Err(e)) => break End::bad_input(match e {
                            actix_ws::ProtocolError::Overflow => format!("frame exceeds the limit of {} bytes", self.config.max_frame_bytes),
                            other => format!("websocket protocol error: {other}"),
                        }),
                        Some(Ok(AggregatedMessage::Binary(bytes))) => {
                            self.metrics.bytes_in.add(bytes.len() as u64);
                            self.metrics.messages_in.add(1);
                            if let Err(end) = self.handle_frame(&bytes, &out_tx).await { break end; }
                            if let Some((wait, debt)) = self.read_debt.take() {
                                match debt {
                                    Debt::Sync => self.metrics.sync_throttled.add(1),
                                    Debt::Ephemeral => self.metrics.ephemeral_throttled.add(1),
                                }
                                throttle.as_mut().reset(tokio::time::Instant::now() + wait);
                                throttled = true;
                            }
                        }
                        Some(Ok(AggregatedMessage::Text(_))) => break End::bad_input("text frames are not part of the protocol; send binary CBOR"),
                        Some(Ok(AggregatedMessage::Ping(p))) => match self.guarded(session.pong(&p), &kill).await {
                            Sent::Done => {}
                            Sent::Gone => break End::Gone,
                            Sent::Interrupted => continue,
                            Sent::Stalled => break self.stalled(),
                        },
                        Some(Ok(AggregatedMessage::Pong(_))) => {}
                        // Answer the client's close frame, as RFC 6455 asks, so it need not wait.
                        Some(Ok(AggregatedMessage::Close(_))) => break End::Close { code: CloseCode::Normal, reason: "closed by the client".into(), error: false },
                    }
                }
            }
        };

        if let End::Close {
            code,
            reason,
            error,
        } = end
        {
            if error {
                self.metrics.protocol_errors.add(1);
                tracing::info!(conn = self.id, user = %self.user.user, %reason, "closing connection");
            }
            let msg = error.then(|| self.error_message(reason.clone()));
            let goodbye = async {
                if let Some(msg) = msg {
                    // Flush what was queued (it may include the reason for the close) before the error.
                    while let Ok(frame) = out_rx.try_recv() {
                        let _ = session.binary(frame).await;
                    }
                    let _ = session.binary(msg.encode()).await;
                }
                let _ = session
                    .close(Some(CloseReason {
                        code,
                        description: Some(reason.chars().take(120).collect()),
                    }))
                    .await;
            };
            // A client that does not read would hold this task here forever: give up after a grace
            // period and drop the session (the socket closes once its buffers drain or it dies).
            if tokio::time::timeout(CLOSE_GRACE, goodbye).await.is_err() {
                tracing::debug!(conn = self.id, "client did not take the close; dropping it");
            }
        }
        self.cleanup();
    }

    /// A write waited two heartbeats: the client is not reading. Counted with the connections
    /// whose send queue filled.
    fn stalled(&self) -> End {
        self.metrics.slow_consumers_closed.add(1);
        End::not_reading()
    }

    /// Runs one write to the session. A client that stops reading makes the write wait for room
    /// that never comes; the kill switch (its send queue overflowed), shutdown and a stall of two
    /// heartbeats must still end the connection, so the write never waits on them.
    async fn guarded<F>(&self, write: F, kill: &CancellationToken) -> Sent
    where
        F: std::future::Future<Output = Result<(), actix_ws::Closed>>,
    {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Sent::Interrupted,
            _ = kill.cancelled() => Sent::Interrupted,
            r = tokio::time::timeout(self.config.heartbeat * 2, write) => match r {
                Ok(Ok(())) => Sent::Done,
                Ok(Err(_)) => Sent::Gone,
                Err(_) => Sent::Stalled,
            },
        }
    }

    fn cleanup(&mut self) {
        if let Some(peer) = &self.peer {
            self.registry
                .release(&self.user.user, &peer.peer_id, self.id);
        }
        self.hub.stop_waiting(self.id, &self.docs);
        for doc in self.docs.drain() {
            self.hub
                .send_if_loaded(doc, DocCmd::Leave { conn_id: self.id });
        }
        self.metrics.connections.dec();
        tracing::debug!(conn = self.id, "connection closed");
    }

    fn error_message(&self, message: String) -> Message {
        Message::Error(ErrorMessage {
            sender_id: Some(self.hub.server_peer_id().to_string()),
            target_id: self.peer.as_ref().map(|p| p.peer_id.clone()),
            message,
        })
    }

    /// Handles one binary frame; `Err` ends the connection.
    async fn handle_frame(&mut self, bytes: &[u8], out: &mpsc::Sender<Vec<u8>>) -> Result<(), End> {
        let msg = Message::decode(bytes)
            .map_err(|e| End::bad_input(format!("malformed message: {e}")))?;
        let Some(peer) = self.peer.clone() else {
            let Message::Join(join) = msg else {
                return Err(End::bad_input(format!(
                    "expected `join` first, got `{}`",
                    msg.type_name()
                )));
            };
            if !join
                .supported_protocol_versions
                .iter()
                .any(|v| v == PROTOCOL_V1)
            {
                return Err(End::bad_input(format!(
                    "unsupported protocol versions {:?}; this server speaks \"1\"",
                    join.supported_protocol_versions
                )));
            }
            if join.sender_id.len() > MAX_PEER_ID_BYTES {
                return Err(End::bad_input(format!(
                    "peer id of {} bytes; at most {MAX_PEER_ID_BYTES} are accepted",
                    join.sender_id.len()
                )));
            }
            self.registry.claim(
                &join.sender_id,
                self.id,
                &self.user.user,
                self.killer.clone(),
            );
            let handle = PeerHandle::new(
                self.id,
                join.sender_id.clone(),
                self.user.clone(),
                out.clone(),
                self.killer.clone(),
                self.metrics.clone(),
            )
            .with_queue(self.queued.clone())
            .with_reply_cost({
                // What the server sends back costs one unit per KiB too: a `sync` from nothing
                // is answered with the whole document. Seen when the next message is read.
                let budget = self.ticket.budget.clone();
                Arc::new(move |bytes| {
                    budget.charge(bytes as f64 / 1024.0);
                })
            });
            handle.send(&Message::Peer(PeerMessage {
                sender_id: self.hub.server_peer_id().to_string(),
                target_id: join.sender_id,
                selected_protocol_version: PROTOCOL_V1.to_string(),
                peer_metadata: Some(PeerMetadata::new(Some(&self.config.storage_id), false)),
                metadata: None,
            }));
            self.peer = Some(handle);
            return Ok(());
        };
        let parse = |doc: &str| {
            doc.parse::<DocumentId>()
                .map_err(|e| format!("invalid document id {doc:?}: {e}"))
        };
        if matches!(msg, Message::Sync(_) | Message::Request(_)) {
            // A message costs one unit, and one more per KiB: decoding the changes it carries is
            // what costs the server, and that grows with its size.
            let cost = 1.0 + bytes.len() as f64 / 1024.0;
            self.read_debt = self.ticket.budget.charge(cost).map(|d| (d, Debt::Sync));
        }
        let (id, cmd) = match msg {
            Message::Join(_) => return Err(End::bad_input("`join` sent twice on one connection")),
            Message::Request(m) => (
                parse(&m.document_id),
                DocCmd::Sync {
                    peer: peer.clone(),
                    data: m.data,
                    request: true,
                },
            ),
            Message::Sync(m) => (
                parse(&m.document_id),
                DocCmd::Sync {
                    peer: peer.clone(),
                    data: m.data,
                    request: false,
                },
            ),
            Message::Ephemeral(m) => {
                let now = Instant::now();
                let relayed = self.ephemeral.take(now);
                if !relayed {
                    // Dropped, and charged: once a further burst's worth has been dropped, the
                    // connection is read no faster than the rate allows.
                    self.ephemeral.charge(1.0, now);
                    self.read_debt = self.ephemeral.overdraft().map(|d| (d, Debt::Ephemeral));
                    self.metrics.ephemeral_dropped.add(1);
                    if !self.told_ephemeral {
                        self.told_ephemeral = true;
                        peer.send(&self.error_message(format!(
                            "ephemeral messages over {} per second (bursts of {}) are dropped",
                            self.config.ephemeral_per_second, self.config.ephemeral_burst
                        )));
                    }
                    return Ok(());
                }
                (
                    parse(&m.document_id),
                    DocCmd::Ephemeral {
                        from: peer.clone(),
                        msg: m,
                    },
                )
            }
            Message::Leave(_) => {
                return Err(End::Close {
                    code: CloseCode::Normal,
                    reason: "peer left".into(),
                    error: false,
                })
            }
            // Informational messages a client may send; the server needs nothing from them.
            Message::DocUnavailable(_)
            | Message::RemoteSubscriptionChange(_)
            | Message::RemoteHeadsChanged(_)
            | Message::Peer(_)
            | Message::Error(_) => return Ok(()),
        };
        let id = match id {
            Ok(id) => id,
            Err(text) => {
                peer.send(&self.error_message(text));
                return Ok(());
            }
        };
        if !self.docs.contains(&id) {
            if self.docs.len() >= self.config.max_docs {
                self.metrics.documents_refused.add(1);
                peer.send(&self.error_message(format!(
                    "document {id}: not synced: this connection already syncs {} documents, the most \
                     allowed; open another connection or leave some",
                    self.config.max_docs
                )));
                return Ok(());
            }
            self.docs.insert(id);
        }
        self.hub.send(id, cmd).await.map_err(|_| End::Close {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
            error: false,
        })
    }
}
