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

/// Nanoseconds the main thread of a process spent runnable but waiting for
/// a CPU (field 2 of `/proc/PID/schedstat`): time other processes took.
pub fn runqueue_wait_ns(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    s.split_whitespace().nth(1)?.parse().ok()
}

/// Measures the CPU share of one process over an interval, in percent of one
/// core (200 % is two cores flat out), and how long it waited for a CPU.
pub struct CpuMeter {
    pid: String,
    start_cpu: Option<f64>,
    start_wait: Option<u64>,
    start: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pid: &str) -> CpuMeter {
        CpuMeter {
            pid: pid.to_string(),
            start_cpu: cpu_seconds(pid),
            start_wait: runqueue_wait_ns(pid),
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

    /// Percent of the interval the process was ready to run but had no CPU:
    /// on a shared machine, the share other work took from it.
    pub fn wait_percent(&self) -> Option<f64> {
        let wall = self.start.elapsed().as_secs_f64();
        let now = runqueue_wait_ns(&self.pid)?;
        let before = self.start_wait?;
        (wall > 0.0).then(|| now.saturating_sub(before) as f64 / 1e9 / wall * 100.0)
    }
}

/// Above this share of its core a process counts as CPU-bound.
pub const CPU_BOUND_PCT: f64 = 90.0;
/// Above this share of the window spent waiting for a CPU, a process was
/// starved by other work on the machine.
pub const STARVED_PCT: f64 = 10.0;

/// CPU use of the server and the generator over a measured window.
#[derive(Clone, Copy, Default)]
pub struct Usage {
    pub server_cpu: Option<f64>,
    pub bench_cpu: Option<f64>,
    pub server_wait: Option<f64>,
    pub bench_wait: Option<f64>,
}

impl Usage {
    pub fn read(server: Option<&CpuMeter>, me: &CpuMeter) -> Usage {
        Usage {
            server_cpu: server.and_then(CpuMeter::percent),
            bench_cpu: me.percent(),
            server_wait: server.and_then(CpuMeter::wait_percent),
            bench_wait: me.wait_percent(),
        }
    }

    pub fn generator_cpu_bound(&self) -> bool {
        self.bench_cpu.is_some_and(|c| c >= CPU_BOUND_PCT)
    }

    pub fn server_cpu_bound(&self) -> bool {
        self.server_cpu.is_some_and(|c| c >= CPU_BOUND_PCT)
    }

    /// The generator's own limits, as notes for the report.
    pub fn generator_notes(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(c) = self.bench_cpu
            && c >= CPU_BOUND_PCT
        {
            v.push(format!("generator CPU {c:.0}%"));
        }
        if let Some(w) = self.bench_wait
            && w >= STARVED_PCT
        {
            v.push(format!(
                "generator waited for a CPU {w:.0}% of the time (other threads or processes)"
            ));
        }
        v
    }

    /// The server's, likewise.
    pub fn server_notes(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(c) = self.server_cpu
            && c >= CPU_BOUND_PCT
        {
            v.push(format!("server CPU {c:.0}%"));
        }
        if let Some(w) = self.server_wait
            && w >= STARVED_PCT
        {
            v.push(format!(
                "server waited for a CPU {w:.0}% of the time (other threads or processes)"
            ));
        }
        v
    }

    pub fn fill(&self, row: &mut crate::report::Row) {
        let cols = [
            ("server_cpu_pct", self.server_cpu),
            ("bench_cpu_pct", self.bench_cpu),
            ("server_wait_pct", self.server_wait),
            ("bench_wait_pct", self.bench_wait),
        ];
        for (col, v) in cols {
            if let Some(v) = v {
                row.setf(col, v, 1);
            }
        }
    }

    /// "server 40 %, generator 35 %" plus waits worth mentioning.
    pub fn describe(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0} %"));
        let mut s = format!(
            "server {}, generator {}",
            pct(self.server_cpu),
            pct(self.bench_cpu)
        );
        let waits = [("server", self.server_wait), ("generator", self.bench_wait)];
        for (who, w) in waits {
            if let Some(w) = w
                && w >= 1.0
            {
                s.push_str(&format!("; {who} waited for a CPU {w:.0} % of the time"));
            }
        }
        s
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
/// (The standard library and `mio` have no bind-before-connect.)
pub fn connect_from(src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<std::net::TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&fd, &SocketAddrV4::new(src, 0))?;
    match rustix::net::connect(&fd, &dst) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => Ok(std::net::TcpStream::from(fd)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc() {
        assert!(cpu_seconds("self").is_some());
        // schedstat needs CONFIG_SCHED_INFO; where it exists it parses.
        if std::path::Path::new("/proc/self/schedstat").exists() {
            assert!(runqueue_wait_ns("self").is_some());
        }
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
