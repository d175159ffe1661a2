//! Event times: key parts that are points on a time line, counted in whole
//! units from an origin, so that windows and retention bounds can be
//! computed on them whatever their type.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta};

use crate::{IndexKey, KeyPart};

/// A key part that is a point in time: a row's *event time* for windows
/// and retention. Windows and bounds are computed on [`units`](Self::units),
/// and their widths are given in the same units.
///
/// | type | one unit | origin |
/// |---|---|---|
/// | `i64`, `i32` | 1 | 0 |
/// | [`NaiveDate`] | a day | 1970-01-01 |
/// | [`NaiveDateTime`] | a microsecond | 1970-01-01 00:00 |
///
/// ```
/// use chrono::NaiveDate;
/// use stepping_zset::EventTime;
/// let d = NaiveDate::from_ymd_opt(1970, 1, 11).unwrap();
/// assert_eq!(d.units(), 10);
/// assert_eq!(NaiveDate::from_units(10), Some(d));
/// ```
pub trait EventTime: KeyPart + IndexKey + Copy {
    /// How many units after the origin this time is (negative before it).
    fn units(&self) -> i64;
    /// The time `units` units after the origin; `None` when the type cannot
    /// hold it.
    fn from_units(units: i64) -> Option<Self>;
}

impl EventTime for i64 {
    fn units(&self) -> i64 {
        *self
    }
    fn from_units(units: i64) -> Option<Self> {
        Some(units)
    }
}

impl EventTime for i32 {
    fn units(&self) -> i64 {
        i64::from(*self)
    }
    fn from_units(units: i64) -> Option<Self> {
        i32::try_from(units).ok()
    }
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 exists");

impl EventTime for NaiveDate {
    fn units(&self) -> i64 {
        self.signed_duration_since(EPOCH).num_days()
    }
    fn from_units(units: i64) -> Option<Self> {
        EPOCH.checked_add_signed(TimeDelta::try_days(units)?)
    }
}

impl EventTime for NaiveDateTime {
    fn units(&self) -> i64 {
        self.and_utc().timestamp_micros()
    }
    fn from_units(units: i64) -> Option<Self> {
        DateTime::from_timestamp_micros(units).map(|t| t.naive_utc())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip_and_keep_order() {
        let t = NaiveDate::from_ymd_opt(2023, 1, 2)
            .and_then(|d| d.and_hms_micro_opt(3, 4, 5, 6))
            .unwrap();
        assert_eq!(NaiveDateTime::from_units(t.units()), Some(t));
        let before = NaiveDate::from_ymd_opt(1969, 12, 31).unwrap();
        assert_eq!(before.units(), -1);
        assert_eq!(NaiveDate::from_units(before.units()), Some(before));
        assert_eq!(i32::from_units(1 << 40), None);
        assert_eq!(NaiveDate::from_units(i64::MAX), None);
    }
}
