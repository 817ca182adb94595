//! What a derived Hessian's form says: a covariance Cov[T(x)] (positive semi-definite, so
//! the loss is convex), diag(a) − a aᵀ, or Xᵀ D X; and a null space known from the family
//! (𝟙ᵀx = 1 for a one-hot x makes Cov[x] 𝟙 = 0). The check confirms both with eigenvalues.

use crate::derive::Derived;
use crate::lang::Node;
use crate::model::{Domain, Model};
use egg::{Id, RecExpr};

#[derive(Clone, Debug, PartialEq)]
pub enum Form {
    /// the e-class holds Cov[T(x)]
    Covariance,
    /// diag(a) − a aᵀ
    DiagMinusOuter,
    /// Xᵀ diag(d) X
    Gram,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Structure {
    pub form: Form,
    /// proved ⪰ 0 by the form (a covariance); otherwise left to the eigenvalues
    pub psd: bool,
    /// 𝟙 is in the null space: the Hessian is a covariance of (or made of the mean of) a
    /// one-hot statistic
    pub ones_null: bool,
}

/// The structure of a Hessian result, when its form is one of the known ones.
pub fn structure(model: &Model, r: &Derived) -> Option<Structure> {
    if r.order != 2 {
        return None;
    }
    let t = &r.term;
    let root = Id::from(t.as_ref().len() - 1);
    // the means in the term all of one-hot families with T(x) = x
    let means: Vec<bool> = t
        .iter()
        .filter_map(|n| match n {
            Node::Mean([f, _]) => Some(match &t[*f] {
                Node::Symbol(s) => model.family(*s).is_some_and(|f| f.is_indicator() && f.support == Domain::OneHot),
                _ => false,
            }),
            _ => None,
        })
        .collect();
    let one_hot = !means.is_empty() && means.iter().all(|b| *b);
    let form = if r.is_covariance {
        Form::Covariance
    } else if diag_minus_outer(t, root) {
        Form::DiagMinusOuter
    } else if gram(t, root) {
        Form::Gram
    } else {
        return None;
    };
    let ones_null = one_hot && matches!(form, Form::Covariance | Form::DiagMinusOuter);
    Some(Structure { psd: form == Form::Covariance, form, ones_null })
}

/// diag(a) − outer(a, a)
fn diag_minus_outer(t: &RecExpr<Node>, id: Id) -> bool {
    let Node::Sub([d, o]) = &t[id] else { return false };
    match (&t[*d], &t[*o]) {
        (Node::Diag(a), Node::Outer([b, c])) => same(t, *a, *b) && same(t, *b, *c),
        _ => false,
    }
}

/// Xᵀ (diag(d) X) or (Xᵀ diag(d)) X
fn gram(t: &RecExpr<Node>, id: Id) -> bool {
    let Node::MatMul([l, r]) = &t[id] else { return false };
    match (&t[*l], &t[*r]) {
        (Node::Transpose(x), Node::MatMul([d, y])) => matches!(t[*d], Node::Diag(_)) && same(t, *x, *y),
        (Node::MatMul([xt, d]), _) => matches!(&t[*xt], Node::Transpose(x) if same(t, *x, *r)) && matches!(t[*d], Node::Diag(_)),
        _ => false,
    }
}

fn same(t: &RecExpr<Node>, a: Id, b: Id) -> bool {
    crate::derive::subterm(t, a) == crate::derive::subterm(t, b)
}
