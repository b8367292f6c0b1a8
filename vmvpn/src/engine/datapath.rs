//! The data path: frames from the TAP sealed for their peer or flooded, datagrams from
//! the underlay opened, checked against replay, and delivered (or put back together from
//! fragments, or passed on as designated forwarder). Nothing here allocates.

use std::net::SocketAddr;
use std::time::Instant;

use telemetry::sflow::OUTPUT_MULTIPLE;
use telemetry::{DropReason, inspect};

use super::lan::Lan;
use super::limits::Admit;
use super::macdb::{Location, Mac, is_group};
use super::measure::Measure;
use super::opened::PreOpen;
use super::reassembly::{self, FragDrop, Verdict};
use super::sampling;
use super::service::Verdict as ToService;
use super::{Engine, LanId, PeerId, Relay, RxAction, Sealer, TapAction, mss, pmtu};
use crate::proto::crypto::SealKey;
use crate::proto::fragment::{self as frag, FragHeader};
use crate::proto::replay::Replay;
use crate::proto::{
    ETHERNET_HEADER_LEN, FLAG_CHECKSUMS, FLAG_RELAY, FLOW_LABEL_SHIFT, HEADER_LEN, Header, Kind,
    PMTU_SEQ_BIT, Packet, TAG_LEN, flow_label,
};

impl Engine {
    /// Handle one frame the kernel wrote to the TAP of `lan`.
    ///
    /// `buf[HEADER_LEN..HEADER_LEN + len]` holds the frame; `buf` must have room for the
    /// header before it and the tag after it (`HEADER_LEN + max_frame + TAG_LEN`). On
    /// `Unicast`/`Flood`, `buf[..n]` is the sealed datagram.
    pub fn handle_tap_frame(
        &mut self,
        lan: LanId,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> TapAction<'_> {
        self.handle_tap_segment(lan, buf, len, now, false)
    }

    /// [`Engine::handle_tap_frame`] for a frame whose TCP or UDP checksum this host
    /// computed itself (`summed`: a segment cut from a TSO or USO frame, see
    /// `gso::checksums_ours`). Sent as one datagram to one peer, it carries
    /// `FLAG_CHECKSUMS`, and the receiver merges it without summing it again.
    pub fn handle_tap_segment(
        &mut self,
        lan: LanId,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        summed: bool,
    ) -> TapAction<'_> {
        let Some(l) = self.lans.get_mut(lan.index()) else {
            self.drops.bump(DropReason::UnknownLan);
            return TapAction::Drop(DropReason::UnknownLan);
        };
        if len < ETHERNET_HEADER_LEN {
            return TapAction::Drop(l.drop_at(None, DropReason::Malformed));
        }
        if len > l.spec.max_frame || buf.len() < HEADER_LEN + len + TAG_LEN {
            return TapAction::Drop(l.drop_at(None, DropReason::Oversize));
        }
        // A LAN without services looks at nothing here.
        if !l.services.is_empty() {
            match l
                .services
                .handle_frame(&mut buf[HEADER_LEN..HEADER_LEN + len])
            {
                ToService::Pass | ToService::Rewritten => {}
                ToService::Answer => return TapAction::Reply(len),
                ToService::Consumed => {
                    // A probe's answer proves the VM is here.
                    let (_, src) = macs_of(&buf[HEADER_LEN..HEADER_LEN + ETHERNET_HEADER_LEN]);
                    l.macs.learn(src, Location::Local, now);
                    return TapAction::Consumed;
                }
                ToService::NoBackend => {
                    return TapAction::Drop(l.drop_at(None, DropReason::NoRoute));
                }
            }
        }
        let (dst, src) = macs_of(&buf[HEADER_LEN..HEADER_LEN + ETHERNET_HEADER_LEN]);
        match l
            .limits
            .admit_out(&src, &buf[HEADER_LEN..HEADER_LEN + len], now)
        {
            Admit::Pass => {}
            Admit::Held => return TapAction::Limited,
            Admit::Drop => {
                l.measure.vms.note_tx_drop(&src);
                return TapAction::Limited;
            }
        }
        match l.measure.burst.as_mut() {
            // A TSO frame's later segments: its first learned the MAC, its end counts.
            Some(b) => {
                if !b.started() {
                    l.macs.learn(src, Location::Local, now);
                }
                b.add(&buf[HEADER_LEN..HEADER_LEN + len]);
            }
            None => {
                l.macs.learn(src, Location::Local, now);
                if self.measure.accounting.flows
                    && let Some(info) = inspect(&buf[HEADER_LEN..HEADER_LEN + len])
                {
                    let second = self.measure.last_second.unwrap_or(0);
                    l.measure.vms.observe(&info, len, true, second);
                    l.measure.flows.observe(&info, len, second);
                }
            }
        }
        let target = if is_group(&dst) {
            None
        } else {
            l.macs.lookup(&dst, now)
        };
        if let Some(s) = self.measure.sampler.as_mut()
            && s.tick(&mut l.measure.sampling)
        {
            let output = match target {
                Some(Location::Peer(i)) => {
                    let p = &l.peers[i.index()];
                    sampling::tunnel_index(lan, p.id.unwrap_or(i.index() as u32))
                }
                Some(Location::Local) => sampling::vm_index(lan, &dst),
                None => OUTPUT_MULTIPLE | (l.flood_members.len() as u32 & 0x3fff_ffff),
            };
            s.take(
                lan,
                &mut l.measure.sampling,
                &buf[HEADER_LEN..HEADER_LEN + len],
                sampling::vm_index(lan, &src),
                output,
            );
        }
        let me = Me {
            id: self.me.id,
            ipv6_underlay: self.ipv6_underlay,
            underlay_mtu: self.underlay_mtu,
            seal_elsewhere: self.seal_elsewhere,
            flow_ports: self.flow_ports,
        };
        match target {
            Some(Location::Local) => TapAction::Drop(l.drop_at(None, DropReason::LocalDestination)),
            Some(Location::Peer(i)) => tap_unicast(l, me, i, &src, (buf, len, summed), now),
            None if l.plan.local.is_empty() && l.plan.relay.is_empty() => {
                l.measure.vms.note_tx_drop(&src);
                TapAction::Drop(l.drop_at(None, DropReason::NoRoute))
            }
            None => tap_flood(
                l,
                me,
                (&mut self.relay_buf, &mut self.relay_len),
                buf,
                len,
                now,
            ),
        }
    }

    /// A frame a shaping limit held back that may leave now: copied into `buf` where
    /// [`Engine::handle_tap_frame`] takes it (`buf[HEADER_LEN..]`); its LAN and length.
    /// Hand it to `handle_tap_frame` next, before any other frame.
    pub fn poll_shaped(&mut self, buf: &mut [u8], now: Instant) -> Option<(LanId, usize)> {
        let room = buf.len().checked_sub(TAG_LEN)?;
        let out = buf.get_mut(HEADER_LEN..room)?;
        self.lans
            .iter_mut()
            .enumerate()
            .find_map(|(i, l)| l.limits.poll_release(out, now).map(|n| (LanId(i), n)))
    }

    /// When the next held frame may leave (None: none is held).
    pub fn poll_shaped_timeout(&self) -> Option<Instant> {
        self.lans
            .iter()
            .filter_map(|l| l.limits.poll_timeout())
            .min()
    }

    /// Handle one datagram from the underlay, opened in place in `buf`. `multicast`: it was
    /// addressed to a multicast group (it then is never passed on).
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        multicast: bool,
        buf: &mut [u8],
        now: Instant,
    ) -> RxAction<'_> {
        self.handle_datagram_at(from, multicast, buf, now, now)
    }

    /// [`Engine::handle_datagram`] for a datagram that reached this host at `arrived` (from
    /// the socket's receive time; before `now` when the daemon was late to read). Rate
    /// limits police frames by when they arrived: a daemon kept off the CPU for 60 ms must
    /// not find 60 ms of arrivals at the limit's rate to be one burst over it.
    pub fn handle_datagram_at(
        &mut self,
        from: SocketAddr,
        multicast: bool,
        buf: &mut [u8],
        now: Instant,
        arrived: Instant,
    ) -> RxAction<'_> {
        self.handle_datagram_opened(from, multicast, buf, now, arrived, PreOpen::No)
    }

    /// [`Engine::handle_datagram_at`] for a datagram another thread may have opened in
    /// place already (`pre`, see `engine::opened`).
    pub fn handle_datagram_opened(
        &mut self,
        from: SocketAddr,
        multicast: bool,
        buf: &mut [u8],
        now: Instant,
        arrived: Instant,
        pre: PreOpen,
    ) -> RxAction<'_> {
        self.rx_arrived = Some(arrived);
        self.rx_pre = pre;
        let header = match Packet::new_checked(&*buf) {
            Ok(p) => *p.header(),
            Err(_) => {
                self.drops.bump(DropReason::BadHeader);
                return RxAction::Drop(DropReason::BadHeader);
            }
        };
        let Some(&lan) = self.lan_index.get(&header.lan) else {
            self.drops.bump(DropReason::UnknownLan);
            return RxAction::Drop(DropReason::UnknownLan);
        };
        // A grant names the host it answers (us) as its sender.
        if header.sender == self.me.id && header.kind != Kind::RelayGrant {
            return RxAction::Drop(self.lans[lan.index()].drop_at(None, DropReason::Loop));
        }
        match header.kind {
            Kind::Hello => self.handle_hello(lan, from, &header, buf, now),
            Kind::Beacon => self.handle_beacon(lan, multicast, &header, buf, now),
            Kind::Data
            | Kind::Flood
            | Kind::Keepalive
            | Kind::Probe
            | Kind::ProbeReply
            | Kind::Fragment
            | Kind::FloodFragment
            | Kind::PmtuProbe
            | Kind::PmtuAck
            | Kind::ServiceState => self.handle_sealed(lan, from, multicast, &header, buf, now),
            // A relay's answer to our request.
            Kind::RelayGrant => self.handle_relay_grant(lan, from, buf, now),
            // Requests and binds go to a relay's ports, never to a host's data port.
            Kind::RelayRequest | Kind::RelayBind => {
                self.drops.bump(DropReason::BadHeader);
                RxAction::Drop(DropReason::BadHeader)
            }
        }
    }

    /// Authenticate a sealed datagram in place: the right peer, session, sequence space and
    /// key, not a replay; then what it proves about the peer (alive, up, its address).
    /// Err: dropped for this reason (counted).
    fn open_sealed(
        &mut self,
        lan: LanId,
        from: SocketAddr,
        multicast: bool,
        h: &Header,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<Opened, DropReason> {
        let l = &mut self.lans[lan.index()];
        // A relay copy from another subnet, to this subnet's forwarder: pass it on, unchanged
        // (still sealed by the original sender), once it has authenticated. Never a copy
        // that came by multicast or from inside this subnet, so nothing loops.
        let group = matches!(h.kind, Kind::Flood | Kind::FloodFragment);
        let relay = group
            && h.flags & FLAG_RELAY != 0
            && !multicast
            && l.plan.forwarder
            && !l.plan.local.is_empty()
            && !l.same_subnet(from.ip());
        if relay {
            if buf.len() > self.relay_buf.len() {
                return Err(l.drop_at(None, DropReason::Oversize));
            }
            self.relay_buf[..buf.len()].copy_from_slice(buf);
            self.relay_len = buf.len();
        }
        // Path MTU probes are padded up to the underlay MTU, whatever the TAP's.
        let largest = if h.kind == Kind::PmtuProbe {
            usize::from(u16::MAX)
        } else {
            HEADER_LEN + l.spec.max_frame + TAG_LEN
        };
        if buf.len() > largest {
            let peer = l.by_id.get(&h.sender).copied();
            return Err(l.drop_unauthenticated(peer, DropReason::Oversize));
        }
        let Some(&pi) = l.by_id.get(&h.sender) else {
            // We may have restarted and lost its session: tell a known address our keys.
            if let Some(pi) = l.peer_by_addr(from) {
                self.queue_hello(lan, pi, now, false);
            }
            return Err(self.lans[lan.index()].drop_at(None, DropReason::NoSession));
        };
        let p = &mut l.peers[pi.index()];
        let Some(s) = p.tunnel.session_mut() else {
            self.queue_hello(lan, pi, now, false);
            return Err(
                self.lans[lan.index()].drop_unauthenticated(Some(pi), DropReason::NoSession)
            );
        };
        let pmtu = matches!(h.kind, Kind::PmtuProbe | Kind::PmtuAck);
        if pmtu != (h.seq & PMTU_SEQ_BIT != 0) {
            // Each sequence space has its own kinds: anything else is forged or broken.
            return Err(
                self.lans[lan.index()].drop_unauthenticated(Some(pi), DropReason::BadHeader)
            );
        }
        let (key, window) = match h.kind {
            Kind::Flood | Kind::FloodFragment => (&s.group_rx, &mut s.group_window),
            Kind::PmtuProbe | Kind::PmtuAck => (&s.rx, &mut s.pmtu_window),
            _ => (&s.rx, &mut s.rx_window),
        };
        let verdict = window.check(h.seq);
        let pre = std::mem::take(&mut self.rx_pre);
        if !pre.under(key) {
            // Opened under keys replaced since: no longer the bytes that arrived.
            return Err(
                self.lans[lan.index()].drop_unauthenticated(Some(pi), DropReason::NoSession)
            );
        }
        // Open before anything is counted against the peer: a spoofed copy of a sequence
        // number must not count as the peer's duplicate. (A replay costs one AEAD open,
        // as any forged datagram does.)
        let opened = match pre {
            PreOpen::No => key.open(h.seq, buf),
            PreOpen::Opened { n, .. } => Some(n),
            PreOpen::Failed { .. } => None,
        };
        let Some(n) = opened else {
            if verdict.is_ok() {
                // Keys out of step (the peer restarted and its hello was lost): re-hello.
                self.queue_hello(lan, pi, now, false);
            }
            return Err(
                self.lans[lan.index()].drop_unauthenticated(Some(pi), DropReason::AuthFailure)
            );
        };
        if !verdict.is_ok() {
            if group {
                // The same flood by two ways (a forwarder change, mixed multicast): once only.
                l.flood.duplicates_suppressed += 1;
            } else if verdict == Replay::Duplicate {
                p.count.rx_seq.duplicate();
            }
            return Err(l.drop_at(Some(pi), DropReason::Replay));
        }
        window.update(h.seq);
        if !group && !pmtu {
            // Data, fragments, keepalives and probes share one counter per direction:
            // gaps are losses.
            p.count.rx_seq.observe(h.seq);
        }
        p.link.last_heard = Some(now);
        let mut changed = false;
        // A relay's socket never replaces a direct path that is up: the peer's side may
        // still be opening through it, but this side has a better way.
        let to_relay = p.reach.is_relay(from) && !p.reach.is_relay(p.addr) && p.tunnel.is_up();
        if p.addr != from && !group && !to_relay && flow_label(h.flags) == 0 {
            // Authenticated and fresh under the pairwise key: the peer roamed (NAT
            // rebinding). Floods prove nothing about the address: a forwarder relays them,
            // nor does labelled data: it comes from one of the peer's flow ports.
            p.addr = from;
            changed = true;
        }
        // Only a holder of our public key can seal under the pairwise key.
        if !group && let Some(e) = p.confirm(lan, now) {
            self.events.push(e);
            changed = true;
        }
        let l = &mut self.lans[lan.index()];
        if changed {
            l.rebuild_flood();
        }
        Ok(Opened { pi, n, relay })
    }

    fn handle_sealed(
        &mut self,
        lan: LanId,
        from: SocketAddr,
        multicast: bool,
        h: &Header,
        buf: &mut [u8],
        now: Instant,
    ) -> RxAction<'_> {
        let Opened { pi, n, relay } = match self.open_sealed(lan, from, multicast, h, buf, now) {
            Ok(o) => o,
            Err(r) => return RxAction::Drop(r),
        };
        match h.kind {
            Kind::Keepalive => return RxAction::Consumed,
            Kind::Probe => {
                return self.handle_probe(lan, pi, &buf[HEADER_LEN..HEADER_LEN + n], now);
            }
            Kind::ProbeReply => {
                return self.handle_probe_reply(lan, pi, &buf[HEADER_LEN..HEADER_LEN + n], now);
            }
            Kind::PmtuProbe => {
                return self.handle_pmtu_probe(lan, pi, &buf[HEADER_LEN..HEADER_LEN + n], now);
            }
            Kind::PmtuAck => {
                return self.handle_pmtu_ack(lan, pi, &buf[HEADER_LEN..HEADER_LEN + n], now);
            }
            Kind::ServiceState => {
                let l = &mut self.lans[lan.index()];
                return match l
                    .services
                    .handle_report(pi, &buf[HEADER_LEN..HEADER_LEN + n])
                {
                    Ok(()) => RxAction::Consumed,
                    Err(_) => RxAction::Drop(l.drop_at(Some(pi), DropReason::Malformed)),
                };
            }
            Kind::Fragment | Kind::FloodFragment => {
                return self.handle_fragment(
                    lan,
                    pi,
                    h,
                    &buf[HEADER_LEN..HEADER_LEN + n],
                    relay,
                    now,
                );
            }
            _ => {}
        }
        let frame = HEADER_LEN..HEADER_LEN + n;
        let m = &mut self.measure;
        let l = &mut self.lans[lan.index()];
        let (dst, _) = macs_of(&buf[frame.clone()]);
        if !l.limits.admit_in(&dst, n, self.rx_arrived.unwrap_or(now)) {
            // Over the limit here; a flood still goes on to this subnet as forwarder.
            return if relay {
                RxAction::Relay {
                    lan,
                    relay: self.relay(lan),
                }
            } else {
                RxAction::Consumed
            };
        }
        let under6 = self.ipv6_underlay;
        if let Err(r) = deliver(l, pi, &mut buf[frame.clone()], m, under6, now) {
            return RxAction::Drop(r);
        }
        sample_rx(m, l, lan, pi, &buf[frame.clone()]);
        if relay {
            l.flood.relayed_frames += 1;
        }
        RxAction::Tap {
            lan,
            peer: pi,
            frame,
            summed: h.kind == Kind::Data && h.flags & FLAG_CHECKSUMS != 0,
            relay: relay.then(|| self.relay(lan)),
        }
    }

    /// A fragment that authenticated: held until its frame is whole, then delivered.
    fn handle_fragment(
        &mut self,
        lan: LanId,
        pi: PeerId,
        h: &Header,
        plain: &[u8],
        relay: bool,
        now: Instant,
    ) -> RxAction<'_> {
        let Some(fh) = FragHeader::parse(plain) else {
            let r = self.lans[lan.index()].drop_at(Some(pi), DropReason::Malformed);
            return if relay {
                RxAction::Relay {
                    lan,
                    relay: self.relay(lan),
                }
            } else {
                RxAction::Drop(r)
            };
        };
        let key = reassembly::Key {
            lan: lan.index(),
            sender: h.sender,
            flood: h.kind == Kind::FloodFragment,
            id: fh.id,
        };
        let verdict = self
            .reassembly
            .push(key, fh, &plain[frag::FRAG_HEADER_LEN..], now);
        self.count_reassembly_drops(Some(lan));
        if verdict == Verdict::Held {
            // The rest may never come: the table's timer reclaims the slot.
            self.deadlines.arm_reassembly(now);
        }
        let done = match verdict {
            Verdict::Complete => {
                let (m, reassembly) = (&mut self.measure, &mut self.reassembly);
                let l = &mut self.lans[lan.index()];
                let (dst, _) = macs_of(reassembly.frame_mut());
                let arrived = self.rx_arrived.unwrap_or(now);
                let ok = l
                    .limits
                    .admit_in(&dst, reassembly.frame_mut().len(), arrived)
                    && deliver(l, pi, reassembly.frame_mut(), m, self.ipv6_underlay, now).is_ok();
                if ok {
                    sample_rx(m, l, lan, pi, reassembly.frame_mut());
                }
                ok
            }
            Verdict::Held | Verdict::Drop(_) => false,
        };
        if relay {
            self.lans[lan.index()].flood.relayed_frames += u64::from(done);
        }
        match (done, relay) {
            (true, _) => RxAction::TapReassembled {
                lan,
                relay: relay.then(|| self.relay(lan)),
            },
            (false, true) => RxAction::Relay {
                lan,
                relay: self.relay(lan),
            },
            (false, false) => RxAction::Consumed,
        }
    }

    /// The frame completed by the last fragment that returned `RxAction::TapReassembled`.
    pub fn reassembled(&self) -> &[u8] {
        self.reassembly.frame()
    }

    /// Add what the reassembly table dropped since last time to the drop counters (of
    /// `lan` if given, else of the host).
    pub(super) fn count_reassembly_drops(&mut self, lan: Option<LanId>) {
        let now = self.reassembly.dropped();
        let was = std::mem::replace(&mut self.reassembly_seen, now);
        let drops = match lan.and_then(|i| self.lans.get_mut(i.index())) {
            Some(l) => &mut l.drops,
            None => &mut self.drops,
        };
        for ((why, n), (_, before)) in now.into_iter().zip(was) {
            let reason = match why {
                FragDrop::Overlap => DropReason::FragmentOverlap,
                FragDrop::Oversize => DropReason::FragmentOversize,
                FragDrop::Timeout => DropReason::FragmentTimeout,
                FragDrop::Evicted => DropReason::FragmentEvicted,
            };
            drops.add(reason, n - before);
        }
    }

    /// The relay copy of the latest flood, to pass on inside this subnet.
    fn relay(&self, lan: LanId) -> Relay<'_> {
        Relay {
            to: self.lans.get(lan.index()).map_or(&[], |l| &l.plan.local),
            datagram: &self.relay_buf[..self.relay_len],
        }
    }
}

/// A sealed datagram that authenticated.
struct Opened {
    /// Its peer.
    pi: PeerId,
    /// Plaintext bytes after the header.
    n: usize,
    /// A relay copy this host passes on as designated forwarder (already copied).
    relay: bool,
}

/// What the data path needs of the engine besides the LAN.
#[derive(Clone, Copy)]
struct Me {
    id: u32,
    ipv6_underlay: bool,
    underlay_mtu: u16,
    /// See `Engine::seal_elsewhere`.
    seal_elsewhere: bool,
    /// See `Engine::spread_flows`.
    flow_ports: u8,
}

/// A frame from the TAP to the one peer behind its destination MAC: sealed in `buf` (or
/// left for the send thread to seal), or cut into fragments when it does not fit the path.
#[inline]
fn tap_unicast<'a>(
    l: &'a mut Lan,
    me: Me,
    i: PeerId,
    src: &Mac,
    (buf, len, summed): (&mut [u8], usize, bool),
    now: Instant,
) -> TapAction<'a> {
    let Some(p) = l.peers.get_mut(i.index()) else {
        return TapAction::Drop(l.drop_vm_frame(src, None, DropReason::NoRoute));
    };
    let Some(s) = p.tunnel.up_session() else {
        return TapAction::Drop(l.drop_vm_frame(src, Some(i), DropReason::NoSession));
    };
    let cap = mss::frame_cap(usize::from(p.path.mtu.current()), me.ipv6_underlay);
    mss::clamp(&mut buf[HEADER_LEN..HEADER_LEN + len], cap);
    let seq = p.tx_seq;
    let label = if p.spread_over(me.flow_ports) {
        l.flows_out.label(
            &buf[HEADER_LEN..HEADER_LEN + len],
            me.flow_ports,
            &mut p.last_label,
            now,
        )
    } else {
        0
    };
    let mut hdr = Header {
        kind: Kind::Data,
        flags: label << FLOW_LABEL_SHIFT,
        lan: l.spec.id,
        sender: me.id,
        seq,
    };
    if len > cap {
        // Too large for one datagram to this peer: cut, each piece sealed on
        // its own pairwise sequence number.
        hdr.kind = Kind::Fragment;
        let sealed = frag::plan(len, cap.saturating_sub(frag::FRAG_HEADER_LEN)).and_then(
            |(count, piece)| {
                let n = seal_fragments(buf, len, piece, count, p.path.frag_id, hdr, &s.tx, seq)?;
                Some((count, piece, n))
            },
        );
        let Some((count, piece, n)) = sealed else {
            return TapAction::Drop(l.drop_vm_frame(src, Some(i), DropReason::Oversize));
        };
        p.path.frag_id = p.path.frag_id.wrapping_add(1);
        p.tx_seq += count as u64;
        p.count.traffic.tx(len);
        p.link.last_sent = Some(now);
        l.frags.frames += 1;
        l.frags.fragments += count as u64;
        return TapAction::Fragments {
            to: p.addr,
            len: n,
            seg: piece + frag::PER_FRAGMENT,
        };
    }
    if summed {
        hdr.flags |= FLAG_CHECKSUMS;
    }
    write_header(buf, &hdr);
    let n = HEADER_LEN + len + TAG_LEN;
    if me.seal_elsewhere && buf.len() >= n {
        p.tx_seq += 1;
        p.count.traffic.tx(len);
        p.link.last_sent = Some(now);
        let to = p.addr;
        // Looked up again for the borrow the action carries out of this function (the
        // session was there a moment ago).
        return match l.peers[i.index()].tunnel.up_session() {
            Some(s) => TapAction::Unsealed(to, n, Sealer(&s.tx)),
            None => TapAction::Drop(DropReason::NoSession),
        };
    }
    let Some(n) = s.tx.seal(seq, buf, len) else {
        return TapAction::Drop(l.drop_vm_frame(src, Some(i), DropReason::Oversize));
    };
    p.tx_seq += 1;
    p.count.traffic.tx(len);
    p.link.last_sent = Some(now);
    TapAction::Unicast(p.addr, n)
}

/// A frame from the TAP to everyone (broadcast, multicast, unknown unicast): sealed once
/// under the group key in `buf`, plus a relay copy for other subnets' forwarders. The
/// LAN's flood plan has at least one target (the caller checks).
#[inline]
fn tap_flood<'a>(
    l: &'a mut Lan,
    me: Me,
    (relay_buf, relay_len): (&'a mut [u8], &'a mut usize),
    buf: &mut [u8],
    len: usize,
    now: Instant,
) -> TapAction<'a> {
    // What fits every flood target in one datagram: the smallest path MTU of
    // the LAN's tunnels, looked up only for a SYN or a frame larger than any
    // path can be.
    let (base_mtu, v6) = (pmtu::BASE.min(me.underlay_mtu), me.ipv6_underlay);
    let base = mss::frame_cap(usize::from(base_mtu), v6);
    let flood_cap = || {
        let mtu = l
            .peers
            .iter()
            .filter(|p| p.tunnel.is_up())
            .map(|p| p.path.mtu.current())
            .min()
            .unwrap_or(base_mtu);
        mss::frame_cap(usize::from(mtu), v6)
    };
    mss::clamp_with(&mut buf[HEADER_LEN..HEADER_LEN + len], flood_cap);
    let cap = if len <= base { base } else { flood_cap() };
    // The relay copy carries the RELAY flag, which the AEAD covers: it is
    // sealed on its own under the next group sequence number(s).
    let with_relay = !l.plan.relay.is_empty();
    if with_relay {
        let room = relay_buf.len();
        if room < HEADER_LEN + len + TAG_LEN {
            return TapAction::Drop(l.drop_at(None, DropReason::Oversize));
        }
        relay_buf[HEADER_LEN..HEADER_LEN + len].copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + len]);
    }
    let seq = l.group_seq;
    let mut hdr = Header {
        kind: Kind::Flood,
        flags: 0,
        lan: l.spec.id,
        sender: me.id,
        seq,
    };
    *relay_len = 0;
    let (n, seg, used) = if len > cap {
        hdr.kind = Kind::FloodFragment;
        let Some((count, piece)) = frag::plan(len, cap.saturating_sub(frag::FRAG_HEADER_LEN))
        else {
            return TapAction::Drop(l.drop_at(None, DropReason::Oversize));
        };
        let id = l.group_frag_id;
        let Some(n) = seal_fragments(buf, len, piece, count, id, hdr, &l.group_tx, seq) else {
            return TapAction::Drop(l.drop_at(None, DropReason::Oversize));
        };
        if with_relay {
            hdr.flags = FLAG_RELAY;
            let first = seq + count as u64;
            *relay_len = seal_fragments(relay_buf, len, piece, count, id, hdr, &l.group_tx, first)
                .unwrap_or(0);
        }
        l.group_frag_id = id.wrapping_add(1);
        l.frags.frames += 1;
        l.frags.fragments += count as u64;
        (n, piece + frag::PER_FRAGMENT, count as u64)
    } else {
        write_header(buf, &hdr);
        let Some(n) = l.group_tx.seal(seq, buf, len) else {
            return TapAction::Drop(l.drop_at(None, DropReason::Oversize));
        };
        if with_relay {
            hdr.seq = seq + 1;
            hdr.flags = FLAG_RELAY;
            write_header(relay_buf, &hdr);
            *relay_len = l.group_tx.seal(seq + 1, relay_buf, len).unwrap_or(0);
        }
        (n, n, 1)
    };
    l.group_seq += if with_relay { 2 * used } else { used };
    l.flood.frames += 1;
    let group = usize::from(l.plan.multicast);
    l.flood.multicast_datagrams += group as u64;
    l.flood.unicast_datagrams += (l.plan.local.len() - group) as u64;
    l.flood.relay_datagrams += l.plan.relay.len() as u64;
    for &i in &l.flood_members {
        if let Some(p) = l.peers.get_mut(i.index()) {
            p.count.traffic.tx(len);
            p.link.last_sent = Some(now);
        }
    }
    TapAction::Flood {
        to: &l.plan.local,
        len: n,
        seg,
        relay_to: &l.plan.relay,
        relay: &relay_buf[..*relay_len],
    }
}

/// Seal the frame in `buf[HEADER_LEN..HEADER_LEN + len]` as `count` fragments of `piece`
/// bytes in place (see `frag::lay_out`), under `key` from sequence `seq` on; the bytes
/// they take. None if the buffer is too small.
#[allow(clippy::too_many_arguments)]
fn seal_fragments(
    buf: &mut [u8],
    len: usize,
    piece: usize,
    count: usize,
    frame_id: u32,
    mut hdr: Header,
    key: &SealKey,
    seq: u64,
) -> Option<usize> {
    if !frag::lay_out(buf, len, piece, count, frame_id) {
        return None;
    }
    let stride = piece + frag::PER_FRAGMENT;
    let mut end = 0;
    for k in 0..count {
        let at = k * stride;
        hdr.seq = seq + k as u64;
        let b = buf.get_mut(at..)?;
        write_header(b, &hdr);
        end = at + key.seal(hdr.seq, b, frag::plain_len(len, piece, k))?;
    }
    Some(end)
}

pub(super) fn write_header(buf: &mut [u8], h: &Header) {
    if let Some(b) = buf.first_chunk_mut::<HEADER_LEN>() {
        h.emit(b);
    }
}

/// A frame that authenticated from peer `pi`: learn its source, count it, clamp the MSS
/// of a SYN to the path back to that peer. Err: drop it for this reason (counted).
fn deliver(
    l: &mut Lan,
    pi: PeerId,
    frame: &mut [u8],
    m: &Measure,
    ipv6_underlay: bool,
    now: Instant,
) -> Result<(), DropReason> {
    let n = frame.len();
    if n < ETHERNET_HEADER_LEN {
        return Err(l.drop_at(Some(pi), DropReason::Malformed));
    }
    let (_, src) = macs_of(frame);
    if is_group(&src) {
        return Err(l.drop_at(Some(pi), DropReason::Malformed));
    }
    l.macs.learn(src, Location::Peer(pi), now);
    let p = &mut l.peers[pi.index()];
    p.count.traffic.rx(n);
    // The peer clamps what it sends; clamping here too covers a peer that does not.
    mss::clamp(
        frame,
        mss::frame_cap(usize::from(p.path.mtu.current()), ipv6_underlay),
    );
    if m.accounting.flows {
        l.count_rx(frame, m.second());
    }
    Ok(())
}

/// sFlow: a frame from the tunnel of `pi` on its way to the TAP (when sampling is on).
#[inline]
fn sample_rx(m: &mut Measure, l: &mut Lan, lan: LanId, pi: PeerId, frame: &[u8]) {
    if let Some(s) = m.sampler.as_mut()
        && s.tick(&mut l.measure.sampling)
    {
        let peer = l.peers[pi.index()].id.unwrap_or(pi.index() as u32);
        let (dst, _) = macs_of(frame);
        s.take(
            lan,
            &mut l.measure.sampling,
            frame,
            sampling::tunnel_index(lan, peer),
            sampling::vm_index(lan, &dst),
        );
    }
}

/// Destination and source MAC of a frame of at least 12 bytes.
#[inline]
fn macs_of(frame: &[u8]) -> (Mac, Mac) {
    let mut d = [0u8; 6];
    let mut s = [0u8; 6];
    if frame.len() >= 12 {
        d.copy_from_slice(&frame[0..6]);
        s.copy_from_slice(&frame[6..12]);
    }
    (d, s)
}
