//! Minimum s–t cut by the Boykov–Kolmogorov max-flow algorithm ("An Experimental Comparison of
//! Min-Cut/Max-Flow Algorithms for Energy Minimization in Vision", PAMI 2004): two search trees grown from
//! the terminals, augmentation along the paths where they meet, adoption of orphans. Fast on the grid
//! graphs of image segmentation.

const NONE: u32 = u32::MAX;
const TERMINAL: u32 = u32::MAX - 1;
const ORPHAN: u32 = u32::MAX - 2;
const INFINITE_DIST: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Node {
    first: u32,
    /// The arc to the parent (from this node), or NONE / TERMINAL / ORPHAN.
    parent: u32,
    next_active: u32,
    ts: u32,
    dist: u32,
    is_sink: bool,
    /// Residual capacity to the terminals: > 0 towards the source, < 0 towards the sink.
    tr_cap: f64,
}

#[derive(Clone, Debug)]
struct Arc {
    head: u32,
    next: u32,
    r_cap: f64,
}

/// A graph with capacities on node–terminal and node–node edges.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    arcs: Vec<Arc>,
    flow: f64,
    active_first: u32,
    active_last: u32,
    orphans: Vec<u32>,
    time: u32,
}

/// Which side of the cut a node is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Sink,
}

impl Graph {
    pub fn new(nodes: usize, edges_hint: usize) -> Self {
        let node = Node { first: NONE, parent: NONE, next_active: NONE, ts: 0, dist: 0, is_sink: false, tr_cap: 0.0 };
        Graph {
            nodes: vec![node; nodes],
            arcs: Vec::with_capacity(2 * edges_hint),
            active_first: NONE,
            active_last: NONE,
            ..Default::default()
        }
    }

    /// Adds capacities from the source to `i` and from `i` to the sink.
    pub fn add_terminal(&mut self, i: usize, to_source: f64, to_sink: f64) {
        let n = &mut self.nodes[i];
        let (mut s, mut t) = (to_source, to_sink);
        if n.tr_cap > 0.0 {
            s += n.tr_cap;
        } else {
            t -= n.tr_cap;
        }
        self.flow += s.min(t);
        n.tr_cap = s - t;
    }

    /// Adds an edge `i → j` with capacity `cap` and `j → i` with `rev`.
    pub fn add_edge(&mut self, i: usize, j: usize, cap: f64, rev: f64) {
        let a = self.arcs.len() as u32;
        self.arcs.push(Arc { head: j as u32, next: self.nodes[i].first, r_cap: cap });
        self.nodes[i].first = a;
        self.arcs.push(Arc { head: i as u32, next: self.nodes[j].first, r_cap: rev });
        self.nodes[j].first = a + 1;
    }

    fn sister(a: u32) -> u32 {
        a ^ 1
    }

    fn set_active(&mut self, i: u32) {
        if self.nodes[i as usize].next_active == NONE {
            if self.active_last != NONE {
                self.nodes[self.active_last as usize].next_active = i;
            } else {
                self.active_first = i;
            }
            self.active_last = i;
            self.nodes[i as usize].next_active = i; // self-loop marks "in the queue, last"
        }
    }

    fn next_active(&mut self) -> Option<u32> {
        loop {
            let i = self.active_first;
            if i == NONE {
                return None;
            }
            let next = self.nodes[i as usize].next_active;
            if next == i {
                self.active_first = NONE;
                self.active_last = NONE;
            } else {
                self.active_first = next;
            }
            self.nodes[i as usize].next_active = NONE;
            if self.nodes[i as usize].parent != NONE {
                return Some(i);
            }
        }
    }

    /// Runs max-flow; returns the flow value (= the cut's capacity).
    pub fn maxflow(&mut self) -> f64 {
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            n.next_active = NONE;
            n.ts = 0;
            if n.tr_cap > 0.0 {
                n.is_sink = false;
                n.parent = TERMINAL;
                n.dist = 1;
            } else if n.tr_cap < 0.0 {
                n.is_sink = true;
                n.parent = TERMINAL;
                n.dist = 1;
            } else {
                n.parent = NONE;
                continue;
            }
            self.set_active(i as u32);
        }
        let mut current: Option<u32> = None;
        loop {
            let i = match current.filter(|&c| self.nodes[c as usize].parent != NONE) {
                Some(c) => c,
                None => match self.next_active() {
                    Some(n) => n,
                    None => break,
                },
            };
            current = None;
            let meeting = self.grow(i);
            self.time += 1;
            if let Some(a) = meeting {
                // Keep growing from this node after the augmentation.
                self.nodes[i as usize].next_active = i;
                current = Some(i);
                self.augment(a);
                self.adopt_orphans();
                if self.nodes[i as usize].next_active == i {
                    self.nodes[i as usize].next_active = NONE;
                }
            }
        }
        self.flow
    }

    /// Grows the tree of `i`; returns the arc (source side → sink side) where the trees meet.
    fn grow(&mut self, i: u32) -> Option<u32> {
        let iu = i as usize;
        let is_sink = self.nodes[iu].is_sink;
        let mut a = self.nodes[iu].first;
        while a != NONE {
            let cap = if is_sink { self.arcs[Self::sister(a) as usize].r_cap } else { self.arcs[a as usize].r_cap };
            if cap > 0.0 {
                let j = self.arcs[a as usize].head;
                let ju = j as usize;
                if self.nodes[ju].parent == NONE {
                    self.nodes[ju].is_sink = is_sink;
                    self.nodes[ju].parent = Self::sister(a);
                    self.nodes[ju].ts = self.nodes[iu].ts;
                    self.nodes[ju].dist = self.nodes[iu].dist + 1;
                    self.set_active(j);
                } else if self.nodes[ju].is_sink != is_sink {
                    return Some(if is_sink { Self::sister(a) } else { a });
                } else if self.nodes[ju].ts <= self.nodes[iu].ts && self.nodes[ju].dist > self.nodes[iu].dist {
                    // Shorten the path (the "distance heuristic").
                    self.nodes[ju].parent = Self::sister(a);
                    self.nodes[ju].ts = self.nodes[iu].ts;
                    self.nodes[ju].dist = self.nodes[iu].dist + 1;
                }
            }
            a = self.arcs[a as usize].next;
        }
        None
    }

    /// Pushes the bottleneck along source-root → a → sink-root.
    fn augment(&mut self, middle: u32) {
        let mut bottleneck = self.arcs[middle as usize].r_cap;
        // Source tree: from the tail of `middle` up.
        let mut i = self.arcs[Self::sister(middle) as usize].head;
        loop {
            let a = self.nodes[i as usize].parent;
            if a == TERMINAL {
                break;
            }
            bottleneck = bottleneck.min(self.arcs[Self::sister(a) as usize].r_cap);
            i = self.arcs[a as usize].head;
        }
        bottleneck = bottleneck.min(self.nodes[i as usize].tr_cap);
        // Sink tree: from the head of `middle` down.
        let mut i = self.arcs[middle as usize].head;
        loop {
            let a = self.nodes[i as usize].parent;
            if a == TERMINAL {
                break;
            }
            bottleneck = bottleneck.min(self.arcs[a as usize].r_cap);
            i = self.arcs[a as usize].head;
        }
        bottleneck = bottleneck.min(-self.nodes[i as usize].tr_cap);

        self.arcs[Self::sister(middle) as usize].r_cap += bottleneck;
        self.arcs[middle as usize].r_cap -= bottleneck;
        let mut i = self.arcs[Self::sister(middle) as usize].head;
        loop {
            let a = self.nodes[i as usize].parent;
            if a == TERMINAL {
                break;
            }
            self.arcs[a as usize].r_cap += bottleneck;
            self.arcs[Self::sister(a) as usize].r_cap -= bottleneck;
            if self.arcs[Self::sister(a) as usize].r_cap <= 0.0 {
                self.make_orphan(i);
            }
            i = self.arcs[a as usize].head;
        }
        self.nodes[i as usize].tr_cap -= bottleneck;
        if self.nodes[i as usize].tr_cap <= 0.0 {
            self.make_orphan(i);
        }
        let mut i = self.arcs[middle as usize].head;
        loop {
            let a = self.nodes[i as usize].parent;
            if a == TERMINAL {
                break;
            }
            self.arcs[Self::sister(a) as usize].r_cap += bottleneck;
            self.arcs[a as usize].r_cap -= bottleneck;
            if self.arcs[a as usize].r_cap <= 0.0 {
                self.make_orphan(i);
            }
            i = self.arcs[a as usize].head;
        }
        self.nodes[i as usize].tr_cap += bottleneck;
        if self.nodes[i as usize].tr_cap >= 0.0 {
            self.make_orphan(i);
        }
        self.flow += bottleneck;
    }

    fn make_orphan(&mut self, i: u32) {
        self.nodes[i as usize].parent = ORPHAN;
        self.orphans.push(i);
    }

    /// Whether `i` still reaches its terminal through valid parents (and the distance of that path).
    fn origin_distance(&mut self, start: u32) -> Option<u32> {
        let mut j = start;
        let mut d = 0u32;
        loop {
            let n = &self.nodes[j as usize];
            if n.ts == self.time {
                d = d.saturating_add(n.dist);
                break;
            }
            let a = n.parent;
            d += 1;
            if a == TERMINAL {
                self.nodes[j as usize].ts = self.time;
                self.nodes[j as usize].dist = 1;
                break;
            }
            if a == ORPHAN || a == NONE {
                return None;
            }
            j = self.arcs[a as usize].head;
        }
        // Mark the path with distances for later queries.
        let mut j = start;
        let mut dd = d;
        while self.nodes[j as usize].ts != self.time {
            self.nodes[j as usize].ts = self.time;
            self.nodes[j as usize].dist = dd;
            dd -= 1;
            j = self.arcs[self.nodes[j as usize].parent as usize].head;
        }
        Some(d)
    }

    fn adopt_orphans(&mut self) {
        while let Some(i) = self.orphans.pop() {
            let iu = i as usize;
            let is_sink = self.nodes[iu].is_sink;
            // Look for a new valid parent in the same tree.
            let mut best: Option<(u32, u32)> = None;
            let mut a = self.nodes[iu].first;
            while a != NONE {
                let cap = if is_sink { self.arcs[a as usize].r_cap } else { self.arcs[Self::sister(a) as usize].r_cap };
                if cap > 0.0 {
                    let j = self.arcs[a as usize].head;
                    let ju = j as usize;
                    if self.nodes[ju].is_sink == is_sink && self.nodes[ju].parent != NONE {
                        if let Some(d) = self.origin_distance(j) {
                            if best.is_none_or(|(_, bd)| d < bd) {
                                best = Some((a, d));
                            }
                        }
                    }
                }
                a = self.arcs[a as usize].next;
            }
            if let Some((a, d)) = best {
                self.nodes[iu].parent = a;
                self.nodes[iu].ts = self.time;
                self.nodes[iu].dist = d + 1;
                continue;
            }
            // No parent: the node becomes free; its children become orphans, neighbours re-activate.
            self.nodes[iu].ts = 0;
            self.nodes[iu].parent = NONE;
            let mut a = self.nodes[iu].first;
            while a != NONE {
                let j = self.arcs[a as usize].head;
                let ju = j as usize;
                let pj = self.nodes[ju].parent;
                if self.nodes[ju].is_sink == is_sink && pj != NONE {
                    let cap =
                        if is_sink { self.arcs[a as usize].r_cap } else { self.arcs[Self::sister(a) as usize].r_cap };
                    if cap > 0.0 {
                        self.set_active(j);
                    }
                    if pj != TERMINAL && pj != ORPHAN && self.arcs[pj as usize].head == i {
                        self.make_orphan(j);
                    }
                }
                a = self.arcs[a as usize].next;
            }
        }
        let _ = INFINITE_DIST;
    }

    /// The side of node `i` after [`Graph::maxflow`]: nodes reachable from the source are `Source`.
    pub fn side(&self, i: usize) -> Side {
        let n = &self.nodes[i];
        if n.parent != NONE && !n.is_sink {
            Side::Source
        } else {
            Side::Sink
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Edmonds–Karp on an adjacency matrix, the reference.
    fn edmonds_karp(n: usize, cap: &mut [Vec<f64>], s: usize, t: usize) -> f64 {
        let mut flow = 0.0;
        loop {
            let mut prev = vec![usize::MAX; n];
            prev[s] = s;
            let mut q = std::collections::VecDeque::from([s]);
            while let Some(u) = q.pop_front() {
                for v in 0..n {
                    if prev[v] == usize::MAX && cap[u][v] > 1e-12 {
                        prev[v] = u;
                        q.push_back(v);
                    }
                }
            }
            if prev[t] == usize::MAX {
                return flow;
            }
            let mut b = f64::INFINITY;
            let mut v = t;
            while v != s {
                b = b.min(cap[prev[v]][v]);
                v = prev[v];
            }
            let mut v = t;
            while v != s {
                cap[prev[v]][v] -= b;
                cap[v][prev[v]] += b;
                v = prev[v];
            }
            flow += b;
        }
    }

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f64) / (1u64 << 31) as f64
    }

    #[test]
    #[allow(clippy::needless_range_loop)] // capacity matrices read best with indices
    fn equals_edmonds_karp_on_random_graphs() {
        let mut seed = 7u64;
        for trial in 0..200 {
            let n = 2 + (trial % 12);
            let (s, t) = (n, n + 1);
            let mut cap = vec![vec![0.0; n + 2]; n + 2];
            let mut g = Graph::new(n, 16);
            for i in 0..n {
                let (a, b) = (lcg(&mut seed) * 5.0, lcg(&mut seed) * 5.0);
                let (a, b) = (if lcg(&mut seed) < 0.3 { 0.0 } else { a }, if lcg(&mut seed) < 0.3 { 0.0 } else { b });
                g.add_terminal(i, a, b);
                cap[s][i] += a;
                cap[i][t] += b;
            }
            for i in 0..n {
                for j in (i + 1)..n {
                    if lcg(&mut seed) < 0.4 {
                        let (c, r) = (lcg(&mut seed) * 3.0, lcg(&mut seed) * 3.0);
                        g.add_edge(i, j, c, r);
                        cap[i][j] += c;
                        cap[j][i] += r;
                    }
                }
            }
            let mut reference = cap.clone();
            let want = edmonds_karp(n + 2, &mut reference, s, t);
            let got = g.maxflow();
            assert!((got - want).abs() < 1e-9, "trial {trial}: BK {got} vs EK {want}");
            // The cut's capacity equals the flow.
            let side: Vec<Side> = (0..n).map(|i| g.side(i)).collect();
            let mut cut = 0.0;
            for i in 0..n {
                if side[i] == Side::Sink {
                    cut += cap[s][i];
                } else {
                    cut += cap[i][t];
                }
                for j in 0..n {
                    if side[i] == Side::Source && side[j] == Side::Sink {
                        cut += cap[i][j];
                    }
                }
            }
            assert!((cut - want).abs() < 1e-9, "trial {trial}: cut {cut} vs flow {want}");
        }
    }
}
