//! `callhook send` (sender simulator): the call generator first; delivery follows.

pub mod generate;

use crate::cli::SendArgs;

/// Some deliveries were dropped after the retry schedule.
#[derive(Debug, thiserror::Error)]
#[error("{0} deliveries were dropped after the retry schedule")]
pub struct Dropped(pub u64);

pub async fn run(_args: SendArgs) -> anyhow::Result<()> {
    anyhow::bail!("`callhook send` is not available in this build yet")
}
