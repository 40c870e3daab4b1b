//! Redacting a byte stream given in arbitrary chunks, with exactly the output of redacting
//! the whole stream at once.
//!
//! # The carry
//!
//! A [`Stream`] keeps a *carry*: the original bytes it has not written yet, preceded by up to
//! [`Redactor::context`] original bytes it has written (a candidate may depend on that much
//! left context: an account keyword 30 bytes before the digits, `?token=` before a value).
//! On each chunk it appends to the carry, finds the candidates that start after the context,
//! and writes everything up to a *commit point* `p`:
//! - every candidate that starts before `p` is complete: it starts at least the engine's
//!   lookahead before the end of the carry (no bounded candidate is longer), and no URL
//!   authority before `p` is still open;
//! - `p` is not inside a kept match (if it is, it moves to the end of that match), and it is
//!   on a UTF-8 character boundary (so a record body cut here stays valid text).
//!
//! Since the kept matches before `p` end at or before it, the selection after `p` starts
//! fresh, exactly as it does in the whole input at that point.
//!
//! A credential value (`?token=…`, `password=…`, a bearer token, a JWT, a PEM body) has no
//! length limit. When its end is not in the carry (and it is long enough to be decided), the
//! stream writes everything before it and the mask, then drops input until its
//! [`Tail`](super::tail) finds the delimiter (feeding an HMAC when the mask is `hmac`, whose
//! token it writes then). The value's bytes never stay in memory longer than one piece.
//!
//! # Worked example
//!
//! Default detectors (lookahead 112 bytes), a card number split across two reads:
//!
//! ```text
//! chunk 1: "paid with 4111 1111 11"      (22 bytes)
//! chunk 2: "11 1111 ok\n"
//! ```
//! After chunk 1 the carry holds 22 bytes. The card candidate would start at byte 10, but
//! `22 - 112 < 10`: it may continue, so nothing is decided and nothing is written (a real
//! stream writes most of a 64 KiB read; the tail it holds is at most the lookahead, or an
//! authority of at most 2 KiB). After chunk 2 (33 bytes) the stream is still short of the
//! lookahead, so it waits; at the end, [`Stream::finish`] decides with the end of input as a
//! boundary and writes `paid with **** ok\n`, as [`Redactor::redact`] does on the whole text.
//! Had chunk 2 been long, the commit point would have been `33 + more - 112`, past the card,
//! and the card would have been masked then.
//!
//! ```
//! use std::sync::Arc;
//! use sealtrail::redact::Redactor;
//!
//! let r = Arc::new(Redactor::with_defaults());
//! let mut s = r.stream();
//! let mut out = Vec::new();
//! s.push(b"paid with 4111 1111 11", &mut out);
//! s.push(b"11 1111 ok\n", &mut out);
//! s.finish(&mut out);
//! assert_eq!(out, b"paid with **** ok\n");
//! ```

use std::sync::Arc;

use hmac::Hmac;
use sha2::Sha256;

use super::custom::PatternStream;
use super::tail::{Scanned, Tail};
use super::{Cand, Counts, Detector, Redactor, mask, select_open};

/// A redacting stream. See the module documentation.
#[derive(Debug)]
pub struct Stream {
    r: Arc<Redactor>,
    /// `carry[..ctx]` was written (left context); `carry[ctx..]` was not.
    carry: Vec<u8>,
    ctx: usize,
    /// Inside an open-ended credential value.
    swallow: Option<Swallow>,
    counts: Counts,
    cands: Vec<Cand>,
    /// Custom patterns run over the output of the other detectors.
    patterns: Option<(PatternStream, Vec<u8>)>,
}

struct Swallow {
    det: Detector,
    mac: Option<Hmac<Sha256>>,
    /// Finds the value's end in the pieces that come.
    tail: Tail,
    /// Bytes after the value read so far that the next piece decides (see [`Tail`]).
    held: Vec<u8>,
}

impl std::fmt::Debug for Swallow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swallow").field("det", &self.det).finish_non_exhaustive()
    }
}

impl Stream {
    pub fn new(r: Arc<Redactor>) -> Stream {
        let patterns = r.patterns.is_some().then(|| (PatternStream::default(), Vec::new()));
        Stream {
            r,
            carry: Vec::new(),
            ctx: 0,
            swallow: None,
            counts: Counts::default(),
            cands: Vec::new(),
            patterns,
        }
    }

    /// Redactions so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Bytes read but not written yet.
    pub fn pending(&self) -> usize {
        self.carry.len() - self.ctx + self.patterns.as_ref().map_or(0, |(p, _)| p.pending())
    }

    /// Feeds a chunk; appends to `out` everything that is decided.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        match self.patterns.take() {
            None => self.stage1(chunk, false, out),
            Some((mut ps, mut tmp)) => {
                tmp.clear();
                self.stage1(chunk, false, &mut tmp);
                if let Some(p) = &self.r.patterns {
                    ps.push(p, &self.r.mask, &tmp, out, &mut self.counts);
                }
                self.patterns = Some((ps, tmp));
            }
        }
    }

    /// Ends the stream: writes everything still held. The stream can then be reused.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.patterns.take() {
            None => self.stage1(&[], true, out),
            Some((mut ps, mut tmp)) => {
                tmp.clear();
                self.stage1(&[], true, &mut tmp);
                if let Some(p) = &self.r.patterns {
                    ps.push(p, &self.r.mask, &tmp, out, &mut self.counts);
                    ps.flush(p, &self.r.mask, out, &mut self.counts);
                }
                self.patterns = Some((ps, tmp));
            }
        }
        self.carry.clear();
        self.ctx = 0;
    }

    fn stage1(&mut self, chunk: &[u8], eof: bool, out: &mut Vec<u8>) {
        let joined;
        let mut chunk = chunk;
        if let Some(mut sw) = self.swallow.take() {
            // The held bytes come before the chunk (rare, and a few bytes).
            let data: &[u8] = if sw.held.is_empty() {
                chunk
            } else {
                let mut j = std::mem::take(&mut sw.held);
                j.extend_from_slice(chunk);
                joined = j;
                &joined
            };
            let (taken, ended) = match sw.tail.scan(data, eof) {
                Scanned::End(e) => (e, true),
                Scanned::More(k) => (k, false),
            };
            if let Some(mac) = &mut sw.mac {
                mask::feed(mac, sw.det, &data[..taken]);
            }
            self.remember(&data[..taken]);
            if !ended {
                sw.held = data[taken..].to_vec();
                self.swallow = Some(sw);
                return;
            }
            if let Some(mac) = sw.mac {
                mask::finish_token(mac, sw.det, out);
            }
            chunk = &data[taken..];
        }
        self.carry.extend_from_slice(chunk);
        let r = &*self.r;
        let n = self.carry.len();
        self.cands.clear();
        let limit = r.candidates(&self.carry, self.ctx, eof, &mut self.cands);
        let limit = if eof { usize::MAX } else { limit };
        let (kept, tie) = select_open(&mut self.cands, limit);
        // The commit point.
        let mut p = if eof { n } else { limit.min(n).max(self.ctx) };
        let mut open = None;
        let mut upto = kept;
        for (i, c) in self.cands[..kept].iter().enumerate() {
            if c.open.is_some() {
                upto = i;
                if tie == Some(c.start) {
                    // Two open values start here: wait until one of them ends.
                    p = c.start;
                } else {
                    open = Some(i);
                    p = c.start;
                }
                break;
            }
            p = p.max(c.end);
        }
        if open.is_none() {
            // Back off to a character boundary, and out of any match that would then be cut.
            while p > self.ctx && p < n && (self.carry[p] & 0xC0) == 0x80 {
                p -= 1;
            }
            while upto > 0 && self.cands[upto - 1].end > p {
                upto -= 1;
                p = p.min(self.cands[upto].start);
            }
        }
        r.write(&self.carry, self.ctx, p, &self.cands[..upto], out, &mut self.counts);
        if let Some(i) = open {
            let c = self.cands[i];
            out.extend_from_slice(&self.carry[c.start..c.start + c.keep]);
            r.mask.open_prefix(out);
            self.counts.0[c.det as usize] += 1;
            let mut mac = r.mask.start_stream();
            if let Some(m) = &mut mac {
                mask::feed(m, c.det, &self.carry[c.start + c.keep..c.end]);
            }
            let held = self.carry[c.end..].to_vec();
            if let Some(tail) = c.open {
                self.swallow = Some(Swallow { det: c.det, mac, tail, held });
            }
            self.carry.truncate(c.end);
            p = c.end;
        }
        // Keep the left context.
        let keep_from = p.saturating_sub(r.context);
        self.carry.drain(..keep_from);
        self.ctx = p - keep_from;
    }

    /// Appends bytes that were consumed without being written (a swallowed value) to the
    /// left context, keeping at most the context size.
    fn remember(&mut self, bytes: &[u8]) {
        let c = self.r.context;
        if bytes.len() >= c {
            self.carry.clear();
            self.carry.extend_from_slice(&bytes[bytes.len() - c..]);
        } else {
            self.carry.extend_from_slice(bytes);
            let excess = self.carry.len().saturating_sub(c);
            self.carry.drain(..excess);
        }
        self.ctx = self.carry.len();
    }
}
