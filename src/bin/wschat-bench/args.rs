//! The command line. Hand-written like the server's: a handful of flags,
//! each `--name value`, no dependency for it.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;

pub const USAGE: &str = "\
wschat-bench MODE [options]: a load generator for wschat (and any server that
speaks its chat protocol). Targets loopback addresses only.

Modes:
  fanout   C clients join; S of them send chat messages at a fixed total rate
           (open loop); every client checks every broadcast it receives.
  connect  N idle WebSocket connections: handshakes/s, server memory per
           connection.
  echo     closed-loop round trips on /echo (server run with --echo).

Target:
  --url ws://127.0.0.1:PORT/PATH   or  --port PORT [--host 127.0.0.1] [--path P]
  --port P1,P2,...       fanout only: several servers (cluster nodes); client i
                         goes to port i mod N, senders too, so messages cross
                         nodes; waits for GET /healthz 200 on every port first
                         (repeating --port does the same)
  --tls                  wss: TLS 1.3/1.2 (any certificate accepted: loopback
                         only); a wss:// URL implies it
  --server-pid PID       read the server's CPU and memory from /proc
                         (fanout: repeat it, one per node)
  --redis-pid PID        fanout: Redis's CPU over the window, and per chat
                         event (Redis CPU time / messages sent)
Output:
  --csv FILE             append result rows (header when the file is new)
  --label NAME           the label column (default: wschat)
  --quiet                only the summary
fanout:
  --clients C            connections, all receivers (default 100)
  --senders S            how many of them send (default min(C, 50))
  --rate R               total messages/s over all senders (default 1000)
  --size B               length of the message text (default 100)
  --duration S           measured seconds (default 10)
  --warmup S             seconds sent first and not counted (default 1)
  --drain S              longest wait for late deliveries (default 2)
  --ramp                 search the highest sustained rate, starting at --rate
  --ramp-factor F        rate multiplier while sustained (default 2)
  --ramp-steps N         most multiplying steps (default 10)
  --ramp-refine N        bisection steps after the first failure (default 3)
  --name-prefix P        user names are P0, P1, ... (default b)
connect:
  --clients N            connections (default 1000)
  --concurrency K        handshakes in flight at once (default 100: under the
                         listen backlog of 128 that std and mio servers get;
                         more measures SYN retransmits, not the server)
  --hold S               seconds to hold them open before closing (default 1)
  --source-addrs N       spread over 127.0.0.1..127.0.0.N from the start
                         (default 1; more are added on EADDRNOTAVAIL anyway)
echo:
  --clients N            connections, each one message in flight (default 16)
  --pipeline K           messages in flight per connection (default 1)
  --size B               message size (default 100)
  --duration S           seconds (default 10)
Common:
  --setup-timeout S      longest connect/join phase (default 30)
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fanout,
    Connect,
    Echo,
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub mode: Mode,
    /// The first of `targets`: the only one outside fanout.
    pub target: SocketAddrV4,
    /// Every server (cluster node) fanout spreads its clients over.
    pub targets: Vec<SocketAddrV4>,
    pub path: String,
    /// The first of `server_pids`.
    pub server_pid: Option<u32>,
    /// One per node (fanout), read from `/proc` over the measured window.
    pub server_pids: Vec<u32>,
    pub redis_pid: Option<u32>,
    pub csv: Option<PathBuf>,
    pub label: String,
    pub quiet: bool,
    pub clients: usize,
    pub senders: usize,
    pub rate: f64,
    pub size: usize,
    pub duration: f64,
    pub warmup: f64,
    pub drain: f64,
    pub ramp: bool,
    pub ramp_factor: f64,
    pub ramp_steps: usize,
    pub ramp_refine: usize,
    pub name_prefix: String,
    pub concurrency: usize,
    pub hold: f64,
    pub source_addrs: u8,
    pub pipeline: usize,
    pub setup_timeout: f64,
    /// `--tls` or a `wss://` URL: the client config every connection uses.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Opts {
    /// `ws` or `wss`, for report lines.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "wss" } else { "ws" }
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: bad value {v:?}"))
}

fn positive(flag: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{flag}: must be a positive number"))
    }
}

/// `ws://HOST:PORT/PATH` with an IPv4 loopback host.
/// `ws://` or `wss://` URL → (address, path, TLS).
fn parse_url(url: &str) -> Result<(SocketAddrV4, String, bool), String> {
    let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => {
            return Err(format!(
                "--url: {url:?} does not start with ws:// or wss://"
            ));
        }
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let addr: SocketAddrV4 = hostport
        .parse()
        .map_err(|_| format!("--url: {hostport:?} is not IPv4:PORT"))?;
    Ok((addr, path, tls))
}

pub fn parse(args: &[String]) -> Result<Opts, String> {
    let mut it = args.iter();
    let mode = match it.next().map(String::as_str) {
        Some("fanout") => Mode::Fanout,
        Some("connect") => Mode::Connect,
        Some("echo") => Mode::Echo,
        Some("--help" | "-h") | None => return Err(String::new()),
        Some(other) => return Err(format!("unknown mode {other:?} (fanout, connect, echo)")),
    };
    let mut url: Option<String> = None;
    let mut host = Ipv4Addr::LOCALHOST;
    let mut ports: Vec<u16> = Vec::new();
    let mut path: Option<String> = None;
    let mut clients: Option<usize> = None;
    let mut senders: Option<usize> = None;
    let mut duration: Option<f64> = None;
    let mut size: Option<usize> = None;
    let mut o = Opts {
        mode,
        target: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000),
        targets: Vec::new(),
        path: String::new(),
        server_pid: None,
        server_pids: Vec::new(),
        redis_pid: None,
        csv: None,
        label: "wschat".into(),
        quiet: false,
        clients: 0,
        senders: 0,
        rate: 1000.0,
        size: 100,
        duration: 10.0,
        warmup: 1.0,
        drain: 2.0,
        ramp: false,
        ramp_factor: 2.0,
        ramp_steps: 10,
        ramp_refine: 3,
        name_prefix: "b".into(),
        concurrency: 100,
        hold: 1.0,
        source_addrs: 1,
        pipeline: 1,
        setup_timeout: 30.0,
        tls: None,
    };
    let mut tls = false;
    while let Some(flag) = it.next() {
        let flag = flag.as_str();
        match flag {
            "--ramp" => {
                o.ramp = true;
                continue;
            }
            "--quiet" => {
                o.quiet = true;
                continue;
            }
            "--tls" => {
                tls = true;
                continue;
            }
            "--help" | "-h" => return Err(String::new()),
            _ => {}
        }
        let v = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        match flag {
            "--url" => url = Some(v.clone()),
            "--host" => host = num(flag, v)?,
            "--port" => {
                for p in v.split(',') {
                    ports.push(num(flag, p)?);
                }
            }
            "--path" => path = Some(v.clone()),
            "--server-pid" => o.server_pids.push(num(flag, v)?),
            "--redis-pid" => o.redis_pid = Some(num(flag, v)?),
            "--csv" => o.csv = Some(PathBuf::from(v)),
            "--label" => o.label = v.clone(),
            "--clients" => clients = Some(num(flag, v)?),
            "--senders" => senders = Some(num(flag, v)?),
            "--rate" => o.rate = positive(flag, num(flag, v)?)?,
            "--size" => size = Some(num(flag, v)?),
            "--duration" => duration = Some(positive(flag, num(flag, v)?)?),
            "--warmup" => o.warmup = num(flag, v)?,
            "--drain" => o.drain = num(flag, v)?,
            "--ramp-factor" => o.ramp_factor = num(flag, v)?,
            "--ramp-steps" => o.ramp_steps = num(flag, v)?,
            "--ramp-refine" => o.ramp_refine = num(flag, v)?,
            "--name-prefix" => o.name_prefix = v.clone(),
            "--concurrency" => o.concurrency = num(flag, v)?,
            "--hold" => o.hold = num(flag, v)?,
            "--source-addrs" => o.source_addrs = num(flag, v)?,
            "--pipeline" => o.pipeline = num(flag, v)?,
            "--setup-timeout" => o.setup_timeout = positive(flag, num(flag, v)?)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if let Some(u) = url {
        if !ports.is_empty() {
            return Err("give either --url or --port, not both".into());
        }
        let (addr, p, wss) = parse_url(&u)?;
        o.targets = vec![addr];
        o.path = p;
        tls |= wss;
    } else {
        if ports.is_empty() {
            return Err("give --url ws://127.0.0.1:PORT/ or --port PORT".into());
        }
        o.targets = ports.iter().map(|&p| SocketAddrV4::new(host, p)).collect();
        o.path = "/".into();
    }
    if o.targets.len() > 1 && mode != Mode::Fanout {
        return Err("several ports (a cluster) are for fanout only".into());
    }
    if (o.server_pids.len() > 1 || o.redis_pid.is_some()) && mode != Mode::Fanout {
        return Err("several --server-pid and --redis-pid are for fanout only".into());
    }
    o.target = o.targets[0];
    o.server_pid = o.server_pids.first().copied();
    if let Some(p) = path {
        o.path = p;
    } else if mode == Mode::Echo && o.path == "/" {
        o.path = "/echo".into();
    }
    if !o.path.starts_with('/') {
        return Err("--path must start with /".into());
    }
    // This tool floods whatever it is pointed at: loopback only, by design.
    if !o.target.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address; wschat-bench only targets 127.0.0.0/8",
            o.target.ip()
        ));
    }
    o.clients = clients.unwrap_or(match mode {
        Mode::Fanout => 100,
        Mode::Connect => 1000,
        Mode::Echo => 16,
    });
    if o.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    o.senders = senders.unwrap_or(o.clients.min(50));
    if o.senders == 0 || o.senders > o.clients {
        return Err("--senders must be between 1 and --clients".into());
    }
    o.duration = duration.unwrap_or(10.0);
    o.size = size.unwrap_or(100);
    if o.size < 32 && mode == Mode::Fanout {
        return Err("--size must be at least 32 in fanout (it carries sender:seq:time)".into());
    }
    if o.ramp_factor <= 1.0 {
        return Err("--ramp-factor must be above 1".into());
    }
    if o.concurrency == 0 || o.pipeline == 0 {
        return Err("--concurrency and --pipeline must be at least 1".into());
    }
    if o.source_addrs == 0 || o.source_addrs == 255 {
        return Err("--source-addrs must be 1..=254".into());
    }
    if tls {
        o.tls = Some(crate::tls::client_config()?);
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Opts, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn parses_and_defaults() {
        let o = p("fanout --url ws://127.0.0.1:9001/ --clients 10 --rate 500 --ramp").unwrap();
        assert_eq!(o.target.port(), 9001);
        assert_eq!(o.senders, 10);
        assert!(o.ramp);
        let e = p("echo --port 9 ").unwrap();
        assert_eq!(e.path, "/echo");
        assert_eq!(e.clients, 16);
        assert!(e.tls.is_none());
        assert!(p("echo --port 9 --tls").unwrap().tls.is_some());
        let w = p("fanout --url wss://localhost:9443/x").unwrap();
        assert!(w.tls.is_some());
        assert_eq!(w.path, "/x");
    }

    #[test]
    fn several_ports_and_pids() {
        let o =
            p("fanout --port 9001,9002 --port 9003 --server-pid 5 --server-pid 6 --redis-pid 7")
                .unwrap();
        let ports: Vec<u16> = o.targets.iter().map(|t| t.port()).collect();
        assert_eq!(ports, [9001, 9002, 9003]);
        assert_eq!(o.target.port(), 9001);
        assert_eq!(o.server_pids, [5, 6]);
        assert_eq!(o.server_pid, Some(5));
        assert_eq!(o.redis_pid, Some(7));
        assert!(p("echo --port 9001,9002").is_err());
        assert!(p("connect --port 9001 --redis-pid 3").is_err());
        assert!(p("fanout --port 9001,x").is_err());
        assert!(p("fanout --port 9001 --url ws://127.0.0.1:9002/").is_err());
        let nodes_over_tls = p("fanout --port 9001,9002 --tls").unwrap();
        assert_eq!(nodes_over_tls.targets.len(), 2);
        assert!(nodes_over_tls.tls.is_some());
    }

    #[test]
    fn refuses_non_loopback_and_junk() {
        assert!(p("fanout --url ws://10.0.0.1:9000/").is_err());
        assert!(p("fanout --port 9000 --rate -1").is_err());
        assert!(p("fanout --port 9000 --senders 200").is_err());
        assert!(p("bogus").is_err());
        assert!(p("fanout --port").is_err());
    }
}
