//! `callhook report` (analytics) — built in its own change.

use crate::cli::ReportArgs;
use crate::config::FileConfig;

pub async fn run(_args: &ReportArgs, _file: &FileConfig) -> anyhow::Result<()> {
    anyhow::bail!("`callhook report` is not available in this build yet")
}
