//! `Lab`: hosts, VMs and routers as network namespaces, running the real `vmvpn` binary.
//!
//! Topology: one router namespace holds a Linux bridge per physical subnet (10.77.S.0/24,
//! the router is .254 and forwards between subnets; no multicast routing). Each host is a
//! namespace with an underlay veth on its subnet's bridge, a bridge per LAN that holds the
//! daemon's TAP, and VM namespaces on veths into that bridge, as with a hypervisor.
//!
//! Every name carries a prefix unique to the lab, so tests run in parallel; `Drop` stops
//! the daemons by their recorded PIDs and deletes every namespace it made, even when the
//! test fails (then it prints the daemons' logs and keeps them on disk).

pub mod browser;
pub mod linkem;
pub mod soak;

pub use browser::Browser;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn::api::control::{self, ControlRequest};

/// Data port of every lab host.
pub const PORT: u16 = 7401;
/// Where hosts serve Prometheus metrics, inside their namespaces (`.metrics()`).
pub const METRICS_PORT: u16 = 9401;
/// Where dashboards listen without a login: the bulletin's in the router namespace, each
/// host's in its own.
pub const WEB_LOCAL: &str = "127.0.0.1:8080";
/// Where the bulletin's dashboard listens with HTTPS and a login (the router's address).
pub const WEB_REMOTE: &str = "10.77.1.254:8443";
/// The lab dashboard's password (`[web]`, user `admin`).
pub const WEB_PASSWORD: &str = "lab dashboard password";
/// The bulletin's port (on the router's 10.77.1.254).
pub const BULLETIN_PORT: u16 = 7400;
/// The etcd cluster of `LabBuilder::shared_bulletins`, on the router's loopback: members,
/// the first one's client and peer ports (the others' follow).
pub const ETCD_MEMBERS: usize = 3;
/// `[bulletin] return_after_s` of the hosts of `LabBuilder::shared_bulletins`.
pub const RETURN_AFTER_S: u64 = 25;
const ETCD_CLIENT_PORT: u16 = 23790;
const ETCD_PEER_PORT: u16 = 23800;

/// A well-formed fingerprint that is not `fp`.
fn wrong_fingerprint(fp: &str) -> String {
    let last = if fp.ends_with('0') { '1' } else { '0' };
    format!("{}{last}", &fp[..fp.len() - 1])
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fail loudly unless we can build namespaces: these tests never pass by skipping.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the namespace tests need root (network namespaces, TAP devices); run `sudo bash scripts/test.sh`, \
         or `cargo test --workspace --exclude vmvpn-tests` for the unit tests alone"
    );
    for tool in ["ip", "ping"] {
        let ok = Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "`{tool}` is missing: run scripts/deps.sh (installs iproute2 and iputils-ping)"
        );
    }
}

/// Path of the `vmvpn` binary under test.
pub fn vmvpn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VMVPN_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("debug").join("vmvpn");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p vmvpn`), or set VMVPN_BIN",
        bin.display()
    );
    bin
}

/// Run a command, panicking with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A VM: a namespace with `eth0` on its host's LAN bridge.
#[derive(Debug, Clone)]
pub struct Vm {
    /// Namespace name.
    pub ns: String,
    /// Host it runs on.
    pub host: String,
    /// LAN it is on.
    pub lan: String,
    /// IPv4 address on the LAN.
    pub ip: Ipv4Addr,
    /// MAC of eth0.
    pub mac: String,
    /// IPv6 address, in labs built with `.ipv6()`.
    pub ip6: Option<std::net::Ipv6Addr>,
}

struct LanDef {
    name: String,
    /// First three octets of the LAN's /24.
    net: [u8; 3],
    hosts: Vec<String>,
    vms: usize,
}

/// Builds a [`Lab`].
pub struct LabBuilder {
    tag: String,
    subnets: Vec<Vec<String>>,
    lans: Vec<LanDef>,
    wrong_secret: Vec<(String, String)>,
    wrong_fingerprint: Vec<String>,
    expect_exit: Vec<String>,
    bulletin: Option<(u64, u64)>,
    /// Two bulletins on one etcd (`LabBuilder::shared_bulletins`).
    shared: bool,
    ipv6: bool,
    flood: Option<String>,
    block_multicast: Vec<usize>,
    metrics: bool,
    web: bool,
    tails: Vec<(String, String)>,
    host_lines: Vec<(String, String)>,
    emulated: Vec<(String, String, String)>,
    telemetry: String,
    alarm_rules: Option<String>,
    alarms: String,
    cipher: Option<String>,
    no_offload: bool,
    realtime: bool,
    threads: Option<u8>,
    extra_peers: usize,
    router_rules: Option<String>,
    router_mtu: Option<u32>,
    env: Vec<(String, String)>,
    later: Vec<String>,
    nat: Vec<(usize, String)>,
}

impl LabBuilder {
    /// Put physical subnet `subnet` (1-based; not 1, the public one) behind a router of
    /// its own that masquerades with `options` ("" or "fully-random"), as a home or
    /// branch router does: its WAN side is `10.77.1.24S` on the public subnet 1, new
    /// connections from outside are dropped, and the subnet's private addresses are not
    /// routed from elsewhere. With any NAT, the bulletin runs in a namespace of its own on
    /// subnet 1 (`10.77.1.250`), so what passes through it can be counted.
    pub fn nat(mut self, subnet: usize, options: &str) -> Self {
        assert!(subnet > 1, "subnet 1 is the public side");
        self.nat.push((subnet, options.to_string()));
        self
    }

    /// Set `key=value` in the environment of every daemon (hosts and bulletin).
    pub fn daemon_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Put a link emulator (`vmvpn-linkem`) on `host`'s underlay link, in its own
    /// namespace between the host and the router, impairing what the host sends (`out`)
    /// and receives (`inbound`) from the start, e.g. `"delay=20ms"`, `"loss=0.05"`, `""`.
    /// [`Lab::impair`] changes it later.
    pub fn emulate(mut self, host: &str, out: &str, inbound: &str) -> Self {
        self.emulated
            .push((host.into(), out.into(), inbound.into()));
        self
    }

    /// nftables rules (`nft -f` text) loaded in the router before any daemon starts, e.g.
    /// a link that drops what is larger than 1400 bytes, IP fragments and ICMP.
    pub fn router_rules(mut self, rules: &str) -> Self {
        self.router_rules = Some(rules.into());
        self
    }

    /// The MTU of the router's links into every subnet (hosts keep 1500): a smaller link
    /// on the path between subnets.
    pub fn router_mtu(mut self, mtu: u32) -> Self {
        self.router_mtu = Some(mtu);
        self
    }

    /// `[host] realtime = true` on every host (the data plane on SCHED_FIFO).
    pub fn realtime(mut self) -> Self {
        self.realtime = true;
        self
    }

    /// `[host] threads = n` on every host (2: the data plane's send thread).
    pub fn threads(mut self, n: u8) -> Self {
        self.threads = Some(n);
        self
    }

    /// `[host] offload = false` on every host (one frame per TAP read and UDP send).
    pub fn no_offload(mut self) -> Self {
        self.no_offload = true;
        self
    }

    /// List `n` more static peers on every host, at unreachable addresses (10.77.200.0/24
    /// and up): peer-table entries that never come up, for memory measurements.
    pub fn extra_peers(mut self, n: usize) -> Self {
        self.extra_peers = n;
        self
    }

    /// `[[lan]] cipher = NAME` on every host ("aes-256-gcm" when not set).
    pub fn cipher(mut self, name: &str) -> Self {
        self.cipher = Some(name.into());
        self
    }

    /// Extra `[telemetry]` keys for every host, e.g. `"probes = false\n"`.
    pub fn telemetry(mut self, toml: &str) -> Self {
        self.telemetry.push_str(toml);
        self
    }

    /// An alarm rules file for every host (`[alarms] rules`, at [`Lab::alarm_rules_path`]).
    pub fn alarm_rules(mut self, rules: &str) -> Self {
        self.alarm_rules = Some(rules.into());
        self
    }

    /// More `[alarms]` keys for every host; `{dir}` becomes the lab's directory.
    pub fn alarms(mut self, toml: &str) -> Self {
        self.alarms.push_str(toml);
        self
    }

    /// Run a bulletin in the router namespace (lease `ttl_s`, heartbeat `heartbeat_s`); hosts
    /// then list no static peers and find each other through it.
    pub fn bulletin(mut self, ttl_s: u64, heartbeat_s: u64) -> Self {
        self.bulletin = Some((ttl_s, heartbeat_s));
        self
    }

    /// Two bulletins in the router namespace serving one registry in etcd (a cluster of
    /// [`ETCD_MEMBERS`] started there on loopback), sharing one state directory (one fingerprint); hosts
    /// list both, the first one first. Needs [`LabBuilder::bulletin`].
    pub fn shared_bulletins(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Give `host` a fingerprint that is not the bulletin's.
    pub fn wrong_fingerprint(mut self, host: &str) -> Self {
        self.wrong_fingerprint.push(host.into());
        self
    }

    /// Give VMs IPv6 (fd00:100::N/64) and leave IPv6 on everywhere (noisier LANs).
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// Serve Prometheus metrics on 127.0.0.1:9401 inside every host's namespace.
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Dashboards: the bulletin's on [`WEB_LOCAL`] (plain HTTP, no login) and
    /// [`WEB_REMOTE`] (HTTPS, the login of `[web]`: user `admin`, [`Lab::web_password`]),
    /// and every host's on [`WEB_LOCAL`] in its own namespace.
    pub fn web(mut self) -> Self {
        self.web = true;
        self
    }

    /// One more line in `host`'s `[host]` section (`{dir}` is the lab's directory).
    pub fn host_line(mut self, host: &str, line: &str) -> Self {
        self.host_lines.push((host.into(), line.into()));
        self
    }

    /// More config for `host` (whole sections, e.g. `[export.sflow]`), at the end of its
    /// file.
    pub fn config_tail(mut self, host: &str, toml: &str) -> Self {
        self.tails.push((host.into(), toml.into()));
        self
    }

    /// `[[lan]] flood = MODE` on every host ("auto" when not set).
    pub fn flood(mut self, mode: &str) -> Self {
        self.flood = Some(mode.into());
        self
    }

    /// Let no multicast through the underlay bridge of subnet `n` (1-based), as in a
    /// cloud network without multicast.
    pub fn block_multicast(mut self, n: usize) -> Self {
        self.block_multicast.push(n);
        self
    }

    /// Do not wait for `host` to come up: it is expected to exit (see [`Lab::wait_exit`]).
    pub fn expect_exit(mut self, host: &str) -> Self {
        self.expect_exit.push(host.into());
        self
    }

    /// Add a physical subnet with these hosts.
    pub fn subnet(mut self, hosts: &[&str]) -> Self {
        self.subnets
            .push(hosts.iter().map(|h| h.to_string()).collect());
        self
    }

    /// Add a LAN (`net` = first three octets of its /24) on these hosts, `vms` VMs each.
    pub fn lan(mut self, name: &str, net: [u8; 3], hosts: &[&str], vms: usize) -> Self {
        self.lans.push(LanDef {
            name: name.into(),
            net,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            vms,
        });
        self
    }

    /// Leave LAN `name` out of the hosts' configs (its bridges and VMs are made, and the
    /// bulletin serves it): each host's `[[lan]]` section for it is written to
    /// `{dir}/{host}-{name}.toml` instead, for a test to add with a reload.
    pub fn lan_later(mut self, name: &str) -> Self {
        self.later.push(name.into());
        self
    }

    /// Give `host` a different secret for `lan` than everyone else.
    pub fn wrong_secret(mut self, host: &str, lan: &str) -> Self {
        self.wrong_secret.push((host.into(), lan.into()));
        self
    }

    /// Create everything and start the daemons.
    pub fn start(self) -> Lab {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // The owner PID in the name lets scripts/test.sh sweep labs of a killed run.
        let prefix = format!("vmvt-{}-{}-{n}", std::process::id(), self.tag);
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut lab = Lab {
            prefix,
            dir,
            bin: vmvpn_bin(),
            namespaces: Vec::new(),
            hosts: BTreeMap::new(),
            vms: Vec::new(),
            router: String::new(),
            bulletin: None,
            env: self.env.clone(),
            ipv6: self.ipv6,
            emulators: BTreeMap::new(),
            nat_routers: BTreeMap::new(),
            bulletin_ns: String::new(),
            second: None,
            etcd: Vec::new(),
        };
        lab.build(&self);
        let fingerprint = self
            .bulletin
            .map(|(ttl, hb)| lab.start_bulletin_first(&self, ttl, hb));
        lab.write_configs(&self, fingerprint.as_deref());
        for h in lab.hosts.keys().cloned().collect::<Vec<_>>() {
            lab.start_daemon(&h);
        }
        for h in lab.hosts.keys().cloned().collect::<Vec<_>>() {
            if !self.expect_exit.contains(&h) {
                lab.wait_ready(&h);
            }
        }
        lab.fit_vm_mtus(&self.later);
        if lab.ipv6 {
            lab.wait_dad();
        }
        lab
    }
}

struct Host {
    ns: String,
    ip: Ipv4Addr,
    index: usize,
    child: Option<Child>,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

/// A running lab. Dropping it removes everything.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    bin: PathBuf,
    namespaces: Vec<String>,
    hosts: BTreeMap<String, Host>,
    vms: Vec<Vm>,
    router: String,
    bulletin: Option<BulletinProc>,
    /// Set in every daemon's environment.
    env: Vec<(String, String)>,
    ipv6: bool,
    /// Link emulators by host: (namespace, process).
    emulators: BTreeMap<String, (String, Option<Child>)>,
    /// NAT routers by subnet (1-based).
    nat_routers: BTreeMap<usize, String>,
    /// Where the bulletin runs: the router, or a namespace of its own in NAT labs.
    bulletin_ns: String,
    /// The second bulletin of `shared_bulletins`.
    second: Option<BulletinProc>,
    /// The etcd members of `shared_bulletins`.
    etcd: Vec<Option<Child>>,
}

/// The lab's bulletin.
struct BulletinProc {
    child: Option<Child>,
    listen: String,
    state_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    fingerprint: String,
    /// `--web` listeners.
    web: Vec<String>,
    /// `--store`.
    store: Option<String>,
}

/// A ping of `count` echoes, 20 a second (1 s to answer each), from namespace `ns` to `to`,
/// in a thread of its own: (transmitted, received, the sequence numbers never answered),
/// so that a failure says when (echo N left N × 50 ms after the start).
pub fn ping_in_background(
    ns: String,
    to: Ipv4Addr,
    count: u32,
) -> std::thread::JoinHandle<(u64, u64, Vec<u64>)> {
    std::thread::spawn(move || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "ping", "-n", "-i", "0.05"])
            .args(["-W", "1", "-c", &count.to_string(), &to.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("ping: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("ping said: {text}"));
        let n: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        let answered: std::collections::BTreeSet<u64> = text
            .lines()
            .filter_map(|l| l.split("icmp_seq=").nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse().ok())
            .collect();
        let missing = (1..=n[0]).filter(|q| !answered.contains(q)).collect();
        (n[0], n[1], missing)
    })
}

/// `setsockopt` of an int on a socket, which must succeed.
pub fn set_int(
    s: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) {
    // SAFETY: an int option on an open socket, passed by pointer with its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt {level}/{name}: {}",
        std::io::Error::last_os_error()
    );
}

/// CPU time (user and system) of processes so far, in clock ticks (1/100 s); a process
/// that is gone counts 0.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Resident memory of a process in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Path of the link emulator (beside `vmvpn`).
pub fn linkem_bin() -> PathBuf {
    let bin = vmvpn_bin().with_file_name("vmvpn-linkem");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --workspace --bins`)",
        bin.display()
    );
    bin
}

/// Path of the `bulletin` binary under test (beside `vmvpn`, or `BULLETIN_BIN`).
pub fn bulletin_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BULLETIN_BIN") {
        return PathBuf::from(p);
    }
    let bin = vmvpn_bin().with_file_name("bulletin");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --workspace --bins`)",
        bin.display()
    );
    bin
}

/// What a [`Lab::watch_alerts`] run saw: every pending or firing alert, once per
/// (host, alert, labels), with the time it was first seen and the largest value.
#[derive(Debug, Default, Clone)]
pub struct AlertsSeen {
    /// `host alert state {labels} value=… summary` lines, first-seen order.
    pub lines: Vec<String>,
    /// How many times every host's alerts were read.
    pub polls: u64,
}

impl Lab {
    /// Poll every host's `vmvpn alerts --json` once a second until `stop` is set; what
    /// was pending or firing at any poll. For "the default rules stay quiet" checks.
    pub fn watch_alerts(&self, hosts: &[&str], stop: &AtomicBool) -> AlertsSeen {
        let t0 = Instant::now();
        let mut seen = AlertsSeen::default();
        let mut keys = std::collections::BTreeSet::new();
        while !stop.load(Ordering::SeqCst) {
            for h in hosts {
                let out = self.vmvpn_cli(h, &["alerts", "--json"]);
                let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
                    continue;
                };
                for a in v.as_array().into_iter().flatten() {
                    let state = a["state"].as_str().unwrap_or("");
                    if state != "pending" && state != "firing" {
                        continue;
                    }
                    let key = format!("{h} {} {}", a["alert"], a["labels"]);
                    if keys.insert(key) {
                        seen.lines.push(format!(
                            "{:>6.1}s {h} {} {state} value={} {}",
                            t0.elapsed().as_secs_f64(),
                            a["alert"].as_str().unwrap_or(""),
                            a["value"],
                            a["annotations"]["summary"].as_str().unwrap_or("")
                        ));
                    }
                }
            }
            seen.polls += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        seen
    }
}

impl Lab {
    /// Start describing a lab; `tag` names it in namespace names (keep it short).
    pub fn builder(tag: &str) -> LabBuilder {
        LabBuilder {
            tag: tag.into(),
            subnets: Vec::new(),
            lans: Vec::new(),
            wrong_secret: Vec::new(),
            wrong_fingerprint: Vec::new(),
            expect_exit: Vec::new(),
            bulletin: None,
            shared: false,
            ipv6: false,
            flood: None,
            block_multicast: Vec::new(),
            router_rules: None,
            router_mtu: None,
            env: Vec::new(),
            later: Vec::new(),
            metrics: false,
            web: false,
            tails: Vec::new(),
            host_lines: Vec::new(),
            emulated: Vec::new(),
            telemetry: String::new(),
            alarm_rules: None,
            alarms: String::new(),
            cipher: None,
            no_offload: false,
            realtime: false,
            threads: None,
            extra_peers: 0,
            nat: Vec::new(),
        }
    }

    fn add_ns(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
        // Quiet LANs unless asked: no IPv6 autoconfiguration noise where frames are counted.
        if !self.ipv6 {
            self.sysctl(name, "net/ipv6/conf/default/disable_ipv6", "1");
            self.sysctl(name, "net/ipv6/conf/all/disable_ipv6", "1");
        }
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) {
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("echo {value} > /proc/sys/{key}"),
        ]);
    }

    fn build(&mut self, b: &LabBuilder) {
        let router = format!("{}-r", self.prefix);
        self.add_ns(&router);
        self.router = router.clone();
        self.sysctl(&router, "net/ipv4/ip_forward", "1");
        if let Some(rules) = &b.router_rules {
            let f = self.dir.join("router.nft");
            std::fs::write(&f, rules).unwrap_or_else(|e| panic!("write {}: {e}", f.display()));
            run(&[
                "ip",
                "netns",
                "exec",
                &router,
                "nft",
                "-f",
                &f.display().to_string(),
            ]);
        }
        self.bulletin_ns = router.clone();
        let mut host_index = 0;
        for (si, hosts) in b.subnets.iter().enumerate() {
            let s = si as u8 + 1;
            let br = format!("br{s}");
            let router = match b.nat.iter().find(|(n, _)| *n == si + 1) {
                Some((_, options)) => self.nat_router(si + 1, options),
                None => router.clone(),
            };
            // A MAC of its own: a bridge without one takes its ports' lowest, so a port
            // added later (`add_client`, `attach_public`) could change the router's MAC
            // under the hosts' ARP entries for .254, cutting them off from the router and
            // the bulletin for the 5 to 10 s Linux takes to find it again (seen: leases
            // lapsing in `lockout.rs` when the attacker's port came in).
            let mac = format!("02:77:00:00:{s:02x}:fe");
            run(&[
                "ip", "-n", &router, "link", "add", &br, "address", &mac, "type", "bridge",
            ]);
            addr_up(&router, &br, &format!("10.77.{s}.254/24"));
            if let Some(mtu) = b.router_mtu {
                run(&[
                    "ip",
                    "-n",
                    &router,
                    "link",
                    "set",
                    &br,
                    "mtu",
                    &mtu.to_string(),
                ]);
            }
            for (k, h) in hosts.iter().enumerate() {
                host_index += 1;
                let ns = format!("{}-{h}", self.prefix);
                self.add_ns(&ns);
                let ip = Ipv4Addr::new(10, 77, s, k as u8 + 1);
                let port = format!("p{host_index}");
                if let Some((_, out, inbound)) = b.emulated.iter().find(|e| &e.0 == h) {
                    // host u0 <-> e0 [emulator] e1 <-> router port
                    let emu = format!("{}-x{host_index}", self.prefix);
                    self.add_ns(&emu);
                    run(&[
                        "ip", "link", "add", "u0", "netns", &ns, "type", "veth", "peer", "name",
                        "e0", "netns", &emu,
                    ]);
                    run(&[
                        "ip", "link", "add", "e1", "netns", &emu, "type", "veth", "peer", "name",
                        &port, "netns", &router,
                    ]);
                    for e in ["e0", "e1"] {
                        run(&["ip", "-n", &emu, "link", "set", e, "promisc", "on", "up"]);
                    }
                    self.emulators.insert(h.clone(), (emu, None));
                    self.impair(h, out, inbound);
                } else {
                    run(&[
                        "ip", "link", "add", "u0", "netns", &ns, "type", "veth", "peer", "name",
                        &port, "netns", &router,
                    ]);
                }
                run(&[
                    "ip", "-n", &router, "link", "set", &port, "master", &br, "up",
                ]);
                if b.block_multicast.contains(&(si + 1)) {
                    // No snooping (nothing learned) and no flooding of multicast: none passes.
                    run(&[
                        "ip",
                        "-n",
                        &router,
                        "link",
                        "set",
                        &br,
                        "type",
                        "bridge",
                        "mcast_snooping",
                        "0",
                    ]);
                    run(&[
                        "ip",
                        "netns",
                        "exec",
                        &router,
                        "bridge",
                        "link",
                        "set",
                        "dev",
                        &port,
                        "mcast_flood",
                        "off",
                    ]);
                }
                underlay_up(&ns, &format!("{ip}/24"), s);
                let socket = self.dir.join(format!("{h}.sock"));
                let config = self.dir.join(format!("{h}.toml"));
                let log = self.dir.join(format!("{h}.log"));
                self.hosts.insert(
                    h.clone(),
                    Host {
                        ns,
                        ip,
                        index: host_index,
                        child: None,
                        socket,
                        config,
                        log,
                    },
                );
            }
        }
        if !b.nat.is_empty() {
            let ns = format!("{}-b", self.prefix);
            self.add_ns(&ns);
            self.attach_public(&ns, "u0", "b0", "10.77.1.250/24");
            self.bulletin_ns = ns;
        }
        // Secrets and configs.
        for lan in &b.lans {
            write_secret(&self.dir.join(format!("{}.key", lan.name)));
            write_secret(&self.dir.join(format!("{}-wrong.key", lan.name)));
        }
        // LAN bridges and VMs.
        let mut vms = Vec::new();
        for (li, lan) in b.lans.iter().enumerate() {
            for h in &lan.hosts {
                let host = &self.hosts[h];
                let (hns, hidx) = (host.ns.clone(), host.index);
                let br = format!("br{li}");
                // No IGMP snooping on the VM side: the LAN's multicast goes everywhere, as on a
                // plain switch (hypervisor bridges are commonly set up so).
                run(&[
                    "ip",
                    "-n",
                    &hns,
                    "link",
                    "add",
                    &br,
                    "type",
                    "bridge",
                    "mcast_snooping",
                    "0",
                ]);
                run(&["ip", "-n", &hns, "link", "set", &br, "up"]);
                for j in 0..lan.vms {
                    let ns = format!("{}-{h}-{li}-{j}", self.prefix);
                    vms.push((
                        ns,
                        hns.clone(),
                        br.clone(),
                        h.clone(),
                        lan.name.clone(),
                        li,
                        hidx,
                        j,
                        lan.net,
                    ));
                }
            }
        }
        // Readable addresses (.HJ: host H, VM J, +100 per LAN) while they fit in a /24;
        // numbered in order otherwise, so a large lab never repeats an address.
        let readable = vms
            .iter()
            .all(|v| v.5 * 100 + v.6 * 10 + v.7 < 254 && v.6 < 10 && v.7 < 9);
        let mut seq: BTreeMap<usize, usize> = BTreeMap::new();
        for (ns, hns, br, h, lan, li, hidx, j, net) in vms {
            let n = seq.entry(li).or_insert(0);
            *n += 1;
            let octet = if readable {
                li * 100 + hidx * 10 + j + 1
            } else {
                *n
            };
            assert!(octet < 255, "more than 254 VMs on LAN {lan}");
            self.add_ns(&ns);
            let port = format!("v{li}x{j}");
            run(&[
                "ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hns,
            ]);
            run(&["ip", "-n", &hns, "link", "set", &port, "master", &br, "up"]);
            let mac = format!("02:00:{li:02x}:{hidx:02x}:00:{j:02x}");
            // Distinct per LAN too, so LANs that share a segment have no address in common.
            let ip = Ipv4Addr::new(net[0], net[1], net[2], octet as u8);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "address", &mac]);
            addr_up(&ns, "eth0", &format!("{ip}/24"));
            let ip6 = self.ipv6.then(|| format!("fd00:{}::{octet}", 100 + li));
            if let Some(a) = &ip6 {
                run(&[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{a}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ]);
            }
            self.vms.push(Vm {
                ns,
                host: h,
                lan,
                ip,
                mac,
                ip6: ip6.and_then(|a| a.parse().ok()),
            });
        }
    }

    /// The NAT router of subnet `subnet`: a namespace whose WAN port is on the public
    /// subnet 1, masquerading what leaves there with `options`.
    fn nat_router(&mut self, subnet: usize, options: &str) -> String {
        let ns = format!("{}-n{subnet}", self.prefix);
        self.add_ns(&ns);
        self.sysctl(&ns, "net/ipv4/ip_forward", "1");
        self.attach_public(
            &ns,
            "wan",
            &format!("n{subnet}"),
            &format!("10.77.1.{}/24", 240 + subnet),
        );
        let rules = format!(
            "table ip nat {{\n  chain post {{\n    type nat hook postrouting priority 100;\n    oifname \"wan\" masquerade {options}\n  }}\n}}\n\
             table inet firewall {{\n  chain input {{\n    type filter hook input priority 0;\n    iifname \"wan\" ct state new drop\n  }}\n  \
             chain forward {{\n    type filter hook forward priority 0;\n    iifname \"wan\" ct state new drop\n  }}\n}}\n"
        );
        let f = self.dir.join(format!("nat{subnet}.nft"));
        std::fs::write(&f, rules).unwrap_or_else(|e| panic!("write {}: {e}", f.display()));
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "-f",
            &f.display().to_string(),
        ]);
        self.nat_routers.insert(subnet, ns.clone());
        ns
    }

    /// Give namespace `ns` a port `dev` on the public subnet 1 (the router's `br1`, its
    /// other end `port` there) at `cidr`, routed through the router.
    fn attach_public(&mut self, ns: &str, dev: &str, port: &str, cidr: &str) {
        // Subnet 1 comes first, so its bridge is there.
        let router = self.router.clone();
        run(&[
            "ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns",
            &router,
        ]);
        run(&[
            "ip", "-n", &router, "link", "set", port, "master", "br1", "up",
        ]);
        routed_up(ns, dev, cidr, "10.77.1.254");
    }

    /// The NAT router of subnet `subnet` (1-based).
    pub fn nat_ns(&self, subnet: usize) -> &str {
        self.nat_routers
            .get(&subnet)
            .unwrap_or_else(|| panic!("subnet {subnet} has no NAT"))
    }

    /// The namespace the bulletin runs in.
    pub fn bulletin_ns(&self) -> &str {
        &self.bulletin_ns
    }

    fn write_configs(&self, b: &LabBuilder, fingerprint: Option<&str>) {
        for (h, host) in &self.hosts {
            let mut cfg = format!(
                "[host]\nname = \"{h}\"\naddress = \"{}/24\"\nport = {PORT}\ncontrol_socket = \"{}\"\n{}",
                host.ip,
                host.socket.display(),
                if b.metrics {
                    format!("metrics = \"127.0.0.1:{METRICS_PORT}\"\n")
                } else {
                    String::new()
                }
            );
            if b.web {
                cfg += &format!("web = \"{WEB_LOCAL}\"\n");
            }
            if b.no_offload {
                cfg += "offload = false\n";
            }
            for (_, l) in b.host_lines.iter().filter(|(x, _)| x == h) {
                cfg += &format!("{}\n", l.replace("{dir}", &self.dir.display().to_string()));
            }
            if b.realtime {
                cfg += "realtime = true\n";
            }
            if let Some(n) = b.threads {
                cfg += &format!("threads = {n}\n");
            }
            if !b.telemetry.is_empty() {
                cfg += &format!("\n[telemetry]\n{}", b.telemetry);
            }
            if b.alarm_rules.is_some() || !b.alarms.is_empty() {
                cfg += "\n[alarms]\n";
            }
            if let Some(rules) = &b.alarm_rules {
                let p = self.alarm_rules_path();
                std::fs::write(&p, rules).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                cfg += &format!("rules = \"{}\"\n", p.display());
            }
            cfg += &b.alarms.replace("{dir}", &self.dir.display().to_string());
            for (li, lan) in b
                .lans
                .iter()
                .enumerate()
                .filter(|(_, l)| l.hosts.contains(h))
            {
                // With a bulletin, no static peers: membership comes from the registry.
                let mut peers: Vec<String> = lan
                    .hosts
                    .iter()
                    .filter(|p| *p != h && fingerprint.is_none())
                    .map(|p| format!("\"{}:{PORT}\"", self.hosts[p].ip))
                    .collect();
                peers.extend(
                    (0..b.extra_peers)
                        .map(|k| format!("\"10.77.{}.{}:{PORT}\"", 200 + k / 250, 1 + k % 250)),
                );
                let wrong = b
                    .wrong_secret
                    .iter()
                    .any(|(wh, wl)| wh == h && *wl == lan.name);
                let key = self.dir.join(format!(
                    "{}{}.key",
                    lan.name,
                    if wrong { "-wrong" } else { "" }
                ));
                let mut section = format!(
                    "\n[[lan]]\nname = \"{}\"\nsegment = \"{}.{}.{}.0/24\"\ntap = \"tap{li}\"\nbridge = \"br{li}\"\nsecret_file = \"{}\"\npeers = [{}]\nflood = \"{}\"\n",
                    lan.name,
                    lan.net[0],
                    lan.net[1],
                    lan.net[2],
                    key.display(),
                    peers.join(", "),
                    b.flood.as_deref().unwrap_or("auto")
                );
                if let Some(c) = &b.cipher {
                    section += &format!("cipher = \"{c}\"\n");
                }
                if b.later.contains(&lan.name) {
                    let p = self.dir.join(format!("{h}-{}.toml", lan.name));
                    std::fs::write(&p, section)
                        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
                } else {
                    cfg += &section;
                }
            }
            if let Some(fp) = fingerprint {
                let listen = self.bulletin.as_ref().map_or("", |b| b.listen.as_str());
                let fp = if b.wrong_fingerprint.contains(h) {
                    wrong_fingerprint(fp)
                } else {
                    fp.to_string()
                };
                match self.second.as_ref().map(|b| b.listen.as_str()) {
                    Some(second) => {
                        cfg += &format!(
                            "\n[bulletin]\nservers = [\"{listen}\", \"{second}\"]\nfingerprint = \"{fp}\"\nreturn_after_s = {RETURN_AFTER_S}\n"
                        );
                    }
                    None => {
                        cfg += &format!(
                            "\n[bulletin]\nserver = \"{listen}\"\nfingerprint = \"{fp}\"\n"
                        );
                    }
                }
            }
            for (_, t) in b.tails.iter().filter(|(x, _)| x == h) {
                cfg += &format!("\n{t}\n");
            }
            std::fs::write(&host.config, cfg).unwrap_or_else(|e| panic!("write config: {e}"));
        }
    }

    /// Start the bulletin for the first time: write its config, wait for its fingerprint.
    fn start_bulletin_first(&mut self, b: &LabBuilder, ttl: u64, hb: u64) -> String {
        // The operator token lets the lab read every LAN (`bulletin ls`, `matrix`).
        let token = self.dir.join("operator.key");
        write_secret(&token);
        let mut cfg = format!(
            "lease_ttl_s = {ttl}\nheartbeat_s = {hb}\noperator_token_file = \"{}\"\n",
            token.display()
        );
        for lan in &b.lans {
            let text = std::fs::read_to_string(self.dir.join(format!("{}.key", lan.name)))
                .unwrap_or_default();
            let secret =
                bulletin::proof::parse_secret(&text).unwrap_or_else(|e| panic!("lab secret: {e}"));
            let v = bulletin::proof::Verifier::from_secret(&secret).to_base64();
            cfg += &format!("\n[[lan]]\nname = \"{}\"\nverifier = \"{v}\"\n", lan.name);
        }
        let mut web = Vec::new();
        if b.web {
            let pw = self.dir.join("web.password");
            std::fs::write(&pw, format!("{WEB_PASSWORD}\n"))
                .unwrap_or_else(|e| panic!("write web password: {e}"));
            cfg += &format!(
                "\n[web]\nuser = \"admin\"\npassword_file = \"{}\"\n",
                pw.display()
            );
            web = vec![WEB_LOCAL.to_string()];
            // The remote listener's address is the router's side of subnet 1, where the
            // bulletin sits unless the lab has NAT (then in a namespace of its own).
            if b.nat.is_empty() {
                web.push(WEB_REMOTE.to_string());
            }
        }
        let config = self.dir.join("bulletin.toml");
        std::fs::write(&config, cfg).unwrap_or_else(|e| panic!("write bulletin config: {e}"));
        self.bulletin = Some(BulletinProc {
            child: None,
            listen: if b.nat.is_empty() {
                format!("10.77.1.254:{BULLETIN_PORT}")
            } else {
                format!("10.77.1.250:{BULLETIN_PORT}")
            },
            state_dir: self.dir.join("bulletin-state"),
            config,
            log: self.dir.join("bulletin.log"),
            fingerprint: String::new(),
            web,
            store: b.shared.then(Lab::etcd_url),
        });
        if b.shared {
            self.start_etcd();
        }
        self.start_bulletin();
        let state = self
            .bulletin
            .as_ref()
            .map(|b| b.state_dir.clone())
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new(bulletin_bin())
                .args(["fingerprint", "--state-dir"])
                .arg(&state)
                .output();
            if let Ok(o) = out
                && o.status.success()
            {
                let fp = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if let Some(b) = self.bulletin.as_mut() {
                    b.fingerprint = fp.clone();
                }
                if b.shared {
                    self.start_second_first(&fp);
                }
                return fp;
            }
            assert!(
                Instant::now() < deadline,
                "bulletin did not start:\n{}",
                self.bulletin_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The second bulletin of `shared_bulletins`: the first's state directory copied (one
    /// certificate, one fingerprint), its config, the next port.
    fn start_second_first(&mut self, fp: &str) {
        let Some(first) = self.bulletin.as_ref() else {
            return;
        };
        let state_dir = self.dir.join("bulletin2-state");
        run(&[
            "cp",
            "-a",
            &first.state_dir.display().to_string(),
            &state_dir.display().to_string(),
        ]);
        let ip = first.listen.rsplit_once(':').map_or("", |(ip, _)| ip);
        self.second = Some(BulletinProc {
            child: None,
            listen: format!("{ip}:{}", BULLETIN_PORT + 1),
            state_dir,
            config: first.config.clone(),
            log: self.dir.join("bulletin2.log"),
            fingerprint: fp.to_string(),
            web: Vec::new(),
            store: first.store.clone(),
        });
        self.start_second_bulletin();
    }

    /// (Re)start the bulletin with its state dir, so its fingerprint stays the same.
    pub fn start_bulletin(&mut self) {
        let router = self.bulletin_ns.clone();
        let env = self.env.clone();
        let b = self
            .bulletin
            .as_mut()
            .unwrap_or_else(|| panic!("this lab has no bulletin"));
        spawn_bulletin(&router, b, &env);
    }

    /// (Re)start the second bulletin of [`LabBuilder::shared_bulletins`].
    pub fn start_second_bulletin(&mut self) {
        let router = self.bulletin_ns.clone();
        let env = self.env.clone();
        let b = self
            .second
            .as_mut()
            .unwrap_or_else(|| panic!("this lab has no second bulletin"));
        spawn_bulletin(&router, b, &env);
    }

    /// SIGKILL the second bulletin.
    pub fn kill_second_bulletin(&mut self) {
        if let Some(mut c) = self.second.as_mut().and_then(|b| b.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The second bulletin's log.
    pub fn second_bulletin_log(&self) -> String {
        self.second
            .as_ref()
            .and_then(|b| std::fs::read_to_string(&b.log).ok())
            .unwrap_or_default()
    }

    /// The second bulletin's address.
    pub fn second_bulletin_addr(&self) -> Option<&str> {
        self.second.as_ref().map(|b| b.listen.as_str())
    }

    /// Start the lab's etcd cluster, three members on the router's loopback (or those
    /// not running, again on their data), and wait until it serves.
    pub fn start_etcd(&mut self) {
        let etcd = Command::new("etcd")
            .arg("--version")
            .output()
            .map(|_| PathBuf::from("etcd"))
            .unwrap_or_else(|e| {
                panic!("etcd is missing ({e}): scripts/deps.sh installs etcd-server")
            });
        let cluster = (0..ETCD_MEMBERS)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", ETCD_PEER_PORT + i as u16))
            .collect::<Vec<_>>()
            .join(",");
        self.etcd.resize_with(ETCD_MEMBERS, || None);
        for i in 0..ETCD_MEMBERS {
            if self.etcd[i].is_some() {
                continue;
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(format!("etcd-m{i}.log")))
                .unwrap_or_else(|e| panic!("log: {e}"));
            let peer = format!("http://127.0.0.1:{}", ETCD_PEER_PORT + i as u16);
            let client = format!("http://127.0.0.1:{}", ETCD_CLIENT_PORT + i as u16);
            let args: Vec<std::ffi::OsString> = vec![
                "--name".into(),
                format!("m{i}").into(),
                "--data-dir".into(),
                self.dir.join(format!("etcd-m{i}")).into(),
                "--listen-client-urls".into(),
                client.clone().into(),
                "--advertise-client-urls".into(),
                client.into(),
                "--listen-peer-urls".into(),
                peer.clone().into(),
                "--initial-advertise-peer-urls".into(),
                peer.into(),
                "--initial-cluster".into(),
                cluster.clone().into(),
                "--initial-cluster-token".into(),
                self.prefix.clone().into(),
            ];
            let child = spawn_in_ns(&self.bulletin_ns, &etcd, &args, log, &[]);
            let _ = std::fs::write(
                self.dir.join(format!("etcd-m{i}.pid")),
                child.id().to_string(),
            );
            self.etcd[i] = Some(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}/health");
        loop {
            let out = self.exec(
                &self.bulletin_ns,
                &["curl", "-sf", "--max-time", "1", &health],
            );
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("true") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not start: {}",
                std::fs::read_to_string(self.dir.join("etcd-m0.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `--store` URL of the lab's etcd cluster.
    pub fn etcd_url() -> String {
        let members: Vec<String> = (0..ETCD_MEMBERS)
            .map(|i| format!("127.0.0.1:{}", ETCD_CLIENT_PORT + i as u16))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// SIGKILL etcd member `i` of the lab's cluster.
    pub fn kill_etcd_member(&mut self, i: usize) {
        if let Some(mut c) = self.etcd.get_mut(i).and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT every etcd member running: a store that stops
    /// answering without closing anything.
    pub fn pause_etcd(&self, stop: bool) {
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        for c in self.etcd.iter().flatten() {
            // SAFETY: kill(2) on a PID this lab started and still holds (not yet waited for).
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    /// SIGKILL every etcd member.
    pub fn kill_etcd(&mut self) {
        for i in 0..self.etcd.len() {
            self.kill_etcd_member(i);
        }
    }
}

/// Start a bulletin in `ns` as `b` describes it, appending to its log.
fn spawn_bulletin(ns: &str, b: &mut BulletinProc, env: &[(String, String)]) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&b.log)
        .unwrap_or_else(|e| panic!("log: {e}"));
    let mut args: Vec<std::ffi::OsString> = ["serve", "--listen", b.listen.as_str(), "--state-dir"]
        .map(Into::into)
        .into();
    args.extend([
        b.state_dir.clone().into(),
        "--config".into(),
        b.config.clone().into(),
    ]);
    for w in &b.web {
        args.extend(["--web".into(), w.into()]);
    }
    if let Some(s) = &b.store {
        args.extend(["--store".into(), s.into()]);
    }
    let child = spawn_in_ns(ns, &bulletin_bin(), &args, log, env);
    let _ = std::fs::write(b.log.with_extension("pid"), child.id().to_string());
    b.child = Some(child);
}

impl Lab {
    /// (Re)start `host`'s link emulator with these impairments (`delay=20ms,loss=0.05`;
    /// empty: none). `out` is the host's sending direction, `inbound` its receiving one.
    /// Counters start from zero.
    pub fn impair(&mut self, host: &str, out: &str, inbound: &str) {
        let dir = self.dir.clone();
        let (ns, child) = self
            .emulators
            .get_mut(host)
            .unwrap_or_else(|| panic!("{host} has no link emulator (LabBuilder::emulate)"));
        if let Some(mut c) = child.take() {
            let _ = terminate(&mut c, Duration::from_secs(5));
        }
        let stats = dir.join(format!("linkem-{host}.json"));
        let _ = std::fs::remove_file(&stats);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("linkem-{host}.log")))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let args: Vec<std::ffi::OsString> = vec![
            "--a".into(),
            "e0".into(),
            "--b".into(),
            "e1".into(),
            "--a-to-b".into(),
            out.into(),
            "--b-to-a".into(),
            inbound.into(),
            "--stats".into(),
            stats.clone().into(),
        ];
        let c = spawn_in_ns(ns, &linkem_bin(), &args, log, &[]);
        let _ = std::fs::write(dir.join(format!("linkem-{host}.pid")), c.id().to_string());
        *child = Some(c);
        // Ready once it has written its first counters.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stats.exists() {
            assert!(
                Instant::now() < deadline,
                "link emulator of {host} did not start: {}",
                std::fs::read_to_string(dir.join(format!("linkem-{host}.log"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The link emulator's counters: `{"a_to_b": {...}, "b_to_a": {...}}` where a_to_b is
    /// the host's sending direction.
    pub fn linkem_stats(&self, host: &str) -> Value {
        let p = self.dir.join(format!("linkem-{host}.json"));
        let text =
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("linkem stats: {e}"))
    }

    /// A host's config file.
    pub fn config_path(&self, h: &str) -> PathBuf {
        self.hosts[h].config.clone()
    }

    /// The alarm rules file of [`LabBuilder::alarm_rules`].
    pub fn alarm_rules_path(&self) -> PathBuf {
        self.dir.join("alarms.toml")
    }

    /// SIGHUP a host's daemon (it reloads its alarm rules), by its recorded PID.
    pub fn hup(&self, h: &str) {
        let pid = self.pid(h);
        // SAFETY: kill(2) on a PID this lab started and still holds (not yet waited for).
        let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
        assert_eq!(
            r,
            0,
            "SIGHUP {h} ({pid}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// A host's alerts (`vmvpn alerts --json`).
    pub fn alerts(&self, h: &str) -> Value {
        let out = self.vmvpn_cli(h, &["alerts", "--json"]);
        assert!(
            out.status.success(),
            "vmvpn alerts on {h}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("alerts JSON: {e}"))
    }

    /// SIGKILL the bulletin (a crash).
    pub fn kill_bulletin(&mut self) {
        if let Some(mut c) = self.bulletin.as_mut().and_then(|b| b.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The bulletin's PID, while it runs.
    pub fn bulletin_pid(&self) -> Option<u32> {
        self.bulletin
            .as_ref()
            .and_then(|b| b.child.as_ref())
            .map(Child::id)
    }

    /// Whether a host's daemon runs (as far as this lab started it).
    pub fn running(&self, h: &str) -> bool {
        self.hosts.get(h).is_some_and(|x| x.child.is_some())
    }

    /// The bulletin's log.
    pub fn bulletin_log(&self) -> String {
        self.bulletin
            .as_ref()
            .and_then(|b| std::fs::read_to_string(&b.log).ok())
            .unwrap_or_default()
    }

    /// The router's namespace.
    pub fn router_ns(&self) -> &str {
        &self.router
    }

    /// The bulletin's address and certificate fingerprint, when the lab has one.
    pub fn bulletin_addr(&self) -> Option<(&str, &str)> {
        self.bulletin
            .as_ref()
            .map(|b| (b.listen.as_str(), b.fingerprint.as_str()))
    }

    /// The operator token file of the lab's bulletin.
    pub fn operator_token(&self) -> PathBuf {
        self.dir.join("operator.key")
    }

    /// `bulletin ls --json`, run in the router namespace with the real CLI.
    pub fn bulletin_ls(&self) -> Value {
        let out = self.bulletin_cli(&["ls", "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bulletin ls JSON: {e}"))
    }

    /// Run the real `bulletin` CLI (`ls`, `matrix`, …) against the lab's bulletin, in the
    /// router namespace; its stdout (panics if it fails).
    pub fn bulletin_cli(&self, args: &[&str]) -> String {
        let b = self
            .bulletin
            .as_ref()
            .unwrap_or_else(|| panic!("this lab has no bulletin"));
        let out = Command::new("ip")
            .args(["netns", "exec", &self.router])
            .arg(bulletin_bin())
            .args(args)
            .args(["--server", &b.listen, "--fingerprint", &b.fingerprint])
            .arg("--token-file")
            .arg(self.operator_token())
            .output()
            .unwrap_or_else(|e| panic!("bulletin {args:?}: {e}"));
        assert!(
            out.status.success(),
            "bulletin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run the real `vmvpn` CLI against a host's daemon (`--socket` added); its output.
    pub fn vmvpn_cli(&self, h: &str, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .arg("--socket")
            .arg(self.socket(h))
            .output()
            .unwrap_or_else(|e| panic!("vmvpn {args:?}: {e}"))
    }

    /// Run iperf3 from VM `from` to VM `to` (server started for one test, stopped by its
    /// PID): the client's JSON report. `args` go to the client (`-t 8`, `-u -b 40M`, …).
    pub fn iperf3(&self, from: &Vm, to: &Vm, args: &[&str]) -> Value {
        let mut server = Command::new("ip")
            .args(["netns", "exec", &to.ns, "iperf3", "-s", "-1", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("iperf3 is missing ({e}): run scripts/deps.sh"));
        // The server listens within a moment; the client retries its connect briefly too.
        std::thread::sleep(Duration::from_millis(300));
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &from.ns,
                "iperf3",
                "-c",
                &to.ip.to_string(),
                "-p",
                "5201",
                "-J",
            ])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("iperf3 client: {e}"));
        if terminate(&mut server, Duration::from_secs(2)).is_none() {
            eprintln!("lab: iperf3 server needed SIGKILL");
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "iperf3 gave no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Host `h`'s status entry for its peer named `peer` on `lan`.
    pub fn peer(&self, h: &str, lan: &str, peer: &str) -> Value {
        let st = self.status(h);
        st["lans"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == lan))
            .and_then(|l| l["peers"].as_array())
            .and_then(|ps| ps.iter().find(|p| p["name"] == peer))
            .cloned()
            .unwrap_or_else(|| panic!("{h} has no peer {peer} on {lan}:\n{st:#}"))
    }

    /// `count` pings from VM `from` to `to`, `interval` seconds apart, quiet output; the
    /// load is bounded by the count and the interval.
    pub fn ping_burst(&self, from: &Vm, to: Ipv4Addr, count: u32, interval: &str) -> Output {
        self.exec(
            &from.ns,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "1",
                &to.to_string(),
            ],
        )
    }

    /// The PID of a host's daemon.
    pub fn pid(&self, h: &str) -> u32 {
        self.hosts[h]
            .child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("vmvpn on {h} is not running"))
    }

    /// SIGKILL a host's daemon (a crash: no unregister).
    pub fn kill(&mut self, h: &str) {
        let host = self
            .hosts
            .get_mut(h)
            .unwrap_or_else(|| panic!("no host {h}"));
        if let Some(mut c) = host.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for a host's daemon to exit by itself; its exit status.
    pub fn wait_exit(&mut self, h: &str, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let host = self
                .hosts
                .get_mut(h)
                .unwrap_or_else(|| panic!("no host {h}"));
            let c = host
                .child
                .as_mut()
                .unwrap_or_else(|| panic!("{h} is not running"));
            if let Ok(Some(st)) = c.try_wait() {
                host.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{h} still running after {within:?}:\n{}",
                self.log(h)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_daemon(&mut self, h: &str) {
        let bin = self.bin.clone();
        let host = self
            .hosts
            .get_mut(h)
            .unwrap_or_else(|| panic!("no host {h}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&host.log)
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let args: Vec<std::ffi::OsString> =
            vec!["up".into(), "--config".into(), host.config.clone().into()];
        let child = spawn_in_ns(&host.ns, &bin, &args, log, &self.env);
        // Recorded so a sweep after a killed test run can stop it by PID.
        let _ = std::fs::write(host.log.with_extension("pid"), child.id().to_string());
        host.child = Some(child);
    }

    fn wait_ready(&mut self, h: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.try_status(h).is_some() {
                return;
            }
            let host = self
                .hosts
                .get_mut(h)
                .unwrap_or_else(|| panic!("no host {h}"));
            if let Some(Ok(Some(st))) = host.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "vmvpn on {h} exited with {st} during start:\n{}",
                    self.log(h)
                );
            }
            assert!(
                Instant::now() < deadline,
                "vmvpn on {h} did not answer within 10 s:\n{}",
                self.log(h)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Give each VM the MTU of its host's TAP, as an operator must (DHCP option 26 or the
    /// VM's config): a bridge drops frames larger than the port they leave by.
    /// LANs in `later` are not running yet: their VMs keep their MTU.
    fn fit_vm_mtus(&self, later: &[String]) {
        for vm in self.vms.iter().filter(|v| !later.contains(&v.lan)) {
            // Hosts expected to exit have no status to read.
            let Some(st) = self.try_status(&vm.host) else {
                continue;
            };
            let mtu = st["lans"]
                .as_array()
                .and_then(|ls| ls.iter().find(|l| l["name"] == vm.lan.as_str()))
                .and_then(|l| l["mtu"].as_u64())
                .unwrap_or_else(|| panic!("no MTU for {} in {st:#}", vm.lan));
            run(&[
                "ip",
                "-n",
                &vm.ns,
                "link",
                "set",
                "eth0",
                "mtu",
                &mtu.to_string(),
            ]);
        }
    }

    /// Restart a stopped host's daemon and wait until it answers.
    pub fn restart(&mut self, h: &str) {
        self.start_daemon(h);
        self.wait_ready(h);
    }

    /// The daemon log of a host.
    pub fn log(&self, h: &str) -> String {
        self.hosts
            .get(h)
            .and_then(|x| std::fs::read_to_string(&x.log).ok())
            .unwrap_or_default()
    }

    /// VMs, in creation order.
    pub fn vms(&self) -> &[Vm] {
        &self.vms
    }

    /// VM `j` of `host` on `lan`.
    pub fn vm(&self, host: &str, lan: &str, j: usize) -> &Vm {
        self.vms
            .iter()
            .filter(|v| v.host == host && v.lan == lan)
            .nth(j)
            .unwrap_or_else(|| panic!("no VM {j} of {host} on {lan}"))
    }

    /// A host's namespace.
    pub fn host_ns(&self, h: &str) -> &str {
        &self.hosts[h].ns
    }

    /// A host's underlay address.
    pub fn host_ip(&self, h: &str) -> Ipv4Addr {
        self.hosts[h].ip
    }

    /// A host's control socket.
    pub fn socket(&self, h: &str) -> &Path {
        &self.hosts[h].socket
    }

    /// `vmvpn status --json` of a host, if it answers.
    pub fn try_status(&self, h: &str) -> Option<Value> {
        control::request(&self.hosts.get(h)?.socket, &ControlRequest::Status).ok()
    }

    /// `vmvpn status --json` of a host.
    pub fn status(&self, h: &str) -> Value {
        self.try_status(h)
            .unwrap_or_else(|| panic!("vmvpn on {h} does not answer:\n{}", self.log(h)))
    }

    /// Wait until no VM has a tentative IPv6 address. While a VM's link-local address is
    /// in duplicate address detection, Linux sends no neighbour solicitation (it has no
    /// source address for one), so the VM cannot resolve anyone for up to 2 s: a test's
    /// first connection then waits that long (seen: a backend's SYN-ACK reached the client
    /// 2 s late, after curl had given up). A real VM does this at boot, before any
    /// service of it answers.
    fn wait_dad(&self) {
        let t0 = Instant::now();
        for vm in &self.vms {
            loop {
                let out = self.exec(&vm.ns, &["ip", "-6", "addr", "show", "tentative"]);
                if out.status.success() && out.stdout.is_empty() {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "{}: IPv6 addresses still tentative after 10 s:\n{}",
                    vm.ns,
                    String::from_utf8_lossy(&out.stdout)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Where a host's frames may have been lost outside vmvpn's own drop counters, for a
    /// failure message: its TAPs' kernel counters, its underlay socket's errors, the
    /// receive queue (longest wait in the last second, CoDel drops) and the machine's
    /// per-CPU backlog drops.
    pub fn loss_report(&self, h: &str) -> String {
        let ns = self.host_ns(h);
        let links = self.exec(ns, &["ip", "-s", "-o", "link", "show", "type", "tun"]);
        let udp = self.exec(
            ns,
            &[
                "nstat",
                "-azs",
                "UdpRcvbufErrors",
                "UdpSndbufErrors",
                "UdpInErrors",
                "Udp6RcvbufErrors",
                "Udp6InErrors",
            ],
        );
        let queue = self.try_status(h).map(|s| s["queue"].clone());
        let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
        format!(
            "---- {h}: TAPs\n{}{}queue {}\nsoftnet_stat (column 2: backlog drops)\n{softnet}",
            String::from_utf8_lossy(&links.stdout),
            String::from_utf8_lossy(&udp.stdout),
            queue.map_or_else(|| "(no answer)".to_string(), |q| q.to_string()),
        )
    }

    /// `vmvpn macs --json` of a host.
    pub fn macs(&self, h: &str) -> Value {
        control::request(&self.hosts[h].socket, &ControlRequest::Macs { lan: None })
            .unwrap_or_else(|e| panic!("macs of {h}: {e}"))
    }

    /// Wait until `host` has `n` tunnels up on `lan`.
    pub fn wait_tunnels(&self, host: &str, lan: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let st = self.status(host);
            let up = st["lans"]
                .as_array()
                .and_then(|ls| ls.iter().find(|l| l["name"] == lan))
                .and_then(|l| l["peers"].as_array())
                .map_or(0, |ps| ps.iter().filter(|p| p["state"] == "up").count());
            if up >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{host}: {up} of {n} tunnels up on {lan} after {within:?}:\n{st:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A bare namespace on physical subnet `subnet` (1-based) at `10.77.<subnet>.<octet>`,
    /// with no daemon: an operator's or an attacker's machine. Removed with the lab.
    pub fn add_client(&mut self, name: &str, subnet: u8, octet: u8) -> String {
        let ns = format!("{}-{name}", self.prefix);
        self.add_ns(&ns);
        let port = format!("c{octet}");
        run(&[
            "ip",
            "link",
            "add",
            "u0",
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.router,
        ]);
        let br = format!("br{subnet}");
        run(&[
            "ip",
            "-n",
            &self.router,
            "link",
            "set",
            &port,
            "master",
            &br,
            "up",
        ]);
        underlay_up(&ns, &format!("10.77.{subnet}.{octet}/24"), subnet);
        ns
    }

    /// Run a command in a namespace.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {ns}: {e}"))
    }

    /// Whether `from` gets at least one echo reply from `to` (2 tries, 2 s timeout).
    pub fn ping(&self, from: &Vm, to: Ipv4Addr) -> bool {
        self.exec(
            &from.ns,
            &[
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                "-q",
                &to.to_string(),
            ],
        )
        .status
        .success()
    }

    /// An interface counter (`rx_packets`, `tx_bytes`, …) inside a namespace.
    pub fn if_counter(&self, ns: &str, ifname: &str, counter: &str) -> u64 {
        let out = self.exec(
            ns,
            &[
                "cat",
                &format!("/sys/class/net/{ifname}/statistics/{counter}"),
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no counter {counter} on {ifname} in {ns}"))
    }

    /// Run `f` on a thread that lives in namespace `ns` (sockets it opens are there).
    pub fn in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on this thread only, with a valid namespace file descriptor.
            let r =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// SIGTERM a host's daemon and wait for it to exit (at most 10 s).
    pub fn stop(&mut self, h: &str) -> ExitStatus {
        let host = self
            .hosts
            .get_mut(h)
            .unwrap_or_else(|| panic!("no host {h}"));
        let mut child = host
            .child
            .take()
            .unwrap_or_else(|| panic!("{h} is not running"));
        terminate(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("vmvpn on {h} ignored SIGTERM for 10 s"))
    }

    /// Datagrams and bytes all hosts sent on their underlay (`u0` counters).
    pub fn underlay_tx(&self) -> (u64, u64) {
        self.hosts.values().fold((0, 0), |(p, b), h| {
            (
                p + self.if_counter(&h.ns, "u0", "tx_packets"),
                b + self.if_counter(&h.ns, "u0", "tx_bytes"),
            )
        })
    }

    /// Underlay cost of a flooded frame: `n` UDP broadcasts from `from`, `gap` apart, counted
    /// on every host's underlay, less what the hosts send anyway (beacons, keepalives,
    /// heartbeats) over as long a quiet stretch right after. Keepalives come in bursts every
    /// 10 s, so with many hosts both stretches should span about 10 s. Returns (datagrams,
    /// bytes) per frame.
    pub fn flood_cost(&self, from: &Vm, n: u32, gap: Duration) -> (f64, f64) {
        let ip = from.ip;
        let (p0, b0) = self.underlay_tx();
        let t0 = Instant::now();
        self.in_ns(&from.ns, move || {
            let s = std::net::UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind: {e}"));
            s.set_broadcast(true)
                .unwrap_or_else(|e| panic!("broadcast: {e}"));
            let to = std::net::Ipv4Addr::from(u32::from(ip) | 0xff);
            // Paced: a flood is one frame among others, not a burst of 8000 datagrams that
            // would measure the socket buffer instead.
            for i in 0..n {
                s.send_to(&i.to_be_bytes(), (to, 9906))
                    .unwrap_or_else(|e| panic!("send: {e}"));
                std::thread::sleep(gap);
            }
        })
        .join()
        .unwrap_or_else(|_| panic!("sender thread"));
        std::thread::sleep(Duration::from_millis(300));
        let (p1, b1) = self.underlay_tx();
        std::thread::sleep(t0.elapsed());
        let (p2, b2) = self.underlay_tx();
        let packets = (p1 - p0).saturating_sub(p2 - p1);
        let bytes = (b1 - b0).saturating_sub(b2 - b1);
        (packets as f64 / f64::from(n), bytes as f64 / f64::from(n))
    }

    /// Whether an interface exists in a namespace.
    pub fn has_link(&self, ns: &str, ifname: &str) -> bool {
        self.exec(ns, &["ip", "link", "show", "dev", ifname])
            .status
            .success()
    }

    /// The lab's working directory (configs, keys, logs, sockets).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// SIGTERM, then wait; SIGKILL if it does not exit in time. Returns the exit status if it
/// exited by itself.
fn terminate(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Give `dev` in namespace `ns` the address `cidr` and bring it up.
fn addr_up(ns: &str, dev: &str, cidr: &str) {
    run(&["ip", "-n", ns, "addr", "add", cidr, "dev", dev]);
    run(&["ip", "-n", ns, "link", "set", dev, "up"]);
}

/// Address a namespace's underlay port `u0` on physical subnet `subnet`, routed through
/// the router's `10.77.<subnet>.254`.
fn underlay_up(ns: &str, cidr: &str, subnet: u8) {
    routed_up(ns, "u0", cidr, &format!("10.77.{subnet}.254"));
}

/// Address `dev` in `ns` and route everything else through `gateway`.
fn routed_up(ns: &str, dev: &str, cidr: &str, gateway: &str) {
    addr_up(ns, dev, cidr);
    run(&["ip", "-n", ns, "route", "add", "default", "via", gateway]);
}

/// Start `bin args…` in namespace `ns`, logging to `log`; the PID is the program's own
/// (`ip netns exec` execs it).
fn spawn_in_ns(
    ns: &str,
    bin: &Path,
    args: &[std::ffi::OsString],
    log: std::fs::File,
    env: &[(String, String)],
) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} in {ns}: {e}", bin.display()))
}

fn write_secret(path: &Path) {
    use base64::Engine as _;
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .unwrap_or_else(|_| panic!("rng failed"));
    std::fs::write(path, base64::engine::general_purpose::STANDARD.encode(b))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for (h, host) in self.hosts.iter_mut() {
            if let Some(mut c) = host.child.take()
                && terminate(&mut c, Duration::from_secs(5)).is_none()
            {
                eprintln!("lab: vmvpn on {h} needed SIGKILL");
            }
        }
        for b in [self.bulletin.as_mut(), self.second.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(mut c) = b.child.take() {
                let _ = terminate(&mut c, Duration::from_secs(5));
            }
        }
        for mut c in self.etcd.iter_mut().filter_map(Option::take) {
            let _ = terminate(&mut c, Duration::from_secs(5));
        }
        for (_, child) in self.emulators.values_mut() {
            if let Some(mut c) = child.take() {
                let _ = terminate(&mut c, Duration::from_secs(5));
            }
        }
        if failing {
            for h in self.hosts.keys() {
                eprintln!("---- log of vmvpn on {h} ----\n{}", self.log(h));
            }
            if self.bulletin.is_some() {
                eprintln!("---- log of the bulletin ----\n{}", self.bulletin_log());
            }
            if self.second.is_some() {
                eprintln!(
                    "---- log of the second bulletin ----\n{}",
                    self.second_bulletin_log()
                );
            }
        }
        // VMs first, then hosts, then the router: veths go with their namespaces.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if failing || std::env::var_os("VMVPN_LAB_KEEP").is_some() {
            eprintln!("lab: files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The demo's lab: h1 and h2 in 10.77.1.0/24, h3 behind the router in 10.77.2.0/24, a
/// bulletin, two VMs each on `lan1` (`net`.0/24), reports every second; returned once
/// every host has its two tunnels.
pub fn demo_lab(tag: &str, net: [u8; 3]) -> Lab {
    let lab = Lab::builder(tag)
        .subnet(&["h1", "h2"])
        .subnet(&["h3"])
        .lan("lan1", net, &["h1", "h2", "h3"], 2)
        .bulletin(30, 10)
        .telemetry("report_interval_s = 1\n")
        .start();
    for h in ["h1", "h2", "h3"] {
        lab.wait_tunnels(h, "lan1", 2, Duration::from_secs(10));
    }
    lab
}

/// The demo's traffic on the demo's lab (h1, h2 and h3 with VMs on `lan1`): every VM pings every other once,
/// then a full-speed iperf3 TCP stream (8 s) from a VM of h1 to one of h3. Pings that fail
/// are counted.
pub fn demo_traffic(lab: &Lab) -> usize {
    let vms = lab.vms().to_vec();
    let mut failed = 0;
    for a in &vms {
        for b in &vms {
            if a.ns != b.ns && !lab.ping(a, b.ip) {
                failed += 1;
            }
        }
    }
    let (a, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h3", "lan1", 1).clone(),
    );
    let _ = lab.iperf3(&a, &z, &["-t", "8"]);
    failed
}
