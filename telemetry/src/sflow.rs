//! sFlow version 5 datagrams (sflow.org/sflow_version_5.txt, §5), encoded by hand: no
//! Rust crate encodes sFlow, and the subset needed is small. XDR: every field big-endian,
//! opaque data padded to 4 bytes. Written into a caller's buffer, so encoding allocates
//! nothing.
//!
//! What vmvpn sends: compact flow samples (format 0:1) with one raw packet header record
//! (0:1, Ethernet, the first [`MAX_HEADER`] bytes), and compact counter samples (0:2) with
//! one generic interface counters record (0:1). For each VM libvirt names, a counter
//! sample of sFlow's host structures (sflow.org/sflow_host.txt): `host_descr` (0:2000, the
//! domain name and UUID), `host_adapters` (0:2001, the VM's port and MAC, so a collector
//! names the flow samples of that port) and `virt_net_io` (0:2104, its traffic), the
//! records Host sFlow's hsflowd sends for a libvirt domain.

use std::net::IpAddr;

use crate::writer::Writer;

/// Bytes of a sampled frame's header kept (the spec's usual 128).
pub const MAX_HEADER: usize = 128;
/// `output` of a flow sample: a frame sent to several interfaces (the count in the low
/// 30 bits; 0 when unknown), §5 "interface" format 2.
pub const OUTPUT_MULTIPLE: u32 = 0x8000_0000;
/// ifType of an Ethernet-like interface (ethernetCsmacd).
pub const IF_TYPE_ETHERNET: u32 = 6;
/// Largest datagram we build: one underlay MTU of 1500 less IPv6 and UDP headers.
pub const MAX_DATAGRAM: usize = 1452;

/// One sampled frame.
#[derive(Debug, Clone, Copy)]
pub struct FlowSample {
    /// Flow sample sequence number of its data source.
    pub sequence: u32,
    /// The data source: ifIndex of the port it was sampled on (source id type 0).
    pub source_index: u32,
    /// 1 in how many.
    pub sampling_rate: u32,
    /// Frames that could have been sampled on this source so far.
    pub sample_pool: u32,
    /// Samples lost for want of room.
    pub drops: u32,
    /// ifIndex the frame came in on.
    pub input: u32,
    /// ifIndex it went out on, or [`OUTPUT_MULTIPLE`] | n.
    pub output: u32,
    /// Length of the whole frame (without FCS).
    pub frame_length: u32,
    /// Bytes of the frame's start in `header` (at most [`MAX_HEADER`]).
    pub header_len: u8,
    /// The frame's first bytes.
    pub header: [u8; MAX_HEADER],
}

impl Default for FlowSample {
    fn default() -> Self {
        FlowSample {
            sequence: 0,
            source_index: 0,
            sampling_rate: 0,
            sample_pool: 0,
            drops: 0,
            input: 0,
            output: 0,
            frame_length: 0,
            header_len: 0,
            header: [0; MAX_HEADER],
        }
    }
}

/// Generic interface counters (counter record 0:1) of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfCounters {
    /// ifIndex.
    pub index: u32,
    /// ifType ([`IF_TYPE_ETHERNET`]).
    pub if_type: u32,
    /// bit/s (0: unknown).
    pub speed: u64,
    /// 1 full duplex (0 unknown).
    pub direction: u32,
    /// Bit 0 admin up, bit 1 oper up.
    pub status: u32,
    /// Octets in.
    pub in_octets: u64,
    /// Unicast frames in.
    pub in_ucast: u32,
    /// Multicast frames in.
    pub in_multicast: u32,
    /// Broadcast frames in.
    pub in_broadcast: u32,
    /// Frames in, discarded.
    pub in_discards: u32,
    /// Frames in, in error.
    pub in_errors: u32,
    /// Unknown protocols (0xFFFFFFFF: not counted).
    pub in_unknown_protos: u32,
    /// Octets out.
    pub out_octets: u64,
    /// Unicast frames out.
    pub out_ucast: u32,
    /// Multicast frames out.
    pub out_multicast: u32,
    /// Broadcast frames out.
    pub out_broadcast: u32,
    /// Frames out, discarded.
    pub out_discards: u32,
    /// Frames out, in error.
    pub out_errors: u32,
    /// 1 promiscuous.
    pub promiscuous: u32,
}

/// One counter sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterSample {
    /// Counter sample sequence number of its data source.
    pub sequence: u32,
    /// The counters (their `index` is the data source).
    pub counters: IfCounters,
}

/// The datagram header's fields.
#[derive(Debug, Clone, Copy)]
pub struct Agent {
    /// The agent's address (its underlay address).
    pub address: IpAddr,
    /// Sub-agent (vmvpn: 0 flow samples from the data plane, 1 counters).
    pub sub_agent: u32,
}

/// Bytes a flow sample takes in a datagram.
pub fn flow_sample_len(s: &FlowSample) -> usize {
    // tag + length, 7 fixed words, record count, record tag + length, 4 header words,
    // the header padded.
    8 + 28 + 4 + 8 + 16 + pad4(usize::from(s.header_len).min(MAX_HEADER))
}

/// Bytes a counter sample takes in a datagram.
pub const COUNTER_SAMPLE_LEN: usize = 8 + 12 + 8 + 88;

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Bytes the datagram header takes.
pub fn header_len(agent: &Agent) -> usize {
    match agent.address {
        IpAddr::V4(_) => 28,
        IpAddr::V6(_) => 40,
    }
}

/// A VM's traffic as `virt_net_io` (0:2104) counts it, from the VM's side: `in` is what
/// it received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtNetIo {
    /// Bytes received.
    pub bytes_in: u64,
    /// Frames received.
    pub pkts_in: u32,
    /// Receive errors.
    pub errs_in: u32,
    /// Frames to it dropped.
    pub drops_in: u32,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Frames sent.
    pub pkts_out: u32,
    /// Send errors.
    pub errs_out: u32,
    /// Frames from it dropped.
    pub drops_out: u32,
}

/// Data source class of a VM's counter samples: a logical entity (as hsflowd's domains).
pub const DS_CLASS_LOGICAL: u32 = 3;
/// Longest `host_descr` hostname (the spec's `string hostname<64>`).
pub const MAX_HOSTNAME: usize = 64;

/// One VM's counter sample of host structures.
#[derive(Debug, Clone, Copy)]
pub struct VmSample<'a> {
    /// Counter sample sequence number of its data source.
    pub sequence: u32,
    /// Its data source index (24 bits; class [`DS_CLASS_LOGICAL`]).
    pub ds_index: u32,
    /// The domain name (cut to [`MAX_HOSTNAME`] bytes).
    pub name: &'a str,
    /// The domain UUID (zeros when unknown).
    pub uuid: [u8; 16],
    /// ifIndex of its port, as in the flow samples' input and output.
    pub if_index: u32,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its traffic.
    pub io: VirtNetIo,
}

/// `name` cut to at most [`MAX_HOSTNAME`] bytes, on a character boundary.
fn hostname(name: &str) -> &str {
    let mut end = name.len().min(MAX_HOSTNAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Bytes a VM's counter sample takes in a datagram.
pub fn vm_sample_len(v: &VmSample<'_>) -> usize {
    // tag + length, 3 words, then host_descr (tag + length, the name, 16 bytes of UUID,
    // 2 words, an empty string), host_adapters (tag + length, count, one adapter of
    // ifIndex, MAC count and a MAC padded to 8) and virt_net_io (tag + length, 40 bytes).
    8 + 12 + (8 + 4 + pad4(hostname(v.name).len()) + 16 + 8 + 4) + (8 + 4 + 8 + 8) + (8 + 40)
}

/// The datagram header.
fn header(
    w: &mut Writer<'_>,
    agent: &Agent,
    sequence: u32,
    uptime_ms: u32,
    samples: usize,
) -> Option<()> {
    w.u32(5)?;
    match agent.address {
        IpAddr::V4(a) => {
            w.u32(1)?;
            w.bytes(&a.octets())?;
        }
        IpAddr::V6(a) => {
            w.u32(2)?;
            w.bytes(&a.octets())?;
        }
    }
    w.u32(agent.sub_agent)?;
    w.u32(sequence)?;
    w.u32(uptime_ms)?;
    w.u32(u32::try_from(samples).ok()?)
}

/// Encode one datagram of VM counter samples into `buf`. Returns its length, or `None`
/// when `buf` is too small.
pub fn encode_vms(
    buf: &mut [u8],
    agent: &Agent,
    sequence: u32,
    uptime_ms: u32,
    vms: &[VmSample<'_>],
) -> Option<usize> {
    let mut w = Writer::new(buf);
    header(&mut w, agent, sequence, uptime_ms, vms.len())?;
    for v in vms {
        let name = hostname(v.name);
        // counters_sample (enterprise 0, format 2)
        w.u32(2)?;
        w.u32(u32::try_from(vm_sample_len(v) - 8).ok()?)?;
        w.u32(v.sequence)?;
        w.u32(DS_CLASS_LOGICAL << 24 | (v.ds_index & 0x00FF_FFFF))?;
        w.u32(3)?; // three counter records
        // host_descr (0:2000)
        w.u32(2000)?;
        w.u32(u32::try_from(4 + pad4(name.len()) + 16 + 8 + 4).ok()?)?;
        w.u32(u32::try_from(name.len()).ok()?)?;
        w.opaque(name.as_bytes())?;
        w.bytes(&v.uuid)?;
        w.u32(0)?; // machine_type: unknown
        w.u32(0)?; // os_name: unknown
        w.u32(0)?; // os_release: empty
        // host_adapters (0:2001): one adapter with one MAC
        w.u32(2001)?;
        w.u32(4 + 8 + 8)?;
        w.u32(1)?;
        w.u32(v.if_index)?;
        w.u32(1)?;
        w.opaque(&v.mac)?;
        // virt_net_io (0:2104)
        w.u32(2104)?;
        w.u32(40)?;
        let io = &v.io;
        w.u64(io.bytes_in)?;
        w.u32(io.pkts_in)?;
        w.u32(io.errs_in)?;
        w.u32(io.drops_in)?;
        w.u64(io.bytes_out)?;
        w.u32(io.pkts_out)?;
        w.u32(io.errs_out)?;
        w.u32(io.drops_out)?;
    }
    Some(w.at)
}

/// Encode one datagram into `buf`: the header, then the flow samples, then the counter
/// samples. Returns its length, or `None` when `buf` is too small.
pub fn encode(
    buf: &mut [u8],
    agent: &Agent,
    sequence: u32,
    uptime_ms: u32,
    flows: &[FlowSample],
    counters: &[CounterSample],
) -> Option<usize> {
    let mut w = Writer::new(buf);
    header(
        &mut w,
        agent,
        sequence,
        uptime_ms,
        flows.len() + counters.len(),
    )?;
    for s in flows {
        let hl = usize::from(s.header_len).min(MAX_HEADER);
        // flow_sample (enterprise 0, format 1)
        w.u32(1)?;
        w.u32(u32::try_from(flow_sample_len(s) - 8).ok()?)?;
        w.u32(s.sequence)?;
        w.u32(s.source_index & 0x00FF_FFFF)?; // source id type 0 (ifIndex)
        w.u32(s.sampling_rate)?;
        w.u32(s.sample_pool)?;
        w.u32(s.drops)?;
        w.u32(s.input)?;
        w.u32(s.output)?;
        w.u32(1)?; // one flow record
        // sampled_header (enterprise 0, format 1)
        w.u32(1)?;
        w.u32(u32::try_from(16 + pad4(hl)).ok()?)?;
        w.u32(1)?; // header_protocol: ETHERNET-ISO88023
        w.u32(s.frame_length)?;
        w.u32(0)?; // stripped: the TAP gives frames without FCS
        w.u32(u32::try_from(hl).ok()?)?;
        w.opaque(&s.header[..hl])?;
    }
    for c in counters {
        let k = &c.counters;
        // counters_sample (enterprise 0, format 2)
        w.u32(2)?;
        w.u32(u32::try_from(COUNTER_SAMPLE_LEN - 8).ok()?)?;
        w.u32(c.sequence)?;
        w.u32(k.index & 0x00FF_FFFF)?;
        w.u32(1)?; // one counter record
        // if_counters (enterprise 0, format 1)
        w.u32(1)?;
        w.u32(88)?;
        w.u32(k.index)?;
        w.u32(k.if_type)?;
        w.u64(k.speed)?;
        w.u32(k.direction)?;
        w.u32(k.status)?;
        w.u64(k.in_octets)?;
        w.u32(k.in_ucast)?;
        w.u32(k.in_multicast)?;
        w.u32(k.in_broadcast)?;
        w.u32(k.in_discards)?;
        w.u32(k.in_errors)?;
        w.u32(k.in_unknown_protos)?;
        w.u64(k.out_octets)?;
        w.u32(k.out_ucast)?;
        w.u32(k.out_multicast)?;
        w.u32(k.out_broadcast)?;
        w.u32(k.out_discards)?;
        w.u32(k.out_errors)?;
        w.u32(k.promiscuous)?;
    }
    Some(w.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::hex;

    /// Checked by hand against sflow_version_5.txt §5, word by word.
    #[test]
    fn a_flow_sample_and_a_counter_sample_byte_for_byte() {
        let mut f = FlowSample {
            sequence: 7,
            source_index: 0x1_0000,
            sampling_rate: 64,
            sample_pool: 448,
            drops: 0,
            input: 0x1_0005,
            output: 0x1_8002,
            frame_length: 1514,
            header_len: 6,
            ..FlowSample::default()
        };
        f.header[..6].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let c = CounterSample {
            sequence: 3,
            counters: IfCounters {
                index: 0x1_0000,
                if_type: IF_TYPE_ETHERNET,
                speed: 0,
                direction: 1,
                status: 3,
                in_octets: 0x1_0000_0001,
                in_ucast: 2,
                in_unknown_protos: u32::MAX,
                out_octets: 9,
                promiscuous: 1,
                ..IfCounters::default()
            },
        };
        let agent = Agent {
            address: IpAddr::from([10, 77, 1, 1]),
            sub_agent: 0,
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = encode(&mut buf, &agent, 42, 1000, &[f], &[c]).expect("fits");
        let want = hex(
            "00000005 00000001 0a4d0101 00000000 0000002a 000003e8 00000002
             00000001 00000040
               00000007 00010000 00000040 000001c0 00000000 00010005 00018002 00000001
               00000001 00000018 00000001 000005ea 00000000 00000006 ffffffffffff0000
             00000002 0000006c
               00000003 00010000 00000001
               00000001 00000058
                 00010000 00000006 0000000000000000 00000001 00000003
                 0000000100000001 00000002 00000000 00000000 00000000 00000000 ffffffff
                 0000000000000009 00000000 00000000 00000000 00000000 00000000
                 00000001",
        );
        assert_eq!(&buf[..n], &want[..], "\n{:02x?}", &buf[..n]);
        assert_eq!(
            n,
            header_len(&agent) + flow_sample_len(&f) + COUNTER_SAMPLE_LEN
        );
    }

    /// Checked by hand against sflow_host.txt (host_descr, host_adapters, virt_net_io).
    #[test]
    fn a_vm_counter_sample_byte_for_byte() {
        let v = VmSample {
            sequence: 5,
            ds_index: 0x1_0002,
            name: "web1",
            uuid: [0x11; 16],
            if_index: 0x1_0002,
            mac: [2, 0, 0, 1, 0, 0],
            io: VirtNetIo {
                bytes_in: 0x1_0000_0000,
                pkts_in: 3,
                bytes_out: 200,
                pkts_out: 2,
                drops_out: 1,
                ..VirtNetIo::default()
            },
        };
        let agent = Agent {
            address: IpAddr::from([10, 77, 1, 1]),
            sub_agent: 1,
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = encode_vms(&mut buf, &agent, 9, 1000, &[v]).expect("fits");
        let want = hex(
            "00000005 00000001 0a4d0101 00000001 00000009 000003e8 00000001
             00000002 00000084
               00000005 03010002 00000003
               000007d0 00000024
                 00000004 77656231 11111111111111111111111111111111 00000000 00000000
                 00000000
               000007d1 00000014
                 00000001 00010002 00000001 0200000100000000
               00000838 00000028
                 0000000100000000 00000003 00000000 00000000
                 00000000000000c8 00000002 00000000 00000001",
        );
        assert_eq!(&buf[..n], &want[..], "\n{:02x?}", &buf[..n]);
        assert_eq!(n, header_len(&agent) + vm_sample_len(&v));
        // A name longer than the spec allows is cut, on a character boundary.
        let long = "é".repeat(40);
        let cut = VmSample { name: &long, ..v };
        let n = encode_vms(&mut buf, &agent, 9, 1000, &[cut]).expect("fits");
        assert_eq!(n, header_len(&agent) + vm_sample_len(&cut));
        assert_eq!(hostname(&long).len(), 64);
        assert_eq!(encode_vms(&mut buf[..100], &agent, 9, 1000, &[v]), None);
    }

    #[test]
    fn too_small_a_buffer_is_refused_and_ipv6_agents_fit() {
        let f = FlowSample {
            header_len: 128,
            ..FlowSample::default()
        };
        let agent = Agent {
            address: "fd00::1".parse().expect("v6"),
            sub_agent: 1,
        };
        let mut buf = [0u8; 100];
        assert_eq!(encode(&mut buf, &agent, 0, 0, &[f], &[]), None);
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = encode(&mut buf, &agent, 0, 0, &[f; 6], &[]).expect("6 samples fit");
        assert_eq!(n, 40 + 6 * flow_sample_len(&f));
        assert!(n <= MAX_DATAGRAM);
        assert_eq!(&buf[4..8], &[0, 0, 0, 2], "address type IPv6");
    }
}
