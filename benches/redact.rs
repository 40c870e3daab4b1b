//! Redaction engine throughput on realistic log lines (the loggen corpus: ≈150-byte lines,
//! 1 in 100 with a card number, 1 in 200 with a URL carrying credentials), against a baseline
//! that does the same detection with one `regex::RegexSet` pass per line plus Luhn / mod-97
//! validation on the hits, and against a memchr newline count (the floor).
//!
//! ```text
//! cargo bench --bench redact -- --warm-up-time 1 --measurement-time 3
//! ```
//! Every variant checks its answer before it is timed: the engine must count exactly the
//! labelled secrets, and streaming must give the whole-input output.
//!
//! The `redact_pathological` group times near-matches built to be slow (thousands of `://`,
//! `@` and unterminated `?token=`, digit runs broken every 12 characters, near-miss card
//! groups, a 10 MB digit run, a 100 MiB line through the stream): linear time shows as a
//! throughput of the same order as the realistic corpus.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use regex::bytes::{Regex, RegexSet};
use sealtrail::loggen::{self, Rates};
use sealtrail::redact::{
    Counts, Detector, Options, Redactor, bank_account, card, credentials, iban, url_credentials,
};

const CORPUS_BYTES: usize = 8 << 20;

/// The regex baseline: a set to find which detectors may match a line, then each matching
/// detector's regex with validation.
struct Baseline {
    set: RegexSet,
    res: Vec<Regex>,
}

impl Baseline {
    fn new() -> Baseline {
        let kws: Vec<String> = bank_account::KEYWORDS
            .iter()
            .flat_map(|k| bank_account::variants(k))
            .map(|k| regex::escape(&k))
            .collect();
        let params: Vec<String> = url_credentials::QUERY_PARAMS.iter().map(|p| regex::escape(p)).collect();
        let pats = [
            // Card digits grouped by the separators of `card::separator`.
            r"(?-u)\b\d(?:(?: {1,4}|[-.\t+]|%20|\xC2\xA0|\xE2\x80[\x87\x89\xAF])?\d){12,18}\b".to_owned(),
            r"(?-u)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b".to_owned(),
            format!(r"(?i-u)(?:{})[^\n]{{0,30}}?\b(\d{{6,17}})\b", kws.join("|")),
            r#"(?-u)://([^/\s?#@"'<>\[\]]+)@"#.to_owned(),
            format!(r#"(?i-u)[?&](?:{})=([^&#\s"'<>,;()]+)"#, params.join("|")),
            // Issue 12: account numbers after a key that names an account, values after JSON
            // escapes, escaped URLs and parameters.
            r#"(?i-u)(?:account|acct|iban|bban)(?:[_.\- ]?(?:id|no|nr|num|number|code))?\\?["']?\s*[:=]\s*\\?["']?(\d(?:[ -]?\d){5,16})\b"#
                .to_owned(),
            r"(?-u)\\[ntrbf](\d(?:[ -]?\d){12,18})\b".to_owned(),
            r#"(?-u):\\/\\/([^/\s?#@"'<>\[\]\\]+)@"#.to_owned(),
            format!(r#"(?i-u)(?:\\u0026|\\u003f|&amp;)(?:{})=([^&#\s"'<>,;()\\]+)"#, params.join("|")),
            // Issue 12, part A: cards glued to letters, IBANs in any case with dashes, NBSP or
            // irregular groups, far account keywords across punctuation and a remark,
            // passwords holding delimiters, authorities without a scheme, `#` and `;`
            // parameters.
            r"(?-u)[A-Za-z](\d{13,19})(?:[^0-9]|$)".to_owned(),
            r"(?i-u)\b[a-z]{2}\d{2}(?:(?:[ \-]|\xC2\xA0)?[a-z0-9]){11,30}\b".to_owned(),
            format!(r"(?i-u)(?:{})[[:punct:] \t]*(?:\([^()\n]*\))?[[:punct:] \t]*(\d{{6,17}})\b", kws.join("|")),
            r"(?i-u)://[^:/\s@]*:([^@\n]{1,128})@[\w.\-\[]".to_owned(),
            r#"(?-u)(?:^|[\s="'(<])[\w.%+~-]{1,32}:([^\s@:/\\"'<>()\[\]{},;=]{1,64})@[\w.-]{1,48}:\d{1,5}\b"#.to_owned(),
            format!(r#"(?i-u)[#;](?:{})=([^&#\s"'<>,;()]+)"#, params.join("|")),
            // Issue 12, credentials beyond URLs: key-value secrets, Authorization values, AWS
            // key ids, JSON Web Tokens, PEM bodies, fixed-prefix tokens.
            r#"(?i-u)(?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|accountkey|sharedaccesskey)\\?["']?\s*[:=]\s*\\?["']?([^\s"'&;,]+)"#.to_owned(),
            r#"(?i-u)authorization\\?["']?\s*:\s*\\?["']?(?:[A-Za-z0-9-]+ )?([^\s"',]+)"#.to_owned(),
            r"(?-u)\b(?:AKIA|ASIA)([A-Z0-9]{16})\b".to_owned(),
            r"(?-u)\beyJ[A-Za-z0-9_-]{7,}\.[A-Za-z0-9_-]{10,}(?:\.[A-Za-z0-9_-]+){0,3}".to_owned(),
            r"(?-u)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----([^-]*)-----END".to_owned(),
            r"(?-u)\b(?:ghp_|gho_|github_pat_|xox[bpars]-|sk_live_|sk_test_|glpat-|npm_|AIza|hf_)([A-Za-z0-9_-]{10,})".to_owned(),
        ];
        Baseline {
            set: RegexSet::new(&pats).expect("baseline set"),
            res: pats.iter().map(|p| Regex::new(p).expect("baseline regex")).collect(),
        }
    }

    /// Redacts one line into `out`; returns the number of redactions.
    fn redact(&self, line: &[u8], out: &mut Vec<u8>) -> usize {
        let hits = self.set.matches(line);
        if !hits.matched_any() {
            out.extend_from_slice(line);
            return 0;
        }
        let mut edits: Vec<(usize, usize)> = Vec::new();
        for i in hits.iter() {
            let re = &self.res[i];
            for caps in re.captures_iter(line) {
                let m = caps.get(1).unwrap_or_else(|| caps.get(0).expect("group 0"));
                let ok = match i {
                    0 | 6 | 9 => {
                        let d: Vec<u8> = String::from_utf8_lossy(m.as_bytes())
                            .replace("%20", " ")
                            .bytes()
                            .filter(u8::is_ascii_digit)
                            .collect();
                        card::valid(d.into_iter())
                    }
                    1 | 10 => std::str::from_utf8(m.as_bytes()).is_ok_and(iban::is_valid),
                    _ => true,
                };
                if ok {
                    edits.push((m.start(), m.end()));
                }
            }
        }
        edits.sort_unstable();
        let mut pos = 0;
        let mut n = 0;
        for (s, e) in edits {
            if s < pos {
                continue;
            }
            out.extend_from_slice(&line[pos..s]);
            out.extend_from_slice(b"****");
            pos = e;
            n += 1;
        }
        out.extend_from_slice(&line[pos..]);
        n
    }
}

fn bench(c: &mut Criterion) {
    let (corpus, labels) = loggen::corpus(1, Rates::default(), CORPUS_BYTES);
    let secrets: usize = labels.iter().map(Vec::len).sum();
    let lines: Vec<&[u8]> = corpus.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let r = Arc::new(Redactor::with_defaults());
    let baseline = Baseline::new();

    // Check the answers before timing anything.
    let mut counts = Counts::default();
    for l in &lines {
        black_box(r.redact(l, &mut counts));
    }
    assert_eq!(counts.total() as usize, secrets, "engine per line: {counts:?}");
    let mut whole_counts = Counts::default();
    let whole = r.redact(&corpus, &mut whole_counts).into_owned();
    assert_eq!(whole_counts, counts, "engine whole input");
    let mut s = r.stream();
    let mut streamed = Vec::new();
    for chunk in corpus.chunks(64 * 1024) {
        s.push(chunk, &mut streamed);
    }
    s.finish(&mut streamed);
    assert_eq!(streamed, whole, "stream = whole");
    let mut out = Vec::new();
    let base_n: usize = lines.iter().map(|l| baseline.redact(l, &mut out)).sum();
    eprintln!(
        "corpus: {} bytes, {} lines, {secrets} labelled secrets; engine found {} ({counts:?}); baseline found {base_n}",
        corpus.len(),
        lines.len(),
        counts.total()
    );

    let mut g = c.benchmark_group("redact");
    g.throughput(Throughput::Bytes(corpus.len() as u64));
    g.sample_size(10);
    g.bench_function("memchr_newlines", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(&corpus)).count())
    });
    g.bench_function("engine_per_line", |b| {
        b.iter(|| {
            let mut c = Counts::default();
            for l in &lines {
                black_box(r.redact(l, &mut c));
            }
            c
        })
    });
    g.bench_function("engine_whole_input", |b| {
        b.iter(|| {
            let mut c = Counts::default();
            black_box(r.redact(&corpus, &mut c).len())
        })
    });
    g.bench_function("engine_stream_64k", |b| {
        let mut out = Vec::with_capacity(80 * 1024);
        b.iter(|| {
            let mut s = r.stream();
            for chunk in corpus.chunks(64 * 1024) {
                out.clear();
                s.push(chunk, &mut out);
                black_box(out.len());
            }
            out.clear();
            s.finish(&mut out);
            s.counts()
        })
    });
    // The credential detectors' share: the same engine with them off.
    let no_cred = Redactor::new(&Options {
        detectors: Detector::BUILT_IN.into_iter().filter(|d| !credentials::DETECTORS.contains(d)).collect(),
        ..Options::default()
    })
    .expect("the built-in detectors compile");
    g.bench_function("engine_per_line_no_credentials", |b| {
        b.iter(|| {
            let mut c = Counts::default();
            for l in &lines {
                black_box(no_cred.redact(l, &mut c));
            }
            c
        })
    });
    g.bench_function("baseline_regexset_per_line", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            let mut n = 0;
            for l in &lines {
                out.clear();
                n += baseline.redact(l, &mut out);
            }
            n
        })
    });
    g.finish();
}

/// Pathological near-matches, each checked (stream = whole) before it is timed. Linear time
/// shows as a throughput of the same order as the realistic corpus.
fn pathological(c: &mut Criterion) {
    let r = Arc::new(Redactor::with_defaults());
    let fill = |unit: &[u8], bytes: usize| unit.repeat(bytes / unit.len() + 1)[..bytes].to_vec();
    let mut authority = b"x://".to_vec();
    authority.extend(std::iter::repeat_n(b'a', url_credentials::MAX_AUTHORITY + 8));
    authority.push(b' ');
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        // Thousands of `://` with nothing after them, and of authorities as long as the
        // detector looks (each one scanned to its limit).
        ("schemes", fill(b"a://", CORPUS_BYTES)),
        ("long_authorities", fill(&authority, CORPUS_BYTES)),
        // Thousands of `@` in one authority, and of `?token=` values that never end.
        ("at_signs", [&b"https://"[..], &fill(b"u:p@", CORPUS_BYTES)].concat()),
        ("open_values", fill(b"?token=a", CORPUS_BYTES)),
        // Digit runs broken every 12 characters, after an account keyword, and card-shaped
        // groups one digit short.
        ("digits_every_12", fill(b"acct 12345678901 ", CORPUS_BYTES)),
        ("near_cards", fill(b"4111 1111 1111 111 ", CORPUS_BYTES)),
        // One 10 MB digit run.
        ("digit_run_10mb", vec![b'7'; 10_000_000]),
        // A credential anchor every few bytes of one long value (each value read once).
        ("password_chain", fill(b"password=", CORPUS_BYTES)),
    ];
    let mut g = c.benchmark_group("redact_pathological");
    g.sample_size(10);
    for (name, input) in &inputs {
        let mut counts = Counts::default();
        let whole = r.redact(input, &mut counts).into_owned();
        let mut s = r.stream();
        let mut streamed = Vec::new();
        for chunk in input.chunks(64 * 1024) {
            s.push(chunk, &mut streamed);
        }
        s.finish(&mut streamed);
        assert!(streamed == whole, "{name}: stream = whole");
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(*name, |b| b.iter(|| r.redact(black_box(input), &mut Counts::default()).len()));
    }
    // One 100 MiB line (the realistic corpus with its newlines turned into spaces) through
    // the streaming API in 64 KiB reads: memory stays at the carry.
    let (corpus, _) = loggen::corpus(2, Rates::default(), 100 << 20);
    let line: Vec<u8> = corpus.iter().map(|&b| if b == b'\n' { b' ' } else { b }).collect();
    g.throughput(Throughput::Bytes(line.len() as u64));
    g.bench_function("stream_one_100mib_line", |b| {
        let mut out = Vec::with_capacity(80 * 1024);
        b.iter(|| {
            let mut s = r.stream();
            let mut held = 0;
            for chunk in line.chunks(64 * 1024) {
                out.clear();
                s.push(chunk, &mut out);
                held = held.max(s.pending());
            }
            out.clear();
            s.finish(&mut out);
            assert!(held <= url_credentials::MAX_AUTHORITY + 512, "held back {held} bytes");
            s.counts()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, pathological);
criterion_main!(benches);
