//! LANs joined and left while the engine runs (a reload): a LAN is appended, or taken out
//! with everything that named it by position, so the LANs after it keep their peers,
//! sessions and counters under their new place.

use super::lan::Lan;
use super::{Engine, Event, LanId, LanSpec, PeerSource, buffer_len};
use tracing::info;

impl Engine {
    /// Join one more LAN; its static peers' handshakes start at the next timeout. Err when
    /// a LAN of this name or wire id is already here.
    pub fn add_lan(&mut self, spec: LanSpec) -> Result<LanId, String> {
        if let Some(l) = self
            .lans
            .iter()
            .find(|l| l.spec.name == spec.name || l.spec.id == spec.id)
        {
            return Err(format!(
                "LAN {:?} cannot be added: LAN {:?} is here with the same name or wire id",
                spec.name, l.spec.name
            ));
        }
        let max_frame = spec.max_frame;
        if buffer_len(max_frame) > self.relay_buf.len() {
            self.relay_buf.resize(buffer_len(max_frame), 0);
        }
        self.reassembly.grow(max_frame);
        let statics = spec.peers.clone();
        let li = LanId(self.lans.len());
        self.lan_index.insert(spec.id, li);
        let (underlay, public) = (self.underlay, self.me.public);
        let mut lan = Lan::new(spec, self.me.id, underlay, &public, self.seq_floor);
        lan.measure(self.measure.accounting, self.measure.flow_export);
        self.lans.push(lan);
        for addr in statics {
            self.add_peer(li, addr, PeerSource::Static, None);
        }
        // Beacons and sweeps of the new LAN are planned from the next timeout on.
        self.deadlines = Default::default();
        Ok(li)
    }

    /// Leave a LAN: its peers, sessions, MACs and tables go (no peer is told: the bulletin
    /// tells its hosts, and static peers stop hearing from us). The LANs after it move up
    /// one place. None when no LAN has this name.
    pub fn remove_lan(&mut self, name: &str) -> Option<LanId> {
        let i = self.lans.iter().position(|l| l.spec.name == name)?;
        let gone = self.lans.remove(i);
        info!(lan = %name, peers = gone.peers.len(), "LAN left");
        self.retire_seq(gone.next_seq());
        self.lan_index = self
            .lans
            .iter()
            .enumerate()
            .map(|(k, l)| (l.spec.id, LanId(k)))
            .collect();
        let moved = |l: LanId| match l.index() {
            k if k < i => Some(l),
            k if k == i => None,
            k => Some(LanId(k - 1)),
        };
        self.pmtu_probes = std::mem::take(&mut self.pmtu_probes)
            .into_iter()
            .filter_map(|(l, p, size)| moved(l).map(|l| (l, p, size)))
            .collect();
        self.events.retain_map(|e| match e {
            Event::TunnelUp(mut c) => moved(c.lan).map(|l| {
                c.lan = l;
                Event::TunnelUp(c)
            }),
            Event::TunnelDown(mut c) => moved(c.lan).map(|l| {
                c.lan = l;
                Event::TunnelDown(c)
            }),
            other => Some(other),
        });
        self.reassembly.forget_lans_from(i);
        Some(LanId(i))
    }
}
