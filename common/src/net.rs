//! Address arithmetic: the subnet an address is in, the mask of a prefix length.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A physical subnet: a network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    net: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// The subnet of `ip` with this prefix length (clamped to the family's width).
    pub fn of(ip: IpAddr, prefix: u8) -> Self {
        let net = match (ip, netmask(ip, prefix)) {
            (IpAddr::V4(a), IpAddr::V4(m)) => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & u32::from(m)))
            }
            (IpAddr::V6(a), IpAddr::V6(m)) => {
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & u128::from(m)))
            }
            _ => ip,
        };
        let width = if ip.is_ipv4() { 32 } else { 128 };
        Subnet {
            net,
            prefix: prefix.min(width),
        }
    }
}

impl fmt::Display for Subnet {
    /// `10.0.1.0/24`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The mask of `prefix` bits in `ip`'s family (`255.255.255.0` for 24).
pub fn netmask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => {
            let p = u32::from(prefix.min(32));
            IpAddr::V4(Ipv4Addr::from(if p == 0 {
                0
            } else {
                u32::MAX << (32 - p)
            }))
        }
        IpAddr::V6(_) => {
            let p = u32::from(prefix.min(128));
            IpAddr::V6(Ipv6Addr::from(if p == 0 {
                0
            } else {
                u128::MAX << (128 - p)
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn subnets_of_both_families() {
        assert_eq!(Subnet::of(ip("10.0.1.77"), 24).to_string(), "10.0.1.0/24");
        assert_eq!(Subnet::of(ip("10.0.1.77"), 0).to_string(), "0.0.0.0/0");
        assert_eq!(Subnet::of(ip("10.0.1.77"), 40).to_string(), "10.0.1.77/32");
        assert_eq!(
            Subnet::of(ip("fd00:1:2:3::9"), 64).to_string(),
            "fd00:1:2:3::/64"
        );
        assert_eq!(
            Subnet::of(ip("10.0.1.1"), 24),
            Subnet::of(ip("10.0.1.200"), 24)
        );
        assert_ne!(
            Subnet::of(ip("10.0.1.1"), 24),
            Subnet::of(ip("10.0.2.1"), 24)
        );
        assert_eq!(netmask(ip("10.0.0.1"), 20), ip("255.255.240.0"));
        assert_eq!(netmask(ip("10.0.0.1"), 0), ip("0.0.0.0"));
        assert_eq!(netmask(ip("::1"), 16), ip("ffff::"));
    }
}
