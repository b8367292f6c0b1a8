//! The open thread (`[host] threads = 4`): it opens the received unicast data in place,
//! batch by batch, beside the loop (`engine::opened`), so that the AEAD, the largest cost
//! of a receiving loop, leaves it. The loop reads a batch with `recvmmsg` into a buffer of
//! its own, hands it over with the receive keys' snapshot, and reads the next while the
//! thread opens this one; it gives the batches to the engine in the order read, each
//! datagram with its verdict (`PreOpen`).
//!
//! A batch of a few datagrams with nothing ahead of it (a ping, an ACK) is opened by the
//! loop itself: waking the thread would cost it more than it saves. Before the loop waits
//! for new events, every batch handed over is back and judged: nothing waits in the
//! thread while the loop sleeps.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::engine::opened::{PreOpen, RxKeys, open_data};
use crate::io::udp::{BATCH, Received, SLOT, each_datagram};
use crate::io::worker::Worker;

/// Batches of fewer datagrams, with none in the thread, are opened by the loop.
pub(crate) const HAND_OFF_FROM: usize = 4;

/// One receive batch and what the thread made of it.
pub(crate) struct RxBatch {
    /// `BATCH` slots of `SLOT` bytes.
    pub(crate) area: Vec<u8>,
    pub(crate) metas: [Received; BATCH],
    /// Buffers filled.
    pub(crate) n: usize,
    /// Both clocks, read together after the batch was read.
    pub(crate) read_at: Instant,
    pub(crate) read_real: SystemTime,
    /// The keys to open with; held until the engine has judged the batch.
    pub(crate) keys: Option<Arc<RxKeys>>,
    /// One per datagram, in `each_datagram`'s order (none: the loop opens them all).
    pub(crate) verdicts: Vec<PreOpen>,
    /// Handed over and not yet given to the engine.
    pub(crate) pending: bool,
}

impl RxBatch {
    pub(crate) fn new() -> Self {
        RxBatch {
            area: vec![0u8; BATCH * SLOT],
            metas: [Received::default(); BATCH],
            n: 0,
            read_at: Instant::now(),
            read_real: SystemTime::now(),
            keys: None,
            // UDP GRO merges at most 64 datagrams a buffer.
            verdicts: Vec::with_capacity(BATCH * 64),
            pending: false,
        }
    }

    /// Datagrams in the batch (a GRO buffer counts each).
    pub(crate) fn datagrams(&self) -> usize {
        self.metas[..self.n]
            .iter()
            .map(|m| match (m.len, m.stride) {
                (0, _) | (_, 0) => 1,
                (len, s) => len.div_ceil(s),
            })
            .sum()
    }

    /// Open what the keys open (on the thread).
    fn open(&mut self) {
        self.verdicts.clear();
        let Some(keys) = self.keys.as_deref() else {
            return;
        };
        let verdicts = &mut self.verdicts;
        each_datagram(&mut self.area, &self.metas[..self.n], |_, d| {
            verdicts.push(open_data(keys, d))
        });
    }
}

/// The loop's end of the open thread: the thread and the keys it is given.
pub struct Opener {
    pub(crate) worker: Worker<RxBatch>,
    keys: Arc<RxKeys>,
    /// The engine's `rx_keys_epoch` when `keys` was made (none yet: `u64::MAX`).
    epoch: u64,
    /// Batches handed to the thread.
    pub(crate) handed: u64,
}

impl Opener {
    /// Start the thread (`realtime`: on SCHED_FIFO as the loop).
    pub fn start(realtime: bool) -> std::io::Result<Opener> {
        Ok(Opener {
            worker: Worker::start("vmvpn-open", realtime, RxBatch::open)?,
            keys: Arc::new(RxKeys::default()),
            epoch: u64::MAX,
            handed: 0,
        })
    }

    /// The keys to hand over now: the engine's (`epoch`, `make`), made again only when
    /// they changed.
    pub(crate) fn keys(&mut self, epoch: u64, make: impl FnOnce() -> RxKeys) -> Arc<RxKeys> {
        if epoch != self.epoch {
            self.keys = Arc::new(make());
            self.epoch = epoch;
        }
        self.keys.clone()
    }
}
