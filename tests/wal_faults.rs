//! Issue 15, "a failing sink never takes the workload down": the sealed sink with its
//! write-ahead log against a full disk and an unwritable data directory, with the real binary.
//!
//! The data directory is a small tmpfs mounted by the test (it runs as root, as the CI and
//! development containers do); a test that cannot mount fails and says so rather than
//! skipping silently.

mod common;

use common::files;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CANARY: &str = "CANARY-faults-91d0e4";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sealtrail")
}

/// A tmpfs of `size` mounted at `dir` (with `options` such as `ro`), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str, options: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let opts = if options.is_empty() { format!("size={size}") } else { format!("size={size},{options}") };
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &opts, "tmpfs"]).arg(dir).output().unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk in the middle of a run: the wrapped program keeps running, the sink reports
/// the error and retries, and once space returns it replays its log and resumes; when the
/// program ends, every line it printed is sealed, and the agent exits with its code.
#[test]
fn a_full_disk_never_stops_the_wrapped_program_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _fs = Tmpfs::mount(&data, "6m", "");
    let keys = tmp.path().join("keys");
    let stop = tmp.path().join("stop");
    // The wrapped program: numbered lines until the stop file appears.
    let script = format!(
        "i=0; while [ ! -e {stop} ]; do echo \"line $i {CANARY}\"; i=$((i+1)); \
         if [ $((i % 50)) -eq 0 ]; then sleep 0.01; fi; done; echo \"line $i {CANARY}\"",
        stop = stop.display()
    );
    let config = tmp.path().join("faults.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[sources.app]\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", {script:?}]\n\
             [transforms.scrub]\ntype = \"redact\"\ninputs = [\"app\"]\n\
             [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\nwal = true\nmax_age = \"1s\"\n\
             wal_file_bytes = 65536\nwal_max_bytes = 262144\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--config", config.to_str().unwrap(), "--keys", keys.to_str().unwrap()])
        .env("SEALTRAIL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let l = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut l = l.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let wait_for = |what: &str, cond: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond(&log.lock().unwrap()) {
            assert!(Instant::now() < deadline, "no {what} in a minute: {}", log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("sealed segment", &|l| l.contains("segment sealed"));

    // Fill the disk.
    let filler = data.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    drop(f);
    wait_for("disk-full error", &|l| l.contains("No space left on device"));
    // The error is reported, and the sink retries instead of stopping: the agent (and so its
    // child) keeps running for a while with the disk full.
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the agent stopped on a full disk: {}", log.lock().unwrap());
    assert!(log.lock().unwrap().contains("nothing acknowledged is lost"), "{}", log.lock().unwrap());

    // Space returns: the sink replays its log and resumes.
    std::fs::remove_file(&filler).unwrap();
    wait_for("recovery", &|l| l.contains("sealed sink recovered"));
    std::fs::write(&stop, "").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{log}");

    let out = Command::new(bin())
        .args(["query", data.to_str().unwrap(), "--keys", keys.to_str().unwrap(), "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if let Some(n) =
            v["body"].as_str().and_then(|b| b.strip_prefix("line ")?.split(' ').next()?.parse().ok())
        {
            *seen.entry(n).or_insert(0) += 1;
        }
    }
    let last = *seen.keys().next_back().expect("lines sealed");
    let missing: Vec<u64> = (0..=last).filter(|n| !seen.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} lines missing, first {:?}",
        missing.len(),
        last + 1,
        &missing[..missing.len().min(10)]
    );
    let dups: usize = seen.values().map(|c| c - 1).sum();
    eprintln!("{} lines through a full disk, all sealed, {dups} sealed twice", last + 1);
    // No plaintext anywhere, no log or partial segment left after the clean end.
    common::assert_no_plaintext(&data, &[CANARY.as_bytes()]);
    assert!(files(&data.join(".wal")).is_empty(), "{:?}", files(&data.join(".wal")));
    assert!(files(&data.join(".inflight")).is_empty(), "{:?}", files(&data.join(".inflight")));
}

/// A read-only data directory, or one that cannot be created, is a start-up error (exit 2)
/// that names it, from `validate` and from `run` before any source starts.
#[test]
fn an_unwritable_data_directory_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    let _fs = Tmpfs::mount(&ro, "1m", "ro");
    let keys = tmp.path().join("keys");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    for (data, expected) in [
        (ro.clone(), "is not writable: Read-only file system"),
        (ro.join("sub/dir"), "cannot be created"),
        (file.join("data"), "Not a directory"),
    ] {
        let config = tmp.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[sources.in]\ntype = \"stdin\"\n[transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\
                 [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\nwal = true\n",
                data.display()
            ),
        )
        .unwrap();
        for cmd in ["validate", "run"] {
            let out = Command::new(bin())
                .args([cmd, "--config", config.to_str().unwrap(), "--keys", keys.to_str().unwrap()])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {}: {err}", data.display());
            assert!(err.contains("sinks.vault") && err.contains(expected), "{cmd} {}: {err}", data.display());
            assert!(err.contains(&data.display().to_string()), "{err}");
        }
    }
}
