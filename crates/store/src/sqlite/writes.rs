//! Writing an iteration's rows, with what undoes them.

use std::collections::HashMap;

use graph::{EncodedRow, StateKind, StateSpec, StoreError};

use super::Sqlite;
use super::encode::{backend, bind_cell, bind_key, on};
use super::statements::TableSql;
use crate::sql::{self, OwnNames, SqlRead, TableSchema};

impl Sqlite {
    pub(super) fn write_rows(
        &self,
        spec: &StateSpec,
        schema: &TableSchema,
        sql: &TableSql,
        rows: &[EncodedRow],
    ) -> Result<(), StoreError> {
        let ctx = || on(schema, "writing");
        let mut upsert = self.conn.prepare_cached(&sql.upsert).map_err(ctx())?;
        let mut delete = self.conn.prepare_cached(&sql.delete).map_err(ctx())?;
        let mut cancel = self.conn.prepare_cached(&sql.cancel).map_err(ctx())?;
        let keyed = schema.kind == StateKind::Keyed;
        let nested = schema.nested();
        // A feed's rows are new every time (the time is part of them): a
        // removal never cancels a stored row.
        let appends = spec.is_feed();
        // Binds the primary key; returns the next parameter's number.
        let bind_pk =
            |st: &mut rusqlite::Statement<'_>, row: &EncodedRow| -> Result<usize, StoreError> {
                let mut i = 1;
                for k in &row.keys[schema.clustered.clone()] {
                    bind_key(st, i, schema, k)?;
                    i += 1;
                }
                st.raw_bind_parameter(i, row.identity).map_err(ctx())?;
                if nested {
                    st.raw_bind_parameter(i + 1, row.step).map_err(ctx())?;
                    return Ok(i + 2);
                }
                Ok(i + 1)
            };
        let mut statements = 0;
        for row in rows {
            statements += 1;
            if keyed && row.weight == 0 {
                bind_pk(&mut delete, row)?;
                delete.raw_execute().map_err(ctx())?;
                continue;
            }
            if let (false, Some(cancels)) = (
                keyed || appends || row.weight >= 0,
                row.weight.checked_neg(),
            ) {
                // Most removals cancel a stored row exactly: one statement.
                let i = bind_pk(&mut cancel, row)?;
                cancel
                    .raw_bind_parameter(i, row.data.as_slice())
                    .map_err(ctx())?;
                cancel.raw_bind_parameter(i + 1, cancels).map_err(ctx())?;
                if cancel.raw_execute().map_err(ctx())? == 1 {
                    continue;
                }
                statements += 1;
            }
            upsert.raw_bind_parameter(1, row.identity).map_err(ctx())?;
            let mut i = 2;
            if nested {
                upsert.raw_bind_parameter(i, row.step).map_err(ctx())?;
                i += 1;
            }
            upsert
                .raw_bind_parameter(i, row.data.as_slice())
                .map_err(ctx())?;
            i += 1;
            for k in &row.keys {
                bind_key(&mut upsert, i, schema, k)?;
                i += 1;
            }
            if !schema.values.is_empty() {
                for cell in crate::views::cells_of(spec, schema, row)?.iter() {
                    bind_cell(&mut upsert, i, schema, cell)?;
                    i += 1;
                }
            }
            upsert.raw_bind_parameter(i, row.weight).map_err(ctx())?;
            if upsert.raw_execute().map_err(ctx())? == 1 {
                continue;
            }
            // The stored row holds other data (other key columns, if
            // keyed), or the weights sum to zero or overflow.
            statements += 1;
            let mut stored = self.conn.prepare_cached(&sql.stored).map_err(ctx())?;
            bind_pk(&mut stored, row)?;
            let (data, c): (Vec<u8>, i64) = {
                let mut q = stored.raw_query();
                let r = q.next().map_err(ctx())?.ok_or_else(|| {
                    StoreError::backend(
                        format!("writing `{}`", schema.name),
                        format!("an upsert of identity {} changed no row", row.identity),
                    )
                })?;
                (
                    r.get(0).map_err(ctx())?,
                    // Only this store writes weights, always as integers.
                    r.get(1).map_err(ctx())?,
                )
            };
            if let Some(refused) = sql::refused_write(spec, schema, row, &data, c) {
                return Err(refused);
            }
            match c.checked_add(row.weight) {
                None => {
                    return Err(StoreError::WeightOverflow {
                        table: schema.name.clone(),
                        identity: row.identity.to_string(),
                    });
                }
                Some(0) => {
                    statements += 1;
                    bind_pk(&mut delete, row)?;
                    delete.raw_execute().map_err(ctx())?;
                }
                Some(sum) => {
                    return Err(StoreError::backend(
                        format!("writing `{}`", schema.name),
                        format!(
                            "an upsert of identity {} changed no row, though its weights sum to {sum}",
                            row.identity
                        ),
                    ));
                }
            }
        }
        self.count(|s| {
            s.rows_written += rows.len() as u64;
            s.statements += statements;
        });
        Ok(())
    }

    /// The table of what undoes each pipelined table write, kept until its
    /// iteration has reached every table (see [`StateStore::recover`]).
    pub(super) fn undo_table(&self) -> String {
        OwnNames::name(&self.prefix, "undo")
    }

    pub(super) fn create_undo_table(&self) -> Result<(), StoreError> {
        if !self.undo_ready.get() {
            self.conn
                .execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (t INTEGER NOT NULL, table_name TEXT NOT NULL, \
                     rows BLOB NOT NULL, PRIMARY KEY (t, table_name))",
                    self.undo_table()
                ))
                .map_err(backend("creating the undo table"))?;
            self.undo_ready.set(true);
        }
        Ok(())
    }

    /// Inside a pipelined flush of table `s` at time `t`: keeps what undoes
    /// writing `rows` (a keyed table's rows are read first, to be restored).
    pub(super) fn keep_undo(
        &self,
        s: usize,
        t: i64,
        rows: &[EncodedRow],
    ) -> Result<(), StoreError> {
        let schema = &self.schemas[s];
        let old: HashMap<i64, Vec<u8>> = if schema.kind == StateKind::Keyed {
            let ids = rows.iter().map(|r| (r.identity, r.keys.clone())).collect();
            self.run_read(schema, &self.sql[s], &SqlRead::ByIdentity { ids })?
                .into_iter()
                .map(|r| (r.identity, r.data))
                .collect()
        } else {
            HashMap::new()
        };
        let undo = sql::encode_undo(&sql::undo_of(schema, rows, &old)?)?;
        self.conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO {} (t, table_name, rows) VALUES (?, ?, ?)",
                self.undo_table()
            ))
            .and_then(|mut st| st.execute((t, &schema.name, undo)))
            .map(|_| ())
            .map_err(backend(format!("keeping the undo of `{}`", schema.name)))
    }
}
