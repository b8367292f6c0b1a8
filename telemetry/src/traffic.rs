//! Packets and bytes in each direction.

use serde::{Deserialize, Serialize};

/// Traffic through one tunnel (or one LAN, or one TAP), counted at the overlay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCounters {
    /// Datagrams sent to the peer.
    pub tx_packets: u64,
    /// Bytes sent to the peer, counting the Ethernet frame (not the overlay header).
    pub tx_bytes: u64,
    /// Datagrams received from the peer and accepted.
    pub rx_packets: u64,
    /// Bytes received and accepted, counting the Ethernet frame.
    pub rx_bytes: u64,
}

impl TrafficCounters {
    /// Count one frame sent.
    #[inline]
    pub fn tx(&mut self, bytes: usize) {
        self.tx_packets += 1;
        self.tx_bytes += bytes as u64;
    }

    /// Count one frame received.
    #[inline]
    pub fn rx(&mut self, bytes: usize) {
        self.rx_packets += 1;
        self.rx_bytes += bytes as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_both_directions() {
        let mut t = TrafficCounters::default();
        t.tx(100);
        t.tx(50);
        t.rx(60);
        assert_eq!(
            t,
            TrafficCounters {
                tx_packets: 2,
                tx_bytes: 150,
                rx_packets: 1,
                rx_bytes: 60
            }
        );
    }
}
