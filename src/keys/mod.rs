//! The keyring: named keys with numbered versions, the envelope encryption of per-segment data
//! keys (DEKs), and the query audit log.
//!
//! A key lives in `<keyring>/<name>.json` (mode 0600; ARCHITECTURE.md "Formats"):
//! `{"name":"payments","versions":[{"version":1,"created":"<RFC 3339>","material":"base64:…"}]}`.
//! The newest version encrypts; every version still decrypts. A key can also come from the
//! environment as `SEALTRAIL_KEY_<NAME>=base64:<32 bytes>` (version 1), which wins over a file
//! of the same name. Material is held in [`Zeroizing`] buffers, wiped on drop, and never
//! appears in `Debug` output, logs or error messages.
//!
//! Everything that touches a key-encryption key (KEK) goes through [`KeyProvider`]: wrap a new
//! DEK for a key name, unwrap a DEK given a segment's key metadata. [`LocalProvider`] does this
//! with the keyring; [`KmsProvider`] with AWS KMS customer managed keys (`kms:` references,
//! see [`kms`]); [`KeyChain`] picks one of the two per key.

pub mod audit;
pub mod destroy;
mod envelope;
pub mod kms;
mod provider;
mod store;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use zeroize::Zeroizing;

pub use envelope::{KeyMetadata, pkmt1_prefix, unwrap, wrap};
pub use kms::{KeyChain, KmsOptions, KmsProvider, check_ref, is_kms_ref};
pub use provider::{KeyProvider, LocalProvider};
pub(crate) use store::open_private;
pub use store::{Key, KeyVersion, Keyring};

pub type Material = Zeroizing<[u8; 32]>;

/// A failed AWS KMS call (boxed in [`KeyError::Kms`] to keep every key result small).
#[derive(Debug, thiserror::Error)]
#[error("AWS KMS {op} with key `{key}`: {reason}")]
pub struct KmsFailure {
    pub op: String,
    pub key: String,
    pub reason: String,
    /// Throttling, a timeout or an unreachable endpoint.
    pub retryable: bool,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("invalid key name `{0}`: use 1 to 64 letters, digits, `_` and `-`")]
    InvalidName(String),
    #[error("key `{name}` not found in {dir} (create it with `sealtrail keys create {name}` or set SEALTRAIL_KEY_{env})", env = env_suffix(.name))]
    NotFound { name: String, dir: PathBuf },
    #[error("key `{0}` already exists")]
    Exists(String),
    #[error("key `{name}` has no version {version} (it has versions {have})")]
    NoVersion { name: String, version: u32, have: String },
    #[error("key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`", path = .path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} {reason}", path = .path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("wrapping a data key under `{0}` failed")]
    Wrap(String),
    #[error("key file {path}: {reason}", path = .path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("{origin}: {reason}")]
    BadMaterial { origin: String, reason: String },
    #[error("key `{0}` comes from the environment and cannot be changed here")]
    FromEnvironment(String),
    #[error("key metadata: {0}")]
    BadMetadata(String),
    #[error(
        "the data key wrapped under `{0}` cannot be unwrapped: wrong key material or tampered key metadata"
    )]
    Unwrap(String),
    /// An AWS KMS call failed; `retryable` for throttling, timeouts and an unreachable
    /// endpoint (the sealed sink waits and retries those, and the others too: see
    /// `sinks::sealed::kms`).
    #[error("{0}")]
    Kms(Box<KmsFailure>),
    #[error("key `{0}` was destroyed (`sealtrail keys destroy`); its name cannot be used again")]
    Destroyed(String),
    #[error("keyring {path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_owned(), source }
}

/// `payments-eu` → `PAYMENTS_EU`, the suffix of its environment variable.
pub fn env_suffix(name: &str) -> String {
    name.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }).collect()
}

/// Checks a key name: 1 to 64 ASCII letters, digits, `_` and `-`.
pub fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(KeyError::InvalidName(name.to_owned())) }
}

/// Parses `base64:<32 bytes>` into key material.
pub fn parse_material(text: &str, origin: &str) -> Result<Material, KeyError> {
    let bad = |reason: &str| KeyError::BadMaterial { origin: origin.to_owned(), reason: reason.to_owned() };
    let b64 =
        text.trim().strip_prefix("base64:").ok_or_else(|| bad("key material must start with `base64:`"))?;
    let raw = Zeroizing::new(B64.decode(b64).map_err(|_| bad("key material is not valid base64"))?);
    if raw.len() != 32 {
        return Err(bad(&format!("key material must be 32 bytes, found {}", raw.len())));
    }
    let mut m = Zeroizing::new([0u8; 32]);
    m.copy_from_slice(&raw);
    Ok(m)
}

pub(crate) fn format_material(m: &[u8; 32]) -> Zeroizing<String> {
    Zeroizing::new(format!("base64:{}", B64.encode(m)))
}

pub(crate) fn random_material() -> Material {
    let mut m = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut m[..]);
    m
}
