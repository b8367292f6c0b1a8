//! The syscalls around the sans-IO engine: the data-plane thread and its poll loop
//! (`dataplane`), TAP devices (`tap`) and a LAN's opening (`lan`), their addresses and MTU (`netdev`), the UDP
//! socket (`udp`) and the CoDel over its receive queue (`rxqueue`), and datagrams to one peer grouped into UDP GSO sends (`batch`).

pub mod batch;
pub mod cmsg;
pub mod dataplane;
pub mod lan;
pub mod netdev;
pub mod opener;
pub mod relay;
pub mod rxqueue;
pub mod tap;
pub mod tapwrite;
pub mod udp;
pub mod worker;
