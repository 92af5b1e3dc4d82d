//! Crash tests against the real binary and real sled: writers write continuously while the server
//! is killed with SIGKILL at random moments (and right after a compaction), then `minka check`
//! runs on the killed store, the server restarts on the same directory, and a fresh client checks
//! that every change the server acknowledged is there.
//!
//! Rounds: `MINKA_KILL_ROUNDS` (default 20) for the kill loop, `MINKA_COMPACTION_KILL_ROUNDS`
//! (default 12) for the compaction variant; `scripts/kill-loop` runs 200 of each.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crdt_core::DocumentId;
use minka_tests::chaos::{
    acknowledged, comas_proposal, verify_present, Tracked, WriteOpts, Writer,
};
use minka_tests::harness::{token, ProtoClient, TestServer};
use rand::{Rng, SeedableRng};

/// The two tests run one after the other: each kills servers under load on a two-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn leader(sub: &str) -> String {
    token(sub, &["leader"], "150110")
}

fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` writers, each with `own` proposals of its own and a copy of one proposal all of them
/// co-author; every document is uploaded (and acknowledged) before the first round.
async fn writers(server: &TestServer, n: usize, own: usize, seed: u64) -> Vec<Writer> {
    let subs: Vec<String> = (0..n).map(|i| format!("u-w{i}")).collect();
    let shared_id = DocumentId::random();
    let shared = comas_proposal(&subs[0], &subs[1..], "Mercado compartido");
    let mut out = Vec::new();
    for (i, sub) in subs.iter().enumerate() {
        let mut docs = vec![Tracked::new(
            shared_id,
            shared.fork().with_actor(automerge::ActorId::random()),
        )];
        for k in 0..own {
            docs.push(Tracked::new(
                DocumentId::random(),
                comas_proposal(sub, &[], &format!("Propuesta {k} de {sub}")),
            ));
        }
        let mut w = Writer::new(sub, docs, seed + i as u64);
        let mut c = ProtoClient::connect(&server.ws_url(&leader(sub)), &w.peer_id)
            .await
            .unwrap();
        for d in &mut w.docs {
            let events = c.sync_doc(d.id, &mut d.doc).await.unwrap();
            assert!(events.is_empty(), "{events:?}");
            d.acked_heads.extend(c.server_heads(d.id).unwrap());
        }
        out.push(w);
    }
    out
}

/// Runs every writer on its own connection until `kill` returns (it kills the server), then
/// gives the writers back.
async fn write_until_killed(
    server: &mut TestServer,
    writers: Vec<Writer>,
    opts: &WriteOpts,
    kill: impl FnOnce(&mut TestServer),
) -> Vec<Writer> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            let url = server.ws_url(&leader(&w.sub));
            let (stop, opts) = (stop.clone(), opts.clone());
            tokio::spawn(async move {
                w.run_connection(&url, &stop, &opts, Duration::ZERO).await;
                w
            })
        })
        .collect();
    kill(server);
    stop.store(true, Ordering::SeqCst);
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("a writer did not notice the killed server")
                .unwrap(),
        );
    }
    out
}

#[derive(Default)]
struct Totals {
    rounds: usize,
    writes: u64,
    acknowledged_checks: usize,
    found_checks: usize,
    final_acknowledged: usize,
    final_found: usize,
}

/// After a kill: `minka check` on the killed store, restart, and a fresh client finds every
/// acknowledged change of every document. Returns (acknowledged, found).
async fn check_after_kill(
    server: &mut TestServer,
    writers: &mut [Writer],
    round: usize,
) -> (usize, usize) {
    let t0 = Instant::now();
    let (ok, out) = server.tool(&["check"]).unwrap();
    let t_check = t0.elapsed();
    assert!(
        ok && out.contains("store OK"),
        "round {round}: minka check failed on the killed store:\n{out}"
    );
    server.restart().unwrap();
    let t_restart = t0.elapsed();
    let acked = acknowledged(writers.iter_mut());
    let t_acked = t0.elapsed();
    let p = verify_present(
        &server.ws_url(&leader("u-verify")),
        &format!("peer-verify-{round}"),
        &acked,
    )
    .await
    .unwrap();
    assert!(
        p.unavailable.is_empty(),
        "round {round}: documents lost: {:?}",
        p.unavailable
    );
    if !p.missing.is_empty() {
        // Tell a slow answer from a loss: ask again, and keep the store for a post-mortem.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let again = verify_present(
            &server.ws_url(&leader("u-verify")),
            &format!("peer-reverify-{round}"),
            &acked,
        )
        .await
        .unwrap();
        let docs: HashSet<_> = p.missing.iter().map(|(d, _)| *d).collect();
        for d in &docs {
            println!(
                "round {round}: document {d}: first look {} heads {:?}, second look {} missing, heads {:?}",
                p.missing.iter().filter(|(x, _)| x == d).count(),
                p.heads.get(d),
                again.missing.iter().filter(|(x, _)| x == d).count(),
                again.heads.get(d)
            );
            for l in server.log().lines().filter(|l| l.contains(&d.to_string())) {
                println!("LOG {l}");
            }
        }
        server.kill9();
        let keep = std::env::temp_dir().join(format!("minka-crash-failure-{round}"));
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(&server.data_dir)
            .arg(&keep)
            .status();
        println!("round {round}: store kept in {}", keep.display());
    }
    assert!(
        p.missing.is_empty(),
        "round {round}: {} of {} acknowledged changes missing: {:?}",
        p.missing.len(),
        p.acknowledged,
        &p.missing[..p.missing.len().min(5)]
    );
    for w in writers.iter() {
        assert!(
            w.errors.is_empty(),
            "round {round}: {} got errors: {:?}",
            w.sub,
            w.errors
        );
    }
    if std::env::var("MINKA_CRASH_TIMING").is_ok() {
        println!(
            "round {round} timing: check {t_check:?}, restart {t_restart:?}, acked {t_acked:?}, verified {:?}",
            t0.elapsed()
        );
    }
    (p.acknowledged, p.found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_no_acknowledged_change() {
    let _serial = SERIAL.lock().await;
    let n_rounds = rounds("MINKA_KILL_ROUNDS", 20);
    let seed: u64 = rand::random();
    println!("kill loop: {n_rounds} rounds, seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut server = TestServer::start().unwrap();
    let mut ws = writers(&server, 6, 2, seed).await;
    // Paced so a debug build keeps up: most changes are acknowledged before the kill.
    let opts = WriteOpts {
        pause: Duration::from_millis(25),
        max_unacked: 20,
        ..WriteOpts::default()
    };
    let mut t = Totals::default();
    let started = Instant::now();
    for round in 0..n_rounds {
        let before: u64 = ws.iter().map(|w| w.writes).sum();
        let acked_before: usize = acknowledged(&mut ws).values().map(|s| s.len()).sum();
        let delay = Duration::from_millis(rng.gen_range(300..2500));
        ws = write_until_killed(&mut server, ws, &opts, |s| {
            std::thread::sleep(delay);
            s.kill9();
        })
        .await;
        let writes = ws.iter().map(|w| w.writes).sum::<u64>() - before;
        let (acked, found) = check_after_kill(&mut server, &mut ws, round).await;
        println!(
            "round {round}: killed after {delay:?}, {writes} changes written, {} newly acknowledged, {acked} acknowledged so far, {found} found",
            acked - acked_before
        );
        t.rounds += 1;
        t.writes += writes;
        t.acknowledged_checks += acked;
        t.found_checks += found;
        t.final_acknowledged = acked;
        t.final_found = found;
    }
    println!(
        "kill loop totals: {} rounds in {:?}, {} changes written, {} acknowledged changes at the end, {} found; over all rounds {} acknowledged-change checks, {} found",
        t.rounds,
        started.elapsed(),
        t.writes,
        t.final_acknowledged,
        t.final_found,
        t.acknowledged_checks,
        t.found_checks
    );
    // The writers made progress between kills (else the test proves nothing).
    let initial = 6 * 3;
    assert!(
        t.final_acknowledged > initial + 5 * n_rounds,
        "too few acknowledged changes to mean anything: {}",
        t.final_acknowledged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_compaction_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let n_rounds = rounds("MINKA_COMPACTION_KILL_ROUNDS", 12);
    let seed: u64 = rand::random();
    println!("compaction kills: {n_rounds} rounds, seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut server = TestServer::start().unwrap();
    // Many small documents written in tiny increments: each compacts every few batches.
    let mut ws = writers(&server, 4, 4, seed).await;
    let opts = WriteOpts {
        text_len: 4,
        pause: Duration::from_millis(3),
        max_unacked: 20,
        ..WriteOpts::default()
    };
    let mut t = Totals::default();
    let mut after_compaction = 0;
    let mut compactions_seen = 0.0;
    for round in 0..n_rounds {
        let acked_before: usize = acknowledged(&mut ws).values().map(|s| s.len()).sum();
        let on_compaction = round % 2 == 0;
        let delay = Duration::from_millis(rng.gen_range(100..1200));
        let mut how = String::new();
        ws = write_until_killed(&mut server, ws, &opts, |s| {
            if on_compaction {
                // Kill as soon as the counter moves: the compaction's batch has just been
                // written and the next group commit may or may not have covered it.
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut seen = None;
                while Instant::now() < deadline {
                    let n = s.metric("minka_compactions_total").unwrap_or(0.0);
                    if n > 0.0 {
                        s.kill9();
                        seen = Some(n);
                        break;
                    }
                }
                match seen {
                    Some(n) => {
                        compactions_seen += n;
                        how = format!("killed right after compaction #{n}");
                    }
                    None => {
                        how = "no compaction in 20 s; killed anyway".into();
                        s.kill9();
                    }
                }
            } else {
                std::thread::sleep(delay);
                // Read the counter before killing (the count dies with the process).
                compactions_seen += s.metric("minka_compactions_total").unwrap_or(0.0);
                s.kill9();
                how = format!("killed after {delay:?}");
            }
        })
        .await;
        if how.starts_with("killed right after") {
            after_compaction += 1;
        }
        let (acked, found) = check_after_kill(&mut server, &mut ws, round).await;
        println!(
            "round {round}: {how}, {} newly acknowledged, {acked} acknowledged so far, {found} found",
            acked - acked_before
        );
        t.rounds += 1;
        t.final_acknowledged = acked;
        t.final_found = found;
        t.acknowledged_checks += acked;
        t.found_checks += found;
    }
    println!(
        "compaction kill totals: {} rounds ({after_compaction} right after a compaction), {compactions_seen} compactions seen, {} acknowledged changes at the end, {} found; over all rounds {} checks, {} found",
        t.rounds, t.final_acknowledged, t.final_found, t.acknowledged_checks, t.found_checks
    );
    assert_eq!(
        after_compaction,
        n_rounds.div_ceil(2),
        "every even round must kill right after a compaction"
    );
}
