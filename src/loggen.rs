//! A deterministic generator of realistic log lines with labelled secrets: the corpus that
//! redaction tests measure recall and false positives on, and that benchmarks feed through the
//! engine and the end-to-end pipeline.
//!
//! Lines average about 150 bytes and mix the shapes real services print: plain text with a
//! timestamp and level, `key=value`, JSON objects and HTTP access lines. Every line is full of
//! the look-alikes a redactor must leave alone (timestamps, epoch milliseconds, UUIDs, trace
//! ids, order numbers that fail Luhn, ports, IP addresses, ARNs, e-mail addresses, URLs without
//! credentials, versions, durations). At configurable rates a line also carries a secret: a
//! payment card number (in any grouping style), an IBAN, a keyword-anchored bank account
//! number, or a URL with credentials (user-info password or a credential query parameter).
//! [`LogGen::line`] returns each secret it placed, so a test can check that exactly those
//! strings disappear.
//!
//! The same seed gives the same corpus on every machine: the generator uses its own SplitMix64
//! rather than a `rand` algorithm that could change between releases.

use std::fmt::Write as _;

/// What kind of secret a line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    Card,
    Iban,
    BankAccount,
    UrlCredentials,
}

impl SecretKind {
    /// The detector name that should catch this kind of secret.
    pub fn detector(self) -> &'static str {
        match self {
            SecretKind::Card => "card",
            SecretKind::Iban => "iban",
            SecretKind::BankAccount => "bank_account",
            SecretKind::UrlCredentials => "url_credentials",
        }
    }
}

/// One secret placed in a line: its kind and the exact text that must not survive redaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub kind: SecretKind,
    pub value: String,
}

/// How often lines carry each kind of secret (probabilities per line, 0.0 to 1.0).
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub card: f64,
    pub iban: f64,
    pub bank_account: f64,
    pub url_credentials: f64,
}

impl Default for Rates {
    /// The mix of the benchmark: 1 line in 100 with a card number, 1 in 200 with a URL
    /// carrying credentials; IBANs and account numbers 1 in 500 each.
    fn default() -> Rates {
        Rates { card: 0.01, iban: 0.002, bank_account: 0.002, url_credentials: 0.005 }
    }
}

impl Rates {
    /// No secrets at all: only look-alikes.
    pub const NONE: Rates = Rates { card: 0.0, iban: 0.0, bank_account: 0.0, url_credentials: 0.0 };
}

/// The generator. See the module documentation.
#[derive(Debug, Clone)]
pub struct LogGen {
    state: u64,
    rates: Rates,
    /// Milliseconds since the epoch of the current line; advances a little per line.
    clock_ms: i64,
}

const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
const SERVICES: &[&str] = &["checkout", "billing", "api-gateway", "orders", "auth", "search", "ledger"];
const WORDS: &[&str] = &[
    "processed",
    "request",
    "completed",
    "retrying",
    "cache",
    "miss",
    "upstream",
    "timeout",
    "queued",
    "flushed",
    "batch",
    "worker",
    "connection",
    "pool",
    "handler",
    "scheduled",
    "renewed",
    "lease",
];
const PATHS: &[&str] = &["/api/v1/orders", "/api/v2/users", "/health", "/static/app.js", "/v1/payments"];
const HOSTS: &[&str] =
    &["api.example.com", "db.internal", "10.0.4.21", "cache-01.prod.local", "s3.amazonaws.com"];
const AGENTS: &[&str] = &["curl/8.4.0", "Mozilla/5.0", "okhttp/4.12.0", "python-requests/2.32.3"];
const EMAILS: &[&str] = &["alice@example.com", "ops+alerts@corp.example", "bob.smith@mail.example.org"];

impl LogGen {
    /// A generator with the default [`Rates`].
    pub fn new(seed: u64) -> LogGen {
        LogGen::with_rates(seed, Rates::default())
    }

    pub fn with_rates(seed: u64, rates: Rates) -> LogGen {
        LogGen { state: seed ^ 0x9E37_79B9_7F4A_7C15, rates, clock_ms: 1_795_000_000_000 }
    }

    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }

    fn pick_pair<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    fn hex(&mut self, out: &mut String, n: usize) {
        for _ in 0..n {
            out.push(b"0123456789abcdef"[self.below(16) as usize] as char);
        }
    }

    /// A span id: 16 hex digits, at least one of them a letter (an all-decimal id that passes
    /// the card checks is masked as a card, by design; the corpus keeps its ids unambiguous).
    fn span_id(&mut self, out: &mut String) {
        self.hex(out, 15);
        out.push(b"abcdef"[self.below(6) as usize] as char);
    }

    fn digits(&mut self, out: &mut String, n: usize) {
        for _ in 0..n {
            out.push((b'0' + self.below(10) as u8) as char);
        }
    }

    /// Writes one line (without a newline) into `out`, which is cleared first, and returns the
    /// secrets it holds.
    pub fn line(&mut self, out: &mut String) -> Vec<Secret> {
        out.clear();
        self.clock_ms += self.below(40) as i64;
        let mut secrets = Vec::new();
        match self.below(6) {
            0 => self.plain(out),
            1 => self.key_value(out),
            2 => self.json(out),
            3 => self.access(out),
            4 => self.look_alikes(out),
            _ => self.aws(out),
        }
        if self.chance(self.rates.card) {
            let card = self.card();
            // JSON-encoded text puts a value right after an escape (`\n`, `\t`, `\u0020`).
            let _ = match self.below(7) {
                0 => write!(out, " {}\\n{card}", self.pick(&["order ok", "msg", "card"])),
                // Glued to labels, and under id-like keys (a valid card is a card anywhere).
                1 => write!(out, " cc{card}exp{:02}{}", 1 + self.below(12), 26 + self.below(5)),
                2 => write!(out, " {}{card}", self.pick(&["request_id=", "span_id=", "PAN:"])),
                3 => write!(out, " {{\"traceId\":\"{card}\"}}"),
                _ => write!(
                    out,
                    " {} {card}",
                    self.pick(&["card", "pan=", "cc", "paid with", "card_number:", "card:\\t", "\\u0020"])
                ),
            };
            secrets.push(Secret { kind: SecretKind::Card, value: card });
        }
        if self.chance(self.rates.iban) {
            let iban = self.iban();
            let _ = write!(
                out,
                " {} {iban}",
                self.pick(&["transfer to", "IBAN", "payee", "beneficiary", "ok\\n", "iban=", "(iban:"])
            );
            secrets.push(Secret { kind: SecretKind::Iban, value: iban });
        }
        if self.chance(self.rates.bank_account) {
            let mut acct = String::new();
            if self.chance(0.2) {
                // Grouped: `1234-5678-90`, `0532 0130 00`.
                let sep = if self.chance(0.5) { '-' } else { ' ' };
                self.digits(&mut acct, 4);
                acct.push(sep);
                self.digits(&mut acct, 4);
                acct.push(sep);
                let last = 2 + self.below(3) as usize;
                self.digits(&mut acct, last);
            } else {
                let n = 6 + self.below(12) as usize;
                self.digits(&mut acct, n);
                // A 13-19 digit account number that passes the card checks is counted as a
                // card (the card detector comes first); keep the labels exact.
                if crate::redact::card::valid(acct.bytes()) && acct.len() >= 13 {
                    acct.replace_range(0..1, "1");
                }
            }
            // A keyword in prose, or the field name as the only context.
            let (before, after) = *self.pick_pair(&[
                (" account number ", ""),
                (" Account Number: ", ""),
                (" acct #", ""),
                (" bank_account=", ""),
                (" Kontonummer ", ""),
                (" checking account ", ""),
                (" numéro de compte ", ""),
                (" savings acct ", ""),
                (" account=", ""),
                (" account_id: ", ""),
                (" {\"accountNumber\": \"", "\"}"),
                (" acct_no=", ""),
                (" customer-account: ", ""),
                (" bban=", ""),
                (" {\\\"bank.account\\\":\\\"", "\\\"}"),
                (" msg\\nAccount Number: ", ""),
                // A keyword far away across punctuation and a remark.
                (" Account Number ........................................: ", ""),
                (" account no. (primary checking, as printed on the statement): ", ""),
            ]);
            let _ = write!(out, "{before}{acct}{after}");
            secrets.push(Secret { kind: SecretKind::BankAccount, value: acct });
        }
        if self.chance(self.rates.url_credentials) {
            let (url, secret) = self.credential_url();
            let _ = write!(out, " url={url}");
            secrets.push(Secret { kind: SecretKind::UrlCredentials, value: secret });
        }
        secrets
    }

    fn timestamp(&mut self, out: &mut String) {
        out.push_str(&crate::event::json::rfc3339(self.clock_ms * 1_000_000));
    }

    fn uuid(&mut self, out: &mut String) {
        self.hex(out, 8);
        for n in [4, 4, 4, 12] {
            out.push('-');
            self.hex(out, n);
        }
    }

    /// An order number that looks like a Visa card but fails the Luhn check.
    fn order_number(&mut self, out: &mut String) {
        let mut d = vec![4u8];
        for _ in 0..14 {
            d.push(self.below(10) as u8);
        }
        d.push((luhn_check_digit(&d) + 1) % 10);
        out.extend(d.iter().map(|x| (b'0' + x) as char));
    }

    fn plain(&mut self, out: &mut String) {
        self.timestamp(out);
        let (level, svc, w1, w2) =
            (self.pick(LEVELS), self.pick(SERVICES), self.pick(WORDS), self.pick(WORDS));
        let _ = write!(out, " {level:<5} [{svc}-{}] {w1} {w2} order ", self.below(8));
        self.order_number(out);
        let _ = write!(
            out,
            " in {}.{}ms for user {} (v{}.{}.{}) from {}:{}",
            self.below(900),
            self.below(10),
            self.below(100_000),
            self.below(4),
            self.below(30),
            self.below(10),
            self.pick(HOSTS),
            1024 + self.below(60_000)
        );
    }

    fn key_value(&mut self, out: &mut String) {
        let _ = write!(
            out,
            "ts={} level={} svc={} msg=\"{} {}\" trace_id=",
            { self.clock_ms },
            self.pick(LEVELS).to_lowercase(),
            self.pick(SERVICES),
            self.pick(WORDS),
            self.pick(WORDS)
        );
        self.hex(out, 32);
        out.push_str(" span_id=");
        self.span_id(out);
        let _ = write!(
            out,
            " dur={}ms attempt={} accounts={} account_created={}",
            self.below(5000),
            self.below(4),
            self.below(9),
            { self.clock_ms }
        );
    }

    fn json(&mut self, out: &mut String) {
        out.push_str("{\"time\":\"");
        self.timestamp(out);
        let _ = write!(
            out,
            "\",\"level\":\"{}\",\"service\":\"{}\",\"msg\":\"{} {}\",\"request_id\":\"",
            self.pick(LEVELS).to_lowercase(),
            self.pick(SERVICES),
            self.pick(WORDS),
            self.pick(WORDS)
        );
        self.uuid(out);
        let _ = write!(
            out,
            "\",\"ms\":{},\"user\":\"{}\",\"accountBalance\":{},\"detail\":\"ok\\n{}\"}}",
            self.below(2000),
            self.pick(EMAILS),
            self.below(10_000_000),
            { self.clock_ms }
        );
    }

    fn access(&mut self, out: &mut String) {
        let _ = write!(
            out,
            "10.{}.{}.{} - - [27/Nov/2026:18:{:02}:{:02} +0000] \"GET {}/{}?page={}&sort=desc HTTP/1.1\" {} {} \"https://{}/\" \"{}\" 0.0{}",
            self.below(256),
            self.below(256),
            self.below(256),
            self.below(60),
            self.below(60),
            self.pick(PATHS),
            self.below(100_000),
            self.below(50),
            self.pick(&["200", "200", "201", "304", "404", "500"]),
            self.below(90_000),
            self.pick(HOSTS),
            self.pick(AGENTS),
            self.below(100)
        );
    }

    fn aws(&mut self, out: &mut String) {
        self.timestamp(out);
        let _ = write!(
            out,
            " invoke arn:aws:lambda:eu-west-1:{}:function:{} by {} port {} took {}s epoch={}",
            100_000_000_000 + self.below(900_000_000_000),
            self.pick(SERVICES),
            self.pick(EMAILS),
            self.pick(&["443", "8443", "5432"]),
            self.below(30),
            { self.clock_ms }
        );
    }

    /// A valid card number (issuer prefix, length, Luhn) in a random grouping style.
    fn card(&mut self) -> String {
        let (prefix, len): (&[u8], usize) = match self.below(5) {
            0 | 1 => (&[4], 16),
            2 => (&[5, 1 + self.below(5) as u8], 16),
            3 => (&[3, if self.chance(0.5) { 4 } else { 7 }], 15),
            _ => (&[6, 0, 1, 1], 16),
        };
        let mut d = prefix.to_vec();
        while d.len() < len - 1 {
            d.push(self.below(10) as u8);
        }
        d.push(luhn_check_digit(&d));
        let digits: String = d.iter().map(|x| (b'0' + x) as char).collect();
        let sep = match self.below(8) {
            0 => return digits,
            1 => " ",
            2 => "-",
            3 => ".",
            4 => "  ",
            5 => "\u{a0}",
            6 => "%20",
            _ => "+",
        };
        let groups: &[usize] = if len == 15 { &[4, 6, 5] } else { &[4, 4, 4, 4] };
        let mut out = String::new();
        let mut at = 0;
        for (i, g) in groups.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(&digits[at..at + g]);
            at += g;
        }
        out
    }

    /// A valid IBAN (country length, mod-97 check digits), compact or grouped by four.
    fn iban(&mut self) -> String {
        let (cc, letters, digits) = match self.below(4) {
            0 => ("DE", 0, 18),
            1 => ("GB", 4, 14),
            2 => ("NL", 4, 10),
            _ => ("ES", 0, 20),
        };
        let mut bban = String::new();
        for _ in 0..letters {
            bban.push((b'A' + self.below(26) as u8) as char);
        }
        self.digits(&mut bban, digits);
        let check = 98 - iban_mod97(&format!("{bban}{cc}00"));
        let compact = format!("{cc}{check:02}{bban}");
        // Written as people and forms write it: upper or lower case, grouped by four with
        // spaces, dashes or NBSP, or irregularly.
        let (text, sep) = match self.below(8) {
            0 | 1 => return compact,
            2 => return compact.to_lowercase(),
            3 => (compact.clone(), " "),
            4 => (compact.to_lowercase(), " "),
            5 => (compact.clone(), "-"),
            6 => (compact.clone(), "\u{a0}"),
            _ => return format!("{} {}", &compact[..4], &compact[4..]),
        };
        let b = text.as_bytes();
        let mut out = String::new();
        for (i, c) in b.chunks(4).enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(std::str::from_utf8(c).unwrap_or_default());
        }
        out
    }

    /// A URL with credentials and the secret part of it.
    fn credential_url(&mut self) -> (String, String) {
        let mut secret = String::new();
        let n = 10 + self.below(20) as usize;
        for _ in 0..n {
            const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789_";
            secret.push(ALPHABET[self.below(ALPHABET.len() as u64) as usize] as char);
        }
        let host = self.pick(HOSTS);
        if self.chance(0.5) {
            return self.credential_url_as_written(secret, host);
        }
        let url = match self.below(7) {
            0 => format!("postgres://app:{secret}@{host}:5432/orders"),
            1 => format!("https://{host}/v1/export?format=csv&access_token={secret}&page=2"),
            2 => format!("https://{host}/upload?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={secret}"),
            3 => format!("https://{secret}@{host}/repo.git"),
            // JSON-escaped slashes (PHP and others), Go's `\u0026`, HTML's `&amp;`.
            4 => format!("\"https:\\/\\/app:{secret}@{host}\\/orders\""),
            5 => format!("\"https://{host}/cb?code=1\\u0026token={secret}\\u0026state=x\""),
            _ => format!("<a href=\"https://{host}/x?page=2&amp;api_key={secret}&amp;v=1\">"),
        };
        (url, secret)
    }
}

impl LogGen {
    /// A URL with credentials as applications really write it (issue 12): upper-case schemes,
    /// percent-encoded user-info, passwords holding delimiters, IPv6 hosts, no user name, no
    /// scheme, fragments, JDBC parameters, URLs in quotes and brackets.
    fn credential_url_as_written(&mut self, mut secret: String, host: &str) -> (String, String) {
        let url = match self.below(11) {
            0 => format!("HTTPS://app:{secret}@{host}/v1"),
            1 => format!("https://ops%40corp.example:{secret}@{host}/x"),
            2 => format!("https://app%3A{secret}@{host}/x"),
            3 => {
                let (a, b) = secret.split_at(secret.len() / 2);
                let mid = self.pick(&["/", "#", "?", "\\", "{", "}", "\"", " "]);
                secret = format!("{a}{mid}{b}");
                format!("mysql://app:{secret}@{host}:3306/orders")
            }
            4 => format!("http://admin:{secret}@[fd00::{:x}]:8080/", self.below(0xffff)),
            5 => format!("redis://:{secret}@{host}:6379/0"),
            6 => format!("app:{secret}@{host}:5432/orders"),
            7 => format!("https://{host}/callback#access_token={secret}&token_type=bearer"),
            8 => format!(
                "jdbc:sqlserver://{host}:1433;databaseName=orders;user=app;password={secret};encrypt=true"
            ),
            9 => {
                let (open, close) = *self.pick_pair(&[("'", "'"), ("(", ")"), ("[", "]"), ("<", ">")]);
                format!("{open}https://app:{secret}@{host}/x{close}")
            }
            _ => format!("https://{host}/x?page=2;token={secret}"),
        };
        (url, secret)
    }

    /// Look-alikes that every redaction rule must leave alone: phone numbers, amounts,
    /// versions, hex trace and span ids under camelCase keys, ports, ARNs, IPv6 literals,
    /// e-mail-shaped git remotes, fragments and matrix parameters without credentials, and
    /// order ids glued to letters that fail the card checks.
    fn look_alikes(&mut self, out: &mut String) {
        self.timestamp(out);
        if self.chance(0.5) {
            let _ = write!(
                out,
                " {} phone +1 415-555-{:04} alt ({}) 555-0{:03} amount={}.{:02} total {},{:03}.50 USD v{}.{}.{} ORD",
                self.pick(LEVELS),
                self.below(10_000),
                200 + self.below(800),
                self.below(1000),
                self.below(100_000),
                self.below(100),
                self.below(1000),
                self.below(1000),
                self.below(4),
                self.below(30),
                self.below(10)
            );
            self.order_number(out);
            return;
        }
        out.push_str(" {\"traceId\":\"");
        self.hex(out, 32);
        out.push_str("\",\"spanId\":\"");
        self.span_id(out);
        let _ = write!(
            out,
            "\"}} git@github.com:org/{}.git mailto:{} HTTP://{}/x#top;jsessionid=ab12 [::1]:{} accounts={}",
            self.pick(SERVICES),
            self.pick(EMAILS),
            self.pick(HOSTS),
            1024 + self.below(60_000),
            self.below(9)
        );
    }
}

/// The digit that makes `digits` (check digit excluded) pass the Luhn check.
pub fn luhn_check_digit(digits: &[u8]) -> u8 {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut d = d as u32;
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    ((10 - sum % 10) % 10) as u8
}

/// ISO 7064 mod 97-10 of an alphanumeric string (letters count as 10..35).
pub fn iban_mod97(s: &str) -> u32 {
    let mut r = 0u32;
    for c in s.bytes() {
        match c {
            b'0'..=b'9' => r = (r * 10 + (c - b'0') as u32) % 97,
            b'A'..=b'Z' => r = (r * 100 + (c - b'A' + 10) as u32) % 97,
            b'a'..=b'z' => r = (r * 100 + (c - b'a' + 10) as u32) % 97,
            _ => {}
        }
    }
    r
}

/// A corpus of about `bytes` bytes of newline-terminated lines, with every line's secrets.
pub fn corpus(seed: u64, rates: Rates, bytes: usize) -> (Vec<u8>, Vec<Vec<Secret>>) {
    let mut g = LogGen::with_rates(seed, rates);
    let mut out = Vec::with_capacity(bytes + 256);
    let mut labels = Vec::new();
    let mut line = String::new();
    while out.len() < bytes {
        labels.push(g.line(&mut line));
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    (out, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_about_150_bytes() {
        let (a, la) = corpus(7, Rates::default(), 200_000);
        let (b, lb) = corpus(7, Rates::default(), 200_000);
        assert_eq!(a, b);
        assert_eq!(la, lb);
        let avg = a.len() / la.len();
        assert!((110..=190).contains(&avg), "average line length {avg}");
        let (c, _) = corpus(8, Rates::default(), 200_000);
        assert_ne!(a, c);
    }

    #[test]
    fn secrets_are_valid_and_in_their_lines() {
        let rates = Rates { card: 0.3, iban: 0.3, bank_account: 0.3, url_credentials: 0.3 };
        let mut g = LogGen::with_rates(1, rates);
        let mut line = String::new();
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            for s in g.line(&mut line) {
                assert!(line.contains(&s.value), "{line}");
                match s.kind {
                    SecretKind::Card => {
                        // `%20` is a separator, not digits.
                        let d: Vec<u8> = s
                            .value
                            .replace("%20", "")
                            .bytes()
                            .filter(u8::is_ascii_digit)
                            .map(|b| b - b'0')
                            .collect();
                        let (body, check) = d.split_at(d.len() - 1);
                        assert_eq!(luhn_check_digit(body), check[0], "{}", s.value);
                        seen[0] += 1;
                    }
                    SecretKind::Iban => {
                        let c: String = s
                            .value
                            .chars()
                            .filter(char::is_ascii_alphanumeric)
                            .collect::<String>()
                            .to_uppercase();
                        assert_eq!(iban_mod97(&format!("{}{}", &c[4..], &c[..4])), 1, "{}", s.value);
                        seen[1] += 1;
                    }
                    SecretKind::BankAccount => seen[2] += 1,
                    SecretKind::UrlCredentials => seen[3] += 1,
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 300), "{seen:?}");
    }

    #[test]
    fn rates_none_means_no_secrets() {
        let (_, labels) = corpus(3, Rates::NONE, 100_000);
        assert!(labels.iter().all(Vec::is_empty));
    }

    #[test]
    fn known_check_values() {
        // Wikipedia's examples.
        assert_eq!(luhn_check_digit(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1]), 3);
        assert_eq!(iban_mod97("370400440532013000DE89"), 1);
    }
}
