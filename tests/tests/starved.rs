//! Receiving daemons kept off the CPU (stopped and continued by their PID, as on a host
//! whose VMs are busy), end to end:
//! - CoDel: a daemon that gets 1 ms in every 41 under a UDP stream of bulk frames. Its
//!   queue stands, and the frames that carry the signal are counted against the peer that
//!   sent them: dropped where the flow is not ECN-capable, marked CE where it is.
//! - Rate limits police by arrival: a daemon stopped 60 ms in every 300 drops nothing of a
//!   flow under its VM's limit (it dropped 12 % when it policed by when it read).
//!
//! Its own test binary, one test at a time: they starve daemons on purpose, and cargo runs
//! the tests of one binary side by side.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

use serde_json::Value;
use vmvpn_tests::Lab;

/// Sends SIGCONT to the daemon when dropped, so a failed test never leaves it stopped.
struct Continue(libc::pid_t);

impl Drop for Continue {
    fn drop(&mut self) {
        // SAFETY: kill with a PID this test recorded and a plain signal number.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// How a daemon is starved: after `delay`, stopped for `off` and let run for `on`, for
/// `span` or until the load ends; it is left running.
#[derive(Clone, Copy)]
struct Starve {
    delay: Duration,
    span: Duration,
    off: Duration,
    on: Duration,
}

/// Run `load` while the daemon `pid` is starved as `how` says, from another thread: what
/// `load` returned and how many times the daemon was stopped. It runs again when `load`
/// ends, or when either thread fails.
fn starved_during<T>(pid: libc::pid_t, how: Starve, load: impl FnOnce() -> T) -> (T, u32) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = &stop;
        let t = s.spawn(move || {
            let _cont = Continue(pid);
            std::thread::sleep(how.delay);
            let start = Instant::now();
            let mut stops = 0;
            while start.elapsed() < how.span && !stop.load(Ordering::SeqCst) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(how.off);
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                std::thread::sleep(how.on);
                stops += 1;
            }
            stops
        });
        // Stops the starving even if `load` panics.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let r = {
            let _done = Done(stop);
            load()
        };
        (r, t.join().unwrap_or(0))
    })
}

/// h2's figures: CoDel's drops and marks on its queue, its LAN's `aqm` drops, and those
/// counted against its peer h1.
fn signals(lab: &Lab) -> [u64; 5] {
    let st = lab.status("h2");
    let n = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("not a count: {v} in {st:#}"))
    };
    let lan = st["lans"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == "lan1"))
        .unwrap_or_else(|| panic!("no lan1 in {st:#}"));
    let p = lab.peer("h2", "lan1", "h1");
    [
        n(&st["queue"]["aqm_drops_total"]),
        n(&st["queue"]["aqm_marks_total"]),
        n(&lan["drops"]["aqm"]),
        n(&p["drops"]["aqm"]),
        n(&p["aqm_marks_total"]),
    ]
}

#[test]
fn a_starved_receiver_signals_congestion_on_bulk_frames_counted_against_their_peer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::builder("aqm")
        .subnet(&["h1", "h2"])
        .lan("lan1", [192, 168, 77], &["h1", "h2"], 1)
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(10));
    let (a, b) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert!(lab.ping(&a, b.ip), "first ping {} -> {}", a.ip, b.ip);
    assert_eq!(signals(&lab), [0; 5], "no signal before the load");
    let pid = libc::pid_t::try_from(lab.pid("h2")).expect("pid");
    let mut before = [0; 5];
    // 1200-byte datagrams (IP packets over CoDel's 1000-byte bulk mark), 400 Mbit/s for
    // 4 s; h2 starved for 2.5 s of it, from 0.6 s in (after iperf3's own set-up).
    // TOS 0: not ECN-capable, so dropped; TOS 2: ECT(0), so marked CE.
    for tos in ["0", "2"] {
        let how = Starve {
            delay: Duration::from_millis(900),
            span: Duration::from_millis(2500),
            off: Duration::from_millis(40),
            on: Duration::from_millis(1),
        };
        let (report, cycles) = starved_during(pid, how, || {
            lab.iperf3(
                &a,
                &b,
                &["-u", "-b", "400M", "-l", "1200", "-t", "4", "-S", tos],
            )
        });
        let sent = report["end"]["sum"]["packets"].as_u64().unwrap_or(0);
        let after = signals(&lab);
        eprintln!(
            "TOS {tos}: {cycles} stop cycles, {sent} datagrams sent; [queue drops, queue marks, LAN aqm drops, h1's aqm drops, h1's marks] {before:?} -> {after:?}; queue now {}",
            lab.status("h2")["queue"]
        );
        assert!(cycles >= 20, "the daemon was starved for {cycles} cycles");
        assert!(sent > 10_000, "{sent} datagrams sent:\n{report:#}");
        let [qd, qm, ld, pd, pm] = after;
        // Every signal the queue gave fell on a frame from h1, the only peer.
        assert_eq!((ld, pd), (qd, qd), "drops counted alike");
        assert_eq!(pm, qm, "marks counted alike");
        if tos == "0" {
            assert!(qd > 0, "CoDel dropped nothing: {after:?}");
            assert_eq!(
                qm, 0,
                "a flow that is not ECN-capable was marked: {after:?}"
            );
        } else {
            assert!(qm > 0, "CoDel marked nothing: {after:?}");
            assert_eq!(qd, before[0], "an ECN-capable flow was dropped: {after:?}");
        }
        before = after;
    }
    // The daemon runs on: the tunnel still carries a ping.
    assert!(lab.ping(&a, b.ip), "ping after the starving");
}

#[test]
fn a_limit_polices_by_arrival_so_a_flow_under_it_loses_nothing_to_a_stalled_daemon() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let limited_mac = "02:00:00:01:00:00";
    let lab = Lab::builder("stall")
        .subnet(&["h1"])
        .subnet(&["h2"])
        .lan("lan1", [192, 168, 78], &["h1", "h2"], 1)
        .config_tail(
            "h1",
            &format!(
                "[[lan.limit]]\nmac = \"{limited_mac}\"\nrate_mbps = 50\ndirection = \"in\"\n"
            ),
        )
        .start();
    lab.wait_tunnels("h1", "lan1", 1, Duration::from_secs(20));
    let (a, z) = (
        lab.vm("h1", "lan1", 0).clone(),
        lab.vm("h2", "lan1", 0).clone(),
    );
    assert_eq!(a.mac, limited_mac, "the lab's MAC scheme changed");
    assert!(lab.ping(&z, a.ip), "first ping {} -> {}", z.ip, a.ip);
    let limit = |lab: &Lab| -> Value {
        let out = lab.vmvpn_cli("h1", &["vms", "--json"]);
        let vms: Value = serde_json::from_slice(&out.stdout).expect("vms --json");
        vms[0]["limits"][0]["rx"].clone()
    };
    // 40 Mbit/s of 1200-byte datagrams (each frame one overlay datagram, no overlay
    // fragments) into the VM limited to 50, for 6 s; its host's
    // daemon stopped 60 ms in every 300 from 0.8 s in: each time it comes back, 60 ms of
    // the flow wait in its socket, read at once.
    let pid = libc::pid_t::try_from(lab.pid("h1")).expect("pid");
    let how = Starve {
        delay: Duration::from_millis(800),
        span: Duration::from_millis(4800),
        off: Duration::from_millis(60),
        on: Duration::from_millis(240),
    };
    let (report, stops) = starved_during(pid, how, || {
        lab.iperf3(&z, &a, &["-u", "-b", "40M", "-l", "1200", "-t", "6"])
    });
    let rx = limit(&lab);
    eprintln!(
        "{stops} stops; iperf3 lost {}% of {} datagrams; the limit, in: {rx}",
        report["end"]["sum"]["lost_percent"], report["end"]["sum"]["packets"]
    );
    assert!(stops >= 10, "the daemon was stopped {stops} times");
    let passed = rx["passed_frames_total"].as_u64().unwrap_or(0);
    assert!(passed > 15_000, "the flow did not reach the limit: {rx}");
    assert_eq!(
        rx["dropped_frames_total"], 0,
        "the limit dropped frames that arrived under its rate: {rx}"
    );
}
