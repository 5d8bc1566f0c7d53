//! The errors of starting or querying the simulator ([`SimError`]).

use std::net::SocketAddr;

use uuid::Uuid;

use super::faults::FaultPatternError;
use super::search::QueryError;

/// Errors of starting or querying the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("simulator: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("simulator TLS: {0}")]
    Tls(String),
    /// A fault rule is invalid.
    #[error(transparent)]
    Fault(#[from] FaultPatternError),
    /// A mailbox or organisation id is not part of the world.
    #[error("simulator: {0} is not part of the simulated world")]
    UnknownId(Uuid),
    /// A search query is malformed.
    #[error(transparent)]
    Query(#[from] QueryError),
}
