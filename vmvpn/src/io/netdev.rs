//! Network interface settings through ioctls: MTU, up, bridge ports, TAP persistence,
//! and finding the interface that holds an address.
//!
//! Done by hand because each is one ioctl; a netlink crate would be far more code to carry.

use std::ffi::CStr;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Add a port to a bridge (linux/sockios.h); libc has it only for Android.
const SIOCBRADDIF: libc::Ioctl = 0x89a2;

/// A socket to issue interface ioctls on.
fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

fn ioctl(fd: RawFd, request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `req` is a valid, initialised ifreq that outlives the call.
    let r = unsafe { libc::ioctl(fd, request, req as *mut libc::ifreq) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The MTU of an interface.
pub fn mtu(name: &str) -> io::Result<u32> {
    let s = ctl_socket()?;
    let mut req = ifreq(name)?;
    ioctl(s.as_raw_fd(), libc::SIOCGIFMTU as libc::Ioctl, &mut req)?;
    // SAFETY: SIOCGIFMTU fills the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// Set an interface's MTU.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ioctl(s.as_raw_fd(), libc::SIOCSIFMTU as libc::Ioctl, &mut req)
}

/// Bring an interface up.
pub fn set_up(name: &str) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut req = ifreq(name)?;
    ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &mut req)
}

/// Make `port` a port of the Linux bridge `bridge`.
pub fn bridge_add(bridge: &str, port: &str) -> io::Result<()> {
    let cname =
        std::ffi::CString::new(port).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: cname is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let s = ctl_socket()?;
    let mut req = ifreq(bridge)?;
    req.ifr_ifru.ifru_ifindex = index as libc::c_int;
    ioctl(s.as_raw_fd(), SIOCBRADDIF, &mut req)
}

/// Keep (or stop keeping) a TAP after its last file descriptor closes.
pub fn set_persist(tap_fd: RawFd, persist: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes an int by value; tap_fd is an open TAP descriptor.
    let r = unsafe { libc::ioctl(tap_fd, libc::TUNSETPERSIST, libc::c_int::from(persist)) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether an interface of this name exists.
pub fn exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// The name of the interface that holds `addr`, if any.
pub fn interface_with_address(addr: IpAddr) -> io::Result<Option<String>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it names.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if ip == Some(addr) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            found = Some(
                unsafe { CStr::from_ptr(ifa.ifa_name) }
                    .to_string_lossy()
                    .into_owned(),
            );
            break;
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_has_an_mtu() {
        let lo = interface_with_address(IpAddr::from([127, 0, 0, 1])).expect("getifaddrs");
        assert_eq!(lo.as_deref(), Some("lo"));
        assert!(mtu("lo").expect("mtu of lo") >= 1500);
        assert!(exists("lo"));
        assert!(
            interface_with_address(IpAddr::from([192, 0, 2, 77]))
                .expect("getifaddrs")
                .is_none()
        );
    }

    #[test]
    fn bad_names_are_errors_not_panics() {
        assert!(mtu("").is_err());
        assert!(mtu("this-name-is-far-too-long").is_err());
        assert!(mtu("nonexistent0").is_err());
    }
}
