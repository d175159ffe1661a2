//! `verify` and `repair` on SQLite: in one transaction, a read snapshot to
//! verify, the write lock to repair.

use graph::StoreError;

use super::Sqlite;
use super::encode::backend;
use crate::sql::{self, SqlRead};
use crate::verify::{self, Row};
use crate::{Verifiable, Verification};

impl Verifiable for Sqlite {
    fn verify(&mut self) -> Result<Verification, StoreError> {
        self.check_against_inputs(false)
    }

    fn repair(&mut self) -> Result<Verification, StoreError> {
        self.check_against_inputs(true)
    }
}

impl Sqlite {
    fn check_against_inputs(&mut self, repair: bool) -> Result<Verification, StoreError> {
        let begin = if repair { "BEGIN IMMEDIATE" } else { "BEGIN" };
        self.conn
            .execute_batch(begin)
            .map_err(backend("starting to verify"))?;
        let result = self.check_in(repair);
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        self.conn
            .execute_batch(end)
            .map_err(backend("ending a verification"))?;
        result
    }

    fn check_in(&mut self, repair: bool) -> Result<Verification, StoreError> {
        let graph = self.graph.clone();
        let store = &*self;
        let expected = verify::expected(&graph, |spec, sink| {
            let s = store
                .specs
                .iter()
                .position(|x| x.path() == spec.path())
                .ok_or_else(|| {
                    StoreError::backend("verifying", format!("no state `{}`", spec.path()))
                })?;
            let rows = store.run_read(&store.schemas[s], &store.sql[s], &SqlRead::All)?;
            sql::decode_rows(&store.specs[s], &store.schemas[s], rows, sink)
        })?;
        let mut states = Vec::with_capacity(self.specs.len());
        for s in 0..self.specs.len() {
            let (spec, schema) = (&self.specs[s], &self.schemas[s]);
            // A feed is the history of the iterations it saw, not a
            // function of the inputs: nothing to recompute.
            if spec.is_feed() {
                continue;
            }
            let stored = self
                .run_read(schema, &self.sql[s], &SqlRead::All)?
                .into_iter()
                .map(|r| Row {
                    data: r.data,
                    step: r.step,
                    weight: r.weight,
                })
                .collect();
            let computed = verify::rows_of(&expected, spec, s)?;
            let mut check = verify::compare(spec, &schema.name, stored, computed);
            if repair && !check.differences.is_empty() {
                let table = &schema.name;
                self.conn
                    .execute_batch(&format!("DELETE FROM {table}"))
                    .map_err(backend(format!("repairing `{table}`")))?;
                for delta in expected.contents(s) {
                    let rows = sql::encode_delta(spec, schema, &*delta)?;
                    self.write_rows(spec, schema, &self.sql[s], &rows)?;
                }
                check.repaired = true;
            }
            states.push(check);
        }
        Ok(Verification { states })
    }
}
