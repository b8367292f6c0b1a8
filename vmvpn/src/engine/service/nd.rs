//! IPv6 neighbour discovery for a service address (RFC 4861): a Neighbor Solicitation
//! for it, from a local VM, is turned in place into the Neighbor Advertisement that gives
//! the service's virtual MAC, as ARP is for IPv4. Written by hand: a few fixed offsets
//! and the ICMPv6 checksum, in the frame's own buffer (no crate builds a reply in place).

use std::net::{IpAddr, Ipv6Addr};

use super::Mac;

/// Ethernet + IPv6 header.
const ICMP: usize = 14 + 40;
/// A Neighbor Solicitation/Advertisement body without options.
const BODY: usize = 24;
/// The target link-layer address option.
const TLLA: usize = 8;

/// The target of a Neighbor Solicitation (untagged, no extension headers), if `frame` is
/// one.
pub(super) fn solicited(frame: &[u8]) -> Option<IpAddr> {
    if frame.len() < ICMP + BODY
        || frame[12..14] != [0x86, 0xdd]
        || frame[14] >> 4 != 6
        || frame[14 + 6] != 58
        || frame[14 + 7] != 255
        || frame[ICMP] != 135
        || frame[ICMP + 1] != 0
    {
        return None;
    }
    let t: [u8; 16] = frame[ICMP + 8..ICMP + 24].try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(t)))
}

/// Turn the solicitation in `frame` (checked by [`solicited`]) into the advertisement of
/// its target at `vmac`: to the asker (all nodes for a duplicate-address probe), with the
/// target link-layer option when the frame has room for it (a solicitation with a source
/// option does; a unicast one without may be answered without, RFC 4861 7.2.4). The
/// frame keeps its length; bytes past the IPv6 payload are padding.
pub(super) fn advertise(frame: &mut [u8], vmac: &Mac) {
    let mut asker = [0u8; 6];
    asker.copy_from_slice(&frame[6..12]);
    let mut src = [0u8; 16];
    src.copy_from_slice(&frame[14 + 8..14 + 24]);
    let mut target = [0u8; 16];
    target.copy_from_slice(&frame[ICMP + 8..ICMP + 24]);
    let dad = src == [0; 16];
    let to: [u8; 16] = if dad {
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets()
    } else {
        src
    };
    let with_option = frame.len() >= ICMP + BODY + TLLA;
    let len = BODY + if with_option { TLLA } else { 0 };
    // Ethernet: to the asker (33:33:00:00:00:01 for all nodes), from the service.
    if dad {
        frame[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    } else {
        frame[..6].copy_from_slice(&asker);
    }
    frame[6..12].copy_from_slice(vmac);
    // IPv6 header.
    let ip = &mut frame[14..ICMP];
    ip[..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    ip[6] = 58;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&target);
    ip[24..40].copy_from_slice(&to);
    // ICMPv6 Neighbor Advertisement: solicited unless a DAD probe, override.
    let icmp = &mut frame[ICMP..ICMP + len];
    icmp[0] = 136;
    icmp[1] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&[if dad { 0x20 } else { 0x60 }, 0, 0, 0]);
    icmp[8..24].copy_from_slice(&target);
    if with_option {
        icmp[24] = 2;
        icmp[25] = 1;
        icmp[26..32].copy_from_slice(vmac);
    }
    let sum = super::probe::checksum(&target, &to, 58, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A solicitation for `target` from `src` at `mac`, with a source link-layer option
    /// when `option`.
    fn ns(src: Ipv6Addr, mac: Mac, target: Ipv6Addr, option: bool) -> Vec<u8> {
        let t = target.octets();
        let mut f = vec![0x33, 0x33, 0xff, t[13], t[14], t[15]];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x86, 0xdd]);
        let len: u16 = if option { 32 } else { 24 };
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[58, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&[
            0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
        ]);
        f.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&t);
        if option {
            f.extend_from_slice(&[1, 1]);
            f.extend_from_slice(&mac);
        }
        f
    }

    #[test]
    fn a_solicitation_becomes_the_advertisement_of_the_virtual_mac() {
        let vip: Ipv6Addr = "fd00:100::200".parse().expect("addr");
        let asker: Ipv6Addr = "fd00:100::11".parse().expect("addr");
        let vm = [2, 0, 0, 1, 0, 0];
        let vmac = [2, 0x5e, 1, 2, 3, 4];
        let mut f = ns(asker, vm, vip, true);
        assert_eq!(solicited(&f), Some(IpAddr::V6(vip)));
        advertise(&mut f, &vmac);
        assert_eq!(f.len(), 86);
        assert_eq!(&f[..6], &vm, "to the asker");
        assert_eq!(&f[6..12], &vmac);
        assert_eq!(
            &f[14 + 8..14 + 24],
            &vip.octets(),
            "from the service address"
        );
        assert_eq!(&f[14 + 24..14 + 40], &asker.octets());
        assert_eq!(f[ICMP], 136);
        assert_eq!(f[ICMP + 4], 0x60, "solicited, override");
        assert_eq!(&f[ICMP + 24..ICMP + 26], &[2, 1]);
        assert_eq!(&f[ICMP + 26..ICMP + 32], &vmac);
        // The checksum verifies: the sum over the message with it is zero.
        let (src, dst): ([u8; 16], [u8; 16]) = (vip.octets(), asker.octets());
        assert_eq!(
            super::super::probe::checksum(&src, &dst, 58, &f[ICMP..ICMP + 32]),
            0
        );
        assert_eq!(
            solicited(&f),
            None,
            "an advertisement is not a solicitation"
        );
    }

    #[test]
    fn without_room_for_the_option_and_for_a_duplicate_address_probe() {
        let vip: Ipv6Addr = "fd00:100::200".parse().expect("addr");
        let vmac = [2, 0x5e, 1, 2, 3, 4];
        let mut f = ns(Ipv6Addr::UNSPECIFIED, [2, 0, 0, 1, 0, 0], vip, false);
        advertise(&mut f, &vmac);
        assert_eq!(f.len(), 78);
        assert_eq!(
            &f[..6],
            &[0x33, 0x33, 0, 0, 0, 1],
            "a probe's answer goes to all"
        );
        assert_eq!(f[ICMP + 4], 0x20, "not solicited");
        assert_eq!(&f[14 + 4..14 + 6], &[0, 24]);
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
        assert_eq!(
            super::super::probe::checksum(&vip.octets(), &all, 58, &f[ICMP..ICMP + 24]),
            0
        );
        // Garbage and short frames are not solicitations.
        assert_eq!(solicited(&f[..60]), None);
        assert_eq!(solicited(&[0u8; 100]), None);
    }
}
