//! `[host]`: who this host is, where it listens, and how its data plane runs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::*;

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
    /// Data-plane threads: 1, the loop alone; 2, the loop and a send thread that seals
    /// and sends the unicast data beside it (the AEAD and the send syscalls are about half
    /// of a sending host's data-plane time); 3, also a TAP writer thread that writes the
    /// frames merged on the receive side to the VMs' TAPs; 4, also an open thread that
    /// opens the received unicast data (the AEAD of the receive side). `"auto"` (the
    /// default): one fewer than the machine's cores, from 1 to 4 (a core stays for the
    /// VMs). More than 4 needs the data plane split into shards, which is not built yet.
    #[serde(default)]
    pub threads: Threads,
    /// Source ports besides the data port that unicast data leaves from: each flow of the
    /// VMs (by a hash of its IP addresses, protocol and ports) from one of them, as VXLAN
    /// picks its source port. On the underlay the flows are then told apart: a router's
    /// or this host's fair queueing (fq_codel, most Linux defaults) keeps a ping out of
    /// the queue of a VM's bulk transfer, and ECMP and the receiver's NIC spread them.
    /// Used towards peers of this version or later reached at their listed address (not
    /// through a NAT mapping or a relay); the peer's data port must take UDP from any
    /// source port of this host. 0: everything from the data port. Default 15, the most.
    #[serde(default = "default_flow_ports")]
    pub flow_ports: Spanned<u16>,
    /// Seconds of silence towards a peer before a keepalive goes to it (probes, sent
    /// every second while telemetry is on, count as traffic). Below the UDP timeouts of
    /// NAT routers (commonly 30 s), so a punched path stays open.
    #[serde(default = "default_keepalive")]
    pub keepalive_s: Spanned<u16>,
    /// Relays (`address:port` of a host with `relay = true`) to ask for a pair socket when a
    /// peer's handshake has had no answer for 3 s: the last resort where both hosts are
    /// behind NATs that change ports. They pass datagrams on unopened. Default: none.
    #[serde(default)]
    pub relays: Vec<Spanned<SocketAddr>>,
    /// Relay for hosts of this host's LANs (and of `relay_lans`) that cannot reach each
    /// other: datagrams pass through unopened (the relay holds no key that opens them).
    #[serde(default)]
    pub relay: bool,
    /// The UDP port relay requests come to; pair sockets take free ports besides it.
    #[serde(default = "default_relay_port")]
    pub relay_port: Spanned<u16>,
    /// Relayed traffic in all, Mbit/s (0: no limit). Over it, datagrams are dropped (and
    /// counted) as on a congested link.
    #[serde(default = "no_limit")]
    pub relay_limit_mbps: Spanned<u32>,
    /// LANs to relay for without being a member: `{ name = "lan9", verifier = "…" }`.
    #[serde(default)]
    pub relay_lans: Vec<RelayLan>,
}

/// Data-plane threads built: the loop, the send thread, the TAP writer thread, the open
/// thread.
pub const MAX_THREADS: u8 = 4;
const MAX_THREADS_I64: i64 = MAX_THREADS as i64;

/// `[host] threads`: `"auto"` or a count (1 to `MAX_THREADS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Threads {
    /// One fewer than the cores, from 1 to `MAX_THREADS`.
    #[default]
    Auto,
    /// This many.
    Count(u8),
}

impl Threads {
    /// The threads to run on a machine with `cores` cores.
    pub fn resolve(self, cores: usize) -> u8 {
        match self {
            // One core stays for the VMs and the rest of the host.
            Threads::Auto => cores.saturating_sub(1).clamp(1, MAX_THREADS as usize) as u8,
            Threads::Count(n) => n,
        }
    }
}

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        struct V;
        const WANT: &str =
            "1, 2, 3, 4 or \"auto\" (more than 4 data-plane threads are not built yet)";
        impl Visitor<'_> for V {
            type Value = Threads;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(WANT)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Threads, E> {
                match v {
                    "auto" => Ok(Threads::Auto),
                    _ => Err(E::custom(format!("threads = \"{v}\": expected {WANT}"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Threads, E> {
                match v {
                    1..=MAX_THREADS_I64 => Ok(Threads::Count(v as u8)),
                    _ => Err(E::custom(format!("threads = {v}: expected {WANT}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

fn default_flow_ports() -> Spanned<u16> {
    unspanned(15)
}

fn default_keepalive() -> Spanned<u16> {
    unspanned(10)
}

fn default_port() -> Spanned<u16> {
    unspanned(DEFAULT_PORT)
}

impl Config {
    /// `[host]`: numbers in range, a multicast range that is one.
    pub(super) fn check_host(&self, text: &str) -> Result<(), ConfigError> {
        use super::limits::*;
        self.in_range(text, &self.host.port, "host.port".into(), PORT)?;
        self.in_range(
            text,
            &self.host.flow_ports,
            "host.flow_ports".into(),
            FLOW_PORTS,
        )?;
        self.in_range(
            text,
            &self.host.keepalive_s,
            "host.keepalive_s".into(),
            KEEPALIVE_S,
        )?;
        if let Some(m) = &self.host.underlay_mtu {
            self.in_range(text, m, "host.underlay_mtu".into(), UNDERLAY_MTU)?;
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
        Ok(())
    }
}
