//! AWS KMS customer managed keys (issue 14) against a real KMS API: the moto server, started
//! here on a free loopback port with the interop Python (`SEALTRAIL_PYTHON`, which has
//! `moto[server]`, boto3 and pyarrow from tests/interop/requirements.txt).
//!
//! The agent, `segments`, `query` and `keys show` are the real binary; keys are created and
//! segments read back independently with boto3 and pyarrow's standard `CryptoFactory`
//! (tests/interop/kms_tool.py).

mod common;
mod sealed_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::aws::*;
use common::{free_port, python};
use sealed_common::*;

fn tool(port: u16, args: &[&str]) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/kms_tool.py");
    Command::new(python()).arg(script).args(args).envs(aws_env(port)).output().unwrap()
}

/// Creates a KMS key with `alias/<alias>`; returns its ARN.
fn create_key(port: u16, alias: &str) -> String {
    let out = tool(port, &["create", alias]);
    assert!(out.status.success(), "create key: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    v["arn"].as_str().unwrap().to_owned()
}

/// stdin (service `service`) → sealed under `data`, with `[keys]` as given.
fn write_config(env: &Env, name: &str, service: &str, keys: &str) -> PathBuf {
    let p = env.tmp.path().join(name);
    std::fs::write(
        &p,
        format!(
            "{keys}\n\n[sources.in]\ntype = \"stdin\"\nservice = \"{service}\"\n\n[sinks.vault]\ntype = \"sealed\"\ninputs = [\"in\"]\nallow_unredacted = true\npath = \"{}\"\n",
            env.data.display()
        ),
    )
    .unwrap();
    p
}

fn run_agent(env: &Env, config: &Path, input: &[u8], port: u16) -> Output {
    let vars = aws_env(port);
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.run_agent_env(config, input, &refs)
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

fn all_lines(inputs: &[&[u8]]) -> Vec<String> {
    let mut v: Vec<String> = inputs
        .iter()
        .flat_map(|i| String::from_utf8(i.to_vec()).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    v.sort();
    v
}

#[test]
fn kms_keys_by_arn_and_alias_seal_per_service_and_read_back_everywhere() {
    let port = free_port();
    let _moto = Moto::start(port);
    let checkout_arn = create_key(port, "checkout");
    let payments_arn = create_key(port, "payments");
    let env = Env::new();
    // The default key by ARN, the rule's key by alias.
    let keys = format!(
        "[keys]\ndefault = \"kms:{checkout_arn}\"\n[[keys.rules]]\nmatch = \"payments-*\"\nkey = \"kms:alias/payments\""
    );
    let a = lines(1500, "checkout");
    let b = lines(700, "payments");
    run_agent(&env, &write_config(&env, "a.toml", "checkout-web", &keys), &a, port);
    run_agent(&env, &write_config(&env, "b.toml", "payments-api", &keys), &b, port);
    let segs = env.segments();
    assert_eq!(segs.len(), 2, "{segs:?}");

    // The masterKeyID of each segment is the ARN of the key its service's rule picked.
    let listed = cli(&env, port, &["segments", env.data.to_str().unwrap()]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    assert_eq!(text.matches(&checkout_arn).count(), 1, "{text}");
    assert_eq!(text.matches(&payments_arn).count(), 1, "{text}");

    // `query` decrypts through KMS.
    let q = cli(&env, port, &["query", env.data.to_str().unwrap(), "--format", "jsonl"]);
    assert!(q.status.success(), "query: {}", stderr(&q));
    let mut got = bodies(&q);
    got.sort();
    assert_eq!(got, all_lines(&[&a, &b]));

    // pyarrow's CryptoFactory with a boto3 KMS client that knows only the documented context.
    let seg_args: Vec<&str> = segs.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["read"];
    args.extend(&seg_args);
    let py = tool(port, &args);
    assert!(py.status.success(), "pyarrow: {}", stderr(&py));
    let mut got: Vec<String> = Vec::new();
    for line in stdout(&py).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        got.extend(v["bodies"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_owned()));
    }
    got.sort();
    assert_eq!(got, all_lines(&[&a, &b]));

    // Without the encryption context KMS refuses the wrapped data key.
    let wrong = tool(port, &["wrong-context", seg_args[0]]);
    assert!(wrong.status.success(), "{}", stderr(&wrong));

    // `keys show` describes a KMS key.
    let show = cli(&env, port, &["keys", "show", "kms:alias/payments"]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(stdout(&show).contains(&payments_arn) && stdout(&show).contains("Enabled"), "{}", stdout(&show));

    // Every KMS call is in the hash-chained audit log, which still verifies.
    let log = std::fs::read_to_string(env.keys.join("audit.jsonl")).unwrap();
    assert_eq!(log.matches("\"kms:GenerateDataKey\"").count(), 2, "{log}");
    // Two from `segments --keys` (footers), two from `query`: one per segment and command.
    assert_eq!(log.matches("\"kms:Decrypt\"").count(), 4, "{log}");
    assert_eq!(log.matches("\"kms:DescribeKey\"").count(), 1, "{log}");
    let verify = cli(&env, port, &["keys", "audit", "--verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn kms_failures_on_read_exit_3_with_the_reason() {
    let port = free_port();
    let mut moto = Moto::start(port);
    let arn = create_key(port, "gone");
    let env = Env::new();
    let config = write_config(&env, "c.toml", "svc", &format!("[keys]\ndefault = \"kms:{arn}\""));
    run_agent(&env, &config, &lines(10, "x"), port);
    let data = env.data.to_str().unwrap().to_owned();

    // KMS unreachable.
    drop(moto);
    let q = cli(&env, port, &["query", &data]);
    assert_eq!(q.status.code(), Some(3), "{}", stderr(&q));
    assert!(stderr(&q).contains("unreachable") || stderr(&q).contains("did not answer"), "{}", stderr(&q));
    assert!(stderr(&q).contains(&arn), "{}", stderr(&q));

    // A KMS that does not hold the key (a new moto: a wrong region or account looks the same).
    moto = Moto::start(port);
    let q = cli(&env, port, &["query", &data]);
    assert_eq!(q.status.code(), Some(3), "{}", stderr(&q));
    assert!(stderr(&q).contains("key not found: check the key id and the region"), "{}", stderr(&q));
    assert!(stdout(&q).is_empty());
    drop(moto);
}

#[test]
fn a_segment_waits_for_kms_and_loses_no_event() {
    let port = free_port();
    let env = Env::new();
    // By alias, so the key can be created once KMS is up.
    let config = write_config(&env, "w.toml", "svc", "[keys]\ndefault = \"kms:alias/late\"");
    let input = lines(300, "waited");
    let vars = aws_env(port);
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--keys")
        .arg(&env.keys)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&input).unwrap();
    } // EOF: the agent seals, but KMS is not there yet.
    let stderr_pipe = child.stderr.take().unwrap();
    let (waiting_tx, waiting) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader};
        let mut seen = String::new();
        for line in BufReader::new(stderr_pipe).lines() {
            let line = line.unwrap();
            if line.contains("no data key from AWS KMS") {
                let _ = waiting_tx.send(());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    // Bounded so a regression fails instead of hanging.
    waiting.recv_timeout(Duration::from_secs(120)).expect("the agent never reported waiting for KMS");
    assert!(child.try_wait().unwrap().is_none(), "the agent gave up instead of waiting");
    let _moto = Moto::start(port);
    create_key(port, "late");
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "{log}");
    let q = cli(&env, port, &["query", env.data.to_str().unwrap(), "--format", "jsonl"]);
    assert!(q.status.success(), "{}", stderr(&q));
    let mut got = bodies(&q);
    got.sort();
    assert_eq!(got, all_lines(&[&input]));
}

/// `SEALTRAIL_KEY_<NAME>=kms:<base64>`: a local key carried in a KMS-encrypted variable, as
/// the Lambda console's encryption helper writes it (context `LambdaFunctionName`) or as the
/// CLI does (no context). Decrypted once at start: the segments it seals read back with the
/// same variable and with the plaintext key, the Decrypt is audited under the key's ARN, the
/// key never lands in the keyring directory, and a value encrypted for another function is
/// an error naming the variable.
#[test]
fn a_kms_encrypted_environment_key_seals_and_reads_back() {
    use base64::Engine;
    let port = free_port();
    let _moto = Moto::start(port);
    let arn = create_key(port, "lambda-env");
    let raw = [7u8; 32];
    let plain = format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(raw));
    let encrypt = |function: &str| {
        let out = tool(port, &["encrypt-env", &arn, &plain, function]);
        assert!(out.status.success(), "encrypt: {}", stderr(&out));
        format!("kms:{}", stdout(&out).trim())
    };
    let console = encrypt("pay-fn");
    let env = Env::new();
    let config = write_config(&env, "a.toml", "pay", "[keys]\ndefault = \"appkey\"");
    let input = lines(300, "envkey");
    let mut vars = aws_env(port);
    vars.push(("SEALTRAIL_KEY_APPKEY", console.clone()));
    vars.push(("AWS_LAMBDA_FUNCTION_NAME", "pay-fn".into()));
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.run_agent_env(&config, &input, &refs);
    assert!(!env.keys.join("appkey.json").exists(), "an environment key is never written to the keyring");

    let query = |key_value: &str, function: &str| {
        Command::new(BIN)
            .args(["query", env.data.to_str().unwrap(), "--format", "jsonl", "--keys"])
            .arg(&env.keys)
            .envs(aws_env(port))
            .env("SEALTRAIL_KEY_APPKEY", key_value)
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .output()
            .unwrap()
    };
    for (value, function) in [(console.as_str(), "pay-fn"), (plain.as_str(), "")] {
        let q = query(value, function);
        assert!(q.status.success(), "query: {}", stderr(&q));
        let mut got = bodies(&q);
        got.sort();
        assert_eq!(got, all_lines(&[&input]));
    }
    let log = std::fs::read_to_string(env.keys.join("audit.jsonl")).unwrap();
    assert!(log.lines().any(|l| l.contains("kms:Decrypt") && l.contains(&arn)), "{log}");
    assert!(!log.contains(&plain) && !log.contains(&console[4..]), "the audit log holds no key material");

    // Encrypted with the CLI (no context): decrypts whether or not a function name is known.
    let cli_value = encrypt("");
    for function in ["pay-fn", ""] {
        assert!(query(&cli_value, function).status.success(), "{}", stderr(&query(&cli_value, function)));
    }
    // Encrypted for another function: the error names the variable and what was tried.
    let other = query(&encrypt("other-fn"), "pay-fn");
    assert_eq!(other.status.code(), Some(3), "{}", stderr(&other));
    let err = stderr(&other);
    assert!(err.contains("SEALTRAIL_KEY_APPKEY") && err.contains("LambdaFunctionName=pay-fn"), "{err}");
    assert!(!err.contains(&plain), "{err}");
    // Not base64 after `kms:`.
    let bad = query("kms:%%%", "pay-fn");
    assert!(!bad.status.success() && stderr(&bad).contains("SEALTRAIL_KEY_APPKEY"), "{}", stderr(&bad));
}
