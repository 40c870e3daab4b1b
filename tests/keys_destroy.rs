//! Issue 18, crypto-shredding: `sealtrail keys destroy NAME [--version N]` with the real binary.
//! Segments are sealed under two tenants' keys by a real agent; destroying one key leaves the
//! other tenant readable, overwrites the material (seen through a hard link to the old file),
//! records an audit entry, and `segments` and `query` then name the segments as shredded.

mod common;

use std::path::Path;

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

fn keys(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut a = vec!["keys"];
    a.extend_from_slice(args);
    cmd(dir).args(&a).output().unwrap()
}

fn keys_with_input(dir: &Path, args: &[&str], input: &str) -> std::process::Output {
    let mut a = vec!["keys"];
    a.extend_from_slice(args);
    run_with_input(dir, &a, input.as_bytes())
}

fn all_zero(path: &Path) -> bool {
    let b = std::fs::read(path).unwrap();
    !b.is_empty() && b.iter().all(|&x| x == 0)
}

#[test]
fn destroying_a_key_shreds_its_segments_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["tenant-a", "tenant-b"] {
        assert_eq!(keys(d, &["create", k]).status.code(), Some(0));
    }
    seal(d, "tenant-a", "alpha line");
    seal(d, "tenant-b", "beta line");
    let key_file = d.join("keys/tenant-a.json");
    let link = d.join("old-tenant-a");
    std::fs::hard_link(&key_file, &link).unwrap();

    // A wrong answer destroys nothing.
    let o = keys_with_input(d, &["destroy", "tenant-a"], "tenant-b\n");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("Type `tenant-a` to confirm"), "{}", stderr(&o));
    assert!(stderr(&o).contains("not confirmed: nothing was destroyed"), "{}", stderr(&o));
    assert!(key_file.exists());

    let o = keys_with_input(d, &["destroy", "tenant-a"], "tenant-a\n");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("destroyed tenant-a#1"), "{}", stdout(&o));
    assert!(!key_file.exists(), "the key file is removed");
    assert!(all_zero(&link), "the old file's blocks are overwritten with zeros");

    // Audited, and the chain still verifies.
    let audit = std::fs::read_to_string(d.join("keys/audit.jsonl")).unwrap();
    assert!(audit.contains("keys destroy") && audit.contains("tenant-a#1"), "{audit}");
    assert_eq!(keys(d, &["audit", "--verify"]).status.code(), Some(0));

    // `segments`: the shredded one is named and counted; exit 3 only with --strict.
    let o = cmd(d).args(["segments", "vault", "--keys", "keys"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let shredded: Vec<_> = out.lines().filter(|l| l.ends_with("shredded")).collect();
    assert_eq!(shredded.len(), 1, "{out}");
    assert!(shredded[0].contains("tenant-a#1"), "{out}");
    assert!(out.lines().any(|l| l.contains("tenant-b#1") && !l.ends_with("shredded")), "{out}");
    assert!(stderr(&o).contains("1 segment(s) shredded: their key was destroyed"), "{}", stderr(&o));
    let o = cmd(d).args(["segments", "vault", "--keys", "keys", "--strict"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // `query`: the other tenant still reads; exit 3 only with --strict.
    let o = cmd(d).args(["query", "vault", "--format", "jsonl"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("beta line") && !stdout(&o).contains("alpha"), "{}", stdout(&o));
    assert!(stderr(&o).contains("shredded (key tenant-a#1 was destroyed)"), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 segment(s) shredded"), "{}", stderr(&o));
    let o = cmd(d).args(["query", "vault", "--format", "jsonl", "--strict"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).contains("beta line"), "{}", stdout(&o));

    // A destroyed name is never reused (segments name their key `name#version`).
    let o = keys(d, &["create", "tenant-a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("was destroyed"), "{}", stderr(&o));
}

#[test]
fn destroying_one_version_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(keys(d, &["create", "pay"]).status.code(), Some(0));
    seal(d, "pay", "under version one");
    assert_eq!(keys(d, &["rotate", "pay"]).status.code(), Some(0));
    seal(d, "pay", "under version two");
    let link = d.join("old-pay");
    std::fs::hard_link(d.join("keys/pay.json"), &link).unwrap();

    let o = keys(d, &["destroy", "pay", "--version", "2", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(all_zero(&link), "the replaced file's blocks are overwritten");
    let o = keys(d, &["show", "pay"]);
    assert!(stdout(&o).contains("pay#1") && !stdout(&o).contains("pay#2"), "{}", stdout(&o));

    let o = cmd(d).args(["query", "vault", "--format", "jsonl", "--skip-unreadable"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("under version one"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("version two"), "{}", stdout(&o));

    // The next rotation goes past the destroyed number.
    let o = keys(d, &["rotate", "pay"]);
    assert!(stdout(&o).contains("version 3"), "{}", stdout(&o));

    // A missing version is an error before any prompt.
    let o = keys(d, &["destroy", "pay", "--version", "9", "--yes"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("has no version 9"), "{}", stderr(&o));
}

#[test]
fn kms_keys_are_destroyed_in_kms() {
    let dir = tempfile::tempdir().unwrap();
    let o = keys(dir.path(), &["destroy", "kms:alias/tenant", "--yes"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ScheduleKeyDeletion"), "{}", stderr(&o));
}
