//! Helpers of the OTLP integration tests: run the real `sealtrail` binary with an `otlp`
//! source on ephemeral ports, learn its addresses from its JSON log, read the events its
//! console sink prints, and talk to it with raw HTTP/1.1, raw HTTP/2 gRPC frames or tonic.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealtrail::otlp::proto::{common, logs, resource, trace};
use sealtrail::otlp::{ExportLogsServiceRequest, ExportTraceServiceRequest};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealtrail")
}

/// A running agent.
pub struct Agent {
    pub child: Child,
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Holds back the reading of standard output until [`Agent::resume_stdout`].
    gate: Option<mpsc::Sender<()>>,
}

/// A config with an otlp source on ephemeral ports and a JSON console sink.
pub fn console_config(extra_source: &str) -> String {
    format!(
        "[sources.in]\ntype = \"otlp\"\ngrpc_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\n{extra_source}\n\
         [sinks.out]\ntype = \"console\"\nencoding = \"json\"\ninputs = [\"in\"]\nallow_unredacted = true\n"
    )
}

impl Agent {
    /// Starts `sealtrail run` with `config` (written into `dir`) and waits until every
    /// listener of every otlp source is up.
    pub fn start(dir: &Path, name: &str, config: &str) -> Agent {
        Agent::start_with(dir, name, config, &[])
    }

    pub fn start_with(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> Agent {
        Agent::spawn(dir, name, config, env, false, None)
    }

    /// Starts the agent with its soft limit of open files lowered to `soft` (the common
    /// default of 1,024), so that it has to raise the limit itself.
    pub fn start_with_fd_limit(dir: &Path, name: &str, config: &str, soft: u64) -> Agent {
        Agent::spawn(dir, name, config, &[], false, Some(soft))
    }

    /// The agent's soft and hard limits of open files, from `/proc`.
    pub fn fd_limits(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        let n: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (n[0], n[1])
    }

    /// Starts the agent without reading its standard output: once the pipe is full its
    /// console sink blocks, as a slow sink would.
    pub fn start_stalled(dir: &Path, name: &str, config: &str) -> Agent {
        Agent::spawn(dir, name, config, &[], true, None)
    }

    /// Starts reading standard output (after [`Agent::start_stalled`]).
    pub fn resume_stdout(&mut self) {
        if let Some(g) = self.gate.take() {
            let _ = g.send(());
        }
    }

    fn spawn(
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
        stalled: bool,
        fd_soft: Option<u64>,
    ) -> Agent {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(bin());
        cmd.current_dir(dir)
            .args(["run", "--config", path.to_str().unwrap()])
            .env_remove("SEALTRAIL_CONFIG")
            .env("SEALTRAIL_KEYS", dir.join("keys"))
            .env("SEALTRAIL_DATA_DIR", dir.join("data"))
            .env("SEALTRAIL_LOG", "info")
            .env("SEALTRAIL_LOG_FORMAT", "json")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(soft) = fd_soft {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec only getrlimit/setrlimit run: async-signal-safe
            // system calls on a stack struct, no allocation, no locks.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                        lim.rlim_cur = soft.min(lim.rlim_max);
                        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start sealtrail");
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let (gate, gate_rx) = mpsc::channel::<()>();
        if !stalled {
            let _ = gate.send(());
        }
        std::thread::spawn(move || {
            let _ = gate_rx.recv();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push(line);
            }
        });
        let gate = stalled.then_some(gate);
        let mut agent = Agent { child, grpc: None, http: None, stdout, stderr, gate };
        let want_grpc = !config.contains("grpc_address = \"\"");
        let want_http = !config.contains("http_address = \"\"");
        let start = Instant::now();
        while (want_grpc && agent.grpc.is_none()) || (want_http && agent.http.is_none()) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "agent did not start: {}",
                agent.stderr_text()
            );
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("agent exited with {status}: {}", agent.stderr_text());
            }
            for line in agent.stderr.lock().unwrap().iter() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                let addr = v["fields"]["address"].as_str().and_then(|a| a.parse().ok());
                match v["fields"]["message"].as_str() {
                    Some("OTLP/gRPC listening") => agent.grpc = agent.grpc.or(addr),
                    Some("OTLP/HTTP listening") => agent.http = agent.http.or(addr),
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for `n` events on standard output (JSON lines).
    pub fn events(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        let start = Instant::now();
        let mut out = Vec::new();
        while out.len() < n {
            let left = limit.saturating_sub(start.elapsed());
            match self.stdout.recv_timeout(left) {
                Ok(line) => out.push(serde_json::from_str(&line).expect("console prints JSON")),
                Err(_) => panic!("got {} of {n} events; stderr: {}", out.len(), self.stderr_text()),
            }
        }
        out
    }

    /// Whatever is printed within `d`.
    pub fn events_for(&self, d: Duration) -> Vec<serde_json::Value> {
        let start = Instant::now();
        let mut out = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(d.saturating_sub(start.elapsed())) {
            out.push(serde_json::from_str(&line).unwrap());
        }
        out
    }

    /// Sends SIGTERM and waits for the exit; returns the status, the remaining events and
    /// the log.
    pub fn stop(mut self) -> (ExitStatus, Vec<serde_json::Value>, String) {
        self.resume_stdout();
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { kill(self.child.id() as i32, 15) };
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("agent did not stop: {}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest = self.events_for(Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(100));
        let log = self.stderr_text();
        (status, rest, log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// The value of a counter in the shutdown summary of component `component` (0 if absent).
pub fn counter(log: &str, component: &str, name: &str) -> u64 {
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["fields"]["component"].as_str() != Some(component) {
            continue;
        }
        let msg = v["fields"]["message"].as_str().unwrap_or("");
        for kv in msg.split(' ') {
            if let Some((k, n)) = kv.split_once('=') {
                if k == name {
                    return n.parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

/// A raw HTTP/1.1 exchange (`Connection: close`): returns the status, the headers (lower-case
/// names) and the body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) and close before the whole body is written.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse { status, headers, body: raw[split + 4..].to_vec() }
}

pub fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> HttpResponse {
    http_request(addr, "POST", path, &[("Content-Type", content_type)], body)
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn s(v: &str) -> common::AnyValue {
    common::AnyValue { value: Some(common::any_value::Value::StringValue(v.into())) }
}

pub fn kv(k: &str, v: common::AnyValue) -> common::KeyValue {
    common::KeyValue { key: k.into(), value: Some(v), key_strindex: 0 }
}

/// `n` spans of one trace: span `i` has id `[i+1; 8]`-ish and the first span as parent.
pub fn spans(trace_byte: u8, n: usize, attrs_per_span: usize) -> ExportTraceServiceRequest {
    let trace_id = vec![trace_byte; 16];
    let id = |i: usize| {
        let mut id = vec![trace_byte; 8];
        id[..4].copy_from_slice(&(i as u32 + 1).to_be_bytes());
        id
    };
    let spans = (0..n)
        .map(|i| {
            let (span_id, parent) = (id(i), if i == 0 { vec![] } else { id(0) });
            trace::Span {
                trace_id: trace_id.clone(),
                span_id,
                parent_span_id: parent,
                name: format!("op {i}"),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                end_time_unix_nano: 1_700_000_000_100_000_000 + i as u64,
                attributes: (0..attrs_per_span)
                    .map(|a| kv(&format!("attr.{a}"), s(&format!("value {a}"))))
                    .collect(),
                status: Some(trace::Status { code: 1, message: String::new() }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![trace::ResourceSpans {
            resource: Some(resource::Resource {
                attributes: vec![kv("service.name", s("checkout"))],
                ..Default::default()
            }),
            scope_spans: vec![trace::ScopeSpans {
                scope: Some(common::InstrumentationScope { name: "test".into(), ..Default::default() }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn log_records(bodies: &[&str]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![logs::ResourceLogs {
            resource: Some(resource::Resource {
                attributes: vec![kv("service.name", s("checkout"))],
                ..Default::default()
            }),
            scope_logs: vec![logs::ScopeLogs {
                scope: None,
                log_records: bodies
                    .iter()
                    .enumerate()
                    .map(|(i, b)| logs::LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(s(b)),
                        trace_id: vec![7; 16],
                        span_id: vec![8; 8],
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Generates a self-signed CA and a server certificate for `127.0.0.1`/`localhost` (and a
/// client certificate) with the openssl command-line tool, into `dir`.
pub fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    for name in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ]);
    }
}

/// The Python interpreter of the interop tests: `SEALTRAIL_PYTHON`, else the repository's
/// `.venv`. Panics with instructions when neither exists.
pub fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SEALTRAIL_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python for the interop tests: set SEALTRAIL_PYTHON to an interpreter with the packages of \
         tests/interop/requirements.txt, or create {} (python3 -m venv .venv && .venv/bin/pip install -r \
         tests/interop/requirements.txt); scripts/test.sh does this for you",
        venv.display()
    );
    venv
}

/// Runs `tests/interop/<script>` with `args`; returns its stdout parsed as JSON.
pub fn run_python(script: &str, args: &[&str]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(script);
    let out = Command::new(python()).arg(&path).args(args).output().expect("run python");
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} printed no JSON ({e})"))
}
