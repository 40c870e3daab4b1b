//! The sealed sink's wait for a KMS data key: when `GenerateDataKey` fails (KMS unreachable,
//! throttled, a key disabled or a permission missing until someone fixes it), the segment is
//! not opened and its rows stay in the column builders; the writer thread waits and retries
//! with backoff, so the bounded channel in front of it applies backpressure to the sources and
//! no event is lost. After [`MAX_WAIT`] without a data key the sink fails (exit 1) rather than
//! hold events forever; until then every failure is logged (without any event content) and
//! counted as `kms_retries`.

use std::time::{Duration, Instant};

use crate::keys::KeyError;
use crate::metrics::ComponentMetrics;
use crate::segment::writer::WriteError;

/// The first wait after a failed data key request.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a segment waits for a data key in total before the sink gives up.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// Runs `open` until it succeeds, retrying KMS failures with exponential backoff for up to
/// [`MAX_WAIT`]; any other error returns at once.
pub fn retry_kms<T>(
    key: &str,
    metrics: &ComponentMetrics,
    mut open: impl FnMut() -> Result<T, WriteError>,
) -> Result<T, WriteError> {
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match open() {
            Err(WriteError::Key(e @ KeyError::Kms(_))) if start.elapsed() + backoff < MAX_WAIT => {
                metrics.add("kms_retries", 1);
                tracing::warn!(key, error = %e, retry_in_ms = backoff.as_millis() as u64, "no data key from AWS KMS; the segment waits (events are kept) and the request is retried");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            r => return r,
        }
    }
}
