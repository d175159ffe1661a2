//! Migration plans: how a store's states compare with a changed query's,
//! and what migrating would do to each.

use std::fmt;

/// What a migration does to one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanAction {
    /// The query computes it as before: kept as it is, no row rewritten.
    Keep,
    /// The query has a state the store lacks: computed from the kept inputs.
    New,
    /// The query computes it differently (`why`): computed again from the
    /// kept inputs.
    Changed {
        /// What differs: its row shape, or its definition.
        why: String,
    },
    /// The store has a state of the old query the new one lacks: its table
    /// is dropped.
    Drop,
    /// The query renamed the state, or something upstream of it (see
    /// `Query::renamed`), and computes it as before: kept, no row
    /// rewritten; its table renamed from the one of path `from` where that
    /// differs, and its record updated.
    Renamed {
        /// The path the store held it under, if not its path today.
        from: Option<String>,
    },
}

impl PlanAction {
    /// Whether the state's rows must be computed from the inputs.
    pub fn backfills(&self) -> bool {
        matches!(self, PlanAction::New | PlanAction::Changed { .. })
    }
}

/// One state of a [`MigrationPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanEntry {
    /// The state's path.
    pub path: String,
    /// Its table (the path on the memory store).
    pub table: String,
    /// What migrating does to it.
    pub action: PlanAction,
    /// How many rows it holds now (dropped or changed states), or will
    /// hold (once a migration has computed it); `None` where not known.
    pub rows: Option<u64>,
}

/// How a store's states compare with a query's, state by state, and so
/// what migrating the store to the query does. Renders as a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationPlan {
    /// Every state of the query and every state of the store's old query.
    pub entries: Vec<PlanEntry>,
}

impl MigrationPlan {
    /// Whether the store holds exactly the query's states.
    pub fn is_unchanged(&self) -> bool {
        self.entries.iter().all(|e| e.action == PlanAction::Keep)
    }

    /// The states migrating would compute from the inputs.
    pub fn backfilled(&self) -> impl Iterator<Item = &PlanEntry> {
        self.entries.iter().filter(|e| e.action.backfills())
    }

    /// A one-line count of each action, e.g. `1 new, 2 changed, 3 kept`.
    pub fn summary(&self) -> String {
        let count =
            |f: fn(&PlanAction) -> bool| self.entries.iter().filter(|e| f(&e.action)).count();
        let parts = [
            (count(|a| *a == PlanAction::New), "new"),
            (
                count(|a| matches!(a, PlanAction::Changed { .. })),
                "changed",
            ),
            (count(|a| *a == PlanAction::Drop), "dropped"),
            (
                count(|a| matches!(a, PlanAction::Renamed { .. })),
                "renamed",
            ),
            (count(|a| *a == PlanAction::Keep), "kept"),
        ];
        parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for MigrationPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut table = comfy_table::Table::new();
        table.set_header(["state", "table", "action", "rows"]);
        for e in &self.entries {
            let action = match &e.action {
                PlanAction::Keep => "keep".to_owned(),
                PlanAction::New => "new: compute from the inputs".to_owned(),
                PlanAction::Changed { why } => format!("changed ({why}): compute again"),
                PlanAction::Drop => "drop".to_owned(),
                PlanAction::Renamed { from: Some(from) } => format!("keep, renamed from `{from}`"),
                PlanAction::Renamed { from: None } => "keep (reads something renamed)".to_owned(),
            };
            let rows = e.rows.map_or_else(|| "-".to_owned(), |n| n.to_string());
            table.add_row([e.path.as_str(), e.table.as_str(), &action, &rows]);
        }
        write!(f, "{table}")
    }
}
