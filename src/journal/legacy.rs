//! Import of the segment files (`spool-<sequence>.seg`) that callhook's earlier outage spool
//! wrote, so that an upgrade during an outage loses nothing. Run once at start-up; nothing
//! writes segment files any more.
//!
//! A segment is a series of records `[length: u32 LE][crc32: u32 LE][length bytes of
//! JSON]`. The file is read as a stream (its size does not matter), and a record that
//! fails its checksum does not end the import: the reader looks for the next offset where a
//! valid record starts. An incomplete record at the very end is a torn write that was never
//! acknowledged. A segment is removed once its records are committed to the journal; one
//! with unreadable bytes in the middle is kept, renamed `*.seg.unreadable`.
//!
//! **Resumable.** Each batch of records is committed to the journal together with how far
//! into its segment the import got (`journal_meta`, key `legacy-segment:<file name>`), so
//! an import cut short (a kill, a full journal) resumes where it stopped and counts no
//! delivery twice. When the journal is full, the import stops without failing the start:
//! the replay imports the rest as it frees room.
//!
//! The old spool did not record replay progress, so a segment that an earlier version had
//! partly replayed before it stopped is replayed whole: its events are stored once, and
//! their `deliveries` can count those deliveries twice (as the old spool's own replay did).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use super::{Journal, JournalError};
use crate::protocol::{CallResult, CallType, DedupeKey, EventRow, Family, MediaType, Millis, Role};
use crate::store::merge;

/// Header bytes per record: length and checksum.
const HEADER: u64 = 8;
/// Rows per journal write during the import.
const BATCH: usize = 512;
/// Where `journal_meta` records how far into a segment the import got: this prefix and the
/// segment's file name, with the value `<offset> <bytes skipped so far>`.
const PROGRESS: &str = "legacy-segment:";

/// One spooled event, as the old spool encoded it.
#[derive(Debug, Deserialize)]
struct Record {
    sdkappid: i64,
    family: String,
    command: String,
    call_id: Option<String>,
    user_id: Option<String>,
    role: Option<String>,
    event: Option<String>,
    call_result: Option<String>,
    media_type: Option<String>,
    call_type: Option<String>,
    room_id: Option<String>,
    total_num: Option<i64>,
    event_time: Option<Millis>,
    start_call_ts: Option<Millis>,
    accept_ts: Option<Millis>,
    end_ts: Option<Millis>,
    client_ip: Option<String>,
    opt_platform: Option<String>,
    remote_addr: Option<String>,
    payload: String,
    received_at: Millis,
    dedupe_key: String,
}

impl Record {
    fn into_row(self) -> Option<EventRow> {
        let mut dedupe_key: DedupeKey = [0; 16];
        hex::decode_to_slice(&self.dedupe_key, &mut dedupe_key).ok()?;
        Some(EventRow {
            sdkappid: self.sdkappid,
            family: Family::parse(&self.family)?,
            command: self.command,
            call_id: self.call_id,
            user_id: self.user_id,
            role: self.role.as_deref().and_then(Role::from_wire),
            event: self.event,
            call_result: self.call_result.as_deref().and_then(CallResult::from_wire),
            media_type: self.media_type.as_deref().and_then(MediaType::from_wire),
            call_type: self.call_type.as_deref().and_then(CallType::from_wire),
            room_id: self.room_id,
            total_num: self.total_num,
            event_time: self.event_time,
            start_call_ts: self.start_call_ts,
            accept_ts: self.accept_ts,
            end_ts: self.end_ts,
            client_ip: self.client_ip,
            opt_platform: self.opt_platform,
            remote_addr: self.remote_addr,
            members: None,
            trtc: Default::default(),
            payload: Some(self.payload.into()),
            notes: None,
            received_at: self.received_at,
            dedupe_key,
            // As when it was spooled: its day is its time columns'.
            own_day: None,
        })
    }
}

/// A segment read as a stream of records.
struct Segment {
    file: BufReader<File>,
    len: u64,
    at: u64,
    /// Bytes skipped before the end because they held no valid record.
    skipped: u64,
}

impl Segment {
    /// Opens a segment to be read from `at`, `skipped` damaged bytes already behind.
    fn open(path: &Path, at: u64, skipped: u64) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file: BufReader::with_capacity(1 << 20, file),
            len,
            at: at.min(len),
            skipped,
        })
    }

    /// The record starting at `at`, if one does.
    fn record_at(&mut self, at: u64) -> std::io::Result<Option<(EventRow, u64)>> {
        if self.len - at < HEADER {
            return Ok(None);
        }
        self.file.seek(SeekFrom::Start(at))?;
        let mut header = [0u8; HEADER as usize];
        self.file.read_exact(&mut header)?;
        let len = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > self.len - at - HEADER {
            return Ok(None);
        }
        let mut body = vec![0u8; len as usize];
        self.file.read_exact(&mut body)?;
        if crc32fast::hash(&body) != crc {
            return Ok(None);
        }
        Ok(serde_json::from_slice::<Record>(&body)
            .ok()
            .and_then(Record::into_row)
            .map(|row| (row, at + HEADER + len)))
    }

    /// The next valid record, skipping (and counting) bytes that hold none. A damaged
    /// region that runs to the end of the file is a torn tail and is not counted.
    fn next(&mut self) -> std::io::Result<Option<EventRow>> {
        let mut at = self.at;
        while self.len - at >= HEADER {
            if let Some((row, end)) = self.record_at(at)? {
                self.skipped += at - self.at;
                self.at = end;
                return Ok(Some(row));
            }
            at += 1;
        }
        self.at = self.len;
        Ok(None)
    }
}

fn segments(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading spool directory {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let seq = name
                .strip_prefix("spool-")?
                .strip_suffix(".seg")?
                .parse()
                .ok()?;
            Some((seq, e.path()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// How far an import got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Import {
    /// Records committed to the journal by this call.
    pub records: u64,
    /// Whether every segment is done (false: the journal filled up first).
    pub complete: bool,
}

/// Moves the segment files' events into the journal, oldest segment first, each from
/// where an earlier import stopped, until they are done or the journal is full.
pub(super) async fn import(journal: &Journal) -> anyhow::Result<Import> {
    let dir = journal.dir();
    let found = segments(dir)?;
    forget_finished(journal, &found).await;
    let mut records = 0u64;
    for path in found {
        match import_segment(journal, &path).await? {
            Some(n) => records += n,
            None => {
                return Ok(Import {
                    records,
                    complete: false,
                });
            }
        }
    }
    Ok(Import {
        records,
        complete: true,
    })
}

/// Forgets the progress of segments that are gone (done, but stopped before forgetting).
async fn forget_finished(journal: &Journal, found: &[PathBuf]) {
    let db = journal.db.lock().await;
    let keys = db.meta_keys(PROGRESS).await.unwrap_or_default();
    for key in keys {
        let name = key.trim_start_matches(PROGRESS);
        if !found
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == name))
        {
            let _ = db.forget_meta(&key).await;
        }
    }
}

/// One segment into the journal, from where an earlier import stopped. Returns how many
/// records came in, or `None` when the journal filled up first (what was committed stays,
/// with its progress).
async fn import_segment(journal: &Journal, path: &Path) -> anyhow::Result<Option<u64>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let key = format!("{PROGRESS}{name}");
    let (at, skipped) = {
        let db = journal.db.lock().await;
        let value = db
            .meta(&key)
            .await
            .with_context(|| format!("reading the import progress of {}", path.display()))?;
        parse_progress(value.as_deref())
    };
    let mut segment =
        Segment::open(path, at, skipped).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::with_capacity(BATCH);
    let mut imported = 0u64;
    loop {
        let next = segment
            .next()
            .with_context(|| format!("reading {}", path.display()))?;
        let done = next.is_none();
        rows.extend(next);
        if rows.len() == BATCH || (done && !rows.is_empty()) {
            let (batch, _) = merge(rows.iter());
            let progress = format!("{} {}", segment.at, segment.skipped);
            match journal
                .append_noting(&batch, None, Some((&key, &progress)))
                .await
            {
                Ok(()) => {}
                Err(JournalError::Full { .. }) => return Ok(None),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("importing {} into the journal", path.display())));
                }
            }
            imported += rows.len() as u64;
            rows.clear();
        }
        if done {
            break;
        }
    }
    finish_segment(path, &segment, imported)?;
    let db = journal.db.lock().await;
    if let Err(e) = db.forget_meta(&key).await {
        tracing::debug!(error = %e, "could not forget an imported segment's progress");
    }
    Ok(Some(imported))
}

/// `<offset> <skipped>`; a missing or unreadable value is the segment's start.
fn parse_progress(value: Option<&str>) -> (u64, u64) {
    let mut parts = value.unwrap_or_default().split_whitespace();
    let mut next = || parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let at = next();
    (at, next())
}

/// A segment whose records are all in the journal: removed, or, when it had damaged
/// bytes, kept as `*.seg.unreadable`.
fn finish_segment(path: &Path, segment: &Segment, imported: u64) -> anyhow::Result<()> {
    if segment.skipped > 0 {
        let mut kept = path.to_owned().into_os_string();
        kept.push(".unreadable");
        std::fs::rename(path, &kept).with_context(|| format!("renaming {}", path.display()))?;
        tracing::error!(
            segment = %path.display(),
            kept_as = %PathBuf::from(kept).display(),
            imported,
            unreadable_bytes = segment.skipped,
            "an old spool segment had damaged records; the readable ones are in the journal, the file is kept"
        );
    } else {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        tracing::info!(segment = %path.display(), imported, "imported an old spool segment into the outage journal");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::protocol::{Context, Kind, parse_delivery};

    fn rows(n: usize) -> Vec<EventRow> {
        (0..n)
            .flat_map(|i| {
                let ctx = Context {
                    sdkappid: 1_400_000_001,
                    command: "call_end",
                    client_ip: Some("10.0.0.1"),
                    opt_platform: Some("iOS"),
                    remote_addr: Some("203.0.113.5"),
                    received_at: 1_704_900_000_000 + i as i64,
                };
                let body = format!(
                    r#"{{"CallId":"c{i}","UserId":"u{i}","Role":"Callee","CallResult":"Weird_New","MediaType":"Video","CallType":"MultiCall","TotalNum":3,"EventTime":1704856890,"AcceptTs":1704856876,"Extra":"é\u00e9"}}"#
                );
                parse_delivery(Kind::Status, false, &ctx, body.as_bytes()).unwrap_or_default()
            })
            // The old spool carried no own day: an imported row's partition key is its time
            // columns' day, as it was when the old version spooled it.
            .map(|row| EventRow {
                own_day: None,
                ..row
            })
            .collect()
    }

    /// Encodes rows the way the old spool did.
    fn encode(rows: &[EventRow]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in rows {
            let json = serde_json::json!({
                "sdkappid": r.sdkappid, "family": r.family.as_str(), "command": r.command,
                "call_id": r.call_id, "user_id": r.user_id,
                "role": r.role.as_ref().map(|v| v.as_str()), "event": r.event,
                "call_result": r.call_result.as_ref().map(|v| v.as_str()),
                "media_type": r.media_type.as_ref().map(|v| v.as_str()),
                "call_type": r.call_type.as_ref().map(|v| v.as_str()),
                "room_id": r.room_id, "total_num": r.total_num, "event_time": r.event_time,
                "start_call_ts": r.start_call_ts, "accept_ts": r.accept_ts, "end_ts": r.end_ts,
                "client_ip": r.client_ip, "opt_platform": r.opt_platform,
                "remote_addr": r.remote_addr, "payload": r.payload.as_deref(),
                "received_at": r.received_at, "dedupe_key": hex::encode(r.dedupe_key),
            })
            .to_string()
            .into_bytes();
            out.extend_from_slice(&(json.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
            out.extend_from_slice(&json);
        }
        out
    }

    async fn journal(dir: &Path) -> Journal {
        Journal::open(dir, 1 << 30)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The rows waiting in the journal, by call id (a batch is stored in key order).
    async fn waiting(journal: &Journal) -> Vec<EventRow> {
        let db = journal.db.lock().await;
        let mut rows: Vec<EventRow> = db
            .take_chunk(10_000)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .filter_map(|e| match e {
                crate::store::JournalEntry::Row(r) => Some(r.row),
                crate::store::JournalEntry::Undecodable(_) => None,
            })
            .collect();
        rows.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        rows
    }

    #[tokio::test]
    async fn segments_are_imported_field_for_field_and_removed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let original = rows(5);
        std::fs::write(
            dir.path().join("spool-00000000000000000001.seg"),
            encode(&original[..2]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // The newest segment ends in a torn record (a crash mid-append): not counted.
        let mut torn = encode(&original[2..]);
        let half = encode(&original[..1]);
        torn.extend_from_slice(&half[..half.len() / 2]);
        std::fs::write(dir.path().join("spool-00000000000000000002.seg"), torn)
            .unwrap_or_else(|e| panic!("{e}"));
        let journal = journal(dir.path()).await;
        assert_eq!(journal.stats().events, 5);
        assert_eq!(waiting(&journal).await, original);
        assert!(segments(dir.path()).unwrap_or_default().is_empty());
    }

    #[tokio::test]
    async fn a_damaged_record_costs_only_itself_and_the_file_is_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let original = rows(6);
        let mut data = encode(&original);
        // A flipped byte in the second record's body: it fails its checksum.
        let first_len = encode(&original[..1]).len();
        data[first_len + 20] ^= 0xff;
        let path = dir.path().join("spool-00000000000000000007.seg");
        let mut f = File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        f.write_all(&data).unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let journal = journal(dir.path()).await;
        assert_eq!(journal.stats().events, 5);
        let mut want = original.clone();
        want.remove(1);
        assert_eq!(
            waiting(&journal).await,
            want,
            "every record after the bad one is kept"
        );
        assert!(!path.exists());
        let mut kept = path.into_os_string();
        kept.push(".unreadable");
        assert!(PathBuf::from(kept).exists(), "the damaged segment is kept");
    }
}
