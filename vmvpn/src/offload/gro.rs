//! Receive-side coalescing, sans-IO: the inverse of `gso::split`. Consecutive TCP segments
//! of one flow that arrive through the overlay are merged into one frame of up to 64 KB with
//! a virtio-net header (GSO TCPv4/TCPv6, checksum partial), so an offload TAP takes one
//! write, and the kernel makes one trip through its stack, instead of one per segment. This
//! is what Linux GRO does for a NIC, with the same rules: only in-order, ACK-only segments
//! of full size (the last may be shorter or carry PSH), with identical headers but for
//! lengths, IPv4 id, sequence number and checksums. Every segment's checksums are verified
//! first, because the merged frame's checksum is left for the kernel to trust.
//!
//! UDP datagrams of one flow merge the same way (GSO UDP_L4, as for a NIC with UDP GRO):
//! equal sizes but the last, running IPv4 ids, at most 64 per frame. The kernel splits them
//! again before any socket that did not ask for UDP GRO sees them, so small packets cost
//! one TAP write per run instead of one each.
//!
//! One flow is held at a time: the segments of one GSO send arrive together, so a second
//! slot would rarely merge more, and one slot keeps delivery order trivially right.

use crate::offload::csum::{fold, pseudo, sum};
use crate::offload::gso::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VNET_HDR_LEN, VnetHdr};

const ETH: usize = 14;
/// IP lengths are 16-bit: the IPv4 total or the IPv6 payload stays within this.
const MAX_IP_LEN: usize = 65_535;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Datagrams per merged UDP frame at most (the kernel's UDP GSO takes up to 128).
const MAX_UDP_SEGS: usize = 64;

/// A TCP segment or UDP datagram that may be merged: its layout, checked.
#[derive(Debug, Clone, Copy)]
struct Seg {
    v4: bool,
    udp: bool,
    /// Offset of the TCP or UDP header.
    l4: usize,
    /// Offset of the payload.
    hdrs: usize,
    payload: usize,
    seq: u32,
    id: u16,
    psh: bool,
}

/// The flow being gathered in `Coalescer::buf`.
#[derive(Debug, Clone, Copy)]
struct Held {
    lan: usize,
    seg: Seg,
    gso_size: usize,
    segs: usize,
    /// Of them, segments taken on their sender's checksum (`summed`).
    summed: usize,
    next_seq: u32,
    next_id: u16,
    psh: bool,
}

/// Coalesced frames and the segments they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroStats {
    /// Frames written with more than one segment.
    pub frames: u64,
    /// Segments in them.
    pub segments: u64,
    /// Of these, segments merged on their sender's checksum, not summed here.
    pub summed: u64,
}

/// Gathers segments; see the module documentation.
pub struct Coalescer {
    /// Virtio-net header, then the merged frame.
    buf: Vec<u8>,
    held: Option<Held>,
    stats: GroStats,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    /// An empty coalescer (its buffer is allocated once, here).
    pub fn new() -> Self {
        Coalescer {
            buf: Self::buffer(),
            held: None,
            stats: GroStats::default(),
        }
    }

    /// An empty buffer that holds any merged frame: what a `write` callback may swap in for
    /// the one it is handed, to keep that one (no allocation follows while merging).
    pub fn buffer() -> Vec<u8> {
        Vec::with_capacity(VNET_HDR_LEN + ETH + 40 + MAX_IP_LEN)
    }

    /// What has been merged so far.
    pub fn stats(&self) -> GroStats {
        self.stats
    }

    /// Offer `frame`, bound for LAN `lan`'s TAP. Returns `true` if the coalescer took it;
    /// `false` means the caller writes it as it is. Whatever must go out first (the flow
    /// held so far) is handed to `write(lan, bytes, segments)`, where `bytes` starts with
    /// the virtio-net header; `write` may keep it by swapping in an empty `buffer()`.
    pub fn push(
        &mut self,
        lan: usize,
        frame: &[u8],
        summed: bool,
        mut write: impl FnMut(usize, &mut Vec<u8>, usize),
    ) -> bool {
        let seg = parse(frame, summed);
        if let (Some(s), Some(h)) = (seg, self.held.as_mut())
            && joins(h, lan, &s, frame, &self.buf[VNET_HDR_LEN..])
        {
            self.buf.extend_from_slice(&frame[s.hdrs..]);
            h.segs += 1;
            h.summed += usize::from(summed);
            h.next_seq = h.next_seq.wrapping_add(s.payload as u32);
            h.next_id = h.next_id.wrapping_add(1);
            // A short or pushed segment ends the run, as it ends a TSO frame.
            if s.psh || s.payload < h.gso_size || (s.udp && h.segs >= MAX_UDP_SEGS) {
                h.psh |= s.psh;
                self.flush(write);
            }
            return true;
        }
        self.flush(&mut write);
        match seg {
            // A pushed segment could not be followed: nothing to gain by holding it.
            Some(s) if !s.psh => {
                self.buf.clear();
                self.buf.resize(VNET_HDR_LEN, 0);
                self.buf.extend_from_slice(frame);
                self.held = Some(Held {
                    lan,
                    seg: s,
                    gso_size: s.payload,
                    segs: 1,
                    summed: usize::from(summed),
                    next_seq: s.seq.wrapping_add(s.payload as u32),
                    next_id: s.id.wrapping_add(1),
                    psh: false,
                });
                true
            }
            _ => false,
        }
    }

    /// Hand over the flow held, if any: one segment as the plain frame it was, more as one
    /// GSO frame.
    pub fn flush(&mut self, mut write: impl FnMut(usize, &mut Vec<u8>, usize)) {
        let Some(h) = self.held.take() else { return };
        let (hdr, frame) = self.buf.split_at_mut(VNET_HDR_LEN);
        let s = h.seg;
        if h.segs == 1 {
            // Checksums are complete: an all-zero header.
            hdr.fill(0);
        } else {
            let len = frame.len();
            let ip = &mut frame[ETH..];
            let addrs = if s.v4 {
                ip[2..4].copy_from_slice(&((len - ETH) as u16).to_be_bytes());
                ip[10..12].fill(0);
                let c = !fold(sum(0, &ip[..20]));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                12..20
            } else {
                ip[4..6].copy_from_slice(&((len - ETH - 40) as u16).to_be_bytes());
                8..40
            };
            let l4_len = len - s.l4;
            let ph = fold(pseudo(
                &ip[addrs],
                if s.udp { 17 } else { 6 },
                l4_len as u32,
            ));
            let l4 = &mut frame[s.l4..];
            // Checksum partial: the pseudo-header sum in place, the kernel finishes it.
            let (gso_type, csum_offset) = if s.udp {
                l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                l4[6..8].copy_from_slice(&ph.to_be_bytes());
                (GSO_UDP_L4, 6)
            } else {
                if h.psh {
                    l4[13] |= TCP_PSH;
                }
                l4[16..18].copy_from_slice(&ph.to_be_bytes());
                (if s.v4 { GSO_TCPV4 } else { GSO_TCPV6 }, 16)
            };
            let v = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type,
                hdr_len: s.hdrs as u16,
                gso_size: h.gso_size as u16,
                csum_start: s.l4 as u16,
                csum_offset,
            };
            if let Ok(hdr) = <&mut [u8; VNET_HDR_LEN]>::try_from(hdr) {
                v.write(hdr);
            }
            self.stats.frames += 1;
            self.stats.segments += h.segs as u64;
            self.stats.summed += h.summed as u64;
        }
        write(h.lan, &mut self.buf, h.segs);
    }
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// The segment's layout if it may be merged: untagged IPv4 without options or fragments,
/// or IPv6 without extension headers; TCP with payload, ACK set and nothing but PSH
/// besides, or UDP with payload and a checksum; lengths that match the frame; valid
/// checksums (the transport's taken as valid when `summed`: its sender computed it, and
/// the tunnel's AEAD proves the bytes unchanged since).
fn parse(f: &[u8], summed: bool) -> Option<Seg> {
    let (v4, l4, id, proto) = match f.get(12..14)? {
        [0x08, 0x00] => {
            let ip = f.get(ETH..ETH + 20)?;
            let frag = be16(ip, 6);
            if ip[0] != 0x45
                || (ip[9] != 6 && ip[9] != 17)
                || usize::from(be16(ip, 2)) != f.len() - ETH
                || frag & 0x3fff != 0
                || fold(sum(0, ip)) != 0xffff
            {
                return None;
            }
            (true, ETH + 20, be16(ip, 4), ip[9])
        }
        [0x86, 0xdd] => {
            let ip = f.get(ETH..ETH + 40)?;
            if ip[0] >> 4 != 6
                || (ip[6] != 6 && ip[6] != 17)
                || usize::from(be16(ip, 4)) != f.len() - ETH - 40
            {
                return None;
            }
            (false, ETH + 40, 0, ip[6])
        }
        _ => return None,
    };
    let addrs = if v4 {
        &f[ETH + 12..ETH + 20]
    } else {
        &f[ETH + 8..ETH + 40]
    };
    let valid =
        || summed || fold(sum(pseudo(addrs, proto, (f.len() - l4) as u32), &f[l4..])) == 0xffff;
    if proto == 17 {
        let udp = f.get(l4..l4 + 8)?;
        // A zero checksum is "none" (IPv4): merging would invent one, so it passes as is.
        let ok = usize::from(be16(udp, 4)) == f.len() - l4
            && f.len() > l4 + 8
            && be16(udp, 6) != 0
            && valid();
        return ok.then_some(Seg {
            v4,
            udp: true,
            l4,
            hdrs: l4 + 8,
            payload: f.len() - l4 - 8,
            seq: 0,
            id,
            psh: false,
        });
    }
    let tcp = f.get(l4..l4 + 20)?;
    let hdrs = l4 + usize::from(tcp[12] >> 4) * 4;
    if hdrs < l4 + 20 || hdrs >= f.len() || tcp[13] & !TCP_PSH != TCP_ACK || !valid() {
        return None;
    }
    Some(Seg {
        v4,
        udp: false,
        l4,
        hdrs,
        payload: f.len() - hdrs,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        id,
        psh: tcp[13] & TCP_PSH != 0,
    })
}

/// Whether segment `s` (in `f`) continues the held flow (whose frame is `held`).
fn joins(h: &Held, lan: usize, s: &Seg, f: &[u8], held: &[u8]) -> bool {
    if h.lan != lan || s.v4 != h.seg.v4 {
        return false;
    }
    // The length field's view of the held frame (same IP version as `s`, checked above).
    let ip_len = held.len().saturating_sub(ETH + if s.v4 { 0 } else { 40 });
    if s.udp != h.seg.udp
        || s.hdrs != h.seg.hdrs
        || s.payload > h.gso_size
        || ip_len + s.payload > MAX_IP_LEN
        || (!s.udp && s.seq != h.next_seq)
        // IPv4 ids must run on (as one TSO send's do), so re-segmenting restores them.
        || (s.v4 && s.id != h.next_id)
    {
        return false;
    }
    // Equal bytes but for what differs by right between segments of one send.
    let same = |r: std::ops::Range<usize>| f.get(r.clone()) == held.get(r);
    let ip_same = if s.v4 {
        // tos; flags, ttl, protocol; addresses (not length, id, checksum).
        same(ETH..ETH + 2) && same(ETH + 6..ETH + 10) && same(ETH + 12..ETH + 20)
    } else {
        // version, class, flow label; next header, hop limit, addresses (not length).
        same(ETH..ETH + 4) && same(ETH + 6..ETH + 40)
    };
    let l4 = s.l4;
    // ports (UDP: not length, checksum); TCP: ack, offset, window, urgent pointer and
    // options (not seq, flags, checksum: parse allowed only ACK and PSH).
    ip_same
        && same(0..ETH)
        && same(l4..l4 + 4)
        && (s.udp || (same(l4 + 8..l4 + 13) && same(l4 + 14..l4 + 16) && same(l4 + 18..s.hdrs)))
}

#[cfg(test)]
#[path = "gro_tests.rs"]
mod tests;
