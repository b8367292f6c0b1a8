//! VM names from libvirt, with the real `virsh` and libvirt's `test:///` driver (no
//! hypervisor, no daemon): a node file declares two domains with the MACs of h1's VMs;
//! h1's `vmvpn vms` shows their names and UUIDs, and a rate limit naming one of them
//! (`vm = "web1"`) is put in force on its MAC. h2's URI does not connect: h2 says why in
//! `vmvpn status`, and runs on without names. h1's Redis export carries the names too,
//! and `vmvpn vms` the domains' state (the only figure of `domstats` the driver gives).
//! A service whose backend is named `web1` reaches it from h2, whose libvirt does not
//! connect (h2 learns the MAC from h1's reports). On a lab with a bulletin, the names
//! reach `bulletin matrix`, both dashboards and sFlow (host structures).

use std::time::{Duration, Instant};

use serde_json::Value;
use vmvpn_tests::Lab;

/// A Redis server in the lab's router namespace, stopped by its PID even when the test
/// fails.
struct Redis(std::process::Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the node file even when the test fails.
struct Node(std::path::PathBuf);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node_xml(domains: &[(&str, Option<&str>, &str)]) -> String {
    let mut x = String::from("<node>\n");
    for (name, uuid, mac) in domains {
        x += &format!(
            "  <domain type='test'>\n    <name>{name}</name>\n{}    <memory>1048576</memory>\n    <os><type>hvm</type></os>\n    <devices>\n      <interface type='ethernet'><mac address='{mac}'/></interface>\n    </devices>\n  </domain>\n",
            uuid.map_or(String::new(), |u| format!("    <uuid>{u}</uuid>\n"))
        );
    }
    x + "</node>\n"
}

/// The bulletin lab's service (its LAN's segment), backend named by libvirt.
const SERVICE_B: &str =
    "[[lan.service]]\nname = \"web\"\naddress = \"192.168.88.200\"\nbackends = [\"web1\"]\n";

/// A service whose backend is named by its libvirt domain (on every host alike).
const SERVICE: &str =
    "[[lan.service]]\nname = \"web\"\naddress = \"192.168.82.200\"\nbackends = [\"web1\"]\n";

fn vms(lab: &Lab, h: &str) -> Vec<Value> {
    let out = lab.vmvpn_cli(h, &["vms", "--json"]);
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("vms --json on {h}: {e}"));
    v[0]["vms"].as_array().cloned().unwrap_or_default()
}

#[test]
fn vms_carry_their_libvirt_names_and_a_uri_that_fails_only_says_so() {
    vmvpn_tests::require_root();
    let status = std::process::Command::new("virsh")
        .arg("--version")
        .output();
    assert!(
        status.is_ok_and(|o| o.status.success()),
        "virsh is missing: run scripts/deps.sh (installs libvirt-clients)"
    );
    let dir = std::env::temp_dir().join(format!("vmvpn-libvirt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let node = Node(dir);
    let file = node.0.join("node.xml");
    // The lab's MACs: 02:00:<lan>:<host>:00:<vm>.
    let (web, db) = ("02:00:00:01:00:00", "02:00:00:01:00:01");
    std::fs::write(
        &file,
        node_xml(&[
            ("web1", Some("11111111-2222-3333-4444-555555555555"), web),
            ("db1", None, db),
        ]),
    )
    .expect("node file");
    let lab = Lab::builder("virt")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 82], &["h1", "h2"], 2)
        .config_tail(
            "h1",
            &format!(
                "[export.redis]\nurl = \"redis://10.77.1.254:6379\"\ninterval_s = 1\n\n[libvirt]\nuri = \"test://{}\"\nrefresh_s = 2\n\n[[lan.limit]]\nvm = \"web1\"\nrate_mbps = 10\n\n[[lan.limit]]\nvm = \"ghost\"\nrate_mbps = 10\n\n{SERVICE}",
                file.display()
            ),
        )
        .config_tail(
            "h2",
            &format!(
                "[libvirt]\nuri = \"test:///nonexistent/vmvpn-node.xml\"\nrefresh_s = 2\n\n{SERVICE}"
            ),
        )
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    let (a, b, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h1", "lan1", 1).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert_eq!(
        (a.mac.as_str(), b.mac.as_str()),
        (web, db),
        "the lab's MACs changed"
    );
    assert!(lab.ping(&a, z.ip) && lab.ping(&b, z.ip));

    let t0 = Instant::now();
    let rows = loop {
        let rows = vms(&lab, "h1");
        let named = |mac: &str| {
            rows.iter()
                .any(|r| r["mac"] == mac && r["name"].is_string())
        };
        // The limit naming web1 is sent to the data plane right after the names are read.
        let limited = lab.vmvpn_cli("h1", &["vms", "--json"]).stdout;
        let limited = serde_json::from_slice::<Value>(&limited).unwrap_or_default()[0]["limits"]
            .as_array()
            .is_some_and(|l| !l.is_empty());
        if named(web) && named(db) && limited {
            break rows;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no names on h1 within 20 s: {rows:#?}\nstatus: {}\n{}",
            lab.status("h1")["libvirt"],
            lab.log("h1")
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let row = |mac: &str| {
        rows.iter()
            .find(|r| r["mac"] == mac)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(row(web)["name"], "web1");
    assert_eq!(row(web)["uuid"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(row(db)["name"], "db1");
    // The domain's own figures: the test driver gives its state only (QEMU gives CPU,
    // memory and disks too).
    assert_eq!(row(web)["domain"]["state"], "running", "{rows:#?}");
    assert!(row(web)["domain"]["cpu_cores"].is_null());
    assert!(row(&z.mac)["domain"].is_null());
    assert!(row(db)["uuid"].is_string(), "the test driver makes one up");
    // h2's VM is not in h1's libvirt: it has no name here.
    assert!(row(&z.mac)["name"].is_null(), "{rows:#?}");
    let lv = &lab.status("h1")["libvirt"];
    assert_eq!(lv["domains"], 2, "{lv}");
    assert_eq!(lv["macs"], 2, "{lv}");
    assert!(lv["last_error"].is_null(), "{lv}");
    let text = String::from_utf8_lossy(&lab.vmvpn_cli("h1", &["vms"]).stdout).to_string();
    assert!(text.contains("NAME") && text.contains("web1"), "{text}");
    assert!(
        text.contains("Domains (libvirt)") && text.contains("running"),
        "{text}"
    );
    // The limit naming web1 is in force on its MAC; the one naming no VM waits, said so.
    let out = lab.vmvpn_cli("h1", &["vms", "--json"]);
    let all: Value = serde_json::from_slice(&out.stdout).expect("vms --json");
    let limits = all[0]["limits"].as_array().cloned().unwrap_or_default();
    assert_eq!(limits.len(), 1, "{limits:#?}");
    assert_eq!(
        (&limits[0]["mac"], &limits[0]["vm"]),
        (&Value::from(web), &Value::from("web1"))
    );
    assert_eq!(
        lv["unresolved_limits"],
        serde_json::json!(["ghost"]),
        "{lv}"
    );
    let r = lab.iperf3(&a, &z, &["-u", "-b", "50M", "-l", "1400", "-t", "4"]);
    let mbps = r["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_default()
        / 1e6;
    // 10 Mbit/s of whole frames is 9.7 of iperf3's payload.
    assert!(
        (9.2..=10.2).contains(&mbps),
        "web1 limited to 10 Mbit/s sent {mbps:.1}"
    );
    let text = String::from_utf8_lossy(&lab.vmvpn_cli("h1", &["status"]).stdout).to_string();
    assert!(text.contains("2 domains, 2 MACs named"), "{text}");

    // The service's backend "web1": h1 resolves it through libvirt; h2, whose libvirt
    // does not connect, learns its MAC from h1's service reports. A ping from h2's VM to
    // the service address goes to web1, which holds the address on its loopback and
    // answers directly.
    for cmd in [
        &["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1"][..],
        &["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_announce=2"],
        &["ip", "addr", "add", "192.168.82.200/32", "dev", "lo"],
    ] {
        let out = lab.exec(&a.ns, cmd);
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }
    let backend = |h: &str| {
        let out = lab.vmvpn_cli(h, &["services", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["services"][0]["backends"][0].clone()
    };
    let t0 = Instant::now();
    while !(backend("h2")["mac"] == web && backend("h2")["state"] == "up") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "h2 never learned web1: {}\nh1: {}",
            backend("h2"),
            backend("h1")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let b1 = backend("h1");
    assert_eq!(
        (&b1["backend"], &b1["mac"], &b1["location"]),
        (
            &Value::from("web1"),
            &Value::from(web),
            &Value::from("local")
        ),
        "{b1}"
    );
    let ping = lab.exec(
        &z.ns,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "192.168.82.200"],
    );
    assert!(
        ping.status.success(),
        "ping to the service: {}\nh2: {}",
        String::from_utf8_lossy(&ping.stdout),
        backend("h2")
    );
    let frames = backend("h2")["frames_total"].as_u64().unwrap_or(0);
    assert!(frames >= 3, "h2 sent {frames} frames to web1");

    // The Redis export names the VMs libvirt knows.
    let _redis = Redis(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.router_ns(),
                "redis-server",
                "--bind",
                "10.77.1.254",
            ])
            .args(["--port", "6379", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is missing: run scripts/deps.sh"),
    );
    let hget = |key: &str, field: &str| {
        let out = lab.exec(
            lab.router_ns(),
            &[
                "redis-cli",
                "-h",
                "10.77.1.254",
                "-p",
                "6379",
                "--raw",
                "HGET",
                key,
                field,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let key = format!("vmvpn:h1:vm:lan1:{web}");
    let t0 = Instant::now();
    while hget(&key, "name") != "web1" {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no name in Redis for {key}: {:?}; {}",
            hget(&key, "tx_bytes"),
            lab.status("h1")["export"]
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(hget(&key, "uuid"), "11111111-2222-3333-4444-555555555555");
    // A VM libvirt does not know has no name field.
    assert_eq!(hget(&format!("vmvpn:h1:vm:lan1:{}", z.mac), "name"), "");

    // The URI that fails: said in status, the daemon runs on, views work without names.
    let lv = &lab.status("h2")["libvirt"];
    assert!(
        lv["errors_total"].as_u64() >= Some(1)
            && lv["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("virsh") && e.contains("nonexistent")),
        "{lv}"
    );
    assert!(lab.running("h2"));
    assert!(lab.ping(&z, a.ip));
    let rows = vms(&lab, "h2");
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["name"].is_null()),
        "{rows:#?}"
    );
    assert!(
        lab.log("h2").contains("libvirt: cannot read the domains"),
        "{}",
        lab.log("h2")
    );
}

/// The dashboard API's overview from `ns` (plain HTTP on loopback there).
fn overview(lab: &Lab, ns: &str) -> Value {
    let url = format!("http://{}/api/v1/overview", vmvpn_tests::WEB_LOCAL);
    let out = lab.exec(ns, &["curl", "-s", "--max-time", "5", &url]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn vm_named(view: &Value, name: &str) -> bool {
    view["lans"][0]["vms"]
        .as_array()
        .is_some_and(|vms| vms.iter().any(|v| v["name"] == name))
}

#[test]
fn vm_names_reach_the_bulletin_matrix_and_both_dashboards() {
    vmvpn_tests::require_root();
    let dir = std::env::temp_dir().join(format!("vmvpn-libvirt-b-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let node = Node(dir);
    let file = node.0.join("node.xml");
    let web = "02:00:00:01:00:00";
    std::fs::write(
        &file,
        node_xml(&[("web1", Some("11111111-2222-3333-4444-555555555555"), web)]),
    )
    .expect("node file");
    let lab = Lab::builder("virtb")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 88], &["h1", "h2"], 1)
        .bulletin(6, 2)
        .telemetry("report_interval_s = 1\n")
        .web()
        .config_tail(
            "h1",
            &format!(
                "[libvirt]\nuri = \"test://{}\"\nrefresh_s = 1\n\n[export.sflow]\n\
                 collectors = [\"10.77.1.254:6343\"]\nsampling_rate = 8\npolling_interval_s = 1\n\n\
                 [export.ipfix]\ncollectors = [\"10.77.1.254:4739\"]\ntemplate_refresh_s = 1\n\n{}",
                file.display(),
                SERVICE_B
            ),
        )
        .config_tail("h2", SERVICE_B)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    let (a, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    // sFlow to a collector address on the router: Wireshark's tshark reads it there.
    let pcap = node.0.join("sflow.pcapng");
    let mut tshark = Capture(Some(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.router_ns(),
                "tshark",
                "-q",
                "-i",
                "br1",
            ])
            .args(["-f", "udp port 6343 or udp port 4739", "-w"])
            .arg(&pcap)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tshark is missing: run scripts/deps.sh"),
    ));
    let t0 = Instant::now();
    while !std::fs::metadata(&pcap).is_ok_and(|m| m.len() > 0) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "tshark did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.mac, web, "the lab's MACs changed");
    // Traffic both ways, so each host reports the pair it sources (bounded: 100 pings).
    let burst = lab.ping_burst(&a, z.ip, 100, "0.05");
    assert!(burst.status.success());

    // The bulletin's matrix: the pair web1 sends names it, by h1's report.
    let t0 = Instant::now();
    let pair = loop {
        let m: Value =
            serde_json::from_str(&lab.bulletin_cli(&["matrix", "--json"])).expect("matrix JSON");
        let found = m[0]["vms"]
            .as_array()
            .and_then(|v| v.iter().find(|p| p["src_mac"] == web).cloned());
        if let Some(p) = found.filter(|p| p["src_name"] == "web1") {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no name in the bulletin's matrix: {m:#}\n{}",
            lab.log("h1")
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(pair["src_host"], "h1");
    // h2's VM has no libvirt behind it: no name, and no key for one.
    assert!(pair.get("dst_name").is_none(), "{pair}");
    let text = lab.bulletin_cli(&["matrix"]);
    assert!(text.contains(&format!("web1 ({})", a.ip)), "{text}");

    // The service, over the overlay: web1 as its own host (h1) reports it, with the new
    // flows h2's VM opened to it (pings to the address; web1 does not hold it, so they
    // go unanswered, but h2 sends them to web1).
    let _ = lab.exec(
        &z.ns,
        &["ping", "-c", "2", "-i", "0.2", "-W", "1", "192.168.88.200"],
    );
    let t0 = Instant::now();
    let svc = loop {
        let m: Value =
            serde_json::from_str(&lab.bulletin_cli(&["matrix", "--json"])).expect("matrix JSON");
        let svc = m[0]["services"][0].clone();
        if svc["backends"][0]["flows_total"].as_u64().unwrap_or(0) >= 1 {
            break svc;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no service flows in the bulletin's matrix: {m:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let b = &svc["backends"][0];
    assert_eq!(
        (
            &svc["service"],
            &svc["backends_up"],
            &b["backend"],
            &b["state"],
            &b["location"]
        ),
        (
            &Value::from("web"),
            &Value::from(1),
            &Value::from("web1"),
            &Value::from("up"),
            &Value::from("h1")
        ),
        "{svc:#}"
    );
    assert_eq!(b["share_last_minute"], 1.0, "{svc:#}");
    let text = lab.bulletin_cli(&["matrix"]);
    assert!(
        text.contains("service web at 192.168.88.200 (least-load): 1 of 1 backends up"),
        "{text}"
    );

    // The bulletin's dashboard and h1's own name the VM; both read the same view.
    let t0 = Instant::now();
    while !vm_named(&overview(&lab, lab.router_ns()), "web1")
        || overview(&lab, lab.router_ns())["lans"][0]["services"][0]["backends"][0]["location"]
            != "h1"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "bulletin dashboard: {:#}",
            overview(&lab, lab.router_ns())
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let t0 = Instant::now();
    while !vm_named(&overview(&lab, lab.host_ns("h1")), "web1") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "h1's dashboard: {:#}",
            overview(&lab, lab.host_ns("h1"))
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // sFlow: the VM's counter sample of host structures. No collector Debian ships decodes
    // them (Wireshark 4.0 calls 0:2000 unknown and then misreads the records after it, a
    // known Wireshark bug; sflowtool is not packaged), so tshark checks the framing: a
    // counter sample of a logical entity with three records, the first 0:2000 of 36
    // bytes, which carries the name; the records themselves are checked byte for byte
    // against sflow_host.txt in telemetry's unit test.
    tshark.stop();
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-V", "-x", "-o", "sflow.enable_dissection:FALSE"])
        .output()
        .expect("tshark -r");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("InMon sFlow"),
        "{text}"
    );
    let vm_sample = text
        .split("Counters sample, seq")
        .find(|s| s.contains("Source ID type: 3"))
        .unwrap_or_else(|| panic!("no VM counter sample in the sFlow:\n{text}"));
    for want in [
        "Sample length (byte): 132",
        "Counters records: 3",
        "Format: Unknown (2000)",
        "Flow data length (byte): 36",
    ] {
        assert!(vm_sample.contains(want), "{want}:\n{vm_sample}");
    }
    // The name, in the datagram's bytes (tshark's hex dump shows ASCII on the right).
    assert!(text.contains("web1"), "no VM name in the sFlow bytes");

    // IPFIX: options records naming the VM by its MAC, as tshark decodes them.
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "cflow.virtual_station_name", "-T", "fields"])
        .args(["-e", "cflow.srcmac", "-e", "cflow.virtual_station_name"])
        .args(["-e", "cflow.virtual_station_uuid"])
        .output()
        .expect("tshark -r");
    let rows = String::from_utf8_lossy(&out.stdout).to_string();
    let first = rows
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no VM name in IPFIX"));
    let f: Vec<&str> = first.split('\t').collect();
    assert_eq!(f.first().copied(), Some(web), "{rows}");
    assert_eq!(f.get(1).copied(), Some("web1"), "{rows}");
    assert!(
        f.get(2)
            .is_some_and(|u| u.replace([':', '-'], "") == "11111111222233334444555555555555"),
        "{rows}"
    );
    let st = lab.status("h1");
    assert!(
        st["export"]["ipfix"]["vm_name_records_total"].as_u64() >= Some(1),
        "{}",
        st["export"]
    );
}

/// tshark started by the test, stopped by its PID (SIGINT flushes its file), even when
/// the test fails.
struct Capture(Option<std::process::Child>);

impl Capture {
    fn stop(&mut self) {
        let Some(mut c) = self.0.take() else { return };
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGINT);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_domain_event_names_a_new_vm_at_once() {
    vmvpn_tests::require_root();
    let dir = std::env::temp_dir().join(format!("vmvpn-libvirt-e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let node = Node(dir);
    let file = node.0.join("node.xml");
    let (web, db) = ("02:00:00:01:00:00", "02:00:00:01:00:01");
    std::fs::write(&file, node_xml(&[("web1", None, web)])).expect("node file");
    // The real virsh for every read; for `event`, which the test driver never fires
    // across processes, one event line each time the test touches the trigger file
    // (bounded: 60 s, and the daemon's death ends it).
    let trigger = node.0.join("trigger");
    let wrapper = node.0.join("virsh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = event ]; then\n    i=0\n    while [ $i -lt 600 ]; do\n      if [ -e {t} ]; then rm -f {t}; echo \"event 'lifecycle' for domain 'db1': Defined Added\"; fi\n      sleep 0.1; i=$((i+1))\n    done\n    exit 0\n  fi\ndone\nexec virsh \"$@\"\n",
            t = trigger.display()
        ),
    )
    .expect("wrapper");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let lab = Lab::builder("virte")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 89], &["h1", "h2"], 2)
        // Periodic refreshes an hour apart: only an event can name db1 in time.
        .config_tail(
            "h1",
            &format!(
                "[libvirt]\nuri = \"test://{}\"\nrefresh_s = 3600\nvirsh = \"{}\"\n",
                file.display(),
                wrapper.display()
            ),
        )
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    let (a, b, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h1", "lan1", 1).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert_eq!((a.mac.as_str(), b.mac.as_str()), (web, db));
    assert!(lab.ping(&a, z.ip) && lab.ping(&b, z.ip));
    let name_of = |mac: &str| {
        vms(&lab, "h1")
            .iter()
            .find(|r| r["mac"] == mac)
            .map(|r| r["name"].clone())
            .unwrap_or_default()
    };
    let t0 = Instant::now();
    while name_of(web) != "web1" {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", lab.log("h1"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(name_of(db).is_null(), "db1 is not defined yet");

    // db1 defined: the event brings its name within a few seconds, not an hour.
    std::fs::write(&file, node_xml(&[("web1", None, web), ("db1", None, db)])).expect("node");
    std::fs::write(&trigger, "").expect("trigger");
    let t0 = Instant::now();
    while name_of(db) != "db1" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no name for db1 after the event: {}\n{}",
            lab.status("h1")["libvirt"],
            lab.log("h1")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lv = &lab.status("h1")["libvirt"];
    assert!(lv["events_total"].as_u64() >= Some(1), "{lv}");
    assert_eq!(
        lv["refreshes_total"], 2,
        "one at start, one for the event: {lv}"
    );
}
