//! Prometheus metrics (`GET /metrics`). Every name starts with `callhook_`; docs/src/metrics.md
//! lists them with alert rules. Label values are static strings, so recording a metric on
//! the request path allocates nothing.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const DELIVERIES: &str = "callhook_deliveries_total";
pub const REQUEST_DURATION: &str = "callhook_request_duration_seconds";
pub const BATCH_SIZE: &str = "callhook_batch_size";
pub const COMMIT_DURATION: &str = "callhook_commit_duration_seconds";
pub const QUEUE_DEPTH: &str = "callhook_queue_depth";
pub const QUEUE_CAPACITY: &str = "callhook_queue_capacity";
pub const QUEUE_OLDEST_AGE: &str = "callhook_queue_oldest_age_seconds";
pub const QUEUE_WAIT: &str = "callhook_queue_wait_seconds";
pub const DATABASE_ERRORS: &str = "callhook_database_errors_total";
pub const DATABASE_UP: &str = "callhook_database_up";
pub const NOTED_DELIVERIES: &str = "callhook_noted_deliveries_total";
pub const REJECTED_RECORDS_DROPPED: &str = "callhook_rejected_records_dropped_total";
pub const REJECTED_RECORDS_CAPPED: &str = "callhook_rejected_records_capped_total";
pub const JOURNAL_EVENTS: &str = "callhook_journal_events";
pub const JOURNAL_BYTES: &str = "callhook_journal_bytes";
pub const JOURNAL_OLDEST_AGE: &str = "callhook_journal_oldest_age_seconds";
pub const JOURNAL_APPENDED: &str = "callhook_journal_appended_total";
pub const JOURNAL_REPLAYED: &str = "callhook_journal_replayed_total";
pub const JOURNAL_REFUSED: &str = "callhook_journal_refused_total";
pub const JOURNAL_ERRORS: &str = "callhook_journal_errors_total";
pub const JOURNAL_CORRUPT: &str = "callhook_journal_corrupt_total";
pub const JOURNAL_UNREADABLE: &str = "callhook_journal_unreadable_total";
pub const JOURNAL_BEHIND: &str = "callhook_journal_behind_total";
pub const JOURNAL_STEP_TIMEOUTS: &str = "callhook_journal_step_timeouts_total";
pub const WRITER_RESTARTS: &str = "callhook_writer_restarts_total";
pub const TASK_RESTARTS: &str = "callhook_task_restarts_total";
pub const RECONCILE_RUNS: &str = "callhook_reconcile_runs_total";
pub const RECONCILE_LAST_SUCCESS: &str = "callhook_reconcile_last_success_timestamp_seconds";
pub const RECONCILE_RECORDS: &str = "callhook_reconcile_records";
pub const RECONCILE_RECORD_ONLY: &str = "callhook_reconcile_record_only_calls";
pub const RECONCILE_INTERVAL: &str = "callhook_reconcile_interval_seconds";
pub const CALLS_ENDED: &str = "callhook_calls_ended_total";
pub const CALLS_ZERO_TALK: &str = "callhook_calls_zero_talk_total";
pub const CALLBACK_LAG: &str = "callhook_callback_lag_seconds";
pub const ROOM_CALLBACKS_CHECKED: &str = "callhook_room_callbacks_checked";
pub const ROOM_CALLBACKS_WITHOUT_CALL: &str = "callhook_room_callbacks_without_call";
pub const ROLLUP_CALLS: &str = "callhook_rollup_calls_total";
pub const ROLLUP_LAG: &str = "callhook_rollup_lag_seconds";
pub const ROLLUP_ERRORS: &str = "callhook_rollup_errors_total";
pub const RETENTION_REMOVED: &str = "callhook_retention_rows_removed_total";
pub const RETENTION_PARTITIONS: &str = "callhook_retention_partitions_dropped_total";
pub const UPKEEP_ERRORS: &str = "callhook_history_upkeep_errors_total";
pub const UPKEEP_LAST_SUCCESS: &str = "callhook_history_upkeep_last_success_timestamp_seconds";
pub const FORWARD_ATTEMPTS: &str = "callhook_forward_attempts_total";
pub const FORWARD_DEAD: &str = "callhook_forward_dead_total";
pub const FORWARD_LATENCY: &str = "callhook_forward_delivery_latency_seconds";
pub const FORWARD_BACKLOG: &str = "callhook_forward_backlog";
pub const FORWARD_OLDEST_AGE: &str = "callhook_forward_oldest_pending_age_seconds";
pub const FORWARD_DEAD_ENTRIES: &str = "callhook_forward_dead_entries";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// From commit to a 2xx answer: tens of milliseconds when the destination answers at
/// once, up to the retry schedule's hours when it does not.
const FORWARD_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0, 21_600.0,
    86_400.0,
];

/// Installs the process-wide recorder once (later calls reuse it) and returns the handle
/// that renders the text format. `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            // Tencent sends a status callback seconds after the call; its retries reach
            // 12 s, TRTC's a minute.
            let lag = [
                1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
            ];
            let sizes = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(COMMIT_DURATION.into()), &latency)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(QUEUE_WAIT.into()), &latency))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &sizes))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CALLBACK_LAG.into()), &lag))
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(FORWARD_LATENCY.into()),
                        &FORWARD_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics disabled");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => None,
            }
        })
        .clone()
}

/// Drains the recorder's pending histogram samples every `period`, until the task is
/// aborted at shutdown. A recorder from `build_recorder` (unlike `install_recorder`) has no
/// upkeep task of its own: each observation would stay in memory until the next scrape,
/// so a deployment that nobody scrapes would grow by a few bytes per request without end.
pub async fn upkeep(handle: PrometheusHandle, period: std::time::Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

// Long only because it is one description per metric (each a few lines once formatted).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        DELIVERIES,
        "Callback deliveries by family, command, outcome (stored, duplicate, journaled, rejected, failed) and reason"
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request to answer on the callback path"
    );
    describe_histogram!(BATCH_SIZE, "Deliveries per database transaction");
    describe_counter!(
        ROLLUP_CALLS,
        "Queued calls folded into the daily rollups (a call is queued once per write that touches it)"
    );
    describe_gauge!(
        ROLLUP_LAG,
        Unit::Seconds,
        "Age of the oldest call waiting to be folded into the daily rollups (0 when none waits)"
    );
    describe_counter!(
        ROLLUP_ERRORS,
        "Rollup passes that failed (the task retries)"
    );
    describe_counter!(
        RETENTION_REMOVED,
        "Rows retention removed, by table (events, rejected, forwarded, records, rollup_calls)"
    );
    describe_counter!(
        RETENTION_PARTITIONS,
        "Weekly partitions of call_events retention dropped (PostgreSQL)"
    );
    describe_counter!(
        UPKEEP_ERRORS,
        "History upkeep runs (partitions made ahead, retention) that failed (retried in a minute)"
    );
    describe_gauge!(
        UPKEEP_LAST_SUCCESS,
        Unit::Seconds,
        "When the history upkeep (partitions made ahead, retention) last finished, Unix time"
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time to write and commit one batch"
    );
    describe_gauge!(QUEUE_DEPTH, "Deliveries waiting for a writer");
    describe_gauge!(
        QUEUE_CAPACITY,
        "Deliveries the queue holds before answering 503/70005"
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest delivery waiting for a writer"
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time deliveries waited in the queue"
    );
    describe_counter!(
        DATABASE_ERRORS,
        "Failed batch writes by kind (unavailable, data, other)"
    );
    describe_gauge!(DATABASE_UP, "1 when the last database round trip succeeded");
    describe_counter!(
        NOTED_DELIVERIES,
        "Deliveries stored with notes (a field that could not be read, an implausible time, an unknown or missing command), by family"
    );
    describe_counter!(
        REJECTED_RECORDS_DROPPED,
        "Rejected deliveries that could not be recorded in rejected_deliveries"
    );
    describe_counter!(
        REJECTED_RECORDS_CAPPED,
        "Deliveries refused before authentication (a failed TRTC Sign, a body too large to check) not kept in rejected_deliveries because their app reached auth.failed_signatures_kept_per_minute, by reason"
    );
    describe_gauge!(
        JOURNAL_EVENTS,
        "Events in the outage journal, not yet in the database (repeats merged)"
    );
    describe_gauge!(
        JOURNAL_BYTES,
        Unit::Bytes,
        "Size of the outage journal on disk (database and WAL)"
    );
    describe_gauge!(
        JOURNAL_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest event in the outage journal"
    );
    describe_counter!(
        JOURNAL_APPENDED,
        "Deliveries acknowledged from the outage journal while the database was unavailable"
    );
    describe_counter!(
        JOURNAL_REPLAYED,
        "Journaled events replayed into the database"
    );
    describe_counter!(
        JOURNAL_REFUSED,
        "Journaled events the database refused for their data (kept in rejected_deliveries)"
    );
    describe_counter!(
        JOURNAL_ERRORS,
        "Outage journal writes or replays that failed, by operation"
    );
    describe_counter!(
        JOURNAL_CORRUPT,
        "Outage journals SQLite reported corrupt, moved aside and replaced by a fresh one"
    );
    describe_counter!(
        JOURNAL_UNREADABLE,
        "Journaled rows this version could not read (a newer version's family), set aside in rejected_deliveries"
    );
    describe_counter!(
        JOURNAL_BEHIND,
        "Journaled rows behind the replay progress PostgreSQL records (a journal restored from a backup): stored anyway, never dropped"
    );
    describe_counter!(
        JOURNAL_STEP_TIMEOUTS,
        "Replay steps that passed their deadline and were retried with fewer rows"
    );
    describe_counter!(WRITER_RESTARTS, "Batch writers restarted after a panic");
    describe_forwarding();
    describe_counter!(
        TASK_RESTARTS,
        "Long-lived tasks (writer, prober, journal-replay, metrics-upkeep, reconcile, rollup, history, room-check, forward, forward-upkeep) restarted after ending early, by task"
    );
    describe_counter!(
        RECONCILE_RUNS,
        "Reconcile runs of serve against Tencent's call records, by app and outcome (ok, failed)"
    );
    describe_gauge!(
        RECONCILE_LAST_SUCCESS,
        Unit::Seconds,
        "When the app's last successful reconcile ended (Unix time)"
    );
    describe_gauge!(
        RECONCILE_RECORDS,
        "Tencent's records of the calls in the last successful reconcile's window, by app"
    );
    describe_gauge!(
        RECONCILE_RECORD_ONLY,
        "Calls of the last successful reconcile's window that Tencent recorded and no callback of which arrived, by app"
    );
    describe_gauge!(
        RECONCILE_INTERVAL,
        Unit::Seconds,
        "How often serve reconciles the app"
    );
    describe_counter!(
        CALLS_ENDED,
        "Calls ended, by app, the family that said so (status: the caller's call_end; v4: Call.CallbackAfterEndCall) and result"
    );
    describe_counter!(
        CALLS_ZERO_TALK,
        "Calls ended normal_end with under a second between answer and hang-up, by app and family"
    );
    describe_histogram!(
        CALLBACK_LAG,
        Unit::Seconds,
        "Time from Tencent's event time to the callback's arrival, by family"
    );
    describe_gauge!(
        ROOM_CALLBACKS_CHECKED,
        "TRTC room, media and recording callbacks with a room id that arrived in the hour that ended 30 min ago, by app and family (database-wide, every 5 min)"
    );
    describe_gauge!(
        ROOM_CALLBACKS_WITHOUT_CALL,
        "Of those, callbacks without a known call: no status, event or v4 callback of the app (arrived up to the check) names their room for a call whose span comes within 10 min of their event time"
    );
    metrics::gauge!(DATABASE_UP).set(0.0);
}

/// The forwarding metrics' descriptions (beside [`describe`], which is long enough).
fn describe_forwarding() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        FORWARD_ATTEMPTS,
        "Forwarding attempts by destination and outcome (delivered, refused: a non-2xx answer, gone: 410, timeout, unreachable, missing: the event is no longer stored)"
    );
    describe_counter!(
        FORWARD_DEAD,
        "Outbox entries that became dead (no attempt left, 410, or no event), by destination"
    );
    describe_histogram!(
        FORWARD_LATENCY,
        Unit::Seconds,
        "Time from an event's commit to its destination's 2xx answer, retries included, by destination"
    );
    describe_gauge!(
        FORWARD_BACKLOG,
        "Pending outbox entries by destination (database-wide: every replica reports the same)"
    );
    describe_gauge!(
        FORWARD_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest pending outbox entry by destination (0 when none)"
    );
    describe_gauge!(
        FORWARD_DEAD_ENTRIES,
        "Dead outbox entries by destination, until replayed with callhook forward retry"
    );
}
