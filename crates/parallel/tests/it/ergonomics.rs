//! The public API without friction, from a crate that, like an
//! application, has no `serde` dependency of its own: row types declared
//! with `row!`, a one-batch ingest with no time source, and errors that
//! convert with `?`.

use graph::{Graph, GraphError, StateStore, StoreError};
use operators::prelude::*;
use parallel::{Ingest, ParallelError};

use crate::stores::{Shared, kinds};

type R = Result<(), Box<dyn std::error::Error>>;

row! {
    /// A meter read: one line gives it everything a row needs.
    pub(crate) struct Reading {
        pub(crate) meter: i64,
        pub(crate) value: F64,
        pub(crate) unit: Unit,
    }

    /// Rows may be enums too.
    pub(crate) enum Unit {
        Kwh,
        Litre,
    }
}

/// Rows declared with `row!` (this crate has no serde of its own) are
/// stored, read back and summed on every store; one batch is ingested by
/// `Ingest::run_on` with no time source, after a batch at an explicit time.
#[test]
fn row_types_in_one_line_and_one_batch_ingests() -> R {
    row! {
        // Declared in a function body, beside another row in this module.
        struct Total {
            meter: i64,
            sum: F64,
        }
    }
    let (graph, (input, totals, cache)) = Graph::build(|q| {
        let (input, reads) = q.input::<Reading>("reads")?;
        let totals = reads
            .group_reduce_flatten(&Reading::index("meter", |r| r.meter), F64::new(0.0), |r| {
                r.value
            })
            .map(|p| Total {
                meter: p.right,
                sum: p.left,
            });
        let cache = q.cache("readings", reads.filter(|r| r.unit < Unit::Litre), &[])?;
        Ok((input, q.output("totals", totals)?, cache))
    })?;
    let read = |meter, value| Reading {
        meter,
        value: F64::new(value),
        unit: Unit::Kwh,
    };
    for kind in kinds() {
        let shared = Shared::new(kind, &graph)?;
        let mut store = shared.open(&graph)?;
        graph.iteration_at(
            &mut store,
            Changes::new().insert(&input, [read(1, 0.5)]),
            graph::Time::new(1, 0),
        )?;
        let report = Ingest::new(&graph).run_on(
            &mut store,
            [Changes::new().insert(&input, [read(1, 1.5), read(2, 2.0)])],
        )?;
        assert!(report.failures.is_empty(), "{kind:?}");
        assert_eq!(
            report.times,
            [2],
            "{kind:?}: the time after the store's last"
        );
        let change = report.outputs[0]
            .as_ref()
            .ok_or("no outputs")?
            .get(&totals)?;
        let total = |meter, sum| Total {
            meter,
            sum: F64::new(sum),
        };
        assert_eq!(
            change,
            &zset! { total(1, 0.5) => -1, total(1, 2.0) => 1, total(2, 2.0) => 1 },
            "{kind:?}"
        );
        assert_eq!(cache.zset(&mut store)?.len(), 3, "{kind:?}");
        assert_eq!(store.last_time()?, 2, "{kind:?}");
        assert!(report.profile().is_none(), "{kind:?}: not profiled");
        let profiled = Ingest::new(&graph.profiled()).run_on(
            &mut store,
            [
                Changes::new().insert(&input, [read(3, 1.0)]),
                Changes::new().remove(&input, [read(3, 1.0)]),
            ],
        )?;
        let profile = profiled.profile().ok_or("profiled")?;
        assert_eq!(profile.iterations, 2, "{kind:?}");
        assert_eq!(
            profile.vertex("reads").map(|v| v.rows_out),
            Some(2),
            "{kind:?}"
        );
    }
    Ok(())
}

/// A one-batch ingest that fails is recorded and reported, not an error,
/// and later batches go on at the next time.
#[test]
fn a_failed_one_batch_ingest_is_recorded() -> R {
    let (graph, input) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        let numbers = words.try_map(|w| w.parse::<i64>());
        q.cache("numbers", numbers, &[])?;
        Ok(input)
    })?;
    for kind in kinds() {
        let shared = Shared::new(kind, &graph)?;
        let mut store = shared.open(&graph)?;
        let report = Ingest::new(&graph).run_on(
            &mut store,
            [
                Changes::new().insert(&input, ["x".to_string()]),
                Changes::new().insert(&input, ["1".to_string()]),
            ],
        )?;
        assert_eq!(report.failures.len(), 1, "{kind:?}");
        assert_eq!(report.failures[0].input_time, 1, "{kind:?}");
        assert!(
            report.outputs[0].is_none() && report.outputs[1].is_some(),
            "{kind:?}"
        );
        assert_eq!(store.failed_batches()?.len(), 1, "{kind:?}");
    }
    Ok(())
}

/// `?` converts between the crates' errors: an ingest's error into a
/// `GraphError` (an engine error as itself) or a `StoreError`, and a
/// store's error into a `ParallelError`.
#[test]
fn errors_convert_with_the_question_mark() {
    fn open_fails() -> Result<(), ParallelError> {
        Err(ParallelError::Open {
            worker: 3,
            source: GraphError::Store(StoreError::backend("opening", "refused")),
        })
    }
    fn as_graph() -> Result<(), GraphError> {
        open_fails()?;
        Ok(())
    }
    fn engine_fails() -> Result<(), ParallelError> {
        Err(GraphError::Store(StoreError::NoSuchFailure { input_time: 7 }).into())
    }
    fn as_graph_again() -> Result<(), GraphError> {
        engine_fails()?;
        Ok(())
    }
    fn as_store() -> Result<(), StoreError> {
        engine_fails()?;
        Ok(())
    }
    fn store_fails() -> Result<(), StoreError> {
        Err(StoreError::NoSuchFailure { input_time: 8 })
    }
    fn as_parallel() -> Result<(), ParallelError> {
        store_fails()?;
        Ok(())
    }
    let err = as_graph().expect_err("fails");
    assert!(matches!(&err, GraphError::Ingest(_)), "{err:?}");
    assert!(err.to_string().contains("worker 3"), "{err}");
    let source = match &err {
        GraphError::Ingest(source) => source,
        other => panic!("{other:?}"),
    };
    assert!(source.downcast_ref::<ParallelError>().is_some());
    assert!(matches!(
        as_graph_again(),
        Err(GraphError::Store(StoreError::NoSuchFailure {
            input_time: 7
        }))
    ));
    assert!(matches!(
        as_store(),
        Err(StoreError::NoSuchFailure { input_time: 7 })
    ));
    assert!(matches!(
        as_parallel(),
        Err(ParallelError::Graph(GraphError::Store(
            StoreError::NoSuchFailure { input_time: 8 }
        )))
    ));
}
