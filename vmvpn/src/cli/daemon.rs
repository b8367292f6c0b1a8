//! `vmvpn up`: read the config, set up sockets and TAPs, run the data plane and the
//! control socket until SIGTERM or SIGINT, then take everything down again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use bulletin::proof::Verifier;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vmvpn::api::alerting::SharedAlerts;
use vmvpn::api::control;
use vmvpn::api::reload::{self, Reloader, SharedReloader};
use vmvpn::config::Config;
use vmvpn::engine::{Engine, HostIdentity, Timers};
use vmvpn::io::dataplane::{DataPlane, Handle, report_fatal};
use vmvpn::io::netdev;
use vmvpn::io::udp::Udp;
use vmvpn::libvirt::inventory::{LanLimits, SharedInventory};
use vmvpn::membership::{HostInfo, Membership};
use vmvpn::status::HostStatus;

/// Run the daemon until SIGTERM or SIGINT: [`prepare`], [`open`], [`supervise`].
pub(crate) fn up(path: &Path) -> Result<()> {
    supervise(open(prepare(path)?)?)
}

/// The config, read and checked, with what it needs from the system (nothing opened yet).
struct Prepared {
    /// The file and its text, for reloads.
    path: std::path::PathBuf,
    text: String,
    cfg: Config,
    /// The alarm rules: the file's, or the default ones.
    rules: Vec<vmvpn::alarms::rules::Rule>,
    secrets: Vec<vmvpn::proto::crypto::LanSecret>,
    verifiers: Vec<Verifier>,
    underlay_mtu: u32,
}

/// The bulletins (address, fingerprint) to register with, `return_after_s`, and what to
/// register.
type MembershipPlan = (Vec<(SocketAddr, String)>, u64, HostInfo);

/// Everything opened and built, ready to run.
struct Opened {
    path: std::path::PathBuf,
    text: String,
    cfg: Config,
    /// The LAN secrets as read at start, for a reload to tell whether one changed.
    secrets: Vec<[u8; 32]>,
    rules: Vec<vmvpn::alarms::rules::Rule>,
    dp: DataPlane,
    handle: vmvpn::io::dataplane::Handle,
    /// The bulletins, return_after_s and what to register, when the config has a `[bulletin]`.
    membership: Option<MembershipPlan>,
    listen: SocketAddr,
    host_id: u32,
    /// The relay's thread (`[host] relay`) and how many LANs it serves.
    relay: Option<(vmvpn::io::relay::Relay, usize)>,
}

/// Read the config and the LAN secrets, and find the underlay MTU.
fn prepare(path: &Path) -> Result<Prepared> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let cfg = Config::parse(&text, path)?;
    let secrets = (0..cfg.lans.len())
        .map(|i| cfg.read_secret(i, Some(&text)))
        .collect::<Result<Vec<_>, _>>()?;
    // What the bulletin checks proofs against; derived here, never sent.
    let verifiers: Vec<Verifier> = secrets
        .iter()
        .map(|s| Verifier::from_secret(&s.0))
        .collect();

    let underlay_ip = cfg.host.address.addr;
    let underlay_mtu = match &cfg.host.underlay_mtu {
        Some(m) => u32::from(*m.get_ref()),
        None => match netdev::interface_with_address(underlay_ip)? {
            Some(ifname) => {
                netdev::mtu(&ifname).with_context(|| format!("cannot read the MTU of {ifname}"))?
            }
            None => {
                warn!(address = %underlay_ip, "no interface holds [host] address; assuming underlay MTU 1500 (set [host] underlay_mtu)");
                1500
            }
        },
    };
    let rules = cfg.alarms.load()?;
    Ok(Prepared {
        path: path.to_path_buf(),
        text,
        cfg,
        rules,
        secrets,
        verifiers,
        underlay_mtu,
    })
}

/// Bind the data port, open the TAPs, join the multicast groups, build the engine and the
/// data plane.
fn open(prep: Prepared) -> Result<Opened> {
    let Prepared {
        path,
        text,
        cfg,
        rules,
        secrets,
        verifiers,
        underlay_mtu,
    } = prep;
    let underlay_ip = cfg.host.address.addr;

    let bind_ip = cfg.host.bind.unwrap_or(match underlay_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let bind = SocketAddr::new(bind_ip, *cfg.host.port.get_ref());
    let mut udp = Udp::bind(bind).with_context(|| {
        format!("cannot bind the data port {bind} (is another vmvpn running? set [host] port)")
    })?;

    // Bound before the data plane starts, so a port in use fails the start, not later.
    let relay = if cfg.host.relay {
        let keys = cfg.relay_keys(&secrets);
        let lans = keys.len();
        let at = SocketAddr::new(bind_ip, *cfg.host.relay_port.get_ref());
        let limit = *cfg.host.relay_limit_mbps.get_ref();
        let running = vmvpn::io::relay::Relay::start(at, keys, limit)
            .with_context(|| format!("cannot bind the relay port {at} (set [host] relay_port)"))?;
        Some((running, lans))
    } else {
        None
    };

    let mut taps = Vec::new();
    let mut specs = Vec::new();
    let secret_bytes: Vec<[u8; 32]> = secrets.iter().map(|s| s.0).collect();
    for (i, secret) in secrets.into_iter().enumerate() {
        let (spec, tap) = vmvpn::io::lan::open(&cfg, i, secret)?;
        specs.push(spec);
        taps.push(tap);
    }
    // Join each LAN's group on the interface that holds the underlay address.
    for spec in &specs {
        if let (Some(group), IpAddr::V4(iface)) = (spec.group, underlay_ip)
            && let IpAddr::V4(g) = group.ip()
            && let Err(e) = udp.join_multicast(g, iface)
        {
            warn!(lan = %spec.name, %group, error = %e, "cannot join the multicast group: flooding by unicast");
        }
    }

    let mut x25519 = [0u8; 32];
    SystemRandom::new()
        .fill(&mut x25519)
        .map_err(|_| anyhow!("the system random source failed"))?;
    let start_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let host_id = cfg.host_id();
    let mut engine = Engine::new(
        HostIdentity {
            underlay: Some((underlay_ip, cfg.host.address.prefix)),
            id: host_id,
            name: cfg.host.name.0.clone(),
            secret: x25519,
            start_ns,
        },
        specs,
        Timers {
            keepalive_interval: Duration::from_secs(u64::from(*cfg.host.keepalive_s.get_ref())),
            ..Timers::default()
        },
    );
    engine.set_accounting(cfg.telemetry.accounting());
    engine.set_sampling(vmvpn::export::sampling(&cfg));
    engine.set_underlay_mtu(u16::try_from(underlay_mtu).unwrap_or(u16::MAX));
    engine.set_relays(cfg.host.relays.iter().map(|r| *r.get_ref()).collect());
    let listen = udp.local_addr()?;
    let wanted = u8::try_from(*cfg.host.flow_ports.get_ref()).unwrap_or(0);
    let flow_ports = match udp.open_flow_ports(wanted) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot open the flow ports; all data leaves from the data port");
            0
        }
    };
    engine.spread_flows(flow_ports);
    debug!(ports = ?udp.flow_port_addrs(), "flow ports");
    let host = HostStatus {
        name: cfg.host.name.0.clone(),
        id: host_id,
        listen: listen.to_string(),
        uptime_s: 0,
        version: env!("CARGO_PKG_VERSION").to_string(),
        realtime: false,
        threads: 1,
        flow_ports,
    };
    let (mut dp, handle) = DataPlane::new(engine, udp, taps, host)?;
    dp.want_realtime(cfg.host.realtime);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = cfg.host.threads.resolve(cores);
    // Each worker in turn, the first that cannot start ending the list.
    type Start = fn(&mut DataPlane) -> std::io::Result<()>;
    let workers: [(u8, Start, &str); 3] = [
        (2, DataPlane::start_send_thread, "send thread"),
        (3, DataPlane::start_tap_writer, "TAP writer thread"),
        (4, DataPlane::start_opener, "open thread"),
    ];
    for (n, start, what) in workers {
        if threads < n {
            break;
        }
        if let Err(e) = start(&mut dp) {
            warn!(error = %e, "could not start the {what}; the data plane runs on {} thread(s)", n - 1);
            break;
        }
    }
    let membership = match &cfg.bulletin {
        Some(b) => {
            let lans = cfg
                .lans
                .iter()
                .zip(&verifiers)
                .map(|(l, v)| (l.name.get_ref().0.clone(), l.segment.to_string(), v.clone()))
                .collect();
            let info = HostInfo {
                id: host_id,
                name: cfg.host.name.0.clone(),
                underlay: underlay_ip,
                prefix: cfg.host.address.prefix,
                port: listen.port(),
                lans,
                report_every: cfg.telemetry.report_every(),
            };
            Some((b.servers(), b.return_after_s, info))
        }
        None => {
            for l in cfg.lans.iter().filter(|l| l.peers.is_empty()) {
                warn!(lan = %l.name.get_ref(), "no peers and no [bulletin]: only hosts that list this one will be heard");
            }
            None
        }
    };
    Ok(Opened {
        path,
        text,
        cfg,
        secrets: secret_bytes,
        rules,
        dp,
        handle,
        membership,
        listen,
        host_id,
        relay,
    })
}

/// Serve this host's dashboard on `addr` (`[host] web`): plain HTTP on loopback, else
/// HTTPS with a certificate made now and the login of `[web]`.
async fn web(
    cfg: &Config,
    addr: std::net::SocketAddr,
    host_id: u32,
    handle: &vmvpn::io::dataplane::Handle,
    alerts: &vmvpn::api::alerting::SharedAlerts,
    namer: Option<telemetry::vms::VmNamer>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    use vmvpn::api::dashboard;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve the dashboard on {addr} ([host] web)"))?;
    let name = cfg.host.name.0.clone();
    let feed = bulletin::web::Feed::new(
        dashboard::empty(&name),
        bulletin::web::history::History::new(
            bulletin::web::HISTORY_POINTS,
            bulletin::web::MAX_SERIES,
        ),
    );
    let mut local = dashboard::Local::new(dashboard::Me {
        name: name.clone(),
        id: host_id,
        underlay: cfg.host.address.addr,
        prefix: cfg.host.address.prefix,
    });
    if let Some(n) = namer {
        local.name_vms(n);
    }
    let builder = tokio::spawn(dashboard::run(
        local,
        handle.clone(),
        alerts.clone(),
        feed.clone(),
    ));
    let remote = !addr.ip().is_loopback();
    let tls = if remote {
        // Made once and kept: a browser that accepted it once is not asked again.
        let dir = cfg.state_dir().join("web");
        let id = bulletin::tls::Identity::load_or_create(&dir).with_context(|| {
            format!(
                "the dashboard's certificate in {} ([host] state_dir)",
                dir.display()
            )
        })?;
        info!(fingerprint = %id.fingerprint(), dir = %dir.display(), "dashboard certificate (check it in the browser)");
        Some(id.https_config()?)
    } else {
        None
    };
    let credentials = cfg.web_credentials();
    if remote && credentials.is_none() {
        // Checked with the config; a password file gone since must not open the door.
        return Err(anyhow!(
            "[host] web {addr} needs the login of [web]: its password_file is no longer readable"
        ));
    }
    let router = bulletin::web::api::router(feed, credentials);
    info!(url = %format!("{}://{addr}/", if remote { "https" } else { "http" }), login = remote, "dashboard");
    let server = tokio::spawn(bulletin::http::serve_with(
        listener,
        router,
        bulletin::http::Options {
            tls,
            exchange_timeout: bulletin::web::api::EXCHANGE_TIMEOUT,
            ..Default::default()
        },
    ));
    Ok(vec![builder, server])
}

/// Serve the control socket, `/metrics` and the bulletin membership, run the data plane
/// on its own thread, and take everything down on a signal or a failure.
fn supervise(o: Opened) -> Result<()> {
    let Opened {
        path,
        text,
        cfg,
        secrets,
        rules,
        dp,
        handle,
        membership,
        listen,
        host_id,
        relay,
    } = o;
    let relay_view = relay
        .as_ref()
        .map(|(r, lans)| vmvpn::relay::counters::RelayView {
            counters: r.counters.clone(),
            port: r.local.port(),
            limit_mbps: *cfg.host.relay_limit_mbps.get_ref(),
            lans: *lans,
        });
    let sock = cfg.control_socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = control::bind(&sock)?;
        let alerts = vmvpn::api::alerting::SharedAlerts::default();
        let export = vmvpn::export::SharedExport::default();
        let metrics = serve_metrics(&cfg, &handle, &alerts, &export, relay_view.clone()).await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let alarm_stop = stop_rx.clone();
        let libvirt = start_libvirt(&cfg, &handle, &stop_rx);
        // The exporters name VMs through libvirt's inventory, when there is one.
        let namer = libvirt.as_ref().map(|(inv, _)| namer_of(inv.clone()));
        let web = match &cfg.host.web {
            Some(addr) => Some(
                web(&cfg, *addr.get_ref(), host_id, &handle, &alerts, namer.clone()).await?,
            ),
            None => None,
        };
        let exporters =
            vmvpn::export::Exporters::start(&cfg, &handle, &alerts, &export, namer.clone());
        // Built inside the runtime: the QUIC endpoint registers with it.
        let (view, mut member, member_lans) = match membership {
            Some((servers, return_after_s, info)) => {
                let (mut m, view) = Membership::new(&servers, info, handle.clone())?;
                m.return_after(std::time::Duration::from_secs(return_after_s));
                m.report_alerts(alerts.clone());
                if let Some(n) = &namer {
                    m.report_names(n.clone());
                }
                let lans = m.follow_lans();
                (Some(view), Some(tokio::spawn(m.run(stop_rx))), Some(lans))
            }
            None => (None, None, None),
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new().name("dataplane".into()).spawn(move || {
            let r = dp.run();
            let _ = done_tx.send(());
            r
        })?;
        let (rules_tx, alarms) = start_alarms(&cfg, &handle, rules, &alerts, alarm_stop);
        let inventory = libvirt.as_ref().map(|(inv, _)| inv.clone());
        let (host_name, lan_count) = (cfg.host.name.0.clone(), cfg.lans.len());
        let path_shown = path.display().to_string();
        let mut reloader = Reloader::new(
            path,
            text,
            cfg,
            secrets,
            handle.clone(),
            rules_tx,
            libvirt,
        );
        reloader.own_exporters(exporters);
        if let Some(lans) = member_lans {
            reloader.follow_membership(lans);
        }
        let reloader: SharedReloader = std::sync::Arc::new(tokio::sync::Mutex::new(reloader));
        let server = tokio::spawn(control::serve(
            listener,
            handle.clone(),
            control::Views {
                bulletin: view,
                alerts,
                export,
                libvirt: inventory,
                reload: Some(reloader.clone()),
                relay: relay_view,
            },
        ));
        info!(host = %host_name, id = format_args!("{host_id:#010x}"), %listen, socket = %sock.display(), "vmvpn up");
        let failure = wait_for_stop(
            &format!("{lan_count} LANs, data port {listen}"),
            &path_shown,
            &reloader,
            done_rx,
            &mut member,
        )
        .await?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        // Leave the bulletin first (peers are told at once), then stop forwarding.
        let _ = stop_tx.send(true);
        if let Some(m) = member {
            let _ = tokio::time::timeout(Duration::from_secs(2), m).await;
        }
        // The exporters send their last samples and records (every flow ends) first.
        reloader.lock().await.stop_exporters().await;
        handle.stop();
        server.abort();
        alarms.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        for t in web.into_iter().flatten() {
            t.abort();
        }
        let result = thread.join().map_err(|_| anyhow!("data-plane thread panicked"))?;
        if let Some((r, _)) = relay {
            r.stop();
        }
        let _ = std::fs::remove_file(&sock);
        if let Err(e) = &result {
            report_fatal(e);
        }
        result.context("data plane failed")?;
        if let Some(e) = failure {
            return Err(e);
        }
        info!("stopped");
        Ok(())
    })
}

/// `[host] metrics`: the Prometheus endpoint, when configured.
async fn serve_metrics(
    cfg: &Config,
    handle: &Handle,
    alerts: &SharedAlerts,
    export: &vmvpn::export::SharedExport,
    relay: Option<vmvpn::relay::counters::RelayView>,
) -> Result<Option<JoinHandle<()>>> {
    let Some(addr) = cfg.host.metrics else {
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr} ([host] metrics)"))?;
    info!(%addr, "Prometheus metrics at /metrics");
    Ok(Some(tokio::spawn(bulletin::http::serve(
        l,
        vmvpn::api::metrics::router(handle.clone(), alerts.clone(), export.clone(), relay),
    ))))
}

/// `[libvirt]`: the inventory, refreshed in the background until `stop`, and the
/// channel that tells it the limits naming VMs (a reload sends new ones).
fn start_libvirt(
    cfg: &Config,
    handle: &Handle,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Option<(SharedInventory, tokio::sync::watch::Sender<Vec<LanLimits>>)> {
    use vmvpn::libvirt::inventory::{self, Inventory, Reader};
    let l = cfg.libvirt.as_ref()?;
    let inv = std::sync::Arc::new(std::sync::Mutex::new(Inventory::new(l.uri.get_ref())));
    let reader = Reader {
        virsh: l.virsh.clone(),
        uri: l.uri.get_ref().clone(),
    };
    let every = Duration::from_secs(*l.refresh_s.get_ref());
    let (limits_tx, limits_rx) = tokio::sync::watch::channel(Reloader::lan_limits(cfg));
    tokio::spawn(inventory::run(
        reader,
        every,
        inv.clone(),
        Some((handle.clone(), limits_rx)),
        stop.clone(),
    ));
    Some((inv, limits_tx))
}

/// How the exporters and reports name VMs: through libvirt's inventory.
fn namer_of(inv: SharedInventory) -> telemetry::vms::VmNamer {
    std::sync::Arc::new(move |rows| {
        if let Ok(i) = inv.lock() {
            i.label(rows);
        }
    })
}

/// The alarm task, with its notifier when `[alarms]` names receivers; the sender a
/// reload hands new rules to.
fn start_alarms(
    cfg: &Config,
    handle: &Handle,
    rules: Vec<vmvpn::alarms::rules::Rule>,
    alerts: &SharedAlerts,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (
    tokio::sync::mpsc::Sender<Vec<vmvpn::alarms::rules::Rule>>,
    JoinHandle<()>,
) {
    let receivers = cfg.alarms.receivers();
    let notify = receivers.any().then(|| {
        let (tx, rx) = tokio::sync::mpsc::channel(vmvpn::api::notifier::QUEUE);
        tokio::spawn(vmvpn::api::notifier::run(
            cfg.host.name.0.clone(),
            receivers,
            rx,
            stop.clone(),
        ));
        tx
    });
    let (rules_tx, rules_rx) = tokio::sync::mpsc::channel(1);
    let alarms = tokio::spawn(vmvpn::api::alerting::run(
        handle.clone(),
        rules,
        rules_rx,
        alerts.clone(),
        notify,
        stop,
    ));
    (rules_tx, alarms)
}

/// Tell systemd the daemon is ready, then serve SIGHUP (reload) until SIGTERM or SIGINT,
/// or until the data plane or the bulletin membership stops by itself: that failure,
/// if it was one.
async fn wait_for_stop(
    ready: &str,
    path_shown: &str,
    reloader: &SharedReloader,
    mut done_rx: tokio::sync::oneshot::Receiver<()>,
    member: &mut Option<JoinHandle<Result<(), bulletin::client::ClientError>>>,
) -> Result<Option<anyhow::Error>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // systemd (Type=notify): TAPs, data plane and control socket are up. Nothing is
    // sent without NOTIFY_SOCKET.
    if let Err(e) = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(ready),
    ]) {
        warn!(error = %e, "cannot tell systemd the daemon is ready");
    }
    super::trim::spawn();
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!(file = %path_shown, "SIGHUP: reading the config again");
                let report = reloader.lock().await.reload(false).await;
                reload::log(&report);
            }
            _ = term.recv() => { info!("SIGTERM: shutting down"); return Ok(None) }
            _ = int.recv() => { info!("SIGINT: shutting down"); return Ok(None) }
            _ = &mut done_rx => return Ok(Some(anyhow!("data plane stopped unexpectedly"))),
            // Without a bulletin this branch never completes.
            r = async {
                match member.as_mut() {
                    Some(m) => m.await,
                    None => std::future::pending().await,
                }
            } => {
                *member = None;
                return Ok(Some(match r {
                    Ok(Ok(())) => anyhow!("bulletin membership stopped unexpectedly"),
                    Ok(Err(e)) => anyhow::Error::new(e).context("cannot join through the bulletin"),
                    Err(e) => anyhow!("bulletin membership task failed: {e}"),
                }));
            }
        }
    }
}
