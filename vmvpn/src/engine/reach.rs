//! Where a peer can be reached: the address it was listed with (the config, its bulletin
//! record, or its first hello), and the other candidates the bulletin knows (its NAT's
//! public mapping). While the tunnel is not up, hellos go to every candidate; the first
//! that answers authentically becomes the peer's address. Both sides do so at the same
//! time (the bulletin pushes each host's record to the other as it registers), so each
//! side's hellos open its own NAT's mapping for the other's to come in through: hole
//! punching, with the LAN secret's HMAC deciding which answer counts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::status::{CandidateStatus, PathKind};

/// What the bulletin knows of reaching a peer besides its address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reached {
    /// Its host id: an authentic hello with this id is the peer's, from any address
    /// (behind a NAT that changes ports, it comes from none of the candidates).
    pub host_id: Option<u32>,
    /// Further addresses it may answer at: its NAT's public mapping.
    pub others: Vec<SocketAddr>,
}

/// One address the peer may answer at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) addr: SocketAddr,
    pub(crate) hellos: u64,
    pub(crate) answered: bool,
    /// The latest hello sent to it that nothing has come back from yet.
    awaiting: Option<Instant>,
    /// From that hello to the next authentic one from this address.
    rtt: Option<Duration>,
    /// A relay's pair socket for this peer and us (`[host] relays`), not the peer itself.
    pub(crate) relay: bool,
}

impl Candidate {
    fn new(addr: SocketAddr) -> Self {
        Candidate {
            addr,
            hellos: 0,
            answered: false,
            awaiting: None,
            rtt: None,
            relay: false,
        }
    }
}

/// Asking the relays for a pair socket, while no path opens.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RelayAsk {
    /// The latest request sent, and how many so far (which relay is next).
    pub(crate) asked: Option<Instant>,
    pub(crate) requests: u32,
    /// The latest bind sent to the pair socket.
    pub(crate) bound: Option<Instant>,
    /// The latest hellos to the direct candidates while relayed.
    pub(crate) retried: Option<Instant>,
}

/// The peer's candidates (the listed address first) and how its path opened.
#[derive(Debug, Clone)]
pub(crate) struct Reach {
    /// Never empty: the listed address is the first.
    candidates: Vec<Candidate>,
    /// The first hello of the handshake under way (None while up).
    opening_since: Option<Instant>,
    /// How long the latest handshake took.
    pub(crate) opened_in: Option<Duration>,
    /// Its host id as its source listed it (the bulletin's record).
    pub(crate) host_id: Option<u32>,
    pub(crate) relay: RelayAsk,
}

impl Reach {
    pub(crate) fn new(listed: SocketAddr) -> Self {
        Reach {
            candidates: vec![Candidate::new(listed)],
            opening_since: None,
            opened_in: None,
            host_id: None,
            relay: RelayAsk::default(),
        }
    }

    /// The address its source named it by: what a removal finds it by, wherever it answers.
    pub(crate) fn listed(&self) -> SocketAddr {
        self.candidates[0].addr
    }

    /// Vouched for at `listed` by a source (a hello-made entry the bulletin now lists).
    pub(crate) fn relist(&mut self, listed: SocketAddr) {
        if let Some(i) = self.candidates.iter().position(|c| c.addr == listed) {
            let c = self.candidates.remove(i);
            self.candidates.insert(0, c);
        } else {
            self.candidates.insert(0, Candidate::new(listed));
        }
    }

    /// The other addresses it may answer at now (the bulletin's latest word): those no
    /// longer named go, what was learned of those that stay is kept.
    pub(crate) fn set_others(&mut self, others: &[SocketAddr]) {
        let listed = self.listed();
        self.candidates
            .retain(|c| c.addr == listed || c.relay || others.contains(&c.addr));
        for a in others {
            if !self.knows(*a) {
                self.candidates.push(Candidate::new(*a));
            }
        }
    }

    /// A relay granted a pair socket at `addr`: one more candidate, the last resort.
    /// Returns whether it is new (a grant repeated for the same socket changes nothing).
    pub(crate) fn add_relay(&mut self, addr: SocketAddr) -> bool {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            c.relay = true;
            return false;
        }
        let mut c = Candidate::new(addr);
        c.relay = true;
        self.candidates.push(c);
        true
    }

    /// Forget the relay's pair socket and the asking: the next handshake that needs a
    /// relay asks again (the relay answers with the same socket if it still has it).
    pub(crate) fn forget_relay(&mut self) {
        self.candidates.retain(|c| !c.relay);
        self.relay = RelayAsk::default();
    }

    /// The relay pair socket granted for this peer, if any.
    pub(crate) fn relay_addr(&self) -> Option<SocketAddr> {
        self.candidates.iter().find(|c| c.relay).map(|c| c.addr)
    }

    /// `addr` is a relay's pair socket, not the peer.
    pub(crate) fn is_relay(&self, addr: SocketAddr) -> bool {
        self.candidates.iter().any(|c| c.relay && c.addr == addr)
    }

    /// Since when the handshake under way has been sending hellos (None while up).
    pub(crate) fn opening_since(&self) -> Option<Instant> {
        self.opening_since
    }

    /// `addr` is one of its candidates.
    pub(crate) fn knows(&self, addr: SocketAddr) -> bool {
        self.candidates.iter().any(|c| c.addr == addr)
    }

    /// A hello goes out to `addr` at `now` (a candidate's count, the handshake's start).
    pub(crate) fn note_hello(&mut self, addr: SocketAddr, now: Instant) {
        self.opening_since.get_or_insert(now);
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            c.hellos += 1;
            c.awaiting = Some(now);
        }
    }

    /// A hello goes out to `addr` at `now` while the tunnel is up (through a relay): its
    /// count and round trip, but no handshake under way.
    pub(crate) fn note_retry(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            c.hellos += 1;
            c.awaiting = Some(now);
        }
    }

    /// An authentic hello came from `addr` at `now`: the candidate answered, and the round
    /// trip since our latest hello to it is its RTT. A peer answers a hello at once (at
    /// most every 200 ms), so that is close; hellos that cross in a punch make it shorter,
    /// a rate-limited answer longer. Hellos from it with none of ours pending time nothing.
    pub(crate) fn note_answer(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            c.answered = true;
            if let Some(t) = c.awaiting.take() {
                c.rtt = Some(now.saturating_duration_since(t));
            }
        }
    }

    /// The tunnel came up at `now`.
    pub(crate) fn note_open(&mut self, now: Instant) {
        if let Some(t) = self.opening_since.take() {
            self.opened_in = Some(now.saturating_duration_since(t));
        }
    }

    /// The tunnel went down: the next handshake is timed afresh.
    pub(crate) fn note_closed(&mut self) {
        self.opening_since = None;
    }

    /// Where hellos go while the tunnel is not up, besides the current address.
    pub(crate) fn others(&self, current: SocketAddr) -> impl Iterator<Item = SocketAddr> + '_ {
        self.candidates
            .iter()
            .map(|c| c.addr)
            .filter(move |a| *a != current)
    }

    /// How a peer answering at `current` is reached.
    pub(crate) fn path(&self, current: SocketAddr) -> PathKind {
        if self.is_relay(current) {
            PathKind::Relayed
        } else if current == self.listed() {
            PathKind::Direct
        } else {
            PathKind::Punched
        }
    }

    pub(crate) fn status(&self) -> Vec<CandidateStatus> {
        self.candidates
            .iter()
            .map(|c| CandidateStatus {
                address: c.addr.to_string(),
                hellos_sent: c.hellos,
                answered: c.answered,
                rtt_ms: c.rtt.map(|d| d.as_secs_f64() * 1e3),
                relay: c.relay,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 7401))
    }

    #[test]
    fn the_listed_address_stays_first_and_others_follow_the_bulletin() {
        let mut r = Reach::new(a(1));
        r.set_others(&[a(2), a(3)]);
        assert!(r.knows(a(2)) && r.knows(a(3)));
        r.note_answer(a(2), Instant::now());
        r.set_others(&[a(2)]);
        assert!(!r.knows(a(3)) && r.knows(a(1)), "the listed one never goes");
        assert!(r.status()[1].answered, "what was learned stays");
        assert_eq!(r.others(a(2)).collect::<Vec<_>>(), [a(1)]);
        assert_eq!(r.path(a(1)), PathKind::Direct);
        assert_eq!(r.path(a(2)), PathKind::Punched);
        r.relist(a(2));
        assert_eq!(r.listed(), a(2));
        assert_eq!(r.path(a(2)), PathKind::Direct);
        assert!(r.knows(a(1)));
    }

    #[test]
    fn the_open_time_runs_from_the_first_hello_of_a_handshake() {
        let t = Instant::now();
        let mut r = Reach::new(a(1));
        r.note_hello(a(1), t);
        r.note_hello(a(1), t + Duration::from_millis(200));
        r.note_open(t + Duration::from_millis(300));
        assert_eq!(r.opened_in, Some(Duration::from_millis(300)));
        assert_eq!(r.status()[0].hellos_sent, 2);
        // A later handshake (after a silence) is timed from its own first hello.
        r.note_closed();
        r.note_hello(a(1), t + Duration::from_secs(60));
        r.note_open(t + Duration::from_millis(60_050));
        assert_eq!(r.opened_in, Some(Duration::from_millis(50)));
    }

    #[test]
    fn a_candidates_rtt_runs_from_our_latest_hello_to_its_next_one() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Reach::new(a(1));
        r.set_others(&[a(2)]);
        // Its own hello, with none of ours out: answered, but no round trip to time.
        r.note_answer(a(2), t);
        assert!(r.status()[1].answered && r.status()[1].rtt_ms.is_none());
        r.note_hello(a(1), t + ms(100));
        r.note_hello(a(2), t + ms(100));
        r.note_hello(a(2), t + ms(300));
        r.note_answer(a(2), t + ms(304));
        // A second hello from it before we send again changes nothing.
        r.note_answer(a(2), t + ms(900));
        let s = r.status();
        assert_eq!(s[1].rtt_ms, Some(4.0));
        assert_eq!(s[0].rtt_ms, None, "the listed address never answered");
        assert!(!s[0].answered);
    }

    #[test]
    fn a_relay_socket_is_a_candidate_the_bulletin_does_not_take_away() {
        let mut r = Reach::new(a(1));
        let relay = SocketAddr::from(([10, 0, 9, 1], 40000));
        assert!(r.add_relay(relay));
        assert!(!r.add_relay(relay), "a repeated grant adds nothing");
        r.set_others(&[a(2)]);
        assert_eq!(r.relay_addr(), Some(relay));
        assert_eq!(r.path(relay), PathKind::Relayed);
        assert_eq!(r.path(a(2)), PathKind::Punched);
        assert!(
            r.status()
                .iter()
                .any(|c| c.relay && c.address == relay.to_string())
        );
        assert!(r.others(a(1)).any(|x| x == relay), "hellos go to it too");
    }
}
