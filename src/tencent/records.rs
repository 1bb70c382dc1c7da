//! The call record API (`call_record_http_srv`): Tencent's own record of every call of the
//! last 7 days, by start time and page, or by call id. Records come back as received (raw
//! JSON), for [`crate::protocol::call_record`] to read.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::client::{ApiError, Client};

pub const BY_FILTER: &str = "call_record_http_srv/get_record_by_filter";
pub const BY_CALL_ID: &str = "call_record_http_srv/get_record_by_callid";

/// One page of the records of calls that started in `[start, end]` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    pub start: i64,
    pub end: i64,
    pub per_page: u32,
    /// From 1.
    pub page: u64,
}

impl PageQuery {
    /// The request body, as Tencent names the fields.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "StartTime": self.start,
            "EndTime": self.end,
            "NumberPerPage": self.per_page,
            "Page": self.page,
        })
    }
}

/// One page of records.
#[derive(Debug)]
pub struct RecordPage {
    /// How many records the whole query has (`TotalNum`).
    pub total: u64,
    /// The page Tencent says this is.
    pub page: Option<u64>,
    /// The records, each exactly as received.
    pub records: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
struct PageResponse {
    #[serde(rename = "TotalNum")]
    total: Option<u64>,
    #[serde(rename = "Page")]
    page: Option<u64>,
    #[serde(rename = "CallRecordList", default)]
    records: Option<Vec<Box<RawValue>>>,
}

#[derive(Deserialize)]
struct OneResponse {
    #[serde(rename = "CallRecord")]
    record: Option<Box<RawValue>>,
}

fn unreadable(api: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Answer {
        api: api.to_owned(),
        reason: format!("Response: {e}"),
    }
}

/// Fetches one page of records.
pub async fn page(client: &Client, q: &PageQuery) -> Result<RecordPage, ApiError> {
    let answer = client.call(BY_FILTER, &q.body()).await?;
    let raw = answer
        .response
        .ok_or_else(|| unreadable(BY_FILTER, "missing"))?;
    let r: PageResponse = serde_json::from_str(raw.get()).map_err(|e| unreadable(BY_FILTER, e))?;
    let records = r.records.unwrap_or_default();
    Ok(RecordPage {
        total: r.total.unwrap_or(records.len() as u64),
        page: r.page,
        records,
    })
}

/// The record of one call, `None` when Tencent has none.
pub async fn by_call_id(client: &Client, call_id: &str) -> Result<Option<Box<RawValue>>, ApiError> {
    let answer = client
        .call(BY_CALL_ID, &serde_json::json!({ "CallId": call_id }))
        .await?;
    match answer.response {
        None => Ok(None),
        Some(raw) => {
            let r: OneResponse =
                serde_json::from_str(raw.get()).map_err(|e| unreadable(BY_CALL_ID, e))?;
            Ok(r.record)
        }
    }
}
