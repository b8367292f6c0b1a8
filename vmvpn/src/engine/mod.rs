//! The forwarding core: sans-IO, owned by one data-plane thread.
//!
//! Spread over files by concern, as quinn-proto spreads its `Connection`: `datapath`
//! (frames in and out), `handshake` (hellos, sessions), `beacons` (multicast presence),
//! `probes` (RTT, loss, `vmvpn ping`, path MTU), `timers` (one table behind
//! [`Engine::poll_timeout`]), `transmit` (control datagrams out), `snapshot` (status),
//! `measure` (the telemetry and export state, beside the forwarding state), with the
//! state in `lan` and `peer`. The verbs are uniform: `handle_*` takes input,
//! `poll_*` hands out what to do.
//!
//! The runtime hands it "frame read from TAP", "datagram from the underlay" and "timeout";
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
pub mod limits;
pub mod macdb;
pub mod mss;
pub mod pmtu;
pub mod reassembly;
pub mod sampling;
pub mod service;

mod beacons;
mod burst;
mod datapath;
mod events;
pub mod figures;
mod handshake;
mod ids;
mod lan;
mod measure;
mod nonces;
pub mod opened;
mod peer;
mod probes;
mod reach;
pub use reach::Reached;
mod reconfig;
pub mod relays;
pub mod snapshot;
mod spread;
mod timers;
mod transmit;
mod tunnel;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use telemetry::{DropCounters, DropReason};
use tracing::info;
use x25519_dalek::StaticSecret;

pub use crate::status::PeerSource;
pub use events::{Event, PingSent, Pong, TunnelChange};
pub use ids::{LanId, PeerId};
pub use timers::TICK;

use crate::aqm::signal::Signal;
use crate::proto::crypto::{Cipher, LanSecret, SealKey, public_of};
use crate::proto::fragment as frag;
use crate::proto::{MAX_FLOW_LABEL, OVERHEAD, name_field};
use flood::FloodMode;
use lan::Lan;
use peer::Peer;
use reassembly::{FragDrop, Reassembly};

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

/// What the exports ask of the core (`[export]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sampling {
    /// sFlow: sample 1 in this many frames, with this seed (hosts pick out of step).
    pub sflow: Option<(u32, u64)>,
    /// IPFIX: flow records, long flows every this many seconds.
    pub ipfix_active_s: Option<u64>,
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
    /// Rate limits of its VMs and of the whole LAN on this host.
    pub limits: Vec<limits::LimitSpec>,
    /// Its service addresses (`[[lan.service]]`).
    pub services: Vec<service::ServiceSpec>,
}

/// What to do with a frame read from a TAP.
#[derive(Debug, PartialEq, Eq)]
pub enum TapAction<'a> {
    /// Send `buf[..len]` to this one peer.
    Unicast(SocketAddr, usize),
    /// As `Unicast`, but not sealed yet (see [`Engine::seal_elsewhere`]): `buf[..len]` holds
    /// the header, the frame and room for the tag; seal it with `Sealer::seal` before it
    /// is sent, in the order of its sequence number among the peer's datagrams.
    Unsealed(SocketAddr, usize, Sealer<'a>),
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
    /// Over its VM's or LAN's rate limit: dropped, counted by the limit.
    Limited,
    /// An answer for the VM (ARP for a service address): write `buf[HEADER_LEN..][..len]`
    /// back to the TAP.
    Reply(usize),
    /// Taken by the engine (the answer to a service health probe): nothing to send.
    Consumed,
}

/// The key that seals an [`TapAction::Unsealed`] datagram, shared with whoever seals it.
#[derive(Clone, Copy)]
pub struct Sealer<'a>(pub &'a Arc<SealKey>);

impl Sealer<'_> {
    /// Seal the datagram `d` (header, frame, room for the tag) in place; its length.
    pub fn seal(&self, d: &mut [u8]) -> Option<usize> {
        self.0.seal_datagram(d)
    }
}

impl std::fmt::Debug for Sealer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({:016x})", self.0.fingerprint())
    }
}

impl PartialEq for Sealer<'_> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.0, other.0)
    }
}

impl Eq for Sealer<'_> {}

/// A flood from another subnet that this host, as designated forwarder, passes on inside
/// its subnet: the sender's sealed datagram, unchanged.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Relay<'a> {
    /// This subnet's targets.
    pub to: &'a [SocketAddr],
    /// The datagram.
    pub datagram: &'a [u8],
}

/// What to do with a datagram from the underlay.
#[derive(Debug, PartialEq, Eq)]
pub enum RxAction<'a> {
    /// Write `buf[frame]` (an Ethernet frame) to the TAP of `lan`, and send `relay` on.
    Tap {
        /// The LAN.
        lan: LanId,
        /// The peer it came from (a flood relayed by a forwarder: the forwarder).
        peer: PeerId,
        /// Where the frame is in the buffer.
        frame: Range<usize>,
        /// Its sender computed its TCP or UDP checksum (`FLAG_CHECKSUMS`): the coalescer
        /// need not sum it again.
        summed: bool,
        /// As designated forwarder: what to pass on inside this subnet.
        relay: Option<Relay<'a>>,
    },
    /// A frame put back together from fragments: write [`Engine::reassembled`] to the TAP
    /// of `lan` (and send `relay` on, as for `Tap`).
    TapReassembled {
        /// The LAN.
        lan: LanId,
        /// As designated forwarder: what to pass on inside this subnet.
        relay: Option<Relay<'a>>,
    },
    /// Nothing for the TAP (a fragment held, or dropped), but as designated forwarder
    /// pass this on inside this subnet.
    Relay {
        /// The LAN.
        lan: LanId,
        /// What to send.
        relay: Relay<'a>,
    },
    /// A control message, handled; check `poll_transmit`.
    Consumed,
    /// Dropped (already counted).
    Drop(DropReason),
}

/// The forwarding core of one host.
pub struct Engine {
    /// Who this host is in hellos: id, name, this run's keys and start.
    me: handshake::Me,
    timers: Timers,
    lans: Vec<Lan>,
    /// Every datagram looks its LAN up here: FxHash (see the workspace's Cargo.toml).
    lan_index: FxHashMap<u32, LanId>,
    drops: DropCounters,
    /// Control datagrams waiting for `poll_transmit`.
    out: VecDeque<transmit::Outgoing>,
    /// When each periodic job runs next.
    deadlines: timers::Deadlines,
    /// The relay copy of the latest flood (sent or to pass on), sealed in place.
    relay_buf: Vec<u8>,
    relay_len: usize,
    /// The first timeout's time: the origin of probe timestamps.
    epoch: Option<Instant>,
    ping_seq: u32,
    events: events::Events,
    /// When the datagram being handled reached this host (see `handle_datagram_at`).
    rx_arrived: Option<Instant>,
    /// Whether the datagram being handled was opened already (`handle_datagram_opened`).
    rx_pre: opened::PreOpen,
    /// See `rx_keys_epoch`.
    rx_keys_epoch: u64,
    /// Frames being put back together from fragments.
    reassembly: Reassembly,
    /// Reassembly drops already added to the drop counters.
    reassembly_seen: [(FragDrop, u64); 4],
    /// The underlay MTU: the largest path MTU probed.
    underlay_mtu: u16,
    ipv6_underlay: bool,
    /// Unicast data leaves unsealed (`TapAction::Unsealed`): the send thread seals it.
    seal_elsewhere: bool,
    /// Flow ports besides the data port (`[host] flow_ports`, see `spread`): unicast data
    /// to a peer that takes it leaves from the one its flow hashes to.
    flow_ports: u8,
    /// This host's underlay address and prefix, for LANs added later.
    underlay: Option<(IpAddr, u8)>,
    /// Path MTU probes to send: (LAN, the peer's address, IP packet size). The peer is
    /// named by address, not by `PeerId`: removing a peer renumbers the others, and these
    /// wait between `handle_timeout` and `poll_transmit`.
    pmtu_probes: VecDeque<(LanId, SocketAddr, u16)>,
    /// What is measured of the traffic, and the exports' sampler and settings.
    measure: measure::Measure,
    /// This host's libvirt domains (name, MACs), for services naming their backends.
    vm_names: Vec<(String, Vec<macdb::Mac>)>,
    /// The relays to ask when no path opens (`[host] relays`).
    relays: Vec<SocketAddr>,
    /// The latest relay message's sequence.
    relay_seq: u64,
    /// Where new sequence counters start: above every number sent under keys this run
    /// may meet again (see `nonces`).
    seq_floor: u64,
}

/// Flow records held per LAN until the exporter takes them (every 250 ms).
pub const FLOW_RECORD_QUEUE: usize = 4096;

/// What [`Engine::take_exports`] handed over besides the buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportTake {
    /// sFlow samples lost for want of room, so far.
    pub sample_drops: u32,
    /// Flow records lost for want of room, so far (all LANs).
    pub record_drops: u64,
    /// The engine's clock (s), the one flow records' times are on.
    pub now_s: u64,
}

impl Engine {
    /// A core for this host and these LANs.
    pub fn new(host: HostIdentity, lans: Vec<LanSpec>, timers: Timers) -> Self {
        let secret = StaticSecret::from(host.secret);
        let public = public_of(&secret);
        let max_frame = lans.iter().map(|l| l.max_frame).max().unwrap_or(0);
        let mut engine = Engine {
            me: handshake::Me {
                id: host.id,
                name: name_field(&host.name),
                secret,
                public,
                start_ns: host.start_ns,
            },
            timers,
            lans: Vec::with_capacity(lans.len()),
            lan_index: FxHashMap::default(),
            drops: DropCounters::default(),
            out: VecDeque::with_capacity(64),
            deadlines: timers::Deadlines::default(),
            relay_buf: vec![0u8; buffer_len(max_frame)],
            relay_len: 0,
            epoch: None,
            ping_seq: 0,
            events: events::Events::default(),
            rx_arrived: None,
            rx_pre: opened::PreOpen::No,
            rx_keys_epoch: 0,
            reassembly: Reassembly::new(max_frame),
            reassembly_seen: [
                (FragDrop::Overlap, 0),
                (FragDrop::Oversize, 0),
                (FragDrop::Timeout, 0),
                (FragDrop::Evicted, 0),
            ],
            underlay_mtu: 1500,
            ipv6_underlay: host.underlay.is_some_and(|(ip, _)| ip.is_ipv6()),
            seal_elsewhere: false,
            flow_ports: 0,
            underlay: host.underlay,
            pmtu_probes: VecDeque::with_capacity(64),
            measure: measure::Measure::default(),
            vm_names: Vec::new(),
            relays: Vec::new(),
            relay_seq: 0,
            seq_floor: 0,
        };
        for spec in lans {
            let statics = spec.peers.clone();
            let li = LanId(engine.lans.len());
            engine.lan_index.insert(spec.id, li);
            engine
                .lans
                .push(Lan::new(spec, host.id, host.underlay, &public, 0));
            for addr in statics {
                engine.add_peer(li, addr, PeerSource::Static, None);
            }
        }
        engine.set_accounting(Accounting::default());
        engine
    }

    /// Leave unicast data unsealed (`TapAction::Unsealed`) for another thread to seal,
    /// so that the AEAD, the largest cost of a datagram, runs beside the loop (`[host]
    /// threads`). Everything else (fragments, floods, control) is still sealed here.
    pub fn seal_elsewhere(&mut self, on: bool) {
        self.seal_elsewhere = on;
    }

    /// Spread unicast data over `ports` flow ports besides the data port (capped at
    /// [`MAX_FLOW_LABEL`]; 0: none): to each peer whose hellos say it takes them and that
    /// is reached at its listed address, a frame leaves labelled with the port its flow
    /// hashes to (see `spread`); the runtime sends it from that port.
    pub fn spread_flows(&mut self, ports: u8) {
        self.flow_ports = ports.min(MAX_FLOW_LABEL);
    }

    /// The flow ports unicast data is spread over (see [`Engine::spread_flows`]).
    pub fn flow_ports(&self) -> u8 {
        self.flow_ports
    }

    /// The underlay MTU (the largest path MTU any tunnel can have; 1500 unless set).
    pub fn set_underlay_mtu(&mut self, mtu: u16) {
        self.underlay_mtu = mtu;
        for l in &mut self.lans {
            for p in &mut l.peers {
                p.path.mtu = pmtu::PathMtu::new(mtu);
            }
        }
    }

    /// The LAN named `name`, or the error a request naming it gets.
    pub(crate) fn lan_named_mut(&mut self, name: &str) -> Result<&mut Lan, String> {
        self.lans
            .iter_mut()
            .find(|l| l.spec.name == name)
            .ok_or_else(|| format!("no LAN named {name:?} on this host"))
    }

    /// The wire id of every LAN, in order (IPFIX's observation domains).
    pub fn lan_ids(&self) -> Vec<u32> {
        self.lans.iter().map(|l| l.spec.id).collect()
    }

    /// The wire id of every LAN, in order, without allocating.
    pub fn lan_ids_iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.lans.iter().map(|l| l.spec.id)
    }

    /// A LAN's multicast group on the underlay, if it has one.
    pub fn lan_group(&self, lan: LanId) -> Option<SocketAddr> {
        self.lans.get(lan.index()).and_then(|l| l.spec.group)
    }

    /// This host's id.
    pub fn id(&self) -> u32 {
        self.me.id
    }

    /// Number of LANs.
    pub fn lan_count(&self) -> usize {
        self.lans.len()
    }

    /// A LAN by name.
    pub fn lan_index(&self, name: &str) -> Option<LanId> {
        self.lans
            .iter()
            .position(|l| l.spec.name == name)
            .map(LanId)
    }

    /// Whether a LAN by this name exists.
    pub fn has_lan(&self, name: &str) -> bool {
        self.lan_index(name).is_some()
    }

    /// Add a peer address to a LAN. The handshake starts at the next timeout. A peer
    /// already known from a hello is now vouched for by the new source; a static one
    /// stays static.
    ///
    /// `prefix` is the peer's underlay prefix length, when known (the bulletin's records);
    /// without it the peer's subnet is assumed to have this host's prefix length.
    pub fn add_peer(
        &mut self,
        lan: LanId,
        addr: SocketAddr,
        source: PeerSource,
        prefix: Option<u8>,
    ) {
        self.add_peer_reached(lan, addr, Reached::default(), source, prefix);
    }

    /// [`add_peer`](Self::add_peer), with what the bulletin knows of reaching it: further
    /// addresses it may answer at (its NAT's public mapping), where hellos go as well as
    /// to `addr` until one answers, and its host id, which an authentic hello from any
    /// address matches. A removal still names `addr`.
    pub fn add_peer_reached(
        &mut self,
        lan: LanId,
        addr: SocketAddr,
        reached: Reached,
        source: PeerSource,
        prefix: Option<u8>,
    ) {
        let others = &reached.others[..];
        let Some(l) = self.lans.get_mut(lan.index()) else {
            return;
        };
        let found = l.peer_listed(addr).or_else(|| {
            // Heard from before it was listed: by its id, or at one of its other addresses.
            l.peers
                .iter()
                .position(|p| {
                    p.source == PeerSource::Hello
                        && (others.contains(&p.addr)
                            || reached.host_id.is_some_and(|id| p.id == Some(id)))
                })
                .map(PeerId::at)
        });
        let i = match found {
            None => {
                l.peers
                    .push(Peer::new(addr, source, self.underlay_mtu, self.seq_floor));
                l.peers.len() - 1
            }
            Some(i) => {
                let p = &mut l.peers[i.index()];
                if p.source == PeerSource::Hello {
                    p.source = source;
                    p.reach.relist(addr);
                }
                i.index()
            }
        };
        l.peers[i].reach.set_others(others);
        l.peers[i].reach.host_id = reached.host_id;
        if prefix.is_some() && l.peers[i].prefix != prefix {
            l.peers[i].prefix = prefix;
            l.rebuild_flood();
        }
    }

    /// Remove a peer that left (the bulletin said so), with its MACs. Static peers stay:
    /// the operator listed them.
    pub fn remove_peer(&mut self, lan: LanId, addr: SocketAddr) {
        let Some(l) = self.lans.get_mut(lan.index()) else {
            return;
        };
        let Some(pi) = l.peer_listed(addr) else {
            return;
        };
        let p = &l.peers[pi.index()];
        if p.source == PeerSource::Static {
            return;
        }
        info!(lan = %l.spec.name, peer = %addr, name = %p.name, "peer removed: left the LAN");
        let next = l.remove_peer(pi);
        self.retire_seq(next);
    }

    /// Remove a static peer the config no longer lists (a reload), with its MACs; a peer
    /// of another source stays. True when it was removed.
    pub fn unlist_peer(&mut self, lan: LanId, addr: SocketAddr) -> bool {
        let Some(l) = self.lans.get_mut(lan.index()) else {
            return false;
        };
        let Some(pi) = l.peer_listed(addr) else {
            return false;
        };
        let p = &l.peers[pi.index()];
        if p.source != PeerSource::Static {
            return false;
        }
        info!(lan = %l.spec.name, peer = %addr, name = %p.name, "peer removed: no longer in the config");
        let next = l.remove_peer(pi);
        self.retire_seq(next);
        true
    }

    /// Count a send or write failure the runtime saw.
    pub fn note_drop(&mut self, lan: Option<LanId>, reason: DropReason) {
        self.note_drops(lan, reason, 1);
    }

    /// CoDel on the receive queue signalled congestion on a frame from `peer`: dropped it
    /// (counted as an `aqm` drop of the LAN and the peer), or marked it CE.
    pub fn note_congestion(&mut self, lan: LanId, peer: PeerId, signal: Signal) {
        let Some(l) = self.lans.get_mut(lan.index()) else {
            return;
        };
        match signal {
            Signal::Spared => {}
            Signal::Drop => {
                l.drop_at(Some(peer), DropReason::Aqm);
            }
            Signal::Marked => {
                if let Some(p) = l.peers.get_mut(peer.index()) {
                    p.count.aqm_marks += 1;
                }
            }
        }
    }

    /// Count `n` drops (the datagrams of a failed batch, the segments of a failed write).
    pub fn note_drops(&mut self, lan: Option<LanId>, reason: DropReason, n: u64) {
        match lan.and_then(|i| self.lans.get_mut(i.index())) {
            Some(l) => l.drops.add(reason, n),
            None => self.drops.add(reason, n),
        }
    }

    /// The next event (pong, tunnel up or down), oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// Test and diagnostic hook: fingerprint of the pairwise send key to a peer.
    #[doc(hidden)]
    pub fn tx_key_fingerprint(&self, lan: LanId, addr: SocketAddr) -> Option<u64> {
        let l = self.lans.get(lan.index())?;
        let p = &l.peers[l.peer_by_addr(addr)?.index()];
        p.tunnel.session().map(|s| s.tx.fingerprint())
    }

    /// Test and diagnostic hook: fingerprint of this host's group key on a LAN.
    #[doc(hidden)]
    pub fn group_key_fingerprint(&self, lan: LanId) -> Option<u64> {
        self.lans.get(lan.index()).map(|l| l.group_tx.fingerprint())
    }

    /// Nanoseconds since this engine's first timeout: the clock of probe timestamps.
    fn ts(&self, now: Instant) -> u64 {
        self.epoch
            .map_or(0, |e| now.saturating_duration_since(e).as_nanos() as u64)
    }
}

/// The buffer size the runtime needs per frame for a given max frame length: the frame
/// sealed, or laid out as fragments in place.
pub const fn buffer_len(max_frame: usize) -> usize {
    max_frame + OVERHEAD + frag::MAX_FRAGMENTS * frag::PER_FRAGMENT
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl Engine {
    /// Send to the LAN's first peer at `addr` from now on (a peer slow to change paths).
    pub(crate) fn move_peer_for_test(&mut self, lan: LanId, addr: SocketAddr) {
        if let Some(p) = self.lans[lan.index()].peers.first_mut() {
            p.addr = addr;
        }
    }
}
