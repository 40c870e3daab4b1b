//! Custom detectors from the configuration: literal keywords and `regex` patterns.
//!
//! - **Keywords** are literal strings redacted wherever they occur (case-sensitive), found by
//!   one Aho-Corasick automaton for all of them; they compete with the built-in detectors
//!   (leftmost, then longest).
//! - **Patterns** are regular expressions, combined into one. They run after every other
//!   detector, on its output, one line at a time; a line longer than
//!   [`super::PATTERN_WINDOW`] is matched in consecutive windows of that size, so memory stays
//!   bounded and a stream gives the same result as a whole input. A pattern that does not
//!   compile or matches the empty string is a build error naming it.

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::Regex;

use super::mask::Masker;
use super::{BuildError, BuildErrorKind, Cand, Counts, Detector, PATTERN_WINDOW};

/// The literal keyword automaton.
#[derive(Debug)]
pub(crate) struct Keywords {
    ac: AhoCorasick,
    pub(crate) max_len: usize,
}

impl Keywords {
    pub(crate) fn new(keywords: &[String]) -> Result<Keywords, BuildError> {
        if keywords.iter().any(String::is_empty) {
            return Err(BuildError::new(BuildErrorKind::EmptyEntry { what: "keyword", list: "keywords" }));
        }
        let ac = AhoCorasick::builder().match_kind(MatchKind::Standard).build(keywords).map_err(|e| {
            BuildError::new(BuildErrorKind::Automaton { what: "keyword", message: e.to_string() })
        })?;
        Ok(Keywords { ac, max_len: keywords.iter().map(String::len).max().unwrap_or(0) })
    }

    /// Reports every keyword occurrence starting at or after `from`.
    pub(crate) fn candidates(&self, buf: &[u8], from: usize, out: &mut Vec<Cand>) {
        for m in self.ac.find_overlapping_iter(&buf[from..]) {
            out.push(Cand {
                start: from + m.start(),
                end: from + m.end(),
                keep: 0,
                det: Detector::Keyword,
                open: None,
            });
        }
    }
}

/// The combined pattern.
#[derive(Debug)]
pub(crate) struct Patterns {
    re: Regex,
}

impl Patterns {
    pub(crate) fn new(patterns: &[String]) -> Result<Patterns, BuildError> {
        for p in patterns {
            let re = Regex::new(p).map_err(|e| {
                BuildError::new(BuildErrorKind::InvalidPattern {
                    pattern: p.clone(),
                    message: one_line(&e.to_string()),
                })
            })?;
            if re.is_match(b"") {
                return Err(BuildError::new(BuildErrorKind::EmptyMatch { pattern: p.clone() }));
            }
        }
        let combined: Vec<String> = patterns.iter().map(|p| format!("(?:{p})")).collect();
        let re = Regex::new(&combined.join("|")).map_err(|e| {
            BuildError::new(BuildErrorKind::InvalidPattern {
                pattern: combined.join("|"),
                message: one_line(&e.to_string()),
            })
        })?;
        Ok(Patterns { re })
    }

    /// Redacts one window (a line or a piece of one, without its newline) into `out`; returns
    /// whether anything matched.
    pub(crate) fn redact_window(
        &self,
        w: &[u8],
        mask: &Masker,
        out: &mut Vec<u8>,
        counts: &mut Counts,
    ) -> bool {
        let mut pos = 0;
        for m in self.re.find_iter(w) {
            if m.is_empty() {
                continue;
            }
            out.extend_from_slice(&w[pos..m.start()]);
            mask.write(Detector::Pattern, m.as_bytes(), out);
            counts.0[Detector::Pattern as usize] += 1;
            pos = m.end();
        }
        out.extend_from_slice(&w[pos..]);
        pos > 0
    }

    /// Redacts a whole input: each line in windows of [`PATTERN_WINDOW`] bytes. `None` when
    /// nothing matched.
    pub(crate) fn redact_whole(&self, input: &[u8], mask: &Masker, counts: &mut Counts) -> Option<Vec<u8>> {
        if !self.re.is_match(input) {
            return None;
        }
        let mut out = Vec::with_capacity(input.len() + 16);
        let mut any = false;
        for (i, line) in input.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            if line.is_empty() {
                continue;
            }
            for w in line.chunks(PATTERN_WINDOW) {
                any |= self.redact_window(w, mask, &mut out, counts);
            }
        }
        any.then_some(out)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The streaming side of [`Patterns`]: collects a window, then redacts it.
#[derive(Debug, Default)]
pub(crate) struct PatternStream {
    window: Vec<u8>,
}

impl PatternStream {
    pub(crate) fn push(
        &mut self,
        p: &Patterns,
        mask: &Masker,
        mut input: &[u8],
        out: &mut Vec<u8>,
        counts: &mut Counts,
    ) {
        while !input.is_empty() {
            let room = PATTERN_WINDOW - self.window.len();
            match memchr::memchr(b'\n', &input[..room.min(input.len())]) {
                Some(i) => {
                    self.window.extend_from_slice(&input[..i]);
                    self.flush(p, mask, out, counts);
                    out.push(b'\n');
                    input = &input[i + 1..];
                }
                None => {
                    let take = room.min(input.len());
                    self.window.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.window.len() == PATTERN_WINDOW {
                        self.flush(p, mask, out, counts);
                    }
                }
            }
        }
    }

    pub(crate) fn flush(&mut self, p: &Patterns, mask: &Masker, out: &mut Vec<u8>, counts: &mut Counts) {
        if !self.window.is_empty() {
            p.redact_window(&self.window, mask, out, counts);
            self.window.clear();
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.window.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Mask;

    #[test]
    fn bad_patterns_are_named() {
        let e = Patterns::new(&["ok-[0-9]+".into(), "broken(".into()]).unwrap_err();
        assert!(e.to_string().contains("`broken(`"), "{e}");
        let e = Patterns::new(&["x*".into()]).unwrap_err();
        assert_eq!(e.to_string(), "pattern `x*` matches the empty string");
    }

    #[test]
    fn windows_match_whole_and_stream() {
        let p = Patterns::new(&["EMP-[0-9]{4}".into(), "secret-[a-z]+".into()]).unwrap();
        let m = Masker::new(Mask::Mask, None).unwrap();
        let input = b"a EMP-1234 b\nsecret-abc and EMP-99\n\nEMP-0000".to_vec();
        let mut c = Counts::default();
        let whole = p.redact_whole(&input, &m, &mut c).unwrap();
        assert_eq!(whole, b"a **** b\n**** and EMP-99\n\n****".to_vec());
        assert_eq!(c.get(Detector::Pattern), 3);
        for cut in 0..input.len() {
            let mut s = PatternStream::default();
            let mut out = Vec::new();
            let mut c2 = Counts::default();
            s.push(&p, &m, &input[..cut], &mut out, &mut c2);
            s.push(&p, &m, &input[cut..], &mut out, &mut c2);
            s.flush(&p, &m, &mut out, &mut c2);
            assert_eq!(out, whole, "cut {cut}");
            assert_eq!(c2, c);
        }
    }
}
