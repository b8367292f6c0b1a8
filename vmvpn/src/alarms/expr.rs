//! The condition of a rule, in the shape of a Prometheus expression over vmvpn's own
//! series (the names `/metrics` exports):
//!
//! ```text
//! vmvpn_peer_rx_loss_ratio > 0.02                  a threshold
//! vmvpn_peer_up == 0                               a state
//! rate(vmvpn_lan_drops_total) > 10                 a counter's increase per second
//! vmvpn_peer_rtt_p99_seconds > 3 * baseline(vmvpn_peer_rtt_p99_seconds)
//!                                                  against the series' own EWMA mean
//! vmvpn_peer_rtt_p99_seconds > 3 * baseline(vmvpn_peer_rtt_p99_seconds) + 0.05
//!                                                  ... and by more than 50 ms
//! anomaly(vmvpn_peer_rtt_p50_seconds) > 4          EWMA z-score band
//! anomaly(vmvpn_peer_srtt_seconds, 0.003) > 4      ... at least 3 ms wide per deviation
//! anomaly_hw(vmvpn_vm_port_tx_rate_bytes_per_second) > 4
//!                                                  Holt-Winters band (daily shape)
//! ```
//!
//! One comparison per expression: an operator reads it at once, and a second condition
//! is a second rule.

use std::fmt;

/// How a series is looked at.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// Its value.
    Value(String),
    /// Per-second increase of a counter.
    Rate(String),
    /// z-score against an EWMA baseline, whose deviation counts as at least the second
    /// field (0: no floor). A series that is nearly flat (a quiet tunnel's RTT varies by
    /// microseconds) otherwise scores scheduling noise as a fault.
    Anomaly(String, f64),
    /// Score against a Holt-Winters forecast.
    AnomalyHw(String),
}

/// The right-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    /// A number.
    Number(f64),
    /// `k * baseline(metric) + c`: k times the series' EWMA mean, plus c (0 when absent),
    /// so a rule can ask for a change that is large both relatively and absolutely.
    Baseline(f64, String, f64),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// The series and how it is looked at.
    pub lhs: Term,
    /// The comparison.
    pub cmp: Cmp,
    /// What it is compared with.
    pub rhs: Rhs,
}

impl Term {
    /// The series' metric name.
    pub fn metric(&self) -> &str {
        match self {
            Term::Value(m) | Term::Rate(m) | Term::Anomaly(m, _) | Term::AnomalyHw(m) => m,
        }
    }
}

impl Cmp {
    /// Whether `a cmp b` holds.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lhs {
            Term::Value(m) => write!(f, "{m}")?,
            Term::Rate(m) => write!(f, "rate({m})")?,
            Term::Anomaly(m, floor) if *floor > 0.0 => write!(f, "anomaly({m}, {floor})")?,
            Term::Anomaly(m, _) => write!(f, "anomaly({m})")?,
            Term::AnomalyHw(m) => write!(f, "anomaly_hw({m})")?,
        }
        let op = match self.cmp {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        };
        match &self.rhs {
            Rhs::Number(n) => write!(f, " {op} {n}"),
            Rhs::Baseline(k, m, c) if *c != 0.0 => write!(f, " {op} {k} * baseline({m}) + {c}"),
            Rhs::Baseline(k, m, _) => write!(f, " {op} {k} * baseline({m})"),
        }
    }
}

/// `name` or `func(name)`: the function (if any) and the name.
fn call(s: &str) -> Result<(Option<&str>, &str), String> {
    let s = s.trim();
    if let Some(open) = s.find('(') {
        let Some(inner) = s[open + 1..].strip_suffix(')') else {
            return Err(format!("`{s}`: a `(` without its `)`"));
        };
        Ok((Some(s[..open].trim()), inner.trim()))
    } else {
        Ok((None, s))
    }
}

fn metric(name: &str, known: &dyn Fn(&str) -> bool) -> Result<String, String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{name}` is not a metric name"));
    }
    if !known(name) {
        return Err(format!(
            "no series named `{name}` (the names are those of /metrics; see the README's Alarms section)"
        ));
    }
    Ok(name.to_string())
}

/// Parse a condition; `known` says which metric names exist.
pub fn parse(text: &str, known: &dyn Fn(&str) -> bool) -> Result<Expr, String> {
    const OPS: [(&str, Cmp); 6] = [
        (">=", Cmp::Ge),
        ("<=", Cmp::Le),
        ("==", Cmp::Eq),
        ("!=", Cmp::Ne),
        (">", Cmp::Gt),
        ("<", Cmp::Lt),
    ];
    let Some((at, op, cmp)) = OPS
        .iter()
        .filter_map(|(op, c)| text.find(op).map(|i| (i, *op, *c)))
        .min_by_key(|(i, op, _)| (*i, std::cmp::Reverse(op.len())))
    else {
        return Err(format!("`{text}`: no comparison (one of > >= < <= == !=)"));
    };
    let (left, right) = (&text[..at], &text[at + op.len()..]);
    let lhs = match call(left)? {
        (None, m) => Term::Value(metric(m, known)?),
        (Some("rate"), m) => Term::Rate(metric(m, known)?),
        (Some("anomaly"), inner) => match inner.split_once(',') {
            None => Term::Anomaly(metric(inner, known)?, 0.0),
            Some((m, floor)) => {
                let floor = floor.trim();
                match floor.parse::<f64>() {
                    Ok(x) if x.is_finite() && x >= 0.0 => {
                        Term::Anomaly(metric(m.trim(), known)?, x)
                    }
                    _ => {
                        return Err(format!(
                            "`{floor}`: anomaly's second argument is the smallest deviation, a number of 0 or more"
                        ));
                    }
                }
            }
        },
        (Some("anomaly_hw"), m) => Term::AnomalyHw(metric(m, known)?),
        (Some(f), _) => {
            return Err(format!(
                "unknown function `{f}` (rate, anomaly, anomaly_hw on the left)"
            ));
        }
    };
    let right = right.trim();
    // `… baseline(m) + c`: the constant after the call's `)`.
    let (right, offset) = match right.rfind(')') {
        Some(close) if right[close + 1..].trim().starts_with('+') => {
            let c = right[close + 1..].trim()[1..].trim();
            match c.parse::<f64>() {
                Ok(c) if c.is_finite() => (right[..=close].trim(), c),
                _ => return Err(format!("`{c}` is not a finite number")),
            }
        }
        Some(close) if !right[close + 1..].trim().is_empty() => {
            return Err(format!(
                "`{right}`: expected `k * baseline(metric)`, optionally `+ c`"
            ));
        }
        _ => (right, 0.0),
    };
    let rhs = if let Ok(n) = right.parse::<f64>() {
        if !n.is_finite() {
            return Err(format!("`{right}` is not a finite number"));
        }
        Rhs::Number(n)
    } else if let Some((k, b)) = right.split_once('*') {
        let k: f64 = k
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a number", k.trim()))?;
        match call(b)? {
            (Some("baseline"), m) => Rhs::Baseline(k, metric(m, known)?, offset),
            _ => return Err(format!("`{right}`: expected `k * baseline(metric)`")),
        }
    } else {
        match call(right)? {
            (Some("baseline"), m) => Rhs::Baseline(1.0, metric(m, known)?, offset),
            _ => {
                return Err(format!(
                    "`{right}`: expected a number or `k * baseline(metric)`"
                ));
            }
        }
    };
    Ok(Expr { lhs, cmp, rhs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(m: &str) -> bool {
        m.starts_with("vmvpn_")
    }

    #[test]
    fn the_documented_forms_parse_and_print_back() {
        for text in [
            "vmvpn_peer_rx_loss_ratio > 0.02",
            "vmvpn_peer_up == 0",
            "rate(vmvpn_lan_drops_total) > 10",
            "vmvpn_peer_rtt_p99_seconds > 3 * baseline(vmvpn_peer_rtt_p99_seconds)",
            "anomaly(vmvpn_peer_rtt_p50_seconds) >= 4",
            "anomaly(vmvpn_peer_srtt_seconds, 0.003) > 4",
            "vmvpn_peer_rtt_p99_seconds > 3 * baseline(vmvpn_peer_rtt_p99_seconds) + 0.05",
            "anomaly_hw(vmvpn_vm_port_tx_rate_bytes_per_second) > 4",
            "vmvpn_peer_rx_loss_ratio <= 0.01",
            "vmvpn_peer_up != 1",
        ] {
            let e = parse(text, &known).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(e.to_string(), text);
        }
        let e = parse("vmvpn_x>=2", &known).expect("no spaces");
        assert_eq!((e.cmp, e.rhs), (Cmp::Ge, Rhs::Number(2.0)));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, want) in [
            ("vmvpn_peer_up", "no comparison"),
            ("nope > 1", "no series named `nope`"),
            ("avg(vmvpn_x) > 1", "unknown function `avg`"),
            ("vmvpn_x > lots", "expected a number"),
            ("vmvpn_x > 2 * mean(vmvpn_x)", "k * baseline"),
            ("rate(vmvpn_x > 1", "without its `)`"),
            ("vmvpn x > 1", "not a metric name"),
            ("vmvpn_x > inf", "not a finite number"),
            ("anomaly(vmvpn_x, -1) > 4", "smallest deviation"),
            ("anomaly(vmvpn_x, lots) > 4", "smallest deviation"),
            (
                "vmvpn_x > 3 * baseline(vmvpn_x) + much",
                "not a finite number",
            ),
            ("vmvpn_x > 3 * baseline(vmvpn_x) * 2", "optionally `+ c`"),
        ] {
            let e = parse(text, &known).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
