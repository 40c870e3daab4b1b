//! The redaction engine: finds payment card numbers, IBANs, keyword-anchored bank account
//! numbers, URL credentials and custom keywords or patterns in text, and replaces them with a
//! mask.
//!
//! Build a [`Redactor`] once from [`Options`], then either redact a complete input with
//! [`Redactor::redact`] / [`Redactor::redact_str`] (which borrow the input and allocate nothing
//! when there is nothing to redact), or feed a byte stream in arbitrary chunks through a
//! [`Stream`]. For every input and every way of cutting it into chunks the stream writes
//! exactly what the whole-input call returns (see [`stream`] for how, with a worked example).
//!
//! # How matching works
//!
//! Each detector reports *candidates*: a byte span to replace, found from a cheap trigger and
//! then validated (see the detector modules):
//! - [`card`]: runs of digits (a SIMD-friendly scan), grouping, issuer prefix, Luhn;
//! - [`iban`]: a digit run right after two letters, country length, mod-97;
//! - [`bank_account`]: 6 to 17 digits (one run or grouped) whose key names an account
//!   ([`keys`]: `account=`, `"accountNumber":`) or with an account keyword at most 30 bytes
//!   before it (one Aho-Corasick automaton over a small window, only for such runs);
//! - [`url_credentials`]: `://` (user-info) and `?`/`&` followed by a credential parameter
//!   name and `=` (the value);
//! - [`credentials`]: `Authorization` values, AWS keys, PEM private keys, JSON Web Tokens,
//!   connection-string passwords, `password=`-style fields and fixed-prefix tokens (one
//!   Aho-Corasick automaton over their anchors);
//! - [`custom`]: literal keywords (one Aho-Corasick automaton) and `regex` patterns.
//!
//! Candidates may overlap. The engine keeps the leftmost, then the longest (then the first
//! detector in [`Detector`] order), drops every candidate that overlaps a kept one, and
//! repeats. Custom patterns run last, over the output of the other detectors, one line (cut
//! into windows of [`PATTERN_WINDOW`] bytes) at a time.
//!
//! Every candidate is *local*: whether it exists depends only on at most [`Redactor::context`]
//! bytes before it and a bounded number of bytes after it (a URL authority is at most
//! [`url_credentials::MAX_AUTHORITY`] bytes). A credential value, header, token or key body
//! is unbounded, but whether it exists is decided within a bounded span and its end is a
//! delimiter that a [`tail::Tail`] finds one piece at a time (masked to its end whatever its
//! length). That is what lets the stream hold back little.

pub mod bank_account;
pub mod card;
pub mod credentials;
pub mod custom;
pub mod iban;
pub mod keys;
mod mask;
pub mod naive;
pub mod policy;
pub mod stream;
mod tail;
pub mod url_credentials;

use std::borrow::Cow;
use std::fmt;

pub use mask::Mask;
pub use stream::Stream;

/// The built-in and custom detectors. A tie between two candidates of the same span goes to
/// the one that orders first ([`Detector::rank`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    Card = 0,
    Iban = 1,
    BankAccount = 2,
    UrlCredentials = 3,
    Authorization = 4,
    AwsAccessKey = 5,
    AwsSecretKey = 6,
    PrivateKey = 7,
    Jwt = 8,
    ConnectionString = 9,
    SecretField = 10,
    PrefixedToken = 11,
    Keyword = 12,
    Pattern = 13,
}

impl Ord for Detector {
    fn cmp(&self, other: &Detector) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for Detector {
    fn partial_cmp(&self, other: &Detector) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Detector {
    /// The priority of a detector when two find the same span: the declaration order, except
    /// that a connection string's `;Password=` wins over the same text read as a URL's `;`
    /// parameter (`Server=db;Password=x;` is not a URL; a JDBC URL's `;password=` is masked
    /// the same either way).
    const fn rank(self) -> u8 {
        match self {
            Detector::ConnectionString => 3,
            Detector::UrlCredentials => 4,
            Detector::Authorization => 5,
            Detector::AwsAccessKey => 6,
            Detector::AwsSecretKey => 7,
            Detector::PrivateKey => 8,
            Detector::Jwt => 9,
            Detector::Card
            | Detector::Iban
            | Detector::BankAccount
            | Detector::SecretField
            | Detector::PrefixedToken
            | Detector::Keyword
            | Detector::Pattern => self as u8,
        }
    }

    /// Every detector, in declaration order (metrics, `--stats`).
    pub const ALL: [Detector; Detector::COUNT] = [
        Detector::Card,
        Detector::Iban,
        Detector::BankAccount,
        Detector::UrlCredentials,
        Detector::Authorization,
        Detector::AwsAccessKey,
        Detector::AwsSecretKey,
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::ConnectionString,
        Detector::SecretField,
        Detector::PrefixedToken,
        Detector::Keyword,
        Detector::Pattern,
    ];

    /// How many detectors there are.
    pub const COUNT: usize = 14;

    /// The detectors that can be switched in `detectors = [...]`; keywords and patterns are on
    /// when some are configured.
    pub const BUILT_IN: [Detector; 12] = [
        Detector::Card,
        Detector::Iban,
        Detector::BankAccount,
        Detector::UrlCredentials,
        Detector::Authorization,
        Detector::AwsAccessKey,
        Detector::AwsSecretKey,
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::ConnectionString,
        Detector::SecretField,
        Detector::PrefixedToken,
    ];

    /// The name used in configuration, metrics (`redactions.<name>`) and hmac tokens.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Card => "card",
            Detector::Iban => "iban",
            Detector::BankAccount => "bank_account",
            Detector::UrlCredentials => "url_credentials",
            Detector::Authorization => "authorization",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::AwsSecretKey => "aws_secret_key",
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
            Detector::ConnectionString => "connection_string",
            Detector::SecretField => "secret_field",
            Detector::PrefixedToken => "prefixed_token",
            Detector::Keyword => "keyword",
            Detector::Pattern => "pattern",
        }
    }

    /// The detector called `name`.
    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether the secret is a number whose last four characters `last4` may keep.
    fn is_numeric(self) -> bool {
        matches!(self, Detector::Card | Detector::Iban | Detector::BankAccount)
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Redactions counted per detector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts(pub [u64; Detector::COUNT]);

impl Counts {
    pub fn get(&self, d: Detector) -> u64 {
        self.0[d as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn add(&mut self, other: &Counts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// (detector, count) for every detector with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (Detector, u64)> + '_ {
        Detector::ALL.into_iter().map(|d| (d, self.get(d))).filter(|(_, n)| *n > 0)
    }

    fn bump(&mut self, d: Detector) {
        self.0[d as usize] += 1;
    }
}

/// What to build a [`Redactor`] from.
#[derive(Debug, Clone)]
pub struct Options {
    /// The built-in detectors to run (default: all of [`Detector::BUILT_IN`]).
    pub detectors: Vec<Detector>,
    pub mask: Mask,
    /// The HMAC-SHA256 key of the `hmac` mask (required for it, ignored otherwise).
    pub hmac_key: Option<[u8; 32]>,
    /// Literal strings to redact wherever they occur (case-sensitive).
    pub keywords: Vec<String>,
    /// `regex` patterns to redact (matched within a line).
    pub patterns: Vec<String>,
    /// Account keywords added to the built-in list of [`bank_account`].
    pub bank_account_keywords: Vec<String>,
    /// Credential query parameter names added to the built-in list of [`url_credentials`].
    pub query_params: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            detectors: Detector::BUILT_IN.to_vec(),
            mask: Mask::Mask,
            hmac_key: None,
            keywords: Vec::new(),
            patterns: Vec::new(),
            bank_account_keywords: Vec::new(),
            query_params: Vec::new(),
        }
    }
}

/// Why a [`Redactor`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct BuildError {
    kind: BuildErrorKind,
}

/// The kinds of [`BuildError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildErrorKind {
    #[error("invalid pattern `{pattern}`: {message}")]
    InvalidPattern { pattern: String, message: String },
    #[error("pattern `{pattern}` matches the empty string")]
    EmptyMatch { pattern: String },
    #[error("empty {what} in `{list}`")]
    EmptyEntry { what: &'static str, list: &'static str },
    #[error("the hmac mask needs a key")]
    MissingHmacKey,
    #[error("cannot build the {what} automaton: {message}")]
    Automaton { what: &'static str, message: String },
}

impl BuildError {
    pub fn kind(&self) -> &BuildErrorKind {
        &self.kind
    }

    fn new(kind: BuildErrorKind) -> BuildError {
        BuildError { kind }
    }
}

/// The maximum number of bytes a bounded candidate spans with what decides it (an IBAN with a
/// no-break space between characters, [`iban::MAX_SPAN`]; a card and the hex id around it; an
/// authority without a scheme, user name to port: see [`url_credentials::schemeless`]), and so
/// how far past a position the engine must see before it can decide what starts there.
const MIN_LOOKAHEAD: usize = 160;

/// Bytes of a line that custom patterns see at once: a line longer than this is matched in
/// consecutive windows of this size, so memory stays bounded on any line.
pub const PATTERN_WINDOW: usize = 64 * 1024;

/// A candidate replacement: `buf[start..end]` becomes `buf[start..start + keep]` followed by
/// the mask of the rest. `open` marks a credential value whose end the stream has not seen:
/// `buf[start..end]` is value, the bytes after `end` are held, and the [`tail::Tail`] finds
/// the end in the pieces that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cand {
    pub start: usize,
    pub end: usize,
    pub keep: usize,
    pub det: Detector,
    pub open: Option<tail::Tail>,
}

/// A compiled redaction engine. Cheap to share (`Send + Sync`); build it once.
#[derive(Debug)]
pub struct Redactor {
    on: [bool; 12],
    /// The credential detectors that are on, and whether any is.
    cred_on: credentials::On,
    any_cred: bool,
    cred: credentials::Credentials,
    mask: mask::Masker,
    bank: bank_account::BankAccount,
    url: url_credentials::UrlCredentials,
    keywords: Option<custom::Keywords>,
    patterns: Option<custom::Patterns>,
    /// Bytes of left context a candidate may depend on.
    context: usize,
    /// Bytes past a candidate's start needed to decide it (bounded candidates).
    lookahead: usize,
}

/// A whole structured value that is an account number once its key names an account: 6 to 17
/// digits, optionally grouped by single spaces or dashes (`0937416606`, `12-3456-789`). The key
/// is known exactly here, so the grouping needs none of the guards that text needs against a
/// neighbouring amount or count.
fn is_account_value(b: &[u8]) -> bool {
    let (mut digits, mut prev_sep) = (0usize, true);
    for &c in b {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                prev_sep = false;
            }
            b' ' | b'-' if !prev_sep => prev_sep = true,
            _ => return false,
        }
    }
    !prev_sep && (6..=17).contains(&digits)
}

impl Redactor {
    /// Compiles the detectors. All validation happens here.
    ///
    /// # Errors
    /// A pattern that does not compile or matches the empty string, an empty keyword, or the
    /// hmac mask without a key.
    pub fn new(opts: &Options) -> Result<Redactor, BuildError> {
        let mut on = [false; 12];
        for d in &opts.detectors {
            if let Some(slot) = on.get_mut(*d as usize) {
                *slot = true;
            }
        }
        let mask = mask::Masker::new(opts.mask, opts.hmac_key)?;
        let bank = bank_account::BankAccount::new(&opts.bank_account_keywords)?;
        let url = url_credentials::UrlCredentials::new(&opts.query_params)?;
        let cred = credentials::Credentials::new()?;
        let mut cred_on = [false; 8];
        for (slot, d) in cred_on.iter_mut().zip(credentials::DETECTORS) {
            *slot = on[d as usize];
        }
        let any_cred = cred_on.iter().any(|&o| o);
        let keywords =
            if opts.keywords.is_empty() { None } else { Some(custom::Keywords::new(&opts.keywords)?) };
        let patterns =
            if opts.patterns.is_empty() { None } else { Some(custom::Patterns::new(&opts.patterns)?) };
        let max_kw = keywords.as_ref().map_or(0, |k| k.max_len);
        let context = 64.max(bank.context()).max(url.context()).max(credentials::CONTEXT);
        let lookahead = MIN_LOOKAHEAD.max(max_kw + 1).max(url.max_param_len() + 3);
        Ok(Redactor { on, cred_on, any_cred, cred, mask, bank, url, keywords, patterns, context, lookahead })
    }

    /// A redactor with every built-in detector and the `mask` mask.
    pub fn with_defaults() -> Redactor {
        // The built-in lists are constants that are tested to compile.
        Redactor::new(&Options::default()).expect("the built-in detectors compile")
    }

    /// Bytes before a candidate that decide whether it exists (a stream keeps this much of
    /// what it already wrote).
    pub fn context(&self) -> usize {
        self.context
    }

    /// Redacts a complete input. Borrows the input when nothing matches.
    pub fn redact<'a>(&self, input: &'a [u8], counts: &mut Counts) -> Cow<'a, [u8]> {
        let mut cands = Vec::new();
        self.candidates(input, 0, true, &mut cands);
        let stage1: Cow<'a, [u8]> = if cands.is_empty() {
            Cow::Borrowed(input)
        } else {
            let mut out = Vec::with_capacity(input.len() + 16);
            let selected = select(&mut cands, usize::MAX);
            self.write(input, 0, input.len(), &cands[..selected], &mut out, counts);
            Cow::Owned(out)
        };
        match &self.patterns {
            None => stage1,
            Some(p) => match p.redact_whole(&stage1, &self.mask, counts) {
                None => stage1,
                Some(out) => Cow::Owned(out),
            },
        }
    }

    /// Redacts a complete string. Borrows the input when nothing matches.
    pub fn redact_str<'a>(&self, input: &'a str, counts: &mut Counts) -> Cow<'a, str> {
        match self.redact(input.as_bytes(), counts) {
            Cow::Borrowed(_) => Cow::Borrowed(input),
            // Replacements start and end at ASCII bytes, so the output stays UTF-8; the lossy
            // conversion is a guard, never taken.
            Cow::Owned(v) => Cow::Owned(
                String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    /// Redacts the value of a structured field whose key is known exactly: an OTLP or Lambda
    /// attribute, a resource attribute, a nested map key, a member of a parsed JSON body.
    ///
    /// When `key` names a bank account ([`keys::names_account`]: `bank.account`, `acct no`,
    /// `accountNumber`, `iban`, …) and the value, ignoring surrounding ASCII whitespace, has
    /// the shape of an account number ([`bank_account::value_end`]: 6 to 17 digits, one run or
    /// grouped), the whole value is masked and counted as `bank_account`; the key is the
    /// evidence, as a keyword is in text. Otherwise (and when `key` is `None`) the value is
    /// redacted as text, exactly as [`Redactor::redact_str`] does, so every other detector
    /// still applies. A key that names a credential ([`credentials::keyed_detector`]:
    /// `password`, `db.password`, `apiKey`, `client_secret`, `aws_secret_access_key`) masks the
    /// whole value unless it holds no secret (empty, `true`, `null`, already masked). Borrows
    /// the value when nothing matches.
    ///
    /// ```
    /// use sealtrail::redact::{Counts, Detector, Redactor};
    ///
    /// let r = Redactor::with_defaults();
    /// let mut c = Counts::default();
    /// assert_eq!(r.redact_keyed(Some("bank.account"), "0937416606", &mut c), "****");
    /// assert_eq!(r.redact_keyed(Some("order_id"), "0937416606", &mut c), "0937416606");
    /// assert_eq!(r.redact_keyed(Some("accounts"), "12", &mut c), "12");
    /// assert_eq!(c.get(Detector::BankAccount), 1);
    /// ```
    pub fn redact_keyed<'a>(&self, key: Option<&str>, value: &'a str, counts: &mut Counts) -> Cow<'a, str> {
        if self.on[Detector::BankAccount as usize] && key.is_some_and(|k| keys::names_account(k.as_bytes())) {
            let t = value.trim_matches(|c: char| c.is_ascii_whitespace());
            let b = t.as_bytes();
            if is_account_value(b) {
                let lead = value.len() - value.trim_start_matches(|c: char| c.is_ascii_whitespace()).len();
                let mut out = Vec::with_capacity(value.len());
                out.extend_from_slice(&value.as_bytes()[..lead]);
                self.mask.write(Detector::BankAccount, b, &mut out);
                out.extend_from_slice(&value.as_bytes()[lead + b.len()..]);
                counts.bump(Detector::BankAccount);
                // Only ASCII was replaced, so `out` is UTF-8; the lossy conversion is a guard.
                return Cow::Owned(
                    String::from_utf8(out)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                );
            }
        }
        if let (Some(k), true) = (key, self.on[Detector::Authorization as usize]) {
            let mut cands = Vec::new();
            credentials::keyed_authorization(k, value.as_bytes(), &mut cands);
            if !cands.is_empty() {
                let mut out = Vec::with_capacity(value.len());
                let n = select(&mut cands, usize::MAX);
                self.write(value.as_bytes(), 0, value.len(), &cands[..n], &mut out, counts);
                // Only ASCII was replaced, so `out` is UTF-8; the lossy conversion is a guard.
                return Cow::Owned(String::from_utf8_lossy(&out).into_owned());
            }
        }
        if let Some(det) = key.and_then(|k| credentials::keyed_detector(k, value)) {
            if self.on[det as usize] && !credentials::is_non_secret_value(value.as_bytes()) {
                let mut out = Vec::with_capacity(4);
                self.mask.write(det, value.as_bytes(), &mut out);
                counts.bump(det);
                // The mask is ASCII; the lossy conversion is a guard.
                return Cow::Owned(String::from_utf8_lossy(&out).into_owned());
            }
        }
        self.redact_str(value, counts)
    }

    /// Whether detector `d` is on.
    pub fn detects(&self, d: Detector) -> bool {
        self.on.get(d as usize).copied().unwrap_or(false)
    }

    /// The mask of a whole value that `det` found by other means (a line of a PEM block that a
    /// line source split into records); counted when `count`.
    pub fn mask_value(&self, det: Detector, value: &str, counts: &mut Counts, count: bool) -> String {
        let mut out = Vec::with_capacity(8);
        self.mask.write(det, value.as_bytes(), &mut out);
        if count {
            counts.bump(det);
        }
        // The mask is ASCII; the lossy conversion is a guard.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A stream that redacts input given in chunks.
    pub fn stream(self: &std::sync::Arc<Self>) -> Stream {
        Stream::new(self.clone())
    }

    /// Collects the candidates that start at or after `from` in `buf` into `out`, and returns
    /// the position from which candidates are not known yet (`buf.len()` with `eof`): a
    /// candidate starting before it is complete. Bytes before `from` are context only.
    #[inline(always)] // into `redact`, with the scan: per-line calls must not pay for calls
    pub(crate) fn candidates(&self, buf: &[u8], from: usize, eof: bool, out: &mut Vec<Cand>) -> usize {
        let mut limit = if eof { buf.len() } else { buf.len().saturating_sub(self.lookahead) };
        if self.on[..4].iter().any(|&on| on) {
            limit = limit.min(self.scan(buf, from, eof, out));
        }
        if self.any_cred {
            limit = limit.min(self.cred.candidates(buf, from, eof, &self.cred_on, out));
        }
        if let Some(k) = &self.keywords {
            k.candidates(buf, from, out);
        }
        limit
    }

    /// The one pass over `buf` for the built-in detectors: walks the maximal runs of ASCII
    /// digits that start at or after `from` and can matter to the digit detectors, and the
    /// URL credential triggers (`:`, `?`, `&`), and hands them over. Returns the start of a
    /// URL user-info that cannot be decided yet (`usize::MAX` if none).
    ///
    /// Log text is full of short digit runs (timestamps, ports, hex ids), so the walk works on
    /// 64-byte blocks without visiting them one by one: one vectorised pass makes bit masks of
    /// the digits `d`, letters `u` and triggers `t`; run starts are `d & !(d << 1)`; a
    /// run of at least 4 digits starts where `d & d >> 1 & d >> 2 & d >> 3` is set; IBAN check
    /// digits follow two letters (`u << 1 & u << 2`). Only starts in either set are looked at
    /// (plus the block edges, where the masks cannot see the neighbours), and the run's length
    /// is the count of trailing ones from its start.
    #[inline(always)]
    fn scan(&self, buf: &[u8], from: usize, eof: bool, out: &mut Vec<Cand>) -> usize {
        let n = buf.len();
        let digits = self.on[0] || self.on[1] || self.on[2];
        let url = self.on[3];
        let mut st = url_credentials::Scan::new(from, eof);
        if url {
            // Triggers in the left context (a `?name=` whose value starts at `from` or later).
            for y in self.url.scan_start(from)..from.min(n) {
                if url_credentials::is_trigger(buf, y) {
                    self.url.trigger(&mut st, buf, y, out);
                }
            }
        }
        let mut i = from;
        // A run that began before `from` is not a run start (and holds no trigger), unless it
        // began inside a `\uXXXX` escape that ends at or after `from`: the number then starts
        // after the escape (see `unescaped_start`), which an earlier scan left undecided.
        if i < n && i > 0 && buf[i].is_ascii_digit() && buf[i - 1].is_ascii_digit() {
            let mut rs = i;
            while rs > 0 && buf[rs - 1].is_ascii_digit() && i - rs < 6 {
                rs -= 1;
            }
            while i < n && buf[i].is_ascii_digit() {
                i += 1;
            }
            if digits && rs >= 2 && buf[rs - 1].is_ascii_alphabetic() && unescaped_start(buf, rs, i) >= from {
                self.digit_run(buf, from, rs, i, out);
            }
        }
        const EDGE_LOW: u64 = 0b11;
        const EDGE_HIGH: u64 = 0b111 << 61;
        'blocks: while i < n {
            let block_end = (i + 64).min(n);
            let (d, u, t) = if block_end - i < 64 && n >= 64 {
                // The last, short block: the masks of the last 64 bytes, shifted so that bit 0
                // is `i` (no copy into a padded block).
                let shift = 64 - (block_end - i);
                let (d, u, t) = card::masks(&buf[n - 64..]);
                (d >> shift, u >> shift, t >> shift)
            } else {
                card::masks(&buf[i..block_end])
            };
            if url {
                let mut t = t;
                while t != 0 {
                    self.url.trigger(&mut st, buf, i + t.trailing_zeros() as usize, out);
                    t &= t - 1;
                }
            }
            if !digits {
                i = block_end;
                continue;
            }
            // Invariant: `buf[i - 1]` is not a digit, so bit 0 may start a run.
            let long = d & (d >> 1) & (d >> 2) & (d >> 3) | EDGE_HIGH;
            let after_caps = if self.on[1] { (u << 1) & (u << 2) | EDGE_LOW } else { 0 };
            let mut starts = d & !(d << 1) & (long | after_caps);
            while starts != 0 {
                let k = starts.trailing_zeros() as usize;
                let s = i + k;
                let mut e = s + (d >> k).trailing_ones() as usize;
                if e == block_end {
                    // The run reaches the end of the block: the next block starts after it
                    // (digits only in between, so no trigger is skipped).
                    while e < n && buf[e].is_ascii_digit() {
                        e += 1;
                    }
                    self.digit_run(buf, from, s, e, out);
                    i = e;
                    continue 'blocks;
                }
                self.digit_run(buf, from, s, e, out);
                starts &= starts - 1;
            }
            i = block_end;
        }
        st.undecided
    }

    /// One maximal digit run `buf[s..e]`.
    ///
    /// Most runs visited are 4 or 5 digits (years, times, ports), which only matter as IBAN
    /// check digits or as a card's first group (4 digits, then a separator): those are
    /// rejected here, inlined in the scan, without a call.
    #[inline(always)]
    fn digit_run(&self, buf: &[u8], from: usize, s: usize, e: usize, out: &mut Vec<Cand>) {
        // A run after a letter may begin inside a `\uXXXX` escape (JSON-encoded text).
        let s = if s >= 2 && buf[s - 1].is_ascii_alphabetic() { unescaped_start(buf, s, e) } else { s };
        let len = e - s;
        let after_caps = self.on[1]
            && s >= 2
            && s - 2 >= from
            && buf[s - 1].is_ascii_alphabetic()
            && buf[s - 2].is_ascii_alphabetic();
        let first_group = (4..=5).contains(&len) && e < buf.len() && card::may_separate(buf[e]);
        if after_caps || first_group || (6..=19).contains(&len) {
            self.digit_run_checks(buf, s, e, after_caps, out);
        }
    }

    /// [`Redactor::digit_run`] past the cheap rejections.
    #[inline(never)]
    fn digit_run_checks(&self, buf: &[u8], s: usize, e: usize, after_caps: bool, out: &mut Vec<Cand>) {
        let len = e - s;
        if after_caps {
            iban::candidate(buf, s, out);
        }
        if len < 4 {
            return;
        }
        if self.on[0] && (len == 4 || (13..=19).contains(&len)) {
            card::candidate(buf, s, e, out);
        }
        if self.on[2] && len <= bank_account::MAX_DIGITS {
            self.bank.candidate(buf, s, e, out);
        }
    }

    /// Writes `buf[from..to]` to `out` with the selected candidates (sorted, non-overlapping,
    /// inside `from..to`) replaced, counting each.
    pub(crate) fn write(
        &self,
        buf: &[u8],
        from: usize,
        to: usize,
        selected: &[Cand],
        out: &mut Vec<u8>,
        counts: &mut Counts,
    ) {
        let mut pos = from;
        for c in selected {
            out.extend_from_slice(&buf[pos..c.start]);
            out.extend_from_slice(&buf[c.start..c.start + c.keep]);
            self.mask.write(c.det, &buf[c.start + c.keep..c.end], out);
            counts.bump(c.det);
            pos = c.end;
        }
        out.extend_from_slice(&buf[pos..to]);
    }
}

/// Sorts candidates and keeps the leftmost-longest non-overlapping ones that start before
/// `limit`, moving them to the front; returns how many were kept.
pub(crate) fn select(cands: &mut Vec<Cand>, limit: usize) -> usize {
    select_open(cands, limit).0
}

/// [`select`], and the start of a kept open candidate that shares its start with another open
/// candidate that ends by another rule (a closed one there is shorter; one with the same rule
/// ends at the same byte, and the detector order decides): which of the two is longer is not
/// known yet (a `password=` value that is also a JSON Web Token), so a stream must not decide
/// there until one of them ends.
pub(crate) fn select_open(cands: &mut Vec<Cand>, limit: usize) -> (usize, Option<usize>) {
    if cands.len() > 1 {
        cands.sort_unstable_by_key(|c| (c.start, c.open.is_none(), std::cmp::Reverse(c.end), c.det));
    }
    let mut kept = 0;
    let mut last_end = 0;
    let mut tie = None;
    for i in 0..cands.len() {
        let c = cands[i];
        if c.start >= limit {
            break;
        }
        if kept > 0 && c.start < last_end {
            let k = cands[kept - 1];
            if tie.is_none() && c.open.is_some() && k.start == c.start && (k.open, k.end) != (c.open, c.end) {
                tie = Some(c.start);
            }
            continue;
        }
        cands[kept] = c;
        kept += 1;
        last_end = if c.open.is_some() { usize::MAX } else { c.end };
    }
    cands.truncate(kept);
    (kept, tie)
}

/// ASCII letter or digit.
#[inline]
pub(crate) fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Whether a token (a number, an IBAN, a keyword) may start at `i`: the input starts there,
/// the byte before is not an ASCII letter or digit, or it ends a JSON escape.
///
/// Most functions log JSON lines, so a value often follows an escape (`"ok\n4111…"`,
/// `"card:\t…"`, `"\u0020…"`): the `n` of `\n` is not a letter touching the number.
#[inline]
pub fn word_start(buf: &[u8], i: usize) -> bool {
    i == 0 || !is_alnum(buf[i - 1]) || after_escape(buf, i)
}

/// Whether `buf[..i]` ends with a JSON escape that stands for a control character or any
/// character (`\n`, `\r`, `\t`, `\b`, `\f`, `\uXXXX`). Reads at most 6 bytes before `i`.
#[inline]
pub fn after_escape(buf: &[u8], i: usize) -> bool {
    (i >= 2 && buf[i - 2] == b'\\' && matches!(buf[i - 1], b'n' | b'r' | b't' | b'b' | b'f'))
        || (i >= 6
            && buf[i - 6] == b'\\'
            && buf[i - 5] == b'u'
            && buf[i - 4..i].iter().all(u8::is_ascii_hexdigit))
}

/// Where the number in the digit run `buf[s..e]` starts when the run begins inside a `\uXXXX`
/// escape (`\u00204111…` holds the run `00204111…`, `\u00A04111…` the run `04111…`): right
/// after the escape, if digits remain. Otherwise `s`.
#[inline]
pub fn unescaped_start(buf: &[u8], s: usize, e: usize) -> usize {
    for q in s.saturating_sub(5)..s.saturating_sub(1) {
        if buf[q] == b'\\'
            && buf[q + 1] == b'u'
            && q + 6 < e
            && buf[q + 2..q + 6].iter().all(u8::is_ascii_hexdigit)
        {
            return q + 6;
        }
    }
    s
}

#[cfg(test)]
mod tests;
