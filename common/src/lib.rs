//! What the vmvpn crates share and none of them owns: why a config file cannot be used
//! (`config`), address masks (`net`), values written for people (`text`) and the wall
//! clock in the form the exports and dashboards carry (`clock`). It sits below every
//! other crate of the workspace and depends on none of them.

pub mod clock;
pub mod config;
pub mod net;
pub mod text;
