//! Helpers shared by the integration tests: run the real `sealtrail` binary in a temporary
//! directory.
#![allow(dead_code)]

pub mod aws;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealtrail")
}

/// A command for the binary with a clean environment for sealtrail's own variables, run in
/// `dir`, with the keyring and data directory inside `dir`.
pub fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir)
        .env_remove("SEALTRAIL_CONFIG")
        .env_remove("SEALTRAIL_DATA_DIR")
        .env("SEALTRAIL_KEYS", dir.join("keys"))
        .env("NO_COLOR", "1")
        .env("SEALTRAIL_LOG", "warn");
    c
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `sealtrail ARGS` with `input` on standard input and returns its output.
pub fn run_with_input(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = cmd(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sealtrail");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child, Duration::from_secs(60));
    writer.join().unwrap();
    out
}

/// Waits for a child with a time limit (kills it and panics past the limit).
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let id = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            if d.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc_kill(id as i32, 9) };
    });
    let out = child.wait_with_output().expect("wait for sealtrail");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    out
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc_kill(pid as i32, sig) };
}

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// The Python of the interop tests: `SEALTRAIL_PYTHON` (scripts/test.sh sets it), else `.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SEALTRAIL_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python for the interop tests: set SEALTRAIL_PYTHON (scripts/test.sh does) or create {}",
        venv.display()
    );
    venv
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every file under `dir`, recursively (nothing when `dir` does not exist).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// None of `needles` is anywhere in plaintext under `dir` (log files, segments, partial
/// segments, checkpoints, temp files).
pub fn assert_no_plaintext(dir: &Path, needles: &[&[u8]]) {
    for f in files(dir) {
        let raw = std::fs::read(&f).unwrap();
        for needle in needles {
            assert!(
                !raw.windows(needle.len()).any(|w| w == *needle),
                "plaintext {:?} in {}",
                String::from_utf8_lossy(needle),
                f.display()
            );
        }
    }
}

/// The address of a starting agent's `[api]`, read from its log on stderr (which `child` must
/// have piped; it is read to the end on a thread from here on).
pub fn api_address(child: &mut Child) -> std::net::SocketAddr {
    use std::io::BufRead;
    const MARK: &str = "api: listening on http://";
    let stderr = child.stderr.take().expect("the agent's stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find(MARK) {
                let addr = &line[at + MARK.len()..];
                let _ = tx.send(addr.trim().trim_end_matches(|c: char| !c.is_ascii_digit()).to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("the api listens").parse().unwrap()
}
