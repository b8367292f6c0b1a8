//! What `virsh` prints, on arbitrary text: a domain's XML (`dumpxml`) gives a domain or an
//! error, `domstats --raw` a map of samples; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vmvpn::libvirt::domain::parse(text);
        let samples = vmvpn::libvirt::stats::parse(text);
        let now = std::time::Instant::now();
        for s in samples.values() {
            let _ = vmvpn::libvirt::stats::figures(s, now, Some(&(*s, now)));
        }
    }
});
