//! Rendering a graph as SVG, laid out in Rust (layout-rs), so that a
//! picture needs no Graphviz binary; optionally with a profile's and the
//! states' sizes drawn onto it.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::style::{LineStyleKind, StyleAttr};
use layout::std_shapes::render::get_shape_size;
use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
use layout::topo::layout::VisualGraph;

use crate::dot::short_type;
use crate::graph::GraphInner;
use crate::profile::duration;
use crate::vertex::{Op, VertexId};
use crate::{Graph, Profile, StateSizes};

const FONT: usize = 12;

impl Graph {
    /// The graph as an SVG picture: what [`to_dot`](Self::to_dot) shows
    /// (one box per vertex with its operator, path and value type; stored
    /// states with their state's path, drawn with rounded corners; `z⁻¹`
    /// edges dashed; a vertex inside a group or a recursion names its
    /// scope), laid out in Rust by layout-rs: no Graphviz needed.
    ///
    /// ```
    /// use stepping_graph::{Graph, GraphError};
    /// let (graph, _) = Graph::build(|q| {
    ///     let (input, n) = q.input::<i64>("numbers")?;
    ///     Ok((input, q.output("same", n)?))
    /// })?;
    /// let svg = graph.to_svg();
    /// assert!(svg.contains("<svg") && svg.contains("numbers"));
    /// # Ok::<(), GraphError>(())
    /// ```
    pub fn to_svg(&self) -> String {
        self.to_svg_annotated(None, None)
    }

    /// [`to_svg`](Self::to_svg), with each vertex's share of `profile`
    /// drawn onto it (time and share of the total, calls, rows in and out,
    /// state rows read and written; the busiest vertices outlined thicker
    /// and redder) and each stored state's rows from `sizes`.
    pub fn to_svg_annotated(
        &self,
        profile: Option<&Profile>,
        sizes: Option<&StateSizes>,
    ) -> String {
        let g: &GraphInner = &self.inner;
        // layout-rs asserts on graphs it cannot lay out; a picture is not
        // worth a panic, so such a graph gets a picture that says so.
        catch_unwind(AssertUnwindSafe(|| render(g, profile, sizes))).unwrap_or_else(|_| {
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\">\
                 <text x=\"10\" y=\"25\">this graph ({} vertices) could not be laid out; \
                 see Graph::to_dot</text></svg>\n",
                g.order.len()
            )
        })
    }
}

/// The live vertices (the schedule and the recursion bodies), in order.
fn live(g: &GraphInner) -> Vec<VertexId> {
    let mut live: Vec<VertexId> = g.order.clone();
    for v in &g.order {
        if let Op::Recursive(r) = &g.vertices[v.ix()].op {
            live.extend(r.order.iter().copied());
        }
    }
    live
}

fn color(hex: u32) -> Color {
    Color::new((hex << 8) | 0xff)
}

fn render(g: &GraphInner, profile: Option<&Profile>, sizes: Option<&StateSizes>) -> String {
    let live = live(g);
    let mut vg = VisualGraph::new(Orientation::TopToBottom);
    if live.is_empty() {
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"></svg>\n"
            .to_owned();
    }
    let measured: HashMap<VertexId, &crate::VertexProfile> = profile
        .map(|p| p.vertices.iter().map(|v| (v.vertex, v)).collect())
        .unwrap_or_default();
    let total = profile.map_or(0.0, |p| p.total.as_secs_f64().max(1e-12));
    let mut handles = HashMap::new();
    for &v in &live {
        let vertex = &g.vertices[v.ix()];
        let mut lines = vec![
            vertex.label.to_owned(),
            vertex.path.to_string(),
            short_type(vertex.ty),
        ];
        let states: Vec<&crate::StateSpec> = match &vertex.op {
            Op::Integrate { state, .. } | Op::Delay(state) => {
                vec![&g.states[g.final_of[state.index()].index()]]
            }
            _ => vertex
                .states
                .iter()
                .map(|s| &g.states[g.final_of[s.index()].index()])
                .collect(),
        };
        for s in &states {
            let rows = sizes
                .and_then(|z| z.rows(s.path().as_str()))
                .map_or_else(String::new, |n| format!(" ({n} rows)"));
            lines.push(format!("state: {}{rows}", s.path()));
        }
        if vertex.scope.0 != 0 {
            let info = &g.scopes[vertex.scope.0 as usize];
            let kind = if info.recursive {
                "recursion"
            } else {
                "per group"
            };
            lines.push(format!("in {kind}: {}", info.label));
        }
        if g.outputs.contains(&v) {
            lines.push("(output)".to_owned());
        }
        let (fill, rounded) = match &vertex.op {
            Op::Input(_) => (0xd5f5e3, 0),
            Op::Integrate { .. } | Op::Delay(_) => (0xfdebd0, 15),
            Op::Sink => (0xd6eaf8, 0),
            Op::Recursive(_) => (0xe8daef, 0),
            _ if !vertex.states.is_empty() => (0xfdebd0, 15),
            _ => (0xffffff, 0),
        };
        let mut outline = (color(0x000000), 1);
        if let Some(m) = measured.get(&v) {
            let share = (m.time + m.write_time).as_secs_f64() / total;
            lines.push(format!(
                "{} ({:.1}%), {} call(s)",
                duration(m.time + m.write_time),
                share * 100.0,
                m.calls
            ));
            lines.push(format!("rows {} in, {} out", m.rows_in, m.rows_out));
            if m.state_rows_read > 0 || m.state_rows_written > 0 {
                lines.push(format!(
                    "state rows {} read, {} written",
                    m.state_rows_read, m.state_rows_written
                ));
            }
            if !m.nested && share >= 0.05 {
                // Thicker and redder with the share of the time.
                outline = (color(0xc0392b), 2 + (share * 8.0) as usize);
            }
        }
        let shape = ShapeKind::Box(lines.join("\n"));
        let dir = Orientation::TopToBottom.flip();
        let size = get_shape_size(dir, &shape, FONT, false);
        let look = StyleAttr::new(outline.0, outline.1, Some(color(fill)), rounded, FONT);
        handles.insert(v, vg.add_node(Element::create(shape, look, dir, size)));
    }
    let edge_look = StyleAttr::new(color(0x333333), 1, None, 0, FONT - 2);
    for &v in &live {
        let vertex = &g.vertices[v.ix()];
        let back = matches!(vertex.op, Op::Delay(_) | Op::Feedback);
        let (style, text) = if back {
            (LineStyleKind::Dashed, "z⁻¹")
        } else {
            (LineStyleKind::Normal, "")
        };
        for i in &vertex.inputs {
            if let (Some(&from), Some(&to)) = (handles.get(i), handles.get(&v)) {
                let arrow = Arrow::new(
                    LineEndKind::None,
                    LineEndKind::Arrow,
                    style,
                    text,
                    &edge_look,
                    &None,
                    &None,
                );
                vg.add_edge(arrow, from, to);
            }
        }
        if let Op::Recursive(r) = &vertex.op
            && let (Some(&from), Some(&to)) = (handles.get(&r.result), handles.get(&v))
        {
            let arrow = Arrow::new(
                LineEndKind::None,
                LineEndKind::Arrow,
                LineStyleKind::Dotted,
                "fixed point",
                &edge_look,
                &None,
                &None,
            );
            vg.add_edge(arrow, from, to);
        }
    }
    let mut svg = SVGWriter::new();
    vg.do_it(false, false, false, &mut svg);
    let bottom = handles
        .values()
        .map(|h| vg.pos(*h).bbox(false).1.y)
        .fold(0.0_f64, f64::max);
    // Sizes are estimated at one em per character: a monospace font fits them.
    fit_height(
        &svg.finalize().replace("Times, serif", "monospace"),
        bottom + 20.0,
    )
}

/// `svg` with its height cut to `height` when taller: layout-rs grows the
/// picture's height with the length of each label's text (not its lines),
/// which leaves a tall empty margin under multi-line labels.
fn fit_height(svg: &str, height: f64) -> String {
    let tag = svg.find("<svg ").and_then(|start| {
        let end = start + svg[start..].find('>')? + 1;
        Some((start, end, fitted_svg_tag(&svg[start..end], height)?))
    });
    match tag {
        Some((start, end, fitted)) => format!("{}{fitted}{}", &svg[..start], &svg[end..]),
        None => svg.to_owned(),
    }
}

/// `<svg width="W" height="H" viewBox="0 0 W H" ...>` with `H` at most `height`.
fn fitted_svg_tag(line: &str, height: f64) -> Option<String> {
    let attr = |name: &str| -> Option<f64> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        line[start..].split('"').next()?.parse().ok()
    };
    let (width, old) = (attr("width")?, attr("height")?);
    let height = old.min(height);
    let rest = &line[line.find("xmlns")?..];
    Some(format!(
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" {rest}"
    ))
}
