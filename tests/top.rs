//! Issue 18, `sealtrail top`: against a real agent's `[api]`, as JSON for scripts and as the
//! live view under a pseudo-terminal (`script`).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

const TOKEN: &str = "top-api-token-0123456789";

/// An agent with `[api]` on a free port, fed card numbers from a thread until stopped.
struct Agent {
    child: Child,
    api: SocketAddr,
    feeding: Arc<AtomicBool>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    fn start(dir: &Path, auth: &str) -> Agent {
        let config = format!(
            "data_dir = \"data\"\n[api]\naddress = \"127.0.0.1:0\"\n{auth}\n\
             [sources.in]\ntype = \"stdin\"\n\
             [transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\
             [sinks.sink]\ntype = \"blackhole\"\ninputs = [\"scrub\"]\n"
        );
        let path = write(dir, "agent.toml", &config);
        let mut child = cmd(dir)
            .args(["run", "--config"])
            .arg(&path)
            .env("SEALTRAIL_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let api = api_address(&mut child);
        let feeding = Arc::new(AtomicBool::new(true));
        let mut stdin = child.stdin.take().unwrap();
        let f = feeding.clone();
        let feeder = std::thread::spawn(move || {
            while f.load(Ordering::Relaxed) {
                if stdin.write_all(b"paid with 4111 1111 1111 1111 today\n").is_err() {
                    return;
                }
                let _ = stdin.flush();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Agent { child, api, feeding, feeder: Some(feeder) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.api)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.feeding.store(false, Ordering::Relaxed);
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        let _ = self.child.wait();
    }
}

#[test]
fn once_as_json_reports_rates_per_component() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &format!("token = \"{TOKEN}\""));
    let token = write(dir.path(), "token", TOKEN);
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // Without the token: a clear refusal, exit 2.
    let o =
        cmd(dir.path()).args(["top", "--once", "--format", "json", "--url", &agent.url()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("401 unauthorized"), "{}", stderr(&o));

    let o = cmd(dir.path())
        .args(["top", "--once", "--format", "json", "--url", &agent.url(), "--token-file"])
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let comps = v["components"].as_array().unwrap();
    let names: Vec<String> = comps
        .iter()
        .map(|c| format!("{}.{}", c["kind"].as_str().unwrap(), c["id"].as_str().unwrap()))
        .collect();
    for want in ["source.in", "transform.scrub", "sink.sink"] {
        assert!(names.contains(&want.to_owned()), "{names:?}");
    }
    let scrub = comps.iter().find(|c| c["id"] == "scrub").unwrap();
    assert!(scrub["events_in_per_s"].as_f64().unwrap() > 0.0, "{scrub}");
    assert!(scrub["bytes_in_per_s"].as_f64().unwrap() > 0.0, "{scrub}");
    assert!(scrub["redactions_per_s"].as_f64().unwrap() > 0.0, "{scrub}");
    assert!(scrub["redactions"].as_f64().unwrap() >= scrub["redactions_per_s"].as_f64().unwrap() * 0.5);
    assert_eq!(scrub["channel"][1].as_f64(), Some(8.0), "{scrub}");
    let source = comps.iter().find(|c| c["id"] == "in").unwrap();
    assert!(source["events_out_per_s"].as_f64().unwrap() > 0.0, "{source}");
}

/// The live view under a pseudo-terminal: each frame homes the cursor and clears the screen,
/// the header is bold, and every component has a row.
#[test]
fn live_view_under_a_pseudo_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "auth = \"none\"");
    let command = format!("{} top --url {}", bin(), agent.url());
    // `script` gives `top` a terminal; it is stopped once two whole frames have come.
    let mut script = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut pty_out = script.stdout.take().unwrap();
    let s = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut pty_out, &mut buf) {
            if n == 0 {
                break;
            }
            s.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let frames = |text: &str| text.matches("\x1b[H\x1b[2J").count();
    let complete = eventually(Duration::from_secs(30), || {
        let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        frames(&text) >= 3
    });
    script.kill().unwrap();
    script.wait().unwrap();
    let _ = reader.join();
    let out = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(complete, "one frame per refresh: {out:?}");
    assert!(out.contains("\x1b[1mCOMPONENT"), "bold header: {out:?}");
    // The second frame is whole (the third had begun).
    let frame = out.split("\x1b[H\x1b[2J").nth(2).unwrap();
    for row in ["source.in", "transform.scrub", "sink.sink"] {
        assert!(frame.contains(row), "{row} in {frame:?}");
    }
    let scrub = frame.lines().find(|l| l.starts_with("transform.scrub")).unwrap();
    let events_per_s = scrub.split_whitespace().nth(1).unwrap();
    assert_ne!(events_per_s, "0", "the view shows the load: {scrub}");
}
