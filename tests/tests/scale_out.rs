//! Scale-out on real parts: two `minka serve` nodes sharing one PostgreSQL (started by the test,
//! loopback only) behind HAProxy running the repository's `deploy/haproxy.cfg`.
//!
//! - Routing: a district's phones all land on one node (the hash of the token's `district` claim,
//!   from the `token` parameter or the bearer header), and districts spread over both nodes.
//! - Relay: a phone on one node that asked for a document before it existed, then follows it,
//!   sees edits made by a phone on the other node, and the other way round.
//! - Failover: one node SIGKILLed in the middle of a write storm; its phones reconnect through
//!   HAProxy to the other node, every acknowledged change is there, everyone converges, and
//!   `minka check` passes on the database.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::{Automerge, ChangeHash, ReadDoc, ROOT};
use crdt_core::wire::Message;
use crdt_core::{DocumentId, Ubigeo};
use minka_tests::chaos::{
    acknowledged, append_text, proposal_in, verify_present, Tracked, WriteOpts, Writer,
};
use minka_tests::haproxy::HaProxy;
use minka_tests::harness::{http_request, token, Event, ProtoClient, TestServer};
use minka_tests::pg::PgCluster;

/// The two tests run one after the other: each runs a PostgreSQL, two nodes and a proxy.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn leader(sub: &str, district: Ubigeo) -> String {
    token(sub, &["leader"], &district.to_string())
}

/// PostgreSQL, two nodes on it (same JWT secret, as the harness gives every server) and HAProxy.
struct Cluster {
    proxy: HaProxy,
    nodes: Vec<TestServer>,
    pg: PgCluster,
}

impl Cluster {
    fn start() -> Cluster {
        let pg = PgCluster::start().unwrap();
        let url = pg.url();
        let nodes: Vec<TestServer> = (0..2)
            .map(|_| TestServer::start_with(&["--store", &url]).unwrap())
            .collect();
        let proxy = HaProxy::start([&nodes[0].addr, &nodes[1].addr]).unwrap();
        Cluster { proxy, nodes, pg }
    }

    /// `minka_connections_total` of each node.
    fn accepted(&self) -> Vec<f64> {
        self.nodes
            .iter()
            .map(|n| n.metric("minka_connections_total").unwrap())
            .collect()
    }
}

/// What the nodes logged above INFO, for a failure message.
fn node_trouble(nodes: &[TestServer]) -> String {
    let mut out = String::new();
    for (i, n) in nodes.iter().enumerate() {
        let log = n.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        out.push_str(&format!("node{} ({} lines):\n", i + 1, lines.len()));
        for l in lines.iter().rev().take(40).rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Receives on `c` until `done(doc)` holds (applying sync messages for `id`), up to `limit`;
/// the time it took.
async fn follow_until(
    c: &mut ProtoClient,
    id: DocumentId,
    doc: &mut Automerge,
    limit: Duration,
    done: impl Fn(&Automerge) -> bool,
) -> Duration {
    let start = Instant::now();
    while !done(doc) {
        let left = limit.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "not there after {limit:?}");
        match c.next(left).await.unwrap() {
            Some(Event::Message(Message::Sync(s))) if s.document_id == id.to_string() => {
                c.receive_sync(id, doc, &s).await.unwrap();
            }
            Some(Event::Closed(why)) => panic!("connection closed: {why:?}"),
            _ => {}
        }
    }
    start.elapsed()
}

fn description(doc: &Automerge) -> String {
    match doc.get(ROOT, "description").unwrap() {
        Some((_, field)) => doc.text(field).unwrap(),
        None => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn districts_route_to_one_node_each_and_phones_on_different_nodes_converge() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start();
    let proxy = &cluster.proxy;

    // Routing on the `token` parameter: three phones of a district, each writing a proposal of
    // its own through the proxy, all land on the same node.
    let mut districts = vec![Ubigeo::COMAS, Ubigeo::SAN_JUAN_DE_MIRAFLORES, Ubigeo::ATE];
    let more: Vec<Ubigeo> = Ubigeo::all()
        .filter(|d| !districts.contains(d))
        .take(3)
        .collect();
    districts.extend(more);
    let mut node_of: HashMap<Ubigeo, usize> = HashMap::new();
    for &district in &districts {
        let before = cluster.accepted();
        let mut phones = Vec::new();
        for k in 0..3 {
            let sub = format!("u-{district}-{k}");
            let mut c = ProtoClient::connect(&proxy.ws_url(&leader(&sub, district)), &sub)
                .await
                .unwrap();
            let id = DocumentId::random();
            let mut doc = proposal_in(district, &sub, &[], &format!("Propuesta {k}"));
            c.sync_doc(id, &mut doc).await.unwrap();
            assert_eq!(
                c.server_heads(id),
                Some(doc.get_heads()),
                "not acknowledged"
            );
            phones.push(c);
        }
        let after = cluster.accepted();
        let gained: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        println!("district {district}: connections gained per node {gained:?}");
        let node = gained
            .iter()
            .position(|g| *g == 3.0)
            .unwrap_or_else(|| panic!("{district}'s phones were split over nodes: {gained:?}"));
        assert_eq!(gained.iter().sum::<f64>(), 3.0, "{gained:?}");
        node_of.insert(district, node);
    }
    let used: HashSet<usize> = node_of.values().copied().collect();
    assert_eq!(used.len(), 2, "every district on one node: {node_of:?}");

    // Routing on the bearer header (HTTP API clients): the same node as the district's phones,
    // as HAProxy's log of each request shows.
    for &district in &districts {
        let t = leader("u-reviewer", district);
        let (status, _) = http_request(&proxy.addr, "GET", "/api/v1/docs", Some(&t)).unwrap();
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = proxy.log();
    let api_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("GET /api/v1/docs"))
        .collect();
    assert_eq!(api_lines.len(), districts.len(), "HAProxy log:\n{log}");
    for (district, line) in districts.iter().zip(&api_lines) {
        let expected = format!("minka_nodes/node{}", node_of[district] + 1);
        assert!(
            line.contains(&expected),
            "{district} by bearer header: expected {expected} in {line}"
        );
    }

    // Relay across nodes. Phone B, a coauthor, is on the node the proxy does NOT pick for
    // Comas, and asks for the document before it exists (as the stock client may: it then
    // waits for the server to send it).
    let here = node_of[&Ubigeo::COMAS];
    let there = &cluster.nodes[1 - here];
    let (a_sub, b_sub) = ("u-relay-a".to_string(), "u-relay-b".to_string());
    let id = DocumentId::random();
    let mut b = ProtoClient::connect(&there.ws_url(&leader(&b_sub, Ubigeo::COMAS)), &b_sub)
        .await
        .unwrap();
    let mut b_doc = Automerge::new();
    let events = b.request_doc(id, &mut b_doc).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Message(Message::DocUnavailable(_)))),
        "{events:?}"
    );
    let mut a = ProtoClient::connect(&proxy.ws_url(&leader(&a_sub, Ubigeo::COMAS)), &a_sub)
        .await
        .unwrap();
    let mut a_doc = proposal_in(
        Ubigeo::COMAS,
        &a_sub,
        std::slice::from_ref(&b_sub),
        "Losa deportiva",
    );
    a.sync_doc(id, &mut a_doc).await.unwrap();
    assert_eq!(a.server_heads(id), Some(a_doc.get_heads()));
    let limit = Duration::from_secs(10);
    let heads = a_doc.get_heads();
    let created = follow_until(&mut b, id, &mut b_doc, limit, |d| d.get_heads() == heads).await;

    append_text(&mut a_doc, " Con graderías.");
    let sent = Instant::now();
    a.send_sync(id, &a_doc).await.unwrap();
    let a_to_b = follow_until(&mut b, id, &mut b_doc, limit, |d| {
        description(d).ends_with(" Con graderías.")
    })
    .await;
    let a_to_b = a_to_b.max(sent.elapsed());

    append_text(&mut b_doc, " Y techo.");
    b.send_sync(id, &b_doc).await.unwrap();
    let b_to_a = follow_until(&mut a, id, &mut a_doc, limit, |d| {
        description(d).ends_with(" Y techo.")
    })
    .await;
    println!(
        "relay across nodes: created {created:?}, edit node{}->node{} {a_to_b:?}, back {b_to_a:?}",
        here + 1,
        2 - here
    );
    // Both settle on the same document.
    a.sync_doc(id, &mut a_doc).await.unwrap();
    b.sync_doc(id, &mut b_doc).await.unwrap();
    assert_eq!(a_doc.get_heads(), b_doc.get_heads());
    assert_eq!(description(&a_doc), description(&b_doc));
    drop(cluster.pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_storm_loses_nothing_acknowledged() {
    let _serial = SERIAL.lock().await;
    let Cluster {
        proxy,
        mut nodes,
        pg,
    } = Cluster::start();
    let url = pg.url();

    // Two districts, three leaders each: a shared proposal of the district (all coauthors)
    // plus two of their own.
    let mut writers = Vec::new();
    for (d, district) in [Ubigeo::COMAS, Ubigeo::SAN_JUAN_DE_MIRAFLORES]
        .into_iter()
        .enumerate()
    {
        let subs: Vec<String> = (0..3).map(|i| format!("u-storm{d}-{i}")).collect();
        let shared_id = DocumentId::random();
        let shared = proposal_in(district, &subs[0], &subs[1..], "Mercado compartido");
        for (i, sub) in subs.iter().enumerate() {
            let mut docs: Vec<Tracked> = (0..2)
                .map(|k| {
                    Tracked::new(
                        DocumentId::random(),
                        proposal_in(district, sub, &[], &format!("Propuesta {k} de {sub}")),
                    )
                })
                .collect();
            docs.insert(
                0,
                Tracked::new(
                    shared_id,
                    shared.fork().with_actor(automerge::ActorId::random()),
                ),
            );
            let mut w = Writer::new(sub, docs, 200 + 10 * d as u64 + i as u64);
            // Created before the storm, the shared document first by its author.
            assert!(w
                .settle(&proxy.ws_url(&leader(sub, district)))
                .await
                .unwrap());
            writers.push((district, w));
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|(district, mut w)| {
            let url = proxy.ws_url(&leader(&w.sub, district));
            let stop = stop.clone();
            tokio::spawn(async move {
                let opts = WriteOpts {
                    pause: Duration::from_millis(20),
                    max_unacked: 20,
                    ..WriteOpts::default()
                };
                let mut connections = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    connections += 1;
                    w.run_connection(&url, &stop, &opts, Duration::ZERO).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (district, w, connections)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(5)).await;
    // The victim: the node holding the most phones right now.
    let open: Vec<f64> = nodes
        .iter()
        .map(|n| n.metric("minka_connections").unwrap())
        .collect();
    let victim = if open[0] >= open[1] { 0 } else { 1 };
    let survivor = 1 - victim;
    let survivor_before = nodes[survivor].metric("minka_connections_total").unwrap();
    nodes[victim].kill9();
    let killed_at = Instant::now();
    println!(
        "open connections per node {open:?}: SIGKILL node{}",
        victim + 1
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::SeqCst);
    let mut writers = Vec::new();
    let mut connections = 0;
    for t in tasks {
        let (district, w, n) = t.await.unwrap();
        connections += n;
        writers.push((district, w));
    }
    let moved = nodes[survivor].metric("minka_connections_total").unwrap() - survivor_before;
    println!(
        "{connections} connections through the proxy, {moved} accepted by node{} after the kill ({:?} ago)",
        survivor + 1,
        killed_at.elapsed()
    );
    assert!(
        moved >= open[victim],
        "the victim's {} phones did not move to the survivor ({moved} connections)",
        open[victim]
    );

    // Quiet now: everyone syncs to the end through the proxy, twice, so the shared documents'
    // last changes reach the writers that settled before them.
    for _ in 0..2 {
        for (district, w) in &mut writers {
            let settled = w.settle(&proxy.ws_url(&leader(&w.sub, *district))).await;
            if !matches!(settled, Ok(true)) {
                panic!(
                    "{} did not settle: {settled:?} {:?}; errors {:?}\n{}",
                    w.sub,
                    w.ends.last(),
                    w.errors,
                    node_trouble(&nodes)
                );
            }
        }
    }
    let writes: u64 = writers.iter().map(|(_, w)| w.writes).sum();
    let mut acked_total = 0;
    let mut found_total = 0;
    for district in [Ubigeo::COMAS, Ubigeo::SAN_JUAN_DE_MIRAFLORES] {
        let mut mine: Vec<&mut Writer> = writers
            .iter_mut()
            .filter(|(d, _)| *d == district)
            .map(|(_, w)| w)
            .collect();
        let acked: HashMap<DocumentId, HashSet<ChangeHash>> =
            acknowledged(mine.iter_mut().map(|w| &mut **w));
        let p = verify_present(
            &proxy.ws_url(&leader("u-verify", district)),
            "peer-verify",
            &acked,
        )
        .await
        .unwrap();
        assert!(
            p.missing.is_empty() && p.unavailable.is_empty(),
            "{district}: {p:?}"
        );
        assert_eq!(p.acknowledged, p.found);
        acked_total += p.acknowledged;
        found_total += p.found;
        // Converged: every writer's copy has the heads the server has.
        for w in &mine {
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
    }
    println!(
        "failover: {writes} changes written, {acked_total} acknowledged, {found_total} found after the kill"
    );

    let (ok, report) = nodes[survivor].tool(&["check", "--store", &url]).unwrap();
    assert!(ok && report.contains("store OK"), "minka check:\n{report}");
    let log = proxy.log();
    assert!(
        log.contains(&format!("node{} is DOWN", victim + 1)),
        "HAProxy never marked the victim down:\n{log}"
    );
}
