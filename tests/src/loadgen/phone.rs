//! A simulated phone: a set of automerge documents with their sync states, and one WebSocket
//! session at a time that speaks automerge-repo v1 to the server until a goal is reached and
//! the workload says stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, ChangeHash};
use crdt_core::DocumentId;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::wire::Msg;

/// One document on a phone.
pub struct PhoneDoc {
    pub id: DocumentId,
    id_str: String,
    pub doc: Automerge,
    pub state: sync::State,
    /// The phone's own heads that the server must acknowledge; empty when nothing to acknowledge.
    pub ack_heads: Vec<ChangeHash>,
    /// The heads (sorted) this document must reach to count as converged.
    pub target_heads: Option<Vec<ChangeHash>>,
    acked: bool,
    converged: bool,
    /// The server sent a message about this document in this session.
    heard: bool,
    /// The last message the server sent about it carried heads equal to ours.
    settled: bool,
    /// When that last message arrived.
    settled_at: Option<Duration>,
    /// The phone's opening `sync` showed agreement with the server: its heads equal the heads the
    /// server is known to hold (`target_heads` when the harness knows them, else the shared heads
    /// of the persisted sync state).
    agreed: bool,
    /// When the opening `sync` went out (or the session started, if there was none).
    opened_at: Option<Duration>,
}

impl PhoneDoc {
    pub fn new(id: DocumentId, doc: Automerge) -> Self {
        Self {
            id,
            id_str: id.to_string(),
            doc,
            state: sync::State::new(),
            ack_heads: Vec::new(),
            target_heads: None,
            acked: false,
            converged: false,
            heard: false,
            settled: false,
            settled_at: None,
            agreed: false,
            opened_at: None,
        }
    }

    /// Has this document settled (see [`Goal::Settle`])?
    pub fn is_settled(&self) -> bool {
        if self.heard {
            self.settled
        } else {
            self.agreed
        }
    }

    /// When it settled: the server's last message about it, or the phone's agreeing opening
    /// `sync` when the server said nothing about it.
    pub fn settled_instant(&self) -> Option<Duration> {
        if !self.is_settled() {
            None
        } else if self.heard {
            self.settled_at
        } else {
            self.opened_at
        }
    }
}

/// A phone: a user with a token, a peer id, a storage id and its documents.
pub struct Phone {
    pub idx: usize,
    pub user: String,
    pub peer_id: String,
    pub storage_id: String,
    pub token: String,
    pub docs: Vec<PhoneDoc>,
    by_id: HashMap<String, usize>,
    /// The storage id of the server this phone last synced with: automerge-repo keeps sync
    /// states across reconnects only for a server that announced one.
    server_storage_id: Option<String>,
    /// Keep a transcript of every frame in the session's stats.
    pub record: bool,
}

impl Phone {
    pub fn new(idx: usize, user: String, token: String, docs: Vec<PhoneDoc>) -> Self {
        let by_id = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id_str.clone(), i))
            .collect();
        Self {
            idx,
            peer_id: format!("phone-{idx}-{:08x}", rand::random::<u32>()),
            storage_id: format!("{:032x}", rand::random::<u128>()),
            user,
            token,
            docs,
            by_id,
            server_storage_id: None,
            record: false,
        }
    }
}

/// When a phone's session has done its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// The server acknowledged every document with `ack_heads` and every document reached its
    /// `target_heads`.
    Converge,
    /// Every document settled, valid for a server that answers an agreeing `sync` and for one
    /// that stays silent: a document settles when the last message the server sent about it in
    /// this session carried heads equal to the phone's, or, when the server sent nothing about
    /// it, when the phone's opening `sync` already showed agreement (its heads equal the heads
    /// the server is known to hold: `target_heads`, else the persisted sync state's shared
    /// heads). A later message with other heads unsettles it again, so a workload must also wait
    /// for quiescence (no frames for a while) before it believes a silence.
    Settle,
}

/// Counts phones that reached their goal; the workload waits on it.
pub struct Progress {
    /// Phones that reached their goal (counted once, the first time).
    pub done: AtomicUsize,
    pub acked: AtomicUsize,
    pub failed: AtomicUsize,
    /// Phones whose documents are all settled right now (goes down when one unsettles).
    pub settled: AtomicUsize,
    pub notify: Notify,
    base: Instant,
    /// Nanoseconds after `base` of the last data frame sent or received on any connection.
    last_frame_ns: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            done: AtomicUsize::new(0),
            acked: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            settled: AtomicUsize::new(0),
            notify: Notify::new(),
            base: Instant::now(),
            last_frame_ns: AtomicU64::new(0),
        }
    }
}

impl Progress {
    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn frame(&self) {
        let ns = self.base.elapsed().as_nanos() as u64;
        self.last_frame_ns.fetch_max(ns, Ordering::SeqCst);
    }

    /// When the last data frame went either way on any connection of this phase (or when the
    /// progress was created, if none did).
    pub fn last_frame(&self) -> Instant {
        self.base + Duration::from_nanos(self.last_frame_ns.load(Ordering::SeqCst))
    }
}

/// What one session did, times relative to the workload's start.
#[derive(Debug, Default, Clone)]
pub struct SessionStats {
    pub handshake_at: Option<Duration>,
    pub acked_at: Option<Duration>,
    pub done_at: Option<Duration>,
    pub frames_out: u64,
    pub frames_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub sync_out: u64,
    pub sync_in: u64,
    pub sync_in_after_done: u64,
    pub sync_out_after_done: u64,
    /// With [`Goal::Settle`]: when every document had settled for the last time (the latest
    /// settle instant of its documents), if all were settled when the session ended.
    pub settled_at: Option<Duration>,
    /// Documents settled by the server's equal-heads reply, and by its silence after the phone's
    /// agreeing opening `sync`.
    pub docs_answered: u64,
    pub docs_silent: u64,
    pub doc_unavailable: u64,
    pub errors: Vec<String>,
    pub failure: Option<String>,
    /// Every frame of the session, when the phone records (the protocol probe).
    pub transcript: Option<Vec<String>>,
}

/// `LOADGEN_TRACE=1` prints every frame a phone sends or receives (to stderr).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("LOADGEN_TRACE").is_some_and(|v| v != "0"))
}

/// A one-line description of a frame, for traces and the protocol probe.
pub fn summarize(frame: &[u8]) -> String {
    match Msg::decode(frame) {
        Ok(Msg::Sync {
            document_id, data, ..
        })
        | Ok(Msg::Request {
            document_id, data, ..
        }) => {
            let kind = if matches!(Msg::decode(frame), Ok(Msg::Request { .. })) {
                "request"
            } else {
                "sync"
            };
            match sync::Message::decode(&data) {
                Ok(m) => format!(
                    "{kind} {document_id}: heads {:?} need {} have {} changes {} ({} bytes)",
                    m.heads
                        .iter()
                        .map(|h| h.to_string()[..8].to_string())
                        .collect::<Vec<_>>(),
                    m.need.len(),
                    m.have.len(),
                    m.changes.len(),
                    frame.len()
                ),
                Err(e) => format!("{kind} {document_id}: undecodable sync data: {e}"),
            }
        }
        Ok(other) => format!("{other:?} ({} bytes)", frame.len()),
        Err(e) => format!("undecodable frame ({} bytes): {e}", frame.len()),
    }
}

fn trace(phone: usize, dir: &str, frame: &[u8]) {
    if tracing() {
        eprintln!("[phone {phone}] {dir} {}", summarize(frame));
    }
}

impl SessionStats {
    fn record(&mut self, started: Instant, dir: &str, frame: &[u8]) {
        if let Some(t) = &mut self.transcript {
            t.push(format!(
                "{:>6.0} ms {dir} {}",
                started.elapsed().as_secs_f64() * 1000.0,
                summarize(frame)
            ));
        }
    }
}

fn contains_all(haystack: &[ChangeHash], needles: &[ChangeHash]) -> bool {
    needles.iter().all(|h| haystack.contains(h))
}

/// Does the server, reporting `their_heads`, hold every change in `own`? Either each of our heads
/// is one of theirs, or we know all their heads and ours are among their ancestors.
fn covers(doc: &Automerge, their_heads: &[ChangeHash], own: &[ChangeHash]) -> bool {
    if contains_all(their_heads, own) {
        return true;
    }
    if !their_heads
        .iter()
        .all(|h| doc.get_change_meta_by_hash(h).is_some())
    {
        return false;
    }
    let newer = doc.get_changes_meta(their_heads);
    own.iter().all(|h| !newer.iter().any(|c| c.hash == *h))
}

struct Session<'a> {
    phone: &'a mut Phone,
    server_peer: String,
    goal: Goal,
    t0: Instant,
    stats: SessionStats,
    /// With [`Goal::Settle`]: counted in `Progress::settled` right now.
    settled_now: bool,
}

impl Session<'_> {
    fn sync_frame(&self, i: usize, msg: sync::Message, request: bool) -> Vec<u8> {
        let d = &self.phone.docs[i];
        let data = msg.encode();
        let m = if request {
            Msg::Request {
                sender_id: self.phone.peer_id.clone(),
                target_id: self.server_peer.clone(),
                document_id: d.id_str.clone(),
                data,
            }
        } else {
            Msg::Sync {
                sender_id: self.phone.peer_id.clone(),
                target_id: self.server_peer.clone(),
                document_id: d.id_str.clone(),
                data,
            }
        };
        m.encode()
    }

    /// Re-evaluates one document's flags after a message from the server.
    fn update_doc(&mut self, i: usize, their_heads: &[ChangeHash]) {
        let now = self.t0.elapsed();
        let d = &mut self.phone.docs[i];
        d.heard = true;
        let ours = d.doc.get_heads();
        if !d.acked && !d.ack_heads.is_empty() && covers(&d.doc, their_heads, &d.ack_heads) {
            d.acked = true;
        }
        if let Some(target) = &d.target_heads {
            d.converged = &ours == target;
        }
        let mut theirs = their_heads.to_vec();
        theirs.sort_unstable();
        d.settled = theirs == ours;
        d.settled_at = d.settled.then_some(now);
    }

    fn all_acked(&self) -> bool {
        self.phone
            .docs
            .iter()
            .all(|d| d.ack_heads.is_empty() || d.acked)
    }

    fn goal_reached(&self) -> bool {
        match self.goal {
            Goal::Converge => {
                self.all_acked()
                    && self
                        .phone
                        .docs
                        .iter()
                        .all(|d| d.target_heads.is_none() || d.converged)
            }
            Goal::Settle => self.phone.docs.iter().all(PhoneDoc::is_settled),
        }
    }
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the server with a `join`, waits for `peer`.
async fn handshake(
    phone: &Phone,
    url: &str,
) -> Result<(WsStream, String, Option<String>, Vec<u8>, Vec<u8>)> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(60),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .map_err(|_| anyhow!("WebSocket connect timed out"))??;
    let join = Msg::Join {
        sender_id: phone.peer_id.clone(),
        storage_id: Some(phone.storage_id.clone()),
        is_ephemeral: false,
    }
    .encode();
    ws.send(WsMessage::Binary(join.clone())).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no `peer` answer to `join` within 60 s"))?;
        match frame {
            Some(Ok(WsMessage::Binary(b))) => match Msg::decode(&b)? {
                Msg::Peer {
                    sender_id,
                    storage_id,
                    ..
                } => {
                    trace(phone.idx, "<-", &b);
                    return Ok((ws, sender_id, storage_id, join, b));
                }
                Msg::Error { message, .. } => bail!("server error on join: {message}"),
                _ => {}
            },
            Some(Ok(WsMessage::Close(c))) => bail!("server closed during handshake: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("WebSocket error during handshake: {e}"),
            None => bail!("server closed during handshake"),
        }
    }
}

/// One session: connect, announce every document, exchange sync messages until `stop` fires.
/// Reports to `progress` once when the goal is reached.
pub async fn run_session(
    phone: &mut Phone,
    url: &str,
    goal: Goal,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> SessionStats {
    let mut stats = SessionStats {
        transcript: phone.record.then(Vec::new),
        ..SessionStats::default()
    };
    let started = Instant::now();
    let (ws, server_peer, server_storage, join, peer) = match handshake(phone, url).await {
        Ok(x) => x,
        Err(e) => {
            stats.failure = Some(format!("{e:#}"));
            progress.bump(&progress.failed);
            return stats;
        }
    };
    stats.handshake_at = Some(t0.elapsed());
    progress.frame();
    stats.frames_out = 1;
    stats.frames_in = 1;
    stats.bytes_out = join.len() as u64;
    stats.bytes_in = peer.len() as u64;
    stats.record(started, "->", &join);
    stats.record(started, "<-", &peer);
    // Sync states persist across sessions only with the same server storage id, and only their
    // persisted part (shared heads) survives, as in automerge-repo.
    let keep = server_storage.is_some() && server_storage == phone.server_storage_id;
    for d in &mut phone.docs {
        d.state = if keep {
            sync::State::decode(&d.state.encode()).unwrap_or_else(|_| sync::State::new())
        } else {
            sync::State::new()
        };
        let ours = d.doc.get_heads();
        d.acked = false;
        d.converged = d.target_heads.as_ref() == Some(&ours);
        d.heard = false;
        d.settled = false;
        d.settled_at = None;
        d.opened_at = None;
        let known = match &d.target_heads {
            Some(t) => Some(t.clone()),
            None => {
                let mut shared = d.state.shared_heads.clone();
                shared.sort_unstable();
                (!shared.is_empty()).then_some(shared)
            }
        };
        d.agreed = !ours.is_empty() && known.as_ref() == Some(&ours);
    }
    phone.server_storage_id = server_storage;
    let mut s = Session {
        phone,
        server_peer,
        goal,
        t0,
        stats,
        settled_now: false,
    };
    let result = session_loop(&mut s, ws, &mut stop, &progress, started).await;
    if let Err(e) = result {
        if s.stats.done_at.is_none() || goal == Goal::Settle {
            s.stats.failure = Some(format!("{e:#}"));
            if s.settled_now {
                progress.settled.fetch_sub(1, Ordering::SeqCst);
            }
            progress.bump(&progress.failed);
        }
    }
    if goal == Goal::Settle && s.stats.failure.is_none() {
        let docs = &s.phone.docs;
        if docs.iter().all(PhoneDoc::is_settled) {
            s.stats.settled_at = docs.iter().filter_map(PhoneDoc::settled_instant).max();
        }
        s.stats.docs_answered = docs.iter().filter(|d| d.heard && d.settled).count() as u64;
        s.stats.docs_silent = docs.iter().filter(|d| !d.heard && d.agreed).count() as u64;
    }
    s.stats
}

async fn session_loop(
    s: &mut Session<'_>,
    ws: WsStream,
    stop: &mut watch::Receiver<bool>,
    progress: &Progress,
    started: Instant,
) -> Result<()> {
    let (mut sink, mut stream) = ws.split();
    // Announce every document: `request` for one we do not have, `sync` otherwise.
    for i in 0..s.phone.docs.len() {
        let d = &mut s.phone.docs[i];
        let request = d.doc.get_heads().is_empty();
        if let Some(msg) = d.doc.generate_sync_message(&mut d.state) {
            let frame = s.sync_frame(i, msg, request);
            trace(s.phone.idx, "->", &frame);
            s.stats.record(started, "->", &frame);
            s.stats.frames_out += 1;
            s.stats.sync_out += 1;
            s.stats.bytes_out += frame.len() as u64;
            progress.frame();
            sink.feed(WsMessage::Binary(frame)).await?;
        }
    }
    sink.flush().await?;
    let opened = s.t0.elapsed();
    for d in &mut s.phone.docs {
        d.opened_at = Some(opened);
    }
    let mut reported_ack = false;
    let mut reported_done = false;
    let check = |s: &mut Session<'_>, reported_ack: &mut bool, reported_done: &mut bool| {
        if !*reported_ack && s.all_acked() {
            *reported_ack = true;
            s.stats.acked_at = Some(s.t0.elapsed());
            progress.bump(&progress.acked);
        }
        let reached = s.goal_reached();
        if !*reported_done && reached {
            *reported_done = true;
            s.stats.done_at = Some(s.t0.elapsed());
            progress.bump(&progress.done);
        }
        if s.goal == Goal::Settle && reached != s.settled_now {
            s.settled_now = reached;
            if reached {
                progress.settled.fetch_add(1, Ordering::SeqCst);
            } else {
                progress.settled.fetch_sub(1, Ordering::SeqCst);
            }
            progress.notify.notify_waiters();
        }
    };
    check(s, &mut reported_ack, &mut reported_done);
    loop {
        if *stop.borrow() {
            break;
        }
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = stop.changed() => break,
        };
        let bytes = match frame {
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(WsMessage::Close(c))) => bail!("server closed the connection: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("WebSocket error: {e}"),
            None => bail!("server closed the connection"),
        };
        progress.frame();
        trace(s.phone.idx, "<-", &bytes);
        s.stats.record(started, "<-", &bytes);
        s.stats.frames_in += 1;
        s.stats.bytes_in += bytes.len() as u64;
        let msg = Msg::decode(&bytes)?;
        let (doc_id, data) = match msg {
            Msg::Sync {
                document_id, data, ..
            }
            | Msg::Request {
                document_id, data, ..
            } => (document_id, data),
            Msg::DocUnavailable { document_id, .. } => {
                s.stats.doc_unavailable += 1;
                if s.stats.errors.len() < 5 {
                    s.stats
                        .errors
                        .push(format!("doc-unavailable for {document_id}"));
                }
                continue;
            }
            Msg::Error { message } => {
                if s.stats.errors.len() < 5 {
                    s.stats.errors.push(format!("error: {message}"));
                }
                continue;
            }
            _ => continue,
        };
        let Some(&i) = s.phone.by_id.get(&doc_id) else {
            // A document we do not hold: say so, as automerge-repo does.
            let frame = Msg::DocUnavailable {
                sender_id: s.phone.peer_id.clone(),
                target_id: s.server_peer.clone(),
                document_id: doc_id,
            }
            .encode();
            s.stats.record(started, "->", &frame);
            s.stats.frames_out += 1;
            s.stats.bytes_out += frame.len() as u64;
            progress.frame();
            sink.send(WsMessage::Binary(frame)).await?;
            continue;
        };
        s.stats.sync_in += 1;
        if reported_done {
            s.stats.sync_in_after_done += 1;
        }
        let msg = sync::Message::decode(&data)
            .map_err(|e| anyhow!("bad automerge sync message for {doc_id}: {e}"))?;
        let their_heads = msg.heads.clone();
        {
            let d = &mut s.phone.docs[i];
            d.doc
                .receive_sync_message(&mut d.state, msg)
                .map_err(|e| anyhow!("applying sync message for {doc_id}: {e}"))?;
        }
        s.update_doc(i, &their_heads);
        let d = &mut s.phone.docs[i];
        if let Some(reply) = d.doc.generate_sync_message(&mut d.state) {
            let frame = s.sync_frame(i, reply, false);
            trace(s.phone.idx, "->", &frame);
            s.stats.record(started, "->", &frame);
            s.stats.frames_out += 1;
            s.stats.sync_out += 1;
            if reported_done {
                s.stats.sync_out_after_done += 1;
            }
            s.stats.bytes_out += frame.len() as u64;
            progress.frame();
            sink.send(WsMessage::Binary(frame)).await?;
        }
        check(s, &mut reported_ack, &mut reported_done);
    }
    // A clean close: send ours, then read until the server's close arrives (bounded).
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    Ok(())
}
