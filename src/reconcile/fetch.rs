//! One reconcile of one app and window: every page of Tencent's call records, each stored
//! with the run's progress as it arrives (so memory holds one page, and an interrupted run
//! of the same window resumes at the next page), then what the records say against the
//! callbacks.

use crate::protocol::Millis;
use crate::protocol::call_record::parse_call_record;
use crate::store::{Findings, PageWrite, RunEnd, RunKey, RunStart, Store, StoreError};
use crate::tencent::records::{self, PageQuery};
use crate::tencent::{ApiError, Client};

/// What one app's reconcile did and found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppReport {
    pub sdkappid: i64,
    pub from: String,
    pub to: String,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Records fetched by this run (a resumed run: since it resumed).
    pub records: u64,
    /// Records a resumed run had stored before.
    pub records_before: u64,
    /// The page a resumed run started at (`None`: it started at the first).
    pub resumed_at_page: Option<u64>,
    /// How many records Tencent said the window has (`TotalNum`).
    pub total: Option<u64>,
    /// Records that could not be stored (no CallId, not an object), noted in the log.
    pub skipped: u64,
    /// HTTP requests to Tencent, retries included.
    pub requests: u64,
    /// What the records say against the callbacks (`None` when the run failed).
    pub findings: Option<Findings>,
    /// Tencent's error code, when Tencent refused.
    pub tencent_code: Option<i64>,
    pub error: Option<String>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("storing the records: {0}")]
    Store(#[from] StoreError),
    /// The window's start passed Tencent's 7 days while the run was under way: Tencent
    /// would answer the next pages from its limit instead, silently, and the pages would
    /// shift under the run.
    #[error(
        "the window's start ({0}) passed Tencent's 7-day limit during the run; run again with a later start (--since 167h, or --from)"
    )]
    WindowExpired(String),
}

/// How far the pages went.
#[derive(Debug, Default)]
struct Progress {
    records: u64,
    skipped: u64,
    total: Option<u64>,
}

/// Reconciles one app's window: a new run, or the resumption of an interrupted one.
pub async fn reconcile_app(store: &Store, client: &Client, key: RunKey) -> AppReport {
    let now = crate::now_millis();
    let mut report = AppReport {
        sdkappid: key.sdkappid,
        from: crate::config::show_time(key.from),
        to: crate::config::show_time(key.to),
        status: "failed",
        records: 0,
        records_before: 0,
        resumed_at_page: None,
        total: None,
        skipped: 0,
        requests: 0,
        findings: None,
        tencent_code: None,
        error: None,
    };
    let start = match store.start_run(&key, now).await {
        Ok(start) => start,
        Err(e) => {
            report.error = Some(format!("recording the run: {e}"));
            return report;
        }
    };
    report.records_before = start.records_before;
    report.resumed_at_page = (start.next_page > 1).then_some(start.next_page);
    let mut progress = Progress::default();
    let outcome = fetch_pages(store, client, &key, &start, now, &mut progress).await;
    report.records = progress.records;
    report.skipped = progress.skipped;
    report.total = progress.total;
    report.requests = client.requests();
    let end = match &outcome {
        Ok(()) => RunEnd::Ok,
        Err(e) => RunEnd::Failed(e.to_string()),
    };
    if let Err(e) = store.finish_run(start.id, &end, report.requests).await {
        report.error = Some(format!("recording the run's end: {e}"));
        return report;
    }
    match outcome {
        Ok(()) => match store.findings(&key, start.started_at).await {
            Ok(f) => {
                report.findings = Some(f);
                report.status = "ok";
            }
            Err(e) => report.error = Some(format!("comparing with the callbacks: {e}")),
        },
        Err(e) => {
            if let FetchError::Api(api) = &e {
                report.tencent_code = api.code();
            }
            report.error = Some(e.to_string());
        }
    }
    report
}

/// Fetches and stores the pages from `start.next_page` on.
async fn fetch_pages(
    store: &Store,
    client: &Client,
    key: &RunKey,
    start: &RunStart,
    seen_at: Millis,
    progress: &mut Progress,
) -> Result<(), FetchError> {
    // Whole seconds: the window's start rounded down, its end up (records are idempotent,
    // so a second too many is harmless; one too few would lose calls).
    let (from, to) = (key.from.div_euclid(1000), (key.to + 999).div_euclid(1000));
    let mut per_page = key.page_size;
    let mut page = start.next_page;
    loop {
        let oldest = crate::now_millis() - crate::config::RECORDS_KEPT.as_millis() as Millis;
        if from * 1000 < oldest {
            return Err(FetchError::WindowExpired(crate::config::show_time(
                key.from,
            )));
        }
        let query = PageQuery {
            start: from,
            end: to,
            per_page,
            page,
        };
        let got = records::page(client, &query).await?;
        let n = got.records.len() as u64;
        let mut rows = Vec::with_capacity(got.records.len());
        for raw in &got.records {
            match parse_call_record(key.sdkappid, raw.get(), seen_at) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    progress.skipped += 1;
                    tracing::warn!(sdkappid = key.sdkappid, page, error = %e, "a call record was not stored");
                }
            }
        }
        if page == 1 && n > 0 && n < u64::from(per_page) && got.total > n {
            // Tencent pages fewer than asked: that is its page size.
            tracing::info!(
                asked = per_page,
                got = n,
                "Tencent's page size is smaller; paging with it"
            );
            per_page = n as u32;
        }
        store
            .write_records(&PageWrite {
                run: start.id,
                page,
                total: got.total,
                requests: client.requests(),
                rows: &rows,
                seen_at,
                page_size: per_page,
            })
            .await?;
        progress.records += n;
        progress.total = Some(got.total);
        if n == 0 || page.saturating_mul(u64::from(per_page)) >= got.total {
            return Ok(());
        }
        page += 1;
    }
}
