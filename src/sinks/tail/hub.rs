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
//!   unbounded channel of chunks whose length is bounded *in events and in bytes* by
//!   counters ([`Queued`]) the hub checks before sending and the client's response body
//!   decrements as hyper takes chunks off it. A client that does not read stops its body
//!   from being polled, its counters stay up, and the hub drops that client's events
//!   (counting them) instead of waiting; the next time the client has room, the hub first
//!   queues a `{"dropped": N}` line (lagged and queue-full drops together) so the client
//!   knows. So the memory a client pins is at most `client_queue_bytes` plus what hyper and
//!   the socket buffer, however large the events and however many never-reading clients.
//!
//! Each event is encoded to JSON at most once per batch, whatever the number of clients,
//! and only when some client's filter wants it and has room; with no client connected the
//! front does not even hand batches over. When a client takes a whole batch (no filter, room
//! for all of it) it gets the batch's encoded buffer itself, shared with every other such
//! client (a reference-counted [`Bytes`]), not a copy.

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
/// for a drop notice). Their size in bytes counts against the client's byte bound.
#[derive(Debug)]
pub struct Chunk {
    pub bytes: Bytes,
    pub slots: usize,
}

/// What a client's queue holds: incremented by the hub before it sends a chunk, decremented
/// by the response body when hyper takes the chunk ([`Queued::taken`]).
#[derive(Debug, Default)]
pub struct Queued {
    pub slots: AtomicUsize,
    pub bytes: AtomicUsize,
}

impl Queued {
    /// The chunk left the queue.
    pub fn taken(&self, c: &Chunk) {
        self.slots.fetch_sub(c.slots, Ordering::AcqRel);
        self.bytes.fetch_sub(c.bytes.len(), Ordering::AcqRel);
    }

    fn added(&self, slots: usize, bytes: usize) {
        self.slots.fetch_add(slots, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }
}

/// A client as the HTTP handler registers it with the hub.
pub struct NewClient {
    pub peer: SocketAddr,
    pub filter: Filter,
    pub tx: mpsc::UnboundedSender<Chunk>,
    pub queued: Arc<Queued>,
}

/// How much one client's queue may hold.
#[derive(Debug, Clone, Copy)]
pub struct QueueBound {
    /// Events (and drop notices).
    pub slots: usize,
    /// Bytes of encoded lines.
    pub bytes: usize,
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
    queued: Arc<Queued>,
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
    queued: Arc<Queued>,
    watch: Arc<Watch>,
    /// Events dropped since the last notice.
    dropped: u64,
    dropped_total: u64,
    sent_total: u64,
    /// The lines of the batch being delivered.
    out: Vec<u8>,
}

impl Client {
    /// Free room in this client's queue: (slots, bytes).
    fn room(&self, bound: QueueBound) -> (usize, usize) {
        (
            bound.slots.saturating_sub(self.queued.slots.load(Ordering::Acquire)),
            bound.bytes.saturating_sub(self.queued.bytes.load(Ordering::Acquire)),
        )
    }

    /// Queues the pending drop notice on its own if the queue has room for it.
    fn notify_if_room(&mut self, bound: QueueBound) {
        let (slots, bytes) = self.room(bound);
        if self.dropped > 0 && slots > 0 && bytes >= NOTICE_MAX_BYTES {
            self.flush_notice();
        }
    }

    /// Queues the pending drop notice, room or not.
    fn flush_notice(&mut self) {
        if self.dropped == 0 {
            return;
        }
        self.out.clear();
        notice(&mut self.out, self.dropped);
        self.dropped_total += self.dropped;
        self.dropped = 0;
        send(self, 1);
    }

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
    bound: QueueBound,
    metrics: Arc<ComponentMetrics>,
) {
    let (work_tx, work_rx) = mpsc::channel::<Batch>(PENDING_BATCHES);
    let (reg_tx, reg_rx) = mpsc::unbounded_channel::<Registration>();
    // Batches handed over so far, and after how many of them the last drop happened: the
    // encoder reports lagged drops only once it has delivered every batch that came before
    // them, so a `{"dropped": N}` line never arrives ahead of events older than the drop.
    let mut handed_over = 0u64;
    let barrier = Arc::new(AtomicU64::new(0));
    let hub = Hub { lag_barrier: barrier.clone(), ..Hub::new(bound, metrics.clone()) };
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
    bound: QueueBound,
    metrics: Arc<ComponentMetrics>,
    enc: Encoded,
    /// Batches delivered so far.
    delivered: u64,
    /// Lagged drops are reported once `delivered` reaches this (see [`run`]).
    lag_barrier: Arc<AtomicU64>,
}

impl Hub {
    /// A hub with no clients whose queues hold at most `bound` each.
    pub fn new(bound: QueueBound, metrics: Arc<ComponentMetrics>) -> Hub {
        Hub {
            clients: Vec::new(),
            bound,
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
        let bound = self.bound;
        // Encode the whole batch into one buffer, in order, when some client can take all of
        // it: such clients then share that buffer.
        let shared = self
            .clients
            .iter()
            .any(|c| c.watch.filter.is_pass_all() && c.room(bound).0 > batch.len())
            .then(|| self.enc.encode_all(batch));
        let mut delivered = 0u64;
        let mut bytes = 0usize;
        let mut dropped = 0u64;
        for cl in &mut self.clients {
            cl.take_lagged(&self.metrics, lag_now);
            let (mut room, mut room_bytes) = cl.room(bound);
            if let Some(all) = &shared {
                // One slot and some bytes are kept for a pending drop notice.
                if cl.watch.filter.is_pass_all()
                    && room > batch.len()
                    && room_bytes >= all.len() + NOTICE_MAX_BYTES
                {
                    cl.flush_notice();
                    cl.queued.added(batch.len(), all.len());
                    cl.sent_total += batch.len() as u64;
                    delivered += batch.len() as u64;
                    bytes += all.len();
                    if let Err(e) = cl.tx.send(Chunk { bytes: all.clone(), slots: batch.len() }) {
                        // The body is gone; `prune` forgets the client.
                        cl.queued.taken(&e.0);
                    }
                    continue;
                }
            }
            let mut slots = 0;
            cl.out.clear();
            for (i, e) in batch.iter().enumerate() {
                if !cl.watch.filter.matches(e) {
                    continue;
                }
                let line = self.enc.get(i, e);
                // A pending drop notice goes out just before the next line that fits.
                let pending = usize::from(cl.dropped > 0);
                if room < 1 + pending || room_bytes < line.len() + pending * NOTICE_MAX_BYTES {
                    if cl.dropped == 0 {
                        tracing::warn!(peer = %cl.peer, "tail: client is not keeping up; dropping its events");
                    }
                    cl.dropped += 1;
                    dropped += 1;
                    continue;
                }
                if cl.dropped > 0 {
                    let before = cl.out.len();
                    notice(&mut cl.out, cl.dropped);
                    cl.dropped_total += cl.dropped;
                    cl.dropped = 0;
                    slots += 1;
                    room -= 1;
                    room_bytes -= cl.out.len() - before;
                }
                cl.out.extend_from_slice(line);
                slots += 1;
                room -= 1;
                room_bytes -= line.len();
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
            cl.notify_if_room(self.bound);
        }
        self.prune();
    }

    /// The input has ended: every client gets its last drop notice (even over its queue
    /// bound, by one line) and the end of its stream.
    fn finish(&mut self) {
        // Every batch handed over has been delivered: all lagged drops are due.
        for cl in &mut self.clients {
            cl.take_lagged(&self.metrics, true);
            cl.flush_notice();
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
    let chunk = Chunk { bytes: Bytes::from(std::mem::take(&mut cl.out)), slots };
    // Count before the body can see the chunk, so its decrement never underflows.
    cl.queued.added(slots, chunk.bytes.len());
    if let Err(e) = cl.tx.send(chunk) {
        // The body is gone; `prune` forgets the client.
        cl.queued.taken(&e.0);
    }
}

/// The longest drop notice line: `{"dropped": 18446744073709551615}` and a newline.
const NOTICE_MAX_BYTES: usize = 34;

/// Appends the line that tells a client how many of its events were dropped.
fn notice(out: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = writeln!(out, "{{\"dropped\": {n}}}");
}

/// Appends an event's line of the tail stream: its JSON form and a newline.
pub fn encode_line(e: &Event, buf: &mut Vec<u8>) {
    crate::event::json::write_event(buf, e);
    buf.push(b'\n');
}

/// The JSON lines of the events of one batch, each encoded once, on first use, or all at
/// once in order ([`Encoded::encode_all`]) into a buffer that clients share.
#[derive(Default)]
struct Encoded {
    buf: Vec<u8>,
    /// `(start, end)` in `buf` (or `all`) of each event's line; `start > end` means not
    /// encoded yet.
    ranges: Vec<(usize, usize)>,
    /// The whole batch, once [`Encoded::encode_all`] has run.
    all: Option<Bytes>,
}

impl Encoded {
    fn reset(&mut self, n: usize) {
        // A shared buffer belongs to the clients now; the next batch gets a fresh one.
        self.all = None;
        self.buf.clear();
        self.ranges.clear();
        self.ranges.resize(n, (1, 0));
    }

    /// Encodes every event of `batch` in order and returns the buffer, to be shared.
    fn encode_all(&mut self, batch: &Batch) -> Bytes {
        self.buf.clear();
        for (i, e) in batch.iter().enumerate() {
            let start = self.buf.len();
            encode_line(e, &mut self.buf);
            self.ranges[i] = (start, self.buf.len());
        }
        let all = Bytes::from(std::mem::take(&mut self.buf));
        self.all = Some(all.clone());
        all
    }

    fn get(&mut self, i: usize, e: &Event) -> &[u8] {
        if let Some(all) = &self.all {
            let (s, t) = self.ranges[i];
            return &all[s..t];
        }
        let (s, t) = self.ranges[i];
        if s > t {
            let start = self.buf.len();
            encode_line(e, &mut self.buf);
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
            queued: Arc::new(Queued::default()),
        };
        (c, rx)
    }

    /// Takes every queued chunk as the response body would, returning the lines.
    fn take(rx: &mut mpsc::UnboundedReceiver<Chunk>, queued: &Queued) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(c) = rx.try_recv() {
            queued.taken(&c);
            lines.extend(std::str::from_utf8(&c.bytes).unwrap().lines().map(str::to_owned));
        }
        lines
    }

    /// A bound in events only.
    fn slots(n: usize) -> QueueBound {
        QueueBound { slots: n, bytes: usize::MAX }
    }

    fn body(line: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v.get("body").and_then(|b| b.as_str()).map(str::to_owned).unwrap_or_else(|| line.to_owned())
    }

    #[test]
    fn a_full_queue_drops_for_that_client_only_then_notifies() {
        let metrics = Arc::new(ComponentMetrics::new("sink.t"));
        let mut hub = Hub::new(slots(3), metrics.clone());
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
        assert_eq!(slow_q.slots.load(Ordering::Acquire), 3);
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
        let mut hub = Hub::new(slots(2), metrics);
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
        run(SinkInput::new(in_rx, metrics.clone()), reg_rx, slots(1000), metrics.clone()).await;

        let lines = take(&mut all_rx, &all_q);
        let want: Vec<String> = (0..PENDING_BATCHES * 10).map(|i| format!("line {i}")).collect();
        assert_eq!(lines[..want.len()].iter().map(|l| body(l)).collect::<Vec<_>>(), want);
        assert_eq!(lines[want.len()..], ["{\"dropped\": 60}"]);
        let lines = take(&mut some_rx, &some_q);
        assert_eq!(lines.last().map(String::as_str), Some("{\"dropped\": 12}"));
        assert_eq!(lines.len(), PENDING_BATCHES * 2 + 1);
        assert_eq!(metrics.get("dropped.encoder_behind"), 72);
    }

    fn big_batch(n: usize, len: usize) -> Batch {
        Arc::new(
            (0..n)
                .map(|i| {
                    Event::Log(LogRecord {
                        body: format!("{i:04}{}", "z".repeat(len)),
                        ..LogRecord::default()
                    })
                })
                .collect(),
        )
    }

    /// Issue 13: a client's queue is bounded in bytes, not only in events.
    #[test]
    fn a_client_queue_is_bounded_in_bytes() {
        let metrics = Arc::new(ComponentMetrics::new("sink.t"));
        let bound = QueueBound { slots: 1000, bytes: 64 << 10 };
        let mut hub = Hub::new(bound, metrics.clone());
        let (stuck, _stuck_rx) = client("");
        let q = stuck.queued.clone();
        hub.add(stuck);
        for _ in 0..20 {
            hub.deliver(&big_batch(10, 10_000));
            assert!(
                q.bytes.load(Ordering::Acquire) <= bound.bytes,
                "{} bytes queued",
                q.bytes.load(Ordering::Acquire)
            );
        }
        // Six lines of about 10 KB fit in 64 KiB; the other 194 are dropped and counted.
        assert_eq!(q.slots.load(Ordering::Acquire), 6);
        assert_eq!(metrics.get("dropped.client_queue_full"), 194);
    }

    /// Clients that take a whole batch share one encoded buffer instead of a copy each.
    #[test]
    fn whole_batches_are_shared_between_clients() {
        let metrics = Arc::new(ComponentMetrics::new("sink.t"));
        let mut hub = Hub::new(QueueBound { slots: 100, bytes: 1 << 20 }, metrics);
        let (a, mut a_rx) = client("");
        let (b, mut b_rx) = client("");
        let (some, mut some_rx) = client("grep=0001");
        hub.add(a);
        hub.add(b);
        hub.add(some);
        hub.deliver(&big_batch(3, 100));
        let (a, b) = (a_rx.try_recv().unwrap(), b_rx.try_recv().unwrap());
        assert_eq!(a.bytes.as_ptr(), b.bytes.as_ptr(), "one buffer, shared");
        assert_eq!(a.bytes.len(), b.bytes.len());
        assert_eq!(std::str::from_utf8(&a.bytes).unwrap().lines().count(), 3);
        let some = some_rx.try_recv().unwrap();
        assert_eq!(std::str::from_utf8(&some.bytes).unwrap().lines().count(), 1);
        assert!(body(std::str::from_utf8(&some.bytes).unwrap().trim()).starts_with("0001"));
    }

    #[test]
    fn gone_clients_are_forgotten() {
        let metrics = Arc::new(ComponentMetrics::new("sink.t"));
        let mut hub = Hub::new(slots(8), metrics);
        let (c, rx) = client("");
        hub.add(c);
        drop(rx);
        hub.deliver(&batch(0..2));
        assert!(hub.clients.is_empty());
    }
}
