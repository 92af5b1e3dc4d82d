//! `loadgen`: the Minka sync benchmark. Simulated phones speak automerge-repo v1 over WebSocket
//! to minka and to the two reference peers, in one run, and the results come out as a markdown
//! table with minka's ratio to the better peer. See BENCHMARKS.md.
//!
//! ```text
//! loadgen --minka-bin target/release/minka \
//!         --js-script tests/peers/js-sync-server/server.mjs \
//!         --samod-bin tests/peers/samod-server/target/release/samod-peer-server \
//!         --targets minka,minka-nochecks,js --runs 3 --storm-phones 100,200,500,1000
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use minka_tests::loadgen::report::Results;
use minka_tests::loadgen::server::{open_file_limit, Target};
use minka_tests::loadgen::stock::{self, StockConfig};
use minka_tests::loadgen::workloads::{self, Config};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Minka sync benchmark: simulated phones against minka and the reference peers"
)]
struct Args {
    /// Servers to run against, in order: minka, minka-nochecks (the same binary with
    /// `--unsafe-skip-write-checks`, built with the `bench-unchecked` feature), js, samod, a ws://
    /// URL of a running server, or NAME=COMMAND where COMMAND may use {port} and {dir} (WebSocket
    /// path from --cmd-path).
    #[arg(long, value_delimiter = ',', default_value = "minka,js,samod")]
    targets: Vec<String>,
    /// Workloads to run: offline, ingest, storm, idle, stock-reconnect; `probe` records a few
    /// scripted exchanges (once, not repeated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "offline,ingest,storm,idle,stock-reconnect,probe"
    )]
    workloads: Vec<String>,
    /// Run every workload this many times, the target order reversed on every other run; the
    /// tables show min / median / max, the JSON keeps every run.
    #[arg(long, default_value_t = 3)]
    runs: usize,
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
    /// Ingest: phones (default: --phones); each edits only proposals of its own.
    #[arg(long)]
    ingest_phones: Option<usize>,
    /// Ingest: proposals each phone creates (and then edits --edits times, offline).
    #[arg(long, default_value_t = 5)]
    ingest_docs: usize,
    /// Workload 2: phones that reconnect; a list runs the storm once per size (a curve).
    #[arg(long, value_delimiter = ',', default_value = "100,200,500,1000")]
    storm_phones: Vec<usize>,
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
    /// Stock reconnect: the node script (stock automerge-repo clients + counting proxy).
    #[arg(long, default_value = "tests/js/bench-reconnect.mjs")]
    stock_script: PathBuf,
    /// Stock reconnect: clients; a list runs it once per size.
    #[arg(long, value_delimiter = ',', default_value = "100,200")]
    stock_clients: Vec<usize>,
    /// Stock reconnect: documents per client.
    #[arg(long, default_value_t = 20)]
    stock_docs: usize,
    /// Stock reconnect: size of the document pool the clients' documents are drawn from.
    #[arg(long, default_value_t = 200)]
    stock_pool: usize,
    /// Stock reconnect: clients doing their first sync at once (all live in one node process,
    /// whose stock DocHandles time out after 60 s when it is overloaded).
    #[arg(long, default_value_t = 25)]
    stock_concurrency: usize,
    /// A settle phase (storm, its first-sync waves) ends after this many milliseconds without a
    /// frame on any connection and without server CPU; the window is not counted in the times.
    #[arg(long, default_value_t = 500)]
    quiet_ms: u64,
    /// Repetitions of the raw automerge apply_changes cost floor (median reported).
    #[arg(long, default_value_t = 5)]
    raw_reps: usize,
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
            name: "minka".into(),
            args: Vec::new(),
        },
        "minka-nochecks" => Target::Minka {
            bin: args.minka_bin.clone(),
            name: "minka-nochecks".into(),
            args: vec!["--unsafe-skip-write-checks".into()],
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
            None => bail!(
                "unknown target {other:?} (minka, minka-nochecks, js, samod, ws://…, NAME=COMMAND)"
            ),
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
    let biggest_storm = args.storm_phones.iter().copied().max().unwrap_or(0);
    let needed = (biggest_storm.max(args.idle_conns).max(args.phones) as u64) * 2 + 256;
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
        storm_phones: biggest_storm,
        storm_docs_per_phone: args.storm_docs,
        storm_pool: args.storm_pool,
        ingest_phones: args.ingest_phones.unwrap_or(args.phones),
        ingest_docs: args.ingest_docs,
        idle_conns: args.idle_conns,
        idle_wait: Duration::from_secs(args.idle_wait),
        timeout: Duration::from_secs(args.timeout),
        seed_concurrency: args.seed_concurrency,
        quiet: Duration::from_millis(args.quiet_ms),
        raw_reps: args.raw_reps,
        jwt_secret: args.jwt_secret.clone(),
        log_dir: args.log_dir.clone(),
        run: 1,
    };
    for w in &args.workloads {
        if !KNOWN.contains(&w.as_str()) {
            bail!("unknown workload {w:?} ({})", KNOWN.join(", "));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let results = rt.block_on(run(&args, &targets, &cfg))?;
    let md = results.markdown();
    print!("{md}");
    write_outputs(&args, &results)?;
    Ok(())
}

const KNOWN: &[&str] = &[
    "offline",
    "ingest",
    "storm",
    "idle",
    "stock-reconnect",
    "probe",
];

fn write_file(p: &Path, text: &str) -> Result<()> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
}

/// The table and the JSON so far (written after every workload, so a long run that is stopped
/// keeps what it measured).
fn write_outputs(args: &Args, results: &Results) -> Result<()> {
    if let Some(p) = &args.out {
        write_file(p, &results.markdown())?;
    }
    if let Some(p) = &args.json {
        write_file(p, &serde_json::to_string_pretty(results)?)?;
    }
    Ok(())
}

async fn run(args: &Args, targets: &[Target], base: &Config) -> Result<Results> {
    let runs = args.runs.max(1);
    let mut results = Results {
        runs,
        ..Results::default()
    };
    for run in 1..=runs {
        // Run 1 in the given order, run 2 reversed, run 3 as given, …
        let order: Vec<&Target> = if run % 2 == 1 {
            targets.iter().collect()
        } else {
            targets.iter().rev().collect()
        };
        let cfg = Config {
            run,
            ..base.clone()
        };
        for w in &args.workloads {
            if w == "probe" && run > 1 {
                continue;
            }
            // The sizes of a workload: one, or a curve (storm, stock-reconnect).
            let sizes: Vec<usize> = match w.as_str() {
                "storm" => args.storm_phones.clone(),
                "stock-reconnect" => args.stock_clients.clone(),
                _ => vec![0],
            };
            for size in sizes {
                for t in &order {
                    let what = match w.as_str() {
                        "storm" | "stock-reconnect" => format!("{w} {size}"),
                        _ => w.clone(),
                    };
                    eprintln!("== run {run}/{runs}: {what} against {} ...", t.name());
                    let started = std::time::Instant::now();
                    let outcome = one(&mut results, w, t, &cfg, size, args).await;
                    if let Err(e) = outcome {
                        eprintln!("   failed: {e:#}");
                        let label = if runs > 1 {
                            format!("{what} (run {run})")
                        } else {
                            what.clone()
                        };
                        results.errors.push((label, t.name(), format!("{e:#}")));
                    }
                    eprintln!("   ({:.1} s)", started.elapsed().as_secs_f64());
                }
            }
            write_outputs(args, &results)?;
        }
    }
    Ok(results)
}

/// One workload (at one size) against one target.
async fn one(
    results: &mut Results,
    w: &str,
    t: &Target,
    cfg: &Config,
    size: usize,
    args: &Args,
) -> Result<()> {
    match w {
        "offline" => {
            let r = workloads::offline_edits(t, cfg).await?;
            eprintln!("   {r:?}");
            results.offline.push(r);
        }
        "ingest" => {
            let r = workloads::ingest(t, cfg).await?;
            eprintln!("   {r:?}");
            results.ingest.push(r);
        }
        "storm" => {
            let cfg = Config {
                storm_phones: size,
                ..cfg.clone()
            };
            let r = workloads::reconnect_storm(t, &cfg).await?;
            eprintln!("   {r:?}");
            results.storm.push(r);
        }
        "idle" => {
            let r = workloads::idle(t, cfg).await?;
            eprintln!("   {r:?}");
            results.idle.push(r);
        }
        "stock-reconnect" => {
            let sc = StockConfig {
                script: args.stock_script.clone(),
                clients: size,
                docs_per_client: args.stock_docs,
                pool: args.stock_pool,
                concurrency: args.stock_concurrency,
            };
            let r = stock::stock_reconnect(t, cfg, &sc).await?;
            eprintln!("   {r:?}");
            results.stock.push(r);
        }
        "probe" => results.probe.push(workloads::probe(t, cfg).await?),
        other => bail!("unknown workload {other:?} ({})", KNOWN.join(", ")),
    }
    Ok(())
}
