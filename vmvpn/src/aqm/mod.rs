//! Active queue management of the daemon's own queues: CoDel's control law (`codel`,
//! RFC 8289) decides when a standing queue has lasted too long, and `signal` picks the
//! frame that carries the congestion signal (an ECN CE mark where the flow is
//! ECN-capable, else a drop), sparing small frames so pings and keystrokes never pay.
//! Pure: the socket timestamps that give the queue's sojourn time are `io::udp`'s.

pub mod codel;
pub mod signal;
