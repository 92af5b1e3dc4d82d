//! Measurements beside the wire: minka's fsync counters from `/metrics`, the raw automerge cost
//! floor of a workload's changes, and waiting for a phase to go quiet.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use automerge::{Automerge, Change};
use serde::{Deserialize, Serialize};

use super::phone::Progress;
use super::server::{prometheus_value, ServerProc};

/// An HS256 token with the `admin` role for every district (`"*"`), for `GET /metrics`.
pub fn admin_token(secret: &str) -> String {
    super::workloads::token_in(secret, "bench-admin", &["admin"], "*")
}

/// The fsync counters of minka's `/metrics` at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FsyncSnapshot {
    /// `minka_fsync_seconds_count`: group commits (flush + fsync) done.
    pub fsyncs: f64,
    /// `minka_fsync_seconds_sum`.
    pub fsync_secs: f64,
    /// `minka_fsync_group_size_count` and `_sum`: group commits, and the batches they made durable.
    pub groups: f64,
    pub batches: f64,
}

/// Reads the fsync counters, or None when the server has no `/metrics` (the peers) or refuses
/// the token.
pub async fn fsync_snapshot(server: &ServerProc, admin_token: &str) -> Option<FsyncSnapshot> {
    let text = server.metrics_text(admin_token).await?;
    Some(FsyncSnapshot {
        fsyncs: prometheus_value(&text, "minka_fsync_seconds_count")?,
        fsync_secs: prometheus_value(&text, "minka_fsync_seconds_sum")?,
        groups: prometheus_value(&text, "minka_fsync_group_size_count")?,
        batches: prometheus_value(&text, "minka_fsync_group_size_sum")?,
    })
}

/// What minka's fsync counters moved by during a phase.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FsyncStats {
    pub fsyncs: f64,
    /// Batches per group commit (`minka_fsync_group_size` sum ÷ count).
    pub mean_group_size: Option<f64>,
    /// Mean time of one group commit, milliseconds.
    pub mean_fsync_ms: Option<f64>,
}

pub fn fsync_delta(
    before: Option<FsyncSnapshot>,
    after: Option<FsyncSnapshot>,
) -> Option<FsyncStats> {
    let (b, a) = (before?, after?);
    let fsyncs = a.fsyncs - b.fsyncs;
    let groups = a.groups - b.groups;
    Some(FsyncStats {
        fsyncs,
        mean_group_size: (groups > 0.0).then(|| (a.batches - b.batches) / groups),
        mean_fsync_ms: (fsyncs > 0.0).then(|| (a.fsync_secs - b.fsync_secs) * 1000.0 / fsyncs),
    })
}

/// The cost floor: a raw automerge `apply_changes` of exactly the changes a workload sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawApply {
    pub changes: usize,
    pub docs: usize,
    pub reps: usize,
    /// Median thread CPU seconds of one repetition (all documents).
    pub cpu_secs: f64,
    /// Median wall-clock seconds of one repetition.
    pub wall_secs: f64,
    pub cpu_secs_min: f64,
    pub cpu_secs_max: f64,
}

/// CPU seconds of the calling thread, nanosecond resolution (`/proc/thread-self/schedstat`).
/// The kernel brings a running thread's figure up to date only at a scheduling event, so the
/// thread yields first (otherwise a read is up to a scheduler tick stale).
fn thread_cpu_secs() -> Option<f64> {
    std::thread::yield_now();
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Applies each document's changes to a copy of its base with one `apply_changes` call, `reps`
/// times, on one blocking thread (copies are made outside the timed part); the median is kept.
pub async fn raw_apply(work: Vec<(Automerge, Vec<Change>)>, reps: usize) -> Result<RawApply> {
    tokio::task::spawn_blocking(move || {
        let reps = reps.max(1);
        let mut cpu = Vec::with_capacity(reps);
        let mut wall = Vec::with_capacity(reps);
        for _ in 0..reps {
            let mut copies: Vec<(Automerge, Vec<Change>)> =
                work.iter().map(|(d, c)| (d.clone(), c.clone())).collect();
            let c0 = thread_cpu_secs();
            let w0 = Instant::now();
            for (doc, changes) in &mut copies {
                doc.apply_changes(std::mem::take(changes))
                    .map_err(|e| anyhow!("raw apply_changes: {e}"))?;
            }
            let w = w0.elapsed().as_secs_f64();
            let c = thread_cpu_secs().zip(c0).map(|(a, b)| a - b).unwrap_or(w);
            wall.push(w);
            cpu.push(c);
            drop(copies);
        }
        let min = cpu.iter().copied().fold(f64::INFINITY, f64::min);
        let max = cpu.iter().copied().fold(0.0, f64::max);
        Ok(RawApply {
            changes: work.iter().map(|(_, c)| c.len()).sum(),
            docs: work.len(),
            reps,
            cpu_secs: median(&mut cpu),
            wall_secs: median(&mut wall),
            cpu_secs_min: min,
            cpu_secs_max: max,
        })
    })
    .await
    .map_err(|e| anyhow!("raw apply task: {e}"))?
}

/// How a [`wait_settled_quiet`] ended.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    /// Every phone settled (or failed) and the phase went quiet before the deadline.
    pub finished: bool,
    /// When the phase went quiet, relative to `t0`: the later of the last data frame on any
    /// connection and the end of the last sample in which the server was busy.
    pub quiet_at: Option<Duration>,
    pub waited: Duration,
}

/// The server counts as busy in a 100 ms sample when it used at least this much CPU in it.
const SAMPLE: Duration = Duration::from_millis(100);
const BUSY_SECS: f64 = 0.03;

/// Waits until all `n` phones of a [`super::phone::Goal::Settle`] phase are settled (or failed)
/// and the phase has been quiet for `window`: no data frame either way on any connection and,
/// for a server process the harness started, less than 30% of a core of server CPU in every
/// 100 ms sample. A silent server is thus believed only once it has stopped working too.
pub async fn wait_settled_quiet(
    progress: &Progress,
    n: usize,
    t0: Instant,
    deadline: Instant,
    window: Duration,
    server: &ServerProc,
) -> Quiet {
    let mut last_cpu = server.cpu_secs();
    let mut last_busy = t0;
    let mut tick = tokio::time::interval(SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let cpu = server.cpu_secs();
        if let (Some(a), Some(b)) = (cpu, last_cpu) {
            if a - b >= BUSY_SECS - 1e-9 {
                last_busy = now;
            }
        }
        if cpu.is_some() {
            last_cpu = cpu;
        }
        let finished =
            progress.settled.load(Ordering::SeqCst) + progress.failed.load(Ordering::SeqCst) >= n;
        let last = progress.last_frame().max(last_busy).max(t0);
        if finished && now >= last + window {
            return Quiet {
                finished: true,
                quiet_at: Some(last - t0),
                waited: now - t0,
            };
        }
        if now >= deadline {
            return Quiet {
                finished: false,
                quiet_at: None,
                waited: now - t0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_deltas() {
        let before = FsyncSnapshot {
            fsyncs: 10.0,
            fsync_secs: 0.5,
            groups: 10.0,
            batches: 12.0,
        };
        let after = FsyncSnapshot {
            fsyncs: 14.0,
            fsync_secs: 0.54,
            groups: 14.0,
            batches: 24.0,
        };
        let d = fsync_delta(Some(before), Some(after)).unwrap();
        assert_eq!(d.fsyncs, 4.0);
        assert_eq!(d.mean_group_size, Some(3.0));
        assert!((d.mean_fsync_ms.unwrap() - 10.0).abs() < 1e-9);
        assert!(fsync_delta(None, Some(after)).is_none());
    }
}
