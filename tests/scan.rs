//! `sealtrail scan` as a real child process: findings per detector, input and field with
//! positions and never the values, on files, standard input and sealed segments (decrypted
//! with the keyring, audited like `query`); exit codes 0, 1, 2 and 3.

mod sealed_common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use sealed_common::*;

fn scan(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("scan")
        .args(args)
        .env_remove("SEALTRAIL_KEYS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let t = std::thread::spawn(move || {
        let _ = w.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    t.join().unwrap();
    out
}

const SECRETS: &[&str] =
    &["4111111111111111", "hunter2", "AKIAIOSFODNN7EXAMPLE", "MIIEowIBAAKCAQEA", "s3cr3tpw"];

fn assert_no_values(o: &Output) {
    let text = format!("{}{}", stdout(o), stderr(o));
    for s in SECRETS {
        assert!(!text.contains(s), "`{s}` in output:\n{text}");
    }
    assert!(!text.contains("IOSFODNN7"), "{text}");
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// (input, field, detector, count, positions) of every finding.
fn findings(v: &serde_json::Value) -> Vec<(String, String, String, u64, Vec<u64>)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["input"].as_str().unwrap().rsplit('/').next().unwrap().to_owned(),
                f["field"].as_str().unwrap().to_owned(),
                f["detector"].as_str().unwrap().to_owned(),
                f["count"].as_u64().unwrap(),
                f["positions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect(),
            )
        })
        .collect()
}

#[test]
fn files_and_stdin_report_positions_never_values() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(
        &log,
        "start\npaid 4111111111111111 ok\nlogin password=hunter2 user=bob\n\
         -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc==\n-----END RSA PRIVATE KEY-----\n\
         key AKIAIOSFODNN7EXAMPLE and 4111 1111 1111 1111\n",
    )
    .unwrap();
    let clean = dir.path().join("clean.log");
    std::fs::write(&clean, "nothing 12345 here\npassword_reset=true\n").unwrap();
    let o = scan(
        &["--format", "json", log.to_str().unwrap(), clean.to_str().unwrap(), "-"],
        b"a\nb Authorization: Bearer s3cr3tpw\n",
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_no_values(&o);
    let v = json(&o);
    assert_eq!(v["total"], 6);
    let l = |s: &str| s.to_owned();
    assert_eq!(
        findings(&v),
        [
            (l("app.log"), l("line"), l("card"), 2, vec![2, 8]),
            (l("app.log"), l("line"), l("aws_access_key"), 1, vec![8]),
            (l("app.log"), l("line"), l("private_key"), 1, vec![5]),
            (l("app.log"), l("line"), l("secret_field"), 1, vec![3]),
            (l("-"), l("line"), l("authorization"), 1, vec![2]),
        ]
    );
    // The table names inputs, fields, detectors and positions.
    let o = scan(&[log.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(1));
    assert_no_values(&o);
    let t = stdout(&o);
    assert!(t.starts_with("INPUT"), "{t}");
    assert!(t.contains("private_key") && t.contains("lines 5"), "{t}");
    assert!(t.contains("5 finding(s) in 1 of 1 input(s)"), "{t}");
    // Clean input: exit 0.
    let o = scan(&[clean.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("0 finding(s) in 0 of 1 input(s)"));
    let o = scan(&[], b"just text\n");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn usage_and_unreadable_inputs() {
    let o = scan(&["--format", "xml"], b"");
    assert_eq!(o.status.code(), Some(2));
    let o = scan(&["-", "-"], b"");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.log");
    std::fs::write(&log, "card 4111111111111111\n").unwrap();
    let missing = dir.path().join("missing.log");
    let o = scan(&["--format", "json", missing.to_str().unwrap(), log.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.log"), "{}", stderr(&o));
    // The readable input is still reported.
    assert_eq!(json(&o)["total"], 1);
    let bad_policy = dir.path().join("p.json");
    std::fs::write(&bad_policy, "{}").unwrap();
    let o = scan(&["--policy", bad_policy.to_str().unwrap(), log.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn sealed_segments_per_column_and_row_audited() {
    let env = Env::new();
    // An agent without redaction (allow_unredacted) seals secrets: what scan is for.
    let config = env.config("");
    env.run_agent(&config, b"fine line\nleaked 4111111111111111\nalso fine\nlogin password=hunter2\n");
    assert!(!env.segments().is_empty());
    let audit = env.keys.join("audit.jsonl");
    let before = std::fs::read_to_string(&audit).map(|s| s.lines().count()).unwrap_or(0);
    let mut args = vec!["scan", "--format", "json"];
    let data = env.data.to_str().unwrap().to_owned();
    args.push(&data);
    let o = env.cli(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_no_values(&o);
    let v = json(&o);
    let f = findings(&v);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f.iter().any(|x| x.1 == "body" && x.2 == "card" && x.4 == [1]), "{f:?}");
    assert!(f.iter().any(|x| x.1 == "body" && x.2 == "secret_field" && x.4 == [3]), "{f:?}");
    assert_eq!(v["findings"][0]["position_unit"], "row");
    // The scan is in the audit log, as a query is.
    let records = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(records.lines().count(), before + 1);
    assert!(records.lines().last().unwrap().contains("\"scan\""), "{records}");
    // With another keyring the segment cannot be decrypted: exit 3.
    let other = env.tmp.path().join("other-keys");
    std::fs::create_dir(&other).unwrap();
    let o = env.cli_keys(&["scan", &data], &other);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_no_values(&o);
}

/// Issue 12: a line longer than the 1 MiB read piece, with a card number cut by the piece
/// boundary (line 2) and a credential key cut by it (line 3), and a long password value that
/// runs over it (line 4): each is found exactly once, at its line.
#[test]
fn findings_across_the_read_piece_boundary_count_once() {
    const PIECE: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("long.log");
    let filler = |n: usize| "a ".repeat(n / 2) + &"a".repeat(n % 2);
    let mut text = String::from("start\n");
    // Each long line starts right after the previous one's line break, so its first piece
    // is PIECE bytes of it.
    for (secret, cut) in [("4111111111111111", 8), ("password=hunter2", 5), ("password=", 100)] {
        let mut line = filler(PIECE - cut - 1);
        line.push(' ');
        line.push_str(secret);
        if secret == "password=" {
            line.push_str(&"Q".repeat(9000));
        }
        line.push_str(" ok\n");
        assert_eq!(&line.as_bytes()[PIECE - cut..PIECE - cut + 4], &secret.as_bytes()[..4]);
        text.push_str(&line);
    }
    text.push_str("end 4111111111111111\n");
    std::fs::write(&log, &text).unwrap();
    let o = scan(&["--format", "json", log.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_no_values(&o);
    let l = |s: &str| s.to_owned();
    assert_eq!(
        findings(&json(&o)),
        [
            (l("long.log"), l("line"), l("card"), 2, vec![2, 5]),
            (l("long.log"), l("line"), l("secret_field"), 2, vec![3, 4]),
        ]
    );
}
