//! Bulletin protocol v1: the messages and their one codec.
//!
//! Every message on a QUIC stream is a frame: a 4-byte big-endian length, then the message
//! encoded with postcard (a documented, stable format; bincode has ceased development). New
//! enum variants go only at the end, since postcard encodes the variant index. The first
//! message each way carries the protocol version.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Protocol version in `Hello` and `Challenge`.
pub const VERSION: u16 = 8;
/// The oldest protocol a bulletin still serves, and what a client says in its `Hello`:
/// version 2 only adds messages (`Alerts`, `AlertsQuery`), which a client sends once the
/// `Challenge` shows the bulletin knows them. So hosts and bulletins upgrade in any order.
pub const MIN_VERSION: u16 = 1;
/// The first version that takes `Alerts`.
pub const ALERTS_SINCE: u16 = 2;
/// The first version that answers `Status`.
pub const STATUS_SINCE: u16 = 3;
/// The first version that takes `VmNames` and answers `NamesQuery`.
pub const NAMES_SINCE: u16 = 4;
/// The first version that takes `Services` and answers `ServicesQuery`.
pub const SERVICES_SINCE: u16 = 5;
/// The first version that answers `StoreStatus` (the status with the registry store's).
pub const STORE_SINCE: u16 = 6;
/// The first version that takes `Paths` and answers `PathsQuery`.
pub const PATHS_SINCE: u16 = 7;
/// The first version that decodes `TunnelPath::Relayed`.
pub const RELAYED_SINCE: u16 = 8;
/// ALPN of the bulletin's QUIC endpoint.
pub const ALPN: &[u8] = b"vmvpn-bulletin/1";
/// Largest frame a client may send (a registration with many LANs is a few KB).
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Largest frame the server may send (a snapshot of thousands of hosts).
pub const MAX_SERVER_FRAME: usize = 16 * 1024 * 1024;

/// Messages from a host (or `bulletin ls`) to the bulletin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message on a stream.
    Hello {
        /// Protocol version the client speaks.
        version: u16,
    },
    /// Join LANs (after `Challenge`, with proofs over its nonce).
    Register(Register),
    /// Renew the lease.
    Heartbeat,
    /// Leave every LAN now (graceful shutdown).
    Unregister,
    /// List records, of one LAN or all.
    Query {
        /// Only this LAN.
        lan: Option<String>,
    },
    /// A registered host's telemetry for its LANs (no answer). Replaces its previous one.
    Report(Vec<LanReport>),
    /// The latest reports of the registered hosts, of one LAN or all (`bulletin matrix`).
    Matrix {
        /// Only this LAN.
        lan: Option<String>,
    },
    /// Prove a right to read (`Query`, `Matrix`) without registering: answered by `Ack`
    /// or `Refused`. Reads show only what the connection's credentials cover.
    Auth(Credential),
    /// A registered host's pending and firing alerts, per LAN (no answer). Replaces its
    /// previous ones.
    Alerts(Vec<LanAlerts>),
    /// The latest alerts of the registered hosts, of one LAN or all (`bulletin alerts`).
    AlertsQuery {
        /// Only this LAN.
        lan: Option<String>,
    },
    /// The bulletin's own state: connections, admission, listeners (`bulletin status`);
    /// needs a read credential. Since version 3.
    Status,
    /// A registered host's VM names (from its libvirt), per LAN (no answer). Replaces its
    /// previous ones. Since version 4.
    VmNames(Vec<LanVmNames>),
    /// The VM names of the registered hosts, of one LAN or all (`bulletin matrix`). Since
    /// version 4.
    NamesQuery {
        /// Only this LAN.
        lan: Option<String>,
    },
    /// A registered host's service addresses and their backends as it sees them, per
    /// LAN (no answer). Replaces its previous ones. Since version 5.
    Services(Vec<LanServices>),
    /// The services of the registered hosts, of one LAN or all (`bulletin matrix`, the
    /// dashboard). Since version 5.
    ServicesQuery {
        /// Only this LAN.
        lan: Option<String>,
    },
    /// The bulletin's own state with its store's (`bulletin status`). Since version 6;
    /// answered by `StoreStatus`.
    StoreStatus,
    /// A registered host's path to each peer (direct or through a NAT), per LAN (no
    /// answer). Replaces its previous ones. Since version 7.
    Paths(Vec<LanPaths>),
    /// The paths of the registered hosts, of one LAN or all (`bulletin matrix`, the
    /// dashboard). Since version 7.
    PathsQuery {
        /// Only this LAN.
        lan: Option<String>,
    },
}

/// How a host reaches its peers on one LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanPaths {
    /// LAN name.
    pub lan: String,
    /// One entry per peer with a tunnel up.
    pub peers: Vec<PeerPath>,
}

impl LanPaths {
    /// As a bulletin of protocol `version` decodes it: before [`RELAYED_SINCE`], a relayed
    /// path is reported as punched (not direct, which is what it needs to know).
    pub fn for_version(mut self, version: u16) -> Self {
        if version < RELAYED_SINCE {
            for p in &mut self.peers {
                if p.path == TunnelPath::Relayed {
                    p.path = TunnelPath::Punched;
                }
            }
        }
        self
    }
}

/// How a host reaches one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPath {
    /// The peer's host id.
    pub host_id: u32,
    /// Which path its tunnel takes.
    pub path: TunnelPath,
    /// How long the latest handshake took from its first hello, ms.
    pub open_ms: Option<u64>,
}

/// Which path a tunnel takes. New kinds go only at the end (postcard numbers them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelPath {
    /// At the address the peer was listed with.
    Direct,
    /// At another of its candidates: through its NAT, opened by hellos from both sides.
    Punched,
    /// Through a relay's pair socket: no direct path opened. Since version 8; an older
    /// bulletin is told `Punched` (see [`LanPaths::for_version`]).
    Relayed,
}

impl TunnelPath {
    /// As views and JSON name it.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelPath::Direct => "direct",
            TunnelPath::Punched => "punched",
            TunnelPath::Relayed => "relayed",
        }
    }
}

/// One host's paths on one LAN, as the bulletin keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPaths {
    /// Reporting host's id.
    pub host_id: u32,
    /// Reporting host's name.
    pub name: String,
    /// Its paths.
    pub paths: LanPaths,
}

/// A host's services on one LAN, as it sends to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanServices {
    /// The LAN.
    pub lan: String,
    /// Its services.
    pub services: Vec<ServiceReport>,
}

/// One service address as one host sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// Its name.
    pub name: String,
    /// The address clients send to.
    pub address: String,
    /// "least-load" or "hash".
    pub policy: String,
    /// Frames from this host's VMs that found no backend.
    pub no_backend_frames_total: u64,
    /// Its backends, in config order.
    pub backends: Vec<ServiceBackendReport>,
}

/// One backend of a service as one host sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceBackendReport {
    /// As configured: MAC, address or libvirt name.
    pub backend: String,
    /// "up", "down", "quiet" or "unknown".
    pub state: String,
    /// Behind the reporting host itself (its state and load are that host's own).
    pub local: bool,
    /// The host it is behind, as the reporting host knows it ("unknown": not seen).
    pub location: String,
    /// Its weight.
    pub weight: u32,
    /// Its traffic both ways, Mbit/s.
    pub load_mbps: f64,
    /// TCP connections open with it.
    pub open_connections: u32,
    /// RTT from the reporting host to its host, ms.
    pub rtt_ms: f64,
    /// New flows the reporting host gave it.
    pub flows_total: u64,
    /// Of those, with a frame in the last 10 s.
    pub active_flows: u64,
    /// New flows the reporting host gave it in the last minute.
    pub new_flows_last_minute: u64,
}

/// One host's services on one LAN, as `ServicesQuery` gets them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostServices {
    /// The host.
    pub host_id: u32,
    /// Its name.
    pub name: String,
    /// The LAN and its services.
    pub services: LanServices,
}

/// One VM's name as its host's libvirt knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmName {
    /// The VM's MAC on the LAN.
    pub mac: [u8; 6],
    /// The libvirt domain name.
    pub name: String,
    /// The domain's UUID, when known.
    pub uuid: Option<String>,
}

/// A host's named VMs on one LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanVmNames {
    /// The LAN.
    pub lan: String,
    /// Its VMs behind this host that libvirt names.
    pub vms: Vec<VmName>,
}

/// One host's VM names on one LAN, as `NamesQuery` gets them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostVmNames {
    /// The host.
    pub host_id: u32,
    /// Its name.
    pub name: String,
    /// The LAN and the names.
    pub names: LanVmNames,
}

/// The bulletin's own state (answer to `ClientMsg::Status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulletinStatus {
    /// Protocol version it speaks.
    pub version: u16,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// LANs it serves.
    pub lans: u64,
    /// Hosts registered now.
    pub hosts: u64,
    /// QUIC connections open now.
    pub connections: u64,
    /// Of those, not yet registered or authenticated.
    pub unauthenticated: u64,
    /// Its limits (bulletin.toml).
    pub limits: StatusLimits,
    /// What admission did since start.
    pub admission: crate::admission::AdmissionCounters,
    /// Bytes of replies and events waiting in all outboxes now.
    pub queued_bytes: u64,
    /// What counts against the memory budget now: the outboxes, and QUIC's send window
    /// for each connection whose writer waits on it.
    pub buffered_bytes: u64,
    /// The budget (`max_buffered_mb`).
    pub max_buffered_bytes: u64,
    /// Connections closed because the budget was exceeded, most backlogged first.
    pub shed_total: u64,
    /// The dashboard listeners (`--web`).
    pub web: Vec<WebListenerStatus>,
    /// The shared registry's store (`--store`): none without one, else whether it answers.
    /// Shown in `/metrics` on `--web` and the log; not sent (protocol 5 has no room for it).
    #[serde(skip)]
    pub store_up: Option<bool>,
}

/// The connection limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusLimits {
    /// `max_connections`.
    pub connections: u64,
    /// `max_connections_per_ip`.
    pub per_ip: u64,
    /// `max_unauthenticated`.
    pub unauthenticated: u64,
    /// `max_unauthenticated_per_ip`.
    pub unauthenticated_per_ip: u64,
}

/// One `--web` listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebListenerStatus {
    /// Its address.
    pub listen: String,
    /// Its counts since start.
    pub counts: crate::http::ListenerCounts,
}

/// One host's alerts on one LAN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanAlerts {
    /// The LAN.
    pub lan: String,
    /// Its alerts.
    pub alerts: Vec<AlertReport>,
}

/// One alert, as a host reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertReport {
    /// The rule's name.
    pub alert: String,
    /// "firing" or "pending".
    pub state: String,
    /// "info", "warning" or "critical".
    pub severity: String,
    /// The series' and the rule's labels (without `alertname` and `severity`).
    pub labels: Vec<(String, String)>,
    /// The summary annotation.
    pub summary: String,
    /// The value the rule saw.
    pub value: f64,
    /// Seconds in this state.
    pub since_s: u64,
}

/// A host's latest alerts on one LAN, as `bulletin alerts` gets them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostAlerts {
    /// The host.
    pub host_id: u32,
    /// Its name.
    pub name: String,
    /// Milliseconds since it sent them.
    pub age_ms: u64,
    /// The LAN and its alerts.
    pub alerts: LanAlerts,
}

/// A right to read the registry, proven over the connection's nonce (never sent in clear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credential {
    /// The operator token of `bulletin.toml`: every LAN.
    Operator {
        /// `Verifier::prove_operator` over the nonce.
        proof: [u8; 32],
    },
    /// LAN secrets: those LANs' records and reports (host id 0 in the proof).
    Lans(Vec<LanProof>),
}

/// One LAN's proof in a [`Credential::Lans`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanProof {
    /// LAN name.
    pub name: String,
    /// `Verifier::prove(nonce, 0, name)`.
    pub proof: [u8; 32],
}

/// What a host measured on one LAN: its tunnels and the VM pairs it saw at their source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanReport {
    /// LAN name.
    pub lan: String,
    /// One entry per peer.
    pub peers: Vec<PeerReport>,
    /// Busiest VM pairs whose source VM is behind the reporting host.
    pub pairs: Vec<PairReport>,
}

/// One tunnel as its host measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The peer's host id (None before its hello).
    pub host_id: Option<u32>,
    /// The peer's name.
    pub name: String,
    /// What was measured.
    pub tunnel: Tunnel,
}

/// The figures of one tunnel, from one end. (Nested, postcard encodes the same bytes as
/// if the fields stood in `PeerReport` itself.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tunnel {
    /// "ok", "degraded", "down" or "unknown".
    pub health: String,
    /// Median RTT, µs.
    pub rtt_p50_us: Option<u64>,
    /// 99th percentile RTT, µs.
    pub rtt_p99_us: Option<u64>,
    /// Loss towards the peer (as the peer counted).
    pub loss_tx_ratio: f64,
    /// Loss from the peer.
    pub loss_rx_ratio: f64,
    /// Send rate, bit/s.
    pub tx_rate_bps: u64,
    /// Receive rate, bit/s.
    pub rx_rate_bps: u64,
}

/// Traffic from one VM to another, counted at the source's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairReport {
    /// Source VM MAC.
    pub src_mac: [u8; 6],
    /// Source VM IP, when seen.
    pub src_ip: Option<IpAddr>,
    /// Destination VM MAC.
    pub dst_mac: [u8; 6],
    /// Destination VM IP, when seen.
    pub dst_ip: Option<IpAddr>,
    /// Frames.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One host's latest report on one LAN, as the bulletin keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// Reporting host's id.
    pub host_id: u32,
    /// Reporting host's name.
    pub name: String,
    /// Age of the report.
    pub age_ms: u64,
    /// The report.
    pub report: LanReport,
}

/// A host's registration: the paper's Table 1 fields per LAN, plus identity and proofs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// 32-bit host id.
    pub host_id: u32,
    /// Host name.
    pub name: String,
    /// Underlay address.
    pub underlay: IpAddr,
    /// Underlay prefix length (its physical subnet).
    pub prefix: u8,
    /// UDP data port.
    pub port: u16,
    /// LANs to join.
    pub lans: Vec<LanJoin>,
}

/// One LAN in a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanJoin {
    /// LAN name.
    pub name: String,
    /// Virtual segment (CIDR text).
    pub segment: String,
    /// HMAC proving the host holds the LAN secret (see `proof.rs`).
    pub proof: [u8; 32],
}

/// Messages from the bulletin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answer to `Hello`: a fresh nonce to prove LAN membership over, and the terms.
    Challenge {
        /// Protocol version the server speaks.
        version: u16,
        /// Random, one per stream.
        nonce: [u8; 32],
        /// Random per bulletin start: a new value means a restarted, empty bulletin.
        epoch: u64,
        /// Lease length.
        lease_ttl_ms: u64,
        /// How often to heartbeat.
        heartbeat_ms: u64,
    },
    /// Registration accepted; events follow on the same stream, starting with snapshots.
    Registered {
        /// Lease left.
        lease_ms: u64,
    },
    /// Request refused; the reason is for people.
    Refused {
        /// Machine-readable kind.
        code: RefuseCode,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Heartbeat or unregister acknowledged.
    Ack {
        /// Lease left (0 after unregister).
        lease_ms: u64,
    },
    /// Answer to `Query`.
    Records(Vec<Record>),
    /// A change in one of the host's LANs.
    Event(Event),
    /// Answer to `Matrix`: the latest report of every registered host, per LAN.
    Matrix(Vec<HostReport>),
    /// Answer to `AlertsQuery`: the latest alerts of every registered host, per LAN.
    Alerts(Vec<HostAlerts>),
    /// Answer to `Status`. Since version 3.
    Status(BulletinStatus),
    /// Answer to `NamesQuery`: every registered host's VM names, per LAN. Since version 4.
    VmNames(Vec<HostVmNames>),
    /// Answer to `ServicesQuery`: each host's services per LAN. Since version 5.
    Services(Vec<HostServices>),
    /// Answer to `StoreStatus`. Since version 6.
    StoreStatus {
        /// What `Status` answers.
        status: BulletinStatus,
        /// The shared registry's store: none without one, else whether it answers.
        store_up: Option<bool>,
    },
    /// Answer to `PathsQuery`: each host's paths per LAN. Since version 7.
    Paths(Vec<HostPaths>),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseCode {
    /// Version mismatch.
    Version,
    /// The bulletin does not serve this LAN.
    UnknownLan,
    /// The proof does not verify: wrong LAN secret.
    BadProof,
    /// Another host holds this id.
    DuplicateId,
    /// Heartbeat for a host that is not registered (lease lapsed): register again.
    NotRegistered,
    /// A message out of order or malformed.
    Protocol,
    /// A read without a credential that covers it (see `ClientMsg::Auth`).
    Unauthorized,
    /// The bulletin is at a connection or request limit: retry later.
    Busy,
}

/// A registry record: one host in one LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// LAN name.
    pub lan: String,
    /// Virtual segment.
    pub segment: String,
    /// Host id.
    pub host_id: u32,
    /// Host name.
    pub name: String,
    /// Underlay address.
    pub underlay: IpAddr,
    /// Underlay prefix length.
    pub prefix: u8,
    /// Data port.
    pub port: u16,
    /// Source address the bulletin saw (differs from `underlay` behind NAT).
    pub observed: SocketAddr,
    /// Lease left.
    pub lease_ms: u64,
    /// Time since the last heartbeat (or registration).
    pub heartbeat_ago_ms: u64,
}

impl Record {
    /// The data-plane address peers should use.
    pub fn data_addr(&self) -> SocketAddr {
        SocketAddr::new(self.underlay, self.port)
    }
}

/// Membership events pushed to a LAN's hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// All current members of a LAN (sent first after registering).
    Snapshot {
        /// LAN name.
        lan: String,
        /// Its members, the receiver included.
        records: Vec<Record>,
    },
    /// A host joined (or its record changed).
    Join(Record),
    /// A host left (unregistered or its lease lapsed).
    Leave {
        /// LAN name.
        lan: String,
        /// Host id.
        host_id: u32,
        /// Why: "unregistered" or "lease expired".
        reason: String,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// The length prefix exceeds the limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Postcard could not decode it (truncated, or not a message of this version).
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encode a message as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Invariant: our message types serialize to postcard without error (no maps with
    // non-serializable keys, no failing Serialize impls).
    let body = postcard::to_stdvec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Check a frame's length prefix against a limit.
pub fn frame_len(prefix: [u8; 4], max: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(CodecError::Oversized { len, max });
    }
    Ok(len)
}

/// Decode a frame body (without its length prefix).
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, CodecError> {
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> Record {
        Record {
            lan: "lan1".into(),
            segment: "192.168.1.0/24".into(),
            host_id: 7,
            name: "h1".into(),
            underlay: IpAddr::from([192, 168, 3, 3]),
            prefix: 24,
            port: 7401,
            observed: SocketAddr::from(([192, 168, 3, 3], 40000)),
            lease_ms: 30_000,
            heartbeat_ago_ms: 10,
        }
    }

    fn round_trip<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(m: &T) {
        let f = encode(m);
        let len = frame_len([f[0], f[1], f[2], f[3]], MAX_SERVER_FRAME).expect("len");
        assert_eq!(len, f.len() - 4);
        assert_eq!(&decode::<T>(&f[4..]).expect("decode"), m);
    }

    #[test]
    fn a_relayed_path_is_told_as_punched_to_a_bulletin_before_version_8() {
        let paths = LanPaths {
            lan: "lan1".into(),
            peers: vec![
                PeerPath {
                    host_id: 1,
                    path: TunnelPath::Relayed,
                    open_ms: Some(3000),
                },
                PeerPath {
                    host_id: 2,
                    path: TunnelPath::Direct,
                    open_ms: None,
                },
            ],
        };
        let old = paths.clone().for_version(RELAYED_SINCE - 1);
        assert_eq!(old.peers[0].path, TunnelPath::Punched);
        assert_eq!(old.peers[1].path, TunnelPath::Direct);
        // Postcard numbers the kinds: relayed is a new one at the end, 2.
        assert_eq!(encode(&TunnelPath::Relayed).last().copied(), Some(2));
        assert_eq!(paths.clone().for_version(RELAYED_SINCE), paths);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(&ClientMsg::Hello { version: VERSION });
        round_trip(&ClientMsg::Register(Register {
            host_id: 1,
            name: "h1".into(),
            underlay: IpAddr::from([10, 0, 0, 1]),
            prefix: 24,
            port: 7401,
            lans: vec![LanJoin {
                name: "lan1".into(),
                segment: "10.1.0.0/16".into(),
                proof: [9; 32],
            }],
        }));
        round_trip(&ClientMsg::Heartbeat);
        round_trip(&ClientMsg::Unregister);
        let alerts = LanAlerts {
            lan: "lan1".into(),
            alerts: vec![AlertReport {
                alert: "VmvpnPeerDown".into(),
                state: "firing".into(),
                severity: "critical".into(),
                labels: vec![("peer".into(), "10.0.0.2:7401".into())],
                summary: "h2 is down".into(),
                value: 1.0,
                since_s: 12,
            }],
        };
        round_trip(&ClientMsg::Alerts(vec![alerts.clone()]));
        round_trip(&ClientMsg::AlertsQuery { lan: None });
        round_trip(&ClientMsg::Status);
        round_trip(&ServerMsg::Status(status()));
        round_trip(&ClientMsg::StoreStatus);
        let paths = LanPaths {
            lan: "lan1".into(),
            peers: vec![
                PeerPath {
                    host_id: 7,
                    path: TunnelPath::Punched,
                    open_ms: Some(3),
                },
                PeerPath {
                    host_id: 8,
                    path: TunnelPath::Direct,
                    open_ms: None,
                },
            ],
        };
        round_trip(&ClientMsg::Paths(vec![paths.clone()]));
        round_trip(&ClientMsg::PathsQuery { lan: None });
        round_trip(&ServerMsg::Paths(vec![HostPaths {
            host_id: 1,
            name: "h1".into(),
            paths,
        }]));
        round_trip(&ServerMsg::StoreStatus {
            status: status(),
            store_up: Some(false),
        });
        round_trip(&ServerMsg::Alerts(vec![HostAlerts {
            host_id: 1,
            name: "h1".into(),
            age_ms: 5,
            alerts,
        }]));
        round_trip(&ClientMsg::Query {
            lan: Some("lan1".into()),
        });
        round_trip(&ServerMsg::Challenge {
            version: 1,
            nonce: [1; 32],
            epoch: 5,
            lease_ttl_ms: 30_000,
            heartbeat_ms: 10_000,
        });
        round_trip(&ServerMsg::Refused {
            code: RefuseCode::BadProof,
            reason: "x".into(),
        });
        round_trip(&ServerMsg::Records(vec![record(), record()]));
        round_trip(&ServerMsg::Event(Event::Snapshot {
            lan: "lan1".into(),
            records: vec![record()],
        }));
        round_trip(&ServerMsg::Event(Event::Leave {
            lan: "lan1".into(),
            host_id: 3,
            reason: "lease expired".into(),
        }));
        let report = LanReport {
            lan: "lan1".into(),
            peers: vec![PeerReport {
                host_id: Some(2),
                name: "h2".into(),
                tunnel: Tunnel {
                    health: "ok".into(),
                    rtt_p50_us: Some(410),
                    rtt_p99_us: None,
                    loss_tx_ratio: 0.05,
                    loss_rx_ratio: 0.0,
                    tx_rate_bps: 1_000_000,
                    rx_rate_bps: 0,
                },
            }],
            pairs: vec![PairReport {
                src_mac: [2, 0, 0, 0, 0, 1],
                src_ip: Some(IpAddr::from([10, 0, 0, 1])),
                dst_mac: [2, 0, 0, 0, 0, 2],
                dst_ip: None,
                packets: 3,
                bytes: 180,
            }],
        };
        round_trip(&ClientMsg::Report(vec![report.clone()]));
        round_trip(&ClientMsg::Matrix { lan: None });
        let names = LanVmNames {
            lan: "lan1".into(),
            vms: vec![VmName {
                mac: [2, 0, 0, 1, 0, 0],
                name: "web1".into(),
                uuid: Some("11111111-2222-3333-4444-555555555555".into()),
            }],
        };
        round_trip(&ClientMsg::VmNames(vec![names.clone()]));
        round_trip(&ClientMsg::NamesQuery {
            lan: Some("lan1".into()),
        });
        round_trip(&ServerMsg::VmNames(vec![HostVmNames {
            host_id: 7,
            name: "h1".into(),
            names,
        }]));
        let services = LanServices {
            lan: "lan1".into(),
            services: vec![ServiceReport {
                name: "web".into(),
                address: "192.168.1.200".into(),
                policy: "least-load".into(),
                no_backend_frames_total: 3,
                backends: vec![ServiceBackendReport {
                    backend: "web1".into(),
                    state: "up".into(),
                    local: true,
                    location: "local".into(),
                    weight: 2,
                    load_mbps: 12.5,
                    open_connections: 4,
                    rtt_ms: 0.3,
                    flows_total: 100,
                    active_flows: 2,
                    new_flows_last_minute: 9,
                }],
            }],
        };
        round_trip(&ClientMsg::Services(vec![services.clone()]));
        round_trip(&ClientMsg::ServicesQuery { lan: None });
        round_trip(&ServerMsg::Services(vec![HostServices {
            host_id: 7,
            name: "h1".into(),
            services,
        }]));
        round_trip(&ClientMsg::Auth(Credential::Operator { proof: [4; 32] }));
        round_trip(&ClientMsg::Auth(Credential::Lans(vec![LanProof {
            name: "lan1".into(),
            proof: [5; 32],
        }])));
        round_trip(&ServerMsg::Matrix(vec![HostReport {
            host_id: 1,
            name: "h1".into(),
            age_ms: 1200,
            report,
        }]));
    }

    #[test]
    fn the_wire_format_is_stable() {
        // Golden bytes: changing them breaks every deployed host and bulletin.
        assert_eq!(encode(&ClientMsg::Hello { version: 1 }), [0, 0, 0, 2, 0, 1]);
        assert_eq!(encode(&ClientMsg::Heartbeat), [0, 0, 0, 1, 2]);
        assert_eq!(
            encode(&ServerMsg::Ack { lease_ms: 300 }),
            [0, 0, 0, 3, 3, 0xac, 0x02]
        );
        // New messages were appended: the old variant indexes are unchanged.
        assert_eq!(encode(&ClientMsg::Matrix { lan: None }), [0, 0, 0, 2, 6, 0]);
        assert_eq!(
            encode(&ClientMsg::Auth(Credential::Lans(Vec::new()))),
            [0, 0, 0, 3, 7, 1, 0]
        );
        assert_eq!(
            encode(&ServerMsg::Refused {
                code: RefuseCode::Unauthorized,
                reason: String::new()
            }),
            [0, 0, 0, 3, 2, 6, 0]
        );
        // Version 3 appends `Status` both ways.
        assert_eq!(encode(&ClientMsg::Status), [0, 0, 0, 1, 10]);
        assert_eq!(encode(&ServerMsg::Status(status()))[4], 8);
        // Version 6 appends `StoreStatus` both ways.
        assert_eq!(encode(&ClientMsg::StoreStatus), [0, 0, 0, 1, 15]);
        let st = encode(&ServerMsg::StoreStatus {
            status: status(),
            store_up: None,
        });
        assert_eq!(st[4], 11);
    }

    fn status() -> BulletinStatus {
        BulletinStatus {
            version: VERSION,
            uptime_s: 7,
            lans: 2,
            hosts: 3,
            connections: 4,
            unauthenticated: 1,
            limits: StatusLimits {
                connections: 4096,
                per_ip: 256,
                unauthenticated: 256,
                unauthenticated_per_ip: 16,
            },
            admission: crate::admission::AdmissionCounters {
                evicted: 5,
                ..Default::default()
            },
            queued_bytes: 0,
            buffered_bytes: 0,
            max_buffered_bytes: 1 << 28,
            shed_total: 0,
            web: vec![WebListenerStatus {
                listen: "127.0.0.1:8080".into(),
                counts: crate::http::ListenerCounts {
                    refused_per_ip: 9,
                    ..Default::default()
                },
            }],
            store_up: None,
        }
    }

    #[test]
    fn oversized_and_truncated_frames_are_refused() {
        assert_eq!(
            frame_len(
                (MAX_CLIENT_FRAME as u32 + 1).to_be_bytes(),
                MAX_CLIENT_FRAME
            ),
            Err(CodecError::Oversized {
                len: MAX_CLIENT_FRAME + 1,
                max: MAX_CLIENT_FRAME
            })
        );
        let f = encode(&ServerMsg::Records(vec![record()]));
        for cut in 0..f.len() - 4 {
            assert!(decode::<ServerMsg>(&f[4..4 + cut]).is_err(), "cut at {cut}");
        }
        let mut extra = f[4..].to_vec();
        extra.push(0);
        assert!(matches!(
            decode::<ServerMsg>(&extra),
            Err(CodecError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode::<ClientMsg>(&bytes);
            let _ = decode::<ServerMsg>(&bytes);
        }
    }
}
