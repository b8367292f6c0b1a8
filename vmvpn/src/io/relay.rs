//! The relay's thread (`[host] relay`): its control port and the pair sockets it opens on
//! demand, around the sans-IO [`RelayCore`]. One thread with its own poll loop, apart
//! from the data plane: relaying is a service to other hosts and must not take the data
//! plane's time, nor the data plane its.
//!
//! Pair sockets are the data plane's kind ([`Udp`]): batches in with `recvmmsg` and UDP
//! GRO, and each run of passed datagrams out again in one UDP GSO send, as it came in. A
//! host's GSO batch through the relay costs two syscalls, not two per datagram.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info, warn};

use super::udp::{BATCH, Received, SLOT, Udp};
use crate::proto::relay::RelayKey;
use crate::relay::{PairAction, RelayCore, RelayCounters};

const CONTROL: Token = Token(0);
const WAKE: Token = Token(1);
/// Pair sockets' tokens: the port plus this (ports are never 0).
const PAIR_BASE: usize = 2;
/// Receive batches one pair socket may take in a turn before the others get theirs.
const PAIR_BUDGET: usize = 16;
/// Idle pairs closed and status's pair counts refreshed, this often (a pair opened
/// shows at once).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// The running relay: stop it with [`Relay::stop`].
pub struct Relay {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    /// What status shows.
    pub counters: Arc<RelayCounters>,
    /// The control socket's address.
    pub local: SocketAddr,
}

impl Relay {
    /// Bind the control port at `bind` and run the relay for the LANs of `keys` (by LAN
    /// id), at most `limit_mbps` in all (0: no limit).
    pub fn start(
        bind: SocketAddr,
        keys: HashMap<u32, RelayKey>,
        limit_mbps: u32,
    ) -> io::Result<Relay> {
        let std_sock = std::net::UdpSocket::bind(bind)?;
        std_sock.set_nonblocking(true)?;
        let local = std_sock.local_addr()?;
        let control = UdpSocket::from_std(std_sock);
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let counters = Arc::new(RelayCounters::default());
        let core = RelayCore::new(keys, limit_mbps, counters.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let mut run = Loop {
            poll,
            control,
            pairs: HashMap::new(),
            core,
            counters: counters.clone(),
            stop: stop.clone(),
            buf: vec![0u8; 65536],
            area: vec![0u8; BATCH * SLOT],
            metas: [Received::default(); BATCH],
        };
        run.poll
            .registry()
            .register(&mut run.control, CONTROL, Interest::READABLE)?;
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
                if let Err(e) = run.run() {
                    warn!(error = %e, "the relay stopped");
                }
            })?;
        info!(%local, limit_mbps, "relay up");
        Ok(Relay {
            stop,
            waker,
            thread: Some(thread),
            counters,
            local,
        })
    }

    /// Stop the thread and close every socket.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Loop {
    poll: Poll,
    control: UdpSocket,
    pairs: HashMap<u16, Udp>,
    core: RelayCore,
    counters: Arc<RelayCounters>,
    stop: Arc<AtomicBool>,
    /// The control socket's receive buffer.
    buf: Vec<u8>,
    /// The pair sockets' receive batch.
    area: Vec<u8>,
    metas: [Received; BATCH],
}

impl Loop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        // Pair sockets whose turn ended with datagrams still waiting.
        let mut pending: std::collections::VecDeque<u16> = std::collections::VecDeque::new();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = if pending.is_empty() {
                next_housekeeping.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                match ev.token() {
                    CONTROL => self.drain_control(),
                    WAKE => {}
                    Token(t) => {
                        if let Ok(port) = u16::try_from(t - PAIR_BASE)
                            && !pending.contains(&port)
                        {
                            pending.push_back(port);
                        }
                    }
                }
            }
            for _ in 0..pending.len() {
                if let Some(port) = pending.pop_front()
                    && self.drain_pair(port)
                {
                    pending.push_back(port);
                }
            }
            let now = Instant::now();
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING;
                for port in self.core.poll_idle(now) {
                    self.close(port);
                    debug!(port, "relay pair idle: closed");
                }
                self.counters.publish(self.core.pairs());
            }
        }
        Ok(())
    }

    fn close(&mut self, port: u16) {
        if let Some(s) = self.pairs.remove(&port) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&s.as_raw_fd()));
        }
    }

    /// Requests: grant the pair's socket, opening it if it has none.
    fn drain_control(&mut self) {
        loop {
            let (n, from) = match self.control.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // An ICMP error for an earlier send; the socket is still good.
                    debug!(error = %e, "relay control socket");
                    continue;
                }
            };
            let Ok(req) = self.core.handle_request(&self.buf[..n]) else {
                continue;
            };
            let port = match self.core.port_of(&req.pair) {
                Some(p) => p,
                None => match self.open_pair() {
                    Ok((port, sock)) => {
                        if let Some(old) = self.core.open_pair(req.pair, port, Instant::now()) {
                            self.close(old);
                        }
                        self.pairs.insert(port, sock);
                        // Status shows a new pair at once, not at the next second.
                        self.counters.publish(self.core.pairs());
                        info!(
                            lan = format_args!("{:#010x}", req.pair.lan),
                            hosts = format_args!("{:#010x} {:#010x}", req.pair.lo, req.pair.hi),
                            port,
                            "relay pair opened"
                        );
                        port
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot open a relay pair socket");
                        continue;
                    }
                },
            };
            if let Some(grant) = self.core.grant(&req, port) {
                let _ = self.control.send_to(&grant, from);
            }
        }
    }

    /// A new pair socket on the control socket's address, any free port.
    fn open_pair(&mut self) -> io::Result<(u16, Udp)> {
        let ip = self.control.local_addr()?.ip();
        let sock = Udp::bind(SocketAddr::new(ip, 0))?;
        let port = sock.local_addr()?.port();
        self.poll.registry().register(
            &mut SourceFd(&sock.as_raw_fd()),
            Token(PAIR_BASE + usize::from(port)),
            Interest::READABLE,
        )?;
        Ok((port, sock))
    }

    /// Datagrams to a pair socket: binds noted, the rest passed to the other end, each
    /// run of them in one send. True when the budget ended the turn, not an empty socket.
    fn drain_pair(&mut self, port: u16) -> bool {
        let Loop {
            pairs,
            core,
            area,
            metas,
            ..
        } = self;
        let Some(sock) = pairs.get(&port) else {
            return false;
        };
        let max_segments = sock.max_gso_segments().max(1);
        let mut budget = PAIR_BUDGET;
        loop {
            let n = {
                let mut chunks = area.chunks_mut(SLOT);
                let mut iov: [IoSliceMut<'_>; BATCH] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
                match sock.recv(&mut iov, metas) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // An ICMP error for an earlier send; the socket is still good.
                        debug!(port, error = %e, "relay pair socket");
                        continue;
                    }
                }
            };
            let now = Instant::now();
            for (meta, slot) in metas[..n].iter().zip(area.chunks(SLOT)) {
                let len = meta.len.min(slot.len());
                let stride = if meta.stride == 0 { len } else { meta.stride }.max(1);
                let from = unmapped(meta.addr);
                // The current run of passed datagrams: start, end, where to.
                let mut run: Option<(usize, usize, SocketAddr)> = None;
                let send = |run: Option<(usize, usize, SocketAddr)>| {
                    if let Some((start, end, to)) = run {
                        // A full socket buffer drops it, as a congested link would.
                        for part in slot[start..end].chunks(stride * max_segments) {
                            let _ = sock.send_gso(part, stride, to, 0);
                        }
                    }
                };
                let mut off = 0;
                while off < len {
                    let end = (off + stride).min(len);
                    match core.handle_pair(port, from, &slot[off..end], now) {
                        PairAction::Forward(to) => match run {
                            Some((start, e, t)) if e == off && t == to => {
                                run = Some((start, end, t))
                            }
                            _ => {
                                send(run);
                                run = Some((off, end, to));
                            }
                        },
                        _ => send(run.take()),
                    }
                    off = end;
                }
                send(run);
            }
            budget -= 1;
            if budget == 0 {
                // More may wait: back in turn after the others (mio is edge-triggered).
                return true;
            }
        }
    }
}

/// An IPv4 sender as such (a socket bound to `[::]` reports it v4-mapped).
fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        v4 => v4,
    }
}
