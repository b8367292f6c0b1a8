//! Asking a relay (`[host] relays`) for a pair socket when no path opens: both hosts
//! behind NATs that change ports, so neither's hellos reach the other's mapping.
//!
//! When a peer's handshake has sent hellos for [`RELAY_AFTER`] without an answer, and its
//! host id is known (the relay pairs hosts by id), a request goes to a relay, every
//! [`RELAY_RETRY`] to the next one until one grants. The grant names the pair socket:
//! it becomes one more candidate (marked relay), gets a bind at once and then every
//! keepalive interval while the tunnel uses it or is still opening, and gets the same
//! hellos as the others. The first authentic answer wins as usual, so a direct path that
//! opens at the same time is taken rather than the relay; a relay address never replaces
//! a direct one while the tunnel is up (`handshake`, `datapath`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use telemetry::DropReason;
use tracing::{debug, info};

use super::transmit::Outgoing;
use super::{Engine, LanId, PeerId, RxAction};
use crate::proto::relay::{RELAY_LEN, RelayKey, RelayMsg};
use crate::proto::{HELLO_LEN, Kind};

/// A handshake with no answer for this long asks a relay.
pub const RELAY_AFTER: Duration = Duration::from_secs(3);
/// A request not granted in this long goes to the next relay.
pub const RELAY_RETRY: Duration = Duration::from_secs(5);
/// While relayed, hellos go to the direct candidates this often.
pub const DIRECT_RETRY: Duration = Duration::from_secs(5);
/// A relayed peer silent this long (probes go every second) gets a bind at once: our
/// NAT may have given us a new mapping (a flush, a reboot), which the relay learns only
/// from a bind.
pub const REBIND_SILENT: Duration = Duration::from_millis(1500);
/// At most one such bind in this long.
pub const REBIND_EVERY: Duration = Duration::from_secs(1);

/// The relay key of a LAN, from its secret through the bulletin's verifier (what a relay
/// that is not a member is given: `vmvpn verifier`).
pub(crate) fn relay_key_of(secret: &crate::proto::crypto::LanSecret) -> RelayKey {
    RelayKey::from_verifier(&bulletin::proof::Verifier::from_secret(&secret.0).0)
}

impl Engine {
    /// The relays to ask when no path opens (`[host] relays`; empty: none).
    pub fn set_relays(&mut self, relays: Vec<SocketAddr>) {
        self.relays = relays;
    }

    /// A relay message's sequence: the wall clock in ns, strictly rising within a run
    /// (two in one instant still differ) and across runs (a new run starts later).
    fn relay_seq(&mut self, now: Instant) -> u64 {
        let clock = self.me.start_ns.saturating_add(self.ts(now));
        self.relay_seq = clock.max(self.relay_seq + 1);
        self.relay_seq
    }

    /// `msg` to `to`, MAC'd under its LAN's relay key.
    fn queue_relay(&mut self, lan: LanId, to: SocketAddr, msg: RelayMsg) {
        let mut out = Outgoing {
            to,
            len: RELAY_LEN,
            buf: [0; HELLO_LEN],
        };
        out.buf[..RELAY_LEN].copy_from_slice(&msg.emit(&self.lans[lan.index()].relay_key));
        self.out.push_back(out);
    }

    /// The peers' job, per peer: ask a relay while no path opens, bind to its socket
    /// while it is in use or may be.
    pub(super) fn run_relay(&mut self, lan: LanId, pi: PeerId, now: Instant) {
        if self.relays.is_empty() {
            return;
        }
        let l = &self.lans[lan.index()];
        let Some(p) = l.peers.get(pi.index()) else {
            return;
        };
        let Some(peer_id) = p.id.or(p.reach.host_id) else {
            return;
        };
        let up = p.tunnel.is_up();
        let ask = p.reach.relay;
        let relay_addr = p.reach.relay_addr();
        let on_relay = p.reach.is_relay(p.addr);
        let silent = p
            .link
            .last_heard
            .is_some_and(|h| now.saturating_duration_since(h) >= REBIND_SILENT);
        let opening = p
            .reach
            .opening_since()
            .is_some_and(|t| now.saturating_duration_since(t) >= RELAY_AFTER);
        let lan_id = l.spec.id;
        // Bind while the pair socket is the path, or the path is still opening; at once
        // when the path went silent.
        let since_bind = ask.bound.map(|b| now.saturating_duration_since(b));
        let due = since_bind.is_none_or(|d| {
            d >= self.timers.keepalive_interval || (up && silent && d >= REBIND_EVERY)
        });
        if let Some(at) = relay_addr
            && (!up || on_relay)
            && due
        {
            self.bind_relay(lan, pi, at, peer_id, now);
        }
        // Relayed: keep trying the direct candidates, to leave the relay when one opens.
        if up
            && on_relay
            && ask
                .retried
                .is_none_or(|t| now.saturating_duration_since(t) >= DIRECT_RETRY)
        {
            if let Some(p) = self.lans[lan.index()].peers.get_mut(pi.index()) {
                p.reach.relay.retried = Some(now);
            }
            self.queue_hello(lan, pi, now, true);
        }
        let due = ask
            .asked
            .is_none_or(|t| now.saturating_duration_since(t) >= RELAY_RETRY);
        if up || relay_addr.is_some() || !opening || !due {
            return;
        }
        let to = self.relays[ask.requests as usize % self.relays.len()];
        let seq = self.relay_seq(now);
        let msg = RelayMsg {
            kind: Kind::RelayRequest,
            lan: lan_id,
            sender: self.me.id,
            seq,
            peer: peer_id,
            port: 0,
        };
        self.queue_relay(lan, to, msg);
        let l = &mut self.lans[lan.index()];
        if let Some(p) = l.peers.get_mut(pi.index()) {
            p.reach.relay.asked = Some(now);
            p.reach.relay.requests += 1;
            debug!(lan = %l.spec.name, peer = %p.name, relay = %to, "no path opened: asking a relay");
        }
    }

    fn bind_relay(&mut self, lan: LanId, pi: PeerId, at: SocketAddr, peer_id: u32, now: Instant) {
        let seq = self.relay_seq(now);
        let l = &mut self.lans[lan.index()];
        let msg = RelayMsg {
            kind: Kind::RelayBind,
            lan: l.spec.id,
            sender: self.me.id,
            seq,
            peer: peer_id,
            port: at.port(),
        };
        if let Some(p) = l.peers.get_mut(pi.index()) {
            p.reach.relay.bound = Some(now);
        }
        self.queue_relay(lan, at, msg);
    }

    /// A datagram of type 14 (a grant) from `from`: from one of our relays, for us, under
    /// the LAN's relay key, for a peer we have.
    pub(super) fn handle_relay_grant(
        &mut self,
        lan: LanId,
        from: SocketAddr,
        buf: &[u8],
        now: Instant,
    ) -> RxAction<'_> {
        let l = &mut self.lans[lan.index()];
        if !self.relays.contains(&from) {
            return RxAction::Drop(l.drop_unauthenticated(None, DropReason::AuthFailure));
        }
        let Ok(Some((msg, mac))) = RelayMsg::parse(buf) else {
            return RxAction::Drop(l.drop_unauthenticated(None, DropReason::BadHeader));
        };
        if msg.kind != Kind::RelayGrant
            || msg.sender != self.me.id
            || msg.port == 0
            || !msg.verify(&l.relay_key, &mac)
        {
            return RxAction::Drop(l.drop_unauthenticated(None, DropReason::AuthFailure));
        }
        let Some(i) = l.by_id.get(&msg.peer).map(|p| p.index()).or_else(|| {
            l.peers
                .iter()
                .position(|p| p.id.is_none() && p.reach.host_id == Some(msg.peer))
        }) else {
            // A peer gone since it asked: nothing to do.
            return RxAction::Consumed;
        };
        let at = SocketAddr::new(from.ip(), msg.port);
        let p = &mut l.peers[i];
        if p.reach.add_relay(at) {
            info!(lan = %l.spec.name, peer = %p.name, relay = %at, "relay granted a pair socket: trying it");
        }
        let pi = PeerId::at(i);
        self.bind_relay(lan, pi, at, msg.peer, now);
        // A hello through it at once: the peer may have bound already.
        self.queue_hello(lan, pi, now, true);
        RxAction::Consumed
    }
}
