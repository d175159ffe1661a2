//! The SQL names of states. A SQL store keeps a state in the table
//! `<prefix>` followed by [`table_ident`] of its path; the function lives
//! here, below the stores, so that finalizing a graph refuses two states
//! whose tables would share a name, on every store alike (Memory, which has
//! no tables, included).

use crate::codec::identity_of;

/// The longest identifier both Postgres (63 bytes) and SQLite accept.
pub const MAX_IDENT: usize = 63;

/// The longest table prefix a SQL store accepts.
pub const MAX_TABLE_PREFIX: usize = 20;

/// The longest table name, prefix included: Postgres names a table's
/// primary key index `<table>_pkey`, which must fit in an identifier too.
const MAX_TABLE: usize = MAX_IDENT - "_pkey".len();

/// A name made of `[a-z0-9_]` only (so it never needs quoting and can never
/// inject SQL), from any text, at most `max` bytes: other characters become
/// `_`, and a short hash of the original is appended when anything was
/// replaced or cut, so that different names stay different.
///
/// It never starts with a digit (a name that would gets an `x` in front),
/// so names made by `<prefix>` and then a digit are free for a store's own
/// use.
///
/// ```
/// assert_eq!(stepping_graph::sql_ident("daily_usage", 63), "daily_usage");
/// let made = stepping_graph::sql_ident("1st \"quoted\" name", 63);
/// assert!(made.starts_with("x1st_quoted_name_"));
/// ```
pub fn sql_ident(raw: &str, max: usize) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut lossy = false;
    for c in raw.chars() {
        let c2 = c.to_ascii_lowercase();
        if c2.is_ascii_lowercase() || c2.is_ascii_digit() || c2 == '_' {
            lossy |= c2 != c;
            out.push(c2);
        } else {
            lossy = true;
            if !out.ends_with('_') {
                out.push('_');
            }
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'x');
        lossy = true;
    }
    if lossy || out.len() > max {
        let hash = format!("{:08x}", identity_of(raw.as_bytes()) as u64 & 0xffff_ffff);
        out.truncate(max.saturating_sub(hash.len() + 1));
        while out.ends_with('_') {
            out.pop();
        }
        out.push('_');
        out.push_str(&hash);
    }
    out
}

/// The table name of the state at `path` after a prefix of `prefix_len`
/// bytes: [`sql_ident`] of the path, cut to fit with the prefix.
pub fn table_ident(path: &str, prefix_len: usize) -> String {
    sql_ident(path, MAX_TABLE.saturating_sub(prefix_len))
}

/// The name of the SQL view of a cache whose table is `table` (prefix
/// included): `<table>_view`, e.g. `st_daily_cache_view`. A table name
/// leaves room for the suffix (it is at most 58 bytes), and finalizing a
/// graph refuses a state whose table would take a cache's view's name.
pub fn view_ident(table: &str) -> String {
    format!("{table}_view")
}

/// The names a SQL store gives the indexes of the table `table` (prefix
/// included) besides those of its key indexes: its primary key's
/// (`<table>_pkey`, Postgres), a nested state's index of steps
/// (`<table>__step`) and a Z-set's index of negative weights
/// ([`negative_index_ident`]). Tables and indexes share one namespace, so
/// finalizing a graph refuses a state whose table would take one of them.
pub fn index_idents(table: &str, kind: crate::StateKind) -> Vec<String> {
    let mut out = vec![format!("{table}_pkey")];
    if kind == crate::StateKind::Nested {
        out.push(format!("{table}__step"));
    }
    if kind != crate::StateKind::Keyed {
        out.push(negative_index_ident(table));
    }
    out
}

/// The name of the index of a Z-set table's rows with a negative weight:
/// `<table>__neg`.
pub fn negative_index_ident(table: &str) -> String {
    format!("{table}__neg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_safe_and_distinct() {
        assert_eq!(sql_ident("users", 63), "users");
        assert_eq!(sql_ident("daily_usage", 63), "daily_usage");
        let a = sql_ident("users.join(meters).map", 63);
        let b = sql_ident("users.join(meters)/map", 63);
        assert!(a.starts_with("users_join_meters_map_"), "{a}");
        assert_ne!(a, b);
        let evil = sql_ident("x\"; DROP TABLE users; --", 63);
        assert!(
            evil.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{evil}"
        );
        let long = sql_ident(&"a".repeat(500), 63);
        assert!(long.len() <= 63);
        assert_ne!(long, sql_ident(&"a".repeat(501), 63));
        assert!(sql_ident("Ünïcödé", 63).is_ascii());
        assert_ne!(sql_ident("Users", 63), sql_ident("users", 63));
        assert!(sql_ident("1st", 63).starts_with('x'));
    }

    /// Paths that try to look like something else: digits first, `_`
    /// first, nothing at all, digits that are not ASCII, and every one- and
    /// two-character path over an alphabet of such characters.
    fn hostile_paths() -> Vec<String> {
        let mut paths: Vec<String> = [
            "",
            "0",
            "7tables",
            "0_tables",
            "_tables",
            "_0",
            "__",
            "/",
            "1/2",
            " 1",
            "١٢",
            "１",
            "\u{0}",
            "'; DROP TABLE x; --",
            "tables",
            "last_update",
            "failed_batches",
            "time",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        paths.push("1".repeat(300));
        paths.push(format!("{}1", "_".repeat(80)));
        let alphabet = ['0', '9', '_', 'a', 'Z', '/', ' ', '.', 'é', '٣'];
        for a in alphabet {
            paths.push(a.to_string());
            for b in alphabet {
                paths.push(format!("{a}{b}"));
            }
        }
        paths
    }

    /// The guarantee the stores' own names rest on: whatever the path and
    /// the prefix's length, a table name is `[a-z0-9_]`, fits, and does not
    /// start with a digit.
    #[test]
    fn table_names_never_start_with_a_digit() {
        for path in hostile_paths() {
            for prefix_len in 0..=MAX_TABLE_PREFIX {
                let table = table_ident(&path, prefix_len);
                assert!(
                    !table.starts_with(|c: char| c.is_ascii_digit()),
                    "{path:?} after {prefix_len}: {table}"
                );
                assert!(
                    table
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{path:?}: {table}"
                );
                assert!(prefix_len + table.len() <= MAX_TABLE, "{path:?}: {table}");
            }
        }
    }

    /// Why finalization checks for collisions: `Users` is cleaned into
    /// `users_` and a hash, which is also a name a user may write.
    #[test]
    fn a_clean_name_can_equal_a_cleaned_one() {
        assert_eq!(table_ident("Users", 3), "users_10aa8ba6");
        assert_eq!(table_ident("users_10aa8ba6", 3), "users_10aa8ba6");
    }
}
