//! The body of a sealed service-state datagram ([`Kind::ServiceState`]): what a host
//! knows of the service backends that run on it, for its peers to choose by (big-endian):
//!
//! ```text
//! count (1) ‖ count × ( service MAC (6) ‖ backend MAC (6) ‖ flags (1) ‖ load, kbit/s (4)
//!                       ‖ open TCP connections (4) ‖ backend key (4) )
//! backend key: 32-bit FNV-1a of the backend as the config names it (MAC, address or
//!   libvirt name): a receiver that knows the backend by name only learns its MAC
//! flags: bit 0 healthy (its host's probes answered); other bits 0, ignored
//! ```
//!
//! Parsed only after the datagram authenticated; the length must match the count exactly.

use super::header::{Kind, WireError};

/// Bytes per entry.
pub const ENTRY_LEN: usize = 25;
/// Entries per datagram (1 201 bytes at most: under any path MTU, 1 280 included).
pub const MAX_ENTRIES: usize = 48;

/// One backend as its host reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendReport {
    /// The service's virtual MAC (names the service on every host alike).
    pub service: [u8; 6],
    /// The backend VM's MAC.
    pub backend: [u8; 6],
    /// Its host's probes were answered.
    pub healthy: bool,
    /// Its traffic in both directions over the last second, kbit/s.
    pub load_kbps: u32,
    /// TCP connections open with it now, as its host's flow table holds them.
    pub open_tcp: u32,
    /// The hash of the backend as the config names it.
    pub key: u32,
}

/// Write `entries` (at most [`MAX_ENTRIES`], the rest left out) into `out`, which holds
/// at least `1 + MAX_ENTRIES * ENTRY_LEN` bytes; the body's length.
pub fn emit(entries: &[BackendReport], out: &mut [u8]) -> usize {
    let n = entries.len().min(MAX_ENTRIES);
    out[0] = n as u8;
    for (i, e) in entries[..n].iter().enumerate() {
        let o = &mut out[1 + i * ENTRY_LEN..1 + (i + 1) * ENTRY_LEN];
        o[..6].copy_from_slice(&e.service);
        o[6..12].copy_from_slice(&e.backend);
        o[12] = u8::from(e.healthy);
        o[13..17].copy_from_slice(&e.load_kbps.to_be_bytes());
        o[17..21].copy_from_slice(&e.open_tcp.to_be_bytes());
        o[21..25].copy_from_slice(&e.key.to_be_bytes());
    }
    1 + n * ENTRY_LEN
}

/// The entries of a body, checked whole before any is returned.
pub fn parse(b: &[u8]) -> Result<impl Iterator<Item = BackendReport> + '_, WireError> {
    let n = b.first().map_or(0, |c| usize::from(*c));
    let expected = 1 + n * ENTRY_LEN;
    if b.is_empty() || b.len() != expected || n > MAX_ENTRIES {
        return Err(WireError::BodyLength {
            kind: Kind::ServiceState,
            len: b.len(),
            expected,
        });
    }
    Ok(b[1..].chunks_exact(ENTRY_LEN).map(|e| {
        let mut service = [0u8; 6];
        service.copy_from_slice(&e[..6]);
        let mut backend = [0u8; 6];
        backend.copy_from_slice(&e[6..12]);
        BackendReport {
            service,
            backend,
            healthy: e[12] & 1 == 1,
            load_kbps: u32::from_be_bytes([e[13], e[14], e[15], e[16]]),
            open_tcp: u32::from_be_bytes([e[17], e[18], e[19], e[20]]),
            key: u32::from_be_bytes([e[21], e[22], e[23], e[24]]),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_lengths_are_refused() {
        let e = BackendReport {
            service: [2, 0x5e, 1, 2, 3, 4],
            backend: [2, 0, 0, 1, 0, 0],
            healthy: true,
            load_kbps: 123_456,
            open_tcp: 70_000,
            key: 0xdead_beef,
        };
        let mut out = [0u8; 1 + MAX_ENTRIES * ENTRY_LEN];
        let n = emit(
            &[
                e,
                BackendReport {
                    healthy: false,
                    ..e
                },
            ],
            &mut out,
        );
        assert_eq!(n, 1 + 2 * ENTRY_LEN);
        let back: Vec<_> = parse(&out[..n]).expect("valid").collect();
        assert_eq!(
            back,
            vec![
                e,
                BackendReport {
                    healthy: false,
                    ..e
                }
            ]
        );
        for bad in [&out[..0], &out[..n - 1], &out[..n + 1]] {
            assert!(parse(bad).is_err(), "{} bytes", bad.len());
        }
        out[0] = 200;
        assert!(parse(&out[..1 + 200 * ENTRY_LEN.min(5)]).is_err());
    }
}
