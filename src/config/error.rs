//! [`ConfigError`]: what can go wrong loading the daemon config or resolving a secret.

use std::path::PathBuf;

/// Errors while loading the daemon config or resolving a secret. Every variant names the file
/// (and where possible the line, column and key) so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    // The cause is part of the message (not a `#[source]`) so `{err:#}` prints it once.
    #[error("{path}: cannot read config: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("secret {reference}: {message}")]
    Secret { reference: String, message: String },
}
