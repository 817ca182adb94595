//! `--steps`: the derivation as whole expressions, each naming its rule. Every step is
//! evaluated at random points and must equal the result it leads to, so a wrong step
//! (or a step shown with the wrong expression) fails here.
use evolved::check::{in_matrix_terms, random_point, rel_error, CheckOptions};
use evolved::derive::{derive, Limits};
use evolved::eval::{Evaluator, Mat};
use evolved::steps::explain;
use rand::SeedableRng;
use std::process::Command;

fn evolved(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_evolved")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn examples() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path().to_string_lossy().to_string()).filter(|p| p.ends_with(".ef")).collect();
    v.sort();
    v
}

/// Every step of every example (with `all` steps shown or not) equals its result at 5
/// random points; returns the number of steps checked.
fn steps_agree(all: bool) -> usize {
    let rules = evolved::default_rules();
    let (mut checked, mut skipped) = (0, 0);
    for file in examples() {
        let model = evolved::model_from_text(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let d = derive(&model, &rules, &Limits::default()).unwrap();
        let steps = explain(&model, &d, &Limits::default(), all).unwrap();
        assert_eq!(steps.len(), d.results.len());
        let ev = Evaluator::new(&model);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..5 {
            let (_, mut env) = random_point(&model, &mut rng, &CheckOptions::default());
            for (w, v) in &model.directions {
                let x = env[&egg::Symbol::from(w.as_str())].clone();
                env.insert(egg::Symbol::from(v.as_str()), Mat::from_fn(x.nrows(), 1, |i, _| 0.3 * i as f64 - 0.5));
            }
            for (r, st) in d.results.iter().zip(&steps) {
                assert!(st.gaps.is_empty(), "{file}: {:?}", st.gaps);
                let want = ev.eval(&r.term, &env).unwrap();
                if want.iter().any(|x| !x.is_finite()) {
                    continue;
                }
                for (i, t) in std::iter::once(&st.start).chain(st.steps.iter().map(|s| &s.term)).enumerate() {
                    let got = match ev.eval(t, &env) {
                        Ok(v) => v,
                        // a derivative's 0 stands for a zero of any shape; the evaluator
                        // gives it one shape, which a raw step may not fit
                        // (explanations may pass through 0 to another zero, D(z, W), of another shape)
                        Err(e) if (e.contains("do not match") || e.contains("cannot multiply")) && t.as_ref().iter().any(|n| n.to_string() == "0" || matches!(n, evolved::lang::Node::Jac(_))) => {
                            skipped += 1;
                            continue;
                        }
                        Err(e) => panic!("{file}: step {i} of {}: {e}", r.term),
                    };
                    // a gradient in a matrix is vec(G) until its last step writes it as G
                    let got = if got.shape() != want.shape() && got.len() == want.len() { Mat::from_column_slice(want.nrows(), want.ncols(), got.as_slice()) } else { got };
                    // in a symmetric matrix only symmetric directions count (as in the check):
                    // a step before the family's parameters are symmetrised may differ in the others
                    let (mut got, mut want) = (Ok(got), Ok(want.clone()));
                    in_matrix_terms(&model, r.wrt.as_deref().map(egg::Symbol::from), r.order, &env, &mut got, &mut want);
                    let err = rel_error(&got.unwrap(), &want.unwrap()).unwrap_or(f64::INFINITY);
                    assert!(err < 1e-8, "{file}: step {i} ({t}) of {} differs by {err}", r.term);
                    checked += 1;
                }
                assert_eq!(st.steps.last().map_or(&st.start, |s| &s.term).to_string(), r.term.to_string(), "{file}: the steps end at the result");
            }
        }
    }
    assert!(skipped * 20 <= checked, "{skipped} steps could not be evaluated, {checked} were");
    checked
}

#[test]
fn every_step_equals_its_result() {
    assert!(steps_agree(false) > 200);
}

#[test]
fn every_step_equals_its_result_with_bookkeeping_shown() {
    assert!(steps_agree(true) > 400);
}

#[test]
fn the_seed_derivation_reads_like_the_essay() {
    let out = evolved(&["derive", "examples/softmax_cross_entropy.ef", "--steps", "--no-check"]);
    let steps = out.split("\nsteps\n").nth(1).unwrap().split("\n\n").next().unwrap();
    let numbered = steps.lines().filter(|l| l.trim_start().starts_with('(')).count();
    assert!(numbered <= 12, "{numbered} steps:\n{steps}");
    // the identities, in the essay's order
    let mut rest = steps;
    for want in ["J(θ) = E_q[−log p(x | θ)]", "= A(θ) − qᵀθ", "∇J = ∇_θ(A(θ) − qᵀθ)", "A′(θ) = E[T(x)]", "= E[x] − q", "= p − q",
        "∇²J = ∂(E[x] − q)/∂θ", "= Cov[x]", "A″(θ) = Cov[T(x)]", "= E[x xᵀ] − E[x] E[x]ᵀ", "= diag(E[x]) − E[x] E[x]ᵀ", "= diag(p) − p pᵀ"] {
        let at = rest.find(want).unwrap_or_else(|| panic!("`{want}` missing or out of order in:\n{steps}"));
        rest = &rest[at + want.len()..];
    }
    // side conditions at the step that used them
    assert!(steps.contains("if q does not depend on θ"), "{steps}");
    assert!(steps.contains("assuming 1ᵀq = 1"), "{steps}");
}

#[test]
fn steps_do_not_change_the_results() {
    for file in examples() {
        let plain = evolved(&["derive", &file, "--no-check"]);
        let with = evolved(&["derive", &file, "--no-check", "--steps"]);
        let (head, tail) = with.split_once("\nsteps\n").unwrap();
        let after = tail.split_once("\n\n").map_or("", |x| x.1);
        assert_eq!(format!("{head}{after}"), plain, "{file}");
        let all = evolved(&["derive", &file, "--no-check", "--steps=all"]);
        assert!(all.lines().count() >= with.lines().count(), "{file}");
    }
}
