//! The bulletin board: the registry of which host is in which virtual LAN.
//!
//! It holds leases, ages out silent hosts and tells the others at once; it never forwards a
//! packet. `proto` is the protocol and its codec, `proof` the LAN-membership proof,
//! `registry` the sans-IO leases, `board` the registry with what hosts said of their LANs
//! (reports, alerts, names, services) kept consistent, `store` the registry shared by several
//! bulletins in etcd (and its reference model), `tls` certificates and pinning, `server` and `client` the
//! QUIC endpoints, `web` the dashboard on the HTTP stack (`http`) both binaries share.

pub mod admission;
pub mod board;
pub mod budget;
pub mod client;
pub mod config;
pub mod frames;
pub mod http;
pub mod matrix;
pub mod process;
pub mod proof;
pub mod proto;
pub mod registry;
pub mod reports;
pub mod server;
pub mod services;
pub mod status;
pub mod store;
pub mod tls;
pub mod web;
