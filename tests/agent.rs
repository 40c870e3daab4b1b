//! The agent core end to end through the real binary: stdin and exec sources, fan-out and
//! fan-in, shutdown draining, and every bad-input case of the configuration.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn stdin_to_console_prints_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{}/config/console.toml", env!("CARGO_MANIFEST_DIR"));
    let out = run_with_input(dir.path(), &["run", "--config", &cfg], b"a\nb\n");
    assert_eq!(stdout(&out), "a\nb\n", "stderr: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn stdin_keeps_a_last_line_without_newline_and_many_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{}/config/console.toml", env!("CARGO_MANIFEST_DIR"));
    let mut input = String::new();
    for i in 0..50_000 {
        input.push_str(&format!("line {i}\n"));
    }
    input.push_str("tail without newline");
    let out = run_with_input(dir.path(), &["run", "--config", &cfg], input.as_bytes());
    assert_eq!(out.status.code(), Some(0));
    let got = stdout(&out);
    assert_eq!(got.lines().count(), 50_001);
    assert_eq!(got, format!("{input}\n"));
}

#[test]
fn long_lines_are_split_into_continued_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        "[sources.in]\ntype = \"stdin\"\nmax_line_bytes = 16\n[sinks.out]\ntype = \"console\"\nencoding = \"json\"\ninputs = [\"in\"]\nallow_unredacted = true\n",
    );
    let line = "x".repeat(40);
    let out = run_with_input(
        dir.path(),
        &["run", "--config", cfg.to_str().unwrap()],
        format!("{line}\nok\n").as_bytes(),
    );
    let recs: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(recs.len(), 4);
    let joined: String = recs[..3].iter().map(|r| r["body"].as_str().unwrap()).collect();
    assert_eq!(joined, line);
    assert_eq!(recs[0]["attributes"]["sealtrail.continued"], true);
    assert_eq!(recs[1]["attributes"]["sealtrail.continued"], true);
    assert!(recs[2]["attributes"].get("sealtrail.continued").is_none());
    assert_eq!(recs[3]["body"], "ok");
}

#[test]
fn invalid_utf8_is_kept_with_replacement_characters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{}/config/console.toml", env!("CARGO_MANIFEST_DIR"));
    let out = run_with_input(dir.path(), &["run", "--config", &cfg], b"ok \xff\xfe end\n");
    assert_eq!(stdout(&out), "ok \u{FFFD}\u{FFFD} end\n");
}

#[test]
fn exec_runs_a_child_captures_both_streams_and_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let handler = format!("{}/examples/handler.py", env!("CARGO_MANIFEST_DIR"));
    let cfg = write(
        dir.path(),
        "sidecar.toml",
        &format!(
            "[sources.fn]\ntype = \"exec\"\ncommand = [\"python3\", \"{handler}\"]\nservice = \"checkout\"\nenv = {{ HANDLER_EXIT_CODE = \"7\", HANDLER_LINES = \"2\" }}\n[sinks.out]\ntype = \"console\"\nencoding = \"json\"\ninputs = [\"fn\"]\nallow_unredacted = true\n"
        ),
    );
    let out = run_with_input(dir.path(), &["run", "--config", cfg.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    let recs: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |stream: &str| -> Vec<String> {
        recs.iter()
            .filter(|r| r["attributes"]["log.iostream"] == stream)
            .map(|r| r["body"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(of("stdout").len(), 2);
    assert_eq!(of("stderr"), ["warning: slow downstream call 0", "warning: slow downstream call 1"]);
    assert!(recs.iter().all(|r| r["service"] == "checkout" && r["source"] == "fn"));
}

/// The shipped sidecar configuration: the example handler's output is redacted and sealed
/// (read back with `sealtrail query`), and the agent exits with the handler's code.
#[test]
fn the_shipped_sidecar_config_runs_the_example_handler() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = dir.path().join("data");
    let out = cmd(root)
        .env("SEALTRAIL_DATA_DIR", &data)
        .env("SEALTRAIL_TAIL_TOKEN", "a-sidecar-test-token-0123456789")
        .env("SEALTRAIL_TAIL_ADDRESS", "127.0.0.1:0")
        .env("SEALTRAIL_OTLP_GRPC_ADDRESS", "127.0.0.1:0")
        .env("SEALTRAIL_OTLP_HTTP_ADDRESS", "127.0.0.1:0")
        .args(["run", "--config", "config/sidecar.toml", "--keys", dir.path().join("keys").to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    let q = cmd(root)
        .args(["query", data.to_str().unwrap(), "--keys", dir.path().join("keys").to_str().unwrap()])
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert_eq!(q.status.code(), Some(0), "{}", stderr(&q));
    let text = stdout(&q);
    assert!(text.contains("processing order 2 for card ****"), "{text}");
    assert!(text.contains("slow downstream call 2"), "{text}");
    assert!(!text.contains("4111"), "{text}");
}

#[test]
fn sigterm_is_forwarded_to_the_child_and_output_drained() {
    let dir = tempfile::tempdir().unwrap();
    let handler = format!("{}/examples/handler.py", env!("CARGO_MANIFEST_DIR"));
    let cfg = write(
        dir.path(),
        "sidecar.toml",
        &format!(
            "[sources.fn]\ntype = \"exec\"\ncommand = [\"python3\", \"{handler}\"]\nenv = {{ HANDLER_WAIT = \"1\", HANDLER_LINES = \"0\" }}\n[sinks.out]\ntype = \"console\"\ninputs = [\"fn\"]\nallow_unredacted = true\n"
        ),
    );
    let mut child = cmd(dir.path())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("output before the signal").unwrap();
        if l == "waiting for a signal" {
            break;
        }
    }
    signal(child.id(), SIGTERM);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(rest, ["handler got signal 15"]);
    assert_eq!(status.code(), Some(143));
}

#[test]
fn sigterm_drains_what_stdin_already_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{}/config/console.toml", env!("CARGO_MANIFEST_DIR"));
    let mut child = cmd(dir.path())
        .args(["run", "--config", &cfg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    stdin.write_all(b"first\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    // A batch of lines and an unfinished one, then the signal while stdin stays open.
    stdin.write_all(b"second\nthird\nunfinished").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id(), SIGTERM);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert_eq!(rest, ["second", "third", "unfinished"]);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    drop(stdin);
}

#[test]
fn fan_out_and_fan_in() {
    let dir = tempfile::tempdir().unwrap();
    let handler = format!("{}/examples/handler.py", env!("CARGO_MANIFEST_DIR"));
    // Two sources into one transform (fan-in), one transform into two sinks (fan-out).
    let cfg = write(
        dir.path(),
        "c.toml",
        &format!(
            "[sources.in]\ntype = \"stdin\"\n[sources.fn]\ntype = \"exec\"\ncommand = [\"python3\", \"{handler}\"]\nenv = {{ HANDLER_EXIT_CODE = \"0\", HANDLER_LINES = \"2\" }}\n\
             [transforms.all]\ntype = \"filter\"\ninputs = [\"in\", \"fn\"]\n\
             [sinks.a]\ntype = \"console\"\ninputs = [\"all\"]\nallow_unredacted = true\n\
             [sinks.b]\ntype = \"console\"\ntarget = \"stderr\"\ninputs = [\"all\"]\nallow_unredacted = true\n"
        ),
    );
    let out = run_with_input(
        dir.path(),
        &["run", "--config", cfg.to_str().unwrap()],
        b"from stdin 1\nfrom stdin 2\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut a: Vec<String> = stdout(&out).lines().map(String::from).collect();
    let mut b: Vec<String> = stderr(&out).lines().map(String::from).collect();
    a.sort();
    b.sort();
    assert_eq!(a.len(), 6, "{a:?}");
    assert_eq!(a, b);
    assert!(a.contains(&"from stdin 2".to_string()));
    assert!(a.contains(&"warning: slow downstream call 1".to_string()));
}

#[test]
fn validate_accepts_every_shipped_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = cmd(root)
                .env("SEALTRAIL_TAIL_TOKEN", "a-validation-token-of-enough-length")
                .args(["validate", "--config", path.to_str().unwrap()])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{}: {}", path.display(), stderr(&out));
            assert!(stdout(&out).contains(": ok"));
            n += 1;
        }
    }
    assert!(n >= 3);
}

#[test]
fn validate_prints_the_topology() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = cmd(root).args(["validate", "--config", "config/console.toml"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("source    stdin (stdin) emits logs"), "{text}");
    assert!(text.contains("sink      out (console) <- stdin"), "{text}");
}

/// Each broken configuration fails with exit code 2 and one message naming the file, the
/// line and column (from the parser's spans) and the component, and nothing starts.
#[test]
fn bad_configurations_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let sink = "[sinks.out]\ntype = \"console\"\ninputs = [\"app\"]\nallow_unredacted = true\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "[sources.app\ntype = \"stdin\"\n".into(), "malformed.toml:1:13: invalid TOML"),
        ("unknown_type", format!("[sources.app]\ntype = \"kafka\"\n{sink}"), "unknown_type.toml:1:10: sources.app: unknown source type `kafka`"),
        ("unknown_field", format!("[sources.app]\ntype = \"stdin\"\ncolor = true\n{sink}"), "unknown_field.toml:3:1: sources.app: unknown field `color`"),
        ("missing_input", "[sources.app]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"nope\"]\nallow_unredacted = true\n".into(), "missing_input.toml:3:8: sinks.out: unknown input `nope`"),
        ("no_inputs", "[sources.app]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\n".into(), "no_inputs.toml:3:8: sinks.out: missing `inputs`"),
        ("cycle", "[sources.app]\ntype = \"stdin\"\n[transforms.a]\ntype = \"filter\"\ninputs = [\"app\", \"b\"]\n[transforms.b]\ntype = \"filter\"\ninputs = [\"a\"]\n[sinks.out]\ntype = \"console\"\ninputs = [\"b\"]\nallow_unredacted = true\n".into(), "cycle.toml:3:13: transforms.a: cycle between a, b"),
        ("unredacted", "[sources.app]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"app\"]\n".into(), "unredacted.toml:3:8: sinks.out: input `app` is not downstream of a `redact` transform"),
        ("no_child", format!("[sources.app]\ntype = \"exec\"\ncommand = [\"definitely-not-a-program-xyz\"]\n{sink}"), "no_child.toml:1:10: sources.app: cannot start `definitely-not-a-program-xyz`"),
        ("bad_glob", format!("[sources.app]\ntype = \"file\"\ninclude = [\"/tmp/[\"]\n{sink}"), "bad_glob.toml:1:10: sources.app: invalid glob `/tmp/[`"),
        ("bad_level", "[sources.app]\ntype = \"stdin\"\n[transforms.f]\ntype = \"filter\"\nlevel = \"loud\"\ninputs = [\"app\"]\n[sinks.out]\ntype = \"console\"\ninputs = [\"f\"]\nallow_unredacted = true\n".into(), "bad_level.toml:3:13: transforms.f: `level`: unknown level `loud`"),
    ];
    for (name, text, want) in cases {
        let path = write(dir.path(), &format!("{name}.toml"), &text);
        for sub in ["validate", "run"] {
            let out = cmd(dir.path())
                .args([sub, "--config", path.file_name().unwrap().to_str().unwrap()])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{name} ({sub}): {err}");
            assert!(err.contains(want), "{name} ({sub}): want {want:?} in {err:?}");
            assert!(!err.contains("panicked"), "{name}: {err}");
            assert!(stdout(&out).is_empty(), "{name} ({sub}) started something");
        }
    }
    // An unreadable configuration file.
    let out = cmd(dir.path()).args(["validate", "--config", "missing.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml: cannot read configuration file"), "{}", stderr(&out));
}

#[test]
fn a_glob_that_matches_nothing_fails_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "f.toml",
        "[sources.app]\ntype = \"file\"\ninclude = [\"nothing-here/*.log\"]\n[sinks.out]\ntype = \"console\"\ninputs = [\"app\"]\nallow_unredacted = true\n",
    );
    let out = cmd(dir.path())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("sources.app: no file matches `include` (nothing-here/*.log)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = cmd(dir.path()).args(["run", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = cmd(dir.path()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Examples:"));
}

/// The agent's own logs (info level, both formats) never carry event contents.
#[test]
fn own_logs_never_contain_event_contents() {
    let dir = tempfile::tempdir().unwrap();
    let handler = format!("{}/examples/handler.py", env!("CARGO_MANIFEST_DIR"));
    let cfg = write(
        dir.path(),
        "c.toml",
        &format!(
            "[sources.in]\ntype = \"stdin\"\n[sources.fn]\ntype = \"exec\"\ncommand = [\"python3\", \"{handler}\"]\n\
             [transforms.f]\ntype = \"filter\"\ninputs = [\"in\", \"fn\"]\n\
             [sinks.out]\ntype = \"console\"\ninputs = [\"f\"]\nallow_unredacted = true\n"
        ),
    );
    for format in ["human", "json"] {
        let out = cmd(dir.path())
            .env("SEALTRAIL_LOG", "info")
            .args(["--log-format", format, "run", "--config", cfg.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = out;
        child.stdin.take().unwrap().write_all(b"CANARY-7f3a stdin line\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(stdout(&out).contains("CANARY-7f3a"));
        assert!(stdout(&out).contains("4111 1111 1111 1111"));
        let err = stderr(&out);
        assert!(err.contains("events_in="), "the counters are logged: {err}");
        assert!(!err.contains("CANARY-7f3a"), "{err}");
        // The card as the input writes it, and its digits run together: a bare `4111` can be
        // part of a log line's timestamp (`…08.841119Z`).
        assert!(!err.contains("4111 1111") && !err.contains("41111111"), "{err}");
        assert!(!err.contains("slow downstream"), "{err}");
    }
}
