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
    pub fingerprint: Fingerprint,
}

impl BulletinSection {
    /// The bulletins to use, in order: `server` or `servers`.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.server.iter().chain(&self.servers).copied().collect()
    }
}

impl super::Config {
    pub(super) fn check_bulletin(&self, text: &str) -> Result<(), super::ConfigError> {
        let Some(b) = &self.bulletin else {
            return Ok(());
        };
        let at = text.find("[bulletin]").unwrap_or(0);
        let message = match (b.server, b.servers.len()) {
            (None, 0) => {
                "name the bulletin: server = \"ADDRESS:PORT\", or servers = [...] for several"
            }
            (Some(_), n) if n > 0 => "give server or servers, not both",
            _ => return Ok(()),
        };
        Err(self.invalid(text, at..at, "bulletin.server".into(), message.into()))
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
