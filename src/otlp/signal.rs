//! The two OTLP signals the agent carries, traces and logs, behind one trait: each has an
//! export request and response, a gRPC method, an OTLP/HTTP path and a count of rejected items
//! in its partial success. Code that handles both (the `otlp` sink's exporter) is written once
//! over [`Signal`] instead of once per signal.

use crate::event::Event;
use crate::otlp::convert::{logs_from_events, traces_from_events};
use crate::otlp::{
    ExportLogsServiceRequest, ExportLogsServiceResponse, ExportTraceServiceRequest,
    ExportTraceServiceResponse, LOGS_EXPORT_PATH, TRACE_EXPORT_PATH,
};

/// An OTLP export request type: `ExportTraceServiceRequest` or `ExportLogsServiceRequest`.
pub trait Signal: prost::Message + Default + Clone + Send + Sync + 'static {
    /// The service's answer.
    type Response: prost::Message + Default + Send + 'static;
    /// `"traces"` or `"logs"`, for messages.
    const NAME: &'static str;
    /// The OTLP/HTTP path, appended to the endpoint's path.
    const HTTP_PATH: &'static str;
    /// The gRPC method path.
    const GRPC_PATH: &'static str;

    /// Builds the request from the events of this signal among `events` (others are skipped).
    fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self;

    /// Whether `event` belongs to this signal.
    fn carries(event: &Event) -> bool;

    /// The items the response's partial success says were rejected (0 without one).
    fn rejected(response: &Self::Response) -> u64;
}

impl Signal for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;
    const NAME: &'static str = "traces";
    const HTTP_PATH: &'static str = "/v1/traces";
    const GRPC_PATH: &'static str = TRACE_EXPORT_PATH;

    fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        traces_from_events(events)
    }

    fn carries(event: &Event) -> bool {
        matches!(event, Event::Span(_))
    }

    fn rejected(response: &Self::Response) -> u64 {
        response.partial_success.as_ref().map_or(0, |p| p.rejected_spans.max(0) as u64)
    }
}

impl Signal for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const NAME: &'static str = "logs";
    const HTTP_PATH: &'static str = "/v1/logs";
    const GRPC_PATH: &'static str = LOGS_EXPORT_PATH;

    fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        logs_from_events(events)
    }

    fn carries(event: &Event) -> bool {
        matches!(event, Event::Log(_))
    }

    fn rejected(response: &Self::Response) -> u64 {
        response.partial_success.as_ref().map_or(0, |p| p.rejected_log_records.max(0) as u64)
    }
}
