//! The searches that remember their matches between iterations find exactly what egg's
//! own searches find, in the same order: every example and every catalog family's
//! moments, with each search checked against egg's.
use evolved::derive::{derive, family_moments, Limits};

#[test]
fn remembered_matches_are_eggs() {
    evolved::ematch::verify(true);
    let rules = evolved::default_rules();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ef") {
            let model = evolved::model_from_text(&std::fs::read_to_string(&p).unwrap()).unwrap();
            derive(&model, &rules, &Limits::default()).unwrap();
            n += 1;
        }
    }
    assert!(n >= 8, "{n} examples");
    for f in evolved::catalog_families() {
        family_moments(&f, &rules, &Limits::default()).unwrap();
    }
}
