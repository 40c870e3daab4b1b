//! Issue 13 (hardening) regression tests through the real binary: the exec child's
//! environment, the query audit log, keyring permissions and locking, renamed segments, export
//! modes, output neutralisation and broken pipes.

mod common;

use std::process::Stdio;

use common::*;

/// Issue 13 (high): a child started by the `exec` source never sees key material, the tail
/// token, or a variable the configuration interpolates into a secret field.
#[test]
fn issue_13_exec_child_never_sees_agent_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        "[telemetry]\nenabled = false\nheaders = { authorization = \"${MY_COLLECTOR_SECRET}\" }\n\
         [sources.fn]\ntype = \"exec\"\ncommand = [\"env\"]\n\
         [sinks.out]\ntype = \"console\"\nencoding = \"json\"\ninputs = [\"fn\"]\nallow_unredacted = true\n",
    );
    let out = cmd(dir.path())
        .env("SEALTRAIL_KEY_PAYMENTS", "base64:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .env("SEALTRAIL_TAIL_TOKEN", "tail-token-0123456789abcdef")
        .env("MY_COLLECTOR_SECRET", "Bearer collector-secret-xyz")
        .env("HARMLESS_VARIABLE", "still-here")
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("HARMLESS_VARIABLE=still-here"), "{text}");
    for secret in [
        "SEALTRAIL_KEY_PAYMENTS",
        "AAAAAAAAAAAA",
        "SEALTRAIL_TAIL_TOKEN",
        "tail-token",
        "MY_COLLECTOR_SECRET",
        "collector-secret",
    ] {
        assert!(!text.contains(secret), "{secret} reached the child: {text}");
    }
}

/// Issue 13: `env = { SEALTRAIL_KEY_X = … }` on an exec source is refused, not passed on.
#[test]
fn issue_13_exec_env_cannot_hand_a_secret_to_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        "[sources.fn]\ntype = \"exec\"\ncommand = [\"env\"]\nenv = { SEALTRAIL_TAIL_TOKEN = \"x\" }\n\
         [sinks.out]\ntype = \"console\"\ninputs = [\"fn\"]\nallow_unredacted = true\n",
    );
    let out = cmd(dir.path()).args(["validate", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("`SEALTRAIL_TAIL_TOKEN`"), "{}", stderr(&out));
}

/// Seals `n` numbered lines into `dir/data` with the keyring `dir/keys`.
fn seal_lines(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let cfg = format!("{}/config/sealed.toml", env!("CARGO_MANIFEST_DIR"));
    let data = dir.join("data");
    let input: String = (0..n).map(|i| format!("line {i} of the hardening test\n")).collect();
    let out = run_with_input(
        dir,
        &["run", "--config", &cfg, "--data-dir", data.to_str().unwrap()],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    data
}

fn audit_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("keys/audit.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Issue 13: `query … | head -1` exits 0 without "Broken pipe", and its audit record was
/// written before the output (it is there although the query was cut short), with the OS
/// user id.
#[test]
fn issue_13_query_into_a_closed_pipe_is_quiet_and_audited_first() {
    use std::io::BufRead;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let data = seal_lines(dir.path(), 200_000);
    let mut child = cmd(dir.path())
        .args(["query", data.to_str().unwrap(), "--format", "jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("line 0 of the hardening test"), "{first}");
    // The reader is dropped here: the pipe closes with most of the output unwritten.
    let out = wait_output(child, std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let recs = audit_records(dir.path());
    assert_eq!(recs.len(), 1);
    let my_uid = std::fs::metadata(dir.path().join("keys/audit.jsonl")).unwrap().uid();
    assert_eq!(recs[0]["uid"], my_uid);
    assert_eq!(recs[0]["keys"][0], "default#1");
    assert!(recs[0].get("user").is_none(), "the user comes from the OS, not $USER");
}

/// Issue 13: a query whose audit record cannot be written decrypts nothing.
#[test]
fn issue_13_query_refuses_to_decrypt_without_an_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = seal_lines(dir.path(), 10);
    // Root ignores file modes, so make the log impossible to open for appending.
    std::fs::create_dir(dir.path().join("keys/audit.jsonl")).unwrap();
    let out = cmd(dir.path()).args(["query", data.to_str().unwrap(), "--format", "jsonl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("refusing to decrypt"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // A keyring named by --keys that does not exist is not created by a read.
    let typo = dir.path().join("no-such-keyring");
    let out = cmd(dir.path())
        .args(["query", data.to_str().unwrap(), "--keys", typo.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!typo.exists());
}

/// Issue 13: the audit chain is keyed and its head checkable from the command line.
#[test]
fn issue_13_audit_verify_detects_cut_off_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = seal_lines(dir.path(), 10);
    for _ in 0..3 {
        let q =
            cmd(dir.path()).args(["query", data.to_str().unwrap(), "--format", "jsonl"]).output().unwrap();
        assert_eq!(q.status.code(), Some(0), "{}", stderr(&q));
    }
    let v = cmd(dir.path()).args(["keys", "audit", "--verify"]).output().unwrap();
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
    let text = stdout(&v);
    let head = text.split("--head ").nth(1).unwrap().trim_end_matches(|c: char| !c.is_ascii_hexdigit());
    assert!(text.contains("3 records"), "{text}");
    // Cut off the newest record and roll audit.head back with it: only the head kept
    // elsewhere tells.
    let log = dir.path().join("keys/audit.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
    std::fs::write(&log, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
    let v = cmd(dir.path()).args(["keys", "audit", "--verify"]).output().unwrap();
    assert_eq!(v.status.code(), Some(3), "{}", stderr(&v));
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    std::fs::write(
        dir.path().join("keys/audit.head"),
        format!("{{\"records\":2,\"hash\":\"{}\"}}", second["hash"].as_str().unwrap()),
    )
    .unwrap();
    let v = cmd(dir.path()).args(["keys", "audit", "--verify"]).output().unwrap();
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
    let v = cmd(dir.path())
        .args(["keys", "audit", "--verify", "--records", "3", "--head", head])
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(3), "{}", stderr(&v));
    assert!(stderr(&v).contains("newest records were removed"), "{}", stderr(&v));
}

/// Issue 13: decrypted exports are created 0600, also over an existing world-readable file.
#[test]
fn issue_13_exports_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = seal_lines(dir.path(), 10);
    for (format, name) in [("jsonl", "out.jsonl"), ("csv", "out.csv"), ("parquet", "out.parquet")] {
        let path = dir.path().join(name);
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let q = cmd(dir.path())
            .args(["query", data.to_str().unwrap(), "--format", format, "--output", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(q.status.code(), Some(0), "{}", stderr(&q));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
}

/// Issue 13: concurrent `keys rotate` processes never lose a version.
#[test]
fn issue_13_concurrent_rotate_processes_keep_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = cmd(dir.path()).args(["keys", "create", "race"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let children: Vec<_> = (0..6)
        .map(|_| {
            cmd(dir.path())
                .args(["keys", "rotate", "race"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = wait_output(c, std::time::Duration::from_secs(60));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let show = cmd(dir.path()).args(["keys", "show", "race"]).output().unwrap();
    let text = stdout(&show);
    for v in 1..=7 {
        assert!(text.contains(&format!("race#{v} ")), "version {v} lost: {text}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

/// Issue 13: a running agent takes SIGHUP as "re-read the keys" (it does not die), and seals
/// the segments after a `keys rotate` under the new version.
#[test]
fn issue_13_sighup_rereads_keys_in_a_running_agent() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = write(
        dir.path(),
        "c.toml",
        "[sources.in]\ntype = \"stdin\"\n[sinks.vault]\ntype = \"sealed\"\ninputs = [\"in\"]\nallow_unredacted = true\nmax_rows = 1\n",
    );
    let mut child = cmd(dir.path())
        .args(["run", "--config", cfg.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let sealed = |n: usize| {
        eventually(std::time::Duration::from_secs(30), || {
            let o = cmd(dir.path()).args(["segments", data.to_str().unwrap()]).output().unwrap();
            stdout(&o).matches(".parquet").count() >= n
        })
    };
    stdin.write_all(b"before\nrotation\n").unwrap();
    stdin.flush().unwrap();
    assert!(sealed(1), "no segment sealed");
    let o = cmd(dir.path()).args(["keys", "rotate", "default"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    signal(child.id(), 1); // SIGHUP
    std::thread::sleep(std::time::Duration::from_millis(200));
    stdin.write_all(b"after\n").unwrap();
    drop(stdin);
    let out = wait_output(child, std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "SIGHUP must not stop the agent: {}", stderr(&out));
    let o = cmd(dir.path()).args(["segments", data.to_str().unwrap()]).output().unwrap();
    let listing = stdout(&o);
    assert!(listing.contains("default#1") && listing.contains("default#2"), "{listing}");
    let q = cmd(dir.path()).args(["query", data.to_str().unwrap(), "--format", "jsonl"]).output().unwrap();
    let text = stdout(&q);
    assert!(text.contains("\"before\"") && text.contains("\"after\""), "{text}");
}
