//! `[bulletin]`: the registry this host joins, and the certificate it expects there.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, de};

/// `[bulletin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulletinSection {
    /// The bulletin's QUIC address, `ADDRESS:PORT` (or `servers`).
    pub server: Option<SocketAddr>,
    /// Several bulletins serving one registry (`bulletin serve --store`), in order of
    /// preference: the host uses the first that answers and moves on when it is lost.
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
    /// Its certificate fingerprint, as `bulletin fingerprint` prints it (bulletins that
    /// share one state directory share one certificate, so one fingerprint pins them all).
    pub fingerprint: Option<Fingerprint>,
    /// Or one per server of `servers`, in the same order.
    #[serde(default)]
    pub fingerprints: Vec<Fingerprint>,
    /// Seconds on a less preferred bulletin before the host checks whether the first of
    /// `servers` answers again, and returns to it if it does (0: stay).
    #[serde(default = "default_return_after")]
    pub return_after_s: u64,
}

fn default_return_after() -> u64 {
    30
}

impl BulletinSection {
    /// The bulletins to use, in order, each with the fingerprint that pins it.
    pub fn servers(&self) -> Vec<(SocketAddr, String)> {
        let addrs = self.server.iter().chain(&self.servers);
        match &self.fingerprint {
            Some(fp) => addrs.map(|a| (*a, fp.0.clone())).collect(),
            None => addrs
                .zip(&self.fingerprints)
                .map(|(a, fp)| (*a, fp.0.clone()))
                .collect(),
        }
    }
}

impl super::Config {
    pub(super) fn check_bulletin(&self, text: &str) -> Result<(), super::ConfigError> {
        let Some(b) = &self.bulletin else {
            return Ok(());
        };
        let at = text.find("[bulletin]").unwrap_or(0);
        let n = usize::from(b.server.is_some()) + b.servers.len();
        let message = match (b.server, b.servers.len(), &b.fingerprint, b.fingerprints.len()) {
            (None, 0, _, _) => "name the bulletin: server = \"ADDRESS:PORT\", or servers = [...] for several".to_string(),
            (Some(_), m, _, _) if m > 0 => "give server or servers, not both".to_string(),
            (_, _, None, 0) => "pin the bulletin's certificate: fingerprint = \"sha256:...\" (bulletin fingerprint prints it), or fingerprints = [...], one per server".to_string(),
            (_, _, Some(_), f) if f > 0 => "give fingerprint or fingerprints, not both".to_string(),
            (_, _, None, f) if f != n => format!("fingerprints has {f} entries for {n} servers: give one per server, in the same order"),
            _ if b.return_after_s > 86_400 => "return_after_s is out of range: expected 0 to 86400".to_string(),
            _ => return Ok(()),
        };
        Err(self.invalid(text, at..at, "bulletin".into(), message))
    }
}

/// A `sha256:…` certificate fingerprint, checked while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(pub String);

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        bulletin::tls::parse_fingerprint(&s).map_err(de::Error::custom)?;
        Ok(Fingerprint(s))
    }
}
