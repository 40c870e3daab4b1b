//! What the topology hands to running components: a source's output ([`Fanout`]) and
//! context, a sink's input and context, and the [`Message`] that travels on every channel.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::ack::{Ack, AckWait};
use super::globals::GlobalOptions;
use super::shutdown::Shutdown;
use crate::event::{Batch, Event};
use crate::metrics::{ComponentMetrics, Registry};

/// What travels on a channel between components: a batch of events, or the order to seal.
/// The seal order is a variant of its own (not, say, an empty batch) so that no batch can
/// ever be mistaken for one.
#[derive(Debug, Clone)]
pub enum Message {
    Batch(Batch),
    /// Every batch sent before this message on its path has been delivered: a sink that holds
    /// open segments seals them now. Transforms pass it on untouched, in order.
    Seal,
    /// A batch from a source with `acknowledgements = true`, with this consumer's share of its
    /// token (see [`super::ack`]). Sinks never see this variant from [`SinkInput::recv_or_seal`]
    /// and the other plain receives: they resolve the share on receipt and hand over a
    /// `Batch`; only [`SinkInput::recv_acked`] gives the share to the sink.
    Acked(Batch, Ack),
}

/// What a sink receives (the name sinks match on).
pub type Received = Message;

/// The output of a component: one bounded channel per consumer. Sending clones the batch's
/// `Arc`, not its events, and waits for room in every consumer's channel (backpressure).
#[derive(Clone)]
pub struct Fanout {
    routes: Arc<Routes>,
    metrics: Arc<ComponentMetrics>,
}

/// The consumers of one component's output, shared by every clone of its [`Fanout`] and
/// changed in place when SIGHUP reloads the configuration. The only long-lived senders to a
/// consumer's channel are here: a send holds clones just while it waits, so a consumer taken
/// out of every `Routes` sees its channel close (and drains) as soon as those sends are done,
/// and a component's channel still closes when all its producers have finished.
#[derive(Debug, Default)]
pub struct Routes {
    senders: Mutex<Vec<mpsc::Sender<Message>>>,
}

impl Routes {
    pub fn new(senders: Vec<mpsc::Sender<Message>>) -> Arc<Routes> {
        Arc::new(Routes { senders: Mutex::new(senders) })
    }

    /// Replaces the consumers in one step: a send sees either the old set or the new one.
    pub fn set(&self, senders: Vec<mpsc::Sender<Message>>) {
        let old = std::mem::replace(&mut *self.lock(), senders);
        drop(old);
    }

    fn snapshot(&self) -> Vec<mpsc::Sender<Message>> {
        self.lock().clone()
    }

    /// Forgets a consumer whose channel has closed.
    fn remove(&self, gone: &mpsc::Sender<Message>) {
        self.lock().retain(|s| !s.same_channel(gone));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::Sender<Message>>> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }
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
    pub fn new(senders: Vec<mpsc::Sender<Message>>, metrics: Arc<ComponentMetrics>) -> Fanout {
        Fanout { routes: Routes::new(senders), metrics }
    }

    /// A fanout over routes the topology keeps a handle to (it holds them weakly, so they
    /// still drop with the last clone of this fanout).
    pub fn routed(routes: Arc<Routes>, metrics: Arc<ComponentMetrics>) -> Fanout {
        Fanout { routes, metrics }
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
        self.send_message(Message::Batch(batch)).await
    }

    /// Sends a batch with a new acknowledgement token to every consumer, waiting for room; the
    /// returned wait ends once every consumer is done with it (see [`super::ack`]). An empty
    /// batch is not sent and its wait answers delivered at once.
    ///
    /// # Errors
    /// [`Closed`] when no consumer is left.
    pub async fn send_acked(&mut self, batch: Batch) -> Result<AckWait, Closed> {
        let (ack, wait) = Ack::new();
        self.send_with(batch, Some(ack)).await?;
        Ok(wait)
    }

    /// Sends a batch carrying `ack` (a transform passes on the token of the batch it came
    /// from), or a plain batch without one. An empty batch resolves the token: nothing of it
    /// is left to deliver.
    ///
    /// # Errors
    /// [`Closed`] when no consumer is left.
    pub async fn send_with(&mut self, batch: Batch, ack: Option<Ack>) -> Result<(), Closed> {
        if batch.is_empty() {
            if let Some(a) = ack {
                a.resolve();
            }
            return Ok(());
        }
        self.count(&batch);
        match ack {
            Some(a) => self.send_message(Message::Acked(batch, a)).await,
            None => self.send_message(Message::Batch(batch)).await,
        }
    }

    /// Sends one message to every consumer, waiting for room; drops consumers that are gone.
    /// Each consumer gets its own share of an acknowledgement token; the share of a consumer
    /// that is gone drops unresolved (the batch did not reach it), and the sender's own share
    /// is resolved once every consumer has one.
    async fn send_message(&mut self, message: Message) -> Result<(), Closed> {
        let mut delivered = 0;
        for s in self.routes.snapshot() {
            if s.send(message.clone()).await.is_err() {
                self.routes.remove(&s);
            } else {
                delivered += 1;
            }
        }
        if let Message::Acked(_, a) = message {
            a.resolve();
        }
        if delivered == 0 { Err(Closed) } else { Ok(()) }
    }

    /// Sends [`Message::Seal`] to every consumer, in order with the batches sent before it:
    /// transforms pass it on untouched and a sink that holds open segments seals them when
    /// it arrives.
    ///
    /// # Errors
    /// [`Closed`] when no consumer is left.
    pub async fn send_seal(&mut self) -> Result<(), Closed> {
        self.send_message(Message::Seal).await
    }

    /// Sends a vector of events as one batch (see [`Fanout::send`]).
    pub async fn send_events(&mut self, events: Vec<Event>) -> Result<(), Closed> {
        self.send(Arc::new(events)).await
    }

    /// Sends a batch only if every consumer has room now; otherwise gives it back. An empty
    /// batch is accepted and not sent, as with [`Fanout::send`].
    pub fn try_send(&mut self, batch: Batch) -> Result<(), Full> {
        self.try_send_with(batch, None)
    }

    /// [`Fanout::try_send`] with a new acknowledgement token: the returned wait ends once
    /// every consumer is done with the batch (see [`super::ack`]).
    pub fn try_send_acked(&mut self, batch: Batch) -> Result<AckWait, Full> {
        let (ack, wait) = Ack::new();
        self.try_send_with(batch, Some(ack))?;
        Ok(wait)
    }

    fn try_send_with(&mut self, batch: Batch, ack: Option<Ack>) -> Result<(), Full> {
        if batch.is_empty() {
            if let Some(a) = ack {
                a.resolve();
            }
            return Ok(());
        }
        let senders = self.routes.snapshot();
        let mut permits = Vec::with_capacity(senders.len());
        for s in &senders {
            match s.try_reserve() {
                Ok(p) => permits.push(p),
                Err(_) => {
                    // Not sent anywhere: the caller answers "retry later" itself.
                    if let Some(a) = ack {
                        a.resolve();
                    }
                    return Err(Full(batch));
                }
            }
        }
        self.count(&batch);
        for p in permits {
            match &ack {
                Some(a) => p.send(Message::Acked(batch.clone(), a.clone())),
                None => p.send(Message::Batch(batch.clone())),
            }
        }
        if let Some(a) = ack {
            a.resolve();
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
    rx: mpsc::Receiver<Message>,
    metrics: Arc<ComponentMetrics>,
}

impl SinkInput {
    pub fn new(rx: mpsc::Receiver<Message>, metrics: Arc<ComponentMetrics>) -> SinkInput {
        SinkInput { rx, metrics }
    }

    /// The next batch or seal order, or `None` once every upstream component has finished.
    /// Only sinks that hold data across batches (the `sealed` sink) need the seal orders.
    /// An acknowledgement share that came with the batch is resolved here: the sink promises
    /// nothing across a crash.
    pub async fn recv_or_seal(&mut self) -> Option<Message> {
        let (m, ack) = self.recv_acked().await?;
        if let Some(a) = ack {
            a.resolve();
        }
        Some(m)
    }

    /// For a durable sink: the next batch (as `Message::Batch`) or seal order with the
    /// acknowledgement share that came with the batch, which the sink resolves once the batch
    /// is durable, or drops unresolved if it cannot make it durable.
    pub async fn recv_acked(&mut self) -> Option<(Message, Option<Ack>)> {
        let m = self.rx.recv().await?;
        Some(self.received_acked(m))
    }

    /// The next batch, or `None` once every upstream component has finished. Seal orders
    /// are skipped.
    pub async fn recv(&mut self) -> Option<Batch> {
        loop {
            if let Message::Batch(b) = self.recv_or_seal().await? {
                return Some(b);
            }
        }
    }

    /// The next batch if one is ready now (`Err` tells empty from finished). Seal orders
    /// are skipped.
    pub fn try_recv(&mut self) -> Result<Batch, mpsc::error::TryRecvError> {
        loop {
            let b = self.rx.try_recv()?;
            if let Message::Batch(b) = self.received(b) {
                return Ok(b);
            }
        }
    }

    /// Blocking receive, for sinks that run on a thread of their own. Seal orders are
    /// skipped.
    pub fn blocking_recv(&mut self) -> Option<Batch> {
        loop {
            let b = self.rx.blocking_recv()?;
            if let Message::Batch(b) = self.received(b) {
                return Some(b);
            }
        }
    }

    /// Counts a batch in as it is handed to the sink; resolves its acknowledgement share.
    fn received(&self, m: Message) -> Message {
        let (m, ack) = self.received_acked(m);
        if let Some(a) = ack {
            a.resolve();
        }
        m
    }

    /// Counts a batch in as it is handed to the sink; splits off its acknowledgement share.
    fn received_acked(&self, m: Message) -> (Message, Option<Ack>) {
        let (m, ack) = match m {
            Message::Acked(b, a) => (Message::Batch(b), Some(a)),
            m => (m, None),
        };
        if let Message::Batch(b) = &m {
            let bytes: usize = b.iter().map(Event::size_estimate).sum();
            self.metrics.add_in(b.len(), bytes);
        }
        (m, ack)
    }
}
