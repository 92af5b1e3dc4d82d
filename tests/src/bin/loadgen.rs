//! `loadgen`: the Minka sync benchmark. Simulated phones speak automerge-repo v1 over WebSocket
//! to minka and to the two reference peers, in one run, and the results come out as a markdown
//! table with minka's ratio to the better peer. See BENCHMARKS.md.
//!
//! ```text
//! loadgen --minka-bin target/release/minka \
//!         --js-script tests/peers/js-sync-server/server.mjs \
//!         --samod-bin tests/peers/samod-server/target/release/samod-peer-server \
//!         --targets minka,js,samod --workloads offline,storm,idle
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use minka_tests::loadgen::report::Results;
use minka_tests::loadgen::server::{open_file_limit, Target};
use minka_tests::loadgen::workloads::{self, Config};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Minka sync benchmark: simulated phones against minka and the reference peers"
)]
struct Args {
    /// Servers to run against, in order: minka, js, samod, a ws:// URL of a running server, or
    /// NAME=COMMAND where COMMAND may use {port} and {dir} (WebSocket path from --cmd-path).
    #[arg(long, value_delimiter = ',', default_value = "minka,js,samod")]
    targets: Vec<String>,
    /// Workloads to run: offline, storm, idle; `probe` records a few scripted exchanges.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "offline,storm,idle,probe"
    )]
    workloads: Vec<String>,
    /// The minka binary.
    #[arg(long, default_value = "target/release/minka")]
    minka_bin: PathBuf,
    /// The JS reference server script (run with node).
    #[arg(long, default_value = "tests/peers/js-sync-server/server.mjs")]
    js_script: PathBuf,
    /// The samod reference server binary.
    #[arg(
        long,
        default_value = "tests/peers/samod-server/target/release/samod-peer-server"
    )]
    samod_bin: PathBuf,
    /// WebSocket path for NAME=COMMAND targets.
    #[arg(long, default_value = "/sync")]
    cmd_path: String,

    /// Workload 1: phones.
    #[arg(long, default_value_t = 50)]
    phones: usize,
    /// Workload 1: offline edits per phone.
    #[arg(long, default_value_t = 20)]
    edits: usize,
    /// Workload 1: proposals.
    #[arg(long, default_value_t = 10)]
    docs: usize,
    /// Workload 2: phones that reconnect.
    #[arg(long, default_value_t = 1000)]
    storm_phones: usize,
    /// Workload 2: documents per phone.
    #[arg(long, default_value_t = 20)]
    storm_docs: usize,
    /// Workload 2: size of the document pool the phones' documents are drawn from.
    #[arg(long, default_value_t = 200)]
    storm_pool: usize,
    /// Workload 3: idle connections.
    #[arg(long, default_value_t = 1000)]
    idle_conns: usize,
    /// Workload 3: seconds to sit idle before measuring.
    #[arg(long, default_value_t = 5)]
    idle_wait: u64,
    /// Give up on a phase after this many seconds and report that it did not settle.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// Concurrent sessions while seeding phones and opening idle connections.
    #[arg(long, default_value_t = 100)]
    seed_concurrency: usize,
    /// Worker threads of the load generator (the server gets the other cores).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// HS256 secret for minka's tokens (passed to minka as MINKA_JWT_SECRET).
    #[arg(
        long,
        env = "MINKA_JWT_SECRET",
        default_value = "minka-bench-secret-not-for-production"
    )]
    jwt_secret: String,
    /// Server logs go here.
    #[arg(long, default_value = "target/bench/logs")]
    log_dir: PathBuf,
    /// Write the markdown table here too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write all figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run nothing: print the table of an earlier run's JSON (from --json).
    #[arg(long)]
    render: Option<PathBuf>,
}

fn parse_target(s: &str, args: &Args) -> Result<Target> {
    Ok(match s {
        "minka" => Target::Minka {
            bin: args.minka_bin.clone(),
        },
        "js" => Target::Js {
            script: std::fs::canonicalize(&args.js_script)
                .with_context(|| format!("JS server script {}", args.js_script.display()))?,
        },
        "samod" => Target::Samod {
            bin: args.samod_bin.clone(),
        },
        url if url.starts_with("ws://") => Target::Url { url: url.into() },
        other => match other.split_once('=') {
            Some((name, cmd)) => Target::Cmd {
                name: name.into(),
                cmd: cmd.into(),
                path: args.cmd_path.clone(),
            },
            None => bail!("unknown target {other:?} (minka, js, samod, ws://…, NAME=COMMAND)"),
        },
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(p) = &args.render {
        let results: Results = serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?;
        print!("{}", results.markdown());
        return Ok(());
    }
    let needed = (args.storm_phones.max(args.idle_conns).max(args.phones) as u64) * 2 + 256;
    if let Some(limit) = open_file_limit() {
        if limit < needed {
            eprintln!(
                "warning: the open-file limit is {limit}; {needed} or more are needed for these sizes \
                 (client and server sockets). Run `ulimit -n 65536` first (scripts/bench does)."
            );
        }
    }
    let targets = args
        .targets
        .iter()
        .map(|t| parse_target(t, &args))
        .collect::<Result<Vec<_>>>()?;
    let cfg = Config {
        phones: args.phones,
        edits: args.edits,
        docs: args.docs,
        storm_phones: args.storm_phones,
        storm_docs_per_phone: args.storm_docs,
        storm_pool: args.storm_pool,
        idle_conns: args.idle_conns,
        idle_wait: Duration::from_secs(args.idle_wait),
        timeout: Duration::from_secs(args.timeout),
        seed_concurrency: args.seed_concurrency,
        jwt_secret: args.jwt_secret.clone(),
        log_dir: args.log_dir.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let results = rt.block_on(run(&args, &targets, &cfg))?;
    let md = results.markdown();
    print!("{md}");
    if let Some(p) = &args.out {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(p, &md)?;
    }
    if let Some(p) = &args.json {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(p, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

async fn run(args: &Args, targets: &[Target], cfg: &Config) -> Result<Results> {
    let mut results = Results::default();
    for w in &args.workloads {
        for t in targets {
            eprintln!("== {w} against {} ...", t.name());
            let started = std::time::Instant::now();
            let outcome = match w.as_str() {
                "offline" => workloads::offline_edits(t, cfg).await.map(|r| {
                    eprintln!("   {r:?}");
                    results.offline.push(r)
                }),
                "storm" => workloads::reconnect_storm(t, cfg).await.map(|r| {
                    eprintln!("   {r:?}");
                    results.storm.push(r)
                }),
                "idle" => workloads::idle(t, cfg).await.map(|r| {
                    eprintln!("   {r:?}");
                    results.idle.push(r)
                }),
                "probe" => workloads::probe(t, cfg)
                    .await
                    .map(|r| results.probe.push(r)),
                other => bail!("unknown workload {other:?} (offline, storm, idle, probe)"),
            };
            if let Err(e) = outcome {
                eprintln!("   failed: {e:#}");
                results.errors.push((w.clone(), t.name(), format!("{e:#}")));
            }
            eprintln!("   ({:.1} s)", started.elapsed().as_secs_f64());
        }
    }
    Ok(results)
}
