//! Rewrite rules: read from text (`rules/*.rules`, embedded as defaults), checked for
//! shape agreement when loaded, and turned into egg rewrites with conditions.
//! Families become rules too: their definitions of A(η), T(x) and log h(x).

use crate::analysis::{class_name, has_symbol, Graph};
use crate::lang::{node_shape, Dim, Node, Shape, SCALAR};
use crate::model::{Domain, Model};
use crate::syntax::{parse_rules, Expr, ExprKind, RuleDecl, Span};
use egg::{Applier, ENodeOrVar, Id, Language, Pattern, PatternAst, RecExpr, Rewrite, Subst, Symbol, Var};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// The rule files compiled into the binary.
pub const DEFAULT_RULES: &[(&str, &str)] = &[
    ("rules/calculus.rules", include_str!("../rules/calculus.rules")),
    ("rules/algebra.rules", include_str!("../rules/algebra.rules")),
    ("rules/expectation.rules", include_str!("../rules/expectation.rules")),
    ("rules/expfam.rules", include_str!("../rules/expfam.rules")),
];

fn fits(a: Option<Shape>, b: Option<Shape>) -> bool {
    matches!((a, b), (Some(Shape::Mat(_, c)), Some(Shape::Mat(r, _))) if c == r)
}

/// The family catalog compiled into the binary (model-language `family` statements).
pub const DEFAULT_FAMILIES: &[(&str, &str)] = &[("rules/families.ef", include_str!("../rules/families.ef"))];

/// A condition a rule may require of its match. Each is a monotone fact.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// the first does not depend on the second (a variable)
    Indep(Var, Var),
    /// the term (a pattern over the match) is in the e-graph, depends on the variable as far
    /// as known now, and is not itself equal to a derivative: it only prunes expansions of
    /// constants (d-const handles them) and of classes whose derivative is already known
    Depends(PatternAst<Node>, Var),
    Scalar(Var),
    /// known not to be 1×1
    NotScalar(Var),
    /// a column vector (a scalar counts)
    Column(Var),
    /// a row vector (a scalar counts)
    Row(Var),
    /// neither a row nor a column: more than one of each
    Matrix(Var),
    SameShape(Var, Var),
    /// the first can multiply the second: its columns are the second's rows
    Fits(Var, Var),
    Const(Var),
    /// not known to be a constant (only prunes: the rule is valid either way)
    NotConst(Var),
    /// the class is a variable with this domain
    Domain(Var, Domain),
    /// the family's T(x) = x with one-hot or binary x, and (when the second is given) its
    /// natural parameter is a vector or the matched parameter a scalar: a vector of
    /// independent binary members has E[x xᵀ] ≠ diag(E[x])
    Indicator(Var, Option<Var>),
    /// a vector of this fixed length (its entries are variables of their own)
    Length(Var, usize),
    /// shaped like the named family's natural parameter; with `true`, a vector parameter
    /// of a scalar family (a vector of independent members)
    ParamOf(Var, Symbol, bool),
}

const CONDITIONS: &str = "indep(a, x), depends(a * b, x), scalar(a), nonscalar(a), column(a), row(a), matrix(a), same-shape(a, b), fits(a, b), const(a), nonconst(a), onehot(x), binary(x), simplex(q), spd(S), indicator(F), indicator(F, t), length(x, 2)";

/// One loaded rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub lhs: PatternAst<Node>,
    pub rhs: PatternAst<Node>,
    pub conds: Vec<Cond>,
    pub assume: Option<String>,
    /// file:line
    pub origin: String,
    /// false for rules that only tidy extracted results (`phase tidy`)
    pub derive: bool,
    /// how `--steps` shows it: "shown", "grouped" or "quiet" (see `RuleDecl::steps`)
    pub steps: String,
    /// the egg rewrite, compiled on first use and shared by clones
    pub compiled: std::sync::OnceLock<Rewrite<Node, crate::analysis::Facts>>,
}

/// A rules problem, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// byte offset in the file
    pub offset: usize,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// The node a rules-file function name stands for, given its children.
fn call_node(f: &str, k: &[Id]) -> Option<Node> {
    Some(match (f, k) {
        ("D", [a, b]) => Node::Jac([*a, *b]),
        ("E", [q, x, b]) => Node::Expect([*q, *x, *b]),
        ("A", [f, t]) => Node::LogPart([*f, *t]),
        ("mean", [f, t]) => Node::Mean([*f, *t]),
        ("cov", [f, t]) => Node::Cov([*f, *t]),
        ("second", [f, t]) => Node::Second([*f, *t]),
        ("logp", [f, x, t]) => Node::LogP([*f, *x, *t]),
        ("dot", [a, b]) => Node::Dot([*a, *b]),
        ("outer", [a, b]) => Node::Outer([*a, *b]),
        ("sum", [a]) => Node::Sum(*a),
        ("diag", [a]) => Node::Diag(*a),
        ("exp", [a]) => Node::Exp(*a),
        ("log", [a]) => Node::Log(*a),
        ("sigmoid", [a]) => Node::Sigmoid(*a),
        ("softmax", [a]) => Node::Softmax(*a),
        ("logsumexp", [a]) => Node::LogSumExp(*a),
        ("transpose", [a]) => Node::Transpose(*a),
        ("eye", [a]) => Node::Eye(*a),
        ("ones", [a]) => Node::Ones(*a),
        ("inv", [a]) => Node::Inv(*a),
        ("logdet", [a]) => Node::LogDet(*a),
        ("stack", items) if !items.is_empty() => Node::Vector(items.into()),
        ("vec", [a]) => Node::Vec(*a),
        ("kron", [a, b]) => Node::Kron([*a, *b]),
        ("trace", [a]) => Node::Trace(*a),
        ("commute", [a]) => Node::Commute(*a),
        ("sumover", [i, n, b]) => Node::SumOver([*i, *n, *b]),
        ("at", [v, i]) => Node::At([*v, *i]),
        ("KL", [f, a, b]) => Node::Kl([*f, *a, *b]),
        ("lgamma", [a]) => Node::Lgamma(*a),
        ("lmvgamma", [a, m]) => Node::Lmvgamma([*a, *m]),
        ("polygamma", [n, a]) => Node::Polygamma([*n, *a]),
        ("log1p", [a]) => Node::Log1p(*a),
        ("expm1", [a]) => Node::Expm1(*a),
        ("sqrt", [a]) => Node::Sqrt(*a),
        ("abs", [a]) => Node::Abs(*a),
        ("sign", [a]) => Node::Sign(*a),
        ("step", [a]) => Node::Step(*a),
        ("cos", [a]) => Node::Cos(*a),
        ("sin", [a]) => Node::Sin(*a),
        ("besseli0", [a]) => Node::BesselI0(*a),
        ("besseli1", [a]) => Node::BesselI1(*a),
        _ => return None,
    })
}

/// Expression → pattern: every name is a pattern variable.
fn to_pattern(e: &Expr, out: &mut PatternAst<Node>) -> Result<Id, (Span, String)> {
    let node = match &e.kind {
        ExprKind::Num(s) => Node::Num(crate::model::rational(s).ok_or((e.span, format!("bad number {s}")))?),
        ExprKind::Var(v) => return Ok(out.add(ENodeOrVar::Var(format!("?{v}").parse().unwrap()))),
        ExprKind::Neg(a) => match &a.kind {
            // `-1` is the number −1
            ExprKind::Num(s) => Node::Num(-crate::model::rational(s).ok_or((e.span, format!("bad number {s}")))?),
            _ => Node::Neg(to_pattern(a, out)?),
        },
        ExprKind::Transpose(a) => Node::Transpose(to_pattern(a, out)?),
        ExprKind::Binary(op, a, b) => {
            let k = [to_pattern(a, out)?, to_pattern(b, out)?];
            match op {
                '+' => Node::Add(k),
                '-' => Node::Sub(k),
                '*' => Node::Mul(k),
                '/' => Node::Div(k),
                '^' => Node::Pow(k),
                _ => Node::MatMul(k),
            }
        }
        ExprKind::Call(f, args) => {
            let k: Vec<Id> = args.iter().map(|a| to_pattern(a, out)).collect::<Result<_, _>>()?;
            call_node(f, &k).ok_or((e.span, format!("unknown function `{f}` with {} arguments", k.len())))?
        }
        ExprKind::Expect(..) | ExprKind::Density(..) | ExprKind::Kl(..) => {
            return Err((e.span, "write E(q, x, f) and logp(F, x, t) in rules".into()));
        }
        ExprKind::SumOver(..) => return Err((e.span, "write sumover(i, n, f) in rules".into())),
    };
    Ok(out.add(ENodeOrVar::ENode(node)))
}

fn var_of(e: &Expr) -> Result<Var, (Span, String)> {
    match &e.kind {
        ExprKind::Var(v) => Ok(format!("?{v}").parse().unwrap()),
        _ => Err((e.span, "a condition takes pattern variables".into())),
    }
}

fn condition(name: &str, args: &[Expr], span: Span) -> Result<Cond, (Span, String)> {
    let v = |i: usize| var_of(&args[i]);
    let want = |n: usize| -> Result<(), (Span, String)> {
        if args.len() == n {
            Ok(())
        } else {
            Err((span, format!("`{name}` takes {n} argument(s)")))
        }
    };
    Ok(match name {
        "indep" => {
            want(2)?;
            Cond::Indep(v(0)?, v(1)?)
        }
        "depends" => {
            want(2)?;
            let mut p = PatternAst::default();
            to_pattern(&args[0], &mut p)?;
            Cond::Depends(p, var_of(&args[1])?)
        }
        "indicator" if args.len() == 2 => Cond::Indicator(v(0)?, Some(v(1)?)),
        "length" => {
            want(2)?;
            let n = match &args[1].kind {
                ExprKind::Num(s) => s.parse::<usize>().ok().filter(|n| (2..=16).contains(n)),
                _ => None,
            };
            Cond::Length(v(0)?, n.ok_or((args[1].span, "length(x, n) takes a whole number n from 2 to 16".to_string()))?)
        }
        "same-shape" | "same_shape" => {
            want(2)?;
            Cond::SameShape(v(0)?, v(1)?)
        }
        "fits" => {
            want(2)?;
            Cond::Fits(v(0)?, v(1)?)
        }
        _ => {
            want(1)?;
            let a = v(0)?;
            match name {
                "scalar" => Cond::Scalar(a),
                "nonscalar" => Cond::NotScalar(a),
                "column" => Cond::Column(a),
                "row" => Cond::Row(a),
                "matrix" => Cond::Matrix(a),
                "const" => Cond::Const(a),
                "nonconst" => Cond::NotConst(a),
                "onehot" => Cond::Domain(a, Domain::OneHot),
                "binary" => Cond::Domain(a, Domain::Binary),
                "simplex" => Cond::Domain(a, Domain::Simplex),
                "spd" => Cond::Domain(a, Domain::Spd),
                "indicator" => Cond::Indicator(a, None),
                _ => return Err((span, format!("unknown condition `{name}`; known: {CONDITIONS}"))),
            }
        }
    })
}

fn pattern_vars(p: &PatternAst<Node>) -> BTreeSet<Var> {
    p.iter().filter_map(|n| if let ENodeOrVar::Var(v) = n { Some(*v) } else { None }).collect()
}

/// Parses one rules file into rules (a `<=>` rule gives two, the reverse named `NAME-rev`).
pub fn load_rules(file: &str, src: &str) -> Result<Vec<Rule>, RuleError> {
    read_rules(file, src, true)
}

/// `load_rules`, with or without the shape check (the built-in rules are checked by a
/// test, not at every start).
fn read_rules(file: &str, src: &str, check: bool) -> Result<Vec<Rule>, RuleError> {
    let at = |span: Span, message: String| {
        let (line, column) = line_col(src, span.start);
        RuleError { file: file.to_string(), line, column, message, offset: span.start }
    };
    let decls: Vec<RuleDecl> = parse_rules(src).map_err(|e| at(e.span, e.message))?;
    // each rule's line, as `line_col` counts it (without scanning the file for each)
    let newlines: Vec<usize> = src.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect();
    let mut out = vec![];
    for d in decls {
        let mut lhs = PatternAst::default();
        let mut rhs = PatternAst::default();
        to_pattern(&d.lhs, &mut lhs).map_err(|(s, m)| at(s, m))?;
        to_pattern(&d.rhs, &mut rhs).map_err(|(s, m)| at(s, m))?;
        let conds: Vec<Cond> =
            d.conditions.iter().map(|(n, a, s)| condition(n, a, *s)).collect::<Result<_, _>>().map_err(|(s, m)| at(s, m))?;
        let line = 1 + newlines.partition_point(|&p| p < d.span.start.min(src.len()));
        let origin = format!("{file}:{line}");
        let mut push = |name: String, l: &PatternAst<Node>, r: &PatternAst<Node>, r_expr: &Expr| -> Result<(), RuleError> {
            let (lv, rv) = (pattern_vars(l), pattern_vars(r));
            if let Some(v) = rv.difference(&lv).next() {
                let v = v.to_string().trim_start_matches('?').to_string();
                let span = var_span(r_expr, &v).unwrap_or(d.span);
                return Err(at(span, format!("rule `{name}`: `{v}` on the right is not bound on the left (every name on the right must appear on the left)")));
            }
            for (c, (_, args, cspan)) in conds.iter().zip(&d.conditions) {
                for v in cond_vars(c) {
                    if !lv.contains(&v) {
                        let v = v.to_string().trim_start_matches('?').to_string();
                        let span = args.iter().find_map(|a| var_span(a, &v)).unwrap_or(*cspan);
                        return Err(at(span, format!("rule `{name}`: the condition's `{v}` is not bound on the left")));
                    }
                }
            }
            if matches!(l.as_ref().last(), Some(ENodeOrVar::Var(_))) && conds.is_empty() {
                return Err(at(d.span, format!("rule `{name}`: a bare variable on the left would match everything")));
            }
            let rule = Rule {
                name,
                description: d.description.clone(),
                lhs: l.clone(),
                rhs: r.clone(),
                conds: conds.clone(),
                assume: d.assume.clone(),
                origin: origin.clone(),
                derive: d.phase == "derive",
                steps: d.steps.clone(),
                compiled: Default::default(),
            };
            if check {
                check_shapes(&rule).map_err(|m| at(d.span, m))?;
            }
            out.push(rule);
            Ok(())
        };
        push(d.name.clone(), &lhs, &rhs, &d.rhs)?;
        if d.both_ways {
            push(format!("{}-rev", d.name), &rhs, &lhs, &d.lhs)?;
        }
    }
    Ok(out)
}

/// Where a pattern variable is written in an expression.
fn var_span(e: &Expr, name: &str) -> Option<Span> {
    match &e.kind {
        ExprKind::Var(v) if v == name => Some(e.span),
        ExprKind::Num(_) | ExprKind::Var(_) => None,
        ExprKind::Neg(a) | ExprKind::Transpose(a) | ExprKind::Expect(_, a) => var_span(a, name),
        ExprKind::Binary(_, a, b) => var_span(a, name).or_else(|| var_span(b, name)),
        ExprKind::Call(_, args) => args.iter().find_map(|a| var_span(a, name)),
        ExprKind::Density(_, p) => p.as_ref().and_then(|p| var_span(p, name)),
        ExprKind::Kl(..) => None,
        ExprKind::SumOver(_, _, _, _, b) => var_span(b, name),
    }
}

fn cond_vars(c: &Cond) -> Vec<Var> {
    match c {
        Cond::Indep(a, b) | Cond::SameShape(a, b) | Cond::Fits(a, b) => vec![*a, *b],
        Cond::Depends(p, x) => pattern_vars(p).into_iter().chain([*x]).collect(),
        Cond::Scalar(a) | Cond::NotScalar(a) | Cond::Column(a) | Cond::Row(a) | Cond::Matrix(a) | Cond::Const(a) | Cond::NotConst(a) | Cond::Domain(a, _) | Cond::Indicator(a, None) | Cond::ParamOf(a, _, _) | Cond::Length(a, _) => vec![*a],
        Cond::Indicator(a, Some(b)) => vec![*a, *b],
    }
}

fn pattern_shape(p: &PatternAst<Node>, env: &HashMap<Var, Shape>, syms: &dyn Fn(Symbol) -> Option<Shape>) -> Result<Shape, String> {
    let mut shapes: Vec<Shape> = vec![];
    for n in p.iter() {
        let s = match n {
            ENodeOrVar::Var(v) => env[v],
            ENodeOrVar::ENode(Node::Symbol(s)) => syms(*s).ok_or_else(|| format!("unknown name {s}"))?,
            ENodeOrVar::ENode(node) => {
                let kids: Vec<Shape> = node.children().iter().map(|&c| shapes[usize::from(c)]).collect();
                node_shape(node, &kids)?
            }
        };
        shapes.push(s);
    }
    Ok(*shapes.last().unwrap())
}

/// Checks, for every assignment of small shapes to the pattern variables under which the
/// left side is well-shaped, that the right side is well-shaped with the same shape.
fn check_shapes(rule: &Rule) -> Result<(), String> {
    let m = Dim::Named(Symbol::from("m"));
    let n = Dim::Named(Symbol::from("n"));
    let mut candidates = vec![SCALAR, Shape::vector(m), Shape::vector(n), Shape::Mat(m, n), Shape::Mat(n, m), Shape::Mat(Dim::One, m), Shape::Mat(n, n)];
    // vectors of a fixed length, and the rows and matrices [a, b] makes of them
    for c in &rule.conds {
        if let Cond::Length(_, k) = c {
            let d = Dim::Named(Symbol::from(k.to_string().as_str()));
            candidates.splice(0..0, [Shape::vector(d), Shape::Mat(Dim::One, d), Shape::Mat(d, d)]);
        }
    }
    let has_vec = |p: &PatternAst<Node>| p.iter().any(|n| matches!(n, ENodeOrVar::ENode(Node::Vector(_))));
    if has_vec(&rule.lhs) || has_vec(&rule.rhs) {
        let two = Dim::Named(Symbol::from("2"));
        candidates.extend([Shape::vector(two), Shape::Mat(Dim::One, two), Shape::Mat(two, two)]);
    }
    // Variables in a family position can only be families.
    let mut family_vars = BTreeSet::new();
    for node in rule.lhs.iter() {
        if let ENodeOrVar::ENode(nd) = node {
            if nd.is_family_quantity() {
                if let ENodeOrVar::Var(v) = &rule.lhs[nd.children()[0]] {
                    family_vars.insert(*v);
                }
            }
        }
    }
    let vars: Vec<Var> = pattern_vars(&rule.lhs).into_iter().filter(|v| !family_vars.contains(v)).collect();
    // every assignment of the shapes below is tried; with many variables, fewer shapes
    if vars.len() > 10 {
        return Err(format!("rule `{}`: more than 10 pattern variables", rule.name));
    }
    let candidates: &[Shape] = if vars.len() > 5 { &candidates[..4] } else { &candidates };
    let syms = |_s: Symbol| Some(Shape::Family);
    let mut env: HashMap<Var, Shape> = family_vars.iter().map(|v| (*v, Shape::Family)).collect();
    let mut any_ok = false;
    let total = candidates.len().pow(vars.len() as u32);
    for code in 0..total {
        let mut c = code;
        for v in &vars {
            env.insert(*v, candidates[c % candidates.len()]);
            c /= candidates.len();
        }
        let holds = rule.conds.iter().all(|c| match c {
            Cond::Scalar(a) => env[a].is_scalar(),
            Cond::NotScalar(a) => !env[a].is_scalar(),
            Cond::Column(a) => env[a].is_column(),
            Cond::Row(a) => matches!(env[a], Shape::Mat(Dim::One, _)),
            Cond::Matrix(a) => env[a].is_matrix(),
            Cond::SameShape(a, b) => env[a] == env[b],
            Cond::Fits(a, b) => fits(Some(env[a]), Some(env[b])),
            Cond::Length(a, k) => crate::lang::fixed_length(env[a]) == Some(*k),
            // constants are numbers: 1×1
            Cond::Const(a) => env[a].is_scalar(),
            // a symmetric positive definite matrix is square
            Cond::Domain(a, Domain::Spd) => matches!(env[a], Shape::Mat(r, c) if r == c),
            Cond::ParamOf(..) | Cond::Depends(..) | Cond::Indep(..) | Cond::NotConst(..) | Cond::Domain(..) | Cond::Indicator(..) => true,
        });
        if !holds {
            continue;
        }
        let Ok(l) = pattern_shape(&rule.lhs, &env, &syms) else { continue };
        any_ok = true;
        let describe = || {
            vars.iter().map(|v| format!("{} is {}", &v.to_string()[1..], env[v])).collect::<Vec<_>>().join(", ")
        };
        // 0 is the zero of every shape
        let rhs_zero = matches!(rule.rhs.as_ref().last(), Some(ENodeOrVar::ENode(Node::Num(n))) if *n == 0.into());
        match pattern_shape(&rule.rhs, &env, &syms) {
            Ok(r) if r == l || rhs_zero => {}
            Ok(r) => return Err(format!("rule `{}`: the sides disagree in shape: when {}, the left is {l} but the right is {r}", rule.name, describe())),
            Err(e) => return Err(format!("rule `{}`: the right side is ill-shaped when {} (the left is {l}): {e}", rule.name, describe())),
        }
    }
    if !any_ok {
        return Err(format!("rule `{}`: the left side is never well-shaped", rule.name));
    }
    Ok(())
}

/// A rule made from a family's definitions.
fn family_rule(f: &crate::model::Family, name: String, description: String, lhs: PatternAst<Node>, rhs: PatternAst<Node>, conds: Vec<Cond>) -> Rule {
    Rule { name, description, lhs, rhs, conds, assume: None, origin: format!("family {}", f.name), derive: true, steps: "shown".into(), compiled: Default::default() }
}

/// `head(F, ?vars…)` as a pattern.
fn family_node(fam: Symbol, vars: &[Var], head: impl FnOnce(Vec<Id>) -> Node) -> PatternAst<Node> {
    let mut p = PatternAst::default();
    let mut ids = vec![p.add(ENodeOrVar::ENode(Node::Symbol(fam)))];
    ids.extend(vars.iter().map(|v| p.add(ENodeOrVar::Var(*v))));
    p.add(ENodeOrVar::ENode(head(ids)));
    p
}

/// Rules that say what each family is: A(η) both ways (so log Σ exp η is recognised as the
/// categorical log-partition) and −log p(x|η) in exponential-family form. Only the
/// families a model uses get them, and the catalog's `recognise` families. A scalar
/// family at a vector parameter is a vector of independent members: its A is the sum of
/// the members' (written `sum(A[t])`), and so is its log h.
pub fn family_rules(model: &Model) -> Vec<Rule> {
    let mut out = vec![];
    let t: Var = "?t".parse().unwrap();
    let x: Var = "?x".parse().unwrap();
    for (i, f) in model.families.iter().enumerate() {
        let used = model.uses_family(i);
        if !used && !f.recognise {
            continue;
        }
        let fam = Symbol::from(f.name.as_str());
        let a_node = family_node(fam, &[t], |k| Node::LogPart([k[0], k[1]]));
        // (suffix, elementwise) — the vector forms of a scalar family, for the families the model uses
        let forms: &[(&str, bool)] = if f.param_shape.is_scalar() && used { &[("", false), ("-vec", true)] } else { &[("", false)] };
        for &(suffix, each) in forms {
            let conds = vec![Cond::ParamOf(t, fam, each)];
            let wrap = |p: PatternAst<Node>| -> PatternAst<Node> {
                if !each {
                    return p;
                }
                let mut q = p.clone();
                let root = Id::from(q.as_ref().len() - 1);
                q.add(ENodeOrVar::ENode(Node::Sum(root)));
                q
            };
            let a = wrap(instantiate(&f.logpart, &f.param, t));
            out.push(family_rule(f, format!("A-{}{suffix}", f.name), format!("log-partition of {}", f.name), a_node.clone(), a.clone(), conds.clone()));
            out.push(family_rule(f, format!("A-{}{suffix}-rev", f.name), format!("recognise the log-partition of {}", f.name), a, a_node.clone(), conds.clone()));
            // logp(F, x, t) => dot(t, T[x]) + logh[x] - A(F, t)
            let lp = family_node(fam, &[x, t], |k| Node::LogP([k[0], k[1], k[2]]));
            let mut rhs = PatternAst::default();
            let stat = splice(&mut rhs, &instantiate(&f.stat, &f.var, x));
            let tid = rhs.add(ENodeOrVar::Var(t));
            // a matrix parameter pairs with T(x) through vec(η)ᵀvec(T)
            let dot = if f.param_shape.is_matrix() {
                let (vt, vs) = (rhs.add(ENodeOrVar::ENode(Node::Vec(tid))), rhs.add(ENodeOrVar::ENode(Node::Vec(stat))));
                rhs.add(ENodeOrVar::ENode(Node::Dot([vt, vs])))
            } else {
                rhs.add(ENodeOrVar::ENode(Node::Dot([tid, stat])))
            };
            let h = splice(&mut rhs, &wrap(instantiate(&f.base_measure(), &f.var, x)));
            let sum = rhs.add(ENodeOrVar::ENode(Node::Add([dot, h])));
            let a = splice(&mut rhs, &a_node);
            rhs.add(ENodeOrVar::ENode(Node::Sub([sum, a])));
            out.push(family_rule(f, format!("expfam-{}{suffix}", f.name), "log p(x|θ) = θᵀT(x) + log h(x) − A(θ)".into(), lp, rhs, conds));
        }
    }
    out
}

/// `mean(F, ?t) => closed[?t]`: a family's E[T] in closed form, as derived from its A
/// (for a scalar family also at a vector parameter: its formula works entry by entry).
pub fn mean_rule(f: &crate::model::Family, closed: &RecExpr<Node>) -> Vec<Rule> {
    let fam = Symbol::from(f.name.as_str());
    let t: Var = "?t".parse().unwrap();
    let lhs = family_node(fam, &[t], |k| Node::Mean([k[0], k[1]]));
    let forms: &[bool] = if f.param_shape.is_scalar() { &[false, true] } else { &[false] };
    forms
        .iter()
        .map(|&each| {
            let name = format!("E-{}{}", f.name, if each { "-vec" } else { "" });
            family_rule(f, name, format!("E[T] of {}, derived from A", f.name), lhs.clone(), instantiate(closed, &f.param, t), vec![Cond::ParamOf(t, fam, each)])
        })
        .collect()
}

/// A family term with its own variable replaced by a pattern variable.
fn instantiate(e: &RecExpr<Node>, name: &str, v: Var) -> PatternAst<Node> {
    let s = Symbol::from(name);
    let nodes: Vec<ENodeOrVar<Node>> =
        e.iter().map(|n| if *n == Node::Symbol(s) { ENodeOrVar::Var(v) } else { ENodeOrVar::ENode(n.clone()) }).collect();
    RecExpr::from(nodes)
}

fn splice(out: &mut PatternAst<Node>, p: &PatternAst<Node>) -> Id {
    let base = out.as_ref().len();
    for n in p.iter() {
        let n = match n {
            ENodeOrVar::ENode(nd) => ENodeOrVar::ENode(nd.clone().map_children(|c| Id::from(usize::from(c) + base))),
            v => v.clone(),
        };
        out.add(n);
    }
    Id::from(out.as_ref().len() - 1)
}

/// Applies the right side when every condition holds, and records the rule's assumption.
pub struct CondApplier {
    rhs: Pattern<Node>,
    conds: Vec<Cond>,
    assume: Option<String>,
    /// the right side's variables
    vars: Vec<Var>,
    /// the right side is the number 0 (the zero of every shape)
    rhs_zero: bool,
    /// numbers the appliers made in this process (a key in a run's memory)
    serial: usize,
}

impl CondApplier {
    fn new(rhs: PatternAst<Node>, conds: Vec<Cond>, assume: Option<String>) -> Self {
        let rhs_zero = matches!(rhs.as_ref().last(), Some(ENodeOrVar::ENode(Node::Num(n))) if *n == 0.into());
        let rhs = Pattern::new(rhs);
        static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CondApplier { vars: rhs.vars(), rhs, conds, assume, rhs_zero, serial }
    }

    /// The right side instantiated and united with the class, as egg's `Pattern` applies
    /// it without explanations (the same additions and union, in the same order), noted
    /// in the run's memory when `noted` (the class's shape the guard passed with).
    fn instantiate(&self, egraph: &mut Graph, eclass: Id, subst: &Subst, noted: Option<Option<Shape>>) -> Vec<Id> {
        let mut ids: smallvec::SmallVec<[Id; 16]> = smallvec::SmallVec::new();
        for n in self.rhs.ast.as_ref() {
            let id = match n {
                ENodeOrVar::Var(w) => subst[*w],
                ENodeOrVar::ENode(e) => egraph.add(e.clone().map_children(|c| ids[usize::from(c)])),
            };
            ids.push(id);
        }
        let changed = if egraph.union(eclass, *ids.last().unwrap()) { vec![eclass] } else { vec![] };
        if let Some(shape) = noted {
            crate::ematch::Memory::note_applied(egraph, self.serial, eclass, subst, &ids, shape);
        }
        changed
    }
}

/// The shape of a pattern's instance, given its variables' shapes; `None` where a node
/// is ill-shaped or a name unknown (`pattern_shape` without the messages).
fn instance_shape(p: &PatternAst<Node>, var: &dyn Fn(Var) -> Shape, syms: &dyn Fn(Symbol) -> Option<Shape>) -> Option<Shape> {
    const SMALL: usize = 24;
    let mut small = [SCALAR; SMALL];
    let mut large = vec![];
    let shapes: &mut [Shape] = if p.as_ref().len() <= SMALL {
        &mut small[..]
    } else {
        large.resize(p.as_ref().len(), SCALAR);
        &mut large[..]
    };
    for (i, n) in p.iter().enumerate() {
        shapes[i] = match n {
            ENodeOrVar::Var(v) => var(*v),
            ENodeOrVar::ENode(Node::Symbol(s)) => syms(*s)?,
            ENodeOrVar::ENode(node) => {
                let children = node.children();
                let mut kids = [SCALAR; 4];
                if children.len() <= kids.len() {
                    for (k, c) in kids.iter_mut().zip(children) {
                        *k = shapes[usize::from(*c)];
                    }
                    node_shape(node, &kids[..children.len()]).ok()?
                } else {
                    let kids: Vec<Shape> = children.iter().map(|&c| shapes[usize::from(c)]).collect();
                    node_shape(node, &kids).ok()?
                }
            }
        };
    }
    p.as_ref().len().checked_sub(1).map(|i| shapes[i])
}

fn check(egraph: &Graph, subst: &Subst, c: &Cond) -> bool {
    let data = |v: &Var| &egraph[subst[*v]].data;
    match c {
        Cond::Indep(a, x) => data(a).free.is_disjoint(&data(x).free),
        Cond::Depends(p, x) => {
            // find the term's class without adding it
            let mut ids: Vec<Id> = vec![];
            for n in p.iter() {
                let id = match n {
                    ENodeOrVar::Var(v) => Some(subst[*v]),
                    ENodeOrVar::ENode(node) => egraph.lookup(node.clone().map_children(|c| ids[usize::from(c)])),
                };
                match id {
                    Some(id) => ids.push(id),
                    None => return false,
                }
            }
            let class = &egraph[*ids.last().unwrap()];
            // a class that already equals a derivative (exp′ = exp) is not expanded again:
            // that would differentiate its derivatives without end
            !class.data.free.is_disjoint(&data(x).free) && !class.nodes.iter().any(|n| matches!(n, Node::Jac(_)))
        }
        Cond::Scalar(a) => data(a).shape.is_some_and(|s| s.is_scalar()),
        Cond::NotScalar(a) => data(a).shape.is_some_and(|s| !s.is_scalar()),
        Cond::Column(a) => data(a).shape.is_some_and(|s| s.is_column()),
        Cond::Row(a) => data(a).shape.is_some_and(|s| matches!(s, Shape::Mat(Dim::One, _))),
        Cond::Matrix(a) => data(a).shape.is_some_and(|s| s.is_matrix()),
        Cond::SameShape(a, b) => data(a).shape.is_some() && data(a).shape == data(b).shape,
        Cond::Fits(a, b) => fits(data(a).shape, data(b).shape),
        Cond::Const(a) => data(a).constant.is_some(),
        Cond::NotConst(a) => data(a).constant.is_none(),
        Cond::Length(a, k) => data(a).shape.and_then(crate::lang::fixed_length) == Some(*k),
        Cond::Domain(a, d) => has_symbol(egraph, subst[*a], &|s| egraph.analysis.vars.get(&s).is_some_and(|(_, dom)| dom == d)),
        Cond::Indicator(f, t) => has_symbol(egraph, subst[*f], &|s| {
            egraph.analysis.families.get(&s).is_some_and(|(shape, ind)| *ind && (t.is_none() || !shape.is_scalar() || t.is_some_and(|t| data(&t).shape.is_some_and(|x| x.is_scalar()))))
        }),
        Cond::ParamOf(t, fam, each) => {
            let want = egraph.analysis.families.get(fam).map(|(s, _)| *s);
            match (data(t).shape, want) {
                (Some(s), Some(w)) if *each => s.is_column() && !s.is_scalar() && w.is_scalar(),
                (Some(s), Some(w)) if w.is_matrix() => s.is_matrix(),
                (Some(s), Some(w)) => s.is_column() && (s.is_scalar() == w.is_scalar()),
                _ => false,
            }
        }
    }
}

impl Applier<Node, crate::analysis::Facts> for CondApplier {
    fn apply_one(&self, egraph: &mut Graph, eclass: Id, subst: &Subst, ast: Option<&PatternAst<Node>>, rule: Symbol) -> Vec<Id> {
        // an application that certainly changes nothing is skipped (with explanations,
        // `ast` is given and there is no memory)
        let remember = ast.is_none() && self.assume.is_none();
        if remember && crate::ematch::Memory::applied_before(egraph, self.serial, eclass, subst, &self.rhs.ast) {
            if !crate::ematch::verifying() {
                return vec![];
            }
            let before = (egraph.total_size(), egraph.number_of_classes(), egraph.analysis.conflicts.len());
            let changed = self.apply_in_full(egraph, eclass, subst, ast, rule, false);
            let after = (egraph.total_size(), egraph.number_of_classes(), egraph.analysis.conflicts.len());
            assert!(changed.is_empty() && before == after, "rule {rule} skipped as a repeat at {eclass} would have changed the e-graph");
            return changed;
        }
        self.apply_in_full(egraph, eclass, subst, ast, rule, remember)
    }

    fn get_pattern_ast(&self) -> Option<&PatternAst<Node>> {
        Some(&self.rhs.ast)
    }

    fn vars(&self) -> Vec<Var> {
        self.vars.clone()
    }
}

impl CondApplier {
    /// The conditions, the guards, the right side and the assumption; the application
    /// noted in the run's memory when `remember` and it ran in full.
    fn apply_in_full(&self, egraph: &mut Graph, eclass: Id, subst: &Subst, ast: Option<&PatternAst<Node>>, rule: Symbol, remember: bool) -> Vec<Id> {
        if !self.conds.iter().all(|c| check(egraph, subst, c)) {
            return vec![];
        }
        // A class known to be zero needs no more forms, only the 0 itself: rewriting its
        // members (a − a, 0 ⊙ t, …) by distribution rules multiplies them without end.
        let class = &egraph[eclass].data;
        if class.zero && !self.rhs_zero {
            return vec![];
        }
        // A guard behind the load-time shape check: never merge terms of different shapes
        // (0 has them all). Checked when the shapes of the right side's variables are known.
        // (An application is remembered only where the guard is passed in full, or there
        // is none.)
        let mut guarded = self.rhs_zero;
        let have_shape = class.shape;
        if let Some(have) = class.shape.filter(|_| !self.rhs_zero) {
            // the variables' shapes, each looked up once
            let shapes: Option<smallvec::SmallVec<[Shape; 8]>> = self.vars.iter().map(|v| egraph[subst[*v]].data.shape).collect();
            if let Some(shapes) = shapes {
                guarded = true;
                let syms = |s: Symbol| egraph.analysis.symbol_shape(s);
                let shape = |v: Var| shapes[self.vars.iter().position(|w| *w == v).unwrap()];
                if let Some(got) = instance_shape(&self.rhs.ast, &shape, &syms).filter(|got| *got != have) {
                    let msg = format!("rule {rule} would make {have} into {got}");
                    if !egraph.analysis.conflicts.contains(&msg) {
                        egraph.analysis.conflicts.push(msg);
                    }
                    return vec![];
                }
            }
        }
        let changed = if ast.is_some() {
            self.rhs.apply_one(egraph, eclass, subst, ast, rule)
        } else {
            let noted = (remember && guarded).then_some(if self.rhs_zero { None } else { have_shape });
            self.instantiate(egraph, eclass, subst, noted)
        };
        if let Some(text) = &self.assume {
            // Name the assumption after the classes it is about.
            let mut t = text.clone();
            for v in self.vars.iter().chain(self.conds.iter().flat_map(cond_vars).collect::<Vec<_>>().iter()) {
                if let Some(name) = class_name(egraph, subst[*v]) {
                    t = replace_word(&t, &v.to_string()[1..], &name);
                }
            }
            egraph.analysis.assumptions.insert(t);
        }
        changed
    }
}

pub fn replace_word(text: &str, word: &str, by: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + word.len()..].chars().next();
        // letters and digits continue a name; superscripts such as ᵀ do not
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_') || ('\u{1D2C}'..='\u{1D6A}').contains(&c));
        out.push_str(&rest[..i]);
        out.push_str(if boundary(before) && boundary(after) { by } else { word });
        rest = &rest[i + word.len()..];
    }
    out + rest
}

/// Rules are equal when everything written about them is (the compiled form follows).
impl PartialEq for Rule {
    fn eq(&self, o: &Rule) -> bool {
        self.name == o.name
            && self.lhs == o.lhs
            && self.rhs == o.rhs
            && self.conds == o.conds
            && self.assume == o.assume
            && self.derive == o.derive
            && self.description == o.description
            && self.origin == o.origin
            && self.steps == o.steps
    }
}

impl Rule {
    pub fn rewrite(&self) -> Result<Rewrite<Node, crate::analysis::Facts>, String> {
        if let Some(r) = self.compiled.get() {
            return Ok(r.clone());
        }
        // rules made afresh for each model (a family's) compile once per process
        type Cache = std::sync::Mutex<HashMap<String, Rewrite<Node, crate::analysis::Facts>>>;
        static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
        let key = format!("{}|{}|{}|{:?}|{:?}", self.name, self.lhs, self.rhs, self.conds, self.assume);
        if let Some(r) = CACHE.get_or_init(Default::default).lock().unwrap().get(&key) {
            return Ok(self.compiled.get_or_init(|| r.clone()).clone());
        }
        let applier = CondApplier::new(self.rhs.clone(), self.conds.clone(), self.assume.clone());
        let r = Rewrite::new(self.name.as_str(), crate::ematch::Remembering::new(self.lhs.clone()), applier)?;
        CACHE.get_or_init(Default::default).lock().unwrap().insert(key, r.clone());
        Ok(self.compiled.get_or_init(|| r).clone())
    }
}

/// All rules: the defaults (unless replaced) and the files of extra folders, with duplicate
/// names rejected.
pub fn rule_set(extra: &[(String, String)], defaults: bool) -> Result<Vec<Rule>, RuleError> {
    let mut all = vec![];
    let files: Vec<(String, String)> = if defaults {
        DEFAULT_RULES.iter().map(|(f, s)| (f.to_string(), s.to_string())).chain(extra.iter().cloned()).collect()
    } else {
        extra.to_vec()
    };
    let mut seen: HashMap<String, String> = HashMap::new();
    for (file, src) in &files {
        let builtin = defaults && DEFAULT_RULES.iter().any(|(f, s)| f == file && s == src);
        for r in read_rules(file, src, !builtin)? {
            if let Some(prev) = seen.get(&r.name) {
                let line = r.origin.rsplit(':').next().and_then(|l| l.parse().ok()).unwrap_or(1);
                let line_start: usize = src.split_inclusive('\n').take(line - 1).map(str::len).sum();
                let blanks = src[line_start..].len() - src[line_start..].trim_start_matches([' ', '\t']).len();
                return Err(RuleError { file: file.clone(), line, column: blanks + 1, message: format!("duplicate rule name `{}` (also at {prev})", r.name), offset: line_start + blanks });
            }
            seen.insert(r.name.clone(), r.origin.clone());
            all.push(r);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_pass_the_shape_check() {
        // the check `rule_set` skips for them at run time
        for (file, src) in DEFAULT_RULES {
            let rules = load_rules(file, src).unwrap_or_else(|e| panic!("{e}"));
            assert!(!rules.is_empty(), "{file}");
        }
    }

    #[test]
    fn default_rules_load() {
        let rules = rule_set(&[], true).unwrap_or_else(|e| panic!("{e}"));
        assert!(rules.len() > 60, "{}", rules.len());
        for r in &rules {
            r.rewrite().unwrap();
        }
    }

    #[test]
    fn shape_disagreement_is_an_error_with_a_line() {
        let e = load_rules("bad.rules", "# comment\nok: a + 0 => a\nbad: sum(a) => a\n").map(|_| ()).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("bad.rules", 3), "{e}");
        assert!(e.message.contains("disagree in shape"), "{e}");
    }

    #[test]
    fn unbound_and_duplicate() {
        let e = load_rules("u.rules", "u: a + b => c").map(|_| ()).unwrap_err();
        assert!(e.message.contains("not bound"), "{e}");
        let e = rule_set(&[("x.rules".into(), "add-0: a + 0 => a".into())], true).map(|_| ()).unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
    }
}
