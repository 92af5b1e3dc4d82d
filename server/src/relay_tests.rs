//! The cross-node relay of the hub (`Hub::follow_store`, `DocCmd::Refresh`), in process: two hubs
//! over one in-memory store that announces each node's writes to the other, as PostgreSQL's
//! `LISTEN/NOTIFY` does for real nodes (`tests/tests/scale_out.rs` runs the real thing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge, ChangeHash, ReadDoc};
use crdt_core::schema::{apply_edit, Edit, NewDocument, NewProposal};
use crdt_core::wire::{Message, SyncMessage};
use crdt_core::{DistrictScope, DocumentId, Role, Ubigeo, UserId};
use tokio::sync::{broadcast, mpsc};

use crate::auth::AuthUser;
use crate::durability::Durability;
use crate::gate::Gate;
use crate::hub::{DocCmd, Hub, HubConfig, Killer, PeerHandle};
use crate::metrics::Metrics;
use crate::store::{Chunk, ChunkKey, DocStore, MemoryStore, StoreResult};

/// One node's view of a store shared by several: writes go to the common store and are
/// announced to every other node.
struct Node {
    store: Arc<MemoryStore>,
    me: usize,
    feeds: Arc<Vec<broadcast::Sender<DocumentId>>>,
    /// While set, this node's writes are not announced (a notification still on its way).
    muted: Arc<AtomicBool>,
}

impl Node {
    fn announce(&self, doc: &DocumentId) {
        if self.muted.load(Ordering::SeqCst) {
            return;
        }
        for (i, feed) in self.feeds.iter().enumerate() {
            if i != self.me {
                let _ = feed.send(*doc);
            }
        }
    }
}

impl DocStore for Node {
    fn append(&self, doc: &DocumentId, bytes: &[u8]) -> StoreResult<ChunkKey> {
        let key = self.store.append(doc, bytes)?;
        self.announce(doc);
        Ok(key)
    }
    fn load(&self, doc: &DocumentId) -> StoreResult<Vec<Chunk>> {
        self.store.load(doc)
    }
    fn compact(&self, d: &DocumentId, s: &[u8], r: &[ChunkKey]) -> StoreResult<ChunkKey> {
        let key = self.store.compact(d, s, r)?;
        self.announce(d);
        Ok(key)
    }
    fn list(&self) -> StoreResult<Vec<DocumentId>> {
        self.store.list()
    }
    fn sync(&self) -> StoreResult<()> {
        self.store.sync()
    }
    fn meta_get(&self, t: &str, k: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.store.meta_get(t, k)
    }
    fn meta_put(&self, t: &str, k: &[u8], v: &[u8]) -> StoreResult<()> {
        self.store.meta_put(t, k, v)
    }
    fn meta_delete(&self, t: &str, k: &[u8]) -> StoreResult<()> {
        self.store.meta_delete(t, k)
    }
    fn meta_scan(&self, t: &str, p: &[u8]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.store.meta_scan(t, p)
    }
    fn meta_tables(&self) -> StoreResult<Vec<String>> {
        self.store.meta_tables()
    }
    fn shared(&self) -> bool {
        true
    }
    fn watch(&self) -> Option<broadcast::Receiver<DocumentId>> {
        Some(self.feeds[self.me].subscribe())
    }
}

/// `n` hubs on one common store; each node's switch that mutes its announcements.
fn hubs(n: usize) -> (Vec<Hub>, Arc<MemoryStore>, Vec<Arc<AtomicBool>>) {
    let common = Arc::new(MemoryStore::new());
    let feeds: Arc<Vec<_>> = Arc::new((0..n).map(|_| broadcast::channel(64).0).collect());
    let mutes: Vec<Arc<AtomicBool>> = (0..n).map(|_| Arc::default()).collect();
    let hubs = (0..n)
        .map(|me| {
            let store: Arc<dyn DocStore> = Arc::new(Node {
                store: common.clone(),
                me,
                feeds: feeds.clone(),
                muted: mutes[me].clone(),
            });
            let (_, actor) = crate::server_identity(store.as_ref()).unwrap();
            let metrics = Arc::new(Metrics::default());
            let hub = Hub::new(
                store.clone(),
                Durability::start(store, metrics.clone()),
                metrics,
                HubConfig::default(),
                actor,
                tokio::runtime::Handle::current(),
            );
            hub.follow_store();
            hub
        })
        .collect();
    (hubs, common, mutes)
}

struct Phone {
    handle: PeerHandle,
    rx: mpsc::Receiver<Vec<u8>>,
    doc: Automerge,
    state: sync::State,
}

impl Phone {
    fn new(conn: u64, user: &str) -> Self {
        let (tx, rx) = mpsc::channel(256);
        let user = Arc::new(AuthUser {
            user: UserId::new(user).unwrap(),
            name: user.to_string(),
            roles: [Role::Leader].into_iter().collect(),
            district: DistrictScope::One(Ubigeo::COMAS),
            exp: u64::MAX,
        });
        let handle = PeerHandle::new(
            conn,
            format!("phone-{conn}"),
            user,
            tx,
            Arc::new(Killer::default()),
            Arc::new(Metrics::default()),
        );
        Self {
            handle,
            rx,
            doc: Automerge::new(),
            state: sync::State::new(),
        }
    }

    /// Sends what the server lacks (a `request` asks for the document), if there is anything
    /// to say.
    async fn sync(&mut self, hub: &Hub, id: DocumentId, request: bool) {
        if let Some(msg) = self.doc.generate_sync_message(&mut self.state) {
            let cmd = DocCmd::Sync {
                peer: self.handle.clone(),
                data: msg.encode(),
                request,
            };
            hub.send(id, cmd).await.unwrap();
        }
    }

    /// Converses with the server until it acknowledges everything the phone has.
    async fn until_stored(&mut self, hub: &Hub, id: DocumentId) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        self.sync(hub, id, false).await;
        while self.state.shared_heads != self.doc.get_heads() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never acknowledged",
                self.handle.peer_id
            );
            let frame = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{} never acknowledged", self.handle.peer_id))
                .expect("connection open");
            if let Message::Sync(SyncMessage { data, .. }) = Message::decode(&frame).unwrap() {
                let m = sync::Message::decode(&data).unwrap();
                self.doc.receive_sync_message(&mut self.state, m).unwrap();
                self.sync(hub, id, false).await;
            }
        }
    }

    /// Applies what the server sends until the phone has `want` (or 10 s pass); answers each
    /// sync message like a client does. Returns every frame type seen.
    async fn until_has(&mut self, hub: &Hub, id: DocumentId, want: &[ChangeHash]) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !want
            .iter()
            .all(|h| self.doc.get_change_by_hash(h).is_some())
        {
            let frame = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "phone {} never got {want:?}; saw {seen:?}",
                        self.handle.peer_id
                    )
                })
                .expect("connection open");
            match Message::decode(&frame).unwrap() {
                Message::Sync(SyncMessage { data, .. }) => {
                    seen.push("sync".to_string());
                    let m = sync::Message::decode(&data).unwrap();
                    self.doc.receive_sync_message(&mut self.state, m).unwrap();
                    self.sync(hub, id, false).await;
                }
                other => seen.push(format!("{other:?}")),
            }
        }
        seen
    }
}

/// Ana's proposal, with `coauthors`.
fn proposal(coauthors: &[&str]) -> Automerge {
    NewProposal {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Veredas".into(),
        description: "Veredas".into(),
        zone: "Collique".into(),
        category: "vías y veredas".into(),
        beneficiaries: 1200,
        estimated_cost: 35_000_000,
        cofinancing: 0,
        created_by: UserId::new("ana").unwrap(),
        coauthors: coauthors.iter().map(|c| UserId::new(*c).unwrap()).collect(),
    }
    .create(Some(ActorId::random()), 1_790_000_000)
}

fn append(doc: &mut Automerge, text: &str) -> ChangeHash {
    let field = doc.get(automerge::ROOT, "description").unwrap().unwrap().1;
    let len = doc.text(field).unwrap().chars().count();
    let edit = Edit::SpliceText {
        field: "description".into(),
        pos: len,
        delete: 0,
        insert: text.into(),
    };
    apply_edit(doc, &edit, 1_790_000_100).unwrap();
    doc.get_heads()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_written_on_one_node_reaches_a_phone_that_asked_on_another() {
    let (nodes, common, _) = hubs(2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let id = DocumentId::random();
    let mut ana = Phone::new(1, "ana");
    ana.doc = proposal(&["beto"]);

    // Beto asks node B before the document exists anywhere: he waits there.
    let mut beto = Phone::new(2, "beto");
    beto.sync(b, id, true).await;
    let first = tokio::time::timeout(Duration::from_secs(10), beto.rx.recv())
        .await
        .expect("an answer to the request")
        .unwrap();
    assert!(
        matches!(Message::decode(&first).unwrap(), Message::DocUnavailable(_)),
        "an absent document is unavailable at first"
    );

    // Ana creates it on node A; node B hears of it and hands it to Beto.
    ana.until_stored(a, id).await;
    let created = ana.doc.get_heads();
    beto.until_has(b, id, &created).await;
    assert_eq!(beto.doc.get_heads(), created);

    // Edits both ways between the nodes.
    let by_beto = append(&mut beto.doc, " y pistas");
    beto.until_stored(b, id).await;
    ana.until_has(a, id, &[by_beto]).await;
    let by_ana = append(&mut ana.doc, " en Collique");
    ana.until_stored(a, id).await;
    beto.until_has(b, id, &[by_ana]).await;
    assert_eq!(ana.doc.get_heads(), beto.doc.get_heads());

    // The shared store holds everything both phones wrote.
    a.shutdown().await;
    b.shutdown().await;
    let stored = crate::store::assemble(&id, &common.load(&id).unwrap()).unwrap();
    assert_eq!(stored.get_heads(), ana.doc.get_heads());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_moved_nodes_relays_a_coauthors_change_without_being_refused() {
    let (nodes, common, mutes) = hubs(2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let id = DocumentId::random();
    let mut ana = Phone::new(1, "ana");
    ana.doc = proposal(&["beto", "carla"]);
    ana.until_stored(a, id).await;
    // Carla follows the document on node B, so B holds it live.
    let mut carla = Phone::new(3, "carla");
    carla.sync(b, id, true).await;
    carla.until_has(b, id, &ana.doc.get_heads()).await;

    // Ana edits on node A; Beto, also on A, receives it. B is not told yet.
    mutes[0].store(true, Ordering::SeqCst);
    let mut beto = Phone::new(2, "beto");
    beto.sync(a, id, true).await;
    let by_ana = append(&mut ana.doc, " en Collique");
    ana.until_stored(a, id).await;
    beto.until_has(a, id, &[by_ana]).await;

    // Node A's phones move to B (A died): Beto, on a fresh connection, sends B what he has,
    // Ana's change included, with one of his own.
    let mut moved = Phone::new(4, "beto");
    moved.doc = beto.doc.fork().with_actor(ActorId::random());
    let by_beto = append(&mut moved.doc, " y pistas");
    moved.until_stored(b, id).await;
    carla.until_has(b, id, &[by_ana, by_beto]).await;
    assert_eq!(
        Gate::quarantined_count(common.as_ref(), &UserId::new("beto").unwrap()).unwrap(),
        0,
        "Ana's change, relayed by Beto, was taken for Beto writing in her name"
    );
    a.shutdown().await;
    b.shutdown().await;
}
