//! `sealtrail segments PATH [--keys DIR]`: lists sealed segments. Without keys: file, signal,
//! size, first-event time (from the name) and key id (from the plaintext key metadata). With
//! `--keys`: also rows and time range, from the decrypted footer (no data page is read), and
//! segments under a destroyed key marked `shredded`. `--verify`: the directory against its
//! manifest.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::commands::remote::{Remote, find_all};
use crate::event::json::rfc3339;
use crate::exit_codes;
use crate::keys::audit::Head;
use crate::keys::{KeyChain, Keyring, KmsOptions, LocalProvider};
use crate::segment::manifest::Manifest;
use crate::segment::reader::SegmentRetriever;
use crate::segment::{SegmentId, signal_of_path};

#[derive(Debug, clap::Args)]
pub struct SegmentsArgs {
    /// A data directory, a segment file or an `s3://bucket/prefix` location.
    pub path: PathBuf,
    /// Keyring directory: decrypt footers for rows and time ranges.
    #[arg(long, env = "SEALTRAIL_KEYS")]
    pub keys: Option<PathBuf>,
    /// List only segments whose first event is older than this (`30d`, `12h`), judged by
    /// their path and name; nothing is opened.
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub older_than: Option<std::time::Duration>,
    /// With `--older-than`: remove those segments (without it, a dry run lists them).
    #[arg(long, requires = "older_than")]
    pub delete: bool,
    /// Segments that cannot be read (a missing key, a failed integrity check) are named but
    /// do not make the exit code 3.
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Segments whose key was destroyed (`keys destroy`, crypto-shredding) make the exit code
    /// 3. Without it they are listed as `shredded` and counted, and the exit code stays 0.
    #[arg(long)]
    pub strict: bool,
    /// Check the directory against its manifest (`.manifest.jsonl`): segments missing from
    /// disk or not in the manifest, duplicates, size or hash mismatches (every file is read),
    /// and, with the keyring, the manifest's chain and head. Exit 3 when anything is wrong.
    #[arg(long, conflicts_with = "older_than")]
    pub verify: bool,
    /// With `--verify`: the head to check against, as printed by an earlier verify
    /// (`N:HASH`), kept outside the data directory, instead of `.manifest.head`.
    #[arg(long, value_name = "N:HASH", requires = "verify", value_parser = parse_head)]
    pub manifest_head: Option<Head>,
}

fn parse_head(s: &str) -> Result<Head, String> {
    let (n, h) = s.split_once(':').ok_or("expected N:HASH")?;
    let records = n.parse().map_err(|_| format!("`{n}` is not a record count"))?;
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("HASH must be 64 hex digits".into());
    }
    Ok(Head { records, hash: h.to_ascii_lowercase() })
}

/// `--verify`: the manifest against the files (see [`crate::segment::manifest`]).
fn verify(args: &SegmentsArgs) -> anyhow::Result<ExitCode> {
    let keys = crate::commands::keys::keys_dir(args.keys.clone());
    let m = Manifest::open(&args.path, Some(&keys), false)?;
    let r = m.verify(args.manifest_head.as_ref())?;
    for p in &r.problems {
        println!("{p}");
    }
    if !r.chain_checked {
        eprintln!(
            "sealtrail: the keyring {} has no audit key: the manifest's chain was not checked",
            keys.display()
        );
    }
    if r.torn {
        eprintln!("sealtrail: the manifest's last line is torn (an interrupted append); ignored");
    }
    let head = r.head.as_ref().map(|h| format!("{}:{}", h.records, h.hash)).unwrap_or_else(|| "-".into());
    println!(
        "manifest: {} entries, {} segments listed, {} on disk, head {head}: {}",
        r.entries,
        r.live,
        r.files,
        if r.problems.is_empty() { "ok".to_owned() } else { format!("{} problem(s)", r.problems.len()) }
    );
    Ok(ExitCode::from(if r.problems.is_empty() { exit_codes::OK } else { exit_codes::INTEGRITY }))
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    crate::units::Duration::parse(s).map(|d| d.get())
}

/// `--older-than [--delete]`: lists (or removes) the segments past the age, then a total.
fn retention(args: &SegmentsArgs, older_than: std::time::Duration) -> anyhow::Result<ExitCode> {
    use crate::sinks::sealed::retention;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let list = retention::expired(&args.path, older_than, now_ms)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.path.display()))?;
    let age = crate::units::Duration::from(older_than);
    for e in &list {
        let rel = e.path.strip_prefix(&args.path).unwrap_or(&e.path).display().to_string();
        println!("{rel:<60} {:>10} {}", e.bytes, rfc3339(e.first_ms * 1_000_000));
    }
    let bytes: u64 = list.iter().map(|e| e.bytes).sum();
    if args.delete {
        // A manifested directory records the removals, so they are not reported as missing.
        let keys = crate::commands::keys::keys_dir(args.keys.clone());
        let m = Manifest::open(&args.path, Some(&keys), false)?;
        if m.exists() && !m.has_key() {
            anyhow::bail!(
                "{} has a segment manifest but the keyring {} has no audit key to record the removals in it: give the agent's keyring with --keys",
                args.path.display(),
                keys.display()
            );
        }
        let r = retention::remove(&args.path, &list, m.exists().then_some(&m))?;
        println!("deleted {} segments ({} bytes) older than {age}", r.segments, r.bytes);
    } else {
        println!(
            "{} segments ({bytes} bytes) older than {age}; dry run: add --delete to remove them",
            list.len()
        );
    }
    Ok(ExitCode::from(exit_codes::OK))
}

pub fn run(args: SegmentsArgs) -> anyhow::Result<ExitCode> {
    if args.verify {
        return verify(&args);
    }
    let is_s3 = args.path.to_str().is_some_and(crate::s3::S3Url::is_s3);
    if let Some(age) = args.older_than {
        if is_s3 {
            return Err(exit_codes::config_error(anyhow::anyhow!(
                "--older-than works on local data directories; for s3:// use an S3 lifecycle rule"
            )));
        }
        return retention(&args, age);
    }
    let mut remote = Remote::default();
    let files = find_all(std::slice::from_ref(&args.path), &["logs", "spans"], None, None, &mut remote)?;
    // For s3://, paths are shown relative to the URL as given.
    let base = PathBuf::from(args.path.to_str().unwrap_or_default().trim_end_matches('/'));
    let retriever = args.keys.as_ref().map(|d| {
        let local = LocalProvider::new(Arc::new(Keyring::open(d)));
        let kms = KmsOptions { endpoint: None, audit_dir: d.clone() };
        Arc::new(SegmentRetriever::new(Arc::new(KeyChain::new(local, kms))))
    });
    let destroyed = match &args.keys {
        Some(d) => crate::keys::destroy::Destroyed::load(d)?,
        None => Default::default(),
    };
    let mut shredded = 0usize;
    let mut failed = false;
    if retriever.is_some() {
        println!(
            "{:<60} {:<6} {:>10} {:<24} {:<14} {:>9} {:<24} {:<24}",
            "FILE", "SIGNAL", "BYTES", "FIRST EVENT", "KEY", "ROWS", "FROM", "TO"
        );
    } else {
        println!("{:<60} {:<6} {:>10} {:<24} KEY", "FILE", "SIGNAL", "BYTES", "FIRST EVENT");
    }
    for f in &files {
        let root = if is_s3 { &base } else { &args.path };
        let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
        let rel = if rel.is_empty() { f.display().to_string() } else { rel };
        let size = remote.size(f);
        let signal = signal_of_path(f).map(|s| s.as_str()).unwrap_or("?");
        let first =
            SegmentId::of_path(f).map(|id| rfc3339(id.first_ms * 1_000_000)).unwrap_or_else(|| "?".into());
        let key = match remote.key_metadata(f) {
            Ok(km) => km.master_key_id,
            Err(e) => {
                eprintln!("sealtrail: {e}");
                failed = true;
                continue;
            }
        };
        if destroyed.covers(&key) {
            // The data is gone by intent: named and counted, never an error to open.
            shredded += 1;
            println!("{rel:<60} {signal:<6} {size:>10} {first:<24} {key:<14} shredded");
            continue;
        }
        match &retriever {
            None => println!("{rel:<60} {signal:<6} {size:>10} {first:<24} {key}"),
            Some(r) => match remote.open(f, r.clone()) {
                Ok(seg) => {
                    let s = seg.summary();
                    let t = |x: Option<i64>| x.map(rfc3339).unwrap_or_else(|| "-".into());
                    println!(
                        "{rel:<60} {signal:<6} {size:>10} {first:<24} {key:<14} {:>9} {:<24} {:<24}",
                        s.rows,
                        t(s.min_time),
                        t(s.max_time)
                    );
                }
                Err(e) => {
                    eprintln!("sealtrail: {e}");
                    failed = true;
                }
            },
        }
    }
    if shredded > 0 {
        eprintln!("sealtrail: {shredded} segment(s) shredded: their key was destroyed");
    }
    let bad = (failed && !args.skip_unreadable) || (shredded > 0 && args.strict);
    Ok(ExitCode::from(if bad { exit_codes::INTEGRITY } else { exit_codes::OK }))
}
