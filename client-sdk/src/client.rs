//! [`Client`]: the local store, the typed API and the statuses.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automerge::{ActorId, Automerge, ChangeHash, ReadDoc, ROOT};
use crdt_core::engine::{Backoff, ClientEngine, Documents, Keepalive, SyncStatus};
use crdt_core::permissions::{check_changes, Decision};
use crdt_core::schema::{
    apply_edits, commit_options, scalar_to_json, Acta, AnyDocument, Comment, DocType, Edit, Index,
    NewActa, NewDocument, NewObservation, NewProposal, Observation, Proposal, ProposalStatus,
    Signature,
};
use crdt_core::{DistrictScope, DocumentId, Ubigeo};
use tokio::sync::{broadcast, watch, Notify};

use crate::replay;
use crate::store::LocalStore;
use crate::types::{
    ActaDraft, ConcurrentValue, ConnectionState, DocStatus, DocSummary, Event, Identity,
    ObservationDraft, ProposalDraft, Rejection, SyncInfo,
};
use crate::{Error, EVENT_CAPACITY};

/// Settings of a client.
#[derive(Debug, Clone)]
pub struct Options {
    /// The fiscal year whose district index the client follows (the server's `--process-year`).
    pub process_year: u16,
    pub backoff: Backoff,
    pub keepalive: Keepalive,
    /// How long a connection attempt (TCP, TLS, upgrade, `join`) may take.
    pub connect_timeout: Duration,
    /// A label of this device, written in acta signatures.
    pub device: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            process_year: 2027,
            backoff: Backoff::default(),
            keepalive: Keepalive::default(),
            connect_timeout: Duration::from_secs(30),
            device: "minka-sdk".into(),
        }
    }
}

/// One document in memory.
pub(crate) struct LocalDoc {
    pub doc: Automerge,
    /// The heads stored in the local store.
    pub saved: Vec<ChangeHash>,
    /// Change runs stored after the last snapshot.
    pub runs: usize,
    pub last_synced: Option<SystemTime>,
}

/// The engine's view of the documents.
pub(crate) struct DocMap<'a>(pub &'a mut HashMap<DocumentId, LocalDoc>);

impl Documents for DocMap<'_> {
    fn get_mut(&mut self, id: &DocumentId) -> Option<&mut Automerge> {
        self.0.get_mut(id).map(|d| &mut d.doc)
    }
}

pub(crate) struct State {
    pub engine: ClientEngine,
    pub docs: HashMap<DocumentId, LocalDoc>,
    pub identity: Option<Identity>,
    pub token: Option<String>,
    /// Set when the server refused the token; cleared by a new one.
    pub token_refused: bool,
    /// The automerge actor of the current user on this installation (one per user: the server
    /// binds an actor to the first user it sees write with it).
    pub actor: ActorId,
    pub rejections: HashMap<DocumentId, Vec<Rejection>>,
    /// Documents with local changes the connection has not announced yet.
    pub dirty: BTreeSet<DocumentId>,
}

pub(crate) struct Shared {
    pub store: LocalStore,
    pub state: Mutex<State>,
    pub options: Options,
    pub events: broadcast::Sender<Event>,
    pub connection: watch::Sender<ConnectionState>,
    /// Wakes the connection: local changes to announce.
    pub wake: Notify,
    /// Bumped when the app says the network is back: retry now.
    pub network_gen: watch::Sender<u64>,
    /// Bumped by every new token: the connection reconnects with it.
    pub token_gen: watch::Sender<u64>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    pub fn set_connection(&self, c: ConnectionState) {
        self.connection.send_replace(c.clone());
        self.emit(Event::Connection(c));
    }

    /// Stores a document's changes since its last save (not yet durable).
    pub fn persist_doc(&self, id: &DocumentId, d: &mut LocalDoc) -> Result<(), Error> {
        let heads = d.doc.get_heads();
        if heads == d.saved {
            return Ok(());
        }
        if LocalStore::wants_compaction(d.runs + 1) {
            self.store.replace(id, &d.doc.save())?;
            d.runs = 0;
        } else {
            self.store.append(id, &d.doc.save_after(&d.saved))?;
            d.runs += 1;
        }
        d.saved = heads;
        Ok(())
    }

    /// Stores the engine's sync state of a document with its last sync time.
    pub fn persist_sync_state(&self, st: &State, id: &DocumentId) -> Result<(), Error> {
        let Some(state) = st.engine.persisted_state(id) else {
            return Ok(());
        };
        let at = st
            .docs
            .get(id)
            .and_then(|d| d.last_synced)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let mut value = at.to_be_bytes().to_vec();
        value.extend_from_slice(&state);
        self.store.put_sync_state(id, &value)
    }

    /// The index documents this identity follows.
    pub fn index_ids(&self, identity: &Identity) -> Vec<DocumentId> {
        let year = self.options.process_year;
        match identity.district {
            DistrictScope::One(d) => vec![DocumentId::index_for(d, year)],
            DistrictScope::All => Ubigeo::all()
                .map(|d| DocumentId::index_for(d, year))
                .collect(),
        }
    }
}

/// The SDK's handle: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
    pub(crate) net: Arc<Mutex<Option<crate::net::NetHandle>>>,
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `n` random characters of `[0-9a-z]` (46 bits for 9).
fn random_base36(n: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..n)
        .map(|_| DIGITS[rand::random::<usize>() % DIGITS.len()] as char)
        .collect()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Client {
    /// Opens the store in `dir` (created if absent) with default [`Options`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Client, Error> {
        Self::open_with(dir, Options::default())
    }

    /// Opens the store in `dir` (created if absent).
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Client, Error> {
        let store = LocalStore::open(dir.as_ref())?;
        let meta_or = |key: &str, make: &dyn Fn() -> Vec<u8>| -> Result<Vec<u8>, Error> {
            match store.meta(key)? {
                Some(v) => Ok(v),
                None => {
                    let v = make();
                    store.put_meta(key, &v)?;
                    Ok(v)
                }
            }
        };
        let peer_id = String::from_utf8_lossy(&meta_or("peer_id", &|| {
            // Short: every message carries it (the stock client's `peer-` ids are 14 characters).
            format!("sdk-{}", random_base36(9)).into_bytes()
        })?)
        .into_owned();
        let storage_id =
            String::from_utf8_lossy(&meta_or("storage_id", &|| random_hex(16).into_bytes())?)
                .into_owned();
        let token = store
            .meta("token")?
            .map(|t| String::from_utf8_lossy(&t).into_owned());
        let identity = token.as_deref().and_then(|t| Identity::from_token(t).ok());
        let actor = match &identity {
            Some(i) => actor_of(&store, i)?,
            None => ActorId::random(),
        };
        let mut engine = ClientEngine::new(peer_id, Some(storage_id));
        let mut docs = HashMap::new();
        let mut rejections = HashMap::new();
        for id in store.documents()? {
            let (doc, runs) = store.load(&id)?;
            let mut last_synced = None;
            if let Some(v) = store.sync_state(&id)? {
                if v.len() >= 8 {
                    let mut at = [0u8; 8];
                    at.copy_from_slice(&v[..8]);
                    let at = u64::from_be_bytes(at);
                    last_synced = (at > 0).then(|| UNIX_EPOCH + Duration::from_secs(at));
                    engine.load_state(id, &v[8..]);
                }
            }
            engine.track(id);
            let recs: Vec<Rejection> = store
                .rejections(&id)?
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
                .collect();
            if !recs.is_empty() {
                rejections.insert(id, recs);
            }
            docs.insert(
                id,
                LocalDoc {
                    saved: doc.get_heads(),
                    doc,
                    runs,
                    last_synced,
                },
            );
        }
        let dirty = docs.keys().copied().collect();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (connection, _) = watch::channel(ConnectionState::Offline);
        Ok(Client {
            shared: Arc::new(Shared {
                store,
                state: Mutex::new(State {
                    engine,
                    docs,
                    identity,
                    token,
                    token_refused: false,
                    actor,
                    rejections,
                    dirty,
                }),
                options,
                events,
                connection,
                wake: Notify::new(),
                network_gen: watch::channel(0).0,
                token_gen: watch::channel(0).0,
            }),
            net: Arc::new(Mutex::new(None)),
        })
    }

    /// Sets the token (the app's login or a refresh): who the user is for the typed API, and what
    /// the connection presents. Kept in the store, so the app works offline after a restart.
    pub fn set_token(&self, token: &str) -> Result<Identity, Error> {
        let identity = Identity::from_token(token)?;
        let actor = actor_of(&self.shared.store, &identity)?;
        self.shared.store.put_meta("token", token.as_bytes())?;
        self.shared.store.sync()?;
        {
            let mut st = self.shared.lock();
            st.actor = actor;
            st.identity = Some(identity.clone());
            st.token = Some(token.to_string());
            st.token_refused = false;
        }
        self.shared.token_gen.send_modify(|g| *g += 1);
        Ok(identity)
    }

    /// The user of the current token, if any.
    pub fn identity(&self) -> Option<Identity> {
        self.shared.lock().identity.clone()
    }

    /// A stream of [`Event`]s (bounded: see [`EVENT_CAPACITY`]).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The connection's state now.
    pub fn connection_state(&self) -> ConnectionState {
        self.shared.connection.borrow().clone()
    }

    /// A watch on the connection's state.
    pub fn watch_connection(&self) -> watch::Receiver<ConnectionState> {
        self.shared.connection.subscribe()
    }

    fn identity_or_err(st: &State) -> Result<Identity, Error> {
        st.identity
            .clone()
            .ok_or_else(|| Error::Auth("no token yet: call set_token (the app's login)".into()))
    }

    fn district_of(identity: &Identity, district: Option<Ubigeo>) -> Result<Ubigeo, Error> {
        match (identity.district, district) {
            (DistrictScope::One(d), _) => Ok(d),
            (DistrictScope::All, Some(d)) => Ok(d),
            (DistrictScope::All, None) => Err(Error::InvalidInput(
                "a province-wide user must say which district the document is for".into(),
            )),
        }
    }

    /// Saves a new document, checked as the server would, durably; returns its id.
    fn create(&self, builder: &impl NewDocument) -> Result<DocumentId, Error> {
        let id = DocumentId::random();
        let mut st = self.shared.lock();
        let identity = Self::identity_or_err(&st)?;
        let doc = builder.create(Some(st.actor.clone()), now_unix());
        let changes = doc.get_changes(&[]);
        if let Decision::Denied(v) =
            check_changes(&identity.principal(), &Automerge::new(), &changes)
        {
            return Err(Error::NotPermitted(join_violations(&v)));
        }
        let mut local = LocalDoc {
            doc,
            saved: Vec::new(),
            runs: 0,
            last_synced: None,
        };
        self.shared.persist_doc(&id, &mut local)?;
        self.shared.store.sync()?;
        st.engine.track(id);
        st.docs.insert(id, local);
        st.dirty.insert(id);
        drop(st);
        self.after_local_change(id);
        Ok(id)
    }

    fn after_local_change(&self, id: DocumentId) {
        self.shared.emit(Event::ChangedLocally(id));
        self.shared.wake.notify_one();
    }

    /// Creates a proposal in the user's district (status `draft`).
    pub fn create_proposal(&self, p: ProposalDraft) -> Result<DocumentId, Error> {
        check_text("title", &p.title)?;
        check_text("zone", &p.zone)?;
        check_amount("beneficiaries", p.beneficiaries)?;
        check_amount("estimated cost", p.estimated_cost)?;
        check_amount("cofinancing", p.cofinancing)?;
        let identity = Self::identity_or_err(&self.shared.lock())?;
        self.create(&NewProposal {
            district: Self::district_of(&identity, None)?,
            process_year: self.shared.options.process_year,
            title: p.title,
            description: p.description,
            zone: p.zone,
            category: p.category,
            beneficiaries: p.beneficiaries,
            estimated_cost: p.estimated_cost,
            cofinancing: p.cofinancing,
            created_by: identity.user,
            coauthors: Vec::new(),
        })
    }

    /// Creates an acta in the user's district (status `draft`).
    pub fn create_acta(&self, a: ActaDraft) -> Result<DocumentId, Error> {
        check_text("title", &a.title)?;
        let identity = Self::identity_or_err(&self.shared.lock())?;
        self.create(&NewActa {
            district: Self::district_of(&identity, None)?,
            process_year: self.shared.options.process_year,
            title: a.title,
            kind: a.kind,
            date: a.date,
            place: a.place,
            created_by: identity.user,
            committee_members: a.committee_members,
            attendees: a.attendees.into_iter().collect(),
            agreements: a.agreements,
            prioritized: Vec::new(),
        })
    }

    /// Creates an observation of the oversight committee in the user's district.
    pub fn create_observation(&self, o: ObservationDraft) -> Result<DocumentId, Error> {
        check_text("description", &o.description)?;
        check_text("kind", &o.kind)?;
        let identity = Self::identity_or_err(&self.shared.lock())?;
        self.create(&NewObservation {
            district: Self::district_of(&identity, None)?,
            process_year: self.shared.options.process_year,
            target: o.target,
            kind: o.kind,
            description: o.description,
            evidence: o.evidence,
            created_by: identity.user,
        })
    }

    /// Applies typed edits as one change with `message`, after checking them with the server's
    /// permission function; durable when it returns. `Ok(None)` if they changed nothing.
    pub fn edit(
        &self,
        id: &DocumentId,
        edits: &[Edit],
        message: &str,
    ) -> Result<Option<ChangeHash>, Error> {
        let mut st = self.shared.lock();
        let identity = Self::identity_or_err(&st)?;
        let actor = st.actor.clone();
        let local = st.docs.get_mut(id).ok_or(Error::NotFound(*id))?;
        if local.doc.get_heads().is_empty() {
            return Err(Error::NotFound(*id));
        }
        let mut trial = local.doc.fork().with_actor(actor);
        let hash = apply_edits(&mut trial, edits, message, now_unix())
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let Some(hash) = hash else {
            return Ok(None);
        };
        let change = trial
            .get_change_by_hash(&hash)
            .ok_or_else(|| Error::Store("the new change vanished".into()))?;
        if let Decision::Denied(v) = check_changes(
            &identity.principal(),
            &local.doc,
            std::slice::from_ref(&change),
        ) {
            return Err(Error::NotPermitted(join_violations(&v)));
        }
        // The trial copy already holds the change: it becomes the document (no second apply).
        local.doc = trial;
        if let Err(e) = self
            .shared
            .persist_doc(id, local)
            .and_then(|()| self.shared.store.sync())
        {
            // Not known to be saved. Show what the store holds (the change may or may not have
            // reached it), so memory never runs ahead of the disk and the next edit cannot reuse
            // a sequence number the store already has.
            if let Ok((doc, runs)) = self.shared.store.load(id) {
                local.saved = doc.get_heads();
                local.doc = doc;
                local.runs = runs;
            }
            return Err(e);
        }
        st.dirty.insert(*id);
        drop(st);
        self.after_local_change(*id);
        Ok(Some(hash))
    }

    fn me(&self) -> Result<Identity, Error> {
        Self::identity_or_err(&self.shared.lock())
    }

    /// Replaces a proposal's or acta's title.
    pub fn set_title(&self, id: &DocumentId, title: &str) -> Result<Option<ChangeHash>, Error> {
        check_text("title", title)?;
        self.edit(id, &[set_text("title", title)], "edit title")
    }

    /// Replaces a proposal's description.
    pub fn set_description(
        &self,
        id: &DocumentId,
        text: &str,
    ) -> Result<Option<ChangeHash>, Error> {
        self.edit(id, &[set_text("description", text)], "edit description")
    }

    /// Sets a proposal's estimated cost (céntimos).
    pub fn set_estimated_cost(
        &self,
        id: &DocumentId,
        centimos: i64,
    ) -> Result<Option<ChangeHash>, Error> {
        check_amount("estimated cost", centimos)?;
        self.edit(
            id,
            &[Edit::SetScalar {
                field: "estimatedCost".into(),
                value: centimos.into(),
            }],
            "set estimatedCost",
        )
    }

    /// Changes a proposal's status (e.g. `submitted`, `withdrawn`); forbidden transitions fail
    /// with [`Error::NotPermitted`].
    pub fn set_proposal_status(
        &self,
        id: &DocumentId,
        status: ProposalStatus,
    ) -> Result<Option<ChangeHash>, Error> {
        let edit = Edit::SetProposalStatus(status);
        self.edit(id, std::slice::from_ref(&edit), &edit.message())
    }

    /// Adds the user's support to a proposal.
    pub fn support(&self, id: &DocumentId) -> Result<Option<ChangeHash>, Error> {
        let edit = Edit::AddSupporter {
            user: self.me()?.user,
            at: now_unix(),
        };
        self.edit(id, std::slice::from_ref(&edit), &edit.message())
    }

    /// Comments on a proposal as the user.
    pub fn comment(&self, id: &DocumentId, text: &str) -> Result<Option<ChangeHash>, Error> {
        check_text("comment", text)?;
        let edit = Edit::AddComment(Comment {
            author: self.me()?.user,
            text: text.to_string(),
            at: now_unix(),
        });
        self.edit(id, std::slice::from_ref(&edit), &edit.message())
    }

    /// Signs an acta as the user.
    pub fn sign_acta(&self, id: &DocumentId) -> Result<Option<ChangeHash>, Error> {
        let edit = Edit::Sign {
            user: self.me()?.user,
            signature: Signature {
                at: now_unix(),
                device: self.shared.options.device.clone(),
            },
        };
        self.edit(id, std::slice::from_ref(&edit), &edit.message())
    }

    /// Answers an observation as the user.
    pub fn respond(&self, id: &DocumentId, text: &str) -> Result<Option<ChangeHash>, Error> {
        check_text("response", text)?;
        let edit = Edit::AddResponse(Comment {
            author: self.me()?.user,
            text: text.to_string(),
            at: now_unix(),
        });
        self.edit(id, std::slice::from_ref(&edit), &edit.message())
    }

    fn with_doc<T>(&self, id: &DocumentId, f: impl FnOnce(&Automerge) -> T) -> Result<T, Error> {
        let st = self.shared.lock();
        let d = st.docs.get(id).ok_or(Error::NotFound(*id))?;
        if d.doc.get_heads().is_empty() {
            return Err(Error::NotFound(*id));
        }
        Ok(f(&d.doc))
    }

    /// Any document, read by its type.
    pub fn document(&self, id: &DocumentId) -> Result<AnyDocument, Error> {
        self.with_doc(id, AnyDocument::read)?
            .map_err(|e| Error::Schema(*id, e.to_string()))
    }

    pub fn proposal(&self, id: &DocumentId) -> Result<Proposal, Error> {
        self.with_doc(id, Proposal::read)?
            .map_err(|e| Error::Schema(*id, e.to_string()))
    }

    pub fn acta(&self, id: &DocumentId) -> Result<Acta, Error> {
        self.with_doc(id, Acta::read)?
            .map_err(|e| Error::Schema(*id, e.to_string()))
    }

    pub fn observation(&self, id: &DocumentId) -> Result<Observation, Error> {
        self.with_doc(id, Observation::read)?
            .map_err(|e| Error::Schema(*id, e.to_string()))
    }

    /// The document as JSON (the shape the review API returns).
    pub fn json(&self, id: &DocumentId) -> Result<serde_json::Value, Error> {
        self.with_doc(id, crdt_core::schema::to_json)
    }

    /// Every change of the document, oldest first: author actor, time, message, what it touched.
    pub fn history(&self, id: &DocumentId) -> Result<Vec<crdt_core::history::HistoryEntry>, Error> {
        self.with_doc(id, crdt_core::history::history)
    }

    /// The document's heads (hex), e.g. to compare with the review API.
    pub fn heads(&self, id: &DocumentId) -> Result<Vec<String>, Error> {
        self.with_doc(id, |d| {
            d.get_heads().iter().map(|h| h.to_string()).collect()
        })
    }

    /// Every concurrent value of a field (`path` of map keys from the root, e.g.
    /// `["estimatedCost"]` or `["evaluation", "validatedCost"]`); more than one means people
    /// changed it at the same time and automerge picked the first as the winner.
    pub fn get_all(&self, id: &DocumentId, path: &[&str]) -> Result<Vec<ConcurrentValue>, Error> {
        let (field, parents) = path
            .split_last()
            .ok_or_else(|| Error::InvalidInput("empty path".into()))?;
        self.with_doc(id, |d| {
            let mut obj = ROOT;
            for key in parents {
                match d.get(&obj, *key) {
                    Ok(Some((automerge::Value::Object(_), o))) => obj = o,
                    _ => return Ok(Vec::new()),
                }
            }
            let all = d
                .get_all(&obj, *field)
                .map_err(|e| Error::InvalidInput(e.to_string()))?;
            let winner = d.get(&obj, *field).ok().flatten().map(|(_, o)| o);
            Ok(all
                .into_iter()
                .map(|(value, exid)| ConcurrentValue {
                    value: match &value {
                        automerge::Value::Scalar(s) => scalar_to_json(s),
                        automerge::Value::Object(_) => {
                            crdt_core::schema::object_to_json(d, &exid, None)
                        }
                    },
                    actor: match &exid {
                        automerge::ObjId::Id(_, actor, _) => actor.to_hex_string(),
                        automerge::ObjId::Root => String::new(),
                    },
                    winner: winner.as_ref() == Some(&exid),
                })
                .collect())
        })?
    }

    /// Every document held locally (index documents aside), with its sync status.
    pub fn list(&self) -> Vec<DocSummary> {
        let st = self.shared.lock();
        let mut out: Vec<DocSummary> = st
            .docs
            .iter()
            .filter_map(|(id, d)| {
                let any = AnyDocument::read(&d.doc).ok()?;
                let (title, doc_type) = match &any {
                    AnyDocument::Proposal(p) => (p.title.clone(), DocType::Proposal),
                    AnyDocument::Acta(a) => (a.title.clone(), DocType::Acta),
                    AnyDocument::Observation(o) => (o.kind.clone(), DocType::Observation),
                    AnyDocument::Process(_) => (String::new(), DocType::Process),
                    AnyDocument::Index(_) => return None,
                };
                Some(DocSummary {
                    id: *id,
                    doc_type,
                    title,
                    status: any.status().unwrap_or_default().to_string(),
                    sync: status_of(&st, id, &d.doc),
                })
            })
            .collect();
        out.sort_by(|a, b| a.title.cmp(&b.title).then(a.id.cmp(&b.id)));
        out
    }

    /// The district index as the client last received it (ids the server lists).
    pub fn district_index(&self) -> Vec<DocumentId> {
        let st = self.shared.lock();
        let Some(identity) = st.identity.clone() else {
            return Vec::new();
        };
        self.shared
            .index_ids(&identity)
            .iter()
            .filter_map(|i| st.docs.get(i))
            .filter_map(|d| Index::read(&d.doc).ok())
            .flat_map(|i| i.docs.into_keys())
            .collect()
    }

    /// A document's sync status.
    pub fn status(&self, id: &DocumentId) -> Result<SyncInfo, Error> {
        let st = self.shared.lock();
        let d = st
            .docs
            .get(id)
            .filter(|d| !d.doc.get_heads().is_empty())
            .ok_or(Error::NotFound(*id))?;
        Ok(SyncInfo {
            status: status_of(&st, id, &d.doc),
            unacknowledged: st.engine.unacknowledged(id, &d.doc).len(),
            last_synced: d.last_synced,
        })
    }

    /// The refused changes of a document, with the server's reasons.
    pub fn rejections(&self, id: &DocumentId) -> Vec<Rejection> {
        self.shared
            .lock()
            .rejections
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Drops the refused changes and every local change made on top of them (they could not be
    /// accepted either); returns how many changes were dropped. The document returns to what the
    /// server accepted plus the local changes independent of the refused ones, and keeps syncing.
    pub fn discard_rejected(&self, id: &DocumentId) -> Result<usize, Error> {
        self.rebuild(id, false).map(|(dropped, _)| dropped)
    }

    /// Writes the refused content again as one new change on top of the accepted history, if this
    /// user may make it now (else [`Error::NotPermitted`] and nothing changes); the refused
    /// changes themselves are dropped.
    pub fn reapply_rejected(&self, id: &DocumentId) -> Result<Option<ChangeHash>, Error> {
        self.rebuild(id, true).map(|(_, new)| new)
    }

    fn rebuild(
        &self,
        id: &DocumentId,
        reapply: bool,
    ) -> Result<(usize, Option<ChangeHash>), Error> {
        let mut st = self.shared.lock();
        let identity = Self::identity_or_err(&st)?;
        let roots: Vec<ChangeHash> = st
            .rejections
            .get(id)
            .map(|r| r.iter().map(|r| r.change).collect())
            .unwrap_or_default();
        if roots.is_empty() {
            return Err(Error::NothingRejected(*id));
        }
        let actor = st.actor.clone();
        let local = st.docs.get_mut(id).ok_or(Error::NotFound(*id))?;
        let refused = replay::with_descendants(&local.doc, &roots);
        let clean =
            replay::without(&local.doc, &refused).map_err(|e| Error::Store(e.to_string()))?;
        let mut next = clean.fork().with_actor(actor);
        let mut new_change = None;
        if reapply {
            let messages: Vec<String> = local
                .doc
                .get_changes_meta(&clean.get_heads())
                .into_iter()
                .filter_map(|c| c.message.map(|m| m.into_owned()))
                .collect();
            let mut tx = next.transaction();
            replay::replay(
                &mut tx,
                &local.doc,
                &clean.get_heads(),
                &local.doc.get_heads(),
            )
            .map_err(|e| Error::InvalidInput(format!("cannot re-apply: {e}")))?;
            let message = format!("re-apply: {}", messages.join("; "));
            let (hash, _) = tx.commit_with(commit_options(message, now_unix()));
            if let Some(hash) = hash {
                let change = next
                    .get_change_by_hash(&hash)
                    .ok_or_else(|| Error::Store("the new change vanished".into()))?;
                if let Decision::Denied(v) = check_changes(&identity.principal(), &clean, &[change])
                {
                    return Err(Error::NotPermitted(join_violations(&v)));
                }
                new_change = Some(hash);
            }
        }
        self.shared.store.replace(id, &next.save())?;
        self.shared.store.clear_rejections(id)?;
        self.shared.store.sync()?;
        local.saved = next.get_heads();
        local.runs = 0;
        local.doc = next;
        st.rejections.remove(id);
        st.engine.reset_session(id);
        st.dirty.insert(*id);
        drop(st);
        self.after_local_change(*id);
        Ok((refused.len(), new_change))
    }

    /// Starts syncing with the server at `url` (`ws://…/sync` or `wss://…/sync`) in the
    /// background, on the current tokio runtime; returns at once. Syncs every local document and
    /// every document the district index lists, and keeps following the index.
    pub fn connect(&self, url: &str, token: &str) -> Result<(), Error> {
        self.set_token(token)?;
        let mut net = self.net.lock().unwrap_or_else(|p| p.into_inner());
        let previous = net.take();
        if let Some(old) = &previous {
            old.stop();
        }
        // The new connection starts once the old one (running or still stopping) has ended, so
        // two never share the engine's session.
        *net = Some(crate::net::spawn(
            self.shared.clone(),
            url.to_string(),
            previous,
        )?);
        Ok(())
    }

    /// Stops syncing (the local store stays usable) and waits for the connection to close.
    pub async fn disconnect(&self) {
        let handle = self.net.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(h) = handle else {
            return;
        };
        h.stop();
        h.join().await;
        // Forget it unless a `connect` has replaced it meanwhile.
        let mut net = self.net.lock().unwrap_or_else(|p| p.into_inner());
        if net.as_ref().is_some_and(|n| n.same(&h)) {
            *net = None;
        }
    }

    /// The OS says the network is back: retry now instead of waiting out the backoff.
    pub fn network_changed(&self) {
        self.shared.network_gen.send_modify(|g| *g += 1);
    }
}

/// The actor of this user on this installation, created on first use.
fn actor_of(store: &LocalStore, identity: &Identity) -> Result<ActorId, Error> {
    let key = format!("actor:{}", identity.user);
    match store.meta(&key)? {
        Some(bytes) => Ok(ActorId::from(bytes)),
        None => {
            let actor = ActorId::random();
            store.put_meta(&key, actor.to_bytes())?;
            store.sync()?;
            Ok(actor)
        }
    }
}

fn status_of(st: &State, id: &DocumentId, doc: &Automerge) -> DocStatus {
    if let Some(r) = st.rejections.get(id).and_then(|r| r.first()) {
        return DocStatus::Rejected {
            reason: r.reason.clone(),
        };
    }
    match st.engine.status(id, doc) {
        SyncStatus::LocalOnly => DocStatus::LocalOnly,
        SyncStatus::Pending(_) => DocStatus::Pending,
        SyncStatus::Synced => DocStatus::Synced,
    }
}

fn set_text(field: &str, text: &str) -> Edit {
    Edit::SetText {
        field: field.into(),
        text: text.into(),
    }
}

fn join_violations(v: &[crdt_core::permissions::Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn check_amount(what: &str, value: i64) -> Result<(), Error> {
    if value < 0 {
        return Err(Error::InvalidInput(format!(
            "{what} cannot be negative ({value})"
        )));
    }
    Ok(())
}

fn check_text(what: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::InvalidInput(format!("{what} cannot be empty")));
    }
    Ok(())
}
