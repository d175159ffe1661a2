//! Claims on the times a [`PgSequence`](crate::PgSequence) hands out, and
//! the release of a time nobody will ever commit.
//!
//! Taking a time from the sequence records a claim in the same statement:
//! the time, the session that took it (backend pid and start, which
//! together name one session even when pids are reused), the batch the
//! caller said it is for, and when. That session is a pooled connection of
//! the taking process, so it ends when the process does.
//!
//! A frontier wait stuck past a grace period looks at the time just after
//! the last one every table has passed. If its claimant's session is gone,
//! or the time was taken from the sequence and never claimed (the statement
//! that took it failed, or the server skipped it restarting after a crash),
//! nobody will ever commit it: the waiter marks it failed as
//! `record_failure` would, in one transaction that only one waiter can run
//! for a time, and the wait goes on. Its failed-batch record has no changes
//! (they died with their process) and names the batch its claim held, so
//! that the user can feed that batch again.

use std::time::{Duration, Instant};

use graph::StoreError;
use tokio_postgres::{GenericClient, Row};

use super::frontier::query_changed;
use super::writes::QUERY_CHANGED;
use super::{Conn, Tables, failed_table, pg, set_last_update};

/// The longest a waiter waits before it looks for an abandoned time, and
/// then the pause between two looks (so that a wait costs nothing extra
/// until it has been stuck that long).
const GRACE: Duration = Duration::from_secs(1);

/// The sequence of the tables with `prefix`.
pub(crate) fn sequence(prefix: &str) -> String {
    crate::sql::OwnNames::name(prefix, "time")
}

/// The claims table of the tables with `prefix`.
pub(crate) fn claims_table(prefix: &str) -> String {
    crate::sql::OwnNames::name(prefix, "time_claims")
}

/// Creates the claims table: one row per time taken from the sequence and
/// not yet passed by every table. `pid` is `NULL` for a time a waiter
/// released without a claim (the row then refuses a late claim).
pub(crate) fn create_claims_sql(prefix: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (t BIGINT PRIMARY KEY, pid INTEGER, \
         backend_start TIMESTAMPTZ, batch BIGINT, taken_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        claims_table(prefix)
    )
}

/// Takes the next time and claims it for batch `$1` in one statement (so a
/// time is never claimed by anyone but its taker); every 64th time also
/// forgets the claims of times every table of `$2` has passed. A time a
/// waiter already released refuses the claim (a primary key violation).
pub(crate) fn take_sql(tables: &Tables) -> String {
    let (seq, claims) = (sequence(&tables.prefix), claims_table(&tables.prefix));
    let last_update = &tables.own.last_update;
    format!(
        "WITH taken AS (SELECT nextval('{seq}') AS t), \
         claimed AS (INSERT INTO {claims} (t, pid, backend_start, batch) \
           SELECT t, pg_backend_pid(), (SELECT backend_start FROM pg_stat_get_activity(pg_backend_pid())), $1 \
           FROM taken RETURNING t), \
         pruned AS (DELETE FROM {claims} WHERE (SELECT t FROM taken) % 64 = 0 \
           AND t <= (SELECT min(l.t) FROM {last_update} l WHERE l.table_name = ANY($2)) \
           AND (pid IS NOT NULL OR taken_at < now() - interval '1 hour')) \
         SELECT t FROM claimed"
    )
}

/// What a stuck waiter found about the time after the last one every table
/// has passed.
struct Probe {
    /// That time.
    time: i64,
    /// Its claim: the batch it named and the claimant's backend pid
    /// (`None`: claimed by a waiter that released it).
    claim: Option<(Option<i64>, Option<i32>)>,
    /// The claimant's session has ended.
    gone: bool,
    /// The last time the sequence handed out (`None`: none yet).
    last_taken: Option<i64>,
    /// The sequence's first time.
    first: i64,
}

impl Probe {
    fn of(row: &Row) -> Result<Option<Probe>, tokio_postgres::Error> {
        let Some(time) = row.try_get::<_, Option<i64>>(0)? else {
            return Ok(None);
        };
        let claimed: bool = row.try_get(1)?;
        let claim = if claimed {
            Some((row.try_get(2)?, row.try_get(3)?))
        } else {
            None
        };
        Ok(Some(Probe {
            time,
            claim,
            gone: row.try_get(4)?,
            last_taken: row.try_get(5)?,
            first: row.try_get::<_, Option<i64>>(6)?.unwrap_or(i64::MAX),
        }))
    }

    /// Handed out by the sequence.
    fn taken(&self) -> bool {
        self.first <= self.time && self.last_taken.is_some_and(|l| self.time <= l)
    }
}

/// Looks at the time after the last one every table of `$1` has passed: its
/// claim, whether the claimant's session still exists (a session of
/// another role whose start the server hides counts as alive), and the
/// sequence's range.
fn probe_sql(tables: &Tables) -> String {
    let (seq, claims) = (sequence(&tables.prefix), claims_table(&tables.prefix));
    let last_update = &tables.own.last_update;
    format!(
        "WITH m AS (SELECT min(t) + 1 AS d FROM {last_update} WHERE table_name = ANY($1)) \
         SELECT m.d, c.t IS NOT NULL, c.batch, c.pid, \
           c.pid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(c.pid) a \
             WHERE a.backend_start IS NULL OR c.backend_start IS NULL OR a.backend_start = c.backend_start), \
           (SELECT CASE WHEN is_called THEN last_value END FROM {seq}), \
           (SELECT seqstart FROM pg_catalog.pg_sequence WHERE seqrelid = '{seq}'::regclass) \
         FROM m LEFT JOIN {claims} c ON c.t = m.d"
    )
}

/// Why a time is released.
enum Abandoned {
    /// Its claimant's session ended.
    Dead {
        batch: Option<i64>,
        pid: Option<i32>,
    },
    /// Taken from the sequence, never claimed.
    Unclaimed,
}

/// A frontier wait's watch for abandoned times: when it next looks, and
/// an unclaimed time it saw taken.
pub(crate) struct Watch {
    grace: Duration,
    next_look: Duration,
    /// The claims table exists (`None`: not known yet).
    claims: Option<bool>,
    /// When the sequence was seen to have handed out every time up to this
    /// one: a time up to it still unclaimed a grace period later was never
    /// going to be.
    taken: Option<(Instant, i64)>,
}

impl Watch {
    /// A watch for a wait of at most `max_wait`.
    pub(crate) fn new(max_wait: Duration) -> Watch {
        let grace = GRACE.min(max_wait / 4);
        Watch {
            grace,
            next_look: grace,
            claims: None,
            taken: None,
        }
    }

    /// Whether a wait that has lasted `waited` should look now.
    pub(crate) fn due(&self, waited: Duration) -> bool {
        waited >= self.next_look && self.claims != Some(false)
    }

    /// Looks for an abandoned time at or before `frontier` and releases
    /// it; `true` if it released one (the wait should look again at once).
    ///
    /// # Errors
    /// A database failure (a lost race for the release is not one).
    pub(crate) async fn release<C: Conn>(
        &mut self,
        conn: &C,
        tables: &Tables,
        frontier: i64,
        waited: Duration,
    ) -> Result<bool, StoreError> {
        self.next_look = waited + self.grace;
        let claims = claims_table(&tables.prefix);
        if self.claims.is_none() {
            // Only the tables of a sequence have claims: without, this wait
            // does not look again.
            let row = conn
                .client()
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&claims])
                .await
                .map_err(pg("looking for the time claims"))?;
            self.claims = Some(row.try_get(0).map_err(pg("looking for the time claims"))?);
        }
        if self.claims != Some(true) {
            return Ok(false);
        }
        let Some(probe) = probe(conn, tables).await? else {
            return Ok(false);
        };
        if probe.time > frontier {
            return Ok(false);
        }
        let abandoned = match probe.claim {
            Some((batch, pid)) if probe.gone => Abandoned::Dead { batch, pid },
            None if probe.taken() => match self.taken {
                Some((seen, upto)) if probe.time <= upto && seen.elapsed() >= self.grace => {
                    Abandoned::Unclaimed
                }
                Some((_, upto)) if probe.time <= upto => return Ok(false),
                _ => {
                    self.taken = probe.last_taken.map(|l| (Instant::now(), l));
                    return Ok(false);
                }
            },
            _ => return Ok(false),
        };
        let released = mark(conn, tables, &probe, &abandoned).await?;
        if released {
            self.next_look = waited;
        }
        Ok(released)
    }
}

async fn probe<C: Conn>(conn: &C, tables: &Tables) -> Result<Option<Probe>, StoreError> {
    let context = "looking for an abandoned time";
    if conn.nested() {
        // Session states are read once per transaction unless this clears them.
        conn.client()
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .map_err(pg(context))?;
    }
    let stmt = conn
        .prepare(&probe_sql(tables))
        .await
        .map_err(pg(context))?;
    let row = conn
        .client()
        .query_one(&stmt, &[&tables.names()])
        .await
        .map_err(pg(context))?;
    Probe::of(&row).map_err(pg(context))
}

/// Releases `found.time` in a transaction of its own (a savepoint inside
/// the caller's): `false` if another waiter is at it, or a look under the
/// lock finds it no longer abandoned.
async fn mark<C: Conn>(
    conn: &C,
    tables: &Tables,
    found: &Probe,
    why: &Abandoned,
) -> Result<bool, StoreError> {
    let (begin, commit, rollback) = if conn.nested() {
        (
            "SAVEPOINT stepping_release",
            "RELEASE SAVEPOINT stepping_release",
            "ROLLBACK TO SAVEPOINT stepping_release; RELEASE SAVEPOINT stepping_release",
        )
    } else {
        ("BEGIN", "COMMIT", "ROLLBACK")
    };
    let context = format!("releasing abandoned time {}", found.time);
    conn.client()
        .batch_execute(begin)
        .await
        .map_err(pg(context.clone()))?;
    let marked = mark_in(conn, tables, found, why).await;
    let end = if matches!(marked, Ok(true)) {
        commit
    } else {
        rollback
    };
    let ended = conn.client().batch_execute(end).await;
    match marked {
        Ok(m) => ended.map(|()| m).map_err(pg(context)),
        // Two waiters that lock rows in different orders: the server ends
        // one, which looks again later.
        Err(e) if e.to_string().contains("(40P01)") => Ok(false),
        Err(e) if e.to_string().contains(QUERY_CHANGED) => Err(query_changed(conn, tables).await),
        Err(e) => Err(e),
    }
}

async fn mark_in<C: Conn>(
    conn: &C,
    tables: &Tables,
    found: &Probe,
    why: &Abandoned,
) -> Result<bool, StoreError> {
    let d = found.time;
    let context = || format!("releasing abandoned time {d}");
    let claims = claims_table(&tables.prefix);
    let client = conn.client();
    // One waiter at a time per time; the others leave it to that one
    // rather than wait inside a statement.
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, $2))",
            &[&claims, &d],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg(context()))?;
    if !locked {
        return Ok(false);
    }
    // Under the lock, the same verdict: nothing released it meanwhile.
    let Some(again) = probe(conn, tables).await? else {
        return Ok(false);
    };
    let same = again.time == d
        && match why {
            Abandoned::Dead { pid, .. } => {
                again.gone && matches!(again.claim, Some((_, p)) if p == *pid)
            }
            Abandoned::Unclaimed => again.claim.is_none() && again.taken(),
        };
    if !same {
        return Ok(false);
    }
    // The query's generation, locked first as a migration and a flush lock
    // it: a migration since this waiter read its times replaced the tables'
    // query, and what became of the time is no longer this handle's to say
    // (the statement fails with `QUERY_CHANGED`); one under way waits for
    // this release.
    let generation = tables.generation();
    client
        .query(&tables.generation_guard_sql, &[&generation])
        .await
        .map_err(pg(context()))?;
    if let Abandoned::Unclaimed = why {
        // The row refuses a claim that comes after all; an insert of one
        // still in flight makes this one wait for it and then do nothing.
        let inserted = client
            .execute(
                &format!("INSERT INTO {claims} (t) VALUES ($1) ON CONFLICT (t) DO NOTHING"),
                &[&d],
            )
            .await
            .map_err(pg(context()))?;
        if inserted == 0 {
            return Ok(false);
        }
    }
    let last_update = &tables.own.last_update;
    let names = tables.names();
    // Only the rows behind `d` are locked: no writer can move them (each
    // waits for `d`), so this never waits on one for long.
    let behind: Vec<String> = client
        .query(
            &format!(
                "SELECT table_name FROM {last_update} WHERE table_name = ANY($1) AND t < $2 \
                 ORDER BY table_name FOR UPDATE"
            ),
            &[&names, &d],
        )
        .await
        .map_err(pg(context()))?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(pg(context()))?;
    if behind.is_empty() {
        return Ok(false);
    }
    // Tables its owner committed before it died (pipelined iterations).
    let ahead: Vec<String> = client
        .query(
            &format!("SELECT table_name FROM {last_update} WHERE table_name = ANY($1) AND t >= $2"),
            &[&names, &d],
        )
        .await
        .map_err(pg(context()))?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(pg(context()))?;
    let committed: Vec<String> = tables
        .schemas
        .iter()
        .filter(|s| ahead.contains(&s.name))
        .map(|s| s.path.clone())
        .collect();
    set_last_update(conn, tables, &behind, d).await?;
    let seq = sequence(&tables.prefix);
    let (batch, error) = match why {
        Abandoned::Dead { batch, pid } => {
            let session = pid.map_or_else(String::new, |p| format!(" (backend pid {p})"));
            let error = match batch {
                Some(b) => format!(
                    "the process that took time {d} from `{seq}` for batch {b} ended before \
                     committing it: its session{session} is gone; the batch's changes are \
                     unknown, feed batch {b} again"
                ),
                None => format!(
                    "the process that took time {d} from `{seq}` (for no batch number) ended \
                     before committing it: its session{session} is gone; what it held is unknown"
                ),
            };
            (batch.unwrap_or(-1), error)
        }
        Abandoned::Unclaimed => (
            -1,
            format!(
                "time {d} was taken from `{seq}` but never claimed (the statement that took it \
                 failed, or the server skipped it restarting): no batch is known to have held it"
            ),
        ),
    };
    client
        .execute(
            &format!(
                "INSERT INTO {} (input_time, batch, changes, error, committed) \
                 VALUES ($1, $2, ''::bytea, $3, $4) ON CONFLICT (input_time) DO NOTHING",
                failed_table(tables)
            ),
            &[&d, &batch, &error, &committed.join("\n")],
        )
        .await
        .map_err(pg(context()))?;
    Ok(true)
}
