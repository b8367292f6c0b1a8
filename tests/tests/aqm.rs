//! CoDel on the receive queue, end to end: a receiving daemon that gets the CPU for about
//! 1 ms in every 40 (stopped and continued by its PID, as a host starved by its VMs would
//! be) under a UDP stream of bulk frames. Its queue stands, and the frames that carry the
//! signal are counted against the peer that sent them: dropped where the flow is not
//! ECN-capable, marked CE where it is. Its own test binary: it starves a daemon on purpose,
//! and cargo runs the tests of one binary side by side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// After `delay`, stop the daemon for 40 ms and let it run 1 ms, for `span` or until
/// `stop`; it is left running.
fn starve(pid: libc::pid_t, delay: Duration, span: Duration, stop: &AtomicBool) -> u32 {
    let _cont = Continue(pid);
    std::thread::sleep(delay);
    let start = Instant::now();
    let mut cycles = 0;
    while start.elapsed() < span && !stop.load(Ordering::SeqCst) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(40));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        std::thread::sleep(Duration::from_millis(1));
        cycles += 1;
    }
    cycles
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
        let stop = AtomicBool::new(false);
        let (report, cycles) = std::thread::scope(|s| {
            let t = s.spawn(|| {
                starve(
                    pid,
                    Duration::from_millis(900),
                    Duration::from_millis(2500),
                    &stop,
                )
            });
            let r = lab.iperf3(
                &a,
                &b,
                &["-u", "-b", "400M", "-l", "1200", "-t", "4", "-S", tos],
            );
            stop.store(true, Ordering::SeqCst);
            (r, t.join().unwrap_or(0))
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
