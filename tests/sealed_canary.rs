//! The canary test: run the agent on input carrying unique canary strings, then scan every
//! byte under the data directory and the system temp directory. No canary may appear; the
//! query with the key must still return them (so the test can fail).

mod sealed_common;

use std::io::Read;
use std::path::Path;

use rand::RngCore;
use sealed_common::*;

/// Files under `dir` (recursively, symlinks not followed) that contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    let finder = memchr::memmem::Finder::new(needle);
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let Ok(mut f) = std::fs::File::open(e.path()) else { continue };
                // Chunks overlapping by the needle's length, so a match across reads is found.
                let mut buf = vec![0u8; 1 << 20];
                let mut keep = 0;
                while let Ok(n) = f.read(&mut buf[keep..]) {
                    if n == 0 {
                        break;
                    }
                    let end = keep + n;
                    if finder.find(&buf[..end]).is_some() {
                        hits.push(e.path().display().to_string());
                        break;
                    }
                    keep = (needle.len() - 1).min(end);
                    buf.copy_within(end - keep..end, 0);
                }
            }
        }
    }
    hits
}

#[test]
fn no_canary_reaches_disk_in_plaintext() {
    let env = Env::new();
    let mut r = [0u8; 12];
    rand::rng().fill_bytes(&mut r);
    let canary = format!("CANARY{}", hex::encode(r));
    let mut input = Vec::new();
    for i in 0..5000 {
        input.extend_from_slice(format!("request {i} user={canary}-{i} card ok\n").as_bytes());
    }
    let out = env.run_agent(&env.config("max_rows = 2000"), &input);
    assert_eq!(env.segments().len(), 3);
    assert!(!stderr(&out).contains(&canary), "the agent's own log holds event data");

    // The scanner works: a plaintext copy is found.
    let probe = env.tmp.path().join("probe.txt");
    std::fs::write(&probe, format!("xx{canary}yy")).unwrap();
    assert_eq!(files_containing(env.tmp.path(), canary.as_bytes()), vec![probe.display().to_string()]);
    std::fs::remove_file(&probe).unwrap();

    for dir in [env.data.clone(), std::env::temp_dir()] {
        let hits = files_containing(&dir, canary.as_bytes());
        assert!(hits.is_empty(), "canary found in plaintext under {}: {hits:?}", dir.display());
    }

    // With the key, the canaries are all there.
    let q = env.cli(&["query", env.data.to_str().unwrap(), "--grep", &canary, "--format", "jsonl"]);
    assert!(q.status.success(), "{}", stderr(&q));
    assert_eq!(bodies(&q).len(), 5000);
    // The audit log records filters, and a grep for the canary is a filter: it lives in the
    // keyring, which is never inside the data directory.
    assert!(!env.keys.starts_with(&env.data));
}
