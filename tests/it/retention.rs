//! Partitions and retention. On PostgreSQL `call_events` is partitioned by the week of the
//! event's own day: a retry (and a journal replay) is one row whether or not its arrival
//! crosses a partition boundary, a row whose week has no partition waits in the default
//! one and moves with its week, and an older database is carried over with its dedupe
//! keys intact. Retention (both backends) removes old raw history by whole weeks or small
//! batches while the daily rollups, and `report` from them, keep every removed day.

use callhook::protocol::{Context, EventRow, Kind, parse_delivery};
use callhook::store::{BatchRow, DayRange, Pace, Store};
use chrono::NaiveDate;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

fn day(d: &str) -> NaiveDate {
    NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap_or_else(|e| panic!("{e}"))
}

/// Unix seconds of a UTC time `YYYY-MM-DD HH:MM:SS`.
fn at(t: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|e| panic!("{e}"))
        .and_utc()
        .timestamp()
}

/// A status callback of `call_id` that started at `start` (Unix seconds) and ended 60 s
/// later, its body, and the row the parser makes of it when it arrives at `received_ms`.
fn call(call_id: &str, start: i64, received_ms: i64) -> (Value, EventRow) {
    let mut body = status_body(call_id, "u", "caller", "normal_end");
    body["StartCallTs"] = start.into();
    body["AcceptTs"] = (start + 5).into();
    body["EndTs"] = (start + 65).into();
    body["EventTime"] = (start + 66).into();
    let ctx = Context {
        sdkappid: APP,
        command: "call_end",
        client_ip: None,
        opt_platform: None,
        remote_addr: None,
        received_at: received_ms,
    };
    let row = parse_delivery(Kind::Status, false, &ctx, body.to_string().as_bytes())
        .ok()
        .and_then(|rows| rows.into_iter().next())
        .unwrap_or_else(|| panic!("the test body parses"));
    (body, row)
}

async fn write(store: &Store, row: &EventRow) {
    store
        .write_batch(&[BatchRow { row, deliveries: 1 }], &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn pg(store: &Store) -> &sqlx::PgPool {
    match store {
        Store::Postgres(s) => s.pool(),
        Store::Sqlite(_) => panic!("a PostgreSQL test"),
    }
}

/// Where each row of `call_id` is: (partition, event_day, deliveries).
async fn placed(store: &Store, call_id: &str) -> Vec<(String, String, i32)> {
    sqlx::query_as(
        "SELECT tableoid::regclass::text, event_day::text, deliveries FROM call_events \
         WHERE call_id = $1 ORDER BY id",
    )
    .bind(call_id)
    .fetch_all(pg(store))
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Journals `row` in a new outage journal, then replays it into `store`.
async fn replay_from_a_journal(store: &Store, row: &EventRow) {
    let spool = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = callhook::journal::Journal::open(spool.path(), 1 << 30)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    journal
        .append(&[row], None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    journal
        .replay(store, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A call that starts on a Sunday a second before midnight: its first delivery arrives on
/// Sunday, its retry on Monday, in the next partition's week. Both land in the partition
/// of the body's own day, once; so does a journal replay of it, and a copy that waited
/// in the default partition before its week's partition was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_across_a_partition_boundary_is_one_row() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let store = app.store();
    let start = at("2026-11-29 23:59:59"); // a Sunday
    store
        .make_partitions(day("2026-11-23"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, first) = call("edge-1", start, (start + 1) * 1000 - 500);
    let (_, retry) = call("edge-1", start, (start + 1) * 1000 + 500);
    assert_eq!(first.dedupe_key, retry.dedupe_key);
    write(store, &first).await;
    write(store, &retry).await;
    assert_eq!(
        placed(store, "edge-1").await,
        [(
            "call_events_p20261123".to_owned(),
            "2026-11-29".to_owned(),
            2
        )],
        "one row, in the week of the call's own day"
    );

    // A journal replay of the same delivery is the same row.
    replay_from_a_journal(store, &retry).await;
    assert_eq!(
        placed(store, "edge-1").await[0].2,
        3,
        "the replay counts once more"
    );

    // A week without a partition: the row waits in the default partition, moves into its
    // week's partition when that is made, and its retry still meets it there.
    let later = at("2027-03-10 10:00:00");
    let (_, far) = call("far-1", later, later * 1000 + 70_000);
    write(store, &far).await;
    assert_eq!(placed(store, "far-1").await[0].0, "call_events_default");
    let made = store
        .make_partitions(day("2027-03-08"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(made, 3, "that week and the two after it");
    assert_eq!(placed(store, "far-1").await[0].0, "call_events_p20270308");
    write(store, &far).await;
    assert_eq!(
        placed(store, "far-1").await,
        [(
            "call_events_p20270308".to_owned(),
            "2027-03-10".to_owned(),
            2
        )]
    );

    // A body without any time has a day of its own (1970-01-01, in the default partition),
    // the same on every delivery.
    let mut timeless = call("none-1", start, 1000).0;
    for k in ["StartCallTs", "AcceptTs", "EndTs", "EventTime"] {
        timeless[k] = 0.into();
    }
    for _ in 0..2 {
        let (status, answer) = app.post_status("call_end", &timeless).await;
        assert_eq!(
            (status, answer["ErrorCode"].as_i64()),
            (200, Some(0)),
            "{answer}"
        );
    }
    assert_eq!(
        placed(store, "none-1").await,
        [("call_events_default".to_owned(), "1970-01-01".to_owned(), 2)]
    );

    // Over HTTP: the upkeep made this week's partition, and a new call lands in it.
    let now_s = chrono::Utc::now().timestamp();
    let mut body = call("now-1", now_s - 120, 0).0;
    body["EventTime"] = now_s.into();
    app.post_status("call_end", &body).await;
    app.post_status("call_end", &body).await;
    let this_week = callhook::store::monday_of(chrono::Utc::now().date_naive());
    let now_rows = placed(store, "now-1").await;
    assert_eq!(now_rows.len(), 1);
    assert!(
        now_rows[0].0 == format!("call_events_p{}", this_week.format("%Y%m%d"))
            || now_rows[0].1 != chrono::Utc::now().date_naive().to_string(),
        "{now_rows:?}"
    );
    assert_eq!(now_rows[0].2, 2);
}

/// A body whose times lie a day ahead of its first delivery's arrival: for that delivery
/// they are not plausible (the time columns stay NULL), for a retry ten seconds later they
/// are. Both deliveries, and a journal replay of the first, are one row, in the week of the
/// body's own day: the partition key depends on the body alone (before, the first went to
/// the default partition under 1970-01-01 and the retry made a second row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_a_day_ahead_of_arrival_is_one_row_on_every_delivery() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let store = app.store();
    store
        .make_partitions(day("2026-11-23"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let start = at("2026-11-25 12:00:00");
    let arrival_ms = (start - 86_400 - 5) * 1000;
    let (_, first) = call("ahead-1", start, arrival_ms);
    let (_, retry) = call("ahead-1", start, arrival_ms + 10_000);
    assert_eq!(first.dedupe_key, retry.dedupe_key);
    assert_eq!(
        (first.start_call_ts, retry.start_call_ts.is_some()),
        (None, true),
        "the start is plausible for the retry only"
    );
    write(store, &first).await;
    write(store, &retry).await;
    replay_from_a_journal(store, &first).await;
    assert_eq!(
        placed(store, "ahead-1").await,
        [(
            "call_events_p20261123".to_owned(),
            "2026-11-25".to_owned(),
            3
        )],
        "one row, in the week of the body's own day"
    );
}

/// Whether `call_id` was queued for the rollups (still waiting, or already folded).
async fn queued(store: &Store, call_id: &str) -> bool {
    count(
        store,
        &format!(
            "SELECT count(*) FROM (SELECT call_id FROM rollup_queue UNION \
             SELECT call_id FROM rollup_calls) q WHERE call_id = '{call_id}'"
        ),
    )
    .await
        > 0
}

async fn write_all(store: &Store, rows: &[&EventRow]) {
    let batch: Vec<BatchRow<'_>> = rows
        .iter()
        .map(|row| BatchRow { row, deliveries: 1 })
        .collect();
    store
        .write_batch(&batch, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A live batch whose rows all fall in one week with a partition is written into that
/// partition by name, and queues its calls for the rollups itself (the parent's statement
/// trigger does not fire for it: switched off here, it tells the two paths apart). A batch
/// of two weeks goes through the parent. A partition dropped behind callhook's back (by
/// another replica's retention) costs no write: it goes through the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_one_week_is_written_into_its_partition() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let store = app.store();
    store
        .make_partitions(day("2026-11-23"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let exec = |sql: &'static str| async move {
        sqlx::query(sql)
            .execute(pg(store))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    };
    exec("ALTER TABLE call_events DISABLE TRIGGER call_events_rollup").await;
    let monday = at("2026-11-23 08:00:00");
    let sunday = at("2026-11-29 23:59:00");
    let next_monday = at("2026-11-30 00:01:00");
    let rows: Vec<EventRow> = [
        ("one-0", monday),
        ("one-1", monday + 60),
        ("one-2", sunday),
        ("two-0", sunday),
        ("two-1", next_monday),
    ]
    .iter()
    .map(|(id, start)| call(id, *start, *start * 1000 + 70_000).1)
    .collect();
    // One row alone, then a batch of two, all of the week of 2026-11-23.
    write_all(store, &[&rows[0]]).await;
    write_all(store, &[&rows[1], &rows[2]]).await;
    // A retry of one of them counts on its row.
    write_all(store, &[&rows[1]]).await;
    for id in ["one-0", "one-1", "one-2"] {
        assert!(
            queued(store, id).await,
            "{id} is queued by the write itself"
        );
    }
    assert_eq!(
        placed(store, "one-1").await,
        [(
            "call_events_p20261123".to_owned(),
            "2026-11-23".to_owned(),
            2
        )]
    );
    // Two weeks in one batch: through the parent, whose trigger is off here.
    write_all(store, &[&rows[3], &rows[4]]).await;
    assert_eq!(placed(store, "two-0").await[0].0, "call_events_p20261123");
    assert_eq!(placed(store, "two-1").await[0].0, "call_events_p20261130");
    assert!(!queued(store, "two-0").await && !queued(store, "two-1").await);
    exec("ALTER TABLE call_events ENABLE TRIGGER call_events_rollup").await;

    // The week's partition dropped behind the store's back: the next write of that week
    // names it, fails before writing anything, and goes through the parent.
    exec("DROP TABLE call_events_p20261123").await;
    let (_, late) = call("late-0", monday + 120, monday * 1000 + 300_000);
    write_all(store, &[&late]).await;
    assert_eq!(
        placed(store, "late-0").await,
        [("call_events_default".to_owned(), "2026-11-23".to_owned(), 1)]
    );
    assert!(queued(store, "late-0").await);
    // The list is read again (by the upkeep here; else in the background after the next
    // write), and the next week is written into by name once more.
    store
        .make_partitions(day("2026-11-23"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    exec("ALTER TABLE call_events DISABLE TRIGGER call_events_rollup").await;
    let (_, next) = call("next-0", next_monday + 60, next_monday * 1000 + 70_000);
    write_all(store, &[&next]).await;
    assert_eq!(placed(store, "next-0").await[0].0, "call_events_p20261130");
    assert!(queued(store, "next-0").await);
    exec("ALTER TABLE call_events ENABLE TRIGGER call_events_rollup").await;

    // A partition detached by hand: the write that names it fails its check before
    // writing anything and goes through the parent, so the row is in call_events (the
    // week now has no partition: the default one), not in the detached table.
    exec("ALTER TABLE call_events DETACH PARTITION call_events_p20261130").await;
    let (_, detached) = call("detached-0", next_monday + 120, next_monday * 1000 + 70_000);
    write_all(store, &[&detached]).await;
    assert_eq!(
        placed(store, "detached-0").await,
        [("call_events_default".to_owned(), "2026-11-30".to_owned(), 1)]
    );
    assert_eq!(
        count(
            store,
            "SELECT count(*) FROM call_events_p20261130 WHERE call_id = 'detached-0'"
        )
        .await,
        0
    );
}

/// A database of the version before partitions, with events, is carried over: its rows
/// keep their ids and counts, each lands in its week's partition, the views read them,
/// and a retry of an event stored before the upgrade still finds its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpartitioned_database_is_carried_over() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = Store::connect(&callhook::config::DatabaseSettings::new(&db.url))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    crate::migrations::migrate_to(&store, "migrations/postgres", 11).await;
    let start = at("2026-10-14 08:00:00");
    let (body, row) = call("old-7", start, start * 1000 + 70_000);
    sqlx::query(
        "INSERT INTO call_events (sdkappid, family, command, call_id, user_id, role, \
         call_result, event_time, start_call_ts, accept_ts, end_ts, payload, deliveries, \
         received_at, last_delivery_at, dedupe_key) VALUES ($1, 'status', 'call_end', $2, \
         'u', 'caller', 'normal_end', to_timestamp($3), to_timestamp($4), to_timestamp($5), \
         to_timestamp($6), $7::json, 1, now(), now(), $8)",
    )
    .bind(APP)
    .bind("old-7")
    .bind(start + 66)
    .bind(start)
    .bind(start + 5)
    .bind(start + 65)
    .bind(body.to_string())
    .bind(&row.dedupe_key[..])
    .execute(pg(&store))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let old_id: i64 = sqlx::query_scalar("SELECT id FROM call_events")
        .fetch_one(pg(&store))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .migrate(std::time::Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        placed(&store, "old-7").await,
        [(
            "call_events_p20261012".to_owned(),
            "2026-10-14".to_owned(),
            1
        )]
    );
    let calls: i64 = sqlx::query_scalar("SELECT count(*) FROM calls WHERE call_id = 'old-7'")
        .fetch_one(pg(&store))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(calls, 1, "the views were made again over the new table");
    store.close().await;

    let app = TestApp::spawn_on(db, |_| {}).await;
    let (status, _) = app.post_status("call_end", &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        placed(app.store(), "old-7").await[0].2,
        2,
        "the retry met the old row"
    );
    let (status, _) = app
        .post_status("call_end", &call("new-7", start, 0).0)
        .await;
    assert_eq!(status, 200);
    let new_id: i64 = sqlx::query_scalar("SELECT id FROM call_events WHERE call_id = 'new-7'")
        .fetch_one(pg(app.store()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(new_id > old_id, "ids go on from the old table's");
}

async fn count(store: &Store, sql: &str) -> i64 {
    scalar(store, sql).await
}

both_backends! {
    /// Retention removes the history before its cutoff (events, rejected deliveries, call
    /// records, the rollups' per-call folds), keeps what is newer, and the report still
    /// counts the removed days from the rollups and says that their events are gone.
    async fn retention_removes_old_history_and_the_report_keeps_its_days(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let store = app.store();
        let old_start = at("2026-09-02 10:00:00");
        let new_start = at("2026-10-21 10:00:00");
        for i in 0..30 {
            let (_, r) = call(&format!("old-{i}"), old_start + i, old_start * 1000 + 90_000);
            write(store, &r).await;
            let (_, r) = call(&format!("new-{i}"), new_start + i, new_start * 1000 + 90_000);
            write(store, &r).await;
        }
        // Rejected deliveries of both ages.
        let old_ms = old_start * 1000;
        for (received_at, tag) in [(old_ms, "old"), (new_start * 1000, "new")] {
            store
                .write_batch(
                    &[],
                    &[callhook::store::RejectedRow {
                        received_at,
                        sdkappid: APP,
                        command: Some("call_end".into()),
                        query: format!("sdkappid={APP}"),
                        body: format!("{{broken {tag}"),
                        error_code: 71001,
                        reason: "body is not JSON".into(),
                        remote_addr: None,
                        dedupe_key: [tag.as_bytes()[0]; 16],
                    }],
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(count(store, "SELECT count(*) FROM rejected_deliveries").await, 2);
        store.rollup_catch_up().await.unwrap_or_else(|e| panic!("{e}"));
        if backend == Backend::Postgres {
            // Makes the partitions of the weeks that wait in the default partition.
            store.make_partitions(day("2026-10-19")).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                count(store, "SELECT count(*) FROM call_events_default").await,
                0,
                "the old weeks' rows moved out of the default partition"
            );
        }
        let range = DayRange { since: day("2026-09-01"), until: day("2026-10-31") };
        let before = callhook::report::build(store, range, None).await.unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(before.totals.calls, 60);
        assert_eq!(before.removed_before, None);

        let removed = store
            .remove_before(day("2026-10-01"), Pace { batch: 7, rest: std::time::Duration::ZERO })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(removed.events, 30, "{removed:?}");
        assert_eq!(removed.rejected, 1, "{removed:?}");
        assert_eq!(removed.rollup_calls, 30, "{removed:?}");
        if backend == Backend::Postgres {
            assert_eq!(removed.partitions, 1, "the week of 2026-08-31, dropped whole");
        }
        assert_eq!(count(store, "SELECT count(*) FROM call_events").await, 30);
        assert_eq!(count(store, "SELECT count(*) FROM call_events WHERE call_id LIKE 'old-%'").await, 0);
        assert_eq!(count(store, "SELECT count(*) FROM rejected_deliveries").await, 1);
        assert_eq!(count(store, "SELECT count(*) FROM rollup_calls").await, 30);

        let after = callhook::report::build(store, range, None).await.unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(after.totals.calls, 60, "the removed days still count, from the rollups");
        assert_eq!(after.days, before.days);
        assert_eq!(after.removed_before.as_deref(), Some("2026-10-01"));
        let text = callhook::report::render(&after, callhook::cli::ReportFormat::Table)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("raw events before 2026-10-01 were removed"), "{text}");
        let recent = DayRange { since: day("2026-10-15"), until: day("2026-10-31") };
        let recent = callhook::report::build(store, recent, None).await.unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((recent.totals.calls, recent.removed_before), (30, None));

        // A second run finds nothing more; new deliveries go on.
        let again = store
            .remove_before(day("2026-10-01"), Pace::for_store(store))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.total_rows() + again.partitions, 0, "{again:?}");
        let (status, _) = app.post_status("call_end", &call("new-x", new_start, 0).0).await;
        assert_eq!(status, 200);
        assert_eq!(count(store, "SELECT count(*) FROM call_events").await, 31);
        if backend == Backend::Postgres {
            // A late event of a removed week waits in the default partition: its week is
            // not made again (retention would drop it at once), and retention deletes it.
            let (status, _) = app.post_status("call_end", &call("old-late", old_start, 0).0).await;
            assert_eq!(status, 200);
            assert_eq!(placed(store, "old-late").await[0].0, "call_events_default");
            store.make_partitions(day("2026-10-19")).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                count(store, "SELECT count(*) FROM pg_class WHERE relname = 'call_events_p20260831'").await,
                0,
                "the removed week's partition is not made again"
            );
            let late = store
                .remove_before(day("2026-10-01"), Pace::for_store(store))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((late.events, late.partitions), (1, 0), "{late:?}");
            assert_eq!(count(store, "SELECT count(*) FROM call_events").await, 31);
        }
        if backend == Backend::Sqlite {
            assert_eq!(count(store, "PRAGMA auto_vacuum").await, 2, "a new file vacuums incrementally");
            assert_eq!(count(store, "PRAGMA freelist_count").await, 0, "the freed pages went back");
        }
    }
}

/// Writes of a week race the making of its partition (which moves that week's rows out of
/// the default partition): every write succeeds, and every row ends in its week's
/// partition. Without the attach waiting for the writes in flight, a write that chose the
/// default partition before the attach fails on its narrowed constraint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_racing_a_new_partition_all_land() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let store = app.store().clone();
    for round in 0..12i64 {
        let monday = day("2025-01-06") + chrono::Days::new(7 * round as u64);
        let start = monday
            .and_hms_opt(12, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp();
        let (_, first) = call(&format!("race-{round}-first"), start, start * 1000 + 70_000);
        write(&store, &first).await;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..5 {
                        let (_, r) = call(
                            &format!("race-{round}-{w}-{i}"),
                            start + i,
                            start * 1000 + 70_000,
                        );
                        store
                            .write_batch(
                                &[BatchRow {
                                    row: &r,
                                    deliveries: 1,
                                }],
                                &[],
                            )
                            .await
                            .unwrap_or_else(|e| panic!("a write racing the attach failed: {e}"));
                    }
                })
            })
            .collect();
        store
            .make_partitions(monday)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for w in writers {
            w.await.unwrap_or_else(|e| panic!("{e}"));
        }
        store
            .make_partitions(monday)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let name = format!("call_events_p{}", monday.format("%Y%m%d"));
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT tableoid::regclass::text FROM call_events WHERE call_id LIKE $1",
        )
        .bind(format!("race-{round}-%"))
        .fetch_all(pg(&store))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 41);
        assert!(
            rows.iter().all(|(p,)| *p == name),
            "round {round}: {rows:?}"
        );
    }
}

/// How many times a plan (EXPLAIN's JSON) reads a table of `call_events`: the parent, a
/// weekly partition or the default one.
fn partition_reads(plan: &Value) -> usize {
    let own = plan
        .get("Relation Name")
        .and_then(Value::as_str)
        .is_some_and(|name| name.starts_with("call_events"));
    let below: usize = plan
        .get("Plans")
        .and_then(Value::as_array)
        .map_or(0, |plans| plans.iter().map(partition_reads).sum());
    usize::from(own) + below
}

/// One call's `calls` row reads call_events twice (the call's days, then its fold; migration
/// 0013), whatever the call holds: a lookup by call names no partition key, so each read is
/// planned against every partition, and planning was most of the lookup's cost (five reads
/// before). The row itself: callbacks in two weeks and Tencent's record of the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_is_looked_up_in_two_reads_of_the_partitions() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let store = app.store();
    store
        .make_partitions(day("2026-11-23"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sunday = at("2026-11-29 23:59:00");
    let mut caller = status_body("spanning", "alice", "caller", "normal_end");
    caller["StartCallTs"] = sunday.into();
    caller["AcceptTs"] = (sunday + 5).into();
    caller["EndTs"] = (sunday + 125).into();
    caller["EventTime"] = (sunday + 126).into();
    // The callee's callback says only when it was sent, after midnight: the next week.
    let mut callee = status_body("spanning", "bob", "callee", "normal_end");
    for key in ["StartCallTs", "AcceptTs", "EndTs"] {
        callee.as_object_mut().map(|o| o.remove(key));
    }
    callee["EventTime"] = (sunday + 127).into();
    for body in [&caller, &callee] {
        let (status, reply) = app.post_status("call_end", body).await;
        assert_eq!(
            (status, &reply["ErrorCode"]),
            (200, &Value::from(0)),
            "{reply}"
        );
    }
    assert_eq!(
        placed(store, "spanning").await.len(),
        2,
        "the two callbacks are two rows"
    );
    sqlx::query(
        "INSERT INTO call_records (sdkappid, call_id, caller, callees, call_result, day, record) \
         VALUES ($1, 'spanning', 'alice', '[\"bob\", \"carol\"]', 'normal_end', '2026-11-29', '{}')",
    )
    .bind(APP)
    .execute(pg(store))
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let rows = text_rows(
        store,
        &format!(
            "SELECT caller, array_to_string(callees, ','), participants::text, events::text, \
             day::text, source, talk_seconds::text FROM calls \
             WHERE sdkappid = {APP} AND call_id = 'spanning'"
        ),
    )
    .await;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        [vec![
            s("alice"),
            s("bob,carol"),
            s("3"),
            s("2"),
            s("2026-11-29"),
            s("both"),
            s("120")
        ]]
    );

    let partitions = count(
        store,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'call_events'::regclass",
    )
    .await;
    assert!(partitions >= 3, "{partitions} partitions");
    let plan: Value = sqlx::query_scalar(
        "EXPLAIN (FORMAT JSON) SELECT * FROM calls WHERE sdkappid = $1 AND call_id = $2",
    )
    .bind(APP)
    .bind("spanning")
    .fetch_one(pg(store))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let reads = partition_reads(&plan[0]["Plan"]);
    assert_eq!(
        reads,
        2 * partitions as usize,
        "each partition is read twice: {plan:#}"
    );
}

/// Bodies dated weeks ahead wait in the default partition. When their week comes within
/// the weeks made ahead, a week of more than MOVE_LIMIT of them is not made (moving them
/// would hold every write for the whole move): they stay in the default partition, and
/// the weeks after it are made as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_week_waiting_in_the_default_partition_is_not_moved() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let store = app.store();
    let rows = callhook::store::MOVE_LIMIT + 1;
    sqlx::query(
        "INSERT INTO call_events (sdkappid, family, command, dedupe_key, event_day) \
         SELECT $1, 'status', 'call_end', sha256(i::text::bytea), DATE '2027-06-09' \
         FROM generate_series(1, $2) i",
    )
    .bind(APP)
    .bind(rows)
    .execute(pg(store))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    store
        .make_partitions(day("2027-06-07"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let exists = |name: &'static str| async move {
        count(
            store,
            &format!("SELECT count(*) FROM pg_class WHERE relname = '{name}'"),
        )
        .await
    };
    assert_eq!(
        exists("call_events_p20270607").await,
        0,
        "the large week is not made"
    );
    assert_eq!(exists("call_events_p20270614").await, 1);
    assert_eq!(exists("call_events_p20270621").await, 1);
    assert_eq!(
        count(store, "SELECT count(*) FROM call_events_default").await,
        rows
    );
}
