//! The `vmvpn` command line: the daemon's start-up (`daemon`), and the views that ask a
//! running daemon over its control socket (`render`, `top`, `ping`).

pub(crate) mod daemon;
pub(crate) mod ping;
pub(crate) mod render;
pub(crate) mod top;
pub(crate) mod trim;
