//! Weight arithmetic that neither panics nor wraps.
//!
//! Weights are `i64`. A sum, product or negation that leaves that range
//! (only reachable with weights near ±9.2·10¹⁸, which only a caller or a
//! damaged store can supply) saturates at the bound and is *recorded* on
//! this thread; the query engine checks the record after every operator
//! and fails the iteration with a typed error (rolling it back), so no
//! wrong weight is ever stored. Code outside an iteration can ask with
//! [`take_overflow`].

use std::cell::Cell;

use crate::Weight;

thread_local! {
    static OVERFLOWED: Cell<bool> = const { Cell::new(false) };
}

#[cold]
fn overflowed(saturated: Weight) -> Weight {
    OVERFLOWED.with(|o| o.set(true));
    saturated
}

fn bound(positive: bool) -> Weight {
    if positive { Weight::MAX } else { Weight::MIN }
}

/// `a + b`; on overflow, the bound it passed, recorded.
#[inline]
pub fn add(a: Weight, b: Weight) -> Weight {
    match a.checked_add(b) {
        Some(s) => s,
        None => overflowed(bound(b > 0)),
    }
}

/// `a · b`; on overflow, the bound it passed, recorded.
#[inline]
pub fn mul(a: Weight, b: Weight) -> Weight {
    match a.checked_mul(b) {
        Some(p) => p,
        None => overflowed(bound((a > 0) == (b > 0))),
    }
}

/// `-a`; for `i64::MIN`, `i64::MAX`, recorded.
#[inline]
pub fn neg(a: Weight) -> Weight {
    match a.checked_neg() {
        Some(n) => n,
        None => overflowed(Weight::MAX),
    }
}

/// The sum of `weights` (see [`add`]).
pub fn sum(weights: impl IntoIterator<Item = Weight>) -> Weight {
    weights.into_iter().fold(0, add)
}

/// Whether weight arithmetic on this thread overflowed since the last call
/// (and clears the record).
///
/// ```
/// use stepping_zset::{weight, zset};
/// assert!(!weight::take_overflow());
/// let z = zset! { "x" => i64::MAX } + zset! { "x" => 1 };
/// assert!(weight::take_overflow());
/// assert_eq!(z.get(&"x"), i64::MAX); // saturated, and reported above
/// assert!(!weight::take_overflow());
/// ```
pub fn take_overflow() -> bool {
    OVERFLOWED.with(|o| o.replace(false))
}
