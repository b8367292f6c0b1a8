//! The control socket: one JSON request per line in, one JSON answer per line out.
//!
//! Requests: `{"request":"status"}`, `{"request":"macs","lan":"lan1"}` (`lan` optional),
//! `{"request":"traffic","lan":"lan1","top":10}` (per-VM traffic, matrix, flows; both
//! optional), `{"request":"ping","target":"h2"}` (one probe; waits up to 2 s),
//! `{"request":"alerts"}` (firing, pending and recently resolved alerts),
//! `{"request":"reload","dry_run":false}` (read the config again; see `api::reload`).
//! Answers: `{"ok": …}` or `{"error": "…"}`.
//!
//! Bounded, so that no local client can starve the daemon or the other clients: at most
//! [`MAX_CLIENTS`] connections are served at once; when all are taken, the oldest one that
//! has not sent its request line is closed for the newcomer (so idle connections never
//! make `vmvpn status` wait), and only when every one of them is being answered does a
//! newcomer get `busy` at once (silent connections never pile up to the file limit). A
//! request line must arrive within [`READ_TIMEOUT`], at most [`MAX_WORKERS`] requests ask
//! the data plane at a time, and an answer larger than [`MAX_ANSWER`] becomes an error
//! that says how to narrow it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use bulletin::http::{Admit, Slots};

use crate::api::alerting::SharedAlerts;
use crate::io::dataplane::{Handle, Request};
use crate::membership::SharedView;
use crate::status::PingAnswer;

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Host, LANs, peers, counters.
    Status,
    /// The MAC database.
    Macs {
        /// Only this LAN.
        #[serde(default)]
        lan: Option<String>,
    },
    /// Per-VM traffic, the VM matrix and flows.
    Traffic {
        /// Only this LAN.
        #[serde(default)]
        lan: Option<String>,
        /// At most this many flows per LAN, busiest first.
        #[serde(default)]
        top: Option<usize>,
    },
    /// One probe to a peer (name, id, address) or to the peer behind a VM IP.
    Ping {
        /// The target.
        target: String,
    },
    /// Alerts: firing, pending, and recently resolved.
    Alerts,
    /// Read the config file again and apply what changed; with `dry_run`, only say what.
    Reload {
        /// Only compare.
        #[serde(default)]
        dry_run: bool,
    },
}

/// How long `ping` waits for its answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once.
pub const MAX_CLIENTS: usize = 64;
/// Requests that ask the data plane at once (each builds a snapshot of its tables).
pub const MAX_WORKERS: usize = 2;
/// Time for a client to send its request line, and to take its answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request line.
pub const MAX_REQUEST: u64 = 64 * 1024;
/// Largest answer.
pub const MAX_ANSWER: usize = 32 << 20;
/// The start of the error a client gets when the daemon serves [`MAX_CLIENTS`] already.
pub const BUSY: &str = "busy:";

/// Why the control socket could not be served or reached.
#[derive(Debug, Error)]
pub enum ControlError {
    /// Another daemon answers on the path.
    #[error("another vmvpn is already serving {0}; stop it first or set [host] control_socket")]
    InUse(PathBuf),
    /// Could not create or bind.
    #[error("cannot serve control socket {path}: {cause}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// OS error.
        cause: std::io::Error,
    },
    /// Could not connect.
    #[error(
        "cannot reach vmvpn at {path}: {cause} (is `vmvpn up` running? pick the socket with --socket)"
    )]
    Connect {
        /// The path.
        path: PathBuf,
        /// OS error.
        cause: std::io::Error,
    },
    /// The daemon answered with an error or garbage.
    #[error("vmvpn at {path}: {message}")]
    Answer {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Bind the control socket, replacing a stale one left by a crashed daemon.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |cause| ControlError::Bind {
        path: path.to_path_buf(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        debug!(path = %path.display(), "removing stale control socket");
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(l)
}

/// Serve requests until the task is dropped.
/// What the answers show besides the data plane's snapshot.
#[derive(Clone)]
pub struct Views {
    /// The bulletin connection, when there is one.
    pub bulletin: Option<SharedView>,
    /// The alarms.
    pub alerts: SharedAlerts,
    /// The exporters' counts.
    pub export: crate::export::SharedExport,
    /// VM names from libvirt, when `[libvirt]` is set.
    pub libvirt: Option<crate::libvirt::inventory::SharedInventory>,
    /// Live reconfiguration (none in tests that serve a bare data plane).
    pub reload: Option<crate::api::reload::SharedReloader>,
    /// The relay this host runs (`[host] relay`).
    pub relay: Option<crate::relay::counters::RelayView>,
}

/// Serve the control socket until the task is dropped.
pub async fn serve(listener: UnixListener, dp: Handle, views: Views) {
    // One key for every client (a Unix socket has no source address): no share per key.
    let slots = Arc::new(Mutex::new(Slots::<()>::new(MAX_CLIENTS, usize::MAX)));
    let workers = Arc::new(Semaphore::new(MAX_WORKERS));
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let verdict = lock(&slots).admit(());
        let (id, evict) = match verdict {
            Admit::Yes { id, evict, evicted } => {
                if evicted {
                    debug!("control socket full: the oldest client without a request was closed");
                }
                (id, evict)
            }
            Admit::PerKey | Admit::Full => {
                // Answer at once and close: a flood of connections costs no descriptors.
                let busy = format!(
                    "{{\"error\":\"{BUSY} {MAX_CLIENTS} clients are being served; try again\"}}\n"
                );
                let _ = tokio::time::timeout(
                    Duration::from_millis(50),
                    stream.write_all(busy.as_bytes()),
                )
                .await;
                continue;
            }
        };
        let slot = Slot {
            slots: slots.clone(),
            id,
        };
        let dp = dp.clone();
        let views = views.clone();
        let workers = workers.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = TokioBufReader::new(r.take(MAX_REQUEST));
            let read = tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line));
            tokio::select! {
                _ = evict.notified() => return,
                r = read => match r {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        debug!("control client sent no request in time: closing");
                        return;
                    }
                },
            }
            lock(&slot.slots).started(slot.id);
            let out = answer_line(&line, &dp, &views, &workers).await;
            let _ = tokio::time::timeout(READ_TIMEOUT, w.write_all(out.as_bytes())).await;
        });
    }
}

/// A client's slot, given back when its task ends.
struct Slot {
    slots: Arc<Mutex<Slots<()>>>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.slots).release(self.id);
    }
}

/// The table's lock; its updates are a few plain assignments, so a poisoned one is whole.
fn lock(s: &Mutex<Slots<()>>) -> std::sync::MutexGuard<'_, Slots<()>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The answer to one request line, as one line of JSON within [`MAX_ANSWER`].
pub async fn answer_line(line: &str, dp: &Handle, views: &Views, workers: &Semaphore) -> String {
    let req = match parse_request(line) {
        Ok(r) => r,
        Err(e) => return format!("{}\n", json!({ "error": e })),
    };
    // One snapshot of the tables at a time per worker; the others wait their turn.
    let Ok(_worker) = workers.acquire().await else {
        return format!("{}\n", json!({ "error": "control socket closing" }));
    };
    let mut out = answer(req, dp, views).await.to_string();
    if out.len() > MAX_ANSWER {
        out = json!({ "error": format!(
            "the answer has {} MiB, more than the control socket's limit of {} MiB: narrow it with --lan or --top",
            out.len() >> 20, MAX_ANSWER >> 20) })
        .to_string();
    }
    out.push('\n');
    out
}

/// Parse one request line; the error is what the client is told.
pub fn parse_request(line: &str) -> Result<ControlRequest, String> {
    serde_json::from_str(line.trim()).map_err(|e| {
        format!(
            "bad request: {}",
            common::config::clip_lines(&e.to_string(), 160)
        )
    })
}

/// One answer on the control socket: `{"ok": …}` or `{"error": "…"}`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    /// The request's answer.
    Ok(T),
    /// What went wrong, for people.
    Error(String),
}

/// An answer as JSON (through `Value`, whose keys are sorted: the form the socket has
/// always had).
fn reply<T: Serialize>(r: Reply<T>) -> Value {
    serde_json::to_value(r)
        .unwrap_or_else(|e| json!({ "error": format!("cannot encode the answer: {e}") }))
}

fn ok<T: Serialize>(x: T) -> Value {
    reply(Reply::Ok(x))
}

fn error(e: impl Into<String>) -> Value {
    reply::<()>(Reply::Error(e.into()))
}

async fn answer(req: ControlRequest, dp: &Handle, views: &Views) -> Value {
    let (bulletin, alerts) = (views.bulletin.as_ref(), &views.alerts);
    let gone = || error("data plane is shutting down");
    match req {
        ControlRequest::Reload { dry_run } => match &views.reload {
            Some(r) => {
                let report = r.lock().await.reload(dry_run).await;
                if !dry_run {
                    crate::api::reload::log(&report);
                }
                ok(report)
            }
            None => error("this daemon cannot reload"),
        },
        ControlRequest::Alerts => match alerts.lock() {
            Ok(a) => ok(a.clone()),
            Err(_) => error("the alarm task failed; see the daemon's log"),
        },
        ControlRequest::Status => match dp.call(Request::Status).await {
            Some(mut s) => {
                s.bulletin = bulletin.and_then(|v| v.lock().ok().map(|v| v.status()));
                if let Ok(e) = views.export.lock() {
                    s.export = e.clone();
                }
                s.libvirt = views
                    .libvirt
                    .as_ref()
                    .and_then(|i| i.lock().ok().map(|i| i.status(std::time::Instant::now())));
                s.relay = views.relay.as_ref().map(|r| r.status());
                ok(s)
            }
            None => gone(),
        },
        ControlRequest::Macs { lan } => match dp.call(|tx| Request::Macs(lan, tx)).await {
            Some(Ok(rows)) => ok(rows),
            Some(Err(e)) => error(e),
            None => gone(),
        },
        ControlRequest::Traffic { lan, top } => {
            match dp.call(|reply| Request::Traffic { lan, top, reply }).await {
                Some(Ok(mut rows)) => {
                    if let Some(inv) = views.libvirt.as_ref().and_then(|i| i.lock().ok()) {
                        for l in &mut rows {
                            inv.label(&mut l.vms);
                        }
                    }
                    ok(rows)
                }
                Some(Err(e)) => error(e),
                None => gone(),
            }
        }
        ControlRequest::Ping { target } => {
            let (sent, pong) = match dp.call(|reply| Request::Ping { target, reply }).await {
                Some(Ok(x)) => x,
                Some(Err(e)) => return error(e),
                None => return gone(),
            };
            let rtt_us = match tokio::time::timeout(PING_TIMEOUT, pong).await {
                Ok(Ok(ns)) => Some(ns as f64 / 1000.0),
                _ => None,
            };
            ok(PingAnswer {
                lan: sent.lan,
                peer: sent.peer,
                address: sent.address.to_string(),
                via_vm: sent.via_vm,
                id: sent.id,
                rtt_us,
            })
        }
    }
}

/// Ask a daemon (blocking; for the CLI). A daemon that is busy with other clients is
/// asked again for up to 10 s before its answer is returned as the error.
pub fn request<T: DeserializeOwned>(path: &Path, req: &ControlRequest) -> Result<T, ControlError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut wait = Duration::from_millis(20);
    loop {
        match request_once(path, req) {
            Err(ControlError::Answer { message, .. })
                if message.starts_with(BUSY) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

fn request_once<T: DeserializeOwned>(path: &Path, req: &ControlRequest) -> Result<T, ControlError> {
    let conn = |cause| ControlError::Connect {
        path: path.to_path_buf(),
        cause,
    };
    let mut s = StdUnixStream::connect(path).map_err(conn)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(conn)?;
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::Answer {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    line.push('\n');
    // A daemon serving too many clients answers `busy` and closes before it reads: the
    // write may then fail while its answer is already waiting to be read.
    let written = s.write_all(line.as_bytes());
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|cause| match cause.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ControlError::Answer {
                path: path.to_path_buf(),
                message: "no answer within 5 s: the daemon is up but busy or stuck".into(),
            },
            _ => conn(cause),
        })?;
    if answer.is_empty() {
        written.map_err(conn)?;
    }
    let bad = |message: String| ControlError::Answer {
        path: path.to_path_buf(),
        message,
    };
    // An error first, whatever shape an answer would have had.
    if let Ok(Reply::Error(e)) = serde_json::from_str::<Reply<IgnoredAny>>(&answer) {
        return Err(bad(e));
    }
    match serde_json::from_str::<Reply<T>>(&answer) {
        Ok(Reply::Ok(x)) => Ok(x),
        Ok(Reply::Error(e)) => Err(bad(e)),
        Err(e) => Err(bad(format!(
            "unreadable answer ({e}); is the daemon the same version as this command?"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_json_form() {
        assert_eq!(
            serde_json::to_string(&ControlRequest::Status).expect("ser"),
            r#"{"request":"status"}"#
        );
        let m: ControlRequest =
            serde_json::from_str(r#"{"request":"macs","lan":"lan1"}"#).expect("de");
        assert_eq!(
            m,
            ControlRequest::Macs {
                lan: Some("lan1".into())
            }
        );
        let m: ControlRequest = serde_json::from_str(r#"{"request":"macs"}"#).expect("de");
        assert_eq!(m, ControlRequest::Macs { lan: None });
        let m: ControlRequest =
            serde_json::from_str(r#"{"request":"traffic","top":3}"#).expect("de");
        assert_eq!(
            m,
            ControlRequest::Traffic {
                lan: None,
                top: Some(3)
            }
        );
        let m: ControlRequest =
            serde_json::from_str(r#"{"request":"ping","target":"10.0.0.2"}"#).expect("de");
        assert_eq!(
            m,
            ControlRequest::Ping {
                target: "10.0.0.2".into()
            }
        );
        assert!(serde_json::from_str::<ControlRequest>(r#"{"request":"reboot"}"#).is_err());
    }

    #[test]
    fn bad_requests_get_short_clear_errors() {
        assert_eq!(
            parse_request("{\"request\":\"status\"}\n"),
            Ok(ControlRequest::Status)
        );
        for bad in ["", "garbage", "{\"request\":\"macs\",\"lan\":7}", "[1,2,3]"] {
            let e = parse_request(bad).expect_err(bad);
            assert!(e.starts_with("bad request:"), "{e}");
        }
        let huge = format!("{{\"request\":\"{}\"}}", "x".repeat(60_000));
        let e = parse_request(&huge).expect_err("unknown");
        assert!(e.len() < 1000, "{} bytes", e.len());
        // Found by the control_request fuzz target: JSON escapes make lines of their own.
        let lines = format!("{{\"request\":\"{}\"}}", r"\n\u00ff\u00ff".repeat(2000));
        let e = parse_request(&lines).expect_err("unknown");
        assert!(e.chars().count() <= 800, "{} characters", e.chars().count());
        // And the second shape it found: few lines, each of many 3-byte characters.
        let wide = format!(
            "{{\"request\":\"{}\"}}",
            (r"\n".to_string() + &"\u{fffd}".repeat(300)).repeat(7)
        );
        let e = parse_request(&wide).expect_err("unknown");
        assert!(e.chars().count() <= 800, "{} characters", e.chars().count());
    }
}
