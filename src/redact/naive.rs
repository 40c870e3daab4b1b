//! A slow, obviously-correct reference for the engine, used by property tests: it tries every
//! detector at every byte position straight from the definitions in the detector modules
//! (no triggers, no automata, no carry), then keeps the leftmost-longest non-overlapping
//! candidates. The fast engine must give the same output on every input.

use super::mask::Masker;
use super::url_credentials::{MAX_AUTHORITY, QUERY_PARAMS, ends_authority, ends_value};
use super::{Counts, Detector, Options, after_escape, bank_account, card, is_alnum, word_start};

/// Redacts `input` the slow way. Panics on options the engine would reject.
pub fn redact(opts: &Options, input: &[u8]) -> (Vec<u8>, Counts) {
    let on = |d: Detector| opts.detectors.contains(&d);
    let kws: Vec<String> = bank_account::KEYWORDS
        .iter()
        .copied()
        .chain(opts.bank_account_keywords.iter().map(String::as_str))
        .flat_map(bank_account::variants)
        .collect();
    let params: Vec<String> = QUERY_PARAMS
        .iter()
        .copied()
        .chain(opts.query_params.iter().map(String::as_str))
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    let b = input;
    let n = b.len();
    // (start, end, keep, detector)
    let mut cands: Vec<(usize, usize, usize, Detector)> = Vec::new();
    for x in 0..n {
        if on(Detector::Card) {
            if let Some(e) = naive_card(b, x) {
                cands.push((x, e, 0, Detector::Card));
            }
        }
        if on(Detector::Iban) {
            if let Some(e) = naive_iban(b, x) {
                cands.push((x, e, 0, Detector::Iban));
            }
        }
        if on(Detector::BankAccount) {
            if let Some(e) = naive_bank(b, x, &kws) {
                cands.push((x, e, 0, Detector::BankAccount));
            }
        }
        if on(Detector::UrlCredentials) {
            if let Some((e, keep)) = naive_userinfo(b, x) {
                cands.push((x, e, keep, Detector::UrlCredentials));
            }
            if let Some(e) = naive_param(b, x, &params) {
                cands.push((x, e, 0, Detector::UrlCredentials));
            }
            // An authority without a scheme, decided at its `@` (the definition is shared).
            if b[x] == b'@' {
                if let Some((s, e)) = super::url_credentials::schemeless(b, x, true) {
                    cands.push((s, e, 0, Detector::UrlCredentials));
                }
            }
        }
        let mut cred_on = [false; 8];
        for (slot, d) in cred_on.iter_mut().zip(super::credentials::DETECTORS) {
            *slot = on(d);
        }
        if cred_on.iter().any(|&o| o) {
            let mut found = Vec::new();
            let _ = super::credentials::at_position(b, x, true, &cred_on, &mut found);
            cands.extend(found.iter().map(|c| (c.start, c.end, c.keep, c.det)));
        }
        for k in &opts.keywords {
            if !k.is_empty() && b[x..].starts_with(k.as_bytes()) {
                cands.push((x, x + k.len(), 0, Detector::Keyword));
            }
        }
    }
    cands.sort_by_key(|&(s, e, _, d)| (s, std::cmp::Reverse(e), d));
    let masker = Masker::new(opts.mask, opts.hmac_key).expect("valid mask options");
    let mut out = Vec::new();
    let mut counts = Counts::default();
    let mut pos = 0;
    for (s, e, keep, d) in cands {
        if s < pos {
            continue;
        }
        out.extend_from_slice(&b[pos..s + keep]);
        masker.write(d, &b[s + keep..e], &mut out);
        counts.bump(d);
        pos = e;
    }
    out.extend_from_slice(&b[pos..]);
    if !opts.patterns.is_empty() {
        let p = super::custom::Patterns::new(&opts.patterns).expect("valid patterns");
        if let Some(o) = p.redact_whole(&out, &masker, &mut counts) {
            out = o;
        }
    }
    (out, counts)
}

fn digit(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(u8::is_ascii_digit)
}

fn free_after(b: &[u8], y: usize) -> bool {
    y == b.len() || !is_alnum(b[y])
}

/// The longest card number starting at `x`.
fn naive_card(b: &[u8], x: usize) -> Option<usize> {
    if !digit(b, x) || !card::starts_ok(b, x) {
        return None;
    }
    let mut best = None;
    for y in x + 13..=(x + 19 + 5 * card::MAX_SEP_LEN).min(b.len()) {
        let t = &b[x..y];
        if !card::ends_ok(b, y) {
            continue;
        }
        let digits: Vec<u8> = t.iter().copied().filter(u8::is_ascii_digit).collect();
        if !(13..=19).contains(&digits.len()) {
            continue;
        }
        let shape_ok = if t.iter().all(u8::is_ascii_digit) {
            !card::in_hex_id(b, x, y)
        } else {
            // Digit groups and the gaps between them: every gap one whole separator, all of
            // one kind.
            let mut groups = Vec::new();
            let mut gaps = Vec::new();
            let mut i = 0;
            while i < t.len() {
                let d = t[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                let g = t[i + d..].iter().take_while(|c| !c.is_ascii_digit()).count();
                groups.push(&t[i..i + d]);
                if g > 0 {
                    gaps.push(&t[i + d..i + d + g]);
                }
                i += d + g;
            }
            let kinds: Vec<Option<(card::Sep, usize)>> = gaps.iter().map(|g| card::separator(g, 0)).collect();
            groups.len() >= 2
                && gaps.len() + 1 == groups.len()
                && groups[0].len() == 4
                && groups[1..].iter().all(|g| (3..=7).contains(&g.len()))
                && kinds.iter().zip(&gaps).all(|(k, g)| k.is_some_and(|(_, len)| len == g.len()))
                && kinds.iter().all(|k| k.map(|k| k.0) == kinds[0].map(|k| k.0))
        };
        if shape_ok && card::valid(digits.iter().copied()) {
            best = Some(y);
        }
    }
    best
}

/// An IBAN starting at `x`: for each kind of separator (none, space, dash, NBSP), the
/// country's number of letters and digits with at most one separator of that kind between
/// two of them after the check digits.
fn naive_iban(b: &[u8], x: usize) -> Option<usize> {
    if x + 4 > b.len() || !word_start(b, x) {
        return None;
    }
    let len = super::iban::length_of(&b[x..x + 2])?;
    for sep in [&b""[..], b" ", b"-", "\u{a0}".as_bytes()] {
        let mut chars = Vec::new();
        let mut y = x;
        let mut separated = false;
        let mut at = Vec::new();
        while chars.len() < len {
            if chars.len() >= 4 && !sep.is_empty() && b[y..].starts_with(sep) {
                y += sep.len();
                separated = true;
                at.push(chars.len());
            }
            match b.get(y) {
                Some(c) if c.is_ascii_alphanumeric() => chars.push(c.to_ascii_uppercase()),
                _ => break,
            }
            y += 1;
        }
        if chars.len() < len || !free_after(b, y) {
            continue;
        }
        // Dashes group by four.
        if sep == b"-" && separated && at != (4..len).step_by(4).collect::<Vec<_>>() {
            continue;
        }
        let ok = chars[0].is_ascii_uppercase()
            && chars[1].is_ascii_uppercase()
            && chars[2].is_ascii_digit()
            && chars[3].is_ascii_digit();
        let hex_id = !separated
            && b[x].is_ascii_lowercase()
            && (len == 16 || len == 24)
            && b[x..y].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        // mod 97 on the compact form.
        if ok && !hex_id && super::iban::is_valid(std::str::from_utf8(&chars).ok()?) {
            return Some(y);
        }
    }
    None
}

/// An account number starting at `x`.
fn naive_bank(b: &[u8], x: usize, kws: &[String]) -> Option<usize> {
    if !digit(b, x) || !word_start(b, x) {
        return None;
    }
    let e = naive_account_end(b, x)?;
    // The key right before it names an account (the key reader is shared: it is not a fast
    // path, only the definition of "the key").
    if super::keys::key_before(b, x).is_some_and(super::keys::names_account) {
        return Some(e);
    }
    for k in kws {
        let k = k.as_bytes();
        for ke in x.saturating_sub(bank_account::MAX_GAP)..=x {
            let Some(ks) = ke.checked_sub(k.len()) else { continue };
            if b[ks..ke].eq_ignore_ascii_case(k)
                && !b[ke..x].contains(&b'\n')
                && !b[ke..x].windows(3).any(|w| w.iter().all(u8::is_ascii_digit))
                && (ks == 0 || !b[ks - 1].is_ascii_alphabetic() || after_escape(b, ks))
                && !b[ke].is_ascii_alphabetic()
            {
                return Some(e);
            }
        }
        // Further away, across punctuation and a parenthesised remark.
        for ke in x.saturating_sub(bank_account::MAX_FAR_GAP)..=x {
            let Some(ks) = ke.checked_sub(k.len()) else { continue };
            if b[ks..ke].eq_ignore_ascii_case(k)
                && bank_account::far_gap_ok(&b[ke..x])
                && (ks == 0 || !b[ks - 1].is_ascii_alphabetic() || after_escape(b, ks))
                && !b[ke].is_ascii_alphabetic()
            {
                return Some(e);
            }
        }
    }
    None
}

/// The end of an account number starting at `x`: the groups joined by one separator, then
/// the shape rules of [`bank_account::value_end`].
fn naive_account_end(b: &[u8], x: usize) -> Option<usize> {
    let run = |p: usize| b[p..].iter().take_while(|c| c.is_ascii_digit()).count();
    let free = |p: usize| p == b.len() || !(is_alnum(b[p]) || (b[p] == b'.' && digit(b, p + 1)));
    let first = run(x);
    let mut groups = vec![first];
    let mut p = x + first;
    if p < b.len() && (b[p] == b' ' || b[p] == b'-') {
        let sep = b[p];
        while groups.iter().sum::<usize>() <= 17 && p < b.len() && b[p] == sep && digit(b, p + 1) {
            let g = run(p + 1);
            groups.push(g);
            p += 1 + g;
        }
    }
    let total: usize = groups.iter().sum();
    let k = groups.len();
    let grouped = k >= 2
        && (4..=6).contains(&first)
        && (6..=17).contains(&total)
        && groups[1..k - 1].iter().all(|&g| g == first)
        && (2..=first).contains(&groups[k - 1])
        && (k > 2 || groups[1] == first)
        && free(p);
    if grouped {
        return Some(p);
    }
    ((6..=17).contains(&first) && free(x + first)).then_some(x + first)
}

/// A user-info starting at `u` (right after `://`): (end, bytes kept). The split of the
/// user-info and the password that runs past an authority end are shared definitions.
fn naive_userinfo(b: &[u8], u: usize) -> Option<(usize, usize)> {
    let plain = u >= 3 && &b[u - 3..u] == b"://";
    let escaped = u >= 5 && &b[u - 5..u] == b":\\/\\/";
    if !(plain || escaped) {
        return None;
    }
    let mut j = u;
    while j < b.len() && j < u + MAX_AUTHORITY && !ends_authority(b[j]) {
        j += 1;
    }
    // The last `@` followed by at least one authority byte or a `[`.
    let at = b[u..j]
        .iter()
        .enumerate()
        .rev()
        .find(|&(k, &c)| c == b'@' && (u + k + 1 < j || b.get(u + k + 1) == Some(&b'[')))
        .map(|(k, _)| u + k);
    match at {
        None => super::url_credentials::extended_password(b, u, j, true).flatten(),
        Some(at) if at == u => None,
        Some(at) => {
            // A password holding `@` and `/` (the definition is shared).
            let at = super::url_credentials::password_past_path(b, u, at, j, true).flatten().unwrap_or(at);
            super::url_credentials::split_userinfo(&b[u..at]).map(|keep| (at, keep))
        }
    }
}

/// A credential parameter value starting at `v`.
fn naive_param(b: &[u8], v: usize, params: &[String]) -> Option<usize> {
    if v < 2 || b[v - 1] != b'=' {
        return None;
    }
    // `?name=`, `&name=`, `&amp;name=`, `\u0026name=`, `\u003fname=`.
    let name_ok = params.iter().any(|p| {
        let p = p.as_bytes();
        let Some(ns) = (v - 1).checked_sub(p.len()) else { return false };
        let before = &b[..ns];
        !p.is_empty()
            && b[ns..v - 1].eq_ignore_ascii_case(p)
            && p.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
            && (before.ends_with(b"?")
                || before.ends_with(b"&")
                || before.ends_with(b"#")
                || before.ends_with(b";")
                || before.ends_with(b"&amp;")
                || before.ends_with(b"\\u0026")
                || before.ends_with(b"\\u003f")
                || before.ends_with(b"\\u003F"))
    });
    if !name_ok {
        return None;
    }
    let end = b[v..].iter().position(|&c| ends_value(c)).map_or(b.len(), |k| v + k);
    (end > v).then_some(end)
}
