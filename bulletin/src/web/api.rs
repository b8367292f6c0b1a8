//! The dashboard's HTTP routes (read-only: every route is a GET):
//!
//! - `/` and the assets (`assets`);
//! - `GET /api/v1/overview`: the [`Overview`] now;
//! - `GET /api/v1/series?kind=tunnel&lan=L&from=A&to=B` or `?kind=vm&lan=L&mac=M`: one
//!   series ([`SeriesData`](crate::web::history::SeriesData)), 404 when not held;
//! - `GET /api/v1/events?lan=L`: Server-Sent Events for one page: a `snapshot` event at
//!   once (LAN `L`, or the first, whole; a line per LAN; the alerts), then a `delta` event
//!   with only what changed ([`delta`](crate::web::delta)); the stream ends after
//!   [`EVENTS_LIFETIME`] and the browser reconnects.
//!
//! With credentials (a non-loopback listener), every route answers 401 without them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::web::Feed;
use crate::web::assets;
use crate::web::auth::Credentials;
use crate::web::delta::{Page, Send};
use crate::web::history::SeriesKey;
use crate::web::view::Overview;

/// How long one event stream lasts: it ends well inside the server's exchange timeout,
/// and the browser's `EventSource` opens the next at once.
pub const EVENTS_LIFETIME: Duration = Duration::from_secs(300);
/// The exchange timeout a listener serving this router needs (see `http::Options`).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(330);
/// Event streams open at once: half the server's connections, so that open pages cannot
/// take every slot from the API and the assets (the next stream gets 503 and retries).
pub const MAX_STREAMS: usize = crate::http::MAX_CONNECTIONS / 2;

#[derive(Clone)]
struct Dash {
    feed: Feed,
    credentials: Option<Arc<Credentials>>,
    streams: Arc<tokio::sync::Semaphore>,
}

/// The dashboard's routes over `feed`; `credentials` are asked for when given.
pub fn router(feed: Feed, credentials: Option<Credentials>) -> Router {
    router_with(feed, credentials, Router::new())
}

/// The dashboard's routes and `extra` (the bulletin's `/metrics`), all behind the same
/// credentials and headers.
pub fn router_with(feed: Feed, credentials: Option<Credentials>, extra: Router) -> Router {
    let dash = Dash {
        feed,
        credentials: credentials.map(Arc::new),
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
    };
    Router::new()
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/series", get(series))
        .route("/api/v1/events", get(events))
        .fallback(get(asset))
        .with_state(dash.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(dash, guard))
}

/// Credentials first, then the same headers on every answer: the page runs only its own
/// scripts, nothing is cached (the data is live), no other site may frame it.
async fn guard(State(d): State<Dash>, req: Request, next: Next) -> Response {
    let mut res = match &d.credentials {
        Some(c)
            if !c.admits(
                req.headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
            ) =>
        {
            (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"vmvpn dashboard\", charset=\"UTF-8\"",
                )],
                "401: the vmvpn dashboard needs the user and password of [web] (HTTP Basic), \
                 or the password as a bearer token\n",
            )
                .into_response()
        }
        _ => next.run(req).await,
    };
    let h = res.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    res
}

async fn asset(req: Request) -> Response {
    match assets::find(req.uri().path()) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
        None => (StatusCode::NOT_FOUND, "404: no such page\n").into_response(),
    }
}

async fn overview(State(d): State<Dash>) -> axum::Json<Overview> {
    axum::Json((*d.feed.overview()).clone())
}

/// The query of `/api/v1/series`.
#[derive(Debug, Deserialize)]
struct SeriesQuery {
    kind: String,
    lan: String,
    from: Option<String>,
    to: Option<String>,
    mac: Option<String>,
}

async fn series(State(d): State<Dash>, Query(q): Query<SeriesQuery>) -> Response {
    let key = match (q.kind.as_str(), q.from, q.to, q.mac) {
        ("tunnel", Some(from), Some(to), _) => SeriesKey::Tunnel {
            lan: q.lan,
            from,
            to,
        },
        ("vm", _, _, Some(mac)) => SeriesKey::Vm { lan: q.lan, mac },
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "400: give kind=tunnel with lan, from and to, or kind=vm with lan and mac\n",
            )
                .into_response();
        }
    };
    let data = d.feed.history().get(&key);
    match data {
        Some(s) => axum::Json(s).into_response(),
        None => (StatusCode::NOT_FOUND, "404: no such series (yet)\n").into_response(),
    }
}

/// The query of `/api/v1/events`.
#[derive(Debug, Deserialize)]
struct EventsQuery {
    lan: Option<String>,
}

async fn events(State(d): State<Dash>, Query(q): Query<EventsQuery>) -> Response {
    let Ok(slot) = d.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "503: too many live views are open; this one retries\n",
        )
            .into_response();
    };
    let rx = d.feed.subscribe();
    let end = tokio::time::Instant::now() + EVENTS_LIFETIME;
    let page = Page::new(q.lan.filter(|l| !l.is_empty()));
    let stream = futures_util::stream::unfold(
        (rx, page, true),
        move |(mut rx, mut page, first)| async move {
            // The first event goes at once; later ones wait for a change worth sending.
            let mut wait = !first;
            loop {
                if wait {
                    tokio::select! {
                        r = rx.changed() => r.ok()?,
                        _ = tokio::time::sleep_until(end) => return None,
                    }
                }
                let o = rx.borrow_and_update().clone();
                let ev = match page.handle_overview(&o) {
                    Some(Send::Snapshot(s)) => Event::default()
                        .event("snapshot")
                        .retry(Duration::from_secs(1))
                        .json_data(&*s),
                    Some(Send::Delta(x)) => Event::default().event("delta").json_data(&*x),
                    None => {
                        wait = true;
                        continue;
                    }
                };
                return Some((Ok::<_, Infallible>(ev.ok()?), (rx, page, false)));
            }
        },
    );
    // The slot goes with the stream and comes back when it ends or the client leaves.
    let stream = futures_util::StreamExt::map(stream, move |e| {
        let _slot = &slot;
        e
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::history::History;
    use crate::web::view::{HistoryInfo, Scope};
    use axum::body::Body;
    use base64::Engine as _;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn feed() -> Feed {
        let mut h = History::new(10, 10);
        h.push(
            SeriesKey::Tunnel {
                lan: "lan1".into(),
                from: "h1".into(),
                to: "h2".into(),
            },
            1000,
            &[
                Some(0.25),
                Some(0.5),
                Some(0.0),
                Some(0.0),
                Some(8.0),
                Some(9.0),
            ],
        );
        Feed::new(
            Overview {
                scope: Scope::Overlay,
                name: "sha256:test".into(),
                at_ms: 1,
                history: HistoryInfo {
                    points: 10,
                    step_ms: 1000,
                },
                lans: Vec::new(),
                alerts: Vec::new(),
            },
            h,
        )
    }

    async fn get(r: &Router, path: &str, auth: Option<&str>) -> (StatusCode, String, String) {
        let mut req = axum::http::Request::get(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let res = r
            .clone()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let status = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn pages_api_and_errors_without_credentials() {
        let r = router(feed(), None);
        let (s, ct, body) = get(&r, "/", None).await;
        assert_eq!(
            (s, ct.as_str()),
            (StatusCode::OK, "text/html; charset=utf-8")
        );
        assert!(body.contains("/app.js") && body.contains("/vendor/uPlot.iife.min.js"));
        for a in assets::ASSETS {
            let (s, ct, _) = get(&r, a.path, None).await;
            assert_eq!(
                (s, ct.as_str()),
                (StatusCode::OK, a.content_type),
                "{}",
                a.path
            );
        }
        let (s, ct, body) = get(&r, "/api/v1/overview", None).await;
        assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/json"));
        let o: Overview = serde_json::from_str(&body).expect("typed overview");
        assert_eq!(o.name, "sha256:test");
        let (s, _, body) = get(
            &r,
            "/api/v1/series?kind=tunnel&lan=lan1&from=h1&to=h2",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let d: crate::web::history::SeriesData = serde_json::from_str(&body).expect("series");
        assert_eq!(
            (d.t_ms.clone(), d.columns[0].values.clone()),
            (vec![1000], vec![Some(0.25)])
        );
        for (path, want) in [
            (
                "/api/v1/series?kind=tunnel&lan=lan1&from=h2&to=h1",
                StatusCode::NOT_FOUND,
            ),
            ("/api/v1/series?kind=vm&lan=lan1", StatusCode::BAD_REQUEST),
            ("/api/v1/series?kind=nope&lan=lan1", StatusCode::BAD_REQUEST),
            ("/api/v1/series", StatusCode::BAD_REQUEST),
            ("/nothing-here", StatusCode::NOT_FOUND),
        ] {
            assert_eq!(get(&r, path, None).await.0, want, "{path}");
        }
        let res = r
            .clone()
            .oneshot(
                axum::http::Request::post("/api/v1/overview")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "read-only");
    }

    #[tokio::test]
    async fn every_route_asks_for_the_credentials_when_given() {
        let c = Credentials::new("admin", "a long password here").expect("ok");
        let r = router(feed(), Some(c));
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:a long password here")
        );
        for path in [
            "/",
            "/app.js",
            "/api/v1/overview",
            "/api/v1/events",
            "/nothing",
        ] {
            let res = r
                .clone()
                .oneshot(
                    axum::http::Request::get(path)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("answer");
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert!(
                res.headers()
                    .get(header::WWW_AUTHENTICATE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"Basic realm=")),
                "{path}: a browser shows its login"
            );
        }
        assert_eq!(get(&r, "/", Some(&good)).await.0, StatusCode::OK);
        assert_eq!(
            get(&r, "/api/v1/overview", Some("Bearer a long password here"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            get(&r, "/", Some("Bearer wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    async fn next_event(b: &mut Body) -> String {
        let f = tokio::time::timeout(Duration::from_secs(5), b.frame())
            .await
            .expect("an event in time")
            .expect("a frame")
            .expect("no error");
        String::from_utf8_lossy(&f.into_data().expect("data")).into_owned()
    }

    #[tokio::test]
    async fn events_start_with_a_snapshot_and_follow_with_deltas() {
        use crate::web::view::{HostState, HostView, LanView};
        let f = feed();
        let lan = |name: &str, state| LanView {
            lan: name.into(),
            subnets: Vec::new(),
            hosts: vec![HostView {
                name: "h1".into(),
                id: Some(1),
                underlay: "10.0.0.1".into(),
                subnet: "10.0.0.0/24".into(),
                state,
                forwarder: false,
                report_age_ms: None,
                reported_at_ms: None,
            }],
            links: Vec::new(),
            pairs: Vec::new(),
            vms: Vec::new(),
            services: Vec::new(),
        };
        let mut o = (*f.overview()).clone();
        o.lans = vec![lan("lan1", HostState::Up), lan("lan2", HostState::Up)];
        f.publish(o.clone());
        let r = router(f.clone(), None);
        let res = r
            .oneshot(
                axum::http::Request::get("/api/v1/events?lan=lan2")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(
            res.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"text/event-stream"[..])
        );
        let mut body = res.into_body();
        let first = next_event(&mut body).await;
        assert!(
            first.contains("event: snapshot")
                && first.contains("sha256:test")
                && first.contains("\"lan\":{\"lan\":\"lan2\""),
            "the LAN asked for, whole: {first}"
        );
        // Only the time moves: nothing. A host of another LAN goes down: its line only.
        o.at_ms += 1000;
        f.publish(o.clone());
        o.lans[0] = lan("lan1", HostState::Down);
        f.publish(o.clone());
        let second = next_event(&mut body).await;
        assert!(second.contains("event: delta"), "{second}");
        assert!(
            second.contains("\"lans\":[") && !second.contains("\"hosts\":[{"),
            "the lines of the LANs, no host of another LAN: {second}"
        );
        // Its own host goes down: that host.
        o.lans[1] = lan("lan2", HostState::Down);
        f.publish(o);
        let third = next_event(&mut body).await;
        assert!(
            third.contains("\"hosts\":[{\"name\":\"h1\"") && third.contains("\"state\":\"down\""),
            "{third}"
        );
    }

    #[tokio::test]
    async fn live_views_are_capped_and_their_slots_come_back() {
        let r = router(feed(), None);
        let open = || {
            r.clone().oneshot(
                axum::http::Request::get("/api/v1/events")
                    .body(Body::empty())
                    .expect("request"),
            )
        };
        let mut held = Vec::new();
        for _ in 0..MAX_STREAMS {
            let res = open().await.expect("answer");
            assert_eq!(res.status(), StatusCode::OK);
            held.push(res);
        }
        let over = open().await.expect("answer");
        assert_eq!(over.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            get(&r, "/api/v1/overview", None).await.0,
            StatusCode::OK,
            "the API still answers"
        );
        drop(held.pop());
        assert_eq!(open().await.expect("answer").status(), StatusCode::OK);
    }
}
