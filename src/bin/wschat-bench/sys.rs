//! What the generator needs from the operating system beyond `mio`: reading
//! `/proc` for CPU time and memory, raising the descriptor limit, and a
//! non-blocking connect from a chosen source address.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Linux exports CPU times in `/proc` in USER_HZ, which the kernel ABI fixes
/// at 100 on every architecture (`sysconf(_SC_CLK_TCK)` returns it).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU seconds of a process (`pid` or "self"), from fields
/// 14 and 15 of `/proc/PID/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are
    // counted after the last ')'. There, field 3 (state) is index 0.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SEC)
}

/// Resident set size in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Measures the CPU share of one process over an interval, in percent of one
/// core (200 % is two cores flat out).
pub struct CpuMeter {
    pid: String,
    start_cpu: Option<f64>,
    start: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pid: &str) -> CpuMeter {
        CpuMeter {
            pid: pid.to_string(),
            start_cpu: cpu_seconds(pid),
            start: std::time::Instant::now(),
        }
    }

    /// Percent of one core since `start`; `None` if the process is gone or
    /// `/proc` is unreadable.
    pub fn percent(&self) -> Option<f64> {
        let wall = self.start.elapsed().as_secs_f64();
        let now = cpu_seconds(&self.pid)?;
        let before = self.start_cpu?;
        (wall > 0.0).then(|| (now - before) / wall * 100.0)
    }
}

/// Raises the soft descriptor limit to the hard limit; returns the new soft
/// limit. Ten thousand sockets do not fit in the usual soft limit of 1024.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        // Failure leaves the old limit, which `connect` then reports as EMFILE.
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Starts a non-blocking TCP connect to `dst` from `src` (port chosen by the
/// kernel). Each source address has its own ephemeral port range, which is
/// how the connect mode gets past about 28 000 connections to one port.
///
/// The standard library and `mio` have no bind-before-connect and the
/// project's `rustix` is built without its `net` feature, so this makes the
/// three system calls itself through the C library the standard library
/// already links.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn connect_from(src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<std::net::TcpStream> {
    use std::os::fd::{FromRawFd, OwnedFd};

    // `struct sockaddr_in` from <netinet/in.h>: 16 bytes, fields in network
    // byte order.
    #[repr(C)]
    struct SockaddrIn {
        family: u16,
        port: [u8; 2],
        addr: [u8; 4],
        zero: [u8; 8],
    }
    const AF_INET: i32 = 2;
    const SOCK_STREAM: i32 = 1;
    // Same values on x86_64 and aarch64 (the cfg above).
    const SOCK_NONBLOCK: i32 = 0o4000;
    const SOCK_CLOEXEC: i32 = 0o2000000;
    const EINPROGRESS: i32 = 115;

    unsafe extern "C" {
        fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
        fn bind(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
        fn connect(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    }

    let sa = |ip: Ipv4Addr, port: u16| SockaddrIn {
        family: AF_INET as u16,
        port: port.to_be_bytes(),
        addr: ip.octets(),
        zero: [0; 8],
    };
    let len = std::mem::size_of::<SockaddrIn>() as u32;
    // SAFETY: plain system calls on integers and on pointers to live,
    // correctly laid out `sockaddr_in` values; the kernel does not keep the
    // pointers past the call.
    let fd = unsafe { socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor this function just created and owns; the
    // `OwnedFd` closes it on every path below.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let local = sa(src, 0);
    // SAFETY: as for `socket` above.
    if unsafe { bind(fd, &local, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let remote = sa(*dst.ip(), dst.port());
    // SAFETY: as for `socket` above.
    if unsafe { connect(fd, &remote, len) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(EINPROGRESS) {
            return Err(err);
        }
    }
    Ok(std::net::TcpStream::from(owned))
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub fn connect_from(_src: Ipv4Addr, _dst: SocketAddrV4) -> io::Result<std::net::TcpStream> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "source addresses need Linux on x86_64 or aarch64",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc() {
        assert!(cpu_seconds("self").is_some());
        assert!(rss_kib("self").unwrap_or(0) > 0);
    }

    #[test]
    fn connects_from_a_loopback_source() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = match listener.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("not v4: {other}"),
        };
        let stream = connect_from(Ipv4Addr::new(127, 0, 0, 2), dst).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        drop(stream);
    }
}
