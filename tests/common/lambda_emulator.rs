//! An emulator of the AWS Lambda Extensions API (`/2020-01-01/extension/...`) and Telemetry
//! API (`PUT /2022-07-01/telemetry` plus delivery of batches to the subscriber), written from
//! `shared/reference/lambda-apis.md`, for driving the real `sealtrail` binary as a child
//! process through Init, invokes and SHUTDOWN.
//!
//! What it enforces, as the reference describes the platform: the `Lambda-Extension-Name`
//! and `Lambda-Extension-Identifier` headers (403 with the platform's error types), event
//! names, registration and subscription closing once Init ends (the first `next`), the
//! subscription body (schema version, types, buffering limits, an HTTP destination on
//! `sandbox.localdomain` or `sandbox`, which resolve to loopback here), the error-type header
//! of `init/error` and `exit/error`. Deliveries are POSTs of a JSON array with
//! `Content-Type: application/json` and a `Sequence-Id` header.
//!
//! Tests script the platform: [`Emulator::invoke`], [`Emulator::deliver`],
//! [`Emulator::shutdown`], and inspect what the extension did ([`Emulator::calls`],
//! [`Emulator::init_errors`], …).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How the emulated platform misbehaves, for the failure cases.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Answer register with this status and error type.
    pub refuse_register: Option<(u16, &'static str)>,
    /// Answer the telemetry subscription with this status and error type.
    pub refuse_subscribe: Option<(u16, &'static str)>,
    /// Answer the subscription like AWS's classic emulator: 202 `Telemetry.NotSupported`.
    pub stub_telemetry: bool,
    /// After this many events, answer `next` with 500 (a container error).
    pub fail_next_after: Option<usize>,
}

/// One request the extension made.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A reported error (`init/error` or `exit/error`).
#[derive(Debug, Clone)]
pub struct Reported {
    pub error_type: String,
    pub body: Value,
}

#[derive(Debug, Default)]
struct Inner {
    behaviour: Behaviour,
    /// (id, name)
    extensions: Vec<(String, String)>,
    init_done: bool,
    subscription: Option<(Value, u16, Instant)>,
    registered_at: Option<Instant>,
    events: VecDeque<Value>,
    /// How many `next` calls are waiting for an event.
    waiting: usize,
    /// How many `next` calls were answered.
    delivered_events: usize,
    calls: Vec<Call>,
    init_errors: Vec<Reported>,
    exit_errors: Vec<Reported>,
    deliveries: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: tokio::sync::Notify,
}

/// A running emulator on `127.0.0.1:<port>`.
pub struct Emulator {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    rt: tokio::runtime::Runtime,
}

const VALID_SCHEMAS: &[&str] = &["2022-07-01", "2022-12-13", "2025-01-29"];

impl Emulator {
    pub fn start(behaviour: Behaviour) -> Emulator {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("emulator runtime");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner { behaviour, ..Inner::default() }),
            changed: tokio::sync::Notify::new(),
        });
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind emulator");
        let addr = listener.local_addr().unwrap();
        let s = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(route(&s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Emulator { addr, shared, rt }
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let r = f(&mut self.shared.inner.lock().unwrap());
        self.shared.changed.notify_waiters();
        r
    }

    fn wait_until(&self, limit: Duration, mut f: impl FnMut(&Inner) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f(&self.shared.inner.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        f(&self.shared.inner.lock().unwrap())
    }

    /// Waits until the extension has subscribed; returns the subscription body and the
    /// destination port.
    pub fn wait_subscribed(&self, limit: Duration) -> Option<(Value, u16)> {
        self.wait_until(limit, |i| i.subscription.is_some());
        self.shared.inner.lock().unwrap().subscription.as_ref().map(|(v, p, _)| (v.clone(), *p))
    }

    /// When the extension registered and when it subscribed.
    pub fn init_times(&self) -> (Option<Instant>, Option<Instant>) {
        let i = self.shared.inner.lock().unwrap();
        (i.registered_at, i.subscription.as_ref().map(|s| s.2))
    }

    /// Waits until the extension is blocked in `next` with every queued event taken: it has
    /// finished Init, or handled the events so far.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        self.wait_until(limit, |i| i.waiting > 0 && i.events.is_empty())
    }

    /// Queues an INVOKE event.
    pub fn invoke(&self, request_id: &str, trace: Option<&str>) {
        let mut e = json!({
            "eventType": "INVOKE",
            "deadlineMs": epoch_ms() + 30_000,
            "requestId": request_id,
            "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:checkout",
        });
        if let Some(t) = trace {
            e["tracing"] = json!({"type": "X-Amzn-Trace-Id", "value": t});
        }
        self.with(|i| i.events.push_back(e));
    }

    /// Queues a SHUTDOWN event with `left` before its deadline; the reason in lower case as
    /// AWS's emulator sends it (`upper` for the documented form) and the deadline as a number.
    pub fn shutdown(&self, reason: &str, left: Duration) -> Instant {
        let e = json!({"eventType": "SHUTDOWN", "deadlineMs": epoch_ms() + left.as_millis() as u64, "shutdownReason": reason});
        self.with(|i| i.events.push_back(e));
        Instant::now() + left
    }

    /// Queues any event body (for the documented string form of `deadlineMs`, say).
    pub fn push_event(&self, e: Value) {
        self.with(|i| i.events.push_back(e));
    }

    /// POSTs a batch to the subscriber, as the platform does; returns the HTTP status (0 when
    /// the connection was refused or broke).
    pub fn deliver(&self, batch: &Value) -> u16 {
        self.deliver_raw(batch.to_string().into_bytes())
    }

    /// POSTs raw bytes to the subscriber.
    pub fn deliver_raw(&self, body: Vec<u8>) -> u16 {
        let port =
            self.shared.inner.lock().unwrap().subscription.as_ref().map(|s| s.1).expect("not subscribed");
        self.with(|i| i.deliveries += 1);
        let seq = {
            use base64::Engine;
            use sha2::Digest;
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body))
        };
        self.rt.block_on(async move {
            let addr = format!("127.0.0.1:{port}");
            let headers = [("Content-Type", "application/json"), ("Sequence-Id", seq.as_str())];
            let fut = http(&addr, Method::POST, "/", &headers, body);
            match tokio::time::timeout(Duration::from_secs(10), fut).await {
                Ok(Ok((status, _))) => status,
                _ => 0,
            }
        })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.inner.lock().unwrap().calls.clone()
    }

    pub fn calls_to(&self, path_suffix: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.path.ends_with(path_suffix)).collect()
    }

    pub fn init_errors(&self) -> Vec<Reported> {
        self.shared.inner.lock().unwrap().init_errors.clone()
    }

    pub fn exit_errors(&self) -> Vec<Reported> {
        self.shared.inner.lock().unwrap().exit_errors.clone()
    }

    /// How many events the extension has received from `next`.
    pub fn events_delivered(&self) -> usize {
        self.shared.inner.lock().unwrap().delivered_events
    }
}

/// Telemetry API records, in the platform's shapes.
pub mod records {
    use serde_json::{Value, json};

    /// `2006-01-02T15:04:05.000Z`, now.
    pub fn now() -> String {
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    pub fn platform_start(request_id: &str, trace: Option<&str>) -> Value {
        let mut r = json!({"requestId": request_id, "version": "$LATEST"});
        if let Some(t) = trace {
            r["tracing"] = json!({"spanId": "24cd7d670fa455f0", "type": "X-Amzn-Trace-Id", "value": t});
        }
        json!({"time": now(), "type": "platform.start", "record": r})
    }

    pub fn function_text(line: &str) -> Value {
        json!({"time": now(), "type": "function", "record": format!("{line}\n")})
    }

    pub fn function_json(request_id: &str, level: &str, message: &str) -> Value {
        json!({"time": now(), "type": "function", "record": {
            "timestamp": now(), "level": level, "requestId": request_id, "message": message, "logger": "root"}})
    }

    pub fn runtime_done(request_id: &str) -> Value {
        json!({"time": now(), "type": "platform.runtimeDone", "record": {
            "requestId": request_id, "status": "success",
            "metrics": {"durationMs": 12.5, "producedBytes": 20},
            "spans": [{"name": "responseLatency", "start": now(), "durationMs": 2.0}]}})
    }

    pub fn report(request_id: &str) -> Value {
        json!({"time": now(), "type": "platform.report", "record": {
            "requestId": request_id, "status": "success",
            "metrics": {"durationMs": 12.5, "billedDurationMs": 13, "memorySizeMB": 128, "maxMemoryUsedMB": 41}}})
    }

    pub fn init_start() -> Value {
        json!({"time": now(), "type": "platform.initStart", "record": {
            "initializationType": "on-demand", "phase": "init", "functionName": "checkout", "functionVersion": "$LATEST"}})
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn resp(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("Content-Type", "application/json".parse().unwrap());
    r
}

fn error(status: u16, error_type: &str, message: &str) -> Response<Full<Bytes>> {
    resp(status, json!({"errorMessage": message, "errorType": error_type}))
}

async fn route(s: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let call = Call { method: method.to_string(), path: path.clone(), headers, body, at: Instant::now() };
    s.inner.lock().unwrap().calls.push(call.clone());
    s.changed.notify_waiters();

    // The refusal for a missing or unknown extension id, if any.
    let unknown_id = |i: &Inner| -> Option<Response<Full<Bytes>>> {
        let Some(id) = call.header("Lambda-Extension-Identifier") else {
            return Some(error(
                403,
                "Extension.MissingExtensionIdentifier",
                "Missing Lambda-Extension-Identifier header",
            ));
        };
        if !i.extensions.iter().any(|(x, _)| x == id) {
            return Some(error(403, "Extension.UnknownExtensionIdentifier", "Unknown extension"));
        }
        None
    };

    match (method, path.as_str()) {
        (Method::POST, "/2020-01-01/extension/register") => {
            let mut i = s.inner.lock().unwrap();
            if let Some((status, t)) = i.behaviour.refuse_register {
                return error(status, t, "registration refused by the emulator");
            }
            let name = call.header("Lambda-Extension-Name").unwrap_or("");
            if name.is_empty() {
                return error(403, "Extension.InvalidExtensionName", "Empty extension name");
            }
            if i.init_done {
                return error(403, "Extension.RegistrationClosed", "Extension registration closed already");
            }
            let Ok(b) = serde_json::from_slice::<Value>(&call.body) else {
                return error(403, "InvalidRequestFormat", "invalid JSON");
            };
            if b.get("configurationKeys").is_some() {
                return error(403, "InvalidRequestFormat", "configurationKeys are deprecated");
            }
            for e in b.get("events").and_then(Value::as_array).into_iter().flatten() {
                if !matches!(e.as_str(), Some("INVOKE") | Some("SHUTDOWN")) {
                    return error(403, "Extension.InvalidEventType", "Unknown event type");
                }
            }
            let id = format!("{:08x}-0000-4000-8000-{:012x}", rand_u32(), i.extensions.len());
            i.extensions.push((id.clone(), name.to_owned()));
            i.registered_at = Some(Instant::now());
            let mut body =
                json!({"functionName": "checkout", "functionVersion": "$LATEST", "handler": "app.handler"});
            if call
                .header("Lambda-Extension-Accept-Feature")
                .is_some_and(|f| f.split(',').any(|x| x.trim() == "accountId"))
            {
                body["accountId"] = json!("123456789012");
            }
            let mut r = resp(200, body);
            r.headers_mut().insert("Lambda-Extension-Identifier", id.parse().unwrap());
            r
        }
        (Method::GET, "/2020-01-01/extension/event/next") => {
            {
                let mut i = s.inner.lock().unwrap();
                if let Some(r) = unknown_id(&i) {
                    return r;
                }
                i.init_done = true;
                if i.behaviour.fail_next_after.is_some_and(|n| i.delivered_events >= n) {
                    return error(500, "Extension.ContainerError", "Container error. Non-recoverable state.");
                }
                i.waiting += 1;
            }
            loop {
                let notified = s.changed.notified();
                {
                    let mut i = s.inner.lock().unwrap();
                    if let Some(e) = i.events.pop_front() {
                        i.waiting -= 1;
                        i.delivered_events += 1;
                        let mut r = resp(200, e);
                        r.headers_mut().insert(
                            "Lambda-Extension-Event-Identifier",
                            format!("{:08x}", rand_u32()).parse().unwrap(),
                        );
                        return r;
                    }
                }
                // Poll as well: a notification between the check and the wait is not lost.
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
            }
        }
        (Method::POST, p @ ("/2020-01-01/extension/init/error" | "/2020-01-01/extension/exit/error")) => {
            let mut i = s.inner.lock().unwrap();
            if let Some(r) = unknown_id(&i) {
                return r;
            }
            let Some(t) = call.header("Lambda-Extension-Function-Error-Type") else {
                return error(
                    403,
                    "Extension.MissingHeader",
                    "Missing Lambda-Extension-Function-Error-Type header",
                );
            };
            let rep = Reported {
                error_type: t.to_owned(),
                body: serde_json::from_slice(&call.body).unwrap_or(Value::Null),
            };
            if p.ends_with("init/error") {
                i.init_errors.push(rep);
            } else {
                i.exit_errors.push(rep);
            }
            resp(202, json!({"status": "OK"}))
        }
        (Method::PUT, "/2022-07-01/telemetry") => {
            let mut i = s.inner.lock().unwrap();
            if let Some(r) = unknown_id(&i) {
                return r;
            }
            if i.behaviour.stub_telemetry {
                return error(202, "Telemetry.NotSupported", "Telemetry API is not supported");
            }
            if let Some((status, t)) = i.behaviour.refuse_subscribe {
                return error(status, t, "subscription refused by the emulator");
            }
            if i.init_done {
                return error(403, "Telemetry.SubscriptionClosed", "Telemetry API subscription is closed");
            }
            match validate_subscription(&call.body) {
                Ok((v, port)) => {
                    i.subscription = Some((v, port, Instant::now()));
                    resp(200, json!("OK"))
                }
                Err(m) => error(400, "ValidationError", &m),
            }
        }
        _ => error(404, "NotFound", "no such path"),
    }
}

/// Checks a subscription body as the reference describes; returns it and the port.
fn validate_subscription(body: &[u8]) -> Result<(Value, u16), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let schema = v["schemaVersion"].as_str().ok_or("schemaVersion is required")?;
    if !VALID_SCHEMAS.contains(&schema) {
        return Err(format!("invalid schemaVersion {schema}"));
    }
    let types = v["types"].as_array().ok_or("types is required")?;
    if types.is_empty()
        || types.iter().any(|t| !matches!(t.as_str(), Some("platform" | "function" | "extension")))
    {
        return Err("invalid types".into());
    }
    if let Some(b) = v.get("buffering") {
        let check = |k: &str, lo: u64, hi: u64| -> Result<(), String> {
            match b.get(k) {
                None => Ok(()),
                Some(x) => match x.as_u64() {
                    Some(n) if (lo..=hi).contains(&n) => Ok(()),
                    _ => Err(format!("buffering.{k} out of range")),
                },
            }
        };
        check("maxItems", 1000, 10_000)?;
        check("maxBytes", 262_144, 1_048_576)?;
        check("timeoutMs", 25, 30_000)?;
    }
    let d = &v["destination"];
    if d["protocol"] != "HTTP" {
        return Err("destination.protocol must be HTTP here".into());
    }
    let uri = d["URI"].as_str().ok_or("destination.URI is required")?;
    let rest = uri.strip_prefix("http://").ok_or("destination.URI must be http://")?;
    let hostport = rest.split('/').next().unwrap_or("");
    let (host, port) = hostport.rsplit_once(':').ok_or("destination.URI needs a port")?;
    if host != "sandbox.localdomain" && host != "sandbox" {
        return Err(format!("destination host {host} is not sandbox.localdomain"));
    }
    let port: u16 = port.parse().map_err(|_| "bad port".to_owned())?;
    Ok((v, port))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(epoch_ms());
    h.finish() as u32
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn http(
    addr: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder().method(method).uri(path).header("Host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = send
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let b = r.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes().to_vec();
    Ok((status, b))
}
