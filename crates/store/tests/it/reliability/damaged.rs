//! Stored rows and metadata damaged by hand, in every way bytes and columns can
//! be: typed errors naming the table and row, never a panic.

use graph::{StateKind, StoredRow, identity_of};
use operators::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use store::StoreError;

use super::codecs::{
    Bag, BagRows, RECURSION_LIMIT, codec_fixture, encode_rows, fuzz_query, reading, state,
};
use super::{R, Target, names_table, no_panic};
use crate::harness::{Kind, fail, sql_kinds};

/// Words, cached with an index on their length, and their distinct set
/// (which reads an integral of the words of its own, `words`).
pub(super) struct Words {
    pub(super) graph: Graph,
    pub(super) input: Input<String>,
    pub(super) cache: Cache<String>,
    pub(super) distinct: Output<ZSet<String>>,
    pub(super) by_len: Index<String, i64>,
}

pub(super) fn words() -> Result<Words, GraphError> {
    let by_len = Index::new("len", |s: &String| s.len() as i64);
    let (graph, (input, cache, distinct)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        let words = words.transient();
        Ok((
            input,
            q.cache("word_cache", words, &[&by_len])?,
            q.output("distinct", words.distinct())?,
        ))
    })?;
    Ok(Words {
        graph,
        input,
        cache,
        distinct,
        by_len,
    })
}

/// Damage that raw SQL can do to a cache's rows beyond what
/// `sql_stores::corrupt_rows_are_typed_errors_naming_table_and_row` tries
/// (there: a text weight on SQLite, `identity + 1`, weight 0, undecodable
/// bytes, through `Cache::zset`): values of the wrong type in every column
/// (SQLite keeps any type in any column; on Postgres the column's type is
/// changed), and a mismatched identity read through an index and through
/// an iteration. Every read is a store error naming the table (and the row,
/// when it is a corrupt row), never a panic.
#[test]
fn stored_values_of_the_wrong_type_are_typed_errors_naming_table_and_row() -> R {
    let w = words()?;
    for kind in sql_kinds() {
        let damages: &[&str] = if kind == Kind::Sqlite {
            &[
                "UPDATE {t} SET c = 1.5",
                "UPDATE {t} SET c = 1e30",
                "UPDATE {t} SET c = x'01'",
                "UPDATE {t} SET data = 'hello'",
                "UPDATE {t} SET identity = 'abc'",
                "UPDATE {t} SET identity = 2.5",
                "UPDATE {t} SET identity = identity + 1",
            ]
        } else {
            &[
                "ALTER TABLE {t} ALTER COLUMN c TYPE numeric",
                "ALTER TABLE {t} ALTER COLUMN c TYPE text",
                "ALTER TABLE {t} ALTER COLUMN c TYPE integer",
                "ALTER TABLE {t} ALTER COLUMN data TYPE text USING encode(data, 'hex')",
                "ALTER TABLE {t} ALTER COLUMN identity TYPE numeric",
                "UPDATE {t} SET identity = identity + 1",
            ]
        };
        for damage in damages {
            let mut store = Target::open(kind, &w.graph)?;
            w.graph
                .insert(&mut *store, &w.input, ["hello".to_string()])?;
            // The cache, and the integral `distinct` reads (its own state).
            let (table, integral) = (store.table("word_cache"), store.table("words"));
            // Postgres changes no column a view reads: the cache's view goes;
            // nor the type of `c`, which the index of negative weights
            // compares with 0: it goes too.
            store.execute(&format!("DROP VIEW IF EXISTS {table}_view"));
            for t in [&table, &integral] {
                store.execute(&format!(
                    "DROP INDEX IF EXISTS {}",
                    graph::negative_index_ident(t)
                ));
            }
            store.execute(&damage.replace("{t}", &table));
            // Its primary key may be a rowid, which refuses what is no integer.
            let integral_damaged = store.try_execute(&damage.replace("{t}", &integral)).is_ok();
            let reads = [
                no_panic("Cache::zset", || w.cache.zset(&mut *store).map(drop)),
                no_panic("Cache::iter_by_index", || {
                    w.cache
                        .iter_by_index(&mut *store, &w.by_len, Some(&[5]))
                        .map(drop)
                }),
                // `distinct` reads the damaged integral to see "hello" again.
                no_panic("an iteration", || {
                    w.graph
                        .insert(&mut *store, &w.input, ["hello".to_string()])
                        .map(|out| assert!(out.get(&w.distinct).is_ok()))
                }),
            ];
            for (i, read) in reads.into_iter().enumerate() {
                let read = read.unwrap_or_else(|p| panic!("{kind:?} {damage}: {p}"));
                match read {
                    Err(e) => assert!(
                        names_table(&e, &table) || (i == 2 && names_table(&e, &integral)),
                        "{kind:?} {damage} #{i}: {e:?}"
                    ),
                    // A row moved to another identity is not found by its
                    // value's identity: `distinct` sees "hello" as new.
                    Ok(()) if i == 2 && (!integral_damaged || damage.contains("identity")) => {}
                    Ok(()) => panic!("{kind:?} {damage}: read #{i} took the damaged row"),
                }
            }
        }
    }
    Ok(())
}

/// The metadata tables damaged: a recorded shape that is not text, a
/// `last_update` time that is not an integer. Opening the store and running
/// an iteration give typed errors naming the state table, never a panic.
#[test]
fn damaged_metadata_is_a_typed_error_naming_the_table() -> R {
    let w = words()?;
    for kind in sql_kinds() {
        let store = Target::open(kind, &w.graph)?;
        let table = store.table("word_cache");
        let prefix = store.prefix();
        let tables = format!("{prefix}0_tables");
        let (damage, repair) = if kind == Kind::Sqlite {
            (
                format!("UPDATE {tables} SET shape = x'00ff' WHERE table_name = '{table}'"),
                None,
            )
        } else {
            (
                format!(
                    "ALTER TABLE {tables} ALTER COLUMN shape TYPE bytea USING convert_to(shape, 'UTF8')"
                ),
                Some(format!(
                    "ALTER TABLE {tables} ALTER COLUMN shape TYPE text USING convert_from(shape, 'UTF8')"
                )),
            )
        };
        store.execute(&damage);
        let opened = no_panic("opening a store", || match &store {
            Target::Harness(o) => o.open_again(&w.graph, false).map(drop),
            Target::Sqlite { store, .. } => {
                store::Sqlite::open(store.path(), &w.graph, store::OpenOptions::attach())
                    .map(drop)
                    .map_err(GraphError::from)
            }
        });
        if let Some(repair) = repair {
            // Before anything can fail: the harness drops the tables later.
            store.execute(&repair);
        }
        match opened {
            Ok(Err(e)) => assert!(names_table(&e, &table), "{kind:?}: {e:?}"),
            Ok(Ok(())) => panic!("{kind:?}: a damaged shape was accepted"),
            Err(p) => panic!("{kind:?}: {p}"),
        }

        let mut store = Target::open(kind, &w.graph)?;
        let table = store.table("word_cache");
        let last_update = format!("{}0_last_update", store.prefix());
        if kind == Kind::Sqlite {
            store.execute(&format!("UPDATE {last_update} SET t = 'soon'"));
        } else {
            store.execute(&format!(
                "ALTER TABLE {last_update} ALTER COLUMN t TYPE text USING 'soon'"
            ));
        }
        let out = no_panic("an iteration", || {
            w.graph.insert(&mut *store, &w.input, ["x".to_string()])
        })
        .unwrap_or_else(|p| panic!("{kind:?}: {p}"));
        let err = out.expect_err("a time that is no number");
        assert!(
            err.to_string().contains(&last_update) || names_table(&err, &table),
            "{kind:?}: {err:?}"
        );
    }
    Ok(())
}

/// A stored `ZSet` value (a row of a state of Z-sets) listing one element
/// twice with weights whose sum overflows `i64`: the engine never writes
/// one, only damage can. Decoding it must be an error, not a panic or a
/// wrapped weight.
///
/// (Until commit cb939c1, `ZSet`'s `Deserialize` added the weights with
/// `ZSet::update`, which panicked with "attempt to add with overflow" in
/// debug builds and wrapped in release.)
#[test]
fn a_stored_zset_whose_weights_overflow_is_an_error_not_a_panic() -> R {
    let f = codec_fixture();
    let rows: BagRows = vec![("c".into(), i64::MAX), ("c".into(), 1)];
    let bytes = encode_rows(&f.graph, "bag_row_cache", vec![rows]).remove(0);
    let codec = state(&f.graph, "bag_cache").codec();
    let decoded = no_panic("decoding", || {
        let mut sink: Vec<StoredRow<Bag>> = Vec::new();
        codec.decode(&bytes, 1, 0, &mut sink).map(|()| sink)
    });
    match decoded {
        Ok(Err(detail)) => assert!(detail.contains("decode"), "{detail}"),
        Ok(Ok(rows)) => panic!("weights that overflow decoded as {rows:?}"),
        Err(p) => panic!("{p}"),
    }
    // The same bytes in a SQLite table, read through a cache.
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, bags) = q.input::<Bag>("bags")?;
        Ok((input, q.cache("bag_cache", bags, &[])?))
    })?;
    let mut store = Target::open(Kind::Sqlite, &graph)?;
    graph.insert(&mut *store, &input, [zset! { "c".to_string() => 1 }])?;
    let table = store.table("bag_cache");
    store.execute(&format!(
        "UPDATE {table} SET data = {}, identity = {}",
        store.blob(&bytes),
        identity_of(&bytes)
    ));
    match no_panic("Cache::zset", || cache.zset(&mut *store)) {
        Ok(Err(e)) => assert!(names_table(&e, &table), "{e:?}"),
        Ok(Ok(z)) => panic!("weights that overflow read as {z:?}"),
        Err(p) => panic!("{p}"),
    }
    Ok(())
}

/// A change to some bytes.
#[derive(Clone, Debug)]
pub(super) enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Append(Vec<u8>),
    Splice { at: usize, bytes: Vec<u8> },
    Replace(Vec<u8>),
}

pub(super) fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..12);
    let one = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        bytes().prop_map(Mutation::Append),
        (any::<usize>(), bytes()).prop_map(|(at, bytes)| Mutation::Splice { at, bytes }),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(Mutation::Replace),
    ];
    prop::collection::vec(one, 0..4)
}

pub(super) fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in mutations {
        match m {
            Mutation::Flip { at, mask } => {
                if !out.is_empty() {
                    let i = at % out.len();
                    out[i] ^= mask;
                }
            }
            Mutation::Truncate { at } => out.truncate(at % (out.len() + 1)),
            Mutation::Append(more) => out.extend_from_slice(more),
            Mutation::Splice { at, bytes } => {
                let i = at % (out.len() + 1);
                out.splice(i..i, bytes.iter().copied());
            }
            Mutation::Replace(new) => out = new.clone(),
        }
    }
    out
}

/// Weights, the extremes included.
pub(super) fn weights() -> impl Strategy<Value = i64> {
    prop_oneof![
        -3i64..=3,
        Just(i64::MAX),
        Just(i64::MIN),
        Just(i64::MAX - 1),
        any::<i64>(),
    ]
}

/// What to do to one stored row.
#[derive(Clone, Debug)]
pub(super) struct Damage {
    pub(super) state: usize,
    pub(super) row: usize,
    pub(super) data: Vec<Mutation>,
    pub(super) identity: IdentityChoice,
    pub(super) weight: i64,
    pub(super) step: i32,
    /// A key column (by position among the table's `k_` columns) and the
    /// value to write into it.
    pub(super) key: Option<(usize, KeyLiteral)>,
}

/// The damaged row's identity.
#[derive(Clone, Debug)]
pub(super) enum IdentityChoice {
    /// The row's own (the row is damaged in place).
    Same,
    /// The hash of the damaged bytes, so the identity check passes and the
    /// bytes reach the decoder.
    OfData,
    Any(i64),
}

/// A value for a key column, of any type (SQLite stores it whatever the
/// column's type; Postgres converts it or refuses).
#[derive(Clone, Debug)]
pub(super) enum KeyLiteral {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl KeyLiteral {
    pub(super) fn sql(&self) -> String {
        match self {
            KeyLiteral::Null => "NULL".into(),
            KeyLiteral::Int(i) => i.to_string(),
            KeyLiteral::Float(f) => format!("{f:e}"),
            KeyLiteral::Text(t) => format!("'{}'", t.replace('\'', "''")),
        }
    }
}

pub(super) fn damages() -> impl Strategy<Value = Damage> {
    let identity = prop_oneof![
        Just(IdentityChoice::Same),
        Just(IdentityChoice::OfData),
        Just(IdentityChoice::OfData),
        any::<i64>().prop_map(IdentityChoice::Any),
    ];
    let step = prop_oneof![0i32..4, any::<i32>()];
    let literal = prop_oneof![
        Just(KeyLiteral::Null),
        any::<i64>().prop_map(KeyLiteral::Int),
        (-1e6f64..1e6).prop_map(KeyLiteral::Float),
        "[a-c' é0-9]{0,6}".prop_map(KeyLiteral::Text),
    ];
    let key = prop::option::of((any::<usize>(), literal));
    // Weights whose products and sums stay far from overflow: extreme
    // weights are `extreme_stored_weights_are_errors_not_panics`'s case.
    let weight = prop_oneof![-3i64..=3, -1_000_000i64..=1_000_000];
    (
        (any::<usize>(), any::<usize>(), mutations()),
        (identity, weight, step, key),
    )
        .prop_map(
            |((state, row, data), (identity, weight, step, key))| Damage {
                state,
                row,
                data,
                identity,
                weight,
                step,
                key,
            },
        )
}

/// Whether `result` is fine after `table` was damaged: `Ok` (damaged key
/// columns or weights can make a read miss or count a row differently), or
/// a typed error naming `table`. A damaged `step` (or weight) in a nested
/// state can also keep a recursion from converging: it then stops at its
/// limit with `RecursionLimit`, which names the recursion, not the table.
pub(super) fn typed<T: std::fmt::Debug>(
    result: &Result<T, GraphError>,
    table: &str,
    nested: bool,
    collision_allowed: bool,
) -> bool {
    match result {
        Ok(_) => true,
        Err(e @ GraphError::Store(StoreError::Corrupt { table: t, .. })) => {
            t == table && names_table(e, table)
        }
        Err(GraphError::Store(StoreError::IdentityCollision { table: t, .. })) => {
            collision_allowed && t == table
        }
        Err(GraphError::RecursionLimit { steps, .. }) => nested && *steps == RECURSION_LIMIT,
        Err(_) => false,
    }
}

/// Seeds `store`, damages one row of one table with raw SQL (its bytes,
/// identity, weight, step and a key column), then reads the caches (whole
/// and by index) and runs an iteration that reads every state.
pub(super) fn damaged_row(kind: Kind, damage: &Damage) -> Result<(), TestCaseError> {
    let (graph, q) = fuzz_query().map_err(fail)?;
    let mut store = Target::open(kind, &graph).map_err(fail)?;
    let seed = Changes::new()
        .insert(
            &q.readings,
            [
                reading(1, "a", 1.5),
                reading(2, "a", -2.0),
                reading(3, "b", 7.0),
                reading(4, "c", f64::NAN),
            ],
        )
        .insert(
            &q.meters,
            [Pair::new("a".into(), 10), Pair::new("b".into(), 20)],
        )
        .insert(
            &q.edges,
            [Pair::new(1, 2), Pair::new(2, 3), Pair::new(3, 1)],
        );
    graph.iteration(&mut *store, seed).map_err(fail)?;
    let readings_before = q.reading_cache.zset(&mut *store).map_err(fail)?;
    let paths_before = q.path_cache.zset(&mut *store).map_err(fail)?;

    let spec = &graph.states()[damage.state % graph.states().len()];
    let table = store.table(spec.path().as_str());
    let nested = spec.kind() == StateKind::Nested;
    let rows = store.rows(&table, nested);
    prop_assert!(
        !rows.is_empty(),
        "{:?}: the seed leaves {} empty",
        kind,
        table
    );
    let old = &rows[damage.row % rows.len()];
    let data = mutate(&old.data, &damage.data);
    let identity = match damage.identity {
        IdentityChoice::Same => old.identity,
        IdentityChoice::OfData => identity_of(&data),
        IdentityChoice::Any(i) => i,
    };
    let (old_key, new_key, set_step) = if nested {
        (
            format!("identity = {} AND step = {}", old.identity, old.step),
            format!("identity = {identity} AND step = {}", damage.step),
            format!(", step = {}", damage.step),
        )
    } else {
        (
            format!("identity = {}", old.identity),
            format!("identity = {identity}"),
            String::new(),
        )
    };
    // Make room for the new primary key, then damage the row in place (its
    // key columns stay, so reads by index still find it).
    store.execute(&format!(
        "DELETE FROM {table} WHERE {new_key} AND NOT ({old_key});
         UPDATE {table} SET identity = {identity}, data = {}, c = {}{set_step} WHERE {old_key};",
        store.blob(&data),
        damage.weight
    ));
    if let Some((column, value)) = &damage.key {
        let columns = store.key_columns(&table);
        if !columns.is_empty() {
            let (column, _) = &columns[column % columns.len()];
            // Postgres refuses what its column cannot hold (and a key
            // column in the primary key refuses NULL): that damage cannot
            // happen there, so the row keeps its key.
            let _ = store.try_execute(&format!(
                "UPDATE {table} SET {column} = {} WHERE {new_key}",
                value.sql()
            ));
        }
    }

    let reading_table = store.table("reading_cache");
    let path_table = store.table("path_cache");
    let whole = q.reading_cache.zset(&mut *store);
    if table == reading_table {
        prop_assert!(
            typed(&whole, &table, false, false),
            "{:?}: {:?}",
            kind,
            whole.err()
        );
    } else {
        prop_assert_eq!(whole.map_err(fail)?, readings_before, "{:?}", kind);
    }
    let whole = q.path_cache.zset(&mut *store);
    if table == path_table {
        prop_assert!(
            typed(&whole, &table, false, false),
            "{:?}: {:?}",
            kind,
            whole.err()
        );
    } else {
        prop_assert_eq!(whole.map_err(fail)?, paths_before, "{:?}", kind);
    }
    let meters = ["a".to_string(), "b".to_string(), "c".to_string()];
    let by_key = q
        .reading_cache
        .iter_by_index(&mut *store, &q.by_meter, Some(&meters));
    prop_assert!(
        typed(&by_key, &reading_table, false, false),
        "{:?}: {:?}",
        kind,
        by_key.err()
    );
    let by_key = q
        .path_cache
        .iter_by_index(&mut *store, &q.by_from, Some(&[1, 2, 3]));
    prop_assert!(
        typed(&by_key, &path_table, false, false),
        "{:?}: {:?}",
        kind,
        by_key.err()
    );

    // An iteration touching every state: new rows for every meter and
    // group, a new owner, a removed reading, and an edge into the cycle.
    let changes = Changes::new()
        .insert(
            &q.readings,
            [
                reading(5, "a", 3.0),
                reading(6, "b", 9.5),
                reading(7, "c", 0.0),
            ],
        )
        .remove(&q.readings, [reading(3, "b", 7.0)])
        .insert(&q.meters, [Pair::new("c".into(), 30)])
        .insert(&q.edges, [Pair::new(4, 1)]);
    let out = graph.iteration(&mut *store, changes);
    prop_assert!(
        typed(&out, &table, nested, true),
        "{:?} ({}): {:?}",
        kind,
        table,
        out.err()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Rows damaged with raw SQL (bytes, identities, weights, steps, key
    /// columns) in any state table of a SQL store.
    #[test]
    fn damaged_stored_rows_are_typed_errors(damage in damages()) {
        for kind in sql_kinds() {
            damaged_row(kind, &damage)?;
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Bad input on every store.
