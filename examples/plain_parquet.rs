//! The end-to-end baseline of DESIGN.md "Targets": reads lines from standard input and
//! writes them as one `body` column with a plain single-threaded `ArrowWriter` and zstd(1)
//! (no event model, no redaction, no encryption) to the file named by the first argument.
//!
//! ```text
//! cargo run --release --example plain_parquet -- out.parquet < lines.txt
//! ```

use std::io::BufRead;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).ok_or("usage: plain_parquet OUT.parquet < lines")?;
    let schema = Arc::new(Schema::new(vec![Field::new("body", DataType::Utf8, false)]));
    let props =
        WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?)).build();
    let file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    let mut b = StringBuilder::with_capacity(8192, 8192 * 160);
    let mut n = 0usize;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        b.append_value(String::from_utf8_lossy(&line));
        n += 1;
        if n % 8192 == 0 {
            let col: ArrayRef = Arc::new(b.finish());
            w.write(&RecordBatch::try_new(schema.clone(), vec![col])?)?;
            // Same memory bound as the sealed sink: flush row groups by size.
            if w.in_progress_size() >= 8 << 20 {
                w.flush()?;
            }
        }
    }
    let col: ArrayRef = Arc::new(b.finish());
    w.write(&RecordBatch::try_new(schema, vec![col])?)?;
    let md = w.close()?;
    eprintln!("plain_parquet: {} rows", md.file_metadata().num_rows());
    Ok(())
}
