//! Sealed datagrams to one peer gathered into a UDP GSO batch: equal-sized datagrams, the
//! last possibly shorter, sent in one `sendmsg` that the kernel segments. Falls back to one
//! send per datagram when the kernel cannot, or when a send fails.

use std::net::SocketAddr;

use crate::io::udp::Udp;

/// Bytes one GSO send may carry (the kernel's limit is 64 KB of UDP payload).
const MAX_BYTES: usize = 65_000;

/// The batch being gathered.
pub struct GsoBatch {
    buf: Vec<u8>,
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
            buf: Vec::with_capacity(MAX_BYTES + 2048),
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

    /// Add one datagram; sends what was gathered first if it cannot join. Returns the
    /// number of datagrams whose send failed.
    pub fn push(&mut self, udp: &Udp, to: SocketAddr, d: &[u8]) -> u32 {
        let mut failed = 0;
        let fits = self.count > 0
            && self.to == Some(to)
            && d.len() <= self.seg
            && !self.closed
            && self.count < self.max_segments
            && self.buf.len() + d.len() <= MAX_BYTES;
        if !fits {
            failed += self.flush(udp);
            self.to = Some(to);
            self.seg = d.len();
        }
        self.buf.extend_from_slice(d);
        self.count += 1;
        if d.len() < self.seg {
            self.closed = true;
        }
        failed
    }

    /// Send what was gathered. Returns the number of datagrams whose send failed.
    pub fn flush(&mut self, udp: &Udp) -> u32 {
        let Some(to) = self.to else { return 0 };
        if self.count == 0 {
            return 0;
        }
        let mut failed = 0;
        let sent = self.count > 1
            && self.max_segments > 1
            && udp.send_gso(&self.buf, self.seg, to).is_ok();
        if sent {
            self.sends += 1;
            self.datagrams += self.count as u64;
        } else {
            for d in self.buf.chunks(self.seg.max(1)) {
                if udp.send_to(d, to).is_err() {
                    failed += 1;
                }
            }
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
        self.to = None;
        failed
    }
}
