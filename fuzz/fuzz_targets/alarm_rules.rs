//! The alarm rules file and its expressions: any text, never a panic; what parses prints
//! back to an expression that parses to the same thing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmvpn::alarms::{expr, rules, series};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rs) = rules::parse(text, std::path::Path::new("fuzz.toml")) {
        for r in rs {
            let again = expr::parse(&r.expr.to_string(), &series::known).expect("round trip");
            assert_eq!(again, r.expr);
        }
    }
    if let Ok(e) = expr::parse(text, &series::known) {
        assert_eq!(expr::parse(&e.to_string(), &series::known), Ok(e));
    }
});
