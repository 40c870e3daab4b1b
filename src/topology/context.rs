//! What the topology hands to running components: a source's output ([`Fanout`]) and
//! context, a sink's input and context.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::shutdown::Shutdown;
use crate::config::GlobalOptions;
use crate::event::{Batch, Event};
use crate::metrics::{ComponentMetrics, Registry};

/// The output of a component: one bounded channel per consumer. Sending clones the batch's
/// `Arc`, not its events, and waits for room in every consumer's channel (backpressure).
#[derive(Clone)]
pub struct Fanout {
    senders: Vec<mpsc::Sender<Batch>>,
    metrics: Arc<ComponentMetrics>,
}

/// Every consumer of the output is gone (a sink failed and the pipeline is stopping).
#[derive(Debug, thiserror::Error)]
#[error("every consumer of this component has stopped")]
pub struct Closed;

/// A batch could not be sent without waiting: the pipeline is full. The batch comes back so
/// the source can answer "retry later" to its client.
#[derive(Debug)]
pub struct Full(pub Batch);

impl Fanout {
    pub fn new(senders: Vec<mpsc::Sender<Batch>>, metrics: Arc<ComponentMetrics>) -> Fanout {
        Fanout { senders, metrics }
    }

    /// Sends a batch to every consumer, waiting for room.
    ///
    /// # Errors
    /// [`Closed`] when no consumer is left.
    pub async fn send(&mut self, batch: Batch) -> Result<(), Closed> {
        if batch.is_empty() {
            return Ok(());
        }
        self.count(&batch);
        let mut i = 0;
        while i < self.senders.len() {
            if self.senders[i].send(batch.clone()).await.is_err() {
                self.senders.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if self.senders.is_empty() { Err(Closed) } else { Ok(()) }
    }

    /// Sends a seal marker to every consumer, in order with the batches sent before it:
    /// transforms pass it on untouched and a sink that holds open segments seals them when
    /// it arrives (see [`Received::Seal`]). The marker is an empty batch, which
    /// [`Fanout::send`] never sends, so nothing else can be mistaken for one.
    ///
    /// # Errors
    /// [`Closed`] when no consumer is left.
    pub async fn send_seal(&mut self) -> Result<(), Closed> {
        let marker: Batch = Arc::new(Vec::new());
        let mut i = 0;
        while i < self.senders.len() {
            if self.senders[i].send(marker.clone()).await.is_err() {
                self.senders.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if self.senders.is_empty() { Err(Closed) } else { Ok(()) }
    }

    /// Sends a vector of events as one batch (see [`Fanout::send`]).
    pub async fn send_events(&mut self, events: Vec<Event>) -> Result<(), Closed> {
        self.send(Arc::new(events)).await
    }

    /// Sends a batch only if every consumer has room now; otherwise gives it back.
    pub fn try_send(&mut self, batch: Batch) -> Result<(), Full> {
        let mut permits = Vec::with_capacity(self.senders.len());
        for s in &self.senders {
            match s.try_reserve() {
                Ok(p) => permits.push(p),
                Err(_) => return Err(Full(batch)),
            }
        }
        self.count(&batch);
        for p in permits {
            p.send(batch.clone());
        }
        Ok(())
    }

    fn count(&self, batch: &Batch) {
        let bytes: usize = batch.iter().map(Event::size_estimate).sum();
        self.metrics.add_out(batch.len(), bytes);
    }
}

/// What a running source gets.
pub struct SourceContext {
    pub id: String,
    pub out: Fanout,
    pub shutdown: Shutdown,
    pub metrics: Arc<ComponentMetrics>,
    pub globals: Arc<GlobalOptions>,
    /// A source that wraps a process (the `exec` source) sets the agent's exit code here.
    pub exit_code: Arc<Mutex<Option<i32>>>,
}

/// What a running sink gets besides its input.
pub struct SinkContext {
    pub id: String,
    pub metrics: Arc<ComponentMetrics>,
    pub globals: Arc<GlobalOptions>,
    pub registry: Registry,
}

/// The input of a sink: all its upstream components' batches, merged in arrival order.
pub struct SinkInput {
    rx: mpsc::Receiver<Batch>,
    metrics: Arc<ComponentMetrics>,
}

/// What a sink receives: a batch of events, or a seal marker from [`Fanout::send_seal`].
#[derive(Debug)]
pub enum Received {
    Batch(Batch),
    /// Every batch sent before the marker on its path has been received: seal open segments.
    Seal,
}

impl SinkInput {
    pub fn new(rx: mpsc::Receiver<Batch>, metrics: Arc<ComponentMetrics>) -> SinkInput {
        SinkInput { rx, metrics }
    }

    /// The next batch or seal marker, or `None` once every upstream component has finished.
    /// Only sinks that hold data across batches (the `sealed` sink) need the markers.
    pub async fn recv_or_seal(&mut self) -> Option<Received> {
        let b = self.rx.recv().await?;
        Some(self.received(b))
    }

    /// The next batch, or `None` once every upstream component has finished. Seal markers
    /// are skipped.
    pub async fn recv(&mut self) -> Option<Batch> {
        loop {
            if let Received::Batch(b) = self.recv_or_seal().await? {
                return Some(b);
            }
        }
    }

    /// The next batch if one is ready now (`Err` tells empty from finished). Seal markers
    /// are skipped.
    pub fn try_recv(&mut self) -> Result<Batch, mpsc::error::TryRecvError> {
        loop {
            let b = self.rx.try_recv()?;
            if let Received::Batch(b) = self.received(b) {
                return Ok(b);
            }
        }
    }

    /// Blocking receive, for sinks that run on a thread of their own. Seal markers are
    /// skipped.
    pub fn blocking_recv(&mut self) -> Option<Batch> {
        loop {
            let b = self.rx.blocking_recv()?;
            if let Received::Batch(b) = self.received(b) {
                return Some(b);
            }
        }
    }

    fn received(&self, b: Batch) -> Received {
        if b.is_empty() {
            return Received::Seal;
        }
        let bytes: usize = b.iter().map(Event::size_estimate).sum();
        self.metrics.add_in(b.len(), bytes);
        Received::Batch(b)
    }
}
