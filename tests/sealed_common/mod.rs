//! Helpers shared by the `sealed_*` integration tests: run the real binary on a data and a
//! keyring directory.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_sealtrail");

/// A scratch area with a data directory and a keyring directory.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub keys: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let keys = tmp.path().join("keys");
        Env { data, keys, tmp }
    }

    /// Writes a configuration file (stdin → sealed, `extra` appended to the sink table).
    pub fn config(&self, extra: &str) -> PathBuf {
        let p = self.tmp.path().join("sealed.toml");
        std::fs::write(
            &p,
            format!(
                "[sources.in]\ntype = \"stdin\"\n\n[sinks.vault]\ntype = \"sealed\"\ninputs = [\"in\"]\nallow_unredacted = true\npath = \"{}\"\n{extra}\n",
                self.data.display()
            ),
        )
        .unwrap();
        p
    }

    /// Runs the agent with `input` on standard input.
    pub fn run_agent(&self, config: &Path, input: &[u8]) -> Output {
        self.run_agent_env(config, input, &[])
    }

    pub fn run_agent_env(&self, config: &Path, input: &[u8], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(BIN);
        c.args(["run", "--config"]).arg(config).arg("--keys").arg(&self.keys);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child =
            c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let w = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        w.join().unwrap();
        assert!(out.status.success(), "agent failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Runs `sealtrail <args>` with `--keys` pointing at the keyring.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_keys(args, &self.keys)
    }

    pub fn cli_keys(&self, args: &[&str], keys: &Path) -> Output {
        Command::new(BIN).args(args).arg("--keys").arg(keys).env_remove("SEALTRAIL_KEYS").output().unwrap()
    }

    /// Every sealed segment under the data directory, sorted.
    pub fn segments(&self) -> Vec<PathBuf> {
        sealtrail::segment::find_segments(&self.data).unwrap()
    }
}

pub fn lines(n: usize, prefix: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        writeln!(v, "{prefix} {i:06} GET /api/orders status=200 took=12ms").unwrap();
    }
    v
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The bodies of a `--format jsonl` output.
pub fn bodies(o: &Output) -> Vec<String> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["body"].as_str().unwrap().to_owned())
        .collect()
}
