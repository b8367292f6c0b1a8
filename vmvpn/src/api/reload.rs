//! Live reconfiguration: SIGHUP and `vmvpn reload` read `host.toml` (and the alarm rules
//! file) again and apply what changed without a restart: LANs joined (TAP created) and
//! left (TAP removed), a LAN's static peers (the others keep their sessions: no re-key,
//! nothing lost), its rate limits (unchanged ones keep their buckets), `[telemetry]`
//! measurement settings, `[export]` (the exporters restart) and the alarm rules.
//!
//! All or nothing: a file that does not parse, a rules file with an error, any change
//! that needs a restart (host identity and port, a LAN's own settings such as its TAP or
//! secret; see `config::diff`), or a new LAN's TAP that cannot be opened refuses
//! the whole reload with the reason, and the running config stays. `vmvpn check` asks for
//! a dry run to show what a reload would do.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::alarms::rules::Rule;
use crate::config::Config;
use crate::config::diff::{self, Apply, Change, ChangeKind};
use crate::engine::PeerSource;
use crate::export::Exporters;
use crate::io::dataplane::{Handle, Request};
use crate::io::tap::TapDevice;
use crate::libvirt::inventory::{LanLimits, SharedInventory};
use crate::membership::LanJoins;
use crate::proto::crypto::LanSecret;

/// What a reload did, or would do (a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The file the daemon reads.
    pub file: String,
    /// Only asked what would change; nothing was applied.
    pub dry_run: bool,
    /// Applied (false when refused or a dry run).
    pub applied: bool,
    /// Why nothing was applied; none when it was (or would be).
    pub refused: Option<String>,
    /// Every key that differs from the running config.
    pub changes: Vec<Change>,
    /// Alarm rules in force after it (or that would be).
    pub rules: usize,
}

/// The running config and where its changes go.
pub struct Reloader {
    path: PathBuf,
    /// The running file, as read.
    text: String,
    cfg: Config,
    secrets: Vec<[u8; 32]>,
    dp: Handle,
    rules: mpsc::Sender<Vec<Rule>>,
    /// With `[libvirt]`: the limits the inventory resolves on each refresh.
    libvirt: Option<(SharedInventory, watch::Sender<Vec<LanLimits>>)>,
    /// With `[bulletin]`: the LANs this host registers.
    membership: Option<watch::Sender<LanJoins>>,
    /// The exporters, restarted when `[export]` changes.
    exporters: Option<Exporters>,
}

/// One reloader for the control socket and the SIGHUP handler.
pub type SharedReloader = Arc<tokio::sync::Mutex<Reloader>>;

/// What the new file holds, read and checked.
struct Candidate {
    text: String,
    cfg: Config,
    secrets: Vec<[u8; 32]>,
    rules: Vec<Rule>,
    changes: Vec<Change>,
}

impl Reloader {
    /// The daemon started with `text` (from `path`), parsed as `cfg`, with these LAN
    /// secrets (as read at start, in LAN order).
    pub fn new(
        path: PathBuf,
        text: String,
        cfg: Config,
        secrets: Vec<[u8; 32]>,
        dp: Handle,
        rules: mpsc::Sender<Vec<Rule>>,
        libvirt: Option<(SharedInventory, watch::Sender<Vec<LanLimits>>)>,
    ) -> Self {
        Reloader {
            path,
            text,
            cfg,
            secrets,
            dp,
            rules,
            libvirt,
            membership: None,
            exporters: None,
        }
    }

    /// Restart these exporters when `[export]` changes; stopped by
    /// [`stop_exporters`](Self::stop_exporters).
    pub fn own_exporters(&mut self, exporters: Exporters) {
        self.exporters = Some(exporters);
    }

    /// Stop the exporters (at shutdown: each sends what it holds first).
    pub async fn stop_exporters(&mut self) {
        if let Some(e) = self.exporters.as_mut() {
            e.stop().await;
        }
    }

    /// Register LANs joined and left with the bulletin through this sender.
    pub fn follow_membership(&mut self, lans: watch::Sender<LanJoins>) {
        self.membership = Some(lans);
    }

    /// (name, segment, verifier) of each LAN of `cfg`, as the bulletin registration takes them.
    pub fn lan_joins(cfg: &Config, secrets: &[[u8; 32]]) -> LanJoins {
        cfg.lans
            .iter()
            .zip(secrets)
            .map(|(l, s)| {
                (
                    l.name.get_ref().0.clone(),
                    l.segment.to_string(),
                    bulletin::proof::Verifier::from_secret(s),
                )
            })
            .collect()
    }

    /// The limits of every LAN of `cfg`, as the inventory takes them.
    pub fn lan_limits(cfg: &Config) -> Vec<LanLimits> {
        cfg.lans
            .iter()
            .map(|lan| LanLimits {
                lan: lan.name.get_ref().0.clone(),
                by_mac: lan.limit_specs(),
                by_vm: lan.vm_limit_specs(),
            })
            .collect()
    }

    /// Read the file again and apply what changed (or, with `dry_run`, only say what).
    pub async fn reload(&mut self, dry_run: bool) -> ReloadReport {
        let mut report = ReloadReport {
            file: self.path.display().to_string(),
            dry_run,
            applied: false,
            refused: None,
            changes: Vec::new(),
            rules: 0,
        };
        let cand = match self.read() {
            Ok(c) => c,
            Err(why) => {
                report.refused = Some(why);
                return report;
            }
        };
        report.rules = cand.rules.len();
        let refused: Vec<&Change> = cand.changes.iter().filter(|c| !c.is_live()).collect();
        if !refused.is_empty() {
            let list: Vec<String> = refused.iter().map(ToString::to_string).collect();
            report.refused = Some(format!(
                "{} change(s) need a restart, so nothing was applied: {}",
                refused.len(),
                list.join("; ")
            ));
        }
        report.changes = cand.changes.clone();
        if dry_run || report.refused.is_some() {
            return report;
        }
        if let Err(why) = self.apply(&cand).await {
            report.refused = Some(why);
            return report;
        }
        let Candidate {
            text, cfg, secrets, ..
        } = cand;
        (self.text, self.cfg, self.secrets) = (text, cfg, secrets);
        report.applied = true;
        report
    }

    /// The new file, parsed and checked, its secrets and rules read, compared.
    fn read(&self) -> Result<Candidate, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let cfg = Config::parse(&text, &self.path).map_err(|e| e.to_string())?;
        let rules = cfg
            .alarms
            .load()
            .map_err(|e| format!("alarm rules refused: {e}"))?;
        let secrets = (0..cfg.lans.len())
            .map(|i| cfg.read_secret(i, Some(&text)).map(|s| s.0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut changes = diff::changes(&self.text, &text)?;
        // A secret file rewritten in place is a change the file's text does not show.
        for (lan, secret) in cfg.lans.iter().zip(&secrets) {
            let name = &lan.name.get_ref().0;
            let key = format!("lan.{name}.secret");
            let before = self
                .cfg
                .lans
                .iter()
                .position(|l| &l.name.get_ref().0 == name)
                .map(|i| self.secrets[i]);
            if before.is_some_and(|b| b != *secret) {
                changes.push(Change {
                    key,
                    kind: ChangeKind::Changed,
                    apply: Err("a LAN's secret cannot change while the daemon runs: restart it (its tunnels re-key)".into()),
                });
            }
        }
        Ok(Candidate {
            text,
            cfg,
            secrets,
            rules,
            changes,
        })
    }

    /// Put every (live) change of `cand` in force.
    async fn apply(&mut self, cand: &Candidate) -> Result<(), String> {
        let gone = || "the data plane is shutting down".to_string();
        let wants = |a: Apply| cand.changes.iter().any(|c| c.apply == Ok(a));
        if wants(Apply::Lans) {
            self.apply_lans(cand).await?;
        }
        let old_lans = &self.cfg.lans;
        for lan in &cand.cfg.lans {
            let name = &lan.name.get_ref().0;
            let Some(old) = old_lans.iter().find(|l| &l.name.get_ref().0 == name) else {
                continue;
            };
            for addr in old.peers.iter().filter(|a| !lan.peers.contains(a)) {
                info!(lan = %name, peer = %addr, "reload: static peer removed");
                self.peer(name, *addr, false)?;
            }
            for addr in lan.peers.iter().filter(|a| !old.peers.contains(a)) {
                info!(lan = %name, peer = %addr, "reload: static peer added");
                self.peer(name, *addr, true)?;
            }
        }
        if wants(Apply::Limits) {
            let lans = Self::lan_limits(&cand.cfg);
            // With libvirt, limits naming VMs resolve through the names read last.
            let resolved = match &self.libvirt {
                Some((inv, _)) => inv
                    .lock()
                    .map(|i| i.resolve(&lans).0)
                    .map_err(|_| "the libvirt inventory failed; see the log".to_string())?,
                None => lans
                    .iter()
                    .map(|l| (l.lan.clone(), l.by_mac.clone()))
                    .collect(),
            };
            for (lan, specs) in resolved {
                let n = specs.len();
                let request = |reply| Request::SetLimits {
                    lan: lan.clone(),
                    specs,
                    reply,
                };
                self.dp.call(request).await.ok_or_else(gone)??;
                info!(lan = %lan, limits = n, "reload: rate limits in force");
            }
            if let Some((_, tx)) = &self.libvirt {
                let _ = tx.send(lans);
            }
        }
        if wants(Apply::Services) {
            for lan in &cand.cfg.lans {
                let name = lan.name.get_ref().0.clone();
                if !old_lans.iter().any(|l| l.name.get_ref().0 == name) {
                    continue; // joined above, with its services
                }
                let specs = lan.service_specs();
                let n = specs.len();
                let request = |reply| Request::SetServices {
                    lan: name.clone(),
                    specs,
                    reply,
                };
                self.dp.call(request).await.ok_or_else(gone)??;
                info!(lan = %name, services = n, "reload: services in force");
            }
        }
        if wants(Apply::Exports) {
            let sampling = crate::export::sampling(&cand.cfg);
            self.dp
                .call(|reply| Request::SetSampling { sampling, reply })
                .await
                .ok_or_else(gone)?;
            if let Some(e) = self.exporters.as_mut() {
                e.restart(&cand.cfg).await;
            }
            info!("reload: exporters restarted with the new [export]");
        }
        if wants(Apply::Telemetry) {
            let accounting = cand.cfg.telemetry.accounting();
            self.dp
                .call(|reply| Request::SetAccounting { accounting, reply })
                .await
                .ok_or_else(gone)?;
            info!("reload: telemetry settings in force (VM and flow tables start anew)");
        }
        // Read again on every reload: the rules file may change while host.toml does not.
        if self.rules.send(cand.rules.clone()).await.is_err() {
            warn!("reload: the alarm task is gone; rules not replaced");
        } else {
            info!(rules = cand.rules.len(), "reload: alarm rules in force");
        }
        Ok(())
    }

    /// LANs left and joined. Every new TAP is opened first, so one that cannot be (a
    /// bridge that does not exist, a name held elsewhere) refuses the reload before any
    /// LAN is touched; a TAP name a leaving LAN still holds is opened after it left.
    async fn apply_lans(&mut self, cand: &Candidate) -> Result<(), String> {
        let gone = || "the data plane is shutting down".to_string();
        let name = |l: &crate::config::LanConfig| l.name.get_ref().0.clone();
        let leaving: Vec<&crate::config::LanConfig> = self
            .cfg
            .lans
            .iter()
            .filter(|o| !cand.cfg.lans.iter().any(|n| name(n) == name(o)))
            .collect();
        let joining: Vec<usize> = (0..cand.cfg.lans.len())
            .filter(|&i| {
                !self
                    .cfg
                    .lans
                    .iter()
                    .any(|o| name(o) == name(&cand.cfg.lans[i]))
            })
            .collect();
        let freed_by_leaving = |i: usize| {
            leaving
                .iter()
                .any(|o| o.tap.get_ref() == cand.cfg.lans[i].tap.get_ref())
        };
        let open = |i: usize| {
            crate::io::lan::open(&cand.cfg, i, LanSecret(cand.secrets[i]))
                .map_err(|e| format!("LAN {:?} not joined: {e}", name(&cand.cfg.lans[i])))
        };
        let mut opened: Vec<(crate::engine::LanSpec, TapDevice)> = Vec::new();
        for &i in joining.iter().filter(|&&i| !freed_by_leaving(i)) {
            // On an error the TAPs opened so far close (and go) as `opened` drops.
            opened.push(open(i)?);
        }
        let multicast_if = match self.cfg.host.address.addr {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        };
        for lan in &leaving {
            let lan = name(lan);
            self.dp
                .call(|reply| Request::RemoveLan {
                    lan: lan.clone(),
                    multicast_if,
                    reply,
                })
                .await
                .ok_or_else(gone)??;
            info!(lan = %lan, "reload: LAN left, its TAP removed");
        }
        for &i in joining.iter().filter(|&&i| freed_by_leaving(i)) {
            opened.push(open(i)?);
        }
        for (spec, tap) in opened {
            let lan = spec.name.clone();
            let tap_name = tap.name().to_string();
            self.dp
                .call(|reply| Request::AddLan {
                    spec: Box::new(spec),
                    tap,
                    multicast_if,
                    reply,
                })
                .await
                .ok_or_else(gone)??;
            info!(lan = %lan, tap = %tap_name, "reload: LAN joined");
        }
        if let Some(tx) = &self.membership {
            let _ = tx.send(Self::lan_joins(&cand.cfg, &cand.secrets));
        }
        if let Some((_, tx)) = &self.libvirt {
            let _ = tx.send(Self::lan_limits(&cand.cfg));
        }
        Ok(())
    }

    fn peer(&self, lan: &str, addr: std::net::SocketAddr, add: bool) -> Result<(), String> {
        let sent = self.dp.tell(Request::Peer {
            lan: lan.to_string(),
            addr,
            host_id: None,
            others: Vec::new(),
            add,
            prefix: None,
            source: PeerSource::Static,
        });
        sent.then_some(())
            .ok_or_else(|| "the data plane is shutting down".into())
    }
}

/// Log what a reload did, for SIGHUP (whose sender sees no answer).
pub fn log(report: &ReloadReport) {
    match &report.refused {
        Some(why) => warn!("reload refused; the running config stays: {why}"),
        None => {
            let keys: Vec<&str> = report.changes.iter().map(|c| c.key.as_str()).collect();
            info!(changes = ?keys, rules = report.rules, "reload applied");
        }
    }
}
