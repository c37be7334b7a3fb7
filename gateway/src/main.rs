//! `herald`: the Herald gateway binary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use herald_gateway::auth::{self, MintRequest};
use herald_gateway::settings::{self, Loaded, Settings};
use herald_gateway::{AuthConfig, NodeHandle};
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Exit code for bad configuration or usage (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(name = "herald", version, about = "Herald real-time gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node: HTTP and WebSocket (ws://LISTEN/ws) on one port. With no
    /// arguments, a development node on 127.0.0.1:8080.
    Serve(ConfigArgs),
    /// Mint a JWT for development, signed with the configured secret.
    Token {
        /// User id (`sub`).
        #[arg(long)]
        user: String,
        /// Room patterns the token may subscribe to and publish in,
        /// comma-separated (`chat:*,dash:sales`; `*` is everything).
        #[arg(long, value_delimiter = ',', default_value = "*")]
        rooms: Vec<String>,
        /// Lifetime (`30m`, `1h`, `7d`).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Set the admin claim.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Create the ScyllaDB keyspace and tables (idempotent):
    /// `herald migrate --storage scylla://host:9042/keyspace`.
    Migrate {
        /// Keyspace replication, as CQL.
        #[arg(
            long,
            default_value = "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        )]
        replication: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Settings flags (they override `HERALD_*` variables, which override the
/// file).
#[derive(Args, Debug, Default)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Address for HTTP and WebSocket [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Address for operators: /metrics and the server API (/api/...) move
    /// here from --listen [default: none, everything on --listen].
    #[arg(long)]
    internal_listen: Option<std::net::SocketAddr>,
    /// Browser origins allowed to use the node: "*", "same-origin", or
    /// origins separated by commas [default: any on a development node,
    /// same-origin with --jwt-secret or --jwt-public-key].
    #[arg(long)]
    allowed_origins: Option<String>,
    /// Serve this directory at /app/ (development: the client's example).
    #[arg(long)]
    static_dir: Option<PathBuf>,
    /// Shards (threads) [default: number of cores].
    #[arg(long)]
    shards: Option<usize>,
    /// Directory for durable data [default: ./herald-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage backend: "embedded" (under --data-dir), "memory" (nothing
    /// survives a restart), or scylla://host:9042,host2:9042/keyspace
    /// [default: embedded].
    #[arg(long)]
    storage: Option<String>,
    /// When writes reach the disk: "always" (an ack means on disk),
    /// "interval:10ms", "none" [default: always].
    #[arg(long)]
    sync: Option<String>,
    /// Join a cluster: Redis URL(s) separated by commas, the same on every
    /// node (needs --node-id) [default: none, the node runs alone].
    #[arg(long, env = "HERALD_REDIS")]
    redis: Option<String>,
    /// HS256 secret for client JWTs (at least 32 bytes).
    #[arg(long)]
    jwt_secret: Option<String>,
    /// PEM public key (RSA or Ed25519) for client JWTs.
    #[arg(long)]
    jwt_public_key: Option<PathBuf>,
    /// Key for the server API [default: random, logged at start].
    #[arg(long)]
    api_key: Option<String>,
    /// Node id reported to clients and in metrics [default: dev-1].
    #[arg(long)]
    node_id: Option<String>,
    /// Log JSON lines.
    #[arg(long)]
    log_json: bool,
}

impl ConfigArgs {
    fn load(&self) -> Result<Loaded, String> {
        let flags = Settings {
            listen: self.listen,
            internal_listen: self.internal_listen,
            allowed_origins: self.allowed_origins.clone().map(settings::OriginsSetting::One),
            static_dir: self.static_dir.clone(),
            shards: self.shards,
            node_id: self.node_id.clone(),
            data_dir: self.data_dir.clone(),
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key: self.jwt_public_key.clone(),
            api_key: self.api_key.clone(),
            log_json: self.log_json.then_some(true),
            redis: self.redis.clone(),
            storage: settings::StorageSettings {
                backend: self.storage.clone(),
                sync: self.sync.clone(),
                ..Default::default()
            },
            ..Settings::default()
        };
        settings::load(&settings::figment(self.config.as_deref(), &flags))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let loaded = match args.load() {
                Ok(l) => l,
                Err(e) => return config_error(&e),
            };
            init_tracing(loaded.log_json);
            for var in settings::unknown_env_vars() {
                tracing::warn!("ignoring {var}: it names no setting (docs/CONFIG.md lists them)");
            }
            serve(loaded)
        }
        Command::Token {
            user,
            rooms,
            ttl,
            admin,
            config,
        } => token(&user, rooms, &ttl, admin, &config),
        Command::Migrate { replication, config } => migrate(&replication, &config),
    }
}

fn migrate(replication: &str, config: &ConfigArgs) -> ExitCode {
    let loaded = match config.load() {
        Ok(l) => l,
        Err(e) => return config_error(&e),
    };
    init_tracing(loaded.log_json);
    match &loaded.node.storage.backend {
        herald_gateway::StorageBackend::Scylla(url) => match herald_gateway::migrate_scylla(url, replication) {
            Ok(()) => {
                eprintln!("herald: {url}: schema applied");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("herald: migrate: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("herald: the embedded store creates its schema itself; migrate is for --storage scylla://...");
            ExitCode::SUCCESS
        }
    }
}

/// mimalloc commits each 1 GiB arena eagerly on Linux, so an idle node
/// holds ~200 B per connection more than it uses (BENCHMARKS.md, idle
/// memory). This makes on-demand commit the default; an explicit
/// `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still wins. It has to
/// run as a constructor: the first arena is reserved by the first allocation,
/// which happens before `main`.
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static LAZY_ARENA_COMMIT: extern "C" fn() = lazy_arena_commit;

extern "C" fn lazy_arena_commit() {
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: `mi_option_set_default` writes one entry of mimalloc's static
    // option table (no allocation, no thread yet); option 4 is
    // `mi_option_arena_eager_commit` in mimalloc 2 and 3 (include/mimalloc.h).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0);
    }
}

fn config_error(message: &str) -> ExitCode {
    eprintln!("herald: {message}");
    ExitCode::from(EXIT_CONFIG)
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: a log file, a pipe or
    // journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(loaded: Loaded) -> ExitCode {
    let Loaded {
        node: config,
        data_dir,
        api_key_generated,
        ..
    } = loaded;
    if let Err(e) = std::fs::create_dir_all(&data_dir) {
        return config_error(&format!("data_dir {}: {e}", data_dir.display()));
    }
    let development = matches!(config.auth, AuthConfig::Development);
    let allowed_origins = config.allowed_origins.clone();
    let api_key = config.api_key.clone();
    let (shards, node_id) = (config.shards, config.node_id.clone());
    let (config_storage, config_sync) = (config.storage.backend.clone(), config.storage.sync);
    // Before the node answers anything: a SIGTERM that arrives as soon as
    // /health answers must drain the node, not kill the process.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("herald: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let node = match NodeHandle::spawn(config) {
        Ok(n) => n,
        Err(herald_gateway::StartError::Config(e)) => return config_error(&e),
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = node.addr;
    if matches!(allowed_origins, herald_gateway::AllowedOrigins::Any) {
        tracing::info!("pages from any origin may use this node (allowed_origins = \"*\")");
    }
    if development {
        tracing::warn!(
            "DEVELOPMENT MODE: no --jwt-secret or --jwt-public-key, so any user id is accepted as a token \
             (loopback only). Never run this in production."
        );
    }
    if api_key_generated {
        tracing::info!("api key: {api_key}");
    }
    let ops = node.operator_addr();
    tracing::info!(
        %addr, shards, node_id = %node_id, data_dir = %data_dir.display(),
        "listening; WebSocket clients connect to ws://{addr}/ws (token: {}), backends POST to http://{ops}/api/publish, \
         metrics at http://{ops}/metrics{}",
        if development { "any user id" } else { "a JWT, see `herald token`" },
        if ops == addr { "" } else { " (internal listener)" }
    );
    match &config_storage {
        herald_gateway::StorageBackend::Memory => {
            tracing::warn!("storage: memory; history and notifications do not survive a restart");
        }
        herald_gateway::StorageBackend::Embedded(dir) => {
            tracing::info!(dir = %dir.display(), sync = ?config_sync, "storage: embedded");
        }
        other => tracing::info!(backend = ?other, sync = ?config_sync, "storage"),
    }
    let trigger = node.shutdown_handle();
    signals.wait();
    tracing::info!("signal received: draining");
    trigger.trigger();
    node.join();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (term, int) = {
            let _context = rt.enter();
            (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
        };
        Ok(Self { rt, term, int })
    }

    fn wait(mut self) {
        self.rt.block_on(async {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        });
    }
}

fn token(user: &str, rooms: Vec<String>, ttl: &str, admin: bool, config: &ConfigArgs) -> ExitCode {
    let loaded = match config.load() {
        Ok(l) => l,
        Err(e) => return config_error(&e),
    };
    let ttl = match settings::parse_duration(ttl) {
        Ok(t) => t,
        Err(e) => return config_error(&format!("--ttl: {e}")),
    };
    match loaded.node.auth {
        AuthConfig::Hs256Secret(secret) => {
            let req = MintRequest {
                user: user.to_owned(),
                rooms,
                ttl,
                admin,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match auth::mint_hs256(&secret, &req, now) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(&e.to_string()),
            }
        }
        AuthConfig::PublicKeyPem(_) => config_error(
            "this node verifies tokens with a public key; mint them where the private key lives \
             (herald token signs with --jwt-secret only)",
        ),
        AuthConfig::Development => {
            if auth::Verifier::development().verify(user, 0).is_err() {
                return config_error("user id must be 1-64 characters of [A-Za-z0-9:_-.@/]");
            }
            eprintln!("herald: no --jwt-secret configured: a development node accepts the user id itself as the token");
            println!("{user}");
            ExitCode::SUCCESS
        }
    }
}
