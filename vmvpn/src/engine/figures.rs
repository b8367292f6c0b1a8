//! The light snapshot the alarm rules read once a second: only the figures rules can name
//! (`alarms::series`), as plain copies into buffers the caller hands back each time, so
//! that building it on the data-plane thread formats no string and, once warm, allocates
//! nothing. The full status snapshot (`snapshot.rs`) stays for people and `/metrics`.

use std::net::SocketAddr;
use std::time::Instant;

use telemetry::rtt::RttSummary;
use telemetry::{DropCounters, Rates};

use super::{Engine, LanId};
use crate::status::{Health, LanTraffic};

/// Which figures the rules in force read (see `alarms::series::needs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FigureNeeds {
    /// Per-peer figures (`vmvpn_peer_*`).
    pub peers: bool,
    /// The VM tables (`vmvpn_vm_*`).
    pub vms: bool,
}

/// A peer's name, cut to 32 bytes (host names are at most 32): copied, not allocated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortName {
    bytes: [u8; 32],
    len: u8,
}

impl ShortName {
    /// `s`, cut at a character boundary within 32 bytes.
    pub fn new(s: &str) -> Self {
        let mut len = s.len().min(32);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0u8; 32];
        bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        ShortName {
            bytes,
            len: len as u8,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for ShortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// One peer's figures.
#[derive(Debug, Clone, Copy)]
pub struct PeerFigures {
    /// Its LAN (an index into [`Figures::lans`]).
    pub lan: LanId,
    /// Its underlay address.
    pub addr: SocketAddr,
    /// Its name, when known.
    pub name: ShortName,
    /// The tunnel is up.
    pub up: bool,
    /// It answered probes before and is silent now.
    pub down: bool,
    /// Data frames received from it (sequence accounting).
    pub received: u64,
    /// Frames from it found missing.
    pub lost: u64,
    /// `lost / (received + lost)`.
    pub loss_rx_ratio: f64,
    /// What it reports missing of ours.
    pub loss_tx_ratio: f64,
    /// RTT figures (cached in the estimator; no histogram is read here).
    pub rtt: RttSummary,
    /// Rates, last second.
    pub rates: Rates,
    /// Send rate over the link speed, when it is configured.
    pub tx_utilisation_ratio: Option<f64>,
    /// Receive rate over the link speed, when it is configured.
    pub rx_utilisation_ratio: Option<f64>,
}

/// One LAN's counters.
#[derive(Debug, Clone, Default)]
pub struct LanFigures {
    /// Its name (copied only when it differs from the buffer's).
    pub name: String,
    /// Drops by reason.
    pub drops: DropCounters,
    /// MACs that moved to another host.
    pub mac_moves: u64,
    /// TCP connections opened (SYN without ACK), all VMs.
    pub tcp_syn_total: u64,
    /// Its services: (name, backends up, backends).
    pub services: Vec<(String, u32, u32)>,
}

/// The light snapshot; keep it and hand it back to [`Engine::alarm_figures`].
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Every LAN, in engine order.
    pub lans: Vec<LanFigures>,
    /// Every peer of every LAN (when needed).
    pub peers: Vec<PeerFigures>,
    /// Every LAN's VM table (when needed).
    pub traffic: Vec<LanTraffic>,
}

impl Engine {
    /// Fill `out` with the figures `needs` asks for, reusing its buffers.
    pub fn alarm_figures(&self, needs: FigureNeeds, now: Instant, out: &mut Figures) {
        out.lans.resize_with(self.lans.len(), LanFigures::default);
        out.peers.clear();
        let speed = self.measure.accounting.link_speed_bps;
        for (i, (l, f)) in self.lans.iter().zip(out.lans.iter_mut()).enumerate() {
            if f.name != l.spec.name {
                f.name.clone_from(&l.spec.name);
            }
            f.drops = l.drops.clone();
            f.mac_moves = l.macs.stats().moves;
            f.tcp_syn_total = l.measure.flows.stats().tcp_syn_total;
            l.services.up_counts(&mut f.services);
            if !needs.peers {
                continue;
            }
            for p in &l.peers {
                let seq = p.count.rx_seq.stats();
                let rates = p.count.series.rates();
                let util = |bps: u64| speed.map(|b| bps as f64 / b.max(1) as f64);
                out.peers.push(PeerFigures {
                    lan: LanId(i),
                    addr: p.addr,
                    name: ShortName::new(&p.name),
                    up: p.tunnel.is_up(),
                    down: p.health(now) == Health::Down,
                    received: seq.received,
                    lost: seq.lost,
                    loss_rx_ratio: seq.loss_ratio(),
                    loss_tx_ratio: match p.probe.tx_seen {
                        (0, 0) => 0.0,
                        (rx, lost) => lost as f64 / (rx + lost) as f64,
                    },
                    rtt: p.probe.rtt.summary(),
                    rates,
                    tx_utilisation_ratio: util(rates.tx_rate_bps),
                    rx_utilisation_ratio: util(rates.rx_rate_bps),
                });
            }
        }
        if needs.vms {
            out.traffic = self.traffic(None, Some(0));
        } else {
            out.traffic.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_cut_at_a_character_boundary() {
        assert_eq!(ShortName::new("h1").as_str(), "h1");
        let long = "é".repeat(20);
        let s = ShortName::new(&long);
        assert_eq!(s.as_str(), "é".repeat(16));
        assert_eq!(ShortName::new("").as_str(), "");
    }
}
