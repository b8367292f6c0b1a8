//! Why a packet was dropped, and how many were, by reason.
//!
//! The hot path bumps a counter with a `Copy` enum: no allocation, no formatting.

use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeMap};

/// Every reason vmvpn drops a frame or datagram. Names are stable: they are JSON keys
/// and will be Prometheus label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Datagram too short, wrong version or unknown type.
    BadHeader,
    /// The header names a LAN this host is not in.
    UnknownLan,
    /// AEAD open or hello MAC failed: wrong LAN secret, corruption or forgery.
    AuthFailure,
    /// Sequence number already seen or older than the replay window.
    Replay,
    /// Frame larger than the TAP MTU allows, or datagram larger than any valid one.
    Oversize,
    /// No peer to send a frame to (no peers, or none with a session yet).
    NoRoute,
    /// Sealed data from a peer we hold no session with (it must send a hello first).
    NoSession,
    /// A frame that is not Ethernet (shorter than an Ethernet header).
    Malformed,
    /// A datagram that claims to come from this host's own id.
    Loop,
    /// Frame addressed to a MAC that lives on this host's own TAP side.
    LocalDestination,
    /// The kernel refused a UDP send (buffer full, unreachable).
    UdpSendError,
    /// The kernel refused a TAP write.
    TapWriteError,
    /// Overlay fragments of one frame overlapped (the frame is dropped).
    FragmentOverlap,
    /// A fragmented frame larger than the TAP allows, or a piece outside its frame.
    FragmentOversize,
    /// A fragmented frame that did not complete in time.
    FragmentTimeout,
    /// A fragmented frame pushed out of the full reassembly table.
    FragmentEvicted,
    /// A bulk frame CoDel dropped because the receive queue stood too long, so that its
    /// sender slows down (ECN-capable flows are marked instead, not dropped).
    Aqm,
}

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [DropReason; 17] = [
        DropReason::BadHeader,
        DropReason::UnknownLan,
        DropReason::AuthFailure,
        DropReason::Replay,
        DropReason::Oversize,
        DropReason::NoRoute,
        DropReason::NoSession,
        DropReason::Malformed,
        DropReason::Loop,
        DropReason::LocalDestination,
        DropReason::UdpSendError,
        DropReason::TapWriteError,
        DropReason::FragmentOverlap,
        DropReason::FragmentOversize,
        DropReason::FragmentTimeout,
        DropReason::FragmentEvicted,
        DropReason::Aqm,
    ];

    /// Stable snake_case name, used as JSON key and metric label.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::BadHeader => "bad_header",
            DropReason::UnknownLan => "unknown_lan",
            DropReason::AuthFailure => "auth_failure",
            DropReason::Replay => "replay",
            DropReason::Oversize => "oversize",
            DropReason::NoRoute => "no_route",
            DropReason::NoSession => "no_session",
            DropReason::Malformed => "malformed",
            DropReason::Loop => "loop",
            DropReason::LocalDestination => "local_destination",
            DropReason::UdpSendError => "udp_send_error",
            DropReason::TapWriteError => "tap_write_error",
            DropReason::FragmentOverlap => "fragment_overlap",
            DropReason::FragmentOversize => "fragment_oversize",
            DropReason::FragmentTimeout => "fragment_timeout",
            DropReason::FragmentEvicted => "fragment_evicted",
            DropReason::Aqm => "aqm",
        }
    }

    /// The reason with this name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.name() == name)
    }
}

/// One counter per [`DropReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::ALL.len()],
}

impl DropCounters {
    /// Count one drop.
    #[inline]
    pub fn bump(&mut self, reason: DropReason) {
        self.add(reason, 1);
    }

    /// Count `n` drops (a batch that failed as one).
    #[inline]
    pub fn add(&mut self, reason: DropReason, n: u64) {
        self.counts[reason as usize] += n;
    }

    /// How many were dropped for this reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize]
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Non-zero counters, by reason.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// Read back from that object; keys this build does not know (a newer daemon's) are
/// skipped, missing ones are 0.
impl<'de> Deserialize<'de> for DropCounters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, u64>::deserialize(d)?;
        let mut c = DropCounters::default();
        for (k, n) in map {
            if let Some(r) = DropReason::from_name(&k) {
                c.add(r, n);
            }
        }
        Ok(c)
    }
}

/// Serialized as an object with every reason as a key, so scripts can rely on the keys.
impl Serialize for DropCounters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(DropReason::ALL.len()))?;
        for r in DropReason::ALL {
            map.serialize_entry(r.name(), &self.get(r))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_index_and_name() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?} out of order in ALL");
            assert_eq!(DropReason::from_name(r.name()), Some(*r));
        }
    }

    #[test]
    fn bump_counts_per_reason_and_serializes_every_key() {
        let mut c = DropCounters::default();
        c.bump(DropReason::Replay);
        c.bump(DropReason::Replay);
        c.bump(DropReason::AuthFailure);
        assert_eq!(c.get(DropReason::Replay), 2);
        assert_eq!(c.total(), 3);
        let v = serde_json::to_value(&c).expect("serialize");
        assert_eq!(v["replay"], 2);
        assert_eq!(v["auth_failure"], 1);
        assert_eq!(v["bad_header"], 0);
        assert_eq!(v.as_object().map(|m| m.len()), Some(DropReason::ALL.len()));
    }
}
