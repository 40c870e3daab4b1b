//! The `url_credentials` detector: credentials inside URLs.
//!
//! Two shapes:
//! - **User-info.** After `://`, the authority runs to the first `/ ? #`, quote, bracket,
//!   backslash, whitespace or control byte, or at most [`MAX_AUTHORITY`] bytes. If it holds an
//!   `@`, everything before the last `@` is the user-info: `user:password` keeps `user:` and
//!   masks the password; a user-info without `:` is a token standing alone and is masked
//!   whole, and so is `user:password` when the user name holds [`USER_DIGITS`] or more digits
//!   (a card number as a user name would otherwise pass through as the kept part). `https://api.example.com:8443/x` and `alice@example.com` have no user-info.
//! - **Credential parameters.** `?` or `&`, then a parameter name from the list (ASCII case
//!   ignored), then `=`: the value up to the next `&`, `#`, quote, bracket, `,`, `;`,
//!   whitespace or control byte is masked. The value has no length limit; a stream that has
//!   not seen its end yet writes the mask and drops bytes until it does.
//!
//! The host, port, path and other parameters stay readable.

use super::{BuildError, BuildErrorKind, Cand, Detector};

/// The longest authority (`user:password@host:port`) the detector looks through for an `@`:
/// this bounds what a stream holds back after `://`. A longer authority is cut here.
pub const MAX_AUTHORITY: usize = 2048;

/// The built-in credential parameter names (compared ignoring ASCII case).
pub const QUERY_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "api_key",
    "apikey",
    "api-key",
    "secret",
    "client_secret",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "awsaccesskeyid",
    "x-goog-signature",
    "x-goog-credential",
];

/// Bytes that end a URL authority.
#[inline]
pub(crate) fn ends_authority(b: u8) -> bool {
    b <= b' '
        || b == 0x7F
        || matches!(
            b,
            b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'\\' | b'`' | b'{' | b'}' | b'|' | b'[' | b']'
        )
}

/// Bytes that end a credential parameter value.
#[inline]
pub(crate) fn ends_value(b: u8) -> bool {
    b <= b' '
        || b == 0x7F
        || matches!(
            b,
            b'&' | b'#'
                | b'"'
                | b'\''
                | b'<'
                | b'>'
                | b'\\'
                | b'`'
                | b'{'
                | b'}'
                | b'|'
                | b'['
                | b']'
                | b'('
                | b')'
                | b','
                | b';'
        )
}

/// The first byte of `buf` that ends a credential value.
pub(crate) fn find_value_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| ends_value(b))
}

/// The compiled parameter list.
#[derive(Debug)]
pub(crate) struct UrlCredentials {
    /// Lower-case names.
    params: Vec<Vec<u8>>,
    max_param: usize,
}

impl UrlCredentials {
    pub(crate) fn new(extra: &[String]) -> Result<UrlCredentials, BuildError> {
        let mut params = Vec::new();
        for p in QUERY_PARAMS.iter().copied().chain(extra.iter().map(String::as_str)) {
            let p = p.trim();
            if p.is_empty() {
                return Err(BuildError::new(BuildErrorKind::EmptyEntry {
                    what: "parameter",
                    list: "query_params",
                }));
            }
            params.push(p.to_ascii_lowercase().into_bytes());
        }
        let max_param = params.iter().map(Vec::len).max().unwrap_or(0);
        Ok(UrlCredentials { params, max_param })
    }

    pub(crate) fn max_param_len(&self) -> usize {
        self.max_param
    }

    /// Bytes before a candidate that decide it: `\u0026name=` before a value, `:\/\/` before
    /// a user-info.
    pub(crate) fn context(&self) -> usize {
        self.max_param + 7
    }

    fn is_param(&self, name: &[u8]) -> bool {
        self.params.iter().any(|p| p.len() == name.len() && p.eq_ignore_ascii_case(name))
    }

    /// Reports user-info and credential values starting at or after `from`; returns the start
    /// of a user-info that cannot be decided before the end of `buf` (`usize::MAX` if none).
    ///
    /// The engine does not call this: it finds the trigger bytes in its own one pass over the
    /// input and hands them to [`UrlCredentials::trigger`]. This is the same walk, byte by
    /// byte, for the detector's own tests.
    #[cfg(test)]
    pub(crate) fn candidates(&self, buf: &[u8], from: usize, eof: bool, out: &mut Vec<Cand>) -> usize {
        let mut st = Scan::new(from, eof);
        for y in self.scan_start(from)..buf.len() {
            if matches!(buf[y], b':' | b'?' | b'&' | b'\\') {
                self.trigger(&mut st, buf, y, out);
            }
        }
        st.undecided
    }

    /// Where a scan for candidates starting at or after `from` must begin looking for
    /// triggers: `?name=` before a value may start up to the longest name + 2 bytes earlier.
    pub(crate) fn scan_start(&self, from: usize) -> usize {
        from.saturating_sub(self.max_param + 7)
    }

    /// Handles the trigger byte (`:`, `?` or `&`) at `y`. A scan feeds every trigger from
    /// [`UrlCredentials::scan_start`] on, in increasing order.
    #[inline]
    pub(crate) fn trigger(&self, st: &mut Scan, buf: &[u8], y: usize, out: &mut Vec<Cand>) {
        let n = buf.len();
        if buf[y] == b':' {
            // User-info after `://` (or `:\/\/`, JSON-escaped slashes).
            let rest = &buf[y + 1..];
            let u = if rest.starts_with(b"//") {
                y + 3
            } else if rest.starts_with(b"\\/\\/") {
                y + 5
            } else {
                return;
            };
            if st.userinfo_done || u < st.from {
                return;
            }
            match userinfo(buf, u, st.eof) {
                Userinfo::Undecided => {
                    // The authority runs to the end of `buf`, so no `://` follows.
                    st.undecided = u;
                    st.userinfo_done = true;
                }
                Userinfo::None => {}
                Userinfo::Found { end, keep } => {
                    out.push(Cand { start: u, end, keep, det: Detector::UrlCredentials, open: false })
                }
            }
            return;
        }
        // A credential parameter after `?` or `&`, or their escapes: `&amp;` (HTML) and
        // `\u0026`, `\u003f` (JSON, Go's default escaping of `&`).
        let name_start = match buf[y] {
            b'&' if buf[y + 1..].starts_with(b"amp;") => y + 5,
            b'\\' => match buf.get(y + 1..y + 6) {
                Some(b"u0026" | b"u003f" | b"u003F") => y + 6,
                _ => return,
            },
            _ => y + 1,
        };
        let mut j = name_start;
        while j < n && j - name_start <= self.max_param && is_name_byte(buf[j]) {
            j += 1;
        }
        if j >= n || buf[j] != b'=' || j == name_start || !self.is_param(&buf[name_start..j]) {
            return;
        }
        let v = j + 1;
        if v < st.from {
            return;
        }
        // A value starting inside the last one ends where it does. When that end is the end of
        // `buf` (a found end is a delimiter, always before it), the end is not seen yet: the
        // value is open too, not closed at the end of a stream chunk.
        let end = match st.last_end {
            Some(e) if v <= e && e == n => None,
            Some(e) if v < e => Some(e - v),
            _ => find_value_end(&buf[v..]),
        };
        st.last_end = Some(v + end.unwrap_or(n - v));
        match end {
            Some(0) => {}
            Some(len) => {
                out.push(Cand { start: v, end: v + len, keep: 0, det: Detector::UrlCredentials, open: false })
            }
            None if v == n => {}
            None => {
                out.push(Cand { start: v, end: n, keep: 0, det: Detector::UrlCredentials, open: !st.eof })
            }
        }
    }
}

/// The state of one scan of a buffer for URL credentials.
#[derive(Debug)]
pub(crate) struct Scan {
    from: usize,
    eof: bool,
    /// The start of a user-info that runs past the end of the buffer (`usize::MAX`: none).
    pub(crate) undecided: usize,
    /// An undecided user-info was seen: no `://` can follow it.
    userinfo_done: bool,
    /// The end of the last value found: a value starting before it ends there too (no
    /// delimiter in between), which keeps `?token=a?token=a…` linear.
    last_end: Option<usize>,
}

impl Scan {
    /// A scan for candidates starting at or after `from`; `eof` when the buffer ends the input.
    pub(crate) fn new(from: usize, eof: bool) -> Scan {
        Scan { from, eof, undecided: usize::MAX, userinfo_done: false, last_end: None }
    }
}

#[inline]
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

enum Userinfo {
    None,
    Undecided,
    Found { end: usize, keep: usize },
}

/// The user-info of the authority starting at `u`.
fn userinfo(buf: &[u8], u: usize, eof: bool) -> Userinfo {
    let limit = (u + MAX_AUTHORITY).min(buf.len());
    let mut last_at = None;
    let mut j = u;
    while j < limit && !ends_authority(buf[j]) {
        if buf[j] == b'@' {
            last_at = Some(j);
        }
        j += 1;
    }
    if j == buf.len() && j < u + MAX_AUTHORITY && !eof {
        return Userinfo::Undecided;
    }
    let Some(at) = last_at else { return Userinfo::None };
    if at == u {
        return Userinfo::None;
    }
    match memchr::memchr(b':', &buf[u..at]) {
        None => Userinfo::Found { end: at, keep: 0 },
        Some(c) if u + c + 1 == at => Userinfo::None,
        Some(c) => Userinfo::Found { end: at, keep: if keeps_user(&buf[u..u + c]) { c + 1 } else { 0 } },
    }
}

/// Whether the user name of `user:password@` stays readable: not when it holds
/// [`USER_DIGITS`] or more digits, since it may itself be a card or account number (kept, it
/// would hide inside the kept part of the match, out of reach of the other detectors).
pub(crate) fn keeps_user(user: &[u8]) -> bool {
    user.iter().filter(|b| b.is_ascii_digit()).count() < USER_DIGITS
}

/// The fewest digits that make a URL user name secret too (the shortest account number).
pub const USER_DIGITS: usize = 6;

#[cfg(test)]
mod tests {
    use super::*;

    fn found(s: &str) -> Vec<String> {
        let u = UrlCredentials::new(&[]).unwrap();
        let mut out = Vec::new();
        u.candidates(s.as_bytes(), 0, true, &mut out);
        out.iter().map(|c| s[c.start + c.keep..c.end].to_owned()).collect()
    }

    #[test]
    fn userinfo_password_and_lone_token() {
        assert_eq!(found("postgres://app:s3cret@db:5432/x"), ["s3cret"]);
        assert_eq!(found("https://ghp_abc123@github.com/o/r.git"), ["ghp_abc123"]);
        assert_eq!(found("\"https://u:p%40ss@h/\""), ["p%40ss"]);
        // The last `@` of the authority ends the user-info.
        assert_eq!(found("https://u:p@ss@host/"), ["p@ss"]);
        // A user name with 6 or more digits goes with the password.
        assert_eq!(found("https://4111111111111111:pw@h/"), ["4111111111111111:pw"]);
        assert_eq!(found("https://a1b2c3d4e5f6:pw@h/"), ["a1b2c3d4e5f6:pw"]);
        assert_eq!(found("https://svc12345:pw@h/"), ["pw"]);
    }

    #[test]
    fn no_userinfo() {
        for s in [
            "https://api.example.com:8443/v1?page=2",
            "mail alice@example.com",
            "https://example.com/users/bob@example.com",
            "http://host:80 user@example.com",
            "https://u:@host/",
            "https://@host/",
        ] {
            assert!(found(s).is_empty(), "{s}");
        }
    }

    #[test]
    fn credential_parameters() {
        assert_eq!(found("GET /x?page=2&access_token=abc.def&sort=asc"), ["abc.def"]);
        assert_eq!(found("https://b.s3.amazonaws.com/k?X-Amz-Signature=ff00aa#frag"), ["ff00aa"]);
        assert_eq!(found("{\"u\":\"/cb?code=1&TOKEN=xyz\"}"), ["xyz"]);
        assert!(found("/x?page=2&tokens=abc").is_empty());
        assert!(found("/x?token=&a=1").is_empty());
        assert!(found("token=abc").is_empty(), "needs ? or &");
    }

    #[test]
    fn undecided_at_end_of_stream_chunk() {
        let u = UrlCredentials::new(&[]).unwrap();
        let mut out = Vec::new();
        assert_eq!(u.candidates(b"see https://user:pa", 0, false, &mut out), 12);
        out.clear();
        u.candidates(b"x?token=abc", 0, false, &mut out);
        assert!(out[0].open);
    }
}
