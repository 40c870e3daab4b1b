//! The `bank_account` detector: account numbers next to an account keyword.
//!
//! An account number is 6 to 17 digits, written as one run or grouped by single spaces or
//! single dashes ([`value_end`]: `1234-5678-90`, `0532 0130 00`), not touching a letter or
//! digit (nor a `.` and a digit: `123456.78` is an amount). It is redacted when either
//! - its key names an account: the `key=`, `key:`, `"key":` right before it, split into words
//!   ([`super::keys`]: `account=…`, `"accountNumber": "…"`, `customer-account: …`), or
//! - an account keyword ends at most [`MAX_GAP`] bytes before it, on the same line, with no
//!   run of 3 or more digits in between: one keyword licenses one value, so after a keyword's
//!   value (or an IBAN) a later number needs its own evidence; or
//! - an account keyword ends further away, at most [`MAX_FAR_GAP`] bytes before it, and only
//!   punctuation, spaces and at most one parenthesised remark lie between
//!   ([`far_gap_ok`]: `Account Number (primary, see statement) .......: 12345678`). The gap
//!   holds no number, so the one-keyword-one-value rule holds here too.
//!
//! Keywords are the lists that CloudWatch Logs and Macie use (`reference/redaction.md`) plus the configured extras,
//! matched ignoring ASCII case, where a space in a keyword also matches `_`, `-` or nothing
//! (`bank account`, `bank_account`, `bank-account`, `bankaccount`); a keyword must not touch a
//! letter on either side (`sepa` does not match inside `separator`).
//!
//! Only digit runs of the right length trigger the keyword search, over a window of at most
//! `MAX_GAP + longest keyword` bytes before the run, so text without such runs costs nothing.
//! Before the automaton runs, a table of the last three bytes of every keyword spelling
//! (hashed into a 64 Ki-bit set that stays in L1, ASCII case folded) checks whether any
//! position in the gap could end a keyword at all; most digit runs in logs (epochs, ids,
//! counters) stop there.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::keys::{key_before, names_account};
use super::{BuildError, BuildErrorKind, Cand, Detector, after_escape, is_alnum, word_start};

/// How far (in bytes) before the digits a keyword may end.
pub const MAX_GAP: usize = 30;

/// How far (in bytes) before the digits a keyword may end when only punctuation and a
/// parenthesised remark lie between (see [`far_gap_ok`]).
pub const MAX_FAR_GAP: usize = 80;

/// The built-in account keywords (lower case).
pub const KEYWORDS: &[&str] = &[
    // README.md "What is redacted" and common log spellings.
    "acct",
    "account no",
    "account #",
    "acct no",
    // US.
    "bank account",
    "bank acct",
    "checking account",
    "checking acct",
    "deposit account",
    "deposit acct",
    "savings account",
    "savings acct",
    "chequing account",
    "chequing acct",
    // GB.
    "account code",
    "account number",
    "accountno#",
    "accountnumber#",
    "bban",
    "customer account id",
    "customer account number",
    "customer bank account id",
    "iban",
    "sepa",
    // DE.
    "bankleitzahl",
    "geheimzahl",
    "kartennummer",
    "kontonummer",
    "kreditkartennummer",
    // FR.
    "code bancaire",
    "compte bancaire",
    "numéro de compte",
    // IT.
    "codice bancario",
    "conto bancario",
    "numero di conto",
    // ES.
    "código cuenta",
    "código cuenta bancaria",
    "cuenta cliente id",
    "número cuenta bancaria cliente",
    "número cuenta cliente",
];

/// The compiled keyword automaton.
#[derive(Debug)]
pub(crate) struct BankAccount {
    ac: AhoCorasick,
    max_kw: usize,
    /// Bit [`tri`]`(a, b, c)` is set when some keyword spelling ends with `a b c` (ASCII case
    /// folded). `None` when a keyword is shorter than three bytes (no filter then).
    ends: Option<Box<[u64; 1024]>>,
    /// `last[b]`: some keyword spelling ends with byte `b` (ASCII case folded).
    last: [bool; 256],
    /// When every keyword ends with an ASCII letter or this one other byte (`#` for the
    /// built-in list), the gap is screened 32 positions at a time ([`word_ends`]); `None`
    /// means a byte-by-byte screen.
    other_last: Option<u8>,
}

/// The 16-bit hash of three bytes, ASCII case folded.
#[inline]
fn tri(a: u8, b: u8, c: u8) -> usize {
    let h = (a.to_ascii_lowercase() as u32) << 16
        | (b.to_ascii_lowercase() as u32) << 8
        | c.to_ascii_lowercase() as u32;
    (h.wrapping_mul(0x9E37_79B1) >> 16) as usize
}

/// Every spelling of a keyword: as written, and with each space replaced by `_`, `-` or
/// nothing.
pub fn variants(kw: &str) -> Vec<String> {
    let kw = kw.trim().to_ascii_lowercase();
    let mut v = vec![kw.clone()];
    if kw.contains(' ') {
        for r in ["_", "-", ""] {
            v.push(kw.replace(' ', r));
        }
    }
    v
}

impl BankAccount {
    pub(crate) fn new(extra: &[String]) -> Result<BankAccount, BuildError> {
        let mut pats = Vec::new();
        for kw in KEYWORDS.iter().copied().chain(extra.iter().map(String::as_str)) {
            if kw.trim().is_empty() {
                return Err(BuildError::new(BuildErrorKind::EmptyEntry {
                    what: "keyword",
                    list: "bank_account_keywords",
                }));
            }
            pats.extend(variants(kw));
        }
        let max_kw = pats.iter().map(String::len).max().unwrap_or(0);
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&pats)
            .map_err(|e| {
                BuildError::new(BuildErrorKind::Automaton {
                    what: "bank account keyword",
                    message: e.to_string(),
                })
            })?;
        let mut ends = Some(Box::new([0u64; 1024]));
        for p in &pats {
            match (p.as_bytes(), ends.as_mut()) {
                ([.., a, b, c], Some(t)) => {
                    let i = tri(*a, *b, *c);
                    t[i / 64] |= 1 << (i % 64);
                }
                _ => ends = None,
            }
        }
        let mut last = [false; 256];
        for p in &pats {
            if let Some(&b) = p.as_bytes().last() {
                last[b.to_ascii_lowercase() as usize] = true;
                last[b.to_ascii_uppercase() as usize] = true;
            }
        }
        let mut others = (0..=255u8).filter(|&b| last[b as usize] && !b.is_ascii_alphabetic());
        let other_last = match (others.next(), others.next()) {
            (Some(b), None) => Some(b),
            // No keyword ends with a non-letter: a letter is a never-matching stand-in.
            (None, _) => Some(b'a'),
            _ => None,
        };
        Ok(BankAccount { ac, max_kw, ends, last, other_last })
    }

    /// Bytes before the digits that decide a candidate: the gap, the longest keyword and the
    /// escape before it (`\uXXXX`, 6 bytes).
    pub(crate) fn context(&self) -> usize {
        MAX_FAR_GAP + self.max_kw + 6
    }

    /// Reports the account number that starts with the digit run `buf[s..e]` (4 to 17
    /// digits), if it is one.
    pub(crate) fn candidate(&self, buf: &[u8], s: usize, e: usize, out: &mut Vec<Cand>) {
        if !word_start(buf, s) {
            return;
        }
        let Some(e) = value_end(buf, s, e) else { return };
        if key_before(buf, s).is_some_and(names_account) || self.far(buf, s) {
            out.push(Cand { start: s, end: e, keep: 0, det: Detector::BankAccount, open: None });
            return;
        }
        // Could any keyword end in the gap before the digits (on this line)?
        #[cfg(target_arch = "x86_64")]
        if let (Some(t), Some(other), Some(win)) =
            (&self.ends, self.other_last, s.checked_sub(32).and_then(|w| buf.get(w..=s)))
        {
            if s > 32 {
                // Bit k stands for the keyword end `s - 31 + k`: a non-letter after a letter
                // or `other`, in the gap, after the last newline.
                let (mut ends, nl) = word_ends(win, other);
                ends &= !1 & (u32::MAX << (32 - nl.leading_zeros()).min(31));
                let possible = std::iter::from_fn(|| {
                    (ends != 0).then(|| {
                        let ke = s - 31 + ends.trailing_zeros() as usize;
                        ends &= ends - 1;
                        ke
                    })
                })
                .any(|ke| {
                    self.last[buf[ke - 1] as usize] && {
                        let i = tri(buf[ke - 3], buf[ke - 2], buf[ke - 1]);
                        t[i / 64] & (1 << (i % 64)) != 0
                    }
                });
                if !possible {
                    return;
                }
                return self.search(buf, s, e, out);
            }
        }
        let mut lo = s.saturating_sub(MAX_GAP);
        if let Some(nl) = memchr::memrchr(b'\n', &buf[lo..s]) {
            lo += nl + 1;
        }
        if let Some(t) = &self.ends {
            // A keyword ends before a non-letter (the boundary rule) and with one of the
            // keywords' last bytes; only then is the three-byte table consulted. Every keyword
            // is at least three bytes long (else there is no table), so none ends before 3:
            // digits near the start of a line (`ts=1795…`) stop here too.
            let possible = (lo.max(3)..=s).any(|ke| {
                (!buf[ke].is_ascii_alphabetic() && self.last[buf[ke - 1] as usize]) && {
                    let i = tri(buf[ke - 3], buf[ke - 2], buf[ke - 1]);
                    t[i / 64] & (1 << (i % 64)) != 0
                }
            });
            if !possible {
                return;
            }
        }
        self.search(buf, s, e, out)
    }

    /// The far rule: walks back from `s` over a gap that [`far_gap_ok`] accepts (punctuation,
    /// then at most one parenthesised remark, then punctuation) and, when the gap reaches
    /// further than [`MAX_GAP`] (nearer keywords are the near rule's), looks for a keyword that
    /// ends where such a gap begins.
    fn far(&self, buf: &[u8], s: usize) -> bool {
        let lo = s.saturating_sub(MAX_FAR_GAP);
        let punct = |mut p: usize| {
            while p > lo && is_gap_punct(buf[p - 1]) {
                p -= 1;
            }
            p
        };
        let p2 = punct(s);
        // Keyword ends allowed in `lo_end..=hi_end`.
        let (mut lo_end, mut hi_end) = (p2, s);
        if p2 > lo && buf[p2 - 1] == b')' {
            let mut q = p2 - 1;
            let mut run = 0;
            while q > lo && !matches!(buf[q - 1], b'(' | b')' | b'\n' | b'\r') {
                run = if buf[q - 1].is_ascii_digit() { run + 1 } else { 0 };
                if run >= 3 {
                    break;
                }
                q -= 1;
            }
            if run < 3 && q > lo && buf[q - 1] == b'(' {
                hi_end = q - 1;
                lo_end = punct(q - 1);
            }
        }
        if lo_end + MAX_GAP >= s {
            return false;
        }
        let w0 = lo_end.saturating_sub(self.max_kw);
        self.ac.find_overlapping_iter(&buf[w0..hi_end]).any(|m| {
            let (ks, ke) = (w0 + m.start(), w0 + m.end());
            ke >= lo_end
                && (ks == 0 || !buf[ks - 1].is_ascii_alphabetic() || after_escape(buf, ks))
                && !buf[ke].is_ascii_alphabetic()
        })
    }

    /// The automaton over the window before `buf[s..e]`: reports the run when a keyword,
    /// not touching a letter, ends in the gap on the same line.
    fn search(&self, buf: &[u8], s: usize, e: usize, out: &mut Vec<Cand>) {
        let w0 = s.saturating_sub(MAX_GAP + self.max_kw);
        let window = &buf[w0..s];
        for m in self.ac.find_overlapping_iter(window) {
            let (ks, ke) = (w0 + m.start(), w0 + m.end());
            // The keyword must be on the same line as the digits.
            if s - ke > MAX_GAP || memchr::memchr(b'\n', &buf[ke..s]).is_some() {
                continue;
            }
            let before_ok = ks == 0 || !buf[ks - 1].is_ascii_alphabetic() || after_escape(buf, ks);
            let after_ok = !buf[ke].is_ascii_alphabetic();
            if before_ok && after_ok && !has_digit_run(&buf[ke..s], 3) {
                out.push(Cand { start: s, end: e, keep: 0, det: Detector::BankAccount, open: None });
                return;
            }
        }
    }
}

/// A byte of the punctuation part of a far gap: ASCII punctuation other than parentheses, a
/// space or a tab.
#[inline]
fn is_gap_punct(b: u8) -> bool {
    (b.is_ascii_punctuation() && b != b'(' && b != b')') || b == b' ' || b == b'\t'
}

/// Whether `gap` (the bytes between a keyword and the digits) lets a keyword further than
/// [`MAX_GAP`] bytes away license the number: at most [`MAX_FAR_GAP`] bytes of punctuation,
/// spaces and tabs, with at most one parenthesised remark `(…)` that holds no newline, no
/// parenthesis and no run of 3 or more digits.
pub fn far_gap_ok(gap: &[u8]) -> bool {
    if gap.len() > MAX_FAR_GAP {
        return false;
    }
    let Some(open) = gap.iter().position(|&b| b == b'(') else {
        return gap.iter().all(|&b| is_gap_punct(b));
    };
    let Some(close) = gap[open..].iter().position(|&b| b == b')').map(|c| open + c) else { return false };
    let remark = &gap[open + 1..close];
    gap[..open].iter().all(|&b| is_gap_punct(b))
        && gap[close + 1..].iter().all(|&b| is_gap_punct(b))
        && !remark.iter().any(|&b| matches!(b, b'(' | b'\n' | b'\r'))
        && !has_digit_run(remark, 3)
}

/// Most digits in an account number.
pub const MAX_DIGITS: usize = 17;
/// Fewest digits in an account number.
pub const MIN_DIGITS: usize = 6;

/// Whether `b` holds a run of at least `len` ASCII digits.
pub fn has_digit_run(b: &[u8], len: usize) -> bool {
    let mut run = 0;
    for &c in b {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= len {
            return true;
        }
    }
    false
}

/// The end of the account number whose first digit run is `buf[s..e]`, if it has the shape
/// of one:
/// - grouped: the longest sequence of digit runs joined by one separator (a single space or
///   a single dash, the same throughout) from `s` holds 6 to 17 digits, the first group has
///   4 to 6 digits, every middle group as many as the first, and the last group 2 to that
///   many (as many when there are only two groups): `1234 5678`, `1234-5678-90`, but not
///   `123456 1500` (an account number and an amount);
/// - otherwise the run alone, when it has 6 to 17 digits.
///
/// The value must not be followed by a letter, a digit or a `.` and a digit. Reads at most
/// 48 bytes past `s` (within the engine's lookahead).
pub fn value_end(buf: &[u8], s: usize, e: usize) -> Option<usize> {
    let n = buf.len();
    let digit = |p: usize| p < n && buf[p].is_ascii_digit();
    let free = |p: usize| p == n || !(is_alnum(buf[p]) || (buf[p] == b'.' && digit(p + 1)));
    let first = e - s;
    if (4..=6).contains(&first) && e < n && matches!(buf[e], b' ' | b'-') && digit(e + 1) {
        let sep = buf[e];
        let (mut total, mut groups, mut last, mut middle_ok) = (first, 1, first, true);
        let mut p = e;
        while total <= MAX_DIGITS && p < n && buf[p] == sep && digit(p + 1) {
            let mut ge = p + 1;
            // A group longer than an account number ends the shape: no need to read on.
            while digit(ge) && ge - p <= MAX_DIGITS + 1 {
                ge += 1;
            }
            if groups >= 2 {
                middle_ok &= last == first;
            }
            last = ge - p - 1;
            total += last;
            groups += 1;
            p = ge;
        }
        let last_ok = (2..=first).contains(&last) && (groups > 2 || last == first);
        if (MIN_DIGITS..=MAX_DIGITS).contains(&total) && middle_ok && last_ok && free(p) {
            return Some(p);
        }
    }
    ((MIN_DIGITS..=MAX_DIGITS).contains(&first) && free(e)).then_some(e)
}

/// For `win = buf[s - 32..=s]`: bit `k` of the first mask is set when `buf[s - 31 + k]` is not
/// an ASCII letter and the byte before it is a letter or `other` (where a keyword can end);
/// bit `k` of the second when `buf[s - 31 + k]` is a newline.
#[cfg(target_arch = "x86_64")]
#[inline]
fn word_ends(win: &[u8], other: u8) -> (u32, u32) {
    use std::arch::x86_64::*;
    debug_assert_eq!(win.len(), 33);
    let (mut ends, mut nl) = (0u32, 0u32);
    for half in 0..2 {
        let at = 16 * half;
        let (Some(prev), Some(cur)) = (win.get(at..at + 16), win.get(at + 1..at + 17)) else {
            return (u32::MAX, 0);
        };
        // SAFETY: SSE2 is part of the x86_64 baseline; both slices are 16 readable bytes and
        // `_mm_loadu_si128` accepts any alignment.
        let (e, n) = unsafe {
            let alpha = |v: __m128i| {
                let t = _mm_sub_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)), _mm_set1_epi8(b'a' as i8));
                _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(25)), t)
            };
            let p = _mm_loadu_si128(prev.as_ptr().cast());
            let c = _mm_loadu_si128(cur.as_ptr().cast());
            let after = _mm_or_si128(alpha(p), _mm_cmpeq_epi8(p, _mm_set1_epi8(other as i8)));
            let e = _mm_movemask_epi8(_mm_andnot_si128(alpha(c), after));
            let n = _mm_movemask_epi8(_mm_cmpeq_epi8(c, _mm_set1_epi8(b'\n' as i8)));
            (e, n)
        };
        ends |= (e as u32 & 0xFFFF) << at;
        nl |= (n as u32 & 0xFFFF) << at;
    }
    (ends, nl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(b: &BankAccount, s: &str) -> Vec<String> {
        let buf = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < buf.len() {
            if buf[i].is_ascii_digit() && (i == 0 || !buf[i - 1].is_ascii_digit()) {
                let mut e = i;
                while e < buf.len() && buf[e].is_ascii_digit() {
                    e += 1;
                }
                if (6..=17).contains(&(e - i)) {
                    b.candidate(buf, i, e, &mut out);
                }
                i = e;
            } else {
                i += 1;
            }
        }
        out.iter().map(|c| s[c.start..c.end].to_owned()).collect()
    }

    #[test]
    fn keywords_anchor_numbers() {
        let b = BankAccount::new(&[]).unwrap();
        assert_eq!(found(&b, "Account Number: 12345678"), ["12345678"]);
        assert_eq!(found(&b, "bank_account=0532013000"), ["0532013000"]);
        assert_eq!(found(&b, "BANK-ACCOUNT 123456"), ["123456"]);
        assert_eq!(found(&b, "Kontonummer 0532013000 ok"), ["0532013000"]);
        assert_eq!(found(&b, "numéro de compte : 12345678901"), ["12345678901"]);
        assert_eq!(found(&b, "acct #12345678"), ["12345678"]);
        // Exactly 30 bytes of gap holding a word is allowed, 31 is not (only punctuation may
        // stretch the gap).
        let gap30 = format!("acct y{}123456", " ".repeat(28));
        let gap31 = format!("acct y{}123456", " ".repeat(29));
        assert_eq!(found(&b, &gap30), ["123456"]);
        assert!(found(&b, &gap31).is_empty());
    }

    #[test]
    fn no_keyword_or_wrong_shape() {
        let b = BankAccount::new(&[]).unwrap();
        assert!(found(&b, "order 12345678").is_empty());
        assert!(found(&b, "separator 12345678").is_empty(), "sepa inside a word");
        assert!(found(&b, "account number 12345").is_empty(), "too short");
        assert!(found(&b, "account number 123456789012345678").is_empty(), "too long");
        assert!(found(&b, "account number x12345678").is_empty(), "touches a letter");
        assert!(found(&b, "accountant 12345678").is_empty());
        assert!(found(&b, "acct\n12345678").is_empty(), "keyword on the line before");
    }

    #[test]
    fn issue_12_far_keyword_across_punctuation_and_a_remark() {
        let b = BankAccount::new(&[]).unwrap();
        let dots = format!("Account Number {}: 12345678", ".".repeat(40));
        assert_eq!(found(&b, &dots), ["12345678"]);
        assert_eq!(found(&b, "Account Number (customer's primary, see statement):   12345678"), ["12345678"]);
        assert_eq!(found(&b, &format!("acct #{}12345678", "-".repeat(50))), ["12345678"]);
        // Words, a number in the remark, a newline, or too far: no licence.
        assert!(found(&b, "Account Number (customer's primary, see page 123):   12345678").is_empty());
        assert!(
            found(&b, &format!("Account Number {} x {}: 12345678", ".".repeat(20), ".".repeat(20)))
                .is_empty()
        );
        assert!(found(&b, &format!("Account Number {}: 12345678", ".".repeat(90))).is_empty());
        assert!(
            found(&b, &format!("Account Number {}\n{}: 12345678", ".".repeat(20), ".".repeat(20))).is_empty()
        );
        assert!(far_gap_ok(b" (x) : "));
        assert!(!far_gap_ok(b" (x : "));
        assert!(!far_gap_ok(b" (x) (y) "));
    }

    #[test]
    fn extra_keywords() {
        let b = BankAccount::new(&["member id".to_owned()]).unwrap();
        assert_eq!(found(&b, "Member-ID: 99887766"), ["99887766"]);
        assert!(BankAccount::new(&[" ".to_owned()]).is_err());
    }
}
