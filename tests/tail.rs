//! Issue 7: the `tail` sink and `sealtrail tail`, end to end with a real agent and real
//! client processes on 127.0.0.1.

mod tail_support;

use std::time::{Duration, Instant};

use tail_support::*;

#[test]
fn events_arrive_in_order_promptly_at_several_clients_and_streams_end_with_the_agent() {
    let mut agent = Agent::start("");
    let json = Tail::start(&agent.url, &["--format", "json", "--no-reconnect"]);
    let text = Tail::start(&agent.url, &["--format", "text", "--no-reconnect"]);

    // One line at a time: measure how long each takes to reach the client (a diagnostic;
    // the machine is too noisy to assert a bound), and check it arrives.
    let rx = json.stdout.as_ref().unwrap();
    let mut latencies = Vec::new();
    let mut got = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        agent.write(&format!("probe {i}\n"));
        let (at, line) = rx.recv_timeout(DEADLINE).expect("the line reaches the client");
        latencies.push(at - sent);
        got.push((at, line));
    }
    latencies.sort();
    eprintln!(
        "tail latency over 20 lines: median {:?}, max {:?} (target: 100 ms)",
        latencies[10], latencies[19]
    );
    // Then a burst.
    let burst: String = (0..2000).map(|i| format!("burst {i} with a \x1b[31m control\n")).collect();
    agent.write(&burst);
    let (status, log) = agent.finish();
    assert!(status.success(), "agent failed: {status}\n{}", log.join("\n"));

    let (status, mut lines) = json.finish();
    assert!(status.success(), "json client: {status}");
    got.append(&mut lines);
    let want: Vec<String> = (0..20)
        .map(|i| format!("probe {i}"))
        .chain((0..2000).map(|i| format!("burst {i} with a \x1b[31m control")))
        .collect();
    assert_eq!(bodies(&got), want, "every event, in order");
    let first: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(first["signal"], "logs");
    assert_eq!(first["service"], "api");

    let (status, lines) = text.finish();
    assert!(status.success(), "text client: {status}");
    assert_eq!(lines.len(), 2020);
    assert!(lines[0].1.ends_with(" -     api probe 0"), "{}", lines[0].1);
    // The escape character of event data is shown, not sent to the terminal.
    assert!(lines[20].1.ends_with("api burst 0 with a \\u{1b}[31m control"), "{}", lines[20].1);
    assert!(lines.iter().all(|(_, l)| !l.contains('\x1b')));
}

#[test]
fn filters_run_on_the_server() {
    let mut agent = Agent::start("");
    let grep = Tail::start(&agent.url, &["--format", "json", "--no-reconnect", "--grep", "ERROR|time.?out"]);
    let service = Tail::start(&agent.url, &["--format", "json", "--no-reconnect", "--service", "api"]);
    let other = Tail::start(&agent.url, &["--format", "json", "--no-reconnect", "--service", "billing"]);
    let spans = Tail::start(&agent.url, &["--format", "json", "--no-reconnect", "--signal", "spans"]);
    // Lines from stdin carry no severity, so a level filter lets none of them through.
    let level = Tail::start(&agent.url, &["--format", "json", "--no-reconnect", "--level", "warn"]);
    let trace = Tail::start(
        &agent.url,
        &["--format", "json", "--no-reconnect", "--trace-id", "0af7651916cd43dd8448eb211c80319c"],
    );
    agent.write("GET /ok 200\nERROR payment failed\nupstream timeout\nGET /ok 200\nconnection time-out\n");
    let (status, _) = agent.finish();
    assert!(status.success());

    let (_, lines) = grep.finish();
    assert_eq!(bodies(&lines), ["ERROR payment failed", "upstream timeout", "connection time-out"]);
    let (_, lines) = service.finish();
    assert_eq!(lines.len(), 5);
    for t in [other, spans, level, trace] {
        let (status, lines) = t.finish();
        assert!(status.success());
        assert!(lines.is_empty(), "{lines:?}");
    }
}

#[test]
fn bad_filters_are_usage_errors() {
    let agent = Agent::start("");
    for (args, want) in [
        (&["--level", "loud"][..], "--level: unknown level `loud`"),
        (&["--grep", "(unclosed"][..], "--grep"),
        (&["--trace-id", "xyz"][..], "--trace-id"),
    ] {
        let out = tail_cmd(&agent.url, args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The server checks too: a request it cannot parse gets 400 naming the parameter.
    let resp =
        raw_get(&agent.url, "/v1/tail?level=loud", Some(&format!("Bearer {TOKEN}")), Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("`level`: unknown level `loud`"), "{resp}");
    agent.finish();
}

#[test]
fn a_wrong_or_missing_token_gets_401_and_no_data() {
    let mut agent = Agent::start("");
    // A legitimate client, so that events are flowing while the others are refused.
    let ok = Tail::start(&agent.url, &["--format", "json", "--no-reconnect"]);
    agent.write("SECRET-PAYLOAD-1\n");

    let out = tail_cmd(&agent.url, &["--format", "json"])
        .env("SEALTRAIL_TAIL_TOKEN", "not-the-right-token-at-all")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401 unauthorized") && err.contains("refused the token"), "{err}");
    assert!(!err.contains("not-the-right-token-at-all"), "the token is never printed: {err}");
    assert!(out.stdout.is_empty());

    let out = tail_cmd(&agent.url, &[]).env_remove("SEALTRAIL_TAIL_TOKEN").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401 unauthorized") && err.contains("needs a token"), "{err}");
    assert!(out.stdout.is_empty());

    // Raw requests while events flow: nothing but the 401 comes back.
    let near_miss = format!("Bearer {}x", TOKEN);
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    for auth in [None, Some("Bearer wrong"), Some(near_miss.as_str()), Some(prefix.as_str()), Some(TOKEN)] {
        agent.write("SECRET-PAYLOAD-2\n");
        let resp = raw_get(&agent.url, "/v1/tail", auth, Duration::from_millis(500));
        assert!(resp.starts_with("HTTP/1.1 401"), "{auth:?}: {resp}");
        assert!(resp.to_ascii_lowercase().contains("www-authenticate: bearer"), "{resp}");
        assert!(!resp.contains("SECRET-PAYLOAD"), "{auth:?}: {resp}");
    }
    // The health check needs no token and says nothing about events.
    let resp = raw_get(&agent.url, "/v1/health", None, Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("{\"status\":\"ok\"}"), "{resp}");

    let (status, log) = agent.finish();
    assert!(status.success());
    let log = log.join("\n");
    assert!(log.contains("refused a client with a missing or wrong token"), "{log}");
    assert!(!log.contains(TOKEN) && !log.contains("not-the-right-token"), "no token in the agent's log");
    let (_, lines) = ok.finish();
    assert_eq!(bodies(&lines)[0], "SECRET-PAYLOAD-1");
}

#[test]
fn a_token_file_works_for_agent_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    secret_file(&token_path, &format!("{TOKEN}\n"));
    let text = config("127.0.0.1:0", "").replace(
        "token = \"${SEALTRAIL_TAIL_TOKEN}\"",
        &format!("token_file = \"{}\"", token_path.display()),
    );
    let mut agent = Agent::with_config(&text);
    let mut cmd = tail_cmd(&agent.url, &["--format", "json", "--no-reconnect", "--token-file"]);
    cmd.arg(&token_path).env_remove("SEALTRAIL_TAIL_TOKEN");
    let t = Tail::spawn(cmd, true);
    agent.write("via token file\n");
    assert!(agent.finish().0.success());
    let (status, lines) = t.finish();
    assert!(status.success());
    assert_eq!(bodies(&lines), ["via token file"]);
}

#[test]
fn a_stuck_client_does_not_stop_the_pipeline_and_a_slow_one_learns_what_it_lost() {
    const LINES: usize = 100_000;
    let mut agent = Agent::start("client_queue = 1000");
    // Stuck: asks for the stream and never reads a byte of it.
    let mut stuck = std::net::TcpStream::connect(agent.url.trim_start_matches("http://")).unwrap();
    std::io::Write::write_all(
        &mut stuck,
        format!("GET /v1/tail HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    // Slow: a real client whose standard output nobody reads until the input has been
    // pushed, so it blocks on its pipe and stops reading the socket.
    let slow = Tail::spawn(tail_cmd(&agent.url, &["--format", "json", "--no-reconnect"]), false);
    let mut slow = slow;
    let slow_out = slow.child.0.stdout.take().unwrap();

    let started = Instant::now();
    let mut stdin = agent.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut buf = String::new();
        for i in 0..LINES {
            buf.push_str(&format!("line {i:06} of the load test, padded to look like a log line\n"));
            if buf.len() > 64 * 1024 {
                std::io::Write::write_all(&mut stdin, buf.as_bytes()).unwrap();
                buf.clear();
            }
        }
        std::io::Write::write_all(&mut stdin, buf.as_bytes()).unwrap();
        // Dropping stdin ends the agent's input.
    });
    writer.join().expect("the agent took all 100,000 lines");
    eprintln!("pushed {LINES} lines through the agent in {:?} with a stuck client", started.elapsed());
    // Now the slow client may read again.
    let slow_lines = collect(slow_out);
    let status = wait_exit(&mut agent.child.0, "the agent");
    assert!(status.success(), "agent: {status}");
    let mut log = std::mem::take(&mut agent.log);
    while let Ok((_, l)) = agent.stderr.recv_timeout(Duration::from_secs(5)) {
        log.push(l);
    }
    let log = log.join("\n");
    assert!(log.contains("client is not keeping up"), "{log}");
    assert!(log.contains("events_in=100000"), "the sink saw every event: {log}");

    let status = wait_exit(&mut slow.child.0, "the slow client");
    assert!(status.success(), "slow client: {status}");
    let mut events = Vec::new();
    let mut dropped = 0u64;
    let mut notices = 0;
    while let Ok((_, l)) = slow_lines.recv_timeout(Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if let Some(n) = v.get("dropped") {
            dropped += n.as_u64().unwrap();
            notices += 1;
        } else {
            events.push(v["body"].as_str().unwrap()[5..11].parse::<usize>().unwrap());
        }
    }
    eprintln!("slow client: {} events, {dropped} dropped in {notices} notices", events.len());
    assert!(notices > 0 && dropped > 0, "a {{\"dropped\": N}} line arrived");
    assert!(events.windows(2).all(|w| w[0] < w[1]), "what arrives is in order");
    assert_eq!(events.len() as u64 + dropped, LINES as u64, "every event is delivered or counted as dropped");
}

#[test]
fn the_client_reconnects_when_the_agent_restarts() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut agent = Agent::with_config(&config(&address, ""));
    let mut t = Tail::start(&agent.url, &["--format", "json"]);
    agent.write("before restart\n");
    let rx = t.stdout.take().unwrap();
    assert_eq!(bodies(&[rx.recv_timeout(DEADLINE).unwrap()]), ["before restart"]);
    assert!(agent.finish().0.success());

    let mut agent = Agent::with_config(&config(&address, ""));
    wait_for(&t.stderr, &mut t.err_seen, "connected to");
    agent.write("after restart\n");
    assert_eq!(bodies(&[rx.recv_timeout(DEADLINE).unwrap()]), ["after restart"]);
    assert!(t.err_seen.iter().any(|l| l.contains("reconnecting")), "{:?}", t.err_seen);
    assert!(agent.finish().0.success());
}

#[test]
fn an_unreachable_url_is_a_clear_error() {
    let port = free_port();
    let out = tail_cmd(&format!("http://127.0.0.1:{port}"), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot reach the agent's tail sink at http://127.0.0.1:{port}")), "{err}");
    let out = tail_cmd("ftp://127.0.0.1:1", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = tail_cmd("http://user:pw@127.0.0.1:1", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("pw"));
}

#[test]
fn the_agent_refuses_to_start_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (config("127.0.0.1:0", "").replace("token = \"${SEALTRAIL_TAIL_TOKEN}\"", ""), "no token configured"),
        (
            config("0.0.0.0:0", "auth = \"none\"\nallow_unredacted_remote = true")
                .replace("token = \"${SEALTRAIL_TAIL_TOKEN}\"", ""),
            "only allowed on a loopback address",
        ),
        (config("127.0.0.1:0", "").replace("${SEALTRAIL_TAIL_TOKEN}", "short"), "too short"),
        // Secure by default: without `allow_unredacted` a tail sink must follow `redact`.
        (
            config("127.0.0.1:0", "").replace("allow_unredacted = true", ""),
            "not downstream of a `redact` transform",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for cmd in ["validate", "run"] {
            let out = std::process::Command::new(BIN)
                .args([cmd, "--config"])
                .arg(&path)
                .env("SEALTRAIL_TAIL_TOKEN", TOKEN)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} case {i}: {err}");
            assert!(err.contains(want) && err.contains("sinks.live"), "{cmd} case {i}: {err}");
        }
    }
    // `auth = "none"` on loopback is allowed, and then no token is asked for.
    let text = config("127.0.0.1:0", "auth = \"none\"").replace("token = \"${SEALTRAIL_TAIL_TOKEN}\"", "");
    let mut agent = Agent::with_config(&text);
    let mut cmd = tail_cmd(&agent.url, &["--format", "json", "--no-reconnect"]);
    cmd.env_remove("SEALTRAIL_TAIL_TOKEN");
    let t = Tail::spawn(cmd, true);
    agent.write("open on loopback\n");
    assert!(agent.finish().0.success());
    assert_eq!(bodies(&t.finish().1), ["open on loopback"]);
}

/// Runs `openssl` with these arguments in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("this test needs the openssl command to make certificates");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn tls_with_a_trusted_certificate_and_refusal_without() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    for ca in ["ca", "other-ca"] {
        let (crt, key, subj) = (format!("{ca}.crt"), format!("{ca}.key"), format!("/CN=sealtrail test {ca}"));
        let mut args = vec!["req", "-x509", "-days", "1", "-subj", &subj, "-keyout", &key, "-out", &crt];
        args.extend(ec);
        openssl(d, &args);
    }
    let mut args = vec!["req", "-subj", "/CN=127.0.0.1", "-keyout", "tail.key", "-out", "tail.csr"];
    args.extend(ec);
    openssl(d, &args);
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "tail.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "ext.cnf",
            "-out",
            "tail.crt",
        ],
    );
    let extra = format!(
        "[sinks.live.tls]\ncrt_file = \"{}\"\nkey_file = \"{}\"\n",
        d.join("tail.crt").display(),
        d.join("tail.key").display()
    );
    let mut agent = Agent::start(&extra);
    assert!(agent.url.starts_with("https://127.0.0.1:"), "{}", agent.url);

    let mut cmd = tail_cmd(&agent.url, &["--format", "json", "--no-reconnect", "--ca-file"]);
    cmd.arg(d.join("ca.crt"));
    let t = Tail::spawn(cmd, true);

    // A client that does not trust the agent's CA: a TLS error, not a retry loop.
    let out = tail_cmd(&agent.url, &[]).env("SSL_CERT_FILE", d.join("other-ca.crt")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS with") && err.contains("invalid peer certificate"), "{err}");
    assert!(out.stdout.is_empty());
    // Plain HTTP to the TLS port gets nothing.
    let plain = agent.url.replace("https://", "http://");
    let out = tail_cmd(&plain, &["--no-reconnect"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());

    agent.write("over tls\n");
    assert!(agent.finish().0.success());
    let (status, lines) = t.finish();
    assert!(status.success());
    assert_eq!(bodies(&lines), ["over tls"]);
}

#[test]
fn a_client_that_never_reads_cannot_keep_the_agent_alive() {
    // A queue larger than what the socket buffers hold, so that the end of the stream can
    // never reach this client: the agent must give up on it after its drain timeout.
    let mut agent = Agent::start("client_queue = 100000\nclient_queue_bytes = 100000000");
    let mut stuck = std::net::TcpStream::connect(agent.url.trim_start_matches("http://")).unwrap();
    std::io::Write::write_all(
        &mut stuck,
        format!("GET /v1/tail HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    wait_for(&agent.stderr, &mut agent.log, "client connected");
    // Long lines, few enough and paced so that the sink's encoder keeps up even on a busy
    // machine and queues all of them for the client: 20 MB, more than the socket buffers
    // of a connection that never reads hold (a few MB).
    let pad = "x".repeat(20_000);
    for chunk in 0..10 {
        let lines: String = (0..100).map(|i| format!("line {chunk}-{i} that nobody reads {pad}\n")).collect();
        agent.write(&lines);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, log) = agent.finish();
    assert!(status.success(), "{status}");
    let log = log.join("\n");
    assert!(log.contains("tail: closing connections whose requests did not finish"), "{log}");
    drop(stuck);
}

/// Issue 13: eight clients that never read and 256 KiB lines took the agent to 2.25 GB,
/// because each client's queue was bounded in events only. With the queue bounded in bytes
/// (`client_queue_bytes`, 4 MiB by default) and encoded batches shared between clients, the
/// agent's peak resident memory stays far below that, and the pipeline never waits: every
/// line is read and a client that does read still gets the end.
#[test]
fn clients_that_never_read_cannot_grow_the_agent_beyond_the_byte_bound() {
    let mut agent = Agent::start("");
    let pid = agent.child.0.id();
    let addr = agent.url.trim_start_matches("http://").to_owned();
    let mut stuck = Vec::new();
    for _ in 0..8 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!("GET /v1/tail HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        stuck.push(s);
    }
    for _ in 0..8 {
        wait_for(&agent.stderr, &mut agent.log, "client connected");
    }
    // 1,200 lines of 256 KiB: 300 MiB through the sink, 2.4 GiB if every stuck client
    // kept its own copy of every line.
    let pad = "y".repeat(256 << 10);
    for i in 0..1200 {
        agent.write(&format!("big {i} {pad}\n"));
    }
    let reader = Tail::start(&agent.url, &["--format", "json", "--no-reconnect"]);
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    'outer: loop {
        agent.write("the end\n");
        while let Ok((_, l)) = reader.stdout.as_ref().unwrap().recv_timeout(Duration::from_millis(200)) {
            if l.contains("the end") {
                break 'outer;
            }
            seen.push(l);
        }
        assert!(Instant::now() < end, "the reading client never got the end");
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    eprintln!("agent peak RSS with 8 stuck clients and 256 KiB lines: {} MiB", peak_kb / 1024);
    assert!(peak_kb < 400 * 1024, "peak RSS {peak_kb} kB");
    drop(stuck);
    let (status, _) = agent.finish();
    assert!(status.success());
    drop(reader);
}
