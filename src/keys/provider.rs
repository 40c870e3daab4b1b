//! The key provider: the one interface the sealed sink and the segment reader use to wrap a
//! new data key and unwrap a segment's data key. [`LocalProvider`] does this with the local
//! keyring; an AWS KMS provider (GenerateDataKey / Decrypt, the function name as the
//! encryption context) implements the same trait.

use std::sync::Arc;

use super::envelope::{KeyMetadata, unwrap, wrap};
use super::{Key, KeyError, Keyring, Material, random_material};

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
            let wrapped = wrap(&kek.material, &dek, &master_key_id)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

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
}
