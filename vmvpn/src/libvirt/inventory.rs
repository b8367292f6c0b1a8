//! The MAC → domain map: `virsh -c URI list --all --name`, then `dumpxml` of each domain,
//! every `refresh_s`. A failure (a URI that does not connect, a `virsh` missing) is logged
//! when it first appears or changes, shown in `vmvpn status`, and leaves the last map in
//! place: a VM keeps its name through a hiccup of libvirtd, and vmvpn runs on without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::LibvirtError;
use super::domain::{self, Domain, Mac};
use crate::engine::limits::LimitSpec;
use crate::io::dataplane::{Handle, Request};
use crate::status::LibvirtStatus;

/// One `virsh` call may take this long.
pub const VIRSH_TIMEOUT: Duration = Duration::from_secs(10);
/// After a domain event, wait this long for the ones that follow it before refreshing.
pub const EVENT_SETTLE: Duration = Duration::from_millis(200);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A VM's libvirt identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmName {
    /// The domain's name.
    pub name: String,
    /// Its UUID.
    pub uuid: Option<String>,
}

/// What the last refresh found, and how refreshing goes.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Each domain's last figures sample, by name, and when it was read.
    samples: HashMap<String, (super::stats::Sample, Instant)>,
    /// Each domain's figures from the last two samples, by name.
    figures: HashMap<String, telemetry::vms::DomainFigures>,
    by_mac: HashMap<Mac, VmName>,
    by_name: HashMap<String, Vec<Mac>>,
    domains: usize,
    refreshed_at: Option<Instant>,
    status: LibvirtStatus,
}

/// The inventory shared between its reader and the control socket (never the data plane).
pub type SharedInventory = Arc<Mutex<Inventory>>;

impl Inventory {
    /// Empty, for `uri`.
    pub fn new(uri: &str) -> Self {
        Inventory {
            status: LibvirtStatus {
                uri: uri.to_string(),
                ..LibvirtStatus::default()
            },
            ..Inventory::default()
        }
    }

    /// The domain that owns `mac`.
    pub fn name_of(&self, mac: &Mac) -> Option<&VmName> {
        self.by_mac.get(mac)
    }

    /// Put names on VM rows.
    pub fn label(&self, rows: &mut [telemetry::VmRow]) {
        for r in rows {
            if let Some(n) = self.name_of(&r.mac) {
                r.name = Some(n.name.clone());
                r.uuid = n.uuid.clone();
                r.domain = self.figures.get(&n.name).cloned();
            }
        }
    }

    /// Take a reading of the domains' figures (`virsh domstats`), read at `now`.
    pub fn handle_stats(&mut self, samples: HashMap<String, super::stats::Sample>, now: Instant) {
        self.figures = samples
            .iter()
            .map(|(name, s)| {
                let f = super::stats::figures(s, now, self.samples.get(name));
                (name.clone(), f)
            })
            .collect();
        // Domains gone are forgotten with the rest.
        self.samples = samples.into_iter().map(|(n, s)| (n, (s, now))).collect();
    }

    /// How it goes, as `vmvpn status` shows it.
    pub fn status(&self, now: Instant) -> LibvirtStatus {
        LibvirtStatus {
            domains: self.domains,
            macs: self.by_mac.len(),
            refreshed_ago_s: self
                .refreshed_at
                .map(|t| now.saturating_duration_since(t).as_secs()),
            ..self.status.clone()
        }
    }

    /// Take a refresh's result: a new map, or an error that keeps the old one. Returns
    /// whether the error is new (to be logged).
    pub fn handle_refresh(
        &mut self,
        result: Result<Vec<Domain>, LibvirtError>,
        now: Instant,
    ) -> bool {
        match result {
            Ok(domains) => {
                self.by_mac.clear();
                self.by_name.clear();
                for d in &domains {
                    self.by_name.insert(d.name.clone(), d.macs.clone());
                    for mac in &d.macs {
                        self.by_mac.insert(
                            *mac,
                            VmName {
                                name: d.name.clone(),
                                uuid: d.uuid.clone(),
                            },
                        );
                    }
                }
                self.domains = domains.len();
                self.refreshed_at = Some(now);
                self.status.refreshes_total += 1;
                self.status.last_error = None;
                false
            }
            Err(e) => {
                self.status.errors_total += 1;
                let message = e.to_string();
                let new = self.status.last_error.as_deref() != Some(message.as_str());
                self.status.last_error = Some(message);
                new
            }
        }
    }
}

/// The limits of one LAN, as the config gives them: by MAC (and the LAN's), and by VM
/// name (no MAC yet).
#[derive(Debug, Clone)]
pub struct LanLimits {
    /// The LAN's name.
    pub lan: String,
    /// Limits with a MAC, and the LAN's.
    pub by_mac: Vec<LimitSpec>,
    /// Limits naming a VM.
    pub by_vm: Vec<LimitSpec>,
}

impl Inventory {
    /// Every domain's (name, MACs), by name.
    pub fn names(&self) -> Vec<(String, Vec<Mac>)> {
        let mut v: Vec<(String, Vec<Mac>)> = self
            .by_name
            .iter()
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect();
        v.sort();
        v
    }

    /// Each LAN's limits with the VM names resolved (a limit per MAC of the domain), and
    /// the names libvirt does not know.
    pub fn resolve(&self, lans: &[LanLimits]) -> (Vec<(String, Vec<LimitSpec>)>, Vec<String>) {
        let mut unknown = Vec::new();
        let resolved = lans
            .iter()
            .map(|l| {
                let mut specs = l.by_mac.clone();
                for t in &l.by_vm {
                    let name = t.vm.clone().unwrap_or_default();
                    match self.by_name.get(&name) {
                        Some(macs) => specs.extend(macs.iter().map(|m| LimitSpec {
                            mac: Some(*m),
                            ..t.clone()
                        })),
                        None => unknown.push(name),
                    }
                }
                (l.lan.clone(), specs)
            })
            .collect();
        (resolved, unknown)
    }
}

/// How to ask libvirt.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The `virsh` program.
    pub virsh: String,
    /// The connection URI.
    pub uri: String,
}

impl Reader {
    async fn virsh(&self, args: &[&str]) -> Result<String, LibvirtError> {
        let what = format!("-c {} {}", self.uri, args.join(" "));
        let child = tokio::process::Command::new(&self.virsh)
            .arg("-q")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(VIRSH_TIMEOUT, child).await {
            Err(_) => {
                return Err(LibvirtError::Timeout {
                    what,
                    secs: VIRSH_TIMEOUT.as_secs(),
                });
            }
            Ok(Err(cause)) => {
                return Err(LibvirtError::Spawn {
                    virsh: self.virsh.clone(),
                    cause,
                });
            }
            Ok(Ok(o)) => o,
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let message: Vec<&str> = err
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(3)
                .collect();
            return Err(LibvirtError::Virsh {
                what,
                message: message.join("; "),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every domain's figures; a driver or version that has no `domstats` gives none.
    pub async fn stats(&self) -> Result<HashMap<String, super::stats::Sample>, LibvirtError> {
        Ok(super::stats::parse(&self.virsh(&super::stats::ARGS).await?))
    }

    /// Every domain, running or not.
    pub async fn domains(&self) -> Result<Vec<Domain>, LibvirtError> {
        let list = self.virsh(&["list", "--all", "--name"]).await?;
        let mut out = Vec::new();
        for name in list.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let xml = self.virsh(&["dumpxml", "--domain", name]).await?;
            out.push(domain::parse(&xml)?);
        }
        Ok(out)
    }
}

/// Refresh `shared` from `reader` now, every `every` and on each domain event, until
/// `stop`; after each good refresh, put the limits naming VMs in force through `dp` where
/// they changed. New limits (a reload) are read from the watch and bring a refresh at
/// once.
pub async fn run(
    reader: Reader,
    every: Duration,
    shared: SharedInventory,
    mut limits: Option<(Handle, watch::Receiver<Vec<LanLimits>>)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sent: HashMap<String, Vec<LimitSpec>> = HashMap::new();
    let mut names_sent: Option<Vec<(String, Vec<Mac>)>> = None;
    let events = Arc::new(tokio::sync::Notify::new());
    let listener = tokio::spawn(super::events::listen(
        Reader {
            virsh: reader.virsh.clone(),
            uri: reader.uri.clone(),
        },
        every,
        events.clone(),
        stop.clone(),
    ));
    // Ends the listener (and its virsh, killed on drop) with this task.
    let _listener = AbortOnDrop(listener);
    loop {
        let result = reader.domains().await;
        // The figures beside the names; without them the names still count.
        let stats = match &result {
            Ok(_) => reader.stats().await.ok(),
            Err(_) => None,
        };
        let now = Instant::now();
        if let Some(s) = stats
            && let Ok(mut inv) = shared.lock()
        {
            inv.handle_stats(s, now);
        }
        let summary = result
            .as_ref()
            .ok()
            .map(|d| (d.len(), d.iter().map(|x| x.macs.len()).sum::<usize>()));
        let (new_error, was_failing) = match shared.lock() {
            Ok(mut inv) => {
                let was = inv.status.last_error.is_some() || inv.status.refreshes_total == 0;
                (inv.handle_refresh(result, now), was)
            }
            Err(_) => return,
        };
        if new_error && let Ok(inv) = shared.lock() {
            warn!(
                uri = %reader.uri,
                error = inv.status.last_error.as_deref().unwrap_or(""),
                "libvirt: cannot read the domains; VMs show without names until it works"
            );
        }
        if let Some((domains, macs)) = summary
            && was_failing
        {
            info!(uri = %reader.uri, domains, macs, "libvirt: VM names read");
        }
        // The domains' names for services naming their backends, when they changed.
        if let Some((dp, _)) = &limits
            && summary.is_some()
            && let Ok(names) = shared.lock().map(|inv| inv.names())
            && names_sent.as_ref() != Some(&names)
            && dp.tell(Request::VmNames(names.clone()))
        {
            names_sent = Some(names);
        }
        if let Some((dp, lans)) = &mut limits
            && summary.is_some()
        {
            let lans: Vec<LanLimits> = lans
                .borrow_and_update()
                .iter()
                .filter(|l| !l.by_vm.is_empty())
                .cloned()
                .collect();
            apply_limits(dp, &lans, &shared, &mut sent).await;
        }
        let reloaded = tokio::select! {
            _ = tokio::time::sleep(every) => None,
            () = events.notified() => {
                // A burst of events (a domain defined then started) makes one refresh.
                tokio::time::sleep(EVENT_SETTLE).await;
                if let Ok(mut inv) = shared.lock() {
                    inv.status.events_total += 1;
                }
                None
            }
            _ = stop.changed() => return,
            ok = async {
                match &mut limits {
                    Some((_, rx)) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => Some(ok),
        };
        match reloaded {
            // The reload put its own resolution in force; compare with that anew.
            Some(true) => sent.clear(),
            Some(false) => limits = None,
            None => {}
        }
    }
}

/// Resolve the limits naming VMs and send each LAN's that changed to the data plane.
async fn apply_limits(
    dp: &Handle,
    lans: &[LanLimits],
    shared: &SharedInventory,
    sent: &mut HashMap<String, Vec<LimitSpec>>,
) {
    let Ok((resolved, unknown)) = shared.lock().map(|inv| inv.resolve(lans)) else {
        return;
    };
    if let Ok(mut inv) = shared.lock()
        && inv.status.unresolved_limits != unknown
    {
        if !unknown.is_empty() {
            warn!(
                vms = ?unknown,
                "libvirt knows no such VM: its limit is not applied until it does"
            );
        }
        inv.status.unresolved_limits = unknown;
    }
    for (lan, specs) in resolved {
        if sent.get(&lan) == Some(&specs) {
            continue;
        }
        let request = |reply| Request::SetLimits {
            lan: lan.clone(),
            specs: specs.clone(),
            reply,
        };
        match dp.call(request).await {
            Some(Ok(())) => {
                info!(lan = %lan, limits = specs.len(), "limits naming VMs applied");
                sent.insert(lan, specs);
            }
            Some(Err(e)) => warn!(lan = %lan, error = %e, "limits naming VMs not applied"),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom(name: &str, mac: u8) -> Domain {
        Domain {
            name: name.into(),
            uuid: Some(format!("uuid-{name}")),
            macs: vec![[2, 0, 0, 0, 0, mac]],
        }
    }

    #[test]
    fn names_follow_the_last_good_refresh_and_an_error_keeps_them() {
        let mut inv = Inventory::new("test:///default");
        let t0 = Instant::now();
        assert!(!inv.handle_refresh(Ok(vec![dom("web1", 1), dom("db1", 2)]), t0));
        let mut rows = vec![
            telemetry::VmRow {
                mac: [2, 0, 0, 0, 0, 1],
                ..Default::default()
            },
            telemetry::VmRow {
                mac: [2, 0, 0, 0, 0, 9],
                ..Default::default()
            },
        ];
        inv.label(&mut rows);
        assert_eq!(rows[0].name.as_deref(), Some("web1"));
        assert_eq!(rows[0].uuid.as_deref(), Some("uuid-web1"));
        assert_eq!(rows[1].name, None);
        let err = || LibvirtError::Virsh {
            what: "-c x list".into(),
            message: "failed to connect to the hypervisor".into(),
        };
        assert!(inv.handle_refresh(Err(err()), t0), "a new error is logged");
        assert!(!inv.handle_refresh(Err(err()), t0), "the same error once");
        let s = inv.status(t0 + Duration::from_secs(7));
        assert_eq!((s.domains, s.macs, s.refreshed_ago_s), (2, 2, Some(7)));
        assert_eq!((s.refreshes_total, s.errors_total), (1, 2));
        assert!(
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("failed to connect"))
        );
        assert_eq!(
            inv.name_of(&[2, 0, 0, 0, 0, 2]).map(|n| n.name.as_str()),
            Some("db1")
        );
        // Working again: the error clears; a VM gone from libvirt loses its name.
        inv.handle_refresh(Ok(vec![dom("web1", 1)]), t0);
        assert!(inv.status(t0).last_error.is_none());
        assert!(inv.name_of(&[2, 0, 0, 0, 0, 2]).is_none());
    }

    #[test]
    fn limits_naming_vms_get_one_limit_per_mac_and_unknown_names_are_listed() {
        use crate::engine::limits::Direction;
        let mut inv = Inventory::new("test:///default");
        let mut two = dom("web1", 1);
        two.macs.push([2, 0, 0, 0, 0, 7]);
        inv.handle_refresh(Ok(vec![two, dom("db1", 2)]), Instant::now());
        let t = |vm: Option<&str>, mac: Option<Mac>| LimitSpec {
            mac,
            vm: vm.map(String::from),
            rate_bps: 1_000_000,
            burst_bytes: 65_536,
            direction: Direction::Both,
            shape_ms: 0,
        };
        let lans = [LanLimits {
            lan: "lan1".into(),
            by_mac: vec![t(None, Some([2, 0, 0, 0, 0, 9]))],
            by_vm: vec![t(Some("web1"), None), t(Some("ghost"), None)],
        }];
        let (resolved, unknown) = inv.resolve(&lans);
        assert_eq!(unknown, ["ghost"]);
        let macs: Vec<_> = resolved[0]
            .1
            .iter()
            .map(|s| (s.mac, s.vm.clone()))
            .collect();
        assert_eq!(
            macs,
            [
                (Some([2, 0, 0, 0, 0, 9]), None),
                (Some([2, 0, 0, 0, 0, 1]), Some("web1".into())),
                (Some([2, 0, 0, 0, 0, 7]), Some("web1".into())),
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_virsh_is_a_clear_error() {
        let r = Reader {
            virsh: "/nonexistent/virsh".into(),
            uri: "test:///default".into(),
        };
        let e = r.domains().await.expect_err("no such program").to_string();
        assert!(
            e.contains("cannot run /nonexistent/virsh") && e.contains("libvirt-clients"),
            "{e}"
        );
    }
}
