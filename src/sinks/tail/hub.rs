//! The fan-out from the sink's input to its clients: per-client bounded queues, filters, and
//! `{"dropped": N}` notices.
//!
//! Two tasks, so that neither a client nor the cost of encoding can slow the pipeline:
//!
//! - The *front* ([`run`], the sink's own task) takes each batch off the sink's input and
//!   hands it to the encoder through a small bounded channel with `try_send`, never waiting.
//!   When the encoder is behind, the batch is dropped for every client, and each client's
//!   `lagged` counter grows by the number of its events that its filter would have let
//!   through (filters are cheap next to encoding).
//! - The *encoder* ([`Hub`]) encodes and queues events per client. Each client's queue is an
//!   unbounded channel of chunks whose *length in events* is bounded by a counter the hub
//!   checks before sending and the client's response body decrements as hyper takes chunks
//!   off it. A client that does not read stops its body from being polled, its counter stays
//!   up, and the hub drops that client's events (counting them) instead of waiting; the next
//!   time the client has room, the hub first queues a `{"dropped": N}` line (lagged and
//!   queue-full drops together) so the client knows.
//!
//! Each event is encoded to JSON at most once per batch, whatever the number of clients,
//! and only when some client's filter wants it and has room; with no client connected the
//! front does not even hand batches over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::filter::Filter;
use crate::component::SinkInput;
use crate::event::{Batch, Event};
use crate::metrics::ComponentMetrics;

/// How often the hub sends pending drop notices and forgets disconnected clients when no
/// batch arrives.
const TICK: Duration = Duration::from_millis(250);

/// Batches that may wait for the encoder before the front drops new ones: enough to absorb
/// bursts of small batches (a source sends one per read), few enough to bound the memory
/// the sink holds on to.
const PENDING_BATCHES: usize = 64;

/// Some encoded lines for one client, and how many queue slots they take (events, plus one
/// for a drop notice).
#[derive(Debug)]
pub struct Chunk {
    pub bytes: Bytes,
    pub slots: usize,
}

/// A client as the HTTP handler registers it with the hub.
pub struct NewClient {
    pub peer: SocketAddr,
    pub filter: Filter,
    pub tx: mpsc::UnboundedSender<Chunk>,
    /// Slots in use in this client's queue: incremented by the hub before it sends a chunk,
    /// decremented by the response body when hyper takes the chunk.
    pub queued: Arc<AtomicUsize>,
}

/// What the front and the encoder share about a client.
struct Watch {
    filter: Filter,
    /// Events the front dropped for this client because the encoder was behind; the encoder
    /// takes them into its drop count.
    lagged: AtomicU64,
}

/// A client on its way from the front to the encoder.
struct Registration {
    peer: SocketAddr,
    tx: mpsc::UnboundedSender<Chunk>,
    queued: Arc<AtomicUsize>,
    watch: Arc<Watch>,
}

impl Registration {
    fn new(c: NewClient) -> Registration {
        let watch = Arc::new(Watch { filter: c.filter, lagged: AtomicU64::new(0) });
        Registration { peer: c.peer, tx: c.tx, queued: c.queued, watch }
    }
}

/// The encoder's state of a client.
struct Client {
    peer: SocketAddr,
    tx: mpsc::UnboundedSender<Chunk>,
    queued: Arc<AtomicUsize>,
    watch: Arc<Watch>,
    /// Events dropped since the last notice.
    dropped: u64,
    dropped_total: u64,
    sent_total: u64,
    /// The lines of the batch being delivered.
    out: Vec<u8>,
}

impl Client {
    /// Takes the front's lagged count into the drop count.
    fn take_lagged(&mut self, metrics: &ComponentMetrics, now: bool) {
        if !now {
            return;
        }
        let lag = self.watch.lagged.swap(0, Ordering::AcqRel);
        if lag > 0 {
            if self.dropped == 0 {
                tracing::warn!(peer = %self.peer, "tail: the sink is behind; dropping events for its clients");
            }
            self.dropped += lag;
            metrics.add("dropped.encoder_behind", lag);
        }
    }
}

/// Delivers every batch of `input` to the clients that `register` brings, until the input
/// ends; then queues the last drop notices and drops every client's sender, which ends each
/// response after the client has read what was queued for it. Never waits for a client or
/// for the encoder.
pub async fn run(
    mut input: SinkInput,
    mut register: mpsc::Receiver<NewClient>,
    client_queue: usize,
    metrics: Arc<ComponentMetrics>,
) {
    let (work_tx, work_rx) = mpsc::channel::<Batch>(PENDING_BATCHES);
    let (reg_tx, reg_rx) = mpsc::unbounded_channel::<Registration>();
    // Batches handed over so far, and after how many of them the last drop happened: the
    // encoder reports lagged drops only once it has delivered every batch that came before
    // them, so a `{"dropped": N}` line never arrives ahead of events older than the drop.
    let mut handed_over = 0u64;
    let barrier = Arc::new(AtomicU64::new(0));
    let hub = Hub { lag_barrier: barrier.clone(), ..Hub::new(client_queue, metrics.clone()) };
    let encoder = tokio::spawn(encode(hub, work_rx, reg_rx));
    let mut watching: Vec<Arc<Watch>> = Vec::new();
    let admit = |c: NewClient, watching: &mut Vec<Arc<Watch>>| {
        let r = Registration::new(c);
        watching.push(r.watch.clone());
        // The encoder outlives the front, so this cannot fail while the front runs.
        let _ = reg_tx.send(r);
    };
    loop {
        tokio::select! {
            // New clients first, so that a batch that arrives after a client got its 200
            // response reaches that client.
            biased;
            Some(c) = register.recv() => admit(c, &mut watching),
            batch = input.recv() => {
                let Some(batch) = batch else { break };
                while let Ok(c) = register.try_recv() {
                    admit(c, &mut watching);
                }
                // The encoder drops its `Watch` when a client goes away.
                watching.retain(|w| Arc::strong_count(w) > 1);
                if watching.is_empty() {
                    continue;
                }
                if let Err(e) = work_tx.try_send(batch) {
                    barrier.store(handed_over, Ordering::Release);
                    let batch = match e {
                        mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
                    };
                    for w in &watching {
                        let n = if w.filter.is_pass_all() {
                            batch.len()
                        } else {
                            batch.iter().filter(|e| w.filter.matches(e)).count()
                        };
                        w.lagged.fetch_add(n as u64, Ordering::AcqRel);
                    }
                } else {
                    handed_over += 1;
                }
            }
        }
    }
    register.close();
    // Clients that registered in the meantime still get a proper end of stream.
    while let Ok(c) = register.try_recv() {
        admit(c, &mut watching);
    }
    drop(work_tx);
    if let Err(e) = encoder.await {
        tracing::error!("tail: the encoder task failed: {e}");
    }
}

/// The encoder task: delivers the batches the front hands over, then ends every stream.
async fn encode(
    mut hub: Hub,
    mut work: mpsc::Receiver<Batch>,
    mut regs: mpsc::UnboundedReceiver<Registration>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            Some(r) = regs.recv() => hub.add_registration(r),
            batch = work.recv() => {
                let Some(batch) = batch else { break };
                while let Ok(r) = regs.try_recv() {
                    hub.add_registration(r);
                }
                hub.deliver(&batch);
                // Encoding is CPU work: let the runtime's other tasks in between batches.
                tokio::task::yield_now().await;
            }
            _ = tick.tick() => hub.housekeeping(),
        }
    }
    while let Ok(r) = regs.try_recv() {
        hub.add_registration(r);
    }
    hub.finish();
}

/// The clients of one tail sink and the encoding buffer they share. Public for the
/// benchmark in `benches/tail.rs`; the sink drives it through [`run`].
pub struct Hub {
    clients: Vec<Client>,
    client_queue: usize,
    metrics: Arc<ComponentMetrics>,
    enc: Encoded,
    /// Batches delivered so far.
    delivered: u64,
    /// Lagged drops are reported once `delivered` reaches this (see [`run`]).
    lag_barrier: Arc<AtomicU64>,
}

impl Hub {
    /// A hub with no clients whose queues hold `client_queue` slots each.
    pub fn new(client_queue: usize, metrics: Arc<ComponentMetrics>) -> Hub {
        Hub {
            clients: Vec::new(),
            client_queue,
            metrics,
            enc: Encoded::default(),
            delivered: 0,
            lag_barrier: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Adds a client.
    pub fn add(&mut self, c: NewClient) {
        self.add_registration(Registration::new(c));
    }

    fn add_registration(&mut self, r: Registration) {
        tracing::info!(peer = %r.peer, clients = self.clients.len() + 1, "tail: client connected");
        self.clients.push(Client {
            peer: r.peer,
            tx: r.tx,
            queued: r.queued,
            watch: r.watch,
            dropped: 0,
            dropped_total: 0,
            sent_total: 0,
            out: Vec::new(),
        });
    }

    /// Queues the events of `batch` for every client whose filter wants them, dropping
    /// (and counting) what does not fit a client's queue. Never blocks.
    pub fn deliver(&mut self, batch: &Batch) {
        let lag_now = self.lag_due();
        self.delivered += 1;
        if self.clients.is_empty() {
            return;
        }
        self.enc.reset(batch.len());
        let mut delivered = 0u64;
        let mut bytes = 0usize;
        let mut dropped = 0u64;
        for cl in &mut self.clients {
            cl.take_lagged(&self.metrics, lag_now);
            let mut room = self.client_queue.saturating_sub(cl.queued.load(Ordering::Acquire));
            let mut slots = 0;
            cl.out.clear();
            for (i, e) in batch.iter().enumerate() {
                if !cl.watch.filter.matches(e) {
                    continue;
                }
                if room == 0 {
                    if cl.dropped == 0 {
                        tracing::warn!(peer = %cl.peer, "tail: client is not keeping up; dropping its events");
                    }
                    cl.dropped += 1;
                    dropped += 1;
                    continue;
                }
                if cl.dropped > 0 {
                    notice(&mut cl.out, cl.dropped);
                    cl.dropped_total += cl.dropped;
                    cl.dropped = 0;
                    slots += 1;
                    room -= 1;
                    if room == 0 {
                        cl.dropped += 1;
                        dropped += 1;
                        continue;
                    }
                }
                cl.out.extend_from_slice(self.enc.get(i, e));
                slots += 1;
                room -= 1;
                cl.sent_total += 1;
                delivered += 1;
            }
            bytes += cl.out.len();
            send(cl, slots);
        }
        self.metrics.add_out(delivered as usize, bytes);
        self.metrics.add("dropped.client_queue_full", dropped);
        self.prune();
    }

    /// Queues pending drop notices of clients that have room again, and forgets clients
    /// that went away.
    fn housekeeping(&mut self) {
        let lag_now = self.lag_due();
        for cl in &mut self.clients {
            cl.take_lagged(&self.metrics, lag_now);
            if cl.dropped > 0 && cl.queued.load(Ordering::Acquire) < self.client_queue {
                cl.out.clear();
                notice(&mut cl.out, cl.dropped);
                cl.dropped_total += cl.dropped;
                cl.dropped = 0;
                send(cl, 1);
            }
        }
        self.prune();
    }

    /// The input has ended: every client gets its last drop notice (even over its queue
    /// bound, by one line) and the end of its stream.
    fn finish(&mut self) {
        // Every batch handed over has been delivered: all lagged drops are due.
        for cl in &mut self.clients {
            cl.take_lagged(&self.metrics, true);
            if cl.dropped > 0 {
                cl.out.clear();
                notice(&mut cl.out, cl.dropped);
                cl.dropped_total += cl.dropped;
                cl.dropped = 0;
                send(cl, 1);
            }
        }
        for cl in self.clients.drain(..) {
            log_gone(&cl, "stream ended");
        }
    }

    /// `true` once every batch handed over before the front's last drop has been delivered.
    fn lag_due(&self) -> bool {
        self.delivered >= self.lag_barrier.load(Ordering::Acquire)
    }

    fn prune(&mut self) {
        self.clients.retain(|cl| {
            let open = !cl.tx.is_closed();
            if !open {
                log_gone(cl, "client disconnected");
            }
            open
        });
    }
}

fn log_gone(cl: &Client, why: &str) {
    tracing::info!(
        peer = %cl.peer,
        sent = cl.sent_total,
        dropped = cl.dropped_total + cl.dropped,
        "tail: {why}"
    );
}

/// Sends the client's pending lines as one chunk taking `slots` queue slots.
fn send(cl: &mut Client, slots: usize) {
    if cl.out.is_empty() {
        return;
    }
    // Count the slots before the body can see the chunk, so its decrement never underflows.
    cl.queued.fetch_add(slots, Ordering::AcqRel);
    let chunk = Chunk { bytes: Bytes::copy_from_slice(&cl.out), slots };
    if cl.tx.send(chunk).is_err() {
        // The body is gone; `prune` forgets the client.
        cl.queued.fetch_sub(slots, Ordering::AcqRel);
    }
    cl.out.clear();
}

/// Appends the line that tells a client how many of its events were dropped.
fn notice(out: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = writeln!(out, "{{\"dropped\": {n}}}");
}

/// The JSON lines of the events of one batch, each encoded once, on first use.
#[derive(Default)]
struct Encoded {
    buf: Vec<u8>,
    /// `(start, end)` in `buf` of each event's line; `start > end` means not encoded yet.
    ranges: Vec<(usize, usize)>,
}

impl Encoded {
    fn reset(&mut self, n: usize) {
        self.buf.clear();
        self.ranges.clear();
        self.ranges.resize(n, (1, 0));
    }

    fn get(&mut self, i: usize, e: &Event) -> &[u8] {
        let (s, t) = self.ranges[i];
        if s > t {
            let start = self.buf.len();
            // Serializing a serde_json::Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.buf, &e.to_json());
            self.buf.push(b'\n');
            self.ranges[i] = (start, self.buf.len());
        }
        let (s, t) = self.ranges[i];
        &self.buf[s..t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LogRecord;

    fn batch(range: std::ops::Range<usize>) -> Batch {
        Arc::new(
            range
                .map(|i| Event::Log(LogRecord { body: format!("line {i}"), ..LogRecord::default() }))
                .collect(),
        )
    }

    fn client(filter: &str) -> (NewClient, mpsc::UnboundedReceiver<Chunk>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let c = NewClient {
            peer: "127.0.0.1:1".parse().unwrap(),
            filter: Filter::from_query(filter).unwrap(),
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
        };
        (c, rx)
    }

    /// Takes every queued chunk as the response body would, returning the lines.
    fn take(rx: &mut mpsc::UnboundedReceiver<Chunk>, queued: &AtomicUsize) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(c) = rx.try_recv() {
            queued.fetch_sub(c.slots, Ordering::AcqRel);
            lines.extend(std::str::from_utf8(&c.bytes).unwrap().lines().map(str::to_owned));
        }
        lines
    }

    fn body(line: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v.get("body").and_then(|b| b.as_str()).map(str::to_owned).unwrap_or_else(|| line.to_owned())
    }

    #[test]
    fn a_full_queue_drops_for_that_client_only_then_notifies() {
        let metrics = Arc::new(ComponentMetrics::new("sink.t"));
        let mut hub = Hub::new(3, metrics.clone());
        let (slow, mut slow_rx) = client("");
        let slow_q = slow.queued.clone();
        let (fast, mut fast_rx) = client("grep=[05]$");
        let fast_q = fast.queued.clone();
        hub.add(slow);
        hub.add(fast);

        hub.deliver(&batch(0..10));
        // The fast client reads everything; the slow one holds its three.
        let fast_lines: Vec<_> = take(&mut fast_rx, &fast_q).iter().map(|l| body(l)).collect();
        assert_eq!(fast_lines, ["line 0", "line 5"]);
        assert_eq!(slow_q.load(Ordering::Acquire), 3);
        assert_eq!(metrics.get("dropped.client_queue_full"), 7);

        let lines: Vec<_> = take(&mut slow_rx, &slow_q).iter().map(|l| body(l)).collect();
        assert_eq!(lines, ["line 0", "line 1", "line 2"]);
        hub.deliver(&batch(10..12));
        let lines: Vec<_> = take(&mut slow_rx, &slow_q).iter().map(|l| body(l)).collect();
        assert_eq!(lines, ["{\"dropped\": 7}", "line 10", "line 11"]);
        let fast_lines: Vec<_> = take(&mut fast_rx, &fast_q).iter().map(|l| body(l)).collect();
        assert_eq!(fast_lines, ["line 10"]);
    }

    #[test]
    fn notices_go_out_on_the_tick_and_at_the_end() {
        let metrics = Arc::new(ComponentMetrics::new("sink.t"));
        let mut hub = Hub::new(2, metrics);
        let (c, mut rx) = client("");
        let q = c.queued.clone();
        hub.add(c);
        hub.deliver(&batch(0..5));
        assert_eq!(take(&mut rx, &q).len(), 2);
        hub.housekeeping();
        assert_eq!(take(&mut rx, &q), ["{\"dropped\": 3}"]);
        hub.deliver(&batch(5..9));
        hub.finish();
        let lines = take(&mut rx, &q);
        assert_eq!(lines.last().map(String::as_str), Some("{\"dropped\": 2}"));
        // The end of the stream: the sender is gone.
        assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    }

    /// On a current-thread runtime the encoder task cannot run while the front takes ready
    /// batches, so all but the first `PENDING_BATCHES` batches find it "behind".
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_encoder_drops_batches_and_says_so() {
        let metrics = Arc::new(ComponentMetrics::new("sink.t"));
        let n = PENDING_BATCHES + 6;
        let (in_tx, in_rx) = mpsc::channel(n);
        let (reg_tx, reg_rx) = mpsc::channel(4);
        let (all, mut all_rx) = client("");
        let all_q = all.queued.clone();
        let (some, mut some_rx) = client("grep=[05]$");
        let some_q = some.queued.clone();
        reg_tx.try_send(all).unwrap();
        reg_tx.try_send(some).unwrap();
        for i in 0..n {
            in_tx.try_send(crate::component::Message::Batch(batch(i * 10..i * 10 + 10))).unwrap();
        }
        drop(in_tx);
        run(SinkInput::new(in_rx, metrics.clone()), reg_rx, 1000, metrics.clone()).await;

        let lines = take(&mut all_rx, &all_q);
        let want: Vec<String> = (0..PENDING_BATCHES * 10).map(|i| format!("line {i}")).collect();
        assert_eq!(lines[..want.len()].iter().map(|l| body(l)).collect::<Vec<_>>(), want);
        assert_eq!(lines[want.len()..], ["{\"dropped\": 60}"]);
        let lines = take(&mut some_rx, &some_q);
        assert_eq!(lines.last().map(String::as_str), Some("{\"dropped\": 12}"));
        assert_eq!(lines.len(), PENDING_BATCHES * 2 + 1);
        assert_eq!(metrics.get("dropped.encoder_behind"), 72);
    }

    #[test]
    fn gone_clients_are_forgotten() {
        let metrics = Arc::new(ComponentMetrics::new("sink.t"));
        let mut hub = Hub::new(8, metrics);
        let (c, rx) = client("");
        hub.add(c);
        drop(rx);
        hub.deliver(&batch(0..2));
        assert!(hub.clients.is_empty());
    }
}
