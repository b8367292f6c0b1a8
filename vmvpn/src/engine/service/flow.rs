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
    /// Whether it goes to `ip`.
    pub(super) fn is_to(&self, ip: std::net::IpAddr) -> bool {
        match ip {
            std::net::IpAddr::V4(a) => self.alen == 4 && self.dst[..4] == a.octets(),
            std::net::IpAddr::V6(a) => self.alen == 16 && self.dst == a.octets(),
        }
    }

    /// A fixed hash (the same on every host running this build): the 5-tuple read as
    /// 64-bit words, each mixed in with splitmix64's finalizer (an IPv4 flow is two
    /// words; FNV-1a a byte at a time cost about 10 ns more per frame to a service).
    pub(super) fn hash(&self) -> u64 {
        let n = usize::from(self.alen);
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        let ports =
            u64::from(self.proto) << 32 | u64::from(self.sport) << 16 | u64::from(self.dport);
        let mut h = mix(ports ^ 0x9e37_79b9_7f4a_7c15);
        if n == 4 {
            h = mix(h ^ (word(&self.src[..4]) << 32 | word(&self.dst[..4])));
        } else {
            for c in self.src[..n].chunks(8).chain(self.dst[..n].chunks(8)) {
                h = mix(h ^ word(c));
            }
        }
        h
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
