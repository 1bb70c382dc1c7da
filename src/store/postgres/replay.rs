//! Replaying the outage journal into PostgreSQL, exactly once.
//!
//! Every replay step is one transaction that, in order:
//! 1. creates the journal's progress row if it has none yet, then locks it, so two steps
//!    of one journal (an abandoned one still running, say) run one after the other and the
//!    second sees what the first committed;
//! 2. sorts the step's rows by that progress: after it (to write), of the chunk in flight
//!    and already there (skipped: the database committed them, the journal did not get to
//!    forget them), or of an earlier chunk (the journal and the database disagree: written
//!    anyway and reported, never dropped);
//! 3. settles the fence of every write of unknown outcome its rows come from, once: the
//!    first step to meet a fence decides, and records in `fence_claims` when the replay
//!    took the write over, so every later step (another chunk, the row-by-row fallback, a
//!    chunk shrunk after a timeout) reaches the same answer (src/store/fence.rs);
//! 4. writes the rows (or keeps them in `rejected_deliveries`), and moves the progress
//!    forward (never back).

use std::collections::HashMap;
use std::time::Duration;

use super::{PgStore, classify, insert_events, insert_rejected};
use crate::faults::Point;
use crate::protocol::ErrorCode;
use crate::store::fence::Fence;
use crate::store::{JournalRow, RejectedRow, ReplayReport, StoreError, Undecodable, merge_counted};

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// What a step does with the rows it keeps.
enum Action<'a> {
    /// Write them into `call_events`.
    Store,
    /// Keep them in `rejected_deliveries`: the database refused them with this reason.
    Refused(&'a str),
}

impl PgStore {
    /// See [`crate::store::Store::replay`].
    pub async fn replay(
        &self,
        journal_id: &str,
        rows: &[JournalRow],
    ) -> Result<ReplayReport, StoreError> {
        self.try_replay(journal_id, rows, Action::Store)
            .await
            .map_err(classify)
    }

    /// See [`crate::store::Store::replay_refused`].
    pub async fn replay_refused(
        &self,
        journal_id: &str,
        row: &JournalRow,
        reason: &str,
    ) -> Result<ReplayReport, StoreError> {
        let rows = std::slice::from_ref(row);
        self.try_replay(journal_id, rows, Action::Refused(reason))
            .await
            .map_err(classify)
    }

    /// See [`crate::store::Store::replay_set_aside`].
    pub async fn replay_set_aside(
        &self,
        journal_id: &str,
        row: &Undecodable,
    ) -> Result<ReplayReport, StoreError> {
        self.try_set_aside(journal_id, row).await.map_err(classify)
    }

    /// How long one replay step may take: four live writes' deadlines. The server cancels
    /// a step's statements a second later, so an abandoned step does not hold its locks.
    pub fn replay_deadline(&self) -> Duration {
        self.write_timeout * 4
    }

    async fn try_replay(
        &self,
        journal_id: &str,
        rows: &[JournalRow],
        action: Action<'_>,
    ) -> Result<ReplayReport, sqlx::Error> {
        let (mut tx, position) = self.begin_step(journal_id).await?;
        let mut report = ReplayReport {
            position,
            ..ReplayReport::default()
        };
        let mut todo: Vec<&JournalRow> = Vec::with_capacity(rows.len());
        for r in rows {
            match Place::of((r.chunk, r.id), position) {
                Place::After => todo.push(r),
                Place::InFlight => report.already_replayed += 1,
                Place::Behind => {
                    report.behind += 1;
                    todo.push(r);
                }
            }
        }
        let Some(last) = todo.iter().map(|r| (r.chunk, r.id)).max() else {
            tx.commit().await?;
            return Ok(report);
        };
        report.replayed = todo.len() - report.behind;
        let mut settled: HashMap<Fence, bool> = HashMap::new();
        for fence in todo.iter().filter_map(|r| r.fence) {
            if let std::collections::hash_map::Entry::Vacant(slot) = settled.entry(fence) {
                let settled = self
                    .faults
                    .run(Point::PgReplaySettle, settle_fence(&mut tx, fence))
                    .await?;
                slot.insert(settled);
            }
        }
        // Whether the step wrote outbox entries (the workers are told after the commit).
        let mut forwarded = false;
        let keep = todo.into_iter().filter(|r| {
            r.fence
                .is_none_or(|f| settled.get(&f).copied().unwrap_or(true))
        });
        match action {
            Action::Store => {
                let (batch, _) = merge_counted(keep.map(|r| (&r.row, r.deliveries)));
                let entries = self.routes.entries(&batch);
                forwarded = !entries.is_empty();
                let write = insert_events(&mut *tx, &batch, None, &entries, None);
                self.faults.run(Point::PgReplayWrite, write).await?;
            }
            Action::Refused(reason) => {
                let rejected: Vec<RejectedRow> = keep.map(|r| refused_row(r, reason)).collect();
                let write = insert_rejected(&mut *tx, &rejected, None);
                self.faults.run(Point::PgReplayWrite, write).await?;
            }
        }
        report.position = advance(&mut tx, journal_id, last, position).await?;
        self.faults.run(Point::PgReplayCommit, tx.commit()).await?;
        if forwarded {
            self.routes.signal();
        }
        Ok(report)
    }

    async fn try_set_aside(
        &self,
        journal_id: &str,
        row: &Undecodable,
    ) -> Result<ReplayReport, sqlx::Error> {
        let (mut tx, position) = self.begin_step(journal_id).await?;
        let mut report = ReplayReport {
            position,
            ..ReplayReport::default()
        };
        match Place::of((row.chunk, row.id), position) {
            Place::InFlight => {
                report.already_replayed = 1;
                tx.commit().await?;
                return Ok(report);
            }
            Place::Behind => report.behind = 1,
            Place::After => report.replayed = 1,
        }
        let write = insert_rejected(&mut *tx, std::slice::from_ref(&row.rejected), None);
        self.faults.run(Point::PgReplayWrite, write).await?;
        report.position = advance(&mut tx, journal_id, (row.chunk, row.id), position).await?;
        self.faults.run(Point::PgReplayCommit, tx.commit()).await?;
        Ok(report)
    }

    /// Opens a step's transaction with its deadlines, and returns it with the journal's
    /// progress, locked (the row is created first when missing, so there is always one to
    /// lock: two first steps cannot both find none).
    async fn begin_step(&self, journal_id: &str) -> Result<(Tx, (i64, i64)), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let statement_ms = (self.replay_deadline() + Duration::from_secs(1)).as_millis();
        let begin = async {
            sqlx::query(
                "SELECT set_config('lock_timeout', '5s', true), \
                        set_config('statement_timeout', $1, true)",
            )
            .bind(statement_ms.to_string())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO journal_progress (journal_id, replayed_chunk, replayed_id) \
                 VALUES ($1, 0, 0) ON CONFLICT (journal_id) DO NOTHING",
            )
            .bind(journal_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT replayed_chunk, replayed_id FROM journal_progress \
                 WHERE journal_id = $1 FOR UPDATE",
            )
            .bind(journal_id)
            .fetch_one(&mut *tx)
            .await
        };
        let position = self.faults.run(Point::PgReplayBegin, begin).await?;
        Ok((tx, position))
    }
}

/// Where a journal row lies against the recorded progress.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// Not replayed yet.
    After,
    /// Of the chunk in flight, at or before the progress: already in the database.
    InFlight,
    /// Of an earlier chunk than the progress: the journal and the database disagree.
    Behind,
}

impl Place {
    fn of(row: (i64, i64), progress: (i64, i64)) -> Self {
        if row > progress {
            Self::After
        } else if row.0 == progress.0 {
            Self::InFlight
        } else {
            Self::Behind
        }
    }
}

/// Moves the progress to `last` unless it is already past it; returns the progress.
async fn advance(
    tx: &mut Tx,
    journal_id: &str,
    last: (i64, i64),
    position: (i64, i64),
) -> Result<(i64, i64), sqlx::Error> {
    if last <= position {
        return Ok(position);
    }
    sqlx::query(
        "UPDATE journal_progress SET replayed_chunk = $2, replayed_id = $3, updated_at = now() \
         WHERE journal_id = $1",
    )
    .bind(journal_id)
    .bind(last.0)
    .bind(last.1)
    .execute(&mut **tx)
    .await?;
    Ok(last)
}

/// Settles the fence of a write whose outcome was unknown, in the replay's transaction:
/// `true` when the journaled rows are to be written (that write did not commit, and never
/// will: the fence is raised now, or was raised by an earlier replay step, which
/// `fence_claims` records), `false` when it did commit (they are already stored). The
/// fence's row is locked first, so an original write still in flight finishes first, and
/// a claim committed meanwhile is seen.
async fn settle_fence(tx: &mut Tx, fence: Fence) -> Result<bool, sqlx::Error> {
    let writer = &fence.writer[..];
    let created: Option<i32> = sqlx::query_scalar(
        "INSERT INTO ingest_fences (writer_id, last_batch) VALUES ($1, $2) \
         ON CONFLICT (writer_id) DO NOTHING RETURNING 1",
    )
    .bind(writer)
    .bind(fence.batch)
    .fetch_optional(&mut **tx)
    .await?;
    if created.is_none() {
        let (last, claimed): (i64, bool) = sqlx::query_as(
            "SELECT f.last_batch, EXISTS (SELECT 1 FROM fence_claims c \
                 WHERE c.writer_id = f.writer_id AND c.batch = $2) \
             FROM ingest_fences f WHERE f.writer_id = $1 FOR UPDATE",
        )
        .bind(writer)
        .bind(fence.batch)
        .fetch_one(&mut **tx)
        .await?;
        if claimed {
            return Ok(true);
        }
        if last >= fence.batch {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE ingest_fences SET last_batch = $2, updated_at = now() WHERE writer_id = $1",
        )
        .bind(writer)
        .bind(fence.batch)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("INSERT INTO fence_claims (writer_id, batch) VALUES ($1, $2)")
        .bind(writer)
        .bind(fence.batch)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// A journaled row the database refused for its data, as `rejected_deliveries` keeps it.
fn refused_row(r: &JournalRow, reason: &str) -> RejectedRow {
    RejectedRow {
        received_at: r.row.received_at,
        sdkappid: r.row.sdkappid,
        command: Some(r.row.command.clone()),
        query: String::new(),
        body: RejectedRow::body_text(r.row.payload.as_deref().unwrap_or_default().as_bytes()),
        error_code: ErrorCode::Unstorable.code() as i32,
        reason: format!("replaying the outage journal, the database refused this event: {reason}"),
        remote_addr: r.row.remote_addr.clone(),
        dedupe_key: crate::protocol::derived_key(b"replay-refused", &r.row.dedupe_key),
    }
}

#[cfg(test)]
mod tests {
    use super::Place;

    #[test]
    fn rows_are_placed_against_the_progress() {
        let progress = (4, 100);
        assert_eq!(Place::of((4, 101), progress), Place::After);
        assert_eq!(Place::of((5, 1), progress), Place::After);
        assert_eq!(Place::of((4, 100), progress), Place::InFlight);
        assert_eq!(Place::of((4, 3), progress), Place::InFlight);
        assert_eq!(Place::of((3, 500), progress), Place::Behind);
        assert_eq!(Place::of((1, 1), (0, 0)), Place::After, "a fresh journal");
    }
}
