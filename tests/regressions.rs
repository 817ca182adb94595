//! Inputs found by trying the tool as a user and attacking it, each pinned to the
//! right value or behaviour.
mod common;
use common::*;
use evolved::check::parse_point;
use evolved::eval::Evaluator;

fn value(model: &str, order: usize, point: &str) -> Vec<f64> {
    entries(&derive_text(model).at(order, point))
}

#[test]
fn variable_exponents_keep_their_derivative_at_whole_numbers() {
    let m = "param t : R; data b : positive; J = b^t";
    assert_close(&value(m, 1, "t=2; b=2"), &[4.0 * 2f64.ln()], "d/dt 2^t at 2");
    assert_close(&value(m, 2, "t=2; b=2"), &[4.0 * 2f64.ln().powi(2)], "d²/dt² 2^t at 2");
}

#[test]
fn zero_derivatives_do_not_fail_on_rounding_noise() {
    for m in ["param t : R; J = t / t", "param t : R; J = sigmoid(t) + sigmoid(-t)", "param x : R; J = log(exp(x))"] {
        let d = derive_text(m);
        assert!(d.d.saturated, "{m}: {}", d.d.stop);
        assert!(d.check().passed, "{m}: {:?}", d.check().comparisons);
    }
}

#[test]
fn points_outside_the_domain_are_skipped_not_failed() {
    let d = derive_text("param t : R; J = log(t) * t");
    let r = d.check();
    assert!(r.passed, "{:?}", r.comparisons);
    assert!(r.undefined > 0 && r.points > 0, "{} used, {} skipped", r.points, r.undefined);
    // a loss undefined everywhere is not a pass
    let d = derive_text("param t : R; J = log(-(t ^ 2) - 1)");
    assert!(!d.check().passed);
}

#[test]
fn a_zero_vector_keeps_its_length() {
    assert_close(&value("dim k; param t : R^k; J = sum(exp(0 * t)) + sum(t)", 0, "t=[1,2,3]"), &[9.0], "1ᵀexp(0 t) + 1ᵀt");
}

#[test]
fn a_family_whose_a_is_not_its_log_partition_is_rejected() {
    let e = evolved::model_from_text("param t : R; data y : binary; family coin(s : R) on b : binary, T = b, A = log(1 + exp(2 * s)); y ~ coin(t); J = -log p(y | t)")
        .map(|_| ())
        .unwrap_err();
    assert!(e.contains("not the log-partition"), "{e}");
}

#[test]
fn the_assumption_names_the_distribution_used() {
    let d = derive_text("dim k; param t : R^k; data w : simplex^k; x ~ categorical(t); J = E_w[-log p(x | t)]");
    assert_eq!(d.d.assumptions, vec!["1ᵀw = 1".to_string()]);
}

#[test]
fn logistic_regression_without_a_family() {
    let d = derive_text(include_str!("../examples/logistic_regression.ef"));
    let g = evolved::print::print(&d.model, &d.d.results[1].term, evolved::print::Style::Unicode);
    assert_eq!(g, "Xᵀ (σ(X w) − y)");
    // at a point: Xᵀ(σ(Xw) − y) with X = [[1, 2], [3, 4], [5, 6]], w = [0.1, -0.2], y = [1, 0, 1]
    let pt = "w=[0.1,-0.2]; X=[[1,2],[3,4],[5,6]]; y=[1,0,1]";
    let s = |z: f64| 1.0 / (1.0 + (-z).exp());
    let z = [0.1 - 0.4, 0.3 - 0.8, 0.5 - 1.2];
    let r = [s(z[0]) - 1.0, s(z[1]), s(z[2]) - 1.0];
    let want = [r[0] + 3.0 * r[1] + 5.0 * r[2], 2.0 * r[0] + 4.0 * r[1] + 6.0 * r[2]];
    assert_close(&value(include_str!("../examples/logistic_regression.ef"), 1, pt), &want, "gradient");
}

#[test]
fn hessian_vector_products_come_out_in_linear_time_form() {
    let d = derive_text("dim k; param theta : R^k; data q : simplex^k; x ~ categorical(theta); J = E_q[-log p(x | theta)]; derive hess J, hvp J");
    let hvp = d.d.results.iter().find(|r| r.order == 3).unwrap();
    let names = evolved::report::names(&d.model, &d.d.definitions, evolved::print::Style::Unicode);
    let text = evolved::print::Printer { names, ..evolved::print::Printer::new(&d.model, evolved::print::Style::Unicode) }.print(&hvp.term);
    assert_eq!(text, "p ⊙ v − (pᵀv) p");
    assert!(d.check().passed);
    // H v at a point equals the dense Hessian times v
    let pt = "theta=[0.2,-0.1,0.4]; q=[0.2,0.3,0.5]; v=[1,-2,0.5]";
    let h = d.at(2, pt);
    let v = evolved::eval::Mat::from_column_slice(3, 1, &[1.0, -2.0, 0.5]);
    assert_close(&entries(&d.at(3, pt)), &entries(&(&h * v)), "H v");
}

fn printed(d: &Derived, order: usize, wrt: &str) -> String {
    let r = d.d.results.iter().find(|r| r.order == order && r.wrt.as_deref() == Some(wrt)).unwrap();
    evolved::print::print(&d.model, &r.term, evolved::print::Style::Unicode)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evolved")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn matrix_gradients_come_out_in_the_matrix_shape() {
    // tr(A W) + ½‖Wz − y‖² + ½ lam tr(WᵀW): Aᵀ + (Wz − y)zᵀ + lam W and (z zᵀ) ⊗ I + lam I
    let d = derive_text("dim k, d; param W : R^(k,d); data A : R^(d,k); data z : R^d; data y : R^k; data lam : positive; J = trace(A W) + sum((W z - y)^2) / 2 + lam * trace(W' W) / 2");
    assert_eq!(printed(&d, 1, "W"), "Aᵀ + (W z − y) zᵀ + lam W");
    assert_eq!(printed(&d, 2, "W"), "(z zᵀ) ⊗ I + lam I");
    assert!(d.check().passed);
    let g = d.at(1, "W=[[1,2],[3,4],[5,6]]; A=[[1,0,2],[0,1,0]]; z=[1,-1]; y=[0,1,2]; lam=0.5");
    assert_eq!(g.shape(), (3, 2));
    // Aᵀ + (Wz − y)zᵀ + lam W with Wz − y = [−1, −2, −3]
    assert_close(&entries(&g), &[1.0 - 1.0 + 0.5, 0.0 + 1.0 + 1.0, 0.0 - 2.0 + 1.5, 1.0 + 2.0 + 2.0, 2.0 - 3.0 + 2.5, 0.0 + 3.0 + 3.0], "the gradient");
}

#[test]
fn a_sum_sees_its_index_in_the_rows_it_reads() {
    // the summand depends on i through Y[i] and Z[i]: not a constant to multiply by n
    let d = derive_text("dim n, k, d; param W : R^(k,d); param L : spd^(k,k); data Z : R^(n,d); data Y : R^(n,k); J = sum(i in n, dot(Y[i] - W Z[i], L (Y[i] - W Z[i])) / 2 - logdet(L) / 2)");
    assert!(d.check().passed, "{:?}", d.check().comparisons);
    assert_eq!(printed(&d, 2, "W"), "Σᵢ (zᵢ zᵢᵀ) ⊗ L");
    // and a summand without the index is n times itself: n (L⁻¹ ⊗ L⁻¹) / 2
    assert!(printed(&d, 2, "L").starts_with("n "), "{}", printed(&d, 2, "L"));
    // a dimension as a value is its size: the mean over samples
    let m = derive_text("dim n, d; param w : R^d; data X : R^(n,d); data y : R^n; J = sum(i in n, (dot(X[i], w) - y[i])^2) / (2 * n)");
    assert!(m.check().passed);
    assert_close(&entries(&m.at(0, "w=[1,1]; X=[[1,0],[0,1]]; y=[0,0]")), &[0.5], "(1 + 1)/(2·2)");
}

#[test]
fn index_notation_for_a_matrix_parameter_is_declined_not_failed() {
    let (code, out, err) = run(&["derive", "examples/softmax_regression.ef", "--notation", "index"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("index notation for a matrix parameter (W) is not supported yet"), "{out}");
}

#[test]
fn huge_fixed_sizes_skip_the_check_without_allocating() {
    let (code, out, err) = run(&["derive", "-e", "param W : R^(30000,30000); data z : R^30000; J = logsumexp(W z)"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("check: not run: `W` has 900000000 entries"), "{out}");
}

#[test]
fn a_symmetric_family_parameter_must_be_declared_spd() {
    let (code, _, err) = run(&["derive", "-e", "dim k; param eta : R^(k,k); data X : spd^(k,k); X ~ wishart(eta, n = 5); J = -log p(X)"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("wishart's natural parameter is a symmetric positive definite matrix"), "{err}");
    // a fixed size binds like a named one
    let d = derive_text("param V : spd^(3,3); data X : spd^(3,3); X ~ wishart(V = V, n = 7); J = -log p(X)");
    assert!(d.check().passed);
}

#[test]
fn a_transposed_matrix_parameter_goes_through_the_commutation_matrix() {
    // yᵀW z + tr(WᵀW): y zᵀ + 2W; log det W: W⁻ᵀ and −(W⁻¹ ⊗ W⁻ᵀ) K
    let d = derive_text("dim k, d; param W : R^(k,d); data y : R^k; data z : R^d; J = y' W z + trace(W' W)");
    assert_eq!(printed(&d, 1, "W"), "y zᵀ + 2 W");
    assert!(d.check().passed);
    let d = derive_text("dim k; param W : R^(k,k); J = logdet(W)");
    assert!(d.d.results.iter().all(|r| r.complete), "{:?}", d.d.results.iter().map(|r| r.term.to_string()).collect::<Vec<_>>());
    let c = d.check();
    assert!(c.passed && c.points > 0, "{:?}", c.comparisons);
    // log det is undefined where det < 0: such points are skipped, not taken as log |det|
    assert!(c.undefined > 0);
    assert!(d.at(0, "W=[[0,1],[1,0]]")[(0, 0)].is_nan());
}

#[test]
fn a_known_parameter_given_a_model_parameter_is_differentiated() {
    // x ~ mvnormal(η, S = S) with S a parameter: −log p = ηᵀSη/2 − ηᵀx + xᵀS⁻¹x/2 + logdet(2πS)/2,
    // so ∇_S = ηηᵀ/2 − S⁻¹xxᵀS⁻¹/2 + S⁻¹/2 (the rules once took S's family for a constant: 0)
    let d = derive_text("dim k; param eta : R^k; param S : spd^(k,k); data x : R^k; x ~ mvnormal(eta, S = S); J = -log p(x); derive grad J wrt S");
    assert!(d.check().passed, "{:?}", d.check().comparisons);
    let (eta, x) = ([0.3, -1.2], [1.0, 0.5]);
    let s = nalgebra::Matrix2::new(2.0, 0.4, 0.4, 1.0);
    let si = s.try_inverse().unwrap();
    let (e, xv) = (nalgebra::Vector2::from(eta), nalgebra::Vector2::from(x));
    let want = e * e.transpose() / 2.0 - si * xv * xv.transpose() * si / 2.0 + si / 2.0;
    let got = d.at(1, "eta=[0.3,-1.2]; x=[1,0.5]; S=[[2,0.4],[0.4,1]]");
    let sym = (&got + got.transpose()) / 2.0;
    assert_close(&entries(&sym), &[want[(0, 0)], want[(0, 1)], want[(1, 0)], want[(1, 1)]], "∇_S");
}

#[test]
fn a_model_name_that_is_also_a_family_name_is_not_captured() {
    // the model's n is binomial's success probability; binomial's own n (trials) is 10.
    // −log p = −y log n − (10 − y) log(1 − n) − log C(10, y): the derivative is in the model's n
    let d = derive_text("param n : unit; data y : count; y ~ binomial(prob = n, n = 10); J = -log p(y)");
    assert!(d.check().passed, "{:?}", d.check().comparisons);
    let (n, y) = (0.3f64, 4.0);
    assert_close(&entries(&d.at(1, "n=0.3; y=4")), &[-y / n + (10.0 - y) / (1.0 - n)], "∂/∂n");
    // a model's x as the normal's variance, where the family's own variable is also x
    let d = derive_text("param m : R; param x : positive; data y : R; y ~ normal(mu = m, variance = x); J = -log p(y); derive grad J wrt x");
    assert!(d.check().passed, "{:?}", d.check().comparisons);
    let (m, x, y) = (0.5f64, 2.0, 1.5);
    assert_close(&entries(&d.at(1, "m=0.5; x=2; y=1.5")), &[1.0 / (2.0 * x) - (y - m).powi(2) / (2.0 * x * x)], "∂/∂variance");
}

#[test]
fn a_family_with_known_parameters_in_two_statements() {
    // each statement its own n (this once failed: the second read the first's filled copy)
    let d = derive_text("param a : R; param b : R; data y1 : count; data y2 : count; y1 ~ binomial(a, n = 5); y2 ~ binomial(b, n = 7); J = -log p(y1) - log p(y2); derive grad J wrt a, grad J wrt b");
    assert!(d.check().passed, "{:?}", d.check().comparisons);
    let s = |x: f64| 1.0 / (1.0 + (-x).exp());
    let grads: Vec<f64> = d.d.results.iter().filter(|r| r.order == 1).map(|r| Evaluator::new(&d.model).eval(&r.term, &parse_point(&d.model, "a=0.3; b=-0.2; y1=2; y2=6").unwrap()).unwrap()[(0, 0)]).collect();
    assert_close(&grads, &[5.0 * s(0.3) - 2.0, 7.0 * s(-0.2) - 6.0], "∂/∂a, ∂/∂b");
    // mvnormal2 in its usual parameters, twice (this once panicked)
    let d = derive_text("dim k; param a : R^k; param b : R^k; param S : spd^(k,k); data x1 : R^k; data x2 : R^k; x1 ~ mvnormal2(mu = a, Sigma = S); x2 ~ mvnormal2(mu = b, Lambda = S); J = -log p(x1) - log p(x2); derive grad J wrt a, grad J wrt b");
    assert!(d.check().passed, "{:?}", d.check().comparisons);
    // a family declared inline with a second natural parameter and usual parameters (this
    // once panicked while the family was validated)
    let d = derive_text("family f(t : R, Q : negative) on z : R, T = z, T(Q) = z^2, A = -t^2/(4*Q) - log(-2*Q)/2, usual(m : R, v : positive) = (m / v, -1/(2*v)); param a : R; data y : R; y ~ f(a, Q = -1); J = -log p(y)");
    assert!(d.check().passed, "{:?}", d.check().comparisons);
    // with Q = −1 the member is N(t/2, 1/2): ∂/∂t of −log p(y) = E[z] − y = t/2 − y
    assert_close(&value("family f(t : R, Q : negative) on z : R, T = z, T(Q) = z^2, A = -t^2/(4*Q) - log(-2*Q)/2; param a : R; data y : R; y ~ f(a, Q = -1); J = -log p(y)", 1, "a=0.8; y=0.1"), &[0.4 - 0.1], "∂/∂t");
}

#[test]
fn a_claim_in_a_symmetric_matrix_counts_symmetric_directions() {
    // (x − μ)(x − μ)ᵀ/2 − Λ⁻¹/2 is the gradient in Λ along symmetric directions, though the
    // derived form has μxᵀ where this has (μxᵀ + xμᵀ)/2; a wrong claim still fails
    let src = include_str!("../examples/gaussian_mean_precision.ef").replace("derive grad J wrt mu, hess J wrt mu, grad J wrt Lambda, hess J wrt Lambda", "derive grad J wrt Lambda");
    let right = derive_text(&format!("{src}\nclaim grad J wrt Lambda = (outer(x - mu, x - mu) - inv(Lambda)) / 2"));
    assert!(right.check().passed, "{:?}", right.check().comparisons);
    let wrong = derive_text(&format!("{src}\nclaim grad J wrt Lambda = outer(x - mu, x - mu) / 2"));
    assert!(!wrong.check().passed);
}

#[test]
fn kl_in_its_first_argument_for_a_continuous_family() {
    // normal2([a, −1]) is N(a/2, 1/2) and normal2([b, −2]) is N(b/4, 1/4); KL(N(μ₁, σ₁²) ‖
    // N(μ₂, σ₂²)) = log(σ₂/σ₁) + (σ₁² + (μ₁ − μ₂)²)/(2σ₂²) − 1/2, so ∂KL/∂a = 2(a/2 − b/4) = a − b/2.
    // (The check's reference once held E_a[T] fixed: its ∂/∂a was 0, and the check failed.)
    let m = "param a : R; param b : R; J = KL(normal2([a, -1]) || normal2([b, -2])); derive grad J wrt a, hess J wrt a";
    let d = derive_text(m);
    assert!(d.check().passed, "{:?}", d.check().comparisons);
    assert_close(&value(m, 1, "a=1; b=0.5"), &[0.75], "∂KL/∂a");
}

#[test]
fn two_families_log_partitions_are_told_apart() {
    // ∂/∂N of binomial's A(η) = N log(1 + e^η) is log(1 + e^η), which the rules know as
    // Bernoulli's A: printed as a second `A(η)` it read as the first
    let d = derive_text("param eta : R; param N : count; data y : count; y ~ binomial(eta, n = N); J = -log p(y); derive grad J wrt N");
    let text = evolved::report::Outcome::new(&d.model, &d.d, &[]).text(evolved::print::Style::Unicode, false);
    assert!(text.contains("A_bernoulli(η) = log(1 + exp(η))") && text.contains("A(η) = N log(1 + exp(η))"), "{text}");
    assert_close(&value("param eta : R; param N : count; data y : count; y ~ binomial(eta, n = N); J = -log p(y); derive grad J wrt N", 1, "eta=0.4; N=6; y=2"), &[(1.0 + 0.4f64.exp()).ln() - (1.0 / 5.0 + 1.0 / 6.0)], "∂/∂N = log(1 + e^η) − (ψ(7) − ψ(5))");
}
