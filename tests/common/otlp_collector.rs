//! A test-side OTLP/HTTP collector on a real socket (HTTP/1.1, `Content-Length` bodies, as
//! the agent's exporters send them) and the helpers that decode what it received with
//! `opentelemetry-proto`. Shared by the `[telemetry]` tests of `sealtrail run`
//! (`tests/telemetry.rs`) and of the Lambda extension (`tests/lambda_telemetry.rs`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};

/// One request the collector received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A test-side OTLP/HTTP receiver on a real socket. `silent` never answers (a hung
/// collector).
pub struct Collector {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    pub fn start(silent: bool) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (connections.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                std::thread::spawn(move || serve(stream, silent, &r));
            }
        });
        Collector { addr, connections, received }
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.received.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }
}

fn serve(stream: TcpStream, silent: bool, received: &Mutex<Vec<Received>>) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        received.lock().unwrap().push(Received { path, headers, body });
        if silent {
            // Hold the connection without a word until the client gives up.
            let _ = reader.read_to_end(&mut Vec::new());
            return;
        }
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        );
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

pub fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The latest value of cumulative counter `metric` for the data point whose attributes
/// include every `(key, value)` of `want`.
pub fn metric_value(
    requests: &[ExportMetricsServiceRequest],
    metric: &str,
    want: &[(&str, &str)],
) -> Option<i64> {
    let mut last = None;
    for r in requests {
        for rm in &r.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in sm.metrics.iter().filter(|m| m.name == metric) {
                    let Some(metric::Data::Sum(sum)) = &m.data else { panic!("{metric} is not a sum") };
                    assert!(sum.is_monotonic, "{metric}");
                    for p in &sum.data_points {
                        if want.iter().all(|(k, v)| str_attr(&p.attributes, k) == Some(*v)) {
                            if let Some(number_data_point::Value::AsInt(v)) = p.value {
                                last = Some(v);
                            }
                        }
                    }
                }
            }
        }
    }
    last
}
