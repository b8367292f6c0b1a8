//! The hello body (see `header` for the datagram around it): this run's public key, the
//! peer's key as last seen, the host name, and an HMAC under a key from the LAN secret.

use crate::proto::header::{HEADER_LEN, HELLO_BODY_LEN, NAME_LEN, WireError};

/// A hello body, parsed from or written to [`HELLO_BODY_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's X25519 public key for this run.
    pub public: [u8; 32],
    /// The receiver's public key as the sender last saw it, or zeros.
    pub echo: [u8; 32],
    /// The sender's host name, NUL padded.
    pub name: [u8; NAME_LEN],
    /// HMAC-SHA256 over header ‖ public ‖ echo ‖ name.
    pub mac: [u8; 32],
}

impl Hello {
    /// Parse a hello body (the payload of a checked hello packet).
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let b: &[u8; HELLO_BODY_LEN] = body
            .try_into()
            .map_err(|_| WireError::HelloLength(body.len() + HEADER_LEN))?;
        let mut h = Hello {
            public: [0; 32],
            echo: [0; 32],
            name: [0; NAME_LEN],
            mac: [0; 32],
        };
        h.public.copy_from_slice(&b[0..32]);
        h.echo.copy_from_slice(&b[32..64]);
        h.name.copy_from_slice(&b[64..64 + NAME_LEN]);
        h.mac.copy_from_slice(&b[64 + NAME_LEN..]);
        Ok(h)
    }

    /// The bytes the MAC covers after the header.
    pub fn signed_body(&self) -> [u8; 32 + 32 + NAME_LEN] {
        let mut out = [0u8; 32 + 32 + NAME_LEN];
        out[0..32].copy_from_slice(&self.public);
        out[32..64].copy_from_slice(&self.echo);
        out[64..].copy_from_slice(&self.name);
        out
    }

    /// Write the body into `out`.
    pub fn emit(&self, out: &mut [u8; HELLO_BODY_LEN]) {
        out[..64 + NAME_LEN].copy_from_slice(&self.signed_body());
        out[64 + NAME_LEN..].copy_from_slice(&self.mac);
    }

    /// The name as text (lossy, NULs trimmed).
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// Pack a host name into the fixed hello field (truncated to [`NAME_LEN`] bytes).
pub fn name_field(name: &str) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    let n = name.len().min(NAME_LEN);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::header::{HELLO_LEN, Header, Kind, Packet};

    fn header() -> Header {
        Header {
            kind: Kind::Data,
            flags: 0,
            lan: 0x0102_0304,
            sender: 0x0a0b_0c0d,
            seq: 0x1122_3344_5566_7788,
        }
    }

    #[test]
    fn hello_round_trips_and_demands_exact_length() {
        let h = Hello {
            public: [1; 32],
            echo: [2; 32],
            name: name_field("host-a"),
            mac: [3; 32],
        };
        let mut body = [0u8; HELLO_BODY_LEN];
        h.emit(&mut body);
        assert_eq!(Hello::parse(&body).expect("parse"), h);
        assert_eq!(h.name_str(), "host-a");
        let mut dg = Header {
            kind: Kind::Hello,
            ..header()
        }
        .to_bytes()
        .to_vec();
        dg.extend_from_slice(&body);
        assert!(Packet::new_checked(&dg[..]).is_ok());
        dg.push(0);
        assert_eq!(
            Packet::new_checked(&dg[..]).err(),
            Some(WireError::HelloLength(HELLO_LEN + 1))
        );
    }
}
