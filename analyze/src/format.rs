//! How numbers read in the report and on the figures, each rule defined once:
//! anything not finite reads "n/a" in the report.

/// r to three decimals with its sign ("+0.842").
pub fn f3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.3}")
    } else {
        "n/a".into()
    }
}

/// A p-value: three decimals, or two significant digits below 0.001.
pub fn pv(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v < 1e-3 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

/// A percentage of depth, whole points ("42%").
pub fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}%")
    } else {
        "n/a".into()
    }
}

/// r with two decimals and an explicit sign ("+0.84", "-0.62"; zero reads "0.00").
pub fn signed(r: f64) -> String {
    let s = format!("{r:+.2}");
    if s == "-0.00" || s == "+0.00" {
        "0.00".to_string()
    } else {
        s
    }
}
