//! Driving runs: the targets (one or several nodes), waiting until they
//! are healthy, one fixed-rate run, and the ramp that searches the highest
//! sustained rate.

use super::*;

/// The server client `i` talks to: round-robin over the ports, so with the
/// senders being clients `0..S`, they are spread over the nodes too and
/// every node receives messages that other nodes accepted.
pub(super) fn target_of(o: &Opts, i: usize) -> std::net::SocketAddrV4 {
    o.targets
        .get(i % o.targets.len().max(1))
        .copied()
        .unwrap_or(o.target)
}

/// `GET /healthz` answered `200` by this server (over TLS with `tls`).
pub(super) fn healthy(
    addr: std::net::SocketAddrV4,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> bool {
    let Ok(s) = std::net::TcpStream::connect_timeout(&addr.into(), Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    match tls {
        None => answers_200(s, addr),
        Some(config) => {
            let name = rustls::pki_types::ServerName::IpAddress((*addr.ip()).into());
            match rustls::ClientConnection::new(config.clone(), name) {
                Ok(conn) => answers_200(rustls::StreamOwned::new(conn, s), addr),
                Err(_) => false,
            }
        }
    }
}

fn answers_200(mut s: impl std::io::Read + std::io::Write, addr: std::net::SocketAddrV4) -> bool {
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes())
        .and_then(|()| s.flush())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    head[..n].starts_with(b"HTTP/1.1 200")
}

/// A cluster node refuses handshakes (503) until it is connected to Redis:
/// waits until every node says so on `/healthz`.
pub(super) fn wait_healthy(
    targets: &[std::net::SocketAddrV4],
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    max: Duration,
) -> Result<(), String> {
    let until = Instant::now() + max;
    for &t in targets {
        while !healthy(t, tls) {
            if Instant::now() > until {
                return Err(format!(
                    "{t}: GET /healthz did not answer 200 within {:.0} s",
                    max.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// `fanout` without `--ramp`: one step at `--rate`.
pub fn run(o: &Opts) -> Result<Vec<Row>, String> {
    let mut s = Session::open(o, 0, Instant::now())?;
    let r = s.step(o.rate, "run")?;
    s.print(&r);
    if r.generator_limited {
        println!(
            "  note: the generator was at or near its own limit in this run, so the server's \
             figures are a lower bound"
        );
    }
    Ok(vec![r.row])
}

/// `fanout --ramp`: multiply the rate by `--ramp-factor` while sustained,
/// then bisect between the last sustained and the first failed rate.
pub fn ramp(o: &Opts) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let mut generation = 0;
    let epoch = Instant::now();
    let mut s = Session::open(o, generation, epoch)?;
    let mut good: Option<f64> = None;
    let mut bad: Option<f64> = None;
    let mut generator_limited_at: Option<f64> = None;
    let mut rate = o.rate;
    let mut steps = 0;
    let mut refine = 0;
    loop {
        let r = s.step(rate, "ramp")?;
        s.print(&r);
        let disconnects = r.row.get("disconnects") != "0";
        if r.sustained {
            good = Some(good.map_or(rate, |g: f64| g.max(rate)));
        } else {
            bad = Some(bad.map_or(rate, |b: f64| b.min(rate)));
            if r.generator_limited {
                generator_limited_at.get_or_insert(rate);
            }
        }
        rows.push(r.row);
        if disconnects {
            // Start over with fresh connections (and fresh names: the old
            // ones are released only as the server notices the closes).
            drop(s);
            generation += 1;
            s = Session::open(o, generation, epoch)?;
        } else {
            s.settle(Duration::from_millis(300), Duration::from_secs(10))?;
        }
        match (good, bad) {
            // Climbing: every step so far was sustained.
            (_, None) => {
                steps += 1;
                if steps >= o.ramp_steps {
                    break;
                }
                rate *= o.ramp_factor;
            }
            // Even the first rate failed: step down the same way.
            (None, Some(b)) => {
                steps += 1;
                if steps >= o.ramp_steps || b / o.ramp_factor < 1.0 {
                    break;
                }
                rate = (b / o.ramp_factor).round();
            }
            // Bracketed: bisect.
            (Some(lo), Some(b)) => {
                if refine >= o.ramp_refine {
                    break;
                }
                refine += 1;
                rate = ((lo + b) / 2.0).round();
                if rate <= lo || rate >= b {
                    break;
                }
            }
        }
    }
    let mut row = Row::new(&o.label, "fanout", "ramp-result");
    row.set("clients", o.clients);
    row.set("senders", o.senders);
    match good {
        Some(g) => {
            row.setf("rate", g, 0);
            row.setf("delivered_fps", g * o.clients as f64, 0);
        }
        None => row.set("rate", 0),
    }
    let note = match (good, bad, generator_limited_at) {
        (Some(g), None, _) => {
            format!("sustained every step up to {g:.0} msg/s (ramp steps exhausted)")
        }
        (Some(g), Some(b), None) => format!("max sustained {g:.0} msg/s; {b:.0} msg/s was not"),
        (Some(g), Some(_), Some(l)) => {
            format!(
                "max sustained {g:.0} msg/s; the generator was the limit from {l:.0} msg/s (inconclusive above)"
            )
        }
        (None, _, _) => "no step was sustained".to_string(),
    };
    if generator_limited_at.is_some() {
        row.set("bottleneck", "generator");
    }
    row.set("verdict", &note);
    println!(
        "ramp [{}] {} clients, {} senders: {} ({} delivered frames/s)",
        o.label,
        o.clients,
        o.senders,
        note,
        row.get("delivered_fps")
    );
    rows.push(row);
    Ok(rows)
}
