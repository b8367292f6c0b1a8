//! The data-plane thread: the only owner of the forwarding core, so no packet takes a lock.
//!
//! One epoll loop (mio's `Poll`) over the UDP socket, the TAPs and mio's `Waker`, which
//! control requests and shutdown use to wake it. Each source is read up to a budget per
//! turn, so neither direction starves the other. Buffers are allocated once at start; the per-packet path
//! reads into them, lets the core seal or open in place, and writes out.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use telemetry::DropReason;
use tracing::{debug, error, warn};

use crate::aqm::signal::Signal;
use crate::engine::opened::PreOpen;
use crate::engine::{
    Engine, Event, LanId, PeerId, PeerSource, PingSent, Reached, Relay, RxAction, TapAction,
};
use crate::io::batch::{GsoBatch, ROOM};
use crate::io::opener::{HAND_OFF_FROM, Opener, RxBatch};
use crate::io::rxqueue::RxQueue;
use crate::io::tap::TapDevice;
use crate::io::tapwrite::TapWrites;
use crate::io::udp::{BATCH, Received, SLOT, Udp, each_datagram};
use crate::offload::gro::Coalescer;
use crate::offload::gso::{self, VNET_HDR_LEN, VnetHdr};
use crate::proto::{HEADER_LEN, TAG_LEN};
use crate::status::{HostStatus, LanTraffic, MacRow, MetricsExtra, OffloadStats, Status};

/// A question for the data plane, answered on the enclosed channel.
pub enum Request {
    /// The full status.
    Status(tokio::sync::oneshot::Sender<Status>),
    /// MAC database rows, optionally of one LAN (error if no such LAN).
    Macs(
        Option<String>,
        tokio::sync::oneshot::Sender<Result<Vec<MacRow>, String>>,
    ),
    /// Per-VM traffic, matrix and flows (at most `top` flows per LAN), optionally of one LAN.
    Traffic {
        /// Only this LAN (error if no such LAN).
        lan: Option<String>,
        /// At most this many flows per LAN.
        top: Option<usize>,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Result<Vec<LanTraffic>, String>>,
    },
    /// Send one `vmvpn ping` probe; the answer says where it went and carries the channel
    /// its RTT (ns) will arrive on.
    Ping {
        /// Peer name, id or address, or a VM IP.
        target: String,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<
            Result<(PingSent, tokio::sync::oneshot::Receiver<u64>), String>,
        >,
    },
    /// This host's libvirt domains (name, MACs), for service backends named by libvirt.
    VmNames(Vec<(String, Vec<crate::engine::macdb::Mac>)>),
    /// Put these limits in force on a LAN (unchanged ones keep their state).
    SetLimits {
        /// The LAN's name.
        lan: String,
        /// Every limit of the LAN, by MAC.
        specs: Vec<crate::engine::limits::LimitSpec>,
        /// Error if no such LAN.
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Put these services in force on a LAN (flows of kept backends stay with them).
    SetServices {
        /// The LAN's name.
        lan: String,
        /// Every service of the LAN.
        specs: Vec<crate::engine::service::ServiceSpec>,
        /// Error if no such LAN.
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Everything `GET /metrics` shows.
    Scrape(tokio::sync::oneshot::Sender<(Status, MetricsExtra)>),
    /// The figures the alarm rules read, into the buffers handed over (see
    /// `engine::figures`): what the alarm task asks once a second.
    AlarmFigures {
        /// Which figures.
        needs: crate::engine::figures::FigureNeeds,
        /// The last answer's buffers, filled anew.
        into: Box<crate::engine::figures::Figures>,
        /// The filled ones.
        reply: tokio::sync::oneshot::Sender<Box<crate::engine::figures::Figures>>,
    },
    /// Swap the exporter's empty buffers for the sFlow samples and flow records made
    /// since the last time (`records` one per LAN; fewer are filled up). With `flush`,
    /// every flow ends with a record first (at shutdown).
    TakeExports {
        /// Empty, to hold the next samples.
        samples: Vec<telemetry::sflow::FlowSample>,
        /// Empty, one per LAN, to hold the next records.
        records: Vec<Vec<telemetry::flows::FlowRecord>>,
        /// To hold the LANs' wire ids.
        lan_ids: Vec<u32>,
        /// End every flow first.
        flush: bool,
        /// The filled ones.
        reply: tokio::sync::oneshot::Sender<Exports>,
    },
    /// Add or remove a peer of a LAN; no answer. The bulletin's removals leave static
    /// peers alone; a reload's (`Static`) remove only those.
    Peer {
        /// LAN name.
        lan: String,
        /// The peer's data address.
        addr: SocketAddr,
        /// Its host id, when the bulletin said.
        host_id: Option<u32>,
        /// Further addresses it may answer at (its NAT's public mapping).
        others: Vec<SocketAddr>,
        /// Add (true) or remove (false).
        add: bool,
        /// The peer's underlay prefix length, when known.
        prefix: Option<u8>,
        /// Who says so: the bulletin, or the config (a reload).
        source: PeerSource,
    },
    /// Sample for sFlow and make IPFIX records as `[export]` now asks (a reload).
    SetSampling {
        /// What the exports need.
        sampling: crate::engine::Sampling,
        /// Done.
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// Join a LAN (a reload added it): its TAP, opened, and its core state; the answer
    /// is an error when the engine already has such a LAN (the TAP is then closed).
    AddLan {
        /// The LAN as the core needs it.
        spec: Box<crate::engine::LanSpec>,
        /// Its TAP, open.
        tap: TapDevice,
        /// Join its multicast group on the interface with this address.
        multicast_if: Option<std::net::Ipv4Addr>,
        /// Done, or why not.
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Leave a LAN (a reload removed it): its TAP is closed (and so removed unless
    /// persistent), its peers and tables dropped. Error if no such LAN.
    RemoveLan {
        /// The LAN's name.
        lan: String,
        /// Leave its multicast group on the interface with this address.
        multicast_if: Option<std::net::Ipv4Addr>,
        /// Done, or why not.
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Measure this from now on (`[telemetry]` reloaded); the VM and flow tables start anew.
    SetAccounting {
        /// What is measured.
        accounting: crate::engine::Accounting,
        /// Done.
        reply: tokio::sync::oneshot::Sender<()>,
    },
}

/// What [`Request::TakeExports`] answers.
#[derive(Debug)]
pub struct Exports {
    /// sFlow samples, in the order taken.
    pub samples: Vec<telemetry::sflow::FlowSample>,
    /// Flow records, one list per LAN in config order.
    pub records: Vec<Vec<telemetry::flows::FlowRecord>>,
    /// The wire id of each LAN the records are of, in the same order (LANs come and go
    /// with reloads).
    pub lan_ids: Vec<u32>,
    /// Drops and the engine's clock.
    pub take: crate::engine::ExportTake,
}

/// The poll tokens of the data plane's sources.
const WAKE: Token = Token(0);
const UDP: Token = Token(1);
/// TAP `i` has token `TAPS + i`.
const TAPS: usize = 2;

/// Handle to ask and stop the data plane from other threads.
#[derive(Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    waker: Arc<mio::Waker>,
    stop: Arc<AtomicBool>,
    /// Notified when exports wait to be taken before the exporter's next tick.
    exports_due: Arc<tokio::sync::Notify>,
}

impl Handle {
    /// Send a request that has no answer; false when the data plane is gone.
    pub fn tell(&self, r: Request) -> bool {
        let ok = self.requests.send(r).is_ok();
        // A failed wake-up leaves the request for the next turn of the loop (at most its
        // poll timeout later); nothing is lost.
        let _ = self.waker.wake();
        ok
    }

    /// Ask and wait for the answer; None when the data plane is gone or going.
    pub async fn call<T>(
        &self,
        request: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Request,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.tell(request(tx)) {
            return None;
        }
        rx.await.ok()
    }

    /// Wait until the data plane says exports are due early (see `engine::sampling`).
    pub async fn exports_due(&self) {
        self.exports_due.notified().await
    }

    /// A status snapshot and every LAN's per-VM traffic and VM matrix (no flows), as the
    /// reports, the dashboard and the exporters read them; None when the data plane is gone.
    pub async fn snapshot(&self) -> Option<(Status, Vec<LanTraffic>)> {
        let status = self.call(Request::Status).await?;
        let traffic = self
            .call(|reply| Request::Traffic {
                lan: None,
                top: Some(0),
                reply,
            })
            .await?
            .ok()?;
        Some((status, traffic))
    }

    /// Ask the thread to finish its loop and return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// Everything the data-plane thread owns.
pub struct DataPlane {
    engine: Engine,
    udp: Udp,
    /// Shared with the TAP writer thread while it holds a frame for one.
    taps: Vec<Arc<TapDevice>>,
    /// epoll, through mio: the UDP socket, the TAPs and the waker.
    poll: Poll,
    requests: mpsc::Receiver<Request>,
    stop: Arc<AtomicBool>,
    host: HostStatus,
    started: Instant,
    /// Frames read from an offload TAP: virtio-net header + up to 64 KB.
    big: Vec<u8>,
    /// Sealed segments on their way to one peer.
    batch: GsoBatch,
    /// Received TCP segments on their way to an offload TAP, merged.
    gro: Coalescer,
    /// Where merged frames are written: here, or on the TAP writer thread.
    tapw: TapWrites,
    /// The open thread, when there is one (`[host] threads = 4`).
    opener: Option<Opener>,
    offload: OffloadStats,
    /// CoDel over the socket's receive queue.
    rxq: RxQueue,
    /// `vmvpn ping` probes waiting for their answer: id, when sent, where the RTT goes.
    pings: Vec<(u32, Instant, tokio::sync::oneshot::Sender<u64>)>,
    /// Ask for real-time scheduling when the thread starts.
    realtime: bool,
    /// See [`Handle::exports_due`].
    exports_due: Arc<tokio::sync::Notify>,
    /// Bumped when a LAN is added or removed: the loop's per-TAP state starts over.
    lans_changed: u64,
}

/// SCHED_FIFO priority of the data plane: low among real-time threads, so the kernel's own
/// (and anything an operator ranks higher) still come first.
const RT_PRIORITY: i32 = 10;

/// Put the calling thread on SCHED_FIFO at `RT_PRIORITY`.
pub(crate) fn set_realtime() -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: pthread_self is always valid for the calling thread; param outlives the call.
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Frames read from one TAP before the loop looks at the others again.
const TAP_BUDGET: usize = 64;
/// Receive batches before the loop looks at the TAPs again.
const UDP_BUDGET: usize = 8;
/// Bytes one direction may move before the other gets its turn: with 64 KB frames and
/// GRO batches the frame counts alone would let one side run for milliseconds, and a
/// ping waits behind it (256 KB is about 0.4 ms at 5 Gbit/s).
const ROUND_BYTES: usize = 256 << 10;

impl DataPlane {
    /// Assemble the data plane; returns it and a handle for other threads.
    pub fn new(
        engine: Engine,
        udp: Udp,
        taps: Vec<TapDevice>,
        host: HostStatus,
    ) -> io::Result<(Self, Handle)> {
        let (tx, rx) = mpsc::channel();
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        let max_gso = udp.max_gso_segments();
        let stop = Arc::new(AtomicBool::new(false));
        let exports_due = Arc::new(tokio::sync::Notify::new());
        let handle = Handle {
            requests: tx,
            waker,
            stop: stop.clone(),
            exports_due: exports_due.clone(),
        };
        let dp = DataPlane {
            engine,
            udp,
            taps: taps.into_iter().map(Arc::new).collect(),
            poll,
            requests: rx,
            stop,
            host: HostStatus { threads: 1, ..host },
            started: Instant::now(),
            pings: Vec::new(),
            realtime: false,
            big: vec![0u8; VNET_HDR_LEN + 65_536],
            batch: GsoBatch::new(max_gso),
            gro: Coalescer::new(),
            tapw: TapWrites::default(),
            opener: None,
            offload: OffloadStats::default(),
            rxq: RxQueue::from_env(),
            exports_due,
            lans_changed: 0,
        };
        Ok((dp, handle))
    }

    /// Seal and send the unicast data on a thread of its own (`[host] threads = 2`, see
    /// `io::batch`); the engine then leaves that data unsealed. After `want_realtime`,
    /// whose choice the send thread follows.
    pub fn start_send_thread(&mut self) -> io::Result<()> {
        self.batch
            .start_sender(self.udp.try_clone()?, self.realtime)?;
        self.engine.seal_elsewhere(true);
        self.host.threads = 2;
        Ok(())
    }

    /// Write the merged frames to their TAPs on a thread of their own (`[host] threads =
    /// 3`, see `io::tapwrite`). After `start_send_thread`, and after `want_realtime`, whose
    /// choice the thread follows.
    pub fn start_tap_writer(&mut self) -> io::Result<()> {
        self.tapw.start(self.realtime)?;
        self.host.threads = 3;
        Ok(())
    }

    /// Open the received unicast data on a thread of its own (`[host] threads = 4`, see
    /// `io::opener`). After `start_tap_writer`, and after `want_realtime`, whose choice the
    /// thread follows.
    pub fn start_opener(&mut self) -> io::Result<()> {
        self.opener = Some(Opener::start(self.realtime)?);
        self.host.threads = 4;
        Ok(())
    }

    /// Ask for real-time scheduling of the thread that will `run` (see `[host] realtime`).
    pub fn want_realtime(&mut self, on: bool) {
        self.realtime = on;
    }

    /// Run until stopped. Returns an error only for a fatal device failure.
    pub fn run(mut self) -> io::Result<()> {
        if self.realtime {
            match set_realtime() {
                Ok(()) => self.host.realtime = true,
                Err(e) => warn!(
                    error = %e,
                    "real-time scheduling refused (needs root or CAP_SYS_NICE); the data plane runs at normal priority, so frames may wait behind busy processes under load"
                ),
            }
        }
        let mut rx_area = vec![0u8; BATCH * SLOT];
        let mut metas = [Received::default(); BATCH];
        let mut tx_buf = vec![0u8; HEADER_LEN + SLOT + TAG_LEN];
        // Room for a path MTU probe as large as the underlay allows.
        let mut ctl_buf = vec![0u8; 65_536];
        let registry = self.poll.registry();
        registry.register(
            &mut SourceFd(&self.udp.as_raw_fd()),
            UDP,
            Interest::READABLE,
        )?;
        for (i, t) in self.taps.iter().enumerate() {
            registry.register(
                &mut SourceFd(&t.as_raw_fd()),
                Token(TAPS + i),
                Interest::READABLE,
            )?;
        }
        let mut events = Events::with_capacity(64);
        // epoll here is edge-triggered: a source read only up to its budget is still
        // readable, and no new event will say so. These flags carry it to the next turn,
        // which then polls without waiting.
        let mut udp_pending = false;
        let mut tap_pending = vec![false; self.taps.len()];
        let mut lans_seen = self.lans_changed;
        self.engine.handle_timeout(Instant::now());
        self.flush_control(&mut ctl_buf);
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let timeout = if udp_pending || tap_pending.iter().any(|p| *p) {
                Duration::ZERO
            } else {
                let shaped = self.engine.poll_shaped_timeout();
                let next = match (self.engine.poll_timeout(), shaped) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                next.map_or(Duration::from_millis(200), |t| {
                    t.saturating_duration_since(now)
                })
                .min(Duration::from_secs(1))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut wake = false;
            for ev in events.iter() {
                match ev.token() {
                    WAKE => wake = true,
                    UDP => udp_pending = true,
                    Token(t) => {
                        let i = t - TAPS;
                        if ev.is_error() || ev.is_read_closed() {
                            return Err(io::Error::other(format!(
                                "TAP {} failed or was removed",
                                self.taps.get(i).map_or("?", |t| t.name())
                            )));
                        }
                        if let Some(p) = tap_pending.get_mut(i) {
                            *p = true;
                        }
                    }
                }
            }
            let now = Instant::now();
            if wake {
                self.serve_requests(now);
                if self.lans_changed != lans_seen {
                    // TAPs moved to new places: read each once (a read that finds nothing
                    // costs one syscall), so nothing waits on a flag that moved.
                    lans_seen = self.lans_changed;
                    tap_pending = vec![true; self.taps.len()];
                }
            }
            if udp_pending {
                udp_pending = self.udp_in(&mut rx_area, &mut metas, now);
                self.handle_events(now);
            }
            for (i, pending) in tap_pending.iter_mut().enumerate() {
                if *pending {
                    *pending = self.tap_in(i, &mut tx_buf, now);
                }
            }
            self.release_shaped(&mut tx_buf, Instant::now());
            if self.engine.poll_timeout().is_none_or(|t| now >= t) {
                self.engine.handle_timeout(now);
                self.tap_writes(&mut tx_buf);
            }
            if self.engine.poll_exports_due() {
                self.exports_due.notify_one();
            }
            self.flush_control(&mut ctl_buf);
        }
        debug!("data plane stopped");
        Ok(())
    }

    /// Datagrams from the underlay, up to the round's budget; true if more may wait.
    fn udp_in(&mut self, area: &mut [u8], metas: &mut [Received; BATCH], now: Instant) -> bool {
        let more = match self.opener.take() {
            Some(mut o) => {
                let (more, alive) = self.udp_batches_opened(&mut o, now);
                if alive {
                    self.opener = Some(o);
                } else {
                    error!("the open thread ended; opening on the data-plane thread");
                }
                more
            }
            None => self.udp_batches(area, metas, now),
        };
        self.engine.end_runs();
        // What was merged goes out before the loop sleeps or reads a TAP.
        let DataPlane {
            gro,
            taps,
            engine,
            tapw,
            ..
        } = self;
        gro.flush(|lan, bytes, segs| write_merged(tapw, taps, engine, lan, bytes, segs));
        more
    }

    /// True when the budget ended the round (not an empty socket).
    fn udp_batches(
        &mut self,
        area: &mut [u8],
        metas: &mut [Received; BATCH],
        now: Instant,
    ) -> bool {
        let mut bytes = 0;
        for _ in 0..UDP_BUDGET {
            let (n, clocks) = match self.read_batch(area, metas) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here (e.g. a peer's port unreachable): not
                    // fatal, and more datagrams may wait behind it.
                    debug!(error = %e, "udp receive error");
                    return true;
                }
            };
            self.batch_in(area, &metas[..n], clocks, &[], now);
            bytes += metas[..n].iter().map(|m| m.len).sum::<usize>();
            if n < BATCH {
                return false;
            }
            if bytes >= ROUND_BYTES {
                return true;
            }
        }
        true
    }

    /// One `recvmmsg` into `area`'s slots; the datagrams read and both clocks, read
    /// together after it (each datagram's kernel stamp becomes an `Instant` from them).
    /// CoDel over the socket's queue sees the batch here.
    fn read_batch(
        &mut self,
        area: &mut [u8],
        metas: &mut [Received; BATCH],
    ) -> io::Result<(usize, (Instant, SystemTime))> {
        let n = {
            let mut chunks = area.chunks_mut(SLOT);
            let mut iov: [IoSliceMut<'_>; BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
            self.udp.recv(&mut iov, metas)?
        };
        let (read_at, read_real) = (Instant::now(), SystemTime::now());
        if let Some(newest) = metas[..n].last() {
            self.rxq
                .handle_batch(newest.waited(read_real), n < BATCH, n, read_at);
        }
        Ok((n, (read_at, read_real)))
    }

    /// `udp_batches` with the open thread: each batch read is handed to it while the loop
    /// reads the next and gives those it opened to the engine, in the order read. Returns
    /// whether more may wait, and false when the thread is gone. When the socket is empty,
    /// every batch is back and judged before this returns.
    fn udp_batches_opened(&mut self, o: &mut Opener, now: Instant) -> (bool, bool) {
        let mut bytes = 0;
        let mut more = true;
        let mut alive = true;
        o.worker.reap(|b| self.opened_in(b, now));
        for _ in 0..UDP_BUDGET {
            let Some(mut b) = o.worker.next_free(RxBatch::new) else {
                alive = false;
                break;
            };
            if b.pending {
                self.opened_in(&mut b, now);
            }
            let n = match self.read_batch(&mut b.area, &mut b.metas) {
                Ok((n, clocks)) => {
                    (b.read_at, b.read_real) = clocks;
                    n
                }
                Err(e) => {
                    o.worker.give_back(b);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => more = false,
                        io::ErrorKind::Interrupted => continue,
                        // As in `udp_batches`: an ICMP error, more may wait.
                        _ => debug!(error = %e, "udp receive error"),
                    }
                    break;
                }
            };
            b.n = n;
            bytes += b.metas[..n].iter().map(|m| m.len).sum::<usize>();
            if o.worker.in_flight() == 0 && b.datagrams() < HAND_OFF_FROM {
                b.verdicts.clear();
                self.batch_in(
                    &mut b.area,
                    &b.metas[..n],
                    (b.read_at, b.read_real),
                    &[],
                    now,
                );
                o.worker.give_back(b);
            } else {
                let engine = &self.engine;
                b.keys = Some(o.keys(engine.rx_keys_epoch(), || engine.rx_keys()));
                b.pending = true;
                match o.worker.hand_off(b) {
                    Ok(()) => o.handed += 1,
                    Err(mut b) => {
                        b.keys = None;
                        b.verdicts.clear();
                        self.opened_in(&mut b, now);
                        alive = false;
                        break;
                    }
                }
            }
            o.worker.reap(|b| self.opened_in(b, now));
            if n < BATCH {
                more = false;
                break;
            }
            if bytes >= ROUND_BYTES {
                break;
            }
        }
        if !more || !alive {
            o.worker.wait_all(|b| self.opened_in(b, now));
        }
        (more, alive)
    }

    /// A batch back from the open thread (or never handed over), to the engine.
    fn opened_in(&mut self, b: &mut RxBatch, now: Instant) {
        let n = b.n;
        self.batch_in(
            &mut b.area,
            &b.metas[..n],
            (b.read_at, b.read_real),
            &b.verdicts,
            now,
        );
        b.pending = false;
        b.keys = None;
    }

    /// The datagrams of one receive batch, to the engine in order; `clocks`: both read
    /// together after the batch was read; `verdicts`: what the open thread made of each
    /// (none: opened here).
    fn batch_in(
        &mut self,
        area: &mut [u8],
        metas: &[Received],
        (read_at, read_real): (Instant, SystemTime),
        verdicts: &[PreOpen],
        now: Instant,
    ) {
        let mut verdicts = verdicts.iter();
        each_datagram(area, metas, |meta, dgram| {
            // The destination (IP_PKTINFO) tells a multicast copy from a unicast one.
            let multicast = meta.dst_ip.is_some_and(|ip| ip.is_multicast());
            let arrived = meta.arrived(read_at, read_real);
            let pre = verdicts.next().copied().unwrap_or_default();
            self.datagram(meta.addr, multicast, dgram, now, arrived, pre);
        });
    }

    /// One datagram; `arrived`: when it reached this host (its kernel receive stamp);
    /// `pre`: whether the open thread opened it.
    fn datagram(
        &mut self,
        from: SocketAddr,
        multicast: bool,
        dgram: &mut [u8],
        now: Instant,
        arrived: Instant,
        pre: PreOpen,
    ) {
        // IPv4 peers show up as v4-mapped when the socket is bound to [::].
        let from = match from {
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::from((v4, a.port())),
                None => from,
            },
            v4 => v4,
        };
        // As designated forwarder, the sender's sealed bytes go on into this subnet first
        // (they live in the engine until its next call); then the frame to the TAP.
        let udp = &self.udp;
        let relay = |r: Option<Relay<'_>>| {
            r.map_or(0, |r| {
                r.to.iter()
                    .filter(|a| udp.send_to(r.datagram, **a).is_err())
                    .count() as u64
            })
        };
        let action = self
            .engine
            .handle_datagram_opened(from, multicast, dgram, now, arrived, pre);
        let (lan, failed, tap) = match action {
            RxAction::TapReassembled { lan, relay: r } => (lan, relay(r), Some(None)),
            RxAction::Relay { lan, relay: r } => (lan, relay(Some(r)), None),
            RxAction::Tap {
                lan,
                peer,
                frame,
                summed,
                relay: r,
            } => (lan, relay(r), Some(Some((peer, frame, summed)))),
            RxAction::Consumed | RxAction::Drop(_) => return,
        };
        match tap {
            Some(Some((peer, frame, summed))) => self.write_frame(lan, peer, dgram, frame, summed),
            Some(None) => self.write_reassembled(lan),
            None => {}
        }
        if failed > 0 {
            self.engine
                .note_drops(Some(lan), DropReason::UdpSendError, failed);
        }
    }

    /// A frame put together from fragments, to its TAP (after what the coalescer holds).
    fn write_reassembled(&mut self, lan: LanId) {
        let DataPlane {
            gro,
            taps,
            engine,
            big,
            tapw,
            ..
        } = self;
        gro.flush(|lan, bytes, segs| write_merged(tapw, taps, engine, lan, bytes, segs));
        // Rare (fragments): after everything merged, whatever its flow.
        tapw.wait_all(|lan, segs| lost_at_tap(engine, lan, segs));
        let frame = engine.reassembled();
        let Some(tap) = taps.get(lan.index()) else {
            return;
        };
        let ok = if tap.offload() {
            // An all-zero virtio-net header: a plain frame, checksums complete.
            match big.get_mut(..VNET_HDR_LEN + frame.len()) {
                Some(b) => {
                    b[..VNET_HDR_LEN].fill(0);
                    b[VNET_HDR_LEN..].copy_from_slice(frame);
                    tap.send(b).is_ok()
                }
                None => false,
            }
        } else {
            tap.send(frame).is_ok()
        };
        if !ok {
            engine.note_drop(Some(lan), DropReason::TapWriteError);
        }
    }

    /// A frame opened in place in `dgram`, to its TAP or into the coalescer (`summed`: its
    /// sender computed its checksum, see `RxAction::Tap`).
    fn write_frame(
        &mut self,
        lan: LanId,
        peer: PeerId,
        dgram: &mut [u8],
        frame: std::ops::Range<usize>,
        summed: bool,
    ) {
        let DataPlane {
            gro,
            taps,
            engine,
            rxq,
            tapw,
            ..
        } = self;
        let signal = rxq.signal(&mut dgram[frame.clone()]);
        if signal != Signal::Spared {
            engine.note_congestion(lan, peer, signal);
        }
        if signal == Signal::Drop {
            return;
        }
        let tap = taps.get(lan.index());
        let taken = tap.is_some_and(|t| t.offload())
            && gro.push(
                lan.index(),
                &dgram[frame.clone()],
                summed,
                |lan, bytes, segs| write_merged(tapw, taps, engine, lan, bytes, segs),
            );
        // Not taken by the coalescer: written now (anything held went first, and this
        // waits for it where the thread writes it and it may be the same flow).
        if !taken {
            tapw.before_direct(&dgram[frame.clone()], |lan, segs| {
                lost_at_tap(engine, lan, segs)
            });
        }
        let ok = taken
            || tap.is_some_and(|t| {
                if t.offload() && frame.start >= VNET_HDR_LEN {
                    // An all-zero virtio-net header: a plain frame, checksums complete.
                    let from = frame.start - VNET_HDR_LEN;
                    dgram[from..frame.start].fill(0);
                    t.send(&dgram[from..frame.end]).is_ok()
                } else {
                    t.send(&dgram[frame]).is_ok()
                }
            });
        if !ok {
            self.engine.note_drop(Some(lan), DropReason::TapWriteError);
        }
    }

    /// Frames from an offload TAP: each read may be a 64 KB TCP frame, split into
    /// segments that go through the core one by one and leave in GSO batches. A batch
    /// spans reads (small frames of one size to one peer leave together too) and is sent
    /// when the round ends.
    fn tap_in_offload(&mut self, i: usize, buf: &mut [u8], now: Instant) -> bool {
        let mut bytes = 0;
        let mut more = true;
        for _ in 0..TAP_BUDGET {
            if bytes >= ROUND_BYTES {
                break;
            }
            let Some(n) = read_tap(&self.taps[i], &mut self.big) else {
                more = false;
                break;
            };
            bytes += n;
            let Some(h) = VnetHdr::parse(&self.big[..n]) else {
                self.engine.note_drop(Some(LanId(i)), DropReason::Malformed);
                continue;
            };
            let frame = &mut self.big[VNET_HDR_LEN..n];
            let tso = h.is_gso();
            if tso {
                self.engine.begin_burst(LanId(i), frame);
            }
            let mut sink = ToBatch {
                engine: &mut self.engine,
                udp: &self.udp,
                batch: &mut self.batch,
                tap: &self.taps[i],
                lan: LanId(i),
                now,
                summed: gso::checksums_ours(&h, frame),
                spare: buf,
                failed: 0,
            };
            let r = gso::split_into(&h, frame, HEADER_LEN, &mut sink);
            let failed = sink.failed;
            if tso {
                self.engine.end_burst(LanId(i));
            }
            match r {
                Ok(segs) if segs > 1 => {
                    self.offload.tso_frames_total += 1;
                    self.offload.uso_frames_total += u64::from(h.is_udp_gso());
                    self.offload.tso_segments_total += segs as u64;
                }
                Ok(_) => {}
                Err(_) => self.engine.note_drop(Some(LanId(i)), DropReason::Malformed),
            }
            self.engine
                .note_drops(Some(LanId(i)), DropReason::UdpSendError, failed);
        }
        let failed = self.batch.flush(&self.udp);
        self.engine
            .note_drops(Some(LanId(i)), DropReason::UdpSendError, failed.into());
        more
    }

    /// Frames from TAP `i`, up to the round's budget; true if more may wait.
    fn tap_in(&mut self, i: usize, buf: &mut [u8], now: Instant) -> bool {
        if self.taps[i].offload() {
            return self.tap_in_offload(i, buf, now);
        }
        let mut more = true;
        for _ in 0..TAP_BUDGET {
            let read_room = buf.len() - TAG_LEN;
            let Some(n) = read_tap(&self.taps[i], &mut buf[HEADER_LEN..read_room]) else {
                more = false;
                break;
            };
            // Gathered like the offload path's segments: one send per run to a peer.
            let action = self.engine.handle_tap_frame(LanId(i), buf, n, now);
            let failed = send_out(&self.udp, &mut self.batch, &self.taps[i], action, buf);
            self.engine
                .note_drops(Some(LanId(i)), DropReason::UdpSendError, failed);
        }
        let failed = self.batch.flush(&self.udp);
        self.engine
            .note_drops(Some(LanId(i)), DropReason::UdpSendError, failed.into());
        more
    }

    /// Frames the engine writes to a TAP itself (service health probes).
    fn tap_writes(&mut self, buf: &mut [u8]) {
        while let Some((lan, n)) = self.engine.poll_tap_write(buf) {
            if let Some(tap) = self.taps.get(lan.index()) {
                send_out(&self.udp, &mut self.batch, tap, TapAction::Reply(n), buf);
            }
        }
    }

    /// Frames that shaping limits held back and may leave now, through the data path.
    fn release_shaped(&mut self, buf: &mut [u8], now: Instant) {
        let mut sent = false;
        while let Some((lan, n)) = self.engine.poll_shaped(buf, now) {
            let Some(tap) = self.taps.get(lan.index()) else {
                break;
            };
            let action = self.engine.handle_tap_frame(lan, buf, n, now);
            let failed = send_out(&self.udp, &mut self.batch, tap, action, buf);
            self.engine
                .note_drops(Some(lan), DropReason::UdpSendError, failed);
            sent = true;
        }
        if sent {
            let failed = self.batch.flush(&self.udp);
            self.engine
                .note_drops(None, DropReason::UdpSendError, failed.into());
        }
    }

    fn flush_control(&mut self, buf: &mut [u8]) {
        let mut first = true;
        while let Some((to, n)) = self.engine.poll_transmit(buf) {
            if first && self.batch.threaded() {
                // Keepalives and probes share the data's sequence numbers: they leave
                // after the data the send thread still holds, as they did before it.
                first = false;
                let failed = self.batch.flush_and_wait(&self.udp);
                self.engine
                    .note_drops(None, DropReason::UdpSendError, failed.into());
            }
            if self.udp.send_to(&buf[..n], to).is_err() {
                self.engine.note_drop(None, DropReason::UdpSendError);
            }
        }
    }

    fn serve_requests(&mut self, now: Instant) {
        // What the TAP writer thread lost shows in the answers.
        let DataPlane { tapw, engine, .. } = self;
        tapw.reap(|lan, segs| lost_at_tap(engine, lan, segs));
        while let Ok(r) = self.requests.try_recv() {
            match r {
                Request::Status(reply) => {
                    let _ = reply.send(self.status(now));
                }
                Request::TakeExports {
                    mut samples,
                    mut records,
                    lan_ids,
                    flush,
                    reply,
                } => {
                    if flush {
                        self.engine.flush_flows();
                    }
                    records.resize_with(self.engine.lan_count(), Vec::new);
                    let take = self.engine.take_exports(&mut samples, &mut records);
                    let mut lan_ids = lan_ids;
                    lan_ids.clear();
                    lan_ids.extend(self.engine.lan_ids_iter());
                    let _ = reply.send(Exports {
                        samples,
                        records,
                        lan_ids,
                        take,
                    });
                }
                Request::Macs(lan, reply) => {
                    let res = self
                        .known_lan(lan.as_deref())
                        .map(|()| self.engine.mac_rows(lan.as_deref(), now));
                    let _ = reply.send(res);
                }
                Request::SetServices { lan, specs, reply } => {
                    let _ = reply.send(self.engine.set_services(&lan, &specs));
                }
                Request::VmNames(names) => self.engine.set_vm_names(names),
                Request::SetLimits { lan, specs, reply } => {
                    let _ = reply.send(self.engine.set_limits(&lan, &specs));
                }
                Request::Scrape(reply) => {
                    let extra = MetricsExtra {
                        traffic: self.engine.traffic(None, Some(0)),
                        rtt: self.engine.rtt_buckets(),
                        alerts: Vec::new(),
                    };
                    let _ = reply.send((self.status(now), extra));
                }
                Request::AlarmFigures {
                    needs,
                    mut into,
                    reply,
                } => {
                    self.engine.alarm_figures(needs, now, &mut into);
                    let _ = reply.send(into);
                }
                Request::Traffic { lan, top, reply } => {
                    let res = self
                        .known_lan(lan.as_deref())
                        .map(|()| self.engine.traffic(lan.as_deref(), top));
                    let _ = reply.send(res);
                }
                Request::Ping { target, reply } => {
                    let res = self.engine.ping(&target, now).map(|sent| {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        self.pings.push((sent.id, now, tx));
                        (sent, rx)
                    });
                    let _ = reply.send(res);
                }
                Request::Peer {
                    lan,
                    addr,
                    host_id,
                    others,
                    add,
                    prefix,
                    source,
                } => {
                    if let Some(i) = self.engine.lan_index(&lan) {
                        match (add, source) {
                            (true, _) => {
                                let reach = Reached { host_id, others };
                                self.engine.add_peer_reached(i, addr, reach, source, prefix)
                            }
                            (false, PeerSource::Static) => {
                                self.engine.unlist_peer(i, addr);
                            }
                            (false, _) => self.engine.remove_peer(i, addr),
                        }
                    }
                }
                Request::SetAccounting { accounting, reply } => {
                    self.engine.set_accounting(accounting);
                    let _ = reply.send(());
                }
                Request::SetSampling { sampling, reply } => {
                    self.engine.set_sampling(sampling);
                    let _ = reply.send(());
                }
                Request::AddLan {
                    spec,
                    tap,
                    multicast_if,
                    reply,
                } => {
                    let _ = reply.send(self.add_lan(*spec, tap, multicast_if));
                }
                Request::RemoveLan {
                    lan,
                    multicast_if,
                    reply,
                } => {
                    let _ = reply.send(self.remove_lan(&lan, multicast_if));
                }
            }
        }
    }

    /// A LAN joined: its TAP is the last one, polled under the next token.
    fn add_lan(
        &mut self,
        spec: crate::engine::LanSpec,
        tap: TapDevice,
        multicast_if: Option<std::net::Ipv4Addr>,
    ) -> Result<(), String> {
        let (name, group) = (spec.name.clone(), spec.group);
        let li = self.engine.add_lan(spec)?;
        let token = Token(TAPS + li.index());
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&tap.as_raw_fd()),
            token,
            Interest::READABLE,
        ) {
            self.engine.remove_lan(&name);
            return Err(format!("cannot poll TAP {}: {e}", tap.name()));
        }
        if let (Some(iface), Some(SocketAddr::V4(g))) = (multicast_if, group)
            && let Err(e) = self.udp.join_multicast(*g.ip(), iface)
        {
            warn!(lan = %name, group = %g, error = %e, "cannot join the multicast group: flooding by unicast");
        }
        self.taps.push(Arc::new(tap));
        self.lans_changed += 1;
        Ok(())
    }

    /// A LAN left: what was merged for any TAP goes out first, then its TAP closes and
    /// the TAPs after it move up one place (and poll token).
    fn remove_lan(
        &mut self,
        name: &str,
        multicast_if: Option<std::net::Ipv4Addr>,
    ) -> Result<(), String> {
        let group = self
            .engine
            .lan_index(name)
            .and_then(|li| self.engine.lan_group(li));
        {
            let DataPlane {
                gro,
                taps,
                engine,
                tapw,
                ..
            } = self;
            gro.flush(|lan, bytes, segs| write_merged(tapw, taps, engine, lan, bytes, segs));
            // Drops are counted by LAN index, which moves below.
            tapw.wait_all(|lan, segs| lost_at_tap(engine, lan, segs));
        }
        let li = self
            .engine
            .remove_lan(name)
            .ok_or_else(|| format!("no LAN named {name:?} on this host"))?;
        let tap = self.taps.remove(li.index());
        let registry = self.poll.registry();
        if let Err(e) = registry.deregister(&mut SourceFd(&tap.as_raw_fd())) {
            warn!(tap = tap.name(), error = %e, "cannot stop polling the TAP of a removed LAN");
        }
        for (k, t) in self.taps.iter().enumerate().skip(li.index()) {
            let fd = t.as_raw_fd();
            if let Err(e) =
                registry.reregister(&mut SourceFd(&fd), Token(TAPS + k), Interest::READABLE)
            {
                warn!(tap = t.name(), error = %e, "cannot renumber a TAP's poll token");
            }
        }
        if let (Some(iface), Some(SocketAddr::V4(g))) = (multicast_if, group)
            && let Err(e) = self.udp.leave_multicast(*g.ip(), iface)
        {
            debug!(lan = %name, group = %g, error = %e, "cannot leave the multicast group");
        }
        debug!(tap = tap.name(), "TAP closed");
        drop(tap);
        self.lans_changed += 1;
        Ok(())
    }
}

impl DataPlane {
    /// A LAN filter from the control socket: none, or a LAN this host has.
    fn known_lan(&self, lan: Option<&str>) -> Result<(), String> {
        match lan {
            Some(name) if !self.engine.has_lan(name) => {
                Err(format!("no LAN named {name:?} on this host"))
            }
            _ => Ok(()),
        }
    }

    fn status(&self, now: Instant) -> Status {
        let (gso_sends, gso_datagrams) = self.batch.stats();
        let (mmsg_sends, mmsg_runs) = self.batch.mmsg_stats();
        let mut host = self.host.clone();
        host.uptime_s = now.saturating_duration_since(self.started).as_secs();
        Status {
            host,
            drops: self.engine.host_drops().clone(),
            lans: self.engine.lan_status(now),
            bulletin: None,
            offload: OffloadStats {
                tap_offload: self.taps.iter().any(|t| t.offload()),
                tap_uso: self.taps.iter().any(|t| t.uso()),
                gso_max_segments: self.udp.max_gso_segments(),
                gso_sends_total: gso_sends,
                gso_datagrams_total: gso_datagrams,
                mmsg_sends_total: mmsg_sends,
                mmsg_runs_total: mmsg_runs,
                send_thread_batches_total: self.batch.handed_off(),
                tap_thread_frames_total: self.tapw.handed_off(),
                open_thread_batches_total: self.opener.as_ref().map_or(0, |o| o.handed),
                gro_frames_total: self.gro.stats().frames,
                gro_segments_total: self.gro.stats().segments,
                gro_summed_segments_total: self.gro.stats().summed,
                ..self.offload
            },
            queue: self.rxq.stats(),
            reassembly: self.engine.reassembly_stats(),
            // Filled in by the control socket and /metrics from the exporters' own counts.
            export: Default::default(),
            // Filled in by the control socket from the libvirt reader.
            libvirt: None,
            // Filled in by the control socket and /metrics from the relay's thread.
            relay: None,
        }
    }

    /// The engine's events: `vmvpn ping` answers go to their waiters (waiters are
    /// forgotten after 10 s); tunnel changes are logged by the engine already.
    fn handle_events(&mut self, now: Instant) {
        while let Some(e) = self.engine.poll_event() {
            match e {
                Event::Pong(p) => {
                    if let Some(i) = self.pings.iter().position(|(id, _, _)| *id == p.id) {
                        let (_, _, tx) = self.pings.swap_remove(i);
                        let _ = tx.send(p.rtt_ns);
                    }
                }
                Event::TunnelUp(_) | Event::TunnelDown(_) => {}
            }
        }
        if !self.pings.is_empty() {
            self.pings
                .retain(|(_, at, _)| now.saturating_duration_since(*at) < Duration::from_secs(10));
        }
    }
}

/// One frame from a TAP, or `None` when nothing more is to be read now (a failure is
/// logged; the poll loop comes back).
fn read_tap(tap: &TapDevice, buf: &mut [u8]) -> Option<usize> {
    loop {
        match tap.recv(buf) {
            Ok(n) => return Some(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => {
                warn!(tap = tap.name(), error = %e, "TAP read failed");
                return None;
            }
        }
    }
}

/// Write what the coalescer hands over (virtio-net header first), here or on the TAP
/// writer thread; a failed write loses every segment in it, and each is counted.
fn write_merged(
    tapw: &mut TapWrites,
    taps: &[Arc<TapDevice>],
    engine: &mut Engine,
    lan: usize,
    bytes: &mut Vec<u8>,
    segs: usize,
) {
    tapw.write(taps, lan, bytes, segs, |lan, segs| {
        lost_at_tap(engine, lan, segs)
    });
}

/// Segments a TAP write lost.
fn lost_at_tap(engine: &mut Engine, lan: usize, segs: usize) {
    engine.note_drops(Some(LanId(lan)), DropReason::TapWriteError, segs as u64);
}

/// Send what the core made of a TAP frame (`sealed` holds the datagram): unicast joins the
/// GSO batch, a flood goes after what the batch held. Returns the datagrams that failed.
/// Frames split from one TAP read, each written into the GSO batch's free room, sealed
/// there in place and committed to the batch: no copy between the split and the send.
struct ToBatch<'a> {
    engine: &'a mut Engine,
    udp: &'a Udp,
    batch: &'a mut GsoBatch,
    tap: &'a TapDevice,
    lan: LanId,
    now: Instant,
    /// The split computes each frame's checksum (`gso::checksums_ours`).
    summed: bool,
    /// Where a frame that is not one datagram to one peer (a flood, fragments, a reply
    /// to the VM) is copied to be sent as before.
    spare: &'a mut [u8],
    failed: u64,
}

impl gso::Segments for ToBatch<'_> {
    fn room(&mut self) -> &mut [u8] {
        let room = self.batch.room();
        let n = room.len().min(ROOM);
        &mut room[..n]
    }

    fn emit(&mut self, len: usize) {
        let room = self.batch.room();
        let room_len = room.len().min(ROOM);
        let action = self.engine.handle_tap_segment(
            self.lan,
            &mut room[..room_len],
            len,
            self.now,
            self.summed,
        );
        match action {
            TapAction::Unicast(to, n) => {
                self.failed += u64::from(self.batch.commit(self.udp, to, n));
                return;
            }
            TapAction::Unsealed(to, n, key) => {
                self.failed += u64::from(self.batch.commit_unsealed(self.udp, to, n, key.0));
                return;
            }
            _ => {}
        }
        let used = match action {
            TapAction::Reply(n) => HEADER_LEN + n,
            TapAction::Fragments { len, .. } | TapAction::Flood { len, .. } => len,
            _ => 0,
        };
        let used = used.min(room_len).min(self.spare.len());
        self.spare[..used].copy_from_slice(&self.batch.room()[..used]);
        self.failed += send_out(self.udp, self.batch, self.tap, action, self.spare);
    }
}

fn send_out(
    udp: &Udp,
    batch: &mut GsoBatch,
    tap: &TapDevice,
    action: TapAction<'_>,
    sealed: &mut [u8],
) -> u64 {
    let failed = match action {
        TapAction::Reply(len) => {
            // Back to the VM: an offload TAP takes a virtio-net header (all zero: no
            // offload asked) in front, written into the sealing room before the frame.
            let frame = if tap.offload() {
                let start = HEADER_LEN - VNET_HDR_LEN;
                sealed[start..HEADER_LEN].fill(0);
                &sealed[start..HEADER_LEN + len]
            } else {
                &sealed[HEADER_LEN..HEADER_LEN + len]
            };
            // An answer lost is asked again by the VM; nothing to count it against.
            let _ = tap.send(frame);
            0
        }
        TapAction::Unicast(to, len) => batch.push(udp, to, &sealed[..len]),
        TapAction::Unsealed(to, len, key) => batch.push_unsealed(udp, to, &sealed[..len], key.0),
        // Fragments are equal-sized but the last: they join the batch like segments.
        TapAction::Fragments { to, len, seg } => sealed[..len]
            .chunks(seg.max(1))
            .map(|d| batch.push(udp, to, d))
            .sum(),
        TapAction::Flood {
            to,
            len,
            seg,
            relay_to,
            relay,
        } => batch.flush_and_wait(udp) + send_flood(udp, &sealed[..len], to, relay, relay_to, seg),
        TapAction::Drop(_) | TapAction::Limited | TapAction::Consumed => 0,
    };
    failed.into()
}

/// A flooded frame (one datagram, or fragments of `seg` bytes) to this subnet's targets
/// and its relay copy to other subnets' forwarders; the number of sends that failed.
fn send_flood(
    udp: &Udp,
    frame: &[u8],
    to: &[SocketAddr],
    relay: &[u8],
    relay_to: &[SocketAddr],
    seg: usize,
) -> u32 {
    let send = |bytes: &[u8], targets: &[SocketAddr]| {
        targets
            .iter()
            .map(|a| {
                bytes
                    .chunks(seg.max(1))
                    .filter(|d| udp.send_to(d, *a).is_err())
                    .count()
            })
            .sum::<usize>()
    };
    (send(frame, to) + send(relay, relay_to)) as u32
}

/// Log a fatal data-plane error (used by the daemon when the thread returns one).
pub fn report_fatal(e: &io::Error) {
    error!(error = %e, "data plane failed; shutting down");
}
