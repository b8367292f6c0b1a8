//! `bulletin.toml`: which LANs the bulletin serves, and its lease terms.
//!
//! ```toml
//! lease_ttl_s = 30      # a host silent this long is removed (default 30; 2..=86400)
//! heartbeat_s = 10      # hosts heartbeat this often (default 10; 1..=3600)
//! operator_token_file = "/etc/vmvpn/operator.key"   # reads of every LAN (`bulletin ls`)
//! max_connections = 4096            # in total (1..=1000000)
//! max_connections_per_ip = 256      # from one source address (1..=1000000)
//! max_unauthenticated = 256         # connected, not yet registered or authenticated
//! max_unauthenticated_per_ip = 16   # of those, from one source address
//! max_web_connections_per_ip = 8    # to a `--web` listener, from one address (1..=64)
//! max_buffered_mb = 256             # replies and events waiting to be sent, all together
//!
//! [store]               # the registry in etcd, shared with other bulletins (or --store)
//! url = "etcd://10.0.0.5:2379,10.0.0.6:2379,10.0.0.7:2379"
//! user = "vmvpn"                            # where etcd has authentication on
//! password_file = "/etc/vmvpn/etcd.password"
//! ca_file = "/etc/vmvpn/etcd-ca.pem"        # TLS to the members, checked against this CA
//! cert_file = "/etc/vmvpn/etcd-client.pem"  # where etcd asks clients for a certificate
//! key_file = "/etc/vmvpn/etcd-client.key"
//!
//! [web]                 # the dashboard's login on a non-loopback `--web` listener
//! user = "admin"
//! password_file = "/etc/vmvpn/web.password"
//!
//! [[lan]]
//! name = "lan1"
//! verifier = "…"        # from `vmvpn verifier --secret-file lan1.key`
//! # or: secret_file = "/etc/vmvpn/lan1.key", reduced to the verifier when loaded
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::{ConfigError, clip_lines};
use serde::Deserialize;
use toml::Spanned;

use crate::proof::Verifier;
use crate::store::etcd::{EtcdOptions, EtcdTls};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_ttl")]
    lease_ttl_s: Spanned<u64>,
    #[serde(default = "default_hb")]
    heartbeat_s: Spanned<u64>,
    operator_token_file: Option<Spanned<PathBuf>>,
    operator_verifier: Option<Spanned<String>>,
    #[serde(default = "default_max_conns")]
    max_connections: Spanned<u64>,
    #[serde(default = "default_max_per_ip")]
    max_connections_per_ip: Spanned<u64>,
    #[serde(default = "default_max_unauth")]
    max_unauthenticated: Spanned<u64>,
    #[serde(default = "default_max_unauth_per_ip")]
    max_unauthenticated_per_ip: Spanned<u64>,
    #[serde(default = "default_max_web_per_ip")]
    max_web_connections_per_ip: Spanned<u64>,
    #[serde(default = "default_max_buffered_mb")]
    max_buffered_mb: Spanned<u64>,
    #[serde(default, rename = "lan")]
    lans: Vec<RawLan>,
    web: Option<Spanned<crate::web::auth::WebConfig>>,
    store: Option<Spanned<RawStore>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: String,
    user: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl RawStore {
    /// The options, files read; an error names the key at fault.
    fn load(&self) -> Result<EtcdOptions, (&'static str, String)> {
        let mut o = EtcdOptions::from_url(&self.url).map_err(|m| ("store.url", m))?;
        let read = |key: &'static str, p: &Path| {
            std::fs::read(p).map_err(|e| (key, format!("cannot read {}: {e}", p.display())))
        };
        o.user = match (&self.user, &self.password_file) {
            (None, None) => None,
            (Some(u), Some(p)) => {
                let pw = read("store.password_file", p)?;
                let pw = String::from_utf8(pw).map_err(|_| {
                    (
                        "store.password_file",
                        "the password is not UTF-8".to_string(),
                    )
                })?;
                Some((u.clone(), pw.trim_end_matches(['\n', '\r']).to_string()))
            }
            _ => {
                return Err((
                    "store.user",
                    "give both user and password_file, or neither".into(),
                ));
            }
        };
        o.tls = match (&self.ca_file, &self.cert_file, &self.key_file) {
            (None, None, None) => None,
            (Some(ca), cert, key) => Some(EtcdTls {
                ca_pem: read("store.ca_file", ca)?,
                identity: match (cert, key) {
                    (None, None) => None,
                    (Some(c), Some(k)) => {
                        Some((read("store.cert_file", c)?, read("store.key_file", k)?))
                    }
                    _ => {
                        return Err((
                            "store.cert_file",
                            "give both cert_file and key_file, or neither".into(),
                        ));
                    }
                },
            }),
            (None, _, _) => {
                return Err((
                    "store.ca_file",
                    "a client certificate needs ca_file (TLS to etcd)".into(),
                ));
            }
        };
        Ok(o)
    }
}

/// The documented ranges (README, "Security and limits").
pub const LEASE_TTL_S: std::ops::RangeInclusive<u64> = 2..=86_400;
/// Range of `heartbeat_s`.
pub const HEARTBEAT_S: std::ops::RangeInclusive<u64> = 1..=3_600;
/// Range of the connection limits.
pub const CONNECTIONS: std::ops::RangeInclusive<u64> = 1..=1_000_000;

fn default_max_conns() -> Spanned<u64> {
    Spanned::new(0..0, 4096)
}
fn default_max_per_ip() -> Spanned<u64> {
    Spanned::new(0..0, 256)
}
fn default_max_unauth() -> Spanned<u64> {
    Spanned::new(0..0, 256)
}
fn default_max_unauth_per_ip() -> Spanned<u64> {
    Spanned::new(0..0, 16)
}
fn default_max_web_per_ip() -> Spanned<u64> {
    Spanned::new(0..0, crate::http::MAX_CONNECTIONS_PER_IP as u64)
}
fn default_max_buffered_mb() -> Spanned<u64> {
    Spanned::new(0..0, (crate::server::BUFFERED_BUDGET >> 20) as u64)
}
/// Range of `max_buffered_mb`.
pub const BUFFERED_MB: std::ops::RangeInclusive<u64> = 16..=65_536;
/// Range of `max_web_connections_per_ip`: at most a listener's whole table.
pub const WEB_PER_IP: std::ops::RangeInclusive<u64> = 1..=crate::http::MAX_CONNECTIONS as u64;

/// Connection limits of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections in total.
    pub connections: usize,
    /// Connections from one source IP address.
    pub per_ip: usize,
    /// Connections that have not yet registered or authenticated (beyond: the oldest of
    /// them is closed for a newcomer).
    pub unauthenticated: usize,
    /// Of those, from one source address (beyond: refused).
    pub unauthenticated_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 4096,
            per_ip: 256,
            unauthenticated: 256,
            unauthenticated_per_ip: 16,
        }
    }
}

fn default_ttl() -> Spanned<u64> {
    Spanned::new(0..0, 30)
}
fn default_hb() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLan {
    name: Spanned<String>,
    verifier: Option<Spanned<String>>,
    secret_file: Option<Spanned<PathBuf>>,
}

/// The loaded config.
#[derive(Debug)]
pub struct BulletinConfig {
    /// LAN name → verifier.
    pub lans: HashMap<String, Verifier>,
    /// Lease length.
    pub lease_ttl: Duration,
    /// Heartbeat interval asked of hosts.
    pub heartbeat: Duration,
    /// Verifier of the operator token (reads of every LAN), when configured.
    pub operator: Option<Verifier>,
    /// Connection limits.
    pub limits: Limits,
    /// The dashboard's credentials (`[web]`), asked on non-loopback listeners.
    pub web: Option<crate::web::auth::Credentials>,
    /// Connections to one `--web` listener from one address at once.
    pub web_per_ip: usize,
    /// Bytes waiting to be sent, all connections together (`max_buffered_mb`).
    pub buffered: usize,
    /// The registry in etcd (`[store]`), shared with other bulletins.
    pub store: Option<EtcdOptions>,
}

impl Default for BulletinConfig {
    fn default() -> Self {
        BulletinConfig {
            lans: HashMap::new(),
            lease_ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            operator: None,
            limits: Limits::default(),
            web: None,
            web_per_ip: crate::http::MAX_CONNECTIONS_PER_IP,
            buffered: crate::server::BUFFERED_BUDGET,
            store: None,
        }
    }
}

/// What a reload of the bulletin's config may not change, key by key: everything but its
/// `[[lan]]` tables (compared as TOML, so a key added to the format later is refused too,
/// never ignored). Empty: the reload may go ahead.
pub fn reload_refusals(old: &str, new: &str) -> Result<Vec<String>, String> {
    let parse = |t: &str| t.parse::<toml::Table>().map_err(|e| e.to_string());
    let (old, new) = (parse(old)?, parse(new)?);
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| k.as_str() != "lan" && old.get(*k) != new.get(*k))
        .map(|k| format!("{k}: cannot change while the bulletin runs: restart it"))
        .collect())
}

impl BulletinConfig {
    /// Read and check a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.into(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Parse config text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: clip_lines(&e.to_string(), 160),
        })?;
        let invalid =
            |span: std::ops::Range<usize>, key: String, message: String| ConfigError::Invalid {
                path: path.into(),
                line: text[..span.start.min(text.len())].matches('\n').count() + 1,
                key,
                message,
            };
        let in_range = |v: &Spanned<u64>, key: &str, r: std::ops::RangeInclusive<u64>| {
            if r.contains(v.get_ref()) {
                Ok(*v.get_ref())
            } else {
                Err(invalid(
                    v.span(),
                    key.into(),
                    format!(
                        "{} is out of range: expected {} to {}",
                        v.get_ref(),
                        r.start(),
                        r.end()
                    ),
                ))
            }
        };
        let ttl = in_range(&raw.lease_ttl_s, "lease_ttl_s", LEASE_TTL_S)?;
        let hb = in_range(&raw.heartbeat_s, "heartbeat_s", HEARTBEAT_S)?;
        let limits = Limits {
            connections: in_range(&raw.max_connections, "max_connections", CONNECTIONS)? as usize,
            per_ip: in_range(
                &raw.max_connections_per_ip,
                "max_connections_per_ip",
                CONNECTIONS,
            )? as usize,
            unauthenticated: in_range(&raw.max_unauthenticated, "max_unauthenticated", CONNECTIONS)?
                as usize,
            unauthenticated_per_ip: in_range(
                &raw.max_unauthenticated_per_ip,
                "max_unauthenticated_per_ip",
                CONNECTIONS,
            )? as usize,
        };
        let operator = match (&raw.operator_verifier, &raw.operator_token_file) {
            (None, None) => None,
            (Some(v), None) => Some(
                Verifier::from_base64(v.get_ref())
                    .map_err(|m| invalid(v.span(), "operator_verifier".into(), m))?,
            ),
            (None, Some(f)) => Some(Verifier::from_secret(
                &crate::proof::read_secret_file(f.get_ref())
                    .map_err(|m| invalid(f.span(), "operator_token_file".into(), m))?,
            )),
            (Some(v), Some(_)) => {
                return Err(invalid(
                    v.span(),
                    "operator_verifier".into(),
                    "give one of `operator_verifier` and `operator_token_file`, not both".into(),
                ));
            }
        };
        let web = match &raw.web {
            Some(w) => Some(
                crate::web::auth::Credentials::load(w.get_ref())
                    .map_err(|m| invalid(w.span(), "web.password_file".into(), m))?,
            ),
            None => None,
        };
        if ttl < 2 * hb {
            return Err(invalid(
                raw.lease_ttl_s.span(),
                "lease_ttl_s".into(),
                format!(
                    "{ttl} s must be at least twice heartbeat_s ({hb} s), so one lost heartbeat does not drop a host"
                ),
            ));
        }
        let mut lans = HashMap::new();
        for (i, l) in raw.lans.iter().enumerate() {
            let name = l.name.get_ref().clone();
            let verifier = match (&l.verifier, &l.secret_file) {
                (Some(v), None) => Verifier::from_base64(v.get_ref())
                    .map_err(|m| invalid(v.span(), format!("lan[{i}].verifier"), m))?,
                (None, Some(f)) => Verifier::from_secret(
                    &crate::proof::read_secret_file(f.get_ref())
                        .map_err(|m| invalid(f.span(), format!("lan[{i}].secret_file"), m))?,
                ),
                _ => {
                    return Err(invalid(
                        l.name.span(),
                        format!("lan[{i}]"),
                        "give exactly one of `verifier` (preferred: the bulletin then cannot open frames) or `secret_file`".into(),
                    ));
                }
            };
            if lans.insert(name.clone(), verifier).is_some() {
                return Err(invalid(
                    l.name.span(),
                    format!("lan[{i}].name"),
                    format!("LAN {name:?} is listed twice"),
                ));
            }
        }
        let store = match &raw.store {
            Some(st) => Some(
                st.get_ref()
                    .load()
                    .map_err(|(key, m)| invalid(st.span(), key.into(), m))?,
            ),
            None => None,
        };
        Ok(BulletinConfig {
            lans,
            lease_ttl: Duration::from_secs(ttl),
            heartbeat: Duration::from_secs(hb),
            operator,
            limits,
            web,
            web_per_ip: in_range(
                &raw.max_web_connections_per_ip,
                "max_web_connections_per_ip",
                WEB_PER_IP,
            )? as usize,
            buffered: (in_range(&raw.max_buffered_mb, "max_buffered_mb", BUFFERED_MB)? << 20)
                as usize,
            store,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(t: &str) -> String {
        BulletinConfig::parse(t, Path::new("b.toml"))
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn store_sections_are_checked() {
        let ok = BulletinConfig::parse("[store]\nurl = \"etcd://a:1,b:2\"\n", Path::new("b.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let st = ok.store.unwrap_or_else(|| panic!("no store"));
        assert_eq!(st.endpoints, ["a:1", "b:2"]);
        assert!(st.user.is_none() && st.tls.is_none());
        for (text, key) in [
            ("[store]\nurl = \"a:1\"\n", "store.url"),
            (
                "[store]\nurl = \"etcd://a:1\"\nuser = \"u\"\n",
                "store.user",
            ),
            (
                "[store]\nurl = \"etcd://a:1\"\ncert_file = \"c\"\nkey_file = \"k\"\n",
                "store.ca_file",
            ),
            (
                "[store]\nurl = \"etcd://a:1\"\nca_file = \"/nonexistent/ca.pem\"\n",
                "store.ca_file",
            ),
            (
                "[store]\nurl = \"etcd://a:1\"\nuser = \"u\"\npassword_file = \"/nonexistent/pw\"\n",
                "store.password_file",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(key) && e.contains("b.toml:1:"), "{text}: {e}");
        }
        assert!(err("[store]\nurl = \"etcd://a:1\"\nusr = \"u\"\n").contains("usr"));
    }

    #[test]
    fn parses_verifiers_and_terms() {
        let v = Verifier::from_secret(&[1; 32]).to_base64();
        let c = BulletinConfig::parse(
            &format!(
                "lease_ttl_s = 6\nheartbeat_s = 2\n[[lan]]\nname = \"lan1\"\nverifier = \"{v}\"\n"
            ),
            Path::new("b.toml"),
        )
        .expect("ok");
        assert_eq!(c.lease_ttl, Duration::from_secs(6));
        assert_eq!(c.lans["lan1"], Verifier::from_secret(&[1; 32]));
    }

    #[test]
    fn a_reload_may_change_the_lans_and_nothing_else() {
        let base = "lease_ttl_s = 30\n[[lan]]\nname = \"a\"\nverifier = \"x\"\n";
        let more = format!("{base}[[lan]]\nname = \"b\"\nverifier = \"y\"\n");
        assert_eq!(reload_refusals(base, &more), Ok(vec![]));
        assert_eq!(reload_refusals(&more, base), Ok(vec![]));
        let ttl = more.replace("lease_ttl_s = 30", "lease_ttl_s = 60\nheartbeat_s = 5");
        assert_eq!(
            reload_refusals(&more, &ttl),
            Ok(vec![
                "heartbeat_s: cannot change while the bulletin runs: restart it".to_string(),
                "lease_ttl_s: cannot change while the bulletin runs: restart it".to_string(),
            ])
        );
    }

    #[test]
    fn errors_name_the_line_and_key() {
        assert!(err("[[lan]]\nname = \"x\"\n").contains("b.toml:2: `lan[0]`"));
        assert!(
            err("[[lan]]\nname = \"x\"\nverifier = \"nope\"\n")
                .contains("b.toml:3: `lan[0].verifier`")
        );
        assert!(err("lease_ttl_s = 5\n").contains("twice heartbeat_s"));
        assert!(
            err("[[lan]]\nname = \"x\"\nsecret_file = \"/nonexistent/k\"\n")
                .contains("cannot read /nonexistent/k")
        );
        assert!(err("bogus = 1\n").contains("unknown field `bogus`"));
    }

    #[test]
    fn every_number_has_a_range() {
        for (text, key) in [
            (
                "lease_ttl_s = 18446744073709551615\n",
                "b.toml:1: `lease_ttl_s`",
            ),
            ("lease_ttl_s = 0\n", "b.toml:1: `lease_ttl_s`"),
            ("heartbeat_s = 0\n", "b.toml:1: `heartbeat_s`"),
            ("heartbeat_s = 99999\n", "b.toml:1: `heartbeat_s`"),
            ("\nmax_connections = 0\n", "b.toml:2: `max_connections`"),
            (
                "max_connections_per_ip = 9999999\n",
                "b.toml:1: `max_connections_per_ip`",
            ),
            (
                "max_unauthenticated = 0\n",
                "b.toml:1: `max_unauthenticated`",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(key) && e.contains("out of range"), "{e}");
        }
        let c = BulletinConfig::parse("lease_ttl_s = 86400\nheartbeat_s = 3600\n", Path::new("b"))
            .expect("the largest values are accepted");
        assert_eq!(c.lease_ttl, Duration::from_secs(86400));
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn long_lines_are_cut_in_errors() {
        let e = err(&format!("lease_ttl_s = \"{}\"\n", "x".repeat(100_000)));
        assert!(e.len() < 2000, "{} bytes", e.len());
        assert!(e.contains("more characters"), "{e}");
    }

    #[test]
    fn the_operator_credential_is_a_verifier_or_a_token_file() {
        let v = Verifier::from_secret(&[4; 32]);
        let c = BulletinConfig::parse(
            &format!("operator_verifier = \"{}\"\n", v.to_base64()),
            Path::new("b.toml"),
        )
        .expect("ok");
        assert_eq!(c.operator, Some(v));
        assert!(
            BulletinConfig::parse("", Path::new("b"))
                .expect("ok")
                .operator
                .is_none()
        );
        let e = err("operator_token_file = \"/dev/zero\"\n");
        assert!(
            e.contains("b.toml:1: `operator_token_file`") && e.contains("not a regular file"),
            "{e}"
        );
    }
    #[test]
    fn the_dashboard_login_is_checked_when_loaded() {
        let e = err("lease_ttl_s = 30\n\n[web]\npassword_file = \"/nonexistent/pw\"\n");
        assert!(
            e.contains("b.toml:3: `web.password_file`") && e.contains("/nonexistent/pw"),
            "{e}"
        );
        let e = err("[web]\nuser = \"admin\"\npasword_file = \"x\"\n");
        assert!(e.contains("pasword_file"), "a typo is named: {e}");
        assert!(
            BulletinConfig::parse("", Path::new("b"))
                .expect("ok")
                .web
                .is_none()
        );
    }
}
