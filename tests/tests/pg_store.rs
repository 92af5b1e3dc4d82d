//! The PostgreSQL store against a real PostgreSQL (`minka_tests::pg::PgCluster`): the store
//! conformance suite, atomic `meta_put_if_absent` across two nodes, LISTEN/NOTIFY announcements,
//! schema migrations, `minka migrate` from a sled store, and the real `minka serve` on
//! PostgreSQL keeping an acknowledged edit across SIGKILL.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use automerge::{Automerge, ReadDoc, ROOT};
use crdt_core::DocumentId;
use minka_server::store::postgres::MIGRATIONS;
use minka_server::store::{DocStore, PgStore};
use minka_tests::chaos::{append_text, comas_proposal};
use minka_tests::harness::{minka_bin, token, ProtoClient, TestServer, TEST_SECRET};
use minka_tests::pg::{off_runtime, PgCluster};
use tokio::sync::broadcast;

fn connect(url: &str) -> PgStore {
    PgStore::connect(url).unwrap()
}

#[test]
fn the_conformance_suite_passes_on_postgres() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("conformance").unwrap();
    minka_server::store::conformance::run_all(&|| Box::new(connect(&url)));
    let other = connect(&url);
    assert!(other.shared());
    assert!(other.watch().is_some());
}

#[test]
fn put_if_absent_has_exactly_one_winner_per_key_across_two_nodes() {
    let pg = PgCluster::start().unwrap();
    let url = pg.url();
    let nodes = [Arc::new(connect(&url)), Arc::new(connect(&url))];
    const THREADS: usize = 8;
    const KEYS: usize = 150;
    let barrier = Arc::new(Barrier::new(THREADS));
    // Each thread tries to claim every key with its own value; keys in a different order per
    // thread so threads collide on the same key at different moments.
    let results: Vec<Vec<(usize, Option<Vec<u8>>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let node = nodes[t % 2].clone();
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    (0..KEYS)
                        .map(|i| {
                            let i = if t % 2 == 0 { i } else { KEYS - 1 - i };
                            (i + t * 37) % KEYS
                        })
                        .map(|k| {
                            let key = format!("actor-{k}");
                            let value = format!("user-{t}");
                            let got = node
                                .meta_put_if_absent("actors", key.as_bytes(), value.as_bytes())
                                .unwrap();
                            (k, got)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut winners: HashMap<usize, Vec<usize>> = HashMap::new();
    for (t, claims) in results.iter().enumerate() {
        assert_eq!(claims.len(), KEYS);
        for (k, got) in claims {
            if got.is_none() {
                winners.entry(*k).or_default().push(t);
            }
        }
    }
    for k in 0..KEYS {
        let w = winners.get(&k).cloned().unwrap_or_default();
        assert_eq!(w.len(), 1, "key {k}: stored by threads {w:?}");
        let winner_value = format!("user-{}", w[0]).into_bytes();
        // Every loser was told the winner's value, and both nodes read it.
        for (t, claims) in results.iter().enumerate() {
            let (_, got) = claims.iter().find(|(kk, _)| *kk == k).unwrap();
            if t != w[0] {
                assert_eq!(got.as_ref(), Some(&winner_value), "key {k}, thread {t}");
            }
        }
        for node in &nodes {
            let key = format!("actor-{k}");
            assert_eq!(
                node.meta_get("actors", key.as_bytes()).unwrap(),
                Some(winner_value.clone())
            );
        }
    }
}

/// The next document id on `rx` other than `warm_up` (whose late announcements may still
/// arrive), waiting up to 15 s.
fn next_announced(
    rx: &mut broadcast::Receiver<DocumentId>,
    warm_up: DocumentId,
) -> Option<DocumentId> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match rx.try_recv() {
            Ok(id) if id == warm_up => {}
            Ok(id) => return Some(id),
            Err(broadcast::error::TryRecvError::Empty) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("watch receiver: {e:?}"),
        }
    }
}

#[test]
fn a_write_through_one_node_is_announced_to_the_other_and_not_to_itself() {
    let pg = PgCluster::start().unwrap();
    let url = pg.url();
    let a = connect(&url);
    let b = connect(&url);
    let mut on_a = a.watch().unwrap();
    let mut on_b = b.watch().unwrap();
    // The listeners LISTEN shortly after connect: write until B has heard of A's first document.
    let first = DocumentId::random();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0u32;
    loop {
        a.append(&first, format!("warm-up {n}").as_bytes()).unwrap();
        n += 1;
        if let Ok(id) = on_b.try_recv() {
            assert_eq!(id, first);
            break;
        }
        assert!(Instant::now() < deadline, "B never heard of A's write");
        std::thread::sleep(Duration::from_millis(100));
    }
    // An append and a compaction through A: both announced on B, in commit order.
    let d1 = DocumentId::random();
    let d2 = DocumentId::random();
    let k = a.append(&d1, b"one").unwrap();
    assert_eq!(next_announced(&mut on_b, first), Some(d1));
    a.compact(&d2, b"snapshot", &[]).unwrap();
    assert_eq!(next_announced(&mut on_b, first), Some(d2));
    // Appending a chunk that is already there changes nothing and announces nothing.
    assert_eq!(a.append(&d1, b"one").unwrap(), k);
    // A write through B: A hears it, and it is the first thing A hears (none of its own writes).
    let d3 = DocumentId::random();
    b.append(&d3, b"from b").unwrap();
    assert_eq!(next_announced(&mut on_a, first), Some(d3));
    // And B did not hear its own write: a later write of A is the next thing on B.
    let d4 = DocumentId::random();
    a.append(&d4, b"four").unwrap();
    assert_eq!(next_announced(&mut on_b, first), Some(d4));
    // The document's chunks are visible through B as soon as the announcement arrives.
    assert_eq!(b.load(&d4).unwrap()[0].bytes, b"four");

    // The listeners' connections are cut: B reconnects, and a document A writes right after the
    // cut (maybe while B is away; then B's replay announces it) still reaches B.
    let killed = pg
        .query_text(
            "minka",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
                minka_server::store::postgres::LISTENER_NAME
            ),
        )
        .unwrap();
    assert_eq!(killed, vec!["t", "t"]);
    let d5 = DocumentId::random();
    a.append(&d5, b"five").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match on_b.try_recv() {
            Ok(id) if id == d5 => break,
            // A replay may announce earlier documents again (B's own among them).
            Ok(id) => assert!([first, d1, d2, d3, d4].contains(&id), "unexpected {id}"),
            Err(broadcast::error::TryRecvError::Empty) => {
                assert!(
                    Instant::now() < deadline,
                    "B never heard of d5 after the cut"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[test]
fn schema_migrations_are_applied_once_even_by_two_nodes_starting_together() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("schema").unwrap();
    // Two nodes start at once on an empty database.
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::connect(&url))
        })
        .collect();
    let stores: Vec<PgStore> = starts
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    let versions = pg
        .query_text(
            "schema",
            "SELECT version FROM minka_schema ORDER BY version",
        )
        .unwrap();
    let expected: Vec<String> = (1..=MIGRATIONS.len()).map(|v| v.to_string()).collect();
    assert_eq!(versions, expected);
    assert_eq!(stores[0].schema_version().unwrap(), MIGRATIONS.len() as i32);
    let d = DocumentId::random();
    stores[0].append(&d, b"kept").unwrap();
    stores[0].meta_put("server", b"actor", b"x").unwrap();
    drop(stores);
    // A second start migrates nothing and keeps the data.
    let again = connect(&url);
    assert_eq!(again.schema_version().unwrap(), MIGRATIONS.len() as i32);
    assert_eq!(
        pg.query_text("schema", "SELECT count(*) FROM minka_schema")
            .unwrap(),
        vec![MIGRATIONS.len().to_string()]
    );
    assert_eq!(again.load(&d).unwrap()[0].bytes, b"kept");
    assert_eq!(again.meta_get("server", b"actor").unwrap().unwrap(), b"x");
    // A database from a newer minka (a version this binary does not know) is refused.
    drop(again);
    pg.query_text(
        "schema",
        &format!(
            "INSERT INTO minka_schema (version) VALUES ({})",
            MIGRATIONS.len() + 1
        ),
    )
    .unwrap();
    let err = PgStore::connect(&url)
        .err()
        .expect("a newer schema is refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

fn minka(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(minka_bin())
        .args(args)
        .env("MINKA_JWT_SECRET", TEST_SECRET)
        .env_remove("MINKA_STORE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn migrate_copies_a_demo_sled_store_to_postgres_and_both_export_the_same() {
    let pg = PgCluster::start().unwrap();
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dir_s = dir.to_str().unwrap();
    let sled = format!("sled:{dir_s}");
    let (ok, out, err) = minka(&["demo", "--data-dir", dir_s]);
    assert!(ok, "demo: {out}{err}");

    let (ok, out, err) = minka(&["migrate", "--from", &sled, "--to", &url]);
    assert!(ok, "migrate: {out}{err}");
    assert!(out.contains("store OK"), "{out}");
    assert!(out.contains("copied "), "{out}");

    // `minka check` on both: the same counts, both clean.
    let (ok, from_sled, err) = minka(&["check", "--data-dir", dir_s]);
    assert!(ok, "{from_sled}{err}");
    let (ok, from_pg, err) = minka(&["check", "--store", &url]);
    assert!(ok, "check --store postgres: {from_pg}{err}");
    assert_eq!(from_sled, from_pg);
    assert!(from_pg.contains("store OK"));
    let documents: usize = from_pg.split_whitespace().next().unwrap().parse().unwrap();
    assert!(documents > 10, "{from_pg}");

    // Every export of every demo district is the same from either store.
    for district in ["150110", "150133", "150103"] {
        for format in ["json", "csv", "pabulib"] {
            let args = ["export", "--district", district, "--format", format];
            let (ok, a, err) = minka(&[&args[..], &["--data-dir", dir_s]].concat());
            assert!(ok, "export from sled: {err}");
            let (ok, b, err) = minka(&[&args[..], &["--store", &url]].concat());
            assert!(ok, "export from postgres: {err}");
            assert!(!a.is_empty());
            assert_eq!(a, b, "{district} {format}");
        }
    }
    // The side tables came along (actor bindings, user names).
    let tables = pg
        .query_text(
            "minka",
            "SELECT DISTINCT tree FROM minka_meta ORDER BY tree",
        )
        .unwrap();
    assert!(tables.iter().any(|t| t == "actors"), "{tables:?}");

    // A target that already holds documents is refused without --force, and taken with it.
    let (ok, out, err) = minka(&["migrate", "--from", &sled, "--to", &url]);
    assert!(!ok, "{out}");
    assert!(err.contains("already holds"), "{err}");
    let (ok, out, err) = minka(&["migrate", "--from", &sled, "--to", &url, "--force"]);
    assert!(ok, "{out}{err}");
    // A target that does not answer fails the command.
    let dead = format!("postgres://minka@127.0.0.1:{}/nowhere", pg.port());
    let (ok, _, _) = minka(&["migrate", "--from", &sled, "--to", &dead]);
    assert!(!ok);
}

#[tokio::test]
async fn serve_on_postgres_keeps_an_acknowledged_edit_across_sigkill() {
    let pg = off_runtime(|| PgCluster::start().unwrap());
    let url = pg.url();
    let mut server = TestServer::start_with(&["--store", &url]).unwrap();
    let leader = token("u-ana", &["leader"], "150110");
    let id = DocumentId::random();
    let mut doc = comas_proposal("u-ana", &[], "Parque en Collique");
    {
        let mut c = ProtoClient::connect(&server.ws_url(&leader), "phone-1")
            .await
            .unwrap();
        let events = c.sync_doc(id, &mut doc).await.unwrap();
        assert!(events.is_empty(), "{events:?}");
        append_text(&mut doc, " y losas deportivas");
        let events = c.sync_doc(id, &mut doc).await.unwrap();
        assert!(events.is_empty(), "{events:?}");
        // Acknowledged: the server's heads are ours.
        assert_eq!(c.server_heads(id), Some(doc.get_heads()));
    }
    server.kill9();
    // The documents are in PostgreSQL: no sled store was made in the data directory.
    assert!(!server.data_dir.join("db").exists());
    let (ok, report) = server.tool(&["check", "--store", &url]).unwrap();
    assert!(ok, "check after SIGKILL:\n{report}");
    assert!(!report.starts_with("0 documents"), "{report}");
    server.restart().unwrap();
    let mut reader = ProtoClient::connect(&server.ws_url(&leader), "phone-2")
        .await
        .unwrap();
    let mut copy = Automerge::new();
    reader.request_doc(id, &mut copy).await.unwrap();
    assert_eq!(copy.get_heads(), doc.get_heads());
    let field = copy.get(ROOT, "description").unwrap().unwrap().1;
    let description = copy.text(field).unwrap();
    assert!(
        description.ends_with(" y losas deportivas"),
        "{description:?}"
    );
    assert!(server.log().contains("store opened"), "{}", server.log());
    drop(server);
    drop(pg);
}
