//! Linear predictors and matrix parameters (issue 4's table): each example derives to the
//! stated form, and its values at a point agree with the formula computed here in plain
//! nalgebra and with central differences of the loss written here by hand, in the
//! documented layout (gradient shaped like the matrix, Hessian over vec column-major).
mod common;
use common::*;
use nalgebra::{DMatrix, DVector};
use serde_json::Value;
use std::process::Command;

fn json_at(example: &str, at: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_evolved"))
        .args(["derive", example, "--at", at, "--json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn result<'a>(j: &'a Value, order: u64) -> &'a Value {
    j["results"].as_array().unwrap().iter().find(|r| r["order"] == order).unwrap()
}

/// A JSON list of rows as a matrix.
fn mat(v: &Value) -> DMatrix<f64> {
    let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect();
    DMatrix::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
}

fn vector(v: &Value) -> DVector<f64> {
    DVector::from_iterator(v.as_array().unwrap().len(), v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
}

fn assert_mat(got: &DMatrix<f64>, want: &DMatrix<f64>, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    let err = (got - want).iter().fold(0.0f64, |m, x| m.max(x.abs())) / scale;
    assert!(err <= tol, "{what}: relative error {err}\ngot {got}\nwant {want}");
}

/// Central differences of f over the entries of x in column-major order: gradient (shaped
/// like x) and Hessian over vec(x).
fn differences(x: &DMatrix<f64>, f: &dyn Fn(&DMatrix<f64>) -> f64) -> (DMatrix<f64>, DMatrix<f64>) {
    let n = x.len();
    let h = 1e-4;
    let bump = |e: &[(usize, f64)]| {
        let mut y = x.clone();
        for &(k, s) in e {
            y[k] += s;
        }
        f(&y)
    };
    let g = DMatrix::from_fn(x.nrows(), x.ncols(), |i, j| {
        let k = i + j * x.nrows();
        (bump(&[(k, h)]) - bump(&[(k, -h)])) / (2.0 * h)
    });
    let hess = DMatrix::from_fn(n, n, |a, b| (bump(&[(a, h), (b, h)]) - bump(&[(a, h), (b, -h)]) - bump(&[(a, -h), (b, h)]) + bump(&[(a, -h), (b, -h)])) / (4.0 * h * h));
    (g, hess)
}

fn softmax(v: &DVector<f64>) -> DVector<f64> {
    let m = v.max();
    let e = v.map(|x| (x - m).exp());
    let s = e.sum();
    e / s
}

fn logsumexp(v: &DVector<f64>) -> f64 {
    let m = v.max();
    m + v.map(|x| (x - m).exp()).sum().ln()
}

#[test]
fn softmax_regression_in_a_weight_matrix() {
    let d = derive_text(include_str!("../examples/softmax_regression.ef"));
    let text = |o: usize| evolved::print::Printer { names: evolved::report::names(&d.model, &d.d.definitions, evolved::print::Style::Unicode), ..evolved::print::Printer::new(&d.model, evolved::print::Style::Unicode) }.print(&d.d.results.iter().find(|r| r.order == o).unwrap().term);
    assert_eq!(text(1), "(p − y) zᵀ");
    assert_eq!(text(2), "(z zᵀ) ⊗ (diag(p) − p pᵀ)");
    assert!(d.check().passed);

    let w = DMatrix::from_row_slice(3, 2, &[0.5, -1.0, 0.25, 2.0, -0.75, 0.1]);
    let z = DVector::from_vec(vec![1.5, -0.5]);
    let y = DVector::from_vec(vec![0.2, 0.5, 0.3]);
    let at = "W=[[0.5,-1],[0.25,2],[-0.75,0.1]]; z=[1.5,-0.5]; y=[0.2,0.5,0.3]";
    let j = json_at("examples/softmax_regression.ef", at);
    // the formula, computed here
    let p = softmax(&(&w * &z));
    let grad = (&p - &y) * z.transpose();
    let cov = DMatrix::from_diagonal(&p) - &p * p.transpose();
    let hess = (&z * z.transpose()).kronecker(&cov);
    assert_mat(&mat(&result(&j, 1)["value"]), &grad, 1e-12, "gradient (p − y) zᵀ");
    assert_mat(&mat(&result(&j, 2)["value"]), &hess, 1e-12, "Hessian (z zᵀ) ⊗ (diag(p) − ppᵀ)");
    // and the loss, differenced entry by entry in the documented layout
    let loss = |w: &DMatrix<f64>| logsumexp(&(w * &z)) - y.dot(&(w * &z));
    assert!((result(&j, 0)["value"].as_f64().unwrap() - loss(&w)).abs() < 1e-12);
    let (g, h) = differences(&w, &loss);
    assert_mat(&mat(&result(&j, 1)["value"]), &g, 1e-8, "gradient vs central differences");
    assert_mat(&mat(&result(&j, 2)["value"]), &h, 1e-6, "Hessian vs central differences over vec(W)");
    assert!(j["conventions"][0].as_str().unwrap().contains("column by column"));
}

#[test]
fn gaussian_nll_in_the_precision_matrix() {
    let d = derive_text(include_str!("../examples/gaussian_precision.ef"));
    assert!(d.check().passed);
    let lam = DMatrix::from_row_slice(3, 3, &[2.0, 0.3, -0.2, 0.3, 1.5, 0.4, -0.2, 0.4, 1.0]);
    let x = DVector::from_vec(vec![0.5, -1.0, 2.0]);
    let mu = DVector::from_vec(vec![0.1, 0.2, -0.3]);
    let at = "Lambda=[[2,0.3,-0.2],[0.3,1.5,0.4],[-0.2,0.4,1]]; x=[0.5,-1,2]; mu=[0.1,0.2,-0.3]";
    let j = json_at("examples/gaussian_precision.ef", at);
    let u = &x - &mu;
    let inv = lam.clone().try_inverse().unwrap();
    let grad = (&u * u.transpose() - &inv) / 2.0;
    let hess = inv.kronecker(&inv) / 2.0;
    assert_mat(&mat(&result(&j, 1)["value"]), &grad, 1e-12, "gradient ½[(x − μ)(x − μ)ᵀ − Λ⁻¹]");
    assert_mat(&mat(&result(&j, 2)["value"]), &hess, 1e-12, "Hessian ½ Λ⁻¹ ⊗ Λ⁻¹");
    // along symmetric directions E, F the loss's second differences agree
    let loss = |l: &DMatrix<f64>| u.dot(&(l * &u)) / 2.0 - l.determinant().ln() / 2.0;
    assert!((result(&j, 0)["value"].as_f64().unwrap() - loss(&lam)).abs() < 1e-12);
    let e = DMatrix::from_row_slice(3, 3, &[1.0, 0.5, 0.0, 0.5, -1.0, 0.2, 0.0, 0.2, 0.3]);
    let f = DMatrix::from_row_slice(3, 3, &[0.0, 1.0, -0.4, 1.0, 0.2, 0.0, -0.4, 0.0, 0.7]);
    let h = 1e-4;
    let second = (loss(&(&lam + &e * h + &f * h)) - loss(&(&lam + &e * h - &f * h)) - loss(&(&lam - &e * h + &f * h)) + loss(&(&lam - &e * h - &f * h))) / (4.0 * h * h);
    let (ve, vf) = (DVector::from_column_slice(e.as_slice()), DVector::from_column_slice(f.as_slice()));
    let got = ve.dot(&(mat(&result(&j, 2)["value"]) * &vf));
    assert!((got - second).abs() < 1e-6 * second.abs().max(1.0), "vec(E)ᵀ H vec(F) = {got}, differences {second}");
    let first = (loss(&(&lam + &e * h)) - loss(&(&lam - &e * h))) / (2.0 * h);
    let got = mat(&result(&j, 1)["value"]).component_mul(&e).sum();
    assert!((got - first).abs() < 1e-8, "⟨∇J, E⟩ = {got}, differences {first}");
    assert!(j["conventions"][0].as_str().unwrap().contains("symmetric directions"));
    // in μ: Λ(μ − x) and Λ
    let by = |q: &str| j["results"].as_array().unwrap().iter().find(|r| r["quantity"] == q).unwrap().clone();
    assert_eq!(by("grad J wrt mu")["text"], "Λ (μ − x)");
    let g = &lam * (&mu - &x);
    assert_mat(&DMatrix::from_column_slice(3, 1, vector(&by("grad J wrt mu")["value"]).as_slice()), &DMatrix::from_column_slice(3, 1, g.as_slice()), 1e-12, "Λ(μ − x)");
    assert_mat(&mat(&by("hess J wrt mu")["value"]), &lam, 1e-12, "Λ");
}

#[test]
fn logsumexp_of_a_linear_map_in_its_input() {
    let d = derive_text(include_str!("../examples/logsumexp_linear.ef"));
    assert!(d.check().passed);
    let w = DMatrix::from_row_slice(3, 2, &[1.0, -2.0, 0.5, 0.25, -1.0, 3.0]);
    let z = DVector::from_vec(vec![0.3, -0.7]);
    let j = json_at("examples/logsumexp_linear.ef", "W=[[1,-2],[0.5,0.25],[-1,3]]; z=[0.3,-0.7]");
    let p = softmax(&(&w * &z));
    let grad = w.transpose() * &p;
    let hess = w.transpose() * (DMatrix::from_diagonal(&p) - &p * p.transpose()) * &w;
    assert_mat(&DMatrix::from_column_slice(2, 1, vector(&result(&j, 1)["value"]).as_slice()), &DMatrix::from_column_slice(2, 1, grad.as_slice()), 1e-12, "Wᵀp");
    assert_mat(&mat(&result(&j, 2)["value"]), &hess, 1e-12, "Wᵀ(diag(p) − ppᵀ)W");
}

#[test]
fn temperature_keeps_its_factor() {
    let j = json_at("examples/softmax_temperature.ef", "z=[1,-0.5,2]; y=[0.1,0.6,0.3]; T=2.5");
    assert_eq!(result(&j, 1)["text"], "(p − y) / T");
    assert_eq!(result(&j, 2)["text"], "(diag(p) − p pᵀ) / T²");
    let z = DVector::from_vec(vec![1.0, -0.5, 2.0]);
    let y = DVector::from_vec(vec![0.1, 0.6, 0.3]);
    let p = softmax(&(&z / 2.5));
    let g = (&p - &y) / 2.5;
    let h = (DMatrix::from_diagonal(&p) - &p * p.transpose()) / 6.25;
    assert_mat(&DMatrix::from_column_slice(3, 1, vector(&result(&j, 1)["value"]).as_slice()), &DMatrix::from_column_slice(3, 1, g.as_slice()), 1e-12, "(p − y)/T");
    assert_mat(&mat(&result(&j, 2)["value"]), &h, 1e-12, "(diag(p) − ppᵀ)/T²");
}

#[test]
fn weighted_logistic_regression_keeps_every_weight() {
    let at = "w=[0.5,-0.25]; X=[[1,2],[-1,0.5],[0.3,-2]]; y=[1,0,1]; c=[2,0.5,1.5]";
    let j = json_at("examples/weighted_logistic.ef", at);
    let x = DMatrix::from_row_slice(3, 2, &[1.0, 2.0, -1.0, 0.5, 0.3, -2.0]);
    let w = DVector::from_vec(vec![0.5, -0.25]);
    let (y, c) = (DVector::from_vec(vec![1.0, 0.0, 1.0]), DVector::from_vec(vec![2.0, 0.5, 1.5]));
    let s = (&x * &w).map(|t: f64| 1.0 / (1.0 + (-t).exp()));
    let g = x.transpose() * (&s - &y).component_mul(&c);
    let d = c.component_mul(&s.map(|t| t * (1.0 - t)));
    let h = x.transpose() * DMatrix::from_diagonal(&d) * &x;
    assert_mat(&DMatrix::from_column_slice(2, 1, vector(&result(&j, 1)["value"]).as_slice()), &DMatrix::from_column_slice(2, 1, g.as_slice()), 1e-12, "Xᵀ diag(c)(σ − y)");
    assert_mat(&mat(&result(&j, 2)["value"]), &h, 1e-12, "Xᵀ diag(c ⊙ σ(1 − σ)) X");
}

#[test]
fn least_squares_and_a_quadratic_form_by_the_calculus_rules_alone() {
    let j = json_at("examples/least_squares.ef", "x=[1,-1]; A=[[1,2],[3,4],[0,1]]; b=[0.5,0,1]");
    let a = DMatrix::from_row_slice(3, 2, &[1.0, 2.0, 3.0, 4.0, 0.0, 1.0]);
    let r = &a * DVector::from_vec(vec![1.0, -1.0]) - DVector::from_vec(vec![0.5, 0.0, 1.0]);
    let g = a.transpose() * &r * 2.0;
    assert_mat(&DMatrix::from_column_slice(2, 1, vector(&result(&j, 1)["value"]).as_slice()), &DMatrix::from_column_slice(2, 1, g.as_slice()), 1e-12, "2Aᵀ(Ax − b)");
    assert_mat(&mat(&result(&j, 2)["value"]), &(a.transpose() * &a * 2.0), 1e-12, "2AᵀA");
    let j = json_at("examples/quadratic_form.ef", "x=[1,2]; M=[[1,2],[-3,4]]");
    let m = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, -3.0, 4.0]);
    let g = (&m + m.transpose()) * DVector::from_vec(vec![1.0, 2.0]);
    assert_mat(&DMatrix::from_column_slice(2, 1, vector(&result(&j, 1)["value"]).as_slice()), &DMatrix::from_column_slice(2, 1, g.as_slice()), 1e-12, "(M + Mᵀ)x");
    assert_mat(&mat(&result(&j, 2)["value"]), &(&m + m.transpose()), 1e-12, "M + Mᵀ");
}

#[test]
fn softmax_regression_over_n_samples() {
    let d = derive_text(include_str!("../examples/softmax_regression_samples.ef"));
    let p = evolved::print::Printer { names: evolved::report::names(&d.model, &d.d.definitions, evolved::print::Style::Unicode), ..evolved::print::Printer::new(&d.model, evolved::print::Style::Unicode) };
    let text = |o: usize| p.print(&d.d.results.iter().find(|r| r.order == o).unwrap().term);
    assert_eq!(text(1), "Σᵢ (pᵢ − yᵢ) zᵢᵀ");
    assert_eq!(text(2), "Σᵢ (zᵢ zᵢᵀ) ⊗ (diag(pᵢ) − pᵢ pᵢᵀ)");
    assert!(d.check().passed);

    let w = DMatrix::from_row_slice(3, 2, &[1.0, 0.0, 0.5, -1.0, 0.0, 2.0]);
    let z = DMatrix::from_row_slice(4, 2, &[1.0, 2.0, 0.5, -1.0, 2.0, 0.0, -1.0, 1.0]);
    let y = DMatrix::from_row_slice(4, 3, &[0.2, 0.3, 0.5, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.3, 0.3, 0.4]);
    let at = "W=[[1,0],[0.5,-1],[0,2]]; Z=[[1,2],[0.5,-1],[2,0],[-1,1]]; Y=[[0.2,0.3,0.5],[1,0,0],[0,0.5,0.5],[0.3,0.3,0.4]]";
    let j = json_at("examples/softmax_regression_samples.ef", at);
    // (P − Y)ᵀZ and Σᵢ zᵢzᵢᵀ ⊗ (diag(pᵢ) − pᵢpᵢᵀ), computed here
    let probs: Vec<DVector<f64>> = (0..4).map(|i| softmax(&(&w * z.row(i).transpose()))).collect();
    let pm = DMatrix::from_fn(4, 3, |i, c| probs[i][c]);
    let grad = (&pm - &y).transpose() * &z;
    let mut hess = DMatrix::zeros(6, 6);
    for (i, p) in probs.iter().enumerate() {
        let zi = z.row(i).transpose();
        hess += (&zi * zi.transpose()).kronecker(&(DMatrix::from_diagonal(p) - p * p.transpose()));
    }
    assert_mat(&mat(&result(&j, 1)["value"]), &grad, 1e-12, "(P − Y)ᵀZ");
    assert_mat(&mat(&result(&j, 2)["value"]), &hess, 1e-12, "Σᵢ zᵢzᵢᵀ ⊗ (diag(pᵢ) − pᵢpᵢᵀ)");
    let loss = |w: &DMatrix<f64>| (0..4).map(|i| {
        let t = w * z.row(i).transpose();
        logsumexp(&t) - y.row(i).transpose().dot(&t)
    }).sum::<f64>();
    assert!((result(&j, 0)["value"].as_f64().unwrap() - loss(&w)).abs() < 1e-12);
    let (g, h) = differences(&w, &loss);
    assert_mat(&mat(&result(&j, 1)["value"]), &g, 1e-8, "gradient vs central differences");
    assert_mat(&mat(&result(&j, 2)["value"]), &h, 1e-6, "Hessian vs central differences over vec(W)");
}

#[test]
fn class_weights_stay_in_every_factor() {
    let j = json_at("examples/class_weights.ef", "z=[0.5,-1,2]; y=[0.2,0.5,0.3]; a=[2,1,0.5]");
    let z = DVector::from_vec(vec![0.5, -1.0, 2.0]);
    let ay = DVector::from_vec(vec![0.4, 0.5, 0.15]);
    let p = softmax(&z);
    let s = ay.sum();
    let g = &p * s - &ay;
    let h = (DMatrix::from_diagonal(&p) - &p * p.transpose()) * s;
    assert_mat(&DMatrix::from_column_slice(3, 1, vector(&result(&j, 1)["value"]).as_slice()), &DMatrix::from_column_slice(3, 1, g.as_slice()), 1e-12, "(1ᵀ(a ⊙ y)) p − a ⊙ y");
    assert_mat(&mat(&result(&j, 2)["value"]), &h, 1e-12, "(1ᵀ(a ⊙ y)) (diag(p) − ppᵀ)");
}
