//! `[[lan]]`: the LANs this host joins, and their secrets.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::engine::limits::{Direction as LimitDirection, LimitSpec};

/// `[[lan]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanConfig {
    /// LAN name; the same on every host of the LAN.
    pub name: Spanned<Name>,
    /// Virtual segment, e.g. `192.168.100.0/24` (informational until the bulletin).
    pub segment: Cidr,
    /// TAP device name, at most 15 bytes.
    pub tap: Spanned<IfName>,
    /// File holding the LAN secret (base64 of 32 bytes, as `vmvpn keygen` prints).
    pub secret_file: Spanned<PathBuf>,
    /// Static peers, `ADDRESS:PORT`.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// TAP MTU; 1500 when absent (576 to 9000).
    pub mtu: Option<Spanned<u16>>,
    /// Linux bridge to attach the TAP to (it must exist).
    pub bridge: Option<IfName>,
    /// Keep the TAP after exit (make it persistent) instead of removing it.
    #[serde(default)]
    pub keep_tap: bool,
    /// How floods travel: "auto" (default), "multicast" or "unicast".
    #[serde(default)]
    pub flood: crate::engine::flood::FloodMode,
    /// MAC database capacity.
    #[serde(default = "default_mac_capacity")]
    pub mac_capacity: Spanned<u64>,
    /// Seconds before an unseen MAC is forgotten.
    #[serde(default = "default_mac_age")]
    pub mac_age_s: Spanned<u64>,
    /// "aes-256-gcm" (default) or "none" (no encryption, no authentication of frames).
    #[serde(default)]
    pub cipher: crate::proto::crypto::Cipher,
    /// Rate limits, `[[lan.limit]]`: of one VM (`mac`), or of all this host's VMs on the
    /// LAN together (no `mac`).
    #[serde(default, rename = "limit")]
    pub limits: Vec<LimitConfig>,
    /// Service addresses, `[[lan.service]]`, answered by backend VMs of the LAN.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
}

/// `[[lan.limit]]`: a token bucket for each direction it covers; frames over it are
/// dropped (policed) and counted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// The VM's MAC; absent: all of this host's VMs on the LAN together.
    pub mac: Option<Spanned<MacAddr>>,
    /// A libvirt domain name instead of `mac` (needs `[libvirt]`): every MAC of that domain
    /// gets this limit, once libvirt names them.
    pub vm: Option<Spanned<String>>,
    /// Megabits per second.
    pub rate_mbps: Spanned<u64>,
    /// KiB a burst may go over the rate (default: 20 ms at the rate, at least 64).
    pub burst_kb: Option<Spanned<u64>>,
    /// "both" (default: each direction its own bucket), "in" (to the VM) or "out" (from it).
    #[serde(default = "both")]
    pub direction: LimitDirection,
    /// Shape what the VM sends instead of dropping it at once: hold up to this many
    /// milliseconds of frames at the rate (a VM's limit only; default 0: police).
    pub shape_ms: Option<Spanned<u32>>,
}

fn both() -> LimitDirection {
    LimitDirection::Both
}

impl LimitConfig {
    /// The limit as the engine takes it.
    pub fn spec(&self) -> LimitSpec {
        let rate_mbps = *self.rate_mbps.get_ref();
        let burst_bytes = match &self.burst_kb {
            Some(kb) => kb.get_ref() * 1024,
            // 20 ms at the rate: room for a TCP window's burst at LAN round trips.
            None => (rate_mbps * 1_000_000 / 8 / 50).max(64 * 1024),
        };
        LimitSpec {
            mac: self.mac.as_ref().map(|m| m.get_ref().0),
            vm: self.vm.as_ref().map(|v| v.get_ref().clone()),
            rate_bps: rate_mbps * 1_000_000,
            burst_bytes,
            direction: self.direction,
            shape_ms: self.shape_ms.as_ref().map_or(0, |s| *s.get_ref()),
        }
    }
}

impl LanConfig {
    /// Its rate limits by MAC (and the LAN's), as the engine takes them; those naming a
    /// VM wait for libvirt (see [`LanConfig::vm_limit_specs`]).
    pub fn limit_specs(&self) -> Vec<LimitSpec> {
        self.limits
            .iter()
            .filter(|l| l.vm.is_none())
            .map(LimitConfig::spec)
            .collect()
    }

    /// Its limits naming a libvirt VM (`vm = "…"`), without a MAC yet: one limit per MAC
    /// of the domain once libvirt names them.
    pub fn vm_limit_specs(&self) -> Vec<LimitSpec> {
        self.limits
            .iter()
            .filter(|l| l.vm.is_some())
            .map(LimitConfig::spec)
            .collect()
    }
}

fn default_mac_capacity() -> Spanned<u64> {
    unspanned(crate::engine::macdb::DEFAULT_CAPACITY as u64)
}
fn default_mac_age() -> Spanned<u64> {
    unspanned(crate::engine::macdb::DEFAULT_MAX_AGE.as_secs())
}

/// Parse a LAN secret file's text.
pub fn parse_secret(text: &str) -> Result<LanSecret, String> {
    bulletin::proof::parse_secret(text).map(LanSecret)
}

/// A fresh secret as base64, for `vmvpn keygen`.
pub fn generate_secret() -> Result<String, ring::error::Unspecified> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(b))
}

impl Config {
    /// `[[lan]]`: at least one, names and TAPs unique, numbers in range.
    pub(super) fn check_lans(&self, text: &str) -> Result<(), ConfigError> {
        use super::limits::*;
        if self.lans.is_empty() {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                line: text.lines().count().max(1),
                key: "lan".into(),
                message: "no [[lan]] section: a host must join at least one LAN".into(),
            });
        }
        for (i, lan) in self.lans.iter().enumerate() {
            for (j, other) in self.lans.iter().enumerate().take(i) {
                if other.name.get_ref() == lan.name.get_ref() {
                    return Err(self.invalid(
                        text,
                        lan.name.span(),
                        format!("lan[{i}].name"),
                        format!(
                            "LAN {} is already defined as lan[{j}]; each LAN appears once",
                            lan.name.get_ref()
                        ),
                    ));
                }
                if other.tap.get_ref() == lan.tap.get_ref() {
                    return Err(self.invalid(
                        text,
                        lan.tap.span(),
                        format!("lan[{i}].tap"),
                        format!(
                            "TAP {} is already used by lan[{j}]; each LAN needs its own TAP",
                            lan.tap.get_ref().0
                        ),
                    ));
                }
            }
            if let Some(mtu) = &lan.mtu {
                self.in_range(text, mtu, format!("lan[{i}].mtu"), TAP_MTU)?;
            }
            self.in_range(
                text,
                &lan.mac_capacity,
                format!("lan[{i}].mac_capacity"),
                MAC_CAPACITY,
            )?;
            self.in_range(
                text,
                &lan.mac_age_s,
                format!("lan[{i}].mac_age_s"),
                MAC_AGE_S,
            )?;
            self.check_limits(text, i, lan)?;
            self.check_services(text, i, lan)?;
        }
        Ok(())
    }
}

impl Config {
    /// `[[lan.limit]]` of lan `i`: numbers in range, one limit per VM and one for the LAN.
    fn check_limits(&self, text: &str, i: usize, lan: &LanConfig) -> Result<(), ConfigError> {
        use super::limits::{BURST_KB, RATE_MBPS, SHAPE_MS, SHAPE_QUEUE_MAX_BYTES};
        for (j, lim) in lan.limits.iter().enumerate() {
            let key = |k: &str| format!("lan[{i}].limit[{j}].{k}");
            if let Some(vm) = &lim.vm {
                let why = if self.libvirt.is_none() {
                    Some("VM names come from libvirt: add [libvirt] uri, or give the VM's mac")
                } else if lim.mac.is_some() {
                    Some("give mac or vm, not both")
                } else if vm.get_ref().trim().is_empty() {
                    Some("an empty name")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(self.invalid(
                        text,
                        vm.span(),
                        key("vm"),
                        format!("{:?}: {why}", common::config::clip_value(vm.get_ref(), 40)),
                    ));
                }
            }
            self.in_range(text, &lim.rate_mbps, key("rate_mbps"), RATE_MBPS)?;
            if let Some(b) = &lim.burst_kb {
                self.in_range(text, b, key("burst_kb"), BURST_KB)?;
            }
            if let Some(sh) = &lim.shape_ms {
                self.in_range(text, sh, key("shape_ms"), SHAPE_MS)?;
                let why = if lim.mac.is_none() {
                    Some("the LAN-wide limit polices; shaping is per VM (give a mac)")
                } else if lim.direction == LimitDirection::In {
                    Some("shaping holds what the VM sends: direction \"out\" or \"both\"")
                } else {
                    None
                };
                if let Some(why) = why
                    && *sh.get_ref() > 0
                {
                    return Err(self.invalid(text, sh.span(), key("shape_ms"), why.into()));
                }
                // The queue is allocated when the LAN is joined: bounded, so an accepted
                // config never fails there.
                let bytes =
                    lim.rate_mbps.get_ref() * 1_000_000 / 8 * u64::from(*sh.get_ref()) / 1000;
                if bytes > SHAPE_QUEUE_MAX_BYTES {
                    return Err(self.invalid(
                        text,
                        sh.span(),
                        key("shape_ms"),
                        format!(
                            "{} ms at {} Mbit/s is a queue of {} MiB; at most {} MiB: lower shape_ms",
                            sh.get_ref(),
                            lim.rate_mbps.get_ref(),
                            bytes >> 20,
                            SHAPE_QUEUE_MAX_BYTES >> 20
                        ),
                    ));
                }
            }
            let mac = lim.mac.as_ref().map(|m| *m.get_ref());
            let vm = lim.vm.as_ref().map(|v| v.get_ref().as_str());
            if let Some(k) = lan.limits[..j].iter().position(|o| {
                o.mac.as_ref().map(|m| *m.get_ref()) == mac
                    && o.vm.as_ref().map(|v| v.get_ref().as_str()) == vm
            }) {
                let span = match (&lim.mac, &lim.vm) {
                    (Some(m), _) => m.span(),
                    (None, Some(v)) => v.span(),
                    (None, None) => lim.rate_mbps.span(),
                };
                let whom = match (mac, vm) {
                    (Some(m), _) => m.to_string(),
                    (None, Some(v)) => format!("VM {v}"),
                    (None, None) => "the whole LAN".to_string(),
                };
                return Err(self.invalid(
                    text,
                    span,
                    key(match (mac, vm) {
                        (Some(_), _) => "mac",
                        (None, Some(_)) => "vm",
                        (None, None) => "rate_mbps",
                    }),
                    format!(
                        "a limit for {whom} is already lan[{i}].limit[{k}]: one limit per VM, and one for the LAN"
                    ),
                ));
            }
        }
        Ok(())
    }
}
