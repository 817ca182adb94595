//! Every LaTeX string the tool prints renders in KaTeX without an error or a warning
//! (strict mode). `.ci/run` installs KaTeX (npm, .ci/katex); without it this test says
//! so and passes, unless EVOLVED_REQUIRE_KATEX is set (as CI does).
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn evolved(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_evolved")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert!(out.status.code() == Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every LaTeX output: each example's results with steps, and the notes.
fn latex_outputs() -> Vec<(String, String)> {
    let mut out = vec![];
    let mut files: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "ef")) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let path = format!("examples/{name}");
        out.push((name.clone(), evolved(&["derive", &path, "--latex", "--no-check"])));
        out.push((format!("{name} --steps"), evolved(&["derive", &path, "--latex", "--no-check", "--steps"])));
        out.push((format!("{name} --notation index"), evolved(&["derive", &path, "--latex", "--no-check", "--notation", "index"])));
    }
    // the catalog, family by family
    out.push(("evolved families --latex".into(), evolved(&["families", "--latex"])));
    out
}

/// KaTeX's verdict on each string (None: renders), or None when KaTeX is not installed.
fn katex(texts: &[String]) -> Option<Vec<Option<String>>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/katex");
    if !dir.join("node_modules/katex").exists() {
        return None;
    }
    let mut child = Command::new("node").arg("check.js").current_dir(&dir).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().ok()?;
    child.stdin.take().unwrap().write_all(serde_json::to_string(texts).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "node check.js failed");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The body of an align* block, as KaTeX takes it.
fn body(tex: &str) -> String {
    assert!(tex.starts_with("\\begin{align*}"), "not an align* block: {tex}");
    tex.trim().to_string()
}

#[test]
fn every_latex_output_renders_in_katex() {
    let outputs = latex_outputs();
    let texts: Vec<String> = outputs.iter().map(|(_, t)| body(t)).collect();
    let Some(verdicts) = katex(&texts) else {
        assert!(std::env::var_os("EVOLVED_REQUIRE_KATEX").is_none(), "KaTeX is not installed in .ci/katex (run .ci/run)");
        eprintln!("KaTeX is not installed (npm install --prefix .ci/katex): LaTeX not rendered");
        return;
    };
    let failures: Vec<String> = outputs
        .iter()
        .zip(&verdicts)
        .filter_map(|((name, tex), v)| v.as_ref().map(|e| format!("{name}: {e}\n{tex}")))
        .collect();
    assert!(failures.is_empty(), "{} of {} LaTeX outputs do not render:\n{}", failures.len(), outputs.len(), failures.join("\n\n"));
    assert!(outputs.len() >= 39);
}

#[test]
fn katex_catches_a_broken_formula() {
    // the check itself can fail
    let Some(v) = katex(&["\\frac{1}{".to_string(), "\\text{θ}".to_string(), "x^{2}".to_string()]) else { return };
    assert!(v[0].is_some() && v[1].is_some() && v[2].is_none(), "{v:?}");
}
