//! SQLite checkpoints on a thread of their own, so a writer does not wait
//! for the disk.
//!
//! In WAL mode a commit appends pages to the log and does not sync
//! (`synchronous = NORMAL`). A checkpoint copies the log back into the
//! database file and syncs both, and SQLite's automatic checkpoint runs it
//! on the thread that committed, after the commit, before the next
//! iteration can start. Measured on a serial meter-reads ingest, those
//! syncs were a third of the ingest's wall time: it ran at 37-40k reads/s,
//! and at 57-62k with `synchronous = OFF` (no syncs, which would risk the
//! file on power loss).
//!
//! Here a writer's commit hook wakes a [`SqliteCheckpointer`] thread, one
//! per file per process with a connection of its own, each time the log
//! has grown by [`BACKGROUND_LOG_BYTES`]. It runs `PASSIVE` checkpoints, which copy
//! what is committed without blocking readers or writers, and syncs, while
//! the writer goes on. The log only starts again from its beginning when a
//! write transaction begins with every frame copied, which under a writer
//! that never pauses the thread rarely catches; so once the log holds
//! [`CHECKPOINT_LOG_BYTES`], the committing writer checkpoints itself, as
//! SQLite's automatic checkpoint would, bounding the log. By then the
//! thread has copied and synced all but the last few commits, so that
//! checkpoint has little to do. The log file keeps its largest size for
//! re-use, so a busy file has a `-wal` of up to that size beside it.
//!
//! What it costs: the thread's syncs compete with the writer's own writes
//! for the disk. One-row iterations on a warm meter-reads store ran at a
//! p50 of 55-90 µs with or without the thread, but at a p99 of 200-330
//! µs against 125-210 µs, since the iterations that overlap a checkpoint
//! wait longer; waking the thread at every commit past the threshold,
//! rather than once per [`BACKGROUND_LOG_BYTES`] of growth, had made the
//! p50 slower too.
//!
//! Nothing here changes what a crash or power loss can lose: the
//! checkpoints are SQLite's own, run from another connection.

use std::collections::HashMap;
use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;

use graph::StoreError;
use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;

use super::encode::backend;

/// How far the log grows between two wake-ups of the checkpoint thread:
/// 16 MiB. (Every 1, 4, 16 and 32 MiB ran a serial ingest equally fast;
/// the fewer checkpoints, the fewer syncs, and the less often a hot page
/// is copied again.)
pub const BACKGROUND_LOG_BYTES: i64 = 16 << 20;

/// The log a writer lets grow before it checkpoints itself: 256 MiB. The
/// thread keeps nearly all of it copied, so this bounds the file more than
/// it costs; at 64 MiB a serial ingest ran about 8% slower.
pub const CHECKPOINT_LOG_BYTES: i64 = 256 << 20;

/// The checkpoint thread of one SQLite file in this process (see the
/// module docs): the [`Sqlite`](crate::Sqlite) store attaches its
/// connection to it, and so can any other connection that writes the file
/// a lot. The thread stops, and closes its connection, when the last
/// handle is dropped.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let mut conn = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
/// conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;").unwrap();
/// let checkpoints = stepping_store::SqliteCheckpointer::attach(&mut conn)?;
/// conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
/// drop(conn);
/// drop(checkpoints);
/// # Ok::<(), stepping_store::StoreError>(())
/// ```
pub struct SqliteCheckpointer {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SqliteCheckpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteCheckpointer({} checkpoints)", self.checkpoints())
    }
}

/// What a writer's commit hook holds: the thread's wake-up, and when to
/// use it.
struct Signal {
    state: Mutex<State>,
    wake: Condvar,
    /// The log's length in pages when a commit last woke the thread.
    woken_at: AtomicI64,
}

#[derive(Default)]
struct State {
    requested: bool,
    stop: bool,
    /// Checkpoints the thread has run on a log with pages in it.
    runs: u64,
}

impl SqliteCheckpointer {
    /// Hands the checkpoints of `conn` (a connection to a file in WAL
    /// mode) to its file's thread, started if no connection in this
    /// process has it, up to a log of [`CHECKPOINT_LOG_BYTES`], past which
    /// a commit on `conn` checkpoints itself. Replaces `conn`'s
    /// `wal_autocheckpoint` and `wal_hook`. Keep the handle as long as
    /// `conn`.
    ///
    /// # Errors
    /// `conn` is not a connection to a file, or SQLite fails to read its
    /// page size.
    pub fn attach(conn: &mut Connection) -> Result<Arc<SqliteCheckpointer>, StoreError> {
        let path = match conn.path() {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                return Err(StoreError::backend(
                    "starting checkpoints",
                    "the connection has no file",
                ));
            }
        };
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(backend(format!(
                "reading the page size of {}",
                path.display()
            )))?;
        let page_size = page_size.max(512);
        let limit = CHECKPOINT_LOG_BYTES / page_size;
        let checkpointer = SqliteCheckpointer::for_path(&path);
        let signal = Arc::clone(&checkpointer.signal);
        conn.wal_hook(Some(move |wal: &mut Wal, frames| {
            signal.on_commit(wal, frames, page_size, limit);
            Ok(())
        }))
        .map_err(backend(format!(
            "setting the commit hook of {}",
            path.display()
        )))?;
        Ok(checkpointer)
    }

    /// The thread of the file at `path`, started if none runs.
    fn for_path(path: &Path) -> Arc<SqliteCheckpointer> {
        static ALL: OnceLock<Mutex<HashMap<PathBuf, Weak<SqliteCheckpointer>>>> = OnceLock::new();
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut all = ALL.get_or_init(Default::default).lock();
        all.retain(|_, c| c.strong_count() > 0);
        if let Some(c) = all.get(&path).and_then(Weak::upgrade) {
            return c;
        }
        let signal = Arc::new(Signal {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            woken_at: AtomicI64::new(0),
        });
        let thread = {
            let signal = Arc::clone(&signal);
            let path = path.clone();
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || run(&path, &signal))
                .ok()
        };
        let c = Arc::new(SqliteCheckpointer { signal, thread });
        all.insert(path, Arc::downgrade(&c));
        c
    }

    /// How many checkpoints the thread has run on a log with pages in it
    /// (a checkpoint that found nothing to do, or could not see the log,
    /// does not count).
    pub fn checkpoints(&self) -> u64 {
        self.signal.state.lock().runs
    }
}

impl Signal {
    /// A writer's commit hook: `frames` is the log's length in pages after
    /// the commit, `limit` the pages at which the writer checkpoints
    /// itself. Wakes the thread each time the log has grown by
    /// [`BACKGROUND_LOG_BYTES`] since it last did (not at every commit
    /// past that size: under one-row iterations that was a checkpoint, and
    /// two syncs, per commit, and the writer's own writes queued behind
    /// them). Never fails: a checkpoint that cannot run now (another is
    /// running) is tried again later, and an error from the hook would
    /// make the commit, which has happened, report one.
    fn on_commit(&self, wal: &mut Wal, frames: c_int, page_size: i64, limit: i64) {
        let frames = i64::from(frames);
        if frames >= limit {
            let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
            return;
        }
        // Writers of one file share this; a race between two costs at most
        // one wake-up more or less, and the limit still bounds the log.
        let mut woken_at = self.woken_at.load(Ordering::Relaxed);
        if frames < woken_at {
            // The log has started again from its beginning.
            woken_at = 0;
            self.woken_at.store(0, Ordering::Relaxed);
        }
        if (frames - woken_at) * page_size >= BACKGROUND_LOG_BYTES {
            self.woken_at.store(frames, Ordering::Relaxed);
            let mut state = self.state.lock();
            if !state.requested {
                state.requested = true;
                self.wake.notify_one();
            }
        }
    }
}

impl Drop for SqliteCheckpointer {
    fn drop(&mut self) {
        self.signal.state.lock().stop = true;
        self.signal.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: a `PASSIVE` checkpoint each time a commit asks for one.
fn run(path: &Path, signal: &Signal) {
    // Without a connection there is no thread's work: writers still
    // checkpoint themselves at their limit.
    let Ok(conn) = Connection::open(path) else {
        return;
    };
    // A connection opens the file, and finds the log, only when it first
    // runs a statement; until then its checkpoints copy nothing and
    // report -1 frames.
    if conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .is_err()
    {
        return;
    }
    loop {
        {
            let mut state = signal.state.lock();
            while !state.requested && !state.stop {
                signal.wake.wait(&mut state);
            }
            if state.stop {
                return;
            }
            state.requested = false;
        }
        // Busy (another connection is checkpointing) or failed: the next
        // request tries again.
        if let Ok((log, _)) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE)
            && log > 0
        {
            signal.state.lock().runs += 1;
        }
    }
}
