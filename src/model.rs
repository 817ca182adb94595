//! Syntax trees to a checked model: names resolved, shapes and domains known, losses as
//! terms of the shared language, families (catalog and user-declared) ready to become
//! rules.

use crate::lang::{node_shape, Dim, Node, Shape, SCALAR};
use crate::syntax::{self, Expr, ExprKind, FamilyDecl, Span, StmtKind, SyntaxError, TypeExpr};
use egg::{Id, Language, RecExpr, Symbol};
use num_traits::{CheckedDiv, CheckedMul};
use num_rational::Rational64;
use std::collections::BTreeMap;

/// Where a value lives; sampled from it in checks and used by conditional rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    Real,
    Positive,
    Negative,
    /// the interval [0, 1] (probabilities, soft targets)
    Unit,
    Simplex,
    OneHot,
    /// one-hot or all zero: k + 1 categories, the last written as 0
    OneHotOrZero,
    /// an angle in [−π, π]
    Angle,
    /// a symmetric positive definite matrix
    Spd,
    Binary,
    Count,
}

impl Domain {
    fn parse(s: &str) -> Option<Domain> {
        Some(match s {
            "R" | "real" | "ℝ" => Domain::Real,
            "positive" | "R+" => Domain::Positive,
            "negative" | "R-" => Domain::Negative,
            "unit" => Domain::Unit,
            "simplex" => Domain::Simplex,
            "onehot" => Domain::OneHot,
            "onehot0" => Domain::OneHotOrZero,
            "angle" => Domain::Angle,
            "spd" => Domain::Spd,
            "binary" => Domain::Binary,
            "count" => Domain::Count,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Domain::Real => "R",
            Domain::Positive => "positive",
            Domain::Negative => "negative",
            Domain::Unit => "unit",
            Domain::Simplex => "simplex",
            Domain::OneHot => "onehot",
            Domain::OneHotOrZero => "onehot0",
            Domain::Angle => "angle",
            Domain::Spd => "spd",
            Domain::Binary => "binary",
            Domain::Count => "count",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Param,
    Data,
    /// declared by `x ~ family(…)` only
    Random,
}

#[derive(Clone, Debug)]
pub struct Var {
    pub name: String,
    pub shape: Shape,
    pub domain: Domain,
    pub role: Role,
    /// the family it is drawn from, if any: (family index, its parameter, the parameter's shape)
    pub family: Option<(usize, RecExpr<Node>, Shape)>,
}

#[derive(Clone, Debug)]
pub struct Family {
    pub name: String,
    pub param: String,
    pub param_shape: Shape,
    pub var: String,
    pub var_shape: Shape,
    pub support: Domain,
    /// T(x), in terms of `var`
    pub stat: RecExpr<Node>,
    /// A(η), in terms of `param`
    pub logpart: RecExpr<Node>,
    /// log h(x), in terms of `var`
    pub logh: RecExpr<Node>,
    /// what the mean E[T(x)] is called in printed results
    pub mean_name: Option<String>,
    /// where the natural parameter lives (R, negative or positive)
    pub param_domain: Domain,
    /// known parameters A, T and log h may use (binomial's n); a model's `x ~ F(η, n = N)`
    /// makes a copy with them filled in
    pub known: Vec<(String, Shape, Domain)>,
    /// in a model's copy, the terms its known parameters were given (`S = Sigma`): the
    /// family's A, T and log h depend on what they depend on
    pub given: Vec<RecExpr<Node>>,
    /// in a model's copy, the family as declared (its known parameters unfilled): a later
    /// `~` statement reads its arguments against it
    pub template: Option<Box<Family>>,
    /// usual parameterisations: `x ~ poisson(rate = λ)` means η = log λ
    pub usual: Vec<Usual>,
    /// further natural parameters: known parameters with a statistic of their own
    /// (`T(L) = -outer(x, x) / 2`), in the order `known` lists them. A model gives them like
    /// known parameters, and the rules use A′ = E[T] for η only; `evolved families` derives
    /// their moments from A too
    pub naturals: Vec<(String, RecExpr<Node>)>,
    /// Σ ⟨P, T_P(x)⟩ over the further natural parameters (0 when there are none), in terms of
    /// `var` and their names: with η fixed, part of the base measure
    pub pairing: RecExpr<Node>,
    /// recognise A in models that do not mention the family
    pub recognise: bool,
    /// E[T] and Cov[T] as the textbooks give them (`E = …, Cov = …`, in η and the known
    /// parameters): never used to derive, only by the catalog's test, as a third way to
    /// the moments where the density cannot be summed or integrated
    pub textbook: Option<(RecExpr<Node>, RecExpr<Node>)>,
    pub from_catalog: bool,
    /// the `family` statement, in its file (the model or a catalog file)
    pub span: Span,
}

impl Family {
    /// log h(x) as the rules and the evaluator use it: with the further natural parameters
    /// held fixed, their pairing ⟨P, T_P(x)⟩ belongs to it.
    pub fn base_measure(&self) -> RecExpr<Node> {
        if self.naturals.is_empty() {
            return self.logh.clone();
        }
        let mut out = self.logh.clone();
        let a = Id::from(out.as_ref().len() - 1);
        let b = crate::derive::append(&mut out, &self.pairing);
        out.add(Node::Add([a, b]));
        out
    }

    /// T(x) = x with x one-hot or binary: E[T Tᵀ] = diag(E[T]).
    pub fn is_indicator(&self) -> bool {
        matches!(self.support, Domain::OneHot | Domain::OneHotOrZero | Domain::Binary)
            && self.stat.as_ref() == [Node::Symbol(Symbol::from(self.var.as_str()))]
    }
}

/// Usual parameters of a family (rate; shape and rate) and the natural parameter they give.
#[derive(Clone, Debug)]
pub struct Usual {
    /// name, shape, domain
    pub params: Vec<(String, Shape, Domain)>,
    /// η in terms of the usual parameters (and the known ones)
    pub eta: RecExpr<Node>,
    /// the further natural parameters they give: (index in `known`, value)
    pub naturals: Vec<(usize, RecExpr<Node>)>,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub loss: String,
    pub wrt: String,
    /// 1 gradient, 2 Hessian, 3 Hessian-vector product
    pub order: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    /// named dimensions; a number as a name is a fixed size
    pub dims: Vec<String>,
    pub vars: BTreeMap<String, Var>,
    pub families: Vec<Family>,
    pub losses: Vec<(String, RecExpr<Node>)>,
    pub requests: Vec<Request>,
    /// parameter → the direction vector of its Hessian-vector product (a data variable)
    pub directions: BTreeMap<String, String>,
    pub claims: Vec<Claim>,
    /// the index of each sum in the losses → the dimension it runs over
    pub indices: BTreeMap<String, String>,
}

/// A formula the user believes: proved in the e-graph, or tested numerically.
#[derive(Clone, Debug)]
pub struct Claim {
    pub loss: String,
    pub wrt: String,
    /// 1 gradient, 2 Hessian
    pub order: usize,
    pub term: RecExpr<Node>,
}

impl Model {
    pub fn var(&self, s: Symbol) -> Option<&Var> {
        self.vars.get(s.as_str())
    }
    pub fn family(&self, s: Symbol) -> Option<&Family> {
        self.families.iter().find(|f| f.name == s.as_str())
    }
    pub fn family_index(&self, s: Symbol) -> Option<usize> {
        self.families.iter().position(|f| f.name == s.as_str())
    }
    /// The shape of a symbol in model terms.
    pub fn symbol_shape(&self, s: Symbol) -> Option<Shape> {
        if let Some(v) = self.var(s) {
            return Some(v.shape);
        }
        // a sum's index and the dimension it runs over are numbers
        if self.indices.contains_key(s.as_str()) || self.dims.iter().any(|d| d == s.as_str()) {
            return Some(crate::lang::SCALAR);
        }
        self.family(s).map(|_| Shape::Family).or_else(|| crate::lang::constant_symbol(s).map(|_| crate::lang::SCALAR))
    }
    /// Is the term 1×1?
    pub fn is_scalar_term(&self, t: &RecExpr<Node>) -> bool {
        crate::lang::term_shapes(t, &|s| self.symbol_shape(s)).ok().and_then(|s| s.last().copied()).is_some_and(|s| s.is_scalar())
    }
    pub fn loss(&self, name: &str) -> Option<&RecExpr<Node>> {
        self.losses.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }
    /// Families the model itself mentions (declared or sampled from).
    pub fn uses_family(&self, idx: usize) -> bool {
        let name = Node::Symbol(Symbol::from(self.families[idx].name.as_str()));
        !self.families[idx].from_catalog
            || self.vars.values().any(|v| v.family.as_ref().is_some_and(|(i, _, _)| *i == idx))
            || self.losses.iter().any(|(_, t)| t.as_ref().contains(&name))
    }
}

fn err(span: Span, message: impl Into<String>) -> SyntaxError {
    SyntaxError { span, message: message.into() }
}

/// Reads a decimal literal exactly.
pub fn rational(s: &str) -> Option<Rational64> {
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let digits: i64 = format!("{int}{frac}").parse().ok()?;
    if digits == 0 {
        // zero times any power of ten; the loop below would run |exponent| times
        return Some(Rational64::from_integer(0));
    }
    let scale = exp - frac.len() as i32;
    let ten = Rational64::from_integer(10);
    let mut r = Rational64::from_integer(digits);
    for _ in 0..scale.unsigned_abs() {
        r = if scale > 0 { r.checked_mul(&ten)? } else { r.checked_div(&ten)? };
    }
    Some(r)
}

/// Scope of names while a term is built.
struct Scope<'m> {
    model: &'m Model,
    /// let-bound names, inlined where they are used
    lets: &'m BTreeMap<String, (RecExpr<Node>, Shape)>,
    /// names local to a family declaration
    locals: Vec<(String, Shape)>,
    dims: &'m [String],
}

struct Builder<'s, 'm> {
    scope: &'s Scope<'m>,
    /// indices bound by the sums around the current term, with their dimensions
    bound: Vec<(String, String)>,
    out: RecExpr<Node>,
    shapes: Vec<Shape>,
}

const ALLOWED_IN_MODELS: &[&str] = &[
    "dot", "outer", "sum", "diag", "exp", "log", "sigmoid", "softmax", "logsumexp", "transpose", "lgamma", "digamma", "trigamma",
    "polygamma", "log1p", "expm1", "sqrt", "abs", "sign", "step", "ones", "vec", "at", "cos", "sin", "inv", "logdet",
    "besseli0", "besseli1", "kron", "trace", "lmvgamma", "eye",
];

impl<'s, 'm> Builder<'s, 'm> {
    fn add(&mut self, node: Node, span: Span) -> Result<Id, SyntaxError> {
        let kids: Vec<Shape> = node.children().iter().map(|&c| self.shapes[usize::from(c)]).collect();
        let shape = node_shape(&node, &kids).map_err(|m| err(span, m))?;
        self.shapes.push(shape);
        Ok(self.out.add(node))
    }

    fn leaf(&mut self, s: Symbol, shape: Shape) -> Id {
        self.shapes.push(shape);
        self.out.add(Node::Symbol(s))
    }

    fn mentions(&self, root: Id, s: Symbol) -> bool {
        let node = &self.out[root];
        *node == Node::Symbol(s) || node.children().iter().any(|&c| self.mentions(c, s))
    }

    fn shape(&self, id: Id) -> Shape {
        self.shapes[usize::from(id)]
    }

    /// Copies a finished term in, returning its root.
    fn splice(&mut self, e: &RecExpr<Node>, span: Span) -> Result<Id, SyntaxError> {
        let mut map = vec![];
        for n in e.iter() {
            let id = match n {
                Node::Symbol(s) => {
                    let sh = self.scope.model.symbol_shape(*s).ok_or_else(|| err(span, format!("unknown name `{s}`")))?;
                    self.leaf(*s, sh)
                }
                _ => {
                    let n2 = n.clone().map_children(|c| map[usize::from(c)]);
                    self.add(n2, span)?
                }
            };
            map.push(id);
        }
        Ok(*map.last().unwrap())
    }

    fn expr(&mut self, e: &Expr) -> Result<Id, SyntaxError> {
        match &e.kind {
            ExprKind::Num(s) => {
                let r = rational(s).ok_or_else(|| err(e.span, format!("the number {s} is too large or too precise")))?;
                self.add(Node::Num(r), e.span)
            }
            ExprKind::Var(name) => {
                if self.bound.iter().any(|(i, _)| i == name) {
                    return Ok(self.leaf(Symbol::from(name.as_str()), SCALAR));
                }
                if let Some((_, sh)) = self.scope.locals.iter().find(|(n, _)| n == name) {
                    return Ok(self.leaf(Symbol::from(name.as_str()), *sh));
                }
                if let Some((t, _)) = self.scope.lets.get(name) {
                    return self.splice(t, e.span);
                }
                if let Some(v) = self.scope.model.vars.get(name) {
                    return Ok(self.leaf(Symbol::from(name.as_str()), v.shape));
                }
                // a named dimension as a value is its size (J = sum(i in n, …) / n)
                if self.scope.dims.contains(name) {
                    if name.parse::<usize>().is_ok() {
                        return Err(err(e.span, format!("`{name}` is a dimension, not a value")));
                    }
                    return Ok(self.leaf(Symbol::from(name.as_str()), SCALAR));
                }
                if crate::lang::constant_symbol(Symbol::from(name.as_str())).is_some() {
                    return Ok(self.leaf(Symbol::from(name.as_str()), SCALAR));
                }
                Err(err(e.span, format!("unknown name `{name}`: declare it with `param {name} : …` or `data {name} : …`")))
            }
            ExprKind::Neg(a) => {
                let a = self.expr(a)?;
                self.add(Node::Neg(a), e.span)
            }
            ExprKind::SumOver(index, ispan, dim, dspan, body) => {
                if !self.scope.dims.contains(dim) || dim.parse::<usize>().is_ok() {
                    return Err(err(*dspan, format!("`{dim}` is not a declared dimension: a sum runs over one, as in `dim n` … sum(i in n, …)")));
                }
                let taken = self.scope.model.vars.contains_key(index)
                    || self.scope.lets.contains_key(index)
                    || self.scope.dims.contains(index)
                    || self.bound.iter().any(|(i, _)| i == index)
                    || ALLOWED_IN_MODELS.contains(&index.as_str());
                if taken {
                    return Err(err(*ispan, format!("`{index}` is already a name here: the index of a sum needs a new one")));
                }
                let (i, n) = (self.leaf(Symbol::from(index.as_str()), SCALAR), self.leaf(Symbol::from(dim.as_str()), SCALAR));
                self.bound.push((index.clone(), dim.clone()));
                let b = self.expr(body);
                self.bound.pop();
                let b = b?;
                if !self.mentions(b, Symbol::from(index.as_str())) {
                    return Err(err(body.span, format!("the summand does not use `{index}`: index a variable with it, as in X[{index}]")));
                }
                self.add(Node::SumOver([i, n, b]), e.span)
            }
            ExprKind::Transpose(a) => {
                let a = self.expr(a)?;
                self.add(Node::Transpose(a), e.span)
            }
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                let node = match op {
                    '+' => Node::Add([a, b]),
                    '-' => Node::Sub([a, b]),
                    '/' => Node::Div([a, b]),
                    '^' => Node::Pow([a, b]),
                    '@' => Node::MatMul([a, b]),
                    '⊙' => Node::Mul([a, b]),
                    _ => {
                        // `*` is a matrix product when the left side is a matrix that fits
                        // (`⊙` or `.*` is the elementwise product).
                        let (sa, sb) = (self.shape(a), self.shape(b));
                        match (sa, sb) {
                            (Shape::Mat(_, c), Shape::Mat(r, _)) if c != Dim::One && c == r => Node::MatMul([a, b]),
                            _ => Node::Mul([a, b]),
                        }
                    }
                };
                self.add(node, e.span)
            }
            ExprKind::Call(f, args) => self.call(f, args, e.span),
            ExprKind::Expect(q, body) => {
                let qid = self.expr(&Expr { kind: ExprKind::Var(q.clone()), span: e.span })?;
                let b = self.expr(body)?;
                let randoms: Vec<&Var> = self
                    .scope
                    .model
                    .vars
                    .values()
                    .filter(|v| v.role == Role::Random && self.mentions(b, Symbol::from(v.name.as_str())))
                    .collect();
                let [x] = randoms.as_slice() else {
                    return Err(err(
                        e.span,
                        if randoms.is_empty() {
                            "E_q[…] needs a random variable inside (declare one with `x ~ family(…)`)".to_string()
                        } else {
                            "E_q[…] over more than one random variable is not supported".to_string()
                        },
                    ));
                };
                let expected = match x.domain {
                    Domain::OneHot => x.shape,
                    Domain::Binary => SCALAR,
                    d => return Err(err(e.span, format!("E_{q}[…] over a variable with {} support is not supported yet", d.name()))),
                };
                if self.shape(qid) != expected {
                    return Err(err(e.span, format!("`{q}` must be {expected} to weight the values of `{}`, but it is {}", x.name, self.shape(qid))));
                }
                let xid = self.leaf(Symbol::from(x.name.as_str()), x.shape);
                self.add(Node::Expect([qid, xid, b]), e.span)
            }
            ExprKind::Density(..) => {
                let lp = self.log_density(e)?;
                self.add(Node::Exp(lp), e.span)
            }
            ExprKind::Kl((f1, s1, a1), (f2, s2, a2)) => {
                let one = resolve_member(self.scope, f1, *s1, a1, e.span)?;
                let two = resolve_member(self.scope, f2, *s2, a2, e.span)?;
                let fam = &self.scope.model.families[one.index];
                if one.index != two.index {
                    return Err(err(e.span, format!("KL between two families ({f1} and {f2}) is not supported: both members must be of one family")));
                }
                if !fam.known.is_empty() || fam.template.is_some() {
                    return Err(err(e.span, format!("KL of {f1}, a family with known parameters, is not supported yet")));
                }
                if one.shape != two.shape {
                    return Err(err(e.span, format!("the two members have parameters of different shapes: {} and {}", one.shape, two.shape)));
                }
                let f = self.leaf(Symbol::from(fam.name.as_str()), Shape::Family);
                let (t1, t2) = (self.splice(&one.eta, e.span)?, self.splice(&two.eta, e.span)?);
                self.add(Node::Kl([f, t1, t2]), e.span)
            }
        }
    }

    fn log_density(&mut self, e: &Expr) -> Result<Id, SyntaxError> {
        let ExprKind::Density(x, param) = &e.kind else { unreachable!() };
        let Some(v) = self.scope.model.vars.get(x) else {
            return Err(err(e.span, format!("unknown random variable `{x}` in p(…)")));
        };
        let Some((fi, default, pshape)) = &v.family else {
            return Err(err(e.span, format!("`{x}` has no family: write `{x} ~ family(parameter)` first")));
        };
        let fam = &self.scope.model.families[*fi];
        let t = match param {
            Some(p) => self.expr(p)?,
            None => self.splice(default, e.span)?,
        };
        if self.shape(t) != *pshape {
            return Err(err(e.span, format!("`{x}` is drawn from {} with a parameter that is {pshape}, so p({x} | …) needs one of that shape, not {}", fam.name, self.shape(t))));
        }
        let f = self.leaf(Symbol::from(fam.name.as_str()), Shape::Family);
        let xid = self.leaf(Symbol::from(x.as_str()), v.shape);
        self.add(Node::LogP([f, xid, t]), e.span)
    }

    fn call(&mut self, f: &str, args: &[Expr], span: Span) -> Result<Id, SyntaxError> {
        if f == "log" && args.len() == 1 && matches!(args[0].kind, ExprKind::Density(..)) {
            return self.log_density(&args[0]);
        }
        // `stack` is what `[a, b]` is read as
        if !ALLOWED_IN_MODELS.contains(&f) && f != "stack" {
            return Err(err(span, format!("unknown function `{f}`; known: {}", ALLOWED_IN_MODELS.join(", "))));
        }
        let arity = if matches!(f, "dot" | "outer" | "polygamma" | "at" | "kron" | "lmvgamma") { 2 } else if f == "stack" { args.len().clamp(1, 16) } else { 1 };
        if args.len() != arity {
            return Err(err(span, format!("`{f}` takes {arity} argument{}, got {}", if arity == 1 { "" } else { "s" }, args.len())));
        }
        let ids: Vec<Id> = args.iter().map(|a| self.expr(a)).collect::<Result<_, _>>()?;
        let node = match f {
            "dot" => Node::Dot([ids[0], ids[1]]),
            "outer" => Node::Outer([ids[0], ids[1]]),
            "sum" => Node::Sum(ids[0]),
            "diag" => Node::Diag(ids[0]),
            "exp" => Node::Exp(ids[0]),
            "log" => Node::Log(ids[0]),
            "sigmoid" => Node::Sigmoid(ids[0]),
            "softmax" => Node::Softmax(ids[0]),
            "logsumexp" => Node::LogSumExp(ids[0]),
            "lgamma" => Node::Lgamma(ids[0]),
            "lmvgamma" => Node::Lmvgamma([ids[0], ids[1]]),
            "digamma" | "trigamma" => {
                let n = self.add(Node::Num((if f == "digamma" { 0 } else { 1 }).into()), span)?;
                Node::Polygamma([n, ids[0]])
            }
            "polygamma" => {
                if !matches!(&self.out[ids[0]], Node::Num(r) if r.is_integer() && (0..=30).contains(r.numer())) {
                    return Err(err(args[0].span, "the order of polygamma(n, x) must be a whole number from 0 to 30"));
                }
                Node::Polygamma([ids[0], ids[1]])
            }
            "log1p" => Node::Log1p(ids[0]),
            "expm1" => Node::Expm1(ids[0]),
            "sqrt" => Node::Sqrt(ids[0]),
            "abs" => Node::Abs(ids[0]),
            "sign" => Node::Sign(ids[0]),
            "step" => Node::Step(ids[0]),
            "ones" => Node::Ones(ids[0]),
            "inv" => Node::Inv(ids[0]),
            "logdet" => Node::LogDet(ids[0]),
            "cos" => Node::Cos(ids[0]),
            "sin" => Node::Sin(ids[0]),
            "besseli0" => Node::BesselI0(ids[0]),
            "besseli1" => Node::BesselI1(ids[0]),
            "vec" => Node::Vec(ids[0]),
            "kron" => Node::Kron([ids[0], ids[1]]),
            "trace" => Node::Trace(ids[0]),
            "eye" => Node::Eye(ids[0]),
            "stack" => {
                // [[a, b], [c, d]] is a matrix with those rows
                let mut items = ids.clone();
                if items.iter().all(|&i| matches!(self.shape(i), Shape::Mat(r, Dim::One) if r != Dim::One)) {
                    for (k, i) in ids.iter().enumerate() {
                        items[k] = self.add(Node::Transpose(*i), args[k].span)?;
                    }
                }
                Node::Vector(items.as_slice().into())
            }
            "at" if matches!(&self.out[ids[1]], Node::Symbol(s) if self.bound.iter().any(|(b, _)| b == s.as_str())) => {
                let Node::Symbol(s) = &self.out[ids[1]] else { unreachable!() };
                let dim = &self.bound.iter().find(|(b, _)| b == s.as_str()).unwrap().1;
                let Shape::Mat(rows, cols) = self.shape(ids[0]) else { unreachable!() };
                if rows != Dim::Named(Symbol::from(dim.as_str())) {
                    return Err(err(span, format!("`{s}` runs over {dim}, but this has {rows} rows")));
                }
                let row = self.add(Node::At([ids[0], ids[1]]), span)?;
                // row i of a matrix, as a column: the i-th sample
                if cols == Dim::One {
                    return Ok(row);
                }
                Node::Transpose(row)
            }
            "at" => {
                let n = match self.shape(ids[0]) {
                    Shape::Mat(Dim::Named(n), _) => n.as_str().parse::<i64>().ok(),
                    Shape::Mat(Dim::One, _) => Some(1),
                    _ => None,
                };
                let ok = matches!(&self.out[ids[1]], Node::Num(r) if r.is_integer() && *r.numer() >= 1 && n.is_none_or(|n| *r.numer() <= n));
                if !ok {
                    return Err(err(args[1].span, format!("an index must be a whole number from 1 to the length ({})", n.map_or("its size".to_string(), |n| n.to_string()))));
                }
                // X[2] of a matrix is its row 2 as a column, as X[i] is in a sum
                if matches!(self.shape(ids[0]), Shape::Mat(_, c) if c != Dim::One) {
                    let row = self.add(Node::At([ids[0], ids[1]]), span)?;
                    Node::Transpose(row)
                } else {
                    Node::At([ids[0], ids[1]])
                }
            }
            _ => Node::Transpose(ids[0]),
        };
        self.add(node, span)
    }
}

/// Builds one term in a scope; returns it with its shape.
fn build(scope: &Scope, e: &Expr) -> Result<(RecExpr<Node>, Shape), SyntaxError> {
    let mut b = Builder { scope, bound: vec![], out: RecExpr::default(), shapes: vec![] };
    let root = b.expr(e)?;
    let shape = b.shape(root);
    Ok((b.out, shape))
}

fn type_shape(t: &TypeExpr, dims: &[String]) -> Result<(Shape, Domain), SyntaxError> {
    let domain = Domain::parse(&t.domain).ok_or_else(|| {
        err(t.span, format!("unknown type `{}`: use R, positive, negative, unit, angle, simplex, onehot, onehot0, binary, count or spd", t.domain))
    })?;
    let dim = |(d, sp): &(String, Span)| -> Result<Dim, SyntaxError> {
        if d.chars().all(|c| c.is_ascii_digit()) && !matches!(d.parse::<usize>(), Ok(1..=1_000_000)) {
            Err(err(*sp, format!("a size must be a whole number from 1 to 1000000, not {d}")))
        } else if d == "1" {
            Ok(Dim::One)
        } else if d.chars().all(|c| c.is_ascii_digit()) || dims.contains(d) {
            Ok(Dim::Named(Symbol::from(d.as_str())))
        } else {
            Err(err(*sp, format!("unknown dimension `{d}`: declare it with `dim {d}`")))
        }
    };
    let shape = match t.dims.as_slice() {
        [] => SCALAR,
        [n] => Shape::vector(dim(n)?),
        [m, n] => Shape::Mat(dim(m)?, dim(n)?),
        _ => return Err(err(t.span, "at most two dimensions (a matrix) are supported")),
    };
    if domain == Domain::Spd && !matches!(shape, Shape::Mat(r, c) if r == c && r != Dim::One) {
        return Err(err(t.span, "spd needs a square matrix type such as spd^(k,k)"));
    }
    if matches!(domain, Domain::Simplex | Domain::OneHot | Domain::OneHotOrZero) && !shape.is_column() {
        return Err(err(t.span, format!("{} needs a vector type such as {}^k", domain.name(), domain.name())));
    }
    Ok((shape, domain))
}

/// Reads the model's statements, with the catalog families (also model-language text)
/// declared first.
pub fn build_model(stmts: &[syntax::Stmt], catalog: &[FamilyDecl]) -> Result<Model, SyntaxError> {
    build_model_from(stmts, || catalog_families(catalog))
}

/// The catalog's families, built from their declarations.
pub(crate) fn catalog_families(catalog: &[FamilyDecl]) -> Result<Vec<Family>, SyntaxError> {
    let mut out: Vec<Family> = vec![];
    for f in catalog {
        if out.iter().any(|g| g.name == f.name) {
            return Err(err(Span::default(), format!("the family `{}` is declared twice in the catalog files (a --rules folder's .ef file may not redefine a built-in family; use --only-rules)", f.name)));
        }
        out.push(family(f, Span::default(), true)?);
    }
    Ok(out)
}

/// `build_model` with the catalog's families built by `catalog` (the built-in catalog's
/// are built once per process).
pub(crate) fn build_model_from(stmts: &[syntax::Stmt], catalog: impl FnOnce() -> Result<Vec<Family>, SyntaxError>) -> Result<Model, SyntaxError> {
    if stmts.is_empty() {
        return Err(err(Span::default(), "the model is empty: it has no statements, only blanks and comments; write at least `param NAME : TYPE` and `J = …`"));
    }
    let mut m = Model { families: catalog()?, ..Model::default() };
    let mut lets: BTreeMap<String, (RecExpr<Node>, Shape)> = BTreeMap::new();
    let declared = |name: &str, span: Span, m: &Model, lets: &BTreeMap<String, _>| -> Result<(), SyntaxError> {
        if m.vars.contains_key(name) || lets.contains_key(name) || m.dims.iter().any(|d| d == name) {
            return Err(err(span, format!("`{name}` is already declared")));
        }
        if name.chars().all(|c| c == '_') {
            return Err(err(span, format!("`{name}` is not a name: use a letter")));
        }
        let shown = crate::print::name(name, crate::print::Style::Unicode);
        if let Some(other) = m.vars.keys().chain(lets.keys()).find(|o| crate::print::name(o, crate::print::Style::Unicode) == shown) {
            return Err(err(span, format!("`{name}` and `{other}` would print the same ({shown})")));
        }
        if ALLOWED_IN_MODELS.contains(&name) || crate::lang::constant_symbol(Symbol::from(name)).is_some() {
            return Err(err(span, format!("`{name}` is a reserved name")));
        }
        Ok(())
    };
    for st in stmts {
        match &st.kind {
            StmtKind::Dim(names) => {
                for (n, sp) in names {
                    declared(n, *sp, &m, &lets)?;
                    m.dims.push(n.clone());
                }
            }
            StmtKind::Param(n, t) | StmtKind::Data(n, t) => {
                declared(n, st.span, &m, &lets)?;
                let (shape, domain) = type_shape(t, &m.dims)?;
                let role = if matches!(st.kind, StmtKind::Param(..)) { Role::Param } else { Role::Data };
                m.vars.insert(n.clone(), Var { name: n.clone(), shape, domain, role, family: None });
            }
            StmtKind::Family(f) => {
                if m.families.iter().any(|g| g.name == f.name) {
                    return Err(err(st.span, format!("family `{}` is already declared (the catalog has it)", f.name)));
                }
                m.families.push(family(f, st.span, false)?);
            }
            StmtKind::Sample { var, family: fname, family_span, args } => {
                let scope = Scope { model: &m, lets: &lets, locals: vec![], dims: &m.dims };
                let member = resolve_member(&scope, fname, *family_span, args, st.span)?;
                let (fi, param, pshape) = (member.index, member.eta.clone(), member.shape);
                let fi = if member.known.is_empty() { fi } else { instance(&mut m, fi, &member.known) };
                let fam = &m.families[fi];
                let bind = bind_dims(fam.param_shape, pshape).unwrap_or_default();
                let elementwise = fam.param_shape.is_scalar() && !pshape.is_scalar();
                let vshape = if elementwise { pshape } else { subst_dims(fam.var_shape, &bind) };
                match m.vars.get_mut(var) {
                    Some(v) if v.role == Role::Param => return Err(err(st.span, format!("`{var}` is a parameter; only data or new names can be drawn from a family"))),
                    Some(v) => {
                        if v.shape != vshape {
                            return Err(err(st.span, format!("`{var}` is {} but {fname} draws {}", v.shape, vshape)));
                        }
                        let support = m.families[fi].support;
                        if v.domain != support {
                            return Err(err(st.span, format!("`{var}` is declared {} but {fname} draws {} values", v.domain.name(), support.name())));
                        }
                        if v.family.is_some() {
                            return Err(err(st.span, format!("`{var}` is already drawn from a family")));
                        }
                        v.family = Some((fi, param, pshape));
                    }
                    None => {
                        declared(var, st.span, &m, &lets)?;
                        let support = m.families[fi].support;
                        m.vars.insert(
                            var.clone(),
                            Var { name: var.clone(), shape: vshape, domain: support, role: Role::Random, family: Some((fi, param, pshape)) },
                        );
                    }
                }
            }
            StmtKind::Let(n, e) => {
                declared(n, st.span, &m, &lets)?;
                let scope = Scope { model: &m, lets: &lets, locals: vec![], dims: &m.dims };
                let (t, shape) = build(&scope, e)?;
                lets.insert(n.clone(), (t.clone(), shape));
                m.losses.push((n.clone(), t));
            }
            StmtKind::Claim(it, e) => {
                let Some((_, lshape)) = lets.get(&it.name) else {
                    return Err(err(it.span, format!("`{}` is not defined: write `{} = …` first", it.name, it.name)));
                };
                if !lshape.is_scalar() {
                    return Err(err(it.span, format!("`{}` is not a scalar", it.name)));
                }
                let params: Vec<&Var> = m.vars.values().filter(|v| v.role == Role::Param).collect();
                let wrt = match (&it.wrt, params.as_slice()) {
                    (Some(w), _) if params.iter().any(|v| &v.name == w) => w.clone(),
                    (Some(w), _) => return Err(err(it.span, format!("`{w}` is not a parameter"))),
                    (None, [one]) => one.name.clone(),
                    (None, _) => return Err(err(it.span, "say which parameter: `claim hess J wrt theta = …`")),
                };
                // the names of family means (p) stand for E[T] of the variables drawn from them
                let mut scope_lets = lets.clone();
                for v in m.vars.values() {
                    if let Some((fi, param, pshape)) = &v.family {
                        if let Some(n) = &m.families[*fi].mean_name {
                            if !m.vars.contains_key(n) && !scope_lets.contains_key(n) {
                                let mut t = param.clone();
                                let root = Id::from(t.as_ref().len() - 1);
                                let f = t.add(Node::Symbol(Symbol::from(m.families[*fi].name.as_str())));
                                t.add(Node::Mean([f, root]));
                                scope_lets.insert(n.clone(), (t, *pshape));
                            }
                        }
                    }
                }
                let scope = Scope { model: &m, lets: &scope_lets, locals: vec![], dims: &m.dims };
                let (term, shape) = build(&scope, e)?;
                let ps = m.vars[&wrt].shape;
                // the Hessian in a matrix is over vec: (rows·cols) × (rows·cols)
                let want = if it.order == 1 { ps } else { Shape::Mat(ps.len().unwrap(), ps.len().unwrap()) };
                if shape != want && !shape.is_scalar() {
                    return Err(err(e.span, format!("the claimed formula is {shape}, but the {} is {want}", if it.order == 1 { "gradient" } else { "Hessian" })));
                }
                m.claims.push(Claim { loss: it.name.clone(), wrt, order: it.order, term });
            }
            StmtKind::Derive(items) => {
                // `derive grad J, hess J wrt theta`: a trailing wrt covers the items before it
                let shared = items.last().and_then(|i| i.wrt.clone());
                for it in items {
                    let it = &syntax::DeriveItem { wrt: it.wrt.clone().or_else(|| shared.clone()), ..it.clone() };
                    let Some((_, shape)) = lets.get(&it.name) else {
                        return Err(err(it.span, format!("`{}` is not defined: write `{} = …` first", it.name, it.name)));
                    };
                    if !shape.is_scalar() {
                        return Err(err(it.span, format!("`{}` is {}; only a scalar loss has a gradient and a Hessian", it.name, shape)));
                    }
                    let params: Vec<&Var> = m.vars.values().filter(|v| v.role == Role::Param).collect();
                    let wrts: Vec<String> = match &it.wrt {
                        Some(w) => match m.vars.get(w) {
                            Some(v) if v.role == Role::Param => vec![w.clone()],
                            Some(_) => return Err(err(it.span, format!("`{w}` is data, not a parameter"))),
                            None => return Err(err(it.span, format!("unknown parameter `{w}`"))),
                        },
                        None if params.is_empty() => return Err(err(it.span, "no parameter to differentiate: declare one with `param NAME : TYPE`")),
                        None => params.iter().map(|v| v.name.clone()).collect(),
                    };
                    for w in wrts {
                        if it.order == 3 && m.vars[&w].shape.is_matrix() {
                            return Err(err(it.span, format!("hvp is for a scalar or vector parameter; `{w}` is {}: use hess (over vec({w}))", m.vars[&w].shape)));
                        }
                        if it.order == 3 && !m.directions.contains_key(&w) {
                            // the direction: v (or v_θ when v is taken), shaped like the parameter
                            let name = ["v".to_string(), format!("v_{w}")].into_iter().find(|n| !m.vars.contains_key(n) && !lets.contains_key(n)).unwrap_or_else(|| format!("dir_{w}"));
                            let shape = m.vars[&w].shape;
                            m.vars.insert(name.clone(), Var { name: name.clone(), shape, domain: Domain::Real, role: Role::Data, family: None });
                            m.directions.insert(w.clone(), name);
                        }
                        m.requests.push(Request { loss: it.name.clone(), wrt: w, order: it.order });
                    }
                }
            }
        }
    }
    for (_, t) in &m.losses {
        for n in t.iter() {
            if let Node::SumOver([i, d, _]) = n {
                m.indices.insert(t[*i].to_string(), t[*d].to_string());
            }
        }
    }
    if m.requests.is_empty() {
        if let Some(last) = stmts.iter().rev().find_map(|s| if let StmtKind::Let(n, _) = &s.kind { Some(n.clone()) } else { None }) {
            // No `derive`: the gradient and Hessian of the last scalar definition.
            if lets[&last].1.is_scalar() {
                for v in m.vars.values().filter(|v| v.role == Role::Param) {
                    for order in [1, 2] {
                        m.requests.push(Request { loss: last.clone(), wrt: v.name.clone(), order });
                    }
                }
            }
        }
    }
    if m.requests.is_empty() {
        let why = if !m.vars.values().any(|v| v.role == Role::Param) {
            "no parameter is declared (`param NAME : TYPE`)"
        } else if m.losses.is_empty() {
            "no loss is defined (`J = …`)"
        } else {
            "the last definition is not a scalar"
        };
        return Err(err(Span::default(), format!("nothing to derive: {why}; add `derive grad J, hess J` for a scalar J")));
    }
    Ok(m)
}

/// A symmetric positive definite parameter of a family takes a variable declared `spd`
/// (the rules rely on its symmetry).
fn spd_only(scope: &Scope, t: &RecExpr<Node>, domain: Domain, span: Span, what: &str) -> Result<(), SyntaxError> {
    if domain != Domain::Spd {
        return Ok(());
    }
    let ok = matches!(t.as_ref(), [Node::Symbol(s)] if scope.model.var(*s).is_some_and(|v| v.domain == Domain::Spd));
    if ok {
        Ok(())
    } else {
        Err(err(span, format!("{what} is a symmetric positive definite matrix: give a variable declared `spd^(k,k)`")))
    }
}

/// A family member named in a model, `poisson(eta)` or `binomial(eta, n = N)` or
/// `poisson(rate = λ)`: the family, its natural parameter as a term of the model, and the
/// known parameters given.
struct Member {
    index: usize,
    eta: RecExpr<Node>,
    shape: Shape,
    known: Vec<RecExpr<Node>>,
}

/// Reads `F(args)`: the first positional argument (or `NAME = …` with the natural
/// parameter's name) is the natural parameter, `USUAL = …` a usual parameter, the other
/// positional or named arguments the known parameters in order. A scalar family with a
/// vector parameter is a vector of independent members.
fn resolve_member(scope: &Scope, fname: &str, fspan: Span, args: &[syntax::Arg], span: Span) -> Result<Member, SyntaxError> {
    let m = scope.model;
    let Some(fi) = m.families.iter().position(|f| f.name == fname) else {
        let known: Vec<&str> = m.families.iter().map(|f| f.name.as_str()).collect();
        return Err(err(fspan, format!("unknown family `{fname}`; known: {}", known.join(", "))));
    };
    // a copy with its known parameters filled in is read as the family declared
    let fam = m.families[fi].template.as_deref().unwrap_or(&m.families[fi]);
    let names: Vec<String> = std::iter::once(fam.param.clone())
        .chain(fam.usual.iter().flat_map(|u| u.params.iter().map(|p| p.0.clone())))
        .chain(fam.known.iter().map(|k| k.0.clone()))
        .collect();
    let mut natural: Option<(RecExpr<Node>, Span)> = None;
    // usual parameters given by name: (name, term, span)
    let mut usual_given: Vec<(String, RecExpr<Node>, Span)> = vec![];
    let mut known: Vec<Option<(RecExpr<Node>, Shape)>> = vec![None; fam.known.len()];
    let mut positional = 0;
    for a in args {
        let (t, sh) = build(scope, &a.value)?;
        let slot = match &a.name {
            None => {
                positional += 1;
                positional - 1
            }
            Some((n, _)) if *n == fam.param => 0,
            Some((n, nspan)) => match (fam.usual.iter().position(|u| u.params.iter().any(|p| p.0 == *n)), fam.known.iter().position(|k| k.0 == *n)) {
                (Some(u), _) => {
                    let (_, ushape, _) = fam.usual[u].params.iter().find(|p| p.0 == *n).unwrap();
                    let (_, _, udomain) = fam.usual[u].params.iter().find(|p| p.0 == *n).unwrap();
                    let elementwise_ok = ushape.is_scalar() && sh.is_column() && fam.param_shape.is_scalar();
                    if bind_dims(*ushape, sh).is_none() && !elementwise_ok {
                        return Err(err(a.value.span, format!("`{n}` of {fname} is {ushape}, got {sh}")));
                    }
                    spd_only(scope, &t, *udomain, a.value.span, &format!("`{n}` of {fname}"))?;
                    if usual_given.iter().any(|g| g.0 == *n) {
                        return Err(err(*nspan, format!("`{n}` of {fname} is given twice")));
                    }
                    usual_given.push((n.clone(), t, *nspan));
                    continue;
                }
                (None, Some(k)) => k + 1,
                (None, None) => return Err(err(*nspan, format!("{fname} has no parameter `{n}`; its parameters: {}", names.join(", ")))),
            },
        };
        if slot == 0 {
            if natural.is_some() {
                return Err(err(a.value.span, format!("{fname}'s parameter is given twice")));
            }
            spd_only(scope, &t, fam.param_domain, a.value.span, &format!("{fname}'s natural parameter"))?;
            natural = Some((t, a.value.span));
        } else if slot <= known.len() {
            if known[slot - 1].is_some() {
                return Err(err(a.value.span, format!("`{}` of {fname} is given twice", fam.known[slot - 1].0)));
            }
            // a number given for a known parameter must be in its domain (binomial's n a count)
            if let [Node::Num(r)] = t.as_ref() {
                let (kname, _, kdomain) = &fam.known[slot - 1];
                let x = *r.numer() as f64 / *r.denom() as f64;
                let (ok, what) = match kdomain {
                    Domain::Count => (r.is_integer() && x >= 0.0, "a whole number ≥ 0"),
                    Domain::Positive => (x > 0.0, "positive"),
                    Domain::Negative => (x < 0.0, "negative"),
                    Domain::Unit => ((0.0..=1.0).contains(&x), "in [0, 1]"),
                    Domain::Binary => (x == 0.0 || x == 1.0, "0 or 1"),
                    _ => (true, ""),
                };
                if !ok {
                    return Err(err(a.value.span, format!("`{kname}` of {fname} must be {what}, got {x}")));
                }
            }
            let (kname, _, kdomain) = &fam.known[slot - 1];
            spd_only(scope, &t, *kdomain, a.value.span, &format!("`{kname}` of {fname}"))?;
            // a variable given for a count (binomial's n) must be declared one
            if let [Node::Symbol(s)] = t.as_ref() {
                if let Some(v) = m.var(*s).filter(|v| *kdomain == Domain::Count && v.domain != Domain::Count) {
                    return Err(err(a.value.span, format!("`{kname}` of {fname} is a count: `{}` is declared {}, give a number or a variable declared `count`", v.name, v.domain.name())));
                }
            }
            known[slot - 1] = Some((t, sh));
        } else {
            let n = 1 + fam.known.len();
            let listed: Vec<&str> = std::iter::once(fam.param.as_str()).chain(fam.known.iter().map(|k| k.0.as_str())).collect();
            return Err(err(a.value.span, format!("{fname} takes {n} parameter{} ({}), got {}", if n == 1 { "" } else { "s" }, listed.join(", "), args.len())));
        }
    }
    if let Some((_, _, uspan)) = usual_given.first() {
        if natural.is_some() {
            return Err(err(*uspan, format!("{fname}'s parameter is given twice: its natural parameter and a usual one")));
        }
        // the parameterisation that has every usual parameter given (a name may be in several)
        let has_all = |u: &Usual| usual_given.iter().all(|g| u.params.iter().any(|p| p.0 == g.0));
        let Some(usual) = fam.usual.iter().find(|u| has_all(u)) else {
            let first = fam.usual.iter().find(|u| u.params.iter().any(|p| p.0 == usual_given[0].0)).unwrap();
            let g = usual_given.iter().find(|g| !first.params.iter().any(|p| p.0 == g.0)).unwrap();
            return Err(err(g.2, format!("`{}` and `{}` are parameters of different parameterisations of {fname}", usual_given[0].0, g.0)));
        };
        for (p, _, _) in &usual.params {
            if !usual_given.iter().any(|g| g.0 == *p) {
                let all: Vec<String> = usual.params.iter().map(|p| format!("{} = …", p.0)).collect();
                return Err(err(span, format!("{fname} needs `{p}` too: {fname}({})", all.join(", "))));
            }
        }
        // the further natural parameters this parameterisation gives, like known ones
        for (i, _) in &usual.naturals {
            if known[*i].is_some() {
                return Err(err(*uspan, format!("`{}` of {fname} is given twice: by itself and by the usual parameters", fam.known[*i].0)));
            }
        }
        // the usual parameters' terms and the known ones, put in at once (a model's name may
        // be a family's own: `binomial(prob = n, n = 10)`)
        let mut with: Vec<(Symbol, &RecExpr<Node>)> = usual_given.iter().map(|g| (Symbol::from(g.0.as_str()), &g.1)).collect();
        with.extend(fam.known.iter().zip(&known).filter_map(|(k, v)| v.as_ref().map(|(t, _)| (Symbol::from(k.0.as_str()), t))));
        let eta = crate::derive::substitute(&usual.eta, &with);
        let values: Vec<(usize, RecExpr<Node>)> = usual.naturals.iter().map(|(i, v)| (*i, crate::derive::substitute(v, &with))).collect();
        for (i, v) in values {
            known[i] = Some((v, fam.known[i].1));
        }
        natural = Some((eta, *uspan));
    }
    let Some((eta, eta_span)) = natural else {
        return Err(err(span, format!("{fname} needs its parameter: {fname}({}) or a usual one", fam.param)));
    };
    let mut given = vec![];
    for (k, slot) in fam.known.iter().zip(known) {
        let Some((t, sh)) = slot else {
            return Err(err(span, format!("{fname} needs its known parameter `{}`: {fname}(…, {} = …)", k.0, k.0)));
        };
        if sh != k.1 && !(k.1.is_scalar() && sh.is_column()) {
            return Err(err(span, format!("the known parameter `{}` of {fname} is {}, got {sh}", k.0, k.1)));
        }
        given.push(t);
    }
    let shape = crate::lang::term_shapes(&eta, &|s| m.symbol_shape(s)).map_err(|e| err(eta_span, e))?.last().copied().unwrap_or(SCALAR);
    let elementwise = fam.param_shape.is_scalar() && shape.is_column();
    if elementwise && !fam.naturals.is_empty() && !shape.is_scalar() {
        return Err(err(eta_span, format!("{fname} has a second natural parameter, so it cannot be drawn entry by entry at a vector parameter yet: write its log-density out instead")));
    }
    if bind_dims(fam.param_shape, shape).is_none() && !elementwise {
        return Err(err(eta_span, format!("{fname} needs a parameter shaped like `{}`: {}, got {}", fam.param, fam.param_shape, shape)));
    }
    Ok(Member { index: fi, eta, shape, known: given })
}

/// The family `fi` with its known parameters filled in: the same family when an earlier
/// statement gave the same values, else a new copy (the first keeps the family's name).
fn instance(m: &mut Model, fi: usize, known: &[RecExpr<Node>]) -> usize {
    let base = &m.families[fi];
    let template = base.template.as_deref().unwrap_or(base).clone();
    let mut f = template.clone();
    // the family's own names for η and x must not be names the given terms use
    // (`normal(m, variance = x)`): rename them
    let used: Vec<Symbol> = known.iter().flat_map(|t| t.iter()).filter_map(|n| if let Node::Symbol(s) = n { Some(*s) } else { None }).collect();
    let mut renames: Vec<(Symbol, RecExpr<Node>)> = vec![];
    for local in [&mut f.param, &mut f.var] {
        if used.contains(&Symbol::from(local.as_str())) {
            let fresh = (1..).map(|i| format!("{local}{}", "'".repeat(i))).find(|n| !used.contains(&Symbol::from(n.as_str()))).unwrap();
            renames.push((Symbol::from(local.as_str()), RecExpr::from(vec![Node::Symbol(Symbol::from(fresh.as_str()))])));
            *local = fresh;
        }
    }
    let mut with: Vec<(Symbol, &RecExpr<Node>)> = template.known.iter().zip(known).map(|((k, _, _), t)| (Symbol::from(k.as_str()), t)).collect();
    with.extend(renames.iter().map(|(s, t)| (*s, t)));
    let fill = |e: &RecExpr<Node>| crate::derive::substitute(e, &with);
    f.stat = fill(&template.stat);
    f.logpart = fill(&template.logpart);
    f.logh = fill(&template.logh);
    f.pairing = fill(&template.pairing);
    for (_, t) in f.naturals.iter_mut() {
        *t = fill(t);
    }
    for u in f.usual.iter_mut() {
        u.eta = fill(&u.eta);
        for (_, t) in u.naturals.iter_mut() {
            *t = fill(t);
        }
    }
    f.textbook = template.textbook.as_ref().map(|(m, c)| (fill(m), fill(c)));
    f.known.clear();
    f.given = known.to_vec();
    f.template = Some(Box::new(template.clone()));
    let same = |g: &Family| g.logpart == f.logpart && g.stat == f.stat && g.logh == f.logh && g.pairing == f.pairing && g.known.is_empty() && g.given == f.given;
    if let Some(i) = m.families.iter().position(|g| (g.name == template.name || g.name.starts_with(&format!("{}_", template.name))) && same(g)) {
        return i;
    }
    if !m.families[fi].known.is_empty() {
        m.families[fi] = f;
        return fi;
    }
    let k = (2..).find(|k| !m.families.iter().any(|g| g.name == format!("{}_{k}", template.name))).unwrap();
    f.name = format!("{}_{k}", template.name);
    m.families.push(f);
    m.families.len() - 1
}

/// Matches a family's declared shape (with its own dimension names) to an actual shape.
fn bind_dims(declared: Shape, actual: Shape) -> Option<Vec<(Dim, Dim)>> {
    let (Shape::Mat(a, b), Shape::Mat(c, d)) = (declared, actual) else { return None };
    let mut bind: Vec<(Dim, Dim)> = vec![];
    for (x, y) in [(a, c), (b, d)] {
        match x {
            Dim::One if y != Dim::One => return None,
            Dim::One => {}
            Dim::Named(s) if s.as_str().parse::<usize>().is_ok() => {
                if y != x {
                    return None;
                }
            }
            _ => match bind.iter().find(|(k, _)| *k == x) {
                Some((_, v)) if *v != y => return None,
                Some(_) => {}
                None => bind.push((x, y)),
            },
        }
    }
    Some(bind)
}

fn subst_dims(s: Shape, bind: &[(Dim, Dim)]) -> Shape {
    let f = |d: Dim| bind.iter().find(|(k, _)| *k == d).map(|(_, v)| *v).unwrap_or(d);
    match s {
        Shape::Mat(a, b) => Shape::Mat(f(a), f(b)),
        Shape::Family => Shape::Family,
    }
}

/// A family from its declaration; `span` is the statement's place in its file.
pub fn family(f: &FamilyDecl, span: Span, from_catalog: bool) -> Result<Family, SyntaxError> {
    let dims: Vec<String> =
        f.param_type.dims.iter().chain(&f.var_type.dims).map(|(d, _)| d.clone()).filter(|d| d != "1").collect();
    let (param_shape, param_domain) = type_shape(&f.param_type, &dims)?;
    let (var_shape, support) = type_shape(&f.var_type, &dims)?;
    let square_spd = param_domain == Domain::Spd && matches!(param_shape, Shape::Mat(r, c) if r == c);
    if !(matches!(param_domain, Domain::Real | Domain::Negative | Domain::Positive) && param_shape.is_column()) && !square_spd {
        return Err(err(f.param_type.span, "a natural parameter must be real, R or R^k (or negative or positive): a scalar or a vector; or a symmetric matrix, spd^(k,k)"));
    }
    let mut known = vec![];
    for (k, t) in &f.known {
        let (sh, dom) = type_shape(t, &dims)?;
        if k == &f.param || k == &f.var || known.iter().any(|(n, _, _): &(String, Shape, Domain)| n == k) {
            return Err(err(t.span, format!("the name `{k}` is used twice in family `{}`", f.name)));
        }
        known.push((k.clone(), sh, dom));
    }
    let empty = Model::default();
    let lets = BTreeMap::new();
    let mut stat = None;
    let mut logpart = None;
    let mut logh = None;
    let mut mean_name = None;
    let (mut tb_mean, mut tb_cov) = (None, None);
    // `T(P) = …`: (index of P in `known`, its statistic)
    let mut naturals: Vec<(usize, RecExpr<Node>)> = vec![];
    for (i, (key, kspan, _)) in f.clauses.iter().enumerate() {
        if f.clauses[..i].iter().any(|(k, _, _)| k == key) {
            return Err(err(*kspan, format!("the clause `{key}` is given twice")));
        }
    }
    for (key, kspan, e) in &f.clauses {
        let local = |name: &str, shape: Shape| {
            let mut locals = vec![(name.to_string(), shape)];
            locals.extend(known.iter().map(|(k, sh, _)| (k.clone(), *sh)));
            Scope { model: &empty, lets: &lets, locals, dims: &dims }
        };
        // a statistic is a function of the variable (and known parameters), not of η
        let statistic = |e: &Expr| {
            build(&local(&f.var, var_shape), e).map_err(|x| match x.message.starts_with(&format!("unknown name `{}`", f.param)) {
                true => err(x.span, format!("a statistic is a function of {} (and known parameters), not of `{}`, the natural parameter of family `{}`", f.var, f.param, f.name)),
                false => x,
            })
        };
        match key.as_str() {
            "T" => {
                let (t, s) = statistic(e)?;
                if s != param_shape {
                    return Err(err(e.span, format!("T({}) must have the parameter's shape ({param_shape}), got {s}", f.var)));
                }
                stat = Some(t);
            }
            "A" => {
                let (t, s) = build(&local(&f.param, param_shape), e)?;
                if !s.is_scalar() {
                    return Err(err(e.span, format!("A({}) must be a scalar, got {s}", f.param)));
                }
                if !t.iter().any(|n| *n == Node::Symbol(Symbol::from(f.param.as_str()))) {
                    return Err(err(e.span, format!("A({}) must depend on {}", f.param, f.param)));
                }
                logpart = Some(t);
            }
            "logh" => {
                let (t, s) = build(&local(&f.var, var_shape), e)?;
                if !s.is_scalar() {
                    return Err(err(e.span, format!("log h({}) must be a scalar, got {s}", f.var)));
                }
                logh = Some(t);
            }
            "E" | "Cov" => {
                let (t, s) = build(&local(&f.param, param_shape), e)?;
                // Cov is over vec(η): n×n with n the number of η's entries
                let n = param_shape.len().unwrap();
                let want = if key == "E" { param_shape } else { Shape::Mat(n, n) };
                if s != want && !s.is_scalar() {
                    return Err(err(e.span, format!("`{key} = …` must be {want}, got {s}")));
                }
                if key == "E" {
                    tb_mean = Some(t);
                } else {
                    tb_cov = Some(t);
                }
            }
            k if k.starts_with("T(") => {
                let p = &k[2..k.len() - 1];
                let Some(i) = known.iter().position(|(n, _, _)| n == p) else {
                    let why = if p == f.param { "its statistic is `T = …`".to_string() } else { format!("declare it after the natural parameter: {}({} : …, {p} : …)", f.name, f.param) };
                    return Err(err(*kspan, format!("`{k}`: `{p}` is not a parameter of family `{}`; {why}", f.name)));
                };
                let (psh, pdom) = (known[i].1, known[i].2);
                if !(matches!(pdom, Domain::Real | Domain::Negative | Domain::Positive) && psh.is_column() || pdom == Domain::Spd && psh.is_matrix()) {
                    return Err(err(*kspan, format!("`{p}` can be a natural parameter only if it is real (a scalar or a vector) or a symmetric matrix, spd^(k,k)")));
                }
                let (t, sh) = statistic(e)?;
                if sh != psh {
                    return Err(err(e.span, format!("T({p}) must have {p}'s shape ({psh}), got {sh}")));
                }
                naturals.push((i, t));
            }
            "mean" => match &e.kind {
                ExprKind::Var(n) => mean_name = Some(n.clone()),
                _ => return Err(err(e.span, "`mean = NAME` takes a name for E[T(x)], such as p")),
            },
            other => return Err(err(*kspan, format!("unknown family clause `{other}`: use T, A, logh, mean, usual, E, Cov or recognise"))),
        }
    }
    let logpart = logpart.ok_or_else(|| err(span, format!("family `{}` needs its log-partition: `A = …`", f.name)))?;
    let var_sym = Symbol::from(f.var.as_str());
    let stat = match stat {
        Some(t) => t,
        None if var_shape == param_shape => RecExpr::from(vec![Node::Symbol(var_sym)]),
        None => return Err(err(span, format!("family `{}` needs its sufficient statistic: `T = …`", f.name))),
    };
    let logh = logh.unwrap_or_else(|| RecExpr::from(vec![Node::Num(0.into())]));
    let mut usual: Vec<Usual> = vec![];
    naturals.sort_by_key(|(i, _)| *i);
    // Σ ⟨P, T_P(x)⟩: a matrix pairs through vec(P)ᵀvec(T_P)
    let mut pairing = RecExpr::default();
    let mut total: Option<Id> = None;
    for (i, t) in &naturals {
        let (k, sh, _) = &known[*i];
        let p = pairing.add(Node::Symbol(Symbol::from(k.as_str())));
        let stat = crate::derive::append(&mut pairing, t);
        let term = if sh.is_matrix() {
            let (vp, vs) = (pairing.add(Node::Vec(p)), pairing.add(Node::Vec(stat)));
            pairing.add(Node::Dot([vp, vs]))
        } else {
            pairing.add(Node::Dot([p, stat]))
        };
        total = Some(match total {
            Some(acc) => pairing.add(Node::Add([acc, term])),
            None => term,
        });
    }
    if total.is_none() {
        pairing.add(Node::Num(0.into()));
    }
    for (names, es, uspan) in &f.usual {
        let mut params = vec![];
        for (u, t) in names {
            let (shape, domain) = type_shape(t, &dims)?;
            let taken = u == &f.param || u == &f.var || known.iter().any(|(k, _, _)| k == u) || params.iter().any(|(p, _, _): &(String, Shape, Domain)| p == u);
            // a name may recur in another parameterisation with the same type (μ with Σ, μ with Λ)
            let clash = usual.iter().flat_map(|x| &x.params).any(|(p, s, d)| p == u && (*s, *d) != (shape, domain));
            if taken || clash {
                return Err(err(*uspan, format!("the name `{u}` is used twice in family `{}`", f.name)));
            }
            params.push((u.clone(), shape, domain));
        }
        let mut locals: Vec<(String, Shape)> = params.iter().map(|(u, s, _)| (u.clone(), *s)).collect();
        locals.extend(known.iter().map(|(k, sh, _)| (k.clone(), *sh)));
        let scope = Scope { model: &empty, lets: &lets, locals, dims: &dims };
        if es.len() != 1 + naturals.len() {
            let mut names = vec![f.param.clone()];
            names.extend(naturals.iter().map(|(i, _)| known[*i].0.clone()));
            let want = if names.len() == 1 { names[0].clone() } else { format!("({})", names.join(", ")) };
            return Err(err(es[0].span, format!("the usual parameters of `{}` must give {want}: {} natural parameter{}, got {}", f.name, names.len(), if names.len() == 1 { "" } else { "s" }, es.len())));
        }
        let (eta, eshape) = build(&scope, &es[0])?;
        if eshape != param_shape {
            return Err(err(es[0].span, format!("the natural parameter from the usual parameters must be {param_shape}, got {eshape}")));
        }
        let mut given = vec![];
        for ((i, _), e) in naturals.iter().zip(&es[1..]) {
            let (t, sh) = build(&scope, e)?;
            if sh != known[*i].1 {
                return Err(err(e.span, format!("`{}` from the usual parameters must be {}, got {sh}", known[*i].0, known[*i].1)));
            }
            given.push((*i, t));
        }
        usual.push(Usual { params, eta, naturals: given });
    }
    Ok(Family {
        name: f.name.clone(),
        param: f.param.clone(),
        param_shape,
        param_domain,
        var: f.var.clone(),
        var_shape,
        support,
        stat,
        logpart,
        logh,
        mean_name,
        usual,
        recognise: f.recognise,
        given: vec![],
        template: None,
        naturals: naturals.into_iter().map(|(i, t)| (known[i].0.clone(), t)).collect(),
        known,
        pairing,
        textbook: match (tb_mean, tb_cov) {
            (Some(m), Some(c)) => Some((m, c)),
            (None, None) => None,
            _ => return Err(err(span, format!("family `{}`: give both `E = …` and `Cov = …`, or neither", f.name))),
        },
        from_catalog,
        span,
    })
}

/// A model holding one family and its names, for printing the family's formulas and
/// knowing the shapes of its terms.
pub fn family_model(f: &crate::model::Family) -> Model {
    let mut m = Model { families: vec![f.clone()], ..Default::default() };
    let mut var = |name: &str, shape, domain| {
        m.vars.insert(name.to_string(), Var { name: name.to_string(), shape, domain, role: Role::Data, family: None });
    };
    var(&f.param, f.param_shape, f.param_domain);
    var(&f.var, f.var_shape, f.support);
    for (k, sh, d) in &f.known {
        var(k, *sh, *d);
    }
    for (name, shape, domain) in f.usual.iter().flat_map(|u| &u.params) {
        var(name, *shape, *domain);
    }
    m
}
