//! The data plane's wire format: the datagram header and its kinds, the hello, the probe
//! and beacon bodies, overlay fragments, the ciphers and the replay window. Pure functions
//! and checked views over byte slices; nothing here keeps state across packets but the
//! replay window.

pub mod beacon;
pub mod crypto;
pub mod fragment;
pub mod header;
pub mod hello;
pub mod probe;
pub mod relay;
pub mod replay;
pub mod service;

pub use header::*;
pub use hello::{Hello, name_field};
