//! Tests of the forwarding core: several engines wired through an in-memory network
//! (`sim`), by topic.

mod sim;

mod contract;
mod floods;
mod forwarding;
mod handshake;
mod nat;
mod path_mtu;
mod probes;
mod reconfig;
