//! Sealed datagrams gathered into runs, a run being equal-sized datagrams to one peer (the
//! last possibly shorter) that the kernel segments from one message (UDP GSO). The runs
//! gathered, to one peer or several, leave in one `sendmmsg`: small frames to peers in
//! turn share a syscall as a bulk run to one peer does. Falls back to one send per
//! datagram when the kernel cannot, or when a send fails.
//!
//! A run may hold datagrams not sealed yet (`commit_unsealed`): they are sealed just before
//! they leave. With a send thread (`start_sender`, `[host] threads = 2`), a flush hands the
//! gathered runs to it and takes an empty buffer back (`io::worker`): sealing and the send
//! syscalls, about half of a sending host's data-plane time, then run beside the loop. A
//! datagram the loop sends itself waits for the thread first (`flush_and_wait`).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::io::udp::{MAX_RUNS, Run, SLOT, Udp};
use crate::io::worker::Worker;
use crate::proto::crypto::SealKey;
use crate::proto::{HEADER_LEN, TAG_LEN, flow_label};

/// Bytes one flush may carry (the kernel's limit for one GSO send is 64 KB of UDP payload).
const MAX_BYTES: usize = 65_000;

/// Batches of fewer datagrams are sent by the loop itself when the send thread holds
/// nothing (see `flush_keeping`).
const HAND_OFF_FROM: usize = 4;

/// What the forwarding core needs to seal one frame in place: header room, the largest
/// frame, the tag (`Engine::handle_tap_frame`'s buffer).
pub const ROOM: usize = HEADER_LEN + SLOT + TAG_LEN;

/// What a send did: GSO sends (runs of more than one datagram) and the datagrams they
/// carried; `sendmmsg` calls of more than one run and the runs they carried; datagrams whose
/// send failed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SendStats {
    pub(crate) sends: u64,
    pub(crate) datagrams: u64,
    pub(crate) mmsg_calls: u64,
    pub(crate) mmsg_runs: u64,
    pub(crate) failed: u32,
}

impl SendStats {
    fn add(&mut self, o: SendStats) {
        self.sends += o.sends;
        self.datagrams += o.datagrams;
        self.mmsg_calls += o.mmsg_calls;
        self.mmsg_runs += o.mmsg_runs;
        self.failed += o.failed;
    }
}

/// Runs gathered in one buffer: what a flush sends, here or on the send thread.
pub struct Gathered {
    buf: Vec<u8>,
    /// Bytes gathered: `buf[..len]`, at most `MAX_BYTES` between calls.
    len: usize,
    /// The runs in `buf[..len]`, in order; capacity `MAX_RUNS`, allocated once.
    runs: Vec<Run>,
    /// For each run, the key its datagrams are still to be sealed with (None: sealed).
    keys: Vec<Option<Arc<SealKey>>>,
    /// What sending these runs did (read back with the buffer from the send thread).
    pub(crate) done: SendStats,
}

impl Gathered {
    /// An empty buffer (allocated once).
    pub(crate) fn new() -> Self {
        Gathered {
            buf: vec![0; MAX_BYTES + ROOM],
            len: 0,
            runs: Vec::with_capacity(MAX_RUNS),
            keys: Vec::with_capacity(MAX_RUNS),
            done: SendStats::default(),
        }
    }

    /// Datagrams gathered.
    fn datagrams(&self) -> usize {
        self.runs.iter().map(|r| r.count).sum()
    }

    /// Seal what waits to be sealed, then send every run; the buffer is empty after.
    pub(crate) fn send(&mut self, udp: &Udp, max_segments: usize, one_by_one: bool) {
        self.seal();
        group_by_port(&mut self.runs);
        let mut i = 0;
        while i < self.runs.len() {
            let left = &self.runs[i..];
            let taken = if left.len() > 1 && !one_by_one {
                match udp.send_runs(&self.buf, left) {
                    Ok(k) => {
                        if k > 1 {
                            self.done.mmsg_calls += 1;
                            self.done.mmsg_runs += k as u64;
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
                    self.done.sends += 1;
                    self.done.datagrams += r.count as u64;
                }
            }
            if taken > 0 {
                i += taken;
                continue;
            }
            // One run alone, or the one the kernel would not take: on its own.
            self.send_one(udp, i, max_segments);
            i += 1;
        }
        self.runs.clear();
        self.keys.clear();
        self.len = 0;
    }

    /// Seal, in place, the datagrams of every run that still has its key.
    fn seal(&mut self) {
        for (r, key) in self.runs.iter().zip(self.keys.iter_mut()) {
            let Some(key) = key.take() else { continue };
            for d in self.buf[r.start..r.start + r.len].chunks_mut(r.segment.max(1)) {
                if key.seal_datagram(d).is_none() {
                    // Shorter than a header and tag: the core never makes one. It would
                    // leave unauthenticated, to be dropped there; counted failed here.
                    self.done.failed += 1;
                }
            }
        }
    }

    /// Send run `i` by itself: one GSO send, or one send per datagram.
    fn send_one(&mut self, udp: &Udp, i: usize, max_segments: usize) {
        let r = self.runs[i];
        let data = &self.buf[r.start..r.start + r.len];
        if r.count > 1 && max_segments > 1 && udp.send_gso(data, r.segment, r.to, r.port).is_ok() {
            self.done.sends += 1;
            self.done.datagrams += r.count as u64;
            return;
        }
        for d in data.chunks(r.segment.max(1)) {
            if udp.send_from(r.port, d, r.to).is_err() {
                self.done.failed += 1;
            }
        }
    }
}

/// The runs being gathered. Its buffer has `ROOM` bytes free after the datagrams gathered,
/// so that the next frame can be written and sealed there in place (`room`, `commit`)
/// instead of being copied in after sealing (`push`).
pub struct GsoBatch {
    cur: Gathered,
    max_segments: usize,
    /// What the sends so far did (with a send thread: those whose buffer came back).
    stats: SendStats,
    /// `VMVPN_NO_MMSG=1`: one message per call, for comparing.
    one_by_one: bool,
    /// The send thread, when there is one (`[host] threads`).
    sender: Option<Worker<Gathered>>,
    /// Batches handed to it.
    handed: u64,
}

impl GsoBatch {
    /// A batch of at most `max_segments` datagrams a run (buffer allocated once).
    pub fn new(max_segments: usize) -> Self {
        GsoBatch {
            cur: Gathered::new(),
            max_segments: max_segments.clamp(1, 64),
            stats: SendStats::default(),
            one_by_one: std::env::var_os("VMVPN_NO_MMSG").is_some_and(|v| v == "1"),
            sender: None,
            handed: 0,
        }
    }

    /// From now on flushes go to a send thread of their own, which sends on `udp` (a
    /// handle on the data socket), on real-time scheduling if `realtime`; see `io::worker`.
    /// On error nothing changes.
    pub fn start_sender(&mut self, udp: Udp, realtime: bool) -> std::io::Result<()> {
        let (max_segments, one_by_one) = (self.max_segments, self.one_by_one);
        self.sender = Some(Worker::start(
            "vmvpn-send",
            realtime,
            move |g: &mut Gathered| g.send(&udp, max_segments, one_by_one),
        )?);
        Ok(())
    }

    /// Whether flushes go to a send thread.
    pub fn threaded(&self) -> bool {
        self.sender.is_some()
    }

    /// Batches handed to the send thread so far.
    pub fn handed_off(&self) -> u64 {
        self.handed
    }

    /// GSO sends of more than one datagram so far, and the datagrams in them.
    pub fn stats(&self) -> (u64, u64) {
        (self.stats.sends, self.stats.datagrams)
    }

    /// `sendmmsg` calls of more than one run so far, and the runs in them.
    pub fn mmsg_stats(&self) -> (u64, u64) {
        (self.stats.mmsg_calls, self.stats.mmsg_runs)
    }

    /// Where the next datagram may be written: at least `ROOM` bytes, after those gathered.
    pub fn room(&mut self) -> &mut [u8] {
        let len = self.cur.len;
        &mut self.cur.buf[len..]
    }

    /// Add one sealed datagram (copied in); sends what was gathered first if it cannot
    /// join. Returns the number of datagrams whose send failed.
    pub fn push(&mut self, udp: &Udp, to: SocketAddr, d: &[u8]) -> u32 {
        match self.room().get_mut(..d.len()) {
            Some(room) => {
                room.copy_from_slice(d);
                self.commit(udp, to, d.len())
            }
            // Larger than any datagram the core makes; sent alone, after what waits.
            None => {
                let port = d.get(2).map_or(0, |f| flow_label(*f));
                self.flush_and_wait(udp) + u32::from(udp.send_from(port, d, to).is_err())
            }
        }
    }

    /// `push` for a datagram not sealed yet (header, frame, room for the tag): `key`
    /// seals it before it leaves.
    pub fn push_unsealed(
        &mut self,
        udp: &Udp,
        to: SocketAddr,
        d: &[u8],
        key: &Arc<SealKey>,
    ) -> u32 {
        match self.room().get_mut(..d.len()) {
            Some(room) => {
                room.copy_from_slice(d);
                self.commit_unsealed(udp, to, d.len(), key)
            }
            // Larger than any datagram the core makes (it never leaves such unsealed).
            None => 1,
        }
    }

    /// Add the sealed datagram of `n` bytes written at the start of `room()`: to the last
    /// run if it can join it, else as a new run; sends what was gathered first when the
    /// runs or the bytes are full. Returns the number of datagrams whose send failed.
    pub fn commit(&mut self, udp: &Udp, to: SocketAddr, n: usize) -> u32 {
        self.add(udp, to, n, None)
    }

    /// `commit` for a datagram written (header, frame, room for the tag) but not sealed:
    /// `key` seals it before it leaves.
    pub fn commit_unsealed(
        &mut self,
        udp: &Udp,
        to: SocketAddr,
        n: usize,
        key: &Arc<SealKey>,
    ) -> u32 {
        self.add(udp, to, n, Some(key))
    }

    fn add(&mut self, udp: &Udp, to: SocketAddr, n: usize, key: Option<&Arc<SealKey>>) -> u32 {
        let n = n.min(self.cur.buf.len() - self.cur.len);
        // The flow port it leaves from, as the core labelled it (`engine::spread`).
        let port = self
            .cur
            .buf
            .get(self.cur.len + 2)
            .map_or(0, |f| flow_label(*f));
        let to = (to, port);
        let mut failed = 0;
        if self.cur.len + n > MAX_BYTES
            || (!self.joins(to, n, key) && self.cur.runs.len() == MAX_RUNS)
        {
            let at = self.cur.len;
            // The new datagram starts the next batch: moved to the front of the buffer
            // the next batch gathers in (once a batch).
            failed += self.flush_keeping(udp, at, n);
        }
        if !self.joins(to, n, key) {
            let start = self.cur.len;
            self.cur.runs.push(Run {
                start,
                len: 0,
                segment: n,
                count: 0,
                to: to.0,
                port: to.1,
            });
            self.cur.keys.push(key.cloned());
        }
        if let Some(r) = self.cur.runs.last_mut() {
            r.len += n;
            r.count += 1;
        }
        self.cur.len += n;
        failed
    }

    /// Whether a datagram of `n` bytes to `to` from flow port `port` (unsealed under
    /// `key`) can join the last run.
    fn joins(&self, (to, port): (SocketAddr, u8), n: usize, key: Option<&Arc<SealKey>>) -> bool {
        let same_key = match (self.cur.keys.last(), key) {
            (Some(None), None) => true,
            (Some(Some(a)), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_key
            && self.cur.runs.last().is_some_and(|r| {
                r.to == to
                    && r.port == port
                    && n <= r.segment
                    // A shorter datagram ended the run.
                    && r.len == r.count * r.segment
                    && r.count < self.max_segments
            })
    }

    /// Send what was gathered. Returns the number of datagrams whose send failed (with a
    /// send thread: those of earlier flushes whose buffers came back since).
    pub fn flush(&mut self, udp: &Udp) -> u32 {
        self.flush_keeping(udp, 0, 0)
    }

    /// `flush`, then wait until the send thread has sent everything: for a datagram sent
    /// directly on the socket, which must not pass the data before it.
    pub fn flush_and_wait(&mut self, udp: &Udp) -> u32 {
        let mut failed = self.flush(udp);
        if let Some(s) = self.sender.as_mut() {
            let stats = &mut self.stats;
            s.wait_all(|g| failed += take_done(stats, g));
        }
        failed
    }

    /// Send what was gathered in `buf[..at]`; the `n` bytes at `at` (a datagram written
    /// after them) move to the front of the buffer that gathers next.
    fn flush_keeping(&mut self, udp: &Udp, at: usize, n: usize) -> u32 {
        let mut failed = 0;
        if let Some(s) = self.sender.as_mut() {
            let stats = &mut self.stats;
            s.reap(|g| failed += take_done(stats, g));
        }
        if !self.cur.runs.is_empty()
            && let Some(s) = self.sender.as_mut()
            // A few datagrams with nothing ahead of them (a ping, an ACK) leave from here:
            // waking the thread would cost them more than it saves.
            && (s.in_flight() > 0 || self.cur.datagrams() >= HAND_OFF_FROM)
            && let Some(mut free) = s.next_free(Gathered::new)
        {
            failed += take_done(&mut self.stats, &mut free);
            free.buf[..n].copy_from_slice(&self.cur.buf[at..at + n]);
            let full = std::mem::replace(&mut self.cur, free);
            match s.hand_off(full) {
                Ok(()) => {
                    self.handed += 1;
                    return failed;
                }
                Err(mut full) => {
                    // The send thread is gone (it ends only with the batch): sent here,
                    // now and from now on.
                    tracing::error!("the send thread ended; sending from the data-plane thread");
                    self.sender = None;
                    full.send(udp, self.max_segments, self.one_by_one);
                    return failed + take_done(&mut self.stats, &mut full);
                }
            }
        }
        let cur = &mut self.cur;
        if !cur.runs.is_empty() {
            cur.send(udp, self.max_segments, self.one_by_one);
        }
        cur.buf.copy_within(at..at + n, 0);
        failed + take_done(&mut self.stats, cur)
    }
}

/// Order runs so that one `sendmmsg` (one socket) carries as many of a flow port's as it
/// may: in rounds, each taking, in the order gathered, the runs of the port of the first
/// run left, except those to a peer that has an earlier run left on another port. A peer's
/// datagrams then still leave in the order of their sequence numbers, which its receiver
/// reads loss and reordering from; runs to other peers may go ahead. By hand: at most
/// `MAX_RUNS` runs, nothing allocated, nothing moved when all share one port.
fn group_by_port(runs: &mut [Run]) {
    let n = runs.len().min(MAX_RUNS);
    let Some(&first) = runs.first() else { return };
    if runs[..n].iter().all(|r| r.port == first.port) {
        return;
    }
    let mut out = [first; MAX_RUNS];
    let mut taken = [false; MAX_RUNS];
    let mut k = 0;
    while let Some(lead) = (0..n).find(|&i| !taken[i]) {
        let port = runs[lead].port;
        let mut blocked = [None::<SocketAddr>; MAX_RUNS];
        let mut nb = 0;
        for i in lead..n {
            if taken[i] {
                continue;
            }
            let r = runs[i];
            if r.port == port && !blocked[..nb].contains(&Some(r.to)) {
                taken[i] = true;
                out[k] = r;
                k += 1;
            } else if !blocked[..nb].contains(&Some(r.to)) {
                blocked[nb] = Some(r.to);
                nb += 1;
            }
        }
    }
    runs[..n].copy_from_slice(&out[..n]);
}

/// Fold what a send did into the totals; the failures, to be counted by the caller.
fn take_done(stats: &mut SendStats, g: &mut Gathered) -> u32 {
    let done = std::mem::take(&mut g.done);
    stats.add(SendStats { failed: 0, ..done });
    done.failed
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

    /// A datagram of `len` bytes, flags (byte 2) 0: no flow label, the data port.
    fn datagram(tag: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| if i == 2 { 0 } else { tag.wrapping_add(i as u8) })
            .collect()
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

    /// Labelled datagrams leave from their flow port (label k from the k-th), unlabelled
    /// ones and those labelled beyond the ports opened from the data port. One peer's
    /// datagrams arrive in the order sent whatever their ports (its receiver counts
    /// reordering from their sequence numbers); runs of one port to peers in turn still
    /// share `sendmmsg` calls.
    #[test]
    fn labelled_datagrams_leave_from_their_flow_port_in_order() {
        let mut tx = Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        assert_eq!(tx.open_flow_ports(3).expect("flow ports"), 3);
        let ports = tx.flow_port_addrs();
        assert_eq!(ports.len(), 3);
        let data_port = tx.local_addr().expect("addr");
        assert!(!ports.contains(&data_port));
        let rx: Vec<UdpSocket> = (0..3)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                let _ = crate::io::udp::set_buffers(&socket2::SockRef::from(&s), 4 << 20, true);
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                s
            })
            .collect();
        let to: Vec<SocketAddr> = rx.iter().map(|s| s.local_addr().expect("addr")).collect();
        let labelled = |k: usize, label: u8, len: usize| {
            let mut d = datagram(k as u8, len);
            d[2] = label << crate::proto::FLOW_LABEL_SHIFT;
            d
        };
        // Peer 0: labels 0..=4 (4: beyond the ports), runs of 3 in turn; then peers 1
        // (label 1) and 2 (label 2) in turn, one small datagram each.
        let mut one = GsoBatch::new(16);
        let mut turns = GsoBatch::new(16);
        let mut sent: Vec<Vec<(u8, Vec<u8>)>> = vec![Vec::new(); 3];
        let mut failed = 0;
        for k in 0..150usize {
            let d = labelled(k, (k / 3 % 5) as u8, 1000);
            failed += one.push(&tx, to[0], &d);
            sent[0].push((d[2], d));
        }
        for k in 0..120usize {
            let peer = 1 + k % 2;
            let d = labelled(k, peer as u8, 80);
            failed += turns.push(&tx, to[peer], &d);
            sent[peer].push((d[2], d));
        }
        failed += one.flush(&tx) + turns.flush(&tx);
        assert_eq!(failed, 0);
        let (gso, _) = one.stats();
        assert!(gso > 10, "{gso} GSO sends");
        let (calls, runs) = turns.mmsg_stats();
        assert!(
            runs > 100 && runs >= 8 * calls,
            "{calls} sendmmsg carried {runs} runs"
        );
        let mut buf = vec![0u8; 2048];
        for (peer, socket) in rx.iter().enumerate() {
            for (i, (flags, want)) in sent[peer].iter().enumerate() {
                let (n, from) = socket.recv_from(&mut buf).expect("a datagram");
                let label = usize::from(flags >> crate::proto::FLOW_LABEL_SHIFT);
                assert!(
                    buf[..n] == want[..],
                    "peer {peer}: datagram {i} out of order"
                );
                let port = match label {
                    1..=3 => ports[label - 1],
                    _ => data_port,
                };
                assert_eq!(from, port, "peer {peer}, datagram {i}, label {label}");
            }
        }
    }

    /// Datagrams left unsealed by the core and datagrams sealed already, to two peers, in
    /// more batches than the send thread has buffers (the loop waits for one back): each
    /// arrives once, sealed under its key, in order, and a datagram sent directly after
    /// `flush_and_wait` arrives after all of them. The same without the thread.
    #[test]
    fn unsealed_datagrams_are_sealed_before_they_leave_with_or_without_the_send_thread() {
        use std::sync::Arc;

        use crate::proto::crypto::SealKey;

        for threaded in [true, false] {
            let tx = Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
            let rx: Vec<UdpSocket> = (0..2)
                .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
                .collect();
            // A loopback socket drops what its buffer cannot hold, and the readers share
            // the cores with every other test: each peer's whole share (about 400 KB, over
            // 1 MB as the kernel counts it) must fit, or a slow reader loses datagrams.
            for socket in &rx {
                let s = socket2::SockRef::from(socket);
                if crate::io::udp::set_buffers(&s, 4 << 20, true).is_err() {
                    let _ = crate::io::udp::set_buffers(&s, 4 << 20, false);
                }
                let got = s.recv_buffer_size().expect("buffer size");
                assert!(
                    got >= 2 << 20,
                    "a receive buffer of {got} bytes: raise net.core.rmem_max"
                );
            }
            let to: Vec<SocketAddr> = rx.iter().map(|s| s.local_addr().expect("addr")).collect();
            let key = Arc::new(SealKey::new(&[7u8; 32]));
            let mut batch = GsoBatch::new(16);
            if threaded {
                batch
                    .start_sender(tx.try_clone().expect("clone"), false)
                    .expect("send thread");
            }
            assert_eq!(batch.threaded(), threaded);
            // (peer, plain bytes after the header, unsealed?)
            let plan: Vec<(usize, usize, bool)> = (0..600)
                .map(|k| (k / 7 % 2, 1300 + (k % 5 == 0) as usize * 60, k % 4 != 3))
                .collect();
            // Readers run while the batch sends: far more than a socket buffer holds.
            let readers: Vec<_> = rx
                .into_iter()
                .enumerate()
                .map(|(peer, socket)| {
                    let count =
                        plan.iter().filter(|p| p.0 == peer).count() + usize::from(peer == 0);
                    std::thread::spawn(move || {
                        socket
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .expect("timeout");
                        let mut buf = vec![0u8; 65536];
                        (0..count)
                            .map(|_| {
                                let n = socket.recv(&mut buf).expect("a datagram");
                                buf[..n].to_vec()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut want: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
            let mut failed = 0;
            for (k, &(peer, plain, unsealed)) in plan.iter().enumerate() {
                let n = HEADER_LEN + plain + TAG_LEN;
                let mut d = datagram(k as u8, n);
                // The sequence number, where the header keeps it.
                d[12..HEADER_LEN].copy_from_slice(&(k as u64).to_be_bytes());
                let mut sealed = d.clone();
                if unsealed {
                    key.seal_datagram(&mut sealed).expect("seal");
                    let room = batch.room();
                    room[..n].copy_from_slice(&d);
                    failed += batch.commit_unsealed(&tx, to[peer], n, &key);
                } else {
                    failed += batch.push(&tx, to[peer], &d);
                    sealed = d;
                }
                want[peer].push(sealed);
            }
            failed += batch.flush_and_wait(&tx);
            tx.send_to(b"last", to[0]).expect("send");
            want[0].push(b"last".to_vec());
            assert_eq!(failed, 0);
            let (sends, carried) = batch.stats();
            assert!(
                sends > 10 && carried > 300,
                "GSO: {sends} sends, {carried} datagrams"
            );
            // More batches than buffers went to the thread (the loop waited for some back).
            let handed = batch.handed_off();
            assert!(
                if threaded { handed > 8 } else { handed == 0 },
                "threaded {threaded}: {handed} batches handed off"
            );
            for (peer, r) in readers.into_iter().enumerate() {
                let got = r.join().expect("reader");
                assert_eq!(got.len(), want[peer].len(), "peer {peer}");
                for (i, (g, w)) in got.iter().zip(&want[peer]).enumerate() {
                    assert!(
                        g == w,
                        "threaded {threaded}: peer {peer}, datagram {i} differs"
                    );
                }
            }
        }
    }
}
