//! Bad input never panics: each class gets a message with a place (file:line:column and a
//! caret; for `--at` values, the variable and its domain) and exit code 2. The classes
//! already pinned in tests/cli.rs (an expression cut short after `+`, an unknown name, a
//! dot of two lengths, a non-scalar `derive`, an unknown family or dimension or type or
//! function, a redeclared name, a stray `∘`) are not repeated here.
use std::path::PathBuf;
use std::process::Command;

fn evolved(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_evolved")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// The command fails with exit 2, says nothing on stdout and does not panic; its message.
fn bad(args: &[&str]) -> String {
    let (code, out, err) = evolved(args);
    assert_eq!(code, 2, "expected exit 2 for {args:?}: {out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn bad_model(model: &str) -> String {
    bad(&["derive", "-e", model])
}

/// A message about a model that must carry a place: `<expr>:LINE:COLUMN`.
fn placed(model: &str) -> String {
    let err = bad_model(model);
    assert!(err.starts_with("Error: <expr>:"), "{err}");
    err
}

/// A fresh folder for files; messages name it `<dir>` so snapshots do not depend on it.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("evolved-bad-input-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn write(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.0.join(file), text).unwrap();
        self
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn hide(&self, text: String) -> String {
        text.replace(self.path(), "<dir>")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn incomplete_expressions() {
    insta::assert_snapshot!("incomplete_after_equals", placed("param a : R; J ="));
    insta::assert_snapshot!("incomplete_after_caret", placed("param a : R; J = 2 ^"));
    insta::assert_snapshot!("incomplete_family_argument", placed("dim k; param theta : R^k; x ~ categorical("));
    insta::assert_snapshot!("incomplete_derive", placed("param a : R; J = a; derive grad"));
}

#[test]
fn unbalanced_brackets() {
    // never closed: the message names the opening bracket's place
    insta::assert_snapshot!("unclosed_bracket", placed("dim k; param theta : R^k; J = sum((theta)"));
    // closed by the wrong kind
    insta::assert_snapshot!("mismatched_bracket", placed("dim k; param theta : R^k; J = sum(theta]"));
    // closed twice
    insta::assert_snapshot!("unmatched_closer", placed("param a : R; J = (a))"));
    // an expectation left open across lines
    insta::assert_snapshot!("unclosed_expectation", placed("dim k\nparam theta : R^k\ndata q : simplex^k\nx ~ categorical(theta)\nJ = E_q[-log p(x | theta)\n"));
}

#[test]
fn stray_unicode() {
    insta::assert_snapshot!("stray_unicode_statement", placed("🙂 param a : R; J = a"));
    insta::assert_snapshot!("stray_unicode_in_brackets", placed("param a : R; J = (a — a)"));
}

#[test]
fn unknown_names_beyond_values() {
    insta::assert_snapshot!("unknown_parameter_after_wrt", placed("param a : R; J = a; derive grad J wrt b"));
    insta::assert_snapshot!("unknown_random_variable", placed("param a : R; J = -log p(z | a)"));
    insta::assert_snapshot!("data_is_not_a_parameter", placed("param a : R; data b : R; J = a; derive grad J wrt b"));
}

#[test]
fn redeclared_dimensions_and_families() {
    insta::assert_snapshot!("redeclared_dimension", placed("dim k; param k : R; J = k"));
    insta::assert_snapshot!(
        "redeclared_family",
        placed("dim k; param theta : R^k; family categorical(t : R^k) on z : onehot^k, T = z, A = log(sum(exp(t))); J = sum(theta)")
    );
}

#[test]
fn shape_mismatch_of_a_family_parameter() {
    insta::assert_snapshot!(
        "family_parameter_shape",
        placed("dim k, n; param theta : R^k; data y : R^n; x ~ categorical(theta); J = -log p(x | y)")
    );
}

#[test]
fn wrong_parameter_counts() {
    insta::assert_snapshot!("family_two_parameters", placed("dim k; param theta : R^k; x ~ categorical(theta, theta); J = -log p(x | theta)"));
    insta::assert_snapshot!("family_no_parameter", placed("dim k; param theta : R^k; x ~ categorical(); J = -log p(x | theta)"));
    insta::assert_snapshot!("function_arity", placed("param a : R; J = dot(a)"));
}

#[test]
fn non_scalar_losses_without_derive_and_in_claims() {
    insta::assert_snapshot!("non_scalar_last_definition", placed("dim k; param theta : R^k; J = exp(theta)"));
    insta::assert_snapshot!("non_scalar_claim", placed("dim k; param theta : R^k; J = exp(theta); claim grad J = theta"));
}

#[test]
fn empty_files() {
    let d = Dir::new("empty");
    d.write("empty.ef", "").write("comments.ef", "# a model to come\n\n   \n");
    let empty = d.0.join("empty.ef");
    insta::assert_snapshot!("empty_file", d.hide(bad(&["derive", empty.to_str().unwrap()])));
    let comments = d.0.join("comments.ef");
    insta::assert_snapshot!("comments_only_file", d.hide(bad(&["derive", comments.to_str().unwrap()])));
    insta::assert_snapshot!("empty_expression", bad_model(";;"));
}

/// `--at` values are not in a file: the message names the variable, its declared domain
/// and the entry that breaks it.
#[test]
fn at_values_outside_their_domain() {
    let seed = "examples/softmax_cross_entropy.ef";
    let rate = "param t : R; data r : positive; J = r * t^2";
    let cases = [
        ("at_negative_rate", rate, "t=1; r=-2"),
        ("at_zero_rate", rate, "t=1; r=0"),
        ("at_not_on_simplex_sum", "", "theta=[0.5,0.5]; q=[0.7,0.7]"),
        ("at_not_on_simplex_negative", "", "theta=[0.5,0.5]; q=[-0.5,1.5]"),
        ("at_not_one_hot", "dim k; param t : R^k; data y : onehot^k; J = dot(y, t)", "t=[1,2]; y=[1,1]"),
        ("at_not_one_hot_entry", "dim k; param t : R^k; data y : onehot^k; J = dot(y, t)", "t=[1,2]; y=[0.5,0.5]"),
        ("at_not_binary", "param t : R; data y : binary; J = y*t", "t=1; y=0.5"),
        ("at_not_a_count", "param t : R; data y : count; J = y*t", "t=1; y=1.5"),
        ("at_not_in_unit", "dim k; param t : R^k; data y : unit^k; J = dot(y, t)", "t=[1,2]; y=[0.5,2]"),
    ];
    for (name, model, at) in cases {
        let err = if model.is_empty() { bad(&["derive", seed, "--at", at]) } else { bad(&["derive", "-e", model, "--at", at]) };
        assert!(err.starts_with("error: --at: `"), "{err}");
        insta::assert_snapshot!(name, err);
    }
}

#[test]
fn at_values_of_the_wrong_size_or_kind() {
    let m = "dim m, n; param t : R; data A : R^(m,n); J = t * sum(sum(A)')";
    let cases = [
        ("at_empty_dimension", m, "t=1; A=[[]]"),
        ("at_ragged_rows", m, "t=1; A=[[1,2],[3]]"),
        ("at_sizes_disagree", "dim k; param t : R^k; data y : R^k; J = dot(y, t)", "t=[1,2]; y=[1,2,3]"),
        ("at_scalar_given_a_vector", "param t : R; J = t^2", "t=[1,2]"),
        ("at_not_a_number", "param t : R; J = t^2", "t=\"one\""),
        ("at_not_json", "param t : R; J = t^2", "t=NaN"),
        ("at_missing_value", "param t : R; data u : R; J = t * u", "t=1"),
        ("at_unknown_name", "param t : R; J = t^2", "t=1; s=2"),
    ];
    for (name, model, at) in cases {
        insta::assert_snapshot!(name, bad(&["derive", "-e", model, "--at", at]));
    }
}

#[test]
fn rule_file_with_an_unbound_variable() {
    let d = Dir::new("unbound");
    d.write("mine.rules", "# mine\nodd-rule: a + b => c\n");
    insta::assert_snapshot!("rule_unbound_rhs", d.hide(bad(&["rules", "--rules", d.path()])));
    d.write("mine.rules", "odd-cond: a * b => b * a if scalar(c)\n");
    insta::assert_snapshot!("rule_unbound_condition", d.hide(bad(&["rules", "--rules", d.path()])));
    // the reverse of a `<=>` rule must be bound too
    d.write("mine.rules", "one-way: a * 0 <=> 0\n");
    insta::assert_snapshot!("rule_unbound_reverse", d.hide(bad(&["derive", "examples/softmax_cross_entropy.ef", "--rules", d.path()])));
}

#[test]
fn rule_file_syntax_errors() {
    let d = Dir::new("rule-syntax");
    // a stray character of several bytes once panicked when the error was shown
    d.write("mine.rules", "swap: a + b => b + a ∘\n");
    insta::assert_snapshot!("rule_stray_unicode", d.hide(bad(&["rules", "--rules", d.path(), "--only-rules"])));
    d.write("mine.rules", "half: D(a, x => 0\n");
    insta::assert_snapshot!("rule_unclosed_bracket", d.hide(bad(&["rules", "--rules", d.path(), "--only-rules"])));
}

#[test]
fn rule_files_with_duplicate_names() {
    let d = Dir::new("duplicate");
    // against a built-in rule
    d.write("mine.rules", "# mine\n  add-0: a + 0 => a\n");
    // the built-in rule's line changes as the rules do: shown as LINE
    let builtin = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/algebra.rules")).unwrap();
    let line = builtin.lines().position(|l| l.trim_start().strip_prefix("add-0").is_some_and(|r| r.trim_start().starts_with(':'))).unwrap() + 1;
    let err = d.hide(bad(&["rules", "--rules", d.path()])).replace(&format!("rules/algebra.rules:{line})"), "rules/algebra.rules:LINE)");
    insta::assert_snapshot!("rule_duplicate_builtin", err);
    // within the folder, across two files
    d.write("mine.rules", "swap: a + b => b + a\n").write("more.rules", "\nswap: a * b => b * a\n");
    insta::assert_snapshot!("rule_duplicate_in_folder", d.hide(bad(&["rules", "--rules", d.path(), "--only-rules"])));
}

#[test]
fn bad_family_files_point_into_their_own_file() {
    let d = Dir::new("family");
    d.write("fam.ef", "# a family with no log-partition\nfamily coin(s : R) on b : binary, T = b\n");
    insta::assert_snapshot!("family_file_missing_a", d.hide(bad(&["derive", "examples/bernoulli_nll.ef", "--rules", d.path()])));
    d.write("fam.ef", "family coin(s : R) on b : binary, T = b, A = log(1 + exp(2 * s))\n");
    insta::assert_snapshot!("family_file_not_normalised", d.hide(bad(&["derive", "examples/bernoulli_nll.ef", "--rules", d.path()])));
    // a family in the model that does not normalise gets the model's place
    insta::assert_snapshot!(
        "family_not_normalised",
        placed("param t : R; data y : binary\nfamily coin(s : R) on b : binary, T = b, A = log(1 + exp(2 * s))\ny ~ coin(t); J = -log p(y | t)")
    );
}

/// Inputs that once crashed or hung, found by reading the code or by the fuzzers
/// (fuzz/run.sh). Each must finish quickly with exit 0, 1 or 2 and no panic.
#[test]
fn inputs_that_once_crashed_or_hung() {
    let d = Dir::new("regress");
    let cases: &[(&str, &str)] = &[
        // 0 × 10^2000000000 was read by multiplying by ten two billion times (review)
        ("zero-huge-exponent.ef", "param a : R; J = a * 0e2000000000"),
    ];
    for (file, text) in cases {
        d.write(file, text);
        let path = d.0.join(file);
        let start = std::time::Instant::now();
        let (code, out, err) = evolved(&["derive", path.to_str().unwrap(), "--no-check"]);
        assert!(matches!(code, 0..=2), "{file}: exit {code}\n{out}{err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        assert!(start.elapsed().as_secs() < 20, "{file}: took {:?}", start.elapsed());
    }
}

#[test]
fn family_arguments() {
    // a usual parameter the family does not have, a known parameter left out, both the
    // natural and a usual parameter, usual parameters of two parameterisations
    insta::assert_snapshot!("usual_unknown", placed("param l : positive; data y : count; y ~ poisson(speed = l); J = -log p(y)"));
    insta::assert_snapshot!("known_missing", placed("param t : R; data y : count; y ~ binomial(t); J = -log p(y)"));
    insta::assert_snapshot!("natural_and_usual", placed("param t : R; data y : count; y ~ poisson(t, rate = t); J = -log p(y)"));
    insta::assert_snapshot!("usual_half", placed("param a : positive; data x : positive; x ~ gamma(shape = a); J = -log p(x)"));
    insta::assert_snapshot!("usual_wrong_shape", placed("dim k; param l : positive^k; data y : count; y ~ gamma(shape = l, rate = l); J = -log p(y)"));
}

#[test]
fn kl_and_entries() {
    insta::assert_snapshot!("kl_two_families", placed("param a : R; J = KL(poisson(a) || bernoulli(a))"));
    insta::assert_snapshot!("kl_known_parameters", placed("param a : R; data n : count; J = KL(binomial(a, n = n) || binomial(a, n = n))"));
    insta::assert_snapshot!("kl_not_a_family", placed("param a : R; J = KL(a || a)"));
    insta::assert_snapshot!("entry_zero", placed("param e : R^2; J = e[0]"));
    insta::assert_snapshot!("entry_past_the_end", placed("param e : R^2; J = e[3]"));
    insta::assert_snapshot!("empty_vector", placed("param a : R; J = sum([]) + a"));
    insta::assert_snapshot!("polygamma_order", placed("param a : positive; J = polygamma(0.5, a)"));
    insta::assert_snapshot!("spd_vector", placed("dim k; param a : R; data S : spd^k; J = a"));
}

#[test]
fn family_declarations_new_clauses() {
    insta::assert_snapshot!("e_without_cov", placed("family f(t : R) on x : count, T = x, A = exp(t), E = exp(t); param a : R; data y : count; y ~ f(a); J = -log p(y)"));
    insta::assert_snapshot!("usual_shape", placed("family f(t : R) on x : count, T = x, A = exp(t), usual(r : positive^2) = r; param a : R; data y : count; y ~ f(a); J = -log p(y)"));
    insta::assert_snapshot!("usual_name_twice", placed("family f(t : R, r : positive) on x : count, T = x, A = r * exp(t), usual(r : positive) = log(r); param a : R; data y : count; y ~ f(a, r = 2); J = -log p(y)"));
}

#[test]
fn at_values_in_the_new_domains() {
    let m = "dim k; param a : negative; param w : angle; data z : onehot0^k; data S : spd^(k,k); J = a + w + sum(z) + logdet(S)";
    let at = |v: &str| bad(&["derive", "-e", m, "--at", v]);
    insta::assert_snapshot!("at_not_negative", at("a=0.5; w=0; z=[0,0]; S=[[1,0],[0,1]]"));
    insta::assert_snapshot!("at_not_an_angle", at("a=-1; w=4; z=[0,0]; S=[[1,0],[0,1]]"));
    insta::assert_snapshot!("at_not_onehot0", at("a=-1; w=0; z=[1,1]; S=[[1,0],[0,1]]"));
    insta::assert_snapshot!("at_not_symmetric", at("a=-1; w=0; z=[0,1]; S=[[1,2],[0,1]]"));
    insta::assert_snapshot!("at_not_positive_definite", at("a=-1; w=0; z=[0,1]; S=[[1,2],[2,1]]"));
}

#[test]
fn sums_matrices_and_matrix_families() {
    // a sum over something that is not a dimension, an index reused or not used, a row
    // count that does not match, an index outside its sum
    insta::assert_snapshot!("sum_over_a_value", placed("dim n; param w : R^n; J = sum(i in w, w[i])"));
    insta::assert_snapshot!("sum_index_reused", placed("dim n; param w : R^n; J = sum(i in n, sum(i in n, w[i]))"));
    insta::assert_snapshot!("sum_index_unused", placed("dim n; param w : R^n; J = sum(i in n, sum(w))"));
    insta::assert_snapshot!("sum_rows_mismatch", placed("dim n, m; param w : R^n; data y : R^m; J = sum(i in n, w[i] * y[i])"));
    insta::assert_snapshot!("sum_index_outside", placed("dim n; param w : R^n; J = sum(i in n, w[i]) + w[i]"));
    insta::assert_snapshot!("sum_no_comma", placed("dim n; param w : R^n; J = sum(i in n w[i])"));
    // matrix functions with the wrong arguments
    insta::assert_snapshot!("kron_one_argument", placed("dim k; param W : R^(k,k); J = sum(vec(kron(W)))"));
    insta::assert_snapshot!("trace_not_square", placed("dim k, d; param W : R^(k,d); J = trace(W)"));
    insta::assert_snapshot!("lmvgamma_not_square", placed("dim k, d; param a : positive; data W : R^(k,d); J = lmvgamma(a, W)"));
    // a symmetric natural parameter that is not declared spd, a known parameter outside its domain
    insta::assert_snapshot!("wishart_not_spd", placed("dim k; param eta : R^(k,k); data X : spd^(k,k); X ~ wishart(eta, n = 5); J = -log p(X)"));
    insta::assert_snapshot!("known_not_a_count", placed("param t : R; data y : count; y ~ binomial(t, n = 2.5); J = -log p(y | t)"));
    // --at: a matrix of the wrong shape, ragged rows, a non-symmetric spd value
    insta::assert_snapshot!("at_matrix_ragged", bad(&["derive", "examples/softmax_regression.ef", "--at", "W=[[1,2],[3]]; z=[1,2]; y=[0.5,0.5]"]));
    insta::assert_snapshot!("at_spd_not_symmetric", bad(&["derive", "examples/gaussian_precision.ef", "--at", "Lambda=[[2,1],[0,2]]; x=[1,2]; mu=[0,0]"]));
}

#[test]
fn further_natural_parameters() {
    // `T(P)` for a name that is not a parameter, with the wrong shape, on a parameter that
    // cannot pair (positive definite but a vector), a usual tuple of the wrong length
    let tail = "param a : R; data y : R^2; y ~ g(a); J = -log p(y)";
    insta::assert_snapshot!("natural_unknown", placed(&format!("family g(t : R) on x : R^2, T = x[1], T(Q) = x[2], A = t^2 / 2; {tail}")));
    insta::assert_snapshot!("natural_shape", placed(&format!("family g(t : R, Q : R) on x : R^2, T = x[1], T(Q) = x, A = t^2 / 2 - log(-Q) / 2; {tail}")));
    insta::assert_snapshot!("natural_usual_count", placed(&format!("family g(t : R, Q : negative) on x : R^2, T = x[1], T(Q) = x[2]^2, A = -t^2 / (4 * Q) - log(-2 * Q) / 2, usual(m : R) = m; {tail}")));
    // the precision given both by itself and through the usual parameters; parameters of
    // two parameterisations
    let m = "dim k; param mu : R^k; data S : spd^(k,k); data x : R^k";
    insta::assert_snapshot!("natural_given_twice", placed(&format!("{m}; x ~ mvnormal2(mu = mu, Sigma = S, L = S); J = -log p(x)")));
    insta::assert_snapshot!("natural_two_parameterisations", placed(&format!("{m}; x ~ mvnormal2(mu = mu, Sigma = S, Lambda = S); J = -log p(x)")));
}

#[test]
fn known_parameters_out_of_their_domain_and_hvp_in_a_matrix() {
    // a precision that is not declared spd, a count given by a positive variable, hvp in a matrix
    insta::assert_snapshot!("known_not_spd", placed("dim k; param a : R^k; data S : R^(k,k); data x : R^k; x ~ mvnormal2(a, L = S); J = -log p(x)"));
    insta::assert_snapshot!("known_count_not_count", placed("param a : R; data N : positive; data y : count; y ~ binomial(a, n = N); J = -log p(y)"));
    insta::assert_snapshot!("hvp_in_a_matrix", placed("dim k; param S : spd^(k,k); J = trace(S S); derive hvp J"));
}

#[test]
fn a_family_with_two_natural_parameters_entry_by_entry() {
    // the pairing ⟨Q, T_Q(y)⟩ of a scalar family is not summed over a vector's entries yet
    insta::assert_snapshot!(
        "natural_entrywise",
        placed("dim n; family g(t : R, Q : negative) on z : R, T = z, T(Q) = z^2, A = -t^2/(4*Q) - log(-2*Q)/2; param w : R^2; data X : R^(n,2); data c : negative; data y : R^n; y ~ g(X w, Q = c); J = -log p(y)")
    );
}

#[test]
fn a_statistic_that_uses_the_natural_parameter() {
    insta::assert_snapshot!(
        "statistic_uses_eta",
        placed("family g(t : R, Q : negative) on z : R, T = z, T(Q) = t * z^2, A = -t^2/(4*Q) - log(-2*Q)/2; param a : R; data y : R; y ~ g(a, Q = -1); J = -log p(y)")
    );
}
