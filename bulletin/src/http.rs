//! The HTTP server of both binaries (the host's `/metrics` and dashboard, the bulletin's
//! dashboard): axum's router on hyper's HTTP/1 connections, plain or over TLS, one
//! response per connection, with bounds a scraper or a browser never reaches but a slow
//! or hostile client would: the TLS handshake and the request head within
//! [`HEADER_TIMEOUT`], a whole exchange within [`Options::exchange_timeout`],
//! [`MAX_CONNECTIONS`] at once.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Time for a client to finish the TLS handshake, then again to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for one whole request and response, unless the caller says otherwise.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// How a listener serves.
#[derive(Clone)]
pub struct Options {
    /// Serve HTTPS with this configuration (ALPN `http/1.1`); none: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time for one whole exchange: longer where a response streams (the dashboard's
    /// events), whose stream must end before it.
    pub exchange_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: None,
            exchange_timeout: CONNECTION_TIMEOUT,
        }
    }
}

/// Serve `router` on `listener` as plain HTTP until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router) {
    serve_with(listener, router, Options::default()).await
}

/// Serve `router` on `listener` until the task is dropped.
pub async fn serve_with(listener: TcpListener, router: Router, opts: Options) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let router = router.clone();
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
            match tokio::time::timeout(limit, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection ended with an error"),
                Err(_) => debug!(%peer, "HTTP connection timed out"),
            }
        });
    }
}

/// One exchange per connection: the answer ends with the connection, as Prometheus and
/// one-shot clients (curl, the tests) expect; a browser opens another for its next request.
async fn exchange<S>(stream: S, router: Router) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
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
}
