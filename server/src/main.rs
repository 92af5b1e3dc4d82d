//! `minka`: the command line (serve, token, check, compact, demo, export, migrate).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use minka_server::auth::{now_unix, Claims, JwtKeys, JwtSecret};
use minka_server::store::{DocStore, StoreSpec};
use minka_server::{tools, ServeConfig};

#[derive(Parser)]
#[command(
    name = "minka",
    version,
    about = "Offline-first sync backend for participatory budgeting"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sync server.
    Serve(ServeArgs),
    /// Print a token signed with the server's secret.
    Token(TokenArgs),
    /// Verify the store: every chunk matches its hash, every document loads.
    Check(StoreArgs),
    /// Compact every document into one snapshot (server stopped).
    Compact(StoreArgs),
    /// Seed realistic demo data for Comas, San Juan de Miraflores and Ate (server stopped).
    Demo(DemoArgs),
    /// Export a district's proposals (csv, pabulib) or documents (json) to stdout (server stopped).
    Export(ExportArgs),
    /// Copy every document and side table from one store to another, then check the copy
    /// (servers stopped).
    Migrate(MigrateArgs),
}

#[derive(Args)]
struct MigrateArgs {
    /// The store to copy from: sled:<dir> or postgres://user@host:port/database.
    #[arg(long)]
    from: String,
    /// The store to copy into (created if needed).
    #[arg(long)]
    to: String,
    /// Copy even when the target already holds documents (chunks are content-addressed, so
    /// documents merge; side-table entries of the source overwrite the target's).
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
    Pabulib,
}

#[derive(Args)]
struct ExportArgs {
    /// 6-digit ubigeo of the district.
    #[arg(long)]
    district: String,
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Fiscal year.
    #[arg(long, env = "MINKA_PROCESS_YEAR", default_value_t = 2027)]
    process_year: u16,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// Where the sled store (and a generated JWT secret) live.
    #[arg(long, env = "MINKA_DATA_DIR", default_value = "./minka-data")]
    data_dir: PathBuf,
    /// The document store: sled:<dir>, or postgres://user@host:port/database for a store several
    /// nodes share. Default: sled in --data-dir (which still holds the generated JWT secret).
    #[arg(long, env = "MINKA_STORE")]
    store: Option<String>,
}

impl StoreArgs {
    fn spec(&self) -> anyhow::Result<StoreSpec> {
        StoreSpec::or_data_dir(self.store.as_deref(), &self.data_dir)
            .map_err(|e| anyhow::anyhow!("--store: {e}"))
    }
}

fn open_store(spec: &StoreSpec) -> anyhow::Result<std::sync::Arc<dyn DocStore>> {
    tools::open_store(spec).with_context(|| format!("opening the store {spec}"))
}

/// Prints what `minka check` found; an error when it found problems.
fn print_check(report: &tools::CheckReport) -> anyhow::Result<()> {
    println!(
        "{} documents, {} chunks, {} seals checked",
        report.documents, report.chunks, report.seals
    );
    if report.unindexed > 0 {
        println!(
            "{} documents are waiting to be listed in their district index (done at the next start)",
            report.unindexed
        );
    }
    for p in &report.problems {
        println!("PROBLEM: {p}");
    }
    if report.problems.is_empty() {
        println!("store OK");
        Ok(())
    } else {
        bail!("{} problems found", report.problems.len())
    }
}

#[derive(Args, Clone)]
struct SecretArgs {
    /// File holding the HS256 secret (else MINKA_JWT_SECRET, else <data-dir>/jwt-secret).
    #[arg(long, env = "MINKA_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, env = "MINKA_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    secret: SecretArgs,
    /// Fiscal year of the participatory budgeting process.
    #[arg(long, env = "MINKA_PROCESS_YEAR", default_value_t = 2027)]
    process_year: u16,
    /// Most documents kept in memory; idle ones beyond are unloaded least recently used first.
    #[arg(long, env = "MINKA_MAX_LOADED_DOCS", default_value_t = 10_000)]
    max_loaded_docs: usize,
    /// Most documents that do not exist yet one connection may wait on (a peer that asks for an
    /// absent document gets it as soon as it appears); beyond it the peer gets an `error`.
    #[arg(long, env = "MINKA_MAX_WAITING_DOCS", default_value_t = 10_000)]
    max_waiting_docs: usize,
    /// Most documents one connection may sync; beyond it the peer gets an `error` for each new one.
    #[arg(long, env = "MINKA_MAX_DOCS_PER_CONNECTION", default_value_t = 10_000)]
    max_docs_per_connection: usize,
    /// Most open sync connections of one user; beyond it `/sync` answers 429.
    #[arg(long, env = "MINKA_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    max_connections_per_user: usize,
    /// Ephemeral messages one connection may send per second (sustained); beyond it they are
    /// dropped and counted, and a connection that goes on sending them after another burst's
    /// worth was dropped is read no faster than this.
    #[arg(long, env = "MINKA_EPHEMERAL_PER_SECOND", default_value_t = 20)]
    ephemeral_per_second: u32,
    /// Ephemeral messages one connection may send in a burst.
    #[arg(long, env = "MINKA_EPHEMERAL_BURST", default_value_t = 100)]
    ephemeral_burst: u32,
    /// `sync`/`request` units per second one user's connections are read at, together (one unit
    /// per message, one more per KiB of it and one per KiB of the server's sync replies to it),
    /// once the user has spent the burst; beyond it the server reads them more slowly, and a new
    /// connection of a user in debt is first read when the debt is paid.
    #[arg(long, env = "MINKA_SYNC_PER_SECOND", default_value_t = 500)]
    sync_per_second: u32,
    /// `sync`/`request` units one user may send at once (shared by the user's connections, kept
    /// across reconnects).
    #[arg(long, env = "MINKA_SYNC_BURST", default_value_t = 2_000)]
    sync_burst: u32,
    /// Most changes held while their dependencies are missing, per document and per connection.
    #[arg(long, env = "MINKA_MAX_HELD_CHANGES", default_value_t = 1_000)]
    max_held_changes: usize,
    /// Most bytes of changes held while their dependencies are missing, per document and per
    /// connection.
    #[arg(long, env = "MINKA_MAX_HELD_BYTES", default_value_t = 8 * 1024 * 1024)]
    max_held_bytes: usize,
    /// Seconds a change may wait for its dependencies before it is dropped.
    #[arg(long, env = "MINKA_HELD_TTL_SECS", default_value_t = 600)]
    held_ttl_secs: u64,
    /// Most refused changes kept in the quarantine for one user; beyond it their refused changes
    /// are refused without being kept.
    #[arg(long, env = "MINKA_MAX_QUARANTINE_PER_USER", default_value_t = 10_000)]
    max_quarantine_per_user: usize,
    /// Largest WebSocket message accepted.
    #[arg(long, env = "MINKA_MAX_FRAME_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_frame_bytes: usize,
    /// Messages queued per connection before a non-reading client is disconnected.
    #[arg(long, env = "MINKA_SEND_QUEUE", default_value_t = 1024)]
    send_queue: usize,
    /// Bytes queued per connection before a non-reading client is disconnected (a single
    /// message larger than this is still sent when nothing else is queued).
    #[arg(long, env = "MINKA_SEND_QUEUE_BYTES", default_value_t = 16 * 1024 * 1024)]
    send_queue_bytes: usize,
    /// Seconds between WebSocket pings; a peer silent for twice this is disconnected.
    #[arg(long, env = "MINKA_HEARTBEAT_SECS", default_value_t = 15)]
    heartbeat_secs: u64,
    /// HTTP worker threads.
    #[arg(long, env = "MINKA_WORKERS", default_value_t = 2)]
    workers: usize,
    /// BENCHMARK BUILDS ONLY (`--features bench-unchecked`): accept every change without the
    /// write gate, to measure what the gate costs.
    #[cfg(feature = "bench-unchecked")]
    #[arg(long, env = "MINKA_UNSAFE_SKIP_WRITE_CHECKS")]
    unsafe_skip_write_checks: bool,
}

#[derive(Args)]
struct TokenArgs {
    #[arg(long)]
    sub: String,
    #[arg(long)]
    name: String,
    /// Comma-separated: leader, tecnico, vigilancia, admin.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// 6-digit ubigeo, or * for province-wide reviewers.
    #[arg(long)]
    district: String,
    /// Lifetime, e.g. 8h, 30m, 3600s, 7d.
    #[arg(long, default_value = "8h")]
    ttl: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    secret: SecretArgs,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, env = "MINKA_PROCESS_YEAR", default_value_t = 2027)]
    process_year: u16,
}

fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad --ttl {s:?}"))?;
    Ok(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        other => bail!("unknown --ttl unit {other:?} (use s, m, h or d)"),
    })
}

/// The secret: `--jwt-secret-file`, else `MINKA_JWT_SECRET`, else the data directory's
/// (generated there when `create` and absent).
fn resolve_secret(
    secret: &SecretArgs,
    data_dir: &std::path::Path,
    create: bool,
) -> anyhow::Result<JwtSecret> {
    if let Some(path) = &secret.jwt_secret_file {
        return JwtSecret::read(path).with_context(|| format!("reading {}", path.display()));
    }
    if let Ok(s) = std::env::var("MINKA_JWT_SECRET") {
        if s.trim().len() < 16 {
            bail!("MINKA_JWT_SECRET must be at least 16 characters");
        }
        return Ok(JwtSecret::new(s.trim().as_bytes().to_vec()));
    }
    let path = JwtSecret::default_path(data_dir);
    if !create && !path.exists() {
        bail!("no secret: set MINKA_JWT_SECRET, pass --jwt-secret-file, or run `minka serve` once to generate {}", path.display());
    }
    let (secret, created) = JwtSecret::load_or_create(data_dir)?;
    if created {
        tracing::warn!(path = %path.display(), "no JWT secret configured: generated a new one (mint tokens with `minka token`)");
    }
    Ok(secret)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Token(args) => {
            let secret = resolve_secret(&args.secret, &args.store.data_dir, false)?;
            let now = now_unix();
            let claims = Claims {
                sub: args.sub,
                name: args.name,
                roles: args.roles,
                district: args.district,
                iat: now,
                exp: now + parse_ttl(&args.ttl)?,
            };
            let keys = JwtKeys::new(&secret);
            let token = keys.mint(&claims);
            keys.verify(&token).context("the claims are not valid")?;
            println!("{token}");
            Ok(())
        }
        Command::Check(args) => {
            let store = open_store(&args.spec()?)?;
            print_check(&tools::check(store.as_ref())?)
        }
        Command::Migrate(args) => migrate(args),
        Command::Compact(args) => {
            let store = open_store(&args.spec()?)?;
            let (compacted, total) = tools::compact(store.as_ref())?;
            println!("compacted {compacted} of {total} documents");
            Ok(())
        }
        Command::Export(args) => {
            let district: crdt_core::Ubigeo = args
                .district
                .parse()
                .map_err(|e| anyhow::anyhow!("--district: {e}"))?;
            let store = open_store(&args.store.spec()?)?;
            let year = args.process_year;
            let loaded = minka_server::review::load_district(store.as_ref(), district, year)?;
            if loaded.is_empty() {
                bail!("district {district} has no documents for {year} in this store");
            }
            let d = minka_server::review::District::new(&loaded);
            let out = match args.format {
                ExportFormat::Csv => minka_server::review::export_csv(&d),
                ExportFormat::Pabulib => minka_server::review::export_pabulib(district, year, &d),
                ExportFormat::Json => serde_json::to_string_pretty(
                    &minka_server::review::export_json(district, year, &loaded),
                )?,
            };
            print!("{out}");
            Ok(())
        }
        Command::Demo(args) => {
            let spec = args.store.spec()?;
            let store = open_store(&spec)?;
            let store = store.as_ref();
            let docs = crdt_core::demo::demo_documents(args.process_year, now_unix() as i64);
            let n = tools::write_documents(store, docs.into_iter().map(|d| (d.id, d.doc)))?;
            // The demo users' phones write with fixed actors: bind them, as first sight would.
            let gate = minka_server::gate::Gate::new();
            for user in crdt_core::demo::demo_users() {
                gate.bind(store, &crdt_core::demo::demo_actor(&user.id), &user.id)?;
                minka_server::gate::Gate::remember_name(store, &user.id, &user.name)?;
            }
            store.sync()?;
            println!("seeded {n} demo documents into {spec}");
            Ok(())
        }
    }
}

/// `minka migrate`: copy, then check the target as `minka check` does.
fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let from: StoreSpec = args
        .from
        .parse()
        .map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to: StoreSpec = args.to.parse().map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    if from == to {
        bail!("--from and --to are the same store");
    }
    let source = open_store(&from)?;
    let target = open_store(&to)?;
    let existing = target.list()?.len();
    if existing > 0 && !args.force {
        bail!("the target {to} already holds {existing} documents; pass --force to copy into it anyway");
    }
    let copied = tools::migrate(source.as_ref(), target.as_ref())?;
    println!(
        "copied {} documents ({} snapshots, {} incremental chunks) and {} entries of {} side tables from {from} to {to}",
        copied.documents, copied.snapshots, copied.incrementals, copied.side_entries, copied.side_tables
    );
    println!("checking {to}");
    print_check(&tools::check(target.as_ref())?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let secret = resolve_secret(&args.secret, &args.store.data_dir, true)?;
    let listener = std::net::TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "listening");
    let config = ServeConfig {
        store: args.store.spec()?,
        data_dir: args.store.data_dir,
        process_year: args.process_year,
        jwt_secret: secret,
        max_loaded_docs: args.max_loaded_docs,
        max_waiting_docs: args.max_waiting_docs,
        max_frame_bytes: args.max_frame_bytes,
        max_docs_per_connection: args.max_docs_per_connection,
        max_connections_per_user: args.max_connections_per_user,
        ephemeral_per_second: args.ephemeral_per_second,
        ephemeral_burst: args.ephemeral_burst,
        sync_per_second: args.sync_per_second,
        sync_burst: args.sync_burst,
        held: minka_server::held::HeldLimits {
            per_doc_changes: args.max_held_changes,
            per_doc_bytes: args.max_held_bytes,
            per_peer_changes: args.max_held_changes,
            per_peer_bytes: args.max_held_bytes,
            ttl: Duration::from_secs(args.held_ttl_secs.max(1)),
        },
        max_quarantine_per_user: args.max_quarantine_per_user,
        send_queue: args.send_queue,
        send_queue_bytes: args.send_queue_bytes,
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        workers: args.workers,
        #[cfg(feature = "bench-unchecked")]
        skip_write_checks: args.unsafe_skip_write_checks,
        #[cfg(not(feature = "bench-unchecked"))]
        skip_write_checks: false,
    };
    if config.skip_write_checks {
        tracing::warn!("write checks are OFF (--unsafe-skip-write-checks): for benchmarks only");
    }
    minka_server::run(config, listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
