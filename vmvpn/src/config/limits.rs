//! The documented range of every number in `host.toml`: one table for every section.

use std::ops::RangeInclusive;
/// `[host] port`: 0 would bind a random port that no peer knows.
pub const PORT: RangeInclusive<u64> = 1..=65_535;
/// `[host] keepalive_s`: at most 2 minutes, so NAT mappings (30 s and up) stay open
/// when set below their timeout.
pub const KEEPALIVE_S: RangeInclusive<u64> = 1..=120;
/// `[host] flow_ports` (the header's flow label has 4 bits; 0: none).
pub const FLOW_PORTS: RangeInclusive<u64> = 0..=15;
/// `[host] relay_limit_mbps` (0: no limit; up to 100 Gbit/s).
pub const RELAY_LIMIT_MBPS: RangeInclusive<u64> = 0..=100_000;
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
/// `[[lan.limit]] rate_mbps` (up to 10 Tbit/s).
pub const RATE_MBPS: RangeInclusive<u64> = 1..=10_000_000;
/// `[[lan.limit]] burst_kb`: at least a jumbo frame, at most 1 GiB.
pub const BURST_KB: RangeInclusive<u64> = 16..=1_048_576;
/// `[[lan.limit]] shape_ms` (0: police).
pub const SHAPE_MS: RangeInclusive<u64> = 0..=1_000;
/// `[libvirt] refresh_s`.
pub const LIBVIRT_REFRESH_S: RangeInclusive<u64> = 1..=3_600;
/// A shaping queue (`rate_mbps` × `shape_ms`) holds at most this much.
pub const SHAPE_QUEUE_MAX_BYTES: u64 = 64 << 20;
