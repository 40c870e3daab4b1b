//! Re-wrapping a segment's data key under the newest version of its key (`sealtrail keys
//! rewrap`), without touching the encrypted data.
//!
//! A segment's tail is `FileCryptoMetaData ‖ encrypted footer ‖ u32 length ‖ "PARE"`. The
//! crypto metadata is plaintext Thrift whose last field (2, binary) is the PKMT1 key material;
//! it is not covered by any AES-GCM tag (the footer's AAD is the file's AAD prefix and module
//! ids, not the key material). So a re-wrap unwraps the data key under the old version, wraps
//! it under the new one, and writes a new file: every byte before the tail copied as is,
//! then the crypto metadata with the new key material (its length varint rewritten), the same
//! encrypted footer, the new length and the magic. The new file is written beside the old (same
//! name, in a `.rewrap-<pid>` directory),
//! fsynced, opened and checked with the new key (footer decrypted, same rows), and renamed
//! over the old one: a crash leaves either segment whole, and a run can be repeated (segments
//! already under the newest version are skipped).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::keys::{KeyMetadata, Keyring, LocalProvider, unwrap, wrap};
use crate::segment::reader::{Segment, SegmentRetriever, read_key_metadata};

/// What happened to one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrapped {
    /// Re-wrapped from the first key id to the second.
    Done { from: String, to: String },
    /// Already under the newest version.
    Current,
    /// Under another key (or an AWS KMS key): left alone.
    OtherKey(String),
}

fn fail(path: &Path, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}: {what}", path.display())
}

/// Re-wraps `path`'s data key under the newest version of key `name` in `keyring`.
pub fn rewrap(path: &Path, keyring: &Arc<Keyring>, name: &str) -> anyhow::Result<Rewrapped> {
    let km = read_key_metadata(path)?;
    let Ok((key_name, version)) = km.key_name_version() else {
        return Ok(Rewrapped::OtherKey(km.master_key_id));
    };
    if key_name != name {
        return Ok(Rewrapped::OtherKey(km.master_key_id));
    }
    let key = keyring.get(name)?;
    let current = key.current();
    if current.version == version {
        return Ok(Rewrapped::Current);
    }
    let old = key.version(version)?;
    let dek = unwrap(&old.material, &km.wrapped_dek, &km.master_key_id)?;
    let to = current.id();
    let new_km = KeyMetadata::new(to.clone(), wrap(&current.material, &dek, &to)?).to_bytes();

    let mut src = File::open(path).map_err(|e| fail(path, e))?;
    let len = src.metadata().map_err(|e| fail(path, e))?.len();
    let mut tail8 = [0u8; 8];
    src.read_exact_at(&mut tail8, len - 8).map_err(|e| fail(path, e))?;
    let footer_len = u64::from(u32::from_le_bytes([tail8[0], tail8[1], tail8[2], tail8[3]]));
    let tail_start = len - 8 - footer_len;
    let mut tail = vec![0u8; footer_len as usize];
    src.read_exact_at(&mut tail, tail_start).map_err(|e| fail(path, e))?;
    let new_tail = splice_key_metadata(&tail, &new_km).ok_or_else(|| {
        fail(path, "the key metadata is not where the crypto metadata says (not a sealtrail segment?)")
    })?;
    let new_len = u32::try_from(new_tail.len()).map_err(|_| fail(path, "footer too large"))?;

    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("segment");
    // The same file name in a private directory beside it: the name is the segment id, which
    // the AAD binds, so the copy can be opened and checked before the rename.
    let tmp_dir = dir.join(format!(".rewrap-{}", std::process::id()));
    let tmp: PathBuf = tmp_dir.join(file_name);
    let result = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(&tmp_dir).map_err(|e| fail(&tmp_dir, e))?;
        let mut out =
            std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| fail(&tmp, e))?;
        src.seek(SeekFrom::Start(0)).map_err(|e| fail(path, e))?;
        // The data pages and column indexes, copied as they are (streamed, not loaded).
        let copied = std::io::copy(&mut (&mut src).take(tail_start), &mut out).map_err(|e| fail(&tmp, e))?;
        if copied != tail_start {
            anyhow::bail!("{}: changed while being re-wrapped", path.display());
        }
        out.write_all(&new_tail)
            .and_then(|_| out.write_all(&new_len.to_le_bytes()))
            .and_then(|_| out.write_all(b"PARE"))
            .and_then(|_| out.sync_all())
            .map_err(|e| fail(&tmp, e))?;
        // Check before replacing: the new key material opens the footer, and it is the same
        // segment (rows and time range).
        let retriever = Arc::new(SegmentRetriever::new(Arc::new(LocalProvider::new(keyring.clone()))));
        let before = Segment::open(path, retriever.clone())?.summary();
        let after = Segment::open(&tmp, retriever)?.summary();
        if (before.rows, before.min_time, before.max_time) != (after.rows, after.min_time, after.max_time) {
            anyhow::bail!("{}: the re-wrapped copy does not read the same; left unchanged", path.display());
        }
        // A manifested directory records the new bytes first (`segment::manifest`).
        if let Some(root) = super::manifest::root_of(path) {
            let m = super::manifest::Manifest::open(root, Some(keyring.dir()), false)?;
            if m.exists() {
                let entry = super::manifest::describe(
                    root,
                    &tmp,
                    path,
                    super::manifest::Op::Rewrite,
                    Some(to.clone()),
                )
                .map_err(|e| fail(&tmp, e))?;
                m.record(&[entry])?;
            }
        }
        std::fs::rename(&tmp, path).map_err(|e| fail(path, e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let _ = std::fs::remove_dir(&tmp_dir);
    result?;
    Ok(Rewrapped::Done { from: km.master_key_id, to })
}

/// ULEB128, as Thrift's compact protocol writes a binary field's length.
fn varint(mut n: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(10);
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            v.push(b);
            return v;
        }
        v.push(b | 0x80);
    }
}

/// Replaces the PKMT1 key material in a segment's tail (crypto metadata ‖ encrypted footer):
/// finds the JSON object, checks that the bytes before it are the varint of its exact length
/// (so it is the binary field, not a chance match), and rewrites length and bytes.
fn splice_key_metadata(tail: &[u8], new_km: &[u8]) -> Option<Vec<u8>> {
    let start = memchr::memmem::find(&tail[..tail.len().min(4096)], crate::keys::pkmt1_prefix())?;
    let mut it = serde_json::Deserializer::from_slice(&tail[start..]).into_iter::<serde_json::Value>();
    it.next()?.ok()?;
    let old_len = it.byte_offset();
    let len_bytes = varint(old_len as u64);
    let len_at = start.checked_sub(len_bytes.len())?;
    if tail[len_at..start] != len_bytes[..] {
        return None;
    }
    let mut out = Vec::with_capacity(tail.len() + new_km.len());
    out.extend_from_slice(&tail[..len_at]);
    out.extend_from_slice(&varint(new_km.len() as u64));
    out.extend_from_slice(new_km);
    out.extend_from_slice(&tail[start + old_len..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_splicing() {
        assert_eq!(varint(5), [5]);
        assert_eq!(varint(300), [0xac, 0x02]);
        let km = br#"{"keyMaterialType":"PKMT1","x":1}"#;
        let mut tail = vec![0x1c, 0x15, 0x00, 0x28];
        tail.extend(varint(km.len() as u64));
        tail.extend_from_slice(km);
        tail.extend_from_slice(&[0x00, 0xde, 0xad]);
        let new = br#"{"keyMaterialType":"PKMT1","x":12345}"#;
        let out = splice_key_metadata(&tail, new).unwrap();
        let mut want = vec![0x1c, 0x15, 0x00, 0x28, new.len() as u8];
        want.extend_from_slice(new);
        want.extend_from_slice(&[0x00, 0xde, 0xad]);
        assert_eq!(out, want);
        // A length that does not match: not the binary field.
        tail[4] += 1;
        assert!(splice_key_metadata(&tail, new).is_none());
    }
}
