//! E-matching that remembers between iterations. A pattern's match at a class is made
//! of nodes whose operators the pattern names: the class's nodes with the root operator,
//! the nodes below them (in classes at most the pattern's depth below) with the
//! operators below, and the canonical ids of their children. So when no class at any
//! level below (up to the pattern's depth) gained, lost or changed (in its children's
//! ids) a node with one of the operators the pattern has at that level since the rule
//! last searched, the class's matches then are its matches now. Each search returns exactly what egg's own search returns, in the same order
//! (the classes in the order egg visits them now); only finding unchanged matches again
//! is skipped.
//!
//! Where a class must be searched again, it is first checked cheaply (no allocation)
//! for a node with the root's operator whose children hold the operators the pattern
//! wants there; egg's search runs only where one does.
//!
//! A saturation run turns the memory on (`Memory::start`) and calls `Memory::observe` at
//! the start of every iteration, after the rebuild; without it (replays with
//! explanations) rules search as egg's patterns do.

use crate::analysis::{Facts, Graph};
use crate::lang::{Node, Shape, OPS};
use egg::{ENodeOrVar, Id, Language, Pattern, PatternAst, SearchMatches, Searcher, Subst, Var};
use std::borrow::Cow;
use std::cell::RefCell;

const _: () = assert!(OPS <= 64, "operator sets are u64 masks");

static VERIFY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// With `true`, every search also runs egg's own and panics unless both found the same
/// matches in the same order, and every application skipped as a repeat runs anyway and
/// panics unless it changed nothing (for tests).
pub fn verify(on: bool) {
    VERIFY.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub(crate) fn verifying() -> bool {
    VERIFY.load(std::sync::atomic::Ordering::Relaxed)
}

/// The memory of one saturation run, kept in the e-graph's analysis (a copy of the
/// analysis starts without one).
#[derive(Default)]
pub struct MemoryCell(RefCell<Option<Box<Memory>>>);

impl Clone for MemoryCell {
    fn clone(&self) -> Self {
        MemoryCell::default()
    }
}

#[derive(Default)]
pub struct Memory {
    /// counts the iterations observed
    epoch: u32,
    /// per class id: its nodes when last observed, while it was a class
    seen: Vec<Option<Vec<Node>>>,
    /// the classes last observed
    live: Vec<Id>,
    /// per class id: the operators (a mask) of its nodes
    present: Vec<u64>,
    /// `changed[d][id]`: the operators (a mask) of the nodes that appeared, went or
    /// changed since the last observation in the classes exactly `d` levels below the
    /// class (along its nodes' children; 0: the class itself); levels `0..levels` are up
    /// to date
    changed: Vec<Vec<u64>>,
    levels: usize,
    /// the operators of all the nodes that changed since the last observation
    everywhere: u64,
    /// the operators of all the nodes
    anywhere: u64,
    /// per rule (its searcher's serial number): its last search
    rules: Vec<Option<Found>>,
    /// the searcher whose matches the last search lent
    lender: Option<usize>,
    /// per applier (its serial number) and matched class: the substitutions applied
    /// in full, and what each application left (`Memory::applied_before`)
    applied: rustc_hash::FxHashMap<(usize, Id), Vec<(Subst, Applied)>>,
}

/// What an application of a rule's right side left: the classes of its instance's
/// nodes (after the union with the matched class) and the matched class's shape when
/// the shape guard passed, in the iteration it ran.
struct Applied {
    epoch: u32,
    shape: Option<Shape>,
    ids: Box<[Id]>,
}

/// One search: in which epoch, and its matches per class in the order searched (all of
/// them: a search cut off by its limit is not kept). The matches are lent to the run
/// (moved into the search's result, not copied) until it gives them back after applying
/// them (`Memory::give_back`); a search whose matches never came back is not used.
struct Found {
    epoch: u32,
    lent: bool,
    matches: Vec<(Id, Vec<Subst>)>,
}

fn bit(n: &Node) -> u64 {
    1 << n.op_index()
}

impl Memory {
    /// Turns the memory on for the run over this e-graph.
    pub fn start(egraph: &mut Graph) {
        *egraph.analysis.memory.0.get_mut() = Some(Box::default());
    }

    /// Turns it off (and frees it).
    pub fn stop(egraph: &mut Graph) {
        egraph.analysis.memory.0.get_mut().take();
    }

    /// Notes, per class, the operators of the nodes that changed since the last
    /// iteration (the e-graph is rebuilt: every class's nodes are sorted, with canonical
    /// children).
    pub fn observe(egraph: &Graph) {
        let mut cell = egraph.analysis.memory.0.borrow_mut();
        let Some(m) = cell.as_mut() else { return };
        m.epoch += 1;
        m.levels = 1;
        m.everywhere = 0;
        let size = egraph.classes().map(|c| usize::from(c.id) + 1).max().unwrap_or(0);
        if m.seen.len() < size {
            m.seen.resize(size, None);
        }
        if m.changed.is_empty() {
            m.changed.push(vec![]);
        }
        let changed = &mut m.changed[0];
        changed.clear();
        changed.resize(size, 0);
        if m.present.len() < size {
            m.present.resize(size, 0);
        }
        // classes merged into others are gone: their nodes now belong to (and their
        // parents' nodes point to) classes that changed, and no search starts at them
        for id in std::mem::take(&mut m.live) {
            if egraph.find(id) != id {
                m.seen[usize::from(id)] = None;
            }
        }
        m.anywhere = 0;
        for class in egraph.classes() {
            m.live.push(class.id);
            let i = usize::from(class.id);
            let seen = &mut m.seen[i];
            let (old, new): (&[Node], &[Node]) = (seen.as_deref().unwrap_or(&[]), &class.nodes);
            if old == new {
                m.anywhere |= m.present[i];
                continue;
            }
            m.present[i] = new.iter().fold(0, |ops, n| ops | bit(n));
            m.anywhere |= m.present[i];
            // both sorted: walk them together, noting the nodes only one has
            let (mut a, mut b, mut ops) = (0, 0, 0u64);
            while a < old.len() || b < new.len() {
                match (old.get(a), new.get(b)) {
                    (Some(x), Some(y)) if x == y => {
                        a += 1;
                        b += 1;
                    }
                    (Some(x), Some(y)) if x < y => {
                        ops |= bit(x);
                        a += 1;
                    }
                    (Some(x), None) => {
                        ops |= bit(x);
                        a += 1;
                    }
                    (_, Some(y)) => {
                        ops |= bit(y);
                        b += 1;
                    }
                    (None, None) => unreachable!(),
                }
            }
            changed[i] = ops;
            m.everywhere |= ops;
            *seen = Some(class.nodes.clone());
        }
    }

    /// The searcher whose matches the last search lent (to give them back), if it did.
    pub fn lender(egraph: &Graph) -> Option<usize> {
        egraph.analysis.memory.0.borrow_mut().as_mut().and_then(|m| m.lender.take())
    }

    /// Gives back the matches a search lent, once applied: the next iteration's search
    /// of the same rule starts from them.
    pub fn give_back(egraph: &Graph, lender: usize, found: Vec<SearchMatches<'_, Node>>) {
        let mut cell = egraph.analysis.memory.0.borrow_mut();
        let Some(m) = cell.as_mut() else { return };
        let epoch = m.epoch;
        if let Some(f) = m.rules.get_mut(lender).and_then(|f| f.as_mut()).filter(|f| f.lent && f.epoch == epoch) {
            f.matches = found.into_iter().map(|m| (m.eclass, m.substs)).collect();
            f.lent = false;
        }
    }

    /// Whether applying the right side `rhs` at `eclass` with `subst` again is certain to
    /// change nothing: an earlier iteration applied it in full (its conditions and guards
    /// passed; a rule with an assumption is never skipped, as the assumption is named
    /// after the classes as they are now) and every class its instance ended in is still a
    /// class. Then the e-graph's last rebuild left each node of the instance, with those
    /// classes as its children, in the hash-cons, so instantiating `rhs` again finds every
    /// node where it is and the union with `eclass` is no union. The shape guard would
    /// pass again too: the class's shape is the one it passed with (shapes, once known,
    /// only go back to unknown, for zeros), so it records no conflict.
    pub(crate) fn applied_before(egraph: &Graph, applier: usize, eclass: Id, subst: &Subst, rhs: &PatternAst<Node>) -> bool {
        let cell = egraph.analysis.memory.0.borrow();
        let Some(m) = cell.as_ref() else { return false };
        let Some(list) = m.applied.get(&(applier, eclass)) else { return false };
        let Some((_, a)) = list.iter().find(|(s, _)| s == subst) else { return false };
        if a.epoch >= m.epoch || egraph.find(eclass) != *a.ids.last().unwrap() {
            return false;
        }
        let same = rhs.as_ref().iter().zip(a.ids.iter()).all(|(n, id)| match n {
            ENodeOrVar::Var(v) => egraph.find(subst[*v]) == *id,
            ENodeOrVar::ENode(_) => egraph.find(*id) == *id,
        });
        same && a.shape.is_none_or(|s| egraph[eclass].data.shape == Some(s))
    }

    /// Notes an application in full of `rhs` at `eclass` with `subst` whose instance's
    /// nodes were added (or found) in the classes `ids`; `shape`: the class's shape the
    /// shape guard passed with (`None` for a right side of 0, which has no guard).
    pub(crate) fn note_applied(egraph: &Graph, applier: usize, eclass: Id, subst: &Subst, ids: &[Id], shape: Option<Shape>) {
        let mut cell = egraph.analysis.memory.0.borrow_mut();
        let Some(m) = cell.as_mut() else { return };
        let epoch = m.epoch;
        let list = m.applied.entry((applier, eclass)).or_default();
        match list.iter_mut().find(|(s, _)| s == subst) {
            // noted again (its classes had changed): in place
            Some((_, old)) => {
                old.epoch = epoch;
                old.shape = shape;
                for (o, id) in old.ids.iter_mut().zip(ids) {
                    *o = egraph.find(*id);
                }
            }
            None => list.push((subst.clone(), Applied { epoch, shape, ids: ids.iter().map(|id| egraph.find(*id)).collect() })),
        }
    }

    /// Brings `changed` up to date to `depth` levels below each class.
    fn up_to(&mut self, egraph: &Graph, depth: usize) {
        while self.levels <= depth {
            let k = self.levels;
            if self.changed.len() <= k {
                self.changed.push(vec![]);
            }
            let (below, here) = self.changed.split_at_mut(k);
            let (prev, cur) = (&below[k - 1], &mut here[0]);
            cur.clear();
            cur.resize(prev.len(), 0);
            for class in egraph.classes() {
                let i = usize::from(class.id);
                let mut ops = 0;
                for n in &class.nodes {
                    for c in n.children() {
                        ops |= prev[usize::from(*c)];
                    }
                }
                cur[i] = ops;
            }
            self.levels += 1;
        }
    }
}

/// A rule's left side that searches with the run's memory.
pub struct Remembering {
    /// numbers the searchers made in this process (an index into a run's memory)
    serial: usize,
    pattern: Pattern<Node>,
    /// the operators of the pattern's nodes
    ops: u64,
    /// the root's operator, and for each of its children the operator the pattern
    /// requires there (0 for a variable)
    root: usize,
    below: Vec<u64>,
    /// the pattern wants no operator below its root, which has a fixed number of
    /// children: every class holding the root's operator can match
    trivial: bool,
    /// how many levels below a matched class the pattern's nodes reach
    depth: usize,
    /// per level below a matched class (0: the class), the operators of the pattern's
    /// nodes at that level
    level_ops: Vec<u64>,
}

impl Remembering {
    pub fn new(ast: PatternAst<Node>) -> Self {
        let nodes = ast.as_ref();
        let mut height = vec![0usize; nodes.len()];
        let mut ops = 0;
        for (i, n) in nodes.iter().enumerate() {
            if let ENodeOrVar::ENode(e) = n {
                ops |= bit(e);
                height[i] = 1 + e.children().iter().map(|c| height[usize::from(*c)]).max().unwrap_or(0);
            }
        }
        let depth = height.last().map_or(0, |h| h.saturating_sub(1));
        let (root, below) = match nodes.last() {
            Some(ENodeOrVar::ENode(e)) => (
                e.op_index(),
                e.children().iter().map(|c| if let ENodeOrVar::ENode(k) = &nodes[usize::from(*c)] { bit(k) } else { 0 }).collect(),
            ),
            _ => (usize::MAX, vec![]),
        };
        static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let trivial = below.iter().all(|b| *b == 0) && !matches!(nodes.last(), Some(ENodeOrVar::ENode(Node::Vector(_))));
        let mut level_ops = vec![0u64; depth + 1];
        let mut todo: Vec<(usize, usize)> = if nodes.is_empty() { vec![] } else { vec![(nodes.len() - 1, 0)] };
        while let Some((i, level)) = todo.pop() {
            if let ENodeOrVar::ENode(e) = &nodes[i] {
                level_ops[level] |= bit(e);
                todo.extend(e.children().iter().map(|c| (usize::from(*c), level + 1)));
            }
        }
        Remembering { serial, pattern: Pattern::new(ast), ops, root, below, trivial, depth, level_ops }
    }

    /// Whether the class (observed this iteration) can hold a match, by the operators
    /// at its nodes and their children.
    fn possible(&self, seen: &[Option<Vec<Node>>], present: &[u64], id: Id) -> bool {
        if self.trivial {
            return true;
        }
        let Some(nodes) = seen[usize::from(id)].as_deref() else { return true };
        nodes.iter().any(|n| {
            n.op_index() == self.root && n.children().len() == self.below.len() && n.children().iter().zip(&self.below).all(|(c, want)| present[usize::from(*c)] & want == *want)
        })
    }
}

impl Remembering {
    /// The matches found, compared with egg's when `verify` is on.
    #[inline]
    fn verified<'a>(&'a self, egraph: &Graph, limit: usize, out: Vec<SearchMatches<'a, Node>>) -> Vec<SearchMatches<'a, Node>> {
        if verifying() {
            self.verify(egraph, limit, &out);
        }
        out
    }

    #[cold]
    #[inline(never)]
    fn verify(&self, egraph: &Graph, limit: usize, out: &[SearchMatches<'_, Node>]) {
        let want = self.pattern.search_with_limit(egraph, limit);
        let found: Vec<(Id, &Vec<Subst>)> = out.iter().map(|f| (f.eclass, &f.substs)).collect();
        let want: Vec<(Id, &Vec<Subst>)> = want.iter().map(|f| (f.eclass, &f.substs)).collect();
        assert_eq!(found, want, "remembered matches of {} differ from egg's", self.pattern);
    }
}

impl Searcher<Node, Facts> for Remembering {
    fn search_eclass_with_limit(&self, egraph: &Graph, eclass: Id, limit: usize) -> Option<SearchMatches<'_, Node>> {
        self.pattern.search_eclass_with_limit(egraph, eclass, limit)
    }

    fn search_with_limit(&self, egraph: &Graph, limit: usize) -> Vec<SearchMatches<'_, Node>> {
        let root = match self.pattern.ast.as_ref().last() {
            Some(ENodeOrVar::ENode(n)) => n,
            _ => return self.pattern.search_with_limit(egraph, limit),
        };
        let Ok(mut cell) = egraph.analysis.memory.0.try_borrow_mut() else { return self.pattern.search_with_limit(egraph, limit) };
        let Some(m) = cell.as_mut().filter(|m| m.epoch > 0) else {
            drop(cell);
            return self.pattern.search_with_limit(egraph, limit);
        };
        // a pattern with an operator no node has matches nowhere
        if m.anywhere & self.ops != self.ops {
            drop(cell);
            return self.verified(egraph, limit, vec![]);
        }
        // what the last search found, if it was in the last iteration
        if m.rules.len() <= self.serial {
            m.rules.resize_with(self.serial + 1, || None);
        }
        let mut last = m.rules[self.serial].take().filter(|f| f.epoch + 1 == m.epoch && !f.lent);
        // nothing found then, and no node with the pattern's operators changed since:
        // nothing now
        if last.as_ref().is_some_and(|f| f.matches.is_empty() && m.everywhere & self.ops == 0) {
            m.rules[self.serial] = Some(Found { epoch: m.epoch, lent: false, matches: vec![] });
            drop(cell);
            return self.verified(egraph, limit, vec![]);
        }
        // as egg searches: the classes holding the root's operator, in their order now,
        // each up to the matches left under the limit
        let Some(ids) = egraph.classes_for_op(&root.discriminant()) else {
            drop(cell);
            return self.verified(egraph, limit, vec![]);
        };
        m.up_to(egraph, self.depth);
        let changed = &m.changed[..=self.depth];
        let level_ops = &self.level_ops;
        // the class's matches are those of the last search when no node with an operator
        // the pattern has at some level changed at that level below the class
        let unchanged = |id: Id| changed.iter().zip(level_ops).all(|(c, ops)| c[usize::from(id)] & ops == 0);
        let mut out: Vec<SearchMatches<'_, Node>> = vec![];
        let limit0 = limit;
        let mut limit = limit;
        let mut complete = true;
        for id in ids {
            if limit == 0 {
                complete = false;
                break;
            }
            let known = last.as_mut().filter(|_| unchanged(id));
            let substs = match known {
                Some(f) => f.matches.iter_mut().find(|(c, _)| *c == id).map(|(_, s)| std::mem::take(s)).unwrap_or_default(),
                // a class can match only where one of its nodes with the root's operator
                // has children holding the operators the pattern wants below it
                None if !self.possible(&m.seen, &m.present, id) => vec![],
                None => self.pattern.search_eclass_with_limit(egraph, id, limit).map(|f| f.substs).unwrap_or_default(),
            };
            if substs.is_empty() {
                continue;
            }
            if substs.len() >= limit {
                complete = false;
            }
            let n = substs.len().min(limit);
            limit -= n;
            let mut substs = substs;
            substs.truncate(n);
            out.push(SearchMatches { eclass: id, substs, ast: Some(Cow::Borrowed(&self.pattern.ast)) });
        }
        // a complete search is remembered: its matches are lent to the run, an empty
        // one is kept as it is
        if complete {
            let lent = !out.is_empty();
            m.rules[self.serial] = Some(Found { epoch: m.epoch, lent, matches: vec![] });
            if lent {
                m.lender = Some(self.serial);
            }
        }
        drop(cell);
        self.verified(egraph, limit0, out)
    }

    fn get_pattern_ast(&self) -> Option<&PatternAst<Node>> {
        Some(&self.pattern.ast)
    }

    fn vars(&self) -> Vec<Var> {
        self.pattern.vars()
    }
}
