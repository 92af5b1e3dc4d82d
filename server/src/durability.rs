//! Group commit: callers that have written to the store wait for one shared `sync` (flush + fsync).
//!
//! A dedicated thread takes every waiter that arrived, runs one [`DocStore::sync`], and wakes them all,
//! so a burst of batches from many documents costs one fsync, not one each. A waiter registered after
//! its write is covered by the next sync that starts after it registered.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::{DocStore, StoreError};

type Waiter = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// Handle to the group-commit thread.
#[derive(Clone)]
pub struct Durability {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl Durability {
    /// Starts the group-commit thread; it ends when the last handle is dropped.
    pub fn start(store: Arc<dyn DocStore>, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        std::thread::Builder::new()
            .name("minka-fsync".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut waiters = vec![first];
                    while let Ok(w) = rx.try_recv() {
                        waiters.push(w);
                    }
                    let started = Instant::now();
                    let result = store.sync().map_err(Arc::new);
                    metrics
                        .fsync_seconds
                        .observe(started.elapsed().as_secs_f64());
                    metrics.fsync_group_size.observe(waiters.len() as f64);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "store sync failed");
                    }
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .expect("spawn fsync thread");
        Self { tx }
    }

    /// Resolves once every write made before this call is durable.
    pub async fn wait(&self) -> Result<(), Arc<StoreError>> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(tx).is_err() {
            return Err(Arc::new(StoreError::Io(std::io::Error::other(
                "durability thread stopped",
            ))));
        }
        rx.await.unwrap_or_else(|_| {
            Err(Arc::new(StoreError::Io(std::io::Error::other(
                "durability thread stopped",
            ))))
        })
    }
}
