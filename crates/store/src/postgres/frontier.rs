//! The frontier: each table's last applied time, read, locked and moved on.

use std::collections::HashMap;

use graph::StoreError;
use tokio_postgres::{GenericClient, Statement};

use super::notify::channel;
use super::runtime::{Conn, pg};
use super::schema::plan_of;
use super::statements::Tables;
use crate::sql::{self};

/// The times of the tables `names`, in order, in one query.
pub(crate) async fn times_of<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
) -> Result<Vec<i64>, StoreError> {
    let stmt = times_statement(conn, tables).await?;
    times_with(conn, &stmt, tables, names).await
}

/// [`times_of`], locking the tables' rows until the transaction ends.
pub(crate) async fn lock_times<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
) -> Result<Vec<i64>, StoreError> {
    let stmt = conn
        .prepare(&tables.lock_times_sql)
        .await
        .map_err(pg(format!("locking `{}`", tables.last_update())))?;
    times_with(conn, &stmt, tables, names).await
}

/// The statement of [`times_of`], prepared (once per connection).
pub(super) async fn times_statement<C: Conn>(
    conn: &C,
    tables: &Tables,
) -> Result<Statement, StoreError> {
    conn.prepare(&tables.times_sql)
        .await
        .map_err(pg(format!("reading `{}`", tables.last_update())))
}

/// [`times_of`] with its statement prepared: the query goes out when the
/// future is first polled.
pub(super) async fn times_with<C: Conn>(
    conn: &C,
    stmt: &Statement,
    tables: &Tables,
    names: &[String],
) -> Result<Vec<i64>, StoreError> {
    let last_update = tables.last_update();
    let rows = conn
        .client()
        .query(stmt, &[&names])
        .await
        .map_err(pg(format!("reading `{last_update}`")))?;
    let mut found: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for r in rows {
        let table: String = r
            .try_get(0)
            .map_err(pg(format!("reading `{last_update}`")))?;
        let t = r
            .try_get(1)
            .map_err(|e| sql::bad_time(&last_update, &table, e))?;
        found.insert(table, t);
    }
    let generation = found.get(&tables.query()).copied().unwrap_or(0);
    if generation != tables.generation() {
        return Err(query_changed(conn, tables).await);
    }
    names
        .iter()
        .map(|n| {
            found
                .get(n)
                .copied()
                .ok_or_else(|| sql::unknown_time(&last_update, n))
        })
        .collect()
}

/// The table furthest behind among `names`, and its time, if it is
/// before `frontier`.
pub(super) async fn behind<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
    frontier: i64,
) -> Result<Option<(String, i64)>, StoreError> {
    let times = times_of(conn, tables, names).await?;
    Ok(names
        .iter()
        .zip(times)
        .min_by_key(|(_, t)| *t)
        .filter(|(_, t)| *t < frontier)
        .map(|(n, t)| (n.clone(), t)))
}

pub(crate) async fn set_last_update<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
    t: i64,
) -> Result<(), StoreError> {
    let stmt = conn
        .prepare(&tables.last_update_sql)
        .await
        .map_err(pg("recording last_update"))?;
    let channel = channel(&tables.prefix);
    conn.client()
        .execute(&stmt, &[&names, &t, &channel])
        .await
        .map_err(pg("recording last_update"))?;
    Ok(())
}

/// [`set_last_update`] of table `name` if it is already at `frontier` (one
/// statement: the frontier check and the move in time together); `false`,
/// changing nothing, if it is behind. (A writer still in the middle of
/// moving it holds its row: the statement waits for that writer's commit
/// and then sees its time.)
pub(super) async fn bump_if_at<C: Conn>(
    conn: &C,
    tables: &Tables,
    name: &String,
    t: i64,
    frontier: i64,
) -> Result<bool, StoreError> {
    let names = std::slice::from_ref(name);
    let stmt = conn
        .prepare(&tables.bump_if_at_sql)
        .await
        .map_err(pg("recording last_update"))?;
    let channel = channel(&tables.prefix);
    let generation = tables.generation();
    let row = conn
        .client()
        .query_one(&stmt, &[&names, &t, &channel, &frontier, &generation])
        .await
        .map_err(pg("recording last_update"))?;
    let moved: i64 = row.try_get(0).map_err(pg("recording last_update"))?;
    Ok(moved == 1)
}

/// [`set_last_update`] if the store's query generation is still the one
/// this handle opened (checked under its row's lock); `QueryChanged`,
/// changing nothing, if a migration moved it on.
pub(super) async fn set_last_update_guarded<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
    t: i64,
) -> Result<(), StoreError> {
    let stmt = conn
        .prepare(&tables.guarded_last_update_sql)
        .await
        .map_err(pg("recording last_update"))?;
    let channel = channel(&tables.prefix);
    let generation = tables.generation();
    let row = conn
        .client()
        .query_one(&stmt, &[&names, &t, &channel, &generation])
        .await
        .map_err(pg("recording last_update"))?;
    let current: bool = row.try_get(0).map_err(pg("recording last_update"))?;
    if current {
        return Ok(());
    }
    Err(query_changed(conn, tables).await)
}

/// The `QueryChanged` error of a handle whose query a migration replaced,
/// with the plan from its query to the store's.
pub(super) async fn query_changed<C: Conn>(conn: &C, tables: &Tables) -> StoreError {
    match plan_of(conn.client(), tables).await {
        Ok(plan) => StoreError::QueryChanged {
            plan: Box::new(plan),
        },
        Err(e) => e,
    }
}
