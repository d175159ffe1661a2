//! Every decoding path fuzzed, with and without a database: mutated encodings
//! of real rows and arbitrary bytes decode to a value or a typed error.

use std::collections::BTreeMap;

use graph::StoredRow;
use operators::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::{Deserialize, Serialize};
use store::StoreError;

use super::damaged::{mutate, mutations, weights};
use crate::harness::fail;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) struct Account {
    pub(super) name: String,
    pub(super) balance: F64,
    pub(super) id: uuid::Uuid,
    pub(super) nickname: Option<String>,
    pub(super) limit: Option<F64>,
}

pub(super) type Nested = Pair<Pair<i64, String>, Option<uuid::Uuid>>;
pub(super) type Bag = ZSet<String>;
pub(super) type Dated = (
    chrono::NaiveDate,
    chrono::NaiveDateTime,
    Vec<u8>,
    char,
    bool,
);
/// Serialized exactly like a `ZSet<String>`, but any list: duplicates,
/// zero weights, weights that overflow when summed.
pub(super) type BagRows = Vec<(String, i64)>;

/// A graph caching one input of each row type, sample values of each, and
/// changes to all inputs encoded.
pub(super) struct CodecFixture {
    pub(super) graph: Graph,
    /// Per cache path, the encodings of sample rows.
    pub(super) samples: BTreeMap<&'static str, Vec<Vec<u8>>>,
    pub(super) changes: Vec<Vec<u8>>,
}

pub(super) fn codec_fixture() -> &'static CodecFixture {
    static FIXTURE: std::sync::OnceLock<CodecFixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| build_codec_fixture().expect("the codec fixture builds"))
}

pub(super) fn encode_rows<T: Data>(graph: &Graph, path: &str, rows: Vec<T>) -> Vec<Vec<u8>> {
    let z: ZSet<T> = rows.into_iter().map(|r| (r, 1)).collect();
    let mut encoded = Vec::new();
    state(graph, path)
        .codec()
        .encode_delta(&z, &mut encoded)
        .expect("sample rows encode");
    encoded.into_iter().map(|r| r.data).collect()
}

pub(super) fn state<'g>(graph: &'g Graph, path: &str) -> &'g graph::StateSpec {
    graph
        .states()
        .iter()
        .find(|s| s.path().as_str() == path)
        .expect("a state of the graph")
}

pub(super) fn build_codec_fixture() -> Result<CodecFixture, GraphError> {
    let (graph, (accounts, nested, bags, dated)) = Graph::build(|q| {
        let (accounts, a) = q.input::<Account>("accounts")?;
        let (nested, n) = q.input::<Nested>("nested")?;
        let (bags, b) = q.input::<Bag>("bags")?;
        let (dated, d) = q.input::<Dated>("dated")?;
        let (_, rows) = q.input::<BagRows>("bag_rows")?;
        q.cache("account_cache", a, &[])?;
        q.cache("nested_cache", n, &[])?;
        q.cache("bag_cache", b, &[])?;
        q.cache("dated_cache", d, &[])?;
        q.cache("bag_row_cache", rows, &[])?;
        Ok((accounts, nested, bags, dated))
    })?;
    let account = |name: &str, balance: f64, nick: Option<&str>, limit: Option<f64>| Account {
        name: name.into(),
        balance: F64::new(balance),
        id: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        nickname: nick.map(Into::into),
        limit: limit.map(F64::new),
    };
    let account_rows = vec![
        account("ann", 10.5, None, Some(f64::NAN)),
        account("ünïcode", -0.0, Some("bob"), None),
    ];
    let nested_rows: Vec<Nested> = vec![
        Pair::new(Pair::new(-1, "x".into()), None),
        Pair::new(Pair::new(i64::MAX, String::new()), Some(uuid::Uuid::nil())),
    ];
    let bag_rows: Vec<Bag> = vec![
        zset! { "a".to_string() => 2, "b".to_string() => -1 },
        ZSet::new(),
    ];
    let date = chrono::NaiveDate::from_ymd_opt(2023, 1, 2).expect("a date");
    let dated_rows: Vec<Dated> = vec![
        (
            date,
            date.and_hms_opt(3, 4, 5).expect("a time"),
            vec![0, 255],
            'é',
            true,
        ),
        (
            chrono::NaiveDate::MIN,
            chrono::NaiveDateTime::MAX,
            Vec::new(),
            '\0',
            false,
        ),
    ];
    let changes = vec![
        Changes::new()
            .insert(&accounts, account_rows.clone())
            .encode()?,
        Changes::new()
            .insert(&nested, nested_rows.clone())
            .remove(&bags, bag_rows.clone())
            .encode()?,
        Changes::new()
            .insert(&dated, dated_rows.clone())
            .insert(&accounts, account_rows.clone())
            .encode()?,
    ];
    let mut samples = BTreeMap::new();
    samples.insert(
        "account_cache",
        encode_rows(&graph, "account_cache", account_rows),
    );
    samples.insert(
        "nested_cache",
        encode_rows(&graph, "nested_cache", nested_rows),
    );
    samples.insert("bag_cache", encode_rows(&graph, "bag_cache", bag_rows));
    samples.insert(
        "dated_cache",
        encode_rows(&graph, "dated_cache", dated_rows),
    );
    Ok(CodecFixture {
        graph,
        samples,
        changes,
    })
}

/// Decoding `bytes` as a row of the state at `path` gives a row (which
/// encodes and decodes to itself) or an error message, never a panic.
pub(super) fn decode_is_total<T: Data>(
    graph: &Graph,
    path: &str,
    bytes: &[u8],
    weight: i64,
    step: u32,
) -> Result<Option<T>, TestCaseError> {
    let codec = state(graph, path).codec();
    let mut sink: Vec<StoredRow<T>> = Vec::new();
    match codec.decode(bytes, weight, step, &mut sink) {
        Ok(()) => {
            prop_assert_eq!(sink.len(), 1, "{}", path);
            let row = sink.pop().expect("one row");
            prop_assert_eq!((row.weight, row.step), (weight, step));
            let mut encoded = Vec::new();
            codec
                .encode_delta(&ZSet::singleton(row.value.clone(), 1), &mut encoded)
                .map_err(fail)?;
            let mut again: Vec<StoredRow<T>> = Vec::new();
            codec
                .decode(&encoded[0].data, 1, 0, &mut again)
                .map_err(fail)?;
            prop_assert_eq!(&again[0].value, &row.value, "{} re-encoded", path);
            Ok(Some(row.value))
        }
        Err(detail) => {
            prop_assert!(sink.is_empty(), "{}: a failed decode pushed a row", path);
            prop_assert!(detail.contains("decode"), "{}: {}", path, detail);
            Ok(None)
        }
    }
}

pub(super) fn sample<'f>(fixture: &'f CodecFixture, path: &str, pick: usize) -> &'f [u8] {
    let all = &fixture.samples[path];
    &all[pick % all.len()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every row type's codec, on mutated encodings of real rows and on
    /// arbitrary bytes.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        pick in any::<usize>(),
        m in mutations(),
        weight in weights(),
        step in any::<u32>(),
    ) {
        let f = codec_fixture();
        let g = &f.graph;
        let bytes = mutate(sample(f, "account_cache", pick), &m);
        decode_is_total::<Account>(g, "account_cache", &bytes, weight, step)?;
        let bytes = mutate(sample(f, "nested_cache", pick), &m);
        decode_is_total::<Nested>(g, "nested_cache", &bytes, weight, step)?;
        let bytes = mutate(sample(f, "bag_cache", pick), &m);
        decode_is_total::<Bag>(g, "bag_cache", &bytes, weight, step)?;
        let bytes = mutate(sample(f, "dated_cache", pick), &m);
        decode_is_total::<Dated>(g, "dated_cache", &bytes, weight, step)?;
    }

    /// A stored Z-set value with repeated rows, zero weights and weights
    /// whose sum overflows: the exact sums, or an error.
    #[test]
    fn decoding_zset_values_sums_weights_exactly_or_fails(
        rows in prop::collection::vec(
            (prop_oneof![Just("a"), Just("b"), Just("c")], weights()),
            0..6,
        ),
    ) {
        let f = codec_fixture();
        let rows: BagRows = rows.into_iter().map(|(s, w)| (s.to_string(), w)).collect();
        // Running sums that overflow are the case of
        // `a_stored_zset_whose_weights_overflow_is_an_error_not_a_panic`.
        let mut running: BTreeMap<&str, i64> = BTreeMap::new();
        prop_assume!(rows.iter().all(|(s, w)| {
            let sum = running.entry(s.as_str()).or_default();
            sum.checked_add(*w).map(|n| *sum = n).is_some()
        }));
        let bytes = encode_rows(&f.graph, "bag_row_cache", vec![rows.clone()]).remove(0);
        let mut exact: BTreeMap<String, i128> = BTreeMap::new();
        for (s, w) in &rows {
            *exact.entry(s.clone()).or_default() += i128::from(*w);
        }
        exact.retain(|_, w| *w != 0);
        if let Some(bag) = decode_is_total::<Bag>(&f.graph, "bag_cache", &bytes, 1, 0)? {
            let got: BTreeMap<String, i128> =
                bag.iter().map(|(s, w)| (s.clone(), i128::from(w))).collect();
            prop_assert_eq!(got, exact, "a decoded Z-set holds the exact sums");
        }
    }

    /// Recorded changes (a failed batch's input), damaged.
    #[test]
    fn decoding_arbitrary_changes_never_panics(pick in any::<usize>(), m in mutations()) {
        let f = codec_fixture();
        let bytes = mutate(&f.changes[pick % f.changes.len()], &m);
        match f.graph.decode_changes(&bytes) {
            Ok(changes) => {
                // What decodes encodes again, and runs.
                let again = changes.encode().map_err(fail)?;
                prop_assert_eq!(
                    f.graph.decode_changes(&again).map_err(fail)?.len(),
                    changes.len()
                );
                let mut memory = store::Memory::new(&f.graph);
                f.graph.iteration(&mut memory, changes).map_err(fail)?;
            }
            Err(GraphError::Store(StoreError::Corrupt { table, .. })) => {
                prop_assert_eq!(table, "changes");
            }
            Err(GraphError::ForeignInput { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error: {:?}", other),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) struct Reading {
    pub(super) id: i64,
    pub(super) meter: String,
    pub(super) value: F64,
    pub(super) note: Option<String>,
}

/// A query with every kind of state and read: Z-set integrals read by index
/// (a join) and by value (distinct), keyed aggregates, first rows by index
/// (`first_n`), nested states (a recursion), and two caches.
pub(super) struct FuzzQuery {
    pub(super) readings: Input<Reading>,
    pub(super) meters: Input<Pair<String, i64>>,
    pub(super) edges: Input<Pair<i64, i64>>,
    pub(super) reading_cache: Cache<Reading>,
    pub(super) path_cache: Cache<Pair<i64, i64>>,
    pub(super) by_meter: Index<Reading, String>,
    pub(super) by_from: Index<Pair<i64, i64>, i64>,
}

/// Inner steps the fuzzed query's recursion may take.
pub(super) const RECURSION_LIMIT: u32 = 24;

pub(super) fn fuzz_query() -> Result<(Graph, FuzzQuery), GraphError> {
    let by_meter = Index::new("meter", |r: &Reading| r.meter.clone());
    let by_name = Index::new("name", |m: &Pair<String, i64>| m.left.clone());
    let by_value = Index::new("value", |r: &Reading| Desc(r.value));
    let by_from = Index::new("from", |p: &Pair<i64, i64>| p.left);
    let (graph, (readings, meters, edges, reading_cache, path_cache)) = Graph::build(|q| {
        let (readings, r) = q.input::<Reading>("readings")?;
        let (meters, m) = q.input::<Pair<String, i64>>("meters")?;
        let (edges, e) = q.input::<Pair<i64, i64>>("edges")?;
        // The transitive closure, with a small limit on inner steps: a
        // damaged `step` makes the recursion run up to its limit (see
        // `typed`), and with the default 10 000 steps of quadratic work
        // that takes minutes.
        let to = Index::new("to", |e: &Pair<i64, i64>| e.right);
        let from = Index::new("from", |e: &Pair<i64, i64>| e.left);
        let paths = e.recursive_with_limit(RECURSION_LIMIT, move |_rec, edges, paths| {
            let longer = edges
                .join(paths, &to, &from)
                .map(|p| Pair::new(p.left.left, p.right.right));
            Ok(edges.add(longer).distinct())
        })?;
        q.output("joined", r.join(m, &by_meter, &by_name))?;
        q.output(
            "totals",
            r.group_reduce_flatten(&by_meter, F64::new(0.0), |r| r.value),
        )?;
        q.output("top", r.first_n(&by_value, 2))?;
        q.output("owners", m.map(|m| m.right).distinct())?;
        q.output("paths", paths)?;
        Ok((
            readings,
            meters,
            edges,
            q.cache("reading_cache", r, &[&by_meter])?,
            q.cache("path_cache", paths, &[&by_from])?,
        ))
    })?;
    Ok((
        graph,
        FuzzQuery {
            readings,
            meters,
            edges,
            reading_cache,
            path_cache,
            by_meter,
            by_from,
        },
    ))
}

pub(super) fn reading(id: i64, meter: &str, value: f64) -> Reading {
    Reading {
        id,
        meter: meter.into(),
        value: F64::new(value),
        note: (id % 2 == 0).then(|| format!("n{id}")),
    }
}
