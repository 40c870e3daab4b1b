//! The `iban` detector: international bank account numbers (ISO 13616).
//!
//! An IBAN is a two-letter country code, two check digits and the country's BBAN (letters and
//! digits) of the length the SWIFT registry fixes for that country, passing the ISO 7064
//! mod 97-10 check. People and forms write it in any case (`de89…`, `De89…`) and group it
//! freely: after the check digits, any two characters may be separated by one separator, the
//! same kind throughout (a space or a no-break space): `DE89 3704 0044 0532 0130 00`,
//! `DE89 370400440532013000`; dashes only in groups of four (`DE89-3704-0044-0532-0130-00`),
//! since UUIDs are dash-separated hex. The length is fixed, so the
//! number ends after exactly that many characters, and neither end may touch a letter or digit.
//!
//! The one look-alike that case-insensitivity lets in is a lower-case hex id that happens to
//! start with a country code and two digits (`be12…` as a 16-digit span id, `ad34…` as a
//! 24-digit object id): a compact, lower-case candidate made only of hex digits and 16 or 24
//! long is not an IBAN.
//!
//! The trigger is a digit run right after two letters, which the digit scan of the engine
//! already visits.

use super::{Cand, Detector, is_alnum, word_start};

/// Most bytes an IBAN spans: 34 characters and a 2-byte separator (NBSP) between each pair
/// after the check digits.
pub const MAX_SPAN: usize = 34 + 30 * 2;

/// Total IBAN length (country code and check digits included) per country, from the SWIFT
/// IBAN registry.
const LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HN", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// IBAN lengths indexed by `(first letter - 'A') * 26 + (second - 'A')`; 0 for no IBANs.
const TABLE: [u8; 26 * 26] = {
    let mut t = [0u8; 26 * 26];
    let mut i = 0;
    while i < LENGTHS.len() {
        let (cc, n) = LENGTHS[i];
        t[(cc[0] - b'A') as usize * 26 + (cc[1] - b'A') as usize] = n as u8;
        i += 1;
    }
    t
};

/// The IBAN length of a country code (either case), if the code has IBANs.
#[inline]
pub fn length_of(cc: &[u8]) -> Option<usize> {
    let [a, b] = cc else { return None };
    let (a, b) = (a.to_ascii_uppercase().wrapping_sub(b'A'), b.to_ascii_uppercase().wrapping_sub(b'A'));
    if a >= 26 || b >= 26 {
        return None;
    }
    match TABLE[a as usize * 26 + b as usize] {
        0 => None,
        n => Some(n as usize),
    }
}

/// The separator between IBAN characters starting at `i`: its first byte (the kind) and length.
#[inline]
pub fn separator(buf: &[u8], i: usize) -> Option<(u8, usize)> {
    match *buf.get(i)? {
        b' ' => Some((b' ', 1)),
        b'-' => Some((b'-', 1)),
        0xC2 if buf.get(i + 1) == Some(&0xA0) => Some((0xC2, 2)),
        _ => None,
    }
}

/// Reports the IBAN whose check digits start the digit run at `s`, if any.
pub(crate) fn candidate(buf: &[u8], s: usize, out: &mut Vec<Cand>) {
    let start = s - 2;
    if !(buf[start].is_ascii_alphabetic() && buf[start + 1].is_ascii_alphabetic()) {
        return;
    }
    if !word_start(buf, start) {
        return;
    }
    if let Some(end) = parse(buf, start) {
        out.push(Cand { start, end, keep: 0, det: Detector::Iban, open: None });
    }
}

/// The end of a valid IBAN starting at `start`, if there is one.
fn parse(buf: &[u8], start: usize) -> Option<usize> {
    let len = length_of(buf.get(start..start + 2)?)?;
    let mut chars = [0u8; 34];
    let mut p = start;
    let mut kind = None;
    // Bit `k` is set when a separator comes before character `k`.
    let mut seps = 0u64;
    for (k, slot) in chars.iter_mut().enumerate().take(len) {
        if k >= 4 {
            if let Some((sep, sep_len)) = separator(buf, p) {
                if *kind.get_or_insert(sep) != sep {
                    return None;
                }
                seps |= 1 << k;
                p += sep_len;
            }
        }
        let c = *buf.get(p)?;
        let ok = match k {
            0 | 1 => c.is_ascii_alphabetic(),
            2 | 3 => c.is_ascii_digit(),
            _ => c.is_ascii_alphanumeric(),
        };
        if !ok {
            return None;
        }
        *slot = c.to_ascii_uppercase();
        p += 1;
    }
    if p < buf.len() && is_alnum(buf[p]) {
        return None;
    }
    if kind == Some(b'-') && seps != groups_of_four(len) {
        return None;
    }
    let text = &buf[start..p];
    let hex_id = kind.is_none()
        && buf[start].is_ascii_lowercase()
        && matches!(len, 16 | 24)
        && text.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    (!hex_id && mod97(&chars[..len])).then_some(p)
}

/// The separator positions of an IBAN of `len` characters printed in groups of four (bit `k`:
/// a separator before character `k`). Dashes must group this way: free grouping with dashes
/// would let the hex groups of a UUID (`…-be22-62bf1e889df9`) read as an IBAN.
pub fn groups_of_four(len: usize) -> u64 {
    (4..len).step_by(4).fold(0, |m, k| m | 1 << k)
}

/// ISO 7064 mod 97-10 over the IBAN (upper case) with its first four characters moved to the
/// end.
fn mod97(iban: &[u8]) -> bool {
    let mut r = 0u32;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        r = if c.is_ascii_digit() {
            (r * 10 + (c - b'0') as u32) % 97
        } else {
            (r * 100 + (c - b'A' + 10) as u32) % 97
        };
    }
    r == 1
}

/// Whether `s` (separators allowed) is a valid IBAN: used by tests and the naive reference.
pub fn is_valid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 4 && parse(b, 0) == Some(b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(s: &str) -> Vec<&str> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        for s0 in 2..b.len() {
            if b[s0].is_ascii_digit() && !b[s0 - 1].is_ascii_digit() {
                candidate(b, s0, &mut out);
            }
        }
        out.iter().map(|c| &s[c.start..c.end]).collect()
    }

    #[test]
    fn valid_ibans_compact_and_grouped() {
        for ok in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "NO9386011117947",
        ] {
            assert!(is_valid(ok), "{ok}");
            assert_eq!(found(&format!("pay {ok}.")), [ok]);
        }
    }

    #[test]
    fn invalid_ibans() {
        for bad in [
            "DE89370400440532013001",       // checksum
            "DE8937040044053201300",        // too short
            "XX89370400440532013000",       // no such country
            "DE89 3704-0044 0532 0130 00",  // mixed separators
            "DE89  3704 0044 0532 0130 00", // two spaces
        ] {
            assert!(!is_valid(bad), "{bad}");
            assert!(found(&format!("pay {bad}.")).is_empty(), "{bad}");
        }
        // Touching letters or digits.
        assert!(found("xDE89370400440532013000").is_empty());
        assert!(found("DE893704004405320130001").is_empty());
        assert!(found("DE89370400440532013000A").is_empty());
    }

    #[test]
    fn issue_12_case_dashes_irregular_groups_nbsp() {
        for ok in [
            "de89370400440532013000",
            "De89 3704 0044 0532 0130 00",
            "gb82west12345698765432",
            "DE89-3704-0044-0532-0130-00",
            "DE89 370400440532013000",
            "DE89 3704 0044 0532 013000",
            "FR14 2004 1010 0505 0001 3M02 606",
            "DE89\u{a0}3704\u{a0}0044\u{a0}0532\u{a0}0130\u{a0}00",
            "BE71096123456769",
        ] {
            assert!(is_valid(ok), "{ok}");
            assert_eq!(found(&format!("pay {ok}.")), [ok]);
        }
        // A lower-case hex id that passes the check is an id (`be71096123456769` is 16 hex).
        assert!(found("span be71096123456769 ok").is_empty());
        // A UUID's hex groups with dashes are not an irregularly grouped IBAN.
        assert!(found("id 4e263fd4-18d4-a721-be22-62bf1e889df9").is_empty());
        assert!(!is_valid("DE89-370400440532013000"));
        assert_eq!(length_of(b"de"), Some(22));
        assert_eq!(length_of(b"ZZ"), None);
        assert_eq!(length_of(b"D1"), None);
    }
}
