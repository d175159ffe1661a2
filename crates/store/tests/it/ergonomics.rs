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
