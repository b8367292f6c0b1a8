//! Typed indexes into the engine's tables, so a LAN's place is never taken for a peer's.

/// A LAN's place in this engine: the order of `[[lan]]` in the config. (The id on the wire
/// is [`LanSpec::id`](super::LanSpec::id), a hash of the name.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LanId(pub usize);

/// A peer's place in its LAN's peer table. Removing a peer renumbers the ones after it
/// (the MAC database follows), so a `PeerId` is only kept inside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

impl LanId {
    /// The index into the engine's LAN table.
    pub fn index(self) -> usize {
        self.0
    }
}

impl PeerId {
    /// The index into the LAN's peer table.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The peer at this index (the engine hands these out; public for the fuzz targets,
    /// which drive sans-IO parts alone).
    pub fn at(i: usize) -> Self {
        PeerId(i as u32)
    }
}
