//! The bulletin's QUIC server: one bidirectional stream per host connection.
//!
//! Per connection: `Hello` → `Challenge` (fresh nonce, the bulletin's epoch and lease
//! terms); then `Register` → `Registered` and that host's snapshots, then events as other
//! hosts join and leave; `Heartbeat` → `Ack`; `Unregister` → `Ack` and leave events to the
//! others at once; `Query` → `Records` (no registration needed, for `bulletin ls`).
//! A connection that does not say `Hello` within 10 s, sends an oversized or malformed
//! frame, or speaks out of turn is closed; registered hosts are not disturbed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::frames::{self, FrameError};
use crate::proof::Verifier;
use crate::proto::{ClientMsg, MAX_CLIENT_FRAME, RefuseCode, ServerMsg, VERSION};
use crate::registry::{ConnId, Outbound, Registry};
use crate::reports::Reports;
use crate::tls::{Identity, TlsError};

/// How long a new connection may take to open its stream and say `Hello` (default).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC close codes.
const CLOSE_PROTOCOL: u32 = 1;
const CLOSE_SHUTDOWN: u32 = 2;

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
    /// How long a connection may stay silent before its `Hello` (half-open connections).
    pub hello_timeout: Duration,
}

struct Shared {
    registry: Registry,
    reports: Reports,
    conns: HashMap<ConnId, mpsc::UnboundedSender<ServerMsg>>,
    next_conn: ConnId,
}

struct State {
    shared: Mutex<Shared>,
    epoch: u64,
    heartbeat: Duration,
    hello_timeout: Duration,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock would be a bug; the registry is still consistent
        // enough to keep serving, so recover the guard rather than abort.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dispatch(shared: &Shared, out: Vec<Outbound>) {
        for o in out {
            if let Some(tx) = shared.conns.get(&o.to) {
                let _ = tx.send(ServerMsg::Event(o.event));
            }
        }
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

impl Server {
    /// Bind and start serving (tasks run on the current tokio runtime).
    pub fn start(identity: &Identity, opts: ServerOptions) -> Result<Self, ServeError> {
        let mut cfg = identity.server_config()?;
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(0u8.into());
        transport.max_concurrent_bidi_streams(1u8.into());
        // Dead hosts' connections go away on their own; their leases are separate.
        transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            (opts.lease_ttl.as_millis().min(u128::from(u32::MAX))) as u32,
        ))));
        cfg.transport_config(Arc::new(transport));
        let endpoint = Endpoint::server(cfg, opts.listen).map_err(|cause| ServeError::Bind {
            addr: opts.listen,
            cause,
        })?;
        let mut e = [0u8; 8];
        SystemRandom::new()
            .fill(&mut e)
            .map_err(|_| ServeError::Random)?;
        let state = Arc::new(State {
            shared: Mutex::new(Shared {
                registry: Registry::new(opts.lans, opts.lease_ttl),
                reports: Reports::default(),
                conns: HashMap::new(),
                next_conn: 1,
            }),
            epoch: u64::from_be_bytes(e),
            heartbeat: opts.heartbeat,
            hello_timeout: opts.hello_timeout,
        });
        tokio::spawn(expire_loop(state.clone()));
        tokio::spawn(accept_loop(endpoint.clone(), state.clone()));
        Ok(Server { endpoint, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// Registered hosts now.
    pub fn host_count(&self) -> usize {
        self.state.lock().registry.host_count()
    }

    /// Close every connection and stop.
    pub async fn shutdown(self) {
        self.endpoint
            .close(CLOSE_SHUTDOWN.into(), b"bulletin shutting down");
        self.endpoint.wait_idle().await;
    }
}

async fn expire_loop(state: Arc<State>) {
    loop {
        let next = state.lock().registry.next_expiry();
        let now = Instant::now();
        let wait = next
            .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
            .min(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
        let now = Instant::now();
        let mut s = state.lock();
        let out = s.registry.expire(now);
        if !out.is_empty() {
            let s = &mut *s;
            let reg = &s.registry;
            s.reports.retain(|l, h| reg.is_member(h, None, l));
        }
        if !out.is_empty() {
            info!(
                events = out.len(),
                hosts = s.registry.host_count(),
                "leases expired"
            );
        }
        State::dispatch(&s, out);
    }
}

async fn accept_loop(endpoint: Endpoint, state: Arc<State>) {
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match tokio::time::timeout(state.hello_timeout, incoming).await {
                Ok(Ok(conn)) => serve_conn(conn, state).await,
                Ok(Err(e)) => debug!(%remote, error = %e, "handshake failed"),
                Err(_) => debug!(%remote, "handshake timed out"),
            }
        });
    }
}

async fn serve_conn(conn: Connection, state: Arc<State>) {
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
    let writer = tokio::spawn(write_loop(send, rx));
    let id = {
        let mut s = state.lock();
        let id = s.next_conn;
        s.next_conn += 1;
        s.conns.insert(id, tx.clone());
        id
    };
    if version != VERSION {
        let _ = tx.send(ServerMsg::Refused {
            code: RefuseCode::Version,
            reason: format!("this bulletin speaks protocol {VERSION}, the host speaks {version}: upgrade one of them"),
        });
    } else {
        let mut nonce = [0u8; 32];
        if SystemRandom::new().fill(&mut nonce).is_ok() {
            let _ = tx.send(ServerMsg::Challenge {
                version: VERSION,
                nonce,
                epoch: state.epoch,
                lease_ttl_ms: state.lock().registry.ttl().as_millis() as u64,
                heartbeat_ms: state.heartbeat.as_millis() as u64,
            });
            if let Err(reason) = read_loop(&conn, recv, &state, id, &tx, nonce).await {
                debug!(%remote, %reason, "closing connection");
                conn.close(CLOSE_PROTOCOL.into(), reason.as_bytes());
            }
        }
    }
    state.lock().conns.remove(&id);
    drop(tx);
    let _ = writer.await;
}

async fn write_loop(mut send: SendStream, mut rx: mpsc::UnboundedReceiver<ServerMsg>) {
    while let Some(m) = rx.recv().await {
        if frames::write(&mut send, &m).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// Serve one connection's requests until it closes; `Err` is a protocol violation.
async fn read_loop(
    conn: &Connection,
    mut recv: RecvStream,
    state: &State,
    id: ConnId,
    tx: &mpsc::UnboundedSender<ServerMsg>,
    nonce: [u8; 32],
) -> Result<(), String> {
    let mut host: Option<u32> = None;
    loop {
        let msg = match frames::read::<ClientMsg>(&mut recv, MAX_CLIENT_FRAME).await {
            Ok(m) => m,
            Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Stream(_)) => return Ok(()),
            Err(FrameError::Codec(e)) => {
                warn!(remote = %conn.remote_address(), error = %e, "refusing bad message");
                return Err(e.to_string());
            }
        };
        let now = Instant::now();
        let reply = match msg {
            ClientMsg::Hello { .. } => return Err("hello twice".into()),
            ClientMsg::Register(req) => {
                let mut s = state.lock();
                match s
                    .registry
                    .register(id, &nonce, &req, conn.remote_address(), now)
                {
                    Ok(out) => {
                        host = Some(req.host_id);
                        info!(host = %req.name, id = format_args!("{:#010x}", req.host_id), addr = %req.underlay,
                              lans = req.lans.len(), hosts = s.registry.host_count(), "registered");
                        let _ = tx.send(ServerMsg::Registered {
                            lease_ms: s.registry.ttl().as_millis() as u64,
                        });
                        for ev in s.registry.snapshots(req.host_id, now) {
                            let _ = tx.send(ServerMsg::Event(ev));
                        }
                        State::dispatch(&s, out);
                        continue;
                    }
                    Err(r) => {
                        warn!(host = %req.name, remote = %conn.remote_address(), reason = %r.reason, "registration refused");
                        ServerMsg::Refused {
                            code: r.code,
                            reason: r.reason,
                        }
                    }
                }
            }
            ClientMsg::Heartbeat => match host {
                Some(h) => match state.lock().registry.heartbeat(h, id, now) {
                    Ok(left) => ServerMsg::Ack {
                        lease_ms: left.as_millis() as u64,
                    },
                    Err(r) => ServerMsg::Refused {
                        code: r.code,
                        reason: r.reason,
                    },
                },
                None => ServerMsg::Refused {
                    code: RefuseCode::NotRegistered,
                    reason: "heartbeat before register".into(),
                },
            },
            ClientMsg::Unregister => {
                if let Some(h) = host.take() {
                    let mut s = state.lock();
                    let out = s.registry.unregister(h, id);
                    info!(
                        id = format_args!("{h:#010x}"),
                        hosts = s.registry.host_count(),
                        "unregistered"
                    );
                    State::dispatch(&s, out);
                }
                ServerMsg::Ack { lease_ms: 0 }
            }
            ClientMsg::Query { lan } => {
                ServerMsg::Records(state.lock().registry.records(lan.as_deref(), now))
            }
            ClientMsg::Report(reports) => {
                // Only from a registered host, for its own LANs; no answer either way.
                if let Some(h) = host {
                    let mut s = state.lock();
                    let s = &mut *s;
                    let name = s.registry.name_of(h).unwrap_or("").to_string();
                    let reg = &s.registry;
                    let kept = s.reports.put(
                        h,
                        &name,
                        reports,
                        |lan| reg.is_member(h, Some(id), lan),
                        now,
                    );
                    debug!(host = %name, lans = kept, "report");
                }
                continue;
            }
            ClientMsg::Matrix { lan } => {
                let mut s = state.lock();
                let s = &mut *s;
                let reg = &s.registry;
                s.reports.retain(|l, h| reg.is_member(h, None, l));
                ServerMsg::Matrix(s.reports.matrix(lan.as_deref(), now))
            }
        };
        if tx.send(reply).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
