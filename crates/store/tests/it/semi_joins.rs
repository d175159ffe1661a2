//! `semi_join` and `anti_join` against the oracle (`oracle_ops.rs`), on
//! every store, re-opened half-way, at the root and within groups.

use operators::prelude::*;
use proptest::prelude::*;

use crate::harness::{batches2, kinds, out, run2};
use crate::oracle::{Rel, bump};
use crate::oracle_ops;

/// 32 cases per property by default; `PROPTEST_CASES` overrides.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

type Row = (i64, i64);

proptest! {
    #![proptest_config(config())]

    /// Both at once on the same inputs (their states apart), tagged 0 and 1.
    #[test]
    fn semi_and_anti_join(b in batches2((0i64..3, 0i64..3), (0i64..3, 0i64..2), 8, 5)) {
        for kind in kinds() {
            run2(kind, |q| {
                let (l, ls) = q.input::<Row>("l")?;
                let (r, rs) = q.input::<Row>("r")?;
                let k = Index::new("k", |x: &Row| x.0);
                let semi = ls.semi_join(rs, &k, &k).map(|x| (0, *x));
                let anti = ls.anti_join(rs, &k, &k).map(|x| (1, *x));
                Ok((l, r, out(q, semi.add(anti))?))
            }, |v| *v, |l, r| {
                let mut out: Rel<(i64, Row)> = Rel::new();
                for (x, w) in oracle_ops::semi_join(l, r, |x| x.0, |x| x.0, true) {
                    bump(&mut out, &(0, x), w);
                }
                for (x, w) in oracle_ops::semi_join(l, r, |x| x.0, |x| x.0, false) {
                    bump(&mut out, &(1, x), w);
                }
                out
            }, &b)?;
        }
    }

    /// Within groups: a row matches right rows of its own group only.
    #[test]
    fn semi_and_anti_join_per_group(b in batches2((0i64..2, 0i64..2, 0i64..2), (0i64..2, 0i64..2), 8, 5)) {
        type R3 = (i64, i64, i64);
        for kind in kinds() {
            run2(kind, |q| {
                let (l, ls) = q.input::<R3>("l")?;
                let (r, rs) = q.input::<Row>("r")?;
                let gl = Index::new("g", |x: &R3| x.0);
                let gr = Index::new("g", |x: &Row| x.0);
                let kl = Index::new("k", |x: &R3| x.1);
                let kr = Index::new("k", |x: &Row| x.1);
                let both = ls.group(&gl).per_group(|g| {
                    let semi = g.semi_join(rs.group(&gr), &kl, &kr).map(|x| (0, *x));
                    let anti = g.anti_join(rs.group(&gr), &kl, &kr).map(|x| (1, *x));
                    semi.add(anti)
                }).flatten();
                Ok((l, r, out(q, both)?))
            }, |p: &Pair<(i64, R3), i64>| p.left, |l, r| {
                let mut out: Rel<(i64, R3)> = Rel::new();
                let key_l = |x: &R3| (x.0, x.1);
                let key_r = |x: &Row| (x.0, x.1);
                for (x, w) in oracle_ops::semi_join(l, r, key_l, key_r, true) {
                    bump(&mut out, &(0, x), w);
                }
                for (x, w) in oracle_ops::semi_join(l, r, key_l, key_r, false) {
                    bump(&mut out, &(1, x), w);
                }
                out
            }, &b)?;
        }
    }
}
