//! Group commit: callers that have written to the store wait for one shared `sync` (flush + fsync).
//!
//! A dedicated thread takes every waiter that arrived, runs one [`DocStore::sync`], and wakes them all,
//! so a burst of batches from many documents costs one fsync, not one each. A waiter registered after
//! its write is covered by the next sync that starts after it registered.
//!
//! A failed sync is fatal to acknowledgement: after one, the kernel may have dropped dirty pages
//! that a later, successful fsync would not bring back, so nothing written since the last good
//! sync can be called durable. Every later wait fails at once, and [`Durability::fatal`] fires so
//! the server stops and exits non-zero (a supervisor restarts it; sled recovers from its log).
//! A failed store *write* ([`Durability::fail`], e.g. disk full) is as final: sled 0.34 keeps the
//! first I/O error and refuses every later operation, so the process cannot recover by itself
//! even when space returns; a restart does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{DocStore, StoreError};

type Waiter = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// Handle to the group-commit thread.
#[derive(Clone)]
pub struct Durability {
    tx: mpsc::UnboundedSender<Waiter>,
    fatal: CancellationToken,
    /// A store write that failed outside a sync (see [`Durability::fail`]).
    broken: Arc<OnceLock<Arc<StoreError>>>,
}

fn stopped() -> Arc<StoreError> {
    Arc::new(StoreError::Io(std::io::Error::other(
        "durability thread stopped",
    )))
}

impl Durability {
    /// Starts the group-commit thread; it ends when the last handle is dropped.
    pub fn start(store: Arc<dyn DocStore>, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let fatal = CancellationToken::new();
        let on_failure = fatal.clone();
        let broken: Arc<OnceLock<Arc<StoreError>>> = Arc::default();
        let write_failed = broken.clone();
        std::thread::Builder::new()
            .name("minka-fsync".into())
            .spawn(move || {
                let failed = AtomicBool::new(false);
                let mut first_error: Option<Arc<StoreError>> = None;
                while let Some(first) = rx.blocking_recv() {
                    let mut waiters = vec![first];
                    while let Ok(w) = rx.try_recv() {
                        waiters.push(w);
                    }
                    let result = match first_error.as_ref().or(write_failed.get()) {
                        // Never acknowledge again after a failed sync or write.
                        Some(e) => Err(e.clone()),
                        None => {
                            let started = Instant::now();
                            let result = store.sync().map_err(Arc::new);
                            metrics
                                .fsync_seconds
                                .observe(started.elapsed().as_secs_f64());
                            metrics.fsync_group_size.observe(waiters.len() as f64);
                            result
                        }
                    };
                    if let Err(e) = &result {
                        if !failed.swap(true, Ordering::AcqRel) {
                            metrics.fsync_failures.add(1);
                            tracing::error!(error = %e, "store sync failed: acknowledging nothing more; the server stops and must be restarted");
                            first_error = Some(e.clone());
                            on_failure.cancel();
                        }
                    }
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .expect("spawn fsync thread");
        Self { tx, fatal, broken }
    }

    /// A store write failed (`what` says which and why): from now on nothing is acknowledged and
    /// the fatal token fires, as after a failed sync.
    pub fn fail(&self, what: String) {
        let e = Arc::new(StoreError::Io(std::io::Error::other(what)));
        if self.broken.set(e.clone()).is_ok() {
            tracing::error!(error = %e, "store write failed: acknowledging nothing more; the server stops and must be restarted");
            self.fatal.cancel();
        }
    }

    /// Resolves once every write made before this call is durable.
    pub async fn wait(&self) -> Result<(), Arc<StoreError>> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(tx).is_err() {
            return Err(stopped());
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Cancelled when a sync has failed: the server must stop.
    pub fn fatal(&self) -> CancellationToken {
        self.fatal.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Chunk, ChunkKey, MemoryStore, StoreResult};
    use crdt_core::DocumentId;

    /// A memory store whose `sync` fails while `fail` is set.
    struct Flaky {
        inner: MemoryStore,
        fail: AtomicBool,
    }

    impl DocStore for Flaky {
        fn append(&self, doc: &DocumentId, bytes: &[u8]) -> StoreResult<ChunkKey> {
            self.inner.append(doc, bytes)
        }
        fn load(&self, doc: &DocumentId) -> StoreResult<Vec<Chunk>> {
            self.inner.load(doc)
        }
        fn compact(&self, d: &DocumentId, s: &[u8], r: &[ChunkKey]) -> StoreResult<ChunkKey> {
            self.inner.compact(d, s, r)
        }
        fn list(&self) -> StoreResult<Vec<DocumentId>> {
            self.inner.list()
        }
        fn sync(&self) -> StoreResult<()> {
            if self.fail.load(Ordering::SeqCst) {
                Err(StoreError::Io(std::io::Error::other("EIO on fsync")))
            } else {
                Ok(())
            }
        }
        fn meta_get(&self, t: &str, k: &[u8]) -> StoreResult<Option<Vec<u8>>> {
            self.inner.meta_get(t, k)
        }
        fn meta_put(&self, t: &str, k: &[u8], v: &[u8]) -> StoreResult<()> {
            self.inner.meta_put(t, k, v)
        }
        fn meta_delete(&self, t: &str, k: &[u8]) -> StoreResult<()> {
            self.inner.meta_delete(t, k)
        }
        fn meta_scan(&self, t: &str, p: &[u8]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
            self.inner.meta_scan(t, p)
        }
        fn meta_tables(&self) -> StoreResult<Vec<String>> {
            self.inner.meta_tables()
        }
    }

    #[tokio::test]
    async fn a_failed_sync_is_final_and_fires_the_fatal_token() {
        let store = Arc::new(Flaky {
            inner: MemoryStore::new(),
            fail: AtomicBool::new(false),
        });
        let metrics = Arc::new(Metrics::default());
        let d = Durability::start(store.clone(), metrics.clone());
        let fatal = d.fatal();
        d.wait().await.expect("a good sync acknowledges");
        assert!(!fatal.is_cancelled());

        store.fail.store(true, Ordering::SeqCst);
        assert!(d.wait().await.is_err());
        assert!(fatal.is_cancelled());

        // The disk "recovers": a later fsync would succeed, but nothing is acknowledged any more.
        store.fail.store(false, Ordering::SeqCst);
        for _ in 0..3 {
            assert!(d.wait().await.is_err());
        }
        assert_eq!(metrics.fsync_failures.get(), 1);
    }

    #[tokio::test]
    async fn a_failed_write_is_final_too() {
        let d = Durability::start(Arc::new(MemoryStore::new()), Arc::new(Metrics::default()));
        d.wait().await.expect("a good sync acknowledges");
        d.fail("cannot write chunk: No space left on device".into());
        assert!(d.fatal().is_cancelled());
        let e = d
            .wait()
            .await
            .expect_err("nothing is acknowledged after a failed write");
        assert!(e.to_string().contains("No space left"), "{e}");
    }
}
