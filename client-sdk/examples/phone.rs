//! A leader's phone in the terminal.
//!
//! ```sh
//! minka token --sub u-rosa --name "Rosa Quispe" --roles leader --district 150110 > /tmp/rosa.jwt
//! P="cargo run -q -p minka-client --example phone -- --dir /tmp/rosa-phone --token $(cat /tmp/rosa.jwt)"
//! $P create "Veredas para el jirón Los Olivos" 450000.00   # offline: saved on the phone
//! $P list                                                   # LocalOnly
//! $P sync ws://127.0.0.1:8080/sync                           # connect, sync, print events
//! $P cost <id> 480000.00 ; $P submit <id> ; $P sync ws://127.0.0.1:8080/sync
//! $P rejections <id> ; $P discard <id> | $P reapply <id>
//! ```

use std::time::Duration;

use minka_client::{Client, DocStatus, DocumentId, Event, ProposalDraft, ProposalStatus};

fn usage() -> ! {
    eprintln!(
        "usage: phone --dir DIR [--token JWT] COMMAND\n\
         commands: create TITLE SOLES | edits N [--sync URL] | list | show ID | cost ID SOLES | submit ID | withdraw ID\n\
         \u{20}         | comment ID TEXT | sync URL [SECONDS] | rejections ID | discard ID | reapply ID"
    );
    std::process::exit(2)
}

fn soles(s: &str) -> i64 {
    let v: f64 = s.parse().unwrap_or_else(|_| usage());
    (v * 100.0).round() as i64
}

fn id(s: Option<&String>) -> DocumentId {
    s.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args.get(i + 1).cloned()?;
        args.drain(i..=i + 1);
        Some(v)
    };
    let dir = take("--dir").unwrap_or_else(|| usage());
    let token = take("--token");
    let sync_url = take("--sync");
    let client = Client::open(&dir)?;
    if let Some(t) = &token {
        client.set_token(t)?;
    }
    let cmd = args.first().cloned().unwrap_or_else(|| usage());
    match cmd.as_str() {
        "create" => {
            let (Some(title), Some(cost)) = (args.get(1), args.get(2)) else {
                usage()
            };
            let id = client.create_proposal(ProposalDraft {
                title: title.clone(),
                description: "Propuesta registrada desde el teléfono.".into(),
                zone: "zona-1".into(),
                category: "vías y veredas".into(),
                beneficiaries: 500,
                estimated_cost: soles(cost),
                cofinancing: 0,
            })?;
            println!("{id}");
        }
        "list" => {
            for d in client.list() {
                println!(
                    "{}  {:<12} {:<10} {:?}  {}",
                    d.id, d.doc_type, d.status, d.sync, d.title
                );
            }
        }
        "show" => {
            let id = id(args.get(1));
            println!("{}", serde_json::to_string_pretty(&client.json(&id)?)?);
            println!("{:?}", client.status(&id)?);
            for r in client.rejections(&id) {
                println!("rejected {}: {}", r.change, r.reason);
            }
        }
        "cost" => {
            let id = id(args.get(1));
            client.set_estimated_cost(&id, soles(args.get(2).unwrap_or_else(|| usage())))?;
        }
        "submit" => {
            client.set_proposal_status(&id(args.get(1)), ProposalStatus::Submitted)?;
        }
        "withdraw" => {
            client.set_proposal_status(&id(args.get(1)), ProposalStatus::Withdrawn)?;
        }
        "comment" => {
            client.comment(&id(args.get(1)), args.get(2).unwrap_or_else(|| usage()))?;
        }
        "edits" => {
            // N durable edits of one new proposal, one line per edit once `edit` returned (a
            // test kills this process at random and checks every printed edit survived), then
            // the latency of `edit` (fsync included): min / median / max.
            let n: usize = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            // With `--sync URL` the phone syncs in the background meanwhile.
            if let (Some(url), Some(t)) = (&sync_url, &token) {
                client.connect(url, t)?;
            }
            let id = client.create_proposal(ProposalDraft {
                title: "Medición de ediciones".into(),
                description: "Propuesta para medir ediciones locales.".into(),
                zone: "zona-1".into(),
                category: "vías y veredas".into(),
                beneficiaries: 1,
                estimated_cost: 0,
                cofinancing: 0,
            })?;
            println!("created {id}");
            let mut times = Vec::with_capacity(n);
            for i in 1..=n {
                let t = std::time::Instant::now();
                client.set_estimated_cost(&id, i as i64)?;
                times.push(t.elapsed());
                println!("saved {i}");
            }
            times.sort();
            if let (Some(min), Some(max)) = (times.first(), times.last()) {
                eprintln!(
                    "edit latency over {n}: min {:.2} ms, median {:.2} ms, max {:.2} ms",
                    min.as_secs_f64() * 1e3,
                    times[n / 2].as_secs_f64() * 1e3,
                    max.as_secs_f64() * 1e3
                );
            }
        }
        "rejections" => {
            for r in client.rejections(&id(args.get(1))) {
                println!("{} {}", r.change, r.reason);
            }
        }
        "discard" => {
            let dropped = client.discard_rejected(&id(args.get(1)))?;
            println!("dropped {dropped} changes");
        }
        "reapply" => {
            client.reapply_rejected(&id(args.get(1)))?;
        }
        "sync" => {
            let url = args.get(1).unwrap_or_else(|| usage());
            let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
            let token = token.ok_or("sync needs --token")?;
            let mut events = client.events();
            client.connect(url, &token)?;
            let deadline = tokio::time::sleep(Duration::from_secs(secs));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    e = events.recv() => match e {
                        Ok(Event::Rejected { doc, reason }) => println!("rejected {doc}: {reason}"),
                        Ok(e) => println!("{e:?}"),
                        Err(_) => break,
                    },
                    _ = &mut deadline => break,
                }
                let all_synced = client
                    .list()
                    .iter()
                    .all(|d| matches!(d.sync, DocStatus::Synced | DocStatus::Rejected { .. }));
                if all_synced
                    && client.connection_state() == minka_client::ConnectionState::Connected
                {
                    // Linger briefly for the index and late answers.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    while let Ok(e) = events.try_recv() {
                        println!("{e:?}");
                    }
                    break;
                }
            }
            client.disconnect().await;
            for d in client.list() {
                println!("{}  {:<10} {:?}  {}", d.id, d.status, d.sync, d.title);
            }
        }
        _ => usage(),
    }
    Ok(())
}
