//! The bulletin's QUIC server: one bidirectional stream per host connection.
//!
//! Per connection: `Hello` → `Challenge` (fresh nonce, the bulletin's epoch and lease
//! terms); then `Register` → `Registered` and that host's snapshots, then events as other
//! hosts join and leave; `Heartbeat` → `Ack`; `Unregister` → `Ack` and leave events to the
//! others at once; `Auth` → `Ack` (a right to read without registering); `Query` →
//! `Records` and `Matrix` → `Matrix`, each limited to the LANs the connection's credentials
//! cover (registered LANs, proven LANs, or all with the operator token).
//!
//! What one client can cost is bounded (see the README's "Security and limits"):
//! - admission: connections in total, per source address, and not yet authenticated;
//! - time: `Hello` and the first credential within `hello_timeout`, then a message at least
//!   every lease (heartbeats come far more often), else the connection is closed;
//! - memory: replies and events wait in a per-connection outbox ([`OUTBOX_BYTES`]); the
//!   reader takes no new request while a reply waits for room (QUIC flow control then
//!   stops the client), and a connection too slow to take its events is closed (the host
//!   reconnects and resyncs from a snapshot).
//!
//! A connection that sends an oversized or malformed frame, or speaks out of turn, is
//! closed; registered hosts are not disturbed.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, info, warn};

use crate::admission::{Admission, AdmissionCounters, Refusal};
use crate::board::{Board, Said};
use crate::budget::{Budget, Charge};
use crate::config::Limits;
use crate::frames::{self, FrameError};
use crate::proof::Verifier;
use crate::proto::{
    BulletinStatus, ClientMsg, Credential, MAX_CLIENT_FRAME, MIN_VERSION, RefuseCode, ServerMsg,
    StatusLimits, VERSION, WebListenerStatus, encode,
};
use crate::registry::{ConnId, Outbound, Registry};
use crate::reports::Reports;
use crate::store::replica::{Apply, Change, Replica};
use crate::store::{SharedHost, SharedSaid, Store};
use crate::tls::{Identity, TlsError};

/// How long a new connection may take to open its stream and say `Hello` (default).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of replies and events that may wait for one connection's writer (default).
pub const OUTBOX_BYTES: usize = 1 << 20;
/// Bytes that may wait for every writer together (default, `max_buffered_mb`): 64 KiB
/// for each of the default 4096 connections. Hosts that read their events use a few KiB;
/// only connections that stop reading pile up, and the most backlogged go first.
pub const BUFFERED_BUDGET: usize = 256 << 20;
/// What QUIC may hold unacknowledged for one connection.
const SEND_WINDOW: usize = 2 << 20;
/// What one connection may have in flight towards the bulletin: one largest frame.
const STREAM_WINDOW: u32 = 64 * 1024 + 4;
/// The UDP receive buffer asked for. Every datagram the kernel drops for want of room
/// can be a new host's handshake packet, which QUIC resends only after its probe timeout
/// (1 s, then 2, then 4): with the default 208 KiB, a few flooding connections (each
/// allowed [`STREAM_WINDOW`] in one burst) overflowed it and stalled greetings by seconds.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Ask for `bytes` of receive buffer, beyond `rmem_max` where we may (CAP_NET_ADMIN);
/// the size the kernel granted (it reports twice what it books).
fn grow_receive_buffer(socket: &std::net::UdpSocket, bytes: usize) -> usize {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    let set = |opt: libc::c_int| {
        // SAFETY: setsockopt on our own socket with an int value and its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        warn!(
            error = %std::io::Error::last_os_error(),
            "cannot grow the QUIC socket's receive buffer: floods may delay handshakes"
        );
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into an int we own, with its size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 { got.max(0) as usize } else { 0 }
}

/// QUIC close codes.
const CLOSE_PROTOCOL: u32 = 1;
const CLOSE_SHUTDOWN: u32 = 2;
const CLOSE_SLOW: u32 = 3;
const CLOSE_IDLE: u32 = 4;
const CLOSE_EVICTED: u32 = 5;

/// What the server needs to run.
pub struct ServerOptions {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// LANs served.
    pub lans: HashMap<String, Verifier>,
    /// Lease length.
    pub lease_ttl: Duration,
    /// Heartbeat interval asked of hosts.
    pub heartbeat: Duration,
    /// How long a connection may take to say `Hello` and then to register or authenticate.
    pub hello_timeout: Duration,
    /// Verifier of the operator token (reads of every LAN); none: only LAN credentials.
    pub operator: Option<Verifier>,
    /// Connection limits.
    pub limits: Limits,
    /// Bytes that may wait for one connection's writer ([`OUTBOX_BYTES`]).
    pub outbox_bytes: usize,
    /// Bytes that may wait for all writers together, QUIC's buffers counted
    /// ([`BUFFERED_BUDGET`]; see `budget`).
    pub buffered_budget: usize,
}

/// A frame on its way to a writer, with the room it holds in its outbox and its charge to
/// the global budget (both given back when the writer has handed it to QUIC).
type Queued = (Vec<u8>, OwnedSemaphorePermit, Charge);

/// Replies and events on their way to one connection's writer, bounded in bytes.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    size: usize,
    conn: Connection,
    budget: Arc<Budget>,
}

impl Outbox {
    fn permits(&self, len: usize) -> u32 {
        // A frame larger than the whole outbox waits for all of it.
        len.min(self.size) as u32
    }

    /// Queue a reply, waiting for room: the reader stops reading meanwhile.
    async fn send(&self, m: &ServerMsg) -> bool {
        let bytes = encode(m);
        match self
            .room
            .clone()
            .acquire_many_owned(self.permits(bytes.len()))
            .await
        {
            Ok(p) => {
                let c = self.budget.charge(bytes.len());
                self.tx.send((bytes, p, c)).is_ok()
            }
            Err(_) => false,
        }
    }

    /// Bytes waiting in this outbox.
    fn backlog(&self) -> usize {
        self.size - self.room.available_permits()
    }

    /// Queue an event without waiting; false when the connection has no room left.
    fn try_send(&self, m: &ServerMsg) -> bool {
        let bytes = encode(m);
        match self
            .room
            .clone()
            .try_acquire_many_owned(self.permits(bytes.len()))
        {
            Ok(p) => {
                let c = self.budget.charge(bytes.len());
                self.tx.send((bytes, p, c)).is_ok()
            }
            Err(_) => false,
        }
    }
}

struct Shared {
    /// The registry and what hosts said, kept consistent by the board itself.
    board: Board,
    conns: HashMap<ConnId, Outbox>,
    next_conn: ConnId,
    admission: Admission,
    /// The `--web` listeners, for `Status`.
    web: Vec<crate::http::Listener>,
}

struct State {
    shared: Mutex<Shared>,
    epoch: u64,
    heartbeat: Duration,
    hello_timeout: Duration,
    operator: Option<Verifier>,
    limits: Limits,
    outbox_bytes: usize,
    started: Instant,
    budget: Arc<Budget>,
    /// The shared registry's store, where several bulletins serve one registry.
    replica: std::sync::OnceLock<Replica>,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock would be a bug; the registry is still consistent
        // enough to keep serving, so recover the guard rather than abort.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Push events; a connection with no room for one is closed (it resyncs on reconnect).
    fn dispatch(&self, shared: &mut Shared, out: Vec<Outbound>) {
        for o in out {
            if let Some(ob) = shared.conns.get(&o.to)
                && !ob.try_send(&ServerMsg::Event(o.event))
            {
                warn!(remote = %ob.conn.remote_address(), "connection too slow to take its events: closing it");
                ob.conn
                    .close(CLOSE_SLOW.into(), b"too slow: events dropped, reconnect");
            }
        }
        self.keep_budget(shared);
    }

    /// Over the global budget, close the most backlogged connections until their bytes
    /// would bring it back within (they are taken out of the table at once, so nothing
    /// more is queued for them; their memory returns as their writers end).
    fn keep_budget(&self, shared: &mut Shared) {
        let mut excess = self.budget.excess();
        if excess == 0 {
            return;
        }
        let mut by_backlog: Vec<(usize, ConnId)> = shared
            .conns
            .iter()
            .map(|(id, o)| (o.backlog(), *id))
            .collect();
        by_backlog.sort_unstable_by(|a, b| b.cmp(a));
        for (backlog, id) in by_backlog {
            if excess == 0 {
                break;
            }
            let Some(o) = shared.conns.remove(&id) else {
                continue;
            };
            warn!(remote = %o.conn.remote_address(), backlog, "bulletin over its memory budget (max_buffered_mb): closing the most backlogged connection");
            o.conn.close(
                CLOSE_SLOW.into(),
                b"shed: the bulletin is over its memory budget; reconnect",
            );
            self.budget.count_shed();
            // Its outbox, and the QUIC window its writer may be waiting on.
            excess = excess.saturating_sub(backlog + self.budget.window());
        }
    }

    fn status(&self) -> BulletinStatus {
        let s = self.lock();
        let l = self.limits;
        BulletinStatus {
            version: VERSION,
            uptime_s: self.started.elapsed().as_secs(),
            lans: s.board.registry().lan_count() as u64,
            hosts: s.board.registry().host_count() as u64,
            connections: s.admission.total() as u64,
            unauthenticated: s.admission.unauthenticated() as u64,
            limits: StatusLimits {
                connections: l.connections as u64,
                per_ip: l.per_ip as u64,
                unauthenticated: l.unauthenticated as u64,
                unauthenticated_per_ip: l.unauthenticated_per_ip as u64,
            },
            admission: s.admission.counters(),
            buffered_bytes: self.budget.used() as u64,
            max_buffered_bytes: self.budget.limit() as u64,
            shed_total: self.budget.shed(),
            queued_bytes: s.conns.values().map(|o| o.backlog() as u64).sum(),
            web: s
                .web
                .iter()
                .map(|(a, st)| WebListenerStatus {
                    listen: a.to_string(),
                    counts: st.counts(),
                })
                .collect(),
            store_up: self.replica.get().map(Replica::healthy),
        }
    }

    /// Admit a new connection from `ip`, or say which limit refuses it.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let ticket = self.lock().admission.admit(ip)?;
        Ok(Slot {
            state: self.clone(),
            ip,
            id: ticket.id,
            evicted: ticket.evicted,
            authenticated: false,
        })
    }
}

/// One admitted connection's place in the table, given back when dropped.
struct Slot {
    state: Arc<State>,
    ip: IpAddr,
    id: u64,
    /// Notified when the table evicts this connection (only while unproven).
    evicted: Arc<tokio::sync::Notify>,
    authenticated: bool,
}

impl Slot {
    fn authenticate(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            self.state.lock().admission.proven(self.id);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.lock().admission.release(self.id, self.ip);
    }
}

/// What a connection may read.
#[derive(Default)]
struct Access {
    operator: bool,
    lans: HashSet<String>,
}

impl Access {
    fn covers(&self, lan: &str) -> bool {
        self.operator || self.lans.contains(lan)
    }

    fn any(&self) -> bool {
        self.operator || !self.lans.is_empty()
    }
}

/// A bound, running bulletin.
pub struct Server {
    endpoint: Endpoint,
    state: Arc<State>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Certificate or TLS setup.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP port could not be bound.
    #[error("cannot listen on {addr}: {cause} (is another bulletin running there?)")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        cause: std::io::Error,
    },
    /// No randomness.
    #[error("the system random source failed")]
    Random,
}

/// Counts of open connections (for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnCounts {
    /// All admitted connections.
    pub total: usize,
    /// Those not yet registered or authenticated.
    pub unauthenticated: usize,
    /// What admission did since start.
    pub admission: AdmissionCounters,
}

impl Server {
    /// Bind and start serving (tasks run on the current tokio runtime).
    pub fn start(identity: &Identity, opts: ServerOptions) -> Result<Self, ServeError> {
        let mut cfg = identity.server_config()?;
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(0u8.into());
        transport.max_concurrent_bidi_streams(1u8.into());
        // Client frames are at most 64 KB: small receive windows bound what a client can
        // make the bulletin buffer, and what it can send in one burst (see
        // RECEIVE_BUFFER); the send window bounds what waits unacknowledged.
        transport.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
        transport.receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
        transport.send_window(SEND_WINDOW as u64);
        // Dead hosts' connections go away on their own; their leases are separate.
        transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            (opts.lease_ttl.as_millis().min(u128::from(u32::MAX))) as u32,
        ))));
        cfg.transport_config(Arc::new(transport));
        let bind_err = |cause| ServeError::Bind {
            addr: opts.listen,
            cause,
        };
        let socket = std::net::UdpSocket::bind(opts.listen).map_err(bind_err)?;
        let rcvbuf = grow_receive_buffer(&socket, RECEIVE_BUFFER);
        debug!(bytes = rcvbuf, "QUIC socket receive buffer");
        let endpoint = Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(cfg),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        let mut e = [0u8; 8];
        SystemRandom::new()
            .fill(&mut e)
            .map_err(|_| ServeError::Random)?;
        let state = Arc::new(State {
            shared: Mutex::new(Shared {
                board: Board::new(opts.lans, opts.lease_ttl),
                conns: HashMap::new(),
                next_conn: 1,
                admission: Admission::new(opts.limits),
                web: Vec::new(),
            }),
            epoch: u64::from_be_bytes(e),
            heartbeat: opts.heartbeat,
            hello_timeout: opts.hello_timeout,
            operator: opts.operator,
            limits: opts.limits,
            outbox_bytes: opts.outbox_bytes.max(1024),
            started: Instant::now(),
            budget: Budget::new(opts.buffered_budget, SEND_WINDOW),
            replica: std::sync::OnceLock::new(),
        });
        tokio::spawn(expire_loop(state.clone()));
        tokio::spawn(accept_loop(endpoint.clone(), state.clone()));
        Ok(Server { endpoint, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serve these LANs from now on (SIGHUP): see [`Registry::set_lans`]. The hosts of a
    /// LAN removed are told nothing themselves (their own config still names it; they keep
    /// what they know), the others of that LAN hear that each one left.
    pub fn set_lans(&self, lans: HashMap<String, Verifier>) {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let out = s.board.set_lans(lans);
        self.state.dispatch(s, out);
    }

    /// Serve the registry shared in `store` with every other bulletin on it: this one's
    /// hosts are written there, the others' adopted from there (see `store`). Once.
    pub fn replicate<S: Store>(&self, store: S) {
        let me = format!("{:016x}", self.state.epoch);
        let ttl = self.state.lock().board.registry().ttl();
        let r = crate::store::replica::start(store, me, ttl, BoardApply(self.state.clone()));
        let _ = self.state.replica.set(r);
    }

    /// Whether the shared registry's store answers (None: no store, one bulletin).
    pub fn store_healthy(&self) -> Option<bool> {
        self.state.replica.get().map(Replica::healthy)
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// Registered hosts now.
    pub fn host_count(&self) -> usize {
        self.state.lock().board.registry().host_count()
    }

    /// Open connections now.
    pub fn conn_counts(&self) -> ConnCounts {
        let s = self.state.lock();
        ConnCounts {
            total: s.admission.total(),
            unauthenticated: s.admission.unauthenticated(),
            admission: s.admission.counters(),
        }
    }

    /// The bulletin's own state (`bulletin status`).
    pub fn status(&self) -> BulletinStatus {
        self.state.status()
    }

    /// Bytes of replies and events waiting in all outboxes now.
    pub fn queued_bytes(&self) -> usize {
        self.state.status().queued_bytes as usize
    }

    /// Count this `--web` listener in `bulletin status` and `/metrics`.
    pub fn add_web_listener(&self, l: crate::http::Listener) {
        self.state.lock().web.push(l);
    }

    /// A handle the dashboard reads the registry, reports and alerts through.
    pub fn watcher(&self) -> Watcher {
        Watcher(self.state.clone())
    }

    /// Close every connection and stop.
    pub async fn shutdown(self) {
        self.endpoint
            .close(CLOSE_SHUTDOWN.into(), b"bulletin shutting down");
        self.endpoint.wait_idle().await;
    }
}

/// What the dashboard reads (`Server::watcher`).
#[derive(Clone)]
pub struct Watcher(Arc<State>);

impl Watcher {
    /// The bulletin's own state (`bulletin status`, `/metrics`).
    pub fn status(&self) -> BulletinStatus {
        self.0.status()
    }

    /// Everything held now, for [`crate::web::global::Global::update`]. Reports and
    /// alerts of hosts that left are dropped first, as `Matrix` does.
    pub fn input(&self, name: &str) -> crate::web::global::Input {
        let now = Instant::now();
        let s = self.0.lock();
        let b = &s.board;
        crate::web::global::Input {
            name: name.to_string(),
            records: b.registry().records(None, now),
            reports: b.reports().stored(now),
            alerts: b.alerts().list(None, now),
            names: crate::matrix::names(&b.reports().names(None)),
            services: crate::services::overlay(&b.reports().services(None)),
            paths: crate::matrix::paths(&b.reports().paths(None)),
        }
    }
}

/// The replica's changes to the board, pushed to this bulletin's hosts.
struct BoardApply(Arc<State>);

impl Apply for BoardApply {
    fn adopt(&self, host: SharedHost) {
        let mut s = self.0.lock();
        let out = s.board.adopt(host, Instant::now());
        self.0.dispatch(&mut s, out);
    }

    fn forget(&self, host_id: u32) -> bool {
        let mut s = self.0.lock();
        if s.board.registry().holds(host_id) {
            return true;
        }
        let out = s.board.forget(host_id);
        self.0.dispatch(&mut s, out);
        false
    }

    fn said(&self, host_id: u32, said: SharedSaid) {
        self.0
            .lock()
            .board
            .put_shared(host_id, said, Instant::now());
    }

    fn resync(&self, others: Vec<SharedHost>) {
        let mut s = self.0.lock();
        let keep: HashSet<u32> = others.iter().map(|h| h.host_id).collect();
        let mut out = Vec::new();
        for id in s.board.registry().elsewhere() {
            if !keep.contains(&id) {
                out.extend(s.board.forget(id));
            }
        }
        let now = Instant::now();
        for h in others {
            out.extend(s.board.adopt(h, now));
        }
        self.0.dispatch(&mut s, out);
    }
}

async fn expire_loop(state: Arc<State>) {
    loop {
        let next = state.lock().board.registry().next_expiry();
        let now = Instant::now();
        let wait = next
            .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
            .min(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
        let now = Instant::now();
        let mut s = state.lock();
        // The shared registry hears of it at once (not only when its own lease lapses,
        // which a resync after an etcd fault may have renewed).
        if let Some(r) = state.replica.get() {
            for id in s.board.registry().lapsed(now) {
                r.tell(Change::Release(id));
            }
        }
        let out = s.board.expire(now);
        if !out.is_empty() {
            info!(
                events = out.len(),
                hosts = s.board.registry().host_count(),
                "leases expired"
            );
        }
        state.dispatch(&mut s, out);
    }
}

async fn accept_loop(endpoint: Endpoint, state: Arc<State>) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        // Past half the unproven table, a source must show it receives at its address
        // (one round trip, no state kept here) before it may take a slot.
        if !incoming.remote_address_validated() && state.lock().admission.wants_retry() {
            state.lock().admission.count_retry();
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        let slot = match state.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(limit) => {
                debug!(%remote, limit = limit.key(), "connection refused: at the limit");
                incoming.refuse();
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let evicted = slot.evicted.clone();
            let conn = tokio::select! {
                _ = evicted.notified() => {
                    debug!(%remote, "evicted during the handshake: newer connections wait for a credential");
                    return;
                }
                r = tokio::time::timeout(state.hello_timeout, incoming) => match r {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return debug!(%remote, error = %e, "handshake failed"),
                    Err(_) => return debug!(%remote, "handshake timed out"),
                },
            };
            // Only unproven connections are ever evicted: once this one registers or
            // authenticates, nothing notifies it any more.
            tokio::select! {
                _ = evicted.notified() => {
                    debug!(%remote, "evicted before proving a credential");
                    conn.close(
                        CLOSE_EVICTED.into(),
                        b"evicted: too many connections wait for a credential; reconnect",
                    );
                }
                () = serve_conn(conn.clone(), state, slot) => {}
            }
        });
    }
}

async fn serve_conn(conn: Connection, state: Arc<State>, mut slot: Slot) {
    let remote = conn.remote_address();
    let opened = tokio::time::timeout(state.hello_timeout, async {
        let (send, mut recv) = conn.accept_bi().await.ok()?;
        match frames::read::<ClientMsg>(&mut recv, MAX_CLIENT_FRAME).await {
            Ok(ClientMsg::Hello { version }) => Some((send, recv, version)),
            _ => None,
        }
    })
    .await;
    let Ok(Some((send, recv, version))) = opened else {
        debug!(%remote, "no hello in time: closing");
        conn.close(CLOSE_PROTOCOL.into(), b"expected hello");
        return;
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let outbox = Outbox {
        tx,
        room: Arc::new(Semaphore::new(state.outbox_bytes)),
        size: state.outbox_bytes,
        conn: conn.clone(),
        budget: state.budget.clone(),
    };
    let writer = tokio::spawn(write_loop(send, rx, state.budget.clone()));
    let id = {
        let mut s = state.lock();
        let id = s.next_conn;
        s.next_conn += 1;
        s.conns.insert(id, outbox.clone());
        id
    };
    // Out of the table however this ends, eviction (this future dropped) included.
    let _listed = Listed { state: &state, id };
    if !(MIN_VERSION..=VERSION).contains(&version) {
        outbox
            .send(&ServerMsg::Refused {
                code: RefuseCode::Version,
                reason: format!("this bulletin speaks protocol {MIN_VERSION} to {VERSION}, the host speaks {version}: upgrade one of them"),
            })
            .await;
    } else {
        let mut nonce = [0u8; 32];
        if SystemRandom::new().fill(&mut nonce).is_ok() {
            let lease_ttl_ms = state.lock().board.registry().ttl().as_millis() as u64;
            outbox
                .send(&ServerMsg::Challenge {
                    version: VERSION,
                    nonce,
                    epoch: state.epoch,
                    lease_ttl_ms,
                    heartbeat_ms: state.heartbeat.as_millis() as u64,
                })
                .await;
            let mut c = ConnCtx {
                conn: &conn,
                state: &state,
                id,
                outbox: &outbox,
                nonce,
                slot: &mut slot,
                host: None,
                access: Access::default(),
                reads: ReadBudget::new(Instant::now()),
            };
            if let Err((code, reason)) = c.read_loop(recv).await {
                debug!(%remote, %reason, "closing connection");
                conn.close(code.into(), reason.as_bytes());
            }
        }
    }
    drop(_listed);
    drop(outbox);
    let _ = writer.await;
}

/// A connection's entry in `Shared::conns`, removed when dropped.
struct Listed<'a> {
    state: &'a State,
    id: ConnId,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.state.lock().conns.remove(&self.id);
    }
}

async fn write_loop(
    mut send: SendStream,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    budget: Arc<Budget>,
) {
    // The permit and the charge are held until the bytes are with QUIC, then the room is
    // given back; while QUIC's buffer is full, the wait counts against the budget.
    while let Some((bytes, _permit, _charge)) = rx.recv().await {
        let waiting = budget.waiting();
        let written = send.write_all(&bytes).await;
        drop(waiting);
        if written.is_err() {
            return;
        }
        // One frame per turn, for the same reason as the reader's.
        tokio::task::yield_now().await;
    }
    let _ = send.finish();
}

/// One connection being served.
struct ConnCtx<'a> {
    conn: &'a Connection,
    state: &'a State,
    id: ConnId,
    outbox: &'a Outbox,
    nonce: [u8; 32],
    slot: &'a mut Slot,
    /// The host registered on this connection.
    host: Option<u32>,
    /// What the connection proved it may read (besides its registered LANs).
    access: Access,
    /// Reads of the whole registry or matrix it may still make now.
    reads: ReadBudget,
}

/// Whole-registry reads (`Query`, `Matrix`, `AlertsQuery`, `Status`) per connection: a
/// host re-queries once a minute and `bulletin ls` once, but each answer can be tens of KB
/// to build and encode, so a client pipelining them would take the bulletin's one thread
/// from everyone else (handshakes of new hosts included).
struct ReadBudget {
    tokens: f64,
    at: Instant,
}

/// Reads per second, and how many may come at once.
const READS_PER_S: f64 = 10.0;
const READS_BURST: f64 = 20.0;

impl ReadBudget {
    fn new(now: Instant) -> Self {
        ReadBudget {
            tokens: READS_BURST,
            at: now,
        }
    }

    /// Take one read: none, or how long to wait for it.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * READS_PER_S).min(READS_BURST) - 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / READS_PER_S))
    }
}

type Close = (u32, String);

impl ConnCtx<'_> {
    /// How long the next message may take: short until the connection has proven
    /// something, then a lease (hosts heartbeat several times per lease).
    fn idle_limit(&self) -> Duration {
        if self.slot.authenticated {
            self.state
                .lock()
                .board
                .registry()
                .ttl()
                .max(self.state.hello_timeout)
        } else {
            self.state.hello_timeout
        }
    }

    /// Serve requests until the connection closes; `Err` closes it with a reason.
    async fn read_loop(&mut self, mut recv: RecvStream) -> Result<(), Close> {
        loop {
            let limit = self.idle_limit();
            let msg = match tokio::time::timeout(
                limit,
                frames::read::<ClientMsg>(&mut recv, MAX_CLIENT_FRAME),
            )
            .await
            {
                Err(_) => {
                    return Err((
                        CLOSE_IDLE,
                        format!("idle for {} s: closing", limit.as_secs()),
                    ));
                }
                Ok(Ok(m)) => m,
                Ok(Err(FrameError::Closed | FrameError::Stream(_))) => return Ok(()),
                Ok(Err(FrameError::Codec(e))) => {
                    warn!(remote = %self.conn.remote_address(), error = %e, "refusing bad message");
                    return Err((CLOSE_PROTOCOL, e.to_string()));
                }
            };
            if matches!(
                msg,
                ClientMsg::Query { .. }
                    | ClientMsg::Matrix { .. }
                    | ClientMsg::NamesQuery { .. }
                    | ClientMsg::ServicesQuery { .. }
                    | ClientMsg::PathsQuery { .. }
                    | ClientMsg::AlertsQuery { .. }
                    | ClientMsg::Status
                    | ClientMsg::StoreStatus
            ) && let Some(wait) = self.reads.take(Instant::now())
            {
                // Meanwhile nothing is read: QUIC flow control stops a flooding client.
                tokio::time::sleep(wait).await;
            }
            let reply = self.handle(msg, Instant::now())?;
            // Waits for room: no new request is read while this reply cannot be queued.
            if let Some(reply) = reply
                && !self.outbox.send(&reply).await
            {
                return Ok(());
            }
            if self.state.budget.excess() > 0 {
                self.state.keep_budget(&mut self.state.lock());
            }
            // One request per turn. quinn's reads complete at once while a client's
            // pipelined requests wait in its window, and never yield by themselves, so a
            // flooding connection would otherwise run for its whole window before the
            // accept loop, a handshake or another host's heartbeat got a turn.
            tokio::task::yield_now().await;
        }
    }

    fn refused(code: RefuseCode, reason: impl Into<String>) -> Option<ServerMsg> {
        Some(ServerMsg::Refused {
            code,
            reason: reason.into(),
        })
    }

    /// One request: the reply to queue, if any.
    fn handle(&mut self, msg: ClientMsg, now: Instant) -> Result<Option<ServerMsg>, Close> {
        let state = self.state;
        let (id, nonce) = (self.id, self.nonce);
        let remote = self.conn.remote_address();
        Ok(match msg {
            ClientMsg::Hello { .. } => return Err((CLOSE_PROTOCOL, "hello twice".into())),
            ClientMsg::Register(req) => {
                if let Some(r) = state.replica.get()
                    && !r.healthy()
                {
                    warn!(host = %req.name, %remote, "registration refused: the registry store is unreachable");
                    return Ok(Self::refused(
                        RefuseCode::Busy,
                        "the registry store (etcd) is unreachable: known hosts keep working, registrations wait until it returns; try another bulletin",
                    ));
                }
                let mut s = state.lock();
                match s.board.register(id, &nonce, &req, remote, now) {
                    Ok(out) => {
                        self.host = Some(req.host_id);
                        if let (Some(r), Some(h)) =
                            (state.replica.get(), s.board.registry().shared(req.host_id))
                        {
                            r.tell(Change::Hold(h));
                        }
                        info!(host = %req.name, id = format_args!("{:#010x}", req.host_id), addr = %req.underlay,
                              lans = req.lans.len(), hosts = s.board.registry().host_count(), "registered");
                        let mut ok = self.outbox.try_send(&ServerMsg::Registered {
                            lease_ms: s.board.registry().ttl().as_millis() as u64,
                        });
                        for ev in s.board.registry().snapshots(req.host_id, now) {
                            ok &= self.outbox.try_send(&ServerMsg::Event(ev));
                        }
                        state.dispatch(&mut s, out);
                        drop(s);
                        self.slot.authenticate();
                        if !ok {
                            return Err((CLOSE_SLOW, "snapshot larger than the outbox".into()));
                        }
                        None
                    }
                    Err(r) => {
                        warn!(host = %req.name, %remote, reason = %r.reason, "registration refused");
                        Self::refused(r.code, r.reason)
                    }
                }
            }
            ClientMsg::Heartbeat => match self.host {
                Some(h) => match state.lock().board.heartbeat(h, id, now) {
                    Ok(left) => Some({
                        if let Some(r) = state.replica.get() {
                            r.tell(Change::Renew(h));
                        }
                        ServerMsg::Ack {
                            lease_ms: left.as_millis() as u64,
                        }
                    }),
                    Err(r) => Self::refused(r.code, r.reason),
                },
                None => Self::refused(RefuseCode::NotRegistered, "heartbeat before register"),
            },
            ClientMsg::Unregister => {
                if let Some(h) = self.host.take() {
                    let mut s = state.lock();
                    let out = s.board.unregister(h, id);
                    if let Some(r) = state.replica.get() {
                        r.tell(Change::Release(h));
                    }
                    info!(
                        id = format_args!("{h:#010x}"),
                        hosts = s.board.registry().host_count(),
                        "unregistered"
                    );
                    state.dispatch(&mut s, out);
                }
                Some(ServerMsg::Ack { lease_ms: 0 })
            }
            ClientMsg::Auth(cred) => match self.authenticate(cred) {
                Ok(()) => {
                    self.slot.authenticate();
                    Some(ServerMsg::Ack { lease_ms: 0 })
                }
                Err((code, reason)) => {
                    warn!(%remote, %reason, "read credential refused");
                    Self::refused(code, reason)
                }
            },
            ClientMsg::Query { lan } => {
                if let Some(r) = self.unauthorized(lan.as_deref()) {
                    return Ok(Some(r));
                }
                let s = state.lock();
                let reg = s.board.registry();
                let mut records = reg.records(lan.as_deref(), now);
                records.retain(|r| self.may_read(reg, &r.lan));
                Some(ServerMsg::Records(records))
            }
            // What a host says of its own LANs: kept only from a registered host, for
            // its own LANs; no answer either way.
            ClientMsg::Report(reports) => {
                self.keep_from_host("report", Said::Reports(reports), now);
                None
            }
            ClientMsg::Alerts(alerts) => {
                self.keep_from_host("alerts", Said::Alerts(alerts), now);
                None
            }
            ClientMsg::VmNames(names) => {
                self.keep_from_host("VM names", Said::VmNames(names), now);
                None
            }
            ClientMsg::Services(services) => {
                self.keep_from_host("services", Said::Services(services), now);
                None
            }
            ClientMsg::Paths(paths) => {
                self.keep_from_host("paths", Said::Paths(paths), now);
                None
            }
            ClientMsg::PathsQuery { lan } => {
                if let Some(r) = self.unauthorized(lan.as_deref()) {
                    return Ok(Some(r));
                }
                let v = self.read_reports(lan.as_deref(), |r, lan| r.paths(lan), |x| &x.paths.lan);
                Some(ServerMsg::Paths(v))
            }
            ClientMsg::ServicesQuery { lan } => {
                if let Some(r) = self.unauthorized(lan.as_deref()) {
                    return Ok(Some(r));
                }
                let v = self.read_reports(
                    lan.as_deref(),
                    |r, lan| r.services(lan),
                    |x| &x.services.lan,
                );
                Some(ServerMsg::Services(v))
            }
            ClientMsg::NamesQuery { lan } => {
                if let Some(r) = self.unauthorized(lan.as_deref()) {
                    return Ok(Some(r));
                }
                let n = self.read_reports(lan.as_deref(), |r, lan| r.names(lan), |x| &x.names.lan);
                Some(ServerMsg::VmNames(n))
            }
            ClientMsg::AlertsQuery { lan } => {
                if let Some(r) = self.unauthorized(lan.as_deref()) {
                    return Ok(Some(r));
                }
                let s = state.lock();
                let mut a = s.board.alerts().list(lan.as_deref(), now);
                a.retain(|x| self.may_read(s.board.registry(), &x.alerts.lan));
                Some(ServerMsg::Alerts(a))
            }
            ClientMsg::Status => {
                if let Some(r) = self.unauthorized(None) {
                    return Ok(Some(r));
                }
                Some(ServerMsg::Status(state.status()))
            }
            ClientMsg::StoreStatus => {
                if let Some(r) = self.unauthorized(None) {
                    return Ok(Some(r));
                }
                let status = state.status();
                Some(ServerMsg::StoreStatus {
                    store_up: status.store_up,
                    status,
                })
            }
            ClientMsg::Matrix { lan } => {
                if let Some(r) = self.unauthorized(lan.as_deref()) {
                    return Ok(Some(r));
                }
                let m = self.read_reports(
                    lan.as_deref(),
                    |r, lan| r.matrix(lan, now),
                    |x| &x.report.lan,
                );
                Some(ServerMsg::Matrix(m))
            }
        })
    }

    /// Check a read credential over this connection's nonce and widen `access`.
    fn authenticate(&mut self, cred: Credential) -> Result<(), (RefuseCode, String)> {
        match cred {
            Credential::Operator { proof } => match &self.state.operator {
                Some(v) if v.verify_operator(&self.nonce, &proof) => {
                    self.access.operator = true;
                    Ok(())
                }
                Some(_) => Err((
                    RefuseCode::BadProof,
                    "wrong operator token: use the file that bulletin.toml's operator_token_file names".into(),
                )),
                None => Err((
                    RefuseCode::Unauthorized,
                    "this bulletin has no operator token: set operator_token_file in bulletin.toml, or prove a LAN with --lan and --secret-file".into(),
                )),
            },
            Credential::Lans(proofs) => {
                if proofs.is_empty() {
                    return Err((RefuseCode::Protocol, "no LAN in the credential".into()));
                }
                let s = self.state.lock();
                for p in &proofs {
                    if !s.board.registry().verify_proof(&p.name, &self.nonce, 0, &p.proof) {
                        return Err((
                            RefuseCode::BadProof,
                            format!(
                                "no LAN {:?} here, or the wrong secret for it",
                                common::config::clip_value(&p.name, 40)
                            ),
                        ));
                    }
                }
                drop(s);
                self.access.lans.extend(proofs.into_iter().map(|p| p.name));
                Ok(())
            }
        }
    }

    /// What a registered host says of its own LANs, to the board (which keeps only
    /// what it says of LANs it is a member of); nothing from a connection that did not
    /// register.
    fn keep_from_host(&self, what: &str, said: Said, now: Instant) {
        let Some(h) = self.host else { return };
        let shared = self.state.replica.get().map(|r| (r, said.shared()));
        let mut s = self.state.lock();
        let kept = s.board.put(h, self.id, said, now);
        if let Some((r, said)) = shared
            && kept > 0
        {
            r.tell(Change::Said(h, said));
        }
        debug!(
            host = s.board.registry().name_of(h).unwrap_or(""),
            lans = kept,
            "{what}"
        );
    }

    /// What `get` takes of the reports of one LAN or all, pruned of hosts that left
    /// their LANs and of what this connection may not read (`lan_of` names each one's LAN).
    fn read_reports<T>(
        &self,
        lan: Option<&str>,
        get: impl FnOnce(&Reports, Option<&str>) -> Vec<T>,
        lan_of: impl Fn(&T) -> &String,
    ) -> Vec<T> {
        let s = self.state.lock();
        let mut v = get(s.board.reports(), lan);
        v.retain(|x| self.may_read(s.board.registry(), lan_of(x)));
        v
    }

    /// A refusal when this connection may read nothing (or not the LAN it names).
    fn unauthorized(&self, lan: Option<&str>) -> Option<ServerMsg> {
        let allowed = self.access.any() || self.host.is_some();
        let named_ok = lan.is_none_or(|l| {
            self.access.covers(l)
                || self.host.is_some_and(|h| {
                    self.state
                        .lock()
                        .board
                        .registry()
                        .is_member(h, Some(self.id), l)
                })
        });
        if allowed && named_ok {
            return None;
        }
        Self::refused(
            RefuseCode::Unauthorized,
            "reads need a credential: the operator token (--token-file) or the secret of the LAN (--lan NAME --secret-file FILE)",
        )
    }

    fn may_read(&self, reg: &Registry, lan: &str) -> bool {
        self.access.covers(lan)
            || self
                .host
                .is_some_and(|h| reg.is_member(h, Some(self.id), lan))
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
