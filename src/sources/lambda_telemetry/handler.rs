//! One delivery from the platform: read within the limits, parse, map, queue, answer.

use super::*;

/// What the request handlers share.
pub(super) struct Ingest {
    pub(super) mapper: Mapper,
    pub(super) handle: Option<Arc<Handle>>,
    pub(super) stream: Mutex<StreamState>,
    pub(super) queue: mpsc::UnboundedSender<Queued>,
    pub(super) queued_bytes: Arc<AtomicUsize>,
    pub(super) max_buffered_bytes: usize,
    pub(super) max_body_bytes: usize,
    pub(super) seal_on_report: bool,
    /// `acknowledgements = true`: answer 200 only once the records are durable.
    pub(super) acknowledgements: bool,
    pub(super) metrics: Arc<ComponentMetrics>,
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

impl Ingest {
    pub(super) async fn handle(&self, req: Request<crate::net::Body>) -> Response<Full<Bytes>> {
        // The Telemetry API POSTs; the older Logs API may PUT.
        if req.method() != Method::POST && req.method() != Method::PUT {
            return reply(StatusCode::METHOD_NOT_ALLOWED, r#"{"errorType":"MethodNotAllowed"}"#);
        }
        let body = match Limited::new(req.into_body(), self.max_body_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    self.metrics.error("body_too_large");
                    tracing::warn!(limit = self.max_body_bytes, "telemetry batch rejected: body too large");
                    return reply(StatusCode::PAYLOAD_TOO_LARGE, r#"{"errorType":"PayloadTooLarge"}"#);
                }
                if e.is::<crate::net::BodyReadTimeout>() {
                    // Counted by the server loop (`timeouts.body_read`).
                    return reply(StatusCode::REQUEST_TIMEOUT, r#"{"errorType":"RequestTimeout"}"#);
                }
                self.metrics.error("read");
                return reply(StatusCode::BAD_REQUEST, r#"{"errorType":"ReadError"}"#);
            }
        };
        let envelopes: Vec<Envelope> = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.error("malformed_batch");
                // serde's message can quote the input: log only where it failed.
                tracing::warn!(line = e.line(), column = e.column(), "malformed telemetry batch rejected");
                return reply(
                    StatusCode::BAD_REQUEST,
                    r#"{"errorType":"InvalidBatch","errorMessage":"malformed JSON"}"#,
                );
            }
        };
        self.metrics.add("batches", 1);
        let mut events = Vec::with_capacity(envelopes.len());
        let saw_report = {
            let mut st = self.stream.lock().unwrap_or_else(|p| p.into_inner());
            let invoke = self.handle.as_ref().and_then(|h| h.invoke());
            self.mapper.map(envelopes, &mut st, invoke.as_ref(), &mut events)
        };
        self.metrics
            .add("stripped.reserved_attributes", crate::event::attr::strip_reserved_events(&mut events));
        let dropped_by_platform = events.iter().filter_map(platform_drops).sum::<u64>();
        self.metrics.add("dropped.platform", dropped_by_platform);
        let bytes: usize = events.iter().map(Event::size_estimate).sum();
        let n = events.len();
        let now = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if now > self.max_buffered_bytes {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            if self.acknowledgements {
                // Never a silent drop when the platform can be asked to deliver again.
                self.metrics.add("refused.backlog_full", 1);
                return reply(StatusCode::SERVICE_UNAVAILABLE, r#"{"errorType":"BacklogFull"}"#);
            }
            self.metrics.add("dropped.backlog_full", n as u64);
            tracing::warn!(
                records = n,
                "telemetry batch dropped: the pipeline is behind and the backlog is full"
            );
            return reply(StatusCode::OK, "\"OK\"");
        }
        let (ack, wait) = match self.acknowledgements && n > 0 {
            true => {
                let (a, w) = crate::component::Ack::new();
                (Some(a), Some(w))
            }
            false => (None, None),
        };
        if self.queue.send((Arc::new(events), bytes, saw_report && self.seal_on_report, ack)).is_err() {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.metrics.add("dropped.stopped", n as u64);
        }
        if let Some(wait) = wait {
            if wait.wait().await == crate::component::AckStatus::Failed {
                self.metrics.add("refused.not_durable", 1);
                return reply(StatusCode::SERVICE_UNAVAILABLE, r#"{"errorType":"NotDurable"}"#);
            }
            self.metrics.add("acknowledged.batches", 1);
        }
        reply(StatusCode::OK, "\"OK\"")
    }
}

/// `droppedRecords` of a `platform.logsDropped` record.
pub(super) fn platform_drops(e: &Event) -> Option<u64> {
    let Event::Log(l) = e else { return None };
    if !matches!(crate::event::find_attr(&l.attributes, attr::TYPE), Some(Value::Str(t)) if t == "platform.logsDropped")
    {
        return None;
    }
    match crate::event::find_attr(&l.attributes, "droppedRecords") {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
}
