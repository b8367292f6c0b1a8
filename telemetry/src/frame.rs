//! What an Ethernet frame says about the VMs behind it: MACs, IP addresses, the transport
//! 5-tuple and TCP flags. A zero-copy look with etherparse's slices (VLAN tags included);
//! nothing is allocated, and a frame it cannot parse still yields its MACs.

use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// A MAC address.
pub type Mac = [u8; 6];

/// IP protocol numbers used here.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// A transport flow as seen in one frame (source first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...).
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 without ports).
    pub sport: u16,
    /// Destination port (0 without ports).
    pub dport: u16,
}

impl FlowKey {
    /// The same flow seen from the other end.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// One orientation for both directions (the lower end first), so a table keyed by
    /// it finds a flow in one lookup whichever way the frame goes.
    pub fn canonical(&self) -> FlowKey {
        if (self.src, self.sport) <= (self.dst, self.dport) {
            *self
        } else {
            self.reversed()
        }
    }
}

/// TCP flags of interest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

/// The parts of a frame that telemetry uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// The sender's IP address, when the frame is IP or ARP and the address is usable
    /// (not unspecified; IPv6 link-local addresses are left out).
    pub src_ip: Option<IpAddr>,
    /// The transport flow, for IPv4/IPv6 frames that are not later fragments (a first
    /// fragment counts, with its ports).
    pub flow: Option<FlowKey>,
    /// TCP flags (all false unless TCP).
    pub tcp: TcpFlags,
}

/// Whether a MAC is a group (broadcast or multicast) address.
#[inline]
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

/// Look into a frame. Frames shorter than an Ethernet header give `None`.
pub fn inspect(frame: &[u8]) -> Option<FrameInfo> {
    let dst: Mac = frame.get(0..6)?.try_into().ok()?;
    let src: Mac = frame.get(6..12)?.try_into().ok()?;
    frame.get(12..14)?;
    let mut info = FrameInfo {
        dst,
        src,
        src_ip: None,
        flow: None,
        tcp: TcpFlags::default(),
    };
    // A malformed or truncated inner packet is still a frame between two MACs.
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return Some(info);
    };
    // The first fragment of a fragmented datagram carries the ports; etherparse does not
    // parse it as transport, so read them here. Later fragments stay out of flows.
    let (ip_src, ip_dst, proto, first_fragment) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let pl = v4.payload();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload_ip_number().0,
                (pl.fragmented && h.fragments_offset().value() == 0).then_some(pl.payload),
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let pl = v6.payload();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                pl.ip_number.0,
                None,
            )
        }
        Some(NetSlice::Arp(arp)) => {
            if let Ok(b) = <[u8; 4]>::try_from(arp.sender_protocol_addr()) {
                info.src_ip = usable(IpAddr::from(b));
            }
            return Some(info);
        }
        None => return Some(info),
    };
    info.src_ip = usable(ip_src);
    let (sport, dport) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            info.tcp = TcpFlags {
                syn: t.syn(),
                ack: t.ack(),
                fin: t.fin(),
                rst: t.rst(),
            };
            (t.source_port(), t.destination_port())
        }
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        // ICMP and others: one flow per address pair and protocol.
        Some(_) => (0, 0),
        None if matches!(proto, PROTO_TCP | PROTO_UDP) => match first_fragment {
            Some(b) if b.len() >= 4 => {
                if proto == PROTO_TCP && b.len() >= 14 {
                    let fl = b[13];
                    info.tcp = TcpFlags {
                        syn: fl & 0x02 != 0,
                        ack: fl & 0x10 != 0,
                        fin: fl & 0x01 != 0,
                        rst: fl & 0x04 != 0,
                    };
                }
                (
                    u16::from_be_bytes([b[0], b[1]]),
                    u16::from_be_bytes([b[2], b[3]]),
                )
            }
            // Later fragments carry no transport header: leave them out of flows.
            _ => return Some(info),
        },
        None => (0, 0),
    };
    info.flow = Some(FlowKey {
        proto,
        src: ip_src,
        dst: ip_dst,
        sport,
        dport,
    });
    Some(info)
}

fn usable(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() => None,
        IpAddr::V6(v6) if v6.is_unspecified() || v6.segments()[0] & 0xffc0 == 0xfe80 => None,
        ip => Some(ip),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    pub(crate) const A: Mac = [2, 0, 0, 0, 0, 0xa];
    pub(crate) const B: Mac = [2, 0, 0, 0, 0, 0xb];

    /// An Ethernet + IPv4 + TCP frame from A to B.
    pub(crate) fn tcp(
        src: [u8; 4],
        dst: [u8; 4],
        ports: (u16, u16),
        flags: &str,
        payload: usize,
    ) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(A, B)
            .ipv4(src, dst, 64)
            .tcp(ports.0, ports.1, 1, 65535);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('A') {
            b = b.ack(1);
        }
        if flags.contains('F') {
            b = b.fin();
        }
        if flags.contains('R') {
            b = b.rst();
        }
        let body = vec![0u8; payload];
        let mut out = Vec::with_capacity(b.size(payload));
        b.write(&mut out, &body).expect("build");
        out
    }

    #[test]
    fn tcp_frame_gives_five_tuple_and_flags() {
        let f = tcp([10, 0, 0, 1], [10, 0, 0, 2], (40000, 5201), "SA", 10);
        let i = inspect(&f).expect("frame");
        assert_eq!((i.src, i.dst), (A, B));
        assert_eq!(i.src_ip, Some(IpAddr::from([10, 0, 0, 1])));
        let k = i.flow.expect("flow");
        assert_eq!((k.proto, k.sport, k.dport), (PROTO_TCP, 40000, 5201));
        assert_eq!(k.dst, IpAddr::from([10, 0, 0, 2]));
        assert!(i.tcp.syn && i.tcp.ack && !i.tcp.fin && !i.tcp.rst);
        assert_eq!(k.reversed().reversed(), k);
    }

    #[test]
    fn udp_icmp_ipv6_and_vlan() {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .single_vlan(7.try_into().expect("vlan"))
            .ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0; 16],
                64,
            )
            .udp(53, 5353)
            .write(&mut out, b"x")
            .expect("build");
        let i = inspect(&out).expect("frame");
        let k = i.flow.expect("flow");
        assert_eq!((k.proto, k.sport, k.dport), (PROTO_UDP, 53, 5353));
        assert!(matches!(i.src_ip, Some(IpAddr::V6(_))));

        let mut out = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut out, b"ping")
            .expect("build");
        let k = inspect(&out).and_then(|i| i.flow).expect("flow");
        assert_eq!((k.proto, k.sport, k.dport), (1, 0, 0));
    }

    #[test]
    fn a_first_fragment_has_ports_and_later_ones_no_flow() {
        let mut f = tcp([10, 0, 0, 1], [10, 0, 0, 2], (1111, 2222), "S", 40);
        // Set "more fragments" (offset 0): the first fragment of a larger datagram.
        f[14 + 6] = 0x20;
        f[14 + 7] = 0;
        let i = inspect(&f).expect("frame");
        let k = i.flow.expect("first fragment has a flow");
        assert_eq!((k.sport, k.dport), (1111, 2222));
        assert!(i.tcp.syn);
        // A later fragment (offset 185 * 8).
        f[14 + 6] = 0x00;
        f[14 + 7] = 185;
        let i = inspect(&f).expect("frame");
        assert_eq!(
            (i.flow, i.src_ip),
            (None, Some(IpAddr::from([10, 0, 0, 1])))
        );
    }

    #[test]
    fn non_ip_and_short_frames() {
        assert_eq!(inspect(&[0u8; 13]), None);
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&A);
        f.extend_from_slice(&[0x88, 0xb5, 1, 2, 3]);
        let i = inspect(&f).expect("frame");
        assert!(is_group(&i.dst));
        assert_eq!((i.src, i.src_ip, i.flow), (A, None, None));
        // An IPv4 header cut short: MACs only.
        let t = tcp([10, 0, 0, 1], [10, 0, 0, 2], (1, 2), "S", 0);
        let i = inspect(&t[..20]).expect("frame");
        assert_eq!((i.src, i.flow), (A, None));
    }

    proptest::proptest! {
        /// Any bytes at all: no panic, and MACs whenever there is an Ethernet header.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let r = inspect(&bytes);
            proptest::prop_assert_eq!(r.is_some(), bytes.len() >= 14);
        }

        /// Both directions of a flow share one canonical key, and it is one of the two.
        #[test]
        fn both_directions_share_the_canonical_key(
            a in proptest::num::u32::ANY, b in proptest::num::u32::ANY,
            sport in proptest::num::u16::ANY, dport in proptest::num::u16::ANY,
            proto in proptest::num::u8::ANY,
        ) {
            let k = FlowKey {
                proto,
                src: IpAddr::from(a.to_be_bytes()),
                dst: IpAddr::from(b.to_be_bytes()),
                sport,
                dport,
            };
            proptest::prop_assert_eq!(k.canonical(), k.reversed().canonical());
            proptest::prop_assert!(k.canonical() == k || k.canonical() == k.reversed());
        }
    }
}
