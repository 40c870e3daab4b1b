//! `sealtrail sql` (issue 16): SQL over the logs and spans that `sealtrail run` sealed (stdin
//! lines, and OpenTelemetry SDK spans and logs through the otlp source), checked against what
//! `sealtrail query --format jsonl` prints for the same segments: an aggregate, a point query
//! on a trace id, a join of logs and spans, map access, pruning by day directory; and the
//! failures: a missing key and a tampered data page are named and exit 3, or are left out and
//! counted with `--skip-unreadable`. Every query is in the audit log, without its text.
#![cfg(feature = "sql")]

mod otlp_support;
mod sealed_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value as J;

use sealed_common::{BIN, stderr, stdout};

const CARD: &str = "4111 1111 1111 1111";

/// One sealed data directory for every test (read only: tests that break segments copy it).
struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    keys: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let (data, keys) = (tmp.path().join("data"), tmp.path().join("keys"));
        // Logs from stdin, redacted, in segments of at most 150 rows.
        let config = tmp.path().join("stdin.toml");
        std::fs::write(
            &config,
            format!(
                "[sources.in]\ntype = \"stdin\"\n[transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\
                 [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"{}\"\nmax_rows = 150\n",
                data.display()
            ),
        )
        .unwrap();
        let mut lines = String::new();
        let levels = ["INFO", "WARN", "ERROR"];
        for i in 0..600 {
            if i % 5 == 0 {
                lines.push_str(&format!("{} line {i:04} charge card {CARD} declined\n", levels[i % 3]));
            } else {
                lines.push_str(&format!("{} line {i:04} GET /api/orders/{i} took={}ms\n", levels[i % 3], i % 50));
            }
        }
        let env = sealed_common::Env { tmp: tempfile::tempdir().unwrap(), data: data.clone(), keys: keys.clone() };
        env.run_agent(&config, lines.as_bytes());
        // Spans and logs with trace context and attributes from the OpenTelemetry SDK.
        let otlp = format!(
            "[sources.otel]\ntype = \"otlp\"\ngrpc_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\n\
             [transforms.scrub]\ntype = \"redact\"\ninputs = [\"otel\"]\n\
             [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"{}\"\n",
            data.display()
        );
        let agent = otlp_support::Agent::start_with(tmp.path(), "otlp", &otlp, &[("SEALTRAIL_KEYS", keys.to_str().unwrap())]);
        otlp_support::run_python("otlp_export.py", &["grpc", &format!("http://{}", agent.grpc.unwrap())]);
        std::thread::sleep(Duration::from_millis(200));
        let (status, _, log) = agent.stop();
        assert!(status.success(), "{log}");
        Fixture { _tmp: tmp, data, keys }
    })
}

fn sql_in(data: &Path, keys: &Path, query: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["sql", query])
        .arg(data)
        .args(extra)
        .arg("--keys")
        .arg(keys)
        .env_remove("SEALTRAIL_KEYS")
        .output()
        .unwrap()
}

/// `sealtrail sql QUERY <fixture> --format jsonl`, parsed; the query must succeed.
fn sql(query: &str) -> Vec<J> {
    let f = fixture();
    let out = sql_in(&f.data, &f.keys, query, &["--format", "jsonl"]);
    assert!(out.status.success(), "sql `{query}` failed: {}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `sealtrail query <fixture> --signal SIGNAL --format jsonl [extra]`, parsed.
fn query(signal: &str, extra: &[&str]) -> Vec<J> {
    let f = fixture();
    let out = Command::new(BIN)
        .args(["query", f.data.to_str().unwrap(), "--signal", signal, "--format", "jsonl", "--keys"])
        .arg(&f.keys)
        .args(extra)
        .env_remove("SEALTRAIL_KEYS")
        .output()
        .unwrap();
    assert!(out.status.success(), "query failed: {}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn sorted(mut v: Vec<J>) -> Vec<J> {
    v.sort_by_key(|x| x.to_string());
    v
}

/// Keeps `keys` of each row.
fn pick(rows: &[J], keys: &[&str]) -> Vec<J> {
    rows.iter().map(|r| J::Object(keys.iter().map(|k| ((*k).to_owned(), r[*k].clone())).collect())).collect()
}

#[test]
fn every_log_row_equals_the_query_row() {
    let keys = ["time", "observed_time", "severity_number", "body", "service", "trace_id", "span_id"];
    let got = sql("SELECT time, observed_time, severity_number, body, service, trace_id, span_id FROM logs");
    let want = query("logs", &[]);
    assert_eq!(got.len(), 600 + 6);
    assert_eq!(sorted(got), sorted(pick(&want, &keys)));
    // Redacted at rest, and so in SQL too.
    assert!(
        !stdout(&sql_in(&fixture().data, &fixture().keys, "SELECT body FROM logs", &["--format", "csv"]))
            .contains(CARD)
    );
}

#[test]
fn aggregate_by_service_equals_counting_query_rows() {
    let got = sql("SELECT service, count(*) AS n FROM logs GROUP BY service ORDER BY service");
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for r in query("logs", &[]) {
        *want.entry(r["service"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let want: Vec<J> = want.into_iter().map(|(s, n)| serde_json::json!({"service": s, "n": n})).collect();
    assert!(want.len() >= 2, "stdin and otlp services: {want:?}");
    assert_eq!(got, want);
}

#[test]
fn point_query_on_a_trace_id_equals_query_trace_id() {
    let spans = query("spans", &[]);
    assert_eq!(spans.len(), 9);
    let trace = spans[0]["trace_id"].as_str().unwrap().to_owned();
    let got = sql(&format!(
        "SELECT trace_id, span_id, parent_span_id, name, start_time, end_time, status_code FROM spans WHERE trace_id = '{trace}'"
    ));
    let want = query("spans", &["--trace-id", &trace]);
    assert_eq!(got.len(), 3);
    let keys = ["trace_id", "span_id", "parent_span_id", "name", "start_time", "end_time"];
    assert_eq!(sorted(pick(&got, &keys)), sorted(pick(&want, &keys)));
}

#[test]
fn join_logs_to_their_spans() {
    let got = sql("SELECT l.body, s.name, s.span_id FROM logs l JOIN spans s \
         ON l.trace_id = s.trace_id AND l.span_id = s.span_id");
    let spans = query("spans", &[]);
    let mut want = Vec::new();
    for l in query("logs", &[]) {
        for s in &spans {
            if !l["trace_id"].is_null() && l["trace_id"] == s["trace_id"] && l["span_id"] == s["span_id"] {
                want.push(serde_json::json!({"body": l["body"], "name": s["name"], "span_id": s["span_id"]}));
            }
        }
    }
    assert_eq!(want.len(), 6, "every OTLP log record belongs to a child span");
    assert_eq!(sorted(got), sorted(want));
}

#[test]
fn attributes_are_maps() {
    let got = sql(
        "SELECT span_id, attributes['retry'] AS retry, attributes['http.url'] AS url FROM spans WHERE attributes['retry'] = '1'",
    );
    let want: Vec<J> = query("spans", &[])
        .into_iter()
        .filter(|s| s["attributes"]["retry"].to_string().trim_matches('"') == "1")
        .map(|s| {
            serde_json::json!({"span_id": s["span_id"], "retry": "1", "url": s["attributes"]["http.url"]})
        })
        .collect();
    assert_eq!(want.len(), 3);
    assert_eq!(sorted(got), sorted(want));
    // The whole map, as query prints attributes that are text.
    let rows = sql("SELECT attributes FROM logs WHERE attributes['code.function'] IS NOT NULL LIMIT 1");
    assert!(rows.is_empty() || rows[0]["attributes"].is_object());
}

/// Copies the fixture's data directory (segments and manifest) to `to`.
fn copy_data(to: &Path) {
    for seg in sealtrail::segment::find_segments(&fixture().data).unwrap() {
        let rel = seg.strip_prefix(&fixture().data).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&seg, to.join(rel)).unwrap();
    }
}

#[test]
fn time_predicates_prune_whole_days() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_data(&data);
    // One log segment moved to a directory of 2020: its name (its id, which authenticates it)
    // is unchanged, so it reads, but its day says it holds nothing from this week.
    let segs = sealtrail::segment::find_segments(&data.join("logs")).unwrap();
    let old_day = data.join("logs/2020/01/01");
    std::fs::create_dir_all(&old_day).unwrap();
    let moved = old_day.join(segs[0].file_name().unwrap());
    std::fs::rename(&segs[0], &moved).unwrap();
    let moved_rows = {
        let out = sql_in(&moved, &fixture().keys, "SELECT count(*) AS n FROM logs", &["--format", "jsonl"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<J>(stdout(&out).trim()).unwrap()["n"].as_i64().unwrap()
    };
    assert!(moved_rows > 0);
    let count = |q: &str| {
        let out = sql_in(&data, &fixture().keys, q, &["--format", "jsonl", "--stats"]);
        assert!(out.status.success(), "{}", stderr(&out));
        (serde_json::from_str::<J>(stdout(&out).trim()).unwrap()["n"].as_i64().unwrap(), stderr(&out))
    };
    let (all, _) = count("SELECT count(*) AS n FROM logs");
    assert_eq!(all, 606);
    let (recent, stats) = count("SELECT count(*) AS n FROM logs WHERE time >= now() - interval '2 days'");
    assert_eq!(recent, all - moved_rows, "{stats}");
    assert!(stats.contains(" 1 pruned by day"), "{stats}");
    let (old, stats) = count(
        "SELECT count(*) AS n FROM logs WHERE time BETWEEN '2019-12-31T00:00:00Z' AND '2020-01-01T12:00:00Z'",
    );
    // Only the moved segment's day is read (its events are from today, so none match); every
    // segment under today's day is pruned.
    assert_eq!(old, 0);
    let recent_segments = sealtrail::segment::find_segments(&data.join("logs")).unwrap().len() - 1;
    assert!(
        stats.contains(&format!(" 1 segments read, {recent_segments} pruned by day")),
        "every recent segment is pruned by day: {stats}"
    );
}

#[test]
fn a_missing_key_names_the_segment_and_exits_3_unless_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_data(&data);
    // A segment sealed under a key this keyring does not have.
    let other_keys = tmp.path().join("other-keys");
    let env = sealed_common::Env {
        tmp: tempfile::tempdir().unwrap(),
        data: data.clone(),
        keys: other_keys.clone(),
    };
    let config = env.tmp.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[keys]\ndefault = \"elsewhere\"\n[sources.in]\ntype = \"stdin\"\n[sinks.vault]\ntype = \"sealed\"\n\
             inputs = [\"in\"]\nallow_unredacted = true\npath = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    assert!(env.cli_keys(&["keys", "create", "elsewhere"], &other_keys).status.success());
    env.run_agent(&config, b"INFO sealed elsewhere\n");
    let q = "SELECT count(*) AS n FROM logs";
    let out = sql_in(&data, &fixture().keys, q, &["--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("elsewhere#1"), "names the key: {}", stderr(&out));
    assert!(
        stderr(&out).contains(data.join("logs").to_str().unwrap()),
        "names the segment: {}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "no partial answer");
    let out = sql_in(&data, &fixture().keys, q, &["--format", "jsonl", "--skip-unreadable"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(serde_json::from_str::<J>(stdout(&out).trim()).unwrap()["n"], 606);
    assert!(stderr(&out).contains("1 unreadable segment(s) left out"), "{}", stderr(&out));
}

#[test]
fn a_tampered_data_page_is_named_and_exits_3_unless_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_data(&data);
    let seg = sealtrail::segment::find_segments(&data.join("logs")).unwrap()[0].clone();
    let rows_in_seg = {
        let out = sql_in(&seg, &fixture().keys, "SELECT count(*) AS n FROM logs", &["--format", "jsonl"]);
        serde_json::from_str::<J>(stdout(&out).trim()).unwrap()["n"].as_i64().unwrap()
    };
    // One bit of the first page's ciphertext: the footer still authenticates, the page not.
    let mut bytes = std::fs::read(&seg).unwrap();
    assert_eq!(&bytes[..4], b"PARE");
    bytes[4 + 4 + 12 + 1] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();
    let q = "SELECT body FROM logs";
    let out = sql_in(&data, &fixture().keys, q, &["--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(seg.to_str().unwrap()), "names the segment: {}", stderr(&out));
    let out = sql_in(
        &data,
        &fixture().keys,
        "SELECT count(*) AS n FROM logs",
        &["--format", "jsonl", "--skip-unreadable"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        serde_json::from_str::<J>(stdout(&out).trim()).unwrap()["n"].as_i64().unwrap(),
        606 - rows_in_seg
    );
    assert!(stderr(&out).contains(seg.to_str().unwrap()), "{}", stderr(&out));
}

#[test]
fn statements_that_write_are_refused_and_the_audit_log_has_no_query_text() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("plain.parquet");
    let copy = format!("COPY (SELECT body FROM logs) TO '{}'", target.display());
    let out = sql_in(&f.data, &f.keys, &copy, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!target.exists());
    // The decrypted Parquet export, only through its flag; 0600.
    let secret_looking = "SELECT body FROM logs WHERE body LIKE '%line 0001 %'";
    let out =
        sql_in(&f.data, &f.keys, secret_looking, &["--write-decrypted-parquet", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
    let audit = std::fs::read_to_string(f.keys.join("audit.jsonl")).unwrap();
    let last: J = serde_json::from_str(
        audit.lines().rev().find(|l| l.contains("decrypted parquet")).unwrap_or_else(|| panic!("{audit}")),
    )
    .unwrap();
    assert!(!audit.contains("line 0001"), "the query text stays out of the audit log");
    assert_eq!(last["filters"]["tables"], serde_json::json!(["logs"]));
    assert!(!last["segments"].as_array().unwrap().is_empty());
    assert!(last["keys"].as_array().unwrap_or_else(|| panic!("{last}")).iter().any(|k| k == "default#1"));
}

/// Crypto-shredding is intended, not an error: after `keys destroy`, the segments under that
/// key are named as shredded, counted and left out, and the exit code is 0; `--strict` makes
/// it 3 and runs nothing.
#[test]
fn shredded_segments_are_left_out_and_fail_only_with_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, keys) = (tmp.path().join("data"), tmp.path().join("keys"));
    copy_data(&data);
    std::fs::create_dir_all(&keys).unwrap();
    for e in std::fs::read_dir(&fixture().keys).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), keys.join(e.file_name())).unwrap();
        }
    }
    let destroy = Command::new(BIN)
        .args(["keys", "destroy", "default", "--yes", "--keys"])
        .arg(&keys)
        .env_remove("SEALTRAIL_KEYS")
        .output()
        .unwrap();
    assert!(destroy.status.success(), "{}", stderr(&destroy));
    let out = sql_in(&data, &keys, "SELECT count(*) AS n FROM logs", &["--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(serde_json::from_str::<J>(stdout(&out).trim()).unwrap()["n"].as_i64(), Some(0));
    assert!(stderr(&out).contains("shredded (key default#1 was destroyed)"), "{}", stderr(&out));
    let out = sql_in(&data, &keys, "SELECT count(*) AS n FROM logs", &["--format", "jsonl", "--strict"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}
