//! Spark reads sealed segments (issue 16): PySpark in local mode, with parquet-java's
//! `PropertiesDrivenCryptoFactory` and sealtrail's read-only KMS client (contrib/spark), reads
//! the logs and spans that `sealtrail run` sealed and gets exactly the rows and values that
//! `sealtrail query --format jsonl` prints, field by field; a tampered segment, a wrong key, a
//! missing key or version and a key file readable by others all fail with a message that says
//! what; and the client refuses to wrap keys.
//!
//! Needs a JDK (javac, jar), Bouncy Castle (`/usr/share/java/bcprov.jar`, or `BCPROV_JAR`) and
//! the Python of tests/interop/requirements.txt (`SEALTRAIL_PYTHON`, with pyspark). Without
//! Java on this machine the test says so and passes; under CI (`CI` set) it fails instead, as
//! .ci/run installs the JDK and Bouncy Castle.

mod otlp_support;
mod sealed_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value as J;

use sealed_common::Env;

/// A key supplied through the environment, as a Lambda function would (32 bytes of 0x07).
const ENV_KEY: &str = "base64:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const CARD: &str = "4111 1111 1111 1111";

/// `true` when `java -version` runs.
fn java_present() -> bool {
    Command::new("java").arg("-version").output().is_ok_and(|o| o.status.success())
}

/// The segment files under `dir`.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    sealtrail::segment::find_segments(dir).unwrap_or_default()
}

/// Runs `sealtrail run` on `lines` with stdin → redact → sealed into `data`, with the keyring
/// `keys`, `default_key` as the key and `env` added to the environment.
fn seal(env: &Env, data: &Path, keys: &Path, default_key: &str, lines: &[u8], vars: &[(&str, &str)]) {
    let config = env.tmp.path().join(format!("seal-{default_key}.toml"));
    std::fs::write(
        &config,
        format!(
            "[keys]\ndefault = \"{default_key}\"\n\n[sources.in]\ntype = \"stdin\"\n\n\
             [transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\n\
             [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"{}\"\nmax_rows = 400\n",
            data.display()
        ),
    )
    .unwrap();
    let mut c = Command::new(sealed_common::BIN);
    c.args(["run", "--config"]).arg(&config).arg("--keys").arg(keys).env_remove("SEALTRAIL_KEYS");
    for (k, v) in vars {
        c.env(k, v);
    }
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.to_vec();
    let w = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success(), "sealtrail run failed: {}", sealed_common::stderr(&out));
}

/// Log lines with levels, a card number to redact and some plain ones.
fn log_lines(n: usize, prefix: &str) -> Vec<u8> {
    let levels = ["INFO", "WARN", "ERROR", "DEBUG"];
    let mut v = Vec::new();
    for i in 0..n {
        let line = if i % 3 == 0 {
            format!("{} {prefix} {i:05} charge card {CARD} declined\n", levels[i % 4])
        } else {
            format!("{} {prefix} {i:05} GET /api/orders/{i} status=200 took={}ms\n", levels[i % 4], i % 97)
        };
        v.extend_from_slice(line.as_bytes());
    }
    v
}

/// `sealtrail query DATA --signal SIGNAL --format jsonl`, parsed, without the `signal` key.
fn query(data: &Path, keys: &Path, signal: &str) -> Vec<J> {
    let out = Command::new(sealed_common::BIN)
        .args(["query", data.to_str().unwrap(), "--signal", signal, "--format", "jsonl", "--keys"])
        .arg(keys)
        .env_remove("SEALTRAIL_KEYS")
        .env("SEALTRAIL_KEY_ENV_KEY", ENV_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "query failed: {}", sealed_common::stderr(&out));
    sealed_common::stdout(&out)
        .lines()
        .map(|l| {
            let mut v: J = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("signal");
            v
        })
        .collect()
}

/// A row as Spark returned it, in the form `query --format jsonl` prints the same event:
/// timestamps (long nanoseconds through `spark.sql.legacy.parquet.nanosAsLong`; 0 or null is
/// unknown) as RFC 3339, an empty severity text as its level's name, and a span's `events` and
/// `links` columns (JSON text) as the arrays they hold. Everything else is compared as stored.
fn as_query_json(signal: &str, row: &J) -> J {
    let mut m = row.as_object().unwrap().clone();
    let times: &[&str] =
        if signal == "logs" { &["time", "observed_time"] } else { &["start_time", "end_time"] };
    for t in times {
        let v = match m[*t].as_i64() {
            None | Some(0) => J::Null,
            Some(n) => J::String(sealtrail::event::json::rfc3339(n)),
        };
        m.insert((*t).into(), v);
    }
    if signal == "logs" && m["severity_text"].as_str() == Some("") {
        let n = m["severity_number"].as_i64().unwrap() as i32;
        m.insert("severity_text".into(), sealtrail::event::severity::level_name(n).into());
    }
    if signal == "spans" {
        for col in ["events", "links"] {
            let text = m[col].as_str().unwrap_or_default();
            let v = if text.is_empty() { J::Array(vec![]) } else { serde_json::from_str(text).unwrap() };
            m.insert(col.into(), v);
        }
    }
    J::Object(m)
}

/// Checks that Spark's rows are exactly the query's rows: the same multiset of events, each
/// with every field equal; a difference names the row and the field.
fn assert_same_rows(signal: &str, spark: &[J], query: &[J]) {
    let key = |v: &J| serde_json::to_string(v).unwrap();
    let mut got: Vec<J> = spark.iter().map(|r| as_query_json(signal, r)).collect();
    let mut want = query.to_vec();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got.len(), want.len(), "{signal}: Spark returned {} rows, query {}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let (g, w) = (g.as_object().unwrap(), w.as_object().unwrap());
        let gk: BTreeSet<&String> = g.keys().collect();
        let wk: BTreeSet<&String> = w.keys().collect();
        assert_eq!(gk, wk, "{signal} row {i}: Spark's columns differ from query's fields");
        for f in wk {
            assert_eq!(g[f], w[f], "{signal} row {i}, field `{f}`: Spark {} vs query {}", g[f], w[f]);
        }
    }
}

/// Flips one byte of a copy of `seg` inside the first encrypted module: the file starts with
/// the magic `PARE` (4 bytes), then the first column chunk's first page header, framed as
/// length (4), nonce (12), ciphertext, tag. Every reader must read it, unlike a byte in the
/// page index, which a reader that does not filter by it never authenticates.
fn tampered_copy(seg: &Path, dir: &Path) -> PathBuf {
    const FIRST_CIPHERTEXT_BYTE: usize = 4 + 4 + 12;
    std::fs::create_dir_all(dir).unwrap();
    let to = dir.join(seg.file_name().unwrap());
    let mut bytes = std::fs::read(seg).unwrap();
    assert_eq!(&bytes[..4], b"PARE", "an encrypted-footer Parquet file");
    bytes[FIRST_CIPHERTEXT_BYTE + 1] ^= 0x01;
    std::fs::write(&to, bytes).unwrap();
    to
}

#[test]
fn spark_reads_sealed_segments_through_the_keyring_kms_client() {
    if !java_present() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the Spark interop test: .ci/run installs openjdk-17-jdk-headless and libbcprov-java"
        );
        eprintln!(
            "SKIPPED spark_interop: no `java` on this machine (install openjdk-17-jdk-headless and \
             libbcprov-java to run it)"
        );
        return;
    }
    let started = Instant::now();
    let env = Env::new();
    let root = env.tmp.path();
    let python = otlp_support::python();

    // The client jar, built by the same script a user runs.
    let jar = root.join("sealtrail-spark.jar");
    let build = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/spark/build.sh"))
        .arg(&jar)
        .env("PYTHON", &python)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "contrib/spark/build.sh failed: {}{}",
        sealed_common::stdout(&build),
        sealed_common::stderr(&build)
    );
    let bcprov = std::env::var("BCPROV_JAR").unwrap_or_else(|_| "/usr/share/java/bcprov.jar".into());

    // Logs under default#1, then default#2 after a rotation, then a key from the environment.
    seal(&env, &env.data, &env.keys, "default", &log_lines(1000, "first"), &[]);
    assert!(env.cli(&["keys", "rotate", "default"]).status.success());
    seal(&env, &env.data, &env.keys, "default", &log_lines(30, "second"), &[]);
    seal(&env, &env.data, &env.keys, "env-key", &log_lines(20, "env"), &[("SEALTRAIL_KEY_ENV_KEY", ENV_KEY)]);
    // Spans and log records with trace context, attributes, events and a status, from the
    // OpenTelemetry SDK through the otlp source.
    let config = format!(
        "[sources.otel]\ntype = \"otlp\"\ngrpc_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\n\
         [transforms.scrub]\ntype = \"redact\"\ninputs = [\"otel\"]\n\
         [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"{}\"\n",
        env.data.display()
    );
    let agent = otlp_support::Agent::start(root, "otlp", &config);
    otlp_support::run_python("otlp_export.py", &["grpc", &format!("http://{}", agent.grpc.unwrap())]);
    std::thread::sleep(Duration::from_millis(200));
    let (status, _, log) = agent.stop();
    assert!(status.success(), "{log}");

    let logs = query(&env.data, &env.keys, "logs");
    let spans = query(&env.data, &env.keys, "spans");
    assert_eq!(logs.len(), 1000 + 30 + 20 + 6);
    assert_eq!(spans.len(), 9);
    assert!(parquet_files(&env.data.join("logs")).len() >= 5, "several log segments");

    // Segments that must not open.
    let tampered = root.join("bad-tampered");
    let good = parquet_files(&env.data.join("logs"));
    let seg = tampered_copy(&good[0], &tampered.join("logs"));
    let q = Command::new(sealed_common::BIN)
        .args(["query", seg.to_str().unwrap(), "--format", "jsonl", "--keys"])
        .arg(&env.keys)
        .output()
        .unwrap();
    assert_eq!(q.status.code(), Some(3), "sealtrail itself refuses the tampered copy");
    // A keyring of another installation: its default#1 is other material, and after two
    // rotations it writes default#3, a version ours lacks; and a key `orphan` we do not have.
    let other_keys = root.join("other-keys");
    let foreign = root.join("bad-foreign");
    let version = root.join("bad-version");
    let orphan = root.join("bad-orphan");
    seal(&env, &foreign, &other_keys, "default", &log_lines(5, "foreign"), &[]);
    for _ in 0..2 {
        assert!(env.cli_keys(&["keys", "rotate", "default"], &other_keys).status.success());
    }
    seal(&env, &version, &other_keys, "default", &log_lines(5, "version"), &[]);
    assert!(env.cli_keys(&["keys", "create", "orphan"], &other_keys).status.success());
    seal(&env, &orphan, &other_keys, "orphan", &log_lines(5, "orphan"), &[]);
    // A key of ours whose file becomes readable by its group after sealing.
    let loose = root.join("bad-loose");
    assert!(env.cli(&["keys", "create", "loose"]).status.success());
    seal(&env, &loose, &env.keys, "loose", &log_lines(5, "loose"), &[]);
    let loose_file = env.keys.join("loose.json");
    std::fs::set_permissions(&loose_file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let sealed_at = started.elapsed();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/spark_read.py");
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let args: Vec<String> = vec![
        p(&script),
        "--jars".into(),
        format!("{},{bcprov}", jar.display()),
        "--keyring".into(),
        p(&env.keys),
        "--read".into(),
        "logs".into(),
        p(&env.data.join("logs")),
        "--read".into(),
        "spans".into(),
        p(&env.data.join("spans")),
        "--read".into(),
        "tampered".into(),
        p(&tampered.join("logs")),
        "--read".into(),
        "foreign".into(),
        p(&foreign.join("logs")),
        "--read".into(),
        "version".into(),
        p(&version.join("logs")),
        "--read".into(),
        "orphan".into(),
        p(&orphan.join("logs")),
        "--read".into(),
        "loose".into(),
        p(&loose.join("logs")),
        "--write".into(),
        "write".into(),
        p(&root.join("spark-written")),
    ];
    let out = Command::new(&python)
        .args(&args)
        .env("SEALTRAIL_KEY_ENV_KEY", ENV_KEY)
        .env_remove("SEALTRAIL_KEYS")
        .output()
        .unwrap();
    let (stdout, stderr) = (sealed_common::stdout(&out), sealed_common::stderr(&out));
    assert!(out.status.success(), "spark_read.py failed:\n{stdout}\n{stderr}");
    let results: Vec<J> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for r in &results {
        match r["error"].as_str() {
            Some(e) => eprintln!("spark_interop: {}: error:\n  {}", r["label"], e.replace('\n', "\n  ")),
            None => {
                eprintln!("spark_interop: {}: {} rows", r["label"], r["rows"].as_array().map_or(0, Vec::len))
            }
        }
    }
    let case = |label: &str| -> &J {
        results
            .iter()
            .find(|r| r["label"] == label)
            .unwrap_or_else(|| panic!("no result for {label}: {stdout}"))
    };
    let rows = |label: &str| -> Vec<J> {
        let r = case(label);
        assert!(r.get("error").is_none(), "Spark failed to read {label}: {}\n{stderr}", r["error"]);
        r["rows"].as_array().unwrap().clone()
    };
    let error = |label: &str| -> String {
        let r = case(label);
        let rows = r["rows"].as_array().map_or(0, Vec::len);
        r["error"]
            .as_str()
            .unwrap_or_else(|| panic!("Spark read {label} without an error ({rows} rows)"))
            .to_owned()
    };

    assert_same_rows("logs", &rows("logs"), &logs);
    assert_same_rows("spans", &rows("spans"), &spans);
    // The comparison saw real content: redacted bodies, trace context, span events.
    assert!(logs.iter().any(|l| l["body"].as_str().unwrap().contains("charge card **** declined")));
    assert!(logs.iter().all(|l| !l["body"].as_str().unwrap().contains(CARD)));
    assert!(logs.iter().any(|l| l["trace_id"].is_string() && l["resource"]["service.name"].is_string()));
    assert!(spans.iter().any(|s| !s["events"].as_array().unwrap().is_empty()));

    let tampered_err = error("tampered");
    assert!(
        tampered_err.contains("Tag mismatch") || tampered_err.to_lowercase().contains("decrypt"),
        "tampered segment: {tampered_err}"
    );
    let foreign_err = error("foreign");
    assert!(
        foreign_err.contains("the data key wrapped under `default#1` cannot be unwrapped"),
        "foreign key: {foreign_err}"
    );
    let version_err = error("version");
    assert!(
        version_err.contains("key `default` has no version 3 (it has versions 1, 2"),
        "missing version: {version_err}"
    );
    let orphan_err = error("orphan");
    assert!(
        orphan_err.contains("key `orphan` not found in") && orphan_err.contains("SEALTRAIL_KEY_ORPHAN"),
        "missing key: {orphan_err}"
    );
    let loose_err = error("loose");
    assert!(
        loose_err.contains("loose.json is readable by group or others (mode 640)"),
        "group-readable key file: {loose_err}"
    );
    let write_err = error("write");
    assert!(write_err.contains("sealtrail KMS client is read-only"), "write: {write_err}");
    // No key material in anything Spark printed.
    let material = std::fs::read_to_string(env.keys.join("default.json")).unwrap();
    let v: J = serde_json::from_str(&material).unwrap();
    for ver in v["versions"].as_array().unwrap() {
        let m = ver["material"].as_str().unwrap().trim_start_matches("base64:");
        assert!(!stdout.contains(m) && !stderr.contains(m), "key material in Spark's output");
    }
    eprintln!(
        "spark_interop: sealing and queries {:.1} s, Spark {:.1} s",
        sealed_at.as_secs_f64(),
        (started.elapsed() - sealed_at).as_secs_f64()
    );
}
