//! One process owns a spool directory. Two callhook processes on one directory (two
//! replicas given one volume, a rolling update that mounts it twice) would share one
//! journal identity and its chunk bookkeeping: chunks skipped, stranded or counted twice.
//! So the first process takes an exclusive lock on `<spool dir>/journal.lock` (`flock`,
//! released by the kernel however the process ends) and writes who it is into the file;
//! a second one is refused at once, with a message that names the directory and the
//! holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

/// The lock file's name in the spool directory.
pub const FILE_NAME: &str = "journal.lock";

/// The held lock: released when dropped (or when the process ends).
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

impl SpoolLock {
    /// Takes the spool directory's lock, or says who holds it.
    pub fn take(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("opening the spool lock {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.split_whitespace().collect::<Vec<_>>().join(" ");
                anyhow::bail!(
                    "the spool directory {} is in use by another callhook process ({}); \
                     each process needs a spool directory of its own (--spool-dir, \
                     CALLHOOK_SPOOL_DIR): give every replica its own volume",
                    dir.display(),
                    if holder.is_empty() {
                        "it has not said who it is yet".to_owned()
                    } else {
                        holder
                    }
                );
            }
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("locking the spool directory {}: {e}", dir.display())
            }
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let me = format!(
            "pid {} on host {} since {}\n",
            std::process::id(),
            host.trim(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()));
        if let Err(e) = written {
            // The lock is what counts; the note only helps the next reader of the message.
            tracing::debug!(error = %e, "could not note this process in the spool lock");
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_first_ones_name() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = SpoolLock::take(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
        let second = SpoolLock::take(dir.path()).err().map(|e| format!("{e:#}"));
        let message = second.unwrap_or_else(|| panic!("the second is refused"));
        assert!(
            message.contains(&format!("pid {} on host", std::process::id()))
                && message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        drop(first);
        assert!(SpoolLock::take(dir.path()).is_ok(), "free once dropped");
    }
}
