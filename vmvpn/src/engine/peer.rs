//! One peer of one LAN: who it is, its tunnel (`tunnel.rs`), where it can be reached
//! (`reach.rs`: its candidate addresses), and three sub-states that change for different
//! reasons: liveness (what was heard and sent when), probing (RTT, loss each way), and
//! the path (its MTU, fragment ids). Counters sit apart from all of them.

use std::net::SocketAddr;
use std::time::Instant;

use telemetry::{DropCounters, RttEstimator, SeqTracker, Series, TrafficCounters};

use super::PeerSource;
use super::pmtu::PathMtu;
use super::reach::Reach;
use super::tunnel::Tunnel;
use crate::status::PathKind;

pub(crate) struct Peer {
    pub(crate) id: Option<u32>,
    pub(crate) name: String,
    /// Where it answers now (datagrams go there).
    pub(crate) addr: SocketAddr,
    pub(crate) source: PeerSource,
    /// The address it was listed with, and the other candidates.
    pub(crate) reach: Reach,
    /// Prefix length of its underlay subnet, when the bulletin said (else ours is assumed).
    pub(crate) prefix: Option<u8>,
    pub(crate) tunnel: Tunnel,
    /// Its latest hello carried `FLAG_SPREADS`: it takes data from our flow ports.
    pub(crate) spreads: bool,
    /// The flow label the last new flow to it was given (`spread`).
    pub(crate) last_label: u8,
    /// Our send counter to it: never goes back during our run, whatever its sessions.
    pub(crate) tx_seq: u64,
    pub(crate) link: Liveness,
    pub(crate) probe: Probing,
    pub(crate) path: PathState,
    pub(crate) count: Counters,
}

/// What was heard and sent when.
#[derive(Default)]
pub(crate) struct Liveness {
    /// Start time of the newest hello accepted from it.
    pub(crate) peer_start: u64,
    pub(crate) last_heard: Option<Instant>,
    pub(crate) last_sent: Option<Instant>,
    pub(crate) last_hello: Option<Instant>,
    /// When its last multicast beacon arrived.
    pub(crate) beacon_at: Option<Instant>,
    /// Its beacons arrive (within the timeout): multicast reaches it.
    pub(crate) beacons: bool,
}

/// Periodic probes: RTT, and the loss the peer saw from us.
#[derive(Default)]
pub(crate) struct Probing {
    pub(crate) rtt: RttEstimator,
    pub(crate) next: Option<Instant>,
    /// When the latest periodic probe went out.
    pub(crate) sent_at: Option<Instant>,
    pub(crate) id: u32,
    pub(crate) sent: u64,
    pub(crate) answered: u64,
    /// Id of the last probe answered.
    pub(crate) answered_id: u32,
    /// Probes in a row that got no answer.
    pub(crate) unanswered: u32,
    /// What the peer said it received from us and lost, in its last probe reply.
    pub(crate) tx_seen: (u64, u64),
}

/// The path to the peer.
pub(crate) struct PathState {
    /// The path MTU to it, found by probing.
    pub(crate) mtu: PathMtu,
    /// Sequence of path MTU probes and acks (with `PMTU_SEQ_BIT`).
    pub(crate) pmtu_seq: u64,
    /// Id of the next frame cut into fragments for it.
    pub(crate) frag_id: u32,
}

/// What went through the tunnel, and what was dropped.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) traffic: TrafficCounters,
    /// Drops of datagrams that authenticated as this peer's.
    pub(crate) drops: DropCounters,
    /// Datagrams that claimed to be this peer's and were dropped before they
    /// authenticated (no session, oversize, failed AEAD): anyone who can spoof its address
    /// and id can move this counter, so it is kept apart from everything the peer did.
    pub(crate) unauthenticated_drops: u64,
    /// Its frames marked CE by CoDel on our receive queue (its drops are `drops.aqm`).
    pub(crate) aqm_marks: u64,
    /// Loss and reordering of what it sends us.
    pub(crate) rx_seq: SeqTracker,
    /// Bytes per second and per minute through this tunnel.
    pub(crate) series: Series,
}

impl Peer {
    /// Whether our unicast data to it leaves from our `ports` flow ports (`spread`): it
    /// takes them, and it is reached at its listed address (a NAT's mapping or a relay's
    /// socket lets in only what comes from the port that opened it).
    #[inline]
    pub(crate) fn spread_over(&self, ports: u8) -> bool {
        ports > 0 && self.spreads && self.reach.path(self.addr) == PathKind::Direct
    }

    /// A new peer entry whose counters start at `first_seq` (the engine's floor, see
    /// `nonces`).
    pub(crate) fn new(
        addr: SocketAddr,
        source: PeerSource,
        underlay_mtu: u16,
        first_seq: u64,
    ) -> Self {
        Peer {
            id: None,
            name: String::new(),
            addr,
            source,
            reach: Reach::new(addr),
            prefix: None,
            tunnel: Tunnel::Closed,
            spreads: false,
            last_label: 0,
            tx_seq: first_seq,
            link: Liveness::default(),
            probe: Probing::default(),
            path: PathState {
                mtu: PathMtu::new(underlay_mtu),
                pmtu_seq: first_seq,
                frag_id: 0,
            },
            count: Counters::default(),
        }
    }
}
