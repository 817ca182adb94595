//! `--notation index`: results read entry by entry, and checked numerically like the
//! matrix forms they come from.
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_evolved")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap())
}

fn comparisons(j: &serde_json::Value) -> Vec<(String, f64, bool)> {
    j["check"]["comparisons"].as_array().unwrap().iter().map(|c| (c["quantity"].as_str().unwrap().to_string(), c["max_rel_error"].as_f64().unwrap_or(f64::INFINITY), c["passed"].as_bool().unwrap())).collect()
}

#[test]
fn the_seed_in_index_notation() {
    let (code, out) = run(&["derive", "examples/softmax_cross_entropy.ef", "--notation", "index", "--no-check"]);
    assert_eq!(code, 0);
    assert!(out.contains("∂J/∂θᵢ     = pᵢ − qᵢ"), "{out}");
    assert!(out.contains("∂²J/∂θᵢ∂θⱼ = pᵢ δᵢⱼ − pᵢ pⱼ"), "{out}");
    let (_, tex) = run(&["derive", "examples/softmax_cross_entropy.ef", "--notation", "index", "--no-check", "--latex"]);
    assert!(tex.contains("\\frac{\\partial^2 J}{\\partial \\theta_{i} \\partial \\theta_{j}} &= p_{i} \\delta_{ij} - p_{i} p_{j}"), "{tex}");
}

#[test]
fn index_forms_pass_the_numeric_check() {
    for f in ["softmax_cross_entropy", "logistic_regression", "least_squares", "bce_with_logits", "logistic_loglik", "label_smoothing"] {
        let (code, out) = run(&["derive", &format!("examples/{f}.ef"), "--notation", "index", "--json"]);
        assert_eq!(code, 0, "{f}: {out}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        let idx: Vec<_> = comparisons(&j).into_iter().filter(|c| c.0.ends_with("(index form)")).collect();
        assert_eq!(idx.len(), 2, "{f}: gradient and Hessian index forms");
        assert!(idx.iter().all(|c| c.2 && c.1 < 1e-10), "{f}: {idx:?}");
    }
}

#[test]
fn logistic_regression_in_index_notation() {
    let (_, out) = run(&["derive", "examples/logistic_regression.ef", "--notation", "index", "--no-check"]);
    assert!(out.contains("∂J/∂wᵢ     = Σₖ Xₖᵢ (σ(Σₗ Xₖₗ wₗ) − yₖ)"), "{out}");
}
