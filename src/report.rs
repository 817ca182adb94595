//! A derivation as the user sees it: results in evolved notation, the named quantities,
//! the assumptions used, and the check — as text, LaTeX or JSON.

use crate::check::{label, CheckReport, Spectrum};
use crate::derive::{Definition, Derivation, Derived};
use crate::eval::{Env, Evaluator, Mat};
use crate::lang::{Node, Shape};
use crate::model::{Model, Role};
use crate::print::{name, Printer, Style};
use crate::rules::{replace_word, Rule};
use crate::steps::{Side, Steps};
use crate::structure::{structure, Form};
use egg::{RecExpr, Symbol};
use serde_json::{json, Value};

/// Everything one run produced.
pub struct Outcome<'a> {
    pub model: &'a Model,
    pub derivation: &'a Derivation,
    pub check: Option<&'a CheckReport>,
    /// values at the `--at` point
    pub at: Option<&'a Env<f64>>,
    pub rules: &'a [Rule],
    /// the derivation step by step (`--steps`), one list per result
    pub steps: Option<&'a [Steps]>,
    /// results in index notation (`--notation index`)
    pub index: bool,
}

impl<'a> Outcome<'a> {
    /// The results alone: no check, values, steps or index notation.
    pub fn new(model: &'a Model, derivation: &'a Derivation, rules: &'a [Rule]) -> Self {
        Outcome { model, derivation, check: None, at: None, rules, steps: None, index: false }
    }
}

/// The names results use for family means: p, or p₁, p₂ when several.
pub fn names(model: &Model, defs: &[Definition], style: Style) -> Vec<(RecExpr<Node>, String)> {
    let means: Vec<&Definition> = defs.iter().filter(|d| matches!(d.term.as_ref().last(), Some(Node::Mean(_)))).collect();
    let base = |d: &Definition| -> String {
        let fam = match d.term.as_ref().last() {
            Some(Node::Mean([f, _])) => match &d.term[*f] {
                Node::Symbol(s) => model.family(*s),
                _ => None,
            },
            _ => None,
        };
        fam.and_then(|f| f.mean_name.clone()).unwrap_or_else(|| "mu".into())
    };
    // a name must not be a variable's (in either spelling) or another mean's
    let taken = |n: &str, out: &[(RecExpr<Node>, String)]| {
        model.vars.keys().any(|v| v == n || name(v, style) == name(n, style)) || out.iter().any(|(_, o)| *o == name(n, style))
    };
    let mut out: Vec<(RecExpr<Node>, String)> = vec![];
    for (i, d) in means.iter().enumerate() {
        let b = base(d);
        let clash = means.iter().filter(|e| base(e) == b).count() > 1;
        let mut raw = if clash { format!("{b}{}", i + 1) } else { b.clone() };
        let mut k = 1;
        while taken(&raw, &out) {
            k += 1;
            raw = format!("{b}_{k}");
        }
        // the mean at a sum's index i is pᵢ
        let index = d.term.iter().find_map(|n| match n {
            Node::Symbol(s) if model.indices.contains_key(s.as_str()) => Some(s.to_string()),
            _ => None,
        });
        let shown = match (index, style) {
            (None, _) => name(&raw, style),
            (Some(i), Style::Latex) => format!("{}_{{{i}}}", name(&raw, style)),
            (Some(i), Style::Ascii) => format!("{}_{i}", name(&raw, style)),
            (Some(i), Style::Unicode) => format!("{}{}", name(&raw, style), crate::print::index_sub(&i)),
        };
        out.push((d.term.clone(), shown));
    }
    out
}

fn params(model: &Model, style: Style) -> String {
    model.vars.values().filter(|v| v.role == Role::Param).map(|v| name(&v.name, style)).collect::<Vec<_>>().join(", ")
}

fn many_params(model: &Model) -> bool {
    model.vars.values().filter(|v| v.role == Role::Param).count() > 1
}

/// The left side of a result line: J(θ), ∇J, ∇²J (with the variable when there are several).
pub fn lhs(model: &Model, r: &Derived, style: Style) -> String {
    let loss = name(&r.loss, style);
    let wrt = r.wrt.as_deref().map(|w| name(w, style)).unwrap_or_default();
    let sub = many_params(model);
    if r.order == 3 {
        let v = model.directions.get(r.wrt.as_deref().unwrap_or("")).map(|v| name(v, style)).unwrap_or_default();
        let h = lhs(model, &Derived { order: 2, ..r.clone() }, style);
        return match style {
            Style::Ascii => format!("{h} @ {v}"),
            Style::Latex => format!("{h}\\, {v}"),
            Style::Unicode => format!("{h} {v}"),
        };
    }
    match (style, r.order) {
        (_, 0) => format!("{loss}({})", params(model, style)),
        (Style::Latex, 1) if sub => format!("\\nabla_{{{wrt}}} {loss}"),
        (Style::Latex, 1) => format!("\\nabla {loss}"),
        (Style::Latex, _) if sub => format!("\\nabla^2_{{{wrt}}} {loss}"),
        (Style::Latex, _) => format!("\\nabla^2 {loss}"),
        (Style::Unicode, 1) if sub => format!("∇_{wrt} {loss}"),
        (Style::Unicode, 1) => format!("∇{loss}"),
        (Style::Unicode, _) if sub => format!("∇²_{wrt} {loss}"),
        (Style::Unicode, _) => format!("∇²{loss}"),
        (Style::Ascii, 1) if sub => format!("grad_{wrt} {loss}"),
        (Style::Ascii, 1) => format!("grad {loss}"),
        (Style::Ascii, _) if sub => format!("hess_{wrt} {loss}"),
        (Style::Ascii, _) => format!("hess {loss}"),
    }
}

/// `p = E[x] = softmax(θ)` or `A(θ) = log 1ᵀexp(θ)`.
pub fn definition_line(model: &Model, d: &Definition, all: &[Definition], style: Style) -> String {
    definition_line_named(model, d, &names(model, all, style), style)
}

/// `definition_line` with the names of all definitions computed once by the caller.
pub fn definition_line_named(model: &Model, d: &Definition, names: &[(RecExpr<Node>, String)], style: Style) -> String {
    let named = Printer { names: names.to_vec(), ..Printer::new(model, style) };
    let plain = Printer::new(model, style);
    let mut parts = vec![];
    let orphan_mean = match d.term.as_ref().last() {
        Some(Node::Mean([f, arg])) => crate::print::drawn_from(model, &d.term, *f, *arg).is_none(),
        _ => false,
    };
    if matches!(d.term.as_ref().last(), Some(Node::Mean(_))) {
        parts.push(named.print(&d.term));
    }
    // E[x] when x is the model's variable; a mean of no variable is named below instead
    if !orphan_mean {
        parts.push(plain.print(&d.term));
    }
    match &d.explicit {
        Some(e) => parts.push(plain.print(e)),
        None => parts.push(match style {
            Style::Latex => "\\text{(no closed form derived)}".into(),
            _ => "(no closed form derived)".into(),
        }),
    }
    parts.dedup();
    let mut line = parts.join(" = ");
    // a mean that is no variable's: say whose mean it is
    if let Some(Node::Mean([f, arg])) = d.term.as_ref().last() {
        if crate::print::drawn_from(model, &d.term, *f, *arg).is_none() {
            let fam = match &d.term[*f] {
                Node::Symbol(s) => s.to_string(),
                _ => String::new(),
            };
            let arg = plain.print(&crate::derive::subterm(&d.term, *arg));
            line.push_str(&match style {
                Style::Latex => format!(",\\ \\text{{the mean of {fam}(}}{arg}\\text{{)}}"),
                _ => format!(", the mean of {fam}({arg})"),
            });
        }
    }
    line
}

/// What a Hessian's form says: ⪰ 0 for a covariance (so the loss is convex), the null
/// space a one-hot statistic gives, or the XᵀDX form.
fn property(m: &Model, r: &Derived, style: Style) -> Option<String> {
    let st = structure(m, r)?;
    let wrt = name(r.wrt.as_deref().unwrap_or(""), style);
    let loss = name(&r.loss, style);
    let mut out = match (&st.form, style) {
        (Form::Covariance, Style::Latex) => format!("\\succeq 0\\text{{: a covariance, so }}{loss}\\text{{ is convex in }}{wrt}"),
        (Form::Covariance, Style::Ascii) => format!(">= 0: a covariance, so {loss} is convex in {wrt}"),
        (Form::Covariance, Style::Unicode) => format!("⪰ 0: a covariance, so {loss} is convex in {wrt}"),
        (Form::DiagMinusOuter, Style::Latex) => "\\operatorname{diag}(a) - a a^{\\top}".to_string(),
        (Form::DiagMinusOuter, Style::Ascii) => "diag(a) - a a'".to_string(),
        (Form::DiagMinusOuter, Style::Unicode) => "diag(a) − a aᵀ".to_string(),
        (Form::Gram, Style::Latex) => "X^{\\top} D X\\text{: }\\succeq 0\\text{ where }D \\succeq 0".to_string(),
        (Form::Gram, Style::Ascii) => "X' D X: >= 0 where D >= 0".to_string(),
        (Form::Gram, Style::Unicode) => "Xᵀ D X: ⪰ 0 where D ⪰ 0".to_string(),
    };
    if st.ones_null {
        out.push_str(match style {
            Style::Latex => "\\text{; since }\\mathbf{1}^{\\top} x = 1\\text{, its null space holds }\\mathbf{1}",
            Style::Ascii => "; since sum(x) = 1, its null space holds 1",
            Style::Unicode => "; since 𝟙ᵀx = 1, its null space holds 𝟙",
        });
    }
    Some(out)
}

fn fmt_err(e: f64) -> String {
    if e == 0.0 {
        "0".into()
    } else if e.is_finite() {
        format!("{e:.1e}")
    } else {
        "∞".into()
    }
}

/// A number to 10 significant digits.
pub fn number_text(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let s = format!("{:.9e}", x);
    let v: f64 = s.parse().unwrap();
    if (1e-4..1e10).contains(&v.abs()) {
        format!("{v}")
    } else {
        let (mant, exp) = s.split_once('e').unwrap();
        let mant = mant.trim_end_matches('0').trim_end_matches('.');
        format!("{mant}e{exp}")
    }
}

/// A value as text: a number, [a, b] or [[a, b], [c, d]], 10 significant digits.
pub fn matrix_text(m: &Mat<f64>) -> String {
    let num = number_text;
    if m.shape() == (1, 1) {
        return num(m[(0, 0)]);
    }
    let row = |i: usize| format!("[{}]", (0..m.ncols()).map(|j| num(m[(i, j)])).collect::<Vec<_>>().join(", "));
    if m.ncols() == 1 {
        return format!("[{}]", (0..m.nrows()).map(|i| num(m[(i, 0)])).collect::<Vec<_>>().join(", "));
    }
    format!("[{}]", (0..m.nrows()).map(row).collect::<Vec<_>>().join(", "))
}

/// A value as JSON: a number, a list (vectors) or a list of rows (matrices).
pub fn matrix_json(m: &Mat<f64>, vector: bool) -> Value {
    let num = |x: f64| serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null);
    if m.shape() == (1, 1) && !vector {
        return num(m[(0, 0)]);
    }
    if m.ncols() == 1 && vector {
        return Value::Array(m.iter().map(|x| num(*x)).collect());
    }
    Value::Array((0..m.nrows()).map(|i| Value::Array((0..m.ncols()).map(|j| num(m[(i, j)])).collect())).collect())
}

impl Outcome<'_> {
    fn value(&self, r: &Derived) -> Option<Result<Mat<f64>, String>> {
        let env = self.at?;
        Some(Evaluator::new(self.model).eval(&r.term, env).map(|v| {
            // a zero derivative prints as 0 but has the variable's shape
            let w = r.wrt.as_deref().and_then(|w| env.get(&Symbol::from(w)));
            match (r.order, w) {
                (1, Some(x)) if v.shape() == (1, 1) && x.len() > 1 => Mat::from_element(x.len(), 1, v[(0, 0)]),
                (2, Some(x)) if v.shape() == (1, 1) && x.len() > 1 => Mat::from_element(x.len(), x.len(), v[(0, 0)]),
                _ => v,
            }
        }))
    }

    /// The plain-text (or ASCII) report.
    pub fn text(&self, style: Style, show_rules: bool) -> String {
        let m = self.model;
        let d = self.derivation;
        let printer = Printer { names: names(m, &d.definitions, style), ..Printer::new(m, style) };
        let lines: Vec<(String, String, Option<String>)> = d
            .results
            .iter()
            .map(|r| {
                let mut note = property(m, r, style);
                if !r.complete {
                    note = Some("(not fully derived)".into());
                }
                match (self.index, crate::index::line(m, r, &printer)) {
                    (true, Ok(l)) => {
                        let (l, rhs) = l.split_once(" = ").unwrap();
                        (l.to_string(), rhs.to_string(), note)
                    }
                    (true, Err(e)) => (lhs(m, r, style), printer.print(&r.term), Some(format!("(no index form: {e})"))),
                    _ => (lhs(m, r, style), printer.print(&r.term), note),
                }
            })
            .collect();
        let width = lines.iter().map(|(l, _, _)| l.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (i, (l, rhs, note)) in lines.iter().enumerate() {
            let pad = " ".repeat(width - l.chars().count());
            out.push_str(&format!("{l}{pad} = {rhs}"));
            if let Some(n) = note {
                out.push_str(&format!("    {n}"));
            }
            if let Some(v) = self.value(&d.results[i]) {
                match v {
                    Ok(v) => out.push_str(&format!("\n{} = {}", " ".repeat(width), matrix_text(&v))),
                    Err(e) => out.push_str(&format!("\n{}   (cannot evaluate: {e})", " ".repeat(width))),
                }
            }
            out.push('\n');
        }
        for c in self.claims(style) {
            out.push_str(&format!("claim {} = {}: {}\n", c.0, c.1, c.2));
        }
        out.push_str(&self.steps_text(style));
        if !d.definitions.is_empty() {
            let named = names(m, &d.definitions, style);
            let defs: Vec<String> = d.definitions.iter().map(|x| definition_line_named(m, x, &named, style)).collect();
            out.push_str(&format!("where {}\n", defs.join(";  ")));
        }
        if !d.assumptions.is_empty() {
            out.push_str(&format!("assuming {}\n", d.assumptions.iter().map(|a| assumption(a, style)).collect::<Vec<_>>().join(", ")));
        }
        for c in self.conventions(style) {
            out.push_str(&format!("convention: {c}\n"));
        }
        out.push_str(&self.notes(style));
        if let Some(c) = self.check {
            out.push_str(&check_line(m, c, style));
            out.push('\n');
        }
        if show_rules {
            out.push_str(&format!("rules applied ({}):\n", d.rules_applied.len()));
            for (n, k) in &d.rules_applied {
                let desc = self.rules.iter().find(|r| &r.name == n).map(|r| r.description.as_str()).unwrap_or("");
                out.push_str(&format!("  {n:<22} ×{k:<3} {desc}\n"));
            }
        }
        out
    }

    /// Each claim: its left side, the formula, and what became of it.
    pub fn claims(&self, style: Style) -> Vec<(String, String, String)> {
        let m = self.model;
        let d = self.derivation;
        let printer = Printer { names: names(m, &d.definitions, style), ..Printer::new(m, style) }.one_line();
        m.claims
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let r = Derived { loss: c.loss.clone(), wrt: Some(c.wrt.clone()), order: c.order, term: c.term.clone(), complete: true, trail: vec![], is_covariance: false };
                let quantity = format!("claim {}", label(m, &c.loss, Some(&c.wrt), c.order));
                let comp = self.check.and_then(|k| k.comparisons.iter().find(|x| x.quantity == quantity));
                let derived = d.results.iter().find(|x| x.loss == c.loss && x.wrt.as_deref() == Some(c.wrt.as_str()) && x.order == c.order);
                let status = match (d.proved[i], comp) {
                    (true, _) => "proved: the rules put it in the same e-class as the derived result".to_string(),
                    (false, Some(k)) if !k.passed => {
                        let mut s = match &k.error {
                            Some(e) => format!("refuted: it cannot be evaluated: {e}"),
                            None => format!("refuted: at {} it differs from the true value by {} (relative)", k.worst.as_deref().unwrap_or("a sampled point"), fmt_err(k.max_rel_error)),
                        };
                        if let Some(x) = derived {
                            s.push_str(&format!("; the derived form is {}", printer.print(&x.term)));
                        }
                        s
                    }
                    (false, Some(k)) => format!("numerically equal at {} points, not proved by the rules", k.points),
                    (false, None) => "not proved by the rules (the check did not run)".to_string(),
                };
                (lhs(m, &r, style), printer.print(&c.term), status)
            })
            .collect()
    }

    /// How derivatives in a matrix are laid out, one line per matrix variable differentiated.
    pub fn conventions(&self, style: Style) -> Vec<String> {
        let m = self.model;
        let mut seen: Vec<&str> = vec![];
        let mut out = vec![];
        for r in &self.derivation.results {
            let Some(w) = r.wrt.as_deref() else { continue };
            let Some(v) = m.var(egg::Symbol::from(w)).filter(|v| v.shape.is_matrix()) else { continue };
            if seen.contains(&w) || r.order == 0 {
                continue;
            }
            seen.push(w);
            let Shape::Mat(rows, cols) = v.shape else { continue };
            let len = if rows == cols { format!("{rows}²") } else { format!("{rows}{cols}") };
            let spd = v.domain == crate::model::Domain::Spd;
            let line = if style == Style::Latex {
                let x = name(w, Style::Latex);
                let len = len.replace('²', "^2");
                let mut l = format!(
                    "\\text{{convention: }} {x} \\in \\mathbb{{R}}^{{{rows} \\times {cols}}}\\text{{: the gradient has its shape; the Hessian is over }} \\operatorname{{vec}}({x})\\text{{, its entries column by column }} ({x}_{{11}}, {x}_{{21}}, \\ldots, {x}_{{12}}, \\ldots)\\text{{, a }} {len} \\times {len} \\text{{ matrix}}"
                );
                if spd {
                    l.push_str(&format!("\\text{{; }} {x} \\text{{ is symmetric: its entries are differentiated as independent, and the results hold along symmetric directions }} E, F\\ (\\langle \\nabla J, E \\rangle,\\ \\operatorname{{vec}}(E)^{{\\top}} \\nabla^2 J \\operatorname{{vec}}(F))\\text{{, which the check compares}}"));
                }
                l
            } else {
                let x = name(w, Style::Unicode);
                let sub = |a: &str| format!("{x}{}", crate::print::subscript(a));
                let mut l = format!(
                    "{x} is {rows}×{cols}: the gradient has its shape; the Hessian is over vec({x}), its entries column by column ({}, {}, …, {}, …), a {len}×{len} matrix",
                    sub("11"),
                    sub("21"),
                    sub("12")
                );
                if spd {
                    l.push_str(&format!("; {x} is symmetric: its entries are differentiated as independent, and the results hold along symmetric directions E, F (⟨∇J, E⟩ and vec(E)ᵀ ∇²J vec(F)), which the check compares"));
                }
                l
            };
            out.push(line);
        }
        out
    }

    /// Notes on limits hit, results not fully derived and rule problems.
    pub fn notes(&self, _style: Style) -> String {
        let d = self.derivation;
        let mut out = String::new();
        if !d.saturated {
            out.push_str(&format!("note: the rewriting {} (all stages: {} e-nodes, {} iterations); results are the best found so far\n", d.stop, d.nodes, d.iterations));
        }
        for r in d.results.iter().filter(|r| !r.complete) {
            out.push_str(&format!("note: {} is not fully derived: the rules left a derivative in place\n", label(self.model, &r.loss, r.wrt.as_deref(), r.order)));
        }
        if !d.conflicts.is_empty() {
            out.push_str(&format!("warning: {} shape conflict(s) while rewriting: a rule is wrong ({})\n", d.conflicts.len(), d.conflicts[0]));
        }
        out
    }

    /// The steps as text: each result's start, then each step as a whole expression with
    /// its reasons, numbered through the whole derivation.
    fn steps_text(&self, style: Style) -> String {
        let Some(all) = self.steps else { return String::new() };
        let m = self.model;
        let plain = Printer::new(m, style);
        let named = Printer { names: names(m, &self.derivation.definitions, style), ..Printer::new(m, style) };
        let mut out = String::from("\nsteps\n");
        let mut n = 0;
        for (r, st) in self.derivation.results.iter().zip(all) {
            let l = lhs(m, r, style);
            let pad = " ".repeat(l.chars().count());
            out.push_str(&format!("  {l} = {}\n", plain.print(&st.start)));
            for (e, why, numbered) in self.visible(r, st, &plain, &named) {
                out.push_str(&format!("  {pad} = {e}\n"));
                if numbered {
                    n += 1;
                    out.push_str(&format!("  {pad}     ({n}) {why}\n"));
                } else {
                    out.push_str(&format!("  {pad}     {why}\n"));
                }
            }
            for g in &st.gaps {
                out.push_str(&format!("  {pad}   (the {g} stage could not be replayed to show its steps)\n"));
            }
        }
        out.push('\n');
        out
    }

    /// A result's steps as (expression, reason, numbered) in one style; a last, unnumbered
    /// line gives the family means their names (p = E[x]) when the result uses them.
    fn visible(&self, r: &Derived, st: &Steps, plain: &Printer, named: &Printer) -> Vec<(String, String, bool)> {
        let style = plain.style;
        let mut out: Vec<(String, String, bool)> = st.steps.iter().map(|s| (plain.print(&s.term), self.reason(s, style), true)).collect();
        let last = st.steps.last().map_or(&st.start, |s| &s.term);
        if last.to_string() != r.term.to_string() {
            out.push((plain.print(&r.term), "(the steps did not reach the result)".into(), false));
        }
        let shown = plain.print(&r.term);
        let used: Vec<String> =
            named.names.iter().filter(|(t, _)| shown.contains(&plain.print(t))).map(|(t, n)| format!("{n} = {}", plain.print(t))).collect();
        if !used.is_empty() && named.print(&r.term) != shown {
            let words = match style {
                Style::Latex => format!("\\text{{where }} {}", used.join(",\\ ")),
                _ => format!("where {}", used.join(", ")),
            };
            out.push((named.print(&r.term), words, false));
        }
        out
    }

    /// Why a step holds: its rules' descriptions, then the side conditions it relied on
    /// (`if q does not depend on θ, x is one-hot`) and the assumptions it made.
    fn reason(&self, s: &crate::steps::Step, style: Style) -> String {
        let p = Printer::new(self.model, style).one_line();
        let words = |t: &str| if style == Style::Latex { format!("\\text{{{}}}", latex_text(t)) } else { t.to_string() };
        let mut parts: Vec<String> = if s.reasons.is_empty() { vec![words("algebra")] } else { s.reasons.iter().map(|r| words(r)).collect() };
        let mut conditions = vec![];
        let mut assumed = vec![];
        for side in &s.sides {
            match side {
                Side::Indep(a, x) => conditions.push(format!("{}{}{}", p.print(a), words(" does not depend on "), p.print(x))),
                Side::Domain(a, d) => {
                    let what = match d {
                        crate::model::Domain::OneHot => "one-hot",
                        crate::model::Domain::Simplex => "a probability vector",
                        other => other.name(),
                    };
                    conditions.push(format!("{}{}", p.print(a), words(&format!(" is {what}"))));
                }
                Side::Indicator(f) => conditions.push(format!("{}{}", p.print(f), words("'s statistic is an indicator"))),
                Side::Assume(t, vars) => {
                    let mut t = t.clone();
                    for (v, e) in vars {
                        t = replace_word(&t, v, &Printer::new(self.model, Style::Unicode).one_line().print(e));
                    }
                    assumed.push(assumption(&t, style));
                }
            }
        }
        let sep = if style == Style::Latex { ",\\ " } else { ", " };
        if !conditions.is_empty() {
            parts.push(format!("{}{}", words("if "), conditions.join(sep)));
        }
        if !assumed.is_empty() {
            parts.push(format!("{}{}", words("assuming "), assumed.join(sep)));
        }
        parts.join(if style == Style::Latex { ";\\ " } else { "; " })
    }

    /// The steps as LaTeX `align*` rows.
    fn steps_latex(&self) -> Vec<String> {
        let Some(all) = self.steps else { return vec![] };
        let m = self.model;
        let plain = Printer::new(m, Style::Latex);
        let named = Printer { names: names(m, &self.derivation.definitions, Style::Latex), ..Printer::new(m, Style::Latex) };
        let mut rows = vec![];
        let mut n = 0;
        for (r, st) in self.derivation.results.iter().zip(all) {
            rows.push(format!("{} &= {}", lhs(m, r, Style::Latex), plain.print(&st.start)));
            for (e, why, numbered) in self.visible(r, st, &plain, &named) {
                if numbered {
                    n += 1;
                    rows.push(format!("&= {e} && \\text{{({n})}}\\ {why}"));
                } else {
                    rows.push(format!("&= {e} && {why}"));
                }
            }
        }
        rows
    }

    /// A LaTeX `align*` block.
    pub fn latex(&self) -> String {
        let m = self.model;
        let d = self.derivation;
        let printer = Printer { names: names(m, &d.definitions, Style::Latex), ..Printer::new(m, Style::Latex) };
        let mut rows: Vec<String> = d
            .results
            .iter()
            .map(|r| {
                let mut row = match crate::index::line(m, r, &printer) {
                    Ok(l) if self.index => l.replacen(" = ", " &= ", 1),
                    _ => format!("{} &= {}", lhs(m, r, Style::Latex), printer.print(&r.term)),
                };
                if let Some(p) = property(m, r, Style::Latex) {
                    row.push_str(&format!(" \\quad {p}"));
                }
                if !r.complete {
                    row.push_str(" \\quad \\text{(not fully derived)}");
                }
                row
            })
            .collect();
        if !d.definitions.is_empty() {
            let named = names(m, &d.definitions, Style::Latex);
            let defs: Vec<String> = d.definitions.iter().map(|x| definition_line_named(m, x, &named, Style::Latex)).collect();
            rows.push(format!("&\\text{{where }} {}", defs.join(";\\quad ")));
        }
        if !d.assumptions.is_empty() {
            rows.push(format!("&\\text{{assuming }} {}", d.assumptions.iter().map(|a| assumption(a, Style::Latex)).collect::<Vec<_>>().join(",\\ ")));
        }
        for c in self.conventions(Style::Latex) {
            rows.push(format!("&{c}"));
        }
        let steps = self.steps_latex();
        if !steps.is_empty() {
            rows.push("&\\text{step by step:}".to_string());
            rows.extend(steps);
        }
        format!("\\begin{{align*}}\n{}\n\\end{{align*}}\n", rows.join(" \\\\\n"))
    }

    /// The machine-readable report.
    pub fn json(&self) -> Value {
        let m = self.model;
        let d = self.derivation;
        let text = Printer { names: names(m, &d.definitions, Style::Unicode), ..Printer::new(m, Style::Unicode) }.one_line();
        let tex = Printer { names: names(m, &d.definitions, Style::Latex), ..Printer::new(m, Style::Latex) };
        let results: Vec<Value> = d
            .results
            .iter()
            .map(|r| {
                let mut o = json!({
                    "quantity": label(m, &r.loss, r.wrt.as_deref(), r.order),
                    "loss": r.loss,
                    "wrt": r.wrt,
                    "order": r.order,
                    "text": text.print(&r.term),
                    "latex": tex.print(&r.term),
                    "complete": r.complete,
                });
                if let Some(p) = property(m, r, Style::Unicode) {
                    o["property"] = json!(p);
                }
                if let Some(v) = self.value(r) {
                    match v {
                        Ok(v) => o["value"] = matrix_json(&v, r.order == 1),
                        Err(e) => o["value_error"] = json!(e),
                    }
                }
                o
            })
            .collect();
        let (uni, tex_names) = (names(m, &d.definitions, Style::Unicode), names(m, &d.definitions, Style::Latex));
        let defs: Vec<Value> = d
            .definitions
            .iter()
            .map(|x| json!({"text": definition_line_named(m, x, &uni, Style::Unicode), "latex": definition_line_named(m, x, &tex_names, Style::Latex), "closed_form": x.explicit.is_some()}))
            .collect();
        let rules: Vec<Value> = d
            .rules_applied
            .iter()
            .map(|(n, k)| {
                let desc = self.rules.iter().find(|r| &r.name == n).map(|r| r.description.clone()).unwrap_or_default();
                json!({"name": n, "count": k, "description": desc})
            })
            .collect();
        let claims: Vec<Value> = self.claims(Style::Unicode).into_iter().map(|(l, f, s)| json!({"claim": format!("{l} = {f}"), "status": s})).collect();
        let mut out = json!({
            "results": results,
            "claims": claims,
            "definitions": defs,
            "assumptions": d.assumptions,
            "conventions": self.conventions(Style::Unicode),
            "rules_applied": rules,
            "egraph": {"stop": d.stop, "saturated": d.saturated, "iterations": d.iterations, "nodes": d.nodes, "classes": d.classes},
        });
        if let Some(c) = self.check {
            let max = c.comparisons.iter().map(|x| x.max_rel_error).fold(0.0, f64::max);
            out["check"] = json!({
                "passed": c.passed,
                "points": c.points,
                "points_undefined": c.undefined,
                "skipped": c.skipped,
                "max_rel_error": if max.is_finite() { json!(max) } else { Value::Null },
                "sizes": c.sizes.iter().map(|(k, (a, b))| (k.clone(), json!([a, b]))).collect::<serde_json::Map<_, _>>(),
                "comparisons": c.comparisons.iter().map(|x| json!({
                    "quantity": x.quantity,
                    "max_rel_error": if x.max_rel_error.is_finite() { json!(x.max_rel_error) } else { Value::Null },
                    "passed": x.passed,
                    "error": x.error,
                })).collect::<Vec<_>>(),
                "eigenvalues": c.spectra.iter().map(|s| json!({
                    "quantity": s.quantity,
                    "points": s.points,
                    "psd": s.psd(),
                    "min_rel_eigenvalue": s.min_rel_eigenvalue,
                    "null_dims": [s.null_dims.0, s.null_dims.1],
                    "ones_in_null_space": s.ones_null,
                })).collect::<Vec<_>>(),
            });
        }
        out
    }
}

/// Unicode prose for LaTeX text mode: symbols become inline math, specials are escaped.
pub fn latex_text(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let math = match c {
            'ᵀ' => "^{\\top}",
            '′' => "'",
            '″' => "''",
            '∂' => "\\partial ",
            '∇' => "\\nabla ",
            '−' => "-",
            '⊙' => "\\odot ",
            '⪰' => "\\succeq ",
            '≥' => "\\geq ",
            '≤' => "\\leq ",
            '≠' => "\\neq ",
            '∈' => "\\in ",
            '·' => "\\cdot ",
            '×' => "\\times ",
            '⊗' => "\\otimes ",
            '∞' => "\\infty ",
            '⁻' => "^{-}",
            '⁰' => "^{0}",
            '¹' => "^{1}",
            '³' => "^{3}",
            'ᵃ' => "^{a}",
            'ᵇ' => "^{b}",
            '𝟙' => "\\mathbf{1}",
            '→' => "\\to ",
            '≈' => "\\approx ",
            '²' => "^{2}",
            '₁' => "_{1}",
            '₂' => "_{2}",
            '₀' => "_{0}",
            'ᵢ' => "_{i}",
            '⁽' => "^{(}",
            '⁾' => "^{)}",
            'ⁿ' => "^{n}",
            '⁺' => "^{+}",
            '‖' => "\\|",
            'ψ' => "\\psi",
            'Γ' => "\\Gamma",
            '√' => "\\surd ",
            _ => "",
        };
        if !math.is_empty() {
            out.push_str(&format!("${math}$"));
        } else if let Some((_, _, l)) = crate::print::GREEK.iter().find(|(_, u, _)| u.starts_with(c) && u.chars().count() == 1) {
            out.push_str(&format!("${l}$"));
        } else if matches!(c, '#' | '$' | '%' | '&' | '_' | '{' | '}') {
            out.push('\\');
            out.push(c);
        } else if c == '\\' {
            out.push_str("\\textbackslash{}");
        } else if c == '~' || c == '^' {
            out.push_str(&format!("\\text{{\\{c}}}{{}}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// An assumption (written with Unicode in rules) in a style.
fn assumption(a: &str, style: Style) -> String {
    match style {
        Style::Unicode => a.to_string(),
        Style::Ascii => a.replace("1ᵀ", "sum ").replace('ᵀ', "'"),
        Style::Latex => a.replace("1ᵀ", "\\mathbf{1}^{\\top} ").replace('ᵀ', "^{\\top}"),
    }
}

/// `check: 20 random points, k ∈ 2..7: max relative error 4e-16 (J), … ✓`
pub fn check_line(_m: &Model, c: &CheckReport, style: Style) -> String {
    let sizes: Vec<String> = c
        .sizes
        .iter()
        .filter(|(k, _)| k.parse::<usize>().is_err())
        .map(|(k, (a, b))| if a == b { format!("{k} = {a}") } else { format!("{k} {} {a}..{b}", if style == Style::Ascii { "in" } else { "∈" }) })
        .collect();
    let errs: Vec<String> = c
        .comparisons
        .iter()
        .map(|x| match &x.error {
            Some(e) => format!("{} (error: {e})", x.quantity),
            None => format!("{} ({})", fmt_err(x.max_rel_error), x.quantity),
        })
        .collect();
    let mark = if c.passed {
        if style == Style::Ascii { "ok" } else { "✓" }
    } else if style == Style::Ascii {
        "FAILED"
    } else {
        "✗ FAILED"
    };
    if let Some(why) = &c.skipped {
        return format!("check: not run: {why}");
    }
    let sizes = if sizes.is_empty() { String::new() } else { format!(", {}", sizes.join(", ")) };
    let mut undefined = if c.undefined > 0 { format!(" ({} more points skipped: the loss is not finite there)", c.undefined) } else { String::new() };
    if let Some(t) = c.stopped {
        undefined.push_str(&format!(" (stopped after {t:.0} s by the check's time guard, EVOLVED_CHECK_SECONDS)"));
    }
    let mut line = format!("check: {} random points{sizes}{undefined}: max relative error {} {mark}", c.points, errs.join(", "));
    for s in &c.spectra {
        line.push('\n');
        line.push_str(&spectrum_line(s, style));
    }
    line
}

/// `eigenvalues of hess J at 20 points: all ≥ 0 (smallest/largest ≥ −3e-17), one zero, for 𝟙`
pub fn spectrum_line(s: &Spectrum, style: Style) -> String {
    let (ge, ones) = if style == Style::Ascii { (">=", "1") } else { ("≥", "𝟙") };
    let sign = if s.psd() { format!("all {ge} 0, so it is positive semi-definite there") } else { "some negative, so it is not positive semi-definite".into() };
    let null = match s.null_dims {
        (0, 0) => "none of them zero".to_string(),
        (a, b) if a == b && s.ones_null && a == 1 => format!("one of them zero: the null space is span({ones})"),
        (a, b) if a == b => format!("{a} of them zero"),
        (a, b) => format!("{a} to {b} of them zero"),
    };
    let ones_note = if s.ones_null && s.null_dims != (1, 1) { format!("; H {ones} = 0 at every point") } else { String::new() };
    format!("eigenvalues of {} at {} points: {sign} (smallest/largest {}); {null}{ones_note}", s.quantity, s.points, fmt_err(s.min_rel_eigenvalue))
}

pub use crate::model::family_model;

/// One family as `evolved families` shows it: its definition, then E[T] and Cov[T] as the
/// rules derive them from A.
pub fn family_text(f: &crate::model::Family, mean: Option<&RecExpr<Node>>, cov: Option<&RecExpr<Node>>, further: &[crate::derive::FurtherMoments], style: Style) -> String {
    let m = family_model(f);
    let p = Printer::new(&m, style).one_line();
    let n = |s: &str| name(s, style);
    let known: String = f.known.iter().map(|(k, sh, d)| format!("; {} : {}", n(k), type_text(*sh, *d))).collect();
    let none = || if style == Style::Latex { "\\text{(not derived)}".to_string() } else { "(not derived)".to_string() };
    let (t, a, h) = (p.print(&f.stat), p.print(&f.logpart), p.print(&f.logh));
    let mean = mean.map(|e| p.print(e)).unwrap_or_else(none);
    let cov = cov.map(|e| p.print(e)).unwrap_or_else(none);
    let params = |u: &crate::model::Usual, sep: &str, ty: &dyn Fn(crate::lang::Shape, crate::model::Domain) -> String| {
        u.params.iter().map(|(p, s, d)| format!("{} {sep} {}", n(p), ty(*s, *d))).collect::<Vec<_>>().join(", ")
    };
    // what a usual parameterisation gives: η, and the further natural parameters
    let gives = |u: &crate::model::Usual| {
        let mut g = vec![format!("{} = {}", n(&f.param), p.print(&u.eta))];
        g.extend(u.naturals.iter().map(|(i, t)| format!("{} = {}", n(&f.known[*i].0), p.print(t))));
        g.join(", ")
    };
    let usual: Vec<String> = f.usual.iter().map(|u| format!("{} gives {}", params(u, ":", &type_text), gives(u))).collect();
    // A's arguments: η and the further natural parameters
    let args: Vec<String> = std::iter::once(n(&f.param)).chain(f.naturals.iter().map(|(q, _)| n(q))).collect();
    let args = args.join(", ");
    let print = |e: &Option<RecExpr<Node>>| e.as_ref().map(|e| p.print(e)).unwrap_or_else(none);
    // (T_P statistic, E[T_P], Cov[T_P], Cov[T, T_P]) of each further natural parameter
    let sub = |q: &str| if style == Style::Latex { format!("T_{{{}}}", n(q)) } else { format!("T_{}", n(q)) };
    let more: Vec<(String, String, String, String, String)> = f
        .naturals
        .iter()
        .map(|(q, stat)| {
            let fm = further.iter().find(|m| &m.param == q);
            let get = |pick: fn(&crate::derive::FurtherMoments) -> &Option<RecExpr<Node>>| fm.map(|m| print(pick(m))).unwrap_or_else(none);
            (sub(q), p.print(stat), get(|m| &m.mean), get(|m| &m.cov), get(|m| &m.cross))
        })
        .collect();
    match style {
        Style::Latex => {
            let mut rows = vec![
                format!("&\\textbf{{{}}}\\left({} \\in {}{}\\right),\\ {} \\in {}", latex_text(&f.name), n(&f.param), latex_type(f.param_shape, f.param_domain), f.known.iter().map(|(k, sh, d)| format!(";\\ {} \\in {}", n(k), latex_type(*sh, *d))).collect::<String>(), n(&f.var), latex_type(f.var_shape, f.support)),
                format!("T({}) &= {t}, \\quad A({args}) = {a}, \\quad \\log h({}) = {h}", n(&f.var), n(&f.var)),
            ];
            rows.extend(more.iter().map(|(tq, stat, ..)| format!("{tq}({}) &= {stat}", n(&f.var))));
            rows.push(format!("\\mathbb{{E}}[T] &= {mean}"));
            rows.push(format!("\\operatorname{{Cov}}[T] &= {cov}"));
            for (tq, _, m, c, x) in &more {
                rows.push(format!("\\mathbb{{E}}[{tq}] &= {m}"));
                rows.push(format!("\\operatorname{{Cov}}[{tq}] &= {c}"));
                rows.push(format!("\\operatorname{{Cov}}[T, {tq}] &= {x}"));
            }
            for u in &f.usual {
                rows.push(format!("&\\text{{usual: }} {},\\ {}", params(u, "\\in", &latex_type), gives(u)));
            }
            rows.join(" \\\\\n")
        }
        _ => {
            let mut out = format!("{}({} : {}{known}) on {} : {}\n", f.name, n(&f.param), type_text(f.param_shape, f.param_domain), n(&f.var), type_text(f.var_shape, f.support));
            out.push_str(&format!("  T({x}) = {t};  A({args}) = {a};  log h({x}) = {h}\n", x = n(&f.var)));
            for (tq, stat, ..) in &more {
                out.push_str(&format!("  {tq}({}) = {stat}\n", n(&f.var)));
            }
            if !usual.is_empty() {
                out.push_str(&format!("  usual: {}\n", usual.join("; ")));
            }
            out.push_str(&format!("  E[T]   = {mean}\n  Cov[T] = {cov}\n"));
            for (tq, _, m, c, x) in &more {
                out.push_str(&format!("  E[{tq}] = {m}\n  Cov[{tq}] = {c}\n  Cov[T, {tq}] = {x}\n"));
            }
            out
        }
    }
}

fn type_text(shape: crate::lang::Shape, d: crate::model::Domain) -> String {
    use crate::lang::{Dim, Shape};
    match shape {
        Shape::Mat(Dim::One, Dim::One) => d.name().to_string(),
        Shape::Mat(r, Dim::One) => format!("{}^{r}", d.name()),
        Shape::Mat(r, c) => format!("{}^({r},{c})", d.name()),
        Shape::Family => "a family".into(),
    }
}

fn latex_type(shape: crate::lang::Shape, d: crate::model::Domain) -> String {
    use crate::lang::{Dim, Shape};
    use crate::model::Domain;
    let base = match d {
        Domain::Real => "\\mathbb{R}".to_string(),
        Domain::Positive => "\\mathbb{R}_{>0}".to_string(),
        Domain::Negative => "\\mathbb{R}_{<0}".to_string(),
        Domain::Count => "\\mathbb{N}".to_string(),
        Domain::Binary => "\\{0, 1\\}".to_string(),
        Domain::Unit => "[0, 1]".to_string(),
        d => format!("\\mathrm{{{}}}", d.name()),
    };
    match shape {
        Shape::Mat(Dim::One, Dim::One) => base,
        Shape::Mat(r, Dim::One) => format!("{base}^{{{r}}}"),
        Shape::Mat(r, c) => format!("{base}^{{{r} \\times {c}}}"),
        Shape::Family => base,
    }
}
