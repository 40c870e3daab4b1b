//! The topology moving batches of small log records from an in-memory source (`generate`)
//! to a discarding sink (`blackhole`), on one core (a current-thread runtime), with and
//! without a pass-through transform in between. Reports records per second.
//!
//! `cargo bench --bench topology`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealtrail::config::{self, Overrides, Source};
use sealtrail::metrics::Registry;
use sealtrail::topology;

const RECORDS: u64 = 1_000_000;

fn config(with_transform: bool) -> String {
    let mut c = format!(
        "[sources.gen]\ntype = \"generate\"\ncount = {RECORDS}\nbatch_size = 1024\n\
         lines = [\"GET /api/orders/1042 200 12ms\", \"cache miss key=session:9f2c\"]\n"
    );
    let input = if with_transform {
        c.push_str("[transforms.pass]\ntype = \"filter\"\ninputs = [\"gen\"]\n");
        "pass"
    } else {
        "gen"
    };
    c.push_str(&format!(
        "[sinks.null]\ntype = \"blackhole\"\ninputs = [\"{input}\"]\nallow_unredacted = true\n"
    ));
    c
}

fn run_once(rt: &tokio::runtime::Runtime, text: &str) -> u64 {
    let cfg = config::load(
        &sealtrail::components::KINDS,
        &[Source { name: "bench".into(), text }],
        &Overrides::default(),
        &|_| None,
    )
    .unwrap();
    let built = topology::build(&cfg).unwrap();
    let registry = Registry::default();
    let outcome = rt.block_on(topology::run(built, registry.clone(), std::future::pending()));
    assert!(outcome.failures.is_empty());
    let sink = registry.component("sink.null");
    let n = sink.events_in.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(n, RECORDS, "every record reaches the sink");
    n
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut g = c.benchmark_group("topology");
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(10);
    let direct = config(false);
    let through = config(true);
    g.bench_function("generate_to_blackhole", |b| b.iter(|| run_once(&rt, &direct)));
    g.bench_function("generate_filter_blackhole", |b| b.iter(|| run_once(&rt, &through)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
