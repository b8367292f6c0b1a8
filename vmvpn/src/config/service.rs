//! `[[lan.service]]`: a service address answered by the LAN's backend VMs (see
//! `engine::service`).

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use super::*;
use crate::engine::service::{BackendSpec, Policy, ServiceSpec, virtual_mac};

/// Backends a service may have.
pub const MAX_BACKENDS: usize = 256;
/// Largest weight of a backend.
pub const MAX_WEIGHT: u32 = 100;

/// `[[lan.service]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Its name, unique in the LAN.
    pub name: Spanned<Name>,
    /// The address clients send to (IPv4 inside the LAN's segment, or IPv6).
    pub address: Spanned<IpAddr>,
    /// Backend VMs: addresses (their MACs learned from their traffic), MACs, or libvirt
    /// domain names (resolved by the host whose libvirt runs the domain, learned by the
    /// others from its reports).
    pub backends: Spanned<Vec<BackendAddr>>,
    /// Only these destination ports (TCP and UDP); default: every port.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// How a backend is chosen: "least-load" (default) or "hash" (Maglev consistent
    /// hashing of the flow).
    pub policy: Option<Spanned<String>>,
    /// Each backend's share, in `backends` order (default: 1 each).
    pub weights: Option<Spanned<Vec<u32>>>,
    /// An unused address of the LAN (same family as `address`) that each backend's host
    /// connects from to check the first of `ports` by TCP; without it, backends are
    /// checked by ARP or neighbour discovery only.
    pub probe_from: Option<Spanned<IpAddr>>,
}

/// A backend as the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    /// By address.
    Ip(IpAddr),
    /// By MAC.
    Mac(MacAddr),
    /// By libvirt domain name.
    Vm(String),
}

/// The longest domain name taken (libvirt has no limit; names are shown in tables).
const MAX_VM_NAME: usize = 64;

impl FromStr for BackendAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(BackendAddr::Ip(ip));
        }
        if let Ok(mac) = s.parse::<MacAddr>() {
            return Ok(BackendAddr::Mac(mac));
        }
        // A domain name: what virsh prints, minus what would be mistaken for an address
        // or MAC (':'), whitespace and control characters.
        let name_like = !s.is_empty()
            && s.len() <= MAX_VM_NAME
            && s.chars()
                .all(|c| c.is_alphanumeric() || "-_.+@".contains(c));
        if name_like {
            return Ok(BackendAddr::Vm(s.to_string()));
        }
        Err(format!(
            "{}: a backend is a VM's address (192.168.100.2), MAC (02:00:00:03:00:01) or libvirt domain name (web1: letters, digits, - _ . + @, at most {MAX_VM_NAME})",
            common::config::clip_value(s, 40)
        ))
    }
}

impl<'de> Deserialize<'de> for BackendAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl ServiceConfig {
    /// The service as the engine takes it, on LAN `lan`.
    pub fn spec(&self, lan: &str) -> ServiceSpec {
        let name = &self.name.get_ref().0;
        let weights = self.weights.as_ref().map(|w| w.get_ref().clone());
        ServiceSpec {
            name: name.clone(),
            vip: *self.address.get_ref(),
            vmac: virtual_mac(lan, name),
            backends: self
                .backends
                .get_ref()
                .iter()
                .enumerate()
                .map(|(k, b)| BackendSpec {
                    mac: match b {
                        BackendAddr::Mac(m) => Some(m.0),
                        _ => None,
                    },
                    ip: match b {
                        BackendAddr::Ip(ip) => Some(*ip),
                        _ => None,
                    },
                    vm: match b {
                        BackendAddr::Vm(n) => Some(n.clone()),
                        _ => None,
                    },
                    weight: weights
                        .as_ref()
                        .and_then(|w| w.get(k).copied())
                        .unwrap_or(1),
                })
                .collect(),
            ports: self.ports.clone(),
            probe_from: self.probe_from.as_ref().map(|p| *p.get_ref()),
            policy: match self.policy.as_ref().map(|p| p.get_ref().as_str()) {
                Some("hash") => Policy::Hash,
                // Refused by the check: any other name.
                _ => Policy::LeastLoad,
            },
        }
    }
}

impl LanConfig {
    /// Its services, as the engine takes them.
    pub fn service_specs(&self) -> Vec<ServiceSpec> {
        let lan = &self.name.get_ref().0;
        self.services.iter().map(|s| s.spec(lan)).collect()
    }
}

/// False for an IPv6 address no service may use (multicast, link-local, loopback, ::);
/// true for the rest and for IPv4.
fn unicast_v6(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(a) => {
            !(a.is_multicast()
                || a.is_unspecified()
                || a.is_loopback()
                || a.segments()[0] & 0xffc0 == 0xfe80)
        }
        IpAddr::V4(_) => true,
    }
}

/// Whether `ip` is inside `net`.
fn inside(net: &Cidr, ip: IpAddr) -> bool {
    match (net.addr, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.prefix))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl Config {
    /// `[[lan.service]]` of lan `i`: unique names and addresses inside the segment,
    /// backends of the LAN, weights that match.
    pub(super) fn check_services(
        &self,
        text: &str,
        i: usize,
        lan: &LanConfig,
    ) -> Result<(), ConfigError> {
        for (j, s) in lan.services.iter().enumerate() {
            let key = |k: &str| format!("lan[{i}].service[{j}].{k}");
            let fail = |span, k: &str, why: String| Err(self.invalid(text, span, key(k), why));
            if let Some(k) = lan.services[..j]
                .iter()
                .position(|o| o.name.get_ref() == s.name.get_ref())
            {
                return fail(
                    s.name.span(),
                    "name",
                    format!(
                        "service {} is already lan[{i}].service[{k}]",
                        s.name.get_ref()
                    ),
                );
            }
            let vip = *s.address.get_ref();
            if let Some(k) = lan.services[..j]
                .iter()
                .position(|o| *o.address.get_ref() == vip)
            {
                return fail(
                    s.address.span(),
                    "address",
                    format!("{vip} is already the address of lan[{i}].service[{k}]"),
                );
            }
            if !unicast_v6(vip) {
                return fail(
                    s.address.span(),
                    "address",
                    format!(
                        "{vip}: an IPv6 service address is a unicast address of the LAN's \
                         prefix (not multicast, link-local, loopback or ::)"
                    ),
                );
            }
            // The segment is IPv4; an IPv6 address is checked for its kind above.
            if vip.is_ipv4() && !inside(&lan.segment, vip) {
                return fail(
                    s.address.span(),
                    "address",
                    format!(
                        "{vip} is outside the LAN's segment {}: VMs reach a service on their own LAN",
                        lan.segment
                    ),
                );
            }
            if let Some(p) = &s.policy
                && !["hash", "least-load"].contains(&p.get_ref().as_str())
            {
                return fail(
                    p.span(),
                    "policy",
                    format!(
                        "{:?}: expected \"least-load\" (the default: the lesser loaded of two backends) or \"hash\" (Maglev consistent hashing, weights only)",
                        common::config::clip_value(p.get_ref(), 40)
                    ),
                );
            }
            let backends = s.backends.get_ref();
            if let Some(p) = &s.probe_from {
                let from = *p.get_ref();
                let others = lan.services.iter().enumerate().filter(|(k, _)| *k != j);
                let why = if s.ports.is_empty() {
                    Some("the TCP check connects to the first of ports: set ports too (or leave probe_from out: ARP and neighbour checks need no address)".to_string())
                } else if from.is_ipv4() != vip.is_ipv4() {
                    Some(format!("the service address {vip} is of the other family"))
                } else if from.is_ipv4() && !inside(&lan.segment, from) {
                    Some(format!("outside the LAN's segment {}", lan.segment))
                } else if !unicast_v6(from) {
                    Some("not a unicast address of the LAN's prefix".into())
                } else if from == vip {
                    Some("the service's own address: give an address no VM uses".into())
                } else if backends.contains(&BackendAddr::Ip(from)) {
                    Some("a backend's address: give an address no VM uses".into())
                } else if let Some((k, _)) =
                    others.clone().find(|(_, o)| *o.address.get_ref() == from)
                {
                    Some(format!("the address of lan[{i}].service[{k}]"))
                } else if let Some((k, _)) = others
                    .clone()
                    .filter(|(k, _)| *k < j)
                    .find(|(_, o)| o.probe_from.as_ref().map(|p| *p.get_ref()) == Some(from))
                {
                    Some(format!(
                        "already probe_from of lan[{i}].service[{k}]: one per service"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    return fail(p.span(), "probe_from", format!("{from}: {why}"));
                }
            }
            if backends.is_empty() || backends.len() > MAX_BACKENDS {
                return fail(
                    s.backends.span(),
                    "backends",
                    format!("{} backends: give 1 to {MAX_BACKENDS}", backends.len()),
                );
            }
            for (k, b) in backends.iter().enumerate() {
                let why = match b {
                    _ if backends[..k].contains(b) => Some("named twice".to_string()),
                    BackendAddr::Ip(ip) if *ip == vip => {
                        Some("the service's own address: give the VM's address".into())
                    }
                    BackendAddr::Ip(ip) if ip.is_ipv4() && !inside(&lan.segment, *ip) => {
                        Some(format!(
                            "outside the LAN's segment {}: a backend is a VM of this LAN",
                            lan.segment
                        ))
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    let shown = match b {
                        BackendAddr::Ip(ip) => ip.to_string(),
                        BackendAddr::Mac(m) => m.to_string(),
                        BackendAddr::Vm(n) => n.clone(),
                    };
                    return fail(s.backends.span(), "backends", format!("{shown}: {why}"));
                }
            }
            if let Some(w) = &s.weights {
                if w.get_ref().len() != backends.len() {
                    return fail(
                        w.span(),
                        "weights",
                        format!(
                            "{} weights for {} backends: one per backend, in the same order",
                            w.get_ref().len(),
                            backends.len()
                        ),
                    );
                }
                if let Some(bad) = w.get_ref().iter().find(|x| !(1..=MAX_WEIGHT).contains(x)) {
                    return fail(
                        w.span(),
                        "weights",
                        format!("{bad} is out of range: expected 1 to {MAX_WEIGHT}"),
                    );
                }
            }
        }
        Ok(())
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
secret_file = "/dev/null"
"#;

    fn parse(service: &str) -> Result<Config, String> {
        let text = format!("{BASE}\n[[lan.service]]\n{service}");
        Config::parse(&text, std::path::Path::new("h.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_service_by_address_and_mac_with_weights() {
        let cfg = parse(
            "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\", \"02:00:00:03:00:01\"]\nweights = [1, 2]\nports = [80]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = &cfg.lans[0].service_specs()[0];
        assert_eq!(s.vip, IpAddr::from([192, 168, 1, 200]));
        assert_eq!(s.backends[0].ip, Some([192, 168, 1, 2].into()));
        assert_eq!(s.backends[1].mac, Some([2, 0, 0, 3, 0, 1]));
        assert_eq!((s.backends[0].weight, s.backends[1].weight), (1, 2));
        assert_eq!(s.ports, vec![80]);
        assert_eq!(s.vmac, virtual_mac("a", "web"));
    }

    #[test]
    fn a_backend_named_by_its_libvirt_domain() {
        let cfg = parse(
            "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"web1\", \"web-2.lab\"]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = &cfg.lans[0].service_specs()[0];
        assert_eq!(s.backends[0].vm.as_deref(), Some("web1"));
        assert_eq!((s.backends[0].mac, s.backends[0].ip), (None, None));
        assert_eq!(s.backends[1].vm.as_deref(), Some("web-2.lab"));
        let e =
            parse("name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"web1\", \"web1\"]\n")
                .err()
                .unwrap_or_default();
        assert!(e.contains("web1: named twice"), "{e}");
    }

    #[test]
    fn a_tcp_check_from_an_unused_address() {
        let cfg = parse(
            "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\nports = [8080, 80]\nprobe_from = \"192.168.1.250\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = &cfg.lans[0].service_specs()[0];
        assert_eq!(s.probe_from, Some(IpAddr::from([192, 168, 1, 250])));
        assert_eq!(
            s.tcp_check(),
            Some((IpAddr::from([192, 168, 1, 250]), 8080))
        );
    }

    #[test]
    fn an_ipv6_service_address() {
        let cfg = parse(
            "name = \"web\"\naddress = \"fd00:100::200\"\nbackends = [\"fd00:100::2\", \"02:00:00:03:00:01\"]\n",
        )
        .expect("valid");
        let s = &cfg.lans[0].service_specs()[0];
        assert_eq!(s.vip, "fd00:100::200".parse::<IpAddr>().expect("addr"));
        assert_eq!(s.backends[0].ip, "fd00:100::2".parse().ok());
    }

    #[test]
    fn bad_services_are_refused_with_line_and_key() {
        for (service, key, says) in [
            (
                "name = \"web\"\naddress = \"10.9.9.9\"\nbackends = [\"192.168.1.2\"]\n",
                "service[0].address",
                "outside the LAN's segment",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"10.9.9.9\"]\n",
                "service[0].backends",
                "outside",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.200\"]\n",
                "service[0].backends",
                "own address",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\", \"192.168.1.2\"]\n",
                "service[0].backends",
                "twice",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = []\n",
                "service[0].backends",
                "1 to 256",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\nweights = [1, 2]\n",
                "service[0].weights",
                "one per backend",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\nweights = [0]\n",
                "service[0].weights",
                "out of range",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\npolicy = \"fastest\"\n",
                "service[0].policy",
                "expected \"least-load\"",
            ),
            (
                "name = \"web\"\naddress = \"fe80::200\"\nbackends = [\"192.168.1.2\"]\n",
                "service[0].address",
                "link-local",
            ),
            (
                "name = \"web\"\naddress = \"ff02::1\"\nbackends = [\"192.168.1.2\"]\n",
                "service[0].address",
                "not multicast",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"no pe\"]\n",
                "",
                "a backend is a VM's address",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\n[[lan.service]]\nname = \"web\"\naddress = \"192.168.1.201\"\nbackends = [\"192.168.1.3\"]\n",
                "service[1].name",
                "already",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\n[[lan.service]]\nname = \"db\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.3\"]\n",
                "service[1].address",
                "already",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\nprobe_from = \"192.168.1.250\"\n",
                "service[0].probe_from",
                "set ports too",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\nports = [80]\nprobe_from = \"fd00::fa\"\n",
                "service[0].probe_from",
                "other family",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\nports = [80]\nprobe_from = \"10.0.0.250\"\n",
                "service[0].probe_from",
                "outside the LAN's segment",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\nports = [80]\nprobe_from = \"192.168.1.2\"\n",
                "service[0].probe_from",
                "a backend's address",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\nports = [80]\nprobe_from = \"192.168.1.200\"\n",
                "service[0].probe_from",
                "own address",
            ),
            (
                "name = \"web\"\naddress = \"192.168.1.200\"\nbackends = [\"192.168.1.2\"]\nports = [80]\nprobe_from = \"192.168.1.250\"\n[[lan.service]]\nname = \"db\"\naddress = \"192.168.1.201\"\nbackends = [\"192.168.1.3\"]\nports = [5432]\nprobe_from = \"192.168.1.250\"\n",
                "service[1].probe_from",
                "one per service",
            ),
        ] {
            let e = parse(service)
                .err()
                .unwrap_or_else(|| panic!("accepted: {service}"));
            assert!(e.contains(key) && e.contains(says), "{service}: {e}");
            assert!(e.contains("h.toml"), "{e}");
        }
    }
}
