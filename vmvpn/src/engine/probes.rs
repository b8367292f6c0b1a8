//! Probes inside every tunnel: RTT, loss each way and health from the periodic ones,
//! `vmvpn ping` on demand, and the path MTU probes and acks (their search is `pmtu`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use telemetry::DropReason;

use super::events::{Event, PingSent, Pong};
use super::macdb::{Location, Mac};
use super::peer::Peer;
use super::{Engine, LanId, PeerId, RxAction};
use crate::proto::Kind;
use crate::proto::probe::{PmtuRepr, ProbeReplyRepr, ProbeRepr};
use crate::status::Health;

/// Probe ids with this bit set are on-demand (`vmvpn ping`), not the periodic ones.
pub(super) const PING_BIT: u32 = 0x8000_0000;
/// Probes per peer.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Probes per second for all peers together (1000 peers: one probe each every 5 s).
pub(super) const PROBE_BUDGET: f64 = 200.0;
/// Probes in a row without an answer before a peer counts as down (with nothing else heard).
const DOWN_AFTER_PROBES: u32 = 3;

impl Engine {
    /// A probe from a peer: reflect it at once. The reply leaves in this poll round, so the
    /// hold time is zero. It also carries what we received of the prober's traffic and
    /// what we count as lost, so the prober knows the loss in its own direction.
    pub(super) fn handle_probe(
        &mut self,
        lan: LanId,
        pi: PeerId,
        body: &[u8],
        now: Instant,
    ) -> RxAction<'_> {
        let l = &mut self.lans[lan.index()];
        let Ok(probe) = ProbeRepr::parse(body) else {
            return RxAction::Drop(l.drop_at(Some(pi), DropReason::Malformed));
        };
        let seen = l.peers[pi.index()].count.rx_seq.stats();
        let reply = ProbeReplyRepr {
            id: probe.id,
            sent_ns: probe.sent_ns,
            hold_ns: 0,
            received: seen.received,
            lost: seen.lost,
        };
        self.queue_sealed(lan, pi, Kind::ProbeReply, &reply.emit(), now);
        RxAction::Consumed
    }

    /// The answer to one of our probes: a pong for `vmvpn ping`, or an RTT sample and the
    /// loss the peer saw from us.
    pub(super) fn handle_probe_reply(
        &mut self,
        lan: LanId,
        pi: PeerId,
        body: &[u8],
        now: Instant,
    ) -> RxAction<'_> {
        let Ok(r) = ProbeReplyRepr::parse(body) else {
            return RxAction::Drop(self.lans[lan.index()].drop_at(Some(pi), DropReason::Malformed));
        };
        let rtt = self
            .ts(now)
            .saturating_sub(r.sent_ns)
            .saturating_sub(r.hold_ns);
        if r.id & PING_BIT != 0 {
            self.events.push(Event::Pong(Pong {
                id: r.id,
                rtt_ns: rtt,
            }));
            return RxAction::Consumed;
        }
        let p = &mut self.lans[lan.index()].peers[pi.index()];
        let seen = (r.received, r.lost);
        if seen.1 > p.probe.tx_seen.1 {
            // The peer lost some of ours: see whether the path shrank.
            p.path.mtu.on_loss(now);
        }
        p.probe.tx_seen = seen;
        // Only replies to our latest probe count (late replies would skew it).
        if r.id == p.probe.id && p.probe.answered_id != r.id {
            p.probe.rtt.record(rtt);
            p.probe.answered += 1;
            p.probe.answered_id = r.id;
            p.probe.unanswered = 0;
        }
        RxAction::Consumed
    }

    /// A path MTU probe: acknowledge the size it was padded to; its arrival proves the path.
    pub(super) fn handle_pmtu_probe(
        &mut self,
        lan: LanId,
        pi: PeerId,
        body: &[u8],
        now: Instant,
    ) -> RxAction<'_> {
        let Ok(m) = PmtuRepr::parse_probe(body) else {
            return RxAction::Drop(self.lans[lan.index()].drop_at(Some(pi), DropReason::Malformed));
        };
        self.queue_pmtu(lan, pi, Kind::PmtuAck, &m.emit(), now);
        RxAction::Consumed
    }

    /// The ack of one of our path MTU probes.
    pub(super) fn handle_pmtu_ack(
        &mut self,
        lan: LanId,
        pi: PeerId,
        body: &[u8],
        now: Instant,
    ) -> RxAction<'_> {
        let l = &mut self.lans[lan.index()];
        let Ok(m) = PmtuRepr::parse_ack(body) else {
            return RxAction::Drop(l.drop_at(Some(pi), DropReason::Malformed));
        };
        l.peers[pi.index()].path.mtu.on_ack(m.size, now);
        RxAction::Consumed
    }

    /// The next periodic probe to a peer.
    pub(super) fn queue_probe(&mut self, lan: LanId, pi: PeerId, now: Instant) {
        let ts = self.ts(now);
        let Some(p) = self.lans[lan.index()].peer(pi) else {
            return;
        };
        // The previous probe got no answer (yet): one more unanswered in a row.
        if p.probe.sent > 0 && p.probe.answered_id != p.probe.id {
            p.probe.unanswered += 1;
        }
        p.probe.id = p.probe.id.wrapping_add(1) & !PING_BIT;
        p.probe.sent_at = Some(now);
        p.probe.sent += 1;
        let body = ProbeRepr {
            id: p.probe.id,
            sent_ns: ts,
        };
        self.queue_sealed(lan, pi, Kind::Probe, &body.emit(), now);
    }

    /// Send a `vmvpn ping` probe to a target: a peer's name, id or underlay address
    /// (`ip` or `ip:port`), or a VM's IP address (the probe goes to the peer behind it).
    /// The answer comes as [`Event::Pong`].
    pub fn ping(&mut self, target: &str, now: Instant) -> Result<PingSent, String> {
        let (li, pi, via_vm) = self.resolve(target, now)?;
        let l = &self.lans[li.index()];
        let p = &l.peers[pi.index()];
        if !p.tunnel.is_up() {
            return Err(format!(
                "tunnel to {} ({}) on {} is not up (state: handshaking)",
                if p.name.is_empty() { "?" } else { &p.name },
                p.addr,
                l.spec.name
            ));
        }
        self.ping_seq = self.ping_seq.wrapping_add(1);
        let id = PING_BIT | (self.ping_seq & !PING_BIT);
        let body = ProbeRepr {
            id,
            sent_ns: self.ts(now),
        };
        self.queue_sealed(li, pi, Kind::Probe, &body.emit(), now);
        let l = &self.lans[li.index()];
        let p = &l.peers[pi.index()];
        Ok(PingSent {
            id,
            lan: l.spec.name.clone(),
            peer: p.name.clone(),
            address: p.addr,
            via_vm: via_vm.map(|m| common::text::mac(&m)),
        })
    }

    fn resolve(&self, target: &str, now: Instant) -> Result<(LanId, PeerId, Option<Mac>), String> {
        let t = target.trim();
        // A peer by name, id or address.
        for (li, l) in self.lans.iter().enumerate() {
            for (pi, p) in l.peers.iter().enumerate() {
                let by_addr = t.parse::<SocketAddr>().is_ok_and(|a| a == p.addr)
                    || t.parse::<IpAddr>().is_ok_and(|ip| ip == p.addr.ip());
                let by_name = !p.name.is_empty() && p.name == t;
                let by_id = p.id.is_some_and(|id| t.parse::<u32>() == Ok(id));
                if by_addr || by_name || by_id {
                    return Ok((LanId(li), PeerId::at(pi), None));
                }
            }
        }
        // A VM by its IP: the MAC from the VM table, the peer from the MAC database.
        if let Ok(ip) = t.parse::<IpAddr>() {
            for (li, l) in self.lans.iter().enumerate() {
                let Some(mac) = l.measure.vms.by_ip(ip) else {
                    continue;
                };
                return match l.macs.lookup(&mac, now) {
                    Some(Location::Peer(pi)) => Ok((LanId(li), pi, Some(mac))),
                    Some(Location::Local) => Err(format!(
                        "{ip} is VM {} on this host (no tunnel to probe)",
                        common::text::mac(&mac)
                    )),
                    None => Err(format!(
                        "{ip} is VM {} but its MAC has aged out; send it some traffic first",
                        common::text::mac(&mac)
                    )),
                };
            }
        }
        Err(format!(
            "no peer named {t:?} and no VM seen with that address (try a peer name, id or \
             underlay address from `vmvpn status`, or a VM IP from `vmvpn vms`)"
        ))
    }
}

impl Peer {
    /// How a tunnel is doing, from its probes: unknown before any answer, down after
    /// `DOWN_AFTER_PROBES` unanswered probes in a row with nothing else heard for as long,
    /// degraded with any unanswered in a row or loss over 1 % either way, else ok.
    pub(super) fn health(&self, now: Instant) -> Health {
        if self.probe.answered == 0 {
            return Health::Unknown;
        }
        if !self.tunnel.is_up() {
            // It answered before and has gone silent for `dead_after`.
            return Health::Down;
        }
        let quiet = self
            .link
            .last_heard
            .is_none_or(|h| now.saturating_duration_since(h) >= PROBE_INTERVAL * DOWN_AFTER_PROBES);
        // The latest probe counts as lost once it is a probe interval late.
        let overdue = self.probe.answered_id != self.probe.id
            && self
                .probe
                .sent_at
                .is_some_and(|t| now.saturating_duration_since(t) >= PROBE_INTERVAL);
        let lost_in_row = self.probe.unanswered + u32::from(overdue);
        if lost_in_row >= DOWN_AFTER_PROBES && quiet {
            return Health::Down;
        }
        let lossy = self.count.rx_seq.stats().loss_ratio() > 0.01
            || matches!(self.probe.tx_seen, (rx, lost) if lost * 100 > rx + lost);
        if lost_in_row > 0 || lossy {
            Health::Degraded
        } else {
            Health::Ok
        }
    }
}
