//! Values written for people: MAC addresses, large counts.

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Parse `aa:bb:cc:dd:ee:ff` (as [`mac`] writes it; either case).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = text.split(':');
    for b in m.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// A count in SI units with one decimal: 1234567 -> `1.2M`; below 1000 as is.
pub fn human(x: u64) -> String {
    const UNITS: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut f = x as f64;
    let mut u = 0;
    while f >= 1000.0 && u < UNITS.len() - 1 {
        f /= 1000.0;
        u += 1;
    }
    if u == 0 {
        x.to_string()
    } else {
        format!("{f:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_counts() {
        assert_eq!(mac(&[0x52, 0x54, 0, 0xab, 1, 0xff]), "52:54:00:ab:01:ff");
        assert_eq!(
            parse_mac("52:54:00:AB:01:ff"),
            Some([0x52, 0x54, 0, 0xab, 1, 0xff])
        );
        for bad in [
            "52:54:00:ab:01",
            "52:54:00:ab:01:ff:00",
            "5:54:00:ab:01:ff",
            "zz:54:00:ab:01:ff",
            "",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(human(999), "999");
        assert_eq!(human(1_234_567), "1.2M");
        assert_eq!(human(u64::MAX), "18446744.1T");
    }
}
