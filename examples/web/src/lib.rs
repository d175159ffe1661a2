//! A live web service over the meter-reads query (`benches::meter_reads`),
//! built on the async face of `stepping-store`:
//!
//! - `POST /reads`: a JSON array of reads, ingested as one iteration;
//!   answers `{"time": t, "changed": n}` (rows of daily usage changed).
//! - `GET /daily/{date}`: the daily-usage cache for a date (`YYYY-MM-DD`),
//!   as JSON: `{"date", "total", "usage": [{user_id, meter_id, date, value}]}`.
//! - `GET /events`: server-sent events, one per committed change of the
//!   feed `daily_changes`: `{"time", "changes": [{user_id, meter_id, date,
//!   value, weight}]}`.
//! - `GET /`: one HTML page showing each date's total, updated live.
//!
//! One task follows the feed with a durable consumer (`web`), broadcasts
//! each change to the connected browsers, then acknowledges it; a restart
//! goes on after the last acknowledged change.
//!
//! Run: `cargo run -p stepping-web-example -- --sqlite meter-web.db --port 3000`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use benches::meter_reads::{self, DailyUsage, MeterRead, MeterReads, Workload};
use chrono::NaiveDate;
use futures_util::StreamExt;
use graph::{Changes, Feed, FeedStore, Graph, GraphError, StateStore};
use serde::Serialize;
use store::{AsyncStore, ChangeStream};
use tokio::sync::broadcast;

/// A store the service can ingest into and follow feeds of.
pub trait AppStore: StateStore + FeedStore + Send {}
impl<S: StateStore + FeedStore + Send> AppStore for S {}

/// Where the state lives.
#[derive(Clone, Debug)]
pub enum Target {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A Postgres database (a connection string) and table prefix.
    Postgres(String, String),
}

impl Target {
    /// Opens a store for `graph`, creating its tables if needed.
    ///
    /// # Errors
    /// The store cannot be opened.
    pub fn open(&self, graph: &Graph) -> Result<Box<dyn AppStore>, GraphError> {
        Ok(match self {
            Target::Sqlite(path) => Box::new(store::Sqlite::open(
                path,
                graph,
                store::OpenOptions::default(),
            )?),
            Target::Postgres(url, prefix) => Box::new(store::Postgres::open(
                url,
                graph,
                store::OpenOptions {
                    prefix: prefix.clone(),
                    ..store::OpenOptions::default()
                },
            )?),
        })
    }
}

/// One row of a change, as the events carry it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ChangeRow {
    /// The user.
    pub user_id: i64,
    /// The meter.
    pub meter_id: uuid::Uuid,
    /// The day.
    pub date: NaiveDate,
    /// The day's usage.
    pub value: f64,
    /// `+1` for a row that appears, `-1` for one that goes.
    pub weight: i64,
}

/// One server-sent event: the feed's change at `time`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ChangeEvent {
    /// The iteration's time.
    pub time: i64,
    /// What changed in the daily usage.
    pub changes: Vec<ChangeRow>,
}

struct App {
    graph: Graph,
    q: MeterReads,
    store: AsyncStore<Box<dyn AppStore>>,
    events: broadcast::Sender<Arc<ChangeEvent>>,
}

/// The running service's parts: its router, and the task following the feed.
pub struct Service {
    /// The HTTP routes.
    pub router: axum::Router,
    /// Follows the feed until the process ends.
    pub follower: tokio::task::JoinHandle<Result<(), GraphError>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Service")
    }
}

/// Opens the stores at `target` (one to ingest, one to follow the feed),
/// sets up `users` users with a meter each if the store is new, and
/// returns the service. Call inside a multi-threaded tokio runtime.
///
/// # Errors
/// A store that cannot be opened or set up.
pub async fn service(target: Target, users: u64) -> Result<Service, GraphError> {
    let (graph, q, feed) = meter_reads::build_with_feed()?;
    let opened = {
        let (target, graph) = (target.clone(), graph.clone());
        tokio::task::spawn_blocking(move || -> Result<_, GraphError> {
            Ok((target.open(&graph)?, target.open(&graph)?))
        })
        .await
        .map_err(|e| store::StoreError::backend("opening the stores", e))??
    };
    let (ingest, follow) = opened;
    let store = AsyncStore::new(ingest);
    let workload = Workload { users, reads: 0 };
    let (setup_graph, setup_q) = (graph.clone(), q.clone());
    store
        .with(move |s| {
            if s.last_time()? == 0 {
                let changes = Changes::new()
                    .insert(&setup_q.users, workload.all_users())
                    .insert(&setup_q.meters, workload.all_meters());
                setup_graph.iteration(s, changes)?;
            }
            Ok(())
        })
        .await?;
    let (events, _) = broadcast::channel(1024);
    let follower = tokio::spawn(follow_feed(feed, follow, events.clone()));
    let app = Arc::new(App {
        graph,
        q,
        store,
        events,
    });
    let router = axum::Router::new()
        .route("/", get(page))
        .route("/reads", post(post_reads))
        .route("/daily/{date}", get(daily))
        .route("/events", get(sse))
        .with_state(app);
    Ok(Service { router, follower })
}

/// Follows the feed: each change goes to the connected browsers, then is
/// acknowledged (a browser not connected at that moment misses it; the
/// page reads the totals from `/daily` when it connects).
async fn follow_feed(
    feed: Feed<DailyUsage>,
    store: Box<dyn AppStore>,
    events: broadcast::Sender<Arc<ChangeEvent>>,
) -> Result<(), GraphError> {
    let consumer = tokio::task::spawn_blocking(move || feed.consumer(store, "web"))
        .await
        .map_err(|e| store::StoreError::backend("making the feed consumer", e))??;
    let mut changes = ChangeStream::new(consumer);
    while let Some(change) = changes.next().await {
        let (time, change) = change?;
        let mut rows: Vec<ChangeRow> = change
            .iter()
            .map(|(d, weight)| ChangeRow {
                user_id: d.user_id,
                meter_id: d.meter_id,
                date: d.date,
                value: d.value.get(),
                weight,
            })
            .collect();
        rows.sort_by_key(|a| (a.date, a.user_id, a.weight));
        // No browser connected is not an error.
        let _ = events.send(Arc::new(ChangeEvent {
            time,
            changes: rows,
        }));
        changes.ack(time).await?;
    }
    Ok(())
}

fn error(status: StatusCode, e: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

async fn post_reads(State(app): State<Arc<App>>, Json(reads): Json<Vec<MeterRead>>) -> Response {
    let (graph, changes) = (
        app.graph.clone(),
        Changes::new().insert(&app.q.reads, reads),
    );
    // The time is read in the same call as the iteration, under the
    // store's lock, so a concurrent POST cannot commit in between and
    // lend this one its time.
    let done = app
        .store
        .with(move |s| {
            let out = graph.iteration(s, changes)?;
            Ok((out, s.last_time()?))
        })
        .await;
    match done {
        Ok((mut out, time)) => {
            let changed = out.take(&app.q.daily).map(|z| z.len()).unwrap_or(0);
            Json(serde_json::json!({ "time": time, "changed": changed })).into_response()
        }
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

async fn daily(State(app): State<Arc<App>>, Path(date): Path<String>) -> Response {
    let Ok(date) = NaiveDate::parse_from_str(&date, "%Y-%m-%d") else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("not a date (YYYY-MM-DD): {date}"),
        );
    };
    let cache = app.q.cache.clone();
    let rows = app
        .store
        .with(move |s| cache.iter_by_index(s, &meter_reads::by_date(), Some(&[date])))
        .await;
    match rows {
        Ok(rows) => {
            let usage: Vec<serde_json::Value> = rows
                .iter()
                .filter(|(_, _, w)| *w > 0)
                .map(|(_, d, _)| {
                    serde_json::json!({
                        "user_id": d.user_id, "meter_id": d.meter_id,
                        "date": d.date, "value": d.value.get(),
                    })
                })
                .collect();
            let total: f64 = rows.iter().map(|(_, d, w)| d.value.get() * *w as f64).sum();
            Json(serde_json::json!({ "date": date, "total": total, "usage": usage }))
                .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn sse(
    State(app): State<Arc<App>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let mut rx = app.events.subscribe();
    let stream = async_stream(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let json = serde_json::to_string(&*event).unwrap_or_default();
                    if tx
                        .send(Event::default().event("change").data(json))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow a browser: tell it to reload the totals.
                    if tx
                        .send(Event::default().event("lagged").data("{}"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Sse::new(stream.map(Ok)).keep_alive(KeepAlive::default())
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> impl futures_util::Stream<Item = Event>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
