//! Starting, measuring and stopping the server under test: minka, the two reference peers, or
//! any command given on the command line. Each run gets a fresh data directory and a free port
//! on 127.0.0.1; only loopback traffic.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Which server a workload runs against.
#[derive(Debug, Clone)]
pub enum Target {
    /// The `minka` binary: `minka serve --listen 127.0.0.1:PORT --data-dir DIR [ARGS]`, WebSocket
    /// at `/sync`. `name` is `minka`, or e.g. `minka-nochecks` with extra arguments.
    Minka {
        bin: PathBuf,
        name: String,
        args: Vec<String>,
    },
    /// The reference JavaScript sync server (tests/peers/js-sync-server/server.mjs), run with node.
    Js { script: PathBuf },
    /// The samod peer (tests/peers/samod-server), a built binary.
    Samod { bin: PathBuf },
    /// A server already running at this WebSocket URL (no process metrics).
    Url { url: String },
    /// Any command; `{port}` and `{dir}` are substituted. Ready once the port accepts connections.
    Cmd {
        name: String,
        cmd: String,
        path: String,
    },
}

impl Target {
    pub fn name(&self) -> String {
        match self {
            Target::Minka { name, .. } => name.clone(),
            Target::Js { .. } => "js".into(),
            Target::Samod { .. } => "samod".into(),
            Target::Url { url } => url.clone(),
            Target::Cmd { name, .. } => name.clone(),
        }
    }
}

/// Memory of a process from /proc/<pid>/status, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn read_mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// User + system CPU seconds a process has used, from /proc/<pid>/stat (`self` for this one).
pub fn read_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// Prometheus text exposition: the value of the sample `name` (no labels), if present.
pub fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// The open-file limit of this process (soft), from /proc/self/limits.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running server under test.
pub struct ServerProc {
    pub name: String,
    child: Option<Child>,
    pid: Option<u32>,
    /// WebSocket URL without the token.
    base_url: String,
    needs_token: bool,
    _data_dir: Option<tempfile::TempDir>,
    pub log_path: Option<PathBuf>,
    cpu_at_start: f64,
    /// The HTTP port, for `/metrics` (minka and NAME=COMMAND targets).
    http_port: Option<u16>,
}

impl ServerProc {
    pub async fn start(
        target: &Target,
        jwt_secret: &str,
        health_token: &str,
        log_dir: &Path,
        tag: &str,
    ) -> Result<Self> {
        let name = target.name();
        if let Target::Url { url } = target {
            return Ok(Self {
                name,
                child: None,
                pid: None,
                base_url: url.clone(),
                needs_token: true,
                _data_dir: None,
                log_path: None,
                cpu_at_start: 0.0,
                http_port: None,
            });
        }
        let data_dir = tempfile::Builder::new()
            .prefix(&format!("minka-bench-{name}-"))
            .tempdir()?;
        let dir = data_dir.path().to_string_lossy().to_string();
        std::fs::create_dir_all(log_dir)?;
        let log_path = log_dir.join(format!("{name}-{tag}.log"));
        let log = std::fs::File::create(&log_path)?;
        let (mut cmd, port, path, announces_port) = match target {
            Target::Minka { bin, args, .. } => {
                let port = free_port()?;
                let mut c = Command::new(bin);
                c.args([
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--data-dir",
                    &dir,
                ])
                .args(args)
                .env("MINKA_JWT_SECRET", jwt_secret);
                if std::env::var_os("RUST_LOG").is_none() {
                    c.env("RUST_LOG", "warn");
                }
                (c, Some(port), "/sync".to_string(), false)
            }
            Target::Js { script } => {
                let mut c = Command::new("node");
                c.arg(script).args(["0", &dir]);
                if let Some(parent) = script.parent() {
                    c.current_dir(parent);
                }
                (c, None, "/".to_string(), true)
            }
            Target::Samod { bin } => {
                let mut c = Command::new(bin);
                c.args(["0", &dir]);
                (c, None, "/".to_string(), true)
            }
            Target::Cmd { cmd, path, .. } => {
                let port = free_port()?;
                let line = cmd
                    .replace("{port}", &port.to_string())
                    .replace("{dir}", &dir);
                let mut c = Command::new("sh");
                c.args(["-c", &format!("exec {line}")])
                    .env("MINKA_JWT_SECRET", jwt_secret);
                (c, Some(port), path.clone(), false)
            }
            Target::Url { .. } => unreachable!(),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone()?))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {name} server"))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (port_tx, port_rx) = tokio::sync::oneshot::channel::<u16>();
        // Drain stdout into the log, catching the "listening on <port>" line of the peers.
        let mut log_out = tokio::fs::File::from_std(log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut port_tx = Some(port_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.trim().strip_prefix("listening on ") {
                    if let (Some(tx), Ok(p)) = (port_tx.take(), rest.trim().parse::<u16>()) {
                        let _ = tx.send(p);
                    }
                }
                let _ = log_out.write_all(line.as_bytes()).await;
                let _ = log_out.write_all(b"\n").await;
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let http_port = port;
        let port = if announces_port {
            tokio::select! {
                p = port_rx => p.map_err(|_| anyhow!("{name} exited before listening; see {}", log_path.display()))?,
                _ = tokio::time::sleep_until(deadline.into()) => bail!("{name} did not start in 60 s; see {}", log_path.display()),
            }
        } else {
            let port = port.expect("port chosen");
            let healthz = matches!(target, Target::Minka { .. });
            loop {
                if let Some(status) = child.try_wait()? {
                    bail!("{name} exited with {status}; see {}", log_path.display());
                }
                if Instant::now() > deadline {
                    bail!(
                        "{name} did not become ready in 60 s; see {}",
                        log_path.display()
                    );
                }
                let ready = if healthz {
                    http_status(port, "/healthz", health_token).await == Some(200)
                } else {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                };
                if ready {
                    break port;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let cpu_at_start = pid
            .and_then(|p| read_cpu_secs(&p.to_string()))
            .unwrap_or(0.0);
        Ok(Self {
            name,
            child: Some(child),
            pid,
            base_url: format!("ws://127.0.0.1:{port}{path}"),
            needs_token: matches!(target, Target::Minka { .. } | Target::Cmd { .. }),
            _data_dir: Some(data_dir),
            log_path: Some(log_path),
            cpu_at_start,
            http_port,
        })
    }

    /// The base WebSocket URL (no token).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The body of `GET /metrics` with `Authorization: Bearer <token>`, if the server has one
    /// and answers 200.
    pub async fn metrics_text(&self, token: &str) -> Option<String> {
        let port = self.http_port?;
        let (status, body) = http_get(port, "/metrics", token).await?;
        (status == 200).then_some(body)
    }

    /// The WebSocket URL a phone with this token connects to. The peers ignore the token, but it
    /// is sent to every server alike so the requests are the same.
    pub fn url(&self, token: &str) -> String {
        let _ = self.needs_token;
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}token={token}", self.base_url)
    }

    pub fn mem(&self) -> Option<Mem> {
        read_mem(self.pid?)
    }

    /// CPU seconds the server used since it became ready.
    pub fn cpu_secs(&self) -> Option<f64> {
        Some(read_cpu_secs(&self.pid?.to_string())? - self.cpu_at_start)
    }

    /// Is the process still alive?
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    pub async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
    }
}

/// Status code and body (de-chunked) of a plain HTTP/1.1 GET on loopback, or None.
async fn http_get(port: u16, path: &str, token: &str) -> Option<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..split]).to_string();
        let body = &buf[split + 4..];
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        };
        Some((status, String::from_utf8_lossy(&body).to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()?
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]).to_string();
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The status code of a plain HTTP GET on loopback, or None.
async fn http_status(port: u16, path: &str, token: &str) -> Option<u16> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_samples() {
        let text = "# HELP minka_fsync_seconds x\n# TYPE minka_fsync_seconds histogram\n\
                    minka_fsync_seconds_bucket{le=\"0.001\"} 3\nminka_fsync_seconds_sum 0.25\n\
                    minka_fsync_seconds_count 7\nminka_fsync_group_size_count 5\n";
        assert_eq!(
            prometheus_value(text, "minka_fsync_seconds_count"),
            Some(7.0)
        );
        assert_eq!(
            prometheus_value(text, "minka_fsync_seconds_sum"),
            Some(0.25)
        );
        assert_eq!(
            prometheus_value(text, "minka_fsync_group_size_count"),
            Some(5.0)
        );
        assert_eq!(prometheus_value(text, "minka_fsync_group_size_sum"), None);
    }

    #[test]
    fn dechunks_http_bodies() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n"),
            b"hello world!"
        );
        assert_eq!(dechunk(b"3;ext=1\r\nabc\r\n0\r\n\r\n"), b"abc");
    }
}
