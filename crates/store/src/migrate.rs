//! Migrating a SQL store to a changed query: the store-independent part.
//! Each state the plan says to compute is computed from scratch: the kept
//! inputs (each input's integral) are read whole and fed, as one batch, to
//! a fresh in-memory copy of the query, whose states then hold what the new
//! query would hold had it received every input from the start. The SQL
//! stores copy the states they need from it, in the migration's transaction.

use std::any::Any;

use graph::{Graph, GraphError, MigrationPlan, StateSpec, StoreError};

use crate::Memory;

/// Every state of `graph` computed from the inputs `read` gives (each
/// input's kept integral, read whole into the sink it is given), for the
/// states `plan` backfills.
pub(crate) fn recompute(
    graph: &Graph,
    plan: &MigrationPlan,
    read: impl FnMut(&StateSpec, &mut dyn Any) -> Result<(), StoreError>,
) -> Result<Memory, GraphError> {
    let needed_by = plan
        .backfilled()
        .map(|e| e.path.clone())
        .collect::<Vec<_>>()
        .join(", ");
    recompute_for(graph, &needed_by, read)
}

/// Every state of `graph` computed from the inputs `read` gives;
/// `needed_by` names what needs them, for the error of an input not kept.
pub(crate) fn recompute_for(
    graph: &Graph,
    needed_by: &str,
    read: impl FnMut(&StateSpec, &mut dyn Any) -> Result<(), StoreError>,
) -> Result<Memory, GraphError> {
    let changes = graph.inputs_from_states(needed_by, read)?;
    let mut memory = Memory::new(graph);
    graph.iteration(&mut memory, changes)?;
    // A feed's history is the iterations it saw: it is never recomputed
    // (a new or changed feed starts empty).
    memory.clear_feeds();
    Ok(memory)
}
