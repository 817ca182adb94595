//! What the e-graph knows about each class: its shape, the variables it depends on, and
//! its value when constant. Facts about the model (domains, family supports) live in the
//! analysis too, for conditional rules.

use crate::lang::{node_shape, Node, Shape};
use crate::model::{Domain, Model};
use egg::{Analysis, DidMerge, EGraph, Id, Language, Symbol};
use num_rational::Rational64;
use num_traits::{CheckedAdd, CheckedDiv, CheckedMul, CheckedSub, Zero};
use std::collections::{BTreeSet, HashMap};

pub type Graph = EGraph<Node, Facts>;

#[derive(Debug, Clone)]
pub struct Data {
    /// `None` when a child's shape is unknown, the node is ill-shaped, or the class is 0
    /// (the zero of every shape).
    pub shape: Option<Shape>,
    /// Variables the class depends on. Merged by intersection: a class is independent of
    /// x when any of its members is (x − x ≡ 0).
    pub free: BTreeSet<Symbol>,
    pub constant: Option<Rational64>,
    /// known to be zero (0, or a linear function of 0): such a class may hold members
    /// of different shapes (0ᵀ of a row and of a matrix are the same e-node)
    pub zero: bool,
}

/// The analysis: model facts in, assumptions and shape conflicts out.
#[derive(Default, Clone)]
pub struct Facts {
    pub vars: HashMap<Symbol, (Shape, Domain)>,
    /// named dimensions: numbers (their sizes) in terms
    pub dims: BTreeSet<Symbol>,
    /// family name → (parameter shape, is T(x) = x with one-hot or binary x)
    pub families: HashMap<Symbol, (Shape, bool)>,
    /// family name → the variables its known parameters were given in terms of (or the
    /// known parameters themselves, in a family not filled in): a family term (and so its
    /// A, log p, E[T]) depends on them
    pub family_free: HashMap<Symbol, BTreeSet<Symbol>>,
    /// assumptions the rules used, as instantiated by them
    pub assumptions: BTreeSet<String>,
    /// classes that were asked to hold two shapes (a rule bug)
    pub conflicts: Vec<String>,
    /// what the rules' searches remember between iterations of a run
    pub(crate) memory: crate::ematch::MemoryCell,
}

impl Facts {
    pub fn new(model: &Model) -> Facts {
        Facts {
            vars: model
                .vars
                .values()
                .map(|v| (Symbol::from(v.name.as_str()), (v.shape, v.domain)))
                // a sum's index is a whole number
                .chain(model.indices.keys().map(|i| (Symbol::from(i.as_str()), (crate::lang::SCALAR, Domain::Count))))
                .collect(),
            dims: model.dims.iter().filter(|d| d.parse::<usize>().is_err()).map(|d| Symbol::from(d.as_str())).collect(),
            families: model.families.iter().map(|f| (Symbol::from(f.name.as_str()), (f.param_shape, f.is_indicator()))).collect(),
            family_free: model
                .families
                .iter()
                .map(|f| {
                    let vars = f.given.iter().flat_map(|t| t.iter()).filter_map(|n| match n {
                        Node::Symbol(s) if model.vars.contains_key(s.as_str()) => Some(*s),
                        _ => None,
                    });
                    // a family not filled in (the catalog's own) depends on its known parameters
                    let known = f.known.iter().map(|k| Symbol::from(k.0.as_str()));
                    (Symbol::from(f.name.as_str()), vars.chain(known).collect())
                })
                .collect(),
            ..Default::default()
        }
    }

    /// What a variable depends on: itself, and a vector of fixed length each of its entries.
    fn var_free(&self, s: Symbol, free: &mut BTreeSet<Symbol>) {
        free.insert(s);
        if let Some(n) = self.vars.get(&s).and_then(|(sh, _)| crate::lang::fixed_length(*sh)) {
            free.extend((1..=n).map(|i| crate::lang::component(s, i)));
        }
    }

    pub fn symbol_shape(&self, s: Symbol) -> Option<Shape> {
        if let Some((sh, _)) = self.vars.get(&s) {
            return Some(*sh);
        }
        if self.dims.contains(&s) {
            return Some(crate::lang::SCALAR);
        }
        self.families.get(&s).map(|_| Shape::Family).or_else(|| crate::lang::constant_symbol(s).map(|_| crate::lang::SCALAR))
    }
}

fn fold(node: &Node, c: &dyn Fn(Id) -> Option<Rational64>) -> Option<Rational64> {
    match node {
        Node::Num(n) => Some(*n),
        Node::Add([a, b]) => c(*a)?.checked_add(&c(*b)?),
        Node::Sub([a, b]) => c(*a)?.checked_sub(&c(*b)?),
        Node::Mul([a, b]) => c(*a)?.checked_mul(&c(*b)?),
        Node::Div([a, b]) => {
            let d = c(*b)?;
            if d.is_zero() {
                None
            } else {
                c(*a)?.checked_div(&d)
            }
        }
        Node::Neg(a) => Some(-c(*a)?),
        Node::Pow([a, b]) => {
            let (x, e) = (c(*a)?, c(*b)?);
            if !e.is_integer() || e.to_integer().abs() > 16 || (x.is_zero() && *e.numer() < 0) {
                return None;
            }
            let n = e.to_integer();
            let mut r = Rational64::from_integer(1);
            for _ in 0..n.abs() {
                r = r.checked_mul(&x)?;
            }
            if n < 0 {
                r = Rational64::from_integer(1).checked_div(&r)?;
            }
            Some(r)
        }
        _ => None,
    }
}

impl Analysis<Node> for Facts {
    type Data = Data;

    fn make(egraph: &mut Graph, enode: &Node, _id: Id) -> Data {
        let get = |i: &Id| &egraph[*i].data;
        let shape = match enode {
            Node::Num(n) if n.is_zero() => None,
            Node::Symbol(s) => egraph.analysis.symbol_shape(*s),
            _ => {
                // 0 (no single shape) broadcasts like a scalar in elementwise arithmetic
                let broadcast = matches!(enode, Node::Add(_) | Node::Sub(_) | Node::Mul(_) | Node::Div(_) | Node::Polygamma(_) | Node::Vector(_));
                let kids: Option<Vec<Shape>> = enode
                    .children()
                    .iter()
                    .map(|c| get(c).shape.or_else(|| (broadcast && get(c).constant.is_some_and(|v| v.is_zero())).then_some(crate::lang::SCALAR)))
                    .collect();
                kids.and_then(|k| node_shape(enode, &k).ok())
            }
        };
        let mut free = BTreeSet::new();
        match enode {
            // a variable's name may also be a family's (beta): as a symbol, it is the variable
            Node::Symbol(s) if egraph.analysis.vars.contains_key(s) => egraph.analysis.var_free(*s, &mut free),
            Node::Symbol(s) if egraph.analysis.family_free.contains_key(s) => {
                for v in &egraph.analysis.family_free[s] {
                    egraph.analysis.var_free(*v, &mut free);
                }
            }
            // entry i of a variable depends on that entry only
            Node::At([v, i]) => {
                let sym = egraph[*v].nodes.iter().find_map(|n| match n {
                    Node::Symbol(s) if egraph.analysis.vars.contains_key(s) => Some(*s),
                    _ => None,
                });
                match (sym, get(i).constant) {
                    (Some(s), Some(k)) if k.is_integer() && *k.numer() >= 1 => {
                        free.insert(crate::lang::component(s, *k.numer() as usize));
                    }
                    // at an index: the variable and the index (a sum's)
                    _ => free.extend(get(v).free.iter().chain(get(i).free.iter()).copied()),
                }
            }
            // the identity depends on its argument's size only, and so does log Γ_p on its second
            Node::Eye(_) | Node::Ones(_) => {}
            Node::Lmvgamma([a, _]) => free.extend(get(a).free.iter().copied()),
            // ∂f/∂x depends on what f depends on
            Node::Jac([f, _]) => free.extend(get(f).free.iter().copied()),
            // a sum depends on what its summand does, except its index
            Node::SumOver([i, _, body]) => free.extend(get(body).free.difference(&get(i).free).copied()),
            Node::Expect([q, x, body]) => {
                free.extend(get(q).free.iter().copied());
                free.extend(get(body).free.difference(&get(x).free).copied());
            }
            _ => {
                for c in enode.children() {
                    free.extend(get(c).free.iter().copied());
                }
            }
        }
        let z = |i: &Id| get(i).zero;
        let zero = match enode {
            Node::Num(n) => n.is_zero(),
            Node::Transpose(a) | Node::Neg(a) | Node::Sum(a) | Node::Diag(a) | Node::At([a, _]) => z(a),
            Node::Mul([a, b]) | Node::MatMul([a, b]) | Node::Dot([a, b]) | Node::Outer([a, b]) => z(a) || z(b),
            Node::Add([a, b]) | Node::Sub([a, b]) => z(a) && z(b),
            Node::Div([a, _]) | Node::Jac([a, _]) | Node::SumOver([_, _, a]) => z(a),
            _ => false,
        };
        let scalar = |i: &Id| get(i).shape.is_some_and(|s| s.is_scalar());
        let constant = if enode.children().iter().all(scalar) { fold(enode, &|i| get(&i).constant) } else { None };
        Data { shape, free, constant, zero }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed_a = false;
        let mut changed_b = false;
        let zero = a.zero || b.zero || a.constant.is_some_and(|c| c.is_zero()) || b.constant.is_some_and(|c| c.is_zero());
        if zero && !a.zero {
            a.zero = true;
            changed_a = true;
        }
        if zero && !b.zero {
            changed_b = true;
        }
        match (a.shape, b.shape) {
            _ if zero => {}
            (None, Some(s)) => {
                a.shape = Some(s);
                changed_a = true;
            }
            (Some(_), None) => changed_b = true,
            // judged once the run is over (`shape_conflicts`): a merge seen here may be
            // of two zeros whose zero-ness has not reached them yet
            _ => {}
        }
        let before = a.free.len();
        if a.free != b.free {
            changed_b |= !b.free.is_subset(&a.free);
            a.free.retain(|s| b.free.contains(s));
            changed_a |= a.free.len() != before;
        }
        match (a.constant, b.constant) {
            (None, Some(c)) => {
                a.constant = Some(c);
                changed_a = true;
            }
            (Some(_), None) => changed_b = true,
            (Some(x), Some(y)) if x != y => self.conflicts.push(format!("constant {x} merged with {y}")),
            _ => {}
        }
        // 0 is the zero of every shape
        if a.constant.is_some_and(|c| c.is_zero()) && a.shape.is_some() {
            a.shape = None;
            changed_a = true;
        }
        DidMerge(changed_a, changed_b)
    }

    fn modify(egraph: &mut Graph, id: Id) {
        if let Some(c) = egraph[id].data.constant {
            if !egraph[id].nodes.iter().any(|n| matches!(n, Node::Num(_))) {
                let n = egraph.add(Node::Num(c));
                egraph.union_trusted(id, n, "constant-fold");
            }
        }
    }
}

/// Classes whose members disagree in shape, other than zeros: each is a rule bug.
pub fn shape_conflicts(egraph: &Graph) -> Vec<String> {
    let mut out = vec![];
    for class in egraph.classes() {
        if class.data.zero || class.data.constant.is_some_and(|c| c.is_zero()) {
            continue;
        }
        let Some(have) = class.data.shape else { continue };
        for n in &class.nodes {
            let shape = match n {
                Node::Symbol(s) => egraph.analysis.symbol_shape(*s),
                _ => {
                    let kids: Option<Vec<Shape>> = n.children().iter().map(|c| egraph[*c].data.shape).collect();
                    kids.and_then(|k| node_shape(n, &k).ok())
                }
            };
            if let Some(s) = shape.filter(|s| *s != have) {
                out.push(format!("{have} holds `{n}` of {s}"));
            }
        }
    }
    out
}

/// Does the class hold a symbol for which `pred` holds?
pub fn has_symbol(egraph: &Graph, id: Id, pred: &dyn Fn(Symbol) -> bool) -> bool {
    egraph[id].nodes.iter().any(|n| matches!(n, Node::Symbol(s) if pred(*s)))
}

/// A printable name for a class: its symbol or constant, if it has one.
pub fn class_name(egraph: &Graph, id: Id) -> Option<String> {
    egraph[id].nodes.iter().find_map(|n| match n {
        Node::Symbol(s) => Some(s.to_string()),
        Node::Num(r) => Some(r.to_string()),
        _ => None,
    })
}
