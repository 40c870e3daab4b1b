//! Issue 13, "Key rotation does not reach a running agent": SIGHUP reloads the configuration.
//! A real agent reads stdin, redacts and prints; the tests rewrite its configuration file and
//! send SIGHUP: a changed redact rule applies to the next lines without losing any, a new sink
//! starts, a broken file changes nothing and is reported with its place, and a change to the
//! stdin source (which cannot be reopened) is reported as needing a restart.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const SIGHUP: i32 = 1;

struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    r: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    })
}

fn start(dir: &Path, config: &Path) -> Agent {
    let mut child = cmd(dir)
        .env("SEALTRAIL_LOG", "info")
        .args(["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let readers = vec![
        collect(child.stdout.take().unwrap(), out.clone()),
        collect(child.stderr.take().unwrap(), err.clone()),
    ];
    Agent { stdin: child.stdin.take(), child, out, err, readers }
}

impl Agent {
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn wait_out(&self, what: &str, f: impl Fn(&[String]) -> bool) {
        let ok = eventually(Duration::from_secs(20), || f(&self.out.lock().unwrap()));
        assert!(ok, "{what}: stdout {:?}\nstderr {:?}", self.out.lock().unwrap(), self.err.lock().unwrap());
    }

    /// Waits for a stderr line containing `needle` and returns it.
    fn wait_err(&self, needle: &str) -> String {
        let mut found = None;
        let ok = eventually(Duration::from_secs(20), || {
            found = self.err.lock().unwrap().iter().find(|l| l.contains(needle)).cloned();
            found.is_some()
        });
        assert!(ok, "no `{needle}` on stderr: {:?}", self.err.lock().unwrap());
        found.unwrap_or_default()
    }

    fn reload(&self) {
        signal(self.child.id(), SIGHUP);
    }

    /// Closes stdin (end of input) and waits for the drain; returns stdout.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        self.wait()
    }

    /// Stops the agent with SIGTERM (a listening source never ends by itself).
    fn finish_with_signal(mut self) -> Vec<String> {
        drop(self.stdin.take());
        signal(self.child.id(), SIGTERM);
        self.wait()
    }

    fn wait(mut self) -> Vec<String> {
        let status = self.child.wait().unwrap();
        for r in self.readers {
            r.join().unwrap();
        }
        let err = self.err.lock().unwrap().clone();
        assert_eq!(status.code(), Some(0), "stderr: {err:?}");
        Arc::try_unwrap(self.out).unwrap().into_inner().unwrap()
    }
}

fn config(keywords: &str, extra: &str) -> String {
    format!(
        "data_dir = \"state\"\n\
         [sources.app]\ntype = \"stdin\"\n\
         [transforms.scrub]\ntype = \"redact\"\ninputs = [\"app\"]\nkeywords = [{keywords}]\n\
         [sinks.out]\ntype = \"console\"\ninputs = [\"scrub\"]\n{extra}"
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    write(dir, "agent.toml", text)
}

/// A new redact keyword applies to the lines after the reload; the stdin source and the
/// console sink are kept (never restarted), and every line written around the reload comes
/// out exactly once.
#[test]
fn a_changed_redact_rule_applies_without_losing_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config("\"alpha-secret\"", ""));
    let mut agent = start(dir.path(), &cfg);
    agent.send("first alpha-secret beta-secret");
    agent.wait_out("first line", |o| o.len() == 1);
    assert_eq!(agent.out.lock().unwrap()[0], "first **** beta-secret");

    write_config(dir.path(), &config("\"alpha-secret\", \"beta-secret\"", ""));
    // Lines keep coming while the reload happens.
    for i in 0..200 {
        agent.send(&format!("line {i} beta-secret"));
        if i == 50 {
            agent.reload();
        }
    }
    let report = agent.wait_err("configuration reloaded");
    assert!(report.contains("kept sources.app, sinks.out"), "{report}");
    assert!(report.contains("restarted transforms.scrub"), "{report}");
    agent.send("last alpha-secret beta-secret");
    agent.wait_out("last line", |o| o.iter().any(|l| l.starts_with("last")));
    let out = agent.finish();
    assert_eq!(out.len(), 202, "every line exactly once: {out:?}");
    for i in 0..200 {
        assert_eq!(out.iter().filter(|l| l.starts_with(&format!("line {i} "))).count(), 1, "line {i}");
    }
    assert_eq!(out.last().unwrap(), "last **** ****");
}

/// A broken file changes nothing (the error names file, line and column, as `validate` does,
/// and is counted); then a valid file that adds a sealed sink starts it, and the agent's
/// drain seals what it received.
#[test]
fn a_broken_file_is_refused_and_an_added_sink_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config("\"alpha-secret\"", ""));
    let mut agent = start(dir.path(), &cfg);
    agent.send("one alpha-secret");
    agent.wait_out("one", |o| o.len() == 1);

    write_config(
        dir.path(),
        &config("\"alpha-secret\"", "[sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\nbogus = 1\n"),
    );
    agent.reload();
    let refused = agent.wait_err("configuration not reloaded");
    // file:line:column, as `validate` prints it.
    let place = refused.split("agent.toml:").nth(1).unwrap_or_default();
    let mut parts = place.splitn(3, ':');
    let (line, col) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    assert!(line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(), "file:line:column: {refused}");
    assert!(refused.contains("unknown field `bogus`"), "{refused}");
    assert!(refused.contains("sinks.vault"), "{refused}");
    agent.send("two alpha-secret");
    agent.wait_out("two, after the refused reload", |o| o.len() == 2);

    let vault = dir.path().join("vault");
    write_config(
        dir.path(),
        &config(
            "\"alpha-secret\"",
            &format!(
                "[sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"{}\"\n",
                vault.display()
            ),
        ),
    );
    agent.reload();
    let report = agent.wait_err("configuration reloaded");
    assert!(report.contains("added sinks.vault"), "{report}");
    assert!(report.contains("kept sources.app, transforms.scrub, sinks.out"), "{report}");
    agent.send("three alpha-secret");
    agent.wait_out("three", |o| o.len() == 3);
    let out = agent.finish();
    assert_eq!(out, ["one ****", "two ****", "three ****"]);

    // The new sink sealed the line it got after it started, and only that one.
    let q = cmd(dir.path()).args(["query", vault.to_str().unwrap(), "--format", "jsonl"]).output().unwrap();
    assert_eq!(q.status.code(), Some(0), "{}", stderr(&q));
    let text = stdout(&q);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("three ****"), "{text}");
}

/// stdin cannot be reopened: a change to the stdin source keeps it running and is reported as
/// needing a restart; the rest of the reload applies.
#[test]
fn a_changed_stdin_source_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config("\"alpha-secret\"", ""));
    let mut agent = start(dir.path(), &cfg);
    agent.send("one alpha-secret");
    agent.wait_out("one", |o| o.len() == 1);
    let changed = config("\"alpha-secret\"", "")
        .replace("type = \"stdin\"\n", "type = \"stdin\"\nmax_line_bytes = 4096\n");
    write_config(dir.path(), &changed);
    agent.reload();
    let warning = agent.wait_err("need a restart");
    assert!(warning.contains("sources.app"), "{warning}");
    agent.send("two alpha-secret");
    agent.wait_out("two", |o| o.len() == 2);
    assert_eq!(agent.finish(), ["one ****", "two ****"]);
}

/// POSTs one OTLP/JSON log record to `addr` and returns the HTTP status line.
fn post_log(addr: &str, body: &str) -> String {
    use std::io::Read;
    let payload = format!(
        "{{\"resourceLogs\":[{{\"scopeLogs\":[{{\"logRecords\":[{{\"body\":{{\"stringValue\":\"{body}\"}}}}]}}]}}]}}"
    );
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/logs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.lines().next().unwrap_or_default().to_owned()
}

/// A changed listening source stops (freeing its port) before its new version binds the same
/// port; the stdin source beside it is kept.
#[test]
fn a_changed_listener_restarts_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let otlp = |extra: &str| {
        format!(
            "data_dir = \"state\"\n\
             [sources.app]\ntype = \"stdin\"\n\
             [sources.net]\ntype = \"otlp\"\ngrpc_address = \"\"\nhttp_address = \"{addr}\"\n{extra}\
             [transforms.scrub]\ntype = \"redact\"\ninputs = [\"app\", \"net\"]\nkeywords = [\"alpha-secret\"]\n\
             [sinks.out]\ntype = \"console\"\ninputs = [\"scrub\"]\n"
        )
    };
    let cfg = write_config(dir.path(), &otlp(""));
    let mut agent = start(dir.path(), &cfg);
    agent.send("from stdin alpha-secret");
    agent.wait_out("stdin line", |o| o.len() == 1);
    let ok = eventually(Duration::from_secs(20), || std::net::TcpStream::connect(&addr).is_ok());
    assert!(ok, "the otlp source listens");
    assert!(post_log(&addr, "before alpha-secret").contains(" 200"), "first post");
    agent.wait_out("first post", |o| o.iter().any(|l| l == "before ****"));

    write_config(dir.path(), &otlp("max_connections = 8\n"));
    agent.reload();
    let report = agent.wait_err("configuration reloaded");
    assert!(report.contains("restarted sources.net"), "{report}");
    assert!(report.contains("kept sources.app, transforms.scrub, sinks.out"), "{report}");
    // The new version serves on the same port.
    let mut status = String::new();
    let ok = eventually(Duration::from_secs(20), || {
        status = std::net::TcpStream::connect(&addr)
            .map(|_| post_log(&addr, "after alpha-secret"))
            .unwrap_or_default();
        status.contains(" 200")
    });
    assert!(ok, "the new otlp source answers: {status}");
    agent.wait_out("second post", |o| o.iter().any(|l| l == "after ****"));
    agent.send("stdin still read alpha-secret");
    agent.wait_out("stdin after the reload", |o| o.iter().any(|l| l == "stdin still read ****"));
    let out = agent.finish_with_signal();
    assert!(out.iter().any(|l| l == "from stdin ****"), "{out:?}");
}
