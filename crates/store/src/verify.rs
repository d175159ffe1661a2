//! `verify` and `repair`: every state computed again from the kept inputs
//! (a fresh in-memory run, as a migration computes a new state) and
//! compared, row by row, with what the store holds.
//!
//! How a user finds out that a view drifted: a closure changed without a
//! version bump, a bug, a table edited by hand. The comparison is of
//! values and weights (each stored row decoded), not of bytes, and float
//! fields compare equal within a relative 10⁻⁹: a sum computed in one
//! batch adds in another order than the same sum kept incrementally.

use std::collections::HashMap;
use std::fmt;

use graph::{Graph, GraphError, StateKind, StateSpec, StoreError};

use crate::Memory;

/// What [`verify`](Verifiable::verify) found: per state, its rows and the
/// rows that differ from a computation from the inputs. Renders as tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// Every state of the query, in the store's order.
    pub states: Vec<StateCheck>,
}

/// One state of a [`Verification`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateCheck {
    /// The state's path.
    pub path: String,
    /// Its table (the path on the memory store).
    pub table: String,
    /// How many rows the store holds.
    pub stored: u64,
    /// How many rows a computation from the inputs gives.
    pub expected: u64,
    /// The rows whose weights differ (a row missing on one side has weight
    /// 0 there).
    pub differences: Vec<RowDifference>,
    /// Whether [`repair`](Verifiable::repair) rewrote the state.
    pub repaired: bool,
}

/// A row whose stored weight is not the computed one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowDifference {
    /// The row's value (`Debug`).
    pub row: String,
    /// Its inner step (nested states; 0 otherwise).
    pub step: u32,
    /// Its weight in the store (keyed states: 1 if present).
    pub stored: i64,
    /// Its weight computed from the inputs.
    pub expected: i64,
}

impl Verification {
    /// Whether every state holds what the inputs give.
    pub fn is_clean(&self) -> bool {
        self.states.iter().all(|s| s.differences.is_empty())
    }

    /// The states that differ.
    pub fn drifted(&self) -> impl Iterator<Item = &StateCheck> {
        self.states.iter().filter(|s| !s.differences.is_empty())
    }
}

/// How many differing rows of a state the rendering shows.
const SHOWN: usize = 20;

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut table = comfy_table::Table::new();
        table.set_header([
            "state",
            "table",
            "rows stored",
            "rows expected",
            "rows differing",
        ]);
        for s in &self.states {
            let differing = match (s.differences.len(), s.repaired) {
                (0, _) => "0".to_owned(),
                (n, true) => format!("{n} (repaired)"),
                (n, false) => n.to_string(),
            };
            table.add_row([
                s.path.clone(),
                s.table.clone(),
                s.stored.to_string(),
                s.expected.to_string(),
                differing,
            ]);
        }
        write!(f, "{table}")?;
        for s in self.drifted() {
            let mut rows = comfy_table::Table::new();
            rows.set_header(["row", "step", "stored weight", "expected weight"]);
            for d in s.differences.iter().take(SHOWN) {
                rows.add_row([
                    d.row.clone(),
                    d.step.to_string(),
                    d.stored.to_string(),
                    d.expected.to_string(),
                ]);
            }
            write!(f, "\n{} ({}):\n{rows}", s.path, s.table)?;
            if s.differences.len() > SHOWN {
                write!(f, "\n... and {} more", s.differences.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}

/// A store whose states can be checked against, and rewritten from, a
/// computation from its kept inputs. Implemented by [`Memory`],
/// [`Sqlite`](crate::Sqlite) and [`Postgres`](crate::Postgres); sealed.
///
/// ```
/// # use graph::{Graph, GraphError};
/// # use operators::prelude::*;
/// use stepping_store::{Memory, Verifiable};
/// let (graph, (input, _)) = Graph::build(|q| {
///     let (input, words) = q.input::<String>("words")?;
///     Ok((input, q.cache("word_set", words.distinct(), &[])?))
/// })?;
/// let mut store = Memory::new(&graph);
/// graph.insert(&mut store, &input, ["hello".to_string()])?;
/// assert!(store.verify()?.is_clean());
/// # Ok::<(), GraphError>(())
/// ```
pub trait Verifiable: sealed::Sealed {
    /// Computes every state from the kept inputs and compares it with the
    /// store's, in one consistent snapshot; changes nothing.
    ///
    /// # Errors
    /// [`StoreError::InputNotKept`] if a state depends on a transient
    /// input; a table that cannot be read.
    fn verify(&mut self) -> Result<Verification, StoreError>;

    /// As [`verify`](Self::verify), then rewrites every state that differs
    /// with the computed rows, in the same transaction (ingest waits).
    ///
    /// # Errors
    /// As `verify`; a table that cannot be written (nothing is changed).
    fn repair(&mut self) -> Result<Verification, StoreError>;
}

pub(crate) mod sealed {
    /// Only this crate's stores are [`Verifiable`](super::Verifiable).
    pub trait Sealed {}
    impl Sealed for crate::Memory {}
    #[cfg(feature = "sqlite")]
    impl Sealed for crate::Sqlite {}
    #[cfg(feature = "postgres")]
    impl Sealed for crate::Postgres {}
}

/// `graph.verify(&mut store)`: [`Verifiable`] from the graph's side.
pub trait GraphVerify {
    /// [`Verifiable::verify`] of `store`, which must be open for this graph.
    ///
    /// # Errors
    /// [`GraphError::WrongStore`] if `store` was opened for another query;
    /// as [`Verifiable::verify`].
    fn verify<S: Verifiable + graph::StateStore>(
        &self,
        store: &mut S,
    ) -> Result<Verification, GraphError>;

    /// [`Verifiable::repair`] of `store`, which must be open for this graph.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    fn repair<S: Verifiable + graph::StateStore>(
        &self,
        store: &mut S,
    ) -> Result<Verification, GraphError>;
}

impl GraphVerify for Graph {
    fn verify<S: Verifiable + graph::StateStore>(
        &self,
        store: &mut S,
    ) -> Result<Verification, GraphError> {
        same_query(self, store)?;
        Ok(store.verify()?)
    }

    fn repair<S: Verifiable + graph::StateStore>(
        &self,
        store: &mut S,
    ) -> Result<Verification, GraphError> {
        same_query(self, store)?;
        Ok(store.repair()?)
    }
}

fn same_query(graph: &Graph, store: &dyn graph::StateStore) -> Result<(), GraphError> {
    if store.fingerprint() == graph.fingerprint() {
        return Ok(());
    }
    Err(GraphError::WrongStore {
        store: store.fingerprint().to_owned(),
        graph: graph.fingerprint().to_owned(),
    })
}

/// A stored row, as the comparison sees it.
pub(crate) struct Row {
    pub(crate) data: Vec<u8>,
    pub(crate) step: u32,
    pub(crate) weight: i64,
}

/// Every state of `graph` computed from the inputs `read` gives.
pub(crate) fn expected(
    graph: &Graph,
    read: impl FnMut(&StateSpec, &mut dyn std::any::Any) -> Result<(), StoreError>,
) -> Result<Memory, StoreError> {
    crate::migrate::recompute_for(graph, "verify", read).map_err(|e| match e {
        GraphError::Store(e) => e,
        other => StoreError::backend("computing the states to verify", other.to_string()),
    })
}

/// The rows state `s` of `memory` holds, encoded as a store keeps them.
pub(crate) fn rows_of(memory: &Memory, spec: &StateSpec, s: usize) -> Result<Vec<Row>, StoreError> {
    let mut encoded = Vec::new();
    for delta in memory.contents(s) {
        spec.codec().encode_delta(&*delta, &mut encoded)?;
    }
    Ok(encoded
        .into_iter()
        .map(|r| Row {
            data: r.data,
            step: r.step,
            weight: r.weight,
        })
        .collect())
}

/// Compares what state `spec` holds (`stored`) with what it should
/// (`expected`).
pub(crate) fn compare(
    spec: &StateSpec,
    table: &str,
    stored: Vec<Row>,
    expected: Vec<Row>,
) -> StateCheck {
    let keyed = spec.kind() == StateKind::Keyed;
    let (n_stored, n_expected) = (stored.len() as u64, expected.len() as u64);
    // Exact comparison first: (bytes, step) -> (stored, expected) weights.
    let mut exact: HashMap<(Vec<u8>, u32), (i64, i64)> = HashMap::new();
    for (rows, side) in [(stored, 0), (expected, 1)] {
        for r in rows {
            let w = if keyed { 1 } else { r.weight };
            let e = exact.entry((r.data, r.step)).or_default();
            if side == 0 {
                e.0 = e.0.saturating_add(w);
            } else {
                e.1 = e.1.saturating_add(w);
            }
        }
    }
    // What is left, compared again as values with floats rounded.
    let mut loose: HashMap<(String, u32), (String, i64, i64)> = HashMap::new();
    for ((data, step), (s, e)) in exact {
        if s == e {
            continue;
        }
        let shown = spec.codec().show(&data);
        let entry = loose
            .entry((round_floats(&shown), step))
            .or_insert_with(|| (shown, 0, 0));
        entry.1 = entry.1.saturating_add(s);
        entry.2 = entry.2.saturating_add(e);
    }
    let mut differences: Vec<RowDifference> = loose
        .into_iter()
        .filter(|(_, (_, s, e))| s != e)
        .map(|((_, step), (row, stored, expected))| RowDifference {
            row,
            step,
            stored,
            expected,
        })
        .collect();
    differences.sort_by(|a, b| (a.step, &a.row).cmp(&(b.step, &b.row)));
    StateCheck {
        path: spec.path().to_string(),
        table: table.to_owned(),
        stored: n_stored,
        expected: n_expected,
        differences,
        repaired: false,
    }
}

/// `text` (a value's `Debug`) with every float literal rounded to ten
/// significant digits, so that two sums added in different orders show
/// the same.
fn round_floats(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'));
        if !starts_number {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut j = i;
        let mut float = false;
        while j < chars.len() {
            let c = chars[j];
            let exponent_sign =
                (c == '-' || c == '+') && j > i && matches!(chars[j - 1], 'e' | 'E');
            if c.is_ascii_digit() || exponent_sign {
                j += 1;
            } else if (c == '.' && chars.get(j + 1).is_some_and(char::is_ascii_digit))
                || (matches!(c, 'e' | 'E') && j + 1 < chars.len())
            {
                float = true;
                j += 1;
            } else {
                break;
            }
        }
        let literal: String = chars[i..j].iter().collect();
        match literal.parse::<f64>() {
            Ok(v) if float => out.push_str(&format!("{v:.9e}")),
            _ => out.push_str(&literal),
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::round_floats;

    #[test]
    fn floats_round_and_everything_else_stays() {
        assert_eq!(
            round_floats("(F64(0.30000000000000004), 7, \"a1.5\")"),
            round_floats("(F64(0.3), 7, \"a1.5\")")
        );
        assert_ne!(round_floats("F64(0.31)"), round_floats("F64(0.3)"));
        assert_eq!(round_floats("x1 12 -3"), "x1 12 -3");
        assert_eq!(round_floats("1.5e-7"), round_floats("1.50000000000001e-7"));
    }
}
