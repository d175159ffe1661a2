//! A float with a total order, for rows with float fields.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Mul, Neg, Sub};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An `f64` that can be a Z-set value or an index key.
///
/// It is *canonical*: `-0.0` is stored as `0.0` and every NaN as one quiet
/// NaN, so that equal values have equal bytes (a stored row's identity is a
/// hash of its bytes) and the same order in every store. The order is the
/// numeric one with NaN greatest, which is also Postgres' order for
/// `double precision`; the SQLite store keeps that order too.
///
/// It prints like Python's `repr`: `6.0`, not `6`.
///
/// ```
/// use stepping_zset::F64;
/// assert_eq!(F64::new(-0.0), F64::new(0.0));
/// assert!(F64::new(f64::NAN) > F64::new(f64::INFINITY));
/// assert_eq!(F64::new(6.0).to_string(), "6.0");
/// assert_eq!((F64::new(1.5) * 2).get(), 3.0);
/// ```
#[derive(Clone, Copy, Default)]
pub struct F64(f64);

impl F64 {
    /// The canonical form of `value`.
    pub fn new(value: f64) -> Self {
        if value.is_nan() {
            F64(f64::NAN)
        } else if value == 0.0 {
            F64(0.0)
        } else {
            F64(value)
        }
    }

    /// The plain `f64`.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl From<f64> for F64 {
    fn from(value: f64) -> Self {
        F64::new(value)
    }
}

impl From<F64> for f64 {
    fn from(value: F64) -> Self {
        value.0
    }
}

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for F64 {}

impl PartialOrd for F64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for F64 {
    fn cmp(&self, other: &Self) -> Ordering {
        // Canonical values make `total_cmp` agree with numeric order, and the
        // canonical NaN is positive, so it sorts after +inf.
        self.0.total_cmp(&other.0)
    }
}

impl Hash for F64 {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl Serialize for F64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        f64::deserialize(deserializer).map(F64::new)
    }
}

impl fmt::Debug for F64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for F64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&python_repr(self.0))
    }
}

/// Formats a float the way Python's `repr` does: shortest round-trip digits,
/// always with a decimal point or an exponent (`6.0`, `0.1`, `1e+16`, `nan`).
pub(crate) fn python_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let abs = value.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust prints `1e16`; Python prints `1e+16`.
        let s = format!("{value:e}");
        return match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp:0>2}"),
            Some((mantissa, exp)) => format!("{mantissa}e-{:0>2}", &exp[1..]),
            None => s,
        };
    }
    format!("{value:?}")
}

impl Add for F64 {
    type Output = F64;
    fn add(self, rhs: F64) -> F64 {
        F64::new(self.0 + rhs.0)
    }
}

impl AddAssign for F64 {
    fn add_assign(&mut self, rhs: F64) {
        *self = *self + rhs;
    }
}

impl Sub for F64 {
    type Output = F64;
    fn sub(self, rhs: F64) -> F64 {
        F64::new(self.0 - rhs.0)
    }
}

impl Neg for F64 {
    type Output = F64;
    fn neg(self) -> F64 {
        F64::new(-self.0)
    }
}

/// Scaling by a weight, so an `F64` can be a `reduce` aggregate.
impl Mul<i64> for F64 {
    type Output = F64;
    fn mul(self, rhs: i64) -> F64 {
        F64::new(self.0 * rhs as f64)
    }
}

impl Mul for F64 {
    type Output = F64;
    fn mul(self, rhs: F64) -> F64 {
        F64::new(self.0 * rhs.0)
    }
}

impl Sum for F64 {
    fn sum<I: Iterator<Item = F64>>(iter: I) -> F64 {
        iter.fold(F64(0.0), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_compare_and_hash_equal() {
        use std::collections::hash_map::DefaultHasher;
        let h = |x: F64| {
            let mut s = DefaultHasher::new();
            x.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(F64::new(-0.0)), h(F64::new(0.0)));
        let other_nan = f64::from_bits(f64::NAN.to_bits() | 1);
        assert_eq!(F64::new(other_nan), F64::new(f64::NAN));
        assert_eq!(h(F64::new(-f64::NAN)), h(F64::new(f64::NAN)));
    }

    #[test]
    fn order_is_numeric_with_nan_last() {
        let mut v: Vec<F64> = [
            3.0,
            f64::NAN,
            -1.0,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::INFINITY,
        ]
        .into_iter()
        .map(F64::new)
        .collect();
        v.sort();
        let got: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        assert_eq!(got, ["-inf", "-1.0", "0.0", "0.0", "3.0", "inf", "nan"]);
    }

    #[test]
    fn prints_like_python_repr() {
        for (x, want) in [
            (6.0, "6.0"),
            (18.5, "18.5"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (-2.0, "-2.0"),
            (123456.0, "123456.0"),
        ] {
            assert_eq!(F64::new(x).to_string(), want, "{x}");
        }
    }
}
