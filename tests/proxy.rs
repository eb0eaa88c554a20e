//! wschat behind real reverse proxies (docs/deploy.md): Debian's nginx and
//! Apache httpd (mod_proxy_wstunnel) terminate TLS with a certificate this
//! test makes, and forward to a plain wschat binary. A wss client chats
//! through each; a connection kept idle past the proxy's read timeout
//! survives thanks to the server's pings, and one to a server without
//! keepalive is cut by the proxy (so the timeout is real). Also checks the
//! systemd unit with `systemd-analyze verify`.
//!
//! Every process runs on free 127.0.0.1 ports with its files in a private
//! temporary directory and is stopped by PID, on panic too.

mod common;
mod tls_support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::client::Stream;
use common::server::{BinServer, bin};
use rustls::version::{TLS12, TLS13};
use serde_json::{Value, json};
use tls_support::{KeyKind, TempDir, TestPki, localhost, require};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// The proxies' read timeout in these tests: short, so that an idle
/// connection outlives it quickly.
const PROXY_TIMEOUT_S: u64 = 3;
/// How long the idle connection stays silent: well past the proxy timeout.
const IDLE_FOR: Duration = Duration::from_secs(PROXY_TIMEOUT_S * 2);

/// A proxy process stopped by PID on drop: SIGTERM (both nginx's master and
/// Apache's parent stop their workers on it), then SIGKILL if it lingers.
struct Proxy {
    child: Child,
    name: &'static str,
    error_log: PathBuf,
    port: u16,
}

impl Proxy {
    fn start(name: &'static str, mut cmd: Command, error_log: PathBuf, port: u16) -> Proxy {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut proxy = Proxy {
            child,
            name,
            error_log,
            port,
        };
        proxy.wait_listening();
        proxy
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited at start ({status}); error log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening within 10 s; error log:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// wschat as the proxies' backend: plain, loopback, the site's origin only.
fn backend(origin: &str, idle_timeout: &str) -> BinServer {
    let mut cmd = bin();
    cmd.args([
        "--host",
        "127.0.0.1",
        "--idle-timeout",
        idle_timeout,
        "--allowed-origin",
        origin,
        "0",
    ]);
    BinServer::start(cmd)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn nginx_conf(dir: &Path, port: u16, pki: &TestPki, live: SocketAddr, quiet: SocketAddr) -> String {
    let d = dir.display();
    // Same shape as docs/deploy.md, with test paths, ports and timeouts.
    format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/nginx-access.log;
    client_body_temp_path {d}/nginx-body;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fastcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;

        location /no-keepalive/ {{
            proxy_pass http://{quiet};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout {PROXY_TIMEOUT_S}s;
            proxy_send_timeout {PROXY_TIMEOUT_S}s;
        }}

        location / {{
            proxy_pass http://{live};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout {PROXY_TIMEOUT_S}s;
            proxy_send_timeout {PROXY_TIMEOUT_S}s;
            proxy_buffering off;
        }}
    }}
}}
"#,
        cert = pki.cert.display(),
        key = pki.key.display(),
    )
}

fn start_nginx(
    dir: &TempDir,
    pki: &TestPki,
    port: u16,
    live: SocketAddr,
    quiet: SocketAddr,
) -> Proxy {
    let nginx = require("nginx", "nginx");
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir.path, port, pki, live, quiet)).unwrap();
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(&dir.path)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .args(["-g", "daemon off;"]);
    Proxy::start("nginx", cmd, dir.join("nginx-error.log"), port)
}

fn apache_conf(
    dir: &Path,
    port: u16,
    pki: &TestPki,
    live: SocketAddr,
    quiet: SocketAddr,
) -> String {
    let d = dir.display();
    let modules = "/usr/lib/apache2/modules";
    // Apache refuses to run its children as root; as root, drop to nobody.
    let user = if is_root() {
        "User nobody\nGroup nogroup\n"
    } else {
        ""
    };
    format!(
        r#"ServerRoot "{d}"
ServerName localhost
DefaultRuntimeDir "{d}"
PidFile "{d}/apache.pid"
ErrorLog "{d}/apache-error.log"
LogLevel warn
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_http_module {modules}/mod_proxy_http.so
LoadModule proxy_wstunnel_module {modules}/mod_proxy_wstunnel.so
LoadModule ssl_module {modules}/mod_ssl.so
LoadModule headers_module {modules}/mod_headers.so

Listen 127.0.0.1:{port}
SSLSessionCache none
# A tunnel is cut after the larger of Timeout (client side) and
# ProxyTimeout (backend side) without traffic: set both.
Timeout {PROXY_TIMEOUT_S}
<VirtualHost 127.0.0.1:{port}>
    SSLEngine on
    SSLProtocol -all +TLSv1.2 +TLSv1.3
    SSLCertificateFile "{cert}"
    SSLCertificateKeyFile "{key}"

    ProxyRequests Off
    ProxyPreserveHost On
    ProxyTimeout {PROXY_TIMEOUT_S}
    RequestHeader set X-Forwarded-Proto "https"
    ProxyPass "/no-keepalive/" "ws://{quiet}/no-keepalive/"
    ProxyPass "/" "ws://{live}/"
</VirtualHost>
"#,
        cert = pki.cert.display(),
        key = pki.key.display(),
    )
}

fn start_apache(
    dir: &TempDir,
    pki: &TestPki,
    port: u16,
    live: SocketAddr,
    quiet: SocketAddr,
) -> Proxy {
    let apache = require("apache2", "apache2");
    for module in ["mod_proxy_wstunnel.so", "mod_ssl.so", "mod_mpm_event.so"] {
        let path = Path::new("/usr/lib/apache2/modules").join(module);
        assert!(
            path.exists(),
            "{} is missing: apt-get install -y apache2",
            path.display()
        );
    }
    let conf = dir.join("apache.conf");
    std::fs::write(&conf, apache_conf(&dir.path, port, pki, live, quiet)).unwrap();
    let mut cmd = Command::new(apache);
    cmd.arg("-d")
        .arg(&dir.path)
        .arg("-f")
        .arg(&conf)
        .arg("-DFOREGROUND");
    // Debian's apache2 reads these from /etc/apache2/envvars; none is used
    // by this config, but an unset APACHE_* makes some builds warn.
    cmd.env("APACHE_RUN_DIR", &dir.path)
        .env("APACHE_LOG_DIR", &dir.path)
        .env("APACHE_LOCK_DIR", &dir.path);
    Proxy::start("apache2", cmd, dir.join("apache-error.log"), port)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, Stream>;

/// A TLS connection to the proxy, trusting the test CA.
fn tls_connect(pki: &TestPki, port: u16, tls13: bool) -> Tls {
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect to proxy");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        if tls13 { &[&TLS13] } else { &[&TLS12] };
    let config: Arc<rustls::ClientConfig> = pki.client_config(versions, &[b"http/1.1"]);
    let conn = rustls::ClientConnection::new(config, localhost()).unwrap();
    rustls::StreamOwned::new(conn, Stream(sock))
}

fn wss(
    pki: &TestPki,
    port: u16,
    path: &str,
    origin: &str,
    tls13: bool,
) -> Result<WebSocket<Tls>, String> {
    let mut request = format!("wss://localhost:{port}{path}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    tungstenite::client::client(request, tls_connect(pki, port, tls13))
        .map(|(ws, _)| ws)
        .map_err(|err| match err {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
                format!("HTTP {}", resp.status().as_u16())
            }
            other => other.to_string(),
        })
}

/// Sets a short read timeout on the TCP socket under the TLS stream.
fn set_read_timeout(ws: &mut WebSocket<Tls>, timeout: Duration) {
    ws.get_mut().sock.0.set_read_timeout(Some(timeout)).unwrap();
}

/// The next JSON text message, answering pings on the way (tungstenite
/// queues the pong and sends it with the next read). Counts pings seen.
fn next_json(ws: &mut WebSocket<Tls>, within: Duration, pings: &mut u32) -> Option<Value> {
    let deadline = Instant::now() + within;
    set_read_timeout(ws, Duration::from_millis(200));
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(text.as_str()).expect("JSON from server"));
            }
            Ok(Message::Ping(_)) => *pings += 1,
            Ok(_) => {}
            Err(tungstenite::Error::Io(err))
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => panic!("connection lost: {err}"),
        }
    }
    None
}

/// Reads until a message satisfies `want`; panics after 10 s.
fn expect(ws: &mut WebSocket<Tls>, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pings = 0;
    while Instant::now() < deadline {
        if let Some(v) = next_json(ws, Duration::from_millis(500), &mut pings)
            && want(&v)
        {
            return v;
        }
    }
    panic!("no {what} within 10 s");
}

fn send(ws: &mut WebSocket<Tls>, value: Value) {
    ws.send(Message::text(value.to_string())).expect("send");
}

fn joined(pki: &TestPki, port: u16, name: &str, origin: &str, tls13: bool) -> WebSocket<Tls> {
    let mut ws = wss(pki, port, "/", origin, tls13).unwrap_or_else(|e| panic!("{name}: {e}"));
    send(&mut ws, json!({"type": "join", "name": name}));
    expect(&mut ws, "own join", |v| {
        v["type"] == "system" && v["event"] == "join" && v["name"] == name
    });
    ws
}

/// An HTTPS GET through the proxy: (status line, body).
fn https_get(pki: &TestPki, port: u16, path: &str) -> (String, String) {
    let mut tls = tls_connect(pki, port, true);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // Some proxies close without close_notify after Connection: close.
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {}
        Err(err) => panic!("read {path}: {err}"),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    // nginx may answer a Connection: close request chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Everything the issue asks of one proxy, in one place.
fn chat_through(proxy: &Proxy, pki: &TestPki, origin: &str) {
    let port = proxy.port;
    let name = proxy.name;

    let (status, body) = https_get(pki, port, "/healthz");
    assert!(status.contains(" 200"), "{name} /healthz: {status}");
    assert_eq!(body, "ok\n", "{name} /healthz body");

    // Origin check passes through the proxy untouched.
    let refused = wss(pki, port, "/", "https://evil.example", true).err();
    assert_eq!(
        refused.as_deref(),
        Some("HTTP 403"),
        "{name}: foreign origin"
    );

    // Two users chat, over TLS 1.3 and TLS 1.2 to the proxy.
    let mut alice = joined(pki, port, "alice", origin, true);
    let mut bob = joined(pki, port, "bob", origin, false);
    expect(&mut alice, "bob's join", |v| {
        v["event"] == "join" && v["name"] == "bob"
    });
    send(
        &mut alice,
        json!({"message": format!("hello through {name}")}),
    );
    let line = expect(&mut bob, "alice's line", |v| v["type"] == "usermsg");
    assert_eq!(line["name"], "alice");
    assert_eq!(line["message"], format!("hello through {name}"));
    expect(&mut alice, "own line back", |v| v["type"] == "usermsg");

    // Both stay silent past the proxy's read timeout; the server's pings
    // (answered by their clients) keep the proxied connections alive.
    let started = Instant::now();
    let (mut alice_pings, mut bob_pings) = (0, 0);
    while started.elapsed() < IDLE_FOR {
        for (ws, pings) in [(&mut alice, &mut alice_pings), (&mut bob, &mut bob_pings)] {
            if let Some(v) = next_json(ws, Duration::from_millis(250), pings) {
                panic!("{name}: unexpected message while idle: {v}");
            }
        }
    }
    assert!(
        alice_pings >= 2,
        "{name}: only {alice_pings} pings in {IDLE_FOR:?}"
    );
    send(&mut alice, json!({"message": "still here"}));
    let line = expect(&mut bob, "line after idling", |v| v["type"] == "usermsg");
    assert_eq!(
        line["message"], "still here",
        "{name}: idle connection survived"
    );

    let _ = alice.close(None);
    let _ = bob.close(None);
}

/// Without server pings the same idle connection is cut by the proxy: the
/// proof that the timeout above was real.
fn cut_without_keepalive(proxy: &Proxy, pki: &TestPki, origin: &str) {
    let name = proxy.name;
    let mut ws = wss(pki, proxy.port, "/no-keepalive/", origin, true)
        .unwrap_or_else(|e| panic!("{name} no-keepalive: {e}"));
    let started = Instant::now();
    set_read_timeout(&mut ws, Duration::from_millis(200));
    let deadline = started + Duration::from_secs(PROXY_TIMEOUT_S + 10);
    loop {
        assert!(
            Instant::now() < deadline,
            "{name} never cut an idle connection: its timeout is not what the test set"
        );
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(err))
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(PROXY_TIMEOUT_S - 1),
        "{name} cut the connection after {after:?}, before its timeout"
    );
}

type StartProxy = fn(&TempDir, &TestPki, u16, SocketAddr, SocketAddr) -> Proxy;

fn run_proxy_test(start: StartProxy, tag: &str) {
    let dir = TempDir::new(tag);
    let pki = TestPki::make(&dir.path, "site", KeyKind::EcP256);
    // --allowed-origin names the site as browsers send it (with the port
    // when it is not 443), so the proxy's port is chosen first.
    let port = free_port();
    let origin = format!("https://localhost:{port}");
    let live = backend(&origin, "1");
    let quiet = backend(&origin, "0");
    let proxy = start(&dir, &pki, port, live.addr, quiet.addr);
    chat_through(&proxy, &pki, &origin);
    cut_without_keepalive(&proxy, &pki, &origin);
}

#[test]
fn nginx_in_front_of_wschat() {
    run_proxy_test(start_nginx, "nginx");
}

#[test]
fn apache_in_front_of_wschat() {
    run_proxy_test(start_apache, "apache");
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let analyze = require("systemd-analyze", "systemd");
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/wschat.service");
    let unit = std::fs::read_to_string(&unit_path).expect("deploy/wschat.service");
    // verify checks that ExecStart exists; point it at the binary under
    // test instead of the installed path, and change nothing else.
    let exec = "ExecStart=/usr/local/bin/wschat $PORT\n";
    assert_eq!(unit.matches(exec).count(), 1, "one ExecStart line expected");
    for setting in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
    let dir = TempDir::new("systemd");
    let copy = dir.join("wschat.service");
    let exec_here = format!("ExecStart={} $PORT\n", env!("CARGO_BIN_EXE_wschat"));
    std::fs::write(&copy, unit.replace(exec, &exec_here)).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}{stdout}"
    );
    // verify exits 0 on settings it ignores; any message is a mistake.
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "systemd-analyze verify complained:\n{stderr}{stdout}"
    );
}
