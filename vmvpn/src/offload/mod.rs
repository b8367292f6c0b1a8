//! Offloads: splitting the TAP's TSO super-frames into segments (`gso`), merging received
//! segments for one TAP write (`gro`), their checksums (`csum`), and grouping datagrams to
//! one peer into UDP GSO sends (`batch`). Pure byte work but `batch`, which sends.

pub mod batch;
pub mod csum;
pub mod gro;
pub mod gso;
