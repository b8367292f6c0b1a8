//! Notifications: the alarm task hands its notices over a bounded channel; this task groups
//! them (`alarms::notify`, sans-IO) and sends each group to every configured receiver:
//! Alertmanager's API, webhooks (Alertmanager's webhook JSON v4), the exec hook (the same
//! JSON on stdin). Each send has a timeout and is retried with backoff; sends run beside
//! each other, at most [`MAX_SENDS`] at once, and never hold up the evaluation.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

use crate::alarms::eval::Notice;
use crate::alarms::notify::{AmAlert, Batch, Outbox};
use crate::config::{Email, Receivers};

/// Notices waiting for this task at most; beyond, the newest are dropped (and logged).
pub const QUEUE: usize = 1024;
/// Sends in flight at most.
pub const MAX_SENDS: usize = 8;
/// One attempt's time limit.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per message (backoff 1 s, 2 s, 4 s between them).
pub const ATTEMPTS: u32 = 4;

type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The HTTP(S) client of every receiver: `https://` URLs are checked against the public
/// roots and `ca_file`'s certificates, `http://` ones go in the clear.
fn http_client(ca_file: Option<&std::path::Path>) -> Result<Http, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(p) = ca_file {
        for c in crate::config::load_ca_file(p)? {
            roots.add(c).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Group and send notices until `stop` turns true.
pub async fn run(
    host: String,
    to: Receivers,
    mut notices: mpsc::Receiver<Vec<Notice>>,
    mut stop: watch::Receiver<bool>,
) {
    let http = match http_client(to.ca_file.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            // `vmvpn check` and start-up read the file already: it changed since.
            warn!(error = %e, "alarms: cannot use [alarms] ca_file; https receivers get the public roots only");
            match http_client(None) {
                Ok(h) => h,
                Err(e) => return warn!(error = %e, "alarms: no HTTP client: notifications off"),
            }
        }
    };
    let to = Arc::new(to);
    let slots = Arc::new(Semaphore::new(MAX_SENDS));
    let mut outbox = Outbox::new(&host);
    loop {
        let wake = outbox.poll_timeout();
        tokio::select! {
            _ = stop.changed() => return,
            n = notices.recv() => match n {
                Some(n) => outbox.handle_notices(&n, Instant::now(), SystemTime::now()),
                None => return,
            },
            _ = sleep_until(wake) => {
                let now = Instant::now();
                while let Some(b) = outbox.poll_batch(now) {
                    send_batch(&http, &to, &slots, &host, b);
                }
                if let Some(again) = outbox.poll_resend(now, SystemTime::now()) {
                    for base in &to.alertmanager {
                        spawn_post(&http, &slots, alerts_url(base), json(&again), "alertmanager (resend)");
                    }
                }
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn json<T: serde::Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// `{base}/api/v2/alerts`.
fn alerts_url(base: &hyper::Uri) -> String {
    format!("{}/api/v2/alerts", base.to_string().trim_end_matches('/'))
}

fn send_batch(http: &Http, to: &Arc<Receivers>, slots: &Arc<Semaphore>, host: &str, b: Batch) {
    info!(
        alert = %b.alertname,
        alerts = b.alerts.len(),
        state = if b.firing { "firing" } else { "resolved" },
        "notifying"
    );
    let api: Vec<AmAlert> = b.api_alerts();
    for base in &to.alertmanager {
        spawn_post(http, slots, alerts_url(base), json(&api), "alertmanager");
    }
    let hook = json(&b.webhook());
    for url in &to.webhook {
        spawn_post(http, slots, url.to_string(), hook.clone(), "webhook");
    }
    if let Some(mail) = &to.email {
        let (mail, (subject, body)) = (Arc::new(mail.clone()), b.email(host));
        let dest = format!("smtp://{}:{}", mail.host, mail.port);
        spawn_retried(slots, dest, "email", move || {
            let (mail, subject, body) = (mail.clone(), subject.clone(), body.clone());
            async move { send_mail(&mail, &subject, &body).await }
        });
    }
    if let Some(prog) = &to.exec {
        let (prog, slots, hook) = (prog.clone(), slots.clone(), hook.clone());
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            if let Err(e) = exec(&prog, &hook).await {
                warn!(program = %prog.display(), error = %e, "alert exec hook failed");
            }
        });
    }
}

/// POST `body` to `url`, retrying with backoff; logs the outcome.
fn spawn_post(http: &Http, slots: &Arc<Semaphore>, url: String, body: Bytes, what: &'static str) {
    let http = http.clone();
    let target = url.clone();
    spawn_retried(slots, target, what, move || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move { post(&http, &url, body).await }
    });
}

/// Run `send` in a send slot, up to [`ATTEMPTS`] times, 1, 2, 4 s apart; logs the outcome.
fn spawn_retried<F, Fut>(slots: &Arc<Semaphore>, dest: String, what: &'static str, send: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let slots = slots.clone();
    tokio::spawn(async move {
        let Ok(_slot) = slots.acquire_owned().await else {
            return;
        };
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            match send().await {
                Ok(()) => return debug!(%dest, attempt, "{what}: delivered"),
                Err(e) if attempt == ATTEMPTS => {
                    warn!(%dest, error = %e, attempts = ATTEMPTS, "{what}: not delivered; giving up");
                }
                Err(e) => {
                    debug!(%dest, error = %e, attempt, "{what}: failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    });
}

async fn post(http: &Http, url: &str, body: Bytes) -> Result<(), String> {
    let req = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("vmvpn/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(SEND_TIMEOUT, http.request(req))
        .await
        .map_err(|_| format!("no answer within {} s", SEND_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read (and bound) the answer so the connection can be reused.
    let text = tokio::time::timeout(SEND_TIMEOUT, resp.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| {
            String::from_utf8_lossy(&b.to_bytes()[..])
                .chars()
                .take(200)
                .collect::<String>()
        })
        .unwrap_or_default();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {text}"))
    }
}

/// One email through the SMTP server, with STARTTLS where it offers it.
async fn send_mail(mail: &Email, subject: &str, body: &str) -> Result<(), String> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let mut m = Message::builder()
        .from(mail.from.parse().map_err(|e| format!("from: {e}"))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for t in &mail.to {
        m = m.to(t.parse().map_err(|e| format!("to: {e}"))?);
    }
    let msg = m.body(body.to_string()).map_err(|e| e.to_string())?;
    let mut tls = TlsParameters::builder(mail.host.clone());
    if let Some(ca) = &mail.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls.build_rustls().map_err(|e| e.to_string())?;
    // "dangerous" only in that TLS is not required: STARTTLS is used when the server
    // offers it (and its certificate must then verify), plain SMTP otherwise, as on an
    // internal relay.
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mail.host.as_str())
        .port(mail.port)
        .tls(Tls::Opportunistic(tls))
        .timeout(Some(SEND_TIMEOUT))
        .build();
    transport
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn exec(prog: &std::path::Path, body: &Bytes) -> Result<(), String> {
    let mut child = tokio::process::Command::new(prog)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body).await.map_err(|e| e.to_string())?;
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("exited with {s}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("still running after 10 s; killed".into()),
    }
}
