//! The bulletin's own state as people and Prometheus read it: `bulletin status` (a table)
//! and `/metrics` on its `--web` listeners (text format 0.0.4; labels are bounded: the
//! listener addresses given on the command line and the fixed admission limits).

use std::fmt::Write;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::proto::BulletinStatus;

/// `bulletin status` as text.
pub fn render(s: &BulletinStatus) -> String {
    let a = &s.admission;
    let l = &s.limits;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "bulletin protocol {}, up {} s: {} hosts in {} LANs",
        s.version, s.uptime_s, s.hosts, s.lans
    );
    let _ = writeln!(
        o,
        "store            {}",
        match s.store_up {
            None => "this bulletin's memory (no --store)",
            Some(true) => "etcd, answering",
            Some(false) => "etcd UNREACHABLE: serving what it has, refusing registrations",
        }
    );
    let _ = writeln!(
        o,
        "connections      {} open (limit {}, {} per address), {} not yet authenticated (limit {}, {} per address)",
        s.connections,
        l.connections,
        l.per_ip,
        s.unauthenticated,
        l.unauthenticated,
        l.unauthenticated_per_ip
    );
    let _ = writeln!(
        o,
        "admission        {} admitted, {} refused (total {}, per address {}, unauthenticated per address {}), {} evicted, {} address checks (Retry)",
        a.admitted,
        a.refused_total + a.refused_per_ip + a.refused_unauthenticated_per_ip,
        a.refused_total,
        a.refused_per_ip,
        a.refused_unauthenticated_per_ip,
        a.evicted,
        a.retries
    );
    let _ = writeln!(
        o,
        "buffered         {} bytes in outboxes, {} bytes counted against max_buffered_mb ({} bytes); {} connections shed",
        s.queued_bytes, s.buffered_bytes, s.max_buffered_bytes, s.shed_total
    );
    for w in &s.web {
        let c = &w.counts;
        let _ = writeln!(
            o,
            "web {:<21} {} open, {} accepted, {} refused per address, {} evicted",
            w.listen, c.open, c.accepted, c.refused_per_ip, c.evicted
        );
    }
    o
}

/// Prometheus text of the bulletin's state.
pub fn metrics(s: &BulletinStatus) -> String {
    let mut o = String::new();
    let mut one = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let plain = |v: u64| vec![(String::new(), v)];
    one(
        "bulletin_hosts",
        "gauge",
        "Hosts registered now.",
        &plain(s.hosts),
    );
    one(
        "bulletin_lans",
        "gauge",
        "LANs this bulletin serves.",
        &plain(s.lans),
    );
    one(
        "bulletin_uptime_seconds",
        "gauge",
        "Seconds since the bulletin started.",
        &plain(s.uptime_s),
    );
    one(
        "bulletin_connections",
        "gauge",
        "QUIC connections open now.",
        &plain(s.connections),
    );
    one(
        "bulletin_connections_unauthenticated",
        "gauge",
        "QUIC connections open now that have not registered or authenticated.",
        &plain(s.unauthenticated),
    );
    let a = &s.admission;
    one(
        "bulletin_connections_admitted_total",
        "counter",
        "QUIC connections admitted.",
        &plain(a.admitted),
    );
    one(
        "bulletin_connections_refused_total",
        "counter",
        "QUIC connections refused at admission, by the limit that refused them.",
        &[
            ("{limit=\"max_connections\"}".into(), a.refused_total),
            (
                "{limit=\"max_connections_per_ip\"}".into(),
                a.refused_per_ip,
            ),
            (
                "{limit=\"max_unauthenticated_per_ip\"}".into(),
                a.refused_unauthenticated_per_ip,
            ),
        ],
    );
    one(
        "bulletin_connections_evicted_total",
        "counter",
        "Unauthenticated QUIC connections closed to make room for newer ones.",
        &plain(a.evicted),
    );
    one(
        "bulletin_connections_retries_total",
        "counter",
        "New QUIC connections asked to validate their address (Retry).",
        &plain(a.retries),
    );
    one(
        "bulletin_queued_bytes",
        "gauge",
        "Bytes of replies and events waiting for connections' writers.",
        &plain(s.queued_bytes),
    );
    one(
        "bulletin_buffered_bytes",
        "gauge",
        "Bytes counted against max_buffered_mb: outboxes, and QUIC's window per waiting writer.",
        &plain(s.buffered_bytes),
    );
    one(
        "bulletin_buffered_limit_bytes",
        "gauge",
        "The memory budget for what waits to be sent (max_buffered_mb).",
        &plain(s.max_buffered_bytes),
    );
    one(
        "bulletin_connections_shed_total",
        "counter",
        "Connections closed because the memory budget was exceeded, most backlogged first.",
        &plain(s.shed_total),
    );
    if let Some(up) = s.store_up {
        one(
            "bulletin_store_up",
            "gauge",
            "1 while the shared registry's store (etcd, --store) answers; registrations are refused while 0.",
            &plain(u64::from(up)),
        );
    }
    let per = |f: fn(&crate::http::ListenerCounts) -> u64| -> Vec<(String, u64)> {
        s.web
            .iter()
            .map(|w| (format!("{{listen=\"{}\"}}", w.listen), f(&w.counts)))
            .collect()
    };
    one(
        "bulletin_web_connections",
        "gauge",
        "Dashboard connections open now, per listener.",
        &per(|c| c.open),
    );
    one(
        "bulletin_web_connections_accepted_total",
        "counter",
        "Dashboard connections taken into a slot, per listener.",
        &per(|c| c.accepted),
    );
    one(
        "bulletin_web_connections_refused_total",
        "counter",
        "Dashboard connections closed at once: their address held its share already.",
        &per(|c| c.refused_per_ip),
    );
    one(
        "bulletin_web_connections_evicted_total",
        "counter",
        "Dashboard connections closed before their request head to make room for a newcomer.",
        &per(|c| c.evicted),
    );
    o
}

/// `/metrics`' answer.
pub fn metrics_response(s: &BulletinStatus, builds: &crate::web::BuildTimes) -> Response {
    let mut text = metrics(s);
    dashboard_metrics(&mut text, builds);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The dashboard's build time, and the process's heap (glibc's own figures).
fn dashboard_metrics(o: &mut String, b: &crate::web::BuildTimes) {
    let n = "bulletin_dashboard_build_seconds";
    let _ = writeln!(
        o,
        "# HELP {n} Time to build the dashboard's view from what the bulletin holds (once a second).\n\
         # TYPE {n} summary\n{n}_sum {}\n{n}_count {}",
        b.total.as_secs_f64(),
        b.count
    );
    for (name, help, d) in [
        (
            "bulletin_dashboard_build_max_seconds",
            "The longest build of the dashboard's view so far.",
            b.max,
        ),
        (
            "bulletin_dashboard_build_last_seconds",
            "The latest build of the dashboard's view.",
            b.last,
        ),
    ] {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
            d.as_secs_f64()
        );
    }
    if let Some(h) = crate::process::heap() {
        let _ = writeln!(
            o,
            "# HELP bulletin_heap_bytes Bytes the bulletin holds from the C allocator (malloc'd, not freed).\n\
             # TYPE bulletin_heap_bytes gauge\nbulletin_heap_bytes {}",
            h.in_use
        );
    }
}
