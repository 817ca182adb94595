//! Index notation (`--notation index`): a derived matrix term read entry by entry,
//! ∂J/∂θᵢ = pᵢ − qᵢ, ∂²J/∂θᵢ∂θⱼ = pᵢδᵢⱼ − pᵢpⱼ. The index form is built from the same
//! extracted term, printed, and evaluated entry by entry so the check can compare it with
//! the loss's derivatives like any other result.

use crate::eval::{Env, Evaluator, Mat};
use crate::lang::{term_shapes, Dim, Node, Shape};
use crate::model::Model;
use crate::print::{name, Printer, Style};
use egg::{Id, RecExpr};
use std::collections::HashMap;

/// An index: i, j for a result's entry; k, l, m, … for sums.
pub type Idx = usize;

/// A scalar expression over indices.
#[derive(Clone, Debug, PartialEq)]
pub enum IExpr {
    Num(f64),
    /// an entry of a variable or of a named quantity (p = E[x]): the term, its printed
    /// name, and its indices (row, column; a vector has one)
    Entry(RecExpr<Node>, String, Vec<Idx>),
    Delta(Idx, Idx),
    Add(Box<IExpr>, Box<IExpr>),
    Sub(Box<IExpr>, Box<IExpr>),
    Mul(Box<IExpr>, Box<IExpr>),
    Div(Box<IExpr>, Box<IExpr>),
    Pow(Box<IExpr>, Box<IExpr>),
    Neg(Box<IExpr>),
    /// exp, log, σ
    Func(&'static str, Box<IExpr>),
    /// Σ over an index, whose range is the length of axis (0 rows, 1 columns) of a term
    Sum(Idx, RecExpr<Node>, usize, Box<IExpr>),
}

use IExpr::*;

fn b(e: IExpr) -> Box<IExpr> {
    Box::new(e)
}

struct Builder<'a> {
    t: &'a RecExpr<Node>,
    shapes: Vec<Shape>,
    names: &'a [(RecExpr<Node>, String)],
    /// how a family quantity without a name is written (E[x], A(θ))
    opaque: &'a dyn Fn(&RecExpr<Node>) -> String,
    next: Idx,
}

impl Builder<'_> {
    fn fresh(&mut self) -> Idx {
        self.next += 1;
        self.next - 1
    }

    fn dims(&self, id: Id) -> (bool, bool) {
        match self.shapes[usize::from(id)] {
            Shape::Mat(r, c) => (r != Dim::One, c != Dim::One),
            Shape::Family => (false, false),
        }
    }

    /// the indices a term of this shape takes, from a (row, column) pair
    fn pick(&self, id: Id, (i, j): (Idx, Idx)) -> Vec<Idx> {
        match self.dims(id) {
            (true, true) => vec![i, j],
            (true, false) => vec![i],
            (false, true) => vec![j],
            (false, false) => vec![],
        }
    }

    /// Entry (i, j) of the subterm `id` (indices a scalar or vector does not have are
    /// ignored).
    fn entry(&mut self, id: Id, ij: (Idx, Idx)) -> Result<IExpr, String> {
        let t = self.t;
        let sub = crate::derive::subterm(t, id);
        if let Some((_, n)) = self.names.iter().find(|(e, _)| *e == sub) {
            return Ok(Entry(sub, n.clone(), self.pick(id, ij)));
        }
        let (i, j) = ij;
        Ok(match &t[id] {
            Node::Num(r) => Num(*r.numer() as f64 / *r.denom() as f64),
            Node::Symbol(s) => Entry(sub.clone(), s.to_string(), self.pick(id, ij)),
            Node::Add([x, y]) => Add(b(self.entry(*x, ij)?), b(self.entry(*y, ij)?)),
            Node::Sub([x, y]) => Sub(b(self.entry(*x, ij)?), b(self.entry(*y, ij)?)),
            Node::Mul([x, y]) => Mul(b(self.entry(*x, ij)?), b(self.entry(*y, ij)?)),
            Node::Div([x, y]) => Div(b(self.entry(*x, ij)?), b(self.entry(*y, ij)?)),
            Node::Pow([x, y]) => Pow(b(self.entry(*x, ij)?), b(self.entry(*y, ij)?)),
            Node::Neg(x) => Neg(b(self.entry(*x, ij)?)),
            Node::Exp(x) => Func("exp", b(self.entry(*x, ij)?)),
            Node::Log(x) => Func("log", b(self.entry(*x, ij)?)),
            Node::Sigmoid(x) => Func("σ", b(self.entry(*x, ij)?)),
            Node::Transpose(x) => self.entry(*x, (j, i))?,
            Node::MatMul([x, y]) => {
                if !self.dims(*x).1 {
                    // a column times a row (or a scalar): no sum
                    Mul(b(self.entry(*x, (i, 0))?), b(self.entry(*y, (0, j))?))
                } else {
                    let k = self.fresh();
                    Sum(k, crate::derive::subterm(t, *x), 1, b(Mul(b(self.entry(*x, (i, k))?), b(self.entry(*y, (k, j))?))))
                }
            }
            Node::Dot([x, y]) => {
                let k = self.fresh();
                Sum(k, crate::derive::subterm(t, *x), 0, b(Mul(b(self.entry(*x, (k, k))?), b(self.entry(*y, (k, k))?))))
            }
            Node::Outer([x, y]) => Mul(b(self.entry(*x, (i, i))?), b(self.entry(*y, (j, j))?)),
            Node::Sum(x) => {
                let k = self.fresh();
                Sum(k, crate::derive::subterm(t, *x), 0, b(self.entry(*x, (k, k))?))
            }
            Node::Diag(x) => Mul(b(self.entry(*x, (i, i))?), b(Delta(i, j))),
            Node::Eye(_) => Delta(i, j),
            Node::Ones(_) => Num(1.0),
            // family quantities are read entry by entry as they are
            Node::Mean(_) | Node::LogPart(_) | Node::Cov(_) | Node::Second(_) => {
                let ix = self.pick(id, ij);
                let n = (self.opaque)(&sub);
                Entry(sub, if ix.is_empty() { n } else { format!("({n})") }, ix)
            }
            Node::Softmax(x) => {
                let k = self.fresh();
                let total = Sum(k, crate::derive::subterm(t, *x), 0, b(Func("exp", b(self.entry(*x, (k, k))?))));
                Div(b(Func("exp", b(self.entry(*x, ij)?))), b(total))
            }
            Node::LogSumExp(x) => {
                let k = self.fresh();
                Func("log", b(Sum(k, crate::derive::subterm(t, *x), 0, b(Func("exp", b(self.entry(*x, (k, k))?))))))
            }
            Node::SumOver(_) => return Err("no index form for a sum over samples yet".into()),
            Node::Kron(_) => return Err("no index form for a Kronecker product yet".into()),
            other => return Err(format!("no index form for `{other}`")),
        })
    }
}

impl IExpr {
    /// The same node with `f` applied to each direct subexpression.
    fn map(self, f: &dyn Fn(IExpr) -> IExpr) -> IExpr {
        let g = |x: Box<IExpr>| b(f(*x));
        match self {
            Add(x, y) => Add(g(x), g(y)),
            Sub(x, y) => Sub(g(x), g(y)),
            Mul(x, y) => Mul(g(x), g(y)),
            Div(x, y) => Div(g(x), g(y)),
            Pow(x, y) => Pow(g(x), g(y)),
            Neg(x) => Neg(g(x)),
            Func(n, x) => Func(n, g(x)),
            Sum(k, t, a, x) => Sum(k, t, a, g(x)),
            leaf => leaf,
        }
    }
}

/// Σₗ δₖₗ f(l) = f(k): sums over a Kronecker delta collapse.
fn collapse(e: IExpr) -> IExpr {
    match e.map(&collapse) {
        Sum(l, r, a, body) => match delta_partner(&body, l) {
            Some(k) => collapse(rename(without_delta(*body, l, k), l, k)),
            None => Sum(l, r, a, body),
        },
        other => other,
    }
}

/// k when the product `e` has a factor δₖₗ (or δₗₖ) with k ≠ l.
fn delta_partner(e: &IExpr, l: Idx) -> Option<Idx> {
    match e {
        Delta(a, c) if *a == l && *c != l => Some(*c),
        Delta(a, c) if *c == l && *a != l => Some(*a),
        Mul(x, y) => delta_partner(x, l).or_else(|| delta_partner(y, l)),
        _ => None,
    }
}

fn without_delta(e: IExpr, l: Idx, k: Idx) -> IExpr {
    match e {
        Mul(x, y) => match (*x, *y) {
            (Delta(a, c), other) | (other, Delta(a, c)) if (a, c) == (l, k) || (a, c) == (k, l) => other,
            (x, y) => Mul(b(without_delta(x, l, k)), b(without_delta(y, l, k))),
        },
        Delta(a, c) if (a, c) == (l, k) || (a, c) == (k, l) => Num(1.0),
        other => other,
    }
}

fn rename(e: IExpr, from: Idx, to: Idx) -> IExpr {
    let f = |i: Idx| if i == from { to } else { i };
    let e = match e {
        Entry(t, n, ix) => Entry(t, n, ix.into_iter().map(f).collect()),
        Delta(x, y) => Delta(f(x), f(y)),
        Sum(k, t, a, x) => Sum(f(k), t, a, x),
        other => other,
    };
    e.map(&|c| rename(c, from, to))
}

/// Entry (i, j) of a derived term (index 0 is i, 1 is j), or why there is none.
pub fn index_form(model: &Model, t: &RecExpr<Node>, names: &[(RecExpr<Node>, String)], opaque: &dyn Fn(&RecExpr<Node>) -> String) -> Result<IExpr, String> {
    let shapes = term_shapes(t, &|s| model.symbol_shape(s))?;
    let mut bld = Builder { t, shapes, names, opaque, next: 2 };
    let e = bld.entry(Id::from(t.as_ref().len() - 1), (0, 1))?;
    if bld.next > 60 {
        return Err(format!("{} summation indices are too many to write out", bld.next - 2));
    }
    Ok(collapse(e))
}

const LETTERS: &[char] = &['i', 'j', 'k', 'l', 'm', 'n', 'r', 's', 'u', 'v'];

fn letter(i: Idx, style: Style) -> String {
    let Some(&c) = LETTERS.get(i) else { return format!("{}{i}", if style == Style::Unicode { "_" } else { "" }) };
    if style != Style::Unicode {
        return c.to_string();
    }
    crate::print::index_sub(&c.to_string())
}

fn subscript(ix: &[Idx], style: Style) -> String {
    let s: String = ix.iter().map(|i| letter(*i, style)).collect();
    match style {
        Style::Unicode => s,
        Style::Latex => format!("_{{{s}}}"),
        Style::Ascii => format!("_{s}"),
    }
}

/// Prints an index form: 1 sum/difference, 2 product/quotient, 3 power, 4 atom.
pub fn print(e: &IExpr, style: Style) -> String {
    fn go(e: &IExpr, style: Style) -> (String, u8) {
        let tex = style == Style::Latex;
        let paren = |(s, p): (String, u8), min: u8| if p >= min { s } else if tex { format!("\\left({s}\\right)") } else { format!("({s})") };
        let minus = if style == Style::Unicode { "−" } else { "-" };
        match e {
            Num(x) => (crate::report::number_text(*x), 4),
            Entry(t, n, ix) => {
                let symbol = matches!(t.as_ref(), [Node::Symbol(_)]);
                let base = if symbol { name(n, style) } else { n.clone() };
                let base = if tex && base.contains('_') { format!("{{{base}}}") } else { base };
                (format!("{base}{}", subscript(ix, style)), 4)
            }
            Delta(a, c) => (format!("{}{}", if tex { "\\delta" } else if style == Style::Ascii { "delta" } else { "δ" }, subscript(&[*a, *c], style)), 4),
            Add(x, y) => (format!("{} + {}", paren(go(x, style), 1), paren(go(y, style), 2)), 1),
            Sub(x, y) => (format!("{} {minus} {}", paren(go(x, style), 1), paren(go(y, style), 2)), 1),
            Mul(x, y) => {
                let sep = if tex { " " } else if style == Style::Ascii { " * " } else { " " };
                (format!("{}{sep}{}", paren(go(x, style), 2), paren(go(y, style), 3)), 2)
            }
            Div(x, y) if tex => (format!("\\frac{{{}}}{{{}}}", go(x, style).0, go(y, style).0), 4),
            Div(x, y) => (format!("{} / {}", paren(go(x, style), 2), paren(go(y, style), 3)), 2),
            Pow(x, y) if tex => (format!("{}^{{{}}}", paren(go(x, style), 4), go(y, style).0), 3),
            Pow(x, y) => (format!("{}^{}", paren(go(x, style), 4), paren(go(y, style), 4)), 3),
            Neg(x) => (format!("{minus}{}", paren(go(x, style), 2)), 1),
            Func(f, x) => {
                let f = match (*f, style) {
                    ("σ", Style::Latex) => "\\sigma".to_string(),
                    ("σ", Style::Ascii) => "sigmoid".to_string(),
                    (f, Style::Latex) => format!("\\{f}"),
                    (f, _) => f.to_string(),
                };
                let inner = go(x, style).0;
                (if tex { format!("{f}\\left({inner}\\right)") } else { format!("{f}({inner})") }, 4)
            }
            Sum(k, _, _, x) => {
                let sigma = match style {
                    Style::Latex => format!("\\sum_{{{}}} ", letter(*k, style)),
                    Style::Ascii => format!("sum_{} ", letter(*k, style)),
                    Style::Unicode => format!("Σ{} ", letter(*k, style)),
                };
                (format!("{sigma}{}", paren(go(x, style), 2)), 2)
            }
        }
    }
    go(e, style).0
}

/// The left side: ∂J/∂θᵢ, ∂²J/∂θᵢ∂θⱼ, (∇²J v)ᵢ, J.
pub fn lhs(model: &Model, r: &crate::derive::Derived, style: Style) -> String {
    let loss = name(&r.loss, style);
    let x = name(r.wrt.as_deref().unwrap_or(""), style);
    // θ₂ with an index is {θ₂}ᵢ in LaTeX (θ_{2}_{i} is a double subscript)
    let x = if style == Style::Latex && x.contains('_') { format!("{{{x}}}") } else { x };
    let (i, j) = (subscript(&[0], style), subscript(&[1], style));
    let vector = model.vars.get(r.wrt.as_deref().unwrap_or("")).is_some_and(|v| matches!(v.shape, Shape::Mat(d, _) if d != Dim::One));
    let (i, j) = if vector { (i, j) } else { (String::new(), String::new()) };
    match (r.order, style) {
        (0, _) => loss,
        (1, Style::Latex) => format!("\\frac{{\\partial {loss}}}{{\\partial {x}{i}}}"),
        (1, _) => format!("∂{loss}/∂{x}{i}"),
        (2, Style::Latex) if !vector => format!("\\frac{{\\partial^2 {loss}}}{{\\partial {x}^2}}"),
        (2, _) if !vector => format!("∂²{loss}/∂{x}²"),
        (2, Style::Latex) => format!("\\frac{{\\partial^2 {loss}}}{{\\partial {x}{i} \\partial {x}{j}}}"),
        (2, _) => format!("∂²{loss}/∂{x}{i}∂{x}{j}"),
        (_, _) => format!("({} v){i}", crate::report::lhs(model, &crate::derive::Derived { order: 2, ..r.clone() }, style)),
    }
}

/// Evaluates an index form into a matrix of the given size (entry (i, j)).
pub fn evaluate(e: &IExpr, ev: &Evaluator, env: &Env<f64>, rows: usize, cols: usize) -> Result<Mat<f64>, String> {
    let mut cache: HashMap<String, Mat<f64>> = HashMap::new();
    let mut out = Mat::zeros(rows, cols);
    let mut at = vec![0usize; 2 + 16];
    for i in 0..rows {
        for j in 0..cols {
            at[0] = i;
            at[1] = j;
            out[(i, j)] = value(e, ev, env, &mut at, &mut cache)?;
        }
    }
    Ok(out)
}

fn value(e: &IExpr, ev: &Evaluator, env: &Env<f64>, at: &mut Vec<usize>, cache: &mut HashMap<String, Mat<f64>>) -> Result<f64, String> {
    let get = |t: &RecExpr<Node>, cache: &mut HashMap<String, Mat<f64>>| -> Result<Mat<f64>, String> {
        let key = t.to_string();
        if let Some(m) = cache.get(&key) {
            return Ok(m.clone());
        }
        let m = ev.eval(t, env)?;
        cache.insert(key, m.clone());
        Ok(m)
    };
    if at.len() < 64 {
        at.resize(64, 0);
    }
    Ok(match e {
        Num(x) => *x,
        Entry(t, _, ix) => {
            let m = get(t, cache)?;
            match (ix.len(), m.shape()) {
                (0, _) => m[(0, 0)],
                (1, (_, 1)) => m[(at[ix[0]], 0)],
                (1, _) => m[(0, at[ix[0]])],
                _ => m[(at[ix[0]], at[ix[1]])],
            }
        }
        Delta(a, c) => (at[*a] == at[*c]) as u8 as f64,
        Add(x, y) => value(x, ev, env, at, cache)? + value(y, ev, env, at, cache)?,
        Sub(x, y) => value(x, ev, env, at, cache)? - value(y, ev, env, at, cache)?,
        Mul(x, y) => value(x, ev, env, at, cache)? * value(y, ev, env, at, cache)?,
        Div(x, y) => value(x, ev, env, at, cache)? / value(y, ev, env, at, cache)?,
        Pow(x, y) => value(x, ev, env, at, cache)?.powf(value(y, ev, env, at, cache)?),
        Neg(x) => -value(x, ev, env, at, cache)?,
        Func(f, x) => {
            let v = value(x, ev, env, at, cache)?;
            match *f {
                "exp" => v.exp(),
                "log" => v.ln(),
                _ => 1.0 / (1.0 + (-v).exp()),
            }
        }
        Sum(k, t, axis, x) => {
            let m = get(t, cache)?;
            let n = if *axis == 0 { m.nrows() } else { m.ncols() };
            let mut s = 0.0;
            for v in 0..n {
                at[*k] = v;
                s += value(x, ev, env, at, cache)?;
            }
            s
        }
    })
}

/// Prints a result in index notation with a printer's names.
/// The index form of a result; results in a matrix parameter have none yet (their entries
/// need two indices each).
pub fn result_form(model: &Model, r: &crate::derive::Derived, names: &[(RecExpr<Node>, String)], opaque: &dyn Fn(&RecExpr<Node>) -> String) -> Result<IExpr, String> {
    if let Some(w) = r.wrt.as_deref().and_then(|w| model.vars.get(w)).filter(|v| v.shape.is_matrix()) {
        return Err(format!("index notation for a matrix parameter ({}) is not supported yet", w.name));
    }
    index_form(model, &r.term, names, opaque)
}

pub fn line(model: &Model, r: &crate::derive::Derived, printer: &Printer) -> Result<String, String> {
    let plain = Printer::new(model, printer.style).one_line();
    let e = result_form(model, r, &printer.names, &|t| plain.print(t))?;
    Ok(format!("{} = {}", lhs(model, r, printer.style), print(&e, printer.style)))
}
