//! Turning a byte stream into log records, one per line: shared by the `stdin`, `exec` and
//! `file` sources.
//!
//! [`LineSplitter`] takes the stream in whatever chunks the reads return and emits complete
//! lines, holding back only the unfinished last line. A line longer than `max_line_bytes` is
//! emitted in pieces of at most that size (cut on a UTF-8 boundary when one is near): every
//! piece but the last is marked *continued*, which is how the `redact` transform knows to
//! carry a match in progress from one record into the next.

use memchr::memchr;

use crate::event::{Event, KeyValue, LogRecord, SourceId, Value, attr, now_nanos};

/// The default `max_line_bytes`: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// The serde default of every line source's `max_line_bytes`.
pub fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

/// Checks a line source's `max_line_bytes` at build time.
pub fn check_max_line_bytes(n: usize) -> anyhow::Result<()> {
    anyhow::ensure!(n >= 16, "`max_line_bytes` must be at least 16, found {n}");
    Ok(())
}

/// Splits a byte stream into lines. See the module documentation.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    partial: Vec<u8>,
}

impl LineSplitter {
    /// A splitter that cuts lines longer than `max_line_bytes` (at least 4, so a piece always
    /// holds a whole UTF-8 character).
    pub fn new(max_line_bytes: usize) -> LineSplitter {
        LineSplitter { max: max_line_bytes.max(4), partial: Vec::new() }
    }

    /// Feeds a chunk; calls `emit(line, continued)` for every complete line or full piece.
    /// Line terminators (`\n`, `\r\n`) are not part of the line.
    pub fn push(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !chunk.is_empty() {
            match memchr(b'\n', chunk) {
                Some(i) => {
                    let (line, rest) = (&chunk[..i], &chunk[i + 1..]);
                    if self.partial.is_empty() {
                        self.emit_line(line, true, &mut emit);
                    } else {
                        self.partial.extend_from_slice(line);
                        let whole = std::mem::take(&mut self.partial);
                        self.emit_line(&whole, true, &mut emit);
                        self.partial = whole;
                        self.partial.clear();
                    }
                    chunk = rest;
                }
                None => {
                    self.partial.extend_from_slice(chunk);
                    // Emit full pieces of an overlong line now, so memory stays bounded.
                    while self.partial.len() > self.max {
                        let cut = utf8_cut(&self.partial, self.max);
                        emit(&self.partial[..cut], true);
                        self.partial.drain(..cut);
                    }
                    chunk = &[];
                }
            }
        }
    }

    /// Emits the unfinished last line, if any (the stream ended without a final newline).
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.emit_line(&rest, false, &mut emit);
        }
    }

    /// Bytes held back (an unfinished line).
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn emit_line(&self, mut line: &[u8], terminated: bool, emit: &mut impl FnMut(&[u8], bool)) {
        if terminated && line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        while line.len() > self.max {
            let cut = utf8_cut(line, self.max);
            emit(&line[..cut], true);
            line = &line[cut..];
        }
        emit(line, false);
    }
}

/// A cut position at most `max` bytes in that does not split a UTF-8 character, when the
/// text is valid there; otherwise exactly `max`.
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    let mut cut = max;
    // Back off over at most three continuation bytes (10xxxxxx).
    while cut > max.saturating_sub(3) && cut > 0 && cut < bytes.len() && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if cut == 0 { max } else { cut }
}

/// Builds log records from lines for one source: the source id, the service name and the
/// attributes every record of this stream carries.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    pub source: SourceId,
    pub service: String,
    /// Attributes added to every record (`log.iostream`, `log.file.path`).
    pub attributes: Vec<KeyValue>,
    /// How many lines held invalid UTF-8 (replaced by U+FFFD).
    pub invalid_utf8: u64,
}

impl RecordBuilder {
    pub fn new(source: &str, service: &str) -> RecordBuilder {
        RecordBuilder {
            source: SourceId::from(source),
            service: service.to_owned(),
            attributes: Vec::new(),
            invalid_utf8: 0,
        }
    }

    /// One log record for one line (or piece of a line).
    pub fn record(&mut self, line: &[u8], continued: bool, observed_time: i64) -> Event {
        let mut attributes = self.attributes.clone();
        let body = match std::str::from_utf8(line) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                self.invalid_utf8 += 1;
                attributes.push(KeyValue::new(attr::INVALID_UTF8, Value::Bool(true)));
                String::from_utf8_lossy(line).into_owned()
            }
        };
        if continued {
            attributes.push(KeyValue::new(attr::CONTINUED, Value::Bool(true)));
        }
        Event::Log(LogRecord {
            observed_time,
            body,
            attributes,
            service: self.service.clone(),
            source: self.source.clone(),
            ..LogRecord::default()
        })
    }

    /// Splits `chunk` with `splitter` and appends a record per line to `out`.
    pub fn push(&mut self, splitter: &mut LineSplitter, chunk: &[u8], out: &mut Vec<Event>) {
        let now = now_nanos();
        splitter.push(chunk, |line, continued| out.push(self.record(line, continued, now)));
    }

    /// Appends the unfinished last line, if any.
    pub fn finish(&mut self, splitter: &mut LineSplitter, out: &mut Vec<Event>) {
        let now = now_nanos();
        splitter.finish(|line, continued| out.push(self.record(line, continued, now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l, c| out.push((String::from_utf8_lossy(l).into_owned(), c)));
        }
        s.finish(|l, c| out.push((String::from_utf8_lossy(l).into_owned(), c)));
        out
    }

    #[test]
    fn lines_across_chunks() {
        let got = split(&[b"ab", b"c\nde", b"f\r\n", b"\ng"], 100);
        let want: Vec<(String, bool)> = [("abc", false), ("def", false), ("", false), ("g", false)]
            .iter()
            .map(|(a, b)| (a.to_string(), *b))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn long_lines_split_and_rejoin() {
        for chunking in [1usize, 3, 7, 64] {
            let line = "0123456789".repeat(5);
            let input = format!("{line}\nshort\n");
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(chunking).collect();
            let got = split(&chunks, 16);
            let joined: String =
                got.iter().take_while(|(l, _)| l != "short").map(|(l, _)| l.as_str()).collect();
            assert_eq!(joined, line, "chunking {chunking}");
            assert!(got.iter().all(|(l, _)| l.len() <= 16));
            let pieces: Vec<bool> = got.iter().map(|(_, c)| *c).collect();
            assert_eq!(pieces, vec![true, true, true, false, false]);
        }
    }

    #[test]
    fn cut_respects_utf8() {
        let line = "é".repeat(20); // 2 bytes each
        let got = split(&[line.as_bytes(), b"\n"], 7);
        assert!(got.iter().all(|(l, _)| !l.contains('\u{FFFD}')), "{got:?}");
        assert_eq!(got.iter().map(|(l, _)| l.as_str()).collect::<String>(), line);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_marked() {
        let mut b = RecordBuilder::new("app", "svc");
        let Event::Log(r) = b.record(b"bad \xff byte", false, 1) else { panic!() };
        assert_eq!(r.body, "bad \u{FFFD} byte");
        assert_eq!(b.invalid_utf8, 1);
        assert!(r.attributes.iter().any(|kv| kv.key == attr::INVALID_UTF8));
    }
}
