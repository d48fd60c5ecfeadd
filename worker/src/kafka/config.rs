//! Kafka client settings from the pipeline's `spec.kafka`: bootstrap servers, TLS and SASL.
//!
//! This module owns the mapping from [`KafkaConnection`] to librdkafka properties and the
//! reading of mounted secret files. It does not own per-client settings (consumer isolation,
//! producer idempotence or transactions live in `source` and `sink`) and it never logs: callers
//! may print a [`KafkaSettings`] because its `Debug` and `Display` redact every secret.
//!
//! In Kubernetes the operator mounts the TLS Secret at [`TLS_DIR`] and the SASL Secret at
//! [`SASL_DIR`]; local runs name files directly (`caFile`, `passwordFile`, ...). The SASL
//! password is only ever read from a file, never from the manifest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rdkafka::ClientConfig;
use tidemark_api::{KafkaConnection, KafkaSasl, KafkaTls, SaslMechanism};

/// Where the TLS Secret (`ca.crt`, `tls.crt`, `tls.key`) is mounted in worker pods.
pub const TLS_DIR: &str = "/etc/tidemark/kafka-tls";
/// Where the SASL Secret (`username`, `password`) is mounted in worker pods.
pub const SASL_DIR: &str = "/etc/tidemark/kafka-sasl";

/// Properties whose values are secrets: shown as [`REDACTED`] by `Debug` and `Display`.
const SECRET_KEYS: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
];
/// What a secret value is printed as.
pub const REDACTED: &str = "[redacted]";

/// Why the Kafka settings cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A mounted or named secret file is missing or unreadable. The path is not secret; the
    /// content is never part of the message.
    #[error("failed to read Kafka {what} from {path}")]
    ReadFile {
        /// Which setting the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A file that must hold a value is empty.
    #[error("failed to read Kafka {what} from {path}: the file is empty")]
    EmptyFile {
        /// Which setting the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// Neither the manifest nor the command line names a bootstrap server.
    #[error("failed to configure Kafka: no bootstrap servers")]
    NoBootstrapServers,
}

/// Where the Secrets are mounted; [`Mounts::default`] is the pod layout, tests point elsewhere.
#[derive(Clone, Debug)]
pub struct Mounts {
    /// Directory of the TLS Secret.
    pub tls_dir: PathBuf,
    /// Directory of the SASL Secret.
    pub sasl_dir: PathBuf,
}

impl Default for Mounts {
    fn default() -> Self {
        Self {
            tls_dir: PathBuf::from(TLS_DIR),
            sasl_dir: PathBuf::from(SASL_DIR),
        }
    }
}

/// librdkafka properties shared by every client of a worker. Cloning is cheap enough for the
/// handful of clients a worker creates; printing never shows a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaSettings {
    properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Settings from `spec.kafka` with the pod's secret mounts. `bootstrap_override` (the
    /// worker's `--kafka-bootstrap-servers`) replaces the manifest's servers when given.
    pub fn from_connection(
        connection: &KafkaConnection,
        bootstrap_override: Option<&str>,
    ) -> Result<Self, ConfigError> {
        Self::from_connection_with(connection, bootstrap_override, &Mounts::default())
    }

    /// [`KafkaSettings::from_connection`] with the secret mounts at `mounts`.
    pub fn from_connection_with(
        connection: &KafkaConnection,
        bootstrap_override: Option<&str>,
        mounts: &Mounts,
    ) -> Result<Self, ConfigError> {
        let servers = bootstrap_override
            .unwrap_or(&connection.bootstrap_servers)
            .trim();
        if servers.is_empty() {
            return Err(ConfigError::NoBootstrapServers);
        }
        let mut settings = Self::bootstrap(servers);
        let protocol = match (&connection.tls, &connection.sasl) {
            (None, None) => "PLAINTEXT",
            (Some(_), None) => "SSL",
            (None, Some(_)) => "SASL_PLAINTEXT",
            (Some(_), Some(_)) => "SASL_SSL",
        };
        settings.set("security.protocol", protocol);
        if let Some(tls) = &connection.tls {
            settings.apply_tls(tls, &mounts.tls_dir);
        }
        if let Some(sasl) = &connection.sasl {
            settings.apply_sasl(sasl, &mounts.sasl_dir)?;
        }
        Ok(settings)
    }

    /// Plaintext settings for `servers` (tests, the mock cluster, local runs).
    pub fn bootstrap(servers: &str) -> Self {
        let mut settings = Self::default();
        settings.set("bootstrap.servers", servers);
        settings
    }

    /// Sets one property, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.properties.insert(key.to_owned(), value.into());
        self
    }

    /// The value of a property.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// A librdkafka configuration holding these properties, to add client settings to.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    fn apply_tls(&mut self, tls: &KafkaTls, dir: &Path) {
        let mounted = |name: &str| {
            tls.secret_name
                .as_ref()
                .map(|_| dir.join(name))
                .filter(|path| name == "ca.crt" || path.exists())
                .map(|path| path.display().to_string())
        };
        let ca = tls.ca_file.clone().or_else(|| mounted("ca.crt"));
        let cert = tls.cert_file.clone().or_else(|| mounted("tls.crt"));
        let key = tls.key_file.clone().or_else(|| mounted("tls.key"));
        // Without a CA file librdkafka verifies against the system's trust store.
        for (property, value) in [
            ("ssl.ca.location", ca),
            ("ssl.certificate.location", cert),
            ("ssl.key.location", key),
        ] {
            if let Some(value) = value {
                self.set(property, value);
            }
        }
    }

    fn apply_sasl(&mut self, sasl: &KafkaSasl, dir: &Path) -> Result<(), ConfigError> {
        let mechanism = match sasl.mechanism {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        };
        self.set("sasl.mechanism", mechanism);
        let username = match &sasl.username {
            Some(name) => name.clone(),
            None => read_secret("SASL username", &dir.join("username"))?,
        };
        let password_path = sasl
            .password_file
            .as_ref()
            .map_or_else(|| dir.join("password"), PathBuf::from);
        let password = read_secret("SASL password", &password_path)?;
        self.set("sasl.username", username);
        self.set("sasl.password", password);
        Ok(())
    }
}

/// The content of a secret file without a trailing line break (Secrets created from files
/// often end with one; a password never does).
fn read_secret(what: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(ConfigError::EmptyFile {
            what,
            path: path.to_owned(),
        });
    }
    Ok(value.to_owned())
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.properties.iter().map(|(k, v)| (k, shown(k, v))))
            .finish()
    }
}

impl fmt::Display for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, value)) in self.properties.iter().enumerate() {
            let separator = if i == 0 { "" } else { " " };
            write!(f, "{separator}{key}={}", shown(key, value))?;
        }
        Ok(())
    }
}

fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if SECRET_KEYS.contains(&key) {
        REDACTED
    } else {
        value
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
