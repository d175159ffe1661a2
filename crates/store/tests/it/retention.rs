//! Bounded state (`retain`) on every store: out-of-order changes within the
//! lateness kept, too-late ones refused (a typed error, nothing written) or
//! dropped, the retained integral holding exactly the rows within the
//! bound after every iteration (counted), re-opened half-way and inside
//! `per_group`; and a state that stays the same size on an endless stream.

use graph::{Changes, GraphError, Read, StoredRow};
use operators::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::harness::{Kind, check_view, fail, kinds, out};
use crate::oracle::{self, Rel, bump, from_rows};

/// 32 cases per property by default; `PROPTEST_CASES` overrides.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// `(key, event time, tag)`.
type Ev = (i64, i64, i64);

const LATENESS: i64 = 4;

/// Batches whose times drift upwards (batch `b` around `2·b`), some within
/// the lateness and some older than it.
fn drifting() -> impl Strategy<Value = Vec<Vec<(Ev, i64)>>> {
    let row = (0i64..2, -7i64..3, 0i64..2);
    let weight = prop_oneof![Just(1i64), Just(1i64), Just(-1i64), Just(2i64)];
    prop::collection::vec(prop::collection::vec((row, weight), 0..=5), 1..=10).prop_map(|batches| {
        batches
            .into_iter()
            .enumerate()
            .map(|(b, rows)| {
                rows.into_iter()
                    .map(|((k, dt, tag), w)| ((k, 2 * b as i64 + dt, tag), w))
                    .collect()
            })
            .collect()
    })
}

/// The accepted rows, watermark and outcome of feeding `batches` to a
/// retained stream, computed from the definition.
struct Model {
    accepted: Rel<Ev>,
    watermark: Option<i64>,
}

impl Model {
    /// Feeds one batch; `false` when `Late::Refuse` refuses it.
    fn feed(&mut self, batch: &[(Ev, i64)], late: Late) -> bool {
        let change = from_rows(batch.iter().copied());
        let Some(newest) = change.keys().map(|e| e.1).max() else {
            return true;
        };
        let wm = self.watermark.map_or(newest, |w| w.max(newest));
        let bound = wm - LATENESS;
        if late == Late::Refuse && change.keys().any(|e| e.1 < bound) {
            return false;
        }
        self.watermark = Some(wm);
        for (e, w) in change {
            if e.1 >= bound {
                bump(&mut self.accepted, &e, w);
            }
        }
        true
    }

    /// The rows the retained integral holds: those within the bound, and
    /// rows of negative weight (never removed).
    fn state(&self) -> Rel<Ev> {
        let bound = self.watermark.map_or(i64::MIN, |w| w - LATENESS);
        oracle::filter(&self.accepted, |e| e.1 >= bound)
            .into_iter()
            .chain(
                self.accepted
                    .iter()
                    .filter(|(e, w)| **w < 0 && e.1 < bound)
                    .map(|(e, w)| (*e, *w)),
            )
            .collect()
    }

    /// The query's output from scratch: the self-join on (key, time) of the
    /// accepted rows (`grouped`: and tag), tagged 0, and their distinct,
    /// tagged 1.
    fn output(&self, grouped: bool) -> Rel<(i64, Ev, Ev)> {
        let mut out = Rel::new();
        let key = |e: &Ev| (e.0, e.1, if grouped { e.2 } else { 0 });
        for ((a, b), w) in oracle::join(&self.accepted, &self.accepted, key, key) {
            bump(&mut out, &(0, a, b), w);
        }
        for (e, w) in oracle::distinct(&self.accepted) {
            bump(&mut out, &(1, e, e), w);
        }
        out
    }
}

/// Runs `batches` through a retained stream joined with itself on (key,
/// time) and made distinct (exact under retention: rows meet rows of their
/// own time), `grouped` inside `per_group`, checking the outputs, the
/// refusals and the retained integral's rows after every batch.
fn drive(
    kind: Kind,
    late: Late,
    grouped: bool,
    batches: &[Vec<(Ev, i64)>],
) -> Result<(), TestCaseError> {
    let at = Index::new("at", |e: &Ev| e.1);
    let key = Index::new("key", |e: &Ev| (e.0, e.1));
    let (graph, (input, output)) = Graph::build(|q| {
        let (input, x) = q.input::<Ev>("x")?;
        let x = x.transient();
        let result = if grouped {
            let by_tag = Index::new("tag", |e: &Ev| e.2);
            x.group(&by_tag)
                .per_group(|g| {
                    let kept = g.retain(&at, LATENESS, late);
                    let pairs = kept.join(kept, &key, &key).map(|p| (0, p.left, p.right));
                    pairs.add(kept.distinct().map(|e| (1, *e, *e)))
                })
                .flatten()
                .map(|p| p.left)
        } else {
            let kept = x.retain(&at, LATENESS, late);
            let pairs = kept.join(kept, &key, &key).map(|p| (0, p.left, p.right));
            pairs.add(kept.distinct().map(|e| (1, *e, *e)))
        };
        Ok((input, out(q, result)?))
    })
    .map_err(fail)?;
    let spec = graph
        .states()
        .iter()
        .find(|s| s.path().as_str().ends_with(".retain"))
        .cloned()
        .ok_or_else(|| fail("no retained integral"))?;
    let mut store = kind.open(&graph).map_err(fail)?;
    let mut model = Model {
        accepted: Rel::new(),
        watermark: None,
    };
    let mut acc: Rel<(i64, Ev, Ev)> = Rel::new();
    for (i, batch) in batches.iter().enumerate() {
        if i == batches.len() / 2 {
            store = store.reopen(&graph).map_err(fail)?;
        }
        let accepted = model.feed(batch, late);
        let change: ZSet<Ev> = batch.iter().copied().collect();
        let result = graph.iteration(&mut *store, Changes::new().zset(&input, change));
        match (accepted, result) {
            (true, Ok(out)) => {
                for (v, w) in out.get(&output).map_err(fail)?.iter() {
                    bump(&mut acc, v, w);
                }
            }
            (false, Err(GraphError::LateChange { .. })) => {}
            (_, result) => {
                return Err(fail(format!(
                    "{kind:?} batch {i}: accepted {accepted}, got {:?}",
                    result.map(|_| ())
                )));
            }
        }
        prop_assert_eq!(&acc, &model.output(grouped), "{:?} after batch {}", kind, i);
        let rows: Rel<Ev> = if grouped {
            let mut rows: Vec<StoredRow<Pair<Ev, i64>>> = Vec::new();
            store
                .read_committed(&spec, &Read::All, &mut rows)
                .map_err(fail)?;
            rows.into_iter().map(|r| (r.value.left, r.weight)).collect()
        } else {
            let mut rows: Vec<StoredRow<Ev>> = Vec::new();
            store
                .read_committed(&spec, &Read::All, &mut rows)
                .map_err(fail)?;
            rows.into_iter().map(|r| (r.value, r.weight)).collect()
        };
        prop_assert_eq!(
            rows,
            model.state(),
            "{:?}: retained rows after batch {}",
            kind,
            i
        );
        check_view::<(i64, Ev, Ev)>(&mut store, &graph, &format!("{kind:?} after batch {i}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn retention_drops_too_late_changes(b in drifting()) {
        for kind in kinds() {
            drive(kind, Late::Drop, false, &b)?;
        }
    }

    #[test]
    fn retention_refuses_too_late_changes(b in drifting()) {
        for kind in kinds() {
            drive(kind, Late::Refuse, false, &b)?;
        }
    }

    #[test]
    fn retention_inside_per_group(b in drifting()) {
        for kind in kinds() {
            drive(kind, Late::Drop, true, &b)?;
        }
    }

    #[test]
    fn retention_refuses_too_late_changes_inside_per_group(b in drifting()) {
        for kind in kinds() {
            drive(kind, Late::Refuse, true, &b)?;
        }
    }
}

/// An endless stream with a moving window: 10 new rows per iteration at
/// the next time, lateness 5. The retained integral (a join's state) holds
/// the 60 rows of the last 6 times after every iteration, never more.
#[test]
fn state_stays_flat_on_an_endless_stream() {
    let at = Index::new("at", |e: &Ev| e.1);
    let key = Index::new("key", |e: &Ev| (e.0, e.1));
    let (graph, (input, out)) = Graph::build(|q| {
        let (input, x) = q.input::<Ev>("x")?;
        let kept = x.transient().retain(&at, 5, Late::Refuse);
        Ok((input, q.output("pairs", kept.join(kept, &key, &key))?))
    })
    .unwrap();
    let spec = graph
        .states()
        .iter()
        .find(|s| s.path().as_str() == "x.retain")
        .cloned()
        .unwrap();
    for kind in kinds() {
        let mut store = kind.open(&graph).unwrap();
        for t in 0..200i64 {
            let rows = (0..10).map(|k| (k, t, 0));
            let change = graph.insert(&mut *store, &input, rows).unwrap();
            assert_eq!(change.get(&out).unwrap().len(), 10, "{kind:?} at {t}");
            let mut rows: Vec<StoredRow<Ev>> = Vec::new();
            store.read_committed(&spec, &Read::All, &mut rows).unwrap();
            assert_eq!(rows.len() as i64, 10 * (t.min(5) + 1), "{kind:?} at {t}");
            assert!(rows.iter().all(|r| r.value.1 >= t - 5), "{kind:?} at {t}");
        }
    }
}

/// A too-late change is refused with a typed error naming the stream, its
/// time and the bound, on every store, and nothing of its iteration is
/// written: an in-time change after it goes through as if it never came.
#[test]
fn a_too_late_change_is_refused_and_nothing_is_written() {
    let at = Index::new("at", |e: &Ev| e.1);
    let (graph, (input, out)) = Graph::build(|q| {
        let (input, x) = q.input::<Ev>("x")?;
        let kept = x.transient().retain(&at, 3, Late::Refuse);
        Ok((input, q.output("set", kept.distinct())?))
    })
    .unwrap();
    for kind in kinds() {
        let mut store = kind.open(&graph).unwrap();
        graph.insert(&mut *store, &input, [(0, 10, 0)]).unwrap();
        // Out of order within the lateness: kept.
        let change = graph.insert(&mut *store, &input, [(0, 8, 0)]).unwrap();
        assert_eq!(
            change.get(&out).unwrap(),
            &zset! { (0, 8, 0) => 1 },
            "{kind:?}"
        );
        // Older than 10 − 3, together with an in-time row: all refused.
        let err = graph
            .insert(&mut *store, &input, [(0, 6, 0), (0, 11, 0)])
            .unwrap_err();
        match &err {
            GraphError::LateChange {
                path,
                time,
                bound,
                watermark,
            } => {
                assert_eq!(path.as_str(), "x.retain", "{kind:?}");
                assert_eq!(
                    (time.as_str(), bound.as_str(), watermark.as_str()),
                    ("6", "8", "11"),
                    "{kind:?}"
                );
            }
            other => panic!("{kind:?}: {other}"),
        }
        // The refused iteration moved nothing: 7 is within 10 − 3.
        let change = graph.insert(&mut *store, &input, [(0, 7, 0)]).unwrap();
        assert_eq!(
            change.get(&out).unwrap(),
            &zset! { (0, 7, 0) => 1 },
            "{kind:?}"
        );
    }
}

/// Inside `per_group` too, a too-late change in any group is refused with
/// a typed error naming the grouped stream (the watermark is the
/// stream's, across groups), nothing of its iteration is written, and the
/// retained integral keeps exactly the rows of the iterations before it.
#[test]
fn a_too_late_change_inside_per_group_is_refused_and_nothing_is_written() {
    let at = Index::new("at", |e: &Ev| e.1);
    let by_tag = Index::new("tag", |e: &Ev| e.2);
    let (graph, (input, out)) = Graph::build(|q| {
        let (input, x) = q.input::<Ev>("x")?;
        let set = x
            .transient()
            .group(&by_tag)
            .per_group(|g| g.retain(&at, 3, Late::Refuse).distinct())
            .flatten();
        Ok((input, q.output("set", set)?))
    })
    .unwrap();
    let spec = graph
        .states()
        .iter()
        .find(|s| s.path().as_str().ends_with(".retain"))
        .cloned()
        .expect("a retained integral");
    let kept = |store: &mut crate::harness::Opened| -> Vec<(Ev, i64)> {
        let mut rows: Vec<StoredRow<Pair<Ev, i64>>> = Vec::new();
        store.read_committed(&spec, &Read::All, &mut rows).unwrap();
        let mut rows: Vec<(Ev, i64)> = rows.into_iter().map(|r| (r.value.left, r.weight)).collect();
        rows.sort();
        rows
    };
    for kind in kinds() {
        let mut store = kind.open(&graph).unwrap();
        graph.insert(&mut *store, &input, [(0, 10, 0)]).unwrap();
        // Another group, out of order within the lateness: kept.
        let change = graph.insert(&mut *store, &input, [(0, 8, 1)]).unwrap();
        assert_eq!(
            change.get(&out).unwrap(),
            &zset! { Pair::new((0, 8, 1), 1) => 1 },
            "{kind:?}"
        );
        // Older than 10 − 3 in group 1, with an in-time row of group 0
        // that moves the watermark: all refused.
        let err = graph
            .insert(&mut *store, &input, [(0, 6, 1), (0, 11, 0)])
            .unwrap_err();
        match &err {
            GraphError::LateChange {
                path,
                time,
                bound,
                watermark,
            } => {
                assert!(path.as_str().ends_with(".retain"), "{kind:?}: {path}");
                assert_eq!(
                    (time.as_str(), bound.as_str(), watermark.as_str()),
                    ("6", "8", "11"),
                    "{kind:?}"
                );
            }
            other => panic!("{kind:?}: {other}"),
        }
        assert_eq!(
            kept(&mut store),
            vec![((0, 8, 1), 1), ((0, 10, 0), 1)],
            "{kind:?}: the retained rows after the refusal"
        );
        // The refused iteration moved nothing: 7 is within 10 − 3, in
        // either group, and (0, 11, 0) never came.
        let change = graph
            .insert(&mut *store, &input, [(0, 7, 0), (0, 7, 1)])
            .unwrap();
        assert_eq!(
            change.get(&out).unwrap(),
            &zset! { Pair::new((0, 7, 0), 0) => 1, Pair::new((0, 7, 1), 1) => 1 },
            "{kind:?}"
        );
        assert_eq!(
            kept(&mut store),
            vec![
                ((0, 7, 0), 1),
                ((0, 7, 1), 1),
                ((0, 8, 1), 1),
                ((0, 10, 0), 1)
            ],
            "{kind:?}: the retained rows"
        );
    }
}

/// A negative lateness is refused when the query is built.
#[test]
fn a_negative_lateness_is_a_build_error() {
    let at = Index::new("at", |e: &Ev| e.1);
    let err = Graph::build(|q| {
        let (input, x) = q.input::<Ev>("x")?;
        Ok((input, q.output("kept", x.retain(&at, -1, Late::Drop))?))
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            GraphError::InvalidParameter {
                operator: "retain",
                ..
            }
        ),
        "{err}"
    );
}
