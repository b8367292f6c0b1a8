//! The bodies of the sealed probe datagrams, as they are inside the AEAD (big-endian):
//!
//! ```text
//! probe        id (4) ‖ send time, ns (8)                                          12 bytes
//! probe reply  id (4) ‖ send time (8) ‖ hold time (8) ‖ received (8) ‖ lost (8)   36 bytes
//! PMTU probe   IP packet size it was padded to (2) ‖ zeros                      ≥ 2 bytes
//! PMTU ack     the size acknowledged (2)                                            2 bytes
//! ```
//!
//! The reply echoes the probe's id and send time and adds what the reflector received
//! from the prober and counts as lost, so the prober learns the loss in its own direction.
//! Parsing checks the length exactly (a PMTU probe: at least), as the sealed kinds are
//! parsed only after they authenticated.

use super::header::{Kind, WireError};

/// Probe body.
pub const PROBE_LEN: usize = 12;
/// Probe reply body.
pub const PROBE_REPLY_LEN: usize = 36;
/// Path MTU ack body (and the smallest path MTU probe body).
pub const PMTU_LEN: usize = 2;

/// A probe: RTT and liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRepr {
    /// Probe id (bit 31 set: an on-demand `vmvpn ping`).
    pub id: u32,
    /// The prober's clock when it left, in ns.
    pub sent_ns: u64,
}

/// The answer to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReplyRepr {
    /// The probe's id.
    pub id: u32,
    /// The probe's send time, echoed.
    pub sent_ns: u64,
    /// How long the reflector held the probe before answering, in ns.
    pub hold_ns: u64,
    /// Datagrams the reflector received from the prober.
    pub received: u64,
    /// Datagrams from the prober the reflector counts as lost.
    pub lost: u64,
}

/// A path MTU probe or its ack: the IP packet size probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtuRepr {
    /// IP packet bytes on the underlay.
    pub size: u16,
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(t)
}

fn exact(kind: Kind, b: &[u8], expected: usize) -> Result<(), WireError> {
    if b.len() == expected {
        Ok(())
    } else {
        Err(WireError::BodyLength {
            kind,
            len: b.len(),
            expected,
        })
    }
}

impl ProbeRepr {
    /// Parse a probe body.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        exact(Kind::Probe, b, PROBE_LEN)?;
        Ok(ProbeRepr {
            id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            sent_ns: be64(b, 4),
        })
    }

    /// The body's bytes.
    pub fn emit(&self) -> [u8; PROBE_LEN] {
        let mut out = [0u8; PROBE_LEN];
        out[..4].copy_from_slice(&self.id.to_be_bytes());
        out[4..].copy_from_slice(&self.sent_ns.to_be_bytes());
        out
    }
}

impl ProbeReplyRepr {
    /// Parse a probe reply body.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        exact(Kind::ProbeReply, b, PROBE_REPLY_LEN)?;
        Ok(ProbeReplyRepr {
            id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            sent_ns: be64(b, 4),
            hold_ns: be64(b, 12),
            received: be64(b, 20),
            lost: be64(b, 28),
        })
    }

    /// The body's bytes.
    pub fn emit(&self) -> [u8; PROBE_REPLY_LEN] {
        let mut out = [0u8; PROBE_REPLY_LEN];
        out[..4].copy_from_slice(&self.id.to_be_bytes());
        out[4..12].copy_from_slice(&self.sent_ns.to_be_bytes());
        out[12..20].copy_from_slice(&self.hold_ns.to_be_bytes());
        out[20..28].copy_from_slice(&self.received.to_be_bytes());
        out[28..36].copy_from_slice(&self.lost.to_be_bytes());
        out
    }
}

impl PmtuRepr {
    /// Parse a path MTU probe body (the size, then padding).
    pub fn parse_probe(b: &[u8]) -> Result<Self, WireError> {
        if b.len() < PMTU_LEN {
            return Err(WireError::BodyLength {
                kind: Kind::PmtuProbe,
                len: b.len(),
                expected: PMTU_LEN,
            });
        }
        Ok(PmtuRepr {
            size: u16::from_be_bytes([b[0], b[1]]),
        })
    }

    /// Parse a path MTU ack body.
    pub fn parse_ack(b: &[u8]) -> Result<Self, WireError> {
        exact(Kind::PmtuAck, b, PMTU_LEN)?;
        Ok(PmtuRepr {
            size: u16::from_be_bytes([b[0], b[1]]),
        })
    }

    /// The first two bytes of either body.
    pub fn emit(&self) -> [u8; PMTU_LEN] {
        self.size.to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bodies_round_trip_and_lengths_are_exact() {
        let p = ProbeRepr {
            id: 0x8000_0001,
            sent_ns: 123_456_789,
        };
        assert_eq!(ProbeRepr::parse(&p.emit()), Ok(p));
        let r = ProbeReplyRepr {
            id: 7,
            sent_ns: 1,
            hold_ns: 2,
            received: 3,
            lost: 4,
        };
        assert_eq!(ProbeReplyRepr::parse(&r.emit()), Ok(r));
        assert!(ProbeRepr::parse(&[0; 11]).is_err());
        assert!(ProbeReplyRepr::parse(&[0; 37]).is_err());
        let m = PmtuRepr { size: 1400 };
        assert_eq!(PmtuRepr::parse_ack(&m.emit()), Ok(m));
        let mut padded = vec![0u8; 1300];
        padded[..2].copy_from_slice(&m.emit());
        assert_eq!(PmtuRepr::parse_probe(&padded), Ok(m));
        assert!(PmtuRepr::parse_ack(&padded).is_err());
        assert!(PmtuRepr::parse_probe(&[5]).is_err());
    }

    proptest! {
        #[test]
        fn parsing_any_body_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ProbeRepr::parse(&b);
            let _ = ProbeReplyRepr::parse(&b);
            let _ = PmtuRepr::parse_probe(&b);
            let _ = PmtuRepr::parse_ack(&b);
        }
    }
}
