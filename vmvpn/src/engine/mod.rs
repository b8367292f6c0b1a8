//! The forwarding core: sans-IO, owned by one data-plane thread.
//!
//! The runtime hands it "frame read from TAP", "datagram from the underlay" and "tick";
//! it answers with what to send or write. It owns the peer table, the sessions (hello
//! handshake, keys, replay windows), the MAC databases and the counters, and never
//! touches a socket or a clock: `now` is an argument. Nothing here allocates per packet.
//!
//! Handshake (see also `PROTOCOL.md`): each host picks a fresh X25519 key pair at start.
//! A hello carries that public key, the receiver's public key as last seen (the echo), the
//! host name and the start time (in the sequence field), under an HMAC keyed from the LAN
//! secret. On an authentic hello with a new public key and a newer start time, the
//! receiver derives the tunnel's two keys and answers with its own hello; a tunnel is "up"
//! once the peer has shown, by its echo or by a packet that opens, that it has our key.
//! The per-peer send counter never goes back during a run, and keys change at every
//! start, so no (key, nonce) pair repeats.

pub mod flood;
pub mod macdb;
pub mod mss;
pub mod pmtu;
pub mod reassembly;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use telemetry::{
    DropCounters, DropReason, FlowTable, RttEstimator, SeqTracker, Series, TrafficCounters,
    VmTable, inspect,
};
use tracing::info;
use x25519_dalek::StaticSecret;

use crate::api::status::{
    FloodStats, FloodStatus, LanStatus, LanTraffic, MacRow, PeerStatus, SubnetStatus,
};
use crate::engine::flood::{
    BEACON_INTERVAL_S, BEACON_TIMEOUT_S, FloodMode, Member, Plan, Subnet, plan,
};
use crate::engine::macdb::{Location, Mac, MacDb, fmt_mac, is_group};
use crate::engine::pmtu::PathMtu;
use crate::engine::reassembly::{FragDrop, Reassembly, ReassemblyStats, Verdict};
use crate::proto::crypto::{Cipher, LanKeys, LanSecret, SealKey, public_of};
use crate::proto::fragment::{self as frag, FragHeader};
use crate::proto::replay::{Replay, ReplayWindow};
use crate::proto::{
    BEACON_LEN, ETHERNET_HEADER_LEN, FLAG_RELAY, HEADER_LEN, HELLO_BODY_LEN, HELLO_LEN, Header,
    Hello, Kind, NAME_LEN, OVERHEAD, PMTU_SEQ_BIT, Packet, TAG_LEN, name_field,
};

/// What the core measures beyond counters (`[telemetry]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct Accounting {
    /// Send probes (RTT, loss each way, health).
    pub probes: bool,
    /// Look into frames: per-VM traffic, the VM matrix, flows.
    pub flows: bool,
    /// VM table size per LAN.
    pub vms: usize,
    /// VM matrix size per LAN.
    pub pairs: usize,
    /// Flow table size per LAN.
    pub flow_cap: usize,
    /// Flow idle timeout in seconds.
    pub flow_idle_s: u64,
    /// Local VM ports with a time series, per LAN.
    pub port_series: usize,
    /// The underlay link speed in bits per second, for utilisation.
    pub link_speed_bps: Option<u64>,
}

impl Default for Accounting {
    fn default() -> Self {
        Accounting {
            probes: true,
            flows: true,
            vms: telemetry::vms::DEFAULT_VMS,
            pairs: telemetry::vms::DEFAULT_PAIRS,
            flow_cap: telemetry::flows::DEFAULT_FLOWS,
            flow_idle_s: telemetry::flows::DEFAULT_IDLE_S,
            port_series: telemetry::vms::DEFAULT_PORT_SERIES,
            link_speed_bps: None,
        }
    }
}

/// Probe ids with this bit set are on-demand (`vmvpn ping`), not the periodic ones.
const PING_BIT: u32 = 0x8000_0000;
/// Pongs kept for the runtime to collect.
const PONGS_MAX: usize = 64;

/// A `vmvpn ping` probe that went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingSent {
    /// Its id, matched by [`Pong::id`].
    pub id: u32,
    /// LAN name.
    pub lan: String,
    /// The peer's name (may be empty before its hello).
    pub peer: String,
    /// The peer's underlay address.
    pub address: SocketAddr,
    /// The VM MAC the target resolved to, when the target was a VM address.
    pub via_vm: Option<String>,
}

/// The answer to a `vmvpn ping` probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The probe's id.
    pub id: u32,
    /// Round trip, the reflector's hold time taken off.
    pub rtt_ns: u64,
}

/// Timers of the core.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// Hello retransmission while a tunnel is not up.
    pub hello_interval: Duration,
    /// Keepalive to an up peer that we have not sent anything to for this long.
    pub keepalive_interval: Duration,
    /// A tunnel with nothing heard for this long goes back to handshaking.
    pub dead_after: Duration,
    /// How often aged MACs are swept.
    pub mac_sweep: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            hello_interval: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(10),
            dead_after: Duration::from_secs(35),
            mac_sweep: Duration::from_secs(10),
        }
    }
}

/// How often `tick` wants to run at most.
pub const TICK: Duration = Duration::from_millis(200);
/// Probes per peer.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Probes per second for all peers together (1000 peers: one probe each every 5 s).
const PROBE_BUDGET: f64 = 200.0;
/// Probe reply body: id, send time, hold time, received and lost by the reflector.
const PROBE_REPLY_LEN: usize = 36;
/// Probes in a row without an answer before a peer counts as down (with nothing else heard).
const DOWN_AFTER_PROBES: u32 = 3;
/// Hellos answer at most this often per peer, unless the session changed.
const HELLO_REPLY_MIN: Duration = Duration::from_millis(200);

/// Where a peer entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSource {
    /// The config's static peer list.
    Static,
    /// An authenticated hello from an address not in the config.
    Hello,
    /// The bulletin board's registry.
    Bulletin,
}

impl PeerSource {
    fn name(self) -> &'static str {
        match self {
            PeerSource::Static => "static",
            PeerSource::Hello => "hello",
            PeerSource::Bulletin => "bulletin",
        }
    }
}

/// Identity of this host for the core.
pub struct HostIdentity {
    /// 32-bit host id.
    pub id: u32,
    /// Host name (sent in hellos).
    pub name: String,
    /// This run's X25519 secret: fresh random bytes at every start.
    pub secret: [u8; 32],
    /// Start time in ns since the Unix epoch; must grow from one start to the next.
    pub start_ns: u64,
    /// Underlay address and prefix length: this host's physical subnet (None: unknown).
    pub underlay: Option<(IpAddr, u8)>,
}

/// One LAN as the core needs it.
pub struct LanSpec {
    /// LAN name.
    pub name: String,
    /// LAN id on the wire.
    pub id: u32,
    /// The LAN secret.
    pub secret: LanSecret,
    /// Largest Ethernet frame accepted (from the TAP MTU).
    pub max_frame: usize,
    /// Static peers.
    pub peers: Vec<SocketAddr>,
    /// MAC database capacity.
    pub mac_capacity: usize,
    /// MAC ageing time.
    pub mac_max_age: Duration,
    /// Informational: the virtual segment.
    pub segment: String,
    /// Informational: the TAP name.
    pub tap: String,
    /// Informational: the TAP MTU.
    pub mtu: usize,
    /// How floods travel.
    pub flood: FloodMode,
    /// The LAN's multicast group and port on the underlay (None: unicast only).
    pub group: Option<SocketAddr>,
    /// How frames are protected.
    pub cipher: Cipher,
}

struct Session {
    peer_public: [u8; 32],
    tx: SealKey,
    rx: SealKey,
    rx_window: ReplayWindow,
    group_rx: SealKey,
    group_window: ReplayWindow,
    /// Path MTU probes and acks: a sequence space of their own.
    pmtu_window: ReplayWindow,
}

struct Peer {
    id: Option<u32>,
    name: String,
    addr: SocketAddr,
    source: PeerSource,
    session: Option<Session>,
    /// The peer has proven it holds our current public key.
    up: bool,
    /// Start time of the newest hello accepted from it.
    peer_start: u64,
    tx_seq: u64,
    last_heard: Option<Instant>,
    last_sent: Option<Instant>,
    last_hello: Option<Instant>,
    traffic: TrafficCounters,
    /// Drops of datagrams that authenticated as this peer's.
    drops: DropCounters,
    /// Datagrams that claimed to be this peer's and were dropped before they
    /// authenticated (no session, oversize, failed AEAD): anyone who can spoof its address
    /// and id can move this counter, so it is kept apart from everything the peer did.
    unauthenticated_drops: u64,
    /// Prefix length of its underlay subnet, when the bulletin said (else ours is assumed).
    prefix: Option<u8>,
    /// When its last multicast beacon arrived.
    beacon_at: Option<Instant>,
    /// Its beacons arrive (within the timeout): multicast reaches it.
    beacons: bool,
    /// Loss and reordering of what it sends us.
    rx_seq: SeqTracker,
    /// RTT from probes.
    rtt: RttEstimator,
    next_probe: Option<Instant>,
    /// When the latest periodic probe went out.
    probe_sent_at: Option<Instant>,
    probe_id: u32,
    probes_sent: u64,
    probes_answered: u64,
    /// Id of the last probe answered.
    probes_answered_at: u32,
    /// Probes in a row that got no answer.
    unanswered: u32,
    /// What the peer said it received from us and lost, in its last probe reply.
    tx_seen: (u64, u64),
    /// Bytes per second and per minute through this tunnel.
    series: Series,
    /// The path MTU to it, found by probing.
    pmtu: PathMtu,
    /// Sequence of path MTU probes and acks (with [`PMTU_SEQ_BIT`]).
    pmtu_seq: u64,
    /// Id of the next frame cut into fragments for it.
    frag_id: u32,
}

impl Peer {
    fn new(addr: SocketAddr, source: PeerSource, underlay_mtu: u16) -> Self {
        Peer {
            pmtu: PathMtu::new(underlay_mtu),
            pmtu_seq: 0,
            frag_id: 0,
            id: None,
            name: String::new(),
            addr,
            source,
            session: None,
            up: false,
            peer_start: 0,
            tx_seq: 0,
            last_heard: None,
            last_sent: None,
            last_hello: None,
            traffic: TrafficCounters::default(),
            drops: DropCounters::default(),
            unauthenticated_drops: 0,
            prefix: None,
            beacon_at: None,
            beacons: false,
            rx_seq: SeqTracker::default(),
            rtt: RttEstimator::default(),
            next_probe: None,
            probe_sent_at: None,
            probe_id: 0,
            probes_sent: 0,
            probes_answered: 0,
            probes_answered_at: 0,
            unanswered: 0,
            tx_seen: (0, 0),
            series: Series::default(),
        }
    }
}

struct Lan {
    spec: LanSpec,
    keys: LanKeys,
    group_tx: SealKey,
    group_seq: u64,
    peers: Vec<Peer>,
    by_id: HashMap<u32, usize>,
    /// Where floods go; rebuilt when peers or beacons change (not per packet).
    plan: Plan,
    /// Up peers (each receives a flood one way or another), for per-peer counters.
    flood_members: Vec<usize>,
    macs: MacDb,
    drops: DropCounters,
    flood: FloodStats,
    next_sweep: Option<Instant>,
    next_beacon: Option<Instant>,
    /// This host's id and subnet, for planning.
    me: (u32, Option<(IpAddr, u8)>),
    /// Per-VM traffic and the VM matrix.
    vms: VmTable,
    /// Transport flows between VMs.
    flows: FlowTable,
    /// Id of the next flooded frame cut into fragments.
    group_frag_id: u32,
    frags: FragCounters,
}

impl Lan {
    fn rebuild_flood(&mut self) {
        let (my_id, underlay) = self.me;
        let my_prefix = underlay.map_or(32, |(_, p)| p);
        let members: Vec<Member> = self
            .peers
            .iter()
            .map(|p| Member {
                id: p.id,
                addr: p.addr,
                subnet: Subnet::of(p.addr.ip(), p.prefix.unwrap_or(my_prefix)),
                up: p.up,
                beacons: p.beacons,
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
            .filter(|(_, p)| p.up)
            .map(|(i, _)| i)
            .collect();
    }

    fn same_subnet(&self, ip: IpAddr) -> bool {
        self.me
            .1
            .is_some_and(|(mine, pfx)| Subnet::of(mine, pfx) == Subnet::of(ip, pfx))
    }

    fn drop_at(&mut self, peer: Option<usize>, reason: DropReason) -> DropReason {
        self.drops.bump(reason);
        if let Some(p) = peer.and_then(|i| self.peers.get_mut(i)) {
            p.drops.bump(reason);
        }
        reason
    }

    /// A drop before the datagram authenticated: the LAN counts it by reason, the peer it
    /// claims to come from only as unauthenticated (spoofable).
    fn drop_unauthenticated(&mut self, claimed: Option<usize>, reason: DropReason) -> DropReason {
        self.drops.bump(reason);
        if let Some(p) = claimed.and_then(|i| self.peers.get_mut(i)) {
            p.unauthenticated_drops += 1;
        }
        reason
    }

    fn peer_by_addr(&self, addr: SocketAddr) -> Option<usize> {
        self.peers.iter().position(|p| p.addr == addr)
    }
}

/// What to do with a frame read from a TAP.
#[derive(Debug, PartialEq, Eq)]
pub enum TapAction<'a> {
    /// Send `buf[..len]` to this one peer.
    Unicast(SocketAddr, usize),
    /// The frame did not fit one datagram to the peer: send `buf[..len]`, which holds
    /// fragments of `seg` bytes each (the last may be shorter), to this peer.
    Fragments {
        /// The peer.
        to: SocketAddr,
        /// Bytes of all fragments in `buf`.
        len: usize,
        /// Bytes per fragment datagram.
        seg: usize,
    },
    /// Send `buf[..len]` to each of `to` (peers and/or the multicast group), and `relay`
    /// (a separately sealed copy) to each of `relay_to` (designated forwarders). Each is
    /// one datagram, or fragments of `seg` bytes each (the last may be shorter).
    Flood {
        /// This subnet's targets.
        to: &'a [SocketAddr],
        /// Length of the datagram(s) in `buf`.
        len: usize,
        /// Bytes per datagram (`len` when the frame was not cut).
        seg: usize,
        /// Forwarders of other subnets.
        relay_to: &'a [SocketAddr],
        /// The relay copy (datagrams of `seg` bytes each too).
        relay: &'a [u8],
    },
    /// Dropped (already counted).
    Drop(DropReason),
}

/// What to do with a datagram from the underlay.
#[derive(Debug, PartialEq, Eq)]
pub enum RxAction {
    /// Write `buf[range]` (an Ethernet frame) to the TAP of LAN `lan`.
    Tap {
        /// Index of the LAN (as in the config).
        lan: usize,
        /// Where the frame is in the buffer.
        frame: Range<usize>,
        /// As designated forwarder, also send [`Engine::relay_out`] inside this subnet.
        relay: bool,
    },
    /// A frame put back together from fragments: write [`Engine::reassembled`] to the TAP
    /// of LAN `lan` (and relay, as for `Tap`).
    TapReassembled {
        /// Index of the LAN.
        lan: usize,
        /// As designated forwarder, also send [`Engine::relay_out`] inside this subnet.
        relay: bool,
    },
    /// Nothing for the TAP (a fragment held, or dropped), but as designated forwarder
    /// send [`Engine::relay_out`] inside this subnet.
    Relay {
        /// Index of the LAN.
        lan: usize,
    },
    /// A control message, handled; check `poll_transmit`.
    Consumed,
    /// Dropped (already counted).
    Drop(DropReason),
}

/// A control datagram waiting to be sent.
struct Outgoing {
    to: SocketAddr,
    len: usize,
    buf: [u8; HELLO_LEN],
}

/// The forwarding core of one host.
pub struct Engine {
    id: u32,
    name: [u8; NAME_LEN],
    secret: StaticSecret,
    public: [u8; 32],
    start_ns: u64,
    timers: Timers,
    lans: Vec<Lan>,
    lan_index: HashMap<u32, usize>,
    drops: DropCounters,
    out: VecDeque<Outgoing>,
    next_tick: Option<Instant>,
    /// The relay copy of the latest flood (sent or to pass on), sealed in place.
    relay_buf: Vec<u8>,
    relay_len: usize,
    /// The first tick's time: the origin of probe timestamps.
    epoch: Option<Instant>,
    accounting: Accounting,
    /// The second (since `epoch`) the last tick ran in.
    last_second: Option<u64>,
    ping_seq: u32,
    pongs: VecDeque<Pong>,
    /// Frames being put back together from fragments.
    reassembly: Reassembly,
    /// Reassembly drops already added to the drop counters.
    reassembly_seen: [(FragDrop, u64); 4],
    /// The underlay MTU: the largest path MTU probed.
    underlay_mtu: u16,
    ipv6_underlay: bool,
    /// Path MTU probes to send: (LAN, peer, IP packet size).
    pmtu_probes: VecDeque<(usize, usize, u16)>,
}

/// Frames cut into fragments on one LAN.
#[derive(Debug, Clone, Copy, Default)]
struct FragCounters {
    frames: u64,
    fragments: u64,
}

impl Engine {
    /// A core for this host and these LANs.
    pub fn new(host: HostIdentity, lans: Vec<LanSpec>, timers: Timers) -> Self {
        let secret = StaticSecret::from(host.secret);
        let public = public_of(&secret);
        let mut engine = Engine {
            id: host.id,
            name: name_field(&host.name),
            secret,
            public,
            start_ns: host.start_ns,
            timers,
            lans: Vec::with_capacity(lans.len()),
            lan_index: HashMap::new(),
            drops: DropCounters::default(),
            out: VecDeque::with_capacity(64),
            next_tick: None,
            relay_buf: vec![0u8; buffer_len(lans.iter().map(|l| l.max_frame).max().unwrap_or(0))],
            relay_len: 0,
            epoch: None,
            accounting: Accounting::default(),
            last_second: None,
            ping_seq: 0,
            pongs: VecDeque::with_capacity(PONGS_MAX),
            reassembly: Reassembly::new(lans.iter().map(|l| l.max_frame).max().unwrap_or(0)),
            reassembly_seen: [
                (FragDrop::Overlap, 0),
                (FragDrop::Oversize, 0),
                (FragDrop::Timeout, 0),
                (FragDrop::Evicted, 0),
            ],
            underlay_mtu: 1500,
            ipv6_underlay: host.underlay.is_some_and(|(ip, _)| ip.is_ipv6()),
            pmtu_probes: VecDeque::with_capacity(64),
        };
        for spec in lans {
            let keys = LanKeys::with_cipher(&spec.secret, spec.cipher);
            let group_tx =
                SealKey::with_cipher(&keys.group_key(spec.id, host.id, &public), spec.cipher);
            let statics = spec.peers.clone();
            let idx = engine.lans.len();
            engine.lan_index.insert(spec.id, idx);
            engine.lans.push(Lan {
                macs: MacDb::new(spec.mac_capacity, spec.mac_max_age),
                spec,
                keys,
                group_tx,
                group_seq: 0,
                peers: Vec::new(),
                by_id: HashMap::new(),
                plan: Plan::default(),
                flood_members: Vec::new(),
                drops: DropCounters::default(),
                flood: FloodStats::default(),
                next_sweep: None,
                next_beacon: None,
                me: (host.id, host.underlay),
                group_frag_id: 0,
                frags: FragCounters::default(),
                vms: VmTable::new(1, 1, 0),
                flows: FlowTable::new(1, 1),
            });
            for addr in statics {
                engine.add_peer(idx, addr, PeerSource::Static, None);
            }
        }
        engine.set_accounting(Accounting::default());
        engine
    }

    /// The underlay MTU (the largest path MTU any tunnel can have; 1500 unless set).
    pub fn set_underlay_mtu(&mut self, mtu: u16) {
        self.underlay_mtu = mtu;
        for l in &mut self.lans {
            for p in &mut l.peers {
                p.pmtu = PathMtu::new(mtu);
            }
        }
    }

    /// Choose what is measured (tables are emptied).
    pub fn set_accounting(&mut self, a: Accounting) {
        self.accounting = a;
        for l in &mut self.lans {
            let on = usize::from(a.flows);
            l.vms = VmTable::new(a.vms * on, a.pairs * on, a.port_series * on);
            l.flows = FlowTable::new(a.flow_cap * on, a.flow_idle_s);
        }
    }

    /// This host's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Number of LANs.
    pub fn lan_count(&self) -> usize {
        self.lans.len()
    }

    /// Add a peer address to a LAN. The handshake starts at the next tick. A peer already
    /// known from a hello is now vouched for by the new source; a static one stays static.
    ///
    /// `prefix` is the peer's underlay prefix length, when known (the bulletin's records);
    /// without it the peer's subnet is assumed to have this host's prefix length.
    pub fn add_peer(
        &mut self,
        lan: usize,
        addr: SocketAddr,
        source: PeerSource,
        prefix: Option<u8>,
    ) {
        let Some(l) = self.lans.get_mut(lan) else {
            return;
        };
        let i = match l.peer_by_addr(addr) {
            None => {
                l.peers.push(Peer::new(addr, source, self.underlay_mtu));
                l.peers.len() - 1
            }
            Some(i) => {
                if l.peers[i].source == PeerSource::Hello {
                    l.peers[i].source = source;
                }
                i
            }
        };
        if prefix.is_some() && l.peers[i].prefix != prefix {
            l.peers[i].prefix = prefix;
            l.rebuild_flood();
        }
    }

    /// Index of a LAN by name.
    pub fn lan_index(&self, name: &str) -> Option<usize> {
        self.lans.iter().position(|l| l.spec.name == name)
    }

    /// Remove a peer that left (the bulletin said so), with its MACs. Static peers stay:
    /// the operator listed them.
    pub fn remove_peer(&mut self, lan: usize, addr: SocketAddr) {
        let Some(l) = self.lans.get_mut(lan) else {
            return;
        };
        let Some(i) = l.peer_by_addr(addr) else {
            return;
        };
        if l.peers[i].source == PeerSource::Static {
            return;
        }
        info!(lan = %l.spec.name, peer = %addr, name = %l.peers[i].name, "peer removed: left the LAN");
        l.peers.remove(i);
        l.macs.forget_peer(i);
        l.by_id = l
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((p.id?, i)))
            .collect();
        l.rebuild_flood();
    }

    /// Handle one frame the kernel wrote to the TAP of `lan`.
    ///
    /// `buf[HEADER_LEN..HEADER_LEN + len]` holds the frame; `buf` must have room for the
    /// header before it and the tag after it (`HEADER_LEN + max_frame + TAG_LEN`). On
    /// `Unicast`/`Flood`, `buf[..n]` is the sealed datagram.
    pub fn on_tap_frame(
        &mut self,
        lan: usize,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> TapAction<'_> {
        let Some(l) = self.lans.get_mut(lan) else {
            self.drops.bump(DropReason::UnknownLan);
            return TapAction::Drop(DropReason::UnknownLan);
        };
        if len < ETHERNET_HEADER_LEN {
            return TapAction::Drop(l.drop_at(None, DropReason::Malformed));
        }
        if len > l.spec.max_frame || buf.len() < HEADER_LEN + len + TAG_LEN {
            return TapAction::Drop(l.drop_at(None, DropReason::Oversize));
        }
        let (dst, src) = macs_of(&buf[HEADER_LEN..HEADER_LEN + ETHERNET_HEADER_LEN]);
        l.macs.learn(src, Location::Local, now);
        if self.accounting.flows
            && let Some(info) = inspect(&buf[HEADER_LEN..HEADER_LEN + len])
        {
            let second = self.last_second.unwrap_or(0);
            l.vms.observe(&info, len, true, second);
            l.flows.observe(&info, len, second);
        }
        let target = if is_group(&dst) {
            None
        } else {
            l.macs.lookup(&dst, now)
        };
        match target {
            Some(Location::Local) => TapAction::Drop(l.drop_at(None, DropReason::LocalDestination)),
            Some(Location::Peer(i)) => {
                let Some(p) = l.peers.get_mut(i) else {
                    return TapAction::Drop(l.drop_at(None, DropReason::NoRoute));
                };
                let Some(s) = p.session.as_ref().filter(|_| p.up) else {
                    return TapAction::Drop(l.drop_at(Some(i), DropReason::NoSession));
                };
                let cap = crate::engine::mss::frame_cap(
                    usize::from(p.pmtu.current()),
                    self.ipv6_underlay,
                );
                crate::engine::mss::clamp(&mut buf[HEADER_LEN..HEADER_LEN + len], cap);
                let seq = p.tx_seq;
                let mut hdr = Header {
                    kind: Kind::Data,
                    flags: 0,
                    lan: l.spec.id,
                    sender: self.id,
                    seq,
                };
                if len > cap {
                    // Too large for one datagram to this peer: cut, each piece sealed on
                    // its own pairwise sequence number.
                    hdr.kind = Kind::Fragment;
                    let sealed = frag::plan(len, cap.saturating_sub(frag::FRAG_HEADER_LEN))
                        .and_then(|(count, piece)| {
                            let n =
                                seal_fragments(buf, len, piece, count, p.frag_id, hdr, &s.tx, seq)?;
                            Some((count, piece, n))
                        });
                    let Some((count, piece, n)) = sealed else {
                        return TapAction::Drop(l.drop_at(Some(i), DropReason::Oversize));
                    };
                    p.frag_id = p.frag_id.wrapping_add(1);
                    p.tx_seq += count as u64;
                    p.traffic.tx(len);
                    p.last_sent = Some(now);
                    l.frags.frames += 1;
                    l.frags.fragments += count as u64;
                    return TapAction::Fragments {
                        to: p.addr,
                        len: n,
                        seg: piece + frag::PER_FRAGMENT,
                    };
                }
                write_header(buf, &hdr);
                let Some(n) = s.tx.seal(seq, buf, len) else {
                    return TapAction::Drop(l.drop_at(Some(i), DropReason::Oversize));
                };
                p.tx_seq += 1;
                p.traffic.tx(len);
                p.last_sent = Some(now);
                TapAction::Unicast(p.addr, n)
            }
            None => {
                if l.plan.local.is_empty() && l.plan.relay.is_empty() {
                    return TapAction::Drop(l.drop_at(None, DropReason::NoRoute));
                }
                // What fits every flood target in one datagram: the smallest path MTU of
                // the LAN's tunnels, looked up only for a SYN or a frame larger than any
                // path can be.
                let (base_mtu, v6) = (
                    crate::engine::pmtu::BASE.min(self.underlay_mtu),
                    self.ipv6_underlay,
                );
                let base = crate::engine::mss::frame_cap(usize::from(base_mtu), v6);
                let flood_cap = || {
                    let mtu = l
                        .peers
                        .iter()
                        .filter(|p| p.up)
                        .map(|p| p.pmtu.current())
                        .min()
                        .unwrap_or(base_mtu);
                    crate::engine::mss::frame_cap(usize::from(mtu), v6)
                };
                crate::engine::mss::clamp_with(&mut buf[HEADER_LEN..HEADER_LEN + len], flood_cap);
                let cap = if len <= base { base } else { flood_cap() };
                // The relay copy carries the RELAY flag, which the AEAD covers: it is
                // sealed on its own under the next group sequence number(s).
                let with_relay = !l.plan.relay.is_empty();
                if with_relay {
                    let room = self.relay_buf.len();
                    if room < HEADER_LEN + len + TAG_LEN {
                        return TapAction::Drop(l.drop_at(None, DropReason::Oversize));
                    }
                    self.relay_buf[HEADER_LEN..HEADER_LEN + len]
                        .copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + len]);
                }
                let seq = l.group_seq;
                let mut hdr = Header {
                    kind: Kind::Flood,
                    flags: 0,
                    lan: l.spec.id,
                    sender: self.id,
                    seq,
                };
                self.relay_len = 0;
                let (n, seg, used) = if len > cap {
                    hdr.kind = Kind::FloodFragment;
                    let Some((count, piece)) =
                        frag::plan(len, cap.saturating_sub(frag::FRAG_HEADER_LEN))
                    else {
                        return TapAction::Drop(l.drop_at(None, DropReason::Oversize));
                    };
                    let id = l.group_frag_id;
                    let Some(n) = seal_fragments(buf, len, piece, count, id, hdr, &l.group_tx, seq)
                    else {
                        return TapAction::Drop(l.drop_at(None, DropReason::Oversize));
                    };
                    if with_relay {
                        hdr.flags = FLAG_RELAY;
                        let first = seq + count as u64;
                        self.relay_len = seal_fragments(
                            &mut self.relay_buf,
                            len,
                            piece,
                            count,
                            id,
                            hdr,
                            &l.group_tx,
                            first,
                        )
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
                        write_header(&mut self.relay_buf, &hdr);
                        self.relay_len = l
                            .group_tx
                            .seal(seq + 1, &mut self.relay_buf, len)
                            .unwrap_or(0);
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
                    if let Some(p) = l.peers.get_mut(i) {
                        p.traffic.tx(len);
                        p.last_sent = Some(now);
                    }
                }
                TapAction::Flood {
                    to: &l.plan.local,
                    len: n,
                    seg,
                    relay_to: &l.plan.relay,
                    relay: &self.relay_buf[..self.relay_len],
                }
            }
        }
    }

    /// Handle one datagram from the underlay, opened in place in `buf`. `multicast`: it was
    /// addressed to a multicast group (it then is never passed on).
    pub fn on_datagram(
        &mut self,
        from: SocketAddr,
        multicast: bool,
        buf: &mut [u8],
        now: Instant,
    ) -> RxAction {
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
        if header.sender == self.id {
            return RxAction::Drop(self.lans[lan].drop_at(None, DropReason::Loop));
        }
        match header.kind {
            Kind::Hello => self.on_hello(lan, from, &header, buf, now),
            Kind::Beacon => self.on_beacon(lan, multicast, &header, buf, now),
            Kind::Data
            | Kind::Flood
            | Kind::Keepalive
            | Kind::Probe
            | Kind::ProbeReply
            | Kind::Fragment
            | Kind::FloodFragment
            | Kind::PmtuProbe
            | Kind::PmtuAck => self.on_sealed(lan, from, multicast, &header, buf, now),
        }
    }

    fn on_sealed(
        &mut self,
        lan: usize,
        from: SocketAddr,
        multicast: bool,
        h: &Header,
        buf: &mut [u8],
        now: Instant,
    ) -> RxAction {
        let l = &mut self.lans[lan];
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
                return RxAction::Drop(l.drop_at(None, DropReason::Oversize));
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
            return RxAction::Drop(l.drop_unauthenticated(peer, DropReason::Oversize));
        }
        let Some(&pi) = l.by_id.get(&h.sender) else {
            // We may have restarted and lost its session: tell a known address our keys.
            if let Some(pi) = l.peer_by_addr(from) {
                self.queue_hello(lan, pi, now, false);
            }
            return RxAction::Drop(self.lans[lan].drop_at(None, DropReason::NoSession));
        };
        let p = &mut l.peers[pi];
        let Some(s) = p.session.as_mut() else {
            self.queue_hello(lan, pi, now, false);
            return RxAction::Drop(
                self.lans[lan].drop_unauthenticated(Some(pi), DropReason::NoSession),
            );
        };
        let pmtu = matches!(h.kind, Kind::PmtuProbe | Kind::PmtuAck);
        if pmtu != (h.seq & PMTU_SEQ_BIT != 0) {
            // Each sequence space has its own kinds: anything else is forged or broken.
            return RxAction::Drop(
                self.lans[lan].drop_unauthenticated(Some(pi), DropReason::BadHeader),
            );
        }
        let (key, window) = match h.kind {
            Kind::Flood | Kind::FloodFragment => (&s.group_rx, &mut s.group_window),
            Kind::PmtuProbe | Kind::PmtuAck => (&s.rx, &mut s.pmtu_window),
            _ => (&s.rx, &mut s.rx_window),
        };
        let verdict = window.check(h.seq);
        // Open before anything is counted against the peer: a spoofed copy of a sequence
        // number must not count as the peer's duplicate. (A replay costs one AEAD open,
        // as any forged datagram does.)
        let Some(n) = key.open(h.seq, buf) else {
            if verdict.is_ok() {
                // Keys out of step (the peer restarted and its hello was lost): re-hello.
                self.queue_hello(lan, pi, now, false);
            }
            return RxAction::Drop(
                self.lans[lan].drop_unauthenticated(Some(pi), DropReason::AuthFailure),
            );
        };
        if !verdict.is_ok() {
            if group {
                // The same flood by two ways (a forwarder change, mixed multicast): once only.
                l.flood.duplicates_suppressed += 1;
            } else if verdict == Replay::Duplicate {
                p.rx_seq.duplicate();
            }
            return RxAction::Drop(l.drop_at(Some(pi), DropReason::Replay));
        }
        window.update(h.seq);
        if !group && !pmtu {
            // Data, fragments, keepalives and probes share one counter per direction:
            // gaps are losses.
            p.rx_seq.observe(h.seq);
        }
        p.last_heard = Some(now);
        let mut changed = false;
        if !p.up && !group {
            // Only a holder of our public key can seal under the pairwise key.
            p.up = true;
            changed = true;
        }
        if p.addr != from && !group {
            // Authenticated and fresh under the pairwise key: the peer roamed (NAT
            // rebinding). Floods prove nothing about the address: a forwarder relays them.
            p.addr = from;
            changed = true;
        }
        if changed {
            l.rebuild_flood();
        }
        match h.kind {
            Kind::Keepalive => return RxAction::Consumed,
            Kind::Probe => {
                if n != 12 {
                    return RxAction::Drop(self.lans[lan].drop_at(Some(pi), DropReason::Malformed));
                }
                // Reflect at once: the reply leaves in this poll round, so the hold time is
                // zero. It also carries what we received of the prober's traffic and what
                // we count as lost, so the prober knows the loss in its own direction.
                let mut plain = [0u8; PROBE_REPLY_LEN];
                plain[..12].copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + 12]);
                let seen = self.lans[lan].peers[pi].rx_seq.stats();
                plain[20..28].copy_from_slice(&seen.received.to_be_bytes());
                plain[28..36].copy_from_slice(&seen.lost.to_be_bytes());
                self.queue_sealed(lan, pi, Kind::ProbeReply, &plain, now);
                return RxAction::Consumed;
            }
            Kind::ProbeReply => {
                if n != PROBE_REPLY_LEN {
                    return RxAction::Drop(self.lans[lan].drop_at(Some(pi), DropReason::Malformed));
                }
                let b = &buf[HEADER_LEN..HEADER_LEN + PROBE_REPLY_LEN];
                let id = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let word = |i: usize| {
                    let mut t = [0u8; 8];
                    t.copy_from_slice(&b[i..i + 8]);
                    u64::from_be_bytes(t)
                };
                let (t1, hold) = (word(4), word(12));
                let rtt = self.ts(now).saturating_sub(t1).saturating_sub(hold);
                if id & PING_BIT != 0 {
                    if self.pongs.len() == PONGS_MAX {
                        self.pongs.pop_front();
                    }
                    self.pongs.push_back(Pong { id, rtt_ns: rtt });
                    return RxAction::Consumed;
                }
                let p = &mut self.lans[lan].peers[pi];
                let seen = (word(20), word(28));
                if seen.1 > p.tx_seen.1 {
                    // The peer lost some of ours: see whether the path shrank.
                    p.pmtu.on_loss(now);
                }
                p.tx_seen = seen;
                // Only replies to our latest probe count (late replies would skew it).
                if id == p.probe_id && p.probes_answered_at != id {
                    p.rtt.record(rtt);
                    p.probes_answered += 1;
                    p.probes_answered_at = id;
                    p.unanswered = 0;
                }
                return RxAction::Consumed;
            }
            Kind::PmtuProbe => {
                // Acknowledge the size it was padded to; its arrival proves the path.
                if n < 2 {
                    return RxAction::Drop(self.lans[lan].drop_at(Some(pi), DropReason::Malformed));
                }
                let size = [buf[HEADER_LEN], buf[HEADER_LEN + 1]];
                self.queue_pmtu(lan, pi, Kind::PmtuAck, &size, now);
                return RxAction::Consumed;
            }
            Kind::PmtuAck => {
                if n != 2 {
                    return RxAction::Drop(self.lans[lan].drop_at(Some(pi), DropReason::Malformed));
                }
                let size = u16::from_be_bytes([buf[HEADER_LEN], buf[HEADER_LEN + 1]]);
                self.lans[lan].peers[pi].pmtu.on_ack(size, now);
                return RxAction::Consumed;
            }
            Kind::Fragment | Kind::FloodFragment => {
                return self.on_fragment(lan, pi, h, &buf[HEADER_LEN..HEADER_LEN + n], relay, now);
            }
            _ => {}
        }
        let frame = HEADER_LEN..HEADER_LEN + n;
        let Engine {
            lans,
            accounting,
            last_second,
            underlay_mtu: _,
            ipv6_underlay,
            ..
        } = self;
        let l = &mut lans[lan];
        if let Err(r) = deliver(
            l,
            pi,
            &mut buf[frame.clone()],
            accounting.flows,
            last_second.unwrap_or(0),
            *ipv6_underlay,
            now,
        ) {
            return RxAction::Drop(r);
        }
        if relay {
            l.flood.relayed_frames += 1;
        }
        RxAction::Tap { lan, frame, relay }
    }

    /// A fragment that authenticated: held until its frame is whole, then delivered.
    fn on_fragment(
        &mut self,
        lan: usize,
        pi: usize,
        h: &Header,
        plain: &[u8],
        relay: bool,
        now: Instant,
    ) -> RxAction {
        let Some(fh) = FragHeader::parse(plain) else {
            let r = self.lans[lan].drop_at(Some(pi), DropReason::Malformed);
            return if relay {
                RxAction::Relay { lan }
            } else {
                RxAction::Drop(r)
            };
        };
        let key = reassembly::Key {
            lan,
            sender: h.sender,
            flood: h.kind == Kind::FloodFragment,
            id: fh.id,
        };
        let verdict = self
            .reassembly
            .push(key, fh, &plain[frag::FRAG_HEADER_LEN..], now);
        self.count_reassembly_drops(Some(lan));
        let done = match verdict {
            Verdict::Complete => {
                let Engine {
                    lans,
                    accounting,
                    last_second,
                    reassembly,
                    ipv6_underlay,
                    ..
                } = self;
                let l = &mut lans[lan];
                deliver(
                    l,
                    pi,
                    reassembly.frame_mut(),
                    accounting.flows,
                    last_second.unwrap_or(0),
                    *ipv6_underlay,
                    now,
                )
                .is_ok()
            }
            Verdict::Held | Verdict::Drop(_) => false,
        };
        if relay {
            self.lans[lan].flood.relayed_frames += u64::from(done);
        }
        match (done, relay) {
            (true, _) => RxAction::TapReassembled { lan, relay },
            (false, true) => RxAction::Relay { lan },
            (false, false) => RxAction::Consumed,
        }
    }

    /// The frame completed by the last fragment that returned `RxAction::TapReassembled`.
    pub fn reassembled(&self) -> &[u8] {
        self.reassembly.frame()
    }

    /// Add what the reassembly table dropped since last time to the drop counters (of
    /// `lan` if given, else of the host).
    fn count_reassembly_drops(&mut self, lan: Option<usize>) {
        let now = self.reassembly.dropped();
        let was = std::mem::replace(&mut self.reassembly_seen, now);
        let drops = match lan.and_then(|i| self.lans.get_mut(i)) {
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

    /// Queue a path MTU probe or ack to peer `pi`, on its own sequence space.
    fn queue_pmtu(&mut self, lan: usize, pi: usize, kind: Kind, plain: &[u8], now: Instant) {
        self.queue_sealed_on(lan, pi, kind, plain, now, true);
    }

    /// The relay copy to pass on inside this subnet after `RxAction::Tap { relay: true }`.
    pub fn relay_out(&self, lan: usize) -> (&[SocketAddr], &[u8]) {
        match self.lans.get(lan) {
            Some(l) => (&l.plan.local, &self.relay_buf[..self.relay_len]),
            None => (&[], &[]),
        }
    }

    fn on_beacon(
        &mut self,
        lan: usize,
        multicast: bool,
        h: &Header,
        buf: &[u8],
        now: Instant,
    ) -> RxAction {
        let l = &mut self.lans[lan];
        let known = l.by_id.get(&h.sender).copied();
        let mut mac = [0u8; 32];
        mac.copy_from_slice(&buf[HEADER_LEN..BEACON_LEN]);
        if !l.keys.verify_hello(&buf[..HEADER_LEN], &[], &mac) {
            return RxAction::Drop(l.drop_at(known, DropReason::AuthFailure));
        }
        // Beacons are only sent to the group; one by unicast shows nothing about multicast.
        if !multicast {
            return RxAction::Drop(l.drop_at(known, DropReason::BadHeader));
        }
        if let Some(p) = known.and_then(|i| l.peers.get_mut(i)) {
            p.beacon_at = Some(now);
            if !p.beacons {
                p.beacons = true;
                l.rebuild_flood();
            }
        }
        RxAction::Consumed
    }

    fn queue_beacon(&mut self, lan: usize) {
        let l = &self.lans[lan];
        let Some(group) = l.spec.group else { return };
        let hdr = Header {
            kind: Kind::Beacon,
            flags: 0,
            lan: l.spec.id,
            sender: self.id,
            seq: self.start_ns,
        };
        let hb = hdr.to_bytes();
        let mac = l.keys.hello_mac(&hb, &[]);
        let mut out = Outgoing {
            to: group,
            len: BEACON_LEN,
            buf: [0; HELLO_LEN],
        };
        out.buf[..HEADER_LEN].copy_from_slice(&hb);
        out.buf[HEADER_LEN..BEACON_LEN].copy_from_slice(&mac);
        self.out.push_back(out);
    }

    fn on_hello(
        &mut self,
        lan: usize,
        from: SocketAddr,
        h: &Header,
        buf: &[u8],
        now: Instant,
    ) -> RxAction {
        let l = &mut self.lans[lan];
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
            None => match l
                .peers
                .iter()
                .position(|p| p.addr == from && p.id.is_none())
            {
                Some(i) => i,
                None => {
                    l.peers
                        .push(Peer::new(from, PeerSource::Hello, self.underlay_mtu));
                    l.peers.len() - 1
                }
            },
        };
        let p = &mut l.peers[pi];
        let same_key = p
            .session
            .as_ref()
            .is_some_and(|s| s.peer_public == hello.public);
        let mut new_session = false;
        let had_session = p.session.is_some();
        if !same_key {
            if p.session.is_some() && h.seq <= p.peer_start {
                // An older hello (replayed, or delayed): never go back to old keys.
                return RxAction::Drop(l.drop_at(Some(pi), DropReason::Replay));
            }
            let Some((tx, rx)) = l.keys.session_keys(
                l.spec.id,
                (self.id, &self.secret, &self.public),
                (h.sender, &hello.public),
            ) else {
                return RxAction::Drop(l.drop_at(Some(pi), DropReason::AuthFailure));
            };
            let group = l.keys.group_key(l.spec.id, h.sender, &hello.public);
            p.session = Some(Session {
                peer_public: hello.public,
                tx: SealKey::with_cipher(&tx, l.spec.cipher),
                rx: SealKey::with_cipher(&rx, l.spec.cipher),
                rx_window: ReplayWindow::default(),
                group_rx: SealKey::with_cipher(&group, l.spec.cipher),
                group_window: ReplayWindow::default(),
                pmtu_window: ReplayWindow::default(),
            });
            // A new run of the peer, maybe elsewhere: find its path again.
            p.pmtu = PathMtu::new(self.underlay_mtu);
            p.peer_start = h.seq;
            // A new run of the peer numbers from 0 again.
            p.rx_seq.restart();
            p.up = false;
            new_session = true;
        }
        if p.id != Some(h.sender) {
            p.id = Some(h.sender);
            l.by_id.insert(h.sender, pi);
        }
        p.name = hello.name_str();
        p.last_heard = Some(now);
        if p.addr != from {
            p.addr = from;
        }
        if new_session && had_session {
            info!(lan = %l.spec.name, peer = %from, name = %p.name, "peer (re)started: new session keys");
        }
        if hello.echo == self.public && !p.up {
            p.up = true;
            info!(lan = %l.spec.name, peer = %from, name = %p.name, "tunnel up");
        }
        let needs_reply = new_session || hello.echo != self.public;
        l.rebuild_flood();
        if needs_reply {
            self.queue_hello(lan, pi, now, new_session);
        }
        RxAction::Consumed
    }

    fn queue_hello(&mut self, lan: usize, pi: usize, now: Instant, force: bool) {
        let l = &mut self.lans[lan];
        let Some(p) = l.peers.get_mut(pi) else { return };
        if !force
            && p.last_hello
                .is_some_and(|t| now.saturating_duration_since(t) < HELLO_REPLY_MIN)
        {
            return;
        }
        p.last_hello = Some(now);
        let echo = p.session.as_ref().map_or([0u8; 32], |s| s.peer_public);
        let hdr = Header {
            kind: Kind::Hello,
            flags: 0,
            lan: l.spec.id,
            sender: self.id,
            seq: self.start_ns,
        };
        let hdr_bytes = hdr.to_bytes();
        let mut hello = Hello {
            public: self.public,
            echo,
            name: self.name,
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
        self.out.push_back(out);
    }

    fn queue_keepalive(&mut self, lan: usize, pi: usize, now: Instant) {
        self.queue_sealed(lan, pi, Kind::Keepalive, &[], now);
    }

    /// Queue a small sealed control message (keepalive, probe, probe reply) to a peer, on
    /// the pairwise key and sequence.
    fn queue_sealed(&mut self, lan: usize, pi: usize, kind: Kind, plain: &[u8], now: Instant) {
        self.queue_sealed_on(lan, pi, kind, plain, now, false);
    }

    /// Seal `plain` for peer `pi` on the pairwise key and queue it: on the data sequence,
    /// or (`pmtu`) on the path MTU sequence space, whose losses are not counted.
    fn queue_sealed_on(
        &mut self,
        lan: usize,
        pi: usize,
        kind: Kind,
        plain: &[u8],
        now: Instant,
        pmtu: bool,
    ) {
        let l = &mut self.lans[lan];
        let Some(p) = l.peers.get_mut(pi) else { return };
        let Some(s) = p.session.as_ref() else { return };
        let seq = if pmtu {
            PMTU_SEQ_BIT | p.pmtu_seq
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
            sender: self.id,
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
            p.pmtu_seq += 1;
        } else {
            p.tx_seq += 1;
        }
        p.last_sent = Some(now);
        self.out.push_back(out);
    }

    /// Nanoseconds since this engine's first tick: the clock of probe timestamps.
    fn ts(&self, now: Instant) -> u64 {
        self.epoch
            .map_or(0, |e| now.saturating_duration_since(e).as_nanos() as u64)
    }

    fn queue_probe(&mut self, lan: usize, pi: usize, now: Instant) {
        let Some(p) = self.lans[lan].peers.get_mut(pi) else {
            return;
        };
        // The previous probe got no answer (yet): one more unanswered in a row.
        if p.probes_sent > 0 && p.probes_answered_at != p.probe_id {
            p.unanswered += 1;
        }
        p.probe_id = p.probe_id.wrapping_add(1) & !PING_BIT;
        p.probe_sent_at = Some(now);
        p.probes_sent += 1;
        let mut plain = [0u8; 12];
        plain[..4].copy_from_slice(&p.probe_id.to_be_bytes());
        plain[4..].copy_from_slice(&self.ts(now).to_be_bytes());
        self.queue_sealed(lan, pi, Kind::Probe, &plain, now);
    }

    /// When `tick` next wants to run.
    pub fn next_tick(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Run timers: hellos, keepalives, dead peers, MAC ageing.
    pub fn tick(&mut self, now: Instant) {
        self.next_tick = Some(now + TICK);
        self.reassembly.expire(now);
        self.count_reassembly_drops(None);
        self.epoch.get_or_insert(now);
        let second = self.ts(now) / 1_000_000_000;
        let new_second = self.last_second != Some(second);
        self.last_second = Some(second);
        for l in &mut self.lans {
            for p in &mut l.peers {
                p.series
                    .update(second, p.traffic.tx_bytes, p.traffic.rx_bytes);
                p.rtt.rotate(second);
            }
            if new_second {
                l.vms.tick(second);
                l.flows.expire(second);
            }
        }
        // About one probe per second per peer, but at most PROBE_BUDGET a second in all.
        let up: usize = self.lans.iter().map(|l| l.flood_members.len()).sum();
        let interval = PROBE_INTERVAL.max(Duration::from_secs_f64(up as f64 / PROBE_BUDGET));
        let t = self.timers;
        for li in 0..self.lans.len() {
            let mut changed = false;
            for pi in 0..self.lans[li].peers.len() {
                let l = &mut self.lans[li];
                let p = &mut l.peers[pi];
                let heard_ago = p.last_heard.map(|h| now.saturating_duration_since(h));
                if p.up && heard_ago.is_none_or(|a| a >= t.dead_after) {
                    p.up = false;
                    changed = true;
                    info!(lan = %l.spec.name, peer = %p.addr, name = %p.name, silent_s = t.dead_after.as_secs(), "tunnel down: nothing heard");
                }
                if !p.up {
                    let due = p
                        .last_hello
                        .is_none_or(|h| now.saturating_duration_since(h) >= t.hello_interval);
                    if due {
                        self.queue_hello(li, pi, now, true);
                    }
                    continue;
                }
                // Path MTU probes go beside the RTT probes and keepalives, not instead.
                if let Some(size) = p.pmtu.poll_probe(now)
                    && self.pmtu_probes.len() < 1024
                {
                    self.pmtu_probes.push_back((li, pi, size));
                }
                if self.accounting.probes && p.next_probe.is_none_or(|t| now >= t) {
                    // Spread peers over the interval so probes do not go out in bursts.
                    let spread =
                        interval.mul_f64(0.8 + 0.4 * ((pi * 37 + li * 11) % 100) as f64 / 100.0);
                    p.next_probe = Some(now + spread);
                    self.queue_probe(li, pi, now);
                } else if p
                    .last_sent
                    .is_none_or(|s| now.saturating_duration_since(s) >= t.keepalive_interval)
                {
                    self.queue_keepalive(li, pi, now);
                }
            }
            let l = &mut self.lans[li];
            for p in l.peers.iter_mut() {
                let fresh = p.beacon_at.is_some_and(|b| {
                    now.saturating_duration_since(b).as_secs_f64() < BEACON_TIMEOUT_S
                });
                if p.beacons != fresh {
                    p.beacons = fresh;
                    changed = true;
                }
            }
            if changed {
                l.rebuild_flood();
            }
            let beacon_due = l.spec.flood != FloodMode::Unicast
                && l.spec.group.is_some()
                && l.next_beacon.is_none_or(|b| now >= b);
            if beacon_due {
                l.next_beacon = Some(now + Duration::from_secs(BEACON_INTERVAL_S));
                self.queue_beacon(li);
            }
            let l = &mut self.lans[li];
            if l.next_sweep.is_none_or(|s| now >= s) {
                l.macs.expire(now);
                l.next_sweep = Some(now + t.mac_sweep);
            }
        }
    }

    /// The next control datagram to send (hello, keepalive, probe, path MTU probe),
    /// written into `out` (which needs room for a probe of the underlay MTU).
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if let Some(m) = self.out.pop_front() {
            let dst = out.get_mut(..m.len)?;
            dst.copy_from_slice(&m.buf[..m.len]);
            return Some((m.to, m.len));
        }
        while let Some((li, pi, size)) = self.pmtu_probes.pop_front() {
            if let Some(sent) = self.write_pmtu_probe(li, pi, size, out) {
                return Some(sent);
            }
        }
        None
    }

    /// A path MTU probe of `size` bytes on the underlay (IP packet), sealed into `out`.
    fn write_pmtu_probe(
        &mut self,
        li: usize,
        pi: usize,
        size: u16,
        out: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        let ip_udp = if self.ipv6_underlay {
            crate::proto::UDP_IPV6_OVERHEAD
        } else {
            crate::proto::UDP_IPV4_OVERHEAD
        };
        let l = self.lans.get_mut(li)?;
        let p = l.peers.get_mut(pi).filter(|p| p.up)?;
        let s = p.session.as_ref()?;
        let plain = usize::from(size).checked_sub(ip_udp + OVERHEAD)?.max(2);
        let room = out.get_mut(..HEADER_LEN + plain + TAG_LEN)?;
        let seq = PMTU_SEQ_BIT | p.pmtu_seq;
        write_header(
            room,
            &Header {
                kind: Kind::PmtuProbe,
                flags: 0,
                lan: l.spec.id,
                sender: self.id,
                seq,
            },
        );
        room[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&size.to_be_bytes());
        room[HEADER_LEN + 2..HEADER_LEN + plain].fill(0);
        let n = s.tx.seal(seq, room, plain)?;
        p.pmtu_seq += 1;
        Some((p.addr, n))
    }

    /// Count a send or write failure the runtime saw.
    pub fn note_drop(&mut self, lan: Option<usize>, reason: DropReason) {
        self.note_drops(lan, reason, 1);
    }

    /// Count `n` drops (the datagrams of a failed batch, the segments of a failed write).
    pub fn note_drops(&mut self, lan: Option<usize>, reason: DropReason, n: u64) {
        match lan.and_then(|i| self.lans.get_mut(i)) {
            Some(l) => l.drops.add(reason, n),
            None => self.drops.add(reason, n),
        }
    }

    /// The reassembly table's counters (all LANs).
    pub fn reassembly_stats(&self) -> ReassemblyStats {
        self.reassembly.stats()
    }

    /// Drops not tied to a LAN.
    pub fn host_drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Status of every LAN.
    pub fn lan_status(&self, now: Instant) -> Vec<LanStatus> {
        self.lans
            .iter()
            .map(|l| LanStatus {
                name: l.spec.name.clone(),
                id: l.spec.id,
                segment: l.spec.segment.clone(),
                tap: l.spec.tap.clone(),
                mtu: l.spec.mtu,
                macs: l.macs.len(),
                mac_stats: l.macs.stats(),
                flood_tx_frames: l.flood.frames,
                flood: FloodStatus {
                    mode: l.spec.flood.name(),
                    group: l.spec.group.map(|g| g.to_string()),
                    forwarder: l.plan.forwarder,
                    subnets: l
                        .plan
                        .subnets
                        .iter()
                        .map(|sp| SubnetStatus {
                            subnet: sp.subnet.to_string(),
                            hosts: sp.hosts,
                            forwarder: sp.forwarder.clone(),
                            mode: sp.mode,
                            reason: sp.reason.clone(),
                        })
                        .collect(),
                    stats: l.flood,
                },
                drops: l.drops.clone(),
                vm_table: l.vms.stats(),
                flow_table: l.flows.stats(),
                fragmented_frames_total: l.frags.frames,
                fragments_sent_total: l.frags.fragments,
                peers: l
                    .peers
                    .iter()
                    .map(|p| PeerStatus {
                        id: p.id,
                        name: p.name.clone(),
                        address: p.addr.to_string(),
                        source: p.source.name(),
                        state: if p.up { "up" } else { "handshaking" },
                        last_heard_ago_ms: p
                            .last_heard
                            .map(|h| now.saturating_duration_since(h).as_millis() as u64),
                        traffic: p.traffic,
                        sequence: p.rx_seq.stats(),
                        rtt: p.rtt.summary(),
                        probes_sent_total: p.probes_sent,
                        probes_answered_total: p.probes_answered,
                        loss_tx_ratio: match p.tx_seen {
                            (0, 0) => 0.0,
                            (rx, lost) => lost as f64 / (rx + lost) as f64,
                        },
                        health: health(p, now),
                        rates: p.series.rates(),
                        tx_utilisation_ratio: self
                            .accounting
                            .link_speed_bps
                            .map(|b| p.series.rates().tx_rate_bps as f64 / b.max(1) as f64),
                        rx_utilisation_ratio: self
                            .accounting
                            .link_speed_bps
                            .map(|b| p.series.rates().rx_rate_bps as f64 / b.max(1) as f64),
                        loss_rx_ratio: p.rx_seq.stats().loss_ratio(),
                        drops: p.drops.clone(),
                        unauthenticated_drops_total: p.unauthenticated_drops,
                        path_mtu_bytes: p.pmtu.current(),
                        path_mtu_searching: matches!(
                            p.pmtu.phase(),
                            crate::engine::pmtu::Phase::Searching { .. }
                        ),
                        path_mtu_black_holes_total: p.pmtu.black_holes,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The MAC databases, optionally of one LAN.
    pub fn mac_rows(&self, lan: Option<&str>, now: Instant) -> Vec<MacRow> {
        let mut rows = Vec::new();
        for l in self
            .lans
            .iter()
            .filter(|l| lan.is_none_or(|n| n == l.spec.name))
        {
            for e in l.macs.entries(now) {
                let (location, peer_name) = match e.at {
                    Location::Local => ("local".to_string(), None),
                    Location::Peer(i) => match l.peers.get(i) {
                        Some(p) => (
                            p.addr.to_string(),
                            Some(p.name.clone()).filter(|n| !n.is_empty()),
                        ),
                        None => ("?".to_string(), None),
                    },
                };
                rows.push(MacRow {
                    lan: l.spec.name.clone(),
                    mac: fmt_mac(&e.mac),
                    location,
                    peer_name,
                    age_ms: e.age.as_millis() as u64,
                });
            }
        }
        rows
    }

    /// Send a `vmvpn ping` probe to a target: a peer's name, id or underlay address
    /// (`ip` or `ip:port`), or a VM's IP address (the probe goes to the peer behind it).
    pub fn ping(&mut self, target: &str, now: Instant) -> Result<PingSent, String> {
        let (li, pi, via_vm) = self.resolve(target, now)?;
        let l = &self.lans[li];
        let p = &l.peers[pi];
        if !p.up || p.session.is_none() {
            return Err(format!(
                "tunnel to {} ({}) on {} is not up (state: handshaking)",
                if p.name.is_empty() { "?" } else { &p.name },
                p.addr,
                l.spec.name
            ));
        }
        self.ping_seq = self.ping_seq.wrapping_add(1);
        let id = PING_BIT | (self.ping_seq & !PING_BIT);
        let mut plain = [0u8; 12];
        plain[..4].copy_from_slice(&id.to_be_bytes());
        plain[4..].copy_from_slice(&self.ts(now).to_be_bytes());
        self.queue_sealed(li, pi, Kind::Probe, &plain, now);
        let l = &self.lans[li];
        let p = &l.peers[pi];
        Ok(PingSent {
            id,
            lan: l.spec.name.clone(),
            peer: p.name.clone(),
            address: p.addr,
            via_vm: via_vm.map(|m| fmt_mac(&m)),
        })
    }

    fn resolve(&self, target: &str, now: Instant) -> Result<(usize, usize, Option<Mac>), String> {
        let t = target.trim();
        // A peer by name, id or address.
        for (li, l) in self.lans.iter().enumerate() {
            for (pi, p) in l.peers.iter().enumerate() {
                let by_addr = t.parse::<SocketAddr>().is_ok_and(|a| a == p.addr)
                    || t.parse::<IpAddr>().is_ok_and(|ip| ip == p.addr.ip());
                let by_name = !p.name.is_empty() && p.name == t;
                let by_id = p.id.is_some_and(|id| t.parse::<u32>() == Ok(id));
                if by_addr || by_name || by_id {
                    return Ok((li, pi, None));
                }
            }
        }
        // A VM by its IP: the MAC from the VM table, the peer from the MAC database.
        if let Ok(ip) = t.parse::<IpAddr>() {
            for (li, l) in self.lans.iter().enumerate() {
                let Some(mac) = l.vms.by_ip(ip) else { continue };
                return match l.macs.lookup(&mac, now) {
                    Some(Location::Peer(pi)) => Ok((li, pi, Some(mac))),
                    Some(Location::Local) => Err(format!(
                        "{ip} is VM {} on this host (no tunnel to probe)",
                        fmt_mac(&mac)
                    )),
                    None => Err(format!(
                        "{ip} is VM {} but its MAC has aged out; send it some traffic first",
                        fmt_mac(&mac)
                    )),
                };
            }
        }
        Err(format!(
            "no peer named {t:?} and no VM seen with that address (try a peer name, id or \
             underlay address from `vmvpn status`, or a VM IP from `vmvpn vms`)"
        ))
    }

    /// The next answer to a `vmvpn ping` probe.
    pub fn poll_pong(&mut self) -> Option<Pong> {
        self.pongs.pop_front()
    }

    /// Per-VM traffic, the VM matrix as this host saw it, and flows (at most `top` per
    /// LAN, busiest first), optionally of one LAN.
    pub fn traffic(&self, lan: Option<&str>, top: Option<usize>) -> Vec<LanTraffic> {
        let now_s = self.last_second.unwrap_or(0);
        self.lans
            .iter()
            .filter(|l| lan.is_none_or(|n| n == l.spec.name))
            .map(|l| LanTraffic {
                lan: l.spec.name.clone(),
                vms: l.vms.rows(now_s),
                pairs: l.vms.pairs(),
                flows: l.flows.rows(now_s, top),
                vm_table: l.vms.stats(),
                flow_table: l.flows.stats(),
            })
            .collect()
    }

    /// Cumulative RTT histograms per (LAN, peer address), for Prometheus.
    pub fn rtt_buckets(&self) -> Vec<(String, String, telemetry::RttBuckets)> {
        self.lans
            .iter()
            .flat_map(|l| {
                l.peers
                    .iter()
                    .map(|p| (l.spec.name.clone(), p.addr.to_string(), *p.rtt.buckets()))
            })
            .collect()
    }

    /// What is measured.
    pub fn accounting(&self) -> Accounting {
        self.accounting
    }

    /// Whether a LAN by this name exists.
    pub fn has_lan(&self, name: &str) -> bool {
        self.lans.iter().any(|l| l.spec.name == name)
    }

    /// Test and diagnostic hook: fingerprint of the pairwise send key to a peer.
    #[doc(hidden)]
    pub fn tx_key_fingerprint(&self, lan: usize, addr: SocketAddr) -> Option<u64> {
        let l = self.lans.get(lan)?;
        let p = &l.peers[l.peer_by_addr(addr)?];
        p.session.as_ref().map(|s| s.tx.fingerprint())
    }

    /// Test and diagnostic hook: fingerprint of this host's group key on a LAN.
    #[doc(hidden)]
    pub fn group_key_fingerprint(&self, lan: usize) -> Option<u64> {
        self.lans.get(lan).map(|l| l.group_tx.fingerprint())
    }
}

/// How a tunnel is doing, from its probes: "unknown" before any answer, "down" after
/// `DOWN_AFTER_PROBES` unanswered probes in a row with nothing else heard for as long,
/// "degraded" with any unanswered in a row or loss over 1 % either way, else "ok".
fn health(p: &Peer, now: Instant) -> &'static str {
    if p.probes_answered == 0 {
        return "unknown";
    }
    if !p.up {
        // It answered before and has gone silent for `dead_after`.
        return "down";
    }
    let quiet = p
        .last_heard
        .is_none_or(|h| now.saturating_duration_since(h) >= PROBE_INTERVAL * DOWN_AFTER_PROBES);
    // The latest probe counts as lost once it is a probe interval late.
    let overdue = p.probes_answered_at != p.probe_id
        && p.probe_sent_at
            .is_some_and(|t| now.saturating_duration_since(t) >= PROBE_INTERVAL);
    let lost_in_row = p.unanswered + u32::from(overdue);
    if lost_in_row >= DOWN_AFTER_PROBES && quiet {
        return "down";
    }
    let lossy = p.rx_seq.stats().loss_ratio() > 0.01
        || matches!(p.tx_seen, (rx, lost) if lost * 100 > rx + lost);
    if lost_in_row > 0 || lossy {
        "degraded"
    } else {
        "ok"
    }
}

/// The buffer size the runtime needs per frame for a given max frame length: the frame
/// sealed, or laid out as fragments in place.
pub const fn buffer_len(max_frame: usize) -> usize {
    max_frame + OVERHEAD + frag::MAX_FRAGMENTS * frag::PER_FRAGMENT
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

fn write_header(buf: &mut [u8], h: &Header) {
    if let Some(b) = buf.first_chunk_mut::<HEADER_LEN>() {
        h.emit(b);
    }
}

/// A frame that authenticated from peer `pi`: learn its source, count it, clamp the MSS
/// of a SYN to the path back to that peer. Err: drop it for this reason (counted).
fn deliver(
    l: &mut Lan,
    pi: usize,
    frame: &mut [u8],
    flows: bool,
    second: u64,
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
    let p = &mut l.peers[pi];
    p.traffic.rx(n);
    // The peer clamps what it sends; clamping here too covers a peer that does not.
    crate::engine::mss::clamp(
        frame,
        crate::engine::mss::frame_cap(usize::from(p.pmtu.current()), ipv6_underlay),
    );
    if flows && let Some(info) = inspect(frame) {
        l.vms.observe(&info, n, false, second);
        l.flows.observe(&info, n, second);
    }
    Ok(())
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

#[cfg(test)]
mod tests;
