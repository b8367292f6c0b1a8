//! The HTTP server of both binaries (the host's `/metrics` and dashboard, the bulletin's
//! dashboard): axum's router on hyper's HTTP/1 connections, plain or over TLS, one
//! response per connection, with bounds a scraper or a browser never reaches but a slow
//! or hostile client would: the TLS handshake and the request head within
//! [`HEADER_TIMEOUT`], a whole exchange within [`Options::exchange_timeout`],
//! [`MAX_CONNECTIONS`] at once and [`Options::per_ip`] from one source address.
//!
//! Slots are not first come, first served: when all are taken, the oldest connection that
//! has not yet finished its TLS handshake or sent its request head is closed for the
//! newcomer, so idle connections held open (slowloris) cannot keep an operator out; a
//! source that already holds `per_ip` connections is refused at once.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt as _;
use tracing::{debug, warn};

/// Time for a client to finish the TLS handshake, then again to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for one whole request and response, unless the caller says otherwise.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections from one source address at once (default of [`Options::per_ip`]): a
/// browser opens at most six to one server, a scraper one.
pub const MAX_CONNECTIONS_PER_IP: usize = 8;

/// How a listener serves.
#[derive(Clone)]
pub struct Options {
    /// Serve HTTPS with this configuration (ALPN `http/1.1`); none: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time for one whole exchange: longer where a response streams (the dashboard's
    /// events), whose stream must end before it.
    pub exchange_timeout: Duration,
    /// Connections from one source address at once; more are closed at once.
    pub per_ip: usize,
    /// Where the listener counts what it refused and evicted.
    pub stats: Arc<ListenerStats>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: None,
            exchange_timeout: CONNECTION_TIMEOUT,
            per_ip: MAX_CONNECTIONS_PER_IP,
            stats: Arc::default(),
        }
    }
}

/// A listener's counts since start (`bulletin status`, the bulletin's `/metrics`).
#[derive(Debug, Default)]
pub struct ListenerStats {
    accepted: AtomicU64,
    refused_per_ip: AtomicU64,
    evicted: AtomicU64,
    open: AtomicU64,
}

/// [`ListenerStats`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerCounts {
    /// Connections taken into a slot.
    pub accepted: u64,
    /// Connections closed at once: their address held `per_ip` already.
    pub refused_per_ip: u64,
    /// Connections closed before their request head to make room for a newcomer.
    pub evicted: u64,
    /// Connections open now.
    pub open: u64,
}

impl ListenerStats {
    /// The counts now.
    pub fn counts(&self) -> ListenerCounts {
        ListenerCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused_per_ip: self.refused_per_ip.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
        }
    }
}

/// A listener's connections: how many each key (source address) holds, and which are
/// still waiting for their request (and may be evicted for a newcomer when all slots are
/// taken). The web listeners here and `vmvpn`'s control socket (key `()`) use it.
#[derive(Debug)]
pub struct Slots<K> {
    max: usize,
    per_key: usize,
    next: u64,
    /// By arrival: (key, still waiting for its request, eviction signal).
    conns: BTreeMap<u64, (K, bool, Arc<Notify>)>,
    per: HashMap<K, usize>,
}

/// What [`Slots::admit`] decided.
#[derive(Debug)]
pub enum Admit {
    /// Serve it under this id; the `Notify` fires if it is evicted later. `evicted`: an
    /// older connection was pushed out for it.
    Yes {
        /// Its id.
        id: u64,
        /// Notified once if this connection is evicted.
        evict: Arc<Notify>,
        /// An older connection was evicted to make room.
        evicted: bool,
    },
    /// Its key holds `per_key` connections already.
    PerKey,
    /// Every slot is taken by a connection past its request: none may be evicted.
    Full,
}

impl<K: Copy + Eq + std::hash::Hash> Slots<K> {
    /// At most `max` connections, `per_key` of them with one key.
    pub fn new(max: usize, per_key: usize) -> Self {
        Slots {
            max: max.max(1),
            per_key: per_key.max(1),
            next: 0,
            conns: BTreeMap::new(),
            per: HashMap::new(),
        }
    }

    /// Take a slot for a new connection, evicting the oldest one still waiting for its
    /// request when all are taken.
    pub fn admit(&mut self, key: K) -> Admit {
        if self.per.get(&key).copied().unwrap_or(0) >= self.per_key {
            return Admit::PerKey;
        }
        let mut evicted = false;
        if self.conns.len() >= self.max {
            let Some(&oldest) = self.conns.iter().find(|(_, c)| c.1).map(|(id, _)| id) else {
                return Admit::Full;
            };
            if let Some((old, _, n)) = self.conns.remove(&oldest) {
                self.forget(old);
                n.notify_one();
                evicted = true;
            }
        }
        let id = self.next;
        self.next += 1;
        let evict = Arc::new(Notify::new());
        self.conns.insert(id, (key, true, evict.clone()));
        *self.per.entry(key).or_default() += 1;
        Admit::Yes { id, evict, evicted }
    }

    /// The connection's request arrived: it is no longer evicted for newcomers.
    pub fn started(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.1 = false;
        }
    }

    /// The connection is gone.
    pub fn release(&mut self, id: u64) {
        if let Some((k, _, _)) = self.conns.remove(&id) {
            self.forget(k);
        }
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// None held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    fn forget(&mut self, k: K) {
        if let Some(n) = self.per.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                self.per.remove(&k);
            }
        }
    }
}

type Table = Slots<IpAddr>;

/// Locks the table; a panic elsewhere never leaves it half-updated (every change is a
/// few plain assignments), so a poisoned lock is taken as it is.
fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's slot, given back when its task ends (or is evicted).
struct Slot {
    table: Arc<Mutex<Table>>,
    id: u64,
    freed: Arc<Notify>,
    stats: Arc<ListenerStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).release(self.id);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_one();
    }
}

/// Serve `router` on `listener` as plain HTTP until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router) {
    serve_with(listener, router, Options::default()).await
}

/// Serve `router` on `listener` until the task is dropped.
pub async fn serve_with(listener: TcpListener, router: Router, opts: Options) {
    let table = Arc::new(Mutex::new(Table::new(MAX_CONNECTIONS, opts.per_ip)));
    let freed = Arc::new(Notify::new());
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, evicted) = loop {
            let verdict = lock(&table).admit(peer.ip());
            match verdict {
                Admit::Yes { id, evict, evicted } => {
                    opts.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    if evicted {
                        opts.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    break (Some(id), evict);
                }
                Admit::PerKey => {
                    opts.stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, "HTTP connection refused: its address holds its share already");
                    break (None, Arc::new(Notify::new()));
                }
                // Rare: every slot is past its request head (short answers, at most
                // half of them event streams); one comes free soon.
                Admit::Full => freed.notified().await,
            }
        };
        let Some(id) = id else {
            drop(stream);
            continue;
        };
        opts.stats.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            table: table.clone(),
            id,
            freed: freed.clone(),
            stats: opts.stats.clone(),
        };
        let t = table.clone();
        let router =
            router
                .clone()
                .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                    lock(&t).started(id);
                    req
                });
        let acceptor = acceptor.clone();
        let limit = opts.exchange_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let exchange = async {
                match acceptor {
                    None => exchange(stream, router).await,
                    Some(a) => match tokio::time::timeout(HEADER_TIMEOUT, a.accept(stream)).await {
                        Ok(Ok(tls)) => exchange(tls, router).await,
                        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                        Err(_) => Err("TLS handshake timed out".to_string()),
                    },
                }
            };
            tokio::select! {
                _ = evicted.notified() => debug!(%peer, "HTTP connection evicted before its request head"),
                r = tokio::time::timeout(limit, exchange) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection ended with an error"),
                    Err(_) => debug!(%peer, "HTTP connection timed out"),
                },
            }
        });
    }
}

/// Where a listener serves and what it counts, for status views.
pub type Listener = (SocketAddr, Arc<ListenerStats>);

/// One exchange per connection: the answer ends with the connection, as Prometheus and
/// one-shot clients (curl, the tests) expect; a browser opens another for its next request.
async fn exchange<S, R>(stream: S, router: R) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: tower::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    R::Future: Send + 'static,
{
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::io::{Read, Write};

    /// One request on a fresh connection, as a scraper sends it; the whole answer.
    fn ask(addr: std::net::SocketAddr, head: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(head.as_bytes()).expect("write");
        let mut out = String::new();
        // The server closes after one answer, so this returns without a timeout.
        s.read_to_string(&mut out).expect("read to the end");
        out
    }

    #[tokio::test]
    async fn answers_once_per_connection_and_refuses_oversized_heads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/x", get(|| async { "hello\n" }));
        let server = tokio::spawn(serve(listener, router));
        let ok = tokio::task::spawn_blocking(move || {
            (
                ask(addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
                ask(addr, "GET /y HTTP/1.1\r\nHost: a\r\n\r\n"),
                ask(
                    addr,
                    &format!(
                        "GET /x HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
                        "a".repeat(64 << 10)
                    ),
                ),
            )
        })
        .await
        .expect("client");
        server.abort();
        assert!(
            ok.0.starts_with("HTTP/1.1 200") && ok.0.ends_with("hello\n"),
            "{}",
            ok.0
        );
        assert!(ok.1.starts_with("HTTP/1.1 404"), "{}", ok.1);
        assert!(ok.2.starts_with("HTTP/1.1 431"), "{}", ok.2);
    }

    /// A connection from `from` (a loopback address) to `to`, holding its slot.
    async fn hold(from: std::net::Ipv4Addr, to: SocketAddr) -> tokio::net::TcpStream {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind((from, 0).into()).expect("bind");
        s.connect(to).await.expect("connect")
    }

    /// One request from `from`: its status line, and how long the answer took.
    async fn timed_get(from: std::net::Ipv4Addr, to: SocketAddr) -> (String, Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let t = std::time::Instant::now();
        let mut c = hold(from, to).await;
        c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        (text.lines().next().unwrap_or("").to_string(), t.elapsed())
    }

    async fn listener() -> (SocketAddr, Arc<ListenerStats>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/x", get(|| async { "hello\n" }));
        let opts = Options::default();
        let stats = opts.stats.clone();
        (
            addr,
            stats,
            tokio::spawn(serve_with(listener, router, opts)),
        )
    }

    #[tokio::test]
    async fn one_address_holding_idle_connections_leaves_the_others_served() {
        let (addr, stats, server) = listener().await;
        let attacker = std::net::Ipv4Addr::new(127, 0, 0, 1);
        let mut idle = Vec::new();
        for _ in 0..300 {
            idle.push(hold(attacker, addr).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..5 {
            let (line, took) = timed_get(std::net::Ipv4Addr::new(127, 0, 0, 2), addr).await;
            assert!(line.starts_with("HTTP/1.1 200"), "{line:?}");
            assert!(took < Duration::from_secs(2), "{took:?}");
        }
        let c = stats.counts();
        assert_eq!(
            c.refused_per_ip,
            300 - MAX_CONNECTIONS_PER_IP as u64,
            "{c:?}"
        );
        assert_eq!(c.evicted, 0, "{c:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_full_listener_evicts_the_oldest_connection_without_a_request_head() {
        let (addr, stats, server) = listener().await;
        // Every slot taken by idle connections from many addresses, each under its cap.
        let mut idle = Vec::new();
        for i in 0..MAX_CONNECTIONS {
            idle.push(hold(std::net::Ipv4Addr::new(127, 0, 1, i as u8 + 1), addr).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stats.counts().open, MAX_CONNECTIONS as u64);
        let (line, took) = timed_get(std::net::Ipv4Addr::new(127, 0, 0, 2), addr).await;
        assert!(line.starts_with("HTTP/1.1 200"), "{line:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(stats.counts().evicted, 1);
        // The oldest idle connection was the one closed.
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        let first = tokio::time::timeout(Duration::from_secs(2), idle[0].read(&mut b)).await;
        assert!(matches!(first, Ok(Ok(0)) | Ok(Err(_))), "{first:?}");
        let second = tokio::time::timeout(Duration::from_millis(200), idle[1].read(&mut b)).await;
        assert!(second.is_err(), "the second oldest still waits: {second:?}");
        server.abort();
    }
}
