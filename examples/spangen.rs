//! Sends realistic traces to a running agent's OTLP/HTTP endpoint, for the spans case of
//! `scripts/bench-e2e.sh`: `--traces N` traces of 4 to 12 spans each (a server root span with
//! client and database children, as a service mesh reports them), random 128-bit trace ids,
//! spans of a trace sent together and traces interleaved in time, in requests of about 500
//! spans. Prints the trace id of one trace in the middle of the run (the one the script
//! queries) and its span count on standard output.
//!
//! ```text
//! cargo run --release --example spangen -- --traces 200000 --url 127.0.0.1:4318
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use prost::Message;
use sealtrail::otlp::ExportTraceServiceRequest;
use sealtrail::otlp::proto::{common, resource, trace};

const SERVICES: &[&str] = &["checkout", "billing", "api-gateway", "orders", "auth", "search", "ledger"];
const ROUTES: &[&str] = &["/api/orders", "/api/cart", "/api/payments", "/api/users", "/api/search"];
const TABLES: &[&str] = &["orders", "order_items", "customers", "payments", "inventory"];

/// SplitMix64: deterministic for a seed, no `rand` release can change it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

fn s(v: String) -> common::AnyValue {
    common::AnyValue { value: Some(common::any_value::Value::StringValue(v)) }
}
fn i(v: i64) -> common::AnyValue {
    common::AnyValue { value: Some(common::any_value::Value::IntValue(v)) }
}
fn kv(k: &str, v: common::AnyValue) -> common::KeyValue {
    common::KeyValue { key: k.into(), value: Some(v), key_strindex: 0 }
}

/// One trace: a server span and its children, starting at `t0` (Unix nanoseconds).
fn trace_spans(rng: &mut Rng, t0: u64, out: &mut Vec<trace::Span>) -> [u8; 16] {
    let mut tid = [0u8; 16];
    tid[..8].copy_from_slice(&rng.next().to_be_bytes());
    tid[8..].copy_from_slice(&rng.next().to_be_bytes());
    let root_id = rng.next().to_be_bytes();
    let route = rng.pick(ROUTES);
    let order = 1000 + rng.below(900_000);
    let children = 3 + rng.below(10);
    let total = 2_000_000 + rng.below(200_000_000) as u64;
    let status = if rng.below(50) == 0 { 2 } else { 1 };
    out.push(trace::Span {
        trace_id: tid.to_vec(),
        span_id: root_id.to_vec(),
        name: format!("GET {route}/{{id}}"),
        kind: 2,
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + total,
        attributes: vec![
            kv("http.request.method", s("GET".into())),
            kv("url.path", s(format!("{route}/{order}"))),
            kv("http.response.status_code", i(if status == 2 { 500 } else { 200 })),
            kv("client.address", s(format!("10.{}.{}.{}", rng.below(256), rng.below(256), rng.below(256)))),
        ],
        status: Some(trace::Status {
            code: status,
            message: if status == 2 { "upstream timeout after 30000ms".into() } else { String::new() },
        }),
        ..Default::default()
    });
    for c in 0..children {
        let start = t0 + (total / (children as u64 + 1)) * c as u64;
        let dur = total / (children as u64 + 2);
        let db = rng.below(2) == 0;
        let table = rng.pick(TABLES);
        out.push(trace::Span {
            trace_id: tid.to_vec(),
            span_id: rng.next().to_be_bytes().to_vec(),
            parent_span_id: root_id.to_vec(),
            name: if db { format!("SELECT {table}") } else { format!("POST /internal/{table}") },
            kind: 3,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            attributes: if db {
                vec![
                    kv("db.system", s("postgresql".into())),
                    kv(
                        "db.statement",
                        s(format!("SELECT * FROM {table} WHERE order_id = $1 LIMIT {}", 1 + c)),
                    ),
                ]
            } else {
                vec![
                    kv("http.request.method", s("POST".into())),
                    kv("server.address", s(format!("{table}.internal.svc.cluster.local"))),
                ]
            },
            status: Some(trace::Status { code: 1, message: String::new() }),
            ..Default::default()
        });
    }
    tid
}

fn post(addr: &str, body: &[u8]) -> std::io::Result<()> {
    for attempt in 0.. {
        let mut conn = TcpStream::connect(addr)?;
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(body)?;
        let mut resp = Vec::new();
        conn.read_to_end(&mut resp)?;
        let status = resp.get(9..12).unwrap_or_default();
        match status {
            b"200" => return Ok(()),
            // The pipeline is full ("retry later"): back off and send the request again.
            b"429" | b"503" if attempt < 1000 => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                return Err(std::io::Error::other(format!(
                    "the agent answered {}",
                    String::from_utf8_lossy(&resp[..resp.len().min(200)])
                )));
            }
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut traces = 100_000usize;
    let mut url = "127.0.0.1:4318".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--traces" => traces = args.next().ok_or("--traces N")?.parse()?,
            "--url" => url = args.next().ok_or("--url HOST:PORT")?,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let mut rng = Rng(7);
    let mut t0 = 1_795_000_000_000_000_000u64;
    let mut spans = Vec::new();
    let (mut sent, mut picked) = (0usize, None);
    let mut service = 0;
    for n in 0..traces {
        let before = spans.len();
        let tid = trace_spans(&mut rng, t0, &mut spans);
        if n == traces / 2 {
            picked = Some((tid, spans.len() - before));
        }
        t0 += 1_000_000 + rng.below(5_000_000) as u64;
        if spans.len() >= 500 || n + 1 == traces {
            let req = ExportTraceServiceRequest {
                resource_spans: vec![trace::ResourceSpans {
                    resource: Some(resource::Resource {
                        attributes: vec![kv("service.name", s(SERVICES[service % SERVICES.len()].into()))],
                        ..Default::default()
                    }),
                    scope_spans: vec![trace::ScopeSpans {
                        scope: Some(common::InstrumentationScope {
                            name: "io.opentelemetry.http".into(),
                            ..Default::default()
                        }),
                        spans: std::mem::take(&mut spans),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            service += 1;
            post(&url, &req.encode_to_vec())?;
            sent += req.resource_spans[0].scope_spans[0].spans.len();
        }
    }
    let (tid, n) = picked.ok_or("no traces generated")?;
    println!("{} {n}", hex::encode(tid));
    eprintln!("spangen: {sent} spans in {traces} traces");
    Ok(())
}
