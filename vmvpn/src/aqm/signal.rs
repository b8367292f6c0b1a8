//! Which frame carries CoDel's congestion signal, and how: a frame of a bulk flow (an IP
//! packet of at least [`BULK_BYTES`]) is marked CE when its flow is ECN-capable, else it
//! is the one dropped; small frames (pings, keystrokes, ACKs, DNS) are never chosen, so
//! the flows that build the queue are the ones that see it.

/// IP packets from this size up are bulk.
pub const BULK_BYTES: usize = 1000;

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ECN_MASK: u8 = 0b11;
const CE: u8 = 0b11;

/// What a frame can do for the signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Not a bulk IP frame: left alone.
    Spared,
    /// ECN-capable: now carries CE (its IPv4 checksum fixed).
    Marked,
    /// Not ECN-capable: drop it.
    Drop,
}

/// Marks `frame` (an Ethernet frame) CE if it is a bulk, ECN-capable IP packet; says
/// whether it should be dropped instead, or spared.
pub fn congestion_signal(frame: &mut [u8]) -> Signal {
    let Some(mut ethertype) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Signal::Spared;
    };
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q {
        let Some(b) = frame.get(16..18) else {
            return Signal::Spared;
        };
        ethertype = u16::from_be_bytes([b[0], b[1]]);
        l3 += 4;
    }
    if frame.len() < l3 + BULK_BYTES {
        return Signal::Spared;
    }
    let ip = &mut frame[l3..];
    match ethertype {
        ETH_P_IPV4 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let ecn = ip[1] & ECN_MASK;
            match ecn {
                0 => Signal::Drop,
                CE => Signal::Marked,
                _ => {
                    let old = u16::from_be_bytes([ip[0], ip[1]]);
                    ip[1] |= CE;
                    let new = u16::from_be_bytes([ip[0], ip[1]]);
                    // RFC 1624: HC' = ~(~HC + ~m + m').
                    let hc = u16::from_be_bytes([ip[10], ip[11]]);
                    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
                    sum = (sum & 0xffff) + (sum >> 16);
                    sum = (sum & 0xffff) + (sum >> 16);
                    let hc = !(sum as u16);
                    ip[10..12].copy_from_slice(&hc.to_be_bytes());
                    Signal::Marked
                }
            }
        }
        ETH_P_IPV6 if ip.len() >= 40 && ip[0] >> 4 == 6 => {
            // Traffic class straddles bytes 0 and 1; its ECN bits are bits 4-5 of byte 1.
            let ecn = (ip[1] >> 4) & ECN_MASK;
            match ecn {
                0 => Signal::Drop,
                CE => Signal::Marked,
                _ => {
                    ip[1] |= CE << 4;
                    Signal::Marked
                }
            }
        }
        _ => Signal::Spared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn v4(ecn: u8, payload: usize) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000);
        let mut out = Vec::new();
        b.write(&mut out, &vec![7u8; payload]).expect("build");
        out[15] = (out[15] & !ECN_MASK) | ecn;
        // Rebuild the header checksum for the ECN bits set above.
        out[24] = 0;
        out[25] = 0;
        let sum = checksum(&out[14..34]);
        out[24..26].copy_from_slice(&sum.to_be_bytes());
        out
    }

    fn checksum(h: &[u8]) -> u16 {
        let mut s: u32 = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn a_bulk_ect_packet_is_marked_with_a_valid_checksum() {
        for ect in [0b01, 0b10] {
            let mut f = v4(ect, 1400);
            assert_eq!(congestion_signal(&mut f), Signal::Marked);
            assert_eq!(f[15] & ECN_MASK, CE);
            assert_eq!(checksum(&f[14..34]), 0, "header checksum verifies");
            let parsed = etherparse::SlicedPacket::from_ethernet(&f).expect("parses");
            assert!(parsed.net.is_some());
        }
    }

    #[test]
    fn a_bulk_packet_without_ecn_is_dropped_and_small_ones_spared() {
        assert_eq!(congestion_signal(&mut v4(0, 1400)), Signal::Drop);
        assert_eq!(congestion_signal(&mut v4(0b01, 64)), Signal::Spared);
        assert_eq!(congestion_signal(&mut v4(0, 64)), Signal::Spared);
        let mut arp = vec![0u8; 1500];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(congestion_signal(&mut arp), Signal::Spared);
        assert_eq!(congestion_signal(&mut [0u8; 5]), Signal::Spared);
    }

    #[test]
    fn ipv6_is_marked_in_its_traffic_class() {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([1; 16], [2; 16], 64)
            .udp(1000, 2000);
        let mut f = Vec::new();
        b.write(&mut f, &[0u8; 1400]).expect("build");
        assert_eq!(congestion_signal(&mut f.clone()), Signal::Drop);
        f[15] |= 0b01 << 4;
        assert_eq!(congestion_signal(&mut f), Signal::Marked);
        assert_eq!((f[15] >> 4) & ECN_MASK, CE);
    }

    #[test]
    fn any_bytes_never_panic() {
        let mut seed = 1u64;
        for len in 0..1600 {
            let mut f: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            if len > 14 {
                f[12] = 0x08;
                f[13] = 0;
                f[14] = 0x45;
            }
            let _ = congestion_signal(&mut f);
        }
    }
}
