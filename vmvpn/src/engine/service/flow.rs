//! The flow a frame to a service belongs to: its 5-tuple, hashed alike on every host.

use super::maglev::mix;

/// The parts of an IPv4 or IPv6 frame a flow is known by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flow {
    /// Addresses: the first 4 bytes for IPv4, all 16 for IPv6 (`alen`).
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) alen: u8,
    pub(super) proto: u8,
    pub(super) sport: u16,
    pub(super) dport: u16,
    /// A TCP SYN without ACK: a new connection.
    pub(super) syn: bool,
    /// A TCP FIN or RST: the connection is ending.
    pub(super) fin: bool,
}

impl Flow {
    /// A fixed hash (the same on every host, so every host picks alike): FNV-1a over the
    /// 5-tuple, then a finalizer to spread FNV's low bits.
    pub(super) fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        let n = usize::from(self.alen);
        self.src[..n].iter().for_each(|b| eat(*b));
        self.dst[..n].iter().for_each(|b| eat(*b));
        eat(self.proto);
        self.sport.to_be_bytes().iter().for_each(|b| eat(*b));
        self.dport.to_be_bytes().iter().for_each(|b| eat(*b));
        mix(h)
    }
}

/// The flow of an untagged IPv4 or IPv6 frame (ports 0 for other protocols, fragments,
/// and IPv6 packets with extension headers before the transport header).
pub(super) fn flow_of(frame: &[u8]) -> Option<Flow> {
    match frame.get(12..14)? {
        [0x08, 0x00] => flow_of_v4(frame),
        [0x86, 0xdd] => flow_of_v6(frame),
        _ => None,
    }
}

fn flow_of_v4(frame: &[u8]) -> Option<Flow> {
    if frame.len() < 34 {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let proto = ip[9];
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
    Some(Flow::new(
        &ip[12..16],
        &ip[16..20],
        proto,
        !fragment,
        &ip[ihl..],
    ))
}

fn flow_of_v6(frame: &[u8]) -> Option<Flow> {
    if frame.len() < 54 {
        return None;
    }
    let ip = &frame[14..];
    if ip[0] >> 4 != 6 {
        return None;
    }
    Some(Flow::new(&ip[8..24], &ip[24..40], ip[6], true, &ip[40..]))
}

impl Flow {
    /// The flow from addresses `src` and `dst` (4 or 16 bytes), protocol `proto` and the
    /// transport header at `l4`: its ports, and whether it is a TCP SYN without ACK, when
    /// it is TCP or UDP and `whole` (not a fragment after the first); zeros otherwise.
    fn new(src: &[u8], dst: &[u8], proto: u8, whole: bool, l4: &[u8]) -> Flow {
        let mut f = Flow {
            src: [0; 16],
            dst: [0; 16],
            alen: src.len() as u8,
            proto,
            sport: 0,
            dport: 0,
            syn: false,
            fin: false,
        };
        f.src[..src.len()].copy_from_slice(src);
        f.dst[..dst.len()].copy_from_slice(dst);
        if (proto == 6 || proto == 17) && whole && l4.len() >= 4 {
            f.sport = u16::from_be_bytes([l4[0], l4[1]]);
            f.dport = u16::from_be_bytes([l4[2], l4[3]]);
            f.syn = proto == 6 && l4.len() >= 14 && l4[13] & 0x12 == 0x02;
            f.fin = proto == 6 && l4.len() >= 14 && l4[13] & 0x05 != 0;
        }
        f
    }
}
