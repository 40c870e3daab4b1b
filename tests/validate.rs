//! `sealtrail validate` checks what `sealtrail run` would start (issue 11, defect 3; issue 13,
//! a key rule naming a missing key), and lists the component kinds.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// A configuration whose build reads the keyring twice: the redact transform's hmac key and
/// the sealed sink's key rule.
const KEYED: &str = r#"
[sources.app]
type = "stdin"

[transforms.scrub]
type = "redact"
inputs = ["app"]
mask = "hmac"
hmac_key = "tokens"

[sinks.vault]
type = "sealed"
inputs = ["scrub"]

[[keys.rules]]
match = "payments-*"
key = "payments"
"#;

/// The binary with the keyring left to the arguments under test: no `SEALTRAIL_KEYS`, and a
/// default keyring (under `XDG_DATA_HOME`) that is empty.
fn bare(dir: &Path) -> Command {
    let mut c = cmd(dir);
    c.env_remove("SEALTRAIL_KEYS")
        .env_remove("SEALTRAIL_KEY_TOKENS")
        .env_remove("SEALTRAIL_KEY_PAYMENTS")
        .env("XDG_DATA_HOME", dir.join("xdg"))
        .env("SEALTRAIL_DATA_DIR", dir.join("data"))
        .stdin(Stdio::null());
    c
}

fn keyring_with(dir: &Path, names: &[&str]) -> std::path::PathBuf {
    let keys = dir.join("ring");
    for n in names {
        let out = bare(dir).args(["keys", "create", n, "--keys", keys.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "keys create {n}: {}", stderr(&out));
    }
    keys
}

/// Defect 3: `validate` took no `--keys` and ignored `SEALTRAIL_KEYS`, so it judged a
/// configuration against another keyring than `run` uses. Both ways of naming the keyring now
/// give the same verdict in `validate` and `run`.
#[test]
fn validate_uses_the_keyring_run_uses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "keyed.toml", KEYED);
    let cfg = cfg.to_str().unwrap();
    let keys = keyring_with(dir.path(), &["tokens", "payments"]);
    let keys = keys.to_str().unwrap();

    let flag = bare(dir.path()).args(["validate", "--config", cfg, "--keys", keys]).output().unwrap();
    assert_eq!(flag.status.code(), Some(0), "validate --keys: {}", stderr(&flag));
    assert!(stdout(&flag).contains("keyed.toml: ok"), "{}", stdout(&flag));

    let env =
        bare(dir.path()).env("SEALTRAIL_KEYS", keys).args(["validate", "--config", cfg]).output().unwrap();
    assert_eq!(env.status.code(), Some(0), "validate with SEALTRAIL_KEYS: {}", stderr(&env));

    // `run` with the same keyring starts, reads the (empty) input and exits cleanly.
    let run = bare(dir.path()).env("SEALTRAIL_KEYS", keys).args(["run", "--config", cfg]).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "run: {}", stderr(&run));

    // Without the keyring, both refuse with the same error.
    for sub in ["validate", "run"] {
        let out = bare(dir.path()).args([sub, "--config", cfg]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{sub}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("`hmac_key` \"tokens\": key `tokens` not found"),
            "{sub}: {}",
            stderr(&out)
        );
    }
}

/// Issue 13: a key rule naming a key that is not in the keyring passed `validate`, and `run`
/// failed only at the first matching event. Both now refuse it before starting, naming the
/// rule, the key and how to create it.
#[test]
fn a_key_rule_naming_a_missing_key_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "keyed.toml", KEYED);
    let cfg = cfg.to_str().unwrap();
    let keys = keyring_with(dir.path(), &["tokens"]);
    let keys = keys.to_str().unwrap();
    for sub in ["validate", "run"] {
        let out = bare(dir.path()).args([sub, "--config", cfg, "--keys", keys]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{sub}: {err}");
        assert!(
            err.contains("sinks.vault: keys.rules (match = `payments-*`): key `payments` not found"),
            "{sub}: {err}"
        );
        assert!(err.contains("sealtrail keys create payments"), "{sub}: {err}");
        assert!(stdout(&out).is_empty(), "{sub} started something");
    }
    // A key supplied through the environment counts as present.
    let material = format!("base64:{}", "A".repeat(43) + "=");
    let out = bare(dir.path())
        .env("SEALTRAIL_KEY_PAYMENTS", material)
        .args(["validate", "--config", cfg, "--keys", keys])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `validate --list-kinds` prints every kind the loader accepts, with its description.
#[test]
fn list_kinds_prints_every_kind_with_its_description() {
    let dir = tempfile::tempdir().unwrap();
    let out = bare(dir.path()).args(["validate", "--list-kinds"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let kinds = sealtrail::components::KINDS;
    let all = (kinds.sources.iter().map(|k| ("source", k.name, k.description)))
        .chain(kinds.transforms.iter().map(|k| ("transform", k.name, k.description)))
        .chain(kinds.sinks.iter().map(|k| ("sink", k.name, k.description)));
    let mut n = 0;
    for (section, name, description) in all {
        assert!(!description.is_empty(), "{section} {name} has no description");
        let line = text.lines().find(|l| l.split_whitespace().take(2).eq([section, name]));
        let line = line.unwrap_or_else(|| panic!("{section} {name} missing from:\n{text}"));
        assert!(line.ends_with(description), "{line}");
        n += 1;
    }
    assert_eq!(text.lines().count(), n);
    for name in ["stdin", "otlp", "redact", "filter", "sealed", "tail", "console"] {
        assert!(text.lines().any(|l| l.split_whitespace().nth(1) == Some(name)), "{name} missing");
    }
}

/// Issue 13: `allow_unredacted = true` on a tail sink bound to `0.0.0.0` was accepted
/// silently. `validate` refuses it at the sink's position unless `allow_unredacted_remote`
/// says so; on loopback the one flag is enough.
#[test]
fn allow_unredacted_on_a_network_tail_needs_allow_unredacted_remote() {
    let dir = tempfile::tempdir().unwrap();
    let config = |address: &str, extra: &str| {
        format!(
            "[sources.app]\ntype = \"stdin\"\n\n[sinks.watch]\ntype = \"tail\"\ninputs = [\"app\"]\n\
             allow_unredacted = true\naddress = \"{address}\"\ntoken = \"0123456789abcdef0123456789abcdef\"\n\
             allow_plaintext = true\n{extra}"
        )
    };
    let validate = |name: &str, text: String| {
        let cfg = write(dir.path(), name, &text);
        bare(dir.path()).args(["validate", "--config", cfg.to_str().unwrap()]).output().unwrap()
    };
    let out = validate("wide.toml", config("0.0.0.0:8686", ""));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("wide.toml:") && err.contains("sinks.watch"), "{err}");
    assert!(err.contains("allow_unredacted_remote = true") && err.contains("0.0.0.0:8686"), "{err}");
    let out = validate("opted.toml", config("0.0.0.0:8686", "allow_unredacted_remote = true"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = validate("local.toml", config("127.0.0.1:8686", ""));
    assert!(out.status.success(), "{}", stderr(&out));
}
