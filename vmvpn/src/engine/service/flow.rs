//! The flow a frame to a service belongs to: its 5-tuple, hashed alike on every host.

use super::maglev::mix;

/// The parts of an IPv4 frame a flow is known by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flow {
    pub(super) src: [u8; 4],
    pub(super) dst: [u8; 4],
    pub(super) proto: u8,
    pub(super) sport: u16,
    pub(super) dport: u16,
    /// A TCP SYN without ACK: a new connection.
    pub(super) syn: bool,
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
        self.src.iter().for_each(|b| eat(*b));
        self.dst.iter().for_each(|b| eat(*b));
        eat(self.proto);
        self.sport.to_be_bytes().iter().for_each(|b| eat(*b));
        self.dport.to_be_bytes().iter().for_each(|b| eat(*b));
        mix(h)
    }
}

/// The flow of an untagged IPv4 frame (ports 0 for other protocols and fragments).
pub(super) fn flow_of(frame: &[u8]) -> Option<Flow> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let proto = ip[9];
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
    let l4 = &ip[ihl..];
    let (sport, dport, syn) = if (proto == 6 || proto == 17) && !fragment && l4.len() >= 4 {
        let tcp_flags = (proto == 6 && l4.len() >= 14).then(|| l4[13]);
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
            tcp_flags.is_some_and(|f| f & 0x12 == 0x02),
        )
    } else {
        (0, 0, false)
    };
    Some(Flow {
        src: [ip[12], ip[13], ip[14], ip[15]],
        dst: [ip[16], ip[17], ip[18], ip[19]],
        proto,
        sport,
        dport,
        syn,
    })
}
