//! The fan-out from the sink's input to its clients: per-client bounded queues, filters, and
//! `{"dropped": N}` notices.
//!
//! The hub runs on the sink's task and never awaits a client. Each client's queue is an
//! unbounded channel of chunks whose *length in events* is bounded by a counter the hub
//! checks before sending and the client's response body decrements as hyper takes chunks
//! off it. A client that does not read stops its body from being polled, its counter stays
//! up, and the hub drops that client's events (counting them) instead of waiting; the next
//! time the client has room, the hub first queues a `{"dropped": N}` line so the client knows.
//!
//! Each event is encoded to JSON at most once per batch, whatever the number of clients,
//! and only when some client's filter wants it; with no client connected the hub does no
//! work at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::filter::Filter;
use crate::event::{Batch, Event};
use crate::metrics::ComponentMetrics;
use crate::topology::SinkInput;

/// How often the hub sends pending drop notices and forgets disconnected clients when no
/// batch arrives.
const TICK: Duration = Duration::from_millis(250);

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

/// The hub's own state of a client.
struct Client {
    c: NewClient,
    /// Events dropped since the last notice.
    dropped: u64,
    dropped_total: u64,
    sent_total: u64,
    /// The lines of the batch being delivered.
    out: Vec<u8>,
}

/// Delivers every batch of `input` to the clients that `register` brings, until the input
/// ends; then queues the last drop notices and drops every client's sender, which ends each
/// response after the client has read what was queued for it.
pub async fn run(
    mut input: SinkInput,
    mut register: mpsc::Receiver<NewClient>,
    client_queue: usize,
    metrics: Arc<ComponentMetrics>,
) {
    let mut hub = Hub::new(client_queue, metrics);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            // New clients first, so that a batch that arrives after a client got its 200
            // response reaches that client.
            biased;
            Some(c) = register.recv() => hub.add(c),
            batch = input.recv() => {
                let Some(batch) = batch else { break };
                while let Ok(c) = register.try_recv() {
                    hub.add(c);
                }
                hub.deliver(&batch);
            }
            _ = tick.tick() => hub.housekeeping(),
        }
    }
    register.close();
    hub.finish();
}

/// The clients of one tail sink and the encoding buffer they share. Public for the
/// benchmark in `benches/tail.rs`; the sink drives it through [`run`].
pub struct Hub {
    clients: Vec<Client>,
    client_queue: usize,
    metrics: Arc<ComponentMetrics>,
    enc: Encoded,
}

impl Hub {
    /// A hub with no clients whose queues hold `client_queue` slots each.
    pub fn new(client_queue: usize, metrics: Arc<ComponentMetrics>) -> Hub {
        Hub { clients: Vec::new(), client_queue, metrics, enc: Encoded::default() }
    }

    /// Adds a client.
    pub fn add(&mut self, c: NewClient) {
        tracing::info!(peer = %c.peer, clients = self.clients.len() + 1, "tail: client connected");
        self.clients.push(Client { c, dropped: 0, dropped_total: 0, sent_total: 0, out: Vec::new() });
    }

    /// Queues the events of `batch` for every client whose filter wants them, dropping
    /// (and counting) what does not fit a client's queue. Never blocks.
    pub fn deliver(&mut self, batch: &Batch) {
        if self.clients.is_empty() {
            return;
        }
        self.enc.reset(batch.len());
        let mut delivered = 0u64;
        let mut bytes = 0usize;
        let mut dropped = 0u64;
        for cl in &mut self.clients {
            let mut room = self.client_queue.saturating_sub(cl.c.queued.load(Ordering::Acquire));
            let mut slots = 0;
            cl.out.clear();
            for (i, e) in batch.iter().enumerate() {
                if !cl.c.filter.matches(e) {
                    continue;
                }
                if room == 0 {
                    if cl.dropped == 0 {
                        tracing::warn!(peer = %cl.c.peer, "tail: client is not keeping up; dropping its events");
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
        for cl in &mut self.clients {
            if cl.dropped > 0 && cl.c.queued.load(Ordering::Acquire) < self.client_queue {
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
        for cl in &mut self.clients {
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

    fn prune(&mut self) {
        self.clients.retain(|cl| {
            let open = !cl.c.tx.is_closed();
            if !open {
                log_gone(cl, "client disconnected");
            }
            open
        });
    }
}

fn log_gone(cl: &Client, why: &str) {
    tracing::info!(
        peer = %cl.c.peer,
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
    cl.c.queued.fetch_add(slots, Ordering::AcqRel);
    let chunk = Chunk { bytes: Bytes::copy_from_slice(&cl.out), slots };
    if cl.c.tx.send(chunk).is_err() {
        // The body is gone; `prune` forgets the client.
        cl.c.queued.fetch_sub(slots, Ordering::AcqRel);
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
        let mut hub =
            Hub::new(3, metrics.clone());
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
