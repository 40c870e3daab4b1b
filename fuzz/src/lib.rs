//! The redaction engine, compiled from the main crate's own source (`src/redact/`).
//!
//! The engine module depends only on aho-corasick, memchr, regex, hmac, sha2, serde and
//! thiserror. Depending on the whole `sealtrail` crate would also build arrow, parquet, tonic
//! and tokio with sanitizer instrumentation, a build of many minutes on a small machine for
//! code the fuzz target never calls; including the module by path fuzzes the same source.

#![allow(dead_code, unused_imports)]

#[path = "../../src/redact/mod.rs"]
pub mod redact;
