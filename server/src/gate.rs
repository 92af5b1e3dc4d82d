//! The write gate: every batch of changes a peer sends is judged before it joins the stored document.
//!
//! A change passes when its actor is bound to the sending user (first sight binds it), it does not
//! depend on a change that was rejected, and the crdt-core permission function allows it for the
//! user's roles and district against the document as it was before. Rejected changes are kept in
//! the quarantine (never lost, never relayed) and the peer is told why.
//!
//! The common case — a batch that is wholly allowed — costs one permission check; a denied batch
//! is halved until its refused changes stand alone, so the allowed changes in it still land at
//! about the cost of an allowed batch. What is kept is bounded: actor bindings are cached up to
//! [`MAX_CACHED_BINDINGS`], and a user's refused changes are kept up to a per-user limit.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use std::sync::Mutex;

use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};
use crdt_core::permissions::{causal_order, check_and_apply, Decision, Principal};
use crdt_core::{DocumentId, UserId};
use serde::{Deserialize, Serialize};

use crate::auth::{now_unix, AuthUser};
use crate::store::{DocStore, StoreError, StoreResult};
use crate::sync_limits::leb128_u32;

pub const ACTORS: &str = "actors";
const USERS: &str = "users";
const QUARANTINE: &str = "quarantine";
/// Quarantine keys by `district(6) ‖ time(8, BE) ‖ doc(16) ‖ hash(32)` (`------` when unknown).
const QUARANTINE_BY_DISTRICT: &str = "quarantine-by-district";
/// Quarantine keys by `user ‖ 0 ‖ time(8, BE) ‖ doc(16) ‖ hash(32)`; the value is the primary
/// key followed by the entry's district (6 bytes, `------` when unknown).
const QUARANTINE_BY_USER: &str = "quarantine-by-user";
const REJECTED: &str = "rejected";

/// Which slice of the quarantine to read.
#[derive(Debug, Clone)]
pub enum QuarantineScope {
    District(Option<String>),
    User(String),
}

/// One page of quarantine entries, newest first, and how many match in all.
#[derive(Debug, Clone, Default)]
pub struct QuarantinePage {
    pub entries: Vec<QuarantineEntry>,
    pub total: usize,
}

/// A change kept out of a document, as reviewers see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineEntry {
    pub document_id: String,
    pub district: Option<String>,
    pub user: String,
    pub user_name: String,
    /// Unix seconds when it was rejected.
    pub time: u64,
    pub reason: String,
    pub path: String,
    pub hash: String,
    pub actor: String,
    /// The change bytes, hex.
    pub change: String,
}

/// What became of one peer message's changes.
pub struct Admission {
    /// The document with the accepted changes applied (when any were accepted).
    pub doc: Option<Automerge>,
    pub accepted: usize,
    pub rejected: Vec<(ChangeHash, String)>,
    /// Changes of the batch that were rejected before (the peer still holds them): the first is
    /// announced again, so a peer that lost the first notice (a cut connection) still learns.
    pub rejected_before: Vec<ChangeHash>,
    /// Changes held back because their dependencies have not arrived (judged once they have).
    pub held: Vec<Change>,
    /// With checks switched off: the changes to apply as they are.
    pub unchecked: Vec<Change>,
    /// Changes refused but not kept: their user already has the most quarantine entries the
    /// server keeps for one user. Not applied, not stored; the phone still has them.
    pub unrecorded: Vec<ChangeHash>,
}

/// Actor bindings (cached) and quarantine storage.
pub struct Gate {
    actors: BindingCache,
    /// Most quarantine entries kept for one user; beyond it their refused changes are refused
    /// without being kept (see [`Admission::unrecorded`]).
    max_quarantine_per_user: usize,
    /// Serializes the read-modify-write of the per-user quarantine counters.
    counting: Mutex<()>,
}

/// Most actor bindings kept in memory (the store has them all).
pub const MAX_CACHED_BINDINGS: usize = 100_000;
/// Default for [`Gate::max_quarantine_per_user`].
pub const MAX_QUARANTINE_PER_USER: usize = 10_000;
/// Meta table of quarantine entries per user (user id → u64 BE).
const QUARANTINE_COUNT: &str = "quarantine-count";

/// A bounded cache of actor bindings in two generations: lookups promote an entry from the old
/// generation to the new one; when the new one is full it becomes the old one and the old one is
/// dropped. At most `capacity` entries, and recently used bindings stay.
struct BindingCache {
    capacity: usize,
    gens: Mutex<(HashMap<ActorId, UserId>, HashMap<ActorId, UserId>)>,
}

impl BindingCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            gens: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    fn get(&self, actor: &ActorId) -> Option<UserId> {
        let mut g = self.gens.lock().unwrap();
        if let Some(u) = g.0.get(actor) {
            return Some(u.clone());
        }
        let u = g.1.remove(actor)?;
        Self::put(&mut g, self.capacity, actor.clone(), u.clone());
        Some(u)
    }

    fn insert(&self, actor: ActorId, user: UserId) {
        let mut g = self.gens.lock().unwrap();
        Self::put(&mut g, self.capacity, actor, user);
    }

    fn put(
        g: &mut (HashMap<ActorId, UserId>, HashMap<ActorId, UserId>),
        capacity: usize,
        actor: ActorId,
        user: UserId,
    ) {
        if g.0.len() >= capacity / 2 && !g.0.contains_key(&actor) {
            g.1 = std::mem::take(&mut g.0);
        }
        g.0.insert(actor, user);
    }

    fn len(&self) -> usize {
        let g = self.gens.lock().unwrap();
        g.0.len() + g.1.len()
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Self::with_limits(MAX_CACHED_BINDINGS, MAX_QUARANTINE_PER_USER)
    }

    /// A gate caching at most `cached_bindings` actor bindings and keeping at most
    /// `quarantine_per_user` refused changes of any one user.
    pub fn with_limits(cached_bindings: usize, quarantine_per_user: usize) -> Self {
        Self {
            actors: BindingCache::new(cached_bindings),
            max_quarantine_per_user: quarantine_per_user,
            counting: Mutex::new(()),
        }
    }

    /// Actor bindings held in memory.
    pub fn cached_bindings(&self) -> usize {
        self.actors.len()
    }

    /// The user an actor is bound to, if any.
    pub fn binding(&self, store: &dyn DocStore, actor: &ActorId) -> StoreResult<Option<UserId>> {
        if let Some(u) = self.actors.get(actor) {
            return Ok(Some(u));
        }
        let found = store
            .meta_get(ACTORS, actor.to_bytes())?
            .and_then(|v| UserId::new(String::from_utf8_lossy(&v).into_owned()).ok());
        if let Some(u) = &found {
            self.actors.insert(actor.clone(), u.clone());
        }
        Ok(found)
    }

    /// How many quarantine entries a user has.
    pub fn quarantined_count(store: &dyn DocStore, user: &UserId) -> StoreResult<u64> {
        Ok(store
            .meta_get(QUARANTINE_COUNT, user.as_str().as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Counts one more quarantine entry of `user`; false (and nothing counted) when the user
    /// already has the most the gate keeps.
    fn count_quarantined(&self, store: &dyn DocStore, user: &UserId) -> StoreResult<bool> {
        let _one_at_a_time = self.counting.lock().unwrap();
        let n = Self::quarantined_count(store, user)?;
        if n >= self.max_quarantine_per_user as u64 {
            return Ok(false);
        }
        store.meta_put(
            QUARANTINE_COUNT,
            user.as_str().as_bytes(),
            &(n + 1).to_be_bytes(),
        )?;
        Ok(true)
    }

    /// Binds `actor` to `user` unless it is bound already, atomically in the store (across every
    /// node sharing it): returns the owner it already had, `None` when this call bound it. A
    /// binding is claimed before its changes are judged, so two users racing for one actor on
    /// two nodes cannot both have changes accepted under it; actor ids are random and become
    /// known only through accepted changes, so claiming one whose changes are then refused
    /// takes nothing from anyone.
    fn claim(
        &self,
        store: &dyn DocStore,
        actor: &ActorId,
        user: &UserId,
    ) -> StoreResult<Option<UserId>> {
        let owner = store
            .meta_put_if_absent(ACTORS, actor.to_bytes(), user.as_str().as_bytes())?
            .map(|v| UserId::new(String::from_utf8_lossy(&v).into_owned()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("actor binding: {e}")))?;
        self.actors
            .insert(actor.clone(), owner.clone().unwrap_or_else(|| user.clone()));
        Ok(owner)
    }

    /// Binds an actor to a user (also used by `minka demo` for its fixed demo actors).
    pub fn bind(&self, store: &dyn DocStore, actor: &ActorId, user: &UserId) -> StoreResult<()> {
        store.meta_put(ACTORS, actor.to_bytes(), user.as_str().as_bytes())?;
        self.actors.insert(actor.clone(), user.clone());
        Ok(())
    }

    /// A document's rejected changes with their dependencies (to reject what depends on them,
    /// and to keep a peer that holds them from looking out of sync).
    pub fn rejected_changes(
        store: &dyn DocStore,
        doc: &DocumentId,
    ) -> StoreResult<HashMap<ChangeHash, Vec<ChangeHash>>> {
        Ok(store
            .meta_scan(REJECTED, doc.as_bytes())?
            .into_iter()
            .filter_map(|(k, v)| {
                let hash = ChangeHash::try_from(&k[16..]).ok()?;
                let deps = v
                    .chunks(32)
                    .filter_map(|d| ChangeHash::try_from(d).ok())
                    .collect();
                Some((hash, deps))
            })
            .collect())
    }

    /// Remembers a user's display name (from their token) for the review pages.
    pub fn remember_name(store: &dyn DocStore, user: &UserId, name: &str) -> StoreResult<()> {
        if store.meta_get(USERS, user.as_str().as_bytes())?.as_deref() != Some(name.as_bytes()) {
            store.meta_put(USERS, user.as_str().as_bytes(), name.as_bytes())?;
        }
        Ok(())
    }

    /// The user an actor (hex) is bound to, with their name if known.
    pub fn actor_user(
        store: &dyn DocStore,
        actor_hex: &str,
    ) -> StoreResult<Option<(UserId, Option<String>)>> {
        let Ok(bytes) = hex::decode(actor_hex) else {
            return Ok(None);
        };
        let Some(user) = store
            .meta_get(ACTORS, &bytes)?
            .and_then(|v| UserId::new(String::from_utf8_lossy(&v).into_owned()).ok())
        else {
            return Ok(None);
        };
        let name = store
            .meta_get(USERS, user.as_str().as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        Ok(Some((user, name)))
    }

    /// One page of the quarantine for `scope`, newest first, optionally of one document, read
    /// through the secondary index: only the scope's index keys are read, then the page's entries.
    /// `district_visible` decides, from an entry's district alone, whether a user-scoped entry may
    /// be shown (a district's reviewer asking for a user sees that user's entries of the district).
    pub fn quarantine_page(
        store: &dyn DocStore,
        scope: &QuarantineScope,
        document: Option<&DocumentId>,
        district_visible: &dyn Fn(Option<&str>) -> bool,
        offset: usize,
        limit: usize,
    ) -> StoreResult<QuarantinePage> {
        let (tree, prefix) = match scope {
            QuarantineScope::District(Some(d)) => (QUARANTINE_BY_DISTRICT, d.as_bytes().to_vec()),
            QuarantineScope::District(None) => (QUARANTINE_BY_DISTRICT, Vec::new()),
            QuarantineScope::User(u) => (QUARANTINE_BY_USER, user_prefix(u)),
        };
        let mut keys: Vec<(Vec<u8>, Vec<u8>)> = store.meta_scan(tree, &prefix)?;
        if let Some(doc) = document {
            keys.retain(|(_, primary)| primary.starts_with(doc.as_bytes()));
        }
        if let QuarantineScope::User(_) = scope {
            keys.retain(|(_, value)| {
                let district = value.get(48..54).and_then(|d| std::str::from_utf8(d).ok());
                district_visible(district.filter(|d| *d != "------"))
            });
        }
        // Newest first: the time follows the prefix in every index key.
        let at = |k: &[u8]| -> [u8; 8] {
            let start = match scope {
                QuarantineScope::District(_) => 6,
                QuarantineScope::User(u) => u.len() + 1,
            };
            k.get(start..start + 8)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default()
        };
        keys.sort_by(|a, b| at(&b.0).cmp(&at(&a.0)).then_with(|| b.1.cmp(&a.1)));
        let total = keys.len();
        let mut entries = Vec::new();
        for (_, value) in keys.into_iter().skip(offset).take(limit) {
            let primary = &value[..value.len().min(48)];
            if let Some(raw) = store.meta_get(QUARANTINE, primary)? {
                if let Ok(e) = serde_json::from_slice(&raw) {
                    entries.push(e);
                }
            }
        }
        Ok(QuarantinePage { entries, total })
    }

    /// Builds the quarantine's secondary indexes for entries written before they existed.
    pub fn index_quarantine(store: &dyn DocStore) -> StoreResult<usize> {
        if store.meta_get("server", b"quarantine-index-v2")?.is_some() {
            return Ok(0);
        }
        let mut n = 0;
        for (key, raw) in store.meta_scan(QUARANTINE, b"")? {
            if let Ok(e) = serde_json::from_slice::<QuarantineEntry>(&raw) {
                Self::index_entry(store, &key, &e)?;
                n += 1;
            }
        }
        store.meta_put("server", b"quarantine-index-v2", b"1")?;
        Ok(n)
    }

    fn index_entry(store: &dyn DocStore, primary: &[u8], e: &QuarantineEntry) -> StoreResult<()> {
        let district = e.district.clone().unwrap_or_else(|| "------".into());
        let mut by_district = district.as_bytes().to_vec();
        by_district.extend_from_slice(&e.time.to_be_bytes());
        by_district.extend_from_slice(primary);
        store.meta_put(QUARANTINE_BY_DISTRICT, &by_district, primary)?;
        let mut by_user = user_prefix(&e.user);
        by_user.extend_from_slice(&e.time.to_be_bytes());
        by_user.extend_from_slice(primary);
        let mut value = primary.to_vec();
        value.extend_from_slice(district.as_bytes());
        store.meta_put(QUARANTINE_BY_USER, &by_user, &value)
    }

    fn record(
        store: &dyn DocStore,
        doc_id: &DocumentId,
        district: Option<String>,
        user: &AuthUser,
        change: &Change,
        path: &str,
        reason: &str,
    ) -> StoreResult<()> {
        let hash = change.hash();
        let entry = QuarantineEntry {
            document_id: doc_id.to_string(),
            district,
            user: user.user.to_string(),
            user_name: user.name.clone(),
            time: now_unix(),
            reason: reason.to_string(),
            path: path.to_string(),
            hash: hash.to_string(),
            actor: change.actor_id().to_hex_string(),
            change: hex::encode(change.raw_bytes()),
        };
        let mut key = doc_id.as_bytes().to_vec();
        key.extend_from_slice(hash.as_ref());
        store.meta_put(
            QUARANTINE,
            &key,
            &serde_json::to_vec(&entry).expect("serializable"),
        )?;
        Self::index_entry(store, &key, &entry)?;
        let deps: Vec<u8> = change
            .deps()
            .iter()
            .flat_map(|d| d.as_ref().to_vec())
            .collect();
        store.meta_put(REJECTED, &key, &deps)
    }

    /// The reason a change of `doc` was refused, as first announced (`path: reason`).
    pub fn refusal_reason(
        store: &dyn DocStore,
        doc: &DocumentId,
        hash: &ChangeHash,
    ) -> StoreResult<Option<String>> {
        let mut key = doc.as_bytes().to_vec();
        key.extend_from_slice(hash.as_ref());
        Ok(store
            .meta_get(QUARANTINE, &key)?
            .and_then(|v| serde_json::from_slice::<QuarantineEntry>(&v).ok())
            .map(|e| {
                if e.path.is_empty() {
                    e.reason
                } else {
                    format!("{}: {}", e.path, e.reason)
                }
            }))
    }

    /// Judges `changes` from `user` against `doc`. Writes bindings and quarantine entries; the
    /// caller persists the accepted document and waits for durability.
    #[allow(clippy::too_many_arguments)] // one call site; the arguments are the batch's context
    pub fn admit(
        &self,
        store: &dyn DocStore,
        doc_id: &DocumentId,
        district: Option<String>,
        doc: &Automerge,
        user: &AuthUser,
        changes: Vec<Change>,
        rejected: &mut HashMap<ChangeHash, Vec<ChangeHash>>,
        check_permissions: bool,
    ) -> StoreResult<Admission> {
        let principal =
            Principal::new(user.user.clone(), user.roles.iter().copied(), user.district);
        let (again, mut fresh): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .filter(|c| doc.get_change_by_hash(&c.hash()).is_none())
            .partition(|c| rejected.contains_key(&c.hash()));
        let mut out = Admission {
            doc: None,
            accepted: 0,
            rejected: Vec::new(),
            rejected_before: again.iter().map(Change::hash).collect(),
            held: Vec::new(),
            unchecked: Vec::new(),
            unrecorded: Vec::new(),
        };
        if fresh.is_empty() {
            return Ok(out);
        }
        fresh = causal_order(fresh);
        let mut reject = |c: &Change,
                          path: &str,
                          reason: String,
                          rejected: &mut HashMap<ChangeHash, Vec<ChangeHash>>|
         -> StoreResult<()> {
            if !self.count_quarantined(store, &user.user)? {
                out.unrecorded.push(c.hash());
                return Ok(());
            }
            Self::record(store, doc_id, district.clone(), user, c, path, &reason)?;
            rejected.insert(c.hash(), c.deps().to_vec());
            out.rejected.push((
                c.hash(),
                if path.is_empty() {
                    reason
                } else {
                    format!("{path}: {reason}")
                },
            ));
            Ok(())
        };

        // Index ids are the server's alone, whatever a peer writes there.
        if let Some((district, year)) = doc_id.reserved_index() {
            let reason = format!(
                "document id {doc_id} is reserved for the index of district {district} for {year}; \
                 only the server writes there"
            );
            for c in &fresh {
                reject(c, "", reason.clone(), rejected)?;
            }
            return Ok(out);
        }

        // Actor binding and dependencies on rejected changes, change by change.
        let mut candidates = Vec::with_capacity(fresh.len());
        let mut new_bindings: BTreeSet<ActorId> = BTreeSet::new();
        for c in fresh {
            if let Some(root) = refused_root(c.deps(), rejected) {
                reject(&c, "", depends_reason(&root), rejected)?;
                continue;
            }
            let actor = c.actor_id().clone();
            match self.binding(store, &actor)? {
                Some(owner) if owner != user.user => {
                    reject(
                        &c,
                        "",
                        format!("actor {} belongs to another user: nobody writes in another person's name", actor.to_hex_string()),
                        rejected,
                    )?;
                    continue;
                }
                Some(_) => {}
                None => match self.claim(store, &actor, &user.user)? {
                    // Another node (or document task) bound it first.
                    Some(owner) if owner != user.user => {
                        reject(
                            &c,
                            "",
                            format!("actor {} belongs to another user: nobody writes in another person's name", actor.to_hex_string()),
                            rejected,
                        )?;
                        continue;
                    }
                    _ => {
                        new_bindings.insert(actor);
                    }
                },
            }
            candidates.push(c);
        }
        if candidates.is_empty() {
            return Ok(out);
        }

        if !check_permissions {
            // Test-only switch for the benchmark: the caller applies these unchecked.
            out.accepted = candidates.len();
            out.unchecked = candidates;
            return Ok(out);
        } else {
            // Changes whose parents are neither in the document nor judgeable in this batch wait,
            // unjudged: a peer flooding changes with missing parents costs hash lookups only.
            let held_back = holds_back(doc, &candidates);
            if !held_back.is_empty() {
                let (ready, waiting): (Vec<Change>, Vec<Change>) = candidates
                    .into_iter()
                    .partition(|c| !held_back.contains(&c.hash()));
                out.held.extend(waiting);
                candidates = ready;
                if candidates.is_empty() {
                    return Ok(out);
                }
            }
            // Fast path: the whole batch at once.
            let (decision, after) = check_and_apply(&principal, doc, &candidates);
            match decision {
                Decision::Allowed => {
                    out.accepted = candidates.len();
                    out.doc = Some(after);
                }
                Decision::MissingDependencies(_) | Decision::Denied(_) => {
                    // Slow path: find the refused changes by halving. A part judged allowed as a
                    // whole lands as a whole (as the fast path would take it); a refused part is
                    // split in two, in causal order, until the refused changes stand alone. One
                    // denied change among n costs about 2·log2(n) judgements of shrinking parts,
                    // not n judgements each on a full copy of the document.
                    let mut current = doc.clone();
                    let mut any = false;
                    let mut held_here = held_back;
                    let mut parts: VecDeque<Vec<Change>> = VecDeque::from([candidates]);
                    while let Some(part) = parts.pop_front() {
                        let mut judged = Vec::with_capacity(part.len());
                        for c in part {
                            if let Some(root) = refused_root(c.deps(), rejected) {
                                reject(&c, "", depends_reason(&root), rejected)?;
                            } else if c.deps().iter().any(|d| held_here.contains(d)) {
                                held_here.insert(c.hash());
                                out.held.push(c);
                            } else {
                                judged.push(c);
                            }
                        }
                        if judged.is_empty() {
                            continue;
                        }
                        let (decision, after) = check_and_apply(&principal, &current, &judged);
                        match decision {
                            Decision::Allowed => {
                                current = after;
                                out.accepted += judged.len();
                                any = true;
                            }
                            Decision::MissingDependencies(_) if judged.len() == 1 => {
                                held_here.insert(judged[0].hash());
                                out.held.extend(judged);
                            }
                            Decision::Denied(v) if judged.len() == 1 => {
                                let first = v.into_iter().next();
                                let (path, reason) = first
                                    .map(|v| (v.path, v.reason))
                                    .unwrap_or_else(|| (String::new(), "not allowed".into()));
                                reject(&judged[0], &path, reason, rejected)?;
                            }
                            _ => {
                                let later = judged.split_off(judged.len() / 2);
                                parts.push_front(later);
                                parts.push_front(judged);
                            }
                        }
                    }
                    if any {
                        out.doc = Some(current);
                    }
                }
            }
        }

        // Actors first seen here were claimed for this user before judging (above); keep the
        // name the review page shows for them.
        if out.doc.is_some() && !new_bindings.is_empty() {
            Self::remember_name(store, &user.user, &user.name)?;
        }
        Ok(out)
    }
}

fn user_prefix(user: &str) -> Vec<u8> {
    let mut k = user.as_bytes().to_vec();
    k.push(0);
    k
}

/// The changes of a batch (in causal order) that cannot be judged yet: a dependency is neither in
/// the document nor among the batch's changes that can be.
fn holds_back(doc: &Automerge, batch: &[Change]) -> HashSet<ChangeHash> {
    let ours: HashSet<ChangeHash> = batch.iter().map(Change::hash).collect();
    let mut held = HashSet::new();
    for c in batch {
        let missing = c.deps().iter().any(|d| {
            held.contains(d) || (!ours.contains(d) && doc.get_change_by_hash(d).is_none())
        });
        if missing {
            held.insert(c.hash());
        }
    }
    held
}

/// Replaces hashes in a peer's heads that we will not take as they are — rejected changes, and
/// changes held until their dependencies arrive — by what they were built on, reduced to true
/// heads. A peer holding a rejected change then does not look forever behind (which would send
/// both sides into a sync loop), and for a held change we ask for its missing dependencies
/// instead of for the change the peer already sent.
/// The first refused change that `deps` build on, followed back to the change refused for its
/// own sake (the one a peer must drop): `None` when no dependency was refused.
pub(crate) fn refused_root(
    deps: &[ChangeHash],
    rejected: &HashMap<ChangeHash, Vec<ChangeHash>>,
) -> Option<ChangeHash> {
    let mut at = *deps.iter().find(|d| rejected.contains_key(d))?;
    // Each step goes to an older change, so this ends; the bound only guards a corrupt table.
    for _ in 0..rejected.len() {
        match rejected
            .get(&at)
            .and_then(|ds| ds.iter().find(|d| rejected.contains_key(d)))
        {
            Some(older) => at = *older,
            None => break,
        }
    }
    Some(at)
}

/// The reason given for a change refused because it builds on a refused one. Peers (the client
/// SDK's engine) read the hash from it: the change to drop is that one.
fn depends_reason(root: &ChangeHash) -> String {
    format!("depends on a rejected change: {root}")
}

pub fn sanitize_heads(
    heads: &[ChangeHash],
    substitute: impl Fn(&ChangeHash) -> Option<Vec<ChangeHash>>,
    doc: &Automerge,
) -> Option<Vec<ChangeHash>> {
    if !heads.iter().any(|h| substitute(h).is_some()) {
        return None;
    }
    let mut out: BTreeSet<ChangeHash> = BTreeSet::new();
    let mut seen: HashSet<ChangeHash> = HashSet::new();
    let mut stack: Vec<ChangeHash> = heads.to_vec();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        match substitute(&h) {
            Some(deps) => stack.extend(deps),
            None => {
                out.insert(h);
            }
        }
    }
    // Drop any hash that is an ancestor of another one.
    let mut ancestors: HashSet<ChangeHash> = HashSet::new();
    let mut walk: Vec<ChangeHash> = out
        .iter()
        .filter_map(|h| doc.get_change_by_hash(h))
        .flat_map(|c| c.deps().to_vec())
        .collect();
    while let Some(h) = walk.pop() {
        if !ancestors.insert(h) {
            continue;
        }
        if let Some(c) = doc.get_change_by_hash(&h) {
            walk.extend(c.deps().iter().copied());
        }
    }
    Some(out.into_iter().filter(|h| !ancestors.contains(h)).collect())
}

/// The first bytes of every automerge storage chunk.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Storage chunk types (automerge's binary format): a whole document, a change, a compressed change.
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;

/// Splits a run of concatenated storage chunks at their boundaries (each is magic, checksum, type,
/// LEB128 length, data), returning each chunk's type and bytes. A v2 sync message carries all its
/// changes as one such run.
fn split_chunks(mut run: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let bad = |why: &str| format!("undecodable changes: {why}");
    let mut out = Vec::new();
    while !run.is_empty() {
        if !run.starts_with(&AUTOMERGE_MAGIC) {
            return Err(bad("not an automerge chunk"));
        }
        // Magic and checksum, then the type and the data's length.
        let kind = *run.get(8).ok_or_else(|| bad("truncated chunk header"))?;
        if !matches!(kind, CHUNK_DOCUMENT | CHUNK_CHANGE | CHUNK_COMPRESSED) {
            return Err(bad(&format!("unknown chunk type {kind}")));
        }
        let mut rest = &run[9..];
        let len = leb128_u32(&mut rest).ok_or_else(|| bad("bad chunk length"))?;
        let header = run.len() - rest.len();
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| header.checked_add(l))
            .filter(|e| *e <= run.len())
            .ok_or_else(|| bad("chunk longer than the message"))?;
        out.push((kind, &run[..end]));
        run = &run[end..];
    }
    Ok(out)
}

/// Parses the `changes` of a sync message into every change it carries: v1 messages hold one
/// change chunk each; v2 messages hold one run of concatenated change chunks, or a whole document.
/// Changes whose dependencies the server lacks are returned too, for the gate to hold until they
/// arrive: dropping them here would leave the peer believing it sent them (automerge never sends a
/// change twice on one connection), and the two sides asking each other for ever.
pub fn parse_chunks<'a>(
    base: &Automerge,
    chunks: impl Iterator<Item = &'a [u8]>,
) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    for run in chunks {
        for (kind, chunk) in split_chunks(run)? {
            if kind == CHUNK_DOCUMENT {
                // A document chunk holds its whole history: read on top of `base`, only what
                // `base` lacks is new, and every dependency is in one or the other.
                let mut doc = base.clone();
                doc.load_incremental(chunk)
                    .map_err(|e| format!("undecodable changes: {e}"))?;
                out.extend(doc.get_changes(&base.get_heads()));
            } else {
                out.push(
                    Change::from_bytes(chunk.to_vec())
                        .map_err(|e| format!("undecodable changes: {e}"))?,
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use automerge::transaction::Transactable;
    use crdt_core::schema::{apply_edits, Edit, NewDocument, NewProposal};
    use crdt_core::{DistrictScope, Role, Ubigeo};

    /// The whole quarantine, through the same index the review API reads.
    fn everything(store: &MemoryStore) -> Vec<QuarantineEntry> {
        let all = QuarantineScope::District(None);
        Gate::quarantine_page(store, &all, None, &|_| true, 0, usize::MAX)
            .unwrap()
            .entries
    }

    fn user(id: &str, role: Role) -> AuthUser {
        AuthUser {
            user: UserId::new(id).unwrap(),
            name: id.into(),
            roles: [role].into_iter().collect(),
            district: DistrictScope::One(Ubigeo::COMAS),
            exp: u64::MAX,
        }
    }

    fn proposal(by: &str, actor: &ActorId) -> Automerge {
        NewProposal {
            district: Ubigeo::COMAS,
            process_year: 2027,
            title: "Veredas".into(),
            description: "Tramo 1".into(),
            zone: "Collique".into(),
            category: "vías y veredas".into(),
            beneficiaries: 10,
            estimated_cost: 100,
            cofinancing: 0,
            created_by: UserId::new(by).unwrap(),
            coauthors: vec![],
        }
        .create(Some(actor.clone()), 1)
    }

    #[test]
    fn allowed_batch_binds_actor_and_forged_actor_is_quarantined() {
        let store = MemoryStore::new();
        let gate = Gate::new();
        let id = DocumentId::random();
        let ana_actor = ActorId::random();
        let created = proposal("ana", &ana_actor);
        let mut rejected = HashMap::new();
        let ana = user("ana", Role::Leader);
        let a = gate
            .admit(
                &store,
                &id,
                None,
                &Automerge::new(),
                &ana,
                created.get_changes(&[]),
                &mut rejected,
                true,
            )
            .unwrap();
        assert_eq!(a.accepted, 1);
        let doc = a.doc.unwrap();
        assert_eq!(
            gate.binding(&store, &ana_actor).unwrap().unwrap().as_str(),
            "ana"
        );

        // Beto writes with Ana's actor: rejected and quarantined.
        let mut forged = doc.fork().with_actor(ana_actor.clone());
        apply_edits(
            &mut forged,
            &[Edit::AddSupporter {
                user: UserId::new("beto").unwrap(),
                at: 2,
            }],
            "x",
            2,
        )
        .unwrap();
        let beto = user("beto", Role::Leader);
        let new = forged.get_changes(&doc.get_heads());
        let b = gate
            .admit(&store, &id, None, &doc, &beto, new, &mut rejected, true)
            .unwrap();
        assert_eq!(b.accepted, 0);
        assert!(b.rejected[0].1.contains("another user"));
        let q = everything(&store);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].user, "beto");
        assert_eq!(Gate::rejected_changes(&store, &id).unwrap().len(), 1);
    }

    #[test]
    fn every_change_at_a_reserved_index_id_is_quarantined() {
        let store = MemoryStore::new();
        let gate = Gate::new();
        let mut rejected = HashMap::new();
        let ana = user("ana", Role::Leader);
        // A valid Comas proposal, planted at Ate's 2028 index id, and at Comas's own.
        for id in [
            DocumentId::index_for(Ubigeo::ATE, 2028),
            DocumentId::index_for(Ubigeo::COMAS, 2027),
        ] {
            let planted = proposal("ana", &ActorId::random());
            let a = gate
                .admit(
                    &store,
                    &id,
                    Some("150110".into()),
                    &Automerge::new(),
                    &ana,
                    planted.get_changes(&[]),
                    &mut rejected,
                    true,
                )
                .unwrap();
            assert_eq!(a.accepted, 0);
            assert!(a.doc.is_none() && a.unchecked.is_empty());
            assert!(
                a.rejected[0].1.contains("reserved for the index"),
                "{:?}",
                a.rejected
            );
        }
        assert_eq!(everything(&store).len(), 2);
        // The same document at an ordinary id is allowed.
        let ok = gate
            .admit(
                &store,
                &DocumentId::random(),
                None,
                &Automerge::new(),
                &ana,
                proposal("ana", &ActorId::random()).get_changes(&[]),
                &mut rejected,
                true,
            )
            .unwrap();
        assert_eq!(ok.accepted, 1);
    }

    #[test]
    fn sanitized_heads_replace_rejected_changes_by_their_accepted_base() {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "a", 1).unwrap();
        tx.commit();
        let base = doc.get_heads();
        let mut peer = doc.fork();
        let mut tx = peer.transaction();
        tx.put(automerge::ROOT, "b", 2).unwrap();
        tx.commit();
        let bad = peer.get_heads()[0];
        let mut rejected = HashMap::new();
        rejected.insert(bad, base.clone());
        let sub = |h: &ChangeHash| rejected.get(h).cloned();
        assert_eq!(sanitize_heads(&[bad], sub, &doc), Some(base.clone()));
        // Heads without rejected changes are left alone.
        assert_eq!(sanitize_heads(&base, sub, &doc), None);
        // A rejected change on top of an accepted sibling collapses to true heads only.
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "c", 3).unwrap();
        tx.commit();
        let newer = doc.get_heads();
        let cleaned = sanitize_heads(&[bad, newer[0]], sub, &doc).unwrap();
        assert_eq!(cleaned, newer);
    }

    /// A document and `n` changes made on a fork of it, in order.
    fn base_and_later(n: i64) -> (Automerge, Automerge) {
        let mut base = Automerge::new();
        let mut tx = base.transaction();
        tx.put(automerge::ROOT, "a", 1).unwrap();
        tx.commit();
        let mut peer = base.fork();
        for i in 0..n {
            let mut tx = peer.transaction();
            tx.put(automerge::ROOT, "b", i).unwrap();
            tx.commit();
        }
        (base, peer)
    }

    #[test]
    fn a_run_of_change_chunks_is_parsed_into_every_change() {
        let (base, peer) = base_and_later(3);
        // What a v2 sync message carries: the changes after `base`, concatenated in one chunk.
        let run = peer.save_after(&base.get_heads());
        assert!(Change::from_bytes(run.clone()).is_err());
        let parsed = parse_chunks(&base, std::iter::once(&run[..])).unwrap();
        assert_eq!(parsed.len(), 3);
        assert!(parse_chunks(&base, std::iter::once(&b"garbage"[..])).is_err());
        // Cut short, or with a byte flipped: refused, not half read.
        assert!(parse_chunks(&base, std::iter::once(&run[..run.len() - 1])).is_err());
        let mut flipped = run.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(parse_chunks(&base, std::iter::once(&flipped[..])).is_err());
    }

    #[test]
    fn changes_whose_parents_are_missing_are_parsed_not_dropped() {
        // The peer left out the first change after `base` (its hash was a false positive in our
        // Bloom filter) and sent the rest as one run: every one of them must reach the gate,
        // which holds them until the first arrives. Dropped here, the peer would never send them
        // again on this connection (it remembers them as sent) and the sync would loop for ever.
        let (base, peer) = base_and_later(4);
        let changes = peer.get_changes(&base.get_heads());
        let mut run = Vec::new();
        for c in &changes[1..] {
            run.extend_from_slice(c.raw_bytes());
        }
        let parsed = parse_chunks(&base, std::iter::once(&run[..])).unwrap();
        let hashes: Vec<ChangeHash> = parsed.iter().map(Change::hash).collect();
        let expected: Vec<ChangeHash> = changes[1..].iter().map(Change::hash).collect();
        assert_eq!(hashes, expected);
    }

    #[test]
    fn a_whole_document_chunk_yields_what_the_base_lacks() {
        let (base, peer) = base_and_later(2);
        let parsed = parse_chunks(&base, std::iter::once(&peer.save()[..])).unwrap();
        assert_eq!(parsed.len(), 2);
        let fresh = parse_chunks(&Automerge::new(), std::iter::once(&peer.save()[..])).unwrap();
        assert_eq!(fresh.len(), 3);
    }

    /// Ana's proposal and `n` later edits of hers, plus one change she may not make (setting
    /// the status to `prioritized`), concurrent with the edits.
    fn edits_and_one_denied(n: usize) -> (Automerge, Vec<Change>, Change) {
        let actor = ActorId::random();
        let base = proposal("ana", &actor);
        let mut doc = base.fork().with_actor(actor);
        for i in 0..n {
            let edit = Edit::SetScalar {
                field: "beneficiaries".into(),
                value: automerge::ScalarValue::Int(20 + i as i64),
            };
            apply_edits(&mut doc, &[edit], "edit", 2 + i as i64).unwrap();
        }
        let mut other = base.fork().with_actor(ActorId::random());
        apply_edits(
            &mut other,
            &[Edit::SetProposalStatus(
                crdt_core::schema::ProposalStatus::Prioritized,
            )],
            "x",
            3,
        )
        .unwrap();
        let denied = other.get_changes(&base.get_heads()).remove(0);
        (base, doc.get_changes(&proposal_heads(&doc, n)), denied)
    }

    fn proposal_heads(doc: &Automerge, n: usize) -> Vec<ChangeHash> {
        // The creation change is the first; the n edits follow it.
        let all = doc.get_changes(&[]);
        vec![all[all.len() - n - 1].hash()]
    }

    #[test]
    fn one_denied_change_among_many_is_refused_alone_and_the_rest_lands() {
        let (base, edits, denied) = edits_and_one_denied(300);
        let mut batch = edits.clone();
        batch.insert(150, denied.clone());
        let store = MemoryStore::new();
        let gate = Gate::new();
        let mut rejected = HashMap::new();
        let a = gate
            .admit(
                &store,
                &DocumentId::random(),
                None,
                &base,
                &user("ana", Role::Leader),
                batch,
                &mut rejected,
                true,
            )
            .unwrap();
        assert_eq!(a.accepted, 300);
        assert_eq!(a.rejected.len(), 1);
        assert_eq!(a.rejected[0].0, denied.hash());
        let doc = a.doc.unwrap();
        assert!(edits
            .iter()
            .all(|c| doc.get_change_by_hash(&c.hash()).is_some()));
        assert!(doc.get_change_by_hash(&denied.hash()).is_none());
    }

    #[test]
    fn what_builds_on_a_denied_change_is_refused_and_what_lacks_parents_is_held() {
        let (base, _, denied) = edits_and_one_denied(0);
        // Two changes on top of the denied one, and a change whose parent is not sent.
        let mut on_top = base.fork().with_actor(ActorId::random());
        on_top.apply_changes([denied.clone()]).unwrap();
        let mut f = on_top.fork().with_actor(ActorId::random());
        for i in 0..2 {
            let edit = Edit::SetScalar {
                field: "beneficiaries".into(),
                value: automerge::ScalarValue::Int(40 + i),
            };
            apply_edits(&mut f, &[edit], "x", 10 + i).unwrap();
        }
        let built = f.get_changes(&on_top.get_heads());
        let mut g = base.fork().with_actor(ActorId::random());
        for i in 0..2 {
            let edit = Edit::SetScalar {
                field: "beneficiaries".into(),
                value: automerge::ScalarValue::Int(60 + i),
            };
            apply_edits(&mut g, &[edit], "x", 20 + i).unwrap();
        }
        let orphan = g.get_changes(&base.get_heads()).remove(1);
        let mut batch = vec![denied.clone(), orphan.clone()];
        batch.extend(built.clone());
        let gate = Gate::new();
        let a = gate
            .admit(
                &MemoryStore::new(),
                &DocumentId::random(),
                None,
                &base,
                &user("ana", Role::Leader),
                batch,
                &mut HashMap::new(),
                true,
            )
            .unwrap();
        assert_eq!(a.accepted, 0);
        assert_eq!(a.rejected.len(), 3, "{:?}", a.rejected);
        assert!(a.rejected[1..]
            .iter()
            .all(|(_, r)| r.contains(&format!("depends on a rejected change: {}", denied.hash()))));
        assert_eq!(a.held.len(), 1);
        assert_eq!(a.held[0].hash(), orphan.hash());
    }

    #[test]
    fn refused_changes_beyond_the_per_user_limit_are_not_kept() {
        let store = MemoryStore::new();
        let gate = Gate::with_limits(100, 2);
        let (base, _, _) = edits_and_one_denied(0);
        let ana = user("ana", Role::Leader);
        let mut rejected = HashMap::new();
        let mut hashes = Vec::new();
        for t in 0..3 {
            let mut f = base.fork().with_actor(ActorId::random());
            apply_edits(
                &mut f,
                &[Edit::SetProposalStatus(
                    crdt_core::schema::ProposalStatus::Prioritized,
                )],
                "x",
                100 + t,
            )
            .unwrap();
            let c = f.get_changes(&base.get_heads()).remove(0);
            hashes.push(c.hash());
            let a = gate
                .admit(
                    &store,
                    &DocumentId::random(),
                    None,
                    &base,
                    &ana,
                    vec![c],
                    &mut rejected,
                    true,
                )
                .unwrap();
            assert_eq!(a.accepted, 0);
            if t < 2 {
                assert_eq!(a.rejected.len(), 1);
            } else {
                assert!(a.rejected.is_empty());
                assert_eq!(a.unrecorded, vec![hashes[2]]);
            }
        }
        assert_eq!(everything(&store).len(), 2);
        assert_eq!(Gate::quarantined_count(&store, &ana.user).unwrap(), 2);
        assert!(!rejected.contains_key(&hashes[2]));
        // Another user has their own allowance.
        assert_eq!(
            Gate::quarantined_count(&store, &UserId::new("beto").unwrap()).unwrap(),
            0
        );
    }

    #[test]
    fn the_binding_cache_keeps_at_most_its_capacity_and_the_store_keeps_all() {
        let store = MemoryStore::new();
        let gate = Gate::with_limits(100, 10);
        let ana = UserId::new("ana").unwrap();
        let actors: Vec<ActorId> = (0..1_000).map(|_| ActorId::random()).collect();
        for a in &actors {
            gate.bind(&store, a, &ana).unwrap();
            assert!(gate.cached_bindings() <= 100);
        }
        // Every binding is still found (from the store when not cached).
        for a in &actors {
            assert_eq!(gate.binding(&store, a).unwrap(), Some(ana.clone()));
            assert!(gate.cached_bindings() <= 100);
        }
    }

    #[test]
    fn causal_order_puts_dependencies_first() {
        let mut doc = Automerge::new();
        for i in 0..5 {
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "k", i).unwrap();
            tx.commit();
        }
        let mut changes = doc.get_changes(&[]);
        changes.reverse();
        let ordered = causal_order(changes);
        let mut seen = HashSet::new();
        for c in &ordered {
            assert!(c.deps().iter().all(|d| seen.contains(d)));
            seen.insert(c.hash());
        }
    }
}
