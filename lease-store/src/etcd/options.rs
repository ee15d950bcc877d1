//! How to reach etcd: endpoints, prefix, TTL, TLS and credentials, and their
//! translation into etcd-client's connect options (reading the PEM files).

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use super::codec::DEFAULT_PREFIX;

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("no etcd endpoint given: pass at least one, e.g. http://127.0.0.1:2379")]
    NoEndpoints,
    #[error("etcd endpoint {0:?} must start with http:// or https://")]
    BadScheme(String),
    #[error("etcd endpoint {0:?} is http:// but TLS files were given: use https:// endpoints")]
    TlsOverHttp(String),
    #[error("a client certificate needs its key too (and the key its certificate): give both --etcd-certfile and --etcd-keyfile")]
    HalfIdentity,
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the lease TTL must be whole seconds, at least 1 s (got {0:?}); etcd raises TTLs below its minimum (about 2 s) to that minimum")]
    BadTtl(Duration),
    #[error("a username needs a password")]
    UserWithoutPassword,
    #[error("cannot connect to etcd at {endpoints}: {reason}; check that etcd runs there and that the TLS files and credentials are right")]
    Connect { endpoints: String, reason: String },
}

/// The etcd backend's settings (flanneld's `--etcd-*` flags).
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `http://host:port` or `https://host:port`; several for a cluster.
    pub endpoints: Vec<String>,
    /// Key prefix; default `/coreos.com/network`.
    pub prefix: String,
    /// The TTL of a lease (default 24 h, flannel's).
    pub lease_ttl: Duration,
    /// PEM CA bundle that signed the etcd servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Per-request deadline (an unreachable etcd fails fast, then the caller
    /// retries on its own schedule).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Reconnection backoff of the watch: first and longest delay.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            prefix: DEFAULT_PREFIX.to_string(),
            lease_ttl: Duration::from_secs(24 * 3600),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

impl EtcdOptions {
    /// Defaults with the given endpoints.
    pub fn with_endpoints<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    fn uses_tls_files(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Checks what can be checked without reading files or the network.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.endpoints.is_empty() {
            return Err(OptionsError::NoEndpoints);
        }
        for e in &self.endpoints {
            if !e.starts_with("http://") && !e.starts_with("https://") {
                return Err(OptionsError::BadScheme(e.clone()));
            }
            if e.starts_with("http://") && self.uses_tls_files() {
                return Err(OptionsError::TlsOverHttp(e.clone()));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(OptionsError::HalfIdentity);
        }
        if self.lease_ttl < Duration::from_secs(1) || self.lease_ttl.subsec_nanos() != 0 {
            return Err(OptionsError::BadTtl(self.lease_ttl));
        }
        if self.username.is_some() && self.password.is_none() {
            return Err(OptionsError::UserWithoutPassword);
        }
        Ok(())
    }

    /// etcd-client's options; reads the TLS files.
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, OptionsError> {
        self.validate()?;
        let mut o = ConnectOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
            // Detects a dead etcd behind a silent network (no RST) so that the
            // watch reconnects instead of waiting forever.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            // Simple tokens die with an etcd restart: re-authenticate then.
            o = o.with_user(user, pass).with_auto_token_refresh(true);
        }
        if self.endpoints.iter().any(|e| e.starts_with("https://")) {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read("CA file", ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
                tls = tls.identity(Identity::from_pem(
                    read("client certificate", cert)?,
                    read("client key", key)?,
                ));
            }
            o = o.with_tls(tls);
        }
        Ok(o)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, OptionsError> {
    std::fs::read(path).map_err(|source| OptionsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_flannels() {
        let o = EtcdOptions::default();
        assert_eq!(o.prefix, "/coreos.com/network");
        assert_eq!(o.lease_ttl, Duration::from_secs(86400));
        o.validate().unwrap();
    }

    #[test]
    fn rejects_bad_combinations() {
        let mut o = EtcdOptions::with_endpoints(Vec::<String>::new());
        assert!(matches!(o.validate(), Err(OptionsError::NoEndpoints)));
        o.endpoints = vec!["127.0.0.1:2379".into()];
        assert!(matches!(o.validate(), Err(OptionsError::BadScheme(_))));
        o.endpoints = vec!["http://127.0.0.1:2379".into()];
        o.ca_file = Some("/ca.pem".into());
        assert!(matches!(o.validate(), Err(OptionsError::TlsOverHttp(_))));
        o.endpoints = vec!["https://127.0.0.1:2379".into()];
        o.cert_file = Some("/c.pem".into());
        assert!(matches!(o.validate(), Err(OptionsError::HalfIdentity)));
        o.key_file = Some("/k.pem".into());
        o.validate().unwrap();
        o.lease_ttl = Duration::from_millis(1500);
        assert!(matches!(o.validate(), Err(OptionsError::BadTtl(_))));
    }

    #[test]
    fn missing_tls_file_is_named() {
        let mut o = EtcdOptions::with_endpoints(["https://127.0.0.1:1"]);
        o.ca_file = Some("/nonexistent/ca.pem".into());
        let e = o.connect_options().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
