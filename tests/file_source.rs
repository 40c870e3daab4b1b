//! The `file` source against real files: appends, rotation by rename + create, truncation,
//! and a restart that resumes from the checkpoint.

mod common;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

fn start(dir: &Path) -> Agent {
    let cfg = write(
        dir,
        "file.toml",
        "data_dir = \"state\"\n[sources.logs]\ntype = \"file\"\ninclude = [\"logs/*.log*\"]\npoll_interval = \"20ms\"\nrotate_wait = \"200ms\"\nwait_for_files = true\n[sinks.out]\ntype = \"console\"\ninputs = [\"logs\"]\nallow_unredacted = true\n",
    );
    let mut child = cmd(dir)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let l = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            l.lock().unwrap().push(line.unwrap());
        }
    });
    Agent { child, lines, reader }
}

impl Agent {
    fn wait_for(&self, n: usize) -> Vec<String> {
        let ok = eventually(Duration::from_secs(20), || self.lines.lock().unwrap().len() >= n);
        let got = self.lines.lock().unwrap().clone();
        assert!(ok, "wanted {n} lines, got {got:?}");
        got
    }

    fn stop(mut self) -> Vec<String> {
        signal(self.child.id(), SIGTERM);
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        assert_eq!(status.code(), Some(0));
        Arc::try_unwrap(self.lines).unwrap().into_inner().unwrap()
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn follows_appends_rotation_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    append(&app, "one\ntwo\n");
    let agent = start(dir.path());
    agent.wait_for(2);

    // Appends, including a line that arrives in two writes.
    append(&app, "three\nfo");
    std::thread::sleep(Duration::from_millis(100));
    append(&app, "ur\n");
    agent.wait_for(4);

    // Rotation: rename, a late write to the old file, then a new file under the old name.
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append(&logs.join("app.log.1"), "five (late, old file)\n");
    append(&app, "six (new file)\n");
    agent.wait_for(6);

    // Truncation: the file shrinks, and is read again from its start.
    std::fs::write(&app, "").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    append(&app, "seven\n");
    agent.wait_for(7);

    let mut got = agent.stop();
    got.sort();
    let mut want = vec!["one", "two", "three", "four", "five (late, old file)", "six (new file)", "seven"];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn restart_resumes_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let first: String = (0..100).map(|i| format!("line {i}\n")).collect();
    append(&app, &first);
    append(&app, "unfinished ");

    let agent = start(dir.path());
    agent.wait_for(100);
    std::thread::sleep(Duration::from_millis(100));
    let got = agent.stop();
    assert_eq!(got.len(), 100, "the unfinished line waits for its newline");

    // The checkpoint holds offsets, never content.
    let ckpt = std::fs::read_to_string(dir.path().join("state/checkpoints/logs.json")).unwrap();
    assert!(!ckpt.contains("line 1"), "{ckpt}");
    assert!(ckpt.contains("\"offset\":"), "{ckpt}");

    append(&app, "line now done\nline 101\n");
    let agent = start(dir.path());
    let got = agent.wait_for(2);
    std::thread::sleep(Duration::from_millis(200));
    let got2 = agent.stop();
    assert_eq!(got, got2);
    assert_eq!(got2, ["unfinished line now done", "line 101"]);
}
