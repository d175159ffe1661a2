//! The table of failed batches.

use graph::StoreError;

use super::runtime::pg;
use super::schema::prefix_lock;
use super::statements::Tables;

pub(crate) fn failed_table(tables: &Tables) -> String {
    tables.own.failed_batches.clone()
}

/// Creates the failed-batch table if it is missing, holding the prefix's
/// lock (see [`lock_prefix`]) so that workers recording their first
/// failures at once do not collide; the statements of one simple query run
/// in one transaction, which the lock lasts for.
pub(super) async fn create_failed_table(
    conn: &deadpool_postgres::Object,
    tables: &Tables,
) -> Result<(), StoreError> {
    conn.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({}); \
         CREATE TABLE IF NOT EXISTS {} (input_time BIGINT PRIMARY KEY, batch BIGINT NOT NULL, \
         changes BYTEA NOT NULL, error TEXT NOT NULL, committed TEXT NOT NULL)",
        prefix_lock(&tables.prefix),
        failed_table(tables)
    ))
    .await
    .map_err(pg("creating the failed-batch table"))
}
