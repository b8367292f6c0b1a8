//! The `vmvpn` command line: the daemon's start-up (`daemon`), and the views that ask a
//! running daemon over its control socket (`render`, `top`, `ping`).

pub mod daemon;
pub mod ping;
pub mod render;
pub mod top;
