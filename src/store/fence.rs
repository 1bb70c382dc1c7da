//! Fences: how a write whose outcome is unknown is settled later, exactly once.
//!
//! A write to PostgreSQL can pass its deadline, or lose its connection, while the
//! database holds it (a frozen server, a network black hole, a crash right after the
//! commit). It may still commit, minutes later. callhook journals such a batch anyway
//! (the sender must hear back within a second or two), so the journal's replay must be
//! able to tell whether the original write committed, or it would count the deliveries
//! twice.
//!
//! Every live write therefore carries a fence: a writer identity and a batch number that
//! grows with each write of that identity. In the same statement as its rows, the write
//! raises `ingest_fences.last_batch` for its identity to its batch number, and writes its
//! rows only if that raise succeeded. An identity whose write ended unknown is retired
//! and never used again, so its unknown batch is its last. The replay settles it in its
//! own transaction: if `last_batch` already reached the batch, the write committed and the
//! journaled copy is skipped; otherwise the replay raises `last_batch` itself, which turns
//! the original write, should it ever run, into a write of nothing. Row locks order the
//! two, so exactly one of them stores the rows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

/// One write: its writer identity and its batch number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    pub writer: [u8; 16],
    pub batch: i64,
}

impl Fence {
    /// 24 bytes: the identity, then the batch number (big-endian).
    pub fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(&self.writer);
        out[16..].copy_from_slice(&self.batch.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let writer: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        let batch: [u8; 8] = bytes.get(16..24)?.try_into().ok()?;
        (bytes.len() == 24).then_some(Self {
            writer,
            batch: i64::from_be_bytes(batch),
        })
    }
}

/// A fresh identifier, unique across processes and machines for all practical purposes:
/// SHA-256 over the time in nanoseconds, the process id, a per-process counter and the
/// host name.
pub fn unique_id() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        h.update(host.as_bytes());
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize()[..16]);
    id
}

/// The identities not in use by a write right now, each with its last batch number.
#[derive(Debug, Default)]
pub struct Fences {
    idle: Mutex<Vec<Fence>>,
}

impl Fences {
    /// The fence for the next write: an idle identity's next batch, or a new identity.
    pub fn next(&self) -> Fence {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(f) => Fence {
                batch: f.batch + 1,
                ..f
            },
            None => Fence {
                writer: unique_id(),
                batch: 1,
            },
        }
    }

    /// Returns an identity after a write whose outcome is known. (After an unknown one, the
    /// identity is simply not returned: it is retired.)
    pub fn release(&self, fence: Fence) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(fence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_round_trip_and_identities_advance() {
        let fences = Fences::default();
        let a = fences.next();
        let b = fences.next();
        assert_ne!(
            a.writer, b.writer,
            "concurrent writes get distinct identities"
        );
        assert_eq!((a.batch, b.batch), (1, 1));
        fences.release(a);
        let c = fences.next();
        assert_eq!((c.writer, c.batch), (a.writer, 2));
        // b is never released (its write ended unknown): it is never handed out again.
        fences.release(c);
        assert_eq!(fences.next().writer, a.writer);
        assert_eq!(Fence::from_bytes(&c.to_bytes()), Some(c));
        assert_eq!(Fence::from_bytes(&[0; 23]), None);
    }
}
