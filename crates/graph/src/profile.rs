//! Where an iteration's time goes: an opt-in profile per vertex
//! ([`Graph::profiled`]), and how many rows each state holds
//! ([`Graph::state_sizes`]).
//!
//! Profiling is off unless asked for: the executor then measures nothing
//! and only tests, once per vertex, whether it should.

use std::fmt;
use std::time::{Duration, Instant};

use comfy_table::{CellAlignment, Table};

use crate::graph::{GraphInner, StateWriter};
use crate::vertex::{Op, Slot, VertexId};
use crate::{Graph, GraphError, Path, StateStore};

/// One vertex's share of the profiled iterations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VertexProfile {
    /// The vertex.
    pub vertex: VertexId,
    /// Its path.
    pub path: Path,
    /// Its operator (`map`, `join`, `integrate`, ...).
    pub op: &'static str,
    /// Whether it runs inside a recursion (its time is also part of the
    /// recursion's).
    pub nested: bool,
    /// How often it ran (once per iteration; once per inner step inside a
    /// recursion).
    pub calls: u64,
    /// Time spent running it, its reads of stored state included.
    pub time: Duration,
    /// Time spent writing the states it keeps, at their write points
    /// (handing the changes to the store, and a pipelined iteration's
    /// commit of each table).
    pub write_time: Duration,
    /// Rows of the values it was given (for a lazily read state: the
    /// iteration's change, not the stored rows, which count as read).
    pub rows_in: u64,
    /// Rows of the value it computed.
    pub rows_out: u64,
    /// Rows it read from stored state.
    pub state_rows_read: u64,
    /// Rows written to the states it keeps (upserted or deleted).
    pub state_rows_written: u64,
}

impl VertexProfile {
    fn new(g: &GraphInner, v: VertexId, nested: bool) -> Self {
        let vertex = &g.vertices[v.ix()];
        VertexProfile {
            vertex: v,
            path: vertex.path.clone(),
            op: vertex.label,
            nested,
            calls: 0,
            time: Duration::ZERO,
            write_time: Duration::ZERO,
            rows_in: 0,
            rows_out: 0,
            state_rows_read: 0,
            state_rows_written: 0,
        }
    }

    fn add(&mut self, other: &VertexProfile) {
        self.calls += other.calls;
        self.time += other.time;
        self.write_time += other.write_time;
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.state_rows_read += other.state_rows_read;
        self.state_rows_written += other.state_rows_written;
    }
}

/// Per-vertex measurements of one iteration (from
/// [`Outputs::profile`](crate::Outputs::profile) of a [`Graph::profiled`]
/// graph's iteration), or of several added up ([`Profile::add`],
/// [`Profile::sum`]). `Display` renders it as a table, and
/// [`Graph::to_svg_annotated`] draws it onto the graph's picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub(crate) graph: u64,
    /// How many iterations it adds up.
    pub iterations: u64,
    /// Their wall time, from starting the transaction to its commit.
    pub total: Duration,
    /// Time spent committing.
    pub commit: Duration,
    /// The vertices, in schedule order (a recursion's body right after it).
    pub vertices: Vec<VertexProfile>,
}

impl Profile {
    /// The profile of the vertex at `path`.
    pub fn vertex(&self, path: &str) -> Option<&VertexProfile> {
        self.vertices.iter().find(|v| v.path.as_str() == path)
    }

    /// Adds `other`'s measurements to these (profiles of several
    /// iterations, e.g. of an ingest's batches).
    ///
    /// # Errors
    /// [`GraphError::TypeMismatch`] for a profile of another graph
    /// (nothing is added).
    pub fn add(&mut self, other: &Profile) -> Result<(), GraphError> {
        if other.graph != self.graph || other.vertices.len() != self.vertices.len() {
            return Err(GraphError::TypeMismatch {
                path: Path::new("profile"),
                expected: "a profile of the same graph",
                found: "a profile of another graph",
            });
        }
        self.iterations += other.iterations;
        self.total += other.total;
        self.commit += other.commit;
        for (mine, theirs) in self.vertices.iter_mut().zip(&other.vertices) {
            mine.add(theirs);
        }
        Ok(())
    }

    /// The sum of `profiles` (`None` when there are none).
    ///
    /// # Errors
    /// As for [`add`](Self::add).
    pub fn sum<'a>(
        profiles: impl IntoIterator<Item = &'a Profile>,
    ) -> Result<Option<Profile>, GraphError> {
        let mut total: Option<Profile> = None;
        for p in profiles {
            match &mut total {
                Some(t) => t.add(p)?,
                None => total = Some(p.clone()),
            }
        }
        Ok(total)
    }
}

/// `1.23 ms`, `45 µs`, `2.10 s`.
pub(crate) fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

impl fmt::Display for Profile {
    /// A table: one row per vertex with its time, its share of the
    /// iterations' total, and the rows it moved; then the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total.as_secs_f64().max(1e-12);
        let mut table = Table::new();
        table.set_header([
            "vertex",
            "op",
            "calls",
            "time",
            "share",
            "writes",
            "rows in",
            "rows out",
            "state read",
            "state written",
        ]);
        for v in &self.vertices {
            let path = if v.nested {
                format!("  {}", v.path)
            } else {
                v.path.to_string()
            };
            let share = (v.time + v.write_time).as_secs_f64() / total * 100.0;
            table.add_row([
                path,
                v.op.to_owned(),
                v.calls.to_string(),
                duration(v.time),
                format!("{share:.1}%"),
                duration(v.write_time),
                v.rows_in.to_string(),
                v.rows_out.to_string(),
                v.state_rows_read.to_string(),
                v.state_rows_written.to_string(),
            ]);
        }
        for column in 2..10 {
            if let Some(c) = table.column_mut(column) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        writeln!(
            f,
            "{} iteration(s) in {} (commit {})",
            self.iterations,
            duration(self.total),
            duration(self.commit)
        )?;
        write!(f, "{table}")
    }
}

/// How many rows the store keeps for one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateSize {
    /// The state's path.
    pub path: Path,
    /// Its rows (a nested state's rows at every inner step).
    pub rows: u64,
}

/// How many rows the store keeps for each state of a graph
/// ([`Graph::state_sizes`]); `Display` renders a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateSizes {
    /// One entry per state, in the graph's order.
    pub states: Vec<StateSize>,
}

impl StateSizes {
    /// The rows of the state at `path`.
    pub fn rows(&self, path: &str) -> Option<u64> {
        self.states
            .iter()
            .find(|s| s.path.as_str() == path)
            .map(|s| s.rows)
    }
}

impl fmt::Display for StateSizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut table = Table::new();
        table.set_header(["state", "rows"]);
        for s in &self.states {
            table.add_row([s.path.to_string(), s.rows.to_string()]);
        }
        if let Some(c) = table.column_mut(1) {
            c.set_cell_alignment(CellAlignment::Right);
        }
        write!(f, "{table}")
    }
}

impl Graph {
    /// This graph with profiling on: every iteration run through it
    /// measures, per vertex, its time, the rows it was given and computed,
    /// and the state rows it read and wrote, returned with the outputs
    /// ([`Outputs::profile`](crate::Outputs::profile)). The graph it is
    /// called on is unchanged (both share everything else), and without
    /// profiling the executor measures nothing.
    pub fn profiled(&self) -> Graph {
        Graph {
            inner: std::sync::Arc::clone(&self.inner),
            profiling: true,
        }
    }

    /// Whether iterations run through this graph are profiled.
    pub fn is_profiled(&self) -> bool {
        self.profiling
    }

    /// How many rows `store` keeps for each of this graph's states
    /// ([`StateStore::state_rows`]), committed ones only.
    ///
    /// # Errors
    /// A store failure, or a state the store does not have.
    pub fn state_sizes<S: StateStore + ?Sized>(
        &self,
        store: &mut S,
    ) -> Result<StateSizes, GraphError> {
        let mut states = Vec::with_capacity(self.inner.states.len());
        for spec in &self.inner.states {
            states.push(StateSize {
                path: spec.path().clone(),
                rows: store.state_rows(spec)?,
            });
        }
        Ok(StateSizes { states })
    }
}

/// What the executor accumulates while profiling one iteration.
pub(crate) struct Meter {
    /// Per vertex, by vertex index.
    pub(crate) vertices: Vec<VertexProfile>,
    /// Per final state, the vertex its writes are charged to.
    owner: Vec<Option<VertexId>>,
}

impl Meter {
    pub(crate) fn new(g: &GraphInner) -> Meter {
        let mut nested = vec![false; g.vertices.len()];
        for v in &g.order {
            if let Op::Recursive(r) = &g.vertices[v.ix()].op {
                for inner in &r.order {
                    nested[inner.ix()] = true;
                }
            }
        }
        let vertices = (0..g.vertices.len())
            .map(|i| VertexProfile::new(g, VertexId(i as u32), nested[i]))
            .collect();
        // Writes are charged to the first live vertex that keeps the state
        // (vertices removed by the transforms may still name it).
        let mut owner: Vec<Option<VertexId>> = vec![None; g.states.len()];
        let live =
            g.order
                .iter()
                .chain(g.order.iter().flat_map(|v| match &g.vertices[v.ix()].op {
                    Op::Recursive(r) => r.order.as_slice(),
                    _ => &[],
                }));
        for &v in live {
            let vertex = &g.vertices[v.ix()];
            let kept = match &vertex.op {
                Op::Integrate { state, .. } | Op::Delay(state) => vec![*state],
                Op::Func(_) | Op::Add(_) => vertex.states.clone(),
                _ => Vec::new(),
            };
            for s in kept {
                let fin = g.final_of[s.index()].index();
                owner[fin].get_or_insert(v);
            }
        }
        for (s, writer) in g.writers.iter().enumerate() {
            if let StateWriter::Delay { delay, .. } = writer {
                owner[s] = Some(*delay);
            }
        }
        Meter { vertices, owner }
    }

    /// The rows of `slot`, the value of vertex `of`.
    fn rows(g: &GraphInner, slots: &[Option<Slot>], slot: &Slot, of: VertexId) -> u64 {
        match slot {
            // A scalar is one row; a sink's `()` none.
            Slot::Value(v) => match g.vertices[of.ix()].fns {
                Some(f) => (f.len)(&**v) as u64,
                None => u64::from(!v.is::<()>()),
            },
            Slot::State { delta: Some(d), .. } => match &slots[d.ix()] {
                Some(s @ Slot::Value(_)) => Self::rows(g, slots, s, *d),
                _ => 0,
            },
            Slot::State { delta: None, .. } => 0,
        }
    }

    /// Records one run of `v` that started at `started` and computed `out`.
    pub(crate) fn ran(
        &mut self,
        g: &GraphInner,
        slots: &[Option<Slot>],
        v: VertexId,
        started: Instant,
        out: &Slot,
    ) {
        let elapsed = started.elapsed();
        let rows_in: u64 = g.vertices[v.ix()]
            .inputs
            .iter()
            .filter_map(|i| slots[i.ix()].as_ref().map(|s| Self::rows(g, slots, s, *i)))
            .sum();
        let rows_out = Self::rows(g, slots, out, v);
        let p = &mut self.vertices[v.ix()];
        p.calls += 1;
        p.time += elapsed;
        p.rows_in += rows_in;
        p.rows_out += rows_out;
    }

    /// The profile of a vertex (to count its reads).
    pub(crate) fn reads_of(&mut self, v: VertexId) -> &mut u64 {
        &mut self.vertices[v.ix()].state_rows_read
    }

    /// Charges `rows` written to `state` to its owner.
    pub(crate) fn wrote(&mut self, state: crate::StateId, rows: usize) {
        if let Some(o) = self.owner[state.index()] {
            self.vertices[o.ix()].state_rows_written += rows as u64;
        }
    }

    /// Charges the time of `state`'s write point to its owner.
    pub(crate) fn write_point(&mut self, state: crate::StateId, started: Instant) {
        if let Some(o) = self.owner[state.index()] {
            self.vertices[o.ix()].write_time += started.elapsed();
        }
    }

    /// The iteration's profile: the live vertices in schedule order.
    pub(crate) fn finish(mut self, g: &GraphInner) -> Profile {
        let mut vertices = Vec::new();
        for v in &g.order {
            vertices.push(self.vertices[v.ix()].clone());
            if let Op::Recursive(r) = &g.vertices[v.ix()].op {
                for inner in &r.order {
                    vertices.push(std::mem::replace(
                        &mut self.vertices[inner.ix()],
                        VertexProfile::new(g, *inner, true),
                    ));
                }
            }
        }
        Profile {
            graph: g.id,
            iterations: 1,
            total: Duration::ZERO,
            commit: Duration::ZERO,
            vertices,
        }
    }
}
