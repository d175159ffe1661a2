//! `verify` and `repair` on Postgres: in one transaction, a repeatable-read
//! snapshot to verify; to repair, every table's time locked first, so that
//! no iteration commits in between.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use graph::StoreError;
use tokio_postgres::GenericClient;

use super::Postgres;
use super::encode::PgRow;
use super::frontier::lock_times;
use super::reads::read_rows;
use super::runtime::{Conn, block_on, pg};
use super::writes::write_rows;
use crate::sql::{self, SqlRead};
use crate::verify::{self, Row};
use crate::{Verifiable, Verification};

impl Verifiable for Postgres {
    fn verify(&mut self) -> Result<Verification, StoreError> {
        self.check_against_inputs(false)
    }

    fn repair(&mut self) -> Result<Verification, StoreError> {
        self.check_against_inputs(true)
    }
}

impl Postgres {
    fn check_against_inputs(&mut self, repair: bool) -> Result<Verification, StoreError> {
        block_on(async {
            let conn = self.client().await?;
            conn.client()
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await
                .map_err(pg("starting to verify"))?;
            let result = self.check_in(&conn, repair).await;
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            conn.client()
                .batch_execute(end)
                .await
                .map_err(pg("ending a verification"))?;
            result
        })?
    }

    async fn check_in<C: Conn>(&self, conn: &C, repair: bool) -> Result<Verification, StoreError> {
        let tables = &*self.tables;
        if repair {
            lock_times(conn, tables, &tables.names()).await?;
        }
        // Every table read first (the computation is not async).
        let mut stored: HashMap<usize, Vec<PgRow>> = HashMap::new();
        for s in 0..tables.specs.len() {
            let rows = read_rows(
                conn,
                &tables.schemas[s],
                &tables.sql[s],
                &SqlRead::All,
                &self.stats,
            )
            .await?;
            stored.insert(s, rows);
        }
        let expected = verify::expected(&self.graph, |spec, sink| {
            let s = tables
                .specs
                .iter()
                .position(|x| x.path() == spec.path())
                .ok_or_else(|| {
                    StoreError::backend("verifying", format!("no state `{}`", spec.path()))
                })?;
            let rows = read_rows_again(&stored, s);
            sql::decode_rows(&tables.specs[s], &tables.schemas[s], rows, sink)
        })?;
        let mut states = Vec::with_capacity(tables.specs.len());
        for s in 0..tables.specs.len() {
            let (spec, schema) = (&tables.specs[s], &tables.schemas[s]);
            // A feed is the history of the iterations it saw, not a
            // function of the inputs: nothing to recompute.
            if spec.is_feed() {
                continue;
            }
            let rows = stored
                .remove(&s)
                .unwrap_or_default()
                .into_iter()
                .map(|r| Row {
                    data: r.data.as_ref().to_vec(),
                    step: r.step,
                    weight: r.weight,
                })
                .collect();
            let computed = verify::rows_of(&expected, spec, s)?;
            let mut check = verify::compare(spec, &schema.name, rows, computed);
            if repair && !check.differences.is_empty() {
                let table = &schema.name;
                conn.client()
                    .batch_execute(&format!("DELETE FROM {table}"))
                    .await
                    .map_err(pg(format!("repairing `{table}`")))?;
                for delta in expected.contents(s) {
                    let rows = sql::encode_delta(spec, schema, &*delta)?;
                    let failed = AtomicBool::new(false);
                    write_rows(
                        conn,
                        spec,
                        schema,
                        &tables.sql[s],
                        &rows,
                        &self.stats,
                        &failed,
                    )
                    .await?;
                }
                check.repaired = true;
            }
            states.push(check);
        }
        Ok(Verification { states })
    }
}

/// The rows of table `s` read before, as a fresh list to decode (the
/// comparison needs them afterwards too).
fn read_rows_again(stored: &HashMap<usize, Vec<PgRow>>, s: usize) -> Vec<sql::SqlRow<Vec<u8>>> {
    stored
        .get(&s)
        .map(|rows| {
            rows.iter()
                .map(|r| sql::SqlRow {
                    identity: r.identity,
                    data: r.data.as_ref().to_vec(),
                    weight: r.weight,
                    step: r.step,
                })
                .collect()
        })
        .unwrap_or_default()
}
