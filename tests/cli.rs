//! The command line as a user runs it: outputs, exit codes (0 ok, 1 check failed,
//! 2 bad input) and error messages.
use std::process::Command;

fn evolved(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_evolved")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = evolved(args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Same nesting and numbers within 1e-12.
fn close(got: &serde_json::Value, want: &serde_json::Value) {
    match (got, want) {
        (serde_json::Value::Array(a), serde_json::Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{got} vs {want}");
            a.iter().zip(b).for_each(|(x, y)| close(x, y));
        }
        _ => assert!((got.as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-12, "{got} vs {want}"),
    }
}

fn result<'a>(j: &'a serde_json::Value, quantity: &str) -> &'a serde_json::Value {
    j["results"].as_array().unwrap().iter().find(|r| r["quantity"] == quantity).unwrap()
}

#[test]
fn seed_example_values_at_a_point() {
    let j = json(&["derive", "examples/softmax_cross_entropy.ef", "--at", "theta=[0.5,0.5]; q=[1,0]", "--json"]);
    close(&result(&j, "grad J")["value"], &serde_json::json!([-0.5, 0.5]));
    close(&result(&j, "hess J")["value"], &serde_json::json!([[0.25, -0.25], [-0.25, 0.25]]));
    assert_eq!(result(&j, "grad J")["text"], "p − q");
    assert_eq!(result(&j, "hess J")["text"], "diag(p) − p pᵀ");
    assert_eq!(j["assumptions"], serde_json::json!(["1ᵀq = 1"]));
    assert_eq!(j["check"]["passed"], true);
    assert!(j["check"]["max_rel_error"].as_f64().unwrap() < 1e-12);
    assert!(j["definitions"][0]["text"].as_str().unwrap().starts_with("p = E[x] = softmax(θ)"));
}

#[test]
fn seed_derivation_uses_the_exponential_family_identities() {
    let j = json(&["derive", "examples/softmax_cross_entropy.ef", "--json", "--no-check"]);
    let names: Vec<&str> = j["rules_applied"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for rule in ["grad-A", "grad-mean", "cov-moments", "second-indicator", "e-onehot", "sum-simplex"] {
        assert!(names.contains(&rule), "{rule} not in {names:?}");
    }
}

#[test]
fn the_same_results_without_a_family_and_with_a_user_family() {
    for f in ["examples/softmax_no_family.ef", "examples/user_onehot_family.ef"] {
        let j = json(&["derive", f, "--json"]);
        let name = if f.contains("user") { "m" } else { "p" };
        assert_eq!(result(&j, "grad J")["text"], format!("{name} − q"), "{f}");
        assert_eq!(result(&j, "hess J")["text"], format!("diag({name}) − {name} {name}ᵀ"), "{f}");
        assert_eq!(j["check"]["passed"], true, "{f}");
    }
}

#[test]
fn output_is_deterministic() {
    let a = evolved(&["derive", "examples/bce_with_logits.ef", "--json"]);
    let b = evolved(&["derive", "examples/bce_with_logits.ef", "--json"]);
    assert_eq!(a, b);
}

/// A rules folder where one identity is wrong (∇A = 2·E[T]) must make the check fail:
/// the check does not depend on the rules.
#[test]
fn a_wrong_identity_fails_the_check() {
    let dir = std::env::temp_dir().join(format!("evolved-wrong-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/rules")).unwrap() {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let text = text.replace("=> mean(F, t)' @ D(t, x)", "=> 2 * mean(F, t)' @ D(t, x)");
        std::fs::write(dir.join(p.file_name().unwrap()), text).unwrap();
    }
    let d = dir.to_str().unwrap();
    let (code, out, err) = evolved(&["derive", "examples/softmax_cross_entropy.ef", "--rules", d, "--only-rules"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(out.contains("2 p − q") || out.contains("2 p"), "{out}");
    // the same folder with the identity intact passes
    let (code, _, err) = evolved(&["derive", "examples/softmax_cross_entropy.ef", "--rules", concat!(env!("CARGO_MANIFEST_DIR"), "/rules"), "--only-rules"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bad(model: &str) -> String {
    let (code, out, err) = evolved(&["derive", "-e", model]);
    assert_eq!(code, 2, "expected exit 2 for {model:?}: {out}{err}");
    assert!(out.is_empty());
    err
}

#[test]
fn bad_models_get_a_place_and_a_reason() {
    let cases = [
        ("syntax", "dim k; param theta : R^k; J = (theta + "),
        ("unknown_name", "dim k; param theta : R^k; J = sum(theta) + w"),
        ("shape_mismatch", "dim k, n; param a : R^k; data b : R^n; J = dot(a, b)"),
        ("non_scalar", "dim k; param theta : R^k; J = exp(theta); derive grad J"),
        ("unknown_family", "dim k; param theta : R^k; x ~ gaussian(theta); J = -log p(x | theta)"),
        ("unknown_dim", "param theta : R^k"),
        ("redeclared", "param a : R; data a : R; J = a"),
        ("bad_type", "param a : complex; J = a"),
        ("unknown_function", "param a : R; J = tanh(a)"),
        ("stray_unicode", "param a : R; J = a ∘ a"),
    ];
    for (name, model) in cases {
        insta::assert_snapshot!(name, bad(model));
    }
}

#[test]
fn bad_files_and_points() {
    let (code, _, err) = evolved(&["derive", "-e", "   "]);
    assert_eq!(code, 2);
    assert!(err.contains("empty"), "{err}");
    let (code, _, err) = evolved(&["derive", "examples/softmax_cross_entropy.ef", "--at", "theta=[0.5,0.5]; q=[0.7,0.7]"]);
    assert_eq!(code, 2);
    assert!(err.contains("simplex"), "{err}");
    let (code, _, err) = evolved(&["derive", "examples/softmax_cross_entropy.ef", "--at", "theta=[0.5,0.5]; q=[1,0,0]"]);
    assert_eq!(code, 2);
    assert!(err.contains("k = 3") || err.contains("k = 2"), "{err}");
    let (code, _, err) = evolved(&["derive", "no/such/file.ef"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.ef"), "{err}");
}

#[test]
fn a_bad_rule_file_is_an_error_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("evolved-bad-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mine.rules"), "# mine\nok-rule: a - 0 => a\nbad-rule: sum(a) => a | wrong shape\n").unwrap();
    let (code, _, err) = evolved(&["derive", "examples/softmax_cross_entropy.ef", "--rules", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("mine.rules:3:1"), "{err}");
    assert!(err.contains("disagree in shape"), "{err}");
    std::fs::write(dir.join("mine.rules"), "odd-rule: a + b => c\n").unwrap();
    let (code, _, err) = evolved(&["rules", "--rules", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("mine.rules:1:20") && err.contains("not bound"), "{err}");
    std::fs::write(dir.join("mine.rules"), "add-0: a + 0 => a\n").unwrap();
    let (code, _, err) = evolved(&["rules", "--rules", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("duplicate rule name `add-0`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rules_lists_the_identities() {
    let (code, out, _) = evolved(&["rules"]);
    assert_eq!(code, 0);
    assert!(out.contains("grad-A") && out.contains("A′(θ) = E[T(x)]"), "{out}");
    assert!(out.contains("family categorical") && out.contains("family bernoulli"), "{out}");
}

#[test]
fn claims_are_proved_refuted_or_tested() {
    let model = "dim k; param theta : R^k; data q : simplex^k; x ~ categorical(theta); J = E_q[-log p(x | theta)]
derive grad J, hess J
claim hess J = diag(p) - 2 * outer(p, p)
claim hess J = diag(p) - outer(p, p)";
    let (code, out, err) = evolved(&["derive", "-e", model]);
    assert_eq!(code, 1, "{out}{err}");
    let line = |needle: &str| out.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in {out}")).to_string();
    let refuted = line("2 (p pᵀ)");
    assert!(refuted.contains("refuted: at ") && refuted.contains("theta=[") && refuted.contains("the derived form is diag(p) − p pᵀ"), "{refuted}");
    assert!(line("claim ∇²J = diag(p) − p pᵀ").contains("proved"), "{out}");
    // a true claim alone passes
    let ok = model.lines().filter(|l| !l.contains("2 *")).collect::<Vec<_>>().join("\n");
    let (code, out, _) = evolved(&["derive", "-e", &ok]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_limit_hit_says_how_far_it_got_and_which_rules_grew_the_graph() {
    let terms: Vec<String> = (0..30).map(|i| format!("c{i} * log(1 + exp(dot(a{i}, w)))")).collect();
    let decls: String = (0..30).map(|i| format!("data a{i} : R^d; data c{i} : R; ")).collect();
    let model = format!("dim d; param w : R^d; {decls}J = {}; derive grad J", terms.join(" + "));
    let out = Command::new(env!("CARGO_BIN_EXE_evolved"))
        .args(["derive", "-e", &model, "--no-check"])
        .env("EVOLVED_NODES", "400")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let note = text.lines().find(|l| l.starts_with("note: the rewriting")).unwrap_or_else(|| panic!("{text}"));
    assert!(note.contains("grew past the node limit") && note.contains("iterations") && note.contains("most applied: ") && note.contains("raise EVOLVED_NODES"), "{note}");
}
