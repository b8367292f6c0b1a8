//! The rules file (`[alarms] rules`), shaped like Prometheus alerting rules:
//!
//! ```toml
//! [[rule]]
//! alert = "VmvpnPeerLoss"
//! expr = "vmvpn_peer_rx_loss_ratio > 0.02"
//! for = "30s"
//! clear = "vmvpn_peer_rx_loss_ratio < 0.01"   # optional: hysteresis
//! keep_firing_for = "30s"                     # optional
//! severity = "warning"                        # info, warning or critical
//! labels = { team = "network" }
//! annotations = { summary = "{{ $labels.name }} loses {{ $value }} on {{ $labels.lan }}" }
//! ```
//!
//! Every error names the file, the line and the key. Without a file the default rules
//! ([`DEFAULT_RULES`]) apply.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::expr::{self, Expr};
use super::series;
use super::state::Hold;
pub use crate::status::Severity;
use common::config::ConfigError;

/// The rules that apply without a rules file.
pub const DEFAULT_RULES: &str = r#"
[[rule]]
alert = "VmvpnPeerDown"
expr = "vmvpn_peer_down == 1"
for = "5s"
severity = "critical"
annotations = { summary = "peer {{ $labels.name }} ({{ $labels.peer }}) on {{ $labels.lan }} is down" }

[[rule]]
alert = "VmvpnPeerLoss"
expr = "vmvpn_peer_rx_loss_ratio_10s > 0.02"
for = "30s"
clear = "vmvpn_peer_rx_loss_ratio_10s < 0.01"
keep_firing_for = "30s"
severity = "warning"
annotations = { summary = "{{ $value }} of what {{ $labels.name }} sends on {{ $labels.lan }} is lost" }

[[rule]]
alert = "VmvpnPeerRttHigh"
expr = "vmvpn_peer_srtt_seconds > 3 * baseline(vmvpn_peer_srtt_seconds) + 0.05"
for = "30s"
severity = "warning"
annotations = { summary = "smoothed RTT to {{ $labels.name }} on {{ $labels.lan }} is {{ $value }} s, over 3x its usual and 50 ms more" }

[[rule]]
alert = "VmvpnPeerRttAnomaly"
expr = "anomaly(vmvpn_peer_srtt_seconds, 0.003) > 4"
for = "10s"
severity = "warning"
annotations = { summary = "RTT to {{ $labels.name }} on {{ $labels.lan }} left its usual band (z = {{ $value }})" }

[[rule]]
alert = "VmvpnDropsRising"
expr = "rate(vmvpn_lan_drops_total) > 10"
for = "30s"
severity = "warning"
annotations = { summary = "{{ $value }} drops/s ({{ $labels.reason }}) on {{ $labels.lan }}" }

[[rule]]
alert = "VmvpnServiceDown"
expr = "vmvpn_service_backends_up == 0"
for = "5s"
severity = "critical"
annotations = { summary = "service {{ $labels.service }} on {{ $labels.lan }} has no backend up: its new connections are dropped" }
"#;

/// One rule, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The alert's name.
    pub alert: String,
    /// When it fires.
    pub expr: Expr,
    /// When a firing alert may resolve (None: when `expr` no longer holds).
    pub clear: Option<Expr>,
    /// Hold times.
    pub hold: Hold,
    /// Severity.
    pub severity: Severity,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Templated texts.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    alert: Spanned<String>,
    expr: Spanned<String>,
    #[serde(rename = "for")]
    pending_for: Option<Spanned<String>>,
    keep_firing_for: Option<Spanned<String>>,
    clear: Option<Spanned<String>>,
    #[serde(default)]
    severity: Severity,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// "500ms", "30s", "5m", "2h".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit (ms, s, m or h)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a whole number then ms, s, m or h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m or h)")),
    };
    if d > Duration::from_secs(7 * 86_400) {
        return Err(format!("`{s}` is more than a week"));
    }
    Ok(d)
}

/// Parse a rules file's text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Rule>, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: common::config::clip_lines(&e.to_string(), 160),
    })?;
    let line =
        |span: std::ops::Range<usize>| text[..span.start.min(text.len())].matches('\n').count() + 1;
    let bad = |span: std::ops::Range<usize>, key: String, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        line: line(span),
        key,
        message,
    };
    let mut rules = Vec::with_capacity(raw.rule.len());
    let mut names = BTreeMap::new();
    for (i, r) in raw.rule.into_iter().enumerate() {
        let key = |k: &str| format!("rule[{i}].{k}");
        let name = r.alert.get_ref().trim().to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(
                r.alert.span(),
                key("alert"),
                "an alert name is letters, digits and _".into(),
            ));
        }
        let expr = expr::parse(r.expr.get_ref(), &series::known)
            .map_err(|m| bad(r.expr.span(), key("expr"), m))?;
        let clear = match &r.clear {
            None => None,
            Some(c) => {
                let e = expr::parse(c.get_ref(), &series::known)
                    .map_err(|m| bad(c.span(), key("clear"), m))?;
                if e.lhs.metric() != expr.lhs.metric() {
                    return Err(bad(
                        c.span(),
                        key("clear"),
                        format!(
                            "must look at the same series as expr (`{}`)",
                            expr.lhs.metric()
                        ),
                    ));
                }
                Some(e)
            }
        };
        let dur = |v: &Option<Spanned<String>>, k: &str| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(Duration::ZERO),
                Some(s) => parse_duration(s.get_ref()).map_err(|m| bad(s.span(), key(k), m)),
            }
        };
        let hold = Hold {
            pending_for: dur(&r.pending_for, "for")?,
            keep_firing_for: dur(&r.keep_firing_for, "keep_firing_for")?,
        };
        // Two rules of one name would share their alerts' identity.
        if names.insert(name.clone(), i).is_some() {
            return Err(bad(
                r.alert.span(),
                key("alert"),
                format!("`{name}` is defined twice"),
            ));
        }
        rules.push(Rule {
            alert: name,
            expr,
            clear,
            hold,
            severity: r.severity,
            labels: r.labels,
            annotations: r.annotations,
        });
    }
    Ok(rules)
}

/// The default rules.
pub fn defaults() -> Vec<Rule> {
    parse(DEFAULT_RULES, Path::new("(default rules)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_parse() {
        let r = parse(DEFAULT_RULES, Path::new("d")).expect("defaults");
        assert_eq!(r.len(), 6);
        assert_eq!(defaults(), r);
        let loss = r
            .iter()
            .find(|r| r.alert == "VmvpnPeerLoss")
            .expect("loss rule");
        assert_eq!(loss.hold.pending_for, Duration::from_secs(30));
        assert!(loss.clear.is_some());
    }

    #[test]
    fn the_readme_shows_the_default_rules_as_they_are() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
        )
        .expect("README");
        assert!(
            readme.contains(DEFAULT_RULES.trim()),
            "update README's Alarms section"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["30", "s", "3x", "-1s", "9999h", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let text = "[[rule]]\nalert = \"A\"\nexpr = \"vmvpn_peer_up == 0\"\n\n[[rule]]\nalert = \"B\"\nexpr = \"vmvpn_peer_upp == 0\"\n";
        let e = parse(text, Path::new("/etc/vmvpn/alarms.toml")).expect_err("typo");
        let m = e.to_string();
        assert!(
            m.starts_with(
                "/etc/vmvpn/alarms.toml:7: `rule[1].expr`: no series named `vmvpn_peer_upp`"
            ),
            "{m}"
        );
        for (text, want) in [
            (
                "[[rule]]\nalert = \"A\"\nexpr = \"vmvpn_peer_up == 0\"\nfor = \"10\"\n",
                ":4: `rule[0].for`",
            ),
            (
                "[[rule]]\nalert = \"A B\"\nexpr = \"vmvpn_peer_up == 0\"\n",
                ":2: `rule[0].alert`",
            ),
            (
                "[[rule]]\nalert = \"A\"\nexpr = \"vmvpn_peer_up == 0\"\nclear = \"vmvpn_peer_rx_loss_ratio < 1\"\n",
                "same series",
            ),
            (
                "[[rule]]\nalert = \"A\"\nexpr = \"vmvpn_peer_up == 0\"\n[[rule]]\nalert = \"A\"\nexpr = \"vmvpn_peer_up == 0\"\n",
                "defined twice",
            ),
            (
                "[[rule]]\nalert = \"A\"\nexpr = \"vmvpn_peer_up == 0\"\nseverity = \"panic\"\n",
                "unknown variant",
            ),
            ("[[rule]]\nalert = \"A\"\nexp = \"x\"\n", "unknown field"),
        ] {
            let m = parse(text, Path::new("r.toml"))
                .expect_err(text)
                .to_string();
            assert!(m.contains(want), "{text}: {m}");
        }
    }
}
