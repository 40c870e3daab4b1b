//! Where decoded requests become events in the pipeline, for both protocols: the per-request
//! item limit, the conversion (which strips the reserved `sealtrail.*` attribute keys a client
//! must not set), the non-blocking hand-off, and the counters of what was refused, rejected or
//! stripped (`stripped.reserved_attributes`).

use std::sync::{Arc, Mutex};

use crate::component::Fanout;
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
}

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
        }
    }

    /// The counter suffix (`refused.<reason>`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TooManyItems { .. } => "too_many_items",
            Refusal::Full => "pipeline_full",
            Refusal::Busy => "too_many_requests",
            Refusal::Closed => "shutting_down",
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

    /// Converts and forwards the spans of a request; returns what was rejected item by item.
    pub fn traces(&self, req: ExportTraceServiceRequest) -> Result<Rejected, Refusal> {
        let items = convert::count_spans(&req);
        self.check(items)?;
        let mut events = Vec::with_capacity(items);
        let rejected = convert::spans_to_events(req, &self.source, &mut events);
        self.send(events)?;
        self.metrics.add("rejected.spans", rejected.count);
        self.metrics.add("stripped.reserved_attributes", rejected.stripped);
        Ok(rejected)
    }

    /// Converts and forwards the log records of a request.
    pub fn logs(&self, req: ExportLogsServiceRequest) -> Result<Rejected, Refusal> {
        let items = convert::count_logs(&req);
        self.check(items)?;
        let mut events = Vec::with_capacity(items);
        let rejected = convert::logs_to_events(req, &self.source, now_nanos(), &mut events);
        self.send(events)?;
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

    fn send(&self, events: Vec<crate::event::Event>) -> Result<(), Refusal> {
        if events.is_empty() {
            return Ok(());
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let r = match out.as_mut() {
            None => Err(Refusal::Closed),
            // Never waits: a full pipeline is the client's cue to back off, and holding the
            // request here would be an unbounded queue of waiting requests.
            Some(o) => o.try_send(Arc::new(events)).map_err(|_| Refusal::Full),
        };
        if let Err(r) = &r {
            self.refused(r.reason());
        }
        r
    }
}
