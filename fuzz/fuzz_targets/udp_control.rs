//! The control messages of a received datagram: whatever the bytes claim (lengths past the
//! buffer, near usize::MAX, cut short), the walk neither panics nor reads out of bounds,
//! and what it fills in is sane.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmvpn::io::cmsg;
use vmvpn::io::udp::Received;

fuzz_target!(|data: &[u8]| {
    let mut m = Received::default();
    cmsg::read(data, &mut m);
    assert!(m.stride < (1 << 31));
    assert_eq!(m.len, 0);
});
