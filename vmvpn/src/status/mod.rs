//! What `vmvpn status` and `vmvpn macs` report: the JSON contract of the control socket.
//!
//! Key names are stable and carry their unit where they have one (`_ms`, `_bytes`). The
//! types serialize and deserialize, so the daemon writes them and the CLI, `/metrics` and
//! the reports read them back typed: a renamed key fails to build or to parse, never
//! reads as 0. `status/keys.golden` pins the keys
//! (`VMVPN_BLESS=1` rewrites it), and each type's [`Exposed`] table says which fields
//! `/metrics` shows and how. Pure data: every layer may read it, and
//! it imports nothing of vmvpn's.

pub mod metric;
pub mod relay;

use metric::{Exposed, Metric, counter, gauge};
use serde::{Deserialize, Serialize};
use telemetry::{
    DropCounters, DropReason, FlowRow, FlowStats, PairRow, Rates, RttSummary, SeqStats,
    TrafficCounters, VmRow, VmTableStats,
};

/// The whole host, as `vmvpn status --json` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// This host.
    pub host: HostStatus,
    /// Datagrams dropped before they could be tied to a LAN (bad header, unknown LAN).
    pub drops: DropCounters,
    /// One entry per configured LAN.
    pub lans: Vec<LanStatus>,
    /// The bulletin connection (null when the config has no `[bulletin]`).
    pub bulletin: Option<BulletinStatus>,
    /// TAP offloads and UDP GSO.
    pub offload: OffloadStats,
    /// The receive queue and its CoDel.
    #[serde(default)]
    pub queue: QueueStats,
    /// Frames put back together from overlay fragments (all LANs), and why some were not.
    pub reassembly: ReassemblyStats,
    /// The standard exports (`[export]`); each null when not configured.
    #[serde(default)]
    pub export: ExportStatus,
    /// VM names from libvirt (`[libvirt]`); null when not configured.
    #[serde(default)]
    pub libvirt: Option<LibvirtStatus>,
    /// The relay this host runs (`[host] relay`); null when not configured.
    #[serde(default)]
    pub relay: Option<relay::RelayStatus>,
}

/// A count as a sample.
fn n(x: u64) -> Option<f64> {
    Some(x as f64)
}

/// µs, when measured, as seconds (Prometheus' base unit).
fn us(x: Option<u64>) -> Option<f64> {
    x.map(|us| us as f64 / 1e6)
}

impl Exposed for Status {
    const METRICS: &'static [Metric<Self>] =
        &[gauge("vmvpn_up", "1 while the daemon answers.", |_| {
            Some(1.0)
        })];
}

/// Reading VM names from libvirt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LibvirtStatus {
    /// The connection URI.
    pub uri: String,
    /// Domains found at the last good refresh.
    pub domains: usize,
    /// MACs they hold.
    pub macs: usize,
    /// Seconds since the last good refresh (null: none yet).
    pub refreshed_ago_s: Option<u64>,
    /// Good refreshes.
    pub refreshes_total: u64,
    /// Failed ones.
    pub errors_total: u64,
    /// Refreshes a domain event asked for (besides the periodic ones).
    #[serde(default)]
    pub events_total: u64,
    /// Why the last one failed (null once one works).
    pub last_error: Option<String>,
    /// Limits naming a VM (`vm = "…"`) that libvirt does not know: not applied until it does.
    #[serde(default)]
    pub unresolved_limits: Vec<String>,
}

/// The standard exports at work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportStatus {
    /// sFlow v5 (`[export.sflow]`).
    pub sflow: Option<SflowStatus>,
    /// IPFIX (`[export.ipfix]`).
    pub ipfix: Option<IpfixStatus>,
    /// Redis (`[export.redis]`).
    pub redis: Option<RedisStatus>,
}

/// The sFlow agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SflowStatus {
    /// Collectors, `ADDR:PORT`.
    pub collectors: Vec<String>,
    /// 1 in this many frames.
    pub sampling_rate: u32,
    /// Datagrams sent (each to every collector counts once).
    pub datagrams_total: u64,
    /// Flow samples sent.
    pub flow_samples_total: u64,
    /// Counter samples sent.
    pub counter_samples_total: u64,
    /// Flow samples lost because the exporter fell behind.
    pub dropped_samples_total: u64,
    /// Sends that failed.
    pub send_errors_total: u64,
    /// The last send error, if any.
    pub last_error: Option<String>,
}

impl Exposed for SflowStatus {
    const METRICS: &'static [Metric<Self>] = &[
        counter(DATAGRAMS, DATAGRAMS_HELP, |x: &SflowStatus| {
            n(x.datagrams_total)
        })
        .labelled(SFLOW),
        counter(
            ERRORS,
            ERRORS_HELP,
            |x: &SflowStatus| n(x.send_errors_total),
        )
        .labelled(SFLOW),
        counter(DROPPED, DROPPED_HELP, |x: &SflowStatus| {
            n(x.dropped_samples_total)
        })
        .labelled(SFLOW),
        counter(SAMPLES, SAMPLES_HELP, |x: &SflowStatus| {
            n(x.flow_samples_total)
        })
        .labelled("kind=\"flow\""),
        counter(SAMPLES, SAMPLES_HELP, |x: &SflowStatus| {
            n(x.counter_samples_total)
        })
        .labelled("kind=\"counter\""),
    ];
}

// Families the exporters share, told apart by an `exporter` label.
const DATAGRAMS: &str = "vmvpn_export_datagrams_total";
const DATAGRAMS_HELP: &str = "sFlow datagrams and IPFIX messages sent, each collector counted.";
const ERRORS: &str = "vmvpn_export_errors_total";
const ERRORS_HELP: &str = "Sends, connections or writes of an exporter that failed.";
const DROPPED: &str = "vmvpn_export_dropped_total";
const DROPPED_HELP: &str = "Samples, records or events an exporter lost for want of room.";
const SAMPLES: &str = "vmvpn_export_sflow_samples_total";
const SAMPLES_HELP: &str = "sFlow samples sent, by kind.";
const SFLOW: &str = "exporter=\"sflow\"";
const IPFIX: &str = "exporter=\"ipfix\"";
const REDIS: &str = "exporter=\"redis\"";

/// The IPFIX exporter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpfixStatus {
    /// Collectors, `ADDR:PORT`.
    pub collectors: Vec<String>,
    /// Messages sent (each to every collector counts once).
    pub messages_total: u64,
    /// Flow records sent.
    pub records_total: u64,
    /// Messages that carried the templates.
    pub template_messages_total: u64,
    /// VM name options records sent (with libvirt).
    pub vm_name_records_total: u64,
    /// Flow records lost because the exporter fell behind.
    pub dropped_records_total: u64,
    /// Sends that failed.
    pub send_errors_total: u64,
    /// The last send error, if any.
    pub last_error: Option<String>,
}

impl Exposed for IpfixStatus {
    const METRICS: &'static [Metric<Self>] = &[
        counter(DATAGRAMS, DATAGRAMS_HELP, |x: &IpfixStatus| {
            n(x.messages_total)
        })
        .labelled(IPFIX),
        counter(
            ERRORS,
            ERRORS_HELP,
            |x: &IpfixStatus| n(x.send_errors_total),
        )
        .labelled(IPFIX),
        counter(DROPPED, DROPPED_HELP, |x: &IpfixStatus| {
            n(x.dropped_records_total)
        })
        .labelled(IPFIX),
        counter(
            "vmvpn_export_ipfix_records_total",
            "IPFIX flow records sent.",
            |x| n(x.records_total),
        ),
        counter(
            "vmvpn_export_ipfix_vm_name_records_total",
            "IPFIX options records naming VMs (libvirt) sent.",
            |x| n(x.vm_name_records_total),
        ),
    ];
}

/// The Redis sink.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RedisStatus {
    /// `redis://HOST:PORT/DB`, without a password.
    pub server: String,
    /// Connected now.
    pub connected: bool,
    /// Live-state writes done (one per interval).
    pub writes_total: u64,
    /// Events added to the stream.
    pub events_total: u64,
    /// Events lost while Redis was away (the queue holds 10 000).
    pub dropped_events_total: u64,
    /// Connections or commands that failed.
    pub errors_total: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

impl Exposed for RedisStatus {
    const METRICS: &'static [Metric<Self>] = &[
        counter(ERRORS, ERRORS_HELP, |x: &RedisStatus| n(x.errors_total)).labelled(REDIS),
        counter(DROPPED, DROPPED_HELP, |x: &RedisStatus| {
            n(x.dropped_events_total)
        })
        .labelled(REDIS),
        gauge(
            "vmvpn_export_redis_connected",
            "1 while the Redis sink is connected.",
            |x| n(u64::from(x.connected)),
        ),
        counter(
            "vmvpn_export_redis_writes_total",
            "Writes of the live state to Redis.",
            |x| n(x.writes_total),
        ),
        counter(
            "vmvpn_export_redis_events_total",
            "Events added to the Redis stream.",
            |x| n(x.events_total),
        ),
    ];
}

/// TAP offloads (`[host] offload`) and UDP GSO at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffloadStats {
    /// The TAPs were opened with a virtio-net header and TSO.
    pub tap_offload: bool,
    /// The TAPs also hand over a VM's UDP GSO sends whole (USO, Linux 6.2+).
    pub tap_uso: bool,
    /// Multi-segment (TSO or USO) frames read from the TAPs.
    pub tso_frames_total: u64,
    /// Of these, UDP (USO) frames.
    pub uso_frames_total: u64,
    /// Segments they were split into.
    pub tso_segments_total: u64,
    /// Frames written to the TAPs as several received segments merged (GRO).
    pub gro_frames_total: u64,
    /// Segments they carried.
    pub gro_segments_total: u64,
    /// Of these, segments whose checksum their sender computed and vouched for
    /// (`FLAG_CHECKSUMS`: a peer's TSO or USO segments), merged without summing them here.
    #[serde(default)]
    pub gro_summed_segments_total: u64,
    /// Datagrams per UDP GSO send at most (1: the kernel cannot segment UDP here).
    pub gso_max_segments: usize,
    /// UDP GSO sends of several datagrams (segments of a large frame, or small frames
    /// read one after another for the same peer).
    pub gso_sends_total: u64,
    /// Datagrams they carried.
    pub gso_datagrams_total: u64,
    /// `sendmmsg` calls that carried several runs (a run: datagrams to one peer in one
    /// message), to one peer or several.
    #[serde(default)]
    pub mmsg_sends_total: u64,
    /// Runs they carried.
    #[serde(default)]
    pub mmsg_runs_total: u64,
    /// Batches of datagrams the send thread sealed and sent (`[host] threads = 2`; 0 with
    /// one thread). Batches of a few datagrams with nothing ahead of them leave from the
    /// loop itself.
    #[serde(default)]
    pub send_thread_batches_total: u64,
    /// Merged frames the TAP writer thread wrote (`[host] threads = 3`; 0 with fewer).
    /// Frames of a few segments with nothing ahead of them are written by the loop itself.
    #[serde(default)]
    pub tap_thread_frames_total: u64,
    /// Receive batches the open thread opened (`[host] threads = 4`; 0 with fewer).
    /// Batches of a few datagrams with nothing ahead of them are opened by the loop itself.
    #[serde(default)]
    pub open_thread_batches_total: u64,
}

/// The data-plane socket's receive queue, kept short by CoDel: when datagrams wait in it
/// over 5 ms for 100 ms, bulk frames are marked CE (ECN-capable flows) or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// How long the last batch read had waited in the kernel's receive queue.
    pub rx_sojourn_ms: f64,
    /// The longest such wait in the last full second.
    pub rx_sojourn_max_ms: f64,
    /// CoDel is dropping now (the queue stands over its target).
    pub aqm_dropping: bool,
    /// Bulk frames dropped to tell their senders to slow down.
    pub aqm_drops_total: u64,
    /// Bulk frames marked CE instead (their flows are ECN-capable).
    pub aqm_marks_total: u64,
}

impl Exposed for QueueStats {
    const METRICS: &'static [Metric<Self>] = &[
        gauge(
            "vmvpn_rx_queue_sojourn_seconds",
            "How long the last datagrams read had waited in the data socket's receive queue.",
            |q| Some(q.rx_sojourn_ms / 1e3),
        ),
        counter(
            "vmvpn_aqm_drops_total",
            "Bulk frames CoDel dropped to keep the receive queue short.",
            |q| n(q.aqm_drops_total),
        ),
        counter(
            "vmvpn_aqm_marks_total",
            "Bulk frames CoDel marked CE instead of dropping (ECN-capable flows).",
            |q| n(q.aqm_marks_total),
        ),
    ];
}

/// The bulletin connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BulletinStatus {
    /// The bulletin's address.
    pub server: String,
    /// "connecting", "registered", "unreachable" or "refused".
    pub state: BulletinState,
    /// The bulletin's start epoch (hex); changes when it restarts.
    pub epoch: Option<String>,
    /// Seconds since this host registered (null when not registered).
    pub registered_ago_s: Option<u64>,
    /// The last error, if the connection is not healthy.
    pub last_error: Option<String>,
    /// Peers the bulletin reported, over all LANs.
    pub peers: usize,
}

/// This host's identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostStatus {
    /// Host name from the config.
    pub name: String,
    /// 32-bit host id.
    pub id: u32,
    /// UDP address the data plane listens on.
    pub listen: String,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// vmvpn version.
    pub version: String,
    /// The data-plane thread runs with real-time scheduling (`[host] realtime`).
    pub realtime: bool,
    /// Data-plane threads running: 1, the loop; 2, the loop and its send thread; 3, also
    /// the TAP writer thread; 4, also the open thread (`[host] threads`). 0 from a daemon that predates the key.
    #[serde(default)]
    pub threads: u8,
    /// Flow ports the unicast data is spread over besides the data port (`[host]
    /// flow_ports`; 0: none, or a daemon that predates the key).
    #[serde(default)]
    pub flow_ports: u8,
}

/// One LAN.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LanStatus {
    /// LAN name.
    pub name: String,
    /// LAN id on the wire.
    pub id: u32,
    /// Virtual segment (CIDR), informational.
    pub segment: String,
    /// TAP device name.
    pub tap: String,
    /// TAP MTU.
    pub mtu: usize,
    /// MACs currently in the database.
    pub macs: usize,
    /// MAC database counters.
    pub mac_stats: MacDbStats,
    /// Frames flooded (broadcast, multicast, unknown unicast) from this host's TAP.
    pub flood_tx_frames: u64,
    /// How floods travel: mode, group, per-subnet plan and counters.
    pub flood: FloodStatus,
    /// Drops on this LAN by reason (all peers together, and frames from the TAP).
    pub drops: DropCounters,
    /// Per-VM traffic table: size and evictions.
    pub vm_table: VmTableStats,
    /// Flow table: size, open TCP connections, TCP flag counts, evictions.
    pub flow_table: FlowStats,
    /// Frames from the TAP too large for one datagram to their peer, cut into overlay
    /// fragments (TCP's are not: its MSS is clamped to the path).
    pub fragmented_frames_total: u64,
    /// The fragments they were cut into.
    pub fragments_sent_total: u64,
    /// The LAN's peers.
    pub peers: Vec<PeerStatus>,
    /// Rate limits (`[[lan.limit]]`), the LAN's first.
    #[serde(default)]
    pub limits: Vec<LimitStatus>,
    /// Service addresses (`[[lan.service]]`).
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
}

impl Exposed for LanStatus {
    const METRICS: &'static [Metric<Self>] = &[
        gauge("vmvpn_lan_macs", "MACs in the LAN's database.", |l| {
            n(l.macs as u64)
        }),
        counter(
            "vmvpn_lan_flood_frames_total",
            "Frames flooded from this host's TAP.",
            |l| n(l.flood_tx_frames),
        ),
        gauge("vmvpn_lan_vms", "VMs in the LAN's traffic table.", |l| {
            n(l.vm_table.vms as u64)
        }),
        counter(
            "vmvpn_lan_vm_evictions_total",
            "VMs evicted from the full traffic table.",
            |l| n(l.vm_table.vm_evictions_total),
        ),
        gauge("vmvpn_lan_flows", "Flows in the LAN's flow table.", |l| {
            n(l.flow_table.flows as u64)
        }),
        counter(
            "vmvpn_lan_flow_evictions_total",
            "Flows evicted from the full flow table.",
            |l| n(l.flow_table.flows_evicted_total),
        ),
        gauge(
            "vmvpn_lan_tcp_connections",
            "TCP connections between VMs open now (SYN seen or picked up, no FIN/RST).",
            |l| n(l.flow_table.tcp_active as u64),
        ),
        counter(
            "vmvpn_lan_tcp_syn_total",
            "TCP connection attempts (SYN without ACK) between VMs.",
            |l| n(l.flow_table.tcp_syn_total),
        ),
        counter("vmvpn_lan_tcp_fin_total", "TCP FIN segments.", |l| {
            n(l.flow_table.tcp_fin_total)
        }),
        counter("vmvpn_lan_tcp_rst_total", "TCP RST segments.", |l| {
            n(l.flow_table.tcp_rst_total)
        }),
    ];
}

/// One service address and its backends, as this host sends to them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// The address clients send to.
    pub address: String,
    /// The MAC every host answers ARP for it with.
    pub mac: String,
    /// How a backend is chosen ("least-load" or "hash").
    pub policy: String,
    /// How its backends' hosts check them: "tcp from ADDRESS to port N" (with `ports`
    /// and `probe_from`) or "arp/nd" (their addresses answer).
    #[serde(default)]
    pub check: String,
    /// Backends up now (0: the service answers nothing; the default alarm fires).
    pub backends_up: usize,
    /// Frames from this host's VMs that found no backend (dropped).
    pub no_backend_frames_total: u64,
    /// ARP requests for the address this host answered.
    pub arp_answered_total: u64,
    /// Flow pins pushed out of the table while in use (their flows choose again).
    pub pins_evicted_total: u64,
    /// Its backends, in config order.
    pub backends: Vec<BackendStatus>,
}

impl Exposed for ServiceStatus {
    const METRICS: &'static [Metric<Self>] = &[
        counter(
            "vmvpn_service_no_backend_frames_total",
            "Frames to a service that found no backend (dropped).",
            |s| n(s.no_backend_frames_total),
        ),
        gauge(
            "vmvpn_service_backends_up",
            "Backends of a service up now, as this host sees them (0: the service answers nothing).",
            |s| n(s.backends_up as u64),
        ),
    ];
}

/// One backend, as this host's VMs sent to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// As the config names it (an address or a MAC).
    pub backend: String,
    /// Its MAC (null: given by address and not seen yet; it takes no flows until then).
    pub mac: Option<String>,
    /// Its weight.
    pub weight: u32,
    /// "up", "down" (its host's probes go unanswered, or its host is down) or "unknown"
    /// (its MAC not seen yet).
    pub state: String,
    /// "local", the peer it is behind, or "unknown".
    pub location: String,
    /// Its traffic both ways, Mbit/s: measured here when local, its host's report
    /// otherwise (0 when no fresh report).
    pub load_mbps: f64,
    /// TCP connections open with it now, as its host's flow table holds them (0 when
    /// its host's report is stale).
    #[serde(default)]
    pub open_connections: u32,
    /// RTT from this host to its host, ms (0: local or not measured).
    pub rtt_ms: f64,
    /// New flows this host gave it.
    pub flows_total: u64,
    /// Flows to it with a frame in the last 10 s.
    pub active_flows: u64,
    /// New flows this host gave it in the last minute.
    pub new_flows_last_minute: u64,
    /// Its share of this host's new flows to the service in the last minute (0 to 1).
    pub share_last_minute: f64,
    /// Flows that left it for another backend because it went down.
    pub moved_away_total: u64,
    /// Health probes this host sent it (local backends only).
    pub probes_total: u64,
    /// Times this host's probes took it down.
    pub downs_total: u64,
    /// Frames sent to it.
    pub frames_total: u64,
    /// Their bytes.
    pub bytes_total: u64,
    /// TCP connections opened to it.
    pub connections_total: u64,
}

impl Exposed for BackendStatus {
    const METRICS: &'static [Metric<Self>] = &[
        counter(
            "vmvpn_service_connections_total",
            "TCP connections this host's VMs opened to a service, by backend.",
            |b| n(b.connections_total),
        ),
        gauge(
            "vmvpn_service_backend_up",
            "1 if a backend takes new flows (its host's probes answered, its host up), else 0.",
            |b| n(u64::from(b.state == "up")),
        ),
        counter(
            "vmvpn_service_backend_flows_total",
            "New flows this host gave a backend.",
            |b| n(b.flows_total),
        ),
        gauge(
            "vmvpn_service_backend_load_mbps",
            "A backend's traffic both ways in Mbit/s, as its host measured and reported it.",
            |b| Some(b.load_mbps),
        ),
        gauge(
            "vmvpn_service_backend_open_connections",
            "TCP connections open with a backend, as its host's flow table holds them.",
            |b| n(u64::from(b.open_connections)),
        ),
    ];
}

/// Flooding on one LAN.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodStatus {
    /// `[[lan]] flood`: "auto", "multicast" or "unicast".
    pub mode: FloodMode,
    /// The LAN's multicast group on the underlay (null: none).
    pub group: Option<String>,
    /// This host is the designated forwarder of its subnet.
    pub forwarder: bool,
    /// How each physical subnet with hosts of the LAN is reached.
    pub subnets: Vec<SubnetStatus>,
    /// Counters.
    #[serde(flatten)]
    pub stats: FloodStats,
}

/// How one physical subnet is reached.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubnetStatus {
    /// The subnet, e.g. "10.77.2.0/24".
    pub subnet: String,
    /// Hosts of the LAN there, not counting this one.
    pub hosts: usize,
    /// Its designated forwarder ("self" for this host).
    pub forwarder: String,
    /// This host's subnet: "multicast", "unicast" or "mixed"; others: "relay"; or
    /// "unicast" everywhere with flood = "unicast".
    pub mode: SubnetMode,
    /// Why.
    pub reason: String,
}

/// Flood counters of one LAN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodStats {
    /// Frames flooded from this host's TAP.
    #[serde(rename = "frames_total")]
    pub frames: u64,
    /// Datagrams sent to the multicast group for them.
    #[serde(rename = "multicast_datagrams_total")]
    pub multicast_datagrams: u64,
    /// Unicast copies to peers of this subnet (replication).
    #[serde(rename = "unicast_datagrams_total")]
    pub unicast_datagrams: u64,
    /// Relay copies to designated forwarders of other subnets.
    #[serde(rename = "relay_datagrams_total")]
    pub relay_datagrams: u64,
    /// Frames passed on inside this subnet as designated forwarder.
    #[serde(rename = "relayed_frames_total")]
    pub relayed_frames: u64,
    /// Flooded frames that arrived twice and were dropped the second time.
    #[serde(rename = "duplicates_suppressed_total")]
    pub duplicates_suppressed: u64,
}

/// A rate limit of a LAN (`[[lan.limit]]`) and what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitStatus {
    /// The VM's MAC; null: the limit of the whole LAN on this host.
    pub mac: Option<String>,
    /// The VM's libvirt name, when the limit named it (`vm = "…"`).
    #[serde(default)]
    pub vm: Option<String>,
    /// What it covers: "in" (to the VM), "out" (from the VM) or "both".
    pub direction: LimitDirection,
    /// Bits per second.
    pub rate_bps: u64,
    /// Bytes a burst may go over the rate.
    pub burst_bytes: u64,
    /// What it let through to the VM and dropped (null when it does not cover "in").
    pub rx: Option<LimitCounters>,
    /// What it let through from the VM and dropped (null when it does not cover "out").
    pub tx: Option<LimitCounters>,
    /// Milliseconds at the rate its shaping queue holds (null: it polices).
    pub shape_ms: Option<u32>,
    /// Frames that waited in the shaping queue before they left.
    pub delayed_frames_total: u64,
    /// Bytes waiting there now.
    pub held_bytes: usize,
}

impl Exposed for LimitStatus {
    const METRICS: &'static [Metric<Self>] = &[gauge(
        "vmvpn_limit_rate_bits_per_second",
        "A rate limit's rate (vm=\"all\": the LAN's limit on this host).",
        |l| n(l.rate_bps),
    )];
}

/// Which traffic of a VM (or LAN) a limit covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitDirection {
    /// What the VM receives.
    In,
    /// What the VM sends.
    Out,
    /// Both, each with its own bucket of the same size.
    Both,
}

/// What one direction of a limit let through and held back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitCounters {
    /// Frames let through.
    pub passed_frames_total: u64,
    /// Their bytes.
    pub passed_bytes_total: u64,
    /// Frames dropped for being over the rate.
    pub dropped_frames_total: u64,
    /// Their bytes.
    pub dropped_bytes_total: u64,
}

impl Exposed for LimitCounters {
    const METRICS: &'static [Metric<Self>] = &[
        counter(
            "vmvpn_limit_passed_bytes_total",
            "Bytes a rate limit let through, by direction (in: to the VM).",
            |c| n(c.passed_bytes_total),
        ),
        counter(
            "vmvpn_limit_dropped_bytes_total",
            "Bytes a rate limit dropped, by direction.",
            |c| n(c.dropped_bytes_total),
        ),
        counter(
            "vmvpn_limit_dropped_frames_total",
            "Frames a rate limit dropped, by direction.",
            |c| n(c.dropped_frames_total),
        ),
    ];
}

/// One peer of one LAN.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Peer host id (null until its first hello).
    pub id: Option<u32>,
    /// Peer host name from its hello (empty until then).
    pub name: String,
    /// Underlay address and port.
    pub address: String,
    /// Where the entry came from: "static" (config), "hello" (an authenticated hello
    /// from an address not in the config) or "bulletin".
    pub source: PeerSource,
    /// "up" (keys agreed both ways) or "handshaking".
    pub state: PeerState,
    /// How it is reached: "direct" (at the address it was listed with) or "punched"
    /// (through its NAT's public mapping, opened by hellos from both sides).
    pub path: PathKind,
    /// Our data to it leaves from our flow ports, one per flow (`[host] flow_ports`; it
    /// takes them and is reached at its listed address).
    #[serde(default)]
    pub flows_spread: bool,
    /// Every address it may be reached at, the listed one first, with what came of it.
    pub candidates: Vec<CandidateStatus>,
    /// How long the latest handshake took, from the first hello to the tunnel up (null
    /// before it is up).
    pub path_open_ms: Option<u64>,
    /// Milliseconds since anything authentic was heard from it (null: never).
    pub last_heard_ago_ms: Option<u64>,
    /// Traffic through this tunnel.
    #[serde(flatten)]
    pub traffic: TrafficCounters,
    /// Loss, reordering and duplicates of what this peer sent us (from sequence numbers).
    #[serde(flatten)]
    pub sequence: SeqStats,
    /// Lost / expected, from this peer to us, since the tunnel came up.
    pub loss_rx_ratio: f64,
    /// RTT from probes inside the tunnel (µs; null before the first answer).
    #[serde(flatten)]
    pub rtt: RttSummary,
    /// Probes sent to this peer.
    pub probes_sent_total: u64,
    /// Probes it answered (replies to the latest probe only).
    pub probes_answered_total: u64,
    /// Lost / expected from us to this peer, as the peer counted it (in its probe replies).
    pub loss_tx_ratio: f64,
    /// "ok", "degraded", "down" or "unknown" (no probe answered yet), from probes and loss.
    pub health: Health,
    /// Throughput over 1 s and 60 s, and the last minute's peak-to-mean ratio.
    #[serde(flatten)]
    pub rates: Rates,
    /// tx rate over `[telemetry] link_speed_mbps` (null when no speed is configured).
    pub tx_utilisation_ratio: Option<f64>,
    /// rx rate over `[telemetry] link_speed_mbps`.
    pub rx_utilisation_ratio: Option<f64>,
    /// Drops of datagrams that authenticated as this peer's, by reason.
    pub drops: DropCounters,
    /// Datagrams that claimed to be this peer's and were dropped before they
    /// authenticated (spoofable: anyone can send them).
    pub unauthenticated_drops_total: u64,
    /// Frames from this peer that CoDel marked CE on our receive queue (ECN-capable bulk
    /// flows; the others' frames are dropped instead, counted in `drops.aqm`).
    pub aqm_marks_total: u64,
    /// The path MTU to this peer (IP packet bytes on the underlay), found by probing.
    /// Frames that do not fit are cut into overlay fragments; TCP SYNs are clamped to it.
    pub path_mtu_bytes: u16,
    /// The path MTU search is still running (data uses the size confirmed so far).
    pub path_mtu_searching: bool,
    /// Times a confirmed path MTU stopped working (a black hole) and was searched again.
    pub path_mtu_black_holes_total: u64,
}

impl Exposed for PeerStatus {
    const METRICS: &'static [Metric<Self>] = &[
        gauge(
            "vmvpn_peer_up",
            "1 when the tunnel to the peer is up.",
            |p| n(u64::from(p.state == PeerState::Up)),
        ),
        gauge(
            "vmvpn_peer_punched",
            "1 when the peer is reached through its NAT's public mapping rather than at its listed address.",
            |p| n(u64::from(p.path == PathKind::Punched)),
        ),
        gauge(
            "vmvpn_peer_relayed",
            "1 when the peer is reached through a relay's pair socket: no direct path opened.",
            |p| n(u64::from(p.path == PathKind::Relayed)),
        ),
        gauge(
            "vmvpn_peer_flows_spread",
            "1 when our data to the peer leaves from our flow ports, one per VM flow ([host] flow_ports).",
            |p| n(u64::from(p.flows_spread)),
        ),
        gauge(
            "vmvpn_peer_path_open_seconds",
            "How long the latest handshake took, from the first hello to the tunnel up.",
            |p| p.path_open_ms.map(|m| m as f64 / 1000.0),
        ),
        counter(
            "vmvpn_peer_tx_packets_total",
            "Frames sent to the peer.",
            |p| n(p.traffic.tx_packets),
        ),
        counter(
            "vmvpn_peer_tx_bytes_total",
            "Ethernet frame bytes sent to the peer.",
            |p| n(p.traffic.tx_bytes),
        ),
        counter(
            "vmvpn_peer_rx_packets_total",
            "Frames received from the peer.",
            |p| n(p.traffic.rx_packets),
        ),
        counter(
            "vmvpn_peer_rx_bytes_total",
            "Ethernet frame bytes received from the peer.",
            |p| n(p.traffic.rx_bytes),
        ),
        counter(
            "vmvpn_peer_rx_lost_packets_total",
            "Sequence numbers from the peer never received.",
            |p| n(p.sequence.lost),
        ),
        counter(
            "vmvpn_peer_rx_reordered_packets_total",
            "Datagrams from the peer that arrived out of order.",
            |p| n(p.sequence.reordered),
        ),
        counter(
            "vmvpn_peer_rx_duplicate_packets_total",
            "Authenticated duplicates from the peer dropped by the replay window.",
            |p| n(p.sequence.duplicates),
        ),
        gauge(
            "vmvpn_peer_path_mtu_bytes",
            "Path MTU to the peer found by the overlay's own probes (IP packet bytes).",
            |p| n(u64::from(p.path_mtu_bytes)),
        ),
        counter(
            "vmvpn_peer_unauthenticated_drops_total",
            "Datagrams claiming to be the peer's, dropped before they authenticated (spoofable).",
            |p| n(p.unauthenticated_drops_total),
        ),
        counter(
            "vmvpn_peer_aqm_drops_total",
            "The peer's bulk frames dropped by CoDel on this host's receive queue.",
            |p| n(p.drops.get(DropReason::Aqm)),
        ),
        counter(
            "vmvpn_peer_aqm_marks_total",
            "The peer's bulk frames marked CE by CoDel on this host's receive queue.",
            |p| n(p.aqm_marks_total),
        ),
        gauge(
            "vmvpn_peer_rx_loss_ratio",
            "Lost over expected, peer to this host.",
            |p| Some(p.loss_rx_ratio),
        ),
        gauge(
            "vmvpn_peer_tx_loss_ratio",
            "Lost over expected, this host to the peer, as the peer counted.",
            |p| Some(p.loss_tx_ratio),
        ),
        gauge(
            "vmvpn_peer_rtt_p50_seconds",
            "Median RTT of the last 64 probes.",
            |p| us(p.rtt.rtt_p50_us),
        ),
        gauge(
            "vmvpn_peer_rtt_p99_seconds",
            "99th percentile RTT of the last 64 probes.",
            |p| us(p.rtt.rtt_p99_us),
        ),
        gauge("vmvpn_peer_srtt_seconds", "Smoothed RTT (RFC 6298).", |p| {
            us(p.rtt.srtt_us)
        }),
        gauge(
            "vmvpn_peer_jitter_seconds",
            "RTT jitter (RFC 3550 estimator).",
            |p| us(p.rtt.jitter_us),
        ),
        // Prometheus' base unit is bytes (promtool insists).
        gauge(
            "vmvpn_peer_tx_rate_bytes_per_second",
            "Send rate over the last complete second.",
            |p| Some(p.rates.tx_rate_bps as f64 / 8.0),
        ),
        gauge(
            "vmvpn_peer_rx_rate_bytes_per_second",
            "Receive rate over the last complete second.",
            |p| Some(p.rates.rx_rate_bps as f64 / 8.0),
        ),
        counter(
            "vmvpn_peer_probes_sent_total",
            "Probes sent to the peer.",
            |p| n(p.probes_sent_total),
        ),
        counter(
            "vmvpn_peer_probes_answered_total",
            "Probes the peer answered.",
            |p| n(p.probes_answered_total),
        ),
        gauge(
            "vmvpn_peer_tx_utilisation_ratio",
            "Send rate over the configured link speed ([telemetry] link_speed_mbps).",
            |p| p.tx_utilisation_ratio,
        ),
        gauge(
            "vmvpn_peer_rx_utilisation_ratio",
            "Receive rate over the configured link speed.",
            |p| p.rx_utilisation_ratio,
        ),
    ];
}

/// One row of `vmvpn macs --json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MacRow {
    /// LAN name.
    pub lan: String,
    /// The MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// "local" or the peer's address.
    pub location: String,
    /// Peer host name, if behind a peer that said its name.
    pub peer_name: Option<String>,
    /// Milliseconds since a frame from this MAC was seen.
    pub age_ms: u64,
}

/// Per-VM traffic of one LAN, as `vmvpn vms`, `vmvpn flows` and the bulletin reports use it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LanTraffic {
    /// LAN name.
    pub lan: String,
    /// VMs seen, busiest first.
    pub vms: Vec<VmRow>,
    /// The VM matrix as this host saw it, busiest pair first.
    pub pairs: Vec<PairRow>,
    /// Flows, busiest first.
    pub flows: Vec<FlowRow>,
    /// VM table counters.
    pub vm_table: VmTableStats,
    /// Flow table counters.
    pub flow_table: FlowStats,
    /// Rate limits (`[[lan.limit]]`), the LAN's first.
    #[serde(default)]
    pub limits: Vec<LimitStatus>,
}

/// A local VM port (`/metrics` shows local ports only: the series cap bounds them). Its
/// fields are telemetry's (`telemetry::VmRow`); its families are declared here, with the
/// rest of the exposition.
impl Exposed for VmRow {
    const METRICS: &'static [Metric<Self>] = &[
        counter(
            "vmvpn_vm_port_tx_bytes_total",
            "Bytes sent by a local VM port (frames read from the TAP).",
            |v| n(v.tx_bytes),
        ),
        counter(
            "vmvpn_vm_port_rx_bytes_total",
            "Unicast bytes to a local VM port.",
            |v| n(v.rx_bytes),
        ),
        gauge(
            "vmvpn_vm_port_tx_rate_bytes_per_second",
            "Send rate of a local VM port over the last complete second.",
            |v| v.rates.map(|r| r.tx_rate_bps as f64 / 8.0),
        ),
        gauge(
            "vmvpn_vm_port_rx_rate_bytes_per_second",
            "Receive rate of a local VM port over the last complete second.",
            |v| v.rates.map(|r| r.rx_rate_bps as f64 / 8.0),
        ),
    ];
}

/// A tunnel's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Keys agreed both ways: frames flow.
    Up,
    /// Hellos go out; nothing is sent to it yet.
    #[default]
    Handshaking,
}

/// How a peer is reached (see the README's "Behind NAT").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// At the address its config or registration names.
    #[default]
    Direct,
    /// At another address: its NAT's public mapping, opened by hellos from both sides.
    Punched,
    /// Through a relay's pair socket (`[host] relays`): no direct path opened.
    Relayed,
}

/// One address a peer may be reached at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CandidateStatus {
    /// Address and port.
    pub address: String,
    /// Hellos sent to it.
    pub hellos_sent: u64,
    /// An authentic hello came from it.
    pub answered: bool,
    /// Milliseconds from the latest hello sent to it to the next authentic one from it
    /// (None until one came back): each candidate's round trip as the punch saw it. The
    /// path in use is timed by the tunnel's probes from then on (`rtt`).
    pub rtt_ms: Option<f64>,
    /// A relay's pair socket for this peer, not the peer's own address.
    #[serde(default)]
    pub relay: bool,
}

/// How a tunnel is doing, from its probes and its loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Probes answered, loss at most 1 % each way.
    Ok,
    /// A probe unanswered in a row, or loss over 1 % either way.
    Degraded,
    /// Probes unanswered and nothing else heard, or the tunnel went down.
    Down,
    /// No probe answered yet.
    #[default]
    Unknown,
}

/// Where a peer entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PeerSource {
    /// The config's static peer list.
    #[default]
    Static,
    /// An authenticated hello from an address not in the config.
    Hello,
    /// The bulletin board's registry.
    Bulletin,
}

/// How a LAN floods (`[[lan]] flood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FloodMode {
    /// Multicast where beacons show it works, unicast replication elsewhere.
    #[default]
    Auto,
    /// Multicast in every subnet, whatever the beacons say.
    Multicast,
    /// Unicast replication to every peer (no multicast, no forwarders).
    Unicast,
}

/// How floods reach one physical subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SubnetMode {
    /// This host's subnet, by the LAN's multicast group.
    Multicast,
    /// By one unicast copy per peer.
    #[default]
    Unicast,
    /// The group, plus unicast copies to peers whose beacons do not arrive.
    Mixed,
    /// Another subnet: one relay copy to its designated forwarder.
    Relay,
}

/// The bulletin connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BulletinState {
    /// Connecting, or waiting to retry.
    #[default]
    Connecting,
    /// Registered: peers are learned from it.
    Registered,
    /// The last attempt failed; retrying.
    Unreachable,
    /// The bulletin refused this host (wrong secret, not allowed); retrying.
    Refused,
}

/// Counters of the MAC database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacDbStats {
    /// New MACs learned.
    pub learned: u64,
    /// MACs that moved to another location.
    pub moves: u64,
    /// Entries removed because they aged out.
    pub aged_out: u64,
    /// Entries evicted because the table was full.
    pub evicted: u64,
}

/// Counters of the reassembly table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassemblyStats {
    /// Frames put back together and delivered.
    pub reassembled_frames_total: u64,
    /// Frames dropped: pieces that overlapped.
    pub overlap_total: u64,
    /// Frames dropped: larger than the TAP allows.
    pub oversize_total: u64,
    /// Frames dropped: incomplete after the timeout.
    pub timeout_total: u64,
    /// Frames dropped: evicted from a full table.
    pub evicted_total: u64,
    /// Frames in progress now.
    pub in_progress: u64,
}

/// `name()` (the JSON spelling) and `Display` for the contract's enums.
macro_rules! spelled {
    ($t:ident { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            /// The spelling in JSON, the config and the tables.
            pub fn name(self) -> &'static str {
                match self {
                    $($t::$v => $s),+
                }
            }
        }

        /// Compare with the JSON spelling: `state == "up"`.
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.name() == *other
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.name())
            }
        }
    };
}

spelled!(PeerState { Up => "up", Handshaking => "handshaking" });
spelled!(Health { Ok => "ok", Degraded => "degraded", Down => "down", Unknown => "unknown" });
spelled!(PathKind { Direct => "direct", Punched => "punched", Relayed => "relayed" });
spelled!(PeerSource { Static => "static", Hello => "hello", Bulletin => "bulletin" });
spelled!(FloodMode { Auto => "auto", Multicast => "multicast", Unicast => "unicast" });
spelled!(SubnetMode { Multicast => "multicast", Unicast => "unicast", Mixed => "mixed", Relay => "relay" });
spelled!(BulletinState {
    Connecting => "connecting",
    Registered => "registered",
    Unreachable => "unreachable",
    Refused => "refused",
});

/// The answer to one `vmvpn ping` probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PingAnswer {
    /// LAN name.
    pub lan: String,
    /// The peer's name (empty before its hello).
    pub peer: String,
    /// The peer's underlay address.
    pub address: String,
    /// The VM MAC the target resolved to, when the target was a VM address.
    pub via_vm: Option<String>,
    /// The probe's id.
    pub id: u32,
    /// Round trip in µs (null: no answer within the timeout).
    pub rtt_us: Option<f64>,
}

/// What a scrape of `/metrics` shows beyond the status: local VM ports and RTT histograms.
#[derive(Debug, Clone, Default)]
pub struct MetricsExtra {
    /// Per-LAN traffic (only local VM ports are exported: bounded by the series cap).
    pub traffic: Vec<LanTraffic>,
    /// (LAN, peer address, cumulative RTT histogram).
    pub rtt: Vec<(String, String, telemetry::RttBuckets)>,
    /// Pending and firing alerts (resolved ones are not exported).
    pub alerts: Vec<AlertView>,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Look soon.
    #[default]
    Warning,
    /// Look now.
    Critical,
}

/// Where an alert is, as `vmvpn alerts` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Firing: the condition held for the rule's `for`.
    Firing,
    /// The condition holds, not yet for long enough.
    #[default]
    Pending,
    /// It fired and has recovered.
    Resolved,
}

spelled!(Severity { Info => "info", Warning => "warning", Critical => "critical" });
spelled!(AlertState { Firing => "firing", Pending => "pending", Resolved => "resolved" });

impl AlertView {
    /// The labels that tell this alert from others of its rule (without `alertname` and
    /// `severity`, which the alert shows apart).
    pub fn series_labels(&self) -> impl Iterator<Item = (&String, &String)> {
        self.labels
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
    }

    /// Those labels as `k=v,k=v`.
    pub fn labels_text(&self) -> String {
        let v: Vec<String> = self
            .series_labels()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        v.join(",")
    }
}

/// One alert of `vmvpn alerts --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// The rule's name.
    pub alert: String,
    /// Pending, firing or resolved.
    pub state: AlertState,
    /// Severity.
    pub severity: Severity,
    /// `alertname`, `severity`, the rule's labels and the series' labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations with `{{ $value }}` and `{{ $labels.x }}` filled in.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The value the rule looked at, at the last evaluation.
    pub value: f64,
    /// Seconds in this state.
    pub since_s: u64,
}
