//! Reference peer for the Minka benchmark: a samod `Repo` serving the automerge-repo v1
//! protocol over WebSocket at `ws://127.0.0.1:PORT/`, storing documents on disk with samod's
//! tokio filesystem storage (the on-disk layout of automerge-repo-storage-nodefs).
//!
//! Configured as a sync server: every connected peer may read and write, and the server does
//! not announce documents to peers that did not ask (`ShareConfig::read_write().with_announce(false)`).
//!
//! Usage: `samod-peer-server [PORT] [DATA_DIR]` (or env `PORT`, `DATA_DIR`). Port 0 picks a free
//! one. Prints `listening on <port>` once ready.

use std::path::PathBuf;

use axum::extract::ws::WebSocketUpgrade;
use axum::routing::get;
use axum::Router;
use samod::storage::TokioFilesystemStorage;
use samod::{Repo, ShareConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .or_else(|| std::env::var("PORT").ok())
        .map(|p| p.parse().expect("PORT must be a number"))
        .unwrap_or(3030);
    let data_dir: PathBuf = args
        .next()
        .or_else(|| std::env::var("DATA_DIR").ok())
        .unwrap_or_else(|| ".samod-data".to_string())
        .into();
    std::fs::create_dir_all(&data_dir).expect("create data dir");

    let repo = Repo::build_tokio()
        .with_peer_id("samod-sync-server".into())
        .with_storage(TokioFilesystemStorage::new(&data_dir))
        .with_share_policy(ShareConfig::read_write().with_announce(false))
        .load()
        .await;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = repo
        .make_acceptor(format!("ws://{addr}/").parse().expect("url"))
        .expect("acceptor");

    let app = Router::new().route(
        "/",
        get(move |upgrade: WebSocketUpgrade| {
            let acceptor = acceptor.clone();
            async move {
                upgrade.on_upgrade(move |socket| async move {
                    // No authentication: trust the peer id the client claims in `join`.
                    if let Err(e) = acceptor.accept_axum(socket, None) {
                        eprintln!("accept failed: {e:?}");
                    }
                })
            }
        }),
    );

    println!("listening on {}", addr.port());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serve");
    repo.stop().await;
}
