//! `vmvpn-bench`: vmvpn against the kernel and the packaged peer overlays, in one run.
//!
//! Two host namespaces joined by a veth pair (10.99.0.1 and .2). Each system puts its
//! overlay interface in both with 192.168.99.1 and .2, and is measured host to host over
//! it: iperf3 TCP with 1 and 4 streams, the 64-byte UDP rate without loss above 1 %, ping
//! RTT idle and under a saturating TCP stream, the daemons' CPU and RSS. Systems run one
//! after another in fresh namespaces, in interleaved rounds; every figure is also given as
//! a ratio to the direct veth of the same round. Processes are stopped by their PIDs and
//! the namespaces removed, also on failure.
//!
//! usage: vmvpn-bench OUT.json [--rounds N] [--seconds S] [--only a,b]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmvpn_tests::cpu_ticks;

/// The start of the error for a peer overlay whose package is missing.
const NOT_INSTALLED: &str = "not installed";
const A_IP: &str = "10.99.0.1";
const B_IP: &str = "10.99.0.2";
const A_OV: &str = "192.168.99.1";
const B_OV: &str = "192.168.99.2";

fn sh(ns: Option<&str>, cmd: &str) -> Result<String, String> {
    let mut c = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, "sh", "-c", cmd]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", cmd]);
            c
        }
    };
    let out = c.output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two hosts on a veth pair, and the processes started in them.
struct Topo {
    a: String,
    b: String,
    dir: PathBuf,
    procs: Vec<(String, Child)>,
}

impl Topo {
    fn new(tag: &str) -> Result<Topo, String> {
        let p = format!("vmvb-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&p);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let t = Topo {
            a: format!("{p}-a"),
            b: format!("{p}-b"),
            dir,
            procs: Vec::new(),
        };
        for ns in [&t.a, &t.b] {
            sh(
                None,
                &format!("ip netns add {ns} && ip -n {ns} link set lo up"),
            )?;
        }
        sh(
            None,
            &format!(
                "ip link add u0 netns {} type veth peer name u0 netns {} && \
                 ip -n {} addr add {A_IP}/24 dev u0 && ip -n {} link set u0 up && \
                 ip -n {} addr add {B_IP}/24 dev u0 && ip -n {} link set u0 up",
                t.a, t.b, t.a, t.a, t.b, t.b
            ),
        )?;
        Ok(t)
    }

    fn spawn(&mut self, name: &str, ns: &str, cmd: &str) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &format!("exec {cmd}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{cmd}: {e}"))?;
        let _ = std::fs::write(self.dir.join(format!("{name}.pid")), child.id().to_string());
        self.procs.push((name.to_string(), child));
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|(_, c)| c.id()).collect()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            // SAFETY: signalling a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, c) in &mut self.procs {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a system is set up: returns the addresses to measure between.
fn setup(sys: &str, t: &mut Topo, bin_dir: &Path) -> Result<(String, String), String> {
    let (a, b) = (t.a.clone(), t.b.clone());
    let dir = t.dir.clone();
    // The peer overlays come from Debian packages; a missing one is reported, not measured.
    let needs = match sys {
        "tinc 1.0 switch" => Some("tincd"),
        "OpenVPN 2.6 tap" => Some("openvpn"),
        "n2n 1.3" => Some("edge"),
        _ => None,
    };
    if let Some(bin) = needs
        && sh(None, &format!("command -v {bin} >/dev/null")).is_err()
    {
        return Err(format!(
            "{NOT_INSTALLED}: {bin} (scripts/bench.sh installs it)"
        ));
    }
    let ov = |ns: &str, dev: &str, ip: &str| {
        sh(
            Some(ns),
            &format!("ip addr add {ip}/24 dev {dev} && ip link set {dev} up"),
        )
    };
    match sys {
        "direct veth" => return Ok((A_IP.into(), B_IP.into())),
        "kernel VXLAN" => {
            for (ns, peer, ip) in [(&a, B_IP, A_OV), (&b, A_IP, B_OV)] {
                sh(
                    Some(ns),
                    &format!("ip link add vx0 type vxlan id 42 remote {peer} dstport 4789 dev u0"),
                )?;
                ov(ns, "vx0", ip)?;
            }
        }
        "vmvpn"
        | "vmvpn mtu 1418"
        | "vmvpn cipher none"
        | "vmvpn offload off"
        | "vmvpn realtime"
        | "vmvpn sflow+ipfix"
        | "vmvpn 2 threads"
        | "vmvpn 3 threads"
        | "vmvpn 4 threads"
        | "vmvpn 1 core"
        | "vmvpn 2 threads 1 core" => {
            let cipher = if sys == "vmvpn cipher none" {
                "none"
            } else {
                "aes-256-gcm"
            };
            let offload = sys != "vmvpn offload off";
            let realtime = sys == "vmvpn realtime";
            // Data-plane threads: the default ("auto": cores - 1, from 1 to 4) unless the row names
            // them; "1 core" runs each daemon under `taskset -c 0`.
            let threads = if sys.contains("2 threads") {
                "threads = 2\n"
            } else if sys.contains("3 threads") {
                "threads = 3\n"
            } else if sys.contains("4 threads") {
                "threads = 4\n"
            } else if sys.contains("1 core") {
                "threads = 1\n"
            } else {
                ""
            };
            let pin = if sys.ends_with("1 core") {
                "taskset -c 0 "
            } else {
                ""
            };
            // The default TAP is at MTU 1500 (frames that do not fit a datagram are cut into
            // overlay fragments, TCP's MSS is clamped); 1418 is what fits one datagram on a
            // 1500-byte underlay, the default before, kept to compare.
            let mtu = if sys == "vmvpn mtu 1418" {
                "mtu = 1418\n"
            } else {
                ""
            };
            // The exports' cost: sFlow 1 in 1000 and IPFIX, to collectors on the namespace's
            // loopback (nothing listens: the datagrams are made and sent all the same).
            let exports = if sys == "vmvpn sflow+ipfix" {
                "\n[export.sflow]\ncollectors = [\"127.0.0.1:6343\"]\nsampling_rate = 1000\n\
                 \n[export.ipfix]\ncollectors = [\"127.0.0.1:4739\"]\n"
            } else {
                ""
            };
            let key = dir.join("lan.key");
            let k = Command::new(bin_dir.join("vmvpn"))
                .arg("keygen")
                .output()
                .map_err(|e| e.to_string())?;
            std::fs::write(&key, &k.stdout).map_err(|e| e.to_string())?;
            for (ns, name, me, peer) in [(&a, "ha", A_IP, B_IP), (&b, "hb", B_IP, A_IP)] {
                let cfg = dir.join(format!("{name}.toml"));
                std::fs::write(
                    &cfg,
                    format!(
                        "[host]\nname = \"{name}\"\naddress = \"{me}/24\"\ncontrol_socket = \"{}\"\noffload = {offload}\nrealtime = {realtime}\n{threads}\n\
                         [[lan]]\nname = \"bench\"\nsegment = \"192.168.99.0/24\"\ntap = \"vm0\"\n\
                         secret_file = \"{}\"\npeers = [\"{peer}:7401\"]\ncipher = \"{cipher}\"\n{mtu}{exports}",
                        dir.join(format!("{name}.sock")).display(),
                        key.display()
                    ),
                )
                .map_err(|e| e.to_string())?;
                t.spawn(
                    name,
                    ns,
                    &format!(
                        "{pin}{} up --config {}",
                        bin_dir.join("vmvpn").display(),
                        cfg.display()
                    ),
                )?;
            }
            wait_for(|| {
                sh(Some(&a), "ip link show vm0").is_ok() && sh(Some(&b), "ip link show vm0").is_ok()
            })
            .map_err(|_| format!("no TAP: {}{}", t.log("ha"), t.log("hb")))?;
            ov(&a, "vm0", A_OV)?;
            ov(&b, "vm0", B_OV)?;
        }
        "tinc 1.0 switch" => {
            for (ns, name, other, ip) in [(&a, "ta", "tb", A_OV), (&b, "tb", "ta", B_OV)] {
                let d = dir.join(name);
                std::fs::create_dir_all(d.join("hosts")).map_err(|e| e.to_string())?;
                let connect = if name == "ta" {
                    format!("ConnectTo = {other}\n")
                } else {
                    String::new()
                };
                std::fs::write(
                    d.join("tinc.conf"),
                    format!(
                        "Name = {name}\nMode = switch\nDeviceType = tap\nInterface = tn0\n{connect}"
                    ),
                )
                .map_err(|e| e.to_string())?;
                std::fs::write(
                    d.join("tinc-up"),
                    format!(
                        "#!/bin/sh\nip addr add {ip}/24 dev $INTERFACE\nip link set $INTERFACE up\n"
                    ),
                )
                .map_err(|e| e.to_string())?;
                sh(None, &format!("chmod +x {}/tinc-up", d.display()))?;
                let addr = if name == "ta" { A_IP } else { B_IP };
                std::fs::write(d.join("hosts").join(name), format!("Address = {addr}\n"))
                    .map_err(|e| e.to_string())?;
                sh(
                    Some(ns),
                    &format!("tincd -c {} -K2048 </dev/null", d.display()),
                )?;
            }
            // Exchange host files (with the public keys).
            for (x, y) in [("ta", "tb"), ("tb", "ta")] {
                std::fs::copy(
                    dir.join(x).join("hosts").join(x),
                    dir.join(y).join("hosts").join(x),
                )
                .map_err(|e| e.to_string())?;
            }
            for (ns, name) in [(&a, "ta"), (&b, "tb")] {
                let d = dir.join(name);
                t.spawn(
                    name,
                    ns,
                    &format!("tincd -c {} -D --pidfile={}/pid", d.display(), d.display()),
                )?;
            }
        }
        "OpenVPN 2.6 tap" => {
            let pki = dir.join("pki");
            std::fs::create_dir_all(&pki).map_err(|e| e.to_string())?;
            let p = pki.display();
            sh(
                None,
                &format!(
                    "cd {p} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                     -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca 2>/dev/null && \
                     for n in a b; do openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                     -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null && \
                     openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 2 2>/dev/null; done"
                ),
            )?;
            for (ns, n, peer, ip, role) in [
                (&a, "a", B_IP, A_OV, "--tls-server"),
                (&b, "b", A_IP, B_OV, "--tls-client"),
            ] {
                t.spawn(
                    &format!("openvpn-{n}"),
                    ns,
                    &format!(
                        "openvpn --dev ov0 --dev-type tap --remote {peer} --port 1194 --proto udp \
                         {role} --ca {p}/ca.crt --cert {p}/{n}.crt --key {p}/{n}.key --dh none \
                         --data-ciphers AES-256-GCM --cipher AES-256-GCM --ifconfig {ip} 255.255.255.0 \
                         --verb 1 --ping 1"
                    ),
                )?;
            }
        }
        "n2n 1.3" => {
            t.spawn("supernode", &a, "supernode -l 7654")?;
            std::thread::sleep(Duration::from_millis(300));
            for (ns, n, ip) in [(&a, "a", A_OV), (&b, "b", B_OV)] {
                t.spawn(
                    &format!("edge-{n}"),
                    ns,
                    &format!("edge -d n2n0 -a {ip} -c bench -k benchkey -l {A_IP}:7654 -p 7655"),
                )?;
            }
        }
        other => return Err(format!("unknown system {other}")),
    }
    // Up when a ping gets through.
    let (a2, bip) = (a.clone(), B_OV.to_string());
    wait_for(move || sh(Some(&a2), &format!("ping -c1 -W1 {bip} >/dev/null")).is_ok()).map_err(
        |_| {
            format!(
                "{sys} did not come up; logs:\n{}",
                t.procs
                    .iter()
                    .map(|(n, _)| format!("-- {n}\n{}", t.log(n)))
                    .collect::<String>()
            )
        },
    )?;
    Ok((A_OV.into(), B_OV.into()))
}

fn wait_for(mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err("timed out".into())
}

/// iperf3 client from A to B's `server` address; the JSON report.
fn iperf(t: &mut Topo, server: &str, args: &str) -> Result<Value, String> {
    let srv = format!("iperf-{}", t.procs.len());
    t.spawn(&srv, &t.b.clone(), &format!("iperf3 -s -1 -B {server}"))?;
    std::thread::sleep(Duration::from_millis(300));
    let out = sh(Some(&t.a.clone()), &format!("iperf3 -c {server} -J {args}"));
    // The server exits after one test; if not, Topo's drop stops it.
    let out = out?;
    serde_json::from_str(&out).map_err(|e| format!("iperf3 JSON: {e}"))
}

fn ping_stats(out: &str) -> (f64, f64) {
    let mut v: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .filter_map(|t| t.parse().ok())
        .collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (q(0.5) * 1000.0, q(0.99) * 1000.0)
}

fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter().map(|p| vmvpn_tests::rss_kib(*p)).sum()
}

fn measure(sys: &str, secs: u64, bin_dir: &Path, round: usize) -> Result<Value, String> {
    let mut t = Topo::new(&format!("r{round}"))?;
    let (_, server) = setup(sys, &mut t, bin_dir)?;
    let daemons = t.pids();
    let idle = sh(
        Some(&t.a.clone()),
        &format!("ping -n -c 50 -i 0.02 {server}"),
    )?;
    let (idle_p50, idle_p99) = ping_stats(&idle);
    let rss_idle = rss_kib(&daemons);
    // One stream, with ping alongside (RTT under load) and the daemons' CPU.
    let c0 = cpu_ticks(&daemons);
    let a = t.a.clone();
    let srv2 = server.clone();
    // A ping every 0.1 s from 0.5 s in to 0.5 s before the transfer ends (40 in 5 s).
    let pings = (secs * 10).saturating_sub(10).max(5);
    let loaded = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        sh(Some(&a), &format!("ping -n -c {pings} -i 0.1 {srv2}")).unwrap_or_default()
    });
    let t0 = Instant::now();
    let one = iperf(&mut t, &server, &format!("-t {secs}"))?;
    let cpu = (cpu_ticks(&daemons) - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    let (load_p50, load_p99) = ping_stats(&loaded.join().unwrap_or_default());
    let four = iperf(&mut t, &server, &format!("-t {secs} -P 4"))?;
    let rss_load = rss_kib(&daemons);
    // 64-byte UDP: offered load lowered until the receiver loses at most 1 %.
    let mut rate = 0u64; // 0: unlimited
    let mut pps = 0.0;
    let mut loss = 100.0;
    for _ in 0..5 {
        let r = iperf(&mut t, &server, &format!("-u -l 64 -b {rate} -t 3"))?;
        let s = &r["end"]["sum"];
        let lost = s["lost_percent"].as_f64().unwrap_or(100.0);
        let recv = s["packets"].as_f64().unwrap_or(0.0) * (1.0 - lost / 100.0)
            / s["seconds"].as_f64().unwrap_or(3.0).max(0.1);
        pps = recv;
        loss = lost;
        if lost <= 1.0 {
            break;
        }
        // Offer 90 % of what arrived (in bits per second of payload).
        rate = (recv * 0.9 * 64.0 * 8.0) as u64;
    }
    let bps = |v: &Value| {
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
    };
    Ok(json!({
        "system": sys, "round": round,
        "tcp1_bps": bps(&one), "tcp4_bps": bps(&four),
        "tcp1_retransmits": one["end"]["sum_sent"]["retransmits"],
        "udp64_pps": pps, "udp64_loss_percent": loss,
        "rtt_idle_p50_us": idle_p50, "rtt_idle_p99_us": idle_p99,
        "rtt_load_p50_us": load_p50, "rtt_load_p99_us": load_p99,
        "daemon_cpu_cores": if daemons.is_empty() { Value::Null } else { json!(cpu) },
        "daemon_rss_idle_kib": if daemons.is_empty() { Value::Null } else { json!(rss_idle) },
        "daemon_rss_load_kib": if daemons.is_empty() { Value::Null } else { json!(rss_load) },
    }))
}

fn version(cmd: &str) -> String {
    sh(None, &format!("{cmd} 2>&1 | head -n1"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "not installed".into())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(out) = args.get(1).filter(|a| !a.starts_with('-')) else {
        eprintln!("usage: vmvpn-bench OUT.json [--rounds N] [--seconds S] [--only a,b]");
        return std::process::ExitCode::from(2);
    };
    let opt = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
    };
    let rounds: usize = opt("--rounds").and_then(|v| v.parse().ok()).unwrap_or(2);
    let secs: u64 = opt("--seconds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let bin_dir = vmvpn_tests::vmvpn_bin()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let all = [
        "direct veth",
        "kernel VXLAN",
        "vmvpn",
        "vmvpn mtu 1418",
        "vmvpn cipher none",
        "vmvpn offload off",
        "vmvpn realtime",
        "vmvpn sflow+ipfix",
        "vmvpn 2 threads",
        "vmvpn 3 threads",
        "vmvpn 4 threads",
        "vmvpn 1 core",
        "vmvpn 2 threads 1 core",
        "tinc 1.0 switch",
        "OpenVPN 2.6 tap",
        "n2n 1.3",
    ];
    let only: Option<Vec<String>> =
        opt("--only").map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let systems: Vec<&str> = all
        .iter()
        .copied()
        .filter(|s| {
            // A full name picks that system only ("vmvpn" is the default row); anything
            // else picks the systems it begins ("vmvpn m" picks "vmvpn mtu 1418").
            only.as_ref().is_none_or(|o| {
                o.iter().any(|x| {
                    if all.contains(&x.as_str()) {
                        s == x
                    } else {
                        s.starts_with(x.as_str())
                    }
                })
            })
        })
        .collect();
    let mut runs = Vec::new();
    let mut skipped = BTreeMap::new();
    let mut failed = BTreeMap::new();
    // Only a missing peer package may be passed over, and never under CI=true.
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    for round in 1..=rounds {
        for sys in &systems {
            eprintln!("round {round}: {sys}");
            match measure(sys, secs, &bin_dir, round) {
                Ok(v) => {
                    eprintln!(
                        "  tcp1 {:.3} Gbit/s, tcp4 {:.3}, udp64 {:.0} pps, rtt idle p50 {:.0} us",
                        v["tcp1_bps"].as_f64().unwrap_or(0.0) / 1e9,
                        v["tcp4_bps"].as_f64().unwrap_or(0.0) / 1e9,
                        v["udp64_pps"].as_f64().unwrap_or(0.0),
                        v["rtt_idle_p50_us"].as_f64().unwrap_or(0.0)
                    );
                    runs.push(v);
                }
                Err(e) if e.starts_with(NOT_INSTALLED) && !ci => {
                    eprintln!("  skipped: {e}");
                    skipped.insert(sys.to_string(), e);
                }
                Err(e) => {
                    eprintln!("  FAILED: {e}");
                    failed.insert(sys.to_string(), e);
                }
            }
        }
    }
    // Ratios to the direct veth of the same round, then medians over rounds.
    let med = |mut v: Vec<f64>| {
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let direct = |round: &Value, key: &str| {
        runs.iter()
            .find(|r| r["system"] == "direct veth" && r["round"] == *round)
            .and_then(|r| r[key].as_f64())
    };
    let mut summary = Vec::new();
    for sys in &systems {
        let mine: Vec<&Value> = runs.iter().filter(|r| r["system"] == *sys).collect();
        if mine.is_empty() {
            continue;
        }
        let get = |k: &str| med(mine.iter().filter_map(|r| r[k].as_f64()).collect());
        let ratio = |k: &str| {
            med(mine
                .iter()
                .filter_map(|r| Some(r[k].as_f64()? / direct(&r["round"], k)?))
                .collect())
        };
        summary.push(json!({
            "system": sys,
            "tcp1_gbps": get("tcp1_bps") / 1e9, "tcp1_x_direct": ratio("tcp1_bps"),
            "tcp4_gbps": get("tcp4_bps") / 1e9, "tcp4_x_direct": ratio("tcp4_bps"),
            "udp64_kpps": get("udp64_pps") / 1e3,
            "rtt_idle_p50_us": get("rtt_idle_p50_us"), "rtt_idle_p99_us": get("rtt_idle_p99_us"),
            "rtt_load_p50_us": get("rtt_load_p50_us"), "rtt_load_p99_us": get("rtt_load_p99_us"),
            "daemon_cpu_cores": get("daemon_cpu_cores"),
            "daemon_rss_idle_mib": get("daemon_rss_idle_kib") / 1024.0,
        }));
    }
    let date = sh(None, "date -u +%Y-%m-%dT%H:%MZ").unwrap_or_default();
    let kernel = sh(None, "uname -r").unwrap_or_default();
    let versions = json!({
        "vmvpn": version(&format!("{} --version", bin_dir.join("vmvpn").display())),
        "iperf3": version("iperf3 --version"),
        "tinc": version("tincd --version"),
        "openvpn": version("openvpn --version"),
        "n2n": version("edge -h"),
    });
    let doc = json!({
        "date": date.trim(), "kernel": kernel.trim(), "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rounds": rounds, "seconds": secs, "versions": versions,
        "summary": summary, "runs": runs, "skipped": skipped, "failed": failed,
    });
    let fmt = |v: &Value, scale: f64, prec: usize| {
        v.as_f64()
            .filter(|x| x.is_finite())
            .map_or("-".to_string(), |x| format!("{:.*}", prec, x * scale))
    };
    println!(
        "{} · kernel {} · {} cores · medians of {rounds} interleaved rounds, {secs} s per iperf3 test\n",
        date.trim(),
        kernel.trim(),
        doc["cores"]
    );
    println!(
        "| system | TCP 1 stream Gbit/s | × direct | TCP 4 streams Gbit/s | × direct | UDP 64 B kpps (≤1 % loss) | RTT p50 / p99 idle µs | RTT p50 / p99 loaded µs | daemon CPU (cores) | daemon RSS idle MiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for s in &summary {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} |",
            s["system"].as_str().unwrap_or(""),
            fmt(&s["tcp1_gbps"], 1.0, 3),
            fmt(&s["tcp1_x_direct"], 1.0, 3),
            fmt(&s["tcp4_gbps"], 1.0, 3),
            fmt(&s["tcp4_x_direct"], 1.0, 3),
            fmt(&s["udp64_kpps"], 1.0, 0),
            fmt(&s["rtt_idle_p50_us"], 1.0, 0),
            fmt(&s["rtt_idle_p99_us"], 1.0, 0),
            fmt(&s["rtt_load_p50_us"], 1.0, 0),
            fmt(&s["rtt_load_p99_us"], 1.0, 0),
            fmt(&s["daemon_cpu_cores"], 1.0, 2),
            fmt(&s["daemon_rss_idle_mib"], 1.0, 1),
        );
    }
    for (s, e) in &skipped {
        println!("\nskipped {s}: {}", e.lines().next().unwrap_or(""));
    }
    for (s, e) in &failed {
        println!("\nFAILED {s}: {}", e.lines().next().unwrap_or(""));
    }
    if let Err(e) = std::fs::write(out, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
        eprintln!("cannot write {out}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("vmvpn-bench: {} system(s) failed; see above", failed.len());
        std::process::ExitCode::FAILURE
    }
}
