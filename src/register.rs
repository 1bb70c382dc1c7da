//! `callhook register` (its body follows in the next commit; the command exists so that the
//! command line resolves).
use crate::config::RegisterJob;

pub async fn run(_job: RegisterJob) -> anyhow::Result<()> {
    anyhow::bail!("callhook register is not built yet")
}
