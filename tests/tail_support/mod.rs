//! Shared helpers of the tail integration tests: a real agent (`sealtrail run`) with its
//! stdin under the test's control, and real `sealtrail tail` client processes, each with
//! its output collected by a reader thread.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sealtrail");
pub const TOKEN: &str = "tail-test-token-0123456789abcdef";

/// Generous deadlines: this machine is shared and slow; they only catch hangs.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A line of output and when it was read.
pub type Line = (Instant, String);

/// Collects the lines of a child's pipe on a thread.
pub fn collect(r: impl Read + Send + 'static) -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`, keeping every line seen in `seen`.
pub fn wait_for(rx: &mpsc::Receiver<Line>, seen: &mut Vec<String>, needle: &str) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, l)) => {
                seen.push(l.clone());
                if l.contains(needle) {
                    return l;
                }
            }
            Err(_) => panic!("no line containing {needle:?}; saw:\n{}", seen.join("\n")),
        }
    }
}

/// Kills and reaps a child that the test did not finish with.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{what} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running agent with a stdin source and a tail sink.
pub struct Agent {
    pub child: Reaper,
    pub stdin: Option<ChildStdin>,
    pub stderr: mpsc::Receiver<Line>,
    pub log: Vec<String>,
    pub url: String,
    pub dir: tempfile::TempDir,
}

/// The configuration of a test agent: stdin (service `api`) → tail; `sink_extra` is added
/// to the tail sink's table (and may hold sub-tables at its end).
pub fn config(address: &str, sink_extra: &str) -> String {
    format!(
        r#"
[sources.app]
type = "stdin"
service = "api"

[sinks.live]
type = "tail"
inputs = ["app"]
allow_unredacted = true
address = "{address}"
token = "${{SEALTRAIL_TAIL_TOKEN}}"
{sink_extra}
"#
    )
}

impl Agent {
    /// Starts an agent on a free port with the default test configuration.
    pub fn start(sink_extra: &str) -> Agent {
        Agent::with_config(&config("127.0.0.1:0", sink_extra))
    }

    /// Starts an agent with this configuration text and waits until its tail sink listens.
    pub fn with_config(text: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("SEALTRAIL_TAIL_TOKEN", TOKEN)
            .env("NO_COLOR", "1")
            .env("SEALTRAIL_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the agent");
        let stdin = child.stdin.take();
        let stderr = collect(child.stderr.take().unwrap());
        let mut log = Vec::new();
        let line = wait_for(&stderr, &mut log, "listening on ");
        let url = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("url after `listening on`")
            .to_owned();
        Agent { child: Reaper(child), stdin, stderr, log, url, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Ends the agent's input and waits for it to exit; returns its status and log.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>) {
        drop(self.stdin.take());
        let status = wait_exit(&mut self.child.0, "the agent");
        while let Ok((_, l)) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            self.log.push(l);
        }
        (status, std::mem::take(&mut self.log))
    }
}

/// A running `sealtrail tail` process.
pub struct Tail {
    pub child: Reaper,
    pub stdout: Option<mpsc::Receiver<Line>>,
    pub stderr: mpsc::Receiver<Line>,
    pub err_seen: Vec<String>,
}

/// The `sealtrail tail` command with the test token in its environment.
pub fn tail_cmd(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("tail").arg("--url").arg(url).args(args);
    c.env("SEALTRAIL_TAIL_TOKEN", TOKEN).env_remove("NO_COLOR");
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

impl Tail {
    /// Starts a tail client and waits until it is connected.
    pub fn start(url: &str, args: &[&str]) -> Tail {
        Tail::spawn(tail_cmd(url, args), true)
    }

    pub fn spawn(mut cmd: Command, collect_stdout: bool) -> Tail {
        let mut child = cmd.spawn().expect("spawn sealtrail tail");
        let stdout = collect_stdout.then(|| collect(child.stdout.take().unwrap()));
        let stderr = collect(child.stderr.take().unwrap());
        let mut t = Tail { child: Reaper(child), stdout, stderr, err_seen: Vec::new() };
        wait_for(&t.stderr, &mut t.err_seen, "connected to");
        t
    }

    /// Waits for the client to exit and returns its status and every stdout line.
    pub fn finish(mut self) -> (ExitStatus, Vec<Line>) {
        let status = wait_exit(&mut self.child.0, "sealtrail tail");
        let mut lines = Vec::new();
        if let Some(rx) = &self.stdout {
            while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
                lines.push(l);
            }
        }
        (status, lines)
    }
}

/// The `body` of each JSON event line (other lines as they are).
pub fn bodies(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .map(|(_, l)| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) => v.get("body").and_then(|b| b.as_str()).map(str::to_owned).unwrap_or_else(|| l.clone()),
            Err(_) => l.clone(),
        })
        .collect()
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes `text` to a file readable by its owner only.
pub fn secret_file(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Sends a raw HTTP/1.1 GET and returns everything the server sent within `wait`.
pub fn raw_get(url: &str, path: &str, auth: Option<&str>, wait: Duration) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
