//! Scaling: derive time against the number N of summed terms in a loss.
//!
//! The generated loss is J = Σᵢ cᵢ · log(1 + exp(aᵢ x)) over one scalar parameter x and
//! N scalar data aᵢ (each term a softplus, i.e. a Bernoulli log-partition), with cᵢ in
//! 1..7. Two spellings of the same sum:
//! - `tree`: the sum parenthesised as a balanced binary tree (depth log₂ N);
//! - `chain`: written `t₀ + t₁ + … `, which parses as a left-nested chain of depth N.
//!
//! `vector` is the tree with one vector parameter, J = Σᵢ cᵢ · log(1 + exp(aᵢᵀw)).
//!
//! For each N it times, separately, parsing the model, `derive` (saturate + extract)
//! and printing the `Outcome` text (no numeric check), takes the median of a few runs,
//! and prints a Markdown table. A harness of its own (not criterion): one run at large
//! N takes seconds.
//!
//! `cargo bench --bench scaling` — options after `--`:
//!   `--n 1,10,30,100` sizes (default 1,10,30,100,200), `--shapes tree,chain,vector`,
//!   `--budget SECONDS` (default 60): stop growing N for a shape once one derivation
//!   took longer than budget/8, as the next size would take too long; `--no-print`:
//!   parse and derive only (printing grows faster than deriving); `--runs R`: at most R
//!   runs of a size that takes more than 0.5 s (default 3).
use evolved::derive::{derive, Limits};
use evolved::print::Style;
use evolved::report::Outcome;
use std::time::{Duration, Instant};

fn term(shape: &str, i: usize) -> String {
    let c = i % 7 + 1;
    match shape {
        "vector" => format!("{c} * log(1 + exp(dot(a{i}, w)))"),
        _ => format!("{c} * log(1 + exp(a{i} * x))"),
    }
}

fn tree(shape: &str, lo: usize, hi: usize) -> String {
    if hi - lo == 1 {
        return term(shape, lo);
    }
    let mid = (lo + hi) / 2;
    format!("({}) + ({})", tree(shape, lo, mid), tree(shape, mid, hi))
}

/// The model text of an N-term loss.
pub fn model(shape: &str, n: usize) -> String {
    let mut s = String::new();
    if shape == "vector" {
        s.push_str("dim k\nparam w : R^k\n");
        for i in 0..n {
            s.push_str(&format!("data a{i} : R^k\n"));
        }
    } else {
        s.push_str("param x : R\n");
        for i in 0..n {
            s.push_str(&format!("data a{i} : R\n"));
        }
    }
    let body = if shape == "chain" { (0..n).map(|i| term(shape, i)).collect::<Vec<_>>().join(" + ") } else { tree(shape, 0, n) };
    s.push_str(&format!("J = {body}\nderive grad J, hess J\n"));
    s
}

struct Run {
    parse: Duration,
    derive: Duration,
    print: Duration,
    iterations: usize,
    nodes: usize,
    complete: bool,
    stop: String,
    text_len: usize,
}

fn once(src: &str, rules: &[evolved::rules::Rule], print: bool) -> Run {
    let t0 = Instant::now();
    let model = evolved::model_from_text(src).unwrap();
    let t1 = Instant::now();
    let d = derive(&model, rules, &Limits::default()).unwrap();
    let t2 = Instant::now();
    let o = Outcome::new(&model, &d, rules);
    let text = if print { std::hint::black_box(o.text(Style::Unicode, false)) } else { String::new() };
    let t3 = Instant::now();
    Run {
        parse: t1 - t0,
        derive: t2 - t1,
        print: t3 - t2,
        iterations: d.iterations,
        nodes: d.nodes,
        complete: d.results.iter().all(|r| r.complete),
        stop: d.stop.clone(),
        text_len: text.chars().count(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    let x = d.as_secs_f64() * 1e3;
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ns: Vec<usize> =
        arg(&args, "--n").unwrap_or_else(|| "1,10,30,100,200".into()).split(',').map(|x| x.trim().parse().expect("--n: numbers")).collect();
    let shapes: Vec<String> = arg(&args, "--shapes").unwrap_or_else(|| "tree,chain,vector".into()).split(',').map(String::from).collect();
    let budget: f64 = arg(&args, "--budget").map(|b| b.parse().expect("--budget: seconds")).unwrap_or(60.0);
    let print = !args.iter().any(|a| a == "--no-print");
    let max_runs: usize = arg(&args, "--runs").map(|b| b.parse().expect("--runs: a number")).unwrap_or(3).max(1);
    let limits = Limits::default();
    let rules = evolved::default_rules();
    println!("limits: {} iterations, {} nodes, {} s per stage (EVOLVED_ITERS, EVOLVED_NODES)\n", limits.iterations, limits.nodes, limits.seconds);
    println!("| shape | N | runs | parse | derive | print | total | total / N | iterations | e-nodes | result |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for shape in &shapes {
        for &n in &ns {
            let src = model(shape, n);
            // at least 3 runs and about 1 s in all, at most 15
            let first = once(&src, &rules, print);
            let total = first.parse + first.derive + first.print;
            let reps = if total.as_secs_f64() > 0.5 { max_runs.min(3) } else { ((1.0 / total.as_secs_f64().max(1e-4)) as usize).clamp(3, 15) };
            let mut runs = vec![first];
            for _ in 1..reps {
                runs.push(once(&src, &rules, print));
            }
            let (p, d, pr) = (
                median(runs.iter().map(|r| r.parse).collect()),
                median(runs.iter().map(|r| r.derive).collect()),
                median(runs.iter().map(|r| r.print).collect()),
            );
            let tot = median(runs.iter().map(|r| r.parse + r.derive + r.print).collect());
            let r = &runs[0];
            let result = if r.complete { format!("complete, {}", r.stop) } else { format!("unfinished: {}", r.stop) };
            println!(
                "| {shape} | {n} | {reps} | {} ms | {} ms | {} ms | {} ms | {:.2} ms | {} | {} | {result} ({} chars) |",
                ms(p),
                ms(d),
                ms(pr),
                ms(tot),
                tot.as_secs_f64() * 1e3 / n as f64,
                r.iterations,
                r.nodes,
                r.text_len
            );
            if tot.as_secs_f64() > budget / 8.0 {
                println!("| {shape} | > {n} | | | | | | | | | not run: {n} terms took {:.1} s, over the budget / 8 ({:.1} s) |", tot.as_secs_f64(), budget / 8.0);
                break;
            }
        }
    }
}
