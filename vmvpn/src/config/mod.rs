//! `host.toml`: the daemon's configuration, one file per section (`host`, `lan`,
//! `telemetry`, `alarms`, `export`, `web`, `libvirt`, `registry` for `[bulletin]`), one error type and
//! one range table (`limits`) for all.
//!
//! Values are checked while parsing, so every error names the file, the line and the key
//! and says what is expected. Unknown keys are errors (a typo must not be ignored).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use toml::Spanned;

use crate::proto::crypto::LanSecret;

mod alarms;
pub mod diff;
mod export;
mod host;
mod lan;
mod libvirt;
pub mod limits;
mod registry;
mod relay;
mod service;
mod telemetry;
#[cfg(test)]
mod tests;
mod values;
mod web;

pub use alarms::*;
pub use export::*;
pub use host::*;
pub use lan::*;
pub use libvirt::*;
pub use registry::*;
pub use relay::*;
pub use service::*;
pub use telemetry::*;
pub use values::*;

/// Default UDP data port.
pub const DEFAULT_PORT: u16 = 7401;
/// Default multicast range: 239.77.0.0/16, inside the administratively scoped 239/8.
pub const DEFAULT_MULTICAST_BASE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 77, 0, 0);
/// Prefix length of the default multicast range.
pub const DEFAULT_MULTICAST_PREFIX: u8 = 16;

/// Why a config could not be used: the same type as the bulletin's.
pub use common::config::ConfigError;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[host]`.
    pub host: HostConfig,
    /// `[bulletin]`: register with a bulletin board and take peers from it.
    pub bulletin: Option<BulletinSection>,
    /// `[[lan]]`, at least one.
    #[serde(rename = "lan", default)]
    pub lans: Vec<LanConfig>,
    /// `[telemetry]`: what is measured beyond counters.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// `[alarms]`: the rules the daemon evaluates every second.
    #[serde(default)]
    pub alarms: AlarmsConfig,
    /// `[export.sflow]`, `[export.ipfix]`, `[export.redis]`: standard exports.
    #[serde(default)]
    pub export: ExportConfig,
    /// `[libvirt]`: VM names from libvirt's domains.
    pub libvirt: Option<LibvirtConfig>,
    /// `[web]`: the dashboard's login, needed when `[host] web` is not a loopback address.
    pub web: Option<Spanned<bulletin::web::auth::WebConfig>>,
    #[serde(skip)]
    path: PathBuf,
}

fn yes() -> bool {
    true
}
fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

impl Config {
    /// Read and check a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Parse and check config text; `path` is used in messages and to resolve nothing else.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: common::config::clip_lines(&e.to_string(), 160),
        })?;
        cfg.path = path.to_path_buf();
        cfg.check(text)?;
        Ok(cfg)
    }

    fn invalid(
        &self,
        text: &str,
        span: std::ops::Range<usize>,
        key: String,
        message: String,
    ) -> ConfigError {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        ConfigError::Invalid {
            path: self.path.clone(),
            line,
            key,
            message,
        }
    }

    /// `v` within `range`, or an error naming the line and key with the range.
    fn in_range<T>(
        &self,
        text: &str,
        v: &Spanned<T>,
        key: String,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<(), ConfigError>
    where
        T: Copy + Into<u64> + fmt::Display,
    {
        let x: u64 = (*v.get_ref()).into();
        if range.contains(&x) {
            return Ok(());
        }
        Err(self.invalid(
            text,
            v.span(),
            key,
            format!(
                "{} is out of range: expected {} to {}",
                v.get_ref(),
                range.start(),
                range.end()
            ),
        ))
    }

    fn check(&self, text: &str) -> Result<(), ConfigError> {
        self.check_alarms(text)?;
        self.check_export(text)?;
        self.check_web(text)?;
        self.check_host(text)?;
        self.check_relay(text)?;
        self.check_telemetry(text)?;
        self.check_libvirt(text)?;
        self.check_bulletin(text)?;
        self.check_lans(text)
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host id: `[host] id` or derived from the name.
    pub fn host_id(&self) -> u32 {
        self.host
            .id
            .unwrap_or_else(|| crate::proto::crypto::host_id(&self.host.name.0))
    }

    /// Where this host keeps state (`[host] state_dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.host
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/var/lib/vmvpn/{}", self.host.name)))
    }

    /// The control socket's path.
    pub fn control_socket(&self) -> PathBuf {
        self.host
            .control_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/vmvpn/{}.sock", self.host.name)))
    }

    /// Read the secret of LAN `i`, with an error that says how to fix it.
    pub fn read_secret(
        &self,
        i: usize,
        text_for_lines: Option<&str>,
    ) -> Result<LanSecret, ConfigError> {
        let lan = &self.lans[i];
        let path = lan.secret_file.get_ref();
        let fail = |message: String| {
            let line = text_for_lines
                .map(|t| {
                    t[..lan.secret_file.span().start.min(t.len())]
                        .matches('\n')
                        .count()
                        + 1
                })
                .unwrap_or(0);
            ConfigError::Invalid {
                path: self.path.clone(),
                line,
                key: format!("lan[{i}].secret_file"),
                message,
            }
        };
        bulletin::proof::read_secret_file(path)
            .map(LanSecret)
            .map_err(|m| {
                if m.starts_with("cannot read") {
                    fail(format!(
                        "{m} (create one with `vmvpn keygen > {}`)",
                        path.display()
                    ))
                } else {
                    fail(m)
                }
            })
    }

    /// The multicast group of LAN `i` (None: no IPv4 underlay, or flood = "unicast").
    pub fn multicast_group(&self, i: usize, lan_id: u32, port: u16) -> Option<SocketAddr> {
        if self.lans[i].flood == crate::engine::flood::FloodMode::Unicast
            || !self.host.address.addr.is_ipv4()
        {
            return None;
        }
        let (base, prefix) = match self.host.multicast_range.as_ref().map(|r| *r.get_ref()) {
            Some(Cidr {
                addr: IpAddr::V4(a),
                prefix,
            }) => (a, prefix),
            _ => (DEFAULT_MULTICAST_BASE, DEFAULT_MULTICAST_PREFIX),
        };
        Some(crate::engine::flood::group_for(lan_id, base, prefix, port))
    }

    /// MAC ageing of LAN `i`.
    pub fn mac_age(&self, i: usize) -> Duration {
        Duration::from_secs(*self.lans[i].mac_age_s.get_ref())
    }

    /// MAC database capacity of LAN `i`.
    pub fn mac_capacity(&self, i: usize) -> usize {
        usize::try_from(*self.lans[i].mac_capacity.get_ref()).unwrap_or(usize::MAX)
    }
}
