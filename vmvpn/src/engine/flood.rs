//! Where a flooded frame goes (PROTOCOL.md, *Flooding*): one IP multicast datagram inside this
//! host's physical subnet, plus one unicast datagram to the designated forwarder of every
//! other subnet that has hosts of the LAN, which passes it on inside its subnet.
//!
//! The designated forwarder of a (LAN, subnet) is the host with the lowest id among those
//! whose tunnel is up (the bulletin removes hosts whose lease lapsed), so every host picks
//! the same one without talking. In `auto` mode a same-subnet peer counts as reached by
//! multicast only while its multicast beacons arrive; the others get a unicast copy, so a
//! subnet without multicast falls back to unicast replication by itself.
//!
//! The plan is rebuilt when peers or beacons change, never per packet.

use std::net::SocketAddr;

pub use crate::status::{FloodMode, SubnetMode};

pub use common::net::Subnet;

/// A peer as the planner needs it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Host id, once known.
    pub id: Option<u32>,
    /// Data address.
    pub addr: SocketAddr,
    /// Its physical subnet.
    pub subnet: Subnet,
    /// Tunnel up (only up peers receive floods).
    pub up: bool,
    /// Its multicast beacons arrive here.
    pub beacons: bool,
    /// Name, for status.
    pub name: String,
}

/// How one subnet is reached, for `vmvpn status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetPlan {
    /// The subnet.
    pub subnet: Subnet,
    /// Up hosts of the LAN there (not counting this one).
    pub hosts: usize,
    /// The designated forwarder: "self" for this host's subnet when it is the one.
    pub forwarder: String,
    /// Multicast, unicast, mixed (own subnet) or relay (others, via their forwarder).
    pub mode: SubnetMode,
    /// Why, for people.
    pub reason: String,
}

/// Where floods go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Copies for this host's subnet: the multicast group and/or unicast peers. With
    /// unicast replication, every peer.
    pub local: Vec<SocketAddr>,
    /// Relay copies: the designated forwarder of each other subnet.
    pub relay: Vec<SocketAddr>,
    /// This host is the designated forwarder of its subnet.
    pub forwarder: bool,
    /// Whether `local` starts with the multicast group.
    pub multicast: bool,
    /// Per subnet, for status.
    pub subnets: Vec<SubnetPlan>,
}

/// Compute the plan. `me` is this host's id and subnet (None: no IPv4 multicast here).
pub fn plan(
    me: (u32, Option<Subnet>),
    mode: FloodMode,
    group: Option<SocketAddr>,
    members: &[Member],
) -> Plan {
    let up: Vec<&Member> = members.iter().filter(|m| m.up).collect();
    let (my_id, my_subnet) = me;
    let mut p = Plan::default();
    let (Some(my_subnet), Some(group), false) = (my_subnet, group, mode == FloodMode::Unicast)
    else {
        p.local = up.iter().map(|m| m.addr).collect();
        let reason = if mode == FloodMode::Unicast {
            "flood = \"unicast\"".to_string()
        } else {
            "no IPv4 underlay subnet for multicast".to_string()
        };
        let mut subnets: Vec<Subnet> = up.iter().map(|m| m.subnet).collect();
        subnets.sort();
        subnets.dedup();
        p.subnets = subnets
            .into_iter()
            .map(|s| SubnetPlan {
                subnet: s,
                hosts: up.iter().filter(|m| m.subnet == s).count(),
                forwarder: "-".into(),
                mode: SubnetMode::Unicast,
                reason: reason.clone(),
            })
            .collect();
        return p;
    };
    let same: Vec<&&Member> = up.iter().filter(|m| m.subnet == my_subnet).collect();
    let covered = |m: &Member| mode == FloodMode::Multicast || m.beacons;
    let silent: Vec<&&Member> = same.iter().copied().filter(|m| !covered(m)).collect();
    p.multicast = same.len() > silent.len();
    if p.multicast {
        p.local.push(group);
    }
    p.local.extend(silent.iter().map(|m| m.addr));
    p.forwarder = same.iter().all(|m| m.id.is_none_or(|id| id > my_id));
    let own_forwarder = if p.forwarder {
        "self".to_string()
    } else {
        same.iter()
            .filter_map(|m| m.id.map(|id| (id, *m)))
            .min_by_key(|(id, _)| *id)
            .map_or("-".into(), |(_, m)| label(m))
    };
    let (own_mode, own_reason) = match (same.len(), silent.len()) {
        (0, _) => (
            SubnetMode::Multicast,
            "no other host of this LAN here".to_string(),
        ),
        (_, 0) if mode == FloodMode::Multicast => {
            (SubnetMode::Multicast, "flood = \"multicast\"".to_string())
        }
        (_, 0) => (
            SubnetMode::Multicast,
            "beacons heard from every host here".to_string(),
        ),
        (n, s) => (
            if s == n {
                SubnetMode::Unicast
            } else {
                SubnetMode::Mixed
            },
            format!(
                "no multicast beacon within {} s from {}",
                BEACON_TIMEOUT_S,
                silent
                    .iter()
                    .map(|m| label(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    p.subnets.push(SubnetPlan {
        subnet: my_subnet,
        hosts: same.len(),
        forwarder: own_forwarder,
        mode: own_mode,
        reason: own_reason,
    });
    let mut others: Vec<Subnet> = up
        .iter()
        .map(|m| m.subnet)
        .filter(|s| *s != my_subnet)
        .collect();
    others.sort();
    others.dedup();
    for s in others {
        let in_s: Vec<&&Member> = up.iter().filter(|m| m.subnet == s).collect();
        // Up peers have ids (they sent a hello); the lowest one forwards.
        let Some(df) = in_s
            .iter()
            .filter_map(|m| m.id.map(|id| (id, *m)))
            .min_by_key(|(id, _)| *id)
            .map(|(_, m)| m)
        else {
            continue;
        };
        p.relay.push(df.addr);
        p.subnets.push(SubnetPlan {
            subnet: s,
            hosts: in_s.len(),
            forwarder: label(df),
            mode: SubnetMode::Relay,
            reason: "one relay copy to the lowest host id up there".into(),
        });
    }
    p
}

/// The multicast group of a LAN: `base` plus the LAN id modulo the range's size, with the
/// data port. A collision between two LANs costs only bandwidth: the header names the LAN.
pub fn group_for(lan_id: u32, base: std::net::Ipv4Addr, prefix: u8, port: u16) -> SocketAddr {
    let host_bits = 32 - u32::from(prefix.min(32));
    let span = if host_bits >= 32 {
        u32::MAX
    } else {
        (1u32 << host_bits).max(1)
    };
    let offset = if span == u32::MAX {
        lan_id
    } else {
        lan_id % span
    };
    let net = u32::from(base) & !(span.wrapping_sub(1));
    SocketAddr::from((std::net::Ipv4Addr::from(net | offset), port))
}

fn label(m: &Member) -> String {
    if m.name.is_empty() {
        m.addr.to_string()
    } else {
        format!("{} ({})", m.name, m.addr)
    }
}

/// Beacons are sent this often.
pub const BEACON_INTERVAL_S: u64 = 1;
/// A peer whose beacons stopped this long ago is no longer counted as reached by multicast.
pub const BEACON_TIMEOUT_S: f64 = 3.5;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    const GROUP: SocketAddr =
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(239, 77, 0, 1)), 7401);

    fn member(id: u32, subnet: u8, host: u8, beacons: bool) -> Member {
        Member {
            id: Some(id),
            addr: SocketAddr::from(([10, 77, subnet, host], 7401)),
            subnet: Subnet::of(IpAddr::from([10, 77, subnet, host]), 24),
            up: true,
            beacons,
            name: format!("h{id}"),
        }
    }

    fn my_subnet() -> Option<Subnet> {
        Some(Subnet::of(IpAddr::from([10, 77, 1, 1]), 24))
    }

    #[test]
    fn one_multicast_plus_one_relay_per_other_subnet() {
        let ms = vec![
            member(5, 1, 2, true),
            member(6, 1, 3, true),
            member(9, 2, 1, true),
            member(7, 2, 2, true),
        ];
        let p = plan((3, my_subnet()), FloodMode::Auto, Some(GROUP), &ms);
        assert_eq!(p.local, vec![GROUP]);
        assert_eq!(
            p.relay,
            vec![SocketAddr::from(([10, 77, 2, 2], 7401))],
            "lowest id of subnet 2 is 7"
        );
        assert!(p.forwarder, "3 is the lowest id in subnet 1");
        assert_eq!(p.subnets[0].mode, SubnetMode::Multicast);
        assert_eq!(p.subnets[1].forwarder, "h7 (10.77.2.2:7401)");
    }

    #[test]
    fn silent_peers_get_unicast_and_the_reason_names_them() {
        let ms = vec![member(5, 1, 2, true), member(6, 1, 3, false)];
        let p = plan((8, my_subnet()), FloodMode::Auto, Some(GROUP), &ms);
        assert_eq!(p.local, vec![GROUP, ms[1].addr]);
        assert!(!p.forwarder);
        assert_eq!(p.subnets[0].mode, SubnetMode::Mixed);
        assert!(
            p.subnets[0].reason.contains("h6"),
            "{}",
            p.subnets[0].reason
        );
        let ms = vec![member(5, 1, 2, false), member(6, 1, 3, false)];
        let p = plan((8, my_subnet()), FloodMode::Auto, Some(GROUP), &ms);
        assert_eq!(p.local, vec![ms[0].addr, ms[1].addr]);
        assert!(!p.multicast);
        assert_eq!(p.subnets[0].mode, SubnetMode::Unicast);
        // Forced multicast ignores beacons.
        let p = plan((8, my_subnet()), FloodMode::Multicast, Some(GROUP), &ms);
        assert_eq!(p.local, vec![GROUP]);
    }

    #[test]
    fn unicast_mode_and_no_group_replicate_to_every_up_peer() {
        let mut ms = vec![member(5, 1, 2, true), member(9, 2, 1, true)];
        ms.push(Member {
            up: false,
            ..member(4, 2, 9, true)
        });
        for p in [
            plan((3, my_subnet()), FloodMode::Unicast, Some(GROUP), &ms),
            plan((3, my_subnet()), FloodMode::Auto, None, &ms),
        ] {
            assert_eq!(p.local, vec![ms[0].addr, ms[1].addr]);
            assert!(p.relay.is_empty() && !p.forwarder);
        }
    }

    #[test]
    fn a_down_forwarder_is_replaced_by_the_next_lowest() {
        let mut ms = vec![member(2, 2, 1, true), member(4, 2, 2, true)];
        assert_eq!(
            plan((9, my_subnet()), FloodMode::Auto, Some(GROUP), &ms).relay,
            vec![ms[0].addr]
        );
        ms[0].up = false;
        assert_eq!(
            plan((9, my_subnet()), FloodMode::Auto, Some(GROUP), &ms).relay,
            vec![ms[1].addr]
        );
    }

    #[test]
    fn groups_stay_in_their_range() {
        let base = std::net::Ipv4Addr::new(239, 77, 0, 0);
        let g = group_for(0xdead_beef, base, 16, 7401);
        assert_eq!(g, SocketAddr::from(([239, 77, 0xbe, 0xef], 7401)));
        assert_eq!(
            group_for(5, base, 32, 1),
            SocketAddr::from(([239, 77, 0, 0], 1))
        );
        assert!(group_for(u32::MAX, base, 8, 1).ip().is_multicast());
    }

    #[test]
    fn subnets_mask_their_addresses() {
        assert_eq!(
            Subnet::of(IpAddr::from([10, 77, 2, 9]), 24).to_string(),
            "10.77.2.0/24"
        );
        assert_eq!(
            Subnet::of(IpAddr::from([10, 77, 2, 9]), 0).to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            Subnet::of("fd00::1:2".parse().expect("v6"), 64).to_string(),
            "fd00::/64"
        );
    }

    proptest! {
        /// Model of delivery: every host of the LAN gets a flood exactly once, whatever the
        /// subnets, ids, beacons and modes, when all hosts agree on who is up and a
        /// forwarder passes a relay copy to its own plan's `local` targets.
        #[test]
        fn every_host_is_reached_exactly_once(
            hosts in proptest::collection::btree_map(1u32..200, (1u8..4, any::<bool>()), 1..12),
            mode in prop_oneof![Just(FloodMode::Auto), Just(FloodMode::Multicast), Just(FloodMode::Unicast)],
            sender_pick in any::<prop::sample::Index>(),
        ) {
            let all: BTreeMap<u32, Member> = hosts
                .iter()
                .map(|(id, (sub, beacons))| (*id, member(*id, *sub, (*id % 250) as u8 + 1, *beacons)))
                .collect();
            let ids: Vec<u32> = all.keys().copied().collect();
            let sender = ids[sender_pick.index(ids.len())];
            let view = |me: u32| -> (Option<Subnet>, Vec<Member>) {
                (Some(all[&me].subnet), all.values().filter(|m| m.id != Some(me)).cloned().collect())
            };
            // Who gets what: a multicast datagram reaches hosts of the sending subnet that
            // hear multicast (their beacons are heard, or the mode forces it); unicast
            // reaches the addressee.
            let mut got: BTreeMap<u32, usize> = BTreeMap::new();
            let deliver_local = |from: u32, p: &Plan, got: &mut BTreeMap<u32, usize>| {
                let sub = all[&from].subnet;
                for a in &p.local {
                    if *a == GROUP {
                        for m in all.values().filter(|m| m.subnet == sub && m.id != Some(from)) {
                            if mode == FloodMode::Multicast || m.beacons {
                                *got.entry(m.id.unwrap_or(0)).or_default() += 1;
                            }
                        }
                    } else if let Some(m) = all.values().find(|m| m.addr == *a) {
                        *got.entry(m.id.unwrap_or(0)).or_default() += 1;
                    }
                }
            };
            let (sub, ms) = view(sender);
            let p = plan((sender, sub), mode, Some(GROUP), &ms);
            deliver_local(sender, &p, &mut got);
            for r in &p.relay {
                let df = all.values().find(|m| m.addr == *r).and_then(|m| m.id).expect("relay to a host");
                *got.entry(df).or_default() += 1;
                let (dsub, dms) = view(df);
                let dp = plan((df, dsub), mode, Some(GROUP), &dms);
                prop_assert!(dp.forwarder, "{df} got a relay copy but does not see itself as forwarder");
                deliver_local(df, &dp, &mut got);
            }
            for id in ids.iter().filter(|i| **i != sender) {
                prop_assert_eq!(got.get(id).copied().unwrap_or(0), 1, "host {} (sender {}, {:?})", id, sender, mode);
            }
            prop_assert_eq!(got.get(&sender), None, "never back to the sender");
        }
    }
}
