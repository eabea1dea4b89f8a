//! Workflow pictures: the step graph (DAG) and the step timeline (Gantt), as plain SVG.
//!
//! Both are pure functions of their input, so the server renders them and the client hydrates
//! the very same markup: no browser API, no measuring of text, no randomness.
//!
//! **Graph layout** ([`layout`]) is a small layered ("Sugiyama") layout, left to right:
//!
//! 1. *Cycles*: a workflow should be acyclic, but the picture must not hang or panic on a bad
//!    definition. A depth-first search in input order finds the back edges; they are laid out
//!    reversed (the classic cycle-removal step) and drawn pointing the right way again.
//! 2. *Layers*: a step's column is the longest dependency path from a root (Kahn's algorithm
//!    over the now acyclic graph, so it always terminates).
//! 3. *Dummy points*: an edge spanning several columns gets one dummy vertex per intermediate
//!    column. A dummy takes a row slot like a step does, so the edge passes *between* the boxes
//!    of that column, never through one.
//! 4. *Order*: within a column, vertices are sorted by the barycenter of their neighbours in the
//!    previous column (sweeping right) or the next one (sweeping left); a few sweeps, and the
//!    order with the fewest crossings wins. Sorts are stable, ties keep the previous order, so
//!    the result is deterministic.
//! 5. *Coordinates*: fixed-size boxes, each column centred vertically on the tallest one.
//!
//! An edge is a polyline from the right side of its source to the left side of its target,
//! crossing each intermediate column horizontally at its dummy's row. Every segment either lies
//! in the gap between two columns or inside a dummy's row slot, so no edge can cross a box;
//! [`edge_path`] smooths the gap segments with cubic Béziers whose control points stay in the
//! segment's bounding box, which keeps that property.
//!
//! **Timeline** ([`Gantt`]): one row per step, one bar per attempt, on a common time scale
//! ([`gantt_scale`]) from the earliest start to the latest end; a bar still running ends at
//! `now`, which the caller passes in so server and client draw the same thing.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use domain::graph::{back_edges, longest_path_layers};

use crate::format::duration;

/// Width of a step box.
pub const NODE_W: f64 = 160.0;
/// Height of a step box.
pub const NODE_H: f64 = 40.0;
/// Horizontal gap between two columns (where the edges bend).
pub const COL_GAP: f64 = 80.0;
/// Vertical gap between two rows of a column.
pub const ROW_GAP: f64 = 16.0;
/// Blank space around the drawing.
pub const MARGIN: f64 = 16.0;
/// Rounds of (rightward, leftward) barycenter sweeps.
const SWEEPS: usize = 4;
/// How far a self-loop sticks out of the right side of its box (less than [`MARGIN`], so it
/// stays inside the drawing even in the last column).
const LOOP_OUT: f64 = 12.0;
/// Labels longer than this many characters are cut with an ellipsis (the box is 160 px wide).
const LABEL_CHARS: usize = 20;

/// A step of a workflow, as the graph needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DagNode {
    /// Step id, unique within the workflow (a repeated id is ignored after its first use).
    pub id: String,
    /// What the box shows.
    pub label: String,
    /// Ids of the steps this one waits for; unknown ids are ignored.
    pub depends_on: Vec<String>,
    /// The step's state in a run (`succeeded`, `running`, …), `None` outside a run.
    pub status: Option<String>,
}

/// A step's box in the drawing (top-left corner, size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedNode {
    pub id: String,
    pub label: String,
    pub status: Option<String>,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// A dependency edge, from the step depended on to the step that waits, as a polyline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedEdge {
    pub from: String,
    pub to: String,
    pub points: Vec<(f64, f64)>,
}

/// The laid-out graph: drawing size, boxes (in input order) and edges (in input order of the
/// dependant, then of its `depends_on`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    pub nodes: Vec<PlacedNode>,
    pub edges: Vec<PlacedEdge>,
}

/// How one dependency is routed through the layered graph.
enum Route {
    /// A step depending on itself: a small loop on the right of its box.
    SelfLoop(usize),
    /// Vertices from the upstream end (layer-wise) to the downstream one, dummies in between;
    /// `reversed` when the chain runs against the dependency (a back edge of a cycle).
    Chain {
        vertices: Vec<usize>,
        reversed: bool,
    },
}

/// Lays the steps out left to right; see the module documentation for the method.
/// Never panics and always terminates, whatever the dependencies (unknown ids, cycles,
/// duplicates).
pub fn layout(nodes: &[DagNode]) -> Layout {
    let steps = unique_steps(nodes);
    let n = steps.len();
    if n == 0 {
        return Layout {
            width: 2.0 * MARGIN,
            height: 2.0 * MARGIN,
            ..Layout::default()
        };
    }
    let edges = dependency_edges(&steps);

    // 1. Cycle removal, 2. layers.
    let back = back_edges(n, &edges);
    let dag: Vec<Option<(usize, usize)>> = edges
        .iter()
        .zip(&back)
        .map(|(&(u, v), &b)| match (u == v, b) {
            (true, _) => None,
            (false, false) => Some((u, v)),
            (false, true) => Some((v, u)),
        })
        .collect();
    let layer = longest_path_layers(n, dag.iter().flatten().copied());

    // 3. Dummy vertices, 4. order within layers.
    let chains = Chains::new(&layer, &edges, &dag, &back);
    let layers = layer.iter().max().map_or(0, |m| m + 1);
    let (order, pos) = order_layers(&chains, layers);

    // 5. Coordinates: column x, row y (columns centred on the tallest).
    let grid = Grid {
        slots: order.iter().map(Vec::len).max().unwrap_or(0),
        vertex_layer: &chains.vertex_layer,
        order: &order,
        pos: &pos,
    };
    let placed = steps
        .iter()
        .enumerate()
        .map(|(v, s)| PlacedNode {
            id: s.id.clone(),
            label: s.label.clone(),
            status: s.status.clone(),
            x: Grid::col_x(layer[v]),
            y: grid.top(v),
            w: NODE_W,
            h: NODE_H,
        })
        .collect();
    let placed_edges = edges
        .iter()
        .zip(&chains.routes)
        .map(|(&(u, v), route)| PlacedEdge {
            from: steps[u].id.clone(),
            to: steps[v].id.clone(),
            points: grid.route_points(route),
        })
        .collect();

    let slots = grid.slots;
    Layout {
        width: 2.0 * MARGIN + layers as f64 * NODE_W + layers.saturating_sub(1) as f64 * COL_GAP,
        height: 2.0 * MARGIN + slots as f64 * NODE_H + slots.saturating_sub(1) as f64 * ROW_GAP,
        nodes: placed,
        edges: placed_edges,
    }
}

/// The steps, first occurrence of each id.
fn unique_steps(nodes: &[DagNode]) -> Vec<&DagNode> {
    let mut seen: HashSet<&str> = HashSet::new();
    nodes
        .iter()
        .filter(|node| seen.insert(node.id.as_str()))
        .collect()
}

/// Dependencies as edges (dependency → dependant), known ids only, without repeats.
fn dependency_edges(steps: &[&DagNode]) -> Vec<(usize, usize)> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut edges: Vec<(usize, usize)> = Vec::new();
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    for (v, step) in steps.iter().enumerate() {
        for dep in &step.depends_on {
            if let Some(&u) = index.get(dep.as_str())
                && seen.insert((u, v))
            {
                edges.push((u, v));
            }
        }
    }
    edges
}

/// The layered graph with a dummy vertex wherever an edge crosses a layer: every vertex's
/// layer (the steps first), the adjacency between consecutive layers, and how each
/// dependency is routed.
struct Chains {
    vertex_layer: Vec<usize>,
    succ: Vec<Vec<usize>>,
    pred: Vec<Vec<usize>>,
    routes: Vec<Route>,
}

impl Chains {
    /// `edges` with their acyclic orientation `dag` (`None`: a self-loop) and `back` flags.
    fn new(
        layer: &[usize],
        edges: &[(usize, usize)],
        dag: &[Option<(usize, usize)>],
        back: &[bool],
    ) -> Chains {
        let n = layer.len();
        let mut c = Chains {
            vertex_layer: layer.to_vec(),
            succ: vec![Vec::new(); n],
            pred: vec![Vec::new(); n],
            routes: Vec::with_capacity(edges.len()),
        };
        for (&(u, _), (d, &reversed)) in edges.iter().zip(dag.iter().zip(back)) {
            let Some((a, b)) = *d else {
                c.routes.push(Route::SelfLoop(u));
                continue;
            };
            let mut vertices = vec![a];
            for l in layer[a] + 1..layer[b] {
                vertices.push(c.vertex_layer.len());
                c.vertex_layer.push(l);
                c.succ.push(Vec::new());
                c.pred.push(Vec::new());
            }
            vertices.push(b);
            for pair in vertices.windows(2) {
                c.succ[pair[0]].push(pair[1]);
                c.pred[pair[1]].push(pair[0]);
            }
            c.routes.push(Route::Chain { vertices, reversed });
        }
        c
    }
}

/// The vertices of each layer in drawing order (the fewest crossings the barycenter sweeps
/// found), and each vertex's index in its layer.
fn order_layers(chains: &Chains, layers: usize) -> (Vec<Vec<usize>>, Vec<usize>) {
    let Chains {
        vertex_layer,
        succ,
        pred,
        ..
    } = chains;
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (v, &l) in vertex_layer.iter().enumerate() {
        order[l].push(v);
    }
    let mut pos = vec![0usize; vertex_layer.len()];
    refresh_positions(&order, &mut pos);
    let mut best = order.clone();
    let mut best_crossings = crossings(&order, &pos, succ);
    for _ in 0..SWEEPS {
        if best_crossings == 0 {
            break;
        }
        for l in 1..layers {
            sort_by_barycenter(&mut order[l], pred, &pos);
            refresh_positions(&order[l..=l], &mut pos);
        }
        for l in (0..layers.saturating_sub(1)).rev() {
            sort_by_barycenter(&mut order[l], succ, &pos);
            refresh_positions(&order[l..=l], &mut pos);
        }
        let c = crossings(&order, &pos, succ);
        if c < best_crossings {
            best_crossings = c;
            best.clone_from(&order);
        }
    }
    let order = best;
    refresh_positions(&order, &mut pos);
    (order, pos)
}

/// Where the vertices of the ordered layers go: column x, row y, with the columns centred
/// on the tallest (`slots` rows).
struct Grid<'a> {
    slots: usize,
    vertex_layer: &'a [usize],
    order: &'a [Vec<usize>],
    pos: &'a [usize],
}

impl Grid<'_> {
    fn col_x(l: usize) -> f64 {
        MARGIN + l as f64 * (NODE_W + COL_GAP)
    }

    fn top(&self, v: usize) -> f64 {
        let pitch = NODE_H + ROW_GAP;
        let l = self.vertex_layer[v];
        MARGIN
            + (self.slots - self.order[l].len()) as f64 * pitch / 2.0
            + self.pos[v] as f64 * pitch
    }

    fn mid(&self, v: usize) -> f64 {
        self.top(v) + NODE_H / 2.0
    }

    /// The polyline of a routed dependency.
    fn route_points(&self, route: &Route) -> Vec<(f64, f64)> {
        match route {
            Route::SelfLoop(s) => {
                let (x, y) = (Grid::col_x(self.vertex_layer[*s]) + NODE_W, self.top(*s));
                vec![
                    (x, y + NODE_H / 3.0),
                    (x + LOOP_OUT, y + NODE_H / 3.0),
                    (x + LOOP_OUT, y + 2.0 * NODE_H / 3.0),
                    (x, y + 2.0 * NODE_H / 3.0),
                ]
            }
            Route::Chain { vertices, reversed } => {
                let mut pts = Vec::with_capacity(2 * vertices.len());
                if let (Some(&first), Some(&last)) = (vertices.first(), vertices.last()) {
                    pts.push((
                        Grid::col_x(self.vertex_layer[first]) + NODE_W,
                        self.mid(first),
                    ));
                    for &d in &vertices[1..vertices.len() - 1] {
                        let x = Grid::col_x(self.vertex_layer[d]);
                        pts.push((x, self.mid(d)));
                        pts.push((x + NODE_W, self.mid(d)));
                    }
                    pts.push((Grid::col_x(self.vertex_layer[last]), self.mid(last)));
                }
                if *reversed {
                    pts.reverse();
                }
                pts
            }
        }
    }
}

/// `pos[v]` = index of `v` in its layer, for the given layers.
fn refresh_positions(order: &[Vec<usize>], pos: &mut [usize]) {
    for layer in order {
        for (i, &v) in layer.iter().enumerate() {
            pos[v] = i;
        }
    }
}

/// Sorts a layer by the mean position of each vertex's neighbours in the adjacent layer; a
/// vertex without neighbours there keeps its own position as key. Stable.
fn sort_by_barycenter(layer: &mut [usize], neighbours: &[Vec<usize>], pos: &[usize]) {
    let mut keyed: Vec<(f64, usize)> = layer
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ns = &neighbours[v];
            let key = if ns.is_empty() {
                i as f64
            } else {
                ns.iter().map(|&w| pos[w] as f64).sum::<f64>() / ns.len() as f64
            };
            (key, v)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (slot, (_, v)) in layer.iter_mut().zip(keyed) {
        *slot = v;
    }
}

/// Number of pairs of edges that cross between adjacent layers.
fn crossings(order: &[Vec<usize>], pos: &[usize], succ: &[Vec<usize>]) -> usize {
    let mut total = 0;
    for layer in order {
        let ends: Vec<(usize, usize)> = layer
            .iter()
            .flat_map(|&v| succ[v].iter().map(move |&w| (pos[v], pos[w])))
            .collect();
        for (i, a) in ends.iter().enumerate() {
            total += ends[i + 1..]
                .iter()
                .filter(|b| (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1))
                .count();
        }
    }
    total
}

/// SVG path data for an edge: straight where the polyline is horizontal (through a column),
/// an S-curve across each gap between columns. The control points of each curve lie in the
/// bounding box of its segment, so the curve stays where the segment was.
pub fn edge_path(points: &[(f64, f64)]) -> String {
    let mut d = String::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        if i == 0 {
            d.push_str(&format!("M{x:.1},{y:.1}"));
            continue;
        }
        let (px, py) = points[i - 1];
        if (py - y).abs() < 0.05 || (px - x).abs() < 0.05 {
            d.push_str(&format!(" L{x:.1},{y:.1}"));
        } else {
            let mx = (px + x) / 2.0;
            d.push_str(&format!(" C{mx:.1},{py:.1} {mx:.1},{y:.1} {x:.1},{y:.1}"));
        }
    }
    d
}

/// `s` cut to `max` characters, the last one an ellipsis, when longer.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A status as a CSS class token: lower-case letters, digits and dashes only, `none` if empty.
fn class_token(status: Option<&str>) -> String {
    let token: String = status
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if token.is_empty() {
        "none".into()
    } else {
        token
    }
}

/// The workflow's steps as a graph, left to right, each box coloured by its status
/// (`status-{status}`, `status-none` outside a run); `selected` marks one step (`selected`
/// class and `aria-current`).
#[component]
pub fn DagSvg(
    nodes: Vec<DagNode>,
    #[prop(optional, into)] selected: Option<String>,
) -> impl IntoView {
    let l = layout(&nodes);
    let edges = l
        .edges
        .into_iter()
        .map(|e| {
            view! {
                <path class="dag-edge" d=edge_path(&e.points) marker-end="url(#dag-arrow)"
                    data-from=e.from data-to=e.to/>
            }
        })
        .collect_view();
    let boxes = l
        .nodes
        .into_iter()
        .map(|n| {
            let is_selected = selected.as_deref() == Some(n.id.as_str());
            let class = format!(
                "dag-node status-{}{}",
                class_token(n.status.as_deref()),
                if is_selected { " selected" } else { "" }
            );
            let status = n.status.clone().unwrap_or_else(|| "–".into());
            view! {
                <g class=class data-step=n.id aria-current=is_selected.then_some("true")>
                    <title>{n.label.clone()}</title>
                    <rect x=n.x y=n.y width=n.w height=n.h rx="6"/>
                    <text class="dag-label" x=n.x + 10.0 y=n.y + 17.0>{truncate(&n.label, LABEL_CHARS)}</text>
                    <text class="dag-status" x=n.x + 10.0 y=n.y + 32.0>{status}</text>
                </g>
            }
        })
        .collect_view();
    view! {
        <svg class="dag" role="img" aria-label="Workflow graph"
            viewBox=format!("0 0 {} {}", l.width, l.height) width=l.width height=l.height>
            <defs>
                <marker id="dag-arrow" viewBox="0 0 10 10" refX="10" refY="5"
                    markerWidth="8" markerHeight="8" orient="auto">
                    <path d="M0,0 L10,5 L0,10 z"/>
                </marker>
            </defs>
            <g class="dag-edges">{edges}</g>
            <g class="dag-nodes">{boxes}</g>
        </svg>
    }
}

/// One attempt of a step on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanttBar {
    /// The row (step id); several bars in one row are several attempts.
    pub row: String,
    /// What the bar's tooltip names.
    pub label: String,
    /// `succeeded`, `failed`, `running`, … (the bar's colour).
    pub status: String,
    pub start: DateTime<Utc>,
    /// `None` while running: the bar ends at `now`.
    pub end: Option<DateTime<Utc>>,
}

/// The timeline's scale: its start (earliest bar start) and its length in milliseconds up to
/// the latest end (a running bar ends at `now`; an end before its start counts as the start).
/// At least 1 ms, so it can be divided by; `(now, 1)` without bars.
pub fn gantt_scale(bars: &[GanttBar], now: DateTime<Utc>) -> (DateTime<Utc>, i64) {
    let Some(start) = bars.iter().map(|b| b.start).min() else {
        return (now, 1);
    };
    let end = bars
        .iter()
        .map(|b| b.end.unwrap_or(now).max(b.start))
        .max()
        .unwrap_or(start);
    (start, (end - start).num_milliseconds().max(1))
}

/// Tick offsets (ms) for a timeline of `total_ms`: 0 and every multiple of a round step
/// (1, 2 or 5 × 10ⁿ ms) up to the end; at most five.
pub fn gantt_ticks(total_ms: i64) -> Vec<i64> {
    let total = total_ms.max(1);
    let raw = (total + 3) / 4;
    let mut magnitude = 1i64;
    while magnitude.saturating_mul(10) <= raw {
        magnitude *= 10;
    }
    let step = [1, 2, 5, 10]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10 * magnitude);
    (0..=total / step).map(|i| i * step).collect()
}

/// `ms` as seconds for the axis: "0 s", "1.5 s", "0.25 s", "12 s".
pub fn seconds_label(ms: i64) -> String {
    if ms % 1_000 == 0 {
        return format!("{} s", ms / 1_000);
    }
    let s = format!("{:.3}", ms as f64 / 1_000.0);
    format!("{} s", s.trim_end_matches('0').trim_end_matches('.'))
}

/// Clock time on the bar tooltips.
fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

/// The steps of a run on a time line: one row per step (first-appearance order), one bar per
/// attempt, coloured by status, with start, end and duration on hover. `now` ends the bars
/// still running; pass the same value on server and client.
#[component]
pub fn Gantt(bars: Vec<GanttBar>, now: DateTime<Utc>) -> impl IntoView {
    if bars.is_empty() {
        return view! { <p class="empty">"No step has started yet."</p> }.into_any();
    }
    const LABEL_W: f64 = 160.0;
    const CHART_W: f64 = 640.0;
    const ROW_H: f64 = 24.0;
    const BAR_H: f64 = 16.0;
    const AXIS_H: f64 = 24.0;
    const PAD: f64 = 8.0;

    let (start, total) = gantt_scale(&bars, now);
    let mut rows: Vec<&str> = Vec::new();
    for b in &bars {
        if !rows.contains(&b.row.as_str()) {
            rows.push(b.row.as_str());
        }
    }
    let x_of = |ms: i64| LABEL_W + ms.clamp(0, total) as f64 / total as f64 * CHART_W;
    let chart_h = rows.len() as f64 * ROW_H;
    let (width, height) = (LABEL_W + CHART_W + 2.0 * PAD, chart_h + AXIS_H);

    let labels = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let y = i as f64 * ROW_H + ROW_H / 2.0 + 4.0;
            view! {
                <text class="gantt-row" x=LABEL_W - PAD y=y text-anchor="end">
                    <title>{row.to_string()}</title>
                    {truncate(row, LABEL_CHARS)}
                </text>
            }
        })
        .collect_view();
    let rects = bars
        .iter()
        .map(|b| {
            let row = rows.iter().position(|r| *r == b.row).unwrap_or(0);
            let end = b.end.unwrap_or(now).max(b.start);
            let (from, to) = (
                (b.start - start).num_milliseconds(),
                (end - start).num_milliseconds(),
            );
            let x = x_of(from);
            let w = (x_of(to) - x).max(1.0);
            let title = format!(
                "{}: {}–{} ({})",
                b.label,
                clock(b.start),
                b.end.map_or_else(|| "now".to_string(), clock),
                duration((end - b.start).num_milliseconds())
            );
            view! {
                <rect class=format!("gantt-bar status-{}", class_token(Some(&b.status)))
                    data-row=b.row.clone() x=x y=row as f64 * ROW_H + (ROW_H - BAR_H) / 2.0
                    width=w height=BAR_H rx="3">
                    <title>{title}</title>
                </rect>
            }
        })
        .collect_view();
    let ticks = gantt_ticks(total)
        .into_iter()
        .map(|ms| {
            let x = x_of(ms);
            view! {
                <line class="gantt-tick" x1=x x2=x y1=0 y2=chart_h/>
                <text class="gantt-tick-label" x=x y=chart_h + AXIS_H - 8.0 text-anchor="middle">
                    {seconds_label(ms)}
                </text>
            }
        })
        .collect_view();
    view! {
        <svg class="gantt" role="img" aria-label="Step timeline"
            viewBox=format!("0 0 {width} {height}") width=width height=height>
            <g class="gantt-axis">{ticks}</g>
            <g class="gantt-rows">{labels}</g>
            <g class="gantt-bars">{rects}</g>
        </svg>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn node(id: &str, deps: &[&str]) -> DagNode {
        DagNode {
            id: id.into(),
            label: id.to_uppercase(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            status: None,
        }
    }

    fn placed<'a>(l: &'a Layout, id: &str) -> &'a PlacedNode {
        l.nodes.iter().find(|n| n.id == id).expect("node placed")
    }

    fn column(l: &Layout, id: &str) -> usize {
        ((placed(l, id).x - MARGIN) / (NODE_W + COL_GAP)).round() as usize
    }

    /// Whether segment p–q meets the closed rectangle (Liang–Barsky clipping).
    fn segment_hits_rect(p: (f64, f64), q: (f64, f64), r: &PlacedNode) -> bool {
        let (dx, dy) = (q.0 - p.0, q.1 - p.1);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        for (pk, qk) in [
            (-dx, p.0 - r.x),
            (dx, r.x + r.w - p.0),
            (-dy, p.1 - r.y),
            (dy, r.y + r.h - p.1),
        ] {
            if pk == 0.0 {
                if qk < 0.0 {
                    return false;
                }
            } else {
                let t = qk / pk;
                if pk < 0.0 {
                    t0 = t0.max(t);
                } else {
                    t1 = t1.min(t);
                }
            }
        }
        t0 <= t1
    }

    /// Every segment of every edge against every box the edge does not start or end at.
    fn assert_no_edge_crosses_a_box(l: &Layout) {
        for e in &l.edges {
            assert!(e.points.len() >= 2, "{e:?}");
            for seg in e.points.windows(2) {
                for n in l.nodes.iter().filter(|n| n.id != e.from && n.id != e.to) {
                    assert!(
                        !segment_hits_rect(seg[0], seg[1], n),
                        "edge {}→{} segment {:?} crosses {}",
                        e.from,
                        e.to,
                        seg,
                        n.id
                    );
                }
            }
        }
    }

    #[test]
    fn diamond_has_three_columns() {
        let l = layout(&[
            node("a", &[]),
            node("b", &["a"]),
            node("c", &["a"]),
            node("d", &["b", "c"]),
        ]);
        assert_eq!(["a", "b", "c", "d"].map(|id| column(&l, id)), [0, 1, 1, 2]);
        assert_eq!(l.edges.len(), 4);
        assert_eq!(l.width, 2.0 * MARGIN + 3.0 * NODE_W + 2.0 * COL_GAP);
        assert_no_edge_crosses_a_box(&l);
    }

    #[test]
    fn long_edges_go_around_the_boxes_in_between() {
        let l = layout(&[
            node("a", &[]),
            node("b", &["a"]),
            node("c", &["b"]),
            node("d", &["c", "a"]),
        ]);
        assert_eq!(["a", "b", "c", "d"].map(|id| column(&l, id)), [0, 1, 2, 3]);
        let long = l
            .edges
            .iter()
            .find(|e| e.from == "a" && e.to == "d")
            .expect("a→d");
        // Source, two points per intermediate column, target.
        assert_eq!(long.points.len(), 6);
        assert_no_edge_crosses_a_box(&l);
    }

    #[test]
    fn fan_out_of_fifty_stays_readable() {
        let mut nodes = vec![node("start", &[])];
        let middle: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
        nodes.extend(middle.iter().map(|m| node(m, &["start"])));
        let refs: Vec<&str> = middle.iter().map(String::as_str).collect();
        nodes.push(node("end", &refs));
        let l = layout(&nodes);
        assert_eq!(l.nodes.len(), 52);
        assert_eq!(l.edges.len(), 100);
        assert_eq!(column(&l, "start"), 0);
        assert_eq!(column(&l, "m17"), 1);
        assert_eq!(column(&l, "end"), 2);
        assert_eq!(l.height, 2.0 * MARGIN + 50.0 * NODE_H + 49.0 * ROW_GAP);
        assert_no_edge_crosses_a_box(&l);
        // No two boxes overlap.
        for (i, a) in l.nodes.iter().enumerate() {
            for b in &l.nodes[i + 1..] {
                let apart =
                    a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y;
                assert!(apart, "{} overlaps {}", a.id, b.id);
            }
        }
    }

    #[test]
    fn mixed_spans_never_cross_boxes() {
        // Several long edges over a wider graph, in a scrambled input order.
        let l = layout(&[
            node("f", &["e", "a", "c"]),
            node("a", &[]),
            node("x", &[]),
            node("b", &["a"]),
            node("c", &["b", "x"]),
            node("e", &["d", "x"]),
            node("d", &["c", "a"]),
            node("g", &["a", "b"]),
        ]);
        assert_no_edge_crosses_a_box(&l);
    }

    #[test]
    fn generated_graphs_never_cross_boxes() {
        // A fixed linear congruential generator: many irregular graphs, same every run.
        let mut seed: u64 = 42;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        for round in 0..300 {
            // Every third graph may depend on any step: cycles and self-loops included.
            let cyclic = round % 3 == 0;
            let n = 2 + next(30) as usize;
            let nodes: Vec<DagNode> = (0..n)
                .map(|i| {
                    let deps: Vec<String> = (0..next(4))
                        .filter(|_| i > 0 || cyclic)
                        .map(|_| format!("n{}", next(if cyclic { n } else { i } as u64)))
                        .collect();
                    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                    node(&format!("n{i}"), &deps)
                })
                .collect();
            let l = layout(&nodes);
            assert_eq!(l.nodes.len(), n);
            assert_no_edge_crosses_a_box(&l);
        }
    }

    #[test]
    fn layout_is_deterministic() {
        let nodes = [
            node("a", &[]),
            node("b", &["a"]),
            node("c", &["a", "b"]),
            node("d", &["a"]),
            node("e", &["c", "d", "a"]),
        ];
        let first = layout(&nodes);
        for _ in 0..5 {
            assert_eq!(layout(&nodes), first);
        }
    }

    #[test]
    fn cycles_unknown_and_repeated_ids_do_not_panic() {
        let l = layout(&[
            node("a", &["c", "ghost"]),
            node("b", &["a", "a"]),
            node("c", &["b"]),
            node("s", &["s"]),
            node("a", &["b"]),
        ]);
        assert_eq!(l.nodes.len(), 4);
        // a→b, b→c, c→a (the cycle), s→s; the ghost and the repeats are gone.
        assert_eq!(l.edges.len(), 4);
        assert!(l.edges.iter().all(|e| e.points.len() >= 2));
        assert_no_edge_crosses_a_box(&l);
        assert!(
            l.edges
                .iter()
                .flat_map(|e| &e.points)
                .all(|&(x, y)| { (0.0..=l.width).contains(&x) && (0.0..=l.height).contains(&y) })
        );
        assert_eq!(layout(&[]).nodes.len(), 0);
    }

    #[test]
    fn edge_paths_start_where_the_edge_starts() {
        assert_eq!(edge_path(&[]), "");
        assert_eq!(
            edge_path(&[(0.0, 0.0), (10.0, 20.0), (30.0, 20.0)]),
            "M0.0,0.0 C5.0,0.0 5.0,20.0 10.0,20.0 L30.0,20.0"
        );
        assert_eq!(truncate("short", 20), "short");
        assert_eq!(
            truncate("abcdefghijklmnopqrstuvwxyz", 20).chars().count(),
            20
        );
        assert_eq!(class_token(None), "none");
        assert_eq!(class_token(Some("Timed Out")), "timed-out");
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .expect("valid time")
            .with_timezone(&Utc)
            + TimeDelta::milliseconds(s)
    }

    fn bar(row: &str, start: i64, end: Option<i64>) -> GanttBar {
        GanttBar {
            row: row.into(),
            label: row.into(),
            status: "succeeded".into(),
            start: at(start),
            end: end.map(at),
        }
    }

    #[test]
    fn gantt_scale_spans_earliest_start_to_latest_end() {
        let now = at(9_000);
        assert_eq!(gantt_scale(&[], now), (now, 1));
        assert_eq!(
            gantt_scale(
                &[bar("b", 2_000, Some(3_000)), bar("a", 1_000, Some(2_500))],
                now
            ),
            (at(1_000), 2_000)
        );
        // A running bar ends at `now`.
        assert_eq!(
            gantt_scale(&[bar("a", 1_000, Some(2_000)), bar("b", 1_500, None)], now),
            (at(1_000), 8_000)
        );
        // Zero-length and inverted bars still give a usable scale.
        assert_eq!(
            gantt_scale(&[bar("a", 1_000, Some(1_000))], now),
            (at(1_000), 1)
        );
        assert_eq!(
            gantt_scale(&[bar("a", 1_000, Some(500))], now),
            (at(1_000), 1)
        );
    }

    #[test]
    fn gantt_ticks_are_round_seconds() {
        assert_eq!(gantt_ticks(3_000), vec![0, 1_000, 2_000, 3_000]);
        assert_eq!(gantt_ticks(6_000), vec![0, 2_000, 4_000, 6_000]);
        assert_eq!(gantt_ticks(1), vec![0, 1]);
        assert!(gantt_ticks(86_400_000).len() <= 5);
        assert_eq!(seconds_label(0), "0 s");
        assert_eq!(seconds_label(1_500), "1.5 s");
        assert_eq!(seconds_label(250), "0.25 s");
        assert_eq!(seconds_label(12_000), "12 s");
    }

    /// Rendering to HTML needs the `ssr` feature: `cargo test -p app --features ssr --lib dag`.
    #[cfg(feature = "ssr")]
    #[test]
    fn components_render_plain_svg() {
        let mut nodes = vec![node("a", &[]), node("b", &["a"])];
        nodes[1].label = "A rather long label for a single step".into();
        nodes[1].status = Some("running".into());
        let html = view! { <DagSvg nodes selected="b"/> }.to_html();
        assert!(html.contains(r#"aria-label="Workflow graph""#), "{html}");
        assert!(html.contains(r#"id="dag-arrow""#), "{html}");
        assert!(html.contains("status-none"), "{html}");
        assert!(html.contains("dag-node status-running selected"), "{html}");
        assert!(html.contains("A rather long label…"), "{html}");
        assert!(
            html.contains("<title>A rather long label for a single step</title>"),
            "{html}"
        );
        assert_eq!(html.matches(r#"class="dag-edge""#).count(), 1, "{html}");

        let bars = vec![
            bar("a", 0, Some(1_500)),
            bar("b", 1_500, None),
            bar("a", 2_000, Some(3_000)),
        ];
        let html = view! { <Gantt bars now=at(3_000)/> }.to_html();
        assert_eq!(
            html.matches("gantt-bar status-succeeded").count(),
            3,
            "{html}"
        );
        assert_eq!(html.matches(r#"class="gantt-row""#).count(), 2, "{html}");
        assert!(
            html.contains("a: 12:00:00.000–12:00:01.500 (1.5 s)"),
            "{html}"
        );
        assert!(html.contains("–now (1.5 s)"), "{html}");
        assert!(html.contains("0 s") && html.contains("3 s"), "{html}");
        let empty = view! { <Gantt bars=vec![] now=at(0)/> }.to_html();
        assert!(empty.contains("No step has started yet."), "{empty}");
    }
}
