//! The one UDP socket of the data plane: all LANs, all peers.
//!
//! Receives in batches with `recvmmsg` and UDP GRO, each buffer with its kernel receive
//! time (`recv`, by hand: quinn-udp hands back no timestamp); sends one datagram
//! per call (`send_to`), a run of equal-sized datagrams to one peer in one UDP GSO call
//! (`send_gso`), or several such runs, to one peer or several, in one `sendmmsg`
//! (`send_runs`); `batch.rs` gathers them.
//!
//! Beside it, send-only sockets on ports of their own (`open_flow_ports`, `[host]
//! flow_ports`): unicast data labelled k leaves from the k-th (see `engine::spread`).

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use quinn_udp::UdpSocketState;

use super::cmsg;
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
    /// The flow port they leave from (0: the data port; see `Udp::open_flow_ports`).
    pub port: u8,
}

/// One buffer of a receive batch.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Who sent it.
    pub addr: SocketAddr,
    /// Bytes in the buffer.
    pub len: usize,
    /// With GRO, the size of each datagram in the buffer (the last may be shorter);
    /// equal to `len` for one datagram.
    pub stride: usize,
    /// The address it was sent to (`IP_PKTINFO`): tells a multicast copy from a unicast one.
    pub dst_ip: Option<IpAddr>,
    /// When the kernel received it (`SO_TIMESTAMPNS`), if it said.
    pub stamp: Option<SystemTime>,
}

/// Each datagram of a receive batch (`area` cut in `SLOT`s, one per `metas` entry), in
/// order: `f(meta, datagram)`. A buffer the kernel merged (GRO) is cut at its stride; an
/// empty datagram is passed as an empty slice, to be counted.
pub fn each_datagram(area: &mut [u8], metas: &[Received], mut f: impl FnMut(&Received, &mut [u8])) {
    for (meta, slot) in metas.iter().zip(area.chunks_mut(SLOT)) {
        let len = meta.len.min(slot.len());
        if len == 0 {
            f(meta, &mut []);
            continue;
        }
        let stride = if meta.stride == 0 { len } else { meta.stride };
        for dgram in slot[..len].chunks_mut(stride.max(1)) {
            f(meta, dgram);
        }
    }
}

impl Default for Received {
    fn default() -> Self {
        Received {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            len: 0,
            stride: 0,
            dst_ip: None,
            stamp: None,
        }
    }
}

impl Received {
    /// When it arrived on the clock of `Instant`, given a reading of both clocks taken
    /// together after the batch was read: `read_at` and `read_real`.
    #[inline]
    pub fn arrived(&self, read_at: Instant, read_real: SystemTime) -> Instant {
        read_at
            .checked_sub(self.waited(read_real))
            .unwrap_or(read_at)
    }

    /// How long it waited in the socket until `read_real` (zero without a stamp).
    #[inline]
    pub fn waited(&self, read_real: SystemTime) -> Duration {
        self.stamp
            .and_then(|s| read_real.duration_since(s).ok())
            .unwrap_or_default()
    }
}

/// Control bytes per message. The most the kernel writes is for an IPv4 datagram on a
/// dual-stack socket: timestamp 32, GRO size 24, IP_TOS 24, IPV6_PKTINFO 40, IPV6_TCLASS
/// 24 (quinn-udp asks for TOS and traffic class): 144.
const CONTROL: usize = 192;

/// A cmsg buffer with the alignment of `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL]);

/// The data-plane socket, and its flow ports.
pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    /// Send-only sockets, flow port k being `flows[k - 1]`; shared by every handle.
    flows: Arc<[FlowPort]>,
}

/// A send-only socket on a port of its own.
struct FlowPort {
    socket: UdpSocket,
    state: UdpSocketState,
}

/// Receive buffer of a flow port: nothing is meant to arrive there.
const FLOW_PORT_RCVBUF: usize = 4096;

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
        let (socket, state) = bind_sender(s, addr)?;
        // Each datagram's kernel receive time, in its control data: how long it waited
        // (CoDel) and when it arrived (the rate limits police by arrival).
        setsockopt_int(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            1,
        )?;
        Ok(Udp {
            socket,
            state,
            flows: Arc::from(Vec::new()),
        })
    }

    /// Open `n` flow ports: send-only sockets on ports the kernel picks, on the data
    /// port's address, with its options. Returns how many opened (all, or an error for
    /// the first that did not, the others closed). Before `try_clone`.
    pub fn open_flow_ports(&mut self, n: u8) -> io::Result<u8> {
        let ip = self.socket.local_addr()?.ip();
        let flows = (0..n)
            .map(|_| {
                let addr = SocketAddr::new(ip, 0);
                let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
                if addr.is_ipv6() {
                    let _ = s.set_only_v6(false);
                }
                // As much in flight as the data port; nothing to receive.
                if setsockopt_int(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUFFORCE,
                    SOCKET_BUFFER as libc::c_int,
                )
                .is_err()
                {
                    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
                }
                let _ = s.set_recv_buffer_size(FLOW_PORT_RCVBUF);
                let (socket, state) = bind_sender(s, addr)?;
                Ok(FlowPort { socket, state })
            })
            .collect::<io::Result<Vec<_>>>()?;
        self.flows = Arc::from(flows);
        Ok(n)
    }

    /// The flow ports' local addresses, in label order.
    pub fn flow_port_addrs(&self) -> Vec<SocketAddr> {
        self.flows
            .iter()
            .filter_map(|f| f.socket.local_addr().ok())
            .collect()
    }

    /// The socket (and its GSO state) that label `port` leaves from: the data port for 0
    /// or a label beyond the flow ports opened.
    #[inline]
    fn sender(&self, port: u8) -> (&UdpSocket, &UdpSocketState) {
        match usize::from(port)
            .checked_sub(1)
            .and_then(|i| self.flows.get(i))
        {
            Some(f) => (&f.socket, &f.state),
            None => (&self.socket, &self.state),
        }
    }

    /// A second handle on the same socket, for the send thread (`io::worker`): the
    /// kernel serialises sends on one socket, so both may send.
    pub fn try_clone(&self) -> io::Result<Self> {
        let socket = self.socket.try_clone()?;
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Udp {
            socket,
            state,
            flows: self.flows.clone(),
        })
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

    /// Receive a batch into `bufs` (one `recvmmsg`); fills `meta` and returns how many
    /// buffers were used. The socket options it reads (packet info, GRO) are quinn-udp's,
    /// set at bind; the timestamp is ours.
    pub fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [Received]) -> io::Result<usize> {
        let n = bufs.len().min(meta.len()).min(BATCH);
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut controls = [Control([0; CONTROL]); BATCH];
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (((h, name), control), buf) in hdrs
            .iter_mut()
            .zip(names.iter_mut())
            .zip(controls.iter_mut())
            .zip(bufs.iter_mut())
            .take(n)
        {
            let m = &mut h.msg_hdr;
            m.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // IoSliceMut is ABI-compatible with iovec on Unix.
            m.msg_iov = (buf as *mut IoSliceMut<'_>).cast();
            m.msg_iovlen = 1;
            m.msg_control = control.0.as_mut_ptr().cast();
            m.msg_controllen = CONTROL as _;
        }
        // SAFETY: `n` headers, each pointing at a name, one iovec and a control buffer
        // that all outlive the call.
        let r = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = r as usize;
        for (((m, h), name), control) in meta
            .iter_mut()
            .zip(&hdrs)
            .zip(&names)
            .zip(&controls)
            .take(got)
        {
            let len = h.msg_len as usize;
            *m = Received {
                addr: sockaddr(name).unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
                len,
                stride: len,
                dst_ip: None,
                stamp: None,
            };
            let filled = usize::min(h.msg_hdr.msg_controllen as _, CONTROL);
            cmsg::read(&control.0[..filled], m);
        }
        Ok(got)
    }

    /// Send one datagram.
    #[inline]
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(buf, to)
    }

    /// Send one datagram from flow port `port` (0: the data port).
    #[inline]
    pub fn send_from(&self, port: u8, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.sender(port).0.send_to(buf, to)
    }

    /// Datagrams one GSO send may carry (1 when the kernel cannot segment UDP).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Send `buf` as datagrams of `segment` bytes (the last may be shorter) in one call,
    /// segmented by the kernel (UDP GSO), from flow port `port` (0: the data port).
    pub fn send_gso(&self, buf: &[u8], segment: usize, to: SocketAddr, port: u8) -> io::Result<()> {
        let t = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: buf,
            segment_size: (buf.len() > segment).then_some(segment),
            src_ip: None,
        };
        let (socket, state) = self.sender(port);
        state.send(socket.into(), &t)
    }

    /// Send up to `MAX_RUNS` runs of `buf` in one `sendmmsg`, each with its own peer and
    /// segment size, from the first run's flow port: the leading runs that share it.
    /// Returns how many leading runs the kernel took; an error is the first untaken run's.
    /// Written here because quinn-udp sends one message per call and no maintained crate
    /// pairs `sendmmsg` with a GSO size per message. Allocates nothing.
    pub fn send_runs(&self, buf: &[u8], runs: &[Run]) -> io::Result<usize> {
        // cmsghdr (16 bytes on 64-bit Linux) and the u16 segment size, aligned: 24 bytes.
        const CMSG: usize = 32;
        let port = runs.first().map_or(0, |r| r.port);
        let same = runs.iter().take_while(|r| r.port == port).count();
        let runs = &runs[..same.min(MAX_RUNS)];
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
                self.sender(port).0.as_raw_fd(),
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

/// A sender's address as `recvmmsg` wrote it.
fn sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Bind `s` (non-blocking) at `addr`, with DF on every datagram sent: the data port and
/// the flow ports alike.
fn bind_sender(s: Socket, addr: SocketAddr) -> io::Result<(UdpSocket, UdpSocketState)> {
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
    Ok((socket, state))
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

pub(crate) fn set_buffers(s: &Socket, size: usize, force: bool) -> io::Result<()> {
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
    fn each_datagram_read_carries_its_sender_destination_and_receive_time() {
        let rx = Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = rx.local_addr().expect("addr");
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").expect("bind"),
            UdpSocket::bind("127.0.0.1:0").expect("bind"),
        );
        a.send_to(b"one", to).expect("send");
        std::thread::sleep(Duration::from_millis(40));
        b.send_to(b"second", to).expect("send");
        std::thread::sleep(Duration::from_millis(5));
        let mut area = vec![0u8; 4 * SLOT];
        let mut chunks = area.chunks_mut(SLOT);
        let mut iov: [IoSliceMut<'_>; 4] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
        let mut meta = [Received::default(); 4];
        let n = rx.recv(&mut iov, &mut meta).expect("recv");
        let (read_at, read_real) = (Instant::now(), SystemTime::now());
        assert_eq!(n, 2);
        assert_eq!(&iov[0][..meta[0].len], b"one");
        assert_eq!(&iov[1][..meta[1].len], b"second");
        assert_eq!(meta[0].addr, a.local_addr().expect("addr"));
        assert_eq!(meta[1].addr, b.local_addr().expect("addr"));
        assert_eq!(
            (meta[0].stride, meta[1].stride),
            (3, 6),
            "one datagram each"
        );
        assert_eq!(meta[0].dst_ip, Some(to.ip()));
        // The first waited about 45 ms, the second about 5; each arrival in between.
        let (w0, w1) = (meta[0].waited(read_real), meta[1].waited(read_real));
        assert!(
            (Duration::from_millis(40)..Duration::from_secs(5)).contains(&w0),
            "{w0:?}"
        );
        assert!(
            w1 < w0 && w0 - w1 >= Duration::from_millis(35),
            "{w0:?} {w1:?}"
        );
        let (t0, t1) = (
            meta[0].arrived(read_at, read_real),
            meta[1].arrived(read_at, read_real),
        );
        assert!(t0 < t1 && t1 <= read_at);
        // Nothing waits now.
        assert_eq!(
            rx.recv(&mut iov, &mut meta).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
    }

    #[test]
    fn an_ipv4_datagram_on_the_dual_stack_socket_keeps_its_stamp_and_destination() {
        // The kernel's largest set of control messages: all must fit the buffer, or the
        // last (the destination) is cut off and a multicast copy reads as unicast.
        let rx = Udp::bind("[::]:0".parse().expect("addr")).expect("bind [::]");
        let port = rx.local_addr().expect("addr").port();
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        SockRef::from(&tx).set_tos_v4(0x02).expect("ECT(0)");
        tx.send_to(b"mapped", ("127.0.0.1", port)).expect("send");
        std::thread::sleep(Duration::from_millis(5));
        let mut area = vec![0u8; SLOT];
        let mut iov = [IoSliceMut::new(&mut area)];
        let mut meta = [Received::default(); 1];
        assert_eq!(rx.recv(&mut iov, &mut meta).expect("recv"), 1);
        assert_eq!(&iov[0][..meta[0].len], b"mapped");
        assert!(meta[0].stamp.is_some(), "no receive time");
        assert_eq!(meta[0].dst_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn datagrams_merged_by_gro_read_back_as_one_buffer_with_their_size() {
        let rx = Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = rx.local_addr().expect("addr");
        let tx = Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        if tx.max_gso_segments() < 2 {
            assert!(
                std::env::var("CI").is_err(),
                "the kernel has no UDP GSO: GRO cannot be tested"
            );
            return;
        }
        // Ten datagrams of 1000 bytes in one GSO send arrive merged on loopback.
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i / 1000) as u8).collect();
        tx.send_gso(&payload, 1000, to, 0).expect("send");
        let mut area = vec![0u8; SLOT];
        let mut iov = [IoSliceMut::new(&mut area)];
        let mut meta = [Received::default()];
        let mut got = Vec::new();
        let mut strides = Vec::new();
        while got.len() < payload.len() {
            let n = rx.recv(&mut iov, &mut meta).expect("recv");
            assert_eq!(n, 1);
            got.extend_from_slice(&iov[0][..meta[0].len]);
            strides.push((meta[0].len, meta[0].stride));
        }
        assert_eq!(got, payload);
        assert!(
            strides
                .iter()
                .all(|&(len, stride)| stride == 1000 && len % 1000 == 0),
            "{strides:?}"
        );
        assert!(
            strides.iter().any(|&(len, _)| len > 1000),
            "nothing merged: {strides:?}"
        );
        assert!(meta[0].stamp.is_some());
    }
}
