//! The review API over real HTTP against the real binary on a demo store: every endpoint, its
//! 401/403/404 and cross-district paths, edits made live by phones showing up in history, diffs,
//! conflicts, the quarantine's pages, the summary, the exports (HTTP and `minka export`), the
//! OpenAPI description and the live event stream.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge};
use common::proposal;
use crdt_core::demo::{demo_actor, demo_document_id};
use crdt_core::wire::Message;
use crdt_core::{DocumentId, Ubigeo, UserId};
use minka_tests::harness::{token, Event, ProtoClient, TestServer};
use serde_json::Value;

/// The author of the demo's draft proposal (`losa-collique`), who may still edit it.
const CARMEN: &str = "comas-carmen-flores";
const COMAS_VIG: &str = "comas-vig-elena-torres";

fn vig() -> String {
    token(COMAS_VIG, &["vigilancia"], "150110")
}

/// A demo store, served.
fn demo_server() -> TestServer {
    let mut server = TestServer::unstarted(&[]).unwrap();
    let (ok, out) = server.tool(&["demo"]).unwrap();
    assert!(ok, "{out}");
    server.restart().unwrap();
    server
}

fn get(server: &TestServer, path: &str, tok: Option<&str>) -> (u16, Value) {
    let (status, body) = server.http_get(path, tok).unwrap();
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json)
}

fn escaleras() -> DocumentId {
    demo_document_id(Ubigeo::COMAS, 2027, "escaleras-collique")
}

fn losa() -> DocumentId {
    demo_document_id(Ubigeo::COMAS, 2027, "losa-collique")
}

/// Edits the demo's draft proposal as its author's phone (demo actor), through the sync protocol.
async fn edit_as_carmen(server: &TestServer, id: DocumentId, f: impl FnOnce(&mut Automerge)) {
    let user = UserId::new(CARMEN).unwrap();
    let mut c = ProtoClient::connect(
        &server.ws_url(&token(CARMEN, &["leader"], "150110")),
        "peer-carmen",
    )
    .await
    .unwrap();
    let mut doc = Automerge::new();
    c.request_doc(id, &mut doc).await.unwrap();
    let mut doc = doc.with_actor(demo_actor(&user));
    f(&mut doc);
    let events = c.sync_doc(id, &mut doc).await.unwrap();
    assert!(events.is_empty(), "{events:?}");
}

fn set_cost(doc: &mut Automerge, cost: i64) {
    let mut tx = doc.transaction();
    tx.put(automerge::ROOT, "estimatedCost", cost).unwrap();
    tx.commit_with(crdt_core::schema::commit_options(
        "ajuste de costo",
        1_800_000_000,
    ));
}

#[tokio::test]
async fn docs_list_filters_pages_and_is_scoped_to_the_district() {
    let server = demo_server();
    let (status, _) = get(&server, "/api/v1/docs", None);
    assert_eq!(status, 401);
    let (status, body) = get(&server, "/api/v1/docs?type=proposal", Some(&vig()));
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(body["total"], items.len());
    assert!(items
        .iter()
        .all(|i| i["district"] == "150110" && i["type"] == "proposal"));
    assert!(items.iter().any(|i| i["id"] == escaleras().to_string()
        && i["amountText"].as_str().unwrap().starts_with("S/ ")));
    // Filters: status, zone, text (accents and case ignored), type.
    let (_, body) = get(&server, "/api/v1/docs?status=prioritized", Some(&vig()));
    let prioritized = body["items"].as_array().unwrap();
    assert!(!prioritized.is_empty());
    assert!(prioritized.iter().all(|i| i["status"] == "prioritized"));
    let (_, body) = get(
        &server,
        "/api/v1/docs?zone=Collique&type=proposal",
        Some(&vig()),
    );
    assert!(body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["zone"] == "Collique"));
    let (_, body) = get(&server, "/api/v1/docs?q=CONSTRUCCION", Some(&vig()));
    assert_eq!(body["items"][0]["id"], escaleras().to_string());
    let (_, body) = get(&server, "/api/v1/docs?type=acta", Some(&vig()));
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    // Pages.
    let (_, all) = get(&server, "/api/v1/docs", Some(&vig()));
    let total = all["total"].as_u64().unwrap();
    assert!(total >= 5);
    let (_, p2) = get(&server, "/api/v1/docs?perPage=2&page=2", Some(&vig()));
    assert_eq!(p2["items"].as_array().unwrap().len(), 2);
    assert_eq!(p2["items"][0]["id"], all["items"][2]["id"]);
    let (status, _) = get(&server, "/api/v1/docs?perPage=0", Some(&vig()));
    assert_eq!(status, 400);
    let (status, _) = get(&server, "/api/v1/docs?type=nonsense", Some(&vig()));
    assert_eq!(status, 400);
    // Another district: forbidden for a district token, fine for a province-wide one.
    let (status, _) = get(&server, "/api/v1/docs?district=150103", Some(&vig()));
    assert_eq!(status, 403);
    let all_lima = token("lima-vig", &["vigilancia"], "*");
    let (status, body) = get(&server, "/api/v1/docs?district=150103", Some(&all_lima));
    assert_eq!(status, 200);
    assert!(body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["district"] == "150103"));
    assert!(body["total"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_document_its_history_versions_and_differences() {
    let server = demo_server();
    let id = losa();
    let (status, doc) = get(&server, &format!("/api/v1/docs/{id}"), Some(&vig()));
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["type"], "proposal");
    assert_eq!(doc["state"]["zone"], "Collique");
    assert!(doc["seal"].is_null());
    let before = doc["state"]["estimatedCost"].as_i64().unwrap();
    let heads_before = doc["heads"].as_array().unwrap().clone();

    // Cross-district and unknown documents are both 404; a malformed id is 400; no token 401.
    let ate = token("ate-vig", &["vigilancia"], "150103");
    for (path, tok, want) in [
        (format!("/api/v1/docs/{id}"), Some(ate.as_str()), 404),
        (
            format!("/api/v1/docs/{id}/history"),
            Some(ate.as_str()),
            404,
        ),
        (
            format!("/api/v1/docs/{id}/conflicts"),
            Some(ate.as_str()),
            404,
        ),
        (
            format!("/api/v1/docs/{}", DocumentId::random()),
            Some(vig().as_str()),
            404,
        ),
        (
            "/api/v1/docs/not-an-id".to_string(),
            Some(vig().as_str()),
            400,
        ),
        (format!("/api/v1/docs/{id}/history"), None, 401),
    ] {
        let (status, body) = get(&server, &path, tok);
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: errors are JSON: {body}");
    }

    // The author changes the cost from her phone; the history says so in words, with her name.
    edit_as_carmen(&server, id, |d| set_cost(d, 150_000_000)).await;
    let (_, h) = get(&server, &format!("/api/v1/docs/{id}/history"), Some(&vig()));
    let changes = h["changes"].as_array().unwrap();
    assert!(changes[0]["descriptions"][0]
        .as_str()
        .unwrap()
        .starts_with("creó la propuesta «"));
    let last = changes.last().unwrap();
    assert_eq!(last["user"]["id"], CARMEN);
    assert_eq!(last["user"]["name"], "Carmen Flores Yupanqui");
    assert_eq!(last["message"], "ajuste de costo");
    assert_eq!(last["time"], 1_800_000_000);
    let expected = format!(
        "cambió el costo estimado de {} a S/ 1,500,000.00",
        crdt_core::schema::format_soles(before)
    );
    assert_eq!(last["descriptions"][0], expected.as_str());

    // The version before the edit, and the difference between then and now.
    let old: Vec<String> = heads_before
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    let (status, at) = get(
        &server,
        &format!("/api/v1/docs/{id}/at?heads={}", old.join(",")),
        Some(&vig()),
    );
    assert_eq!(status, 200, "{at}");
    assert_eq!(at["state"]["estimatedCost"], before);
    let (_, diff) = get(
        &server,
        &format!("/api/v1/docs/{id}/diff?from={}", old.join(",")),
        Some(&vig()),
    );
    let rows = diff["changes"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{diff}");
    assert_eq!(rows[0]["path"], "estimatedCost");
    assert_eq!(rows[0]["before"], before);
    assert_eq!(rows[0]["after"], 150_000_000);
    let (status, _) = get(
        &server,
        &format!("/api/v1/docs/{id}/at?heads=abc"),
        Some(&vig()),
    );
    assert_eq!(status, 400);
    let unknown = "00".repeat(32);
    let (status, _) = get(
        &server,
        &format!("/api/v1/docs/{id}/diff?from={unknown}"),
        Some(&vig()),
    );
    assert_eq!(status, 400);
}

#[tokio::test]
async fn conflicts_name_who_wrote_each_value() {
    let server = demo_server();
    let id = DocumentId::random();
    let mut base = proposal(Ubigeo::COMAS, "u-ana", "Puente peatonal", &["u-beto"]);
    let mut ana =
        ProtoClient::connect(&server.ws_url(&token("u-ana", &["leader"], "150110")), "pa")
            .await
            .unwrap();
    ana.sync_doc(id, &mut base).await.unwrap();
    // Both co-authors change the zone offline, then sync.
    let mut a = base.fork().with_actor(ActorId::random());
    let mut b = base.fork().with_actor(ActorId::random());
    for (doc, zone) in [(&mut a, "Año Nuevo"), (&mut b, "La Pascana")] {
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "zone", zone).unwrap();
        tx.commit_with(crdt_core::schema::commit_options("zona", 1_800_000_000));
    }
    let events = ana.sync_doc(id, &mut a).await.unwrap();
    assert!(events.is_empty(), "{events:?}");
    let mut beto = ProtoClient::connect(
        &server.ws_url(&token("u-beto", &["leader"], "150110")),
        "pb",
    )
    .await
    .unwrap();
    let events = beto.sync_doc(id, &mut b).await.unwrap();
    assert!(events.is_empty(), "{events:?}");
    let (status, c) = get(
        &server,
        &format!("/api/v1/docs/{id}/conflicts"),
        Some(&vig()),
    );
    assert_eq!(status, 200);
    let conflicts = c["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{c}");
    assert_eq!(conflicts[0]["path"], "zone");
    let mut who: Vec<(String, String)> = conflicts[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["user"]["id"].as_str().unwrap().into(),
                v["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    who.sort();
    assert_eq!(
        who,
        vec![
            ("u-ana".into(), "Año Nuevo".into()),
            ("u-beto".into(), "La Pascana".into())
        ]
    );
}

/// Sends one forbidden change (a proposal created in Ate by a Comas leader) and waits for the error.
async fn rejected_creation(server: &TestServer, sub: &str) {
    let mut c = ProtoClient::connect(&server.ws_url(&token(sub, &["leader"], "150110")), sub)
        .await
        .unwrap();
    let mut doc = proposal(Ubigeo::COMAS, "someone-else", "A nombre de otro", &[]);
    let events = c.sync_doc(DocumentId::random(), &mut doc).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Message(Message::Error(_)))),
        "{events:?}"
    );
}

#[tokio::test]
async fn quarantine_is_paginated_filtered_and_scoped() {
    let server = demo_server();
    for sub in ["u-ana", "u-ana", "u-beto"] {
        rejected_creation(&server, sub).await;
    }
    let (status, all) = get(&server, "/api/v1/quarantine", Some(&vig()));
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["total"], 3);
    let times: Vec<u64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["time"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let (_, p) = get(&server, "/api/v1/quarantine?perPage=2&page=2", Some(&vig()));
    assert_eq!(p["items"].as_array().unwrap().len(), 1);
    assert_eq!(p["total"], 3);
    let (_, by_user) = get(&server, "/api/v1/quarantine?user=u-ana", Some(&vig()));
    assert_eq!(by_user["total"], 2);
    let doc = all["items"][0]["documentId"].as_str().unwrap().to_string();
    let (_, by_doc) = get(
        &server,
        &format!("/api/v1/quarantine?document={doc}"),
        Some(&vig()),
    );
    assert_eq!(by_doc["total"], 1);
    // A leader sees their own, and may not ask for someone else's.
    let beto = token("u-beto", &["leader"], "150110");
    let (_, own) = get(&server, "/api/v1/quarantine", Some(&beto));
    assert_eq!(own["total"], 1);
    assert_eq!(own["items"][0]["user"], "u-beto");
    let (status, _) = get(&server, "/api/v1/quarantine?user=u-ana", Some(&beto));
    assert_eq!(status, 403);
    // Another district's reviewers see none of it.
    let (_, ate) = get(
        &server,
        "/api/v1/quarantine",
        Some(&token("ate-vig", &["vigilancia"], "150103")),
    );
    assert_eq!(ate["total"], 0);
    let (status, _) = get(&server, "/api/v1/quarantine", None);
    assert_eq!(status, 401);
}

#[tokio::test]
async fn summary_and_exports_of_a_district() {
    let server = demo_server();
    let (status, s) = get(&server, "/api/v1/districts/150110/summary", Some(&vig()));
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["districtName"], "Comas");
    assert!(s["ceiling"].as_i64().unwrap() > 0);
    let zones = s["zones"].as_array().unwrap();
    assert!(zones.iter().any(|z| z["zone"] == "Collique"));
    for z in zones {
        if let (Some(c), Some(p)) = (z["ceiling"].as_i64(), z["prioritized"].as_i64()) {
            assert_eq!(z["remaining"].as_i64().unwrap(), c - p);
        }
    }
    let ranked = s["proposals"].as_array().unwrap();
    assert_eq!(ranked[0]["rank"], 1);
    let scores: Vec<f64> = ranked.iter().filter_map(|p| p["score"].as_f64()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "ranked by score: {scores:?}"
    );
    assert_eq!(s["actas"].as_array().unwrap().len(), 1);
    let (status, _) = get(&server, "/api/v1/districts/150103/summary", Some(&vig()));
    assert_eq!(status, 403);
    let (status, _) = get(&server, "/api/v1/districts/999999/summary", Some(&vig()));
    assert_eq!(status, 400);
    let (status, _) = get(&server, "/api/v1/districts/150110/summary", None);
    assert_eq!(status, 401);

    let (status, csv) = server
        .http_get("/api/v1/districts/150110/export.csv", Some(&vig()))
        .unwrap();
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("puesto,id,titulo,zona"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 1 + ranked.len());
    assert!(csv.contains(&escaleras().to_string()));
    let (status, pb) = server
        .http_get("/api/v1/districts/150110/export.pb", Some(&vig()))
        .unwrap();
    assert_eq!(status, 200);
    for section in ["META\n", "PROJECTS\n", "VOTES\n"] {
        assert!(pb.contains(section), "{pb}");
    }
    assert!(pb.contains(&format!("num_projects;{}", ranked.len())));
    let (status, _) = server
        .http_get("/api/v1/districts/150103/export.csv", Some(&vig()))
        .unwrap();
    assert_eq!(status, 403);

    // The command line gives the same exports from the stopped store.
    let mut server = server;
    assert!(server.terminate());
    let (ok, cli_csv) = server
        .tool(&["export", "--district", "150110", "--format", "csv"])
        .unwrap();
    assert!(ok, "{cli_csv}");
    assert_eq!(cli_csv, csv);
    let (ok, cli_pb) = server
        .tool(&["export", "--district", "150110", "--format", "pabulib"])
        .unwrap();
    assert!(ok);
    assert_eq!(cli_pb, pb);
    let (ok, json) = server
        .tool(&["export", "--district", "150110", "--format", "json"])
        .unwrap();
    assert!(ok, "{json}");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["districtName"], "Comas");
    assert!(v["documents"].as_array().unwrap().len() > ranked.len());
    let (ok, err) = server
        .tool(&["export", "--district", "150143", "--format", "csv"])
        .unwrap();
    assert!(!ok && err.contains("no documents"), "{err}");
}

#[tokio::test]
async fn openapi_describes_the_api() {
    let server = demo_server();
    let (status, doc) = get(&server, "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/docs",
        "/api/v1/docs/{id}",
        "/api/v1/docs/{id}/history",
        "/api/v1/docs/{id}/at",
        "/api/v1/docs/{id}/diff",
        "/api/v1/docs/{id}/conflicts",
        "/api/v1/docs/{id}/seal",
        "/api/v1/quarantine",
        "/api/v1/districts/{ubigeo}/summary",
        "/api/v1/districts/{ubigeo}/export.csv",
        "/api/v1/districts/{ubigeo}/export.pb",
        "/api/v1/events",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
}

#[tokio::test]
async fn events_stream_the_changes_of_the_callers_district() {
    let server = demo_server();
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "GET /api/v1/events?token={} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        vig()
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut seen = String::new();
    let read_for = |reader: &mut BufReader<std::net::TcpStream>, d: Duration| {
        let until = Instant::now() + d;
        let mut got = String::new();
        while Instant::now() < until {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => got.push_str(&line),
                Err(_) => {}
            }
        }
        got
    };
    seen.push_str(&read_for(&mut reader, Duration::from_millis(500)));
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.to_ascii_lowercase().contains("text/event-stream"),
        "{seen}"
    );

    // An Ate document changes: nothing for a Comas reviewer. A Comas one: an event naming it.
    let ate_id = DocumentId::random();
    let mut ate_doc = proposal(Ubigeo::ATE, "u-ate", "Parque en Ate", &[]);
    let mut ate = ProtoClient::connect(
        &server.ws_url(&token("u-ate", &["leader"], "150103")),
        "pate",
    )
    .await
    .unwrap();
    ate.sync_doc(ate_id, &mut ate_doc).await.unwrap();
    edit_as_carmen(&server, losa(), |d| set_cost(d, 151_000_000)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = format!("\"id\":\"{}\"", losa());
    while !seen.contains(&want) && Instant::now() < deadline {
        seen.push_str(&read_for(&mut reader, Duration::from_millis(200)));
    }
    assert!(seen.contains("event: changed"), "{seen}");
    assert!(seen.contains(&want), "{seen}");
    assert!(
        !seen.contains(&ate_id.to_string()),
        "another district's change leaked: {seen}"
    );
    let (status, _) = get(&server, "/api/v1/events", None);
    assert_eq!(status, 401);
}
