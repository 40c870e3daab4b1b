//! The `console` sink: writes events to standard output or standard error, as text (the log
//! body, or a one-line summary of a span) or as JSON lines.

use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::component::{BoxFuture, BuildContext, Sink, SinkConfig, SinkKind, parse_sink};
use crate::component::{SinkContext, SinkInput};
use crate::event::{Event, Span, json::rfc3339};

pub const KIND: SinkKind = SinkKind {
    name: "console",
    description: "events to standard output or standard error, as text or JSON",
    parse: parse_sink::<ConsoleConfig>,
};

/// Configuration for the `console` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `stdout` (default) or `stderr`.
    #[serde(default)]
    pub target: Target,
    /// `text` (default): the body of a log record, a one-line summary of a span; `json`: one
    /// JSON object per line.
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Text,
    Json,
}

impl SinkConfig for ConsoleConfig {
    fn build(&self, _cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

impl Sink for ConsoleConfig {
    fn run(self: Box<Self>, input: SinkInput, cx: SinkContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            let r = match self.target {
                Target::Stdout => write_events(input, tokio::io::stdout(), self.encoding).await,
                Target::Stderr => write_events(input, tokio::io::stderr(), self.encoding).await,
            };
            if r.is_err() {
                cx.metrics.error("write");
            }
            r
        })
    }
}

/// Writes every batch of `input` to `out` until the input ends. Generic over the writer so
/// tests pass a `Vec<u8>`.
pub async fn write_events<W: AsyncWrite + Unpin>(
    mut input: SinkInput,
    mut out: W,
    encoding: Encoding,
) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(batch) = input.recv().await {
        for e in batch.iter() {
            encode(e, encoding, &mut buf);
        }
        // Write what is ready now in one go; a broken pipe ends the sink quietly.
        if let Err(e) = out.write_all(&buf).await {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(anyhow::anyhow!("writing to the console: {e}"));
        }
        buf.clear();
        out.flush().await.ok();
    }
    out.flush().await.ok();
    Ok(())
}

/// Appends one event in the given encoding, with a trailing newline.
pub fn encode(e: &Event, encoding: Encoding, buf: &mut Vec<u8>) {
    match (encoding, e) {
        (Encoding::Json, _) => crate::event::json::write_event(buf, e),
        (Encoding::Text, Event::Log(l)) => buf.extend_from_slice(l.body.as_bytes()),
        (Encoding::Text, Event::Span(s)) => buf.extend_from_slice(span_summary(s).as_bytes()),
    }
    buf.push(b'\n');
}

/// `2026-11-27T18:13:22Z span checkout POST /pay 12.3ms trace=… status=ERROR`.
pub fn span_summary(s: &Span) -> String {
    let ms = (s.end_time - s.start_time) as f64 / 1e6;
    let status = match s.status_code {
        1 => "OK",
        2 => "ERROR",
        _ => "UNSET",
    };
    format!(
        "{} span {} {} {ms:.1}ms trace={} span={} status={status}",
        rfc3339(s.start_time),
        if s.service.is_empty() { "-" } else { &s.service },
        s.name,
        hex::encode(s.trace_id),
        hex::encode(s.span_id),
    )
}
