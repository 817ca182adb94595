//! Derivation speed: parse + model + saturate + extract + print for the seed example, and
//! the same with fixed sizes (the derivation is symbolic, so it should not depend on k).
use criterion::{criterion_group, criterion_main, Criterion};
use evolved::derive::{derive, Limits};
use evolved::print::Style;
use evolved::report::Outcome;

const SEED: &str = include_str!("../examples/softmax_cross_entropy.ef");

fn derive_and_print(src: &str, rules: &[evolved::rules::Rule]) -> String {
    let model = evolved::model_from_text(src).unwrap();
    let d = derive(&model, rules, &Limits::default()).unwrap();
    let o = Outcome::new(&model, &d, rules);
    o.text(Style::Unicode, false)
}

fn bench(c: &mut Criterion) {
    let rules = evolved::default_rules();
    c.bench_function("load the built-in rules", |b| b.iter(evolved::default_rules));
    c.bench_function("derive seed (parse+saturate+extract+print)", |b| b.iter(|| derive_and_print(SEED, &rules)));
    for k in [2, 50, 1000] {
        let src = SEED.replace("dim k\n", "").replace("^k", &format!("^{k}"));
        c.bench_function(&format!("derive seed, k = {k}"), |b| b.iter(|| derive_and_print(&src, &rules)));
    }
    let model = evolved::model_from_text(SEED).unwrap();
    let d = derive(&model, &rules, &Limits::default()).unwrap();
    c.bench_function("numeric check, 20 points, k in 2..7", |b| {
        b.iter(|| evolved::check::check(&model, &d, &Default::default(), &|_| String::new()))
    });
    // matrix parameters: named sizes, then fixed ones (the derivation never sees a size)
    let samples = include_str!("../examples/softmax_regression_samples.ef");
    c.bench_function("derive softmax regression over n samples, W k×d", |b| b.iter(|| derive_and_print(samples, &rules)));
    for (k, d) in [(3, 4), (50, 300)] {
        let src = samples.replace("dim n, k, d", "dim n").replace("(n,d)", &format!("(n,{d})")).replace("(k,d)", &format!("({k},{d})")).replace("(n,k)", &format!("(n,{k})"));
        c.bench_function(&format!("derive softmax regression, k = {k}, d = {d}"), |b| b.iter(|| derive_and_print(&src, &rules)));
    }
    let bce = include_str!("../examples/bce_with_logits.ef");
    c.bench_function("derive bce_with_logits", |b| b.iter(|| derive_and_print(bce, &rules)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
