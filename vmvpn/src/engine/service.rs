//! Service addresses (seed 002's server groups, in the overlay itself): a LAN's service
//! has an address (a VIP) that every host answers ARP for from its TAP with one virtual
//! MAC, the same on every host; a frame a local VM sends to that MAC is rewritten to one
//! backend VM's MAC, chosen per flow, and goes on as any unicast frame. The backend
//! answers the client directly (layer-2 direct server return: it holds the VIP on a
//! loopback and does not answer ARP for it), so nothing else is rewritten and any
//! protocol works.
//!
//! The choice is Maglev consistent hashing (Eisenbud et al., NSDI 2016) of the flow's
//! 5-tuple over the backends, each backend's share of the lookup table set by its weight.
//! Every host builds the same table from the same config, so a flow maps to the same
//! backend wherever it starts, and a backend that leaves moves only its own flows. No
//! state per flow: the table is the affinity.
//!
//! Sans-IO: frames in, a rewritten frame or an ARP answer out; nothing here allocates
//! per frame (the table is built when the LAN is joined).

use std::net::{IpAddr, Ipv4Addr};

use super::macdb::Mac;

/// Lookup table size: a prime, large against any backend count (Maglev's M ≫ N), 32 KiB.
pub const TABLE_SIZE: usize = 16_381;

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Its MAC, when the config gives one.
    pub mac: Option<Mac>,
    /// Its address, when the config gives one (the MAC is learned from its traffic).
    pub ip: Option<IpAddr>,
    /// Its share of new flows, relative to the others'.
    pub weight: u32,
}

impl BackendSpec {
    /// The key its table permutation derives from: the same text on every host.
    fn key(&self) -> String {
        match (self.mac, self.ip) {
            (Some(m), _) => super::macdb::fmt_mac(&m),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// One service of a LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its name.
    pub name: String,
    /// The address clients send to.
    pub vip: Ipv4Addr,
    /// The MAC every host answers ARP for the address with.
    pub vmac: Mac,
    /// Its backends.
    pub backends: Vec<BackendSpec>,
    /// Only these destination ports (TCP and UDP); empty: every port.
    pub ports: Vec<u16>,
}

/// Per backend: frames and bytes sent to it, and new TCP connections (SYN without ACK).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounts {
    /// Frames rewritten to it.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// TCP connections opened to it.
    pub connections: u64,
}

/// A service as the data path holds it.
#[derive(Debug)]
pub struct Service {
    spec: ServiceSpec,
    /// Backend index per slot.
    table: Vec<u16>,
    /// Each backend's MAC as known now (from the config, or learned by its address).
    macs: Vec<Option<Mac>>,
    counts: Vec<BackendCounts>,
    /// Frames to the service that found no backend to go to.
    no_backend: u64,
    /// ARP requests for the address answered.
    arp_answered: u64,
}

/// What [`Services::handle_frame`] made of a frame from a local VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not for a service: forward as it is.
    Pass,
    /// To a service: its destination MAC is now this backend's; forward it.
    Rewritten,
    /// An ARP request for a service address, turned into its answer in place: write it
    /// back to the TAP.
    Answer,
    /// To a service with no backend to take it: drop (counted).
    NoBackend,
}

/// The services of one LAN.
#[derive(Debug, Default)]
pub struct Services {
    list: Vec<Service>,
}

impl Services {
    /// Build each service's table (allocates: at join or reload only).
    pub fn new(specs: &[ServiceSpec]) -> Self {
        Services {
            list: specs
                .iter()
                .map(|s| Service {
                    table: maglev(&s.backends),
                    macs: s.backends.iter().map(|b| b.mac).collect(),
                    counts: vec![BackendCounts::default(); s.backends.len()],
                    no_backend: 0,
                    arp_answered: 0,
                    spec: s.clone(),
                })
                .collect(),
        }
    }

    /// Whether the LAN has services (else frames are never looked at).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Learn the MACs of backends given by address, through `mac_of` (the LAN's VM
    /// table); called once a second, not per frame.
    pub fn resolve(&mut self, mac_of: impl Fn(IpAddr) -> Option<Mac>) {
        for s in &mut self.list {
            for (b, m) in s.spec.backends.iter().zip(s.macs.iter_mut()) {
                if b.mac.is_none()
                    && let Some(ip) = b.ip
                    && let Some(found) = mac_of(ip)
                {
                    *m = Some(found);
                }
            }
        }
    }

    /// Look at a frame a local VM sent (`frame`, writable): answer ARP for a service
    /// address, or send a frame to a service's MAC to the flow's backend.
    pub fn handle_frame(&mut self, frame: &mut [u8]) -> Verdict {
        if frame.len() < 14 {
            return Verdict::Pass;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype == 0x0806 {
            return self.answer_arp(frame);
        }
        let Some(s) = self.list.iter_mut().find(|s| frame[..6] == s.spec.vmac) else {
            return Verdict::Pass;
        };
        let Some(flow) = flow_of(frame) else {
            s.no_backend += 1;
            return Verdict::NoBackend;
        };
        if !s.spec.ports.is_empty()
            && (flow.proto == 6 || flow.proto == 17)
            && !s.spec.ports.contains(&flow.dport)
        {
            s.no_backend += 1;
            return Verdict::NoBackend;
        }
        // The flow's slot; a backend not resolved yet passes it to the next slot's.
        let mut slot = (flow.hash() % TABLE_SIZE as u64) as usize;
        for _ in 0..s.table.len().min(64) {
            let b = usize::from(s.table[slot]);
            if let Some(Some(mac)) = s.macs.get(b) {
                frame[..6].copy_from_slice(mac);
                let c = &mut s.counts[b];
                c.frames += 1;
                c.bytes += frame.len() as u64;
                if flow.syn {
                    c.connections += 1;
                }
                return Verdict::Rewritten;
            }
            slot = (slot + 1) % s.table.len();
        }
        s.no_backend += 1;
        Verdict::NoBackend
    }

    /// An ARP request (Ethernet, IPv4) for a service address: made its reply in place.
    fn answer_arp(&mut self, frame: &mut [u8]) -> Verdict {
        const ARP: usize = 14;
        if frame.len() < ARP + 28
            || frame[ARP..ARP + 6] != [0, 1, 8, 0, 6, 4]
            || frame[ARP + 6..ARP + 8] != [0, 1]
        {
            return Verdict::Pass;
        }
        let target = Ipv4Addr::new(
            frame[ARP + 24],
            frame[ARP + 25],
            frame[ARP + 26],
            frame[ARP + 27],
        );
        let Some(s) = self.list.iter_mut().find(|s| s.spec.vip == target) else {
            return Verdict::Pass;
        };
        let mut asker_mac = [0u8; 6];
        asker_mac.copy_from_slice(&frame[ARP + 8..ARP + 14]);
        let mut asker_ip = [0u8; 4];
        asker_ip.copy_from_slice(&frame[ARP + 14..ARP + 18]);
        let vmac = s.spec.vmac;
        frame[..6].copy_from_slice(&asker_mac);
        frame[6..12].copy_from_slice(&vmac);
        frame[ARP + 7] = 2; // reply
        frame[ARP + 8..ARP + 14].copy_from_slice(&vmac);
        frame[ARP + 14..ARP + 18].copy_from_slice(&target.octets());
        frame[ARP + 18..ARP + 24].copy_from_slice(&asker_mac);
        frame[ARP + 24..ARP + 28].copy_from_slice(&asker_ip);
        s.arp_answered += 1;
        Verdict::Answer
    }

    /// Each service with its backends' MACs and counts, for status.
    pub fn iter(&self) -> impl Iterator<Item = ServiceView<'_>> {
        self.list.iter().map(|s| ServiceView {
            spec: &s.spec,
            macs: &s.macs,
            counts: &s.counts,
            no_backend: s.no_backend,
            arp_answered: s.arp_answered,
        })
    }
}

impl Services {
    /// Each service as `vmvpn status` shows it.
    pub fn status(&self) -> Vec<crate::status::ServiceStatus> {
        use super::macdb::fmt_mac;
        self.iter()
            .map(|v| crate::status::ServiceStatus {
                name: v.spec.name.clone(),
                address: v.spec.vip.to_string(),
                mac: fmt_mac(&v.spec.vmac),
                policy: "hash".into(),
                no_backend_frames_total: v.no_backend,
                arp_answered_total: v.arp_answered,
                backends: v
                    .spec
                    .backends
                    .iter()
                    .zip(v.macs.iter().zip(v.counts))
                    .map(|(b, (m, c))| crate::status::BackendStatus {
                        backend: b.key(),
                        mac: m.as_ref().map(fmt_mac),
                        weight: b.weight,
                        frames_total: c.frames,
                        bytes_total: c.bytes,
                        connections_total: c.connections,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// A service's state, as status reads it.
#[derive(Debug, Clone, Copy)]
pub struct ServiceView<'a> {
    /// Its config.
    pub spec: &'a ServiceSpec,
    /// Each backend's MAC as known now.
    pub macs: &'a [Option<Mac>],
    /// Each backend's counts.
    pub counts: &'a [BackendCounts],
    /// Frames that found no backend.
    pub no_backend: u64,
    /// ARP requests answered.
    pub arp_answered: u64,
}

/// The parts of an IPv4 frame a flow is known by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flow {
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    sport: u16,
    dport: u16,
    /// A TCP SYN without ACK: a new connection.
    syn: bool,
}

impl Flow {
    /// A fixed hash (the same on every host, so every host picks alike): FNV-1a over the
    /// 5-tuple, then a finalizer to spread FNV's low bits.
    fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        self.src.iter().for_each(|b| eat(*b));
        self.dst.iter().for_each(|b| eat(*b));
        eat(self.proto);
        self.sport.to_be_bytes().iter().for_each(|b| eat(*b));
        self.dport.to_be_bytes().iter().for_each(|b| eat(*b));
        mix(h)
    }
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The flow of an untagged IPv4 frame (ports 0 for other protocols and fragments).
fn flow_of(frame: &[u8]) -> Option<Flow> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let proto = ip[9];
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
    let l4 = &ip[ihl..];
    let (sport, dport, syn) = if (proto == 6 || proto == 17) && !fragment && l4.len() >= 4 {
        let tcp_flags = (proto == 6 && l4.len() >= 14).then(|| l4[13]);
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
            tcp_flags.is_some_and(|f| f & 0x12 == 0x02),
        )
    } else {
        (0, 0, false)
    };
    Some(Flow {
        src: [ip[12], ip[13], ip[14], ip[15]],
        dst: [ip[16], ip[17], ip[18], ip[19]],
        proto,
        sport,
        dport,
        syn,
    })
}

/// Maglev's lookup table over `backends`: each takes slots in turn from its own
/// permutation of the table, `weight` slots per turn, until every slot is taken.
pub fn maglev(backends: &[BackendSpec]) -> Vec<u16> {
    let m = TABLE_SIZE;
    let mut table = vec![u16::MAX; m];
    if backends.is_empty() {
        return table;
    }
    let perms: Vec<(usize, usize)> = backends
        .iter()
        .map(|b| {
            let key = b.key();
            let offset = (fnv(key.as_bytes(), 0) % m as u64) as usize;
            let skip = (fnv(key.as_bytes(), 1) % (m as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; backends.len()];
    let mut filled = 0;
    'fill: loop {
        for (i, b) in backends.iter().enumerate() {
            for _ in 0..b.weight.max(1) {
                let (offset, skip) = perms[i];
                let mut c = (offset + next[i] * skip) % m;
                while table[c] != u16::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

/// FNV-1a of `bytes` with a seed byte first, finalized.
fn fnv(bytes: &[u8], seed: u8) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&seed).chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The virtual MAC of service `service` on LAN `lan`: the same on every host, locally
/// administered, unicast.
pub fn virtual_mac(lan: &str, service: &str) -> Mac {
    let h = fnv(format!("{lan}/{service}").as_bytes(), 2).to_be_bytes();
    [0x02, 0x5e, h[0], h[1], h[2], h[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u8) -> Mac {
        [2, 0, 0, i, 0, 0]
    }

    fn backends(n: u8, weight: u32) -> Vec<BackendSpec> {
        (1..=n)
            .map(|i| BackendSpec {
                mac: Some(mac(i)),
                ip: None,
                weight,
            })
            .collect()
    }

    fn spec(b: Vec<BackendSpec>) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            vip: Ipv4Addr::new(192, 168, 1, 200),
            vmac: virtual_mac("lan1", "web"),
            backends: b,
            ports: Vec::new(),
        }
    }

    /// An Ethernet + IPv4 + TCP frame to the service's MAC.
    fn tcp(vmac: Mac, src: [u8; 4], sport: u16, flags: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&vmac);
        f.extend_from_slice(&[2, 0, 0, 9, 0, 0]);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&[192, 168, 1, 200]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    fn shares(table: &[u16], n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for &b in table {
            c[usize::from(b)] += 1;
        }
        c.iter().map(|&x| x as f64 / table.len() as f64).collect()
    }

    #[test]
    fn the_table_splits_by_weight() {
        let even = maglev(&backends(3, 1));
        for s in shares(&even, 3) {
            assert!((s - 1.0 / 3.0).abs() < 0.01, "{s}");
        }
        let mut b = backends(3, 1);
        b[2].weight = 2;
        let s = shares(&maglev(&b), 3);
        assert!(
            (s[2] - 0.5).abs() < 0.01 && (s[0] - 0.25).abs() < 0.01,
            "{s:?}"
        );
    }

    #[test]
    fn one_backend_of_n_leaving_moves_about_its_own_share() {
        for n in [3u8, 5, 10] {
            let all = backends(n, 1);
            let before = maglev(&all);
            // The last one leaves; the others keep their keys, so their permutations.
            let after = maglev(&all[..usize::from(n) - 1]);
            let moved = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| b != a && usize::from(**b) != usize::from(n) - 1)
                .count();
            // Maglev moves a little more than the leaver's slots: at most a few percent.
            let extra = moved as f64 / TABLE_SIZE as f64;
            assert!(extra < 0.05, "n={n}: {extra:.3} of the others' slots moved");
        }
    }

    #[test]
    fn every_host_builds_the_same_table() {
        assert_eq!(maglev(&backends(4, 1)), maglev(&backends(4, 1)));
        assert_eq!(virtual_mac("lan1", "web"), virtual_mac("lan1", "web"));
        assert_ne!(virtual_mac("lan1", "web"), virtual_mac("lan2", "web"));
        assert_eq!(virtual_mac("a", "b")[0] & 0x03, 0x02, "local, unicast");
    }

    #[test]
    fn a_flow_keeps_its_backend_and_flows_spread() {
        let mut s = Services::new(&[spec(backends(2, 1))]);
        let vmac = virtual_mac("lan1", "web");
        let mut picks = [0usize; 2];
        for port in 0..2000u16 {
            let mut f = tcp(vmac, [192, 168, 1, 9], 30000 + port, 0x02);
            assert_eq!(s.handle_frame(&mut f), Verdict::Rewritten);
            let chosen = f[..6].to_vec();
            picks[usize::from(chosen == mac(2))] += 1;
            // Later frames of the flow go the same way.
            let mut g = tcp(vmac, [192, 168, 1, 9], 30000 + port, 0x10);
            s.handle_frame(&mut g);
            assert_eq!(g[..6], chosen[..]);
        }
        assert!(
            picks.iter().all(|&p| (900..=1100).contains(&p)),
            "{picks:?}"
        );
        let v: Vec<_> = s.iter().collect();
        let conns: u64 = v[0].counts.iter().map(|c| c.connections).sum();
        assert_eq!(conns, 2000, "SYNs counted as connections, once each");
        // Other frames pass untouched.
        let mut other = tcp(mac(7), [192, 168, 1, 9], 1, 0x10);
        assert_eq!(s.handle_frame(&mut other), Verdict::Pass);
        assert_eq!(other[..6], mac(7));
    }

    #[test]
    fn backends_by_address_wait_for_their_mac_and_ports_are_kept_to() {
        let mut b = backends(2, 1);
        b[1] = BackendSpec {
            mac: None,
            ip: Some(IpAddr::from([192, 168, 1, 3])),
            weight: 1,
        };
        let mut sp = spec(b);
        sp.ports = vec![80];
        let mut s = Services::new(&[sp]);
        let vmac = virtual_mac("lan1", "web");
        // Unresolved: every flow goes to the backend whose MAC is known.
        for port in 0..200u16 {
            let mut f = tcp(vmac, [192, 168, 1, 9], 1000 + port, 0x02);
            assert_eq!(s.handle_frame(&mut f), Verdict::Rewritten);
            assert_eq!(f[..6], mac(1));
        }
        s.resolve(|ip| (ip == IpAddr::from([192, 168, 1, 3])).then_some(mac(3)));
        let to3 = (0..200u16)
            .filter(|p| {
                let mut f = tcp(vmac, [192, 168, 1, 9], 1000 + p, 0x02);
                s.handle_frame(&mut f);
                f[..6] == mac(3)
            })
            .count();
        assert!((60..=140).contains(&to3), "{to3}");
        // A port the service does not serve: dropped, counted.
        let mut f = tcp(vmac, [192, 168, 1, 9], 5, 0x02);
        f[36..38].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(s.handle_frame(&mut f), Verdict::NoBackend);
        assert_eq!(s.iter().next().map(|v| v.no_backend), Some(1));
    }

    #[test]
    fn arp_for_the_address_is_answered_with_the_virtual_mac() {
        let mut s = Services::new(&[spec(backends(1, 1))]);
        let asker = [2, 0, 0, 9, 0, 0];
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&asker);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&asker);
        f.extend_from_slice(&[192, 168, 1, 9]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[192, 168, 1, 200]);
        f.resize(60, 0);
        let mut other = f.clone();
        assert_eq!(s.handle_frame(&mut f), Verdict::Answer);
        let vmac = virtual_mac("lan1", "web");
        assert_eq!(f[..6], asker);
        assert_eq!(f[6..12], vmac);
        assert_eq!(f[20..22], [0, 2], "a reply");
        assert_eq!(f[22..28], vmac);
        assert_eq!(f[28..32], [192, 168, 1, 200]);
        assert_eq!(f[32..38], asker);
        assert_eq!(f[38..42], [192, 168, 1, 9]);
        // ARP for another address is the LAN's business.
        other[38..42].copy_from_slice(&[192, 168, 1, 7]);
        assert_eq!(s.handle_frame(&mut other), Verdict::Pass);
        // Garbage and short frames pass untouched.
        let mut short = vec![0u8; 20];
        short[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(s.handle_frame(&mut short), Verdict::Pass);
    }
}
