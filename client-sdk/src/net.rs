//! The connection: one WebSocket at a time, reconnected with backoff, driven by the engine.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use automerge::ChangeHash;
use crdt_core::engine::{Backoff, EngineError, KeepaliveAction, Output};
use crdt_core::schema::Index;
use crdt_core::DocumentId;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::Connector;

use crate::client::{now_unix, DocMap, LocalDoc, Shared, State};
use crate::types::{ConnectionState, Event, Rejection};
use crate::Error;

/// Documents a client follows at most (local and listed by its indexes).
const MAX_DOCS: usize = 200_000;

/// Frames handled before one fsync of what they brought.
const FRAMES_PER_SYNC: usize = 256;

/// Largest frame accepted from the server.
const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// The running connection task: stop it, wait for its end.
#[derive(Clone)]
pub(crate) struct NetHandle {
    stop: Arc<watch::Sender<bool>>,
    done: watch::Receiver<bool>,
}

impl NetHandle {
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the task has ended (at once if it has).
    pub async fn join(&self) {
        let mut done = self.done.clone();
        while !*done.borrow_and_update() {
            if done.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn same(&self, other: &NetHandle) -> bool {
        Arc::ptr_eq(&self.stop, &other.stop)
    }
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    url: String,
    previous: Option<NetHandle>,
) -> Result<NetHandle, Error> {
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::InvalidInput("connect must be called inside a tokio runtime".into()))?;
    let (stop, stop_rx) = watch::channel(false);
    let (done_tx, done) = watch::channel(false);
    rt.spawn(async move {
        if let Some(p) = previous {
            p.join().await;
        }
        run(shared, url, stop_rx).await;
        let _ = done_tx.send(true);
    });
    Ok(NetHandle {
        stop: Arc::new(stop),
        done,
    })
}

enum End {
    Stopped,
    TokenChanged,
    Unauthorized(String),
    Failed(String),
}

async fn run(shared: Arc<Shared>, url: String, mut stop: watch::Receiver<bool>) {
    let mut backoff = shared.options.backoff.clone();
    let mut token_gen = shared.token_gen.subscribe();
    let mut network_gen = shared.network_gen.subscribe();
    loop {
        if *stop.borrow() {
            break;
        }
        let (token, refused) = {
            let st = shared.lock();
            (st.token.clone(), st.token_refused)
        };
        token_gen.borrow_and_update();
        let Some(token) = token.filter(|_| !refused) else {
            tokio::select! {
                _ = token_gen.changed() => continue,
                _ = stop.changed() => break,
            }
        };
        shared.set_connection(ConnectionState::Connecting);
        let end = session(
            &shared,
            &url,
            &token,
            &mut stop,
            &mut token_gen,
            &mut backoff,
        )
        .await;
        shared.lock().engine.disconnected();
        backoff.disconnected(Instant::now());
        match end {
            End::Stopped => break,
            End::TokenChanged => continue,
            End::Unauthorized(reason) => {
                tracing::warn!(%reason, "the server refused the token; waiting for a new one");
                shared.lock().token_refused = true;
                shared.set_connection(ConnectionState::NeedsToken { reason });
                continue;
            }
            End::Failed(reason) => tracing::info!(%reason, "connection ended"),
        }
        // Only a network change from now on cuts the wait short.
        network_gen.borrow_and_update();
        let delay = backoff.next_delay(rand::random::<f64>());
        shared.set_connection(ConnectionState::Retrying {
            attempt: backoff.attempt(),
            in_: delay,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = network_gen.changed() => {}
            _ = token_gen.changed() => {}
            _ = stop.changed() => break,
        }
    }
    shared.lock().engine.disconnected();
    shared.set_connection(ConnectionState::Offline);
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

async fn session(
    shared: &Shared,
    url: &str,
    token: &str,
    stop: &mut watch::Receiver<bool>,
    token_gen: &mut watch::Receiver<u64>,
    backoff: &mut Backoff,
) -> End {
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return End::Failed(format!("bad server URL {url}: {e}")),
    };
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return End::Unauthorized("the token has characters a header cannot carry".into());
    };
    request.headers_mut().insert("authorization", bearer);
    let config = WebSocketConfig {
        max_message_size: Some(MAX_FRAME_BYTES),
        max_frame_size: Some(MAX_FRAME_BYTES),
        ..WebSocketConfig::default()
    };
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        false,
        Some(Connector::Rustls(tls_config())),
    );
    let started = Instant::now();
    let ws = tokio::select! {
        r = tokio::time::timeout(shared.options.connect_timeout, connecting) => match r {
            Err(_) => return End::Failed("connecting timed out".into()),
            Ok(Err(WsError::Http(resp))) if resp.status() == StatusCode::UNAUTHORIZED => {
                let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                return End::Unauthorized(format!("401 from the server: {}", body.trim()));
            }
            Ok(Err(e)) => return End::Failed(format!("connecting: {e}")),
            Ok(Ok((ws, _))) => ws,
        },
        _ = stop.changed() => return End::Stopped,
        _ = token_gen.changed() => return End::TokenChanged,
    };
    let (mut sink, mut stream) = ws.split();
    let keepalive = shared.options.keepalive;
    // A send that cannot complete within the idle timeout (a dead link with full buffers) ends the
    // connection like silence does.
    let send_limit = keepalive.idle_timeout;
    let join = shared.lock().engine.join();
    match tokio::time::timeout(send_limit, sink.send(WsMessage::Binary(join))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return End::Failed(format!("sending join: {e}")),
        Err(_) => return End::Failed("sending join stalled".into()),
    }
    let mut last_received = Instant::now();
    let mut last_ping: Option<Instant> = None;
    let mut ready = false;
    loop {
        let now = Instant::now();
        if !ready && now.duration_since(started) > shared.options.connect_timeout {
            return End::Failed("the server did not answer join".into());
        }
        let deadline = match keepalive.poll(now, last_received, last_ping) {
            KeepaliveAction::Wait(t) => t,
            KeepaliveAction::Ping => {
                last_ping = Some(now);
                match tokio::time::timeout(send_limit, sink.send(WsMessage::Ping(Vec::new()))).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return End::Failed(format!("sending ping: {e}")),
                    Err(_) => return End::Failed("sending a ping stalled".into()),
                }
                continue;
            }
            KeepaliveAction::Dead => {
                return End::Failed(format!(
                    "nothing from the server for {:?}: connection presumed dead",
                    keepalive.idle_timeout
                ))
            }
        };
        let outgoing = tokio::select! {
            item = stream.next() => {
                last_received = Instant::now();
                let mut batch = Batch::default();
                let mut item = item;
                let mut count = 0;
                loop {
                    match item {
                        Some(Ok(WsMessage::Binary(b))) => {
                            if let Err(e) = batch.frame(shared, &b, &mut ready, backoff) {
                                return End::Failed(e);
                            }
                        }
                        Some(Ok(WsMessage::Close(c))) => {
                            return End::Failed(format!("the server closed the connection: {c:?}"))
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return End::Failed(format!("connection error: {e}")),
                        None => return End::Failed("the server closed the connection".into()),
                    }
                    count += 1;
                    if count >= FRAMES_PER_SYNC {
                        break;
                    }
                    match stream.next().now_or_never() {
                        Some(next) => item = next,
                        None => break,
                    }
                }
                match batch.finish(shared) {
                    Ok(frames) => frames,
                    Err(e) => return End::Failed(format!("local store: {e}")),
                }
            }
            _ = shared.wake.notified(), if ready => announce_dirty(shared),
            _ = tokio::time::sleep_until(deadline.into()) => Vec::new(),
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
                return End::Stopped;
            }
            _ = token_gen.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
                return End::TokenChanged;
            }
        };
        let sending = async {
            for f in outgoing {
                sink.feed(WsMessage::Binary(f)).await?;
            }
            sink.flush().await
        };
        tokio::select! {
            r = tokio::time::timeout(send_limit, sending) => match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return End::Failed(format!("sending: {e}")),
                Err(_) => return End::Failed(format!("sending stalled for {send_limit:?}")),
            },
            _ = stop.changed() => return End::Stopped,
        }
    }
}

fn announce_dirty(shared: &Shared) -> Vec<Vec<u8>> {
    let mut st = shared.lock();
    let st = &mut *st;
    let mut out = Vec::new();
    for id in std::mem::take(&mut st.dirty) {
        if let Some(d) = st.docs.get(&id) {
            out.extend(st.engine.announce(id, &d.doc));
        }
    }
    out
}

/// What a run of frames produced: frames to send, and events to emit once it is durable.
#[derive(Default)]
struct Batch {
    send: Vec<Vec<u8>>,
    events: Vec<Event>,
    wrote: bool,
    connected: bool,
}

impl Batch {
    fn frame(
        &mut self,
        shared: &Shared,
        frame: &[u8],
        ready: &mut bool,
        backoff: &mut Backoff,
    ) -> Result<(), String> {
        let mut guard = shared.lock();
        let st = &mut *guard;
        let outputs = match st.engine.handle_frame(frame, &mut DocMap(&mut st.docs)) {
            Ok(o) => o,
            // One document's bad sync message: start that document over, keep the connection.
            Err(EngineError::Sync { doc, reason }) => {
                tracing::warn!(%doc, %reason, "bad sync message; resetting this document's sync");
                st.engine.reset_session(&doc);
                self.events.push(Event::ServerError(format!(
                    "document {doc}: bad sync message: {reason}"
                )));
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        for o in outputs {
            match o {
                Output::Send(f) => self.send.push(f),
                Output::Ready { .. } => {
                    *ready = true;
                    self.connected = true;
                    backoff.connected(Instant::now());
                    if let Some(identity) = st.identity.clone() {
                        for idx in shared.index_ids(&identity) {
                            follow(st, idx);
                            // What a stored index lists but an earlier session did not finish
                            // downloading (the index itself may not change again).
                            self.discover(st, &idx, false);
                        }
                    }
                    let ids: Vec<DocumentId> = st.docs.keys().copied().collect();
                    for id in ids {
                        self.send.extend(st.engine.announce(id, &st.docs[&id].doc));
                    }
                    st.dirty.clear();
                }
                Output::RemoteChange(id) => {
                    let d = st
                        .docs
                        .get_mut(&id)
                        .ok_or("engine named an unknown document")?;
                    shared.persist_doc(&id, d).map_err(|e| e.to_string())?;
                    d.last_synced = Some(SystemTime::now());
                    self.wrote = true;
                    self.events.push(Event::ChangedRemotely(id));
                    self.discover(st, &id, true);
                }
                Output::PersistState(id) => {
                    if let Some(d) = st.docs.get_mut(&id) {
                        d.last_synced = Some(SystemTime::now());
                    }
                    // After the document: a crash never leaves a state that claims more.
                    shared
                        .persist_sync_state(st, &id)
                        .map_err(|e| e.to_string())?;
                    self.wrote = true;
                    self.clear_accepted(shared, st, &id)?;
                }
                Output::Acknowledged(id) => self.events.push(Event::Synced(id)),
                Output::Unavailable(id) => {
                    tracing::debug!(doc = %id, "the server does not have this document (yet)");
                }
                Output::Rejected {
                    doc,
                    change,
                    reason,
                } => {
                    if self.reject(shared, st, doc, change, &reason)? {
                        self.events.push(Event::Rejected { doc, reason });
                    }
                }
                Output::ServerError(m) => {
                    tracing::warn!(message = %m, "error from the server");
                    self.events.push(Event::ServerError(m));
                }
            }
        }
        Ok(())
    }

    /// The district index changed: download what it lists that we do not hold.
    /// (`announce`: ask for each new one now; else the caller announces every document.)
    fn discover(&mut self, st: &mut State, id: &DocumentId, announce: bool) {
        let Some(index) = st.docs.get(id).and_then(|d| Index::read(&d.doc).ok()) else {
            return;
        };
        for listed in index.docs.into_keys() {
            if !st.docs.contains_key(&listed) && follow(st, listed) {
                if announce {
                    self.send
                        .extend(st.engine.announce(listed, &st.docs[&listed].doc));
                }
                self.events.push(Event::Discovered(listed));
            }
        }
    }

    /// Records a rejection durably (with this batch); false when it was already known.
    fn reject(
        &mut self,
        shared: &Shared,
        st: &mut State,
        doc: DocumentId,
        change: Option<ChangeHash>,
        reason: &str,
    ) -> Result<bool, String> {
        let Some(d) = st.docs.get(&doc) else {
            return Ok(false);
        };
        let roots = match change {
            Some(h) if d.doc.get_change_meta_by_hash(&h).is_some() => vec![h],
            // A notice about a change no longer held (discarded or re-applied meanwhile): stale.
            Some(_) => return Ok(false),
            // The server named no change: everything it has not acknowledged.
            None => st.engine.unacknowledged(&doc, &d.doc),
        };
        let known = st.rejections.entry(doc).or_default();
        let mut fresh = false;
        for h in roots {
            if known.iter().any(|r| r.change == h) {
                continue;
            }
            let rec = Rejection {
                change: h,
                reason: reason.to_string(),
                at: now_unix(),
            };
            let bytes = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
            shared
                .store
                .put_rejection(&doc, &h, &bytes)
                .map_err(|e| e.to_string())?;
            known.push(rec);
            fresh = true;
        }
        self.wrote |= fresh;
        Ok(fresh)
    }

    /// Forgets rejections of changes the server turns out to hold (a notice that named a change
    /// later accepted, e.g. one sent again after a rebuild): they are not refused.
    fn clear_accepted(
        &mut self,
        shared: &Shared,
        st: &mut State,
        id: &DocumentId,
    ) -> Result<(), String> {
        let (Some(recs), Some(d)) = (st.rejections.get_mut(id), st.docs.get(id)) else {
            return Ok(());
        };
        let unacked: HashSet<ChangeHash> =
            st.engine.unacknowledged(id, &d.doc).into_iter().collect();
        let before = recs.len();
        for r in recs.iter().filter(|r| !unacked.contains(&r.change)) {
            shared
                .store
                .remove_rejection(id, &r.change)
                .map_err(|e| e.to_string())?;
        }
        recs.retain(|r| unacked.contains(&r.change));
        if recs.len() != before {
            self.wrote = true;
            if recs.is_empty() {
                st.rejections.remove(id);
            }
        }
        Ok(())
    }

    /// Makes the batch durable, then tells the app.
    fn finish(self, shared: &Shared) -> Result<Vec<Vec<u8>>, Error> {
        if self.wrote {
            shared.store.sync()?;
        }
        if self.connected {
            shared.set_connection(ConnectionState::Connected);
        }
        for e in self.events {
            shared.emit(e);
        }
        Ok(self.send)
    }
}

/// Starts following a document (an empty one is requested from the server); false if the
/// client already follows as many documents as it may.
fn follow(st: &mut State, id: DocumentId) -> bool {
    if st.docs.contains_key(&id) {
        return true;
    }
    if st.docs.len() >= MAX_DOCS {
        tracing::warn!(doc = %id, "too many documents; not following this one");
        return false;
    }
    st.docs.insert(
        id,
        LocalDoc {
            doc: automerge::Automerge::new(),
            saved: Vec::new(),
            runs: 0,
            last_synced: None,
        },
    );
    st.engine.track(id);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, ProposalDraft};
    use crdt_core::wire::{ErrorMessage, Message};

    fn notice(text: String) -> Vec<u8> {
        Message::Error(ErrorMessage {
            sender_id: Some("server".into()),
            target_id: None,
            message: text,
        })
        .encode()
    }

    fn token() -> String {
        use base64::Engine as _;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.x",
            b64(serde_json::json!({"alg": "HS256"})),
            b64(serde_json::json!({"sub": "u-rosa", "roles": ["leader"], "district": "150110"}))
        )
    }

    #[test]
    fn a_notice_about_a_change_no_longer_held_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = Client::open(dir.path()).unwrap();
        c.set_token(&token()).unwrap();
        let id = c
            .create_proposal(ProposalDraft {
                title: "Veredas".into(),
                description: String::new(),
                zone: "zona-1".into(),
                category: "vías".into(),
                beneficiaries: 1,
                estimated_cost: 1,
                cofinancing: 0,
            })
            .unwrap();
        let held = c.shared.lock().docs[&id].doc.get_heads()[0];
        let mut ready = false;
        let mut backoff = Backoff::default();

        // A late notice naming a change this phone does not hold (discarded meanwhile).
        let gone = ChangeHash([3u8; 32]);
        let mut batch = Batch::default();
        batch
            .frame(
                &c.shared,
                &notice(format!("document {id}: change {gone} rejected: late")),
                &mut ready,
                &mut backoff,
            )
            .unwrap();
        assert!(batch.events.is_empty());
        assert!(c.rejections(&id).is_empty());

        // A notice naming a held change is recorded, once.
        for _ in 0..2 {
            let mut batch = Batch::default();
            batch
                .frame(
                    &c.shared,
                    &notice(format!("document {id}: change {held} rejected: status: no")),
                    &mut ready,
                    &mut backoff,
                )
                .unwrap();
            batch.finish(&c.shared).unwrap();
        }
        let r = c.rejections(&id);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].change, r[0].reason.as_str()), (held, "status: no"));
        // Durable: a reopened store still knows.
        drop(c);
        let c = Client::open(dir.path()).unwrap();
        assert_eq!(c.rejections(&id).len(), 1);
    }
}
