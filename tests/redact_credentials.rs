//! Issue 12, credentials and CloudWatch policies, through the real binary: `sealtrail redact`
//! with the credential detectors, `--stats` per detector, `--policy` documents (mapping,
//! custom identifiers, the error listing unsupported ones), and `sealtrail run` where a line
//! source splits a PEM private key block into one record per line.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealtrail"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let input = input.to_vec();
    let t = std::thread::spawn(move || {
        let _ = w.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    t.join().unwrap();
    out
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const INPUT: &str = "\
GET /x Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlX2hlcmU
{\"user\":\"bob\",\"password\":\"hunter2\",\"password_reset\":true}
aws_access_key_id=AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
Server=db.internal;Database=shop;User Id=app;Password=Pa55 w0rd;Encrypt=true
-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ
AAAAAAAABAAABlwAAAAdzc2gtcn
-----END OPENSSH PRIVATE KEY-----
push with ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 to github
paid 4111111111111111 for EMP-123456
";

const SECRETS: &[&str] = &[
    "eyJhbGciOiJIUzI1NiJ9",
    "hunter2",
    "IOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI",
    "Pa55",
    "b3BlbnNzaC1r",
    "AAAAAAAABAAABlwAAAAdzc2gtcn",
    "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
];

#[test]
fn redact_masks_credentials_and_counts_them_per_detector() {
    let o = run(&["redact", "--stats"], INPUT.as_bytes());
    assert!(o.status.success(), "{}", err(&o));
    let out = text(&o);
    for s in SECRETS {
        assert!(!out.contains(s), "`{s}` survived:\n{out}");
    }
    // Names, hosts and non-secret fields stay readable; one output line per input line.
    for keep in [
        "GET /x Authorization: Bearer ****",
        "\"user\":\"bob\"",
        "\"password_reset\":true",
        "aws_access_key_id=AKIA****",
        "Server=db.internal;Database=shop;User Id=app;Password=****;Encrypt=true",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n****\n-----END OPENSSH PRIVATE KEY-----",
        "push with ghp_**** to github",
    ] {
        assert!(out.contains(keep), "missing `{keep}`:\n{out}");
    }
    let stats = err(&o);
    for (name, n) in [
        ("authorization", 1),
        ("aws_access_key", 1),
        ("aws_secret_key", 1),
        ("private_key", 1),
        ("connection_string", 1),
        ("secret_field", 1),
        ("prefixed_token", 1),
        ("card", 1),
        ("jwt", 0),
    ] {
        assert!(stats.contains(&format!(" {name}={n}")), "{name}={n}: {stats}");
    }
}

fn policy(dir: &std::path::Path, ids: &[&str], custom: &str) -> std::path::PathBuf {
    let ids: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
    let doc = format!(
        r#"{{"Name":"data-protection-policy","Description":"","Version":"2021-06-01",
  "Configuration":{{"CustomDataIdentifier":[{custom}]}},
  "Statement":[
    {{"Sid":"audit-policy","DataIdentifier":[{ids}],"Operation":{{"Audit":{{"FindingsDestination":{{}}}}}}}},
    {{"Sid":"redact-policy","DataIdentifier":[{ids}],"Operation":{{"Deidentify":{{"MaskConfig":{{}}}}}}}}
  ]}}"#,
        ids = ids.join(",")
    );
    let p = dir.join("policy.json");
    std::fs::write(&p, doc).unwrap();
    p
}

#[test]
fn cloudwatch_policy_chooses_the_detectors() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        dir.path(),
        &[
            "arn:aws:dataprotection::aws:data-identifier/CreditCardNumber",
            "arn:aws:dataprotection::aws:data-identifier/AwsSecretKey",
            "EmployeeId",
        ],
        r#"{"Name":"EmployeeId","Regex":"EMP-\\d{6}"}"#,
    );
    let o = run(&["redact", "--stats", "--policy", p.to_str().unwrap()], INPUT.as_bytes());
    assert!(o.status.success(), "{}", err(&o));
    let out = text(&o);
    assert!(out.contains("paid **** for ****"), "{out}");
    assert!(out.contains("aws_access_key_id=AKIA**** aws_secret_access_key=****"), "{out}");
    // Detectors the policy does not name are off.
    assert!(out.contains("\"password\":\"hunter2\""), "{out}");
    assert!(err(&o).contains(" pattern=1"), "{}", err(&o));

    // The same policy from a redact transform's `policy` field.
    let cfg = dir.path().join("redact.toml");
    std::fs::write(&cfg, format!("policy = \"{}\"\n", p.display())).unwrap();
    let o = run(&["redact", "--config", cfg.to_str().unwrap()], b"paid 4111111111111111 password=x1\n");
    assert_eq!(text(&o), "paid **** password=x1\n", "{}", err(&o));
    std::fs::write(&cfg, format!("policy = \"{}\"\ndetectors = [\"card\"]\n", p.display())).unwrap();
    let o = run(&["redact", "--config", cfg.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("not both"), "{}", err(&o));
}

#[test]
fn unsupported_policy_identifiers_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        dir.path(),
        &[
            "arn:aws:dataprotection::aws:data-identifier/EmailAddress",
            "arn:aws:dataprotection::aws:data-identifier/CreditCardNumber",
            "arn:aws:dataprotection::aws:data-identifier/IpAddress",
        ],
        "",
    );
    let o = run(&["redact", "--policy", p.to_str().unwrap()], b"x\n");
    assert_eq!(o.status.code(), Some(2));
    let e = err(&o);
    assert!(e.contains("unsupported data identifiers: EmailAddress, IpAddress"), "{e}");
    assert!(e.contains("policy.json"), "{e}");
    std::fs::write(&p, "not json").unwrap();
    let o = run(&["redact", "--policy", p.to_str().unwrap()], b"x\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("not a data protection policy"), "{}", err(&o));
}

#[test]
fn agent_masks_a_pem_block_split_into_line_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "[sources.in]\ntype = \"stdin\"\n[transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\
         [sinks.out]\ntype = \"console\"\ninputs = [\"scrub\"]\nencoding = \"text\"\n",
    )
    .unwrap();
    let keys = dir.path().join("keys");
    let o =
        run(&["run", "--config", cfg.to_str().unwrap(), "--keys", keys.to_str().unwrap()], INPUT.as_bytes());
    assert!(o.status.success(), "{}", err(&o));
    let out = text(&o);
    for s in SECRETS {
        assert!(!out.contains(s), "`{s}` survived:\n{out}");
    }
    assert!(
        out.contains("-----BEGIN OPENSSH PRIVATE KEY-----\n****\n****\n-----END OPENSSH PRIVATE KEY-----"),
        "{out}"
    );
}
