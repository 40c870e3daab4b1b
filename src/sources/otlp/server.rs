//! The listeners: accept loop, TLS handshake, connection limit, HTTP/1.1 and HTTP/2 serving,
//! and graceful shutdown, shared by the gRPC and the HTTP listener.
//!
//! Shutdown follows mini-redis: when the source's shutdown fires the accept loop stops, each
//! connection task tells hyper to finish its in-flight requests and close, and the loop waits
//! for the tasks through a channel nobody sends on (each task holds a sender clone; `recv`
//! returns `None` once all are dropped). A client that stalls mid-request does not hold the
//! agent hostage: the wait ends after [`DRAIN_TIMEOUT`], and the source then drops its output.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Either;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use super::grpc::Router;
use super::ingest::Ingest;
use crate::metrics::ComponentMetrics;

/// How long shutdown waits for in-flight requests.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers (slow-loris defence).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Which protocol a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Grpc,
    Http,
}

/// One listener's serving state.
pub(super) struct Server {
    pub ingest: Arc<Ingest>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub max_connections: usize,
    pub metrics: Arc<ComponentMetrics>,
}

impl Server {
    /// Serves `listener` until `stop` turns true, then drains.
    pub async fn serve(self, listener: TcpListener, protocol: Protocol, mut stop: Stop) {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let router = Router::new(self.ingest.clone());
        loop {
            let stream = tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        self.ingest.refused("accept_error");
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                self.ingest.refused("max_connections");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (ingest, router, builder, tls) =
                (self.ingest.clone(), router.clone(), builder.clone(), self.tls.clone());
            let (shutdown, done, metrics) = (stop.clone(), done_tx.clone(), self.metrics.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _done = done;
                let svc = service_fn(move |req| {
                    let (router, ingest) = (router.clone(), ingest.clone());
                    async move {
                        match protocol {
                            Protocol::Grpc => router.call(req).await.map(|r| r.map(Either::Left)),
                            Protocol::Http => {
                                super::http::handle(req, ingest).await.map(|r| r.map(Either::Right))
                            }
                        }
                    }
                });
                let r = match tls {
                    None => serve_connection(&builder, TokioIo::new(stream), svc, shutdown).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => serve_connection(&builder, TokioIo::new(s), svc, shutdown).await,
                            Ok(Err(e)) => {
                                metrics.add("refused.tls_handshake", 1);
                                tracing::debug!("TLS handshake failed: {e}");
                                Ok(())
                            }
                            Err(_) => {
                                metrics.add("refused.tls_handshake", 1);
                                Ok(())
                            }
                        }
                    }
                };
                if let Err(e) = r {
                    // A client that went away mid-request, a protocol violation: the
                    // connection ends, nobody else is affected.
                    metrics.add("connection_errors", 1);
                    tracing::debug!("connection ended with an error: {e}");
                }
            });
        }
        drop(listener);
        drop(done_tx);
        if tokio::time::timeout(DRAIN_TIMEOUT, done_rx.recv()).await.is_err() {
            tracing::warn!("some OTLP clients did not finish within {DRAIN_TIMEOUT:?} of shutdown; closing");
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The source's own stop signal (see `mod.rs`: the agent's shutdown, or the end of the
/// process the agent wraps).
pub(super) type Stop = tokio::sync::watch::Receiver<bool>;

/// Waits until `stop` is true (a dropped sender counts as true).
pub(super) async fn stopped(stop: &mut Stop) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: TokioIo<I>,
    svc: S,
    mut shutdown: Stop,
) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
