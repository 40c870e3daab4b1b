//! Issue 18, `sealtrail keys rewrap NAME PATH...`: segments sealed by a real agent under an
//! old key version are re-wrapped under the newest one without touching their encrypted
//! data; the old version can then be destroyed and everything still reads, in sealtrail and
//! in pyarrow.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn seal(dir: &Path, key: &str, line: &str) {
    let cfg = write(
        dir,
        &format!("{key}.toml"),
        &format!(
            "data_dir = \"state\"\n[keys]\ndefault = \"{key}\"\n\
             [sources.app]\ntype = \"stdin\"\n\
             [transforms.scrub]\ntype = \"redact\"\ninputs = [\"app\"]\n\
             [sinks.vault]\ntype = \"sealed\"\ninputs = [\"scrub\"]\npath = \"vault\"\n"
        ),
    );
    let o = run_with_input(dir, &["run", "--config", cfg.to_str().unwrap()], format!("{line}\n").as_bytes());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

fn sl(dir: &Path, args: &[&str]) -> std::process::Output {
    cmd(dir).args(args).output().unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![dir.join("vault")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.ends_with(".inflight") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// The bytes before a segment's tail (crypto metadata, footer, length, magic).
fn data_part(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let n = b.len();
    let footer = u32::from_le_bytes(b[n - 8..n - 4].try_into().unwrap()) as usize;
    b[..n - 8 - footer].to_vec()
}

#[test]
fn rewrap_moves_segments_to_the_newest_version_and_keeps_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(sl(d, &["keys", "create", "pay"]).status.success());
    assert!(sl(d, &["keys", "create", "other"]).status.success());
    seal(d, "pay", "under version one");
    let old = segments(d);
    assert_eq!(old.len(), 1);
    let data_before = data_part(&old[0]);
    assert!(sl(d, &["keys", "rotate", "pay"]).status.success());
    seal(d, "pay", "under version two");
    seal(d, "other", "another tenant");

    let o = sl(d, &["keys", "rewrap", "pay", "vault"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "re-wrapped 1 segment(s) under pay#2; 1 already under it, 1 under other keys, 0 failed"
    );
    assert_eq!(data_part(&old[0]), data_before, "the encrypted data is untouched");
    let list = stdout(&sl(d, &["segments", "vault"]));
    assert_eq!(list.matches("pay#2").count(), 2, "{list}");
    assert!(!list.contains("pay#1"), "{list}");
    assert!(
        !std::fs::read_dir(old[0].parent().unwrap())
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with(".rewrap") })
    );

    // Repeatable: nothing left to do.
    let o = sl(d, &["keys", "rewrap", "pay", "vault"]);
    assert!(stdout(&o).starts_with("re-wrapped 0 segment(s) under pay#2; 2 already"), "{}", stdout(&o));
    let audit = std::fs::read_to_string(d.join("keys/audit.jsonl")).unwrap();
    assert!(audit.contains("keys rewrap"), "{audit}");

    // Version 1 can go: everything still reads.
    assert!(sl(d, &["keys", "destroy", "pay", "--version", "1", "--yes"]).status.success());
    let o = sl(d, &["query", "vault", "--format", "jsonl"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for line in ["under version one", "under version two", "another tenant"] {
        assert!(stdout(&o).contains(line), "{line}: {}", stdout(&o));
    }

    // pyarrow's CryptoFactory reads the re-wrapped segment.
    if let Some(py) = std::env::var_os("SEALTRAIL_PYTHON") {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/read_segment.py");
        let out =
            std::process::Command::new(py).arg(&script).arg(d.join("keys")).arg(&old[0]).output().unwrap();
        assert!(out.status.success(), "pyarrow: {}", stderr(&out));
        assert!(stdout(&out).contains("under version one"), "{}", stdout(&out));
    }
}
