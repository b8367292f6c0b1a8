//! The dashboard's HTTP routes (read-only: every route is a GET):
//!
//! - `/` and the assets (`assets`);
//! - `GET /api/v1/overview`: the [`Overview`] now;
//! - `GET /api/v1/series?kind=tunnel&lan=L&from=A&to=B` or `?kind=vm&lan=L&mac=M`: one
//!   series ([`SeriesData`](crate::web::history::SeriesData)), 404 when not held;
//! - `GET /api/v1/events`: Server-Sent Events, an `overview` event at once and at every
//!   change; the stream ends after [`EVENTS_LIFETIME`] and the browser reconnects.
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
use futures_util::Stream;
use serde::Deserialize;

use crate::web::Feed;
use crate::web::assets;
use crate::web::auth::Credentials;
use crate::web::history::SeriesKey;
use crate::web::view::Overview;

/// How long one event stream lasts: it ends well inside the server's exchange timeout,
/// and the browser's `EventSource` opens the next at once.
pub const EVENTS_LIFETIME: Duration = Duration::from_secs(300);
/// The exchange timeout a listener serving this router needs (see `http::Options`).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(330);

#[derive(Clone)]
struct Dash {
    feed: Feed,
    credentials: Option<Arc<Credentials>>,
}

/// The dashboard's routes over `feed`; `credentials` are asked for when given.
pub fn router(feed: Feed, credentials: Option<Credentials>) -> Router {
    let dash = Dash {
        feed,
        credentials: credentials.map(Arc::new),
    };
    Router::new()
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/series", get(series))
        .route("/api/v1/events", get(events))
        .fallback(get(asset))
        .layer(middleware::from_fn_with_state(dash.clone(), guard))
        .with_state(dash)
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

async fn events(State(d): State<Dash>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = d.feed.subscribe();
    let end = tokio::time::Instant::now() + EVENTS_LIFETIME;
    let stream = futures_util::stream::unfold((rx, true), move |(mut rx, first)| async move {
        if !first {
            tokio::select! {
                r = rx.changed() => r.ok()?,
                _ = tokio::time::sleep_until(end) => return None,
            }
        }
        let o = rx.borrow_and_update().clone();
        let ev = Event::default()
            .event("overview")
            .retry(Duration::from_secs(1))
            .json_data(&*o)
            .ok()?;
        Some((Ok(ev), (rx, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
