//! `popline`: the PoP node. With no arguments it serves RTMP on 127.0.0.1:1935 and the admin API on
//! 127.0.0.1:8080, from the embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use relay::admin::AdminServer;
use relay::bans::BanStore;
use relay::config::Config;
use relay::control::NodeControl;
use relay::node::Node;
use tracing::info;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// popline: live-video relay node for CDN points of presence (RTMP ingest and playback, GOP cache,
/// fan-out with drop policies, admin API with stream forbidding).
///
/// Publish:  ffmpeg -re -i in.flv -c copy -f flv rtmp://127.0.0.1:1935/live/STREAM
/// Play:     ffplay rtmp://127.0.0.1:1935/live/STREAM
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file; every field is optional (see --print-config for all of them).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the configuration in effect (defaults, file and flags merged) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// RTMP listen address (overrides rtmp.listen).
    #[arg(long)]
    rtmp_listen: Option<SocketAddr>,
    /// Admin HTTP listen address (overrides http.listen).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Data-plane cores; 0 = one per CPU (overrides engine.cores).
    #[arg(long)]
    cores: Option<usize>,
    /// Bans file (overrides bans.path).
    #[arg(long)]
    bans_path: Option<PathBuf>,
    /// Bearer token of the admin API (overrides http.token).
    #[arg(long)]
    http_token: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(addr) = cli.rtmp_listen {
        config.rtmp.listen = addr;
    }
    if let Some(addr) = cli.http_listen {
        config.http.listen = addr;
    }
    if let Some(cores) = cli.cores {
        config.engine.cores = cores;
    }
    if let Some(path) = cli.bans_path {
        config.bans.path = Some(path);
    }
    if let Some(token) = cli.http_token {
        config.http.token = Some(token);
    }
    config.validate()?;
    if cli.print_config {
        print!(
            "{}",
            toml::to_string_pretty(&config).context("cannot print config")?
        );
        return Ok(());
    }
    init_logging(&config.log.filter);
    if let Some(url) = &config.auth.on_publish {
        relay::auth::check_hook_url(url).map_err(|e| anyhow::anyhow!("auth.on_publish: {e}"))?;
    }

    let bans = Arc::new(BanStore::open(config.bans.path.clone()).context("cannot open the bans file")?);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = cli
            .config
            .as_ref()
            .map_or("(embedded defaults)".to_string(), |p| p.display().to_string()),
        bans = bans.list().len(),
        "popline starting"
    );
    let node = Node::start(config.clone(), bans.clone())
        .with_context(|| format!("cannot start RTMP on {}", config.rtmp.listen))?;
    let control: Arc<dyn NodeControl> = node.handle();
    let admin = if config.http.enabled {
        let server = AdminServer::spawn(&config.http, control, bans)
            .with_context(|| format!("cannot start the admin API on {}", config.http.listen))?;
        info!(addr = %server.local_addr(), auth = config.http.token.is_some(), "admin API listening");
        Some(server)
    } else {
        None
    };
    // One machine-readable line on stdout (tests and scripts wait for it), then the how-to.
    let http = admin
        .as_ref()
        .map_or("off".to_string(), |a| a.local_addr().to_string());
    println!("popline ready: rtmp={} http={}", node.rtmp_addr(), http);
    println!(
        "  publish: ffmpeg -re -i FILE.flv -c copy -f flv rtmp://{0}/live/STREAM   (OBS: server rtmp://{0}/live, key STREAM)\n  \
         play:    ffplay rtmp://{0}/live/STREAM   (VLC: Media > Open Network Stream)",
        node.rtmp_addr()
    );

    wait_for_signal()?;
    info!("shutting down");
    if let Some(admin) = admin {
        admin.shutdown();
    }
    node.shutdown();
    Ok(())
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the signal runtime")?;
    runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    })?;
    Ok(())
}
