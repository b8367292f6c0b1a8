//! Sequence numbers are AEAD nonces: under one pair of keys, no number may go out twice.
//! The keys come from the two hosts' run keys, so they outlive the peer or LAN entry
//! that counts: a peer the bulletin drops and lists again (its lease lapsed while its
//! bulletin link was down), or a LAN a reload leaves and joins again, is back under the
//! same keys. A counter that started at 0 again would send numbers the other side has
//! seen (its replay window drops them until the count catches up: seconds of lost
//! frames) and, worse, seal new frames under a nonce already used, which under AES-GCM
//! gives away the authentication key. So every new counter starts at the floor: above
//! every number any counter of this run had reached when its entry went away.

use super::Engine;
use super::lan::Lan;
use super::peer::Peer;

impl Peer {
    /// The next number of each of this peer's counters, the highest of them.
    pub(crate) fn next_seq(&self) -> u64 {
        self.tx_seq.max(self.path.pmtu_seq)
    }
}

impl Lan {
    /// The next number of every counter of this LAN and its peers, the highest of them.
    pub(crate) fn next_seq(&self) -> u64 {
        self.peers
            .iter()
            .map(Peer::next_seq)
            .fold(self.group_seq, u64::max)
    }
}

impl Engine {
    /// A counter that reached `next` goes away: later counters start at or above it.
    pub(super) fn retire_seq(&mut self, next: u64) {
        self.seq_floor = self.seq_floor.max(next);
    }
}
