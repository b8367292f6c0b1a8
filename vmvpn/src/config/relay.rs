//! `[host] relay`: this host relays for hosts that cannot reach each other (both behind
//! NATs that change ports), and `[host] relays`, the relays this host asks.

use std::collections::HashMap;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::proto::relay::RelayKey;

/// The relay's default control port (the data port's neighbour).
pub const DEFAULT_RELAY_PORT: u16 = 7402;

/// `[host] relay_lans`: a LAN this host relays for without being a member, by name and
/// its bulletin verifier (`vmvpn verifier`), which proves membership and opens no frame.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayLan {
    /// The LAN's name, as its hosts spell it.
    pub name: Name,
    /// Its verifier, base64.
    pub verifier: Spanned<String>,
}

pub(super) fn no_limit() -> Spanned<u32> {
    unspanned(0)
}

pub(super) fn default_relay_port() -> Spanned<u16> {
    unspanned(DEFAULT_RELAY_PORT)
}

impl Config {
    /// `[host] relay*` and `relays`: ports in range, verifiers that parse, no LAN twice.
    pub(super) fn check_relay(&self, text: &str) -> Result<(), ConfigError> {
        use super::limits::*;
        for (i, r) in self.host.relays.iter().enumerate() {
            if r.get_ref().port() == 0 {
                return Err(self.invalid(
                    text,
                    r.span(),
                    format!("host.relays[{i}]"),
                    format!(
                        "{} has no port: expected e.g. 203.0.113.7:{DEFAULT_RELAY_PORT}",
                        r.get_ref()
                    ),
                ));
            }
        }
        let h = &self.host;
        if !h.relay {
            return Ok(());
        }
        self.in_range(text, &h.relay_port, "host.relay_port".into(), PORT)?;
        self.in_range(
            text,
            &h.relay_limit_mbps,
            "host.relay_limit_mbps".into(),
            RELAY_LIMIT_MBPS,
        )?;
        if *h.relay_port.get_ref() == *h.port.get_ref() {
            return Err(self.invalid(
                text,
                h.relay_port.span(),
                "host.relay_port".into(),
                format!("{} is the data port ([host] port): expected another, e.g. {DEFAULT_RELAY_PORT}", h.relay_port.get_ref()),
            ));
        }
        let mut seen: Vec<&str> = self
            .lans
            .iter()
            .map(|l| l.name.get_ref().0.as_str())
            .collect();
        for (i, l) in h.relay_lans.iter().enumerate() {
            if let Err(e) = bulletin::proof::Verifier::from_base64(l.verifier.get_ref()) {
                return Err(self.invalid(
                    text,
                    l.verifier.span(),
                    format!("host.relay_lans[{i}].verifier"),
                    format!("{e}: expected what `vmvpn verifier` prints for the LAN's secret"),
                ));
            }
            if seen.contains(&l.name.0.as_str()) {
                return Err(self.invalid(
                    text,
                    l.verifier.span(),
                    format!("host.relay_lans[{i}].name"),
                    format!(
                        "LAN {:?} is named twice (a [[lan]] of this host is relayed for already)",
                        l.name.0
                    ),
                ));
            }
            seen.push(&l.name.0);
        }
        Ok(())
    }

    /// The relay keys by LAN id: this host's LANs (from their secrets) and `relay_lans`.
    pub fn relay_keys(
        &self,
        secrets: &[crate::proto::crypto::LanSecret],
    ) -> HashMap<u32, RelayKey> {
        let mut keys = HashMap::new();
        for (l, s) in self.lans.iter().zip(secrets) {
            let v = bulletin::proof::Verifier::from_secret(&s.0);
            keys.insert(
                crate::proto::crypto::lan_id(&l.name.get_ref().0),
                RelayKey::from_verifier(&v.0),
            );
        }
        for l in &self.host.relay_lans {
            // Checked with the config.
            if let Ok(v) = bulletin::proof::Verifier::from_base64(l.verifier.get_ref()) {
                keys.insert(
                    crate::proto::crypto::lan_id(&l.name.0),
                    RelayKey::from_verifier(&v.0),
                );
            }
        }
        keys
    }
}
