//! The loss paths a review of the journal, the replay and the request path found (issue
//! 23), one test each, on a real PostgreSQL and real journal files: every acknowledged
//! event is stored exactly once, whatever chunk boundary, corruption report, full
//! journal, missing progress row, interrupted import, slow chunk, lost counter update,
//! inconsistent progress or undecodable row the replay meets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use callhook::config::DatabaseSettings;
use callhook::journal::Journal;
use callhook::protocol::EventRow;
use callhook::store::{Fence, Store};
use sqlx::Connection as _;

use crate::helpers::*;

/// A fresh, migrated PostgreSQL database and its store.
async fn pg_store() -> (TestDb, Store) {
    let db = TestDb::new(Backend::Postgres).await;
    let store = Store::connect(&DatabaseSettings::new(&db.url))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    store
        .migrate(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    (db, store)
}

async fn open_journal(dir: &Path, max_bytes: u64) -> Journal {
    Journal::open(dir, max_bytes)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Stored rows by call id: their deliveries.
async fn counts(store: &Store) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in read_events(store).await {
        let id = r.call_id.unwrap_or_default();
        assert!(out.insert(id.clone(), r.deliveries).is_none(), "{id} twice");
    }
    out
}

/// `n` call ids `prefix-0` … with deliveries 1 each.
fn once_each(prefix: &str, n: usize) -> BTreeMap<String, i64> {
    (0..n).map(|i| (format!("{prefix}-{i}"), 1)).collect()
}

/// Runs a statement on the journal's file, behind the journal's back.
async fn sqlite_exec(dir: &Path, sql: &str) -> u64 {
    let url = format!("sqlite://{}", dir.join("journal.db").display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let n = sqlx::query(sql)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .rows_affected();
    pool.close().await;
    n
}

/// The journal's identity, as recorded in its file.
async fn journal_id(dir: &Path) -> String {
    let url = format!("sqlite://{}", dir.join("journal.db").display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id: String = sqlx::query_scalar("SELECT value FROM journal_meta WHERE key = 'id'")
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pool.close().await;
    id
}

async fn pg_exec(store: &Store, sql: &str) {
    let Store::Postgres(pg) = store else {
        panic!("a PostgreSQL test")
    };
    sqlx::query(sql)
        .execute(pg.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Item 1: a fenced write of unknown outcome whose rows are replayed in more than one
/// transaction (here a chunk boundary inside them) stores every row once, whether the
/// original write never committed (the replay stores them) or did (the replay skips
/// them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_split_across_chunks_is_settled_once() {
    let (_db, store) = pg_store().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = open_journal(dir.path(), 1 << 30).await;
    let abandoned = Fence {
        writer: [2; 16],
        batch: 9,
    };
    let committed = Fence {
        writer: [3; 16],
        batch: 4,
    };
    let lost: Vec<EventRow> = (0..5).map(|i| status_row(&format!("a-{i}"), 1)).collect();
    let done: Vec<EventRow> = (0..5).map(|i| status_row(&format!("c-{i}"), 2)).collect();
    // The committed write is in the database, its fence raised.
    pg_exec(
        &store,
        "INSERT INTO ingest_fences (writer_id, last_batch) VALUES ('\\x03030303030303030303030303030303', 4)",
    )
    .await;
    let batch: Vec<callhook::store::BatchRow<'_>> = done
        .iter()
        .map(|row| callhook::store::BatchRow { row, deliveries: 1 })
        .collect();
    store
        .write_batch(&batch, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    journal
        .append(&lost.iter().collect::<Vec<_>>(), Some(abandoned))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    journal
        .append(&done.iter().collect::<Vec<_>>(), Some(committed))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Chunks of 2: each fence's five rows span three transactions.
    let replayed = journal
        .replay(&store, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(replayed, 10);
    let mut want = once_each("a", 5);
    want.extend(once_each("c", 5));
    assert_eq!(counts(&store).await, want);
}

/// Item 1, black-box, as the review reproduced it: `--max-batch 2`, a write held on a lock
/// past its deadline and then killed, a member-change callback of three members, and the
/// journal drained: three rows, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_fenced_write_of_three_rows_replays_three() {
    let db = TestDb::new(Backend::Postgres).await;
    let spool = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = spool.path().to_owned();
    let app = TestApp::spawn_on(db, |s| {
        s.spool.dir = Some(dir);
        s.ingest.max_batch = 2;
    })
    .await;
    let mut locker = sqlx::PgConnection::connect(&app.db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("LOCK TABLE ingest_fences IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let body = serde_json::json!({
        "CallInfo": {"CallId": "split-1", "RoomId": "r", "CallType": 1, "MediaType": 1},
        "ChangedUserList": [
            {"User_Account": "u1", "ActionType": 3},
            {"User_Account": "u2", "ActionType": 3},
            {"User_Account": "u3", "ActionType": 3}
        ],
        "EventTime": 1_704_856_890
    });
    let (status, answer) = app
        .post(
            &v4_query(APP, "Call.CallbackAfterMemberChanged"),
            body.to_string(),
        )
        .await;
    assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)));
    assert!(
        answer["ErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("journaled")),
        "{answer}"
    );
    // callhook's write still waits on the lock: kill it, then let go of the lock.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'callhook' AND wait_event_type = 'Lock'",
    )
    .fetch_all(&mut locker)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!killed.is_empty(), "callhook's write was waiting");
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.state.journal.as_ref().map_or(0, |j| j.stats().events) > 0 {
        assert!(Instant::now() < deadline, "the journal did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let users: Vec<Option<String>> = app
        .events()
        .await
        .into_iter()
        .filter(|r| r.call_id.as_deref() == Some("split-1"))
        .map(|r| r.user_id)
        .collect();
    assert_eq!(users.len(), 3, "{users:?}");
}

/// Item 5: two replays of the same chunk at once, before the journal has any progress
/// row in PostgreSQL (nothing to lock), store it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replays_of_a_first_chunk_store_it_once() {
    let (db, store) = pg_store().await;
    let rows: Vec<callhook::store::JournalRow> = (0..3)
        .map(|i| callhook::store::JournalRow {
            chunk: 1,
            id: i + 1,
            row: status_row(&format!("f-{i}"), 1),
            deliveries: 1,
            fence: None,
        })
        .collect();
    // Both replays read the (missing) progress, then wait on this lock to insert.
    let mut locker = sqlx::PgConnection::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("LOCK TABLE call_events IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = {
        let (store, rows) = (store.clone(), rows.clone());
        tokio::spawn(async move { store.replay("j-1", &rows).await })
    };
    let second = {
        let (store, rows) = (store.clone(), rows.clone());
        tokio::spawn(async move { store.replay("j-1", &rows).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for r in [first, second] {
        r.await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(counts(&store).await, once_each("f", 3));
}

/// Item 4: a journal filled to its cap still replays to the end once PostgreSQL is back
/// (taking a chunk needs pages too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_replays_to_the_end() {
    let (_db, store) = pg_store().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = open_journal(dir.path(), 2 << 20).await;
    // A journal that has been replayed many times before: its chunk numbers take three
    // bytes, so taking a chunk makes each row it marks longer.
    sqlite_exec(
        dir.path(),
        "INSERT INTO journal_meta (key, value) VALUES ('last_chunk', '100000')",
    )
    .await;
    let mut accepted = 0;
    for i in 0..100_000 {
        // Small rows (a delivery's later rows carry no payload): many to a page.
        let mut row = status_row(&format!("full-{i}"), i);
        row.payload = None;
        match journal.append(&[&row], None).await {
            Ok(()) => accepted += 1,
            Err(callhook::journal::JournalError::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(journal.is_full() && accepted > 50, "{accepted} accepted");
    eprintln!("accepted {accepted}");
    let mut replayed = 0;
    for _ in 0..5 {
        match journal.replay(&store, 512).await {
            Ok(n) => replayed += n,
            Err(e) => eprintln!("replay: {e}"),
        }
    }
    assert_eq!(replayed, accepted);
    assert_eq!(counts(&store).await, once_each("full", accepted as usize));
    assert_eq!(journal.stats().events, 0);
}

/// Item 9: rows the database's progress says are already replayed, but that are not the
/// chunk that was in flight (a journal restored from a backup, a recovered file), are not
/// dropped: they are stored, logged and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_behind_the_progress_are_kept_not_dropped() {
    let (_db, store) = pg_store().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = open_journal(dir.path(), 1 << 30).await;
    let rows: Vec<EventRow> = (0..4).map(|i| status_row(&format!("b-{i}"), i)).collect();
    journal
        .append(&rows.iter().collect::<Vec<_>>(), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // PostgreSQL says this journal was replayed up to chunk 7: its chunk 1 is behind it.
    let id = journal_id(dir.path()).await;
    pg_exec(
        &store,
        &format!(
            "INSERT INTO journal_progress (journal_id, replayed_chunk, replayed_id) VALUES ('{id}', 7, 100)"
        ),
    )
    .await;
    journal
        .replay(&store, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts(&store).await, once_each("b", 4));
}

/// Item 10: a journal row this version cannot decode (a family from a newer version,
/// after a downgrade) is set aside in rejected_deliveries, and the rest replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_journal_row_is_set_aside() {
    let (_db, store) = pg_store().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = open_journal(dir.path(), 1 << 30).await;
    let rows: Vec<EventRow> = (0..5).map(|i| status_row(&format!("d-{i}"), i)).collect();
    journal
        .append(&rows.iter().collect::<Vec<_>>(), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let changed = sqlite_exec(
        dir.path(),
        "UPDATE journal_events SET family = 'from-the-future' WHERE call_id = 'd-2'",
    )
    .await;
    assert_eq!(changed, 1);
    let mut drained = false;
    for _ in 0..3 {
        if journal.replay(&store, 100).await.is_ok() && journal.stats().events == 0 {
            drained = true;
            break;
        }
    }
    assert!(drained, "the replay is not blocked by the row");
    let mut want = once_each("d", 5);
    want.remove("d-2");
    assert_eq!(counts(&store).await, want);
    let rejected = read_rejected(&store).await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].body.contains("d-2"), "{rejected:?}");
    assert!(
        rejected[0].reason.contains("from-the-future"),
        "{rejected:?}"
    );
}

/// Item 7: a chunk too slow for the replay's deadline (here every row costs 20 ms in a
/// trigger) is retried smaller, and the journal drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_too_slow_for_the_deadline_is_shrunk() {
    let (_db, store) = pg_store().await;
    pg_exec(
        &store,
        "CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$",
    )
    .await;
    pg_exec(
        &store,
        "CREATE TRIGGER slow BEFORE INSERT ON call_events FOR EACH ROW EXECUTE FUNCTION slow_row()",
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = open_journal(dir.path(), 1 << 30).await;
    // 512 rows × 20 ms = 10 s, past the 6 s a replay step may take.
    let rows: Vec<EventRow> = (0..512).map(|i| status_row(&format!("s-{i}"), i)).collect();
    journal
        .append(&rows.iter().collect::<Vec<_>>(), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let mut replayed = 0;
    while journal.stats().events > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the journal did not drain; {replayed} replayed"
        );
        match journal.replay(&store, 512).await {
            Ok(n) => replayed += n,
            Err(e) => eprintln!("replay: {e}"),
        }
    }
    assert_eq!(counts(&store).await, once_each("s", 512));
}

/// Item 8: the replay trusts the journal, not its in-memory count: a row the count missed
/// (here written behind callhook's back) is replayed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_count_missed_is_replayed() {
    let db = TestDb::new(Backend::Postgres).await;
    let spool = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = spool.path().to_owned();
    let app = TestApp::spawn_on(db, |s| s.spool.dir = Some(dir)).await;
    let behind = callhook::store::JournalDb::open(&spool.path().join("journal.db"), 1 << 30)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let row = status_row("missed-0", 1);
    behind
        .append(
            &[callhook::store::BatchRow {
                row: &row,
                deliveries: 1,
            }],
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    behind.close().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts(app.store()).await.is_empty() {
        assert!(Instant::now() < deadline, "the row was never replayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counts(app.store()).await, once_each("missed", 1));
}

/// Writes a segment file of callhook's old spool: `[length][crc32][JSON]` per record.
fn write_segment(path: &Path, rows: &[EventRow]) {
    let mut out = Vec::new();
    for r in rows {
        let json = serde_json::json!({
            "sdkappid": r.sdkappid, "family": r.family.as_str(), "command": r.command,
            "call_id": r.call_id, "user_id": r.user_id, "role": null, "event": null,
            "call_result": null, "media_type": null, "call_type": null, "room_id": null,
            "total_num": null, "event_time": null, "start_call_ts": null, "accept_ts": null,
            "end_ts": null, "client_ip": null, "opt_platform": null, "remote_addr": null,
            "payload": r.payload.as_deref(), "received_at": r.received_at,
            "dedupe_key": hex::encode(r.dedupe_key),
        })
        .to_string()
        .into_bytes();
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        out.extend_from_slice(&json);
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("{e}"));
}

/// Item 6: old spool segments larger than the journal's cap do not stop callhook from
/// starting; they are imported as the replay frees space, each record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_larger_than_the_journal_are_imported_as_it_drains() {
    let (_db, store) = pg_store().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<EventRow> = (0..3000)
        .map(|i| status_row(&format!("seg-{i}"), i))
        .collect();
    write_segment(
        &dir.path().join("spool-00000000000000000001.seg"),
        &rows[..2000],
    );
    write_segment(
        &dir.path().join("spool-00000000000000000002.seg"),
        &rows[2000..],
    );
    // 512 KiB: far less than the segments hold.
    let journal = open_journal(dir.path(), 512 << 10).await;
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(120), "not drained");
        journal
            .replay(&store, 512)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let segments_left = std::fs::read_dir(dir.path())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            })
            .unwrap_or(true);
        if journal.stats().events == 0 && !segments_left {
            break;
        }
    }
    assert_eq!(counts(&store).await, once_each("seg", 3000));
}

/// Item 2: one process owns a spool directory. A second journal on it is refused at once,
/// naming the directory and the holder's pid; so is a second `callhook serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let first = open_journal(dir.path(), 1 << 30).await;
    let second = Journal::open(dir.path(), 1 << 30).await;
    let message = format!("{:#}", second.err().unwrap_or_else(|| panic!("refused")));
    assert!(
        message.contains(&dir.path().display().to_string())
            && message.contains(&std::process::id().to_string()),
        "{message}"
    );
    first.close().await;
    drop(first);
    // Free again once the owner is gone.
    let again = open_journal(dir.path(), 1 << 30).await;
    again.close().await;
    drop(again);

    let db = TestDb::new(Backend::Postgres).await;
    let spool = dir.path().display().to_string();
    let args = [
        "--database-url",
        db.url.as_str(),
        "--sdkappid",
        "1400000001",
        "--spool-dir",
        spool.as_str(),
    ];
    let owner = crate::process::Server::start(&args, &[]).await;
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("CALLHOOK_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(started.elapsed() < Duration::from_secs(10), "exits at once");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&spool) && stderr.contains(&owner.child.id().to_string()),
        "{stderr}"
    );
}

/// Item 6: an import of old segment files killed midway (`kill -9`) resumes where it
/// stopped on the next start: every record is stored once, with `deliveries` 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_midway_counts_each_delivery_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let spool = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let n = 40_000;
    let rows: Vec<EventRow> = (0..n).map(|i| status_row(&format!("k-{i}"), i)).collect();
    write_segment(&spool.path().join("spool-00000000000000000001.seg"), &rows);
    let dir = spool.path().display().to_string();
    let args = [
        "--database-url",
        db.url.as_str(),
        "--sdkappid",
        "1400000001",
        "--spool-dir",
        dir.as_str(),
    ];
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("CALLHOOK_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Kill it once part of the segment is in the journal.
    let journal = spool.path().join("journal.db");
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no import seen"
        );
        if journal.exists() {
            let url = format!("sqlite://{}?mode=ro", journal.display());
            if let Ok(pool) = sqlx::SqlitePool::connect(&url).await {
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM journal_events")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(0);
                pool.close().await;
                if count > 0 {
                    assert!(count < n, "the import finished before the kill");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = first.wait();

    let second = crate::process::Server::start(&args, &[]).await;
    let ready = second.url("/readyz");
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(120), "not drained");
        let body = reqwest::get(&ready)
            .await
            .ok()
            .map(|r| r.text())
            .map(|t| async { t.await.unwrap_or_default() });
        let body = match body {
            Some(t) => t.await,
            None => String::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["journal_events"] == 0 && v["database"] == "up" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let store = Store::connect(&DatabaseSettings::new(&db.url))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(counts(&store).await, once_each("k", n as usize));
}
