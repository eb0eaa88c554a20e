//! `fanout`: C clients join the chat; S of them send chat messages on a fixed
//! open-loop schedule; every client receives every broadcast and checks it.
//!
//! Each message text is `<sender>:<seq>:<send_ns>:<padding>`, where
//! `send_ns` is the *scheduled* send time on the generator's monotonic clock.
//! Measuring from the schedule rather than from the moment the bytes left
//! keeps the numbers honest when anything falls behind (no "coordinated
//! omission"): a late send is a late delivery. Every receiver tracks the last
//! sequence number per sender, so loss shows as gaps and misordering as
//! reorders, independently of the delivery count.
//!
//! A run is one or more *steps* on one set of connections: warm-up (sent,
//! not counted), the measured window, a drain that waits for late
//! deliveries, and, between ramp steps, a settle that waits until the server
//! has gone quiet so a failed step's backlog does not leak into the next.

use crate::args::Opts;
use crate::conn::{Conn, ConnError, Incoming, State};
use crate::report::Row;
use crate::stats::{Histogram, ms};
use crate::sys::{CpuMeter, Usage};
use crate::ws;
use mio::{Events, Poll, Token};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Criteria for "sustained" (the issue's definition).
const MIN_DELIVERY_PCT: f64 = 99.9;
const MAX_P99_MS: f64 = 100.0;
/// The generator calls itself the bottleneck when CPU-bound (see
/// `sys::CPU_BOUND_PCT`) or when its sends leave this much later than
/// scheduled (p99).
const SEND_LAG_LIMIT_MS: f64 = 10.0;

pub struct Session<'a> {
    o: &'a Opts,
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    alive: Vec<bool>,
    join_sent: Vec<bool>,
    rx: Rx,
    scratch: Vec<u8>,
    /// Next sequence number per sender.
    next_seq: Vec<u32>,
    epoch: Instant,
    /// Reused message buffer.
    msg: Vec<u8>,
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// The send schedule while a step runs.
    sched: Option<Schedule>,
    /// Connections that stopped reading on their budget with input left.
    more: Vec<usize>,
    in_more: Vec<bool>,
}

/// The open-loop schedule of one step: message `k` is due at
/// `start_ns + k * interval` and goes out from sender `k % S`.
struct Schedule {
    start_ns: u64,
    interval: f64,
    k: u64,
    total: u64,
}

impl Schedule {
    fn due(&self, k: u64) -> u64 {
        self.start_ns + (k as f64 * self.interval) as u64
    }
}

/// Bytes one connection may read per turn before the others (and the send
/// schedule) get theirs.
const READ_BUDGET: usize = 1 << 20;
/// Events handled between two looks at the send schedule.
const EVENTS_PER_SEND_CHECK: usize = 32;

mod rx;
use rx::{Rx, Step};

/// The outcome of one step, for the ramp.
pub struct StepResult {
    pub row: Row,
    pub sustained: bool,
    pub generator_limited: bool,
    pub usage: Usage,
}

impl<'a> Session<'a> {
    /// Connects `o.clients` clients and joins each with a name; returns when
    /// every client has seen its own join event. `epoch` is the clock of
    /// message times, shared by the sessions of one ramp.
    pub fn open(o: &'a Opts, generation: u32, epoch: Instant) -> Result<Session<'a>, String> {
        if o.targets.len() > 1 {
            wait_healthy(
                &o.targets,
                o.tls.as_ref(),
                Duration::from_secs_f64(o.setup_timeout),
            )?;
        }
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        let names = (0..o.clients)
            .map(|i| {
                if generation == 0 {
                    format!("{}{i}", o.name_prefix)
                } else {
                    format!("{}{i}g{generation}", o.name_prefix)
                }
            })
            .collect();
        let mut s = Session {
            o,
            poll,
            events: Events::with_capacity(1024),
            conns: Vec::with_capacity(o.clients),
            alive: Vec::with_capacity(o.clients),
            join_sent: vec![false; o.clients],
            rx: Rx {
                senders: o.senders,
                names,
                joined: vec![false; o.clients],
                joined_count: 0,
                last_seq: vec![0; o.clients * o.senders],
                step: Step {
                    measure_from_ns: u64::MAX,
                    end_ns: 0,
                    ..Step::default()
                },
                errors: BTreeMap::new(),
                unexpected: 0,
                opened_ns: epoch.elapsed().as_nanos() as u64,
                stale: 0,
                last_frame_ns: 0,
            },
            scratch: vec![0; 256 * 1024],
            next_seq: vec![0; o.senders],
            epoch,
            msg: Vec::with_capacity(o.size + 64),
            dirty: Vec::new(),
            is_dirty: vec![false; o.senders],
            sched: None,
            more: Vec::new(),
            in_more: vec![false; o.clients],
        };
        let deadline = Instant::now() + Duration::from_secs_f64(o.setup_timeout);
        while s.rx.joined_count < o.clients {
            // Keep at most `concurrency` connections between connect and join.
            while s.conns.len() < o.clients && s.conns.len() - s.rx.joined_count < o.concurrency {
                let i = s.conns.len();
                let target = target_of(o, i);
                let c = Conn::connect(
                    s.poll.registry(),
                    Token(i),
                    target,
                    None,
                    &o.path,
                    i as u64 + 1,
                    o.tls.as_ref(),
                )
                .map_err(|e| format!("connect {target}: {e}"))?;
                s.conns.push(c);
                s.alive.push(true);
            }
            s.poll_once(Duration::from_millis(20))?;
            let dead = s.alive.iter().filter(|a| !**a).count();
            if dead > 0 {
                return Err(format!(
                    "{dead} client(s) failed while joining: {}",
                    s.error_summary()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "setup timed out after {:.0} s: {} of {} clients joined",
                    o.setup_timeout, s.rx.joined_count, o.clients
                ));
            }
        }
        s.settle(Duration::from_millis(300), Duration::from_secs(5))?;
        Ok(s)
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn error_summary(&self) -> String {
        if self.rx.errors.is_empty() {
            return "none".into();
        }
        self.rx
            .errors
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn mark_dead(&mut self, i: usize, e: ConnError) {
        if !self.alive[i] {
            return;
        }
        self.alive[i] = false;
        let _ = self.poll.registry().deregister(&mut self.conns[i].stream);
        self.conns[i].state = State::Closed;
        *self.rx.errors.entry(e.kind()).or_default() += 1;
        self.rx.step.disconnects += 1;
    }

    /// Waits up to `timeout` for readiness and handles every event.
    fn poll_once(&mut self, timeout: Duration) -> Result<(), String> {
        let timeout = if self.more.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(format!("poll: {e}"));
        }
        let tokens: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_readable() || e.is_read_closed(),
                    e.is_writable(),
                )
            })
            .collect();
        for (n, (i, readable, writable)) in tokens.into_iter().enumerate() {
            if n % EVENTS_PER_SEND_CHECK == EVENTS_PER_SEND_CHECK - 1 {
                self.send_due();
            }
            if i >= self.conns.len() || !self.alive[i] {
                continue;
            }
            if writable && let Err(e) = self.conns[i].on_writable() {
                self.mark_dead(i, e);
                continue;
            }
            if readable && !self.read_conn(i) {
                continue;
            }
            if self.conns[i].is_open() && !self.join_sent[i] {
                self.join_sent[i] = true;
                let join =
                    serde_json::json!({"type": "join", "name": self.rx.names[i]}).to_string();
                self.conns[i].queue_text(join.as_bytes());
                if let Err(e) = self.conns[i].flush() {
                    self.mark_dead(i, e);
                }
            }
        }
        let more = std::mem::take(&mut self.more);
        for (n, &i) in more.iter().enumerate() {
            if n % EVENTS_PER_SEND_CHECK == EVENTS_PER_SEND_CHECK - 1 {
                self.send_due();
            }
            self.in_more[i] = false;
            if self.alive[i] {
                self.read_conn(i);
            }
        }
        Ok(())
    }

    /// Reads from connection `i` up to its budget; false if it died.
    fn read_conn(&mut self, i: usize) -> bool {
        let now = self.now_ns();
        let Session {
            conns, rx, scratch, ..
        } = self;
        let res = conns[i].read_some(scratch, READ_BUDGET, |inc| match inc {
            Incoming::Open => {}
            Incoming::Message(ws::OP_TEXT, p) => rx.on_message(i, p, now),
            Incoming::Message(_, _) => rx.unexpected += 1,
        });
        match res {
            Ok(more) => {
                if more && !self.in_more[i] {
                    self.in_more[i] = true;
                    self.more.push(i);
                }
                true
            }
            Err(e) => {
                self.mark_dead(i, e);
                false
            }
        }
    }

    /// Queues every message whose time has come, then writes them out.
    fn send_due(&mut self) {
        let Some(mut sc) = self.sched.take() else {
            return;
        };
        let now = self.now_ns();
        let measure_from = self.rx.step.measure_from_ns;
        while sc.k < sc.total {
            let due = sc.due(sc.k);
            if due > now {
                break;
            }
            let sender = (sc.k % self.o.senders as u64) as usize;
            if self.queue_message(sender, due) && due >= measure_from {
                self.rx.step.sent += 1;
                self.rx.step.lag.record(now - due);
            }
            sc.k += 1;
        }
        self.sched = Some(sc);
        self.flush_dirty();
    }

    /// Runs the loop until no frame has arrived for `quiet`, at most `max`.
    fn settle(&mut self, quiet: Duration, max: Duration) -> Result<(), String> {
        let until = Instant::now() + max;
        self.rx.last_frame_ns = self.now_ns();
        let quiet_ns = quiet.as_nanos() as u64;
        while self.now_ns().saturating_sub(self.rx.last_frame_ns) < quiet_ns
            && Instant::now() < until
        {
            self.poll_once(Duration::from_millis(20))?;
        }
        Ok(())
    }

    pub fn alive_count(&self) -> usize {
        self.alive.iter().filter(|a| **a).count()
    }

    /// Queues message `k` of the schedule (sender `k % S`) with its
    /// scheduled time; returns false when that sender is gone.
    fn queue_message(&mut self, sender: usize, scheduled_ns: u64) -> bool {
        if !self.alive[sender] {
            return false;
        }
        self.next_seq[sender] += 1;
        let seq = self.next_seq[sender];
        self.msg.clear();
        let name = &self.rx.names[sender];
        let head = format!("{sender}:{seq}:{scheduled_ns}:");
        self.msg.extend_from_slice(b"{\"name\":\"");
        self.msg.extend_from_slice(name.as_bytes());
        self.msg.extend_from_slice(b"\",\"message\":\"");
        self.msg.extend_from_slice(head.as_bytes());
        let pad = self.o.size.saturating_sub(head.len());
        self.msg.extend(std::iter::repeat_n(b'x', pad));
        self.msg.extend_from_slice(b"\"}");
        let Session { conns, msg, .. } = self;
        conns[sender].queue_text(msg);
        if !self.is_dirty[sender] {
            self.is_dirty[sender] = true;
            self.dirty.push(sender);
        }
        true
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.is_dirty[i] = false;
            if self.alive[i] {
                match self.conns[i].flush() {
                    Ok(()) => {
                        self.rx.step.max_unsent =
                            self.rx.step.max_unsent.max(self.conns[i].pending_out())
                    }
                    Err(e) => self.mark_dead(i, e),
                }
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Runs one step at `rate` messages/s: warm-up, measured window, drain.
    pub fn step(&mut self, rate: f64, phase: &str) -> Result<StepResult, String> {
        let o = self.o;
        let receivers = self.alive_count() as u64;
        let start_ns = self.now_ns();
        let measure_from_ns = start_ns + (o.warmup * 1e9) as u64;
        let end_ns = measure_from_ns + (o.duration * 1e9) as u64;
        self.rx.step = Step {
            measure_from_ns,
            end_ns,
            ..Step::default()
        };
        let interval = 1e9 / rate;
        self.sched = Some(Schedule {
            start_ns,
            interval,
            k: 0,
            total: ((end_ns - start_ns) as f64 / interval).floor() as u64,
        });
        let pids: Vec<String> = o.server_pids.iter().map(u32::to_string).collect();
        let redis_pid = o.redis_pid.map(|p| p.to_string());
        let mut meters: Option<(Vec<CpuMeter>, Option<CpuMeter>, CpuMeter)> = None;
        loop {
            let now = self.now_ns();
            if meters.is_none() && now >= measure_from_ns {
                meters = Some((
                    pids.iter().map(|p| CpuMeter::start(p)).collect(),
                    redis_pid.as_deref().map(CpuMeter::start),
                    CpuMeter::start("self"),
                ));
            }
            if now >= end_ns {
                break;
            }
            self.send_due();
            let next_due = match &self.sched {
                Some(sc) if sc.k < sc.total => sc.due(sc.k),
                _ => end_ns,
            };
            let wake = next_due.min(end_ns).min(if meters.is_none() {
                measure_from_ns
            } else {
                u64::MAX
            });
            let now = self.now_ns();
            let wait =
                Duration::from_nanos(wake.saturating_sub(now)).min(Duration::from_millis(10));
            self.poll_once(wait)?;
        }
        self.sched = None;
        let usage = match &meters {
            Some((srv, redis, me)) => Usage::read(srv, redis.as_ref(), me),
            None => Usage::default(),
        };
        // Drain: wait for the deliveries still in flight.
        let expected = self.rx.step.sent * receivers;
        let drain_until = Instant::now() + Duration::from_secs_f64(o.drain);
        while self.rx.step.delivered < expected && Instant::now() < drain_until {
            self.poll_once(Duration::from_millis(10))?;
        }
        Ok(self.result(rate, phase, receivers, usage))
    }

    fn result(&self, rate: f64, phase: &str, receivers: u64, usage: Usage) -> StepResult {
        let o = self.o;
        let st = &self.rx.step;
        let expected = st.sent * receivers;
        let pct = if expected == 0 {
            0.0
        } else {
            st.delivered as f64 * 100.0 / expected as f64
        };
        let p99 = ms(st.latency.quantile(0.99));
        let lag99 = ms(st.lag.quantile(0.99));
        let mut limits = usage.generator_notes();
        let lagging = lag99 > SEND_LAG_LIMIT_MS;
        if lagging {
            limits.push(format!(
                "generator behind schedule (send lag p99 {lag99:.1} ms)"
            ));
        }
        let server_cpu_bound = usage.server_cpu_bound();
        // A saturated server delays everything, the generator's loop
        // included; lag alone then does not make the generator the limit.
        // Neither does waiting for a CPU without falling behind.
        let generator_limited = usage.generator_cpu_bound() || (lagging && !server_cpu_bound);
        limits.extend(usage.server_notes());
        let sustained = st.sent > 0
            && pct >= MIN_DELIVERY_PCT
            && p99 <= MAX_P99_MS
            && st.disconnects == 0
            && st.server_errors == 0;
        let verdict = match (sustained, generator_limited) {
            (true, false) => "sustained",
            (true, true) => "sustained (generator near its limit)",
            (false, true) => "not sustained (generator-limited: inconclusive)",
            (false, false) if server_cpu_bound => "not sustained (server CPU-bound)",
            (false, false) => "not sustained",
        };
        let mut row = Row::new(&o.label, "fanout", phase);
        row.set("clients", o.clients);
        row.set("senders", o.senders);
        row.setf("rate", rate, 0);
        row.setf("duration_s", o.duration, 1);
        row.set("sent", st.sent);
        row.setf("offered_mps", st.sent as f64 / o.duration, 1);
        row.setf("delivered_fps", st.frames_in_window as f64 / o.duration, 0);
        row.set("expected", expected);
        row.set("delivered", st.delivered);
        row.setf("delivery_pct", pct, 3);
        row.set("gaps", st.gaps);
        row.set("reorders", st.reorders);
        row.setf("p50_ms", ms(st.latency.quantile(0.5)), 3);
        row.setf("p99_ms", p99, 3);
        row.setf("p999_ms", ms(st.latency.quantile(0.999)), 3);
        row.setf("max_ms", ms(st.latency.max()), 3);
        row.set("disconnects", st.disconnects);
        row.set("errors", st.server_errors);
        usage.fill(&mut row);
        if let Some(us) = usage.redis_us_per_event(st.sent) {
            row.setf("redis_us_per_event", us, 2);
        }
        row.set("nodes", o.targets.len());
        row.setf("send_lag_p99_ms", lag99, 3);
        row.set("bottleneck", limits.join("; "));
        row.set("verdict", verdict);
        StepResult {
            row,
            sustained,
            generator_limited,
            usage,
        }
    }

    /// Prints a step for people.
    pub fn print(&self, r: &StepResult) {
        let row = &r.row;
        let g = |c| row.get(c);
        println!(
            "fanout [{}] {}: {} clients on {} node(s), {} senders, {} msg/s offered for {} s",
            g("label"),
            g("phase"),
            g("clients"),
            g("nodes"),
            g("senders"),
            g("rate"),
            g("duration_s")
        );
        println!(
            "  sent {} ({} msg/s); delivered {}/{} ({} %), {} frames/s in the window",
            g("sent"),
            g("offered_mps"),
            g("delivered"),
            g("expected"),
            g("delivery_pct"),
            g("delivered_fps")
        );
        println!(
            "  gaps {}, reorders {}, disconnects {}, server errors {}, unexpected frames {}, earlier sessions' frames {}, max unsent at a sender {} B",
            g("gaps"),
            g("reorders"),
            g("disconnects"),
            g("errors"),
            self.rx.unexpected,
            self.rx.stale,
            self.rx.step.max_unsent
        );
        println!(
            "  latency ms: p50 {}  p99 {}  p99.9 {}  max {}   (send lag p99 {} ms)",
            g("p50_ms"),
            g("p99_ms"),
            g("p999_ms"),
            g("max_ms"),
            g("send_lag_p99_ms")
        );
        println!("  CPU (percent of one core): {}", r.usage.describe());
        if !g("redis_us_per_event").is_empty() {
            println!("  redis CPU per chat event: {} us", g("redis_us_per_event"));
        }
        if !self.rx.errors.is_empty() {
            println!("  errors: {}", self.error_summary());
        }
        let b = g("bottleneck");
        println!(
            "  verdict: {}{}",
            g("verdict"),
            if b.is_empty() {
                String::new()
            } else {
                format!("  [{b}]")
            }
        );
    }
}

mod drive;
pub use drive::{ramp, run};
use drive::{target_of, wait_healthy};

#[cfg(test)]
mod tests {
    use super::drive::healthy;
    use super::rx::{find, parse_bench_frame, parse_text};
    use super::*;

    #[test]
    fn fast_path_parses_compact_json() {
        let f = br#"{"type":"usermsg","name":"b3","message":"3:17:123456789:xxxx","color":"00FF00","ts":1}"#;
        assert_eq!(parse_bench_frame(f), Some((3, 17, 123456789)));
        let sys = br#"{"type":"system","event":"join","name":"b3","message":"b3 joined"}"#;
        assert_eq!(parse_bench_frame(sys), None);
        let history = br#"{"type":"history","messages":[{"type":"usermsg","name":"b3","message":"3:17:123456789:xxxx"}]}"#;
        assert_eq!(parse_bench_frame(history), None);
        assert_eq!(parse_text(b"1:2:"), None);
        assert_eq!(parse_text(b"1:2:99999999999999999999:"), None);
    }

    #[test]
    fn clients_and_senders_alternate_over_the_ports() {
        let o = crate::args::parse(
            &"fanout --port 9001,9002 --clients 5 --senders 2"
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let ports: Vec<u16> = (0..5).map(|i| target_of(&o, i).port()).collect();
        assert_eq!(ports, [9001, 9002, 9001, 9002, 9001]);
    }

    #[test]
    fn health_check_wants_200() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("not v4: {other}"),
        };
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
                "HTTP/1.1 200 OK\r\n\r\n",
            ] {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 256];
                let n = c.read(&mut buf).unwrap();
                assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.1\r\n"));
                c.write_all(answer.as_bytes()).unwrap();
            }
        });
        assert!(!healthy(addr, None));
        assert!(healthy(addr, None));
        server.join().unwrap();
    }

    #[test]
    fn find_needle() {
        assert_eq!(find(b"abc\"message\":\"x", b"\"message\":\""), Some(3));
        assert_eq!(find(b"\"messag", b"\"message\":\""), None);
        assert_eq!(find(b"\"\"\"", b"\"\""), Some(0));
    }

    #[test]
    fn sequence_tracking_counts_gaps_and_reorders() {
        let mut rx = Rx {
            senders: 2,
            names: vec!["a".into(), "b".into()],
            joined: vec![false; 2],
            joined_count: 0,
            last_seq: vec![0; 4],
            step: Step {
                measure_from_ns: 100,
                end_ns: 1000,
                ..Step::default()
            },
            errors: BTreeMap::new(),
            unexpected: 0,
            opened_ns: 20,
            stale: 0,
            last_frame_ns: 0,
        };
        rx.on_bench(0, 1, 99, 10, 300); // an earlier session's: ignored
        assert_eq!((rx.stale, rx.last_seq[1]), (1, 0));
        for seq in [1, 2, 5, 4, 6] {
            rx.on_bench(0, 1, seq, 200, 300);
        }
        rx.on_bench(1, 0, 1, 50, 300); // warm-up message: tracked, not counted
        assert_eq!(rx.step.gaps, 2);
        assert_eq!(rx.step.reorders, 1);
        assert_eq!(rx.step.delivered, 5);
        assert_eq!(rx.step.frames_in_window, 6);
        assert_eq!(rx.last_seq[2], 1);
        let err = br#"{"type":"error","code":"rate_limited","message":"slow down"}"#;
        rx.on_message(0, err, 300);
        assert_eq!(rx.step.server_errors, 1);
        let history =
            br#"{"type":"history","messages":[{"type":"usermsg","name":"a","message":"1:9:5:x"}]}"#;
        rx.on_message(0, history, 300);
        assert_eq!(
            (rx.step.delivered, rx.step.reorders, rx.unexpected),
            (5, 1, 0)
        );
        let join = br#"{"type": "system", "event": "join", "name": "b", "message": "b joined"}"#;
        rx.on_message(1, join, 300);
        assert_eq!(rx.joined_count, 1);
    }
}
