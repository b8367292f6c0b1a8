//! The dashboard's `Authorization` header: any text, never a panic, and only the right
//! user and password (as Basic, or the password as a bearer token) are admitted.
#![no_main]
use base64::Engine as _;
use bulletin::web::auth::Credentials;
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "fuzz password 1234";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = Credentials::new("admin", PASSWORD).expect("valid credentials");
    if c.admits(Some(text)) {
        let (scheme, rest) = text.trim().split_once(' ').expect("a scheme and a value");
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            assert_eq!(rest, PASSWORD);
        } else {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .expect("admitted Basic is base64");
            assert_eq!(raw, format!("admin:{PASSWORD}").as_bytes());
        }
    }
});
