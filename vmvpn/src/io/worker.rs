//! A data-plane worker thread (`[host] threads`): the loop hands it full buffers, it does
//! the slow part of their journey (sealing and sending for the send thread in `batch`,
//! writing to a TAP for the TAP writer in `tapwrite`) beside the loop, and gives them back.
//!
//! Full buffers go through one bounded channel and empty ones come back through another:
//! a few buffers circulate, allocated once, nothing per packet, no lock beyond the
//! channels' own (one hand-off per buffer: a batch of datagrams, a merged 64 KB frame).
//! Order is kept: one thread takes the buffers in the order handed off. When every buffer
//! is out, the loop waits for one: the thread's pace bounds the loop's, as the syscall's
//! did when the loop made it.

use std::io;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

/// Buffers in circulation: enough to keep the thread busy while the loop fills the next,
/// few enough that what waits stays under a millisecond at 1 Gbit/s per buffer (64 KB).
pub(crate) const POOL: usize = 4;

/// The loop's end of a worker thread over buffers of type `T`.
pub struct Worker<T: Send + 'static> {
    to_thread: Option<SyncSender<T>>,
    back: Receiver<T>,
    /// Empty buffers on this side (after `wait_all`).
    spare: Vec<T>,
    /// Buffers handed off and not yet back.
    in_flight: usize,
    /// Buffers made so far (at most `POOL` besides the one the loop fills).
    made: usize,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Start thread `name`, which runs `work` on each buffer handed off; `realtime`: on
    /// SCHED_FIFO as the loop (`[host] realtime`), so that the loop never waits for it
    /// behind busy processes.
    pub fn start(
        name: &str,
        realtime: bool,
        mut work: impl FnMut(&mut T) + Send + 'static,
    ) -> io::Result<Worker<T>> {
        let (to_thread, from_loop) = sync_channel::<T>(POOL);
        let (to_loop, back) = sync_channel::<T>(POOL);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if realtime && let Err(e) = crate::io::dataplane::set_realtime() {
                    let thread = std::thread::current();
                    tracing::warn!(error = %e, thread = thread.name(), "real-time scheduling refused for a data-plane worker");
                }
                while let Ok(mut b) = from_loop.recv() {
                    work(&mut b);
                    if to_loop.send(b).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Worker {
            to_thread: Some(to_thread),
            back,
            spare: Vec::with_capacity(POOL),
            in_flight: 0,
            made: 0,
            thread: Some(thread),
        })
    }

    /// An empty buffer: one back from the thread, a new one (`make`) while fewer than
    /// `POOL` exist, else the next the thread gives back (waiting for it). None: the
    /// thread is gone. A buffer back from the thread is as the work left it.
    pub(crate) fn next_free(&mut self, make: impl FnOnce() -> T) -> Option<T> {
        if let Some(b) = self.spare.pop() {
            return Some(b);
        }
        match self.back.try_recv() {
            Ok(b) => {
                self.in_flight -= 1;
                return Some(b);
            }
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        if self.made < POOL {
            self.made += 1;
            return Some(make());
        }
        let b = self.back.recv().ok()?;
        self.in_flight -= 1;
        Some(b)
    }

    /// Keep an empty buffer taken with `next_free` and not handed off.
    pub(crate) fn give_back(&mut self, b: T) {
        self.spare.push(b);
    }

    /// Take back the buffers the thread is done with; `f` sees each.
    pub(crate) fn reap(&mut self, mut f: impl FnMut(&mut T)) {
        while let Ok(mut b) = self.back.try_recv() {
            self.in_flight -= 1;
            f(&mut b);
            self.spare.push(b);
        }
    }

    /// Buffers the thread has not given back yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Give the thread a full buffer. Err: the thread is gone (the buffer comes back to
    /// be handled otherwise).
    pub(crate) fn hand_off(&mut self, b: T) -> Result<(), T> {
        let Some(tx) = self.to_thread.as_ref() else {
            return Err(b);
        };
        // Never blocks: the channel holds as many as there are buffers.
        tx.send(b).map_err(|e| e.0)?;
        self.in_flight += 1;
        Ok(())
    }

    /// Wait until every buffer handed off is done and back; `f` sees each as it returns.
    pub(crate) fn wait_all(&mut self, mut f: impl FnMut(&mut T)) {
        while self.in_flight > 0 {
            let Ok(mut b) = self.back.recv() else {
                self.in_flight = 0;
                return;
            };
            self.in_flight -= 1;
            f(&mut b);
            self.spare.push(b);
        }
    }
}

impl<T: Send + 'static> Drop for Worker<T> {
    fn drop(&mut self) {
        // Closing the channel ends the thread after what it holds is done.
        self.to_thread = None;
        // Unblocks a thread waiting to give a buffer back.
        while self.back.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
