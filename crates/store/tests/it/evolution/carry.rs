//! What a migration carries over: renamed states, inputs of a changed row type,
//! Memory stores, dropped tables kept on request.

use graph::PlanAction;
use operators::prelude::*;
use store::StoreError;

use super::*;

/// A rename the query declares carries the states over: their tables are
/// renamed, nothing is computed or written, the ingest goes on, and once
/// migrated the old names need no mention.
#[test]
fn a_declared_rename_carries_the_states_over_without_writing_a_row() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        let mut fed = items(&[("a", 1), ("b", 2), ("a", 3)]);
        seeded(&place, Version::V1, &fed)?;
        let renamed = query(Version::Renamed)?;
        let err = place.open(&renamed, false).err().expect("a changed query");
        let plan = plan_of(&err).unwrap_or_else(|| panic!("{kind:?}: {err}"));
        assert_eq!(
            action(plan, "entries"),
            Some(&PlanAction::Renamed {
                from: Some("items".into())
            }),
            "{kind:?}: {plan}"
        );
        assert_eq!(
            action(plan, "totals"),
            Some(&PlanAction::Renamed {
                from: Some("sums".into())
            }),
            "{kind:?}: {plan}"
        );
        assert!(
            plan.entries
                .iter()
                .all(|e| matches!(e.action, PlanAction::Renamed { .. })),
            "{kind:?}: nothing new, changed or dropped: {plan}"
        );
        let mut o = place.open(&renamed, true)?;
        assert_eq!(o.rows_written, 0, "{kind:?}");
        let cache = renamed.sums.as_ref().expect("totals");
        assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 1), "{kind:?}");
        let more = items(&[("b", 5), ("c", 4)]);
        renamed
            .graph
            .insert(&mut *o.store, &renamed.items, more.clone())?;
        fed.extend(more);
        assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 1), "{kind:?}");
        drop(o);
        assert!(
            !place.has_table("sums") && !place.has_table("items"),
            "{kind:?}"
        );
        assert!(
            place.has_table("totals") && place.has_table("entries"),
            "{kind:?}"
        );
        let settled = query(Version::RenamedSettled)?;
        let mut o = place.open(&settled, false)?;
        assert!(o.migration.is_none(), "{kind:?}");
        let cache = settled.sums.as_ref().expect("totals");
        assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 1), "{kind:?}");
        assert!(place.verify(&settled, false)?.is_clean(), "{kind:?}");
    }
    Ok(())
}

/// An item with a note: the row type `Item` became.
type Noted = (String, i64, String);

/// The query over noted items: sums per key and a cache of the notes;
/// with `migrate`, it says how an `Item` becomes a `Noted`.
/// The handles of the noted query.
type NotedHandles = (Input<Noted>, Cache<Pair<i64, String>>, Cache<String>);

fn noted_query(migrate: bool) -> Result<(Graph, NotedHandles), GraphError> {
    let by_key = Index::new("k", |i: &Noted| i.0.clone());
    Graph::build(|q| {
        if migrate {
            q.migrate_input("items", |(k, v): Item| (k, v, "old".to_string()));
        }
        let (input, items) = q.input::<Noted>("items")?;
        let summed = items.group_reduce_flatten(&by_key, 0i64, |i: &Noted| i.1);
        let sums = q.cache("sums", summed, &[])?;
        let notes = q.cache("notes", items.map(|i: &Noted| i.2.clone()), &[])?;
        Ok((input, sums, notes))
    })
}

/// An input whose row type changed is carried over by the query's
/// function, and everything downstream of it computed from the mapped
/// rows; without a function the migration is refused, naming the input.
#[test]
fn an_input_whose_row_type_changed_is_migrated_by_the_query_function() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        let fed = items(&[("a", 1), ("b", 2), ("a", 3)]);
        seeded(&place, Version::V1, &fed)?;
        let (plain, _) = noted_query(false)?;
        let err = place
            .open_graph(&plain, true, store::OpenOptions::default())
            .err()
            .expect("no function to migrate the input");
        assert!(
            matches!(&err, GraphError::Store(StoreError::InputNotKept { input, why, .. })
                if input == "items" && why.contains("migrate_input")),
            "{kind:?}: {err}"
        );
        let (graph, (input, sums_cache, notes)) = noted_query(true)?;
        let mut o = place.open_graph(&graph, true, store::OpenOptions::default())?;
        let plan = o.migration.clone().expect("a migration");
        assert!(
            matches!(action(&plan, "items"), Some(PlanAction::Changed { .. })),
            "{kind:?}: {plan}"
        );
        assert_eq!(sums_cache.zset(&mut *o.store)?, sums(&fed, 1), "{kind:?}");
        assert_eq!(notes.zset(&mut *o.store)?, zset! { "old".to_string() => 3 });
        graph.insert(
            &mut *o.store,
            &input,
            [("c".to_string(), 5, "new".to_string())],
        )?;
        let mut all = fed.clone();
        all.push(("c".to_string(), 5));
        assert_eq!(sums_cache.zset(&mut *o.store)?, sums(&all, 1), "{kind:?}");
        assert_eq!(
            notes.zset(&mut *o.store)?,
            zset! { "old".to_string() => 3, "new".to_string() => 1 }
        );
    }
    Ok(())
}

/// The memory store migrates in place as the SQL stores do on open: new
/// states computed, kept ones moved over, renames carried, an input's row
/// type mapped; handles of the old query are refused from then on.
#[test]
fn a_memory_store_migrates_like_the_sql_stores() -> R {
    let v1 = query(Version::V1)?;
    let mut store = store::Memory::new(&v1.graph);
    let mut old_handle = store.handle();
    let mut fed = items(&[("a", 1), ("b", 2), ("a", 3)]);
    v1.graph.insert(&mut store, &v1.items, fed.clone())?;
    let v2 = query(Version::AllItems)?;
    let plan = store.migrate(&v2.graph)?;
    assert_eq!(action(&plan, "all_items"), Some(&PlanAction::New), "{plan}");
    assert_eq!(action(&plan, "sums"), Some(&PlanAction::Keep), "{plan}");
    let all = v2.all.as_ref().expect("items cache");
    let as_set = |rows: &[Item]| -> ZSet<Item> { rows.iter().map(|i| (i.clone(), 1)).collect() };
    assert_eq!(all.zset(&mut store)?, as_set(&fed));
    let err = v1
        .graph
        .insert(&mut old_handle, &v1.items, items(&[("z", 1)]))
        .expect_err("the store moved on");
    assert!(plan_of(&err).is_some(), "{err}");
    let more = items(&[("c", 4)]);
    v2.graph.insert(&mut store, &v2.items, more.clone())?;
    fed.extend(more);
    assert_eq!(all.zset(&mut store)?, as_set(&fed));
    let renamed = query(Version::Renamed)?;
    let plan = store.migrate(&renamed.graph)?;
    assert_eq!(
        action(&plan, "totals"),
        Some(&PlanAction::Renamed {
            from: Some("sums".into())
        }),
        "{plan}"
    );
    assert_eq!(
        action(&plan, "all_items"),
        Some(&PlanAction::Drop),
        "{plan}"
    );
    let totals = renamed.sums.as_ref().expect("totals");
    assert_eq!(totals.zset(&mut store)?, sums(&fed, 1));
    use store::Verifiable;
    assert!(store.verify()?.is_clean());

    let mut typed = store::Memory::new(&v1.graph);
    v1.graph.insert(&mut typed, &v1.items, fed.clone())?;
    let (graph, (_, sums_cache, notes)) = noted_query(true)?;
    typed.migrate(&graph)?;
    assert_eq!(sums_cache.zset(&mut typed)?, sums(&fed, 1));
    assert_eq!(notes.zset(&mut typed)?, zset! { "old".to_string() => 4 });
    Ok(())
}

/// Asked to, a migration leaves a dropped state's table in place, out of
/// the store's records.
#[test]
fn a_dropped_state_keeps_its_table_when_asked() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        seeded(&place, Version::V1, &items(&[("a", 1), ("b", 2)]))?;
        let v4 = query(Version::OnlyItems)?;
        let options = store::OpenOptions::default().keep_dropped_tables();
        let mut o = place.open_graph(&v4.graph, true, options)?;
        let done = o.migration.clone().expect("a migration");
        assert_eq!(
            action(&done, "sums"),
            Some(&PlanAction::Drop),
            "{kind:?}: {done}"
        );
        assert!(place.has_table("sums"), "{kind:?}: the table stays");
        v4.graph
            .insert(&mut *o.store, &v4.items, items(&[("c", 3)]))?;
        let all = v4.all.as_ref().expect("items");
        assert_eq!(all.zset(&mut *o.store)?.len(), 3, "{kind:?}");
        drop(o);
        // Out of the records: reopening plans nothing.
        assert!(place.open(&v4, false)?.migration.is_none(), "{kind:?}");
    }
    Ok(())
}
