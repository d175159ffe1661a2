//! Migrations that used to fail or to compute more than they needed: a join
//! added directly on kept inputs (it shares their integrals, so their
//! tables gain an index), and errors naming the state a refused migration
//! was to compute.

use operators::prelude::*;
use store::StoreError;

use super::{Place, is_query_changed};
use crate::harness::kinds;
use crate::oracle;

type R = Result<(), GraphError>;

type User = (i64, String);
type Order = (i64, i64);

struct Shop {
    graph: Graph,
    users: Input<User>,
    orders: Input<Order>,
    totals: Cache<Pair<i64, i64>>,
    joined: Option<Cache<Pair<User, Order>>>,
}

/// Orders summed per user into `totals`; `with_join` adds the users joined
/// with their orders, directly on both inputs, cached.
fn shop(with_join: bool, users_transient: bool) -> Result<Shop, GraphError> {
    let by_user = Index::new("user", |o: &Order| o.0);
    let user_id = Index::new("user", |u: &User| u.0);
    let (graph, (users, orders, totals, joined)) = Graph::build(|q| {
        let (users, u) = q.input::<User>("users")?;
        let u = if users_transient { u.transient() } else { u };
        let (orders, o) = q.input::<Order>("orders")?;
        let totals = o
            .map(|o: &Order| *o)
            .group_reduce_flatten(&by_user, 0i64, |o: &Order| o.1);
        let totals = q.cache("totals", totals, &[])?;
        let joined = if with_join {
            Some(q.cache("user_orders", u.join(o, &user_id, &by_user), &[])?)
        } else {
            // The users are an input of the first version too.
            q.cache("user_names", u.map(|u: &User| u.1.clone()), &[])?;
            None
        };
        Ok((users, orders, totals, joined))
    })?;
    Ok(Shop {
        graph,
        users,
        orders,
        totals,
        joined,
    })
}

fn users() -> Vec<User> {
    (0..4).map(|i| (i, format!("user{i}"))).collect()
}

fn orders(batch: i64) -> Vec<Order> {
    (0..5).map(|i| ((batch + i) % 5, 10 * batch + i)).collect()
}

/// The join as the oracle computes it, over every row fed.
fn expected_join(users: &[User], orders: &[Order]) -> ZSet<Pair<User, Order>> {
    let u = oracle::from_rows(users.iter().map(|r| (r.clone(), 1)));
    let o = oracle::from_rows(orders.iter().map(|r| (*r, 1)));
    oracle::join(&u, &o, |u| u.0, |o| o.0)
        .into_iter()
        .map(|((u, o), w)| (Pair::new(u, o), w))
        .collect()
}

fn expected_totals(orders: &[Order]) -> ZSet<Pair<i64, i64>> {
    let mut sums = std::collections::BTreeMap::new();
    for (user, amount) in orders {
        *sums.entry(*user).or_insert(0) += amount;
    }
    sums.into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| (Pair::new(v, k), 1))
        .collect()
}

/// Issue 22's bug: the join on the inputs changed the inputs' tables (the
/// join's integrals are theirs, with its index), the plan called them
/// changed, and the migration was refused with `InputNotKept` naming no
/// state and blaming "another row type". The inputs are now re-read from
/// their own tables and re-indexed, the join computed from them, and the
/// totals, untouched by the join, kept as they are.
#[test]
fn a_join_added_directly_on_kept_inputs_migrates_and_keeps_the_rest() -> R {
    for kind in kinds() {
        let (v1, v2) = (shop(false, false)?, shop(true, false)?);
        let place = Place::new(kind, &v1.graph)?;
        let mut fed = Vec::new();
        {
            let mut old = place.open(&v1.graph)?;
            v1.graph.insert(&mut *old, &v1.users, users())?;
            for b in 0..3 {
                v1.graph.insert(&mut *old, &v1.orders, orders(b))?;
                fed.extend(orders(b));
            }
        }
        if kind != crate::harness::Kind::Memory {
            let err = place.open(&v2.graph).map(|_| ()).expect_err("changed");
            assert!(is_query_changed(&err), "{kind:?}: {err}");
        }
        let migrated = place.migrate(&v2.graph)?;
        let plan = &migrated.plan;
        let action = |path: &str| {
            plan.entries
                .iter()
                .find(|e| e.path == path)
                .map(|e| e.action.clone())
        };
        assert_eq!(
            action("totals"),
            Some(graph::PlanAction::Keep),
            "{kind:?}:\n{plan}"
        );
        assert!(
            matches!(action("user_orders"), Some(graph::PlanAction::New)),
            "{kind:?}:\n{plan}"
        );
        let mut new = migrated.handle;
        let joined = v2.joined.as_ref().expect("the join");
        assert_eq!(
            joined.zset(&mut *new)?,
            expected_join(&users(), &fed),
            "{kind:?}"
        );
        assert_eq!(
            v2.totals.zset(&mut *new)?,
            expected_totals(&fed),
            "{kind:?}"
        );
        let report = new.verify()?;
        assert!(report.drifted().next().is_none(), "{kind:?}:\n{report}");
        // The ingest goes on through the join's new index.
        for b in 3..5 {
            v2.graph.insert(&mut *new, &v2.orders, orders(b))?;
            fed.extend(orders(b));
        }
        v2.graph
            .insert(&mut *new, &v2.users, vec![(7, "late".to_owned())])?;
        fed.push((7, 700));
        v2.graph.insert(&mut *new, &v2.orders, vec![(7, 700)])?;
        let mut all_users = users();
        all_users.push((7, "late".to_owned()));
        assert_eq!(
            joined.zset(&mut *new)?,
            expected_join(&all_users, &fed),
            "{kind:?}"
        );
        assert_eq!(
            v2.totals.zset(&mut *new)?,
            expected_totals(&fed),
            "{kind:?}"
        );
    }
    Ok(())
}

/// A migration that needs an input the store does not keep names the state
/// it was to compute and the input, and says why.
#[test]
fn a_refused_backfill_names_the_state_and_the_input() -> R {
    for kind in kinds() {
        let (v1, v2) = (shop(false, true)?, shop(true, true)?);
        let place = Place::new(kind, &v1.graph)?;
        {
            let mut old = place.open(&v1.graph)?;
            v1.graph.insert(&mut *old, &v1.users, users())?;
            v1.graph.insert(&mut *old, &v1.orders, orders(0))?;
        }
        let err = place.migrate(&v2.graph).map(|_| ()).expect_err("transient");
        match &err {
            GraphError::Store(StoreError::InputNotKept { state, input, why }) => {
                assert!(state.contains("user_orders"), "{kind:?}: {err}");
                assert_eq!(input, "users", "{kind:?}: {err}");
                assert!(why.contains("transient"), "{kind:?}: {err}");
            }
            other => panic!("{kind:?}: {other}"),
        }
        // Nothing changed: the old query goes on.
        let mut old = place.open(&v1.graph)?;
        v1.graph.insert(&mut *old, &v1.orders, orders(1))?;
        let mut fed = orders(0);
        fed.extend(orders(1));
        assert_eq!(
            v1.totals.zset(&mut *old)?,
            expected_totals(&fed),
            "{kind:?}"
        );
    }
    Ok(())
}

/// Paths unique by build order (`items.map`, `items.map#2`, ...): a cache
/// added at the end of the query, over the same kind of stream as earlier
/// parts, takes the next free path and leaves every old state as it was.
#[test]
fn a_cache_added_at_the_end_keeps_every_old_state() -> R {
    type Item = (i64, i64);
    let build = |extra: bool| {
        Graph::build(|q| {
            let (items, s) = q.input::<Item>("items")?;
            // Two maps of the same input: default paths `items.map` and
            // `items.map#2`.
            q.cache("plus", s.map(|i: &Item| (i.0, i.1 + 1)), &[])?;
            q.cache("times", s.map(|i: &Item| (i.0, i.1 * 2)), &[])?;
            let minus = if extra {
                Some(q.cache("minus", s.map(|i: &Item| (i.0, -i.1)), &[])?)
            } else {
                None
            };
            Ok((items, minus))
        })
    };
    for kind in kinds() {
        let (old, (items, _)) = build(false)?;
        let (new, (_, minus)) = build(true)?;
        let place = Place::new(kind, &old)?;
        {
            let mut store = place.open(&old)?;
            old.insert(&mut *store, &items, vec![(1, 10), (2, 20)])?;
        }
        let migrated = place.migrate(&new)?;
        for e in &migrated.plan.entries {
            let expected = if e.path.starts_with("minus") || e.path.contains("#3") {
                graph::PlanAction::New
            } else {
                graph::PlanAction::Keep
            };
            assert_eq!(
                e.action, expected,
                "{kind:?}: {}\n{}",
                e.path, migrated.plan
            );
        }
        let mut store = migrated.handle;
        let minus = minus.expect("the new cache");
        assert_eq!(
            minus.zset(&mut *store)?,
            [((1, -10), 1), ((2, -20), 1)].into_iter().collect(),
            "{kind:?}"
        );
        if let Some(written) = store.rows_written() {
            assert_eq!(written, 2, "{kind:?}: rows written\n{}", migrated.plan);
        }
    }
    Ok(())
}
