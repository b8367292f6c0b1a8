//! IPFIX messages (RFC 7011) of biflow records (RFC 5103), encoded by hand into a
//! caller's buffer: the templates are fixed, so a template library would only add
//! weight. One template per address family:
//!
//! | field | IE | bytes |
//! | --- | --- | --- |
//! | flowStartMilliseconds | 152 | 8 |
//! | flowEndMilliseconds | 153 | 8 |
//! | sourceMacAddress | 56 | 6 |
//! | destinationMacAddress | 80 | 6 |
//! | sourceIPv4Address / sourceIPv6Address | 8 / 27 | 4 / 16 |
//! | destinationIPv4Address / destinationIPv6Address | 12 / 28 | 4 / 16 |
//! | sourceTransportPort | 7 | 2 |
//! | destinationTransportPort | 11 | 2 |
//! | protocolIdentifier | 4 | 1 |
//! | tcpControlBits | 6 | 2 |
//! | octetDeltaCount (IP bytes) | 1 | 8 |
//! | packetDeltaCount | 2 | 8 |
//! | layer2OctetDeltaCount (Ethernet bytes) | 352 | 8 |
//! | flowEndReason | 136 | 1 |
//! | reverse tcpControlBits | 6, PEN 29305 | 2 |
//! | reverse octetDeltaCount | 1, PEN 29305 | 8 |
//! | reverse packetDeltaCount | 2, PEN 29305 | 8 |
//! | reverse layer2OctetDeltaCount | 352, PEN 29305 | 8 |
//!
//! The observation domain is the LAN (its id on the wire).
//!
//! VMs libvirt names go as options data records (RFC 7011 §3.4.2.2) of their own
//! template, scoped by the VM's MAC, as interface names usually go in an interface table:
//! sourceMacAddress (56, 6 bytes, the scope), virtualStationName (350, variable length)
//! and virtualStationUUID (349, 16 bytes). A collector joins them to the flow records'
//! MACs.

use std::net::IpAddr;

use crate::writer::Writer;

/// Template id of IPv4 records.
pub const TEMPLATE_V4: u16 = 256;
/// Template id of IPv6 records.
pub const TEMPLATE_V6: u16 = 257;
/// Template id of the VM name options records.
pub const TEMPLATE_VM_NAMES: u16 = 258;
/// Longest VM name sent (one length byte, 255 meaning a longer form we do not use).
pub const MAX_VM_NAME: usize = 254;
/// RFC 5103's Private Enterprise Number for reverse information elements.
pub const REVERSE_PEN: u32 = 29305;
/// Largest message we build (fits an IPv6 UDP datagram on a 1500 MTU).
pub const MAX_MESSAGE: usize = 1452;

/// (IE, length, reverse).
const FIELDS_V4: [(u16, u16, bool); 18] = fields(8, 12, 4);
const FIELDS_V6: [(u16, u16, bool); 18] = fields(27, 28, 16);

const fn fields(src: u16, dst: u16, alen: u16) -> [(u16, u16, bool); 18] {
    [
        (152, 8, false),
        (153, 8, false),
        (56, 6, false),
        (80, 6, false),
        (src, alen, false),
        (dst, alen, false),
        (7, 2, false),
        (11, 2, false),
        (4, 1, false),
        (6, 2, false),
        (1, 8, false),
        (2, 8, false),
        (352, 8, false),
        (136, 1, false),
        (6, 2, true),
        (1, 8, true),
        (2, 8, true),
        (352, 8, true),
    ]
}

/// Bytes of one data record.
pub const fn record_len(v6: bool) -> usize {
    if v6 { 118 } else { 94 }
}

/// One biflow record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// First frame, ms since the Unix epoch.
    pub start_ms: u64,
    /// Last frame, ms since the Unix epoch.
    pub end_ms: u64,
    /// Initiator's MAC.
    pub src_mac: [u8; 6],
    /// Responder's MAC.
    pub dst_mac: [u8; 6],
    /// Initiator's address (both of one family).
    pub src: IpAddr,
    /// Responder's address.
    pub dst: IpAddr,
    /// Initiator's port.
    pub sport: u16,
    /// Responder's port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// TCP flags from the initiator.
    pub flags: u16,
    /// IP bytes initiator -> responder.
    pub octets: u64,
    /// Packets initiator -> responder.
    pub packets: u64,
    /// Ethernet bytes initiator -> responder.
    pub l2_octets: u64,
    /// RFC 5102 flowEndReason.
    pub reason: u8,
    /// TCP flags from the responder.
    pub rev_flags: u16,
    /// IP bytes responder -> initiator.
    pub rev_octets: u64,
    /// Packets responder -> initiator.
    pub rev_packets: u64,
    /// Ethernet bytes responder -> initiator.
    pub rev_l2_octets: u64,
}

impl Record {
    /// An IPv6 record (else IPv4).
    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// The message header's fields.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Export time, s since the Unix epoch.
    pub export_s: u32,
    /// Data records sent before this message in this observation domain (RFC 7011 §3.1).
    pub sequence: u32,
    /// Observation domain (the LAN).
    pub domain: u32,
}

fn template(w: &mut Writer<'_>, id: u16, fields: &[(u16, u16, bool)]) -> Option<()> {
    w.u16(id)?;
    w.u16(fields.len() as u16)?;
    for &(ie, len, reverse) in fields {
        if reverse {
            w.u16(ie | 0x8000)?;
            w.u16(len)?;
            w.u32(REVERSE_PEN)?;
        } else {
            w.u16(ie)?;
            w.u16(len)?;
        }
    }
    Some(())
}

fn addr(w: &mut Writer<'_>, a: IpAddr) -> Option<()> {
    match a {
        IpAddr::V4(a) => w.bytes(&a.octets()),
        IpAddr::V6(a) => w.bytes(&a.octets()),
    }
}

fn record(w: &mut Writer<'_>, r: &Record) -> Option<()> {
    w.u64(r.start_ms)?;
    w.u64(r.end_ms)?;
    w.bytes(&r.src_mac)?;
    w.bytes(&r.dst_mac)?;
    addr(w, r.src)?;
    addr(w, r.dst)?;
    w.u16(r.sport)?;
    w.u16(r.dport)?;
    w.u8(r.proto)?;
    w.u16(r.flags)?;
    w.u64(r.octets)?;
    w.u64(r.packets)?;
    w.u64(r.l2_octets)?;
    w.u8(r.reason)?;
    w.u16(r.rev_flags)?;
    w.u64(r.rev_octets)?;
    w.u64(r.rev_packets)?;
    w.u64(r.rev_l2_octets)
}

/// One VM's name for the options records.
#[derive(Debug, Clone, Copy)]
pub struct VmName<'a> {
    /// Its MAC (the scope).
    pub mac: [u8; 6],
    /// The domain name (cut to [`MAX_VM_NAME`] bytes).
    pub name: &'a str,
    /// The domain UUID (zeros when unknown).
    pub uuid: [u8; 16],
}

fn vm_name(name: &str) -> &str {
    let mut end = name.len().min(MAX_VM_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Bytes one VM name record takes.
pub fn vm_name_len(v: &VmName<'_>) -> usize {
    6 + 1 + vm_name(v.name).len() + 16
}

fn message_header(w: &mut Writer<'_>, h: &Header) -> Option<()> {
    w.u16(10)?;
    w.u16(0)?; // length, set at the end
    w.u32(h.export_s)?;
    w.u32(h.sequence)?;
    w.u32(h.domain)
}

/// Encode one message of VM names into `buf`: the header, the options template when
/// `template`, then as many of `vms` as fit in one data set. Returns the message length
/// and how many records it holds; `None` if not even the header and template fit.
pub fn encode_vm_names(
    buf: &mut [u8],
    h: &Header,
    template: bool,
    vms: &[VmName<'_>],
) -> Option<(usize, usize)> {
    let limit = buf.len().min(usize::from(u16::MAX));
    let mut w = Writer::new(&mut buf[..limit]);
    message_header(&mut w, h)?;
    if template {
        // Options template set: id, 3 fields, 1 of them scope.
        w.u16(3)?;
        w.u16(4 + 6 + 12)?;
        w.u16(TEMPLATE_VM_NAMES)?;
        w.u16(3)?;
        w.u16(1)?;
        for (ie, len) in [(56, 6), (350, 0xFFFF), (349, 16)] {
            w.u16(ie)?;
            w.u16(len)?;
        }
    }
    let mut done = 0;
    if !vms.is_empty() && w.at + 4 + vm_name_len(&vms[0]) <= limit {
        let start = w.at;
        w.u16(TEMPLATE_VM_NAMES)?;
        w.u16(0)?;
        for v in vms {
            if w.at + vm_name_len(v) > limit {
                break;
            }
            let name = vm_name(v.name);
            w.bytes(&v.mac)?;
            w.u8(name.len() as u8)?;
            w.bytes(name.as_bytes())?;
            w.bytes(&v.uuid)?;
            done += 1;
        }
        let len = (w.at - start) as u16;
        w.put_u16_at(start + 2, len);
    }
    let total = w.at as u16;
    w.put_u16_at(2, total);
    Some((w.at, done))
}

/// Encode one message into `buf`: the header, both templates when `templates`, then as
/// many of `records` as fit (one data set per family, in their order). Returns the
/// message length and how many records it holds; `None` if not even the header and
/// templates fit.
pub fn encode(
    buf: &mut [u8],
    h: &Header,
    templates: bool,
    records: &[Record],
) -> Option<(usize, usize)> {
    let limit = buf.len().min(usize::from(u16::MAX));
    let mut w = Writer::new(&mut buf[..limit]);
    message_header(&mut w, h)?;
    if templates {
        let start = w.at;
        w.u16(2)?; // template set
        w.u16(0)?;
        template(&mut w, TEMPLATE_V4, &FIELDS_V4)?;
        template(&mut w, TEMPLATE_V6, &FIELDS_V6)?;
        let len = (w.at - start) as u16;
        w.put_u16_at(start + 2, len);
    }
    let mut done = 0;
    for v6 in [false, true] {
        let mine = records.iter().filter(|r| r.is_v6() == v6);
        if mine.clone().next().is_none() {
            continue;
        }
        let room = limit.saturating_sub(w.at + 4) / record_len(v6);
        if room == 0 {
            break;
        }
        let start = w.at;
        w.u16(if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 })?;
        w.u16(0)?;
        for r in mine.take(room) {
            record(&mut w, r)?;
            done += 1;
        }
        let len = (w.at - start) as u16;
        w.put_u16_at(start + 2, len);
    }
    let total = w.at as u16;
    w.put_u16_at(2, total);
    Some((w.at, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::hex;

    fn rec() -> Record {
        Record {
            start_ms: 0x0000_0190_0000_0001,
            end_ms: 0x0000_0190_0000_0002,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: IpAddr::from([10, 0, 0, 1]),
            dst: IpAddr::from([10, 0, 0, 2]),
            sport: 40000,
            dport: 5201,
            proto: 6,
            flags: 0x1b,
            octets: 1000,
            packets: 10,
            l2_octets: 1140,
            reason: 3,
            rev_flags: 0x17,
            rev_octets: 520,
            rev_packets: 10,
            rev_l2_octets: 660,
        }
    }

    /// Checked by hand against RFC 7011 §3.1 (header), §3.4.1 (template record with
    /// enterprise bit and PEN) and §3.3.2 (data set), and RFC 5103 §6.1 (reverse PEN).
    #[test]
    fn templates_and_one_ipv4_record_byte_for_byte() {
        let mut buf = [0u8; MAX_MESSAGE];
        let h = Header {
            export_s: 0x6000_0000,
            sequence: 5,
            domain: 0x0102_0304,
        };
        let (n, done) = encode(&mut buf, &h, true, &[rec()]).expect("fits");
        assert_eq!(done, 1);
        let tmpl = |src: &str, dst: &str, alen: &str| {
            format!(
                "0098 0008 0099 0008 0038 0006 0050 0006 {src} {alen} {dst} {alen} 0007 0002 000b 0002
                 0004 0001 0006 0002 0001 0008 0002 0008 0160 0008 0088 0001
                 8006 0002 00007279 8001 0008 00007279 8002 0008 00007279 8160 0008 00007279"
            )
        };
        let want = hex(&format!(
            "000a {total:04x} 60000000 00000005 01020304
             0002 00bc
               0100 0012 {}
               0101 0012 {}
             0100 0062
               0000019000000001 0000019000000002 020000000001 020000000002
               0a000001 0a000002 9c40 1451 06 001b
               00000000000003e8 000000000000000a 0000000000000474 03
               0017 0000000000000208 000000000000000a 0000000000000294",
            tmpl("0008", "000c", "0004"),
            tmpl("001b", "001c", "0010"),
            total = 16 + 188 + 4 + 94,
        ));
        assert_eq!(&buf[..n], &want[..], "\n{:02x?}", &buf[..n]);
    }

    /// Checked by hand against RFC 7011 §3.4.2.2 (options template) and §7 (a
    /// variable-length string with one length byte).
    #[test]
    fn vm_names_as_options_records_byte_for_byte() {
        let h = Header {
            export_s: 0x5f5e_1000,
            sequence: 7,
            domain: 0x0102_0304,
        };
        let v = VmName {
            mac: [2, 0, 0, 1, 0, 0],
            name: "web1",
            uuid: [0x11; 16],
        };
        let mut buf = [0u8; MAX_MESSAGE];
        let (n, done) = encode_vm_names(&mut buf, &h, true, &[v]).expect("fits");
        let want = hex("000a 0045 5f5e1000 00000007 01020304
             0003 0016 0102 0003 0001 0038 0006 015e ffff 015d 0010
             0102 001f 020000010000 04 77656231 11111111111111111111111111111111");
        assert_eq!(&buf[..n], &want[..], "\n{:02x?}", &buf[..n]);
        assert_eq!(done, 1);
        // Without the template, and names cut to fit one length byte.
        let long = "ä".repeat(200);
        let cut = VmName { name: &long, ..v };
        let (n, done) = encode_vm_names(&mut buf, &h, false, &[cut, v]).expect("fits");
        assert_eq!(done, 2);
        assert_eq!(n, 16 + 4 + vm_name_len(&cut) + vm_name_len(&v));
        assert_eq!(vm_name(&long).len(), 254);
        // As many as fit the buffer.
        let many = vec![v; 100];
        let (n, done) = encode_vm_names(&mut buf[..200], &h, false, &many).expect("fits");
        assert_eq!(
            (done, n),
            ((200 - 20) / vm_name_len(&v), 20 + done * vm_name_len(&v))
        );
    }

    #[test]
    fn records_split_by_family_and_by_room() {
        let mut six = rec();
        six.src = "fd00::1".parse().expect("v6");
        six.dst = "fd00::2".parse().expect("v6");
        let recs = [rec(), six, rec()];
        let h = Header {
            export_s: 0,
            sequence: 0,
            domain: 1,
        };
        let mut buf = [0u8; MAX_MESSAGE];
        let (n, done) = encode(&mut buf, &h, false, &recs).expect("fits");
        assert_eq!(done, 3);
        assert_eq!(n, 16 + 4 + 2 * 94 + 4 + 118);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]) as usize, n);
        // Room for the header and one IPv4 record only.
        let mut small = [0u8; 16 + 4 + 94 + 10];
        let (_, done) = encode(&mut small, &h, false, &recs).expect("header fits");
        assert_eq!(done, 1);
        assert!(encode(&mut [0u8; 8], &h, false, &recs).is_none());
        // As many IPv4 records as fit a message with templates.
        let many = [rec(); 40];
        let (n, done) = encode(&mut buf, &h, true, &many).expect("fits");
        assert_eq!(done, (MAX_MESSAGE - 16 - 188 - 4) / 94);
        assert!(n <= MAX_MESSAGE);
    }
}
