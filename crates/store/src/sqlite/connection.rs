//! Opening a SQLite file, and waiting out a lock another connection holds.

use std::path::Path;
use std::time::Duration;

use graph::StoreError;
use rusqlite::Connection;

use super::encode::backend;

/// How long a writer waits for another connection's write lock before its
/// statement fails with `SQLITE_BUSY`.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The pause before try `count + 1` for a lock held by another connection:
/// 50 µs, doubling up to 500 µs. (SQLite's own `busy_timeout` handler
/// sleeps 1, 2, 5, 10, ... up to 100 ms between tries, so a lock freed
/// just after a try sits unused that long; writers here hold it for a few
/// milliseconds at a time, as each of several workers commits its tables.)
pub(super) fn lock_pause(count: u32) -> Duration {
    Duration::from_micros(50 << count.min(4)).min(Duration::from_micros(500))
}

/// The pauses before try `count + 1`: 50 + 100 + 200 + 400 µs, then 500 µs
/// each.
pub(super) fn paused_before(count: u32) -> Duration {
    (0..count.min(4)).map(lock_pause).sum::<Duration>() + lock_pause(4) * count.saturating_sub(4)
}

/// SQLite's busy handler (`count`: the tries so far for this lock): pauses
/// ([`lock_pause`]) and tries again, until the pauses add up to
/// [`LOCK_WAIT`].
pub(super) fn on_busy(count: i32) -> bool {
    let count = u32::try_from(count).unwrap_or(0);
    if paused_before(count) >= LOCK_WAIT {
        return false;
    }
    std::thread::sleep(lock_pause(count));
    true
}

/// The page size of a new file (an existing one keeps its own): 8 KiB.
///
/// A batch of an ingest writes rows all over its tables, so its commit logs
/// every page it touched, whole. Larger pages mean fewer of them while the
/// tables are small, but once a table has more pages than a batch has rows,
/// each row touches its own page and a larger page is only more bytes to
/// log. Serial meter-reads ingest (`meter-ingest`, reads/s):
///
/// | page size | 100k reads (3 runs) | 1M reads |
/// |---|---|---|
/// | 4 KiB | 31.7k-37.2k | 22.5k, 25.3k |
/// | 8 KiB | 38.1k-40.4k | 22.5k-23.3k (3 runs) |
/// | 16 KiB | 39.8k-46.8k | 18.9k-21.6k (4 runs) |
///
/// 8 KiB is close to the best at both sizes.
pub const PAGE_SIZE: u32 = 8192;

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let mut conn =
        Connection::open(path).map_err(backend(format!("opening {}", path.display())))?;
    conn.busy_handler(Some(on_busy))
        .map_err(backend("setting the busy handler"))?;
    conn.set_prepared_statement_cache_capacity(512);
    // The page size applies to a new file only (see `PAGE_SIZE`), so it
    // goes before the switch to WAL, which writes the file's first page.
    conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))
        .and_then(|()| retry_busy(|| conn.execute_batch("PRAGMA journal_mode = WAL;")))
        .and_then(|()| {
            conn.execute_batch(
                "PRAGMA synchronous = NORMAL;
                 PRAGMA cache_size = -65536;
                 PRAGMA temp_store = MEMORY;",
            )
        })
        .map_err(backend(format!("configuring {}", path.display())))?;
    Ok(conn)
}

/// Runs `f` again while it fails with `SQLITE_BUSY`, pausing as
/// [`on_busy`] does, for the statements SQLite fails that way without
/// calling the busy handler: switching a new file to WAL while another
/// connection is switching or creating it.
pub(super) fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let mut count = 0;
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && on_busy(count) =>
            {
                count = count.saturating_add(1);
            }
            other => return other,
        }
    }
}

/// The in-process wake-up key of a SQLite file: its canonical path.
pub(super) fn notifier_key(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{LOCK_WAIT, on_busy, paused_before};

    #[test]
    fn lock_pauses_start_short_and_add_up_to_the_lock_wait() {
        let us = |n| Duration::from_micros(n);
        assert_eq!(paused_before(0), us(0));
        assert_eq!(paused_before(1), us(50));
        assert_eq!(paused_before(4), us(750));
        assert_eq!(paused_before(6), us(1750));
        // 60 s of pauses: 750 µs, then 500 µs a try.
        let last = 4 + ((LOCK_WAIT - us(750)).as_micros() as u32).div_ceil(500);
        assert!(paused_before(last) >= LOCK_WAIT);
        assert!(paused_before(last - 1) < LOCK_WAIT);
        assert!(
            !on_busy(last as i32),
            "gives up once the pauses reach the wait"
        );
        assert!(on_busy(0), "tries again at first");
    }
}
