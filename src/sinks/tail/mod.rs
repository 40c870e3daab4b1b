//! The `tail` sink: an authenticated HTTP server that streams the (redacted) events passing
//! through it to any number of watchers as newline-delimited JSON, with server-side filters.
//!
//! - [`config`]: `TailConfig` (what the user wrote) and its validation into [`TailSink`].
//! - [`filter`]: the `grep`, `level`, `service`, `signal` and `trace_id` query filters.
//! - [`hub`]: the fan-out from the sink's input to per-client bounded queues. It never waits
//!   for a client nor for its own JSON encoder, so a slow watcher (or more events than the
//!   sink can encode) loses events, and is told `{"dropped": N}`, instead of slowing the
//!   pipeline.
//! - `server`: routes, bearer-token authentication and the streaming body; connections,
//!   TLS, limits, timeouts and shutdown are the agent's one server loop ([`crate::net`]).
//!
//! The loader only lets this sink run downstream of a `redact` transform (unless
//! `allow_unredacted = true`), so what it streams has been redacted.

pub mod config;
pub mod filter;
pub mod hub;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio::net::TcpListener;

use crate::net::server::stop_on;
use tokio::sync::{mpsc, watch};
use tokio_rustls::{TlsAcceptor, rustls};

pub use config::{AuthMode, Secret, TailConfig, TlsConfig};
pub use filter::{Filter, FilterError};

use crate::component::{BoxFuture, Sink, SinkKind, parse_sink};
use crate::component::{SinkContext, SinkInput};

pub const KIND: SinkKind = SinkKind {
    name: "tail",
    description: "an authenticated live stream of events over HTTP, for `sealtrail tail`",
    parse: parse_sink::<TailConfig>,
};

/// A compiled tail sink, ready to bind.
pub struct TailSink {
    pub(crate) address: SocketAddr,
    pub(crate) token: Option<crate::net::auth::TokenDigest>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) bound: hub::QueueBound,
    pub(crate) max_clients: usize,
    pub(crate) limits: crate::net::Limits,
}

impl Sink for TailSink {
    fn run(self: Box<Self>, input: SinkInput, cx: SinkContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            let listener = crate::net::server::listen(self.address)
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", self.address))?;
            self.serve(listener, input, cx).await
        })
    }
}

impl TailSink {
    /// Runs the sink on a bound listener until `input` ends: the server stops accepting,
    /// every client gets the rest of its queue and the end of its stream (within
    /// `server::DRAIN_TIMEOUT`), and this returns.
    pub async fn serve(self, listener: TcpListener, input: SinkInput, cx: SinkContext) -> anyhow::Result<()> {
        let local = listener.local_addr()?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(
            auth = if self.token.is_some() { "token" } else { "none" },
            "tail: listening on {scheme}://{local}"
        );
        let (register, registrations) = mpsc::channel(self.max_clients);
        let shared = Arc::new(server::Shared {
            token: self.token,
            register,
            active: Arc::new(AtomicUsize::new(0)),
            max_clients: self.max_clients,
        });
        let (stop, stopped) = watch::channel(false);
        let router = server::router(shared);
        let server = crate::net::Server {
            limits: self.limits,
            tls: self.tls.map(TlsAcceptor::from),
            metrics: cx.metrics.clone(),
            handler: move |req, peer| server::handle(&router, req, peer),
            name: "tail",
        };
        let server = tokio::spawn(server.serve(listener, stop_on(stopped, server::DRAIN_TIMEOUT)));
        hub::run(input, registrations, self.bound, cx.metrics.clone()).await;
        let _ = stop.send(true);
        if let Err(e) = server.await {
            anyhow::bail!("the tail server failed: {e}");
        }
        Ok(())
    }
}
