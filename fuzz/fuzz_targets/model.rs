//! Model text (optionally followed by a line `---` and `--at` values) through the whole
//! pipeline: parse, build, validate families, derive with small limits, check at two
//! points, print, and evaluate at the given point. Nothing may panic or hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn rules() -> &'static [evolved::rules::Rule] {
    static RULES: OnceLock<Vec<evolved::rules::Rule>> = OnceLock::new();
    RULES.get_or_init(evolved::default_rules)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (model_text, at) = match text.split_once("\n---\n") {
        Some((m, a)) => (m, Some(a)),
        None => (text, None),
    };
    let Ok(model) = evolved::model_from_text(model_text) else { return };
    let point = at.and_then(|a| evolved::check::parse_point(&model, a).ok());
    let limits = evolved::derive::Limits { iterations: 6, nodes: 3_000, seconds: 1.0 };
    let Ok(d) = evolved::derive::derive(&model, rules(), &limits) else { return };
    for r in &d.results {
        let _ = evolved::print::print(&model, &r.term, evolved::print::Style::Unicode);
        let _ = evolved::print::print(&model, &r.term, evolved::print::Style::Ascii);
    }
    let opts = evolved::check::CheckOptions { points: 2, ..Default::default() };
    let _ = evolved::check::check(&model, &d, &opts, &|_| String::new());
    if let Some(env) = point {
        let ev = evolved::eval::Evaluator::new(&model);
        for r in &d.results {
            let _ = ev.eval(&r.term, &env);
        }
    }
});
