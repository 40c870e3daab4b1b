//! What a secret becomes.
//!
//! - `mask`: `****`.
//! - `last4`: `****` followed by the last four letters or digits of a card number, IBAN or
//!   account number (`****1111`); other secrets (URL credentials, keywords, patterns) get
//!   `****`, since the end of a password is still part of the password.
//! - `hmac`: `[<detector>:<8 hex>]`, the first four bytes of HMAC-SHA256 over the secret, so
//!   equal values correlate across events without being recoverable. Card numbers, IBANs and
//!   account numbers are hashed without their separators (and IBANs in upper case), so
//!   `4111 1111 1111 1111` and `4111111111111111` give the same token.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{BuildError, BuildErrorKind, Detector};

/// The mask styles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mask {
    #[default]
    Mask,
    Last4,
    Hmac,
}

/// The compiled mask: the style and, for `hmac`, the keyed state ready to clone.
#[derive(Clone)]
pub(crate) struct Masker {
    mask: Mask,
    hmac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Masker").field("mask", &self.mask).finish_non_exhaustive()
    }
}

pub(crate) const STARS: &[u8] = b"****";

impl Masker {
    pub(crate) fn new(mask: Mask, key: Option<[u8; 32]>) -> Result<Masker, BuildError> {
        let hmac = match (mask, key) {
            (Mask::Hmac, None) => return Err(BuildError::new(BuildErrorKind::MissingHmacKey)),
            (Mask::Hmac, Some(k)) => Some(
                Hmac::<Sha256>::new_from_slice(&k)
                    .map_err(|_| BuildError::new(BuildErrorKind::MissingHmacKey))?,
            ),
            _ => None,
        };
        Ok(Masker { mask, hmac })
    }

    /// Writes the mask of `secret`, found by `det`, to `out`.
    pub(crate) fn write(&self, det: Detector, secret: &[u8], out: &mut Vec<u8>) {
        match self.mask {
            Mask::Mask => out.extend_from_slice(STARS),
            Mask::Last4 => {
                out.extend_from_slice(STARS);
                if det.is_numeric() {
                    let mut last = [0u8; 4];
                    let mut n = 0;
                    for &b in secret.iter().rev().filter(|b| b.is_ascii_alphanumeric()).take(4) {
                        n += 1;
                        last[4 - n] = b;
                    }
                    out.extend_from_slice(&last[4 - n..]);
                }
            }
            Mask::Hmac => {
                let mut mac = self.start();
                feed(&mut mac, det, secret);
                finish_token(mac, det, out);
            }
        }
    }

    /// Starts an HMAC for a secret whose bytes arrive in pieces (`None` unless `hmac`).
    pub(crate) fn start_stream(&self) -> Option<Hmac<Sha256>> {
        self.hmac.clone()
    }

    /// The first bytes written for an open-ended secret: the mask itself for `mask` and `last4`
    /// (open-ended secrets are never numeric), nothing for `hmac`, whose token comes at the end.
    pub(crate) fn open_prefix(&self, out: &mut Vec<u8>) {
        if self.mask != Mask::Hmac {
            out.extend_from_slice(STARS);
        }
    }

    fn start(&self) -> Hmac<Sha256> {
        match &self.hmac {
            Some(h) => h.clone(),
            // `Masker::new` requires a key for `hmac`.
            None => Hmac::<Sha256>::new_from_slice(&[0u8; 32]).expect("HMAC takes any key length"),
        }
    }
}

/// Feeds the normalised bytes of a secret into an HMAC.
pub(crate) fn feed(mac: &mut Hmac<Sha256>, det: Detector, secret: &[u8]) {
    if det.is_numeric() {
        for &b in secret {
            if b.is_ascii_alphanumeric() {
                mac.update(&[b.to_ascii_uppercase()]);
            }
        }
    } else {
        mac.update(secret);
    }
}

/// Writes `[<detector>:<8 hex>]`.
pub(crate) fn finish_token(mac: Hmac<Sha256>, det: Detector, out: &mut Vec<u8>) {
    let tag = mac.finalize().into_bytes();
    out.push(b'[');
    out.extend_from_slice(det.name().as_bytes());
    out.push(b':');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in &tag[..4] {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(m: &Masker, det: Detector, s: &str) -> String {
        let mut out = Vec::new();
        m.write(det, s.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn styles() {
        let m = Masker::new(Mask::Mask, None).unwrap();
        assert_eq!(masked(&m, Detector::Card, "4111111111111111"), "****");
        let l = Masker::new(Mask::Last4, None).unwrap();
        assert_eq!(masked(&l, Detector::Card, "4111 1111 1111 1234"), "****1234");
        assert_eq!(masked(&l, Detector::Iban, "GB82 WEST 1234 5698 7654 32"), "****5432");
        assert_eq!(masked(&l, Detector::UrlCredentials, "hunter22"), "****");
        let h = Masker::new(Mask::Hmac, Some([7u8; 32])).unwrap();
        let a = masked(&h, Detector::Card, "4111 1111 1111 1111");
        assert_eq!(a, masked(&h, Detector::Card, "4111-1111-1111-1111"));
        assert_ne!(a, masked(&h, Detector::Card, "5555555555554444"));
        assert!(a.starts_with("[card:") && a.len() == "[card:12345678]".len(), "{a}");
        let other_key = Masker::new(Mask::Hmac, Some([8u8; 32])).unwrap();
        assert_ne!(a, masked(&other_key, Detector::Card, "4111111111111111"));
        assert!(Masker::new(Mask::Hmac, None).is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let h = Masker::new(Mask::Hmac, Some([0xAB; 32])).unwrap();
        let d = format!("{h:?}");
        assert!(!d.contains("171") && !d.to_lowercase().contains("ab, "), "{d}");
    }
}
