//! Definition fingerprints: for each state, a hash of everything upstream
//! of it, so that a store can tell which of its states a changed query
//! still computes the same way (see `StateSpec::definition`).
//!
//! Computed on the vertices as the builder recorded them, before the
//! transforms: what the user wrote (operators, paths, row types, indexes,
//! versions), not how finalization happens to rearrange it. A vertex's
//! fingerprint covers its own operator and those of its inputs, so
//! editing one part of a query changes the definitions of the states
//! downstream of the edit and of no other.

use std::collections::HashMap;

use crate::builder::Builder;
use crate::codec::identity_of;
use crate::vertex::Op;
use crate::{StateId, VertexId};

/// The definition of each state declaration of `b` (by its `StateId`
/// before sharing); `None` for declarations no vertex refers to.
pub(crate) fn of_declarations(b: &Builder) -> Vec<Option<String>> {
    of_declarations_named(b, &|p| p.to_owned())
}

/// As [`of_declarations`], every path given as `name` gives it: with the
/// names the store's older query used, the definitions it recorded.
pub(crate) fn of_declarations_named(
    b: &Builder,
    name: &dyn Fn(&str) -> String,
) -> Vec<Option<String>> {
    let mut memo: HashMap<VertexId, String> = HashMap::new();
    let mut referrers: Vec<Vec<VertexId>> = vec![Vec::new(); b.states.len()];
    for (v, vertex) in b.vertices.iter().enumerate() {
        for s in states_of(&vertex.op, &vertex.states) {
            referrers[s.index()].push(VertexId(v as u32));
        }
    }
    referrers
        .iter()
        .enumerate()
        .map(|(s, users)| {
            if users.is_empty() {
                return None;
            }
            let decl = &b.states[s];
            let mut defs: Vec<String> = users
                .iter()
                .map(|v| vertex_def(b, name, *v, &mut memo, &mut Vec::new()))
                .collect();
            defs.sort();
            let text = format!(
                "state {} {} [{}]",
                name(decl.path.as_str()),
                crate::state::shape_of(&*decl.codec),
                defs.join(",")
            );
            Some(hash(&text))
        })
        .collect()
}

/// The definition of a state shared by several declarations: one text for
/// all of them, whatever order they were declared in.
pub(crate) fn combined(mut defs: Vec<String>) -> String {
    defs.sort();
    defs.dedup();
    match defs.len() {
        1 => defs.pop().unwrap_or_default(),
        _ => hash(&defs.join(",")),
    }
}

fn hash(text: &str) -> String {
    format!("{:016x}", identity_of(text.as_bytes()) as u64)
}

fn states_of(op: &Op, own: &[StateId]) -> Vec<StateId> {
    let mut out = own.to_vec();
    match op {
        Op::Delay(s) | Op::Integrate { state: s, .. } => out.push(*s),
        Op::ScalarDelay(d) => out.push(d.state),
        _ => {}
    }
    out
}

/// The fingerprint of vertex `v`: its own operator and, recursively, its
/// inputs'. A delay read by a vertex stands for itself by its path (the
/// delay's own fingerprint, which covers what it delays, is its state's
/// concern), so that every loop is cut at the same place whatever vertex
/// the walk starts from; a vertex met again while its own fingerprint is
/// being made (a loop with no delay, which building refuses) likewise.
fn vertex_def(
    b: &Builder,
    name: &dyn Fn(&str) -> String,
    v: VertexId,
    memo: &mut HashMap<VertexId, String>,
    open: &mut Vec<VertexId>,
) -> String {
    let vertex = &b.vertices[v.ix()];
    if !open.is_empty() && matches!(vertex.op, Op::Delay(_) | Op::ScalarDelay(_)) {
        return format!("delay {}", name(vertex.path.as_str()));
    }
    if let Some(d) = memo.get(&v) {
        return d.clone();
    }
    if open.contains(&v) {
        return format!("loop {}", name(vertex.path.as_str()));
    }
    open.push(v);
    let mut inputs = vertex.inputs.clone();
    if let Op::Recursive(r) = &vertex.op {
        inputs.extend(r.imports.iter().copied());
        inputs.push(r.result);
        inputs.push(r.feedback);
    }
    let upstream: Vec<String> = inputs
        .iter()
        .map(|i| vertex_def(b, name, *i, memo, open))
        .collect();
    let states: Vec<String> = states_of(&vertex.op, &vertex.states)
        .iter()
        .map(|s| {
            let d = &b.states[s.index()];
            format!(
                "{}:{}",
                name(d.path.as_str()),
                crate::state::shape_of(&*d.codec)
            )
        })
        .collect();
    let version = b.versions.get(&v).copied().unwrap_or(0);
    let text = format!(
        "{}|{}|{}|{}|v{version}|[{}]|({})",
        name(vertex.label),
        vertex.op.name(),
        name(vertex.path.as_str()),
        vertex.ty,
        states.join(","),
        upstream.join(",")
    );
    open.pop();
    let d = hash(&text);
    memo.insert(v, d.clone());
    d
}
