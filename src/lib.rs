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
pub mod eval;
pub mod lang;
pub mod model;
pub mod print;
pub mod report;
pub mod rules;
pub mod syntax;
