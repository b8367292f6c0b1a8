//! The frames of a backend's health probe, written to its TAP as if from the service's
//! virtual MAC, and the answers that come back:
//!
//! - ARP for an IPv4 backend's address (sender 0.0.0.0, RFC 5227's probe, so the VM's
//!   neighbour table is not touched); the answer is the VM's ARP reply;
//! - a Neighbor Solicitation for an IPv6 backend's address, unicast to it from the
//!   service's link-local address with its MAC as the source option; the answer is the
//!   VM's Neighbor Advertisement;
//! - with `ports` and `probe_from` set, a TCP SYN from `probe_from` to the service
//!   address's first port at the backend's MAC: the connection a client would open. A
//!   SYN-ACK is the answer (and is reset at once, so the VM keeps no half-open
//!   connection); a reset or silence is a miss.
//!
//! The TCP frames are built with etherparse (checksums included) into the caller's
//! buffer; ARP and the solicitation are a few fixed offsets, written by hand as `nd.rs`
//! writes the advertisement.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Mac;

/// The largest probe frame: a neighbour solicitation with its option (86 bytes; a TCP
/// SYN over IPv6 is 78).
pub const PROBE_LEN: usize = 86;
/// Ethernet's minimum frame (without its checksum): shorter frames are padded.
const MIN_FRAME: usize = 60;

/// One probe frame to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// ARP for this address.
    Arp(Ipv4Addr),
    /// Neighbor Solicitation for this address.
    Nd(Ipv6Addr),
    /// A TCP segment from `from`:`sport` to `to`:`port`: a SYN with sequence `seq`, or
    /// a reset with sequence `seq` (the acknowledgement of the SYN-ACK it ends).
    Tcp {
        /// The service's probe address.
        from: IpAddr,
        /// The service address.
        to: IpAddr,
        /// Our port.
        sport: u16,
        /// The service's first port.
        port: u16,
        /// Sequence number.
        seq: u32,
        /// A reset, not a SYN.
        rst: bool,
    },
}

/// What a frame from a local VM to the service's MAC answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An ARP reply from this MAC.
    Arp(Mac),
    /// A Neighbor Advertisement of this address from this MAC.
    Nd(Mac, Ipv6Addr),
    /// A TCP segment from the service address to `probe_from`: from this MAC, to our
    /// port `sport`, a SYN-ACK (`accepted`) or not, acknowledging `ack`.
    Tcp {
        /// The VM's MAC.
        from: Mac,
        /// Our port it answers.
        sport: u16,
        /// A SYN-ACK: the port is open.
        accepted: bool,
        /// Its acknowledgement number (the sequence of our reset).
        ack: u32,
    },
}

/// Write `probe` from `vmac` to `mac` into `out` (≥ [`PROBE_LEN`]); its length.
pub fn write(out: &mut [u8], vmac: &Mac, mac: &Mac, probe: Probe) -> usize {
    let out = &mut out[..PROBE_LEN];
    out.fill(0);
    match probe {
        Probe::Arp(ip) => {
            out[..6].copy_from_slice(mac);
            out[6..12].copy_from_slice(vmac);
            out[12..14].copy_from_slice(&[0x08, 0x06]);
            out[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            out[22..28].copy_from_slice(vmac);
            // Sender address 0.0.0.0 (bytes 28..32), target MAC zero (32..38).
            out[38..42].copy_from_slice(&ip.octets());
            MIN_FRAME
        }
        Probe::Nd(target) => write_ns(out, vmac, mac, target),
        Probe::Tcp {
            from,
            to,
            sport,
            port,
            seq,
            rst,
        } => {
            let eth = etherparse::PacketBuilder::ethernet2(*vmac, *mac);
            let ip = match (from, to) {
                (IpAddr::V4(f), IpAddr::V4(t)) => eth.ipv4(f.octets(), t.octets(), 64),
                (IpAddr::V6(f), IpAddr::V6(t)) => eth.ipv6(f.octets(), t.octets(), 64),
                // The config refuses a probe address of another family.
                _ => return 0,
            };
            let tcp = ip.tcp(sport, port, seq, if rst { 0 } else { 64240 });
            let mut w = &mut out[..];
            let written = if rst {
                tcp.rst().write(&mut w, &[])
            } else {
                // MSS 1460, as a client's SYN says it.
                match tcp.syn().options_raw(&[2, 4, 0x05, 0xb4]) {
                    Ok(t) => t.write(&mut w, &[]),
                    Err(_) => return 0,
                }
            };
            let left = w.len();
            match written {
                Ok(()) => (PROBE_LEN - left).max(MIN_FRAME),
                Err(_) => 0,
            }
        }
    }
}

/// A unicast Neighbor Solicitation for `target` at `mac`, from the link-local address
/// of `vmac` with `vmac` as the source link-layer option (so the VM answers it
/// directly, RFC 4861 7.2.4).
fn write_ns(out: &mut [u8], vmac: &Mac, mac: &Mac, target: Ipv6Addr) -> usize {
    const ICMP: usize = 14 + 40;
    const LEN: usize = 24 + 8;
    let src = link_local(vmac).octets();
    out[..6].copy_from_slice(mac);
    out[6..12].copy_from_slice(vmac);
    out[12..14].copy_from_slice(&[0x86, 0xdd]);
    let ip = &mut out[14..ICMP];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(LEN as u16).to_be_bytes());
    ip[6] = 58;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&target.octets());
    let icmp = &mut out[ICMP..ICMP + LEN];
    icmp[0] = 135;
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 1; // source link-layer address
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(vmac);
    let sum = checksum(&src, &target.octets(), 58, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ICMP + LEN
}

/// The link-local address of `mac` (modified EUI-64).
fn link_local(mac: &Mac) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 2,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// What `frame` (to the service's MAC, from a local VM) answers, if it answers a probe
/// of a service whose probe address is `probe_from`.
pub fn answer(frame: &[u8], probe_from: Option<IpAddr>) -> Option<Answer> {
    let mut from = [0u8; 6];
    from.copy_from_slice(frame.get(6..12)?);
    match frame.get(12..14)? {
        [0x08, 0x06] => {
            let arp = frame.get(14..14 + 28)?;
            (arp[..6] == [0, 1, 8, 0, 6, 4] && arp[6..8] == [0, 2]).then_some(Answer::Arp(from))
        }
        [0x08, 0x00] => {
            let ip = frame.get(14..)?;
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            if ip.len() < ihl.max(20) || ip[0] >> 4 != 4 || ip[9] != 6 {
                return None;
            }
            let dst = IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).ok()?);
            tcp_answer(from, dst, probe_from?, ip.get(ihl..)?)
        }
        [0x86, 0xdd] => {
            let ip = frame.get(14..54)?;
            let dst = IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
            match ip[6] {
                58 => {
                    let icmp = frame.get(54..54 + 24)?;
                    let target = <[u8; 16]>::try_from(&icmp[8..24]).ok()?;
                    (icmp[0] == 136).then(|| Answer::Nd(from, Ipv6Addr::from(target)))
                }
                6 => tcp_answer(from, dst, probe_from?, frame.get(54..)?),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A TCP segment to `probe_from` (the service's probe address), at `tcp`.
fn tcp_answer(from: Mac, dst: IpAddr, probe_from: IpAddr, tcp: &[u8]) -> Option<Answer> {
    if dst != probe_from || tcp.len() < 20 {
        return None;
    }
    let flags = tcp[13];
    Some(Answer::Tcp {
        from,
        sport: u16::from_be_bytes([tcp[2], tcp[3]]),
        accepted: flags & 0x12 == 0x12 && flags & 0x04 == 0,
        ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
    })
}

/// The checksum of a TCP, UDP or ICMPv6 message `msg` (its own checksum field zero) from
/// `src` to `dst` (both 4 or both 16 bytes): the pseudo-header's sum is the same words
/// for IPv4 and IPv6, in one's complement.
pub(super) fn checksum(src: &[u8], dst: &[u8], proto: u8, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(src);
    add(dst);
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, proto]);
    add(msg);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const VMAC: Mac = [2, 0x5e, 1, 2, 3, 4];
    const VM: Mac = [2, 0, 0, 1, 0, 0];

    #[test]
    fn an_arp_probe_and_its_answer() {
        let mut f = [0u8; PROBE_LEN];
        let n = write(&mut f, &VMAC, &VM, Probe::Arp(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(n, 60);
        assert_eq!(&f[38..42], &[10, 0, 0, 2]);
        assert_eq!(answer(&f[..n], None), None, "a request, not an answer");
        // What Linux sends back: to the asker, op 2, sender the VM.
        let mut r = f;
        r[..6].copy_from_slice(&VMAC);
        r[6..12].copy_from_slice(&VM);
        r[21] = 2;
        r[22..28].copy_from_slice(&VM);
        assert_eq!(answer(&r[..n], None), Some(Answer::Arp(VM)));
        assert_eq!(answer(&r[..30], None), None);
    }

    #[test]
    fn a_solicitation_parses_with_a_valid_checksum() {
        let target: Ipv6Addr = "fd00::2".parse().expect("address");
        let mut f = [0u8; PROBE_LEN];
        let n = write(&mut f, &VMAC, &VM, Probe::Nd(target));
        let p = SlicedPacket::from_ethernet(&f[..n]).expect("parses");
        let Some(NetSlice::Ipv6(ip)) = p.net else {
            panic!("IPv6: {p:?}")
        };
        assert_eq!(ip.header().source_addr(), link_local(&VMAC));
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("ICMPv6")
        };
        assert!(icmp.is_checksum_valid(ip.header().source(), ip.header().destination()));
        assert_eq!(icmp.type_u8(), 135);
        // Linux's advertisement back: type 136, the target.
        let mut r = f;
        r[..6].copy_from_slice(&VMAC);
        r[6..12].copy_from_slice(&VM);
        r[54] = 136;
        assert_eq!(answer(&r[..n], None), Some(Answer::Nd(VM, target)));
    }

    #[test]
    fn a_syn_over_both_families_and_its_answers() {
        for (from, to) in [
            (IpAddr::from([10, 0, 0, 250]), IpAddr::from([10, 0, 0, 200])),
            (
                "fd00::fa".parse().expect("address"),
                "fd00::c8".parse().expect("address"),
            ),
        ] {
            let syn = Probe::Tcp {
                from,
                to,
                sport: 50000,
                port: 80,
                seq: 7,
                rst: false,
            };
            let mut f = [0u8; PROBE_LEN];
            let n = write(&mut f, &VMAC, &VM, syn);
            let p = SlicedPacket::from_ethernet(&f[..n]).expect("parses");
            let Some(TransportSlice::Tcp(t)) = p.transport else {
                panic!("TCP: {p:?}")
            };
            assert!(t.syn() && !t.ack() && !t.rst());
            assert_eq!((t.source_port(), t.destination_port()), (50000, 80));
            let valid = match p.net {
                Some(NetSlice::Ipv4(ip)) => t
                    .calc_checksum_ipv4(ip.header().source(), ip.header().destination())
                    .is_ok_and(|c| c == t.checksum()),
                Some(NetSlice::Ipv6(ip)) => t
                    .calc_checksum_ipv6(ip.header().source(), ip.header().destination())
                    .is_ok_and(|c| c == t.checksum()),
                _ => false,
            };
            assert!(valid, "checksum of {f:?}");
            // The VM's SYN-ACK: from the service address to ours.
            let mut w = [0u8; PROBE_LEN];
            let eth = etherparse::PacketBuilder::ethernet2(VM, VMAC);
            let ip = match (to, from) {
                (IpAddr::V4(a), IpAddr::V4(b)) => eth.ipv4(a.octets(), b.octets(), 64),
                (IpAddr::V6(a), IpAddr::V6(b)) => eth.ipv6(a.octets(), b.octets(), 64),
                _ => unreachable!(),
            };
            let mut out = &mut w[..];
            ip.tcp(80, 50000, 99, 1000)
                .syn()
                .ack(8)
                .write(&mut out, &[])
                .expect("fits");
            let accepted = Answer::Tcp {
                from: VM,
                sport: 50000,
                accepted: true,
                ack: 8,
            };
            assert_eq!(answer(&w, Some(from)), Some(accepted));
            assert_eq!(answer(&w, Some(to)), None, "not to the probe address");
            assert_eq!(answer(&w, None), None, "no probe address");
            // A reset written for it parses as one.
            let rst = Probe::Tcp {
                from,
                to,
                sport: 50000,
                port: 80,
                seq: 8,
                rst: true,
            };
            let mut g = [0u8; PROBE_LEN];
            let n = write(&mut g, &VMAC, &VM, rst);
            let p = SlicedPacket::from_ethernet(&g[..n]).expect("parses");
            let Some(TransportSlice::Tcp(t)) = p.transport else {
                panic!("TCP")
            };
            assert!(t.rst() && !t.syn() && t.sequence_number() == 8);
        }
    }

    #[test]
    fn truncated_frames_answer_nothing() {
        let from = Some(IpAddr::from([10, 0, 0, 250]));
        let mut f = [0u8; PROBE_LEN];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x4f; // IHL 60 bytes: past the frame
        f[23] = 6;
        for n in 0..PROBE_LEN {
            let _ = answer(&f[..n], from);
        }
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[20] = 58;
        for n in 0..PROBE_LEN {
            let _ = answer(&f[..n], from);
        }
    }
}
