//! End-to-end acknowledgements (`acknowledgements = true` on a source): a token that travels
//! with a batch from the source, through transforms, to every sink, and tells the source
//! when the batch is durable.
//!
//! The source makes an [`Ack`] and keeps its [`AckWait`]. [`Fanout`](super::Fanout) gives
//! each consumer a clone of the token; a transform hands its clone on with the batch it
//! emits, or resolves it when it drops the batch (a filtered event is done). A durable sink
//! (the sealed sink with its write-ahead log) resolves its clone once the batch is in the log
//! and fsynced; every other sink's clone is resolved when the sink receives the batch (see
//! `SinkInput`), since those sinks promise nothing across a crash.
//!
//! The wait ends when the last clone is gone. A clone dropped *without* being resolved means
//! the batch did not get where it was going (a consumer had stopped, a sink failed with it
//! in hand, the channel holding it was dropped): the wait then answers
//! [`AckStatus::Failed`], so the source tells its client to retry rather than claiming a
//! success it cannot back. This makes the default safe: a code path that forgets a token
//! causes a retry (a possible duplicate), never a silent loss.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

/// How an acknowledged batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Every durable sink that received the batch has it in its fsynced log; filtered
    /// events count as done.
    Delivered,
    /// Some path dropped the batch before it was durable: the client must retry.
    Failed,
}

/// One holder's share of a batch's acknowledgement (see the module docs). Cloning makes a
/// new unresolved share; dropping an unresolved share marks the batch failed.
#[derive(Debug)]
pub struct Ack {
    shared: Arc<Shared>,
    resolved: bool,
}

#[derive(Debug)]
struct Shared {
    failed: AtomicBool,
    done: Mutex<Option<oneshot::Sender<AckStatus>>>,
}

impl Drop for Shared {
    /// The last share is gone: tell the source.
    fn drop(&mut self) {
        let status =
            if self.failed.load(Ordering::Acquire) { AckStatus::Failed } else { AckStatus::Delivered };
        if let Some(tx) = self.done.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(status);
        }
    }
}

impl Ack {
    /// A new token and the source's end of it.
    pub fn new() -> (Ack, AckWait) {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(Shared { failed: AtomicBool::new(false), done: Mutex::new(Some(tx)) });
        (Ack { shared, resolved: false }, AckWait(rx))
    }

    /// This share is done: the batch reached its durable place, or was dropped on purpose
    /// (filtered), or went to a sink that promises nothing.
    pub fn resolve(mut self) {
        self.resolved = true;
    }

    /// This share failed: the batch will not be durable through this path.
    pub fn fail(self) {
        // Dropping an unresolved share marks the batch failed.
        drop(self);
    }
}

impl Clone for Ack {
    fn clone(&self) -> Ack {
        Ack { shared: self.shared.clone(), resolved: false }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.resolved {
            self.shared.failed.store(true, Ordering::Release);
        }
    }
}

/// The source's end of an [`Ack`]: resolves when every share is gone.
#[derive(Debug)]
pub struct AckWait(oneshot::Receiver<AckStatus>);

impl AckWait {
    /// Waits until every share of the token is gone and says how the batch ended.
    pub async fn wait(self) -> AckStatus {
        self.0.await.unwrap_or(AckStatus::Failed)
    }

    /// Blocking form of [`AckWait::wait`], for sources that read on a thread of their own.
    pub fn blocking_wait(self) -> AckStatus {
        self.0.blocking_recv().unwrap_or(AckStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_share_resolved_is_delivered() {
        let (ack, wait) = Ack::new();
        let a = ack.clone();
        let b = ack.clone();
        ack.resolve();
        a.resolve();
        b.resolve();
        assert_eq!(wait.wait().await, AckStatus::Delivered);
    }

    #[tokio::test]
    async fn one_share_dropped_unresolved_fails_the_batch() {
        let (ack, wait) = Ack::new();
        let a = ack.clone();
        ack.resolve();
        drop(a);
        assert_eq!(wait.wait().await, AckStatus::Failed);
    }

    #[tokio::test]
    async fn the_wait_ends_only_with_the_last_share() {
        let (ack, mut wait) = Ack::new();
        let a = ack.clone();
        ack.resolve();
        assert!(wait.0.try_recv().is_err(), "a share is still held");
        a.resolve();
        assert_eq!(wait.wait().await, AckStatus::Delivered);
    }
}
