//! The shared store: PostgreSQL, for several Minka nodes behind one load balancer.
//!
//! **Threads.** The `postgres` crate's client is synchronous and runs a runtime of its own, which
//! panics inside a tokio runtime context, and the store is called from tokio worker threads. So
//! every connection lives on a dedicated std thread ([`POOL_SIZE`] of them, each owning one
//! `postgres::Client`); a trait method sends a job over a channel and blocks on the reply, as a
//! sled call blocks on its I/O.
//!
//! **Schema.** Versioned migrations ([`MIGRATIONS`]) are applied by [`PgStore::connect`], each in
//! one transaction holding a transaction-scoped advisory lock, so two nodes starting at once apply
//! each migration once; `minka_schema` records every applied version. A database written by a
//! newer Minka (a version this binary does not know) is refused.
//!
//! - `minka_chunks (doc, kind, hash, bytes, written_at)`, primary key `(doc, kind, hash)`: chunks
//!   are content-addressed, so several nodes may append to one document at once (`ON CONFLICT DO
//!   NOTHING`).
//! - `minka_meta (tree, key, value)`, primary key `(tree, key)`: the side tables. bytea compares
//!   byte by byte, so `meta_scan` returns keys in the same order as sled.
//!
//! **Durability.** Every write is its own transaction, committed before the method returns (with
//! PostgreSQL's defaults, `fsync=on` and `synchronous_commit=on`, a commit returns once its WAL is
//! flushed). [`DocStore::sync`] therefore has nothing left to do. A compaction is one transaction:
//! the snapshot is inserted and the chunks it replaces deleted together.
//!
//! **Watch.** A write that adds a chunk (an `append` of a new chunk, every `compact`) also runs
//! `pg_notify('minka_docs', '<node>:<doc id>')` in the same transaction, so the notification is
//! delivered exactly when the write commits. A listener thread with its own connection `LISTEN`s,
//! skips notifications of its own node (a random id per [`PgStore`]), and sends the document id on
//! a bounded broadcast channel ([`WATCH_CAPACITY`]; a receiver that falls behind gets `Lagged`
//! and must refresh everything it holds). The listener checks its connection every few seconds
//! (noting the database's clock); when it is lost it reconnects with backoff, `LISTEN`s again,
//! and then announces every document written since shortly before the last good check
//! ([`REPLAY_MARGIN_SECS`] covers transactions in flight at that moment), so a notification missed
//! while it was away is not lost (the replay may name documents again, this node's own too: a
//! receiver reloads them and finds nothing new). Should that replay be larger than the channel, receivers get
//! `Lagged`, which again means "refresh everything".
//!
//! **Failures.** A query that fails returns [`StoreError::Postgres`]; a connection found closed is
//! reopened before its thread's next job. A write that fails is not retried here: the caller (the
//! durability task) treats it like a failed sled write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crdt_core::DocumentId;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use tokio::sync::broadcast;

use super::{Chunk, ChunkKey, ChunkKind, DocStore, StoreError, StoreResult};

/// Connections (and threads) serving store calls.
pub const POOL_SIZE: usize = 4;

/// Document ids the watch channel holds for a slow receiver before it lags.
pub const WATCH_CAPACITY: usize = 4096;

/// The notification channel.
pub const CHANNEL: &str = "minka_docs";

/// The listener connection's `application_name` (to find it in `pg_stat_activity`).
pub const LISTENER_NAME: &str = "minka-listener";

/// After the listener reconnects, documents written this long before its last good check are
/// announced again.
pub const REPLAY_MARGIN_SECS: f64 = 60.0;

/// How often the listener checks its connection (and reads the database clock).
const HEARTBEAT: Duration = Duration::from_secs(3);

/// Key of the advisory lock migrations take ("minka" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d_69_6e_6b_61;

/// The schema, one migration per version (version = index + 1). Never edit a released one: add.
pub const MIGRATIONS: &[&str] = &[
    // 1: chunks and side tables.
    "CREATE TABLE minka_chunks (
        doc bytea NOT NULL,
        kind \"char\" NOT NULL CHECK (kind IN ('i', 's')),
        hash bytea NOT NULL,
        bytes bytea NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (doc, kind, hash)
     );
     CREATE INDEX minka_chunks_written_at ON minka_chunks (written_at);
     CREATE TABLE minka_meta (
        tree text NOT NULL,
        key bytea NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (tree, key)
     );",
];

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// A [`DocStore`] in a PostgreSQL database shared by several nodes.
pub struct PgStore {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Vec<JoinHandle<()>>,
    node: String,
    watch: broadcast::Sender<DocumentId>,
    stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
}

fn pg_err(e: postgres::Error) -> StoreError {
    StoreError::Postgres(e.to_string())
}

fn tag_of(kind: ChunkKind) -> i8 {
    kind.tag() as i8
}

/// The smallest byte string greater than every string starting with `prefix` (`None`: no bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn doc_of(raw: &[u8]) -> StoreResult<DocumentId> {
    let bytes: [u8; 16] = raw
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("document id of {} bytes", raw.len())))?;
    Ok(DocumentId::from_bytes(bytes))
}

/// Applies the migrations this database lacks; returns the schema version afterwards.
pub fn migrate(client: &mut Client) -> Result<i32, StoreError> {
    let known = MIGRATIONS.len() as i32;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        let mut tx = client.transaction().map_err(pg_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg_err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS minka_schema (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(pg_err)?;
        let current: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM minka_schema", &[])
            .map_err(pg_err)?
            .get(0);
        if current > known {
            return Err(StoreError::Postgres(format!(
                "the database has schema version {current}, newer than this minka knows ({known}): upgrade minka"
            )));
        }
        if current >= version {
            tx.commit().map_err(pg_err)?;
            continue;
        }
        tx.batch_execute(sql).map_err(pg_err)?;
        tx.execute(
            "INSERT INTO minka_schema (version) VALUES ($1)",
            &[&version],
        )
        .map_err(pg_err)?;
        tx.commit().map_err(pg_err)?;
        tracing::info!(version, "applied a PostgreSQL schema migration");
    }
    schema_version(client)
}

/// The schema version recorded in the database (0 before any migration).
pub fn schema_version(client: &mut Client) -> Result<i32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('minka_schema') IS NOT NULL", &[])
        .map_err(pg_err)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT coalesce(max(version), 0) FROM minka_schema", &[])
        .map_err(pg_err)?
        .get(0))
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), applies pending migrations, and starts
    /// the connection threads and the listener. May be called inside a tokio runtime.
    pub fn connect(url: &str) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(POOL_SIZE);
        for i in 0..POOL_SIZE {
            let (ready_tx, ready_rx) = mpsc::channel();
            let rx = rx.clone();
            let url = url.to_string();
            let handle = std::thread::Builder::new()
                .name(format!("minka-pg-{i}"))
                .spawn(move || worker(url, i == 0, rx, ready_tx))?;
            // One at a time: the first applies the migrations before the others start.
            match ready_rx.recv() {
                Ok(Ok(())) => workers.push(handle),
                Ok(Err(e)) => {
                    drop(tx);
                    let _ = handle.join();
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(e);
                }
                Err(_) => {
                    return Err(StoreError::Postgres(
                        "a connection thread stopped while connecting".into(),
                    ))
                }
            }
        }
        let node = hex::encode(rand::random::<[u8; 16]>());
        let (watch, _) = broadcast::channel(WATCH_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let listener = {
            let (url, node, watch, stop) =
                (url.to_string(), node.clone(), watch.clone(), stop.clone());
            std::thread::Builder::new()
                .name("minka-pg-listen".into())
                .spawn(move || listen(url, node, watch, stop))?
        };
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            workers,
            node,
            watch,
            stop,
            listener: Some(listener),
        })
    }

    /// This store's node id (the prefix of its notifications).
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Runs `f` on one of the connection threads and waits for its result.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            let _ = reply_tx.send(f(client));
        });
        let sent = self
            .jobs
            .lock()
            .unwrap()
            .as_ref()
            .map(|jobs| jobs.send(job).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(StoreError::Postgres("the store is closed".into()));
        }
        reply_rx
            .recv()
            .map_err(|_| StoreError::Postgres("a connection thread stopped".into()))?
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> StoreResult<i32> {
        self.run(schema_version)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.jobs.lock().unwrap().take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(l) = self.listener.take() {
            let _ = l.join();
        }
    }
}

/// A connection thread: connects (the first also migrates), reports, then serves jobs until the
/// store is dropped, reopening its connection when it finds it closed.
fn worker(
    url: String,
    migrate_first: bool,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    ready: mpsc::Sender<StoreResult<()>>,
) {
    let mut client = match Client::connect(&url, NoTls).map_err(pg_err) {
        Ok(mut c) => {
            if migrate_first {
                if let Err(e) = migrate(&mut c) {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    loop {
        let job = match jobs.lock().unwrap().recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if client.is_closed() {
            match Client::connect(&url, NoTls) {
                Ok(c) => {
                    tracing::warn!("reconnected to PostgreSQL");
                    client = c;
                }
                Err(e) => tracing::error!(error = %e, "cannot reconnect to PostgreSQL"),
            }
        }
        job(&mut client);
    }
}

/// The listener thread (see the module's "Watch").
fn listen(url: String, node: String, watch: broadcast::Sender<DocumentId>, stop: Arc<AtomicBool>) {
    let own = format!("{node}:");
    let mut backoff = Duration::from_millis(100);
    // The database clock (seconds since the epoch) at the last good check.
    let mut alive_at: Option<f64> = None;
    while !stop.load(Ordering::Acquire) {
        let mut client = match url
            .parse::<postgres::Config>()
            .and_then(|mut config| config.application_name(LISTENER_NAME).connect(NoTls))
            .and_then(|mut c| c.batch_execute(&format!("LISTEN {CHANNEL}")).map(|_| c))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL listener cannot connect; retrying");
                sleep_unless(&stop, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if let Some(since) = alive_at {
            // Listening again: announce what was written while notifications could be missed.
            let rows = client.query(
                "SELECT DISTINCT doc FROM minka_chunks WHERE written_at >= to_timestamp($1)",
                &[&(since - REPLAY_MARGIN_SECS)],
            );
            match rows {
                Ok(rows) => {
                    tracing::warn!(
                        documents = rows.len(),
                        "PostgreSQL listener reconnected; announcing documents written meanwhile"
                    );
                    for row in rows {
                        if let Ok(id) = doc_of(row.get::<_, &[u8]>(0)) {
                            let _ = watch.send(id);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL listener: replay failed; reconnecting");
                    continue;
                }
            }
        }
        let mut next_check = Instant::now();
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            if Instant::now() >= next_check {
                match client.query_one("SELECT extract(epoch FROM now())::float8", &[]) {
                    Ok(row) => alive_at = Some(row.get(0)),
                    Err(e) => {
                        tracing::warn!(error = %e, "PostgreSQL listener lost its connection");
                        break;
                    }
                }
                next_check = Instant::now() + HEARTBEAT;
            }
            let next = client
                .notifications()
                .timeout_iter(Duration::from_millis(250))
                .next();
            match next {
                Ok(Some(n)) => {
                    let payload = n.payload();
                    if payload.starts_with(&own) {
                        continue;
                    }
                    match payload
                        .split_once(':')
                        .and_then(|(_, id)| id.parse::<DocumentId>().ok())
                    {
                        Some(id) => {
                            // No receiver yet is fine.
                            let _ = watch.send(id);
                        }
                        None => tracing::warn!(payload, "unreadable minka_docs notification"),
                    }
                }
                Ok(None) => {
                    if client.is_closed() {
                        tracing::warn!("PostgreSQL listener lost its connection");
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL listener lost its connection");
                    break;
                }
            }
        }
    }
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while Instant::now() < until && !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50).min(total));
    }
}

impl DocStore for PgStore {
    fn append(&self, doc: &DocumentId, bytes: &[u8]) -> StoreResult<ChunkKey> {
        let key = ChunkKey::of(ChunkKind::Incremental, bytes);
        let (doc, bytes, node) = (*doc, bytes.to_vec(), self.node.clone());
        self.run(move |c| {
            let mut tx = c.transaction().map_err(pg_err)?;
            let added = tx
                .execute(
                    "INSERT INTO minka_chunks (doc, kind, hash, bytes) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[
                        &&doc.as_bytes()[..],
                        &tag_of(key.kind),
                        &&key.hash[..],
                        &bytes,
                    ],
                )
                .map_err(pg_err)?;
            // A chunk already there was announced by whoever wrote it.
            if added > 0 {
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[&CHANNEL, &format!("{node}:{doc}")],
                )
                .map_err(pg_err)?;
            }
            tx.commit().map_err(pg_err)?;
            Ok(key)
        })
    }

    fn load(&self, doc: &DocumentId) -> StoreResult<Vec<Chunk>> {
        let doc = *doc;
        self.run(move |c| {
            let rows = c
                .query(
                    // "char" 's' sorts after 'i': descending puts snapshots first.
                    "SELECT kind, hash, bytes FROM minka_chunks WHERE doc = $1
                     ORDER BY kind DESC, hash",
                    &[&&doc.as_bytes()[..]],
                )
                .map_err(pg_err)?;
            rows.into_iter()
                .map(|row| {
                    let tag: i8 = row.get(0);
                    let kind = ChunkKind::from_tag(tag as u8).ok_or_else(|| {
                        StoreError::Corrupt(format!("document {doc}: unknown chunk kind {tag}"))
                    })?;
                    let hash: [u8; 32] = row.get::<_, &[u8]>(1).try_into().map_err(|_| {
                        StoreError::Corrupt(format!("document {doc}: chunk hash of bad length"))
                    })?;
                    Ok(Chunk {
                        key: ChunkKey { kind, hash },
                        bytes: row.get(2),
                    })
                })
                .collect()
        })
    }

    fn compact(
        &self,
        doc: &DocumentId,
        snapshot: &[u8],
        replaced: &[ChunkKey],
    ) -> StoreResult<ChunkKey> {
        let key = ChunkKey::of(ChunkKind::Snapshot, snapshot);
        let (doc, snapshot, node) = (*doc, snapshot.to_vec(), self.node.clone());
        let replaced: Vec<ChunkKey> = replaced.iter().copied().filter(|k| *k != key).collect();
        self.run(move |c| {
            let mut tx = c.transaction().map_err(pg_err)?;
            let id = &doc.as_bytes()[..];
            tx.execute(
                "INSERT INTO minka_chunks (doc, kind, hash, bytes) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&id, &tag_of(key.kind), &&key.hash[..], &snapshot],
            )
            .map_err(pg_err)?;
            if !replaced.is_empty() {
                let delete = tx
                    .prepare("DELETE FROM minka_chunks WHERE doc = $1 AND kind = $2 AND hash = $3")
                    .map_err(pg_err)?;
                for old in &replaced {
                    tx.execute(&delete, &[&id, &tag_of(old.kind), &&old.hash[..]])
                        .map_err(pg_err)?;
                }
            }
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &format!("{node}:{doc}")],
            )
            .map_err(pg_err)?;
            // One transaction: the snapshot and the removal of what it replaces commit together.
            tx.commit().map_err(pg_err)?;
            Ok(key)
        })
    }

    fn list(&self) -> StoreResult<Vec<DocumentId>> {
        self.run(|c| {
            c.query("SELECT DISTINCT doc FROM minka_chunks ORDER BY doc", &[])
                .map_err(pg_err)?
                .into_iter()
                .map(|row| doc_of(row.get::<_, &[u8]>(0)))
                .collect()
        })
    }

    /// Nothing to do: every write committed (and PostgreSQL flushed its WAL) before it returned.
    fn sync(&self) -> StoreResult<()> {
        Ok(())
    }

    fn meta_get(&self, tree: &str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let (tree, key) = (tree.to_string(), key.to_vec());
        self.run(move |c| {
            Ok(c.query_opt(
                "SELECT value FROM minka_meta WHERE tree = $1 AND key = $2",
                &[&tree, &key],
            )
            .map_err(pg_err)?
            .map(|row| row.get(0)))
        })
    }

    fn meta_put(&self, tree: &str, key: &[u8], value: &[u8]) -> StoreResult<()> {
        let (tree, key, value) = (tree.to_string(), key.to_vec(), value.to_vec());
        self.run(move |c| {
            c.execute(
                "INSERT INTO minka_meta (tree, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                &[&tree, &key, &value],
            )
            .map_err(pg_err)?;
            Ok(())
        })
    }

    fn meta_delete(&self, tree: &str, key: &[u8]) -> StoreResult<()> {
        let (tree, key) = (tree.to_string(), key.to_vec());
        self.run(move |c| {
            c.execute(
                "DELETE FROM minka_meta WHERE tree = $1 AND key = $2",
                &[&tree, &key],
            )
            .map_err(pg_err)?;
            Ok(())
        })
    }

    fn meta_scan(&self, tree: &str, prefix: &[u8]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let (tree, start, end) = (tree.to_string(), prefix.to_vec(), prefix_end(prefix));
        self.run(move |c| {
            let rows = match &end {
                Some(end) => c.query(
                    "SELECT key, value FROM minka_meta WHERE tree = $1 AND key >= $2 AND key < $3
                     ORDER BY key",
                    &[&tree, &start, end],
                ),
                None => c.query(
                    "SELECT key, value FROM minka_meta WHERE tree = $1 AND key >= $2 ORDER BY key",
                    &[&tree, &start],
                ),
            }
            .map_err(pg_err)?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect())
        })
    }

    /// Atomic across every node on the database: the primary key decides who stored first.
    fn meta_put_if_absent(
        &self,
        tree: &str,
        key: &[u8],
        value: &[u8],
    ) -> StoreResult<Option<Vec<u8>>> {
        let (tree, key, value) = (tree.to_string(), key.to_vec(), value.to_vec());
        self.run(move |c| loop {
            let added = c
                .execute(
                    "INSERT INTO minka_meta (tree, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&tree, &key, &value],
                )
                .map_err(pg_err)?;
            if added > 0 {
                return Ok(None);
            }
            if let Some(row) = c
                .query_opt(
                    "SELECT value FROM minka_meta WHERE tree = $1 AND key = $2",
                    &[&tree, &key],
                )
                .map_err(pg_err)?
            {
                return Ok(Some(row.get(0)));
            }
            // Deleted between the two statements: try again.
        })
    }

    fn meta_tables(&self) -> StoreResult<Vec<String>> {
        self.run(|c| {
            Ok(
                c.query("SELECT DISTINCT tree FROM minka_meta ORDER BY tree", &[])
                    .map_err(pg_err)?
                    .into_iter()
                    .map(|row| row.get(0))
                    .collect(),
            )
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn watch(&self) -> Option<broadcast::Receiver<DocumentId>> {
        Some(self.watch.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_bounds_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
