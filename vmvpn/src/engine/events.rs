//! What the engine tells its runtime besides packets: answers to `vmvpn ping` and tunnels
//! going up or down, in one bounded queue read with [`Engine::poll_event`](super::Engine::poll_event).

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::LanId;

/// Events kept for the runtime; the oldest goes when it does not collect them.
pub(crate) const EVENTS_MAX: usize = 256;

/// Something the runtime may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The answer to a `vmvpn ping` probe.
    Pong(Pong),
    /// Keys agreed both ways: frames flow to this peer.
    TunnelUp(TunnelChange),
    /// Nothing heard for `dead_after`: back to handshaking.
    TunnelDown(TunnelChange),
}

/// Which tunnel went up or down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelChange {
    /// The LAN.
    pub lan: LanId,
    /// The peer's underlay address.
    pub peer: SocketAddr,
    /// The peer's host name (empty before its hello).
    pub name: String,
}

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

/// The queue: bounded, oldest first out when full.
#[derive(Debug, Default)]
pub(crate) struct Events {
    queue: VecDeque<Event>,
}

impl Events {
    pub(crate) fn push(&mut self, e: Event) {
        if self.queue.len() >= EVENTS_MAX {
            self.queue.pop_front();
        }
        self.queue.push_back(e);
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    /// Keep the events `f` maps to something, in order (a LAN removed: its events go,
    /// later LANs' are renumbered).
    pub(crate) fn retain_map(&mut self, f: impl FnMut(Event) -> Option<Event>) {
        self.queue = std::mem::take(&mut self.queue)
            .into_iter()
            .filter_map(f)
            .collect();
    }
}
