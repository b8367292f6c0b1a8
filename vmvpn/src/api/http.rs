//! The daemon's HTTP server (`[host] metrics`): axum's router on hyper's HTTP/1
//! connections, one response per connection, with bounds a scraper never reaches but a
//! slow or hostile client would: headers within [`HEADER_TIMEOUT`], a whole exchange
//! within [`CONNECTION_TIMEOUT`], [`MAX_CONNECTIONS`] at once.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Time for a client to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for one whole request and response.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// Serve `router` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            // One exchange per connection: the answer ends with the connection, as
            // Prometheus and one-shot clients (curl, the tests) expect.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection ended with an error"),
                Err(_) => debug!(%peer, "HTTP connection timed out"),
            }
        });
    }
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
