//! Text to syntax trees: the model language and the rule-file language share one
//! expression grammar. Every node keeps the byte span it came from.
//!
//! Statements end at a newline or `;`. A line that ends inside brackets, after a comma
//! or after a binary operator continues on the next line.

use nom::branch::alt;
use nom::bytes::complete::{take_till, take_while, take_while1};
use nom::character::complete::{char, digit1};
use nom::combinator::{opt, recognize};
use nom::error::{ErrorKind, ParseError};
use nom::sequence::pair;
use nom::{IResult, Parser};

/// A byte range in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// An error at a place in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A decimal literal, kept as written so it can be read exactly.
    Num(String),
    Var(String),
    Neg(Box<Expr>),
    Transpose(Box<Expr>),
    Binary(char, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
    /// `E_q[body]`
    Expect(String, Box<Expr>),
    /// `p(x | param)`; the parameter may be left out.
    Density(String, Option<Box<Expr>>),
    /// `sum(i in n, body)`: Σ over i = 1..n (index, its span, dimension, its span, body)
    SumOver(String, Span, String, Span, Box<Expr>),
    /// `KL(F(args) || F(args))`
    Kl((String, Span, Vec<Arg>), (String, Span, Vec<Arg>)),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

/// `R^(m,n)`, `simplex^k`, `binary`, ...
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub domain: String,
    pub dims: Vec<(String, Span)>,
    pub span: Span,
}

/// `usual(NAME : TYPE, …) = η` or `= (η, P, …)`: the usual parameters, the natural
/// parameter(s) they give (η first, then the further natural parameters, those with a
/// `T(P) = …` clause, in the order the family lists them), the place
pub type UsualDecl = (Vec<(String, TypeExpr)>, Vec<Expr>, Span);

#[derive(Clone, Debug, PartialEq)]
pub struct FamilyDecl {
    pub name: String,
    pub param: String,
    pub param_type: TypeExpr,
    pub var: String,
    pub var_type: TypeExpr,
    /// known (fixed) parameters after the natural one: `binomial(eta : R, n : count)`
    pub known: Vec<(String, TypeExpr)>,
    /// `T = ...`, `A = ...`, `logh = ...`, `mean = name`, each with the span of its key;
    /// `T(P) = ...` (key `T(P)`) makes the parameter P natural too, with that statistic.
    pub clauses: Vec<(String, Span, Expr)>,
    /// `usual(rate : positive) = log(rate)`, `usual(shape : positive, rate : positive) =
    /// [shape - 1, -rate]`: usual parameters and the natural parameter they give
    pub usual: Vec<UsualDecl>,
    /// `recognise`: models that do not mention the family still have its log-partition
    /// recognised (log Σ exp θ is A of categorical)
    pub recognise: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    Dim(Vec<(String, Span)>),
    Param(String, TypeExpr),
    Data(String, TypeExpr),
    /// `x ~ family(arg, name = arg, …)`
    Sample { var: String, family: String, family_span: Span, args: Vec<Arg> },
    Let(String, Expr),
    Family(FamilyDecl),
    /// `derive grad J, hess J wrt theta`
    Derive(Vec<DeriveItem>),
    /// `claim hess J = diag(p) - outer(p, p)`
    Claim(DeriveItem, Expr),
}

/// An argument of a family: positional, or `name = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<(String, Span)>,
    pub value: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeriveItem {
    pub order: usize,
    pub name: String,
    pub wrt: Option<String>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

/// One rewrite rule as written in a rules file.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDecl {
    pub name: String,
    pub lhs: Expr,
    pub rhs: Expr,
    pub both_ways: bool,
    pub conditions: Vec<(String, Vec<Expr>, Span)>,
    pub assume: Option<String>,
    pub description: String,
    /// set by a `phase NAME` line above the rule: "derive" (the default) or "tidy"
    pub phase: String,
    /// set by a `steps MODE` line above the rule, how `--steps` shows it: "shown" (the
    /// default: a step of its own), "grouped" (one step with the grouped rules of the same
    /// file next to it) or "quiet" (bookkeeping, folded into the step before)
    pub steps: String,
    pub span: Span,
}

#[derive(Debug)]
struct PErr<'a> {
    at: &'a str,
    msg: String,
}

impl<'a> ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(at: &'a str, _kind: ErrorKind) -> Self {
        PErr { at, msg: String::new() }
    }
    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }
    fn or(self, other: Self) -> Self {
        if other.at.len() <= self.at.len() { other } else { self }
    }
}

type Res<'a, T> = IResult<&'a str, T, PErr<'a>>;

fn fail<'a, T>(at: &'a str, msg: impl Into<String>) -> Res<'a, T> {
    Err(nom::Err::Failure(PErr { at, msg: msg.into() }))
}

fn miss<'a, T>(at: &'a str, msg: impl Into<String>) -> Res<'a, T> {
    Err(nom::Err::Error(PErr { at, msg: msg.into() }))
}

/// Parsing state: the whole source, for offsets.
struct Src<'a> {
    all: &'a str,
    /// bracket nesting, bounded so deep input is an error, not a stack overflow
    depth: std::cell::Cell<usize>,
}

/// Deepest bracket nesting accepted.
const MAX_DEPTH: usize = 256;

impl<'a> Src<'a> {
    fn off(&self, rest: &str) -> usize {
        self.all.len() - rest.len()
    }
    fn span(&self, from: &str, to: &str) -> Span {
        Span { start: self.off(from), end: self.off(to) }
    }
    /// line:column of a place, for messages that name a second place
    fn line_col(&self, at: &str) -> String {
        let before = &self.all[..self.off(at)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        format!("{line}:{col}")
    }
    /// `expected` (a closing bracket, perhaps after a `,`) was wanted at `at`, to close the
    /// bracket at `open`: says which bracket is left open, or which closer does not match.
    fn unclosed<T>(&self, at: &'a str, open: &'a str, expected: &str) -> Res<'a, T> {
        let o = open.chars().next().unwrap_or('(');
        let place = self.line_col(open);
        match at.chars().next() {
            None => fail(at, format!("the `{o}` at {place} is never closed: expected {expected}")),
            Some(c @ (')' | ']' | '}')) => fail(at, format!("`{c}` does not match the `{o}` at {place}: expected {expected}")),
            Some(c) => fail(at, format!("unexpected `{c}`: expected {expected} to close the `{o}` at {place}")),
        }
    }
}

/// Skips blanks and comments; newlines too when `nl`.
fn ws(i: &str, nl: bool) -> &str {
    let mut i = i;
    loop {
        let t = i.trim_start_matches(|c: char| c == ' ' || c == '\t' || c == '\r' || (nl && c == '\n'));
        if t.starts_with('#') {
            i = t.trim_start_matches(|c| c != '\n');
        } else {
            return t;
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    (c.is_alphanumeric() || c == '_' || c == '-') && c != 'ᵀ'
}

/// Identifiers: letters (Unicode too: θ), digits and `_`; in rule names also `-`.
fn ident(i: &str) -> Res<'_, &str> {
    let (rest, s) = recognize(pair(
        take_while1(is_ident_start),
        take_while(|c: char| (c.is_alphanumeric() || c == '_') && c != 'ᵀ'),
    ))
    .parse(i)?;
    Ok((rest, s))
}

fn rule_name(i: &str) -> Res<'_, &str> {
    recognize(pair(take_while1(is_ident_start), take_while(is_ident_char))).parse(i)
}

fn number(i: &str) -> Res<'_, &str> {
    recognize((digit1, opt(pair(char('.'), digit1)), opt((alt((char('e'), char('E'))), opt(alt((char('+'), char('-')))), digit1))))
        .parse(i)
}

/// Words that end an expression rather than multiply it.
const STOP_WORDS: &[&str] = &["if", "assume", "wrt", "on"];

const KEYWORDS: &[&str] = &["dim", "param", "data", "derive", "claim", "family", "grad", "hess", "hvp", "wrt", "on"];

impl<'a> Src<'a> {
    fn expr(&self, i: &'a str, nl: bool) -> Res<'a, Expr> {
        self.additive(i, nl)
    }

    fn binary_chain(
        &self,
        i: &'a str,
        nl: bool,
        ops: &[char],
        next: &dyn Fn(&'a str) -> Res<'a, Expr>,
    ) -> Res<'a, Expr> {
        let start = i;
        let (mut i, mut lhs) = next(i)?;
        loop {
            let j = ws(i, nl);
            // `X w`: a product written by juxtaposition
            let implicit = ops.contains(&'*') && (j.starts_with('(') || ident(j).is_ok_and(|(_, w)| !STOP_WORDS.contains(&w)));
            if implicit {
                let (rest, rhs) = next(j)?;
                lhs = Expr { kind: ExprKind::Binary('*', Box::new(lhs), Box::new(rhs)), span: self.span(start, rest) };
                i = rest;
                continue;
            }
            // `.*` is the elementwise product, `−` the minus sign
            let (op, len) = match j.chars().next() {
                Some('.') if j.starts_with(".*") && ops.contains(&'*') => ('⊙', 2),
                Some('−') if ops.contains(&'-') => ('-', '−'.len_utf8()),
                Some(c) if ops.contains(&c) => (c, c.len_utf8()),
                _ => return Ok((i, lhs)),
            };
            // `=>` ends an expression in rule files.
            if op == '-' && j[len..].starts_with('>') {
                return Ok((i, lhs));
            }
            let after = ws(&j[len..], true);
            let (rest, rhs) = match next(after) {
                Ok(r) => r,
                Err(nom::Err::Error(_)) => return fail(after, format!("expected an expression after `{op}`")),
                Err(e) => return Err(e),
            };
            lhs = Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span: self.span(start, rest) };
            i = rest;
        }
    }

    fn additive(&self, i: &'a str, nl: bool) -> Res<'a, Expr> {
        self.binary_chain(i, nl, &['+', '-'], &|i| self.multiplicative(i, nl))
    }

    fn multiplicative(&self, i: &'a str, nl: bool) -> Res<'a, Expr> {
        self.binary_chain(i, nl, &['*', '/', '@', '⊙'], &|i| self.unary(i, nl))
    }

    fn unary(&self, i: &'a str, nl: bool) -> Res<'a, Expr> {
        let j = ws(i, nl);
        if let Some(rest) = j.strip_prefix('-').or_else(|| j.strip_prefix('−')) {
            if self.depth.get() >= MAX_DEPTH {
                return fail(j, format!("more than {MAX_DEPTH} signs in a row"));
            }
            self.depth.set(self.depth.get() + 1);
            let r = self.unary(ws(rest, nl), nl);
            self.depth.set(self.depth.get() - 1);
            let (rest, e) = match r {
                Ok(r) => r,
                Err(nom::Err::Error(_)) => return fail(rest, "expected an expression after `-`"),
                Err(e) => return Err(e),
            };
            return Ok((rest, Expr { kind: ExprKind::Neg(Box::new(e)), span: self.span(j, rest) }));
        }
        self.power(j, nl)
    }

    fn power(&self, i: &'a str, nl: bool) -> Res<'a, Expr> {
        let (i2, base) = self.postfix(i, nl)?;
        let j = ws(i2, nl);
        if let Some(rest) = j.strip_prefix('^') {
            let (rest, e) = match self.unary(ws(rest, true), nl) {
                Ok(r) => r,
                Err(nom::Err::Error(_)) => return fail(rest, "expected an exponent after `^`"),
                Err(e) => return Err(e),
            };
            return Ok((rest, Expr { kind: ExprKind::Binary('^', Box::new(base), Box::new(e)), span: self.span(i, rest) }));
        }
        Ok((i2, base))
    }

    fn postfix(&self, i: &'a str, nl: bool) -> Res<'a, Expr> {
        let (mut rest, mut e) = self.primary(i, nl)?;
        loop {
            if let Some(r) = rest.strip_prefix('\'').or_else(|| rest.strip_prefix('ᵀ')) {
                e = Expr { kind: ExprKind::Transpose(Box::new(e)), span: self.span(i, r) };
                rest = r;
            } else if rest.starts_with('[') {
                // v[i]: an entry, counted from 1
                let (r, mut args) = self.args(rest, ']')?;
                if args.len() != 1 {
                    return fail(rest, "an index takes one number: v[1]");
                }
                e = Expr { kind: ExprKind::Call("at".into(), vec![e, args.remove(0)]), span: self.span(i, r) };
                rest = r;
            } else {
                return Ok((rest, e));
            }
        }
    }

    /// A family's arguments in brackets: positional, or `name = value`.
    fn family_args(&self, open: &'a str) -> Res<'a, Vec<Arg>> {
        let mut i = ws(&open[1..], true);
        let mut out = vec![];
        if let Some(r) = i.strip_prefix(')') {
            return Ok((r, out));
        }
        loop {
            let mut name = None;
            if let Ok((r, n)) = ident(i) {
                let after = ws(r, true);
                if after.starts_with('=') && !after.starts_with("=>") {
                    name = Some((n.to_string(), self.span(i, r)));
                    i = ws(&after[1..], true);
                }
            }
            let (r, e) = match self.expr(i, true) {
                Ok(x) => x,
                Err(nom::Err::Error(_)) => return fail(i, "expected an argument"),
                Err(e) => return Err(e),
            };
            out.push(Arg { name, value: e });
            let r = ws(r, true);
            if let Some(r) = r.strip_prefix(',') {
                i = ws(r, true);
            } else if let Some(r) = r.strip_prefix(')') {
                return Ok((r, out));
            } else {
                return self.unclosed(r, open, "`,` or `)`");
            }
        }
    }

    /// `F(args)` inside KL(…)
    fn family_term(&self, i: &'a str) -> Res<'a, (String, Span, Vec<Arg>)> {
        let j = ws(i, true);
        let Ok((r, name)) = ident(j) else { return fail(j, "expected a family, as in KL(categorical(a) || categorical(b))") };
        let span = self.span(j, r);
        if !r.starts_with('(') {
            return fail(r, "expected `(` and the family's parameter");
        }
        let (r, args) = self.family_args(r)?;
        Ok((r, (name.to_string(), span, args)))
    }

    /// Arguments up to `close`; `open` is the opening bracket.
    fn args(&self, open: &'a str, close: char) -> Res<'a, Vec<Expr>> {
        let i = &open[open.chars().next().map_or(0, char::len_utf8)..];
        let mut out = vec![];
        let mut i = ws(i, true);
        if let Some(r) = i.strip_prefix(close) {
            return Ok((r, out));
        }
        loop {
            let (r, e) = match self.expr(i, true) {
                Ok(x) => x,
                Err(nom::Err::Error(_)) => return fail(i, "expected an argument"),
                Err(e) => return Err(e),
            };
            out.push(e);
            let r = ws(r, true);
            if let Some(r) = r.strip_prefix(',') {
                i = ws(r, true);
            } else if let Some(r) = r.strip_prefix(close) {
                return Ok((r, out));
            } else {
                return self.unclosed(r, open, &format!("`,` or `{close}`"));
            }
        }
    }

    fn primary(&self, i: &'a str, nl: bool) -> Res<'a, Expr> {
        let i = ws(i, nl);
        if self.depth.get() >= MAX_DEPTH {
            return fail(i, format!("brackets nested more than {MAX_DEPTH} deep"));
        }
        self.depth.set(self.depth.get() + 1);
        let r = self.primary_inner(i, nl);
        self.depth.set(self.depth.get() - 1);
        r
    }

    fn primary_inner(&self, i: &'a str, nl: bool) -> Res<'a, Expr> {
        if let Ok((rest, n)) = number(i) {
            return Ok((rest, Expr { kind: ExprKind::Num(n.to_string()), span: self.span(i, rest) }));
        }
        if i.starts_with('[') {
            // [a, b]: a vector written out
            let (r, args) = self.args(i, ']')?;
            if args.is_empty() {
                return fail(i, "a vector needs at least one entry: [a, b]");
            }
            return Ok((r, Expr { kind: ExprKind::Call("stack".into(), args), span: self.span(i, r) }));
        }
        if let Some(r) = i.strip_prefix('(') {
            let open = i;
            let (r, mut e) = match self.expr(r, true) {
                Ok(x) => x,
                Err(nom::Err::Error(_)) => return fail(ws(r, true), "expected an expression after `(`"),
                Err(e) => return Err(e),
            };
            let r2 = ws(r, true);
            let Some(r2) = r2.strip_prefix(')') else { return self.unclosed(r2, open, "`)`") };
            e.span = self.span(i, r2);
            return Ok((r2, e));
        }
        let Ok((rest, name)) = ident(i) else {
            return miss(i, "expected an expression");
        };
        // E_q[ ... ]
        if let Some(dist) = name.strip_prefix("E_") {
            if !dist.is_empty() && rest.starts_with('[') {
                let (r, body) = match self.expr(&rest[1..], true) {
                    Ok(x) => x,
                    Err(nom::Err::Error(_)) => return fail(ws(&rest[1..], true), "expected an expression inside E_[…]"),
                    Err(e) => return Err(e),
                };
                let r = ws(r, true);
                let Some(r) = r.strip_prefix(']') else { return self.unclosed(r, rest, "`]`") };
                return Ok((r, Expr { kind: ExprKind::Expect(dist.to_string(), Box::new(body)), span: self.span(i, r) }));
            }
        }
        // KL(F(a) || F(b)); in rule files KL(F, a, b) is an ordinary call
        if name == "KL" && rest.starts_with('(') {
            // KL(a || b) with no family: say what a member looks like
            let bars = self.expr(&rest[1..], true).is_ok_and(|(r, _)| {
                let r = ws(r, true);
                r.starts_with("||") || r.starts_with('‖')
            });
            if bars && self.family_term(&rest[1..]).is_err() {
                return fail(ws(&rest[1..], true), "expected a family member, as in KL(categorical(a) || categorical(b))");
            }
            if let Ok((r, a)) = self.family_term(&rest[1..]) {
                let r = ws(r, true);
                let Some(r) = r.strip_prefix("||").or_else(|| r.strip_prefix('‖')) else { return fail(r, "expected `||` between the two members in KL(F(a) || F(b))") };
                let (r, b) = self.family_term(r)?;
                let r = ws(r, true);
                let Some(r) = r.strip_prefix(')') else { return self.unclosed(r, rest, "`)` after KL(…") };
                return Ok((r, Expr { kind: ExprKind::Kl(a, b), span: self.span(i, r) }));
            }
        }
        if name == "p" && rest.starts_with('(') {
            let r = ws(&rest[1..], true);
            let Ok((r, var)) = ident(r) else { return fail(r, "expected a random variable inside p(…)") };
            let r = ws(r, true);
            let (r, param) = if let Some(r) = r.strip_prefix('|') {
                let (r, e) = match self.expr(r, true) {
                    Ok(x) => x,
                    Err(nom::Err::Error(_)) => return fail(ws(r, true), "expected a parameter after `|`"),
                    Err(e) => return Err(e),
                };
                (ws(r, true), Some(Box::new(e)))
            } else {
                (r, None)
            };
            let Some(r) = r.strip_prefix(')') else { return self.unclosed(r, rest, "`)` after p(…") };
            return Ok((r, Expr { kind: ExprKind::Density(var.to_string(), param), span: self.span(i, r) }));
        }
        // sum(i in n, body): a sum over an index
        if name == "sum" && rest.starts_with('(') {
            let r = ws(&rest[1..], true);
            if let Ok((r1, index)) = ident(r) {
                let r2 = ws(r1, false);
                if let Some(r2) = r2.strip_prefix("in").filter(|x| x.starts_with([' ', '\t', '\n'])) {
                    let r3 = ws(r2, true);
                    let Ok((r4, dim)) = ident(r3) else { return fail(r3, "expected a dimension after `in`, as in sum(i in n, …)") };
                    let r5 = ws(r4, true);
                    let Some(r5) = r5.strip_prefix(',') else { return fail(r5, "expected `,` and the summand, as in sum(i in n, f(X[i]))") };
                    let (r6, body) = match self.expr(r5, true) {
                        Ok(x) => x,
                        Err(nom::Err::Error(_)) => return fail(ws(r5, true), "expected the summand after `,`"),
                        Err(e) => return Err(e),
                    };
                    let r6 = ws(r6, true);
                    let Some(r7) = r6.strip_prefix(')') else { return self.unclosed(r6, rest, "`)` after sum(…") };
                    let kind = ExprKind::SumOver(index.to_string(), self.span(r, r1), dim.to_string(), self.span(r3, r4), Box::new(body));
                    return Ok((r7, Expr { kind, span: self.span(i, r7) }));
                }
            }
        }
        if rest.starts_with('(') {
            let (r, args) = self.args(rest, ')')?;
            return Ok((r, Expr { kind: ExprKind::Call(name.to_string(), args), span: self.span(i, r) }));
        }
        // `log p(x | θ)`: log or exp applied without brackets.
        if matches!(name, "log" | "exp") && rest.starts_with([' ', '\t']) {
            if let Ok((r, arg)) = self.postfix(ws(rest, false), nl) {
                return Ok((r, Expr { kind: ExprKind::Call(name.to_string(), vec![arg]), span: self.span(i, r) }));
            }
        }
        Ok((rest, Expr { kind: ExprKind::Var(name.to_string()), span: self.span(i, rest) }))
    }

    fn type_expr(&self, i: &'a str) -> Res<'a, TypeExpr> {
        let i = ws(i, false);
        let Ok((mut rest, domain)) = ident(i) else { return fail(i, "expected a type such as R, R^k, R^(m,n) or simplex^k") };
        let mut dims = vec![];
        let dim = |j: &'a str| -> Res<'a, (String, Span)> {
            let j = ws(j, true);
            match alt((ident, digit1)).parse(j) {
                Ok((r, d)) => Ok((r, (d.to_string(), self.span(j, r)))),
                Err(_) => fail(j, "expected a dimension name or size"),
            }
        };
        if let Some(r) = ws(rest, false).strip_prefix('^') {
            let r = ws(r, false);
            if let Some(mut r) = r.strip_prefix('(') {
                loop {
                    let (r2, d) = dim(r)?;
                    dims.push(d);
                    let r2 = ws(r2, true);
                    if let Some(r3) = r2.strip_prefix(',').or_else(|| r2.strip_prefix('×')).or_else(|| r2.strip_prefix('x')) {
                        r = r3;
                    } else if let Some(r3) = r2.strip_prefix(')') {
                        rest = r3;
                        break;
                    } else {
                        return fail(r2, "expected `,` or `)` in the dimensions");
                    }
                }
            } else {
                let (r2, d) = dim(r)?;
                dims.push(d);
                rest = r2;
            }
        }
        Ok((rest, TypeExpr { domain: domain.to_string(), dims, span: self.span(i, rest) }))
    }

    fn expect_char(&self, i: &'a str, c: char, what: &str) -> Res<'a, ()> {
        let j = ws(i, false);
        match j.strip_prefix(c) {
            Some(r) => Ok((r, ())),
            None => fail(j, format!("expected `{c}` {what}")),
        }
    }

    /// One or more items separated by commas: `item`, then `, item` while a comma follows.
    fn comma_list<T>(&self, i: &'a str, mut item: impl FnMut(&'a str) -> Res<'a, T>) -> Res<'a, Vec<T>> {
        let (mut r, first) = item(i)?;
        let mut list = vec![first];
        while let Some(r2) = ws(r, false).strip_prefix(',') {
            let (r3, x) = item(r2)?;
            list.push(x);
            r = r3;
        }
        Ok((r, list))
    }

    fn name(&self, i: &'a str, what: &str) -> Res<'a, (String, Span)> {
        let j = ws(i, false);
        match ident(j) {
            Ok((r, n)) if !KEYWORDS.contains(&n) => Ok((r, (n.to_string(), self.span(j, r)))),
            Ok((_, n)) => fail(j, format!("`{n}` is a keyword; expected {what}")),
            Err(_) => fail(j, format!("expected {what}")),
        }
    }

    fn statement(&self, i: &'a str) -> Res<'a, Stmt> {
        let start = ws(i, false);
        let (rest, word) = match ident(start) {
            Ok(x) => x,
            Err(_) => {
                let what = "a statement (dim, param, data, family, derive, `x ~ family(…)` or `name = expression`)";
                return match start.chars().next() {
                    Some(c) => fail(start, format!("unexpected `{c}`: expected {what}")),
                    None => fail(start, format!("expected {what}")),
                };
            }
        };
        let kind = match word {
            "dim" => {
                let (r, names) = self.comma_list(rest, |r| self.name(r, "a dimension name"))?;
                return Ok((r, Stmt { kind: StmtKind::Dim(names), span: self.span(start, r) }));
            }
            "param" | "data" => {
                let (r, (n, _)) = self.name(rest, "a name")?;
                let (r, _) = self.expect_char(r, ':', "before the type")?;
                let (r, t) = self.type_expr(r)?;
                let k = if word == "param" { StmtKind::Param(n, t) } else { StmtKind::Data(n, t) };
                return Ok((r, Stmt { kind: k, span: self.span(start, r) }));
            }
            "claim" => {
                let j = ws(rest, false);
                let (r2, order) = match ident(j) {
                    Ok((r2, "grad")) => (r2, 1),
                    Ok((r2, "hess")) => (r2, 2),
                    _ => return fail(j, "expected `claim grad NAME = …` or `claim hess NAME = …`"),
                };
                let (mut r2, (name, _)) = self.name(r2, "the name of a loss")?;
                let mut wrt = None;
                if let Ok((r3, "wrt")) = ident(ws(r2, false)) {
                    let (r4, (w, _)) = self.name(r3, "a parameter after `wrt`")?;
                    wrt = Some(w);
                    r2 = r4;
                }
                let item = DeriveItem { order, name, wrt, span: self.span(j, r2) };
                let (r3, _) = self.expect_char(r2, '=', "and the claimed formula")?;
                let (r3, e) = match self.expr(ws(r3, false), false) {
                    Ok(x) => x,
                    Err(nom::Err::Error(_)) => return fail(ws(r3, false), "expected the claimed formula"),
                    Err(e) => return Err(e),
                };
                return Ok((r3, Stmt { kind: StmtKind::Claim(item, e), span: self.span(start, r3) }));
            }
            "derive" => {
                let (r, items) = self.comma_list(rest, |r| {
                    let j = ws(r, false);
                    let (r2, order) = match ident(j) {
                        Ok((r2, "grad")) => (r2, 1),
                        Ok((r2, "hess")) => (r2, 2),
                        Ok((r2, "hvp")) => (r2, 3),
                        _ => return fail(j, "expected `grad NAME`, `hess NAME` or `hvp NAME`"),
                    };
                    let (r2, (name, _)) = self.name(r2, "the name of a loss")?;
                    let mut r2 = r2;
                    let mut wrt = None;
                    if let Ok((r3, "wrt")) = ident(ws(r2, false)) {
                        let (r4, (w, _)) = self.name(r3, "a parameter after `wrt`")?;
                        wrt = Some(w);
                        r2 = r4;
                    }
                    Ok((r2, DeriveItem { order, name, wrt, span: self.span(j, r2) }))
                })?;
                return Ok((r, Stmt { kind: StmtKind::Derive(items), span: self.span(start, r) }));
            }
            "family" => {
                let (r, f) = self.family(rest)?;
                return Ok((r, Stmt { kind: StmtKind::Family(f), span: self.span(start, r) }));
            }
            _ => word,
        };
        let name = kind.to_string();
        let j = ws(rest, false);
        if let Some(r) = j.strip_prefix('~') {
            let (r, (family, fspan)) = self.name(r, "a family name after `~`")?;
            let r = ws(r, false);
            if !r.starts_with('(') {
                return fail(r, "expected `(` and the family's parameter");
            }
            let (r, args) = self.family_args(r)?;
            return Ok((r, Stmt { kind: StmtKind::Sample { var: name, family, family_span: fspan, args }, span: self.span(start, r) }));
        }
        if let Some(r) = j.strip_prefix('=') {
            let r = ws(r, false);
            let (r, e) = match self.expr(r, false) {
                Ok(x) => x,
                Err(nom::Err::Error(_)) => return fail(r, "expected an expression after `=`"),
                Err(e) => return Err(e),
            };
            return Ok((r, Stmt { kind: StmtKind::Let(name, e), span: self.span(start, r) }));
        }
        fail(start, format!("unknown statement `{word}`: expected dim, param, data, family, derive, `{word} ~ family(…)` or `{word} = expression`"))
    }

    /// `family NAME(PARAM : TYPE) on VAR : TYPE, T = …, A = …[, logh = …][, mean = NAME]`
    fn family(&self, i: &'a str) -> Res<'a, FamilyDecl> {
        let (r, (name, _)) = self.name(i, "a family name")?;
        let (r, _) = self.expect_char(r, '(', "after the family name")?;
        let (r, (param, _)) = self.name(r, "the natural parameter")?;
        let (r, _) = self.expect_char(r, ':', "before the parameter's type")?;
        let (mut r, param_type) = self.type_expr(r)?;
        let mut known = vec![];
        while let Some(r2) = ws(r, false).strip_prefix(',') {
            let (r2, (k, _)) = self.name(r2, "a known parameter")?;
            let (r2, _) = self.expect_char(r2, ':', "before the known parameter's type")?;
            let (r2, t) = self.type_expr(r2)?;
            known.push((k, t));
            r = r2;
        }
        let (r, _) = self.expect_char(r, ')', "after the parameters")?;
        let j = ws(r, false);
        let r = match ident(j) {
            Ok((r, "on")) => r,
            _ => return fail(j, "expected `on VAR : SUPPORT` (the variable and its support)"),
        };
        let (r, (var, _)) = self.name(r, "the random variable")?;
        let (r, _) = self.expect_char(r, ':', "before the support")?;
        let (mut r, var_type) = self.type_expr(r)?;
        let mut clauses = vec![];
        let mut usual = vec![];
        let mut recognise = false;
        while let Some(r2) = ws(r, false).strip_prefix(',') {
            let j = ws(r2, true);
            let Ok((r3, key)) = ident(j) else { return fail(j, "expected `T = …`, `A = …`, `logh = …`, `mean = NAME`, `usual(NAME : TYPE) = …` or `recognise`") };
            let kspan = self.span(j, r3);
            if key == "recognise" && !ws(r3, false).starts_with('=') {
                recognise = true;
                r = r3;
                continue;
            }
            if key == "usual" {
                let (r4, _) = self.expect_char(r3, '(', "and the usual parameter, as in usual(rate : positive) = log(rate)")?;
                let (r4, names) = self.comma_list(r4, |r4| {
                    let (r5, (u, _)) = self.name(r4, "the usual parameter's name")?;
                    let (r5, _) = self.expect_char(r5, ':', "before the usual parameter's type")?;
                    let (r5, t) = self.type_expr(r5)?;
                    Ok((r5, (u, t)))
                })?;
                let (r4, _) = self.expect_char(r4, ')', "after the usual parameters")?;
                let (r4, _) = self.expect_char(r4, '=', "and the natural parameter it gives")?;
                let (r4, es) = self.natural_params(r4)?;
                usual.push((names, es, kspan));
                r = r4;
                continue;
            }
            // `T(P) = …`: the statistic that pairs with a further natural parameter P
            let (r3, key) = match ws(r3, false).strip_prefix('(') {
                Some(r4) if key == "T" => {
                    let (r4, (p, _)) = self.name(r4, "the natural parameter this statistic pairs with")?;
                    let (r4, _) = self.expect_char(r4, ')', "after the parameter's name")?;
                    (r4, format!("T({p})"))
                }
                _ => (r3, key.to_string()),
            };
            let (r3, _) = self.expect_char(r3, '=', "after the clause name")?;
            let (r3, e) = match self.expr(ws(r3, false), false) {
                Ok(x) => x,
                Err(nom::Err::Error(_)) => return fail(ws(r3, false), "expected an expression"),
                Err(e) => return Err(e),
            };
            clauses.push((key, kspan, e));
            r = r3;
        }
        Ok((r, FamilyDecl { name, param, param_type, var, var_type, known, clauses, usual, recognise }))
    }

    /// What a usual parameterisation gives: the natural parameter, `η`, or a parenthesised
    /// list of several, `(η, P)` (a parenthesised expression without a comma is one).
    fn natural_params(&self, i: &'a str) -> Res<'a, Vec<Expr>> {
        let what = "expected the natural parameter as an expression of the usual one";
        let one = |j: &'a str| match self.expr(ws(j, false), false) {
            Ok((r, e)) => Ok((r, e)),
            Err(nom::Err::Error(_)) => fail(ws(j, false), what),
            Err(e) => Err(e),
        };
        let start = ws(i, false);
        if let Some(Ok((r, list))) = start.strip_prefix('(').map(|r| self.comma_list(r, one)) {
            if list.len() > 1 {
                let (r, _) = self.expect_char(r, ')', "after the natural parameters")?;
                return Ok((r, list));
            }
        }
        let (r, e) = one(start)?;
        Ok((r, vec![e]))
    }

    /// `phase NAME` or `steps MODE` (a marker: a rule without a name), or a rule.
    fn rule_item(&self, i: &'a str) -> Res<'a, Option<RuleDecl>> {
        let start = ws(i, false);
        if let Ok((r, word @ ("phase" | "steps"))) = ident(start) {
            if !ws(r, false).starts_with(':') {
                let j = ws(r, false);
                let allowed: &[&str] = if word == "phase" { &["derive", "tidy"] } else { &["shown", "grouped", "quiet"] };
                return match ident(j) {
                    Ok((r2, p)) if allowed.contains(&p) => {
                        let mut d = RuleDecl::phase_marker();
                        d.phase = format!("{word} {p}");
                        d.span = self.span(start, r2);
                        Ok((r2, Some(d)))
                    }
                    _ => fail(j, format!("expected {}", allowed.iter().map(|a| format!("`{word} {a}`")).collect::<Vec<_>>().join(" or "))),
                };
            }
        }
        self.rule(i).map(|(r, d)| (r, Some(d)))
    }

    fn rule(&self, i: &'a str) -> Res<'a, RuleDecl> {
        let start = ws(i, false);
        let Ok((r, name)) = rule_name(start) else { return fail(start, "expected a rule name") };
        let (r, _) = self.expect_char(r, ':', "after the rule name")?;
        let (r, lhs) = match self.expr(r, false) {
            Ok(x) => x,
            Err(nom::Err::Error(_)) => return fail(ws(r, false), "expected the left-hand side"),
            Err(e) => return Err(e),
        };
        let j = ws(r, false);
        let (r, both_ways) = if let Some(r) = j.strip_prefix("<=>") {
            (r, true)
        } else if let Some(r) = j.strip_prefix("=>") {
            (r, false)
        } else {
            return fail(j, "expected `=>` or `<=>`");
        };
        let (mut r, rhs) = match self.expr(ws(r, true), false) {
            Ok(x) => x,
            Err(nom::Err::Error(_)) => return fail(ws(r, false), "expected the right-hand side"),
            Err(e) => return Err(e),
        };
        let mut conditions = vec![];
        if let Ok((r2, "if")) = ident(ws(r, false)) {
            (r, conditions) = self.comma_list(r2, |r| {
                let j = ws(r, true);
                let Ok((r2, cname)) = rule_name(j) else { return fail(j, "expected a condition such as indep(c, x)") };
                let r2 = ws(r2, false);
                if !r2.starts_with('(') {
                    return fail(r2, "expected `(` after the condition name");
                }
                let (r2, args) = self.args(r2, ')')?;
                Ok((r2, (cname.to_string(), args, self.span(j, r2))))
            })?;
        }
        let mut assume = None;
        if let Ok((r2, "assume")) = ident(ws(r, false)) {
            let j = ws(r2, false);
            let Some(j2) = j.strip_prefix('"') else { return fail(j, "expected a quoted assumption") };
            let Ok((r3, text)) = take_till::<_, _, PErr>(|c| c == '"' || c == '\n').parse(j2) else { unreachable!() };
            let Some(r3) = r3.strip_prefix('"') else { return fail(r3, "unterminated quote") };
            assume = Some(text.to_string());
            r = r3;
        }
        let mut description = String::new();
        let j = ws(r, false);
        if let Some(r2) = j.strip_prefix('|') {
            let (r3, text) = take_till::<_, _, PErr>(|c| c == '\n').parse(r2).unwrap();
            description = text.trim().to_string();
            r = r3;
        }
        Ok((r, RuleDecl { name: name.to_string(), lhs, rhs, both_ways, conditions, assume, description, phase: "derive".into(), steps: "shown".into(), span: self.span(start, r) }))
    }

    /// Runs `one` on each statement of the source.
    fn many<T>(&self, one: &dyn Fn(&'a str) -> Res<'a, T>) -> Result<Vec<T>, SyntaxError> {
        let mut out = vec![];
        let mut i = self.all;
        loop {
            i = ws(i, false);
            if let Some(r) = i.strip_prefix('\n').or_else(|| i.strip_prefix(';')) {
                i = r;
                continue;
            }
            if i.is_empty() {
                return Ok(out);
            }
            match one(i) {
                Ok((r, t)) => {
                    let r2 = ws(r, false);
                    if !(r2.is_empty() || r2.starts_with('\n') || r2.starts_with(';')) {
                        let bad = r2.chars().next().unwrap();
                        if let Some(open) = [(')', '('), (']', '['), ('}', '{')].iter().find(|(c, _)| *c == bad).map(|(_, o)| o) {
                            return Err(self.error(r2, format!("unmatched `{bad}`: there is no `{open}` before it to close")));
                        }
                        return Err(self.error(r2, format!("unexpected `{bad}`: expected the end of the statement")));
                    }
                    out.push(t);
                    i = r2;
                }
                Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => {
                    let msg = if e.msg.is_empty() { "unexpected input".to_string() } else { e.msg };
                    return Err(self.error(e.at, msg));
                }
                Err(nom::Err::Incomplete(_)) => return Err(self.error(i, "incomplete input".to_string())),
            }
        }
    }

    fn error(&self, at: &str, message: String) -> SyntaxError {
        let start = self.off(at);
        let len = at.chars().next().map(|c| c.len_utf8()).unwrap_or(0);
        SyntaxError { span: Span { start, end: start + len }, message }
    }
}

/// Parses a model (file contents or a one-liner).
pub fn parse_model(src: &str) -> Result<Vec<Stmt>, SyntaxError> {
    let s = Src { all: src, depth: std::cell::Cell::new(0) };
    s.many(&|i| s.statement(i))
}

impl RuleDecl {
    fn phase_marker() -> RuleDecl {
        let e = Expr { kind: ExprKind::Num("0".into()), span: Span::default() };
        RuleDecl { name: String::new(), lhs: e.clone(), rhs: e, both_ways: false, conditions: vec![], assume: None, description: String::new(), phase: String::new(), steps: String::new(), span: Span::default() }
    }
}

/// Parses a rules file. A `phase tidy` line puts the rules after it in the phase that
/// tidies extracted results; `phase derive` switches back. A `steps grouped` or
/// `steps quiet` line sets how `--steps` shows the rules after it; `steps shown` resets.
pub fn parse_rules(src: &str) -> Result<Vec<RuleDecl>, SyntaxError> {
    let s = Src { all: src, depth: std::cell::Cell::new(0) };
    let items = s.many(&|i| s.rule_item(i))?;
    let (mut phase, mut steps) = ("derive".to_string(), "shown".to_string());
    let mut out = vec![];
    for d in items.into_iter().flatten() {
        match d.phase.split_once(' ') {
            Some(("phase", p)) => phase = p.to_string(),
            Some(("steps", q)) => steps = q.to_string(),
            _ => out.push(RuleDecl { phase: phase.clone(), steps: steps.clone(), ..d }),
        }
    }
    Ok(out)
}

/// Parses one expression (used by `--at` values and tests).
pub fn parse_expr(src: &str) -> Result<Expr, SyntaxError> {
    let s = Src { all: src, depth: std::cell::Cell::new(0) };
    match s.expr(src, true) {
        Ok((r, e)) if ws(r, true).is_empty() => Ok(e),
        Ok((r, _)) => Err(s.error(ws(r, true), "unexpected input after the expression".into())),
        Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => Err(s.error(e.at, if e.msg.is_empty() { "unexpected input".into() } else { e.msg })),
        Err(nom::Err::Incomplete(_)) => Err(s.error(src, "incomplete input".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_model() {
        let m = parse_model(
            "dim k\nparam theta : R^k\ndata  q     : simplex^k # labels\nx ~ categorical(theta)\nJ = E_q[-log p(x | theta)]\nderive grad J, hess J\n",
        )
        .unwrap();
        assert_eq!(m.len(), 6);
        let StmtKind::Let(_, e) = &m[4].kind else { panic!() };
        let ExprKind::Expect(q, body) = &e.kind else { panic!("{e:?}") };
        assert_eq!(q, "q");
        let ExprKind::Neg(inner) = &body.kind else { panic!() };
        let ExprKind::Call(f, args) = &inner.kind else { panic!() };
        assert_eq!(f, "log");
        assert!(matches!(args[0].kind, ExprKind::Density(..)));
    }

    #[test]
    fn precedence_and_continuation() {
        let m = parse_model("J = a + b * c ^ 2 -\n  d'").unwrap();
        let StmtKind::Let(_, e) = &m[0].kind else { panic!() };
        let ExprKind::Binary('-', l, r) = &e.kind else { panic!("{e:?}") };
        assert!(matches!(r.kind, ExprKind::Transpose(_)));
        let ExprKind::Binary('+', _, bc) = &l.kind else { panic!() };
        let ExprKind::Binary('*', _, c2) = &bc.kind else { panic!() };
        assert!(matches!(c2.kind, ExprKind::Binary('^', _, _)));
    }

    #[test]
    fn error_positions() {
        let e = parse_model("dim k\nJ = (a + ").unwrap_err();
        assert_eq!(e.span.start, "dim k\nJ = (a + ".len());
        assert!(e.message.contains("expected an expression"), "{}", e.message);
    }

    #[test]
    fn rules() {
        let r = parse_rules("d-add: D(a + b, x) => D(a, x) + D(b, x) | linearity\nsum-one: sum(q) => 1 if simplex(q) assume \"1ᵀq = 1\" | normalised").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].description, "linearity");
        assert_eq!(r[1].conditions[0].0, "simplex");
        assert_eq!(r[1].assume.as_deref(), Some("1ᵀq = 1"));
    }
}
