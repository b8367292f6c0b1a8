//! The send thread (`[host] threads = 2`): it seals the data datagrams the loop gathered
//! unsealed (`TapAction::Unsealed`) and sends them, so that the AEAD and the send syscalls,
//! about half of a sending host's data-plane time, run beside the loop instead of in it.
//!
//! The loop hands it full buffers (`Gathered`) through a bounded channel and takes empty
//! ones back through another: a few buffers circulate, allocated once, nothing per packet,
//! no lock beyond the channels' own (one hand-off per batch of up to 64 datagrams). Order
//! is kept: one thread sends the buffers in the order handed off, and a datagram the loop
//! sends itself waits for them first (`GsoBatch::flush_and_wait`). When every buffer is
//! out, the loop waits for one: the thread's pace bounds the loop's, as the socket's did.

use std::io;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use crate::io::batch::Gathered;
use crate::io::udp::Udp;

/// Buffers in circulation: enough to keep the thread busy while the loop fills the next,
/// few enough that what waits stays under a millisecond at 1 Gbit/s per buffer (64 KB).
const POOL: usize = 4;

/// The loop's end of the send thread.
pub struct Sender {
    to_thread: Option<SyncSender<Gathered>>,
    back: Receiver<Gathered>,
    /// Empty buffers on this side (after `wait_all`).
    spare: Vec<Gathered>,
    /// Buffers handed off and not yet back.
    in_flight: usize,
    /// Buffers made so far (at most `POOL` besides the one gathering).
    made: usize,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    /// Start the thread, sending on `udp` (a handle on the data socket); `realtime`: on
    /// SCHED_FIFO as the loop (`[host] realtime`), so that the loop never waits for it
    /// behind busy processes.
    pub fn start(
        udp: Udp,
        max_segments: usize,
        one_by_one: bool,
        realtime: bool,
    ) -> io::Result<Sender> {
        let (to_thread, from_loop) = sync_channel::<Gathered>(POOL);
        let (to_loop, back) = sync_channel::<Gathered>(POOL);
        let thread = std::thread::Builder::new()
            .name("vmvpn-send".into())
            .spawn(move || {
                if realtime && let Err(e) = crate::io::dataplane::set_realtime() {
                    tracing::warn!(error = %e, "real-time scheduling refused for the send thread");
                }
                while let Ok(mut g) = from_loop.recv() {
                    g.send(&udp, max_segments, one_by_one);
                    if to_loop.send(g).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Sender {
            to_thread: Some(to_thread),
            back,
            spare: Vec::with_capacity(POOL),
            in_flight: 0,
            made: 0,
            thread: Some(thread),
        })
    }

    /// An empty buffer: one back from the thread, a new one while fewer than `POOL` exist,
    /// else the next the thread gives back (waiting for it). None: the thread is gone.
    pub(crate) fn next_free(&mut self) -> Option<Gathered> {
        if let Some(g) = self.spare.pop() {
            return Some(g);
        }
        match self.back.try_recv() {
            Ok(g) => {
                self.in_flight -= 1;
                return Some(g);
            }
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        if self.made < POOL {
            self.made += 1;
            return Some(Gathered::new());
        }
        let g = self.back.recv().ok()?;
        self.in_flight -= 1;
        Some(g)
    }

    /// Take back the buffers the thread has sent; `f` sees each.
    pub(crate) fn reap(&mut self, mut f: impl FnMut(&mut Gathered)) {
        while let Ok(mut g) = self.back.try_recv() {
            self.in_flight -= 1;
            f(&mut g);
            self.spare.push(g);
        }
    }

    /// Buffers the thread has not given back yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Give the thread a full buffer to seal and send. Err: the thread is gone (the
    /// buffer comes back to be sent otherwise).
    pub(crate) fn hand_off(&mut self, g: Gathered) -> Result<(), Gathered> {
        let Some(tx) = self.to_thread.as_ref() else {
            return Err(g);
        };
        // Never blocks: the channel holds as many as there are buffers.
        tx.send(g).map_err(|e| e.0)?;
        self.in_flight += 1;
        Ok(())
    }

    /// Wait until every buffer handed off is sent and back; `f` sees each as it returns.
    pub(crate) fn wait_all(&mut self, mut f: impl FnMut(&mut Gathered)) {
        while self.in_flight > 0 {
            let Ok(mut g) = self.back.recv() else {
                self.in_flight = 0;
                return;
            };
            self.in_flight -= 1;
            f(&mut g);
            self.spare.push(g);
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // Closing the channel ends the thread after what it holds is sent.
        self.to_thread = None;
        // Unblocks a thread waiting to give a buffer back.
        while self.back.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
