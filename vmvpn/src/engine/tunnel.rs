//! A tunnel's state and every change of it, in one place. A tunnel to a peer is closed
//! until the peer's hello gives session keys; keyed while the peer has not yet shown that
//! it holds ours (or after it fell silent); up once it has, by a hello echoing our key or
//! by a datagram sealed under the pairwise key, which only a holder of our key can seal.
//! Only an up tunnel carries frames. The runtime hears of each change into and out of
//! `Up` (`Event::TunnelUp`, `Event::TunnelDown`); nothing else sets the state.

use std::time::Instant;

use super::LanId;
use super::events::{Event, TunnelChange};
use super::handshake::Session;
use super::peer::Peer;

/// Where a tunnel stands.
#[derive(Default)]
pub(crate) enum Tunnel {
    /// No session keys: hellos go out until the peer answers.
    #[default]
    Closed,
    /// Keys agreed from the peer's hello, not yet proven both ways, or proven once and
    /// silent since: hellos go out, frames do not.
    Keyed(Session),
    /// Both sides hold the keys and the peer is heard: frames flow.
    Up(Session),
}

impl Tunnel {
    /// The session's keys, whether or not the tunnel is up.
    pub(crate) fn session(&self) -> Option<&Session> {
        match self {
            Tunnel::Closed => None,
            Tunnel::Keyed(s) | Tunnel::Up(s) => Some(s),
        }
    }

    /// The same, to open and count with.
    pub(crate) fn session_mut(&mut self) -> Option<&mut Session> {
        match self {
            Tunnel::Closed => None,
            Tunnel::Keyed(s) | Tunnel::Up(s) => Some(s),
        }
    }

    /// The session, only while the tunnel is up (what sending a frame needs).
    pub(crate) fn up_session(&self) -> Option<&Session> {
        match self {
            Tunnel::Up(s) => Some(s),
            _ => None,
        }
    }

    /// Whether frames flow.
    pub(crate) fn is_up(&self) -> bool {
        matches!(self, Tunnel::Up(_))
    }

    /// New session keys (a new run of the peer, or its first hello): keyed, whatever the
    /// state before. True when the tunnel was up and so went down.
    fn rekey(&mut self, s: Session) -> bool {
        let was_up = self.is_up();
        *self = Tunnel::Keyed(s);
        was_up
    }

    /// Keyed to up; true when it changed. Called for every datagram opened: an up
    /// tunnel answers before the session is moved.
    fn confirm(&mut self) -> bool {
        if !matches!(self, Tunnel::Keyed(_)) {
            return false;
        }
        if let Tunnel::Keyed(s) = std::mem::take(self) {
            *self = Tunnel::Up(s);
        }
        true
    }

    /// Up to keyed (the keys stay, for the peer's next hello); true when it changed.
    fn lapse(&mut self) -> bool {
        if !self.is_up() {
            return false;
        }
        if let Tunnel::Up(s) = std::mem::take(self) {
            *self = Tunnel::Keyed(s);
        }
        true
    }
}

/// The event for a change of `p`'s tunnel on `lan`.
fn change(lan: LanId, p: &Peer, up: bool) -> Event {
    let c = TunnelChange {
        lan,
        peer: p.addr,
        name: p.name.clone(),
    };
    if up {
        Event::TunnelUp(c)
    } else {
        Event::TunnelDown(c)
    }
}

/// The transitions, each with the event it raises (pushed by `emit`).
impl Peer {
    /// New session keys from the peer's hello: the event if the tunnel was up.
    pub(crate) fn rekey(&mut self, lan: LanId, s: Session) -> Option<Event> {
        let down = self.tunnel.rekey(s);
        down.then(|| {
            self.reach.note_closed();
            change(lan, self, false)
        })
    }

    /// The peer proved it holds our key at `now`: the event if the tunnel came up.
    pub(crate) fn confirm(&mut self, lan: LanId, now: Instant) -> Option<Event> {
        let up = self.tunnel.confirm();
        up.then(|| {
            self.reach.note_open(now);
            change(lan, self, true)
        })
    }

    /// Nothing heard for too long: the event if the tunnel was up.
    pub(crate) fn lapse(&mut self, lan: LanId) -> Option<Event> {
        let down = self.tunnel.lapse();
        down.then(|| {
            self.reach.note_closed();
            // The relay may have closed the pair since (idle): ask afresh if needed.
            self.reach.forget_relay();
            change(lan, self, false)
        })
    }
}
