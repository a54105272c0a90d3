//! Tolerances as a type: how close a kernel's output must be to its CPU reference.

/// Passes where `|actual - expected| <= abs + rel * |expected|` for every element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

impl Tolerance {
    /// For f32 kernels whose outputs sum `terms` products of values in [-1, 1]: rounding grows
    /// with the length of the sum, and the order of summation differs from the reference.
    pub fn f32_sum(terms: usize) -> Tolerance {
        Tolerance { abs: 2e-6 * (terms.max(1) as f32), rel: 1e-5 }
    }
}

/// The worst element of a comparison, for test messages and the browser self-test.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub max_abs_err: f32,
    pub worst_index: usize,
    pub passed: bool,
}

pub fn compare(actual: &[f32], expected: &[f32], tol: Tolerance) -> Comparison {
    let mut cmp = Comparison { max_abs_err: 0.0, worst_index: 0, passed: actual.len() == expected.len() };
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (a - e).abs();
        // NaN compares false: treat it as a failure explicitly.
        if !(err <= tol.abs + tol.rel * e.abs()) {
            cmp.passed = false;
        }
        if !(err <= cmp.max_abs_err) {
            cmp.max_abs_err = if err.is_nan() { f32::INFINITY } else { err };
            cmp.worst_index = i;
        }
    }
    cmp
}

/// Root-mean-square error relative to the reference's RMS: the normalised error for large
/// tensors (whole decoded images, quantized layers), where single elements may stray but the
/// whole must stay close.
pub fn relative_rms_error(actual: &[f32], expected: &[f32]) -> f32 {
    if actual.len() != expected.len() {
        return f32::INFINITY;
    }
    let err: f64 = actual.iter().zip(expected).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let norm: f64 = expected.iter().map(|b| (*b as f64).powi(2)).sum();
    let value = (err / norm.max(1e-30)).sqrt() as f32;
    if value.is_nan() {
        f32::INFINITY
    } else {
        value
    }
}

/// The largest absolute difference; infinite when the lengths differ or a value is NaN, so a
/// broken output can never look close.
pub fn max_abs_diff(actual: &[f32], expected: &[f32]) -> f32 {
    if actual.len() != expected.len() {
        return f32::INFINITY;
    }
    actual.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, |m, d| {
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_the_worst_element_and_nan() {
        let tol = Tolerance { abs: 1e-3, rel: 0.0 };
        let c = compare(&[1.0, 2.0005, 3.0], &[1.0, 2.0, 3.0], tol);
        assert!(c.passed);
        assert_eq!(c.worst_index, 1);
        let c = compare(&[1.0, 2.01, 3.0], &[1.0, 2.0, 3.0], tol);
        assert!(!c.passed);
        let c = compare(&[f32::NAN, 2.0], &[1.0, 2.0], tol);
        assert!(!c.passed);
        assert_eq!(c.max_abs_err, f32::INFINITY);
        assert!(!compare(&[1.0], &[1.0, 2.0], tol).passed, "a missing element must fail");
    }
}
