//! Maglev's lookup table (Eisenbud et al., NSDI 2016) and the fixed hashes every host
//! computes alike: the table, the flow's hash and the service's virtual MAC.

use super::BackendSpec;
use crate::engine::macdb::Mac;

/// Lookup table size: a prime, large against any backend count (Maglev's M ≫ N), 32 KiB.
pub const TABLE_SIZE: usize = 16_381;

/// Maglev's lookup table over `backends`: each takes slots in turn from its own
/// permutation of the table, `weight` slots per turn, until every slot is taken.
pub fn maglev(backends: &[BackendSpec]) -> Vec<u16> {
    let m = TABLE_SIZE;
    let mut table = vec![u16::MAX; m];
    if backends.is_empty() {
        return table;
    }
    let perms: Vec<(usize, usize)> = backends
        .iter()
        .map(|b| {
            let key = b.key();
            let offset = (fnv(key.as_bytes(), 0) % m as u64) as usize;
            let skip = (fnv(key.as_bytes(), 1) % (m as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; backends.len()];
    let mut filled = 0;
    'fill: loop {
        for (i, b) in backends.iter().enumerate() {
            for _ in 0..b.weight.max(1) {
                let (offset, skip) = perms[i];
                let mut c = (offset + next[i] * skip) % m;
                while table[c] != u16::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

/// splitmix64's finalizer.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a of `bytes` with a seed byte first, finalized.
pub(super) fn fnv(bytes: &[u8], seed: u8) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&seed).chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The virtual MAC of service `service` on LAN `lan`: the same on every host, locally
/// administered, unicast.
pub fn virtual_mac(lan: &str, service: &str) -> Mac {
    let h = fnv(format!("{lan}/{service}").as_bytes(), 2).to_be_bytes();
    [0x02, 0x5e, h[0], h[1], h[2], h[3]]
}
