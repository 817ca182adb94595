//! evolved: gradients and Hessians of exponential-family losses, derived by rewriting
//! in an e-graph and checked numerically.
//!
//! Data flows one way: text → syntax trees ([`syntax`]) → a checked model ([`model`]) →
//! an e-graph rewritten by rules from `rules/` ([`analysis`], [`rules`], [`derive`]) →
//! extracted terms → printers ([`print`], [`report`]) and the evaluator ([`eval`],
//! [`check`]).
pub mod analysis;
pub mod check;
pub mod cli;
pub mod derive;
pub mod ematch;
pub mod eval;
pub mod index;
pub mod lang;
pub mod model;
pub mod print;
pub mod quadrature;
pub mod report;
pub mod rules;
pub mod special;
pub mod steps;
pub mod structure;
pub mod syntax;

/// The built-in rules.
pub fn default_rules() -> Vec<rules::Rule> {
    rules::rule_set(&[], true).expect("the built-in rules load")
}

/// A model from text, with the built-in family catalog; errors are diagnostics with
/// line:column and a caret.
pub fn model_from_text(src: &str) -> Result<model::Model, String> {
    let families: Vec<(String, String)> = rules::DEFAULT_FAMILIES.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect();
    cli::model_from_source("<model>", src, &families)
}

/// The built-in family catalog (`rules/families.ef`), each family as declared.
pub fn catalog_families() -> Vec<model::Family> {
    families_from(&rules::DEFAULT_FAMILIES.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect::<Vec<_>>()).expect("the built-in catalog loads")
}

/// The families declared in family files (name, text): errors are diagnostics.
pub fn families_from(files: &[(String, String)]) -> Result<Vec<model::Family>, String> {
    cli::catalog(files)?.iter().map(|d| model::family(d, Default::default(), true).map_err(|e| e.message)).collect()
}
