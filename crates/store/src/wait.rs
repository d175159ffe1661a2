//! Waiting for a frontier without burning CPU or hammering the database.

use std::time::Duration;

/// Exponential backoff: 1 ms, 2 ms, 4 ms, ... up to 100 ms between polls.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_millis(100);

    pub(crate) fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The next interval, but no longer than `left`.
    pub(crate) fn next(&mut self, left: Duration) -> Duration {
        let pause = self.next.min(left);
        self.next = (self.next * 2).min(Self::MAX);
        pause
    }

    /// Sleeps for the next interval, but no longer than `left`.
    pub(crate) fn sleep(&mut self, left: Duration) {
        std::thread::sleep(self.next(left));
    }
}
