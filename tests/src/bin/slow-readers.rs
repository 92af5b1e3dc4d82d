//! Server memory with clients that never read, against the same run with clients that read.
//!
//! `MINKA_BIN=target/release/minka cargo run --release -p minka-tests --bin slow-readers -- [readers] [rounds] [KiB] [random]`
//! (defaults 50, 100 and 256). One writer appends `KiB` of a repeated phrase to a shared
//! proposal's description per round, or with `random` sets its category to `KiB` of random
//! characters (one operation, and it does not compress: every relayed frame is about that size,
//! so the socket buffers fill); `readers`
//! other connections follow the document. In the first run they read everything; in the second they
//! stop reading after the first sync and never drain their sockets. Prints the server's resident
//! memory (VmRSS) before, at its peak and at the end of each run (2 s after the last round; 35 s
//! for the readers that never read, so writes stalled for two heartbeats have been given up on),
//! and how many connections the server dropped for not reading.

use std::time::Duration;

use automerge::Automerge;
use crdt_core::schema::{apply_edit, Edit, NewDocument, NewProposal};
use crdt_core::{DocumentId, Ubigeo, UserId};
use minka_tests::chaos::{noise, set_category};
use minka_tests::harness::{token, ProtoClient, TestServer};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn proposal() -> Automerge {
    NewProposal {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Losa multiusos".into(),
        description: String::new(),
        zone: "Collique".into(),
        category: "deporte".into(),
        beneficiaries: 100,
        estimated_cost: 100_000,
        cofinancing: 0,
        created_by: UserId::new("u-ana").unwrap(),
        coauthors: vec![],
    }
    .create(None, 1_790_000_000)
}

async fn run(
    readers: usize,
    rounds: usize,
    kib: usize,
    random: bool,
    reading: bool,
) -> (u64, u64, u64, f64) {
    let server = TestServer::start_with(&["--send-queue", "64"]).expect("server");
    let pid = server.pid().expect("pid");
    let id = DocumentId::random();
    let mut doc = proposal();
    let mut writer = ProtoClient::connect(
        &server.ws_url(&token("u-ana", &["leader"], "150110")),
        "writer",
    )
    .await
    .unwrap();
    writer.sync_doc(id, &mut doc).await.unwrap();
    let mut followers = Vec::new();
    for i in 0..readers {
        let url = server.ws_url(&token(&format!("u-r{i}"), &["leader"], "150110"));
        let mut c = ProtoClient::connect(&url, &format!("reader-{i}"))
            .await
            .unwrap();
        let mut copy = Automerge::new();
        c.request_doc(id, &mut copy).await.unwrap();
        followers.push((c, copy));
    }
    let before = rss_kib(pid);
    let mut peak = before;
    let phrase = "presupuesto participativo ".repeat(kib * 1024 / 26);
    let mut rng = rand::thread_rng();
    for r in 0..rounds {
        if random {
            set_category(&mut doc, &noise(&mut rng, kib * 1024));
        } else {
            let len = automerge::ReadDoc::length(
                &doc,
                automerge::ReadDoc::get(&doc, automerge::ROOT, "description")
                    .unwrap()
                    .unwrap()
                    .1,
            );
            apply_edit(
                &mut doc,
                &Edit::SpliceText {
                    field: "description".into(),
                    pos: len,
                    delete: 0,
                    insert: format!("{r} {phrase}"),
                },
                1_790_000_100 + r as i64,
            )
            .unwrap();
        }
        writer.sync_doc(id, &mut doc).await.unwrap();
        if reading {
            for (c, copy) in followers.iter_mut() {
                while let Ok(Some(_)) = c.next(Duration::from_millis(1)).await {}
                let _ = copy;
            }
        }
        peak = peak.max(rss_kib(pid));
    }
    // Long enough for the server to give up on a write stalled for two heartbeats (15 s each).
    let settle = if reading { 2 } else { 35 };
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let end = rss_kib(pid);
    let dropped = server
        .metric("minka_slow_consumers_closed_total")
        .unwrap_or(0.0);
    drop(followers);
    (before, peak, end, dropped)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let readers: usize = args.next().map_or(50, |a| a.parse().expect("readers"));
    let rounds: usize = args.next().map_or(100, |a| a.parse().expect("rounds"));
    let kib: usize = args.next().map_or(256, |a| a.parse().expect("KiB"));
    let random = args.next().is_some_and(|a| a == "random");
    for (name, reading) in [
        ("readers that read", true),
        ("readers that never read", false),
    ] {
        let (before, peak, end, dropped) = run(readers, rounds, kib, random, reading).await;
        let text = if random { "random" } else { "repeated" };
        println!(
            "{name}: {readers} readers, {rounds} rounds of {kib} KiB ({text}): RSS before {} MiB, peak {} MiB, end {} MiB; dropped for not reading: {dropped}",
            before / 1024,
            peak / 1024,
            end / 1024
        );
    }
}
