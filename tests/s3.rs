//! The sealed sink's S3 destination (issue 14) against a real S3 API: the moto server, started
//! here on a free loopback port with the interop Python (`SEALTRAIL_PYTHON`: `moto[server]`,
//! boto3 and pyarrow from tests/interop/requirements.txt).
//!
//! The agent is the real binary; buckets are made, objects listed and downloaded with boto3
//! (tests/interop/s3_tool.py) and downloaded segments read with pyarrow's `CryptoFactory`
//! (tests/interop/kms_tool.py). Outages are real: a TCP relay in front of moto stops
//! accepting connections, and a crash is `kill -9`.

mod common;
mod sealed_common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::aws::*;
use common::{SIGTERM, free_port, python, signal};
use sealed_common::*;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(name)
}

fn tool(name: &str, port: u16, args: &[&str]) -> Output {
    let out = Command::new(python()).arg(script(name)).args(args).envs(aws_env(port)).output().unwrap();
    assert!(out.status.success(), "{name} {args:?}: {}", stderr(&out));
    out
}

fn create_key(port: u16, alias: &str) -> String {
    let out = tool("kms_tool.py", port, &["create", alias]);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    v["arn"].as_str().unwrap().to_owned()
}

/// The objects under `prefix`: (key, size, SSE, SSE-KMS key).
fn objects(port: u16, bucket: &str, prefix: &str) -> Vec<serde_json::Value> {
    let out = tool("s3_tool.py", port, &["list", bucket, prefix]);
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Downloads every object under `prefix` with boto3 and reads them with pyarrow: the bodies.
fn read_back(port: u16, bucket: &str, prefix: &str, dir: &Path) -> Vec<String> {
    let keys: Vec<String> =
        objects(port, bucket, prefix).iter().map(|o| o["key"].as_str().unwrap().to_owned()).collect();
    std::fs::create_dir_all(dir).unwrap();
    let mut args = vec!["fetch", bucket, dir.to_str().unwrap()];
    args.extend(keys.iter().map(String::as_str));
    tool("s3_tool.py", port, &args);
    let files: Vec<String> =
        keys.iter().map(|k| dir.join(k.rsplit('/').next().unwrap()).display().to_string()).collect();
    let mut args = vec!["read"];
    args.extend(files.iter().map(String::as_str));
    let out = tool("kms_tool.py", port, &args);
    let mut got = Vec::new();
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        got.extend(v["bodies"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_owned()));
    }
    got.sort();
    got
}

fn sorted_lines(inputs: &[&[u8]]) -> Vec<String> {
    let mut v: Vec<String> = inputs
        .iter()
        .flat_map(|i| String::from_utf8(i.to_vec()).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    v.sort();
    v
}

/// stdin → sealed (KMS key `kms:alias/seal`) → `s3://<bucket>/<prefix>`.
fn write_config(env: &Env, bucket: &str, extra: &str) -> PathBuf {
    let p = env.tmp.path().join("s3.toml");
    std::fs::write(
        &p,
        format!(
            "[keys]\ndefault = \"kms:alias/seal\"\n\n[sources.in]\ntype = \"stdin\"\nservice = \"svc\"\n\n[sinks.vault]\ntype = \"sealed\"\ninputs = [\"in\"]\nallow_unredacted = true\npath = \"{}\"\nupload = \"s3://{bucket}/sealed/\"\n{extra}\n",
            env.data.display()
        ),
    )
    .unwrap();
    p
}

/// The agent with KMS on moto (`port`) and S3 at `s3_port`.
fn spawn_agent(env: &Env, config: &Path, port: u16, s3_port: u16) -> Child {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .arg("--keys")
        .arg(&env.keys)
        .envs(aws_env(port))
        .env("AWS_ENDPOINT_URL_S3", format!("http://127.0.0.1:{s3_port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The agent's log as it comes, read on a thread (joined when the agent has exited).
fn collect_stderr(child: &mut Child) -> (Arc<std::sync::Mutex<String>>, std::thread::JoinHandle<()>) {
    let stderr_pipe = child.stderr.take().unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader};
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    (log, reader)
}

/// Polls `cond` (bounded, so a regression fails instead of hanging).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The year, month and day directories under the local data directory.
fn day_dirs(env: &Env) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n.to_string_lossy().bytes().all(|b| b.is_ascii_digit())) {
                    out.push(p.clone());
                }
                walk(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&env.data, &mut out);
    out
}

fn local_segments(env: &Env) -> Vec<PathBuf> {
    if env.data.exists() { env.segments() } else { Vec::new() }
}

#[test]
fn segments_are_uploaded_verified_with_sse_kms_and_read_back_by_pyarrow() {
    let port = free_port();
    let _moto = Moto::start(port);
    tool("s3_tool.py", port, &["mkbucket", "vault"]);
    create_key(port, "seal");
    let objects_key = create_key(port, "objects");
    let env = Env::new();
    let config =
        write_config(&env, "vault", &format!("max_rows = 500\nupload_sse_kms_key = \"{objects_key}\""));
    let input = lines(1400, "uploaded");
    let vars = aws_env(port);
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = env.run_agent_env(&config, &input, &refs);
    assert!(stderr(&out).contains("segment uploaded and verified"), "{}", stderr(&out));

    // Uploaded, verified, removed locally.
    assert!(local_segments(&env).is_empty(), "{:?}", local_segments(&env));
    assert_eq!(day_dirs(&env), Vec::<PathBuf>::new(), "uploaded segments leave no empty day directories");
    let objs = objects(port, "vault", "sealed/");
    assert_eq!(objs.len(), 3, "{objs:?}");
    for o in &objs {
        let key = o["key"].as_str().unwrap();
        // sealed/logs/yyyy/mm/dd/<ms>-<16 hex>.parquet: the local layout, no customer data.
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 6, "{key}");
        assert_eq!(&parts[..2], ["sealed", "logs"], "{key}");
        assert!(parts[5].ends_with(".parquet") && !key.contains("uploaded"), "{key}");
        assert_eq!(o["sse"], "aws:kms", "{o}");
        assert!(o["kms_key"].as_str().unwrap().contains(objects_key.rsplit('/').next().unwrap()), "{o}");
    }
    let got = read_back(port, "vault", "sealed/", &env.tmp.path().join("fetched"));
    assert_eq!(got, sorted_lines(&[&input]));

    // `query` and `segments` read s3:// directly: day listings and ranged GETs.
    let q = cli(&env, port, &["query", "s3://vault/sealed", "--format", "jsonl", "--stats"]);
    assert!(q.status.success(), "{}", stderr(&q));
    let mut got = bodies(&q);
    got.sort();
    assert_eq!(got, sorted_lines(&[&input]));
    assert!(stderr(&q).contains("from 3 segments"), "{}", stderr(&q));
    let listed = cli(&env, port, &["segments", "s3://vault/sealed/"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{}", stdout(&listed));
    assert!(rows.iter().all(|r| r.starts_with("logs/") && r.contains("arn:aws:kms:")), "{rows:?}");
    // A time range lists only the days around it: nothing in 2099.
    let q = cli(&env, port, &["query", "s3://vault/sealed", "--since", "2099-01-01T00:00:00Z", "--stats"]);
    assert!(q.status.success(), "{}", stderr(&q));
    assert!(stderr(&q).contains("0 events from 0 segments"), "{}", stderr(&q));
}

fn cli(env: &Env, port: u16, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--keys")
        .arg(&env.keys)
        .env_remove("SEALTRAIL_KEYS")
        .envs(aws_env(port))
        .output()
        .unwrap()
}

#[test]
fn a_large_segment_goes_up_in_parts_and_is_verified() {
    let port = free_port();
    let _moto = Moto::start(port);
    tool("s3_tool.py", port, &["mkbucket", "parts"]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.parquet");
    // Incompressible-looking bytes, more than two parts.
    let size = sealtrail::s3::MULTIPART_THRESHOLD as usize + sealtrail::s3::PART_BYTES + 12345;
    let mut data = Vec::with_capacity(size);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(&file, &data).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let vars = aws_env(port);
    // SAFETY: set before any thread of this test reads the environment; every test in this
    // file sets the same values.
    for (k, v) in &vars {
        unsafe { std::env::set_var(k, v) };
    }
    let up = rt
        .block_on(async {
            let client = sealtrail::s3::client(sealtrail::s3::S3Options::default()).await;
            sealtrail::s3::upload_file(
                &client,
                "parts",
                "x/big.parquet",
                &file,
                &sealtrail::s3::Sse::BucketDefault,
            )
            .await
        })
        .unwrap();
    assert_eq!(up.parts, 4);
    assert_eq!(up.bytes, size as u64);
    let objs = objects(port, "parts", "x/");
    assert_eq!(objs[0]["size"], size as u64);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    tool("s3_tool.py", port, &["fetch", "parts", out.to_str().unwrap(), "x/big.parquet"]);
    assert!(std::fs::read(out.join("big.parquet")).unwrap() == data);
}

/// A TCP relay on `port` in front of moto: while down, connections to `port` are refused.
struct Relay {
    port: u16,
    target: u16,
    up: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn new(port: u16, target: u16) -> Relay {
        Relay { port, target, up: Arc::new(AtomicBool::new(false)), thread: None }
    }

    fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, target) = (self.up.clone(), self.target);
        self.thread = Some(std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        let up2 = up.clone();
                        std::thread::spawn(move || pipe(client, server, up2));
                        let up3 = up.clone();
                        std::thread::spawn(move || pipe(s2, c2, up3));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })); // the listener drops with the thread: the port refuses connections again
    }

    fn stop(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Copies `from` → `to` until EOF, or until the relay goes down (then cuts both).
fn pipe(mut from: TcpStream, mut to: TcpStream, up: Arc<AtomicBool>) {
    use std::io::Read;
    from.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 16384];
    loop {
        if !up.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

#[test]
fn an_s3_outage_keeps_segments_local_until_s3_returns_none_lost_or_duplicated() {
    let moto_port = free_port();
    let _moto = Moto::start(moto_port);
    tool("s3_tool.py", moto_port, &["mkbucket", "outage"]);
    create_key(moto_port, "seal");
    let relay_port = free_port();
    let mut relay = Relay::new(relay_port, moto_port);
    relay.start();
    let env = Env::new();
    let config = write_config(&env, "outage", "max_age = \"300ms\"");
    let mut child = spawn_agent(&env, &config, moto_port, relay_port);
    let mut stdin = child.stdin.take().unwrap();
    let (log, reader) = collect_stderr(&mut child);
    let uploads = |l: &Arc<std::sync::Mutex<String>>| {
        l.lock().unwrap().matches("segment uploaded and verified").count()
    };
    let failures =
        |l: &Arc<std::sync::Mutex<String>>| l.lock().unwrap().matches("segment upload failed").count();

    // S3 up: the first segment goes through.
    let a = lines(200, "before");
    stdin.write_all(&a).unwrap();
    stdin.flush().unwrap();
    wait_until("the first segment is uploaded", || uploads(&log) >= 1);

    // S3 down: segments are sealed and stay local, uploads fail and are retried.
    relay.stop();
    let b = lines(300, "during");
    stdin.write_all(&b).unwrap();
    stdin.flush().unwrap();
    wait_until("a segment is sealed while S3 is down", || !local_segments(&env).is_empty());
    wait_until("an upload failed", || failures(&log) >= 1);
    let c = lines(250, "still-down");
    stdin.write_all(&c).unwrap();
    stdin.flush().unwrap();
    wait_until("two segments wait locally", || local_segments(&env).len() >= 2);
    let uploaded_before = objects(moto_port, "outage", "sealed/").len();

    // S3 back: everything waiting goes up, the rest of the input too.
    relay.start();
    wait_until("the waiting segments are uploaded", || local_segments(&env).is_empty());
    let d = lines(100, "after");
    stdin.write_all(&d).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "{log}");
    assert!(local_segments(&env).is_empty(), "{log}");
    let objs = objects(moto_port, "outage", "sealed/");
    assert!(objs.len() >= uploaded_before + 2, "{objs:?}");
    let got = read_back(moto_port, "outage", "sealed/", &env.tmp.path().join("fetched"));
    assert_eq!(got, sorted_lines(&[&a, &b, &c, &d]), "{log}");
}

#[test]
fn segments_left_by_kill_9_before_upload_are_uploaded_at_the_next_start() {
    let port = free_port();
    let env = Env::new();
    let config = write_config(&env, "crash", "max_age = \"300ms\"");
    // Sealing needs KMS (moto); S3 uploads go to a port where nothing listens.
    let _moto = Moto::start(port);
    create_key(port, "seal");
    tool("s3_tool.py", port, &["mkbucket", "crash"]);
    let dead = free_port();
    let mut child = spawn_agent(&env, &config, port, dead);
    let input = lines(400, "crashed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).unwrap();
    stdin.flush().unwrap();
    wait_until("the segment is sealed", || !local_segments(&env).is_empty());
    // kill -9: sealed, not uploaded.
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(objects(port, "crash", "sealed/").is_empty());
    let left = local_segments(&env);
    assert_eq!(left.len(), 1, "{left:?}");

    // The next start (S3 reachable, no new input) uploads it.
    let refs: Vec<(&str, &str)> = aws_env(port).into_iter().map(|(k, v)| (k, leak(v))).collect();
    let out = env.run_agent_env(&config, b"", &refs);
    assert!(stderr(&out).contains("segment uploaded and verified"), "{}", stderr(&out));
    assert!(local_segments(&env).is_empty());
    let got = read_back(port, "crash", "sealed/", &env.tmp.path().join("fetched"));
    assert_eq!(got, sorted_lines(&[&input]));
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// S3 unreachable and the spool full, so the writer holds the pipeline back (backpressure):
/// SIGTERM still ends the run. The spool lets the writer go, everything read is sealed
/// locally, the uploader gives up after `upload_drain_timeout`, and the next start (S3
/// reachable) uploads it all. Before, the writer waited for room forever and the agent never
/// exited.
#[test]
fn sigterm_ends_a_run_whose_spool_is_full_while_s3_is_down() {
    let port = free_port();
    let env = Env::new();
    let config = write_config(
        &env,
        "full",
        "max_age = \"200ms\"\nmax_bytes = 65536\nupload_spool_bytes = 65536\nupload_drain_timeout = \"1s\"",
    );
    let _moto = Moto::start(port);
    create_key(port, "seal");
    tool("s3_tool.py", port, &["mkbucket", "full"]);
    let dead = free_port();
    let mut child = spawn_agent(&env, &config, port, dead);
    let mut stdin = child.stdin.take().unwrap();
    let (log, reader) = collect_stderr(&mut child);
    // Lines until the pipe is refused (the agent stopped reading at SIGTERM) or a bound.
    let feeder = std::thread::spawn(move || {
        let mut sent = 0usize;
        while sent < 200_000 {
            let line = format!("held-{sent:08} {}\n", "x".repeat(200));
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
            sent += 1;
        }
    });
    wait_until("the spool is full", || log.lock().unwrap().contains("S3 upload spool is full"));
    signal(child.id(), SIGTERM);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no exit after SIGTERM: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = feeder.join();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "{log}");
    assert!(log.contains("sealed segments not uploaded in time stay on disk"), "{log}");
    let left = local_segments(&env);
    assert!(left.len() >= 2, "{left:?}");

    // The next start with S3 reachable uploads every one of them.
    let refs: Vec<(&str, &str)> = aws_env(port).into_iter().map(|(k, v)| (k, leak(v))).collect();
    env.run_agent_env(&config, b"", &refs);
    assert!(local_segments(&env).is_empty());
    assert_eq!(objects(port, "full", "sealed/").len(), left.len());
}
