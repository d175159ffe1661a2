//! The web example's one integration-test binary: the service started on
//! 127.0.0.1 (a free port, a SQLite file in a temporary directory), driven
//! by a real HTTP client, server-sent events included.

use std::collections::BTreeMap;
use std::time::Duration;

use benches::meter_reads::Workload;
use chrono::NaiveDate;
use futures_util::StreamExt;
use stepping_web_example::{ChangeEvent, Target, service};

type R = Result<(), Box<dyn std::error::Error>>;

/// Reads server-sent events from `body` until `done` says so; returns them.
async fn read_events(
    response: reqwest::Response,
    mut done: impl FnMut(&[ChangeEvent]) -> bool,
) -> Result<Vec<ChangeEvent>, Box<dyn std::error::Error>> {
    let mut body = response.bytes_stream();
    let (mut buffer, mut events) = (String::new(), Vec::new());
    while !done(&events) {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await?
            .ok_or("the event stream ended")??;
        buffer.push_str(std::str::from_utf8(&chunk)?);
        // Events end with a blank line; a `change` event's data is JSON.
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let is_change = event.lines().any(|l| l == "event: change");
            let data = event.lines().find_map(|l| l.strip_prefix("data: "));
            if let (true, Some(data)) = (is_change, data) {
                events.push(serde_json::from_str(data)?);
            }
        }
    }
    Ok(events)
}

#[test]
fn the_service_ingests_serves_the_cache_and_streams_the_feed() -> R {
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let users = 20;
        let service = service(Target::Sqlite(dir.path().join("web.db")), users).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, service.router).await });
        let client = reqwest::Client::new();

        // The page is there, and subscribes to the events.
        let page = client.get(format!("{base}/")).send().await?.text().await?;
        assert!(page.contains("EventSource('/events')"), "the live page");

        // Subscribe first, then post reads in two requests.
        let events = client.get(format!("{base}/events")).send().await?;
        assert_eq!(events.status(), 200);
        let w = Workload { users, reads: 300 };
        let mut times = Vec::new();
        for range in [0..120, 120..300] {
            let posted: serde_json::Value = client
                .post(format!("{base}/reads"))
                .json(&w.reads(range))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let changed = posted["changed"].as_u64().ok_or("a `changed` count")?;
            assert!(changed > 0, "reads change the daily usage: {posted}");
            times.push(posted["time"].as_i64().ok_or("a time")?);
        }
        let last = *times.last().ok_or("times")?;

        // Every change arrives as an event, in time order, up to the last.
        let seen = read_events(events, |e| e.last().is_some_and(|e| e.time >= last)).await?;
        let event_times: Vec<i64> = seen.iter().map(|e| e.time).collect();
        assert_eq!(event_times, times, "one event per iteration, in order");

        // Each date's total, from the cache and from the events, equals
        // the workload's expected sums.
        let mut expected: BTreeMap<NaiveDate, f64> = BTreeMap::new();
        for ((_, _, date), value) in w.expected_daily_upto(300) {
            *expected.entry(date).or_default() += value;
        }
        let mut from_events: BTreeMap<NaiveDate, f64> = BTreeMap::new();
        for e in &seen {
            for row in &e.changes {
                *from_events.entry(row.date).or_default() += row.value * row.weight as f64;
            }
        }
        for (date, want) in &expected {
            let got: serde_json::Value = client
                .get(format!("{base}/daily/{date}"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let total = got["total"].as_f64().ok_or("a total")?;
            assert!(
                (total - want).abs() < 1e-6,
                "{date}: cache {total}, expected {want}"
            );
            let streamed = from_events.get(date).copied().unwrap_or(0.0);
            assert!(
                (streamed - want).abs() < 1e-6,
                "{date}: events {streamed}, expected {want}"
            );
        }

        // Concurrent posts: each is told the time of its own iteration, so
        // no two share one, and every one is after the earlier posts'.
        let posts = (0..8u64).map(|i| {
            let (client, url) = (client.clone(), format!("{base}/reads"));
            let reads = w.reads(300 + i * 10..310 + i * 10);
            tokio::spawn(async move {
                let posted: serde_json::Value = client
                    .post(url)
                    .json(&reads)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                posted["time"].as_i64().ok_or_else(|| "a time".into())
            })
        });
        let mut concurrent = Vec::new();
        for post in posts.collect::<Vec<_>>() {
            let time: Result<i64, Box<dyn std::error::Error + Send + Sync>> = post.await?;
            concurrent.push(time.map_err(|e| e.to_string())?);
        }
        concurrent.sort_unstable();
        let distinct: std::collections::BTreeSet<i64> = concurrent.iter().copied().collect();
        assert_eq!(distinct.len(), 8, "one time per post: {concurrent:?}");
        assert!(concurrent[0] > last, "{concurrent:?} after {last}");

        // Bad input is an error naming it, not a crash.
        let bad = client.get(format!("{base}/daily/yesterday")).send().await?;
        assert_eq!(bad.status(), 400);
        let bad = client
            .post(format!("{base}/reads"))
            .header("content-type", "application/json")
            .body("[{\"meter_id\": 1}]")
            .send()
            .await?;
        assert!(bad.status().is_client_error(), "{}", bad.status());
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
