//! What a reload would change, on arbitrary pairs of texts (split at the first NUL): a
//! list of changes or an error; both configs' own parsers too; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (old, new) = text.split_once('\0').unwrap_or((text, ""));
    let _ = vmvpn::config::diff::changes(old, new);
    let _ = bulletin::config::reload_refusals(old, new);
});
