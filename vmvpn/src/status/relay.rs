//! The relay (`[host] relay`) as `vmvpn status` and `/metrics` show it.

use serde::{Deserialize, Serialize};

use super::metric::{Exposed, Metric, counter, gauge};

/// One pair as status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairStatus {
    /// The LAN's id.
    pub lan_id: u32,
    /// The two host ids.
    pub hosts: [u32; 2],
    /// Its socket's port.
    pub port: u16,
    /// Datagrams passed on.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Both ends have told it where they are.
    pub bound: bool,
}

/// The relay in `vmvpn status` (JSON `relay`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayStatus {
    /// Its control port.
    pub port: u16,
    /// `relay_limit_mbps` (0: none).
    pub limit_mbps: u32,
    /// LANs it holds a relay key of.
    pub lans: usize,
    /// Authentic requests.
    pub requests_total: u64,
    /// Grants sent.
    pub grants_total: u64,
    /// Authentic binds.
    pub binds_total: u64,
    /// Datagrams passed on.
    pub forwarded_packets_total: u64,
    /// Their bytes.
    pub forwarded_bytes_total: u64,
    /// Dropped, by reason.
    pub dropped: RelayDrops,
    /// Pairs open now.
    pub pairs: Vec<PairStatus>,
}

/// The relay's drops by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayDrops {
    /// Not a relay message, or malformed.
    pub malformed: u64,
    /// For a LAN it serves not.
    pub unknown_lan: u64,
    /// A MAC that does not check.
    pub bad_mac: u64,
    /// An older bind.
    pub replay: u64,
    /// From an address no end bound, or naming another host.
    pub stranger: u64,
    /// The other end not bound yet.
    pub no_peer: u64,
    /// Over the limit.
    pub limit: u64,
}

fn n(x: u64) -> Option<f64> {
    Some(x as f64)
}

const DROPS: &str = "vmvpn_relay_drops_total";
const DROPS_HELP: &str = "Datagrams the relay did not pass on, by reason.";

impl Exposed for RelayStatus {
    const METRICS: &'static [Metric<Self>] = &[
        gauge(
            "vmvpn_relay_pairs",
            "Pair sockets the relay holds open.",
            |r: &RelayStatus| n(r.pairs.len() as u64),
        ),
        counter(
            "vmvpn_relay_requests_total",
            "Authentic requests for a pair socket.",
            |r: &RelayStatus| n(r.requests_total),
        ),
        counter(
            "vmvpn_relay_binds_total",
            "Authentic binds: a host told a pair socket where it is.",
            |r: &RelayStatus| n(r.binds_total),
        ),
        counter(
            "vmvpn_relay_forwarded_packets_total",
            "Datagrams the relay passed on between the two hosts of a pair.",
            |r: &RelayStatus| n(r.forwarded_packets_total),
        ),
        counter(
            "vmvpn_relay_forwarded_bytes_total",
            "Their bytes (UDP payload).",
            |r: &RelayStatus| n(r.forwarded_bytes_total),
        ),
        counter(DROPS, DROPS_HELP, |r: &RelayStatus| n(r.dropped.malformed))
            .labelled("reason=\"malformed\""),
        counter(DROPS, DROPS_HELP, |r: &RelayStatus| {
            n(r.dropped.unknown_lan)
        })
        .labelled("reason=\"unknown_lan\""),
        counter(DROPS, DROPS_HELP, |r: &RelayStatus| n(r.dropped.bad_mac))
            .labelled("reason=\"bad_mac\""),
        counter(DROPS, DROPS_HELP, |r: &RelayStatus| n(r.dropped.replay))
            .labelled("reason=\"replay\""),
        counter(DROPS, DROPS_HELP, |r: &RelayStatus| n(r.dropped.stranger))
            .labelled("reason=\"stranger\""),
        counter(DROPS, DROPS_HELP, |r: &RelayStatus| n(r.dropped.no_peer))
            .labelled("reason=\"no_peer\""),
        counter(DROPS, DROPS_HELP, |r: &RelayStatus| n(r.dropped.limit))
            .labelled("reason=\"limit\""),
    ];
}
