//! Fuzzing harnesses of the server, shared by the cargo-fuzz targets in `fuzz/` and by the
//! regression tests that replay the inputs kept in `fuzz/regressions/`. Built only with the
//! `fuzzing` feature; not part of the crate's API.
//!
//! - [`wire_decode`]: any bytes as a frame (`crdt_core::wire::Message::decode`, re-encoded and
//!   decoded again), the `data` of a `sync`/`request` (and the raw input) as an automerge sync
//!   message, its change chunks (and the raw input) through [`parse_chunks`] on an empty and on a
//!   small base document. Nothing may panic; a decoded frame re-encodes to a frame that decodes
//!   to the same message.
//! - [`server_messages`]: a sequence of commands, read from the input with [`arbitrary`], run by
//!   fake peers (three users with different roles and districts, each with its own automerge
//!   copy of every document) against a real [`Hub`] over a [`MemoryStore`], on a paused-clock
//!   tokio runtime (idle documents unload as soon as nothing else can run). Peers send real sync
//!   messages of their copies (after typed edits or raw operations), mangled ones, arbitrary
//!   bytes, `request`s, `ephemeral`s, and leave and reconnect. Nothing may panic or hang, every
//!   frame the server sends must decode (and a `sync`'s data as an automerge sync message), and
//!   after shutdown every stored document must load.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use arbitrary::{Result, Unstructured};
use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge};
use crdt_core::fuzzing::{actor, base_document, raw_ops, typed_edits, BaseKind, USERS};
use crdt_core::wire::{EphemeralMessage, Message, RequestMessage, SyncMessage};
use crdt_core::{DistrictScope, DocumentId, Role, Ubigeo, UserId};
use tokio::sync::mpsc;

use crate::auth::AuthUser;
use crate::durability::Durability;
use crate::gate::{parse_chunks, Gate};
use crate::hub::{DocCmd, Hub, HubConfig, Killer, PeerHandle};
use crate::metrics::Metrics;
use crate::store::{assemble, DocStore, MemoryStore};

fn base_proposal() -> &'static Automerge {
    static DOC: OnceLock<Automerge> = OnceLock::new();
    DOC.get_or_init(|| base_document(BaseKind::Proposal, Ubigeo::COMAS))
}

/// The `wire_decode` target: see the module documentation. Returns the decoded frame, if the
/// input is one.
pub fn wire_decode(data: &[u8]) -> Option<Message> {
    let decoded = Message::decode(data).ok();
    if let Some(msg) = &decoded {
        let bytes = msg.encode();
        let again = Message::decode(&bytes)
            .unwrap_or_else(|e| panic!("a re-encoded {msg:?} does not decode: {e}"));
        // NaN in peer metadata is the one value that is not equal to itself.
        if !format!("{msg:?}").contains("NaN") {
            assert_eq!(
                &again, msg,
                "a message changed in an encode/decode round trip"
            );
        }
        assert_eq!(again.encode(), bytes, "encoding is not stable");
        if let Message::Sync(SyncMessage { data, .. })
        | Message::Request(RequestMessage { data, .. }) = &msg
        {
            sync_data(data);
        }
    }
    sync_data(data);
    decoded
}

/// `data` as an automerge sync message and as one change chunk, through [`parse_chunks`].
fn sync_data(data: &[u8]) {
    let empty = Automerge::new();
    if let Ok(m) = sync::Message::decode(data) {
        for base in [&empty, base_proposal()] {
            let _ = parse_chunks(base, m.changes.iter());
        }
        let encoded = m.encode();
        sync::Message::decode(&encoded).expect("a re-encoded sync message decodes");
    }
    for base in [&empty, base_proposal()] {
        let _ = parse_chunks(base, std::iter::once(data));
    }
}

/// One fake client connection and its copies of the documents.
struct Peer {
    user_index: usize,
    user: Arc<AuthUser>,
    handle: PeerHandle,
    rx: mpsc::Receiver<Vec<u8>>,
    /// Per document: the client's copy and its sync state with the server.
    docs: Vec<(Automerge, sync::State)>,
    /// Documents this connection sent something about (what `conn.rs` tracks for `Leave`).
    touched: HashSet<DocumentId>,
    /// Frames received and not yet applied to the copies.
    inbox: Vec<Vec<u8>>,
}

struct World {
    hub: Hub,
    metrics: Arc<Metrics>,
    ids: Vec<DocumentId>,
    peers: Vec<Peer>,
    next_conn: u64,
    /// `sync` messages the server sent.
    syncs: usize,
}

const QUEUE: usize = 256;

fn connect(
    world_conn: &mut u64,
    metrics: &Arc<Metrics>,
    user_index: usize,
    user: Arc<AuthUser>,
) -> (PeerHandle, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    *world_conn += 1;
    let handle = PeerHandle::new(
        *world_conn,
        format!("peer-{user_index}-{world_conn}"),
        user,
        tx,
        Arc::new(Killer::default()),
        metrics.clone(),
    );
    (handle, rx)
}

impl World {
    /// Takes every frame the server queued for every peer; each must decode.
    fn drain(&mut self) {
        for p in &mut self.peers {
            while let Ok(frame) = p.rx.try_recv() {
                if check_frame(&frame) {
                    self.syncs += 1;
                }
                p.inbox.push(frame);
            }
        }
    }

    /// Applies a peer's received sync messages to its copies.
    fn deliver(&mut self, peer: usize) {
        let p = &mut self.peers[peer];
        for frame in std::mem::take(&mut p.inbox) {
            let Ok(Message::Sync(m)) = Message::decode(&frame) else {
                continue;
            };
            let Some(i) = self
                .ids
                .iter()
                .position(|id| id.to_string() == m.document_id)
            else {
                continue;
            };
            let msg = sync::Message::decode(&m.data).expect("checked by check_frame");
            let (doc, state) = &mut p.docs[i];
            let _ = doc.receive_sync_message(state, msg);
        }
    }

    async fn send(&mut self, peer: usize, doc: usize, cmd: DocCmd) {
        let id = self.ids[doc];
        self.peers[peer].touched.insert(id);
        // The hub stops only at the end.
        self.hub.send(id, cmd).await.expect("hub is running");
    }

    /// The connection closes (as `conn.rs` cleans up) and the user connects again: the
    /// copies stay, the sync states start over.
    fn reconnect(&mut self, peer: usize) {
        let p = &mut self.peers[peer];
        self.hub.stop_waiting(p.handle.conn_id, &p.touched);
        for id in p.touched.drain() {
            self.hub.send_if_loaded(
                id,
                DocCmd::Leave {
                    conn_id: p.handle.conn_id,
                },
            );
        }
        while let Ok(frame) = p.rx.try_recv() {
            if check_frame(&frame) {
                self.syncs += 1;
            }
        }
        let (handle, rx) = connect(
            &mut self.next_conn,
            &self.metrics,
            p.user_index,
            p.user.clone(),
        );
        p.handle = handle;
        p.rx = rx;
        p.inbox.clear();
        for (_, state) in &mut p.docs {
            *state = sync::State::new();
        }
    }
}

/// A frame the server sent must decode; a `sync`'s data must be an automerge sync message.
/// True for a `sync`.
fn check_frame(frame: &[u8]) -> bool {
    let msg = Message::decode(frame)
        .unwrap_or_else(|e| panic!("the server sent a frame that does not decode: {e}"));
    if let Message::Sync(m) = &msg {
        if let Err(e) = sync::Message::decode(&m.data) {
            panic!("the server sent a sync message that does not decode: {e}");
        }
        return true;
    }
    false
}

fn auth_user(i: usize, roles: &[Role], district: DistrictScope) -> Arc<AuthUser> {
    Arc::new(AuthUser {
        user: UserId::new(USERS[i]).expect("valid"),
        name: USERS[i].to_string(),
        roles: roles.iter().copied().collect(),
        district,
        exp: u64::MAX,
    })
}

/// The `server_messages` target: see the module documentation. Returns how many `sync`
/// messages the server sent to the peers.
pub fn server_messages(data: &[u8]) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    let handle = runtime.handle().clone();
    runtime.block_on(async move {
        let mut u = Unstructured::new(data);
        run_server(&mut u, handle).await
    })
}

async fn run_server(u: &mut Unstructured<'_>, runtime: tokio::runtime::Handle) -> usize {
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(Metrics::default());
    let durability = Durability::start(store.clone(), metrics.clone());

    // Documents: a stored proposal and a stored acta (created by user 0, whose actor is bound),
    // one that does not exist yet, and the district's index.
    let gate = Gate::new();
    gate.bind(
        store.as_ref(),
        &actor(0, 0),
        &UserId::new(USERS[0]).expect("valid"),
    )
    .expect("memory store");
    let proposal = base_document(BaseKind::Proposal, Ubigeo::COMAS);
    let acta = base_document(BaseKind::Acta, Ubigeo::COMAS);
    let ids = vec![
        DocumentId::from_bytes([1; 16]),
        DocumentId::from_bytes([2; 16]),
        DocumentId::from_bytes([3; 16]),
        DocumentId::index_for(Ubigeo::COMAS, crdt_core::fuzzing::YEAR),
    ];
    store
        .append(&ids[0], &proposal.save())
        .expect("memory store");
    store.append(&ids[1], &acta.save()).expect("memory store");
    store.sync().expect("memory store");

    let config = HubConfig {
        max_loaded_docs: u.int_in_range(1..=5).unwrap_or(5),
        idle_unload: std::time::Duration::from_secs(u.int_in_range(1..=60).unwrap_or(60)),
        doc_queue: 16,
        max_batch: u.int_in_range(1..=8).unwrap_or(8),
        max_waiting_per_conn: u.int_in_range(1..=4).unwrap_or(4),
        ..HubConfig::default()
    };
    let hub = Hub::new(
        store.clone(),
        durability,
        metrics.clone(),
        config,
        ActorId::from(vec![0xee; 16]),
        runtime,
    );

    // Users: a leader of the district (who created the stored documents), a técnico of the
    // district, and a vigilancia member of another district.
    let users = [
        (
            0usize,
            auth_user(0, &[Role::Leader], DistrictScope::One(Ubigeo::COMAS)),
        ),
        (
            2,
            auth_user(2, &[Role::Tecnico], DistrictScope::One(Ubigeo::COMAS)),
        ),
        (
            3,
            auth_user(3, &[Role::Vigilancia], DistrictScope::One(Ubigeo::ATE)),
        ),
    ];
    let mut world = World {
        hub: hub.clone(),
        metrics: metrics.clone(),
        ids,
        peers: Vec::new(),
        next_conn: 0,
        syncs: 0,
    };
    for (index, user) in users {
        let (handle, rx) = connect(&mut world.next_conn, &metrics, index, user.clone());
        let mut new_doc = if index == 0 {
            base_document(BaseKind::Proposal, Ubigeo::COMAS)
        } else {
            Automerge::new()
        };
        new_doc.set_actor(actor(index, 0));
        let docs = vec![
            (proposal.clone(), sync::State::new()),
            (acta.clone(), sync::State::new()),
            (new_doc, sync::State::new()),
            (Automerge::new(), sync::State::new()),
        ]
        .into_iter()
        .map(|(mut d, s)| {
            d.set_actor(actor(index, 0));
            (d, s)
        })
        .collect();
        world.peers.push(Peer {
            user_index: index,
            user,
            handle,
            rx,
            docs,
            touched: HashSet::new(),
            inbox: Vec::new(),
        });
    }

    // Running out of input ends the session; the hub still shuts down.
    let _ = run_commands(u, &mut world).await;

    world.drain();
    hub.shutdown().await;
    world.drain();
    let syncs = world.syncs;
    drop(world);
    drop(hub);

    // Everything stored loads again.
    for id in [[1u8; 16], [2; 16], [3; 16]]
        .map(DocumentId::from_bytes)
        .into_iter()
        .chain([DocumentId::index_for(
            Ubigeo::COMAS,
            crdt_core::fuzzing::YEAR,
        )])
    {
        let chunks = store.load(&id).expect("memory store");
        if let Err(e) = assemble(&id, &chunks) {
            panic!("stored document {id} does not load: {e}");
        }
    }
    syncs
}

async fn run_commands(u: &mut Unstructured<'_>, world: &mut World) -> Result<()> {
    let n = u.int_in_range(1..=40)?;
    for _ in 0..n {
        let peer = u.choose_index(world.peers.len())?;
        let doc = u.choose_index(world.ids.len())?;
        match u.int_in_range(0..=12)? {
            // A real sync message of the peer's copy.
            0..=3 => {
                let p = &mut world.peers[peer];
                let (d, state) = &mut p.docs[doc];
                if let Some(msg) = d.generate_sync_message(state) {
                    let cmd = DocCmd::Sync {
                        peer: p.handle.clone(),
                        data: msg.encode(),
                        request: u.ratio(1, 8)?,
                    };
                    world.send(peer, doc, cmd).await;
                }
            }
            // `request`: a first message from a fresh state.
            4 => {
                let p = &mut world.peers[peer];
                let (d, _) = &mut p.docs[doc];
                let mut state = sync::State::new();
                let data = d
                    .generate_sync_message(&mut state)
                    .map(sync::Message::encode)
                    .unwrap_or_default();
                let cmd = DocCmd::Sync {
                    peer: p.handle.clone(),
                    data,
                    request: true,
                };
                world.send(peer, doc, cmd).await;
            }
            // A real message with some bytes changed.
            5 => {
                let p = &mut world.peers[peer];
                let (d, _) = &mut p.docs[doc];
                let mut state = sync::State::new();
                let mut data = d
                    .generate_sync_message(&mut state)
                    .map(sync::Message::encode)
                    .unwrap_or_default();
                for _ in 0..u.int_in_range(1..=3)? {
                    if data.is_empty() {
                        break;
                    }
                    let i = u.choose_index(data.len())?;
                    data[i] = u.arbitrary()?;
                }
                let cmd = DocCmd::Sync {
                    peer: p.handle.clone(),
                    data,
                    request: false,
                };
                world.send(peer, doc, cmd).await;
            }
            // Arbitrary bytes.
            6 => {
                let data: Vec<u8> = u.arbitrary()?;
                let cmd = DocCmd::Sync {
                    peer: world.peers[peer].handle.clone(),
                    data,
                    request: u.arbitrary()?,
                };
                world.send(peer, doc, cmd).await;
            }
            // The peer edits its copy: typed edits or raw operations, usually with its own
            // actor, sometimes with another user's.
            7 | 8 => {
                let p = &mut world.peers[peer];
                let (d, _) = &mut p.docs[doc];
                let who = if u.ratio(7, 8)? {
                    p.user_index
                } else {
                    u.choose_index(USERS.len())?
                };
                d.set_actor(actor(who, 0));
                if u.arbitrary()? {
                    typed_edits(u, d)?;
                } else {
                    raw_ops(u, d)?;
                }
            }
            9 => {
                let p = &world.peers[peer];
                let msg = EphemeralMessage {
                    sender_id: p.handle.peer_id.clone(),
                    target_id: world.hub.server_peer_id().to_string(),
                    document_id: world.ids[doc].to_string(),
                    session_id: "s".into(),
                    count: u.arbitrary()?,
                    data: u.arbitrary()?,
                };
                let cmd = DocCmd::Ephemeral {
                    from: p.handle.clone(),
                    msg,
                };
                world.send(peer, doc, cmd).await;
            }
            10 => world.reconnect(peer),
            // Wait until the document has handled everything sent so far.
            11 => {
                let id = world.ids[doc];
                world.hub.snapshot(id).await.expect("hub is running");
            }
            // Let the document tasks run (time jumps ahead when all are idle).
            _ => {
                for _ in 0..u.int_in_range(1..=4)? {
                    tokio::task::yield_now().await;
                }
                if u.ratio(1, 4)? {
                    tokio::time::sleep(std::time::Duration::from_secs(u.int_in_range(1..=90)?))
                        .await;
                }
            }
        }
        world.drain();
        world.deliver(peer);
    }
    Ok(())
}
