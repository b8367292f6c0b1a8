//! Membership: the bulletin client that registers this host, learns its peers and
//! reports its traffic (`client`), and the reports it sends (`report`).

pub mod client;
pub mod report;

pub use client::*;
