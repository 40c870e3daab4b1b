//! The sealed sink as a library component: key choice per service by `[[keys.rules]]`, one
//! segment per signal and key, rotation by age while the input is still open, and reading
//! back through the segment reader with pruning.

use std::sync::Arc;
use std::time::Duration;

use sealtrail::component::{BuildContext, SinkConfig};
use sealtrail::config::{GlobalOptions, KeyRule, KeysOptions};
use sealtrail::event::{Event, LogRecord, Signal, Span};
use sealtrail::filter::{Filter, FilterSpec};
use sealtrail::keys::{Keyring, LocalProvider};
use sealtrail::metrics::Registry;
use sealtrail::segment::reader::{Segment, SegmentRetriever, read_key_metadata};
use sealtrail::segment::{find_segments, signal_of_path};
use sealtrail::sinks::sealed::SealedConfig;
use sealtrail::topology::{Message, SinkContext, SinkInput};
use tokio::sync::mpsc;

fn globals(dir: &std::path::Path) -> GlobalOptions {
    GlobalOptions {
        data_dir: dir.join("data"),
        keys: KeysOptions {
            dir: Some(dir.join("keys")),
            default: "default".into(),
            rules: vec![KeyRule { pattern: "payments-*".into(), key: "payments".into() }],
            ..KeysOptions::default()
        },
        ..GlobalOptions::default()
    }
}

fn config(extra: &str) -> SealedConfig {
    toml::from_str(extra).unwrap()
}

fn log(service: &str, body: &str, t: i64) -> Event {
    Event::Log(LogRecord {
        time: t,
        observed_time: t,
        body: body.into(),
        service: service.into(),
        source: "app".into(),
        ..Default::default()
    })
}

fn span(service: &str, trace: u8, t: i64) -> Event {
    Event::Span(Span {
        trace_id: [trace; 16],
        span_id: [trace; 8],
        name: "op".into(),
        start_time: t,
        end_time: t + 1000,
        service: service.into(),
        ..Default::default()
    })
}

/// Starts the sink; returns the batch sender and the sink's join handle.
fn start(
    cfg: &SealedConfig,
    g: &GlobalOptions,
) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let sink = cfg.build(&BuildContext::new("vault", g)).unwrap();
    let registry = Registry::default();
    let metrics = registry.component("sink.vault");
    let (tx, rx) = mpsc::channel(4);
    let input = SinkInput::new(rx, metrics.clone());
    let cx = SinkContext { id: "vault".into(), metrics, globals: Arc::new(g.clone()), registry };
    (tx, tokio::spawn(sink.run(input, cx)))
}

fn open_all(dir: &std::path::Path) -> Vec<(String, Signal, Vec<Event>)> {
    let kr = Arc::new(Keyring::open(dir.join("keys")));
    let r = Arc::new(SegmentRetriever::new(Arc::new(LocalProvider::new(kr))));
    let mut out = Vec::new();
    for p in find_segments(&dir.join("data")).unwrap() {
        let seg = Segment::open(&p, r.clone()).unwrap();
        let mut events = Vec::new();
        for b in seg.read(&Filter::default(), 1024).unwrap() {
            sealtrail::segment::columns::events_from_batch(seg.signal, &b.unwrap(), &mut events).unwrap();
        }
        out.push((seg.key_id.clone(), signal_of_path(&p).unwrap(), events));
    }
    out.sort_by_key(|a| (a.0.clone(), a.1));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rules_split_segments_by_key_and_signal() {
    let d = tempfile::tempdir().unwrap();
    let g = globals(d.path());
    Keyring::open(d.path().join("keys")).create("payments").unwrap();
    let (tx, h) = start(&config(""), &g);
    let t = 1_795_000_000_000_000_000;
    tx.send(Message::Batch(Arc::new(vec![
        log("payments-api", "card ok", t),
        log("web", "hello", t + 1),
        span("payments-api", 7, t + 2),
    ])))
    .await
    .unwrap();
    tx.send(Message::Batch(Arc::new(vec![log("web", "bye", t + 3), span("web", 9, t + 4)]))).await.unwrap();
    drop(tx);
    h.await.unwrap().unwrap();

    let segs = open_all(d.path());
    let summary: Vec<(String, Signal, usize)> =
        segs.iter().map(|(k, s, e)| (k.clone(), *s, e.len())).collect();
    assert_eq!(
        summary,
        vec![
            ("default#1".into(), Signal::Logs, 2),
            ("default#1".into(), Signal::Spans, 1),
            ("payments#1".into(), Signal::Logs, 1),
            ("payments#1".into(), Signal::Spans, 1),
        ]
    );
    for (key, _, events) in &segs {
        for e in events {
            assert_eq!(key.starts_with("payments"), e.service().starts_with("payments-"), "{key} {e:?}");
        }
    }
}

/// A key rule naming a missing key fails the build (so `validate` and `run` both refuse the
/// configuration before any data is accepted); with the key, the same build passes.
#[test]
fn a_missing_rule_key_fails_the_build() {
    let d = tempfile::tempdir().unwrap();
    let g = globals(d.path());
    let e = config("").build(&BuildContext::new("vault", &g)).err().expect("a build error").to_string();
    assert!(e.contains("keys.rules (match = `payments-*`)"), "{e}");
    assert!(e.contains("key `payments` not found"), "{e}");
    assert!(e.contains("sealtrail keys create payments"), "{e}");
    Keyring::open(d.path().join("keys")).create("payments").unwrap();
    config("").build(&BuildContext::new("vault", &g)).expect("the key exists now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_rotate_by_age_while_input_is_open() {
    let d = tempfile::tempdir().unwrap();
    let mut g = globals(d.path());
    g.keys.rules.clear();
    let (tx, h) = start(&config("max_age = \"200ms\""), &g);
    tx.send(Message::Batch(Arc::new(vec![log("web", "early", 1_795_000_000_000_000_000)]))).await.unwrap();
    let mut found = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        found = find_segments(&d.path().join("data")).unwrap_or_default();
        if !found.is_empty() {
            break;
        }
    }
    assert_eq!(found.len(), 1, "no segment sealed by age while the input stayed open");
    assert_eq!(read_key_metadata(&found[0]).unwrap().master_key_id, "default#1");
    drop(tx);
    h.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_id_query_prunes_row_groups_and_reads_little() {
    // 200k spans in time order, 100 per trace: row groups of about 16k rows.
    let d = tempfile::tempdir().unwrap();
    let mut g = globals(d.path());
    g.keys.rules.clear();
    let (tx, h) = start(&config("row_group_bytes = 1048576"), &g);
    let t0 = 1_795_000_000_000_000_000i64;
    for chunk in 0..20 {
        let mut v = Vec::new();
        for i in 0..10_000 {
            let n = chunk * 10_000 + i;
            let mut s = span("api", 0, t0 + n as i64 * 1_000_000);
            if let Event::Span(s) = &mut s {
                s.trace_id = (n as u128 / 100).to_be_bytes();
                s.name = format!("GET /orders/{n}");
            }
            v.push(s);
        }
        tx.send(Message::Batch(Arc::new(v))).await.unwrap();
    }
    drop(tx);
    h.await.unwrap().unwrap();

    let kr = Arc::new(Keyring::open(d.path().join("keys")));
    let r = Arc::new(SegmentRetriever::new(Arc::new(LocalProvider::new(kr))));
    let segs = find_segments(&d.path().join("data")).unwrap();
    assert_eq!(segs.len(), 1);
    let total = std::fs::metadata(&segs[0]).unwrap().len();
    let seg = Segment::open(&segs[0], r.clone()).unwrap();
    assert!(seg.summary().row_groups > 4, "{:?}", seg.summary());
    let want = hex::encode(1234u128.to_be_bytes());
    let f = FilterSpec { trace_id: Some(want.clone()), ..Default::default() }.build().unwrap();
    let mut events = Vec::new();
    for b in seg.read(&f, 1024).unwrap() {
        sealtrail::segment::columns::events_from_batch(Signal::Spans, &b.unwrap(), &mut events).unwrap();
    }
    assert_eq!(events.len(), 100);
    assert!(events.iter().all(|e| matches!(e, Event::Span(s) if hex::encode(s.trace_id) == want)));
    let read = seg.bytes_read();
    assert!(read * 4 < total, "read {read} of {total} bytes: row groups were not pruned");

    // A time window prunes pages within a row group: fewer bytes than the whole file.
    let seg = Segment::open(&segs[0], r).unwrap();
    let f = Filter::default().with_time_range(Some(t0 + 50_000 * 1_000_000), Some(t0 + 50_099 * 1_000_000));
    let mut n = 0;
    for b in seg.read(&f, 1024).unwrap() {
        n += b.unwrap().num_rows();
    }
    assert_eq!(n, 100);
    assert!(seg.bytes_read() * 4 < total, "read {} of {total}", seg.bytes_read());
}

/// Issue 13: after `keys rotate`, a running sink seals its next segment under the new version
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_rotation_reaches_a_running_sink() {
    let d = tempfile::tempdir().unwrap();
    let mut g = globals(d.path());
    g.keys.rules.clear();
    let (tx, h) = start(&config("max_rows = 1"), &g);
    let t = 1_795_000_000_000_000_000;
    tx.send(Message::Batch(Arc::new(vec![log("web", "before rotation", t)]))).await.unwrap();
    let data = d.path().join("data");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while find_segments(&data).map(|s| s.len()).unwrap_or(0) < 1 {
        assert!(std::time::Instant::now() < deadline, "the first segment was never sealed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Another process (here: another keyring) rotates the key file.
    Keyring::open(d.path().join("keys")).rotate("default").unwrap();
    tx.send(Message::Batch(Arc::new(vec![log("web", "after rotation", t + 1)]))).await.unwrap();
    drop(tx);
    h.await.unwrap().unwrap();
    let segs = open_all(d.path());
    let got: Vec<(String, String)> = segs
        .iter()
        .map(|(k, _, e)| match &e[0] {
            Event::Log(l) => (k.clone(), l.body.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("default#1".to_owned(), "before rotation".to_owned()),
            ("default#2".to_owned(), "after rotation".to_owned())
        ]
    );
}
