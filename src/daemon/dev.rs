//! `restorectl daemon --dev` (SPEC §6.1): the built-in VB365 simulator with the demo world on a
//! free loopback port, the example config `jobs.example/restorectl.yaml` with every server's URL
//! pointed at the simulator, state and exports under `./.restorectl-dev/`, and a banner that
//! says where things land and what to try next.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::sim::{DEMO_ORG_NAME, SimConfig, SimError, SimHandle, Simulator};

/// The example config `--dev` reads, relative to the working directory.
pub const DEV_CONFIG: &str = "jobs.example/restorectl.yaml";

/// Errors preparing `--dev`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// `jobs.example/restorectl.yaml` is missing or invalid.
    #[error("--dev needs its config ({DEV_CONFIG} by default: run it from the repository root)")]
    Config(#[source] ConfigError),
    /// The simulator could not start.
    #[error("--dev: the built-in simulator could not start")]
    Simulator(#[source] SimError),
    /// The URL of the simulator cannot be parsed (never expected).
    #[error("--dev: the simulator's URL {url} is not a URL")]
    Url { url: String },
}

/// A running `--dev` setup: the simulator (stopped on drop of the handle via
/// [`DevSetup::shutdown`]) and the config pointed at it.
#[derive(Debug)]
pub struct DevSetup {
    pub config: Config,
    pub simulator: SimHandle,
}

impl DevSetup {
    /// Starts the simulator on a free loopback port and loads `config_file` (normally
    /// [`DEV_CONFIG`]) with every server URL replaced by the simulator's.
    ///
    /// # Errors
    ///
    /// [`DevError`] when the config is missing or invalid, or the simulator cannot start.
    pub async fn start(config_file: &Path) -> Result<DevSetup, DevError> {
        let mut config = Config::load(config_file).map_err(DevError::Config)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let simulator = Simulator::start(SimConfig::default(), addr)
            .await
            .map_err(DevError::Simulator)?;
        let base_url = simulator.base_url();
        let url = url::Url::parse(&base_url).map_err(|_| DevError::Url {
            url: base_url.clone(),
        })?;
        for server in config.servers.values_mut() {
            server.url = url.clone();
        }
        Ok(DevSetup { config, simulator })
    }

    /// Stops the simulator.
    pub async fn shutdown(self) {
        self.simulator.shutdown().await;
    }
}

/// Whether a loopback address can be bound now (`--dev` falls back to a free port when the
/// configured one is taken, e.g. by another dev daemon).
pub fn port_free(addr: SocketAddr) -> bool {
    std::net::TcpListener::bind(addr).is_ok()
}

/// The banner printed once the dev daemon is ready.
pub fn banner(config: &Config, simulator: &str, http: Option<SocketAddr>) -> String {
    let rel = |p: &Path| -> PathBuf {
        let p = normalize(p);
        std::env::current_dir()
            .ok()
            .and_then(|cwd| p.strip_prefix(&cwd).ok().map(Path::to_path_buf))
            .unwrap_or(p)
    };
    let cfg = DEV_CONFIG;
    let mut out = String::new();
    let _ = writeln!(out, "restorectl dev daemon is ready");
    let _ = writeln!(
        out,
        "  simulator:  {simulator} (VB365 REST API v8, organisation {DEMO_ORG_NAME})"
    );
    let _ = writeln!(
        out,
        "  jobs:       {}/ (edit a file: it is picked up at once)",
        rel(&config.jobs_dir).display()
    );
    let _ = writeln!(out, "  exports:    {}/", rel(&config.export_root).display());
    let _ = writeln!(
        out,
        "  state:      {}",
        rel(&config.database_path()).display()
    );
    if let Some(addr) = http {
        let _ = writeln!(
            out,
            "  metrics:    http://{addr}/metrics  (also /healthz, /readyz)"
        );
    }
    let _ = writeln!(
        out,
        "One-shot example jobs run once (at the first start); their PST exports and search \
         reports appear under exports/ within seconds."
    );
    let _ = writeln!(out, "Try in a second terminal:");
    let _ = writeln!(out, "  restorectl --config {cfg} jobs");
    let _ = writeln!(out, "  restorectl --config {cfg} runs");
    let _ = writeln!(out, "  restorectl --config {cfg} show RUN_ID");
    let _ = writeln!(
        out,
        "  restorectl --config {cfg} run legal-hold-weekly --wait"
    );
    let _ = writeln!(out, "Press Ctrl-C to stop.");
    out
}

/// Removes `.` and `name/..` pairs lexically (`jobs.example/../.restorectl-dev` →
/// `.restorectl-dev`) so the banner shows the paths a user would type.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_paths_are_normalised() {
        assert_eq!(
            normalize(Path::new("/repo/jobs.example/../.restorectl-dev/./exports")),
            Path::new("/repo/.restorectl-dev/exports")
        );
        assert_eq!(normalize(Path::new("../a/../b")), Path::new("../b"));
    }
}
