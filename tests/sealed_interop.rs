//! Interop: pyarrow reads sealed segments through its standard `CryptoFactory` with a small
//! KMS client (tests/interop/read_segment.py) and gets the same rows.
//!
//! The interpreter comes from `SEALTRAIL_PYTHON`, else `<repo>/.venv/bin/python`; create it
//! with `python3 -m venv .venv && .venv/bin/pip install pyarrow cryptography`.

mod common;
mod sealed_common;

use common::python;

use std::path::PathBuf;

use sealed_common::*;

#[test]
fn pyarrow_crypto_factory_reads_sealed_segments() {
    let env = Env::new();
    let input = lines(2500, "interop");
    env.run_agent(&env.config("max_rows = 1000"), &input);
    // A rotated key: segments under version 1 and version 2.
    assert!(env.cli(&["keys", "rotate", "default"]).status.success());
    env.run_agent(&env.config(""), &lines(10, "v2"));
    let segs = env.segments();
    assert_eq!(segs.len(), 4);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/read_segment.py");
    let out = std::process::Command::new(python()).arg(&script).arg(&env.keys).args(&segs).output().unwrap();
    assert!(out.status.success(), "pyarrow failed: {}", stderr(&out));
    let mut got: Vec<String> = Vec::new();
    let mut rows = 0;
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        rows += v["rows"].as_u64().unwrap();
        got.extend(v["bodys"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_owned()));
    }
    assert_eq!(rows, 2510);
    let mut want: Vec<String> = String::from_utf8(input).unwrap().lines().map(str::to_owned).collect();
    want.extend(String::from_utf8(lines(10, "v2")).unwrap().lines().map(str::to_owned));
    got.sort();
    want.sort();
    assert_eq!(got, want);
}
