//! Caches read as plain SQL, the way a service that does not link this
//! library reads them: through each cache's view (`<table>_view`), with a
//! connection of its own (rusqlite, tokio-postgres), compared with what the
//! library reads.
//!
//! - `rich_rows_read_back_through_sql`: random rows of a type with every
//!   kind of field (`NULL`s, NaN and `-0.0`, unicode, far dates, `i64`
//!   limits, nested and optional structs, enums, bytes, UUIDs, `u64`), each
//!   column checked against the documented mapping, store by store.
//! - `meter_reads_summed_by_user_in_sql`: the README query.
//! - `views_exist_after_open_reopen_and_migration`.
//! - `a_row_type_whose_fields_change_is_a_changed_query`.
//! - `types::view_and_value_column_types_are_the_documented_ones`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use benches::meter_reads::{self, Workload};
use chrono::{NaiveDate, NaiveDateTime, Timelike};
use graph::{Cache, GraphError};
use operators::prelude::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use store::{OpenOptions, StoreError};
use uuid::Uuid;

use crate::harness::{Kind, Opened, batches, fail, sql_kinds, with_pg_client};
use crate::oracle::{Rel, bump};

mod types;

/// A float that keeps `-0.0` and NaN as they are (unlike `F64`), ordered
/// by its bits.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
struct Bits(f64);

impl PartialEq for Bits {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Bits {}
impl PartialOrd for Bits {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bits {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.to_bits().cmp(&other.0.to_bits())
    }
}
impl std::hash::Hash for Bits {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct Inner {
    a: i64,
    b: Option<String>,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
enum Tag {
    Plain,
    Count(i64),
    Named { label: String, at: NaiveDate },
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct Rich {
    id: i64,
    name: String,
    score: F64,
    raw: Bits,
    day: NaiveDate,
    at: Option<NaiveDateTime>,
    flag: bool,
    blob: Vec<u8>,
    uid: Uuid,
    big: u64,
    inner: Option<Inner>,
    pos: (i32, String),
    tag: Tag,
    list: Vec<i64>,
}

/// The view's columns, in order: the stable API.
const RICH_COLUMNS: [&str; 17] = [
    "id", "name", "score", "raw", "day", "at", "flag", "blob", "uid", "big", "inner_a", "inner_b",
    "pos_0", "pos_1", "tag", "list", "count",
];

fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a date")
}

fn far_dates() -> impl Strategy<Value = NaiveDate> + Clone {
    prop::sample::select(vec![
        NaiveDate::MIN,
        NaiveDate::MAX,
        ymd(-4713, 11, 24),
        ymd(-4713, 11, 23),
        ymd(-1, 12, 31),
        ymd(0, 1, 1),
        ymd(1970, 1, 1),
        ymd(2023, 6, 15),
        ymd(9999, 12, 31),
        ymd(10000, 1, 1),
    ])
}

fn texts() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(vec![
        String::new(),
        "plain".to_owned(),
        "ünïcödé ñ 日本語 🦀".to_owned(),
        "quote ' \" \\ ; --".to_owned(),
        "nul\0inside".to_owned(),
        "line\nbreak\ttab".to_owned(),
    ])
}

fn floats() -> impl Strategy<Value = f64> + Clone {
    prop::sample::select(vec![
        0.0,
        -0.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1.5,
        -1e308,
        5e-324,
        0.1,
    ])
}

fn ints() -> impl Strategy<Value = i64> + Clone {
    prop::sample::select(vec![i64::MIN, i64::MAX, 0, -1, 42])
}

fn rich() -> impl Strategy<Value = Rich> + Clone {
    let time = (far_dates(), 0u32..86_400, 0u32..1_000_000).prop_map(|(d, s, us)| {
        // Postgres keeps microseconds: no finer digits here.
        d.and_hms_micro_opt(s / 3600, s / 60 % 60, s % 60, us)
            .expect("a time")
    });
    let inner = (ints(), prop::option::of(texts())).prop_map(|(a, b)| Inner { a, b });
    let tag = prop_oneof![
        Just(Tag::Plain),
        ints().prop_map(Tag::Count),
        (texts(), far_dates()).prop_map(|(label, at)| Tag::Named { label, at }),
    ];
    (
        (0i64..3, texts(), floats(), floats(), far_dates()),
        (
            prop::option::of(time),
            any::<bool>(),
            prop::sample::select(vec![vec![], vec![0u8, 255, 7], b"bytes\0".to_vec()]),
            prop::sample::select(vec![Uuid::nil(), Uuid::max(), Uuid::from_u128(0x1234)]),
            prop::sample::select(vec![0u64, u64::MAX, i64::MAX as u64 + 1]),
        ),
        (
            prop::option::of(inner),
            (prop::sample::select(vec![i32::MIN, i32::MAX, 0]), texts()),
            tag,
            prop::sample::select(vec![vec![], vec![i64::MIN, i64::MAX]]),
        ),
    )
        .prop_map(
            |((id, name, score, raw, day), (at, flag, blob, uid, big), (inner, pos, tag, list))| {
                Rich {
                    id: if id == 2 { i64::MIN } else { id },
                    name,
                    score: F64::new(score),
                    raw: Bits(raw),
                    day,
                    at,
                    flag,
                    blob,
                    uid,
                    big,
                    inner,
                    pos,
                    tag,
                    list,
                }
            },
        )
}

/// One cell as read through SQL, tagged with how it was stored: SQLite's
/// storage class (`i` integer, `f` real, `t` text, `b` blob), Postgres'
/// type, `j` JSON (parsed, so `jsonb`'s spacing does not matter).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).expect("JSON text");
    format!("j:{v}")
}

/// What JSON the library promises for `value`: serde_json's (a crate it
/// does not use), with NUL characters as U+FFFD.
fn expected_json<T: Serialize>(value: &T) -> String {
    fn fix(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => *s = s.replace('\0', "\u{fffd}"),
            serde_json::Value::Array(a) => a.iter_mut().for_each(fix),
            serde_json::Value::Object(o) => o.values_mut().for_each(fix),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(value).expect("serde_json");
    fix(&mut v);
    format!("j:{v}")
}

/// The SQLite text of a date: `YYYY-MM-DD` in years 0 to 9999, chrono's
/// signed form outside them.
fn sqlite_date(d: NaiveDate) -> String {
    use chrono::Datelike;
    if (0..=9999).contains(&d.year()) {
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    } else {
        d.to_string()
    }
}

fn first_pg_day() -> NaiveDate {
    ymd(-4713, 11, 24)
}

/// The documented mapping of a `Rich` row with weight `count`, as `kind`
/// stores it.
fn expected_rich(r: &Rich, count: i64, kind: Kind) -> Vec<String> {
    let pg = kind == Kind::Postgres;
    let float = |f: f64| -> String {
        if pg {
            format!("f:{f:?}")
        } else if f.is_nan() {
            // SQLite has no NaN: the text `NaN`.
            "t:\"NaN\"".into()
        } else if f == 0.0 {
            // SQLite keeps a REAL zero without its sign.
            "f:0.0".into()
        } else {
            format!("f:{f:?}")
        }
    };
    let text = |s: &str| -> String {
        if pg {
            format!("t:{:?}", s.replace('\0', "\u{fffd}"))
        } else {
            format!("t:{s:?}")
        }
    };
    let int = |i: i64| format!("i:{i}");
    let date = |d: NaiveDate| -> String {
        if !pg {
            format!("t:{:?}", sqlite_date(d))
        } else if d < first_pg_day() {
            "date:-infinity".into()
        } else {
            format!("date:{d}")
        }
    };
    let time = |t: NaiveDateTime| -> String {
        if !pg {
            format!(
                "t:{:?}",
                format!(
                    "{} {:02}:{:02}:{:02}.{:09}",
                    sqlite_date(t.date()),
                    t.hour(),
                    t.minute(),
                    t.second(),
                    t.nanosecond()
                )
            )
        } else if t.date() < first_pg_day() {
            "ts:-infinity".into()
        } else {
            format!("ts:{t}")
        }
    };
    let null = || "null".to_owned();
    vec![
        int(r.id),
        text(&r.name),
        float(r.score.get()),
        float(r.raw.0),
        date(r.day),
        r.at.map_or_else(null, time),
        if pg {
            format!("bool:{}", r.flag)
        } else {
            int(i64::from(r.flag))
        },
        format!("b:{}", hex(&r.blob)),
        format!("b:{}", hex(r.uid.as_bytes())),
        format!("t:{:?}", r.big.to_string()),
        r.inner.as_ref().map_or_else(null, |i| int(i.a)),
        r.inner
            .as_ref()
            .and_then(|i| i.b.as_deref())
            .map_or_else(null, text),
        int(i64::from(r.pos.0)),
        text(&r.pos.1),
        expected_json(&r.tag),
        expected_json(&r.list),
        int(count),
    ]
}

/// Every row of `view` through a connection of its own: column names and
/// each row's cells (`json`: the columns SQLite keeps JSON in, as text).
pub(crate) fn read_view(
    store: &Opened,
    view: &str,
    json_columns: &[String],
) -> (Vec<String>, Vec<Vec<String>>) {
    if let Some(s) = store.sqlite() {
        let conn = rusqlite::Connection::open(s.path()).expect("open the file");
        let mut st = conn
            .prepare(&format!("SELECT * FROM {view}"))
            .expect("the view");
        let names: Vec<String> = st.column_names().map(|n| n.to_string()).collect();
        let n = names.len();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        use rusqlite::types::ValueRef;
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => "null".to_owned(),
                            ValueRef::Integer(i) => format!("i:{i}"),
                            ValueRef::Real(f) => format!("f:{f:?}"),
                            ValueRef::Text(t) => {
                                let t = String::from_utf8_lossy(t).into_owned();
                                if json_columns.contains(&names[i]) {
                                    json(&t)
                                } else {
                                    format!("t:{t:?}")
                                }
                            }
                            ValueRef::Blob(b) => format!("b:{}", hex(b)),
                        })
                    })
                    .collect::<Result<Vec<String>, rusqlite::Error>>()
            })
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        return (names, rows);
    }
    with_pg_client(async |c| {
        let columns = c
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position",
                &[&view],
            )
            .await
            .expect("information_schema");
        let names: Vec<String> = columns.iter().map(|r| r.get(0)).collect();
        let types: Vec<String> = columns.iter().map(|r| r.get(1)).collect();
        // numeric and jsonb as their text; every other type read typed.
        let select: Vec<String> = names
            .iter()
            .zip(&types)
            .map(|(n, t)| match t.as_str() {
                "numeric" | "jsonb" => format!("\"{n}\"::text"),
                _ => format!("\"{n}\""),
            })
            .collect();
        let rows = c
            .query(&format!("SELECT {} FROM {view}", select.join(", ")), &[])
            .await
            .expect("the view");
        let rows = rows
            .iter()
            .map(|r| {
                types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| pg_cell(r, i, t))
                    .collect()
            })
            .collect();
        (names, rows)
    })
}

/// The JSON columns of the `Rich` cache.
fn rich_json() -> Vec<String> {
    vec!["tag".to_owned(), "list".to_owned()]
}

fn pg_cell(r: &tokio_postgres::Row, i: usize, ty: &str) -> String {
    use tokio_postgres::types::{Date, Timestamp};
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
        v.map_or_else(|| "null".to_owned(), f)
    }
    match ty {
        "bigint" => opt(r.get::<_, Option<i64>>(i), |v| format!("i:{v}")),
        "boolean" => opt(r.get::<_, Option<bool>>(i), |v| format!("bool:{v}")),
        "double precision" => opt(r.get::<_, Option<f64>>(i), |v| format!("f:{v:?}")),
        "text" => opt(r.get::<_, Option<String>>(i), |v| format!("t:{v:?}")),
        "numeric" => opt(r.get::<_, Option<String>>(i), |v| format!("t:{v:?}")),
        "jsonb" => opt(r.get::<_, Option<String>>(i), |v| json(&v)),
        "bytea" => opt(r.get::<_, Option<Vec<u8>>>(i), |v| format!("b:{}", hex(&v))),
        "uuid" => opt(r.get::<_, Option<Uuid>>(i), |v| {
            format!("b:{}", hex(v.as_bytes()))
        }),
        "date" => opt(r.get::<_, Option<Date<NaiveDate>>>(i), |v| match v {
            Date::Value(d) => format!("date:{d}"),
            Date::NegInfinity => "date:-infinity".into(),
            Date::PosInfinity => "date:infinity".into(),
        }),
        "timestamp without time zone" => opt(
            r.get::<_, Option<Timestamp<NaiveDateTime>>>(i),
            |v| match v {
                Timestamp::Value(t) => format!("ts:{t}"),
                Timestamp::NegInfinity => "ts:-infinity".into(),
                Timestamp::PosInfinity => "ts:infinity".into(),
            },
        ),
        other => panic!("column {i} has type {other}"),
    }
}

fn view_of(store: &Opened, path: &str) -> String {
    graph::view_ident(&store.table(path))
}

/// The rows of `view` and those expected, each sorted.
fn compare(
    got: Vec<Vec<String>>,
    expected: impl IntoIterator<Item = Vec<String>>,
) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut got = got;
    let mut expected: Vec<Vec<String>> = expected.into_iter().collect();
    got.sort();
    expected.sort();
    (got, expected)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(16),
        ..ProptestConfig::default()
    })]

    /// Random batches into a cache of `Rich` rows and a cache of sums per
    /// id, on every SQL store, re-opened half-way: after every batch the
    /// library's read equals the oracle's, and every row of each view read
    /// through SQL equals the library's row as the mapping says.
    #[test]
    fn rich_rows_read_back_through_sql(b in batches(rich(), 6, 6)) {
        let by_id = Index::new("id", |r: &Rich| r.id);
        for kind in sql_kinds() {
            let by = by_id.clone();
            let (graph, (input, rows, sums)) = Graph::build(move |q| {
                let (input, x) = q.input::<Rich>("rich")?;
                let rows = q.cache("rich_cache", x, &[&by])?;
                let sums = x.group_reduce_flatten(&by, F64::new(0.0), |r| r.score);
                let sums = q.cache("sums_cache", sums, &[])?;
                Ok((input, rows, sums))
            }).map_err(fail)?;
            let mut store = kind.open(&graph).map_err(fail)?;
            let mut acc: Rel<Rich> = Rel::new();
            for (i, batch) in b.iter().enumerate() {
                if i == b.len() / 2 {
                    store = store.reopen(&graph).map_err(fail)?;
                }
                for (v, w) in batch {
                    bump(&mut acc, v, *w);
                }
                graph
                    .iteration(&mut *store, Changes::new().zset(&input, batch.iter().cloned().collect()))
                    .map_err(fail)?;
                let lib: BTreeMap<Rich, i64> = rows.zset(&mut *store).map_err(fail)?.into_iter().collect();
                prop_assert_eq!(&lib, &acc, "{:?}: the library's read after batch {}", kind, i);

                let (names, got) = read_view(&store, &view_of(&store, "rich_cache"), &rich_json());
                prop_assert_eq!(&names, &RICH_COLUMNS.map(str::to_owned).to_vec());
                let (got, expected) = compare(got, lib.iter().map(|(r, w)| expected_rich(r, *w, kind)));
                prop_assert_eq!(got, expected, "{:?}: rich_cache_view after batch {}", kind, i);

                let lib_sums = sums.zset(&mut *store).map_err(fail)?;
                let (names, got) = read_view(&store, &view_of(&store, "sums_cache"), &[]);
                prop_assert_eq!(names, vec!["left", "right", "count"]);
                let float = |f: f64| if kind == Kind::Sqlite && f.is_nan() { "t:\"NaN\"".to_owned() } else { format!("f:{f:?}") };
                let (got, expected) = compare(got, lib_sums.iter().map(|(p, w)| {
                    vec![float(p.left.get()), format!("i:{}", p.right), format!("i:{w}")]
                }));
                prop_assert_eq!(got, expected, "{:?}: sums_cache_view after batch {}", kind, i);
            }
        }
    }
}

/// The README's query: a service that knows only SQL sums the meter-reads
/// cache by user, and gets the workload's own sums.
#[test]
fn meter_reads_summed_by_user_in_sql() -> Result<(), GraphError> {
    let w = Workload {
        users: 25,
        reads: 3000,
    };
    let mut expected: BTreeMap<i64, f64> = BTreeMap::new();
    for ((user, _, _), v) in w.expected_daily() {
        *expected.entry(user).or_default() += v;
    }
    for kind in sql_kinds() {
        let (graph, q) = meter_reads::build()?;
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &q.users, w.all_users())?;
        graph.insert(&mut *store, &q.meters, w.all_meters())?;
        for chunk in 0..3 {
            graph.insert(
                &mut *store,
                &q.reads,
                w.reads(chunk * 1000..(chunk + 1) * 1000),
            )?;
        }
        let view = format!("{}daily_cache_view", store.prefix());
        let sql = format!(
            "SELECT user_id, sum(value), min(count), max(count) FROM {view} \
             GROUP BY user_id ORDER BY user_id"
        );
        let got: Vec<(i64, f64, i64, i64)> = match kind {
            Kind::Sqlite => {
                let conn = rusqlite::Connection::open(store.sqlite().expect("sqlite").path())
                    .expect("open the file");
                let mut st = conn.prepare(&sql).expect("the query");
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            }
            _ => with_pg_client(async |c| {
                c.query(&sql, &[])
                    .await
                    .expect("the query")
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                    .collect()
            }),
        };
        assert_eq!(got.len(), expected.len(), "{kind:?}");
        for ((user, sum, min, max), (e_user, e_sum)) in got.iter().zip(&expected) {
            assert_eq!((user, min, max), (e_user, &1, &1), "{kind:?}");
            // SQL adds in another order than the workload: the last bits.
            assert!(
                (sum - e_sum).abs() <= 1e-9 * e_sum.abs().max(1.0),
                "{kind:?}: user {user}: {sum} in SQL, {e_sum} expected"
            );
        }
    }
    Ok(())
}

/// The names of the views in the store's database, under its prefix.
fn views(store: &Opened) -> Vec<String> {
    let prefix = store.prefix().to_owned();
    let mut names: Vec<String> = match store.sqlite() {
        Some(s) => {
            let conn = rusqlite::Connection::open(s.path()).expect("open the file");
            let mut st = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'view'")
                .expect("sqlite_master");
            st.query_map([], |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        }
        None => with_pg_client(async |c| {
            c.query(
                "SELECT viewname::text FROM pg_views WHERE schemaname = current_schema()",
                &[],
            )
            .await
            .expect("pg_views")
            .iter()
            .map(|r| r.get(0))
            .collect()
        }),
    };
    names.retain(|n| n.starts_with(&prefix));
    names.sort();
    names
}

/// Each cache's view is there once the store is open, still there (and
/// not re-made) after it is opened again, follows a migration that adds a
/// cache, and goes with a cache a migration drops.
#[test]
fn views_exist_after_open_reopen_and_migration() -> Result<(), GraphError> {
    let w = Workload {
        users: 5,
        reads: 300,
    };
    for kind in sql_kinds() {
        let (graph, q) = meter_reads::build()?;
        let mut store = kind.open(&graph)?;
        let p = store.prefix().to_owned();
        assert_eq!(
            views(&store),
            vec![format!("{p}daily_cache_view")],
            "{kind:?}"
        );
        graph.insert(&mut *store, &q.users, w.all_users())?;
        graph.insert(&mut *store, &q.meters, w.all_meters())?;
        graph.insert(&mut *store, &q.reads, w.reads(0..300))?;
        let rows = read_view(&store, &format!("{p}daily_cache_view"), &[])
            .1
            .len();
        assert_eq!(rows, w.expected_daily().len(), "{kind:?}");

        // Opened again, to read and to write.
        let store = store.reopen(&graph)?;
        assert_eq!(
            views(&store),
            vec![format!("{p}daily_cache_view")],
            "{kind:?}"
        );
        let again = store.open_again(&graph, true)?;
        assert_eq!(
            views(&again),
            vec![format!("{p}daily_cache_view")],
            "{kind:?}"
        );
        drop(again);

        // The next version adds a cache: migrated, it has its view too.
        let (next, _, monthly) = meter_reads::build_with_monthly()?;
        let migrated = reopen_migrating(&store, &next)?;
        assert_eq!(
            views(&migrated),
            vec![
                format!("{p}daily_cache_view"),
                format!("{p}monthly_cache_view")
            ],
            "{kind:?}"
        );
        let months = read_view(&migrated, &format!("{p}monthly_cache_view"), &[]);
        assert_eq!(months.0, vec!["user_id", "month", "value", "count"]);
        let mut migrated = migrated;
        assert_eq!(
            months.1.len(),
            monthly.zset(&mut *migrated)?.len(),
            "{kind:?}"
        );
        drop(migrated);

        // And back: the monthly cache is dropped, its view with it.
        let back = reopen_migrating(&store, &graph)?;
        assert_eq!(
            views(&back),
            vec![format!("{p}daily_cache_view")],
            "{kind:?}"
        );
    }
    Ok(())
}

/// Opens `store`'s storage for `graph`, migrating to it.
fn reopen_migrating(store: &Opened, graph: &Graph) -> Result<Opened, GraphError> {
    let options = |prefix: &str| OpenOptions {
        prefix: prefix.to_owned(),
        ..OpenOptions::default().migrate()
    };
    match (store.sqlite(), store.postgres()) {
        (Some(s), _) => {
            let opened = store::Sqlite::open(s.path(), graph, OpenOptions::default().migrate())?;
            drop(opened);
        }
        (_, Some(p)) => {
            let opened = store::Postgres::with_pool(
                p.connection_pool().clone(),
                graph,
                options(store.prefix()),
            )?;
            drop(opened);
        }
        _ => unreachable!("a SQL store"),
    }
    store.open_again(graph, false)
}

/// Whether [`Evolving`] has its second field: what a recompile with a
/// field added does to a row type, without changing its name.
static WIDE: AtomicBool = AtomicBool::new(false);

/// A row type whose fields depend on [`WIDE`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
struct Evolving {
    a: i64,
    b: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "Evolving")]
struct Narrow {
    a: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "Evolving")]
struct Wide {
    a: i64,
    b: i64,
}

impl Serialize for Evolving {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if WIDE.load(Ordering::SeqCst) {
            Wide {
                a: self.a,
                b: self.b,
            }
            .serialize(s)
        } else {
            Narrow { a: self.a }.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Evolving {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if WIDE.load(Ordering::SeqCst) {
            Wide::deserialize(d).map(|w| Evolving { a: w.a, b: w.b })
        } else {
            Narrow::deserialize(d).map(|n| Evolving { a: n.a, b: 0 })
        }
    }
}

fn evolving() -> Result<(Graph, (graph::Input<i64>, Cache<Evolving>)), GraphError> {
    Graph::build(|q| {
        let (input, x) = q.input::<i64>("numbers")?;
        let rows = x.map(|n| Evolving { a: *n, b: n * 2 });
        Ok((input, q.cache("evolving_cache", rows, &[])?))
    })
}

/// A cache whose row type gained a field (same type name) holds another
/// shape: opening the store is refused with the plan, as for any changed
/// query, and migrating computes the cache again with the new column.
#[test]
fn a_row_type_whose_fields_change_is_a_changed_query() -> Result<(), GraphError> {
    for kind in sql_kinds() {
        WIDE.store(false, Ordering::SeqCst);
        let (graph, (input, _)) = evolving()?;
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, [1, 2, 3])?;
        let view = view_of(&store, "evolving_cache");
        assert_eq!(
            read_view(&store, &view, &[]).0,
            vec!["a", "count"],
            "{kind:?}"
        );

        WIDE.store(true, Ordering::SeqCst);
        let (wide, (_, cache)) = evolving()?;
        match store.open_again(&wide, true) {
            Err(GraphError::Store(StoreError::QueryChanged { plan })) => {
                let changed: Vec<&str> = plan
                    .entries
                    .iter()
                    .filter(|e| matches!(e.action, graph::PlanAction::Changed { .. }))
                    .map(|e| e.path.as_str())
                    .collect();
                assert_eq!(changed, vec!["evolving_cache"], "{kind:?}: {plan:?}");
            }
            Err(other) => panic!("{kind:?}: {other}"),
            Ok(_) => panic!("{kind:?}: a changed row type was opened as it was"),
        }
        let mut migrated = reopen_migrating(&store, &wide)?;
        let (names, rows) = read_view(&migrated, &view, &[]);
        assert_eq!(names, vec!["a", "b", "count"], "{kind:?}");
        assert_eq!(rows.len(), 3, "{kind:?}");
        assert_eq!(cache.zset(&mut *migrated)?.len(), 3, "{kind:?}");
        WIDE.store(false, Ordering::SeqCst);
    }
    Ok(())
}
