//! The cost of the `tail` sink's fan-out per batch, against a baseline that encodes every
//! event to JSON once (what any JSON sink does with the same batch).
//!
//! The hub encodes each event at most once per batch whatever the number of clients, skips
//! everything with no client connected, and only copies bytes per client; so one client
//! should cost about the baseline, four clients little more, and none nearly nothing.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealtrail::event::{Batch, Event, LogRecord, severity};
use sealtrail::metrics::ComponentMetrics;
use sealtrail::sinks::tail::Filter;
use sealtrail::sinks::tail::hub::{Chunk, Hub, NewClient, QueueBound, Queued};
use tokio::sync::mpsc;

const EVENTS: usize = 1000;

fn batch() -> Batch {
    let levels = [severity::INFO, severity::INFO, severity::WARN, severity::ERROR, severity::DEBUG];
    Arc::new(
        (0..EVENTS)
            .map(|i| {
                Event::Log(LogRecord {
                    time: 1_764_000_000_000_000_000 + i as i64,
                    observed_time: 1_764_000_000_000_000_000 + i as i64,
                    severity_number: levels[i % levels.len()],
                    body: format!(
                        "GET /api/v1/orders/{i} 200 {}ms user=u{} region=eu-west-1 cache={}",
                        i % 97,
                        i % 13,
                        if i % 10 == 0 { "miss" } else { "hit" }
                    ),
                    service: if i % 2 == 0 { "checkout".into() } else { "billing".into() },
                    source: "app".into(),
                    ..LogRecord::default()
                })
            })
            .collect(),
    )
}

/// A client whose queue the benchmark empties after each batch (a client that keeps up).
struct Reader {
    rx: mpsc::UnboundedReceiver<Chunk>,
    queued: Arc<Queued>,
}

impl Reader {
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Ok(c) = self.rx.try_recv() {
            self.queued.taken(&c);
            n += c.bytes.len();
        }
        n
    }
}

fn hub_with(filters: &[&str]) -> (Hub, Vec<Reader>) {
    let mut hub = Hub::new(
        QueueBound { slots: 1 << 20, bytes: 1 << 30 },
        Arc::new(ComponentMetrics::new("sink.bench")),
    );
    let peer: SocketAddr = "127.0.0.1:1".parse().expect("address");
    let readers = filters
        .iter()
        .map(|f| {
            let (tx, rx) = mpsc::unbounded_channel();
            let queued = Arc::new(Queued::default());
            let filter = Filter::from_query(f).expect("filter");
            hub.add(NewClient { peer, filter, tx, queued: queued.clone() });
            Reader { rx, queued }
        })
        .collect();
    (hub, readers)
}

fn bench(c: &mut Criterion) {
    let b = batch();
    let bytes: usize = b.iter().map(Event::size_estimate).sum();
    let mut g = c.benchmark_group("tail_fanout");
    g.throughput(Throughput::Bytes(bytes as u64));

    let mut buf = Vec::with_capacity(1 << 20);
    g.bench_function("baseline_json_encode_once", |bench| {
        bench.iter(|| {
            buf.clear();
            for e in b.iter() {
                serde_json::to_writer(&mut buf, &e.to_json()).expect("encode");
                buf.push(b'\n');
            }
            black_box(buf.len())
        })
    });

    let cases: &[(&str, &[&str])] = &[
        ("hub_0_clients", &[]),
        ("hub_1_client", &[""]),
        ("hub_4_clients_all", &["", "", "", ""]),
        ("hub_4_clients_filtered", &["level=warn", "service=checkout", "grep=cache%3Dmiss", "signal=spans"]),
    ];
    for (name, filters) in cases {
        let (mut hub, mut readers) = hub_with(filters);
        g.bench_function(*name, |bench| {
            bench.iter(|| {
                hub.deliver(&b);
                black_box(readers.iter_mut().map(Reader::drain).sum::<usize>())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
