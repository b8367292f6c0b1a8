//! The data-plane header view and the bodies behind it (hello, probe, probe reply, path MTU
//! probe and ack, beacon, relay control): any bytes, never a panic, and what parses writes
//! back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmvpn::proto::beacon::Beacon;
use vmvpn::proto::probe::{PmtuRepr, ProbeReplyRepr, ProbeRepr};
use vmvpn::proto::relay::{RelayKey, RelayMsg};
use vmvpn::proto::{HEADER_LEN, Hello, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        assert_eq!(p.payload().len() + HEADER_LEN, data.len());
        let _ = Hello::parse(p.payload());
    }
    if let Ok(b) = Beacon::new_checked(data) {
        assert_eq!(b.header_bytes(), &data[..HEADER_LEN]);
    }
    if let Ok(p) = ProbeRepr::parse(data) {
        assert_eq!(&p.emit()[..], data);
    }
    if let Ok(r) = ProbeReplyRepr::parse(data) {
        assert_eq!(&r.emit()[..], data);
    }
    if let Ok(m) = PmtuRepr::parse_probe(data) {
        assert_eq!(&m.emit()[..], &data[..2]);
    }
    if let Ok(m) = PmtuRepr::parse_ack(data) {
        assert_eq!(&m.emit()[..], data);
    }
    if let Ok(Some((m, mac))) = RelayMsg::parse(data) {
        // Every byte but the MAC is a field: re-emitted, it is the input's.
        let key = RelayKey::from_verifier(&[7; 32]);
        assert_eq!(&m.emit(&key)[..data.len() - 32], &data[..data.len() - 32]);
        let _ = m.verify(&key, &mac);
    }
});
