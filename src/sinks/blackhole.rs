//! The `blackhole` sink: counts and discards events. For benchmarks and for measuring what a
//! pipeline costs without its output.

use serde::Deserialize;

use crate::component::{BoxFuture, BuildContext, Sink, SinkConfig, SinkKind, parse_sink};
use crate::component::{SinkContext, SinkInput};

pub const KIND: SinkKind = SinkKind {
    name: "blackhole",
    description: "counts and discards events",
    parse: parse_sink::<BlackholeConfig>,
};

/// Configuration for the `blackhole` sink (it has no options).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

impl SinkConfig for BlackholeConfig {
    fn build(&self, _cx: &BuildContext<'_>) -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

impl Sink for BlackholeConfig {
    fn run(self: Box<Self>, mut input: SinkInput, _cx: SinkContext) -> BoxFuture<anyhow::Result<()>> {
        // `recv` counts events and bytes in; dropping the batch is all that is left to do.
        Box::pin(async move {
            while input.recv().await.is_some() {}
            Ok(())
        })
    }
}
