//! `sealtrail run`: load the configuration, build the topology and run it until the input
//! ends or a signal arrives.

use std::process::ExitCode;

use super::AgentArgs;
use crate::components;
use crate::config;
use crate::exit_codes;
use crate::keys::Keyring;
use crate::metrics::Registry;
use crate::telemetry::Telemetry;
use crate::topology;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = config::load_files(&components::KINDS, &args.agent.config, &args.agent.overrides())?;
    let built = topology::build(&config)?;
    raise_open_files_limit();
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sealtrail")
        .enable_all()
        .build()?;
    let registry = Registry::default();
    let telemetry = Telemetry::start(&config.globals.telemetry, &registry, runtime.handle())?;
    let api = match &config.globals.api {
        Some(a) => {
            let api = a.compile().map_err(|e| anyhow::anyhow!("[api]: {e:#}"))?;
            let listener = runtime.block_on(async { api.bind() })?;
            let shared = api.shared(registry.clone(), Keyring::open(config.globals.keys_dir()));
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let task = runtime.spawn(api.serve(listener, shared.clone(), async {
                let _ = stop_rx.await;
            }));
            Some((shared, stop_tx, task))
        }
        None => None,
    };
    let outcome = runtime.block_on(async {
        let stop = async {
            let reason = topology::signals().await;
            // A second signal skips the drain: the operator means it.
            tokio::spawn(async {
                topology::signals().await;
                eprintln!("sealtrail: second signal, exiting without draining");
                std::process::exit(130);
            });
            reason
        };
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(reload_on_hangup(args.agent.clone(), registry.clone(), reload_tx));
        topology::run_reloading(built, registry.clone(), stop, reloads).await
    });
    if let Some((shared, stop, task)) = api {
        // Not ready from here on; the endpoints answer until the drain is over.
        shared.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = stop.send(());
        let _ = runtime.block_on(task);
    }
    registry.log_summary();
    // The final export of spans and counters needs the runtime: before it goes.
    if let Some(t) = telemetry {
        t.shutdown();
    }
    // Components still blocked in a read (stdin) must not keep the process alive.
    runtime.shutdown_background();
    if let Some((name, err)) = outcome.failures.first() {
        anyhow::bail!("{name}: {err}");
    }
    // A wrapped child's exit code is the agent's; otherwise a drained shutdown is a success,
    // whether it came from the end of input or from a signal.
    let code = outcome.exit_code.map_or(exit_codes::OK, |c| c.clamp(0, 255) as u8);
    Ok(ExitCode::from(code))
}

/// On each SIGHUP, reads the configuration files again with the same overrides, validates
/// them exactly as `validate` does and hands a valid result to the topology, which applies it
/// by difference. An invalid configuration changes nothing: its errors are logged with their
/// file, line and column and counted (`errors.config_invalid` of `agent.reload`).
async fn reload_on_hangup(
    agent: AgentArgs,
    registry: Registry,
    reloads: tokio::sync::mpsc::Sender<topology::Reload>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: configuration reload is off");
        return;
    };
    let metrics = registry.component("agent.reload");
    while hangup.recv().await.is_some() {
        let agent = agent.clone();
        let loaded =
            tokio::task::spawn_blocking(move || -> Result<topology::Built, crate::config::ConfigErrors> {
                let config = config::load_files(&components::KINDS, &agent.config, &agent.overrides())?;
                topology::build(&config)
            })
            .await;
        let built = match loaded {
            Ok(Ok(b)) => b,
            Ok(Err(errors)) => {
                metrics.error("config_invalid");
                tracing::error!("SIGHUP: configuration not reloaded, the running one stays: {errors}");
                continue;
            }
            Err(e) => {
                metrics.error("config_invalid");
                tracing::error!("SIGHUP: configuration not reloaded: {e}");
                continue;
            }
        };
        let (done, report) = tokio::sync::oneshot::channel();
        if reloads.send(topology::Reload { built, done }).await.is_err() {
            return;
        }
        let Ok(r) = report.await else { return };
        metrics.add("reloads", 1);
        let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
        tracing::info!(
            "SIGHUP: configuration reloaded: kept {}; added {}; restarted {}; removed {}",
            list(&r.kept),
            list(&r.added),
            list(&r.restarted),
            list(&r.removed)
        );
        if !r.needs_restart.is_empty() {
            tracing::warn!(
                "SIGHUP: changes that need a restart of the agent: {}",
                r.needs_restart.join(", ")
            );
        }
        if !r.failed.is_empty() {
            metrics.error("reload_failed");
            tracing::error!("SIGHUP: not applied: {}", r.failed.join(", "));
        }
    }
}

/// Raises the soft limit of open files to the hard limit, as servers do: each OTLP or tail
/// connection is a file descriptor, and the usual soft default (1,024) is far below what a
/// listener is configured to hold (`max_connections`). Returns the new soft limit.
pub fn raise_open_files_limit() -> Option<libc::rlim_t> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let before = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!(soft = before, hard = lim.rlim_max, "cannot raise the open files limit");
                return Some(before);
            }
            tracing::debug!(from = before, to = lim.rlim_cur, "raised the open files limit");
        } else {
            tracing::debug!(limit = lim.rlim_cur, "open files limit");
        }
    }
    Some(lim.rlim_cur)
}

/// Caps glibc's malloc at two arenas (one per core the agent uses). By default every thread
/// that allocates gets an arena of its own, and the pipeline's threads (stdin reader, tokio
/// workers, column builder, encoders) hand buffers to each other, so each arena keeps freed
/// memory of its own: 6 MiB more peak RSS on the end-to-end run for no measurable speed.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before the runtime's
    // threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
