//! Waiting for the frontier to move: `LISTEN`/`NOTIFY` on a prefix's channel,
//! with polling as the fallback.

use std::time::{Duration, Instant};

use graph::StoreError;
use tokio_postgres::NoTls;

use super::claims;
use super::frontier::behind;
use super::runtime::Conn;
use super::statements::Tables;
use crate::wait::Backoff;

/// Commits announced by Postgres `NOTIFY`, as a generation counter.
pub(crate) type Wake = tokio::sync::watch::Receiver<u64>;

/// The `LISTEN`/`NOTIFY` channel of the tables with `prefix`.
pub(crate) fn channel(prefix: &str) -> String {
    format!("stepping_{prefix}")
}

/// Waits until every table of `names` has been written up to `frontier`
/// (one query per poll): polls with backoff between `poll.0` and `poll.1`,
/// woken early by `wake`. Stuck for a while, it releases a time taken from
/// the tables' sequence whose taker is gone (see `claims`).
pub(crate) async fn wait_for<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
    frontier: i64,
    max_wait: Duration,
    poll: (Duration, Duration),
    mut wake: Option<Wake>,
) -> Result<(), StoreError> {
    let start = Instant::now();
    let mut backoff = Backoff::new(poll.0, poll.1);
    let mut watch = claims::Watch::new(max_wait);
    loop {
        if let Some(w) = wake.as_mut() {
            w.borrow_and_update();
        }
        let Some((table, seen)) = behind(conn, tables, names, frontier).await? else {
            return Ok(());
        };
        let waited = start.elapsed();
        if watch.due(waited) && watch.release(conn, tables, frontier, waited).await? {
            continue;
        }
        if start.elapsed() >= max_wait {
            return Err(StoreError::FrontierTimeout {
                table,
                frontier,
                seen: Some(seen),
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        let pause = backoff.next(max_wait.saturating_sub(start.elapsed()));
        let woken = match wake.as_mut() {
            Some(w) => tokio::time::timeout(pause, w.changed()).await,
            None => {
                tokio::time::sleep(pause).await;
                Ok(Ok(()))
            }
        };
        if let Ok(Err(_)) = woken {
            // The listener is gone: poll only.
            wake = None;
        }
    }
}

/// A connection that `LISTEN`s to a channel and bumps a counter for every
/// notification.
pub(super) struct Listener {
    pub(super) wake: Wake,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
) -> Result<Listener, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (bump, wake) = tokio::sync::watch::channel(0u64);
    let (ready_tx, ready) = tokio::sync::oneshot::channel::<tokio_postgres::Client>();
    let task = tokio::spawn(async move {
        // Keep the client (and so the session and its LISTEN) alive.
        let mut ready = ready;
        let mut _client = None;
        loop {
            tokio::select! {
                c = &mut ready, if _client.is_none() => { _client = c.ok(); }
                message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => bump.send_modify(|g| *g += 1),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    let _ = ready_tx.send(client);
    Ok(Listener { wake, task })
}
