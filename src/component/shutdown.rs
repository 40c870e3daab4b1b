//! One shutdown path for the whole agent: SIGINT, SIGTERM, end of input and (in Lambda mode)
//! the SHUTDOWN event all end in [`ShutdownTrigger::trigger`].
//!
//! Every source holds a [`Shutdown`]; when it fires a source stops reading, delivers what it
//! already read, and returns. Downstream components learn of the end when their input channel
//! closes (every sender dropped), so they never need the signal themselves: that is what
//! orders the shutdown (sources stop → transforms flush → sinks flush).

use tokio::sync::watch;

/// Why the agent is shutting down, carried to sources (the `exec` source forwards the signal
/// to its child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A Unix signal, by number (`libc::SIGINT`, `libc::SIGTERM`).
    Signal(i32),
    /// Anything else: a component failed, the Lambda platform shuts down, a test asks.
    Requested,
}

/// The sending side, owned by the topology.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<Option<Reason>>,
}

/// The receiving side, one clone per source.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Option<Reason>>,
}

/// A connected trigger and receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(None);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Fires the shutdown (the first reason wins; later calls do nothing).
    pub fn trigger(&self, reason: Reason) {
        self.tx.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown { rx: self.tx.subscribe() }
    }
}

impl Shutdown {
    /// Waits until shutdown fires and returns why. A dropped trigger counts as a request.
    pub async fn recv(&mut self) -> Reason {
        match self.rx.wait_for(Option::is_some).await {
            Ok(r) => r.unwrap_or(Reason::Requested),
            Err(_) => Reason::Requested,
        }
    }

    /// Whether shutdown has fired, without waiting.
    pub fn reason(&self) -> Option<Reason> {
        *self.rx.borrow()
    }
}
