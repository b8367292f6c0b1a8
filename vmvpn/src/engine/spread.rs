//! Which of this host's flow ports a unicast frame leaves from (`[host] flow_ports`).
//!
//! All of a host's traffic to a peer would otherwise be one UDP flow on the underlay, and
//! a queue there that is fair between flows (fq_codel, the default qdisc of most Linux
//! hosts and routers) would keep a ping in the same queue as a VM's bulk transfer. VXLAN
//! and Geneve take their UDP source port from a hash of the inner flow for this reason
//! (and for ECMP and the receiver's RSS); we do the same with a few sockets of our own,
//! the flow label in the header naming the port (see `proto::header`).
//!
//! The hash covers the IP addresses and protocol and, for TCP, UDP, SCTP and UDP-Lite
//! datagrams that are not IPv4 fragments, the ports. Frames that are not IP (ARP) get label
//! 0: the data port itself.
//!
//! A hash alone would put two of a peer's flows on one port one time in `ports`: with four
//! bulk transfers, a ping would share a queue with one of them about one time in four. So
//! the labels are handed out: a flow new to the table (`Flows`) takes its peer's next label
//! in turn, and keeps it while it sends at least every `IDLE` (every segment of a TCP
//! connection leaves from one port, so it stays in order). Up to `ports` flows to a peer then
//! each have a port of their own. Only when another live flow holds its slot of the table
//! does a flow fall back to its hash's label.

use std::time::{Duration, Instant};

/// Slots of the flow table (per LAN): two live flows share one about one time in this many.
const SLOTS: usize = 256;
/// A flow silent this long gives its slot up, and may come back on another port.
const IDLE: Duration = Duration::from_secs(2);

/// The flows seen lately and the label each was given.
pub(crate) struct Flows {
    slots: Box<[Slot]>,
}

#[derive(Clone, Copy)]
struct Slot {
    /// The flow's hash, its top bits (0: free).
    tag: u32,
    label: u8,
    seen: Option<Instant>,
}

impl Flows {
    pub(crate) fn new() -> Self {
        let free = Slot {
            tag: 0,
            label: 0,
            seen: None,
        };
        Flows {
            slots: vec![free; SLOTS].into_boxed_slice(),
        }
    }

    /// The flow label (1..=`ports`) for `frame`, an Ethernet frame to a peer whose turn of
    /// labels is at `next`; 0 when `ports` is 0 or the frame is not IP.
    #[inline]
    pub(crate) fn label(&mut self, frame: &[u8], ports: u8, next: &mut u8, now: Instant) -> u8 {
        if ports == 0 {
            return 0;
        }
        let Some(h) = flow_hash(frame) else {
            return 0;
        };
        let tag = (h >> 32) as u32 | 1;
        let Some(slot) = self.slots.get_mut(h as usize % SLOTS) else {
            return 0;
        };
        let live = slot
            .seen
            .is_some_and(|t| now.saturating_duration_since(t) < IDLE);
        if live && slot.tag == tag && (1..=ports).contains(&slot.label) {
            slot.seen = Some(now);
            return slot.label;
        }
        if live && slot.tag != tag {
            // Another live flow holds the slot: this one takes its hash's label.
            return hashed(h, ports);
        }
        *next = if *next >= ports { 1 } else { *next + 1 };
        *slot = Slot {
            tag,
            label: *next,
            seen: Some(now),
        };
        *next
    }
}

/// The label hash `h` names among `ports` (at least 1).
fn hashed(h: u64, ports: u8) -> u8 {
    1 + (h % u64::from(ports)) as u8
}

/// The label a frame's hash alone names (1..=`ports`); 0 when `ports` is 0 or the frame is
/// not IP.
#[cfg(test)]
fn label(frame: &[u8], ports: u8) -> u8 {
    match flow_hash(frame) {
        Some(h) if ports > 0 => hashed(h, ports),
        _ => 0,
    }
}

/// A hash of the frame's IP flow (see the module docs), or None for a frame that is not
/// IP.
fn flow_hash(frame: &[u8]) -> Option<u64> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    // Up to two VLAN tags (802.1Q, 802.1ad).
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        at += 4;
        ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    let l3 = at + 2;
    let (addrs, proto, l4) = match ethertype {
        0x0800 => {
            let ip = frame.get(l3..l3 + 20)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            // More fragments or an offset: the ports are in the first fragment only.
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            let l4 = (!fragment && ihl >= 20).then_some(l3 + ihl);
            (frame.get(l3 + 12..l3 + 20)?, ip[9], l4)
        }
        0x86dd => {
            let ip = frame.get(l3..l3 + 40)?;
            (frame.get(l3 + 8..l3 + 40)?, ip[6], Some(l3 + 40))
        }
        _ => return None,
    };
    let mut h = Mix::default();
    for word in addrs.chunks(4) {
        let mut w = [0u8; 4];
        w[..word.len()].copy_from_slice(word);
        h.add(u32::from_ne_bytes(w).into());
    }
    h.add(proto.into());
    // TCP, UDP, SCTP, UDP-Lite: source and destination port are the first 4 bytes.
    if matches!(proto, 6 | 17 | 132 | 136)
        && let Some(ports) = l4.and_then(|l4| frame.get(l4..l4 + 4))
    {
        h.add(u32::from_ne_bytes([ports[0], ports[1], ports[2], ports[3]]).into());
    }
    Some(h.finish())
}

/// FxHash's multiply-rotate step with a final mix, by hand: a dozen words per frame on the
/// data path need no general-purpose hasher, and the result must be the same on every run
/// (a flow keeps its port).
#[derive(Default)]
struct Mix(u64);

impl Mix {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }

    fn finish(&self) -> u64 {
        // The low bits of a product depend on few input bits: fold the high ones in.
        let h = self.0 ^ (self.0 >> 29);
        h ^ (h >> 32)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], ports: (u16, u16), frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[14 + 6..14 + 8].copy_from_slice(&frag.to_be_bytes());
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&ports.0.to_be_bytes());
        f[36..38].copy_from_slice(&ports.1.to_be_bytes());
        f
    }

    #[test]
    fn a_flow_keeps_its_label_and_flows_spread_over_the_ports() {
        let a = ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], (40000, 5201), 0);
        assert_eq!(label(&a, 8), label(&a, 8));
        assert!((1..=8).contains(&label(&a, 8)));
        assert_eq!(label(&a, 0), 0, "no flow ports: the data port");
        // 64 TCP connections between two VMs (source ports in a row, as a client's are)
        // use every one of 8 ports, none for more than a quarter of them.
        let mut used = [0usize; 9];
        for sport in 40000..40064 {
            used[usize::from(label(
                &ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], (sport, 5201), 0),
                8,
            ))] += 1;
        }
        assert_eq!(used[0], 0);
        assert!(used[1..].iter().all(|&n| (1..=16).contains(&n)), "{used:?}");
        // Ports count for TCP and UDP, not for ICMP or a fragment: a fragmented datagram's
        // pieces all leave from one port.
        let icmp = |p| label(&ipv4(1, [10, 0, 0, 1], [10, 0, 0, 3], p, 0), 15);
        assert_eq!(icmp((1, 2)), icmp((3, 4)));
        let first = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 3], (1, 2), 0x2000);
        let later = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 3], (9, 9), 0x00b9);
        assert_eq!(label(&first, 15), label(&later, 15));
    }

    /// Flows new to the table take their peer's labels in turn, so up to `ports` flows each
    /// have a port of their own; a flow keeps its label while it sends, may take another
    /// after `IDLE` of silence; a flow whose slot another live flow holds falls back to its
    /// hash's label.
    #[test]
    fn new_flows_take_the_labels_in_turn_and_keep_them_while_they_send() {
        let t0 = Instant::now();
        let mut flows = Flows::new();
        let mut next = 0;
        let tcp = |sport: u16| ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], (sport, 5201), 0);
        // 15 connections over 15 ports: each its own port (a hash alone would put about 5
        // of them on a port another already has).
        let labels: Vec<u8> = (0..15)
            .map(|i| flows.label(&tcp(40000 + i), 15, &mut next, t0))
            .collect();
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 15, "{labels:?}");
        let hashed: std::collections::BTreeSet<u8> =
            (0..15).map(|i| label(&tcp(40000 + i), 15)).collect();
        assert!(hashed.len() < 15, "the hash alone shares ports: {hashed:?}");
        // Each keeps its label while it sends, every second for 10 s.
        for s in 1..=10 {
            let now = t0 + Duration::from_secs(s);
            for (i, &l) in labels.iter().enumerate() {
                assert_eq!(flows.label(&tcp(40000 + i as u16), 15, &mut next, now), l);
            }
        }
        // The 16th takes the first label again; not IP, or no ports: none.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(flows.label(&tcp(41000), 15, &mut next, later), 1);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(flows.label(&arp, 15, &mut next, later), 0);
        assert_eq!(flows.label(&tcp(40000), 0, &mut next, later), 0);
        // Silent for IDLE, a flow takes the next label in turn.
        let quiet = later + IDLE;
        assert_eq!(flows.label(&tcp(40000), 15, &mut next, quiet), 2);
        // Two live flows on one slot: the second takes its hash's label, the first keeps its.
        let slot = |f: &[u8]| flow_hash(f).map(|h| h as usize % SLOTS);
        let a = tcp(50000);
        let b = (50001..u16::MAX)
            .map(tcp)
            .find(|f| slot(f) == slot(&a) && flow_hash(f) != flow_hash(&a))
            .expect("a flow on the same slot");
        let la = flows.label(&a, 15, &mut next, quiet);
        assert_eq!(flows.label(&b, 15, &mut next, quiet), label(&b, 15));
        assert_eq!(flows.label(&a, 15, &mut next, quiet), la);
    }

    #[test]
    fn frames_that_are_not_ip_or_are_cut_short_take_the_data_port() {
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(label(&arp, 8), 0);
        let tcp = ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], (1, 2), 0);
        for n in 0..34 {
            assert_eq!(label(&tcp[..n], 8), 0, "{n} bytes");
        }
        // Headers whole but the ports cut: still IP, a label from the addresses.
        assert_ne!(label(&tcp[..34], 8), 0);
        // VLAN-tagged IPv6.
        let mut v6 = vec![0u8; 18 + 40 + 4];
        v6[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        v6[16..18].copy_from_slice(&0x86ddu16.to_be_bytes());
        v6[18] = 0x60;
        v6[18 + 6] = 17;
        assert_ne!(label(&v6, 8), 0);
    }
}
