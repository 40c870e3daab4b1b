//! The `iban` detector: international bank account numbers (ISO 13616).
//!
//! An IBAN is a two-letter country code, two check digits and the country's BBAN (upper-case
//! letters and digits) of the length the SWIFT registry fixes for that country, written
//! compact (`DE89370400440532013000`) or in groups of four separated by single spaces
//! (`DE89 3704 0044 0532 0130 00`), and passing the ISO 7064 mod 97-10 check. Neither end may
//! touch a letter or digit. The trigger is a digit run right after two capital letters, which
//! the digit scan of the engine already visits.

use super::{Cand, Detector, is_alnum, word_start};

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

/// The IBAN length of a country code, if the code has IBANs.
pub fn length_of(cc: &[u8]) -> Option<usize> {
    LENGTHS.iter().find(|(c, _)| &c[..] == cc).map(|(_, n)| *n)
}

/// Reports the IBAN whose check digits start the digit run at `s`, if any.
pub(crate) fn candidate(buf: &[u8], s: usize, out: &mut Vec<Cand>) {
    let start = s - 2;
    if !(buf[start].is_ascii_uppercase() && buf[start + 1].is_ascii_uppercase()) {
        return;
    }
    if !word_start(buf, start) {
        return;
    }
    if let Some(end) = parse(buf, start) {
        out.push(Cand { start, end, keep: 0, det: Detector::Iban, open: false });
    }
}

/// The end of a valid IBAN starting at `start`, if there is one.
fn parse(buf: &[u8], start: usize) -> Option<usize> {
    let len = length_of(&buf[start..start + 2])?;
    let grouped = buf.get(start + 4) == Some(&b' ');
    let mut chars = [0u8; 34];
    let mut p = start;
    for (k, slot) in chars.iter_mut().enumerate().take(len) {
        if grouped && k > 0 && k % 4 == 0 {
            if buf.get(p) != Some(&b' ') {
                return None;
            }
            p += 1;
        }
        let c = *buf.get(p)?;
        let ok = if (2..4).contains(&k) {
            c.is_ascii_digit()
        } else {
            c.is_ascii_digit() || c.is_ascii_uppercase()
        };
        if !ok {
            return None;
        }
        *slot = c;
        p += 1;
    }
    if p < buf.len() && is_alnum(buf[p]) {
        return None;
    }
    mod97(&chars[..len]).then_some(p)
}

/// ISO 7064 mod 97-10 over the IBAN with its first four characters moved to the end.
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

/// Whether `s` (spaces allowed) is a valid IBAN: used by tests and the naive reference.
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
            "DE89370400440532013001",     // checksum
            "DE8937040044053201300",      // too short
            "XX89370400440532013000",     // no such country
            "DE89 3704 0044 0532 013000", // grouping broken
            "de89370400440532013000",     // lower case
        ] {
            assert!(!is_valid(bad), "{bad}");
            assert!(found(&format!("pay {bad}.")).is_empty(), "{bad}");
        }
        // Touching letters or digits.
        assert!(found("xDE89370400440532013000").is_empty());
        assert!(found("DE893704004405320130001").is_empty());
        assert!(found("DE89370400440532013000A").is_empty());
    }
}
