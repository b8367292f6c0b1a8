//! The syscalls around the sans-IO engine: the data-plane thread and its poll loop
//! (`dataplane`), TAP devices (`tap`), their addresses and MTU (`netdev`), and the UDP
//! socket with batched and segmented sends (`udp`).

pub mod dataplane;
pub mod netdev;
pub mod tap;
pub mod udp;
