//! The key values every store can hold, checked in one place so that every
//! store accepts and refuses the same values.
//!
//! An index key's parts become typed SQL columns, and the SQL stores cannot
//! hold everything Rust can: Postgres `TEXT` cannot hold a NUL character,
//! a Postgres B-tree entry (an index's key columns plus the row's identity)
//! is at most about 2.7 KB, and SQLite keeps dates and timestamps as
//! ISO-8601 text, which orders correctly only for years 0 to 9999. The
//! engine checks every state change against these limits before a store
//! sees it ([`StoreError::Unrepresentable`](crate::StoreError::Unrepresentable)
//! on every store, memory included), and SQL stores skip reads by a key
//! that cannot be stored, since no stored row can have it. Only indexes
//! with text, bytes, date or timestamp parts are checked: others cost
//! nothing.

use zset::{ColumnType, IndexSpec, KeyScan, KeyValue};

/// The most bytes the text and bytes parts of one index key may hold
/// together, on every store: Postgres indexes a key with its row's
/// identity in at most about 2.7 KB, and this leaves room for up to eight
/// other parts.
pub const MAX_KEY_BYTES: usize = 2048;

/// The years a date or timestamp key part may have, on every store (SQLite
/// orders dates as text, which holds only for four-digit years).
pub const KEY_YEARS: std::ops::RangeInclusive<i32> = 0..=9999;

/// Whether keys of `index` can fail [`key_problem`] (it has a text, bytes,
/// date or timestamp part).
pub fn index_needs_check(index: &IndexSpec) -> bool {
    index.columns.iter().any(|c| {
        matches!(
            c.ty,
            ColumnType::Text | ColumnType::Bytes | ColumnType::Date | ColumnType::Timestamp
        )
    })
}

/// Whether every store can hold a key whose parts gave `scan`: exactly when
/// [`key_problem`] finds nothing in its values, without building them.
pub fn key_fits(scan: &KeyScan) -> bool {
    !scan.nul
        && scan.bytes <= MAX_KEY_BYTES
        && scan
            .years
            .is_none_or(|(lo, hi)| KEY_YEARS.contains(&lo) && KEY_YEARS.contains(&hi))
}

/// Why the key `values` of `index` (all its columns, or a leading prefix of
/// them) cannot be stored, or `None` when every store can hold it.
pub fn key_problem(index: &IndexSpec, values: &[KeyValue]) -> Option<String> {
    let part = |i: usize| index.parts.get(i).map_or("?", |p| &**p);
    let mut bytes = 0usize;
    for (i, v) in values.iter().enumerate() {
        match v {
            KeyValue::Text(t) => {
                if t.contains('\0') {
                    return Some(format!(
                        "key part `{}` of index `{}` is text holding a NUL character, which \
                         Postgres text cannot store (no store accepts it)",
                        part(i),
                        index.name
                    ));
                }
                bytes += t.len();
            }
            KeyValue::Bytes(b) => bytes += b.len(),
            v => {
                if let Some(year) = v.year().filter(|y| !KEY_YEARS.contains(y)) {
                    return Some(format!(
                        "key part `{}` of index `{}` is {v:?}, in year {year}, outside years \
                         0 to 9999 (no store accepts it)",
                        part(i),
                        index.name
                    ));
                }
            }
        }
    }
    (bytes > MAX_KEY_BYTES).then(|| {
        format!(
            "the text and bytes parts of a key of index `{}` hold {bytes} bytes, more than the \
             {MAX_KEY_BYTES} every store accepts (Postgres indexes at most about 2.7 KB per row)",
            index.name
        )
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zset::{KeyColumn, KeyValue};

    use super::*;

    fn spec(types: &[ColumnType]) -> IndexSpec {
        IndexSpec {
            name: Arc::from("ix"),
            parts: (0..types.len())
                .map(|i| Arc::from(format!("p{i}")))
                .collect(),
            columns: types
                .iter()
                .map(|&ty| KeyColumn {
                    ty,
                    descending: false,
                    nullable: false,
                })
                .collect(),
            key_type: "test",
        }
    }

    #[test]
    fn nul_and_long_keys_are_refused_and_others_pass() {
        let ix = spec(&[ColumnType::Text, ColumnType::Bytes]);
        assert!(index_needs_check(&ix));
        assert!(!index_needs_check(&spec(&[
            ColumnType::Int,
            ColumnType::Uuid
        ])));
        let ok = [
            KeyValue::Text("é".repeat(500)),
            KeyValue::Bytes(vec![0; 1000]),
        ];
        assert_eq!(key_problem(&ix, &ok), None);
        let nul = [KeyValue::Text("a\0b".into()), KeyValue::Bytes(vec![0])];
        assert!(key_problem(&ix, &nul).is_some_and(|p| p.contains("`p0`")));
        let long = [
            KeyValue::Text("x".repeat(MAX_KEY_BYTES)),
            KeyValue::Bytes(vec![1]),
        ];
        assert!(key_problem(&ix, &long).is_some_and(|p| p.contains("2049 bytes")));
        let exact = [
            KeyValue::Text("x".repeat(MAX_KEY_BYTES - 1)),
            KeyValue::Null,
        ];
        assert_eq!(key_problem(&ix, &exact), None);
    }

    /// `key_fits` of a typed key's scan agrees with `key_problem` of its
    /// values, for keys at each side of every limit.
    fn fits_as_values_say<K: zset::IndexKey>(keys: &[K]) -> usize {
        let mut columns = Vec::new();
        K::columns(&mut columns);
        let ix = spec(&columns.iter().map(|c| c.ty).collect::<Vec<_>>());
        let mut refused = 0;
        for key in keys {
            let mut scan = KeyScan::default();
            key.scan(&mut scan);
            let mut values = Vec::new();
            key.values(&mut values);
            let problem = key_problem(&ix, &values);
            assert_eq!(key_fits(&scan), problem.is_none(), "{key:?}: {problem:?}");
            refused += usize::from(problem.is_some());
        }
        refused
    }

    #[test]
    fn a_key_scan_fits_exactly_when_its_values_have_no_problem() {
        use chrono::{NaiveDate, NaiveDateTime};
        use zset::Desc;
        let day = |y| NaiveDate::from_ymd_opt(y, 1, 1).unwrap();
        let at = |y| -> NaiveDateTime { day(y).and_hms_opt(0, 0, 0).unwrap() };
        let texts: Vec<(String, Vec<u8>)> = vec![
            ("a".into(), vec![]),
            ("a\0".into(), vec![]),
            ("x".repeat(MAX_KEY_BYTES - 1), vec![0]),
            ("x".repeat(MAX_KEY_BYTES - 1), vec![0, 0]),
        ];
        assert_eq!(fits_as_values_say(&texts), 2);
        let times: Vec<(NaiveDate, Option<Desc<NaiveDateTime>>)> = vec![
            (day(0), None),
            (day(9999), Some(Desc(at(2024)))),
            (day(-1), None),
            (day(2024), Some(Desc(at(10_000)))),
        ];
        assert_eq!(fits_as_values_say(&times), 2);
        let plain: Vec<(i64, Option<String>)> = vec![(1, None), (2, Some("\0".into()))];
        assert_eq!(fits_as_values_say(&plain), 1);
    }
}
