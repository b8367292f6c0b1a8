//! What a bulletin reads back from etcd (another bulletin's, or anyone's who can write
//! there): host records (JSON) and what hosts said (postcard).
#![no_main]
use bulletin::store::{Held, HeldSaid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Held>(data);
    let _ = postcard::from_bytes::<HeldSaid>(data);
});
