//! Numbers: evaluates terms with nalgebra matrices, over plain floats or hyper-dual
//! numbers (for derivatives computed independently of the rules). Families are
//! evaluated from their definitions: E[T] and Cov[T] as derivatives of A by dual
//! numbers, expectations by summing over the support.

use crate::lang::Node;
use crate::model::{Domain, Family, Model};
use egg::{Id, Language, RecExpr, Symbol};
use nalgebra::DMatrix;
use num_dual::{DualNum, HyperDual64};
use std::collections::HashMap;
use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A number the evaluator computes with.
pub trait Scalar:
    Copy + Debug + PartialEq + 'static + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + Neg<Output = Self>
{
    fn of(x: f64) -> Self;
    fn re(&self) -> f64;
    /// (value, ε₁, ε₂, ε₁ε₂) parts: ε₁ = ε₂ = 0 for plain numbers
    fn parts(&self) -> [f64; 4];
    fn from_parts(p: [f64; 4]) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn powi(self, n: i32) -> Self;
    fn exp_m1(self) -> Self;
    fn sqrt(self) -> Self;
    /// log Γ
    fn lgamma(self) -> Self;
    /// ψ⁽ⁿ⁾
    fn polygamma(self, n: u32) -> Self;
    /// |x|, and its derivative's sign
    fn abs(self) -> Self {
        if self.re() < 0.0 { -self } else { self }
    }
    fn cos(self) -> Self;
    fn sin(self) -> Self;
    /// Iₙ, n = 0, 1
    fn bessel_i(self, n: u32) -> Self;
    /// log I₀ and I₁/I₀, finite for every argument
    fn log_bessel_i0(self) -> Self;
    fn bessel_ratio(self) -> Self;
    fn sign(self) -> Self {
        Self::of(if self.re() > 0.0 { 1.0 } else if self.re() < 0.0 { -1.0 } else { 0.0 })
    }
}

impl Scalar for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn re(&self) -> f64 {
        *self
    }
    fn parts(&self) -> [f64; 4] {
        [*self, 0.0, 0.0, 0.0]
    }
    fn from_parts(p: [f64; 4]) -> Self {
        p[0]
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn ln_1p(self) -> Self {
        f64::ln_1p(self)
    }
    fn powi(self, n: i32) -> Self {
        f64::powi(self, n)
    }
    fn exp_m1(self) -> Self {
        f64::exp_m1(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn lgamma(self) -> Self {
        crate::special::lgamma(self)
    }
    fn polygamma(self, n: u32) -> Self {
        crate::special::polygamma(n, self)
    }
    fn cos(self) -> Self {
        f64::cos(self)
    }
    fn sin(self) -> Self {
        f64::sin(self)
    }
    fn bessel_i(self, n: u32) -> Self {
        crate::special::bessel_i(n, self)
    }
    fn log_bessel_i0(self) -> Self {
        crate::special::log_bessel_i0(self)
    }
    fn bessel_ratio(self) -> Self {
        crate::special::bessel_ratio(self)
    }
}

/// f(x) for a hyper-dual x, from f, f′ and f″ at its real part.
fn chain(x: HyperDual64, f0: f64, f1: f64, f2: f64) -> HyperDual64 {
    HyperDual64::new(f0, x.eps1 * f1, x.eps2 * f1, x.eps1eps2 * f1 + x.eps1 * x.eps2 * f2)
}

impl Scalar for HyperDual64 {
    fn of(x: f64) -> Self {
        HyperDual64::from(x)
    }
    fn re(&self) -> f64 {
        self.re
    }
    fn parts(&self) -> [f64; 4] {
        [self.re, self.eps1, self.eps2, self.eps1eps2]
    }
    fn from_parts(p: [f64; 4]) -> Self {
        HyperDual64::new(p[0], p[1], p[2], p[3])
    }
    fn exp(self) -> Self {
        DualNum::exp(&self)
    }
    fn ln(self) -> Self {
        DualNum::ln(&self)
    }
    fn ln_1p(self) -> Self {
        DualNum::ln_1p(&self)
    }
    fn powi(self, n: i32) -> Self {
        DualNum::powi(&self, n)
    }
    fn exp_m1(self) -> Self {
        DualNum::exp_m1(&self)
    }
    fn sqrt(self) -> Self {
        DualNum::sqrt(&self)
    }
    fn lgamma(self) -> Self {
        use crate::special::{lgamma, polygamma};
        chain(self, lgamma(self.re), polygamma(0, self.re), polygamma(1, self.re))
    }
    fn polygamma(self, n: u32) -> Self {
        use crate::special::polygamma;
        chain(self, polygamma(n, self.re), polygamma(n + 1, self.re), polygamma(n + 2, self.re))
    }
    fn cos(self) -> Self {
        DualNum::cos(&self)
    }
    fn sin(self) -> Self {
        DualNum::sin(&self)
    }
    fn bessel_i(self, n: u32) -> Self {
        use crate::special::bessel_i;
        let (x, i0, i1) = (self.re, bessel_i(0, self.re), bessel_i(1, self.re));
        // I₀′ = I₁, I₁′ = I₀ − I₁/x
        let d1 = i0 - if x == 0.0 { 0.5 } else { i1 / x };
        match n {
            0 => chain(self, i0, i1, d1),
            _ => chain(self, i1, d1, i1 - if x == 0.0 { 0.0 } else { d1 / x - i1 / (x * x) }),
        }
    }
    fn log_bessel_i0(self) -> Self {
        let (x, r) = (self.re, crate::special::bessel_ratio(self.re));
        // (log I₀)′ = r = I₁/I₀, r′ = 1 − r/x − r²
        let r1 = 1.0 - if x == 0.0 { 0.5 } else { r / x } - r * r;
        chain(self, crate::special::log_bessel_i0(x), r, r1)
    }
    fn bessel_ratio(self) -> Self {
        let (x, r) = (self.re, crate::special::bessel_ratio(self.re));
        let r1 = 1.0 - if x == 0.0 { 0.5 } else { r / x } - r * r;
        let r2 = if x == 0.0 { 0.0 } else { -r1 / x + r / (x * x) } - 2.0 * r * r1;
        chain(self, r, r1, r2)
    }
}

pub type Mat<S> = DMatrix<S>;
pub type Env<S> = HashMap<Symbol, Mat<S>>;
/// (E[T], E[T Tᵀ])
pub type Moments<S> = (Mat<S>, Mat<S>);

fn softplus<S: Scalar>(u: S) -> S {
    // log(1 + eᵘ) without overflow or loss of tiny values
    if u.re() > 0.0 {
        u + (-u).exp().ln_1p()
    } else {
        u.exp().ln_1p()
    }
}

fn sigmoid<S: Scalar>(u: S) -> S {
    if u.re() >= 0.0 {
        S::of(1.0) / (S::of(1.0) + (-u).exp())
    } else {
        let e = u.exp();
        e / (S::of(1.0) + e)
    }
}

fn logsumexp<S: Scalar>(v: &Mat<S>) -> S {
    let m = v.iter().map(|x| x.re()).fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return S::of(m);
    }
    let s = v.iter().fold(S::of(0.0), |acc, &x| acc + (x - S::of(m)).exp());
    S::of(m) + s.ln()
}

fn zip<S: Scalar>(a: &Mat<S>, b: &Mat<S>, f: impl Fn(S, S) -> S) -> Result<Mat<S>, String> {
    if a.shape() == b.shape() {
        Ok(a.zip_map(b, f))
    } else if a.shape() == (1, 1) {
        let x = a[(0, 0)];
        Ok(b.map(|y| f(x, y)))
    } else if b.shape() == (1, 1) {
        let y = b[(0, 0)];
        Ok(a.map(|x| f(x, y)))
    } else {
        Err(format!("shapes {:?} and {:?} do not match", a.shape(), b.shape()))
    }
}

fn matmul<S: Scalar>(a: &Mat<S>, b: &Mat<S>) -> Result<Mat<S>, String> {
    if a.ncols() != b.nrows() && (a.shape() == (1, 1) || b.shape() == (1, 1)) {
        // a 1×1 factor (such as the zero 0) scales
        return zip(a, b, |x, y| x * y);
    }
    if a.ncols() != b.nrows() {
        return Err(format!("cannot multiply {:?} by {:?}", a.shape(), b.shape()));
    }
    Ok(Mat::from_fn(a.nrows(), b.ncols(), |i, j| (0..a.ncols()).fold(S::of(0.0), |acc, k| acc + a[(i, k)] * b[(k, j)])))
}

fn scalar<S: Scalar>(x: S) -> Mat<S> {
    Mat::from_element(1, 1, x)
}

fn column<S: Scalar>(m: &Mat<S>, what: &str) -> Result<(), String> {
    if m.ncols() == 1 {
        Ok(())
    } else {
        Err(format!("{what} needs a vector, got a {}×{} matrix", m.nrows(), m.ncols()))
    }
}

/// Evaluates terms of one model.
pub struct Evaluator<'m> {
    pub model: &'m Model,
}

impl<'m> Evaluator<'m> {
    pub fn new(model: &'m Model) -> Self {
        Evaluator { model }
    }

    /// The size of a named dimension, read off a variable that has it.
    fn dim_size<S: Scalar>(&self, n: Symbol, env: &Env<S>) -> Option<usize> {
        let d = crate::lang::Dim::Named(n);
        self.model.vars.values().find_map(|v| {
            let crate::lang::Shape::Mat(r, c) = v.shape else { return None };
            let x = env.get(&Symbol::from(v.name.as_str()))?;
            if r == d {
                Some(x.nrows())
            } else if c == d {
                Some(x.ncols())
            } else {
                None
            }
        })
    }

    pub fn eval<S: Scalar>(&self, term: &RecExpr<Node>, env: &Env<S>) -> Result<Mat<S>, String> {
        let root = Id::from(term.as_ref().len() - 1);
        self.at(term, root, env)
    }

    fn family(&self, term: &RecExpr<Node>, id: Id) -> Result<&'m Family, String> {
        match &term[id] {
            Node::Symbol(s) => self.model.family(*s).ok_or_else(|| format!("unknown family {s}")),
            n => Err(format!("expected a family, got {n}")),
        }
    }

    /// A(η) of a family, at η, in an environment that holds the model's values (known
    /// parameters of the family may be data). A scalar family at a vector η is a vector
    /// of independent members: its A is the sum.
    pub fn logpart<S: Scalar>(&self, f: &Family, eta: Mat<S>, env: &Env<S>) -> Result<S, String> {
        let mut env = env.clone();
        env.insert(Symbol::from(f.param.as_str()), eta);
        let a = self.eval(&f.logpart, &env)?;
        Ok(a.iter().fold(S::of(0.0), |acc, x| acc + *x))
    }

    /// T(x) and log h(x) (summed over independent members).
    fn stat_logh<S: Scalar>(&self, f: &Family, x: Mat<S>, env: &Env<S>) -> Result<(Mat<S>, S), String> {
        let mut e = env.clone();
        e.insert(Symbol::from(f.var.as_str()), x);
        let stat = self.eval(&f.stat, &e)?;
        let logh = self.eval(&f.base_measure(), &e)?.iter().fold(S::of(0.0), |acc, x| acc + *x);
        Ok((stat, logh))
    }

    /// log p(x | η) = ηᵀT(x) + log h(x) − A(η), with A given.
    pub fn log_density<S: Scalar>(&self, f: &Family, x: Mat<S>, eta: &Mat<S>, a: S, env: &Env<S>) -> Result<S, String> {
        let (stat, logh) = self.stat_logh(f, x, env)?;
        if stat.len() != eta.len() {
            return Err(format!("T(x) of {} and its parameter differ in shape", f.name));
        }
        let dot = stat.iter().zip(eta.iter()).fold(S::of(0.0), |acc, (s, t)| acc + *s * *t);
        Ok(dot + logh - a)
    }

    /// The values of x when the support is finite and its size follows from η:
    /// one-hot vectors as long as η, or 0 and 1.
    pub fn support(&self, f: &Family, n: usize) -> Option<Vec<Mat<f64>>> {
        match f.support {
            Domain::OneHot if f.var_shape == f.param_shape => {
                Some((0..n).map(|i| Mat::from_fn(n, 1, |r, _| (r == i) as u8 as f64)).collect())
            }
            Domain::OneHotOrZero if f.var_shape == f.param_shape => {
                Some((0..=n).map(|i| Mat::from_fn(n, 1, |r, _| (r == i) as u8 as f64)).collect())
            }
            Domain::Binary if f.var_shape == crate::lang::SCALAR && n == 1 => Some(vec![Mat::from_element(1, 1, 0.0), Mat::from_element(1, 1, 1.0)]),
            _ => None,
        }
    }

    /// The values of a scalar count x worth summing over at η: 0, 1, 2, … until the
    /// probabilities are negligible (at most 200 000 of them); `None` when more would be
    /// needed or the support is not a count.
    fn count_support(&self, f: &Family, eta: &Mat<f64>, env: &Env<f64>) -> Result<Option<usize>, String> {
        if f.support != Domain::Count || f.var_shape != crate::lang::SCALAR || eta.len() != 1 {
            return Ok(None);
        }
        let a = self.logpart(f, eta.clone(), env)?;
        let (mut total, mut peak) = (0.0f64, f64::NEG_INFINITY);
        for x in 0..200_000usize {
            let lp = self.log_density(f, Mat::from_element(1, 1, x as f64), eta, a, env)?;
            let p = if lp.is_nan() { 0.0 } else { lp.exp() };
            total += p;
            peak = peak.max(lp);
            // past the mode, stop once a term no longer counts
            if x > 10 && lp < peak && p <= 1e-18 * total {
                return Ok(Some(x + 1));
            }
        }
        Ok(None)
    }

    /// E[T] and E[T Tᵀ] by summing over a finite or count support, in the caller's numbers
    /// (so differentiable in η); a scalar family at a vector η is summed member by member.
    pub fn support_moments<S: Scalar>(&self, f: &Family, eta: &Mat<S>, env: &Env<S>) -> Result<Option<Moments<S>>, String> {
        let n = eta.nrows();
        if f.param_shape.is_scalar() && n > 1 {
            let mut mean = Mat::from_element(n, 1, S::of(0.0));
            let mut var = vec![];
            for i in 0..n {
                let Some((m, s)) = self.support_moments(f, &Mat::from_element(1, 1, eta[(i, 0)]), env)? else { return Ok(None) };
                mean[(i, 0)] = m[(0, 0)];
                var.push(s[(0, 0)] - m[(0, 0)] * m[(0, 0)]);
            }
            let second = Mat::from_fn(n, n, |i, j| mean[(i, 0)] * mean[(j, 0)] + if i == j { var[i] } else { S::of(0.0) });
            return Ok(Some((mean, second)));
        }
        let xs = match self.support(f, n) {
            Some(xs) => xs,
            None => {
                let real: Env<f64> = env.iter().map(|(k, v)| (*k, v.map(|x| x.re()))).collect();
                match self.count_support(f, &eta.map(|x| x.re()), &real)? {
                    Some(len) => (0..len).map(|x| Mat::from_element(1, 1, x as f64)).collect(),
                    None => return Ok(None),
                }
            }
        };
        let a = self.logpart(f, eta.clone(), env)?;
        let mut mean = Mat::from_element(n, 1, S::of(0.0));
        let mut second = Mat::from_element(n, n, S::of(0.0));
        for x in xs {
            let xv = x.map(S::of);
            let (stat, _) = self.stat_logh(f, xv.clone(), env)?;
            let lp = self.log_density(f, xv, eta, a, env)?;
            if lp.re().is_nan() || lp.re() == f64::NEG_INFINITY {
                continue;
            }
            let w = lp.exp();
            mean = zip(&mean, &stat.map(|s| s * w), |p, q| p + q)?;
            let tt = matmul(&stat, &stat.transpose())?;
            second = zip(&second, &tt.map(|s| s * w), |p, q| p + q)?;
        }
        Ok(Some((mean, second)))
    }

    /// E[T] and Cov[T] at η computed from the density itself, not from A's derivatives:
    /// sums over a finite or count support, numeric integration over a continuous scalar
    /// one (and over a 2-simplex, x = (u, 1 − u)). Also Σ p, which must be 1. `None` for
    /// supports it cannot integrate.
    pub fn density_moments(&self, f: &Family, eta: &Mat<f64>, env: &Env<f64>) -> Result<Option<(Mat<f64>, Mat<f64>, f64)>, String> {
        // (E[T], Cov[T], Σp)
        use crate::quadrature::{integrate_many, Interval};
        if let Some((m, second)) = self.support_moments(f, eta, env)? {
            let total = match self.support(f, eta.nrows()) {
                Some(_) => self.total_probability(f, eta, env)?.unwrap_or(1.0),
                None => 1.0,
            };
            let cov = &second - &m * m.transpose();
            return Ok(Some((m, cov, total)));
        }
        let n = eta.nrows();
        type Point = Box<dyn Fn(f64, f64) -> Mat<f64>>;
        let (over, point): (Interval, Point) = match (f.support, f.var_shape.is_scalar(), n) {
            (Domain::Real, true, _) => (Interval::Real, Box::new(|x, _| Mat::from_element(1, 1, x))),
            (Domain::Positive, true, _) => (Interval::Positive, Box::new(|x, _| Mat::from_element(1, 1, x))),
            (Domain::Unit, true, _) => (Interval::Unit, Box::new(|x, _| Mat::from_element(1, 1, x))),
            (Domain::Angle, true, _) => (Interval::Angle, Box::new(|x, _| Mat::from_element(1, 1, x))),
            (Domain::Simplex, false, 2) => (Interval::Unit, Box::new(|u, w| Mat::from_column_slice(2, 1, &[u, w]))),
            _ => return Ok(None),
        };
        let a = self.logpart(f, eta.clone(), env)?;
        let density = |x: f64, w: f64| -> (f64, Mat<f64>) {
            let xv = point(x, w);
            match (self.log_density(f, xv.clone(), eta, a, env), self.stat_logh(f, xv, env)) {
                (Ok(lp), Ok((t, _))) => (lp.exp(), t),
                _ => (f64::NAN, Mat::zeros(n, 1)),
            }
        };
        // a density unbounded at 1 (Beta with b < 1) cannot be integrated in x: 1 − x
        // below 1e-16 is not there to see
        if matches!(over, Interval::Unit) && f.var_shape.is_scalar() && density(1.0 - 1e-15, 1e-15).0 > 1e3 {
            return Ok(None);
        }
        // Σp, E[T] and E[T Tᵀ] in one pass
        let values = integrate_many(
            &|x, w| {
                let (p, t) = density(x, w);
                let mut v = vec![p];
                v.extend((0..n).map(|i| p * t[(i, 0)]));
                v.extend((0..n * n).map(|k| p * t[(k / n, 0)] * t[(k % n, 0)]));
                v
            },
            over,
        );
        let total = values[0];
        let mean = Mat::from_fn(n, 1, |i, _| values[1 + i]);
        let cov = Mat::from_fn(n, n, |i, j| values[1 + n + i * n + j] - mean[(i, 0)] * mean[(j, 0)]);
        Ok(Some((mean, cov, total)))
    }

    /// Σₓ h(x) exp(ηᵀT(x) − A(η)) over a finite support: 1 when A is the log-partition.
    pub fn total_probability(&self, f: &Family, eta: &Mat<f64>, env: &Env<f64>) -> Result<Option<f64>, String> {
        let Some(xs) = self.support(f, eta.nrows()) else { return Ok(None) };
        let a = self.logpart(f, eta.clone(), env)?;
        let mut total = 0.0;
        for x in xs {
            total += self.log_density(f, x, eta, a, env)?.exp();
        }
        Ok(Some(total))
    }

    /// E[T] and Cov[T] at η: the gradient and Hessian of A by hyper-dual numbers.
    /// For a matrix η, E[T] has η's shape and Cov[T] is over vec(η), entry by entry.
    pub fn moments(&self, f: &Family, eta: &Mat<f64>, env: &Env<f64>) -> Result<(Mat<f64>, Mat<f64>), String> {
        let (rows, cols) = eta.shape();
        let n = eta.len();
        let lifted: Env<HyperDual64> = env.iter().map(|(k, v)| (*k, v.map(HyperDual64::from))).collect();
        let mut g = Mat::zeros(rows, cols);
        let mut h = Mat::zeros(n, n);
        for i in 0..n {
            for j in i..n {
                let e = Mat::from_fn(rows, cols, |r, c| {
                    let k = r + c * rows;
                    HyperDual64::new(eta[k], (k == i) as u8 as f64, (k == j) as u8 as f64, 0.0)
                });
                let a = self.logpart(f, e, &lifted)?;
                g[i] = a.eps1;
                h[(i, j)] = a.eps1eps2;
                h[(j, i)] = a.eps1eps2;
            }
        }
        Ok((g, h))
    }

    /// E[T] = ∇A at a column η that carries derivative parts, carrying them too: with
    /// η = a + δ₁ε₁ + δ₂ε₂ + δ₁₂ε₁ε₂, E[T](η) = m + H δ₁ ε₁ + H δ₂ ε₂ + ((D_δ₂H) δ₁ + H δ₁₂) ε₁ε₂,
    /// m and H = Cov[T] from A's hyper-dual derivatives at a, D_δ₂H by central differences of
    /// H (Richardson-extrapolated: error of order t⁴). So a derivative of KL in its first
    /// argument sees E[T] move.
    fn mean_along<S: Scalar>(&self, f: &Family, eta: &Mat<S>, env: &Env<f64>) -> Result<Vec<S>, String> {
        let part = |k: usize| eta.map(|x| x.parts()[k]);
        let (a, d1, d2, d12) = (part(0), part(1), part(2), part(3));
        let (m, h) = self.moments(f, &a, env)?;
        let nonzero = |d: &Mat<f64>| d.iter().any(|x| *x != 0.0);
        let dh = if nonzero(&d1) && nonzero(&d2) {
            let cov = |t: f64| self.moments(f, &(&a + &d2 * t), env).map(|(_, c)| c);
            let slope = |t: f64| -> Result<Mat<f64>, String> { Ok((cov(t)? - cov(-t)?) / (2.0 * t)) };
            let t = 1e-4 / d2.amax();
            let (wide, narrow) = (slope(t)?, slope(t / 2.0)?);
            (narrow * 4.0 - wide) / 3.0
        } else {
            Mat::zeros(h.nrows(), h.ncols())
        };
        Ok((0..a.nrows()).map(|i| S::from_parts([m[(i, 0)], h.row(i).dot(&d1.transpose()), h.row(i).dot(&d2.transpose()), dh.row(i).dot(&d1.transpose()) + h.row(i).dot(&d12.transpose())])).collect())
    }

    /// KL(F(η₁) ‖ F(η₂)) = Σₓ p₁(x) (log p₁(x) − log p₂(x)), summed over a finite or count
    /// support; on other supports by the Bregman form A(η₂) − A(η₁) − (η₂ − η₁)ᵀ∇A(η₁), which
    /// holds for every exponential family, with ∇A(η₁) = E[T] carried along η₁ (`mean_along`).
    fn kl<S: Scalar>(&self, f: &Family, e1: &Mat<S>, e2: &Mat<S>, env: &Env<S>) -> Result<S, String> {
        let n = e1.nrows();
        if f.param_shape.is_scalar() && n > 1 {
            let mut total = S::of(0.0);
            for i in 0..n {
                total = total + self.kl(f, &Mat::from_element(1, 1, e1[(i, 0)]), &Mat::from_element(1, 1, e2[(i, 0)]), env)?;
            }
            return Ok(total);
        }
        let real: Env<f64> = env.iter().map(|(k, v)| (*k, v.map(|x| x.re()))).collect();
        let xs = match self.support(f, n) {
            Some(xs) => Some(xs),
            None => self.count_support(f, &e1.map(|x| x.re()), &real)?.map(|len| (0..len).map(|x| Mat::from_element(1, 1, x as f64)).collect()),
        };
        let (a1, a2) = (self.logpart(f, e1.clone(), env)?, self.logpart(f, e2.clone(), env)?);
        match xs {
            Some(xs) => {
                let mut total = S::of(0.0);
                for x in xs {
                    let xv = x.map(S::of);
                    let l1 = self.log_density(f, xv.clone(), e1, a1, env)?;
                    if l1.re().is_nan() || l1.re() == f64::NEG_INFINITY {
                        continue;
                    }
                    let l2 = self.log_density(f, xv, e2, a2, env)?;
                    total = total + l1.exp() * (l1 - l2);
                }
                Ok(total)
            }
            None => {
                let m = self.mean_along(f, e1, &real)?;
                let dot = (0..n).fold(S::of(0.0), |acc, i| acc + (e2[(i, 0)] - e1[(i, 0)]) * m[i]);
                Ok(a2 - a1 - dot)
            }
        }
    }

    fn at<S: Scalar>(&self, t: &RecExpr<Node>, id: Id, env: &Env<S>) -> Result<Mat<S>, String> {
        let ev = |c: Id| self.at(t, c, env);
        let one = S::of(1.0);
        Ok(match &t[id] {
            Node::Num(r) => scalar(S::of(*r.numer() as f64 / *r.denom() as f64)),
            Node::Symbol(s) => match env.get(s) {
                Some(v) => v.clone(),
                // a named dimension is its size
                None if self.model.dims.iter().any(|d| d == s.as_str()) => {
                    scalar(S::of(self.dim_size(*s, env).ok_or_else(|| format!("no variable tells the size of `{s}`"))? as f64))
                }
                None => scalar(S::of(crate::lang::constant_symbol(*s).ok_or_else(|| format!("no value for `{s}`"))?)),
            },
            Node::Add([a, b]) => zip(&ev(*a)?, &ev(*b)?, |x, y| x + y)?,
            Node::Sub([a, b]) => {
                // 1 − σ(u) is σ(−u): no cancellation when σ(u) is near 1
                if let (Node::Num(r), Node::Sigmoid(u)) = (&t[*a], &t[*b]) {
                    if *r == 1.into() {
                        return Ok(ev(*u)?.map(|x| sigmoid(-x)));
                    }
                }
                zip(&ev(*a)?, &ev(*b)?, |x, y| x - y)?
            }
            Node::Mul([a, b]) => zip(&ev(*a)?, &ev(*b)?, |x, y| x * y)?,
            Node::Div([a, b]) => {
                // I₁(u)/I₀(u) without overflow
                if let (Node::BesselI1(u), Node::BesselI0(w)) = (&t[*a], &t[*b]) {
                    if same(t, *u, *w) {
                        return Ok(ev(*u)?.map(|x| x.bessel_ratio()));
                    }
                }
                // exp(v) / 1ᵀexp(v) is softmax(v): evaluate it stably.
                if let (Node::Exp(v), Node::Sum(s)) = (&t[*a], &t[*b]) {
                    if let Node::Exp(w) = &t[*s] {
                        if same(t, *v, *w) {
                            return softmax(&ev(*v)?);
                        }
                    }
                }
                zip(&ev(*a)?, &ev(*b)?, |x, y| x / y)?
            }
            Node::Pow([a, b]) => {
                let (x, p) = (ev(*a)?, ev(*b)?);
                if p.shape() != (1, 1) {
                    return Err("the exponent must be a scalar".into());
                }
                let p = p[(0, 0)];
                let pr = p.re();
                // a literal whole exponent: exact powers (also of negative bases)
                if matches!(&t[*b], Node::Num(r) if r.is_integer() && r.numer().abs() < 1_000_000) {
                    x.map(|v| v.powi(pr as i32))
                } else {
                    x.map(|v| (v.ln() * p).exp())
                }
            }
            Node::Neg(a) => ev(*a)?.map(|x| -x),
            Node::MatMul([a, b]) => matmul(&ev(*a)?, &ev(*b)?)?,
            Node::Transpose(a) => ev(*a)?.transpose(),
            Node::Dot([a, b]) => {
                let (x, y) = (ev(*a)?, ev(*b)?);
                if x.shape() != y.shape() {
                    return Err("dot of vectors of different lengths".into());
                }
                scalar(x.iter().zip(y.iter()).fold(S::of(0.0), |acc, (p, q)| acc + *p * *q))
            }
            Node::Outer([a, b]) => {
                let (x, y) = (ev(*a)?, ev(*b)?);
                column(&x, "outer")?;
                column(&y, "outer")?;
                Mat::from_fn(x.nrows(), y.nrows(), |i, j| x[(i, 0)] * y[(j, 0)])
            }
            Node::Sum(a) => {
                let x = ev(*a)?;
                Mat::from_fn(1, x.ncols(), |_, j| (0..x.nrows()).fold(S::of(0.0), |acc, i| acc + x[(i, j)]))
            }
            Node::Diag(a) => {
                let x = ev(*a)?;
                column(&x, "diag")?;
                Mat::from_fn(x.nrows(), x.nrows(), |i, j| if i == j { x[(i, 0)] } else { S::of(0.0) })
            }
            Node::Exp(a) => ev(*a)?.map(|x| x.exp()),
            Node::Log(a) => self.log(t, *a, env)?,
            Node::Sigmoid(a) => ev(*a)?.map(sigmoid),
            Node::Lgamma(a) => ev(*a)?.map(|x| x.lgamma()),
            Node::Lmvgamma([a, m]) => {
                // log Γ_p(a) = p(p − 1)/4 log π + Σⱼ log Γ(a + (1 − j)/2)
                let (a, p) = (ev(*a)?[(0, 0)], ev(*m)?.nrows());
                // defined for a > (p − 1)/2
                if a.re() <= (p as f64 - 1.0) / 2.0 {
                    return Ok(scalar(S::of(f64::NAN)));
                }
                let c = (p * (p.saturating_sub(1))) as f64 / 4.0 * std::f64::consts::PI.ln();
                scalar((1..=p).fold(S::of(c), |acc, j| acc + (a + S::of((1.0 - j as f64) / 2.0)).lgamma()))
            }
            Node::Polygamma([n, a]) => {
                let order = ev(*n)?;
                let k = order[(0, 0)].re();
                if order.shape() != (1, 1) || k < 0.0 || k.fract() != 0.0 || k > 30.0 {
                    return Err(format!("the order of polygamma must be a whole number from 0 to 30, got {k}"));
                }
                ev(*a)?.map(|x| x.polygamma(k as u32))
            }
            Node::Log1p(a) => ev(*a)?.map(|x| x.ln_1p()),
            Node::Expm1(a) => ev(*a)?.map(|x| x.exp_m1()),
            Node::Sqrt(a) => ev(*a)?.map(|x| x.sqrt()),
            Node::Abs(a) => ev(*a)?.map(|x| x.abs()),
            Node::Sign(a) => ev(*a)?.map(|x| x.sign()),
            Node::Step(a) => ev(*a)?.map(|x| S::of(if x.re() >= 0.0 { 1.0 } else { 0.0 })),
            Node::Cos(a) => ev(*a)?.map(|x| x.cos()),
            Node::Sin(a) => ev(*a)?.map(|x| x.sin()),
            Node::BesselI0(a) => ev(*a)?.map(|x| x.bessel_i(0)),
            Node::BesselI1(a) => ev(*a)?.map(|x| x.bessel_i(1)),
            Node::Softmax(a) => softmax(&ev(*a)?)?,
            Node::LogSumExp(a) => {
                let x = ev(*a)?;
                column(&x, "logsumexp")?;
                scalar(logsumexp(&x))
            }
            Node::Vector(items) => {
                let rows: Vec<Mat<S>> = items.iter().map(|c| ev(*c)).collect::<Result<_, _>>()?;
                let cols = rows[0].ncols();
                if rows.iter().any(|r| r.nrows() != 1 || r.ncols() != cols) {
                    return Err("the entries of [..] must be scalars or rows of one length".into());
                }
                Mat::from_fn(rows.len(), cols, |i, j| rows[i][(0, j)])
            }
            Node::At([v, i]) => {
                let (m, k) = (ev(*v)?, ev(*i)?[(0, 0)].re());
                if k.fract() != 0.0 || k < 1.0 || k as usize > m.nrows() {
                    return Err(format!("index {k} is outside 1..{}", m.nrows()));
                }
                m.rows(k as usize - 1, 1).into_owned()
            }
            Node::Vec(a) => {
                let m = ev(*a)?;
                Mat::from_column_slice(m.len(), 1, m.as_slice())
            }
            Node::Kron([a, b]) => {
                let (a, b) = (ev(*a)?, ev(*b)?);
                let (p, q) = b.shape();
                Mat::from_fn(a.nrows() * p, a.ncols() * q, |i, j| a[(i / p, j / q)] * b[(i % p, j % q)])
            }
            Node::Commute(a) => {
                // K[j + c i, i + r j] = 1: vec(M)[i + r j] = M[i, j] = vec(Mᵀ)[j + c i]
                let (r, c) = ev(*a)?.shape();
                let mut k = Mat::from_element(r * c, r * c, S::of(0.0));
                for i in 0..r {
                    for j in 0..c {
                        k[(j + c * i, i + r * j)] = one;
                    }
                }
                k
            }
            Node::Trace(a) => {
                let m = ev(*a)?;
                if m.nrows() != m.ncols() {
                    return Err(format!("the trace of a {}×{} matrix", m.nrows(), m.ncols()));
                }
                scalar((0..m.nrows()).fold(S::of(0.0), |acc, i| acc + m[(i, i)]))
            }
            Node::SumOver([i, n, body]) => {
                let (Node::Symbol(i), Node::Symbol(n)) = (&t[*i], &t[*n]) else { return Err("a sum needs an index and a dimension".into()) };
                let size = self.dim_size(*n, env).ok_or_else(|| format!("no variable tells the size of `{n}`"))?;
                let mut inner = env.clone();
                let mut total: Option<Mat<S>> = None;
                for k in 1..=size {
                    inner.insert(*i, scalar(S::of(k as f64)));
                    let v = self.at(t, *body, &inner)?;
                    total = Some(match total {
                        None => v,
                        Some(acc) => zip(&acc, &v, |x, y| x + y)?,
                    });
                }
                total.unwrap_or_else(|| scalar(S::of(0.0)))
            }
            Node::Inv(a) => inverse(&ev(*a)?)?.0,
            Node::LogDet(a) => scalar(inverse(&ev(*a)?)?.1),
            Node::Ones(a) => Mat::from_element(ev(*a)?.nrows(), 1, one),
            Node::Eye(a) => {
                let n = ev(*a)?.nrows();
                Mat::from_fn(n, n, |i, j| if i == j { one } else { S::of(0.0) })
            }
            Node::Jac([f, x]) => self.jacobian(t, *f, *x, env)?,
            Node::Expect([q, x, body]) => self.expect(t, *q, *x, *body, env)?,
            Node::LogP([f, x, theta]) => {
                let fam = self.family(t, *f)?;
                let (xv, tv) = (ev(*x)?, ev(*theta)?);
                let a = self.logpart(fam, tv.clone(), env)?;
                scalar(self.log_density(fam, xv, &tv, a, env)?)
            }
            Node::LogPart([f, theta]) => {
                let fam = self.family(t, *f)?;
                scalar(self.logpart(fam, ev(*theta)?, env)?)
            }
            Node::Kl([f, a, b]) => {
                let fam = self.family(t, *f)?;
                scalar(self.kl(fam, &ev(*a)?, &ev(*b)?, env)?)
            }
            Node::Mean([f, theta]) | Node::Cov([f, theta]) | Node::Second([f, theta]) => {
                let fam = self.family(t, *f)?;
                let eta = ev(*theta)?;
                let which = match &t[id] {
                    Node::Mean(_) => 0,
                    Node::Cov(_) => 1,
                    _ => 2,
                };
                match self.support_moments(fam, &eta, env)? {
                    // a finite or count support: expectations as sums, differentiable in η
                    Some((m, second)) => match which {
                        0 => m,
                        2 => second,
                        _ => {
                            let mm = matmul(&m, &m.transpose())?;
                            zip(&second, &mm, |a, b| a - b)?
                        }
                    },
                    // otherwise the derivatives of A (by hyper-dual numbers), carried to the
                    // caller's numbers by the chain rule through η, with central
                    // differences for the orders A's second derivatives do not reach
                    None => {
                        let real: Env<f64> = env.iter().map(|(k, v)| (*k, v.map(|x| x.re()))).collect();
                        let part = |k: usize| eta.map(|x| x.parts()[k]);
                        let (e0, e1, e2, e12) = (part(0), part(1), part(2), part(3));
                        let at = |e: &Mat<f64>| -> Result<Mat<f64>, String> {
                            let (m, c) = self.moments(fam, e, &real)?;
                            Ok(match which {
                                0 => m,
                                1 => c,
                                _ => &c + &m * m.transpose(),
                            })
                        };
                        let v = at(&e0)?;
                        // the directional derivative of the quantity along d
                        let along = |d: &Mat<f64>| -> Result<Mat<f64>, String> {
                            if d.iter().all(|x| *x == 0.0) {
                                return Ok(Mat::zeros(v.nrows(), v.ncols()));
                            }
                            if which == 0 {
                                // ∂E[T]/∂η = Cov[T], exactly (over vec(η) for a matrix η)
                                let dv = self.moments(fam, &e0, &real)?.1 * Mat::from_column_slice(d.len(), 1, d.as_slice());
                                return Ok(Mat::from_column_slice(d.nrows(), d.ncols(), dv.as_slice()));
                            }
                            let h = 1e-5 * e0.iter().fold(1.0f64, |m, x| m.max(x.abs())) / d.iter().fold(1e-300f64, |m, x| m.max(x.abs()));
                            Ok((at(&(&e0 + d * h))? - at(&(&e0 - d * h))?) / (2.0 * h))
                        };
                        let (d1, d2, d12) = (along(&e1)?, along(&e2)?, along(&e12)?);
                        // the second-order term: the change of the derivative along e1 as η moves along e2
                        let cross = if e1.iter().all(|x| *x == 0.0) || e2.iter().all(|x| *x == 0.0) {
                            Mat::zeros(v.nrows(), v.ncols())
                        } else {
                            let h = 1e-4 * e0.iter().fold(1.0f64, |m, x| m.max(x.abs())) / e2.iter().fold(1e-300f64, |m, x| m.max(x.abs()));
                            let shifted = |s: f64| -> Result<Mat<f64>, String> {
                                let e = &e0 + &e2 * s;
                                if which == 0 {
                                    let dv = self.moments(fam, &e, &real)?.1 * Mat::from_column_slice(e1.len(), 1, e1.as_slice());
                                    Ok(Mat::from_column_slice(e1.nrows(), e1.ncols(), dv.as_slice()))
                                } else {
                                    let h1 = 1e-5 * e.iter().fold(1.0f64, |m, x| m.max(x.abs())) / e1.iter().fold(1e-300f64, |m, x| m.max(x.abs()));
                                    Ok((at(&(&e + &e1 * h1))? - at(&(&e - &e1 * h1))?) / (2.0 * h1))
                                }
                            };
                            (shifted(h)? - shifted(-h)?) / (2.0 * h)
                        };
                        Mat::from_fn(v.nrows(), v.ncols(), |i, j| S::from_parts([v[(i, j)], d1[(i, j)], d2[(i, j)], d12[(i, j)] + cross[(i, j)]]))
                    }
                }
            }
        })
    }

    /// log, with the stable forms of log(1 + eᵘ), log(1 + u), log 1ᵀexp(v), log σ and log softmax.
    fn log<S: Scalar>(&self, t: &RecExpr<Node>, a: Id, env: &Env<S>) -> Result<Mat<S>, String> {
        let ev = |c: Id| self.at(t, c, env);
        let is_one = |c: Id| matches!(&t[c], Node::Num(r) if *r == 1.into());
        match &t[a] {
            Node::Add([x, y]) if is_one(*x) || is_one(*y) => {
                let u = if is_one(*x) { *y } else { *x };
                if let Node::Exp(v) = &t[u] {
                    return Ok(ev(*v)?.map(softplus));
                }
                Ok(ev(u)?.map(|x| x.ln_1p()))
            }
            Node::Sum(s) => {
                if let Node::Exp(v) = &t[*s] {
                    let x = ev(*v)?;
                    column(&x, "log 1ᵀexp")?;
                    return Ok(scalar(logsumexp(&x)));
                }
                Ok(ev(a)?.map(|x| x.ln()))
            }
            Node::Sigmoid(u) => Ok(ev(*u)?.map(|x| -softplus(-x))),
            Node::BesselI0(u) => Ok(ev(*u)?.map(|x| x.log_bessel_i0())),
            Node::Softmax(v) => {
                let x = ev(*v)?;
                column(&x, "softmax")?;
                let l = logsumexp(&x);
                Ok(x.map(|y| y - l))
            }
            _ => Ok(ev(a)?.map(|x| x.ln())),
        }
    }

    fn expect<S: Scalar>(&self, t: &RecExpr<Node>, q: Id, x: Id, body: Id, env: &Env<S>) -> Result<Mat<S>, String> {
        let Node::Symbol(xs) = &t[x] else { return Err("an expectation must be over a variable".into()) };
        let v = self.model.var(*xs).ok_or_else(|| format!("unknown variable {xs}"))?;
        let w = self.at(t, q, env)?;
        let mut env2 = env.clone();
        let mut total: Option<Mat<S>> = None;
        let mut add = |weight: S, value: Mat<S>| {
            let term = value.map(|y| weight * y);
            total = Some(match total.take() {
                Some(acc) => acc.zip_map(&term, |a, b| a + b),
                None => term,
            });
        };
        match v.domain {
            Domain::OneHot => {
                let k = w.nrows();
                for i in 0..k {
                    env2.insert(*xs, Mat::from_fn(k, 1, |r, _| S::of((r == i) as u8 as f64)));
                    add(w[(i, 0)], self.at(t, body, &env2)?);
                }
            }
            Domain::Binary => {
                let p = w[(0, 0)];
                env2.insert(*xs, scalar(S::of(1.0)));
                add(p, self.at(t, body, &env2)?);
                env2.insert(*xs, scalar(S::of(0.0)));
                add(S::of(1.0) - p, self.at(t, body, &env2)?);
            }
            d => return Err(format!("expectations over {} variables are not evaluated yet", d.name())),
        }
        total.ok_or_else(|| "an empty expectation".into())
    }

    /// A derivative the rules left in place, computed with dual numbers: a Jacobian of a
    /// term without derivatives, or the Hessian D(D(g, x)ᵀ, x) of a scalar g.
    fn jacobian<S: Scalar>(&self, t: &RecExpr<Node>, f: Id, x: Id, env: &Env<S>) -> Result<Mat<S>, String> {
        let Node::Symbol(xs) = &t[x] else { return Err("a derivative must be with respect to a variable".into()) };
        let inner = match &t[f] {
            Node::Transpose(c) => Some(*c),
            Node::Jac(_) => Some(f),
            _ => None,
        };
        if let Some(c) = inner {
            if let Node::Jac([g, x2]) = &t[c] {
                if t[*x2] == t[x] && !has_jac(t, *g) {
                    let base: Env<f64> = env.iter().map(|(k, v)| (*k, v.map(|y| y.re()))).collect();
                    let g = crate::derive::subterm(t, *g);
                    let (_, _, h) = crate::check::reference(self, &g, *xs, &base, true)?;
                    return Ok(h.map(S::of));
                }
            }
        }
        let base: Env<f64> = env.iter().map(|(k, v)| (*k, v.map(|y| y.re()))).collect();
        if has_jac(t, f) {
            // a derivative of a derivative: central differences of the inner one (which
            // is computed exactly, by dual numbers)
            let x0 = base.get(xs).ok_or_else(|| format!("no value for `{xs}`"))?.clone();
            let h = 1e-5 * x0.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let mut cols: Vec<Mat<f64>> = vec![];
            for j in 0..x0.len() {
                let step = |s: f64| -> Result<Mat<f64>, String> {
                    let mut e = base.clone();
                    let mut x = x0.clone();
                    x[j] += s;
                    e.insert(*xs, x);
                    self.at(t, f, &e)
                };
                let (up, down) = (step(h)?, step(-h)?);
                cols.push((up - down) / (2.0 * h));
            }
            let m = cols.first().map(|c| c.len()).unwrap_or(0);
            return Ok(Mat::from_fn(m, x0.len(), |i, j| S::of(cols[j][i])));
        }
        let x0 = base.get(xs).ok_or_else(|| format!("no value for `{xs}`"))?.clone();
        let n = x0.len();
        let mut cols: Vec<Mat<f64>> = vec![];
        for j in 0..n {
            let mut e: Env<HyperDual64> = base.iter().map(|(k, v)| (*k, v.map(HyperDual64::from))).collect();
            e.insert(*xs, Mat::from_fn(x0.nrows(), x0.ncols(), |r, c| {
                let idx = c * x0.nrows() + r;
                HyperDual64::new(x0[(r, c)], (idx == j) as u8 as f64, 0.0, 0.0)
            }));
            let y = self.at(t, f, &e)?;
            cols.push(y.map(|v| v.eps1));
        }
        let m = cols.first().map(|c| c.len()).unwrap_or(0);
        Ok(Mat::from_fn(m, n, |i, j| S::of(cols[j][i])))
    }
}

fn softmax<S: Scalar>(x: &Mat<S>) -> Result<Mat<S>, String> {
    column(x, "softmax")?;
    // exp(x − max) / Σ exp(x − max): no overflow, and no rounding of a large log Σ exp
    let m = x.iter().map(|v| v.re()).fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        let l = logsumexp(x);
        return Ok(x.map(|y| (y - l).exp()));
    }
    let e = x.map(|y| (y - S::of(m)).exp());
    let total = e.iter().fold(S::of(0.0), |acc, v| acc + *v);
    Ok(e.map(|v| v / total))
}

/// A⁻¹ and log |det A| by Gauss–Jordan elimination with partial pivoting, in the caller's
/// numbers (so differentiable).
fn inverse<S: Scalar>(a: &Mat<S>) -> Result<(Mat<S>, S), String> {
    let n = a.nrows();
    if a.ncols() != n {
        return Err("an inverse or determinant needs a square matrix".into());
    }
    let mut m = a.clone();
    let mut inv = Mat::from_fn(n, n, |i, j| S::of((i == j) as u8 as f64));
    let mut logdet = S::of(0.0);
    // the determinant's sign: log det is undefined (NaN) where det < 0
    let mut negative = false;
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| m[(i, c)].re().abs().total_cmp(&m[(j, c)].re().abs())).unwrap();
        if m[(p, c)].re() == 0.0 {
            return Err("the matrix is singular".into());
        }
        negative ^= p != c;
        m.swap_rows(p, c);
        inv.swap_rows(p, c);
        let pivot = m[(c, c)];
        negative ^= pivot.re() < 0.0;
        logdet = logdet + pivot.abs().ln();
        for j in 0..n {
            m[(c, j)] = m[(c, j)] / pivot;
            inv[(c, j)] = inv[(c, j)] / pivot;
        }
        for i in (0..n).filter(|&i| i != c) {
            let f = m[(i, c)];
            for j in 0..n {
                m[(i, j)] = m[(i, j)] - f * m[(c, j)];
                inv[(i, j)] = inv[(i, j)] - f * inv[(c, j)];
            }
        }
    }
    Ok((inv, if negative { S::of(f64::NAN) } else { logdet }))
}

fn has_jac(t: &RecExpr<Node>, id: Id) -> bool {
    matches!(t[id], Node::Jac(_)) || t[id].children().iter().any(|&c| has_jac(t, c))
}

/// Are two subterms the same?
fn same(t: &RecExpr<Node>, a: Id, b: Id) -> bool {
    a == b || crate::derive::subterm(t, a) == crate::derive::subterm(t, b)
}
