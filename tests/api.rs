//! `[api]` (issue 18): `GET /health`, `GET /ready` and `GET /metrics` of a running agent, over
//! real sockets, with the exposition parsed by the official Prometheus client's parser
//! (tests/interop/parse_metrics.py; the interpreter comes from `SEALTRAIL_PYTHON`, as for the
//! other interop tests).

mod common;

use common::python;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "api-token-0123456789abcdef";

/// A running agent with its `[api]` address and piped standard input.
struct Agent {
    child: Child,
    api: SocketAddr,
}

impl Agent {
    fn start(dir: &Path, api_section: &str) -> Agent {
        let config = format!(
            "data_dir = \"{data}\"\n{api_section}\n\
             [sources.in]\ntype = \"stdin\"\n\
             [transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\
             [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\n",
            data = dir.join("data").display()
        );
        let path = common::write(dir, "agent.toml", &config);
        let mut child = common::cmd(dir)
            .args(["run", "--config"])
            .arg(&path)
            .env("SEALTRAIL_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let api = common::api_address(&mut child);
        Agent { child, api }
    }

    fn send(&mut self, text: &str) {
        self.child.stdin.as_mut().unwrap().write_all(text.as_bytes()).unwrap();
        self.child.stdin.as_mut().unwrap().flush().unwrap();
    }

    /// Closes standard input and waits for the drained exit.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().unwrap()
    }
}

/// `GET path` with an optional bearer token: (status, content type, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    // Bodies here are small: either a content-length body or one chunk.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    (status, ctype, body)
}

/// The samples of an exposition, parsed by `prometheus_client`.
fn parse(text: &str) -> Vec<serde_json::Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/parse_metrics.py");
    let mut child = std::process::Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn sample<'a>(samples: &'a [serde_json::Value], name: &str, id: &str) -> Option<&'a serde_json::Value> {
    samples.iter().find(|s| s["name"] == name && s["labels"]["component_id"] == id)
}

#[test]
fn health_ready_and_metrics_of_a_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent =
        Agent::start(dir.path(), &format!("[api]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\""));
    let card = "4111111111111111";
    let lines: String = (0..100).map(|i| format!("line {i} paid with {card}\n")).collect();
    agent.send(&lines);

    // Every endpoint refuses a missing or wrong token.
    for path in ["/health", "/ready", "/metrics"] {
        assert_eq!(get(agent.api, path, None).0, 401, "{path}");
        assert_eq!(get(agent.api, path, Some("api-token-0123456789abcdeX")).0, 401, "{path}");
    }
    assert_eq!(
        get(agent.api, "/health", Some(TOKEN)),
        (200, "application/json".into(), "{\"status\":\"ok\"}\n".into())
    );
    // Ready once every component runs (they report "starting" until then).
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let r = get(agent.api, "/ready", Some(TOKEN));
        if r.0 == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ready, (200, "application/json".into(), "{\"status\":\"ready\"}\n".into()));
    assert_eq!(get(agent.api, "/nope", Some(TOKEN)).0, 404);

    // The counters reach /metrics once the batch has gone through.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ctype, samples) = loop {
        let (status, ctype, body) = get(agent.api, "/metrics", Some(TOKEN));
        assert_eq!(status, 200);
        assert!(!body.contains(card), "an exposition never holds event data");
        let samples = parse(&body);
        // The sink counts its input last: once it has all 100, every counter is final.
        let delivered = sample(&samples, "sealtrail_component_events_in_total", "vault")
            .is_some_and(|s| s["value"] == 100.0);
        if delivered || Instant::now() > deadline {
            break (ctype, samples);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    let v = |name: &str, id: &str| sample(&samples, name, id).map(|s| s["value"].as_f64().unwrap());
    assert_eq!(v("sealtrail_component_events_out_total", "in"), Some(100.0), "{samples:#?}");
    assert_eq!(v("sealtrail_component_events_in_total", "scrub"), Some(100.0));
    assert_eq!(v("sealtrail_component_events_out_total", "scrub"), Some(100.0));
    assert_eq!(v("sealtrail_component_events_in_total", "vault"), Some(100.0));
    let redactions = samples
        .iter()
        .find(|s| s["name"] == "sealtrail_component_redactions_total" && s["labels"]["detector"] == "card")
        .expect("redactions by detector");
    assert_eq!(redactions["labels"]["component_id"], "scrub");
    assert_eq!(redactions["labels"]["component_kind"], "transform");
    assert_eq!(redactions["type"], "counter");
    assert_eq!(redactions["family"], "sealtrail_component_redactions");
    assert_eq!(redactions["value"], 100.0);
    let fill = sample(&samples, "sealtrail_channel_capacity_batches", "vault").expect("channel capacity");
    assert_eq!(fill["labels"]["component_kind"], "sink");
    assert_eq!(fill["type"], "gauge");
    assert!(sample(&samples, "sealtrail_channel_batches", "scrub").is_some());
    let rss = samples.iter().find(|s| s["name"] == "process_resident_memory_bytes").expect("RSS");
    assert!(rss["value"].as_f64().unwrap() > 1e6, "{rss}");
    assert!(samples.iter().any(|s| s["name"] == "process_cpu_seconds_total"));

    assert!(agent.finish().success());
}

#[test]
fn ready_names_an_unusable_key_and_a_plaintext_api_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "keys/broken.json", "{ not a key");
    let mut agent = Agent::start(dir.path(), "[api]\naddress = \"127.0.0.1:0\"\nauth = \"none\"");
    agent.send("hello\n");
    // Components report "starting" until they run (the sealed sink checks its directory and
    // keyring first): wait, with a deadline, until only the lasting problem is left.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, ctype, body) = loop {
        let (status, ctype, body) = get(agent.api, "/ready", None);
        if !body.contains("\"starting\"") || Instant::now() > deadline {
            break (status, ctype, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((status, ctype.as_str()), (503, "application/json"), "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["status"], "not ready");
    let problems = detail["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{body}");
    assert_eq!(problems[0]["reason"], "key unusable");
    assert_eq!(problems[0]["key"], "broken");
    assert_eq!(get(agent.api, "/health", None).0, 200);
    assert!(agent.finish().success());

    // `validate` refuses a token on a network address without TLS, naming `[api]`.
    let path = common::write(
        dir.path(),
        "exposed.toml",
        &format!(
            "[api]\naddress = \"0.0.0.0:8687\"\ntoken = \"{TOKEN}\"\n[sources.in]\ntype = \"stdin\"\n\
             [transforms.r]\ntype = \"redact\"\ninputs = [\"in\"]\n[sinks.b]\ntype = \"blackhole\"\ninputs = [\"r\"]\n"
        ),
    );
    let out = common::cmd(dir.path()).args(["validate", "--config"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("api") && err.contains("allow_plaintext = true") && !err.contains(TOKEN), "{err}");
}
