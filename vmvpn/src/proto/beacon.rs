//! A beacon: `header ‖ HMAC-SHA256 (32)` under the LAN's hello key, with the sender's
//! start time in the sequence field. Sent to the LAN's multicast group once a second; its
//! arrival shows that multicast reaches the sender. Not encrypted: it says only "here".

use super::header::{BEACON_LEN, HEADER_LEN, Header, Kind, WireError};

/// A checked view of a beacon datagram.
#[derive(Debug, Clone, Copy)]
pub struct Beacon<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Beacon<T> {
    /// Check the length (the header's kind was checked by `Packet`).
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let len = buf.as_ref().len();
        if len != BEACON_LEN {
            return Err(WireError::Truncated {
                len,
                min: BEACON_LEN,
            });
        }
        Ok(Beacon { buf })
    }

    /// The header bytes the MAC covers.
    pub fn header_bytes(&self) -> &[u8] {
        &self.buf.as_ref()[..HEADER_LEN]
    }

    /// The MAC.
    pub fn mac(&self) -> [u8; 32] {
        let mut m = [0u8; 32];
        m.copy_from_slice(&self.buf.as_ref()[HEADER_LEN..BEACON_LEN]);
        m
    }
}

/// The header of a beacon from `sender` on `lan`: what its MAC covers.
pub fn beacon_header(lan: u32, sender: u32, start_ns: u64) -> [u8; HEADER_LEN] {
    Header {
        kind: Kind::Beacon,
        flags: 0,
        lan,
        sender,
        seq: start_ns,
    }
    .to_bytes()
}

/// The beacon's bytes from its header and MAC.
pub fn emit(header: &[u8; HEADER_LEN], mac: &[u8; 32]) -> [u8; BEACON_LEN] {
    let mut out = [0u8; BEACON_LEN];
    out[..HEADER_LEN].copy_from_slice(header);
    out[HEADER_LEN..].copy_from_slice(mac);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beacon_round_trips_and_other_lengths_are_refused() {
        let h = beacon_header(7, 9, 42);
        let b = emit(&h, &[5; 32]);
        let v = Beacon::new_checked(&b[..]).expect("beacon");
        assert_eq!(v.header_bytes(), &h[..]);
        assert_eq!(v.mac(), [5; 32]);
        assert!(Beacon::new_checked(&b[..BEACON_LEN - 1]).is_err());
    }
}
