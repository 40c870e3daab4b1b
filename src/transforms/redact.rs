//! The `redact` transform: runs the redaction engine ([`crate::redact`]) over every string of
//! every event, so that what comes out of it is safe for any sink.
//!
//! It redacts log bodies, attribute keys and values (recursively through arrays and maps, and
//! integer values, which a card number can be), resource attributes, span names, trace
//! states, scope names, status messages, span event names and attributes, and link
//! attributes. It adds the number of redactions to the event's `redactions` and counts them
//! per detector in the component's metrics (`redactions.card`, …).
//!
//! A line longer than a line source's `max_line_bytes` arrives as several log records; every
//! piece but the last carries `sealtrail.continued = true`. The transform redacts such a line
//! as one stream per (source, `log.iostream`, `log.file.path`): bytes that a match in progress
//! needs are held back and move into the next record's body, so a card number cut in two by
//! the split is still caught.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::component::{
    BuildContext, Transform, TransformConfig, TransformContext, TransformKind, parse_transform,
};
use crate::event::{Batch, Event, KeyValue, LogRecord, SourceId, Span, Value, attr, find_attr};
use crate::redact::{Counts, Detector, Mask, Options, Redactor, Stream};

pub const KIND: TransformKind = TransformKind {
    name: "redact",
    description: "removes card numbers, IBANs, account numbers, URL credentials and custom secrets",
    parse: parse_transform::<RedactConfig>,
};

/// Configuration for the `redact` transform (also read by `sealtrail redact --config`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// The built-in detectors to run: any of `card`, `iban`, `bank_account`,
    /// `url_credentials`. Default: all of them.
    #[serde(default)]
    pub detectors: Option<Vec<String>>,
    /// What a secret becomes: `mask` (default, `****`), `last4` (`****1111` for numbers) or
    /// `hmac` (`[card:5f2a9c1e]`, needs `hmac_key` or `hmac_key_file`).
    #[serde(default)]
    pub mask: Mask,
    /// Literal strings to redact wherever they appear (case-sensitive).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Regular expressions (Rust `regex` syntax) to redact, matched within a line.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Account keywords added to the built-in list (matched ignoring case; a space also
    /// matches `_`, `-` or nothing).
    #[serde(default)]
    pub bank_account_keywords: Vec<String>,
    /// Credential query parameter names added to the built-in list.
    #[serde(default)]
    pub query_params: Vec<String>,
    /// The key of the `hmac` mask: a file holding `base64:<32 bytes>` or 64 hex digits,
    /// readable by its owner only.
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
    /// The key of the `hmac` mask as a keyring key name (`sealtrail keys create NAME`, or
    /// `SEALTRAIL_KEY_<NAME>`): the mask key is derived from the key's current version, so
    /// tokens change when the key is rotated. Exclusive with `hmac_key_file`.
    #[serde(default)]
    pub hmac_key: Option<String>,
}

impl RedactConfig {
    /// Compiles the engine. Reads the hmac key (a file, or a key of the keyring in `keys_dir`)
    /// when the mask needs it; writes nothing and creates no key.
    pub fn redactor(&self, keys_dir: &Path) -> anyhow::Result<Redactor> {
        let detectors = match &self.detectors {
            None => Detector::BUILT_IN.to_vec(),
            Some(names) => names
                .iter()
                .map(|n| {
                    Detector::from_name(n).filter(|d| Detector::BUILT_IN.contains(d)).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown detector `{n}` in `detectors`, expected any of `card`, `iban`, `bank_account`, `url_credentials`"
                        )
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let hmac_key = match (self.mask, &self.hmac_key_file, &self.hmac_key) {
            (_, Some(_), Some(_)) => anyhow::bail!("set `hmac_key` or `hmac_key_file`, not both"),
            (Mask::Hmac, Some(p), None) => Some(load_hmac_key(p)?),
            (Mask::Hmac, None, Some(name)) => Some(keyring_hmac_key(keys_dir, name)?),
            (Mask::Hmac, None, None) => {
                anyhow::bail!("`mask = \"hmac\"` needs `hmac_key` or `hmac_key_file`")
            }
            _ => None,
        };
        let opts = Options {
            detectors,
            mask: self.mask,
            hmac_key,
            keywords: self.keywords.clone(),
            patterns: self.patterns.clone(),
            bank_account_keywords: self.bank_account_keywords.clone(),
            query_params: self.query_params.clone(),
        };
        Ok(Redactor::new(&opts)?)
    }
}

/// The hmac mask key derived from the current version of keyring key `name`:
/// HMAC-SHA256(material, "sealtrail redact hmac v1"), so the mask key is never the key that
/// wraps segment data keys.
pub fn keyring_hmac_key(keys_dir: &Path, name: &str) -> anyhow::Result<[u8; 32]> {
    use hmac::{Hmac, Mac};
    let keyring = crate::keys::Keyring::open(keys_dir);
    let key = keyring.get(name).map_err(|e| {
        anyhow::anyhow!("`hmac_key` {name:?}: {e} (create it with `sealtrail keys create {name}`)")
    })?;
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key.current().material[..])
        .map_err(|e| anyhow::anyhow!("`hmac_key` {name:?}: {e}"))?;
    mac.update(b"sealtrail redact hmac v1");
    Ok(mac.finalize().into_bytes().into())
}

/// Reads the hmac mask key from `path`: `base64:<32 bytes>` or 64 hex digits, in a file that
/// group and others cannot access. The one place the transform acquires key material (the
/// keyring will plug in here). Errors never contain the file's content.
pub fn load_hmac_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    use base64::Engine as _;
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read hmac_key_file {shown}"))?;
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "hmac_key_file {shown} is accessible by group or others (mode {mode:o}); run `chmod 600 {shown}`"
    );
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read hmac_key_file {shown}"))?,
    );
    let t = text.trim();
    let bytes = Zeroizing::new(if let Some(b64) = t.strip_prefix("base64:") {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| anyhow::anyhow!("hmac_key_file {shown}: invalid base64 after `base64:`"))?
    } else {
        hex::decode(t).map_err(|_| {
            anyhow::anyhow!("hmac_key_file {shown}: expected `base64:<32 bytes>` or 64 hex digits")
        })?
    });
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!("hmac_key_file {shown}: the key must be 32 bytes, found {}", bytes.len())
    })?;
    Ok(key)
}

impl TransformConfig for RedactConfig {
    fn redacts(&self) -> bool {
        true
    }

    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Transform>> {
        Ok(Box::new(RedactTransform::new(Arc::new(self.redactor(&cx.globals.keys_dir())?))))
    }
}

/// Identifies one line stream: the source, `log.iostream` and `log.file.path`.
type StreamKey = (SourceId, String, String);

/// The running transform.
pub struct RedactTransform {
    r: Arc<Redactor>,
    /// Lines in progress (a continued record came, its last piece has not).
    streams: HashMap<StreamKey, Stream>,
    out: Vec<u8>,
}

/// Metric names per detector, so counting allocates nothing.
const COUNTERS: [&str; 6] = [
    "redactions.card",
    "redactions.iban",
    "redactions.bank_account",
    "redactions.url_credentials",
    "redactions.keyword",
    "redactions.pattern",
];

impl RedactTransform {
    pub fn new(r: Arc<Redactor>) -> RedactTransform {
        RedactTransform { r, streams: HashMap::new(), out: Vec::new() }
    }

    /// Redacts one event in place; returns its redactions.
    pub fn redact_event(&mut self, e: &mut Event) -> Counts {
        let mut c = Counts::default();
        match e {
            Event::Log(l) => {
                self.log(l, &mut c);
                l.redactions = l.redactions.saturating_add(c.total() as u32);
            }
            Event::Span(s) => {
                span(&self.r, s, &mut c);
                s.redactions = s.redactions.saturating_add(c.total() as u32);
            }
        }
        c
    }

    fn log(&mut self, l: &mut LogRecord, c: &mut Counts) {
        let r = &*self.r;
        let continued = matches!(find_attr(&l.attributes, attr::CONTINUED), Some(Value::Bool(true)));
        // A record goes through a stream when it continues a line, or ends one that an earlier
        // record continued; the key is only computed while some line is in progress.
        let key = if continued || !self.streams.is_empty() {
            Some(stream_key(l)).filter(|k| continued || self.streams.contains_key(k))
        } else {
            None
        };
        match key {
            None => string(r, &mut l.body, c),
            Some(k) => {
                let s = self.streams.entry(k.clone()).or_insert_with(|| Stream::new(self.r.clone()));
                let before = s.counts();
                self.out.clear();
                s.push(l.body.as_bytes(), &mut self.out);
                if !continued {
                    s.finish(&mut self.out);
                }
                let after = s.counts();
                for (i, n) in c.0.iter_mut().enumerate() {
                    *n += after.0[i] - before.0[i];
                }
                if !continued {
                    self.streams.remove(&k);
                }
                l.body.clear();
                l.body.push_str(&String::from_utf8_lossy(&self.out));
            }
        }
        attrs(r, &mut l.attributes, c);
        attrs(r, &mut l.resource, c);
    }
}

fn stream_key(l: &LogRecord) -> StreamKey {
    let text = |k: &str| find_attr(&l.attributes, k).map(Value::to_text).unwrap_or_default();
    (l.source.clone(), text(attr::IOSTREAM), text(attr::FILE_PATH))
}

fn span(r: &Redactor, s: &mut Span, c: &mut Counts) {
    string(r, &mut s.name, c);
    string(r, &mut s.trace_state, c);
    string(r, &mut s.status_message, c);
    string(r, &mut s.scope_name, c);
    attrs(r, &mut s.attributes, c);
    attrs(r, &mut s.resource, c);
    for e in &mut s.events {
        string(r, &mut e.name, c);
        attrs(r, &mut e.attributes, c);
    }
    for l in &mut s.links {
        string(r, &mut l.trace_state, c);
        attrs(r, &mut l.attributes, c);
    }
}

fn string(r: &Redactor, s: &mut String, c: &mut Counts) {
    if let std::borrow::Cow::Owned(o) = r.redact_str(s, c) {
        *s = o;
    }
}

fn attrs(r: &Redactor, kvs: &mut [KeyValue], c: &mut Counts) {
    for kv in kvs {
        string(r, &mut kv.key, c);
        value(r, &mut kv.value, c);
    }
}

fn value(r: &Redactor, v: &mut Value, c: &mut Counts) {
    match v {
        Value::Str(s) => string(r, s, c),
        Value::Array(a) => a.iter_mut().for_each(|x| value(r, x, c)),
        Value::Map(m) => attrs(r, m, c),
        // An integer attribute can hold a card or account number: check its digits (formatted
        // on the stack) and replace it with the masked text if anything matched.
        Value::Int(i) => {
            let mut buf = [0u8; 24];
            let len = {
                let mut w = &mut buf[..];
                let _ = write!(w, "{i}");
                24 - w.len()
            };
            if let std::borrow::Cow::Owned(o) = r.redact(&buf[..len], c) {
                *v = Value::Str(String::from_utf8_lossy(&o).into_owned());
            }
        }
        Value::Empty | Value::Bool(_) | Value::Double(_) | Value::Bytes(_) => {}
    }
}

impl Transform for RedactTransform {
    fn transform(&mut self, batch: Batch, cx: &TransformContext) -> Option<Batch> {
        // Copy-on-write: the events are copied only if another consumer holds the batch.
        let mut events = Arc::unwrap_or_clone(batch);
        let mut total = Counts::default();
        for e in &mut events {
            let c = self.redact_event(e);
            total.add(&c);
        }
        for (d, n) in total.iter() {
            cx.metrics.add(COUNTERS[d as usize], n);
        }
        Some(Arc::new(events))
    }

    /// A line whose last piece never came (the input ended inside it): what the streams still
    /// hold becomes one last record per stream.
    fn flush(&mut self, cx: &TransformContext) -> Option<Batch> {
        if self.streams.is_empty() {
            return None;
        }
        let mut events = Vec::new();
        let mut total = Counts::default();
        for ((source, iostream, path), mut s) in self.streams.drain() {
            let before = s.counts();
            let mut out = Vec::new();
            s.finish(&mut out);
            let mut c = s.counts();
            for (i, n) in c.0.iter_mut().enumerate() {
                *n -= before.0[i];
            }
            total.add(&c);
            let mut attributes = Vec::new();
            if !iostream.is_empty() {
                attributes.push(KeyValue::new(attr::IOSTREAM, iostream));
            }
            if !path.is_empty() {
                attributes.push(KeyValue::new(attr::FILE_PATH, path));
            }
            events.push(Event::Log(LogRecord {
                observed_time: crate::event::now_nanos(),
                body: String::from_utf8_lossy(&out).into_owned(),
                attributes,
                source,
                redactions: c.total() as u32,
                ..LogRecord::default()
            }));
        }
        for (d, n) in total.iter() {
            cx.metrics.add(COUNTERS[d as usize], n);
        }
        Some(Arc::new(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{SpanEvent, SpanLink};
    use crate::metrics::ComponentMetrics;

    fn cx() -> TransformContext {
        TransformContext { id: "scrub".into(), metrics: Arc::new(ComponentMetrics::new("transform.scrub")) }
    }

    fn transform(cfg: &RedactConfig) -> RedactTransform {
        RedactTransform::new(Arc::new(cfg.redactor(Path::new("/nonexistent")).unwrap()))
    }

    fn log(body: &str, continued: bool) -> Event {
        let mut attributes = vec![KeyValue::new(attr::IOSTREAM, "stdout")];
        if continued {
            attributes.push(KeyValue::new(attr::CONTINUED, true));
        }
        Event::Log(LogRecord { body: body.into(), attributes, source: "app".into(), ..LogRecord::default() })
    }

    fn body(e: &Event) -> &str {
        match e {
            Event::Log(l) => &l.body,
            Event::Span(_) => "",
        }
    }

    #[test]
    fn nested_otlp_like_attributes() {
        let mut t = transform(&RedactConfig::default());
        let card = "4111 1111 1111 1111";
        let span = Span {
            name: format!("charge {card}"),
            status_message: "auth failed for https://u:pw@h/".into(),
            attributes: vec![
                KeyValue::new("http.url", "https://h/cb?token=abc&x=1"),
                KeyValue::new(
                    "payment",
                    Value::Map(vec![
                        KeyValue::new(
                            "cards",
                            Value::Array(vec![card.into(), Value::Int(4111111111111111), Value::Int(42)]),
                        ),
                        KeyValue::new("iban DE89370400440532013000", "key holds it"),
                    ]),
                ),
            ],
            resource: vec![KeyValue::new("service.name", "checkout"), KeyValue::new("note", "acct 12345678")],
            events: vec![SpanEvent {
                name: format!("retry {card}"),
                attributes: vec![KeyValue::new("k", card)],
                time: 1,
            }],
            links: vec![SpanLink { attributes: vec![KeyValue::new("pan", card)], ..SpanLink::default() }],
            ..Span::default()
        };
        let batch = Arc::new(vec![Event::Span(span)]);
        let keep = batch.clone(); // another consumer holds the batch: copy-on-write
        let c = cx();
        let out = t.transform(batch, &c).unwrap();
        let json = out[0].to_json().to_string();
        assert!(!json.contains("4111") && !json.contains("DE89") && !json.contains("12345678"), "{json}");
        assert!(!json.contains(":pw@") && !json.contains("abc"), "{json}");
        assert!(
            json.contains("\"charge ****\"") && json.contains("42") && json.contains("checkout"),
            "{json}"
        );
        assert_eq!(out[0].redactions(), 10);
        assert_eq!(c.metrics.get("redactions.card"), 6);
        assert_eq!(c.metrics.get("redactions.url_credentials"), 2);
        // The other consumer's batch is untouched.
        assert!(keep[0].to_json().to_string().contains(card));
    }

    #[test]
    fn continued_records_carry_a_split_secret() {
        let mut t = transform(&RedactConfig::default());
        let c = cx();
        let line =
            format!("{}paid 4111 1111 1111 1111 via https://u:pw@h/ and ?token=abcdef done", "x".repeat(70));
        for cut in [70, 80, 84, 86, 95, 110, 118, 125] {
            let (a, b) = line.split_at(cut);
            let batch = Arc::new(vec![log(a, true), log("other stream", false), log(b, false)]);
            // The middle record belongs to another stream (different source).
            let mut batch = Arc::unwrap_or_clone(batch);
            if let Event::Log(l) = &mut batch[1] {
                l.source = "other".into();
            }
            let out = t.transform(Arc::new(batch), &c).unwrap();
            let joined = format!("{}{}", body(&out[0]), body(&out[2]));
            assert_eq!(
                joined,
                format!("{}paid **** via https://u:****@h/ and ?token=**** done", "x".repeat(70)),
                "cut {cut}"
            );
            assert_eq!(body(&out[1]), "other stream");
            assert_eq!(out[0].redactions() + out[2].redactions(), 3);
        }
        assert!(t.streams.is_empty());
    }

    #[test]
    fn unfinished_line_is_flushed() {
        let mut t = transform(&RedactConfig::default());
        let c = cx();
        let out = t.transform(Arc::new(vec![log("card 4111 1111 11", true)]), &c).unwrap();
        let flushed = t.flush(&c).unwrap();
        assert_eq!(format!("{}{}", body(&out[0]), body(&flushed[0])), "card 4111 1111 11");
        let out = t.transform(Arc::new(vec![log("card 4111 1111 1111 1111", true)]), &c).unwrap();
        let flushed = t.flush(&c).unwrap();
        assert_eq!(format!("{}{}", body(&out[0]), body(&flushed[0])), "card ****");
    }

    #[test]
    fn config_errors_are_clear() {
        let bad = |toml: &str| {
            let cfg: RedactConfig = toml::from_str(toml).unwrap();
            format!("{:#}", cfg.redactor(Path::new("/nonexistent")).err().unwrap())
        };
        assert!(bad("patterns = ['ok', 'bad[']").contains("`bad[`"));
        assert!(bad("detectors = ['card', 'ssn']").contains("unknown detector `ssn`"));
        assert!(bad("mask = 'hmac'").contains("hmac_key_file"));
        assert!(toml::from_str::<RedactConfig>("colour = 'red'").is_err());
    }

    #[test]
    fn hmac_key_from_the_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let cfg: RedactConfig = toml::from_str("mask = 'hmac'\nhmac_key = 'tokens'").unwrap();
        let e = format!("{:#}", cfg.redactor(dir.path()).err().unwrap());
        assert!(e.contains("`hmac_key` \"tokens\"") && e.contains("sealtrail keys create tokens"), "{e}");
        crate::keys::Keyring::open(dir.path()).create("tokens").unwrap();
        let r = cfg.redactor(dir.path()).unwrap();
        let mut counts = crate::redact::Counts::default();
        let a = r.redact_str("card 4111 1111 1111 1111", &mut counts).into_owned();
        let b = r.redact_str("card 4111-1111-1111-1111", &mut counts).into_owned();
        assert!(a.starts_with("card [card:") && !a.contains("4111"), "{a}");
        assert_eq!(a, b, "the same number gives the same token");
        // The derived mask key is not the key material itself.
        let k = crate::keys::Keyring::open(dir.path()).get("tokens").unwrap();
        assert_ne!(keyring_hmac_key(dir.path(), "tokens").unwrap(), *k.current().material);
        let both: RedactConfig =
            toml::from_str("mask = 'hmac'\nhmac_key = 'a'\nhmac_key_file = 'f'").unwrap();
        assert!(format!("{:#}", both.redactor(dir.path()).err().unwrap()).contains("not both"));
    }

    #[test]
    fn hmac_key_file_rules() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let secret_hex = "ab".repeat(32);
        std::fs::write(&p, &secret_hex).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", load_hmac_key(&p).unwrap_err());
        assert!(e.contains("group or others") && !e.contains(&secret_hex), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_hmac_key(&p).unwrap(), [0xAB; 32]);
        std::fs::write(&p, "base64:qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo=\n").unwrap();
        assert_eq!(load_hmac_key(&p).unwrap()[0], 0xAA);
        std::fs::write(&p, "not a key at all").unwrap();
        let e = format!("{:#}", load_hmac_key(&p).unwrap_err());
        assert!(!e.contains("not a key"), "{e}");
        let cfg =
            RedactConfig { mask: Mask::Hmac, hmac_key_file: Some(p.clone()), ..RedactConfig::default() };
        std::fs::write(&p, &secret_hex).unwrap();
        let mut t = transform(&cfg);
        let mut e = log("card 4111111111111111", false);
        t.redact_event(&mut e);
        assert!(body(&e).starts_with("card [card:"), "{}", body(&e));
    }
}
