//! One LAN inside the engine: its keys, peers, MAC database, flood plan and counters.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rustc_hash::FxHashMap;

use telemetry::{DropCounters, DropReason};

use super::LanSpec;
use super::flood::{Member, Plan, Subnet, plan};
use super::ids::PeerId;
use super::limits::Limits;
use super::macdb::{Mac, MacDb};
use super::measure::LanMeasure;
use super::peer::Peer;
use crate::proto::crypto::{LanKeys, SealKey};
use crate::status::{FloodStats, PathKind};

pub(crate) struct Lan {
    pub(crate) spec: LanSpec,
    pub(crate) keys: LanKeys,
    pub(crate) group_tx: SealKey,
    pub(crate) group_seq: u64,
    /// Proves membership to a relay (`[host] relays`); opens nothing.
    pub(crate) relay_key: crate::proto::relay::RelayKey,
    pub(crate) peers: Vec<Peer>,
    /// The VMs' flows seen lately and the flow port each leaves from (`spread`).
    pub(crate) flows_out: super::spread::Flows,
    /// Every datagram looks its sender up here: FxHash (see the workspace's Cargo.toml).
    pub(crate) by_id: FxHashMap<u32, PeerId>,
    /// Where floods go; rebuilt when peers or beacons change (not per packet).
    pub(crate) plan: Plan,
    /// Up peers (each receives a flood one way or another), for per-peer counters.
    pub(crate) flood_members: Vec<PeerId>,
    pub(crate) macs: MacDb,
    pub(crate) drops: DropCounters,
    pub(crate) flood: FloodStats,
    pub(crate) next_sweep: Option<Instant>,
    pub(crate) next_beacon: Option<Instant>,
    /// This host's id and subnet, for planning.
    pub(crate) me: (u32, Option<(IpAddr, u8)>),
    /// What is measured of its traffic (VMs, flows, sFlow, bursts), beside the
    /// forwarding state above and below.
    pub(crate) measure: LanMeasure,
    /// Id of the next flooded frame cut into fragments.
    pub(crate) group_frag_id: u32,
    pub(crate) frags: FragCounters,
    /// Rate limits of its VMs and of the LAN.
    pub(crate) limits: Limits,
    /// Its service addresses.
    pub(crate) services: super::service::Services,
}

/// Frames cut into fragments on one LAN.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FragCounters {
    pub(crate) frames: u64,
    pub(crate) fragments: u64,
}

impl Lan {
    /// Start its VM and flow tables anew for `a` (flows exported per `flow_export`).
    pub(crate) fn measure(&mut self, a: super::Accounting, flow_export: Option<(u64, usize)>) {
        self.measure = LanMeasure::new(a, flow_export);
        self.share_service_addresses();
    }

    /// Tell the VM table which addresses are its services' (answered by several VMs, so
    /// none of them is a VM's own).
    pub(crate) fn share_service_addresses(&mut self) {
        self.measure
            .vms
            .set_shared(self.spec.services.iter().map(|s| s.vip).collect());
    }

    pub(crate) fn new(
        spec: LanSpec,
        host_id: u32,
        underlay: Option<(IpAddr, u8)>,
        public: &[u8; 32],
        first_seq: u64,
    ) -> Self {
        let keys = LanKeys::with_cipher(&spec.secret, spec.cipher);
        let relay_key = super::relays::relay_key_of(&spec.secret);
        let group_tx = SealKey::with_cipher(&keys.group_key(spec.id, host_id, public), spec.cipher);
        Lan {
            flows_out: super::spread::Flows::new(),
            macs: MacDb::new(spec.mac_capacity, spec.mac_max_age),
            limits: Limits::new(&spec.limits, spec.max_frame),
            services: super::service::Services::new(&spec.services),
            spec,
            keys,
            group_tx,
            group_seq: first_seq,
            relay_key,
            peers: Vec::new(),
            by_id: FxHashMap::default(),
            plan: Plan::default(),
            flood_members: Vec::new(),
            drops: DropCounters::default(),
            flood: FloodStats::default(),
            next_sweep: None,
            next_beacon: None,
            me: (host_id, underlay),
            group_frag_id: 0,
            frags: FragCounters::default(),
            measure: LanMeasure::new(
                super::Accounting {
                    flows: false,
                    ..Default::default()
                },
                None,
            ),
        }
    }

    pub(crate) fn peer(&mut self, pi: PeerId) -> Option<&mut Peer> {
        self.peers.get_mut(pi.index())
    }

    pub(crate) fn rebuild_flood(&mut self) {
        let (my_id, underlay) = self.me;
        let my_prefix = underlay.map_or(32, |(_, p)| p);
        let members: Vec<Member> = self
            .peers
            .iter()
            .map(|p| Member {
                id: p.id,
                addr: p.addr,
                subnet: match p.reach.path(p.addr) {
                    PathKind::Direct => Subnet::of(p.addr.ip(), p.prefix.unwrap_or(my_prefix)),
                    // Behind a NAT: its subnet is private, perhaps numbered like others.
                    // Peers behind the same NAT share its address, so they form one
                    // subnet here, with one forwarder, as they do behind it.
                    PathKind::Punched => {
                        Subnet::of(p.addr.ip(), if p.addr.is_ipv4() { 32 } else { 128 })
                    }
                    // Through a relay, every peer shares the relay's address but none
                    // shares a wire: each is a subnet of its own (its own forwarder),
                    // named by the pair socket, which is one per peer.
                    PathKind::Relayed => relayed_subnet(p.addr),
                },
                up: p.tunnel.is_up(),
                beacons: p.link.beacons,
                name: p.name.clone(),
            })
            .collect();
        // Multicast only within an IPv4 subnet, and only with a group.
        let my_subnet = underlay
            .filter(|(ip, _)| ip.is_ipv4())
            .map(|(ip, pfx)| Subnet::of(ip, pfx));
        self.plan = plan(
            (my_id, my_subnet),
            self.spec.flood,
            self.spec.group,
            &members,
        );
        self.flood_members = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.tunnel.is_up())
            .map(|(i, _)| PeerId::at(i))
            .collect();
    }

    /// Forget peer `pi` and its MACs (the peers after it move down); the next number of
    /// its counters, for the engine's floor (see `nonces`).
    #[must_use]
    pub(crate) fn remove_peer(&mut self, pi: PeerId) -> u64 {
        let next = self.peers.remove(pi.index()).next_seq();
        self.macs.forget_peer(pi);
        self.reindex();
        self.rebuild_flood();
        next
    }

    /// The peer ids, rebuilt after a peer left (the ones after it moved down).
    pub(crate) fn reindex(&mut self) {
        self.by_id = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((p.id?, PeerId::at(i))))
            .collect();
    }

    pub(crate) fn same_subnet(&self, ip: IpAddr) -> bool {
        self.me
            .1
            .is_some_and(|(mine, pfx)| Subnet::of(mine, pfx) == Subnet::of(ip, pfx))
    }

    pub(crate) fn drop_at(&mut self, peer: Option<PeerId>, reason: DropReason) -> DropReason {
        self.drops.bump(reason);
        if let Some(p) = peer.and_then(|i| self.peers.get_mut(i.index())) {
            p.count.drops.bump(reason);
        }
        reason
    }

    /// A VM's frame that could not be carried (no session, too large): counted as
    /// `drop_at` does, and against the VM that sent it.
    pub(crate) fn drop_vm_frame(
        &mut self,
        src: &Mac,
        peer: Option<PeerId>,
        reason: DropReason,
    ) -> DropReason {
        self.measure.vms.note_tx_drop(src);
        self.drop_at(peer, reason)
    }

    /// A drop before the datagram authenticated: the LAN counts it by reason, the peer it
    /// claims to come from only as unauthenticated (spoofable).
    pub(crate) fn drop_unauthenticated(
        &mut self,
        claimed: Option<PeerId>,
        reason: DropReason,
    ) -> DropReason {
        self.drops.bump(reason);
        if let Some(p) = claimed.and_then(|i| self.peers.get_mut(i.index())) {
            p.count.unauthenticated_drops += 1;
        }
        reason
    }

    pub(crate) fn peer_by_addr(&self, addr: SocketAddr) -> Option<PeerId> {
        self.peers
            .iter()
            .position(|p| p.addr == addr)
            .map(PeerId::at)
    }

    /// The peer its source listed at `addr`, wherever it answers now (behind NAT, or
    /// moved); else one that answers at `addr`.
    pub(crate) fn peer_listed(&self, addr: SocketAddr) -> Option<PeerId> {
        self.peers
            .iter()
            .position(|p| p.reach.listed() == addr)
            .map(PeerId::at)
            .or_else(|| self.peer_by_addr(addr))
    }
}

/// A one-host "subnet" for a peer reached through the relay's pair socket `addr`: unique
/// per socket, so the flood plan sends each relayed peer its own copy.
fn relayed_subnet(addr: SocketAddr) -> Subnet {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) >> 16,
    };
    let tagged = (ip << 16) | u128::from(addr.port());
    Subnet::of(IpAddr::V6(std::net::Ipv6Addr::from(tagged)), 128)
}
