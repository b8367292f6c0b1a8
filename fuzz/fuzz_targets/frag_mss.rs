//! The two new frame parsers of the MTU work, on arbitrary input:
//! - `mss::clamp` on any frame never panics, and changes nothing but the MSS and the
//!   checksum (four bytes at most), and nothing at all unless it says so (the checksum's
//!   correctness is the property test's, in `mss.rs`);
//! - the reassembly table fed any sequence of fragments never panics, never delivers a
//!   frame larger than the TAP allows or of another length than announced, and never
//!   holds more than its fixed number of frames.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vmvpn::engine::reassembly::{Key, Reassembly, SLOTS, Verdict};
use vmvpn::proto::fragment::{FRAG_HEADER_LEN, FragHeader};

const MAX_FRAME: usize = 1518;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        let mut f = rest.to_vec();
        let cap = 576 + usize::from(sel) * 32;
        let before = f.clone();
        let changed = vmvpn::engine::mss::clamp(&mut f, cap);
        if !changed {
            assert_eq!(f, before, "unchanged unless it says so");
        } else {
            let diff = f.iter().zip(&before).filter(|(a, b)| a != b).count();
            assert!(diff <= 4, "only the MSS and the checksum change");
        }
        return;
    }
    let t0 = Instant::now();
    let mut r = Reassembly::new(MAX_FRAME);
    // Records: sender (1), id (1), time step (1), then a fragment header and a piece whose
    // length is the next byte.
    let mut b = rest;
    let mut now = t0;
    while b.len() >= 3 + FRAG_HEADER_LEN + 1 {
        let (sender, id, step) = (b[0] % 4, b[1] % 8, b[2]);
        let Some(h) = FragHeader::parse(&b[3..]) else { break };
        let n = usize::from(b[3 + FRAG_HEADER_LEN]);
        let from = 4 + FRAG_HEADER_LEN;
        let piece = &b[from.min(b.len())..(from + n).min(b.len())];
        now += Duration::from_millis(u64::from(step) * 4);
        let key = Key { lan: 0, sender: u32::from(sender), flood: step & 1 == 1, id: u32::from(id) };
        let h = FragHeader { id: u32::from(id), ..h };
        if r.push(key, h, piece, now) == Verdict::Complete {
            let f = r.frame();
            assert_eq!(f.len(), usize::from(h.total));
            assert!(f.len() <= MAX_FRAME);
        }
        if step & 0x80 != 0 {
            r.expire(now);
        }
        assert!(r.stats().in_progress <= SLOTS as u64);
        b = &b[(from + n).min(b.len())..];
    }
});
