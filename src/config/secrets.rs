//! Secret references (`{ secret: NAME }`, `{ env: VAR }`, `{ file: /path }`) and their
//! resolution.
//!
//! Secrets are never stored in the config: it holds [`SecretRef`]s, resolved lazily (at the
//! moment a password or certificate is needed) into `secrecy` types whose `Debug` prints
//! `[REDACTED]`. A plain string where a reference belongs is rejected while parsing, with a
//! message that never quotes the value.

use std::fmt;
use std::path::PathBuf;

use schemars::JsonSchema;
use secrecy::{SecretBox, SecretString};
use serde::{Deserialize, Deserializer};

use super::error::ConfigError;
use super::{Config, resolve_path};

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

#[cfg(test)]
mod tests {
    use super::*;

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
