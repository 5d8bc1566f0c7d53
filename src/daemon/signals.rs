//! Process signals: SIGTERM and SIGINT stop the daemon (systemd stops services with SIGTERM,
//! a terminal sends SIGINT), SIGHUP reloads the config.
//!
//! Handlers are installed when [`Terminate::install`] and [`Hangups::new`] are called, not when
//! first awaited: the binary installs both before start-up begins, so a SIGTERM or SIGHUP that
//! arrives while the daemon is still starting is queued instead of killing the process (the
//! default action of both).

use std::io;

/// SIGTERM and SIGINT, installed.
pub struct Terminate {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Terminate {
    /// Installs the handlers (call inside the runtime).
    ///
    /// # Errors
    ///
    /// When the signal handlers cannot be installed.
    pub fn install() -> io::Result<Terminate> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Terminate {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Terminate {})
    }

    /// Completes at the first SIGTERM or SIGINT (received since [`Terminate::install`]).
    pub async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received: draining"),
            _ = self.int.recv() => tracing::info!("SIGINT received: draining"),
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
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
