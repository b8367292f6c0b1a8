//! `vmvpn-linkem`: a userspace link emulator for the accuracy tests (no netem here).
//!
//! Bridges two interfaces with AF_PACKET sockets and forwards every frame after the
//! configured delay, jitter and loss of its direction:
//!
//!   vmvpn-linkem --a e0 --b e1 --a-to-b "delay=20ms,loss=0.05" --b-to-a "delay=0ms" \
//!                --stats /tmp/linkem.json [--seed 1]
//!
//! One thread, one `ppoll` loop; frames wait in a timer wheel (see `linkem.rs`). Counters
//! are written to `--stats` as JSON every 200 ms and at exit (SIGTERM/SIGINT).

use std::ffi::CString;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vmvpn_tests::linkem::{Direction, Impairment, Wheel, complete_l4_checksum};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Buffer per frame: an MTU-1500 frame with VLAN tags fits; larger (GSO) frames are counted.
const MAX_FRAME: usize = 2048;
/// Frames in flight at most (16 MB): 20 ms at 400k frames/s.
const POOL: usize = 8192;

struct Args {
    a: String,
    b: String,
    a_to_b: Impairment,
    b_to_a: Impairment,
    stats: Option<PathBuf>,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = None;
    let mut b = None;
    let mut a_to_b = Impairment::default();
    let mut b_to_a = Impairment::default();
    let mut stats = None;
    let mut seed = 1;
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--a" => a = Some(v()?),
            "--b" => b = Some(v()?),
            "--a-to-b" => a_to_b = Impairment::parse(&v()?)?,
            "--b-to-a" => b_to_a = Impairment::parse(&v()?)?,
            "--stats" => stats = Some(PathBuf::from(v()?)),
            "--seed" => seed = v()?.parse().map_err(|_| "--seed: a number")?,
            "-h" | "--help" => {
                return Err(
                    "usage: vmvpn-linkem --a IF --b IF [--a-to-b SPEC] [--b-to-a SPEC] \
                     [--stats FILE] [--seed N]\n  SPEC: delay=20ms,jitter=1ms,loss=0.05"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Args {
        a: a.ok_or("--a IF is required")?,
        b: b.ok_or("--b IF is required")?,
        a_to_b,
        b_to_a,
        stats,
        seed,
    })
}

/// A packet socket bound to one interface, seeing what arrives there (not what it sends).
struct PacketSocket {
    fd: i32,
    mtu: usize,
}

impl PacketSocket {
    fn open(ifname: &str) -> io::Result<Self> {
        let name = CString::new(ifname).map_err(|_| io::Error::other("bad interface name"))?;
        // SAFETY: name is a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::other(format!("no interface {ifname}")));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = PacketSocket {
            fd,
            mtu: mtu_of(ifname),
        };
        let one: libc::c_int = 1;
        for opt in [libc::PACKET_IGNORE_OUTGOING, libc::PACKET_AUXDATA] {
            // SAFETY: setsockopt with a valid int option value.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    opt,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let big: libc::c_int = 8 << 20;
        for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // SAFETY: as above; failure only leaves the default size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    &big as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: binds our socket to a properly sized sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    /// One frame into `buf`: (length, checksum not ready), or None when nothing waits.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, bool)>> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut cmsg = [0u64; 16];
        // SAFETY: msghdr is plain data; zeroed is valid before we fill it.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cmsg);
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(self.fd, &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        let mut partial = false;
        // SAFETY: walking the control messages the kernel wrote, with the libc macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let aux = std::ptr::read_unaligned(
                        libc::CMSG_DATA(c) as *const libc::tpacket_auxdata
                    );
                    partial = aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(Some((n as usize, partial)))
    }

    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: sends from a valid slice on our bound socket.
        let n = unsafe {
            libc::send(
                self.fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        n == frame.len() as isize
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: closing our own fd once.
        unsafe { libc::close(self.fd) };
    }
}

fn mtu_of(ifname: &str) -> usize {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}

fn write_stats(path: &Option<PathBuf>, dirs: &[Direction; 2]) {
    let Some(p) = path else { return };
    let v = serde_json::json!({
        "a_to_b": dirs[0].stats,
        "b_to_a": dirs[1].stats,
    });
    let tmp = p.with_extension("tmp");
    if std::fs::write(&tmp, v.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, p);
    }
}

fn run(args: Args) -> io::Result<()> {
    let socks = [PacketSocket::open(&args.a)?, PacketSocket::open(&args.b)?];
    let mut dirs = [
        Direction::new(args.a_to_b, args.seed),
        Direction::new(args.b_to_a, args.seed.wrapping_mul(31).wrapping_add(7)),
    ];
    // Frames live in a fixed pool of buffers: (output socket, length, bytes).
    let mut pool: Vec<Box<[u8]>> = (0..POOL).map(|_| vec![0u8; MAX_FRAME].into()).collect();
    let mut lens = vec![(0usize, 0usize); POOL];
    let mut free: Vec<usize> = (0..POOL).rev().collect();
    let mut wheel: Wheel<usize> = Wheel::new(Duration::from_micros(100), 1 << 16);
    let mut due = Vec::with_capacity(1024);
    let mut scratch = vec![0u8; MAX_FRAME];
    let start = Instant::now();
    let now_ns = || start.elapsed().as_nanos() as u64;
    let mut last_stats = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        let t = now_ns();
        let wait_ns = wheel
            .next_wake(t)
            .map_or(50_000_000, |w| w.saturating_sub(t))
            .min(50_000_000);
        let ts = libc::timespec {
            tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
        };
        let mut fds = [socks[0].fd, socks[1].fd].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: fds and ts are valid for the call; no signal mask change.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (i, f) in fds.iter().enumerate() {
            if f.revents & libc::POLLIN == 0 {
                continue;
            }
            // Bounded per wake-up so the other side and the wheel get their turn.
            for _ in 0..256 {
                let Some(slot) = free.last().copied() else {
                    // Pool exhausted: read and count as lost, like a full queue.
                    match socks[i].recv(&mut scratch)? {
                        Some(_) => {
                            dirs[i].stats.frames_in += 1;
                            dirs[i].stats.dropped += 1;
                            continue;
                        }
                        None => break,
                    }
                };
                let Some((n, partial)) = socks[i].recv(&mut pool[slot])? else {
                    break;
                };
                let out = 1 - i;
                let Some(at) = dirs[i].admit(now_ns()) else {
                    continue;
                };
                if n > MAX_FRAME || n > socks[out].mtu + 14 + 4 {
                    dirs[i].stats.too_big += 1;
                    continue;
                }
                if partial && complete_l4_checksum(&mut pool[slot][..n]) {
                    dirs[i].stats.checksummed += 1;
                }
                free.pop();
                lens[slot] = (out, n);
                wheel.insert(at, slot);
            }
        }
        due.clear();
        wheel.advance(now_ns(), &mut due);
        for &slot in &due {
            let (out, n) = lens[slot];
            if socks[out].send(&pool[slot][..n]) {
                dirs[1 - out].stats.sent += 1;
            }
            free.push(slot);
        }
        if last_stats.elapsed() >= Duration::from_millis(200) {
            write_stats(&args.stats, &dirs);
            last_stats = Instant::now();
        }
    }
    write_stats(&args.stats, &dirs);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vmvpn-linkem: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmvpn-linkem: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
