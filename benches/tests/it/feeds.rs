//! Feeds across process kills: `meter-ingest --feed` ingests killed with
//! SIGKILL while a consumer process follows the feed, and consumer
//! processes killed between writing what they received and acknowledging
//! it. Nothing is lost: the consumer's output, each time taken once, holds
//! every change in time order, and adds up to the workload's daily sums;
//! a change written but not acknowledged is delivered again identical (at
//! least once).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use benches::meter_reads::DailyUsage;

use super::{W, ingest_cmd, run, targets};

const BATCH: u64 = 50;

/// The time of the last batch: the setup is time 1, batch `b` time `b + 2`.
fn last_batch_time() -> i64 {
    W.reads.div_ceil(BATCH) as i64 + 1
}

fn spawn(target: &[String], args: &[&str]) -> Child {
    let mut all = vec!["--feed"];
    all.extend_from_slice(args);
    ingest_cmd(target, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meter-ingest starts")
}

fn kill(mut child: Child) {
    // SIGKILL: no clean-up of any kind.
    let _ = child.kill();
    let _ = child.wait();
}

fn finish(child: Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut child = child;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            assert!(
                status.success(),
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        assert!(Instant::now() < deadline, "{what} hung");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last_time(target: &[String]) -> i64 {
    let out = run(target, &["--feed", "last-time"]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a time")
}

/// The consumer's output: each line `time;json`, taken once per time (a
/// time written again must be the same change), checked to be in order
/// and to add up to the workload's sums. Returns how many lines repeated
/// a time.
fn check_consumed(out: &Path, what: &str) -> usize {
    let text = std::fs::read_to_string(out).expect("the consumer's output");
    let mut by_time: BTreeMap<i64, String> = BTreeMap::new();
    let (mut repeats, mut previous) = (0, 0);
    for line in text.lines() {
        let (t, json) = line.split_once(';').expect("time;json");
        let t: i64 = t.parse().expect("a time");
        match by_time.get(&t) {
            Some(first) => {
                assert_eq!(first, json, "{what}: time {t} delivered again, differently");
                repeats += 1;
            }
            None => {
                assert!(t > previous, "{what}: time {t} after {previous}");
                by_time.insert(t, json.to_owned());
            }
        }
        previous = previous.max(t);
    }
    assert_eq!(
        by_time.keys().next_back().copied(),
        Some(last_batch_time()),
        "{what}: the last batch's change"
    );
    let mut sums: BTreeMap<(i64, String, String), f64> = BTreeMap::new();
    for json in by_time.values() {
        let rows: Vec<(DailyUsage, i64)> = serde_json::from_str(json).expect("rows");
        for (d, w) in rows {
            let key = (d.user_id, d.meter_id.to_string(), d.date.to_string());
            *sums.entry(key).or_default() += d.value.get() * w as f64;
        }
    }
    sums.retain(|_, v| v.abs() > 1e-9);
    let expected = W.expected_daily();
    assert_eq!(sums.len(), expected.len(), "{what}: daily rows");
    for ((user, meter, date), sum) in expected {
        let got = sums[&(user, meter.to_string(), date.to_string())];
        assert!(
            (got - sum).abs() < 1e-6,
            "{what}: {user} {date}: {got} vs {sum}"
        );
    }
    repeats
}

#[test]
fn ingests_killed_between_commit_and_consumption_lose_no_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = fastrand::Rng::with_seed(25);
    for target in targets(&dir, "fk_ingest") {
        run(&target, &["--feed", "setup"]);
        let out = dir
            .path()
            .join(format!("ingest_kill_{}.txt", target[0].trim_matches('-')));
        let until = last_batch_time().to_string();
        let out_arg = out.display().to_string();
        let consumer = spawn(
            &target,
            &[
                "consume", "--name", "follower", "--out", &out_arg, "--until", &until,
            ],
        );
        let mut kills = 0;
        loop {
            let from = ((last_time(&target) - 1) as u64 * BATCH).min(W.reads);
            if from >= W.reads {
                break;
            }
            let from = from.to_string();
            let batch = BATCH.to_string();
            let child = spawn(&target, &["ingest", "--batch", &batch, "--from", &from]);
            if kills < 4 {
                std::thread::sleep(Duration::from_millis(100 + rng.u64(0..400)));
                kill(child);
                kills += 1;
            } else {
                finish(child, "the last ingest");
            }
        }
        finish(consumer, "the consumer");
        check_consumed(&out, &format!("{target:?}"));
    }
}

#[test]
fn consumers_killed_between_processing_and_acknowledging_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = fastrand::Rng::with_seed(7);
    for target in targets(&dir, "fk_consume") {
        run(&target, &["--feed", "setup"]);
        let batch = BATCH.to_string();
        run(&target, &["--feed", "ingest", "--batch", &batch]);
        let out = dir
            .path()
            .join(format!("consumer_kill_{}.txt", target[0].trim_matches('-')));
        let (out_arg, until) = (out.display().to_string(), last_batch_time().to_string());
        let args = [
            "consume",
            "--name",
            "mailer",
            "--out",
            &out_arg,
            "--until",
            &until,
            "--max",
            "2",
            "--pause-before-ack",
            "40",
        ];
        for _ in 0..6 {
            let child = spawn(&target, &args);
            std::thread::sleep(Duration::from_millis(150 + rng.u64(0..300)));
            kill(child);
        }
        finish(spawn(&target, &args), "the last consumer");
        let repeats = check_consumed(&out, &format!("{target:?}"));
        // Kills land mostly in the pause before acknowledging: what was
        // written then is delivered again (at least once).
        eprintln!("{target:?}: {repeats} changes delivered again after kills");
        assert!(
            repeats <= 6 * 2,
            "{target:?}: at most one poll (2 changes) again per kill"
        );
    }
}
