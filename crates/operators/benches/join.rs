//! Micro-bench of the incremental join (Theorem 5.5): one iteration of
//! `left ⋈ right` on the Memory store, where a batch of new right rows
//! meets a large integrated left side, and where both sides change.
//!
//! Run: `cargo bench -p stepping-operators --bench join`. Inputs are deterministic;
//! each case checks its output before timing.

// The package is `stepping-operators`; its code and docs call it `operators`.
extern crate stepping_operators as operators;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use graph::{Changes, Graph, Input, Output};
use operators::prelude::*;

/// Left rows: `(key, payload)`, one per key.
type Left = (i64, i64);
/// Right rows: `(key, value)`, many per key.
type Right = (i64, i64);

struct Join {
    left: Input<Left>,
    right: Input<Right>,
    out: Output<ZSet<(i64, i64, i64)>>,
}

fn build() -> (Graph, Join) {
    Graph::build(|q| {
        let (left, l) = q.input::<Left>("left")?;
        let (right, r) = q.input::<Right>("right")?;
        let joined = l
            .join(
                r,
                &Index::new("key", |l: &Left| l.0),
                &Index::new("key", |r: &Right| r.0),
            )
            .map(|p| (p.left.0, p.left.1, p.right.1));
        let out = q.output("joined", joined)?;
        Ok(Join { left, right, out })
    })
    .expect("the join graph builds")
}

const KEYS: i64 = 100_000;
const BATCH: i64 = 1_000;

fn right_batch(b: i64) -> Vec<Right> {
    (0..BATCH)
        .map(|j| ((b * BATCH + j) * 7919 % KEYS, b * BATCH + j))
        .collect()
}

fn join(c: &mut Criterion) {
    let (graph, q) = build();
    // The left side integrated: 100,000 keys.
    let mut base = store::Memory::new(&graph);
    graph
        .insert(&mut base, &q.left, (0..KEYS).map(|k| (k, k * 2)))
        .expect("left rows");
    graph
        .insert(&mut base, &q.right, right_batch(0))
        .expect("first right batch");
    // Each new right row finds its one left row.
    let check = graph
        .insert(&mut base, &q.right, right_batch(1))
        .expect("a right batch");
    assert_eq!(check.get(&q.out).expect("output").len(), BATCH as usize);

    // Timed iterations alternate between inserting a batch and removing
    // it again, so the state (and so each iteration's work) stays the same.
    let mut g = c.benchmark_group("join");
    g.throughput(Throughput::Elements(BATCH as u64));
    let batch = right_batch(2);
    let mut inserted = false;
    g.bench_function("1000 new right rows against 100k left rows", |b| {
        b.iter(|| {
            let changes = if inserted {
                Changes::new().remove(&q.right, batch.iter().cloned())
            } else {
                Changes::new().insert(&q.right, batch.iter().cloned())
            };
            inserted = !inserted;
            black_box(graph.iteration(&mut base, changes).expect("iteration"))
        });
    });
    if inserted {
        graph
            .remove(&mut base, &q.right, batch.iter().cloned())
            .expect("back to the base state");
    }
    // Both sides: 1,000 left rows at the keys of the 1,000 right rows, so
    // the delta meets the delta (ΔL ⋈ ΔR) as well as the stored sides.
    let lefts: Vec<Left> = batch.iter().map(|r| (r.0, -r.1)).collect();
    let both = graph
        .iteration(
            &mut base,
            Changes::new()
                .insert(&q.left, lefts.iter().cloned())
                .insert(&q.right, batch.iter().cloned()),
        )
        .expect("both sides");
    // Each new right row meets its old and its new left row.
    assert_eq!(both.get(&q.out).expect("output").len(), 2 * BATCH as usize);
    graph
        .iteration(
            &mut base,
            Changes::new()
                .remove(&q.left, lefts.iter().cloned())
                .remove(&q.right, batch.iter().cloned()),
        )
        .expect("back to the base state");
    let mut inserted = false;
    g.bench_function("1000 rows on both sides", |b| {
        b.iter(|| {
            let changes = if inserted {
                Changes::new()
                    .remove(&q.left, lefts.iter().cloned())
                    .remove(&q.right, batch.iter().cloned())
            } else {
                Changes::new()
                    .insert(&q.left, lefts.iter().cloned())
                    .insert(&q.right, batch.iter().cloned())
            };
            inserted = !inserted;
            black_box(graph.iteration(&mut base, changes).expect("iteration"))
        });
    });
    g.finish();
}

criterion_group!(benches, join);
criterion_main!(benches);
