//! OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs` with `application/x-protobuf` or
//! `application/json` bodies, optionally `Content-Encoding: gzip`, answered with the codes of
//! the OTLP specification: 200 (with a partial success when items were rejected), 400 for a
//! body that does not decode, 404/405 for a wrong path or method, 413 for a body or item
//! count over the limits, 415 for an unsupported content type or encoding, 429 with
//! `Retry-After` when the pipeline is full and 503 when the agent is shutting down. Error
//! bodies are a `google.rpc.Status` in the request's encoding.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use prost::Message;

use super::ingest::{Ingest, Refusal};
use crate::net::{Body, BodyReadTimeout};
use crate::otlp::convert::Rejected;
use crate::otlp::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse, ExportTracePartialSuccess,
    ExportTraceServiceRequest, ExportTraceServiceResponse, RpcStatus, json,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Logs,
}

/// A refused request: status, counter reason and message for the client.
struct Error {
    status: StatusCode,
    /// The counter (`refused.<reason>`), `None` when the ingest layer has counted it already.
    reason: Option<&'static str>,
    message: String,
}

fn error(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Error {
    Error { status, reason: Some(reason), message: message.into() }
}

/// Serves one request. Never fails: every problem is an HTTP answer, counted.
pub(super) async fn handle(req: Request<Body>, ingest: Arc<Ingest>) -> Response<Full<Bytes>> {
    let encoding = match content_type(&req) {
        Some("application/json") => Encoding::Json,
        _ => Encoding::Protobuf,
    };
    match serve(req, &ingest).await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(reason) = e.reason {
                ingest.refused(reason);
            }
            if e.status.is_client_error() && e.status != StatusCode::TOO_MANY_REQUESTS {
                ingest.metrics.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let mut resp = error_response(e.status, &e.message, encoding);
            if matches!(e.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(ingest.limits.retry_after_secs));
            }
            resp
        }
    }
}

fn content_type<B>(req: &Request<B>) -> Option<&str> {
    let v = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    // Parameters such as `; charset=utf-8` do not change the format.
    Some(v.split(';').next().unwrap_or("").trim())
}

async fn serve(req: Request<Body>, ingest: &Ingest) -> Result<Response<Full<Bytes>>, Error> {
    let signal = match req.uri().path() {
        "/v1/traces" => Signal::Traces,
        "/v1/logs" => Signal::Logs,
        _ => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "not_found",
                "unknown path; use /v1/traces or /v1/logs",
            ));
        }
    };
    if req.method() != Method::POST {
        return Err(error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST"));
    }
    let encoding = match content_type(&req).map(|c| c.to_ascii_lowercase()).as_deref() {
        Some("application/x-protobuf") | Some("application/protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        _ => {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/x-protobuf or application/json",
            ));
        }
    };
    let gzip = match req.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?")) {
        None | Some("identity") => false,
        Some(v) if v.eq_ignore_ascii_case("gzip") => true,
        Some(_) => {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                "Content-Encoding must be gzip or identity",
            ));
        }
    };
    let _permit = ingest.admit().map_err(refusal)?;
    let max = ingest.limits.max_request_bytes;
    let body = read_body(req.into_body(), max).await?;
    let body = if gzip { gunzip(&body, max)? } else { body };
    let bad_protobuf = |e: prost::DecodeError| {
        error(StatusCode::BAD_REQUEST, "malformed_protobuf", format!("invalid protobuf: {e}"))
    };
    let bad_json = |e: String| error(StatusCode::BAD_REQUEST, "invalid_json", e);
    let rejected = match (signal, encoding) {
        (Signal::Traces, Encoding::Protobuf) => {
            let r = ExportTraceServiceRequest::decode(&body[..]).map_err(bad_protobuf)?;
            ingest.traces(r).await.map_err(refusal)?
        }
        (Signal::Logs, Encoding::Protobuf) => {
            let r = ExportLogsServiceRequest::decode(&body[..]).map_err(bad_protobuf)?;
            ingest.logs(r).await.map_err(refusal)?
        }
        (Signal::Traces, Encoding::Json) => {
            let r = json::decode_traces(&body).map_err(|e| bad_json(e.to_string()))?;
            ingest.traces(r).await.map_err(refusal)?
        }
        (Signal::Logs, Encoding::Json) => {
            let r = json::decode_logs(&body).map_err(|e| bad_json(e.to_string()))?;
            ingest.logs(r).await.map_err(refusal)?
        }
    };
    Ok(success(signal, encoding, &rejected))
}

fn refusal(r: Refusal) -> Error {
    let status = match r {
        Refusal::TooManyItems { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Full | Refusal::Busy => StatusCode::TOO_MANY_REQUESTS,
        Refusal::Closed | Refusal::NotDurable => StatusCode::SERVICE_UNAVAILABLE,
    };
    // The ingest layer has counted it.
    Error { status, reason: None, message: r.message() }
}

/// Reads the body, refusing it as soon as it passes `max` bytes (the declared length is
/// checked first, so an honest oversized request is refused before any of it is read).
async fn read_body(mut body: Body, max: usize) -> Result<Vec<u8>, Error> {
    use http_body::Body as _;
    let too_large =
        || error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("body larger than {max} bytes"));
    if body.size_hint().lower() > max as u64 {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(body.size_hint().exact().unwrap_or(0).min(max as u64) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.is::<BodyReadTimeout>() {
                // `timeouts.body_read` is counted by the server loop.
                return Error { status: StatusCode::REQUEST_TIMEOUT, reason: None, message: e.to_string() };
            }
            error(StatusCode::BAD_REQUEST, "body_read", format!("reading the request body failed: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// Inflates a gzip body, stopping one byte past `max`: a gzip bomb costs at most `max` bytes
/// of memory and the time to inflate them.
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity((body.len() * 4).min(max));
    let mut dec = flate2::read::GzDecoder::new(body).take(max as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_gzip", format!("invalid gzip body: {e}")))?;
    if out.len() > max {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large_decompressed",
            format!("body larger than {max} bytes after gzip decompression"),
        ));
    }
    Ok(out)
}

fn success(signal: Signal, encoding: Encoding, rejected: &Rejected) -> Response<Full<Bytes>> {
    let msg = rejected.message();
    let n = rejected.count as i64;
    let body = match (signal, encoding) {
        (Signal::Traces, Encoding::Protobuf) => ExportTraceServiceResponse {
            partial_success: (n > 0)
                .then(|| ExportTracePartialSuccess { rejected_spans: n, error_message: msg.clone() }),
        }
        .encode_to_vec(),
        (Signal::Logs, Encoding::Protobuf) => ExportLogsServiceResponse {
            partial_success: (n > 0)
                .then(|| ExportLogsPartialSuccess { rejected_log_records: n, error_message: msg.clone() }),
        }
        .encode_to_vec(),
        (Signal::Traces, Encoding::Json) => json::response("rejectedSpans", rejected.count, &msg),
        (Signal::Logs, Encoding::Json) => json::response("rejectedLogRecords", rejected.count, &msg),
    };
    response(StatusCode::OK, encoding, body)
}

fn error_response(status: StatusCode, message: &str, encoding: Encoding) -> Response<Full<Bytes>> {
    let body = match encoding {
        Encoding::Protobuf => {
            RpcStatus { code: grpc_code(status), message: message.to_owned(), details: Vec::new() }
                .encode_to_vec()
        }
        Encoding::Json => {
            serde_json::json!({ "code": grpc_code(status), "message": message }).to_string().into_bytes()
        }
    };
    response(status, encoding, body)
}

/// The `google.rpc.Code` that matches an HTTP status, for the `Status` body.
fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST => 3,          // INVALID_ARGUMENT
        StatusCode::NOT_FOUND => 5,            // NOT_FOUND
        StatusCode::TOO_MANY_REQUESTS => 8,    // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        StatusCode::PAYLOAD_TOO_LARGE => 8,    // RESOURCE_EXHAUSTED
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::UNSUPPORTED_MEDIA_TYPE => 12, // UNIMPLEMENTED
        _ => 2,                                // UNKNOWN
    }
}

fn response(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
    resp
}
