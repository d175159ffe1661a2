//! A process killed holding times it took from the tables' shared sequence
//! does not wedge the processes after it: their ingest finishes, the dead
//! process's times are recorded as failed naming the batches they held,
//! and feeding those batches again gives the serial result. Postgres only
//! (the sequence is a Postgres `SEQUENCE`).

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::{Target, check_sums, ingest_cmd, pg_url, run};

/// `meter-ingest failed`'s lines as `(input time, batch, error)`.
fn failed(target: &[String]) -> Vec<(i64, i64, String)> {
    let out = run(target, &["failed"]);
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, ',').collect();
            (
                f[0].parse().expect("time"),
                f[1].parse().expect("batch"),
                f[2].to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_process_killed_holding_sequence_times_does_not_wedge_the_others() {
    let Some(url) = pg_url() else { return };
    for pipelined in [false, true] {
        let prefix = format!(
            "x{:x}_abandoned{}_",
            std::process::id(),
            u8::from(pipelined)
        );
        let target = Target {
            args: vec![
                "--postgres".to_owned(),
                url.clone(),
                "--prefix".to_owned(),
                prefix.clone(),
            ],
            _cleanup: Some(benches::pg::DropTablesOnExit {
                conn: url.clone(),
                prefix,
            }),
        };
        run(&target, &["setup"]);
        // The first process takes (and claims) the times of the even
        // batches, and is killed before it runs any.
        let mut holder = ingest_cmd(
            &target,
            &[
                "ingest",
                "--batch",
                "100",
                "--share",
                "0/2",
                "--sequence",
                "--stall-after-times",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read");
        let taken: Vec<i64> = line
            .trim()
            .strip_prefix("taken ")
            .unwrap_or_else(|| panic!("the holder said {line:?}"))
            .split(',')
            .map(|t| t.parse().expect("a time"))
            .collect();
        holder.kill().expect("SIGKILL");
        holder.wait().expect("reaped");
        // The odd batches' times come after those: their ingest waits for
        // times nobody will commit, and must not wait for good.
        let mut args = vec!["ingest", "--batch", "100", "--share", "1/2", "--sequence"];
        if pipelined {
            args.push("--pipelined");
        }
        run(&target, &args);
        let recorded = failed(&target);
        let expected: Vec<(i64, i64)> = taken.iter().copied().zip((0..).step_by(2)).collect();
        assert_eq!(
            recorded.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
            expected,
            "pipelined {pipelined}: the dead process's times, with their batches: {recorded:?}"
        );
        assert!(
            recorded
                .iter()
                .all(|f| f.2.contains("ended before committing")),
            "pipelined {pipelined}: {recorded:?}"
        );
        // Fed again from the batch numbers in the records: nothing stays
        // lost, nothing stays recorded, and the sums are the serial ones.
        let retried = run(&target, &["retry", "--batch", "100", "--sequence"]);
        assert!(
            retried.stdout.is_empty(),
            "pipelined {pipelined}: {}",
            String::from_utf8_lossy(&retried.stdout)
        );
        assert!(failed(&target).is_empty(), "pipelined {pipelined}");
        check_sums(&target);
    }
}
