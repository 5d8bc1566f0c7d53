//! Daemon configuration (`restorectl.yaml`, SPEC §3): where it is read from, what it holds, and
//! how secret references are resolved.
//!
//! Loading is two-step like job files: YAML is deserialised into `Raw*` types with
//! `deny_unknown_fields` (so a misspelt key fails with FILE:LINE:COLUMN), then turned into
//! [`Config`], in which every relative path is already resolved against the config file's
//! directory and every default is filled in. Nothing downstream reads the raw types.
//!
//! Secrets are never stored in [`Config`]: it holds [`SecretRef`]s, resolved lazily (at the moment
//! a password or certificate is needed) into `secrecy` types whose `Debug` prints `[REDACTED]`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use schemars::JsonSchema;
use secrecy::{SecretBox, SecretString};
use serde::{Deserialize, Deserializer};

/// Where the config is read from when neither `--config` nor `RESTORECTL_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/restorectl/restorectl.yaml";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "RESTORECTL_CONFIG";
/// File names that are daemon configs, never job files, even inside a job directory.
pub const CONFIG_FILE_NAMES: [&str; 2] = ["restorectl.yaml", "restorectl.yml"];

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

/// A reference to a secret value: `{ secret: NAME }`, `{ env: VAR }` or `{ file: /path }`.
///
/// A plain YAML string where a `SecretRef` is expected is rejected while parsing, so a password
/// can never sit in a config or job file by accident.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SecretRef {
    /// A file named `NAME` in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`), else in `secretsDir`.
    Secret(String),
    /// An environment variable.
    Env(String),
    /// A file; trailing newline stripped for text secrets, raw bytes for certificates.
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    // The reference (a name, not a value) is safe to print; this keeps the one-line form short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Secret(n) => write!(f, "{{secret: {n}}}"),
            SecretRef::Env(v) => write!(f, "{{env: {v}}}"),
            SecretRef::File(p) => write!(f, "{{file: {}}}", p.display()),
        }
    }
}

/// The message used wherever a plain string stands where a secret reference belongs.
pub const PLAIN_SECRET_MESSAGE: &str = "a plain string is not allowed where a secret belongs; write \
     { secret: NAME }, { env: VAR } or { file: /path } instead";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a secret reference ({ secret: NAME }, { env: VAR } or { file: /path })",
                )
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(PLAIN_SECRET_MESSAGE))
            }
            // A password made of digits (or `yes`) is still a plain secret; serde's default
            // "invalid type: integer `123456`" message would print the value.
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(PLAIN_SECRET_MESSAGE))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(PLAIN_SECRET_MESSAGE))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(E::custom(PLAIN_SECRET_MESSAGE))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(E::custom(PLAIN_SECRET_MESSAGE))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<SecretRef, A::Error> {
                use serde::de::Error;
                let mut found: Option<SecretRef> = None;
                while let Some(key) = m.next_key::<String>()? {
                    let value: String = m.next_value()?;
                    if found.is_some() {
                        return Err(A::Error::custom(
                            "a secret reference has exactly one of `secret`, `env` or `file`",
                        ));
                    }
                    if value.trim().is_empty() {
                        return Err(A::Error::custom(format!(
                            "secret reference `{key}` is empty"
                        )));
                    }
                    // A name with a newline or another control character can never match a
                    // credential file or an environment variable; it is a pasted value or a
                    // broken quote, so it is an error here rather than a lookup failure later.
                    if key != "file" && value.chars().any(char::is_control) {
                        return Err(A::Error::custom(format!(
                            "secret reference `{key}` contains a control character (a newline?); write the name only"
                        )));
                    }
                    found = Some(match key.as_str() {
                        "secret" => {
                            if value.contains('/') || value.contains('\\') || value.starts_with('.')
                            {
                                return Err(A::Error::custom(
                                    "`secret` is a credential name, not a path (no `/`, `\\` or leading `.`)",
                                ));
                            }
                            SecretRef::Secret(value)
                        }
                        "env" if value.contains('=') => {
                            return Err(A::Error::custom(
                                "`env` is a variable name and cannot contain `=`",
                            ));
                        }
                        "env" => SecretRef::Env(value),
                        "file" => SecretRef::File(PathBuf::from(value)),
                        other => {
                            return Err(A::Error::unknown_field(other, &["secret", "env", "file"]));
                        }
                    });
                }
                found.ok_or_else(|| {
                    A::Error::custom("empty secret reference; write { secret: NAME }")
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Where `{ secret: NAME }` and relative `{ file: … }` references are looked up.
#[derive(Debug, Clone, Default)]
pub struct SecretContext {
    /// `$CREDENTIALS_DIRECTORY` when systemd set it.
    pub credentials_dir: Option<PathBuf>,
    /// `secretsDir` from the config.
    pub secrets_dir: Option<PathBuf>,
    /// Directory relative `{ file: … }` paths are resolved against (the config file's directory).
    pub base_dir: PathBuf,
}

impl SecretContext {
    /// The context of a loaded config, reading `$CREDENTIALS_DIRECTORY` from the environment.
    pub fn from_config(config: &Config) -> Self {
        SecretContext {
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            secrets_dir: Some(config.secrets_dir.clone()),
            base_dir: config.base_dir.clone(),
        }
    }
}

impl SecretRef {
    /// Resolves a text secret (password): the value with one trailing newline (`\n` or `\r\n`) removed.
    pub fn resolve(&self, ctx: &SecretContext) -> Result<SecretString, ConfigError> {
        let bytes = self.read(ctx)?;
        let mut text =
            String::from_utf8(bytes).map_err(|_| self.error("value is not valid UTF-8"))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(SecretString::from(text))
    }

    /// Resolves a binary secret (certificate): the raw bytes.
    pub fn resolve_bytes(&self, ctx: &SecretContext) -> Result<SecretBox<[u8]>, ConfigError> {
        Ok(SecretBox::new(self.read(ctx)?.into_boxed_slice()))
    }

    fn read(&self, ctx: &SecretContext) -> Result<Vec<u8>, ConfigError> {
        match self {
            SecretRef::Env(var) => std::env::var_os(var)
                .map(|v| v.into_encoded_bytes())
                .ok_or_else(|| self.error("environment variable is not set")),
            SecretRef::File(path) => {
                let path = resolve_path(&ctx.base_dir, path);
                std::fs::read(&path)
                    .map_err(|e| self.error(&format!("cannot read {}: {e}", path.display())))
            }
            SecretRef::Secret(name) => {
                let dirs = ctx.credentials_dir.iter().chain(ctx.secrets_dir.iter());
                let mut tried = Vec::new();
                for dir in dirs {
                    let path = dir.join(name);
                    match std::fs::read(&path) {
                        Ok(v) => return Ok(v),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            tried.push(path.display().to_string())
                        }
                        Err(e) => {
                            return Err(self.error(&format!("cannot read {}: {e}", path.display())));
                        }
                    }
                }
                if tried.is_empty() {
                    return Err(self.error(
                        "no $CREDENTIALS_DIRECTORY and no secretsDir configured to look it up in",
                    ));
                }
                Err(self.error(&format!("not found (looked in {})", tried.join(", "))))
            }
        }
    }

    fn error(&self, message: &str) -> ConfigError {
        ConfigError::Secret {
            reference: self.to_string(),
            message: message.to_string(),
        }
    }
}

/// Retry policy of a job (SPEC §4, §5): per-step attempts with exponential backoff and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30 * 60),
        }
    }
}

/// A partial retry policy as written in YAML; missing keys come from the level above.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts per step, including the first (1..=100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay before the first retry, e.g. `30s`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub initial_backoff: Option<Duration>,
    /// Upper bound of the delay between retries, e.g. `30m`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub max_backoff: Option<Duration>,
}

impl RetrySpec {
    /// Applies this partial policy over `base`, checking the bounds. The error names the bad key.
    pub fn apply(&self, base: RetryPolicy) -> Result<RetryPolicy, (&'static str, String)> {
        let p = RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            initial_backoff: self.initial_backoff.unwrap_or(base.initial_backoff),
            max_backoff: self.max_backoff.unwrap_or(base.max_backoff),
        };
        if !(1..=100).contains(&p.max_attempts) {
            return Err((
                "maxAttempts",
                format!("must be between 1 and 100, got {}", p.max_attempts),
            ));
        }
        if p.initial_backoff.is_zero() {
            return Err(("initialBackoff", "must be greater than zero".into()));
        }
        if p.max_backoff < p.initial_backoff {
            return Err((
                "maxBackoff",
                "must not be smaller than initialBackoff".into(),
            ));
        }
        Ok(p)
    }
}

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive (`info`, `restorectl=debug,sqlx=warn`); `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// One VB365 server (`servers.<name>`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The key under `servers:`; jobs refer to it with `server:`.
    pub name: String,
    /// Base URL without the `/v8` suffix, e.g. `https://vb365.contoso.local:4443`.
    pub url: url::Url,
    pub username: String,
    pub password: SecretRef,
    /// Extra trusted CA certificate (PEM), already resolved against the config directory.
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_tls_verify: bool,
    pub max_concurrent_sessions: u32,
    /// Per API call; never applied to PST downloads.
    pub request_timeout: Duration,
}

/// Settings of the download engine (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadConfig {
    /// How long the server may take to build a PST before the first byte (default 2h).
    pub first_byte_timeout: Duration,
    /// Longest silence between two reads once bytes flow (default 10m).
    pub idle_read_timeout: Duration,
}

/// Settings of the run engine (`engine:`; see docs/engine.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How often a submitted restore is polled for its outcome (default 10s).
    pub poll_interval: Duration,
    /// How long after a restore POST whose outcome is unknown the engine waits before it may
    /// conclude from the restore session's history that the POST was not received (default
    /// 2m; never less than the server's `requestTimeout`).
    pub reconcile_grace: Duration,
    /// Step retry backoffs up to this long are slept inside the run; longer ones park the run
    /// in `waiting_retry` (default 5m).
    pub inline_backoff: Duration,
}

/// Settings of the job directory watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// Full rescan period on top of file events (default 60s).
    pub rescan_interval: Duration,
    /// Use polling instead of inotify (network file systems).
    pub poll: bool,
}

/// The loaded, fully resolved daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was read from (`None` for built-in defaults).
    pub file: Option<PathBuf>,
    /// Directory relative paths were resolved against.
    pub base_dir: PathBuf,
    pub jobs_dir: PathBuf,
    pub state_dir: PathBuf,
    /// `sqlite://…` URL of the state database.
    pub database: String,
    pub export_root: PathBuf,
    pub secrets_dir: PathBuf,
    /// Health and metrics listener; `None` when `listen: off`.
    pub listen: Option<SocketAddr>,
    /// Default time zone of schedules.
    pub timezone: Tz,
    pub log: LogConfig,
    pub servers: BTreeMap<String, ServerConfig>,
    pub default_retry: RetryPolicy,
    pub default_run_timeout: Duration,
    /// Steps of one run executed at once (default 4).
    pub step_parallelism: u32,
    /// Page size of paged VB365 calls (default 1000).
    pub page_size: u32,
    /// How long SIGTERM may take to drain (default 30s).
    pub shutdown_timeout: Duration,
    pub downloads: DownloadConfig,
    pub watch: WatchConfig,
    pub engine: EngineConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    jobs_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    database: Option<String>,
    export_root: Option<PathBuf>,
    secrets_dir: Option<PathBuf>,
    listen: Option<String>,
    timezone: Option<String>,
    log: Option<RawLog>,
    #[serde(default)]
    servers: BTreeMap<String, RawServer>,
    defaults: Option<RawDefaults>,
    step_parallelism: Option<u32>,
    page_size: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    shutdown_timeout: Option<Duration>,
    downloads: Option<RawDownloads>,
    watch: Option<RawWatch>,
    engine: Option<RawEngine>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEngine {
    #[serde(default, with = "humantime_serde")]
    poll_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    reconcile_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    inline_backoff: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawServer {
    url: String,
    username: String,
    password: SecretRef,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    max_concurrent_sessions: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDefaults {
    retry: Option<RetrySpec>,
    #[serde(default, with = "humantime_serde")]
    run_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDownloads {
    #[serde(default, with = "humantime_serde")]
    first_byte_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    idle_read_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWatch {
    #[serde(default, with = "humantime_serde")]
    rescan_interval: Option<Duration>,
    #[serde(default)]
    poll: bool,
}

/// Resolves `p` against `base` unless it is absolute.
pub fn resolve_path(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Which config file to read: `--config`, else `$RESTORECTL_CONFIG`, else the default path.
/// The boolean tells whether the choice was explicit (an explicit file that is missing is an
/// error; a missing default may be tolerated by commands that can work without one).
pub fn config_path(flag: Option<&Path>) -> (PathBuf, bool) {
    if let Some(p) = flag {
        return (p.to_path_buf(), true);
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses config text as if it had been read from `path` (relative paths resolve against
    /// `path`'s directory).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line,
                    column,
                    message: hide_string_values(&e.to_string()),
                }
            })?
        };
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        };
        let base = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Self::from_raw(raw, Some(abs), base)
    }

    /// The configuration used when no file exists: SPEC §2 defaults, no servers.
    pub fn builtin_defaults() -> Config {
        Self::from_raw(RawConfig::default(), None, PathBuf::from("/etc/restorectl"))
            .expect("built-in defaults are valid")
    }

    fn from_raw(
        raw: RawConfig,
        file: Option<PathBuf>,
        base: PathBuf,
    ) -> Result<Config, ConfigError> {
        let cfg_path = file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: cfg_path.clone(),
            key: key.to_string(),
            message,
        };
        let r = |p: Option<PathBuf>, default: &str| {
            resolve_path(&base, &p.unwrap_or_else(|| PathBuf::from(default)))
        };
        let jobs_dir = r(raw.jobs_dir, "/etc/restorectl/jobs");
        let state_dir = r(raw.state_dir, "/var/lib/restorectl");
        let export_root = r(raw.export_root, "/var/lib/restorectl/exports");
        let secrets_dir = r(raw.secrets_dir, "/etc/restorectl/secrets");
        let database = match raw.database {
            None => format!("sqlite://{}", state_dir.join("restorectl.db").display()),
            Some(url) => {
                if let Some(rest) = url.strip_prefix("sqlite://") {
                    format!(
                        "sqlite://{}",
                        resolve_path(&base, Path::new(rest)).display()
                    )
                } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    return Err(invalid(
                        "database",
                        "PostgreSQL is not supported yet; use sqlite://PATH (or omit `database`)"
                            .into(),
                    ));
                } else {
                    return Err(invalid(
                        "database",
                        format!("`{url}` is not a sqlite:// URL"),
                    ));
                }
            }
        };
        let listen = match raw.listen.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            Some("off") => None,
            Some(s) => Some(s.parse().map_err(|_| {
                invalid(
                    "listen",
                    format!("`{s}` is not an address like 127.0.0.1:9464 (or `off`)"),
                )
            })?),
        };
        let timezone = match raw.timezone.as_deref() {
            None => Tz::UTC,
            Some(s) => s.parse().map_err(|_| {
                invalid(
                    "timezone",
                    format!("`{s}` is not an IANA time zone name (e.g. Europe/Berlin)"),
                )
            })?,
        };
        let raw_log = raw.log.unwrap_or_default();
        let log = LogConfig {
            format: raw_log.format.unwrap_or(LogFormat::Text),
            level: raw_log.level.unwrap_or_else(|| "info".into()),
        };
        if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("`{}` is not a valid log filter", log.level),
            ));
        }
        let mut servers = BTreeMap::new();
        for (name, s) in raw.servers {
            let key = |k: &str| format!("servers.{name}.{k}");
            let url = url::Url::parse(&s.url)
                .map_err(|e| invalid(&key("url"), format!("`{}` is not a URL: {e}", s.url)))?;
            if url.scheme() != "https" && url.scheme() != "http" {
                return Err(invalid(
                    &key("url"),
                    "must be an https:// (or http://) URL".into(),
                ));
            }
            if s.username.trim().is_empty() {
                return Err(invalid(&key("username"), "must not be empty".into()));
            }
            let max_concurrent_sessions = s.max_concurrent_sessions.unwrap_or(2);
            if max_concurrent_sessions == 0 {
                return Err(invalid(
                    &key("maxConcurrentSessions"),
                    "must be at least 1".into(),
                ));
            }
            let request_timeout = s.request_timeout.unwrap_or(Duration::from_secs(60));
            if request_timeout.is_zero() {
                return Err(invalid(
                    &key("requestTimeout"),
                    "must be greater than zero".into(),
                ));
            }
            servers.insert(
                name.clone(),
                ServerConfig {
                    name,
                    url,
                    username: s.username,
                    password: s.password,
                    ca_file: s.ca_file.map(|p| resolve_path(&base, &p)),
                    insecure_skip_tls_verify: s.insecure_skip_tls_verify,
                    max_concurrent_sessions,
                    request_timeout,
                },
            );
        }
        let defaults = raw.defaults.unwrap_or_default();
        let default_retry = defaults
            .retry
            .unwrap_or_default()
            .apply(RetryPolicy::default())
            .map_err(|(k, m)| invalid(&format!("defaults.retry.{k}"), m))?;
        let default_run_timeout = defaults
            .run_timeout
            .unwrap_or(Duration::from_secs(12 * 3600));
        if default_run_timeout.is_zero() {
            return Err(invalid(
                "defaults.runTimeout",
                "must be greater than zero".into(),
            ));
        }
        let engine = raw.engine.unwrap_or_default();
        let step_parallelism = raw.step_parallelism.unwrap_or(4);
        if !(1..=64).contains(&step_parallelism) {
            return Err(invalid(
                "stepParallelism",
                "must be between 1 and 64".into(),
            ));
        }
        let page_size = raw.page_size.unwrap_or(1000);
        if !(1..=10_000).contains(&page_size) {
            return Err(invalid(
                "pageSize",
                "must be between 1 and 10000 (the server's maximum)".into(),
            ));
        }
        let dl = raw.downloads.unwrap_or_default();
        let watch = raw.watch.unwrap_or_default();
        Ok(Config {
            file,
            base_dir: base,
            jobs_dir,
            state_dir,
            database,
            export_root,
            secrets_dir,
            listen,
            timezone,
            log,
            servers,
            default_retry,
            default_run_timeout,
            step_parallelism,
            page_size,
            shutdown_timeout: raw.shutdown_timeout.unwrap_or(Duration::from_secs(30)),
            downloads: DownloadConfig {
                first_byte_timeout: dl
                    .first_byte_timeout
                    .unwrap_or(Duration::from_secs(2 * 3600)),
                idle_read_timeout: dl.idle_read_timeout.unwrap_or(Duration::from_secs(600)),
            },
            watch: WatchConfig {
                rescan_interval: watch.rescan_interval.unwrap_or(Duration::from_secs(60)),
                poll: watch.poll,
            },
            engine: EngineConfig {
                poll_interval: engine.poll_interval.unwrap_or(Duration::from_secs(10)),
                reconcile_grace: engine.reconcile_grace.unwrap_or(Duration::from_secs(120)),
                inline_backoff: engine.inline_backoff.unwrap_or(Duration::from_secs(300)),
            },
        })
    }

    /// The file messages about this config name (the default path for the built-in defaults).
    pub fn shown_path(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// `jobsDir` is a directory that can be listed. The daemon checks it at start, so a missing
    /// or mistyped directory is a configuration error (exit 78) naming the key.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for `jobsDir`.
    pub fn check_jobs_dir(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self.shown_path(),
            key: "jobsDir".into(),
            message,
        };
        let dir = self.jobs_dir.display();
        match std::fs::metadata(&self.jobs_dir) {
            Ok(m) if m.is_dir() => std::fs::read_dir(&self.jobs_dir)
                .map(drop)
                .map_err(|e| invalid(format!("cannot list {dir}: {e}"))),
            Ok(_) => Err(invalid(format!("{dir} is not a directory"))),
            Err(e) => Err(invalid(format!(
                "{dir}: {e}; create the directory or correct jobsDir"
            ))),
        }
    }

    /// Reads every server's password once and drops it: a secret the daemon will need to log
    /// in is a configuration error when missing (at start, and for the new config of a
    /// reload), not a failed login at the first run. The message names the key and the secret
    /// reference, never a value.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for `servers.<name>.password`.
    pub fn check_server_passwords(&self) -> Result<(), ConfigError> {
        let ctx = SecretContext::from_config(self);
        for server in self.servers.values() {
            if let Err(e) = server.password.resolve(&ctx) {
                return Err(ConfigError::Invalid {
                    path: self.shown_path(),
                    key: format!("servers.{}.password", server.name),
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The SQLite file behind `database`.
    pub fn database_path(&self) -> PathBuf {
        PathBuf::from(
            self.database
                .strip_prefix("sqlite://")
                .unwrap_or(&self.database),
        )
    }

    /// The server a job names, or the only one when the job names none.
    pub fn server(&self, name: Option<&str>) -> Option<&ServerConfig> {
        match name {
            Some(n) => self.servers.get(n),
            None if self.servers.len() == 1 => self.servers.values().next(),
            None => None,
        }
    }
}

/// Replaces the quoted values in a serde message (`invalid type: string "…", expected …`)
/// with `string (value hidden)`. A misindented `password:` line makes serde quote the value it
/// did not expect, and that value may be a secret; the line and column still locate it.
fn hide_string_values(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        out.push_str("string (value hidden)");
        // Skip the Debug-escaped value up to its closing, unescaped quote.
        let mut chars = rest[at + MARK.len()..].char_indices();
        let mut end = rest.len() - at - MARK.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[at + MARK.len() + end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/etc/rc/restorectl.yaml"))
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let c = load("jobsDir: jobs\nstateDir: state\nexportRoot: /srv/exports\n").unwrap();
        assert_eq!(c.jobs_dir, Path::new("/etc/rc/jobs"));
        assert_eq!(c.database_path(), Path::new("/etc/rc/state/restorectl.db"));
        assert_eq!(c.export_root, Path::new("/srv/exports"));
    }

    #[test]
    fn unknown_key_is_located() {
        let err = load("jobsDir: jobs\nservers:\n  a:\n    url: https://x\n    usrname: u\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/rc/restorectl.yaml:5:"), "{text}");
        assert!(text.contains("usrname"), "{text}");
    }

    #[test]
    fn plain_string_password_is_rejected() {
        let err =
            load("servers:\n  a:\n    url: https://x\n    username: u\n    password: hunter2\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("plain string"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    /// Regression (hostile-input fuzzing): a `password:` line indented one level too little
    /// becomes a server named `password` whose body is the secret, and serde's "invalid type"
    /// message quoted it.
    #[test]
    fn a_misplaced_password_value_is_not_quoted_in_the_error() {
        for text in [
            "servers:\n    password: hunter2-\"quoted\\\"-x\n",
            "servers:\n  password: hunter2\n",
            "timezone: [hunter2]\nservers: { a: hunter2 }\n",
        ] {
            let err = load(text).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                matches!(err, ConfigError::Syntax { line, .. } if line >= 1),
                "{err:?}"
            );
        }
        assert_eq!(
            hide_string_values(r#"a: invalid type: string "x\"y", expected b; string "z""#),
            "a: invalid type: string (value hidden), expected b; string (value hidden)"
        );
    }

    /// Regression (hostile job corpus): `{ secret: "a\nb" }` and `{ env: "A\nB" }` were
    /// accepted and could only fail at run time.
    #[test]
    fn secret_and_env_names_with_control_characters_are_rejected() {
        for text in [
            "{ secret: \"a\\nb\" }",
            "{ env: \"A\\nB\" }",
            "{ env: \"A\\u0000B\" }",
            "{ env: \"A=B\" }",
        ] {
            let err = serde_yaml::from_str::<SecretRef>(text).unwrap_err();
            assert!(
                err.to_string().contains("secret reference") || err.to_string().contains("`env`"),
                "{text}: {err}"
            );
        }
        assert!(serde_yaml::from_str::<SecretRef>("{ env: A_B }").is_ok());
    }

    #[test]
    fn secret_resolution_strips_one_newline_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cr3t-value\n").unwrap();
        let ctx = SecretContext {
            credentials_dir: None,
            secrets_dir: Some(dir.path().into()),
            base_dir: dir.path().into(),
        };
        let s = SecretRef::Secret("pw".into()).resolve(&ctx).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(s.expose_secret(), "s3cr3t-value");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let missing = SecretRef::Secret("nope".into())
            .resolve(&ctx)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("nope") && missing.contains("not found"),
            "{missing}"
        );
    }
}
