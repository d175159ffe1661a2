//! Two states that a SQL store would keep in one table are refused when
//! the query is built, whatever the store.

use operators::prelude::*;

use crate::harness::kinds;

type R = Result<(), GraphError>;

/// `Users` is cleaned into `users_` and a hash of it, `users_10aa8ba6`,
/// which is also a name a user may write: the query is refused when it is
/// built, naming both paths, so no store ever sees it (Memory, which has no
/// tables, took it, and the SQL stores refused it at open).
#[test]
fn states_whose_tables_would_share_a_name_are_a_build_error() -> R {
    let built = Graph::build(|q| {
        let (input, rows) = q.input::<i64>("rows")?;
        let users = q.cache("Users", rows, &[])?;
        let others = q.cache("users_10aa8ba6", rows.map(|x| x + 1), &[])?;
        Ok((input, users, others))
    });
    match built {
        Err(GraphError::TableNameCollision {
            first,
            second,
            table,
            ..
        }) => {
            assert_eq!(
                (first.as_str(), second.as_str(), table.as_str()),
                ("Users", "users_10aa8ba6", "users_10aa8ba6")
            );
        }
        Err(other) => panic!("expected a table name collision, got {other}"),
        Ok(_) => panic!("`Users` and `users_10aa8ba6` were accepted"),
    }
    // Names that differ once cleaned are kept apart on every store.
    for kind in kinds() {
        let (graph, (input, users, others)) = Graph::build(|q| {
            let (input, rows) = q.input::<i64>("rows")?;
            let users = q.cache("Users", rows, &[])?;
            let others = q.cache("users", rows.map(|x| x + 1), &[])?;
            Ok((input, users, others))
        })?;
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, [1])?;
        assert_eq!(
            users.zset(&mut *store)?,
            [(1, 1)].into_iter().collect(),
            "{kind:?}"
        );
        assert_eq!(
            others.zset(&mut *store)?,
            [(2, 1)].into_iter().collect(),
            "{kind:?}"
        );
    }
    Ok(())
}
