//! Broadcast and multicast (PROTOCOL.md, *Flooding*): subnet multicast plus designated
//! forwarders, on real daemons. Two physical subnets joined by a router without multicast
//! routing: h1, h2, h3 in 10.77.1.0/24 and h4, h5 in 10.77.2.0/24, two VMs per host.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn_tests::{Lab, LabBuilder, Vm};

const TTL_S: u64 = 6;
const HEARTBEAT_S: u64 = 2;
const HOSTS: [&str; 5] = ["h1", "h2", "h3", "h4", "h5"];

fn two_subnets(tag: &str) -> LabBuilder {
    Lab::builder(tag)
        .subnet(&["h1", "h2", "h3"])
        .subnet(&["h4", "h5"])
        .lan("lan1", [192, 168, 100], &HOSTS, 2)
        .bulletin(TTL_S, HEARTBEAT_S)
}

fn ready(lab: &Lab) {
    for h in HOSTS {
        lab.wait_tunnels(h, "lan1", 4, Duration::from_secs(15));
    }
    // Beacons need a moment to show where multicast works (auto mode).
    std::thread::sleep(Duration::from_secs(2));
}

fn flood(lab: &Lab, h: &str) -> Value {
    lab.status(h)["lans"][0]["flood"].clone()
}

/// Listen for UDP on `port` in a VM (optionally joined to `group`) for `secs`; returns the
/// payloads received.
fn listen(
    lab: &Lab,
    vm: &Vm,
    port: u16,
    group: Option<Ipv4Addr>,
    secs: u64,
) -> JoinHandle<Vec<Vec<u8>>> {
    let ip = vm.ip;
    let (tx, rx) = std::sync::mpsc::channel();
    let h = lab.in_ns(&vm.ns, move || {
        let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind listener");
        if let Some(g) = group {
            s.join_multicast_v4(&g, &ip).expect("join group");
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        tx.send(()).expect("ready");
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                got.push(buf[..n].to_vec());
            }
        }
        got
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("listener ready");
    h
}

/// Send one UDP datagram from a VM (broadcast or multicast, TTL 1).
fn send_from(lab: &Lab, vm: &Vm, to: SocketAddr, payload: Vec<u8>) {
    let ip = vm.ip;
    lab.in_ns(&vm.ns, move || {
        let s = UdpSocket::bind((ip, 0)).expect("bind sender");
        s.set_broadcast(true).expect("broadcast");
        s.set_multicast_ttl_v4(1).expect("ttl");
        s.send_to(&payload, to).expect("send");
    })
    .join()
    .expect("sender");
}

/// One broadcast from `from`: every other VM of the LAN hears it exactly once.
fn broadcast_exactly_once(lab: &Lab, from: &Vm, port: u16) {
    let others: Vec<Vm> = lab
        .vms()
        .iter()
        .filter(|v| v.ns != from.ns)
        .cloned()
        .collect();
    let listeners: Vec<(String, JoinHandle<Vec<Vec<u8>>>)> = others
        .iter()
        .map(|v| {
            (
                format!("{}:{}", v.host, v.ip),
                listen(lab, v, port, None, 2),
            )
        })
        .collect();
    let payload = format!("bcast from {} {}", from.ip, port).into_bytes();
    send_from(
        lab,
        from,
        SocketAddr::from(([192, 168, 100, 255], port)),
        payload.clone(),
    );
    for (who, h) in listeners {
        let got = h.join().expect("listener");
        let n = got.iter().filter(|p| **p == payload).count();
        assert_eq!(n, 1, "{who} heard the broadcast from {} {n} times", from.ip);
    }
}

#[test]
fn floods_reach_every_vm_once_and_arp_nd_dhcp_and_multicast_work() {
    let lab = two_subnets("fl1").ipv6().start();
    ready(&lab);
    // h1 reaches its own subnet by multicast and the other through its forwarder.
    let f = flood(&lab, "h1");
    assert_eq!(f["mode"], "auto");
    assert_eq!(f["subnets"][0]["mode"], "multicast", "{f:#}");
    assert_eq!(f["subnets"][1]["mode"], "relay", "{f:#}");

    // ARP across subnets, both ways.
    let (a, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h5", "lan1", 1).clone(),
    );
    for b in lab.vms().to_vec() {
        if b.ns != a.ns {
            assert!(lab.ping(&a, b.ip), "{} -> {}", a.ip, b.ip);
        }
        if b.ns != z.ns {
            assert!(lab.ping(&z, b.ip), "{} -> {}", z.ip, b.ip);
        }
    }

    // One broadcast frame: every other VM receives it exactly once, from either subnet.
    broadcast_exactly_once(&lab, lab.vm("h2", "lan1", 0), 9901);
    broadcast_exactly_once(&lab, lab.vm("h4", "lan1", 1), 9902);

    // IPv6 neighbour discovery (multicast solicitations) across subnets.
    for (x, y) in [("h1", "h4"), ("h5", "h3")] {
        let (vx, vy) = (lab.vm(x, "lan1", 0).clone(), lab.vm(y, "lan1", 1).clone());
        let to = vy.ip6.expect("ipv6 lab").to_string();
        let out = lab.exec(
            &vx.ns,
            &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "-q", &to],
        );
        assert!(
            out.status.success(),
            "ping -6 {x} -> {y}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // A multicast application inside the VMs: every subscribed VM gets the datagram once.
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let sender = lab.vm("h4", "lan1", 0).clone();
    let subscribers: Vec<Vm> = lab
        .vms()
        .iter()
        .filter(|v| v.ns != sender.ns)
        .cloned()
        .collect();
    let listeners: Vec<_> = subscribers
        .iter()
        .map(|v| (v.ip, listen(&lab, v, 5000, Some(group), 2)))
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // IGMP joins settle
    send_from(
        &lab,
        &sender,
        SocketAddr::from((group, 5000)),
        b"to the group".to_vec(),
    );
    for (ip, h) in listeners {
        let got = h.join().expect("listener");
        assert_eq!(
            got.iter()
                .filter(|p| p.as_slice() == b"to the group")
                .count(),
            1,
            "{ip}"
        );
    }

    // DHCP: dnsmasq in a VM of subnet 1 leases to VMs on hosts in both subnets.
    let server = lab.vm("h1", "lan1", 1).clone();
    let leases = lab.dir().join("dnsmasq.leases");
    let dnsmasq = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
        "/usr/sbin/dnsmasq"
    } else {
        "dnsmasq"
    };
    let mut child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &server.ns,
            dnsmasq,
            "--keep-in-foreground",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
        ])
        .args([
            "--dhcp-range=192.168.100.200,192.168.100.250,2m",
            "--no-resolv",
            "--no-hosts",
        ])
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dnsmasq (scripts/deps.sh installs dnsmasq-base)");
    std::thread::sleep(Duration::from_millis(500));
    let mut leased = Vec::new();
    for (h, j) in [("h3", 1), ("h5", 0)] {
        let v = lab.vm(h, "lan1", j).clone();
        let out = lab.exec(
            &v.ns,
            &[
                "busybox",
                "udhcpc",
                "-i",
                "eth0",
                "-n",
                "-q",
                "-f",
                "-t",
                "5",
                "-T",
                "1",
                "-s",
                "/bin/true",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("obtained"),
            "udhcpc on {h}: {text}"
        );
        leased.push(v.mac.clone());
    }
    let _ = child.kill();
    let _ = child.wait();
    let table = std::fs::read_to_string(&leases).unwrap_or_default();
    for mac in leased {
        assert!(table.contains(&mac), "no lease for {mac} in {table:?}");
    }

    // Counters: floods went by multicast and relay; forwarders passed frames on.
    let f1 = flood(&lab, "h1");
    assert!(
        f1["multicast_datagrams_total"].as_u64().unwrap_or(0) > 0,
        "{f1:#}"
    );
    assert!(
        f1["relay_datagrams_total"].as_u64().unwrap_or(0) > 0,
        "{f1:#}"
    );
    let relayed: u64 = HOSTS
        .iter()
        .map(|h| flood(&lab, h)["relayed_frames_total"].as_u64().unwrap_or(0))
        .sum();
    assert!(relayed > 0, "no forwarder passed anything on");
}

fn host_id(lab: &Lab, h: &str) -> u64 {
    lab.status(h)["host"]["id"].as_u64().expect("host id")
}

#[test]
fn when_the_second_subnets_forwarder_dies_broadcasts_reach_it_again() {
    let mut lab = two_subnets("fl2").start();
    ready(&lab);
    let df = if host_id(&lab, "h4") < host_id(&lab, "h5") {
        "h4"
    } else {
        "h5"
    };
    let survivor = if df == "h4" { "h5" } else { "h4" };
    let f = flood(&lab, "h1");
    assert!(
        f["subnets"][1]["forwarder"]
            .as_str()
            .is_some_and(|s| s.starts_with(df)),
        "{f:#}"
    );
    let sender = lab.vm("h2", "lan1", 0).clone();
    let target = lab.vm(survivor, "lan1", 0).clone();
    lab.kill(df);
    let killed = Instant::now();
    // Broadcast every 250 ms until the survivor's VM hears one (bounded: TTL + 4 s).
    let listener = listen(&lab, &target, 9903, None, TTL_S + 4);
    let mut sent = 0u32;
    while killed.elapsed() < Duration::from_secs(TTL_S + 4) {
        send_from(
            &lab,
            &sender,
            SocketAddr::from(([192, 168, 100, 255], 9903)),
            sent.to_be_bytes().to_vec(),
        );
        sent += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let got = listener.join().expect("listener");
    assert!(
        !got.is_empty(),
        "no broadcast reached {survivor} after {df} died"
    );
    // The first one heard tells when: it was sent at index × 250 ms after the kill.
    let first = got
        .iter()
        .filter_map(|p| p.as_slice().try_into().ok().map(u32::from_be_bytes))
        .min()
        .unwrap_or(u32::MAX);
    let after = Duration::from_millis(u64::from(first) * 250);
    eprintln!("broadcasts reach {survivor} again {after:?} after {df} was killed");
    assert!(
        after <= Duration::from_secs(TTL_S + 2),
        "took {after:?}, more than TTL + 2 s"
    );
    let f = flood(&lab, "h1");
    assert!(
        f["subnets"][1]["forwarder"]
            .as_str()
            .is_some_and(|s| s.starts_with(survivor)),
        "{f:#}"
    );
}

#[test]
fn a_subnet_without_multicast_still_gets_every_broadcast_once() {
    let lab = two_subnets("fl3").block_multicast(2).start();
    ready(&lab);
    std::thread::sleep(Duration::from_secs(2)); // beacons time out where nothing arrives
    let f4 = flood(&lab, "h4");
    assert_eq!(f4["subnets"][0]["mode"], "unicast", "{f4:#}");
    assert!(
        f4["subnets"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("h5")),
        "{f4:#}"
    );
    assert_eq!(flood(&lab, "h1")["subnets"][0]["mode"], "multicast");
    broadcast_exactly_once(&lab, lab.vm("h1", "lan1", 0), 9904);
    broadcast_exactly_once(&lab, lab.vm("h5", "lan1", 1), 9905);
}

#[test]
fn one_broadcast_costs_one_multicast_plus_one_copy_per_other_subnet() {
    // Auto: h1 sends 1 multicast + 1 relay to h4's subnet forwarder, which re-multicasts
    // once: 3 datagrams on all underlays. Unicast replication: one per other host, 4.
    let lab = two_subnets("fl4").start();
    ready(&lab);
    let from = lab.vm("h1", "lan1", 0).clone();
    let multicast = lab.flood_cost(&from, 500, Duration::from_millis(2)).0;
    drop(lab);
    let lab = two_subnets("fl5").flood("unicast").start();
    ready(&lab);
    let from = lab.vm("h1", "lan1", 0).clone();
    let unicast = lab.flood_cost(&from, 500, Duration::from_millis(2)).0;
    eprintln!("underlay datagrams per broadcast: multicast {multicast:.2}, unicast {unicast:.2}");
    assert!(
        (multicast - 3.0).abs() < 0.1,
        "multicast mode: {multicast:.2} datagrams per frame, expected 3"
    );
    assert!(
        (unicast - 4.0).abs() < 0.1,
        "unicast mode: {unicast:.2} datagrams per frame, expected 4"
    );
}
