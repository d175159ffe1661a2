//! `meter-ingest graph`: the meter-reads query's picture (SVG, laid out
//! in Rust) and its profile, from the command line.

use crate::{run, targets};

/// `graph --svg FILE` writes the query's picture without any store;
/// `graph` alone prints DOT.
#[test]
fn graph_writes_the_query_s_svg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("meter_reads.svg");
    let path = file.display().to_string();
    run(&[], &["graph", "--svg", &path]);
    let svg = std::fs::read_to_string(&file).expect("the picture was written");
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    for vertex in [
        "reads",
        "user_meters.join_map(reads)",
        "daily_cache/sink",
        "daily",
    ] {
        assert!(svg.contains(vertex), "{vertex} is not drawn");
    }
    let dot = run(&[], &["graph"]);
    assert!(String::from_utf8_lossy(&dot.stdout).starts_with("digraph"));
}

/// `graph --profile --svg FILE` ingests the workload with profiling on
/// (in memory, or into the store given), prints the per-vertex table and
/// the states' rows, and draws both onto the picture.
#[test]
fn graph_profiles_an_ingest_and_draws_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stores = vec![Vec::new()];
    stores.extend(targets(&dir, "picture").into_iter().map(|t| t.to_vec()));
    for (i, target) in stores.iter().enumerate() {
        let file = dir.path().join(format!("profiled{i}.svg"));
        let path = file.display().to_string();
        let out = run(
            target,
            &["graph", "--profile", "--batch", "300", "--svg", &path],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("4 iteration(s)"), "{target:?}: {text}");
        assert!(
            text.contains("user_meters.join_map(reads)") && text.contains("rows out"),
            "{text}"
        );
        assert!(
            text.contains("daily_cache"),
            "{target:?}: no state sizes in {text}"
        );
        let svg = std::fs::read_to_string(&file).expect("the picture was written");
        assert!(
            svg.contains("call(s)") && svg.contains("state: daily_cache ("),
            "{target:?}"
        );
    }
}
