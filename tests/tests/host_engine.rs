//! The host engine end to end: real daemons, TAPs, bridges and a router in namespaces.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use ring::digest;
use serde_json::Value;
use vmvpn_tests::{Lab, PORT, Vm};

const UP_WITHIN: Duration = Duration::from_secs(10);

fn lan<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["lans"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no LAN {name} in {status:#}"))
}

/// Two hosts with one VM each (`routed`: in two subnets), tunnels up and a first ping
/// through; returns the lab and the two VMs.
fn two_hosts(tag: &str, routed: bool) -> (Lab, Vm, Vm) {
    two_hosts_with(Lab::builder(tag), routed)
}

fn two_hosts_with(b: vmvpn_tests::LabBuilder, routed: bool) -> (Lab, Vm, Vm) {
    let b = if routed {
        b.subnet(&["h1"]).subnet(&["h2"])
    } else {
        b.subnet(&["h1", "h2"])
    };
    let lab = b.lan("lan1", [192, 168, 100], &["h1", "h2"], 1).start();
    lab.wait_tunnels("h1", "lan1", 1, UP_WITHIN);
    let (a, b) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert!(lab.ping(&a, b.ip), "first ping {} -> {}", a.ip, b.ip);
    (lab, a, b)
}

/// Three hosts in two routed subnets (h1, h2 | h3), two VMs each.
fn three_hosts(tag: &str) -> Lab {
    let lab = Lab::builder(tag)
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", [192, 168, 100], &["h1", "h2", "h3"], 2)
        .start();
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 2, UP_WITHIN);
    }
    lab
}

#[test]
fn every_vm_pings_every_other_across_hosts_and_subnets() {
    let lab = three_hosts("ping");
    let vms = lab.vms().to_vec();
    assert_eq!(vms.len(), 6);
    let mut failed = Vec::new();
    let mut pairs = 0;
    for a in &vms {
        for b in &vms {
            if a.ns == b.ns {
                continue;
            }
            pairs += 1;
            if !lab.ping(a, b.ip) {
                failed.push(format!("{} -> {}", a.ip, b.ip));
            }
        }
    }
    assert_eq!(pairs, 30);
    assert!(failed.is_empty(), "pings failed: {failed:?}");

    // ARP was resolved across hosts: h1's first VM knows h3's VM's real MAC.
    let (a, b) = (lab.vm("h1", "lan1", 0), lab.vm("h3", "lan1", 1));
    let neigh = lab.exec(&a.ns, &["ip", "neigh", "show", &b.ip.to_string()]);
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(
        neigh.contains(&format!("lladdr {}", b.mac)),
        "ARP entry for {}: {neigh:?}",
        b.ip
    );

    // The MAC database of h1 has h3's VMs behind h3, and its own VMs as local.
    let macs = lab.macs("h1");
    let rows = macs.as_array().expect("macs array");
    let h3 = format!("{}:{PORT}", lab.host_ip("h3"));
    for v in lab.vms() {
        let row = rows
            .iter()
            .find(|r| r["mac"] == v.mac.as_str())
            .unwrap_or_else(|| panic!("{} not in {macs:#}", v.mac));
        match v.host.as_str() {
            "h1" => assert_eq!(row["location"], "local"),
            "h3" => assert_eq!(
                (row["location"].as_str(), row["peer_name"].as_str()),
                (Some(h3.as_str()), Some("h3"))
            ),
            _ => assert_eq!(row["peer_name"], "h2"),
        }
    }

    // Status JSON carries the documented fields with real traffic in them.
    let st = lab.status("h1");
    assert_eq!(st["host"]["name"], "h1");
    let l = lan(&st, "lan1");
    assert_eq!(l["tap"], "tap0");
    assert_eq!(
        l["mtu"], 1500,
        "VMs keep the standard MTU: what does not fit a datagram is cut into overlay fragments"
    );
    let peers = l["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 2);
    for p in peers {
        assert_eq!(p["state"], "up");
        assert_eq!(p["source"], "static");
        for k in ["tx_packets", "rx_packets", "tx_bytes", "rx_bytes"] {
            assert!(p[k].as_u64().unwrap_or(0) > 0, "{k} of {p:#}");
        }
        assert!(p["id"].is_u64() && p["last_heard_ago_ms"].is_u64(), "{p:#}");
        // Probes inside the tunnel measured an RTT.
        assert!(
            p["probes_answered_total"].as_u64().unwrap_or(0) > 0,
            "{p:#}"
        );
        assert!(p["rtt_p50_us"].as_u64().is_some_and(|r| r > 0), "{p:#}");
        assert!(p["health"] == "ok" || p["health"] == "degraded", "{p:#}");
        assert_eq!(p["drops"]["auth_failure"], 0);
    }
    // The CLI prints the same for people.
    let out = std::process::Command::new(vmvpn_tests::vmvpn_bin())
        .args(["status", "--socket"])
        .arg(lab.socket("h1"))
        .output()
        .expect("run vmvpn status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("LAN lan1") && text.contains("h3"),
        "{text}"
    );
}

#[test]
fn a_second_lan_is_isolated_from_the_first() {
    // Both LANs use the same IP segment, so any leak would be answered.
    let lab = Lab::builder("iso")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 100], &["h1", "h2"], 1)
        .lan("lan2", [192, 168, 100], &["h1", "h2"], 1)
        .start();
    for h in ["h1", "h2"] {
        lab.wait_tunnels(h, "lan1", 1, UP_WITHIN);
        lab.wait_tunnels(h, "lan2", 1, UP_WITHIN);
    }
    let (a1, b1) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    let (a2, b2) = (
        lab.vm("h1", "lan2", 0).clone(),
        lab.vm("h2", "lan2", 0).clone(),
    );
    // lan2 works on its own.
    assert!(lab.ping(&a2, b2.ip));
    // Settle, then count what reaches lan2's TAP on h2 while only lan1 talks.
    std::thread::sleep(Duration::from_millis(300));
    let h2 = lab.host_ns("h2").to_string();
    let before = lab.if_counter(&h2, "tap1", "rx_packets");
    let flood_before = lan(&lab.status("h1"), "lan1")["flood_tx_frames"]
        .as_u64()
        .unwrap_or(0);
    assert!(lab.ping(&a1, b1.ip));
    lab.exec(&a1.ns, &["ip", "neigh", "flush", "all"]);
    assert!(lab.ping(&a1, b1.ip), "ARP again after the flush");
    // A lan1 VM addressing the IP that only a lan2 VM has (same segment) hears nothing back.
    assert!(!lab.ping(&a1, b2.ip), "lan1 reached lan2's {}", b2.ip);
    let flood_after = lan(&lab.status("h1"), "lan1")["flood_tx_frames"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        flood_after > flood_before,
        "lan1 did flood (ARP) during the check"
    );
    let after = lab.if_counter(&h2, "tap1", "rx_packets");
    assert_eq!(after, before, "frames of lan1 appeared on lan2's TAP");
}

#[test]
fn a_host_with_the_wrong_secret_reaches_no_vm_and_shows_as_auth_failures() {
    let lab = Lab::builder("auth")
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", [192, 168, 100], &["h1", "h2", "h3"], 1)
        .wrong_secret("h3", "lan1")
        .start();
    lab.wait_tunnels("h1", "lan1", 1, UP_WITHIN);
    lab.wait_tunnels("h2", "lan1", 1, UP_WITHIN);
    let bad = lab.vm("h3", "lan1", 0).clone();
    for good in [
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    ] {
        assert!(
            !lab.ping(&bad, good.ip),
            "wrong-secret VM reached {}",
            good.ip
        );
        assert!(!lab.ping(&good, bad.ip));
    }
    assert!(lab.ping(lab.vm("h1", "lan1", 0), lab.vm("h2", "lan1", 0).ip));
    let h3 = format!("{}:{PORT}", lab.host_ip("h3"));
    for h in ["h1", "h2"] {
        let st = lab.status(h);
        let l = lan(&st, "lan1");
        assert!(
            l["drops"]["auth_failure"].as_u64().unwrap_or(0) > 0,
            "{h}: {l:#}"
        );
        let p = l["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["address"] == h3.as_str()))
            .expect("h3 peer");
        assert_eq!(p["state"], "handshaking");
        // Hellos that fail their MAC are unauthenticated: anyone could send them in its
        // name, so they count apart from what the peer did.
        assert!(
            p["unauthenticated_drops_total"].as_u64().unwrap_or(0) > 0,
            "{p:#}"
        );
    }
    let st3 = lab.status("h3");
    assert!(
        lan(&st3, "lan1")["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .all(|p| p["state"] == "handshaking")
    );
}

#[test]
fn garbage_datagrams_are_counted_and_forwarding_continues() {
    let (lab, a, b) = two_hosts("junk", false);
    let target = SocketAddr::from((lab.host_ip("h1"), PORT));
    // From h2's namespace: random bytes, truncated headers, a bad version, an unknown LAN,
    // and sealed-looking data from an unknown sender. Bounded: 600 datagrams.
    let sent = lab
        .in_ns(lab.host_ns("h2"), move || {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let mut seed = 0x1234_5678_u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut n = 0;
            for i in 0..600u64 {
                let len = (next() % 200) as usize;
                let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                match i % 4 {
                    0 => {}
                    1 => d.truncate(7),
                    2 if d.len() > 40 => {
                        d[0] = 1;
                        d[1] = 1; // data, random LAN id: unknown LAN
                    }
                    _ if d.len() > 40 => {
                        d[0] = 9; // bad version
                    }
                    _ => {}
                }
                if s.send_to(&d, target).is_ok() {
                    n += 1;
                }
            }
            n
        })
        .join()
        .expect("sender thread");
    assert_eq!(sent, 600);
    std::thread::sleep(Duration::from_millis(300));
    let st = lab.status("h1");
    let host_drops = st["drops"]["bad_header"].as_u64().unwrap_or(0)
        + st["drops"]["unknown_lan"].as_u64().unwrap_or(0);
    let lan_drops = lan(&st, "lan1")["drops"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>());
    // Every garbage datagram is dropped and counted somewhere (random bytes can, rarely,
    // hit lan1's id and count there instead).
    assert!(
        host_drops + lan_drops >= 600,
        "only {host_drops} + {lan_drops} of 600 counted: {st:#}"
    );
    assert!(
        st["drops"]["bad_header"].as_u64().unwrap_or(0) >= 300,
        "{st:#}"
    );
    assert!(lab.ping(&a, b.ip), "forwarding continues after garbage");
    assert_eq!(lan(&st, "lan1")["peers"][0]["state"], "up");
}

#[test]
fn tcp_through_the_overlay_arrives_intact() {
    // With TAP offloads (the default): 64 KB frames split into segments by vmvpn.
    let lab = tcp_transfer(Lab::builder("tcp"), |_, _| {});
    let st = lab.status("h1");
    // Real-time scheduling is asked for only when configured.
    assert_eq!(st["host"]["realtime"], false, "{}", st["host"]);
    let off = &st["offload"];
    assert_eq!(off["tap_offload"], true, "{off}");
    let (frames, segs) = (
        off["tso_frames_total"].as_u64().unwrap_or(0),
        off["tso_segments_total"].as_u64().unwrap_or(0),
    );
    assert!(
        frames > 0 && segs > frames,
        "the TSO path was not used: {off}"
    );
    // The receiver merged the segments back into large frames for its TAP, most of them
    // on h1's checksums (segments h1 cut from TSO frames and summed itself), and what
    // arrived is intact (the SHA-256 above).
    assert_merged(&lab, "h2", "the receive path merged nothing");
    let off2 = &lab.status("h2")["offload"];
    let (segs, summed) = (
        off2["gro_segments_total"].as_u64().unwrap_or(0),
        off2["gro_summed_segments_total"].as_u64().unwrap_or(0),
    );
    assert!(
        summed <= segs && summed * 2 >= segs,
        "merged on the sender's checksum: {off2}"
    );
}

#[test]
fn tcp_arrives_intact_without_offloads_and_on_realtime_scheduling() {
    let lab = tcp_transfer(Lab::builder("tcpnoof").no_offload().realtime(), |_, _| {});
    // Root may have it: the data-plane thread is on SCHED_FIFO.
    assert_eq!(lab.status("h1")["host"]["realtime"], true);
    let off = &lab.status("h1")["offload"];
    assert_eq!(off["tap_offload"], false, "{off}");
    assert_eq!(off["tso_frames_total"], 0, "{off}");
    assert_eq!(lab.status("h2")["offload"]["gro_frames_total"], 0);
    // Frames read one by one still leave together when several wait for the same peer.
    let (sends, datagrams) = (
        off["gso_sends_total"].as_u64().unwrap_or(0),
        off["gso_datagrams_total"].as_u64().unwrap_or(0),
    );
    assert!(sends > 0 && datagrams > sends, "no batched send: {off}");
}

#[test]
fn tcp_arrives_intact_through_the_worker_threads_with_and_without_offloads_and_realtime() {
    for (name, threads, rt, builder) in [
        ("tcpthr", 2, false, Lab::builder("tcpthr").threads(2)),
        (
            "tcpthrnoof",
            2,
            true,
            Lab::builder("tcpthrnoof")
                .threads(2)
                .no_offload()
                .realtime(),
        ),
        (
            "tcpthr3",
            3,
            true,
            Lab::builder("tcpthr3").threads(3).realtime(),
        ),
        (
            "tcpthr4",
            4,
            false,
            // No probes: nothing else arrives every second to wake the receiving loop.
            Lab::builder("tcpthr4")
                .threads(4)
                .telemetry("probes = false\n"),
        ),
    ] {
        // Unicast data is sealed and sent by the send thread; ARP (floods) and the
        // keepalives and probes still leave from the loop, after what the thread holds.
        // With 3 threads the merged frames reach the receiver's TAP from a thread too,
        // with 4 the receiver's data is opened on a thread as well.
        let lab = tcp_transfer(builder, |_, _| {});
        for h in ["h1", "h2"] {
            let st = lab.status(h);
            assert_eq!(st["host"]["threads"], threads, "{name} {h}: {}", st["host"]);
            // Every thread on SCHED_FIFO where asked (root may): policy 1 in each
            // thread's stat (field 41), else 0.
            assert_eq!(st["host"]["realtime"], rt, "{name} {h}: {}", st["host"]);
            let pid = lab.pid(h);
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
            let policies: Vec<(String, String)> = tasks
                .filter_map(|t| {
                    let dir = t.ok()?.path();
                    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                    // Fields after the command's closing parenthesis start at field 3.
                    let rest = stat.rsplit_once(") ")?.1;
                    let policy = rest.split(' ').nth(41 - 3)?.to_string();
                    Some((comm.trim().to_string(), policy))
                })
                .filter(|(comm, _)| {
                    ["dataplane", "vmvpn-send", "vmvpn-tapw", "vmvpn-open"].contains(&comm.as_str())
                })
                .collect();
            assert_eq!(policies.len(), threads, "{name} {h}: {policies:?}");
            for (comm, policy) in &policies {
                assert_eq!(policy, if rt { "1" } else { "0" }, "{name} {h}: {comm}");
            }
            let drops = &st["lans"][0]["drops"];
            for reason in [
                "auth_failure",
                "replay",
                "udp_send_error",
                "tap_write_error",
            ] {
                assert_eq!(
                    drops[reason].as_u64().unwrap_or(0),
                    0,
                    "{name} {h}: {reason} drops: {drops}"
                );
            }
        }
        let off = &lab.status("h1")["offload"];
        let (sends, datagrams) = (
            off["gso_sends_total"].as_u64().unwrap_or(0),
            off["gso_datagrams_total"].as_u64().unwrap_or(0),
        );
        assert!(
            sends > 0 && datagrams > sends,
            "{name}: no batched send: {off}"
        );
        let handed = off["send_thread_batches_total"].as_u64().unwrap_or(0);
        assert!(
            handed > 10,
            "{name}: the send thread sent {handed} batches: {off}"
        );
        let out = lab.vmvpn_cli("h2", &["status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!(", {threads} threads")),
            "{name}: vmvpn status: {text}"
        );
        // Nothing handed to a thread was lost on the way: TCP recovers from losses (the
        // digest would still match), so count what the sending VM had to send again.
        let (out_segs, retrans) = tcp_segments_sent(&lab, &lab.vm("h1", "lan1", 0).ns);
        assert!(
            out_segs > 5000 && retrans * 100 < out_segs,
            "{name}: the sending VM sent {retrans} of {out_segs} segments again"
        );
        if threads >= 3 {
            // The receiver merged the stream and its TAP writer thread wrote the frames.
            assert_merged(&lab, "h2", "nothing merged for the TAP writer thread");
            let off = &lab.status("h2")["offload"];
            let written = off["tap_thread_frames_total"].as_u64().unwrap_or(0);
            assert!(
                written > 10,
                "{name}: the TAP writer thread wrote {written} frames: {off}"
            );
            assert!(
                text.contains("the TAP writer thread wrote"),
                "{name}: vmvpn status: {text}"
            );
        }
        if threads == 4 {
            // Bursts that the open thread takes (a large ping is 21 IP fragments), each
            // followed by silence: the loop must not sleep while the thread holds one.
            // (Left there, it would wait for the next datagram: a keepalive, seconds
            // later.)
            let (a, b) = (lab.vm("h1", "lan1", 0), lab.vm("h2", "lan1", 0));
            let to = b.ip.to_string();
            for _ in 0..3 {
                let out = lab.exec(&a.ns, &["ping", "-c1", "-W2", "-s30000", "-q", &to]);
                let said = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && said.contains("1 received"),
                    "{name}: a large ping: {said}"
                );
            }
            let off = &lab.status("h2")["offload"];
            let opened = off["open_thread_batches_total"].as_u64().unwrap_or(0);
            assert!(
                opened > 10,
                "{name}: the open thread opened {opened} batches: {off}"
            );
            assert!(
                text.contains("the open thread opened"),
                "{name}: vmvpn status: {text}"
            );
        }
    }
}

#[test]
fn merged_frames_survive_a_vm_port_without_offloads() {
    // The receiving VM's bridge port takes one segment per frame and computes no checksums,
    // so the kernel splits vmvpn's merged frames again and completes each checksum in
    // software from the partial one vmvpn wrote, and the VM verifies it. A wrong checksum
    // convention would lose every merged segment here.
    let lab = tcp_transfer(Lab::builder("tcpseg"), port_without_offloads);
    assert_merged(&lab, "h2", "nothing was merged, so nothing was split again");
}

/// The bridge port of `vm` (its first VM on the first LAN) takes one segment per frame
/// and computes no checksums: the kernel must split and checksum in software.
fn port_without_offloads(lab: &Lab, vm: &Vm) {
    let ns = lab.host_ns(&vm.host).to_string();
    for args in [
        &["ip", "link", "set", "dev", "v0x0", "gso_max_segs", "1"][..],
        &["ethtool", "-K", "v0x0", "tx", "off"][..],
    ] {
        let out = lab.exec(&ns, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// TCP segments sent in namespace `ns` so far, and of them, those sent again
/// (`/proc/net/snmp`: `OutSegs`, `RetransSegs`).
fn tcp_segments_sent(lab: &Lab, ns: &str) -> (u64, u64) {
    let out = lab.exec(ns, &["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        panic!("no Tcp lines in {ns}'s /proc/net/snmp: {text}")
    };
    let field = |want: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == want)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {want} in {ns}'s /proc/net/snmp: {text}"))
    };
    (field("OutSegs"), field("RetransSegs"))
}

/// `host` wrote merged frames to its TAP (each of several segments).
fn assert_merged(lab: &Lab, host: &str, why: &str) {
    let off = &lab.status(host)["offload"];
    let (frames, segs) = (
        off["gro_frames_total"].as_u64().unwrap_or(0),
        off["gro_segments_total"].as_u64().unwrap_or(0),
    );
    assert!(frames > 0 && segs > frames, "{why}: {off}");
}

#[test]
fn udp_bursts_are_merged_and_arrive_whole_at_a_vm_port_without_offloads() {
    // Bursts of datagrams from one connected socket (running IPv4 ids) are merged by the
    // receiving vmvpn; the VM's port splits and checksums them again in software, and the
    // VM's stack verifies each datagram.
    let (lab, a, b) = two_hosts_with(Lab::builder("udpgro"), true);
    port_without_offloads(&lab, &b);
    let sent = UdpBursts {
        size: 200,
        gso: false,
    };
    assert_eq!(
        sent.through(&lab, &a, &b),
        sent.count(),
        "datagrams lost or damaged"
    );
    assert_merged(&lab, "h2", "no datagrams merged");
}

#[test]
fn a_vms_udp_gso_sends_are_read_whole_and_arrive_as_datagrams() {
    // A VM sending with UDP_SEGMENT (as QUIC stacks do) hands its 40 datagrams a send to
    // the kernel as one frame; with USO on the TAP, vmvpn reads it as one frame and cuts
    // it into datagrams itself, each with its own length and checksum.
    let (lab, a, b) = two_hosts_with(Lab::builder("udpgso"), true);
    let sent = UdpBursts {
        size: 1000,
        gso: true,
    };
    assert_eq!(
        sent.through(&lab, &a, &b),
        sent.count(),
        "datagrams lost or damaged"
    );
    let off = &lab.status("h1")["offload"];
    assert_eq!(
        off["tap_uso"], true,
        "the kernel (6.2+) offers USO on TAPs: {off}"
    );
    let frames = off["uso_frames_total"].as_u64().unwrap_or(0);
    assert!(
        frames >= UdpBursts::BURSTS as u64 / 2,
        "the sends were not read whole: {off}"
    );
}

#[test]
fn small_frames_to_peers_in_turn_leave_many_to_a_sendmmsg_and_arrive_whole() {
    // A VM on h1 sends bursts of 100-byte datagrams to VMs on h2 and h3 in turn: h1's
    // daemon reads runs of one datagram to each peer in turn, and sends many runs a call.
    let lab = three_hosts("mmsg");
    let a = lab.vm("h1", "lan1", 0).clone();
    let to = [
        lab.vm("h2", "lan1", 0).clone(),
        lab.vm("h3", "lan1", 0).clone(),
    ];
    for z in &to {
        assert!(lab.ping(&a, z.ip), "first ping {} -> {}", a.ip, z.ip);
    }
    const SIZE: usize = 100;
    const BURSTS: usize = 64;
    const PER_PEER: usize = 10;
    let fill = |i: usize, d: &mut [u8]| {
        d[..4].copy_from_slice(&(i as u32).to_be_bytes());
        for (k, x) in d[4..].iter_mut().enumerate() {
            *x = (i * 7 + k) as u8;
        }
    };
    let dsts: Vec<SocketAddr> = to.iter().map(|z| SocketAddr::from((z.ip, 5006))).collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receivers: Vec<_> = to
        .iter()
        .zip(&dsts)
        .map(|(z, &dst)| {
            let ready = ready_tx.clone();
            lab.in_ns(&z.ns, move || {
                let s = UdpSocket::bind(dst).expect("bind");
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                ready.send(()).expect("ready");
                let (mut buf, mut want) = ([0u8; 2048], [0u8; SIZE]);
                let mut seen = vec![false; BURSTS * PER_PEER];
                while let Ok(n) = s.recv(&mut buf) {
                    let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    fill(i, &mut want);
                    if n == SIZE && buf[..n] == want && i < seen.len() {
                        seen[i] = true;
                    }
                }
                seen.iter().filter(|x| **x).count()
            })
        })
        .collect();
    for _ in &dsts {
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("receiver ready");
    }
    let sender = lab.in_ns(&a.ns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0)).expect("bind");
        let mut d = [0u8; SIZE];
        for k in 0..BURSTS {
            for j in 0..PER_PEER {
                for dst in &dsts {
                    fill(k * PER_PEER + j, &mut d);
                    s.send_to(&d, dst).expect("send");
                }
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    });
    sender.join().expect("sender");
    for (z, r) in to.iter().zip(receivers) {
        let got = r.join().expect("receiver");
        assert_eq!(
            got,
            BURSTS * PER_PEER,
            "{}: datagrams lost or damaged",
            z.ip
        );
    }
    let off = &lab.status("h1")["offload"];
    let (sends, runs) = (
        off["mmsg_sends_total"].as_u64().unwrap_or(0),
        off["mmsg_runs_total"].as_u64().unwrap_or(0),
    );
    assert!(
        sends >= BURSTS as u64 / 4 && runs >= 4 * sends,
        "runs to peers in turn did not share sendmmsg calls: {off}"
    );
}

/// Datagrams of `size` bytes in 64 bursts of 40 from a VM to another, paced so that no
/// socket along the way overflows. Each carries its index, then bytes derived from it.
/// `gso`: each burst is one send with UDP_SEGMENT.
struct UdpBursts {
    size: usize,
    gso: bool,
}

impl UdpBursts {
    const BURSTS: usize = 64;
    const PER_BURST: usize = 40;

    fn count(&self) -> usize {
        Self::BURSTS * Self::PER_BURST
    }

    fn datagram(i: usize, d: &mut [u8]) {
        d[..4].copy_from_slice(&(i as u32).to_be_bytes());
        for (k, x) in d[4..].iter_mut().enumerate() {
            *x = (i + k) as u8;
        }
    }

    /// How many datagrams `b` received whole.
    fn through(&self, lab: &Lab, a: &Vm, b: &Vm) -> usize {
        let (size, gso, count) = (self.size, self.gso, self.count());
        let to = SocketAddr::from((b.ip, 5002));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = lab.in_ns(&b.ns, move || {
            let s = UdpSocket::bind(to).expect("bind");
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            ready_tx.send(()).expect("ready");
            let mut seen = vec![false; count];
            let mut buf = [0u8; 2048];
            let mut want = [0u8; 2048];
            while let Ok(n) = s.recv(&mut buf) {
                let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                Self::datagram(i, &mut want[..size]);
                if n == size && buf[..n] == want[..n] && i < count {
                    seen[i] = true;
                }
            }
            seen.iter().filter(|x| **x).count()
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("receiver ready");
        let sender = lab.in_ns(&a.ns, move || {
            let s = UdpSocket::bind(("0.0.0.0", 0)).expect("bind");
            s.connect(to).expect("connect");
            if gso {
                // Each send of `burst` leaves as datagrams of `size` bytes.
                vmvpn_tests::set_int(&s, libc::SOL_UDP, libc::UDP_SEGMENT, size as libc::c_int);
            }
            let mut burst = vec![0u8; size * Self::PER_BURST];
            for k in 0..Self::BURSTS {
                for (j, d) in burst.chunks_mut(size).enumerate() {
                    Self::datagram(k * Self::PER_BURST + j, d);
                }
                if gso {
                    s.send(&burst).expect("send");
                } else {
                    for d in burst.chunks(size) {
                        s.send(d).expect("send");
                    }
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        sender.join().expect("sender");
        receiver.join().expect("receiver")
    }
}

/// 8 MiB of TCP from a VM of h1 to a VM of h2 (routed); the SHA-256 must match. `before`
/// adjusts the lab (given the receiving VM) first.
fn tcp_transfer(builder: vmvpn_tests::LabBuilder, before: impl FnOnce(&Lab, &Vm)) -> Lab {
    const SIZE: usize = 8 << 20;
    let (lab, a, b) = two_hosts_with(builder, true);
    before(&lab, &b);
    let listen_ip = b.ip;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = lab.in_ns(&b.ns, move || {
        let l = TcpListener::bind((listen_ip, 5001)).expect("listen");
        ready_tx.send(()).expect("ready");
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut got = Vec::with_capacity(SIZE);
        s.read_to_end(&mut got).expect("read");
        (
            got.len(),
            digest::digest(&digest::SHA256, &got).as_ref().to_vec(),
        )
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    let mut data = vec![0u8; SIZE];
    let mut x = 0x9e37_79b9_u32;
    for byte in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    let sent_digest = digest::digest(&digest::SHA256, &data).as_ref().to_vec();
    let client = lab.in_ns(&a.ns, move || {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::from((listen_ip, 5001)),
            Duration::from_secs(5),
        )
        .expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s.write_all(&data).expect("write");
    });
    client.join().expect("client");
    let (len, got_digest) = server.join().expect("server");
    assert_eq!(len, SIZE);
    assert_eq!(got_digest, sent_digest, "SHA-256 of what arrived differs");
    let st = lab.status("h2");
    let l = lan(&st, "lan1");
    assert!(l["peers"][0]["rx_bytes"].as_u64().unwrap_or(0) >= SIZE as u64);
    lab
}

#[test]
fn sigterm_exits_cleanly_and_a_restart_rekeys() {
    let (mut lab, a, b) = two_hosts("term", false);
    let h2 = lab.host_ns("h2").to_string();
    assert!(lab.has_link(&h2, "tap0"));
    let st = lab.stop("h2");
    assert!(st.success(), "exit status {st}");
    assert!(!lab.has_link(&h2, "tap0"), "TAP removed on exit");
    assert!(!lab.socket("h2").exists(), "control socket removed on exit");
    let log = lab.log("h2");
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("stopped"),
        "{log}"
    );
    assert!(!lab.ping(&a, b.ip), "nothing answers while h2 is down");
    // Back up with fresh keys; h1 accepts the newer hello and traffic flows again.
    lab.restart("h2");
    lab.wait_tunnels("h2", "lan1", 1, UP_WITHIN);
    lab.wait_tunnels("h1", "lan1", 1, UP_WITHIN);
    assert!(lab.ping(&a, b.ip), "after restart");
    assert!(
        lab.log("h1").contains("new session keys"),
        "{}",
        lab.log("h1")
    );
}

#[test]
fn a_lan_with_cipher_none_carries_traffic_between_subnets() {
    let lab = Lab::builder("plain")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 74], &["h1", "h2"], 1)
        .cipher("none")
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    let (a, b) = (lab.vm("h1", "lan1", 0), lab.vm("h2", "lan1", 0));
    assert!(lab.ping(a, b.ip));
    assert!(
        lab.log("h1").contains("cipher=\"none\"") || lab.log("h1").contains("cipher=none"),
        "{}",
        lab.log("h1")
    );
}

/// The source ports of `from`'s datagrams to `h`'s data port, as `h`'s kernel saw them
/// while `during` ran (an nft set in `h`'s namespace, removed after).
fn source_ports_during(lab: &Lab, h: &str, from: Ipv4Addr, during: impl FnOnce()) -> Vec<u16> {
    let ns = lab.host_ns(h).to_string();
    let listen = lab.status(h)["host"]["listen"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let port = listen.rsplit(':').next().unwrap_or("7401");
    let rules = format!(
        "table inet vmvtsport {{\n  set sp {{ type inet_service; flags dynamic; size 1024; }}\n  chain input {{\n    type filter hook input priority 0;\n    ip saddr {from} udp dport {port} add @sp {{ udp sport }}\n  }}\n}}\n"
    );
    let out = lab.exec(&ns, &["sh", "-c", &format!("echo '{rules}' | nft -f -")]);
    assert!(out.status.success(), "nft: {out:?}");
    during();
    let out = lab.exec(
        &ns,
        &["nft", "-j", "list", "set", "inet", "vmvtsport", "sp"],
    );
    let _ = lab.exec(&ns, &["nft", "delete", "table", "inet", "vmvtsport"]);
    assert!(out.status.success(), "nft list: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
    let mut ports: Vec<u16> = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["set"]["elem"].as_array())
        .flatten()
        .filter_map(|e| e.as_u64().or_else(|| e["elem"]["val"].as_u64()))
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    ports.sort_unstable();
    ports
}

/// Flow ports (`[host] flow_ports`, 15 by default): eight TCP connections between two VMs
/// leave h1 from source ports of their own besides its data port (the underlay tells the
/// flows apart), arrive whole, and h2 still reaches h1 at its data port. With
/// `flow_ports = 0`, everything leaves from the data port.
#[test]
fn flows_leave_from_ports_of_their_own_by_default_and_from_one_port_when_off() {
    for (tag, line) in [("flowp", ""), ("flowp0", "flow_ports = 0")] {
        let mut builder = Lab::builder(tag);
        if !line.is_empty() {
            builder = builder.host_line("h1", line);
        }
        let (lab, a, b) = two_hosts_with(builder, true);
        let data_port: u16 = lab.status("h1")["host"]["listen"]
            .as_str()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("h1's data port");
        let mut result = serde_json::Value::Null;
        let ports = source_ports_during(&lab, "h2", lab.host_ip("h1"), || {
            result = lab.iperf3(&a, &b, &["-P", "8", "-t", "2"]);
        });
        let received = result["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            received > 1 << 20,
            "{tag}: {received} bytes arrived: {result}"
        );
        let st = lab.status("h1");
        let peer = &lan(&st, "lan1")["peers"][0];
        let h2 = lab.status("h2");
        let seen_as = lan(&h2, "lan1")["peers"][0]["address"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            seen_as,
            format!("{}:{data_port}", lab.host_ip("h1")),
            "{tag}: h2 reaches h1 at its data port"
        );
        if line.is_empty() {
            assert_eq!(st["host"]["flow_ports"], 15, "{tag}: {}", st["host"]);
            assert_eq!(peer["flows_spread"], true, "{tag}: {peer}");
            let others = ports.iter().filter(|&&p| p != data_port).count();
            // 9 connections (iperf3's control one too), each given a port of its own but
            // where two meet on a slot of the flow table (1 in 256 a pair): fewer than 6
            // ports would take three such meetings.
            assert!(
                ports.contains(&data_port) && others >= 6,
                "{tag}: source ports {ports:?} (data port {data_port})"
            );
            let text =
                String::from_utf8_lossy(&lab.vmvpn_cli("h1", &["status"]).stdout).to_string();
            assert!(text.contains("flows spread over 15 ports"), "{text}");
        } else {
            assert_eq!(st["host"]["flow_ports"], 0, "{tag}: {}", st["host"]);
            assert_eq!(peer["flows_spread"], false, "{tag}: {peer}");
            assert_eq!(ports, vec![data_port], "{tag}: source ports");
        }
        let drops = &lan(&st, "lan1")["drops"];
        assert_eq!(drops["udp_send_error"], 0, "{tag}: {drops}");
    }
}
