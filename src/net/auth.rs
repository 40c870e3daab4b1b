//! Bearer-token authentication for the agent's HTTP endpoints: the token is read once
//! (from the configuration or a file), only its SHA-256 digest is kept, and a presented token
//! is compared digest to digest in constant time.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The shortest token accepted: a shorter one is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The SHA-256 digest of a token: what a listener keeps and compares.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &[u8]) -> TokenDigest {
    Sha256::digest(token).into()
}

/// Checks an `Authorization: Bearer <token>` header value against `want` (`None`: no
/// authentication). Digests are compared in constant time, so neither the token's contents
/// nor its length show in the timing of a refusal.
pub fn authorized(want: Option<&TokenDigest>, header: Option<&[u8]>) -> bool {
    let Some(want) = want else { return true };
    let Some(v) = header else { return false };
    let presented = match v.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => return false,
    };
    bool::from(digest(presented).ct_eq(want))
}

/// Reads the token from `token` or `token_file` (exactly one), trimmed and checked
/// (printable ASCII, at least [`MIN_TOKEN_LEN`] characters). Errors never include it.
pub fn read_token(token: Option<&str>, token_file: Option<&PathBuf>) -> anyhow::Result<Zeroizing<String>> {
    let t = match (token, token_file) {
        (Some(_), Some(_)) => anyhow::bail!("set `token` or `token_file`, not both"),
        (Some(t), None) => Zeroizing::new(t.trim().to_owned()),
        (None, Some(path)) => {
            warn_if_shared(path);
            let raw = Zeroizing::new(
                std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("`token_file`: cannot read {}: {e}", path.display()))?,
            );
            let s = std::str::from_utf8(&raw)
                .map_err(|_| anyhow::anyhow!("`token_file`: {} is not UTF-8 text", path.display()))?;
            Zeroizing::new(s.trim().to_owned())
        }
        (None, None) => anyhow::bail!(
            "no token configured: set `token` or `token_file`; `auth = \"none\"` is only allowed on a \
             loopback address"
        ),
    };
    anyhow::ensure!(!t.is_empty(), "the token is empty");
    anyhow::ensure!(
        t.chars().count() >= MIN_TOKEN_LEN,
        "the token is too short: use at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 24`)"
    );
    anyhow::ensure!(
        t.chars().all(|c| c.is_ascii_graphic()),
        "the token must be printable ASCII without spaces (it travels in an HTTP header)"
    );
    Ok(t)
}

/// Warns when a token file can be read by users other than its owner (it should be 0600,
/// like key files). Not an error: secret volumes are often mounted 0644 inside a container
/// that runs a single user.
pub fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "token file {} is accessible to other users (mode {:o}); `chmod 600` it",
                path.display(),
                m.permissions().mode() & 0o777
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        let want = digest(b"the-right-token-123");
        let ok = |v: &str| authorized(Some(&want), Some(v.as_bytes()));
        assert!(ok("Bearer the-right-token-123"));
        assert!(ok("bearer  the-right-token-123 "));
        assert!(!ok("Bearer the-right-token-124"));
        assert!(!ok("Bearer the-right-token-12"));
        assert!(!ok("Basic the-right-token-123"));
        assert!(!ok("Bearer"));
        assert!(!authorized(Some(&want), None));
        assert!(authorized(None, None));
    }

    #[test]
    fn tokens_are_checked_without_being_shown() {
        let secret = "a secret that has spaces in it";
        let e = format!("{:#}", read_token(Some(secret), None).unwrap_err());
        assert!(e.contains("printable ASCII") && !e.contains(secret), "{e}");
        assert!(format!("{:#}", read_token(Some("short"), None).unwrap_err()).contains("too short"));
        assert!(format!("{:#}", read_token(None, None).unwrap_err()).contains("no token configured"));
    }
}
