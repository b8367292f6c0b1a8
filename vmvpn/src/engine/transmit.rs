//! Control datagrams out: hellos, beacons, keepalives, probes and their replies wait in
//! a queue of fixed-size buffers; path MTU probes, as large as the underlay allows, are
//! written straight into the runtime's buffer by `poll_transmit`.

use std::net::SocketAddr;
use std::time::Instant;

use super::datapath::write_header;
use super::{Engine, LanId, PeerId};
use crate::proto::{
    HEADER_LEN, HELLO_LEN, Header, Kind, OVERHEAD, PMTU_SEQ_BIT, TAG_LEN, UDP_IPV4_OVERHEAD,
    UDP_IPV6_OVERHEAD,
};

/// A control datagram waiting to be sent.
pub(crate) struct Outgoing {
    pub(crate) to: SocketAddr,
    pub(crate) len: usize,
    pub(crate) buf: [u8; HELLO_LEN],
}

impl Engine {
    /// Queue a path MTU probe or ack to peer `pi`, on its own sequence space.
    pub(super) fn queue_pmtu(
        &mut self,
        lan: LanId,
        pi: PeerId,
        kind: Kind,
        plain: &[u8],
        now: Instant,
    ) {
        self.queue_sealed_on(lan, pi, kind, plain, now, true);
    }

    pub(super) fn queue_keepalive(&mut self, lan: LanId, pi: PeerId, now: Instant) {
        self.queue_sealed(lan, pi, Kind::Keepalive, &[], now);
    }

    /// Queue a small sealed control message (keepalive, probe, probe reply) to a peer, on
    /// the pairwise key and sequence.
    pub(super) fn queue_sealed(
        &mut self,
        lan: LanId,
        pi: PeerId,
        kind: Kind,
        plain: &[u8],
        now: Instant,
    ) {
        self.queue_sealed_on(lan, pi, kind, plain, now, false);
    }

    /// Seal `plain` for peer `pi` on the pairwise key and queue it: on the data sequence,
    /// or (`pmtu`) on the path MTU sequence space, whose losses are not counted.
    fn queue_sealed_on(
        &mut self,
        lan: LanId,
        pi: PeerId,
        kind: Kind,
        plain: &[u8],
        now: Instant,
        pmtu: bool,
    ) {
        let l = &mut self.lans[lan.index()];
        let Some(p) = l.peers.get_mut(pi.index()) else {
            return;
        };
        let Some(s) = p.tunnel.session() else { return };
        let seq = if pmtu {
            PMTU_SEQ_BIT | p.path.pmtu_seq
        } else {
            p.tx_seq
        };
        let mut out = Outgoing {
            to: p.addr,
            len: 0,
            buf: [0; HELLO_LEN],
        };
        let hdr = Header {
            kind,
            flags: 0,
            lan: l.spec.id,
            sender: self.me.id,
            seq,
        };
        write_header(&mut out.buf, &hdr);
        let Some(body) = out.buf.get_mut(HEADER_LEN..HEADER_LEN + plain.len()) else {
            return;
        };
        body.copy_from_slice(plain);
        let Some(n) = s.tx.seal(seq, &mut out.buf, plain.len()) else {
            return;
        };
        out.len = n;
        if pmtu {
            p.path.pmtu_seq += 1;
        } else {
            p.tx_seq += 1;
        }
        p.link.last_sent = Some(now);
        self.out.push_back(out);
    }

    /// The next control datagram to send (hello, keepalive, probe, path MTU probe),
    /// written into `out` (which needs room for a probe of the underlay MTU).
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if let Some(m) = self.out.pop_front() {
            let dst = out.get_mut(..m.len)?;
            dst.copy_from_slice(&m.buf[..m.len]);
            return Some((m.to, m.len));
        }
        while let Some((li, to, size)) = self.pmtu_probes.pop_front() {
            if let Some(sent) = self.write_pmtu_probe(li, to, size, out) {
                return Some(sent);
            }
        }
        None
    }

    /// A path MTU probe of `size` bytes on the underlay (IP packet), sealed into `out`.
    fn write_pmtu_probe(
        &mut self,
        li: LanId,
        to: SocketAddr,
        size: u16,
        out: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        let ip_udp = if self.ipv6_underlay {
            UDP_IPV6_OVERHEAD
        } else {
            UDP_IPV4_OVERHEAD
        };
        let l = self.lans.get_mut(li.index())?;
        let pi = l.peer_by_addr(to)?;
        let p = l.peers.get_mut(pi.index())?;
        let s = p.tunnel.up_session()?;
        let plain = usize::from(size).checked_sub(ip_udp + OVERHEAD)?.max(2);
        let room = out.get_mut(..HEADER_LEN + plain + TAG_LEN)?;
        let seq = PMTU_SEQ_BIT | p.path.pmtu_seq;
        write_header(
            room,
            &Header {
                kind: Kind::PmtuProbe,
                flags: 0,
                lan: l.spec.id,
                sender: self.me.id,
                seq,
            },
        );
        room[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&size.to_be_bytes());
        room[HEADER_LEN + 2..HEADER_LEN + plain].fill(0);
        let n = s.tx.seal(seq, room, plain)?;
        p.path.pmtu_seq += 1;
        Some((p.addr, n))
    }
}
