//! The receive queue of the data-plane socket, kept short: each batch read tells CoDel
//! how long it waited (the socket's receive timestamp), and the drops CoDel asks for fall
//! on the next bulk frames written to a TAP (`aqm::signal`). Without it, a TCP flow into
//! a VM fills the socket's 4 MiB buffer, and every ping and probe behind it waits as long
//! as that buffer takes to drain (120 ms seen in the demo lab under iperf3, debug build).

use std::time::{Duration, Instant};

use crate::aqm::codel::Codel;
use crate::aqm::signal::{Signal, congestion_signal};
use crate::status::QueueStats;

/// Signals owed at most: a queue of small frames has no bulk frame to carry them, and
/// owing more would only drop a burst of the next bulk flow at once.
const MAX_DUE: u32 = 4;

/// Set to `1` to turn CoDel off (the queue is still measured): for comparing, not for use.
pub const OFF_ENV: &str = "VMVPN_NO_AQM";

/// CoDel over the socket's receive queue and what it did.
#[derive(Default)]
pub struct RxQueue {
    off: bool,
    codel: Codel,
    due: u32,
    stats: QueueStats,
    /// The longest wait in the second now running, and when it started.
    window: (Option<Instant>, f64),
}

impl RxQueue {
    /// CoDel on, unless [`OFF_ENV`] says otherwise.
    pub fn from_env() -> Self {
        RxQueue {
            off: std::env::var(OFF_ENV).is_ok_and(|v| v == "1"),
            ..RxQueue::default()
        }
    }

    /// A batch of `datagrams` was read at `now`; its newest had waited `sojourn`, and
    /// `drained` says the socket is empty now.
    pub fn handle_batch(
        &mut self,
        sojourn: Duration,
        drained: bool,
        datagrams: usize,
        now: Instant,
    ) {
        let ms = sojourn.as_secs_f64() * 1e3;
        self.stats.rx_sojourn_ms = ms;
        match self.window.0 {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {
                self.window.1 = self.window.1.max(ms);
            }
            _ => {
                self.stats.rx_sojourn_max_ms = self.window.1;
                self.window = (Some(now), ms);
            }
        }
        if self.off {
            return;
        }
        let n = u32::try_from(datagrams).unwrap_or(u32::MAX);
        let drops = self.codel.handle_dequeue(sojourn, drained, n, now);
        self.due = if self.codel.dropping() {
            (self.due + drops).min(MAX_DUE)
        } else {
            0
        };
        self.stats.aqm_dropping = self.codel.dropping();
    }

    /// A frame about to be written to a TAP: whether it carries a congestion signal
    /// (marked CE in place, or to be dropped instead). Costs one comparison unless CoDel
    /// owes a signal.
    #[inline]
    pub fn signal(&mut self, frame: &mut [u8]) -> Signal {
        if self.due == 0 {
            return Signal::Spared;
        }
        let s = congestion_signal(frame);
        match s {
            Signal::Spared => {}
            Signal::Marked => {
                self.due -= 1;
                self.stats.aqm_marks_total += 1;
            }
            Signal::Drop => {
                self.due -= 1;
                self.stats.aqm_drops_total += 1;
            }
        }
        s
    }

    /// What it did so far.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(ecn: u8) -> Vec<u8> {
        let mut f = vec![0u8; 1514];
        f[12] = 0x08;
        f[14] = 0x45;
        f[15] = ecn;
        f
    }

    #[test]
    fn a_standing_queue_drops_bulk_frames_and_spares_small_ones() {
        let mut q = RxQueue::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        for i in 0..=100u32 {
            q.handle_batch(20 * ms, false, 32, t0 + ms * i);
        }
        assert!(q.stats().aqm_dropping);
        let mut small = bulk(0);
        small.truncate(100);
        assert_eq!(q.signal(&mut small), Signal::Spared, "a small frame");
        assert_eq!(
            q.signal(&mut bulk(0b10)),
            Signal::Marked,
            "an ECT frame is marked, not dropped"
        );
        q.handle_batch(20 * ms, false, 32, t0 + ms * 200);
        assert_eq!(q.signal(&mut bulk(0)), Signal::Drop);
        let s = q.stats();
        assert_eq!((s.aqm_marks_total, s.aqm_drops_total), (1, 1));
        // The queue drains: nothing more is owed.
        q.handle_batch(ms, true, 3, t0 + ms * 201);
        assert_eq!(q.signal(&mut bulk(0)), Signal::Spared);
        assert!(!q.stats().aqm_dropping);
    }

    #[test]
    fn a_socket_read_slower_than_it_fills_is_found_standing_and_signalled() {
        use crate::io::udp::{Received, SLOT, Udp};
        use std::io::IoSliceMut;
        let rx = Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = rx.local_addr().expect("addr");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for _ in 0..400 {
            tx.send_to(&[0u8; 1200], to).expect("send");
        }
        let mut q = RxQueue::default();
        let mut buf = vec![0u8; SLOT];
        let mut meta = [Received::default()];
        // One datagram a millisecond: each waited longer than the one before.
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(1));
            let mut iov = [IoSliceMut::new(&mut buf)];
            let n = rx.recv(&mut iov, &mut meta).expect("recv");
            let waited = meta[0].waited(std::time::SystemTime::now());
            q.handle_batch(waited, false, n, Instant::now());
        }
        assert!(q.stats().rx_sojourn_ms > 100.0, "{:?}", q.stats());
        assert!(q.stats().aqm_dropping, "{:?}", q.stats());
        assert_eq!(q.signal(&mut bulk(0)), Signal::Drop);
    }

    #[test]
    fn the_longest_wait_of_the_last_second_is_kept() {
        let mut q = RxQueue::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        q.handle_batch(3 * ms, true, 1, t0);
        q.handle_batch(9 * ms, true, 1, t0 + 500 * ms);
        q.handle_batch(ms, true, 1, t0 + 1001 * ms);
        let s = q.stats();
        assert_eq!(s.rx_sojourn_max_ms, 9.0);
        assert_eq!(s.rx_sojourn_ms, 1.0);
    }
}
