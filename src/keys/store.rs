//! The key store: the keyring directory, one JSON file per key, and keys supplied through the
//! environment (ARCHITECTURE.md "Formats").

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    KeyError, Material, check_name, env_suffix, format_material, io_err, parse_material, random_material,
};

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

/// Opens a key file like ssh opens a private key: never through a symbolic link, only a
/// regular file owned by this user and not readable or writable by group or others.
pub(crate) fn open_private(path: &Path) -> Result<(fs::File, fs::Metadata), KeyError> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                KeyError::Unsafe {
                    path: path.to_owned(),
                    reason: "is a symbolic link; key files must be regular files".into(),
                }
            } else {
                io_err(path)(e)
            }
        })?;
    let meta = f.metadata().map_err(io_err(path))?;
    check_private_meta(path, &meta)?;
    Ok((f, meta))
}

fn check_private_meta(path: &Path, meta: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err(KeyError::Unsafe { path: path.to_owned(), reason: "is not a regular file".into() });
    }
    let uid = super::audit::current_uid();
    if meta.uid() != uid {
        return Err(KeyError::Unsafe {
            path: path.to_owned(),
            reason: format!("is owned by uid {}, not by this user (uid {uid})", meta.uid()),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.to_owned(), mode });
    }
    Ok(())
}

/// Checks the keyring directory like ssh checks `~/.ssh`: owned by this user or root, and not
/// writable by group or others (who could swap a key file).
pub(crate) fn check_dir(dir: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).map_err(io_err(dir))?;
    let uid = super::audit::current_uid();
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(KeyError::Unsafe {
            path: dir.to_owned(),
            reason: format!(
                "keyring directory is owned by uid {}, not by this user (uid {uid}) or root",
                meta.uid()
            ),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(KeyError::Unsafe {
            path: dir.to_owned(),
            reason: format!(
                "keyring directory is writable by group or others (mode {mode:o}); run `chmod 700 {}`",
                dir.display()
            ),
        });
    }
    Ok(())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A keyring directory plus the keys supplied through the environment.
///
/// Loaded keys are cached: a keyring is opened once per run and consulted per segment. A
/// cached key file is checked (`stat`: inode, size, modification time) at every use, so a
/// `keys rotate` reaches a running agent at its next segment without a restart.
pub struct Keyring {
    dir: PathBuf,
    env: HashMap<String, Zeroizing<String>>,
    cache: Mutex<HashMap<String, Cached>>,
}

/// A loaded key and the stamp of the file it came from (`None`: from the environment).
type Cached = (Option<FileStamp>, Arc<Key>);

/// What identifies one version of a key file on disk: a rename (rotation) changes the inode,
/// an edit in place changes size or modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    fn of(m: &fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
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

    /// Loads a key (all versions) from the environment or its file; a cached key file is
    /// re-read when it changed on disk since it was loaded.
    pub fn get(&self, name: &str) -> Result<Arc<Key>, KeyError> {
        check_name(name)?;
        if let Some((stamp, k)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            let fresh = match stamp {
                None => true, // from the environment: fixed for the life of the process
                Some(s) => fs::symlink_metadata(self.path_of(name)).is_ok_and(|m| FileStamp::of(&m) == *s),
            };
            if fresh {
                return Ok(k.clone());
            }
        }
        let (stamp, key) = self.load(name)?;
        let key = Arc::new(key);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), (stamp, key.clone()));
        Ok(key)
    }

    /// Forgets every cached key, so the next use reads the files again (SIGHUP).
    pub fn reload(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn load(&self, name: &str) -> Result<(Option<FileStamp>, Key), KeyError> {
        let var = env_suffix(name);
        if let Some(v) = self.env.get(&var) {
            let origin = format!("SEALTRAIL_KEY_{var}");
            let material = match v.strip_prefix("kms:") {
                Some(ciphertext) => super::kms::env_key_material(&origin, ciphertext, &self.dir)?,
                None => parse_material(v, &origin)?,
            };
            let created = String::new();
            let version = KeyVersion { name: name.to_owned(), version: 1, created, material };
            return Ok((None, Key { name: name.to_owned(), versions: vec![version], from_env: true }));
        }
        let path = self.path_of(name);
        let (mut f, meta) = match open_private(&path) {
            Ok(x) => x,
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::NotFound { name: name.to_owned(), dir: self.dir.clone() });
            }
            Err(e) => return Err(e),
        };
        check_dir(&self.dir)?;
        let mut text = Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut f, &mut text).map_err(io_err(&path))?;
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
        Ok((Some(FileStamp::of(&meta)), Key { name: name.to_owned(), versions, from_env: false }))
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
        if super::destroy::Destroyed::load(&self.dir)?.whole(name) {
            return Err(KeyError::Destroyed(name.to_owned()));
        }
        let file = KeyFile {
            name: name.to_owned(),
            versions: vec![VersionFile {
                version: 1,
                created: now_rfc3339(),
                material: format_material(&material),
            }],
        };
        self.ensure_dir()?;
        let _lock = self.lock(name)?;
        self.write(name, &file, true)?;
        self.forget(name);
        self.get(name)
    }

    /// Adds a new version to `name`; it encrypts from now on, older versions still decrypt.
    ///
    /// Holds the key's lock file while it reads the current versions and writes the new file,
    /// so concurrent `keys rotate` and `keys create` never lose a version.
    pub fn rotate(&self, name: &str) -> Result<Arc<Key>, KeyError> {
        check_name(name)?;
        if self.env.contains_key(&env_suffix(name)) {
            return Err(KeyError::FromEnvironment(name.to_owned()));
        }
        if !self.path_of(name).exists() {
            return Err(KeyError::NotFound { name: name.to_owned(), dir: self.dir.clone() });
        }
        let _lock = self.lock(name)?;
        // Read under the lock, never from the cache: another process may have rotated.
        let (_, key) = self.load(name)?;
        // Never reuse a destroyed version number: segments name their key `name#version`.
        let destroyed = super::destroy::Destroyed::load(&self.dir)?.max_version(name).unwrap_or(0);
        let next = key.current().version.max(destroyed) + 1;
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

    /// Destroys key `name` (every version, or just `version`) for good: records the
    /// destruction in [`super::destroy::FILE`] (fsynced), then either rewrites the key file
    /// without that version or removes the file, and overwrites the old file's content with
    /// zeros in either case. Returns the destroyed version numbers. Destroying the last
    /// remaining version destroys the key.
    pub fn destroy(&self, name: &str, version: Option<u32>) -> Result<Vec<u32>, KeyError> {
        check_name(name)?;
        if self.env.contains_key(&env_suffix(name)) {
            return Err(KeyError::FromEnvironment(name.to_owned()));
        }
        let path = self.path_of(name);
        if !path.exists() {
            return Err(KeyError::NotFound { name: name.to_owned(), dir: self.dir.clone() });
        }
        let _lock = self.lock(name)?;
        let (_, key) = self.load(name)?;
        let (gone, keep): (Vec<&KeyVersion>, Vec<&KeyVersion>) = match version {
            Some(v) => {
                key.version(v)?;
                key.versions.iter().partition(|k| k.version == v)
            }
            None => (key.versions.iter().collect(), Vec::new()),
        };
        let gone: Vec<u32> = gone.iter().map(|k| k.version).collect();
        let whole = keep.is_empty();
        super::destroy::Destroyed::append(&self.dir, name, &gone, whole)?;
        // Opened before the replace or unlink: the descriptor still reaches the old blocks.
        let mut old = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        if whole {
            super::destroy::overwrite(&mut old, &path)?;
            fs::remove_file(&path).map_err(io_err(&path))?;
        } else {
            let versions = keep
                .iter()
                .map(|v| VersionFile {
                    version: v.version,
                    created: v.created.clone(),
                    material: format_material(&v.material),
                })
                .collect();
            self.write(name, &KeyFile { name: name.to_owned(), versions }, false)?;
            super::destroy::overwrite(&mut old, &path)?;
        }
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.forget(name);
        Ok(gone)
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

    /// Takes the exclusive `flock` of key `name` (`.<name>.lock`, 0600), held until the returned
    /// file is dropped. The key file itself cannot carry the lock: it is replaced by rename.
    fn lock(&self, name: &str) -> Result<fs::File, KeyError> {
        let path = self.dir.join(format!(".{name}.lock"));
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        super::audit::lock_exclusive(&f).map_err(io_err(&path))?;
        Ok(f)
    }

    /// Writes a key file (under the key's lock): a uniquely named temporary file created 0600,
    /// fsynced, renamed (or, for a new key, hard-linked) into place.
    fn write(&self, name: &str, file: &KeyFile, create_new: bool) -> Result<(), KeyError> {
        check_dir(&self.dir)?;
        let path = self.path_of(name);
        if create_new && fs::symlink_metadata(&path).is_ok() {
            return Err(KeyError::Exists(name.to_owned()));
        }
        let tmp =
            self.dir.join(format!(".{name}.json.{}.{:016x}.tmp", std::process::id(), rand::random::<u64>()));
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(file)
                .map_err(|e| KeyError::BadFile { path: path.clone(), reason: e.to_string() })?,
        );
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
            fs::rename(&tmp, &path).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io_err(&path)(e)
            })?;
        }
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    fn ring(dir: &Path) -> Keyring {
        Keyring::with_env(dir, HashMap::new())
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
    fn debug_never_shows_material() {
        let d = tempfile::tempdir().unwrap();
        let kr = ring(d.path());
        let k = kr.create("x").unwrap();
        let text = format!("{k:?}");
        assert!(!text.contains(&B64.encode(*k.current().material)));
    }

    /// Issue 13: the keyring is checked like ssh checks `~/.ssh`: no group/world-writable
    /// directory, no symlinked key file, no key file owned by someone else.
    #[test]
    fn issue_13_keyring_permissions_and_ownership_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("keys");
        ring(&dir).create("k").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let e = ring(&dir).get("k").unwrap_err().to_string();
        assert!(e.contains("writable by group or others") && e.contains("chmod 700"), "{e}");
        assert!(ring(&dir).rotate("k").is_err());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        ring(&dir).get("k").unwrap();

        // A symlink to a 0600 key file elsewhere is refused, not followed.
        let other = d.path().join("elsewhere");
        ring(&other).create("x").unwrap();
        std::os::unix::fs::symlink(other.join("x.json"), dir.join("x.json")).unwrap();
        let e = ring(&dir).get("x").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");

        // A key file owned by another user (only root can give one away).
        if super::super::audit::current_uid() == 0 {
            let p = dir.join("k.json");
            std::os::unix::fs::chown(&p, Some(4242), None).unwrap();
            let e = ring(&dir).get("k").unwrap_err().to_string();
            assert!(e.contains("owned by uid 4242"), "{e}");
        }
    }

    /// Issue 13: a running keyring sees a rotation done by another process at its next use.
    #[test]
    fn issue_13_rotation_by_another_process_is_picked_up() {
        let d = tempfile::tempdir().unwrap();
        let running = ring(d.path());
        running.create("k").unwrap();
        assert_eq!(running.get("k").unwrap().current().version, 1);
        ring(d.path()).rotate("k").unwrap();
        assert_eq!(running.get("k").unwrap().current().version, 2);
    }

    /// Issue 13: concurrent rotations never lose a version (threads here; processes in
    /// tests/hardening.rs).
    #[test]
    fn issue_13_concurrent_rotations_keep_every_version() {
        let d = tempfile::tempdir().unwrap();
        ring(d.path()).create("k").unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5 {
                        ring(d.path()).rotate("k").unwrap();
                    }
                });
            }
        });
        let k = ring(d.path()).get("k").unwrap();
        assert_eq!(k.versions.len(), 41);
        assert_eq!(k.current().version, 41);
    }
}
