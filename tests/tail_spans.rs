//! Issue 7: the filters that the stdin pipeline cannot exercise (levels, spans, trace ids),
//! with the tail sink running in-process on a real socket and real `sealtrail tail` clients.

mod tail_support;

use std::sync::Arc;

use sealtrail::config::GlobalOptions;
use sealtrail::event::{Event, LogRecord, Span, severity};
use sealtrail::metrics::Registry;
use sealtrail::sinks::tail::TailConfig;
use sealtrail::topology::{Message, SinkContext, SinkInput};
use tail_support::*;

const T1: [u8; 16] = [0x11; 16];
const T2: [u8; 16] = [0x22; 16];
const START: i64 = 1_764_000_000_000_000_000;

fn log(sev: i32, service: &str, body: &str, trace: Option<[u8; 16]>) -> Event {
    Event::Log(LogRecord {
        time: START,
        severity_number: sev,
        severity_text: severity::level_name(sev).to_owned(),
        service: service.into(),
        body: body.into(),
        trace_id: trace,
        source: "app".into(),
        ..LogRecord::default()
    })
}

fn span(name: &str, status: i32, service: &str, trace: [u8; 16]) -> Event {
    Event::Span(Span {
        trace_id: trace,
        span_id: [3; 8],
        name: name.into(),
        start_time: START,
        end_time: START + 12_500_000,
        status_code: status,
        service: service.into(),
        ..Span::default()
    })
}

/// What each line names: a log's body or a span's name.
fn names(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .map(|(_, l)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let k = if v["signal"] == "spans" { "name" } else { "body" };
            v[k].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A tail sink running in-process on a free port: its runtime, its input, its URL and its
/// task.
struct InProcess {
    rt: tokio::runtime::Runtime,
    tx: tokio::sync::mpsc::Sender<Message>,
    url: String,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start_sink() -> InProcess {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config: TailConfig = toml::from_str(&format!("token = \"{TOKEN}\"")).unwrap();
    let sink = config.compile().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let registry = Registry::default();
    let metrics = registry.component("sink.live");
    let cx = SinkContext {
        id: "live".into(),
        metrics: metrics.clone(),
        globals: Arc::new(GlobalOptions::default()),
        registry,
    };
    let running = rt.spawn(sink.serve(listener, SinkInput::new(rx, metrics), cx));
    InProcess { rt, tx, url, running }
}

impl InProcess {
    /// Sends one batch, ends the input and waits for the sink to finish.
    fn send_and_finish(self, batch: Vec<Event>) {
        self.rt.block_on(self.tx.send(Message::Batch(Arc::new(batch)))).unwrap();
        drop(self.tx);
        self.rt.block_on(self.running).unwrap().unwrap();
    }
}

#[test]
fn level_signal_trace_and_service_filters_with_spans() {
    let sink = start_sink();
    let url = sink.url.clone();
    let json = |extra: &[&str]| {
        let mut args = vec!["--format", "json", "--no-reconnect"];
        args.extend_from_slice(extra);
        Tail::start(&url, &args)
    };
    let spans = json(&["--signal", "spans"]);
    let errors = json(&["--level", "error"]);
    let trace = json(&["--trace-id", &hex::encode(T1)]);
    let edge_warn = json(&["--service", "edge", "--level", "warn"]);
    let text = Tail::start(&url, &["--no-reconnect"]);

    let batch = vec![
        log(severity::INFO, "checkout", "paid order 1", Some(T1)),
        log(severity::ERROR, "checkout", "card declined", Some(T1)),
        span("POST /pay", 2, "checkout", T1),
        span("GET /health", 1, "edge", T2),
        log(severity::WARN, "edge", "slow upstream \x1b]0;pwned\x07", None),
    ];
    sink.send_and_finish(batch);

    let lines = |t: Tail| {
        let (status, lines) = t.finish();
        assert!(status.success(), "{status}");
        lines
    };
    assert_eq!(names(&lines(spans)), ["POST /pay", "GET /health"]);
    assert_eq!(names(&lines(errors)), ["card declined", "POST /pay"]);
    assert_eq!(names(&lines(trace)), ["paid order 1", "card declined", "POST /pay"]);
    assert_eq!(names(&lines(edge_warn)), ["slow upstream \x1b]0;pwned\x07"]);

    let text: Vec<String> = lines(text).into_iter().map(|(_, l)| l).collect();
    assert_eq!(
        text,
        [
            "2025-11-24T16:00:00Z INFO  checkout paid order 1".to_owned(),
            "2025-11-24T16:00:00Z ERROR checkout card declined".to_owned(),
            format!(
                "2025-11-24T16:00:00Z SPAN  checkout POST /pay 12.5ms status=ERROR trace={}",
                hex::encode(T1)
            ),
            format!("2025-11-24T16:00:00Z SPAN  edge GET /health 12.5ms status=OK trace={}", hex::encode(T2)),
            "2025-11-24T16:00:00Z WARN  edge slow upstream \\u{1b}]0;pwned\\u{7}".to_owned(),
        ]
    );
}

/// Runs `sealtrail tail` on a pseudo-terminal (util-linux `script`), so that it sees a
/// terminal on standard output; returns everything it wrote there, once it is connected.
fn on_terminal(url: &str, no_color: bool) -> (std::process::Child, std::sync::mpsc::Receiver<Line>) {
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &format!("{BIN} tail --no-reconnect --url {url}"), "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        .env("SEALTRAIL_TAIL_TOKEN", TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let mut child = cmd.spawn().expect("this test needs util-linux `script` for a pseudo-terminal");
    let rx = collect(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    wait_for(&rx, &mut seen, "connected to");
    (child, rx)
}

#[test]
fn colours_only_on_a_terminal_without_no_color_and_control_characters_never() {
    let sink = start_sink();
    let (mut colour, colour_rx) = on_terminal(&sink.url, false);
    let (mut plain, plain_rx) = on_terminal(&sink.url, true);
    sink.send_and_finish(vec![
        log(severity::ERROR, "checkout", "card declined \x1b[2J\x1b]0;pwned\x07", None),
        log(severity::WARN, "checkout", "slow \u{202e}txt.exe", None),
    ]);
    for (child, rx, coloured) in [(&mut colour, colour_rx, true), (&mut plain, plain_rx, false)] {
        assert!(wait_exit(child, "tail on a terminal").success());
        let out: Vec<String> = std::iter::from_fn(|| rx.recv_timeout(std::time::Duration::from_secs(5)).ok())
            .map(|(_, l)| l.trim_end_matches('\r').to_owned())
            .collect();
        let (err, warn) =
            if coloured { ("\x1b[31mERROR\x1b[0m", "\x1b[33mWARN \x1b[0m") } else { ("ERROR", "WARN ") };
        let want = [
            format!(
                "2025-11-24T16:00:00Z {err} checkout card declined \\u{{1b}}[2J\\u{{1b}}]0;pwned\\u{{7}}"
            ),
            format!("2025-11-24T16:00:00Z {warn} checkout slow \\u{{202e}}txt.exe"),
        ];
        assert_eq!(out[..2], want, "coloured: {coloured}; all output: {out:?}");
    }
}
