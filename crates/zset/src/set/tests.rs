//! Group laws of `ZSet`, checked on random Z-sets over a small domain so that
//! weights collide and cancel.

use proptest::prelude::*;

use crate::{Index, Pair, ZSet, zset};

fn small_zset() -> impl Strategy<Value = ZSet<u8>> {
    prop::collection::vec((0u8..6, -3i64..=3), 0..12).prop_map(|rows| rows.into_iter().collect())
}

fn assert_no_zero_weights(z: &ZSet<u8>) {
    assert!(z.iter().all(|(_, w)| w != 0), "zero weight stored in {z:?}");
}

proptest! {
    #[test]
    fn addition_is_associative_and_commutative(a in small_zset(), b in small_zset(), c in small_zset()) {
        prop_assert_eq!(&(&a + &b) + &c, &a + &(&b + &c));
        prop_assert_eq!(&a + &b, &b + &a);
        prop_assert_eq!(a.clone() + b.clone(), &a + &b);
    }

    #[test]
    fn zero_and_inverse(a in small_zset()) {
        prop_assert_eq!(&a + &ZSet::new(), a.clone());
        let cancelled = &a + &-&a;
        prop_assert!(cancelled.is_empty());
        prop_assert_eq!(&a - &a, ZSet::new());
        prop_assert_eq!(-(-a.clone()), a);
    }

    #[test]
    fn scaling_distributes(a in small_zset(), b in small_zset(), n in -3i64..=3, m in -3i64..=3) {
        prop_assert_eq!((&a + &b).scale(n), &a.scale(n) + &b.scale(n));
        prop_assert_eq!(a.scale(n + m), &a.scale(n) + &a.scale(m));
        prop_assert_eq!(a.scale(n).scale(m), a.scale(n * m));
        assert_no_zero_weights(&a.scale(n));
    }

    #[test]
    fn results_never_store_zero(a in small_zset(), b in small_zset()) {
        assert_no_zero_weights(&a);
        assert_no_zero_weights(&(&a + &b));
        assert_no_zero_weights(&(&a - &b));
        assert_no_zero_weights(&a.map(|x| x % 2));
    }

    #[test]
    fn map_and_filter_are_linear(a in small_zset(), b in small_zset()) {
        let f = |x: &u8| x / 2;
        prop_assert_eq!((&a + &b).map(f), &a.map(f) + &b.map(f));
        let p = |x: &u8| x.is_multiple_of(2);
        prop_assert_eq!((&a + &b).filter(p), &a.filter(p) + &b.filter(p));
        let g = |x: &u8| vec![*x, x + 10];
        prop_assert_eq!((&a + &b).map_many(g), &a.map_many(g) + &b.map_many(g));
    }

    #[test]
    fn postcard_round_trip_is_canonical(a in small_zset(), b in small_zset()) {
        let bytes = postcard::to_allocvec(&a).unwrap();
        let back: ZSet<u8> = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &a);
        // Equal Z-sets built in different orders serialize to equal bytes.
        let sum1 = &a + &b;
        let sum2 = &b + &a;
        prop_assert_eq!(postcard::to_allocvec(&sum1).unwrap(), postcard::to_allocvec(&sum2).unwrap());
    }

    #[test]
    fn iter_by_index_is_key_ordered_and_complete(a in small_zset()) {
        let by_parity = Index::new("parity", |x: &u8| i64::from(x % 3));
        let rows = a.iter_by_index(&by_parity, None);
        prop_assert_eq!(rows.len(), a.len());
        prop_assert!(rows.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)));
        let only: Vec<_> = a.iter_by_index(&by_parity, Some(&[1])).into_iter().map(|r| *r.1).collect();
        let expected: Vec<u8> = a.sorted().into_iter().map(|(v, _)| *v).filter(|v| v % 3 == 1).collect();
        prop_assert_eq!(only, expected);
    }
}

#[test]
fn zset_of_zsets_orders_and_hashes_by_content() {
    let a: ZSet<u8> = zset! { 1 => 1, 2 => 1 };
    let b: ZSet<u8> = zset! { 2 => 1, 1 => 1 };
    let outer: ZSet<ZSet<u8>> = [(a.clone(), 1), (b, 1)].into_iter().collect();
    assert_eq!(outer.get(&a), 2);
}

#[test]
fn weight_sum_counts_duplicates() {
    let z: ZSet<&str> = zset! { "a" => 3, "b" => -1 };
    assert_eq!(z.weight_sum(), 2);
}

/// Pairs of a small domain, so that join keys collide.
fn pairs() -> impl Strategy<Value = ZSet<(u8, u8)>> {
    prop::collection::vec(((0u8..4, 0u8..4), -3i64..=3), 0..10)
        .prop_map(|rows| rows.into_iter().collect())
}

proptest! {
    /// `join` is its definition: every pair with equal keys, weights multiplied.
    #[test]
    fn join_is_the_nested_loop(a in pairs(), b in pairs()) {
        let on = Index::new("k", |r: &(u8, u8)| r.0);
        let mut expected = ZSet::new();
        for (l, wl) in a.iter() {
            for (r, wr) in b.iter() {
                if l.0 == r.0 {
                    expected.update(Pair::new(*l, *r), wl * wr);
                }
            }
        }
        prop_assert_eq!(a.join(&b, &on, &on), expected);
    }

    /// `first_n` is its definition: the positive rows spelled out one unit
    /// each, in (key, value) order, and the first `n` of them counted.
    #[test]
    fn first_n_takes_the_first_units(a in pairs(), n in 0usize..8) {
        let by_second = Index::new("second", |r: &(u8, u8)| crate::Desc(r.1));
        let mut units: Vec<(crate::Desc<u8>, (u8, u8))> = Vec::new();
        for (v, w) in a.iter().filter(|(_, w)| *w > 0) {
            units.extend((0..w).map(|_| (crate::Desc(v.1), *v)));
        }
        units.sort();
        let expected: ZSet<(u8, u8)> = units.into_iter().take(n).map(|(_, v)| (v, 1)).collect();
        prop_assert_eq!(a.first_n(&by_second, n), expected);
    }
}
