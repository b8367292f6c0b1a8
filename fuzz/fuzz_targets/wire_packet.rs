//! The data-plane header view and the hello body: any bytes, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmvpn::proto::{HEADER_LEN, Hello, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        assert_eq!(p.payload().len() + HEADER_LEN, data.len());
        let _ = Hello::parse(p.payload());
    }
});
