//! Wire format v1 of the vmvpn data plane (also described in `PROTOCOL.md`).
//!
//! Every datagram on the data port (UDP, default 7401) starts with a fixed 20-byte
//! header, big-endian:
//!
//! ```text
//!  0       1       2       3       4               8               12                      20
//! +-------+-------+-------+-------+---------------+---------------+-----------------------+
//! |version| type  | flags | rsvd  |    LAN id     |   sender id   |  sequence number (u64) |
//! +-------+-------+-------+-------+---------------+---------------+-----------------------+
//! ```
//!
//! - `version` is 1. A receiver drops any other version (`bad_header`).
//! - `type`: 1 data (unicast frame, pairwise key), 2 flood (broadcast/multicast/unknown
//!   unicast, the sender's group key), 3 hello (handshake, not encrypted, HMAC), 4 keepalive
//!   (sealed, empty), 5 beacon (multicast presence in a physical subnet, HMAC), 6 probe and
//!   7 probe reply (sealed, for RTT); 13-15 the relay's control messages (`relay.rs`,
//!   HMAC under the LAN's relay key). Other values are dropped as `bad_header`.
//! - `flags`: bit 0 (`RELAY`) on a flood sent to the designated forwarder of another
//!   subnet, which passes it on inside its subnet. Covered by the AEAD like the rest of the
//!   header, so a relay copy is sealed on its own, under the next group sequence number.
//!   Bit 1 (`CHECKSUMS`) on a data frame: the sending daemon computed its TCP or UDP
//!   checksum itself (a segment it cut from a TSO or USO frame, or a checksum its kernel
//!   left partial), so the receiver may merge it (GRO) without summing it again: the AEAD
//!   already proves the bytes are the ones summed. Receivers that predate it ignore it.
//!   Bit 2 (`SPREADS`) on a hello: the sender takes data that comes with a flow label from
//!   other source ports of ours, without taking their address for ours. Bits 4-7 on data
//!   and fragments: the flow label (0: none). A sender that spreads a peer's flows over
//!   several source ports (`[host] flow_ports`, so that the underlay's flow queueing and
//!   ECMP tell them apart, as VXLAN's source port does) sends label k from its k-th port,
//!   only to a peer whose hellos carry `SPREADS`; a receiver never takes a labelled
//!   datagram's source address as the peer's new address.
//! - `LAN id`: the first 4 bytes of SHA-256("vmvpn/1 lan id" ‖ LAN name).
//! - `sender id`: the sending host's 32-bit id.
//! - `sequence`: for data and keepalive the per-(sender, receiver) counter, for flood the
//!   sender's group counter, for hello the sender's start time in ns since the Unix epoch.
//!   It is the AEAD nonce (4 zero bytes ‖ sequence), so it never repeats under one key.
//!
//! Sealed types (data, flood, keepalive) carry `ciphertext ‖ 16-byte tag` after the header,
//! with AES-256-GCM and the header as associated data. The plaintext is one Ethernet frame
//! (empty for keepalive). A hello carries `ephemeral X25519 public key (32) ‖ the peer's
//! public key as last seen, or zeros (32) ‖ host name, NUL padded (32) ‖ HMAC-SHA256 (32)`.
//!
//! Overhead per frame over the underlay: IPv4 20 + UDP 8 + header 20 + tag 16 = 64 bytes
//! (84 over IPv6).

use thiserror::Error;

/// Protocol version carried in byte 0.
pub const VERSION: u8 = 1;
/// Fixed header length.
pub const HEADER_LEN: usize = 20;
/// AEAD tag length (AES-256-GCM).
pub const TAG_LEN: usize = 16;
/// Bytes added to each Ethernet frame inside the UDP payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// IPv4 + UDP headers.
pub const UDP_IPV4_OVERHEAD: usize = 28;
/// IPv6 + UDP headers.
pub const UDP_IPV6_OVERHEAD: usize = 48;
/// Ethernet header (no 802.1Q tag): counted in the frame but not in the TAP MTU.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Hello body: ephemeral key, echoed peer key, name, MAC.
pub const HELLO_BODY_LEN: usize = 32 + 32 + NAME_LEN + 32;
/// Host name field in a hello.
pub const NAME_LEN: usize = 32;
/// Full hello datagram.
pub const HELLO_LEN: usize = HEADER_LEN + HELLO_BODY_LEN;
/// Beacon: header and an HMAC-SHA256 over it.
pub const BEACON_LEN: usize = HEADER_LEN + 32;
/// Flag: a flood for the designated forwarder of the receiver's subnet to pass on.
pub const FLAG_RELAY: u8 = 0x01;
/// Flag: a data frame whose TCP/UDP checksum the sending daemon computed itself.
pub const FLAG_CHECKSUMS: u8 = 0x02;
/// Flag on a hello: its sender takes labelled data from other source ports (see above).
pub const FLAG_SPREADS: u8 = 0x04;
/// Bits of the flags byte that carry a data datagram's flow label.
pub const FLOW_LABEL_SHIFT: u8 = 4;
/// The largest flow label, and so the most flow ports a sender can use.
pub const MAX_FLOW_LABEL: u8 = 15;

/// The flow label of a datagram's flags (0: none, sent from the data port itself).
#[inline]
pub fn flow_label(flags: u8) -> u8 {
    flags >> FLOW_LABEL_SHIFT
}

/// Path MTU probes and acks use sequence numbers with this bit set, counted apart from
/// data: a probe too large for the path is lost by design and must not count as loss.
pub const PMTU_SEQ_BIT: u64 = 1 << 63;

/// Datagram types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A unicast Ethernet frame under the pairwise key.
    Data = 1,
    /// A flooded frame under the sender's group key.
    Flood = 2,
    /// Handshake message.
    Hello = 3,
    /// Sealed empty message that keeps the tunnel and "last heard" fresh.
    Keepalive = 4,
    /// Multicast presence beacon: shows that multicast works in a physical subnet.
    Beacon = 5,
    /// RTT probe, sealed: probe id (u32) ‖ sender's send time in ns (u64).
    Probe = 6,
    /// Probe reply, sealed: probe id ‖ the probe's send time ‖ the reflector's hold time in ns.
    ProbeReply = 7,
    /// A piece of a unicast frame too large for one datagram, pairwise key and sequence;
    /// plaintext: fragment header (`frag.rs`) ‖ piece.
    Fragment = 8,
    /// A piece of a flooded frame, the sender's group key and sequence.
    FloodFragment = 9,
    /// Path MTU probe, sealed on the pairwise key with a sequence of its own (top bit
    /// set): size (u16) ‖ zero padding up to that IP packet size.
    PmtuProbe = 10,
    /// Acknowledges a path MTU probe: size (u16); same sequence space as the probes.
    PmtuAck = 11,
    /// The service backends that run on the sender and their state (`service.rs`),
    /// sealed on the pairwise key, data sequence space. A host that does not know the
    /// type drops it, counted; its peers then choose without its figures.
    ServiceState = 12,
    /// Relay control, not encrypted, HMAC under the LAN's relay key (`relay.rs`): a host
    /// asks a relay for a pair socket for it and a peer.
    RelayRequest = 13,
    /// The relay's answer: the pair socket's port.
    RelayGrant = 14,
    /// A host tells the pair socket where it is (its NAT's mapping towards it).
    RelayBind = 15,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Kind::Data),
            2 => Some(Kind::Flood),
            3 => Some(Kind::Hello),
            4 => Some(Kind::Keepalive),
            5 => Some(Kind::Beacon),
            6 => Some(Kind::Probe),
            7 => Some(Kind::ProbeReply),
            8 => Some(Kind::Fragment),
            9 => Some(Kind::FloodFragment),
            10 => Some(Kind::PmtuProbe),
            11 => Some(Kind::PmtuAck),
            12 => Some(Kind::ServiceState),
            13 => Some(Kind::RelayRequest),
            14 => Some(Kind::RelayGrant),
            15 => Some(Kind::RelayBind),
            _ => None,
        }
    }

    /// Whether the payload is AEAD-sealed.
    pub fn is_sealed(self) -> bool {
        !matches!(self, Kind::Hello | Kind::Beacon) && !self.is_relay()
    }

    /// One of the relay's control messages.
    pub fn is_relay(self) -> bool {
        matches!(
            self,
            Kind::RelayRequest | Kind::RelayGrant | Kind::RelayBind
        )
    }
}

/// Why a datagram is not a valid v1 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// Fewer bytes than the header, or than the type's minimum.
    #[error("datagram truncated: {len} bytes, at least {min} needed")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes required.
        min: usize,
    },
    /// Byte 0 is not a version this build speaks.
    #[error("unsupported protocol version {0} (this build speaks version 1)")]
    Version(u8),
    /// Byte 1 names no known type.
    #[error("unknown datagram type {0}")]
    Kind(u8),
    /// A field that must be zero is not (a relay message's flags or reserved bytes).
    #[error("a reserved field is not zero")]
    Reserved,
    /// A hello whose length is not exactly [`HELLO_LEN`].
    #[error("hello of {0} bytes, expected {HELLO_LEN}")]
    HelloLength(usize),
    /// A sealed body (probe, probe reply, path MTU probe or ack) of the wrong length.
    #[error("{kind:?} body of {len} bytes, expected {expected}")]
    BodyLength {
        /// The datagram's kind.
        kind: Kind,
        /// Bytes present.
        len: usize,
        /// Bytes expected (at least, for a path MTU probe).
        expected: usize,
    },
}

/// The parsed header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Datagram type.
    pub kind: Kind,
    /// Flags byte (0 in v1).
    pub flags: u8,
    /// LAN id.
    pub lan: u32,
    /// Sender host id.
    pub sender: u32,
    /// Sequence number (see module docs for its meaning per type).
    pub seq: u64,
}

impl Header {
    /// Write the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// The caller provides at least `HEADER_LEN` bytes (our own buffers always do).
    pub fn emit(&self, buf: &mut [u8; HEADER_LEN]) {
        buf[0] = VERSION;
        buf[1] = self.kind as u8;
        buf[2] = self.flags;
        buf[3] = 0;
        buf[4..8].copy_from_slice(&self.lan.to_be_bytes());
        buf[8..12].copy_from_slice(&self.sender.to_be_bytes());
        buf[12..20].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// The header as bytes (used as AEAD associated data and for hello MACs).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.emit(&mut b);
        b
    }
}

/// A checked view of a datagram: once [`Packet::new_checked`] succeeds, every accessor
/// is in bounds, so nothing here can panic on untrusted bytes.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
    header: Header,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validate length, version and type.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        let Some(hdr) = b.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated {
                len: b.len(),
                min: HEADER_LEN,
            });
        };
        if hdr[0] != VERSION {
            return Err(WireError::Version(hdr[0]));
        }
        let kind = Kind::from_u8(hdr[1]).ok_or(WireError::Kind(hdr[1]))?;
        let be32 = |i: usize| u32::from_be_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&hdr[12..20]);
        let header = Header {
            kind,
            flags: hdr[2],
            lan: be32(4),
            sender: be32(8),
            seq: u64::from_be_bytes(seq),
        };
        match kind {
            Kind::Hello if b.len() != HELLO_LEN => return Err(WireError::HelloLength(b.len())),
            Kind::Beacon if b.len() != BEACON_LEN => {
                return Err(WireError::Truncated {
                    len: b.len(),
                    min: BEACON_LEN,
                });
            }
            _ if kind.is_sealed() && b.len() < OVERHEAD => {
                return Err(WireError::Truncated {
                    len: b.len(),
                    min: OVERHEAD,
                });
            }
            _ => {}
        }
        Ok(Packet { buf, header })
    }

    /// The header fields.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The raw header bytes.
    pub fn header_bytes(&self) -> &[u8] {
        &self.buf.as_ref()[..HEADER_LEN]
    }

    /// Everything after the header (ciphertext and tag, or the hello body).
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

/// The TAP MTU unless `[[lan]] mtu` says otherwise: what every VM has by default.
pub const DEFAULT_TAP_MTU: usize = 1500;

/// The largest Ethernet frame that fits in one datagram for a given TAP MTU.
pub const fn max_frame_len(tap_mtu: usize) -> usize {
    // +4 so a single 802.1Q tag still fits, as on a Linux bridge port.
    tap_mtu + ETHERNET_HEADER_LEN + 4
}

/// The TAP MTU that makes a full frame fit an underlay of `underlay_mtu` bytes.
pub const fn tap_mtu_for(underlay_mtu: usize, ipv6_underlay: bool) -> usize {
    let ip = if ipv6_underlay {
        UDP_IPV6_OVERHEAD
    } else {
        UDP_IPV4_OVERHEAD
    };
    underlay_mtu.saturating_sub(ip + OVERHEAD + ETHERNET_HEADER_LEN + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            kind: Kind::Data,
            flags: 0,
            lan: 0xdead_beef,
            sender: 7,
            seq: u64::MAX - 1,
        }
    }

    #[test]
    fn header_round_trips() {
        let mut buf = [0u8; HEADER_LEN + TAG_LEN + 60];
        let h = header();
        let mut hb = [0u8; HEADER_LEN];
        h.emit(&mut hb);
        buf[..HEADER_LEN].copy_from_slice(&hb);
        let p = Packet::new_checked(&buf[..]).expect("valid");
        assert_eq!(*p.header(), h);
        assert_eq!(p.payload().len(), TAG_LEN + 60);
        assert_eq!(p.header_bytes(), &hb);
    }

    #[test]
    fn rejects_short_wrong_version_and_unknown_type() {
        assert_eq!(
            Packet::new_checked(&[1u8, 1, 0][..]).err(),
            Some(WireError::Truncated {
                len: 3,
                min: HEADER_LEN
            })
        );
        let mut b = header().to_bytes().to_vec();
        b.extend_from_slice(&[0; TAG_LEN]);
        b[0] = 2;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(WireError::Version(2))
        );
        b[0] = 1;
        b[1] = 16;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::Kind(16)));
        // A sealed type without room for the tag.
        b[1] = Kind::Data as u8;
        b.truncate(HEADER_LEN + 3);
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn mtu_arithmetic_matches_the_documented_overhead() {
        assert_eq!(OVERHEAD + UDP_IPV4_OVERHEAD, 64);
        // 1500 - 64 - 14 (Ethernet) - 4 (room for a VLAN tag) = 1418.
        assert_eq!(tap_mtu_for(1500, false), 1418);
        assert_eq!(max_frame_len(1418) + OVERHEAD + UDP_IPV4_OVERHEAD, 1500);
        assert_eq!(tap_mtu_for(1500, true), 1398);
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                prop_assert!(p.payload().len() + HEADER_LEN == bytes.len());
            }
        }
    }
}
