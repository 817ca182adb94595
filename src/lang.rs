//! The term language shared by the e-graph, the printers and the evaluator, and its
//! shape rules.
//!
//! Every value is a matrix: a scalar is 1×1 and a vector is a column (n×1). Dimensions
//! are symbolic (`k`, `n`) so one derivation holds for every size.

use egg::{define_language, Id, Language, Symbol};
use num_rational::Rational64;
use std::fmt;

define_language! {
    /// One node of a term. `jac f x` is the Jacobian ∂f/∂x (rows: entries of f, columns:
    /// entries of x), so `transpose (jac J x)` is the gradient of a scalar J.
    pub enum Node {
        "+" = Add([Id; 2]),
        "-" = Sub([Id; 2]),
        // `*` and `/` are elementwise, with a scalar broadcast to the other side's shape.
        "*" = Mul([Id; 2]),
        "/" = Div([Id; 2]),
        "^" = Pow([Id; 2]),
        "neg" = Neg(Id),
        "@" = MatMul([Id; 2]),
        "transpose" = Transpose(Id),
        "dot" = Dot([Id; 2]),
        "outer" = Outer([Id; 2]),
        // sum over the first axis: a vector gives a scalar, a matrix a row.
        "sum" = Sum(Id),
        "diag" = Diag(Id),
        "exp" = Exp(Id),
        "log" = Log(Id),
        "sigmoid" = Sigmoid(Id),
        "softmax" = Softmax(Id),
        "logsumexp" = LogSumExp(Id),
        "lgamma" = Lgamma(Id),
        // lmvgamma a m: the multivariate log-gamma log Γ_p(a), p the size of the square m
        "lmvgamma" = Lmvgamma([Id; 2]),
        // polygamma n a: the n-th derivative of the digamma function ψ (n a constant)
        "polygamma" = Polygamma([Id; 2]),
        "log1p" = Log1p(Id),
        "expm1" = Expm1(Id),
        "sqrt" = Sqrt(Id),
        "abs" = Abs(Id),
        "sign" = Sign(Id),
        // step x: 1 where x ≥ 0, else 0 (indicators of supports)
        "step" = Step(Id),
        "cos" = Cos(Id),
        "sin" = Sin(Id),
        // the modified Bessel functions I₀ and I₁
        "besseli0" = BesselI0(Id),
        "besseli1" = BesselI1(Id),
        // the identity matrix as large as the vector argument
        "eye" = Eye(Id),
        // the inverse and log |det| of a square matrix
        "inv" = Inv(Id),
        "logdet" = LogDet(Id),
        // the vector of ones as long as the vector argument, 𝟙
        "ones" = Ones(Id),
        // a vector written out, [a, b]: its entries stacked (scalars, or rows into a matrix)
        "stack" = Vector(Box<[Id]>),
        // vec m: the columns of m stacked into one column (column-major)
        "vec" = Vec(Id),
        // kron a b: the Kronecker product a ⊗ b
        "kron" = Kron([Id; 2]),
        // trace of a square matrix
        "trace" = Trace(Id),
        // commute m: the commutation matrix K with K vec(m) = vec(mᵀ)
        "commute" = Commute(Id),
        // sumover i n body: Σ over i = 1..n of body (i a bound index, n a dimension)
        "sumover" = SumOver([Id; 3]),
        // at v i: entry i of a vector (row i of a matrix), counted from 1; i a constant
        "at" = At([Id; 2]),
        "jac" = Jac([Id; 2]),
        // expect q x body: the expectation of body over x with weights q
        "expect" = Expect([Id; 3]),
        // family quantities: log density, log-partition A, E[T], Cov[T], E[T Tᵀ]
        "logp" = LogP([Id; 3]),
        "logpart" = LogPart([Id; 2]),
        "mean" = Mean([Id; 2]),
        "cov" = Cov([Id; 2]),
        "second" = Second([Id; 2]),
        // KL F t1 t2: KL(F(t1) ‖ F(t2))
        "KL" = Kl([Id; 3]),
        Num(Rational64),
        Symbol(Symbol),
    }
}

impl Node {
    /// Nodes that name a family quantity (their first child is the family).
    pub fn is_family_quantity(&self) -> bool {
        matches!(
            self,
            Node::LogP(_) | Node::LogPart(_) | Node::Mean(_) | Node::Cov(_) | Node::Second(_) | Node::Kl(_)
        )
    }
}

impl Node {
    /// A small number per operator (its variant), for tables indexed by operator.
    pub fn op_index(&self) -> usize {
        match self {
            Node::Add(..) => 0,
            Node::Sub(..) => 1,
            Node::Mul(..) => 2,
            Node::Div(..) => 3,
            Node::Pow(..) => 4,
            Node::Neg(..) => 5,
            Node::MatMul(..) => 6,
            Node::Transpose(..) => 7,
            Node::Dot(..) => 8,
            Node::Outer(..) => 9,
            Node::Sum(..) => 10,
            Node::Diag(..) => 11,
            Node::Exp(..) => 12,
            Node::Log(..) => 13,
            Node::Sigmoid(..) => 14,
            Node::Softmax(..) => 15,
            Node::LogSumExp(..) => 16,
            Node::Lgamma(..) => 17,
            Node::Polygamma(..) => 18,
            Node::Log1p(..) => 19,
            Node::Expm1(..) => 20,
            Node::Sqrt(..) => 21,
            Node::Abs(..) => 22,
            Node::Sign(..) => 23,
            Node::Step(..) => 24,
            Node::Cos(..) => 25,
            Node::Sin(..) => 26,
            Node::BesselI0(..) => 27,
            Node::BesselI1(..) => 28,
            Node::Eye(..) => 29,
            Node::Inv(..) => 30,
            Node::LogDet(..) => 31,
            Node::Ones(..) => 32,
            Node::Vector(..) => 33,
            Node::Vec(..) => 34,
            Node::Kron(..) => 35,
            Node::Trace(..) => 36,
            Node::SumOver(..) => 37,
            Node::At(..) => 38,
            Node::Jac(..) => 39,
            Node::Expect(..) => 40,
            Node::LogP(..) => 41,
            Node::LogPart(..) => 42,
            Node::Mean(..) => 43,
            Node::Cov(..) => 44,
            Node::Second(..) => 45,
            Node::Kl(..) => 46,
            Node::Num(..) => 47,
            Node::Symbol(..) => 48,
            Node::Lmvgamma(..) => 49,
            Node::Commute(..) => 50,
        }
    }
}

/// How many operators there are (`Node::op_index` is below it).
pub const OPS: usize = 51;

/// One dimension of a shape: 1 or a named dimension.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Dim {
    One,
    Named(Symbol),
}

impl Dim {
    /// The product of two dimensions (the length of vec of an r×c matrix is r·c); a product
    /// of named dimensions is named by its factors, sorted, joined by `·`.
    pub fn times(self, other: Dim) -> Dim {
        match (self, other) {
            (Dim::One, d) | (d, Dim::One) => d,
            (Dim::Named(a), Dim::Named(b)) => {
                let mut f: Vec<&str> = a.as_str().split('·').chain(b.as_str().split('·')).collect();
                f.sort_unstable();
                Dim::Named(Symbol::from(f.join("·").as_str()))
            }
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::One => write!(f, "1"),
            Dim::Named(s) => write!(f, "{s}"),
        }
    }
}

/// The shape of a term. The number 0 stands for the zero of every shape: it is a
/// scalar in terms, and a class that holds it has no single shape in the e-graph.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Shape {
    /// rows × columns
    Mat(Dim, Dim),
    /// a family name (only as the first argument of a family quantity)
    Family,
}

pub const SCALAR: Shape = Shape::Mat(Dim::One, Dim::One);

impl Shape {
    pub fn vector(n: Dim) -> Shape {
        Shape::Mat(n, Dim::One)
    }
    pub fn is_scalar(&self) -> bool {
        *self == SCALAR
    }
    /// more than one row and more than one column
    pub fn is_matrix(&self) -> bool {
        matches!(self, Shape::Mat(r, c) if *r != Dim::One && *c != Dim::One)
    }
    pub fn is_column(&self) -> bool {
        matches!(self, Shape::Mat(_, Dim::One))
    }
    /// The number of entries, as a dimension (rows · columns).
    pub fn len(&self) -> Option<Dim> {
        match self {
            Shape::Mat(r, c) => Some(r.times(*c)),
            Shape::Family => None,
        }
    }
    pub fn rows(&self) -> Option<Dim> {
        match self {
            Shape::Mat(r, _) => Some(*r),
            Shape::Family => None,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Family => write!(f, "a family"),
            Shape::Mat(Dim::One, Dim::One) => write!(f, "a scalar"),
            Shape::Mat(n, Dim::One) => write!(f, "a vector of length {n}"),
            Shape::Mat(Dim::One, n) => write!(f, "a row of length {n}"),
            Shape::Mat(r, c) => write!(f, "a {r}×{c} matrix"),
        }
    }
}

/// Why a node is ill-shaped; the message is written only when shown (the e-graph asks
/// about many ill-shaped forms and needs no text for them).
#[derive(Clone, Copy, Debug)]
pub struct ShapeError {
    msg: &'static str,
    what: &'static str,
    a: Option<Shape>,
    b: Option<Shape>,
    name: Option<Symbol>,
}

fn why(msg: &'static str, a: Option<Shape>, b: Option<Shape>) -> ShapeError {
    ShapeError { msg, what: "", a, b, name: None }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |s: Option<Shape>| s.map(|s| s.to_string()).unwrap_or_default();
        let text = self.msg.replace("{what}", self.what).replace("{0}", &show(self.a)).replace("{1}", &show(self.b));
        write!(f, "{}", text.replace("{name}", &self.name.map(|n| n.to_string()).unwrap_or_default()))
    }
}

impl From<ShapeError> for String {
    fn from(e: ShapeError) -> String {
        e.to_string()
    }
}

/// The shape a node has, given the shapes of its children; `Err` says why it is ill-shaped.
/// Leaves (numbers, symbols) are the caller's business.
pub fn node_shape(node: &Node, kids: &[Shape]) -> Result<Shape, ShapeError> {
    use Node::*;
    let mat = |i: usize| -> Result<(Dim, Dim), ShapeError> {
        match kids[i] {
            Shape::Mat(r, c) => Ok((r, c)),
            Shape::Family => Err(why("a family name is not a value", None, None)),
        }
    };
    let column = |i: usize, what: &'static str| -> Result<Dim, ShapeError> {
        match mat(i)? {
            (n, Dim::One) => Ok(n),
            _ => Err(ShapeError { what, ..why("{what} needs a vector, got {0}", Some(kids[i]), None) }),
        }
    };
    let family = |i: usize| -> Result<(), ShapeError> {
        match kids[i] {
            Shape::Family => Ok(()),
            _ => Err(why("expected a family name", None, None)),
        }
    };
    match node {
        Add(_) | Sub(_) | Mul(_) | Div(_) => {
            let (a, b) = (mat(0)?, mat(1)?);
            if a == b || b == (Dim::One, Dim::One) {
                Ok(kids[0])
            } else if a == (Dim::One, Dim::One) {
                Ok(kids[1])
            } else {
                Err(why("shapes do not match: {0} and {1}", Some(kids[0]), Some(kids[1])))
            }
        }
        Pow(_) => {
            mat(0)?;
            if !kids[1].is_scalar() {
                return Err(why("the exponent must be a scalar, got {0}", Some(kids[1]), None));
            }
            Ok(kids[0])
        }
        Neg(_) | Exp(_) | Log(_) | Sigmoid(_) | Lgamma(_) | Log1p(_) | Expm1(_) | Sqrt(_) | Abs(_) | Sign(_) | Step(_) | Cos(_) | Sin(_) | BesselI0(_) | BesselI1(_) => {
            mat(0)?;
            Ok(kids[0])
        }
        Lmvgamma(_) => {
            if !kids[0].is_scalar() {
                return Err(why("log Γ_p takes a scalar, got {0}", Some(kids[0]), None));
            }
            let (r, c) = mat(1)?;
            if r != c {
                return Err(why("log Γ_p takes its dimension from a square matrix, got {0}", Some(kids[1]), None));
            }
            Ok(SCALAR)
        }
        Polygamma(_) => {
            if !kids[0].is_scalar() {
                return Err(why("the order of polygamma must be a scalar, got {0}", Some(kids[0]), None));
            }
            mat(1)?;
            Ok(kids[1])
        }
        MatMul(_) => {
            let ((m, n), (n2, p)) = (mat(0)?, mat(1)?);
            if n != n2 {
                return Err(why("cannot multiply {0} by {1}", Some(kids[0]), Some(kids[1])));
            }
            Ok(Shape::Mat(m, p))
        }
        Transpose(_) => {
            let (r, c) = mat(0)?;
            Ok(Shape::Mat(c, r))
        }
        Dot(_) => {
            let (a, b) = (column(0, "dot")?, column(1, "dot")?);
            if a != b {
                return Err(why("dot of {0} and {1}", Some(kids[0]), Some(kids[1])));
            }
            Ok(SCALAR)
        }
        Outer(_) => Ok(Shape::Mat(column(0, "outer")?, column(1, "outer")?)),
        Sum(_) => Ok(Shape::Mat(Dim::One, mat(0)?.1)),
        Diag(_) => {
            let n = column(0, "diag")?;
            Ok(Shape::Mat(n, n))
        }
        Softmax(_) => Ok(Shape::vector(column(0, "softmax")?)),
        LogSumExp(_) => {
            column(0, "logsumexp")?;
            Ok(SCALAR)
        }
        Ones(_) => Ok(Shape::vector(column(0, "ones")?)),
        Inv(_) | LogDet(_) => {
            let (r, c) = mat(0)?;
            if r != c {
                return Err(why("an inverse or determinant needs a square matrix, got {0}", Some(kids[0]), None));
            }
            Ok(if matches!(node, Inv(_)) { kids[0] } else { SCALAR })
        }
        Vector(items) => {
            if items.is_empty() || items.len() > 16 {
                return Err(why("a vector written out has 1 to 16 entries", None, None));
            }
            let cols = match mat(0)? {
                (Dim::One, c) => c,
                _ => return Err(why("the entries of [..] must be scalars or rows, got {0}", Some(kids[0]), None)),
            };
            for i in 1..items.len() {
                if mat(i)? != (Dim::One, cols) {
                    return Err(why("the entries of [..] differ in shape: {0} and {1}", Some(kids[0]), Some(kids[i])));
                }
            }
            Ok(Shape::Mat(Dim::Named(egg::Symbol::from(items.len().to_string().as_str())), cols))
        }
        At(_) => {
            let (_, c) = mat(0)?;
            if !kids[1].is_scalar() {
                return Err(why("an index must be a number", None, None));
            }
            Ok(Shape::Mat(Dim::One, c))
        }
        // the identity as large as its argument has rows
        Eye(_) => {
            let (n, _) = mat(0)?;
            Ok(Shape::Mat(n, n))
        }
        // rows: the entries of vec(f); columns: the entries of vec(x)
        Jac(_) => {
            let ((fr, fc), (xr, xc)) = (mat(0)?, mat(1)?);
            Ok(Shape::Mat(fr.times(fc), xr.times(xc)))
        }
        Vec(_) => {
            let (r, c) = mat(0)?;
            Ok(Shape::vector(r.times(c)))
        }
        Kron(_) => {
            let ((ar, ac), (br, bc)) = (mat(0)?, mat(1)?);
            Ok(Shape::Mat(ar.times(br), ac.times(bc)))
        }
        SumOver(_) => {
            if !kids[0].is_scalar() || !kids[1].is_scalar() {
                return Err(why("a sum runs over an index and a dimension", None, None));
            }
            mat(2)?;
            Ok(kids[2])
        }
        Commute(_) => {
            let (r, c) = mat(0)?;
            let n = r.times(c);
            Ok(Shape::Mat(n, n))
        }
        Trace(_) => {
            let (r, c) = mat(0)?;
            if r != c {
                return Err(why("a trace needs a square matrix, got {0}", Some(kids[0]), None));
            }
            Ok(SCALAR)
        }
        Expect(_) => {
            column(1, "an expectation's variable")?;
            if kids[0] != kids[1] {
                return Err(why("the weights of an expectation must be shaped like its variable: {0} and {1}", Some(kids[0]), Some(kids[1])));
            }
            mat(2)?;
            Ok(kids[2])
        }
        // a natural parameter is a vector, or a matrix η with ⟨η, T⟩ = vec(η)ᵀvec(T)
        LogP(_) => {
            family(0)?;
            mat(1)?;
            mat(2)?;
            Ok(SCALAR)
        }
        LogPart(_) => {
            family(0)?;
            mat(1)?;
            Ok(SCALAR)
        }
        // Natural parameter and sufficient statistic have the same shape.
        Mean(_) => {
            family(0)?;
            mat(1)?;
            Ok(kids[1])
        }
        // the covariance of vec(T)
        Cov(_) | Second(_) => {
            family(0)?;
            let (r, c) = mat(1)?;
            let n = r.times(c);
            Ok(Shape::Mat(n, n))
        }
        Kl(_) => {
            family(0)?;
            if mat(1)? != mat(2)? {
                return Err(why("KL between parameters of different shapes: {0} and {1}", Some(kids[1]), Some(kids[2])));
            }
            Ok(SCALAR)
        }
        Num(_) => Ok(SCALAR),
        Symbol(s) => Err(ShapeError { name: Some(*s), ..why("unknown name `{name}`", None, None) }),
    }
}

/// The length of a vector of a fixed, small size (R^2): entry i of it is a variable of
/// its own for differentiation.
pub fn fixed_length(s: Shape) -> Option<usize> {
    match s {
        Shape::Mat(Dim::Named(n), Dim::One) => n.as_str().parse().ok().filter(|n| (2..=16).contains(n)),
        _ => None,
    }
}

/// The name of entry i of a variable, for the free-variable analysis: `eta[1]`.
pub fn component(s: Symbol, i: usize) -> Symbol {
    Symbol::from(format!("{s}[{i}]").as_str())
}

/// Names that stand for a number in every model: `pi`.
pub fn constant_symbol(s: Symbol) -> Option<f64> {
    (s.as_str() == "pi").then_some(std::f64::consts::PI)
}

/// The shape of every node of a term, given the shapes of its symbols.
pub fn term_shapes(
    expr: &egg::RecExpr<Node>,
    leaf: &dyn Fn(Symbol) -> Option<Shape>,
) -> Result<Vec<Shape>, String> {
    let mut shapes: Vec<Shape> = Vec::with_capacity(expr.len());
    for node in expr.iter() {
        let s = match node {
            Node::Symbol(s) => leaf(*s).ok_or_else(|| format!("unknown name `{s}`"))?,
            _ => {
                let kids: Vec<Shape> = node.children().iter().map(|&c| shapes[usize::from(c)]).collect();
                node_shape(node, &kids).map_err(String::from)?
            }
        };
        shapes.push(s);
    }
    Ok(shapes)
}
