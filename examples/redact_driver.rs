//! Redacts the bench corpus (loggen seed 1, 8 MiB) once, for instruction counting:
//!
//! ```text
//! CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --example redact_driver
//! valgrind --tool=callgrind --toggle-collect='redact_driver::run*' \
//!     target/release/examples/redact_driver lines   # or: whole
//! ```
//! Ir of the collected part / 8 MiB = instructions per byte. `lines` calls the engine once
//! per line, as the transform does; `whole` once on the whole input.

use std::hint::black_box;

use sealtrail::loggen::{self, Rates};
use sealtrail::redact::{Counts, Redactor};

#[inline(never)]
fn run_lines(r: &Redactor, lines: &[&[u8]]) -> Counts {
    let mut counts = Counts::default();
    for l in lines {
        black_box(r.redact(black_box(l), &mut counts));
    }
    counts
}

#[inline(never)]
fn run_whole(r: &Redactor, corpus: &[u8]) -> Counts {
    let mut counts = Counts::default();
    black_box(r.redact(black_box(corpus), &mut counts));
    counts
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "lines".to_owned());
    let (corpus, _) = loggen::corpus(1, Rates::default(), 8 << 20);
    let lines: Vec<&[u8]> = corpus.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let r = Redactor::with_defaults();
    let counts = match mode.as_str() {
        "whole" => run_whole(&r, &corpus),
        _ => run_lines(&r, &lines),
    };
    println!("{mode}: {} bytes, {} lines, {} redactions", corpus.len(), lines.len(), counts.total());
}
