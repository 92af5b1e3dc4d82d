//! Test harness: starts the real `minka` binary on an ephemeral port with a temporary sled store,
//! mints tokens with the same secret, and speaks the automerge-repo protocol as a client (through
//! `crdt_core::engine`, the client side the SDK and the load generator use too).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use automerge::{Automerge, ChangeHash};
use crdt_core::engine::{ClientEngine, Documents, Output};
use crdt_core::wire::{Message, RequestMessage, SyncMessage};
use crdt_core::DocumentId;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The secret every test server is started with.
pub const TEST_SECRET: &str = "minka-test-secret-0123456789";

static BUILD: Once = Once::new();

/// Path of the `minka` binary: `$MINKA_BIN`, else `target/debug/minka` (built on first use).
pub fn minka_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MINKA_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "minka-server", "--bin", "minka"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building minka failed");
    });
    target.join("debug").join("minka")
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Mints a token signed with [`TEST_SECRET`].
pub fn token(sub: &str, roles: &[&str], district: &str) -> String {
    token_with(sub, roles, district, now_unix() + 3600, TEST_SECRET)
}

/// Mints a token with an explicit expiry and secret.
pub fn token_with(sub: &str, roles: &[&str], district: &str, exp: u64, secret: &str) -> String {
    let claims = serde_json::json!({
        "sub": sub, "name": format!("Usuario {sub}"), "roles": roles, "district": district,
        "iat": now_unix(), "exp": exp,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A running `minka serve` process with its own data directory.
pub struct TestServer {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
    extra_args: Vec<String>,
}

impl TestServer {
    /// Starts a server on a fresh temporary store.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a server with extra `serve` flags.
    pub fn start_with(args: &[&str]) -> Result<Self> {
        let mut s = Self::unstarted(args)?;
        s.spawn()?;
        Ok(s)
    }

    /// A server whose data directory exists (empty) but whose process is not started yet, so a
    /// test can run offline tools (`demo`) first; [`Self::restart`] then starts it.
    pub fn unstarted(args: &[&str]) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let data_dir = tmp.path().join("data");
        Ok(Self {
            child: None,
            addr: String::new(),
            data_dir,
            _tmp: Some(tmp),
            log: Arc::new(Mutex::new(String::new())),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A server whose data directory is `data_dir` (a mount point a test prepared, e.g. a small
    /// tmpfs), not started yet; [`Self::restart`] starts it. The directory is not removed.
    pub fn unstarted_at(data_dir: &Path, args: &[&str]) -> Self {
        Self {
            child: None,
            addr: String::new(),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            log: Arc::new(Mutex::new(String::new())),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Waits up to `limit` for the process to exit by itself; its exit status, or `None` if it
    /// is still running (or was never started).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.child.as_mut()?.try_wait().ok().flatten();
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of an unlabelled metric from `GET /metrics` (read with an admin token).
    pub fn metric(&self, name: &str) -> Result<f64> {
        let t = token("u-metrics", &["admin"], "*");
        let (status, body) = self.http_get("/metrics", Some(&t))?;
        if status != 200 {
            bail!("GET /metrics: {status} {body}");
        }
        body.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().parse::<f64>().ok())?
            })
            .ok_or_else(|| anyhow!("metric {name} not found in\n{body}"))
    }

    fn spawn(&mut self) -> Result<()> {
        let mut child = Command::new(minka_bin())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("MINKA_JWT_SECRET", TEST_SECRET)
            .env(
                "RUST_LOG",
                format!(
                    "minka=info,{}",
                    std::env::var("MINKA_TEST_LOG").unwrap_or_else(|_| "info".into())
                ),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn minka")?;
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(t) = &tx {
                    if let Some(i) = line.find("listen=") {
                        let addr: String = line[i + 7..]
                            .chars()
                            .take_while(|c| !c.is_whitespace())
                            .collect();
                        let _ = t.send(addr);
                        tx = None;
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        // Owned before any early return, so Drop kills it if the start fails.
        self.child = Some(child);
        self.addr = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("minka did not report its address; log:\n{}", self.log()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.http_get("/healthz", None) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("minka did not become healthy; log:\n{}", self.log())
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The WebSocket URL with a token in the query.
    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/sync?token={token}", self.addr)
    }

    /// Kills the process with SIGKILL (no shutdown, no flush).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        false
    }

    /// Starts the server again on the same data directory (on a new port).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Runs another `minka` subcommand on this server's data directory.
    pub fn tool(&self, args: &[&str]) -> Result<(bool, String)> {
        let out = Command::new(minka_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("MINKA_JWT_SECRET", TEST_SECRET)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// A plain HTTP/1.1 GET; returns status and body.
    pub fn http_get(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        http_request(&self.addr, "GET", path, token)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP/1.1 request over a fresh connection.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    // Read the head, then exactly Content-Length bytes (the server may keep the socket open).
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP response: {head:?}"))?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok((status, body))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client received that was not a sync message for a document it syncs.
#[derive(Debug, Clone)]
pub enum Event {
    Message(Message),
    Closed(Option<String>),
}

/// A protocol-level automerge-repo client (the Rust counterpart of the JS client). Its sync states
/// live in a [`ClientEngine`]; the raw abilities ([`Self::send`], [`Self::send_raw`],
/// [`Self::connect_unjoined`]) let a test misbehave on purpose.
pub struct ProtoClient {
    ws: Ws,
    pub peer_id: String,
    pub server_peer_id: String,
    engine: ClientEngine,
    /// Documents the server sent a sync message about on this connection.
    heard: HashSet<DocumentId>,
    /// Messages received so far (all of them), for tests that count.
    pub received: Vec<Message>,
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// The last sync messages each way, summarized (for a test's failure message).
    trace: std::collections::VecDeque<String>,
}

/// One line about a sync frame: direction, document, heads, need, have and changes.
fn sync_summary(dir: &str, msg: &Message) -> Option<String> {
    let (doc, data) = match msg {
        Message::Sync(m) => (&m.document_id, &m.data),
        Message::Request(m) => (&m.document_id, &m.data),
        _ => return None,
    };
    let short = |h: &ChangeHash| h.to_string()[..8].to_string();
    let m = automerge::sync::Message::decode(data).ok()?;
    let changes: Vec<String> = m
        .changes
        .iter()
        .map(|c| match automerge::Change::from_bytes(c.to_vec()) {
            Ok(c) => short(&c.hash()),
            Err(_) => format!("doc-chunk({}B)", c.len()),
        })
        .collect();
    Some(format!(
        "{dir} {doc}: heads {:?} need {:?} have {:?} changes {:?}",
        m.heads.iter().map(short).collect::<Vec<_>>(),
        m.need.iter().map(short).collect::<Vec<_>>(),
        m.have
            .iter()
            .map(|h| h.last_sync.iter().map(short).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        changes
    ))
}

/// Opens a WebSocket with a token in the query (no join).
pub async fn connect_raw(url: &str) -> Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async(url).await?;
    Ok(ws)
}

impl ProtoClient {
    /// Connects and completes the `join`/`peer` handshake.
    pub async fn connect(url: &str, peer_id: &str) -> Result<Self> {
        Self::connect_within(url, peer_id, Duration::from_secs(10)).await
    }

    /// [`Self::connect`], waiting up to `limit` for the server's `peer` (a user in debt to its
    /// sync budget is not read at once).
    pub async fn connect_within(url: &str, peer_id: &str, limit: Duration) -> Result<Self> {
        let mut c = Self::connect_unjoined(url, peer_id).await?;
        let join = c.engine.join();
        c.send_raw(join).await?;
        match c.next(limit).await? {
            Some(Event::Message(Message::Peer(p))) => {
                c.server_peer_id = p.sender_id.clone();
                let frame = Message::Peer(p).encode();
                c.engine.handle_frame(&frame, &mut HashMap::new())?;
            }
            other => bail!("expected peer, got {other:?}"),
        }
        Ok(c)
    }

    pub async fn send(&mut self, msg: &Message) -> Result<()> {
        self.send_raw(msg.encode()).await
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.bytes_out += bytes.len();
        if let Some(line) = Message::decode(&bytes)
            .ok()
            .and_then(|m| sync_summary("out", &m))
        {
            self.note(line);
        }
        self.ws.send(WsMessage::Binary(bytes)).await?;
        Ok(())
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == 8 {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    /// The last sync messages each way, one line each.
    pub fn trace(&self) -> String {
        self.trace.iter().map(|l| format!("\n  {l}")).collect()
    }

    pub async fn send_ws(&mut self, msg: WsMessage) -> Result<()> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// The next protocol message or close, or `None` after `timeout` of silence.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Ok(Some(Event::Closed(None))),
                Ok(Some(Err(e))) => return Ok(Some(Event::Closed(Some(e.to_string())))),
                Ok(Some(Ok(f))) => f,
            };
            match frame {
                WsMessage::Binary(b) => {
                    self.bytes_in += b.len();
                    let msg =
                        Message::decode(&b).map_err(|e| anyhow!("server sent bad frame: {e}"))?;
                    if let Some(line) = sync_summary("in", &msg) {
                        self.note(line);
                    }
                    self.received.push(msg.clone());
                    return Ok(Some(Event::Message(msg)));
                }
                WsMessage::Close(c) => {
                    return Ok(Some(Event::Closed(c.map(|c| c.reason.to_string()))))
                }
                _ => continue,
            }
        }
    }

    /// The engine's next sync message for a document, as a `request` or a `sync` as the caller
    /// says (the engine picks `request` exactly when the document is empty; a test may want the
    /// other).
    fn sync_frame(&mut self, id: DocumentId, doc: &Automerge, request: bool) -> Option<Message> {
        self.engine.track(id);
        let frame = self.engine.announce(id, doc)?;
        Some(match Message::decode(&frame).ok()? {
            Message::Request(m) if !request => Message::Sync(SyncMessage {
                sender_id: m.sender_id,
                target_id: m.target_id,
                document_id: m.document_id,
                data: m.data,
            }),
            Message::Sync(m) if request => Message::Request(RequestMessage {
                sender_id: m.sender_id,
                target_id: m.target_id,
                document_id: m.document_id,
                data: m.data,
            }),
            m => m,
        })
    }

    /// Syncs one document with the server until neither side has anything to send and the
    /// server's heads equal ours. Other messages received meanwhile are returned.
    pub async fn sync_doc(&mut self, id: DocumentId, doc: &mut Automerge) -> Result<Vec<Event>> {
        self.sync_doc_inner(id, doc, false, Duration::from_secs(20))
            .await
    }

    /// [`Self::sync_doc`] with a longer limit, for big uploads on a busy machine.
    pub async fn sync_doc_within(
        &mut self,
        id: DocumentId,
        doc: &mut Automerge,
        limit: Duration,
    ) -> Result<Vec<Event>> {
        self.sync_doc_inner(id, doc, false, limit).await
    }

    /// Like [`Self::sync_doc`], but starts with `request` (the client has nothing yet).
    pub async fn request_doc(&mut self, id: DocumentId, doc: &mut Automerge) -> Result<Vec<Event>> {
        self.sync_doc_inner(id, doc, true, Duration::from_secs(20))
            .await
    }

    /// [`Self::request_doc`] with another limit.
    pub async fn request_doc_within(
        &mut self,
        id: DocumentId,
        doc: &mut Automerge,
        limit: Duration,
    ) -> Result<Vec<Event>> {
        self.sync_doc_inner(id, doc, true, limit).await
    }

    async fn sync_doc_inner(
        &mut self,
        id: DocumentId,
        doc: &mut Automerge,
        request: bool,
        limit: Duration,
    ) -> Result<Vec<Event>> {
        let mut others = Vec::new();
        let deadline = Instant::now() + limit;
        if let Some(m) = self.sync_frame(id, doc, request) {
            self.send(&m).await?;
        }
        let mut received = 0usize;
        loop {
            let settled = self.server_heads(id) == Some(doc.get_heads());
            if Instant::now() > deadline {
                if settled {
                    // Settled, but other messages kept coming: nothing more to wait for.
                    return Ok(others);
                }
                bail!(
                    "document {id} did not settle in {limit:?}: ours {:?}, the server's {:?}, \
                     {received} messages received, {} about other things; last sync messages:{}",
                    doc.get_heads(),
                    self.server_heads(id),
                    others.len(),
                    self.trace()
                );
            }
            let wait = if settled {
                Duration::from_millis(150)
            } else {
                Duration::from_secs(2)
            };
            match self.next(wait).await? {
                None if settled => return Ok(others),
                // The server may rightly stay silent when our last message told it nothing new
                // (automerge answers only what changes the picture): quiet with nothing to send
                // is settled too.
                None => match self.sync_frame(id, doc, false) {
                    Some(m) => self.send(&m).await?,
                    None => return Ok(others),
                },
                Some(Event::Message(Message::Sync(s))) if s.document_id == id.to_string() => {
                    received += 1;
                    self.receive_sync(id, doc, &s).await?;
                }
                Some(Event::Message(Message::DocUnavailable(d)))
                    if d.document_id == id.to_string() =>
                {
                    others.push(Event::Message(Message::DocUnavailable(d)));
                    return Ok(others);
                }
                Some(ev @ Event::Closed(_)) => {
                    others.push(ev);
                    return Ok(others);
                }
                Some(ev) => others.push(ev),
            }
        }
    }

    /// Opens a WebSocket without sending `join` (for tests of what may come first).
    pub async fn connect_unjoined(url: &str, peer_id: &str) -> Result<Self> {
        Ok(Self {
            ws: connect_raw(url).await?,
            peer_id: peer_id.to_string(),
            server_peer_id: String::new(),
            engine: ClientEngine::new(peer_id, None),
            heard: HashSet::new(),
            received: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
            trace: Default::default(),
        })
    }

    /// The heads the server last told us it has for a document on this connection (its
    /// acknowledgement); `None` before it said anything about it.
    pub fn server_heads(&self, id: DocumentId) -> Option<Vec<ChangeHash>> {
        self.heard
            .contains(&id)
            .then(|| self.engine.server_heads(&id))
    }

    /// The sync states as automerge-repo persists them across a reconnect (only what both sides
    /// shared, tagged with the server's storage id), to hand to the next connection with
    /// [`Self::import_states`].
    pub fn export_states(&self) -> HashMap<DocumentId, Vec<u8>> {
        self.engine
            .tracked()
            .filter_map(|id| Some((*id, self.engine.persisted_state(id)?)))
            .collect()
    }

    /// Restores states from [`Self::export_states`] (one that does not decode is ignored: that
    /// document syncs from scratch).
    pub fn import_states(&mut self, states: &HashMap<DocumentId, Vec<u8>>) -> Result<()> {
        for (id, raw) in states {
            self.engine.load_state(*id, raw);
            self.heard.remove(id);
        }
        Ok(())
    }

    /// Sends this client's next sync message for a document, if it has one.
    pub async fn send_sync(&mut self, id: DocumentId, doc: &Automerge) -> Result<bool> {
        match self.sync_frame(id, doc, false) {
            Some(m) => {
                self.send(&m).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Sends a `request` for a document this client does not have.
    pub async fn send_request(&mut self, id: DocumentId) -> Result<()> {
        let m = self
            .sync_frame(id, &Automerge::new(), true)
            .ok_or_else(|| anyhow!("no request to send"))?;
        self.send(&m).await
    }

    /// Applies a received sync message for a document and answers it if there is anything to say.
    pub async fn receive_sync(
        &mut self,
        id: DocumentId,
        doc: &mut Automerge,
        msg: &SyncMessage,
    ) -> Result<()> {
        self.engine.track(id);
        let frame = Message::Sync(SyncMessage {
            document_id: id.to_string(),
            ..msg.clone()
        })
        .encode();
        let outputs = self.engine.handle_frame(&frame, &mut OneDoc(id, doc))?;
        self.heard.insert(id);
        for o in outputs {
            if let Output::Send(reply) = o {
                self.send_raw(reply).await?;
            }
        }
        Ok(())
    }

    /// Forgets the sync state of a document (as after a reconnect).
    pub fn reset(&mut self, id: DocumentId) {
        self.engine.forget(&id);
        self.heard.remove(&id);
    }
}

/// One document, as the engine looks it up.
struct OneDoc<'a>(DocumentId, &'a mut Automerge);

impl Documents for OneDoc<'_> {
    fn get_mut(&mut self, id: &DocumentId) -> Option<&mut Automerge> {
        (*id == self.0).then_some(&mut *self.1)
    }
}

/// Polls a metric of `server` until `ok` holds or `limit` passes; returns the last value.
pub async fn wait_metric(
    server: &TestServer,
    name: &str,
    limit: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let v = server.metric(name).unwrap();
        if ok(v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
