//! What a reload would change: the running config file against the new one, key by key,
//! each change either applied live or refused with the reason.
//!
//! Compared as TOML tables, not as the typed config, so that every key, including one
//! added to the format later, is accounted for: a key this table does not name as live
//! is refused, never silently ignored.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// How a key changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// In the new file only.
    Added,
    /// In the running file only.
    Removed,
    /// In both, with another value.
    Changed,
}

/// What a reload does with one changed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// A LAN's static peers: added and removed; the others keep their sessions.
    Peers,
    /// A LAN's rate limits: replaced; unchanged limits keep their buckets.
    Limits,
    /// A LAN's services: replaced; a service keeps, for each backend it still has, its
    /// flows, health and counters.
    Services,
    /// `[telemetry]` measurement settings: the VM and flow tables start anew.
    Telemetry,
    /// The alarm rules file: read again.
    AlarmRules,
    /// A LAN joined (its TAP created) or left (its TAP removed); the others are not
    /// disturbed.
    Lans,
    /// `[export]`: the exporters restart with the new settings (IPFIX ends each flow
    /// with a record first, as at shutdown).
    Exports,
}

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Dotted path; LANs by name: `lan.lan1.peers`, `host.port`.
    pub key: String,
    /// Added, removed or changed.
    pub kind: ChangeKind,
    /// How it is applied live, or why it cannot be.
    pub apply: Result<Apply, String>,
}

impl Change {
    /// Whether a reload can apply it without a restart.
    pub fn is_live(&self) -> bool {
        self.apply.is_ok()
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
        };
        match &self.apply {
            Ok(_) => write!(f, "{}: {kind}, applied live", self.key),
            Err(why) => write!(f, "{}: {kind}, REFUSED: {why}", self.key),
        }
    }
}

/// Every key that differs between `old` and `new` (both already checked by
/// [`super::Config::parse`]), in file order of sections, with what a reload does with it.
pub fn changes(old: &str, new: &str) -> Result<Vec<Change>, String> {
    let parse = |t: &str| t.parse::<Table>().map_err(|e| e.to_string());
    let (old, new) = (parse(old)?, parse(new)?);
    let mut out = Vec::new();
    for section in keys(&old, &new) {
        match section.as_str() {
            "lan" => lans(old.get("lan"), new.get("lan"), &mut out),
            _ => walk(&section, old.get(&section), new.get(&section), &mut out),
        }
    }
    Ok(out)
}

/// The union of two tables' keys, sorted.
fn keys(a: &Table, b: &Table) -> BTreeSet<String> {
    a.keys().chain(b.keys()).cloned().collect()
}

/// Compare one key's values; tables are compared key by key, anything else whole.
fn walk(key: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    let empty = Table::new();
    let kind = match (old, new) {
        // A table on one side only (a section added or removed) is walked against an
        // empty one, so its keys are classified one by one.
        (Some(Value::Table(a)), None) => return walk_tables(key, a, &empty, out),
        (None, Some(Value::Table(b))) => return walk_tables(key, &empty, b, out),
        (Some(Value::Table(a)), Some(Value::Table(b))) => return walk_tables(key, a, b, out),
        (Some(a), Some(b)) if a == b => return,
        (None, None) => return,
        (Some(_), Some(_)) => ChangeKind::Changed,
        (None, Some(_)) => ChangeKind::Added,
        (Some(_), None) => ChangeKind::Removed,
    };
    out.push(Change {
        key: key.to_string(),
        kind,
        apply: classify(key),
    });
}

fn walk_tables(key: &str, a: &Table, b: &Table, out: &mut Vec<Change>) {
    for k in keys(a, b) {
        walk(&format!("{key}.{k}"), a.get(&k), b.get(&k), out);
    }
}

/// `[[lan]]` tables matched by name, so that reordering them changes nothing.
fn lans(old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    let by_name = |v: Option<&Value>| -> Vec<(String, Table)> {
        let Some(Value::Array(a)) = v else {
            return Vec::new();
        };
        a.iter()
            .filter_map(|l| l.as_table())
            .map(|t| {
                let name = t.get("name").and_then(Value::as_str).unwrap_or("?");
                (name.to_string(), t.clone())
            })
            .collect()
    };
    let (old, new) = (by_name(old), by_name(new));
    let find = |list: &[(String, Table)], n: &str| {
        list.iter().find(|(m, _)| m == n).map(|(_, t)| t.clone())
    };
    let mut names: Vec<String> = old.iter().map(|(n, _)| n.clone()).collect();
    names.extend(
        new.iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !old.iter().any(|(m, _)| m == n)),
    );
    for name in names {
        let key = format!("lan.{name}");
        match (find(&old, &name), find(&new, &name)) {
            (Some(a), Some(b)) => {
                for k in keys(&a, &b) {
                    walk(&format!("{key}.{k}"), a.get(&k), b.get(&k), out);
                }
            }
            (a, _) => out.push(Change {
                key,
                kind: if a.is_some() {
                    ChangeKind::Removed
                } else {
                    ChangeKind::Added
                },
                apply: Ok(Apply::Lans),
            }),
        }
    }
}

/// How a changed key is applied, or why it cannot be while the daemon runs.
fn classify(key: &str) -> Result<Apply, String> {
    let parts: Vec<&str> = key.split('.').collect();
    let restart = |what: &str| {
        Err(format!(
            "{what} cannot change while the daemon runs: restart it"
        ))
    };
    match parts.as_slice() {
        ["lan", _, "peers", ..] => Ok(Apply::Peers),
        ["lan", _, "limit", ..] => Ok(Apply::Limits),
        ["lan", _, "service", ..] => Ok(Apply::Services),
        ["lan", _, rest, ..] => restart(&format!("a LAN's {rest}")),
        [
            "telemetry",
            "probes" | "flows" | "link_speed_mbps" | "vm_table_size" | "flow_table_size"
            | "flow_idle_s",
            ..,
        ] => Ok(Apply::Telemetry),
        ["telemetry", rest, ..] => restart(&format!("[telemetry] {rest}")),
        ["alarms", "rules"] => Ok(Apply::AlarmRules),
        ["alarms", rest, ..] => restart(&format!(
            "[alarms] {rest} (where alerts are sent; only the rules file reloads)"
        )),
        ["host", rest, ..] => restart(&format!("[host] {rest}")),
        ["bulletin", ..] => restart("[bulletin]"),
        ["export", ..] => Ok(Apply::Exports),
        [section, ..] => restart(&format!("[{section}]")),
        [] => restart("the file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[host]
name = "h1"
address = "10.0.0.1/24"

[[lan]]
name = "a"
segment = "192.168.1.0/24"
tap = "tap0"
secret_file = "a.key"
peers = ["10.0.0.2:7401"]

[[lan]]
name = "b"
segment = "192.168.2.0/24"
tap = "tap1"
secret_file = "b.key"
"#;

    fn edit(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from}");
        BASE.replacen(from, to, 1)
    }

    #[test]
    fn the_same_file_changes_nothing_and_reordered_lans_neither() {
        assert_eq!(changes(BASE, BASE), Ok(vec![]));
        let (head, lans) = BASE.split_at(BASE.find("[[lan]]").unwrap_or(0));
        let second = lans.rfind("[[lan]]").unwrap_or(0);
        let swapped = format!("{head}{}\n{}", &lans[second..], &lans[..second]);
        assert_eq!(changes(BASE, &swapped), Ok(vec![]));
    }

    #[test]
    fn peers_limits_telemetry_and_rules_are_live() {
        let new = edit(
            "peers = [\"10.0.0.2:7401\"]",
            "peers = [\"10.0.0.3:7401\"]\n[[lan.limit]]\nmac = \"02:00:00:00:00:01\"\nrate_mbps = 10\n\
             [[lan.service]]\nname = \"w\"\naddress = \"10.1.0.9\"\nbackends = [\"10.1.0.2\"]",
        ) + "\n[telemetry]\nflows = false\n[alarms]\nrules = \"r.yml\"\n"
            + "[export.sflow]\ncollectors = [\"127.0.0.1:6343\"]\n";
        let got = changes(BASE, &new).unwrap_or_default();
        let applies: Vec<_> = got
            .iter()
            .map(|c| (c.key.as_str(), c.apply.clone()))
            .collect();
        assert_eq!(
            applies,
            vec![
                ("alarms.rules", Ok(Apply::AlarmRules)),
                ("export.sflow.collectors", Ok(Apply::Exports)),
                ("lan.a.limit", Ok(Apply::Limits)),
                ("lan.a.peers", Ok(Apply::Peers)),
                ("lan.a.service", Ok(Apply::Services)),
                ("telemetry.flows", Ok(Apply::Telemetry)),
            ]
        );
        assert!(got.iter().all(Change::is_live));
        assert_eq!(got[2].kind, ChangeKind::Added);
    }

    #[test]
    fn host_identity_a_lans_own_settings_and_exports_are_refused_with_the_reason() {
        let new = edit("name = \"h1\"", "name = \"h9\"\nport = 7500")
            .replace("tap = \"tap1\"", "tap = \"tap9\"")
            + "\n[libvirt]\nuri = \"test:///default\"\n";
        let got = changes(BASE, &new).unwrap_or_default();
        let keys: Vec<_> = got.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["host.name", "host.port", "lan.b.tap", "libvirt.uri"]
        );
        assert!(got.iter().all(|c| !c.is_live()), "{got:?}");
        let text: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert!(
            text[1].contains("REFUSED") && text[1].contains("[host] port"),
            "{text:?}"
        );
        assert!(text[2].contains("a LAN's tap"), "{text:?}");
    }

    #[test]
    fn a_lan_added_or_removed_is_live_as_one_change() {
        let new = BASE.to_string()
            + "\n[[lan]]\nname = \"c\"\nsegment = \"192.168.3.0/24\"\ntap = \"tap2\"\nsecret_file = \"c.key\"\npeers = [\"10.0.0.3:7401\"]\n";
        let got = changes(BASE, &new).unwrap_or_default();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].key.as_str(), got[0].kind, got[0].apply.clone()),
            ("lan.c", ChangeKind::Added, Ok(Apply::Lans))
        );
        let fewer = &BASE[..BASE.rfind("[[lan]]").unwrap_or(BASE.len())];
        let gone = changes(BASE, fewer).unwrap_or_default();
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (gone[0].key.as_str(), gone[0].kind, gone[0].apply.clone()),
            ("lan.b", ChangeKind::Removed, Ok(Apply::Lans))
        );
    }
}
