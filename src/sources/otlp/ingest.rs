//! Where decoded requests become events in the pipeline, for both protocols: the per-request
//! item limit, the conversion (which strips the reserved `sealtrail.*` attribute keys a client
//! must not set), the non-blocking hand-off, and the counters of what was refused, rejected or
//! stripped (`stripped.reserved_attributes`).

use std::sync::{Arc, Mutex};

use crate::component::{AckStatus, AckWait, Fanout};
use crate::event::{SourceId, now_nanos};
use crate::metrics::ComponentMetrics;
use crate::otlp::convert::{self, Rejected};
use crate::otlp::{ExportLogsServiceRequest, ExportTraceServiceRequest};

/// The limits every request is checked against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_request_bytes: usize,
    pub max_items: usize,
    pub retry_after_secs: u64,
    pub max_concurrent_requests: usize,
    /// `acknowledgements = true`: answer success only once the events are durable.
    pub acknowledgements: bool,
}

/// The longest a request waits for its events to become durable before it is answered
/// "retry" (a stalled or failing sink must not hold requests forever; the events may still
/// be logged, so the retry can make a duplicate, which at-least-once allows).
pub(super) const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a whole request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// More items than `max_items_per_request` (not retryable: the client must split).
    TooManyItems { items: usize, max: usize },
    /// The pipeline has no room now: retry later.
    Full,
    /// `max_concurrent_requests` requests are being read already: retry later.
    Busy,
    /// The source is shutting down: retry later (elsewhere).
    Closed,
    /// `acknowledgements = true` and the events did not become durable (a sink failed with
    /// them, or [`ACK_TIMEOUT`] passed): retry later.
    NotDurable,
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::TooManyItems { items, max } => {
                format!("request carries {items} items, more than the limit of {max} (max_items_per_request)")
            }
            Refusal::Full => "the pipeline is full; retry later".to_owned(),
            Refusal::Busy => "too many requests in progress; retry later".to_owned(),
            Refusal::Closed => "the agent is shutting down; retry later".to_owned(),
            Refusal::NotDurable => "the events could not be made durable yet; retry later".to_owned(),
        }
    }

    /// The counter suffix (`refused.<reason>`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TooManyItems { .. } => "too_many_items",
            Refusal::Full => "pipeline_full",
            Refusal::Busy => "too_many_requests",
            Refusal::Closed => "shutting_down",
            Refusal::NotDurable => "not_durable",
        }
    }
}

/// The shared state of both listeners.
pub(super) struct Ingest {
    /// `None` once the source has stopped: dropping the output is what tells the pipeline
    /// downstream that this source ended, even if a stalled connection outlives the drain.
    out: Mutex<Option<Fanout>>,
    pub metrics: Arc<ComponentMetrics>,
    source: SourceId,
    pub limits: Limits,
    /// One permit per request being read, decoded and converted.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Ingest {
    pub fn new(out: Fanout, metrics: Arc<ComponentMetrics>, id: &str, limits: Limits) -> Ingest {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests));
        Ingest { out: Mutex::new(Some(out)), metrics, source: SourceId::from(id), limits, in_flight }
    }

    /// Admits one request, or refuses it (counted) when `max_concurrent_requests` are in
    /// progress. The permit is held until the request has been handed to the pipeline.
    pub fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            self.refused(Refusal::Busy.reason());
            Refusal::Busy
        })
    }

    /// Drops the output (see the field's comment).
    pub fn close(&self) {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Counts a refusal or a protocol error by reason.
    pub fn refused(&self, reason: &str) {
        self.metrics.add(&format!("refused.{reason}"), 1);
    }

    /// Converts and forwards the spans of a request; returns what was rejected item by item,
    /// once the events are durable when the source acknowledges.
    pub async fn traces(&self, req: ExportTraceServiceRequest) -> Result<Rejected, Refusal> {
        let items = convert::count_spans(&req);
        self.check(items)?;
        let mut events = Vec::with_capacity(items);
        let rejected = convert::spans_to_events(req, &self.source, &mut events);
        let wait = self.send(events)?;
        self.durable(wait).await?;
        self.metrics.add("rejected.spans", rejected.count);
        self.metrics.add("stripped.reserved_attributes", rejected.stripped);
        Ok(rejected)
    }

    /// Converts and forwards the log records of a request (see [`Ingest::traces`]).
    pub async fn logs(&self, req: ExportLogsServiceRequest) -> Result<Rejected, Refusal> {
        let items = convert::count_logs(&req);
        self.check(items)?;
        let mut events = Vec::with_capacity(items);
        let rejected = convert::logs_to_events(req, &self.source, now_nanos(), &mut events);
        let wait = self.send(events)?;
        self.durable(wait).await?;
        self.metrics.add("rejected.logs", rejected.count);
        self.metrics.add("stripped.reserved_attributes", rejected.stripped);
        Ok(rejected)
    }

    fn check(&self, items: usize) -> Result<(), Refusal> {
        if items > self.limits.max_items {
            let r = Refusal::TooManyItems { items, max: self.limits.max_items };
            self.refused(r.reason());
            return Err(r);
        }
        Ok(())
    }

    /// Hands the events to the pipeline; with acknowledgements on, returns the wait for them
    /// to become durable.
    fn send(&self, events: Vec<crate::event::Event>) -> Result<Option<AckWait>, Refusal> {
        if events.is_empty() {
            return Ok(None);
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let r = match out.as_mut() {
            None => Err(Refusal::Closed),
            // Never waits: a full pipeline is the client's cue to back off, and holding the
            // request here would be an unbounded queue of waiting requests.
            Some(o) if self.limits.acknowledgements => {
                o.try_send_acked(Arc::new(events)).map(Some).map_err(|_| Refusal::Full)
            }
            Some(o) => o.try_send(Arc::new(events)).map(|()| None).map_err(|_| Refusal::Full),
        };
        if let Err(r) = &r {
            self.refused(r.reason());
        }
        r
    }

    /// Waits (at most [`ACK_TIMEOUT`]) until the events are durable. The request's permit is
    /// held meanwhile, so `max_concurrent_requests` bounds the requests waiting too.
    async fn durable(&self, wait: Option<AckWait>) -> Result<(), Refusal> {
        let Some(wait) = wait else { return Ok(()) };
        match tokio::time::timeout(ACK_TIMEOUT, wait.wait()).await {
            Ok(AckStatus::Delivered) => {
                self.metrics.add("acknowledged.requests", 1);
                Ok(())
            }
            Ok(AckStatus::Failed) | Err(_) => {
                self.refused(Refusal::NotDurable.reason());
                Err(Refusal::NotDurable)
            }
        }
    }
}
