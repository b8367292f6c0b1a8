//! Overlay fragments: a frame that does not fit one datagram to its peer is cut into
//! pieces, each sealed on its own (so every piece has its own sequence number, nonce and
//! replay check), and put back together by the receiver with bounded memory. The underlay
//! never sees an IP fragment, which many clouds and firewalls drop.
//!
//! A fragment's plaintext is an 8-byte header, then a piece of the frame:
//!
//! ```text
//!  0               4       6       8
//! +---------------+-------+-------+------------------
//! |   frame id    |offset | total |  bytes of the frame at `offset`
//! +---------------+-------+-------+------------------
//! ```
//!
//! `frame id` counts fragmented frames per sender and stream (unicast to one peer, or
//! floods); `total` is the whole frame's length. Pieces of one frame are equal in size
//! but the last, which may be shorter. The receiver's side is `engine::reassembly`.

use crate::proto::{HEADER_LEN, TAG_LEN};

/// Fragment header inside the plaintext.
pub const FRAG_HEADER_LEN: usize = 8;
/// Bytes one fragment adds besides its piece: datagram header, fragment header, tag.
pub const PER_FRAGMENT: usize = HEADER_LEN + FRAG_HEADER_LEN + TAG_LEN;
/// Most pieces of one frame (a 9018-byte frame over a 576-byte path needs 18).
pub const MAX_FRAGMENTS: usize = 32;

/// How a frame of `len` bytes is cut for pieces of at most `max_piece` bytes: the number
/// of pieces and their size (the last may be shorter). None if it takes too many.
pub fn plan(len: usize, max_piece: usize) -> Option<(usize, usize)> {
    if max_piece == 0 {
        return None;
    }
    let count = len.div_ceil(max_piece).max(1);
    if count > MAX_FRAGMENTS {
        return None;
    }
    Some((count, len.div_ceil(count)))
}

/// Lay the frame in `buf[HEADER_LEN..HEADER_LEN + len]` out as `count` fragments in place:
/// fragment `i` starts at `i * (piece + PER_FRAGMENT)`, its header room first, then the
/// fragment header, the piece, and room for the tag. Returns each fragment's plaintext
/// length through `plain_len(i)`. `buf` needs `len + count * PER_FRAGMENT` bytes.
pub fn lay_out(buf: &mut [u8], len: usize, piece: usize, count: usize, frame_id: u32) -> bool {
    if buf.len() < len + count * PER_FRAGMENT || count == 0 || piece * count < len {
        return false;
    }
    // Back to front: every piece moves right, never over a piece not yet moved.
    for i in (0..count).rev() {
        let from = HEADER_LEN + i * piece;
        let n = piece.min(len - i * piece.min(len));
        let at = i * (piece + PER_FRAGMENT);
        buf.copy_within(from..from + n, at + HEADER_LEN + FRAG_HEADER_LEN);
        let h = &mut buf[at + HEADER_LEN..at + HEADER_LEN + FRAG_HEADER_LEN];
        h[..4].copy_from_slice(&frame_id.to_be_bytes());
        h[4..6].copy_from_slice(&((i * piece) as u16).to_be_bytes());
        h[6..8].copy_from_slice(&(len as u16).to_be_bytes());
    }
    true
}

/// The plaintext length of fragment `i` of a frame of `len` bytes cut in `piece`s.
pub fn plain_len(len: usize, piece: usize, i: usize) -> usize {
    FRAG_HEADER_LEN + piece.min(len.saturating_sub(i * piece))
}

/// A parsed fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragHeader {
    /// Frame id.
    pub id: u32,
    /// Offset of the piece in the frame.
    pub offset: u16,
    /// The whole frame's length.
    pub total: u16,
}

impl FragHeader {
    /// Parse the first [`FRAG_HEADER_LEN`] bytes of a fragment's plaintext.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let h = b.get(..FRAG_HEADER_LEN)?;
        Some(FragHeader {
            id: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
            offset: u16::from_be_bytes([h[4], h[5]]),
            total: u16::from_be_bytes([h[6], h[7]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cut_evenly_and_refuse_too_many_pieces() {
        assert_eq!(plan(1518, 1428), Some((2, 759)));
        assert_eq!(plan(1000, 1428), Some((1, 1000)));
        assert_eq!(plan(9018, 1200), Some((8, 1128)));
        assert_eq!(plan(9018, 200), None);
        assert_eq!(plan(10, 0), None);
    }
}
