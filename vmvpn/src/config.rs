//! `host.toml`: the daemon's configuration.
//!
//! Values are checked while parsing, so every error names the file, the line and the key
//! and says what is expected. Unknown keys are errors (a typo must not be ignored).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use crate::proto::crypto::LanSecret;

/// Default UDP data port.
pub const DEFAULT_PORT: u16 = 7401;
/// Default multicast range: 239.77.0.0/16, inside the administratively scoped 239/8.
pub const DEFAULT_MULTICAST_BASE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 77, 0, 0);
/// Prefix length of the default multicast range.
pub const DEFAULT_MULTICAST_PREFIX: u8 = 16;

/// The documented range of every number in `host.toml` (README, "Security and limits").
/// `check` and `up` enforce them alike, so an accepted config never aborts on allocation
/// or overflows a duration.
pub mod limits {
    use std::ops::RangeInclusive;
    /// `[host] port`: 0 would bind a random port that no peer knows.
    pub const PORT: RangeInclusive<u64> = 1..=65_535;
    /// `[host] underlay_mtu`.
    pub const UNDERLAY_MTU: RangeInclusive<u64> = 576..=65_535;
    /// `[[lan]] mtu` (up to jumbo frames; larger frames are cut into overlay fragments).
    pub const TAP_MTU: RangeInclusive<u64> = 576..=9_000;
    /// `[[lan]] mac_capacity` (the table is allocated up front).
    pub const MAC_CAPACITY: RangeInclusive<u64> = 1..=1_048_576;
    /// `[[lan]] mac_age_s`.
    pub const MAC_AGE_S: RangeInclusive<u64> = 1..=86_400;
    /// `[telemetry] vm_table_size` (the VM matrix holds four times as many pairs).
    pub const VM_TABLE: RangeInclusive<u64> = 1..=65_536;
    /// `[telemetry] flow_table_size`.
    pub const FLOW_TABLE: RangeInclusive<u64> = 1..=1_048_576;
    /// `[telemetry] flow_idle_s`.
    pub const FLOW_IDLE_S: RangeInclusive<u64> = 1..=86_400;
    /// `[telemetry] report_interval_s` (0: no reports).
    pub const REPORT_INTERVAL_S: RangeInclusive<u64> = 0..=3_600;
    /// `[telemetry] link_speed_mbps` (up to 10 Tbit/s).
    pub const LINK_SPEED_MBPS: RangeInclusive<u64> = 1..=10_000_000;
    /// Prefix length of `[host] multicast_range`.
    pub const MULTICAST_PREFIX: RangeInclusive<u64> = 8..=32;
    /// `[export.sflow] sampling_rate` (1: every frame).
    pub const SAMPLING_RATE: RangeInclusive<u64> = 1..=16_777_215;
    /// `[export.sflow] polling_interval_s`.
    pub const POLLING_S: RangeInclusive<u64> = 1..=3_600;
    /// `[export.ipfix] active_timeout_s`.
    pub const ACTIVE_TIMEOUT_S: RangeInclusive<u64> = 1..=86_400;
    /// `[export.ipfix] template_refresh_s`.
    pub const TEMPLATE_REFRESH_S: RangeInclusive<u64> = 1..=3_600;
    /// `[export.redis] interval_s`.
    pub const REDIS_INTERVAL_S: RangeInclusive<u64> = 1..=3_600;
    /// `[export.redis] stream_maxlen`.
    pub const STREAM_MAXLEN: RangeInclusive<u64> = 1..=10_000_000;
}

/// Why a config could not be used: the same type as the bulletin's.
pub use bulletin::config::ConfigError;

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
    /// `[web]`: the dashboard's login, needed when `[host] web` is not a loopback address.
    pub web: Option<Spanned<bulletin::web::auth::WebConfig>>,
    #[serde(skip)]
    path: PathBuf,
}

/// `[host]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Host name, 1–32 of `A-Z a-z 0-9 . _ -`.
    pub name: Name,
    /// 32-bit host id; derived from the name when absent.
    pub id: Option<u32>,
    /// Underlay address with prefix length (its physical subnet), e.g. `10.77.1.1/24`.
    pub address: Cidr,
    /// UDP data port.
    #[serde(default = "default_port")]
    pub port: Spanned<u16>,
    /// Address the data socket binds to (default: all addresses).
    pub bind: Option<IpAddr>,
    /// Control socket path (default `/run/vmvpn/<name>.sock`).
    pub control_socket: Option<PathBuf>,
    /// Prometheus endpoint: `/metrics` over HTTP.
    pub metrics: Option<SocketAddr>,
    /// Where this host keeps what must outlive a restart (its dashboard's certificate);
    /// default `/var/lib/vmvpn/<name>`, created when first needed.
    pub state_dir: Option<PathBuf>,
    /// The web dashboard of this host's view. A loopback address serves plain HTTP to
    /// this machine; any other serves HTTPS (with a certificate made once and kept in
    /// `state_dir`) and the login of `[web]`.
    pub web: Option<Spanned<SocketAddr>>,
    /// Underlay MTU; detected from the interface holding `address` when absent.
    pub underlay_mtu: Option<Spanned<u16>>,
    /// Administratively scoped IPv4 range for the LANs' multicast groups.
    pub multicast_range: Option<Spanned<Cidr>>,
    /// TAP offloads: the kernel hands over 64 KB TCP frames that vmvpn segments itself,
    /// and the segments leave in one UDP GSO send. Off: one frame per read and per send.
    #[serde(default = "yes")]
    pub offload: bool,
    /// Run the data-plane thread with real-time scheduling (SCHED_FIFO, priority 10), as
    /// the kernel's own forwarding runs ahead of processes: under load, frames do not wait
    /// a scheduler slice behind busy processes. Needs root or CAP_SYS_NICE (else normal
    /// priority, with a warning); the kernel's RT throttling keeps 5 % for everyone else.
    /// Off by default: where cores are few it preempts the VMs' own work at every frame
    /// (on 2 shared cores it halved the small-packet rate while it cut the ping under a
    /// bulk transfer by 4x; see the README's benchmark).
    #[serde(default)]
    pub realtime: bool,
}

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

/// `[alarms]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// A rules file (README, "Alarms"); without it the default rules apply. Reloaded on
    /// SIGHUP; a file with an error is refused and the running rules stay.
    pub rules: Option<PathBuf>,
    /// Alertmanager API base URLs (`http://10.0.0.5:9093`, or `https://`): alerts are
    /// pushed to `/api/v2/alerts` as Prometheus does.
    #[serde(default)]
    pub alertmanager: Vec<HttpUrl>,
    /// Webhook URLs: Alertmanager's webhook JSON (version 4) is POSTed to each.
    #[serde(default)]
    pub webhook: Vec<HttpUrl>,
    /// A program run for each notification, with the webhook JSON on stdin.
    pub exec: Option<PathBuf>,
    /// A CA certificate (PEM) trusted for `https://` Alertmanager and webhook URLs, for an
    /// internal CA; the public roots are trusted either way.
    pub ca_file: Option<Spanned<PathBuf>>,
    /// `[alarms.email]`: one email per notification.
    pub email: Option<EmailConfig>,
}

/// `[alarms.email]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server, `HOST:PORT` (STARTTLS is used where it offers it).
    pub smtp: SmtpServer,
    /// The sender, `vmvpn@example.org` or `vmvpn <vmvpn@example.org>`.
    pub from: MailAddress,
    /// The recipients (at least one).
    #[serde(deserialize_with = "recipients")]
    pub to: Vec<MailAddress>,
    /// A CA certificate (PEM) to check the server's STARTTLS certificate against, for an
    /// internal CA; without it, the public roots.
    pub ca_file: Option<PathBuf>,
}

/// `HOST:PORT`, checked while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer(pub String, pub u16);

impl<'de> Deserialize<'de> for SmtpServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || de::Error::custom(format!("`{s}`: expected HOST:PORT, e.g. \"10.0.0.7:25\""));
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(SmtpServer(host.to_string(), port))
    }
}

/// An email address, checked while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAddress(pub String);

impl<'de> Deserialize<'de> for MailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<lettre::message::Mailbox>()
            .map_err(|e| de::Error::custom(format!("`{s}` is not an email address: {e}")))?;
        Ok(MailAddress(s))
    }
}

/// The certificates of a PEM file (`[alarms] ca_file`): at least one, or why not.
pub fn load_ca_file(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// `to` of `[alarms.email]`: an empty list would send every mail to nobody, silently.
fn recipients<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MailAddress>, D::Error> {
    let to = Vec::<MailAddress>::deserialize(d)?;
    if to.is_empty() {
        return Err(de::Error::custom(
            "no recipient: give at least one address, e.g. to = [\"ops@example.org\"], or remove [alarms.email]",
        ));
    }
    Ok(to)
}

/// An `http://` or `https://` URL, checked while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub hyper::Uri);

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let u: hyper::Uri = s
            .parse()
            .map_err(|e| de::Error::custom(format!("`{s}` is not a URL: {e}")))?;
        if !matches!(u.scheme_str(), Some("http" | "https")) || u.host().is_none() {
            return Err(de::Error::custom(format!(
                "`{s}`: expected http://HOST:PORT[/path] or https://HOST:PORT[/path]"
            )));
        }
        Ok(HttpUrl(u))
    }
}

impl AlarmsConfig {
    /// Where notifications go.
    pub fn receivers(&self) -> crate::alarms::notify::Receivers {
        crate::alarms::notify::Receivers {
            alertmanager: self.alertmanager.iter().map(|u| u.0.clone()).collect(),
            webhook: self.webhook.iter().map(|u| u.0.clone()).collect(),
            exec: self.exec.clone(),
            ca_file: self.ca_file.as_ref().map(|p| p.get_ref().clone()),
            email: self.email.as_ref().map(|e| crate::alarms::notify::Email {
                host: e.smtp.0.clone(),
                port: e.smtp.1,
                from: e.from.0.clone(),
                to: e.to.iter().map(|t| t.0.clone()).collect(),
                ca_file: e.ca_file.clone(),
            }),
        }
    }

    /// The rules: the file's, or the default ones.
    pub fn load(&self) -> Result<Vec<crate::alarms::rules::Rule>, ConfigError> {
        match &self.rules {
            Some(p) => crate::alarms::rules::load(p),
            None => Ok(crate::alarms::rules::defaults()),
        }
    }
}

/// `[telemetry]`. Everything is on by default; turning parts off is for measuring their
/// cost or for very constrained hosts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Probe each tunnel about once a second (RTT, jitter, loss each way, health).
    #[serde(default = "yes")]
    pub probes: bool,
    /// Per-VM traffic, the VM matrix and the flow table (looks into each frame).
    #[serde(default = "yes")]
    pub flows: bool,
    /// The underlay link speed in Mbit/s: adds utilisation to status and metrics.
    pub link_speed_mbps: Option<Spanned<u64>>,
    /// VMs tracked per LAN (least recently active evicted beyond).
    #[serde(default = "default_vm_table")]
    pub vm_table_size: Spanned<u64>,
    /// Flows tracked per LAN.
    #[serde(default = "default_flow_table")]
    pub flow_table_size: Spanned<u64>,
    /// Seconds without a frame before a flow is forgotten.
    #[serde(default = "default_flow_idle")]
    pub flow_idle_s: Spanned<u64>,
    /// Seconds between reports to the bulletin (0: none); needs `[bulletin]`.
    #[serde(default = "default_report")]
    pub report_interval_s: Spanned<u64>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            probes: true,
            flows: true,
            link_speed_mbps: None,
            vm_table_size: default_vm_table(),
            flow_table_size: default_flow_table(),
            flow_idle_s: default_flow_idle(),
            report_interval_s: default_report(),
        }
    }
}

impl TelemetryConfig {
    /// What the forwarding core measures.
    pub fn accounting(&self) -> crate::engine::Accounting {
        let d = crate::engine::Accounting::default();
        let vms = usize::try_from(*self.vm_table_size.get_ref()).unwrap_or(usize::MAX);
        crate::engine::Accounting {
            probes: self.probes,
            flows: self.flows,
            vms,
            pairs: vms.saturating_mul(4),
            flow_cap: usize::try_from(*self.flow_table_size.get_ref()).unwrap_or(usize::MAX),
            flow_idle_s: *self.flow_idle_s.get_ref(),
            port_series: d.port_series,
            link_speed_bps: self
                .link_speed_mbps
                .as_ref()
                .map(|m| m.get_ref().saturating_mul(1_000_000)),
        }
    }

    /// Seconds between reports to the bulletin, if any.
    pub fn report_every(&self) -> Option<Duration> {
        let s = *self.report_interval_s.get_ref();
        (s > 0).then(|| Duration::from_secs(s))
    }
}

fn yes() -> bool {
    true
}
fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}
fn default_vm_table() -> Spanned<u64> {
    unspanned(telemetry::vms::DEFAULT_VMS as u64)
}
fn default_flow_table() -> Spanned<u64> {
    unspanned(telemetry::flows::DEFAULT_FLOWS as u64)
}
fn default_flow_idle() -> Spanned<u64> {
    unspanned(telemetry::flows::DEFAULT_IDLE_S)
}
fn default_report() -> Spanned<u64> {
    unspanned(5)
}

fn default_port() -> Spanned<u16> {
    unspanned(DEFAULT_PORT)
}

/// `[bulletin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulletinSection {
    /// The bulletin's QUIC address, `ADDRESS:PORT`.
    pub server: SocketAddr,
    /// Its certificate fingerprint, as `bulletin fingerprint` prints it.
    pub fingerprint: Fingerprint,
}

/// A `sha256:…` certificate fingerprint, checked while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(pub String);

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        bulletin::tls::parse_fingerprint(&s).map_err(de::Error::custom)?;
        Ok(Fingerprint(s))
    }
}

/// `[[lan]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanConfig {
    /// LAN name; the same on every host of the LAN.
    pub name: Spanned<Name>,
    /// Virtual segment, e.g. `192.168.100.0/24` (informational until the bulletin).
    pub segment: Cidr,
    /// TAP device name, at most 15 bytes.
    pub tap: Spanned<IfName>,
    /// File holding the LAN secret (base64 of 32 bytes, as `vmvpn keygen` prints).
    pub secret_file: Spanned<PathBuf>,
    /// Static peers, `ADDRESS:PORT`.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// TAP MTU; 1500 when absent (576 to 9000).
    pub mtu: Option<Spanned<u16>>,
    /// Linux bridge to attach the TAP to (it must exist).
    pub bridge: Option<IfName>,
    /// Keep the TAP after exit (make it persistent) instead of removing it.
    #[serde(default)]
    pub keep_tap: bool,
    /// How floods travel: "auto" (default), "multicast" or "unicast".
    #[serde(default)]
    pub flood: crate::engine::flood::FloodMode,
    /// MAC database capacity.
    #[serde(default = "default_mac_capacity")]
    pub mac_capacity: Spanned<u64>,
    /// Seconds before an unseen MAC is forgotten.
    #[serde(default = "default_mac_age")]
    pub mac_age_s: Spanned<u64>,
    /// "aes-256-gcm" (default) or "none" (no encryption, no authentication of frames).
    #[serde(default)]
    pub cipher: crate::proto::crypto::Cipher,
}

fn default_mac_capacity() -> Spanned<u64> {
    unspanned(crate::engine::macdb::DEFAULT_CAPACITY as u64)
}
fn default_mac_age() -> Spanned<u64> {
    unspanned(crate::engine::macdb::DEFAULT_MAX_AGE.as_secs())
}

/// A host or LAN name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if !ok {
            return Err(de::Error::custom(format!(
                "invalid name {}: expected 1 to 32 characters of A-Z a-z 0-9 . _ -",
                bulletin::config::clip_value(&s, 40)
            )));
        }
        Ok(Name(s))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A network interface name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfName(pub String);

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = (1..=15).contains(&s.len())
            && s.bytes()
                .all(|c| c.is_ascii_graphic() && c != b'/' && c != b':')
            && s != "."
            && s != "..";
        if !ok {
            return Err(de::Error::custom(format!(
                "invalid interface name {}: expected 1 to 15 printable characters without '/', ':' or spaces",
                bulletin::config::clip_value(&s, 40)
            )));
        }
        Ok(IfName(s))
    }
}

/// An address with a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected an address with prefix length, like 10.77.1.1/24";
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: missing /prefix; {expected}"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address; {expected}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix {p:?} is not 0..={max}; {expected}"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
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
            message: bulletin::config::clip_lines(&e.to_string(), 160),
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

    /// The dashboard's credentials: none on loopback, `[web]`'s elsewhere (checked).
    pub fn web_credentials(&self) -> Option<bulletin::web::auth::Credentials> {
        let remote = self
            .host
            .web
            .as_ref()
            .is_some_and(|a| !a.get_ref().ip().is_loopback());
        let w = self.web.as_ref()?;
        remote
            .then(|| bulletin::web::auth::Credentials::load(w.get_ref()).ok())
            .flatten()
    }

    fn check(&self, text: &str) -> Result<(), ConfigError> {
        use limits::*;
        if let Some(ca) = &self.alarms.ca_file {
            load_ca_file(ca.get_ref())
                .map_err(|m| self.invalid(text, ca.span(), "alarms.ca_file".into(), m))?;
        }
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
                        bulletin::config::clip_value(x.url.get_ref(), 80)
                    ),
                ));
            }
        }
        if let Some(w) = &self.web {
            bulletin::web::auth::Credentials::load(w.get_ref())
                .map_err(|m| self.invalid(text, w.span(), "web.password_file".into(), m))?;
        }
        if let Some(a) = &self.host.web
            && !a.get_ref().ip().is_loopback()
            && self.web.is_none()
        {
            return Err(self.invalid(
                text,
                a.span(),
                "host.web".into(),
                format!(
                    "{} is not a loopback address: the dashboard there needs a login; add [web] \
                     with user and password_file, or listen on 127.0.0.1",
                    a.get_ref()
                ),
            ));
        }
        self.in_range(text, &self.host.port, "host.port".into(), PORT)?;
        if let Some(m) = &self.host.underlay_mtu {
            self.in_range(text, m, "host.underlay_mtu".into(), UNDERLAY_MTU)?;
        }
        let t = &self.telemetry;
        self.in_range(
            text,
            &t.vm_table_size,
            "telemetry.vm_table_size".into(),
            VM_TABLE,
        )?;
        self.in_range(
            text,
            &t.flow_table_size,
            "telemetry.flow_table_size".into(),
            FLOW_TABLE,
        )?;
        self.in_range(
            text,
            &t.flow_idle_s,
            "telemetry.flow_idle_s".into(),
            FLOW_IDLE_S,
        )?;
        self.in_range(
            text,
            &t.report_interval_s,
            "telemetry.report_interval_s".into(),
            REPORT_INTERVAL_S,
        )?;
        if let Some(l) = &t.link_speed_mbps {
            self.in_range(text, l, "telemetry.link_speed_mbps".into(), LINK_SPEED_MBPS)?;
        }
        if let Some(r) = &self.host.multicast_range {
            let c = r.get_ref();
            let ok = matches!(c.addr, IpAddr::V4(a) if a.is_multicast())
                && MULTICAST_PREFIX.contains(&u64::from(c.prefix));
            if !ok {
                return Err(self.invalid(
                    text,
                    r.span(),
                    "host.multicast_range".into(),
                    format!("{c} is not an IPv4 multicast range with a prefix of {} to {}: expected e.g. 239.77.0.0/16 (administratively scoped)", MULTICAST_PREFIX.start(), MULTICAST_PREFIX.end()),
                ));
            }
        }
        if self.lans.is_empty() {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                line: text.lines().count().max(1),
                key: "lan".into(),
                message: "no [[lan]] section: a host must join at least one LAN".into(),
            });
        }
        for (i, lan) in self.lans.iter().enumerate() {
            for (j, other) in self.lans.iter().enumerate().take(i) {
                if other.name.get_ref() == lan.name.get_ref() {
                    return Err(self.invalid(
                        text,
                        lan.name.span(),
                        format!("lan[{i}].name"),
                        format!(
                            "LAN {} is already defined as lan[{j}]; each LAN appears once",
                            lan.name.get_ref()
                        ),
                    ));
                }
                if other.tap.get_ref() == lan.tap.get_ref() {
                    return Err(self.invalid(
                        text,
                        lan.tap.span(),
                        format!("lan[{i}].tap"),
                        format!(
                            "TAP {} is already used by lan[{j}]; each LAN needs its own TAP",
                            lan.tap.get_ref().0
                        ),
                    ));
                }
            }
            if let Some(mtu) = &lan.mtu {
                self.in_range(text, mtu, format!("lan[{i}].mtu"), TAP_MTU)?;
            }
            self.in_range(
                text,
                &lan.mac_capacity,
                format!("lan[{i}].mac_capacity"),
                MAC_CAPACITY,
            )?;
            self.in_range(
                text,
                &lan.mac_age_s,
                format!("lan[{i}].mac_age_s"),
                MAC_AGE_S,
            )?;
        }
        Ok(())
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

/// Parse a LAN secret file's text.
pub fn parse_secret(text: &str) -> Result<LanSecret, String> {
    bulletin::proof::parse_secret(text).map(LanSecret)
}

/// A fresh secret as base64, for `vmvpn keygen`.
pub fn generate_secret() -> Result<String, ring::error::Unspecified> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[host]
name = "h1"
address = "10.77.1.1/24"
control_socket = "/tmp/h1.sock"

[[lan]]
name = "lan1"
segment = "192.168.100.0/24"
tap = "vl1"
secret_file = "/etc/vmvpn/lan1.key"
peers = ["10.77.1.2:7401", "10.77.1.3:7401"]
"#;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("host.toml"))
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(GOOD, Path::new("host.toml")).expect("valid");
        assert_eq!(c.host.name.0, "h1");
        assert_eq!(*c.host.port.get_ref(), DEFAULT_PORT);
        assert_eq!(c.host.address.prefix, 24);
        assert_eq!(c.lans[0].peers.len(), 2);
        assert_eq!(c.lans[0].tap.get_ref().0, "vl1");
        assert_eq!(c.host_id(), crate::proto::crypto::host_id("h1"));
        assert_eq!(c.control_socket(), PathBuf::from("/tmp/h1.sock"));
        assert_eq!(c.mac_age(0), Duration::from_secs(300));
        assert_eq!(c.lans[0].flood, crate::engine::flood::FloodMode::Auto);
        let g = c.multicast_group(0, 0x0102_0304, 7401).expect("group");
        assert_eq!(g, SocketAddr::from(([239, 77, 3, 4], 7401)));
        let t = c.telemetry.accounting();
        assert!(t.probes && t.flows && t.link_speed_bps.is_none());
        assert!(
            c.host.offload && !c.host.realtime,
            "offloads on, real-time off by default"
        );
        let c = Config::parse(
            &GOOD.replace("[host]\n", "[host]\nrealtime = true\n"),
            Path::new("host.toml"),
        )
        .expect("valid");
        assert!(c.host.realtime);
        let c = Config::parse(
            &format!("{GOOD}\n[telemetry]\nprobes = false\nlink_speed_mbps = 1000\n"),
            Path::new("host.toml"),
        )
        .expect("valid");
        let t = c.telemetry.accounting();
        assert!(!t.probes && t.flows && t.link_speed_bps == Some(1_000_000_000));
        for (name, want) in [
            ("aes-256-gcm", crate::proto::crypto::Cipher::Aes256Gcm),
            ("none", crate::proto::crypto::Cipher::None),
        ] {
            let text = GOOD.replace(
                "tap = \"vl1\"",
                &format!("tap = \"vl1\"\ncipher = \"{name}\""),
            );
            let c = Config::parse(&text, Path::new("host.toml")).expect("valid");
            assert_eq!((c.lans[0].cipher, c.lans[0].cipher.name()), (want, name));
        }
        let e = err(&GOOD.replace("tap = \"vl1\"", "tap = \"vl1\"\ncipher = \"rot13\""));
        assert!(e.contains("aes-256-gcm") && e.contains("none"), "{e}");
        let e = err(&format!("{GOOD}\n[telemetry]\nflow = false\n"));
        assert!(e.contains("unknown field `flow`"), "{e}");
        let e = err(&GOOD.replace("[host]\n", "[host]\nmulticast_range = \"10.0.0.0/8\"\n"));
        assert!(e.contains("not an IPv4 multicast range"), "{e}");
        let e = err(&GOOD.replace("tap = \"vl1\"", "tap = \"vl1\"\nflood = \"sometimes\""));
        assert!(
            e.contains("unknown variant `sometimes`") && e.contains("line 11"),
            "{e}"
        );
    }

    #[test]
    fn every_number_out_of_range_is_refused_with_its_line_and_range() {
        let cases: &[(&str, &str, &str)] = &[
            ("[host]\n", "[host]\nport = 0\n", "`host.port`"),
            (
                "[host]\n",
                "[host]\nunderlay_mtu = 100\n",
                "`host.underlay_mtu`",
            ),
            (
                "[host]\n",
                "[host]\nmulticast_range = \"239.0.0.0/4\"\n",
                "`host.multicast_range`",
            ),
            (
                "tap = \"vl1\"",
                "tap = \"vl1\"\nmac_capacity = 1000000000000",
                "`lan[0].mac_capacity`",
            ),
            (
                "tap = \"vl1\"",
                "tap = \"vl1\"\nmac_capacity = 0",
                "`lan[0].mac_capacity`",
            ),
            (
                "tap = \"vl1\"",
                "tap = \"vl1\"\nmac_age_s = 18446744073709551615",
                "`lan[0].mac_age_s`",
            ),
            ("tap = \"vl1\"", "tap = \"vl1\"\nmtu = 9001", "`lan[0].mtu`"),
        ];
        for (from, to, key) in cases {
            let e = err(&GOOD.replace(from, to));
            assert!(
                e.contains(key) && (e.contains("out of range") || e.contains("prefix of")),
                "{key}: {e}"
            );
            assert!(e.starts_with("host.toml:"), "{e}");
        }
        for (t, key) in [
            ("vm_table_size = 1000000000000", "`telemetry.vm_table_size`"),
            (
                "flow_table_size = 1000000000000",
                "`telemetry.flow_table_size`",
            ),
            ("flow_table_size = 0", "`telemetry.flow_table_size`"),
            ("flow_idle_s = 0", "`telemetry.flow_idle_s`"),
            (
                "report_interval_s = 18446744073709551615",
                "`telemetry.report_interval_s`",
            ),
            ("link_speed_mbps = 0", "`telemetry.link_speed_mbps`"),
        ] {
            let e = err(&format!("{GOOD}\n[telemetry]\n{t}\n"));
            assert!(
                e.contains(&format!("host.toml:15: {key}")) && e.contains("out of range"),
                "{e}"
            );
        }
        // The edges of each range are accepted.
        let edges = format!(
            "{}\n[telemetry]\nvm_table_size = 65536\nflow_table_size = 1048576\nreport_interval_s = 0\nflow_idle_s = 86400\n",
            GOOD.replace("[host]\n", "[host]\nport = 65535\nunderlay_mtu = 9000\n")
                .replace(
                    "tap = \"vl1\"",
                    "tap = \"vl1\"\nmac_capacity = 1048576\nmac_age_s = 86400\nmtu = 9000"
                )
        );
        let c = Config::parse(&edges, Path::new("host.toml")).expect("edges are valid");
        assert_eq!(c.telemetry.report_every(), None);
        assert_eq!(c.mac_capacity(0), 1_048_576);
    }

    #[test]
    fn alarm_receivers_take_https_an_internal_ca_and_never_an_empty_recipient_list() {
        let with = |alarms: &str| format!("{GOOD}\n[alarms]\n{alarms}\n");
        let c = Config::parse(
            &with("alertmanager = [\"https://am.example:9093\"]\nwebhook = [\"http://10.0.0.1:80/x\"]"),
            Path::new("host.toml"),
        )
        .expect("https and http");
        assert_eq!(
            c.alarms.receivers().alertmanager[0].scheme_str(),
            Some("https")
        );
        let e = err(&with("webhook = [\"ftp://10.0.0.1/x\"]"));
        assert!(e.contains("https://HOST:PORT"), "{e}");
        let e = err(&with(
            "[alarms.email]\nsmtp = \"10.0.0.7:25\"\nfrom = \"v@example.org\"\nto = []",
        ));
        assert!(e.contains("no recipient") && e.contains("host.toml"), "{e}");
        let e = err(&with("ca_file = \"/nonexistent/ca.pem\""));
        assert!(
            e.contains("`alarms.ca_file`") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("vmvpn-cfg-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").expect("write");
        let e = err(&with(&format!("ca_file = \"{}\"", ca.display())));
        assert!(e.contains("no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_dashboard_off_loopback_needs_the_login_of_web() {
        let local = GOOD.replace("[host]\n", "[host]\nweb = \"127.0.0.1:8080\"\n");
        let c = Config::parse(&local, Path::new("host.toml")).expect("loopback: no login");
        assert!(c.web_credentials().is_none());
        let remote = GOOD.replace("[host]\n", "[host]\nweb = \"0.0.0.0:8443\"\n");
        let e = err(&remote);
        assert!(
            e.contains("`host.web`") && e.contains("[web]") && e.contains("host.toml:"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("vmvpn-cfg-web-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pw = dir.join("web.password");
        std::fs::write(&pw, "twelve chars or more\n").expect("write");
        let with = format!(
            "{remote}\n[web]\nuser = \"ops\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        let c = Config::parse(&with, Path::new("host.toml")).expect("with [web]");
        assert!(c.web_credentials().is_some());
        std::fs::write(&pw, "short\n").expect("write");
        let e = err(&with);
        assert!(
            e.contains("`web.password_file`") && e.contains("at least 12"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let e = err(&GOOD.replace(
            "name = \"h1\"",
            &format!("name = \"{}\"", "h".repeat(100_000)),
        ));
        assert!(
            e.len() < 2000 && e.contains("100000 characters"),
            "{} bytes",
            e.len()
        );
        let e = err(&GOOD.replace("vl1", &"v".repeat(100_000)));
        assert!(e.len() < 2000, "{} bytes", e.len());
        let e = err(&format!("{GOOD}\nbogus = \"{}\"\n", "x".repeat(100_000)));
        assert!(
            e.len() < 2000 && e.contains("more characters"),
            "{} bytes",
            e.len()
        );
    }

    #[test]
    fn secret_files_must_be_small_regular_files() {
        for (path, want) in [
            ("/dev/zero", "not a regular file"),
            ("/tmp", "not a regular file"),
        ] {
            let c = Config::parse(
                &GOOD.replace("/etc/vmvpn/lan1.key", path),
                Path::new("host.toml"),
            )
            .expect("valid");
            let e = c
                .read_secret(0, Some(GOOD))
                .map(|_| ())
                .expect_err("refused")
                .to_string();
            assert!(
                e.contains("host.toml:11: `lan[0].secret_file`") && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_key_names_line_and_expected_keys() {
        let e = err(&GOOD.replace("tap = \"vl1\"", "tap = \"vl1\"\ntpa = 1"));
        assert!(
            e.contains("line 11")
                && e.contains("unknown field `tpa`")
                && e.contains("expected one of"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let e = err(&GOOD.replace("10.77.1.1/24", "10.77.1.1"));
        assert!(e.contains("line 4") && e.contains("prefix length"), "{e}");
        let e = err(&GOOD.replace("\"10.77.1.3:7401\"", "\"10.77.1.3\""));
        assert!(e.contains("line 12"), "{e}");
        let e = err(&GOOD.replace("vl1", "a-very-long-tap-name"));
        assert!(e.contains("line 10") && e.contains("1 to 15"), "{e}");
        let e = err(&GOOD.replace("name = \"h1\"", "name = \"h 1\""));
        assert!(e.contains("line 3") && e.contains("A-Z a-z 0-9"), "{e}");
    }

    #[test]
    fn duplicate_lans_and_taps_are_refused_with_their_line() {
        let two = format!(
            "{GOOD}\n[[lan]]\nname = \"lan1\"\nsegment = \"10.0.0.0/8\"\ntap = \"vl2\"\nsecret_file = \"x\"\n"
        );
        let e = err(&two);
        assert!(
            e.contains("host.toml:15: `lan[1].name`") && e.contains("already defined"),
            "{e}"
        );
        let two = two.replace(
            "name = \"lan1\"\nsegment = \"10.0.0.0/8\"\ntap = \"vl2\"",
            "name = \"lan2\"\nsegment = \"10.0.0.0/8\"\ntap = \"vl1\"",
        );
        let e = err(&two);
        assert!(e.contains("host.toml:17: `lan[1].tap`"), "{e}");
    }

    #[test]
    fn no_lan_and_bad_bulletin_fingerprint_are_clear_errors() {
        let e = err("[host]\nname = \"h1\"\naddress = \"10.0.0.1/24\"\n");
        assert!(e.contains("no [[lan]]"), "{e}");
        let e = err(&format!(
            "{GOOD}\n[bulletin]\nserver = \"10.0.0.1:7400\"\nfingerprint = \"sha256:12\"\n"
        ));
        assert!(e.contains("line 16") && e.contains("64 hex digits"), "{e}");
        let fp = format!("sha256:{}", "ab".repeat(32));
        let c = Config::parse(
            &format!("{GOOD}\n[bulletin]\nserver = \"10.0.0.1:7400\"\nfingerprint = \"{fp}\"\n"),
            Path::new("h.toml"),
        )
        .expect("valid");
        assert_eq!(c.bulletin.map(|b| b.fingerprint.0), Some(fp));
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_explained() {
        let s = generate_secret().expect("rng");
        assert_eq!(s.len(), 44);
        assert!(parse_secret(&format!("{s}\n")).is_ok());
        assert!(
            parse_secret("not base64!")
                .unwrap_err()
                .contains("not base64")
        );
        assert!(
            parse_secret("AAAA")
                .unwrap_err()
                .contains("3 bytes, expected 32")
        );
        let c = Config::parse(GOOD, Path::new("host.toml")).expect("valid");
        let e = c
            .read_secret(0, Some(GOOD))
            .map(|_| ())
            .expect_err("missing file")
            .to_string();
        assert!(
            e.contains("host.toml:11") && e.contains("vmvpn keygen >"),
            "{e}"
        );
    }
}
