//! The worked examples of the original's documentation, with their
//! documented outputs, on every store.

use chrono::NaiveDate;
use operators::prelude::*;
use serde::{Deserialize, Serialize};

use crate::harness::kinds;

type R = Result<(), GraphError>;

fn chars(z: &[(char, i64)]) -> ZSet<char> {
    z.iter().copied().collect()
}

#[test]
fn delay_integrate_differentiate_sequences() -> R {
    for kind in kinds() {
        let (graph, (input, [delay, integral, derivative])) = Graph::build(|q| {
            let (input, a) = q.input::<char>("a")?;
            let outs = [
                q.output("delay", a.delay())?,
                q.output("integrate", a.integrate())?,
                q.output("differentiate", a.differentiate())?,
            ];
            Ok((input, outs))
        })?;
        let mut store = kind.open(&graph)?;
        let mut step =
            |z: &[(char, i64)]| graph.iteration(&mut *store, Changes::new().zset(&input, chars(z)));
        // delay: the first iteration sees nothing, the second the first's value.
        // integrate: {a:1}, {a:1, b:-1}, {a:5, b:-1}.
        let out = step(&[('a', 1)])?;
        assert!(out.get(&delay)?.is_empty());
        assert_eq!(out.get(&integral)?, &chars(&[('a', 1)]));
        let out = step(&[('b', -1)])?;
        assert_eq!(out.get(&delay)?, &chars(&[('a', 1)]));
        assert_eq!(out.get(&integral)?, &chars(&[('a', 1), ('b', -1)]));
        let out = step(&[('a', 4)])?;
        assert_eq!(out.get(&integral)?, &chars(&[('a', 5), ('b', -1)]));
        assert_eq!(out.get(&derivative)?, &chars(&[('a', 4), ('b', 1)]));
    }
    Ok(())
}

#[test]
fn differentiate_sequence() -> R {
    for kind in kinds() {
        let (graph, (input, out)) = Graph::build(|q| {
            let (input, a) = q.input::<char>("a")?;
            Ok((input, q.output("d", a.differentiate())?))
        })?;
        let mut store = kind.open(&graph)?;
        let mut step =
            |z: &[(char, i64)]| graph.iteration(&mut *store, Changes::new().zset(&input, chars(z)));
        assert_eq!(step(&[('a', 1)])?.get(&out)?, &chars(&[('a', 1)]));
        assert_eq!(
            step(&[('a', 1), ('b', -1)])?.get(&out)?,
            &chars(&[('b', -1)])
        );
        assert_eq!(
            step(&[('a', 5), ('b', -1)])?.get(&out)?,
            &chars(&[('a', 4)])
        );
    }
    Ok(())
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct A {
    x: i64,
    name: String,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct B {
    y: i64,
    name: String,
}

fn a(x: i64, name: &str) -> A {
    A {
        x,
        name: name.into(),
    }
}

fn b(y: i64, name: &str) -> B {
    B {
        y,
        name: name.into(),
    }
}

/// "How it works": `differentiate(stream_join(I(a), I(b)))`, the dumb way,
/// and the incremental `join` agree, with the documented outputs.
#[test]
fn join_of_integrals_equals_incremental_join() -> R {
    for kind in kinds() {
        let (graph, (ia, ib, dumb, smart)) = Graph::build(|q| {
            let (ia, sa) = q.input::<A>("a")?;
            let (ib, sb) = q.input::<B>("b")?;
            let ka = Index::new("name", |a: &A| a.name.clone());
            let kb = Index::new("name", |b: &B| b.name.clone());
            let dumb = sa
                .integrate()
                .stream_join(sb.integrate(), &ka, &kb)
                .differentiate();
            Ok((
                ia,
                ib,
                q.output("dumb", dumb)?,
                q.output("smart", sa.join(sb, &ka, &kb))?,
            ))
        })?;
        let mut store = kind.open(&graph)?;
        let expect = |out: &Outputs, rows: &[(A, B, i64)]| -> R {
            let want: ZSet<Pair<A, B>> = rows
                .iter()
                .map(|(a, b, w)| (Pair::new(a.clone(), b.clone()), *w))
                .collect();
            assert_eq!(out.get(&dumb)?, &want);
            assert_eq!(out.get(&smart)?, &want);
            Ok(())
        };
        let out = graph.iteration(
            &mut *store,
            Changes::new()
                .insert(&ia, [a(1, "Bob"), a(2, "Jeff")])
                .insert(&ib, [b(3, "Bob")]),
        )?;
        expect(&out, &[(a(1, "Bob"), b(3, "Bob"), 1)])?;
        let out = graph.iteration(
            &mut *store,
            Changes::new().zset(&ib, zset! { b(4, "Bob") => 2 }),
        )?;
        expect(&out, &[(a(1, "Bob"), b(4, "Bob"), 2)])?;
        let out = graph.iteration(&mut *store, Changes::new().remove(&ia, [a(1, "Bob")]))?;
        expect(
            &out,
            &[
                (a(1, "Bob"), b(3, "Bob"), -1),
                (a(1, "Bob"), b(4, "Bob"), -2),
            ],
        )?;
    }
    Ok(())
}

/// "How it works", `sum_by_length`: a per-group aggregate whose value is
/// itself a Z-set.
#[test]
fn sum_by_length_with_zset_aggregates() -> R {
    for kind in kinds() {
        let by_length = Index::new("length", |s: &String| s.len() as i64);
        let (graph, (input, out)) = Graph::build(|q| {
            let (input, words) = q.input::<String>("words")?;
            let sums = words
                .group_reduce_flatten(&by_length, ZSet::new(), |w| ZSet::singleton(w.clone(), 1));
            Ok((input, q.output("by_length", sums)?))
        })?;
        let mut store = kind.open(&graph)?;
        let set =
            |words: &[&str]| -> ZSet<String> { words.iter().map(|w| (w.to_string(), 1)).collect() };
        let change = graph.insert(
            &mut *store,
            &input,
            ["foo", "bar", "hullo"].map(String::from),
        )?;
        assert_eq!(
            change.get(&out)?,
            &zset! { Pair::new(set(&["hullo"]), 5) => 1, Pair::new(set(&["foo", "bar"]), 3) => 1 }
        );
        let change = graph.remove(&mut *store, &input, ["foo".to_string()])?;
        assert_eq!(
            change.get(&out)?,
            &zset! { Pair::new(set(&["foo", "bar"]), 3) => -1, Pair::new(set(&["bar"]), 3) => 1 }
        );
    }
    Ok(())
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct Product {
    name: String,
    price: F64,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
struct LineItem {
    basket_id: i64,
    product_name: String,
    qty: i64,
}

fn product(name: &str, price: f64) -> Product {
    Product {
        name: name.into(),
        price: F64::new(price),
    }
}

fn item(basket_id: i64, product_name: &str, qty: i64) -> LineItem {
    LineItem {
        basket_id,
        product_name: product_name.into(),
        qty,
    }
}

/// "Writing queries" / "Storing state": the products and line items
/// receipts, with a cache read after each step.
#[test]
fn basket_receipts() -> R {
    for kind in kinds() {
        let (graph, (products, line_items, joined, cache)) = Graph::build(|q| {
            let (products, p) = q.input::<Product>("products")?;
            let (line_items, l) = q.input::<LineItem>("line_items")?;
            let joined = p.join(
                l,
                &Index::new("name", |p: &Product| p.name.clone()),
                &Index::new("product_name", |l: &LineItem| l.product_name.clone()),
            );
            let by_basket =
                Index::new("basket_id", |p: &Pair<Product, LineItem>| p.right.basket_id);
            let totals = joined
                .group_reduce_flatten(&by_basket, F64::new(0.0), |p| p.left.price * p.right.qty);
            let receipts = totals.map(|p| format!("Basket id: {} total: ${}", p.right, p.left));
            let cache = q.cache("receipts", receipts, &[])?;
            Ok((products, line_items, q.output("joined", joined)?, cache))
        })?;
        let mut store = kind.open(&graph)?;
        let receipts = |store: &mut dyn graph::StateStore| -> Result<Vec<String>, GraphError> {
            let z = cache.zset(store)?;
            assert!(z.iter().all(|(_, w)| w == 1));
            let mut lines: Vec<String> = z.values().cloned().collect();
            lines.sort();
            Ok(lines)
        };
        graph.insert(&mut *store, &products, [product("tv", 3.0)])?;
        graph.insert(&mut *store, &products, [product("radio", 5.0)])?;
        graph.insert(
            &mut *store,
            &line_items,
            [item(1, "radio", 4), item(1, "tv", 1), item(2, "tv", 2)],
        )?;
        assert_eq!(
            receipts(&mut *store)?,
            ["Basket id: 1 total: $23.0", "Basket id: 2 total: $6.0"]
        );
        graph.replace(
            &mut *store,
            &products,
            product("tv", 3.0),
            product("tv", 4.0),
        )?;
        assert_eq!(
            receipts(&mut *store)?,
            ["Basket id: 1 total: $24.0", "Basket id: 2 total: $8.0"]
        );
        let change = graph.replace(
            &mut *store,
            &products,
            product("tv", 4.0),
            product("tv", 5.0),
        )?;
        assert_eq!(
            change.get(&joined)?,
            &zset! {
                Pair::new(product("tv", 4.0), item(2, "tv", 2)) => -1,
                Pair::new(product("tv", 5.0), item(2, "tv", 2)) => 1,
                Pair::new(product("tv", 4.0), item(1, "tv", 1)) => -1,
                Pair::new(product("tv", 5.0), item(1, "tv", 1)) => 1,
            }
        );
    }
    Ok(())
}

/// The meter-reads example: six reads (one for an unknown meter), the
/// cache for 2023-01-02 and 2023-01-03, then one read removed.
#[test]
fn meter_reads_documented_sequence() -> R {
    use benches::meter_reads::{self, DailyUsage, Meter, MeterRead, User};
    for kind in kinds() {
        let (graph, q) = meter_reads::build()?;
        let mut store = kind.open(&graph)?;
        let meter_1: uuid::Uuid = "00000001-b3fb-47ef-b22f-a45ba5b7b645"
            .parse()
            .expect("uuid");
        let meter_2: uuid::Uuid = "00000002-b3fb-47ef-b22f-a45ba5b7b645"
            .parse()
            .expect("uuid");
        let at = |day, hour| {
            NaiveDate::from_ymd_opt(2023, 1, day)
                .and_then(|d| d.and_hms_opt(hour, 0, 0))
                .expect("time")
        };
        let read = |meter_id, day, hour, value: f64| MeterRead {
            meter_id,
            timestamp: at(day, hour),
            value: F64::new(value),
        };
        let reads = [
            read(meter_1, 1, 2, 24.0),
            read(meter_1, 1, 3, 0.0),
            read(meter_1, 2, 4, 12.5),
            read(meter_1, 3, 5, 8.0),
            read(meter_1, 2, 6, 6.0),
            read(meter_2, 2, 6, 100.0),
        ];
        graph.insert(
            &mut *store,
            &q.users,
            [User {
                user_id: 1,
                name: "oli".into(),
            }],
        )?;
        graph.insert(
            &mut *store,
            &q.meters,
            [Meter {
                meter_id: meter_1,
                user_id: 1,
            }],
        )?;
        graph.insert(&mut *store, &q.reads, reads.clone())?;
        let day = |d| NaiveDate::from_ymd_opt(2023, 1, d).expect("date");
        let usage = |d, v: f64| DailyUsage {
            user_id: 1,
            meter_id: meter_1,
            date: day(d),
            value: F64::new(v),
        };
        let read_cache = |store: &mut dyn graph::StateStore| {
            q.cache
                .iter_by_index(store, &meter_reads::by_date(), Some(&[day(2), day(3)]))
        };
        assert_eq!(
            read_cache(&mut *store)?,
            [(day(2), usage(2, 18.5), 1), (day(3), usage(3, 8.0), 1)]
        );
        graph.remove(&mut *store, &q.reads, [reads[2].clone()])?;
        assert_eq!(
            read_cache(&mut *store)?,
            [(day(2), usage(2, 6.0), 1), (day(3), usage(3, 8.0), 1)]
        );
    }
    Ok(())
}
