//! Integrity: every kind of damage to a segment or its key is a clear error naming the
//! segment and the key id, the query exits 3, and the other segments still come out.

mod sealed_common;

use std::path::{Path, PathBuf};

use sealed_common::*;

/// Three segments of 1000 rows each, under the default key.
fn three_segments() -> Env {
    let env = Env::new();
    env.run_agent(&env.config("max_rows = 1000"), &lines(3000, "tamper"));
    assert_eq!(env.segments().len(), 3);
    env
}

fn query(env: &Env, keys: &Path) -> std::process::Output {
    env.cli_keys(&["query", env.data.to_str().unwrap(), "--format", "jsonl"], keys)
}

/// The query fails with exit 3, names `bad` and `key`, and still prints `rows` events.
fn assert_fails(out: &std::process::Output, bad: &Path, key: &str, what: &str, rows: usize) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let name = bad.file_name().unwrap().to_str().unwrap();
    let line =
        err.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no error naming {name}: {err}"));
    assert!(line.contains(&format!("(key {key})")), "{line}");
    assert!(line.contains(what), "expected `{what}` in: {line}");
    assert_eq!(bodies(out).len(), rows, "{err}");
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

fn key_metadata_range(path: &Path) -> (usize, usize) {
    let b = std::fs::read(path).unwrap();
    let start = b.windows(5).rposition(|w| w == b"PKMT1").unwrap() - 19;
    let end = start + b[start..].iter().position(|&c| c == b'}').unwrap() + 1;
    (start, end)
}

#[test]
fn footer_byte() {
    let env = three_segments();
    let seg = env.segments()[1].clone();
    let len = std::fs::metadata(&seg).unwrap().len();
    flip(&seg, len - 20);
    assert_fails(&query(&env, &env.keys), &seg, "default#1", "footer cannot be decrypted", 2000);
}

#[test]
fn data_page_byte() {
    let env = three_segments();
    let seg = env.segments()[0].clone();
    flip(&seg, 200);
    assert_fails(&query(&env, &env.keys), &seg, "default#1", "data cannot be decrypted", 2000);
}

#[test]
fn key_metadata_byte() {
    let env = three_segments();
    let seg = env.segments()[2].clone();
    let mut b = std::fs::read(&seg).unwrap();
    let (_, end) = key_metadata_range(&seg);
    // A character inside the wrapped data key (keep it valid base64).
    let i = end - 40;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    std::fs::write(&seg, b).unwrap();
    assert_fails(&query(&env, &env.keys), &seg, "default#1", "cannot be unwrapped", 2000);
}

#[test]
fn truncated_segment() {
    let env = three_segments();
    let seg = env.segments()[1].clone();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::File::options().write(true).open(&seg).unwrap().set_len(len / 2).unwrap();
    assert_fails(&query(&env, &env.keys), &seg, "unknown", "truncated", 2000);
}

#[test]
fn swapped_key_metadata() {
    let env = three_segments();
    let (a, b) = (env.segments()[0].clone(), env.segments()[1].clone());
    let (ra, rb) = (key_metadata_range(&a), key_metadata_range(&b));
    assert_eq!(ra.1 - ra.0, rb.1 - rb.0);
    let mut ba = std::fs::read(&a).unwrap();
    let bb = std::fs::read(&b).unwrap();
    ba[ra.0..ra.1].copy_from_slice(&bb[rb.0..rb.1]);
    std::fs::write(&a, ba).unwrap();
    assert_fails(&query(&env, &env.keys), &a, "default#1", "footer cannot be decrypted", 2000);
}

#[test]
fn renamed_segment() {
    let env = three_segments();
    let seg = env.segments()[0].clone();
    let other = seg.with_file_name("1000000000000-00000000000000ff.parquet");
    std::fs::rename(&seg, &other).unwrap();
    assert_fails(&query(&env, &env.keys), &other, "default#1", "footer cannot be decrypted", 2000);
}

/// Issue 13: a segment renamed to a name that is not a segment id is not read as if nothing
/// happened: the AAD prefix is always bound, and the name that does not match fails (exit 3).
#[test]
fn issue_13_segment_renamed_to_a_non_id_name_fails() {
    let env = three_segments();
    let seg = env.segments()[0].clone();
    let other = seg.with_file_name("backup-copy.parquet");
    std::fs::rename(&seg, &other).unwrap();
    assert_fails(&query(&env, &env.keys), &other, "default#1", "is not a segment id", 2000);
    // Named on its own, too.
    let q = env.cli(&["query", other.to_str().unwrap(), "--format", "jsonl"]);
    assert_eq!(q.status.code(), Some(3), "{}", stderr(&q));
    assert!(bodies(&q).is_empty());
    // `--skip-unreadable`: still named and counted, but exit 0 (as `sql` does).
    let q = env.cli(&["query", other.to_str().unwrap(), "--format", "jsonl", "--skip-unreadable"]);
    assert_eq!(q.status.code(), Some(0), "{}", stderr(&q));
    assert!(stderr(&q).contains("1 segment(s) could not be read"), "{}", stderr(&q));
}

#[test]
fn wrong_and_missing_key() {
    // Segments of two agents with different keyrings; each keyring opens only its own.
    let env = three_segments();
    let other = Env::new();
    other.run_agent(&other.config(""), &lines(500, "other"));
    let foreign: PathBuf = other.segments()[0].clone();
    let dest = env.data.join(foreign.strip_prefix(&other.data).unwrap());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(&foreign, &dest).unwrap();
    assert_fails(&query(&env, &env.keys), &dest, "default#1", "cannot be unwrapped", 3000);

    let empty = env.tmp.path().join("empty-keyring");
    // A query needs an existing keyring directory for its audit record (issue 13).
    std::fs::create_dir(&empty).unwrap();
    let out = query(&env, &empty);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(bodies(&out).len(), 0);
    let err = stderr(&out);
    assert_eq!(err.matches("key `default` not found").count(), 4, "{err}");
    assert!(!empty.join("default.json").exists(), "a query never creates keys");
}

#[test]
fn rotated_away_version() {
    let env = three_segments();
    assert!(env.cli(&["keys", "rotate", "default"]).status.success());
    env.run_agent(&env.config("max_rows = 1000"), &lines(1000, "after"));
    let v2 = env.cli(&["segments", env.data.to_str().unwrap()]);
    assert_eq!(stdout(&v2).matches("default#2").count(), 1, "{}", stdout(&v2));
    // Both versions decrypt.
    let out = query(&env, &env.keys);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(bodies(&out).len(), 4000);
    // Drop version 1 from the key file: its segments fail, version 2's still read.
    let kf = env.keys.join("default.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&kf).unwrap()).unwrap();
    v["versions"].as_array_mut().unwrap().remove(0);
    std::fs::write(&kf, serde_json::to_string(&v).unwrap()).unwrap();
    let out = query(&env, &env.keys);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert_eq!(err.matches("(key default#1): key `default` has no version 1").count(), 3, "{err}");
    assert_eq!(
        bodies(&out),
        (0..1000).map(|i| format!("after {i:06} GET /api/orders status=200 took=12ms")).collect::<Vec<_>>()
    );
}
