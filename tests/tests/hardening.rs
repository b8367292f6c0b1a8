//! Hardening: abusive clients and careless configs against the real binaries.
//! The bulletin runs on loopback with a port of its own; hosts run in the lab's namespaces.
//! Every process started here is stopped by its PID, every file removed, even on failure.

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmvpn_tests::{Lab, bulletin_bin, require_root, rss_kib, vmvpn_bin};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("vmvpn-hard-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process stopped by its PID when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn secret_file(path: &Path, byte: u8) {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    std::fs::write(path, format!("{text}\n")).expect("secret");
}

/// A bulletin on a free loopback port, with `lan1` and an operator token.
struct Bulletin {
    proc: Proc,
    addr: String,
    fingerprint: String,
    dir: Scratch,
}

fn start_bulletin(tag: &str, extra: &str) -> Bulletin {
    let dir = Scratch::new(tag);
    secret_file(&dir.path("lan1.key"), 1);
    secret_file(&dir.path("operator.key"), 2);
    std::fs::write(
        dir.path("bulletin.toml"),
        format!(
            "operator_token_file = \"{}\"\nmax_connections_per_ip = 1000\n{extra}\n[[lan]]\nname = \"lan1\"\nsecret_file = \"{}\"\n",
            dir.path("operator.key").display(),
            dir.path("lan1.key").display()
        ),
    )
    .expect("config");
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(bulletin_bin())
        .args(["serve", "--listen", &addr, "--state-dir"])
        .arg(dir.path("state"))
        .arg("--config")
        .arg(dir.path("bulletin.toml"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bulletin");
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead;
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("fingerprint line");
    }
    let fingerprint = line.trim().to_string();
    assert!(fingerprint.starts_with("sha256:"), "{fingerprint:?}");
    Bulletin {
        proc: Proc(child),
        addr,
        fingerprint,
        dir,
    }
}

impl Bulletin {
    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bulletin_bin())
            .args(args)
            .args(["--server", &self.addr, "--fingerprint", &self.fingerprint])
            .output()
            .expect("bulletin cli")
    }

    fn abuse(&self, args: &[&str]) -> Child {
        Command::new(bulletin_bin().with_file_name("bulletin-abuse"))
            .args(args)
            .args(["--server", &self.addr, "--fingerprint", &self.fingerprint])
            .arg("--token-file")
            .arg(self.dir.path("operator.key"))
            .arg("--secret-file")
            .arg(self.dir.path("lan1.key"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bulletin-abuse")
    }
}

/// Sample `pid`'s RSS until `child` exits; (its output, the highest RSS in KiB).
fn peak_rss_while(pid: u32, child: Child) -> (Output, u64) {
    let mut child = Proc(child);
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        if let Ok(Some(_)) = child.0.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Proc(inner) = &mut child;
    let out = std::mem::replace(inner, Command::new("true").spawn().expect("true"));
    (out.wait_with_output().expect("abuse output"), peak)
}

/// Wait for a process that is stopped by its PID should this panic first.
fn wait_output(mut p: Proc) -> Output {
    let inner = std::mem::replace(&mut p.0, Command::new("true").spawn().expect("true"));
    drop(p);
    inner.wait_with_output().expect("output")
}

/// Bound on the bulletin's growth under a flood (README, "Security and limits").
const FLOOD_BOUND_KIB: u64 = 100 * 1024;

#[test]
fn a_pipelined_query_flood_and_an_unauthenticated_flood_keep_the_bulletin_small_and_fair() {
    let b = start_bulletin("flood", "lease_ttl_s = 300\n");
    // Two hundred registered hosts make every answer some 20 KB.
    let setup = b.abuse(&[
        "silent",
        "--hosts",
        "200",
        "--connections",
        "0",
        "--seconds",
        "1",
    ]);
    let (out, _) = peak_rss_while(b.pid(), setup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    let base = rss_kib(b.pid());
    assert!(base > 0);
    for mode in ["query-flood", "unauth-flood"] {
        let flood = b.abuse(&[mode, "--connections", "8", "--seconds", "12"]);
        // Meanwhile another client connects and registers a host, 20 times in a row: the
        // flood must not delay its greeting or its registration (each within 1 s).
        std::thread::sleep(Duration::from_secs(1));
        let timed = b.abuse(&["register", "--connections", "20", "--seconds", "10"]);
        let (out, peak) = peak_rss_while(b.pid(), flood);
        let t = Proc(timed);
        let timed = wait_output(t);
        assert!(
            timed.status.success(),
            "{mode}: register: {}",
            String::from_utf8_lossy(&timed.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&timed.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&timed.stdout)));
        let hello: Vec<u64> = serde_json::from_value(v["hello_ms"].clone()).unwrap_or_default();
        let register: Vec<u64> =
            serde_json::from_value(v["register_ms"].clone()).unwrap_or_default();
        eprintln!(
            "{mode}: a second client's hello took {hello:?} ms, its registration {register:?} ms"
        );
        assert_eq!(hello.len(), 20, "{v}");
        for (h, r) in hello.iter().zip(&register) {
            assert!(
                h + r < 1000,
                "{mode}: hello {h} ms + registration {r} ms: {v}"
            );
        }
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sent: u64 = serde_json::from_str::<serde_json::Value>(report.trim())
            .ok()
            .and_then(|v| v["requests_sent"].as_u64())
            .unwrap_or(0);
        assert!(sent > 1000, "{mode}: the flood ran: {report}");
        eprintln!(
            "{mode}: {sent} requests; bulletin RSS {base} KiB before, peak {peak} KiB (+{} KiB)",
            peak.saturating_sub(base)
        );
        assert!(
            peak < base + FLOOD_BOUND_KIB,
            "{mode}: the bulletin grew from {base} to {peak} KiB"
        );
    }
    // The flooders are gone: the bulletin still answers, and has not kept the flood.
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(b.pid());
    assert!(after < base + FLOOD_BOUND_KIB, "{base} → {after} KiB");
    let ls = b.cli(&[
        "ls",
        "--json",
        "--token-file",
        &b.dir.path("operator.key").display().to_string(),
    ]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let hosts: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls json");
    assert_eq!(
        hosts.as_array().map(Vec::len),
        Some(200),
        "the registrations survived"
    );
}

#[test]
fn reads_need_a_credential_and_a_lan_secret_reads_only_its_lan() {
    let b = start_bulletin("creds", "");
    let setup = b.abuse(&[
        "silent",
        "--hosts",
        "3",
        "--connections",
        "0",
        "--seconds",
        "1",
    ]);
    let _ = peak_rss_while(b.pid(), setup);
    for view in ["ls", "matrix"] {
        let out = b.cli(&[view]);
        assert!(!out.status.success(), "{view} without a credential");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains("reads need a credential") && e.contains("--token-file"),
            "{e}"
        );
    }
    let key = b.dir.path("lan1.key").display().to_string();
    let out = b.cli(&["ls", "--json", "--lan", "lan1", "--secret-file", &key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(3));
    // The operator token is no LAN secret.
    let op = b.dir.path("operator.key").display().to_string();
    let out = b.cli(&["ls", "--lan", "lan1", "--secret-file", &op]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong secret"));
    let out = b.cli(&["ls", "--token-file", &key]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong operator token"));
}

#[test]
fn silent_connections_beyond_the_cap_evict_the_oldest_and_all_close_after_the_hello_timeout() {
    // One address may fill the whole table here, so the table's own rule shows: a
    // newcomer evicts the oldest silent connection instead of being refused.
    let b = start_bulletin(
        "silent",
        "max_unauthenticated = 50\nmax_unauthenticated_per_ip = 1000\n",
    );
    let t = Instant::now();
    let child = b.abuse(&["silent", "--connections", "80", "--seconds", "30"]);
    let (out, _) = peak_rss_while(b.pid(), child);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    eprintln!("silent: {v} in {:?}", t.elapsed());
    assert_eq!(v["opened"], 80, "{v}");
    assert_eq!(v["refused"], 0, "{v}");
    assert_eq!(v["closed_by_server"], 80, "{v}");
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    // The default per-address share: 16 silent connections, then refusals.
    let b = start_bulletin("silent16", "");
    let child = b.abuse(&["silent", "--connections", "40", "--seconds", "30"]);
    let (out, _) = peak_rss_while(b.pid(), child);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert_eq!(v["opened"], 16, "{v}");
    assert_eq!(v["refused"], 24, "{v}");
}

fn vmvpn(args: &[&str]) -> Output {
    // `timeout` bounds a hang (a FIFO secret once blocked forever).
    Command::new("timeout")
        .arg("20")
        .arg(vmvpn_bin())
        .args(args)
        .output()
        .expect("vmvpn")
}

#[test]
fn every_out_of_range_value_is_refused_alike_by_check_and_up() {
    require_root();
    let d = Scratch::new("cfg");
    secret_file(&d.path("lan1.key"), 1);
    let fifo = d.path("fifo.key");
    let c = std::ffi::CString::new(fifo.display().to_string()).expect("path");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let good = |host: &str, lan: &str, tail: &str| {
        format!(
            "[host]\nname = \"hx\"\naddress = \"10.99.0.1/24\"\ncontrol_socket = \"{}\"\n{host}\n[[lan]]\nname = \"lan1\"\nsegment = \"10.0.0.0/24\"\ntap = \"vhx0\"\nsecret_file = \"{}\"\n{lan}\n{tail}",
            d.path("hx.sock").display(),
            d.path("lan1.key").display()
        )
    };
    let cases = [
        (good("port = 0", "", ""), "`host.port`"),
        (
            good("", "mac_capacity = 1000000000000", ""),
            "`lan[0].mac_capacity`",
        ),
        (
            good("", "", "[telemetry]\nvm_table_size = 1000000000000"),
            "`telemetry.vm_table_size`",
        ),
        (
            good("", "", "[telemetry]\nflow_table_size = 1000000000000"),
            "`telemetry.flow_table_size`",
        ),
        (
            good(
                "",
                "",
                "[telemetry]\nreport_interval_s = 18446744073709551615",
            ),
            "`telemetry.report_interval_s`",
        ),
        (
            good("multicast_range = \"239.0.0.0/5\"", "", ""),
            "`host.multicast_range`",
        ),
        (
            good("", "", "").replace(&d.path("lan1.key").display().to_string(), "/dev/zero"),
            "not a regular file",
        ),
        (
            good("", "", "").replace(
                &d.path("lan1.key").display().to_string(),
                &fifo.display().to_string(),
            ),
            "not a regular file",
        ),
        (
            good(&format!("bind = \"{}\"", "1".repeat(200_000)), "", ""),
            "more characters",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = d.path(&format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let p = path.display().to_string();
        let check = vmvpn(&["check", "--config", &p]);
        let up = vmvpn(&["up", "--config", &p]);
        for (what, out) in [("check", &check), ("up", &up)] {
            let e = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{what} of case {i}: {e}");
            assert!(
                e.contains(want) && !e.contains("panicked"),
                "{what} of case {i}: {e}"
            );
            assert!(
                e.len() < 4000,
                "{what} of case {i}: {} bytes of error",
                e.len()
            );
        }
        let first = |o: &Output| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(
            first(&check),
            first(&up),
            "case {i}: check and up say the same"
        );
    }
    // The bulletin's config too: a lease of u64::MAX once panicked every registration.
    for (text, want) in [
        ("lease_ttl_s = 18446744073709551615\n", "`lease_ttl_s`"),
        ("heartbeat_s = 0\n", "`heartbeat_s`"),
        (
            "operator_token_file = \"/dev/zero\"\n",
            "not a regular file",
        ),
    ] {
        std::fs::write(d.path("b.toml"), text).expect("write");
        let out = Command::new("timeout")
            .arg("20")
            .arg(bulletin_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(d.path("bstate"))
            .arg("--config")
            .arg(d.path("b.toml"))
            .output()
            .expect("bulletin");
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert!(e.contains(want) && e.contains("b.toml:1"), "{e}");
    }
}

#[test]
fn a_bulletin_with_half_an_identity_refuses_to_start_and_changes_nothing() {
    let d = Scratch::new("ident");
    let fp = Command::new(bulletin_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(d.path("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bulletin");
    let proc = Proc(fp);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.path("state/cert.der").exists() {
        assert!(Instant::now() < deadline, "no identity written");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(proc);
    let cert = std::fs::read(d.path("state/cert.der")).expect("cert");
    std::fs::remove_file(d.path("state/key.der")).expect("rm key");
    let out = Command::new("timeout")
        .arg("20")
        .arg(bulletin_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(d.path("state"))
        .output()
        .expect("bulletin");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&d.path("state/key.der").display().to_string()) && e.contains("is missing"),
        "{e}"
    );
    assert_eq!(std::fs::read(d.path("state/cert.der")).expect("cert"), cert);
    assert!(!d.path("state/key.der").exists(), "no new key");
}

/// Run `bin args` with its stdout a pipe whose reader is already gone.
fn with_closed_stdout(bin: &Path, args: &[&str]) -> std::process::ExitStatus {
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills two descriptors we own from here on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is ours and closed once; fds[1] is handed to the child as its stdout.
    unsafe { libc::close(fds[0]) };
    let stdout = unsafe { <Stdio as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let out = Command::new(bin)
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!e.contains("panicked"), "{bin:?} {args:?}: {e}");
    out.status
}

#[test]
fn the_control_socket_serves_status_through_1100_silent_connections_and_a_closed_pipe_is_quiet() {
    use std::os::unix::process::ExitStatusExt;
    require_root();
    let lab = Lab::builder("ctl")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 100], &["h1", "h2"], 1)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(10));
    let pid = lab.pid("h1").to_string();
    let lim = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=1024:1024"])
        .output()
        .expect("prlimit");
    assert!(lim.status.success(), "{lim:?}");
    // This test process needs more than 1024 descriptors itself.
    let raise = libc::rlimit {
        rlim_cur: 4096,
        rlim_max: 4096,
    };
    // SAFETY: setrlimit with a valid struct; raising within the hard limit root may set.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raise) }, 0);
    let mut held = Vec::new();
    for _ in 0..1100 {
        match UnixStream::connect(lab.socket("h1")) {
            Ok(s) => held.push(s),
            Err(e) => panic!("connect {}: {e}", held.len()),
        }
    }
    let t = Instant::now();
    let out = lab.vmvpn_cli("h1", &["status", "--json"]);
    let took = t.elapsed();
    eprintln!("status with 1100 silent connections: {took:?}");
    // The oldest silent client gives way at once: status never waits for a read timeout.
    assert!(took < Duration::from_secs(1), "status took {took:?}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(st["host"]["name"], "h1");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(fds < 300, "the daemon holds {fds} descriptors");
    // A silent client that does send a partial line is dropped after the read timeout.
    let mut partial = UnixStream::connect(lab.socket("h1")).expect("connect");
    partial.write_all(b"{\"request\":").expect("write");
    drop(held);
    // A view whose reader went away ends quietly: SIGPIPE (141 in a shell) or 0.
    let sock = lab.socket("h1").display().to_string();
    for args in [vec!["status", "--socket", &sock], vec!["keygen"]] {
        let st = with_closed_stdout(&vmvpn_bin(), &args);
        assert!(
            st.success() || st.signal() == Some(libc::SIGPIPE),
            "vmvpn {args:?}: {st:?}"
        );
    }
}
