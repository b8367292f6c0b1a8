//! The relay's three control messages (`PROTOCOL.md`, "Relay"). Where two hosts behind
//! NATs that change ports cannot punch a path, a third host both reach (`[host] relay`)
//! passes their datagrams on, unopened: it holds no key of their LAN, only its relay key,
//! which proves membership and opens nothing.
//!
//! Each is the 20-byte header (type 13, 14 or 15; `LAN id`, `sender id`; `sequence`: the
//! sender's clock in ns, strictly rising per sender, so a replay is refused) followed by
//! `peer host id (u32) ‖ port (u16) ‖ 0 (u16) ‖ HMAC-SHA256(relay key, header ‖ those 8)`:
//!
//! - request (13), host to the relay's port: "a pair socket for me and `peer`" (port 0);
//! - grant (14), relay to host, from the relay's port: "the pair's socket is `port`";
//! - bind (15), host to that pair socket: "I am here" (the relay learns the host's public
//!   mapping towards that socket, which behind a port-changing NAT is its own).
//!
//! The relay key of a LAN is `HMAC-SHA256(verifier, "vmvpn/1 relay key")`: the bulletin's
//! verifier (`vmvpn verifier`) derives it, and it derives no key that opens a frame.

use ring::hmac;

use super::{HEADER_LEN, Header, Kind, Packet, WireError};

/// Body after the header: peer id, port, reserved, MAC.
pub const RELAY_BODY_LEN: usize = 8 + 32;
/// A whole relay control datagram.
pub const RELAY_LEN: usize = HEADER_LEN + RELAY_BODY_LEN;

/// A LAN's relay key.
#[derive(Clone)]
pub struct RelayKey(hmac::Key);

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(..)")
    }
}

impl RelayKey {
    /// From the LAN's bulletin verifier (`bulletin::proof::Verifier`'s bytes).
    pub fn from_verifier(verifier: &[u8; 32]) -> Self {
        let k = hmac::Key::new(hmac::HMAC_SHA256, verifier);
        let tag = hmac::sign(&k, b"vmvpn/1 relay key");
        RelayKey(hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()))
    }

    fn mac(&self, signed: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, signed).as_ref());
        out
    }
}

/// One relay control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayMsg {
    /// Request, grant or bind.
    pub kind: Kind,
    /// The LAN the pair is in.
    pub lan: u32,
    /// Who sends it (for a grant: the host it answers).
    pub sender: u32,
    /// The sender's clock, ns (a grant echoes the request's).
    pub seq: u64,
    /// The other host of the pair.
    pub peer: u32,
    /// The pair socket's port (grant), else 0.
    pub port: u16,
}

impl RelayMsg {
    /// The datagram, MAC'd under `key`.
    pub fn emit(&self, key: &RelayKey) -> [u8; RELAY_LEN] {
        let mut out = [0u8; RELAY_LEN];
        let h = Header {
            kind: self.kind,
            flags: 0,
            lan: self.lan,
            sender: self.sender,
            seq: self.seq,
        };
        out[..HEADER_LEN].copy_from_slice(&h.to_bytes());
        out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&self.peer.to_be_bytes());
        out[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&self.port.to_be_bytes());
        let mac = key.mac(&out[..HEADER_LEN + 8]);
        out[HEADER_LEN + 8..].copy_from_slice(&mac);
        out
    }

    /// Parse a relay control datagram without checking its MAC (the key depends on its
    /// LAN id): `Ok(None)` for any other kind of datagram.
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, [u8; 32])>, WireError> {
        let p = Packet::new_checked(buf)?;
        let h = *p.header();
        if !h.kind.is_relay() {
            return Ok(None);
        }
        let body = p.payload();
        if body.len() != RELAY_BODY_LEN {
            return Err(WireError::BodyLength {
                kind: h.kind,
                len: body.len(),
                expected: RELAY_BODY_LEN,
            });
        }
        // The MAC covers the fields as re-emitted, so bytes it would not see must be 0.
        if h.flags != 0 || buf[3] != 0 || body[6] != 0 || body[7] != 0 {
            return Err(WireError::Reserved);
        }
        let mut mac = [0u8; 32];
        mac.copy_from_slice(&body[8..]);
        Ok(Some((
            RelayMsg {
                kind: h.kind,
                lan: h.lan,
                sender: h.sender,
                seq: h.seq,
                peer: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                port: u16::from_be_bytes([body[4], body[5]]),
            },
            mac,
        )))
    }

    /// Whether `mac` is this message's under `key` (constant time).
    pub fn verify(&self, key: &RelayKey, mac: &[u8; 32]) -> bool {
        let bytes = self.emit(key);
        hmac::verify(&key.0, &bytes[..HEADER_LEN + 8], mac).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> RelayKey {
        RelayKey::from_verifier(&[b; 32])
    }

    #[test]
    fn round_trip_and_the_mac_binds_every_field() {
        let m = RelayMsg {
            kind: Kind::RelayGrant,
            lan: 7,
            sender: 9,
            seq: 1234,
            peer: 11,
            port: 40000,
        };
        let wire = m.emit(&key(1));
        let (back, mac) = RelayMsg::parse(&wire)
            .expect("parses")
            .expect("a relay message");
        assert_eq!(back, m);
        assert!(back.verify(&key(1), &mac));
        assert!(!back.verify(&key(2), &mac), "another LAN's key");
        for i in 0..RELAY_LEN - 32 {
            let mut bad = wire;
            bad[i] ^= 1;
            if let Ok(Some((b, mac))) = RelayMsg::parse(&bad) {
                assert!(!b.verify(&key(1), &mac), "byte {i} changed unnoticed");
            }
        }
    }

    #[test]
    fn other_datagrams_and_bad_lengths() {
        let mut hello = [0u8; super::super::HELLO_LEN];
        hello[0] = 1;
        hello[1] = Kind::Hello as u8;
        assert_eq!(RelayMsg::parse(&hello), Ok(None));
        let m = RelayMsg {
            kind: Kind::RelayBind,
            lan: 1,
            sender: 2,
            seq: 3,
            peer: 4,
            port: 0,
        };
        let wire = m.emit(&key(1));
        assert!(RelayMsg::parse(&wire[..RELAY_LEN - 1]).is_err());
        assert!(RelayMsg::parse(&wire[..10]).is_err());
    }
}
