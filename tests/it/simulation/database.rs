//! The databases of the schedules (a fresh copy of a migrated template each), the faults
//! the database itself makes (locks, slow rows), a journal found full at start, and the
//! wait for the journal to drain.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection as _;

use super::host::Running;
use super::senders::Tally;
use crate::helpers::*;

/// The database every schedule's database is copied from (migrated once).
pub(super) static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

pub(super) async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let url = crate::pg::shared().create_database().await;
            let store =
                callhook::store::Store::connect(&callhook::config::DatabaseSettings::new(&url))
                    .await
                    .unwrap_or_else(|e| panic!("{e:#}"));
            store
                .migrate(Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            store.close().await;
            database_name(&url)
        })
        .await
}

pub(super) fn database_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// A fresh database copied from the migrated template.
pub(super) async fn fresh_database(seed: u64) -> String {
    let template = template().await;
    let cluster = crate::pg::shared();
    let name = format!("callhook_sim_{}_{seed:x}", std::process::id());
    for attempt in 0.. {
        let mut admin = sqlx::PgConnection::connect(cluster.admin_url())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let created = sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
        match created {
            Ok(_) => break,
            // Another schedule copies the template at this moment.
            Err(e) if attempt < 100 => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("CREATE DATABASE {name}: {e}"),
        }
    }
    cluster.database_url(&name)
}

pub(super) async fn drop_database(url: &str) {
    let name = database_name(url);
    if let Ok(mut admin) = sqlx::PgConnection::connect(crate::pg::shared().admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
    }
}

/// Fills a journal of the smallest size with events an earlier run acknowledged (small
/// rows: a delivery's later rows carry no payload), its chunks numbered from
/// `last_chunk`. Returns them as the senders saw them: acknowledged once each.
pub(super) async fn fill_journal(
    spool: &std::path::Path,
    last_chunk: i64,
) -> Result<BTreeMap<String, Tally>, String> {
    let db = callhook::store::JournalDb::open(&spool.join("journal.db"), 0)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("INSERT INTO journal_meta (key, value) VALUES ('last_chunk', ?1)")
        .bind(last_chunk.to_string())
        .execute(db.pool())
        .await
        .map_err(|e| e.to_string())?;
    let mut earlier = BTreeMap::new();
    // Fifty rows at a time, then one at a time: full to the last row that fits.
    let mut size = 50;
    for batch in 0.. {
        let rows: Vec<callhook::protocol::EventRow> = (0..size)
            .map(|i| earlier_row(&format!("earlier-{batch}-{i}")))
            .collect::<Result<_, _>>()?;
        let batch_rows: Vec<callhook::store::BatchRow<'_>> = rows
            .iter()
            .map(|row| callhook::store::BatchRow { row, deliveries: 1 })
            .collect();
        match db.append(&batch_rows, None).await {
            Ok(_) => {
                for r in &rows {
                    let id = r.call_id.clone().unwrap_or_default();
                    earlier.insert(id, Tally { sent: 1, acked: 1 });
                }
            }
            Err(e) if callhook::store::journal_is_full(&e) && size > 1 => size = 1,
            Err(e) if callhook::store::journal_is_full(&e) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    db.close().await;
    Ok(earlier)
}

pub(super) fn earlier_row(call_id: &str) -> Result<callhook::protocol::EventRow, String> {
    let ctx = callhook::protocol::Context {
        sdkappid: APP,
        command: "call_end",
        client_ip: None,
        opt_platform: None,
        remote_addr: None,
        received_at: callhook::now_millis(),
    };
    let body = status_body(call_id, "u", "caller", "cancel").to_string();
    let mut row = callhook::protocol::parse_delivery(
        callhook::protocol::Kind::Status,
        false,
        &ctx,
        body.as_bytes(),
    )
    .map_err(|e| e.to_string())?
    .into_iter()
    .next()
    .ok_or("no row")?;
    row.payload = None;
    Ok(row)
}

/// Holds `table` locked for `hold`; then kills the callhook connections waiting on it, or
/// lets them through.
pub(super) async fn hold_lock(url: String, table: &str, hold: Duration, kill: bool) {
    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
        return;
    };
    let locked = async {
        sqlx::query("BEGIN").execute(&mut conn).await?;
        sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut conn)
            .await
    }
    .await;
    if locked.is_ok() {
        tokio::time::sleep(hold).await;
        if kill {
            let _ = sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = 'callhook' \
                 AND wait_event_type = 'Lock'",
            )
            .execute(&mut conn)
            .await;
        }
        let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
    }
    let _ = conn.close().await;
}

/// Makes every row written to `call_events` cost `per_row` (a trigger) for `hold`.
///
/// The trigger's function stops sleeping by itself when `hold` is over: the `DROP TRIGGER`
/// that ends the fault takes an exclusive lock on every partition, and PostgreSQL may pick
/// it as the victim of a deadlock with a write in flight; a trigger left behind would make
/// the database slow for good, which is not a fault that ends. The drop is retried too.
pub(super) async fn slow_rows(url: String, per_row: Duration, hold: Duration) {
    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
        return;
    };
    let until: Result<String, _> =
        sqlx::query_scalar("SELECT (clock_timestamp() + make_interval(secs => $1))::text")
            .bind(hold.as_secs_f64())
            .fetch_one(&mut conn)
            .await;
    let Ok(until) = until else {
        return;
    };
    let seconds = per_row.as_secs_f64();
    let created = sqlx::query(&format!(
        "CREATE OR REPLACE FUNCTION sim_slow_row() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF clock_timestamp() < '{until}'::timestamptz THEN \
         PERFORM pg_sleep({seconds}); END IF; RETURN NEW; END $$"
    ))
    .execute(&mut conn)
    .await;
    let trigger = "CREATE TRIGGER sim_slow BEFORE INSERT ON call_events \
                   FOR EACH ROW EXECUTE FUNCTION sim_slow_row()";
    if created.is_ok() && sqlx::query(trigger).execute(&mut conn).await.is_ok() {
        tokio::time::sleep(hold).await;
        for _ in 0..20 {
            let dropped = sqlx::query("DROP TRIGGER IF EXISTS sim_slow ON call_events")
                .execute(&mut conn)
                .await;
            if dropped.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = conn.close().await;
}

/// Waits until the database is up and the journal holds nothing (asked of the file
/// itself, not only of `/readyz`).
pub(super) async fn wait_drained(running: &Running, spool: &std::path::Path) -> Result<(), String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let journal = format!("sqlite://{}?mode=ro", spool.join("journal.db").display());
    loop {
        let ready: Value = match client
            .get(format!("{}/readyz", running.base()))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        if ready["database"] == "up" && ready["journal_events"] == 0 {
            let rows = match sqlx::SqlitePool::connect(&journal).await {
                Ok(pool) => {
                    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM journal_events")
                        .fetch_one(&pool)
                        .await
                        .unwrap_or(-1);
                    pool.close().await;
                    n
                }
                Err(_) => -1,
            };
            if rows == 0 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the journal did not drain within 60 s of the faults' end: {ready}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
