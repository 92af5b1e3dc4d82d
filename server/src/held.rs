//! Changes held until their dependencies arrive.
//!
//! A peer may send a change whose parents the server does not have yet (they are on another phone,
//! or in a later message). The document's task keeps such a change and judges it, as its sender's,
//! once the parents land. What a peer sends is not trusted, so what is held is bounded: by count
//! and bytes per document and per connection (across all its documents), for at most a time to
//! live, and only while its sender is connected (a phone that reconnects sends it again: nothing
//! held was ever acknowledged). Every change dropped is counted in `/metrics` by reason.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::{Automerge, Change, ChangeHash, ReadDoc};

use crate::hub::PeerHandle;
use crate::metrics::Metrics;

/// Bounds of what is held.
#[derive(Debug, Clone)]
pub struct HeldLimits {
    pub per_doc_changes: usize,
    pub per_doc_bytes: usize,
    pub per_peer_changes: usize,
    pub per_peer_bytes: usize,
    /// A change still waiting after this long is dropped.
    pub ttl: Duration,
}

impl Default for HeldLimits {
    fn default() -> Self {
        Self {
            per_doc_changes: 1_000,
            per_doc_bytes: 8 << 20,
            per_peer_changes: 1_000,
            per_peer_bytes: 8 << 20,
            ttl: Duration::from_secs(600),
        }
    }
}

/// What one connection has held, over all its documents.
#[derive(Default, Debug)]
pub struct PeerHeld {
    changes: AtomicUsize,
    bytes: AtomicUsize,
}

impl PeerHeld {
    pub fn changes(&self) -> usize {
        self.changes.load(Ordering::Relaxed)
    }

    /// Whether one more change of `bytes` fits in this connection's share.
    fn has_room(&self, bytes: usize, l: &HeldLimits) -> bool {
        self.changes() < l.per_peer_changes
            && self.bytes.load(Ordering::Relaxed) + bytes <= l.per_peer_bytes
    }

    fn add(&self, bytes: usize) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.changes.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Why a change was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeld {
    /// The document holds the most it may.
    DocumentFull,
    /// The sending connection holds the most it may.
    PeerFull,
}

pub struct HeldChange {
    pub change: Change,
    pub peer: PeerHandle,
    bytes: usize,
    since: Instant,
}

/// One document's held changes.
pub struct Held {
    map: HashMap<ChangeHash, HeldChange>,
    bytes: usize,
    limits: HeldLimits,
    metrics: Arc<Metrics>,
}

impl Held {
    pub fn new(limits: HeldLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            map: HashMap::new(),
            bytes: 0,
            limits,
            metrics,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get(&self, hash: &ChangeHash) -> Option<&HeldChange> {
        self.map.get(hash)
    }

    /// Holds `change` for `peer`, within the limits. A change already held for another connection
    /// is held for `peer` from now on (if its share allows): the one that sent it last is the one
    /// still waiting for it, and it will not send it again on this connection, so the change must
    /// not go when the earlier sender's connection closes.
    pub fn hold(&mut self, change: Change, peer: &PeerHandle) -> Result<(), NotHeld> {
        let hash = change.hash();
        let l = &self.limits;
        if let Some(h) = self.map.get_mut(&hash) {
            if h.peer.conn_id != peer.conn_id && peer.held.has_room(h.bytes, l) {
                h.peer.held.sub(h.bytes);
                peer.held.add(h.bytes);
                h.peer = peer.clone();
            }
            return Ok(());
        }
        let bytes = change.raw_bytes().len();
        let refused = if self.map.len() >= l.per_doc_changes || self.bytes + bytes > l.per_doc_bytes
        {
            Some(NotHeld::DocumentFull)
        } else if !peer.held.has_room(bytes, l) {
            Some(NotHeld::PeerFull)
        } else {
            None
        };
        if let Some(why) = refused {
            self.metrics.held_dropped_limit.add(1);
            return Err(why);
        }
        peer.held.add(bytes);
        self.metrics.held_changes.inc();
        self.bytes += bytes;
        self.map.insert(
            hash,
            HeldChange {
                change,
                peer: peer.clone(),
                bytes,
                since: Instant::now(),
            },
        );
        Ok(())
    }

    fn remove(&mut self, hash: &ChangeHash) -> Option<HeldChange> {
        let h = self.map.remove(hash)?;
        self.bytes -= h.bytes;
        h.peer.held.sub(h.bytes);
        self.metrics.held_changes.dec();
        Some(h)
    }

    /// Takes out every held change whose dependencies are all in `doc` now.
    pub fn take_ready(&mut self, doc: &Automerge) -> Vec<(Change, PeerHandle)> {
        let ready: Vec<ChangeHash> = self
            .map
            .iter()
            .filter(|(_, h)| {
                h.change
                    .deps()
                    .iter()
                    .all(|d| doc.get_change_by_hash(d).is_some())
            })
            .map(|(k, _)| *k)
            .collect();
        ready
            .iter()
            .filter_map(|k| self.remove(k))
            .map(|h| (h.change, h.peer))
            .collect()
    }

    /// Drops what a connection that closed had held here.
    pub fn drop_peer(&mut self, conn_id: u64) -> usize {
        let gone: Vec<ChangeHash> = self
            .map
            .iter()
            .filter(|(_, h)| h.peer.conn_id == conn_id)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.remove(k);
        }
        self.metrics.held_dropped_left.add(gone.len() as u64);
        gone.len()
    }

    /// Drops what has waited longer than the time to live; returns the connections whose changes
    /// were dropped (each still believes it sent them).
    pub fn expire(&mut self, now: Instant) -> HashSet<u64> {
        let ttl = self.limits.ttl;
        let old: Vec<ChangeHash> = self
            .map
            .iter()
            .filter(|(_, h)| now.duration_since(h.since) >= ttl)
            .map(|(k, _)| *k)
            .collect();
        self.metrics.held_dropped_expired.add(old.len() as u64);
        old.iter()
            .filter_map(|k| self.remove(k))
            .map(|h| h.peer.conn_id)
            .collect()
    }

    /// When the oldest held change expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.map.values().map(|h| h.since + self.limits.ttl).min()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let all: Vec<ChangeHash> = self.map.keys().copied().collect();
        for k in &all {
            self.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthUser;
    use crate::hub::Killer;
    use automerge::transaction::Transactable;
    use crdt_core::{DistrictScope, Role, Ubigeo, UserId};
    use tokio::sync::mpsc;

    fn peer(conn: u64) -> PeerHandle {
        let user = AuthUser {
            user: UserId::new("ana").unwrap(),
            name: "Ana".into(),
            roles: [Role::Leader].into_iter().collect(),
            district: DistrictScope::One(Ubigeo::COMAS),
            exp: u64::MAX,
        };
        let (tx, _rx) = mpsc::channel(1);
        PeerHandle::new(
            conn,
            format!("p{conn}"),
            Arc::new(user),
            tx,
            Arc::new(Killer::default()),
            Arc::new(Metrics::default()),
        )
    }

    /// `n` changes, each on top of the previous one, of `bytes` payload each; the first one's
    /// parent is not among them.
    fn chain(n: usize, bytes: usize) -> Vec<Change> {
        let mut doc = Automerge::new();
        for i in 0..=n {
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "k", "x".repeat(bytes) + &i.to_string())
                .unwrap();
            tx.commit();
        }
        doc.get_changes(&[]).split_off(1)
    }

    fn limits(changes: usize, bytes: usize) -> HeldLimits {
        HeldLimits {
            per_doc_changes: changes,
            per_doc_bytes: bytes,
            per_peer_changes: changes,
            per_peer_bytes: bytes,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_document_holds_at_most_its_count_and_bytes_and_counts_the_rest() {
        let metrics = Arc::new(Metrics::default());
        let mut held = Held::new(limits(3, 1 << 20), metrics.clone());
        let (a, b) = (peer(1), peer(2));
        let changes = chain(5, 10);
        for c in &changes[..3] {
            held.hold(c.clone(), &a).unwrap();
        }
        assert_eq!(
            held.hold(changes[3].clone(), &b),
            Err(NotHeld::DocumentFull)
        );
        assert_eq!(held.len(), 3);
        assert_eq!(metrics.held_changes.get(), 3);
        assert_eq!(metrics.held_dropped_limit.get(), 1);

        let mut by_bytes = Held::new(limits(100, 2_000), metrics.clone());
        let big = chain(3, 900);
        by_bytes.hold(big[0].clone(), &a).unwrap();
        by_bytes.hold(big[1].clone(), &b).unwrap();
        assert_eq!(
            by_bytes.hold(big[2].clone(), &b),
            Err(NotHeld::DocumentFull)
        );
    }

    #[test]
    fn a_connection_holds_at_most_its_share_over_all_its_documents() {
        let metrics = Arc::new(Metrics::default());
        let a = peer(1);
        let mut doc1 = Held::new(limits(4, 1 << 20), metrics.clone());
        let mut doc2 = Held::new(limits(4, 1 << 20), metrics.clone());
        let changes = chain(6, 10);
        doc1.hold(changes[0].clone(), &a).unwrap();
        doc1.hold(changes[1].clone(), &a).unwrap();
        doc2.hold(changes[2].clone(), &a).unwrap();
        doc2.hold(changes[3].clone(), &a).unwrap();
        // Both documents have room; the connection does not (per-peer limit 4 here).
        assert_eq!(doc2.hold(changes[4].clone(), &a), Err(NotHeld::PeerFull));
        assert_eq!(a.held.changes(), 4);
        // Another connection is not affected.
        doc2.hold(changes[4].clone(), &peer(2)).unwrap();
        // What the connection held is released when a document lets it go.
        assert_eq!(doc1.drop_peer(1), 2);
        assert_eq!(a.held.changes(), 2);
        assert_eq!(metrics.held_dropped_left.get(), 2);
        drop(doc2);
        assert_eq!(a.held.changes(), 0);
        assert_eq!(metrics.held_changes.get(), 0);
    }

    #[test]
    fn held_changes_expire_and_ready_ones_are_taken_out() {
        let metrics = Arc::new(Metrics::default());
        let mut held = Held::new(limits(10, 1 << 20), metrics.clone());
        let a = peer(1);
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "k", 1).unwrap();
        tx.commit();
        let mut fork = doc.fork();
        let mut tx = fork.transaction();
        tx.put(automerge::ROOT, "k", 2).unwrap();
        tx.commit();
        let child = fork.get_changes(&doc.get_heads()).remove(0);
        let orphan = chain(1, 5).remove(0);
        held.hold(child.clone(), &a).unwrap();
        held.hold(orphan, &a).unwrap();
        // The child's parent is in `doc`: it is ready; the orphan is not.
        let ready = held.take_ready(&doc);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0.hash(), child.hash());
        assert_eq!(held.len(), 1);
        let due = held.next_expiry().unwrap();
        assert!(held.expire(due - Duration::from_millis(1)).is_empty());
        assert_eq!(held.expire(due), HashSet::from([1]));
        assert!(held.is_empty());
        assert_eq!(metrics.held_dropped_expired.get(), 1);
        assert_eq!(a.held.changes(), 0);
    }

    #[test]
    fn a_change_sent_again_is_held_for_its_latest_sender() {
        // A phone's connection was cut while a change of its waited for its parent; the phone
        // sends it again on its new connection before the server has seen the old one close.
        // The change must outlive the old connection: the new one will not send it a third time.
        let metrics = Arc::new(Metrics::default());
        let mut held = Held::new(limits(10, 1 << 20), metrics.clone());
        let (old, new) = (peer(1), peer(2));
        let orphan = chain(1, 5).remove(0);
        held.hold(orphan.clone(), &old).unwrap();
        held.hold(orphan.clone(), &new).unwrap();
        assert_eq!((old.held.changes(), new.held.changes()), (0, 1));
        assert_eq!(held.drop_peer(1), 0);
        assert_eq!(held.len(), 1);
        assert_eq!(held.get(&orphan.hash()).unwrap().peer.conn_id, 2);
        assert_eq!(held.drop_peer(2), 1);
        assert_eq!(new.held.changes(), 0);
        assert_eq!(metrics.held_changes.get(), 0);
    }
}
