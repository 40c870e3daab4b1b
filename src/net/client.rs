//! The one HTTP client of the agent: the OTLP sink (OTLP/HTTP, and the connector under its
//! gRPC channel), the telemetry exporter, the Lambda Extensions/Telemetry API client and the
//! `sealtrail tail` command all send their requests through [`Client`], hyper-util's pooled
//! client over our [`Connector`] (TCP, then rustls from [`crate::net::tls`] for `https://`).
//!
//! Each user differs only in what it configures: the endpoint, the TLS settings, the headers
//! it adds, whether idle connections are kept ([`Pool`]) and its time limits. Errors are
//! flattened into a [`ClientError`] whose text is the whole cause chain (hyper's own top-level
//! messages say little) and never holds a header value.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls;

use super::tls::ClientTls;

/// Header names and values from a configuration (`headers = { x-api-key = "${KEY}" }`);
/// `Debug` shows the names only, so a configuration dump never prints an API key.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, "<redacted>"))).finish()
    }
}

/// [`Headers`] checked and converted once, for HTTP and for gRPC metadata. HTTP values are
/// marked sensitive (hyper keeps them out of its debug output and HPACK tables).
#[derive(Clone, Default)]
pub struct CompiledHeaders {
    pub http: http::HeaderMap,
    pub grpc: tonic::metadata::MetadataMap,
}

impl Headers {
    /// Every name or value that cannot be sent, one message each; a message names the header,
    /// never its value (usually a secret).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || tonic::metadata::AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()).is_err()
            {
                out.push(format!("`headers`: {k:?} is not a valid header name"));
            } else if http::HeaderValue::from_str(v).is_err()
                || tonic::metadata::AsciiMetadataValue::try_from(v.as_str()).is_err()
            {
                out.push(format!("`headers`: the value of {k:?} is not a valid header value"));
            }
        }
        out
    }

    /// Checks every name and value ([`Headers::problems`]) and converts them.
    pub fn compile(&self) -> anyhow::Result<CompiledHeaders> {
        if let Some(first) = self.problems().into_iter().next() {
            anyhow::bail!(first);
        }
        let mut out = CompiledHeaders::default();
        for (k, v) in &self.0 {
            if let (Ok(name), Ok(mut value), Ok(key), Ok(mval)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
                tonic::metadata::AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                tonic::metadata::AsciiMetadataValue::try_from(v.as_str()),
            ) {
                value.set_sensitive(true);
                out.http.insert(name, value);
                out.grpc.insert(key, mval);
            }
        }
        Ok(out)
    }
}

/// An `http://` or `https://` URL split into what a client needs.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub https: bool,
    /// The host without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `host:port` as written (with brackets), for URLs and the `Host` header.
    pub authority: String,
    /// The path without a trailing slash (`/v1/traces` and the like are appended).
    pub base_path: String,
}

impl Endpoint {
    /// Parses `url`; `field` names it in errors (`endpoint`, `--url`).
    pub fn parse(url: &str, field: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = url.parse().map_err(|e| anyhow::anyhow!("`{field}` = {url:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("`{field}` = {url:?} must start with http:// or https://"),
        };
        let authority = uri.authority().ok_or_else(|| anyhow::anyhow!("`{field}` = {url:?} has no host"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        anyhow::ensure!(!host.is_empty(), "`{field}` = {url:?} has no host");
        Ok(Endpoint {
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            authority: authority.as_str().to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The absolute URL of `path_suffix` under the endpoint's path.
    pub fn url(&self, path_suffix: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}{path_suffix}", self.authority, self.base_path)
    }
}

/// A byte stream to the server, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One connection opened by a [`Connector`].
pub struct Stream(Box<dyn Io>);

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Opens connections to one host and port, with TLS when configured, whatever URI it is
/// asked for: the endpoint is fixed when a component is built. Used by [`Client`] and as
/// tonic's connector, so gRPC and HTTP share the TLS settings and the ring provider.
#[derive(Clone)]
pub struct Connector {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    /// The limit of TCP connect plus TLS handshake; `None` leaves it to the caller's limit.
    connect_timeout: Option<Duration>,
}

impl Connector {
    /// A connector for `endpoint`: TLS (with `tls`, or the system's roots when `None`) when it
    /// is `https://`, offering the `alpn` protocols. `tls` on an `http://` endpoint is an
    /// error, since it would be silently unused.
    pub fn new(endpoint: &Endpoint, tls: Option<&ClientTls>, alpn: &[&[u8]]) -> anyhow::Result<Connector> {
        let tls = match (endpoint.https, tls) {
            (false, Some(_)) => anyhow::bail!("`tls` is set but `endpoint` is http://; use https://"),
            (false, None) => None,
            (true, tls) => {
                let tls = tls.cloned().unwrap_or_default();
                let name = tls.server_name.clone().unwrap_or_else(|| endpoint.host.clone());
                let name = rustls::pki_types::ServerName::try_from(name)
                    .map_err(|e| anyhow::anyhow!("`endpoint` host is not a valid TLS server name: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(tls.client_config(alpn)?), name))
            }
        };
        Ok(Connector { host: endpoint.host.clone(), port: endpoint.port, tls, connect_timeout: None })
    }

    /// Bounds TCP connect plus TLS handshake.
    pub fn with_connect_timeout(mut self, limit: Duration) -> Connector {
        self.connect_timeout = Some(limit);
        self
    }

    /// Opens one connection.
    pub async fn connect(self) -> std::io::Result<TokioIo<Stream>> {
        match self.connect_timeout {
            None => self.connect_now().await,
            Some(limit) => tokio::time::timeout(limit, self.connect_now()).await.unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {limit:?}"),
                ))
            }),
        }
    }

    async fn connect_now(self) -> std::io::Result<TokioIo<Stream>> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(connector.connect(name, tcp).await?),
        };
        Ok(TokioIo::new(Stream(io)))
    }

    /// A lazily connecting gRPC channel over this connector. The URI only names the
    /// `:authority`; TLS is the connector's business, so the scheme given to tonic is `http`.
    pub fn grpc_channel(&self, authority: &str, timeout: Duration) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
            .unwrap_or_else(|_| tonic::transport::Endpoint::from_static("http://localhost"))
            .timeout(timeout)
            .connect_timeout(timeout)
            .connect_with_connector_lazy(self.clone())
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

/// Whether a [`Client`] keeps idle connections for the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Keep idle connections for this long (exporters: one connection reused per batch).
    KeepIdle(Duration),
    /// A fresh connection per request: the Lambda APIs (a kept connection may be one the
    /// platform closed while the environment was frozen) and the tail stream.
    Never,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection (refused, unreachable, timed out, TLS handshake broken off).
    #[error("connect: {0}")]
    Connect(String),
    /// The server's certificate (or ours) was refused: retrying cannot help.
    #[error("TLS: {0}")]
    Tls(String),
    /// The connection broke or the response was not HTTP.
    #[error("HTTP: {0}")]
    Http(String),
    /// The response body broke off or exceeded its bound.
    #[error("reading the response body: {0}")]
    Body(String),
}

impl ClientError {
    fn from_hyper(e: hyper_util::client::legacy::Error) -> ClientError {
        let chain = cause_chain(&e);
        if tls_failure(&e) {
            ClientError::Tls(chain)
        } else if e.is_connect() {
            ClientError::Connect(chain)
        } else {
            ClientError::Http(chain)
        }
    }
}

/// The messages of an error and its causes, joined by `: ` (each once).
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        // `io::Error::source` skips the error it wraps; look inside it.
        next = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    parts.join(": ")
}

/// `true` when rustls refused a certificate somewhere in the cause chain.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        next = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// hyper-util's pooled client over a [`Connector`]; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

impl Client {
    pub fn new(connector: Connector, pool: Pool) -> Client {
        let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new());
        match pool {
            Pool::KeepIdle(idle) => builder.pool_idle_timeout(idle),
            Pool::Never => builder.pool_max_idle_per_host(0),
        };
        Client { inner: builder.build(connector) }
    }

    /// Sends `req` (an absolute URI: the pool is keyed by it; `Host` is set from it) and
    /// returns the response with its body still streaming.
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        self.inner.request(req).await.map_err(ClientError::from_hyper)
    }

    /// Sends `req` and reads the whole response body, at most `max_body` bytes.
    pub async fn send_collect(
        &self,
        req: http::Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<http::Response<Bytes>, ClientError> {
        let (parts, body) = self.send(req).await?.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| ClientError::Body(cause_chain(&*e)))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_stay_out_of_debug_output_and_errors() {
        let h = Headers([("x-api-key".to_owned(), "s3cr3t".to_owned())].into());
        let shown = format!("{h:?}");
        assert!(shown.contains("x-api-key") && !shown.contains("s3cr3t"), "{shown}");
        let compiled = h.compile().unwrap();
        assert!(compiled.http["x-api-key"].is_sensitive());
        let bad = Headers([("k".to_owned(), "line\nbreak-s3cr3t".to_owned())].into());
        let e = format!("{:#}", bad.compile().err().unwrap());
        assert!(e.contains("\"k\"") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn endpoints_parse_or_name_the_field() {
        let e = Endpoint::parse("https://[::1]/base/", "endpoint").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.https), ("::1", 443, true));
        assert_eq!(e.url("/v1/logs"), "https://[::1]/base/v1/logs");
        let e = Endpoint::parse("http://c:4318", "endpoint").unwrap();
        assert_eq!(e.url("/v1/traces"), "http://c:4318/v1/traces");
        let err = Endpoint::parse("ftp://x", "--url").unwrap_err().to_string();
        assert!(err.contains("--url") && err.contains("http://"), "{err}");
        assert!(Endpoint::parse("c:4318", "endpoint").is_err());
    }

    /// A real server on loopback: the pooled client reuses one connection, the fresh one
    /// opens one per request, and a refused connection is a connect error.
    #[tokio::test]
    async fn pooled_client_reuses_connections_and_fresh_client_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                        }
                    }
                });
            }
        });
        let endpoint = Endpoint::parse(&format!("http://{addr}"), "endpoint").unwrap();
        let connector = Connector::new(&endpoint, None, &[]).unwrap();
        let get = || http::Request::get(endpoint.url("/x")).body(Full::new(Bytes::new())).unwrap();
        let pooled = Client::new(connector.clone(), Pool::KeepIdle(Duration::from_secs(30)));
        for _ in 0..3 {
            let r = pooled.send_collect(get(), 1024).await.unwrap();
            assert_eq!(&r.body()[..], b"ok");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        let fresh = Client::new(connector, Pool::Never);
        for _ in 0..2 {
            fresh.send_collect(get(), 1024).await.unwrap();
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
        let too_small = pooled.send_collect(get(), 1).await.unwrap_err();
        assert!(matches!(too_small, ClientError::Body(_)), "{too_small}");

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let endpoint = Endpoint::parse(&format!("http://{closed}"), "endpoint").unwrap();
        let client = Client::new(Connector::new(&endpoint, None, &[]).unwrap(), Pool::Never);
        let req = http::Request::get(endpoint.url("/")).body(Full::new(Bytes::new())).unwrap();
        let e = client.send(req).await.unwrap_err();
        assert!(matches!(e, ClientError::Connect(_)), "{e}");
    }
}
