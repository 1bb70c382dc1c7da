//! The outage spool: while PostgreSQL cannot take writes, acknowledged events go to a local
//! append-only log instead, and a background task replays them into the database when it
//! answers again.
//!
//! Format: segment files `spool-<sequence>.seg` in the spool directory, each a series of
//! records `[length: u32 LE][crc32: u32 LE][length bytes of JSON]`. A batch is written with
//! one `write` and made durable with `fdatasync` before any of its deliveries is
//! acknowledged, so a record that fails its checksum at the tail was never acknowledged
//! (a crash tore it) and is cut off. Replay goes oldest segment first, through the same
//! deduplicating insert as live traffic, and deletes a segment only after every record in
//! it is committed: a crash mid-replay replays some records twice, which the database's
//! dedupe key turns into a higher `deliveries` count, never a second row.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::metrics as m;
use crate::protocol::{CallResult, CallType, DedupeKey, EventRow, Family, MediaType, Millis, Role};
use crate::store::{Store, StoreError, merge};

/// Header bytes per record: length and checksum.
const HEADER: usize = 8;
/// Largest record accepted when reading (a body is at most 16 MiB, plus its columns).
const MAX_RECORD: usize = 40 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("cannot write the spool: {0}")]
    Io(String),
}

/// One spooled event: an [`EventRow`] in a stable, self-describing form.
#[derive(Debug, Serialize, Deserialize)]
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
    fn from_row(r: &EventRow) -> Self {
        Self {
            sdkappid: r.sdkappid,
            family: r.family.as_str().to_owned(),
            command: r.command.clone(),
            call_id: r.call_id.clone(),
            user_id: r.user_id.clone(),
            role: r.role.as_ref().map(|v| v.as_str().to_owned()),
            event: r.event.clone(),
            call_result: r.call_result.as_ref().map(|v| v.as_str().to_owned()),
            media_type: r.media_type.as_ref().map(|v| v.as_str().to_owned()),
            call_type: r.call_type.as_ref().map(|v| v.as_str().to_owned()),
            room_id: r.room_id.clone(),
            total_num: r.total_num,
            event_time: r.event_time,
            start_call_ts: r.start_call_ts,
            accept_ts: r.accept_ts,
            end_ts: r.end_ts,
            client_ip: r.client_ip.clone(),
            opt_platform: r.opt_platform.clone(),
            remote_addr: r.remote_addr.clone(),
            payload: r.payload.to_string(),
            received_at: r.received_at,
            dedupe_key: hex::encode(r.dedupe_key),
        }
    }

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
            payload: self.payload.into(),
            received_at: self.received_at,
            dedupe_key,
        })
    }
}

/// Encodes rows as framed records.
fn encode(rows: &[&EventRow]) -> Result<Vec<u8>, SpoolError> {
    let mut out = Vec::new();
    for row in rows {
        let json = serde_json::to_vec(&Record::from_row(row))
            .map_err(|e| SpoolError::Io(e.to_string()))?;
        let len =
            u32::try_from(json.len()).map_err(|_| SpoolError::Io("record too large".into()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        out.extend_from_slice(&json);
    }
    Ok(out)
}

/// The valid records of a segment file.
struct SegmentContents {
    /// Each record with the file offset just after it.
    records: Vec<(EventRow, u64)>,
    /// Where the valid part ends: less than `len` when the tail is torn.
    valid: u64,
    len: u64,
}

/// Reads a segment, stopping at the first record that is incomplete or fails its checksum.
fn read_segment(path: &Path) -> std::io::Result<SegmentContents> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= HEADER {
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let crc = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        let start = at + HEADER;
        if len > MAX_RECORD || data.len() - start < len {
            break;
        }
        let body = &data[start..start + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let Some(row) = serde_json::from_slice::<Record>(body)
            .ok()
            .and_then(Record::into_row)
        else {
            break;
        };
        at = start + len;
        records.push((row, at as u64));
    }
    Ok(SegmentContents {
        records,
        valid: at as u64,
        len: data.len() as u64,
    })
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    events: u64,
    bytes: u64,
    oldest: Option<Millis>,
    /// Bytes of this segment already committed to the database by an unfinished replay.
    replayed_to: u64,
}

#[derive(Debug)]
struct State {
    /// Oldest first. The last one is the segment being appended to.
    segments: VecDeque<Segment>,
    current: File,
    next_seq: u64,
    /// Whether the spool held events at the last change (for the once-per-episode logs).
    active: bool,
}

/// Counts for metrics and readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub events: u64,
    pub bytes: u64,
    pub oldest_received_at: Option<Millis>,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Held by the replay task, so only one replay runs at a time.
    replay_lock: tokio::sync::Mutex<()>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("spool-{seq:020}.seg"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (creating) the spool directory, checks every segment, cuts a torn tail, and
    /// starts a fresh segment for appends.
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating spool directory {}", dir.display()))?;
        let mut seqs: Vec<u64> = std::fs::read_dir(dir)
            .with_context(|| format!("reading spool directory {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("spool-")?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()
            })
            .collect();
        seqs.sort_unstable();
        let mut segments = VecDeque::new();
        for seq in &seqs {
            let path = segment_path(dir, *seq);
            let SegmentContents {
                records,
                valid,
                len,
            } = read_segment(&path)
                .with_context(|| format!("reading spool segment {}", path.display()))?;
            if valid < len {
                tracing::warn!(
                    segment = %path.display(),
                    dropped_bytes = len - valid,
                    "cutting a torn record off the spool (it was never acknowledged)"
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid)?;
                f.sync_all()?;
            }
            if records.is_empty() {
                std::fs::remove_file(&path)?;
                continue;
            }
            segments.push_back(Segment {
                seq: *seq,
                path,
                events: records.len() as u64,
                bytes: valid,
                oldest: records.iter().map(|(r, _)| r.received_at).min(),
                replayed_to: 0,
            });
        }
        let next_seq = seqs.last().map_or(1, |s| s + 1);
        let path = segment_path(dir, next_seq);
        let current = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating spool segment {}", path.display()))?;
        sync_dir(dir)?;
        segments.push_back(Segment {
            seq: next_seq,
            path,
            events: 0,
            bytes: 0,
            oldest: None,
            replayed_to: 0,
        });
        let spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(State {
                segments,
                current,
                next_seq: next_seq + 1,
                active: false,
            }),
            replay_lock: tokio::sync::Mutex::new(()),
        };
        let stats = spool.stats();
        if stats.events > 0 {
            tracing::warn!(
                events = stats.events,
                bytes = stats.bytes,
                "the spool holds events from an earlier run; replaying them"
            );
            spool.lock().active = true;
        }
        spool.publish(&stats);
        Ok(spool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> SpoolStats {
        let st = self.lock();
        SpoolStats {
            events: st.segments.iter().map(|s| s.events).sum(),
            bytes: st.segments.iter().map(|s| s.bytes).sum(),
            oldest_received_at: st.segments.iter().filter_map(|s| s.oldest).min(),
        }
    }

    /// Whether the spool has (nearly) reached its size cap: less than 64 KiB left.
    pub fn is_full(&self) -> bool {
        self.stats().bytes + 64 * 1024 > self.max_bytes
    }

    fn publish(&self, stats: &SpoolStats) {
        metrics::gauge!(m::SPOOLED_EVENTS).set(stats.events as f64);
        metrics::gauge!(m::SPOOL_BYTES).set(stats.bytes as f64);
    }

    /// Appends rows durably (written and fdatasync'ed) before returning. Fails without
    /// writing anything when the rows would exceed the size cap.
    pub async fn append(self: &Arc<Self>, rows: &[&EventRow]) -> Result<(), SpoolError> {
        let data = encode(rows)?;
        let oldest = rows.iter().map(|r| r.received_at).min();
        let n = rows.len() as u64;
        let this = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || this.append_blocking(&data, n, oldest))
            .await
            .map_err(|e| SpoolError::Io(e.to_string()))?;
        match &result {
            Ok(()) => metrics::counter!(m::SPOOL_APPENDED).increment(n),
            Err(_) => metrics::counter!(m::SPOOL_ERRORS, "op" => "append").increment(1),
        }
        result
    }

    fn append_blocking(
        &self,
        data: &[u8],
        n: u64,
        oldest: Option<Millis>,
    ) -> Result<(), SpoolError> {
        let mut st = self.lock();
        let used: u64 = st.segments.iter().map(|s| s.bytes).sum();
        if used + data.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full {
                used,
                max: self.max_bytes,
            });
        }
        let io = |e: std::io::Error| SpoolError::Io(e.to_string());
        if let Err(e) = st
            .current
            .write_all(data)
            .and_then(|()| st.current.sync_data())
        {
            // Leave no half-written record for the next append to follow.
            let keep = st.segments.back().map_or(0, |s| s.bytes);
            let _ = st.current.set_len(keep);
            let _ = st.current.seek(SeekFrom::End(0));
            return Err(io(e));
        }
        if let Some(seg) = st.segments.back_mut() {
            seg.events += n;
            seg.bytes += data.len() as u64;
            seg.oldest = match (seg.oldest, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if !st.active {
            st.active = true;
            tracing::warn!(dir = %self.dir.display(), "database unavailable: acknowledging events from the local spool");
        }
        drop(st);
        self.publish(&self.stats());
        Ok(())
    }

    /// Closes the current segment if it has data and opens a new one, so the replay can
    /// read every closed segment while appends continue.
    fn rotate(&self) -> std::io::Result<()> {
        let mut st = self.lock();
        if st.segments.back().is_none_or(|s| s.events == 0) {
            return Ok(());
        }
        let seq = st.next_seq;
        let path = segment_path(&self.dir, seq);
        st.current = OpenOptions::new().create(true).append(true).open(&path)?;
        sync_dir(&self.dir)?;
        st.next_seq += 1;
        st.segments.push_back(Segment {
            seq,
            path,
            events: 0,
            bytes: 0,
            oldest: None,
            replayed_to: 0,
        });
        Ok(())
    }

    /// Replays every spooled event into `store`, oldest first, in batches of at most
    /// `max_batch`. Returns how many events were committed. Stops at the first database
    /// error (the rest stays spooled for the next attempt).
    pub async fn replay(
        self: &Arc<Self>,
        store: &Store,
        max_batch: usize,
    ) -> Result<u64, StoreError> {
        let _guard = self.replay_lock.lock().await;
        if self.stats().events == 0 {
            return Ok(0);
        }
        self.rotate()
            .map_err(|e| StoreError::Other(format!("rotating the spool: {e}")))?;
        let mut total = 0u64;
        loop {
            let next = {
                let st = self.lock();
                let closed = st.segments.len().saturating_sub(1);
                st.segments
                    .iter()
                    .take(closed)
                    .next()
                    .map(|s| (s.seq, s.path.clone(), s.replayed_to))
            };
            let Some((seq, path, from)) = next else { break };
            let records = read_segment(&path)
                .map_err(|e| StoreError::Other(format!("reading {}: {e}", path.display())))?
                .records;
            for chunk in records
                .iter()
                .filter(|(_, end)| *end > from)
                .collect::<Vec<_>>()
                .chunks(max_batch.max(1))
            {
                write_merged(store, chunk.iter().map(|(r, _)| r)).await?;
                let end = chunk.last().map_or(from, |(_, end)| *end);
                let mut st = self.lock();
                if let Some(seg) = st.segments.iter_mut().find(|s| s.seq == seq) {
                    seg.replayed_to = end;
                    seg.events = seg.events.saturating_sub(chunk.len() as u64);
                }
                drop(st);
                total += chunk.len() as u64;
                metrics::counter!(m::SPOOL_REPLAYED).increment(chunk.len() as u64);
                self.publish(&self.stats());
            }
            std::fs::remove_file(&path)
                .map_err(|e| StoreError::Other(format!("removing {}: {e}", path.display())))?;
            let _ = sync_dir(&self.dir);
            self.lock().segments.retain(|s| s.seq != seq);
            let stats = self.stats();
            self.publish(&stats);
        }
        let stats = self.stats();
        let mut st = self.lock();
        if st.active && stats.events == 0 {
            st.active = false;
            tracing::info!(
                replayed = total,
                "spool drained: every spooled event is in the database"
            );
        }
        Ok(total)
    }
}

/// Writes rows through the deduplicating insert, merging repeats within the chunk.
async fn write_merged<'a>(
    store: &Store,
    rows: impl Iterator<Item = &'a EventRow>,
) -> Result<(), StoreError> {
    let (batch, _) = merge(rows);
    store.write_batch(&batch, &[]).await.map(|_| ())
}

#[cfg(test)]
mod tests {
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
                    received_at: 1_700_000_000_000 + i as i64,
                };
                let body = format!(
                    r#"{{"CallId":"c{i}","UserId":"u{i}","Role":"Callee","CallResult":"Weird_New","MediaType":"Video","CallType":"MultiCall","TotalNum":3,"EventTime":1704856890,"AcceptTs":1704856876,"Extra":"é\u00e9"}}"#
                );
                parse_delivery(Kind::Status, false, &ctx, body.as_bytes()).unwrap_or_default()
            })
            .collect()
    }

    fn open(dir: &Path) -> Arc<Spool> {
        Arc::new(Spool::open(dir, 1 << 30).unwrap_or_else(|e| panic!("{e:#}")))
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[tokio::test]
    async fn records_round_trip_every_field() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path());
        let original = rows(3);
        let refs: Vec<&EventRow> = original.iter().collect();
        spool.append(&refs).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spool.stats().events, 3);
        assert_eq!(spool.stats().oldest_received_at, Some(1_700_000_000_000));
        drop(spool);
        let seg = segments(dir.path())
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
        let read = read_segment(&seg.unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        let back: Vec<EventRow> = read.records.into_iter().map(|(r, _)| r).collect();
        assert_eq!(back, original);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path());
        let original = rows(5);
        let refs: Vec<&EventRow> = original.iter().collect();
        spool.append(&refs).await.unwrap_or_else(|e| panic!("{e}"));
        drop(spool);
        let seg = segments(dir.path()).pop().unwrap_or_default();
        let good_len = std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0);
        // A crash in the middle of the next append: a header and half a record.
        let torn = encode(&refs[..1]).unwrap_or_default();
        let mut f = OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(&torn[..torn.len() / 2])
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);

        let spool = open(dir.path());
        assert_eq!(spool.stats().events, 5);
        assert_eq!(
            std::fs::metadata(&seg).map(|m| m.len()).ok(),
            Some(good_len),
            "the torn record is cut off"
        );
    }

    #[tokio::test]
    async fn a_corrupted_record_ends_the_valid_part() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path());
        let original = rows(4);
        let refs: Vec<&EventRow> = original.iter().collect();
        spool
            .append(&refs[..2])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        spool
            .append(&refs[2..])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(spool);
        let seg = segments(dir.path()).pop().unwrap_or_default();
        let mut data = std::fs::read(&seg).unwrap_or_default();
        let last = data.len() - 3;
        data[last] ^= 0xff; // a flipped bit in the last record's body
        std::fs::write(&seg, &data).unwrap_or_else(|e| panic!("{e}"));
        let spool = open(dir.path());
        assert_eq!(
            spool.stats().events,
            3,
            "the record failing its checksum is dropped, the rest kept"
        );
    }

    #[tokio::test]
    async fn the_size_cap_refuses_whole_batches() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = Arc::new(Spool::open(dir.path(), 1500).unwrap_or_else(|e| panic!("{e:#}")));
        let original = rows(10);
        let refs: Vec<&EventRow> = original.iter().collect();
        spool
            .append(&refs[..2])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let err = spool.append(&refs[2..]).await.err();
        assert!(matches!(err, Some(SpoolError::Full { .. })), "{err:?}");
        assert_eq!(
            spool.stats().events,
            2,
            "nothing of a refused batch is written"
        );
        drop(spool);
        assert_eq!(open(dir.path()).stats().events, 2);
    }
}
