//! The in-memory queue between the listener and the pipeline: the handler answers the
//! platform at once, and this task feeds the pipeline at its own pace.

use super::*;

/// Feeds the pipeline from the queue until every sender is gone, then returns (which drops
/// the output: the end of input for downstream components).
pub(super) async fn forward(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    mut out: Fanout,
    queued: Arc<AtomicUsize>,
    periodic: Option<Duration>,
) {
    let mut tick = periodic.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {
                if out.send_seal().await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some((batch, bytes, seal, ack)) = item else { break };
        queued.fetch_sub(bytes, Ordering::Relaxed);
        if out.send_with(batch, ack).await.is_err() {
            // Every consumer stopped (a sink failed); the topology reports that failure.
            return;
        }
        // The seal marker follows the invoke's records through the pipeline, so the sink
        // seals them and not a moment earlier.
        if seal && out.send_seal().await.is_err() {
            return;
        }
    }
}
