//! A simulated phone: a set of automerge documents, a [`ClientEngine`] holding their sync states,
//! and one WebSocket session at a time that speaks automerge-repo v1 to the server until a goal is
//! reached and the workload says stop. The engine builds every frame the phone sends; this module
//! moves frames, keeps the statistics and decides when a goal is reached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use automerge::{sync, Automerge, ChangeHash};
use crdt_core::engine::{ClientEngine, Documents, Output};
use crdt_core::wire::{Message, PeerMetadata};
use crdt_core::DocumentId;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// One document on a phone.
pub struct PhoneDoc {
    pub id: DocumentId,
    pub doc: Automerge,
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
    /// of the sync state the engine kept from the last session).
    agreed: bool,
    /// When the opening `sync` went out (or the session started, if there was none).
    opened_at: Option<Duration>,
}

impl PhoneDoc {
    pub fn new(id: DocumentId, doc: Automerge) -> Self {
        Self {
            id,
            doc,
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

/// A phone: a user with a token, its documents, and the protocol engine (peer id, storage id,
/// one sync state per document) that lives as long as the phone, across sessions.
pub struct Phone {
    pub idx: usize,
    pub user: String,
    pub token: String,
    pub docs: Vec<PhoneDoc>,
    by_id: HashMap<DocumentId, usize>,
    /// Keeps the sync states across reconnects as automerge-repo does: only their persisted part,
    /// and only with a server that announces the same storage id.
    engine: ClientEngine,
    /// Keep a transcript of every frame in the session's stats.
    pub record: bool,
}

impl Phone {
    pub fn new(idx: usize, user: String, token: String, docs: Vec<PhoneDoc>) -> Self {
        let mut engine = ClientEngine::new(
            format!("phone-{idx}-{:08x}", rand::random::<u32>()),
            Some(format!("{:032x}", rand::random::<u128>())),
        );
        let by_id = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                engine.track(d.id);
                (d.id, i)
            })
            .collect();
        Self {
            idx,
            user,
            token,
            docs,
            by_id,
            engine,
            record: false,
        }
    }

    /// Hands `frame` to the engine, with the phone's documents.
    fn handle_frame(&mut self, frame: &[u8]) -> Result<Vec<Output>> {
        let mut docs = PhoneDocs {
            docs: &mut self.docs,
            by_id: &self.by_id,
        };
        Ok(self.engine.handle_frame(frame, &mut docs)?)
    }
}

/// The phone's documents as the engine looks them up.
struct PhoneDocs<'a> {
    docs: &'a mut [PhoneDoc],
    by_id: &'a HashMap<DocumentId, usize>,
}

impl Documents for PhoneDocs<'_> {
    fn get_mut(&mut self, id: &DocumentId) -> Option<&mut Automerge> {
        let i = *self.by_id.get(id)?;
        Some(&mut self.docs[i].doc)
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
    let msg = match Message::decode(frame) {
        Ok(m) => m,
        Err(e) => return format!("undecodable frame ({} bytes): {e}", frame.len()),
    };
    let (document_id, data) = match &msg {
        Message::Sync(m) => (&m.document_id, &m.data),
        Message::Request(m) => (&m.document_id, &m.data),
        other => return format!("{} ({} bytes)", describe(other), frame.len()),
    };
    let kind = msg.type_name();
    match sync::Message::decode(data) {
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

/// A message other than `sync` and `request`, in the transcripts' established wording.
fn describe(msg: &Message) -> String {
    fn meta<'m>(
        a: &'m Option<PeerMetadata>,
        b: &'m Option<PeerMetadata>,
    ) -> Option<&'m PeerMetadata> {
        a.as_ref().or(b.as_ref())
    }
    match msg {
        Message::Join(j) => {
            let m = meta(&j.peer_metadata, &j.metadata);
            format!(
                "Join {{ sender_id: {:?}, storage_id: {:?}, is_ephemeral: {} }}",
                j.sender_id,
                m.and_then(PeerMetadata::storage_id),
                m.and_then(PeerMetadata::is_ephemeral).unwrap_or(false)
            )
        }
        Message::Peer(p) => format!(
            "Peer {{ sender_id: {:?}, target_id: {:?}, storage_id: {:?} }}",
            p.sender_id,
            p.target_id,
            meta(&p.peer_metadata, &p.metadata).and_then(PeerMetadata::storage_id)
        ),
        Message::DocUnavailable(d) => format!(
            "DocUnavailable {{ sender_id: {:?}, target_id: {:?}, document_id: {:?} }}",
            d.sender_id, d.target_id, d.document_id
        ),
        Message::Error(e) => format!("Error {{ message: {:?} }}", e.message),
        other => format!("Other({:?})", other.type_name()),
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
    goal: Goal,
    t0: Instant,
    /// When the session started (the transcript's clock).
    started: Instant,
    stats: SessionStats,
    /// With [`Goal::Settle`]: counted in `Progress::settled` right now.
    settled_now: bool,
}

impl Session<'_> {
    /// Counts (and traces and records) a frame about to go out: a sync message (`request` or
    /// `sync`, `after_done` when the goal was already reached) or a `doc-unavailable`.
    fn outgoing(&mut self, progress: &Progress, frame: &[u8], sync: bool, after_done: bool) {
        trace(self.phone.idx, "->", frame);
        self.stats.record(self.started, "->", frame);
        self.stats.frames_out += 1;
        if sync {
            self.stats.sync_out += 1;
            if after_done {
                self.stats.sync_out_after_done += 1;
            }
        }
        self.stats.bytes_out += frame.len() as u64;
        progress.frame();
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

/// Connects to the server with the engine's `join`, waits for `peer` and hands it to the engine.
/// Returns the two frames.
async fn handshake(phone: &mut Phone, url: &str) -> Result<(WsStream, Vec<u8>, Vec<u8>)> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(60),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .map_err(|_| anyhow!("WebSocket connect timed out"))??;
    let join = phone.engine.join();
    ws.send(WsMessage::Binary(join.clone())).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no `peer` answer to `join` within 60 s"))?;
        match frame {
            Some(Ok(WsMessage::Binary(b))) => match decode(&b)? {
                Message::Peer(_) => {
                    trace(phone.idx, "<-", &b);
                    phone.handle_frame(&b)?;
                    return Ok((ws, join, b));
                }
                Message::Error(e) => bail!("server error on join: {}", e.message),
                _ => {}
            },
            Some(Ok(WsMessage::Close(c))) => bail!("server closed during handshake: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("WebSocket error during handshake: {e}"),
            None => bail!("server closed during handshake"),
        }
    }
}

fn decode(frame: &[u8]) -> Result<Message> {
    Message::decode(frame).map_err(|e| anyhow!("undecodable frame: {e}"))
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
    let (ws, join, peer) = match handshake(phone, url).await {
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
    // The engine kept the sync states' persisted part (shared heads) if the server announced the
    // storage id of the last session, and started afresh otherwise.
    for d in &mut phone.docs {
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
                let mut shared = phone.engine.server_heads(&d.id);
                shared.sort_unstable();
                (!shared.is_empty()).then_some(shared)
            }
        };
        d.agreed = !ours.is_empty() && known.as_ref() == Some(&ours);
    }
    let mut s = Session {
        phone,
        goal,
        t0,
        started,
        stats,
        settled_now: false,
    };
    let result = session_loop(&mut s, ws, &mut stop, &progress).await;
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
) -> Result<()> {
    let (mut sink, mut stream) = ws.split();
    // Announce every document: `request` for one we do not have, `sync` otherwise.
    for i in 0..s.phone.docs.len() {
        let d = &s.phone.docs[i];
        if let Some(frame) = s.phone.engine.announce(d.id, &d.doc) {
            s.outgoing(progress, &frame, true, false);
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
        s.stats.record(s.started, "<-", &bytes);
        s.stats.frames_in += 1;
        s.stats.bytes_in += bytes.len() as u64;
        let doc_id = match decode(&bytes)? {
            Message::Sync(m) => m.document_id,
            Message::Request(m) => m.document_id,
            Message::DocUnavailable(m) => {
                s.stats.doc_unavailable += 1;
                if s.stats.errors.len() < 5 {
                    s.stats
                        .errors
                        .push(format!("doc-unavailable for {}", m.document_id));
                }
                continue;
            }
            Message::Error(e) => {
                if s.stats.errors.len() < 5 {
                    s.stats.errors.push(format!("error: {}", e.message));
                }
                continue;
            }
            _ => continue,
        };
        // A sync message: the engine applies it to the document and answers, or, for a document
        // the phone does not hold, answers `doc-unavailable` as automerge-repo does.
        let held = doc_id
            .parse::<DocumentId>()
            .ok()
            .and_then(|id| Some((id, *s.phone.by_id.get(&id)?)));
        if held.is_some() {
            s.stats.sync_in += 1;
            if reported_done {
                s.stats.sync_in_after_done += 1;
            }
        }
        let outputs = s.phone.handle_frame(&bytes)?;
        if let Some((id, i)) = held {
            let their_heads = s.phone.engine.server_heads(&id);
            s.update_doc(i, &their_heads);
        }
        for o in outputs {
            if let Output::Send(frame) = o {
                s.outgoing(progress, &frame, held.is_some(), reported_done);
                sink.send(WsMessage::Binary(frame)).await?;
            }
        }
        if held.is_some() {
            check(s, &mut reported_ack, &mut reported_done);
        }
    }
    // A clean close: send ours, then read until the server's close arrives (bounded).
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    Ok(())
}
