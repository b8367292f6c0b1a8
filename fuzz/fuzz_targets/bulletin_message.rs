//! The bulletin's codec on arbitrary frames, both directions.
#![no_main]
use bulletin::proto::{ClientMsg, MAX_CLIENT_FRAME, ServerMsg, decode, frame_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<4>() {
        let _ = frame_len(*prefix, MAX_CLIENT_FRAME);
    }
    let _ = decode::<ClientMsg>(data);
    let _ = decode::<ServerMsg>(data);
});
