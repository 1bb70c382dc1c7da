//! Start-up and shutdown: builds the store, the outage journal, the ingest writers and the
//! router from [`Settings`], binds the listener (so tests can use port 0), and runs until a
//! shutdown signal, then drains everything in flight within one deadline.
//!
//! A PostgreSQL that is down at start-up does not stop callhook: it serves at once,
//! journals what arrives, and applies migrations and replays the journal as soon as the
//! database answers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::{Settings, TrtcCheck};
use crate::health::DbHealth;
use crate::http::{self, AppState, SharedState};
use crate::ingest::{BatchSink, Ingest, Writers};
use crate::journal::Journal;
use crate::logging::Complaint;
use crate::store::{Store, StoreError};
use crate::supervisor::{Lifetime, Supervisor, Tasks};

/// How long the database may take to answer at start-up before callhook serves without it.
const STARTUP_PING: Duration = Duration::from_secs(2);
/// How long one attempt at applying migrations may take: an hour, as for `callhook migrate`
/// (copying `call_events` into partitions takes minutes per 10 million events).
const MIGRATE_DEADLINE: Duration = Duration::from_secs(3600);
/// Every how many ticks (`Settings::tick`) the replay asks the journal itself whether it
/// holds rows (every 5 s at the default tick).
const CHECK_EVERY: u32 = 10;

/// Logs, once per app, which checks its callbacks get (never a secret's value): the token,
/// the command list, and how TRTC's callbacks are checked. An app whose TRTC callbacks are
/// refused for want of a key is a warning: it is most likely a key not yet configured.
fn log_app_checks(settings: &Settings) {
    for app in settings.apps.values() {
        let token = if app.token.is_some() { "on" } else { "off" };
        let commands = match &app.commands {
            Some(listed) => format!("{} listed", listed.len()),
            None => "all".to_owned(),
        };
        let trtc = app.trtc_check();
        tracing::info!(
            sdkappid = app.sdkappid,
            token,
            commands = %commands,
            trtc = trtc.label(),
            "app checks"
        );
        if trtc == TrtcCheck::Refused {
            tracing::warn!(
                sdkappid = app.sdkappid,
                "this app's TRTC callbacks are refused: it has a token but no TRTC key; set trtc_key, trtc_key_env or CALLHOOK_TRTC_KEY_{} (or, unsafe, trtc_allow_unsigned = true)",
                app.sdkappid
            );
        }
    }
}

/// A built, bound, not yet running receiver.
pub struct Application {
    listener: TcpListener,
    state: SharedState,
    writers: Writers,
    /// The prober, the journal's replay, the metrics upkeep and the forwarding workers:
    /// aborted at shutdown.
    background: Supervisor,
    /// The forwarding workers' own connections, when destinations are configured.
    forwarding: Option<Store>,
}

impl Application {
    /// Connects to the database and applies pending migrations, opens the journal, starts
    /// the writers and binds the listen address. A PostgreSQL that does not answer within
    /// a couple of seconds does not stop the start: callbacks are journaled, and the
    /// migrations run in the background as soon as it answers. (A migration that fails for
    /// any other reason is an error.)
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database)
            .await?
            .with_routes(crate::forward::routes(&settings.forward));
        let reachable = match store.ping(STARTUP_PING).await {
            Ok(()) => true,
            Err(e) if store.is_remote() => {
                tracing::warn!(
                    error = %e,
                    "the database is not answering; serving anyway: callbacks are journaled, and migrations and replay run as soon as it answers"
                );
                false
            }
            Err(e) => return Err(anyhow::Error::new(e).context("opening the database")),
        };
        let mut reachable = reachable;
        if settings.migrate && reachable {
            if upgrade_in_background(&store, &settings).await? {
                tracing::info!(
                    "upgrading the database schema in the background; callbacks are journaled meanwhile and stored as soon as it is done"
                );
                reachable = false;
            } else if let Err(e) = store.migrate(MIGRATE_DEADLINE).await {
                // The database went away while migrating (a restart, a failover): serve
                // anyway and migrate when it answers, as when it was down at start.
                if !(store.is_remote() && lost_connection(&e)) {
                    return Err(e);
                }
                tracing::warn!(
                    error = %format!("{e:#}"),
                    "the database stopped answering while migrating; serving anyway: callbacks are journaled, and migrations and replay run as soon as it answers"
                );
                reachable = false;
            }
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let sink: Arc<dyn BatchSink> = Arc::new(store.clone());
        Self::assemble(settings, store, sink, listener, reachable).await
    }

    /// Like [`Application::build`] with an existing store and listener.
    pub async fn build_with(
        settings: Settings,
        store: Store,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let store = store.with_routes(crate::forward::routes(&settings.forward));
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
        Self::assemble(settings, store, sink, listener, true).await
    }

    /// `ready`: the database answered and its schema is in place.
    async fn assemble(
        settings: Settings,
        store: Store,
        sink: Arc<dyn BatchSink>,
        listener: TcpListener,
        ready: bool,
    ) -> anyhow::Result<Self> {
        // First: gauges set while starting (queue capacity, journal contents) must reach it.
        let metrics = crate::metrics::install();
        let journal = match &settings.spool.dir {
            Some(dir) => Some(Arc::new(
                Journal::open_with(
                    dir,
                    settings.spool.max_bytes,
                    settings.database.faults.clone(),
                )
                .await?,
            )),
            None => None,
        };
        // A database that did not answer at start-up counts as down until a probe (and
        // the migrations) succeed, so callbacks are journaled rather than failed meanwhile.
        let health = Arc::new(DbHealth::new(ready));
        if !settings.migrate {
            health.schema_ready();
        }
        let tasks = Arc::new(Tasks::default());
        let (ingest, writers) = Ingest::start(
            sink,
            &settings.ingest,
            Arc::clone(&health),
            journal.clone(),
            Arc::clone(&tasks),
        );
        let mut background = Supervisor::new(Arc::clone(&tasks));
        if let Some(handle) = &metrics {
            let handle = handle.clone();
            background.spawn("metrics-upkeep", Lifetime::UntilAborted, move || {
                crate::metrics::upkeep(handle.clone(), Duration::from_secs(5))
            });
        }
        let state = Arc::new(AppState::new(
            settings, ingest, store, health, journal, metrics, tasks,
        ));
        let prober = Arc::clone(&state);
        background.spawn("prober", Lifetime::UntilAborted, move || {
            watch_database(Arc::clone(&prober))
        });
        spawn_reconcile(&mut background, &state).await?;
        spawn_rollup(&mut background, &state).await?;
        spawn_history(&mut background, &state).await?;
        spawn_room_check(&mut background, &state).await?;
        if let Some(journal) = &state.journal {
            let (replayer, journal) = (Arc::clone(&state), Arc::clone(journal));
            background.spawn("journal-replay", Lifetime::UntilAborted, move || {
                replay_journal(Arc::clone(&replayer), Arc::clone(&journal))
            });
        }
        // The delivery workers look for due entries every two ticks (a second) when no
        // commit of this process wakes them.
        let forwarding = crate::forward::start(
            &mut background,
            &state.store,
            &state.settings.database,
            &state.settings.forward,
            state.settings.tick * 2,
        )
        .await?;
        Ok(Self {
            listener,
            state,
            writers,
            background,
            forwarding,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting, answers what is in flight,
    /// commits everything queued and closes the databases, all within the configured
    /// shutdown timeout, counted from the signal.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            writers,
            mut background,
            forwarding,
        } = self;
        let addr = listener.local_addr()?;
        tracing::info!(
            listen = %addr,
            path = %state.settings.callback_path,
            backend = state.store.backend(),
            apps = ?state.settings.apps.keys().collect::<Vec<_>>(),
            "callhook is receiving callbacks"
        );
        log_app_checks(&state.settings);
        let router = http::router(Arc::clone(&state));
        let budget = state.settings.shutdown_timeout;
        let signaled: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
        let flag = Arc::clone(&state);
        let at = Arc::clone(&signaled);
        let shutdown = async move {
            shutdown.await;
            let _ = at.set(Instant::now());
            flag.shutting_down.store(true, Ordering::Relaxed);
            tracing::info!("shutting down: no new connections; finishing requests in flight");
        };
        let drained = http::server::serve(
            listener,
            router,
            state.settings.header_read_timeout,
            shutdown,
            budget,
        )
        .await;
        let deadline = tokio::time::Instant::from_std(
            signaled.get().copied().unwrap_or_else(Instant::now) + budget,
        );
        if !drained {
            tracing::warn!("connections still open at the shutdown deadline were closed");
        }
        state.ingest.close();
        if tokio::time::timeout_at(deadline, writers.finish())
            .await
            .is_err()
        {
            tracing::warn!(
                "writers did not finish before the shutdown deadline; unacknowledged deliveries will be retried by the sender"
            );
        }
        background.abort();
        let closed = tokio::time::timeout_at(deadline, async {
            if let Some(journal) = &state.journal {
                journal.close().await;
            }
            state.store.close().await;
            if let Some(store) = &forwarding {
                store.close().await;
            }
        })
        .await;
        if closed.is_err() {
            tracing::warn!("database connections still busy at the shutdown deadline were dropped");
        }
        tracing::info!("callhook stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT: what `callhook serve` passes to
/// [`Application::run_until`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// While the database is down: applies pending migrations once it answers, then probes it
/// twice a second and marks it up when it answers. Every attempt has a deadline, so a
/// database that hangs cannot stall this task.
#[tracing::instrument(name = "prober", skip_all)]
async fn watch_database(state: SharedState) {
    let mut tick = tokio::time::interval(state.settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut complaint = Complaint::default();
    loop {
        tick.tick().await;
        if state.health.is_up() {
            continue;
        }
        if !state.health.has_schema() {
            match state.store.migrate(MIGRATE_DEADLINE).await {
                Ok(()) => {
                    tracing::info!("database migrations applied");
                    state.health.schema_ready();
                }
                Err(e) => {
                    complaint.log(
                        &format!("{e:#}"),
                        "cannot apply migrations yet; callbacks are journaled meanwhile",
                    );
                    continue;
                }
            }
        }
        if state.store.ping(Duration::from_secs(1)).await.is_ok() {
            state.health.mark_up();
        }
    }
}

/// While the database is up and the journal holds events, replays them. Runs apart from
/// the prober, and each replay step has a deadline. The journal's count says when to look
/// at once; every [`CHECK_EVERY`] ticks the journal itself is asked, so a row the count
/// missed (or old segment files waiting for room) is never left behind.
#[tracing::instrument(name = "journal_replay", skip_all)]
async fn replay_journal(state: SharedState, journal: Arc<Journal>) {
    let mut tick = tokio::time::interval(state.settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut complaint = Complaint::default();
    let mut idle = 0u32;
    loop {
        tick.tick().await;
        if !state.health.is_up() {
            continue;
        }
        idle += 1;
        if journal.stats().events == 0 && idle < CHECK_EVERY {
            continue;
        }
        idle = 0;
        match journal
            .replay(&state.store, state.settings.ingest.max_batch)
            .await
        {
            Ok(_) => {}
            Err(StoreError::Unavailable(msg) | StoreError::Indeterminate { reason: msg, .. }) => {
                state.health.mark_down(&msg);
            }
            Err(e) => complaint.log(&e.to_string(), "outage journal replay failed; retrying"),
        }
    }
}

/// A pool of `connections` of a background task's own, so that it never takes a connection
/// the batch writers, the prober or the journal's replay wait for.
async fn own_store(state: &SharedState, connections: u32, task: &str) -> anyhow::Result<Store> {
    let own = crate::store::DatabaseSettings {
        pool_size: connections,
        ..state.settings.database.clone()
    };
    Store::connect(&own)
        .await
        .with_context(|| format!("connecting the {task} to the database"))
}

/// The rollup task, on a pool of its own (one connection; two on SQLite, which keeps one
/// for reading), so its passes never take a connection the batch writers wait for.
async fn spawn_rollup(background: &mut Supervisor, state: &SharedState) -> anyhow::Result<()> {
    let store = own_store(state, 1, "rollup task").await?;
    let health = Arc::clone(&state.health);
    let ingest = state.ingest.clone();
    background.spawn("rollup", Lifetime::UntilAborted, move || {
        crate::rollup::run(store.clone(), Arc::clone(&health), ingest.clone())
    });
    Ok(())
}

/// Whether a migration failed because the connection to the database was lost or refused
/// (rather than for its SQL).
fn lost_connection(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let sqlx_error = cause.downcast_ref::<sqlx::Error>().or_else(|| {
            match cause.downcast_ref::<sqlx::migrate::MigrateError>() {
                Some(sqlx::migrate::MigrateError::Execute(inner))
                | Some(sqlx::migrate::MigrateError::ExecuteMigration(inner, _)) => Some(inner),
                _ => None,
            }
        });
        match sqlx_error {
            Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_)) => true,
            Some(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        }
    }) || format!("{e:#}").contains("no answer within")
}

/// Whether `serve` applies pending migrations after it starts listening rather than before:
/// on PostgreSQL with the journal, when the database already has callhook's schema (an
/// upgrade; a migration may copy a large table, README: "Upgrades"). Callbacks are then
/// journaled, acknowledged and stored when the migrations are done, as in an outage.
async fn upgrade_in_background(store: &Store, settings: &Settings) -> anyhow::Result<bool> {
    let Store::Postgres(pg) = store else {
        return Ok(false);
    };
    if settings.spool.dir.is_none() {
        return Ok(false);
    }
    let (applied, pending) = pg.migration_state().await?;
    Ok(applied > 0 && pending > 0)
}

/// The history upkeep task (partitions ahead, retention), on a pool of its own (one
/// connection; two on SQLite, which keeps one for reading).
async fn spawn_history(background: &mut Supervisor, state: &SharedState) -> anyhow::Result<()> {
    let store = own_store(state, 1, "history upkeep task").await?;
    let health = Arc::clone(&state.health);
    let days = state.settings.retention_days;
    background.spawn("history", Lifetime::UntilAborted, move || {
        crate::retention::run(store.clone(), Arc::clone(&health), days)
    });
    Ok(())
}

/// The room check task (TRTC room callbacks without a known call), on a pool of its own
/// (one connection; two on SQLite, which keeps one for reading).
async fn spawn_room_check(background: &mut Supervisor, state: &SharedState) -> anyhow::Result<()> {
    let store = own_store(state, 1, "room check task").await?;
    let health = Arc::clone(&state.health);
    let apps: Vec<i64> = state.settings.apps.keys().copied().collect();
    background.spawn("room-check", Lifetime::UntilAborted, move || {
        crate::room_check::run(store.clone(), Arc::clone(&health), apps.clone())
    });
    Ok(())
}

/// The reconcile task, when `[reconcile] interval` is set, on a pool of its own (two
/// connections): its pages and its findings query never take a connection the batch
/// writers, the prober or the journal's replay wait for.
async fn spawn_reconcile(background: &mut Supervisor, state: &SharedState) -> anyhow::Result<()> {
    if state.settings.reconcile.interval.is_none() {
        return Ok(());
    }
    let store = own_store(state, 2, "reconcile task").await?;
    let health = Arc::clone(&state.health);
    let apps: Vec<_> = state.settings.apps.values().cloned().collect();
    let settings = state.settings.reconcile.clone();
    background.spawn("reconcile", Lifetime::UntilAborted, move || {
        crate::reconcile::task::run_task(
            store.clone(),
            apps.clone(),
            settings.clone(),
            Arc::clone(&health),
        )
    });
    Ok(())
}
