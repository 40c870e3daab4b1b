//! Issue 13, "slow and silent clients starve the listeners": every listener of the agent (OTLP
//! over HTTP and gRPC, the tail sink, the Lambda Telemetry listener) runs on one server loop,
//! so one attack helper is run against each of them in a real agent with real sockets:
//! connections that send nothing, requests that send their headers and then trickle the
//! body, and HTTP/2 connections idle after the preface. Each must be closed after its
//! timeout, a normal client must be served while they are open, and once they have filled
//! `max_connections` the slots must come back.

mod tail_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tail_support::{DEADLINE, Reaper, TOKEN, collect, wait_for};

const LIMITS: &str = "max_connections = 8\n";
const LISTENER: &str = "header_read_timeout_secs = 1\nbody_read_timeout_secs = 1\nidle_timeout_secs = 1\n\
                        http2_keep_alive_interval_secs = 1\nhttp2_keep_alive_timeout_secs = 1\n";

fn config() -> String {
    format!(
        r#"
[sources.otlp]
type = "otlp"
grpc_address = "127.0.0.1:0"
http_address = "127.0.0.1:0"
{LIMITS}
[sources.otlp.listener]
{LISTENER}

[sources.tel]
type = "lambda_telemetry"
port = 0
address = "127.0.0.1"
{LIMITS}
[sources.tel.listener]
{LISTENER}

[sinks.live]
type = "tail"
inputs = ["otlp", "tel"]
allow_unredacted = true
address = "127.0.0.1:0"
token = "${{SEALTRAIL_TAIL_TOKEN}}"
max_clients = 8
{LIMITS}
[sinks.live.listener]
{LISTENER}
"#
    )
}

/// The text after `key` up to the next space, quote or comma, in a log line.
fn field(line: &str, key: &str) -> String {
    let rest = line.split(key).nth(1).unwrap_or_else(|| panic!("no {key:?} in {line:?}"));
    rest.trim_start_matches(['=', ':', ' ', '"'])
        .split([' ', '"', ',', '}'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// One plain HTTP/1.1 exchange with `Connection: close`: `true` when a response came back.
fn served(addr: SocketAddr, request: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    resp.starts_with(b"HTTP/1.1 ")
}

/// A connection that the attacker holds open; `closed_by_server` waits for the agent to
/// close it.
struct Attacker {
    stream: TcpStream,
    what: &'static str,
    stop: Arc<AtomicBool>,
}

impl Attacker {
    /// Connects and sends nothing.
    fn silent(addr: SocketAddr) -> Attacker {
        let stream = TcpStream::connect(addr).unwrap();
        Attacker { stream, what: "silent connection", stop: Arc::default() }
    }

    /// Sends the headers of a POST announcing 100,000 bytes, then one byte every 100 ms.
    fn trickle(addr: SocketAddr, path: &str) -> Attacker {
        let mut stream = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n["
        );
        stream.write_all(head.as_bytes()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (mut w, flag) = (stream.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) && w.write_all(b" ").is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Attacker { stream, what: "trickled body", stop }
    }

    /// Sends the HTTP/2 preface and an empty SETTINGS frame, then nothing.
    fn h2_idle(addr: SocketAddr) -> Attacker {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
        Attacker { stream, what: "idle HTTP/2 connection", stop: Arc::default() }
    }

    /// Reads until the agent closes the connection; panics after [`DEADLINE`].
    fn closed_by_server(mut self, listener: &str) {
        let end = Instant::now() + DEADLINE;
        self.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    assert!(Instant::now() < end, "{listener}: the {} was never closed", self.what);
                }
                Err(_) => break, // reset by the agent
            }
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The attack on one listener: under the cap, a normal client is served while two of each
/// attacker are open; then silent connections fill the cap, and the timeouts must free it.
fn attack(listener: &str, addr: SocketAddr, path: &str, normal: &str) {
    let mut attackers = Vec::new();
    for _ in 0..2 {
        attackers.push(Attacker::silent(addr));
        attackers.push(Attacker::trickle(addr, path));
        attackers.push(Attacker::h2_idle(addr));
    }
    assert!(served(addr, normal), "{listener}: a normal client was not served during the attack");
    // Fill the cap (8): new connections are refused until the timeouts close the attackers.
    attackers.push(Attacker::silent(addr));
    attackers.push(Attacker::silent(addr));
    let end = Instant::now() + DEADLINE;
    while !served(addr, normal) {
        assert!(Instant::now() < end, "{listener}: the attackers kept every connection slot");
        std::thread::sleep(Duration::from_millis(100));
    }
    for a in attackers {
        a.closed_by_server(listener);
    }
    assert!(served(addr, normal), "{listener}: not served after the attack");
}

#[test]
fn slow_and_silent_clients_are_closed_and_normal_clients_keep_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config()).unwrap();
    let mut child = std::process::Command::new(tail_support::BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("SEALTRAIL_TAIL_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .env("SEALTRAIL_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let child = Reaper(child);
    let mut log = Vec::new();
    let mut grpc = None;
    let mut http = None;
    let mut tel = None;
    let mut tail = None;
    while grpc.is_none() || http.is_none() || tel.is_none() || tail.is_none() {
        let line = wait_for(&stderr, &mut log, "");
        if line.contains("OTLP/gRPC listening") {
            grpc = Some(field(&line, "address").parse::<SocketAddr>().unwrap());
        } else if line.contains("OTLP/HTTP listening") {
            http = Some(field(&line, "address").parse::<SocketAddr>().unwrap());
        } else if line.contains("telemetry listener ready") {
            let port: u16 = field(&line, "port").parse().unwrap();
            tel = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        } else if line.contains("listening on http://") {
            tail = Some(field(&line, "http://").parse::<SocketAddr>().unwrap());
        }
    }
    let close = "Host: x\r\nConnection: close\r\n";
    attack(
        "OTLP/HTTP",
        http.unwrap(),
        "/v1/logs",
        &format!(
            "POST /v1/logs HTTP/1.1\r\n{close}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        ),
    );
    attack("OTLP/gRPC", grpc.unwrap(), "/x", &format!("GET /x HTTP/1.1\r\n{close}\r\n"));
    attack(
        "Lambda Telemetry",
        tel.unwrap(),
        "/",
        &format!("POST / HTTP/1.1\r\n{close}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"),
    );
    attack("tail", tail.unwrap(), "/v1/tail", &format!("GET /v1/health HTTP/1.1\r\n{close}\r\n"));
    drop(child);
}
