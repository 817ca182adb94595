//! Every example derives completely, passes the numeric check, and prints as recorded.
mod common;
use common::*;
use evolved::report::Outcome;

fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ef"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn every_example_derives_and_checks() {
    let all = examples();
    assert!(all.len() >= 8, "{} examples", all.len());
    for (name, src) in all {
        let d = derive_text(&src);
        assert!(d.d.saturated, "{name}: {}", d.d.stop);
        for r in &d.d.results {
            assert!(r.complete, "{name}: {} not fully derived", r.term);
        }
        let report = d.check();
        assert!(report.passed, "{name}: {:?}", report.comparisons);
        for c in &report.comparisons {
            assert!(c.max_rel_error < 1e-12, "{name}: {} error {}", c.quantity, c.max_rel_error);
        }
    }
}

#[test]
fn text_and_latex_snapshots() {
    for (name, src) in examples() {
        let d = derive_text(&src);
        let o = Outcome::new(&d.model, &d.d, &[]);
        insta::assert_snapshot!(format!("{name}.txt"), o.text(evolved::print::Style::Unicode, false));
        insta::assert_snapshot!(format!("{name}.tex"), o.latex());
    }
}
