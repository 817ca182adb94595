//! The numeric check: at random points of the declared domains, every derived formula is
//! compared with derivatives of the loss computed by hyper-dual numbers straight from the
//! model — independent of the rules.

use crate::derive::{Definition, Derivation};
use crate::eval::{Env, Evaluator, Mat};
use crate::lang::{Dim, Node, Shape};
use crate::model::{Domain, Model, Role};
use egg::{RecExpr, Symbol};
use num_dual::HyperDual64;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub points: usize,
    pub seed: u64,
    /// sizes drawn for each named dimension, inclusive
    pub sizes: (usize, usize),
    /// largest accepted relative error
    pub tolerance: f64,
    /// also check each result's index form (`--notation index`)
    pub index: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { points: 20, seed: 1, sizes: (2, 7), tolerance: 1e-8, index: false }
    }
}

/// How one formula fared.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// "J", "grad J", "hess J", or a definition such as "p = softmax(θ)"
    pub quantity: String,
    pub max_rel_error: f64,
    pub passed: bool,
    /// points where it was compared
    pub points: usize,
    /// the point where the error was largest (`name = value; …`), when it failed
    pub worst: Option<String>,
    /// an evaluation error, if the formula could not be evaluated
    pub error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct CheckReport {
    /// points compared
    pub points: usize,
    /// points skipped because the loss was not finite there
    pub undefined: usize,
    /// why the check did not run, when a variable is too large for it
    pub skipped: Option<String>,
    /// the check's time guard stopped it after this many seconds (fewer points than asked)
    pub stopped: Option<f64>,
    /// dimension → (smallest, largest) size used
    pub sizes: BTreeMap<String, (usize, usize)>,
    pub comparisons: Vec<Comparison>,
    /// eigenvalues of each derived Hessian at the points
    pub spectra: Vec<Spectrum>,
    pub passed: bool,
}

/// What the eigenvalues of a derived Hessian showed at the check points.
#[derive(Clone, Debug)]
pub struct Spectrum {
    /// "hess J"
    pub quantity: String,
    pub points: usize,
    /// the smallest eigenvalue over the largest |eigenvalue|, least over the points
    pub min_rel_eigenvalue: f64,
    /// the fewest and most eigenvalues that are zero (|λ| ≤ 1e-10 · max(1, max|λ|))
    pub null_dims: (usize, usize),
    /// H 𝟙 = 0 at every point
    pub ones_null: bool,
}

impl Spectrum {
    /// ⪰ 0 at every point, up to rounding
    pub fn psd(&self) -> bool {
        self.points > 0 && self.min_rel_eigenvalue >= -1e-10
    }

    fn add(&mut self, h: &Mat<f64>) {
        if h.nrows() != h.ncols() || h.nrows() < 2 || h.iter().any(|x| !x.is_finite()) {
            return;
        }
        let sym = (h + h.transpose()) * 0.5;
        let eig = nalgebra::SymmetricEigen::new(sym).eigenvalues;
        let scale = eig.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let min = eig.iter().fold(f64::INFINITY, |m, x| m.min(*x));
        let zero = 1e-10 * scale.max(1.0);
        let null = eig.iter().filter(|x| x.abs() <= zero).count();
        let ones = (h * Mat::from_element(h.ncols(), 1, 1.0)).iter().all(|x| x.abs() <= zero);
        if self.points == 0 {
            self.null_dims = (null, null);
        }
        self.points += 1;
        self.min_rel_eigenvalue = self.min_rel_eigenvalue.min(if scale > 0.0 { min / scale } else { 0.0 });
        self.null_dims = (self.null_dims.0.min(null), self.null_dims.1.max(null));
        self.ones_null &= ones;
    }
}

/// Error of `a` against the reference `b` in the max norm, relative to the larger of
/// the two values and 1 (so rounding noise around an exact zero does not count).
/// `None` when the reference is not finite: the point is outside the loss's domain.
pub fn rel_error(a: &Mat<f64>, b: &Mat<f64>) -> Option<f64> {
    if b.iter().any(|x| !x.is_finite()) {
        return None;
    }
    if a.shape() != b.shape() || a.iter().any(|x| !x.is_finite()) {
        return Some(f64::INFINITY);
    }
    let diff = a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = a.iter().chain(b.iter()).map(|x| x.abs()).fold(1.0, f64::max);
    Some(diff / scale)
}

/// The part of a derivative in a symmetric n×n matrix that symmetric directions see: for
/// a gradient G, (G + Gᵀ)/2; for a Hessian H over vec, P H P with P vec(E) = vec((E + Eᵀ)/2).
pub fn symmetric_part(m: &Mat<f64>, n: usize, order: usize) -> Mat<f64> {
    if order == 1 && m.shape() == (n, n) {
        return (m + m.transpose()) / 2.0;
    }
    if order != 2 || m.shape() != (n * n, n * n) {
        return m.clone();
    }
    let p = Mat::from_fn(n * n, n * n, |a, b| {
        let (i, j) = (a % n, a / n);
        (if b == a { 0.5 } else { 0.0 }) + (if b == j + n * i { 0.5 } else { 0.0 })
    });
    &p * m * &p
}

/// Largest number of entries of a differentiated variable the dense check handles.
pub const MAX_CHECKED_ENTRIES: usize = 400;

/// Largest number of entries of any variable the check samples (8 MB of numbers).
pub const MAX_HELD_ENTRIES: usize = 1_000_000;

fn dim_size(d: Dim, sizes: &BTreeMap<String, usize>) -> usize {
    match d {
        Dim::One => 1,
        Dim::Named(s) => s.as_str().parse().unwrap_or_else(|_| sizes.get(s.as_str()).copied().unwrap_or(1)),
    }
}

/// A random value of a shape in a domain.
fn sample(rng: &mut ChaCha8Rng, rows: usize, cols: usize, domain: Domain) -> Mat<f64> {
    match domain {
        Domain::Real => Mat::from_fn(rows, cols, |_, _| rng.random_range(-2.0..2.0)),
        Domain::Positive => Mat::from_fn(rows, cols, |_, _| rng.random_range(0.2..3.0)),
        Domain::Negative => Mat::from_fn(rows, cols, |_, _| -rng.random_range(0.2..3.0)),
        Domain::Angle => Mat::from_fn(rows, cols, |_, _| rng.random_range(-std::f64::consts::PI..std::f64::consts::PI)),
        // A Aᵀ / n + I/2: symmetric, eigenvalues at least 1/2
        Domain::Spd => {
            let a = Mat::from_fn(rows, cols, |_, _| rng.random_range(-1.5..1.5));
            &a * a.transpose() / rows as f64 + Mat::identity(rows, cols) * 0.5
        }
        Domain::Unit => Mat::from_fn(rows, cols, |_, _| rng.random_range(0.0..1.0)),
        Domain::Binary => Mat::from_fn(rows, cols, |_, _| rng.random_range(0..2) as f64),
        Domain::Count => Mat::from_fn(rows, cols, |_, _| rng.random_range(0..9) as f64),
        Domain::Simplex => {
            let w = Mat::from_fn(rows, cols, |_, _| -rng.random_range(1e-9f64..1.0).ln());
            let s = w.sum();
            w / s
        }
        Domain::OneHot => {
            let i = rng.random_range(0..rows);
            Mat::from_fn(rows, cols, |r, _| (r == i) as u8 as f64)
        }
        // one-hot or all zero (the last of k + 1 categories)
        Domain::OneHotOrZero => {
            let i = rng.random_range(0..=rows);
            Mat::from_fn(rows, cols, |r, _| (r == i) as u8 as f64)
        }
    }
}

/// A random point: sizes for the dimensions and values for every variable.
pub fn random_point(model: &Model, rng: &mut ChaCha8Rng, opts: &CheckOptions) -> (BTreeMap<String, usize>, Env<f64>) {
    let sizes = random_sizes(model, rng, opts);
    let env = sample_at(model, rng, &sizes);
    (sizes, env)
}

/// Sizes for the named dimensions (a number names a fixed size).
fn random_sizes(model: &Model, rng: &mut ChaCha8Rng, opts: &CheckOptions) -> BTreeMap<String, usize> {
    model.dims.iter().map(|d| (d.clone(), d.parse().unwrap_or_else(|_| rng.random_range(opts.sizes.0..=opts.sizes.1)))).collect()
}

/// The first variable too large to check at these sizes: a parameter with more entries than
/// the dense check handles, or any variable too large to hold.
fn too_large(model: &Model, sizes: &BTreeMap<String, usize>) -> Option<String> {
    model.vars.values().find_map(|v| {
        let Shape::Mat(r, c) = v.shape else { return None };
        let n = dim_size(r, sizes).saturating_mul(dim_size(c, sizes));
        if v.role == Role::Param && n > MAX_CHECKED_ENTRIES {
            Some(format!("`{}` has {n} entries; the dense check handles up to {MAX_CHECKED_ENTRIES} (use a named dimension)", v.name))
        } else if n > MAX_HELD_ENTRIES {
            Some(format!("`{}` has {n} entries; the check holds variables of up to {MAX_HELD_ENTRIES}", v.name))
        } else {
            None
        }
    })
}

/// Values for every variable at these sizes.
fn sample_at(model: &Model, rng: &mut ChaCha8Rng, sizes: &BTreeMap<String, usize>) -> Env<f64> {
    let mut env = Env::new();
    for v in model.vars.values() {
        let Shape::Mat(r, c) = v.shape else { continue };
        env.insert(Symbol::from(v.name.as_str()), sample(rng, dim_size(r, sizes), dim_size(c, sizes), v.domain));
    }
    env
}

/// Value, gradient and Hessian of a loss in one parameter, by hyper-dual numbers.
pub fn reference(ev: &Evaluator, loss: &RecExpr<Node>, wrt: Symbol, env: &Env<f64>, hessian: bool) -> Result<(f64, Mat<f64>, Mat<f64>), String> {
    let x0 = env.get(&wrt).ok_or_else(|| format!("no value for `{wrt}`"))?;
    // a matrix is differentiated entry by entry in column-major order (vec)
    let (n, rows, cols) = (x0.len(), x0.nrows(), x0.ncols());
    let lifted: Env<HyperDual64> = env.iter().map(|(k, v)| (*k, v.map(HyperDual64::from))).collect();
    let mut value = f64::NAN;
    let mut g = Mat::zeros(n, 1);
    let mut h = Mat::zeros(n, n);
    for i in 0..n {
        for j in i..if hessian { n } else { i + 1 } {
            let mut e = lifted.clone();
            e.insert(wrt, Mat::from_fn(rows, cols, |r, c| {
                let k = r + c * rows;
                HyperDual64::new(x0[k], (k == i) as u8 as f64, (k == j) as u8 as f64, 0.0)
            }));
            let y = ev.eval(loss, &e)?;
            if y.shape() != (1, 1) {
                return Err("the loss is not a scalar".into());
            }
            let y = y[(0, 0)];
            value = y.re;
            if i == j {
                g[(i, 0)] = y.eps1;
            }
            h[(i, j)] = y.eps1eps2;
            h[(j, i)] = y.eps1eps2;
        }
    }
    // the gradient in a matrix is shaped like it
    let g = if cols > 1 { Mat::from_column_slice(rows, cols, g.as_slice()) } else { g };
    Ok((value, g, h))
}


/// Label of a result for reports: "J", "grad J", "hess J" (with "wrt x" when needed).
pub fn label(model: &Model, loss: &str, wrt: Option<&str>, order: usize) -> String {
    let many = model.vars.values().filter(|v| v.role == Role::Param).count() > 1;
    let base = match order {
        0 => loss.to_string(),
        1 => format!("grad {loss}"),
        2 => format!("hess {loss}"),
        _ => format!("hvp {loss}"),
    };
    match wrt {
        Some(w) if many => format!("{base} wrt {w}"),
        _ => base,
    }
}

/// A definition is compared on its own when it has a closed form and no sum's index in it
/// (pᵢ = softmax(W xᵢ) is checked through the results that sum it).
fn checked_alone(model: &Model, d: &Definition) -> bool {
    d.explicit.is_some() && !d.term.iter().any(|n| matches!(n, Node::Symbol(s) if model.indices.contains_key(s.as_str())))
}

/// Runs the check over random points.
pub fn check(model: &Model, d: &Derivation, opts: &CheckOptions, def_label: &dyn Fn(&Definition) -> String) -> CheckReport {
    let ev = Evaluator::new(model);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut comps: Vec<Comparison> = d
        .results
        .iter()
        .map(|r| Comparison { quantity: label(model, &r.loss, r.wrt.as_deref(), r.order), max_rel_error: 0.0, passed: true, points: 0, worst: None, error: None })
        .chain(d.definitions.iter().filter(|x| checked_alone(model, x)).map(|x| Comparison {
            quantity: def_label(x),
            max_rel_error: 0.0,
            passed: true,
            points: 0,
            worst: None,
            error: None,
        }))
        .chain(model.claims.iter().map(|c| Comparison {
            quantity: format!("claim {}", label(model, &c.loss, Some(&c.wrt), c.order)),
            max_rel_error: 0.0,
            passed: true,
            points: 0,
            worst: None,
            error: None,
        }))
        .collect();
    // index forms, compared like the results they are read from
    let index_forms: Vec<(usize, Result<crate::index::IExpr, String>)> = if opts.index {
        // a result with no index form is said so in the output, not failed here
        d.results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.order > 0)
            .map(|(i, r)| (i, crate::index::result_form(model, r, &[], &|_| String::new())))
            .filter(|(_, f)| f.is_ok())
            .collect()
    } else {
        vec![]
    };
    let first_index = comps.len();
    for (i, _) in &index_forms {
        let r = &d.results[*i];
        comps.push(Comparison { quantity: format!("{} (index form)", label(model, &r.loss, r.wrt.as_deref(), r.order)), max_rel_error: 0.0, passed: true, points: 0, worst: None, error: None });
    }
    let mut spectra: Vec<Spectrum> = d
        .results
        .iter()
        .filter(|r| r.order == 2)
        .map(|r| Spectrum { quantity: label(model, &r.loss, r.wrt.as_deref(), 2), points: 0, min_rel_eigenvalue: f64::INFINITY, null_dims: (0, 0), ones_null: true })
        .collect();
    let mut sizes: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut used, mut undefined, mut skipped_large) = (0usize, 0usize, None::<String>);
    let fail = |c: &mut Comparison, e: String| {
        if c.error.is_none() {
            c.error = Some(e);
        }
        c.passed = false;
        c.max_rel_error = f64::INFINITY;
    };
    // a last guard: a check that takes long stops after the points it has (at least one)
    let budget = std::env::var("EVOLVED_CHECK_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(10.0);
    let start = std::time::Instant::now();
    let mut stopped = None;
    for _ in 0..opts.points {
        if used > 0 && start.elapsed().as_secs_f64() > budget {
            stopped = Some(start.elapsed().as_secs_f64());
            break;
        }
        // sizes first: a variable too large is not sampled at all
        let sz = random_sizes(model, &mut rng, opts);
        if let Some(why) = too_large(model, &sz) {
            skipped_large = Some(why);
            break;
        }
        let env = sample_at(model, &mut rng, &sz);
        for (k, v) in sz {
            let e = sizes.entry(k).or_insert((v, v));
            e.0 = e.0.min(v);
            e.1 = e.1.max(v);
        }
        // Points where the loss itself is not finite are outside its domain: skip them.
        if model.losses.iter().any(|(_, l)| ev.eval(l, &env).map_or(true, |v| v.iter().any(|x| !x.is_finite()))) {
            undefined += 1;
            continue;
        }
        used += 1;
        let record = |c: &mut Comparison, got: Result<Mat<f64>, String>, want: Result<Mat<f64>, String>| match (got, want) {
            (Ok(a), Ok(b)) => {
                // a zero derivative prints as the scalar 0
                let a = if a.shape() == (1, 1) && b.shape() != (1, 1) && a[(0, 0)] == 0.0 { Mat::zeros(b.nrows(), b.ncols()) } else { a };
                if let Some(e) = rel_error(&a, &b) {
                    c.points += 1;
                    if !(e <= opts.tolerance) {
                        c.passed = false;
                    }
                    if e > c.max_rel_error && !(e <= opts.tolerance) {
                        c.worst = Some(point_text(model, &env));
                    }
                    c.max_rel_error = c.max_rel_error.max(e);
                }
            }
            (Err(e), _) | (_, Err(e)) => fail(c, e),
        };
        let mut wanted: Vec<Result<Mat<f64>, String>> = vec![];
        for (i, r) in d.results.iter().enumerate() {
            let loss = model.loss(&r.loss).unwrap();
            let wrt = r.wrt.as_deref().map(Symbol::from).or_else(|| model.vars.values().find(|v| v.role == Role::Param).map(|v| Symbol::from(v.name.as_str())));
            let mut want = match wrt {
                Some(w) => reference(&ev, loss, w, &env, r.order >= 2).map(|(v, g, h)| match r.order {
                    0 => Mat::from_element(1, 1, v),
                    1 => g,
                    2 => h,
                    // H v, with the direction drawn like any data
                    _ => &h * &env[&Symbol::from(model.directions[r.wrt.as_deref().unwrap()].as_str())],
                }),
                None => ev.eval(loss, &env),
            };
            let mut got = ev.eval(&r.term, &env);
            in_matrix_terms(model, wrt, r.order, &env, &mut got, &mut want);
            if let (2, Ok(h)) = (r.order, &got) {
                if let Some(s) = spectra.iter_mut().find(|s| s.quantity == comps[i].quantity) {
                    s.add(h);
                }
            }
            wanted.push(want.clone());
            record(&mut comps[i], got, want);
        }
        for (k, (i, form)) in index_forms.iter().enumerate() {
            let got = match (form, &wanted[*i]) {
                (Ok(e), Ok(w)) => crate::index::evaluate(e, &ev, &env, w.nrows(), w.ncols()),
                (Err(e), _) => Err(format!("no index form: {e}")),
                (_, Err(e)) => Err(e.clone()),
            };
            record(&mut comps[first_index + k], got, wanted[*i].clone());
        }
        let ndefs = d.definitions.iter().filter(|x| checked_alone(model, x)).count();
        for (j, def) in d.definitions.iter().filter(|x| checked_alone(model, x)).enumerate() {
            // the closed form against E[T] or A evaluated from the family itself
            record(&mut comps[d.results.len() + j], ev.eval(def.explicit.as_ref().unwrap(), &env), ev.eval(&def.term, &env));
        }
        for (j, c) in model.claims.iter().enumerate() {
            let loss = model.loss(&c.loss).unwrap();
            let mut want = reference(&ev, loss, Symbol::from(c.wrt.as_str()), &env, c.order == 2).map(|(_, g, h)| if c.order == 1 { g } else { h });
            let mut got = ev.eval(&c.term, &env);
            in_matrix_terms(model, Some(Symbol::from(c.wrt.as_str())), c.order, &env, &mut got, &mut want);
            record(&mut comps[d.results.len() + ndefs + j], got, want);
        }
    }
    for c in comps.iter_mut() {
        if c.points == 0 && c.error.is_none() && skipped_large.is_none() {
            c.passed = false;
            c.error = Some("not compared at any point: the loss or the reference was not finite at every sampled point".into());
        }
    }
    let passed = comps.iter().all(|c| c.passed);
    spectra.retain(|s| s.points > 0);
    CheckReport { points: used, undefined, skipped: skipped_large, stopped, sizes, comparisons: comps, spectra, passed }
}

/// A derivative in a matrix variable compared as the results are stated: a gradient left as
/// vec(G) shaped like the variable, and for a symmetric matrix only symmetric directions.
pub fn in_matrix_terms(model: &Model, wrt: Option<Symbol>, order: usize, env: &Env<f64>, got: &mut Result<Mat<f64>, String>, want: &mut Result<Mat<f64>, String>) {
    let Some(v) = wrt.and_then(|w| model.var(w)).filter(|v| v.shape.is_matrix()) else { return };
    if let (Ok(g), Ok(w)) = (got.as_mut(), want.as_ref()) {
        if order == 1 && g.shape() != w.shape() && g.len() == w.len() {
            *g = Mat::from_column_slice(w.nrows(), w.ncols(), g.as_slice());
        }
    }
    if v.domain == crate::model::Domain::Spd && order <= 2 {
        let n = env[&Symbol::from(v.name.as_str())].nrows();
        for m in [got, want].into_iter().flatten() {
            *m = symmetric_part(m, n, order);
        }
    }
}

/// Checks that every family's A is its log-partition: on a finite support the
/// probabilities must sum to 1 at random natural parameters.
pub fn validate_families(model: &Model) -> Result<(), String> {
    let ev = Evaluator::new(model);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for f in &model.families {
        // a copy with known parameters filled in (perhaps with the model's variables) is
        // checked as declared
        let f = f.template.as_deref().unwrap_or(f);
        let n = match f.param_shape {
            Shape::Mat(Dim::One, _) => 1,
            Shape::Mat(Dim::Named(s), _) => s.as_str().parse().unwrap_or(3),
            Shape::Family => continue,
        };
        for _ in 0..3 {
            let (eta, env) = family_point(f, n, &mut rng)?;
            if let Some(total) = ev.total_probability(f, &eta, &env).map_err(|e| format!("family {}: {e}", f.name))? {
                if !((total - 1.0).abs() <= 1e-9) {
                    return Err(format!(
                        "family {}: A is not the log-partition of T on its support: the probabilities sum to {total} at {} = {:?}",
                        f.name,
                        f.param,
                        eta.as_slice()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A random member of a family with an n-long natural parameter: η (from a usual
/// parameter drawn from its domain, when the family has one, else from η's own domain)
/// and values of its known parameters.
pub fn family_point(f: &crate::model::Family, n: usize, rng: &mut ChaCha8Rng) -> Result<(Mat<f64>, Env<f64>), String> {
    let mut env = Env::new();
    for (k, sh, dom) in &f.known {
        let Shape::Mat(r, c) = sh else { continue };
        let size = |d: &Dim| if *d == Dim::One { 1 } else { n };
        let mut v = sample(rng, size(r), size(c), *dom);
        if *dom == Domain::Count {
            // a known count such as binomial's n: at least 1
            v = v.map(|x| x + 1.0);
        }
        env.insert(Symbol::from(k.as_str()), v);
    }
    let eta = match f.usual.first() {
        Some(u) => {
            let mut e = env.clone();
            for (name, shape, domain) in &u.params {
                let Shape::Mat(r, c) = *shape else { unreachable!() };
                let size = |d: Dim| match d {
                    Dim::One => 1,
                    Dim::Named(s) => s.as_str().parse().unwrap_or(n),
                };
                e.insert(Symbol::from(name.as_str()), sample(rng, size(r), size(c), *domain));
            }
            // the further natural parameters this parameterisation gives
            for (i, value) in &u.naturals {
                let v = Evaluator::new(&Model::default()).eval(value, &e)?;
                env.insert(Symbol::from(f.known[*i].0.as_str()), v);
            }
            Evaluator::new(&Model::default()).eval(&u.eta, &e)?
        }
        None => {
            let Shape::Mat(r, c) = f.param_shape else { unreachable!() };
            let size = |d: Dim| if d == Dim::One { 1 } else { n };
            sample(rng, size(r), size(c), f.param_domain)
        }
    };
    Ok((eta, env))
}

/// The parameters and data of a point, as `--at` text.
pub fn point_text(model: &Model, env: &Env<f64>) -> String {
    let mut parts = vec![];
    for v in model.vars.values().filter(|v| v.role != Role::Random) {
        if let Some(m) = env.get(&Symbol::from(v.name.as_str())) {
            parts.push(format!("{}={}", v.name, crate::report::matrix_text(m)));
        }
    }
    parts.join("; ")
}

/// Reads `--at` values: `theta=[0.5,0.5]; q=[1,0]` (JSON numbers and arrays; a matrix is
/// a list of rows). Sizes of dimensions are read off the values and must agree.
pub fn parse_point(model: &Model, text: &str) -> Result<Env<f64>, String> {
    let mut env = Env::new();
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').ok_or_else(|| format!("`{part}`: expected NAME=VALUE"))?;
        let name = name.trim();
        let v = model.vars.get(name).ok_or_else(|| format!("`{name}` is not a parameter or data of the model"))?;
        if env.contains_key(&Symbol::from(name)) {
            return Err(format!("`{name}` is given twice"));
        }
        let json: serde_json::Value = serde_json::from_str(value.trim())
            .map_err(|e| format!("value of `{name}`: `{}` is not a number, a list of numbers or a list of rows (JSON: {e})", value.trim()))?;
        let num = |x: &serde_json::Value| x.as_f64().ok_or_else(|| format!("value of `{name}`: {x} is not a number"));
        let m: Mat<f64> = match &json {
            serde_json::Value::Array(rows) if rows.iter().all(|r| r.is_array()) => {
                let rows: Vec<Vec<f64>> =
                    rows.iter().map(|r| r.as_array().unwrap().iter().map(num).collect::<Result<Vec<_>, _>>()).collect::<Result<_, _>>()?;
                let c = rows.first().map(|r| r.len()).unwrap_or(0);
                if rows.iter().any(|r| r.len() != c) {
                    return Err(format!("value of `{name}`: rows of different lengths"));
                }
                Mat::from_fn(rows.len(), c, |i, j| rows[i][j])
            }
            serde_json::Value::Array(xs) => {
                let xs: Vec<f64> = xs.iter().map(num).collect::<Result<_, _>>()?;
                Mat::from_column_slice(xs.len(), 1, &xs)
            }
            x => Mat::from_element(1, 1, num(x)?),
        };
        let Shape::Mat(r, c) = v.shape else { unreachable!() };
        for (d, n) in [(r, m.nrows()), (c, m.ncols())] {
            match d {
                Dim::One if n != 1 => return Err(format!("`{name}` is {} but the value has {}×{} entries", v.shape, m.nrows(), m.ncols())),
                Dim::One => {}
                Dim::Named(s) if n == 0 => {
                    return Err(format!("`{name}` is {} but the value is empty along {s}: a size is at least 1", v.shape));
                }
                Dim::Named(s) => {
                    let fixed = s.as_str().parse::<usize>().ok();
                    let prev = fixed.or_else(|| sizes.get(s.as_str()).copied());
                    if let Some(p) = prev.filter(|p| *p != n) {
                        return Err(if fixed.is_some() {
                            format!("`{name}` must have {p} entries along this axis, not {n}")
                        } else {
                            format!("`{name}` gives {s} = {n}, but {s} = {p} already")
                        });
                    }
                    sizes.insert(s.to_string(), n);
                }
            }
        }
        check_domain(name, &m, v.domain)?;
        env.insert(Symbol::from(name), m);
    }
    for v in model.vars.values().filter(|v| v.role != Role::Random) {
        if !env.contains_key(&Symbol::from(v.name.as_str())) {
            return Err(format!("no value for `{}` in --at", v.name));
        }
    }
    Ok(env)
}

fn check_domain(name: &str, m: &Mat<f64>, d: Domain) -> Result<(), String> {
    // the value that breaks the domain, as `entry i is x` (or `it is x` for a scalar)
    let entry = |pred: &dyn Fn(f64) -> bool| {
        m.iter().position(|x| pred(*x)).map(|i| if m.len() == 1 { format!("it is {}", m[i]) } else { format!("entry {} is {}", i + 1, m[i]) })
    };
    let bad = |why: &str, what: String| Err(format!("`{name}` is declared {} but its value is not {why}: {what}", d.name()));
    if let Some(e) = entry(&|x| !x.is_finite()) {
        return bad("finite", e);
    }
    match d {
        Domain::Real => {}
        Domain::Positive => {
            if let Some(e) = entry(&|x| x <= 0.0) {
                return bad("positive (every entry > 0)", e);
            }
        }
        Domain::Negative => {
            if let Some(e) = entry(&|x| x >= 0.0) {
                return bad("negative (every entry < 0)", e);
            }
        }
        Domain::Angle => {
            if let Some(e) = entry(&|x| x.abs() > std::f64::consts::PI) {
                return bad("an angle (every entry in [−π, π])", e);
            }
        }
        Domain::Spd => {
            let why = "symmetric positive definite";
            let scale = m.iter().fold(1.0f64, |a, x| a.max(x.abs()));
            if (m - m.transpose()).iter().any(|x| x.abs() > 1e-12 * scale) {
                return bad(why, "it is not symmetric".into());
            }
            if m.clone().cholesky().is_none() {
                return bad(why, "it has an eigenvalue ≤ 0".into());
            }
        }
        Domain::Unit => {
            if let Some(e) = entry(&|x| !(0.0..=1.0).contains(&x)) {
                return bad("in [0, 1]", e);
            }
        }
        Domain::Binary => {
            if let Some(e) = entry(&|x| x != 0.0 && x != 1.0) {
                return bad("binary (every entry 0 or 1)", e);
            }
        }
        Domain::Count => {
            if let Some(e) = entry(&|x| x < 0.0 || x.fract() != 0.0) {
                return bad("a count (every entry a whole number ≥ 0)", e);
            }
        }
        Domain::Simplex => {
            let why = "on the simplex (entries ≥ 0 summing to 1)";
            if let Some(e) = entry(&|x| x < 0.0) {
                return bad(why, e);
            }
            if (m.sum() - 1.0).abs() > 1e-9 {
                return bad(why, format!("the entries sum to {}", m.sum()));
            }
        }
        Domain::OneHot => {
            let why = "one-hot (one entry 1, the others 0)";
            if let Some(e) = entry(&|x| x != 0.0 && x != 1.0) {
                return bad(why, e);
            }
            let ones = m.iter().filter(|x| **x == 1.0).count();
            if ones != 1 {
                return bad(why, format!("{ones} entries are 1"));
            }
        }
        Domain::OneHotOrZero => {
            let why = "one-hot or zero (at most one entry 1, the others 0)";
            if let Some(e) = entry(&|x| x != 0.0 && x != 1.0) {
                return bad(why, e);
            }
            let ones = m.iter().filter(|x| **x == 1.0).count();
            if ones > 1 {
                return bad(why, format!("{ones} entries are 1"));
            }
        }
    }
    Ok(())
}
