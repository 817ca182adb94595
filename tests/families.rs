//! The family catalog, family by family: E[T] and Cov[T] as the rules derive them from A
//! agree with the derivatives of A by hyper-dual numbers *and* with moments computed a
//! third way from the density itself (sums over finite and count supports, numeric
//! integration over continuous ones, or where neither can be done the textbook moments the
//! catalog states, as for the multivariate normal); Cov[T] is symmetric positive semi-definite; the
//! density sums or integrates to 1. Also: evaluation at extreme natural parameters, a
//! family declared inline, and the catalog's worked problems (Poisson, KL).
mod common;
use common::*;
use evolved::check::family_point;
use evolved::derive::{family_moments, Limits};
use evolved::eval::{Env, Evaluator, Mat};
use evolved::model::Family;
use evolved::report::family_model;
use rand::SeedableRng;

fn rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = a.iter().chain(b.iter()).fold(1e-300f64, |m, x| m.max(x.abs()));
    a.iter().zip(b.iter()).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// For each of `points` random members: (closed-form E[T], Cov[T]) against A's
/// derivatives and against the density; returns how many points had a third way.
fn check_family(f: &Family, points: usize) -> usize {
    let rules = evolved::default_rules();
    let (mean, cov) = family_moments(f, &rules, &Limits::default()).unwrap();
    let mean = mean.unwrap_or_else(|| panic!("{}: E[T] not derived", f.name));
    let cov = cov.unwrap_or_else(|| panic!("{}: Cov[T] not derived", f.name));
    let model = family_model(f);
    let ev = Evaluator::new(&model);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    // a vector family at length 2 (a 2-simplex can be integrated) and 3
    let sizes: &[usize] = if f.param_shape.is_scalar() { &[1] } else { &[2, 3] };
    let mut third = 0;
    for &n in sizes {
        for _ in 0..points {
            let (eta, mut env) = family_point(f, n, &mut rng).unwrap();
            env.insert(egg::Symbol::from(f.param.as_str()), eta.clone());
            let (m, c) = (ev.eval(&mean, &env).unwrap(), ev.eval(&cov, &env).unwrap());
            let c = if c.shape() == (1, 1) && n > 1 { Mat::from_element(n, n, c[(0, 0)]) } else { c };
            let (dm, dc) = ev.moments(f, &eta, &env).unwrap();
            // a symmetric η: Cov[T] along symmetric directions (the entries of A's Hessian
            // differ from it by a commutation of η's indices, which those directions do not see)
            let sym = |m: &Mat<f64>| if f.param_domain == evolved::model::Domain::Spd { evolved::check::symmetric_part(m, eta.nrows(), 2) } else { m.clone() };
            let (c, dc) = (sym(&c), sym(&dc));
            let at = format!("{} at η = {:?}, known {:?}", f.name, eta.as_slice(), env.iter().filter(|(k, _)| k.as_str() != f.param).map(|(k, v)| (k.to_string(), v.as_slice().to_vec())).collect::<Vec<_>>());
            assert!(rel(&m, &dm) < 1e-10, "{at}: E[T] {m} vs ∇A {dm}");
            assert!(rel(&c, &dc) < 1e-9, "{at}: Cov[T] {c} vs ∇²A {dc}");
            assert!(rel(&c, &c.transpose()) < 1e-14, "{at}: Cov[T] is not symmetric: {c}");
            let eig = nalgebra::SymmetricEigen::new(c.clone()).eigenvalues;
            let top = eig.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            assert!(eig.iter().all(|x| *x >= -1e-12 * top), "{at}: Cov[T] is not PSD: {eig}");
            // the density summed or integrated, else the textbook moments the catalog states
            let textbook = || f.textbook.as_ref().map(|(a, b)| (ev.eval(a, &env).unwrap(), ev.eval(b, &env).unwrap(), 1.0));
            if let Some((tm, tc, total)) = ev.density_moments(f, &eta, &env).unwrap().or_else(textbook) {
                third += 1;
                assert!((total - 1.0).abs() < 1e-8, "{at}: the density sums to {total}");
                assert!(rel(&m, &tm) < 1e-7, "{at}: E[T] {m} vs the density's {tm}");
                assert!(rel(&c, &sym(&tc)) < 1e-6, "{at}: Cov[T] {c} vs the density's {tc}");
            }
        }
    }
    third
}

#[test]
fn every_catalog_family_has_its_moments_three_ways() {
    let fams = evolved::catalog_families();
    assert!(fams.len() >= 28, "{} families", fams.len());
    for f in &fams {
        let third = check_family(f, 6);
        assert!(third > 0, "{}: no third way to its moments", f.name);
    }
}

#[test]
fn a_family_declared_inline_gets_its_moments() {
    // no Rust change: one statement declares it, the rules derive E[T] and Cov[T]
    let text = "family mypoisson(t : R) on z : count, T = z, A = exp(t), logh = -lgamma(z + 1), usual(rate : positive) = log(rate), mean = m";
    let fams = evolved::families_from(&[("inline.ef".into(), text.into())]).unwrap();
    assert_eq!(check_family(&fams[0], 6), 6);
    // and a model that declares it derives and checks
    let d = derive_text(&format!("param t : R; data y : count; {text}; y ~ mypoisson(t); J = -log p(y | t)"));
    assert!(d.check().passed);
    let g = evolved::print::print(&d.model, &d.d.results[1].term, evolved::print::Style::Unicode);
    assert!(g.contains('y'), "{g}");
}

fn text_of(d: &Derived, order: usize) -> String {
    let names = evolved::report::names(&d.model, &d.d.definitions, evolved::print::Style::Unicode);
    let p = evolved::print::Printer { names, ..evolved::print::Printer::new(&d.model, evolved::print::Style::Unicode) };
    p.print(&d.d.results.iter().find(|r| r.order == order).unwrap().term)
}

fn definitions(d: &Derived) -> Vec<String> {
    d.d.definitions.iter().map(|x| evolved::report::definition_line(&d.model, x, &d.d.definitions, evolved::print::Style::Unicode)).collect()
}

#[test]
fn poisson_nll_in_the_log_rate_and_in_the_rate() {
    // in η: e^η − y and e^η, e^η written λ = E[y]
    let d = derive_text("param eta : R; data y : count; y ~ poisson(eta); J = -log p(y | eta)");
    assert_eq!(text_of(&d, 1), "λ − y");
    assert_eq!(text_of(&d, 2), "λ");
    assert_eq!(definitions(&d), vec!["λ = E[y] = exp(η)"]);
    // the case's scalar check: λ = 3, y = 5 gives d/dη = λ − y = −2, d²/dη² = 3
    let x = case("C12")["extra"]["reported_scalar_check"].clone();
    let pt = format!("eta={}; y=5", 3f64.ln());
    assert_close(&entries(&d.at(1, &pt)), &[x["in natural parameter eta=log lambda: d/deta = lambda - y"].as_f64().unwrap()], "d/dη");
    assert_close(&entries(&d.at(2, &pt)), &[x["d2/deta2"].as_f64().unwrap()], "d²/dη²");
    assert_close(&entries(&d.at(0, &pt)), &[x["exact_nll lambda - y log lambda + log y!"].as_f64().unwrap()], "the full NLL, log y! included");
    assert!(d.check().passed);
    // in λ: 1 − y/λ and y/λ²
    let d = derive_text("param lambda : positive; data y : count; y ~ poisson(rate = lambda); J = -log p(y)");
    assert_eq!(text_of(&d, 1), "1 − y / λ");
    assert_eq!(text_of(&d, 2), "y / λ²");
    assert_close(&entries(&d.at(1, "lambda=3; y=5")), &[x["d/dlambda"].as_f64().unwrap()], "d/dλ");
    assert_close(&entries(&d.at(2, "lambda=3; y=5")), &[x["d2/dlambda2"].as_f64().unwrap()], "d²/dλ²");
    assert_close(&entries(&d.at(0, "lambda=3; y=5")), &[x["exact_nll lambda - y log lambda + log y!"].as_f64().unwrap()], "the full NLL");
    assert!(d.check().passed);
}

#[test]
fn c12_poisson_regression_keeps_log_y_factorial() {
    let c = case("C12");
    let e = &c["evaluations"][0];
    let pt = format!("beta={}; X={}; y={}", e["point"]["beta"], e["point"]["X"], e["point"]["y"]);
    let d = derive_text(include_str!("../examples/poisson_regression.ef"));
    assert_close(&entries(&d.at(0, &pt)), &[e["value"].as_f64().unwrap()], "C12 value (with log y!)");
    assert_close(&entries(&d.at(1, &pt)), &flat(&e["gradient"]), "C12 gradient");
    assert_close(&entries(&d.at(2, &pt)), &flat(&e["hessian"]), "C12 Hessian");
    let wrong = c["wrong_answers_to_reject"]["GLM value with log(y!) dropped (only acceptable if the tool says so)"].as_f64().unwrap();
    assert!((d.at(0, &pt)[(0, 0)] - wrong).abs() > 1.0);
    assert_eq!(text_of(&d, 1), "Xᵀ (λ − y)");
    assert_eq!(text_of(&d, 2), "Xᵀ diag(λ) X");
    assert!(d.check().passed);
}

#[test]
fn kl_between_categoricals_in_the_second_argument() {
    let d = derive_text("dim k; param t1 : R^k; param t2 : R^k; J = KL(categorical(t1) || categorical(t2)); derive grad J wrt t2, hess J wrt t2");
    assert_eq!(text_of(&d, 1), "p₂ − p₁");
    assert_eq!(text_of(&d, 2), "diag(p₂) − p₂ p₂ᵀ");
    assert!(d.check().passed);
    // the value is Σ p₁ log(p₁/p₂), evaluated from the densities
    let (a, b) = ([0.2f64, -0.4, 1.0], [0.5f64, 0.1, -0.3]);
    let sm = |v: &[f64]| {
        let z: f64 = v.iter().map(|x| x.exp()).sum();
        v.iter().map(|x| x.exp() / z).collect::<Vec<_>>()
    };
    let (p, q) = (sm(&a), sm(&b));
    let kl: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
    let pt = format!("t1={a:?}; t2={b:?}");
    assert_close(&entries(&d.at(0, &pt)), &[kl], "KL value");
    let g: Vec<f64> = q.iter().zip(&p).map(|(q, p)| q - p).collect();
    assert_close(&entries(&d.at(1, &pt)), &g, "KL gradient in t2");
}

#[test]
fn kl_between_poissons_is_checked_by_summing_the_densities() {
    let d = derive_text("param a : R; param b : R; J = KL(poisson(a) || poisson(b))");
    assert!(d.check().passed);
    // KL(Pois(λ₁) ‖ Pois(λ₂)) = λ₁ log(λ₁/λ₂) − λ₁ + λ₂
    let (l1, l2) = (2.0f64, 0.5f64);
    let pt = format!("a={}; b={}", l1.ln(), l2.ln());
    let want = l1 * (l1 / l2).ln() - l1 + l2;
    let env = evolved::check::parse_point(&d.model, &pt).unwrap();
    let v = Evaluator::new(&d.model).eval(d.model.loss("J").unwrap(), &env).unwrap();
    assert_close(&[v[(0, 0)]], &[want], "KL by summation");
    assert_close(&entries(&d.at(0, &pt)), &[want], "KL derived");
}

/// Evaluates a family's derived E[T] and Cov[T] at η.
/// A family of the catalog, by name.
fn catalog_family(name: &str) -> Family {
    evolved::catalog_families().into_iter().find(|f| f.name == name).unwrap_or_else(|| panic!("{name} in the catalog"))
}

fn moments_at(name: &str, eta: &[f64]) -> (Mat<f64>, Mat<f64>, Mat<f64>, Mat<f64>) {
    let f = catalog_family(name);
    let (mean, cov) = family_moments(&f, &evolved::default_rules(), &Limits::default()).unwrap();
    let model = family_model(&f);
    let ev = Evaluator::new(&model);
    let mut env = Env::new();
    let e = Mat::from_column_slice(eta.len(), 1, eta);
    env.insert(egg::Symbol::from(f.param.as_str()), e.clone());
    let (dm, dc) = ev.moments(&f, &e, &env).unwrap();
    (ev.eval(&mean.unwrap(), &env).unwrap(), ev.eval(&cov.unwrap(), &env).unwrap(), dm, dc)
}

#[test]
fn extreme_natural_parameters_stay_finite_and_accurate() {
    let finite = |m: &Mat<f64>| m.iter().all(|x| x.is_finite());
    // Bernoulli logit ±800: p = 1 and 0 (e^−800 is below f64's range), p(1 − p) = 0
    for t in [800.0, -800.0] {
        let (m, c, _, _) = moments_at("bernoulli", &[t]);
        assert!(finite(&m) && finite(&c), "{t}: {m} {c}");
        assert_eq!(m[(0, 0)], if t > 0.0 { 1.0 } else { 0.0 });
        assert_eq!(c[(0, 0)], 0.0);
    }
    // and where the true value is representable, to 1e-10: σ(30)(1 − σ(30)) = σ(30)σ(−30)
    for t in [30.0f64, -30.0, 700.0] {
        let (m, c, _, _) = moments_at("bernoulli", &[t]);
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (wm, wc) = (s(t), (-t.abs()).exp() / (1.0 + (-t.abs()).exp()).powi(2));
        assert!((m[(0, 0)] - wm).abs() <= 1e-10 * wm, "{t}: E {} vs {wm}", m[(0, 0)]);
        assert!((c[(0, 0)] - wc).abs() <= 1e-10 * wc, "{t}: Var {} vs {wc}", c[(0, 0)]);
    }
    // categorical logits spread by ±1000
    let (m, c, dm, dc) = moments_at("categorical", &[1000.0, 0.0, -1000.0, 999.0]);
    assert!(finite(&m) && finite(&c), "{m} {c}");
    assert!((m.sum() - 1.0).abs() < 1e-14, "{m}");
    assert!(rel(&m, &dm) < 1e-10 && rel(&c, &dc) < 1e-10);
    let e1 = 1.0 / (1.0 + (-1f64).exp());
    assert!((m[(0, 0)] - e1).abs() < 1e-15, "{}", m[(0, 0)]);
    // Poisson η = 300: e^300 is representable
    let (m, c, dm, _) = moments_at("poisson", &[300.0]);
    let want = 300f64.exp();
    assert!((m[(0, 0)] - want).abs() <= 1e-10 * want && (c[(0, 0)] - want).abs() <= 1e-10 * want);
    assert!((dm[(0, 0)] - want).abs() <= 1e-10 * want);
    // the Bernoulli NLL's gradient at ±800 is finite
    let d = derive_text(include_str!("../examples/bernoulli_nll.ef"));
    for (t, y) in [(800.0, 1.0), (-800.0, 0.0), (800.0, 0.0)] {
        let pt = format!("theta={t}; y={y}");
        for order in 0..3 {
            assert!(finite(&d.at(order, &pt)), "order {order} at {pt}");
        }
    }
}

#[test]
fn every_catalog_family_derives_and_checks_in_a_model() {
    // y ~ F(η) with η a parameter shaped like the family's (known parameters as data);
    // J = −log p(y): its gradient and Hessian must pass the numeric check
    for f in evolved::catalog_families() {
        let shape = |s: evolved::lang::Shape, d: evolved::model::Domain| match s {
            evolved::lang::Shape::Mat(evolved::lang::Dim::One, _) => d.name().to_string(),
            evolved::lang::Shape::Mat(r, evolved::lang::Dim::One) => format!("{}^{r}", d.name()),
            evolved::lang::Shape::Mat(r, c) => format!("{}^({r},{c})", d.name()),
            _ => unreachable!(),
        };
        let dims = if f.param_shape.is_scalar() || evolved::lang::fixed_length(f.param_shape).is_some() { String::new() } else { "dim k; ".to_string() };
        let known: String = f.known.iter().map(|(k, s, d)| format!("data {k}_ : {}; ", shape(*s, *d))).collect();
        let args: String = f.known.iter().map(|(k, _, _)| format!(", {k} = {k}_")).collect();
        let model = format!(
            "{dims}param eta_ : {}; data y_ : {}; {known}y_ ~ {}(eta_{args}); J = -log p(y_)",
            // a matrix parameter in its own domain (symmetric); others anywhere in R
            shape(f.param_shape, if f.param_shape.is_matrix() { f.param_domain } else { evolved::model::Domain::Real }),
            shape(f.var_shape, f.support),
            f.name
        );
        let d = derive_text(&model);
        assert!(d.d.results.iter().all(|r| r.complete), "{}: not fully derived: {model}", f.name);
        let mut c = d.check();
        if c.points < 3 {
            // known parameters can narrow the domain (the Wishart needs n > k − 1): more draws
            c = evolved::check::check(&d.model, &d.d, &evolved::check::CheckOptions { points: 200, ..Default::default() }, &|_| "definition".into());
        }
        assert!(c.passed, "{}: the check failed: {model}: {:?}", f.name, c.comparisons);
        assert!(c.points >= 3, "{}: only {} points in the domain", f.name, c.points);
    }
}

#[test]
fn gamma_in_shape_and_rate_shows_e_log_x() {
    let d = derive_text("param a : positive; param b : positive; data x : positive; x ~ gamma(shape = a, rate = b); J = -log p(x)");
    assert!(d.check().passed);
    // ∂J/∂a = E[log x] − log x with E[log x] = ψ(a) − log b; ∂J/∂b = x − a/b
    let defs = definitions(&d);
    assert!(defs[0].starts_with("m = [ψ(a) − log(b), a / b]"), "{defs:?}");
    let g: Vec<String> = d.d.results.iter().filter(|r| r.order == 1).map(|r| evolved::print::print(&d.model, &r.term, evolved::print::Style::Unicode)).collect();
    assert!(g[1] == "x − a / b", "{g:?}");
    let (a, b, x) = (2.5f64, 1.5f64, 0.8f64);
    let pt = format!("a={a}; b={b}; x={x}");
    let env = evolved::check::parse_point(&d.model, &pt).unwrap();
    let ev = Evaluator::new(&d.model);
    let at = |i: usize| ev.eval(&d.d.results[i].term, &env).unwrap()[(0, 0)];
    let psi = evolved::special::polygamma(0, a);
    assert!((at(1) - (psi - b.ln() - x.ln())).abs() < 1e-12, "∂J/∂a");
    assert!((at(2) - evolved::special::polygamma(1, a)).abs() < 1e-12, "∂²J/∂a²");
    assert!((at(4) - a / (b * b)).abs() < 1e-12, "∂²J/∂b²");
}

#[test]
fn c10_gaussian_log_partition_in_natural_parameters() {
    let c = case("C10");
    let e = &c["evaluations"][0];
    let m = "param eta : R^2; data x : R; J = -eta[1]^2/(4 eta[2]) - log(-2 eta[2])/2 - eta[1] x - eta[2] x^2 + log(2 pi)/2";
    let d = derive_text(m);
    let pt = format!("eta={}; x={}", e["point"]["eta"], e["point"]["x"]);
    assert_close(&entries(&d.at(0, &pt)), &[e["value"].as_f64().unwrap()], "C10 value");
    assert_close(&entries(&d.at(1, &pt)), &flat(&e["gradient"]), "C10 gradient");
    assert_close(&entries(&d.at(2, &pt)), &flat(&e["hessian"]), "C10 Hessian: the covariance");
    let wrong = flat(&c["wrong_answers_to_reject"]["second_moment_matrix_without_mean_correction E[TT^T]"]);
    assert!(entries(&d.at(2, &pt)).iter().zip(&wrong).any(|(a, b)| (a - b).abs() > 0.1));
    assert!(d.check().passed);
    // the same through the catalog's normal2: A(η) gives the mean (E[x], E[x²]) = (1, 1.5)
    let d = derive_text("param eta : R^2; data x : R; x ~ normal2(eta); J = -log p(x | eta)");
    assert_close(&entries(&d.at(0, &pt)), &[e["value"].as_f64().unwrap()], "C10 value via normal2");
    assert_close(&entries(&d.at(1, &pt)), &flat(&e["gradient"]), "C10 gradient via normal2");
    assert_close(&entries(&d.at(2, &pt)), &flat(&e["hessian"]), "C10 Hessian via normal2");
    let mean = d.d.definitions.iter().find(|x| matches!(x.term.as_ref().last(), Some(evolved::lang::Node::Mean(_)))).unwrap();
    let env = evolved::check::parse_point(&d.model, &pt).unwrap();
    let v = Evaluator::new(&d.model).eval(mean.explicit.as_ref().unwrap(), &env).unwrap();
    assert_close(&entries(&v), &flat(&e["log_partition_gradient (E[x], E[x^2])"]), "E[T] at η = (2, −1)");
}

#[test]
fn multinomial_moments_by_summing_its_density_over_the_compositions_of_n() {
    // the catalog's multinomial states E and Cov from textbooks; here they are also summed
    // from the density over every count vector with total n (log h checks no total)
    let f = &catalog_family("multinomial");
    let rules = evolved::default_rules();
    let (mean, cov) = family_moments(f, &rules, &Limits::default()).unwrap();
    let (mean, cov) = (mean.expect("E[T] derived"), cov.expect("Cov[T] derived"));
    let model = family_model(f);
    let ev = Evaluator::new(&model);
    for (theta, n) in [(vec![0.3, -1.2, 0.8], 5usize), (vec![2.0, 0.0, -2.0, 0.5], 4)] {
        let k = theta.len();
        let mut env = Env::new();
        env.insert(egg::Symbol::from(f.param.as_str()), Mat::from_column_slice(k, 1, &theta));
        env.insert(egg::Symbol::from(f.known[0].0.as_str()), Mat::from_element(1, 1, n as f64));
        let (m, c) = (ev.eval(&mean, &env).unwrap(), ev.eval(&cov, &env).unwrap());
        // every x ∈ {0..n}^k with Σx = n
        let (mut total, mut sm, mut sc) = (0.0, Mat::zeros(k, 1), Mat::zeros(k, k));
        let mut x = vec![0usize; k];
        loop {
            if x.iter().sum::<usize>() == n {
                let xm = Mat::from_fn(k, 1, |i, _| x[i] as f64);
                let lp = ev.log_density(f, xm.clone(), &env[&egg::Symbol::from(f.param.as_str())], ev.logpart(f, env[&egg::Symbol::from(f.param.as_str())].clone(), &env).unwrap(), &env).unwrap();
                let p = lp.exp();
                total += p;
                sm += &xm * p;
                sc += &xm * xm.transpose() * p;
            }
            // next vector in {0..n}^k
            let mut i = 0;
            while i < k && x[i] == n {
                x[i] = 0;
                i += 1;
            }
            if i == k {
                break;
            }
            x[i] += 1;
        }
        let sc = sc - &sm * sm.transpose();
        assert!((total - 1.0).abs() < 1e-12, "the density sums to {total}");
        assert!(rel(&m, &sm) < 1e-12, "E[T] {m} vs the sum {sm}");
        assert!(rel(&c, &sc) < 1e-12, "Cov[T] {c} vs the sum {sc}");
    }
}

#[test]
fn wishart_moments_match_the_textbook_entry_by_entry() {
    // E[X] = nV and Cov(X_ij, X_kl) = n(V_ik V_jl + V_il V_jk), with η = V⁻¹/2 and T = −X;
    // the derived Cov[T] = (n/2) η⁻¹ ⊗ η⁻¹ holds along symmetric directions
    let f = &catalog_family("wishart");
    let (mean, cov) = family_moments(f, &evolved::default_rules(), &Limits::default()).unwrap();
    let (mean, cov) = (mean.expect("E[T] derived"), cov.expect("Cov[T] derived"));
    let model = family_model(f);
    let ev = Evaluator::new(&model);
    let v = Mat::from_row_slice(3, 3, &[2.0, 0.5, -0.3, 0.5, 1.0, 0.2, -0.3, 0.2, 1.5]);
    let n = 6.5;
    let eta = v.clone().try_inverse().unwrap() / 2.0;
    let mut env = Env::new();
    env.insert(egg::Symbol::from(f.param.as_str()), eta.clone());
    env.insert(egg::Symbol::from(f.known[0].0.as_str()), Mat::from_element(1, 1, n));
    let m = ev.eval(&mean, &env).unwrap();
    assert!(rel(&m, &(-&v * n)) < 1e-12, "E[T] {m} vs −nV");
    let c = ev.eval(&cov, &env).unwrap();
    let k = 3;
    let textbook = Mat::from_fn(k * k, k * k, |a, b| {
        let (i, j, p, q) = (a % k, a / k, b % k, b / k);
        n * (v[(i, p)] * v[(j, q)] + v[(i, q)] * v[(j, p)])
    });
    let sym = |m: &Mat<f64>| evolved::check::symmetric_part(m, k, 2);
    assert!(rel(&sym(&c), &sym(&textbook)) < 1e-12, "Cov[T] {c} vs the textbook {textbook}");
    // and A's own second derivatives, by hyper-dual numbers
    let (dm, dc) = ev.moments(f, &eta, &env).unwrap();
    assert!(rel(&m, &dm) < 1e-12 && rel(&sym(&c), &sym(&dc)) < 1e-10);
}

#[test]
fn mvnormal2_moments_of_the_precision_match_isserlis_and_the_log_partition() {
    // x ~ N(μ, Σ) as mvnormal2(h = Λμ, L = Λ = Σ⁻¹), T = x and T_L = −xxᵀ/2. The rules derive
    // E[T_L], Cov[T_L] and Cov[T, T_L] from A; a second way is A's central differences along
    // symmetric directions, a third the Gaussian moments (Isserlis):
    //   E[T_L] = −(Σ + μμᵀ)/2,
    //   Cov(x_i x_j, x_p x_q) = Σ_ip Σ_jq + Σ_iq Σ_jp + μ_i μ_p Σ_jq + μ_i μ_q Σ_jp + μ_j μ_p Σ_iq + μ_j μ_q Σ_ip,
    //   Cov(x_i, x_p x_q) = μ_p Σ_iq + μ_q Σ_ip.
    let f = &catalog_family("mvnormal2");
    let rules = evolved::default_rules();
    let (mean, _) = family_moments(f, &rules, &Limits::default()).unwrap();
    let further = evolved::derive::further_moments(f, mean.as_ref(), &rules, &Limits::default()).unwrap();
    assert_eq!(further.len(), 1);
    let fm = &further[0];
    assert_eq!(fm.param, "L");
    let (em, ec, ex) = (fm.mean.clone().expect("E[T_L] derived"), fm.cov.clone().expect("Cov[T_L] derived"), fm.cross.clone().expect("Cov[T, T_L] derived"));
    let model = family_model(f);
    let ev = Evaluator::new(&model);
    let k = 3;
    let sigma = Mat::from_row_slice(k, k, &[2.0, 0.5, -0.3, 0.5, 1.0, 0.2, -0.3, 0.2, 1.5]);
    let mu = Mat::from_column_slice(k, 1, &[0.5, -1.0, 2.0]);
    let lam = sigma.clone().try_inverse().unwrap();
    let mut env = Env::new();
    env.insert(egg::Symbol::from(f.param.as_str()), &lam * &mu);
    env.insert(egg::Symbol::from("L"), lam.clone());
    let (m, c, x) = (ev.eval(&em, &env).unwrap(), ev.eval(&ec, &env).unwrap(), ev.eval(&ex, &env).unwrap());
    assert_eq!((m.shape(), c.shape(), x.shape()), ((k, k), (k * k, k * k), (k, k * k)));

    // the third way
    let second = -(&sigma + &mu * mu.transpose()) / 2.0;
    assert!(rel(&m, &second) < 1e-12, "E[T_L] {m} vs −(Σ + μμᵀ)/2 {second}");
    let (s, u) = (|a: usize, b: usize| sigma[(a, b)], |a: usize| mu[(a, 0)]);
    let isserlis = Mat::from_fn(k * k, k * k, |a, b| {
        let (i, j, p, q) = (a % k, a / k, b % k, b / k);
        (s(i, p) * s(j, q) + s(i, q) * s(j, p) + u(i) * u(p) * s(j, q) + u(i) * u(q) * s(j, p) + u(j) * u(p) * s(i, q) + u(j) * u(q) * s(i, p)) / 4.0
    });
    let sym = |m: &Mat<f64>| evolved::check::symmetric_part(m, k, 2);
    assert!(rel(&sym(&c), &isserlis) < 1e-12, "Cov[T_L] {c} vs Isserlis {isserlis}");
    // Cov[T, T_L] along symmetric directions: the mean of columns (p, q) and (q, p)
    let xs = Mat::from_fn(k, k * k, |i, b| (x[(i, b)] + x[(i, (b % k) * k + b / k)]) / 2.0);
    let cross = Mat::from_fn(k, k * k, |i, b| {
        let (p, q) = (b % k, b / k);
        -(u(p) * s(i, q) + u(q) * s(i, p)) / 2.0
    });
    assert!(rel(&xs, &cross) < 1e-12, "Cov[T, T_L] {x} vs {cross}");

    // the second way: A(h, L + tD) by central differences, D = e_p e_qᵀ + e_q e_pᵀ, gives
    // ⟨E[T_L], D⟩, and second differences along D and E give vec(D)ᵀ Cov[T_L] vec(E)
    let a_at = |l: &Mat<f64>| {
        let mut e = env.clone();
        e.insert(egg::Symbol::from("L"), l.clone());
        ev.eval(&f.logpart, &e).unwrap()[(0, 0)]
    };
    let dir = |p: usize, q: usize| Mat::from_fn(k, k, |a, b| if (a, b) == (p, q) || (a, b) == (q, p) { 1.0 } else { 0.0 });
    let t = 1e-4;
    for (p, q) in [(0, 0), (0, 1), (1, 2), (2, 2)] {
        let d = dir(p, q);
        let fd = (a_at(&(&lam + &d * t)) - a_at(&(&lam - &d * t))) / (2.0 * t);
        let want = m.component_mul(&d).sum();
        assert!((fd - want).abs() < 1e-7 * want.abs().max(1.0), "∂A along D({p},{q}): {fd} vs ⟨E[T_L], D⟩ {want}");
        for (r, s2) in [(0, 0), (1, 0), (2, 1)] {
            let e = dir(r, s2);
            let fd2 = (a_at(&(&lam + (&d + &e) * t)) - a_at(&(&lam + (&d - &e) * t)) - a_at(&(&lam + (&e - &d) * t)) + a_at(&(&lam - (&d + &e) * t))) / (4.0 * t * t);
            let (vd, ve) = (Mat::from_column_slice(k * k, 1, d.as_slice()), Mat::from_column_slice(k * k, 1, e.as_slice()));
            let want2 = (vd.transpose() * &c * ve)[(0, 0)];
            assert!((fd2 - want2).abs() < 1e-5 * want2.abs().max(1.0), "∂²A along D({p},{q}), D({r},{s2}): {fd2} vs {want2}");
        }
    }
}
