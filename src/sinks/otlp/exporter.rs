//! The `otlp` sink's exporter: one connection (a tonic channel for gRPC, the pooled client for
//! OTLP/HTTP) and the retry loop, written once for both signals over [`Signal`].
//!
//! Retries follow the OTLP specification: gRPC `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`,
//! `OUT_OF_RANGE`, `UNAVAILABLE`, `DATA_LOSS`, and `RESOURCE_EXHAUSTED` only with a
//! `RetryInfo`; HTTP 429, 502, 503, 504, honouring `Retry-After`. Everything else is final.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use prost::Message;

use super::{Compression, OtlpSink, Protocol};
use crate::metrics::ComponentMetrics;
use crate::net::client::{Client, ClientError, Pool};
use crate::otlp::Signal;

/// The most bytes of an upstream's response body read back (an OTLP response is a few bytes).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How long an idle connection to the upstream is kept for the next batch.
const IDLE: Duration = Duration::from_secs(60);

/// Why one export attempt failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Worth retrying (after the server's delay, if it gave one).
    Retryable { reason: String, after: Option<Duration> },
    /// The upstream refused the data for good.
    Permanent { reason: String },
}

/// The connection state and the retry loop.
pub(super) struct Exporter {
    sink: OtlpSink,
    metrics: Arc<ComponentMetrics>,
    grpc: Option<tonic::transport::Channel>,
    /// The pooled HTTP client (keeps the connection alive between batches).
    http: Client,
}

impl Exporter {
    pub(super) fn new(sink: OtlpSink, metrics: Arc<ComponentMetrics>) -> Exporter {
        let timeout = sink.timeout;
        let grpc = (sink.config.protocol == Protocol::Grpc)
            .then(|| sink.connector.grpc_channel(&sink.endpoint.authority, timeout));
        let http = Client::new(sink.connector.clone().with_connect_timeout(timeout), Pool::KeepIdle(IDLE));
        Exporter { sink, metrics, grpc, http }
    }

    /// Exports the events of signal `S` among `chunk`, if there are any, retrying as
    /// configured; counts what was sent or dropped.
    pub(super) async fn export_signal<S: Signal>(&mut self, chunk: &[&crate::event::Event]) {
        let events = chunk.iter().filter(|e| S::carries(e)).count();
        if events > 0 {
            self.export(S::from_events(chunk.iter().copied()), events).await;
        }
    }

    async fn export<S: Signal>(&mut self, request: S, events: usize) {
        let (max_retries, max_backoff) = (self.sink.config.max_retries, self.sink.max_backoff);
        let mut backoff = self.sink.initial_backoff;
        let mut tries = 0u32;
        loop {
            match self.send(request.clone()).await {
                Ok(rejected) => {
                    self.metrics.add_out(events, 0);
                    if rejected > 0 {
                        self.metrics.add("upstream_rejected", rejected);
                    }
                    return;
                }
                Err(Failure::Retryable { reason, after }) if tries < max_retries => {
                    tries += 1;
                    self.metrics.add("retries", 1);
                    let delay = after.unwrap_or_else(|| jitter(backoff)).min(max_backoff);
                    tracing::debug!(
                        attempt = tries,
                        ?delay,
                        signal = S::NAME,
                        "export failed, retrying: {reason}"
                    );
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(Failure::Retryable { reason, .. }) | Err(Failure::Permanent { reason }) => {
                    self.metrics.add("dropped.export_failed", events as u64);
                    self.metrics.error("export");
                    tracing::warn!(
                        events,
                        retries = tries,
                        signal = S::NAME,
                        "export to the OTLP upstream failed; events dropped: {reason}"
                    );
                    return;
                }
            }
        }
    }

    /// One gRPC or HTTP attempt; returns the number of items the upstream rejected.
    async fn send<S: Signal>(&mut self, request: S) -> Result<u64, Failure> {
        match self.grpc.clone() {
            Some(channel) => self.grpc_unary(channel, request).await,
            None => {
                let body = self.http_post(S::HTTP_PATH, request.encode_to_vec()).await?;
                rejected_in::<S>(&body)
            }
        }
    }

    /// The unary `Export` call of `S`'s service, as the generated clients make it.
    async fn grpc_unary<S: Signal>(
        &self,
        channel: tonic::transport::Channel,
        request: S,
    ) -> Result<u64, Failure> {
        let mut grpc = tonic::client::Grpc::new(channel);
        if self.sink.config.compression == Compression::Gzip {
            grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        grpc.ready().await.map_err(|e| Failure::Retryable {
            reason: format!("the connection is not ready: {e}"),
            after: None,
        })?;
        let mut request = tonic::Request::new(request);
        *request.metadata_mut() = self.sink.headers.grpc.clone();
        let codec = tonic_prost::ProstCodec::<S, S::Response>::default();
        let path = http::uri::PathAndQuery::from_static(S::GRPC_PATH);
        let response = grpc.unary(request, path, codec).await.map_err(grpc_failure)?;
        Ok(S::rejected(response.get_ref()))
    }

    /// POSTs a protobuf body through the pooled client and returns the response body of a
    /// 2xx answer.
    async fn http_post(&mut self, suffix: &str, body: Vec<u8>) -> Result<Bytes, Failure> {
        let timeout = self.sink.timeout;
        match tokio::time::timeout(timeout, self.http_post_inner(suffix, body)).await {
            Ok(r) => r,
            Err(_) => {
                Err(Failure::Retryable { reason: format!("no answer within {timeout:?}"), after: None })
            }
        }
    }

    async fn http_post_inner(&mut self, suffix: &str, body: Vec<u8>) -> Result<Bytes, Failure> {
        let gzip = self.sink.config.compression == Compression::Gzip;
        let body = if gzip {
            // A compression failure must never send an empty body as if it were the data.
            gzip_bytes(&body)
                .map_err(|e| Failure::Permanent { reason: format!("gzip compression failed: {e}") })?
        } else {
            body
        };
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.sink.endpoint.url(suffix))
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Permanent { reason: format!("building the request: {e}") })?;
        if gzip {
            req.headers_mut().insert(http::header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
        }
        for (k, v) in &self.sink.headers.http {
            req.headers_mut().insert(k, v.clone());
        }
        let resp = match self.http.send_collect(req, MAX_RESPONSE_BYTES).await {
            Ok(r) => r,
            // A refused certificate will not change by retrying.
            Err(e @ ClientError::Tls(_)) => return Err(Failure::Permanent { reason: e.to_string() }),
            Err(e) => return Err(Failure::Retryable { reason: e.to_string(), after: None }),
        };
        let status = resp.status();
        let after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_success() {
            return Ok(resp.into_body());
        }
        let reason = format!("upstream answered {status}");
        match status.as_u16() {
            429 | 502 | 503 | 504 => Err(Failure::Retryable { reason, after }),
            _ => Err(Failure::Permanent { reason }),
        }
    }
}

/// The number of items an OTLP/HTTP success body says were rejected. A body that is not an
/// OTLP response is a failure, never "0 rejected": the sink cannot know what arrived.
pub(super) fn rejected_in<S: Signal>(body: &[u8]) -> Result<u64, Failure> {
    match S::Response::decode(body) {
        Ok(r) => Ok(S::rejected(&r)),
        Err(e) => Err(Failure::Permanent {
            reason: format!("upstream answered success with a body that is not an OTLP response ({e})"),
        }),
    }
}

/// The gRPC codes the OTLP specification lists as retryable.
pub(super) fn grpc_failure(s: tonic::Status) -> Failure {
    use tonic::Code::*;
    let msg: String = s.message().chars().take(200).collect();
    let reason = format!("upstream answered {:?}: {msg}", s.code());
    match s.code() {
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss => {
            Failure::Retryable { reason, after: None }
        }
        // Retryable only when the server says when (RetryInfo), per the specification.
        ResourceExhausted => match retry_delay(&s) {
            Some(after) => Failure::Retryable { reason, after: Some(after) },
            None => Failure::Permanent { reason },
        },
        _ => Failure::Permanent { reason },
    }
}

/// The `RetryInfo` delay of a status, if it carries one.
fn retry_delay(s: &tonic::Status) -> Option<Duration> {
    let status = crate::otlp::RpcStatus::decode(s.details()).ok()?;
    let any = status.details.iter().find(|d| d.type_url.ends_with("google.rpc.RetryInfo"))?;
    let info = crate::otlp::RetryInfo::decode(&any.value[..]).ok()?;
    let d = info.retry_delay?;
    Some(Duration::from_secs(d.seconds.max(0) as u64) + Duration::from_nanos(d.nanos.max(0) as u64))
}

/// A delay between `d/2` and `d`, so that many agents do not retry in lockstep.
pub(super) fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::random::<f64>() * 0.5 + 0.5;
    d.mul_f64(f)
}

fn gzip_bytes(b: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(b.len() / 4), flate2::Compression::fast());
    enc.write_all(b)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse};

    #[test]
    fn resource_exhausted_is_retried_only_with_retry_info() {
        let details = crate::otlp::retry_details(8, "full", 3);
        let with = tonic::Status::with_details(tonic::Code::ResourceExhausted, "full", details.into());
        assert!(
            matches!(grpc_failure(with), Failure::Retryable { after: Some(d), .. } if d == Duration::from_secs(3))
        );
        let without = tonic::Status::resource_exhausted("too big");
        assert!(matches!(grpc_failure(without), Failure::Permanent { .. }));
        assert!(matches!(
            grpc_failure(tonic::Status::unavailable("x")),
            Failure::Retryable { after: None, .. }
        ));
        assert!(matches!(grpc_failure(tonic::Status::invalid_argument("x")), Failure::Permanent { .. }));
    }

    /// Issue 11: an undecodable success body was counted as "0 rejected".
    #[test]
    fn an_undecodable_response_is_a_failure_not_zero_rejected() {
        let garbage = [0xff_u8, 0xff, 0xff];
        let r = rejected_in::<ExportLogsServiceRequest>(&garbage);
        assert!(
            matches!(r, Err(Failure::Permanent { ref reason }) if reason.contains("not an OTLP response"))
        );
        let ok = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: String::new(),
            }),
        };
        assert!(matches!(rejected_in::<ExportLogsServiceRequest>(&ok.encode_to_vec()), Ok(3)));
        assert!(matches!(rejected_in::<ExportLogsServiceRequest>(&[]), Ok(0)));
    }

    #[test]
    fn jitter_stays_within_half_and_full_delay() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100), "{d:?}");
        }
    }
}
