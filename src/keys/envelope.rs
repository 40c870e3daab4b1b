//! Envelope encryption of per-segment data keys (DEKs): the PKMT1 key metadata stored in each
//! segment's footer (the JSON key material format of parquet-java, Arrow C++ and pyarrow:
//! internal storage, single wrapping, so their standard `CryptoFactory` opens a sealed segment
//! with a KMS client that only unwraps), and the AES-256-GCM-SIV wrapping of a DEK under a
//! key-encryption key (KEK).

use serde::{Deserialize, Serialize};

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use zeroize::Zeroizing;

use super::{KeyError, Material};

/// The prefix every PKMT1 key metadata starts with (as we write it); used to find it in a
/// file's plaintext crypto metadata without a key.
pub const PREFIX: &[u8] = br#"{"keyMaterialType":"PKMT1""#;

/// The key metadata of a segment (ARCHITECTURE.md "Formats").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMetadata {
    #[serde(rename = "keyMaterialType")]
    pub key_material_type: String,
    #[serde(rename = "internalStorage")]
    pub internal_storage: bool,
    #[serde(rename = "isFooterKey")]
    pub is_footer_key: bool,
    #[serde(rename = "kmsInstanceID")]
    pub kms_instance_id: String,
    #[serde(rename = "kmsInstanceURL")]
    pub kms_instance_url: String,
    /// `<key name>#<version>`, or the key ARN of a KMS key.
    #[serde(rename = "masterKeyID")]
    pub master_key_id: String,
    /// base64(12-byte nonce ‖ AES-256-GCM-SIV(KEK, nonce, DEK, aad = masterKeyID)).
    #[serde(rename = "wrappedDEK")]
    pub wrapped_dek: String,
    #[serde(rename = "doubleWrapping")]
    pub double_wrapping: bool,
}

impl KeyMetadata {
    pub fn new(master_key_id: String, wrapped_dek: String) -> KeyMetadata {
        KeyMetadata {
            key_material_type: "PKMT1".into(),
            internal_storage: true,
            is_footer_key: true,
            kms_instance_id: "sealtrail".into(),
            kms_instance_url: "local".into(),
            master_key_id,
            wrapped_dek,
            double_wrapping: false,
        }
    }

    /// The JSON bytes stored in the file (field order as above: `keyMaterialType` first).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings and booleans cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses key metadata read from a file.
    pub fn parse(bytes: &[u8]) -> Result<KeyMetadata, KeyError> {
        let km: KeyMetadata = serde_json::from_slice(bytes)
            .map_err(|e| KeyError::BadMetadata(format!("not PKMT1 key material: {e}")))?;
        if km.key_material_type != "PKMT1" || !km.internal_storage || km.double_wrapping {
            return Err(KeyError::BadMetadata(
                "only PKMT1 with internal storage and single wrapping is supported".into(),
            ));
        }
        // A KMS-wrapped data key names its key by ARN (see `keys::kms`).
        if !super::kms::is_kms_master_key_id(&km.master_key_id) {
            km.key_name_version()?;
        }
        Ok(km)
    }

    /// Splits `masterKeyID` into key name and version.
    pub fn key_name_version(&self) -> Result<(&str, u32), KeyError> {
        let bad = || {
            KeyError::BadMetadata(format!("masterKeyID `{}` is not `<name>#<version>`", self.master_key_id))
        };
        let (name, v) = self.master_key_id.rsplit_once('#').ok_or_else(bad)?;
        super::check_name(name).map_err(|_| bad())?;
        Ok((name, v.parse().map_err(|_| bad())?))
    }
}

/// The bytes PKMT1 key metadata starts with, as sealtrail writes it.
pub fn pkmt1_prefix() -> &'static [u8] {
    PREFIX
}

/// `base64(nonce ‖ AES-256-GCM-SIV(kek, nonce, dek, aad = master_key_id))`.
///
/// # Errors
/// [`KeyError::Wrap`] if the cipher fails: never an empty or partial wrapped key, which would
/// seal a segment nobody can open.
pub fn wrap(kek: &[u8; 32], dek: &[u8; 32], master_key_id: &str) -> Result<String, KeyError> {
    let cipher = Aes256GcmSiv::new(kek.into());
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt((&nonce).into(), Payload { msg: dek, aad: master_key_id.as_bytes() })
        .map_err(|_| KeyError::Wrap(master_key_id.to_owned()))?;
    if ct.len() != 32 + 16 {
        return Err(KeyError::Wrap(master_key_id.to_owned()));
    }
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(B64.encode(out))
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

    #[test]
    fn round_trip_and_prefix() {
        let km = KeyMetadata::new("default#3".into(), "abc=".into());
        let b = km.to_bytes();
        assert!(b.starts_with(PREFIX));
        assert_eq!(KeyMetadata::parse(&b).unwrap(), km);
        assert_eq!(km.key_name_version().unwrap(), ("default", 3));
        assert!(KeyMetadata::parse(b"seg-0001").is_err());
    }

    #[test]
    fn tampered_wrapping_fails() {
        let kek = [1u8; 32];
        let dek = [2u8; 32];
        let w = wrap(&kek, &dek, "a#1").unwrap();
        assert_eq!(*unwrap(&kek, &w, "a#1").unwrap(), dek);
        assert!(unwrap(&kek, &w, "a#2").is_err());
        assert!(unwrap(&[3u8; 32], &w, "a#1").is_err());
    }
}
