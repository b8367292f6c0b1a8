//! Beacons: each host says "here" to its LAN's multicast group once a second; a peer whose
//! beacons arrive is reached by multicast, and the flood plan (`flood`) follows.

use std::time::{Duration, Instant};

use telemetry::DropReason;

use super::flood::{BEACON_INTERVAL_S, BEACON_TIMEOUT_S, FloodMode};
use super::transmit::Outgoing;
use super::{Engine, LanId, RxAction};
use crate::proto::beacon::{self, Beacon};
use crate::proto::{BEACON_LEN, HELLO_LEN, Header};

impl Engine {
    pub(super) fn handle_beacon(
        &mut self,
        lan: LanId,
        multicast: bool,
        h: &Header,
        buf: &[u8],
        now: Instant,
    ) -> RxAction<'_> {
        let l = &mut self.lans[lan.index()];
        let known = l.by_id.get(&h.sender).copied();
        let Ok(b) = Beacon::new_checked(buf) else {
            return RxAction::Drop(l.drop_at(known, DropReason::BadHeader));
        };
        if !l.keys.verify_hello(b.header_bytes(), &[], &b.mac()) {
            return RxAction::Drop(l.drop_at(known, DropReason::AuthFailure));
        }
        // Beacons are only sent to the group; one by unicast shows nothing about multicast.
        if !multicast {
            return RxAction::Drop(l.drop_at(known, DropReason::BadHeader));
        }
        if let Some(p) = known.and_then(|i| l.peers.get_mut(i.index())) {
            p.link.beacon_at = Some(now);
            if !p.link.beacons {
                p.link.beacons = true;
                l.rebuild_flood();
            }
        }
        RxAction::Consumed
    }

    /// Beacons that stopped arriving, and our own beacon when it is due.
    pub(super) fn run_beacons(&mut self, li: LanId, now: Instant) {
        let l = &mut self.lans[li.index()];
        let mut changed = false;
        for p in l.peers.iter_mut() {
            let fresh = p
                .link
                .beacon_at
                .is_some_and(|b| now.saturating_duration_since(b).as_secs_f64() < BEACON_TIMEOUT_S);
            if p.link.beacons != fresh {
                p.link.beacons = fresh;
                changed = true;
            }
        }
        if changed {
            l.rebuild_flood();
        }
        let due = l.spec.flood != FloodMode::Unicast
            && l.spec.group.is_some()
            && l.next_beacon.is_none_or(|b| now >= b);
        if due {
            l.next_beacon = Some(now + Duration::from_secs(BEACON_INTERVAL_S));
            self.queue_beacon(li);
        }
    }

    fn queue_beacon(&mut self, lan: LanId) {
        let l = &self.lans[lan.index()];
        let Some(group) = l.spec.group else { return };
        let hb = beacon::beacon_header(l.spec.id, self.me.id, self.me.start_ns);
        let mac = l.keys.hello_mac(&hb, &[]);
        let mut out = Outgoing {
            to: group,
            len: BEACON_LEN,
            buf: [0; HELLO_LEN],
        };
        out.buf[..BEACON_LEN].copy_from_slice(&beacon::emit(&hb, &mac));
        self.out.push_back(out);
    }
}
