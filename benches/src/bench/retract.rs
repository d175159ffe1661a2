//! A large retraction on the memory store: removing one widely referenced
//! row whose removal changes a set-valued aggregate in every group that
//! refers to it (issue 26: such a retraction was allocation-bound).
//!
//! `groups` groups each refer to the same `names` rows; each group's
//! aggregate is the set of the names it refers to. Removing name 0 changes
//! every group's set; putting it back changes them again. Each timed
//! iteration's output is checked (one set out and one in per group).
//!
//! Run: `cargo run --release -p benches --bin meter-bench -- retract`
//! (`--groups 2000 --names 50 --rounds 5`).

use std::process::ExitCode;
use std::time::Instant;

use graph::{BoxError, Graph, Input, Output};
use operators::prelude::*;

/// A set-valued aggregate per group: `Pair(set of names, group)`.
type Sets = ZSet<Pair<ZSet<String>, i64>>;

/// The query's handles: references `(group, name id)`, names `(id, name)`,
/// and the sets.
type Handles = (Input<(i64, i64)>, Input<(i64, String)>, Output<Sets>);

fn build() -> Result<(Graph, Handles), BoxError> {
    Ok(Graph::build(|q| {
        let (refs, r) = q.input::<(i64, i64)>("refs")?;
        let (names, n) = q.input::<(i64, String)>("names")?;
        let named = r
            .join(
                n,
                &Index::new("to", |r: &(i64, i64)| r.1),
                &Index::new("id", |n: &(i64, String)| n.0),
            )
            .map(|p: &Pair<(i64, i64), (i64, String)>| (p.left.0, p.right.1.clone()));
        let sets = named.group_reduce_flatten(
            &Index::new("group", |r: &(i64, String)| r.0),
            ZSet::new(),
            |r| ZSet::singleton(r.1.clone(), 1),
        );
        Ok((refs, names, q.output("sets", sets)?))
    })?)
}

/// Median microseconds of removing name 0 and of putting it back, over
/// `rounds` of each.
///
/// # Errors
/// A store failure, or an output that is not one set out and one in per group.
pub fn measure(groups: i64, names: i64, rounds: usize) -> Result<(f64, f64), BoxError> {
    let (graph, (refs, names_in, sets)) = build()?;
    let mut store = store::Memory::new(&graph);
    let all: Vec<(i64, String)> = (0..names).map(|i| (i, format!("name-{i}"))).collect();
    graph.insert(&mut store, &names_in, all.clone())?;
    let edges: Vec<(i64, i64)> = (0..groups)
        .flat_map(|g| (0..names).map(move |n| (g, n)))
        .collect();
    graph.insert(&mut store, &refs, edges)?;
    let (mut out, mut back) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        for (times, change) in [(&mut out, -1), (&mut back, 1)] {
            let started = Instant::now();
            let outputs = if change < 0 {
                graph.remove(&mut store, &names_in, [all[0].clone()])?
            } else {
                graph.insert(&mut store, &names_in, [all[0].clone()])?
            };
            times.push(started.elapsed().as_secs_f64() * 1e6);
            let z = outputs.get(&sets)?;
            if z.len() as i64 != 2 * groups || z.weight_sum() != 0 {
                return Err(format!("{} rows changed, expected {}", z.len(), 2 * groups).into());
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut out), median(&mut back)))
}

/// `meter-bench retract [--groups G] [--names N] [--rounds R]`.
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let (mut groups, mut names, mut rounds) = (2000i64, 50i64, 5i64);
    let mut args = args;
    while let Some(a) = args.next() {
        let slot = match a.as_str() {
            "--groups" => &mut groups,
            "--names" => &mut names,
            "--rounds" => &mut rounds,
            _ => return usage(),
        };
        match args.next().and_then(|v| v.parse().ok()) {
            Some(v) => *slot = v,
            None => return usage(),
        }
    }
    match measure(groups, names, rounds as usize) {
        Ok((out, back)) => {
            println!(
                "retract: {groups} groups of {names} names: removing one name {out:.0} µs, \
                 putting it back {back:.0} µs (medians of {rounds})"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: meter-bench retract [--groups G] [--names N] [--rounds R]");
    ExitCode::from(2)
}
