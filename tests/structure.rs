//! What the tool says about a Hessian's structure, and the eigenvalues that confirm it.
use std::process::Command;

fn json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_evolved")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn hessian(j: &serde_json::Value) -> (&serde_json::Value, &serde_json::Value) {
    let r = j["results"].as_array().unwrap().iter().find(|r| r["order"] == 2).unwrap();
    (r, &j["check"]["eigenvalues"][0])
}

#[test]
fn the_seed_hessian_is_psd_with_null_space_ones() {
    let j = json(&["derive", "examples/softmax_cross_entropy.ef", "--json", "--points", "30"]);
    let (r, e) = hessian(&j);
    let p = r["property"].as_str().unwrap();
    assert!(p.contains("a covariance, so J is convex in θ") && p.contains("null space holds 𝟙"), "{p}");
    assert_eq!(e["points"], 30);
    assert_eq!(e["psd"], true);
    assert!(e["min_rel_eigenvalue"].as_f64().unwrap() > -1e-12);
    assert_eq!(e["null_dims"], serde_json::json!([1, 1]));
    assert_eq!(e["ones_in_null_space"], true);
}

#[test]
fn an_indefinite_hessian_is_not_called_psd() {
    // xᵀMx with M drawn at random: M + Mᵀ has negative eigenvalues
    let j = json(&["derive", "examples/quadratic_form.ef", "--json"]);
    let (r, e) = hessian(&j);
    assert!(r.get("property").is_none(), "{r}");
    assert_eq!(e["psd"], false);
    assert!(e["min_rel_eigenvalue"].as_f64().unwrap() < -0.01);
    assert_eq!(e["ones_in_null_space"], false);
}

#[test]
fn logistic_regression_is_x_t_d_x_and_psd() {
    let j = json(&["derive", "examples/logistic_regression.ef", "--json"]);
    let (r, e) = hessian(&j);
    assert!(r["property"].as_str().unwrap().starts_with("Xᵀ D X"), "{r}");
    assert_eq!(e["psd"], true);
    // n < d at some points: X has a null space, and so has XᵀDX
    assert!(e["null_dims"][1].as_u64().unwrap() > 0);
}

#[test]
fn a_bernoulli_variance_has_no_null_space_claim() {
    let j = json(&["derive", "examples/bernoulli_nll.ef", "--json"]);
    let (r, _) = hessian(&j);
    let p = r["property"].as_str().unwrap();
    assert!(p.contains("covariance") && !p.contains("null space"), "{p}");
}
