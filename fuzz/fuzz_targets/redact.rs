//! Fuzzes the redaction engine: no panic on any input, the stream equals the whole-input
//! result for cuts chosen by the fuzzer, the fast engine equals the naive reference, and the
//! stream holds back a bounded number of bytes.
//!
//! ```text
//! cargo install cargo-fuzz
//! cd fuzz && cargo +nightly fuzz run redact -- -max_len=4096
//! ```
//! The first two input bytes choose the options and the cut positions; the rest is the text.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sealtrail::redact::{Counts, Mask, Options, Redactor, naive, url_credentials};

fn options(custom: bool) -> Options {
    let mut o = Options { mask: Mask::Hmac, hmac_key: Some([7; 32]), ..Options::default() };
    if custom {
        o.keywords = vec!["Falcon".into(), "1111".into()];
        o.patterns = vec!["EMP-[0-9]+".into()];
    }
    o
}

fuzz_target!(|data: &[u8]| {
    static ENGINES: OnceLock<[(Options, Arc<Redactor>); 2]> = OnceLock::new();
    let engines = ENGINES.get_or_init(|| {
        [false, true].map(|c| {
            let o = options(c);
            let r = Arc::new(Redactor::new(&o).expect("options compile"));
            (o, r)
        })
    });
    let Some((&[sel, step], text)) = data.split_first_chunk::<2>() else { return };
    let (opts, r) = &engines[(sel & 1) as usize];

    let mut counts = Counts::default();
    let whole = r.redact(text, &mut counts).into_owned();
    if text.len() <= 512 {
        assert_eq!((whole.clone(), counts), naive::redact(opts, text), "fast != naive");
    }

    let step = (step as usize % 97) + 1;
    let mut s = r.stream();
    let mut out = Vec::new();
    for chunk in text.chunks(step) {
        s.push(chunk, &mut out);
        assert!(s.pending() <= step + url_credentials::MAX_AUTHORITY + 256 + sealtrail::redact::PATTERN_WINDOW);
    }
    s.finish(&mut out);
    assert_eq!(out, whole, "stream != whole");
    assert_eq!(s.counts(), counts);
});
