//! Unicast data opened before the engine sees it, on another thread (`[host] threads =
//! 4`, `io::opener`): the AEAD, the largest cost of a received datagram, then runs beside
//! the loop. The loop hands that thread the receive keys as a snapshot (`RxKeys`, made
//! again when a session's keys change) with each batch of datagrams; the thread opens each
//! data datagram in place (`open_data`) and notes what came of it (`PreOpen`). The engine
//! takes that verdict instead of opening, once it has checked that the key is still the
//! session's. A datagram opened under keys replaced meanwhile (a peer's new run, whose
//! hello was in the batch before) is dropped as from no session: its bytes are no longer
//! what arrived, so it cannot be opened again.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::Engine;
use crate::proto::crypto::SealKey;
use crate::proto::{Kind, PMTU_SEQ_BIT, Packet};

/// The receive keys of unicast data, by (LAN id, sender id) as headers carry them.
#[derive(Default)]
pub struct RxKeys {
    map: FxHashMap<(u32, u32), Arc<SealKey>>,
}

impl RxKeys {
    /// Keys in the snapshot.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What became of a datagram before the engine saw it. A key is named by its address: the
/// snapshot that opened it lives until the engine has judged it, so no other key can take
/// that address meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PreOpen {
    /// Left sealed: the engine opens it (or drops it) as any other.
    #[default]
    No,
    /// Opened in place.
    Opened {
        /// The frame is `buf[HEADER_LEN..HEADER_LEN + n]`.
        n: usize,
        /// The key's address.
        key: usize,
    },
    /// It did not authenticate (its bytes are overwritten).
    Failed {
        /// The key's address.
        key: usize,
    },
}

impl PreOpen {
    /// Whether `key` is the key this verdict was reached under (No: any key).
    pub(crate) fn under(&self, key: &Arc<SealKey>) -> bool {
        match *self {
            PreOpen::No => true,
            PreOpen::Opened { key: k, .. } | PreOpen::Failed { key: k } => {
                k == Arc::as_ptr(key) as usize
            }
        }
    }
}

/// Open `dgram` in place if it is unicast data under a key of `keys`; anything else is
/// left as it is for the engine (hellos, floods, control, unknown senders, garbage).
pub fn open_data(keys: &RxKeys, dgram: &mut [u8]) -> PreOpen {
    let Ok(p) = Packet::new_checked(&*dgram) else {
        return PreOpen::No;
    };
    let h = *p.header();
    if h.kind != Kind::Data || h.seq & PMTU_SEQ_BIT != 0 {
        return PreOpen::No;
    }
    let Some(k) = keys.map.get(&(h.lan, h.sender)) else {
        return PreOpen::No;
    };
    let key = Arc::as_ptr(k) as usize;
    match k.open(h.seq, dgram) {
        Some(n) => PreOpen::Opened { n, key },
        None => PreOpen::Failed { key },
    }
}

impl Engine {
    /// Bumped whenever a session's receive keys change: time for a new `rx_keys`.
    pub fn rx_keys_epoch(&self) -> u64 {
        self.rx_keys_epoch
    }

    /// The receive keys of every session now (allocates: once per key change).
    pub fn rx_keys(&self) -> RxKeys {
        let mut map = FxHashMap::default();
        for l in &self.lans {
            for p in &l.peers {
                if let (Some(id), Some(s)) = (p.id, p.tunnel.session()) {
                    map.insert((l.spec.id, id), s.rx.clone());
                }
            }
        }
        RxKeys { map }
    }
}
