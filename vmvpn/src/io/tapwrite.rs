//! The TAP writer thread (`[host] threads = 3`): it writes the frames the receive side's
//! coalescer merged (`offload::gro`) to their offload TAP, beside the loop. Such a write is
//! more than a copy: the kernel carries the 64 KB frame through the bridge and up the VM's
//! stack to its socket within the syscall, the largest share of a receiving loop's time
//! after the AEAD.
//!
//! The coalescer's buffer itself is handed over and an empty one swapped in (no copy);
//! the buffers circulate through an `io::worker`. A frame the loop writes itself may belong
//! to a flow whose earlier segments the thread still holds (a pushed segment that could
//! not be merged): it waits for the thread first (`must_follow`). Frames no merged flow can
//! be part of (ARP, ICMP, ICMPv6) do not wait: a ping is not held behind 64 KB writes.

use std::io;
use std::sync::Arc;

use crate::io::tap::TapDevice;
use crate::io::worker::Worker;
use crate::offload::gro::Coalescer;

/// Merged frames of fewer segments are written by the loop itself when the thread holds
/// nothing: waking the thread would cost them more than it saves.
const HAND_OFF_FROM: usize = 4;

/// One merged frame on its way to a TAP, and what became of it.
pub(crate) struct Merged {
    /// Held only while the thread holds the frame (a LAN removed meanwhile keeps its TAP
    /// open until then).
    tap: Option<Arc<TapDevice>>,
    lan: usize,
    /// The virtio-net header, then the frame.
    buf: Vec<u8>,
    segs: usize,
    failed: bool,
}

impl Merged {
    fn new() -> Self {
        Merged {
            tap: None,
            lan: 0,
            buf: Coalescer::buffer(),
            segs: 0,
            failed: false,
        }
    }

    /// Segments lost to a failed write, once (`lost(lan, segments)`).
    fn report(&mut self, lost: &mut impl FnMut(usize, usize)) {
        if std::mem::take(&mut self.failed) {
            lost(self.lan, self.segs);
        }
    }
}

/// Merged frames to their TAPs: on the thread once started, else here.
#[derive(Default)]
pub struct TapWrites {
    worker: Option<Worker<Merged>>,
    /// Frames handed to the thread.
    handed: u64,
}

impl TapWrites {
    /// From now on merged frames go to a thread of their own; on error nothing changes.
    pub fn start(&mut self, realtime: bool) -> io::Result<()> {
        self.worker = Some(Worker::start("vmvpn-tapw", realtime, |m: &mut Merged| {
            if let Some(tap) = m.tap.take() {
                m.failed = tap.send(&m.buf).is_err();
            }
        })?);
        Ok(())
    }

    /// Frames handed to the thread so far.
    pub fn handed_off(&self) -> u64 {
        self.handed
    }

    /// Write the merged frame in `buf` (virtio-net header first, `segs` segments) to
    /// `taps[lan]`: handed to the thread with an empty buffer swapped into `buf`, or
    /// written here. Segments lost to failed writes go to `lost(lan, segments)`, now or
    /// when the thread gives the frame back.
    pub fn write(
        &mut self,
        taps: &[Arc<TapDevice>],
        lan: usize,
        buf: &mut Vec<u8>,
        segs: usize,
        mut lost: impl FnMut(usize, usize),
    ) {
        let Some(tap) = taps.get(lan) else {
            lost(lan, segs);
            return;
        };
        if let Some(w) = self.worker.as_mut() {
            w.reap(|m| m.report(&mut lost));
            if (w.in_flight() > 0 || segs >= HAND_OFF_FROM)
                && let Some(mut m) = w.next_free(Merged::new)
            {
                m.report(&mut lost);
                std::mem::swap(&mut m.buf, buf);
                buf.clear();
                m.tap = Some(tap.clone());
                m.lan = lan;
                m.segs = segs;
                match w.hand_off(m) {
                    Ok(()) => {
                        self.handed += 1;
                        return;
                    }
                    Err(mut m) => {
                        // The thread is gone (it ends only with this): written here, now
                        // and from now on.
                        tracing::error!(
                            "the TAP writer thread ended; writing from the data-plane thread"
                        );
                        self.worker = None;
                        std::mem::swap(&mut m.buf, buf);
                    }
                }
            }
        }
        if tap.send(buf).is_err() {
            lost(lan, segs);
        }
    }

    /// Before the loop writes `frame` itself: wait for the thread's frames if `frame` may
    /// belong to one of their flows (see the module documentation).
    pub fn before_direct(&mut self, frame: &[u8], lost: impl FnMut(usize, usize)) {
        if self.worker.as_ref().is_some_and(|w| w.in_flight() > 0) && must_follow(frame) {
            self.wait_all(lost);
        }
    }

    /// Count what the thread failed to write so far.
    pub fn reap(&mut self, mut lost: impl FnMut(usize, usize)) {
        if let Some(w) = self.worker.as_mut() {
            w.reap(|m| m.report(&mut lost));
        }
    }

    /// Wait until the thread has written everything handed to it.
    pub fn wait_all(&mut self, mut lost: impl FnMut(usize, usize)) {
        if let Some(w) = self.worker.as_mut() {
            w.wait_all(|m| m.report(&mut lost));
        }
    }
}

/// Whether an Ethernet frame may be part of a TCP or UDP flow (merged frames are only
/// these): anything but ARP, and IP carrying ICMP or ICMPv6 directly.
pub(crate) fn must_follow(frame: &[u8]) -> bool {
    const ETH: usize = 14;
    match frame.get(12..14) {
        Some([0x08, 0x06]) => false,
        Some([0x08, 0x00]) => frame.get(ETH + 9) != Some(&1),
        Some([0x86, 0xdd]) => frame.get(ETH + 6) != Some(&58),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::must_follow;

    fn eth(ethertype: [u8; 2], rest: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(rest);
        f
    }

    #[test]
    fn only_arp_and_icmp_pass_the_merged_frames() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        let proto4 = |p: u8| {
            let mut h = v4;
            h[9] = p;
            eth([0x08, 0x00], &h)
        };
        let next6 = |p: u8| {
            let mut h = v6;
            h[6] = p;
            eth([0x86, 0xdd], &h)
        };
        assert!(!must_follow(&eth([0x08, 0x06], &[0u8; 28])), "ARP");
        assert!(!must_follow(&proto4(1)), "ICMP");
        assert!(!must_follow(&next6(58)), "ICMPv6");
        assert!(must_follow(&proto4(6)), "TCP");
        assert!(must_follow(&proto4(17)), "UDP");
        assert!(must_follow(&next6(6)), "TCP over IPv6");
        // An extension header may hide a TCP segment; VLAN tags and truncated frames
        // are not looked into.
        assert!(must_follow(&next6(0)), "hop-by-hop");
        assert!(must_follow(&eth([0x81, 0x00], &[0u8; 24])), "VLAN");
        assert!(must_follow(&[0u8; 5]), "truncated");
        assert!(must_follow(&eth([0x08, 0x00], &[])), "IPv4 cut short");
    }
}
