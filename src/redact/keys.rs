//! Field names as context: whether a key (an attribute name, a JSON member name, the `key` of
//! `key=value` in text) names a bank account, so that its value is an account number when it
//! is 6 to 17 digits.
//!
//! Real logs put the keyword in the field name (`"accountNumber": "…"`, `acct_no=…`,
//! `bank.account`), and Macie treats a keyword in the field path of JSON, Parquet and Avro as
//! context for the same reason. A key is split into words at `_`, `-`, `.`, `/`, spaces and
//! camelCase humps (`customerAccountID` → `customer account id`), lower-cased, and names an
//! account when:
//! - one of its words is an account word ([`ACCOUNT_WORDS`]: `account`, `acct`, `iban`, …), and
//! - every word after the last account word is an identifier word ([`ID_WORDS`]: `id`, `no`,
//!   `number`, …).
//!
//! So `account`, `account_id`, `customer-account`, `bank.account`, `acct no` and `IBAN` name an
//! account; `accounts` (a count), `account_created`, `accountBalance`, `account.region` and
//! `order_id` do not.
//!
//! In text the key is found by [`key_before`]: the bytes right before a value, read backwards
//! as an optional quote (also JSON-escaped, `\"`), spaces, `=` or `:`, spaces, an optional
//! quote, then at most [`MAX_KEY_WORDS`] space-separated runs of key bytes.

/// Words that make a key name an account (lower case, compared whole).
pub const ACCOUNT_WORDS: &[&str] = &[
    "account",
    "acct",
    "acc",
    "accno",
    "acctno",
    "accountno",
    "accountnumber",
    "acctnum",
    "accnum",
    "accountid",
    "acctid",
    "iban",
    "bban",
    "kontonummer",
    "konto",
    "compte",
    "conto",
    "cuenta",
];

/// Words that may follow the last account word of a key: they say which identifier of the
/// account the value is, not some other property of it (a count, a date, a balance).
pub const ID_WORDS: &[&str] = &["id", "no", "nr", "num", "number", "code", "ident", "identifier"];

/// How many space-separated words of text before `=`/`:` are read as the key.
pub const MAX_KEY_WORDS: usize = 3;

/// The most bytes [`key_before`] reads before a value (within the engine's left context).
pub const MAX_KEY_LOOKBACK: usize = 56;

/// Whether `key` names a bank account (see the module documentation).
pub fn names_account(key: &[u8]) -> bool {
    let mut after_account: Option<bool> = None;
    let mut acc_alone = false;
    for_each_word(key, |w| {
        let is = |list: &[&str]| list.iter().any(|x| x.as_bytes() == w);
        if is(ACCOUNT_WORDS) {
            // `acc` alone is too short to be evidence (`acc=` could be an accumulator): it
            // needs an identifier word after it (`acc_no`).
            acc_alone = w == b"acc";
            after_account = Some(true);
        } else if let Some(ok) = &mut after_account {
            *ok &= is(ID_WORDS);
            if *ok {
                acc_alone = false;
            }
        }
    });
    after_account == Some(true) && !acc_alone
}

/// Calls `f` with each word of `key`, lower-cased (words of at most 32 bytes; a longer one is
/// passed as its first 32 bytes, which matches no listed word).
pub(crate) fn for_each_word(key: &[u8], mut f: impl FnMut(&[u8])) {
    let mut word = [0u8; 32];
    let mut n = 0;
    let mut emit = |word: &[u8; 32], n: &mut usize| {
        if *n > 0 {
            f(&word[..(*n).min(32)]);
        }
        *n = 0;
    };
    for (i, &b) in key.iter().enumerate() {
        if matches!(b, b'_' | b'-' | b'.' | b'/' | b' ' | b'\t' | b':' | b'$' | b'#' | b'[' | b']') {
            emit(&word, &mut n);
            continue;
        }
        // A camelCase hump: lower → Upper, or the last capital of an acronym before a lower
        // case letter (`IBANNumber` → `IBAN Number`).
        let prev = if i > 0 { key[i - 1] } else { b' ' };
        let next = key.get(i + 1).copied().unwrap_or(b' ');
        if b.is_ascii_uppercase()
            && ((prev.is_ascii_lowercase() || prev.is_ascii_digit())
                || (prev.is_ascii_uppercase() && next.is_ascii_lowercase()))
        {
            emit(&word, &mut n);
        }
        if n < 32 {
            word[n] = b.to_ascii_lowercase();
        }
        n += 1;
    }
    emit(&word, &mut n);
}

/// A byte of a key in text: ASCII letters and digits, `_ - . # $ /` and `[ ]`.
#[inline]
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'#' | b'$' | b'/' | b'[' | b']')
}

/// The key written right before `buf[s..]` in text (`key=`, `key: `, `"key":"`, `\"key\":\"`,
/// `key no: `), if there is one. Reads at most [`MAX_KEY_LOOKBACK`] bytes before `s`.
pub fn key_before(buf: &[u8], s: usize) -> Option<&[u8]> {
    let lo = s.saturating_sub(MAX_KEY_LOOKBACK);
    let mut i = s;
    let quote = |i: &mut usize| {
        if *i > lo && matches!(buf[*i - 1], b'"' | b'\'') {
            *i -= 1;
            if *i > lo && buf[*i - 1] == b'\\' {
                *i -= 1;
            }
        }
    };
    let spaces = |i: &mut usize| {
        let mut k = 0;
        while *i > lo && k < 4 && matches!(buf[*i - 1], b' ' | b'\t') {
            *i -= 1;
            k += 1;
        }
    };
    quote(&mut i);
    spaces(&mut i);
    if !(i > lo && matches!(buf[i - 1], b'=' | b':')) {
        return None;
    }
    i -= 1;
    spaces(&mut i);
    quote(&mut i);
    let ke = i;
    let mut words = 1;
    while i > lo {
        let c = buf[i - 1];
        if is_key_byte(c) {
            i -= 1;
        } else if c == b' ' && words < MAX_KEY_WORDS && i - 1 > lo && is_key_byte(buf[i - 2]) {
            words += 1;
            i -= 1;
        } else {
            break;
        }
    }
    // `\naccount=`, `\u0020account=`: the escape is not part of the key.
    if i > 0 && buf[i - 1] == b'\\' {
        if i + 5 < ke && super::after_escape(buf, i + 5) {
            i += 5;
        } else if i + 1 < ke && super::after_escape(buf, i + 1) {
            i += 1;
        }
    }
    (i < ke).then(|| &buf[i..ke])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys() {
        for k in [
            "account",
            "acct",
            "account_id",
            "accountNumber",
            "acct_no",
            "customer-account",
            "iban",
            "IBAN",
            "bban",
            "bank.account",
            "acct no",
            "customerAccountID",
            "AccountNo",
            "payer.bank_account.number",
            "acc_no",
            "accountnumber",
            "$.payment.account",
            "Account Number",
            "for account",
        ] {
            assert!(names_account(k.as_bytes()), "{k}");
        }
    }

    #[test]
    fn look_alike_keys() {
        for k in [
            "accounts",
            "account_count",
            "account_created",
            "accountBalance",
            "account.region",
            "order_id",
            "request_id",
            "acc",
            "accuracy",
            "account_phone",
            "port",
            "",
            "account_ids",
        ] {
            assert!(!names_account(k.as_bytes()), "{k}");
        }
    }

    #[test]
    fn keys_in_text() {
        let key = |s: &str| {
            let at = s.find('1').unwrap();
            key_before(s.as_bytes(), at).map(|k| String::from_utf8_lossy(k).into_owned())
        };
        assert_eq!(key("account=123456").as_deref(), Some("account"));
        assert_eq!(key("x account_id: 123456").as_deref(), Some("x account_id"));
        assert_eq!(key("{\"accountNumber\": \"123456\"}").as_deref(), Some("accountNumber"));
        assert_eq!(key("{\\\"acct\\\":\\\"123456\\\"}").as_deref(), Some("acct"));
        assert_eq!(key("the customer acct no: 123456").as_deref(), Some("customer acct no"));
        assert_eq!(key("acct 123456"), None);
        assert_eq!(key("=123456").as_deref(), None);
    }
}
