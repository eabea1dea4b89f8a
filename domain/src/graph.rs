//! Graph algorithms over numbered nodes, shared by the workflow rules (cycles, order, layers of
//! a definition) and the pages' DAG drawing (`app::dag`), which must cope with any input:
//! every function here terminates and never panics, cycles included.
use std::collections::{BTreeSet, VecDeque};

/// Nodes numbered 0..n; `deps[i]` lists (node i depends on, position in its dependency list).
pub struct Graph {
    deps: Vec<Vec<(usize, usize)>>,
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    pub fn new(deps: Vec<Vec<(usize, usize)>>) -> Graph {
        let mut dependents = vec![Vec::new(); deps.len()];
        for (i, edges) in deps.iter().enumerate() {
            for &(j, _) in edges {
                dependents[j].push(i);
            }
        }
        Graph { deps, dependents }
    }

    /// Nodes reachable from `start` along `next` (not `start` itself unless on a cycle).
    pub fn reach(&self, start: usize, next: impl Fn(usize) -> Vec<usize>) -> Vec<bool> {
        let mut seen = vec![false; self.deps.len()];
        let mut queue: VecDeque<usize> = next(start).into();
        while let Some(n) = queue.pop_front() {
            if !seen[n] {
                seen[n] = true;
                queue.extend(next(n));
            }
        }
        seen
    }

    pub fn ancestors(&self, i: usize) -> Vec<bool> {
        self.reach(i, |n| self.deps[n].iter().map(|&(j, _)| j).collect())
    }

    pub fn descendants(&self, i: usize) -> Vec<bool> {
        self.reach(i, |n| self.dependents[n].clone())
    }

    /// The shortest cycle through `s`, as edges (from, position in from's `dependsOn`).
    pub fn shortest_cycle_through(&self, s: usize) -> Option<Vec<(usize, usize)>> {
        let mut parent: Vec<Option<(usize, usize)>> = vec![None; self.deps.len()];
        let mut seen = vec![false; self.deps.len()];
        let mut queue = VecDeque::from([s]);
        seen[s] = true;
        while let Some(u) = queue.pop_front() {
            for &(v, k) in &self.deps[u] {
                if v == s {
                    let mut edges = vec![(u, k)];
                    let mut n = u;
                    while let Some((from, k)) = parent[n] {
                        edges.push((from, k));
                        n = from;
                    }
                    edges.reverse();
                    return Some(edges);
                }
                if !seen[v] {
                    seen[v] = true;
                    parent[v] = Some((u, k));
                    queue.push_back(v);
                }
            }
        }
        None
    }

    /// One cycle through every step on a cycle (each cycle starting at its first step not
    /// already on a reported one), in definition order.
    pub fn cycles(&self) -> Vec<Vec<(usize, usize)>> {
        let mut covered = vec![false; self.deps.len()];
        let mut found = Vec::new();
        for s in 0..self.deps.len() {
            if covered[s] {
                continue;
            }
            if let Some(cycle) = self.shortest_cycle_through(s) {
                for &(n, _) in &cycle {
                    covered[n] = true;
                }
                found.push(cycle);
            }
        }
        found
    }

    /// Kahn's algorithm, lowest index first among the ready; steps on cycles are left out.
    pub fn topological(&self) -> Vec<usize> {
        let mut missing: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..missing.len()).filter(|&i| missing[i] == 0).collect();
        let mut order = Vec::with_capacity(missing.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for &d in &self.dependents[n] {
                missing[d] -= 1;
                if missing[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        order
    }

    /// Each step's layer: the longest path (in edges) from a step without dependencies.
    pub fn layers(&self) -> Vec<usize> {
        let edges = self.deps.iter().enumerate();
        let edges = edges.flat_map(|(i, deps)| deps.iter().map(move |&(j, _)| (j, i)));
        longest_path_layers(self.deps.len(), edges)
    }
}

/// The edges a depth-first search (roots and children in input order) meets while their target
/// is still on the stack; reversing them leaves an acyclic graph. Self-loops count as back
/// edges. Iterative, so a long chain cannot overflow the stack.
pub fn back_edges(n: usize, edges: &[(usize, usize)]) -> Vec<bool> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (e, &(u, _)) in edges.iter().enumerate() {
        out[u].push(e);
    }
    // 0: not seen, 1: on the stack, 2: done.
    let mut state = vec![0u8; n];
    let mut back = vec![false; edges.len()];
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        state[root] = 1;
        let mut stack = vec![(root, 0usize)];
        while let Some(top) = stack.last_mut() {
            let (u, i) = *top;
            match out[u].get(i) {
                Some(&e) => {
                    top.1 += 1;
                    let v = edges[e].1;
                    match state[v] {
                        0 => {
                            state[v] = 1;
                            stack.push((v, 0));
                        }
                        1 => back[e] = true,
                        _ => {}
                    }
                }
                None => {
                    state[u] = 2;
                    stack.pop();
                }
            }
        }
    }
    back
}

/// Each vertex's layer: the length of the longest path reaching it (Kahn's algorithm). On an
/// acyclic graph every vertex is reached; should one not be, it keeps what it got so far.
pub fn longest_path_layers(n: usize, edges: impl Iterator<Item = (usize, usize)>) -> Vec<usize> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (a, b) in edges {
        out[a].push(b);
        indegree[b] += 1;
    }
    let mut layer = vec![0usize; n];
    let mut queue: VecDeque<usize> = (0..n).filter(|&v| indegree[v] == 0).collect();
    while let Some(a) = queue.pop_front() {
        for &b in &out[a] {
            layer[b] = layer[b].max(layer[a] + 1);
            indegree[b] -= 1;
            if indegree[b] == 0 {
                queue.push_back(b);
            }
        }
    }
    layer
}
