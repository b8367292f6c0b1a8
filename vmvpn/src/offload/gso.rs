//! TAP offloads, sans-IO: a TAP opened with `IFF_VNET_HDR` and TSO hands over frames of up
//! to 64 KB with a virtio-net header; this module turns one such frame into the MTU-sized
//! frames the overlay carries (TCP or, with USO, UDP segmentation with fixed-up headers
//! and full checksums, or just the checksum the kernel left partial). Each resulting frame then goes through
//! the forwarding core like any other, so telemetry still counts real packets.
//!
//! The work is one TAP read per 64 KB instead of one per frame, and the sealed segments
//! leave in one UDP GSO send.

use crate::offload::csum::{fold, pseudo, sum};

/// Size of `struct virtio_net_hdr` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub(crate) const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_*`.
const GSO_NONE: u8 = 0;
pub(crate) const GSO_TCPV4: u8 = 1;
pub(crate) const GSO_TCPV6: u8 = 4;
pub(crate) const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// The virtio-net header (native endianness: little on every host vmvpn runs on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Whether the frame is to be cut into segments (TCP or UDP).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// Whether the frame is a UDP GSO frame (from a TAP with USO).
    pub fn is_udp_gso(&self) -> bool {
        self.gso_type & !GSO_ECN == GSO_UDP_L4
    }

    /// Parse the first 10 bytes.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The 10 bytes.
    pub fn write(&self, b: &mut [u8; VNET_HDR_LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Why a frame could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoError {
    /// Headers missing or inconsistent with the virtio header.
    Malformed,
    /// A GSO type we did not ask for (UFO, SCTP, ...).
    Unsupported,
    /// A segment does not fit the output buffer.
    TooBig,
}

/// Where split frames go: each is written to `room()[at..]`, then `emit(len)` is called,
/// before `room` is asked again. A sink may hand out a new place each time, so that a
/// segment is written straight where it will be sent from (the I/O layer's GSO batch).
pub trait Segments {
    /// The buffer the next frame is written into, at the offset `split` was given.
    fn room(&mut self) -> &mut [u8];
    /// The frame of `len` bytes at `room()[at..]` is complete.
    fn emit(&mut self, len: usize);
}

/// One buffer for every frame, handed with the frame's length to a closure.
struct Buffer<'a, F> {
    out: &'a mut [u8],
    emit: F,
}

impl<F: FnMut(&mut [u8], usize)> Segments for Buffer<'_, F> {
    fn room(&mut self) -> &mut [u8] {
        self.out
    }
    fn emit(&mut self, len: usize) {
        (self.emit)(self.out, len)
    }
}

/// Split `frame` (without the virtio header) as `h` says; each output frame is written to
/// `out[at..]` and handed to `emit(out, len)`. Returns how many frames were emitted.
pub fn split(
    h: &VnetHdr,
    frame: &mut [u8],
    out: &mut [u8],
    at: usize,
    emit: impl FnMut(&mut [u8], usize),
) -> Result<usize, GsoError> {
    split_into(h, frame, at, &mut Buffer { out, emit })
}

/// `split`, each frame written where `sink` says (see [`Segments`]).
pub fn split_into(
    h: &VnetHdr,
    frame: &mut [u8],
    at: usize,
    sink: &mut impl Segments,
) -> Result<usize, GsoError> {
    let gso = h.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        if h.flags & F_NEEDS_CSUM != 0 {
            complete_csum(h, frame)?;
        }
        let n = frame.len();
        let dst = sink.room().get_mut(at..at + n).ok_or(GsoError::TooBig)?;
        dst.copy_from_slice(frame);
        sink.emit(n);
        return Ok(1);
    }
    let udp = gso == GSO_UDP_L4;
    if gso != GSO_TCPV4 && gso != GSO_TCPV6 && !udp {
        return Err(GsoError::Unsupported);
    }
    let l4 = usize::from(h.csum_start);
    let ip = match frame.get(12..14) {
        Some([0x81, 0x00]) => 18,
        Some(_) => 14,
        None => return Err(GsoError::Malformed),
    };
    // UDP's GSO type says nothing of the IP version: the header does.
    let v4 = if udp {
        frame.get(ip).is_some_and(|b| b >> 4 == 4)
    } else {
        gso == GSO_TCPV4
    };
    let min_l4 = if udp { 8 } else { 20 };
    if l4 < ip + if v4 { 20 } else { 40 } || frame.len() < l4 + min_l4 {
        return Err(GsoError::Malformed);
    }
    let thl = if udp {
        8
    } else {
        usize::from(frame[l4 + 12] >> 4) * 4
    };
    let hdrs = l4 + thl;
    let mss = usize::from(h.gso_size);
    if thl < min_l4 || frame.len() < hdrs || mss == 0 {
        return Err(GsoError::Malformed);
    }
    let payload_len = frame.len() - hdrs;
    // TCP only (UDP has neither); its header length was checked above.
    let (seq0, flags0) = if udp {
        (0, 0)
    } else {
        let t = &frame[l4..];
        (u32::from_be_bytes([t[4], t[5], t[6], t[7]]), t[13])
    };
    let id0 = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]);
    let mut count = 0;
    let mut off = 0;
    while off < payload_len || (payload_len == 0 && count == 0) {
        let chunk = mss.min(payload_len - off);
        let n = hdrs + chunk;
        let seg = sink.room().get_mut(at..at + n).ok_or(GsoError::TooBig)?;
        seg[..hdrs].copy_from_slice(&frame[..hdrs]);
        seg[hdrs..].copy_from_slice(&frame[hdrs + off..hdrs + off + chunk]);
        let last = off + chunk >= payload_len;
        // IP: length, id (v4), header checksum (v4).
        if v4 {
            let ihl = (usize::from(seg[ip] & 0x0f) * 4).clamp(20, l4 - ip);
            let total = (n - ip) as u16;
            seg[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
            seg[ip + 4..ip + 6].copy_from_slice(&id0.wrapping_add(count as u16).to_be_bytes());
            seg[ip + 10..ip + 12].fill(0);
            let c = !fold(sum(0, &seg[ip..ip + ihl]));
            seg[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        } else {
            let plen = (n - ip - 40) as u16;
            seg[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
        }
        let addrs = if v4 {
            &seg[ip + 12..ip + 20]
        } else {
            &seg[ip + 8..ip + 40]
        };
        let l4_len = (n - l4) as u32;
        let ph = pseudo(addrs, if udp { 17 } else { 6 }, l4_len);
        let at = if udp {
            // UDP: the length.
            seg[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            l4 + 6
        } else {
            // TCP: sequence number, flags (FIN/PSH only on the last, CWR only on the first).
            let seq = seq0.wrapping_add(off as u32);
            seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut fl = flags0;
            if !last {
                fl &= !(0x01 | 0x08);
            }
            if count > 0 {
                fl &= !0x80;
            }
            seg[l4 + 13] = fl;
            l4 + 16
        };
        // The checksum over the pseudo-header and the segment; UDP sends a computed 0 as
        // 0xffff, since its 0 means "no checksum".
        seg[at..at + 2].fill(0);
        let c = !fold(sum(ph, &seg[l4..n]));
        let c = if udp && c == 0 { 0xffff } else { c };
        seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
        sink.emit(n);
        count += 1;
        off += chunk;
        if payload_len == 0 {
            break;
        }
    }
    Ok(count)
}

/// Whether `split_into` leaves, in every frame it makes of this one, a TCP or UDP checksum
/// it computed itself, where a receiver's coalescer (`gro`) reads it: an untagged IPv4
/// frame without options or an IPv6 one without extension headers, the transport header
/// where `csum_start` says, and the protocol the GSO type (or `csum_offset`) expects. Such
/// frames are marked on the wire (`FLAG_CHECKSUMS`) and merged without a second sum.
pub fn checksums_ours(h: &VnetHdr, frame: &[u8]) -> bool {
    let gso = h.gso_type & !GSO_ECN;
    if gso == GSO_NONE && h.flags & F_NEEDS_CSUM == 0 {
        return false;
    }
    let (v4, l4, proto) = match frame.get(12..14) {
        Some([0x08, 0x00]) if frame.get(14) == Some(&0x45) => (true, 34, frame.get(23)),
        Some([0x86, 0xdd]) => (false, 54, frame.get(20)),
        _ => return false,
    };
    let (tcp, udp) = (proto == Some(&6), proto == Some(&17));
    usize::from(h.csum_start) == l4
        && match gso {
            GSO_NONE => (tcp && h.csum_offset == 16) || (udp && h.csum_offset == 6),
            GSO_TCPV4 => v4 && tcp,
            GSO_TCPV6 => !v4 && tcp,
            GSO_UDP_L4 => udp,
            _ => false,
        }
}

/// Finish a partial checksum: the kernel put the pseudo-header sum at
/// `csum_start + csum_offset`; the sum over everything from `csum_start` completes it.
fn complete_csum(h: &VnetHdr, frame: &mut [u8]) -> Result<(), GsoError> {
    let start = usize::from(h.csum_start);
    let at = start + usize::from(h.csum_offset);
    if at + 2 > frame.len() || start > frame.len() {
        return Err(GsoError::Malformed);
    }
    let c = !fold(sum(0, &frame[start..]));
    // UDP's "no checksum" is 0: a computed 0 is sent as 0xffff.
    let c = if c == 0 { 0xffff } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn tso_frame(v6: bool, payload: &[u8], fin: bool) -> (Vec<u8>, VnetHdr) {
        let b = PacketBuilder::ethernet2(A, B);
        let b = if v6 {
            b.ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let mut t = b.tcp(40000, 5201, 1_000_000, 512).ack(7).psh();
        if fin {
            t = t.fin();
        }
        let mut f = Vec::new();
        t.write(&mut f, payload).expect("build");
        let l4 = if v6 { 54 } else { 34 };
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (l4 + 20) as u16,
            gso_size: 1000,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        (f, h)
    }

    fn check(v6: bool, len: usize, fin: bool) {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let (mut f, h) = tso_frame(v6, &payload, fin);
        let mut out = vec![0u8; 2048];
        let mut got = Vec::new();
        let mut segs = Vec::new();
        let n = split(&h, &mut f, &mut out, 0, |b, n| segs.push(b[..n].to_vec())).expect("split");
        assert_eq!(n, len.div_ceil(1000).max(1));
        assert_eq!(segs.len(), n);
        for (i, s) in segs.iter().enumerate() {
            let p = SlicedPacket::from_ethernet(s).expect("valid segment");
            let Some(TransportSlice::Tcp(t)) = p.transport else {
                panic!("not TCP")
            };
            assert_eq!(t.sequence_number(), 1_000_000 + 1000 * i as u32);
            let last = i + 1 == n;
            assert_eq!(t.fin(), fin && last, "segment {i}");
            assert_eq!(t.psh(), last);
            // Checksums verify: etherparse recomputes them.
            let want = match &p.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    let hdr = ip.header().to_header();
                    assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
                    assert_eq!(hdr.identification, i as u16);
                    t.to_header()
                        .calc_checksum_ipv4(&hdr, t.payload())
                        .expect("sum")
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => t
                    .to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), t.payload())
                    .expect("sum"),
                _ => panic!("no IP"),
            };
            assert_eq!(t.checksum(), want, "segment {i}");
            got.extend_from_slice(t.payload());
        }
        assert_eq!(got, payload);
    }

    #[test]
    fn tso_frames_become_valid_segments() {
        for v6 in [false, true] {
            for (len, fin) in [(5000, false), (4321, true), (999, false), (1000, true)] {
                check(v6, len, fin);
            }
        }
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut f, b"hello world")
            .expect("build");
        let good = f.clone();
        // What the kernel hands over: the pseudo-header sum in place of the checksum.
        let l4 = 34;
        let ph = pseudo(&f[26..34], 17, 19);
        f[l4 + 6..l4 + 8].copy_from_slice(&fold(ph).to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_NONE,
            csum_start: l4 as u16,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let mut out = vec![0u8; 2048];
        let mut seen = Vec::new();
        split(&h, &mut f, &mut out, 0, |b, n| seen.push(b[..n].to_vec())).expect("split");
        assert_eq!(seen, vec![good]);
    }

    /// What the split computes itself, and only that, is said to be summed: TSO frames of
    /// both IP versions, a USO frame and a partial checksum, not a frame the kernel summed
    /// (no flags), nor one whose layout a receiver's coalescer would read elsewhere (a VLAN
    /// tag, IPv4 options, `csum_start` off the transport header, a protocol the GSO type
    /// does not match).
    #[test]
    fn only_checksums_the_split_computes_are_said_to_be_summed() {
        for v6 in [false, true] {
            let (f, h) = tso_frame(v6, &[1u8; 3000], false);
            assert!(checksums_ours(&h, &f), "TSO, v6 {v6}");
            let partial = VnetHdr {
                gso_type: GSO_NONE,
                ..h
            };
            assert!(checksums_ours(&partial, &f), "partial, v6 {v6}");
            let summed_by_kernel = VnetHdr {
                flags: 0,
                ..partial
            };
            assert!(!checksums_ours(&summed_by_kernel, &f), "no flags, v6 {v6}");
            let elsewhere = VnetHdr {
                csum_start: h.csum_start + 4,
                ..h
            };
            assert!(!checksums_ours(&elsewhere, &f), "csum_start, v6 {v6}");
            let wrong_offset = VnetHdr {
                csum_offset: 6,
                ..partial
            };
            assert!(!checksums_ours(&wrong_offset, &f), "offset, v6 {v6}");
            let other_version = VnetHdr {
                gso_type: if v6 { GSO_TCPV4 } else { GSO_TCPV6 },
                ..h
            };
            assert!(!checksums_ours(&other_version, &f), "GSO type, v6 {v6}");
            let uso = VnetHdr {
                gso_type: GSO_UDP_L4,
                ..h
            };
            assert!(!checksums_ours(&uso, &f), "USO of a TCP frame, v6 {v6}");
            let mut as_udp = f.clone();
            as_udp[if v6 { 20 } else { 23 }] = 17;
            assert!(checksums_ours(&uso, &as_udp), "USO, v6 {v6}");
        }
        let (f, h) = tso_frame(false, &[1u8; 3000], false);
        let mut options = f.clone();
        options[14] = 0x46;
        assert!(!checksums_ours(&h, &options), "IPv4 options");
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0, 5]);
        tagged.extend_from_slice(&f[12..]);
        let h_tagged = VnetHdr {
            csum_start: h.csum_start + 4,
            ..h
        };
        assert!(!checksums_ours(&h_tagged, &tagged), "VLAN tag");
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let (mut f, h) = tso_frame(false, &[1; 3000], false);
        let mut out = vec![0u8; 2048];
        let mut short = f[..30].to_vec();
        assert_eq!(
            split(&h, &mut short, &mut out, 0, |_, _| {}),
            Err(GsoError::Malformed)
        );
        let udp = VnetHdr { gso_type: 3, ..h };
        assert_eq!(
            split(&udp, &mut f, &mut out, 0, |_, _| {}),
            Err(GsoError::Unsupported)
        );
        let mut tiny = vec![0u8; 100];
        assert_eq!(
            split(&h, &mut f, &mut tiny, 0, |_, _| {}),
            Err(GsoError::TooBig)
        );
        assert_eq!(VnetHdr::parse(&[0; 9]), None);
    }

    proptest::proptest! {
        /// Arbitrary headers and bytes: an error or frames, never a panic.
        #[test]
        fn never_panics(hdr in proptest::collection::vec(proptest::num::u8::ANY, 10),
                        mut frame in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            let h = VnetHdr::parse(&hdr).expect("10 bytes");
            let mut out = vec![0u8; 1600];
            let _ = split(&h, &mut frame, &mut out, 0, |_, n| assert!(n <= 1600));
        }
    }
}
