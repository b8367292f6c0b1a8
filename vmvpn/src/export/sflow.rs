//! The sFlow agent: packs the data plane's flow samples into datagrams (sub-agent 0) and
//! makes counter samples of each LAN's TAP and each tunnel every polling interval
//! (sub-agent 1), as separate sub-agents so each datagram sequence has one writer. With
//! libvirt names, each named VM gets a counter sample of host structures too (its name,
//! UUID, port and traffic; see `telemetry::sflow`). Interface indexes are
//! `engine::sampling`'s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use telemetry::sflow::{
    self, Agent as Header, CounterSample, DS_CLASS_LOGICAL, FlowSample, IF_TYPE_ETHERNET,
    IfCounters, MAX_DATAGRAM, VirtNetIo, VmSample,
};

use super::udp::Sockets;
use crate::engine::LanId;
use crate::engine::sampling::{tap_index, tunnel_index, vm_index};
use crate::status::{LanTraffic, PeerState, SflowStatus, Status};
use telemetry::VmLocation;

/// One host's sFlow agent.
pub struct Agent {
    address: IpAddr,
    collectors: Vec<SocketAddr>,
    polling: Duration,
    link_speed: u64,
    started: Instant,
    /// Datagram sequence of sub-agents 0 (flows) and 1 (counters).
    sequence: [u32; 2],
    /// Counter sample sequence per data source.
    counter_seq: HashMap<u32, u32>,
    status: SflowStatus,
    buf: Box<[u8; MAX_DATAGRAM]>,
}

impl Agent {
    /// An agent at `address` sending to `collectors`.
    pub fn new(
        address: IpAddr,
        collectors: Vec<SocketAddr>,
        rate: u32,
        polling: Duration,
        link_speed: u64,
    ) -> Self {
        Agent {
            address,
            status: SflowStatus {
                collectors: collectors.iter().map(|c| c.to_string()).collect(),
                sampling_rate: rate,
                ..SflowStatus::default()
            },
            collectors,
            polling,
            link_speed,
            started: Instant::now(),
            sequence: [0; 2],
            counter_seq: HashMap::new(),
            buf: Box::new([0; MAX_DATAGRAM]),
        }
    }

    /// Time between counter samples.
    pub fn polling(&self) -> Duration {
        self.polling
    }

    /// The counts so far.
    pub fn status(&self) -> SflowStatus {
        self.status.clone()
    }

    fn send(&mut self, len: usize, sockets: &Sockets) {
        let (ok, failed, last) = sockets.send_all(&self.buf[..len], &self.collectors);
        self.status.datagrams_total += ok;
        self.status.send_errors_total += failed;
        if last.is_some() {
            self.status.last_error = last;
        }
    }

    fn uptime_ms(&self) -> u32 {
        self.started.elapsed().as_millis() as u32
    }

    /// Send `samples` in as few datagrams as they fit; `drops` is the data plane's count
    /// of samples it had no room for.
    pub fn send_flow_samples(&mut self, samples: &[FlowSample], drops: u32, sockets: &Sockets) {
        self.status.dropped_samples_total = u64::from(drops);
        let header = Header {
            address: self.address,
            sub_agent: 0,
        };
        let mut rest = samples;
        while !rest.is_empty() {
            // As many as fit one datagram.
            let mut room = MAX_DATAGRAM - sflow::header_len(&header);
            let mut n = 0;
            while n < rest.len() && sflow::flow_sample_len(&rest[n]) <= room {
                room -= sflow::flow_sample_len(&rest[n]);
                n += 1;
            }
            let n = n.max(1);
            let up = self.uptime_ms();
            let seq = self.sequence[0].wrapping_add(1);
            let Some(len) = sflow::encode(&mut self.buf[..], &header, seq, up, &rest[..n], &[])
            else {
                return;
            };
            self.sequence[0] = seq;
            self.status.flow_samples_total += n as u64;
            self.send(len, sockets);
            rest = &rest[n..];
        }
    }

    /// Counter samples of every LAN's TAP and every tunnel, from a status snapshot and
    /// the per-VM traffic (the TAP's counts are its local VMs').
    pub fn send_counter_samples(&mut self, st: &Status, traffic: &[LanTraffic], sockets: &Sockets) {
        let counters = self.counters(st, traffic);
        let header = Header {
            address: self.address,
            sub_agent: 1,
        };
        let per = (MAX_DATAGRAM - sflow::header_len(&header)) / sflow::COUNTER_SAMPLE_LEN;
        for chunk in counters.chunks(per.max(1)) {
            let samples: Vec<CounterSample> = chunk
                .iter()
                .map(|c| {
                    let s = self.counter_seq.entry(c.index).or_default();
                    *s = s.wrapping_add(1);
                    CounterSample {
                        sequence: *s,
                        counters: *c,
                    }
                })
                .collect();
            let up = self.uptime_ms();
            let seq = self.sequence[1].wrapping_add(1);
            let Some(len) = sflow::encode(&mut self.buf[..], &header, seq, up, &[], &samples)
            else {
                return;
            };
            self.sequence[1] = seq;
            self.status.counter_samples_total += samples.len() as u64;
            self.send(len, sockets);
        }
    }

    /// A counter sample of host structures for every local VM that `traffic` names
    /// (rows labelled by libvirt): name, UUID, port and traffic.
    pub fn send_vm_samples(&mut self, st: &Status, traffic: &[LanTraffic], sockets: &Sockets) {
        let mut vms: Vec<VmSample<'_>> = Vec::new();
        for (k, l) in st.lans.iter().enumerate() {
            let Some(t) = traffic.iter().find(|t| t.lan == l.name) else {
                continue;
            };
            for v in t.vms.iter().filter(|v| v.location == VmLocation::Local) {
                let Some(name) = v.name.as_deref() else {
                    continue;
                };
                let index = vm_index(LanId(k), &v.mac);
                let seq = self
                    .counter_seq
                    .entry(DS_CLASS_LOGICAL << 24 | (index & 0x00FF_FFFF))
                    .or_default();
                *seq = seq.wrapping_add(1);
                vms.push(VmSample {
                    sequence: *seq,
                    ds_index: index,
                    name,
                    uuid: v.uuid.as_deref().map_or([0; 16], super::uuid_bytes),
                    if_index: index,
                    mac: v.mac,
                    io: VirtNetIo {
                        bytes_in: v.rx_bytes,
                        pkts_in: v.rx_packets as u32,
                        bytes_out: v.tx_bytes,
                        pkts_out: v.tx_packets as u32,
                        drops_out: v.tx_drops_total as u32,
                        ..VirtNetIo::default()
                    },
                });
            }
        }
        let header = Header {
            address: self.address,
            sub_agent: 1,
        };
        let room = MAX_DATAGRAM - sflow::header_len(&header);
        let mut rest = &vms[..];
        while !rest.is_empty() {
            let mut used = 0;
            let n = rest
                .iter()
                .take_while(|v| {
                    used += sflow::vm_sample_len(v);
                    used <= room
                })
                .count()
                .max(1);
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            let up = self.uptime_ms();
            let seq = self.sequence[1].wrapping_add(1);
            let Some(len) = sflow::encode_vms(&mut self.buf[..], &header, seq, up, chunk) else {
                return;
            };
            self.sequence[1] = seq;
            self.status.counter_samples_total += chunk.len() as u64;
            self.send(len, sockets);
        }
    }

    /// The interface counters of every TAP and tunnel.
    pub fn counters(&self, st: &Status, traffic: &[LanTraffic]) -> Vec<IfCounters> {
        let mut out = Vec::new();
        for (k, l) in st.lans.iter().enumerate() {
            let lan = LanId(k);
            let base = IfCounters {
                if_type: IF_TYPE_ETHERNET,
                speed: self.link_speed,
                direction: 1,
                in_unknown_protos: u32::MAX,
                ..IfCounters::default()
            };
            // The TAP: what its VMs sent in, and what went out to them.
            let mut tap = IfCounters {
                index: tap_index(lan),
                status: 3,
                promiscuous: 1,
                in_discards: (l.drops.total()) as u32,
                ..base
            };
            if let Some(t) = traffic.iter().find(|t| t.lan == l.name) {
                for v in t.vms.iter().filter(|v| v.location == VmLocation::Local) {
                    tap.in_octets += v.tx_bytes;
                    tap.in_ucast = tap.in_ucast.wrapping_add(v.tx_packets as u32);
                    tap.out_octets += v.rx_bytes;
                    tap.out_ucast = tap.out_ucast.wrapping_add(v.rx_packets as u32);
                }
            }
            tap.in_broadcast = l.flood_tx_frames as u32;
            out.push(tap);
            for (i, p) in l.peers.iter().enumerate() {
                let up = p.state == PeerState::Up;
                out.push(IfCounters {
                    index: tunnel_index(lan, p.id.unwrap_or(i as u32)),
                    status: if up { 3 } else { 1 },
                    in_octets: p.traffic.rx_bytes,
                    in_ucast: p.traffic.rx_packets as u32,
                    in_discards: p.drops.total() as u32,
                    out_octets: p.traffic.tx_bytes,
                    out_ucast: p.traffic.tx_packets as u32,
                    ..base
                });
            }
        }
        out
    }
}
