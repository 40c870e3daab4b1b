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
//! with the keyring; an AWS KMS provider (GenerateDataKey / Decrypt, the function name as the
//! encryption context) can implement the same trait later.

pub mod audit;
mod pkmt1;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use pkmt1::KeyMetadata;

/// The bytes PKMT1 key metadata starts with, as sealtrail writes it.
pub fn pkmt1_prefix() -> &'static [u8] {
    pkmt1::PREFIX
}

/// 32 bytes of key material, wiped when dropped.
pub type Material = Zeroizing<[u8; 32]>;

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
    #[error("keyring {path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
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

/// One version of a key: what encrypts (the newest) or decrypts (any).
pub struct KeyVersion {
    pub name: String,
    pub version: u32,
    /// RFC 3339 creation time.
    pub created: String,
    pub material: Material,
}

impl KeyVersion {
    /// The key id as it appears in key metadata and messages: `name#version`.
    pub fn id(&self) -> String {
        format!("{}#{}", self.name, self.version)
    }
}

impl std::fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the material.
        f.debug_struct("KeyVersion")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// A key with all its versions, oldest first.
#[derive(Debug)]
pub struct Key {
    pub name: String,
    pub versions: Vec<KeyVersion>,
    /// `true` when it came from `SEALTRAIL_KEY_<NAME>`.
    pub from_env: bool,
}

impl Key {
    /// The newest version: the one that encrypts.
    pub fn current(&self) -> &KeyVersion {
        // A key always has at least one version: parsing and creation guarantee it.
        &self.versions[self.versions.len() - 1]
    }

    pub fn version(&self, v: u32) -> Result<&KeyVersion, KeyError> {
        self.versions.iter().find(|k| k.version == v).ok_or_else(|| KeyError::NoVersion {
            name: self.name.clone(),
            version: v,
            have: self.versions.iter().map(|k| k.version.to_string()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// The on-disk form of a key file (ARCHITECTURE.md "Formats").
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    name: String,
    versions: Vec<VersionFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    version: u32,
    created: String,
    material: Zeroizing<String>,
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

fn format_material(m: &[u8; 32]) -> Zeroizing<String> {
    Zeroizing::new(format!("base64:{}", B64.encode(m)))
}

fn random_material() -> Material {
    let mut m = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut m[..]);
    m
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A keyring directory plus the keys supplied through the environment.
///
/// Loaded keys are cached: a keyring is opened once per run and consulted per segment.
pub struct Keyring {
    dir: PathBuf,
    env: HashMap<String, Zeroizing<String>>,
    cache: Mutex<HashMap<String, Arc<Key>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring at `dir`, with `SEALTRAIL_KEY_<NAME>` variables taken from the process
    /// environment. Nothing is read or created until a key is asked for.
    pub fn open(dir: impl Into<PathBuf>) -> Keyring {
        let env = std::env::vars()
            .filter_map(|(k, v)| k.strip_prefix("SEALTRAIL_KEY_").map(|s| (s.to_owned(), Zeroizing::new(v))))
            .collect();
        Keyring::with_env(dir, env)
    }

    /// A keyring with an explicit set of environment keys (`NAME` suffix → `base64:…`).
    pub fn with_env(dir: impl Into<PathBuf>, env: HashMap<String, Zeroizing<String>>) -> Keyring {
        Keyring { dir: dir.into(), env, cache: Mutex::new(HashMap::new()) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Loads a key (all versions) from the environment or its file.
    pub fn get(&self, name: &str) -> Result<Arc<Key>, KeyError> {
        check_name(name)?;
        if let Some(k) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(k.clone());
        }
        let key = Arc::new(self.load(name)?);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), key.clone());
        Ok(key)
    }

    fn load(&self, name: &str) -> Result<Key, KeyError> {
        let var = env_suffix(name);
        if let Some(v) = self.env.get(&var) {
            let material = parse_material(v, &format!("SEALTRAIL_KEY_{var}"))?;
            let created = String::new();
            let version = KeyVersion { name: name.to_owned(), version: 1, created, material };
            return Ok(Key { name: name.to_owned(), versions: vec![version], from_env: true });
        }
        let path = self.path_of(name);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::NotFound { name: name.to_owned(), dir: self.dir.clone() });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path, mode });
        }
        let text = Zeroizing::new(fs::read_to_string(&path).map_err(io_err(&path))?);
        let bad = |reason: String| KeyError::BadFile { path: path.clone(), reason };
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if file.name != name {
            return Err(bad(format!("it names key `{}`, expected `{name}`", file.name)));
        }
        if file.versions.is_empty() {
            return Err(bad("it has no versions".into()));
        }
        let mut versions = Vec::with_capacity(file.versions.len());
        for v in &file.versions {
            let origin = format!("{} version {}", path.display(), v.version);
            let material = parse_material(&v.material, &origin)?;
            versions.push(KeyVersion {
                name: name.to_owned(),
                version: v.version,
                created: v.created.clone(),
                material,
            });
        }
        versions.sort_by_key(|v| v.version);
        if versions.windows(2).any(|w| w[0].version == w[1].version) {
            return Err(bad("a version number appears twice".into()));
        }
        Ok(Key { name: name.to_owned(), versions, from_env: false })
    }

    /// The version of `name` that encrypts now.
    pub fn current(&self, name: &str) -> Result<Arc<Key>, KeyError> {
        self.get(name)
    }

    /// Loads `name`, creating it with one fresh version when it does not exist yet (the
    /// default key is created on first use, like a cloud provider's managed key).
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Key>, KeyError> {
        match self.get(name) {
            Err(KeyError::NotFound { .. }) => match self.create(name) {
                Ok(_) | Err(KeyError::Exists(_)) => self.get(name),
                Err(e) => Err(e),
            },
            other => other,
        }
    }

    /// Creates key `name` with a fresh random version 1.
    pub fn create(&self, name: &str) -> Result<Arc<Key>, KeyError> {
        self.store_new(name, random_material())
    }

    /// Creates key `name` from given material (`keys import`).
    pub fn import(&self, name: &str, material: Material) -> Result<Arc<Key>, KeyError> {
        self.store_new(name, material)
    }

    fn store_new(&self, name: &str, material: Material) -> Result<Arc<Key>, KeyError> {
        check_name(name)?;
        if self.env.contains_key(&env_suffix(name)) {
            return Err(KeyError::FromEnvironment(name.to_owned()));
        }
        let file = KeyFile {
            name: name.to_owned(),
            versions: vec![VersionFile {
                version: 1,
                created: now_rfc3339(),
                material: format_material(&material),
            }],
        };
        self.write(name, &file, true)?;
        self.forget(name);
        self.get(name)
    }

    /// Adds a new version to `name`; it encrypts from now on, older versions still decrypt.
    pub fn rotate(&self, name: &str) -> Result<Arc<Key>, KeyError> {
        let key = self.get(name)?;
        if key.from_env {
            return Err(KeyError::FromEnvironment(name.to_owned()));
        }
        let next = key.current().version + 1;
        let mut versions: Vec<VersionFile> = key
            .versions
            .iter()
            .map(|v| VersionFile {
                version: v.version,
                created: v.created.clone(),
                material: format_material(&v.material),
            })
            .collect();
        versions.push(VersionFile {
            version: next,
            created: now_rfc3339(),
            material: format_material(&random_material()),
        });
        self.write(name, &KeyFile { name: name.to_owned(), versions }, false)?;
        self.forget(name);
        self.get(name)
    }

    /// Every key: files in the directory, then environment keys. Errors per key are returned
    /// beside the name so one bad file does not hide the others.
    pub fn list(&self) -> Vec<(String, Result<Arc<Key>, KeyError>)> {
        let mut names: Vec<String> = match fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_owned)
                })
                .filter(|n| check_name(n).is_ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        for var in self.env.keys() {
            let name = var.to_ascii_lowercase().replace('_', "-");
            if !names.iter().any(|n| env_suffix(n) == *var) {
                names.push(name);
            }
        }
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let k = self.get(&n);
                (n, k)
            })
            .collect()
    }

    fn forget(&self, name: &str) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Creates the keyring directory (0700) if needed.
    pub fn ensure_dir(&self) -> Result<(), KeyError> {
        if !self.dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    /// Writes a key file: a temporary file created 0600, fsynced, renamed into place.
    fn write(&self, name: &str, file: &KeyFile, create_new: bool) -> Result<(), KeyError> {
        self.ensure_dir()?;
        let path = self.path_of(name);
        if create_new && path.exists() {
            return Err(KeyError::Exists(name.to_owned()));
        }
        let tmp = self.dir.join(format!(".{name}.json.tmp"));
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(file)
                .map_err(|e| KeyError::BadFile { path: path.clone(), reason: e.to_string() })?,
        );
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(&json)
            .and_then(|_| f.write_all(b"\n"))
            .and_then(|_| f.sync_all())
            .map_err(io_err(&tmp))?;
        if create_new {
            // hard_link fails if the target appeared meanwhile: no silent overwrite of a key.
            fs::hard_link(&tmp, &path).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::Exists(name.to_owned())
                } else {
                    io_err(&path)(e)
                }
            })?;
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        } else {
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Wraps and unwraps per-segment data keys. One implementation per place KEKs live.
pub trait KeyProvider: Send + Sync {
    /// A fresh random 256-bit DEK and its key metadata (PKMT1 JSON), wrapped under the current
    /// version of key `name`.
    fn wrap_new_dek(&self, name: &str) -> Result<(Material, KeyMetadata), KeyError>;

    /// The DEK inside a segment's key metadata.
    fn unwrap_dek(&self, metadata: &KeyMetadata) -> Result<Material, KeyError>;
}

/// The provider over a local [`Keyring`] (files and environment).
#[derive(Debug, Clone)]
pub struct LocalProvider {
    keyring: Arc<Keyring>,
    /// Create a missing key on first use instead of failing (the default key).
    create: Vec<String>,
}

impl LocalProvider {
    pub fn new(keyring: Arc<Keyring>) -> LocalProvider {
        LocalProvider { keyring, create: Vec::new() }
    }

    /// Also create `name` on first use when it does not exist.
    pub fn creating(mut self, name: &str) -> LocalProvider {
        self.create.push(name.to_owned());
        self
    }

    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// Loads a key for encryption, creating it when it is one of the auto-created names.
    pub fn key_for_encryption(&self, name: &str) -> Result<Arc<Key>, KeyError> {
        if self.create.iter().any(|n| n == name) {
            self.keyring.get_or_create(name)
        } else {
            self.keyring.get(name)
        }
    }
}

impl KeyProvider for LocalProvider {
    fn wrap_new_dek(&self, name: &str) -> Result<(Material, KeyMetadata), KeyError> {
        // The agent's own telemetry sees the key's name and version, never material.
        let span = crate::telemetry::span("sealtrail.key.wrap_dek");
        let r = (|| {
            let key = self.key_for_encryption(name)?;
            let kek = key.current();
            let dek = random_material();
            let master_key_id = kek.id();
            let wrapped = wrap(&kek.material, &dek, &master_key_id);
            Ok((dek, KeyMetadata::new(master_key_id, wrapped)))
        })();
        end_key_span(span, r.as_ref().map(|(_, m)| m.master_key_id.as_str()));
        r
    }

    fn unwrap_dek(&self, metadata: &KeyMetadata) -> Result<Material, KeyError> {
        let span = crate::telemetry::span("sealtrail.key.unwrap_dek");
        let r = (|| {
            let (name, version) = metadata.key_name_version()?;
            let key = self.keyring.get(name)?;
            let kek = key.version(version)?;
            unwrap(&kek.material, &metadata.wrapped_dek, &metadata.master_key_id)
        })();
        end_key_span(span, r.as_ref().map(|_| metadata.master_key_id.as_str()));
        r
    }
}

/// Ends a key operation's span with the key id (`name#version`) or the error.
fn end_key_span(mut span: opentelemetry::global::BoxedSpan, r: Result<&str, &KeyError>) {
    use opentelemetry::trace::Span as _;
    match r {
        Ok(id) => span.set_attribute(opentelemetry::KeyValue::new("sealtrail.key_id", id.to_owned())),
        Err(e) => span.set_status(opentelemetry::trace::Status::error(e.to_string())),
    }
    span.end();
}

/// `base64(nonce ‖ AES-256-GCM-SIV(kek, nonce, dek, aad = master_key_id))`.
pub fn wrap(kek: &[u8; 32], dek: &[u8; 32], master_key_id: &str) -> String {
    let cipher = Aes256GcmSiv::new(kek.into());
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    // Encryption with a valid key and a 12-byte nonce cannot fail for a 32-byte message.
    let ct = cipher
        .encrypt((&nonce).into(), Payload { msg: dek, aad: master_key_id.as_bytes() })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    B64.encode(out)
}

/// The inverse of [`wrap`]; fails on the wrong KEK or any change to the wrapped key or id.
pub fn unwrap(kek: &[u8; 32], wrapped: &str, master_key_id: &str) -> Result<Material, KeyError> {
    let fail = || KeyError::Unwrap(master_key_id.to_owned());
    let raw = B64.decode(wrapped).map_err(|_| fail())?;
    if raw.len() != 12 + 32 + 16 {
        return Err(fail());
    }
    let cipher = Aes256GcmSiv::new(kek.into());
    let (nonce, ct) = raw.split_at(12);
    let pt = Zeroizing::new(
        cipher
            .decrypt(nonce.into(), Payload { msg: ct, aad: master_key_id.as_bytes() })
            .map_err(|_| fail())?,
    );
    let mut dek = Zeroizing::new([0u8; 32]);
    dek.copy_from_slice(&pt);
    Ok(dek)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dir: &Path) -> Keyring {
        Keyring::with_env(dir, HashMap::new())
    }

    #[test]
    fn create_rotate_and_unwrap_old_versions() {
        let d = tempfile::tempdir().unwrap();
        let kr = Arc::new(ring(d.path()));
        kr.create("payments").unwrap();
        let mode = fs::metadata(d.path().join("payments.json")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let p = LocalProvider::new(kr.clone());
        let (dek1, km1) = p.wrap_new_dek("payments").unwrap();
        assert_eq!(km1.master_key_id, "payments#1");
        kr.rotate("payments").unwrap();
        let (_, km2) = p.wrap_new_dek("payments").unwrap();
        assert_eq!(km2.master_key_id, "payments#2");
        assert_eq!(*p.unwrap_dek(&km1).unwrap(), *dek1);
        assert!(matches!(kr.create("payments"), Err(KeyError::Exists(_))));
    }

    #[test]
    fn refuses_group_readable_files() {
        let d = tempfile::tempdir().unwrap();
        ring(d.path()).create("k").unwrap();
        fs::set_permissions(d.path().join("k.json"), fs::Permissions::from_mode(0o640)).unwrap();
        let e = ring(d.path()).get("k").unwrap_err();
        assert!(matches!(e, KeyError::Permissions { .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"));
    }

    #[test]
    fn environment_keys_and_missing_keys() {
        let d = tempfile::tempdir().unwrap();
        let mut env = HashMap::new();
        env.insert("PAY_EU".to_owned(), Zeroizing::new(format!("base64:{}", B64.encode([7u8; 32]))));
        let kr = Keyring::with_env(d.path(), env);
        let k = kr.get("pay-eu").unwrap();
        assert!(k.from_env);
        assert_eq!(*k.current().material, [7u8; 32]);
        let e = kr.get("nope").unwrap_err().to_string();
        assert!(e.contains("SEALTRAIL_KEY_NOPE"), "{e}");
        assert!(kr.get("../etc").is_err());
    }

    #[test]
    fn tampered_wrapping_fails() {
        let kek = [1u8; 32];
        let dek = [2u8; 32];
        let w = wrap(&kek, &dek, "a#1");
        assert_eq!(*unwrap(&kek, &w, "a#1").unwrap(), dek);
        assert!(unwrap(&kek, &w, "a#2").is_err());
        assert!(unwrap(&[3u8; 32], &w, "a#1").is_err());
    }

    #[test]
    fn debug_never_shows_material() {
        let d = tempfile::tempdir().unwrap();
        let kr = ring(d.path());
        let k = kr.create("x").unwrap();
        let text = format!("{k:?}");
        assert!(!text.contains(&B64.encode(*k.current().material)));
    }
}
