//! host.toml parsing and checking on arbitrary text: an error with a line, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vmvpn::config::Config::parse(text, std::path::Path::new("fuzz.toml"));
    }
});
