//! `herald`: the Herald gateway binary.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use herald_gateway::NodeConfig;
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Exit code for bad configuration (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(name = "herald", version, about = "Herald real-time gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a development node (WebSocket at ws://LISTEN/ws).
    Serve {
        /// Address to listen on; loopback only until signed tokens land.
        #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Node id reported to clients.
        #[arg(long, env = "HERALD_NODE_ID", default_value = "dev-1")]
        node_id: String,
        /// Messages kept in memory per room.
        #[arg(long, env = "HERALD_HISTORY", default_value_t = 1000)]
        history: usize,
        /// Log as JSON lines instead of text.
        #[arg(long, env = "HERALD_LOG_JSON")]
        log_json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            node_id,
            history,
            log_json,
        } => {
            init_tracing(log_json);
            if !listen.ip().is_loopback() {
                eprintln!(
                    "herald: refusing to listen on {listen}: this node accepts unsigned development tokens, \
                     so it only binds loopback addresses"
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            if history == 0 || node_id.is_empty() {
                eprintln!("herald: --history must be at least 1 and --node-id non-empty");
                return ExitCode::from(EXIT_CONFIG);
            }
            let config = NodeConfig {
                listen,
                node_id,
                history_per_room: history,
                ..NodeConfig::default()
            };
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("herald: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        tracing::warn!("development mode: any non-empty token is accepted as the user id (loopback only)");
        tracing::info!(%addr, node_id = %config.node_id, "listening; connect a WebSocket client to ws://{addr}/ws");
        herald_gateway::run(listener, config, shutdown_signal()).await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
