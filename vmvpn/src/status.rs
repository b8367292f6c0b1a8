//! What `vmvpn status` and `vmvpn macs` report: the JSON contract of the control socket.
//!
//! Key names are stable and carry their unit where they have one (`_ms`, `_bytes`).

use serde::Serialize;
use telemetry::{DropCounters, TrafficCounters};

use crate::macdb::MacDbStats;

/// The whole host, as `vmvpn status --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This host.
    pub host: HostStatus,
    /// Datagrams dropped before they could be tied to a LAN (bad header, unknown LAN).
    pub drops: DropCounters,
    /// One entry per configured LAN.
    pub lans: Vec<LanStatus>,
    /// The bulletin connection (null when the config has no `[bulletin]`).
    pub bulletin: Option<BulletinStatus>,
}

/// The bulletin connection.
#[derive(Debug, Clone, Serialize)]
pub struct BulletinStatus {
    /// The bulletin's address.
    pub server: String,
    /// "connecting", "registered", "unreachable" or "refused".
    pub state: &'static str,
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
#[derive(Debug, Clone, Serialize)]
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
}

/// One LAN.
#[derive(Debug, Clone, Serialize)]
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
    /// Drops on this LAN by reason (all peers together, and frames from the TAP).
    pub drops: DropCounters,
    /// The LAN's peers.
    pub peers: Vec<PeerStatus>,
}

/// One peer of one LAN.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Peer host id (null until its first hello).
    pub id: Option<u32>,
    /// Peer host name from its hello (empty until then).
    pub name: String,
    /// Underlay address and port.
    pub address: String,
    /// Where the entry came from: "static" (config) or "hello" (an authenticated hello
    /// from an address not in the config).
    pub source: &'static str,
    /// "up" (keys agreed both ways) or "handshaking".
    pub state: &'static str,
    /// Milliseconds since anything authentic was heard from it (null: never).
    pub last_heard_ago_ms: Option<u64>,
    /// Traffic through this tunnel.
    #[serde(flatten)]
    pub traffic: TrafficCounters,
    /// Drops attributed to this peer, by reason.
    pub drops: DropCounters,
}

/// One row of `vmvpn macs --json`.
#[derive(Debug, Clone, Serialize)]
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
