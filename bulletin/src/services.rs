//! Service addresses over the whole overlay: each host reports its LANs' services as it
//! sends to them (`Services`); here they are merged into one view per LAN, for the
//! dashboard and `bulletin matrix`. A backend's state, location, load and open
//! connections are its own host's (the host that probes it); where no host reports it as
//! its own, the first other host's word stands. New flows are summed over every client
//! host, so the share is the overlay's; the RTT shown is the worst any host has to it.

use std::collections::HashMap;

use crate::proto::HostServices;
use crate::web::view::{ServiceBackendView, ServiceView};

/// Each LAN's services, merged over its hosts.
pub type Overlay = HashMap<String, Vec<ServiceView>>;

/// One backend as merged so far.
struct Acc {
    view: ServiceBackendView,
    /// Its own host reported it.
    owned: bool,
    new_last_minute: u64,
}

/// Merge every host's services (as [`Reports::services`](crate::reports::Reports::services)
/// gives them: ordered by LAN, then host) into one view per LAN; services and backends in
/// the order first reported.
pub fn overlay(all: &[HostServices]) -> Overlay {
    let mut lans: HashMap<String, Vec<(ServiceView, Vec<Acc>)>> = HashMap::new();
    for h in all {
        let list = lans.entry(h.services.lan.clone()).or_default();
        for s in &h.services.services {
            let i = match list.iter().position(|(v, _)| v.service == s.name) {
                Some(i) => i,
                None => {
                    list.push((
                        ServiceView {
                            service: s.name.clone(),
                            address: s.address.clone(),
                            policy: s.policy.clone(),
                            backends_up: 0,
                            no_backend_frames_total: 0,
                            backends: Vec::new(),
                        },
                        Vec::new(),
                    ));
                    list.len() - 1
                }
            };
            let (view, accs) = &mut list[i];
            view.no_backend_frames_total += s.no_backend_frames_total;
            for b in &s.backends {
                let j = match accs.iter().position(|a| a.view.backend == b.backend) {
                    Some(j) => j,
                    None => {
                        accs.push(Acc {
                            view: ServiceBackendView {
                                backend: b.backend.clone(),
                                state: "unknown".into(),
                                location: "unknown".into(),
                                weight: b.weight,
                                load_mbps: 0.0,
                                open_connections: 0,
                                rtt_ms: 0.0,
                                flows_total: 0,
                                active_flows: 0,
                                share_last_minute: 0.0,
                            },
                            owned: false,
                            new_last_minute: 0,
                        });
                        accs.len() - 1
                    }
                };
                let a = &mut accs[j];
                if b.local {
                    a.owned = true;
                    a.view.state.clone_from(&b.state);
                    a.view.location.clone_from(&h.name);
                    a.view.load_mbps = b.load_mbps;
                    a.view.open_connections = b.open_connections;
                } else {
                    if !a.owned && a.view.state == "unknown" {
                        a.view.state.clone_from(&b.state);
                        a.view.location.clone_from(&b.location);
                        a.view.load_mbps = b.load_mbps;
                        a.view.open_connections = b.open_connections;
                    }
                    a.view.rtt_ms = a.view.rtt_ms.max(b.rtt_ms);
                }
                a.view.flows_total += b.flows_total;
                a.view.active_flows += b.active_flows;
                a.new_last_minute += b.new_flows_last_minute;
            }
        }
    }
    lans.into_iter()
        .map(|(lan, list)| {
            let views = list
                .into_iter()
                .map(|(mut v, accs)| {
                    let all: u64 = accs.iter().map(|a| a.new_last_minute).sum();
                    v.backends = accs
                        .into_iter()
                        .map(|a| ServiceBackendView {
                            share_last_minute: if all == 0 {
                                0.0
                            } else {
                                a.new_last_minute as f64 / all as f64
                            },
                            ..a.view
                        })
                        .collect();
                    // "quiet": up, its host silent a moment (new flows go elsewhere).
                    v.backends_up = v
                        .backends
                        .iter()
                        .filter(|b| b.state == "up" || b.state == "quiet")
                        .count();
                    v
                })
                .collect();
            (lan, views)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{LanServices, ServiceBackendReport, ServiceReport};

    fn backend(name: &str, state: &str, local: bool, flows: u64) -> ServiceBackendReport {
        ServiceBackendReport {
            backend: name.into(),
            state: state.into(),
            local,
            location: if local { "local".into() } else { "h1".into() },
            weight: 1,
            load_mbps: if local { 40.0 } else { 39.0 },
            open_connections: if local { 3 } else { 2 },
            rtt_ms: if local { 0.0 } else { 0.4 },
            flows_total: flows,
            active_flows: 0,
            new_flows_last_minute: flows,
        }
    }

    fn host(name: &str, backends: Vec<ServiceBackendReport>) -> HostServices {
        HostServices {
            host_id: 1,
            name: name.into(),
            services: LanServices {
                lan: "lan1".into(),
                services: vec![ServiceReport {
                    name: "web".into(),
                    address: "192.168.1.200".into(),
                    policy: "least-load".into(),
                    no_backend_frames_total: 1,
                    backends,
                }],
            },
        }
    }

    #[test]
    fn each_backend_is_its_own_hosts_and_flows_add_up_over_clients() {
        // h1 runs web1 and sends it nothing; h2 and h3 are clients. web2 runs nowhere
        // that reports: h2 sees it down, h3 up; the first word stands.
        let all = [
            host("h1", vec![backend("web1", "up", true, 0)]),
            host(
                "h2",
                vec![
                    backend("web1", "down", false, 30),
                    backend("web2", "down", false, 10),
                ],
            ),
            host(
                "h3",
                vec![
                    backend("web1", "up", false, 30),
                    backend("web2", "up", false, 30),
                ],
            ),
        ];
        let o = overlay(&all);
        let s = &o["lan1"][0];
        assert_eq!((s.service.as_str(), s.no_backend_frames_total), ("web", 3));
        let (w1, w2) = (&s.backends[0], &s.backends[1]);
        assert_eq!(
            (w1.state.as_str(), w1.location.as_str()),
            ("up", "h1"),
            "its own host's word"
        );
        assert_eq!((w1.load_mbps, w1.open_connections), (40.0, 3));
        assert_eq!((w1.flows_total, w1.rtt_ms), (60, 0.4));
        assert_eq!(w2.state, "down");
        assert!((w1.share_last_minute - 0.6).abs() < 1e-9, "60 of 100");
        assert_eq!(s.backends_up, 1);
    }
}
