//! Terms to text: Unicode, ASCII or LaTeX, with brackets exactly where precedence needs
//! them (a printed formula reads back as the same tree). Layout by the `pretty` crate.

use crate::lang::{term_shapes, Node, Shape};
use crate::model::Model;
use egg::{Id, RecExpr, Symbol};
use pretty::RcDoc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Unicode,
    Ascii,
    Latex,
}

/// Precedence: how tightly a printed form binds.
const SUM: u8 = 1;
const PRODUCT: u8 = 2;
const UNARY: u8 = 3;
const POSTFIX: u8 = 4;
const ATOM: u8 = 5;

pub const GREEK: &[(&str, &str, &str)] = &[
    ("alpha", "α", "\\alpha"),
    ("beta", "β", "\\beta"),
    ("gamma", "γ", "\\gamma"),
    ("delta", "δ", "\\delta"),
    ("epsilon", "ε", "\\varepsilon"),
    ("zeta", "ζ", "\\zeta"),
    ("eta", "η", "\\eta"),
    ("theta", "θ", "\\theta"),
    ("kappa", "κ", "\\kappa"),
    ("lambda", "λ", "\\lambda"),
    ("mu", "μ", "\\mu"),
    ("nu", "ν", "\\nu"),
    ("xi", "ξ", "\\xi"),
    ("pi", "π", "\\pi"),
    ("rho", "ρ", "\\rho"),
    ("sigma", "σ", "\\sigma"),
    ("tau", "τ", "\\tau"),
    ("phi", "φ", "\\phi"),
    ("chi", "χ", "\\chi"),
    ("psi", "ψ", "\\psi"),
    ("omega", "ω", "\\omega"),
    ("Gamma", "Γ", "\\Gamma"),
    ("Delta", "Δ", "\\Delta"),
    ("Theta", "Θ", "\\Theta"),
    ("Lambda", "Λ", "\\Lambda"),
    ("Sigma", "Σ", "\\Sigma"),
    ("Phi", "Φ", "\\Phi"),
    ("Omega", "Ω", "\\Omega"),
];

/// A variable name in a style: `theta2` → θ₂ / `\theta_{2}`.
/// An index as a Unicode subscript where there is one (ᵢ, ⱼ, ₖ, …), else _name.
pub fn index_sub(i: &str) -> String {
    let map = |c: char| match c {
        'a' => Some('ₐ'), 'e' => Some('ₑ'), 'h' => Some('ₕ'), 'i' => Some('ᵢ'), 'j' => Some('ⱼ'), 'k' => Some('ₖ'),
        'l' => Some('ₗ'), 'm' => Some('ₘ'), 'n' => Some('ₙ'), 'o' => Some('ₒ'), 'p' => Some('ₚ'), 'r' => Some('ᵣ'),
        's' => Some('ₛ'), 't' => Some('ₜ'), 'u' => Some('ᵤ'), 'v' => Some('ᵥ'), 'x' => Some('ₓ'),
        _ => c.to_digit(10).map(|d| char::from_u32(0x2080 + d).unwrap()),
    };
    i.chars().map(map).collect::<Option<String>>().unwrap_or_else(|| format!("_{i}"))
}

/// Digits as Unicode subscripts: 12 → ₁₂.
pub fn subscript(k: &str) -> String {
    k.chars().map(|c| c.to_digit(10).map_or(c, |d| char::from_u32(0x2080 + d).unwrap())).collect()
}

pub fn name(raw: &str, style: Style) -> String {
    let split = raw.find(|c: char| c.is_ascii_digit() || c == '_').unwrap_or(raw.len());
    let (stem, sub) = raw.split_at(split);
    let sub = sub.trim_start_matches('_');
    let stem = match GREEK.iter().find(|(a, u, _)| *a == stem || *u == stem) {
        Some((a, u, l)) => match style {
            Style::Unicode => u.to_string(),
            Style::Ascii => a.to_string(),
            Style::Latex => l.to_string(),
        },
        None if style == Style::Latex && stem.chars().count() > 1 => format!("\\mathrm{{{stem}}}"),
        None => stem.to_string(),
    };
    if sub.is_empty() {
        return stem;
    }
    match style {
        Style::Latex => format!("{stem}_{{{sub}}}"),
        Style::Unicode if sub.chars().all(|c| c.is_ascii_digit()) => {
            stem + &sub.chars().map(|c| char::from_u32(0x2080 + c.to_digit(10).unwrap()).unwrap()).collect::<String>()
        }
        _ => format!("{stem}_{sub}"),
    }
}

/// Prints terms of one model.
pub struct Printer<'m> {
    pub model: &'m Model,
    pub style: Style,
    /// subterms printed as a name (family means: p)
    pub names: Vec<(RecExpr<Node>, String)>,
    /// columns before a long formula breaks (0: never)
    pub width: usize,
}

type Doc = RcDoc<'static, ()>;

impl<'m> Printer<'m> {
    pub fn new(model: &'m Model, style: Style) -> Self {
        Printer { model, style, names: vec![], width: 100 }
    }

    /// The same printer, never breaking lines.
    pub fn one_line(self) -> Self {
        Printer { width: 0, ..self }
    }

    fn uni(&self) -> bool {
        self.style == Style::Unicode
    }

    fn tex(&self) -> bool {
        self.style == Style::Latex
    }

    /// A term as one string, broken over lines past 100 columns.
    pub fn print(&self, t: &RecExpr<Node>) -> String {
        let shapes = term_shapes(t, &|s| self.model.symbol_shape(s)).ok();
        let (d, _) = self.doc(t, Id::from(t.as_ref().len() - 1), shapes.as_deref());
        let mut out = String::new();
        d.render_fmt(if self.tex() || self.width == 0 { usize::MAX / 2 } else { self.width }, &mut out).unwrap();
        out
    }

    fn paren(&self, (d, p): (Doc, u8), min: u8) -> Doc {
        if p >= min {
            d
        } else if self.tex() {
            Doc::text("\\left(").append(d).append(Doc::text("\\right)"))
        } else {
            Doc::text("(").append(d).append(Doc::text(")"))
        }
    }

    /// Brackets as `paren`, and also around anything that starts with a minus sign, so
    /// that two signs never touch: a − (−x), −(−x).
    fn signed(&self, (d, p): (Doc, u8), min: u8) -> Doc {
        let mut probe = String::new();
        d.render_fmt(usize::MAX / 2, &mut probe).unwrap();
        let min = if probe.starts_with(['−', '-']) { ATOM } else { min };
        self.paren((d, p), min)
    }

    fn call(&self, f: &str, arg: Doc) -> (Doc, u8) {
        let head = match (self.style, f) {
            (Style::Latex, "log") => "\\log".to_string(),
            (Style::Latex, "exp") => "\\exp".to_string(),
            (Style::Latex, "sigmoid") => "\\sigma".to_string(),
            (Style::Latex, "lgamma") => "\\log\\Gamma".to_string(),
            (Style::Unicode, "lgamma") => "log Γ".to_string(),
            (Style::Latex, "cos") => "\\cos".to_string(),
            (Style::Latex, "sin") => "\\sin".to_string(),
            (Style::Latex, "besseli0") => "I_0".to_string(),
            (Style::Latex, "besseli1") => "I_1".to_string(),
            (Style::Unicode, "besseli0") => "I₀".to_string(),
            (Style::Unicode, "besseli1") => "I₁".to_string(),
            (Style::Unicode, "sigmoid") => "σ".to_string(),
            (Style::Latex, f) => format!("\\operatorname{{{f}}}"),
            (_, f) => f.to_string(),
        };
        let (open, close) = if self.tex() { ("\\left(", "\\right)") } else { ("(", ")") };
        (Doc::text(head).append(Doc::text(open)).append(arg).append(Doc::text(close)), ATOM)
    }

    /// `at(X, i)` of a matrix variable X at a sum's index: xᵢ, the name of row i as a column.
    fn sample(&self, t: &RecExpr<Node>, at: Id) -> Option<String> {
        let Node::At([v, i]) = &t[at] else { return None };
        let Node::Symbol(x) = &t[*v] else { return None };
        let i = match &t[*i] {
            Node::Symbol(i) if self.model.indices.contains_key(i.as_str()) => i.to_string(),
            Node::Num(r) if r.is_integer() => r.to_string(),
            _ => return None,
        };
        if !self.model.var(*x)?.shape.is_matrix() {
            return None;
        }
        if self.style == Style::Ascii {
            return Some(format!("{x}[{i}]"));
        }
        Some(self.indexed(x.as_str(), &i, true))
    }

    /// A name with an index: yᵢ (lower case for a matrix's row when no variable has that name).
    fn indexed(&self, x: &str, i: &str, row: bool) -> String {
        let lower = x.to_lowercase();
        let base = if row && lower != x && self.model.var(Symbol::from(lower.as_str())).is_none() { lower } else { x.to_string() };
        match self.style {
            Style::Latex => format!("{}_{{{i}}}", name(&base, Style::Latex)),
            _ => format!("{}{}", name(&base, self.style), index_sub(i)),
        }
    }

    fn op(&self, unicode: &'static str, ascii: &'static str, latex: &'static str) -> &'static str {
        match self.style {
            Style::Unicode => unicode,
            Style::Ascii => ascii,
            Style::Latex => latex,
        }
    }

    fn is_scalar(shapes: Option<&[Shape]>, id: Id) -> bool {
        shapes.is_some_and(|s| s[usize::from(id)].is_scalar())
    }

    /// Whether a family's A needs its name: variables are drawn from other families too.
    fn several_families(&self, f: Symbol) -> bool {
        let drawn: std::collections::BTreeSet<usize> = self.model.vars.values().filter_map(|v| v.family.as_ref().map(|(i, _, _)| *i)).collect();
        match self.model.family_index(f) {
            Some(i) => drawn.iter().any(|d| *d != i),
            None => !drawn.is_empty(),
        }
    }

    /// E[v] when a model variable v is drawn from this family with this parameter,
    /// E[T(v)] when T is not v itself, else E[T].
    fn family_var(&self, t: &RecExpr<Node>, f: Id, arg: Id) -> String {
        match drawn_from(self.model, t, f, arg) {
            Some((v, true)) => name(&v, self.style),
            Some((v, false)) => format!("T({})", name(&v, self.style)),
            None => "T".into(),
        }
    }

    fn doc(&self, t: &RecExpr<Node>, id: Id, sh: Option<&[Shape]>) -> (Doc, u8) {
        if !self.names.is_empty() {
            let sub = crate::derive::subterm(t, id);
            if let Some((_, n)) = self.names.iter().find(|(e, _)| *e == sub) {
                return (Doc::text(n.clone()), ATOM);
            }
        }
        let d = |c: Id| self.doc(t, c, sh);
        let p = |c: Id, min: u8| self.paren(d(c), min);
        let txt = |s: &str| Doc::text(s.to_string());
        let sp = if self.tex() { Doc::text(" ") } else { Doc::line() };
        match &t[id] {
            Node::Num(r) => {
                let neg = *r.numer() < 0;
                let (n, dn) = (r.numer().abs(), *r.denom());
                let body = if dn == 1 {
                    n.to_string()
                } else if self.tex() {
                    format!("\\frac{{{n}}}{{{dn}}}")
                } else {
                    format!("{n}/{dn}")
                };
                if neg {
                    (txt(&format!("{}{body}", self.op("−", "-", "-"))), UNARY)
                } else {
                    (txt(&body), if dn == 1 || self.tex() { ATOM } else { PRODUCT })
                }
            }
            Node::Symbol(s) => (txt(&name(s.as_str(), self.style)), ATOM),
            Node::Add([a, b]) => (p(*a, SUM).append(sp.clone()).append(txt("+ ")).append(self.signed(d(*b), PRODUCT)).group(), SUM),
            Node::Sub([a, b]) => (p(*a, SUM).append(sp.clone()).append(txt(self.op("− ", "- ", "- "))).append(self.signed(d(*b), PRODUCT)).group(), SUM),
            Node::Neg(a) => (txt(self.op("−", "-", "-")).append(self.signed(d(*a), PRODUCT)), UNARY),
            Node::Mul([a, b]) => {
                let (sa, sb) = (Self::is_scalar(sh, *a), Self::is_scalar(sh, *b));
                if sa || sb {
                    // scalar first, a number before anything else: c v, 2 t
                    let num = |x: Id| matches!(t[x], Node::Num(_));
                    let (c, v) = if (!sa && sb) || (sa && sb && num(*b) && !num(*a)) { (*b, *a) } else { (*a, *b) };
                    // ASCII output is model syntax: products are explicit
                    let sep = if self.style == Style::Ascii { " * " } else { " " };
                    // a compound scalar factor gets brackets, (1ᵀt) p, except a product of scalars
                    let scalar_product = matches!(t[c], Node::Mul(_)) && Self::is_scalar(sh, c) && Self::is_scalar(sh, v);
                    let left = p(c, if scalar_product { PRODUCT } else { POSTFIX });
                    (left.append(txt(sep)).append(p(v, UNARY + 1)), PRODUCT)
                } else {
                    (p(*a, PRODUCT).append(txt(self.op(" ⊙ ", " .* ", " \\odot "))).append(p(*b, UNARY + 1)), PRODUCT)
                }
            }
            Node::Div([a, b]) => {
                if self.tex() {
                    (txt("\\frac{").append(d(*a).0).append(txt("}{")).append(d(*b).0).append(txt("}")), ATOM)
                } else {
                    (p(*a, PRODUCT).append(txt(" / ")).append(p(*b, POSTFIX)), PRODUCT)
                }
            }
            Node::Pow([a, b]) => {
                let sup = match &t[*b] {
                    Node::Num(r) if r.is_integer() && (2..=9).contains(r.numer()) && self.uni() => {
                        Some(["²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"][(*r.numer() - 2) as usize].to_string())
                    }
                    _ => None,
                };
                let base = p(*a, ATOM);
                match sup {
                    Some(s) => (base.append(txt(&s)), POSTFIX),
                    None if self.tex() => (base.append(txt("^{")).append(d(*b).0).append(txt("}")), POSTFIX),
                    None => (base.append(txt("^")).append(p(*b, ATOM)), POSTFIX),
                }
            }
            // a matrix product is associative: A (B C) is written A B C, except in ASCII,
            // which reads back as the same tree
            Node::MatMul([a, b]) => {
                let right = if self.style != Style::Ascii && matches!(t[*b], Node::MatMul(_)) { p(*b, PRODUCT) } else { p(*b, UNARY + 1) };
                (p(*a, PRODUCT).append(txt(if self.style == Style::Ascii { " @ " } else { " " })).append(right), PRODUCT)
            }
            // the gradient of a scalar, D(f, x)ᵀ
            Node::Transpose(a) if matches!(&t[*a], Node::Jac(_)) => {
                let Node::Jac([f, x]) = &t[*a] else { unreachable!() };
                let xn = d(*x).0;
                let nabla = match self.style {
                    Style::Latex => txt("\\nabla_{").append(xn).append(txt("} ")),
                    Style::Unicode => txt("∇_").append(xn),
                    Style::Ascii => txt("grad_").append(xn),
                };
                // brackets unless the argument is a name: ∇_x(log det(x)), ∇_x f
                let arg = if matches!(t[*f], Node::Symbol(_)) { d(*f).0 } else { self.paren((d(*f).0, SUM), ATOM) };
                (nabla.append(arg), PRODUCT)
            }
            // row i of a matrix as a column, X[i] in a sum over i: xᵢ
            Node::Transpose(a) if self.sample(t, *a).is_some() => (txt(&self.sample(t, *a).unwrap()), ATOM),
            Node::SumOver([i, n, b]) => {
                let body = if matches!(t[*b], Node::Add(_) | Node::Sub(_)) { self.paren((d(*b).0, SUM), ATOM) } else { d(*b).0 };
                match self.style {
                    Style::Unicode => (txt(&format!("Σ{} ", index_sub(&t[*i].to_string()))).append(body), SUM),
                    Style::Latex => (txt(&format!("\\sum_{{{}}} ", t[*i])).append(body), SUM),
                    Style::Ascii => (txt(&format!("sum({} in {}, ", t[*i], t[*n])).append(d(*b).0).append(txt(")")), ATOM),
                }
            }
            // 1ᵀI is the row of ones 𝟙ᵀ, and its transpose 𝟙
            Node::Transpose(a) if self.style != Style::Ascii && matches!(&t[*a], Node::Sum(e) if matches!(t[*e], Node::Eye(_))) => {
                (txt(self.op("𝟙", "1", "\\mathbf{1}")), ATOM)
            }
            Node::Sum(e) if self.style != Style::Ascii && matches!(t[*e], Node::Eye(_)) => (txt(self.op("𝟙ᵀ", "1'", "\\mathbf{1}^{\\top}")), POSTFIX),
            Node::Transpose(a) => (p(*a, ATOM).append(txt(self.op("ᵀ", "'", "^{\\top}"))), POSTFIX),
            Node::Dot([a, b]) if self.style == Style::Ascii => (txt("dot(").append(d(*a).0).append(txt(", ")).append(d(*b).0).append(txt(")")), ATOM),
            Node::Outer([a, b]) if self.style == Style::Ascii => (txt("outer(").append(d(*a).0).append(txt(", ")).append(d(*b).0).append(txt(")")), ATOM),
            Node::Dot([a, b]) => (p(*a, ATOM).append(txt(self.op("ᵀ", "'", "^{\\top} "))).append(p(*b, ATOM)), PRODUCT),
            Node::Outer([a, b]) => (p(*a, ATOM).append(txt(" ")).append(p(*b, ATOM)).append(txt(self.op("ᵀ", "'", "^{\\top}"))), PRODUCT),
            Node::Sum(a) => match self.style {
                Style::Ascii => self.call("sum", d(*a).0),
                _ => (txt(self.op("1ᵀ", "", "\\mathbf{1}^{\\top} ")).append(p(*a, ATOM)), PRODUCT),
            },
            Node::Diag(a) => self.call("diag", d(*a).0),
            Node::Exp(a) if self.tex() => (txt("e^{").append(d(*a).0).append(txt("}")), POSTFIX),
            Node::Exp(a) => self.call("exp", d(*a).0),
            Node::Log(a) => self.call("log", d(*a).0),
            Node::Sigmoid(a) => self.call("sigmoid", d(*a).0),
            Node::Softmax(a) => self.call("softmax", d(*a).0),
            Node::LogSumExp(a) => self.call("logsumexp", d(*a).0),
            Node::Lgamma(a) => self.call("lgamma", d(*a).0),
            Node::Lmvgamma([a, m]) => match self.style {
                Style::Ascii => (txt("lmvgamma(").append(d(*a).0).append(txt(", ")).append(d(*m).0).append(txt(")")), ATOM),
                // the dimension is m's size: p
                Style::Unicode => (txt("log Γₚ(").append(d(*a).0).append(txt(")")), ATOM),
                Style::Latex => (txt("\\log\\Gamma_{p}\\left(").append(d(*a).0).append(txt("\\right)")), ATOM),
            },
            Node::Log1p(a) => self.call("log1p", d(*a).0),
            Node::Expm1(a) => self.call("expm1", d(*a).0),
            Node::Sign(a) => self.call("sign", d(*a).0),
            Node::Step(a) => self.call("step", d(*a).0),
            Node::Cos(a) => self.call("cos", d(*a).0),
            Node::Sin(a) => self.call("sin", d(*a).0),
            Node::BesselI0(a) => self.call("besseli0", d(*a).0),
            Node::BesselI1(a) => self.call("besseli1", d(*a).0),
            Node::Sqrt(a) => match self.style {
                Style::Latex => (txt("\\sqrt{").append(d(*a).0).append(txt("}")), ATOM),
                Style::Unicode => (txt("√").append(p(*a, ATOM)), POSTFIX),
                Style::Ascii => self.call("sqrt", d(*a).0),
            },
            Node::Abs(a) => match self.style {
                Style::Latex => (txt("\\left|").append(d(*a).0).append(txt("\\right|")), ATOM),
                Style::Unicode => (txt("|").append(d(*a).0).append(txt("|")), ATOM),
                Style::Ascii => self.call("abs", d(*a).0),
            },
            Node::Polygamma([n, a]) => {
                let order = match &t[*n] {
                    Node::Num(r) if r.is_integer() && *r.numer() >= 0 => Some(*r.numer()),
                    _ => None,
                };
                match (self.style, order) {
                    (Style::Ascii, Some(0)) => self.call("digamma", d(*a).0),
                    (Style::Ascii, Some(1)) => self.call("trigamma", d(*a).0),
                    (Style::Ascii, _) | (_, None) => self.call("polygamma", d(*n).0.append(txt(", ")).append(d(*a).0)),
                    (st, Some(k)) => {
                        let head = match (st, k) {
                            (Style::Latex, 0) => "\\psi".to_string(),
                            (Style::Latex, 1) => "\\psi'".to_string(),
                            (Style::Latex, 2) => "\\psi''".to_string(),
                            (Style::Latex, k) => format!("\\psi^{{({k})}}"),
                            (_, 0) => "ψ".to_string(),
                            (_, 1) => "ψ′".to_string(),
                            (_, 2) => "ψ″".to_string(),
                            (_, k) => format!("ψ⁽{}⁾", k.to_string().chars().map(|c| ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'][c.to_digit(10).unwrap() as usize]).collect::<String>()),
                        };
                        let (open, close) = if self.tex() { ("\\left(", "\\right)") } else { ("(", ")") };
                        (txt(&head).append(txt(open)).append(d(*a).0).append(txt(close)), ATOM)
                    }
                }
            }
            Node::Kl([f, t1, t2]) => {
                let fam = match &t[*f] {
                    Node::Symbol(s) => s.to_string(),
                    _ => "F".into(),
                };
                let (head, sep, open, close) = match self.style {
                    Style::Latex => ("\\mathrm{KL}\\left(".to_string(), " \\,\\|\\, ", format!("\\operatorname{{{fam}}}\\left("), "\\right)"),
                    Style::Unicode => ("KL(".to_string(), " ‖ ", format!("{fam}("), ")"),
                    Style::Ascii => ("KL(".to_string(), " || ", format!("{fam}("), ")"),
                };
                let end = if self.tex() { "\\right)" } else { ")" };
                (txt(&head).append(txt(&open)).append(d(*t1).0).append(txt(close)).append(txt(sep)).append(txt(&open)).append(d(*t2).0).append(txt(close)).append(txt(end)), ATOM)
            }
            Node::Eye(_) => (txt("I"), ATOM),
            Node::Kron([a, b]) => match self.style {
                Style::Ascii => (txt("kron(").append(d(*a).0).append(txt(", ")).append(d(*b).0).append(txt(")")), ATOM),
                // brackets in any product: (A ⊗ B) / 2
                _ => (p(*a, UNARY + 1).append(txt(self.op(" ⊗ ", "", " \\otimes "))).append(p(*b, UNARY + 1)), SUM),
            },
            Node::Vec(a) => self.call("vec", d(*a).0),
            // the commutation matrix of m: K vec(m) = vec(mᵀ)
            Node::Commute(a) => match self.style {
                Style::Ascii => self.call("commute", d(*a).0),
                Style::Unicode => (txt("K_").append(p(*a, ATOM)), ATOM),
                Style::Latex => (txt("K_{").append(d(*a).0).append(txt("}")), ATOM),
            },
            Node::Trace(a) => match self.style {
                Style::Unicode => (txt("tr(").append(d(*a).0).append(txt(")")), ATOM),
                Style::Latex => (txt("\\operatorname{tr}\\left(").append(d(*a).0).append(txt("\\right)")), ATOM),
                Style::Ascii => self.call("trace", d(*a).0),
            },
            Node::Vector(items) => {
                // the rows of a matrix written out, [a, b]ᵀ each
                let row = |c: &Id| match &t[*c] {
                    Node::Transpose(v) => match &t[*v] {
                        Node::Vector(r) => Some(r.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                let rows: Option<Vec<Box<[Id]>>> = items.iter().map(row).collect();
                match (rows, self.style) {
                    (Some(rows), Style::Latex) => {
                        let body: Vec<Doc> = rows.iter().map(|r| Doc::intersperse(r.iter().map(|c| d(*c).0), txt(" & "))).collect();
                        (txt("\\begin{pmatrix} ").append(Doc::intersperse(body, txt(" \\\\ "))).append(txt(" \\end{pmatrix}")), ATOM)
                    }
                    (Some(rows), _) => {
                        let body: Vec<Doc> = rows.iter().map(|r| txt("[").append(Doc::intersperse(r.iter().map(|c| d(*c).0), txt(", "))).append(txt("]"))).collect();
                        (txt("[").append(Doc::intersperse(body, txt(", "))).append(txt("]")), ATOM)
                    }
                    (None, Style::Latex) => {
                        let parts: Vec<Doc> = items.iter().map(|c| d(*c).0).collect();
                        (txt("\\begin{pmatrix} ").append(Doc::intersperse(parts, txt(" \\\\ "))).append(txt(" \\end{pmatrix}")), ATOM)
                    }
                    (None, _) => {
                        let parts: Vec<Doc> = items.iter().map(|c| d(*c).0).collect();
                        (txt("[").append(Doc::intersperse(parts, txt(", "))).append(txt("]")), ATOM)
                    }
                }
            }
            // an entry yᵢ, or a row xᵢᵀ, at a sum's index
            Node::At([v, i]) if matches!(t[*i], Node::Symbol(_)) => match self.style {
                Style::Ascii => {
                    let row = self.sample(t, id).is_some();
                    (p(*v, ATOM).append(txt(&format!("[{}]{}", t[*i], if row { "'" } else { "" }))), POSTFIX)
                }
                _ => match self.sample(t, id) {
                    Some(x) => (txt(&x).append(txt(self.op("ᵀ", "'", "^{\\top}"))), POSTFIX),
                    None => (txt(&self.indexed(&t[*v].to_string(), &t[*i].to_string(), false)), ATOM),
                },
            },
            Node::At([v, i]) => {
                let k = match &t[*i] {
                    Node::Num(r) if r.is_integer() => r.numer().to_string(),
                    _ => "?".into(),
                };
                match self.style {
                    Style::Ascii => (p(*v, ATOM).append(txt(&format!("[{k}]"))), POSTFIX),
                    Style::Latex => (txt("{").append(p(*v, ATOM)).append(txt(&format!("}}_{{{k}}}"))), if matches!(t[*v], Node::Symbol(_)) { ATOM } else { POSTFIX }),
                    Style::Unicode => {
                        let sub = subscript(&k);
                        // η₁ is a name of its own
                        let prec = if matches!(t[*v], Node::Symbol(_)) { ATOM } else { POSTFIX };
                        (p(*v, ATOM).append(txt(&sub)), prec)
                    }
                }
            }
            Node::Inv(a) => match self.style {
                Style::Ascii => self.call("inv", d(*a).0),
                _ => (p(*a, ATOM).append(txt(self.op("⁻¹", "", "^{-1}"))), POSTFIX),
            },
            Node::LogDet(a) => match self.style {
                Style::Latex => (txt("\\log\\det\\left(").append(d(*a).0).append(txt("\\right)")), ATOM),
                Style::Unicode => (txt("log det(").append(d(*a).0).append(txt(")")), ATOM),
                Style::Ascii => self.call("logdet", d(*a).0),
            },
            Node::Ones(a) => match self.style {
                Style::Latex => (txt("\\mathbf{1}"), ATOM),
                Style::Unicode => (txt("𝟙"), ATOM),
                Style::Ascii => self.call("ones", d(*a).0),
            },
            Node::Jac([f, x]) => {
                let xn = d(*x).0;
                match self.style {
                    Style::Latex => (txt("\\frac{\\partial}{\\partial ").append(xn).append(txt("}")).append(p(*f, ATOM)), PRODUCT),
                    Style::Unicode => (txt("∂").append(p(*f, ATOM)).append(txt("/∂")).append(xn), PRODUCT),
                    Style::Ascii => (txt("D(").append(d(*f).0).append(txt(", ")).append(xn).append(txt(")")), ATOM),
                }
            }
            Node::Expect([q, _, b]) => {
                let (e, o, c) = match self.style {
                    Style::Latex => ("\\mathbb{E}_{", "}\\left[", "\\right]"),
                    _ => ("E_", "[", "]"),
                };
                (txt(e).append(d(*q).0).append(txt(o)).append(d(*b).0).append(txt(c)), ATOM)
            }
            Node::LogP([_, x, th]) => {
                let bar = if self.tex() { " \\mid " } else { " | " };
                let (l, r) = if self.tex() { ("\\log p\\left(", "\\right)") } else { ("log p(", ")") };
                (txt(l).append(d(*x).0).append(txt(bar)).append(d(*th).0).append(txt(r)), ATOM)
            }
            Node::LogPart([f, th]) => {
                // with more than one family about, A says whose it is: A_bernoulli(η)
                let whose = match &t[*f] {
                    Node::Symbol(fs) if self.several_families(*fs) => fs.to_string(),
                    _ => String::new(),
                };
                let head = match (whose.is_empty(), self.tex()) {
                    (true, _) => "A".to_string(),
                    (false, true) => format!("A_{{\\text{{{}}}}}", whose.replace('_', "\\_")),
                    (false, false) => format!("A_{whose}"),
                };
                let (l, r) = if self.tex() { (format!("{head}\\left("), "\\right)") } else { (format!("{head}("), ")") };
                (txt(&l).append(d(*th).0).append(txt(r)), ATOM)
            }
            Node::Mean([f, arg]) | Node::Cov([f, arg]) | Node::Second([f, arg]) => {
                let x = self.family_var(t, *f, *arg);
                let inner = match &t[id] {
                    Node::Mean(_) => format!("E[{x}"),
                    Node::Cov(_) => format!("Cov[{x}"),
                    _ => format!("E[{x} {x}{}", self.op("ᵀ", "'", "^{\\top}")),
                };
                let inner = if self.tex() { inner.replace("E[", "\\mathbb{E}\\left[").replace("Cov[", "\\operatorname{Cov}\\left[") } else { inner };
                // a statistic no model variable is drawn with: say at which parameter
                let at = match drawn_from(self.model, t, *f, *arg) {
                    None => txt(if self.tex() { " \\mid " } else { " | " }).append(d(*arg).0),
                    Some(_) => txt(""),
                };
                (txt(&inner).append(at).append(txt(if self.tex() { "\\right]" } else { "]" })), ATOM)
            }
        }
    }
}

/// The model variable drawn from family `f` with parameter `arg` (a subterm of `t`), and
/// whether the family's statistic is the variable itself.
pub fn drawn_from(model: &Model, t: &RecExpr<Node>, f: Id, arg: Id) -> Option<(String, bool)> {
    let Node::Symbol(fs) = &t[f] else { return None };
    let fi = model.family_index(*fs)?;
    let arg = crate::derive::subterm(t, arg);
    let v = model.vars.values().find(|v| v.family.as_ref().is_some_and(|(i, p, _)| *i == fi && *p == arg))?;
    let fam = &model.families[fi];
    Some((v.name.clone(), fam.stat.as_ref() == [Node::Symbol(Symbol::from(fam.var.as_str()))]))
}

/// Helper for tests and callers: print a term with no names.
pub fn print(model: &Model, t: &RecExpr<Node>, style: Style) -> String {
    Printer::new(model, style).print(t)
}
