//! Opening one LAN of the config: its TAP (created, MTU set, up, on its bridge) and what
//! the core needs of it. At start for every LAN, and on a reload for each LAN added.

use tracing::info;

use crate::config::Config;
use crate::engine::LanSpec;
use crate::io::tap::{TapDevice, TapError, TapOptions};
use crate::proto as wire;
use crate::proto::crypto::{LanSecret, lan_id};

/// Open the TAP of `cfg`'s LAN number `i` and describe the LAN for the core.
pub fn open(cfg: &Config, i: usize, secret: LanSecret) -> Result<(LanSpec, TapDevice), TapError> {
    let lan = &cfg.lans[i];
    let name = &lan.name.get_ref().0;
    // VMs keep the standard MTU: a frame that does not fit one datagram to its peer is
    // cut into overlay fragments, and TCP's MSS is clamped so it never needs to be.
    let mtu = lan
        .mtu
        .as_ref()
        .map_or(wire::DEFAULT_TAP_MTU, |m| usize::from(*m.get_ref()));
    let tap = TapDevice::open(&TapOptions {
        name: &lan.tap.get_ref().0,
        mtu: mtu as u32,
        bridge: lan.bridge.as_ref().map(|b| b.0.as_str()),
        keep: lan.keep_tap,
        offload: cfg.host.offload,
    })?;
    let id = lan_id(name);
    let spec = LanSpec {
        name: name.clone(),
        id,
        secret,
        max_frame: wire::max_frame_len(mtu),
        peers: lan.peers.clone(),
        mac_capacity: cfg.mac_capacity(i),
        mac_max_age: cfg.mac_age(i),
        segment: lan.segment.to_string(),
        tap: tap.name().to_string(),
        mtu,
        flood: lan.flood,
        group: cfg.multicast_group(i, id, *cfg.host.port.get_ref()),
        cipher: lan.cipher,
        limits: lan.limit_specs(),
        services: lan.service_specs(),
    };
    info!(
        lan = %name,
        tap = tap.name(),
        mtu,
        existed = tap.existed(),
        peers = lan.peers.len(),
        cipher = lan.cipher.name(),
        "LAN joined"
    );
    Ok((spec, tap))
}
