//! Membership through the bulletin (the registry; PROTOCOL.md and the README's bulletin
//! section): register
//! this host's LANs, keep the lease, and feed the watch stream to the `reconciler`, whose
//! peer changes go to the data plane.
//!
//! While the bulletin is unreachable the data plane keeps every peer it knows; this task
//! retries with capped backoff and re-registers when the bulletin is back.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulletin::client::{Client, ClientError, SessionRx, SessionTx};
use bulletin::proof::Verifier;
use bulletin::proto::{
    ALERTS_SINCE, ClientMsg, LanAlerts, LanJoin, NAMES_SINCE, PATHS_SINCE, RefuseCode, Register,
    SERVICES_SINCE, ServerMsg,
};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::reconciler::{PeerChange, Reconciler};
use crate::alarms::SharedAlerts;
use crate::io::dataplane::{Handle, Request};
use crate::status::{BulletinState, BulletinStatus};

/// (LAN name, segment, verifier) of each LAN this host registers.
pub type LanJoins = Vec<(String, String, Verifier)>;

/// What this host registers.
pub struct HostInfo {
    /// Host id.
    pub id: u32,
    /// Host name.
    pub name: String,
    /// Underlay address.
    pub underlay: IpAddr,
    /// Underlay prefix length.
    pub prefix: u8,
    /// Data port.
    pub port: u16,
    /// (LAN name, segment, verifier) of every LAN.
    pub lans: LanJoins,
    /// How often to send telemetry reports (None: never).
    pub report_every: Option<Duration>,
}

/// The bulletin connection as `vmvpn status` shows it.
#[derive(Debug, Clone)]
pub struct View {
    server: SocketAddr,
    state: BulletinState,
    epoch: Option<u64>,
    registered_at: Option<Instant>,
    last_error: Option<String>,
    peers: usize,
}

impl View {
    fn new(server: SocketAddr) -> Self {
        View {
            server,
            state: BulletinState::Connecting,
            epoch: None,
            registered_at: None,
            last_error: None,
            peers: 0,
        }
    }

    /// The status section.
    pub fn status(&self) -> BulletinStatus {
        BulletinStatus {
            server: self.server.to_string(),
            state: self.state,
            epoch: self.epoch.map(|e| format!("{e:016x}")),
            registered_ago_s: self.registered_at.map(|t| t.elapsed().as_secs()),
            last_error: self.last_error.clone(),
            peers: self.peers,
        }
    }
}

/// Shared view for the control socket.
pub type SharedView = Arc<Mutex<View>>;

/// The membership task's state.
pub struct Membership {
    /// One per bulletin of the registry, in order of preference.
    clients: Vec<Arc<Client>>,
    /// How long to stay on a less preferred bulletin before checking the first again.
    return_after: Option<Duration>,
    /// The one in use.
    current: usize,
    host: HostInfo,
    dp: Handle,
    view: SharedView,
    /// What the bulletin said, turned into peer changes.
    peers: Reconciler,
    /// This host's alerts, reported with its telemetry.
    alerts: Option<SharedAlerts>,
    /// LANs joined and left by a reload: registered again on the open session.
    lans: Option<watch::Receiver<LanJoins>>,
    /// Names this host's VMs (libvirt), reported with the telemetry.
    namer: Option<telemetry::vms::VmNamer>,
}

enum End {
    Stopped,
    /// The preferred bulletin answers again: register there.
    Prefer,
    Lost(String),
    Refused(ClientError),
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Full re-query, a safety net under the event stream.
const REQUERY: Duration = Duration::from_secs(60);

impl Membership {
    /// Prepare for these bulletins of one registry, tried in order (checks the
    /// fingerprint's form; connects later).
    pub fn new(
        servers: &[(SocketAddr, String)],
        host: HostInfo,
        dp: Handle,
    ) -> Result<(Self, SharedView), ClientError> {
        let clients = servers
            .iter()
            .map(|(s, fp)| Client::new(*s, fp).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let first = clients
            .first()
            .map(|c| c.server())
            .ok_or(ClientError::NoServer)?;
        let view = Arc::new(Mutex::new(View::new(first)));
        let lans = host.lans.iter().map(|(n, _, _)| n.clone()).collect();
        let m = Membership {
            clients,
            return_after: Some(Duration::from_secs(30)),
            current: 0,
            peers: Reconciler::new(host.id, lans),
            alerts: None,
            lans: None,
            namer: None,
            host,
            dp,
            view: view.clone(),
        };
        Ok((m, view))
    }

    /// With several bulletins: after this long on a less preferred one, check whether the
    /// first answers again and return to it if so (zero: stay).
    pub fn return_after(&mut self, d: Duration) {
        self.return_after = (!d.is_zero()).then_some(d);
    }

    /// Report these alerts with the telemetry (to bulletins that take them).
    pub fn report_alerts(&mut self, alerts: SharedAlerts) {
        self.alerts = Some(alerts);
    }

    /// Report the names `namer` gives this host's VMs with the telemetry (to bulletins
    /// that take them), so the bulletin's views name them too.
    pub fn report_names(&mut self, namer: telemetry::vms::VmNamer) {
        self.namer = Some(namer);
    }

    /// A sender for this host's LANs as a reload changes them: each change registers
    /// again on the open session (the bulletin tells the other hosts who joined and left
    /// which LAN; LANs kept are not disturbed), and every later registration names them.
    pub fn follow_lans(&mut self) -> watch::Sender<LanJoins> {
        let (tx, rx) = watch::channel(self.host.lans.clone());
        self.lans = Some(rx);
        tx
    }

    /// The registration of this host, its LAN proofs over the session's `nonce`.
    fn registration(&self, nonce: &[u8; 32]) -> Register {
        Register {
            host_id: self.host.id,
            name: self.host.name.clone(),
            underlay: self.host.underlay,
            prefix: self.host.prefix,
            port: self.host.port,
            lans: self
                .host
                .lans
                .iter()
                .map(|(name, segment, v)| LanJoin {
                    name: name.clone(),
                    segment: segment.clone(),
                    proof: v.prove(nonce, self.host.id, name),
                })
                .collect(),
        }
    }

    /// The pending and firing alerts per LAN of this host (every LAN, empty ones too, so
    /// that the bulletin forgets what cleared).
    fn alert_reports(&self) -> Option<Vec<LanAlerts>> {
        let all = self.alerts.as_ref()?.lock().ok()?.clone();
        let lans: Vec<&str> = self.host.lans.iter().map(|(l, _, _)| l.as_str()).collect();
        Some(super::report::alerts(&lans, &all))
    }

    fn set_view(&self, f: impl FnOnce(&mut View)) {
        if let Ok(mut v) = self.view.lock() {
            f(&mut v);
        }
    }

    /// Run until `stop` turns true (then unregister). Returns an error only when the very
    /// first attempt is refused or meets the wrong certificate: a config error to fix.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), ClientError> {
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        loop {
            let mut registered = false;
            let end = self.session(&mut stop, &mut registered).await;
            if registered {
                first = false;
                backoff = BACKOFF_MIN;
            }
            // With several bulletins, the next one is tried at once; the backoff grows
            // only when a whole round found none.
            let several = self.clients.len() > 1;
            if several && matches!(end, End::Lost(_) | End::Refused(_)) {
                self.current = (self.current + 1) % self.clients.len();
                let next = self.clients[self.current].server();
                self.set_view(|v| v.server = next);
            }
            let busy = matches!(
                &end,
                End::Refused(ClientError::Refused {
                    code: RefuseCode::Busy,
                    ..
                })
            );
            match end {
                End::Stopped => return Ok(()),
                End::Prefer => {
                    self.current = 0;
                    continue;
                }
                End::Refused(e) if first && !(several && busy) => {
                    self.set_view(|v| {
                        (v.state, v.last_error) = (BulletinState::Refused, Some(e.to_string()))
                    });
                    return Err(e);
                }
                End::Refused(e) => {
                    error!(error = %e, "bulletin refused this host; keeping known peers and retrying");
                    self.set_view(|v| {
                        (v.state, v.last_error) = (BulletinState::Refused, Some(e.to_string()))
                    });
                    if !several {
                        backoff = BACKOFF_MAX;
                    }
                }
                End::Lost(why) => {
                    warn!(reason = %why, retry_in_ms = backoff.as_millis() as u64, "bulletin connection lost; keeping known peers");
                    self.set_view(|v| {
                        (v.state, v.last_error, v.registered_at) =
                            (BulletinState::Unreachable, Some(why), None)
                    });
                }
            }
            let wait = if several && self.current != 0 {
                BACKOFF_MIN / 5
            } else {
                backoff
            };
            tokio::select! {
                _ = tokio::time::sleep(jitter(wait)) => {}
                _ = stop.changed() => return Ok(()),
            }
            if !several || self.current == 0 {
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    async fn session(&mut self, stop: &mut watch::Receiver<bool>, registered: &mut bool) -> End {
        self.set_view(|v| v.state = BulletinState::Connecting);
        let connected = tokio::select! {
            r = self.connect_and_register() => r,
            _ = stop.changed() => return End::Stopped,
        };
        let (mut tx, mut rx, terms) = match connected {
            Ok(x) => x,
            Err(
                e @ (ClientError::Fingerprint { .. }
                | ClientError::Refused { .. }
                | ClientError::Tls(_)),
            ) => {
                return End::Refused(e);
            }
            Err(e) => return End::Lost(e.to_string()),
        };
        *registered = true;
        let mut heartbeat = tokio::time::interval(terms.heartbeat.max(Duration::from_millis(100)));
        heartbeat.tick().await;
        let mut requery = tokio::time::interval(REQUERY);
        requery.tick().await;
        // Reports start one interval after registering (the data plane has figures by then).
        let every = self.host.report_every.unwrap_or(Duration::from_secs(3600));
        let now = tokio::time::Instant::now();
        let mut report = tokio::time::interval_at(now.checked_add(every).unwrap_or(now), every);
        let ack_within = (terms.heartbeat / 2).max(Duration::from_secs(1));
        let mut awaiting_ack: Option<Instant> = None;
        // A registration sent on this session for changed LANs, not yet answered.
        let mut reregistering = false;
        // On a less preferred bulletin: when to check the first again, and that check.
        let prefer_every = self.return_after.filter(|_| self.current != 0);
        let mut prefer_at = prefer_every.map(|d| Instant::now() + d);
        let mut probe: Option<tokio::task::JoinHandle<bool>> = None;
        let mut lans = self.lans.clone();
        loop {
            let ack_deadline = awaiting_ack.map(|t| t + ack_within);
            let grace_end = self.peers.poll_timeout();
            tokio::select! {
                _ = stop.changed() => {
                    self.unregister(&mut tx, &mut rx).await;
                    return End::Stopped;
                }
                _ = heartbeat.tick() => {
                    if let Err(e) = tx.send(&ClientMsg::Heartbeat).await {
                        return End::Lost(e.to_string());
                    }
                    awaiting_ack.get_or_insert_with(Instant::now);
                }
                _ = sleep_until(ack_deadline) => {
                    return End::Lost(format!("no heartbeat answer within {} ms", ack_within.as_millis()));
                }
                _ = sleep_until(prefer_at), if probe.is_none() => {
                    // In a task of its own: a dead bulletin takes seconds to time out, and
                    // heartbeats go on meanwhile.
                    let first = self.clients[0].clone();
                    probe = Some(tokio::spawn(async move { first.connect().await.is_ok() }));
                    prefer_at = prefer_every.map(|d| Instant::now() + d);
                }
                answered = async {
                    match probe.as_mut() {
                        Some(p) => p.await.unwrap_or(false),
                        None => std::future::pending().await,
                    }
                } => {
                    probe = None;
                    if answered {
                        info!(server = %self.clients[0].server(), "the preferred bulletin answers again: registering there");
                        tx.close();
                        return End::Prefer;
                    }
                }
                _ = sleep_until(grace_end) => {
                    // The restarted bulletin had time to hear from everyone: reconcile fully.
                    if self.peers.handle_timeout(Instant::now())
                        && let Err(e) = tx.send(&ClientMsg::Query { lan: None }).await
                    {
                        return End::Lost(e.to_string());
                    }
                }
                _ = report.tick(), if self.host.report_every.is_some() => {
                    let namer = self.namer.as_ref().filter(|_| terms.version >= NAMES_SINCE);
                    if let Some(c) = crate::membership::report::collect(&self.dp, namer).await {
                        if let Err(e) = tx.send(&ClientMsg::Report(c.reports)).await {
                            return End::Lost(e.to_string());
                        }
                        // One message per LAN: each stays well under the frame limit.
                        for n in c.names.into_iter().flatten() {
                            if let Err(e) = tx.send(&ClientMsg::VmNames(vec![n])).await {
                                return End::Lost(e.to_string());
                            }
                        }
                        // Only to a bulletin that knows the message.
                        if terms.version >= SERVICES_SINCE {
                            for s in c.services {
                                if let Err(e) = tx.send(&ClientMsg::Services(vec![s])).await {
                                    return End::Lost(e.to_string());
                                }
                            }
                        }
                        if terms.version >= PATHS_SINCE {
                            for p in c.paths {
                                let p = p.for_version(terms.version);
                                if let Err(e) = tx.send(&ClientMsg::Paths(vec![p])).await {
                                    return End::Lost(e.to_string());
                                }
                            }
                        }
                    }
                    // Older bulletins do not know the message: sent only to those that do.
                    if terms.version >= ALERTS_SINCE
                        && let Some(a) = self.alert_reports()
                        && let Err(e) = tx.send(&ClientMsg::Alerts(a)).await
                    {
                        return End::Lost(e.to_string());
                    }
                }
                changed = async {
                    match lans.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(rx) = lans.as_mut() else { continue };
                    if changed.is_err() {
                        lans = None;
                        continue;
                    }
                    self.host.lans = rx.borrow_and_update().clone();
                    let names: Vec<String> = self.host.lans.iter().map(|(n, _, _)| n.clone()).collect();
                    info!(lans = ?names, "LANs changed: registering them with the bulletin");
                    self.peers.set_lans(names);
                    self.push_changes();
                    if let Err(e) = tx.send(&ClientMsg::Register(self.registration(&terms.nonce))).await {
                        return End::Lost(e.to_string());
                    }
                    reregistering = true;
                }
                _ = requery.tick() => {
                    if let Err(e) = tx.send(&ClientMsg::Query { lan: None }).await {
                        return End::Lost(e.to_string());
                    }
                }
                msg = rx.recv() => match msg {
                    Ok(ServerMsg::Ack { .. }) => awaiting_ack = None,
                    Ok(ServerMsg::Event(ev)) => {
                        self.peers.handle_event(ev, Instant::now());
                        self.push_changes();
                    }
                    Ok(ServerMsg::Records(rs)) => {
                        self.peers.handle_records(rs, Instant::now());
                        self.push_changes();
                    }
                    Ok(ServerMsg::Registered { .. }) if reregistering => {
                        reregistering = false;
                        info!(lans = self.host.lans.len(), "registered again with the bulletin");
                    }
                    // The bulletin keeps the registration it had: stay with it, say why.
                    Ok(ServerMsg::Refused { code, reason }) if reregistering && code != RefuseCode::NotRegistered => {
                        reregistering = false;
                        error!(?code, %reason, "the bulletin refused the changed LANs; it keeps this host's previous registration");
                        self.set_view(|v| v.last_error = Some(reason));
                    }
                    Ok(ServerMsg::Refused { code: RefuseCode::NotRegistered, .. }) => {
                        return End::Lost("lease lapsed at the bulletin; registering again".into());
                    }
                    Ok(ServerMsg::Refused { code, reason }) => return End::Refused(ClientError::Refused { code, reason }),
                    Ok(other) => return End::Lost(format!("unexpected message {other:?}")),
                    Err(e) => return End::Lost(e.to_string()),
                },
            }
        }
    }

    async fn connect_and_register(
        &mut self,
    ) -> Result<(SessionTx, SessionRx, bulletin::client::Terms), ClientError> {
        let mut s = self.clients[self.current].connect().await?;
        let terms = s.terms;
        s.register(self.registration(&terms.nonce)).await?;
        let grace = terms.lease_ttl + terms.heartbeat;
        if self
            .peers
            .handle_registered(terms.epoch, grace, Instant::now())
        {
            info!(
                grace_s = grace.as_secs(),
                "bulletin restarted (new epoch): keeping peers it has not heard of yet"
            );
        }
        info!(server = %self.clients[self.current].server(), lans = self.host.lans.len(), "registered with the bulletin");
        let server = self.clients[self.current].server();
        self.set_view(|v| {
            v.server = server;
            v.state = BulletinState::Registered;
            v.epoch = Some(terms.epoch);
            v.registered_at = Some(Instant::now());
            v.last_error = None;
        });
        let (tx, rx) = s.split();
        Ok((tx, rx, terms))
    }

    async fn unregister(&mut self, tx: &mut SessionTx, rx: &mut SessionRx) {
        if tx.send(&ClientMsg::Unregister).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(m) = rx.recv().await {
                    if matches!(m, ServerMsg::Ack { lease_ms: 0 }) {
                        break;
                    }
                }
            })
            .await;
            info!("unregistered from the bulletin");
        }
        tx.close();
    }

    /// Tell the data plane what changed, and the view how many peers there are.
    fn push_changes(&mut self) {
        while let Some(c) = self.peers.poll_change() {
            let r = match c {
                PeerChange::Add {
                    lan,
                    addr,
                    prefix,
                    host_id,
                    others,
                } => Request::Peer {
                    lan,
                    addr,
                    host_id: Some(host_id),
                    others,
                    add: true,
                    prefix: Some(prefix),
                    source: crate::engine::PeerSource::Bulletin,
                },
                PeerChange::Remove { lan, addr } => Request::Peer {
                    lan,
                    addr,
                    host_id: None,
                    others: Vec::new(),
                    add: false,
                    prefix: None,
                    source: crate::engine::PeerSource::Bulletin,
                },
            };
            self.dp.tell(r);
        }
        let n = self.peers.peers();
        self.set_view(|v| v.peers = n);
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// ±20 % so that hosts cut off together do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 1];
    let r = if SystemRandom::new().fill(&mut b).is_ok() {
        b[0]
    } else {
        128
    };
    d.mul_f64(0.8 + 0.4 * f64::from(r) / 255.0)
}
