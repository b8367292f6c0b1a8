//! Sealed datagrams gathered into runs, a run being equal-sized datagrams to one peer (the
//! last possibly shorter) that the kernel segments from one message (UDP GSO). The runs
//! gathered, to one peer or several, leave in one `sendmmsg`: small frames to peers in
//! turn share a syscall as a bulk run to one peer does. Falls back to one send per
//! datagram when the kernel cannot, or when a send fails.

use std::net::SocketAddr;

use crate::io::udp::{MAX_RUNS, Run, SLOT, Udp};
use crate::proto::{HEADER_LEN, TAG_LEN};

/// Bytes one flush may carry (the kernel's limit for one GSO send is 64 KB of UDP payload).
const MAX_BYTES: usize = 65_000;

/// What the forwarding core needs to seal one frame in place: header room, the largest
/// frame, the tag (`Engine::handle_tap_frame`'s buffer).
pub const ROOM: usize = HEADER_LEN + SLOT + TAG_LEN;

/// The runs being gathered. Its buffer has `ROOM` bytes free after the datagrams gathered,
/// so that the next frame can be written and sealed there in place (`room`, `commit`)
/// instead of being copied in after sealing (`push`).
pub struct GsoBatch {
    buf: Vec<u8>,
    /// Bytes gathered: `buf[..len]`, at most `MAX_BYTES` between calls.
    len: usize,
    /// The runs in `buf[..len]`, in order; capacity `MAX_RUNS`, allocated once.
    runs: Vec<Run>,
    max_segments: usize,
    /// GSO sends (runs of more than one datagram) so far, and the datagrams they carried.
    sends: u64,
    datagrams: u64,
    /// `sendmmsg` calls of more than one run, and the runs they carried.
    mmsg_calls: u64,
    mmsg_runs: u64,
    /// `VMVPN_NO_MMSG=1`: one message per call, for comparing.
    one_by_one: bool,
}

impl GsoBatch {
    /// A batch of at most `max_segments` datagrams a run (buffer allocated once).
    pub fn new(max_segments: usize) -> Self {
        GsoBatch {
            buf: vec![0; MAX_BYTES + ROOM],
            len: 0,
            runs: Vec::with_capacity(MAX_RUNS),
            max_segments: max_segments.clamp(1, 64),
            sends: 0,
            datagrams: 0,
            mmsg_calls: 0,
            mmsg_runs: 0,
            one_by_one: std::env::var_os("VMVPN_NO_MMSG").is_some_and(|v| v == "1"),
        }
    }

    /// GSO sends of more than one datagram so far, and the datagrams in them.
    pub fn stats(&self) -> (u64, u64) {
        (self.sends, self.datagrams)
    }

    /// `sendmmsg` calls of more than one run so far, and the runs in them.
    pub fn mmsg_stats(&self) -> (u64, u64) {
        (self.mmsg_calls, self.mmsg_runs)
    }

    /// Where the next datagram may be written: at least `ROOM` bytes, after those gathered.
    pub fn room(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Add one datagram (copied in); sends what was gathered first if it cannot join.
    /// Returns the number of datagrams whose send failed.
    pub fn push(&mut self, udp: &Udp, to: SocketAddr, d: &[u8]) -> u32 {
        match self.room().get_mut(..d.len()) {
            Some(room) => {
                room.copy_from_slice(d);
                self.commit(udp, to, d.len())
            }
            // Larger than any datagram the core makes; sent alone, after what waits.
            None => self.flush(udp) + u32::from(udp.send_to(d, to).is_err()),
        }
    }

    /// Add the datagram of `n` bytes written at the start of `room()`: to the last run if
    /// it can join it, else as a new run; sends what was gathered first when the runs or
    /// the bytes are full. Returns the number of datagrams whose send failed.
    pub fn commit(&mut self, udp: &Udp, to: SocketAddr, n: usize) -> u32 {
        let n = n.min(self.buf.len() - self.len);
        let mut failed = 0;
        if self.len + n > MAX_BYTES || (!self.joins(to, n) && self.runs.len() == MAX_RUNS) {
            let at = self.len;
            failed += self.flush(udp);
            // The new datagram starts the next batch: moved to the front (once a batch).
            self.buf.copy_within(at..at + n, 0);
        }
        if !self.joins(to, n) {
            self.runs.push(Run {
                start: self.len,
                len: 0,
                segment: n,
                count: 0,
                to,
            });
        }
        if let Some(r) = self.runs.last_mut() {
            r.len += n;
            r.count += 1;
        }
        self.len += n;
        failed
    }

    /// Whether a datagram of `n` bytes to `to` can join the last run.
    fn joins(&self, to: SocketAddr, n: usize) -> bool {
        self.runs.last().is_some_and(|r| {
            r.to == to
                && n <= r.segment
                // A shorter datagram ended the run.
                && r.len == r.count * r.segment
                && r.count < self.max_segments
        })
    }

    /// Send what was gathered. Returns the number of datagrams whose send failed.
    pub fn flush(&mut self, udp: &Udp) -> u32 {
        let mut failed = 0;
        let mut i = 0;
        while i < self.runs.len() {
            let left = &self.runs[i..];
            let taken = if left.len() > 1 && !self.one_by_one {
                match udp.send_runs(&self.buf, left) {
                    Ok(k) => {
                        if k > 1 {
                            self.mmsg_calls += 1;
                            self.mmsg_runs += k as u64;
                        }
                        k
                    }
                    Err(_) => 0,
                }
            } else {
                0
            };
            for r in &left[..taken.min(left.len())] {
                if r.count > 1 {
                    self.sends += 1;
                    self.datagrams += r.count as u64;
                }
            }
            if taken > 0 {
                i += taken;
                continue;
            }
            // One run alone, or the one the kernel would not take: on its own.
            failed += self.send_one(udp, i);
            i += 1;
        }
        self.runs.clear();
        self.len = 0;
        failed
    }

    /// Send run `i` by itself: one GSO send, or one send per datagram.
    fn send_one(&mut self, udp: &Udp, i: usize) -> u32 {
        let r = self.runs[i];
        let data = &self.buf[r.start..r.start + r.len];
        if r.count > 1 && self.max_segments > 1 && udp.send_gso(data, r.segment, r.to).is_ok() {
            self.sends += 1;
            self.datagrams += r.count as u64;
            return 0;
        }
        let mut failed = 0;
        for d in data.chunks(r.segment.max(1)) {
            if udp.send_to(d, r.to).is_err() {
                failed += 1;
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;

    /// Each socket of `rx` receives its datagrams of `sent`, whole and in order.
    fn expect_in_order(rx: &[UdpSocket], sent: &[Vec<Vec<u8>>]) {
        for (peer, socket) in rx.iter().enumerate() {
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut buf = vec![0u8; 65536];
            for (i, want) in sent[peer].iter().enumerate() {
                let n = socket.recv(&mut buf).expect("a datagram");
                assert_eq!(&buf[..n], &want[..], "peer {peer}, datagram {i}");
            }
        }
    }

    fn datagram(tag: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
    }

    /// Every datagram, written in place or pushed, arrives once, whole and in order, across
    /// batch ends (another peer, a shorter datagram, the segment cap, the byte cap).
    #[test]
    fn datagrams_written_in_place_arrive_whole_and_in_order() {
        let tx = Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let rx: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let to: Vec<SocketAddr> = rx.iter().map(|s| s.local_addr().expect("addr")).collect();
        let mut batch = GsoBatch::new(8);
        // (peer, length, written in place?)
        let mut plan = Vec::new();
        for i in 0..20 {
            plan.push((0, 1400, i % 3 != 0));
        }
        plan.push((0, 900, true));
        plan.push((0, 1400, true));
        plan.push((1, 1400, true));
        plan.push((1, 1400, false));
        plan.push((0, 1400, true));
        for i in 0..60 {
            plan.push((1, 1200, i % 2 == 0));
        }
        let mut sent: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        let mut failed = 0;
        for (k, &(peer, len, in_place)) in plan.iter().enumerate() {
            let d = datagram(k as u8, len);
            if in_place {
                let room = batch.room();
                assert!(room.len() >= ROOM);
                room[..len].copy_from_slice(&d);
                failed += batch.commit(&tx, to[peer], len);
            } else {
                failed += batch.push(&tx, to[peer], &d);
            }
            sent[peer].push(d);
        }
        failed += batch.flush(&tx);
        assert_eq!(failed, 0);
        let (sends, carried) = batch.stats();
        assert!(
            sends >= 5 && carried > 60,
            "GSO used: {sends} sends, {carried} datagrams"
        );
        expect_in_order(&rx, &sent);
    }

    /// Small datagrams to three peers in turn: runs of one datagram each, sent many to a
    /// `sendmmsg`; a run the kernel refuses (an IPv6 peer on an IPv4 socket) is counted
    /// failed and the runs after it still leave, each peer's in order.
    #[test]
    fn runs_to_peers_in_turn_share_a_sendmmsg_and_a_refused_run_loses_only_itself() {
        let tx = Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let rx: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let mut to: Vec<SocketAddr> = rx.iter().map(|s| s.local_addr().expect("addr")).collect();
        let refused: SocketAddr = "[2001:db8::1]:7401".parse().expect("addr");
        to.push(refused);
        let mut batch = GsoBatch::new(16);
        let mut sent: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
        let mut failed = 0;
        for k in 0..120usize {
            // Peers 0, 1, 2 in turn; every 10th datagram to the refused one instead.
            let peer = if k % 10 == 9 { 3 } else { k % 3 };
            let d = datagram(k as u8, 64 + k % 7);
            failed += batch.push(&tx, to[peer], &d);
            if peer < 3 {
                sent[peer].push(d);
            }
        }
        failed += batch.flush(&tx);
        assert_eq!(failed, 12, "only the refused peer's datagrams fail");
        let (calls, runs) = batch.mmsg_stats();
        // Every run but the refused ones left in a sendmmsg; each refusal ends one call
        // (the kernel stops at it), so at most 12 + 4 calls (32 runs a call at most).
        assert!(
            runs == 108 && calls <= 16,
            "{calls} sendmmsg carried {runs} runs"
        );
        expect_in_order(&rx, &sent);
    }
}
