//! The tables of `sealtrail sql`: `logs` and `spans` over sealed segments, read by DataFusion's
//! Parquet reader and decrypted in memory through its encryption factory hook.
//!
//! - [`SealedDecryption`] is the [`EncryptionFactory`]: for each segment DataFusion opens it
//!   gives decryption properties with our key retriever ([`SegmentRetriever`], the same one
//!   `sealtrail query` uses, backed by the keyring or KMS) and the segment id from the file
//!   name as the AAD prefix, so a renamed or swapped segment fails authentication exactly as
//!   it does for `query`.
//! - [`SegmentTable`] is a signal's table. It accepts every filter for pushdown (inexactly:
//!   DataFusion still applies them), and its scan keeps only the segments whose day directory
//!   (`<signal>/yyyy/mm/dd/`) can hold rows in the time range of the filters on the signal's
//!   time column ([`time_bounds`], [`day_may_match`]); DataFusion's Parquet reader then prunes
//!   row groups and pages by statistics and the page index.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::{EncryptionFactoryOptions, TableParquetOptions};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::parquet_encryption::EncryptionFactory;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::object_store::path as object_store_path;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use parquet::encryption::decrypt::FileDecryptionProperties;
use parquet::encryption::encrypt::FileEncryptionProperties;

use crate::commands::remote::DAY_MARGIN_DAYS;
use crate::event::Signal;
use crate::segment::reader::SegmentRetriever;
use crate::segment::{SegmentId, schema};

/// The id under which [`SealedDecryption`] is registered in DataFusion's runtime.
pub const FACTORY_ID: &str = "sealtrail";

/// DataFusion's encryption factory over our key providers (see the module docs).
pub struct SealedDecryption {
    pub retriever: Arc<SegmentRetriever>,
}

impl std::fmt::Debug for SealedDecryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedDecryption")
    }
}

#[async_trait]
impl EncryptionFactory for SealedDecryption {
    async fn get_file_encryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _schema: &SchemaRef,
        file_path: &object_store_path::Path,
    ) -> datafusion::common::Result<Option<Arc<FileEncryptionProperties>>> {
        // `sql` refuses DML (COPY, INSERT) before planning; this is the second fence.
        Err(DataFusionError::Plan(format!(
            "sealtrail sql does not write segments (asked to encrypt {file_path})"
        )))
    }

    async fn get_file_decryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        file_path: &object_store_path::Path,
    ) -> datafusion::common::Result<Option<Arc<FileDecryptionProperties>>> {
        let name = file_path.filename().unwrap_or_default();
        let id = name.strip_suffix(".parquet").and_then(SegmentId::parse).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "segment /{file_path}: the file name `{name}` is not a segment id, so the segment cannot be authenticated"
            ))
        })?;
        let props = FileDecryptionProperties::with_key_retriever(self.retriever.clone())
            .with_aad_prefix(id.to_string().into_bytes())
            .build()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Some(props))
    }
}

/// A sealed segment and the UTC day of its directory, if its path has the layout.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub path: PathBuf,
    /// Nanoseconds at the start of the `yyyy/mm/dd` day of its directory.
    pub day_start: Option<i64>,
}

impl SegmentFile {
    pub fn new(path: PathBuf) -> SegmentFile {
        let day_start = day_of_path(&path);
        SegmentFile { path, day_start }
    }
}

const DAY_NANOS: i64 = 86_400 * 1_000_000_000;

/// The start of the day of `…/yyyy/mm/dd/<segment>.parquet`, in nanoseconds.
pub fn day_of_path(path: &Path) -> Option<i64> {
    let mut parts = path.ancestors().skip(1).take(3).map(|p| p.file_name().and_then(|n| n.to_str()));
    let d: u32 = parts.next()??.parse().ok()?;
    let m: u32 = parts.next()??.parse().ok()?;
    let y: i32 = parts.next()??.parse().ok()?;
    let date = chrono::NaiveDate::from_ymd_opt(y, m, d)?;
    date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt()
}

/// Whether a segment in the directory of the day starting at `day_start` can hold an event in
/// `lo ..= hi`. A segment's day is its first event's; it can hold events up to its `max_age`
/// later, or late arrivals from earlier, so the day is widened by [`DAY_MARGIN_DAYS`] on each
/// side (as `query` does for `s3://` listings); the footer statistics then prune exactly.
pub fn day_may_match(day_start: Option<i64>, lo: Option<i64>, hi: Option<i64>) -> bool {
    let Some(start) = day_start else { return true };
    let margin = DAY_MARGIN_DAYS * DAY_NANOS;
    let first = start.saturating_sub(margin);
    let last = start.saturating_add(DAY_NANOS + margin - 1);
    lo.is_none_or(|lo| last >= lo) && hi.is_none_or(|hi| first <= hi)
}

/// A scan's time range from its filters, Unix nanoseconds, each end open when `None`.
pub type TimeBounds = (Option<i64>, Option<i64>);

/// The range `lo ..= hi` (nanoseconds, inclusive, `None` for unbounded) that the conjunction
/// of `filters` allows for the column `time_col`. Only comparisons of the column with a
/// literal count; anything else leaves the range as it is, so the result never excludes a
/// matching row.
pub fn time_bounds(filters: &[Expr], time_col: &str) -> TimeBounds {
    let (mut lo, mut hi) = (None::<i64>, None::<i64>);
    let mut stack: Vec<&Expr> = filters.iter().collect();
    while let Some(e) = stack.pop() {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                stack.push(left);
                stack.push(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, v) = match (
                    column_name(left),
                    literal_nanos(right),
                    column_name(right),
                    literal_nanos(left),
                ) {
                    (Some(c), Some(v), _, _) if c == time_col => (*op, v),
                    (_, _, Some(c), Some(v)) if c == time_col => match op.swap() {
                        Some(op) => (op, v),
                        None => continue,
                    },
                    _ => continue,
                };
                match op {
                    Operator::Gt | Operator::GtEq => lo = Some(lo.map_or(v, |l| l.max(v))),
                    Operator::Lt | Operator::LtEq => hi = Some(hi.map_or(v, |h| h.min(v))),
                    Operator::Eq => {
                        lo = Some(lo.map_or(v, |l| l.max(v)));
                        hi = Some(hi.map_or(v, |h| h.min(v)));
                    }
                    _ => {}
                }
            }
            Expr::Between(b) if !b.negated && column_name(&b.expr) == Some(time_col) => {
                if let Some(v) = literal_nanos(&b.low) {
                    lo = Some(lo.map_or(v, |l| l.max(v)));
                }
                if let Some(v) = literal_nanos(&b.high) {
                    hi = Some(hi.map_or(v, |h| h.min(v)));
                }
            }
            _ => {}
        }
    }
    (lo, hi)
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        Expr::TryCast(c) => column_name(&c.expr),
        _ => None,
    }
}

/// A literal time as nanoseconds: a timestamp of any unit, or RFC 3339 text.
fn literal_nanos(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => scalar_nanos(v),
        Expr::Cast(c) => literal_nanos(&c.expr),
        Expr::TryCast(c) => literal_nanos(&c.expr),
        _ => None,
    }
}

fn scalar_nanos(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampNanosecond(Some(n), _) => Some(*n),
        ScalarValue::TimestampMicrosecond(Some(n), _) => n.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(n), _) => n.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(n), _) => n.checked_mul(1_000_000_000),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp_nanos_opt()
        }
        _ => None,
    }
}

/// A signal's table over a set of sealed segments (see the module docs).
#[derive(Debug)]
pub struct SegmentTable {
    pub signal: Signal,
    /// The segments the query may read, set once the audit record is written (before that, a
    /// scan fails: nothing is decrypted before the query is recorded).
    files: Mutex<Option<Vec<SegmentFile>>>,
}

impl SegmentTable {
    pub fn new(signal: Signal) -> SegmentTable {
        SegmentTable { signal, files: Mutex::new(None) }
    }

    /// The segments this table reads from now on.
    pub fn set_files(&self, files: Vec<SegmentFile>) {
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = Some(files);
    }

    /// The Parquet options: our encryption factory, filters pushed into the decoder (a point
    /// query decodes the other columns only where rows match), statistics and page index.
    fn format() -> ParquetFormat {
        let mut opts = TableParquetOptions::default();
        opts.crypto.factory_id = Some(FACTORY_ID.to_owned());
        opts.global.pushdown_filters = true;
        opts.global.reorder_filters = true;
        opts.global.enable_page_index = true;
        ParquetFormat::default().with_options(opts)
    }
}

#[async_trait]
impl TableProvider for SegmentTable {
    fn schema(&self) -> SchemaRef {
        schema::of(self.signal)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| {
            DataFusionError::Internal(
                "segments scanned before the query was recorded in the audit log".into(),
            )
        })?;
        let (lo, hi) = time_bounds(filters, schema::time_column(self.signal));
        let urls = files
            .iter()
            .filter(|f| day_may_match(f.day_start, lo, hi))
            .map(|f| ListingTableUrl::parse(f.path.to_string_lossy()))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let schema = self.schema();
        if urls.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let options = ListingOptions::new(Arc::new(Self::format())).with_file_extension(".parquet");
        let config =
            ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
        let table = ListingTable::try_new(config)?;
        table.scan(state, projection, filters, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_nanos_opt().unwrap()
    }

    #[test]
    fn bounds_from_comparisons_either_way_round() {
        let t = |s: &str| lit(ScalarValue::TimestampNanosecond(Some(ts(s)), Some("UTC".into())));
        let f = [
            col("time").gt_eq(t("2026-11-27T10:00:00Z")),
            t("2026-11-28T10:00:00Z").gt(col("time")).and(col("service").eq(lit("x"))),
        ];
        assert_eq!(
            time_bounds(&f, "time"),
            (Some(ts("2026-11-27T10:00:00Z")), Some(ts("2026-11-28T10:00:00Z")))
        );
        assert_eq!(time_bounds(&f, "start_time"), (None, None));
        // An OR bounds nothing.
        let or = [col("time").gt(t("2026-11-27T10:00:00Z")).or(col("time").lt(t("2026-11-20T00:00:00Z")))];
        assert_eq!(time_bounds(&or, "time"), (None, None));
        let text = [col("time").lt(lit("2026-11-20T00:00:00Z"))];
        assert_eq!(time_bounds(&text, "time"), (None, Some(ts("2026-11-20T00:00:00Z"))));
    }

    #[test]
    fn days_with_a_margin() {
        let p = Path::new("/d/logs/2026/11/28/1795000000123-0000000000000abc.parquet");
        let day = day_of_path(p);
        assert_eq!(day, Some(ts("2026-11-28T00:00:00Z")));
        assert_eq!(day_of_path(Path::new("/d/x.parquet")), None);
        // The day before and the day after are kept (margin), two days away is not.
        assert!(day_may_match(day, Some(ts("2026-11-29T23:00:00Z")), None));
        assert!(!day_may_match(day, Some(ts("2026-11-30T00:00:00Z")), None));
        assert!(day_may_match(day, None, Some(ts("2026-11-27T00:00:00Z"))));
        assert!(!day_may_match(day, None, Some(ts("2026-11-26T23:59:59Z"))));
        assert!(day_may_match(None, Some(0), Some(0)));
    }
}
