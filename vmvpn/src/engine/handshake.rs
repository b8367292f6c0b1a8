//! The handshake: hellos under an HMAC keyed from the LAN secret, and the session they
//! set up (see the engine's module doc and `PROTOCOL.md`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry::DropReason;
use tracing::info;

use super::peer::Peer;
use super::pmtu::PathMtu;
use super::transmit::Outgoing;
use super::{Engine, LanId, PeerId, PeerSource, RxAction};
use crate::proto::crypto::SealKey;
use crate::proto::replay::ReplayWindow;
use crate::proto::{
    FLAG_SPREADS, HEADER_LEN, HELLO_BODY_LEN, HELLO_LEN, Header, Hello, Kind, NAME_LEN,
};
use x25519_dalek::StaticSecret;

/// Hellos answer at most this often per peer, unless the session changed.
const HELLO_REPLY_MIN: Duration = Duration::from_millis(200);

/// This host as its hellos present it.
pub(crate) struct Me {
    pub(crate) id: u32,
    /// The name, as the hello's fixed-size field.
    pub(crate) name: [u8; NAME_LEN],
    /// This run's X25519 key pair.
    pub(crate) secret: StaticSecret,
    pub(crate) public: [u8; 32],
    /// This run's start (ns since the Unix epoch): a newer start means new keys.
    pub(crate) start_ns: u64,
}

/// The keys and replay windows of one run of a peer.
pub(crate) struct Session {
    pub(crate) peer_public: [u8; 32],
    /// Shared with the send thread, which seals the data datagrams (`[host] threads`).
    pub(crate) tx: Arc<SealKey>,
    /// Shared with the open thread through `RxKeys` snapshots (`[host] threads`).
    pub(crate) rx: Arc<SealKey>,
    pub(crate) rx_window: ReplayWindow,
    pub(crate) group_rx: Arc<SealKey>,
    pub(crate) group_window: ReplayWindow,
    /// Path MTU probes and acks: a sequence space of their own.
    pub(crate) pmtu_window: ReplayWindow,
}

impl Engine {
    pub(super) fn handle_hello(
        &mut self,
        lan: LanId,
        from: SocketAddr,
        h: &Header,
        buf: &[u8],
        now: Instant,
    ) -> RxAction<'_> {
        let l = &mut self.lans[lan.index()];
        let known = l
            .by_id
            .get(&h.sender)
            .copied()
            .or_else(|| l.peer_by_addr(from));
        let Ok(hello) = Hello::parse(&buf[HEADER_LEN..]) else {
            return RxAction::Drop(l.drop_unauthenticated(known, DropReason::BadHeader));
        };
        if !l
            .keys
            .verify_hello(&buf[..HEADER_LEN], &hello.signed_body(), &hello.mac)
        {
            return RxAction::Drop(l.drop_unauthenticated(known, DropReason::AuthFailure));
        }
        // Authentic from here on: it holds the LAN secret.
        let pi = match l.by_id.get(&h.sender) {
            Some(&i) => i,
            // A peer not yet heard from, at its address, at another of its candidates
            // (behind NAT, its hellos come from its public mapping), or listed with
            // this id (behind a NAT that changes ports, from an address nobody knew).
            None => match l
                .peers
                .iter()
                .position(|p| p.addr == from && p.id.is_none())
                .or_else(|| {
                    l.peers.iter().position(|p| {
                        p.id.is_none() && (p.reach.knows(from) || p.reach.host_id == Some(h.sender))
                    })
                }) {
                Some(i) => PeerId::at(i),
                None => {
                    l.peers.push(Peer::new(
                        from,
                        PeerSource::Hello,
                        self.underlay_mtu,
                        self.seq_floor,
                    ));
                    PeerId::at(l.peers.len() - 1)
                }
            },
        };
        let p = &mut l.peers[pi.index()];
        let same_key = p
            .tunnel
            .session()
            .is_some_and(|s| s.peer_public == hello.public);
        let mut new_session = false;
        let had_session = p.tunnel.session().is_some();
        if same_key && had_session && hello.echo == [0; 32] {
            // The same run of the peer, without our session: it dropped us and listed us
            // again, or left the LAN and joined again. Its numbers go on above the old
            // ones (`nonces`), the replay window with them; only the loss count, which
            // would take the jump for lost datagrams, starts over.
            p.count.rx_seq.restart();
        }
        if !same_key {
            if had_session && h.seq <= p.link.peer_start {
                // An older hello (replayed, or delayed): never go back to old keys.
                return RxAction::Drop(l.drop_at(Some(pi), DropReason::Replay));
            }
            let Some((tx, rx)) = l.keys.session_keys(
                l.spec.id,
                (self.me.id, &self.me.secret, &self.me.public),
                (h.sender, &hello.public),
            ) else {
                return RxAction::Drop(l.drop_at(Some(pi), DropReason::AuthFailure));
            };
            let group = l.keys.group_key(l.spec.id, h.sender, &hello.public);
            let session = Session {
                peer_public: hello.public,
                tx: Arc::new(SealKey::with_cipher(&tx, l.spec.cipher)),
                rx: Arc::new(SealKey::with_cipher(&rx, l.spec.cipher)),
                rx_window: ReplayWindow::default(),
                group_rx: Arc::new(SealKey::with_cipher(&group, l.spec.cipher)),
                group_window: ReplayWindow::default(),
                pmtu_window: ReplayWindow::default(),
            };
            // A new run of the peer, maybe elsewhere: find its path again.
            p.path.mtu = PathMtu::new(self.underlay_mtu);
            p.link.peer_start = h.seq;
            // A new run of the peer numbers from 0 again.
            p.count.rx_seq.restart();
            // A tunnel that was up goes down: the peer's old run and its keys are gone.
            if let Some(e) = p.rekey(lan, session) {
                self.events.push(e);
            }
            self.rx_keys_epoch += 1;
            new_session = true;
        }
        if p.id != Some(h.sender) {
            p.id = Some(h.sender);
            l.by_id.insert(h.sender, pi);
        }
        p.name = hello.name_str();
        // A build that predates flow ports would take their address for the peer's.
        p.spreads = h.flags & FLAG_SPREADS != 0;
        p.link.last_heard = Some(now);
        p.reach.note_answer(from, now);
        // A relay's socket never replaces a direct path that is up (see `relays`).
        let to_relay = p.reach.is_relay(from) && !p.reach.is_relay(p.addr) && p.tunnel.is_up();
        if p.addr != from && !to_relay {
            p.addr = from;
        }
        if new_session && had_session {
            info!(lan = %l.spec.name, peer = %from, name = %p.name, "peer (re)started: new session keys");
        }
        if hello.echo == self.me.public
            && let Some(e) = p.confirm(lan, now)
        {
            info!(lan = %l.spec.name, peer = %from, name = %p.name, "tunnel up");
            self.events.push(e);
        }
        let needs_reply = new_session || hello.echo != self.me.public;
        l.rebuild_flood();
        if needs_reply {
            self.queue_hello(lan, pi, now, new_session);
        }
        RxAction::Consumed
    }

    pub(super) fn queue_hello(&mut self, lan: LanId, pi: PeerId, now: Instant, force: bool) {
        let l = &mut self.lans[lan.index()];
        let Some(p) = l.peers.get_mut(pi.index()) else {
            return;
        };
        if !force
            && p.link
                .last_hello
                .is_some_and(|t| now.saturating_duration_since(t) < HELLO_REPLY_MIN)
        {
            return;
        }
        p.link.last_hello = Some(now);
        let echo = p.tunnel.session().map_or([0u8; 32], |s| s.peer_public);
        let hdr = Header {
            kind: Kind::Hello,
            // Labelled data from a peer's flow ports is taken here (`open_sealed`).
            flags: FLAG_SPREADS,
            lan: l.spec.id,
            sender: self.me.id,
            seq: self.me.start_ns,
        };
        let hdr_bytes = hdr.to_bytes();
        let mut hello = Hello {
            public: self.me.public,
            echo,
            name: self.me.name,
            mac: [0; 32],
        };
        hello.mac = l.keys.hello_mac(&hdr_bytes, &hello.signed_body());
        let mut out = Outgoing {
            to: p.addr,
            len: HELLO_LEN,
            buf: [0; HELLO_LEN],
        };
        out.buf[..HEADER_LEN].copy_from_slice(&hdr_bytes);
        let body: &mut [u8; HELLO_BODY_LEN] = match (&mut out.buf[HEADER_LEN..]).try_into() {
            Ok(b) => b,
            Err(_) => return,
        };
        hello.emit(body);
        let up = p.tunnel.is_up();
        let relayed = up && p.reach.is_relay(p.addr);
        if !relayed {
            p.reach.note_hello(p.addr, now);
        }
        // Until one answers, every candidate gets the same hello: behind NAT, ours open
        // our mapping for its hellos, and the first authentic answer wins. Through a
        // relay, the direct candidates get one now and then, so a path that opens (a NAT
        // rebooted into another mode, a firewall rule added) is taken: whichever side
        // hears the other there moves to it (`handle_hello`).
        let also: Vec<SocketAddr> = match (up, relayed) {
            (false, _) => p.reach.others(p.addr).collect(),
            (true, true) => p
                .reach
                .others(p.addr)
                .filter(|a| !p.reach.is_relay(*a))
                .collect(),
            (true, false) => Vec::new(),
        };
        for to in also {
            if relayed {
                p.reach.note_retry(to, now);
            } else {
                p.reach.note_hello(to, now);
            }
            self.out.push_back(Outgoing {
                to,
                len: out.len,
                buf: out.buf,
            });
        }
        self.out.push_back(out);
    }
}
