//! Issue 13 (hardening) regression tests through the real binary: the exec child's
//! environment, the query audit log, keyring permissions and locking, renamed segments, export
//! modes, output neutralisation and broken pipes.

mod common;

use std::process::Stdio;

use common::*;

/// Issue 13 (high): a child started by the `exec` source never sees key material, the tail
/// token, or a variable the configuration interpolates into a secret field.
#[test]
fn issue_13_exec_child_never_sees_agent_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        "[telemetry]\nenabled = false\nheaders = { authorization = \"${MY_COLLECTOR_SECRET}\" }\n\
         [sources.fn]\ntype = \"exec\"\ncommand = [\"env\"]\n\
         [sinks.out]\ntype = \"console\"\nencoding = \"json\"\ninputs = [\"fn\"]\nallow_unredacted = true\n",
    );
    let out = cmd(dir.path())
        .env("SEALTRAIL_KEY_PAYMENTS", "base64:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .env("SEALTRAIL_TAIL_TOKEN", "tail-token-0123456789abcdef")
        .env("MY_COLLECTOR_SECRET", "Bearer collector-secret-xyz")
        .env("HARMLESS_VARIABLE", "still-here")
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("HARMLESS_VARIABLE=still-here"), "{text}");
    for secret in [
        "SEALTRAIL_KEY_PAYMENTS",
        "AAAAAAAAAAAA",
        "SEALTRAIL_TAIL_TOKEN",
        "tail-token",
        "MY_COLLECTOR_SECRET",
        "collector-secret",
    ] {
        assert!(!text.contains(secret), "{secret} reached the child: {text}");
    }
}

/// Issue 13: `env = { SEALTRAIL_KEY_X = … }` on an exec source is refused, not passed on.
#[test]
fn issue_13_exec_env_cannot_hand_a_secret_to_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        "[sources.fn]\ntype = \"exec\"\ncommand = [\"env\"]\nenv = { SEALTRAIL_TAIL_TOKEN = \"x\" }\n\
         [sinks.out]\ntype = \"console\"\ninputs = [\"fn\"]\nallow_unredacted = true\n",
    );
    let out = cmd(dir.path()).args(["validate", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("`SEALTRAIL_TAIL_TOKEN`"), "{}", stderr(&out));
}
