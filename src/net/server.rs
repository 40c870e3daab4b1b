//! The one HTTP server loop of the agent: accept, connection cap, TLS handshake, HTTP/1.1 and
//! HTTP/2 (hyper-util's `auto` builder), timeouts, and a bounded graceful shutdown. The OTLP
//! listeners, the tail sink and the Lambda Telemetry listener all run on it, so a hostile or
//! careless client meets the same rules everywhere:
//!
//! - **Connection cap before anything else.** A permit of [`Limits::max_connections`] is taken
//!   right after `accept`, before the TLS handshake and before any authentication; a
//!   connection over the cap is closed at once and counted (`refused.max_connections`).
//! - **Timeouts.** A TLS handshake must finish within [`Limits::tls_handshake_timeout`]
//!   (`refused.tls_handshake`); HTTP/1 request headers within
//!   [`Limits::header_read_timeout`] (hyper closes the connection); a request body within
//!   [`Limits::body_read_timeout`] of the request's start ([`Body`] then fails with
//!   [`BodyReadTimeout`], `timeouts.body_read`); a connection with no request in flight is
//!   closed after [`Limits::idle_timeout`] (`timeouts.idle`), which also covers a connection
//!   that never sends a byte and an HTTP/2 connection idle after its preface. HTTP/2 peers
//!   are pinged every [`Limits::h2_keep_alive_interval`] and dropped when a ping goes
//!   unanswered for [`Limits::h2_keep_alive_timeout`].
//! - **One accept-error backoff** ([`ACCEPT_BACKOFF`], `refused.accept_error`): out of file
//!   descriptors and the like must not spin a core.
//! - **One drain rule.** When the stop future completes, the loop stops accepting, tells
//!   every connection to finish its in-flight requests and close, waits at most the drain
//!   budget the stop future returned, then aborts the connections still open.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::BoxError;
use crate::metrics::ComponentMetrics;
use crate::units;

/// How long the loop sleeps after a failed `accept` (out of file descriptors, …).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long an idle connection gets to close politely (HTTP/2 GOAWAY) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The limits of one listener. Every listener has all of them; only the defaults of
/// `max_connections` differ between components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more are closed right after `accept`.
    pub max_connections: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2_keep_alive_interval: Duration,
    pub h2_keep_alive_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
}

/// The `listener` table of a component that listens (`[sources.X.listener]`,
/// `[sinks.X.listener]`): the timeouts of [`Limits`], as durations (`"10s"`, `"500ms"`, or plain
/// seconds; the older `_secs` names are aliases). `max_connections` stays a field of the
/// component itself (its default depends on the component).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// How long a client has to finish its TLS handshake (default 10 s).
    #[serde(default = "ten", alias = "tls_handshake_timeout_secs")]
    pub tls_handshake_timeout: units::Duration,
    /// How long a client has to send an HTTP/1 request's headers (default 10 s).
    #[serde(default = "ten", alias = "header_read_timeout_secs")]
    pub header_read_timeout: units::Duration,
    /// How long a client has, from the start of a request, to send its whole body (default 30 s).
    #[serde(default = "thirty", alias = "body_read_timeout_secs")]
    pub body_read_timeout: units::Duration,
    /// How long a connection may stay open with no request in flight (default 60 s).
    #[serde(default = "sixty", alias = "idle_timeout_secs")]
    pub idle_timeout: units::Duration,
    /// The time between HTTP/2 keep-alive pings (default 30 s).
    #[serde(default = "thirty", alias = "http2_keep_alive_interval_secs")]
    pub http2_keep_alive_interval: units::Duration,
    /// How long an HTTP/2 peer has to answer a ping (default 10 s).
    #[serde(default = "ten", alias = "http2_keep_alive_timeout_secs")]
    pub http2_keep_alive_timeout: units::Duration,
    /// Requests one HTTP/2 connection may have in flight at once (default 128).
    #[serde(default = "default_streams")]
    pub http2_max_concurrent_streams: u32,
}

fn ten() -> units::Duration {
    units::Duration::from_secs(10)
}
fn thirty() -> units::Duration {
    units::Duration::from_secs(30)
}
fn sixty() -> units::Duration {
    units::Duration::from_secs(60)
}
fn default_streams() -> u32 {
    128
}

impl Default for ListenerConfig {
    fn default() -> ListenerConfig {
        ListenerConfig {
            tls_handshake_timeout: ten(),
            header_read_timeout: ten(),
            body_read_timeout: thirty(),
            idle_timeout: sixty(),
            http2_keep_alive_interval: thirty(),
            http2_keep_alive_timeout: ten(),
            http2_max_concurrent_streams: default_streams(),
        }
    }
}

impl ListenerConfig {
    /// Checks the values and returns the limits with `max_connections`.
    pub fn limits(&self, max_connections: usize) -> anyhow::Result<Limits> {
        anyhow::ensure!(max_connections >= 1, "`max_connections` must be at least 1");
        let within = |field: &str, v: units::Duration| -> anyhow::Result<Duration> {
            anyhow::ensure!(
                v.get() >= Duration::from_millis(1) && v.get() <= Duration::from_secs(86_400),
                "`listener.{field}` = {v} must be between 1ms and 1d"
            );
            Ok(v.get())
        };
        anyhow::ensure!(
            self.http2_max_concurrent_streams >= 1,
            "`listener.http2_max_concurrent_streams` must be at least 1"
        );
        Ok(Limits {
            max_connections,
            tls_handshake_timeout: within("tls_handshake_timeout", self.tls_handshake_timeout)?,
            header_read_timeout: within("header_read_timeout", self.header_read_timeout)?,
            body_read_timeout: within("body_read_timeout", self.body_read_timeout)?,
            idle_timeout: within("idle_timeout", self.idle_timeout)?,
            h2_keep_alive_interval: within("http2_keep_alive_interval", self.http2_keep_alive_interval)?,
            h2_keep_alive_timeout: within("http2_keep_alive_timeout", self.http2_keep_alive_timeout)?,
            h2_max_concurrent_streams: self.http2_max_concurrent_streams,
        })
    }
}

/// One listener: its limits, TLS, counters and request handler.
pub struct Server<H> {
    pub limits: Limits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where the listener's counters go (the component's own counters).
    pub metrics: Arc<ComponentMetrics>,
    /// Serves one request: `handler(request, peer)`.
    pub handler: H,
    /// Names the listener in log lines (`OTLP/HTTP`, `tail`, …).
    pub name: &'static str,
}

/// What every connection task shares.
struct Shared<H> {
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    metrics: Arc<ComponentMetrics>,
    handler: H,
    name: &'static str,
}

impl<H, Fut, B> Server<H>
where
    H: Fn(Request<Body>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// Serves `listener` until `stop` completes, then drains for at most the duration `stop`
    /// returned (see the module documentation). Returns when every connection is closed.
    pub async fn serve(self, listener: TcpListener, stop: impl Future<Output = Duration>) {
        let Server { limits, tls, metrics, handler, name } = self;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.h2_keep_alive_interval)
            .keep_alive_timeout(limits.h2_keep_alive_timeout)
            .max_concurrent_streams(limits.h2_max_concurrent_streams);
        let shared = Arc::new(Shared { builder, limits, metrics, handler, name });
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(stop);
        let drain = loop {
            tokio::select! {
                biased;
                drain = &mut stop => break drain,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            shared.metrics.add("refused.max_connections", 1);
                            drop(tcp);
                            continue;
                        };
                        // Responses should leave at once, not wait for Nagle.
                        let _ = tcp.set_nodelay(true);
                        let (shared, tls, stop) = (shared.clone(), tls.clone(), stop_rx.clone());
                        conns.spawn(async move {
                            let _permit = permit;
                            connection(tcp, peer, tls, shared, stop).await;
                        });
                    }
                    Err(e) => {
                        shared.metrics.add("refused.accept_error", 1);
                        tracing::warn!("{name}: accepting a connection failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        };
        drop(listener);
        let _ = stop_tx.send(true);
        let all_closed = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(drain, all_closed).await.is_err() {
            tracing::warn!(
                open = conns.len(),
                "{name}: closing connections whose requests did not finish within {drain:?} of shutdown"
            );
            conns.shutdown().await;
        }
    }
}

async fn connection<H, Fut, B>(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared<H>>,
    stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Body>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let result = match tls {
        None => serve_connection(TokioIo::new(tcp), peer, &shared, stop).await,
        Some(acceptor) => {
            match tokio::time::timeout(shared.limits.tls_handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), peer, &shared, stop).await,
                Ok(Err(e)) => {
                    shared.metrics.add("refused.tls_handshake", 1);
                    tracing::debug!(%peer, "{}: TLS handshake failed: {e}", shared.name);
                    Ok(())
                }
                Err(_) => {
                    shared.metrics.add("refused.tls_handshake", 1);
                    tracing::debug!(%peer, "{}: TLS handshake timed out", shared.name);
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        // A client that went away mid-request, a protocol violation, a header timeout: the
        // connection ends, nobody else is affected.
        shared.metrics.add("connection_errors", 1);
        tracing::debug!(%peer, "{}: connection ended with an error: {e}", shared.name);
    }
}

async fn serve_connection<I, H, Fut, B>(
    io: TokioIo<I>,
    peer: SocketAddr,
    shared: &Arc<Shared<H>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Body>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let svc = {
        let (shared, activity) = (shared.clone(), activity.clone());
        service_fn(move |req: Request<Incoming>| {
            let busy = Busy::start(&activity);
            let timeout = shared.limits.body_read_timeout;
            let req = req.map(|b| Body::new(b, timeout, shared.metrics.clone()));
            let response = (shared.handler)(req, peer);
            async move { Ok::<_, Infallible>(response.await.map(|body| Tracked { body, _busy: busy })) }
        })
    };
    let conn = shared.builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = activity.idle_for(shared.limits.idle_timeout) => {
            shared.metrics.add("timeouts.idle", 1);
            tracing::debug!(%peer, "{}: closing an idle connection", shared.name);
            conn.as_mut().graceful_shutdown();
            // Nothing is in flight; a peer that does not close politely is just dropped.
            let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, conn).await;
            Ok(())
        }
    }
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity(Mutex<(usize, Instant)>);

impl Activity {
    fn new() -> Activity {
        Activity(Mutex::new((0, Instant::now())))
    }

    fn state(&self) -> (usize, Instant) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes once the connection has had no request in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let (in_flight, since) = self.state();
            let wait = if in_flight == 0 {
                match limit.checked_sub(since.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            } else {
                limit
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One request in flight, from its headers until its response body is done or dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Busy {
        activity.0.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.saturating_sub(1);
        s.1 = Instant::now();
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct Tracked<B> {
    body: B,
    _busy: Busy,
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx).map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The request body every handler gets: hyper's body, failing with [`BodyReadTimeout`] when
/// it is not complete within the listener's body-read timeout of the request's start.
pub struct Body {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Created on the first wait, so a body that is already complete costs no timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<ComponentMetrics>,
}

impl Body {
    fn new(inner: Incoming, timeout: Duration, metrics: Arc<ComponentMetrics>) -> Body {
        Body { inner, deadline: Instant::now() + timeout, timeout, sleep: None, metrics }
    }
}

/// The error of a request body that was not received in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyReadTimeout(pub Duration);

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(f) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(f.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)))
        });
        if sleep.as_mut().poll(cx).is_ready() {
            this.metrics.add("timeouts.body_read", 1);
            return Poll::Ready(Some(Err(Box::new(BodyReadTimeout(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Completes when `stop` turns true or its sender is dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A stop future for [`Server::serve`]: completes when `stop` turns true (or its sender is
/// dropped) and returns `drain`.
pub async fn stop_on(mut stop: watch::Receiver<bool>, drain: Duration) -> Duration {
    stopped(&mut stop).await;
    drain
}

/// Binds `addr` with a listen backlog of [`LISTEN_BACKLOG`] and `SO_REUSEADDR`.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std and tokio do for `TcpListener::bind`: a restarted agent can bind at once while
    // the previous one's connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The listen backlog: connections the kernel completes before the agent accepts them. The
/// common default (1,024) overflows in a connection storm whenever the agent's threads are
/// descheduled for a few milliseconds, and each overflow costs the client a one-second SYN
/// retransmission; the kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;
