//! Credentials beyond URLs: eight named detectors, on by default.
//!
//! | Detector | What is masked | What stays readable |
//! |---|---|---|
//! | `authorization` | the credential of an `Authorization:` (or `Proxy-Authorization`) value: the token after `Basic`/`Bearer`/any scheme, Digest `response=`, AWS SigV4 `Signature=`; a value without a scheme whole | the header name, the scheme, Digest `username`, SigV4 `Credential` scope and `SignedHeaders` |
//! | `aws_access_key` | `AKIA`/`ASIA` + 16 capitals or digits, after the prefix | the prefix |
//! | `aws_secret_key` | 40 base64 characters after a key naming an AWS secret key (`aws_secret_access_key=`, `"SecretAccessKey":`) | the key |
//! | `private_key` | the body of a PEM `-----BEGIN … PRIVATE KEY-----` block, across lines, up to its `-----END` | both marker lines |
//! | `jwt` | a JSON Web Token `eyJ….….…` whole | |
//! | `connection_string` | the value of `Password=`/`Pwd=`/`AccountKey=`/`SharedAccessKey=` in a `;`-separated connection string (spaces allowed up to `;`), and `password=` in a key-value DSN (`host=db user=app password=…`) | the other fields |
//! | `secret_field` | the value of `key=value`, `key: value`, `"key": "value"` when the key names a secret ([`names_secret`]) | the key |
//! | `prefixed_token` | a token with a well-known fixed prefix ([`TOKEN_PREFIXES`]: GitHub, Slack, Stripe, GitLab, npm, Google, SendGrid, …) after its prefix | the prefix |
//!
//! # How they are found
//!
//! One Aho-Corasick automaton finds every *anchor* ([`anchor_strings`]: key words such as
//! `password`, `Password`, `PASSWORD`, `authorization`, the token prefixes, `eyJ`,
//! `-----BEGIN `); it matches bytes exactly, so it keeps its SIMD (Teddy) prefilter, and a
//! line holding none costs that one scan and allocates nothing. Each anchor is then parsed by
//! [`at_anchor`], which the naive reference also calls at every byte position, so the
//! automaton is tested to find every anchor.
//!
//! # Locality
//!
//! Every candidate starts at or after its anchor and depends on at most [`CONTEXT`] bytes
//! before it (the key around the anchor, a DSN's `host=`) and a bounded span after it
//! ([`MAX_VALUE`], [`MAX_PEM`]). When that span runs past the end of a stream chunk, the
//! anchor's position is reported as undecided and the stream holds the bytes back until it
//! can decide, so the output is the same for every chunking.
//!
//! # Look-alikes
//!
//! A key names a secret by its *last* word (`db_password`, `newPassword`, `client-secret`),
//! so `password_reset=true`, `password_length=12`, `passwords=3`, `secret_name=prod/db` and
//! `token_count=5` stay. Values that hold no secret stay too: empty, `true`/`false`/`null`/
//! `none`, already masked (`****`, `[secret_field:…]`, `<redacted>`), and `PWD=/home/x` (the
//! working directory, not a password).

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::tail::{Kind as TailKind, Memo, Tail};
use super::{BuildError, BuildErrorKind, Cand, Detector, after_escape, is_alnum};

/// The credential detectors, in [`Detector`] order.
pub const DETECTORS: [Detector; 8] = [
    Detector::Authorization,
    Detector::AwsAccessKey,
    Detector::AwsSecretKey,
    Detector::PrivateKey,
    Detector::Jwt,
    Detector::ConnectionString,
    Detector::SecretField,
    Detector::PrefixedToken,
];

/// Bytes before a candidate that decide it: a key of at most [`MAX_KEY`] bytes with its
/// quotes and separator before the value, and the [`DSN_LOOKBACK`] bytes before the key.
pub const CONTEXT: usize = MAX_KEY + 24 + DSN_LOOKBACK;

/// The longest key (`aws_secret_access_key`, `x-api-key`) read around a key word anchor.
pub const MAX_KEY: usize = 64;

/// Bytes before a `password=` key searched for `host=`/`dbname=`, which make it a DSN field.
pub const DSN_LOOKBACK: usize = 128;

/// The bytes of a value, a header or a token read to decide it: a value at least this long is
/// a secret whatever it holds (no `true`, no mask), and is masked on to its delimiter whatever
/// its length (see [`super::tail`]).
pub const MAX_VALUE: usize = 4096;

/// The PEM body searched for its `-----END` marker (an RSA 8192-bit key is about 6.5 KiB).
/// A longer body is masked on over base64, line breaks and spaces, to the marker or the
/// first other byte.
pub const MAX_PEM: usize = 16 * 1024;

/// Fixed-prefix tokens: the prefix (case-sensitive) and the fewest token bytes after it.
pub const TOKEN_PREFIXES: &[(&str, usize)] = &[
    ("ghp_", 30),
    ("gho_", 30),
    ("ghu_", 30),
    ("ghs_", 30),
    ("ghr_", 30),
    ("github_pat_", 40),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxa-", 10),
    ("xoxr-", 10),
    ("xoxs-", 10),
    ("xoxe-", 10),
    ("xapp-", 10),
    ("sk_live_", 16),
    ("sk_test_", 16),
    ("rk_live_", 16),
    ("rk_test_", 16),
    ("whsec_", 24),
    ("glpat-", 20),
    ("npm_", 30),
    ("AIza", 30),
    ("SG.", 40),
    ("hf_", 30),
    ("sk-ant-", 32),
    ("sk-proj-", 32),
    ("pypi-", 50),
    ("dop_v1_", 40),
    ("shpat_", 32),
    ("shpss_", 32),
    ("shpca_", 32),
];

/// Key words (compared ignoring ASCII case) that may be part of a key naming a secret.
const KEY_ANCHORS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "accountkey",
    "sharedaccesskey",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Key,
    Authorization,
    AwsKeyId,
    Jwt,
    Pem,
    Token(usize),
}

/// Whether an anchor of this kind is found in any ASCII case (key words and `Authorization`:
/// `PassWord=`, `API_KEY`, `AUTHORIZATION:`); the others (`AKIA`, `eyJ`, token prefixes)
/// are case-sensitive, and their parsers check the exact bytes the case-insensitive automaton
/// also reports.
fn any_case(kind: Anchor) -> bool {
    matches!(kind, Anchor::Key | Anchor::Authorization)
}

/// Whether the anchor `s` of `kind` is at the start of `buf`.
fn anchor_at(buf: &[u8], s: &[u8], kind: Anchor) -> bool {
    if any_case(kind) {
        buf.len() >= s.len() && buf[..s.len()].eq_ignore_ascii_case(s)
    } else {
        buf.starts_with(s)
    }
}

/// Every anchor with its kind, built once; the automaton's pattern ids index this.
static ANCHORS: std::sync::LazyLock<Vec<(String, Anchor)>> = std::sync::LazyLock::new(build_anchors);

fn anchors() -> &'static [(String, Anchor)] {
    &ANCHORS
}

fn build_anchors() -> Vec<(String, Anchor)> {
    let mut v: Vec<(String, Anchor)> = KEY_ANCHORS.iter().map(|k| (k.to_string(), Anchor::Key)).collect();
    v.push(("authorization".into(), Anchor::Authorization));
    v.push(("AKIA".into(), Anchor::AwsKeyId));
    v.push(("ASIA".into(), Anchor::AwsKeyId));
    v.push(("eyJ".into(), Anchor::Jwt));
    v.push(("-----BEGIN ".into(), Anchor::Pem));
    for (i, (p, _)) in TOKEN_PREFIXES.iter().enumerate() {
        v.push((p.to_string(), Anchor::Token(i)));
    }
    v
}

/// The anchors, for documentation and the baseline: every string the automaton looks for.
pub fn anchor_strings() -> Vec<String> {
    anchors().iter().map(|(s, _)| s.clone()).collect()
}

/// The compiled anchor automaton.
#[derive(Debug)]
pub(crate) struct Credentials {
    ac: AhoCorasick,
    kinds: Vec<(usize, Anchor)>,
}

/// Which credential detectors are on, by [`DETECTORS`] position.
pub(crate) type On = [bool; 8];

fn on(on: &On, d: Detector) -> bool {
    DETECTORS.iter().position(|x| *x == d).is_some_and(|i| on[i])
}

impl Credentials {
    pub(crate) fn new() -> Result<Credentials, BuildError> {
        let list = anchors();
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(list.iter().map(|(s, _)| s.as_bytes()))
            .map_err(|e| {
                BuildError::new(BuildErrorKind::Automaton {
                    what: "credential anchor",
                    message: e.to_string(),
                })
            })?;
        let kinds = list.iter().map(|(s, k)| (s.len(), *k)).collect();
        Ok(Credentials { ac, kinds })
    }

    /// Reports the candidates starting at or after `from`; returns the first anchor whose
    /// candidates cannot be decided before the end of `buf` (`usize::MAX` if none).
    pub(crate) fn candidates(
        &self,
        buf: &[u8],
        from: usize,
        eof: bool,
        on: &On,
        out: &mut Vec<Cand>,
    ) -> usize {
        let start = from.saturating_sub(MAX_KEY + 24);
        let mut undecided = usize::MAX;
        let mut memo = Memo::default();
        for m in self.ac.find_overlapping_iter(&buf[start..]) {
            let a = start + m.start();
            let (len, kind) = self.kinds[m.pattern().as_usize()];
            if at_anchor(buf, a, len, kind, eof, on, from, &mut memo, out).is_err() {
                undecided = undecided.min(a);
            }
        }
        undecided
    }
}

/// Runs every anchor that starts at `x` (for the naive reference): the same parse as the
/// automaton's matches get. Returns `Err` when undecided (only without `eof`).
pub(crate) fn at_position(buf: &[u8], x: usize, eof: bool, on: &On, out: &mut Vec<Cand>) -> Result<(), ()> {
    let mut r = Ok(());
    for (s, kind) in anchors() {
        let (s, kind) = (s.as_bytes(), *kind);
        if anchor_at(&buf[x..], s, kind)
            && at_anchor(buf, x, s.len(), kind, eof, on, 0, &mut Memo::default(), out).is_err()
        {
            r = Err(());
        }
    }
    r
}

/// Undecided: the parse ran into the end of a buffer that is not the end of the input.
struct Undecided;

/// Parses the anchor `buf[a..a + len]` and pushes its candidates that start at or after
/// `from`.
#[allow(clippy::too_many_arguments)]
fn at_anchor(
    buf: &[u8],
    a: usize,
    len: usize,
    kind: Anchor,
    eof: bool,
    on_: &On,
    from: usize,
    memo: &mut Memo,
    out: &mut Vec<Cand>,
) -> Result<(), ()> {
    let mut push = |c: Cand| {
        if c.start >= from && c.end > c.start + c.keep {
            out.push(c);
        }
    };
    let r = match kind {
        Anchor::Key
            if on(on_, Detector::SecretField)
                || on(on_, Detector::ConnectionString)
                || on(on_, Detector::AwsSecretKey) =>
        {
            key_value(buf, a, len, eof, on_, memo, &mut push)
        }
        Anchor::Authorization if on(on_, Detector::Authorization) => {
            authorization(buf, a, len, eof, memo, &mut push)
        }
        Anchor::AwsKeyId if on(on_, Detector::AwsAccessKey) => aws_key_id(buf, a, eof, &mut push),
        Anchor::Jwt if on(on_, Detector::Jwt) => jwt(buf, a, eof, memo, &mut push),
        Anchor::Pem if on(on_, Detector::PrivateKey) => pem(buf, a, eof, memo, &mut push),
        Anchor::Token(i) if on(on_, Detector::PrefixedToken) => token(buf, a, i, eof, memo, &mut push),
        _ => Ok(()),
    };
    r.map_err(|Undecided| ())
}

type Found<'a> = &'a mut dyn FnMut(Cand);

fn cand(start: usize, end: usize, keep: usize, det: Detector) -> Cand {
    Cand { start, end, keep, det, open: None }
}

/// A byte of a key in text.
#[inline]
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// A byte of a token (base64url, and `.` for SendGrid).
#[inline]
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

/// Whether a token may start at `i`: not glued to a letter, digit or token byte before it
/// (a JSON escape before it counts as a boundary).
fn token_start(buf: &[u8], i: usize) -> bool {
    i == 0 || !(is_token_byte(buf[i - 1]) || buf[i - 1] == b'.') || after_escape(buf, i)
}

/// The end of the run of `ok` bytes from `i`, at most `max` bytes; `Err` when it reaches the
/// end of a non-final buffer before `max`.
fn run(buf: &[u8], i: usize, max: usize, eof: bool, ok: impl Fn(u8) -> bool) -> Result<usize, Undecided> {
    let lim = (i + max).min(buf.len());
    let mut j = i;
    while j < lim && ok(buf[j]) {
        j += 1;
    }
    if j == buf.len() && j < i + max && !eof {
        return Err(Undecided);
    }
    Ok(j)
}

/// Needs `buf[i]` (or the input ends): `Err` when `i` is past a non-final buffer.
fn need(buf: &[u8], i: usize, eof: bool) -> Result<Option<u8>, Undecided> {
    match buf.get(i) {
        Some(&b) => Ok(Some(b)),
        None if eof => Ok(None),
        None => Err(Undecided),
    }
}

/// Whether `buf[i..]` starts with `s` ignoring ASCII case; `Err` when `buf` ends before that
/// can be told.
fn starts_with_ci(buf: &[u8], i: usize, s: &[u8], eof: bool) -> Result<bool, Undecided> {
    let have = buf.len().saturating_sub(i).min(s.len());
    if !buf[i.min(buf.len())..i.min(buf.len()) + have].eq_ignore_ascii_case(&s[..have]) {
        return Ok(false);
    }
    if have < s.len() {
        return if eof { Ok(false) } else { Err(Undecided) };
    }
    Ok(true)
}

/// Skips an optional quote (`"`, `'`, or JSON-escaped `\"`) at `i`; returns the position
/// after it and the quote (`0`: none, `b'\\'`: an escaped `"`).
fn quote_at(buf: &[u8], i: usize, eof: bool) -> Result<(usize, u8), Undecided> {
    match need(buf, i, eof)? {
        Some(q @ (b'"' | b'\'')) => Ok((i + 1, q)),
        Some(b'\\') => match need(buf, i + 1, eof)? {
            Some(b'"') => Ok((i + 2, b'\\')),
            _ => Ok((i, 0)),
        },
        _ => Ok((i, 0)),
    }
}

/// Skips at most 4 spaces or tabs.
fn spaces(buf: &[u8], mut i: usize, eof: bool) -> Result<usize, Undecided> {
    for _ in 0..4 {
        match need(buf, i, eof)? {
            Some(b' ' | b'\t') => i += 1,
            _ => break,
        }
    }
    Ok(i)
}

/// After a key ending at `ke`: quote, spaces, `=` or `:`, spaces, quote. Returns the value
/// start and its opening quote (see [`quote_at`]), or `None` when no separator follows.
fn separator(buf: &[u8], ke: usize, eof: bool) -> Result<Option<(usize, u8)>, Undecided> {
    let (i, _) = quote_at(buf, ke, eof)?;
    let i = spaces(buf, i, eof)?;
    match need(buf, i, eof)? {
        Some(b'=' | b':') => {}
        _ => return Ok(None),
    }
    // `==`, `=>` (Ruby hashes are fine, comparisons are not), `::` (a path) are no separator.
    let mut i = i + 1;
    match need(buf, i, eof)? {
        Some(b'=' | b':') => return Ok(None),
        Some(b'>') => i += 1,
        _ => {}
    }
    let i = spaces(buf, i, eof)?;
    Ok(Some(quote_at(buf, i, eof)?))
}

/// Bytes that end an unquoted value (as a URL credential value ends, so the two detectors
/// agree on a `?password=` value).
#[inline]
fn ends_value(b: u8) -> bool {
    super::url_credentials::ends_value(b)
}

/// The end of a value starting at `v` with opening quote `q`: the closing quote (a `\"` inside
/// `"…"` does not close it), else [`ends_value`] (or, in a connection string, `;` and control
/// bytes only, without the spaces before it). A line break always ends it; its length does not.
/// When `buf` is not the end of the input and ends inside a value of at least [`MAX_VALUE`]
/// bytes, returns the bytes of it seen and the [`Tail`] that finds the rest (a shorter one is
/// undecided).
fn value_end(
    buf: &[u8],
    v: usize,
    q: u8,
    conn: bool,
    eof: bool,
    memo: &mut Memo,
) -> Result<(usize, Option<Tail>), Undecided> {
    let kind = match q {
        b'"' => TailKind::DoubleQuoted,
        b'\'' => TailKind::SingleQuoted,
        b'\\' => TailKind::EscapedQuoted,
        _ if conn => TailKind::Conn,
        _ => TailKind::Value,
    };
    match memo.read(buf, v, Tail::new(kind), eof) {
        (e, None) => Ok((e, None)),
        (e, Some(t)) if e - v >= MAX_VALUE => Ok((e, Some(t))),
        (_, Some(_)) => Err(Undecided),
    }
}

/// A credential `buf[s..e]` found by a bounded parse that stopped at `e` before its
/// delimiter: it goes on with `tail` to the delimiter, or is open when `buf` ends first.
#[allow(clippy::too_many_arguments)]
fn extended(
    buf: &[u8],
    s: usize,
    e: usize,
    keep: usize,
    det: Detector,
    tail: Tail,
    eof: bool,
    memo: &mut Memo,
) -> Cand {
    let (end, open) = memo.read(buf, e, tail, eof);
    Cand { start: s, end, keep, det, open }
}

/// Values that hold no secret: empty, booleans, null, and what a mask already made.
pub fn is_non_secret_value(v: &[u8]) -> bool {
    let t = v.trim_ascii();
    if t.is_empty() || t.iter().all(|&b| b == b'*' || b == b'x' || b == b'X') && t.len() >= 3 {
        return true;
    }
    if t.iter().all(|&b| b == b'*') {
        return true;
    }
    for w in [
        "true",
        "false",
        "null",
        "none",
        "nil",
        "undefined",
        "<redacted>",
        "[redacted]",
        "redacted",
        "[filtered]",
    ] {
        if t.eq_ignore_ascii_case(w.as_bytes()) {
            return true;
        }
    }
    // An hmac token of this engine: `[name:8 hex]`.
    t.len() > 11
        && t[0] == b'['
        && t[t.len() - 1] == b']'
        && t[t.len() - 10] == b':'
        && t[t.len() - 9..t.len() - 1].iter().all(u8::is_ascii_hexdigit)
}

/// What a key names, from its words (split as [`super::keys`] splits them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKey {
    /// Not a secret.
    None,
    /// A password, secret, API key or token.
    Secret,
    /// A password or key that is a connection string field (`Password`, `Pwd`, `AccountKey`).
    Password,
    /// An AWS secret access key.
    AwsSecret,
    /// An `Authorization` header.
    Authorization,
}

/// Qualifiers that make `token` a credential (`access_token`, `authToken`); a bare `token`
/// key counts too, while `next_token`, `page_token` and `token_count` do not.
const TOKEN_QUALIFIERS: &[&str] = &[
    "access", "refresh", "auth", "id", "bearer", "session", "api", "oauth", "secret", "security", "csrf",
    "xsrf", "personal", "private", "github", "slack", "bot",
];

/// What `key` names (see the module documentation): decided by its last words.
pub fn classify_key(key: &[u8]) -> SecretKey {
    let mut words: [[u8; 32]; 4] = [[0; 32]; 4];
    let mut lens = [0usize; 4];
    let mut count = 0usize;
    let mut has_secret = false;
    let mut has_aws = false;
    let mut has_access = false;
    super::keys::for_each_word(key, |w| {
        has_secret |= w == b"secret";
        has_aws |= w == b"aws";
        has_access |= w == b"access";
        words.rotate_left(1);
        lens.rotate_left(1);
        let n = w.len().min(32);
        words[3][..n].copy_from_slice(&w[..n]);
        lens[3] = n;
        count += 1;
    });
    let word =
        |back: usize| -> &[u8] { if back < count.min(4) { &words[3 - back][..lens[3 - back]] } else { b"" } };
    let last = word(0);
    let prev = word(1);
    let is = |w: &[u8], list: &[&str]| list.iter().any(|x| x.as_bytes() == w);
    let class = by_last_words(last, prev, word(2), count, has_secret, has_aws, has_access, is);
    if class != SecretKey::None {
        return class;
    }
    // Mixed case splits a word at its capitals (`PassWord`, `PASSword`, `pAssword`): the last
    // two to four pieces joined may be one secret word. `passWordless` joins to no word.
    let mut joined = Vec::with_capacity(64);
    for k in 2..=count.min(4) {
        joined.clear();
        for back in (0..k).rev() {
            joined.extend_from_slice(word(back));
        }
        let class = match joined.as_slice() {
            b"token" if k == count => SecretKey::Secret,
            b"token" => SecretKey::None,
            w => by_last_words(w, b"", b"", 1, false, false, false, is),
        };
        if class != SecretKey::None {
            return class;
        }
    }
    SecretKey::None
}

/// [`classify_key`] from the last word, the two before it and what the key holds.
#[allow(clippy::too_many_arguments)]
fn by_last_words(
    last: &[u8],
    prev: &[u8],
    prev2: &[u8],
    count: usize,
    has_secret: bool,
    has_aws: bool,
    has_access: bool,
    is: impl Fn(&[u8], &[&str]) -> bool,
) -> SecretKey {
    match last {
        b"authorization" => SecretKey::Authorization,
        b"password" | b"passwd" | b"pwd" | b"accountkey" | b"sharedaccesskey" => SecretKey::Password,
        b"passphrase" | b"secret" | b"apikey" | b"secretkey" | b"privatekey" | b"clientsecret" => {
            SecretKey::Secret
        }
        b"secretaccesskey" => SecretKey::AwsSecret,
        b"key" if has_secret && (has_aws || has_access) => SecretKey::AwsSecret,
        b"key" if is(prev, &["api", "secret", "private", "account", "signing", "encryption", "master"]) => {
            if prev == b"account" {
                SecretKey::Password
            } else {
                SecretKey::Secret
            }
        }
        b"key" if prev == b"access" && prev2 == b"shared" => SecretKey::Password,
        b"token" if count == 1 || is(prev, TOKEN_QUALIFIERS) => SecretKey::Secret,
        b"accesstoken" | b"refreshtoken" | b"authtoken" | b"idtoken" | b"apitoken" | b"sessiontoken" => {
            SecretKey::Secret
        }
        _ => SecretKey::None,
    }
}

/// Whether a structured field's key names a credential: its whole value is then masked (see
/// [`super::Redactor::redact_keyed`]). Returns the detector that counts it.
pub fn keyed_detector(key: &str, value: &str) -> Option<Detector> {
    match classify_key(key.as_bytes()) {
        SecretKey::None | SecretKey::Authorization => None,
        SecretKey::Password | SecretKey::Secret => Some(Detector::SecretField),
        SecretKey::AwsSecret => Some(if is_aws_secret(value.trim().as_bytes()) {
            Detector::AwsSecretKey
        } else {
            Detector::SecretField
        }),
    }
}

fn is_aws_secret(v: &[u8]) -> bool {
    v.len() == 40 && v.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+')
}

/// `key=value` around a key word anchor at `a`.
fn key_value(
    buf: &[u8],
    a: usize,
    len: usize,
    eof: bool,
    on_: &On,
    memo: &mut Memo,
    push: Found<'_>,
) -> Result<(), Undecided> {
    // The whole key around the anchor, at most MAX_KEY bytes.
    let lo = a.saturating_sub(MAX_KEY);
    let mut ks = a;
    while ks > lo && is_key_byte(buf[ks - 1]) {
        ks -= 1;
    }
    if ks == lo && ks > 0 && is_key_byte(buf[ks - 1]) {
        return Ok(());
    }
    // `\npassword=`: the escape is not part of the key.
    if ks > 0 && buf[ks - 1] == b'\\' && after_escape(buf, ks + 1) {
        ks += 1;
        if ks > a {
            // `\token`: the anchor's first letter is the escape's (`\t` + `oken`).
            return Ok(());
        }
    }
    let ke = run(buf, a + len, MAX_KEY, eof, is_key_byte)?;
    if ke - ks > MAX_KEY {
        return Ok(());
    }
    // The anchor must be the first anchor of its key that reaches here: a key holding two
    // anchors (`secret_token`) is parsed once, from its first.
    let key = &buf[ks..ke];
    if first_anchor_in(key) != Some(a - ks) {
        return Ok(());
    }
    let class = classify_key(key);
    if class == SecretKey::None || class == SecretKey::Authorization {
        return Ok(());
    }
    let Some((v, q)) = separator(buf, ke, eof)? else { return Ok(()) };
    // Connection strings: the key follows `;` (`Server=x;Password=…`), or the value ends at `;`,
    // or earlier on the line a DSN names its host or database.
    let before = {
        let mut i = ks;
        while i > 0 && buf[i - 1] == b' ' {
            i -= 1;
        }
        if i > 0 { buf[i - 1] } else { b'\n' }
    };
    let after_semicolon = class == SecretKey::Password && before == b';';
    let (end, open) = value_end(buf, v, q, after_semicolon, eof, memo)?;
    let value = &buf[v..end];
    // A long value is a secret whatever it holds, and what follows its end does not decide
    // it (a stream has not seen that yet).
    let long = open.is_some() || end - v >= MAX_VALUE;
    if !long && is_non_secret_value(value) {
        return Ok(());
    }
    // `PWD=/home/app`: the shell's working directory.
    if key.eq_ignore_ascii_case(b"pwd") && matches!(value.first(), Some(b'/' | b'~')) {
        return Ok(());
    }
    let det = match class {
        SecretKey::AwsSecret if is_aws_secret(value) => Detector::AwsSecretKey,
        SecretKey::Password
            if after_semicolon
                || (!long && buf.get(end) == Some(&b';'))
                || (ks > 0 && buf[ks - 1] == b' ' && dsn_before(buf, ks)) =>
        {
            Detector::ConnectionString
        }
        _ => Detector::SecretField,
    };
    let det = if on(on_, det) {
        det
    } else if det != Detector::SecretField && on(on_, Detector::SecretField) {
        Detector::SecretField
    } else {
        return Ok(());
    };
    push(Cand { start: v, end, keep: 0, det, open });
    Ok(())
}

/// The offset of the first key anchor inside `key`.
fn first_anchor_in(key: &[u8]) -> Option<usize> {
    (0..key.len()).find(|&i| {
        anchors().iter().any(|(k, kind)| *kind == Anchor::Key && anchor_at(&key[i..], k.as_bytes(), *kind))
    })
}

/// Whether the [`DSN_LOOKBACK`] bytes before `ks`, on the same line, name a DSN field.
fn dsn_before(buf: &[u8], ks: usize) -> bool {
    let lo = ks.saturating_sub(DSN_LOOKBACK);
    let mut s = ks;
    while s > lo && buf[s - 1] != b'\n' {
        s -= 1;
    }
    let w = &buf[s..ks];
    ["host=", "hostaddr=", "dbname=", "user="]
        .iter()
        .any(|k| memchr::memmem::find_iter(w, k.as_bytes()).any(|p| p == 0 || w[p - 1] == b' '))
}

/// An `Authorization` value after the anchor at `a`.
fn authorization(
    buf: &[u8],
    a: usize,
    len: usize,
    eof: bool,
    memo: &mut Memo,
    push: Found<'_>,
) -> Result<(), Undecided> {
    if !(a == 0 || !is_alnum(buf[a - 1]) || after_escape(buf, a)) {
        return Ok(());
    }
    let Some((v, q)) = separator(buf, a + len, eof)? else { return Ok(()) };
    // Quoted: to the closing quote; unquoted: to the end of the line (Digest parameters hold
    // quotes and commas).
    let (end, long) = if q == 0 {
        let end = run(buf, v, MAX_VALUE, eof, |b| b >= b' ' && b != 0x7F)?;
        (end, end == v + MAX_VALUE)
    } else {
        let (end, open) = value_end(buf, v, q, false, eof, memo)?;
        (end, open.is_some() || end - v >= MAX_VALUE)
    };
    auth_value(buf, v, end, long.then_some(eof), memo, push);
    Ok(())
}

/// The credentials of the `Authorization` value `buf[v..end]`. `long` (with whether `buf`
/// ends the input) when `end` is where a bounded read stopped, not the value's end: a
/// credential that reaches it goes on to its own delimiter.
fn auth_value(buf: &[u8], v: usize, end: usize, long: Option<bool>, memo: &mut Memo, push: Found<'_>) {
    let value = &buf[v..end];
    if is_non_secret_value(value) {
        return;
    }
    let scheme_len = value.iter().take_while(|&&b| b.is_ascii_alphanumeric() || b == b'-').count();
    let after_scheme = value.get(scheme_len).copied();
    if scheme_len == 0 || after_scheme != Some(b' ') {
        // No scheme: the value is the credential.
        let e = v + value.iter().position(|&b| ends_value(b)).unwrap_or(value.len());
        push(reaching(buf, v, e, end, long, Tail::new(TailKind::Value), memo));
        return;
    }
    let scheme = &value[..scheme_len];
    let rest = v + scheme_len + 1;
    if scheme.eq_ignore_ascii_case(b"digest") {
        params(buf, rest, end, long, &[b"response"], memo, push);
    } else if scheme.len() > 4 && scheme[..4].eq_ignore_ascii_case(b"aws4") {
        params(buf, rest, end, long, &[b"signature"], memo, push);
    } else {
        // Basic, Bearer, Token, Negotiate, …: one credential after the scheme.
        let mut s = rest;
        while s < end && buf[s] == b' ' {
            s += 1;
        }
        let e = s + buf[s..end].iter().position(|&b| ends_value(b)).unwrap_or(end - s);
        if !is_non_secret_value(&buf[s..e]) {
            push(reaching(buf, s, e, end, long, Tail::new(TailKind::Value), memo));
        }
    }
}

/// The `Authorization` credential `buf[s..e]`, gone on with `tail` when it reaches the end of
/// a long value read only to `end` (see [`auth_value`]).
fn reaching(
    buf: &[u8],
    s: usize,
    e: usize,
    end: usize,
    long: Option<bool>,
    tail: Tail,
    memo: &mut Memo,
) -> Cand {
    match long {
        Some(eof) if e == end => extended(buf, s, e, 0, Detector::Authorization, tail, eof, memo),
        _ => cand(s, e, 0, Detector::Authorization),
    }
}

/// The credentials in a structured field whose key names an `Authorization` header
/// (`http.request.header.authorization`): the value is the header value (`Bearer abc`).
pub(crate) fn keyed_authorization(key: &str, value: &[u8], out: &mut Vec<Cand>) {
    if classify_key(key.as_bytes()) == SecretKey::Authorization {
        // The value is the header value alone: it runs to its end.
        auth_value(value, 0, value.len(), None, &mut Memo::default(), &mut |c| out.push(c));
    }
}

/// The values of the `name=value` parameters in `buf[s..e]` whose name is in `names`
/// (Digest `response="…"`, SigV4 `Signature=…`).
fn params(
    buf: &[u8],
    s: usize,
    e: usize,
    long: Option<bool>,
    names: &[&[u8]],
    memo: &mut Memo,
    push: Found<'_>,
) {
    let mut i = s;
    while i < e {
        while i < e && matches!(buf[i], b' ' | b',') {
            i += 1;
        }
        let ns = i;
        while i < e && buf[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let name = &buf[ns..i];
        if i < e && buf[i] == b'=' {
            i += 1;
            let quoted = i < e && buf[i] == b'"';
            let vs = if quoted { i + 1 } else { i };
            let mut ve = vs;
            while ve < e && !(if quoted { buf[ve] == b'"' } else { matches!(buf[ve], b',' | b' ') }) {
                ve += 1;
            }
            if names.iter().any(|n| name.eq_ignore_ascii_case(n)) && ve > vs {
                let tail = Tail::new(if quoted { TailKind::DoubleQuoted } else { TailKind::Value });
                push(reaching(buf, vs, ve, e, long, tail, memo));
            }
            i = if quoted && ve < e { ve + 1 } else { ve };
        } else {
            // Not a parameter: skip to the next separator.
            while i < e && !matches!(buf[i], b' ' | b',') {
                i += 1;
            }
        }
    }
}

/// `AKIA`/`ASIA` and 16 capitals or digits.
fn aws_key_id(buf: &[u8], a: usize, eof: bool, push: Found<'_>) -> Result<(), Undecided> {
    if !(buf[a..a + 4] == *b"AKIA" || buf[a..a + 4] == *b"ASIA") || !token_start(buf, a) {
        return Ok(());
    }
    let e = run(buf, a + 4, 17, eof, |b| b.is_ascii_uppercase() || b.is_ascii_digit())?;
    if e - a != 20 {
        return Ok(());
    }
    if need(buf, e, eof)?.is_some_and(is_alnum) {
        return Ok(());
    }
    push(cand(a, e, 4, Detector::AwsAccessKey));
    Ok(())
}

/// A JSON Web Token: `eyJ` header, `.`, payload, and an optional `.` signature (and the two
/// more segments of an encrypted token).
fn jwt(buf: &[u8], a: usize, eof: bool, memo: &mut Memo, push: Found<'_>) -> Result<(), Undecided> {
    if &buf[a..a + 3] != b"eyJ" || !token_start(buf, a) {
        return Ok(());
    }
    let h = run(buf, a, MAX_VALUE, eof, is_token_byte)?;
    if h - a < 10 {
        return Ok(());
    }
    if h - a == MAX_VALUE {
        // A long header: a token whatever follows, to its end.
        push(extended(buf, a, h, 0, Detector::Jwt, Tail::jwt(4), eof, memo));
        return Ok(());
    }
    if need(buf, h, eof)? != Some(b'.') {
        return Ok(());
    }
    let p = run(buf, h + 1, 10, eof, is_token_byte)?;
    if p - (h + 1) < 10 {
        return Ok(());
    }
    // The payload and up to three more segments (an encrypted token has five); a trailing `.`
    // with no segment after it (`alg: none`) stays outside the match.
    push(extended(buf, a, h + 1, 0, Detector::Jwt, Tail::jwt(3), eof, memo));
    Ok(())
}

/// A PEM private key block: the body between `-----BEGIN … PRIVATE KEY-----` and `-----END`.
fn pem(buf: &[u8], a: usize, eof: bool, memo: &mut Memo, push: Found<'_>) -> Result<(), Undecided> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    if &buf[a..a + BEGIN.len()] != BEGIN {
        return Ok(());
    }
    let l = a + BEGIN.len();
    let label_end = run(buf, l, 48, eof, |b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ')?;
    let label = &buf[l..label_end];
    if !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK")) {
        return Ok(());
    }
    if !starts_with_ci(buf, label_end, b"-----", eof)? {
        return Ok(());
    }
    let body = label_end + 5;
    // The marker may start just before the limit.
    const END: &[u8] = b"-----END";
    let window = (body + MAX_PEM + END.len() - 1).min(buf.len());
    let (end, long) = match memchr::memmem::find(&buf[body..window], END) {
        Some(p) if p < MAX_PEM => (body + p, false),
        _ if window == body + MAX_PEM + END.len() - 1 => (body + MAX_PEM, true),
        _ if eof => (buf.len().min(body + MAX_PEM), buf.len() >= body + MAX_PEM),
        _ => return Err(Undecided),
    };
    // The line breaks (or their JSON escapes) around the body stay, so the markers keep their
    // own lines.
    let (mut s, mut e) = (body, end);
    loop {
        if s < e && matches!(buf[s], b'\r' | b'\n' | b' ') {
            s += 1;
        } else if e - s >= 2 && buf[s] == b'\\' && matches!(buf[s + 1], b'n' | b'r') {
            s += 2;
        } else {
            break;
        }
    }
    if long {
        // Past the limit the body goes on over base64 and line breaks (see [`MAX_PEM`]),
        // from before the line breaks that end the part read.
        let from = (e - super::tail::pem_trailer(&buf[s..e])).max(s);
        let c = extended(buf, s, from, 0, Detector::PrivateKey, Tail::new(TailKind::Pem), eof, memo);
        if c.end > c.start {
            push(c);
        }
        return Ok(());
    }
    loop {
        if e > s && matches!(buf[e - 1], b'\r' | b'\n' | b' ') {
            e -= 1;
        } else if e - s >= 2 && buf[e - 2] == b'\\' && matches!(buf[e - 1], b'n' | b'r') {
            e -= 2;
        } else {
            break;
        }
    }
    push(cand(s, e, 0, Detector::PrivateKey));
    Ok(())
}

/// A token with the fixed prefix `TOKEN_PREFIXES[i]`.
fn token(
    buf: &[u8],
    a: usize,
    i: usize,
    eof: bool,
    memo: &mut Memo,
    push: Found<'_>,
) -> Result<(), Undecided> {
    let (prefix, min) = TOKEN_PREFIXES[i];
    let p = prefix.as_bytes();
    if &buf[a..a + p.len()] != p || !token_start(buf, a) {
        return Ok(());
    }
    let sendgrid = prefix == "SG.";
    let e = run(buf, a + p.len(), MAX_VALUE, eof, |b| is_token_byte(b) || (sendgrid && b == b'.'))?;
    if e - (a + p.len()) < min {
        return Ok(());
    }
    if e == a + p.len() + MAX_VALUE {
        let tail = Tail::new(TailKind::Token { dot: sendgrid });
        push(extended(buf, a, e, p.len(), Detector::PrefixedToken, tail, eof, memo));
    } else {
        push(cand(a, e, p.len(), Detector::PrefixedToken));
    }
    Ok(())
}

/// Where an unterminated PEM private key block starts in `text` (a `-----BEGIN … PRIVATE
/// KEY-----` marker with no `-----END` after it): a line source splits a block into records,
/// and the records after this one are its body.
pub fn unterminated_pem(text: &[u8]) -> bool {
    let Some(b) = memchr::memmem::rfind(text, b"PRIVATE KEY") else { return false };
    let Some(begin) = memchr::memmem::rfind(&text[..b], b"-----BEGIN ") else { return false };
    memchr::memmem::find(&text[begin..], b"-----END").is_none()
}

/// Whether `text` holds the `-----END` marker of a PEM block; returns its offset.
pub fn pem_end(text: &[u8]) -> Option<usize> {
    memchr::memmem::find(text, b"-----END")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::redact::{Counts, Mask, Options, Redactor};

    fn red(s: &str) -> String {
        let r = Redactor::with_defaults();
        let mut c = Counts::default();
        r.redact_str(s, &mut c).into_owned()
    }

    fn det(s: &str) -> Vec<Detector> {
        let r = Redactor::with_defaults();
        let mut c = Counts::default();
        r.redact_str(s, &mut c);
        c.iter().map(|(d, _)| d).collect()
    }

    #[test]
    fn key_classes() {
        for k in [
            "password",
            "db_password",
            "newPassword",
            "PASSWD",
            "client-secret",
            "api_key",
            "x-api-key",
            "apiKey",
            "access_token",
            "token",
            "authToken",
            "secret",
            "SecretKey",
            "private_key",
        ] {
            assert_ne!(classify_key(k.as_bytes()), SecretKey::None, "{k}");
        }
        for k in [
            "password_reset",
            "password_length",
            "passwords",
            "secret_name",
            "token_count",
            "next_token",
            "page_token",
            "tokens",
            "secretary",
            "keyword",
            "api_version",
            "pwd_dir",
        ] {
            assert_eq!(classify_key(k.as_bytes()), SecretKey::None, "{k}");
        }
        assert_eq!(classify_key(b"aws_secret_access_key"), SecretKey::AwsSecret);
        assert_eq!(classify_key(b"SecretAccessKey"), SecretKey::AwsSecret);
        assert_eq!(classify_key(b"Proxy-Authorization"), SecretKey::Authorization);
    }

    #[test]
    fn key_values_in_text() {
        assert_eq!(red("login user=bob password=hunter2 ok"), "login user=bob password=**** ok");
        assert_eq!(red(r#"{"user":"bob","password":"p a\"ss"}"#), r#"{"user":"bob","password":"****"}"#);
        assert_eq!(red(r#"{\"db_password\":\"hunter2\"}"#), r#"{\"db_password\":\"****\"}"#);
        assert_eq!(red("client_secret: abc123def"), "client_secret: ****");
        assert_eq!(red("X-Api-Key: 0123456789abcdef"), "X-Api-Key: ****");
        assert_eq!(red("secret => 's3'"), "secret => '****'");
        for keep in [
            "password_reset=true",
            "password=",
            "password=true",
            "password: null",
            "secret_name=prod/db",
            "passwords=3",
            "token_count=5",
            "next_token=abc",
            "PWD=/home/app",
            "password=****",
            "password == other",
            "the password is wrong",
            "password=[secret_field:0a1b2c3d]",
        ] {
            assert_eq!(red(keep), keep);
        }
    }

    /// Issue 12: key names in any ASCII case, and their look-alikes in any case.
    #[test]
    fn mixed_case_key_names() {
        for (line, want) in [
            ("PassWord=hunter2 ok", "PassWord=**** ok"),
            ("PASSword=hunter2", "PASSword=****"),
            ("pAssword: hunter2", "pAssword: ****"),
            ("dbPassWord=hunter2", "dbPassWord=****"),
            ("API_KEY=0123456789abcdef", "API_KEY=****"),
            ("Api_Key: 0123456789abcdef", "Api_Key: ****"),
            ("Secret-Key: abc123def", "Secret-Key: ****"),
            ("SECRET_KEY=abc123def", "SECRET_KEY=****"),
            ("ClientSECRET=abc123def", "ClientSECRET=****"),
            ("{\"AccessTOKEN\":\"abc123\"}", "{\"AccessTOKEN\":\"****\"}"),
            ("ToKen=abc123", "ToKen=****"),
            ("AUTHORIZATION: Bearer abc.def", "AUTHORIZATION: Bearer ****"),
            ("AuthoriZation: Basic dXNlcjpwYXNz", "AuthoriZation: Basic ****"),
        ] {
            assert_eq!(red(line), want, "{line}");
        }
        for keep in [
            "passwordless=true",
            "PasswordLess=enabled",
            "passWordless=on",
            "secretary=alice",
            "SECRETARY=alice",
            "Secretary: alice",
            "keyboard=us",
            "KeyBoard=us",
            "PASSWORD_RESET=done",
            "nextToken=abc",
            "TOKEN_COUNT=5",
            "Token-Count: 5",
            "AUTHORIZATION_CODE=abc",
            "asia trip",
            "Akia=1",
        ] {
            assert_eq!(red(keep), keep, "{keep}");
        }
        for k in ["PassWord", "PASSword", "API_KEY", "Secret-Key", "ApiKey", "Pass_Word"] {
            assert_ne!(classify_key(k.as_bytes()), SecretKey::None, "{k}");
        }
        for k in ["passWordless", "SecretaryName", "KeyBoard", "TokenCount", "PageToken"] {
            assert_eq!(classify_key(k.as_bytes()), SecretKey::None, "{k}");
        }
    }

    #[test]
    fn connection_strings() {
        assert_eq!(
            red("Server=db;Database=x;User Id=sa;Password=my pass;Encrypt=true"),
            "Server=db;Database=x;User Id=sa;Password=****;Encrypt=true"
        );
        assert_eq!(
            red("jdbc:sqlserver://db:1433;user=sa;password=Pa55w0rd;encrypt=true"),
            "jdbc:sqlserver://db:1433;user=sa;password=****;encrypt=true"
        );
        assert_eq!(
            red("host=db port=5432 user=app password=s3cr3t dbname=x"),
            "host=db port=5432 user=app password=**** dbname=x"
        );
        assert_eq!(
            red(
                "DefaultEndpointsProtocol=https;AccountName=acc;AccountKey=abc+def/ghi==;EndpointSuffix=core.windows.net"
            ),
            "DefaultEndpointsProtocol=https;AccountName=acc;AccountKey=****;EndpointSuffix=core.windows.net"
        );
        assert_eq!(det("Server=db;Password=x1;"), [Detector::ConnectionString]);
        assert_eq!(det("host=db user=app password=s3cr3t"), [Detector::ConnectionString]);
        assert_eq!(det("login password=s3cr3t"), [Detector::SecretField]);
    }

    #[test]
    fn authorization_headers() {
        assert_eq!(red("Authorization: Bearer abc.def-ghi"), "Authorization: Bearer ****");
        assert_eq!(red("authorization: Basic dXNlcjpwYXNz"), "authorization: Basic ****");
        assert_eq!(
            red(r#"{"Authorization":"Bearer eyJ0eXAiOiJKV1Qi"}"#),
            r#"{"Authorization":"Bearer ****"}"#
        );
        assert_eq!(red("Proxy-Authorization: Negotiate YIIx"), "Proxy-Authorization: Negotiate ****");
        assert_eq!(red("Authorization: abc123"), "Authorization: ****");
        assert_eq!(
            red(
                r#"Authorization: Digest username="Mufasa", realm="x", nonce="dcd98b", uri="/d", response="6629fae49393a05397450978507c4ef1""#
            ),
            r#"Authorization: Digest username="Mufasa", realm="x", nonce="dcd98b", uri="/d", response="****""#
        );
        assert_eq!(
            red(
                "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            ),
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature=****"
        );
        for keep in ["authorization_code=abc", "Authorization: ****", "no authorization needed"] {
            assert_eq!(red(keep), keep);
        }
    }

    #[test]
    fn aws_keys() {
        assert_eq!(red("key AKIAIOSFODNN7EXAMPLE used"), "key AKIA**** used");
        assert_eq!(red("\"ASIAY34FZKBOKMUTVV7A\""), "\"ASIA****\"");
        assert_eq!(
            red("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "aws_secret_access_key = ****"
        );
        assert_eq!(
            det(r#"{"SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#),
            [Detector::AwsSecretKey]
        );
        for keep in [
            "AKIAIOSFODNN7EXAMPL",
            "XAKIAIOSFODNN7EXAMPLE",
            "AKIAIOSFODNN7EXAMPLEX",
            "ASIAN food",
            "sha1=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ] {
            assert_eq!(red(keep), keep);
        }
    }

    #[test]
    fn pem_blocks() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nq2Zs+zV/abc==\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(
            red(&format!("key:\n{pem}ok")),
            "key:\n-----BEGIN RSA PRIVATE KEY-----\n****\n-----END RSA PRIVATE KEY-----\nok"
        );
        let json =
            r#"{"k":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0B\n-----END PRIVATE KEY-----\n"}"#;
        assert_eq!(red(json), r#"{"k":"-----BEGIN PRIVATE KEY-----\n****\n-----END PRIVATE KEY-----\n"}"#);
        assert_eq!(
            red("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\n****"
        );
        let cert = "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n-----END CERTIFICATE-----";
        assert_eq!(red(cert), cert);
        assert!(unterminated_pem(b"-----BEGIN EC PRIVATE KEY-----"));
        assert!(!unterminated_pem(b"-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----"));
    }

    #[test]
    fn jwts_and_prefixed_tokens() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(red(&format!("jwt={jwt}&x=1")), "jwt=****&x=1");
        assert_eq!(red(&format!("cookie: s={jwt};")), "cookie: s=****;");
        assert_eq!(red("t eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0In0. end"), "t ****. end");
        assert_eq!(red("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 pushed"), "ghp_**** pushed");
        assert_eq!(red("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"), "xoxb-****");
        assert_eq!(red("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc"), "stripe sk_live_****");
        assert_eq!(
            det("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUV"),
            [Detector::PrefixedToken]
        );
        for keep in [
            "eyJhbGciOiJIUzI1NiJ9",
            "ghp_short",
            "my_ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            "sk_live_",
            "xoxb-1",
            "task_live_12345678901234567890",
        ] {
            assert_eq!(red(keep), keep);
        }
    }

    /// Fragments full of credential near-misses.
    const FRAGMENTS: &[&str] = &[
        "password",
        "Password=",
        "=",
        ":",
        "\"",
        " ",
        ";",
        "Server=db;",
        "host=db ",
        "Authorization: ",
        "Bearer ",
        "Digest ",
        "response=\"",
        "AWS4-HMAC-SHA256 ",
        "Signature=",
        "AKIAIOSFODNN7EXAMPLE",
        "ASIA",
        "eyJhbGciOiJIUzI1NiJ9",
        ".",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
        "\n",
        "\\n",
        "MIIEow",
        "ghp_",
        "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "sk_live_",
        "abc",
        "secret",
        "_reset",
        "token",
        "x",
        "&",
        "?",
        "true",
        "****",
        "'",
        "\\\"",
        "\\",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key",
        "4111111111111111",
        "é",
        "PassWord",
        "pASS",
        "WORD",
        "AUTHORIZATION",
        "AuthoriZation: ",
        "less",
    ];

    fn input() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|v| v.concat().into_bytes())
    }

    fn streamed(r: &Arc<Redactor>, input: &[u8], cuts: &[usize]) -> (Vec<u8>, Counts) {
        let mut s = r.stream();
        let mut out = Vec::new();
        let mut prev = 0;
        for &c in cuts {
            let c = c.clamp(prev, input.len());
            s.push(&input[prev..c], &mut out);
            prev = c;
        }
        s.push(&input[prev..], &mut out);
        s.finish(&mut out);
        (out, s.counts())
    }

    fn whole(r: &Redactor, input: &[u8]) -> (Vec<u8>, Counts) {
        let mut c = Counts::default();
        (r.redact(input, &mut c).into_owned(), c)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
        ))]

        /// The automaton finds every anchor the naive walk finds, with the same result.
        #[test]
        fn engine_matches_naive(input in input(), mask in 0..3u8) {
            let opts = Options {
                mask: [Mask::Mask, Mask::Last4, Mask::Hmac][mask as usize],
                hmac_key: Some([3; 32]),
                ..Options::default()
            };
            let r = Redactor::new(&opts).unwrap();
            prop_assert_eq!(whole(&r, &input), crate::redact::naive::redact(&opts, &input));
        }

        /// Streaming output is the whole-input output for every single cut and byte by byte.
        #[test]
        fn every_cut(input in input(), hmac in any::<bool>()) {
            let mut opts = Options::default();
            if hmac {
                opts.mask = Mask::Hmac;
                opts.hmac_key = Some([5; 32]);
            }
            let r = Arc::new(Redactor::new(&opts).unwrap());
            let want = whole(&r, &input);
            for cut in 0..=input.len() {
                prop_assert_eq!(&streamed(&r, &input, &[cut]), &want, "cut at {}", cut);
            }
            let all: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(&streamed(&r, &input, &all), &want);
        }
    }

    #[test]
    fn long_pem_and_values_stream_identically() {
        let r = Arc::new(Redactor::with_defaults());
        let body: String = (0..200).map(|i| format!("MIIEowIBAAKCAQEA{i:048}\n")).collect();
        let input = format!(
            "a\n-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\nb password={} c\n",
            "p".repeat(5000)
        );
        let want = whole(&r, input.as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&want.0),
            "a\n-----BEGIN PRIVATE KEY-----\n****\n-----END PRIVATE KEY-----\nb password=**** c\n"
        );
        for step in [1, 7, 64, 1000, 4096] {
            let cuts: Vec<usize> = (step..input.len()).step_by(step).collect();
            assert_eq!(streamed(&r, input.as_bytes(), &cuts), want, "step {step}");
        }
    }

    #[test]
    fn hmac_tokens_name_the_detector() {
        let opts = Options { mask: Mask::Hmac, hmac_key: Some([1; 32]), ..Options::default() };
        let r = Redactor::new(&opts).unwrap();
        let mut c = Counts::default();
        let out = r.redact_str("password=a1 AKIAIOSFODNN7EXAMPLE", &mut c).into_owned();
        assert!(out.starts_with("password=[secret_field:") && out.contains(" AKIA[aws_access_key:"), "{out}");
        // Redacting the output again changes nothing.
        assert_eq!(r.redact_str(&out, &mut c), out);
    }

    #[test]
    fn keyed_values() {
        let r = Redactor::with_defaults();
        let mut c = Counts::default();
        assert_eq!(r.redact_keyed(Some("db.password"), "hunter2", &mut c), "****");
        assert_eq!(r.redact_keyed(Some("http.request.header.x-api-key"), "k-123", &mut c), "****");
        assert_eq!(
            r.redact_keyed(Some("aws_secret_access_key"), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", &mut c),
            "****"
        );
        assert_eq!(
            r.redact_keyed(Some("http.request.header.authorization"), "Bearer abc.def", &mut c),
            "Bearer ****"
        );
        assert_eq!(r.redact_keyed(Some("Authorization"), "abc123", &mut c), "****");
        assert_eq!(c.get(Detector::Authorization), 2);
        assert_eq!(r.redact_keyed(Some("password_reset"), "true", &mut c), "true");
        assert_eq!(r.redact_keyed(Some("password"), "", &mut c), "");
        assert_eq!(r.redact_keyed(Some("token_count"), "5", &mut c), "5");
        assert_eq!(c.get(Detector::SecretField), 2);
        assert_eq!(c.get(Detector::AwsSecretKey), 1);
    }

    #[test]
    fn detectors_switch_off_one_by_one() {
        let line = "password=a1 Authorization: Bearer t0k AKIAIOSFODNN7EXAMPLE";
        let opts = Options { detectors: vec![Detector::AwsAccessKey], ..Options::default() };
        let r = Redactor::new(&opts).unwrap();
        let mut c = Counts::default();
        assert_eq!(r.redact_str(line, &mut c), "password=a1 Authorization: Bearer t0k AKIA****");
    }
}
