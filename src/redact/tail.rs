//! Where an open-ended secret ends: the delimiter rules of credential values, read one piece
//! at a time.
//!
//! A credential value, header, token or key body has no length limit: it is masked up to its
//! delimiter whatever its length (a 70 KiB `password=` value leaks no byte). The whole-input
//! engine reads the value to its end with a [`Tail`]; a stream that has not seen the end yet
//! writes the mask, keeps the [`Tail`] (the rule and the little state it needs across pieces:
//! the previous byte, dots left in a JSON Web Token) and feeds it each later piece until it
//! reports the end. Both read the same bytes with the same rule, so the end is the same for
//! every chunking.
//!
//! Some ends are known only from a byte after them (a trailing space before a connection
//! string's `;` is not part of the password; a `.` ends a JWT unless a segment follows; a
//! `\` may start the `\"` that closes a JSON-escaped string): such a suffix is *held*, neither
//! value nor output, until the next piece decides it.

use super::url_credentials::ends_value;

/// How a value ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// At a byte that ends an unquoted value ([`ends_value`]).
    Value,
    /// At the closing quote `"` (not one escaped as `\"`) or a control byte.
    DoubleQuoted,
    /// At the closing `'` or a control byte.
    SingleQuoted,
    /// At the `\"` that closes a JSON-escaped string, or a control byte.
    EscapedQuoted,
    /// A connection string field: at `;`, a quote, a control byte or DEL; spaces before the
    /// end are not part of it.
    Conn,
    /// Token bytes (letters, digits, `_`, `-`; and `.` when `dot`).
    Token { dot: bool },
    /// A JSON Web Token: token bytes, and `.` when a segment follows it (at most `dots` more).
    Jwt,
    /// A PEM body past its first [`super::credentials::MAX_PEM`] bytes: base64, line breaks
    /// (raw or JSON-escaped) and spaces, to the `-----END` line or any other byte; the line
    /// breaks before the end stay outside.
    Pem,
}

/// What a [`Tail`] found in a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// The value ends at this offset of the piece.
    End(usize),
    /// The first this many bytes of the piece are value; the rest is held until more comes.
    More(usize),
}

/// The rule that ends a value and the state it carries from one piece to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    kind: Kind,
    /// The last byte taken as value of a [`Kind::DoubleQuoted`] value (0 before the first).
    prev: u8,
    /// JWT: how many more `.` may join a segment.
    dots: u8,
}

#[inline]
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

#[inline]
fn is_pem_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\r' | b'\n' | b' ' | b'\t' | b'\\')
}

/// Bytes at the end of `data` that a PEM body's end leaves outside (line breaks, spaces, their
/// JSON escapes, a `\` that may start one).
pub(crate) fn pem_trailer(data: &[u8]) -> usize {
    let mut e = data.len();
    loop {
        if e >= 1 && matches!(data[e - 1], b'\r' | b'\n' | b' ' | b'\t') {
            e -= 1;
        } else if e >= 2 && data[e - 2] == b'\\' && matches!(data[e - 1], b'n' | b'r' | b't') {
            e -= 2;
        } else if e >= 1 && data[e - 1] == b'\\' {
            e -= 1;
        } else {
            return data.len() - e;
        }
    }
}

/// Spaces at the end of `data`.
fn trailing_spaces(data: &[u8]) -> usize {
    data.iter().rev().take_while(|&&b| b == b' ').count()
}

impl Tail {
    pub(crate) fn new(kind: Kind) -> Tail {
        Tail { kind, prev: 0, dots: 0 }
    }

    /// A JWT's rule after its header: `dots` more `.segment` may follow.
    pub(crate) fn jwt(dots: u8) -> Tail {
        Tail { kind: Kind::Jwt, prev: 0, dots }
    }

    /// Reads the next piece of the value. With `eof` the input ends after `data`, so the value
    /// ends in it. Takes the bytes it returns as value into its state.
    pub(crate) fn scan(&mut self, data: &[u8], eof: bool) -> Scanned {
        let n = data.len();
        let stop = match self.kind {
            Kind::Value => data.iter().position(|&b| ends_value(b)),
            Kind::DoubleQuoted => {
                let mut prev = self.prev;
                data.iter().position(|&b| {
                    let stop = (b == b'"' && prev != b'\\') || b < b' ';
                    prev = b;
                    stop
                })
            }
            Kind::SingleQuoted => data.iter().position(|&b| b == b'\'' || b < b' '),
            Kind::EscapedQuoted => {
                let mut j = 0;
                loop {
                    if j == n {
                        break None;
                    }
                    let b = data[j];
                    if b < b' ' {
                        break Some(j);
                    }
                    if b == b'\\' {
                        match data.get(j + 1) {
                            Some(b'"') => break Some(j),
                            // `\` at the end: the next piece tells whether it closes.
                            None if !eof => return self.took(data, j),
                            _ => {}
                        }
                    }
                    j += 1;
                }
            }
            Kind::Conn => {
                match data.iter().position(|&b| matches!(b, b';' | b'"' | b'\'' | 0x7F) || b < b' ') {
                    Some(p) => Some(p - trailing_spaces(&data[..p])),
                    None if eof => Some(n - trailing_spaces(data)),
                    None => return self.took(data, n - trailing_spaces(data)),
                }
            }
            Kind::Token { dot } => data.iter().position(|&b| !(is_token_byte(b) || (dot && b == b'.'))),
            Kind::Jwt => {
                let mut j = 0;
                loop {
                    if j == n {
                        break None;
                    }
                    let b = data[j];
                    if is_token_byte(b) {
                        j += 1;
                        continue;
                    }
                    if b == b'.' && self.dots > 0 {
                        match data.get(j + 1) {
                            Some(&c) if is_token_byte(c) => {
                                self.dots -= 1;
                                j += 1;
                                continue;
                            }
                            None if !eof => return self.took(data, j),
                            _ => {}
                        }
                    }
                    break Some(j);
                }
            }
            Kind::Pem => match data.iter().position(|&b| !is_pem_byte(b)) {
                Some(p) => Some(p - pem_trailer(&data[..p])),
                None if eof => Some(n - pem_trailer(data)),
                None => return self.took(data, n - pem_trailer(data)),
            },
        };
        match stop {
            Some(e) => Scanned::End(e),
            None if eof => Scanned::End(n),
            None => self.took(data, n),
        }
    }

    /// `data[..k]` is value, the rest held.
    fn took(&mut self, data: &[u8], k: usize) -> Scanned {
        // Only a `"…"` value needs its previous byte (two values whose rules agree then have
        // equal tails: see `select_open`).
        if k > 0 && self.kind == Kind::DoubleQuoted {
            self.prev = data[k - 1];
        }
        Scanned::More(k)
    }
}

/// The last value read with each rule in one buffer, so that a value starting inside it ends
/// where it does without being read again: `password=password=…` (an anchor every few bytes
/// of a long value) stays linear.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    /// By rule: (start, end, the tail when the value runs past the end of the buffer).
    slots: [Option<(usize, usize, Option<Tail>)>; 8],
}

impl Memo {
    fn slot(kind: Kind) -> Option<usize> {
        Some(match kind {
            Kind::Value => 0,
            Kind::DoubleQuoted => 1,
            Kind::SingleQuoted => 2,
            Kind::EscapedQuoted => 3,
            Kind::Conn => 4,
            Kind::Token { dot: false } => 5,
            Kind::Token { dot: true } => 6,
            Kind::Pem => 7,
            // Its state (dots left) depends on where it starts.
            Kind::Jwt => return None,
        })
    }

    /// The value read with `tail` from `v` in `buf` (`eof`: the buffer ends the input): its
    /// end, and the tail when it runs past the end of the buffer. Every call on one memo must
    /// be for the same buffer.
    pub(crate) fn read(&mut self, buf: &[u8], v: usize, tail: Tail, eof: bool) -> (usize, Option<Tail>) {
        let slot = Memo::slot(tail.kind);
        if let Some((v0, e0, open)) = slot.and_then(|i| self.slots[i]) {
            // The same rule from a later start inside the value stops at the same byte (a `"`
            // at the start ends a `"…"` value at once, whatever comes before it).
            if v0 < v && v <= e0 && !(tail.kind == Kind::DoubleQuoted && buf.get(v) == Some(&b'"')) {
                return (e0, open);
            }
        }
        let mut t = tail;
        let r = match t.scan(&buf[v..], eof) {
            Scanned::End(e) => (v + e, None),
            Scanned::More(k) => (v + k, Some(t)),
        };
        if let Some(i) = slot {
            self.slots[i] = Some((v, r.0, r.1));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes the way a stream does (held bytes go in front
    /// of the next piece); returns where the value ends.
    fn end_in_pieces(tail: Tail, input: &[u8], step: usize) -> usize {
        let mut t = tail;
        let (mut taken, mut held) = (0usize, Vec::new());
        let mut i = 0;
        loop {
            let next = (i + step).min(input.len());
            let eof = next == input.len();
            let mut data = std::mem::take(&mut held);
            data.extend_from_slice(&input[i..next]);
            match t.scan(&data, eof) {
                Scanned::End(e) => return taken + e,
                Scanned::More(k) => {
                    taken += k;
                    held = data[k..].to_vec();
                }
            }
            i = next;
        }
    }

    #[test]
    fn ends_are_the_same_for_every_piece_size() {
        let cases: &[(Tail, &str, usize)] = &[
            (Tail::new(Kind::Value), "abc&x", 3),
            (Tail::new(Kind::DoubleQuoted), r#"a\"b"c"#, 4),
            (Tail::new(Kind::SingleQuoted), "ab'c", 2),
            (Tail::new(Kind::EscapedQuoted), r#"a\b\"c"#, 3),
            (Tail::new(Kind::Conn), "pa ss  ;x", 5),
            (Tail::new(Kind::Conn), "pass   ", 4),
            (Tail::new(Kind::Token { dot: false }), "ab_c.d", 4),
            (Tail::new(Kind::Token { dot: true }), "ab_c.d e", 6),
            (Tail::jwt(2), "ab.cd.ef.gh", 8),
            (Tail::jwt(2), "ab.cd. x", 5),
            (Tail::new(Kind::Pem), "MIIB\nAAA=\n\\n-----END", 9),
            (Tail::new(Kind::Pem), "MIIB \n", 4),
        ];
        for (tail, input, want) in cases {
            for step in 1..=input.len() {
                assert_eq!(end_in_pieces(*tail, input.as_bytes(), step), *want, "{input:?} step {step}");
            }
        }
    }
}
