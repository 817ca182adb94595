//! Special functions for the evaluator: log Γ (from `libm`), and the polygamma functions
//! ψ⁽ⁿ⁾ (digamma ψ, trigamma ψ′, …) by upward recurrence to a large argument and the
//! asymptotic series there. Accurate to about 1e-15 relative for positive arguments.

/// log |Γ(x)|; +∞ at the poles 0, −1, −2, ….
pub fn lgamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// B₂, B₄, …, B₁₆
const BERNOULLI: [f64; 8] = [1.0 / 6.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 5.0 / 66.0, -691.0 / 2730.0, 7.0 / 6.0, -3617.0 / 510.0];

fn factorial(n: u32) -> f64 {
    (1..=n).map(f64::from).product()
}

/// ψ⁽ⁿ⁾(x), the n-th derivative of the digamma function ψ = (log Γ)′. For n ≥ 1 it is
/// defined here for x > 0 (NaN otherwise); ψ itself also for negative non-integers.
pub fn polygamma(n: u32, x: f64) -> f64 {
    if x.is_nan() || n > 30 {
        return f64::NAN;
    }
    if x <= 0.0 {
        // the poles 0, −1, −2, …
        if x.fract() == 0.0 || !x.is_finite() {
            return f64::NAN;
        }
        if n == 0 {
            // reflection: ψ(x) = ψ(1 − x) − π cot(πx)
            let pi = std::f64::consts::PI;
            return polygamma(0, 1.0 - x) - pi / (pi * x).tan();
        }
        // else the recurrence below climbs from x (one step per unit: not from far out)
        if x < -1e6 {
            return f64::NAN;
        }
    }
    if x == f64::INFINITY {
        return if n == 0 { f64::INFINITY } else { 0.0 };
    }
    // ψ⁽ⁿ⁾(x) = ψ⁽ⁿ⁾(x + 1) − (−1)ⁿ n! / x^(n+1)
    let sign = if n.is_multiple_of(2) { 1.0 } else { -1.0 };
    let nf = factorial(n);
    let mut acc = 0.0;
    let mut x = x;
    while x < 20.0 {
        acc -= sign * nf / x.powi(n as i32 + 1);
        x += 1.0;
    }
    let series = if n == 0 {
        let x2 = x * x;
        let mut s = x.ln() - 0.5 / x;
        let mut p = x2;
        for (k, b) in BERNOULLI.iter().enumerate() {
            let k2 = 2.0 * (k as f64 + 1.0);
            s -= b / (k2 * p);
            p *= x2;
        }
        s
    } else {
        // (−1)^(n+1) [ (n−1)!/xⁿ + n!/(2x^(n+1)) + Σ B₂ₖ (2k+n−1)!/((2k)! x^(2k+n)) ]
        let mut s = factorial(n - 1) / x.powi(n as i32) + nf / (2.0 * x.powi(n as i32 + 1));
        for (k, b) in BERNOULLI.iter().enumerate() {
            let k2 = 2 * (k as u32 + 1);
            s += b * factorial(k2 + n - 1) / (factorial(k2) * x.powi((k2 + n) as i32));
        }
        -sign * s
    };
    series + acc
}

/// e^(−|x|) Iₙ(x) for n = 0, 1: the modified Bessel functions of the first kind, scaled
/// so that they stay finite (power series up to |x| = 25, the asymptotic series beyond).
pub fn bessel_i_scaled(n: u32, x: f64) -> f64 {
    let ax = x.abs();
    let sign = if n == 1 && x < 0.0 { -1.0 } else { 1.0 };
    if ax <= 25.0 {
        // Σ (x/2)^(2k+n) / (k! (k+n)!), all terms positive
        let h = ax / 2.0;
        let mut term = if n == 0 { 1.0 } else { h };
        let mut sum = term;
        for k in 1..200 {
            term *= h * h / (k as f64 * (k + n) as f64);
            sum += term;
            if term < 1e-17 * sum {
                break;
            }
        }
        return sign * sum * (-ax).exp();
    }
    // e^(−x) Iₙ(x) ~ 1/√(2πx) Σ (−1)ᵏ aₖ(n) / xᵏ, aₖ = Π_{j≤k} (4n² − (2j − 1)²) / (8j)
    let mu = 4.0 * (n * n) as f64;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for j in 1..60 {
        let next = -term * (mu - ((2 * j - 1) * (2 * j - 1)) as f64) / (8.0 * j as f64 * ax);
        if next.abs() >= term.abs() {
            break;
        }
        term = next;
        sum += term;
        if term.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    sign * sum / (2.0 * std::f64::consts::PI * ax).sqrt()
}

/// Iₙ(x), n = 0, 1 (infinite past |x| ≈ 713)
pub fn bessel_i(n: u32, x: f64) -> f64 {
    bessel_i_scaled(n, x) * x.abs().exp()
}

/// log I₀(x), finite for every x
pub fn log_bessel_i0(x: f64) -> f64 {
    x.abs() + bessel_i_scaled(0, x).ln()
}

/// I₁(x)/I₀(x), finite for every x
pub fn bessel_ratio(x: f64) -> f64 {
    bessel_i_scaled(1, x) / bessel_i_scaled(0, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-14 * b.abs().max(1.0)
    }

    #[test]
    fn known_values() {
        let euler = 0.577_215_664_901_532_9;
        let zeta3 = 1.202_056_903_159_594_3;
        assert!(close(polygamma(0, 1.0), -euler));
        assert!(close(polygamma(0, 0.5), -euler - 2.0 * 2f64.ln()));
        assert!(close(polygamma(1, 1.0), PI * PI / 6.0));
        assert!(close(polygamma(1, 0.5), PI * PI / 2.0));
        assert!(close(polygamma(2, 1.0), -2.0 * zeta3));
        assert!(close(polygamma(3, 1.0), PI.powi(4) / 15.0));
        // ψ(x + 1) = ψ(x) + 1/x, also far out and for small arguments
        // (compared to the size of the terms: near 0 the identity cancels 1/x)
        for x in [1e-3, 0.3, 7.5, 123.0, 1e6] {
            let (a, b) = (polygamma(0, x + 1.0), polygamma(0, x) + 1.0 / x);
            assert!((a - b).abs() <= 1e-15 * (1.0 / x).max(a.abs()).max(1.0), "{x}");
            let (a, b) = (polygamma(1, x + 1.0), polygamma(1, x) - 1.0 / (x * x));
            assert!((a - b).abs() <= 1e-15 * (1.0 / (x * x)).max(a.abs()).max(1.0), "{x}");
        }
        assert!(close(polygamma(0, -0.5), polygamma(0, 1.5) - PI / (-0.5 * PI).tan()));
        // below 0 too, between the poles: ψ′(x) + ψ′(1 − x) = π²/sin²(πx), ψ′(−1/2) = π²/2 + 4
        assert!(close(polygamma(1, -0.5), PI * PI / 2.0 + 4.0));
        for x in [-0.3, -2.7, -41.2] {
            assert!((polygamma(1, x) + polygamma(1, 1.0 - x) - (PI / (PI * x).sin()).powi(2)).abs() <= 1e-12 * polygamma(1, x).abs(), "{x}");
        }
        assert!(polygamma(1, -3.0).is_nan() && polygamma(2, 0.0).is_nan());
        assert!(close(lgamma(5.0), 24f64.ln()));
        assert!(close(lgamma(0.5), PI.sqrt().ln()));
        assert_eq!(lgamma(0.0), f64::INFINITY);
        // I₀(1), I₁(1), I₀(30) and the two series agreeing at the switch
        assert!(close(bessel_i(0, 1.0), 1.266_065_877_752_008_4));
        assert!(close(bessel_i(1, 1.0), 0.565_159_103_992_485_1));
        assert!((bessel_i(0, 30.0) / 781_672_297_823.977_6 - 1.0).abs() < 1e-13);
        // just past the switch to the asymptotic series (values from mpmath)
        assert!(close(bessel_i_scaled(0, 25.5), 0.079_398_524_547_970_62));
        assert!(close(bessel_i_scaled(1, 25.5), 0.077_825_789_091_938_58));
        assert!(log_bessel_i0(800.0).is_finite() && bessel_ratio(800.0) < 1.0);
    }
}
