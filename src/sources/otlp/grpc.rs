//! OTLP/gRPC: the `TraceService` and `LogsService` implementations, and the dispatch of an
//! HTTP/2 request to the right generated tonic server by its path.

use std::convert::Infallible;
use std::sync::Arc;

use tonic::codec::CompressionEncoding;
use tower_service::Service as _;

use super::ingest::{Ingest, Refusal};
use crate::otlp::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse, ExportTracePartialSuccess,
    ExportTraceServiceRequest, ExportTraceServiceResponse, LOGS_EXPORT_PATH, LogsService, LogsServiceServer,
    TRACE_EXPORT_PATH, TraceService, TraceServiceServer,
};

/// Implements both services over the shared [`Ingest`].
#[derive(Clone)]
pub(super) struct Handler(pub Arc<Ingest>);

fn status(r: &Refusal, retry_after: u64) -> tonic::Status {
    match r {
        Refusal::TooManyItems { .. } => tonic::Status::invalid_argument(r.message()),
        // OTLP clients retry RESOURCE_EXHAUSTED only when the status carries a RetryInfo.
        Refusal::Full | Refusal::Busy => {
            let details = crate::otlp::retry_details(
                tonic::Code::ResourceExhausted as i32,
                &r.message(),
                retry_after as i64,
            );
            tonic::Status::with_details(tonic::Code::ResourceExhausted, r.message(), details.into())
        }
        Refusal::Closed | Refusal::NotDurable => tonic::Status::unavailable(r.message()),
    }
}

#[tonic::async_trait]
impl TraceService for Handler {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let rejected = self
            .0
            .traces(request.into_inner())
            .await
            .map_err(|r| status(&r, self.0.limits.retry_after_secs))?;
        let partial_success = (rejected.count > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected.count as i64,
            error_message: rejected.message(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

#[tonic::async_trait]
impl LogsService for Handler {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let rejected = self
            .0
            .logs(request.into_inner())
            .await
            .map_err(|r| status(&r, self.0.limits.retry_after_secs))?;
        let partial_success = (rejected.count > 0).then(|| ExportLogsPartialSuccess {
            rejected_log_records: rejected.count as i64,
            error_message: rejected.message(),
        });
        Ok(tonic::Response::new(ExportLogsServiceResponse { partial_success }))
    }
}

/// The two generated servers, configured with the source's limits and gzip.
#[derive(Clone)]
pub(super) struct Router {
    traces: TraceServiceServer<Handler>,
    logs: LogsServiceServer<Handler>,
    ingest: Arc<Ingest>,
}

impl Router {
    pub fn new(ingest: Arc<Ingest>) -> Router {
        let max = ingest.limits.max_request_bytes;
        let handler = Handler(ingest.clone());
        Router {
            // The decoding limit applies to the message after decompression too: tonic
            // inflates into a buffer capped at this size, so a gzip bomb stops there.
            traces: TraceServiceServer::new(handler.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max),
            logs: LogsServiceServer::new(handler)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max),
            ingest,
        }
    }

    /// Serves one request; errors come back as gRPC statuses, counted by code.
    pub async fn call(mut self, req: http::Request<crate::net::Body>) -> http::Response<tonic::body::Body> {
        // Admitted before tonic reads the body, so that the bound holds for the bytes too.
        let permit = match req.uri().path() {
            TRACE_EXPORT_PATH | LOGS_EXPORT_PATH => match self.ingest.admit() {
                Ok(p) => Some(p),
                Err(r) => return status(&r, self.ingest.limits.retry_after_secs).into_http(),
            },
            _ => None,
        };
        let mut resp = match req.uri().path() {
            TRACE_EXPORT_PATH => infallible(self.traces.call(req).await),
            LOGS_EXPORT_PATH => infallible(self.logs.call(req).await),
            other => {
                let msg = format!(
                    "unknown method {}; this server has TraceService/Export and LogsService/Export",
                    short(other)
                );
                tonic::Status::unimplemented(msg).into_http()
            }
        };
        // Errors are sent as "trailers-only" responses, so the status is in the headers here;
        // a success has its status in the trailers and no header.
        drop(permit);
        let code = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
        if let Some(code) = code.filter(|c| *c != 0) {
            let mut code = tonic::Code::from_i32(code);
            if code == tonic::Code::OutOfRange {
                // tonic's answer to a message over the size limit. OTLP clients retry
                // OUT_OF_RANGE, which for a request that can never fit means forever; grpc-go
                // (and so the Collector) answers RESOURCE_EXHAUSTED, retried only with a
                // RetryInfo, which this answer does not carry.
                code = tonic::Code::ResourceExhausted;
                resp.headers_mut().insert("grpc-status", http::HeaderValue::from_static("8"));
            }
            self.ingest.refused(&format!("grpc.{}", code_name(code)));
        }
        resp
    }
}

/// The generated servers answer every error as a gRPC status.
fn infallible<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(t) => t,
        Err(never) => match never {},
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}
