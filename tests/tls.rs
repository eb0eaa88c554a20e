//! https and wss end to end (PROTOCOL section 10) against the real `wschat`
//! binary, started with a certificate this test makes with `openssl`, and
//! independent clients: rustls + tungstenite, raw TCP for what a TLS client
//! would never send. Also SIGHUP reloads and `--trusted-proxy` log lines.
//!
//! Every server runs on a free 127.0.0.1 port and is stopped by PID.

mod common;
mod tls_support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::client::Stream;
use common::metrics::{self, Metrics};
use common::server::{BinServer, bin, run_to_exit};
use rustls::version::{TLS12, TLS13};
use serde_json::{Value, json};
use tls_support::{KeyKind, TempDir, TestPki, localhost, require};
use tungstenite::{Message, WebSocket};

type Tls = rustls::StreamOwned<rustls::ClientConnection, Stream>;

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// A TLS server binary with its certificate files.
struct Fixture {
    pki: TestPki,
    server: BinServer,
    _dir: TempDir,
}

/// Starts `wschat --tls-cert --tls-key` with `extra` flags. The files the
/// server reads are copies (`server.pem`, `server.key`), so that a test can
/// replace them and send SIGHUP.
fn start_tls(tag: &str, extra: &[&str], log: &str) -> Fixture {
    let dir = TempDir::new(tag);
    let pki = TestPki::make(&dir.path, "one", KeyKind::EcP256);
    std::fs::copy(&pki.cert, dir.join("server.pem")).unwrap();
    std::fs::copy(&pki.key, dir.join("server.key")).unwrap();
    let mut cmd = bin();
    cmd.env("RUST_LOG", log);
    cmd.args(["--host", "127.0.0.1", "--rate-limit", "0", "--tls-cert"])
        .arg(dir.join("server.pem"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        .args(extra)
        .arg("0");
    let server = BinServer::start(cmd);
    Fixture {
        pki,
        server,
        _dir: dir,
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    sock
}

fn tls_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Tls {
    let conn = rustls::ClientConnection::new(config, localhost()).unwrap();
    rustls::StreamOwned::new(conn, Stream(tcp(addr)))
}

/// Completes the TLS handshake (or fails it) without sending data.
fn handshake(tls: &mut Tls) -> io::Result<()> {
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(())
}

/// An HTTPS request with `Connection: close`: (status line, body). Reading
/// to the end succeeds only if the server sent close_notify before its FIN
/// (rustls reports a bare FIN as `UnexpectedEof`).
fn try_https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> io::Result<(String, String)> {
    let mut tls = tls_with(addr, config);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

fn https_get_with(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> (String, String) {
    try_https_get(addr, config, path)
        .unwrap_or_else(|e| panic!("GET {path}: no clean TLS close (close_notify): {e}"))
}

fn https_get(fx: &Fixture, path: &str) -> (String, String) {
    https_get_with(
        fx.server.addr,
        fx.pki.client_config(BOTH, &[b"http/1.1"]),
        path,
    )
}

fn scrape(fx: &Fixture) -> Metrics {
    let (status, body) = https_get(fx, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    metrics::parse(&body)
}

fn rejected(m: &Metrics, reason: &str) -> f64 {
    m.get(&format!(
        "wschat_connections_rejected_total{{reason=\"{reason}\"}}"
    ))
}

fn wss_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<WebSocket<Tls>, String> {
    let url = format!("wss://localhost:{}/", addr.port());
    tungstenite::client::client(url.as_str(), tls_with(addr, config))
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

fn wss(fx: &Fixture, versions: &[&'static rustls::SupportedProtocolVersion]) -> WebSocket<Tls> {
    wss_with(
        fx.server.addr,
        fx.pki.client_config(versions, &[b"http/1.1"]),
    )
    .unwrap_or_else(|e| panic!("wss handshake: {e}"))
}

fn send(ws: &mut WebSocket<Tls>, value: Value) {
    ws.send(Message::text(value.to_string())).expect("send");
}

/// Reads until a JSON message satisfies `want`; panics after 10 s.
fn expect(ws: &mut WebSocket<Tls>, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    ws.get_mut()
        .sock
        .0
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if want(&v) {
                    return v;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("{what}: connection lost: {e}"),
        }
    }
    panic!("no {what} within 10 s");
}

fn join(ws: &mut WebSocket<Tls>, name: &str) {
    send(ws, json!({"type": "join", "name": name}));
    expect(ws, "own join", |v| {
        v["type"] == "system" && v["event"] == "join" && v["name"] == name
    });
}

/// `from` says `text`; `to` must receive it.
fn chat(from: &mut WebSocket<Tls>, to: &mut WebSocket<Tls>, name: &str, text: &str) {
    send(from, json!({"name": name, "message": text}));
    expect(to, "the chat line", |v| {
        v["type"] == "usermsg" && v["name"] == name && v["message"] == text
    });
}

/// Reads until the close handshake ends; the end must be a clean TLS close
/// (close_notify), which tungstenite reports as `ConnectionClosed`.
fn expect_clean_end(ws: &mut WebSocket<Tls>, code: Option<u16>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen_code = None;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Close(frame)) => seen_code = frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => {
                if let Some(code) = code {
                    assert_eq!(seen_code, Some(code), "close code");
                }
                return;
            }
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("the close did not end in close_notify: {e}"),
        }
    }
    panic!("the connection did not close within 10 s");
}

/// Reads a raw socket until EOF (or reset): what the server sent.
fn read_all(sock: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read: {e} after {} bytes", out.len()),
        }
    }
}

/// The bytes of a real ClientHello.
fn client_hello(pki: &TestPki) -> Vec<u8> {
    let mut conn =
        rustls::ClientConnection::new(pki.client_config(BOTH, &[b"http/1.1"]), localhost())
            .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

fn signal(server: &BinServer, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(server.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} failed");
}

/// Stops the server with SIGTERM and returns its stderr.
fn stop(server: &mut BinServer) -> String {
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    server.stderr_text()
}

/// Waits until `check` holds, at most 5 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within 5 s");
}

#[test]
fn wss_chat_https_healthz_tls12_and_tls13_with_close_notify() {
    let fx = start_tls("tls-e2e", &[], "warn");
    let mut alice = wss(&fx, &[&TLS13]);
    let mut bob = wss(&fx, &[&TLS12]);
    assert_eq!(
        alice.get_ref().conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        bob.get_ref().conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(alice.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    join(&mut alice, "alice");
    join(&mut bob, "bob");
    chat(&mut alice, &mut bob, "alice", "hello over TLS 1.3");
    chat(&mut bob, &mut alice, "bob", "and back over TLS 1.2");

    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let (status, body) = https_get_with(
            fx.server.addr,
            fx.pki.client_config(versions, &[b"http/1.1"]),
            "/healthz",
        );
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, "ok\n");
    }
    // No ALPN offered at all is fine too.
    let (status, _) = https_get_with(fx.server.addr, fx.pki.client_config(BOTH, &[]), "/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK");

    // Client-initiated close: the reply, then close_notify.
    alice.close(None).unwrap();
    expect_clean_end(&mut alice, Some(1000));
    // Server-initiated close (1003, binary on the chat): after the client's
    // reply, close_notify too.
    bob.send(Message::binary(vec![1, 2, 3])).unwrap();
    expect_clean_end(&mut bob, Some(1003));
    let m = scrape(&fx);
    assert_eq!(rejected(&m, "tls"), 0.0, "{}", m.text);
    assert!(m.get("wschat_bytes_sent_total") > 0.0);
}

#[test]
fn alpn_without_http11_fails_the_handshake_and_counts() {
    let fx = start_tls("tls-alpn", &[], "warn");
    let mut tls = tls_with(fx.server.addr, fx.pki.client_config(BOTH, &[b"h2"]));
    let err = handshake(&mut tls).expect_err("ALPN h2 only must be refused");
    assert!(
        err.to_string().contains("NoApplicationProtocol"),
        "the server's alert: {err}"
    );
    let mut ws = wss_with(
        fx.server.addr,
        fx.pki.client_config(BOTH, &[b"h2", b"http/1.1"]),
    )
    .expect("a list with http/1.1 is accepted");
    assert_eq!(ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    ws.close(None).unwrap();
    eventually("reason=tls counted", || {
        rejected(&scrape(&fx), "tls") == 1.0
    });
}

#[test]
fn plain_http_garbage_and_truncated_hellos_are_refused_and_counted() {
    let fx = start_tls("tls-refuse", &[], "warn");
    // Plain HTTP: the unencrypted 400, then the close.
    let mut sock = tcp(fx.server.addr);
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8(read_all(&mut sock)).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Content-Type: text/plain\r\n"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert!(
        body.contains("https://") && body.contains("wss://"),
        "{body}"
    );

    // A record holding a four-byte "ClientHello" of nonsense: a
    // decode_error alert, no HTTP. Then a handshake message claiming
    // megabytes: refused at once (rustls sends no alert for that one).
    for (garbage, alert) in [
        (&b"\x16\x03\x01\x00\x08\x01\x00\x00\x04junk"[..], true),
        (&b"\x16\x03\x01\x00\x10this is not tls!"[..], false),
    ] {
        let mut sock = tcp(fx.server.addr);
        sock.write_all(garbage).unwrap();
        let answer = read_all(&mut sock);
        assert!(!String::from_utf8_lossy(&answer).contains("HTTP/"));
        if alert {
            assert_eq!(answer.first(), Some(&0x15), "a TLS alert: {answer:?}");
        }
    }

    // Half a ClientHello, then the client gives up: closed, counted.
    let hello = client_hello(&fx.pki);
    let mut sock = tcp(fx.server.addr);
    sock.write_all(&hello[..hello.len() / 2]).unwrap();
    thread::sleep(Duration::from_millis(100));
    sock.shutdown(Shutdown::Write).unwrap();
    assert!(read_all(&mut sock).is_empty(), "nothing sent back");

    // A well-formed record holding a ClientHello that says it is 20 bytes
    // long: too short for even its version and random, a decode error.
    let mut cut = hello[..5 + 4 + 20].to_vec();
    cut[3..5].copy_from_slice(&24u16.to_be_bytes());
    cut[6..9].copy_from_slice(&[0, 0, 20]);
    let mut sock = tcp(fx.server.addr);
    sock.write_all(&cut).unwrap();
    let answer = read_all(&mut sock);
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );

    eventually("five reason=tls", || rejected(&scrape(&fx), "tls") == 5.0);
    let m = scrape(&fx);
    assert_eq!(rejected(&m, "timeout"), 0.0);
    assert_eq!(rejected(&m, "bad_request"), 0.0);
}

#[test]
fn tls_slowloris_is_dropped_at_the_handshake_timeout() {
    let fx = start_tls("tls-slow", &["--handshake-timeout", "1"], "warn");
    let addr = fx.server.addr;
    let hello = client_hello(&fx.pki);
    let started = Instant::now();
    // 1: a TCP connect that never sends anything.
    let silent = thread::spawn(move || {
        let mut sock = tcp(addr);
        let t = Instant::now();
        assert!(read_all(&mut sock).is_empty());
        t.elapsed()
    });
    // 2: a ClientHello, one byte every 200 ms.
    let trickle = thread::spawn(move || {
        let mut sock = tcp(addr);
        let t = Instant::now();
        for byte in hello.iter().take(15) {
            if sock.write_all(&[*byte]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        assert!(read_all(&mut sock).is_empty());
        t.elapsed()
    });
    // 3: a complete TLS handshake, then no request head: the timeout
    // covers both together.
    let pki_config = fx.pki.client_config(BOTH, &[b"http/1.1"]);
    let head_less = thread::spawn(move || {
        let mut tls = tls_with(addr, pki_config);
        let t = Instant::now();
        handshake(&mut tls).expect("handshake");
        let mut buf = Vec::new();
        let end = tls.read_to_end(&mut buf);
        assert!(buf.is_empty(), "no response: {buf:?}");
        (t.elapsed(), end.is_err())
    });
    for (what, elapsed) in [
        ("silent", silent.join().unwrap()),
        ("trickle", trickle.join().unwrap()),
    ] {
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "{what} dropped after {elapsed:?}"
        );
    }
    let (elapsed, no_close_notify) = head_less.join().unwrap();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "handshaken but head-less connection dropped after {elapsed:?}"
    );
    assert!(no_close_notify, "a dropped connection gets no close_notify");
    assert!(started.elapsed() < Duration::from_secs(6));
    let m = scrape(&fx);
    assert_eq!(rejected(&m, "timeout"), 3.0, "{}", m.text);
    assert_eq!(rejected(&m, "tls"), 0.0, "{}", m.text);
}

#[test]
fn connection_limit_with_tls_closes_without_a_response() {
    let fx = start_tls("tls-limit", &["--max-connections", "1"], "warn");
    let mut held = wss(&fx, BOTH);
    let mut sock = tcp(fx.server.addr);
    // The server may have closed already: then the write fails, fine.
    let _ = sock.write_all(&client_hello(&fx.pki));
    let answer = read_all(&mut sock);
    assert!(answer.is_empty(), "no TLS, no 503: {answer:?}");
    held.close(None).unwrap();
    expect_clean_end(&mut held, Some(1000));
    drop(held);
    let mut m = None;
    let config = fx.pki.client_config(BOTH, &[b"http/1.1"]);
    eventually("a scrape once the slot is free", || {
        match try_https_get(fx.server.addr, Arc::clone(&config), "/metrics") {
            Ok((_, body)) => {
                m = Some(metrics::parse(&body));
                true
            }
            Err(_) => false,
        }
    });
    let m = m.unwrap();
    assert!(rejected(&m, "limit") >= 1.0, "{}", m.text);
    assert_eq!(rejected(&m, "tls"), 0.0, "{}", m.text);
}

#[test]
fn a_blocked_tls_reader_gets_everything_once_it_reads_again() {
    // 8 MB to each of two readers that do not read meanwhile: more than the
    // kernel holds (4 MB send buffer at most, 128 KB receive window), so the
    // server's writes block and must resume on WRITABLE.
    let fx = start_tls(
        "tls-blocked",
        &["--max-output-bytes", "33554432", "--idle-timeout", "0"],
        "warn",
    );
    let mut quiet = wss(&fx, &[&TLS13]);
    let mut talker = wss(&fx, &[&TLS12]);
    join(&mut quiet, "quiet");
    join(&mut talker, "talker");
    let line = "x".repeat(1990);
    const COUNT: usize = 4000;
    for i in 0..COUNT {
        send(
            &mut talker,
            json!({"name": "talker", "message": format!("{i:05} {line}")}),
        );
    }
    thread::sleep(Duration::from_millis(500));
    for ws in [&mut quiet, &mut talker] {
        ws.get_mut()
            .sock
            .0
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut next = 0;
        while next < COUNT {
            if let Message::Text(text) = ws.read().expect("read the backlog") {
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                if v["type"] != "usermsg" {
                    continue;
                }
                let msg = v["message"].as_str().unwrap();
                assert_eq!(&msg[..5], format!("{next:05}"), "in order, none lost");
                next += 1;
            }
        }
    }
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_it_when_broken() {
    let mut fx = start_tls("tls-hup", &[], "warn");
    let dir = fx.pki.cert.parent().unwrap().to_path_buf();
    let old_client = fx.pki.client_config(BOTH, &[b"http/1.1"]);
    let mut old_ws = wss(&fx, BOTH);
    join(&mut old_ws, "early");

    let two = TestPki::make(&dir, "two", KeyKind::Rsa2048);
    let new_client = two.client_config(BOTH, &[b"http/1.1"]);
    std::fs::copy(&two.cert, dir.join("server.pem")).unwrap();
    std::fs::copy(&two.key, dir.join("server.key")).unwrap();
    signal(&fx.server, "HUP");
    let addr = fx.server.addr;
    eventually("new connections see the new certificate", || {
        let mut tls = tls_with(addr, Arc::clone(&new_client));
        handshake(&mut tls).is_ok()
    });
    let mut old_pair = tls_with(addr, Arc::clone(&old_client));
    let err = handshake(&mut old_pair).expect_err("the old certificate is gone");
    assert!(err.to_string().contains("certificate"), "{err}");
    // The connection made before the reload keeps chatting.
    let mut new_ws = wss_with(addr, Arc::clone(&new_client)).unwrap();
    join(&mut new_ws, "late");
    chat(&mut old_ws, &mut new_ws, "early", "still here after SIGHUP");
    chat(&mut new_ws, &mut old_ws, "late", "hello from the new pair");

    // A broken file: the reload fails, the pair stays.
    std::fs::write(dir.join("server.pem"), "not a certificate\n").unwrap();
    signal(&fx.server, "HUP");
    let metrics_with_new = |fx: &Fixture| {
        let (status, body) = https_get_with(fx.server.addr, Arc::clone(&new_client), "/metrics");
        assert!(status.contains(" 200 "));
        metrics::parse(&body)
    };
    eventually("a failed reload counted", || {
        metrics_with_new(&fx).get("wschat_tls_reloads_total{result=\"failed\"}") == 1.0
    });
    let m = metrics_with_new(&fx);
    assert_eq!(m.get("wschat_tls_reloads_total{result=\"ok\"}"), 1.0);
    chat(
        &mut old_ws,
        &mut new_ws,
        "early",
        "the broken file changed nothing",
    );
    let stderr = stop(&mut fx.server);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("TLS reload failed"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("ERROR") && errors[0].contains("server.pem"),
        "{stderr}"
    );
}

#[test]
fn sighup_without_tls_is_ignored() {
    let mut cmd = bin();
    cmd.env("RUST_LOG", "info")
        .args(["--host", "127.0.0.1", "0"]);
    let mut server = BinServer::start(cmd);
    signal(&server, "HUP");
    signal(&server, "HUP");
    thread::sleep(Duration::from_millis(300));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped it"
    );
    let response = common::raw::get(server.addr, "/healthz");
    assert_eq!(response.status, 200);
    let stderr = stop(&mut server);
    assert!(stderr.contains("SIGHUP ignored"), "{stderr}");
}

fn expect_exit_2(args: &[&Path], flag: &str, mention: &Path) {
    let mut cmd = bin();
    cmd.args(["--host", "127.0.0.1", "0", "--tls-cert"])
        .arg(args[0])
        .arg("--tls-key")
        .arg(args[1]);
    let (status, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "nothing bound: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(flag), "names {flag}: {stderr}");
    assert!(
        stderr.contains(&*mention.to_string_lossy()),
        "names the file: {stderr}"
    );
}

#[test]
fn bad_tls_files_exit_2_with_one_line() {
    let dir = TempDir::new("tls-bad");
    let one = TestPki::make(&dir.path, "one", KeyKind::EcP256);
    let two = TestPki::make(&dir.path, "two", KeyKind::EcP256);
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    expect_exit_2(&[&missing, &one.key], "--tls-cert", &missing);
    expect_exit_2(&[&one.cert, &missing], "--tls-key", &missing);
    expect_exit_2(&[&garbage, &one.key], "--tls-cert", &garbage);
    expect_exit_2(&[&one.cert, &one.cert], "--tls-key", &one.cert);
    expect_exit_2(&[&one.cert, &two.key], "--tls-key", &two.key);
}

#[test]
fn openssl_s_client_sees_tls13_tls12_and_alpn() {
    let openssl = require("openssl", "openssl");
    let fx = start_tls("tls-sclient", &[], "warn");
    let connect = format!("127.0.0.1:{}", fx.server.addr.port());
    for (version, expected) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let mut child = Command::new(&openssl)
            .args([
                "s_client", "-connect", &connect, version, "-alpn", "http/1.1",
            ])
            .arg("-CAfile")
            .arg(&fx.pki.ca_cert)
            .args(["-servername", "localhost", "-ign_eof"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run openssl s_client");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("s_client {version} did not finish");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Protocol: {expected}"))
                || text.contains(&format!(", {expected},")),
            "{text}"
        );
        assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
        assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    }
}

#[test]
fn trusted_proxy_names_the_client_in_log_lines() {
    for (trusted, expect_open) in [(true, "open 203.0.113.7 /"), (false, "open 127.0.0.1:")] {
        let mut cmd = bin();
        cmd.env("RUST_LOG", "info")
            .args(["--host", "127.0.0.1", "0"]);
        if trusted {
            cmd.args(["--trusted-proxy", "127.0.0.0/8"]);
        }
        let mut server = BinServer::start(cmd);
        let key = common::raw::new_key();
        let request = common::raw::upgrade_request(
            "/",
            &key,
            &["X-Forwarded-For: 198.51.100.1, 203.0.113.7"],
        );
        let (mut raw, response) = common::raw::http_head_only(server.addr, &request);
        common::raw::assert_switching(&response, &key);
        raw.send(&common::raw::close_frame(Some(1000), b""));
        raw.expect_close(Some(1000));
        raw.expect_tcp_closed(Duration::from_secs(3));
        drop(raw);
        thread::sleep(Duration::from_millis(200));
        let stderr = stop(&mut server);
        assert!(stderr.contains(expect_open), "{stderr}");
        if trusted {
            assert!(stderr.contains("closed 203.0.113.7 ("), "{stderr}");
            assert!(!stderr.contains("198.51.100.1"), "a forged entry: {stderr}");
        } else {
            assert!(!stderr.contains("203.0.113.7"), "{stderr}");
        }
    }
}

#[test]
fn wschat_bench_speaks_wss() {
    let fx = start_tls("tls-bench", &["--echo"], "warn");
    let url = format!("wss://127.0.0.1:{}/echo", fx.server.addr.port());
    let (status, stdout, stderr) = run_to_exit(
        {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_wschat-bench"));
            cmd.args(["echo", "--url", &url, "--clients", "2", "--duration", "1"]);
            cmd
        },
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("on wss://"), "{stdout}");
    assert!(stdout.contains("disconnects 0, bad echoes 0"), "{stdout}");
    assert!(stdout.contains("verdict: ok"), "{stdout}");
}

#[test]
fn wschat_bench_waits_for_https_healthz_before_a_fanout_over_several_ports() {
    // The same server named twice stands in for two cluster nodes: the
    // bench's health wait must speak TLS, then every client checks every
    // broadcast.
    let fx = start_tls("tls-bench-nodes", &[], "warn");
    let port = fx.server.addr.port().to_string();
    let (status, stdout, stderr) = run_to_exit(
        {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_wschat-bench"));
            cmd.args(["fanout", "--port", &format!("{port},{port}"), "--tls"])
                .args(["--clients", "20", "--senders", "4", "--rate", "40"])
                .args(["--duration", "1", "--warmup", "0.2", "--drain", "1"]);
            cmd
        },
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(100.000 %)"), "{stdout}");
    assert!(
        stdout.contains("gaps 0, reorders 0, disconnects 0"),
        "{stdout}"
    );
}

#[test]
fn an_idle_drop_sends_no_close_notify() {
    // Keepalive: a ping after 1 s of silence, the drop 1 s later. The peer
    // is presumed gone, so there is no close handshake and no close_notify.
    let fx = start_tls("tls-idle", &["--idle-timeout", "1"], "warn");
    let mut tls = tls_with(fx.server.addr, fx.pki.client_config(BOTH, &[b"http/1.1"]));
    let key = common::raw::new_key();
    tls.write_all(common::raw::upgrade_request("/", &key, &[]).as_bytes())
        .unwrap();
    tls.sock
        .0
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let end = tls.read_to_end(&mut got);
    let elapsed = started.elapsed();
    let err = end.expect_err("dropped, so no close_notify");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(
        got.windows(2).any(|w| w == [0x89, 0x00]),
        "the keepalive ping came first"
    );
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(4),
        "dropped after {elapsed:?}"
    );
}

/// Reads the next data message, answering nothing (tungstenite queues pongs
/// itself) and skipping control frames.
fn next_data(ws: &mut WebSocket<Tls>) -> Message {
    loop {
        match ws.read().expect("read an echo") {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

#[test]
fn wss_echo_returns_every_size_fragments_and_bursts_intact() {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let fx = start_tls(
        "tls-echo",
        &["--echo", "--max-message-bytes", "16777216"],
        "warn",
    );
    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let url = format!("wss://localhost:{}/echo", fx.server.addr.port());
        let tls = tls_with(
            fx.server.addr,
            fx.pki.client_config(versions, &[b"http/1.1"]),
        );
        let (mut ws, _) = tungstenite::client::client(url.as_str(), tls).expect("wss /echo");
        ws.get_mut()
            .sock
            .0
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // Sizes around every length encoding and TLS record boundary, up
        // to many records per message.
        for size in [
            0,
            1,
            125,
            126,
            16_383,
            16_384,
            16_385,
            65_535,
            65_536,
            1 << 20,
            5 << 20,
        ] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            ws.send(Message::binary(payload.clone())).expect("send");
            match next_data(&mut ws) {
                Message::Binary(echo) => {
                    assert!(
                        echo[..] == payload[..],
                        "{size} bytes intact ({versions:?})"
                    )
                }
                other => panic!("{size}: not a binary echo: {other:?}"),
            }
        }
        // A text message in three fragments with a ping between them.
        let parts = ["fragmented ", "über ", "TLS records"];
        ws.write(Message::Frame(Frame::message(
            parts[0],
            OpCode::Data(Data::Text),
            false,
        )))
        .unwrap();
        ws.write(Message::Frame(Frame::message(
            parts[1],
            OpCode::Data(Data::Continue),
            false,
        )))
        .unwrap();
        ws.write(Message::Ping("between".into())).unwrap();
        ws.write(Message::Frame(Frame::message(
            parts[2],
            OpCode::Data(Data::Continue),
            true,
        )))
        .unwrap();
        ws.flush().unwrap();
        let mut ponged = false;
        let text = loop {
            match ws.read().expect("read the fragmented echo") {
                Message::Pong(data) => {
                    assert_eq!(&data[..], b"between");
                    ponged = true;
                }
                Message::Text(text) => break text,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(ponged, "the ping between fragments is answered first");
        assert_eq!(text.as_str(), parts.concat());
        // A burst of 2 000 small messages written at once comes back in
        // order.
        for i in 0..2000 {
            ws.write(Message::text(format!("burst {i}"))).unwrap();
        }
        ws.flush().unwrap();
        for i in 0..2000 {
            match next_data(&mut ws) {
                Message::Text(text) => assert_eq!(text.as_str(), format!("burst {i}")),
                other => panic!("burst {i}: {other:?}"),
            }
        }
        ws.close(None).unwrap();
        expect_clean_end(&mut ws, Some(1000));
    }
}
