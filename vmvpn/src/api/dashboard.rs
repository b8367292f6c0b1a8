//! The dashboard of one host (`[host] web`): the same page and API as the bulletin's
//! (`bulletin::web`), showing what this host sees: its tunnels, its VMs' traffic, its
//! alerts. The view is built once a second the way the bulletin builds it, from the
//! report this host would send, so both dashboards read alike; series are kept at 1 s.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bulletin::proto::{HostAlerts, HostServices, Record};
use bulletin::reports::{SharedReport, StoredReport};
use bulletin::web::Feed;
use bulletin::web::global::{Global, Input, peer_name};
use bulletin::web::history::History;
use bulletin::web::view::{HostState, Overview, Scope};
use common::clock::unix_ms;
use common::net::Subnet;

use crate::alarms::SharedAlerts;
use crate::io::dataplane::Handle;
use crate::membership::report;
use crate::status::{AlertView, Health, LanTraffic, PeerState, Status};

/// This host, as its dashboard names it.
#[derive(Debug, Clone)]
pub struct Me {
    /// Host name.
    pub name: String,
    /// Host id.
    pub id: u32,
    /// Underlay address.
    pub underlay: IpAddr,
    /// Underlay prefix length.
    pub prefix: u8,
}

/// The view of one host over time. Sans-IO: [`Local::update`] takes the snapshots.
pub struct Local {
    me: Me,
    global: Global,
    seq: u64,
    /// Names this host's VMs (libvirt), when configured.
    namer: Option<telemetry::vms::VmNamer>,
}

impl Local {
    /// The view of `me`.
    pub fn new(me: Me) -> Self {
        Local {
            me,
            global: Global::default(),
            seq: 0,
            namer: None,
        }
    }

    /// Name this host's VMs with `namer` (libvirt) in the view.
    pub fn name_vms(&mut self, namer: telemetry::vms::VmNamer) {
        self.namer = Some(namer);
    }

    /// The view now (`now_ms`: ms since the Unix epoch), feeding `history` one point per
    /// call.
    pub fn update(
        &mut self,
        status: &Status,
        traffic: &[LanTraffic],
        alerts: &[AlertView],
        history: &mut History,
        now_ms: u64,
    ) -> Overview {
        self.seq += 1;
        let me = &self.me;
        let mut records = Vec::new();
        for l in &status.lans {
            records.push(record(
                &l.name,
                &l.segment,
                me.id,
                &me.name,
                me.underlay,
                me.prefix,
                0,
            ));
            for p in &l.peers {
                let addr: Option<SocketAddr> = p.address.parse().ok();
                let Some(addr) = addr else { continue };
                // The peer's prefix is that of the flood plan's subnet holding it.
                let prefix = l
                    .flood
                    .subnets
                    .iter()
                    .find_map(|s| {
                        let p = s.subnet.rsplit_once('/')?.1.parse::<u8>().ok()?;
                        (Subnet::of(addr.ip(), p).to_string() == s.subnet).then_some(p)
                    })
                    .unwrap_or(me.prefix);
                records.push(record(
                    &l.name,
                    &l.segment,
                    p.id.unwrap_or(0),
                    &peer_name(&p.name, p.id),
                    addr.ip(),
                    prefix,
                    addr.port(),
                ));
            }
        }
        let lans: Vec<&str> = status.lans.iter().map(|l| l.name.as_str()).collect();
        let names = report::names(traffic)
            .into_iter()
            .flat_map(|l| {
                let lan = l.lan;
                l.vms
                    .into_iter()
                    .map(move |v| ((lan.clone(), v.mac), v.name))
            })
            .collect();
        let paths: Vec<bulletin::proto::HostPaths> = report::paths(&status.lans)
            .into_iter()
            .map(|paths| bulletin::proto::HostPaths {
                host_id: me.id,
                name: me.name.clone(),
                paths,
            })
            .collect();
        let input = Input {
            names,
            paths: bulletin::matrix::paths(&paths),
            name: me.name.clone(),
            records,
            reports: report::build(&status.lans, traffic)
                .into_iter()
                .map(|r| StoredReport {
                    host: SharedReport {
                        host_id: me.id,
                        name: me.name.clone(),
                        age_ms: 0,
                        report: std::sync::Arc::new(r),
                    },
                    interval_ms: Some(1000),
                    seq: self.seq,
                })
                .collect(),
            alerts: report::alerts(&lans, alerts)
                .into_iter()
                .map(|a| HostAlerts {
                    host_id: me.id,
                    name: me.name.clone(),
                    age_ms: 0,
                    alerts: a,
                })
                .collect(),
            // Its services as it sends to them: the bulletin's merge of one host's.
            services: bulletin::services::overlay(
                &report::services(&status.lans)
                    .into_iter()
                    .map(|services| HostServices {
                        host_id: me.id,
                        name: me.name.clone(),
                        services,
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        let mut o = self.global.update(&input, history, now_ms);
        o.scope = Scope::Host;
        // Peers send this host no reports: their state is that of the tunnel. (The
        // view lists LANs by name, the status in join order: matched by name.)
        for view in o.lans.iter_mut() {
            let Some(l) = status.lans.iter().find(|l| l.name == view.lan) else {
                continue;
            };
            for h in view.hosts.iter_mut().filter(|h| h.name != me.name) {
                if let Some(p) = l.peers.iter().find(|p| peer_name(&p.name, p.id) == h.name) {
                    h.state = if p.state == PeerState::Up && p.health != Health::Down {
                        HostState::Up
                    } else {
                        HostState::Down
                    };
                }
            }
        }
        o
    }
}

fn record(
    lan: &str,
    segment: &str,
    id: u32,
    name: &str,
    underlay: IpAddr,
    prefix: u8,
    port: u16,
) -> Record {
    Record {
        lan: lan.to_string(),
        segment: segment.to_string(),
        host_id: id,
        name: name.to_string(),
        underlay,
        prefix,
        port,
        observed: SocketAddr::new(underlay, port),
        lease_ms: 0,
        heartbeat_ago_ms: 0,
    }
}

/// Build the view every second from the data plane and the alarms, into `feed`.
pub async fn run(mut local: Local, dp: Handle, alerts: SharedAlerts, feed: Feed) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some((status, mut traffic)) = dp.snapshot().await else {
            return;
        };
        if let Some(n) = &local.namer {
            report::label(&mut traffic, n);
        }
        let alerts = alerts.lock().map(|a| a.clone()).unwrap_or_default();
        let o = local.update(&status, &traffic, &alerts, &mut feed.history(), unix_ms());
        feed.publish(o);
    }
}

/// An empty view to start from.
pub fn empty(name: &str) -> Overview {
    Overview {
        scope: Scope::Host,
        name: name.to_string(),
        at_ms: unix_ms(),
        history: bulletin::web::view::HistoryInfo {
            points: bulletin::web::HISTORY_POINTS,
            step_ms: 1000,
        },
        lans: Vec::new(),
        alerts: Vec::new(),
    }
}
