//! Measures three ways to write a batch of events into PostgreSQL with the same
//! deduplicating upsert, so the production choice rests on numbers (docs/src/benchmarks/ingest.md):
//!
//! - `unnest`: one `INSERT … SELECT FROM unnest($1::bigint[], …) ON CONFLICT …` with one
//!   array per column — one prepared statement whatever the batch size (what callhook uses);
//! - `values`: one multi-row `INSERT … VALUES (…), (…) ON CONFLICT …` — a statement per
//!   batch size;
//! - `copy`: `COPY` into a temporary table, then `INSERT … SELECT … ON CONFLICT` from it, in
//!   one transaction.
//!
//! Each is timed with 1 and 2 concurrent writers and batch sizes 16, 64 and 256, committing
//! every batch durably. Bench-only: `cargo run --release --example insert_strategies -- URL`
//! (bench/insert_strategies.sh starts a throwaway PostgreSQL and runs it).

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use callhook::protocol::{Context, EventRow, Kind, parse_delivery};
use callhook::store::{BatchRow, Store};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

const STRATEGIES: [&str; 3] = ["unnest", "values", "copy"];

fn rows(prefix: &str, n: usize) -> Vec<EventRow> {
    (0..n)
        .flat_map(|i| {
            let ctx = Context {
                sdkappid: 1_400_000_001,
                command: "call_end",
                client_ip: Some("10.1.2.3"),
                opt_platform: Some("Android"),
                remote_addr: Some("127.0.0.1"),
                received_at: callhook::now_millis(),
            };
            let body = format!(
                r#"{{"UserId":"user-{i}","RoomId":"room-{i}","TotalNum":2,"MediaType":"video","CallType":"single","CallId":"{prefix}-{i}","Role":"caller","CallResult":"normal_end","EventTime":1704856890,"StartCallTs":1704856873,"AcceptTs":1704856876,"EndTs":1704856885}}"#
            );
            parse_delivery(Kind::Status, false, &ctx, body.as_bytes()).unwrap_or_default()
        })
        .collect()
}

const COLUMNS: &str = "sdkappid, family, command, call_id, user_id, role, event, call_result, \
    media_type, call_type, room_id, total_num, event_time, start_call_ts, accept_ts, end_ts, \
    client_ip, opt_platform, remote_addr, payload, deliveries, received_at, last_delivery_at, \
    dedupe_key";

const UPSERT: &str = "ON CONFLICT (sdkappid, dedupe_key) DO UPDATE \
    SET deliveries = call_events.deliveries + EXCLUDED.deliveries \
    RETURNING dedupe_key, deliveries";

fn ts(col: &str) -> String {
    format!("timestamptz 'epoch' + {col} * interval '1 millisecond'")
}

async fn write_values(pool: &PgPool, batch: &[EventRow]) -> anyhow::Result<()> {
    let mut qb =
        sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("INSERT INTO call_events ({COLUMNS}) "));
    qb.push_values(batch, |mut b, r| {
        let ms = " * interval '1 millisecond'";
        b.push_bind(r.sdkappid)
            .push_bind(r.family.as_str())
            .push_bind(r.command.clone())
            .push_bind(r.call_id.clone())
            .push_bind(r.user_id.clone())
            .push_bind(r.role.as_ref().map(|v| v.as_str().to_owned()))
            .push_bind(r.event.clone())
            .push_bind(r.call_result.as_ref().map(|v| v.as_str().to_owned()))
            .push_bind(r.media_type.as_ref().map(|v| v.as_str().to_owned()))
            .push_bind(r.call_type.as_ref().map(|v| v.as_str().to_owned()))
            .push_bind(r.room_id.clone())
            .push_bind(r.total_num);
        for t in [r.event_time, r.start_call_ts, r.accept_ts, r.end_ts] {
            b.push("timestamptz 'epoch' + ")
                .push_bind_unseparated(t)
                .push_unseparated(ms);
        }
        b.push_bind(r.client_ip.clone())
            .push_bind(r.opt_platform.clone())
            .push_bind(r.remote_addr.clone())
            .push_bind(r.payload.as_deref().map(str::to_owned))
            .push_unseparated("::json")
            .push_bind(1i32);
        for _ in 0..2 {
            b.push("timestamptz 'epoch' + ")
                .push_bind_unseparated(r.received_at)
                .push_unseparated(ms);
        }
        b.push_bind(r.dedupe_key.to_vec());
    });
    qb.push(" ").push(UPSERT);
    qb.build().fetch_all(pool).await?;
    Ok(())
}

fn csv_text(out: &mut String, v: Option<&str>) {
    if let Some(s) = v {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    }
}

async fn write_copy(pool: &PgPool, batch: &[EventRow]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS batch (sdkappid bigint, family text, command text, \
         call_id text, user_id text, role text, event text, call_result text, media_type text, \
         call_type text, room_id text, total_num bigint, event_time bigint, start_call_ts bigint, \
         accept_ts bigint, end_ts bigint, client_ip text, opt_platform text, remote_addr text, \
         payload text, received_at bigint, dedupe_key bytea) ON COMMIT DELETE ROWS",
    )
    .execute(&mut *tx)
    .await?;
    let mut data = String::new();
    for r in batch {
        let n = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
        let _ = write!(data, "{},", r.sdkappid);
        for v in [
            Some(r.family.as_str()),
            Some(r.command.as_str()),
            r.call_id.as_deref(),
            r.user_id.as_deref(),
            r.role.as_ref().map(|v| v.as_str()),
            r.event.as_deref(),
            r.call_result.as_ref().map(|v| v.as_str()),
            r.media_type.as_ref().map(|v| v.as_str()),
            r.call_type.as_ref().map(|v| v.as_str()),
            r.room_id.as_deref(),
        ] {
            csv_text(&mut data, v);
            data.push(',');
        }
        let _ = write!(
            data,
            "{},{},{},{},{},",
            n(r.total_num),
            n(r.event_time),
            n(r.start_call_ts),
            n(r.accept_ts),
            n(r.end_ts)
        );
        for v in [
            r.client_ip.as_deref(),
            r.opt_platform.as_deref(),
            r.remote_addr.as_deref(),
            r.payload.as_deref(),
        ] {
            csv_text(&mut data, v);
            data.push(',');
        }
        let _ = writeln!(data, "{},\\x{}", r.received_at, hex::encode(r.dedupe_key));
    }
    let mut copy = tx.copy_in_raw("COPY batch FROM STDIN (FORMAT csv)").await?;
    copy.send(data.as_bytes()).await?;
    copy.finish().await?;
    let select = format!(
        "INSERT INTO call_events ({COLUMNS}) SELECT sdkappid, family, command, call_id, user_id, role, \
         event, call_result, media_type, call_type, room_id, total_num, {}, {}, {}, {}, client_ip, \
         opt_platform, remote_addr, payload::json, 1, {}, {}, dedupe_key FROM batch {UPSERT}",
        ts("event_time"),
        ts("start_call_ts"),
        ts("accept_ts"),
        ts("end_ts"),
        ts("received_at"),
        ts("received_at")
    );
    sqlx::query(&select).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

async fn write(
    strategy: &str,
    store: &Store,
    pool: &PgPool,
    batch: &[EventRow],
) -> anyhow::Result<()> {
    match strategy {
        "unnest" => {
            let rows: Vec<BatchRow<'_>> = batch
                .iter()
                .map(|row| BatchRow { row, deliveries: 1 })
                .collect();
            store.write_batch(&rows, &[]).await?;
            Ok(())
        }
        "values" => write_values(pool, batch).await,
        _ => write_copy(pool, batch).await,
    }
}

/// Rows per second for one strategy, batch size and writer count, over `secs`.
async fn measure(
    url: &str,
    strategy: &'static str,
    batch: usize,
    writers: usize,
    secs: f64,
) -> anyhow::Result<f64> {
    let settings = callhook::config::DatabaseSettings::new(url);
    let store = Store::connect(&settings).await?;
    let pool = PgPoolOptions::new()
        .max_connections(writers as u32)
        .connect_with(PgConnectOptions::from_str(url)?)
        .await?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut written = 0usize;
            let mut n = 0usize;
            while Instant::now() < deadline {
                let prefix = format!(
                    "{strategy}-{batch}-{writers}-{w}-{n}-{}",
                    callhook::now_millis()
                );
                let rows = rows(&prefix, batch);
                write(strategy, &store, &pool, &rows).await?;
                written += rows.len();
                n += 1;
            }
            anyhow::Ok(written)
        });
    }
    let started = Instant::now();
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    store.close().await;
    pool.close().await;
    Ok(total as f64 / elapsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .context("usage: insert_strategies POSTGRES_URL [SECONDS] [REPS]")?;
    let secs: f64 = std::env::args().nth(2).map_or(Ok(3.0), |s| s.parse())?;
    let reps: usize = std::env::args().nth(3).map_or(Ok(3), |s| s.parse())?;
    let store = Store::connect(&callhook::config::DatabaseSettings::new(&url)).await?;
    store.migrate(std::time::Duration::from_secs(3600)).await?;
    store.close().await;
    println!("| batch | writers | unnest rows/s | values rows/s | copy rows/s |");
    println!("|---|---|---|---|---|");
    for batch in [16, 64, 256] {
        for writers in [1, 2] {
            let mut results: Vec<Vec<f64>> = vec![Vec::new(); STRATEGIES.len()];
            // Interleaved repetitions, so drift on a noisy machine hits every strategy.
            for _ in 0..reps {
                for (i, s) in STRATEGIES.iter().enumerate() {
                    results[i].push(measure(&url, s, batch, writers, secs).await?);
                }
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let cells: Vec<String> = results
                .iter_mut()
                .map(|v| format!("{:.0}", median(v)))
                .collect();
            println!("| {batch} | {writers} | {} |", cells.join(" | "));
        }
    }
    Ok(())
}
