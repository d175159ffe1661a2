//! Input row-type migrations: an input whose row type changed carries its
//! kept rows over through a user function from the old type to the new.
//!
//! The store holds the input's integral encoded as the old type; the query
//! registers `old -> new` (`Query::migrate_input`), and a migration decodes
//! each stored row as the old type, maps it, and computes the input's new
//! state and everything downstream of it from the mapped rows.

use std::any::Any;
use std::sync::Arc;

use zset::{Data, Weight};

use crate::builder::Query;
use crate::{Graph, Path, StoredRow};

/// A registered input migration, erased: decodes one stored row of the old
/// type (`data`, postcard bytes), maps it, and pushes it with `weight` onto
/// a sink of the new type (a `Vec<StoredRow<New>>`). `Err` says why the
/// bytes are not a row of the old type.
pub type InputMigration =
    Arc<dyn Fn(&[u8], Weight, &mut dyn Any) -> Result<(), String> + Send + Sync>;

impl Query {
    /// Declares how the rows of input `path`, stored by an older query as
    /// `Old`, become rows of this query's row type `New`. A migration
    /// (`OpenOptions::migrate` on a SQL store) that finds the input stored
    /// under another row type then maps every kept row through `f` and
    /// computes the input's state, and everything downstream of it, from the
    /// mapped rows; without it, such a migration is refused
    /// (`StoreError::InputNotKept`).
    ///
    /// ```
    /// # use stepping_graph::{Graph, GraphError};
    /// let (graph, _) = Graph::build(|q| {
    ///     // Items were (name, price); they now carry a currency too.
    ///     q.migrate_input("items", |(name, price): (String, i64)| (name, price, "EUR".to_string()));
    ///     Ok(q.input::<(String, i64, String)>("items")?.0)
    /// })?;
    /// assert!(graph.input_migration("items").is_some());
    /// # Ok::<(), GraphError>(())
    /// ```
    pub fn migrate_input<Old: Data, New: Data>(
        &self,
        path: &str,
        f: impl Fn(Old) -> New + Send + Sync + 'static,
    ) {
        let migrate: InputMigration = Arc::new(move |data, weight, sink| {
            let old: Old = postcard::from_bytes(data).map_err(|e| {
                format!(
                    "not a row of the old type {}: {e}",
                    std::any::type_name::<Old>()
                )
            })?;
            let sink = sink.downcast_mut::<Vec<StoredRow<New>>>().ok_or_else(|| {
                format!(
                    "the input's row type is not {}",
                    std::any::type_name::<New>()
                )
            })?;
            sink.push(StoredRow {
                value: f(old),
                weight,
                step: 0,
            });
            Ok(())
        });
        self.b
            .borrow_mut()
            .input_migrations
            .insert(Path::new(path), migrate);
    }
}

impl Graph {
    /// The migration of input `path` from an older row type, if the query
    /// declared one ([`Query::migrate_input`]).
    pub fn input_migration(&self, path: &str) -> Option<&InputMigration> {
        self.inner.input_migrations.get(&Path::new(path))
    }
}
