//! Writing sealed segments versus a plain Parquet baseline, on the same log lines.
//!
//! - `plain_arrowwriter_zstd1`: the baseline of DESIGN.md "Targets": one `body` column of the
//!   lines, a single-threaded `ArrowWriter` with zstd(1), no encryption, no event model.
//! - `sealed_segment`: log records (as the stdin source makes them) through the logs column
//!   builders into an encrypted segment (`SegmentWriter`: PME, zstd(1), statistics, page
//!   index, fsync and rename) under a fresh keyring.
//! - `query_full_scan`: decrypting and decoding every row of that segment.
//!
//! Each bench checks its answer (row counts) so a broken path cannot look fast.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sealtrail::event::{Event, LogRecord, Signal};
use sealtrail::keys::{Keyring, LocalProvider};
use sealtrail::segment::columns::Columns;
use sealtrail::segment::reader::{Filter, Segment, SegmentRetriever};
use sealtrail::segment::writer::{SegmentWriter, WriteOptions};

const CORPUS_BYTES: usize = 32 << 20;
const BATCH: usize = 8192;

fn corpus() -> Vec<u8> {
    sealtrail::loggen::corpus(1, sealtrail::loggen::Rates::default(), CORPUS_BYTES).0
}

fn plain(lines: &[&str]) -> usize {
    let schema = Arc::new(Schema::new(vec![Field::new("body", DataType::Utf8, false)]));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
        .build();
    let mut w = ArrowWriter::try_new(std::io::sink(), schema.clone(), Some(props)).unwrap();
    for chunk in lines.chunks(BATCH) {
        let mut b = StringBuilder::with_capacity(chunk.len(), chunk.len() * 160);
        for l in chunk {
            b.append_value(l);
        }
        let col: ArrayRef = Arc::new(b.finish());
        w.write(&RecordBatch::try_new(schema.clone(), vec![col]).unwrap()).unwrap();
    }
    w.close().unwrap().file_metadata().num_rows() as usize
}

fn records(lines: &[&str]) -> Vec<Event> {
    let source: Arc<str> = Arc::from("stdin");
    let now = sealtrail::event::now_nanos();
    lines
        .iter()
        .map(|l| {
            Event::Log(LogRecord {
                observed_time: now,
                body: (*l).to_owned(),
                source: source.clone(),
                ..Default::default()
            })
        })
        .collect()
}

fn sealed(root: &std::path::Path, provider: &LocalProvider, events: &[Event]) -> std::path::PathBuf {
    let opts = WriteOptions::default();
    let mut w =
        SegmentWriter::create(root, Signal::Logs, 1_795_000_000_000_000_000, provider, "default", &opts)
            .unwrap();
    let mut cols = Columns::new(Signal::Logs, BATCH);
    for chunk in events.chunks(BATCH) {
        for e in chunk {
            cols.append(e);
        }
        w.write(&cols.finish()).unwrap();
    }
    let s = w.seal().unwrap();
    assert_eq!(s.rows as usize, events.len());
    s.path
}

fn bench(c: &mut Criterion) {
    let data = corpus();
    let text = std::str::from_utf8(&data).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let events = records(&lines);
    let dir = tempfile::tempdir().unwrap();
    let keyring = Arc::new(Keyring::open(dir.path().join("keys")));
    let provider = LocalProvider::new(keyring.clone()).creating("default");

    let mut g = c.benchmark_group("sealed_write");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("plain_arrowwriter_zstd1", |b| b.iter(|| assert_eq!(plain(&lines), lines.len())));
    g.bench_function("sealed_segment", |b| {
        b.iter(|| {
            let p = sealed(&dir.path().join("data"), &provider, &events);
            std::fs::remove_file(p).unwrap();
        })
    });
    g.finish();

    let path = sealed(&dir.path().join("data"), &provider, &events);
    let retriever = Arc::new(SegmentRetriever::new(Arc::new(LocalProvider::new(keyring))));
    let mut g = c.benchmark_group("sealed_read");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("query_full_scan", |b| {
        b.iter(|| {
            let seg = Segment::open(&path, retriever.clone()).unwrap();
            let n: usize = seg.read(&Filter::default(), BATCH).unwrap().map(|b| b.unwrap().num_rows()).sum();
            assert_eq!(n, lines.len());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
