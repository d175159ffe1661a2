//! Waiting for a frontier without burning CPU or hammering the database:
//! exponential backoff between polls, cut short by a wake-up when another
//! worker of this process commits (a condition variable per database).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Exponential backoff between `min` and `max` (1 ms to 100 ms by default).
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            max: max.max(min),
        }
    }

    /// The next interval, but no longer than `left`.
    pub(crate) fn next(&mut self, left: Duration) -> Duration {
        let pause = self.next.min(left);
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

/// Wakes the waiters of one database when a worker of this process commits.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Notifier {
    /// The notifier of the database called `key` (one per process).
    pub(crate) fn for_key(key: &str) -> Arc<Notifier> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Notifier>>>> = OnceLock::new();
        let mut all = ALL.get_or_init(Default::default).lock();
        Arc::clone(all.entry(key.to_owned()).or_default())
    }

    /// How many commits have been announced.
    pub(crate) fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    /// Announces a commit.
    pub(crate) fn notify(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }

    /// Sleeps until a commit after `seen` is announced, or `timeout`.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        let mut generation = self.generation.lock();
        if *generation == seen {
            let _ = self.changed.wait_for(&mut generation, timeout);
        }
    }
}
