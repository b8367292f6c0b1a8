//! `[export.sflow]`, `[export.ipfix]`, `[export.redis]`: what leaves for the collectors.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use toml::Spanned;

use super::*;

/// `[export]`: what leaves the host for the collectors operators already run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// sFlow v5: sampled frames and interface counters.
    pub sflow: Option<SflowConfig>,
    /// IPFIX: a biflow record per flow.
    pub ipfix: Option<IpfixConfig>,
    /// The live state into Redis.
    pub redis: Option<RedisConfig>,
}

/// `[export.sflow]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SflowConfig {
    /// Collectors, `ADDR:PORT` (sFlow's port is 6343).
    pub collectors: Spanned<Vec<SocketAddr>>,
    /// Sample 1 in this many frames crossing the TAPs (default 512).
    #[serde(default = "default_sampling")]
    pub sampling_rate: Spanned<u64>,
    /// Seconds between counter samples of each TAP and tunnel (default 20).
    #[serde(default = "default_polling")]
    pub polling_interval_s: Spanned<u64>,
    /// The agent address in each datagram (default: `[host] address`).
    pub agent_address: Option<IpAddr>,
}

/// `[export.ipfix]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpfixConfig {
    /// Collectors, `ADDR:PORT` over UDP (IPFIX's port is 4739).
    pub collectors: Spanned<Vec<SocketAddr>>,
    /// A flow still running this long after its last record gets another (default 60).
    #[serde(default = "default_active")]
    pub active_timeout_s: Spanned<u64>,
    /// Templates are sent again this often (default 60; also with the first message).
    #[serde(default = "default_refresh")]
    pub template_refresh_s: Spanned<u64>,
}

/// `[export.redis]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]HOST[:PORT][/DB]`.
    pub url: Spanned<String>,
    /// Seconds between writes of the live state (default 5).
    #[serde(default = "default_redis_interval")]
    pub interval_s: Spanned<u64>,
    /// Prefix of every key (default `vmvpn`).
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// Entries the event stream keeps, about (default 10000).
    #[serde(default = "default_stream_len")]
    pub stream_maxlen: Spanned<u64>,
}

fn default_sampling() -> Spanned<u64> {
    unspanned(512)
}
fn default_polling() -> Spanned<u64> {
    unspanned(20)
}
fn default_active() -> Spanned<u64> {
    unspanned(60)
}
fn default_refresh() -> Spanned<u64> {
    unspanned(60)
}
fn default_redis_interval() -> Spanned<u64> {
    unspanned(5)
}
fn default_redis_prefix() -> String {
    "vmvpn".into()
}
fn default_stream_len() -> Spanned<u64> {
    unspanned(10_000)
}

impl Config {
    /// `[export.*]`: numbers in range, at least one collector, a redis:// URL.
    pub(super) fn check_export(&self, text: &str) -> Result<(), ConfigError> {
        use super::limits::*;
        let e = &self.export;
        if let Some(x) = &e.sflow {
            self.in_range(
                text,
                &x.sampling_rate,
                "export.sflow.sampling_rate".into(),
                SAMPLING_RATE,
            )?;
            self.in_range(
                text,
                &x.polling_interval_s,
                "export.sflow.polling_interval_s".into(),
                POLLING_S,
            )?;
            if x.collectors.get_ref().is_empty() {
                return Err(self.invalid(
                    text,
                    x.collectors.span(),
                    "export.sflow.collectors".into(),
                    "name at least one collector, e.g. collectors = [\"10.0.0.9:6343\"]".into(),
                ));
            }
        }
        if let Some(x) = &e.ipfix {
            self.in_range(
                text,
                &x.active_timeout_s,
                "export.ipfix.active_timeout_s".into(),
                ACTIVE_TIMEOUT_S,
            )?;
            self.in_range(
                text,
                &x.template_refresh_s,
                "export.ipfix.template_refresh_s".into(),
                TEMPLATE_REFRESH_S,
            )?;
            if x.collectors.get_ref().is_empty() {
                return Err(self.invalid(
                    text,
                    x.collectors.span(),
                    "export.ipfix.collectors".into(),
                    "name at least one collector, e.g. collectors = [\"10.0.0.9:4739\"]".into(),
                ));
            }
        }
        if let Some(x) = &e.redis {
            self.in_range(
                text,
                &x.interval_s,
                "export.redis.interval_s".into(),
                REDIS_INTERVAL_S,
            )?;
            self.in_range(
                text,
                &x.stream_maxlen,
                "export.redis.stream_maxlen".into(),
                STREAM_MAXLEN,
            )?;
            if !x.url.get_ref().starts_with("redis://") {
                return Err(self.invalid(
                    text,
                    x.url.span(),
                    "export.redis.url".into(),
                    format!(
                        "{}: expected redis://HOST[:PORT][/DB] (TLS, rediss://, is not supported)",
                        common::config::clip_value(x.url.get_ref(), 80)
                    ),
                ));
            }
        }
        Ok(())
    }
}
