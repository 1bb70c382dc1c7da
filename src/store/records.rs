//! Tencent's call records (`call_records`) and the reconcile runs that fetch them
//! (`reconcile_runs`): a run's start (or the resumption of an interrupted run of the same
//! window), each page written with the run's progress in one transaction, the run's end,
//! and what the run found against the callbacks (`call_gaps`). Each backend's SQL is in
//! its own file below.

mod postgres;
mod sqlite;

use crate::protocol::Millis;
use crate::protocol::call_record::CallRecordRow;

use super::{Store, StoreError};

/// Who started a run (`reconcile_runs.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `callhook reconcile`.
    Command,
    /// The reconcile task of `serve`.
    Serve,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Serve => "serve",
        }
    }
}

/// The run to start: an app, a window of call start times (`from` included, `to`
/// excluded, Unix ms), and the page size (a resumed run must page the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunKey {
    pub sdkappid: i64,
    pub from: Millis,
    pub to: Millis,
    pub page_size: u32,
    pub trigger: Trigger,
}

/// A run, started or resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStart {
    pub id: i64,
    /// When the run started (a resumed run: its first start), Unix ms: the records it saw
    /// were last seen since.
    pub started_at: Millis,
    /// The first page still to fetch (1 for a new run).
    pub next_page: u64,
    /// Records a resumed run had stored already.
    pub records_before: u64,
}

/// One page of records and the run's progress after it, written together.
#[derive(Debug, Clone, Copy)]
pub struct PageWrite<'a> {
    pub run: i64,
    /// The page's number: the run's `pages` becomes it.
    pub page: u64,
    /// `TotalNum` as this page said.
    pub total: u64,
    /// HTTP requests of the run so far.
    pub requests: u64,
    pub rows: &'a [CallRecordRow],
    /// When the run fetched them: `fetched_at` of new rows, `last_seen_at` of every row.
    pub seen_at: Millis,
    /// The page size the pages were fetched with (Tencent may page fewer than asked).
    pub page_size: u32,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Ok,
    Failed(String),
}

impl RunEnd {
    /// `reconcile_runs.status` and `error`.
    pub(crate) fn columns(&self) -> (&'static str, Option<&str>) {
        match self {
            Self::Ok => ("ok", None),
            Self::Failed(e) => ("failed", Some(e.as_str())),
        }
    }
}

/// What a run found: the records it saw this time against the app's callbacks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Findings {
    /// Records whose call also arrived as callbacks.
    pub also_callbacks: i64,
    /// Records of calls no callback of which arrived.
    pub record_only: i64,
    /// Calls of the window known only from callbacks (`call_gaps` kind `missing_record`).
    pub callbacks_only: i64,
    /// Recorded calls whose callbacks say another result or other times.
    pub disagree: i64,
}

impl From<(i64, i64, i64, i64)> for Findings {
    /// The columns of the backends' findings query, in order.
    fn from(row: (i64, i64, i64, i64)) -> Self {
        let (also_callbacks, record_only, callbacks_only, disagree) = row;
        Self {
            also_callbacks,
            record_only,
            callbacks_only,
            disagree,
        }
    }
}

/// The last successful run of an app: its window's end and when it started fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRun {
    pub window_to: Millis,
    pub started_at: Millis,
}

/// Keeps the last of the records that share a call id (a page should not repeat one, but
/// one statement must not update a row twice).
pub(crate) fn distinct_calls(rows: &[CallRecordRow]) -> Vec<&CallRecordRow> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&CallRecordRow> = rows
        .iter()
        .rev()
        .filter(|r| seen.insert(r.call_id.as_str()))
        .collect();
    out.reverse();
    out
}

impl Store {
    /// Starts a run, or resumes the last unfinished run of the same app, window and page
    /// size that stored pages (an interrupted `callhook reconcile --from … --to …` run again).
    /// `now` is when it starts (a new run's `started_at`).
    pub async fn start_run(&self, key: &RunKey, now: Millis) -> Result<RunStart, StoreError> {
        match self {
            Self::Postgres(s) => s.start_run(key, now).await,
            Self::Sqlite(s) => s.start_run(key, now).await,
        }
    }

    /// Writes a page of records (new calls inserted, known ones updated: a re-run changes
    /// nothing but `last_seen_at`) and the run's progress, in one transaction.
    pub async fn write_records(&self, page: &PageWrite<'_>) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.write_records(page).await,
            Self::Sqlite(s) => s.write_records(page).await,
        }
    }

    /// Ends a run.
    pub async fn finish_run(
        &self,
        run: i64,
        end: &RunEnd,
        requests: u64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.finish_run(run, end, requests).await,
            Self::Sqlite(s) => s.finish_run(run, end, requests).await,
        }
    }

    /// What the records seen since `seen_since` (the run's) say against the callbacks of
    /// the window `key`.
    pub async fn findings(&self, key: &RunKey, seen_since: Millis) -> Result<Findings, StoreError> {
        match self {
            Self::Postgres(s) => s.findings(key, seen_since).await,
            Self::Sqlite(s) => s.findings(key, seen_since).await,
        }
    }

    /// The app's last successful run, if any.
    pub async fn last_successful_run(&self, sdkappid: i64) -> Result<Option<LastRun>, StoreError> {
        match self {
            Self::Postgres(s) => s.last_successful_run(sdkappid).await,
            Self::Sqlite(s) => s.last_successful_run(sdkappid).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_call_id_keeps_its_last_record() {
        let row = |id: &str, record: &str| CallRecordRow {
            sdkappid: 1,
            call_id: id.into(),
            caller: None,
            callees: vec![],
            media_type: None,
            call_type: None,
            call_result: None,
            started_at: None,
            accepted_at: None,
            ended_at: None,
            room_id: None,
            room_id_type: None,
            record: record.into(),
            notes: None,
        };
        let rows = [row("a", "1"), row("b", "2"), row("a", "3")];
        let kept: Vec<&str> = distinct_calls(&rows)
            .iter()
            .map(|r| r.record.as_str())
            .collect();
        assert_eq!(kept, ["2", "3"]);
    }
}
