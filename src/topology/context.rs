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

impl SinkInput {
    pub fn new(rx: mpsc::Receiver<Batch>, metrics: Arc<ComponentMetrics>) -> SinkInput {
        SinkInput { rx, metrics }
    }

    /// The next batch, or `None` once every upstream component has finished.
    pub async fn recv(&mut self) -> Option<Batch> {
        let b = self.rx.recv().await?;
        let bytes: usize = b.iter().map(Event::size_estimate).sum();
        self.metrics.add_in(b.len(), bytes);
        Some(b)
    }

    /// The next batch if one is ready now (`Err` tells empty from finished).
    pub fn try_recv(&mut self) -> Result<Batch, mpsc::error::TryRecvError> {
        let b = self.rx.try_recv()?;
        let bytes: usize = b.iter().map(Event::size_estimate).sum();
        self.metrics.add_in(b.len(), bytes);
        Ok(b)
    }

    /// Blocking receive, for sinks that run on a thread of their own.
    pub fn blocking_recv(&mut self) -> Option<Batch> {
        let b = self.rx.blocking_recv()?;
        let bytes: usize = b.iter().map(Event::size_estimate).sum();
        self.metrics.add_in(b.len(), bytes);
        Some(b)
    }
}
