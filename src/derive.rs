//! The derivation: the model's losses and the requested derivatives go into one e-graph,
//! the rules run to saturation (or a limit), and the simplest forms are extracted.

use crate::analysis::{Facts, Graph};
use crate::lang::Node;
use crate::model::Model;
use crate::rules::{family_rules, Rule};
use egg::{CostFunction, Id, Language, RecExpr, StopReason, Symbol};
use std::collections::BTreeMap;
use std::time::Duration;

/// Limits on the e-graph; `EVOLVED_ITERS`, `EVOLVED_NODES` and `EVOLVED_SECONDS` override
/// them.
#[derive(Clone, Debug)]
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
    pub seconds: f64,
}

impl Default for Limits {
    fn default() -> Self {
        let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        let seconds = std::env::var("EVOLVED_SECONDS").ok().and_then(|v| v.parse().ok()).filter(|s: &f64| *s > 0.0).unwrap_or(5.0);
        Limits { iterations: env("EVOLVED_ITERS", 100), nodes: env("EVOLVED_NODES", 50_000), seconds }
    }
}

/// One derived quantity.
#[derive(Clone, Debug)]
pub struct Derived {
    /// the loss
    pub loss: String,
    /// the variable, for derivatives
    pub wrt: Option<String>,
    /// 0: the loss itself, 1: gradient, 2: Hessian
    pub order: usize,
    pub term: RecExpr<Node>,
    /// false when a derivative is left in the term (the rules could not remove it)
    pub complete: bool,
    /// the e-class also holds a covariance Cov[T(x)] (so the Hessian is PSD)
    pub is_covariance: bool,
    /// how the term was reached: (stage, from, to) per saturation run it went through,
    /// replayed with explanations for `--steps`
    pub trail: Trail,
}

/// (stage, from, to) for each saturation run a result went through.
pub type Trail = Vec<(usize, RecExpr<Node>, RecExpr<Node>)>;

/// One saturation run's inputs, kept so that it can be replayed with explanations.
#[derive(Clone, Debug)]
pub struct Stage {
    pub name: &'static str,
    pub rules: std::sync::Arc<[Rule]>,
    /// rules derived from others (a family's E[T] in closed form): steps avoid them when
    /// they can, so that they show the identities
    pub shortcuts: Vec<Rule>,
    pub terms: Vec<RecExpr<Node>>,
}

/// A family quantity used in results, with its closed form when the rules found one.
#[derive(Clone, Debug)]
pub struct Definition {
    /// `mean(F, t)` or `logpart(F, t)`
    pub term: RecExpr<Node>,
    pub explicit: Option<RecExpr<Node>>,
}

#[derive(Clone, Debug)]
pub struct Derivation {
    pub results: Vec<Derived>,
    pub definitions: Vec<Definition>,
    pub assumptions: Vec<String>,
    /// rule name → times it changed the e-graph
    pub rules_applied: Vec<(String, usize)>,
    pub stop: String,
    pub saturated: bool,
    pub iterations: usize,
    pub nodes: usize,
    pub classes: usize,
    /// shape conflicts seen while rewriting (a rule bug)
    pub conflicts: Vec<String>,
    /// for each of the model's claims: proved equal to the derived result by the rules
    pub proved: Vec<bool>,
    /// the saturation runs, in order: gradient, Hessian, tidy
    pub stages: Vec<Stage>,
}

/// The extraction cost: terms with unevaluated derivatives or expectations lose to any
/// term without; then terms in family quantities (E[T], A) win over their expansions —
/// the evolved notation; then the smaller term; then the printed text, so the choice is
/// deterministic.
pub struct EvolvedCost<'a> {
    pub egraph: &'a Graph,
    /// catalog families the model does not mention (their quantities cost a little more)
    pub foreign: &'a [Symbol],
    /// forbid family quantities (for closed forms of definitions)
    pub explicit_only: bool,
    /// avoid building square matrices (for Hessian-vector products: the O(n) form)
    pub no_dense: bool,
}

/// (unevaluated, family-level, foreign family, size, text); the text is shared, as the
/// extractor copies children's costs into their parents' for every pass
pub type Cost = (u32, u32, u32, u32, std::rc::Rc<str>);

impl CostFunction<Node> for EvolvedCost<'_> {
    type Cost = Cost;
    fn cost<C: FnMut(Id) -> Cost>(&mut self, enode: &Node, mut costs: C) -> Cost {
        let (mut bad, mut family, mut foreign, mut size) = (0u32, 0u32, 0u32, 1u32);
        match enode {
            Node::Jac(_) | Node::Expect(_) | Node::LogP(_) => bad = 1,
            Node::Mean(_) | Node::LogPart(_) if self.explicit_only => bad = 1,
            Node::Cov(_) | Node::Second(_) if self.explicit_only => bad = 1,
            Node::Cov(_) | Node::Second(_) => family = 1,
            // E[T] reads better than an equal A (Poisson: A = e^η = E[x]); a Kronecker
            // product is written only where no product of matrices says the same
            Node::LogPart(_) => size = 2,
            Node::Kron(_) => size = 4,
            // a / 2 reads better than (1/2) a
            Node::Mul([a, b]) if [a, b].iter().any(|c| self.egraph[**c].data.constant.is_some_and(|r| !r.is_integer())) => size = 2,
            Node::Exp(_) | Node::Log(_) | Node::Softmax(_) | Node::Sigmoid(_) | Node::LogSumExp(_) => family = 1,
            _ => {}
        }
        if enode.is_family_quantity() {
            let f = enode.children()[0];
            if self.egraph[f].nodes.iter().any(|n| matches!(n, Node::Symbol(s) if self.foreign.contains(s))) {
                foreign = 1;
            }
        }
        if self.no_dense {
            let shape = |c: &Id| self.egraph[*c].data.shape;
            let dense = match enode {
                Node::Diag(_) | Node::Outer(_) | Node::Eye(_) | Node::Cov(_) | Node::Second(_) => true,
                Node::MatMul([_, b]) => shape(b).is_some_and(|s| !s.is_column()),
                _ => false,
            };
            if dense {
                bad = bad.saturating_add(1);
            }
        }
        use std::fmt::Write;
        let mut text = String::with_capacity(64);
        let _ = write!(text, "{enode}");
        for (i, c) in enode.children().iter().enumerate() {
            let (b, f, o, mut s, t) = costs(*c);
            // a literal exponent is part of the power's symbol: a² is smaller than a·a
            if i == 1 && matches!(enode, Node::Pow(_)) && self.egraph[*c].data.constant.is_some() {
                s = 0;
            }
            // the family's name costs nothing
            if i == 0 && enode.is_family_quantity() {
                text.push(' ');
                text.push_str(&t);
                continue;
            }
            bad = bad.saturating_add(b);
            family = family.saturating_add(f);
            foreign = foreign.saturating_add(o);
            size = size.saturating_add(s);
            text.push(' ');
            text.push_str(&t);
        }
        text.truncate(200);
        let mut out = String::with_capacity(text.len() + 2);
        out.push('(');
        out.push_str(&text);
        out.push(')');
        (bad, family, foreign, size, out.into())
    }
}

/// egg's `Extractor`, computing the same costs in the same passes (and so choosing the
/// same terms), except that a node's cost is computed again only when one of its
/// children's costs changed since: the cost function is pure, and ours builds text.
pub struct Extractor<'a, CF: CostFunction<Node>> {
    egraph: &'a Graph,
    /// per class id: the best cost and node so far
    best: Vec<Option<(CF::Cost, Node)>>,
}

impl<'a, CF: CostFunction<Node>> Extractor<'a, CF> {
    pub fn new(egraph: &'a Graph, mut cost_function: CF) -> Self {
        let size = egraph.classes().map(|c| usize::from(c.id) + 1).max().unwrap_or(0);
        let mut best: Vec<Option<(CF::Cost, Node)>> = vec![None; size];
        // per class id: how many times its best cost was set (0: not yet)
        let mut version = vec![0u64; size];
        // per class, per node: its cost, and the sum of its children's versions then
        // (versions only grow, so an equal sum means no child changed)
        type Known<C> = Vec<Vec<Option<(C, u64)>>>;
        let mut known: Known<CF::Cost> = vec![vec![]; size];
        for class in egraph.classes() {
            known[usize::from(class.id)] = vec![None; class.nodes.len()];
        }
        let mut did_something = true;
        while did_something {
            did_something = false;
            for class in egraph.classes() {
                let i = usize::from(class.id);
                // as egg's make_pass: the first node of least cost, a node with a child
                // without a cost costing more than any
                let mut pick: Option<(CF::Cost, usize)> = None;
                for (k, node) in class.nodes.iter().enumerate() {
                    let mut stamp = 0u64;
                    let mut ready = true;
                    for c in node.children() {
                        let v = version[usize::from(egraph.find(*c))];
                        ready &= v > 0;
                        stamp += v;
                    }
                    if !ready {
                        continue;
                    }
                    let cost = match &known[i][k] {
                        Some((cost, s)) if *s == stamp => cost.clone(),
                        _ => {
                            let cost = cost_function.cost(node, |c| best[usize::from(egraph.find(c))].as_ref().unwrap().0.clone());
                            known[i][k] = Some((cost.clone(), stamp));
                            cost
                        }
                    };
                    if pick.as_ref().is_none_or(|(p, _)| cost.partial_cmp(p).unwrap() == std::cmp::Ordering::Less) {
                        pick = Some((cost, k));
                    }
                }
                let Some((cost, k)) = pick else { continue };
                let better = match &best[i] {
                    None => true,
                    Some((old, _)) => cost < *old,
                };
                if better {
                    best[i] = Some((cost, class.nodes[k].clone()));
                    version[i] += 1;
                    did_something = true;
                }
            }
        }
        Extractor { egraph, best }
    }

    /// The best term of a class, with its cost.
    pub fn find_best(&self, eclass: Id) -> (CF::Cost, RecExpr<Node>) {
        let at = |id: Id| self.best[usize::from(self.egraph.find(id))].as_ref().expect("a class with a cost");
        let (cost, root) = at(eclass).clone();
        (cost, root.build_recexpr(|id| at(id).1.clone()))
    }
}

fn contains(term: &RecExpr<Node>, pred: impl Fn(&Node) -> bool) -> bool {
    term.iter().any(pred)
}

/// The e-graph for a model: its analysis and the terms whose forms are wanted.
pub fn new_graph(model: &Model) -> Graph {
    Graph::new(Facts::new(model))
}

/// One saturation run over some terms.
pub(crate) struct Phase {
    pub egraph: Graph,
    pub iterations: Vec<Iteration>,
    pub stop_reason: Option<StopReason>,
    pub roots: Vec<Id>,
}

/// One iteration of a run: the e-graph's size (its hash-cons) and classes at its start,
/// and how many times each rule changed the e-graph, in the order they first did.
pub(crate) struct Iteration {
    pub applied: Vec<(Symbol, usize)>,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
}

fn run_phase(model: &Model, rewrites: &[egg::Rewrite<Node, Facts>], terms: &[RecExpr<Node>], limits: &Limits) -> Phase {
    run_graph(new_graph(model), rewrites, terms, limits, None)
}

/// Saturates `terms` (or stops at a limit, or as soon as the first term's class holds
/// `until`).
pub(crate) fn run_graph(mut egraph: Graph, rewrites: &[egg::Rewrite<Node, Facts>], terms: &[RecExpr<Node>], limits: &Limits, until: Option<&RecExpr<Node>>) -> Phase {
    let roots: Vec<Id> = terms.iter().map(|t| egraph.add_expr(t)).collect();
    // the rules' searches remember their matches between iterations
    crate::ematch::Memory::start(&mut egraph);
    let goal = until.map(|g| (g, roots[0]));
    let (iterations, stop_reason) = saturate(&mut egraph, rewrites, limits, goal);
    let mut phase = Phase { egraph, iterations, stop_reason: Some(stop_reason), roots: vec![] };
    if std::env::var_os("EVOLVED_DEBUG").is_some() {
        debug_dump(&phase);
    }
    crate::ematch::Memory::stop(&mut phase.egraph);
    let found = crate::analysis::shape_conflicts(&phase.egraph);
    phase.egraph.analysis.conflicts.extend(found);
    phase.roots = roots.iter().map(|r| phase.egraph.find(*r)).collect();
    phase
}

/// How often (in rules searched or applied) the time limit is looked at.
const CLOCK_EVERY: usize = 16;

/// A rule's record in the backoff schedule (egg's `BackoffScheduler`, kept per name).
struct Backoff {
    times_applied: usize,
    banned_until: usize,
    times_banned: usize,
    match_limit: usize,
    ban_length: usize,
}

/// The saturation loop of egg's `Runner` with its `BackoffScheduler` (a rule that
/// matches more than 20 000 times in one iteration sits out a few, so one iteration
/// cannot grow the graph without bound between the limit checks), step for step: the
/// same searches and applications in the same order, the same limits and stop reasons.
/// It differs only in bookkeeping: rules that found nothing are not applied (that does
/// nothing), and the clock is read every few rules instead of after each.
fn saturate(egraph: &mut Graph, rules: &[egg::Rewrite<Node, Facts>], limits: &Limits, goal: Option<(&RecExpr<Node>, Id)>) -> (Vec<Iteration>, StopReason) {
    // egg times each rebuild with quanta, for a log line never printed here, and quanta's
    // first reading of its clock calibrates the CPU's counter against the system clock,
    // spinning for milliseconds: more than a whole derivation. The rebuilds read a mock
    // clock instead (our limits use std's clock).
    thread_local! {
        static CLOCK: quanta::Clock = quanta::Clock::mock().0;
    }
    CLOCK.with(|clock| quanta::with_clock(clock, || saturate_with(egraph, rules, limits, goal)))
}

fn saturate_with(egraph: &mut Graph, rules: &[egg::Rewrite<Node, Facts>], limits: &Limits, goal: Option<(&RecExpr<Node>, Id)>) -> (Vec<Iteration>, StopReason) {
    // as egg's runner warns; the schedule is kept per rule name, as egg's is (a map from
    // names to slots: a scan of the names for each of a few hundred rules costs more than
    // a small run)
    let mut names: Vec<(Symbol, usize)> = vec![];
    let mut index: std::collections::HashMap<Symbol, usize> = std::collections::HashMap::with_capacity(rules.len());
    let mut slot: Vec<usize> = Vec::with_capacity(rules.len());
    for rw in rules {
        let k = *index.entry(rw.name).or_insert_with(|| {
            names.push((rw.name, 0));
            names.len() - 1
        });
        names[k].1 += 1;
        slot.push(k);
    }
    if names.iter().any(|(_, k)| *k > 1) {
        eprintln!("WARNING: Duplicated rule names may affect rule reporting and scheduling.");
        for (name, k) in names.iter().filter(|(_, k)| *k > 1) {
            eprintln!("Rule '{name}' appears {k} times");
        }
    }
    let mut stats: Vec<Backoff> =
        names.iter().map(|_| Backoff { times_applied: 0, banned_until: 0, times_banned: 0, match_limit: 20_000, ban_length: 5 }).collect();
    let time_limit = Duration::from_secs_f64(limits.seconds);
    egraph.rebuild();
    let start = std::time::Instant::now();
    let clock = || -> Result<(), StopReason> {
        let elapsed = start.elapsed();
        if elapsed > time_limit {
            return Err(StopReason::TimeLimit(elapsed.as_secs_f64()));
        }
        Ok(())
    };
    let check = |egraph: &Graph, iteration: usize| -> Result<(), StopReason> {
        clock()?;
        let size = egraph.total_size();
        if size > limits.nodes {
            return Err(StopReason::NodeLimit(size));
        }
        if iteration >= limits.iterations {
            return Err(StopReason::IterationLimit(iteration));
        }
        Ok(())
    };
    let mut iterations: Vec<Iteration> = vec![];
    loop {
        let i = iterations.len();
        let mut result = check(egraph, i);
        let (nodes, classes) = (egraph.total_size(), egraph.number_of_classes());
        // the hooks: the goal, then the searches' memory
        result = result.and_then(|_| match goal {
            Some((g, root)) => match egraph.lookup_expr(g) {
                Some(id) if egraph.find(id) == egraph.find(root) => Err(StopReason::Other("reached".into())),
                _ => Ok(()),
            },
            None => Ok(()),
        });
        if result.is_ok() {
            crate::ematch::Memory::observe(egraph);
        }
        let mut matches = Vec::with_capacity(rules.len());
        if result.is_ok() {
            for (k, rw) in rules.iter().enumerate() {
                let s = &mut stats[slot[k]];
                if i < s.banned_until {
                    matches.push((vec![], None));
                } else {
                    let threshold = s.match_limit.checked_shl(s.times_banned as u32).unwrap();
                    let found = rw.search_with_limit(egraph, threshold.saturating_add(1));
                    // the search's memory lends its matches: they go back once applied
                    let lender = crate::ematch::Memory::lender(egraph);
                    let total: usize = found.iter().map(|m| m.substs.len()).sum();
                    if total > threshold {
                        let ban_length = s.ban_length << s.times_banned;
                        s.times_banned += 1;
                        s.banned_until = i + ban_length;
                        matches.push((vec![], None));
                    } else {
                        s.times_applied += 1;
                        matches.push((found, lender));
                    }
                }
                if k % CLOCK_EVERY == CLOCK_EVERY - 1 {
                    if let Err(e) = clock() {
                        result = Err(e);
                        matches.clear();
                        break;
                    }
                }
            }
        }
        let mut applied: Vec<(Symbol, usize)> = vec![];
        if result.is_ok() {
            for (k, (rw, (found, lender))) in rules.iter().zip(matches).enumerate() {
                if !found.is_empty() {
                    let n = rw.apply(egraph, &found).len();
                    if let Some(lender) = lender {
                        crate::ematch::Memory::give_back(egraph, lender, found);
                    }
                    if n > 0 {
                        match applied.iter_mut().find(|(name, _)| *name == rw.name) {
                            Some((_, m)) => *m += n,
                            None => applied.push((rw.name, n)),
                        }
                    }
                    let size = egraph.total_size();
                    if size > limits.nodes {
                        result = Err(StopReason::NodeLimit(size));
                        break;
                    }
                }
                if k % CLOCK_EVERY == CLOCK_EVERY - 1 {
                    if let Err(e) = clock() {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        egraph.rebuild();
        let can_stop = |stats: &mut Vec<Backoff>| {
            let banned: Vec<&mut Backoff> = stats.iter_mut().filter(|s| s.banned_until > i).collect();
            let Some(min_ban) = banned.iter().map(|s| s.banned_until).min() else { return true };
            let delta = min_ban - i;
            for s in banned {
                s.banned_until -= delta;
            }
            false
        };
        if applied.is_empty() && can_stop(&mut stats) && nodes == egraph.total_size() && classes == egraph.number_of_classes() {
            result = result.and(Err(StopReason::Saturated));
        }
        iterations.push(Iteration { applied, egraph_nodes: nodes, egraph_classes: classes });
        if let Some(stop) = result.err().or_else(|| check(egraph, iterations.len()).err()) {
            return (iterations, stop);
        }
    }
}

/// Why a run stopped, and for a limit, how far it got and which rules grew the graph most.
fn stop_text(runner: &Phase) -> (String, bool) {
    let (text, saturated) = stop_reason(&runner.stop_reason);
    if saturated {
        return (text, true);
    }
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *applied.entry(name.to_string()).or_default() += n;
        }
    }
    let mut top: Vec<(String, usize)> = applied.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = top.iter().take(3).map(|(n, k)| format!("{n} ×{k}")).collect();
    let far = format!(" after {} iterations, {} e-nodes left (most applied: {})", runner.iterations.len(), runner.egraph.total_number_of_nodes(), top.join(", "));
    let text = match text.split_once(';') {
        Some((what, hint)) => format!("{what}{far};{hint}"),
        None => text + &far,
    };
    (text, false)
}

fn stop_reason(r: &Option<StopReason>) -> (String, bool) {
    match r {
        Some(StopReason::Saturated) => ("saturated".to_string(), true),
        Some(StopReason::IterationLimit(n)) => (format!("stopped at the iteration limit ({n}); raise EVOLVED_ITERS"), false),
        Some(StopReason::NodeLimit(n)) => (format!("stopped when the e-graph grew past the node limit (to {n} e-nodes); raise EVOLVED_NODES"), false),
        Some(StopReason::TimeLimit(t)) => (format!("stopped at the time limit ({t:.1} s); raise EVOLVED_SECONDS"), false),
        Some(StopReason::Other(s)) => (s.clone(), false),
        None => ("not run".to_string(), false),
    }
}

/// The rules of a derivation, the caller's followed by the model's family rules: the
/// derivation set and the whole set, each with its compiled rewrites.
struct RuleSets {
    all: std::sync::Arc<[Rule]>,
    derive_set: std::sync::Arc<[Rule]>,
    derive_rules: Vec<egg::Rewrite<Node, Facts>>,
    tidy_rules: Vec<egg::Rewrite<Node, Facts>>,
    /// the derivation rules' names, joined by commas (part of the family-mean cache key)
    derive_names: String,
}

/// The rule sets for these rules and family rules, made once per process for each
/// distinct set: copying a few hundred rules costs more than some of the saturation runs.
fn rule_sets(rules: &[Rule], family: Vec<Rule>) -> Result<std::sync::Arc<RuleSets>, String> {
    type Cache = std::sync::Mutex<Vec<std::sync::Arc<RuleSets>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let same = |s: &RuleSets| s.all.len() == rules.len() + family.len() && s.all.iter().zip(rules.iter().chain(&family)).all(|(a, b)| a == b);
    if let Some(hit) = CACHE.get_or_init(Default::default).lock().unwrap().iter().find(|s| same(s)) {
        return Ok(hit.clone());
    }
    // compile the caller's rules in place, so that the copies below share the compiled form
    for r in rules {
        r.rewrite().map_err(|e| format!("rule {} ({}): {e}", r.name, r.origin))?;
    }
    let mut all: Vec<Rule> = rules.to_vec();
    all.extend(family);
    let compile = |rs: &[&Rule]| {
        rs.iter().map(|r| r.rewrite().map_err(|e| format!("rule {} ({}): {e}", r.name, r.origin))).collect::<Result<Vec<_>, _>>()
    };
    let derive_set: std::sync::Arc<[Rule]> = all.iter().filter(|r| r.derive).cloned().collect();
    let derive_rules = compile(&derive_set.iter().collect::<Vec<_>>())?;
    let tidy_rules = compile(&all.iter().collect::<Vec<_>>())?;
    let derive_names = derive_rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(",");
    let sets = std::sync::Arc::new(RuleSets { all: all.into(), derive_set, derive_rules, tidy_rules, derive_names });
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    // a few sets at a time: each model's families give its own
    if cache.len() >= 32 {
        cache.remove(0);
    }
    cache.push(sets.clone());
    Ok(sets)
}

/// Derives every requested quantity of the model with these rules: first the derivation
/// (calculus, expectations, family identities and the algebra they need), then a tidy
/// phase over the extracted results with every rule, where sign and order rewrites cannot
/// multiply the work of differentiation.
pub fn derive(model: &Model, rules: &[Rule], limits: &Limits) -> Result<Derivation, String> {
    let sets = rule_sets(rules, family_rules(model))?;
    let foreign: Vec<Symbol> =
        (0..model.families.len()).filter(|&i| !model.uses_family(i)).map(|i| Symbol::from(model.families[i].name.as_str())).collect();
    let derive_set = sets.derive_set.clone();
    let derive_rules = &sets.derive_rules;

    // Stage 1: the losses and their gradients, transpose(jac(J, x)).
    let mut wanted: Vec<(String, Option<String>, usize)> = vec![];
    let mut terms: Vec<RecExpr<Node>> = vec![];
    for req in &model.requests {
        let loss = model.loss(&req.loss).unwrap();
        if !wanted.iter().any(|(l, _, o)| l == &req.loss && *o == 0) {
            wanted.push((req.loss.clone(), None, 0));
            terms.push(loss.clone());
        }
        if !wanted.iter().any(|(l, w, o)| l == &req.loss && w.as_deref() == Some(req.wrt.as_str()) && *o == 1) {
            wanted.push((req.loss.clone(), Some(req.wrt.clone()), 1));
            terms.push(gradient(loss, &req.wrt, entry_length_in(Some(model), model.vars[&req.wrt].shape, loss, &req.wrt)));
        }
    }
    // Claims about gradients go into the same e-graph: proved when they share a class.
    let grad_claims: Vec<usize> = (0..model.claims.len()).filter(|&i| model.claims[i].order == 1).collect();
    let n_terms = terms.len();
    for &i in &grad_claims {
        // a gradient in a matrix is derived as vec(G): the claim G goes in as vec(G)
        let c = &model.claims[i];
        let mut term = c.term.clone();
        if model.vars[&c.wrt].shape.is_matrix() {
            let root = Id::from(term.as_ref().len() - 1);
            term.add(Node::Vec(root));
        }
        terms.push(term);
    }
    let first = run_phase(model, derive_rules, &terms, limits);
    let mut proved = vec![false; model.claims.len()];
    for (k, &i) in grad_claims.iter().enumerate() {
        let c = &model.claims[i];
        let gi = wanted.iter().position(|(l, w, o)| *l == c.loss && w.as_deref() == Some(c.wrt.as_str()) && *o == 1);
        proved[i] = gi.is_some_and(|gi| first.roots[gi] == first.roots[n_terms + k]);
    }
    let egraph = &first.egraph;
    let extractor = Extractor::new(egraph, EvolvedCost { egraph, foreign: &foreign, explicit_only: false, no_dense: false });
    let mut derived: Vec<RecExpr<Node>> = first.roots[..n_terms].iter().map(|id| extractor.find_best(*id).1).collect();
    let mut covariance: Vec<bool> = vec![false; derived.len()];
    // A gradient's steps start from the gradient of the loss's derived form.
    let mut trails: Vec<Trail> = wanted
        .iter()
        .enumerate()
        .map(|(i, (l, w, _))| {
            let from = match w {
                None => terms[i].clone(),
                Some(x) => gradient(&derived[wanted.iter().position(|(l2, w2, _)| l2 == l && w2.is_none()).unwrap()], x, entry_length_in(Some(model), model.vars[x].shape, model.loss(l).unwrap(), x)),
            };
            vec![(0, from, derived[i].clone())]
        })
        .collect();
    let mut stages = vec![Stage { name: "gradient", rules: derive_set.clone(), shortcuts: vec![], terms: terms.clone() }];

    // Stage 2: Hessians, as the Jacobian of each extracted gradient. Differentiating one
    // extracted form (not every form in the gradient's class) keeps the e-graph small.
    let hess_reqs: Vec<(String, String)> = model
        .requests
        .iter()
        .filter(|r| r.order >= 2)
        .map(|r| (r.loss.clone(), r.wrt.clone()))
        .fold(vec![], |mut acc, x| {
            if !acc.contains(&x) {
                acc.push(x);
            }
            acc
        });
    let mut hterms = vec![];
    for (loss, wrt) in &hess_reqs {
        let gi = wanted.iter().position(|(l, w, o)| l == loss && w.as_deref() == Some(wrt.as_str()) && *o == 1).unwrap();
        hterms.push(jacobian(&derived[gi], wrt, entry_length_in(Some(model), model.vars[wrt].shape, model.loss(loss).unwrap(), wrt)));
        wanted.push((loss.clone(), Some(wrt.clone()), 2));
    }
    // Each family mean the gradients use, derived from its A, becomes a rule for the
    // Hessian stage: mean(F, t) => its closed form, so E[T]′ can also be found directly.
    let mut means: BTreeMap<String, Option<RecExpr<Node>>> = BTreeMap::new();
    let mut hessian_rules = derive_rules.clone();
    let mut shortcuts = vec![];
    for t in &derived {
        for n in t.iter() {
            let Node::Mean([f, _]) = n else { continue };
            let Node::Symbol(fs) = &t[*f] else { continue };
            let Some(fam) = model.family(*fs) else { continue };
            if means.contains_key(&fam.name) {
                continue;
            }
            let closed = family_mean(model, fam, derive_rules, &sets.derive_names, &foreign, limits);
            if let Some(c) = &closed {
                for rule in crate::rules::mean_rule(fam, c) {
                    hessian_rules.push(rule.rewrite()?);
                    shortcuts.push(rule);
                }
            }
            means.insert(fam.name.clone(), closed);
        }
    }
    let hess_claims: Vec<usize> = (0..model.claims.len()).filter(|&i| model.claims[i].order == 2).collect();
    let n_hterms = hterms.len();
    for &i in &hess_claims {
        hterms.push(model.claims[i].term.clone());
    }
    let second_stage = run_phase(model, &hessian_rules, &hterms, limits);
    // the tidy phase knows the closed forms too: a mean equal to a variable (E[x] = μ)
    // is written as the variable
    let mut tidy_rules = sets.tidy_rules.clone();
    for r in &shortcuts {
        tidy_rules.push(r.rewrite()?);
    }
    stages.push(Stage { name: "Hessian", rules: derive_set, shortcuts, terms: hterms.clone() });
    for (k, &i) in hess_claims.iter().enumerate() {
        let c = &model.claims[i];
        let hi = hess_reqs.iter().position(|(l, w)| *l == c.loss && *w == c.wrt);
        proved[i] = hi.is_some_and(|hi| second_stage.roots[hi] == second_stage.roots[n_hterms + k]);
    }
    {
        let g = &second_stage.egraph;
        let ex = Extractor::new(g, EvolvedCost { egraph: g, foreign: &foreign, explicit_only: false, no_dense: false });
        for (k, id) in second_stage.roots[..n_hterms].iter().enumerate() {
            derived.push(ex.find_best(*id).1);
            trails.push(vec![(1, hterms[k].clone(), derived.last().unwrap().clone())]);
            covariance.push(g[*id].nodes.iter().any(|n| matches!(n, Node::Cov(_))));
        }
    }
    // Hessian-vector products: H v, tidied below into an O(n) form.
    for (loss, wrt) in &hess_reqs {
        if let Some(dir) = model.directions.get(wrt) {
            let hi = wanted.iter().position(|(l, w, o)| l == loss && w.as_deref() == Some(wrt.as_str()) && *o == 2).unwrap();
            derived.push(on_top(&derived[hi], dir, |r, v| Node::MatMul([r, v])));
            covariance.push(false);
            trails.push(vec![]);
            wanted.push((loss.clone(), Some(wrt.clone()), 3));
        }
    }
    // Keep the requested order: J, then per variable its gradient and Hessian.
    let order: Vec<usize> = {
        let mut idx: Vec<usize> = (0..wanted.len()).collect();
        idx.sort_by_key(|&i| (wanted[i].0.clone(), wanted[i].1.clone(), wanted[i].2));
        idx
    };
    let requested = |i: &usize| {
        let (l, w, o) = &wanted[*i];
        *o == 0 || model.requests.iter().any(|r| &r.loss == l && Some(&r.wrt) == w.as_ref() && r.order == *o)
    };
    let order: Vec<usize> = order.into_iter().filter(requested).collect();

    // Family quantities the results use, with closed forms: E[T] derived from each
    // family's own A(η) by the rules, A(η) from its definition.
    let mut quantities: Vec<(RecExpr<Node>, Option<RecExpr<Node>>)> = vec![];
    for t in &derived {
        for (i, n) in t.iter().enumerate() {
            let (Node::Mean([f, arg]) | Node::LogPart([f, arg]) | Node::Cov([f, arg])) = n else { continue };
            let sub = subterm(t, Id::from(i));
            if quantities.iter().any(|(q, _)| *q == sub) {
                continue;
            }
            let Node::Symbol(fs) = &t[*f] else { continue };
            let Some(fam) = model.family(*fs) else { continue };
            let closed = match n {
                Node::Mean(_) => means
                    .entry(fam.name.clone())
                    .or_insert_with(|| family_mean(model, fam, derive_rules, &sets.derive_names, &foreign, limits))
                    .clone(),
                // Cov[T] = ∂E[T]/∂η, from the closed-form mean (not for a vector of scalar members)
                Node::Cov(_) if fam.param_shape.is_scalar() && !model.is_scalar_term(&subterm(t, *arg)) => continue,
                Node::Cov(_) => means
                    .entry(fam.name.clone())
                    .or_insert_with(|| family_mean(model, fam, derive_rules, &sets.derive_names, &foreign, limits))
                    .clone()
                    .and_then(|m| family_cov(model, fam, &m, &derive_rules, &foreign, limits)),
                // a scalar family at a vector: the members' A summed
                _ if fam.param_shape.is_scalar() && !model.is_scalar_term(&subterm(t, *arg)) => {
                    let mut a = fam.logpart.clone();
                    let root = Id::from(a.as_ref().len() - 1);
                    a.add(Node::Sum(root));
                    Some(a)
                }
                _ => Some(fam.logpart.clone()),
            };
            let arg = subterm(t, *arg);
            quantities.push((sub, closed.map(|c| replace(&c, &RecExpr::from(vec![Node::Symbol(Symbol::from(fam.param.as_str()))]), &arg))));
        }
    }

    // Stage 3, tidy: the results and closed forms together, with every rule.
    let mut tidy_terms: Vec<RecExpr<Node>> = order.iter().map(|&i| derived[i].clone()).collect();
    tidy_terms.extend(quantities.iter().filter_map(|(_, c)| c.clone()));
    let second = run_phase(model, &tidy_rules, &tidy_terms, limits);
    stages.push(Stage { name: "tidy", rules: sets.all.clone(), shortcuts: vec![], terms: tidy_terms.clone() });
    let g2 = &second.egraph;
    let ex2 = Extractor::new(g2, EvolvedCost { egraph: g2, foreign: &foreign, explicit_only: false, no_dense: false });
    // the other two costs are wanted only by some models: their extractors are made when used
    let ex2_hvp = std::cell::OnceCell::new();
    let ex2_hvp = || ex2_hvp.get_or_init(|| Extractor::new(g2, EvolvedCost { egraph: g2, foreign: &foreign, explicit_only: false, no_dense: true }));
    let ex2_explicit = std::cell::OnceCell::new();
    let ex2_explicit = || ex2_explicit.get_or_init(|| Extractor::new(g2, EvolvedCost { egraph: g2, foreign: &foreign, explicit_only: true, no_dense: false }));
    let mut tidied = second.roots.iter();
    let mut results = vec![];
    for &i in &order {
        let (loss, wrt, ord) = &wanted[i];
        let root = *tidied.next().unwrap();
        let (_, term) = if *ord == 3 { ex2_hvp().find_best(root) } else { ex2.find_best(root) };
        let mut trail = std::mem::take(&mut trails[i]);
        trail.push((2, derived[i].clone(), term.clone()));
        // the gradient in a matrix W is shaped like W: vec(G) is written G (the trail ends
        // at vec(G), where the rewriting did)
        let term = match wrt {
            Some(w) if *ord == 1 && model.vars[w].shape.is_matrix() => unvec(model, &term).unwrap_or(term),
            _ => term,
        };
        let complete = !contains(&term, |n| matches!(n, Node::Jac(_)));
        results.push(Derived { loss: loss.clone(), wrt: wrt.clone(), order: *ord, term, complete, is_covariance: covariance[i], trail });
    }
    let mut definitions: Vec<Definition> = quantities
        .into_iter()
        .map(|(term, closed)| Definition { term, explicit: closed.map(|_| ex2_explicit().find_best(*tidied.next().unwrap()).1) })
        .collect();
    // A quantity is named as the tidied results write it (its argument may have been
    // tidied too): the form in the results of its e-class.
    for d in definitions.iter_mut() {
        let Some(id) = g2.lookup_expr(&d.term) else { continue };
        let written = results.iter().flat_map(|r| (0..r.term.as_ref().len()).map(move |i| subterm(&r.term, Id::from(i))));
        if let Some(t) = written.filter(|t| t.as_ref().last().is_some_and(|n| std::mem::discriminant(n) == std::mem::discriminant(d.term.as_ref().last().unwrap()))).find(|t| g2.lookup_expr(t) == Some(id)) {
            d.term = t;
        }
    }
    // Means before log-partitions, each in order of appearance.
    definitions.sort_by_key(|d| !matches!(d.term.as_ref().last(), Some(Node::Mean(_))));

    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    for it in first.iterations.iter().chain(&second_stage.iterations).chain(&second.iterations) {
        for (name, n) in &it.applied {
            *applied.entry(name.to_string()).or_default() += n;
        }
    }
    let (stop1, sat1) = stop_text(&first);
    let (stop_h, sat_h) = stop_text(&second_stage);
    let (stop2, sat2) = stop_text(&second);
    let stop = if !sat1 {
        format!("gradient derivation {stop1}")
    } else if !sat_h {
        format!("Hessian derivation {stop_h}")
    } else if !sat2 {
        format!("tidying {stop2}")
    } else {
        stop1
    };
    let gh = &second_stage.egraph;
    let mut assumptions: Vec<String> =
        egraph.analysis.assumptions.iter().chain(&gh.analysis.assumptions).chain(&g2.analysis.assumptions).cloned().collect();
    assumptions.sort();
    assumptions.dedup();
    Ok(Derivation {
        results,
        definitions,
        assumptions,
        rules_applied: applied.into_iter().collect(),
        stop,
        saturated: sat1 && sat_h && sat2,
        iterations: first.iterations.len() + second_stage.iterations.len() + second.iterations.len(),
        nodes: egraph.total_number_of_nodes() + gh.total_number_of_nodes() + g2.total_number_of_nodes(),
        classes: egraph.number_of_classes() + gh.number_of_classes() + g2.number_of_classes(),
        conflicts: egraph.analysis.conflicts.iter().chain(&gh.analysis.conflicts).chain(&g2.analysis.conflicts).cloned().collect(),
        proved,
        stages,
    })
}

/// E[T(x)] of a family in its own parameter η, derived from A(η) by the rules
/// (A′(η) = E[T]): the family-free form of the gradient of A.
fn family_mean(model: &Model, fam: &crate::model::Family, rules: &[egg::Rewrite<Node, Facts>], names: &str, foreign: &[Symbol], limits: &Limits) -> Option<RecExpr<Node>> {
    // The same family under the same rules always gives the same mean: remember it.
    type Cache = std::sync::Mutex<std::collections::HashMap<String, Option<RecExpr<Node>>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let key = format!("{}|{}|{}|{:?}|{}", fam.name, fam.param, fam.logpart, fam.param_shape, names);
    if let Some(hit) = CACHE.get_or_init(Default::default).lock().unwrap().get(&key) {
        return hit.clone();
    }
    let closed = derive_family_mean(model, fam, rules, foreign, limits);
    CACHE.get_or_init(Default::default).lock().unwrap().insert(key, closed.clone());
    closed
}

fn derive_family_mean(model: &Model, fam: &crate::model::Family, rules: &[egg::Rewrite<Node, Facts>], foreign: &[Symbol], limits: &Limits) -> Option<RecExpr<Node>> {
    let t = gradient(&fam.logpart, &fam.param, entry_length(fam.param_shape, &fam.logpart, &fam.param));
    let phase = run_graph(Graph::new(family_facts(model, fam)), rules, &[t], limits, None);
    let g = &phase.egraph;
    let (cost, best) = Extractor::new(g, EvolvedCost { egraph: g, foreign, explicit_only: true, no_dense: false }).find_best(phase.roots[0]);
    // for a matrix η, E[T] has η's shape: vec(M) is M
    let best = if fam.param_shape.is_matrix() { unvec(&crate::model::family_model(fam), &best).unwrap_or(best) } else { best };
    (cost.0 == 0).then_some(best)
}

/// The model's facts with the family's own parameter and known parameters as variables.
fn family_facts(model: &Model, fam: &crate::model::Family) -> Facts {
    let mut facts = Facts::new(model);
    facts.vars.insert(Symbol::from(fam.param.as_str()), (fam.param_shape, fam.param_domain));
    for (k, shape, domain) in &fam.known {
        facts.vars.insert(Symbol::from(k.as_str()), (*shape, *domain));
    }
    facts
}

/// Cov[T] = ∂E[T]/∂η from a closed-form E[T], where the rules give a closed form.
fn family_cov(model: &Model, fam: &crate::model::Family, mean: &RecExpr<Node>, rules: &[egg::Rewrite<Node, Facts>], foreign: &[Symbol], limits: &Limits) -> Option<RecExpr<Node>> {
    let jac = jacobian(mean, &fam.param, entry_length(fam.param_shape, &fam.logpart, &fam.param));
    let phase = run_graph(Graph::new(family_facts(model, fam)), rules, &[jac], limits, None);
    let g = &phase.egraph;
    let (cost, best) = Extractor::new(g, EvolvedCost { egraph: g, foreign, explicit_only: true, no_dense: false }).find_best(phase.roots[0]);
    (cost.0 == 0).then_some(best)
}

/// E[T] and Cov[T] in closed form, where derived.
pub type ClosedMoments = (Option<RecExpr<Node>>, Option<RecExpr<Node>>);

/// A family on its own, as `evolved families` derives from it: a model of it alone, its
/// facts, and the derivation and tidy rule sets with the family's own rules.
struct FamilyAlone {
    model: Model,
    fam: crate::model::Family,
    facts: Facts,
    derive: Vec<egg::Rewrite<Node, Facts>>,
    tidy: Vec<egg::Rewrite<Node, Facts>>,
}

fn family_alone(fam: &crate::model::Family, rules: &[Rule]) -> Result<FamilyAlone, String> {
    let fam = crate::model::Family { from_catalog: false, ..fam.clone() };
    let model = Model { families: vec![fam.clone()], ..Default::default() };
    let own = family_rules(&model);
    let compile = |rs: &mut dyn Iterator<Item = &Rule>| rs.map(|r| r.rewrite().map_err(|e| format!("rule {}: {e}", r.name))).collect::<Result<Vec<_>, _>>();
    let derive = compile(&mut rules.iter().filter(|r| r.derive).chain(&own))?;
    let tidy = compile(&mut rules.iter().chain(&own))?;
    let facts = family_facts(&model, &fam);
    Ok(FamilyAlone { model, fam, facts, derive, tidy })
}

/// A family's E[T] and Cov[T] in closed form, as the rules derive them from its A alone:
/// E[T] = ∇A (A′ = E[T]), Cov[T] = ∂E[T]/∂η (A″ = Cov[T]); `None` where the rules leave
/// a derivative or a family quantity in place.
pub fn family_moments(fam: &crate::model::Family, rules: &[Rule], limits: &Limits) -> Result<ClosedMoments, String> {
    let FamilyAlone { model, fam, facts, derive: rewrites, tidy } = family_alone(fam, rules)?;
    let Some(mean) = derive_family_mean(&model, &fam, &rewrites, &[], limits) else { return Ok((None, None)) };
    let jac = jacobian(&mean, &fam.param, entry_length(fam.param_shape, &fam.logpart, &fam.param));
    let phase = run_graph(Graph::new(facts.clone()), &rewrites, &[jac], limits, None);
    let g = &phase.egraph;
    let (cost, cov) = Extractor::new(g, EvolvedCost { egraph: g, foreign: &[], explicit_only: true, no_dense: false }).find_best(phase.roots[0]);
    // tidied together with every rule, as results are
    let terms: Vec<RecExpr<Node>> = if cost.0 == 0 { vec![mean, cov] } else { vec![mean] };
    let phase = run_graph(Graph::new(facts), &tidy, &terms, limits, None);
    let g = &phase.egraph;
    let ex = Extractor::new(g, EvolvedCost { egraph: g, foreign: &[], explicit_only: true, no_dense: false });
    let mut out = phase.roots.iter().map(|r| ex.find_best(*r).1);
    Ok((out.next(), out.next()))
}

/// The moments of a further natural parameter P (`T(P) = …`) in closed form, as the rules
/// derive them from A: E[T_P] = ∂A/∂P, Cov[T_P] = ∂E[T_P]/∂P and the cross block
/// Cov[T, T_P] = ∂E[T]/∂P (E[T] from `family_moments`), each `None` where not derived.
#[derive(Clone, Debug)]
pub struct FurtherMoments {
    pub param: String,
    pub mean: Option<RecExpr<Node>>,
    pub cov: Option<RecExpr<Node>>,
    pub cross: Option<RecExpr<Node>>,
}

/// `FurtherMoments` of each further natural parameter of a family, given its E[T].
pub fn further_moments(fam: &crate::model::Family, mean: Option<&RecExpr<Node>>, rules: &[Rule], limits: &Limits) -> Result<Vec<FurtherMoments>, String> {
    if fam.naturals.is_empty() {
        return Ok(vec![]);
    }
    let FamilyAlone { fam, facts, derive: derive_rules, tidy, .. } = family_alone(fam, rules)?;
    let fmodel = crate::model::family_model(&fam);
    // a term in closed form (no derivative or family quantity left), tidied as results are
    let closed = |t: RecExpr<Node>| -> Option<RecExpr<Node>> {
        let phase = run_graph(Graph::new(facts.clone()), &derive_rules, &[t], limits, None);
        let g = &phase.egraph;
        let (cost, best) = Extractor::new(g, EvolvedCost { egraph: g, foreign: &[], explicit_only: true, no_dense: false }).find_best(phase.roots[0]);
        if cost.0 != 0 {
            return None;
        }
        let phase = run_graph(Graph::new(facts.clone()), &tidy, &[best], limits, None);
        let g = &phase.egraph;
        Some(Extractor::new(g, EvolvedCost { egraph: g, foreign: &[], explicit_only: true, no_dense: false }).find_best(phase.roots[0]).1)
    };
    let mut out = vec![];
    for (p, _) in &fam.naturals {
        let shape = fam.known.iter().find(|k| &k.0 == p).map(|k| k.1).unwrap_or(crate::lang::SCALAR);
        let len = entry_length(shape, &fam.logpart, p);
        let grad = closed(gradient(&fam.logpart, p, len));
        // a matrix P: E[T_P] in P's shape (the Jacobians below are over vec(P))
        let m = grad.as_ref().map(|g| if shape.is_matrix() { unvec(&fmodel, g).unwrap_or_else(|| g.clone()) } else { g.clone() });
        let cov = grad.as_ref().and_then(|g| closed(jacobian(g, p, len)));
        let cross = mean.and_then(|e| closed(jacobian(e, p, len)));
        out.push(FurtherMoments { param: p.clone(), mean: m, cov, cross });
    }
    Ok(out)
}

/// The gradient of a scalar term: D(term, x)ᵀ; for a vector of a small fixed length n
/// (R², R³, R⁴) entry by entry, [∂term/∂x₁, …, ∂term/∂xₙ], so the rules do scalar calculus.
/// G for vec(G), through sums, scalar factors and signs (Σᵢ vec(Gᵢ), c vec(G), vec(G) −
/// vec(H)): a gradient in a matrix, or a matrix family's E[T], in the matrix's shape.
fn unvec(model: &Model, t: &RecExpr<Node>) -> Option<RecExpr<Node>> {
    let shapes = crate::lang::term_shapes(t, &|s| model.symbol_shape(s).or_else(|| Some(crate::lang::SCALAR))).ok()?;
    let scalar = |c: Id| shapes[usize::from(c)].is_scalar();
    fn go(t: &RecExpr<Node>, id: Id, out: &mut RecExpr<Node>, scalar: &dyn Fn(Id) -> bool) -> Option<Id> {
        let copy = |c: Id, out: &mut RecExpr<Node>| -> Id {
            let sub = subterm(t, c);
            let base = out.as_ref().len();
            for n in sub.iter() {
                out.add(n.clone().map_children(|k| Id::from(usize::from(k) + base)));
            }
            Id::from(out.as_ref().len() - 1)
        };
        Some(match &t[id] {
            Node::Vec(g) => copy(*g, out),
            Node::SumOver([i, n, b]) => {
                let b = go(t, *b, out, scalar)?;
                let (i, n) = (copy(*i, out), copy(*n, out));
                out.add(Node::SumOver([i, n, b]))
            }
            Node::Neg(a) => {
                let a = go(t, *a, out, scalar)?;
                out.add(Node::Neg(a))
            }
            Node::Mul([c, a]) | Node::MatMul([c, a]) if scalar(*c) => {
                let a = go(t, *a, out, scalar)?;
                let c = copy(*c, out);
                out.add(Node::Mul([c, a]))
            }
            Node::Mul([a, c]) | Node::MatMul([a, c]) if scalar(*c) => {
                let a = go(t, *a, out, scalar)?;
                let c = copy(*c, out);
                out.add(Node::Mul([a, c]))
            }
            Node::Div([a, c]) if scalar(*c) => {
                let a = go(t, *a, out, scalar)?;
                let c = copy(*c, out);
                out.add(Node::Div([a, c]))
            }
            Node::Add([a, b]) | Node::Sub([a, b]) => {
                let (a, b) = (go(t, *a, out, scalar)?, go(t, *b, out, scalar)?);
                out.add(if matches!(t[id], Node::Add(_)) { Node::Add([a, b]) } else { Node::Sub([a, b]) })
            }
            _ => return None,
        })
    }
    let mut out = RecExpr::default();
    go(t, Id::from(t.as_ref().len() - 1), &mut out, &scalar)?;
    Some(out)
}

pub(crate) fn gradient(term: &RecExpr<Node>, x: &str, len: Option<usize>) -> RecExpr<Node> {
    let Some(n) = len else {
        let mut t = on_top(term, x, |r, x| Node::Jac([r, x]));
        let jac = Id::from(t.as_ref().len() - 1);
        t.add(Node::Transpose(jac));
        return t;
    };
    let mut t = term.clone();
    let root = Id::from(t.as_ref().len() - 1);
    let entries = derivatives_by_entry(&mut t, root, x, n);
    t.add(Node::Vector(entries.into()));
    t
}

/// The Jacobian D(term, x); for x of a small fixed length n, row by row from the
/// entries of a column `term` of the same length (the Hessian from a gradient).
pub(crate) fn jacobian(term: &RecExpr<Node>, x: &str, len: Option<usize>) -> RecExpr<Node> {
    let Some(n) = len else { return on_top(term, x, |r, x| Node::Jac([r, x])) };
    let mut t = term.clone();
    let root = Id::from(t.as_ref().len() - 1);
    let mut rows = vec![];
    for i in 1..=n {
        let k = t.add(Node::Num((i as i64).into()));
        let entry = t.add(Node::At([root, k]));
        let row = derivatives_by_entry(&mut t, entry, x, n);
        let v = t.add(Node::Vector(row.into()));
        rows.push(t.add(Node::Transpose(v)));
    }
    t.add(Node::Vector(rows.into()));
    t
}

/// ∂f/∂x₁, …, ∂f/∂xₙ for the subterm `f` of `t`, added to `t`.
fn derivatives_by_entry(t: &mut RecExpr<Node>, f: Id, x: &str, n: usize) -> Vec<Id> {
    let xs = t.add(Node::Symbol(Symbol::from(x)));
    (1..=n)
        .map(|i| {
            let k = t.add(Node::Num((i as i64).into()));
            let xi = t.add(Node::At([xs, k]));
            t.add(Node::Jac([f, xi]))
        })
        .collect()
}

/// The length of a parameter that is differentiated entry by entry: a vector of length 2
/// to 4 whose entries `term` uses one by one (`eta[1]`, as a two-parameter family's A
/// does); a vector used as a whole keeps its matrix calculus (p − q, not [p₁ − q₁, …]).
pub(crate) fn entry_length(shape: crate::lang::Shape, term: &RecExpr<Node>, x: &str) -> Option<usize> {
    entry_length_in(None, shape, term, x)
}

/// `entry_length`, where the term's families count too: −log p(x | η) of a family whose A
/// uses η's entries (normal2) goes entry by entry.
pub(crate) fn entry_length_in(model: Option<&Model>, shape: crate::lang::Shape, term: &RecExpr<Node>, x: &str) -> Option<usize> {
    let s = Node::Symbol(Symbol::from(x));
    let by_entry = term.iter().any(|n| match n {
        Node::At([v, _]) => term[*v] == s,
        Node::LogP([f, ..]) | Node::LogPart([f, _]) | Node::Kl([f, ..]) => match (&term[*f], model) {
            (Node::Symbol(fs), Some(m)) => m.family(*fs).is_some_and(|fam| entry_length(fam.param_shape, &fam.logpart, &fam.param).is_some()),
            _ => false,
        },
        _ => false,
    });
    crate::lang::fixed_length(shape).filter(|n| *n <= 4 && by_entry)
}

/// `term` with one node on top, `top(root, s)`, where `s` is the symbol `sym`.
pub(crate) fn on_top(term: &RecExpr<Node>, sym: &str, top: impl FnOnce(Id, Id) -> Node) -> RecExpr<Node> {
    let mut t = term.clone();
    let root = Id::from(t.as_ref().len() - 1);
    let s = t.add(Node::Symbol(Symbol::from(sym)));
    t.add(top(root, s));
    t
}

/// Adds `t` to `out` (its nodes after those already there) and returns its root.
pub(crate) fn append(out: &mut RecExpr<Node>, t: &RecExpr<Node>) -> Id {
    let base = out.as_ref().len();
    for m in t.iter() {
        out.add(m.clone().map_children(|c| Id::from(usize::from(c) + base)));
    }
    Id::from(out.as_ref().len() - 1)
}

/// `e` with the subterms `pick` chooses (by their index in `e` and top node) replaced by
/// the terms it gives, all at once: a term put in is not searched again.
fn rebuild<'t>(e: &RecExpr<Node>, pick: impl Fn(usize, &Node) -> Option<&'t RecExpr<Node>>) -> RecExpr<Node> {
    let mut out = RecExpr::default();
    let mut map: Vec<Id> = vec![];
    for (i, n) in e.iter().enumerate() {
        let id = match pick(i, n) {
            Some(t) => append(&mut out, t),
            None => out.add(n.clone().map_children(|c| map[usize::from(c)])),
        };
        map.push(id);
    }
    out
}

/// `e` with each of the symbols given replaced by its term, all at once (a term put in for
/// one symbol is not searched for the others).
pub fn substitute(e: &RecExpr<Node>, with: &[(Symbol, &RecExpr<Node>)]) -> RecExpr<Node> {
    rebuild(e, |_, n| match n {
        Node::Symbol(s) => with.iter().find(|(k, _)| k == s).map(|(_, t)| *t),
        _ => None,
    })
}

/// `e` with every subterm equal to `from` (a symbol, or any term) replaced by `to`.
pub fn replace(e: &RecExpr<Node>, from: &RecExpr<Node>, to: &RecExpr<Node>) -> RecExpr<Node> {
    let root = from.as_ref().last();
    // compare whole subterms only where the top node matches
    rebuild(e, |i, n| (root.is_some_and(|r| r.matches(n)) && subterm(e, Id::from(i)) == *from).then_some(to))
}

/// Per-iteration sizes and the largest classes, on stderr (set EVOLVED_DEBUG).
fn debug_dump(runner: &Phase) {
    for (i, it) in runner.iterations.iter().enumerate() {
        let mut top: Vec<(&egg::Symbol, &usize)> = it.applied.iter().map(|(n, k)| (n, k)).collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        eprintln!("iteration {i}: {} nodes, {} classes; most applied: {:?}", it.egraph_nodes, it.egraph_classes, &top[..top.len().min(5)]);
    }
    let mut classes: Vec<&egg::EClass<Node, crate::analysis::Data>> = runner.egraph.classes().collect();
    classes.sort_by_key(|c| std::cmp::Reverse(c.nodes.len()));
    if let Ok(ids) = std::env::var("EVOLVED_DEBUG_CLASSES") {
        for id in ids.split(',').filter_map(|s| s.parse::<usize>().ok()) {
            let c = &runner.egraph[Id::from(id)];
            let nodes: Vec<String> = c.nodes.iter().map(|n| format!("{n} {:?}", n.children())).collect();
            eprintln!("class {id} (free {:?}): {}", c.data.free, nodes.join(" | "));
        }
    }
    for c in classes.iter().take(5) {
        let sample: Vec<String> = c.nodes.iter().take(12).map(|n| format!("{n} {:?}", n.children())).collect();
        eprintln!("class {} ({} nodes, shape {:?}): {}", c.id, c.nodes.len(), c.data.shape, sample.join(" | "));
    }
}

/// The subterm rooted at `id`.
pub fn subterm(term: &RecExpr<Node>, id: Id) -> RecExpr<Node> {
    term[id].build_recexpr(|c| term[c].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our extractor chooses what egg's does, for every class of the examples' gradient
    /// e-graphs and under every cost.
    #[test]
    fn extractor_is_eggs() {
        let rules = crate::default_rules();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "ef") {
                continue;
            }
            let model = crate::model_from_text(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let sets = rule_sets(&rules, family_rules(&model)).unwrap();
            let terms: Vec<RecExpr<Node>> = model
                .requests
                .iter()
                .map(|r| {
                    let loss = model.loss(&r.loss).unwrap();
                    gradient(loss, &r.wrt, entry_length_in(Some(&model), model.vars[&r.wrt].shape, loss, &r.wrt))
                })
                .collect();
            let phase = run_phase(&model, &sets.derive_rules, &terms, &Limits::default());
            let g = &phase.egraph;
            let foreign: Vec<Symbol> = model.families.iter().filter(|f| f.from_catalog).map(|f| Symbol::from(f.name.as_str())).take(3).collect();
            for (explicit_only, no_dense) in [(false, false), (false, true), (true, false)] {
                let cost = || EvolvedCost { egraph: g, foreign: &foreign, explicit_only, no_dense };
                let (ours, eggs) = (Extractor::new(g, cost()), egg::Extractor::new(g, cost()));
                for c in g.classes() {
                    assert_eq!(ours.find_best(c.id), eggs.find_best(c.id), "{}: class {}", p.display(), c.id);
                }
            }
        }
    }
}
