//! `restorectl simulate`: the built-in VB365 simulator as a standalone server (SPEC §6, §9).
//!
//! Listens on `--listen` (default 127.0.0.1:4443; plain HTTP unless the config file names a
//! certificate and key), prints its URL, the demo organisation and the development
//! credentials, and runs until Ctrl-C or SIGTERM, then stops gracefully. The global `--config`
//! names the simulator's YAML/JSON file here (see `SimConfigFile`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use super::Outcome;
use crate::config::ConfigError;
use crate::sim::{
    DEMO_ORG_ID, DEMO_ORG_NAME, DEV_PASSWORD, DEV_USERNAME, PAGING_ORG_NAME, SimConfig,
    SimConfigError, SimConfigFile, Simulator,
};

/// Default listen address (the VB365 REST API's default port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4443";

/// Arguments of `restorectl simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (default 127.0.0.1:4443; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// Turns a simulator config problem into the daemon's config error (exit code 78).
fn config_error(err: SimConfigError) -> ConfigError {
    match err {
        SimConfigError::Read { path, source } => ConfigError::Read {
            path,
            cause: source,
        },
        SimConfigError::Parse { path, source } => {
            let (line, column) = source.location().map_or((0, 0), |l| (l.line(), l.column()));
            ConfigError::Syntax {
                path,
                line,
                column,
                message: source.to_string(),
            }
        }
    }
}

/// Installs a plain stderr subscriber unless one is already set (stdout carries the banner).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the simulator until Ctrl-C or SIGTERM.
pub fn run(args: SimulateArgs, config_file: Option<&Path>) -> anyhow::Result<Outcome> {
    init_tracing();
    let (file, config) = match config_file {
        Some(path) => SimConfigFile::load(path).map_err(config_error)?,
        None => (SimConfigFile::default(), SimConfig::default()),
    };
    let listen = match args.listen.or(file.listen) {
        Some(addr) => addr,
        None => DEFAULT_LISTEN.parse().context("default listen address")?,
    };
    let dev_user = config
        .users
        .iter()
        .any(|u| u.username == DEV_USERNAME && u.password == DEV_PASSWORD);
    let paging_mailboxes = config.paging_org_mailboxes;
    let usernames: Vec<String> = config.users.iter().map(|u| u.username.clone()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let sim = Simulator::start(config, listen).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "VB365 simulator listening on {}", sim.base_url())?;
        writeln!(out, "  API base:      {}/v8/", sim.base_url())?;
        writeln!(out, "  organization:  {DEMO_ORG_NAME} ({DEMO_ORG_ID})")?;
        writeln!(
            out,
            "  paging org:    {PAGING_ORG_NAME} ({paging_mailboxes} mailboxes)"
        )?;
        if dev_user {
            // The development account is public by design (SPEC §6.1); configured accounts
            // are listed by name only.
            writeln!(out, "  dev login:     {DEV_USERNAME} / {DEV_PASSWORD}")?;
        } else {
            writeln!(out, "  users:         {}", usernames.join(", "))?;
        }
        writeln!(
            out,
            "  device codes:  curl -X POST '{}/sim/devicelogin?code=CODE' signs one in",
            sim.base_url()
        )?;
        writeln!(
            out,
            "  statistics:    curl '{}/sim/stats' counts the requests per route",
            sim.base_url()
        )?;
        writeln!(out, "Press Ctrl-C to stop.")?;
        out.flush()?;
        drop(out);
        wait_for_stop().await?;
        tracing::info!("stopping the simulator");
        sim.shutdown().await;
        println!("simulator stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome::Ok)
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM (how systemd stops services).
async fn wait_for_stop() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
