//! Pictures and profiles: `Graph::to_svg`, a profiled iteration's
//! per-vertex measurements, and the rows each state holds, on every store.

use benches::meter_reads::{self, Workload};
use operators::prelude::*;

use crate::harness::kinds;

type R = Result<(), GraphError>;

type Handles = (Input<(i64, String)>, Input<(i64, i64)>, Output<ZSet<i64>>);

/// users ⋈ orders, summed per user: an input, a join reading stored rows
/// through an index, a keyed aggregate and a cache.
fn orders() -> Result<(Graph, Handles), GraphError> {
    Graph::build(|q| {
        let (users, u) = q.input::<(i64, String)>("users")?;
        let (orders, o) = q.input::<(i64, i64)>("orders")?;
        let joined = u
            .join(
                o,
                &<(i64, String)>::index("id", |u| u.0),
                &<(i64, i64)>::index("user", |o| o.0),
            )
            .named("joined");
        q.cache("joined_cache", joined, &[])?;
        let total = joined.map(|p| p.right.1).reduce(0i64, |x| *x);
        Ok((users, orders, q.output("total", total)?))
    })
}

/// A profiled iteration reports, per vertex, the rows it was given and
/// computed and the state rows it read and wrote; the same on every
/// store, and nothing when profiling is off.
#[test]
fn a_profiled_iteration_counts_rows_per_vertex() -> R {
    let (plain, (users, orders_in, total)) = orders()?;
    let graph = plain.profiled();
    assert!(graph.is_profiled() && !plain.is_profiled());
    let mut tables = Vec::new();
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        let out = plain.insert(&mut *store, &users, [(1, "ann".into()), (2, "bob".into())])?;
        assert!(out.profile().is_none(), "{kind:?}: profiling is off");
        let out = graph.insert(&mut *store, &orders_in, [(1, 10), (1, 20), (3, 5)])?;
        assert_eq!(out.get(&total)?, &zset! { 0 => -1, 30 => 1 }, "{kind:?}");
        let p = out.profile().expect("profiled");
        assert_eq!(p.iterations, 1);
        let vertex = |path: &str| {
            p.vertex(path)
                .unwrap_or_else(|| panic!("{kind:?}: no vertex {path} in\n{p}"))
        };
        let input = vertex("orders");
        assert_eq!((input.calls, input.rows_out), (1, 3), "{kind:?}");
        // The join read the one stored user whose id the change names
        // (user 3 has none), and gave two pairs.
        let join = p
            .vertices
            .iter()
            .find(|v| v.op == "join")
            .expect("a join vertex");
        assert_eq!(join.rows_out, 2, "{kind:?}\n{p}");
        assert_eq!(join.state_rows_read, 1, "{kind:?}\n{p}");
        // The integrals wrote the three orders and the two pairs, the
        // aggregate its one total (after reading the one before).
        assert_eq!(
            vertex("orders.integrate").state_rows_written,
            3,
            "{kind:?}\n{p}"
        );
        assert_eq!(
            vertex("joined.integrate").state_rows_written,
            2,
            "{kind:?}\n{p}"
        );
        let reduce = vertex("joined.map.reduce");
        assert_eq!(
            (reduce.state_rows_read, reduce.state_rows_written),
            (1, 1),
            "{kind:?}\n{p}"
        );
        assert!(p.total >= p.commit);
        let table = p.to_string();
        assert!(
            table.contains("rows out") && table.contains("orders"),
            "{table}"
        );
        let mut both = p.clone();
        both.add(p)?;
        assert_eq!(both.iterations, 2);
        assert_eq!(both.vertex("orders").map(|v| v.rows_out), Some(6));
        let (other, _) = orders()?;
        assert!(
            both.add(
                other
                    .profiled()
                    .iteration(&mut store::Memory::new(&other), Changes::new())?
                    .profile()
                    .expect("profiled")
            )
            .is_err()
        );
        tables.push(
            p.vertices
                .iter()
                .map(|v| {
                    (
                        v.path.clone(),
                        v.calls,
                        v.rows_in,
                        v.rows_out,
                        v.state_rows_read,
                        v.state_rows_written,
                    )
                })
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        tables.iter().all(|t| t == &tables[0]),
        "the stores disagree: {tables:?}"
    );
    Ok(())
}

/// `state_sizes` gives every state's rows, from the store: the same on
/// every store (a SQL store counts its table without reading its rows),
/// and what the caches hold.
#[test]
fn state_sizes_count_each_table() -> R {
    let (graph, (users, orders_in, _)) = orders()?;
    let mut all = Vec::new();
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &users, [(1, "ann".into()), (2, "bob".into())])?;
        graph.insert(&mut *store, &orders_in, [(1, 10), (1, 20), (3, 5)])?;
        graph.remove(&mut *store, &orders_in, [(1, 20)])?;
        store.reset_stats();
        let sizes = graph.state_sizes(&mut *store)?;
        // A SQL store counts its tables: it reads no rows to do so.
        assert_eq!(store.stats().rows_read, 0, "{kind:?}");
        assert_eq!(sizes.rows("users"), Some(2), "{kind:?}\n{sizes}");
        assert_eq!(sizes.rows("orders"), Some(2), "{kind:?}\n{sizes}");
        assert_eq!(sizes.rows("joined_cache"), Some(1), "{kind:?}\n{sizes}");
        assert_eq!(sizes.states.len(), graph.states().len());
        assert!(sizes.to_string().contains("joined_cache"));
        all.push(sizes);
    }
    assert!(all.iter().all(|s| s == &all[0]), "{all:?}");
    Ok(())
}

/// The meter-reads query and the operator families draw as SVG (laid out
/// in Rust, no Graphviz), and a profile and the state sizes are drawn
/// onto the picture.
#[test]
fn graphs_draw_as_svg_with_their_profile() -> R {
    let (graph, q) = meter_reads::build()?;
    let svg = graph.to_svg();
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    for (path, _) in graph.vertices() {
        assert!(svg.contains(path.as_str()), "{path} is not drawn");
    }
    let w = Workload {
        users: 5,
        reads: 40,
    };
    let profiled = graph.profiled();
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        profiled.iteration(
            &mut *store,
            Changes::new()
                .insert(&q.users, w.all_users())
                .insert(&q.meters, w.all_meters()),
        )?;
        let out = profiled.insert(&mut *store, &q.reads, w.reads(0..40))?;
        let profile = out.profile().expect("profiled");
        let sizes = graph.state_sizes(&mut *store)?;
        let drawn = graph.to_svg_annotated(Some(profile), Some(&sizes));
        assert!(
            drawn.contains("rows 40 in"),
            "{kind:?}: the reads' rows are not drawn"
        );
        assert!(drawn.contains("state rows"), "{kind:?}");
        let cached = sizes.rows("daily_cache").expect("the cache's size");
        assert!(cached > 0);
        assert!(
            drawn.contains(&format!("state: daily_cache ({cached} rows)")),
            "{kind:?}"
        );
    }
    // Groups, recursion, distinct and first_n lay out too.
    let (tricky, _) = Graph::build(|q| {
        let (_e, edges) = q.input::<(i64, i64)>("edges")?;
        let paths = edges.map(|e| Pair::new(e.0, e.1)).transitive_closure()?;
        let best = edges
            .group(&<(i64, i64)>::index("from", |e| e.0))
            .per_group(|g| g.first_n(&<(i64, i64)>::index("to", |e| Desc(e.1)), 1))
            .flatten();
        Ok((
            q.output("paths", paths)?,
            q.output("best", best.map(|p| p.left).distinct())?,
        ))
    })?;
    let svg = tricky.to_svg();
    assert!(!svg.contains("could not be laid out"), "{svg}");
    assert!(
        svg.contains("in recursion") && svg.contains("in per group"),
        "{svg}"
    );
    let (empty, ()) = Graph::build(|_| Ok(()))?;
    assert!(empty.to_svg().contains("<svg"));
    Ok(())
}
