//! Process signals: SIGTERM and SIGINT stop the daemon (systemd stops services with SIGTERM,
//! a terminal sends SIGINT), SIGHUP reloads the config.

use std::io;

/// Completes at the first SIGTERM or SIGINT.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub async fn terminate() -> io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: draining"),
            _ = int.recv() => tracing::info!("SIGINT received: draining"),
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// A stream of SIGHUPs (`None` where there are none, or the handler cannot be installed).
pub struct Hangups {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Installs the SIGHUP handler.
    pub fn new() -> Hangups {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let inner = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(error) => {
                    tracing::warn!(%error, "cannot install the SIGHUP handler; reload by restart");
                    None
                }
            };
            Hangups { inner }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// The next SIGHUP; pending forever when there is no handler.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.inner.as_mut()
            && s.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

impl Default for Hangups {
    fn default() -> Self {
        Hangups::new()
    }
}
