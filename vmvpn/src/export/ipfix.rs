//! The IPFIX exporter: the data plane's flow records as biflow records (RFC 5103), one
//! observation domain per LAN (its wire id), templates with the first message of each
//! domain and again every refresh interval, sequence numbers counting data records (RFC
//! 7011 §3.1). Octets are IP bytes (the Ethernet header taken off each frame, as RFC
//! 7012's octetDeltaCount counts); layer2OctetDeltaCount carries the flow table's own
//! Ethernet bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use telemetry::flows::FlowRecord;
use telemetry::ipfix::{self, Header, MAX_MESSAGE, Record};

use super::udp::Sockets;
use crate::engine::ExportTake;
use crate::status::{IpfixStatus, LanTraffic, Status};

/// Bytes of an untagged Ethernet header: what a frame has besides its IP packet.
pub const ETHERNET_HEADER: u64 = 14;

/// One host's IPFIX exporter.
pub struct Exporter {
    collectors: Vec<SocketAddr>,
    refresh: Duration,
    /// Per observation domain: data records sent, and when templates last went.
    domains: HashMap<u32, (u32, Option<Instant>)>,
    status: IpfixStatus,
    buf: Box<[u8; MAX_MESSAGE]>,
    /// When the VM names last went.
    names_sent: Option<Instant>,
}

/// A flow record as IPFIX carries it; times from the engine's clock (`now_s`) to the
/// Unix epoch (`unix_ms` now).
pub fn to_ipfix(r: &FlowRecord, now_s: u64, unix_ms: u64) -> Record {
    let at = |s: u64| unix_ms.saturating_sub(now_s.saturating_sub(s) * 1000);
    Record {
        start_ms: at(r.start_s),
        end_ms: at(r.end_s),
        src_mac: r.src_mac,
        dst_mac: r.dst_mac,
        src: r.key.src,
        dst: r.key.dst,
        sport: r.key.sport,
        dport: r.key.dport,
        proto: r.key.proto,
        flags: u16::from(r.flags),
        octets: r.bytes.saturating_sub(ETHERNET_HEADER * r.packets),
        packets: r.packets,
        l2_octets: r.bytes,
        reason: r.reason as u8,
        rev_flags: u16::from(r.rev_flags),
        rev_octets: r.rev_bytes.saturating_sub(ETHERNET_HEADER * r.rev_packets),
        rev_packets: r.rev_packets,
        rev_l2_octets: r.rev_bytes,
    }
}

impl Exporter {
    /// An exporter sending to `collectors`, templates every `refresh`.
    pub fn new(collectors: Vec<SocketAddr>, refresh: Duration) -> Self {
        Exporter {
            status: IpfixStatus {
                collectors: collectors.iter().map(|c| c.to_string()).collect(),
                ..IpfixStatus::default()
            },
            collectors,
            refresh,
            domains: HashMap::new(),
            buf: Box::new([0; MAX_MESSAGE]),
            names_sent: None,
        }
    }

    /// Whether the VM names are due again (every template refresh interval).
    pub fn names_due(&self, now: Instant) -> bool {
        self.names_sent
            .is_none_or(|t| now.duration_since(t) >= self.refresh)
    }

    /// Send the VM names libvirt gives this host's VMs, as options records (their
    /// template with them), one LAN's per observation domain: `traffic` labelled by
    /// libvirt, `st` for the LANs' wire ids.
    pub fn send_vm_names(&mut self, st: &Status, traffic: &[LanTraffic], sockets: &Sockets) {
        let now = Instant::now();
        self.names_sent = Some(now);
        let unix_ms = common::clock::unix_ms();
        for l in &st.lans {
            let Some(t) = traffic.iter().find(|t| t.lan == l.name) else {
                continue;
            };
            let vms: Vec<ipfix::VmName<'_>> = t
                .vms
                .iter()
                .filter(|v| v.location == telemetry::VmLocation::Local)
                .filter_map(|v| {
                    Some(ipfix::VmName {
                        mac: v.mac,
                        name: v.name.as_deref()?,
                        uuid: v.uuid.as_deref().map_or([0; 16], super::uuid_bytes),
                    })
                })
                .collect();
            let mut rest = &vms[..];
            while !rest.is_empty() {
                let (sent, _) = self.domains.entry(l.id).or_insert((0, None));
                let h = Header {
                    export_s: (unix_ms / 1000) as u32,
                    sequence: *sent,
                    domain: l.id,
                };
                let Some((len, n)) = ipfix::encode_vm_names(&mut self.buf[..], &h, true, rest)
                else {
                    return;
                };
                if n == 0 {
                    return;
                }
                *sent = sent.wrapping_add(n as u32);
                self.status.vm_name_records_total += n as u64;
                let (ok, failed, last) = sockets.send_all(&self.buf[..len], &self.collectors);
                self.status.messages_total += ok;
                self.status.send_errors_total += failed;
                if last.is_some() {
                    self.status.last_error = last;
                }
                rest = &rest[n..];
            }
        }
    }

    /// The counts so far.
    pub fn status(&self) -> IpfixStatus {
        self.status.clone()
    }

    /// Send the records (one list per LAN, `lan_ids` the LANs' wire ids in the same
    /// order: the observation domains).
    pub fn send_records(
        &mut self,
        per_lan: &[Vec<FlowRecord>],
        lan_ids: &[u32],
        take: &ExportTake,
        sockets: &Sockets,
    ) {
        self.status.dropped_records_total = take.record_drops;
        let unix_ms = common::clock::unix_ms();
        let now = Instant::now();
        for (k, recs) in per_lan.iter().enumerate() {
            if recs.is_empty() {
                continue;
            }
            let domain = lan_ids.get(k).copied().unwrap_or(k as u32 + 1);
            let records: Vec<Record> = recs
                .iter()
                .map(|r| to_ipfix(r, take.now_s, unix_ms))
                .collect();
            let mut rest = &records[..];
            while !rest.is_empty() {
                let (sent, last) = self.domains.entry(domain).or_insert((0, None));
                let templates = last.is_none_or(|t| now.duration_since(t) >= self.refresh);
                let h = Header {
                    export_s: (unix_ms / 1000) as u32,
                    sequence: *sent,
                    domain,
                };
                let Some((len, n)) = ipfix::encode(&mut self.buf[..], &h, templates, rest) else {
                    return;
                };
                if n == 0 {
                    return;
                }
                *sent = sent.wrapping_add(n as u32);
                if templates {
                    *last = Some(now);
                    self.status.template_messages_total += 1;
                }
                self.status.records_total += n as u64;
                let (ok, failed, last) = sockets.send_all(&self.buf[..len], &self.collectors);
                self.status.messages_total += ok;
                self.status.send_errors_total += failed;
                if last.is_some() {
                    self.status.last_error = last;
                }
                rest = &rest[n..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry::flows::EndReason;
    use telemetry::frame::FlowKey;

    #[test]
    fn a_record_in_unix_time_with_ip_and_ethernet_bytes() {
        let r = FlowRecord {
            key: FlowKey {
                proto: 6,
                src: [10, 0, 0, 1].into(),
                dst: [10, 0, 0, 2].into(),
                sport: 40000,
                dport: 5201,
            },
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            packets: 10,
            bytes: 10 * 1514,
            rev_packets: 5,
            rev_bytes: 5 * 66,
            flags: 0x12,
            rev_flags: 0x11,
            start_s: 100,
            end_s: 130,
            reason: EndReason::EndOfFlow,
        };
        // The engine is at its second 140, which is 1 000 000 ms on the Unix clock.
        let x = to_ipfix(&r, 140, 1_000_000);
        assert_eq!((x.start_ms, x.end_ms), (960_000, 990_000));
        assert_eq!((x.octets, x.l2_octets), (10 * 1500, 10 * 1514));
        assert_eq!((x.rev_octets, x.rev_l2_octets), (5 * 52, 5 * 66));
        assert_eq!((x.flags, x.rev_flags, x.reason), (0x12, 0x11, 3));
        assert_eq!(
            (x.src_mac, x.sport, x.dport, x.proto),
            (r.src_mac, 40000, 5201, 6)
        );
    }
}
