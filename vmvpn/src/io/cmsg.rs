//! The control messages the kernel hands back with a received datagram (`recvmmsg`):
//! its receive time, the address it was sent to and its GRO size.
//!
//! Walked by hand over the bytes rather than with libc's `CMSG_*` helpers: those trust
//! each header's length (the first is never checked against the buffer, and a length
//! near `usize::MAX` overflows their pointer arithmetic), while this walk checks every
//! length against the buffer it was given, so no input makes it read out of bounds or
//! panic (`fuzz/fuzz_targets/udp_control.rs`).

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, UNIX_EPOCH};

use super::udp::Received;

/// Not in libc.
pub const UDP_GRO: libc::c_int = 104;

/// Control messages align to the size of the header's length field (`CMSG_ALIGN`).
const ALIGN: usize = size_of::<usize>();
const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}
/// Where a message's data starts (`CMSG_LEN(0)`).
const DATA: usize = align(size_of::<libc::cmsghdr>());

/// Fill `m`'s `stamp`, `dst_ip` and `stride` from the control bytes `buf` (the first
/// `msg_controllen` bytes of the buffer). Messages it does not know, and one cut short
/// (`MSG_CTRUNC`: the buffer was too small), are skipped.
pub fn read(buf: &[u8], m: &mut Received) {
    let mut at = 0;
    while let Some(head) = buf.get(at..at + size_of::<libc::cmsghdr>()) {
        // SAFETY: `head` holds size_of::<cmsghdr>() bytes; read_unaligned needs no
        // alignment, and every bit pattern is a valid cmsghdr (integers only).
        let h = unsafe { std::ptr::read_unaligned(head.as_ptr().cast::<libc::cmsghdr>()) };
        let len = h.cmsg_len as usize;
        if len < DATA {
            break;
        }
        let Some(data) = at.checked_add(len).and_then(|end| buf.get(at + DATA..end)) else {
            // Claims more than the buffer holds: cut short.
            break;
        };
        match (h.cmsg_level, h.cmsg_type) {
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                if let Some(ts) = value::<libc::timespec>(data)
                    && ts.tv_sec > 0
                    && (0..1_000_000_000).contains(&ts.tv_nsec)
                {
                    m.stamp =
                        UNIX_EPOCH.checked_add(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                if let Some(p) = value::<libc::in_pktinfo>(data) {
                    m.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                if let Some(p) = value::<libc::in6_pktinfo>(data) {
                    let ip = Ipv6Addr::from(p.ipi6_addr.s6_addr);
                    m.dst_ip = Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4));
                }
            }
            (libc::SOL_UDP, UDP_GRO) => {
                if let Some(size) = value::<libc::c_int>(data)
                    && size > 0
                {
                    m.stride = size as usize;
                }
            }
            _ => {}
        }
        match at.checked_add(align(len)) {
            Some(next) => at = next,
            None => break,
        }
    }
}

/// A message's value, if its data holds all of it.
fn value<T: Copy>(data: &[u8]) -> Option<T> {
    // SAFETY: `data` holds at least size_of::<T>() bytes, read without alignment; the
    // types read here (timespec, in_pktinfo, in6_pktinfo, c_int) are plain integers, valid
    // for every bit pattern.
    (data.len() >= size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One control message as the kernel lays it out.
    fn message(level: libc::c_int, kind: libc::c_int, data: &[u8]) -> Vec<u8> {
        let h = libc::cmsghdr {
            cmsg_len: (DATA + data.len()) as _,
            cmsg_level: level,
            cmsg_type: kind,
        };
        // SAFETY: cmsghdr is plain integers; its bytes are read as they lie.
        let head = unsafe {
            std::slice::from_raw_parts(
                (&h as *const libc::cmsghdr).cast::<u8>(),
                size_of::<libc::cmsghdr>(),
            )
        };
        let mut v = head.to_vec();
        v.resize(DATA, 0);
        v.extend_from_slice(data);
        v.resize(align(v.len()), 0);
        v
    }

    #[test]
    fn each_known_message_fills_its_field_and_one_cut_short_is_skipped() {
        let mut buf = message(libc::SOL_UDP, UDP_GRO, &1400i32.to_ne_bytes());
        let mut ts = Vec::new();
        ts.extend_from_slice(&1_800_000_000i64.to_ne_bytes());
        ts.extend_from_slice(&5i64.to_ne_bytes());
        buf.extend(message(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts));
        let mut pi = [0u8; 12];
        pi[8..12].copy_from_slice(&[10, 0, 0, 7]); // ipi_addr, after ifindex and spec_dst
        buf.extend(message(libc::IPPROTO_IP, libc::IP_PKTINFO, &pi));
        let mut m = Received::default();
        read(&buf, &mut m);
        assert_eq!(m.stride, 1400);
        assert_eq!(m.stamp, Some(UNIX_EPOCH + Duration::new(1_800_000_000, 5)));
        assert_eq!(m.dst_ip, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))));
        // The same bytes cut inside the packet info: what came before still counts, the
        // packet info is not read past the cut.
        let mut m = Received::default();
        read(&buf[..buf.len() - 8], &mut m);
        assert_eq!((m.stride, m.dst_ip), (1400, None));
        assert!(m.stamp.is_some());
    }

    #[test]
    fn lengths_that_lie_stop_the_walk() {
        for len in [0usize, 3, DATA - 1, 1 << 20, usize::MAX, usize::MAX - 7] {
            let mut buf = message(libc::SOL_UDP, UDP_GRO, &9000i32.to_ne_bytes());
            buf[..size_of::<usize>()].copy_from_slice(&len.to_ne_bytes());
            let mut m = Received::default();
            read(&buf, &mut m);
            assert_eq!(m.stride, 0, "length {len}");
        }
    }
}
