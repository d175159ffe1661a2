//! Vacuuming the store's tables whose rows churn.
//!
//! A state whose rows are replaced as the data grows (a daily sum, the
//! cache of it) deletes as many rows as it inserts: a changed sum is a
//! removed row and a new one. Autovacuum looks at a database once a minute
//! (`autovacuum_naptime`) and throttles itself, so between two of its
//! passes such a table collects a minute of dead rows: in the meter-reads
//! bench at 1M reads, a 31,000-row cache had grown to 128 MB of heap and
//! 40 MB of index (16,000 pages, every write and read walking through
//! them), and the store's state to 427 bytes per read. So every
//! [`EVERY`] iterations a handle checks the server's counts of dead rows
//! of its tables, and vacuums those past [`dead_rows_past`] in the
//! background, on a connection of its pool, while its iterations go on.
//! `VACUUM` takes a lock that no read or write waits for, and
//! `SKIP_LOCKED` passes over a table another process is vacuuming.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::runtime::runtime;
use super::statements::Tables;
use crate::StoreStats;

/// Iterations of one handle between two checks.
pub(super) const EVERY: u64 = 32;

/// The condition on `pg_stat_user_tables` (`s`) for a table to vacuum:
/// more dead rows than a fifth of its live ones, and at least 1,000 (the
/// fraction is autovacuum's default; its threshold is 50).
fn dead_rows_past() -> &'static str {
    "s.n_dead_tup > 1000 + 0.2 * s.n_live_tup"
}

/// A handle's vacuum schedule.
#[derive(Debug, Default)]
pub(super) struct Vacuum {
    /// Off when the application vacuums (`OpenOptions::vacuum`).
    pub(super) off: bool,
    commits: AtomicU64,
    /// A check or vacuum is under way.
    running: Arc<AtomicBool>,
}

impl super::Postgres {
    /// After an iteration committed (see [`Vacuum::committed`]).
    pub(super) fn committed(&self) {
        self.vacuum.committed(&self.pool, &self.tables, &self.stats);
    }
}

impl Vacuum {
    pub(super) fn new(on: bool) -> Vacuum {
        Vacuum {
            off: !on,
            ..Vacuum::default()
        }
    }

    /// After an iteration committed: every [`EVERY`] of them, unless one is
    /// still under way, starts a check (and the vacuums it calls for) on
    /// the store's runtime. It goes on while the handle's calls drive the
    /// runtime, and the server does the vacuuming on its own process. A
    /// failure is counted in `stats.vacuum_failures`, never the
    /// iteration's.
    pub(super) fn committed(
        &self,
        pool: &super::PgPool,
        tables: &Arc<Tables>,
        stats: &Arc<std::sync::Mutex<StoreStats>>,
    ) {
        if self.off || !(self.commits.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(EVERY) {
            return;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = runtime() else {
            self.running.store(false, Ordering::Release);
            return;
        };
        let (pool, names, stats, running) = (
            pool.clone(),
            tables.names(),
            Arc::clone(stats),
            Arc::clone(&self.running),
        );
        rt.spawn(async move {
            let outcome = vacuum(&pool, &names).await;
            if let Ok(mut s) = stats.lock() {
                match outcome {
                    Ok(n) => s.tables_vacuumed += n,
                    Err(_) => s.vacuum_failures += 1,
                }
            }
            running.store(false, Ordering::Release);
        });
    }
}

/// Vacuums the tables among `names` with dead rows past the bound;
/// returns how many.
async fn vacuum(pool: &super::PgPool, names: &[String]) -> Result<u64, String> {
    let conn = pool.pool.get().await.map_err(|e| e.to_string())?;
    let rows = conn
        .query(
            &format!(
                "SELECT s.relname::text FROM unnest($1::text[]) AS n(name) \
                 JOIN pg_stat_user_tables s ON s.relid = to_regclass(n.name) \
                 WHERE {}",
                dead_rows_past()
            ),
            &[&names],
        )
        .await
        .map_err(|e| e.to_string())?;
    let due: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if due.is_empty() {
        return Ok(0);
    }
    // Table names are `[a-z0-9_]` (`sql::ident`).
    conn.batch_execute(&format!("VACUUM (SKIP_LOCKED) {}", due.join(", ")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(due.len() as u64)
}
