//! The sealed sink and the operator commands end to end, through the real binary: segments
//! written by `sealtrail run`, listed by `segments`, read back by `query` with every filter
//! and format; keys managed by `keys`; the audit log chained.

mod sealed_common;

use std::os::unix::fs::PermissionsExt;

use sealed_common::*;

#[test]
fn run_then_query_returns_every_line_in_order() {
    let env = Env::new();
    let input = lines(20_000, "round");
    env.run_agent(&env.config(""), &input);
    let segs = env.segments();
    assert_eq!(segs.len(), 1);
    let name = segs[0].file_name().unwrap().to_str().unwrap();
    assert!(sealtrail::segment::SegmentId::of_path(&segs[0]).is_some(), "{name}");
    assert!(segs[0].starts_with(env.data.join("logs")));
    // Nothing left in flight, the default key was created 0600.
    let inflight: Vec<_> = std::fs::read_dir(env.data.join(".inflight")).unwrap().collect();
    assert!(inflight.is_empty());
    let mode = std::fs::metadata(env.keys.join("default.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let out = env.cli(&["query", env.data.to_str().unwrap(), "--format", "jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want: Vec<String> = String::from_utf8(input).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(bodies(&out), want);
}

#[test]
fn rotation_by_rows_and_segments_listing() {
    let env = Env::new();
    env.run_agent(&env.config("max_rows = 1000"), &lines(4500, "rot"));
    assert_eq!(env.segments().len(), 5);

    let out = env.cli(&["segments", env.data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("default#1").count(), 5, "{text}");
    // Without the keys flag nothing is decrypted: no row counts.
    let plain = std::process::Command::new(BIN)
        .args(["segments", env.data.to_str().unwrap()])
        .env_remove("SEALTRAIL_KEYS")
        .output()
        .unwrap();
    assert!(!stdout(&plain).contains("ROWS"));
    assert!(text.contains("ROWS"));
    let rows: u64 =
        text.lines().skip(1).map(|l| l.split_whitespace().nth(5).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(rows, 4500);
}

#[test]
fn query_filters_and_formats() {
    let env = Env::new();
    let mut input = Vec::new();
    for i in 0..3000 {
        let level = ["INFO", "WARN", "ERROR"][i % 3];
        input.extend_from_slice(format!("{level} item {i} done\n").as_bytes());
    }
    env.run_agent(&env.config("max_rows = 1000"), &input);
    let data = env.data.to_str().unwrap();

    let out = env.cli(&["query", data, "--grep", r"item 2\d\d\d done", "--format", "jsonl"]);
    assert_eq!(bodies(&out).len(), 1000);

    // The stdin source sets no severity: every record is below `warn`.
    let out = env.cli(&["query", data, "--level", "warn", "--format", "jsonl"]);
    assert!(out.status.success());
    assert_eq!(bodies(&out).len(), 0);

    let out = env.cli(&["query", data, "--since", "1h", "--until", "now", "--format", "jsonl"]);
    assert_eq!(bodies(&out).len(), 3000);
    let out = env.cli(&["query", data, "--until", "2001-01-01T00:00:00Z", "--format", "jsonl", "--stats"]);
    assert_eq!(bodies(&out).len(), 0);
    // Pruned by the time range of their footer statistics (their names bound nothing).
    assert!(stderr(&out).contains("3 pruned by time"), "{}", stderr(&out));

    let out = env.cli(&["query", data, "--service", "nope-*", "--format", "jsonl"]);
    assert_eq!(bodies(&out).len(), 0);
    let out = env.cli(&[
        "query",
        data,
        "--trace-id",
        "0123456789abcdef0123456789abcdef",
        "--format",
        "jsonl",
        "--stats",
    ]);
    assert_eq!(bodies(&out).len(), 0);
    let out = env.cli(&["query", data, "--signal", "spans", "--format", "jsonl"]);
    assert_eq!(bodies(&out).len(), 0);

    let out = env.cli(&["query", data, "--grep", "item 7 done", "--format", "csv"]);
    let csv = stdout(&out);
    assert!(csv.starts_with("signal,time,level,service,trace_id,span_id,text\n"), "{csv}");
    assert!(csv.contains(",INFO item 7 done\n") || csv.contains("item 7 done"), "{csv}");

    let out = env.cli(&["query", data, "--grep", "item 8 done", "--format", "table"]);
    let table = stdout(&out);
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.contains("ERROR item 8 done"));

    // Parquet needs an explicit output file; the copy is plain (readable without keys).
    let out = env.cli(&["query", data, "--format", "parquet"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let copy = env.tmp.path().join("copy.parquet");
    let out = env.cli(&[
        "query",
        data,
        "--format",
        "parquet",
        "--output",
        copy.to_str().unwrap(),
        "--grep",
        "^WARN",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let f = std::fs::File::open(&copy).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 1000);

    let bad = env.cli(&["query", data, "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--since `yesterday`"), "{}", stderr(&bad));
}

#[test]
fn crash_leftovers_are_moved_aside_not_deleted() {
    let env = Env::new();
    let inflight = env.data.join(".inflight");
    std::fs::create_dir_all(&inflight).unwrap();
    std::fs::write(inflight.join("1700000000000-00000000000000aa.parquet"), b"half a segment").unwrap();
    let out = env.run_agent(&env.config(""), &lines(10, "x"));
    let broken = inflight.join("broken/1700000000000-00000000000000aa.parquet");
    assert_eq!(std::fs::read(&broken).unwrap(), b"half a segment");
    assert!(stderr(&out).contains("moved aside"), "{}", stderr(&out));
    assert_eq!(env.segments().len(), 1);
}

#[test]
fn keys_commands_never_print_material() {
    let env = Env::new();
    let out = env.cli(&["keys", "create", "payments"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = std::fs::read_to_string(env.keys.join("payments.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    let m1 = v["versions"][0]["material"].as_str().unwrap().to_owned();
    assert!(m1.starts_with("base64:"));

    assert!(env.cli(&["keys", "rotate", "payments"]).status.success());
    let show = env.cli(&["keys", "show", "payments"]);
    let list = env.cli(&["keys", "list"]);
    let file = std::fs::read_to_string(env.keys.join("payments.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    let m2 = v["versions"][1]["material"].as_str().unwrap().to_owned();
    for o in [&show, &list] {
        assert!(o.status.success());
        let all = format!("{}{}", stdout(o), stderr(o));
        assert!(!all.contains(&m1[7..]) && !all.contains(&m2[7..]), "material printed: {all}");
    }
    assert!(stdout(&show).contains("payments#2  created") && stdout(&show).contains("(encrypts)"));
    assert!(stdout(&list).contains("payments"));

    // Import from a file; refuse a duplicate; refuse a group-readable key file.
    let mat = env.tmp.path().join("m.txt");
    std::fs::write(&mat, format!("base64:{}\n", "A".repeat(43) + "=")).unwrap();
    assert!(env.cli(&["keys", "import", "imported", mat.to_str().unwrap()]).status.success());
    assert_eq!(env.cli(&["keys", "create", "payments"]).status.code(), Some(2));
    std::fs::set_permissions(env.keys.join("imported.json"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = env.cli(&["keys", "show", "imported"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("readable by group or others"), "{}", stderr(&o));
}

#[test]
fn environment_key_encrypts_and_decrypts() {
    use base64::Engine;
    let env = Env::new();
    let material = format!("base64:{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
    let cfg = env.tmp.path().join("env.toml");
    let sink = std::fs::read_to_string(env.config("")).unwrap();
    std::fs::write(&cfg, format!("{sink}\n[keys]\ndefault = \"lambda-key\"\n")).unwrap();
    env.run_agent_env(&cfg, &lines(10, "envkey"), &[("SEALTRAIL_KEY_LAMBDA_KEY", &material)]);
    assert!(!env.keys.join("lambda-key.json").exists(), "an environment key is never written to disk");
    // A query needs a keyring directory for its audit record, and never creates one (issue 13).
    let query_env_key = || {
        std::process::Command::new(BIN)
            .args(["query", env.data.to_str().unwrap(), "--format", "jsonl", "--keys"])
            .arg(&env.keys)
            .env("SEALTRAIL_KEY_LAMBDA_KEY", &material)
            .output()
            .unwrap()
    };
    let q = query_env_key();
    assert_eq!(q.status.code(), Some(1), "{}", stderr(&q));
    assert!(stderr(&q).contains("refusing to decrypt") && stdout(&q).is_empty(), "{}", stderr(&q));
    assert!(!env.keys.exists());
    std::fs::create_dir(&env.keys).unwrap();
    let q = std::process::Command::new(BIN)
        .args(["query", env.data.to_str().unwrap(), "--format", "jsonl", "--keys"])
        .arg(&env.keys)
        .env("SEALTRAIL_KEY_LAMBDA_KEY", &material)
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", stderr(&q));
    assert_eq!(bodies(&q).len(), 10);
    // Without the variable the key is missing: exit 3, naming the key id.
    let q = env.cli(&["query", env.data.to_str().unwrap(), "--format", "jsonl"]);
    assert_eq!(q.status.code(), Some(3));
    assert!(stderr(&q).contains("lambda-key#1"), "{}", stderr(&q));
}

#[test]
fn audit_log_records_queries_and_detects_edits() {
    let env = Env::new();
    env.run_agent(&env.config(""), &lines(10, "audit"));
    let data = env.data.to_str().unwrap();
    for _ in 0..3 {
        assert!(env.cli(&["query", data, "--grep", "audit", "--format", "jsonl"]).status.success());
    }
    let ok = env.cli(&["keys", "audit", "--verify"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("3 records"));
    let path = env.keys.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["keys"][0], "default#1");
    assert_eq!(first["filters"]["grep"], "audit");
    assert!(first["segments"][0].as_str().unwrap().ends_with(".parquet"));
    std::fs::write(&path, text.replacen("\"grep\":\"audit\"", "\"grep\":\"other\"", 1)).unwrap();
    let bad = env.cli(&["keys", "audit", "--verify"]);
    assert_eq!(bad.status.code(), Some(3), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("line 1"), "{}", stderr(&bad));
}
