//! Rendering a graph as Graphviz DOT.

use std::fmt::Write as _;

use crate::Graph;
use crate::graph::GraphInner;
use crate::vertex::{Op, VertexId};

/// `zset::set::ZSet<my_app::User>` → `ZSet<User>`.
pub(crate) fn short_type(ty: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    for c in ty.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(""));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(""));
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Graph {
    /// The graph in Graphviz DOT: one box per vertex (operator, path and
    /// value type), stored states as cylinders labelled with their state's
    /// path, grouped scopes and recursion bodies as clusters, and `z⁻¹`
    /// edges dashed. Render with `dot -Tsvg`, or see [`to_svg`](Self::to_svg)
    /// for a picture rendered here.
    pub fn to_dot(&self) -> String {
        let g: &GraphInner = &self.inner;
        let mut live: Vec<VertexId> = g.order.clone();
        for v in &g.order {
            if let Op::Recursive(r) = &g.vertices[v.ix()].op {
                live.extend(r.order.iter().copied());
            }
        }
        let mut out = String::from(
            "digraph stepping {\n  rankdir=TB;\n  node [fontname=\"monospace\" fontsize=10 shape=box];\n  edge [fontname=\"monospace\" fontsize=9];\n",
        );
        let mut by_scope: std::collections::BTreeMap<u32, Vec<VertexId>> = Default::default();
        for &v in &live {
            by_scope
                .entry(g.vertices[v.ix()].scope.0)
                .or_default()
                .push(v);
        }
        for (scope, members) in &by_scope {
            let info = &g.scopes[*scope as usize];
            if *scope != 0 {
                let kind = if info.recursive {
                    "recursion"
                } else {
                    "per group"
                };
                let _ = writeln!(
                    out,
                    "  subgraph cluster_{scope} {{\n    label=\"{kind}: {}\"; style=dashed;",
                    escape(&info.label)
                );
            }
            for &v in members {
                let vertex = &g.vertices[v.ix()];
                let ty = short_type(vertex.ty);
                let (shape, color, extra) = match &vertex.op {
                    Op::Input(_) => ("box", "#d5f5e3", String::new()),
                    Op::Integrate { state, .. } | Op::Delay(state) => {
                        let s = &g.states[g.final_of[state.index()].index()];
                        (
                            "cylinder",
                            "#fdebd0",
                            format!("\\nstate: {}", escape(s.path().as_str())),
                        )
                    }
                    Op::Sink => ("box", "#d6eaf8", String::new()),
                    Op::Recursive(_) => ("box3d", "#e8daef", String::new()),
                    _ if !vertex.states.is_empty() => {
                        let names: Vec<String> = vertex
                            .states
                            .iter()
                            .map(|s| {
                                escape(g.states[g.final_of[s.index()].index()].path().as_str())
                            })
                            .collect();
                        ("box", "#fdebd0", format!("\\nstate: {}", names.join(", ")))
                    }
                    _ => ("box", "#ffffff", String::new()),
                };
                let output = if g.outputs.contains(&v) {
                    "\\n(output)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  v{} [label=\"{}\\n{}\\n{}{}{}\" shape={shape} style=filled fillcolor=\"{color}\"];",
                    v.0,
                    vertex.label,
                    escape(vertex.path.as_str()),
                    escape(&ty),
                    extra,
                    output
                );
            }
            if *scope != 0 {
                out.push_str("  }\n");
            }
        }
        for &v in &live {
            let vertex = &g.vertices[v.ix()];
            let back = matches!(vertex.op, Op::Delay(_) | Op::Feedback);
            for i in &vertex.inputs {
                let style = if back {
                    " [style=dashed label=\"z⁻¹\"]"
                } else {
                    ""
                };
                let _ = writeln!(out, "  v{} -> v{}{style};", i.0, v.0);
            }
            if let Op::Recursive(r) = &vertex.op {
                let _ = writeln!(
                    out,
                    "  v{} -> v{} [label=\"fixed point\"];",
                    r.result.0, v.0
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::short_type;

    #[test]
    fn short_types_drop_module_paths() {
        assert_eq!(
            short_type("zset::set::ZSet<zset::pair::Pair<my::User, i64>>"),
            "ZSet<Pair<User, i64>>"
        );
        assert_eq!(short_type("i64"), "i64");
    }
}
