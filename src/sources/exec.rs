//! The `exec` source: the sidecar mode. Starts a child process, captures its standard output
//! and standard error as log records (the stream is recorded in `log.iostream`), forwards
//! SIGTERM and SIGINT to it, and once both streams are drained makes the agent exit with the
//! child's exit code.
//!
//! The child never sees the agent's secrets: every `SEALTRAIL_KEY_*` (key material),
//! `SEALTRAIL_TAIL_TOKEN`, and every variable the configuration interpolates into a secret
//! field (`token = "${MY_TOKEN}"`, header values) are removed from its environment, because a
//! child that prints its environment (many do on a crash) would send them into the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::lines::{LineSplitter, RecordBuilder};
use crate::component::{BoxFuture, BuildContext, Source, SourceConfig, SourceKind, parse_source};
use crate::component::{Fanout, Reason, SourceContext};
use crate::event::{KeyValue, Signals, Value, attr};

pub const KIND: SourceKind = SourceKind {
    name: "exec",
    description: "runs a child process and captures its stdout and stderr",
    parse: parse_source::<ExecConfig>,
};

/// Configuration for the `exec` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments, e.g. `["python3", "handler.py"]`.
    pub command: Vec<String>,
    /// Extra environment variables for the child (it inherits the agent's environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The child's working directory (default: the agent's).
    #[serde(default)]
    pub working_directory: Option<PathBuf>,
    /// Lines longer than this many bytes are split into several records marked as continued.
    #[serde(default = "super::lines::default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// The service name given to every record (used by key rules and filters).
    #[serde(default)]
    pub service: String,
}

impl SourceConfig for ExecConfig {
    fn outputs(&self) -> Signals {
        Signals::LOGS
    }

    /// No: a reload must not kill or restart the wrapped program.
    fn restartable(&self) -> bool {
        false
    }

    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Source>> {
        let Some(program) = self.command.first() else {
            anyhow::bail!("`command` is empty: give the program and its arguments");
        };
        super::lines::check_max_line_bytes(self.max_line_bytes)?;
        if let Some(dir) = &self.working_directory {
            anyhow::ensure!(dir.is_dir(), "`working_directory` {} is not a directory", dir.display());
        }
        let base = self.working_directory.as_deref().unwrap_or(Path::new("."));
        anyhow::ensure!(
            find_program(program, base).is_some(),
            "cannot start `{program}`: no such executable (looked in PATH for a bare name)"
        );
        for name in self.env.keys() {
            anyhow::ensure!(
                !is_agent_secret(name, &cx.globals.secret_env),
                "`env` sets `{name}`, a variable that holds an agent secret: the child must not get it"
            );
        }
        Ok(Box::new(ExecSource {
            config: self.clone(),
            id: cx.id.to_owned(),
            secret_env: cx.globals.secret_env.clone(),
        }))
    }
}

/// Where `program` would be found: a path with a `/` is taken relative to `base`, a bare name
/// is searched in `PATH`.
fn find_program(program: &str, base: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec =
        |p: &Path| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if program.contains('/') {
        let p = base.join(program);
        return is_exec(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| is_exec(p))
}

/// Whether the variable `name` holds an agent secret that a child must never see: key
/// material (`SEALTRAIL_KEY_*`), the tail token, or a variable the configuration put into a
/// secret field (`secret_env`).
pub fn is_agent_secret(name: &str, secret_env: &BTreeSet<String>) -> bool {
    name.starts_with("SEALTRAIL_KEY_") || name == "SEALTRAIL_TAIL_TOKEN" || secret_env.contains(name)
}

struct ExecSource {
    config: ExecConfig,
    id: String,
    /// See [`GlobalOptions::secret_env`](crate::config::GlobalOptions::secret_env).
    secret_env: BTreeSet<String>,
}

impl Source for ExecSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(run(self.config, self.id, self.secret_env, cx))
    }
}

async fn run(
    config: ExecConfig,
    id: String,
    secret_env: BTreeSet<String>,
    cx: SourceContext,
) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new(&config.command[0]);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| is_agent_secret(n, &secret_env)) {
            cmd.env_remove(&name);
        }
    }
    cmd.args(&config.command[1..])
        .envs(&config.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(dir) = &config.working_directory {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start `{}`: {e}", config.command[0]))?;
    let pid = child.id();
    tracing::info!(pid, program = %config.command[0], "child started");

    let stream = |name: &str| {
        let mut b = RecordBuilder::new(&id, &config.service);
        b.attributes.push(KeyValue::new(attr::IOSTREAM, Value::Str(name.to_owned())));
        b
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let out_task = tokio::spawn(pump(stdout, stream("stdout"), config.max_line_bytes, cx.out.clone()));
    let err_task = tokio::spawn(pump(stderr, stream("stderr"), config.max_line_bytes, cx.out.clone()));
    drop(cx.out);

    // Forward the agent's shutdown signal to the child, then keep draining until it exits.
    let mut shutdown = cx.shutdown.clone();
    let status = tokio::select! {
        s = child.wait() => s,
        reason = shutdown.recv() => {
            let sig = match reason { Reason::Signal(s) => s, Reason::Requested => libc::SIGTERM };
            if let Some(pid) = pid {
                tracing::info!(pid, signal = sig, "forwarding signal to child");
                // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our child's.
                unsafe { libc::kill(pid as libc::pid_t, sig) };
            }
            child.wait().await
        }
    }?;
    let mut invalid = 0;
    for t in [out_task, err_task] {
        invalid += t.await.unwrap_or(0);
    }
    cx.metrics.add("invalid_utf8", invalid);

    let code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    tracing::info!(code, "child exited");
    *cx.exit_code.lock().unwrap_or_else(|p| p.into_inner()) = Some(code);
    Ok(())
}

/// Reads one of the child's streams to its end, sending a batch per read. Returns how many
/// lines held invalid UTF-8.
async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    mut builder: RecordBuilder,
    max: usize,
    mut out: Fanout,
) -> u64 {
    let mut splitter = LineSplitter::new(max);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut events = Vec::new();
        builder.push(&mut splitter, &buf[..n], &mut events);
        if out.send_events(events).await.is_err() {
            break;
        }
    }
    let mut events = Vec::new();
    builder.finish(&mut splitter, &mut events);
    let _ = out.send_events(events).await;
    builder.invalid_utf8
}
