//! `sealtrail sql "SELECT …" PATH…`: SQL over sealed segments on Apache DataFusion, with the
//! tables `logs` and `spans` (the columns of ARCHITECTURE.md "Formats"; `attributes` and
//! `resource` are maps: `attributes['http.route']`). Built only with the cargo feature `sql`.
//!
//! A query runs in this order, so that nothing is decrypted before it is recorded and every
//! unreadable segment is named:
//!
//! 1. **Plan.** The statement is planned and optimised against the two tables (queries only:
//!    DDL, DML such as `COPY … TO` and `SET` statements are refused). No segment is read.
//! 2. **Prune.** For each scan of `logs` or `spans` in the plan, the filters on its time
//!    column (`time`, `start_time`) bound the days whose directories (`<signal>/yyyy/mm/dd/`)
//!    can hold matching rows ([`sql_table::day_may_match`]); the other segments are not
//!    opened at all.
//! 3. **Record.** The audit record (segments, key ids from the plaintext key metadata, the
//!    output) is appended and fsynced. The query text is **not** recorded: a `WHERE body LIKE
//!    '%…%'` can hold the very secret someone is looking for, and a hash of a short secret can
//!    be reversed by trying candidates. The record holds the tables scanned and the length of
//!    the text instead.
//! 4. **Authenticate.** Every page of each selected segment is decrypted and authenticated
//!    with our reader before DataFusion sees it; a missing key, a wrong key version or a
//!    tampered footer or page is named here (and with `--skip-unreadable` left out and
//!    counted). Why every page: DataFusion 55's Parquet reader was seen to return the rows of
//!    a segment with a flipped bit in the first page header of its first column (bytes 21 and
//!    60 of the file), where `query` fails; until that is understood, a query does not depend
//!    on it for integrity. It costs a second read of the selected segments.
//! 5. **Run.** DataFusion reads the segments through [`sql_table::SealedDecryption`], its
//!    encryption factory hook backed by the same key retriever (data keys already unwrapped
//!    in step 4 are served from its cache). A failure while reading (a tampered data page) is
//!    traced to its segment by authenticating every page of each, and named; exit 3.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures_util::StreamExt;
use parquet::arrow::ArrowWriter;

use super::sql_output::{Format, Writer};
use super::sql_table::{FACTORY_ID, SealedDecryption, SegmentFile, SegmentTable, day_may_match, time_bounds};
use crate::event::Signal;
use crate::exit_codes::{self, config_error};
use crate::filter::Filter;
use crate::keys::{KeyChain, Keyring, KmsOptions, LocalProvider, audit};
use crate::segment::reader::{Segment, SegmentRetriever};
use crate::segment::{schema, signal_of_path};

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The SQL query, over the tables `logs` and `spans`.
    pub query: String,
    /// Data directories or segment files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Keyring directory (default: `SEALTRAIL_KEYS`, else `$XDG_DATA_HOME/sealtrail/keys`).
    #[arg(long, env = "SEALTRAIL_KEYS")]
    pub keys: Option<PathBuf>,
    /// Output format (default: `table` on a terminal, `jsonl` otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the text output to this file (created 0600) instead of standard output.
    #[arg(long, short = 'o', conflicts_with = "write_decrypted_parquet")]
    pub output: Option<PathBuf>,
    /// Write the result as a plain, UNENCRYPTED Parquet file (0600): the rows leave the
    /// sealed segments' protection. Recorded in the audit log.
    #[arg(long, value_name = "FILE")]
    pub write_decrypted_parquet: Option<PathBuf>,
    /// Leave out segments that cannot be read (missing key, failed integrity), name and
    /// count them, and exit 0.
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Segments whose key was destroyed (`keys destroy`, crypto-shredding) make the exit code
    /// 3 and nothing is queried. Without it they are named, counted and left out.
    #[arg(long)]
    pub strict: bool,
    /// Print the segments pruned, opened and skipped, and the time taken, to standard error.
    #[arg(long)]
    pub stats: bool,
}

/// The tables of the session, by name.
const TABLES: [(&str, Signal); 2] = [("logs", Signal::Logs), ("spans", Signal::Spans)];

pub fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    for p in &args.paths {
        if p.to_str().is_some_and(crate::s3::S3Url::is_s3) {
            return Err(config_error(anyhow::anyhow!(
                "{}: sealtrail sql reads local segment directories only; for s3:// locations use `sealtrail query`",
                p.display()
            )));
        }
    }
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() && args.output.is_none() {
        Format::Table
    } else {
        Format::Jsonl
    });

    // Candidate segments per signal.
    let mut candidates: Vec<(Signal, SegmentFile)> = Vec::new();
    for p in &args.paths {
        for f in crate::segment::find_segments(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))? {
            match signal_of_path(&f) {
                Some(s) => candidates.push((s, SegmentFile::new(f))),
                None => eprintln!(
                    "sealtrail: {}: not under `logs/` or `spans/` (<signal>/yyyy/mm/dd/): left out",
                    f.display()
                ),
            }
        }
    }

    let keys_dir = crate::commands::keys::keys_dir(args.keys.clone());
    let local = LocalProvider::new(Arc::new(Keyring::open(&keys_dir)));
    let provider = Arc::new(KeyChain::new(local, KmsOptions { endpoint: None, audit_dir: keys_dir.clone() }));
    let retriever = Arc::new(SegmentRetriever::new(provider));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("sealtrail-sql")
        .enable_all()
        .build()
        .context("starting the query runtime")?;
    let ctx = session(&retriever);
    let tables: Vec<(Signal, Arc<SegmentTable>)> = TABLES
        .iter()
        .map(|&(name, signal)| {
            let t = Arc::new(SegmentTable::new(signal));
            let provider: Arc<dyn datafusion::catalog::TableProvider> = t.clone();
            ctx.register_table(name, provider).map(|_| (signal, t))
        })
        .collect::<Result<_, _>>()?;

    // 1. Plan: queries only.
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let df = rt
        .block_on(ctx.sql_with_options(&args.query, options))
        .map_err(|e| config_error(anyhow::anyhow!("{e}")))?;
    let plan = df.clone().into_optimized_plan().map_err(|e| config_error(anyhow::anyhow!("{e}")))?;

    // 2. Prune by day, per signal: the union over the scans of that table.
    let scans = scans_of(&plan);
    let mut selected: Vec<(Signal, SegmentFile)> = Vec::new();
    // Segments of a table the query does not scan are left out without being counted as
    // pruned: `--stats` reports what the time predicates saved.
    let mut pruned = 0usize;
    for (signal, f) in candidates {
        let ranges = scans.iter().filter(|(s, _)| *s == signal);
        let mut any = false;
        let mut keep = false;
        for (_, (lo, hi)) in ranges {
            any = true;
            keep |= day_may_match(f.day_start, *lo, *hi);
        }
        if any && keep {
            selected.push((signal, f));
        } else if any {
            pruned += 1;
        }
    }

    // 3. Record: key ids from the plaintext key metadata; destroyed keys are never opened.
    let destroyed = crate::keys::destroy::Destroyed::load(&keys_dir)?;
    let mut unreadable = 0usize;
    let mut shredded = 0usize;
    let mut key_ids: Vec<String> = Vec::new();
    let mut to_open = Vec::with_capacity(selected.len());
    for (signal, f) in selected {
        match crate::segment::reader::read_key_metadata(&f.path) {
            Ok(km) if destroyed.covers(&km.master_key_id) => {
                eprintln!(
                    "sealtrail: {}: shredded (key {} was destroyed)",
                    f.path.display(),
                    km.master_key_id
                );
                shredded += 1;
                continue;
            }
            Ok(km) => {
                if !key_ids.contains(&km.master_key_id) {
                    key_ids.push(km.master_key_id);
                }
            }
            // Named when it is opened, below.
            Err(_) => {}
        }
        to_open.push((signal, f));
    }
    let output = match (&args.write_decrypted_parquet, &args.output) {
        (Some(p), _) => format!("{} (decrypted parquet)", p.display()),
        (None, Some(p)) => format!("{} ({format:?})", p.display()),
        (None, None) => format!("stdout ({format:?})"),
    };
    let mut filters = serde_json::Map::new();
    filters.insert("sql".into(), "not recorded (it can hold secrets)".into());
    filters.insert("sql_bytes".into(), args.query.len().into());
    let scanned: BTreeSet<&str> = scans.iter().map(|(s, _)| s.as_str()).collect();
    filters.insert("tables".into(), scanned.into_iter().collect::<Vec<_>>().into());
    let record = audit::Record {
        uid: audit::current_uid(),
        segments: to_open.iter().map(|(_, f)| f.path.display().to_string()).collect(),
        key_ids,
        filters,
        output,
    };
    audit::append(&keys_dir, &record)
        .context("refusing to decrypt: the query cannot be recorded in the audit log")?;

    // 4. Open: footers decrypted and authenticated, data keys unwrapped (and cached) here,
    // outside the query runtime.
    let mut readable: Vec<(Signal, SegmentFile)> = Vec::with_capacity(to_open.len());
    for (signal, f) in to_open {
        let check = Segment::open(&f.path, retriever.clone())
            .map_err(anyhow::Error::from)
            .and_then(|seg| authenticate_all(&seg));
        match check {
            Ok(()) => readable.push((signal, f)),
            Err(e) => {
                eprintln!("sealtrail: {e:#}");
                unreadable += 1;
            }
        }
    }
    if shredded > 0 && args.strict {
        eprintln!(
            "sealtrail: {shredded} segment(s) shredded (their key was destroyed); nothing was queried (--strict)"
        );
        return Ok(ExitCode::from(exit_codes::INTEGRITY));
    }
    if unreadable > 0 && !args.skip_unreadable {
        eprintln!(
            "sealtrail: {unreadable} segment(s) could not be read; nothing was queried (--skip-unreadable leaves them out)"
        );
        return Ok(ExitCode::from(exit_codes::INTEGRITY));
    }
    let opened = readable.len();
    for (signal, t) in &tables {
        t.set_files(readable.iter().filter(|(s, _)| s == signal).map(|(_, f)| f.clone()).collect());
    }

    // 5. Run.
    let result_schema: Arc<Schema> = Arc::new(df.schema().as_arrow().clone());
    let outcome = rt.block_on(async {
        let stream = df.execute_stream().await?;
        match &args.write_decrypted_parquet {
            Some(path) => write_parquet(stream, path, &result_schema).await,
            None => write_text(stream, &args, format, &result_schema).await,
        }
    });
    let rows = match outcome {
        Ok(rows) => rows,
        Err(e) => {
            // Which segment? Authenticate every page of each, and name the ones that fail.
            let failed: Vec<_> = readable
                .iter()
                .filter_map(|(_, f)| {
                    let r = Segment::open(&f.path, retriever.clone())
                        .map_err(anyhow::Error::from)
                        .and_then(|seg| authenticate_all(&seg));
                    r.err()
                })
                .collect();
            if failed.is_empty() {
                return Err(e);
            }
            for f in &failed {
                eprintln!("sealtrail: {f:#}");
            }
            eprintln!("sealtrail: {} segment(s) could not be read; the query failed", failed.len());
            return Ok(ExitCode::from(exit_codes::INTEGRITY));
        }
    };
    if args.stats {
        eprintln!(
            "sealtrail: {rows} rows; {opened} segments read, {pruned} pruned by day, {unreadable} unreadable; {:.3} s",
            started.elapsed().as_secs_f64()
        );
    }
    if shredded > 0 {
        eprintln!("sealtrail: {shredded} segment(s) shredded: their key was destroyed");
    }
    if unreadable > 0 {
        eprintln!("sealtrail: {unreadable} unreadable segment(s) left out");
    }
    Ok(ExitCode::SUCCESS)
}

/// A session with our encryption factory registered, and one partition per core.
fn session(retriever: &Arc<SegmentRetriever>) -> SessionContext {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    ctx.runtime_env().register_parquet_encryption_factory(
        FACTORY_ID,
        Arc::new(SealedDecryption { retriever: retriever.clone() }),
    );
    ctx
}

/// Every scan of `logs` or `spans` in `plan`, with the time range its filters allow.
fn scans_of(plan: &LogicalPlan) -> Vec<(Signal, super::sql_table::TimeBounds)> {
    let mut out = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(&(_, signal)) = TABLES.iter().find(|(n, _)| *n == scan.table_name.table())
        {
            out.push((signal, time_bounds(&scan.filters, schema::time_column(signal))));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// Decrypts and authenticates every page of a segment (the whole file, no pruning).
fn authenticate_all(seg: &Segment) -> anyhow::Result<()> {
    for batch in seg.read(&Filter::default(), 8192)? {
        batch?;
    }
    Ok(())
}

async fn write_text(
    mut stream: SendableRecordBatchStream,
    args: &SqlArgs,
    format: Format,
    schema: &Schema,
) -> anyhow::Result<u64> {
    let mut sink: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(crate::commands::query::create_private(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut w = Writer::new(&mut sink, format);
    while let Some(batch) = stream.next().await {
        w.batch(&batch?)?;
    }
    let rows = w.rows;
    w.finish(schema)?;
    Ok(rows)
}

async fn write_parquet(
    mut stream: SendableRecordBatchStream,
    path: &std::path::Path,
    schema: &Arc<Schema>,
) -> anyhow::Result<u64> {
    let f = crate::commands::query::create_private(path)?;
    let props = crate::segment::writer::writer_properties(&Default::default(), None)?;
    let mut w = ArrowWriter::try_new(f, schema.clone(), Some(props))?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        w.write(&batch)?;
    }
    w.close().with_context(|| format!("writing {}", path.display()))?;
    Ok(rows)
}
