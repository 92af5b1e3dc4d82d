//! Fault tests against the real binary and real sled: connections cut at random points by a
//! proxy, a data directory that fills up (a small tmpfs), and a data directory that is read-only.
//!
//! The disk tests mount tmpfs, so they need root; without it (or if mounting fails) they print
//! why and return.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crdt_core::DocumentId;
use minka_tests::chaos::{
    acknowledged, append_text, comas_proposal, verify_present, CutProxy, Tracked, WriteOpts, Writer,
};
use minka_tests::harness::{token, TestServer};

fn leader(sub: &str) -> String {
    token(sub, &["leader"], "150110")
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            &dir,
        )?;
        Ok(Self {
            dir,
            _parent: parent,
        })
    }

    fn remount(&self, opts: &str) -> Result<(), String> {
        mount(&["-o", &format!("remount,{opts}")], &self.dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn mount(args: &[&str], dir: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A tmpfs, or `None` with the reason printed (the test then skips).
fn tmpfs_or_skip(test: &str, size: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(size) {
        Ok(t) => Some(t),
        Err(e) => {
            println!("SKIPPED {test}: cannot mount a tmpfs (needs root): {e}");
            None
        }
    }
}

/// One writer's documents: `n` proposals of its own.
fn own_docs(sub: &str, n: usize) -> Vec<Tracked> {
    (0..n)
        .map(|k| {
            Tracked::new(
                DocumentId::random(),
                comas_proposal(sub, &[], &format!("Propuesta {k} de {sub}")),
            )
        })
        .collect()
}

/// Writes one more change to every document and checks the server acknowledges all of it.
async fn new_writes_are_acknowledged(url: &str, w: &mut Writer) {
    for d in &mut w.docs {
        append_text(&mut d.doc, " Después.");
    }
    assert!(
        w.settle(url).await.unwrap(),
        "new writes after recovery were not acknowledged; errors {:?}",
        w.errors
    );
}

/// Restarts on the same directory after `minka check` passed, and checks every acknowledged
/// change of `w` is there.
async fn recovered_with_everything(server: &mut TestServer, w: &mut Writer, what: &str) -> usize {
    let (ok, out) = server.tool(&["check"]).unwrap();
    assert!(
        ok && out.contains("store OK"),
        "{what}: minka check:\n{out}"
    );
    server.restart().unwrap();
    let acked = acknowledged([w]);
    let p = verify_present(&server.ws_url(&leader("u-verify")), "peer-verify", &acked)
        .await
        .unwrap();
    assert!(
        p.unavailable.is_empty(),
        "{what}: lost documents {:?}",
        p.unavailable
    );
    assert!(
        p.missing.is_empty(),
        "{what}: {} of {} acknowledged changes missing",
        p.missing.len(),
        p.acknowledged
    );
    println!(
        "{what}: {} acknowledged changes, {} found after restart",
        p.acknowledged, p.found
    );
    p.found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_cut_at_random_points_converge_without_losing_acknowledged_changes() {
    let server = TestServer::start().unwrap();
    // Budgets from 512 bytes (cut during the handshake) to 16 KiB (after a few dozen changes).
    let proxy = CutProxy::start(&server.addr, 512, 16 * 1024).await.unwrap();
    let subs: Vec<String> = (0..4).map(|i| format!("u-cut{i}")).collect();
    let shared_id = DocumentId::random();
    let shared = comas_proposal(&subs[0], &subs[1..], "Mercado compartido");
    let mut writers = Vec::new();
    for (i, sub) in subs.iter().enumerate() {
        let mut docs = own_docs(sub, 2);
        docs.insert(
            0,
            Tracked::new(
                shared_id,
                shared.fork().with_actor(automerge::ActorId::random()),
            ),
        );
        let mut w = Writer::new(sub, docs, 100 + i as u64);
        // Created before the cutting starts, the shared document first by its author.
        assert!(w.settle(&server.ws_url(&leader(sub))).await.unwrap());
        writers.push(w);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            let url = proxy.url(&leader(&w.sub));
            let stop = stop.clone();
            tokio::spawn(async move {
                let opts = WriteOpts {
                    pause: Duration::from_millis(20),
                    ..WriteOpts::default()
                };
                while !stop.load(Ordering::SeqCst) {
                    w.run_connection(&url, &stop, &opts, Duration::ZERO).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                w
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.store(true, Ordering::SeqCst);
    let mut writers = Vec::new();
    for t in tasks {
        writers.push(t.await.unwrap());
    }
    let cuts = proxy.cuts();
    let connections = proxy.accepted();
    // Quiet now: everyone syncs to the end through the proxy, twice, so the shared document's
    // last changes reach the writers that settled before them.
    proxy.set_cutting(false);
    proxy.cut_all();
    for _ in 0..2 {
        for w in &mut writers {
            let ok = w.settle(&proxy.url(&leader(&w.sub))).await.unwrap();
            assert!(ok, "{} did not settle: {:?}", w.sub, w.ends.last());
        }
    }
    let acked = acknowledged(&mut writers);
    let p = verify_present(&server.ws_url(&leader("u-verify")), "peer-verify", &acked)
        .await
        .unwrap();
    let writes: u64 = writers.iter().map(|w| w.writes).sum();
    println!(
        "cuts: {connections} connections, {cuts} cut mid-traffic, {writes} changes written, {} acknowledged, {} found",
        p.acknowledged, p.found
    );
    assert!(cuts >= 20, "too few cuts to mean anything: {cuts}");
    assert!(p.missing.is_empty() && p.unavailable.is_empty(), "{p:?}");
    // Everything converged: each writer's copy has the server's heads, and holds every change
    // it wrote (it was acknowledged: `settle` saw the server's heads equal its own).
    for w in &writers {
        assert!(w.errors.is_empty(), "{}: {:?}", w.sub, w.errors);
        for d in &w.docs {
            assert_eq!(
                d.doc.get_heads(),
                p.heads[&d.id],
                "{} disagrees with the server on {}",
                w.sub,
                d.id
            );
        }
    }
    assert_eq!(p.acknowledged, p.found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_full_refuses_clearly_and_loses_nothing_acknowledged() {
    let Some(fs) = tmpfs_or_skip("disk_full", "4m") else {
        return;
    };
    let mut server = TestServer::unstarted_at(&fs.dir.join("data"), &[]);
    server.restart().unwrap();
    let mut w = Writer::new("u-full", own_docs("u-full", 3), 7);
    let url = server.ws_url(&leader("u-full"));
    let stop = Arc::new(AtomicBool::new(false));
    // 64 KiB of random text per change, as one scalar: the disk fills in a few dozen changes.
    let opts = WriteOpts {
        text_len: 64 * 1024,
        pause: Duration::from_millis(20),
        max_writes: 500,
        scalar: true,
        max_unacked: 0,
    };
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            w.run_connection(&url, &stop, &opts, Duration::from_secs(5))
                .await;
            w
        }
    });
    let exit = server.wait_exit(Duration::from_secs(120));
    stop.store(true, Ordering::SeqCst);
    let mut w = task.await.unwrap();
    let log = server.log();
    println!(
        "disk full: exit {exit:?}, {} changes written, connection ended: {:?}, errors: {:?}",
        w.writes, w.ends, w.errors
    );
    assert!(
        log.contains("No space left on device"),
        "the disk never filled:\n{log}"
    );
    // The server stops (sled keeps the first I/O error: it cannot recover in-process) ...
    let exit = exit.expect("the server kept running on a store that cannot write");
    assert!(!exit.success(), "{exit:?}");
    // ... and says why to the peer: an `error` before the close, and the close reason. (A
    // per-document "your changes were not stored" error also goes out when the failed batch is
    // answered before the connection closes; that is a race, so it is not required.)
    assert!(
        w.errors.iter().any(|e| e.contains("store cannot write")),
        "no error saying the store cannot write: {:?}",
        w.errors
    );
    assert!(
        w.ends.iter().any(|e| e.contains("store cannot write")),
        "the close did not say the store cannot write: {:?}",
        w.ends
    );
    let acked_full = acknowledged([&mut w])
        .values()
        .map(|s| s.len())
        .sum::<usize>();
    assert!(
        acked_full > 3,
        "nothing was acknowledged before the disk filled"
    );

    // Still full: a restart on the same directory. Then space returns.
    fs.remount("size=64m").unwrap();
    let found = recovered_with_everything(&mut server, &mut w, "disk full").await;
    assert_eq!(found, acked_full);
    let url = server.ws_url(&leader("u-full"));
    new_writes_are_acknowledged(&url, &mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_data_dir_refuses_to_start_and_recovers_after_remount() {
    let Some(fs) = tmpfs_or_skip("read_only", "32m") else {
        return;
    };
    let mut server = TestServer::unstarted_at(&fs.dir.join("data"), &[]);
    server.restart().unwrap();
    let mut w = Writer::new("u-ro", own_docs("u-ro", 2), 9);
    let url = server.ws_url(&leader("u-ro"));
    assert!(w.settle(&url).await.unwrap());
    new_writes_are_acknowledged(&url, &mut w).await;

    // Read-only while serving: Linux refuses to remount a filesystem read-only while a process
    // holds a file on it open for writing (sled's log), so the store keeps working.
    match fs.remount("ro") {
        Err(e) => {
            println!("read-only while serving: the kernel refused the remount: {e}");
            assert!(e.contains("busy"), "{e}");
            new_writes_are_acknowledged(&url, &mut w).await;
        }
        Ok(()) => {
            // A kernel that allows it: the next write must fail clearly, never be acknowledged.
            for d in &mut w.docs {
                append_text(&mut d.doc, " Sin disco.");
            }
            let ok = w.settle(&url).await.unwrap_or(false);
            assert!(!ok, "a write to a read-only store was acknowledged");
            server
                .wait_exit(Duration::from_secs(30))
                .expect("server kept running");
            fs.remount("rw").unwrap();
        }
    }

    // Starting on a read-only directory: a clear error, exit non-zero.
    assert!(server.terminate(), "{}", server.log());
    fs.remount("ro").unwrap();
    let started = server.restart();
    assert!(started.is_err(), "the server started on a read-only store");
    let exit = server
        .wait_exit(Duration::from_secs(10))
        .expect("still running");
    assert!(!exit.success());
    let log = server.log();
    assert!(log.contains("Read-only file system"), "{log}");
    println!(
        "read-only start: {exit:?}, log says: {}",
        log.lines()
            .rev()
            .find(|l| l.contains("Read-only"))
            .unwrap_or("")
    );

    // Writable again: the restart works, everything acknowledged is there, writes go on.
    fs.remount("rw").unwrap();
    recovered_with_everything(&mut server, &mut w, "read-only").await;
    new_writes_are_acknowledged(&server.ws_url(&leader("u-ro")), &mut w).await;
}
