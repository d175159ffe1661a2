//! The meter-reads workload (DESIGN §7, from the original's docs): users own
//! meters, meters produce half-hourly reads, and the query keeps each
//! user's daily usage per meter, with a cache of it indexed by date.
//!
//! ```text
//! users ⋈ meters (user_id) → UserMeter ⋈ reads (meter_id) → UserMeterRead
//!   → group by (user_id, meter_id, date), sum value → DailyUsage → cache by date
//! ```
//!
//! [`Workload`] generates deterministic data, reproducible anywhere, and the
//! expected daily sums computed directly from it.

use std::collections::{BTreeMap, HashSet};

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use graph::{Cache, Feed, Graph, GraphError, Input, Output};
use operators::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A user.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub name: String,
}

/// A meter, owned by a user.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Meter {
    /// The meter's id.
    pub meter_id: Uuid,
    /// Its owner.
    pub user_id: i64,
}

/// A half-hourly meter read (the original's `HalfHourlyMeterRead`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct MeterRead {
    /// The meter.
    pub meter_id: Uuid,
    /// When.
    pub timestamp: NaiveDateTime,
    /// How much.
    pub value: F64,
}

/// A user joined with one of their meters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct UserMeter {
    /// The user.
    pub user_id: i64,
    /// The user's name.
    pub name: String,
    /// The meter.
    pub meter_id: Uuid,
}

/// A read with its user and its date.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct UserMeterRead {
    /// The user.
    pub user_id: i64,
    /// The user's name.
    pub name: String,
    /// The meter.
    pub meter_id: Uuid,
    /// When.
    pub timestamp: NaiveDateTime,
    /// How much.
    pub value: F64,
    /// The read's date.
    pub date: NaiveDate,
}

/// One user's usage on one meter on one day.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct DailyUsage {
    /// The user.
    pub user_id: i64,
    /// The meter.
    pub meter_id: Uuid,
    /// The day.
    pub date: NaiveDate,
    /// The day's total.
    pub value: F64,
}

/// One user's usage over all meters in one month: the cache the query's
/// next version adds ([`build_with_monthly`]), the migration the bench and
/// the README show.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct MonthlyUsage {
    /// The user.
    pub user_id: i64,
    /// The month's first day.
    pub month: NaiveDate,
    /// The month's total.
    pub value: F64,
}

/// The handles of the built query.
#[derive(Debug, Clone)]
pub struct MeterReads {
    /// Users in.
    pub users: Input<User>,
    /// Meters in.
    pub meters: Input<Meter>,
    /// Reads in.
    pub reads: Input<MeterRead>,
    /// The change of daily usage, each iteration.
    pub daily: Output<ZSet<DailyUsage>>,
    /// Daily usage, stored, indexed by date.
    pub cache: Cache<DailyUsage>,
}

/// The cache's index: by date.
pub fn by_date() -> Index<DailyUsage, NaiveDate> {
    Index::new("date", |d: &DailyUsage| d.date)
}

pub(crate) fn make_user_meter(user: &User, meter: &Meter) -> UserMeter {
    UserMeter {
        user_id: user.user_id,
        name: user.name.clone(),
        meter_id: meter.meter_id,
    }
}

pub(crate) fn with_date(meter: &UserMeter, read: &MeterRead) -> UserMeterRead {
    UserMeterRead {
        user_id: meter.user_id,
        name: meter.name.clone(),
        meter_id: meter.meter_id,
        timestamp: read.timestamp,
        value: read.value,
        date: read.timestamp.date(),
    }
}

fn to_daily(p: &Pair<F64, (i64, Uuid, NaiveDate)>) -> DailyUsage {
    let (user_id, meter_id, date) = p.right;
    DailyUsage {
        user_id,
        meter_id,
        date,
        value: p.left,
    }
}

/// Builds the meter-reads query.
///
/// # Errors
/// None in practice (the query is fixed).
pub fn build() -> Result<(Graph, MeterReads), GraphError> {
    let (graph, (q, _, _)) = build_query(false, false, false)?;
    Ok((graph, q))
}

/// [`build`]'s query plus a feed `daily_changes` of the daily usage's
/// change (table `<prefix>feed_daily_changes`), for services that follow
/// it (the web example, the feed bench and tests).
///
/// # Errors
/// None in practice (the query is fixed).
pub fn build_with_feed() -> Result<(Graph, MeterReads, Feed<DailyUsage>), GraphError> {
    let (graph, (q, _, feed)) = build_query(false, true, false)?;
    let feed = feed.ok_or_else(|| GraphError::TypeMismatch {
        path: graph::Path::new("feed_daily_changes"),
        expected: "a feed",
        found: "none",
    })?;
    Ok((graph, q, feed))
}

/// [`build`]'s query with every input `.transient()`: the store keeps no
/// input for its own sake (the joins still keep every row of theirs). The
/// bench compares its ingest with [`build`]'s: what keeping the inputs costs.
///
/// # Errors
/// None in practice (the query is fixed).
pub fn build_transient() -> Result<(Graph, MeterReads), GraphError> {
    let (graph, (q, _, _)) = build_query(false, false, true)?;
    Ok((graph, q))
}

/// The query's next version: [`build`]'s, plus a cache `monthly_cache` of
/// each user's monthly totals (by user).
pub fn build_with_monthly() -> Result<(Graph, MeterReads, Cache<MonthlyUsage>), GraphError> {
    let (graph, (q, monthly, _)) = build_query(true, false, false)?;
    let monthly = monthly.ok_or_else(|| GraphError::TypeMismatch {
        path: graph::Path::new("monthly_cache"),
        expected: "a monthly cache",
        found: "none",
    })?;
    Ok((graph, q, monthly))
}

fn month_of(d: &DailyUsage) -> (i64, NaiveDate) {
    (d.user_id, d.date.with_day(1).unwrap_or(d.date))
}

#[allow(clippy::type_complexity)]
fn build_query(
    monthly: bool,
    feed: bool,
    transient: bool,
) -> Result<
    (
        Graph,
        (
            MeterReads,
            Option<Cache<MonthlyUsage>>,
            Option<Feed<DailyUsage>>,
        ),
    ),
    GraphError,
> {
    Graph::build(|q| {
        let (users, u) = q.input::<User>("users")?;
        let (meters, m) = q.input::<Meter>("meters")?;
        let (reads, r) = q.input::<MeterRead>("reads")?;
        let (u, m, r) = if transient {
            (u.transient(), m.transient(), r.transient())
        } else {
            (u, m, r)
        };
        let user_meters = u
            .join_map(
                m,
                &Index::new("user_id", |u: &User| u.user_id),
                &Index::new("user_id", |m: &Meter| m.user_id),
                make_user_meter,
            )
            .named("user_meters");
        let meter_reads = user_meters.join_map(
            r,
            &Index::new("meter_id", |u: &UserMeter| u.meter_id),
            &Index::new("meter_id", |r: &MeterRead| r.meter_id),
            with_date,
        );
        let day = Index::with_parts(
            "day",
            &["user_id", "meter_id", "date"],
            |r: &UserMeterRead| (r.user_id, r.meter_id, r.date),
        );
        let daily = meter_reads
            .group_reduce_flatten(&day, F64::new(0.0), |r| r.value)
            .map(to_daily)
            .named("daily_usage");
        let cache = q.cache("daily_cache", daily, &[&by_date()])?;
        let monthly = if monthly {
            let month = Index::with_parts("month", &["user_id", "month"], month_of);
            let totals = daily
                .group_reduce_flatten(&month, F64::new(0.0), |d| d.value)
                .map(|p: &Pair<F64, (i64, NaiveDate)>| MonthlyUsage {
                    user_id: p.right.0,
                    month: p.right.1,
                    value: p.left,
                });
            let by_user = Index::new("user_id", |m: &MonthlyUsage| m.user_id);
            Some(q.cache("monthly_cache", totals, &[&by_user])?)
        } else {
            None
        };
        let feed = if feed {
            Some(q.feed("daily_changes", daily)?)
        } else {
            None
        };
        let daily = q.output("daily", daily)?;
        Ok((
            MeterReads {
                users,
                meters,
                reads,
                daily,
                cache,
            },
            monthly,
            feed,
        ))
    })
}

/// The deterministic meter-reads data of DESIGN §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// How many users (and meters).
    pub users: u64,
    /// How many reads.
    pub reads: u64,
}

/// After how many reads the workload's meter, day, hour and value repeat
/// (for 1,000 users): the least common multiple of 1,000 meters (7919 is
/// coprime to 1,000), 31 days, 24 hours and 10,000 values.
pub const READ_CYCLE: u64 = 930_000;

impl Workload {
    /// User `i`: `user_id = i`, `name = "user-{i}"`.
    pub fn user(&self, i: u64) -> User {
        User {
            user_id: i as i64,
            name: format!("user-{i}"),
        }
    }

    /// Meter `i`: `meter_id = Uuid::from_u128(i + 1)`, owned by user `i`.
    pub fn meter(&self, i: u64) -> Meter {
        Meter {
            meter_id: Uuid::from_u128(u128::from(i) + 1),
            user_id: i as i64,
        }
    }

    /// All users.
    pub fn all_users(&self) -> Vec<User> {
        (0..self.users).map(|i| self.user(i)).collect()
    }

    /// All meters.
    pub fn all_meters(&self) -> Vec<Meter> {
        (0..self.users).map(|i| self.meter(i)).collect()
    }

    /// Read `j`: meter `(j · 7919) mod U`, on 2023-01-(1 + (j · 104729) mod 31)
    /// at hour `(j · 13) mod 24`, with value `((j · 2654435761) mod 10000) / 100`.
    /// Those repeat every [`READ_CYCLE`] reads; the `c`-th repetition is
    /// `c` seconds past the hour (minutes and seconds), so every read is a
    /// row of its own and the state keeps growing at any size (the first
    /// cycle is on the hour).
    pub fn read(&self, j: u64) -> MeterRead {
        let m = j * 7919 % self.users;
        let day = 1 + (j * 104_729 % 31) as u32;
        let hour = (j * 13 % 24) as u32;
        let cycle = (j / READ_CYCLE % 3600) as u32;
        let timestamp = NaiveDate::from_ymd_opt(2023, 1, day)
            .and_then(|d| d.and_hms_opt(hour, cycle / 60, cycle % 60))
            .expect("days 1..=31 of January, hours 0..24 and 3,600 seconds exist");
        MeterRead {
            meter_id: Uuid::from_u128(u128::from(m) + 1),
            timestamp,
            value: F64::new((j.wrapping_mul(2_654_435_761) % 10_000) as f64 / 100.0),
        }
    }

    /// Reads `range`, in order.
    pub fn reads(&self, range: std::ops::Range<u64>) -> Vec<MeterRead> {
        range.map(|j| self.read(j)).collect()
    }

    /// The first read from which on no read opens a new `(meter, day)` sum:
    /// every later read changes a sum that exists (and so rewrites its cache
    /// row) instead of creating one. Before it, the ingest writes about 3
    /// state rows per read into small tables; after it, 4 into tables of
    /// their final size (31 × U rows for the sums and the cache). 0 when
    /// there are no reads.
    pub fn first_settled_read(&self) -> u64 {
        let mut seen = HashSet::new();
        let mut settled = 0;
        for j in 0..self.reads {
            let r = self.read(j);
            if seen.insert((r.meter_id, r.timestamp.date())) {
                settled = j + 1;
            }
        }
        settled
    }

    /// The expected daily usage after all reads: `(user, meter, date) → sum`,
    /// computed directly from the data.
    pub fn expected_daily(&self) -> BTreeMap<(i64, Uuid, NaiveDate), f64> {
        self.expected_daily_upto(self.reads)
    }

    /// The expected daily usage after the first `n` reads (all of them when
    /// `n` is larger): `(user, meter, date) → sum`, computed directly from
    /// the data, sharing nothing with the engine. After batch `b` of size
    /// `B` has committed, the cache holds this for `n = (b + 1) · B`.
    pub fn expected_daily_upto(&self, n: u64) -> BTreeMap<(i64, Uuid, NaiveDate), f64> {
        let mut sums = BTreeMap::new();
        for j in 0..n.min(self.reads) {
            let r = self.read(j);
            let m = j * 7919 % self.users;
            *sums
                .entry((m as i64, r.meter_id, r.timestamp.date()))
                .or_insert(0.0) += r.value.get();
        }
        sums
    }

    /// Each user's monthly totals over all the reads, `(user, first day of
    /// the month) → sum`, from [`expected_daily`](Self::expected_daily):
    /// what the query's next version ([`build_with_monthly`]) caches.
    pub fn expected_monthly(&self) -> BTreeMap<(i64, NaiveDate), f64> {
        let mut out = BTreeMap::new();
        for ((user, _, date), sum) in self.expected_daily() {
            let month = date.with_day(1).unwrap_or(date);
            *out.entry((user, month)).or_insert(0.0) += sum;
        }
        out
    }

    /// Whether `cache` (the stored monthly totals) equals
    /// [`expected_monthly`](Self::expected_monthly), up to float rounding.
    ///
    /// # Errors
    /// A description of the first difference.
    pub fn check_monthly(&self, cache: &ZSet<MonthlyUsage>) -> Result<(), String> {
        let expected = self.expected_monthly();
        if cache.len() != expected.len() {
            return Err(format!(
                "{} monthly rows, expected {}",
                cache.len(),
                expected.len()
            ));
        }
        for (m, w) in cache.iter() {
            let Some(sum) = expected.get(&(m.user_id, m.month)) else {
                return Err(format!("unexpected row {m:?}"));
            };
            if w != 1 || (sum - m.value.get()).abs() > 1e-6 * sum.abs().max(1.0) {
                return Err(format!("{m:?} (weight {w}): expected value {sum}"));
            }
        }
        Ok(())
    }

    /// Whether `cache` (the stored daily usage) equals [`expected_daily`](Self::expected_daily),
    /// up to float rounding; `Err` says what differs.
    ///
    /// # Errors
    /// A description of the first difference.
    pub fn check(&self, cache: &ZSet<DailyUsage>) -> Result<(), String> {
        self.check_upto(cache, self.reads)
    }

    /// Whether `cache` equals [`expected_daily_upto(n)`](Self::expected_daily_upto):
    /// the daily usage of exactly the first `n` reads, up to float rounding;
    /// `Err` says what differs.
    ///
    /// # Errors
    /// A description of the first difference.
    pub fn check_upto(&self, cache: &ZSet<DailyUsage>, n: u64) -> Result<(), String> {
        let expected = self.expected_daily_upto(n);
        if cache.len() != expected.len() {
            return Err(format!(
                "{} daily rows, expected {} (the first {} reads)",
                cache.len(),
                expected.len(),
                n.min(self.reads)
            ));
        }
        for (d, w) in cache.iter() {
            if w != 1 {
                return Err(format!("{d:?} has weight {w}"));
            }
            let Some(sum) = expected.get(&(d.user_id, d.meter_id, d.date)) else {
                return Err(format!("unexpected row {d:?}"));
            };
            if (sum - d.value.get()).abs() > 1e-6 * sum.abs().max(1.0) {
                return Err(format!("{d:?}: expected value {sum}"));
            }
        }
        Ok(())
    }
}
