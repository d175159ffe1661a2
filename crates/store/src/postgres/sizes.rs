//! How many rows each state holds: one `count(*)` per table.

use std::sync::Arc;

use graph::{Read, StateSpec, StoreError};

use super::{Postgres, block_on, pg};

impl Postgres {
    /// [`StateStore::state_rows`](graph::StateStore::state_rows): the
    /// store's own tables are counted by Postgres, any other state (one
    /// read from another graph) by reading its rows.
    pub(super) fn count_state_rows(&mut self, spec: &StateSpec) -> Result<u64, StoreError> {
        let tables = Arc::clone(&self.tables);
        let own = tables
            .specs
            .iter()
            .position(|s| s.path() == spec.path() && s.shape() == spec.shape());
        let Some(i) = own else {
            let mut sink = spec.codec().any_rows_sink();
            graph::StateStore::read_committed(self, spec, &Read::All, &mut *sink)?;
            return Ok(spec.codec().sink_len(&*sink) as u64);
        };
        let name = &tables.schemas[i].name;
        let rows: i64 = block_on(async {
            let conn = self.client().await?;
            conn.query_one(&format!("SELECT count(*) FROM {name}"), &[])
                .await
                .map_err(pg(format!("counting the rows of `{name}`")))
                .map(|row| row.get(0))
        })??;
        Ok(u64::try_from(rows).unwrap_or(0))
    }
}
