//! Sealed datagrams to one peer gathered into a UDP GSO batch: equal-sized datagrams, the
//! last possibly shorter, sent in one `sendmsg` that the kernel segments. Falls back to one
//! send per datagram when the kernel cannot, or when a send fails.

use std::net::SocketAddr;

use crate::io::udp::{SLOT, Udp};
use crate::proto::{HEADER_LEN, TAG_LEN};

/// Bytes one GSO send may carry (the kernel's limit is 64 KB of UDP payload).
const MAX_BYTES: usize = 65_000;

/// What the forwarding core needs to seal one frame in place: header room, the largest
/// frame, the tag (`Engine::handle_tap_frame`'s buffer).
pub const ROOM: usize = HEADER_LEN + SLOT + TAG_LEN;

/// The batch being gathered. Its buffer has `ROOM` bytes free after the datagrams gathered,
/// so that the next frame can be written and sealed there in place (`room`, `commit`)
/// instead of being copied in after sealing (`push`).
pub struct GsoBatch {
    buf: Vec<u8>,
    /// Bytes gathered: `buf[..len]`, at most `MAX_BYTES` between calls.
    len: usize,
    to: Option<SocketAddr>,
    seg: usize,
    count: usize,
    /// A shorter datagram ends a batch.
    closed: bool,
    max_segments: usize,
    /// GSO sends made, and the datagrams they carried.
    sends: u64,
    datagrams: u64,
}

impl GsoBatch {
    /// A batch of at most `max_segments` datagrams (buffer allocated once).
    pub fn new(max_segments: usize) -> Self {
        GsoBatch {
            buf: vec![0; MAX_BYTES + ROOM],
            len: 0,
            to: None,
            seg: 0,
            count: 0,
            closed: false,
            max_segments: max_segments.clamp(1, 64),
            sends: 0,
            datagrams: 0,
        }
    }

    /// GSO sends of more than one datagram so far, and the datagrams in them.
    pub fn stats(&self) -> (u64, u64) {
        (self.sends, self.datagrams)
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

    /// Add the datagram of `n` bytes written at the start of `room()`; sends what was
    /// gathered first if it cannot join. Returns the number of datagrams whose send failed.
    pub fn commit(&mut self, udp: &Udp, to: SocketAddr, n: usize) -> u32 {
        let n = n.min(self.buf.len() - self.len);
        let mut failed = 0;
        let fits = self.count > 0
            && self.to == Some(to)
            && n <= self.seg
            && !self.closed
            && self.count < self.max_segments
            && self.len + n <= MAX_BYTES;
        if !fits {
            let at = self.len;
            failed += self.flush(udp);
            // The new datagram starts the next batch: moved to the front (once a batch).
            self.buf.copy_within(at..at + n, 0);
            self.to = Some(to);
            self.seg = n;
        }
        self.len += n;
        self.count += 1;
        if n < self.seg {
            self.closed = true;
        }
        // Keeps `ROOM` free after the datagrams gathered.
        if self.len > MAX_BYTES {
            failed += self.flush(udp);
        }
        failed
    }

    /// Send what was gathered. Returns the number of datagrams whose send failed.
    pub fn flush(&mut self, udp: &Udp) -> u32 {
        let to = self.to.take();
        let (len, count) = (self.len, self.count);
        self.len = 0;
        self.count = 0;
        self.closed = false;
        let Some(to) = to else { return 0 };
        if count == 0 {
            return 0;
        }
        let gathered = &self.buf[..len];
        let mut failed = 0;
        let sent =
            count > 1 && self.max_segments > 1 && udp.send_gso(gathered, self.seg, to).is_ok();
        if sent {
            self.sends += 1;
            self.datagrams += count as u64;
        } else {
            for d in gathered.chunks(self.seg.max(1)) {
                if udp.send_to(d, to).is_err() {
                    failed += 1;
                }
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
}
