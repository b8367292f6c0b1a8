//! The Internet checksum (RFC 1071), shared by TCP segmentation (`gso`) and coalescing
//! (`gro`). The sum is byte-order independent (RFC 1071 §2(B)): bytes are added as
//! little-endian 32-bit words into a 64-bit accumulator, a loop the compiler vectorises,
//! and the folded result is byte-swapped into network order at the end.

/// Add `b`, read as big-endian 16-bit words from an even offset, to `acc`.
#[inline]
pub fn sum(acc: u64, b: &[u8]) -> u64 {
    let mut le: u64 = 0;
    let mut words = b.chunks_exact(4);
    for w in &mut words {
        le += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        le += u64::from(u16::from_le_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        // The high byte of a big-endian word is the low byte of a little-endian one.
        le += u64::from(*last);
    }
    acc + u64::from(fold(le).swap_bytes())
}

/// Fold a sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header sum of TCP or UDP: addresses (both, as they sit in the IP header:
/// 8 bytes for IPv4, 32 for IPv6), protocol and transport length.
#[inline]
pub fn pseudo(addrs: &[u8], proto: u8, len: u32) -> u64 {
    sum(0, addrs) + u64::from(proto) + u64::from(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's reference: one 16-bit word at a time.
    fn slow(b: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in b.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(
            fold(sum(0, &[0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
    }

    proptest::proptest! {
        #[test]
        fn matches_the_word_at_a_time_sum(b in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            proptest::prop_assert_eq!(fold(sum(0, &b)), slow(&b));
        }
    }
}
