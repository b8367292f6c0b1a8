//! Coalescing is checked as the exact inverse of segmentation: whatever goes in, splitting
//! what comes out gives back the same frames in the same order.

use super::*;
use crate::offload::gso::split;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// The segments a TSO send of `len` bytes at `mss` becomes (PSH on the last), from port
/// `port`, starting at `seq` (and IPv4 id `seq / mss`), as `gso::split` makes them.
fn segments(v6: bool, port: u16, seq: u32, len: usize, mss: u16) -> Vec<Vec<u8>> {
    send(false, v6, port, seq, len, mss)
}

/// The datagrams a UDP GSO send of `len` bytes at `size` becomes (IPv4 ids from `id`).
fn datagrams(v6: bool, port: u16, id: u16, len: usize, size: u16) -> Vec<Vec<u8>> {
    send(true, v6, port, u32::from(id) * u32::from(size), len, size)
}

fn send(udp: bool, v6: bool, port: u16, seq: u32, len: usize, mss: u16) -> Vec<Vec<u8>> {
    let b = PacketBuilder::ethernet2(A, B);
    let b = if v6 {
        b.ipv6([0xfd; 16], [0xfe; 16], 64)
    } else {
        b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
    };
    let payload: Vec<u8> = (0..len)
        .map(|i| (i * 7 + usize::from(port)) as u8)
        .collect();
    let mut f = Vec::new();
    if udp {
        b.udp(port, 5201).write(&mut f, &payload).expect("build");
    } else {
        b.tcp(port, 5201, seq, 512)
            .ack(7)
            .psh()
            .write(&mut f, &payload)
            .expect("build");
    }
    if !v6 {
        // The id runs on from send to send, as a TCP socket's does.
        f[18..20].copy_from_slice(&((seq / u32::from(mss)) as u16).to_be_bytes());
    }
    let l4 = if v6 { 54 } else { 34 };
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: match (udp, v6) {
            (true, _) => GSO_UDP_L4,
            (false, true) => GSO_TCPV6,
            (false, false) => GSO_TCPV4,
        },
        hdr_len: (l4 + if udp { 8 } else { 20 }) as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: if udp { 6 } else { 16 },
    };
    let mut out = vec![0u8; 65_600];
    let mut segs = Vec::new();
    split(&h, &mut f, &mut out, 0, |b, n| segs.push(b[..n].to_vec())).expect("split");
    segs
}

/// What the TAPs would receive: (lan, virtio header, frame).
fn coalesce(frames: &[(usize, Vec<u8>)], c: &mut Coalescer) -> Vec<(usize, VnetHdr, Vec<u8>)> {
    coalesce_with(frames, c, false)
}

/// [`coalesce`], every frame offered as `summed` (its sender computed its checksum) or not.
fn coalesce_with(
    frames: &[(usize, Vec<u8>)],
    c: &mut Coalescer,
    summed: bool,
) -> Vec<(usize, VnetHdr, Vec<u8>)> {
    let mut out = Vec::new();
    for (lan, f) in frames {
        let mut written = Vec::new();
        let taken = c.push(*lan, f, summed, |l, b, segs| {
            assert!(segs >= 1);
            let h = VnetHdr::parse(b).expect("header");
            written.push((l, h, b[VNET_HDR_LEN..].to_vec()));
        });
        out.append(&mut written);
        if !taken {
            out.push((*lan, VnetHdr::default(), f.clone()));
        }
    }
    c.flush(|l, b, _| {
        out.push((
            l,
            VnetHdr::parse(b).expect("header"),
            b[VNET_HDR_LEN..].to_vec(),
        ))
    });
    out
}

/// Split every GSO frame back into segments.
fn expand(written: &[(usize, VnetHdr, Vec<u8>)]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    for (lan, h, f) in written {
        if h.gso_type == 0 {
            assert_eq!(
                *h,
                VnetHdr::default(),
                "a plain frame has an all-zero header"
            );
            out.push((*lan, f.clone()));
            continue;
        }
        let mut f = f.clone();
        split(h, &mut f, &mut buf, 0, |b, n| {
            out.push((*lan, b[..n].to_vec()))
        })
        .expect("split");
    }
    out
}

/// Equal, or a panic naming the first difference (not megabytes of bytes).
fn assert_same(got: &[(usize, Vec<u8>)], want: &[(usize, Vec<u8>)]) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "frame {i} differs: got {} frames, want {}; got lan/len {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(i).map(|(l, f)| (l, f.len())),
            want.get(i).map(|(l, f)| (l, f.len()))
        );
    }
}

fn lan0(segs: Vec<Vec<u8>>) -> Vec<(usize, Vec<u8>)> {
    segs.into_iter().map(|s| (0, s)).collect()
}

#[test]
fn one_tso_send_becomes_one_valid_gso_frame() {
    for v6 in [false, true] {
        let input = lan0(segments(v6, 40000, 1_000_000, 20 * 1448 - 300, 1448));
        assert_eq!(input.len(), 20);
        let mut c = Coalescer::new();
        let out = coalesce(&input, &mut c);
        assert_eq!(out.len(), 1, "v6={v6}");
        let (_, h, f) = &out[0];
        let l4 = if v6 { 54 } else { 34 };
        assert_eq!(h.flags, F_NEEDS_CSUM);
        assert_eq!(h.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert_eq!(
            (h.gso_size, h.hdr_len, h.csum_start, h.csum_offset),
            (1448, l4 + 20, l4, 16)
        );
        assert_eq!(
            c.stats(),
            GroStats {
                frames: 1,
                segments: 20,
                summed: 0
            }
        );
        // The merged frame is a valid TCP packet once the kernel completes the checksum.
        let mut done = f.clone();
        let l4 = usize::from(l4);
        let c = !fold(sum(0, &done[l4..]));
        done[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        let p = SlicedPacket::from_ethernet(&done).expect("valid frame");
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP")
        };
        assert_eq!(t.sequence_number(), 1_000_000);
        assert!(t.psh(), "the last segment's PSH");
        assert_eq!(t.payload().len(), 20 * 1448 - 300);
        let want = match &p.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => {
                let hdr = ip.header().to_header();
                assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
                t.to_header().calc_checksum_ipv4(&hdr, t.payload())
            }
            Some(etherparse::NetSlice::Ipv6(ip)) => t
                .to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), t.payload()),
            _ => panic!("no IP"),
        };
        assert_eq!(Ok(t.checksum()), want.map_err(|_| ()));
        assert_same(&expand(&out), &input);
    }
}

/// Take PSH off a segment (and fix its checksum), as if the send went on.
fn clear_psh(f: &mut [u8]) {
    let l4 = 34;
    f[l4 + 13] &= !TCP_PSH;
    f[l4 + 16..l4 + 18].fill(0);
    let c = !fold(sum(pseudo(&f[26..34], 6, (f.len() - l4) as u32), &f[l4..]));
    f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn frames_stay_within_64_kb() {
    let mut first = segments(false, 40000, 7, 60_000, 1000);
    if let Some(last) = first.last_mut() {
        clear_psh(last);
    }
    let mut input = lan0(first);
    // Ids run on too: `segments` derives them from the sequence number.
    input.extend(lan0(segments(false, 40000, 7 + 60_000, 30_000, 1000)));
    let out = coalesce(&input, &mut Coalescer::new());
    // 65 segments of 1000 bytes fit (65,040 bytes of IP); the 66th starts the next frame.
    let sizes: Vec<usize> = out.iter().map(|(_, _, f)| f.len() - ETH).collect();
    assert_eq!(sizes, vec![40 + 65_000, 40 + 25_000]);
    assert_same(&expand(&out), &input);
}

#[test]
fn what_cannot_merge_passes_through_in_order() {
    let mut c = Coalescer::new();
    let mut arp = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                etherparse::ArpOperation::REQUEST,
                &A,
                &[10, 0, 0, 1],
                &[0; 6],
                &[10, 0, 0, 2],
            )
            .expect("arp"),
        )
        .write(&mut arp)
        .expect("build");
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1, 2)
        .write(&mut udp, &[9; 1000])
        .expect("build");
    // IPv4 UDP without a checksum (0): merging would invent one.
    udp[40..42].fill(0);
    let mut syn = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1, 2, 5, 100)
        .syn()
        .write(&mut syn, &[])
        .expect("build");
    let mut segs = segments(false, 40000, 1, 5000, 1000);
    // A bad checksum is not merged (nor hidden behind a partial one).
    let mut bad = segs[2].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    segs[2] = bad.clone();
    let mut input = lan0(segs);
    input.insert(1, (0, arp.clone()));
    input.push((1, udp.clone()));
    input.push((0, syn.clone()));
    let out = coalesce(&input, &mut c);
    assert_same(&expand(&out), &input);
    assert!(out.iter().any(|(_, h, f)| h.gso_type == 0 && *f == bad));
    for plain in [&arp, &udp, &syn] {
        assert!(!c.push(0, plain, false, |_, _, _| {}));
    }
}

#[test]
fn interleaved_flows_and_lans_keep_their_order() {
    let a = segments(false, 1000, 1, 8000, 1000);
    let b = segments(true, 2000, 1, 8000, 1000);
    let mut input = Vec::new();
    for (i, (x, y)) in a.into_iter().zip(b).enumerate() {
        input.push((i % 2, x));
        input.push((0, y));
    }
    let out = coalesce(&input, &mut Coalescer::new());
    assert_same(&expand(&out), &input);
}

#[test]
fn a_gap_or_a_reorder_ends_the_run() {
    let mut segs = segments(false, 1000, 1, 10_000, 1000);
    segs.swap(3, 4);
    segs.remove(7);
    let input = lan0(segs);
    let mut c = Coalescer::new();
    let out = coalesce(&input, &mut c);
    assert_same(&expand(&out), &input);
    assert!(out.len() >= 3);
    assert!(c.stats().segments < input.len() as u64);
}

#[test]
fn udp_datagrams_of_one_flow_become_one_gso_frame() {
    for v6 in [false, true] {
        // 10 datagrams of 64 bytes and a short last one.
        let input = lan0(datagrams(v6, 40000, 3, 10 * 64 + 20, 64));
        assert_eq!(input.len(), 11);
        let mut c = Coalescer::new();
        let out = coalesce(&input, &mut c);
        assert_eq!(out.len(), 1, "v6={v6}");
        let (_, h, f) = &out[0];
        let l4 = if v6 { 54 } else { 34 };
        assert_eq!(
            (
                h.flags,
                h.gso_type,
                h.gso_size,
                h.hdr_len,
                h.csum_start,
                h.csum_offset
            ),
            (F_NEEDS_CSUM, GSO_UDP_L4, 64, l4 + 8, l4, 6)
        );
        // Valid once the kernel completes the checksum, with the whole payload.
        let mut done = f.clone();
        let l4 = usize::from(l4);
        let c = !fold(sum(0, &done[l4..]));
        done[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
        let p = SlicedPacket::from_ethernet(&done).expect("valid frame");
        let Some(TransportSlice::Udp(u)) = p.transport else {
            panic!("not UDP")
        };
        assert_eq!(u.payload().len(), 10 * 64 + 20);
        let want = match &p.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => u
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), u.payload()),
            Some(etherparse::NetSlice::Ipv6(ip)) => u
                .to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), u.payload()),
            _ => panic!("no IP"),
        };
        assert_eq!(Ok(u.checksum()), want.map_err(|_| ()));
        assert_same(&expand(&out), &input);
    }
}

#[test]
fn udp_runs_stop_at_64_datagrams() {
    let input = lan0(datagrams(false, 40000, 0, 150 * 100, 100));
    let out = coalesce(&input, &mut Coalescer::new());
    let counts: Vec<usize> = out
        .iter()
        .map(|(_, h, f)| (f.len() - 42).div_ceil(usize::from(h.gso_size.max(1))))
        .collect();
    assert_eq!(counts, vec![64, 64, 22]);
    assert_same(&expand(&out), &input);
}

#[test]
fn tcp_and_udp_of_the_same_hosts_do_not_mix() {
    let mut input = lan0(segments(false, 1000, 0, 3000, 1000));
    input.extend(lan0(datagrams(false, 1000, 3, 3000, 1000)));
    let mut c = Coalescer::new();
    let out = coalesce(&input, &mut c);
    assert_eq!(out.len(), 2);
    assert_eq!(
        c.stats(),
        GroStats {
            frames: 2,
            segments: 6,
            summed: 0
        }
    );
    assert_same(&expand(&out), &input);
}

proptest::proptest! {
    /// Any mix of flows, lost and reordered segments, LANs, and bytes of no sense:
    /// splitting what comes out gives back exactly what went in, and nothing panics.
    #[test]
    fn coalescing_is_undone_by_segmentation(
        flows in proptest::collection::vec(
            (proptest::bool::ANY, proptest::bool::ANY, 1usize..20_000, 40u16..1500), 1..4),
        shuffle in proptest::collection::vec((0usize..64, 0usize..64), 0..6),
        drops in proptest::collection::vec(0usize..64, 0..4),
        lans in proptest::collection::vec(0usize..2, 64),
        junk in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..200), 0..4),
    ) {
        let mut all: Vec<Vec<u8>> = Vec::new();
        for (i, (udp, v6, len, mss)) in flows.into_iter().enumerate() {
            all.extend(send(udp, v6, 1000 + i as u16, 77, len, mss));
        }
        all.extend(junk);
        for (x, y) in shuffle {
            let n = all.len();
            all.swap(x % n, y % n);
        }
        for d in drops {
            if all.len() > 1 {
                let n = all.len();
                all.remove(d % n);
            }
        }
        let input: Vec<(usize, Vec<u8>)> =
            all.into_iter().enumerate().map(|(i, f)| (lans[i % 64], f)).collect();
        let out = coalesce(&input, &mut Coalescer::new());
        assert_same(&expand(&out), &input);
    }
}

/// A sender's word that it computed the transport checksums (`summed`, `FLAG_CHECKSUMS`)
/// changes nothing for valid segments (TCP and UDP, IPv4 and IPv6), and it is taken:
/// segments whose checksum field holds anything merge all the same, where unsummed ones
/// with those fields pass through one by one. The IPv4 header's own checksum is still
/// checked either way.
#[test]
fn summed_segments_merge_as_checked_ones_do_without_a_second_sum() {
    for v6 in [false, true] {
        let mut input = lan0(segments(v6, 40000, 1, 20000, 1000));
        input.extend(lan0(datagrams(v6, 40001, 3, 12000, 1200)));
        let checked = coalesce_with(&input, &mut Coalescer::new(), false);
        let mut c = Coalescer::new();
        let summed = coalesce_with(&input, &mut c, true);
        assert_eq!(checked, summed, "v6 {v6}");
        assert_eq!(
            (c.stats().segments, c.stats().summed),
            (input.len() as u64, input.len() as u64),
            "every segment merged, on its sender's checksum (v6 {v6})"
        );
        assert_eq!(summed.len(), 2, "one TCP and one UDP frame (v6 {v6})");
        let l4 = if v6 { 54 } else { 34 };
        let proto_at = if v6 { 20 } else { 23 };
        let blank: Vec<(usize, Vec<u8>)> = input
            .iter()
            .map(|(lan, f)| {
                let mut f = f.clone();
                let at = l4 + if f[proto_at] == 6 { 16 } else { 6 };
                f[at..at + 2].copy_from_slice(&[0x12, 0x34]);
                (*lan, f)
            })
            .collect();
        assert_eq!(
            coalesce_with(&blank, &mut Coalescer::new(), true).len(),
            2,
            "summed: merged without a sum (v6 {v6})"
        );
        assert_eq!(
            coalesce_with(&blank, &mut Coalescer::new(), false).len(),
            blank.len(),
            "unsummed: each checked, none merged (v6 {v6})"
        );
        if !v6 {
            // A bad IPv4 header checksum is never merged, summed or not.
            let mut bad = input.clone();
            for (_, f) in &mut bad {
                f[24] ^= 0xff;
            }
            assert_eq!(
                coalesce_with(&bad, &mut Coalescer::new(), true).len(),
                bad.len()
            );
        }
    }
}

#[test]
fn a_writer_that_keeps_the_buffer_gets_the_same_frames() {
    // The TAP writer thread takes the coalescer's buffer and swaps in an empty one.
    let mut input = lan0(segments(false, 1000, 1, 30_000, 1000));
    input.extend(
        datagrams(true, 3000, 0, 9_000, 900)
            .into_iter()
            .map(|d| (1, d)),
    );
    input.extend(lan0(segments(true, 2000, 1, 5_000, 1000)));
    let want = coalesce(&input, &mut Coalescer::new());
    let mut c = Coalescer::new();
    let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
    let take = |got: &mut Vec<(usize, Vec<u8>)>, l: usize, b: &mut Vec<u8>| {
        got.push((l, std::mem::replace(b, Coalescer::buffer())));
    };
    for (lan, f) in &input {
        if !c.push(*lan, f, false, |l, b, _| take(&mut got, l, b)) {
            got.push((*lan, [vec![0u8; VNET_HDR_LEN], f.clone()].concat()));
        }
    }
    c.flush(|l, b, _| take(&mut got, l, b));
    let got: Vec<_> = got
        .into_iter()
        .map(|(l, b)| {
            (
                l,
                VnetHdr::parse(&b).expect("header"),
                b[VNET_HDR_LEN..].to_vec(),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the frames differ from those written in place");
    assert!(want.len() >= 3, "{} frames: nothing was merged", want.len());
}
