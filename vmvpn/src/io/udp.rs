//! The one UDP socket of the data plane: all LANs, all peers.
//!
//! Receives in batches with `recvmmsg` and UDP GRO through quinn-udp; sends one datagram
//! per call (`send_to`), a run of equal-sized datagrams to one peer in one UDP GSO call
//! (`send_gso`), or several such runs, to one peer or several, in one `sendmmsg`
//! (`send_runs`); `batch.rs` gathers them.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn_udp::{RecvMeta, UdpSocketState};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Receive buffers per batch.
pub const BATCH: usize = quinn_udp::BATCH_SIZE;
/// Bytes per receive buffer: room for a full GRO batch.
pub const SLOT: usize = 65536;
const SOCKET_BUFFER: usize = 4 << 20;
/// Runs one `sendmmsg` may carry (`send_runs`).
pub const MAX_RUNS: usize = 32;

/// Datagrams to one peer that leave as one message: `count` datagrams of `segment` bytes in
/// `start..start + len` of the buffer, the last possibly shorter (UDP GSO when `count` > 1).
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Where they lie in the buffer.
    pub start: usize,
    /// Bytes in all.
    pub len: usize,
    /// Bytes of each datagram but the last.
    pub segment: usize,
    /// How many.
    pub count: usize,
    /// The peer.
    pub to: SocketAddr,
}

/// The data-plane socket.
pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
}

impl Udp {
    /// Bind the data port.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            // Accept IPv4 too when bound to [::].
            let _ = s.set_only_v6(false);
        }
        // Large buffers absorb bursts between polls; best effort (capped by rmem_max unless root).
        for force in [true, false] {
            if set_buffers(&s, SOCKET_BUFFER, force).is_ok() {
                break;
            }
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        let socket: UdpSocket = s.into();
        let state = UdpSocketState::new((&socket).into())?;
        // Every datagram leaves with DF and is never fragmented by the kernel, whatever its
        // PMTU cache says: the overlay sizes its datagrams to the path it probes itself
        // (`pmtu.rs`), and cuts larger frames into its own fragments (`frag.rs`). quinn-udp
        // sets the same; set here so it does not depend on that.
        let (level, name, value) = if addr.is_ipv6() {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            )
        } else {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            )
        };
        setsockopt_int(socket.as_raw_fd(), level, name, value)?;
        if addr.is_ipv6() {
            // IPv4 peers on a dual-stack socket.
            let _ = setsockopt_int(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            );
        }
        Ok(Udp { socket, state })
    }

    /// Join a LAN's multicast group on the underlay interface with address `iface`, and
    /// send multicast from there: TTL 1 (it never leaves the physical subnet), our own
    /// datagrams not looped back.
    pub fn join_multicast(&self, group: Ipv4Addr, iface: Ipv4Addr) -> io::Result<()> {
        let s = SockRef::from(&self.socket);
        s.join_multicast_v4(&group, &iface)?;
        s.set_multicast_if_v4(&iface)?;
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(false)
    }

    /// Leave a LAN's multicast group (the LAN was removed).
    pub fn leave_multicast(&self, group: Ipv4Addr, iface: Ipv4Addr) -> io::Result<()> {
        SockRef::from(&self.socket).leave_multicast_v4(&group, &iface)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receive a batch into `bufs`; fills `meta` and returns how many buffers were used.
    pub fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.state.recv((&self.socket).into(), bufs, meta)
    }

    /// How long the datagram read last waited in the kernel's receive queue: now less
    /// its receive timestamp (`SIOCGSTAMPNS`). The first call turns stamping on (the
    /// kernel does so from a work queue, a moment later); until stamped datagrams arrive
    /// it reads zero. One syscall, so once per batch.
    pub fn last_rx_sojourn(&self) -> Duration {
        // Not in libc: the timespec flavour (64-bit time on 64-bit targets).
        const SIOCGSTAMPNS: libc::c_ulong = 0x8907;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the ioctl writes one timespec into `ts`, which lives across the call.
        let r = unsafe { libc::ioctl(self.socket.as_raw_fd(), SIOCGSTAMPNS as _, &mut ts) };
        if r < 0 {
            return Duration::ZERO;
        }
        let stamp = UNIX_EPOCH
            + Duration::new(
                ts.tv_sec.max(0) as u64,
                ts.tv_nsec.clamp(0, 999_999_999) as u32,
            );
        SystemTime::now().duration_since(stamp).unwrap_or_default()
    }

    /// Send one datagram.
    #[inline]
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(buf, to)
    }

    /// Datagrams one GSO send may carry (1 when the kernel cannot segment UDP).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Send `buf` as datagrams of `segment` bytes (the last may be shorter) in one call,
    /// segmented by the kernel (UDP GSO).
    pub fn send_gso(&self, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
        let t = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: buf,
            segment_size: (buf.len() > segment).then_some(segment),
            src_ip: None,
        };
        self.state.send((&self.socket).into(), &t)
    }

    /// Send up to `MAX_RUNS` runs of `buf` in one `sendmmsg`, each with its own peer and
    /// segment size. Returns how many leading runs the kernel took; an error is the first
    /// untaken run's. Written here because quinn-udp sends one message per call and no
    /// maintained crate pairs `sendmmsg` with a GSO size per message. Allocates nothing.
    pub fn send_runs(&self, buf: &[u8], runs: &[Run]) -> io::Result<usize> {
        // cmsghdr (16 bytes on 64-bit Linux) and the u16 segment size, aligned: 24 bytes.
        const CMSG: usize = 32;
        let runs = &runs[..runs.len().min(MAX_RUNS)];
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut addrs: [libc::sockaddr_storage; MAX_RUNS] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; MAX_RUNS] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; MAX_RUNS] = unsafe { std::mem::zeroed() };
        let mut cmsgs = [[0u64; CMSG / 8]; MAX_RUNS];
        for (i, r) in runs.iter().enumerate() {
            let Some(data) = buf.get(r.start..r.start + r.len) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "run out of buffer",
                ));
            };
            let addr = socket2::SockAddr::from(r.to);
            let alen = (addr.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
            // SAFETY: copies `alen` bytes of the address into storage at least as large.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    addr.as_ptr() as *const u8,
                    &mut addrs[i] as *mut libc::sockaddr_storage as *mut u8,
                    alen,
                );
            }
            iovs[i] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = &mut addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
            h.msg_namelen = alen as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            if r.count > 1 && r.len > r.segment {
                h.msg_control = cmsgs[i].as_mut_ptr() as *mut libc::c_void;
                // SAFETY: CMSG_SPACE of a u16 is 24, within the 32-byte buffer.
                h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
                // SAFETY: msg_control points to an aligned buffer of msg_controllen bytes,
                // so CMSG_FIRSTHDR is non-null and its data holds the u16.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, r.segment as u16);
                }
            }
        }
        // SAFETY: `msgs[..runs.len()]` point into addrs, iovs, cmsgs and buf, all alive
        // across the call.
        let n = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                runs.len() as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt with a valid int option value and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_buffers(s: &Socket, size: usize, force: bool) -> io::Result<()> {
    if !force {
        s.set_recv_buffer_size(size)?;
        return s.set_send_buffer_size(size);
    }
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, opt, size as libc::c_int)?;
    }
    Ok(())
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receive_timestamp_tells_how_long_a_datagram_waited() {
        let rx = Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = rx.local_addr().expect("addr");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        // The first call turns timestamps on.
        let _ = rx.last_rx_sojourn();
        // The kernel turns stamping on from a work queue, a moment later.
        std::thread::sleep(Duration::from_millis(50));
        tx.send_to(b"one", to).expect("send");
        std::thread::sleep(Duration::from_millis(40));
        let mut buf = vec![0u8; SLOT];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut meta = [RecvMeta::default()];
        let n = rx.recv(&mut iov, &mut meta).expect("recv");
        assert_eq!(n, 1);
        let waited = rx.last_rx_sojourn();
        assert!(
            (Duration::from_millis(35)..Duration::from_secs(5)).contains(&waited),
            "{waited:?}"
        );
        tx.send_to(b"two", to).expect("send");
        std::thread::sleep(Duration::from_millis(5));
        let n = rx.recv(&mut iov, &mut meta).expect("recv");
        assert_eq!(n, 1);
        assert!(rx.last_rx_sojourn() < Duration::from_millis(35));
    }
}
