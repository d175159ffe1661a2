//! Bad input gets a typed error naming what and where, never a panic, and
//! loses nothing: a failed iteration is rolled back.

use operators::prelude::*;

use crate::harness::kinds;

type R = Result<(), GraphError>;

#[test]
fn make_scalar_of_a_non_singleton_is_an_error_and_rolls_back() -> R {
    for kind in kinds() {
        let (graph, (input, total)) = Graph::build(|q| {
            let (input, x) = q.input::<i64>("x")?;
            let total = x.integrate().make_scalar(0);
            Ok((input, q.output_scalar("total", total)?))
        })?;
        let mut store = kind.open(&graph)?;
        assert_eq!(graph.insert(&mut *store, &input, [5])?.get(&total)?, &5);
        let err = graph
            .insert(&mut *store, &input, [6])
            .expect_err("two values");
        match &err {
            GraphError::NotScalar { path, detail } => {
                assert!(path.as_str().contains("make_scalar"), "{path}");
                assert_eq!(detail, "2 values");
            }
            other => panic!("expected NotScalar, got {other}"),
        }
        // Nothing of the failed iteration was kept: removing nothing still
        // sees only the 5.
        assert_eq!(
            graph.iteration(&mut *store, Changes::new())?.get(&total)?,
            &5
        );
    }
    Ok(())
}

#[test]
fn a_failing_user_function_rolls_back_the_whole_iteration() -> R {
    for kind in kinds() {
        let (graph, (input, sums, cache)) = Graph::build(|q| {
            let (input, words) = q.input::<String>("words")?;
            let numbers = words.try_map(|w| w.parse::<i64>());
            let cache = q.cache("all_words", words, &[])?;
            Ok((input, q.output("sum", numbers.reduce(0i64, |n| *n))?, cache))
        })?;
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, ["1".to_string(), "2".to_string()])?;
        let err = graph
            .insert(&mut *store, &input, ["3".to_string(), "x".to_string()])
            .expect_err("x is no number");
        assert!(
            matches!(&err, GraphError::User { path, .. } if path.as_str().contains("try_map")),
            "{err}"
        );
        // The cache (written by the same iteration) did not take the new words.
        assert_eq!(
            cache.zset(&mut *store)?,
            zset! { "1".to_string() => 1, "2".to_string() => 1 }
        );
        let out = graph.insert(&mut *store, &input, ["4".to_string()])?;
        assert_eq!(out.get(&sums)?, &zset! { 3 => -1, 7 => 1 });
    }
    Ok(())
}

#[test]
fn reading_a_cache_through_an_index_it_does_not_have() -> R {
    for kind in kinds() {
        let by_len = Index::new("len", |s: &String| s.len() as i64);
        let other = Index::new("first", |s: &String| {
            s.chars().next().map(String::from).unwrap_or_default()
        });
        let (graph, cache) = Graph::build(|q| {
            let (_input, words) = q.input::<String>("words")?;
            q.cache("word_cache", words, &[&by_len])
        })?;
        let mut store = kind.open(&graph)?;
        assert!(
            cache
                .iter_by_index(&mut *store, &by_len, Some(&[1]))?
                .is_empty()
        );
        let err = cache
            .iter_by_index(&mut *store, &other, None)
            .expect_err("no such index");
        match err {
            GraphError::MissingIndex {
                path,
                index,
                available,
            } => {
                assert_eq!(path.as_str(), "word_cache");
                assert!(index.starts_with("first("), "{index}");
                assert!(available.starts_with("len("), "{available}");
            }
            other => panic!("expected MissingIndex, got {other}"),
        }
    }
    Ok(())
}

#[test]
fn duplicate_paths_name_both_places() {
    let err = Graph::build(|q| {
        let (_a, _) = q.input::<i64>("x")?;
        let (_b, _) = q.input::<i64>("x")?;
        Ok(())
    })
    .expect_err("duplicate");
    match err {
        GraphError::DuplicatePath {
            path,
            first,
            second,
        } => {
            assert_eq!(path.as_str(), "x");
            assert!(first.to_string().contains("bad_input.rs"), "{first}");
            assert!(second.0.line() > first.0.line());
        }
        other => panic!("expected DuplicatePath, got {other}"),
    }
    // Two operators keeping state for the same stream under the same path.
    let err = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        let a = x.reduce(0i64, |v| *v);
        let b = x.reduce(0i64, |v| v * 2);
        Ok((input, q.output("a", a)?, q.output("b", b)?))
    })
    .expect_err("two reduces of x");
    assert!(
        matches!(&err, GraphError::DuplicatePath { path, .. } if path.as_str() == "x/reduce"),
        "{err}"
    );
    // Naming the stream resolves it.
    Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        let a = x.reduce(0i64, |v| *v);
        let b = x.named("doubled_input").reduce(0i64, |v| v * 2);
        Ok((input, q.output("a", a)?, q.output("b", b)?))
    })
    .expect("named apart");
}

#[test]
fn invalid_names_and_indexes() {
    for name in ["", "/x", "x/", "a//b", "tab\there"] {
        let err = Graph::build(|q| Ok(q.input::<i64>(name)?.0)).expect_err(name);
        assert!(
            matches!(err, GraphError::InvalidName { .. }),
            "{name:?}: {err}"
        );
    }
    let bad = Index::with_parts("pair", &["only_one"], |r: &(i64, i64)| (r.0, r.1));
    let err = Graph::build(|q| {
        let (_input, x) = q.input::<(i64, i64)>("x")?;
        q.cache("c", x, &[&bad])
    })
    .expect_err("two columns, one name");
    assert!(
        matches!(
            err,
            GraphError::InvalidIndex {
                parts: 1,
                columns: 2,
                ..
            }
        ),
        "{err}"
    );
    // Quotes, semicolons and unicode are fine names (stores quote them).
    Graph::build(|q| Ok(q.input::<i64>("users'; DROP TABLE x; --ñ")?.0))
        .expect("any printable name");
}

#[test]
fn handles_and_stores_of_another_graph() -> R {
    let build = || {
        Graph::build(|q| {
            let (input, x) = q.input::<i64>("x")?;
            Ok((input, q.output("y", x.distinct())?))
        })
    };
    let (g1, (in1, out1)) = build()?;
    let (g2, (in2, _out2)) = build()?;
    let (other_shape, _) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        Ok((input, q.output("y", x.count())?))
    })?;
    for kind in kinds() {
        let mut store = kind.open(&g1)?;
        // An input handle of another graph (even one built the same way).
        let err = g1
            .insert(&mut *store, &in2, [1])
            .expect_err("foreign input");
        assert!(matches!(err, GraphError::ForeignInput { .. }), "{err}");
        // A store opened for a graph of another shape.
        let err = other_shape
            .iteration(&mut *store, Changes::new())
            .expect_err("wrong store");
        assert!(matches!(err, GraphError::WrongStore { .. }), "{err}");
        // A store opened for an identically built graph works.
        let out = g2.insert(&mut *store, &in2, [1])?;
        let err = out.get(&out1).expect_err("output of another graph");
        assert!(matches!(err, GraphError::ForeignInput { .. }), "{err}");
        assert_eq!(
            g1.insert(&mut *store, &in1, [2])?.get(&out1)?,
            &zset! { 2 => 1 }
        );
    }
    Ok(())
}
