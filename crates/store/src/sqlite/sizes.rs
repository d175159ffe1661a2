//! How many rows each state holds: one `count(*)` per table.

use graph::{Read, StateSpec, StoreError};

use super::{Sqlite, backend};

impl Sqlite {
    /// [`StateStore::state_rows`](graph::StateStore::state_rows): the
    /// store's own tables are counted by SQLite, any other state (one read
    /// from another graph) by reading its rows.
    pub(super) fn count_state_rows(&mut self, spec: &StateSpec) -> Result<u64, StoreError> {
        let own = self
            .specs
            .iter()
            .position(|s| s.path() == spec.path() && s.shape() == spec.shape());
        let Some(i) = own else {
            let mut sink = spec.codec().any_rows_sink();
            graph::StateStore::read_committed(self, spec, &Read::All, &mut *sink)?;
            return Ok(spec.codec().sink_len(&*sink) as u64);
        };
        let name = &self.schemas[i].name;
        let rows: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {name}"), [], |r| r.get(0))
            .map_err(backend(format!("counting the rows of `{name}`")))?;
        Ok(u64::try_from(rows).unwrap_or(0))
    }
}
