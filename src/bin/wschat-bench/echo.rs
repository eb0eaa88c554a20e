//! `echo`: closed-loop round trips on `/echo`. Every connection keeps
//! `--pipeline` text messages in flight; each carries `<seq>:<send_ns>:` so
//! the reply is checked (same connection, same order, same bytes) and timed.

use crate::args::Opts;
use crate::conn::{Conn, ConnError, Incoming};
use crate::report::Row;
use crate::stats::{Histogram, ms};
use crate::sys::{CpuMeter, Usage};
use crate::ws;
use mio::{Events, Poll, Token};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Client {
    conn: Conn,
    alive: bool,
    started: bool,
    next_seq: u64,
    /// The sequence number the next echo must carry.
    expect_seq: u64,
}

/// Writes message `seq` into `m`: `<seq>:<now_ns>:` padded with `e` to
/// `size` bytes.
fn message(m: &mut Vec<u8>, seq: u64, now_ns: u64, size: usize) {
    use std::io::Write as _;
    m.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(m, "{seq}:{now_ns}:");
    let pad = size.saturating_sub(m.len());
    m.extend(std::iter::repeat_n(b'e', pad));
}

/// Parses `<digits>:` from the front.
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 || s.get(n) != Some(&b':') {
        return None;
    }
    let v = s[..n]
        .iter()
        .fold(0u64, |v, &b| v * 10 + u64::from(b - b'0'));
    Some((v, &s[n + 1..]))
}

/// `(seq, send_ns)` from an echoed message, if it is exactly what
/// [`message`] wrote for them (checked without building it again).
fn parse(p: &[u8], size: usize) -> Option<(u64, u64)> {
    let (seq, rest) = number(p)?;
    let (ns, pad) = number(rest)?;
    let header = p.len() - pad.len();
    (p.len() == size.max(header) && pad.iter().all(|&b| b == b'e')).then_some((seq, ns))
}

pub fn run(o: &Opts) -> Result<Vec<Row>, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let epoch = Instant::now();
    let now_ns = || epoch.elapsed().as_nanos() as u64;
    let mut clients = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let conn = Conn::connect(
            poll.registry(),
            Token(i),
            o.target,
            None,
            &o.path,
            i as u64 + 1,
            o.tls.as_ref(),
        )
        .map_err(|e| format!("connect {}: {e}", o.target))?;
        clients.push(Client {
            conn,
            alive: true,
            started: false,
            next_seq: 0,
            expect_seq: 0,
        });
    }
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut mismatches = 0u64;
    let mut latency = Histogram::default();
    let mut round_trips = 0u64;
    let mut opened = 0usize;
    let setup_deadline = Instant::now() + Duration::from_secs_f64(o.setup_timeout);
    let mut measure_from: Option<u64> = None;
    let mut end_ns = u64::MAX;
    let mut meters: Option<(Option<CpuMeter>, CpuMeter)> = None;
    let pid = o.server_pid.map(|p| p.to_string());
    let mut disconnects = 0u64;
    let mut msg = Vec::with_capacity(o.size + 32);

    loop {
        let now = now_ns();
        if measure_from.is_none() && opened == o.clients {
            // Everyone is connected: warm up, then measure.
            let from = now + (o.warmup * 1e9) as u64;
            measure_from = Some(from);
            end_ns = from + (o.duration * 1e9) as u64;
        }
        if let Some(from) = measure_from
            && meters.is_none()
            && now >= from
        {
            meters = Some((pid.as_deref().map(CpuMeter::start), CpuMeter::start("self")));
        }
        if now >= end_ns {
            break;
        }
        if measure_from.is_none() && Instant::now() > setup_deadline {
            return Err(format!(
                "setup timed out: {opened} of {} connections open",
                o.clients
            ));
        }
        match poll.poll(&mut events, Some(Duration::from_millis(10))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = clients.get_mut(i) else {
                continue;
            };
            if !c.alive {
                continue;
            }
            let mut res: Result<(), ConnError> = Ok(());
            if ev.is_writable() {
                res = c.conn.on_writable();
            }
            let mut replies = 0usize;
            if res.is_ok() && (ev.is_readable() || ev.is_read_closed()) {
                let t = now_ns();
                let from = measure_from.unwrap_or(u64::MAX);
                let expect = &mut c.expect_seq;
                res = c.conn.on_readable(&mut scratch, |inc| {
                    if let Incoming::Message(op, p) = inc {
                        replies += 1;
                        match parse(p, o.size) {
                            Some((seq, sent)) if op == ws::OP_TEXT && seq == *expect => {
                                *expect += 1;
                                if sent >= from && t < end_ns {
                                    round_trips += 1;
                                    latency.record(t.saturating_sub(sent));
                                }
                            }
                            _ => mismatches += 1,
                        }
                    }
                });
            }
            if let Err(e) = res {
                *errors.entry(e.kind()).or_default() += 1;
                let _ = poll.registry().deregister(&mut c.conn.stream);
                c.alive = false;
                if c.started {
                    disconnects += 1;
                }
                continue;
            }
            let mut to_send = replies;
            if c.conn.is_open() && !c.started {
                c.started = true;
                opened += 1;
                to_send = o.pipeline;
            }
            if to_send > 0 {
                let t = now_ns();
                for _ in 0..to_send {
                    message(&mut msg, c.next_seq, t, o.size);
                    c.next_seq += 1;
                    c.conn.queue_text(&msg);
                }
                if let Err(e) = c.conn.flush() {
                    *errors.entry(e.kind()).or_default() += 1;
                    c.alive = false;
                    disconnects += 1;
                }
            }
        }
        if opened + errors.values().sum::<u64>() as usize >= o.clients
            && opened < o.clients
            && measure_from.is_none()
        {
            return Err(format!(
                "{} of {} connections failed: {}",
                o.clients - opened,
                o.clients,
                errors
                    .iter()
                    .map(|(k, v)| format!("{k} x{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let usage = match &meters {
        Some((s, b)) => Usage::read(s.as_slice(), None, b),
        None => Usage::default(),
    };
    let mut row = Row::new(&o.label, "echo", "run");
    row.set("clients", o.clients);
    row.set("in_flight", o.pipeline);
    row.setf("duration_s", o.duration, 1);
    row.set("delivered", round_trips);
    row.setf("round_trips_per_s", round_trips as f64 / o.duration, 0);
    row.setf("p50_ms", ms(latency.quantile(0.5)), 3);
    row.setf("p99_ms", ms(latency.quantile(0.99)), 3);
    row.setf("p999_ms", ms(latency.quantile(0.999)), 3);
    row.setf("max_ms", ms(latency.max()), 3);
    row.set("disconnects", disconnects);
    row.set("errors", mismatches);
    usage.fill(&mut row);
    let mut limits = usage.generator_notes();
    limits.extend(usage.server_notes());
    row.set("bottleneck", limits.join("; "));
    let verdict = if disconnects == 0 && mismatches == 0 {
        "ok"
    } else {
        "errors"
    };
    row.set("verdict", verdict);

    println!(
        "echo [{}]: {} connections x {} in flight, {} B messages, {} s on {}://{}{}",
        o.label,
        o.clients,
        o.pipeline,
        o.size,
        o.duration,
        o.scheme(),
        o.target,
        o.path
    );
    println!(
        "  {} round trips/s; latency ms: p50 {}  p99 {}  p99.9 {}  max {}",
        row.get("round_trips_per_s"),
        row.get("p50_ms"),
        row.get("p99_ms"),
        row.get("p999_ms"),
        row.get("max_ms")
    );
    println!("  CPU (percent of one core): {}", usage.describe());
    println!("  disconnects {disconnects}, bad echoes {mismatches}");
    if !errors.is_empty() {
        let e: Vec<String> = errors.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        println!("  errors: {}", e.join(", "));
    }
    let b = row.get("bottleneck");
    println!(
        "  verdict: {verdict}{}",
        if b.is_empty() {
            String::new()
        } else {
            format!("  [{b}]")
        }
    );
    Ok(vec![row])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_roundtrip() {
        let mut m = Vec::new();
        message(&mut m, 7, 123, 100);
        assert_eq!(m.len(), 100);
        assert_eq!(parse(&m, 100), Some((7, 123)));
        assert_eq!(parse(&m, 99), None);
        assert_eq!(parse(b"x:1:", 4), None);
        message(&mut m, 12345, 678, 4);
        assert_eq!(parse(&m, 4), Some((12345, 678)));
        m[9] = b'f';
        assert_eq!(parse(&m, 4), None);
    }
}
