//! Evaluator: the derived Hessian diag(p) − p pᵀ and the Hessian-vector product
//! p ⊙ v − (pᵀv) p of the seed loss (softmax cross-entropy), evaluated by the crate's
//! `Evaluator` at k = 1000 and 4000. `benches/numpy_baseline.py` times the same
//! formulas with NumPy.
//!
//! Two versions of each formula:
//! - `closed`: the family mean p = E[x] replaced by its derived closed form softmax(θ)
//!   (from the derivation's definitions), so the evaluator computes what NumPy computes;
//! - `as derived`: the term as extracted, with mean(categorical, θ); the evaluator
//!   computes E[x] by summing over the one-hot support (E[T Tᵀ] too), O(k³) work, so
//!   it is timed once and only up to `--family-k` (default 300).
//!
//! `cargo bench --bench evaluator` — options after `--`: `--k 1000,4000`,
//! `--family-k 300` (0: skip the `as derived` rows).
use egg::{RecExpr, Symbol};
use evolved::derive::{derive, replace, Limits};
use evolved::eval::{Env, Evaluator, Mat};
use evolved::lang::Node;
use std::time::{Duration, Instant};

const SEED: &str = include_str!("../examples/softmax_cross_entropy.ef");

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Median of runs, at least 5 and about 2 s in all.
fn time(mut f: impl FnMut()) -> (Duration, usize) {
    let t0 = Instant::now();
    f();
    let first = t0.elapsed();
    let reps = ((2.0 / first.as_secs_f64().max(1e-6)) as usize).clamp(5, 200);
    let mut v = vec![first];
    for _ in 1..reps {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    v.sort();
    (v[v.len() / 2], reps)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ks: Vec<usize> = arg(&args, "--k").unwrap_or_else(|| "1000,4000".into()).split(',').map(|x| x.trim().parse().expect("--k: numbers")).collect();
    let family_k: usize = arg(&args, "--family-k").map(|x| x.parse().expect("--family-k: a number")).unwrap_or(300);
    // The derivation is symbolic (same terms for every k): derive once, with k free.
    let src = SEED.replace("derive grad J, hess J", "derive grad J, hess J, hvp J");
    let model = evolved::model_from_text(&src).unwrap();
    let d = derive(&model, &evolved::default_rules(), &Limits::default()).unwrap();
    let hess = d.results.iter().find(|r| r.order == 2).expect("a Hessian").term.clone();
    let hvp = d.results.iter().find(|r| r.order == 3).expect("a Hessian-vector product").term.clone();
    let closed = |t: &RecExpr<Node>| {
        d.definitions.iter().filter(|def| matches!(def.term.as_ref().last(), Some(Node::Mean(_)))).fold(t.clone(), |acc, def| {
            replace(&acc, &def.term, def.explicit.as_ref().expect("a closed form of the mean"))
        })
    };
    let (hess_c, hvp_c) = (closed(&hess), closed(&hvp));
    let dir = Symbol::from(model.directions.get("theta").expect("a direction for theta").as_str());
    println!("Hessian as derived: {hess}\n  closed: {hess_c}\nHVP as derived: {hvp}\n  closed: {hvp_c}\n");

    let ev = Evaluator::new(&model);
    println!("| formula | k | runs | evolved Evaluator (median) |");
    println!("|---|---|---|---|");
    for &k in &ks {
        // a deterministic point: θᵢ in [−2, 2], q uniform, v in [−1, 1]
        let theta = Mat::from_fn(k, 1, |i, _| ((i * 7919) % 1000) as f64 / 250.0 - 2.0);
        let q = Mat::from_element(k, 1, 1.0 / k as f64);
        let v = Mat::from_fn(k, 1, |i, _| ((i * 104729) % 1000) as f64 / 500.0 - 1.0);
        let mut env: Env<f64> = Env::new();
        env.insert(Symbol::from("theta"), theta.clone());
        env.insert(Symbol::from("q"), q);
        env.insert(dir, v.clone());
        // sanity: the closed forms against the formulas computed directly
        let m = theta.max();
        let e = theta.map(|x| (x - m).exp());
        let p = &e / e.sum();
        let h = ev.eval(&hess_c, &env).unwrap();
        let want_h = Mat::from_diagonal(&p.column(0)) - &p * p.transpose();
        assert!((&h - &want_h).amax() < 1e-12, "the Hessian disagrees with diag(p) − ppᵀ");
        let hv = ev.eval(&hvp_c, &env).unwrap();
        let want_hv = p.component_mul(&v) - &p * p.dot(&v);
        assert!((&hv - &want_hv).amax() < 1e-12, "the HVP disagrees with p ⊙ v − (pᵀv) p");

        let (t, n) = time(|| {
            std::hint::black_box(ev.eval(&hess_c, &env).unwrap());
        });
        println!("| Hessian diag(p) − ppᵀ, p = softmax(θ) | {k} | {n} | {} |", ms(t));
        let (t, n) = time(|| {
            std::hint::black_box(ev.eval(&hvp_c, &env).unwrap());
        });
        println!("| HVP p ⊙ v − (pᵀv) p, p = softmax(θ) | {k} | {n} | {} |", ms(t));
        if k <= family_k {
            let t = Instant::now();
            std::hint::black_box(ev.eval(&hess, &env).unwrap());
            println!("| Hessian as derived, p = mean(categorical, θ) by support sums | {k} | 1 | {} |", ms(t.elapsed()));
            let t = Instant::now();
            std::hint::black_box(ev.eval(&hvp, &env).unwrap());
            println!("| HVP as derived, p = mean(categorical, θ) by support sums | {k} | 1 | {} |", ms(t.elapsed()));
        }
    }
}
