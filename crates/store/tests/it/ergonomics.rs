//! The public API without friction: each test is a piece of friction a
//! user met writing queries, and shows it gone on every store.

use operators::prelude::*;

use crate::harness::kinds;

type R = Result<(), GraphError>;

/// Outputs have a name space of their own: an input and an output may
/// share a name. Inputs, caches and named streams share one (each names a
/// table), and a clash there says so and what to do.
#[test]
fn an_output_may_share_its_name_with_an_input() -> R {
    for kind in kinds() {
        let (graph, (input, out, cache)) = Graph::build(|q| {
            let (input, b) = q.input::<i64>("b")?;
            let cache = q.cache("doubled", b.map(|x| x * 2), &[])?;
            Ok((input, q.output("b", b)?, cache))
        })?;
        let mut store = kind.open(&graph)?;
        let change = graph.insert(&mut *store, &input, [1, 2])?;
        assert_eq!(change.get(&out)?, &zset! { 1 => 1, 2 => 1 }, "{kind:?}");
        assert_eq!(cache.zset(&mut *store)?, zset! { 2 => 1, 4 => 1 });
    }
    let err = Graph::build(|q| {
        let (_input, b) = q.input::<i64>("b")?;
        q.cache("b", b, &[])
    })
    .expect_err("an input and a cache of one name");
    let message = err.to_string();
    assert!(matches!(err, GraphError::DuplicatePath { .. }), "{err}");
    assert!(message.contains("share one name space"), "{message}");
    assert!(message.contains("another name"), "{message}");
    let err = Graph::build(|q| {
        let (_input, b) = q.input::<i64>("b")?;
        Ok((q.output("out", b)?, q.output("out", b)?))
    })
    .expect_err("two outputs of one name");
    assert!(matches!(err, GraphError::DuplicatePath { .. }), "{err}");
    Ok(())
}

/// A cache read through a descending index takes and returns plain keys
/// (`Desc` orders the index and is never seen), on every store.
#[test]
fn descending_keys_are_plain_in_reads() -> R {
    type Score = (String, i64, Option<i64>);
    let by_points = Index::new("points", |s: &Score| Desc(s.1));
    let by_both = Index::new("both", |s: &Score| (Desc(s.2), s.0.clone()));
    let row = |n: &str, p: i64, b: Option<i64>| (n.to_string(), p, b);
    for kind in kinds() {
        let (graph, (input, cache)) = Graph::build(|q| {
            let (input, scores) = q.input::<Score>("scores")?;
            Ok((input, q.cache("scores_cache", scores, &[&by_points, &by_both])?))
        })?;
        let mut store = kind.open(&graph)?;
        graph.insert(
            &mut *store,
            &input,
            [row("a", 1, None), row("b", 5, Some(2)), row("c", 3, Some(7))],
        )?;
        let points: Vec<(i64, String)> = cache
            .iter_by_index(&mut *store, &by_points, Some(&[1, 5]))?
            .into_iter()
            .map(|(k, v, _)| (k, v.0))
            .collect();
        assert_eq!(points, [(5, "b".into()), (1, "a".into())], "{kind:?}");
        let all: Vec<(Option<i64>, String)> = cache
            .iter_by_index(&mut *store, &by_both, None)?
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        let expected = [(Some(7), "c"), (Some(2), "b"), (None, "a")];
        let expected: Vec<(Option<i64>, String)> =
            expected.iter().map(|(k, n)| (*k, n.to_string())).collect();
        assert_eq!(all, expected, "{kind:?}");
        let one = cache.iter_by_index(&mut *store, &by_both, Some(&[(None, "a".to_string())]))?;
        assert_eq!(one.len(), 1, "{kind:?}");
    }
    Ok(())
}
