//! `verify` and `repair`: drift found by recomputing from the kept inputs.

use operators::prelude::*;

use super::*;

fn drifted(report: &store::Verification) -> Vec<&str> {
    report.drifted().map(|s| s.path.as_str()).collect()
}

/// `verify` finds the one change a store cannot detect, a closure changed
/// without a version bump, changing nothing; `repair` rewrites the drifted
/// state from the kept inputs and the ingest goes on with the new answer.
#[test]
fn verify_finds_a_closure_changed_without_a_version_bump_and_repair_fixes_it() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        let mut fed = items(&[("a", 1), ("b", 2), ("a", 3)]);
        let v1 = seeded(&place, Version::V1, &fed)?;
        assert!(place.verify(&v1, false)?.is_clean(), "{kind:?}");
        let silent = query(Version::DoubledSilently)?;
        let cache = silent.sums.as_ref().expect("sums");
        // It opens without complaint, serving the old sums.
        assert_eq!(
            cache.zset(&mut *place.open(&silent, false)?.store)?,
            sums(&fed, 1)
        );
        let report = place.verify(&silent, false)?;
        // The cache and the group's reduced state, not the kept input.
        let paths = drifted(&report);
        assert!(
            paths.contains(&"sums") && !paths.contains(&"items"),
            "{kind:?}: {report}"
        );
        let sums_check = report
            .drifted()
            .find(|s| s.path == "sums")
            .expect("sums drifted");
        assert_eq!(sums_check.differences.len(), 4, "{kind:?}: {report}");
        assert!(report.to_string().contains("Pair(8, \"a\")"), "{report}");
        // Verifying changed nothing.
        assert_eq!(
            cache.zset(&mut *place.open(&silent, false)?.store)?,
            sums(&fed, 1)
        );
        let repaired = place.verify(&silent, true)?;
        assert!(
            repaired.drifted().all(|s| s.repaired),
            "{kind:?}: {repaired}"
        );
        let mut o = place.open(&silent, false)?;
        assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 2), "{kind:?}");
        let more = items(&[("a", -1), ("c", 5)]);
        silent
            .graph
            .insert(&mut *o.store, &silent.items, more.clone())?;
        fed.extend(more);
        assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 2), "{kind:?}");
        drop(o);
        assert!(place.verify(&silent, false)?.is_clean(), "{kind:?}");
    }
    Ok(())
}

/// `verify` finds rows edited by hand (one deleted, one's weight changed)
/// and names them; `repair` puts them back.
#[test]
fn verify_finds_rows_edited_by_hand() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        let fed = items(&[("a", 1), ("b", 2), ("c", 3)]);
        let v1 = seeded(&place, Version::AllItems, &fed)?;
        place.execute(
            "DELETE FROM {p}sums WHERE identity = (SELECT min(identity) FROM {p}sums); \
             UPDATE {p}all_items SET c = 7 WHERE identity = (SELECT max(identity) FROM {p}all_items)",
        );
        let report = place.verify(&v1, false)?;
        let mut paths = drifted(&report);
        paths.sort();
        assert_eq!(paths, ["all_items", "sums"], "{kind:?}: {report}");
        for check in report.drifted() {
            assert_eq!(check.differences.len(), 1, "{kind:?}: {report}");
            let d = &check.differences[0];
            let expected = if check.path == "sums" { (0, 1) } else { (7, 1) };
            assert_eq!((d.stored, d.expected), expected, "{kind:?}: {report}");
        }
        place.verify(&v1, true)?;
        assert!(place.verify(&v1, false)?.is_clean(), "{kind:?}");
        let mut o = place.open(&v1, false)?;
        let cache = v1.sums.as_ref().expect("sums");
        assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 1), "{kind:?}");
    }
    Ok(())
}

/// On the memory store, `verify` after an ingest with removals is clean,
/// and a graph verifying a store opened for another query is refused.
#[test]
fn verify_on_memory_is_clean_after_an_ingest_and_refuses_another_graph() -> R {
    use store::{GraphVerify, Verifiable};
    let v1 = query(Version::AllItems)?;
    let mut memory = store::Memory::new(&v1.graph);
    v1.graph.insert(
        &mut memory,
        &v1.items,
        items(&[("a", 1), ("b", 2), ("a", 3)]),
    )?;
    v1.graph
        .remove(&mut memory, &v1.items, items(&[("a", 1)]))?;
    let report = memory.verify()?;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.states.len(), v1.graph.states().len());
    assert!(memory.repair()?.is_clean());
    let other = query(Version::OnlyItems)?;
    assert!(matches!(
        other.graph.verify(&mut memory),
        Err(GraphError::WrongStore { .. })
    ));
    Ok(())
}
