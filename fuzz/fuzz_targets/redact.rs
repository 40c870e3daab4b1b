//! Fuzzes the redaction engine. Beyond "no panic", every input checks five properties:
//! - **stream = whole**: the stream, fed chunks of sizes drawn from a seed in the input
//!   (empty chunks, single bytes and large chunks mixed), writes exactly what the whole-input
//!   call returns, with the same counts;
//! - **fast = naive**: on inputs up to 512 bytes, the engine equals the slow reference in
//!   `redact::naive`;
//! - **no card survives**: with the built-in detectors alone, the output holds no ungrouped
//!   card number: no maximal run of 13–19 digits (a digit ending a `\uXXXX` escape does not
//!   count as touching it) that passes the issuer and Luhn checks, unless it lies inside a
//!   hex identifier (`card::in_hex_id`), which the card detector deliberately skips;
//! - **field names**: under the key `bank.account`, `redact_keyed` leaves no value that is 6–17
//!   digits (with the built-in detectors);
//! - **bounded hold-back**: after every chunk the stream holds back at most a URL authority
//!   plus the engine's lookahead, whatever the chunk size (plus one pattern window when
//!   custom patterns are on).
//!
//! ```text
//! cargo install cargo-fuzz --locked
//! cd fuzz && cargo +nightly fuzz run redact -- -max_len=4096
//! ```
//! The first three input bytes choose the options and seed the chunk sizes; the rest is the
//! text.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sealtrail_fuzz::redact::{
    Counts, Mask, Options, PATTERN_WINDOW, Redactor, card, naive, url_credentials,
};

fn options(custom: bool, mask: Mask) -> Options {
    let mut o = Options { mask, hmac_key: Some([7; 32]), ..Options::default() };
    if custom {
        o.keywords = vec!["Falcon".into(), "1111".into()];
        o.patterns = vec!["EMP-[0-9]+".into()];
    }
    o
}

/// The first ungrouped card number left in `out`, if any.
fn surviving_card(out: &[u8]) -> Option<&[u8]> {
    let n = out.len();
    let mut i = 0;
    while i < n {
        if !out[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let s = i;
        while i < n && out[i].is_ascii_digit() {
            i += 1;
        }
        let run = &out[s..i];
        let bounded = card::starts_ok(out, s) && card::ends_ok(out, i);
        if (13..=19).contains(&run.len())
            && bounded
            && card::valid(run.iter().copied())
            && !card::in_hex_id(out, s, i)
        {
            return Some(run);
        }
    }
    None
}

/// Chunk sizes from a seed: a xorshift walk over 0..=2·`scale`, with an occasional 0 and
/// an occasional chunk far bigger than the lookahead.
struct Cuts(u64, usize);

impl Iterator for Cuts {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Some(match self.0 % 16 {
            0 => 0,
            1 => 1,
            2 => 4096,
            _ => (self.0 >> 8) as usize % (2 * self.1 + 1),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    static ENGINES: OnceLock<Vec<(Options, Arc<Redactor>)>> = OnceLock::new();
    let engines = ENGINES.get_or_init(|| {
        [(false, Mask::Mask), (false, Mask::Hmac), (true, Mask::Hmac), (false, Mask::Last4)]
            .into_iter()
            .map(|(c, m)| {
                let o = options(c, m);
                let r = Arc::new(Redactor::new(&o).expect("options compile"));
                (o, r)
            })
            .collect()
    });
    let Some((&[sel, seed, scale], text)) = data.split_first_chunk::<3>() else { return };
    let which = (sel & 3) as usize;
    let custom = which == 2;
    let (opts, r) = &engines[which];

    let mut counts = Counts::default();
    let whole = r.redact(text, &mut counts).into_owned();
    if text.len() <= 512 {
        assert_eq!((whole.clone(), counts), naive::redact(opts, text), "fast != naive");
    }
    if !custom {
        if let Some(card) = surviving_card(&whole) {
            panic!("card number survived: {:?}", String::from_utf8_lossy(card));
        }
        // Under a key that names an account, no value of 6–17 digits survives.
        if let Ok(t) = std::str::from_utf8(text) {
            let kept = r.redact_keyed(Some("bank.account"), t, &mut Counts::default());
            let v = kept.trim_matches(|c: char| c.is_ascii_whitespace());
            let digits_only = !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit());
            assert!(!(digits_only && (6..=17).contains(&v.len())), "account number survived its key: {v:?}");
        }
    }

    let bound = url_credentials::MAX_AUTHORITY + 512 + if custom { PATTERN_WINDOW } else { 0 };
    let mut cuts = Cuts(u64::from(seed) << 32 | u64::from(sel) << 8 | 0x9E37, scale as usize + 1);
    let mut s = r.stream();
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let k = cuts.next().unwrap_or(1).min(rest.len());
        let (chunk, tail) = rest.split_at(k);
        s.push(chunk, &mut out);
        rest = tail;
        assert!(s.pending() <= bound, "stream holds back {} bytes (bound {bound})", s.pending());
    }
    s.finish(&mut out);
    assert_eq!(s.pending(), 0, "finish leaves bytes behind");
    assert_eq!(out, whole, "stream != whole");
    assert_eq!(s.counts(), counts);
});
