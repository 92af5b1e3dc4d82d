//! Writers that record what the server acknowledged, a check that every acknowledged change is
//! still there, and a TCP proxy that cuts connections at random points: the pieces of the crash
//! and fault tests (`tests/tests/crash.rs`, `tests/tests/faults.rs`).
//!
//! "Acknowledged" means what a client may rely on: a change is acknowledged once it is covered by
//! heads the server sent back in a `sync` message (the server replies only after the group commit
//! that made its state durable, see `server/src/durability.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use automerge::{ActorId, Automerge, ChangeHash, ReadDoc, ROOT};
use crdt_core::schema::{apply_edit, Edit, NewDocument, NewProposal};
use crdt_core::wire::Message;
use crdt_core::{DocumentId, Ubigeo, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::harness::{Event, ProtoClient};

/// A Comas proposal created by `by` with `coauthors` (who may then edit its description too).
pub fn comas_proposal(by: &str, coauthors: &[String], title: &str) -> Automerge {
    proposal_in(Ubigeo::COMAS, by, coauthors, title)
}

/// A proposal in `district` created by `by` with `coauthors`.
pub fn proposal_in(district: Ubigeo, by: &str, coauthors: &[String], title: &str) -> Automerge {
    NewProposal {
        district,
        process_year: 2027,
        title: title.into(),
        description: "Veredas".into(),
        zone: "Collique".into(),
        category: "vías y veredas".into(),
        beneficiaries: 1200,
        estimated_cost: 35_000_000,
        cofinancing: 0,
        created_by: UserId::new(by).unwrap(),
        coauthors: coauthors.iter().map(|c| UserId::new(c).unwrap()).collect(),
    }
    .create(Some(ActorId::random()), 1_790_000_000)
}

/// Appends `text` to the proposal's description as one change.
pub fn append_text(doc: &mut Automerge, text: &str) {
    let field = doc.get(ROOT, "description").unwrap().unwrap().1;
    let len = doc.text(field).unwrap().chars().count();
    let edit = Edit::SpliceText {
        field: "description".into(),
        pos: len,
        delete: 0,
        insert: text.into(),
    };
    apply_edit(doc, &edit, 1_790_000_100).unwrap();
}

/// Sets the proposal's `category` (a scalar string: one operation however long) as one change.
pub fn set_category(doc: &mut Automerge, value: &str) {
    let edit = Edit::SetScalar {
        field: "category".into(),
        value: automerge::ScalarValue::Str(value.into()),
    };
    apply_edit(doc, &edit, 1_790_000_100).unwrap();
}

/// Random text that does not compress (so a test can fill a disk with few changes).
pub fn noise(rng: &mut impl Rng, len: usize) -> String {
    (0..len)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

/// One client's copy of a document and what the server acknowledged of it.
pub struct Tracked {
    pub id: DocumentId,
    pub doc: Automerge,
    /// Every head the server announced in a sync message to this client for this document.
    pub acked_heads: HashSet<ChangeHash>,
    /// The changes of this copy covered by those heads so far (grows only).
    covered: HashSet<ChangeHash>,
    /// Changes written since the server last showed heads equal to this copy's.
    pub unacked: usize,
}

impl Tracked {
    pub fn new(id: DocumentId, doc: Automerge) -> Self {
        Self {
            id,
            doc,
            acked_heads: HashSet::new(),
            covered: HashSet::new(),
            unacked: 0,
        }
    }

    /// Every change of this copy covered by heads the server acknowledged (heads this copy does
    /// not hold yet, other writers' changes, are theirs to count). Incremental: only changes not
    /// counted before are walked.
    pub fn acknowledged(&mut self) -> &HashSet<ChangeHash> {
        let mut stack: Vec<ChangeHash> = self
            .acked_heads
            .iter()
            .filter(|h| !self.covered.contains(h))
            .copied()
            .collect();
        while let Some(h) = stack.pop() {
            if self.covered.contains(&h) {
                continue;
            }
            if let Some(c) = self.doc.get_change_by_hash(&h) {
                self.covered.insert(h);
                stack.extend(c.deps().iter().filter(|d| !self.covered.contains(d)));
            }
        }
        &self.covered
    }
}

/// How a writer writes.
#[derive(Debug, Clone)]
pub struct WriteOpts {
    /// Characters appended per change.
    pub text_len: usize,
    /// How long to wait for replies after each change.
    pub pause: Duration,
    /// Stop writing after this many changes on one connection (0: no limit).
    pub max_writes: u64,
    /// Write `text_len` characters as one scalar (`category`) instead of appending to the
    /// description: a large change that costs one operation.
    pub scalar: bool,
    /// Write to a document only while fewer than this many of its changes wait for an
    /// acknowledgement (0: no limit), so a slow server is not buried under a growing backlog.
    pub max_unacked: usize,
}

impl Default for WriteOpts {
    fn default() -> Self {
        Self {
            text_len: 12,
            pause: Duration::from_millis(10),
            max_writes: 0,
            scalar: false,
            max_unacked: 0,
        }
    }
}

/// A client that writes to its documents continuously and records acknowledgements.
pub struct Writer {
    pub sub: String,
    pub peer_id: String,
    pub docs: Vec<Tracked>,
    /// `error` messages the server sent.
    pub errors: Vec<String>,
    /// Why each connection ended (close reason or transport error).
    pub ends: Vec<String>,
    pub writes: u64,
    rng: StdRng,
}

impl Writer {
    pub fn new(sub: &str, docs: Vec<Tracked>, seed: u64) -> Self {
        Self {
            sub: sub.to_string(),
            peer_id: format!("peer-{sub}"),
            docs,
            errors: Vec::new(),
            ends: Vec::new(),
            writes: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Connects to `url` and writes until the connection ends or `stop` is set (then it waits
    /// `settle` for the last replies). Every sync message from the server records its heads.
    pub async fn run_connection(
        &mut self,
        url: &str,
        stop: &AtomicBool,
        opts: &WriteOpts,
        settle: Duration,
    ) {
        let mut c = match ProtoClient::connect(url, &self.peer_id).await {
            Ok(c) => c,
            Err(e) => {
                self.ends.push(format!("connect: {e}"));
                return;
            }
        };
        if let Err(e) = self.session(&mut c, stop, opts, settle).await {
            self.ends.push(e.to_string());
        } else {
            self.ends.push("stopped".into());
        }
    }

    async fn session(
        &mut self,
        c: &mut ProtoClient,
        stop: &AtomicBool,
        opts: &WriteOpts,
        settle: Duration,
    ) -> Result<()> {
        for d in &self.docs {
            c.send_sync(d.id, &d.doc).await?;
        }
        let mut written = 0u64;
        let mut i = 0usize;
        while !stop.load(Ordering::SeqCst) && (opts.max_writes == 0 || written < opts.max_writes) {
            let n = self.docs.len();
            let d = &mut self.docs[i % n];
            i += 1;
            if opts.max_unacked > 0 && d.unacked >= opts.max_unacked {
                self.drain(c, opts.pause).await?;
                continue;
            }
            let text = noise(&mut self.rng, opts.text_len);
            if opts.scalar {
                set_category(&mut d.doc, &text);
            } else {
                append_text(&mut d.doc, &text);
            }
            self.writes += 1;
            d.unacked += 1;
            written += 1;
            c.send_sync(d.id, &d.doc).await?;
            self.drain(c, opts.pause).await?;
        }
        self.drain(c, settle).await
    }

    /// Syncs every document to the end on a fresh connection to `url`; returns whether the
    /// server's heads equal the writer's for each of them afterwards, recording them as
    /// acknowledged (an unsettled document is noted in `ends`). Each document gets up to ten
    /// tries of up to 90 s: a big upload judged by a debug build on a busy machine is slow.
    pub async fn settle(&mut self, url: &str) -> Result<bool> {
        let mut c = ProtoClient::connect(url, &self.peer_id).await?;
        let mut all = true;
        for d in &mut self.docs {
            // `sync_doc` also returns when the server is quiet for a while with nothing for us
            // to send: try a few times.
            let mut settled = false;
            for _ in 0..10 {
                let events = c
                    .sync_doc_within(d.id, &mut d.doc, Duration::from_secs(90))
                    .await?;
                for e in events {
                    if let Event::Message(Message::Error(e)) = e {
                        self.errors.push(e.message);
                    }
                }
                if let Some(h) = c.server_heads(d.id).filter(|h| *h == d.doc.get_heads()) {
                    d.acked_heads.extend(h);
                    d.unacked = 0;
                    settled = true;
                    break;
                }
            }
            if !settled {
                self.ends.push(format!(
                    "unsettled {}: ours {:?}, server {:?}",
                    d.id,
                    d.doc.get_heads(),
                    c.server_heads(d.id)
                ));
            }
            all &= settled;
        }
        Ok(all)
    }

    /// Handles what arrives within `wait` (then whatever is already there).
    pub async fn drain(&mut self, c: &mut ProtoClient, wait: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match c.next(left).await? {
                None => return Ok(()),
                Some(Event::Message(Message::Sync(s))) => {
                    let Some(d) = self
                        .docs
                        .iter_mut()
                        .find(|d| d.id.to_string() == s.document_id)
                    else {
                        continue;
                    };
                    let heads = automerge::sync::Message::decode(&s.data)?.heads;
                    c.receive_sync(d.id, &mut d.doc, &s).await?;
                    if heads == d.doc.get_heads() {
                        d.unacked = 0;
                    }
                    d.acked_heads.extend(heads);
                }
                Some(Event::Message(Message::Error(e))) => self.errors.push(e.message),
                Some(Event::Message(_)) => {}
                Some(Event::Closed(why)) => bail!("closed: {}", why.unwrap_or_default()),
            }
        }
    }
}

/// What a fresh client found of the acknowledged changes.
#[derive(Debug, Default, Clone)]
pub struct Presence {
    pub acknowledged: usize,
    pub found: usize,
    /// Documents the fresh client could not get at all.
    pub unavailable: Vec<DocumentId>,
    pub missing: Vec<(DocumentId, ChangeHash)>,
    /// The server's heads per document, as the fresh client received them.
    pub heads: HashMap<DocumentId, Vec<ChangeHash>>,
}

/// Every acknowledged change per document, over all writers.
pub fn acknowledged<'a>(
    writers: impl IntoIterator<Item = &'a mut Writer>,
) -> HashMap<DocumentId, HashSet<ChangeHash>> {
    let mut out: HashMap<DocumentId, HashSet<ChangeHash>> = HashMap::new();
    for w in writers {
        for d in &mut w.docs {
            out.entry(d.id).or_default().extend(d.acknowledged());
        }
    }
    out
}

/// How many verifying connections run at once: all of them share one user, and the server
/// refuses a user's connections past `--max-connections-per-user` (16 by default).
const VERIFY_CONNECTIONS: usize = 8;

/// Connects fresh clients (one per document, `VERIFY_CONNECTIONS` at a time), requests every
/// document and checks each acknowledged change is in it.
pub async fn verify_present(
    url: &str,
    peer_id: &str,
    acked: &HashMap<DocumentId, HashSet<ChangeHash>>,
) -> Result<Presence> {
    let slots = Arc::new(tokio::sync::Semaphore::new(VERIFY_CONNECTIONS));
    let tasks: Vec<_> = acked
        .keys()
        .enumerate()
        .map(|(i, id)| {
            let (url, peer, id) = (url.to_string(), format!("{peer_id}-{i}"), *id);
            let hashes = acked[&id].clone();
            let slots = slots.clone();
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await?;
                let mut c = ProtoClient::connect(&url, &peer).await?;
                let mut copy = Automerge::new();
                let mut events = c.request_doc(id, &mut copy).await?;
                // `request_doc` also returns when the server stays quiet for 2 s (a big document
                // loading on a busy debug build): keep syncing a while before calling anything
                // missing, so a slow answer is not mistaken for a loss.
                for _ in 0..10 {
                    if hashes.iter().all(|h| copy.get_change_by_hash(h).is_some()) {
                        break;
                    }
                    events.extend(c.sync_doc(id, &mut copy).await?);
                }
                let gone = events.iter().any(|e| {
                    matches!(
                        e,
                        Event::Message(Message::DocUnavailable(_)) | Event::Closed(_)
                    )
                });
                anyhow::Ok((id, copy, gone))
            })
        })
        .collect();
    let mut p = Presence::default();
    for t in tasks {
        let (id, copy, gone) = t.await??;
        if gone {
            p.unavailable.push(id);
        }
        p.heads.insert(id, copy.get_heads());
        let hashes = &acked[&id];
        p.acknowledged += hashes.len();
        for h in hashes {
            if copy.get_change_by_hash(h).is_some() {
                p.found += 1;
            } else {
                p.missing.push((id, *h));
            }
        }
    }
    Ok(p)
}

/// A TCP proxy that cuts each connection after a random number of bytes (both directions
/// counted), in the middle of whatever frame is passing, while cutting is on.
pub struct CutProxy {
    pub addr: String,
    upstream: Arc<Mutex<String>>,
    cutting: Arc<AtomicBool>,
    /// Byte budgets are drawn from this range.
    budget: Arc<Mutex<(u64, u64)>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    cuts: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(upstream: &str, min_bytes: u64, max_bytes: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let upstream = Arc::new(Mutex::new(upstream.to_string()));
        let cutting = Arc::new(AtomicBool::new(true));
        let budget = Arc::new(Mutex::new((min_bytes, max_bytes)));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let cuts = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (upstream, cutting, budget, conns, cuts, accepted) = (
                upstream.clone(),
                cutting.clone(),
                budget.clone(),
                conns.clone(),
                cuts.clone(),
                accepted.clone(),
            );
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let to = upstream.lock().unwrap().clone();
                    let limit = if cutting.load(Ordering::SeqCst) {
                        let (lo, hi) = *budget.lock().unwrap();
                        rand::thread_rng().gen_range(lo..=hi)
                    } else {
                        u64::MAX
                    };
                    let cuts = cuts.clone();
                    let h = tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&to).await else {
                            return;
                        };
                        let left = Arc::new(AtomicU64::new(limit));
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::select! {
                            _ = pipe(cr, sw, left.clone()) => {}
                            _ = pipe(sr, cw, left.clone()) => {}
                        }
                        if left.load(Ordering::SeqCst) == 0 {
                            cuts.fetch_add(1, Ordering::SeqCst);
                        }
                        // Both halves drop here: the client and the server see the socket close.
                    });
                    let mut conns = conns.lock().unwrap();
                    conns.retain(|h| !h.is_finished());
                    conns.push(h);
                }
            }
        });
        Ok(Self {
            addr,
            upstream,
            cutting,
            budget,
            conns,
            cuts,
            accepted,
            task,
        })
    }

    pub fn url(&self, token: &str) -> String {
        format!("ws://{}/sync?token={token}", self.addr)
    }

    pub fn set_upstream(&self, addr: &str) {
        *self.upstream.lock().unwrap() = addr.to_string();
    }

    /// Whether new connections get a byte budget (existing ones keep theirs).
    pub fn set_cutting(&self, on: bool) {
        self.cutting.store(on, Ordering::SeqCst);
    }

    pub fn set_budget(&self, min_bytes: u64, max_bytes: u64) {
        *self.budget.lock().unwrap() = (min_bytes, max_bytes);
    }

    /// Connections cut because their budget ran out.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Drops every live connection now.
    pub fn cut_all(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut_all();
        self.task.abort();
    }
}

/// Copies bytes until a side closes or the shared budget runs out (mid-buffer: the last write
/// carries only what is left of the budget).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    left: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let before = left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                Some(b.saturating_sub(n as u64))
            })
            .unwrap_or(0);
        let take = (n as u64).min(before) as usize;
        if take > 0 && to.write_all(&buf[..take]).await.is_err() {
            return;
        }
        if take < n || left.load(Ordering::SeqCst) == 0 {
            return;
        }
    }
}
