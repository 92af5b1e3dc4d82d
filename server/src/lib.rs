//! The Minka server: automerge-repo sync over WebSocket, JWT auth, a per-document hub that
//! batches, persists durably in sled and fans out, and the HTTP endpoints.
//!
//! [`run`] takes its listener from the caller (tests bind `127.0.0.1:0`) and a shutdown future;
//! on shutdown it stops accepting, closes connections, lets every document finish its batch,
//! and makes the store durable before returning.

pub mod api;
pub mod auth;
pub mod conn;
pub mod durability;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod held;
pub mod http;
pub mod hub;
pub mod metrics;
#[cfg(test)]
mod relay_tests;
pub mod review;
pub mod store;
pub mod sync_limits;
pub mod tools;
pub mod ui;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use automerge::ActorId;
use tokio_util::sync::CancellationToken;

use crate::auth::{JwtKeys, JwtSecret};
use crate::conn::{ConnConfig, PeerRegistry};
use crate::durability::Durability;
use crate::hub::{Hub, HubConfig};
use crate::metrics::Metrics;
use crate::store::{DocStore, StoreError, StoreSpec};

/// Everything `minka serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// The document store (`--store`; sled in `data_dir` by default).
    pub store: StoreSpec,
    pub process_year: u16,
    pub jwt_secret: JwtSecret,
    pub max_loaded_docs: usize,
    pub max_waiting_docs: usize,
    pub max_frame_bytes: usize,
    pub max_docs_per_connection: usize,
    pub max_connections_per_user: usize,
    pub ephemeral_per_second: u32,
    pub ephemeral_burst: u32,
    pub sync_per_second: u32,
    pub sync_burst: u32,
    pub held: crate::held::HeldLimits,
    pub max_quarantine_per_user: usize,
    pub send_queue: usize,
    pub send_queue_bytes: usize,
    pub heartbeat: Duration,
    pub workers: usize,
    /// Skip the write gate (the benchmark measures its cost with it). Honoured only in builds
    /// with the `bench-unchecked` feature; a default build always judges every change.
    pub skip_write_checks: bool,
}

/// Shared state of the HTTP and WebSocket handlers.
pub struct AppState {
    pub hub: Hub,
    pub keys: JwtKeys,
    pub metrics: Arc<Metrics>,
    pub conn: ConnConfig,
    pub registry: Arc<PeerRegistry>,
    pub shutdown: CancellationToken,
    pub ready: AtomicBool,
    pub store: Arc<dyn DocStore>,
    /// HTTP reads of the store's side tables wait on it, so they show only durable state.
    pub durability: Durability,
    pub process_year: u16,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store could not write or make writes durable (disk full, read-only or I/O error; see the log); stopped without acknowledging them")]
    Durability,
}

/// The user the server's own actors are bound to when several nodes share a store.
pub const SERVER_USER: &str = "minka-server";
/// Its name on the review pages.
pub const SERVER_NAME: &str = "Servidor Minka";

/// The server's identity in the store: a storage id (announced to peers) and the actor id it
/// writes index documents with. Created once, then stable across restarts.
pub fn server_identity(store: &dyn DocStore) -> Result<(String, ActorId), StoreError> {
    let storage_id = match store.meta_get("server", b"storage-id")? {
        Some(v) => String::from_utf8_lossy(&v).into_owned(),
        None => {
            let id = hex::encode(rand::random::<[u8; 16]>());
            store.meta_put("server", b"storage-id", id.as_bytes())?;
            id
        }
    };
    let actor = if store.shared() {
        // Several nodes write the same documents: two writers under one actor would give two
        // different changes the same (actor, seq). Each node writes with an actor of its own,
        // bound to the server user so that no phone can claim it and reviewers see "the server".
        let a = ActorId::random();
        let server_user = crdt_core::UserId::new(SERVER_USER.to_string()).expect("valid user id");
        store.meta_put_if_absent(crate::gate::ACTORS, a.to_bytes(), SERVER_USER.as_bytes())?;
        crate::gate::Gate::remember_name(store, &server_user, SERVER_NAME)?;
        a
    } else {
        match store.meta_get("server", b"actor")? {
            Some(v) => ActorId::from(v),
            None => {
                let a = ActorId::random();
                store.meta_put("server", b"actor", a.to_bytes())?;
                a
            }
        }
    };
    store.sync()?;
    Ok((storage_id, actor))
}

/// Runs the server on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn run(
    config: ServeConfig,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let store: Arc<dyn DocStore> = crate::store::open(&config.store)?;
    tracing::info!(store = %config.store, "store opened");
    let (storage_id, actor) = server_identity(store.as_ref())?;
    let metrics = Arc::new(Metrics::default());
    let durability = Durability::start(store.clone(), metrics.clone());
    let fatal = durability.fatal();
    let hub = Hub::new(
        store.clone(),
        durability.clone(),
        metrics.clone(),
        HubConfig {
            server_peer_id: format!("minka-{}", &storage_id[..12]),
            max_loaded_docs: config.max_loaded_docs,
            max_waiting_per_conn: config.max_waiting_docs,
            check_writes: !(cfg!(feature = "bench-unchecked") && config.skip_write_checks),
            held: config.held.clone(),
            max_quarantine_per_user: config.max_quarantine_per_user,
            ..HubConfig::default()
        },
        actor,
        tokio::runtime::Handle::current(),
    );
    hub.repair_index()?;
    hub.follow_store();
    crate::gate::Gate::index_quarantine(store.as_ref())?;
    let state = web::Data::new(AppState {
        hub: hub.clone(),
        keys: JwtKeys::new(&config.jwt_secret),
        metrics,
        conn: ConnConfig {
            max_frame_bytes: config.max_frame_bytes,
            max_docs: config.max_docs_per_connection,
            max_connections_per_user: config.max_connections_per_user,
            ephemeral_per_second: config.ephemeral_per_second,
            ephemeral_burst: config.ephemeral_burst,
            sync_per_second: config.sync_per_second,
            sync_burst: config.sync_burst,
            send_queue: config.send_queue,
            send_queue_bytes: config.send_queue_bytes,
            heartbeat: config.heartbeat,
            storage_id,
        },
        registry: Arc::new(PeerRegistry::default()),
        shutdown: CancellationToken::new(),
        ready: AtomicBool::new(true),
        store: store.clone(),
        durability,
        process_year: config.process_year,
    });
    let keys = web::Data::new(state.keys.clone());
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(keys.clone())
            .configure(api::configure)
            .configure(ui::configure)
            .route("/sync", web::get().to(conn::sync_ws))
    })
    .workers(config.workers.max(1))
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let server_task = tokio::spawn(server);
    tracing::info!(data_dir = %config.data_dir.display(), "minka is serving");

    let failed = tokio::select! {
        _ = shutdown => false,
        _ = fatal.cancelled() => true,
    };
    if failed {
        tracing::error!("the store cannot write (a write or fsync failed): closing every connection and exiting");
    } else {
        tracing::info!("shutting down: closing connections and flushing documents");
    }
    state.ready.store(false, Ordering::Release);
    state.shutdown.cancel();
    handle.stop(true).await;
    let _ = server_task.await;
    hub.shutdown().await;
    if failed || fatal.is_cancelled() {
        return Err(ServeError::Durability);
    }
    store.sync()?;
    tracing::info!("shutdown complete");
    Ok(())
}
pub mod gate;
