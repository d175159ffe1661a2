//! The multi-worker scheduler.

use std::io::IsTerminal;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use graph::{Changes, Graph, GraphError, Outputs, StateStore, StoreError, Time};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{ParallelError, TimeSource};

/// Whether an ingest shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A progress bar on standard error when it is a terminal (default).
    #[default]
    Auto,
    /// Nothing.
    Hidden,
}

/// A batch that failed: rolled back, recorded in the store with its input,
/// its time marked done so that later batches proceeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The batch's position in the ingest.
    pub batch: usize,
    /// Its input time.
    pub input_time: i64,
    /// What went wrong.
    pub error: String,
    /// Tables that had already committed the batch (pipelined ingests only):
    /// the batch is partially applied there.
    pub committed: Vec<String>,
}

/// The result of an ingest.
#[derive(Debug)]
pub struct Report {
    /// Each batch's output changes, in batch (= time) order; `None` for a
    /// failed batch.
    pub outputs: Vec<Option<Outputs>>,
    /// Each batch's input time.
    pub times: Vec<i64>,
    /// How long each batch's iteration took (including waits).
    pub latencies: Vec<Duration>,
    /// The batches that failed.
    pub failures: Vec<Failure>,
    /// Rows ingested (over all batches, including failed ones).
    pub rows: usize,
    /// Wall time of the whole ingest.
    pub elapsed: Duration,
}

impl Report {
    /// The batches' profiles added up, when the ingest ran a
    /// [`Graph::profiled`] graph (`None` otherwise, or when no batch
    /// succeeded).
    pub fn profile(&self) -> Option<graph::Profile> {
        let profiles = self.outputs.iter().flatten().filter_map(Outputs::profile);
        // Every profile is of the ingest's one graph, so they add up.
        graph::Profile::sum(profiles).ok().flatten()
    }

    /// A one-line summary: batches, failures, rows per second.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "{} batches ({} failed), {} rows in {:.2} s: {:.0} rows/s",
            self.outputs.len(),
            self.failures.len(),
            self.rows,
            secs,
            self.rows as f64 / secs
        )
    }
}

/// A batched ingest on several workers.
///
/// ```
/// use operators::prelude::*;
/// use stepping_parallel::{Counter, Ingest, Progress};
/// let (graph, (input, out)) = Graph::build(|q| {
///     let (input, n) = q.input::<i64>("n")?;
///     Ok((input, q.output("total", n.reduce(0i64, |x| *x))?))
/// })?;
/// let store = store::Memory::new(&graph);
/// let batches: Vec<Changes> = (0..10).map(|i| Changes::new().insert(&input, [i])).collect();
/// let mut times = Counter::starting_at(1);
/// let report = Ingest::new(&graph).workers(2).progress(Progress::Hidden)
///     .run(|_worker| Ok(store.handle()), batches, &mut times)?;
/// assert!(report.failures.is_empty());
/// // The last batch saw the total of all ten.
/// let last = report.outputs[9].as_ref().unwrap().get(&out)?;
/// assert_eq!(last, &zset! { 36 => -1, 45 => 1 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ingest<'g> {
    graph: &'g Graph,
    workers: usize,
    pipelined: bool,
    progress: Progress,
}

struct Job {
    batch: usize,
    changes: Changes,
    time: Time,
}

enum Outcome {
    Done {
        batch: usize,
        outputs: Outputs,
        latency: Duration,
    },
    Failed {
        batch: usize,
        failure: Failure,
        latency: Duration,
    },
}

impl<'g> Ingest<'g> {
    /// An ingest into `graph`: one worker, atomic iterations, progress shown
    /// when standard error is a terminal.
    pub fn new(graph: &'g Graph) -> Self {
        Ingest {
            graph,
            workers: 1,
            pipelined: false,
            progress: Progress::Auto,
        }
    }

    /// How many worker threads (each with its own store), at least 1.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// With `true`, `flush_every_set = Some(true)`: each table commits as
    /// soon as it is set, so batches overlap; an iteration is then no longer
    /// atomic (a failure can leave it partially applied, which the
    /// [`Failure`] reports). Default `false`.
    pub fn pipelined(mut self, pipelined: bool) -> Self {
        self.pipelined = pipelined;
        self
    }

    /// Whether to show progress (default [`Progress::Auto`]).
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Ingests `batches` into `store` on the calling thread, each at the
    /// next time after the store's last ([`Counter::after`](crate::Counter::after)):
    /// the path for one batch or a few, with no time source to choose and
    /// no worker stores to open. A failed batch is recorded and reported
    /// as [`run`](Self::run) does; [`workers`](Self::workers) and
    /// [`progress`](Self::progress) do not apply, [`pipelined`](Self::pipelined) does.
    ///
    /// ```
    /// use operators::prelude::*;
    /// use stepping_parallel::Ingest;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, n) = q.input::<i64>("n")?;
    ///     Ok((input, q.output("total", n.reduce(0i64, |x| *x))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let report = Ingest::new(&graph).run_on(&mut store, [Changes::new().insert(&input, [1, 2])])?;
    /// assert_eq!(report.outputs[0].as_ref().unwrap().get(&out)?, &zset! { 3 => 1 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The store's next time cannot be read, or a failure cannot be
    /// recorded (then the ingest stops).
    pub fn run_on<S: StateStore + ?Sized>(
        &self,
        store: &mut S,
        batches: impl IntoIterator<Item = Changes>,
    ) -> Result<Report, ParallelError> {
        let start = Instant::now();
        let mut times = crate::Counter::after(store).map_err(ParallelError::Time)?;
        let mut report = Report {
            outputs: Vec::new(),
            times: Vec::new(),
            latencies: Vec::new(),
            failures: Vec::new(),
            rows: 0,
            elapsed: Duration::ZERO,
        };
        for (batch, changes) in batches.into_iter().enumerate() {
            let t = times.next_time_for(batch).map_err(ParallelError::Time)?;
            let time = Time::new(t, t - 1);
            let time = if self.pipelined {
                time.pipelined()
            } else {
                time
            };
            report.rows += changes.len();
            report.times.push(t);
            let job = Job {
                batch,
                changes,
                time,
            };
            match run_job(self.graph, store, job)? {
                Outcome::Done {
                    outputs, latency, ..
                } => {
                    report.outputs.push(Some(outputs));
                    report.latencies.push(latency);
                }
                Outcome::Failed {
                    failure, latency, ..
                } => {
                    report.outputs.push(None);
                    report.failures.push(failure);
                    report.latencies.push(latency);
                }
            }
        }
        report.elapsed = start.elapsed();
        Ok(report)
    }

    /// Ingests `batches` in order, giving batch `i` the `i`-th time of
    /// `times` (its frontier is the time before). Each worker opens its own
    /// store with `open(worker)`. Failed batches are recorded in the store
    /// and reported, never an error.
    ///
    /// # Errors
    /// A store that cannot be opened, times that cannot be assigned, or a
    /// failure that cannot be recorded (then the ingest stops).
    pub fn run<S, O>(
        &self,
        open: O,
        batches: Vec<Changes>,
        times: &mut dyn TimeSource,
    ) -> Result<Report, ParallelError>
    where
        S: StateStore,
        O: Fn(usize) -> Result<S, GraphError> + Sync,
    {
        let start = Instant::now();
        let n = batches.len();
        let rows = batches.iter().map(Changes::len).sum();
        let mut jobs = Vec::with_capacity(n);
        let mut input_times = Vec::with_capacity(n);
        for (batch, changes) in batches.into_iter().enumerate() {
            let t = times.next_time_for(batch).map_err(ParallelError::Time)?;
            let time = Time::new(t, t - 1);
            let time = if self.pipelined {
                time.pipelined()
            } else {
                time
            };
            input_times.push(t);
            jobs.push(Job {
                batch,
                changes,
                time,
            });
        }
        let bar = match self.progress {
            Progress::Auto if std::io::stderr().is_terminal() => {
                let bar = ProgressBar::new(n as u64);
                let style = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} batches ({per_sec}, eta {eta})",
                );
                if let Ok(style) = style {
                    bar.set_style(style);
                }
                bar
            }
            _ => ProgressBar::hidden(),
        };
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        for job in jobs {
            // The receiver lives until the workers finish.
            let _ = job_tx.send(job);
        }
        drop(job_tx);
        let (out_tx, out_rx) = crossbeam_channel::unbounded::<Result<Outcome, ParallelError>>();
        let graph = self.graph;
        std::thread::scope(|scope| {
            for worker in 0..self.workers {
                let (job_rx, out_tx, open) = (job_rx.clone(), out_tx.clone(), &open);
                scope.spawn(move || {
                    let mut store = match open(worker) {
                        Ok(s) => s,
                        Err(source) => {
                            let _ = out_tx.send(Err(ParallelError::Open { worker, source }));
                            return;
                        }
                    };
                    for job in job_rx.iter() {
                        let outcome = run_job(graph, &mut store, job);
                        let fatal = outcome.is_err();
                        let _ = out_tx.send(outcome);
                        if fatal {
                            return;
                        }
                    }
                });
            }
            drop(out_tx);
            let mut outputs: Vec<Option<Outputs>> = (0..n).map(|_| None).collect();
            let mut latencies = vec![Duration::ZERO; n];
            let mut failures = Vec::new();
            let mut error = None;
            for outcome in out_rx.iter() {
                bar.inc(1);
                match outcome {
                    Ok(Outcome::Done {
                        batch,
                        outputs: o,
                        latency,
                    }) => {
                        outputs[batch] = Some(o);
                        latencies[batch] = latency;
                    }
                    Ok(Outcome::Failed {
                        batch,
                        failure,
                        latency,
                    }) => {
                        bar.println(format!(
                            "batch {batch} (time {}) failed: {}",
                            failure.input_time, failure.error
                        ));
                        failures.push(failure);
                        latencies[batch] = latency;
                    }
                    Err(e) => {
                        // Stop handing out work; the others finish what they hold.
                        while job_rx.try_recv().is_ok() {}
                        error.get_or_insert(e);
                    }
                }
            }
            bar.finish_and_clear();
            failures.sort_by_key(|f| f.batch);
            match error {
                Some(e) => Err(e),
                None => Ok(Report {
                    outputs,
                    times: input_times,
                    latencies,
                    failures,
                    rows,
                    elapsed: start.elapsed(),
                }),
            }
        })
    }
}

/// Runs one batch; a failure (error or panic) is rolled back, recorded with
/// the batch's input, and its time released.
fn run_job<S: StateStore + ?Sized>(
    graph: &Graph,
    store: &mut S,
    job: Job,
) -> Result<Outcome, ParallelError> {
    let Job {
        batch,
        changes,
        time,
    } = job;
    let kept = changes.duplicate();
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        graph.iteration_at(store, changes, time)
    }));
    let latency = started.elapsed();
    let error = match result {
        Ok(Ok(outputs)) => {
            return Ok(Outcome::Done {
                batch,
                outputs,
                latency,
            });
        }
        // The store was migrated to another version of the query: nothing
        // of this query may be written to it any more, not even the
        // failure's record. The worker stops with the typed error.
        Ok(Err(e @ graph::GraphError::Store(graph::StoreError::QueryChanged { .. }))) => {
            return Err(ParallelError::Graph(e));
        }
        // A user function's panic is already `GraphError::UserPanic`; this
        // catches what panics outside them (a store's own code).
        Ok(Err(e)) => e.to_string(),
        Err(panic) => format!(
            "the iteration panicked outside any user function: {}",
            graph::panic_message(&*panic)
        ),
    };
    let bytes = kept.encode().unwrap_or_default();
    match store.record_failure(time, batch as i64, &bytes, &error) {
        Ok(recorded) => Ok(Outcome::Failed {
            batch,
            failure: Failure {
                batch,
                input_time: time.input_time,
                error,
                committed: recorded.committed,
            },
            latency,
        }),
        Err(source) => Err(ParallelError::Record {
            batch,
            input_time: time.input_time,
            error,
            source,
        }),
    }
}

/// What [`retry`] did.
#[derive(Debug, Default)]
pub struct RetryReport {
    /// `(old time, new time)` of each batch re-ingested, and its outputs
    /// (the new time as the store saw it just after the retry).
    pub retried: Vec<(i64, i64, Outputs)>,
    /// Batches left alone because they were partially applied (they failed
    /// in a pipelined ingest after some tables committed): re-running them
    /// would apply those tables twice. Their records stay in the store.
    pub skipped: Vec<graph::FailedBatch>,
    /// Batches whose changes the store does not have, so that they cannot
    /// be re-run from their records: the process that took their time from
    /// a [`store::PgSequence`] died before running it (`batch` is the
    /// number its claim named, `-1` for none). Feed each batch again with
    /// [`retry_with`], which asks for its changes; their records stay in
    /// the store until then.
    pub lost: Vec<graph::FailedBatch>,
}

/// Re-ingests the failed batches recorded in `store`, oldest first, each at
/// a new time (the store's next), forgetting each record in the same
/// transaction as its retry ([`Graph::retry_failed`]): a batch is retried
/// exactly once, however the process ends and however many processes retry
/// at once (a record another one retried first is passed over). Partially
/// applied batches are skipped, and batches whose changes are unknown are
/// reported as lost (see [`RetryReport`]).
///
/// # Errors
/// The first retry that fails again (its record is kept; earlier retries
/// stay done), or a store failure.
pub fn retry<S: StateStore + ?Sized>(
    graph: &Graph,
    store: &mut S,
) -> Result<RetryReport, ParallelError> {
    retry_in(graph, store, None, &mut |_| None)
}

/// [`retry`], with new times from `times`, and the changes of a batch the
/// store does not have (see [`RetryReport::lost`]) from `supply`, given its
/// record (e.g. by its `batch` number): a batch `supply` returns is
/// re-ingested and its record forgotten, one it does not is reported lost.
///
/// # Errors
/// As for [`retry`], or times that cannot be taken.
pub fn retry_with<S: StateStore + ?Sized>(
    graph: &Graph,
    store: &mut S,
    times: &mut dyn TimeSource,
    mut supply: impl FnMut(&graph::FailedBatch) -> Option<Changes>,
) -> Result<RetryReport, ParallelError> {
    retry_in(graph, store, Some(times), &mut supply)
}

fn retry_in<S: StateStore + ?Sized>(
    graph: &Graph,
    store: &mut S,
    mut times: Option<&mut dyn TimeSource>,
    supply: &mut dyn FnMut(&graph::FailedBatch) -> Option<Changes>,
) -> Result<RetryReport, ParallelError> {
    let mut report = RetryReport::default();
    for failed in store.failed_batches().map_err(GraphError::from)? {
        if !failed.committed.is_empty() {
            report.skipped.push(failed);
            continue;
        }
        let changes = if failed.changes.is_empty() {
            match supply(&failed) {
                Some(changes) => changes,
                None => {
                    report.lost.push(failed);
                    continue;
                }
            }
        } else {
            graph.decode_changes(&failed.changes)?
        };
        let time = match times.as_deref_mut() {
            // Claimed for the batch its record names (a negative number,
            // none, becomes one no ingest gives).
            Some(times) => {
                let t = times
                    .next_time_for(usize::try_from(failed.batch).unwrap_or(usize::MAX))
                    .map_err(ParallelError::Time)?;
                Some(Time::new(t, t - 1))
            }
            None => None,
        };
        // The re-run and forgetting its record commit together: a crash
        // between them cannot make the next retry apply the batch again.
        let outputs = match graph.retry_failed(store, changes, failed.input_time, time) {
            Err(GraphError::Store(StoreError::NoSuchFailure { .. })) => {
                // Another retry got there first. A time taken for this one
                // must still be marked done, or it would hold up the rest.
                if let Some(time) = time {
                    graph.iteration_at(store, Changes::new(), time)?;
                }
                continue;
            }
            other => other?,
        };
        let t = match time {
            Some(time) => time.input_time,
            None => store.next_time().map_err(GraphError::from)? - 1,
        };
        report.retried.push((failed.input_time, t, outputs));
    }
    Ok(report)
}
