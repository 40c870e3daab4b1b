//! The HTTP side of the `tail` sink: routes (`GET /v1/tail`, `GET /v1/health`),
//! authentication and the streaming response body.
//!
//! Routing is an axum [`Router`]; connections are served by the agent's one server loop
//! ([`crate::net::server`]), which caps connections before TLS and authentication, applies
//! the listener timeouts, and stops every connection gracefully when the sink's input ends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

use super::filter::Filter;
use super::hub::{Chunk, NewClient, Queued};
use crate::net::auth::{self, TokenDigest};

/// How long clients get, once the input has ended, to read the end of their streams before
/// their connections are closed. A client that stopped reading must not keep the agent alive.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handlers share.
pub(crate) struct Shared {
    /// The digest of the token; `None` with `auth = "none"`.
    pub token: Option<TokenDigest>,
    /// Where new clients go: the hub. Closed once the input has ended.
    pub register: mpsc::Sender<NewClient>,
    /// Clients streaming now.
    pub active: Arc<AtomicUsize>,
    pub max_clients: usize,
}

/// The peer address of a connection, as a request extension.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// Serves one request of the server loop with the axum `router`.
pub(crate) fn handle(
    router: &Router,
    mut req: http::Request<crate::net::Body>,
    peer: SocketAddr,
) -> impl std::future::Future<Output = Response> + Send + use<> {
    req.extensions_mut().insert(Peer(peer));
    let mut router = router.clone();
    async move {
        match tower_service::Service::call(&mut router, req.map(Body::new)).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

/// The routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/tail", get(tail))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "not found: the tail endpoints are /v1/tail and /v1/health\n")
        })
        .with_state(shared)
}

async fn health() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ok\"}\n")
}

async fn tail(
    State(s): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if !authorized(s.token.as_ref(), &headers) {
        tracing::warn!(%peer, "tail: refused a client with a missing or wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized: missing or wrong bearer token\n",
        )
            .into_response();
    }
    let filter = match Filter::from_query(query.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad request: {e}\n")).into_response(),
    };
    let Some(slot) = Slot::acquire(&s.active, s.max_clients) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many tail clients; try again later\n").into_response();
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(Queued::default());
    let client = NewClient { peer, filter, tx, queued: queued.clone() };
    if s.register.try_send(client).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the agent is shutting down\n").into_response();
    }
    let mut r = Response::new(Body::new(ClientBody { rx, queued, _slot: slot }));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Checks `Authorization: Bearer <token>` ([`auth::authorized`]: SHA-256 digests compared in
/// constant time).
fn authorized(want: Option<&TokenDigest>, headers: &HeaderMap) -> bool {
    auth::authorized(want, headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
}

/// A client's place in `max_clients`, given back when its response body is dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn acquire(active: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot(active.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The streaming body of a tail response: the chunks the hub queues for this client. It
/// ends when the hub drops its sender (end of input); dropping it (the client went away)
/// closes the channel, which the hub notices.
struct ClientBody {
    rx: mpsc::UnboundedReceiver<Chunk>,
    queued: Arc<Queued>,
    _slot: Slot,
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(c)) => {
                this.queued.taken(&c);
                Poll::Ready(Some(Ok(Frame::data(c.bytes))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        let want = auth::digest(b"the-right-token-123");
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(authorized(Some(&want), &h("Bearer the-right-token-123")));
        assert!(authorized(Some(&want), &h("bearer  the-right-token-123 ")));
        assert!(!authorized(Some(&want), &h("Bearer the-right-token-124")));
        assert!(!authorized(Some(&want), &h("Bearer the-right-token-12")));
        assert!(!authorized(Some(&want), &h("Basic the-right-token-123")));
        assert!(!authorized(Some(&want), &h("Bearer")));
        assert!(!authorized(Some(&want), &HeaderMap::new()));
        assert!(authorized(None, &HeaderMap::new()));
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let active = Arc::new(AtomicUsize::new(0));
        let a = Slot::acquire(&active, 2).unwrap();
        let _b = Slot::acquire(&active, 2).unwrap();
        assert!(Slot::acquire(&active, 2).is_none());
        drop(a);
        assert!(Slot::acquire(&active, 2).is_some());
    }
}
