//! The shared worked cases this part of the tool covers, with their exact values.
mod common;
use common::*;

/// Derives `model`, evaluates value, gradient and Hessian at the case's evaluation `i`
/// (the point given as `--at` text), and compares with the case's numbers.
fn run_case(id: &str, model: &str, i: usize, point: &str) -> Derived {
    let c = case(id);
    let e = &c["evaluations"][i];
    let d = derive_text(model);
    assert_close(&entries(&d.at(0, point)), &flat(&e["value"]), &format!("{id} value"));
    assert_close(&entries(&d.at(1, point)), &flat(&e["gradient"]), &format!("{id} gradient"));
    assert_close(&entries(&d.at(2, point)), &flat(&e["hessian"]), &format!("{id} Hessian"));
    assert!(d.check().passed, "{id}: numeric check failed");
    d
}

#[test]
fn c01_fused_softmax_xent_hessian_is_not_zero() {
    let d = run_case("C01", "param z : R^2; data y : onehot^2; J = -dot(y, z) + log(sum(exp(z)))", 0, "z=[0.5,0.5]; y=[1,0]");
    let h = d.at(2, "z=[0.5,0.5]; y=[1,0]");
    assert!(h.iter().any(|x| x.abs() > 0.1), "the Hessian must not be the all-zero matrix");
    let ones = Mat1::from_element(2, 1, 1.0);
    assert!((&h * ones).iter().all(|x| x.abs() < 1e-15), "H 1 = 0");
    // the primitive form and the expanded form give the same Hessian
    let p = derive_text("param z : R^2; data y : onehot^2; J = -dot(y, z) + logsumexp(z)");
    assert_close(&entries(&p.at(2, "z=[0.5,0.5]; y=[1,0]")), &entries(&h), "primitive vs expanded");
}

type Mat1 = evolved::eval::Mat<f64>;

#[test]
fn c05_softplus_gradient_at_the_kink_and_far_left() {
    let m = "param x : R; data t : unit; l = log(1 + exp(x)) - t * x";
    run_case("C05", m, 0, "x=0; t=0");
    let d = run_case("C05", m, 1, "x=-100; t=0");
    let c = case("C05");
    let wrong = &c["wrong_answers_to_reject"];
    let g = d.at(1, "x=0; t=0")[(0, 0)];
    assert_ne!(g, wrong["grad_at_0_with_sign(0)=0_and_clamp_grad_0 (reported)"].as_f64().unwrap());
    assert_ne!(g, wrong["grad_at_0_with_sign(0)=0_and_clamp_grad_1"].as_f64().unwrap());
    // finite and not flushed to zero far out
    for order in 0..3 {
        let v = d.at(order, "x=-100; t=0")[(0, 0)];
        assert!(v.is_finite() && v > 0.0, "order {order}: {v}");
    }
}

#[test]
fn c08_label_smoothing_keeps_the_target_sum() {
    let m = "dim k; param z : R^k; data t : positive^k; J = -dot(t, log(softmax(z)))";
    let pt = |c: &serde_json::Value, i: usize| {
        let e = &c["evaluations"][i]["point"];
        format!("z={}; t={}", e["z"], e["targets"])
    };
    let c = case("C08");
    let d = run_case("C08", m, 0, &pt(&c, 0));
    // the correctly normalised targets sum to one; the same formula covers them
    let m2 = "dim k; param z : R^k; data t : simplex^k; J = -dot(t, log(softmax(z)))";
    let e1 = &c["evaluations"][1]["point"];
    let total: f64 = flat(&e1["targets"]).iter().sum();
    let targets: Vec<f64> = flat(&e1["targets"]).iter().map(|x| x / total).collect();
    let p1 = format!("z={}; t={:?}", e1["z"], targets);
    run_case("C08", m2, 1, &p1);
    // p − t would be wrong for the unnormalised targets
    let g = d.at(1, &pt(&c, 0));
    let wrong = flat(&c["wrong_answers_to_reject"]["gradient p - t for buggy targets (assumes sum t = 1)"]);
    assert!((g[(0, 0)] - wrong[0]).abs() > 1e-3);
    // and the text says so: the factor 1ᵀt stays
    let text = evolved::print::Printer::new(&d.model, evolved::print::Style::Unicode).print(&d.d.results[1].term);
    assert!(text.contains("1ᵀt"), "{text}");
    assert!(d.d.assumptions.is_empty(), "no normalisation was assumed: {:?}", d.d.assumptions);
}

#[test]
fn c14_bce_with_logits_prints_unambiguously() {
    let m = "param z : R; data y : unit; J = y * log(1 + exp(-z)) + (1 - y) * log(1 + exp(z))";
    let d = run_case("C14", m, 0, "z=0.8; y=0.3");
    // The loss as written prints with the brackets it needs, in LaTeX and text …
    let loss = d.model.loss("J").unwrap();
    let tex = evolved::print::print(&d.model, loss, evolved::print::Style::Latex);
    assert!(tex.contains("\\log\\left(1 + e^{-z}\\right)"), "{tex}");
    assert!(tex.contains("\\left(1 - y\\right)"), "{tex}");
    // … and the printed text reads back as the same function (value at the case's point).
    let ascii = evolved::print::print(&d.model, loss, evolved::print::Style::Ascii);
    let back = derive_text(&format!("param z : R; data y : unit; J = {ascii}"));
    let want = case("C14")["evaluations"][0]["value"].as_f64().unwrap();
    assert_close(&entries(&back.at(0, "z=0.8; y=0.3")), &[want], "round trip of the printed loss");
    let wrong = &case("C14")["wrong_answers_to_reject"];
    for (_, v) in wrong.as_object().unwrap() {
        assert!((back.at(0, "z=0.8; y=0.3")[(0, 0)] - v.as_f64().unwrap()).abs() > 1e-3);
    }
}

#[test]
fn c03_logistic_loglik_hessian_is_a_matrix() {
    let c = case("C03");
    let e = &c["evaluations"][0]["point"];
    let pt = format!("theta={}; X={}; y={}", e["theta"], e["X"], e["y"]);
    let d = run_case("C03", include_str!("../examples/logistic_loglik.ef"), 0, &pt);
    let h = d.at(2, &pt);
    assert_eq!(h.shape(), (2, 2), "the Hessian is d×d, not a scalar");
    let wrong = c["wrong_answers_to_reject"]["scalar_from_inner_product  -sum h(1-h) x_i^T x_i"].as_f64().unwrap();
    assert!(h.iter().all(|x| (x - wrong).abs() > 1e-3));
}
