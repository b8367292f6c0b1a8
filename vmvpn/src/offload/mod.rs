//! Offloads: splitting the TAP's TSO super-frames into segments (`gso`), merging received
//! segments for one TAP write (`gro`), and their checksums (`csum`). Pure byte work: the
//! UDP GSO sends that carry the segments are `io::batch`.

pub mod csum;
pub mod gro;
pub mod gso;
