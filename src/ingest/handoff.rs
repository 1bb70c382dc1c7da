//! The hand-off to the outage journal: what happens to a batch the database could not
//! take ([`fail`]). While PostgreSQL is unavailable its events go into the journal
//! (`crate::journal`, which replays them later) and are acknowledged from there; without
//! a journal, or when the journal cannot take them either, the requests are answered 503
//! so the sender retries.
//!
//! The writer (`writer.rs`) hands a batch over here; the batch's parts are `batch.rs`'s.

use super::batch::{Deliveries, Rejections};
use super::outcome::{IngestError, Outcome};
use crate::journal::Journal;
use crate::protocol::EventRow;
use crate::store::StoreError;

/// The database could not take the batch: journal the events if there is a journal
/// and the database is unavailable (its write's outcome unknown, or certainly not
/// committed), else answer 503 so the sender retries.
pub(super) async fn fail(
    journal: Option<&Journal>,
    events: Deliveries,
    rejected: Rejections,
    e: StoreError,
) {
    rejected.answer(false);
    let journalable = match &e {
        StoreError::Unavailable(_) => Some(None),
        StoreError::Indeterminate { fence, .. } => Some(Some(*fence)),
        StoreError::Data(_) | StoreError::Other(_) => None,
    };
    if let (Some(journal), Some(fence)) = (journal, journalable) {
        let rows: Vec<&EventRow> = events.rows.iter().flatten().collect();
        match journal.append(&rows, fence).await {
            Ok(()) => {
                for reply in events.replies {
                    let _ = reply.send(Ok(Outcome::Journaled));
                }
                return;
            }
            Err(journal_err) => {
                tracing::warn!(error = %journal_err, "cannot journal while the database is unavailable; answering 503");
            }
        }
    }
    if let StoreError::Other(msg) = &e {
        tracing::error!(error = %msg, "batch write failed");
    }
    let err = IngestError::Unavailable(match e {
        StoreError::Unavailable(m)
        | StoreError::Data(m)
        | StoreError::Other(m)
        | StoreError::Indeterminate { reason: m, .. } => m,
    });
    for reply in events.replies {
        let _ = reply.send(Err(err.clone()));
    }
}
