//! Feedback in outer time (`Query::feedback`): the original's hand-written
//! recursion, `delayed = z⁻¹(added)`, `added = z + map(z ⋈ delayed)`,
//! against a step-by-step evaluation of its definition, over several
//! iterations with removals, on every store, re-opened half-way, its
//! output cached and read back through SQL; and a feedback never connected.

use graph::{Changes, GraphError};
use operators::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::harness::{check_cache_view, fail, kinds, out_named};
use crate::oracle::{self, Rel, from_rows};

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

type Edge = (i64, i64);

/// `added` at every step, from the definitions: with `I(s)` the running
/// sum of `s` and `J` the join of `(a, b)` and `(b', c)` on `b = b'` mapped
/// to `(a, c)`, `delayed[t] = added[t − 1]` (empty at 0) and
/// `added[t] = z[t] + J(I(z)[t], I(delayed)[t]) − J(I(z)[t − 1], I(delayed)[t − 1])`.
fn model(steps: &[Rel<Edge>]) -> Vec<Rel<Edge>> {
    let compose = |a: &Rel<Edge>, b: &Rel<Edge>| -> Rel<Edge> {
        oracle::map(&oracle::join(a, b, |x| x.1, |y| y.0), |(x, y)| (x.0, y.1))
    };
    let (mut iz, mut id) = (Rel::new(), Rel::new());
    let mut before = Rel::new();
    let mut delayed: Rel<Edge> = Rel::new();
    let mut out = Vec::new();
    for z in steps {
        iz = oracle::add(&iz, z);
        id = oracle::add(&id, &delayed);
        let now = compose(&iz, &id);
        let added = oracle::add(z, &oracle::add(&now, &oracle::neg(&before)));
        before = now;
        delayed = added.clone();
        out.push(added);
    }
    out
}

fn run(kind: crate::harness::Kind, steps: &[Rel<Edge>]) -> Result<(), TestCaseError> {
    let on_left = Index::new("to", |e: &Edge| e.1);
    let on_right = Index::new("from", |e: &Edge| e.0);
    let (graph, (input, output)) = Graph::build(|q| {
        let (input, z) = q.input::<Edge>("z")?;
        let (feedback, delayed) = q.feedback::<Edge>("delayed")?;
        let joined = z.join(delayed, &on_left, &on_right);
        let added = joined.map(|p| (p.left.0, p.right.1)).add(z);
        feedback.connect(added);
        // Cached too: its view is read back through SQL at every step.
        Ok((input, out_named(q, "added", added)?))
    })
    .map_err(fail)?;
    let expected = model(steps);
    let mut store = kind.open(&graph).map_err(fail)?;
    for (i, step) in steps.iter().enumerate() {
        if i == steps.len() / 2 {
            store = store.reopen(&graph).map_err(fail)?;
        }
        let change: ZSet<Edge> = step.iter().map(|(e, w)| (*e, *w)).collect();
        let out = graph
            .iteration(&mut *store, Changes::new().zset(&input, change))
            .map_err(fail)?;
        let got: Rel<Edge> = out
            .get(&output)
            .map_err(fail)?
            .iter()
            .map(|(e, w)| (*e, w))
            .collect();
        prop_assert_eq!(&got, &expected[i], "{:?} at step {}", kind, i);
        let what = format!("{kind:?} at step {i}");
        check_cache_view::<Edge>(&mut store, &graph, "added_cache", &what)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Edges added and removed over up to 7 iterations.
    #[test]
    fn feedback_loop_with_removals(b in prop::collection::vec(
        prop::collection::vec(((0i64..4, 0i64..4), prop_oneof![Just(1i64), Just(1i64), Just(-1i64)]), 0..4),
        1..8,
    )) {
        let steps: Vec<Rel<Edge>> = b.into_iter().map(from_rows).collect();
        for kind in kinds() {
            run(kind, &steps)?;
        }
    }
}

/// The original's test: the same edges three times, then one removed.
#[test]
fn the_originals_recursion_over_several_steps() {
    let edges: Rel<Edge> = from_rows([(0, 1), (1, 2), (2, 3), (0, 4), (1, 5)].map(|e| (e, 1)));
    let steps = [
        edges.clone(),
        edges.clone(),
        edges,
        from_rows([((1, 2), -1)]),
    ];
    let expected = model(&steps);
    let keys: Vec<Edge> = expected[2].keys().copied().collect();
    assert_eq!(
        keys,
        [
            (0, 1),
            (0, 2),
            (0, 3),
            (0, 4),
            (0, 5),
            (1, 2),
            (1, 3),
            (1, 5),
            (2, 3)
        ]
    );
    for kind in kinds() {
        run(kind, &steps).unwrap();
    }
}

/// A feedback dropped before it is connected fails the build, naming it.
#[test]
fn an_unconnected_feedback_is_a_build_error() {
    let err = Graph::build(|q| {
        let (input, z) = q.input::<Edge>("z")?;
        let (_feedback, delayed) = q.feedback::<Edge>("delayed")?;
        Ok((input, q.output("out", z.add(delayed))?))
    })
    .unwrap_err();
    assert!(
        matches!(&err, GraphError::UnconnectedFeedback { path, .. } if path.as_str() == "delayed"),
        "{err}"
    );
}
