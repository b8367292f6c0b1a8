//! vmvpn: the host engine of a layer-2 overlay for virtual machines.
//!
//! Sans-IO cores (`wire`, `crypto`, `replay`, `macdb`, `forward`) hold every rule and are
//! tested without root; the runtime (`tap`, `netdev`, `udp`, `runtime`, `control`) does the
//! syscalls around them.

pub mod batch;
pub mod config;
pub mod control;
pub mod crypto;
pub mod csum;
pub mod flood;
pub mod forward;
pub mod frag;
pub mod gro;
pub mod gso;
pub mod macdb;
pub mod membership;
pub mod metrics;
pub mod mss;
pub mod netdev;
pub mod pmtu;
pub mod replay;
pub mod report;
pub mod runtime;
pub mod status;
pub mod tap;
pub mod udp;
pub mod wire;
