//! Finalization: the transforms that turn what the builder recorded into a
//! runnable graph, in this order:
//!
//! 1. **Replace non-Z-set delays**: a scalar `z⁻¹` becomes
//!    `make_set → z⁻¹ → make_scalar`, so every stored state is a Z-set.
//! 2. **Fuse integrals**: every `a + z⁻¹(I)` loop (Def. 3.27) becomes one
//!    `integrate` vertex (and its `integrate_delay` twin) whose store
//!    operation is "apply this delta", never "rewrite the value".
//! 3. **Remove identities** (`named`, `flatten`).
//! 4. **Drop dead vertices**: those no output or cache depends on.
//! 5. **Share delays**: integrals of the same stream (e.g. one input joined
//!    twice) become one state with the union of their indexes; states whose
//!    SQL tables would share a name are refused.
//! 6. **Schedule**: a topological order (delays and recursion feedback are
//!    back edges), the write point of each state (after its last reader),
//!    and each recursion body's own order.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use crate::builder::Builder;
use crate::codec::identity_of;
use crate::graph::{GraphInner, StateWriter};
use crate::vertex::{Op, RecursiveOp, ScalarDelayOp, Vertex};
use crate::{Codec, GraphError, StateId, StateSpec, VertexId};

pub(crate) fn finalize(mut b: Builder, id: u64) -> Result<GraphInner, GraphError> {
    if let Some(e) = std::mem::take(&mut b.errors).into_iter().next() {
        return Err(e);
    }
    let declared = crate::definition::of_declarations(&b);
    let renames = std::mem::take(&mut b.renames);
    let before = (!renames.is_empty()).then(|| {
        crate::definition::of_declarations_named(&b, &|p| crate::rename::before(p, &renames))
    });
    let mut vertices = b.vertices;
    let mut inputs = b.inputs;
    let mut outputs = b.outputs;
    let mut sinks = b.sinks;
    replace_scalar_delays(&mut vertices);
    fuse_integrals(&mut vertices);
    remove_identities(&mut vertices, &mut inputs, &mut outputs, &mut sinks);
    let live = live_vertices(&vertices, &outputs, &sinks);
    let (states, final_of) = share_states(&b.states, &vertices, &live)?;
    set_definitions(&states, &final_of, declared, &b.cache_definitions);
    if let Some(before) = before {
        set_before(&states, &final_of, before, &renames);
    }
    let in_body = body_membership(&vertices, &b.scopes);
    let order = topo_order(&vertices, &live, |v| in_body[v.ix()].is_none());
    let mut pos_of = vec![usize::MAX; vertices.len()];
    for (pos, v) in order.iter().enumerate() {
        pos_of[v.ix()] = pos;
    }
    for v in 0..vertices.len() {
        if let Some(r) = in_body[v] {
            pos_of[v] = pos_of[r.ix()];
        }
    }
    // Recursion bodies get their own order.
    let mut rec_states: Vec<Vec<StateId>> = vec![Vec::new(); vertices.len()];
    for r in 0..vertices.len() {
        if !live[r] || !matches!(vertices[r].op, Op::Recursive(_)) {
            continue;
        }
        let rid = VertexId(r as u32);
        let body = topo_order(&vertices, &live, |v| in_body[v.ix()] == Some(rid));
        let mut nested: BTreeSet<StateId> = BTreeSet::new();
        for v in &body {
            nested.extend(vertices[v.ix()].states.iter().map(|s| final_of[s.index()]));
        }
        rec_states[r] = nested.into_iter().collect();
        if let Op::Recursive(rop) = &mut vertices[r].op {
            rop.order = body;
        }
    }
    let (writers, writes_after) = write_points(
        &vertices,
        &live,
        &final_of,
        states.len(),
        &pos_of,
        order.len(),
    );
    let last_read = last_reads(&vertices, &live, &pos_of, &final_of);
    let output_takes = outputs_taking_input(
        &vertices,
        &outputs,
        &pos_of,
        &last_read,
        &writers,
        &writes_after,
    );
    let fingerprint = fingerprint(&states);
    Ok(GraphInner {
        id,
        vertices,
        scopes: b.scopes,
        states,
        final_of,
        writers,
        order,
        writes_after,
        last_read,
        output_takes,
        rec_states,
        inputs,
        input_codecs: b.input_codecs,
        outputs,
        fingerprint,
        input_migrations: b.input_migrations,
    })
}

fn push(vertices: &mut Vec<Vertex>, v: Vertex) -> VertexId {
    vertices.push(v);
    VertexId((vertices.len() - 1) as u32)
}

/// Step 1: `z⁻¹` of a scalar becomes `make_set → z⁻¹ → make_scalar`.
fn replace_scalar_delays(vertices: &mut Vec<Vertex>) {
    for i in 0..vertices.len() {
        if !matches!(vertices[i].op, Op::ScalarDelay(_)) {
            continue;
        }
        let Op::ScalarDelay(ScalarDelayOp {
            make_set,
            make_scalar,
            state,
            set_fns,
            set_type,
        }) = std::mem::replace(&mut vertices[i].op, Op::Removed)
        else {
            continue;
        };
        let d = &vertices[i];
        let (path, scope, at, input) = (d.path.clone(), d.scope, d.at, d.inputs[0]);
        let set = push(
            vertices,
            Vertex {
                path: path.suffixed(".make_set"),
                label: "make_set",
                inputs: vec![input],
                op: Op::Func(make_set),
                scope,
                ty: set_type,
                fns: Some(set_fns),
                at,
                states: Vec::new(),
            },
        );
        let delay = push(
            vertices,
            Vertex {
                path: path.suffixed(".set_delay"),
                label: "delay",
                inputs: vec![set],
                op: Op::Delay(state),
                scope,
                ty: set_type,
                fns: Some(set_fns),
                at,
                states: Vec::new(),
            },
        );
        let d = &mut vertices[i];
        d.label = "make_scalar";
        d.inputs = vec![delay];
        d.op = Op::Func(make_scalar);
    }
}

/// Step 2: `I = a + z⁻¹(I)` becomes one fused integral.
fn fuse_integrals(vertices: &mut [Vertex]) {
    for d in 0..vertices.len() {
        let Op::Delay(state) = vertices[d].op else {
            continue;
        };
        let [add] = vertices[d].inputs[..] else {
            continue;
        };
        let add_v = &vertices[add.ix()];
        if !matches!(add_v.op, Op::Add(_)) || add_v.inputs.len() != 2 {
            continue;
        }
        let delay_id = VertexId(d as u32);
        let delta = match add_v.inputs[..] {
            [x, y] if y == delay_id && x != delay_id => x,
            [x, y] if x == delay_id && y != delay_id => y,
            _ => continue,
        };
        let a = &mut vertices[add.ix()];
        a.op = Op::Integrate {
            state,
            delayed: false,
        };
        a.label = "integrate";
        a.inputs = vec![delta];
        let z = &mut vertices[d];
        z.op = Op::Integrate {
            state,
            delayed: true,
        };
        z.label = "integrate_delay";
        z.inputs = vec![delta];
    }
}

/// Step 3: identities disappear; their consumers read their input.
fn remove_identities(
    vertices: &mut [Vertex],
    inputs: &mut [VertexId],
    outputs: &mut [VertexId],
    sinks: &mut [VertexId],
) {
    // Resolve chains of identities to their first non-identity source.
    let target: Vec<VertexId> = (0..vertices.len() as u32)
        .map(|v| {
            let mut t = VertexId(v);
            while matches!(vertices[t.ix()].op, Op::Identity) {
                t = vertices[t.ix()].inputs[0];
            }
            t
        })
        .collect();
    let fix = |id: &mut VertexId| *id = target[id.ix()];
    for v in vertices.iter_mut() {
        v.inputs.iter_mut().for_each(fix);
        if let Op::Recursive(RecursiveOp {
            imports,
            feedback,
            result,
            ..
        }) = &mut v.op
        {
            imports.iter_mut().for_each(fix);
            fix(feedback);
            fix(result);
        }
    }
    inputs.iter_mut().for_each(fix);
    outputs.iter_mut().for_each(fix);
    sinks.iter_mut().for_each(fix);
    for v in vertices.iter_mut() {
        if matches!(v.op, Op::Identity) {
            v.op = Op::Removed;
        }
    }
}

/// Step 4: what outputs and caches depend on.
fn live_vertices(vertices: &[Vertex], outputs: &[VertexId], sinks: &[VertexId]) -> Vec<bool> {
    let mut live = vec![false; vertices.len()];
    let mut stack: Vec<VertexId> = outputs.iter().chain(sinks).copied().collect();
    while let Some(v) = stack.pop() {
        if std::mem::replace(&mut live[v.ix()], true) {
            continue;
        }
        let vertex = &vertices[v.ix()];
        stack.extend(vertex.inputs.iter().copied());
        if let Op::Recursive(r) = &vertex.op {
            stack.push(r.result);
            stack.push(r.feedback);
            stack.extend(r.imports.iter().copied());
        }
    }
    live
}

fn states_of(v: &Vertex) -> Vec<StateId> {
    let mut s = v.states.clone();
    match v.op {
        Op::Delay(state) | Op::Integrate { state, .. } => s.push(state),
        _ => {}
    }
    s
}

/// Step 5: one final state per used declaration, integrals of the same
/// stream merged; any other repeated path is an error.
fn share_states(
    decls: &[crate::builder::StateDecl],
    vertices: &[Vertex],
    live: &[bool],
) -> Result<(Vec<StateSpec>, Vec<StateId>), GraphError> {
    let mut used = vec![false; decls.len()];
    for (v, vertex) in vertices.iter().enumerate() {
        if live[v] {
            for s in states_of(vertex) {
                used[s.index()] = true;
            }
        }
    }
    let mut by_path: HashMap<crate::Path, usize> = HashMap::new();
    let mut finals: Vec<(crate::Path, Arc<dyn Codec>, usize)> = Vec::new();
    let mut final_of = vec![StateId(u32::MAX); decls.len()];
    for (i, decl) in decls.iter().enumerate() {
        if !used[i] {
            continue;
        }
        match by_path.get(&decl.path) {
            Some(&f) => {
                let first = &decls[finals[f].2];
                let merged = if first.shareable && decl.shareable {
                    finals[f].1.merged(&*decl.codec)
                } else {
                    None
                };
                let Some(codec) = merged else {
                    return Err(GraphError::DuplicatePath {
                        path: decl.path.clone(),
                        first: first.at,
                        second: decl.at,
                    });
                };
                finals[f].1 = codec;
                final_of[i] = StateId(f as u32);
            }
            None => {
                by_path.insert(decl.path.clone(), finals.len());
                final_of[i] = StateId(finals.len() as u32);
                finals.push((decl.path.clone(), Arc::clone(&decl.codec), i));
            }
        }
    }
    check_table_names(&finals, decls)?;
    let specs = finals
        .into_iter()
        .map(|(path, codec, _)| StateSpec::new(path, codec))
        .collect();
    Ok((specs, final_of))
}

/// Refuses two states that a SQL store would keep in one table. Their
/// names depend on the prefix's length (a long name is cut to fit), and a
/// clean name can equal another's replaced-and-hashed one at one length and
/// not at another, so every length a store accepts is checked.
fn check_table_names(
    finals: &[(crate::Path, Arc<dyn Codec>, usize)],
    decls: &[crate::builder::StateDecl],
) -> Result<(), GraphError> {
    for prefix_len in 1..=crate::MAX_TABLE_PREFIX {
        let mut seen: HashMap<String, &crate::Path> = HashMap::with_capacity(finals.len());
        for (path, codec, decl) in finals {
            let table = crate::table_ident(path.as_str(), prefix_len);
            // A cache's SQL view takes a name too, and so do the table's
            // own indexes.
            let view = codec.columns().map(|_| crate::view_ident(&table));
            let indexes = crate::index_idents(&table, codec.kind());
            for name in std::iter::once(table).chain(view).chain(indexes) {
                if let Some(first) = seen.get(&name) {
                    return Err(GraphError::TableNameCollision {
                        first: (*first).clone(),
                        second: path.clone(),
                        table: name,
                        at: decls[*decl].at,
                    });
                }
                seen.insert(name, path);
            }
        }
    }
    Ok(())
}

/// For each vertex, the recursive vertex whose body it is in (if any).
fn body_membership(
    vertices: &[Vertex],
    scopes: &[crate::vertex::ScopeInfo],
) -> Vec<Option<VertexId>> {
    let mut rec_of_scope: HashMap<u32, VertexId> = HashMap::new();
    for (r, v) in vertices.iter().enumerate() {
        if let Op::Recursive(rop) = &v.op {
            rec_of_scope.insert(rop.scope.0, VertexId(r as u32));
        }
    }
    vertices
        .iter()
        .map(|v| {
            let mut s = Some(v.scope);
            while let Some(id) = s {
                if let Some(r) = rec_of_scope.get(&id.0) {
                    return Some(*r);
                }
                s = scopes[id.0 as usize].parent;
            }
            None
        })
        .collect()
}

/// A topological order of the live vertices selected by `member`, ties in
/// creation order. Delay inputs and recursion feedback are back edges
/// (z⁻¹ needs its input only at the end of the iteration), and edges from
/// outside the selection are already satisfied.
fn topo_order(
    vertices: &[Vertex],
    live: &[bool],
    member: impl Fn(VertexId) -> bool,
) -> Vec<VertexId> {
    let n = vertices.len();
    let selected: Vec<bool> = (0..n)
        .map(|v| live[v] && member(VertexId(v as u32)))
        .collect();
    let deps = |v: usize| -> Vec<VertexId> {
        match vertices[v].op {
            Op::Delay(_) | Op::Feedback | Op::Import | Op::Removed => Vec::new(),
            _ => vertices[v]
                .inputs
                .iter()
                .copied()
                .filter(|i| selected[i.ix()])
                .collect(),
        }
    };
    let mut indegree = vec![0usize; n];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for v in 0..n {
        if !selected[v] {
            continue;
        }
        for d in deps(v) {
            indegree[v] += 1;
            consumers[d.ix()].push(v);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n)
        .filter(|v| selected[*v] && indegree[*v] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::new();
    while let Some(Reverse(v)) = ready.pop() {
        order.push(VertexId(v as u32));
        for &c in &consumers[v] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(Reverse(c));
            }
        }
    }
    order
}

/// Step 6: who writes each state, and after which scheduled vertex.
fn write_points(
    vertices: &[Vertex],
    live: &[bool],
    final_of: &[StateId],
    n_states: usize,
    pos_of: &[usize],
    n_positions: usize,
) -> (Vec<StateWriter>, Vec<Vec<StateId>>) {
    let mut writers: Vec<StateWriter> = (0..n_states).map(|_| StateWriter::Operator).collect();
    let mut last = vec![0usize; n_states];
    let mut touch = |state: usize, pos: usize| last[state] = last[state].max(pos);
    for (v, vertex) in vertices.iter().enumerate() {
        if !live[v] {
            continue;
        }
        for s in states_of(vertex) {
            touch(final_of[s.index()].index(), pos_of[v]);
        }
        match vertex.op {
            Op::Integrate { state, .. } => {
                let f = final_of[state.index()];
                writers[f.index()] = StateWriter::Integral {
                    delta: vertex.inputs[0],
                };
                touch(f.index(), pos_of[vertex.inputs[0].ix()]);
            }
            Op::Delay(state) => {
                let f = final_of[state.index()];
                writers[f.index()] = StateWriter::Delay {
                    delay: VertexId(v as u32),
                    decl: state,
                };
                touch(f.index(), pos_of[vertex.inputs[0].ix()]);
            }
            _ => {}
        }
        // A consumer of a lazy state handle reads that state.
        for i in &vertex.inputs {
            if let Op::Integrate { state, .. } | Op::Delay(state) = vertices[i.ix()].op {
                touch(final_of[state.index()].index(), pos_of[v]);
            }
        }
    }
    let mut writes_after: Vec<Vec<StateId>> = vec![Vec::new(); n_positions];
    for (s, pos) in last.into_iter().enumerate() {
        if pos < n_positions {
            writes_after[pos].push(StateId(s as u32));
        }
    }
    (writers, writes_after)
}

/// For each vertex, the last position reading its value: its consumers, and
/// the consumers of an integral whose delta it is (they read it through the
/// state handle).
fn last_reads(
    vertices: &[Vertex],
    live: &[bool],
    pos_of: &[usize],
    final_of: &[StateId],
) -> Vec<usize> {
    let mut last = vec![0usize; vertices.len()];
    // A delta feeding several states is copied for each, never handed over.
    let mut fed: HashMap<VertexId, BTreeSet<StateId>> = HashMap::new();
    for (v, vertex) in vertices.iter().enumerate() {
        if let (true, Op::Integrate { state, .. }) = (live[v], &vertex.op) {
            fed.entry(vertex.inputs[0])
                .or_default()
                .insert(final_of[state.index()]);
        }
    }
    for (delta, states) in fed {
        if states.len() > 1 {
            last[delta.ix()] = usize::MAX;
        }
    }
    for (v, vertex) in vertices.iter().enumerate() {
        if !live[v] {
            continue;
        }
        for i in &vertex.inputs {
            last[i.ix()] = last[i.ix()].max(pos_of[v]);
            if let Op::Integrate { delayed: false, .. } = vertices[i.ix()].op {
                let delta = vertices[i.ix()].inputs[0];
                last[delta.ix()] = last[delta.ix()].max(pos_of[v]);
            }
        }
    }
    last
}

/// For each vertex, whether it is an output that may take its input's value
/// instead of copying it: it is the input's last reader, and every state
/// written from that value is written before the output runs. (An output
/// of a set-valued aggregate would otherwise copy every set.)
fn outputs_taking_input(
    vertices: &[Vertex],
    outputs: &[VertexId],
    pos_of: &[usize],
    last_read: &[usize],
    writers: &[StateWriter],
    writes_after: &[Vec<StateId>],
) -> Vec<bool> {
    let mut takes = vec![false; vertices.len()];
    for &o in outputs {
        let vertex = &vertices[o.ix()];
        let ([input], Op::Func(_)) = (vertex.inputs.as_slice(), &vertex.op) else {
            continue;
        };
        let at = pos_of[o.ix()];
        let written_before = writes_after.iter().enumerate().all(|(pos, states)| {
            pos < at
                || states.iter().all(|s| match &writers[s.index()] {
                    StateWriter::Integral { delta } => delta != input,
                    StateWriter::Delay { delay, .. } => vertices[delay.ix()].inputs[0] != *input,
                    StateWriter::Operator => true,
                })
        });
        takes[o.ix()] = vertex.label == "output" && last_read[input.ix()] == at && written_before;
    }
    takes
}

/// Each final state's definition, from those of the declarations merged
/// into it; and each cache handle's.
fn set_definitions(
    states: &[StateSpec],
    final_of: &[StateId],
    declared: Vec<Option<String>>,
    caches: &[(StateId, Arc<std::sync::OnceLock<String>>)],
) {
    let mut parts: Vec<Vec<String>> = vec![Vec::new(); states.len()];
    for (decl, def) in declared.into_iter().enumerate() {
        let f = final_of[decl];
        if let (Some(def), Some(p)) = (def, parts.get_mut(f.index())) {
            p.push(def);
        }
    }
    let defs: Vec<String> = parts.into_iter().map(crate::definition::combined).collect();
    for (spec, def) in states.iter().zip(&defs) {
        let _ = spec.definition.set(def.clone());
    }
    for (decl, cell) in caches {
        if let Some(def) = final_of.get(decl.index()).and_then(|f| defs.get(f.index())) {
            let _ = cell.set(def.clone());
        }
    }
}

/// Each final state's path and definition under the older names, where
/// they differ from today's.
fn set_before(
    states: &[StateSpec],
    final_of: &[StateId],
    declared: Vec<Option<String>>,
    renames: &[(String, String)],
) {
    let mut parts: Vec<Vec<String>> = vec![Vec::new(); states.len()];
    for (decl, def) in declared.into_iter().enumerate() {
        if let (Some(def), Some(p)) = (def, parts.get_mut(final_of[decl].index())) {
            p.push(def);
        }
    }
    for (spec, defs) in states.iter().zip(parts) {
        let def = crate::definition::combined(defs);
        let path = crate::Path::new(&crate::rename::before(spec.path().as_str(), renames));
        if def != spec.definition() || path != *spec.path() {
            let _ = spec.before.set((path, def));
        }
    }
}

/// A short hash of the states' paths and shapes: a store opened for one
/// graph refuses to run another.
fn fingerprint(states: &[StateSpec]) -> String {
    let mut text = String::new();
    for s in states {
        text.push_str(s.path().as_str());
        text.push('\t');
        text.push_str(&s.shape());
        text.push('\n');
    }
    format!("{:016x}", identity_of(text.as_bytes()) as u64)
}
