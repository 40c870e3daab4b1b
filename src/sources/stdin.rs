//! The `stdin` source: one log record per line of standard input. The run ends when standard
//! input ends and everything read has been delivered.

use std::io::Read;

use serde::Deserialize;
use tokio::sync::mpsc;

use super::lines::{LineSplitter, RecordBuilder};
use crate::component::SourceContext;
use crate::component::{BoxFuture, BuildContext, Source, SourceConfig, SourceKind, parse_source};
use crate::event::Signals;

pub const KIND: SourceKind = SourceKind {
    name: "stdin",
    description: "lines from standard input",
    parse: parse_source::<StdinConfig>,
};

/// Configuration for the `stdin` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// Lines longer than this many bytes are split into several records marked as continued.
    #[serde(default = "super::lines::default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// The service name given to every record (used by key rules and filters).
    #[serde(default)]
    pub service: String,
}

impl SourceConfig for StdinConfig {
    fn outputs(&self) -> Signals {
        Signals::LOGS
    }

    /// No: stdin can be read once.
    fn restartable(&self) -> bool {
        false
    }

    fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Source>> {
        super::lines::check_max_line_bytes(self.max_line_bytes)?;
        Ok(Box::new(ReaderSource {
            reader: Box::new(|| Box::new(std::io::stdin()) as Box<dyn Read + Send>),
            max_line_bytes: self.max_line_bytes,
            builder: RecordBuilder::new(cx.id, &self.service),
        }))
    }
}

/// Reads chunks from a blocking reader on a thread of its own and turns them into records.
///
/// The reading thread only moves raw chunks (through a small bounded channel, so a full
/// pipeline stops the reads); the async side splits lines. On shutdown the async side takes
/// every chunk already read, emits the unfinished last line, and returns: nothing that was
/// read is lost, even though a thread blocked in `read` cannot be woken.
pub struct ReaderSource {
    /// Opens the reader (called once, on the reading thread).
    pub reader: Box<dyn FnOnce() -> Box<dyn Read + Send> + Send>,
    pub max_line_bytes: usize,
    pub builder: RecordBuilder,
}

const CHUNK: usize = 64 * 1024;

impl Source for ReaderSource {
    fn run(self: Box<Self>, mut cx: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move {
            let ReaderSource { reader, max_line_bytes, mut builder } = *self;
            let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
            std::thread::Builder::new().name("sealtrail-stdin".into()).spawn(move || {
                let mut r = reader();
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    match r.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            buf.truncate(n);
                            if tx.blocking_send(Ok(buf)).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
            })?;

            let mut splitter = LineSplitter::new(max_line_bytes);
            let mut shutdown = cx.shutdown.clone();
            let mut result = Ok(());
            loop {
                let chunk = tokio::select! {
                    biased;
                    c = rx.recv() => c,
                    _ = shutdown.recv() => {
                        // Deliver what has been read already, then stop: after `close` the
                        // channel yields the chunks it holds, then `None`.
                        rx.close();
                        rx.recv().await
                    }
                };
                let Some(chunk) = chunk else { break };
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        cx.metrics.error("read");
                        result = Err(anyhow::anyhow!("reading standard input: {e}"));
                        break;
                    }
                };
                // Sized for lines of about 128 bytes, so the vector rarely grows (and copies).
                let mut events = Vec::with_capacity(chunk.len() / 128 + 16);
                builder.push(&mut splitter, &chunk, &mut events);
                if cx.out.send_events(events).await.is_err() {
                    return Ok(());
                }
            }
            let mut events = Vec::new();
            builder.finish(&mut splitter, &mut events);
            let _ = cx.out.send_events(events).await;
            cx.metrics.add("invalid_utf8", builder.invalid_utf8);
            result
        })
    }
}
