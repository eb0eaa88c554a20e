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

/// Nanoseconds the main thread of a process spent on a CPU (field 1 of
/// `/proc/PID/schedstat`): exact, where `/proc/PID/stat` counts 10 ms ticks.
pub fn main_thread_cpu_ns(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Measures the CPU share of one process over an interval, in percent of one
/// core (200 % is two cores flat out), and how long it waited for a CPU.
pub struct CpuMeter {
    pid: String,
    start_cpu: Option<f64>,
    start_wait: Option<u64>,
    start_main_ns: Option<u64>,
    start: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pid: &str) -> CpuMeter {
        CpuMeter {
            pid: pid.to_string(),
            start_cpu: cpu_seconds(pid),
            start_wait: runqueue_wait_ns(pid),
            start_main_ns: main_thread_cpu_ns(pid),
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

    /// CPU seconds of the main thread since `start`, to the nanosecond
    /// where schedstat exists (else the whole process, in ticks). Redis runs
    /// every command on its main thread, so this is its cost of the chat.
    pub fn main_thread_seconds(&self) -> Option<f64> {
        match (main_thread_cpu_ns(&self.pid), self.start_main_ns) {
            (Some(now), Some(before)) => Some(now.saturating_sub(before) as f64 / 1e9),
            _ => Some(cpu_seconds(&self.pid)? - self.start_cpu?),
        }
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

/// CPU use of the server (or every cluster node, and Redis) and the
/// generator over a measured window.
#[derive(Clone, Default)]
pub struct Usage {
    /// All nodes together (one node: the server).
    pub server_cpu: Option<f64>,
    pub bench_cpu: Option<f64>,
    /// The longest wait for a CPU among the nodes.
    pub server_wait: Option<f64>,
    pub bench_wait: Option<f64>,
    /// Each node's CPU, when there are several.
    pub nodes_cpu: Vec<Option<f64>>,
    pub redis_cpu: Option<f64>,
    /// Redis main-thread CPU seconds over the window, for the cost per chat
    /// event.
    pub redis_cpu_s: Option<f64>,
}

fn sum(v: &[Option<f64>]) -> Option<f64> {
    v.iter().copied().sum()
}

fn max(v: &[Option<f64>]) -> Option<f64> {
    v.iter().flatten().copied().reduce(f64::max)
}

impl Usage {
    pub fn read(servers: &[CpuMeter], redis: Option<&CpuMeter>, me: &CpuMeter) -> Usage {
        let nodes_cpu: Vec<Option<f64>> = servers.iter().map(CpuMeter::percent).collect();
        let waits: Vec<Option<f64>> = servers.iter().map(CpuMeter::wait_percent).collect();
        Usage {
            server_cpu: sum(&nodes_cpu),
            bench_cpu: me.percent(),
            server_wait: max(&waits),
            bench_wait: me.wait_percent(),
            nodes_cpu: if servers.len() > 1 {
                nodes_cpu
            } else {
                Vec::new()
            },
            redis_cpu: redis.and_then(CpuMeter::percent),
            redis_cpu_s: redis.and_then(CpuMeter::main_thread_seconds),
        }
    }

    pub fn generator_cpu_bound(&self) -> bool {
        self.bench_cpu.is_some_and(|c| c >= CPU_BOUND_PCT)
    }

    /// One node near a full core (several nodes sharing a core show as the
    /// wait for a CPU instead).
    pub fn server_cpu_bound(&self) -> bool {
        if self.nodes_cpu.is_empty() {
            self.server_cpu.is_some_and(|c| c >= CPU_BOUND_PCT)
        } else {
            max(&self.nodes_cpu).is_some_and(|c| c >= CPU_BOUND_PCT)
        }
    }

    /// Redis CPU microseconds per chat event (`events` sent in the window).
    pub fn redis_us_per_event(&self, events: u64) -> Option<f64> {
        let s = self.redis_cpu_s?;
        (events > 0).then(|| s * 1e6 / events as f64)
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
            ("redis_cpu_pct", self.redis_cpu),
        ];
        for (col, v) in cols {
            if let Some(v) = v {
                row.setf(col, v, 1);
            }
        }
        if !self.nodes_cpu.is_empty() {
            row.set("nodes_cpu_pct", self.nodes_text("/"));
        }
    }

    /// Each node's CPU, "40/38".
    fn nodes_text(&self, sep: &str) -> String {
        self.nodes_cpu
            .iter()
            .map(|c| c.map_or("n/a".to_string(), |c| format!("{c:.0}")))
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// "server 40 %, generator 35 %" plus waits worth mentioning.
    pub fn describe(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0} %"));
        let mut s = format!("server {}", pct(self.server_cpu));
        if !self.nodes_cpu.is_empty() {
            s.push_str(&format!(" (nodes {} %)", self.nodes_text(" + ")));
        }
        if self.redis_cpu.is_some() {
            s.push_str(&format!(", redis {}", pct(self.redis_cpu)));
        }
        s.push_str(&format!(", generator {}", pct(self.bench_cpu)));
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
            // Tests run on their own threads, not the process's main one.
            let m = CpuMeter::start("thread-self");
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while t.elapsed() < std::time::Duration::from_millis(30) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let spent = m.main_thread_seconds().unwrap();
            assert!(spent > 0.01 && spent < 1.0, "{spent}");
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
