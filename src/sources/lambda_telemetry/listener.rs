//! The running source: binds the listener, reports it to the Lambda driver, and serves
//! deliveries on the agent's server loop until SHUTDOWN plus the grace window.

use super::queue::forward;
use super::*;

/// Time kept for sealing after the grace window: the grace window ends this long before the
/// SHUTDOWN deadline at the latest.
const SEAL_RESERVE: Duration = Duration::from_millis(300);

/// The running source.
pub(super) struct LambdaTelemetrySource {
    pub(super) config: LambdaTelemetryConfig,
    pub(super) handle: Option<Arc<Handle>>,
    pub(super) mapper: Mapper,
    pub(super) limits: Limits,
}

impl Source for LambdaTelemetrySource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            let LambdaTelemetrySource { config, handle, mapper, limits } = *self;
            let SourceContext { out, shutdown, metrics, .. } = cx;
            let addr = format!("{}:{}", config.address, config.port);
            let bound = match addr.parse() {
                Ok(a) => crate::net::server::listen(a),
                Err(_) => {
                    Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an IP address and port"))
                }
            };
            let listener = match bound {
                Ok(l) => l,
                Err(e) => {
                    let msg = format!("cannot listen on {addr}: {e}");
                    if let Some(h) = &handle {
                        h.listener_ready(Err(msg.clone()));
                    }
                    anyhow::bail!(msg);
                }
            };
            let port = listener.local_addr()?.port();
            tracing::info!(port, "telemetry listener ready");
            if let Some(h) = &handle {
                h.listener_ready(Ok(ListenerReady { subscription: config.subscription(port), port }));
            } else {
                tracing::warn!(
                    "not in Lambda extension mode: listening, but nothing subscribes this listener"
                );
            }

            let (qtx, qrx) = mpsc::unbounded_channel();
            let queued_bytes = Arc::new(AtomicUsize::new(0));
            let ingest = Arc::new(Ingest {
                mapper,
                handle: handle.clone(),
                stream: Mutex::new(StreamState::default()),
                queue: qtx,
                queued_bytes: queued_bytes.clone(),
                max_buffered_bytes: config.max_buffered_bytes,
                max_body_bytes: config.max_body_bytes,
                seal_on_report: config.flush == FlushPolicy::End,
                acknowledgements: config.acknowledgements,
                metrics: metrics.clone(),
            });
            let periodic = (config.flush == FlushPolicy::Periodic)
                .then(|| config.flush_interval.get().max(Duration::from_secs(1)));
            let forward = forward(qrx, out, queued_bytes, periodic);
            let grace = config.shutdown_grace();
            let serve = serve(listener, ingest, shutdown, handle, grace, limits);
            tokio::join!(serve, forward);
            Ok(())
        })
    }
}

/// Accepts deliveries until shutdown plus the grace window, then finishes the requests in
/// flight within the SHUTDOWN deadline. Returns when every connection is done, which drops
/// the handler and with it the last queue sender.
async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    mut shutdown: crate::component::Shutdown,
    handle: Option<Arc<Handle>>,
    grace: Duration,
    limits: Limits,
) {
    let stop = async move {
        shutdown.recv().await;
        let deadline = handle.as_ref().and_then(|h| h.shutdown_info()).map(|s| s.deadline);
        let grace = match deadline {
            Some(d) => grace.min(d.saturating_duration_since(Instant::now()).saturating_sub(SEAL_RESERVE)),
            None => grace,
        };
        tokio::time::sleep(grace).await;
        // New deliveries are refused from here on; those in flight get what is left of the
        // deadline.
        deadline
            .map(|d| d.saturating_duration_since(Instant::now()).saturating_sub(lambda::SHUTDOWN_MARGIN))
            .unwrap_or(DRAIN_WITHOUT_DEADLINE)
    };
    let server = Server {
        limits,
        tls: None,
        metrics: ingest.metrics.clone(),
        handler: move |req, _peer| {
            let ingest = ingest.clone();
            async move { ingest.handle(req).await }
        },
        name: "telemetry listener",
    };
    server.serve(listener, stop).await;
}

/// How long deliveries in flight get at shutdown outside Lambda (no SHUTDOWN deadline).
const DRAIN_WITHOUT_DEADLINE: Duration = Duration::from_secs(5);
