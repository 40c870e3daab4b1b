//! The Lambda session: what the extension driver (`crate::lambda::driver`) shares with the
//! `lambda_telemetry` source. The driver creates one [`Handle`] per process and passes it to
//! the topology build, which hands it to components in their [`super::BuildContext`]; the
//! topology itself knows nothing about Lambda.
//!
//! The source needs a few facts from the driver (the function, the current invoke, the
//! SHUTDOWN deadline) and gives one thing back (the port it listens on, so the driver can
//! subscribe it). The X-Ray header parser lives here because both sides map trace ids.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What the Lambda environment tells about the function (from its environment variables and
/// the register response).
#[derive(Debug, Clone, Default)]
pub struct FunctionInfo {
    /// `AWS_LAMBDA_FUNCTION_NAME`: the service name of every record (and so the name key
    /// rules match).
    pub name: String,
    /// `AWS_LAMBDA_FUNCTION_VERSION`.
    pub version: String,
    /// `AWS_REGION`.
    pub region: String,
}

impl FunctionInfo {
    /// Reads the function's facts from the environment.
    pub fn from_env() -> FunctionInfo {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        FunctionInfo {
            name: var("AWS_LAMBDA_FUNCTION_NAME"),
            version: var("AWS_LAMBDA_FUNCTION_VERSION"),
            region: var("AWS_REGION"),
        }
    }
}

/// The invoke in progress, as the INVOKE event announced it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invoke {
    pub request_id: String,
    /// Unix epoch milliseconds.
    pub deadline_ms: u64,
    /// The `X-Amzn-Trace-Id` value, when tracing is on.
    pub trace: Option<String>,
}

/// The SHUTDOWN event as the driver received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownInfo {
    /// Lower-cased (`spindown`, `timeout`, `failure`).
    pub reason: String,
    /// When the platform kills the process (SIGKILL), as a monotonic instant.
    pub deadline: Instant,
}

/// What the telemetry listener tells the driver once it is bound: enough to subscribe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerReady {
    /// The subscription request body (schema, types, buffering, destination URI with the
    /// bound port).
    pub subscription: serde_json::Value,
    pub port: u16,
}

/// State shared between the lifecycle driver and the `lambda_telemetry` source.
#[derive(Debug)]
pub struct Handle {
    pub function: FunctionInfo,
    invoke: Mutex<Option<Invoke>>,
    shutdown: watch::Sender<Option<ShutdownInfo>>,
    ready: watch::Sender<Option<Result<ListenerReady, String>>>,
}

impl Handle {
    pub fn new(function: FunctionInfo) -> Handle {
        Handle {
            function,
            invoke: Mutex::new(None),
            shutdown: watch::Sender::new(None),
            ready: watch::Sender::new(None),
        }
    }

    /// The invoke in progress (the last INVOKE event), if any.
    pub fn invoke(&self) -> Option<Invoke> {
        self.invoke.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records an INVOKE event.
    pub fn set_invoke(&self, invoke: Invoke) {
        *self.invoke.lock().unwrap_or_else(|p| p.into_inner()) = Some(invoke);
    }

    /// Records the SHUTDOWN event; everything waiting in [`Handle::shutdown_requested`] wakes.
    pub fn begin_shutdown(&self, info: ShutdownInfo) {
        self.shutdown.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(info);
                true
            } else {
                false
            }
        });
    }

    /// The SHUTDOWN event, once it has arrived.
    pub fn shutdown_info(&self) -> Option<ShutdownInfo> {
        self.shutdown.borrow().clone()
    }

    /// Waits for the SHUTDOWN event.
    pub async fn shutdown_requested(&self) -> ShutdownInfo {
        let mut rx = self.shutdown.subscribe();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen while `self` is borrowed.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Called by the telemetry source once its listener is bound (or failed to bind).
    pub fn listener_ready(&self, r: Result<ListenerReady, String>) {
        self.ready.send_replace(Some(r));
    }

    /// Waits until the telemetry source reports its listener.
    pub async fn wait_listener(&self) -> Result<ListenerReady, String> {
        let mut rx = self.ready.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or_else(|| Err("listener state lost".into())),
            Err(_) => Err("the telemetry source ended before its listener was ready".into()),
        }
    }
}

/// How long before the SHUTDOWN deadline the agent must be done: time for the last fsync
/// and rename plus scheduling noise, so the platform never has to SIGKILL a sealing agent.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_millis(150);

/// How long before the SHUTDOWN deadline the sealed sink stops uploading to S3: a second
/// [`SHUTDOWN_MARGIN`] before the driver's own cut-off, so that after an upload is abandoned
/// the sink lists what stays local, logs it and returns, and the pipeline ends in time.
pub const UPLOAD_STOP_MARGIN: Duration = Duration::from_millis(2 * SHUTDOWN_MARGIN.as_millis() as u64);

/// Converts a deadline in Unix epoch milliseconds to a monotonic instant (a deadline in the
/// past becomes now).
pub fn deadline_instant(deadline_ms: u64) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// Parses an X-Ray trace header (`Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1`)
/// into an OpenTelemetry trace id (the 8 hex digits of the epoch then the 24 of the unique
/// part) and the parent span id, as the X-Ray propagator maps them.
pub fn parse_xray(header: &str) -> (Option<[u8; 16]>, Option<[u8; 8]>) {
    let mut trace = None;
    let mut span = None;
    for part in header.split(';') {
        let Some((k, v)) = part.trim().split_once('=') else { continue };
        if k.eq_ignore_ascii_case("root") {
            let mut it = v.split('-');
            if let (Some("1"), Some(epoch), Some(unique), None) = (it.next(), it.next(), it.next(), it.next())
            {
                let mut id = [0u8; 16];
                if epoch.len() == 8
                    && unique.len() == 24
                    && hex::decode_to_slice(format!("{epoch}{unique}"), &mut id).is_ok()
                    && id != [0; 16]
                {
                    trace = Some(id);
                }
            }
        } else if k.eq_ignore_ascii_case("parent") {
            let mut id = [0u8; 8];
            if v.len() == 16 && hex::decode_to_slice(v, &mut id).is_ok() && id != [0; 8] {
                span = Some(id);
            }
        }
    }
    (trace, span)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn xray_header_maps_to_otel_ids() {
        let (t, s) = parse_xray("Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1");
        assert_eq!(hex::encode(t.unwrap()), "5f35ae120c0fec141ab77a00bc047aa2");
        assert_eq!(hex::encode(s.unwrap()), "2be948a625588e32");
        assert_eq!(parse_xray("Root=2-x-y"), (None, None));
        assert_eq!(parse_xray("Root=1-5f35ae12-0c0f;Parent=zz"), (None, None));
        assert_eq!(parse_xray(""), (None, None));
    }

    #[test]
    fn deadlines_in_the_past_are_now() {
        let d = deadline_instant(1);
        assert!(d <= Instant::now());
    }

    #[tokio::test]
    async fn shutdown_wakes_waiters_once() {
        let h = Arc::new(Handle::new(FunctionInfo::default()));
        let h2 = h.clone();
        let w = tokio::spawn(async move { h2.shutdown_requested().await });
        let info = ShutdownInfo { reason: "spindown".into(), deadline: Instant::now() };
        h.begin_shutdown(info.clone());
        h.begin_shutdown(ShutdownInfo { reason: "other".into(), deadline: Instant::now() });
        assert_eq!(w.await.unwrap(), info);
        assert_eq!(h.shutdown_info().unwrap().reason, "spindown");
    }
}
