//! `connect`: opens N idle WebSocket connections as fast as the server takes
//! them (at most `--concurrency` in flight), then reports handshakes/s, the
//! handshake latency and the server's resident memory per connection.
//!
//! One source address has about 28 000 ephemeral ports towards one server
//! port (`ip_local_port_range`). When connecting fails with
//! EADDRNOTAVAIL/EADDRINUSE the generator moves on to the next address of
//! 127.0.0.0/8 and binds before connecting, so the count is limited by
//! descriptors, not ports.

use crate::args::Opts;
use crate::conn::{Conn, ConnError, Incoming};
use crate::report::Row;
use crate::stats::{Histogram, ms};
use crate::sys::{self, CpuMeter, Usage};
use mio::{Events, Poll, Token};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const EADDRINUSE: i32 = 98;
const EADDRNOTAVAIL: i32 = 99;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Pending,
    Open,
    Failed,
    Closed,
}

pub fn run(o: &Opts) -> Result<Vec<Row>, String> {
    let limit = sys::raise_fd_limit();
    if (o.clients as u64) + 64 > limit {
        return Err(format!(
            "--clients {} needs more descriptors than the limit of {limit} (raise `ulimit -n`)",
            o.clients
        ));
    }
    let pid = o.server_pid.map(|p| p.to_string());
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut conns: Vec<Conn> = Vec::with_capacity(o.clients);
    let mut slots: Vec<Slot> = Vec::with_capacity(o.clients);
    let mut started: Vec<Instant> = Vec::with_capacity(o.clients);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut latency = Histogram::default();

    // Source addresses: plain connect (None) unless asked to spread.
    let mut sources: Vec<Option<Ipv4Addr>> = if o.source_addrs <= 1 {
        vec![None]
    } else {
        (1..=o.source_addrs)
            .map(|n| Some(Ipv4Addr::new(127, 0, 0, n)))
            .collect()
    };
    let mut next_fresh: u8 = o.source_addrs.max(1) + 1;
    let mut spread_note = false;

    let rss_before = pid.as_deref().and_then(sys::rss_kib);
    let server_cpu = pid.as_deref().map(CpuMeter::start);
    let bench_cpu = CpuMeter::start("self");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(o.setup_timeout);
    let (mut ok, mut failed, mut in_flight) = (0usize, 0usize, 0usize);
    let mut last_open = t0;

    while ok + failed < o.clients {
        while conns.len() < o.clients && in_flight < o.concurrency {
            let i = conns.len();
            let src = sources[i % sources.len()];
            match Conn::connect(
                poll.registry(),
                Token(i),
                o.target,
                src,
                &o.path,
                i as u64 + 1,
                o.tls.as_ref(),
            ) {
                Ok(c) => {
                    conns.push(c);
                    slots.push(Slot::Pending);
                    started.push(Instant::now());
                    in_flight += 1;
                }
                Err(e) if matches!(e.raw_os_error(), Some(EADDRNOTAVAIL | EADDRINUSE)) => {
                    // Out of ephemeral ports on this source: retire it and
                    // continue from a fresh loopback address.
                    if next_fresh == 255 {
                        return Err(format!(
                            "out of source addresses after {i} connections: {e}"
                        ));
                    }
                    let idx = i % sources.len();
                    sources[idx] = Some(Ipv4Addr::new(127, 0, 0, next_fresh));
                    next_fresh += 1;
                    spread_note = true;
                }
                Err(e) => return Err(format!("connect {} (connection {i}): {e}", o.target)),
            }
        }
        if Instant::now() > deadline {
            break;
        }
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if i >= conns.len() || matches!(slots[i], Slot::Failed | Slot::Closed) {
                continue;
            }
            let mut res: Result<(), ConnError> = Ok(());
            if ev.is_writable() {
                res = conns[i].on_writable();
            }
            let mut opened = false;
            if res.is_ok() && (ev.is_readable() || ev.is_read_closed()) {
                res = conns[i].on_readable(&mut scratch, |inc| {
                    if let Incoming::Open = inc {
                        opened = true;
                    }
                });
            }
            if opened && slots[i] == Slot::Pending {
                slots[i] = Slot::Open;
                ok += 1;
                in_flight -= 1;
                last_open = Instant::now();
                latency.record(started[i].elapsed().as_nanos() as u64);
            }
            if let Err(e) = res {
                *errors.entry(e.kind()).or_default() += 1;
                let _ = poll.registry().deregister(&mut conns[i].stream);
                if slots[i] == Slot::Pending {
                    in_flight -= 1;
                    failed += 1;
                } else {
                    // Opened, then dropped by the server while still idle.
                    ok -= 1;
                    failed += 1;
                }
                slots[i] = Slot::Failed;
            }
        }
    }
    let timed_out = ok + failed < o.clients;
    let elapsed = last_open.duration_since(t0).as_secs_f64().max(1e-9);
    let usage = Usage::read(server_cpu.as_slice(), None, &bench_cpu);

    // Hold the connections open (answering pings), then measure memory.
    let hold_until = Instant::now() + Duration::from_secs_f64(o.hold.max(0.5));
    let mut dropped = 0u64;
    while Instant::now() < hold_until {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(50)))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            return Err(format!("poll: {e}"));
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if i >= conns.len() || slots[i] != Slot::Open {
                continue;
            }
            if let Err(e) = conns[i].on_readable(&mut scratch, |_| {}) {
                *errors.entry(e.kind()).or_default() += 1;
                let _ = poll.registry().deregister(&mut conns[i].stream);
                slots[i] = Slot::Failed;
                dropped += 1;
            }
        }
    }
    let rss_after = pid.as_deref().and_then(sys::rss_kib);

    // Close politely (close frame, wait briefly for the replies), then drop.
    for (c, s) in conns.iter_mut().zip(slots.iter()) {
        if *s == Slot::Open {
            c.close(1000);
            let _ = c.flush();
        }
    }
    let close_until = Instant::now() + Duration::from_secs(2);
    let mut open_left = slots.iter().filter(|s| **s == Slot::Open).count();
    while open_left > 0 && Instant::now() < close_until {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(50)))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            return Err(format!("poll: {e}"));
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if i < conns.len()
                && slots[i] == Slot::Open
                && conns[i].on_readable(&mut scratch, |_| {}).is_err()
            {
                slots[i] = Slot::Closed;
                open_left -= 1;
            }
        }
    }
    drop(conns);

    let mut row = Row::new(&o.label, "connect", "run");
    row.set("clients", o.clients);
    row.set("in_flight", o.concurrency);
    row.set("conn_ok", ok);
    row.set("conn_failed", failed);
    row.set("disconnects", dropped);
    row.setf("duration_s", elapsed, 3);
    row.setf("handshakes_per_s", ok as f64 / elapsed, 0);
    row.setf("p50_ms", ms(latency.quantile(0.5)), 3);
    row.setf("p99_ms", ms(latency.quantile(0.99)), 3);
    row.setf("p999_ms", ms(latency.quantile(0.999)), 3);
    row.setf("max_ms", ms(latency.max()), 3);
    usage.fill(&mut row);
    if let Some(b) = rss_before {
        row.set("rss_before_kib", b);
    }
    if let Some(a) = rss_after {
        row.set("rss_after_kib", a);
    }
    if let (Some(b), Some(a)) = (rss_before, rss_after)
        && ok > 0
    {
        row.setf("rss_per_conn_kib", (a as f64 - b as f64) / ok as f64, 2);
    }
    let mut limits = usage.generator_notes();
    limits.extend(usage.server_notes());
    row.set("bottleneck", limits.join("; "));
    let verdict = if timed_out {
        format!(
            "timed out: {ok} of {} open after {:.0} s",
            o.clients, o.setup_timeout
        )
    } else if failed > 0 {
        format!("{failed} failed")
    } else {
        "all open".to_string()
    };
    row.set("verdict", &verdict);

    println!(
        "connect [{}]: {} connections to {}://{}{}, {} in flight",
        o.label,
        o.clients,
        o.scheme(),
        o.target,
        o.path,
        o.concurrency
    );
    println!(
        "  open {ok}, failed {failed}, dropped while idle {dropped}; {} handshakes/s over {:.2} s",
        row.get("handshakes_per_s"),
        elapsed
    );
    println!(
        "  handshake latency ms: p50 {}  p99 {}  max {}",
        row.get("p50_ms"),
        row.get("p99_ms"),
        row.get("max_ms")
    );
    if latency.max() >= 1_000_000_000 && latency.quantile(0.5) < 200_000_000 {
        // The kernel's first SYN retransmission timeout is one second.
        println!(
            "  note: some handshakes took over 1 s while most were fast: SYNs dropped and retransmitted, \
             most likely the server's listen backlog overflowed (see `nstat -az TcpExtListenOverflows`)"
        );
    }
    match (rss_before, rss_after) {
        (Some(b), Some(a)) => println!(
            "  server RSS {b} KiB -> {a} KiB: {} KiB per connection",
            row.get("rss_per_conn_kib")
        ),
        _ => println!("  server RSS: n/a (give --server-pid)"),
    }
    println!(
        "  CPU during connect (percent of one core): {}",
        usage.describe()
    );
    if spread_note || o.source_addrs > 1 {
        println!(
            "  spread over source addresses 127.0.0.1..127.0.0.{}",
            next_fresh - 1
        );
    }
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
