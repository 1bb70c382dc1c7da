//! The benchmark's HTTP-only ceiling: callhook's own router, parser, logging and ingest
//! queue, with the storage replaced by a sink that acknowledges every batch without
//! writing anything. It exists only for `bench/` (built with
//! `cargo build --release --example noop_receiver`) and is never a mode of `callhook`.
//!
//!   noop_receiver --listen 127.0.0.1:8090 --sdkappid 1400000001

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use callhook::app::Application;
use callhook::cli::LogFormat;
use callhook::config::{AppSettings, Settings};
use callhook::ingest::BatchSink;
use callhook::store::{BatchRow, RejectedRow, Store, StoreError};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Noop;

impl BatchSink for Noop {
    fn write_batch<'a>(
        &'a self,
        rows: &'a [BatchRow<'a>],
        _rejected: &'a [RejectedRow],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<bool>, StoreError>> + Send + 'a>> {
        Box::pin(async move { Ok(vec![true; rows.len()]) })
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _guard = callhook::logging::init(LogFormat::Pretty);
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let sdkappid: i64 = arg("--sdkappid")
        .unwrap_or_else(|| "1400000001".to_owned())
        .parse()?;
    // A throwaway SQLite file answers /readyz; no event is ever written to it.
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("noop.db").display());
    let mut settings = Settings::new(url, [AppSettings::new(sdkappid)]);
    settings.listen = listen.parse()?;
    let store = Store::connect(&settings.database).await?;
    store.migrate(std::time::Duration::from_secs(3600)).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    Application::build_with_sink(settings, store, Arc::new(Noop), listener)
        .await?
        .run_until(callhook::shutdown_signal())
        .await
}
