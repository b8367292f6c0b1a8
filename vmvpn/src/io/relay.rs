//! The relay's thread (`[host] relay`): its control port and the pair sockets it opens on
//! demand, around the sans-IO [`RelayCore`]. One thread with its own poll loop, apart
//! from the data plane: relaying is a service to other hosts and must not take the data
//! plane's time, nor the data plane its.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info, warn};

use crate::proto::relay::RelayKey;
use crate::relay::{PairAction, RelayCore, RelayCounters};

const CONTROL: Token = Token(0);
const WAKE: Token = Token(1);
/// Pair sockets' tokens: the port plus this (ports are never 0).
const PAIR_BASE: usize = 2;
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
    pairs: HashMap<u16, UdpSocket>,
    core: RelayCore,
    counters: Arc<RelayCounters>,
    stop: Arc<AtomicBool>,
    buf: Vec<u8>,
}

impl Loop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = next_housekeeping.saturating_duration_since(now);
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
                        if let Ok(port) = u16::try_from(t - PAIR_BASE) {
                            self.drain_pair(port);
                        }
                    }
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
        if let Some(mut s) = self.pairs.remove(&port) {
            let _ = self.poll.registry().deregister(&mut s);
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
    fn open_pair(&mut self) -> io::Result<(u16, UdpSocket)> {
        let ip = self.control.local_addr()?.ip();
        let mut sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let port = sock.local_addr()?.port();
        self.poll.registry().register(
            &mut sock,
            Token(PAIR_BASE + usize::from(port)),
            Interest::READABLE,
        )?;
        Ok((port, sock))
    }

    /// Datagrams to a pair socket: binds noted, the rest passed to the other end.
    fn drain_pair(&mut self, port: u16) {
        loop {
            let Some(sock) = self.pairs.get(&port) else {
                return;
            };
            let (n, from) = match sock.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(port, error = %e, "relay pair socket");
                    continue;
                }
            };
            if let PairAction::Forward(to) =
                self.core
                    .handle_pair(port, from, &self.buf[..n], Instant::now())
            {
                // A full socket buffer drops it, as a congested link would.
                let _ = sock.send_to(&self.buf[..n], to);
            }
        }
    }
}
