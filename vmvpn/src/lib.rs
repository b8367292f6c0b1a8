//! vmvpn: the host engine of a layer-2 overlay for virtual machines.
//!
//! The layers, from the wire up. An arrow is an import; none runs back up.
//!
//! ```text
//!  cli/ (the `vmvpn` binary: render, top, ping, daemon start-up)
//!    │
//!  api/ (typed status, control socket, /metrics)     membership/ (bulletin client)
//!    │                                                  │
//!  io/ (data-plane thread, TAP, UDP) ──► offload/ (GSO, GRO, checksums, batches)
//!    │
//!  engine/ (sans-IO core: sessions, data path, floods, probes, timers, MACs, PMTU)
//!    │
//!  proto/ (header, hello, probe, beacon, fragments, ciphers, replay window)
//! ```
//!
//! `engine/` and `proto/` hold every rule and are tested without root or sockets; `io/`
//! does the syscalls around them; `config` is read by all.

pub mod api;
pub mod config;
pub mod engine;
pub mod io;
pub mod membership;
pub mod offload;
pub mod proto;
pub mod status;
