//! Reads for `callhook report` and `callhook events`: the analytics views (`calls`,
//! `call_rollup`, `call_stats_daily`, the room views) and the latest events. The write path
//! never uses this module; each backend's SQL is in its own file below.

mod postgres;
mod sqlite;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError};

/// The reads over a period of days; each backend has its SQL for them, binding the first
/// and the last day (excluded) as parameters 1 and 2, and the app as parameter 3 when one
/// is asked for.
#[derive(Debug, Clone, Copy)]
enum PeriodQuery {
    /// Events stored with notes, by the field their first note names.
    Noted,
}

impl PeriodQuery {
    /// What follows the `WHERE` conditions (grouping and order), the same on both backends.
    fn tail(self) -> &'static str {
        match self {
            Self::Noted => "GROUP BY 1 ORDER BY 2 DESC, 1",
        }
    }
}

/// A period of whole UTC days: `since` included, `until` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub since: chrono::NaiveDate,
    pub until: chrono::NaiveDate,
}

impl DayRange {
    /// The number of days in the period.
    pub fn days(&self) -> i64 {
        (self.until - self.since).num_days().max(0)
    }

    /// Every day of the period, in order.
    pub fn iter(&self) -> impl Iterator<Item = chrono::NaiveDate> + use<> {
        let since = self.since;
        (0..self.days()).map(move |d| since + chrono::Duration::days(d))
    }
}

/// One row of `call_stats_daily`; the fields are its columns, in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DailyStats {
    #[serde(serialize_with = "serialize_day")]
    pub day: chrono::NaiveDate,
    pub sdkappid: i64,
    pub calls: i64,
    pub answered: i64,
    pub not_answer: i64,
    pub reject: i64,
    pub call_busy: i64,
    pub cancel: i64,
    pub interrupt: i64,
    pub answer_rate: f64,
    pub avg_talk_seconds: Option<f64>,
    pub p50_talk_seconds: Option<f64>,
    pub p90_talk_seconds: Option<f64>,
}

/// Real time in TRTC rooms beside the call callbacks' talk time, for a period.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RoomStats {
    /// `calls.talk_seconds` summed over the period's calls (call callbacks), and how many
    /// calls have one.
    pub talk_seconds: f64,
    pub talk_calls: i64,
    /// `call_presence.seconds_in_room` from room events, summed over every participant who
    /// entered during the period (person-seconds), and the calls they were in.
    pub in_room_seconds: f64,
    pub in_room_calls: i64,
    /// Calls of the period known only from room events (`room_only_calls`).
    pub room_only_calls: i64,
}

/// How complete the call callbacks are for a period, by Tencent's own record of its calls
/// (`call_records`, by the day each call counts on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Completeness {
    /// The calls Tencent recorded.
    pub recorded: i64,
    /// Of those, the calls at least one callback of which arrived.
    pub with_callbacks: i64,
}

fn serialize_day<S: serde::Serializer>(day: &chrono::NaiveDate, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&day.format("%Y-%m-%d"))
}

/// The row as both backends return it: the day as `YYYY-MM-DD` text.
pub(crate) type DailyStatsRow = (
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

pub(crate) fn daily_stats_from(row: DailyStatsRow) -> Result<DailyStats, StoreError> {
    let (day, sdkappid, calls, answered, not_answer, reject, call_busy, cancel, interrupt, rate) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9,
    );
    let day = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
        .map_err(|e| StoreError::Other(format!("call_stats_daily.day {day:?}: {e}")))?;
    Ok(DailyStats {
        day,
        sdkappid,
        calls,
        answered,
        not_answer,
        reject,
        call_busy,
        cancel,
        interrupt,
        answer_rate: rate,
        avg_talk_seconds: row.10,
        p50_talk_seconds: row.11,
        p90_talk_seconds: row.12,
    })
}

impl Store {
    /// The `call_stats_daily` rows of a period, for one app or all, ordered by day and
    /// app: exact, with the calls the rollup task has not folded yet (see
    /// [`Store::period_stats`]).
    pub async fn daily_stats(
        &self,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Vec<DailyStats>, StoreError> {
        Ok(self.period_stats(range, sdkappid).await?.days)
    }

    /// The period's events stored with notes (by `received_at`), counted by the first field
    /// their notes name, most first.
    pub async fn noted_events(
        &self,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.period_rows(PeriodQuery::Noted, range, sdkappid).await
    }

    /// What the period's TRTC room events add to a report (`None` when the period has no
    /// room, media or recording event, or the room views do not exist yet): read only then,
    /// so that a deployment without TRTC callbacks does not pay for folding rooms.
    pub async fn room_stats(
        &self,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Option<RoomStats>, StoreError> {
        match self {
            Self::Postgres(s) => s.room_stats(range, sdkappid).await,
            Self::Sqlite(s) => s.room_stats(range, sdkappid).await,
        }
    }

    /// Runs a period query on either backend, narrowed to one app when asked.
    async fn period_rows<T>(
        &self,
        query: PeriodQuery,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        match self {
            Self::Postgres(s) => s.period_rows(query, range, sdkappid).await,
            Self::Sqlite(s) => s.period_rows(query, range, sdkappid).await,
        }
    }

    /// The period's completeness (`None` when no record of Tencent's is stored for it, or
    /// the table does not exist yet): read through call_records' day index only.
    pub async fn completeness(
        &self,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Option<Completeness>, StoreError> {
        let (recorded, with_callbacks): (i64, i64) = match self {
            Self::Postgres(s) => s.completeness(range, sdkappid).await?,
            Self::Sqlite(s) => s.completeness(range, sdkappid).await?,
        };
        Ok((recorded > 0).then_some(Completeness {
            recorded,
            with_callbacks,
        }))
    }

    /// Whether this version's analytics exist: the views, and the daily rollups `report`
    /// reads (PostgreSQL's migration 0010, SQLite's 0007).
    pub async fn has_analytics(&self) -> Result<bool, StoreError> {
        match self {
            Self::Postgres(s) => s.has_analytics().await,
            Self::Sqlite(s) => s.has_analytics().await,
        }
    }
}

/// A row of `call_events` as `callhook events` shows it: everything but the payload and
/// the timestamps Tencent sent (both are in the table, for SQL). Times are UTC,
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, on both backends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct RecentEvent {
    pub id: i64,
    pub received_at: String,
    pub sdkappid: i64,
    pub family: String,
    pub command: String,
    pub call_id: Option<String>,
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub event: Option<String>,
    pub call_result: Option<String>,
    pub media_type: Option<String>,
    pub call_type: Option<String>,
    pub client_ip: Option<String>,
    pub opt_platform: Option<String>,
    pub remote_addr: Option<String>,
    pub deliveries: i64,
    pub last_delivery_at: String,
}

impl Store {
    /// The `last` most recently stored events (highest `id`), for one app or all, oldest
    /// first.
    pub async fn recent_events(
        &self,
        last: u32,
        sdkappid: Option<i64>,
    ) -> Result<Vec<RecentEvent>, StoreError> {
        match self {
            Self::Postgres(s) => s.recent_events(last, sdkappid).await,
            Self::Sqlite(s) => s.recent_events(last, sdkappid).await,
        }
    }
}

/// Appends `AND sdkappid = <placeholder>` to `base` when one app is asked for (a separate
/// statement, so the condition reaches the index), then the query's tail.
fn with_app_filter(
    base: &str,
    query: PeriodQuery,
    sdkappid: Option<i64>,
    placeholder: &str,
) -> String {
    let tail = query.tail();
    match sdkappid {
        Some(_) => format!("{base} AND sdkappid = {placeholder}\n{tail}"),
        None => format!("{base}{tail}"),
    }
}

/// The columns of the room statistics query, in order.
type RoomStatsRow = (f64, i64, f64, i64, i64);

impl From<RoomStatsRow> for RoomStats {
    fn from(row: RoomStatsRow) -> Self {
        let (talk_seconds, talk_calls, in_room_seconds, in_room_calls, room_only_calls) = row;
        Self {
            talk_seconds,
            talk_calls,
            in_room_seconds,
            in_room_calls,
            room_only_calls,
        }
    }
}
