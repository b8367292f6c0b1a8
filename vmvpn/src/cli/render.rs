//! Tables for people, from the typed status contract (`vmvpn::status`) that `--json`
//! prints: a renamed field fails to build here instead of showing as 0.

use std::fmt::Write;
use std::net::IpAddr;

use common::text::human;
use telemetry::{DropCounters, FlowRow, VmLocation, VmRow};
use vmvpn::status::{
    AlertState, AlertView, LanTraffic, MacRow, PeerState, PeerStatus, PingAnswer, Status,
};

/// An optional value, "-" when absent.
fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |x| x.to_string())
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{}s", ms / 1000),
    }
}

/// 1234 -> "1.23ms", 56 -> "56µs", None -> "-".
fn micros(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(us) if us >= 1000 => format!("{:.2}ms", us as f64 / 1000.0),
        Some(us) => format!("{us}µs"),
    }
}

/// A ratio as a percentage with two decimals.
fn pct(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

/// Bits per second: "12.3M" (bit/s).
fn rate(bps: u64) -> String {
    human(bps)
}

/// Non-zero drop counters as `reason=count` (by name), or "none".
fn drops(c: &DropCounters) -> String {
    let mut parts: Vec<(&str, u64)> = c.nonzero().map(|(r, n)| (r.name(), n)).collect();
    parts.sort_unstable();
    if parts.is_empty() {
        "none".into()
    } else {
        let parts: Vec<String> = parts.iter().map(|(k, n)| format!("{k}={n}")).collect();
        parts.join(" ")
    }
}

/// "up (ok)" or "handshaking".
fn state(p: &PeerStatus) -> String {
    match p.state {
        PeerState::Up => format!("up ({})", p.health),
        other => other.to_string(),
    }
}

/// `vmvpn status`.
pub(crate) fn status(v: &Status) -> String {
    let mut o = String::new();
    host(&mut o, v);
    for l in &v.lans {
        lan(&mut o, l);
    }
    o
}

/// The host's lines of `vmvpn status`: itself, its bulletin, exports, offloads, queues.
fn host(o: &mut String, v: &Status) {
    let h = &v.host;
    let _ = writeln!(
        o,
        "host {} (id {:#010x})  listening {}  up {}s  vmvpn {}  data plane {}{}{}",
        h.name,
        h.id,
        h.listen,
        h.uptime_s,
        h.version,
        if h.realtime {
            "real-time"
        } else {
            "normal priority"
        },
        if h.threads >= 2 {
            format!(", {} threads", h.threads)
        } else {
            String::new()
        },
        if h.flow_ports > 0 {
            format!(", flows spread over {} ports", h.flow_ports)
        } else {
            String::new()
        }
    );
    match &v.bulletin {
        None => {
            let _ = writeln!(o, "bulletin: none (static peers only)");
        }
        Some(b) => {
            let _ = writeln!(
                o,
                "bulletin {} {}  epoch {}  registered {}  peers {}",
                b.server,
                b.state,
                opt(b.epoch.as_deref()),
                b.registered_ago_s
                    .map_or("-".to_string(), |x| format!("{x}s ago")),
                b.peers
            );
            if let Some(e) = &b.last_error {
                let _ = writeln!(o, "  last error: {e}");
            }
        }
    }
    o.push_str(&exports(&v.export));
    let _ = writeln!(o, "unattributed drops: {}", drops(&v.drops));
    let off = &v.offload;
    let _ = writeln!(
        o,
        "offload: TAP TSO {}, USO {}, {} large frames ({} UDP) split into {} segments, {} merged from {} received ({} on their sender's checksum); UDP GSO up to {} datagrams per send, {} sends carried {}; {} sendmmsg carried {} runs{}",
        if off.tap_offload { "on" } else { "off" },
        if off.tap_uso { "on" } else { "off" },
        off.tso_frames_total,
        off.uso_frames_total,
        off.tso_segments_total,
        off.gro_frames_total,
        off.gro_segments_total,
        off.gro_summed_segments_total,
        off.gso_max_segments,
        off.gso_sends_total,
        off.gso_datagrams_total,
        off.mmsg_sends_total,
        off.mmsg_runs_total,
        match v.host.threads {
            0 | 1 => String::new(),
            2 => format!(
                "; the send thread sent {} batches",
                off.send_thread_batches_total
            ),
            3 => format!(
                "; the send thread sent {} batches, the TAP writer thread wrote {} frames",
                off.send_thread_batches_total, off.tap_thread_frames_total
            ),
            _ => format!(
                "; the send thread sent {} batches, the TAP writer thread wrote {} frames, the open thread opened {} batches",
                off.send_thread_batches_total,
                off.tap_thread_frames_total,
                off.open_thread_batches_total
            ),
        }
    );
    if let Some(lv) = &v.libvirt {
        let _ = writeln!(
            o,
            "libvirt {}: {} domains, {} MACs named{}{}",
            lv.uri,
            lv.domains,
            lv.macs,
            lv.refreshed_ago_s
                .map_or(String::new(), |s| format!(", read {s}s ago")),
            lv.last_error
                .as_ref()
                .map_or(String::new(), |e| format!("; last read failed: {e}"))
        );
    }
    if let Some(r) = &v.relay {
        let d = &r.dropped;
        let _ = writeln!(
            o,
            "relay on port {} for {} LANs{}: {} pairs open, {} packets ({} bytes) passed on; dropped: {} malformed, {} unknown LAN, {} bad MAC, {} replayed, {} from strangers, {} with no other end, {} over the limit",
            r.port,
            r.lans,
            if r.limit_mbps > 0 {
                format!(", at most {} Mbit/s", r.limit_mbps)
            } else {
                String::new()
            },
            r.pairs.len(),
            r.forwarded_packets_total,
            r.forwarded_bytes_total,
            d.malformed,
            d.unknown_lan,
            d.bad_mac,
            d.replay,
            d.stranger,
            d.no_peer,
            d.limit
        );
        for p in &r.pairs {
            let _ = writeln!(
                o,
                "  pair {} LAN {:#010x} hosts {:#010x} {:#010x}: {}, {} packets, {} bytes",
                p.port,
                p.lan_id,
                p.hosts[0],
                p.hosts[1],
                if p.bound {
                    "both bound"
                } else {
                    "waiting for a bind"
                },
                p.packets,
                p.bytes
            );
        }
    }
    let q = &v.queue;
    let _ = writeln!(
        o,
        "receive queue: last read waited {:.1} ms, at most {:.1} ms in the last second; CoDel {}, {} bulk frames dropped, {} marked CE",
        q.rx_sojourn_ms,
        q.rx_sojourn_max_ms,
        if q.aqm_dropping { "dropping" } else { "idle" },
        q.aqm_drops_total,
        q.aqm_marks_total
    );
    let re = &v.reassembly;
    let _ = writeln!(
        o,
        "reassembly: {} frames put together from overlay fragments, {} in progress; dropped {} overlapping, {} oversize, {} timed out, {} evicted",
        re.reassembled_frames_total,
        re.in_progress,
        re.overlap_total,
        re.oversize_total,
        re.timeout_total,
        re.evicted_total
    );
}

/// One LAN's lines of `vmvpn status`: its flooding, its peers, its tables.
fn lan(o: &mut String, l: &vmvpn::status::LanStatus) {
    let _ = writeln!(
        o,
        "\nLAN {}  segment {}  TAP {} mtu {}  macs {}  flooded {}  drops: {}",
        l.name,
        l.segment,
        l.tap,
        l.mtu,
        l.macs,
        l.flood_tx_frames,
        drops(&l.drops)
    );
    let f = &l.flood;
    let _ = writeln!(
        o,
        "  flood {} group {}  {}  sent: {} multicast, {} unicast, {} relay; relayed {}, duplicates {}",
        f.mode,
        opt(f.group.as_deref()),
        if f.forwarder {
            "forwarder of this subnet"
        } else {
            "not forwarder"
        },
        f.stats.multicast_datagrams,
        f.stats.unicast_datagrams,
        f.stats.relay_datagrams,
        f.stats.relayed_frames,
        f.stats.duplicates_suppressed
    );
    for sn in &f.subnets {
        let _ = writeln!(
            o,
            "    {:<18} {} host(s)  {:<9} forwarder {}  ({})",
            sn.subnet,
            sn.hosts,
            sn.mode.name(),
            sn.forwarder,
            sn.reason
        );
    }
    peers(o, l);
    if l.fragmented_frames_total > 0 {
        let _ = writeln!(
            o,
            "  frames larger than a datagram to their peer: {} cut into {} overlay fragments",
            l.fragmented_frames_total, l.fragments_sent_total
        );
    }
    let (vt, ft) = (&l.vm_table, &l.flow_table);
    let _ = writeln!(
        o,
        "  VMs {} (evicted {})  pairs {}  flows {} (evicted {})  TCP open {}  SYN {} FIN {} RST {}",
        vt.vms,
        vt.vm_evictions_total,
        vt.pairs,
        ft.flows,
        ft.flows_evicted_total,
        ft.tcp_active,
        ft.tcp_syn_total,
        ft.tcp_fin_total,
        ft.tcp_rst_total
    );
}

/// A LAN's peer table.
fn peers(o: &mut String, l: &vmvpn::status::LanStatus) {
    let _ = writeln!(
        o,
        "  {:<12} {:<21} {:<8} {:<8} {:<15} {:>6} {:>5} {:>8} {:>8} {:>8} {:>13} {:>8} {:>8} {:>7} {:>7}  DROPS",
        "PEER",
        "ADDRESS",
        "SOURCE",
        "PATH",
        "STATE",
        "HEARD",
        "PMTU",
        "RTT p50",
        "RTT p99",
        "JITTER",
        "LOSS tx/rx",
        "TX bit/s",
        "RX bit/s",
        "TX",
        "RX"
    );
    for p in &l.peers {
        let _ = writeln!(
            o,
            "  {:<12} {:<21} {:<8} {:<8} {:<15} {:>6} {:>5} {:>8} {:>8} {:>8} {:>13} {:>8} {:>8} {:>7} {:>7}  {}",
            if p.name.is_empty() { "?" } else { &p.name },
            p.address,
            p.source.name(),
            p.path.name(),
            state(p),
            ago(p.last_heard_ago_ms),
            // A search still running shows what data uses meanwhile, marked.
            format!(
                "{}{}",
                p.path_mtu_bytes,
                if p.path_mtu_searching { "?" } else { "" }
            ),
            micros(p.rtt.rtt_p50_us),
            micros(p.rtt.rtt_p99_us),
            micros(p.rtt.jitter_us),
            format!("{}/{}", pct(p.loss_tx_ratio), pct(p.loss_rx_ratio)),
            rate(p.rates.tx_rate_bps),
            rate(p.rates.rx_rate_bps),
            human(p.traffic.tx_bytes) + "B",
            human(p.traffic.rx_bytes) + "B",
            drops(&p.drops)
        );
    }
}

/// `vmvpn services`: each service's address and virtual MAC, then its backends.
pub(crate) fn services(v: &[(String, Vec<vmvpn::status::ServiceStatus>)]) -> String {
    let mut o = String::new();
    if v.iter().all(|(_, s)| s.is_empty()) {
        o.push_str("no services: add [[lan.service]] to a LAN (README, \"Load balancing\")\n");
        return o;
    }
    for (lan, list) in v {
        for s in list {
            let _ = writeln!(
                o,
                "LAN {lan}  service {} at {} (MAC {}, {}, checked by {}): {} of {} backends up, {} ARP answered, {} frames found no backend",
                s.name,
                s.address,
                s.mac,
                s.policy,
                s.check,
                s.backends_up,
                s.backends.len(),
                s.arp_answered_total,
                s.no_backend_frames_total
            );
            let _ = writeln!(
                o,
                "  {:<20} {:<18} {:<7} {:<16} {:>6} {:>9} {:>5} {:>8} {:>8} {:>7} {:>9} {:>12} {:>10}",
                "BACKEND",
                "MAC",
                "STATE",
                "WHERE",
                "WEIGHT",
                "LOAD",
                "OPEN",
                "RTT",
                "FLOWS",
                "ACTIVE",
                "SHARE/1m",
                "CONNECTIONS",
                "BYTES"
            );
            for b in &s.backends {
                let _ = writeln!(
                    o,
                    "  {:<20} {:<18} {:<7} {:<16} {:>6} {:>9} {:>5} {:>8} {:>8} {:>7} {:>9} {:>12} {:>10}",
                    b.backend,
                    b.mac.as_deref().unwrap_or("(not seen yet)"),
                    b.state,
                    b.location,
                    b.weight,
                    format!("{:.1} Mb/s", b.load_mbps),
                    b.open_connections,
                    format!("{:.2} ms", b.rtt_ms),
                    b.flows_total,
                    b.active_flows,
                    format!("{:.0} %", b.share_last_minute * 100.0),
                    b.connections_total,
                    human(b.bytes_total)
                );
            }
        }
    }
    o
}

/// `vmvpn vms`: per-VM traffic of each LAN, busiest first.
pub(crate) fn vms(v: &[LanTraffic]) -> String {
    let mut o = String::new();
    for l in v {
        let t = &l.vm_table;
        let _ = writeln!(
            o,
            "LAN {}  {} VMs (evicted {})",
            l.lan, t.vms, t.vm_evictions_total
        );
        let named = l.vms.iter().any(|r| r.name.is_some());
        let _ = writeln!(
            o,
            "  {}{:<18} {:<26} {:<7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>5}",
            if named {
                format!("{:<16} ", "NAME")
            } else {
                String::new()
            },
            "MAC",
            "IP",
            "WHERE",
            "TX PKTS",
            "TX",
            "RX PKTS",
            "RX",
            "TX RATE",
            "RX RATE",
            "IDLE",
            "PEAK/MEAN",
            "H"
        );
        for r in &l.vms {
            let _ = writeln!(
                o,
                "  {}{:<18} {:<26} {:<7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}s {:>9} {:>5}",
                if named {
                    format!("{:<16} ", r.name.as_deref().unwrap_or("-"))
                } else {
                    String::new()
                },
                common::text::mac(&r.mac),
                opt(r.ip),
                r.location.name(),
                human(r.tx_packets),
                human(r.tx_bytes) + "B",
                human(r.rx_packets),
                human(r.rx_bytes) + "B",
                r.rates.map_or("-".into(), |x| rate(x.tx_rate_bps)),
                r.rates.map_or("-".into(), |x| rate(x.rx_rate_bps)),
                r.idle_s,
                r.rates
                    .and_then(|x| x.peak_to_mean_60s)
                    .map_or("-".into(), |p| format!("{p:.1}")),
                r.hurst.map_or("-".into(), |h| format!("{h:.2}"))
            );
        }
        // The domains' own figures, beside the network ones (libvirt's domstats).
        let domains: Vec<_> = l
            .vms
            .iter()
            .filter_map(|r| Some((r.name.as_deref()?, r.domain.as_ref()?)))
            .collect();
        if !domains.is_empty() {
            let _ = writeln!(o, "  Domains (libvirt)");
            let _ = writeln!(
                o,
                "    {:<16} {:<9} {:>6} {:>8} {:>10} {:>10}",
                "NAME", "STATE", "CPU", "MEMORY", "DISK READ", "DISK WRITE"
            );
            for (name, d) in domains {
                let bytes_rate = |x: Option<f64>| x.map_or("-".into(), |b| human(b as u64) + "B/s");
                let _ = writeln!(
                    o,
                    "    {:<16} {:<9} {:>6} {:>8} {:>10} {:>10}",
                    name,
                    d.state.as_deref().unwrap_or("-"),
                    d.cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
                    d.memory_bytes.map_or("-".into(), |m| human(m) + "B"),
                    bytes_rate(d.block_read_bps),
                    bytes_rate(d.block_write_bps)
                );
            }
        }
        if !l.limits.is_empty() {
            let _ = writeln!(
                o,
                "  Rate limits (policed: frames over the rate are dropped)"
            );
            let _ = writeln!(
                o,
                "    {:<18} {:<4} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10}",
                "VM", "DIR", "RATE", "BURST", "PASSED", "BYTES", "DROPPED", "BYTES"
            );
            for lim in &l.limits {
                for (dir, c) in [("in", lim.rx), ("out", lim.tx)] {
                    let Some(c) = c else { continue };
                    let _ = writeln!(
                        o,
                        "    {:<18} {:<4} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10}",
                        lim.mac.as_deref().unwrap_or("(whole LAN)"),
                        dir,
                        rate(lim.rate_bps),
                        human(lim.burst_bytes) + "B",
                        human(c.passed_frames_total),
                        human(c.passed_bytes_total) + "B",
                        human(c.dropped_frames_total),
                        human(c.dropped_bytes_total) + "B"
                    );
                }
            }
        }
        if !l.pairs.is_empty() {
            let _ = writeln!(o, "  VM matrix (seen here; * counted at the source host)");
            let _ = writeln!(
                o,
                "    {:<26} {:<26} {:>8} {:>8}",
                "FROM", "TO", "PKTS", "BYTES"
            );
            for r in &l.pairs {
                let end = |mac: &telemetry::frame::Mac, ip: Option<IpAddr>| {
                    ip.map_or_else(|| common::text::mac(mac), |ip| ip.to_string())
                };
                let _ = writeln!(
                    o,
                    "    {:<26} {:<26} {:>8} {:>8}{}",
                    end(&r.src_mac, r.src_ip),
                    end(&r.dst_mac, r.dst_ip),
                    human(r.packets),
                    human(r.bytes) + "B",
                    if r.at_source { " *" } else { "" }
                );
            }
        }
    }
    o
}

/// `ip:port`, `[v6]:port`, or the address alone without ports.
fn endpoint(ip: &str, port: u16) -> String {
    match port {
        0 => ip.to_string(),
        p if ip.contains(':') => format!("[{ip}]:{p}"),
        p => format!("{ip}:{p}"),
    }
}

/// `vmvpn flows`: flows of each LAN, busiest first.
pub(crate) fn flows(v: &[LanTraffic]) -> String {
    let mut o = String::new();
    for l in v {
        let t = &l.flow_table;
        let _ = writeln!(
            o,
            "LAN {}  {} flows (evicted {}, expired {})  TCP open {}  SYN {} FIN {} RST {}",
            l.lan,
            t.flows,
            t.flows_evicted_total,
            t.flows_expired_total,
            t.tcp_active,
            t.tcp_syn_total,
            t.tcp_fin_total,
            t.tcp_rst_total
        );
        let _ = writeln!(
            o,
            "  {:<6} {:<30} {:<30} {:<11} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5}",
            "PROTO", "FROM", "TO", "TCP", "TX PKTS", "TX", "RX PKTS", "RX", "AGE", "IDLE"
        );
        for r in &l.flows {
            let _ = writeln!(
                o,
                "  {:<6} {:<30} {:<30} {:<11} {:>8} {:>8} {:>8} {:>8} {:>5}s {:>4}s",
                r.proto,
                endpoint(&r.src, r.src_port),
                endpoint(&r.dst, r.dst_port),
                opt(r.tcp_state.map(|s| s.name())),
                human(r.tx_packets),
                human(r.tx_bytes) + "B",
                human(r.rx_packets),
                human(r.rx_bytes) + "B",
                r.age_s,
                r.idle_s
            );
        }
    }
    o
}

/// `vmvpn top`: one screen of tunnels and the busiest VMs and flows.
pub(crate) fn top(st: &Status, traffic: &[LanTraffic], rows: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "vmvpn top — host {}  up {}s  (Ctrl-C to quit)\n",
        st.host.name, st.host.uptime_s
    );
    let _ = writeln!(
        o,
        "{:<10} {:<12} {:<15} {:>8} {:>8} {:>8} {:>13} {:>9} {:>9}",
        "LAN", "PEER", "STATE", "RTT p50", "RTT p99", "JITTER", "LOSS tx/rx", "TX RATE", "RX RATE"
    );
    let mut peers: Vec<(&str, &PeerStatus)> = st
        .lans
        .iter()
        .flat_map(|l| l.peers.iter().map(move |p| (l.name.as_str(), p)))
        .collect();
    peers.sort_by_key(|(_, p)| std::cmp::Reverse(p.rates.tx_rate_bps + p.rates.rx_rate_bps));
    for (lan, p) in peers.iter().take(rows) {
        let _ = writeln!(
            o,
            "{:<10} {:<12} {:<15} {:>8} {:>8} {:>8} {:>13} {:>9} {:>9}",
            lan,
            p.name,
            state(p),
            micros(p.rtt.rtt_p50_us),
            micros(p.rtt.rtt_p99_us),
            micros(p.rtt.jitter_us),
            format!("{}/{}", pct(p.loss_tx_ratio), pct(p.loss_rx_ratio)),
            rate(p.rates.tx_rate_bps) + "b/s",
            rate(p.rates.rx_rate_bps) + "b/s"
        );
    }
    let _ = writeln!(
        o,
        "\n{:<10} {:<18} {:<26} {:>9} {:>9}",
        "LAN", "LOCAL VM", "IP", "TX RATE", "RX RATE"
    );
    let mut ports: Vec<(&str, &VmRow)> = traffic
        .iter()
        .flat_map(|l| l.vms.iter().map(move |r| (l.lan.as_str(), r)))
        .filter(|(_, r)| r.location == VmLocation::Local)
        .collect();
    let rates = |r: &VmRow| r.rates.map_or((0, 0), |x| (x.tx_rate_bps, x.rx_rate_bps));
    ports.sort_by_key(|(_, r)| {
        let (t, x) = rates(r);
        std::cmp::Reverse(t + x)
    });
    for (lan, r) in ports.iter().take(rows) {
        let (t, x) = rates(r);
        let _ = writeln!(
            o,
            "{:<10} {:<18} {:<26} {:>9} {:>9}",
            lan,
            common::text::mac(&r.mac),
            opt(r.ip),
            rate(t) + "b/s",
            rate(x) + "b/s"
        );
    }
    let _ = writeln!(
        o,
        "\n{:<10} {:<6} {:<26} {:<26} {:>9} {:>9}",
        "LAN", "PROTO", "FROM", "TO", "TX", "RX"
    );
    let mut fl: Vec<(&str, &FlowRow)> = traffic
        .iter()
        .flat_map(|l| l.flows.iter().map(move |r| (l.lan.as_str(), r)))
        .collect();
    fl.sort_by_key(|(_, r)| std::cmp::Reverse(r.tx_bytes + r.rx_bytes));
    for (lan, r) in fl.iter().take(rows) {
        let _ = writeln!(
            o,
            "{:<10} {:<6} {:<26} {:<26} {:>9} {:>9}",
            lan,
            r.proto,
            format!("{}:{}", r.src, r.src_port),
            format!("{}:{}", r.dst, r.dst_port),
            human(r.tx_bytes) + "B",
            human(r.rx_bytes) + "B"
        );
    }
    o
}

/// One `vmvpn ping` line.
pub(crate) fn pong(v: &PingAnswer, seq: u32) -> String {
    let who = match (v.peer.as_str(), v.via_vm.as_deref()) {
        (p, Some(vm)) if !p.is_empty() => format!("{p} (VM {vm})"),
        (p, None) if !p.is_empty() => p.to_string(),
        _ => "?".to_string(),
    };
    match v.rtt_us {
        Some(us) => format!(
            "pong from {who} at {} on {}: seq={seq} time={:.3} ms",
            v.address,
            v.lan,
            us / 1000.0
        ),
        None => format!(
            "no answer from {who} at {} on {}: seq={seq} (timeout)",
            v.address, v.lan
        ),
    }
}

/// One line per configured export, with its counts and its last error.
pub(crate) fn exports(e: &vmvpn::status::ExportStatus) -> String {
    let mut o = String::new();
    let err = |n: u64, last: &Option<String>| match (n, last) {
        (0, _) => String::new(),
        (n, Some(l)) => format!(", {n} errors (last: {l})"),
        (n, None) => format!(", {n} errors"),
    };
    if let Some(x) = &e.sflow {
        let _ = writeln!(
            o,
            "export sflow -> {}: 1 in {}, {} datagrams, {} flow and {} counter samples, {} dropped{}",
            x.collectors.join(" "),
            x.sampling_rate,
            x.datagrams_total,
            x.flow_samples_total,
            x.counter_samples_total,
            x.dropped_samples_total,
            err(x.send_errors_total, &x.last_error)
        );
    }
    if let Some(x) = &e.ipfix {
        let _ = writeln!(
            o,
            "export ipfix -> {}: {} messages, {} records, {} dropped{}",
            x.collectors.join(" "),
            x.messages_total,
            x.records_total,
            x.dropped_records_total,
            err(x.send_errors_total, &x.last_error)
        );
    }
    if let Some(x) = &e.redis {
        let _ = writeln!(
            o,
            "export redis -> {}: {}, {} writes, {} events, {} dropped{}",
            x.server,
            if x.connected {
                "connected"
            } else {
                "not connected"
            },
            x.writes_total,
            x.events_total,
            x.dropped_events_total,
            err(x.errors_total, &x.last_error)
        );
    }
    o
}

/// One line of alerts under `vmvpn status` and `top`: what fires and what is pending.
pub(crate) fn alert_line(v: &[AlertView]) -> String {
    let names = |s: AlertState| {
        let mut n: Vec<&str> = v
            .iter()
            .filter(|a| a.state == s)
            .map(|a| a.alert.as_str())
            .collect();
        n.sort_unstable();
        n.dedup();
        (v.iter().filter(|a| a.state == s).count(), n.join(", "))
    };
    let (firing, fnames) = names(AlertState::Firing);
    let (pending, pnames) = names(AlertState::Pending);
    match (firing, pending) {
        (0, 0) => "\nalerts: none firing (vmvpn alerts)\n".into(),
        _ => format!(
            "\nalerts: {firing} firing{}, {pending} pending{} (vmvpn alerts)\n",
            if fnames.is_empty() {
                String::new()
            } else {
                format!(" ({fnames})")
            },
            if pnames.is_empty() {
                String::new()
            } else {
                format!(" ({pnames})")
            },
        ),
    }
}

/// `vmvpn alerts`: firing first, then pending, then resolved (newest first).
pub(crate) fn alerts(v: &[AlertView]) -> String {
    let mut o = String::new();
    if v.is_empty() {
        o.push_str("no alerts (the rules are evaluated every second)\n");
        return o;
    }
    let _ = writeln!(
        o,
        "{:<9} {:<9} {:<22} {:>8} {:>10}  {:<40} SUMMARY",
        "STATE", "SEVERITY", "ALERT", "SINCE", "VALUE", "LABELS"
    );
    for a in v {
        let _ = writeln!(
            o,
            "{:<9} {:<9} {:<22} {:>7}s {:>10.4}  {:<40} {}",
            a.state,
            a.severity,
            a.alert,
            a.since_s,
            a.value,
            a.labels_text(),
            a.annotations.get("summary").map_or("", String::as_str)
        );
    }
    o
}

/// `vmvpn macs`.
pub(crate) fn macs(v: &[MacRow]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<10} {:<18} {:<22} {:<12} {:>8}",
        "LAN", "MAC", "WHERE", "PEER", "AGE"
    );
    for r in v {
        let _ = writeln!(
            o,
            "{:<10} {:<18} {:<22} {:<12} {:>7}s",
            r.lan,
            r.mac,
            r.location,
            opt(r.peer_name.as_deref()),
            r.age_ms / 1000
        );
    }
    o
}

/// What a reload did or would do: the verdict, then each changed key.
pub(crate) fn reload(r: &vmvpn::api::reload::ReloadReport) -> String {
    let mut out = String::new();
    let verdict = match (&r.refused, r.dry_run) {
        (Some(why), true) => format!("a reload of {} would be refused: {why}", r.file),
        (Some(why), false) => format!(
            "reload of {} refused; the running config stays: {why}",
            r.file
        ),
        (None, _) if r.changes.is_empty() => format!(
            "{}: no change from the running config ({} alarm rule(s), read again on reload)",
            r.file, r.rules
        ),
        (None, true) => format!("a reload of {} would apply:", r.file),
        (None, false) => format!("reloaded {}:", r.file),
    };
    let _ = writeln!(out, "{verdict}");
    if r.refused.is_none() {
        for c in &r.changes {
            let _ = writeln!(out, "  {c}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};
    use vmvpn::status::LanStatus;

    /// Lay `over` onto `base`, key by key.
    fn merge(base: &mut Value, over: Value) {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                for (k, v) in o {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
            (b, o) => *b = o,
        }
    }

    /// A fixture: the keys given, on top of a default `T` (so each test names only what
    /// it looks at, and the whole still parses as the contract).
    fn fill<T: Default + Serialize + DeserializeOwned>(over: Value) -> Value {
        let mut b = serde_json::to_value(T::default()).expect("default");
        merge(&mut b, over);
        b
    }

    fn typed<T: Default + Serialize + DeserializeOwned>(over: Value) -> T {
        serde_json::from_value(fill::<T>(over)).expect("fixture parses as the contract")
    }

    #[test]
    fn status_table_shows_peers_and_nonzero_drops() {
        let peer = fill::<PeerStatus>(
            json!({"id": 1, "name": "h2", "address": "10.77.1.2:7401", "source": "static",
                                 "state": "up", "last_heard_ago_ms": 1500, "tx_packets": 1234567,
                                 "tx_bytes": 10, "rx_packets": 0, "rx_bytes": 0,
                                 "drops": {"auth_failure": 3}}),
        );
        let v = json!({
            "host": {"name": "h1", "id": 305419896, "listen": "0.0.0.0:7401", "uptime_s": 5, "version": "0.1.0"},
            "drops": {"bad_header": 2, "unknown_lan": 0},
            "lans": [fill::<LanStatus>(json!({"name": "lan1", "segment": "192.168.100.0/24", "tap": "vl1", "mtu": 1418, "macs": 3,
                      "flood_tx_frames": 4, "drops": {"replay": 0},
                      "peers": [peer]}))]
        });
        let t = status(&typed(v.clone()));
        assert!(t.contains("host h1 (id 0x12345678)"), "{t}");
        assert!(t.contains("unattributed drops: bad_header=2"), "{t}");
        assert!(t.contains("bulletin: none"), "{t}");
        let mut v2 = v.clone();
        // Only these keys change; the rest of the flood object stays.
        merge(
            &mut v2["lans"][0]["flood"],
            json!({"mode": "auto", "group": "239.77.0.1:7401", "forwarder": true,
            "multicast_datagrams_total": 5, "unicast_datagrams_total": 0, "relay_datagrams_total": 5,
            "relayed_frames_total": 2, "duplicates_suppressed_total": 0,
            "subnets": [{"subnet": "10.77.1.0/24", "hosts": 2, "mode": "multicast", "forwarder": "self",
                         "reason": "beacons heard from every host here"}]}),
        );
        let t2 = status(&typed(v2));
        assert!(
            t2.contains("flood auto group 239.77.0.1:7401  forwarder of this subnet")
                && t2.contains("10.77.1.0/24"),
            "{t2}"
        );
        let mut v = v;
        v["bulletin"] = json!({"server": "10.77.0.254:7400", "state": "unreachable", "epoch": "00ff",
                               "registered_ago_s": null, "last_error": "timed out", "peers": 4});
        let t = status(&typed(v));
        assert!(
            t.contains("bulletin 10.77.0.254:7400 unreachable")
                && t.contains("last error: timed out"),
            "{t}"
        );
        assert!(t.contains("LAN lan1") && t.contains("drops: none"), "{t}");
        assert!(
            t.contains("h2") && t.contains("1.5s") && t.contains("auth_failure=3"),
            "{t}"
        );
        assert_eq!(micros(Some(1234)), "1.23ms");
        assert_eq!(micros(Some(56)), "56µs");
        assert_eq!(micros(None), "-");
    }

    #[test]
    fn peer_columns_show_rtt_loss_and_rates() {
        let peer = fill::<PeerStatus>(
            json!({"name": "h2", "address": "10.77.1.2:7401", "state": "up", "health": "ok",
                       "rtt_p50_us": 20400, "rtt_p99_us": 25100, "jitter_us": 80,
                       "loss_tx_ratio": 0.05, "loss_rx_ratio": 0.0, "tx_rate_bps": 512000000,
                       "rx_rate_bps": 1200, "tx_bytes": 1234567, "drops": {}}),
        );
        let v = json!({"host": {}, "drops": {}, "lans": [fill::<LanStatus>(json!({"name": "lan1", "drops": {},
            "vm_table": {"vms": 4, "vm_evictions_total": 0, "pairs": 2},
            "flow_table": {"flows": 3, "tcp_active": 1, "tcp_syn_total": 2, "tcp_fin_total": 1,
                           "tcp_rst_total": 0, "flows_evicted_total": 0},
            "peers": [peer]}))]});
        let t = status(&typed(v));
        for want in [
            "up (ok)",
            "20.40ms",
            "25.10ms",
            "80µs",
            "5.00%/0.00%",
            "512.0M",
            "1.2k",
            "1.2MB",
            "TCP open 1",
        ] {
            assert!(t.contains(want), "{want} missing in\n{t}");
        }
    }

    #[test]
    fn traffic_views_and_ping_lines() {
        let vm = fill::<telemetry::VmRow>(
            json!({"mac": "02:00:00:00:00:01", "ip": "10.0.0.1", "location": "local", "tx_packets": 10,
                     "tx_bytes": 15000, "rx_packets": 5, "rx_bytes": 300, "idle_s": 0,
                     "rates": fill::<telemetry::Rates>(json!({"tx_rate_bps": 8000000, "rx_rate_bps": 0}))}),
        );
        let v: Vec<LanTraffic> = vec![typed(
            json!({"lan": "lan1", "vm_table": {"vms": 2}, "flow_table": {"flows": 1, "tcp_active": 1},
            "vms": [vm],
            "pairs": [{"src_mac": "02:00:00:00:00:01", "src_ip": "10.0.0.1", "dst_mac": "02:00:00:00:00:02",
                       "dst_ip": null, "packets": 10, "bytes": 15000, "at_source": true}],
            "flows": [{"proto": "tcp", "src": "10.0.0.1", "src_port": 40000, "dst": "10.0.0.2",
                       "dst_port": 5201, "tx_packets": 10, "tx_bytes": 15000, "rx_packets": 5,
                       "rx_bytes": 300, "age_s": 3, "idle_s": 0, "tcp_state": "established"}]}),
        )];
        let t = vms(&v);
        assert!(
            t.contains("10.0.0.1")
                && t.contains("8.0M")
                && t.contains("02:00:00:00:00:02")
                && t.contains(" *"),
            "{t}"
        );
        let t = flows(&v);
        assert!(
            t.contains("10.0.0.1:40000")
                && t.contains("10.0.0.2:5201")
                && t.contains("established"),
            "{t}"
        );
        let peer = fill::<PeerStatus>(
            json!({"name": "h2", "state": "up", "health": "ok", "tx_rate_bps": 5}),
        );
        let st = typed(
            json!({"host": {"name": "h1"}, "lans": [fill::<LanStatus>(json!({"name": "lan1", "peers": [peer]}))]}),
        );
        let t = top(&st, &v, 5);
        assert!(
            t.contains("h2") && t.contains("10.0.0.1:40000") && t.contains("8.0Mb/s"),
            "{t}"
        );
        let p = typed(
            json!({"lan": "lan1", "peer": "h2", "address": "10.77.2.1:7401", "via_vm": null, "rtt_us": 412.5}),
        );
        assert_eq!(
            pong(&p, 1),
            "pong from h2 at 10.77.2.1:7401 on lan1: seq=1 time=0.412 ms"
        );
        let p = typed(
            json!({"lan": "lan1", "peer": "h2", "address": "a", "via_vm": "02:00:00:00:00:02", "rtt_us": null}),
        );
        assert!(pong(&p, 2).contains("no answer from h2 (VM 02:00:00:00:00:02)"));
    }

    #[test]
    fn each_export_shows_as_a_line_with_its_errors() {
        use vmvpn::status::{ExportStatus, IpfixStatus, RedisStatus, SflowStatus};
        assert_eq!(exports(&ExportStatus::default()), "");
        let t = exports(&ExportStatus {
            sflow: Some(SflowStatus {
                collectors: vec!["10.0.0.9:6343".into()],
                sampling_rate: 512,
                datagrams_total: 3,
                flow_samples_total: 10,
                ..SflowStatus::default()
            }),
            ipfix: Some(IpfixStatus {
                collectors: vec!["10.0.0.9:4739".into()],
                records_total: 7,
                ..IpfixStatus::default()
            }),
            redis: Some(RedisStatus {
                server: "redis://10.0.0.9:6379".into(),
                errors_total: 2,
                last_error: Some("cannot connect: refused".into()),
                ..RedisStatus::default()
            }),
        });
        for want in [
            "export sflow -> 10.0.0.9:6343: 1 in 512, 3 datagrams, 10 flow",
            "export ipfix -> 10.0.0.9:4739: 0 messages, 7 records",
            "export redis -> redis://10.0.0.9:6379: not connected, 0 writes",
            "2 errors (last: cannot connect: refused)",
        ] {
            assert!(t.contains(want), "{want}:\n{t}");
        }
    }

    #[test]
    fn alerts_show_as_a_line_and_a_table() {
        let a = |name: &str, state| AlertView {
            alert: name.into(),
            state,
            ..AlertView::default()
        };
        assert_eq!(alert_line(&[]), "\nalerts: none firing (vmvpn alerts)\n");
        let v = [
            a("B", AlertState::Firing),
            a("A", AlertState::Firing),
            a("A", AlertState::Firing),
            a("C", AlertState::Pending),
            a("D", AlertState::Resolved),
        ];
        assert_eq!(
            alert_line(&v),
            "\nalerts: 3 firing (A, B), 1 pending (C) (vmvpn alerts)\n"
        );
        let t = alerts(&v);
        assert!(
            t.starts_with("STATE") && t.contains("resolved") && t.lines().count() == 6,
            "{t}"
        );
        assert!(alerts(&[]).starts_with("no alerts"));
    }

    #[test]
    fn macs_table_lists_rows() {
        let v: Vec<MacRow> = vec![typed(
            json!({"lan": "lan1", "mac": "02:00:00:00:00:01", "location": "local", "peer_name": null, "age_ms": 2500}),
        )];
        let t = macs(&v);
        assert!(
            t.contains("02:00:00:00:00:01") && t.contains("local") && t.contains("2s"),
            "{t}"
        );
    }
}
