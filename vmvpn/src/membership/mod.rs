//! Membership: the bulletin's view of the LANs turned into peer changes, sans-IO
//! (`reconciler`); the QUIC client that registers this host and feeds it (`client`); and
//! the traffic reports it sends (`report`).

pub mod client;
pub mod reconciler;
pub mod report;

pub use client::*;
