//! Micro-benches of the Z-set kernels: building (consolidating) a Z-set from
//! rows, adding two Z-sets, index keys as SQL column values, and the postcard
//! round trip that SQL stores pay per row.
//!
//! Run: `cargo bench -p stepping-zset --bench kernels`. Inputs are deterministic (no
//! RNG), so runs are comparable; each kernel checks its result before timing.

// The package is `stepping-zset`; its code and docs call it `zset`.
extern crate stepping_zset as zset;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use zset::{F64, Index, IndexKey, KeyValue, ZSet};

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct Read {
    meter: u32,
    day: i64,
    value: F64,
}

fn rows(n: u64) -> Vec<(Read, i64)> {
    (0..n)
        .map(|j| {
            let read = Read {
                meter: (j * 7919 % 1000) as u32,
                day: (j * 104_729 % 31) as i64,
                value: F64::new((j * 2_654_435_761 % 10_000) as f64 / 100.0),
            };
            (read, if j % 5 == 0 { -1 } else { 1 })
        })
        .collect()
}

fn kernels(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let input = rows(N);
    let built: ZSet<Read> = input.iter().cloned().collect();
    // One row in five has weight -1: consolidation keeps the total weight.
    assert_eq!(
        built.weight_sum(),
        (N - 2 * N.div_ceil(5)) as i64,
        "consolidation lost weight"
    );

    let mut g = c.benchmark_group("zset");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench_function("consolidate 1M rows", |b| {
        b.iter_batched(
            || input.clone(),
            |rows| black_box(rows.into_iter().collect::<ZSet<Read>>()),
            BatchSize::LargeInput,
        )
    });
    let half: ZSet<Read> = input.iter().take(N as usize / 2).cloned().collect();
    let other: ZSet<Read> = input
        .iter()
        .skip(N as usize / 2)
        .map(|(r, w)| (r.clone(), -w))
        .collect();
    g.bench_function("add 1M rows", |b| {
        b.iter_batched(
            || half.clone(),
            |mut a| {
                a += &other;
                black_box(a)
            },
            BatchSize::LargeInput,
        )
    });
    let by_meter_day = Index::new("meter_day", |r: &Read| (r.meter, r.day));
    g.bench_function("index key values 1M rows", |b| {
        let mut out: Vec<KeyValue> = Vec::with_capacity(2);
        b.iter(|| {
            for (r, _) in &input {
                out.clear();
                by_meter_day.key(r).values(&mut out);
                black_box(&out);
            }
        })
    });
    let encoded: Vec<Vec<u8>> = input
        .iter()
        .map(|(r, _)| postcard::to_allocvec(r).unwrap())
        .collect();
    let back: Read = postcard::from_bytes(&encoded[7]).unwrap();
    assert_eq!(back, input[7].0);
    g.bench_function("postcard encode 1M rows", |b| {
        b.iter(|| {
            for (r, _) in &input {
                black_box(postcard::to_allocvec(r).unwrap());
            }
        })
    });
    g.bench_function("postcard decode 1M rows", |b| {
        b.iter(|| {
            for bytes in &encoded {
                black_box(postcard::from_bytes::<Read>(bytes).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
