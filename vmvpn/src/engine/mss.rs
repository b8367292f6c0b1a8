//! TCP MSS clamping: a SYN or SYN-ACK that crosses the overlay announces a maximum segment
//! size that fits the path to the peer in one datagram, so TCP never needs overlay
//! fragments and keeps its segmentation offloads (as `iptables TCPMSS --clamp-mss-to-pmtu`
//! and tinc do).
//!
//! Works on Ethernet frames with up to two VLAN tags (802.1Q, 802.1ad), IPv4 (any header
//! length, first fragment only) and IPv6 (TCP as the next header). The checksum is updated
//! incrementally (RFC 1624), so the frame's checksum must be complete, as it is on the
//! overlay (segmentation completes partial checksums before sealing). A SYN without an MSS
//! option is left alone: the default MSS (536 for IPv4, 1220 for IPv6) fits any path we
//! allow.

/// Bytes of one Ethernet frame that fit one datagram to the peer; the MSS then is that
/// minus the Ethernet, IP and TCP headers of the frame itself.
pub fn clamp(frame: &mut [u8], frame_cap: usize) -> bool {
    clamp_with(frame, || frame_cap)
}

/// [`clamp`], with the cap computed only for a SYN that carries an MSS option (the cap of
/// a flooded frame takes a look at every peer; almost no frame needs it).
pub fn clamp_with(frame: &mut [u8], frame_cap: impl FnOnce() -> usize) -> bool {
    let Some((l3, v4)) = l3_start(frame) else {
        return false;
    };
    let Some(l4) = tcp_start(frame, l3, v4) else {
        return false;
    };
    let Some(tcp) = frame.get(l4..l4 + 20) else {
        return false;
    };
    // SYN set, RST clear.
    if tcp[13] & 0x02 == 0 || tcp[13] & 0x04 != 0 {
        return false;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || frame.len() < l4 + doff {
        return false;
    }
    let Some(at) = mss_option(&frame[l4 + 20..l4 + doff]).map(|o| l4 + 20 + o) else {
        return false;
    };
    let limit = frame_cap()
        .saturating_sub(l4 + 20)
        .min(usize::from(u16::MAX)) as u16;
    let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
    if old <= limit {
        return false;
    }
    // The checksum covers the TCP header as 16-bit words from its start: the two bytes
    // may straddle two words when the option sits at an odd offset.
    let rel = at - l4;
    let a = l4 + (rel & !1);
    let end = (at + 2 - l4).div_ceil(2) * 2 + l4;
    let mut before = [0u8; 4];
    before[..end - a].copy_from_slice(&frame[a..end]);
    frame[at..at + 2].copy_from_slice(&limit.to_be_bytes());
    let mut csum = u16::from_be_bytes([frame[l4 + 16], frame[l4 + 17]]);
    for w in 0..(end - a) / 2 {
        let m = u16::from_be_bytes([before[2 * w], before[2 * w + 1]]);
        let m2 = u16::from_be_bytes([frame[a + 2 * w], frame[a + 2 * w + 1]]);
        csum = update(csum, m, m2);
    }
    frame[l4 + 16..l4 + 18].copy_from_slice(&csum.to_be_bytes());
    true
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
fn update(hc: u16, m: u16, m2: u16) -> u16 {
    let s = u32::from(!hc) + u32::from(!m) + u32::from(m2);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Where the IP header starts and whether it is IPv4, through at most two VLAN tags.
fn l3_start(frame: &[u8]) -> Option<(usize, bool)> {
    let mut at = 12;
    for _ in 0..3 {
        let et = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match et {
            0x8100 | 0x88a8 => at += 4,
            0x0800 => return Some((at + 2, true)),
            0x86dd => return Some((at + 2, false)),
            _ => return None,
        }
    }
    None
}

/// Where the TCP header starts, if the IP packet carries TCP (and, for IPv4, is not a
/// later fragment).
fn tcp_start(frame: &[u8], l3: usize, v4: bool) -> Option<usize> {
    if v4 {
        let ip = frame.get(l3..l3 + 20)?;
        if ip[0] >> 4 != 4 || ip[9] != 6 {
            return None;
        }
        let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
        if frag_offset != 0 {
            return None;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        (ihl >= 20).then_some(l3 + ihl)
    } else {
        let ip = frame.get(l3..l3 + 40)?;
        (ip[0] >> 4 == 6 && ip[6] == 6).then_some(l3 + 40)
    }
}

/// Offset of the MSS option's 2-byte value within the options, if present and well formed.
fn mss_option(opts: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if kind == 2 {
                    return (len == 4).then_some(i + 2);
                }
                i += len;
            }
        }
    }
    None
}

/// The frame bytes a datagram carries without fragments, for a path MTU (the IP packet
/// size on the underlay) and the underlay's IP version.
pub fn frame_cap(path_mtu: usize, ipv6_underlay: bool) -> usize {
    let ip_udp = if ipv6_underlay {
        crate::proto::UDP_IPV6_OVERHEAD
    } else {
        crate::proto::UDP_IPV4_OVERHEAD
    };
    path_mtu.saturating_sub(ip_udp + crate::proto::OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A full recomputation of the TCP checksum.
    fn tcp_csum_ok(frame: &[u8]) -> bool {
        let (l3, v4) = l3_start(frame).expect("ip");
        let l4 = tcp_start(frame, l3, v4).expect("tcp");
        let seg = &frame[l4..];
        let pseudo = if v4 {
            crate::offload::csum::pseudo(&frame[l3 + 12..l3 + 20], 6, seg.len() as u32)
        } else {
            crate::offload::csum::pseudo(&frame[l3 + 8..l3 + 40], 6, seg.len() as u32)
        };
        crate::offload::csum::fold(crate::offload::csum::sum(pseudo, seg)) == 0xffff
    }

    /// A SYN with these options, VLAN tags and IP version, checksummed.
    fn syn(v4: bool, vlans: usize, opts: &[u8], flags: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for _ in 0..vlans {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        let mut opts = opts.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let tcp_len = 20 + opts.len() + payload;
        if v4 {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + tcp_len) as u16;
            let mut ip = vec![
                0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            let c = !crate::offload::csum::fold(crate::offload::csum::sum(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        } else {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0x60, 0, 0, 0, 0, 0, 6, 64];
            ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            ip.extend_from_slice(&[0xfd; 16]);
            ip.extend_from_slice(&[0xfe; 16]);
            f.extend_from_slice(&ip);
        }
        let l4 = f.len();
        let doff = ((20 + opts.len()) / 4) as u8;
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0]);
        f.extend_from_slice(&[doff << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(&opts);
        f.extend((0..payload).map(|i| i as u8));
        let (l3, v4b) = l3_start(&f).expect("ip");
        let pseudo = if v4b {
            crate::offload::csum::pseudo(&f[l3 + 12..l3 + 20], 6, (f.len() - l4) as u32)
        } else {
            crate::offload::csum::pseudo(&f[l3 + 8..l3 + 40], 6, (f.len() - l4) as u32)
        };
        let c = !crate::offload::csum::fold(crate::offload::csum::sum(pseudo, &f[l4..]));
        f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        assert!(tcp_csum_ok(&f));
        f
    }

    fn mss_of(frame: &[u8]) -> Option<u16> {
        let (l3, v4) = l3_start(frame)?;
        let l4 = tcp_start(frame, l3, v4)?;
        let doff = usize::from(frame[l4 + 12] >> 4) * 4;
        let at = l4 + 20 + mss_option(&frame[l4 + 20..l4 + doff])?;
        Some(u16::from_be_bytes([frame[at], frame[at + 1]]))
    }

    const MSS1460: [u8; 4] = [2, 4, 0x05, 0xb4];

    #[test]
    fn a_syn_over_ipv4_and_ipv6_is_clamped_to_the_path() {
        // 1500-byte path over IPv4: 1436 frame bytes, minus 14 + 20 + 20 = 1382.
        let cap = frame_cap(1500, false);
        assert_eq!(cap, 1436);
        let mut f = syn(true, 0, &MSS1460, 0x02, 0);
        assert!(clamp(&mut f, cap));
        assert_eq!(mss_of(&f), Some(1382));
        assert!(tcp_csum_ok(&f));
        // IPv6 inside: 40-byte IP header, so 1362. A SYN-ACK too.
        let mut f = syn(false, 0, &MSS1460, 0x12, 0);
        assert!(clamp(&mut f, cap));
        assert_eq!(mss_of(&f), Some(1362));
        assert!(tcp_csum_ok(&f));
        // Through two VLAN tags the frame is 8 bytes longer, so the MSS 8 bytes smaller.
        let mut f = syn(true, 2, &MSS1460, 0x02, 0);
        assert!(clamp(&mut f, cap));
        assert_eq!(mss_of(&f), Some(1374));
        assert!(tcp_csum_ok(&f));
    }

    #[test]
    fn what_fits_or_is_not_a_syn_is_left_alone() {
        let cap = frame_cap(1500, false);
        for (f, why) in [
            (
                syn(true, 0, &[2, 4, 0x04, 0x00], 0x02, 0),
                "MSS 1024 already fits",
            ),
            (syn(true, 0, &[], 0x02, 0), "no MSS option"),
            (syn(true, 0, &[1, 1, 4, 2], 0x02, 0), "SACK only"),
            (syn(true, 0, &MSS1460, 0x10, 0), "a plain ACK"),
            (syn(true, 0, &MSS1460, 0x06, 0), "SYN with RST"),
            (
                syn(true, 0, &[2, 5, 0x05, 0xb4, 0], 0x02, 0),
                "malformed MSS length",
            ),
            (
                syn(true, 0, &[3, 9, 1], 0x02, 0),
                "option running past the header",
            ),
        ] {
            let mut g = f.clone();
            assert!(!clamp(&mut g, cap), "{why}");
            assert_eq!(g, f, "{why}: unchanged");
        }
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!clamp(&mut arp, cap));
        assert!(!clamp(&mut [0u8; 10], cap));
    }

    #[test]
    fn checksum_update_reverts() {
        for hc in [0u16, 1, 0x7fff, 0xfffe, 0x1234] {
            assert_eq!(update(update(hc, 0x05b4, 0x0566), 0x0566, 0x05b4), hc);
        }
        assert_eq!(update(0x1234, 0xabcd, 0xabcd), 0x1234);
    }

    proptest! {
        #[test]
        fn clamping_keeps_the_checksum_right_for_options_in_any_order(
            v4 in any::<bool>(),
            vlans in 0usize..3,
            nops_before in 0usize..5,
            sack in any::<bool>(),
            wscale in any::<bool>(),
            ts_first in any::<bool>(),
            mss in 1u16..=65535,
            path in 1280usize..=9000,
            payload in 0usize..40,
            ack in any::<bool>(),
        ) {
            let mut opts = Vec::new();
            let ts = [8u8, 10, 1, 2, 3, 4, 5, 6, 7, 8];
            if ts_first { opts.extend_from_slice(&ts); }
            opts.extend(std::iter::repeat_n(1u8, nops_before));
            opts.extend_from_slice(&[2, 4]);
            opts.extend_from_slice(&mss.to_be_bytes());
            if sack { opts.extend_from_slice(&[4, 2]); }
            if wscale { opts.extend_from_slice(&[3, 3, 7]); }
            if !ts_first { opts.extend_from_slice(&ts); }
            prop_assume!(opts.len() <= 40);
            let f = syn(v4, vlans, &opts, if ack { 0x12 } else { 0x02 }, payload);
            let cap = frame_cap(path, false);
            let mut g = f.clone();
            let changed = clamp(&mut g, cap);
            let l4 = f.len() - payload - 20 - opts.len().div_ceil(4) * 4;
            let limit = (cap - l4 - 20) as u16;
            prop_assert!(tcp_csum_ok(&g), "checksum wrong after clamping");
            prop_assert_eq!(changed, mss > limit);
            prop_assert_eq!(mss_of(&g), Some(mss.min(limit)));
            // Nothing but the MSS and the checksum changed.
            let diff: Vec<usize> = (0..f.len()).filter(|&i| f[i] != g[i]).collect();
            prop_assert!(diff.len() <= 4, "{:?}", diff);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..200), cap in 0usize..3000) {
            let _ = clamp(&mut b, cap);
        }
    }
}
