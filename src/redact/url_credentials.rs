//! The `url_credentials` detector: credentials inside URLs.
//!
//! Three shapes:
//! - **User-info.** After `://` (any scheme, any case; also `:\/\/`, JSON-escaped), the
//!   authority runs to the first `/ ? #`, quote, bracket, backslash, whitespace or control
//!   byte, or at most [`MAX_AUTHORITY`] bytes. If it holds an `@` followed by a host (a name,
//!   or an IPv6 literal in brackets), everything before the last such `@` is the user-info:
//!   `user:password` keeps `user:` and masks the password (`://:password@` keeps the `:`);
//!   `user%3Apassword` (percent-encoded colon) keeps `user%3A`; a user-info without a colon is
//!   a token standing alone and is masked whole, and so is `user:password` when the user name
//!   holds [`USER_DIGITS`] or more digits (a card number as a user name would otherwise pass
//!   through as the kept part). `https://api.example.com:8443/x` and `alice@example.com`
//!   have no user-info.
//!
//!   Passwords hold the bytes that end an authority too (`/ # ? \ { } "`, spaces). When the
//!   authority has no `@` but starts with `user:` and what follows the colon is not a port
//!   (digits), the password runs on to the first `@` that is followed by a host, within
//!   [`MAX_EXTENDED_PASSWORD`] bytes and on the same line ([`extended_password`]):
//!   `mysql://app:p/ss w#rd@db:3306/x` masks `p/ss w#rd`.
//! - **Authority without a scheme.** `user:password@host:port` (a DSN written without its
//!   scheme, `app:s3cret@db.internal:5432`): the password is masked when the user name and
//!   password are plain tokens and a host with a numeric port follows the `@`
//!   ([`schemeless`]). E-mail addresses and `mailto:a@b` have no port.
//! - **Credential parameters.** `?`, `&`, `#` (an OAuth implicit-flow fragment,
//!   `#access_token=`) or `;` (matrix and JDBC parameters, `;password=`), also escaped as
//!   `&amp;` (HTML), `\u0026` or `\u003f` (JSON), then a parameter name from the list (ASCII
//!   case ignored), then `=`: the value up to the next `&`, `#`, quote, bracket, `,`, `;`,
//!   whitespace or control byte is masked. The value has no length limit; a stream that has
//!   not seen its end yet writes the mask and drops bytes until it does.
//!
//! The scheme, host, port, path, user name and other parameters stay readable.

use super::tail::{Kind as TailKind, Tail};
use super::{BuildError, BuildErrorKind, Cand, Detector};

/// The longest authority (`user:password@host:port`) the detector looks through for an `@`:
/// this bounds what a stream holds back after `://`. A longer authority is cut here.
pub const MAX_AUTHORITY: usize = 2048;

/// The longest password that runs past a byte that would end an authority (see
/// [`extended_password`]).
pub const MAX_EXTENDED_PASSWORD: usize = 128;

/// The longest user name, password and host of an authority without a scheme (see
/// [`schemeless`]); together they bound the engine's lookahead.
pub const SCHEMELESS_USER: usize = 32;
pub const SCHEMELESS_PASSWORD: usize = 64;
pub const SCHEMELESS_HOST: usize = 48;

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
            if is_trigger(buf, y) {
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

    /// Handles the trigger byte (`:`, `?`, `&`, `#`, `;`, `@` or `\\`) at `y`. A scan feeds every trigger from
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
                    out.push(Cand { start: u, end, keep, det: Detector::UrlCredentials, open: None })
                }
            }
            return;
        }
        if buf[y] == b'@' {
            if let Some((start, end)) = schemeless(buf, y, st.eof) {
                if start >= st.from {
                    out.push(Cand { start, end, keep: 0, det: Detector::UrlCredentials, open: None });
                }
            }
            return;
        }
        // A credential parameter after `?`, `&`, `#` or `;`, or their escapes: `&amp;` (HTML)
        // and `\u0026`, `\u003f` (JSON, Go's default escaping of `&`).
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
                out.push(Cand { start: v, end: v + len, keep: 0, det: Detector::UrlCredentials, open: None })
            }
            None if v == n => {}
            None => out.push(Cand {
                start: v,
                end: n,
                keep: 0,
                det: Detector::UrlCredentials,
                open: (!st.eof).then(|| Tail::new(TailKind::Value)),
            }),
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

/// Whether the byte at `y` is a trigger the scan hands to [`UrlCredentials::trigger`] (the
/// byte-at-a-time definition of the engine's trigger mask, see `card::masks`).
pub(crate) fn is_trigger(buf: &[u8], y: usize) -> bool {
    matches!(buf[y], b':' | b'?' | b'&' | b'\\' | b'#' | b';' | b'@')
}

/// Bytes of a host name (and of an IPv6 literal, inside brackets).
#[inline]
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'%')
}

/// Whether a host starts at `h` (after an `@`): `Some(true)` when a name of host bytes or a
/// bracketed IPv6 literal starts there and ends at a byte that may follow a host (or at the end
/// of the input); `None` when `buf` ends before that is known and more may come.
fn host_follows(buf: &[u8], h: usize, eof: bool) -> Option<bool> {
    let n = buf.len();
    let mut j = h;
    if j < n && buf[j] == b'[' {
        j += 1;
        while j < n && j - h < 64 && (buf[j].is_ascii_hexdigit() || matches!(buf[j], b':' | b'.' | b'%')) {
            j += 1;
        }
        return if j == n { if eof { Some(false) } else { None } } else { Some(buf[j] == b']' && j > h + 1) };
    }
    while j < n && j - h < 256 && is_host_byte(buf[j]) {
        j += 1;
    }
    if j == h {
        return if j == n && !eof { None } else { Some(false) };
    }
    if j == n {
        return if eof { Some(true) } else { None };
    }
    Some(
        buf[j] <= b' '
            || matches!(
                buf[j],
                b':' | b'/'
                    | b'?'
                    | b'#'
                    | b'"'
                    | b'\''
                    | b'>'
                    | b')'
                    | b']'
                    | b','
                    | b';'
                    | b'\\'
                    | b'`'
                    | b'<'
            ),
    )
}

/// The user-info of the authority starting at `u`.
fn userinfo(buf: &[u8], u: usize, eof: bool) -> Userinfo {
    let limit = (u + MAX_AUTHORITY).min(buf.len());
    // The last two `@`: only the last one can be right before the end of the authority, so
    // when it is not followed by a host, the one before it is the user-info's end.
    let (mut last_at, mut prev_at) = (None, None);
    let mut j = u;
    while j < limit && !ends_authority(buf[j]) {
        if buf[j] == b'@' {
            prev_at = last_at;
            last_at = Some(j);
        }
        j += 1;
    }
    if j == buf.len() && j < u + MAX_AUTHORITY && !eof {
        return Userinfo::Undecided;
    }
    // An `@` right before the end of the authority is followed by a host only when an IPv6
    // literal starts there.
    let at = last_at.filter(|&at| at + 1 < j || buf.get(at + 1) == Some(&b'[')).or(prev_at);
    let Some(at) = at else {
        return match extended_password(buf, u, j, eof) {
            Some(Some((end, keep))) => Userinfo::Found { end, keep },
            Some(None) => Userinfo::None,
            None => Userinfo::Undecided,
        };
    };
    if at == u {
        return Userinfo::None;
    }
    let at = match password_past_path(buf, u, at, j, eof) {
        None => return Userinfo::Undecided,
        Some(later) => later.unwrap_or(at),
    };
    split_userinfo(&buf[u..at]).map_or(Userinfo::None, |keep| Userinfo::Found { end: at, keep })
}

/// How many bytes of the user-info `info` (the bytes between `://` and `@`) stay readable, or
/// `None` when it holds no secret (`user:@`).
pub(crate) fn split_userinfo(info: &[u8]) -> Option<usize> {
    let colon = memchr::memchr(b':', info).map(|c| (c, 1)).or_else(|| {
        info.windows(3).position(|w| w[0] == b'%' && w[1] == b'3' && (w[2] | 0x20) == b'a').map(|c| (c, 3))
    });
    match colon {
        None => Some(0),
        Some((c, len)) if c + len == info.len() => None,
        Some((c, len)) => Some(if keeps_user(&info[..c]) { c + len } else { 0 }),
    }
}

/// The password of `scheme://user:password@host` that holds bytes ending an authority, for
/// the authority `buf[u..j]` that has no `@`: `Some(Some((end, keep)))` when `buf[u..j]` is
/// `user:` and more (not `host:port`: digits after the colon that do not run into a letter
/// are a port), and an `@` followed by a host comes within
/// [`MAX_EXTENDED_PASSWORD`] bytes of the colon, before any control byte (a newline) and any
/// other `://`; `Some(None)` when not; `None` when `buf` ends before that is known.
pub fn extended_password(buf: &[u8], u: usize, j: usize, eof: bool) -> Option<Option<(usize, usize)>> {
    let n = buf.len();
    let Some(c) = memchr::memchr(b':', &buf[u..j]).map(|c| u + c) else { return Some(None) };
    let port = buf[c + 1..j].iter().take_while(|b| b.is_ascii_digit()).count();
    let after_port = buf.get(c + 1 + port).copied();
    if c + 1 == j
        || (port > 0 && !after_port.is_some_and(|b| b.is_ascii_alphanumeric()))
        || j >= u + MAX_AUTHORITY
    {
        // `host:port` (also `host:1433;user=…`), `host:` or a cut authority.
        return Some(None);
    }
    let limit = (c + 1 + MAX_EXTENDED_PASSWORD).min(n);
    let mut k = j;
    let mut space = false;
    while k < limit {
        let b = buf[k];
        if b < b' ' || b == 0x7F || (b == b':' && buf[k + 1..].starts_with(b"//")) {
            return Some(None);
        }
        space |= b == b' ';
        if b == b'@' {
            match host_follows(buf, k + 1, eof) {
                None => return None,
                // An `@` inside the password (`a/b@c@db:5432`): a later one may end it.
                Some(false) => {}
                // Across a space the `@host` must end an authority (`:port` or a path), or
                // prose after `://host:notaport` would run on to an e-mail (`bob@x.com`).
                Some(true) if space => {
                    return match ends_with_port_or_path(buf, k + 1, eof) {
                        None => None,
                        Some(false) => Some(None),
                        Some(true) => Some(Some((k, if keeps_user(&buf[u..c]) { c + 1 - u } else { 0 }))),
                    };
                }
                Some(true) => return Some(Some((k, if keeps_user(&buf[u..c]) { c + 1 - u } else { 0 }))),
            }
        }
        k += 1;
    }
    if k == n && k < c + 1 + MAX_EXTENDED_PASSWORD && !eof { None } else { Some(None) }
}

/// A password holding both `@` and `/` (`https://user:p@ss/word@db.example.com/x`): the
/// authority `buf[u..j]` ends at a `/`, its `@` at `at` is followed by a bare word (no dot, no
/// port, not `localhost`), and within [`MAX_EXTENDED_PASSWORD`] bytes after the colon, before
/// any space, control byte, quote or other `://`, a later `@` is followed by a host with a dot
/// or a port: that `@` ends the user-info. `Some(None)` when not (`https://u:p@db/@scope/pkg`
/// keeps its path); `None` when `buf` ends before that is known and more may come.
pub(crate) fn password_past_path(
    buf: &[u8],
    u: usize,
    at: usize,
    j: usize,
    eof: bool,
) -> Option<Option<usize>> {
    let n = buf.len();
    let Some(c) = memchr::memchr(b':', &buf[u..at]).map(|c| u + c) else { return Some(None) };
    let host = &buf[at + 1..j];
    if buf.get(j) != Some(&b'/') || host.contains(&b'.') || host.contains(&b':') || host.is_empty() {
        return Some(None);
    }
    if host.eq_ignore_ascii_case(b"localhost") {
        return Some(None);
    }
    let limit = (c + 1 + MAX_EXTENDED_PASSWORD).min(n);
    let mut k = j;
    while k < limit {
        let b = buf[k];
        if b <= b' '
            || b == 0x7F
            || matches!(b, b'"' | b'\'' | b'<' | b'>')
            || (b == b':' && buf[k + 1..].starts_with(b"//"))
        {
            return Some(None);
        }
        if b == b'@' {
            return match host_with_dot_or_port(buf, k + 1, eof) {
                None => None,
                Some(true) => Some(Some(k)),
                Some(false) => Some(None),
            };
        }
        k += 1;
    }
    if k == n && k < c + 1 + MAX_EXTENDED_PASSWORD && !eof { None } else { Some(None) }
}

/// Whether a host with a dot, or followed by `:` and a digit, starts at `h`; `None` when `buf`
/// ends before that is known and more may come.
fn host_with_dot_or_port(buf: &[u8], h: usize, eof: bool) -> Option<bool> {
    let mut j = h;
    while j < buf.len() && j - h < 256 && is_host_byte(buf[j]) {
        j += 1;
    }
    if j == buf.len() && !eof {
        return None;
    }
    let dot = buf[h..j].contains(&b'.') && buf[h..j].iter().any(u8::is_ascii_alphabetic);
    match (buf.get(j), buf.get(j + 1)) {
        _ if j == h => Some(false),
        (Some(b':'), Some(d)) if d.is_ascii_digit() => Some(true),
        (Some(b':'), None) if !eof => None,
        _ => Some(dot),
    }
}

/// Whether the host at `h` is followed by `:` and a digit, or by `/`; `None` when `buf` ends
/// before that is known and more may come.
fn ends_with_port_or_path(buf: &[u8], h: usize, eof: bool) -> Option<bool> {
    let mut j = h;
    while j < buf.len() && j - h < 256 && is_host_byte(buf[j]) {
        j += 1;
    }
    match (buf.get(j), buf.get(j + 1)) {
        (Some(b'/'), _) => Some(true),
        (Some(b':'), Some(d)) => Some(d.is_ascii_digit()),
        (None, _) | (Some(b':'), None) if !eof => None,
        _ => Some(false),
    }
}

/// URI schemes written `scheme:user@host` (no `//`): `sip:alice@host:5060` is an address, not
/// the user `sip` with the password `alice`.
const OPAQUE_SCHEMES: &[&str] =
    &["sip", "sips", "tel", "mailto", "xmpp", "im", "pres", "h323", "iax", "news"];

/// A byte of a user name in an authority without a scheme.
#[inline]
fn is_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'%' | b'+' | b'~')
}

/// A byte of a password in an authority without a scheme.
#[inline]
fn is_password_byte(b: u8) -> bool {
    b > b' '
        && b != 0x7F
        && !matches!(
            b,
            b'@' | b':'
                | b'/'
                | b'\\'
                | b'"'
                | b'\''
                | b'<'
                | b'>'
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b','
                | b';'
                | b'='
                | b'`'
                | b'|'
        )
}

/// The secret of `user:password@host:port` written without a scheme, for the `@` at `y`:
/// `(start, end)` of the password (of `user:password` when the user name holds
/// [`USER_DIGITS`] or more digits). The user name (at most [`SCHEMELESS_USER`] bytes of
/// letters, digits and `. _ - % + ~`) must not follow another user byte, `/`, `:` or `@` (so
/// `scheme://` URLs are left to the user-info rule); the password is at most
/// [`SCHEMELESS_PASSWORD`] bytes with no space, quote, bracket or `@ : / \ , ; =`; the host
/// (at most [`SCHEMELESS_HOST`] bytes) is followed by `:` and a port of 1 to 5 digits that
/// does not touch a letter, a digit or a `.`. `None` also when `buf` ends before the port
/// does and more may come (the engine's lookahead covers it).
pub fn schemeless(buf: &[u8], y: usize, eof: bool) -> Option<(usize, usize)> {
    let n = buf.len();
    // Host and port.
    let mut h = y + 1;
    while h < n && h - y <= SCHEMELESS_HOST && is_host_byte(buf[h]) {
        h += 1;
    }
    if h == y + 1 || h >= n || buf[h] != b':' {
        return None;
    }
    let mut p = h + 1;
    while p < n && p - h <= 6 && buf[p].is_ascii_digit() {
        p += 1;
    }
    if !(2..=6).contains(&(p - h)) || (p == n && !eof) {
        return None;
    }
    if p < n && (buf[p].is_ascii_alphanumeric() || buf[p] == b'.') {
        return None;
    }
    // Password, colon, user.
    let mut ps = y;
    while ps > 0 && y - ps < SCHEMELESS_PASSWORD && is_password_byte(buf[ps - 1]) {
        ps -= 1;
    }
    if ps == y || ps == 0 || buf[ps - 1] != b':' {
        return None;
    }
    let c = ps - 1;
    let mut us = c;
    while us > 0 && c - us < SCHEMELESS_USER && is_user_byte(buf[us - 1]) {
        us -= 1;
    }
    if us == c || (us > 0 && (is_user_byte(buf[us - 1]) || matches!(buf[us - 1], b'/' | b':' | b'@'))) {
        return None;
    }
    if OPAQUE_SCHEMES.iter().any(|s| buf[us..c].eq_ignore_ascii_case(s.as_bytes())) {
        return None;
    }
    Some((if keeps_user(&buf[us..c]) { ps } else { us }, y))
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
        // A last `@` that ends the authority is not followed by a host: the one before it is.
        assert_eq!(found("://u:p@u:p@"), ["p"]);
        assert_eq!(found("https://u:pw@h@ x"), ["pw"]);
        // A user name with 6 or more digits goes with the password.
        assert_eq!(found("https://4111111111111111:pw@h/"), ["4111111111111111:pw"]);
        assert_eq!(found("https://a1b2c3d4e5f6:pw@h/"), ["a1b2c3d4e5f6:pw"]);
        assert_eq!(found("https://svc12345:pw@h/"), ["pw"]);
    }

    #[test]
    fn url_edge_cases_of_issue_12() {
        let r = crate::redact::Redactor::with_defaults();
        let red = |s: &str| r.redact_str(s, &mut crate::redact::Counts::default()).into_owned();
        // A bad port is no password running on to a later e-mail address.
        for keep in [
            "see https://host:notaport/x and write to bob@x.com",
            "https://host:notaport ask bob@x.com",
            "sip:alice@host:5060",
            "SIP:alice@pbx.example.com:5061 ringing",
            "https://u:p@db/@scope/pkg",
        ] {
            let out = red(keep);
            assert!(out.contains("bob@x.com") || !keep.contains("bob"), "{out}");
            assert!(!keep.starts_with("sip") && !keep.starts_with("SIP") || out == keep, "{out}");
        }
        assert_eq!(red("https://u:p@db/@scope/pkg"), "https://u:****@db/@scope/pkg");
        // A password holding both `@` and `/`.
        assert_eq!(
            red("https://user:p@ss/word@db.example.com/path"),
            "https://user:****@db.example.com/path"
        );
        assert_eq!(red("postgres://app:a/b@c@db:5432/x"), "postgres://app:****@db:5432/x");
        // Across a space, the `@host` must end an authority.
        assert_eq!(red("mysql://app:p/ss w#rd@db:3306/x"), "mysql://app:****@db:3306/x");
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
        assert!(out[0].open.is_some());
    }
}
