//! The control socket's request parser on arbitrary lines: a short error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Err(e) = vmvpn::api::control::parse_request(&line) {
        // Errors are cut, whatever the line: a client cannot make the daemon echo megabytes
        // (640 characters kept, plus the notes of what was cut).
        let n = e.chars().count();
        assert!(n <= 800, "error of {n} characters");
    }
});
