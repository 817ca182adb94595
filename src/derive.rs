//! The derivation: the model's losses and the requested derivatives go into one e-graph,
//! the rules run to saturation (or a limit), and the simplest forms are extracted.

use crate::analysis::{Facts, Graph};
use crate::lang::Node;
use crate::model::Model;
use crate::rules::{family_rules, Rule};
use egg::{CostFunction, Extractor, Id, Language, RecExpr, Runner, SimpleScheduler, StopReason, Symbol};
use std::collections::BTreeMap;
use std::time::Duration;

/// Limits on the e-graph; `EVOLVED_ITERS` and `EVOLVED_NODES` override them.
#[derive(Clone, Debug)]
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
    pub seconds: f64,
}

impl Default for Limits {
    fn default() -> Self {
        let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        Limits { iterations: env("EVOLVED_ITERS", 40), nodes: env("EVOLVED_NODES", 50_000), seconds: 5.0 }
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
}

/// The extraction cost: terms with unevaluated derivatives or expectations lose to any
/// term without; then terms in family quantities (E[T], A) win over their expansions —
/// the evolved notation; then the smaller term; then the printed text, so the choice is
/// deterministic.
pub struct EvolvedCost<'a> {
    pub egraph: &'a Graph,
    /// forbid family quantities (for closed forms of definitions)
    pub explicit_only: bool,
}

pub type Cost = (u32, u32, u32, String);

impl CostFunction<Node> for EvolvedCost<'_> {
    type Cost = Cost;
    fn cost<C: FnMut(Id) -> Cost>(&mut self, enode: &Node, mut costs: C) -> Cost {
        let (mut bad, mut family, mut size) = (0u32, 0u32, 1u32);
        match enode {
            Node::Jac(_) | Node::Expect(_) | Node::LogP(_) => bad = 1,
            Node::Mean(_) | Node::LogPart(_) if self.explicit_only => bad = 1,
            Node::Cov(_) | Node::Second(_) if self.explicit_only => bad = 1,
            Node::Cov(_) | Node::Second(_) => family = 1,
            Node::Exp(_) | Node::Log(_) | Node::Softmax(_) | Node::Sigmoid(_) | Node::LogSumExp(_) => family = 1,
            _ => {}
        }
        let mut text = enode.to_string();
        for (i, c) in enode.children().iter().enumerate() {
            let (b, f, s, t) = costs(*c);
            // the family's name costs nothing
            if i == 0 && enode.is_family_quantity() {
                text.push_str(&format!(" {t}"));
                continue;
            }
            bad = bad.saturating_add(b);
            family = family.saturating_add(f);
            size = size.saturating_add(s);
            text.push(' ');
            text.push_str(&t);
        }
        text.truncate(200);
        (bad, family, size, format!("({text})"))
    }
}

fn contains(term: &RecExpr<Node>, pred: impl Fn(&Node) -> bool) -> bool {
    term.iter().any(pred)
}

/// The e-graph for a model: its analysis and the terms whose forms are wanted.
pub fn new_graph(model: &Model) -> Graph {
    Graph::new(Facts::new(model))
}

/// Derives every requested quantity of the model with these rules.
pub fn derive(model: &Model, rules: &[Rule], limits: &Limits) -> Result<Derivation, String> {
    let mut all: Vec<Rule> = rules.to_vec();
    all.extend(family_rules(model));
    let rewrites = all.iter().map(|r| r.rewrite().map_err(|e| format!("rule {} ({}): {e}", r.name, r.origin))).collect::<Result<Vec<_>, _>>()?;

    let mut egraph = new_graph(model);
    // (loss, wrt, order) → root
    let mut roots: Vec<(String, Option<String>, usize, Id)> = vec![];
    let mut loss_ids: BTreeMap<String, Id> = BTreeMap::new();
    for req in &model.requests {
        let lid = *loss_ids.entry(req.loss.clone()).or_insert_with(|| egraph.add_expr(model.loss(&req.loss).unwrap()));
        if !roots.iter().any(|(l, w, o, _)| l == &req.loss && w.is_none() && *o == 0) {
            roots.push((req.loss.clone(), None, 0, lid));
        }
        let x = egraph.add(Node::Symbol(Symbol::from(req.wrt.as_str())));
        let jac = egraph.add(Node::Jac([lid, x]));
        let grad = egraph.add(Node::Transpose(jac));
        let id = if req.order == 1 { grad } else { egraph.add(Node::Jac([grad, x])) };
        roots.push((req.loss.clone(), Some(req.wrt.clone()), req.order, id));
    }

    let runner = Runner::default()
        .with_egraph(egraph)
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        .with_time_limit(Duration::from_secs_f64(limits.seconds))
        .run(&rewrites);

    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *applied.entry(name.to_string()).or_default() += n;
        }
    }
    let (stop, saturated) = match &runner.stop_reason {
        Some(StopReason::Saturated) => ("saturated".to_string(), true),
        Some(StopReason::IterationLimit(n)) => (format!("stopped at the iteration limit ({n}); raise EVOLVED_ITERS"), false),
        Some(StopReason::NodeLimit(n)) => (format!("stopped at the node limit ({n}); raise EVOLVED_NODES"), false),
        Some(StopReason::TimeLimit(t)) => (format!("stopped at the time limit ({t:.1} s)"), false),
        Some(StopReason::Other(s)) => (s.clone(), false),
        None => ("not run".to_string(), false),
    };
    let egraph = &runner.egraph;
    let extractor = Extractor::new(egraph, EvolvedCost { egraph, explicit_only: false });
    let mut results = vec![];
    for (loss, wrt, order, id) in &roots {
        let (_, term) = extractor.find_best(*id);
        let complete = !contains(&term, |n| matches!(n, Node::Jac(_)));
        let is_covariance = egraph[egraph.find(*id)].nodes.iter().any(|n| matches!(n, Node::Cov(_)));
        results.push(Derived { loss: loss.clone(), wrt: wrt.clone(), order: *order, term, complete, is_covariance });
    }

    // Closed forms of the family quantities the results use.
    let explicit = Extractor::new(egraph, EvolvedCost { egraph, explicit_only: true });
    let mut definitions: Vec<Definition> = vec![];
    for r in &results {
        for (i, n) in r.term.iter().enumerate() {
            if !matches!(n, Node::Mean(_) | Node::LogPart(_)) {
                continue;
            }
            let sub = subterm(&r.term, Id::from(i));
            if definitions.iter().any(|d| d.term == sub) {
                continue;
            }
            let class = egraph.lookup_expr(&sub);
            let explicit = class.and_then(|c| {
                let (cost, t) = explicit.find_best(c);
                (cost.0 == 0).then_some(t)
            });
            definitions.push(Definition { term: sub, explicit });
        }
    }
    // Means before log-partitions, each in order of appearance.
    definitions.sort_by_key(|d| !matches!(d.term.as_ref().last(), Some(Node::Mean(_))));

    Ok(Derivation {
        results,
        definitions,
        assumptions: egraph.analysis.assumptions.iter().cloned().collect(),
        rules_applied: applied.into_iter().collect(),
        stop,
        saturated,
        iterations: runner.iterations.len(),
        nodes: egraph.total_number_of_nodes(),
        classes: egraph.number_of_classes(),
        conflicts: egraph.analysis.conflicts.clone(),
    })
}

/// The subterm rooted at `id`.
pub fn subterm(term: &RecExpr<Node>, id: Id) -> RecExpr<Node> {
    term[id].build_recexpr(|c| term[c].clone())
}
