//! Random pairs of queries (old, new) sharing parts, on every store: random
//! batches go in with the old query, the store is migrated, and more go in
//! with the new one. After every batch each cache of the query in use
//! equals the oracle's evaluation over every input row fed; the migration
//! writes only the states its plan computes (the store's count of rows
//! written equals the rows of the new and changed states: none into a state
//! the plan keeps), and a kept cache reads as it did before.
//!
//! A query is two inputs `a` and `b` of `(key, value)` and a list of parts,
//! each a small pipeline from the inputs to a cache of `(key, value)`: a
//! map, a filter, a join of `a` and `b` directly on the inputs (it shares
//! their integrals), or a group sum. The new query is the old one with parts
//! added, removed, changed (their closure's version bumped) or renamed
//! (their cache, saying what it was called).

use std::collections::BTreeMap;

use operators::prelude::*;
use proptest::prelude::*;

use super::{Handle, Place};
use crate::harness::{fail, kinds};
use crate::oracle::{self, Rel};

type Row = (i64, i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Map,
    Filter,
    Join,
    Sum,
}

#[derive(Clone, Debug)]
struct Part {
    id: u32,
    op: Op,
    /// 0 reads `a`, 1 reads `b` (a join reads both).
    input: usize,
    version: u32,
    /// The cache's name in an earlier query, if it was renamed.
    was: Option<String>,
    name: String,
}

impl Part {
    fn new(id: u32, op: Op, input: usize, version: u32) -> Part {
        Part {
            id,
            op,
            input,
            version,
            was: None,
            name: format!("c{id}"),
        }
    }

    /// The oracle: this part's cache over the inputs' integrals `rels`.
    fn expected(&self, rels: &[Rel<Row>; 2]) -> Rel<Row> {
        let v = i64::from(self.version);
        let input = &rels[self.input];
        match self.op {
            Op::Map => oracle::map(input, |r| (r.0, r.1 + v)),
            Op::Filter => oracle::filter(input, |r| r.1 % (v + 2) != 0),
            Op::Join => oracle::map(
                &oracle::join(&rels[0], &rels[1], |r| r.0, |r| r.0),
                |(l, r)| (l.0, l.1 * 10 + r.1 + v),
            ),
            Op::Sum => {
                let mut sums: BTreeMap<i64, i64> = BTreeMap::new();
                for (r, w) in input {
                    *sums.entry(r.0).or_insert(0) += r.1 * (v + 1) * w;
                }
                sums.into_iter()
                    .filter(|(_, s)| *s != 0)
                    .map(|kv| (kv, 1))
                    .collect()
            }
        }
    }
}

struct Built {
    graph: Graph,
    inputs: [Input<Row>; 2],
    caches: Vec<(Part, Cache<Row>)>,
}

fn build(parts: &[Part]) -> Result<Built, GraphError> {
    let key = Index::new("k", |r: &Row| r.0);
    let (graph, (inputs, caches)) = Graph::build(|q| {
        let (a, sa) = q.input::<Row>("a")?;
        let (b, sb) = q.input::<Row>("b")?;
        let streams = [sa, sb];
        let mut caches = Vec::new();
        for p in parts {
            if let Some(was) = &p.was {
                q.renamed(was, &p.name);
            }
            let v = i64::from(p.version);
            let own = format!("p{}", p.id);
            let input = streams[p.input];
            let stream = match p.op {
                Op::Map => input.map(move |r: &Row| (r.0, r.1 + v)).named(&own),
                Op::Filter => input.filter(move |r: &Row| r.1 % (v + 2) != 0).named(&own),
                Op::Join => streams[0]
                    .join(streams[1], &key, &key)
                    .map(move |p: &Pair<Row, Row>| (p.left.0, p.left.1 * 10 + p.right.1 + v))
                    .named(&own),
                Op::Sum => input
                    .map(move |r: &Row| (r.0, r.1 * (v + 1)))
                    .named(&own)
                    .version(p.version)
                    .group_reduce_flatten(&key, 0i64, |r: &Row| r.1)
                    .map(|p: &Pair<i64, i64>| (p.right, p.left)),
            };
            let stream = stream.version(p.version);
            caches.push((p.clone(), q.cache(&p.name, stream, &[])?));
        }
        Ok(([a, b], caches))
    })?;
    Ok(Built {
        graph,
        inputs,
        caches,
    })
}

/// A random edit of a query: `(what, which part, op, input)`.
type Edit = (u8, usize, Op, usize);

/// The new query's parts: `old` with `edits` applied.
fn edited(old: &[Part], edits: &[Edit]) -> Vec<Part> {
    let mut parts: Vec<Part> = old
        .iter()
        .map(|p| Part {
            was: None,
            ..p.clone()
        })
        .collect();
    let mut next = old.iter().map(|p| p.id).max().unwrap_or(0) + 1;
    for &(what, which, op, input) in edits {
        let i = which % parts.len().max(1);
        match what {
            0 if parts.len() > 1 => {
                parts.remove(i);
            }
            1 if !parts.is_empty() => parts[i].version += 1,
            2 if !parts.is_empty() && parts[i].was.is_none() => {
                let p = &mut parts[i];
                p.was = Some(p.name.clone());
                p.name = format!("r{}", p.id);
            }
            _ => {
                parts.push(Part::new(next, op, input, 0));
                next += 1;
            }
        }
    }
    parts
}

/// A batch: rows inserted into `a` (0) or `b` (1).
type Batch = Vec<(usize, i64, i64)>;

fn feed(
    q: &Built,
    store: &mut Handle,
    rels: &mut [Rel<Row>; 2],
    batch: &Batch,
) -> Result<(), GraphError> {
    let mut changes = Changes::new();
    for (i, (rel, input)) in rels.iter_mut().zip(&q.inputs).enumerate() {
        let rows: Vec<Row> = batch
            .iter()
            .filter(|(which, ..)| *which == i)
            .map(|(_, k, v)| (*k, *v))
            .collect();
        for r in &rows {
            oracle::bump(rel, r, 1);
        }
        changes = changes.insert(input, rows);
    }
    q.graph.iteration(&mut **store, changes)?;
    Ok(())
}

fn check(
    q: &Built,
    store: &mut Handle,
    rels: &[Rel<Row>; 2],
    what: &str,
) -> Result<(), TestCaseError> {
    for (part, cache) in &q.caches {
        let got: Rel<Row> = cache
            .zset(&mut **store)
            .map_err(fail)?
            .into_iter()
            .collect();
        prop_assert_eq!(got, part.expected(rels), "{}: part {:?}", what, part);
    }
    Ok(())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Map),
        Just(Op::Filter),
        Just(Op::Join),
        Just(Op::Sum)
    ]
}

fn parts() -> impl Strategy<Value = Vec<Part>> {
    prop::collection::vec((op(), 0usize..2, 0u32..2), 1..4).prop_map(|ps| {
        ps.into_iter()
            .enumerate()
            .map(|(i, (op, input, version))| Part::new(i as u32, op, input, version))
            .collect()
    })
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((0u8..4, 0usize..4, op(), 0usize..2), 1..3)
}

fn batch() -> impl Strategy<Value = Batch> {
    prop::collection::vec((0usize..2, 0i64..3, 1i64..6), 0..5)
}

/// 16 cases by default (about 10 s on 2 cores, every store);
/// `PROPTEST_CASES` overrides.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_query_pairs_migrate_to_the_oracles_answer_writing_only_what_the_plan_computes(
        old in parts(),
        edits in edits(),
        before in prop::collection::vec(batch(), 1..4),
        after in prop::collection::vec(batch(), 1..3),
    ) {
        let new = edited(&old, &edits);
        let (v1, v2) = (build(&old).map_err(fail)?, build(&new).map_err(fail)?);
        for kind in kinds() {
            let what = format!("{kind:?}");
            let place = Place::new(kind, &v1.graph).map_err(fail)?;
            let mut rels: [Rel<Row>; 2] = Default::default();
            let mut kept_before = BTreeMap::new();
            {
                let mut store = place.open(&v1.graph).map_err(fail)?;
                for b in &before {
                    feed(&v1, &mut store, &mut rels, b).map_err(fail)?;
                    check(&v1, &mut store, &rels, &what)?;
                }
                for (part, cache) in &v1.caches {
                    kept_before.insert(part.name.clone(), cache.zset(&mut *store).map_err(fail)?);
                }
            }
            let migrated = place.migrate(&v2.graph).map_err(fail)?;
            let plan = migrated.plan;
            let mut store = migrated.handle;
            if let Some(written) = store.rows_written() {
                let computed: u64 = plan
                    .entries
                    .iter()
                    .filter(|e| e.action.backfills())
                    .map(|e| e.rows.unwrap_or(0))
                    .sum();
                prop_assert_eq!(written, computed, "{}: rows written beyond the computed states\n{}", what, plan);
            }
            for e in &plan.entries {
                let kept = matches!(e.action, graph::PlanAction::Keep);
                if let (true, Some(rows)) = (kept, kept_before.get(&e.path)) {
                    let (_, cache) = v2.caches.iter().find(|(p, _)| p.name == e.path).expect("a cache");
                    prop_assert_eq!(&cache.zset(&mut *store).map_err(fail)?, rows, "{}: kept {}", what, e.path);
                }
            }
            check(&v2, &mut store, &rels, &format!("{what}, migrated"))?;
            for b in &after {
                feed(&v2, &mut store, &mut rels, b).map_err(fail)?;
                check(&v2, &mut store, &rels, &format!("{what}, after"))?;
            }
        }
    }
}
