//! What a request gets back from ingest: acknowledged, with its [`Outcome`], or not, with
//! an [`IngestError`] and the error code it is answered with. Every step of the write
//! path answers in these terms; the HTTP layer (`http/delivery.rs`) turns them into the
//! envelope.

use crate::protocol::ErrorCode;

/// What happened to an accepted delivery. All three are acknowledged with `ErrorCode` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed as a new event.
    Inserted,
    /// Already stored (a retry): its `deliveries` count grew.
    Duplicate,
    /// The database was unavailable; the event is durably in the outage journal and will be
    /// replayed into the database.
    Journaled,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Inserted => "stored",
            Self::Duplicate => "duplicate",
            Self::Journaled => "journaled",
        }
    }
}

/// Why a delivery was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("overloaded: {0} deliveries are waiting to be written")]
    Overloaded(usize),
    #[error("shutting down")]
    ShuttingDown,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused this delivery's data (and only this one).
    #[error("the database cannot store this body: {0}")]
    Unstorable(String),
}

impl IngestError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Overloaded(_) => ErrorCode::Overloaded,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Unavailable(_) => ErrorCode::DatabaseUnavailable,
            Self::Unstorable(_) => ErrorCode::Unstorable,
        }
    }
}
