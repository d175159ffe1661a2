//! Reads and rows encoded as plain data, and undo entries.

use std::any::Any;

use super::TableSchema;
use graph::{EncodedRow, Read, StateKind, StateSpec, StoreError};
use zset::KeyValue;

/// A read, encoded: key values instead of typed keys.
#[derive(Clone, Debug)]
pub(crate) enum SqlRead {
    All,
    ByIndex {
        index: usize,
        keys: Vec<Vec<KeyValue>>,
    },
    /// Rows by identity, with every index's key values of each (as
    /// [`EncodedRow::keys`]), for a table clustered on its first index.
    ByIdentity {
        ids: Vec<(i64, Vec<KeyValue>)>,
    },
    First {
        index: usize,
        prefixes: Option<Vec<Vec<KeyValue>>>,
        limit: usize,
    },
}

impl SqlRead {
    /// Encodes `read` with `spec`'s codec. Keys that no store can hold
    /// (see [`graph::key_problem`]) are left out: no stored row has one, and
    /// a database might refuse to compare with it (Postgres text and NUL).
    pub(crate) fn of(spec: &StateSpec, read: &Read<'_>) -> SqlRead {
        let codec = spec.codec();
        match *read {
            Read::All => SqlRead::All,
            Read::ByIndex { index, keys } => SqlRead::ByIndex {
                index,
                keys: storable(spec, index, dedup(codec.key_values(index, keys))),
            },
            Read::ByValues { values } => {
                let mut ids = codec.locate(values);
                ids.sort_unstable_by_key(|(id, _)| *id);
                ids.dedup_by_key(|(id, _)| *id);
                if spec.indexes().iter().any(graph::index_needs_check) {
                    ids.retain(|(_, keys)| {
                        let mut rest = &keys[..];
                        spec.indexes().iter().all(|ix| {
                            let (key, after) = rest.split_at(ix.columns.len().min(rest.len()));
                            rest = after;
                            graph::key_problem(ix, key).is_none()
                        })
                    });
                }
                SqlRead::ByIdentity { ids }
            }
            Read::FirstByIndex {
                index,
                prefixes,
                limit,
            } => SqlRead::First {
                index,
                prefixes: prefixes
                    .map(|p| storable(spec, index, dedup(codec.prefix_values(index, p)))),
                limit,
            },
        }
    }
}

/// `keys` (or prefixes) of `spec`'s index `index` without those no store
/// can hold.
fn storable(spec: &StateSpec, index: usize, mut keys: Vec<Vec<KeyValue>>) -> Vec<Vec<KeyValue>> {
    if let Some(ix) = spec
        .indexes()
        .get(index)
        .filter(|ix| graph::index_needs_check(ix))
    {
        keys.retain(|k| graph::key_problem(ix, k).is_none());
    }
    keys
}

fn dedup(mut keys: Vec<Vec<KeyValue>>) -> Vec<Vec<KeyValue>> {
    keys.sort();
    keys.dedup();
    keys
}

/// A row as read from a table; `D` holds its encoded value (a copy, or the
/// driver's own row when the bytes can be borrowed from it).
#[derive(Clone, Debug)]
pub(crate) struct SqlRow<D = Vec<u8>> {
    pub(crate) identity: i64,
    pub(crate) data: D,
    pub(crate) weight: i64,
    pub(crate) step: u32,
}

/// Decodes `rows` of `schema`'s table into `sink`, naming the table and
/// row of anything that does not decode.
pub(crate) fn decode_rows<D: AsRef<[u8]>>(
    spec: &StateSpec,
    schema: &TableSchema,
    rows: Vec<SqlRow<D>>,
    sink: &mut dyn Any,
) -> Result<(), StoreError> {
    let codec = spec.codec();
    for row in rows {
        codec
            .decode(row.data.as_ref(), row.weight, row.step, sink)
            .map_err(|detail| StoreError::Corrupt {
                table: schema.name.clone(),
                identity: row.identity.to_string(),
                detail,
            })?;
    }
    Ok(())
}

/// The rows of a delta, encoded and checked: no two rows with the same
/// primary key (two different values whose identities collide are an
/// error, never a silent merge).
pub(crate) fn encode_delta(
    spec: &StateSpec,
    schema: &TableSchema,
    delta: &dyn Any,
) -> Result<Vec<EncodedRow>, StoreError> {
    let mut rows = Vec::new();
    spec.codec()
        .encode_delta(delta, &mut rows)
        .map_err(|e| match e {
            StoreError::Unrepresentable { detail, .. } => StoreError::Unrepresentable {
                table: schema.name.clone(),
                detail,
            },
            other => other,
        })?;
    rows.sort_unstable_by_key(|r| (r.identity, r.step));
    for pair in rows.windows(2) {
        if (pair[0].identity, pair[0].step) == (pair[1].identity, pair[1].step) {
            return Err(StoreError::IdentityCollision {
                table: schema.name.clone(),
                identity: pair[0].identity,
            });
        }
    }
    Ok(rows)
}

/// What undoes one pipelined table write: rows that, written with the same
/// write path (`write_rows`), put the table back as it was. Z-set and
/// nested states add weights, so the delta negated undoes them; a keyed
/// write replaces a key's row, so its undo restores the row read before
/// (`old`, by identity), or deletes the key if it had none.
pub(crate) fn undo_of(
    schema: &TableSchema,
    rows: &[EncodedRow],
    old: &std::collections::HashMap<i64, Vec<u8>>,
) -> Result<Vec<EncodedRow>, StoreError> {
    rows.iter()
        .map(|r| {
            let (data, weight) = match schema.kind {
                StateKind::Keyed => match old.get(&r.identity) {
                    Some(data) => (data.clone(), 1),
                    None => (Vec::new(), 0),
                },
                StateKind::ZSet | StateKind::Nested => {
                    let weight =
                        r.weight
                            .checked_neg()
                            .ok_or_else(|| StoreError::WeightOverflow {
                                table: schema.name.clone(),
                                identity: r.identity.to_string(),
                            })?;
                    (r.data.clone(), weight)
                }
            };
            Ok(EncodedRow {
                identity: r.identity,
                data,
                keys: r.keys.clone(),
                weight,
                step: r.step,
                columns: r.columns.clone(),
            })
        })
        .collect()
}

/// An undo entry's rows as bytes.
pub(crate) fn encode_undo(rows: &[EncodedRow]) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(rows).map_err(|e| StoreError::backend("encoding an undo entry", e))
}

/// The rows of an undo entry of `table` at time `t`.
pub(crate) fn decode_undo(
    table: &str,
    t: i64,
    bytes: &[u8],
) -> Result<Vec<EncodedRow>, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        table: table.to_owned(),
        identity: format!("the undo entry of time {t}"),
        detail: format!("not an undo entry: {e}"),
    })
}

/// Why the database refused (or left unchanged) the write of `row` over
/// the stored row of the same primary key, holding `data` and weight `c`:
/// bytes that are no row are [`StoreError::Corrupt`], a well-formed
/// different value (a 64-bit collision) is [`StoreError::IdentityCollision`]
/// and a sum out of `i64` is [`StoreError::WeightOverflow`]. `None` when
/// the stored row explains nothing.
pub(crate) fn refused_write(
    spec: &StateSpec,
    schema: &TableSchema,
    row: &EncodedRow,
    data: &[u8],
    c: i64,
) -> Option<StoreError> {
    let keyed = schema.kind == StateKind::Keyed;
    if keyed && row.weight == 0 {
        return None;
    }
    if let Err(detail) = spec.codec().locate_data(data) {
        return Some(StoreError::Corrupt {
            table: schema.name.clone(),
            identity: row.identity.to_string(),
            detail: format!("{detail} (found when writing to the row)"),
        });
    }
    // A keyed row reaches here only when its key columns differ (else the
    // upsert replaces it), a Z-set row when its data does.
    if keyed || data != row.data.as_slice() {
        return Some(StoreError::IdentityCollision {
            table: schema.name.clone(),
            identity: row.identity,
        });
    }
    c.checked_add(row.weight)
        .is_none()
        .then(|| StoreError::WeightOverflow {
            table: schema.name.clone(),
            identity: row.identity.to_string(),
        })
}
