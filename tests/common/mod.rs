//! Shared test helpers: derive a model with the built-in rules and evaluate its results.
#![allow(dead_code)]

use evolved::check::{check, parse_point, CheckOptions, CheckReport};
use evolved::derive::{derive, Derivation, Limits};
use evolved::eval::{Evaluator, Mat};
use evolved::model::Model;
use serde_json::Value;

pub struct Derived {
    pub model: Model,
    pub d: Derivation,
}

pub fn derive_text(src: &str) -> Derived {
    let model = evolved::model_from_text(src).unwrap_or_else(|e| panic!("{e}"));
    let d = derive(&model, &evolved::default_rules(), &Limits::default()).unwrap();
    assert!(d.conflicts.is_empty(), "shape conflicts: {:?}", d.conflicts);
    Derived { model, d }
}

impl Derived {
    /// The result of this order (0 value, 1 gradient, 2 Hessian) evaluated at a point.
    pub fn at(&self, order: usize, point: &str) -> Mat<f64> {
        let env = parse_point(&self.model, point).unwrap();
        let r = self.d.results.iter().find(|r| r.order == order).expect("result");
        assert!(r.complete, "not fully derived: {:?}", r.term.to_string());
        Evaluator::new(&self.model).eval(&r.term, &env).unwrap()
    }

    pub fn check(&self) -> CheckReport {
        check(&self.model, &self.d, &CheckOptions::default(), &|_| "definition".into())
    }
}

/// The worked cases (copied from the shared case file).
pub fn case(id: &str) -> Value {
    let all: Value = serde_json::from_str(include_str!("../data/cases.json")).unwrap();
    all["cases"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no case {id}")).clone()
}

/// Flattens a JSON number, vector or matrix (rows) to a row-major list.
pub fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(xs) => xs.iter().flat_map(flat).collect(),
        x => vec![x.as_f64().unwrap()],
    }
}

/// Row-major entries of a matrix.
pub fn entries(m: &Mat<f64>) -> Vec<f64> {
    (0..m.nrows()).flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)])).collect()
}

/// Asserts agreement to a relative 1e-9 (the references have 10 significant digits).
pub fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        let tol = 1e-9 * w.abs().max(1e-300) + if *w == 0.0 { 1e-15 } else { 0.0 };
        assert!((g - w).abs() <= tol, "{what}: got {got:?}, want {want:?}");
    }
}
