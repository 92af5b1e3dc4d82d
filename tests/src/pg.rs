//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, `postgres` on a
//! free loopback port (its unix socket inside that directory too), stopped when dropped.
//!
//! The binaries are the distribution's (`$MINKA_PG_BINDIR`, else `pg_config --bindir`, else the
//! newest `/usr/lib/postgresql/<version>/bin`). PostgreSQL refuses to run as root, so when the
//! tests run as root the directory is handed to the `postgres` system user and the programs run as
//! that user (`setpriv`, which execs in place, so the child is `postgres` itself). `fsync` stays on
//! (the default): the durability tests rely on it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The role the tests connect as (trust authentication, loopback only).
pub const PG_USER: &str = "minka";

/// A running PostgreSQL server in a temporary directory.
pub struct PgCluster {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// Where the PostgreSQL server programs are.
pub fn pg_bindir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("MINKA_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("initdb").exists() && dir.join("postgres").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no PostgreSQL server found (install Debian's `postgresql`)")?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| anyhow!("no /usr/lib/postgresql/<version>/bin/initdb"))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program` run as the `postgres` user when we are root, else as ourselves.
fn pg_command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A loopback port nobody listens on right now (it may be taken before the caller binds it).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `f` on a thread of its own: the synchronous `postgres` client must not run inside a
/// tokio runtime, and the tests that use this are often `#[tokio::test]`s.
pub fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("thread panicked")
}

impl PgCluster {
    /// Creates and starts a cluster with one database, `minka`.
    pub fn start() -> Result<Self> {
        let bindir = pg_bindir()?;
        let as_postgres = running_as_root();
        let mut dir = tempfile::Builder::new().prefix("minka-pg-").tempdir()?;
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            if !status.success() {
                bail!("chown of {} to postgres failed", dir.path().display());
            }
        }
        let data = dir.path().join("data");
        let out = pg_command(&bindir.join("initdb"), as_postgres)
            .arg("-D")
            .arg(&data)
            .args(["-U", PG_USER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .output()
            .context("run initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut last_error = anyhow!("postgres did not start");
        // The free port may be taken between the probe and postgres binding it: try again.
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::fs::File::create(dir.path().join("postgres.log"))?;
            if as_postgres {
                let _ = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.path().join("postgres.log"))
                    .status();
            }
            let child = pg_command(&bindir.join("postgres"), as_postgres)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.path().display()))
                .args(["-c", "fsync=on", "-c", "max_connections=200"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("start postgres")?;
            let mut cluster = Self {
                child: Some(child),
                port,
                dir,
            };
            match cluster.wait_ready(Duration::from_secs(30)) {
                Ok(()) => {
                    cluster.create_database("minka")?;
                    return Ok(cluster);
                }
                Err(e) => {
                    last_error = e.context(cluster.log());
                    cluster.stop();
                    dir = std::mem::replace(&mut cluster.dir, tempfile::tempdir()?);
                }
            }
        }
        Err(last_error)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let url = self.url_for("postgres");
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("postgres exited with {status}");
            }
            let u = url.clone();
            if off_runtime(move || postgres::Client::connect(&u, postgres::NoTls).is_ok()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("postgres did not accept connections in {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` (`postgres://minka@127.0.0.1:PORT/db`).
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of the database created at start.
    pub fn url(&self) -> String {
        self.url_for("minka")
    }

    /// Creates database `name` (letters, digits and `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database name {name:?}: use letters, digits and _");
        }
        let admin = self.url_for("postgres");
        let sql = format!("CREATE DATABASE {name}");
        off_runtime(move || -> Result<()> {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls)?;
            c.batch_execute(&sql)?;
            Ok(())
        })?;
        Ok(self.url_for(name))
    }

    /// Runs SQL on database `db` and returns the first column of each row as text.
    pub fn query_text(&self, db: &str, sql: &str) -> Result<Vec<String>> {
        let (url, sql) = (self.url_for(db), sql.to_string());
        off_runtime(move || -> Result<Vec<String>> {
            let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
            let mut out = Vec::new();
            for m in c.simple_query(&sql)? {
                if let postgres::SimpleQueryMessage::Row(r) = m {
                    out.push(r.get(0).unwrap_or("").to_string());
                }
            }
            Ok(out)
        })
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Fast shutdown (SIGINT), then SIGKILL if it takes more than 20 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
