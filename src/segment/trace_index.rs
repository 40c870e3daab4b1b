//! The per-segment trace-id index: one small Bloom filter of the trace ids of each row group,
//! kept in the segment's **encrypted** footer (key-value metadata [`KEY`]), so that a
//! `--trace-id` query decrypts only the row groups that may hold the trace.
//!
//! Why not min/max statistics: trace ids are random, so every row group's range covers nearly
//! the whole id space and prunes nothing. Why not the parquet crate's bloom filters: it writes
//! them unencrypted beside the data, which would let anyone holding the file test whether an
//! id is in it. This index lives inside the footer, which is AES-GCM encrypted and
//! authenticated with the rest of the segment's metadata, so it tells nothing without the key
//! and cannot be altered without the footer failing to decrypt.
//!
//! Format (version 1), base64 (standard, padded) of:
//! `u8 version = 1 ‖ u8 probes ‖ u32 groups ‖ groups × (u64 rows ‖ u32 words ‖ words × u64)`,
//! little-endian. `rows` is the row group's row count: a reader uses the index only when the
//! group count and every row count agree with the footer, so an index that does not describe
//! the file is ignored (read everything), never trusted. `words = 0` means the group holds no
//! trace id. A probe of id `t` (its lower-case hex, as stored in the `trace_id` column) sets
//! bit `(h + i·(rotl(h, 32) | 1)) mod (64·words)` for `i < probes`, `h` = [`hash`] of the hex.
//!
//! Size: [`BITS_PER_ID`] bits per distinct id of a row group (about 1% false positives per
//! group), i.e. about 1.3 bytes per trace id in base64: 130 KB for 100,000 traces.

use arrow_array::{Array, RecordBatch, StringArray};
use base64::Engine;

/// The key-value metadata key of the index in the footer.
pub const KEY: &str = "sealtrail.trace_index.v1";

const VERSION: u8 = 1;
/// Bits of filter per distinct trace id: with [`PROBES`] probes, about 1% false positives.
const BITS_PER_ID: usize = 10;
const PROBES: u8 = 7;
/// An index larger than this is not parsed (a footer this size is not ours): bytes of base64.
const MAX_ENCODED: usize = 256 << 20;

/// A stable 64-bit hash of an id (its bytes as stored): the index format depends on it, so it
/// is written out here rather than taken from `std` (whose hasher may change between releases).
pub fn hash(b: &[u8]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64 ^ b.len() as u64;
    for chunk in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    mix(h)
}

/// SplitMix64's finalizer.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn bit(h: u64, i: u8, bits: u64) -> u64 {
    h.wrapping_add(u64::from(i).wrapping_mul(h.rotate_left(32) | 1)) % bits
}

/// Collects the trace ids of a segment's row groups as they are written.
#[derive(Debug, Default)]
pub struct IndexBuilder {
    /// Hashes of the ids of the row group being written (consecutive repeats dropped: the
    /// spans of a trace usually arrive together).
    current: Vec<u64>,
    rows: u64,
    /// The encoded groups so far, without the header.
    groups: Vec<u8>,
    group_count: u32,
    /// Set when a batch had no `trace_id` column of the expected type: no index is written.
    unusable: bool,
}

impl IndexBuilder {
    pub fn new() -> IndexBuilder {
        IndexBuilder::default()
    }

    /// Adds the trace ids of a batch to the current row group.
    pub fn add_batch(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows() as u64;
        let Some(ids) =
            batch.column_by_name("trace_id").and_then(|c| c.as_any().downcast_ref::<StringArray>())
        else {
            self.unusable = true;
            return;
        };
        let mut last = None;
        for i in 0..ids.len() {
            if ids.is_null(i) {
                continue;
            }
            let h = hash(ids.value(i).as_bytes());
            if last != Some(h) {
                self.current.push(h);
                last = Some(h);
            }
        }
    }

    /// Ends the current row group: its filter is built and the next group starts empty.
    pub fn end_row_group(&mut self) {
        let mut hashes = std::mem::take(&mut self.current);
        hashes.sort_unstable();
        hashes.dedup();
        let words = if hashes.is_empty() { 0 } else { (hashes.len() * BITS_PER_ID).div_ceil(64) };
        let mut filter = vec![0u64; words];
        let bits = (words * 64) as u64;
        for h in &hashes {
            for i in 0..PROBES {
                let b = bit(*h, i, bits);
                filter[(b / 64) as usize] |= 1 << (b % 64);
            }
        }
        self.groups.extend_from_slice(&self.rows.to_le_bytes());
        self.groups.extend_from_slice(&(words as u32).to_le_bytes());
        for w in filter {
            self.groups.extend_from_slice(&w.to_le_bytes());
        }
        self.group_count += 1;
        self.rows = 0;
    }

    /// The encoded index (the footer metadata value), or `None` when no index can be written.
    pub fn finish(self) -> Option<String> {
        if self.unusable || self.group_count == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(6 + self.groups.len());
        out.push(VERSION);
        out.push(PROBES);
        out.extend_from_slice(&self.group_count.to_le_bytes());
        out.extend_from_slice(&self.groups);
        Some(base64::engine::general_purpose::STANDARD.encode(out))
    }
}

/// One row group's filter.
#[derive(Debug, Clone)]
struct Group {
    rows: u64,
    words: Vec<u64>,
}

/// A parsed index.
#[derive(Debug, Clone)]
pub struct TraceIndex {
    probes: u8,
    groups: Vec<Group>,
}

impl TraceIndex {
    /// Parses an encoded index; `None` when it is malformed or of another version (the
    /// reader then prunes without it).
    pub fn parse(encoded: &str) -> Option<TraceIndex> {
        if encoded.len() > MAX_ENCODED {
            return None;
        }
        let b = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        let (&version, rest) = b.split_first()?;
        let (&probes, rest) = rest.split_first()?;
        if version != VERSION || probes == 0 {
            return None;
        }
        let mut r = Cursor(rest);
        let n = r.u32()?;
        let mut groups = Vec::with_capacity((n as usize).min(rest.len() / 12));
        for _ in 0..n {
            let rows = r.u64()?;
            let words = r.u32()? as usize;
            if words > r.0.len() / 8 {
                return None;
            }
            let words = (0..words).map(|_| r.u64()).collect::<Option<Vec<u64>>>()?;
            groups.push(Group { rows, words });
        }
        r.0.is_empty().then_some(TraceIndex { probes, groups })
    }

    /// Whether the index describes a file whose row groups have these row counts.
    pub fn describes(&self, row_counts: impl ExactSizeIterator<Item = u64>) -> bool {
        row_counts.len() == self.groups.len() && row_counts.zip(&self.groups).all(|(n, g)| n == g.rows)
    }

    /// Whether row group `group` may hold trace id `id` (lower-case hex, as stored). No false
    /// negatives; a group the index does not cover may hold anything.
    pub fn may_contain(&self, group: usize, id: &[u8]) -> bool {
        let Some(g) = self.groups.get(group) else { return true };
        if g.words.is_empty() {
            return false;
        }
        let h = hash(id);
        let bits = (g.words.len() * 64) as u64;
        (0..self.probes).all(|i| {
            let b = bit(h, i, bits);
            g.words[(b / 64) as usize] & (1 << (b % 64)) != 0
        })
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (a, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*a)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn batch(ids: &[Option<String>]) -> RecordBatch {
        let a = StringArray::from(ids.to_vec());
        RecordBatch::try_from_iter([("trace_id", Arc::new(a) as arrow_array::ArrayRef)]).unwrap()
    }

    fn id(n: u64) -> String {
        hex::encode(hash(&n.to_le_bytes()).to_be_bytes().repeat(2))
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut b = IndexBuilder::new();
        let ids: Vec<Option<String>> = (0..5000).map(|n| Some(id(n))).collect();
        b.add_batch(&batch(&ids[..3000]));
        b.end_row_group();
        b.add_batch(&batch(&ids[3000..]));
        b.add_batch(&batch(&[None, None]));
        b.end_row_group();
        b.add_batch(&batch(&[None]));
        b.end_row_group();
        let idx = TraceIndex::parse(&b.finish().unwrap()).unwrap();
        assert!(idx.describes([3000, 2002, 1].into_iter()));
        assert!(!idx.describes([3000, 2002].into_iter()));
        assert!(!idx.describes([3000, 2001, 1].into_iter()));
        for (n, i) in ids.iter().enumerate() {
            let i = i.as_ref().unwrap().as_bytes();
            assert!(idx.may_contain(usize::from(n >= 3000), i), "{n}");
            assert!(!idx.may_contain(2, i), "a group without ids holds none");
        }
        let false_pos = (10_000..20_000).filter(|n| idx.may_contain(0, id(*n).as_bytes())).count();
        assert!(false_pos < 300, "{false_pos} false positives of 10000 (about 1% expected)");
        assert!(idx.may_contain(7, b"beyond the index: may hold anything"));
    }

    #[test]
    fn malformed_indexes_are_refused() {
        let mut b = IndexBuilder::new();
        b.add_batch(&batch(&[Some(id(1))]));
        b.end_row_group();
        let good = b.finish().unwrap();
        let raw = base64::engine::general_purpose::STANDARD.decode(&good).unwrap();
        let enc = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        assert!(TraceIndex::parse(&good).is_some());
        assert!(TraceIndex::parse("not base64!").is_none());
        assert!(TraceIndex::parse(&enc(&raw[..raw.len() - 1])).is_none(), "truncated");
        assert!(TraceIndex::parse(&enc(&[raw.as_slice(), &[0]].concat())).is_none(), "trailing byte");
        let mut v2 = raw.clone();
        v2[0] = 2;
        assert!(TraceIndex::parse(&enc(&v2)).is_none(), "another version");
        let mut huge = raw.clone();
        huge[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(TraceIndex::parse(&enc(&huge)).is_none(), "more groups than bytes");
    }

    #[test]
    fn a_batch_without_a_trace_id_column_gives_no_index() {
        let mut b = IndexBuilder::new();
        let a = StringArray::from(vec!["x"]);
        b.add_batch(&RecordBatch::try_from_iter([("body", Arc::new(a) as arrow_array::ArrayRef)]).unwrap());
        b.end_row_group();
        assert!(b.finish().is_none());
    }

    #[test]
    fn the_hash_is_stable() {
        // The format depends on these values: a change here makes old indexes wrong.
        assert_eq!(hash(b""), 0xe220_a839_7b1d_cdaf);
        assert_eq!(hash(b"4bf92f3577b34da6a3ce929d0e0e4736"), 0xe6fb_404d_765c_5a65);
    }
}
