//! The standard exports (`[export]`): sFlow v5 (`sflow`), IPFIX (`ipfix`) and the live
//! state in Redis (`redis`). They run as tasks beside the data plane and never block it:
//! the data plane only counts down to a sample and queues ended flows in buffers of fixed
//! size, which the exporter swaps for empty ones four times a second, or sooner when the
//! data plane says samples pile up (`Request::TakeExports`, `Handle::exports_due`). A collector or Redis that is away costs counted errors.
//!
//! Their counts are in `status.export` and in `/metrics` (`vmvpn_export_*`).

pub mod ipfix;
pub mod redis;
pub mod sflow;
pub mod udp;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use crate::alarms::SharedAlerts;
use crate::config::Config;
use crate::engine::Sampling;
use crate::io::dataplane::{Exports, Handle, Request};
use crate::status::ExportStatus;

/// The exporters' counts, read by the control socket and `/metrics`.
pub type SharedExport = Arc<Mutex<ExportStatus>>;

/// How often the samples and flow records are taken from the data plane.
pub const TAKE_EVERY: Duration = Duration::from_millis(250);

/// What `cfg`'s `[export]` asks of the data plane.
pub fn sampling(cfg: &Config) -> Sampling {
    Sampling {
        sflow: cfg.export.sflow.as_ref().map(|s| {
            (
                *s.sampling_rate.get_ref() as u32,
                seed(cfg.host_id(), cfg.host.address.addr),
            )
        }),
        ipfix_active_s: cfg
            .export
            .ipfix
            .as_ref()
            .map(|x| *x.active_timeout_s.get_ref()),
    }
}

/// The exporters running, and what starting them again takes (a reload that changes
/// `[export]` stops them and starts the new ones).
pub struct Exporters {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    dp: Handle,
    alerts: SharedAlerts,
    shared: SharedExport,
    namer: Option<telemetry::vms::VmNamer>,
}

impl Exporters {
    /// Start the exporters `cfg` asks for (none is fine: a reload may add some).
    pub fn start(
        cfg: &Config,
        dp: &Handle,
        alerts: &SharedAlerts,
        shared: &SharedExport,
        namer: Option<telemetry::vms::VmNamer>,
    ) -> Self {
        let (stop, rx) = watch::channel(false);
        Exporters {
            tasks: start(cfg, dp, alerts, shared, &rx, namer.clone()),
            stop,
            dp: dp.clone(),
            alerts: alerts.clone(),
            shared: shared.clone(),
            namer,
        }
    }

    /// Stop them: each sends what it holds (IPFIX ends every flow with a record first),
    /// 2 s at most each.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }

    /// Stop them and start the ones `cfg` asks for, with fresh counts.
    pub async fn restart(&mut self, cfg: &Config) {
        self.stop().await;
        if let Ok(mut s) = self.shared.lock() {
            *s = ExportStatus::default();
        }
        *self = Exporters::start(
            cfg,
            &self.dp,
            &self.alerts,
            &self.shared,
            self.namer.clone(),
        );
    }
}

/// Start the exporters the config asks for; their tasks end when `stop` turns true
/// (IPFIX ends every flow with a last record first).
fn start(
    cfg: &Config,
    dp: &Handle,
    alerts: &SharedAlerts,
    shared: &SharedExport,
    stop: &watch::Receiver<bool>,
    namer: Option<telemetry::vms::VmNamer>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let e = &cfg.export;
    let agent = e
        .sflow
        .as_ref()
        .and_then(|s| s.agent_address)
        .unwrap_or(cfg.host.address.addr);
    let sflow = e.sflow.as_ref().map(|s| {
        sflow::Agent::new(
            agent,
            s.collectors.get_ref().clone(),
            *s.sampling_rate.get_ref() as u32,
            Duration::from_secs(*s.polling_interval_s.get_ref()),
            cfg.telemetry.accounting().link_speed_bps.unwrap_or(0),
        )
    });
    let ipfix = e.ipfix.as_ref().map(|x| {
        ipfix::Exporter::new(
            x.collectors.get_ref().clone(),
            Duration::from_secs(*x.template_refresh_s.get_ref()),
        )
    });
    if sflow.is_some() || ipfix.is_some() {
        tasks.push(tokio::spawn(flows(
            sflow,
            ipfix,
            dp.clone(),
            shared.clone(),
            stop.clone(),
            namer.clone(),
        )));
    }
    if let Some(r) = &e.redis {
        tasks.push(tokio::spawn(redis::run(
            redis::Setup {
                namer,
                url: r.url.get_ref().clone(),
                interval: Duration::from_secs(*r.interval_s.get_ref()),
                prefix: r.prefix.clone(),
                host: cfg.host.name.0.clone(),
                stream_maxlen: *r.stream_maxlen.get_ref() as usize,
            },
            dp.clone(),
            alerts.clone(),
            shared.clone(),
            stop.clone(),
        )));
    }
    tasks
}

/// The seed of a host's sampling (so hosts do not pick in step).
pub fn seed(host_id: u32, underlay: IpAddr) -> u64 {
    let ip = match underlay {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a) as u64,
    };
    (u64::from(host_id) << 32 ^ ip) | 1
}

async fn take(dp: &Handle, exports: Exports, flush: bool) -> Option<Exports> {
    let Exports {
        samples,
        records,
        lan_ids,
        ..
    } = exports;
    dp.call(|reply| Request::TakeExports {
        samples,
        records,
        lan_ids,
        flush,
        reply,
    })
    .await
}

/// sFlow's flow and counter samples and IPFIX's records, from one loop.
async fn flows(
    mut sflow: Option<sflow::Agent>,
    mut ipfix: Option<ipfix::Exporter>,
    dp: Handle,
    shared: SharedExport,
    mut stop: watch::Receiver<bool>,
    namer: Option<telemetry::vms::VmNamer>,
) {
    let Some(sockets) = udp::Sockets::open().await else {
        return;
    };
    // The buffers go back and forth: the data plane fills the ones it holds.
    let mut bufs = Exports {
        samples: Vec::with_capacity(crate::engine::sampling::QUEUE),
        records: Vec::new(),
        lan_ids: Vec::new(),
        take: Default::default(),
    };
    let mut tick = tokio::time::interval(TAKE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_counters = tokio::time::Instant::now();
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            // Samples pile up faster than the tick takes them (a saturating stream).
            () = dp.exports_due() => false,
            _ = stop.changed() => true,
        };
        let Some(mut got) = take(&dp, bufs, last && ipfix.is_some()).await else {
            debug!("exporter: the data plane is gone");
            return;
        };
        if let Some(a) = sflow.as_mut() {
            a.send_flow_samples(&got.samples, got.take.sample_drops, &sockets);
            if tokio::time::Instant::now() >= next_counters && !last {
                next_counters += a.polling();
                if let Some((st, mut tr)) = dp.snapshot().await {
                    a.send_counter_samples(&st, &tr, &sockets);
                    if let Some(n) = &namer {
                        for t in &mut tr {
                            n(&mut t.vms);
                        }
                        a.send_vm_samples(&st, &tr, &sockets);
                    }
                }
            }
        }
        if let Some(x) = ipfix.as_mut() {
            x.send_records(&got.records, &got.lan_ids, &got.take, &sockets);
            // The names libvirt gives the VMs, as options records, every template refresh.
            if let Some(n) = &namer
                && x.names_due(std::time::Instant::now())
                && let Some((st, mut tr)) = dp.snapshot().await
            {
                for t in &mut tr {
                    n(&mut t.vms);
                }
                x.send_vm_names(&st, &tr, &sockets);
            }
        }
        if let Ok(mut s) = shared.lock() {
            s.sflow = sflow.as_ref().map(|a| a.status());
            s.ipfix = ipfix.as_ref().map(|x| x.status());
        }
        for r in &mut got.records {
            r.clear();
        }
        got.samples.clear();
        bufs = got;
        if last {
            return;
        }
    }
}

/// A libvirt UUID (`11111111-2222-3333-4444-555555555555`) as its 16 bytes; zeros when it
/// is not one.
pub(crate) fn uuid_bytes(s: &str) -> [u8; 16] {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    let mut out = [0u8; 16];
    if hex.len() != 32 {
        return out;
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
        match std::str::from_utf8(pair)
            .ok()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
        {
            Some(b) => *o = b,
            None => return [0; 16],
        }
    }
    out
}

#[cfg(test)]
mod uuid_tests {
    use super::uuid_bytes;

    #[test]
    fn uuids_parse_or_are_zero() {
        let u = uuid_bytes("11111111-2222-3333-4444-555555555555");
        assert_eq!(u[0], 0x11);
        assert_eq!(u[4], 0x22);
        assert_eq!(u[15], 0x55);
        assert_eq!(uuid_bytes("not-a-uuid"), [0; 16]);
        assert_eq!(uuid_bytes("zz111111-2222-3333-4444-555555555555"), [0; 16]);
    }
}
