//! The Extensions API client (version `2020-01-01`) and the Telemetry API subscription call:
//! register, `event/next`, `init/error`, `exit/error`, and `PUT /2022-07-01/telemetry`.
//!
//! HTTP/1.1 through the agent's one HTTP client ([`crate::net::client`]) with a fresh loopback
//! connection per call ([`Pool::Never`]): the calls are few (one `next` per invoke), and a fresh connection can never be a stale one
//! that the platform closed while the environment was frozen.
//!
//! Where the documentation and AWS's emulator disagree (see the reference), both forms are
//! accepted: `shutdownReason` in any letter case, `deadlineMs` as a number or a string.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;

use crate::net::client::{Client as HttpClient, ClientError, Connector, Endpoint, Pool};

/// The largest response body read from the platform.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How long a call other than `next` may take: the whole Init phase has 10 s.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// An error from the Lambda APIs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No connection to `AWS_LAMBDA_RUNTIME_API`.
    #[error("cannot connect to the Lambda Runtime API at {addr}: {detail}")]
    Connect { addr: String, detail: String },
    /// The connection broke or the response was not HTTP.
    #[error("{what}: HTTP error: {source}")]
    Http { what: &'static str, source: ClientError },
    /// The call took longer than allowed.
    #[error("{what}: no answer within {timeout:?}")]
    Timeout { what: &'static str, timeout: Duration },
    /// The platform answered with an error status.
    #[error("{what} refused with HTTP {status}: {error_type}: {message}")]
    Refused { what: &'static str, status: u16, error_type: String, message: String },
    /// The platform answered success with something we cannot use.
    #[error("{what}: unexpected response: {detail}")]
    BadResponse { what: &'static str, detail: String },
}

/// A lifecycle event from `event/next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    Invoke { request_id: String, deadline_ms: u64, trace: Option<String> },
    Shutdown { reason: String, deadline_ms: u64 },
}

/// What `register` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The `Lambda-Extension-Identifier` to send on every later call.
    pub id: String,
    pub function_name: Option<String>,
    pub function_version: Option<String>,
    pub account_id: Option<String>,
}

/// How the Telemetry API answered a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscribed {
    /// 200 (or a plain 202).
    Yes,
    /// 202 with an error body: AWS's classic emulator stubs the Telemetry API this way
    /// (`Telemetry.NotSupported`). No telemetry will arrive; the agent keeps running.
    NotSupported(String),
}

/// A client of the Extensions and Telemetry APIs at `AWS_LAMBDA_RUNTIME_API`.
#[derive(Clone)]
pub struct Client {
    addr: String,
    /// The agent's HTTP client with a fresh connection per call; `Err` holds why `addr` is
    /// not `host:port` (reported by the first call).
    http: Result<(Endpoint, HttpClient), String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("addr", &self.addr).finish_non_exhaustive()
    }
}

struct Response {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Client {
    /// A client for `host:port` (the value of `AWS_LAMBDA_RUNTIME_API`).
    pub fn new(addr: impl Into<String>) -> Client {
        let addr = addr.into();
        let http = Endpoint::parse(&format!("http://{addr}"), "AWS_LAMBDA_RUNTIME_API")
            .and_then(|endpoint| {
                let connector = Connector::new(&endpoint, None, &[])?;
                Ok((endpoint, HttpClient::new(connector, Pool::Never)))
            })
            .map_err(|e| format!("{e:#}"));
        Client { addr, http }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `POST /2020-01-01/extension/register` for INVOKE and SHUTDOWN.
    pub async fn register(&self, name: &str) -> Result<Registration, ApiError> {
        const WHAT: &str = "extension registration";
        let body = br#"{"events":["INVOKE","SHUTDOWN"]}"#;
        let r = self
            .call(
                WHAT,
                Method::POST,
                "/2020-01-01/extension/register",
                &[
                    ("Lambda-Extension-Name", name),
                    ("Lambda-Extension-Accept-Feature", "accountId"),
                    ("Content-Type", "application/json"),
                ],
                Bytes::from_static(body),
                Some(CALL_TIMEOUT),
            )
            .await?;
        if r.status != StatusCode::OK {
            return Err(refused(WHAT, &r));
        }
        let id = r
            .headers
            .get("Lambda-Extension-Identifier")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::BadResponse {
                what: WHAT,
                detail: "no Lambda-Extension-Identifier header".into(),
            })?
            .to_owned();
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            function_name: Option<String>,
            function_version: Option<String>,
            account_id: Option<String>,
        }
        // The body is informational: an empty or odd one does not fail registration.
        let b: Body = serde_json::from_slice(&r.body).unwrap_or_default();
        Ok(Registration {
            id,
            function_name: b.function_name,
            function_version: b.function_version,
            account_id: b.account_id,
        })
    }

    /// `GET /2020-01-01/extension/event/next`: blocks until the next event (no timeout, as
    /// the documentation requires).
    pub async fn next(&self, id: &str) -> Result<LifecycleEvent, ApiError> {
        const WHAT: &str = "event/next";
        let r = self
            .call(
                WHAT,
                Method::GET,
                "/2020-01-01/extension/event/next",
                &[("Lambda-Extension-Identifier", id)],
                Bytes::new(),
                None,
            )
            .await?;
        if r.status != StatusCode::OK {
            return Err(refused(WHAT, &r));
        }
        parse_event(&r.body).map_err(|detail| ApiError::BadResponse { what: WHAT, detail })
    }

    /// `PUT /2022-07-01/telemetry` with the given subscription body.
    pub async fn subscribe(
        &self,
        id: &str,
        subscription: &serde_json::Value,
    ) -> Result<Subscribed, ApiError> {
        const WHAT: &str = "telemetry subscription";
        let body = Bytes::from(subscription.to_string());
        let r = self
            .call(
                WHAT,
                Method::PUT,
                "/2022-07-01/telemetry",
                &[("Lambda-Extension-Identifier", id), ("Content-Type", "application/json")],
                body,
                Some(CALL_TIMEOUT),
            )
            .await?;
        match r.status {
            StatusCode::OK => Ok(Subscribed::Yes),
            StatusCode::ACCEPTED => match error_body(&r.body) {
                Some((t, m)) => Ok(Subscribed::NotSupported(format!("{t}: {m}"))),
                None => Ok(Subscribed::Yes),
            },
            _ => Err(refused(WHAT, &r)),
        }
    }

    /// `POST /2020-01-01/extension/init/error`.
    pub async fn init_error(&self, id: &str, error_type: &str, message: &str) -> Result<(), ApiError> {
        self.report("init/error", "/2020-01-01/extension/init/error", id, error_type, message).await
    }

    /// `POST /2020-01-01/extension/exit/error`.
    pub async fn exit_error(&self, id: &str, error_type: &str, message: &str) -> Result<(), ApiError> {
        self.report("exit/error", "/2020-01-01/extension/exit/error", id, error_type, message).await
    }

    async fn report(
        &self,
        what: &'static str,
        path: &str,
        id: &str,
        error_type: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let body = serde_json::json!({"errorMessage": message, "errorType": error_type, "stackTrace": []});
        let r = self
            .call(
                what,
                Method::POST,
                path,
                &[
                    ("Lambda-Extension-Identifier", id),
                    ("Lambda-Extension-Function-Error-Type", error_type),
                    ("Content-Type", "application/json"),
                ],
                Bytes::from(body.to_string()),
                Some(CALL_TIMEOUT),
            )
            .await?;
        if r.status.is_success() { Ok(()) } else { Err(refused(what, &r)) }
    }

    async fn call(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Response, ApiError> {
        let fut = self.call_inner(what, method, path, headers, body);
        match timeout {
            None => fut.await,
            Some(t) => {
                tokio::time::timeout(t, fut).await.map_err(|_| ApiError::Timeout { what, timeout: t })?
            }
        }
    }

    async fn call_inner(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let (endpoint, http) = self
            .http
            .as_ref()
            .map_err(|detail| ApiError::Connect { addr: self.addr.clone(), detail: detail.clone() })?;
        let mut req = Request::builder().method(method).uri(endpoint.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ApiError::BadResponse { what, detail: format!("cannot build the request: {e}") })?;
        let resp = http.send_collect(req, MAX_RESPONSE_BYTES).await.map_err(|e| match e {
            ClientError::Connect(detail) => ApiError::Connect { addr: self.addr.clone(), detail },
            ClientError::Body(detail) => {
                ApiError::BadResponse { what, detail: format!("reading the body: {detail}") }
            }
            source => ApiError::Http { what, source },
        })?;
        let (parts, body) = resp.into_parts();
        Ok(Response { status: parts.status, headers: parts.headers, body })
    }
}

/// The error of a non-success response, with the platform's `errorType` and `errorMessage`
/// when the body has them (truncated, control characters escaped: it goes to our log).
fn refused(what: &'static str, r: &Response) -> ApiError {
    let (error_type, message) = error_body(&r.body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&r.body[..r.body.len().min(256)]).into_owned();
        ("(no errorType)".to_owned(), text)
    });
    ApiError::Refused {
        what,
        status: r.status.as_u16(),
        error_type: clean(&error_type),
        message: clean(&message),
    }
}

fn error_body(body: &[u8]) -> Option<(String, String)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct E {
        error_type: Option<String>,
        error_message: Option<String>,
    }
    let e: E = serde_json::from_slice(body).ok()?;
    if e.error_type.is_none() && e.error_message.is_none() {
        return None;
    }
    Some((e.error_type.unwrap_or_default(), e.error_message.unwrap_or_default()))
}

fn clean(s: &str) -> String {
    s.chars().take(300).flat_map(char::escape_debug).collect::<String>()
}

/// Parses an `event/next` body. Accepts `eventType` and `shutdownReason` in any letter case
/// and `deadlineMs` as a number or a numeric string (the documentation shows a string, the
/// emulator sends a number).
pub fn parse_event(body: &[u8]) -> Result<LifecycleEvent, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        event_type: String,
        #[serde(default)]
        deadline_ms: Option<serde_json::Value>,
        #[serde(default)]
        request_id: Option<String>,
        #[serde(default)]
        tracing: Option<Tracing>,
        #[serde(default)]
        shutdown_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct Tracing {
        #[serde(default)]
        value: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("invalid event JSON: {e}"))?;
    let deadline_ms = match raw.deadline_ms {
        None => 0,
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or_else(|| format!("invalid deadlineMs {n}"))?,
        Some(serde_json::Value::String(s)) => {
            s.trim().parse::<u64>().map_err(|_| format!("invalid deadlineMs {:?}", clean(&s)))?
        }
        Some(other) => return Err(format!("invalid deadlineMs {other}")),
    };
    if raw.event_type.eq_ignore_ascii_case("INVOKE") {
        Ok(LifecycleEvent::Invoke {
            request_id: raw.request_id.unwrap_or_default(),
            deadline_ms,
            trace: raw.tracing.and_then(|t| t.value).filter(|v| !v.is_empty()),
        })
    } else if raw.event_type.eq_ignore_ascii_case("SHUTDOWN") {
        Ok(LifecycleEvent::Shutdown {
            reason: raw.shutdown_reason.unwrap_or_default().to_ascii_lowercase(),
            deadline_ms,
        })
    } else {
        Err(format!("unknown eventType {:?}", clean(&raw.event_type)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_events_parse_with_and_without_tracing() {
        let e = parse_event(br#"{"eventType":"INVOKE","deadlineMs":676051,"requestId":"3da1","invokedFunctionArn":"arn","tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5f35ae12-0c0fec141ab77a00bc047aa2"}}"#).unwrap();
        assert_eq!(
            e,
            LifecycleEvent::Invoke {
                request_id: "3da1".into(),
                deadline_ms: 676051,
                trace: Some("Root=1-5f35ae12-0c0fec141ab77a00bc047aa2".into())
            }
        );
        let e = parse_event(br#"{"eventType":"invoke","deadlineMs":"5","requestId":"r"}"#).unwrap();
        assert_eq!(e, LifecycleEvent::Invoke { request_id: "r".into(), deadline_ms: 5, trace: None });
    }

    #[test]
    fn shutdown_reason_any_case_and_deadline_number_or_string() {
        for body in [
            r#"{"eventType":"SHUTDOWN","deadlineMs":1700000002000,"shutdownReason":"spindown"}"#,
            r#"{"eventType":"SHUTDOWN","deadlineMs":"1700000002000","shutdownReason":"SPINDOWN"}"#,
            r#"{"eventType":"Shutdown","deadlineMs":1700000002000.0,"shutdownReason":"SpinDown"}"#,
        ] {
            assert_eq!(
                parse_event(body.as_bytes()).unwrap(),
                LifecycleEvent::Shutdown { reason: "spindown".into(), deadline_ms: 1_700_000_002_000 }
            );
        }
    }

    #[test]
    fn bad_events_are_errors_not_panics() {
        assert!(parse_event(b"").is_err());
        assert!(parse_event(br#"{"eventType":"PAUSE"}"#).unwrap_err().contains("PAUSE"));
        assert!(parse_event(br#"{"eventType":"SHUTDOWN","deadlineMs":"soon"}"#).is_err());
        assert!(parse_event(br#"{"eventType":"SHUTDOWN","deadlineMs":-1}"#).is_err());
        assert!(parse_event(br#"{"eventType":"SHUTDOWN","deadlineMs":[1]}"#).is_err());
    }

    #[test]
    fn error_bodies_are_read_and_cleaned() {
        assert_eq!(
            error_body(br#"{"errorMessage":"m","errorType":"Extension.X"}"#),
            Some(("Extension.X".into(), "m".into()))
        );
        assert_eq!(error_body(b"\"OK\""), None);
        assert_eq!(clean("a\nb"), "a\\nb");
    }
}
