//! The `[api]` section: the agent's operator endpoints on the shared server loop
//! ([`crate::net::server`]).
//!
//! - `GET /health`: liveness, `200 {"status":"ok"}` while the process serves requests.
//! - `GET /ready`: `200 {"status":"ready"}` when every component has started and none has
//!   failed, no sink counted an error in the last [`FAILING_WINDOW`], and every key in the
//!   keyring loads; otherwise `503` with the reasons as JSON (component ids, states and key
//!   names only: never an event, a key or a token).
//! - `GET /metrics`: the Prometheus text exposition of [`crate::metrics::prometheus`].
//!
//! Authentication, TLS and the plain-text check are those of the `tail` sink: a bearer token
//! (only its digest is kept) unless `auth = "none"` on a loopback address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, rustls};

use crate::keys::Keyring;
use crate::metrics::{Registry, State as ComponentState, prometheus};
use crate::net::auth::{self, TokenDigest};
use crate::net::exposure;
use crate::net::server::ListenerConfig;
use crate::net::tls::{Alpn, ServerTls};

/// A sink that counted an error more recently than this is "failing" for `GET /ready`.
pub const FAILING_WINDOW: Duration = Duration::from_secs(30);

/// How long scrapers get to finish their requests once the agent has drained.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The `[api]` section. Present means on.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiOptions {
    /// The address to listen on (`0` as the port picks a free one, which the agent logs).
    /// Default `127.0.0.1:8687`.
    #[serde(default = "default_address")]
    pub address: String,
    /// The bearer token scrapers must present (at least 16 characters). Exclusive with
    /// `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token. Exclusive with `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `token` (default) or `none` (loopback addresses only).
    #[serde(default)]
    pub auth: AuthMode,
    /// Serve HTTPS: `crt_file`, `key_file`, optionally `client_ca_file`.
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// Connections open at once (default 16).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Listener timeouts, as for every listener.
    #[serde(default)]
    pub listener: ListenerConfig,
    /// Allows a token over plain HTTP on a non-loopback address.
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// How scrapers authenticate.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Token,
    None,
}

// By hand, so that the token never reaches a log line.
impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiOptions")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("token_file", &self.token_file)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("max_connections", &self.max_connections)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish_non_exhaustive()
    }
}

fn default_address() -> String {
    "127.0.0.1:8687".to_owned()
}

fn default_max_connections() -> usize {
    16
}

/// A checked `[api]` section, ready to bind.
pub struct Api {
    pub address: SocketAddr,
    token: Option<TokenDigest>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: crate::net::Limits,
}

impl ApiOptions {
    /// Validates the section (reads the token and TLS files; binds nothing). Errors name the
    /// field and never include the token.
    pub fn compile(&self) -> anyhow::Result<Api> {
        let address: SocketAddr = crate::units::ListenAddress::parse(&self.address)
            .map_err(|e| anyhow::anyhow!("`address`: {e}"))?
            .0;
        let token = match self.auth {
            AuthMode::Token => Some(auth::digest(
                auth::read_token(self.token.as_deref(), self.token_file.as_ref())?.as_bytes(),
            )),
            AuthMode::None => {
                anyhow::ensure!(
                    self.token.is_none() && self.token_file.is_none(),
                    "`auth = \"none\"` cannot be combined with `token` or `token_file`"
                );
                anyhow::ensure!(
                    exposure::is_loopback(&address),
                    "`auth = \"none\"` is only allowed on a loopback address, not {address}; configure a `token`"
                );
                None
            }
        };
        let limits = self.listener.limits(self.max_connections)?;
        let tls = match &self.tls {
            Some(t) => Some(t.server_config(Alpn::Http1)?),
            None => None,
        };
        if token.is_some() && tls.is_none() && !exposure::is_loopback(&address) {
            anyhow::ensure!(
                self.allow_plaintext,
                "`address` = {address} is not a loopback address and no `tls` is configured: the bearer \
                 token would cross the network in plain text; configure `tls` or set `allow_plaintext = true`"
            );
        }
        Ok(Api { address, token, tls, limits })
    }
}

/// What the handlers read.
pub struct Shared {
    pub registry: Registry,
    /// The keyring the agent uses, checked by `GET /ready`.
    pub keyring: Keyring,
    /// Set once the pipeline drains: `GET /ready` then answers 503.
    pub draining: AtomicBool,
    token: Option<TokenDigest>,
}

impl Api {
    /// Binds the address (an error names it).
    pub fn bind(&self) -> anyhow::Result<TcpListener> {
        crate::net::server::listen(self.address)
            .map_err(|e| anyhow::anyhow!("[api]: cannot listen on {}: {e}", self.address))
    }

    /// The state the handlers share.
    pub fn shared(&self, registry: Registry, keyring: Keyring) -> Arc<Shared> {
        Arc::new(Shared { registry, keyring, draining: AtomicBool::new(false), token: self.token })
    }

    /// Serves until `stop` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shared: Arc<Shared>,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(
            auth = if self.token.is_some() { "token" } else { "none" },
            "api: listening on {scheme}://{local}"
        );
        let router = router(shared.clone());
        let server = crate::net::Server {
            limits: self.limits,
            tls: self.tls.map(TlsAcceptor::from),
            metrics: shared.registry.component("api.api"),
            handler: move |req: http::Request<crate::net::Body>, _peer| {
                let mut router = router.clone();
                async move {
                    match tower_service::Service::call(&mut router, req.map(Body::new)).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    }
                }
            },
            name: "api",
        };
        server
            .serve(listener, async move {
                stop.await;
                DRAIN_TIMEOUT
            })
            .await;
    }
}

fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "not found: the api endpoints are /health, /ready and /metrics\n")
        })
        .with_state(shared)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "unauthorized: missing or wrong bearer token\n",
    )
        .into_response()
}

fn authorized(s: &Shared, headers: &HeaderMap) -> bool {
    auth::authorized(s.token.as_ref(), headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    let mut body = v.to_string();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn health(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    json(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

async fn ready(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let (ok, detail) = readiness(&s);
    if ok {
        json(StatusCode::OK, serde_json::json!({"status": "ready"}))
    } else {
        json(StatusCode::SERVICE_UNAVAILABLE, detail)
    }
}

/// Whether the agent is ready, and the JSON detail of what is not.
pub fn readiness(s: &Shared) -> (bool, serde_json::Value) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut problems = Vec::new();
    if s.draining.load(Ordering::Relaxed) {
        problems.push(serde_json::json!({"reason": "draining"}));
    }
    for m in s.registry.all() {
        let (kind, id) = m.kind_and_id();
        if !matches!(kind, "source" | "transform" | "sink") {
            continue;
        }
        let state = m.state();
        if state != ComponentState::Running {
            problems.push(serde_json::json!({
                "reason": "component not running", "component_id": id, "component_kind": kind, "state": state.name(),
            }));
        } else if kind == "sink" {
            if let Some(t) = m.last_error_ms() {
                let age = now_ms.saturating_sub(t);
                if age < FAILING_WINDOW.as_millis() as u64 {
                    problems.push(serde_json::json!({
                        "reason": "sink failing", "component_id": id, "component_kind": kind,
                        "last_error_ms_ago": age, "errors": m.errors.load(Ordering::Relaxed),
                    }));
                }
            }
        }
    }
    let dir = s.keyring.dir();
    if dir.exists() {
        if let Err(e) = std::fs::read_dir(dir) {
            problems.push(serde_json::json!({"reason": "keyring unreadable", "keyring": dir.display().to_string(), "error": e.to_string()}));
        }
    }
    for (name, key) in s.keyring.list() {
        if let Err(e) = key {
            problems.push(serde_json::json!({"reason": "key unusable", "key": name, "error": e.to_string()}));
        }
    }
    (problems.is_empty(), serde_json::json!({"status": "not ready", "problems": problems}))
}

async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], prometheus::render(&s.registry)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> ApiOptions {
        toml::from_str(t).unwrap()
    }

    #[test]
    fn defaults_and_checks() {
        let a = parse("auth = \"none\"").compile().unwrap();
        assert_eq!(a.address.to_string(), "127.0.0.1:8687");
        assert!(a.token.is_none());
        let e = format!("{:#}", parse("auth = \"none\"\naddress = \"0.0.0.0:1\"").compile().err().unwrap());
        assert!(e.contains("only allowed on a loopback address"), "{e}");
        let e = format!("{:#}", parse("").compile().err().unwrap());
        assert!(e.contains("no token configured"), "{e}");
        let tok = "0123456789abcdef0123";
        let e = format!(
            "{:#}",
            parse(&format!("token = \"{tok}\"\naddress = \"0.0.0.0:1\"")).compile().err().unwrap()
        );
        assert!(e.contains("allow_plaintext") && !e.contains(tok), "{e}");
        assert!(!format!("{:?}", parse(&format!("token = \"{tok}\""))).contains(tok));
    }
}
