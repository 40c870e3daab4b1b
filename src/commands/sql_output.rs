//! The output formats of `sealtrail sql`: an aligned table, JSON lines and CSV, written as
//! batches come, neutralised as `sealtrail query` does (control characters and bidirectional
//! overrides escaped in the table and CSV; CSV cells that a spreadsheet would run as a
//! formula prefixed with `'`).
//!
//! Values print as `query --format jsonl` prints the same fields: times as RFC 3339 in UTC
//! (`null` when unknown or zero), maps as JSON objects with their keys in byte order.

use std::io::Write;

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array,
    MapArray, RecordBatch, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value as J;

use crate::commands::query::{sanitize, write_csv_cell};

/// The text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
    Csv,
}

/// A timestamp cell as nanoseconds, `None` for null.
fn nanos(a: &dyn Array, unit: &TimeUnit, row: usize) -> Option<i64> {
    use datafusion::arrow::datatypes::{
        TimestampMicrosecondType as Us, TimestampMillisecondType as Ms, TimestampNanosecondType as Ns,
        TimestampSecondType as S,
    };
    if a.is_null(row) {
        return None;
    }
    match unit {
        TimeUnit::Nanosecond => Some(a.as_primitive::<Ns>().value(row)),
        TimeUnit::Microsecond => a.as_primitive::<Us>().value(row).checked_mul(1_000),
        TimeUnit::Millisecond => a.as_primitive::<Ms>().value(row).checked_mul(1_000_000),
        TimeUnit::Second => a.as_primitive::<S>().value(row).checked_mul(1_000_000_000),
    }
}

/// One cell as JSON (see the module docs for times and maps).
pub fn json_value(a: &dyn Array, row: usize) -> J {
    if a.is_null(row) {
        return J::Null;
    }
    macro_rules! num {
        ($t:ty) => {
            J::from(a.as_any().downcast_ref::<$t>().map(|x| x.value(row)))
        };
    }
    match a.data_type() {
        DataType::Null => J::Null,
        DataType::Boolean => J::from(a.as_any().downcast_ref::<BooleanArray>().map(|x| x.value(row))),
        DataType::Int8 => num!(Int8Array),
        DataType::Int16 => num!(Int16Array),
        DataType::Int32 => num!(Int32Array),
        DataType::Int64 => num!(Int64Array),
        DataType::UInt8 => num!(UInt8Array),
        DataType::UInt16 => num!(UInt16Array),
        DataType::UInt32 => num!(UInt32Array),
        DataType::UInt64 => num!(UInt64Array),
        // NaN and infinities have no JSON form: `null`, as serde_json writes them.
        DataType::Float32 => num!(Float32Array),
        DataType::Float64 => num!(Float64Array),
        DataType::Utf8 => J::from(a.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => J::from(a.as_string::<i64>().value(row)),
        DataType::Utf8View => J::from(a.as_string_view().value(row)),
        DataType::Timestamp(unit, _) => match nanos(a, unit, row) {
            None | Some(0) => J::Null,
            Some(n) => J::from(crate::event::json::rfc3339(n)),
        },
        DataType::Map(..) => {
            let Some(m) = a.as_any().downcast_ref::<MapArray>() else { return J::Null };
            let entries = m.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            // serde_json's map is ordered by key: the order `query` prints attributes in.
            let mut obj = serde_json::Map::new();
            for i in 0..entries.len() {
                let k = match json_value(keys.as_ref(), i) {
                    J::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(k, json_value(values.as_ref(), i));
            }
            J::Object(obj)
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>().value(row);
            J::Array((0..l.len()).map(|i| json_value(l.as_ref(), i)).collect())
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>().value(row);
            J::Array((0..l.len()).map(|i| json_value(l.as_ref(), i)).collect())
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut obj = serde_json::Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                obj.insert(f.name().clone(), json_value(c.as_ref(), row));
            }
            J::Object(obj)
        }
        _ => J::from(display(a, row)),
    }
}

/// Arrow's display form of a cell (`NULL` for null).
fn display(a: &dyn Array, row: usize) -> String {
    let opts = FormatOptions::default().with_null("NULL");
    match ArrayFormatter::try_new(a, &opts) {
        Ok(f) => f.value(row).to_string(),
        Err(e) => format!("<{e}>"),
    }
}

/// One cell as text for the table and CSV: times as RFC 3339, maps, lists and structs as
/// their JSON, everything else in arrow's display form. Not yet neutralised.
pub fn cell_text(a: &dyn Array, row: usize) -> String {
    match a.data_type() {
        _ if a.is_null(row) => String::new(),
        DataType::Timestamp(..)
        | DataType::Map(..)
        | DataType::List(_)
        | DataType::LargeList(_)
        | DataType::Struct(_) => match json_value(a, row) {
            J::String(s) => s,
            J::Null => String::new(),
            other => other.to_string(),
        },
        _ => display(a, row),
    }
}

/// Appends one row of `batch` as a JSON object (columns in their order) and a newline.
fn json_line(out: &mut Vec<u8>, batch: &RecordBatch, row: usize) {
    out.push(b'{');
    for (i, (f, c)) in batch.schema().fields().iter().zip(batch.columns()).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, f.name());
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, &json_value(c.as_ref(), row));
    }
    out.extend_from_slice(b"}\n");
}

/// Writes query results as they come: JSON lines and CSV batch by batch, the table once
/// every row is in (its columns are as wide as their widest cell).
pub struct Writer<'a> {
    w: &'a mut dyn Write,
    format: Format,
    header_done: bool,
    /// The table's cells, neutralised, header first.
    table: Vec<Vec<String>>,
    pub rows: u64,
}

impl<'a> Writer<'a> {
    pub fn new(w: &'a mut dyn Write, format: Format) -> Writer<'a> {
        Writer { w, format, header_done: false, table: Vec::new(), rows: 0 }
    }

    fn header(&mut self, schema: &Schema) -> std::io::Result<()> {
        if self.header_done {
            return Ok(());
        }
        self.header_done = true;
        let names = schema.fields().iter().map(|f| f.name().as_str());
        match self.format {
            Format::Jsonl => {}
            Format::Csv => {
                let mut line = Vec::new();
                for (i, n) in names.enumerate() {
                    if i > 0 {
                        line.push(b',');
                    }
                    write_csv_cell(&mut line, n);
                }
                line.push(b'\n');
                self.w.write_all(&line)?;
            }
            Format::Table => self.table.push(names.map(sanitize).collect()),
        }
        Ok(())
    }

    pub fn batch(&mut self, batch: &RecordBatch) -> std::io::Result<()> {
        self.header(&batch.schema())?;
        let mut out = Vec::new();
        for row in 0..batch.num_rows() {
            match self.format {
                Format::Jsonl => json_line(&mut out, batch, row),
                Format::Csv => {
                    for (i, c) in batch.columns().iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_csv_cell(&mut out, &cell_text(c.as_ref(), row));
                    }
                    out.push(b'\n');
                }
                Format::Table => self
                    .table
                    .push(batch.columns().iter().map(|c| sanitize(&cell_text(c.as_ref(), row))).collect()),
            }
        }
        self.rows += batch.num_rows() as u64;
        self.w.write_all(&out)
    }

    /// Writes what is held (the table) and flushes. `schema` names the columns when no batch
    /// came.
    pub fn finish(mut self, schema: &Schema) -> std::io::Result<()> {
        self.header(schema)?;
        if self.format == Format::Table {
            let cols = self.table.first().map_or(0, |h| h.len());
            let mut widths = vec![0usize; cols];
            for r in &self.table {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let rule: String =
                widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+";
            let mut out = String::new();
            out.push_str(&rule);
            out.push('\n');
            for (i, r) in self.table.iter().enumerate() {
                for (w, c) in widths.iter().zip(r) {
                    let pad = w - c.chars().count();
                    out.push_str("| ");
                    out.push_str(c);
                    out.push_str(&" ".repeat(pad + 1));
                }
                out.push_str("|\n");
                if i == 0 {
                    out.push_str(&rule);
                    out.push('\n');
                }
            }
            out.push_str(&rule);
            out.push('\n');
            let n = self.table.len().saturating_sub(1);
            out.push_str(&format!("{n} row{}\n", if n == 1 { "" } else { "s" }));
            self.w.write_all(out.as_bytes())?;
        }
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{StringArray, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::Field;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), true),
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampNanosecondArray::from(vec![Some(1_500_000_000), None]).with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![Some("=cmd()"), Some("a\x1b[2Jb")])),
                Arc::new(Int64Array::from(vec![Some(7), None])),
            ],
        )
        .unwrap()
    }

    fn render(format: Format) -> String {
        let b = batch();
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, format);
        w.batch(&b).unwrap();
        w.finish(&b.schema()).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn formats_neutralise_and_print_times_as_query_does() {
        assert_eq!(
            render(Format::Jsonl),
            "{\"t\":\"1970-01-01T00:00:01.500Z\",\"s\":\"=cmd()\",\"n\":7}\n{\"t\":null,\"s\":\"a\\u001b[2Jb\",\"n\":null}\n"
        );
        assert_eq!(render(Format::Csv), "t,s,n\n1970-01-01T00:00:01.500Z,'=cmd(),7\n,a\\u{1b}[2Jb,\n");
        let table = render(Format::Table);
        assert!(table.contains("| a\\u{1b}[2Jb |"), "{table}");
        assert!(table.ends_with("2 rows\n"), "{table}");
    }
}
