//! The `redact` transform: runs the redaction engine ([`crate::redact`]) over every string of
//! every event, so that what comes out of it is safe for any sink.
//!
//! Which strings: exactly those [`crate::event::visit`] hands out (its documentation lists
//! every field and why the others are not text): bodies, severity texts, services, span names,
//! trace states, scope names, status messages, span event names, every attribute key and
//! value (recursively through arrays and maps) of attributes, resources, span events and
//! links, and integer, double and bytes values in their text form (replaced by the masked
//! string when something matched). The transform is a loop over that visitor with one call
//! site, [`visit_value`]. It adds the number of redactions to the event's `redactions` and
//! counts them per detector in the component's metrics (`redactions.card`, …).
//!
//! A line longer than a line source's `max_line_bytes` arrives as several log records; every
//! piece but the last carries `sealtrail.continued = true`. The transform redacts such a line
//! as one stream per (source, `log.iostream`, `log.file.path`): bytes that a match in progress
//! needs are held back and move into the next record's body, so a card number cut in two by
//! the split is still caught. That state is bounded (`max_open_lines`, `max_held_bytes`):
//! the least recently used line is evicted, its held-back bytes become one masked record and
//! its later pieces are masked whole (counted in `redact.lines_evicted`), so eviction never
//! lets part of a secret through. Network sources cannot set `sealtrail.continued` (they strip
//! the reserved keys, [`crate::event::attr::is_reserved`]), so only local line sources open
//! such streams.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::component::{
    BuildContext, Transform, TransformConfig, TransformContext, TransformKind, parse_transform,
};
use crate::event::visit::{Field, Place, TextVisitor, visit_event};
use crate::event::{Batch, Event, KeyValue, LogRecord, SourceId, Value, attr, find_attr};
use crate::redact::{Counts, Detector, Mask, Options, Redactor, Stream, credentials};

pub const KIND: TransformKind = TransformKind {
    name: "redact",
    description: "removes card numbers, IBANs, account numbers, URL credentials and custom secrets",
    parse: parse_transform::<RedactConfig>,
};

/// Configuration for the `redact` transform (also read by `sealtrail redact --config`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// The built-in detectors to run: any of `card`, `iban`, `bank_account`,
    /// `url_credentials`. Default: all of them.
    #[serde(default)]
    pub detectors: Option<Vec<String>>,
    /// A CloudWatch Logs data protection policy (the JSON document `PutDataProtectionPolicy`
    /// takes): its `Deidentify` identifiers choose the detectors and add patterns
    /// ([`crate::redact::policy`]). Exclusive with `detectors`.
    #[serde(default)]
    pub policy: Option<PathBuf>,
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
    /// Lines in progress at once: a line longer than a line source's `max_line_bytes` is
    /// redacted as one stream until its last piece comes. Past this, the least recently used
    /// line is evicted: what it held back and its later pieces are masked. Default 1024.
    #[serde(default = "default_max_open_lines")]
    pub max_open_lines: usize,
    /// Bytes that lines in progress may hold (held-back text, stream keys and 256 bytes per
    /// line); eviction as for `max_open_lines`. Default 8 MiB.
    #[serde(default = "default_max_held_bytes")]
    pub max_held_bytes: usize,
}

impl Default for RedactConfig {
    fn default() -> RedactConfig {
        RedactConfig {
            detectors: None,
            policy: None,
            mask: Mask::default(),
            keywords: Vec::new(),
            patterns: Vec::new(),
            bank_account_keywords: Vec::new(),
            query_params: Vec::new(),
            hmac_key_file: None,
            hmac_key: None,
            max_open_lines: default_max_open_lines(),
            max_held_bytes: default_max_held_bytes(),
        }
    }
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
                        let names: Vec<String> =
                            Detector::BUILT_IN.iter().map(|d| format!("`{}`", d.name())).collect();
                        anyhow::anyhow!(
                            "unknown detector `{n}` in `detectors`, expected any of {}",
                            names.join(", ")
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
        let mut patterns = self.patterns.clone();
        let detectors = match &self.policy {
            None => detectors,
            Some(_) if self.detectors.is_some() => anyhow::bail!("set `detectors` or `policy`, not both"),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read policy {}", path.display()))?;
                let p = crate::redact::policy::parse(&text)
                    .map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?;
                patterns.extend(p.patterns);
                p.detectors
            }
        };
        let opts = Options {
            detectors,
            mask: self.mask,
            hmac_key,
            keywords: self.keywords.clone(),
            patterns,
            bank_account_keywords: self.bank_account_keywords.clone(),
            query_params: self.query_params.clone(),
        };
        Ok(Redactor::new(&opts)?)
    }
}

impl RedactConfig {
    /// The bounds of the per-line state, checked.
    pub fn stream_limits(&self) -> anyhow::Result<StreamLimits> {
        anyhow::ensure!(self.max_open_lines >= 1, "`max_open_lines` must be at least 1");
        anyhow::ensure!(
            self.max_held_bytes >= 128 * 1024,
            "`max_held_bytes` must be at least 131072 (one line in progress can hold about 66 KiB), got {}",
            self.max_held_bytes
        );
        Ok(StreamLimits { max_open_lines: self.max_open_lines, max_held_bytes: self.max_held_bytes })
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
        let limits = self.stream_limits()?;
        Ok(Box::new(RedactTransform::with_limits(Arc::new(self.redactor(&cx.globals.keys_dir())?), limits)))
    }
}

/// Identifies one line stream: the source, `log.iostream` and `log.file.path`.
type StreamKey = (SourceId, String, String);

/// What an evicted line's held-back bytes and its later pieces become: the default mask,
/// whatever the configured one, since what they held is unknown.
const EVICTED_MASK: &str = "****";

/// Fixed bytes counted per open line on top of its key and held-back text (the stream's own
/// state), so that many empty lines still count against `max_held_bytes`.
const STREAM_OVERHEAD: usize = 256;

/// How many evicted lines are remembered (per open line allowed) so that their later pieces
/// are masked: 8 bytes of hash each.
const TOMBSTONES_PER_LINE: usize = 16;

/// The bounds of the per-line redaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Lines in progress at once (continued records whose last piece has not come).
    pub max_open_lines: usize,
    /// Bytes held by lines in progress: held-back text, keys and a fixed overhead per line.
    pub max_held_bytes: usize,
}

impl Default for StreamLimits {
    fn default() -> StreamLimits {
        StreamLimits { max_open_lines: default_max_open_lines(), max_held_bytes: default_max_held_bytes() }
    }
}

fn default_max_open_lines() -> usize {
    1024
}

fn default_max_held_bytes() -> usize {
    8 * 1024 * 1024
}

/// One line in progress.
struct OpenLine {
    stream: Stream,
    /// What this line counts against `max_held_bytes` (as of its last record).
    held: usize,
    /// When it was last used (a tick of the transform), for least-recently-used eviction.
    used: u64,
}

/// The running transform.
pub struct RedactTransform {
    r: Arc<Redactor>,
    limits: StreamLimits,
    /// Lines in progress (a continued record came, its last piece has not).
    streams: HashMap<StreamKey, OpenLine>,
    /// Sum of `OpenLine::held`.
    held: usize,
    /// Lines evicted before their last piece, by keyed hash of their stream key, with the tick
    /// of eviction: their later pieces are masked whole, because their start (which may be the
    /// rest of a secret) can no longer be matched.
    evicted: HashMap<u64, u64>,
    hasher: std::collections::hash_map::RandomState,
    tick: u64,
    /// Evictions not yet added to the metrics.
    evictions: u64,
    /// Records emitted for evicted lines, not yet handed out.
    extra: Vec<Event>,
    /// Line streams inside a PEM private key block: a record held `-----BEGIN … PRIVATE
    /// KEY-----` and no `-----END`, so the next records of the same stream are its body and are
    /// masked until the `-----END` line (or [`crate::redact::credentials::MAX_PEM`] bytes), with
    /// the bytes masked so far. At most `max_open_lines` blocks are open at once.
    pem_open: HashMap<StreamKey, usize>,
    out: Vec<u8>,
}

/// Metric names per detector, so counting allocates nothing.
const COUNTERS: [&str; Detector::COUNT] = [
    "redactions.card",
    "redactions.iban",
    "redactions.bank_account",
    "redactions.url_credentials",
    "redactions.authorization",
    "redactions.aws_access_key",
    "redactions.aws_secret_key",
    "redactions.private_key",
    "redactions.jwt",
    "redactions.connection_string",
    "redactions.secret_field",
    "redactions.prefixed_token",
    "redactions.keyword",
    "redactions.pattern",
];

/// The one place where a string of an event is redacted. `key` is the attribute or map key
/// the text is the value of ([`Place::key`]): a key that names an account (`bank.account`,
/// `accountNumber`) makes a 6–17 digit value an account number ([`Redactor::redact_keyed`]).
fn visit_value(r: &Redactor, key: Option<&str>, text: &mut String, c: &mut Counts) {
    if let std::borrow::Cow::Owned(o) = r.redact_keyed(key, text, c) {
        *text = o;
    }
}

/// Redacts every string the event visitor hands it; the body is skipped when it went
/// through a line stream already.
struct Redacting<'a> {
    r: &'a Redactor,
    counts: &'a mut Counts,
    skip_body: bool,
}

impl TextVisitor for Redacting<'_> {
    fn visit(&mut self, place: Place<'_>, text: &mut String) {
        if self.skip_body && place == Place::Field(Field::Body) {
            return;
        }
        visit_value(self.r, place.key(), text, self.counts);
    }
}

impl RedactTransform {
    pub fn new(r: Arc<Redactor>) -> RedactTransform {
        RedactTransform::with_limits(r, StreamLimits::default())
    }

    pub fn with_limits(r: Arc<Redactor>, limits: StreamLimits) -> RedactTransform {
        RedactTransform {
            r,
            limits: StreamLimits {
                max_open_lines: limits.max_open_lines.max(1),
                max_held_bytes: limits.max_held_bytes,
            },
            streams: HashMap::new(),
            held: 0,
            evicted: HashMap::new(),
            hasher: Default::default(),
            tick: 0,
            evictions: 0,
            extra: Vec::new(),
            pem_open: HashMap::new(),
            out: Vec::new(),
        }
    }

    /// Redacts one event in place; returns its redactions.
    pub fn redact_event(&mut self, e: &mut Event) -> Counts {
        let mut c = Counts::default();
        if let Event::Log(l) = e {
            if !self.pem_open.is_empty() {
                self.pem_body(l, &mut c);
            }
        }
        let skip_body = match e {
            Event::Log(l) => self.line(l, &mut c),
            Event::Span(_) => false,
        };
        visit_event(e, &mut Redacting { r: &self.r, counts: &mut c, skip_body });
        match e {
            Event::Log(l) => {
                if self.r.detects(Detector::PrivateKey) && may_open_pem(l.body.as_bytes()) {
                    let key = stream_key(l);
                    if self.pem_open.len() < self.limits.max_open_lines || self.pem_open.contains_key(&key) {
                        self.pem_open.insert(key, 0);
                    } else {
                        tracing::warn!(
                            open_blocks = self.pem_open.len(),
                            "redact: too many PEM private key blocks open at once (max_open_lines); this block's body lines are redacted one by one"
                        );
                    }
                }
                typed_body(&self.r, l, &mut c);
                l.redactions = l.redactions.saturating_add(c.total() as u32);
            }
            Event::Span(s) => s.redactions = s.redactions.saturating_add(c.total() as u32),
        }
        c
    }

    /// Takes a record's body through its line stream when it continues a line or ends one
    /// that an earlier record continued; returns whether it did (the body is then redacted).
    fn line(&mut self, l: &mut LogRecord, c: &mut Counts) -> bool {
        let continued = matches!(find_attr(&l.attributes, attr::CONTINUED), Some(Value::Bool(true)));
        // The key is only computed while some line is in progress or remembered.
        if !continued && self.streams.is_empty() && self.evicted.is_empty() {
            return false;
        }
        let key = stream_key(l);
        self.tick += 1;
        if !self.streams.contains_key(&key) {
            let h = self.hasher.hash_one(&key);
            if self.evicted.contains_key(&h) {
                // The rest of an evicted line: its head may finish a secret whose start was
                // masked at eviction.
                if !continued {
                    self.evicted.remove(&h);
                }
                l.body.clear();
                l.body.push_str(EVICTED_MASK);
                return true;
            }
            if !continued {
                return false;
            }
            self.make_room(&key, None);
            self.streams
                .insert(key.clone(), OpenLine { stream: Stream::new(self.r.clone()), held: 0, used: 0 });
        }
        let Some(open) = self.streams.get_mut(&key) else { return false };
        open.used = self.tick;
        let s = &mut open.stream;
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
        let held = footprint(&key, s);
        self.held = self.held - open.held + held;
        open.held = held;
        l.body.clear();
        l.body.push_str(&String::from_utf8_lossy(&self.out));
        if !continued {
            if let Some(gone) = self.streams.remove(&key) {
                self.held -= gone.held;
            }
        } else if self.held > self.limits.max_held_bytes {
            self.make_room(&key, Some(&key));
        }
        true
    }

    /// Evicts least recently used lines (never `keep`) until one more line fits
    /// (`keep == None`) or the held bytes are within bounds again.
    fn make_room(&mut self, key: &StreamKey, keep: Option<&StreamKey>) {
        let new_line = keep.is_none();
        let extra = if new_line { key.1.len() + key.2.len() + STREAM_OVERHEAD } else { 0 };
        while (new_line && self.streams.len() >= self.limits.max_open_lines)
            || self.held + extra > self.limits.max_held_bytes
        {
            let victim = self
                .streams
                .iter()
                .filter(|(k, _)| Some(*k) != keep)
                .min_by_key(|(_, o)| o.used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            self.evict(victim);
        }
    }

    /// Drops a line in progress: what it held back is masked, never written raw (it may be
    /// the start of a secret), and its later pieces will be masked too.
    fn evict(&mut self, key: StreamKey) {
        let Some(open) = self.streams.remove(&key) else { return };
        self.held -= open.held;
        self.evictions += 1;
        if self.evicted.len() >= self.limits.max_open_lines.saturating_mul(TOMBSTONES_PER_LINE) {
            if let Some(oldest) = self.evicted.iter().min_by_key(|(_, t)| **t).map(|(h, _)| *h) {
                self.evicted.remove(&oldest);
            }
        }
        self.evicted.insert(self.hasher.hash_one(&key), self.tick);
        if open.stream.pending() > 0 {
            let (source, iostream, path) = key;
            self.extra.push(line_record(source, iostream, path, EVICTED_MASK.to_owned(), 0));
        }
        tracing::warn!(
            open_lines = self.streams.len(),
            held_bytes = self.held,
            "redact: a line in progress was evicted (max_open_lines or max_held_bytes); its held-back text and its later pieces are masked"
        );
    }

    /// Masks a record of a stream inside a PEM private key block: the whole body, or what comes
    /// before the `-----END` marker, which closes the block. One block counts once, here, at
    /// its first body record.
    fn pem_body(&mut self, l: &mut LogRecord, c: &mut Counts) {
        let key = stream_key(l);
        let Some(seen) = self.pem_open.get_mut(&key) else { return };
        let first = *seen == 0;
        let end = credentials::pem_end(l.body.as_bytes());
        let body_len = end.unwrap_or(l.body.len());
        let secret = l.body[..body_len].trim();
        if !secret.is_empty() {
            *seen += body_len;
            let rest = l.body[body_len..].to_owned();
            let masked = self.r.mask_value(Detector::PrivateKey, secret, c, first);
            l.body = masked + &rest;
        }
        if end.is_some() || *seen > credentials::MAX_PEM {
            self.pem_open.remove(&key);
        }
    }

    /// Lines in progress and the bytes they hold (for tests and metrics).
    pub fn open_lines(&self) -> (usize, usize) {
        (self.streams.len(), self.held)
    }
}

/// Whether `body` leaves a PEM private key block open ([`credentials::unterminated_pem`]),
/// behind a forward search for its `PRIVATE KEY` marker: nearly no line holds one, and the
/// forward search is vectorised with a searcher built once, while the check's reverse
/// searches go byte by byte (they cost as much as the redaction scan of the line).
fn may_open_pem(body: &[u8]) -> bool {
    static MARKER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"PRIVATE KEY"));
    MARKER.find(body).is_some() && credentials::unterminated_pem(body)
}

/// What a line in progress counts against `max_held_bytes`.
fn footprint(key: &StreamKey, s: &Stream) -> usize {
    key.1.len() + key.2.len() + s.pending() + STREAM_OVERHEAD
}

/// A record that ends a line whose last piece did not come (flush, eviction).
fn line_record(source: SourceId, iostream: String, path: String, body: String, redactions: u32) -> Event {
    let mut attributes = Vec::new();
    if !iostream.is_empty() {
        attributes.push(KeyValue::new(attr::IOSTREAM, iostream));
    }
    if !path.is_empty() {
        attributes.push(KeyValue::new(attr::FILE_PATH, path));
    }
    Event::Log(LogRecord {
        observed_time: crate::event::now_nanos(),
        body,
        attributes,
        source,
        redactions,
        ..LogRecord::default()
    })
}

/// Keeps the typed copy of a non-string OTLP body (`sealtrail.otlp.body`) in agreement with
/// the redacted body. Both were redacted, the copy value by value and the body as one text;
/// when their texts differ, one caught what the other did not: the body becomes the copy's
/// text redacted once more as text (so it has both), and the copy goes (the forward then
/// sends the body as a string: redaction wins over the type).
fn typed_body(r: &Redactor, l: &mut LogRecord, c: &mut Counts) {
    let Some(i) = l.attributes.iter().position(|kv| kv.key == attr::OTLP_BODY) else { return };
    let mut text = l.attributes[i].value.to_text();
    if text == l.body {
        return;
    }
    visit_value(r, None, &mut text, c);
    l.body = text;
    l.attributes.remove(i);
}

fn stream_key(l: &LogRecord) -> StreamKey {
    let text = |k: &str| find_attr(&l.attributes, k).map(Value::to_text).unwrap_or_default();
    (l.source.clone(), text(attr::IOSTREAM), text(attr::FILE_PATH))
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
        if self.evictions > 0 {
            cx.metrics.add("redact.lines_evicted", std::mem::take(&mut self.evictions));
        }
        // Evicted lines' masked remains go after the batch that evicted them.
        events.append(&mut self.extra);
        Some(Arc::new(events))
    }

    /// A line whose last piece never came (the input ended inside it): what the streams still
    /// hold becomes one last record per stream.
    fn flush(&mut self, cx: &TransformContext) -> Option<Batch> {
        self.evicted.clear();
        self.pem_open.clear();
        if self.streams.is_empty() && self.extra.is_empty() {
            return None;
        }
        let mut events = std::mem::take(&mut self.extra);
        let mut total = Counts::default();
        for ((source, iostream, path), mut open) in self.streams.drain() {
            let s = &mut open.stream;
            let before = s.counts();
            let mut out = Vec::new();
            s.finish(&mut out);
            let mut c = s.counts();
            for (i, n) in c.0.iter_mut().enumerate() {
                *n -= before.0[i];
            }
            total.add(&c);
            let body = String::from_utf8_lossy(&out).into_owned();
            events.push(line_record(source, iostream, path, body, c.total() as u32));
        }
        self.held = 0;
        for (d, n) in total.iter() {
            cx.metrics.add(COUNTERS[d as usize], n);
        }
        Some(Arc::new(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Span, SpanEvent, SpanLink};
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

    /// Issue 12: a structured attribute whose key names an account is an account number,
    /// also as an integer and inside nested maps; look-alike keys keep their values.
    #[test]
    fn keyed_account_values_are_redacted() {
        let mut t = transform(&RedactConfig::default());
        let mut e = Event::Log(LogRecord {
            body: "transfer done".into(),
            attributes: vec![
                KeyValue::new("bank.account", "0937416606"),
                KeyValue::new("acct no", Value::Int(9_374_166_061)),
                KeyValue::new("customer", Value::Map(vec![KeyValue::new("accountNumber", "12-3456-789")])),
                KeyValue::new("order_id", "0937416606"),
                KeyValue::new("accounts", Value::Int(3)),
            ],
            ..LogRecord::default()
        });
        let c = t.redact_event(&mut e);
        let Event::Log(l) = &e else { unreachable!() };
        let text = |i: usize| l.attributes[i].value.to_text();
        assert_eq!(text(0), "****");
        assert_eq!(text(1), "****");
        assert_eq!(text(2), r#"{"accountNumber":"****"}"#);
        assert_eq!(text(3), "0937416606");
        assert_eq!(text(4), "3");
        assert_eq!(c.total(), 3);
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

    /// Issue 11, defect 1: metadata derived from OTLP (`service` from `service.name`,
    /// `severity_text`), double and bytes attribute values and the typed copy of a non-string
    /// body all passed the transform unredacted.
    #[test]
    fn issue_11_metadata_scalars_and_typed_body_are_redacted() {
        use crate::otlp::ExportLogsServiceRequest;
        use crate::otlp::proto::common::{AnyValue, KeyValue as PKv, any_value::Value as V};
        use crate::otlp::proto::{logs as pl, resource as pr};
        let card = "4111111111111111";
        let any = |v: V| AnyValue { value: Some(v) };
        let pkv = |k: &str, v: V| PKv { key: k.into(), value: Some(any(v)), key_strindex: 0 };
        // Hex of these bytes is the card number.
        let card_bytes = hex::decode(card).unwrap();
        let req = ExportLogsServiceRequest {
            resource_logs: vec![pl::ResourceLogs {
                resource: Some(pr::Resource {
                    attributes: vec![pkv("service.name", V::StringValue(format!("pay-{card}")))],
                    ..Default::default()
                }),
                scope_logs: vec![pl::ScopeLogs {
                    log_records: vec![pl::LogRecord {
                        severity_text: format!("ERROR {card}"),
                        body: Some(any(V::DoubleValue(4111111111111111.0))),
                        attributes: vec![
                            pkv("amount", V::DoubleValue(4111111111111111.0)),
                            pkv("raw", V::BytesValue(card_bytes)),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut events = Vec::new();
        crate::otlp::convert::logs_to_events(req, &SourceId::from("otlp"), 1, &mut events);
        let mut t = transform(&RedactConfig::default());
        let out = t.transform(Arc::new(events), &cx()).unwrap();
        let Event::Log(l) = &out[0] else { panic!("a log record") };
        assert_eq!(l.service, "pay-****");
        assert_eq!(l.severity_text, "ERROR ****");
        assert_eq!(l.body, "****");
        for kv in &l.attributes {
            let text = kv.value.to_text();
            assert!(!text.contains(card), "{} = {text}", kv.key);
        }
        // Every output renders these as text: the JSON form (console, tail, query) and the
        // OTLP forward.
        let json = out[0].to_json().to_string();
        assert!(!json.contains(card), "{json}");
        let fwd = crate::otlp::convert::logs_from_events(out.iter());
        assert!(!format!("{fwd:?}").contains(card), "{fwd:?}");
        let body = fwd.resource_logs[0].scope_logs[0].log_records[0].body.clone();
        assert!(!format!("{body:?}").contains("4111111111111111") && !format!("{body:?}").contains("4.111"));
    }

    /// Issue 12: a line source splits a PEM private key block into one record per line; the
    /// records between the markers are its body and are masked, per stream.
    #[test]
    fn pem_block_split_into_records_is_masked() {
        let mut t = transform(&RedactConfig::default());
        let c = cx();
        let lines = [
            "key follows",
            "-----BEGIN RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEAq2Zs",
            "",
            "zV/abc==",
            "-----END RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEAq2Zs after the block",
        ];
        let mut events: Vec<Event> = lines.iter().map(|l| log(l, false)).collect();
        // A record of another stream in the middle is not part of the block.
        let mut other = log("other MIIE", false);
        if let Event::Log(l) = &mut other {
            l.source = "other".into();
        }
        events.insert(3, other);
        let out = t.transform(Arc::new(events), &c).unwrap();
        let bodies: Vec<&str> = out.iter().map(body).collect();
        assert_eq!(
            bodies,
            [
                "key follows",
                "-----BEGIN RSA PRIVATE KEY-----",
                "****",
                "other MIIE",
                "",
                "****",
                "-----END RSA PRIVATE KEY-----",
                "MIIEowIBAAKCAQEAq2Zs after the block",
            ]
        );
        assert_eq!(c.metrics.get("redactions.private_key"), 1);
        assert!(t.pem_open.is_empty());
        // Off when the detector is off.
        let mut t =
            transform(&RedactConfig { detectors: Some(vec!["card".into()]), ..RedactConfig::default() });
        let events: Vec<Event> = lines.iter().map(|l| log(l, false)).collect();
        let out = t.transform(Arc::new(events), &c).unwrap();
        assert_eq!(body(&out[2]), "MIIEowIBAAKCAQEAq2Zs");
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

    /// Issue 13: a unique `log.file.path` per record opened one stream each, without bound.
    /// Hundreds of lines in progress now stay within `max_open_lines` and `max_held_bytes`,
    /// and eviction never lets a piece of a secret through: the held-back start of a card
    /// number is masked, and so is the evicted line's next piece that ends it.
    #[test]
    fn issue_13_open_lines_are_bounded_and_eviction_masks() {
        let limits = StreamLimits { max_open_lines: 50, max_held_bytes: 40 * 1024 };
        let r = Arc::new(Redactor::with_defaults());
        let mut t = RedactTransform::with_limits(r, limits);
        let c = cx();
        let piece = |path: usize, body: &str, continued: bool| {
            let mut attributes = vec![KeyValue::new(attr::FILE_PATH, format!("/var/log/app-{path}.log"))];
            if continued {
                attributes.push(KeyValue::new(attr::CONTINUED, true));
            }
            Event::Log(LogRecord {
                body: body.into(),
                attributes,
                source: "files".into(),
                ..LogRecord::default()
            })
        };
        let mut outputs = Vec::new();
        // 400 lines in progress, each holding the start of a card number.
        for i in 0..400 {
            let out = t.transform(Arc::new(vec![piece(i, "paid 4111 1111 ", true)]), &c).unwrap();
            let (open, held) = t.open_lines();
            assert!(open <= 50 && held <= 40 * 1024, "{open} lines, {held} bytes");
            outputs.extend(out.iter().cloned());
        }
        // Their ends, in the same order.
        for i in 0..400 {
            let out = t.transform(Arc::new(vec![piece(i, "1111 1111 done", false)]), &c).unwrap();
            outputs.extend(out.iter().cloned());
        }
        outputs.extend(t.flush(&c).map(|b| b.to_vec()).unwrap_or_default());
        assert_eq!(t.open_lines(), (0, 0));
        assert!(c.metrics.get("redact.lines_evicted") >= 350, "{}", c.metrics.get("redact.lines_evicted"));
        for e in &outputs {
            assert!(!body(e).contains("1111"), "{}", body(e));
        }
        // The lines that were never evicted are whole and redacted as one text.
        let whole = |i: usize| {
            let path = format!("/var/log/app-{i}.log");
            outputs
                .iter()
                .filter(|e| matches!(e, Event::Log(l) if find_attr(&l.attributes, attr::FILE_PATH) == Some(&Value::Str(path.clone()))))
                .map(body)
                .collect::<String>()
        };
        assert_eq!(whole(399), "paid **** done");
        assert_eq!(whole(0), "********");
    }

    #[test]
    fn max_limits_are_checked() {
        let cfg: RedactConfig = toml::from_str("max_open_lines = 0").unwrap();
        assert!(format!("{:#}", cfg.stream_limits().unwrap_err()).contains("`max_open_lines`"));
        let cfg: RedactConfig = toml::from_str("max_held_bytes = 1000").unwrap();
        assert!(format!("{:#}", cfg.stream_limits().unwrap_err()).contains("`max_held_bytes`"));
        let cfg: RedactConfig = toml::from_str("max_open_lines = 8\nmax_held_bytes = 1048576").unwrap();
        assert_eq!(cfg.stream_limits().unwrap(), StreamLimits { max_open_lines: 8, max_held_bytes: 1 << 20 });
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
