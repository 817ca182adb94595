//! The derivation as steps (`--steps`). Each part of a result's way through the
//! saturation runs is replayed from its start alone, with egg's explanations on; the
//! rewrites that lead to the result become a list of whole expressions, each with the rule
//! that made it and the side conditions that rule relied on. How a rule shows is said in
//! its rules file: `steps quiet` rules (bookkeeping) fold into the step before, and
//! neighbouring `steps grouped` rules of one file make one step.

use crate::derive::{gradient, new_graph, on_top, run_graph, Derivation, Derived, Limits};
use crate::lang::Node;
use crate::model::{Domain, Model};
use crate::rules::{Cond, Rule};
use egg::{ENodeOrVar, FlatTerm, Id, Language, PatternAst, RecExpr, Var};
use std::collections::HashMap;

/// A side condition or assumption a step relied on, with the terms the rule matched.
#[derive(Clone, Debug, PartialEq)]
pub enum Side {
    /// the first does not depend on the second
    Indep(RecExpr<Node>, RecExpr<Node>),
    Domain(RecExpr<Node>, Domain),
    /// the family's statistic is an indicator (one-hot or binary x)
    Indicator(RecExpr<Node>),
    /// the rule's `assume` text, with its pattern variables and what they matched
    Assume(String, Vec<(String, RecExpr<Node>)>),
}

#[derive(Clone, Debug)]
pub struct Step {
    /// the whole expression after the step
    pub term: RecExpr<Node>,
    /// the rules, in the order they applied (a shown step may stand for several)
    pub rules: Vec<String>,
    /// their descriptions, each once
    pub reasons: Vec<String>,
    pub sides: Vec<Side>,
    /// bookkeeping only
    pub quiet: bool,
    /// the rules file, for a grouped rule
    pub group: Option<String>,
}

/// The steps from one request to its result.
#[derive(Clone, Debug)]
pub struct Steps {
    pub start: RecExpr<Node>,
    pub steps: Vec<Step>,
    /// stages whose rewrites could not be replayed (the result is still right; its steps
    /// through that stage are missing)
    pub gaps: Vec<String>,
}

/// The steps of every result of `d`, in its order. With `all`, bookkeeping steps are
/// listed one by one; otherwise each folds into the step before it, and neighbouring
/// steps for the same reason are merged.
pub fn explain(model: &Model, d: &Derivation, limits: &Limits, all: bool) -> Result<Vec<Steps>, String> {
    let every: &[Rule] = d.stages.last().map_or(&[], |s| &*s.rules);
    let shortcuts: Vec<Rule> = d.stages.iter().flat_map(|s| s.shortcuts.iter().cloned()).collect();
    // every rule at once can grow fast: small limits, then the staged way
    let direct_limits = Limits { seconds: limits.seconds.min(0.5), nodes: limits.nodes.min(4000), iterations: limits.iterations };
    let mut out = vec![];
    for r in &d.results {
        // where the rewriting ended: vec(G) for a gradient then written in its matrix's shape
        let end = r.trail.last().map_or(&r.term, |t| &t.2);
        let reshape = (end != &r.term).then(|| Step {
            term: r.term.clone(),
            rules: vec![],
            reasons: vec!["vec(G) written as G, shaped like the variable".into()],
            sides: vec![],
            quiet: false,
            group: None,
        });
        // The direct way, from the result shown before (∇J from J's derived form), with
        // every rule; when that does not meet the result, the way the derivation went.
        if let Some(from) = direct_start(model, d, r) {
            if let Some(flat) = segment(model, every, &shortcuts, std::slice::from_ref(&from), &from, end, &direct_limits)? {
                let mut steps: Vec<Step> = flat.windows(2).map(|w| step(&w[0], &w[1], every, &shortcuts)).collect();
                steps.extend(reshape);
                out.push(Steps { start: from, steps: if all { steps } else { group(steps) }, gaps: vec![] });
                continue;
            }
        }
        let start = r.trail.first().map_or_else(|| r.term.clone(), |t| t.1.clone());
        let (mut steps, mut gaps) = (vec![], vec![]);
        for (s, from, to) in &r.trail {
            if from == to {
                continue;
            }
            let stage = &d.stages[*s];
            // From the start alone (no detour through other terms); as a last resort the
            // stage as it ran.
            let mut flat = segment(model, &stage.rules, &stage.shortcuts, std::slice::from_ref(from), from, to, limits)?;
            if flat.is_none() {
                let with: Vec<Rule> = stage.rules.iter().chain(&stage.shortcuts).cloned().collect();
                flat = replay(model, &with, &stage.terms, from, to, limits)?;
            }
            match flat {
                Some(flat) => steps.extend(flat.windows(2).map(|w| step(&w[0], &w[1], &stage.rules, &stage.shortcuts))),
                None => gaps.push(stage.name.to_string()),
            }
        }
        steps.extend(reshape);
        let steps = if all { steps } else { group(steps) };
        out.push(Steps { start, steps, gaps });
    }
    Ok(out)
}

/// Where a result's steps start when they follow on from the result before: the loss as
/// written, ∇ of the loss's derived form, ∂ of the derived gradient, the Hessian times v.
fn direct_start(model: &Model, d: &Derivation, r: &Derived) -> Option<RecExpr<Node>> {
    let before = |order: usize| d.results.iter().find(|x| x.loss == r.loss && x.order == order && (order == 0 || x.wrt == r.wrt)).map(|x| &x.term);
    let wrt = r.wrt.as_deref().unwrap_or("");
    match r.order {
        0 => model.loss(&r.loss).cloned(),
        1 => Some(gradient(before(0)?, wrt, crate::derive::entry_length_in(Some(model), model.vars.get(wrt)?.shape, model.loss(&r.loss)?, wrt))),
        2 => Some(crate::derive::jacobian(before(1)?, wrt, crate::derive::entry_length_in(Some(model), model.vars.get(wrt)?.shape, model.loss(&r.loss)?, wrt))),
        _ => Some(on_top(before(2)?, model.directions.get(wrt)?, |h, v| Node::MatMul([h, v]))),
    }
}

/// The rewrites from `from` to `to` by these rules over `terms`: first without the
/// shortcut rules (so that the steps show the identities), then with them.
#[allow(clippy::too_many_arguments)]
fn segment(model: &Model, rules: &[Rule], shortcuts: &[Rule], terms: &[RecExpr<Node>], from: &RecExpr<Node>, to: &RecExpr<Node>, limits: &Limits) -> Result<Option<Vec<FlatTerm<Node>>>, String> {
    if let Some(flat) = replay(model, rules, terms, from, to, limits)? {
        return Ok(Some(flat));
    }
    if shortcuts.is_empty() {
        return Ok(None);
    }
    let with: Vec<Rule> = rules.iter().chain(shortcuts).cloned().collect();
    replay(model, &with, terms, from, to, limits)
}

/// The rewrites from `from` to `to` when the rules, run over `terms` with explanations
/// on, make them equal.
fn replay(model: &Model, rules: &[Rule], terms: &[RecExpr<Node>], from: &RecExpr<Node>, to: &RecExpr<Node>, limits: &Limits) -> Result<Option<Vec<FlatTerm<Node>>>, String> {
    let rewrites = rules.iter().map(|r| r.rewrite()).collect::<Result<Vec<_>, _>>()?;
    let mut phase = run_graph(new_graph(model).with_explanations_enabled(), &rewrites, terms, limits, (terms[0] == *from).then_some(to));
    if std::env::var_os("EVOLVED_DEBUG").is_some() {
        let r = &phase;
        eprintln!("steps: replay of {} rules over {} terms: {:?} after {} iterations, {} nodes", rules.len(), terms.len(), r.stop_reason, r.iterations.len(), r.egraph.total_number_of_nodes());
    }
    let g = &mut phase.egraph;
    let (a, b) = (g.add_expr(from), g.add_expr(to));
    if g.find(a) != g.find(b) {
        return Ok(None);
    }
    let mut explanation = g.explain_equivalence(from, to);
    Ok(Some(explanation.make_flat_explanation().clone()))
}

/// The step from `before` to `after`: the rule at the rewritten position, and its side
/// conditions read off the terms it matched.
fn step(before: &FlatTerm<Node>, after: &FlatTerm<Node>, rules: &[Rule], shortcuts: &[Rule]) -> Step {
    let term = after.get_recexpr();
    let Some((path, name, forward)) = rewrite_at(after, &mut vec![]) else {
        return Step { term, rules: vec![], reasons: vec![], sides: vec![], quiet: true, group: None };
    };
    let Some(rule) = rules.iter().chain(shortcuts).find(|r| r.name == name) else {
        // analysis unions (constant folding) have no rule
        return Step { term, rules: vec![name], reasons: vec![], sides: vec![], quiet: true, group: None };
    };
    let matched = if forward { at(before, &path) } else { at(after, &path) };
    let mut binds = HashMap::new();
    let sides = if matches(&rule.lhs, Id::from(rule.lhs.as_ref().len() - 1), matched, &mut binds) { sides(rule, &binds) } else { vec![] };
    let file = rule.origin.rsplit_once(':').map_or(rule.origin.as_str(), |(f, _)| f);
    let group = (rule.steps == "grouped").then(|| file.to_string());
    Step { term, rules: vec![name], reasons: vec![rule.description.clone()], sides, quiet: rule.steps == "quiet", group }
}

/// Where a flat explanation term was rewritten: its path, the rule, and whether the rule
/// ran forward.
fn rewrite_at(t: &FlatTerm<Node>, path: &mut Vec<usize>) -> Option<(Vec<usize>, String, bool)> {
    if let Some(r) = t.forward_rule {
        return Some((path.clone(), r.to_string(), true));
    }
    if let Some(r) = t.backward_rule {
        return Some((path.clone(), r.to_string(), false));
    }
    for (i, c) in t.children.iter().enumerate() {
        path.push(i);
        if let Some(found) = rewrite_at(c, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

fn at<'a>(t: &'a FlatTerm<Node>, path: &[usize]) -> &'a FlatTerm<Node> {
    path.iter().fold(t, |t, &i| &t.children[i])
}

/// Matches a rule's pattern against a term, binding its variables.
fn matches(p: &PatternAst<Node>, id: Id, t: &FlatTerm<Node>, binds: &mut HashMap<Var, RecExpr<Node>>) -> bool {
    match &p[id] {
        ENodeOrVar::Var(v) => {
            let e = t.get_recexpr();
            binds.entry(*v).or_insert_with(|| e.clone()) == &e
        }
        ENodeOrVar::ENode(n) => {
            n.matches(&t.node) && n.children().iter().zip(&t.children).all(|(c, tc)| matches(p, *c, tc, binds))
        }
    }
}

/// The conditions a reader should know a step relied on (shape bookkeeping left out).
fn sides(rule: &Rule, binds: &HashMap<Var, RecExpr<Node>>) -> Vec<Side> {
    let get = |v: &Var| binds.get(v).cloned();
    let mut out: Vec<Side> = rule
        .conds
        .iter()
        .filter_map(|c| match c {
            Cond::Indep(a, x) => Some(Side::Indep(get(a)?, get(x)?)),
            Cond::Domain(a, d) => Some(Side::Domain(get(a)?, *d)),
            Cond::Indicator(f, _) => Some(Side::Indicator(get(f)?)),
            _ => None,
        })
        .collect();
    if let Some(text) = &rule.assume {
        let mut vars: Vec<(String, RecExpr<Node>)> = binds.iter().map(|(v, e)| (v.to_string()[1..].to_string(), e.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(Side::Assume(text.clone(), vars));
    }
    out
}

/// Folds bookkeeping steps into the step before them and merges neighbours that share
/// their reason or their group.
fn group(steps: Vec<Step>) -> Vec<Step> {
    let mut out: Vec<Step> = vec![];
    for s in steps {
        let merge = match out.last() {
            None => false,
            Some(last) => s.quiet || (!last.reasons.is_empty() && last.reasons == s.reasons) || (s.group.is_some() && last.group == s.group),
        };
        if merge {
            let last = out.last_mut().unwrap();
            last.term = s.term;
            last.rules.extend(s.rules);
            for r in s.reasons {
                if !last.quiet && s.quiet {
                    continue;
                }
                if !last.reasons.contains(&r) {
                    last.reasons.push(r);
                }
            }
            for side in s.sides {
                if !last.sides.contains(&side) {
                    last.sides.push(side);
                }
            }
        } else {
            out.push(s);
        }
    }
    out
}
