//! The command line: arguments → a validated request → the pipeline → output and exit code
//! (0 ok, 1 the numeric check failed, 2 bad input).

use crate::check::{check, parse_point, CheckOptions};
use crate::derive::{derive, Limits};
use crate::model::{build_model, Model};
use crate::print::Style;
use crate::report::{definition_line, Outcome};
use crate::rules::{rule_set, Rule, DEFAULT_FAMILIES};
use crate::syntax::{parse_model, FamilyDecl, StmtKind, SyntaxError};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "evolved", version, about = "Derive gradients and Hessians of exponential-family losses, and check them numerically")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Derive the gradient and Hessian of a model's loss, print them, and check them
    Derive(DeriveArgs),
    /// Derive and run only the numeric check (exit 1 when it fails)
    Check(DeriveArgs),
    /// List the loaded rules and families
    Rules(RulesArgs),
    /// List the families of the catalog (and of --rules folders): their definitions, and
    /// E[T] and Cov[T] as the rules derive them from A
    Families(FamiliesArgs),
}

#[derive(Args, Debug, Clone)]
pub struct FamiliesArgs {
    /// Only these families
    pub names: Vec<String>,
    /// Print LaTeX (an align* block)
    #[arg(long)]
    pub latex: bool,
    /// ASCII text
    #[arg(long, conflicts_with = "latex")]
    pub ascii: bool,
    #[command(flatten)]
    pub rules: RulesArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RulesArgs {
    /// A folder of extra `.rules` files (and `.ef` family files); may be repeated
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Vec<PathBuf>,
    /// Use only the rules and families of the --rules folders, not the built-in ones
    #[arg(long)]
    pub only_rules: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DeriveArgs {
    /// The model file
    pub file: Option<PathBuf>,
    /// The model as text, statements separated by `;`
    #[arg(short = 'e', long = "expr", value_name = "MODEL", conflicts_with = "file")]
    pub expr: Option<String>,
    /// Print LaTeX (an align* block)
    #[arg(long)]
    pub latex: bool,
    /// Print JSON
    #[arg(long, conflicts_with = "latex")]
    pub json: bool,
    /// Plain ASCII text instead of Unicode
    #[arg(long)]
    pub ascii: bool,
    /// Evaluate every result at a point, e.g. 'theta=[0.1,0.2]; q=[0.5,0.5]'
    #[arg(long, value_name = "VALUES")]
    pub at: Option<String>,
    /// Skip the numeric check
    #[arg(long)]
    pub no_check: bool,
    /// Random points in the numeric check
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub points: u64,
    /// Seed of the numeric check
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// List the rules that rewrote the e-graph
    #[arg(long)]
    pub show_rules: bool,
    /// Show the derivation step by step, each step naming its rule; `--steps=all` also
    /// lists the bookkeeping steps one by one
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "main", value_name = "WHICH")]
    pub steps: Option<StepsArg>,
    /// How results are written: `matrix` (evolved notation) or `index` (∂J/∂θᵢ = pᵢ − qᵢ);
    /// index forms are checked numerically too
    #[arg(long, value_enum, default_value = "matrix")]
    pub notation: Notation,
    #[command(flatten)]
    pub rules: RulesArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notation {
    Matrix,
    Index,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepsArg {
    /// the steps that do calculus or use an identity (bookkeeping folded in)
    Main,
    /// every rewrite
    All,
}

/// The rules and the catalog, from the built-ins and/or folders.
pub struct RuleSources {
    pub rules: Vec<Rule>,
    pub families: Vec<(String, String)>,
}

/// Reads the rule folders. Errors are file:line:col messages.
pub fn load_sources(a: &RulesArgs) -> Result<RuleSources, String> {
    let mut extra_rules = vec![];
    let mut families: Vec<(String, String)> =
        if a.only_rules { vec![] } else { DEFAULT_FAMILIES.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect() };
    for dir in &a.rules {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("rules" | "ef")))
            .collect();
        entries.sort();
        for p in entries {
            let src = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if p.extension().is_some_and(|x| x == "ef") {
                families.push((p.display().to_string(), src));
            } else {
                extra_rules.push((p.display().to_string(), src));
            }
        }
    }
    let rules = rule_set(&extra_rules, !a.only_rules).map_err(|e| {
        // show the place in the file, with the line and a caret
        let src = crate::rules::DEFAULT_RULES
            .iter()
            .find(|(f, _)| *f == e.file)
            .map(|(_, s)| s.to_string())
            .or_else(|| extra_rules.iter().find(|(f, _)| *f == e.file).map(|(_, s)| s.clone()));
        match src {
            Some(src) => diagnostic(&e.file, &src, &SyntaxError { span: crate::syntax::Span { start: e.offset, end: e.offset + 1 }, message: e.message.clone() }),
            None => e.to_string(),
        }
    })?;
    Ok(RuleSources { rules, families })
}

/// The catalog's family declarations.
/// Each family is built and validated here, so its errors point into its own file.
pub fn catalog(families: &[(String, String)]) -> Result<Vec<FamilyDecl>, String> {
    if is_builtin(families) {
        return builtin_catalog().0.clone();
    }
    read_catalog(families)
}

fn is_builtin(families: &[(String, String)]) -> bool {
    families.len() == DEFAULT_FAMILIES.len() && families.iter().zip(DEFAULT_FAMILIES).all(|((f, s), (g, t))| f == g && s == t)
}

/// The built-in catalog, read and validated once per process: its declarations, and
/// its families as models hold them.
#[allow(clippy::type_complexity)]
fn builtin_catalog() -> &'static (Result<Vec<FamilyDecl>, String>, Result<Vec<crate::model::Family>, SyntaxError>) {
    static BUILTIN: std::sync::OnceLock<(Result<Vec<FamilyDecl>, String>, Result<Vec<crate::model::Family>, SyntaxError>)> = std::sync::OnceLock::new();
    BUILTIN.get_or_init(|| {
        let files: Vec<(String, String)> = DEFAULT_FAMILIES.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect();
        let decls = read_catalog(&files);
        let built = match &decls {
            Ok(d) => crate::model::catalog_families(d),
            Err(_) => Ok(vec![]),
        };
        (decls, built)
    })
}

fn read_catalog(families: &[(String, String)]) -> Result<Vec<FamilyDecl>, String> {
    let mut out: Vec<FamilyDecl> = vec![];
    let mut seen: Vec<(String, String)> = vec![];
    for (file, src) in families {
        let stmts = parse_model(src).map_err(|e| diagnostic(file, src, &e))?;
        for s in stmts {
            match s.kind {
                StmtKind::Family(f) => {
                    let at = |message: String| diagnostic(file, src, &SyntaxError { span: s.span, message });
                    if let Some((_, prev)) = seen.iter().find(|(n, _)| *n == f.name) {
                        return Err(at(format!("family `{}` is already declared in {prev} (a --rules folder's .ef file may not redefine a built-in family; use --only-rules)", f.name)));
                    }
                    let fam = crate::model::family(&f, s.span, true).map_err(|e| diagnostic(file, src, &e))?;
                    crate::check::validate_families(&Model { families: vec![fam], ..Default::default() }).map_err(at)?;
                    seen.push((f.name.clone(), file.clone()));
                    out.push(f)
                }
                _ => return Err(diagnostic(file, src, &SyntaxError { span: s.span, message: "a family file holds only `family` statements".into() })),
            }
        }
    }
    Ok(out)
}

/// An error with file:line:col, the line, and a caret under the place.
pub fn diagnostic(file: &str, src: &str, e: &SyntaxError) -> String {
    use ariadne::{Config, Label, Report, ReportKind, Source};
    // a span may end inside a character (a rule error is one byte long): widen it to whole characters
    let mut start = e.span.start.min(src.len());
    while !src.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = e.span.end.clamp(start, src.len());
    while !src.is_char_boundary(end) {
        end += 1;
    }
    let before = &src[..start];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    // ariadne counts characters
    let cs = src[..start].chars().count();
    let ce = cs + src[start..end].chars().count().max(1);
    // a place at the very end gets a blank to point at
    let shown = if start >= src.len() { format!("{src} ") } else { src.to_string() };
    let mut buf = Vec::new();
    let report = Report::build(ReportKind::Error, (file, cs..ce))
        .with_config(Config::default().with_color(false))
        .with_message(format!("{file}:{line}:{col}: {}", e.message))
        .with_label(Label::new((file, cs..ce)).with_message("here"))
        .finish();
    if report.write((file, Source::from(shown)), &mut buf).is_err() {
        return format!("error: {file}:{line}:{col}: {}", e.message);
    }
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

/// A model from its text, with the given family catalog; errors are diagnostics.
pub fn model_from_source(file: &str, src: &str, families: &[(String, String)]) -> Result<Model, String> {
    let stmts = parse_model(src).map_err(|e| diagnostic(file, src, &e))?;
    let model = if is_builtin(families) {
        let (decls, built) = builtin_catalog();
        decls.as_ref().map_err(|e| e.clone())?;
        crate::model::build_model_from(&stmts, || built.clone())
    } else {
        build_model(&stmts, &catalog(families)?)
    };
    let model = model.map_err(|e| diagnostic(file, src, &e))?;
    // the catalog's families were validated by `catalog`; the model's own here, in place
    for f in model.families.iter().filter(|f| !f.from_catalog) {
        crate::check::validate_families(&Model { families: vec![f.clone()], ..Default::default() })
            .map_err(|e| diagnostic(file, src, &SyntaxError { span: f.span, message: e }))?;
    }
    Ok(model)
}

/// Reads a model from a file or a one-liner.
pub fn read_model(a: &DeriveArgs, families: &[(String, String)]) -> Result<Model, String> {
    let (file, src) = match (&a.file, &a.expr) {
        (_, Some(e)) => ("<expr>".to_string(), e.clone()),
        (Some(f), None) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("error: {}: {e}", f.display()))?;
            // a byte-order mark is not part of the model
            (f.display().to_string(), text.trim_start_matches('\u{feff}').to_string())
        }
        (None, None) => return Err("error: give a model file or -e 'MODEL'".into()),
    };
    model_from_source(&file, &src, families)
}

/// Runs the tool; returns the exit code.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match cli.command {
        Command::Rules(a) => match load_sources(&a) {
            Ok(src) => {
                for r in &src.rules {
                    let _ = writeln!(out, "{:<22} {}", r.name, r.description);
                }
                match catalog(&src.families) {
                    Ok(fams) => {
                        for f in fams {
                            let _ = writeln!(out, "family {}", f.name);
                        }
                        0
                    }
                    Err(e) => {
                        let _ = writeln!(err, "{e}");
                        2
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(err, "{e}");
                2
            }
        },
        Command::Families(a) => families_cmd(&a, out, err),
        Command::Derive(a) => derive_cmd(&a, false, out, err),
        Command::Check(a) => derive_cmd(&a, true, out, err),
    }
}

fn families_cmd(a: &FamiliesArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let fams = match load_sources(&a.rules).and_then(|src| {
        let fams = crate::families_from(&src.families)?;
        Ok((src, fams))
    }) {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 2;
        }
    };
    let (src, fams) = fams;
    if let Some(bad) = a.names.iter().find(|n| !fams.iter().any(|f| &f.name == *n)) {
        let names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
        let _ = writeln!(err, "error: unknown family `{bad}`; known: {}", names.join(", "));
        return 2;
    }
    let style = if a.latex { Style::Latex } else if a.ascii { Style::Ascii } else { Style::Unicode };
    let mut parts = vec![];
    for f in fams.iter().filter(|f| a.names.is_empty() || a.names.contains(&f.name)) {
        let (mean, cov) = match crate::derive::family_moments(f, &src.rules, &Limits::default()) {
            Ok(x) => x,
            Err(e) => {
                let _ = writeln!(err, "error: family {}: {e}", f.name);
                return 2;
            }
        };
        let further = match crate::derive::further_moments(f, mean.as_ref(), &src.rules, &Limits::default()) {
            Ok(x) => x,
            Err(e) => {
                let _ = writeln!(err, "error: family {}: {e}", f.name);
                return 2;
            }
        };
        parts.push(crate::report::family_text(f, mean.as_ref(), cov.as_ref(), &further, style));
    }
    let text = if a.latex { format!("\\begin{{align*}}\n{}\n\\end{{align*}}\n", parts.join(" \\\\[1ex]\n")) } else { parts.join("\n") };
    let _ = out.write_all(text.as_bytes());
    0
}

fn derive_cmd(a: &DeriveArgs, check_only: bool, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let sources = match load_sources(&a.rules) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 2;
        }
    };
    let model = match read_model(a, &sources.families) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 2;
        }
    };
    let at = match &a.at {
        Some(text) => match parse_point(&model, text) {
            Ok(p) => Some(p),
            Err(e) => {
                let _ = writeln!(err, "error: --at: {e}");
                return 2;
            }
        },
        None => None,
    };
    let derivation = match derive(&model, &sources.rules, &Limits::default()) {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return 2;
        }
    };
    let style = if a.ascii { Style::Ascii } else { Style::Unicode };
    let report = (!a.no_check || check_only).then(|| {
        let opts = CheckOptions { points: a.points as usize, seed: a.seed, index: a.notation == Notation::Index, ..Default::default() };
        // a definition is named in the check line by its left side: p, A(θ)
        check(&model, &derivation, &opts, &|d| {
            let line = definition_line(&model, d, &derivation.definitions, style);
            line.split(" = ").next().unwrap_or(&line).to_string()
        })
    });
    let steps = match a.steps.map(|w| crate::steps::explain(&model, &derivation, &Limits::default(), w == StepsArg::All)) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            let _ = writeln!(err, "error: {e}");
            return 2;
        }
        None => None,
    };
    let index = a.notation == Notation::Index;
    let outcome = Outcome { check: report.as_ref(), at: at.as_ref(), steps: steps.as_deref(), index, ..Outcome::new(&model, &derivation, &sources.rules) };
    let text = if a.json {
        serde_json::to_string_pretty(&outcome.json()).unwrap() + "\n"
    } else if a.latex {
        outcome.latex()
    } else if check_only {
        outcome.notes(style) + &crate::report::check_line(&model, report.as_ref().unwrap(), style) + "\n"
    } else {
        outcome.text(style, a.show_rules)
    };
    let _ = out.write_all(text.as_bytes());
    match &report {
        Some(r) if !r.passed => {
            let failed: Vec<&crate::check::Comparison> = r.comparisons.iter().filter(|c| !c.passed).collect();
            if failed.iter().all(|c| c.error.is_some()) {
                let _ = writeln!(err, "error: the numeric check could not evaluate {}: {}", failed[0].quantity, failed[0].error.as_deref().unwrap_or(""));
            } else {
                let bad: Vec<&str> = failed.iter().filter(|c| c.error.is_none()).map(|c| c.quantity.as_str()).collect();
                let _ = writeln!(err, "error: the numeric check failed: {} disagree(s) with the loss's derivatives", bad.join(", "));
            }
            1
        }
        _ => 0,
    }
}
