//! `popline`: the PoP node. With no arguments it serves RTMP on 127.0.0.1:1935, HTTP-FLV on 127.0.0.1:8080
//! and the admin API on 127.0.0.1:1985, from the embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use relay::admin::AdminServer;
use relay::bans::BanStore;
use relay::config::Config;
use relay::control::NodeControl;
use relay::node::Node;
use relay::startup::{self, print_quietly};
use tracing::info;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// popline: live-video relay node for CDN points of presence (RTMP ingest and playback, GOP cache,
/// fan-out with drop policies, admin API with stream forbidding).
#[derive(Debug, Parser)]
#[command(
    name = "popline",
    version,
    after_help = "Publish:  ffmpeg -re -i in.flv -c copy -f flv rtmp://127.0.0.1:1935/live/STREAM\n\
                  Play:     ffplay rtmp://127.0.0.1:1935/live/STREAM\n\
                  HTTP-FLV: ffplay http://127.0.0.1:8080/live/STREAM.flv\n\
                  Health:   curl 127.0.0.1:1985/healthz"
)]
struct Cli {
    /// TOML configuration file; every field is optional (see --print-config for all of them).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Print the configuration in effect (defaults, file and flags merged) as TOML and exit; secrets
    /// (admin.token, auth.publish_secret) are shown as "(redacted)".
    #[arg(long)]
    print_config: bool,
    /// RTMP listen address, HOST:PORT (overrides rtmp.listen).
    #[arg(long, value_parser = startup::parse_listen_addr)]
    rtmp_listen: Option<SocketAddr>,
    /// Admin API listen address, HOST:PORT (overrides admin.listen); other than loopback it needs a token.
    #[arg(long, alias = "http-listen", value_parser = startup::parse_listen_addr)]
    admin_listen: Option<SocketAddr>,
    /// HTTP egress (HTTP-FLV) listen address, HOST:PORT (overrides egress.listen).
    #[arg(long, value_parser = startup::parse_listen_addr)]
    egress_listen: Option<SocketAddr>,
    /// Data-plane cores; 0 = one per CPU (overrides engine.cores).
    #[arg(long)]
    cores: Option<usize>,
    /// Bans file (overrides bans.path).
    #[arg(long)]
    bans_path: Option<PathBuf>,
    /// Bearer token of the admin API (overrides admin.token).
    #[arg(long, alias = "http-token")]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Tools besides running the node.
#[derive(Debug, Subcommand)]
enum Command {
    /// Print a publish token for a stream: the query to append to the stream name
    /// (rtmp://HOST/APP/STREAM?expires=...&token=...). The secret is auth.publish_secret of --config, or --secret.
    SignPublish {
        /// The stream, APP/STREAM (e.g. live/shop42).
        #[arg(long)]
        stream: String,
        /// Seconds the token stays valid from now.
        #[arg(long, default_value_t = 86_400)]
        expires_in: u64,
        /// The shared secret (instead of auth.publish_secret from --config).
        #[arg(long)]
        secret: Option<String>,
    },
    /// Write a new mesh key pair: the private key to --out (mode 0600, never overwritten), the public key
    /// (base64) to stdout, for the other nodes' [[mesh.peers]] public_key.
    Keygen {
        /// Where to write the private key (e.g. /var/lib/popline/mesh.key).
        #[arg(long)]
        out: PathBuf,
    },
    /// The snapshot decoder the node starts as a child process (reads keyframes on stdin, writes JPEGs on
    /// stdout); not for use by hand.
    #[command(hide = true)]
    SnapshotWorker,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            use std::io::Write;
            // One line, each cause once, no backtrace: the error says what to fix.
            let _ = writeln!(
                std::io::stderr(),
                "popline: error: {}",
                startup::error_line(&error)
            );
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::SnapshotWorker) = &cli.command {
        // Before any config is read: the worker needs none, and its stdout carries only answers.
        return relay::snapshot::worker::serve(std::io::stdin().lock(), std::io::stdout().lock())
            .context("snapshot worker");
    }
    let mut config = match &cli.config {
        Some(path) => Config::read(path)?,
        None => Config::default(),
    };
    if let Some(Command::Keygen { out }) = &cli.command {
        let keypair = relay::mesh::config::write_new_key(out)
            .with_context(|| format!("cannot write a new key to {}", out.display()))?;
        print_quietly(&format!("{}\n", relay::mesh::config::encode_key(&keypair.public)));
        return Ok(());
    }
    if let Some(Command::SignPublish {
        stream,
        expires_in,
        secret,
    }) = &cli.command
    {
        return sign_publish(&config, stream, *expires_in, secret.as_deref());
    }
    if let Some(addr) = cli.rtmp_listen {
        config.rtmp.listen = addr;
    }
    if let Some(addr) = cli.admin_listen {
        config.admin.listen = addr;
    }
    if let Some(addr) = cli.egress_listen {
        config.egress.listen = addr;
    }
    if let Some(cores) = cli.cores {
        config.engine.cores = cores;
    }
    if let Some(path) = cli.bans_path {
        config.bans.path = Some(path);
    }
    if let Some(token) = cli.admin_token {
        config.admin.token = Some(token);
    }
    config.validate()?;
    if cli.print_config {
        let text = toml::to_string_pretty(&startup::redacted(&config)).context("cannot print config")?;
        print_quietly(&text);
        return Ok(());
    }
    if let Some(url) = &config.auth.on_publish {
        relay::auth::check_hook_url(url).map_err(|e| anyhow::anyhow!("auth.on_publish: {e}"))?;
    }
    // Another process on our ports is refused before anything starts (the cores' SO_REUSEPORT would share
    // the RTMP port with it silently).
    startup::check_port_free(config.rtmp.listen, "RTMP").map_err(anyhow::Error::msg)?;
    if config.admin.enabled {
        startup::check_port_free(config.admin.listen, "admin HTTP").map_err(anyhow::Error::msg)?;
    }
    if config.egress.enabled {
        startup::check_port_free(config.egress.listen, "HTTP egress").map_err(anyhow::Error::msg)?;
    }
    // The bans file: a relative path is under systemd's $STATE_DIRECTORY when set (a service runs in `/`),
    // and it must be writable now, not at the first forbid.
    config.bans.path = config
        .bans
        .path
        .take()
        .map(|path| startup::resolve_state_path(&path, std::env::var_os("STATE_DIRECTORY").as_deref()));
    config.recording.path = startup::resolve_state_path(
        &config.recording.path,
        std::env::var_os("STATE_DIRECTORY").as_deref(),
    );
    config.snapshots.path = startup::resolve_state_path(
        &config.snapshots.path,
        std::env::var_os("STATE_DIRECTORY").as_deref(),
    );
    let bans = Arc::new(BanStore::open(config.bans.path.clone()).context("cannot open the bans file")?);
    if let Some(path) = bans.path() {
        bans.check_writable().with_context(|| {
            format!(
                "bans.path = {}: a forbid could not be saved there; set bans.path (or --bans-path) to a file in \
                 a writable directory",
                path.display()
            )
        })?;
    }
    init_logging(&config.log.filter);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = cli
            .config
            .as_ref()
            .map_or("(embedded defaults)".to_string(), |p| p.display().to_string()),
        bans = bans.list().len(),
        bans_path = %config.bans.path.as_ref().map_or("(memory only)".to_string(), |p| p.display().to_string()),
        "popline starting"
    );
    let node = Node::start(config.clone(), bans.clone())
        .with_context(|| format!("cannot start RTMP on {}", config.rtmp.listen))?;
    // Two nodes started at the same instant both pass check_port_free and then share one SO_REUSEPORT group:
    // each sees the other's listener now, and stops.
    match startup::foreign_listeners(node.rtmp_addr()) {
        Ok(foreign) if !foreign.is_empty() => {
            let port = node.rtmp_addr().port();
            node.shutdown();
            anyhow::bail!(
                "RTMP port {} is shared with another process that listens on it too ({}): most likely another \
                 popline started at the same time. Stop it, or give this node another port",
                port,
                foreign.join(", ")
            );
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot check for other listeners on the RTMP port (no /proc?)"),
    }
    let control: Arc<dyn NodeControl> = node.handle();
    let transcoder = startup::start_transcoder(&config, node.rtmp_addr(), Arc::clone(&control))
        .context("cannot start the transcoder")?
        .map(Arc::new);
    let admin = if config.admin.enabled {
        let mut media = startup::admin_media(&config).context("cannot set up snapshots")?;
        media.transcoder = transcoder.clone();
        media.egress = node.egress_addr();
        let server = AdminServer::spawn_with_media(&config.admin, control, bans, media)
            .with_context(|| format!("cannot start the admin API on {}", config.admin.listen))?;
        info!(addr = %server.local_addr(), auth = config.admin.token.is_some(), "admin API listening");
        Some(server)
    } else {
        None
    };
    // One machine-readable line on stdout (tests and scripts wait for it), then the how-to. Written without
    // `println!`: a closed stdout must not end the node.
    let admin_addr = admin
        .as_ref()
        .map_or("off".to_string(), |a| a.local_addr().to_string());
    let egress = node.egress_addr().map_or("off".to_string(), |a| a.to_string());
    let flv_hint = node.egress_addr().map_or(String::new(), |a| {
        format!("  http-flv: ffplay http://{a}/live/STREAM.flv   (flv.js, mpegts.js, VLC)\n")
    });
    print_quietly(&format!(
        "popline ready: rtmp={0} admin={admin_addr} egress={egress}\n  \
         publish: ffmpeg -re -i FILE.flv -c copy -f flv rtmp://{0}/live/STREAM   (OBS: server rtmp://{0}/live, key STREAM)\n  \
         play:    ffplay rtmp://{0}/live/STREAM   (VLC: Media > Open Network Stream)\n{flv_hint}",
        node.rtmp_addr()
    ));

    wait_for_signal()?;
    info!("shutting down");
    if let Some(admin) = admin {
        admin.shutdown();
    }
    // Stops the transcode workers (their renditions' publishes end with them) before the node.
    drop(transcoder);
    node.shutdown();
    Ok(())
}

/// `popline sign-publish`: prints `expires=...&token=...` for `stream`.
fn sign_publish(config: &Config, stream: &str, expires_in: u64, secret: Option<&str>) -> anyhow::Result<()> {
    let secret = secret
        .or(config.auth.publish_secret.as_deref())
        .context("no secret: give --secret, or --config with auth.publish_secret")?;
    let (app, name) = stream
        .split_once('/')
        .with_context(|| format!("--stream {stream:?}: want APP/STREAM, e.g. live/shop42"))?;
    let key = relay::stream_key::StreamKey::new(app, name)
        .map_err(|e| anyhow::anyhow!("--stream {stream:?}: {e}"))?;
    let expires = relay::bans::unix_now_ms() / 1000 + expires_in;
    print_quietly(&format!(
        "{}\n",
        relay::auth::sign_publish(secret.as_bytes(), &key, expires)
    ));
    Ok(())
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(startup::QuietStderr)
        .log_internal_errors(false)
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
