//! The `card` detector: payment card numbers.
//!
//! A card number is 13 to 19 digits with a known issuer prefix and a valid Luhn checksum,
//! written either as one run of digits or as groups joined by one kind of separator
//! throughout (a dash, a dot, a tab, `+`, `%20`, 1 to 4 spaces, or a Unicode space such as
//! NBSP; see [`separator`]), with a first group of 4 digits and every group 3 to 7 digits
//! long: `4111 1111 1111 1111`, `3782-822463-10005`, `4111.1111.1111.1111`, `4111%201111…`.
//!
//! It must not touch another digit on either side (it would be part of a longer number), but
//! it may touch letters: applications glue labels to numbers (`cc4111…`, `…1111exp1226`), and
//! the issuer prefix and the checksum are the evidence, not the neighbours. The exception is a
//! number inside a hexadecimal identifier ([`in_hex_id`]): a trace id, span id, object id or
//! digest whose hex digits happen to include a long decimal run. A grouped number may follow
//! other digit groups (`order 12 4111-1111-1111-1111`): each group start is a candidate start,
//! and the longest valid number from it is the candidate.
//!
//! A Luhn-valid number with a known issuer prefix is a card even as the value of an id-like key
//! (`request_id=`, `"traceId":`): a masked id costs less than a leaked card. Ids that fail the
//! checks (almost all of them: trace ids are hex, epochs start with 1, order ids fail Luhn)
//! stay.

use super::{Cand, Detector, after_escape};

/// Most digits in a card number.
const MAX_DIGITS: usize = 19;
const MIN_DIGITS: usize = 13;

/// The position of the next ASCII digit at or after `i` (tests walk runs with it).
#[cfg(test)]
pub(crate) fn next_digit(h: &[u8], mut i: usize) -> Option<usize> {
    while i + 16 <= h.len() {
        let mut mask = 0u32;
        for (k, &b) in h[i..i + 16].iter().enumerate() {
            mask |= ((b.wrapping_sub(b'0') < 10) as u32) << k;
        }
        if mask != 0 {
            return Some(i + mask.trailing_zeros() as usize);
        }
        i += 16;
    }
    h.get(i..)?.iter().position(u8::is_ascii_digit).map(|k| i + k)
}

/// Bit masks of `block` (at most 64 bytes): bit `k` of the first is set when `block[k]` is an
/// ASCII digit, of the second when it is an ASCII letter, of the third when it is a URL
/// credential trigger (see [`triggers`] and [`super::url_credentials`]). One pass over the
/// bytes gives every detector its trigger positions.
#[inline]
pub(crate) fn masks(block: &[u8]) -> (u64, u64, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Ok(b) = <&[u8; 64]>::try_from(block) {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above; the check is a cached load).
                return unsafe { masks_avx2(b) };
            }
            return masks_sse2(b);
        }
        // A short block (a short log line): pad it with zeros, which are none of the bytes
        // looked for, so short inputs take the vector path too.
        let mut padded = [0u8; 64];
        let len = block.len().min(64);
        padded[..len].copy_from_slice(&block[..len]);
        return masks_sse2(&padded);
    }
    #[allow(unreachable_code)]
    masks_scalar(block)
}

/// [`masks`] a byte at a time: the definition the vector versions are tested against.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn masks_scalar(block: &[u8]) -> (u64, u64, u64) {
    let (mut d, mut u, mut t) = (0u64, 0u64, [0u64; 4]);
    for (k, &x) in block.iter().enumerate().take(64) {
        d |= ((x.wrapping_sub(b'0') < 10) as u64) << k;
        u |= (((x | 0x20).wrapping_sub(b'a') < 26) as u64) << k;
        t[0] |= (matches!(x, b'?' | b'&' | b'#' | b';' | b'@') as u64) << k;
        t[1] |= ((x == b':') as u64) << k;
        t[2] |= ((x == b'/') as u64) << k;
        t[3] |= ((x == b'\\') as u64) << k;
    }
    (d, u, triggers(t))
}

/// The digit mask alone (see [`masks`]).
#[cfg(test)]
pub(crate) fn digit_mask(block: &[u8]) -> u64 {
    masks(block).0
}

/// [`masks`] of a full block, 16 bytes per step: for the ranges, subtract the first byte of
/// the range and keep the bytes that are at most its width minus one as unsigned numbers
/// (`min(x, w) == x`); the triggers are three equality tests.
#[cfg(target_arch = "x86_64")]
#[inline]
fn masks_sse2(b: &[u8; 64]) -> (u64, u64, u64) {
    use std::arch::x86_64::*;
    let (mut d, mut u, mut t) = (0u64, 0u64, [0u64; 4]);
    for (k, chunk) in b.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86_64 baseline, so these instructions always exist;
        // `chunk` is exactly 16 readable bytes and `_mm_loadu_si128` accepts any alignment.
        let (dm, um, tm) = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let x = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
            let dm = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(9)), x));
            let x = _mm_sub_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)), _mm_set1_epi8(b'a' as i8));
            let um = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(25)), x));
            let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
            let qa = _mm_or_si128(
                _mm_or_si128(_mm_or_si128(eq(b'?'), eq(b'&')), _mm_or_si128(eq(b'#'), eq(b';'))),
                eq(b'@'),
            );
            let cm = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b':' as i8)));
            let sm = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'/' as i8)));
            let bm = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)));
            (dm, um, [_mm_movemask_epi8(qa), cm, sm, bm])
        };
        d |= (dm as u16 as u64) << (16 * k);
        u |= (um as u16 as u64) << (16 * k);
        for (acc, m) in t.iter_mut().zip(tm) {
            *acc |= (m as u16 as u64) << (16 * k);
        }
    }
    (d, u, triggers(t))
}

/// [`masks_sse2`] 32 bytes per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn masks_avx2(b: &[u8; 64]) -> (u64, u64, u64) {
    use std::arch::x86_64::*;
    let (mut d, mut u, mut t) = (0u64, 0u64, [0u64; 4]);
    for (k, chunk) in b.chunks_exact(32).enumerate() {
        // SAFETY: the caller guarantees AVX2; `chunk` is exactly 32 readable bytes and
        // `_mm256_loadu_si256` accepts any alignment.
        let (dm, um, tm) = unsafe {
            let v = _mm256_loadu_si256(chunk.as_ptr().cast());
            let x = _mm256_sub_epi8(v, _mm256_set1_epi8(b'0' as i8));
            let dm = _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(x, _mm256_set1_epi8(9)), x));
            let x = _mm256_sub_epi8(_mm256_or_si256(v, _mm256_set1_epi8(0x20)), _mm256_set1_epi8(b'a' as i8));
            let um = _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(x, _mm256_set1_epi8(25)), x));
            let eq = |c: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(c as i8));
            let qa = _mm256_or_si256(
                _mm256_or_si256(_mm256_or_si256(eq(b'?'), eq(b'&')), _mm256_or_si256(eq(b'#'), eq(b';'))),
                eq(b'@'),
            );
            let cm = _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b':' as i8)));
            let sm = _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'/' as i8)));
            let bm = _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8)));
            (dm, um, [_mm256_movemask_epi8(qa), cm, sm, bm])
        };
        d |= (dm as u32 as u64) << (32 * k);
        u |= (um as u32 as u64) << (32 * k);
        for (acc, m) in t.iter_mut().zip(tm) {
            *acc |= (m as u32 as u64) << (32 * k);
        }
    }
    (d, u, triggers(t))
}

/// The trigger mask from the masks of `?`/`&`/`#`/`;`/`@`, `:`, `/` and `\`: every `?`, `&`,
/// `#` (fragment parameters), `;` (matrix and JDBC parameters), `@` (an authority without a
/// scheme) and `\`
/// (JSON escapes: `\u0026` is `&`, `\/` is `/`), and every `:` that starts `://` or `:\/`
/// (or sits in the last two lanes, whose following bytes the block cannot see), so the many
/// `:` of timestamps and JSON are never visited.
#[inline]
fn triggers([qa, colon, slash, bs]: [u64; 4]) -> u64 {
    qa | bs | colon & ((slash >> 1 | bs >> 1) & (slash >> 2) | 0b11 << 62)
}

/// Reports the card candidate that starts with the digit run `buf[s..e]`, if any.
pub(crate) fn candidate(buf: &[u8], s: usize, e: usize, out: &mut Vec<Cand>) {
    let n = buf.len();
    let first = e - s;
    // Cheap rejections first: most digit runs in logs are short and stand alone, and every
    // issuer prefix starts with 2 to 6 (epochs start with 1, so they stop here).
    if !(b'2'..=b'6').contains(&buf[s]) || !starts_ok(buf, s) {
        return;
    }
    // A second group has at least 3 digits (`2026-11-27` is a date, not a card).
    let first_sep = if first == 4 { separator(buf, e) } else { None };
    let grouped = first_sep
        .is_some_and(|(_, len)| e + len + 3 <= n && buf[e + len..e + len + 3].iter().all(u8::is_ascii_digit));
    let Some((sep, _)) = first_sep.filter(|_| grouped) else {
        if (MIN_DIGITS..=MAX_DIGITS).contains(&first) && ends_ok(buf, e) {
            let digits = &buf[s..e];
            if valid(digits.iter().copied()) && !in_hex_id(buf, s, e) {
                out.push(Cand { start: s, end: e, keep: 0, det: Detector::Card, open: None });
            }
        }
        return;
    };
    // Grouped: collect groups while the shape holds (the same kind of separator throughout),
    // remembering the longest valid end.
    let mut digits = [0u8; MAX_DIGITS];
    digits[..4].copy_from_slice(&buf[s..e]);
    let mut count = 4;
    let mut end = e;
    let mut best = None;
    while let Some((kind, len)) = separator(buf, end) {
        let gs = end + len;
        if kind != sep || gs >= n || !buf[gs].is_ascii_digit() {
            break;
        }
        let mut ge = gs;
        while ge < n && buf[ge].is_ascii_digit() {
            ge += 1;
        }
        let len = ge - gs;
        if !(3..=7).contains(&len) || count + len > MAX_DIGITS {
            break;
        }
        digits[count..count + len].copy_from_slice(&buf[gs..ge]);
        count += len;
        end = ge;
        if count >= MIN_DIGITS && ends_ok(buf, end) && valid(digits[..count].iter().copied()) {
            best = Some(end);
        }
    }
    if let Some(end) = best {
        out.push(Cand { start: s, end, keep: 0, det: Detector::Card, open: None });
    }
}

/// The kinds of separator between the digit groups of a card number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sep {
    /// 1 to [`MAX_SPACES`] ASCII spaces (column-aligned output pads with several).
    Spaces,
    Dash,
    Dot,
    Tab,
    /// `+`, a space in a form-encoded query.
    Plus,
    /// `%20`, a space in a percent-encoded URL.
    Pct20,
    /// A Unicode space in UTF-8: no-break (U+00A0), figure (U+2007), thin (U+2009) or narrow
    /// no-break (U+202F); formatting libraries group digits with these.
    Unicode,
}

/// Most spaces in one gap between card digit groups.
pub const MAX_SPACES: usize = 4;

/// Most bytes one separator spans (see [`separator`]): how far a grouped card can reach.
pub const MAX_SEP_LEN: usize = MAX_SPACES;

/// The separator starting at `i`, with its length in bytes (`None` when none starts there).
#[inline]
pub(crate) fn separator(buf: &[u8], i: usize) -> Option<(Sep, usize)> {
    let b = *buf.get(i)?;
    Some(match b {
        b' ' => {
            let k = buf[i..].iter().take(MAX_SPACES + 1).take_while(|&&c| c == b' ').count();
            if k > MAX_SPACES {
                return None;
            }
            (Sep::Spaces, k)
        }
        b'-' => (Sep::Dash, 1),
        b'.' => (Sep::Dot, 1),
        b'\t' => (Sep::Tab, 1),
        b'+' => (Sep::Plus, 1),
        b'%' if buf.get(i + 1..i + 3) == Some(b"20") => (Sep::Pct20, 3),
        0xC2 if buf.get(i + 1) == Some(&0xA0) => (Sep::Unicode, 2),
        0xE2 if matches!(buf.get(i + 1..i + 3), Some([0x80, 0x87 | 0x89 | 0xAF])) => (Sep::Unicode, 3),
        _ => return None,
    })
}

/// Whether a byte may start a card group separator (the cheap test before [`separator`]).
#[inline]
pub(crate) fn may_separate(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'\t' | b'+' | b'%' | 0xC2 | 0xE2)
}

/// Whether a card number may start at `s`: the input starts there, or the byte before is not
/// a digit, or it ends a JSON escape (`\u0020` before the number).
#[inline]
pub fn starts_ok(buf: &[u8], s: usize) -> bool {
    s == 0 || !buf[s - 1].is_ascii_digit() || after_escape(buf, s)
}

/// Whether a card number may end at `e`: the input ends there or the next byte is not a digit.
#[inline]
pub fn ends_ok(buf: &[u8], e: usize) -> bool {
    e == buf.len() || !buf[e].is_ascii_digit()
}

/// Bytes [`in_hex_id`] reads on each side of the digits.
pub const HEX_ID_REACH: usize = 40;

/// Whether the digit run `buf[s..e]` touches a letter and lies inside a hexadecimal
/// identifier: the letters and digits around it (read at most [`HEX_ID_REACH`] bytes each way)
/// are all hex digits and as long as a span id or object id (16 or 24) or a trace id or digest
/// (32 or more). `cc4111111111111111` (18) is a card glued to a label;
/// `a1b24111111111111111c3d4e5f6a7b8c9` (34) is an id.
pub fn in_hex_id(buf: &[u8], s: usize, e: usize) -> bool {
    let letter = |i: usize| buf.get(i).is_some_and(u8::is_ascii_alphabetic);
    if !((s > 0 && letter(s - 1)) || letter(e)) {
        return false;
    }
    let mut a = s;
    while a > 0 && s - a < HEX_ID_REACH && buf[a - 1].is_ascii_alphanumeric() {
        a -= 1;
        if !buf[a].is_ascii_hexdigit() {
            return false;
        }
    }
    let mut z = e;
    while z < buf.len() && z - e < HEX_ID_REACH && buf[z].is_ascii_alphanumeric() {
        if !buf[z].is_ascii_hexdigit() {
            return false;
        }
        z += 1;
    }
    let len = z - a;
    len == 16 || len == 24 || len >= 32
}

/// Issuer prefix, length and Luhn checksum of a number given as ASCII digits.
pub fn valid(digits: impl ExactSizeIterator<Item = u8> + Clone) -> bool {
    let len = digits.len();
    let mut prefix = 0u32;
    for d in digits.clone().take(6) {
        prefix = prefix * 10 + (d - b'0') as u32;
    }
    issuer_accepts(prefix, len) && luhn(digits)
}

/// Whether a known issuer uses the 6-digit prefix `p6` with numbers of `len` digits.
fn issuer_accepts(p6: u32, len: usize) -> bool {
    let p1 = p6 / 100_000;
    let p2 = p6 / 10_000;
    let p3 = p6 / 1000;
    let p4 = p6 / 100;
    match p1 {
        // Visa.
        4 => matches!(len, 13 | 16 | 19),
        // Mastercard 51–55 and 2221–2720; Mir 2200–2204.
        5 if (51..=55).contains(&p2) => len == 16,
        2 if (2221..=2720).contains(&p4) => len == 16,
        2 if (2200..=2204).contains(&p4) => (16..=19).contains(&len),
        // American Express 34, 37; Diners 300–305, 36, 38, 39; JCB 3528–3589.
        3 if p2 == 34 || p2 == 37 => len == 15,
        3 if (3528..=3589).contains(&p4) => (16..=19).contains(&len),
        3 if (300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39 => (14..=19).contains(&len),
        // Maestro 50, 56–58; Discover 6011, 644–649, 65; UnionPay 62; Maestro 6x.
        5 if p2 == 50 || (56..=58).contains(&p2) => (13..=19).contains(&len),
        6 => (13..=19).contains(&len),
        _ => false,
    }
}

/// The Luhn checksum over ASCII digits.
pub fn luhn(digits: impl ExactSizeIterator<Item = u8>) -> bool {
    let len = digits.len();
    let mut sum = 0u32;
    for (i, d) in digits.enumerate() {
        let mut d = (d - b'0') as u32;
        // Double every second digit counting from the right (the check digit is not doubled).
        if (len - i) % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(s: &str) -> Vec<&str> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(st) = next_digit(b, i) {
            let mut e = st;
            while e < b.len() && b[e].is_ascii_digit() {
                e += 1;
            }
            candidate(b, st, e, &mut out);
            i = e;
        }
        out.iter().map(|c| &s[c.start..c.end]).collect()
    }

    #[test]
    fn luhn_and_issuers() {
        for ok in
            ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "4222222222222"]
        {
            assert!(valid(ok.bytes()), "{ok}");
        }
        // Luhn fails, unknown issuer (1…, 9…), wrong length for the issuer.
        for bad in ["4111111111111112", "1234567812345670", "9111111111111119", "37828224631000"] {
            assert!(!valid(bad.bytes()), "{bad}");
        }
    }

    #[test]
    fn groupings() {
        assert_eq!(found("card 4111 1111 1111 1111."), ["4111 1111 1111 1111"]);
        assert_eq!(found("card 4111-1111-1111-1111"), ["4111-1111-1111-1111"]);
        assert_eq!(found("amex 3782-822463-10005 ok"), ["3782-822463-10005"]);
        assert_eq!(found("x=4111111111111111,"), ["4111111111111111"]);
        // Mixed separators are not a grouping; several spaces (column padding) are.
        assert!(found("4111 1111-1111 1111").is_empty());
        assert_eq!(found("4111  1111  1111  1111"), ["4111  1111  1111  1111"]);
        // A leading group in front of a card: the card itself is found.
        assert_eq!(found("ref 12 4111 1111 1111 1111"), ["4111 1111 1111 1111"]);
    }

    #[test]
    fn boundaries() {
        assert!(found("04111111111111111").is_empty());
        assert!(found("41111111111111110").is_empty());
        assert_eq!(found("(4111111111111111)"), ["4111111111111111"]);
        assert_eq!(found("4111111111111111"), ["4111111111111111"]);
        assert_eq!(found("card_id=4111111111111111"), ["4111111111111111"]);
    }

    #[test]
    fn look_alikes_pass() {
        for s in [
            "2026-11-27T18:13:22.123Z",
            "epoch=1795000000123",
            "id 550e8400-e29b-41d4-a716-446655440000",
            "trace 4bf92f3577b34da6a3ce929d0e0e4736",
            "order 4111111111111112",
            "10.0.0.1:8443",
            "arn:aws:lambda:us-east-1:123456789012:function:x",
            "v1.2.3 took 1234ms",
            "1732731202123456789",
            // Inside hex ids: a span id (16), an object id (24), a trace id (32), a digest.
            "span_id=ab41111111111111",
            "oid=4111111111111111abcdef01",
            "trace_id=4111111111111111aaaaaaaaaaaaaaaa",
            "sha256=f4111111111111111bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "ORD4111111111111112",
        ] {
            assert!(found(s).is_empty(), "{s}");
        }
    }

    #[test]
    fn glued_to_letters_and_after_id_keys() {
        // Issue 12: labels glued to the number, and id-like keys, do not hide a card.
        assert_eq!(found("cc4111111111111111"), ["4111111111111111"]);
        assert_eq!(found("4111111111111111exp1226"), ["4111111111111111"]);
        assert_eq!(found("a4111111111111111"), ["4111111111111111"]);
        assert_eq!(found("card4111 1111 1111 1111exp12/26"), ["4111 1111 1111 1111"]);
        assert_eq!(found("x-request-id: 4111111111111111"), ["4111111111111111"]);
        assert_eq!(found("{\"traceId\": \"2627633960126404\"}"), ["2627633960126404"]);
        assert!(in_hex_id(b"ab41111111111111", 2, 16));
        assert!(!in_hex_id(b"cc4111111111111111", 2, 18));
        assert!(!in_hex_id(b"xy41111111111111", 2, 16), "not hex");
        assert!(!in_hex_id(b" 4111111111111111 ", 1, 17), "no letter touches it");
    }

    #[test]
    fn next_digit_finds_every_position() {
        let s = "abcdefghijklmnopqrstuvwxyz0abcdefghijklmnopqrstuvwxy9";
        assert_eq!(next_digit(s.as_bytes(), 0), Some(26));
        assert_eq!(next_digit(s.as_bytes(), 27), Some(52));
        assert_eq!(next_digit(b"abc", 0), None);
        assert_eq!(next_digit(b"abc", 5), None);
    }

    #[test]
    fn digit_masks() {
        let mut b = [b'x'; 64];
        b[0] = b'0';
        b[63] = b'9';
        assert_eq!(digit_mask(&b), 1 | 1 << 63);
        // Every byte value against the scalar definition, at every lane.
        for v in 0..=255u8 {
            for lane in [0, 15, 16, 31, 47, 63] {
                let mut b = [b'x'; 64];
                b[lane] = v;
                let want = if v.is_ascii_digit() { 1u64 << lane } else { 0 };
                assert_eq!(digit_mask(&b), want, "byte {v} lane {lane}");
            }
        }
        assert_eq!(digit_mask(b"a1b2"), 0b1010);
        assert_eq!(digit_mask(b""), 0);
        for v in 0..=255u8 {
            let mut b = [b'~'; 64];
            b[33] = v;
            assert_eq!(masks(&b).1, if v.is_ascii_alphabetic() { 1 << 33 } else { 0 }, "byte {v}");
            let trigger = matches!(v, b'?' | b'&' | b'\\' | b'#' | b';' | b'@');
            assert_eq!(masks(&b).2, if trigger { 1 << 33 } else { 0 }, "byte {v}");
        }
        // The vector versions against the scalar definition, on blocks dense in every byte
        // class the masks look at.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let alphabet = b"09AZaz:/?&#;-@ \x80\xff";
        for _ in 0..2000 {
            let mut b = [0u8; 64];
            for slot in &mut b {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *slot =
                    if x % 4 == 0 { (x >> 8) as u8 } else { alphabet[(x >> 8) as usize % alphabet.len()] };
            }
            let want = masks_scalar(&b);
            #[cfg(target_arch = "x86_64")]
            {
                assert_eq!(masks_sse2(&b), want, "{b:?}");
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 was just detected.
                    assert_eq!(unsafe { masks_avx2(&b) }, want, "{b:?}");
                }
            }
            assert_eq!(masks(&b), want);
            assert_eq!(masks(&b[..37]), masks_scalar(&b[..37]));
        }
        // `:` only before `//`, or where the block cannot see what follows.
        let colons = |places: &[(usize, &[u8])]| {
            let mut b = [b'x'; 64];
            for (at, text) in places {
                b[*at..*at + text.len()].copy_from_slice(text);
            }
            masks(&b).2
        };
        assert_eq!(colons(&[(10, b"://")]), 1 << 10);
        assert_eq!(colons(&[(10, b":/x"), (20, b":x/"), (30, b"::/")]), 0);
        assert_eq!(colons(&[(62, b"::")]), 0b11 << 62);
        assert_eq!(colons(&[(61, b"://")]), 1 << 61);
        assert_eq!(colons(&[(10, b":\\/")]), 1 << 10 | 1 << 11);
    }
}
