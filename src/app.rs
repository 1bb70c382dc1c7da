//! Start-up and shutdown: builds the store, the spool, the ingest writers and the router
//! from [`Settings`], binds the listener (so tests can use port 0), and runs until a
//! shutdown signal, then drains everything in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::health::DbHealth;
use crate::http::{self, AppState, SharedState};
use crate::ingest::{BatchSink, Ingest, Writers};
use crate::spool::Spool;
use crate::store::Store;

/// A built, bound, not yet running receiver.
pub struct Application {
    listener: TcpListener,
    state: SharedState,
    writers: Writers,
    background: JoinSet<()>,
}

impl Application {
    /// Connects to the database (applying migrations unless disabled), opens the spool,
    /// starts the writers and binds the listen address.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database).await?;
        if settings.migrate {
            store.migrate().await?;
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Self::build_with(settings, store, listener).await
    }

    /// Like [`Application::build`] with an existing store and listener.
    pub async fn build_with(
        settings: Settings,
        store: Store,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let sink: Arc<dyn BatchSink> = Arc::new(store.clone());
        Self::build_with_sink(settings, store, sink, listener).await
    }

    /// Like [`Application::build_with`], with the writers putting batches into `sink`
    /// instead of `store` (`store` still answers readiness). Only the benchmark's HTTP-only
    /// ceiling (`examples/noop_receiver.rs`) uses another sink.
    pub async fn build_with_sink(
        settings: Settings,
        store: Store,
        sink: Arc<dyn BatchSink>,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        // First: gauges set while starting (queue capacity, spool contents) must reach it.
        let metrics = crate::metrics::install();
        let health = Arc::new(DbHealth::default());
        let spool = match &settings.spool.dir {
            Some(dir) => Some(Arc::new(Spool::open(dir, settings.spool.max_bytes)?)),
            None => None,
        };
        // A write that has not finished by then is abandoned and its requests are answered
        // 503 (or spooled): a database that hangs (a network partition) must not hold the
        // sender past a second or two. The dedupe key makes the sender's retry safe even
        // if the abandoned transaction did commit.
        let write_timeout = (settings.database.acquire_timeout + Duration::from_millis(500))
            .max(Duration::from_millis(1500));
        let (ingest, writers) = Ingest::start(
            sink,
            &settings.ingest,
            Arc::clone(&health),
            spool.clone(),
            write_timeout,
        );
        let mut background = JoinSet::new();
        if let Some(handle) = &metrics {
            background.spawn(crate::metrics::upkeep(
                handle.clone(),
                Duration::from_secs(5),
            ));
        }
        let state = Arc::new(AppState::new(
            settings, ingest, store, health, spool, metrics,
        ));
        background.spawn(probe_and_replay(Arc::clone(&state)));
        Ok(Self {
            listener,
            state,
            writers,
            background,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting, answers what is in flight,
    /// commits everything queued and closes the database, all within the configured
    /// shutdown timeout.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            writers,
            mut background,
        } = self;
        let addr = listener.local_addr()?;
        tracing::info!(
            listen = %addr,
            path = %state.settings.callback_path,
            backend = state.store.backend(),
            apps = ?state.settings.apps.keys().collect::<Vec<_>>(),
            "callhook is receiving callbacks"
        );
        let router = http::router(Arc::clone(&state));
        let deadline_budget = state.settings.shutdown_timeout;
        let flag = Arc::clone(&state);
        let shutdown = async move {
            shutdown.await;
            flag.shutting_down.store(true, Ordering::Relaxed);
            tracing::info!("shutting down: no new connections; finishing requests in flight");
        };
        let drained = http::server::serve(
            listener,
            router,
            state.settings.header_read_timeout,
            shutdown,
            deadline_budget,
        )
        .await;
        let started = Instant::now();
        if !drained {
            tracing::warn!("connections still open at the shutdown deadline were closed");
        }
        state.ingest.close();
        let left = deadline_budget
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(500));
        if tokio::time::timeout(left, writers.finish()).await.is_err() {
            tracing::warn!(
                "writers did not finish before the shutdown deadline; unacknowledged deliveries will be retried by the sender"
            );
        }
        background.abort_all();
        state.store.close().await;
        tracing::info!("callhook stopped");
        Ok(())
    }
}

/// While the database is marked down, pings it twice a second and marks it up when it
/// answers; while it is up and the spool holds events, replays them.
async fn probe_and_replay(state: SharedState) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !state.health.is_up() {
            match state.store.ping(Duration::from_secs(1)).await {
                Ok(()) => state.health.mark_up(),
                Err(_) => continue,
            }
        }
        if let Some(spool) = &state.spool {
            if spool.stats().events > 0 {
                if let Err(e) = spool
                    .replay(&state.store, state.settings.ingest.max_batch)
                    .await
                {
                    metrics::counter!(crate::metrics::SPOOL_ERRORS, "op" => "replay").increment(1);
                    if let crate::store::StoreError::Unavailable(msg) = &e {
                        state.health.mark_down(msg);
                    } else {
                        tracing::error!(error = %e, "spool replay failed; retrying");
                    }
                }
            }
        }
    }
}
