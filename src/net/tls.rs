//! The one TLS configuration of every listener and client (OTLP source and sink, tail sink and
//! `sealtrail tail`, the telemetry exporter): PEM files loaded and checked into rustls
//! configurations (ring provider), once, when a component is built, so that a missing or
//! malformed file is a configuration error `sealtrail validate` reports. Clients trust either
//! the configured CA file or the system's roots (found by `rustls-native-certs`, which honours
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`); no CA path is hard-coded here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio_rustls::rustls;

/// `[sources.X.tls]` / `[sinks.X.tls]` of a listener: its certificate and key, and optionally the CA that client
/// certificates must chain to (mutual TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM file with the server certificate chain (leaf first).
    pub crt_file: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file with the CA certificates that client certificates must chain to. When set,
    /// every client must present a valid certificate.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// `[sinks.X.tls]`: how the sink checks the upstream server, and its own certificate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM file with the CA certificates the server must chain to. Default: the system's
    /// trusted roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file with a client certificate chain for mutual TLS (needs `key_file`).
    #[serde(default)]
    pub crt_file: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name to verify the server certificate against, when it differs from the
    /// endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file; an empty or unreadable file is an error naming the
/// field (`tls.crt_file`) and the file.
pub fn load_certs(path: &Path, field: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let data =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("`{field}`: cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data).collect::<Result<_, _>>().map_err(|e| {
        anyhow::anyhow!("`{field}`: {} is not a valid PEM certificate file: {e}", path.display())
    })?;
    anyhow::ensure!(!certs.is_empty(), "`{field}`: {} holds no PEM certificate", path.display());
    Ok(certs)
}

/// Reads the first private key of a PEM file. The parse error is generic on purpose: it must
/// not quote key bytes; the file's contents are wiped from memory after parsing.
pub fn load_key(path: &Path, field: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    let data = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| anyhow::anyhow!("`{field}`: cannot read {}: {e}", path.display()))?,
    );
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|_| anyhow::anyhow!("`{field}`: {} holds no PEM private key", path.display()))
}

fn roots(path: &Path, field: &str) -> anyhow::Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for c in load_certs(path, field)? {
        store
            .add(c)
            .map_err(|e| anyhow::anyhow!("`{field}`: {}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// The ALPN protocols a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2 and HTTP/1.1 (the OTLP listeners: gRPC needs HTTP/2).
    H2AndHttp1,
    /// HTTP/1.1 only (the tail and Lambda Telemetry listeners).
    Http1,
}

impl ServerTls {
    /// Builds the rustls server configuration offering the `alpn` protocols.
    pub fn server_config(&self, alpn: Alpn) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let certs = load_certs(&self.crt_file, "tls.crt_file")?;
        let key = load_key(&self.key_file, "tls.key_file")?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?;
        let builder = match &self.client_ca_file {
            Some(ca) => {
                let store = roots(ca, "tls.client_ca_file")?;
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                        .build()
                        .map_err(|e| anyhow::anyhow!("`tls.client_ca_file`: {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            anyhow::anyhow!(
                "`tls`: {} and {} do not form a usable certificate and key: {e}",
                self.crt_file.display(),
                self.key_file.display()
            )
        })?;
        config.alpn_protocols = match alpn {
            Alpn::H2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        };
        Ok(Arc::new(config))
    }
}

impl ClientTls {
    /// Builds the rustls client configuration with the given ALPN protocols.
    pub fn client_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let store = match &self.ca_file {
            Some(ca) => roots(ca, "tls.ca_file")?,
            None => {
                let mut store = rustls::RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    // A system root rustls cannot parse is skipped, as browsers do.
                    let _ = store.add(c);
                }
                anyhow::ensure!(!store.is_empty(), "no system CA certificates found; set `tls.ca_file`");
                store
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
            .with_root_certificates(store);
        let mut config = match (&self.crt_file, &self.key_file) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(load_certs(c, "tls.crt_file")?, load_key(k, "tls.key_file")?)
                .map_err(|e| anyhow::anyhow!("{} and {}: {e}", c.display(), k.display()))?,
            (None, None) => builder.with_no_client_auth(),
            _ => anyhow::bail!("`tls.crt_file` and `tls.key_file` go together"),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
