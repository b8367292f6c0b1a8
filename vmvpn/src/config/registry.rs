//! `[bulletin]`: the registry this host joins, and the certificate it expects there.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, de};

/// `[bulletin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulletinSection {
    /// The bulletin's QUIC address, `ADDRESS:PORT`.
    pub server: SocketAddr,
    /// Its certificate fingerprint, as `bulletin fingerprint` prints it.
    pub fingerprint: Fingerprint,
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
