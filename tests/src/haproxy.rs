//! HAProxy for the scale-out tests: the repository's own `deploy/haproxy.cfg`, run in the
//! foreground on a free loopback port in front of the given `minka serve` nodes, stopped when
//! dropped. The binary is `$MINKA_HAPROXY_BIN`, else `haproxy` on the PATH (Debian's package).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::pg::free_port;

/// The configuration in the repository (the one a deployment uses).
pub fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg")
}

/// A running HAProxy.
pub struct HaProxy {
    child: Option<Child>,
    /// `127.0.0.1:PORT`, where phones connect.
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl HaProxy {
    /// Starts HAProxy routing to `nodes` (`host:port` each; the configuration names two).
    pub fn start(nodes: [&str; 2]) -> Result<Self> {
        let bin = std::env::var("MINKA_HAPROXY_BIN").unwrap_or_else(|_| "haproxy".into());
        let mut last = anyhow!("haproxy did not start");
        // The free port may be taken between the probe and HAProxy binding it: try again.
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let mut child = Command::new(&bin)
                .arg("-db")
                .arg("-f")
                .arg(config_path())
                .env("MINKA_BIND", &addr)
                .env("MINKA_NODE1", nodes[0])
                .env("MINKA_NODE2", nodes[1])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("start {bin} (install Debian's `haproxy`)"))?;
            let log = Arc::new(Mutex::new(String::new()));
            let stderr = child.stderr.take().unwrap();
            let l = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut l = l.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
            let mut proxy = Self {
                child: Some(child),
                addr,
                log,
            };
            match proxy.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return Ok(proxy),
                Err(e) => last = e.context(proxy.log()),
            }
        }
        Err(last)
    }

    /// Waits until the proxy answers `/healthz` (from a node, so both it and a node are up).
    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("haproxy exited with {status}");
            }
            if let Ok((200, _)) = crate::harness::http_request(&self.addr, "GET", "/healthz", None)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("haproxy did not answer /healthz in {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The WebSocket URL through the proxy, with a token in the query.
    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/sync?token={token}", self.addr)
    }

    /// What HAProxy wrote to stderr so far (its request log, health-check transitions).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
