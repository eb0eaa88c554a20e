//! The TLS transport against a real rustls client over loopback TCP: the
//! server side is the non-blocking `TlsTransport`, driven here the way the
//! poll loop drives it; the client is an independent blocking rustls client
//! in its own thread. Certificates come from the real `openssl` command.

mod tls_support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::version::{TLS12, TLS13};
use tls_support::{KeyKind, TempDir, TestPki, localhost};
use wschat::transport::tls::{
    INSIDE_LIMIT, NOT_TLS_RESPONSE, TlsFailure, TlsSettings, TlsTransport,
};

const STEP: Duration = Duration::from_millis(2);
const LIMIT: Duration = Duration::from_secs(10);

/// A connected pair: the server's transport and the client's blocking socket.
fn pair(config: Arc<rustls::ServerConfig>) -> (TlsTransport, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let (server, _) = listener.accept().expect("accept");
    server.set_nonblocking(true).unwrap();
    let transport = TlsTransport::new(mio::net::TcpStream::from_std(server), config).unwrap();
    (transport, client)
}

/// Reads plaintext until `want` bytes have come, as the loop would on
/// readable events (here: polling), flushing handshake output as it goes.
fn read_exactly(t: &mut TlsTransport, want: usize) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + LIMIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        assert!(Instant::now() < deadline, "server read timed out");
        match t.read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                t.flush_pending()?;
                thread::sleep(STEP);
            }
            Err(err) => return Err(err),
        }
    }
    Ok(got)
}

/// Waits for the peer's EOF (clean or not).
fn read_eof(t: &mut TlsTransport) -> io::Result<()> {
    let deadline = Instant::now() + LIMIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "no EOF from the client");
        match t.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => panic!("unexpected {n} bytes"),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => thread::sleep(STEP),
            Err(err) => return Err(err),
        }
    }
}

fn flush_all(t: &mut TlsTransport) {
    let deadline = Instant::now() + LIMIT;
    while !t.flush_pending().expect("flush") {
        assert!(Instant::now() < deadline, "flush timed out");
        thread::sleep(STEP);
    }
}

fn pki(dir: &TempDir) -> TestPki {
    TestPki::make(&dir.path, "server", KeyKind::EcP256)
}

/// What the client saw of one exchange.
#[derive(Debug)]
struct ClientView {
    version: Option<rustls::ProtocolVersion>,
    alpn: Option<Vec<u8>>,
    reply: Vec<u8>,
    /// The read after the reply: Ok(0) only after close_notify.
    after: io::Result<usize>,
}

/// Client: handshake, send `hello`, read the 5-byte reply, then read once
/// more to see how the server closed.
fn hello_client(
    sock: TcpStream,
    config: Arc<rustls::ClientConfig>,
) -> thread::JoinHandle<Result<ClientView, String>> {
    thread::spawn(move || {
        let conn = rustls::ClientConnection::new(config, localhost()).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut reply = vec![0u8; 5];
        tls.read_exact(&mut reply).map_err(|e| e.to_string())?;
        let mut rest = [0u8; 16];
        let after = tls.read(&mut rest);
        Ok(ClientView {
            version: tls.conn.protocol_version(),
            alpn: tls.conn.alpn_protocol().map(<[u8]>::to_vec),
            reply,
            after,
        })
    })
}

/// Server half of the hello exchange: answer, close_notify, FIN.
fn hello_server(t: &mut TlsTransport) -> io::Result<()> {
    let got = read_exactly(t, 5)?;
    assert_eq!(got, b"hello");
    assert!(!t.is_handshaking());
    assert_eq!(t.write(b"HELLO")?, 5);
    t.shutdown_write();
    flush_all(t);
    assert_eq!(t.pending_bytes(), 0);
    Ok(())
}

#[test]
fn tls13_and_tls12_handshake_alpn_and_close_notify() {
    let dir = TempDir::new("tls-versions");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).expect("load settings");
    for (versions, want) in [
        (&[&TLS13][..], rustls::ProtocolVersion::TLSv1_3),
        (&[&TLS12][..], rustls::ProtocolVersion::TLSv1_2),
    ] {
        let (mut server, sock) = pair(settings.config());
        let client = hello_client(sock, pki.client_config(versions, &[b"h2", b"http/1.1"]));
        hello_server(&mut server).expect("server side");
        assert_eq!(server.protocol_version(), Some(want));
        assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
        let view = client.join().unwrap().expect("client side");
        assert_eq!(view.version, Some(want));
        assert_eq!(view.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(view.reply, b"HELLO");
        // rustls' stream reads Ok(0) only after close_notify; a bare FIN
        // would be UnexpectedEof.
        assert_eq!(
            view.after.expect("clean close"),
            0,
            "{want:?}: close_notify"
        );
    }
}

#[test]
fn no_alpn_offer_is_fine() {
    let dir = TempDir::new("tls-noalpn");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    let (mut server, sock) = pair(settings.config());
    let client = hello_client(sock, pki.client_config(&[&TLS13], &[]));
    hello_server(&mut server).unwrap();
    let view = client.join().unwrap().unwrap();
    assert_eq!(view.alpn, None);
}

#[test]
fn alpn_without_http11_fails_the_handshake() {
    let dir = TempDir::new("tls-alpn");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let (mut server, sock) = pair(settings.config());
        let client = hello_client(sock, pki.client_config(versions, &[b"h2", b"spdy/3"]));
        let err = read_exactly(&mut server, 5).expect_err("handshake must fail");
        match TlsFailure::of(&err) {
            Some(TlsFailure::Rejected(rustls::Error::NoApplicationProtocol)) => {}
            other => panic!("wrong failure: {other:?} ({err})"),
        }
        let _ = server.flush_pending();
        drop(server);
        let client_err = client.join().unwrap().expect_err("client must fail");
        assert!(
            client_err.contains("NoApplicationProtocol"),
            "client saw: {client_err}"
        );
    }
}

#[test]
fn plain_http_gets_the_plain_400() {
    let dir = TempDir::new("tls-plain");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    let (mut server, mut sock) = pair(settings.config());
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let err = read_exactly(&mut server, 1).expect_err("plain text must be refused");
    assert!(
        matches!(TlsFailure::of(&err), Some(TlsFailure::NotTls)),
        "{err}"
    );
    assert!(server.is_handshaking());
    let mut written = 0;
    while written < NOT_TLS_RESPONSE.len() {
        written += server.write(&NOT_TLS_RESPONSE[written..]).unwrap();
    }
    server.shutdown_write();
    flush_all(&mut server);
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, NOT_TLS_RESPONSE, "sent unencrypted, then FIN");
    let text = String::from_utf8(answer).unwrap();
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    assert!(text.contains("Content-Type: text/plain\r\n"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    assert!(body.contains("https://") && body.contains("wss://"));
}

/// The bytes of a real ClientHello.
fn client_hello(pki: &TestPki) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(
        pki.client_config(&[&TLS13, &TLS12], &[b"http/1.1"]),
        localhost(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert_eq!(hello[0], 0x16);
    hello
}

#[test]
fn garbage_after_the_handshake_byte_is_rejected_without_http() {
    let dir = TempDir::new("tls-garbage");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    for (garbage, alert_expected) in [
        // A record holding a "ClientHello" of four bytes of nonsense: rustls
        // answers with a decode_error alert.
        (&b"\x16\x03\x01\x00\x08\x01\x00\x00\x04junk"[..], true),
        // A handshake message claiming megabytes: refused at once.
        (&b"\x16\x03\x01\x00\x10this is not tls!"[..], false),
    ] {
        let (mut server, mut sock) = pair(settings.config());
        sock.write_all(garbage).unwrap();
        let err = read_exactly(&mut server, 1).expect_err("garbage must be refused");
        assert!(
            matches!(TlsFailure::of(&err), Some(TlsFailure::Rejected(_))),
            "{err}"
        );
        let _ = server.flush_pending();
        drop(server);
        let mut answer = Vec::new();
        let _ = sock.read_to_end(&mut answer);
        assert!(!answer.starts_with(b"HTTP"), "no HTTP response");
        if alert_expected {
            assert_eq!(
                answer.first(),
                Some(&0x15),
                "a TLS alert record: {answer:?}"
            );
        }
    }
}

#[test]
fn truncated_client_hello_then_eof_ends_in_handshake() {
    let dir = TempDir::new("tls-trunc");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    let hello = client_hello(&pki);
    let (mut server, mut sock) = pair(settings.config());
    sock.write_all(&hello[..hello.len() / 2]).unwrap();
    // Half a ClientHello: nothing to do yet, the handshake timeout will
    // decide if the peer stalls here.
    thread::sleep(Duration::from_millis(50));
    let mut buf = [0u8; 64];
    let stalled = server.read(&mut buf).expect_err("nothing to read yet");
    assert_eq!(stalled.kind(), io::ErrorKind::WouldBlock);
    assert!(server.is_handshaking());
    sock.shutdown(Shutdown::Write).unwrap();
    read_eof(&mut server).expect("EOF, not a crash");
    assert!(
        server.is_handshaking(),
        "the loop counts this as a TLS reject"
    );
}

#[test]
fn one_flush_coalesces_many_frames_into_few_records() {
    let dir = TempDir::new("tls-records");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let (mut server, sock) = pair(settings.config());
        let frame = b"\x81\x1c{\"type\":\"usermsg\",\"n\":\"ab\"}";
        let big = [b'x'; 1000];
        let rounds = vec![50 * frame.len(), 40 * big.len()];
        let config = pki.client_config(versions, &[b"http/1.1"]);
        let totals = rounds.clone();
        let client = thread::spawn(move || count_records(sock, config, &totals));
        assert_eq!(read_exactly(&mut server, 2).unwrap(), b"go");
        // Round 1: one loop turn of 50 small frames, one flush.
        for _ in 0..50 {
            assert_eq!(server.write(frame).unwrap(), frame.len());
        }
        assert!(
            server.pending_bytes() >= rounds[0],
            "staged bytes are counted"
        );
        flush_all(&mut server);
        assert_eq!(server.pending_bytes(), 0);
        // Round 2: 40 kB in 1 kB frames: full 16 KiB records, then the rest.
        for _ in 0..40 {
            assert_eq!(server.write(&big).unwrap(), big.len());
        }
        flush_all(&mut server);
        let (records, plaintext) = client.join().unwrap();
        let mut want = frame.repeat(50);
        want.extend_from_slice(&big.repeat(40));
        assert!(plaintext == want, "plaintext intact");
        // One data record, plus at most the TLS 1.3 session tickets the
        // server sends after the handshake.
        assert!(
            records[0] <= 3,
            "{} records for 50 frames ({versions:?})",
            records[0]
        );
        assert_eq!(
            records[1], 3,
            "40000 bytes = 16384 + 16384 + 7232 ({versions:?})"
        );
    }
}

/// Client for the record count: handshake, say "go", then read the raw
/// socket record by record until each round's plaintext has come; returns
/// the records per round (a record without plaintext, such as a session
/// ticket, counts in the round it arrived in) and all plaintext.
fn count_records(
    mut sock: TcpStream,
    config: Arc<rustls::ClientConfig>,
    rounds: &[usize],
) -> (Vec<usize>, Vec<u8>) {
    let mut conn = rustls::ClientConnection::new(config, localhost()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.writer().write_all(b"go").unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    let total: usize = rounds.iter().sum();
    let mut wire = Vec::new();
    let mut plaintext = Vec::new();
    let mut records = vec![0; rounds.len()];
    let mut buf = [0u8; 65536];
    while plaintext.len() < total {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "EOF before all plaintext");
        wire.extend_from_slice(&buf[..n]);
        // Record header: type, version (2), length (2).
        while wire.len() >= 5 {
            let len = u16::from_be_bytes([wire[3], wire[4]]) as usize;
            if wire.len() < 5 + len {
                break;
            }
            assert_eq!(wire[0], 0x17, "application data records only");
            let record: Vec<u8> = wire.drain(..5 + len).collect();
            let mut round = 0;
            let mut before = plaintext.len();
            while round + 1 < rounds.len() && before >= rounds[round] {
                before -= rounds[round];
                round += 1;
            }
            records[round] += 1;
            // read_tls takes at most a few kB per call.
            let mut rest = &record[..];
            while !rest.is_empty() {
                conn.read_tls(&mut rest).unwrap();
                conn.process_new_packets().unwrap();
            }
            let mut out = [0u8; 65536];
            loop {
                match conn.reader().read(&mut out) {
                    Ok(0) => break,
                    Ok(k) => plaintext.extend_from_slice(&out[..k]),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => panic!("client read: {err}"),
                }
            }
        }
    }
    (records, plaintext)
}

#[test]
fn write_stops_at_the_inside_limit_and_nothing_is_lost() {
    let dir = TempDir::new("tls-backpressure");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    let (mut server, sock) = pair(settings.config());
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let config = pki.client_config(&[&TLS13], &[b"http/1.1"]);
    let client = thread::spawn(move || {
        let conn = rustls::ClientConnection::new(config, localhost()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"go").unwrap();
        // Do not read until the server has hit its limit.
        go_rx.recv().unwrap();
        let mut all = Vec::new();
        tls.read_to_end(&mut all).unwrap();
        all
    });
    assert_eq!(read_exactly(&mut server, 2).unwrap(), b"go");
    let mut sent: Vec<u8> = Vec::new();
    let mut counter = 0u32;
    let mut chunk = Vec::new();
    let deadline = Instant::now() + LIMIT;
    loop {
        assert!(Instant::now() < deadline, "the kernel never filled up");
        if chunk.is_empty() {
            chunk = format!("{counter:08} ").repeat(100).into_bytes();
            counter += 1;
        }
        match server.write(&chunk) {
            Ok(n) => {
                sent.extend_from_slice(&chunk[..n]);
                chunk.drain(..n);
                server.flush_pending().unwrap();
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => panic!("write: {err}"),
        }
        // Record overhead is at most a few hundred bytes over the limit.
        assert!(server.pending_bytes() <= INSIDE_LIMIT + 1024);
    }
    assert!(
        server.pending_bytes() >= INSIDE_LIMIT / 2,
        "the transport filled up"
    );
    assert!(server.wants_write());
    go_tx.send(()).unwrap();
    server.shutdown_write();
    flush_all(&mut server);
    let got = client.join().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "bytes arrived intact and in order");
    server.trim_idle();
    assert_eq!(server.pending_bytes(), 0);
}

fn load_err(cert: &std::path::Path, key: &std::path::Path) -> String {
    let err = TlsSettings::load(cert, key).expect_err("must be refused");
    assert!(!err.contains('\n'), "one line: {err}");
    err
}

#[test]
fn settings_accept_pkcs8_pkcs1_and_sec1_keys() {
    let dir = TempDir::new("tls-keys");
    for (name, kind) in [("ec", KeyKind::EcP256), ("rsa", KeyKind::Rsa2048)] {
        let pki = TestPki::make(&dir.path, name, kind);
        let pkcs8 = std::fs::read_to_string(&pki.key).unwrap();
        assert!(
            pkcs8.contains("BEGIN PRIVATE KEY"),
            "{name}: PKCS#8 expected"
        );
        TlsSettings::load(&pki.cert, &pki.key).unwrap_or_else(|e| panic!("{name} PKCS#8: {e}"));
        let trad = pki.traditional_key(kind);
        let text = std::fs::read_to_string(&trad).unwrap();
        let marker = match kind {
            KeyKind::EcP256 => "BEGIN EC PRIVATE KEY",
            KeyKind::Rsa2048 => "BEGIN RSA PRIVATE KEY",
        };
        assert!(text.contains(marker), "{name}: {marker} expected");
        let settings = TlsSettings::load(&pki.cert, &trad)
            .unwrap_or_else(|e| panic!("{name} traditional: {e}"));
        // And it really serves with that key.
        let (mut server, sock) = pair(settings.config());
        let client = hello_client(sock, pki.client_config(&[&TLS12, &TLS13], &[b"http/1.1"]));
        hello_server(&mut server).unwrap();
        assert_eq!(client.join().unwrap().unwrap().reply, b"HELLO");
    }
}

#[test]
fn settings_refuse_bad_files_with_one_line_naming_them() {
    let dir = TempDir::new("tls-bad");
    let a = TestPki::make(&dir.path, "a", KeyKind::EcP256);
    let b = TestPki::make(&dir.path, "b", KeyKind::EcP256);
    let missing = dir.join("missing.pem");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let bad_der = dir.join("bad-der.pem");
    std::fs::write(
        &bad_der,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();

    let err = load_err(&missing, &a.key);
    assert!(
        err.contains("--tls-cert") && err.contains(&*missing.to_string_lossy()),
        "{err}"
    );
    let err = load_err(&a.cert, &missing);
    assert!(
        err.contains("--tls-key") && err.contains(&*missing.to_string_lossy()),
        "{err}"
    );
    for bad in [&empty, &garbage, &bad_der, &a.key] {
        let err = load_err(bad, &a.key);
        assert!(
            err.contains("--tls-cert") && err.contains(&*bad.to_string_lossy()),
            "{err}"
        );
    }
    for bad in [&empty, &garbage, &a.cert] {
        let err = load_err(&a.cert, bad);
        assert!(
            err.contains("--tls-key") && err.contains(&*bad.to_string_lossy()),
            "{err}"
        );
    }
    let err = load_err(&a.cert, &b.key);
    assert!(
        err.contains("--tls-key") && err.contains("does not match"),
        "{err}"
    );
    let rsa = TestPki::make(&dir.path, "r", KeyKind::Rsa2048);
    let err = load_err(&a.cert, &rsa.key);
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn reload_swaps_the_pair_for_new_connections_and_keeps_it_on_error() {
    let dir = TempDir::new("tls-reload");
    let first = TestPki::make(&dir.path, "first", KeyKind::EcP256);
    let second = TestPki::make(&dir.path, "second", KeyKind::EcP256);
    let cert = dir.join("live.pem");
    let key = dir.join("live.key");
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let mut settings = TlsSettings::load(&cert, &key).unwrap();

    // A connection opened before the reload...
    let (mut old_server, old_sock) = pair(settings.config());
    let old_config = settings.config();

    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    settings.reload().expect("good reload");
    assert!(!Arc::ptr_eq(&old_config, &settings.config()));

    // ...still finishes with the old pair,
    let client = hello_client(old_sock, first.client_config(&[&TLS13], &[b"http/1.1"]));
    hello_server(&mut old_server).unwrap();
    assert_eq!(client.join().unwrap().unwrap().reply, b"HELLO");
    // and new connections get the new one.
    let (mut server, sock) = pair(settings.config());
    let client = hello_client(sock, second.client_config(&[&TLS13], &[b"http/1.1"]));
    hello_server(&mut server).unwrap();
    assert_eq!(client.join().unwrap().unwrap().reply, b"HELLO");

    // A broken reload (key of another pair) changes nothing.
    let good = settings.config();
    std::fs::copy(&first.key, &key).unwrap();
    let err = settings.reload().expect_err("mismatched key");
    assert!(err.contains("does not match"), "{err}");
    std::fs::write(&cert, "").unwrap();
    assert!(settings.reload().is_err());
    assert!(Arc::ptr_eq(&good, &settings.config()), "old config kept");
    let (mut server, sock) = pair(settings.config());
    let client = hello_client(sock, second.client_config(&[&TLS13], &[b"http/1.1"]));
    hello_server(&mut server).unwrap();
    assert_eq!(client.join().unwrap().unwrap().reply, b"HELLO");
}

/// `openssl s_client` (an independent TLS implementation) against the
/// transport: version, ALPN, data both ways, close_notify ends it cleanly.
#[test]
fn openssl_s_client_tls12_tls13_and_alpn() {
    let openssl = tls_support::require("openssl", "openssl");
    let dir = TempDir::new("tls-s-client");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    for (flag, version) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        for (alpn, accepted) in [("http/1.1", true), ("h2,http/1.1", true), ("h2", false)] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut child = std::process::Command::new(&openssl)
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                .args(["-servername", "localhost", "-verify_return_error", flag])
                .args(["-alpn", alpn, "-ign_eof", "-CAfile"])
                .arg(&pki.ca_cert)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn openssl s_client");
            child.stdin.take().unwrap().write_all(b"hello").unwrap();
            let (sock, _) = listener.accept().unwrap();
            sock.set_nonblocking(true).unwrap();
            let mut server =
                TlsTransport::new(mio::net::TcpStream::from_std(sock), settings.config()).unwrap();
            let served = hello_server(&mut server);
            let _ = server.flush_pending();
            drop(server);
            let deadline = Instant::now() + LIMIT;
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("s_client did not exit");
                }
                thread::sleep(Duration::from_millis(10));
            }
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if accepted {
                served.unwrap_or_else(|e| panic!("{flag} {alpn}: {e}\n{text}"));
                assert!(
                    text.contains(&format!("Protocol: {version}"))
                        || text.contains(&format!("New, {version}")),
                    "{flag}: {text}"
                );
                assert!(
                    text.contains("ALPN protocol: http/1.1"),
                    "{flag} {alpn}: {text}"
                );
                assert!(text.contains("HELLO"), "{flag} {alpn}: {text}");
                assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
            } else {
                let err = served.expect_err("h2 only must fail");
                assert!(
                    matches!(
                        TlsFailure::of(&err),
                        Some(TlsFailure::Rejected(rustls::Error::NoApplicationProtocol))
                    ),
                    "{err}"
                );
                assert!(text.contains("no application protocol"), "{flag}: {text}");
                assert!(!out.status.success());
            }
        }
    }
}

/// Writes `bytes` a few at a time with pauses, so that the server reads
/// partial records and keeps the rest between reads.
fn trickle(sock: &mut TcpStream, bytes: &[u8], piece: usize) {
    for chunk in bytes.chunks(piece) {
        sock.write_all(chunk).unwrap();
        thread::sleep(Duration::from_micros(300));
    }
}

#[test]
fn trickled_and_bulk_records_arrive_whole_and_an_idle_connection_keeps_no_buffers() {
    let dir = TempDir::new("tls-trickle");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let (mut server, mut sock) = pair(settings.config());
        sock.set_nodelay(true).unwrap();
        let config = pki.client_config(versions, &[b"http/1.1"]);
        let bulk: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let expected = bulk.clone();
        let client = thread::spawn(move || {
            let mut conn = rustls::ClientConnection::new(config, localhost()).unwrap();
            // The whole handshake and a short line, 3 bytes at a time.
            conn.writer().write_all(b"first line").unwrap();
            let mut wire = Vec::new();
            while conn.is_handshaking() {
                while conn.wants_write() {
                    conn.write_tls(&mut wire).unwrap();
                }
                trickle(&mut sock, &wire, 3);
                wire.clear();
                if conn.is_handshaking() {
                    conn.read_tls(&mut sock).unwrap();
                    conn.process_new_packets().unwrap();
                }
            }
            while conn.wants_write() {
                conn.write_tls(&mut wire).unwrap();
            }
            trickle(&mut sock, &wire, 3);
            // Then 100 kB in one go: seven records, read in pieces.
            let mut tls = rustls::StreamOwned::new(conn, sock);
            tls.write_all(&bulk).unwrap();
            let mut echoed = vec![0u8; bulk.len()];
            tls.read_exact(&mut echoed).unwrap();
            echoed
        });
        let all = read_exactly(&mut server, 10 + expected.len()).unwrap();
        let (first, got) = all.split_at(10);
        assert!(
            first == b"first line",
            "trickled line intact ({versions:?})"
        );
        assert!(got == expected, "bulk plaintext intact ({versions:?})");
        let mut sent = 0;
        while sent < got.len() {
            match server.write(&got[sent..]) {
                Ok(n) => sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    server.flush_pending().unwrap();
                    thread::sleep(STEP);
                }
                Err(err) => panic!("write: {err}"),
            }
        }
        flush_all(&mut server);
        assert!(client.join().unwrap() == expected, "echo intact");
        assert!(
            !server.holds_buffers(),
            "everything sent and read: the connection keeps no buffer ({versions:?})"
        );
        assert_eq!(server.pending_bytes(), 0);
    }
}

#[test]
fn a_key_update_from_the_client_is_followed_in_both_directions() {
    let dir = TempDir::new("tls-keyupdate");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    let (mut server, sock) = pair(settings.config());
    let config = pki.client_config(&[&TLS13], &[b"http/1.1"]);
    let client = thread::spawn(move || {
        let conn = rustls::ClientConnection::new(config, localhost()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"before").unwrap();
        let mut reply = [0u8; 6];
        tls.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"BEFORE");
        // New keys for the client's direction; rustls asks the server to
        // update its own too.
        tls.conn.refresh_traffic_keys().unwrap();
        tls.write_all(b"after!").unwrap();
        tls.read_exact(&mut reply).unwrap();
        reply
    });
    assert_eq!(read_exactly(&mut server, 6).unwrap(), b"before");
    server.write(b"BEFORE").unwrap();
    flush_all(&mut server);
    assert_eq!(read_exactly(&mut server, 6).unwrap(), b"after!");
    server.write(b"AFTER!").unwrap();
    flush_all(&mut server);
    assert_eq!(&client.join().unwrap(), b"AFTER!");
}

#[test]
fn a_handshake_message_that_never_makes_sense_is_refused_after_its_last_record() {
    let dir = TempDir::new("tls-bighello");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    let (mut server, mut sock) = pair(settings.config());
    // A "ClientHello" of 65 000 bytes of nonsense, in 16 KiB records: the
    // server must keep the parts between reads, then refuse it whole.
    let body_len: usize = 65_000;
    let mut message = vec![0x01, 0x00, (body_len >> 8) as u8, body_len as u8];
    message.extend(std::iter::repeat_n(0xAB, body_len));
    let mut wire = Vec::new();
    for record in message.chunks(16_384) {
        wire.extend_from_slice(&[0x16, 0x03, 0x01]);
        wire.extend_from_slice(&(record.len() as u16).to_be_bytes());
        wire.extend_from_slice(record);
    }
    let writer = thread::spawn(move || {
        for part in wire.chunks(5_000) {
            if sock.write_all(part).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        sock
    });
    let err = read_exactly(&mut server, 1).expect_err("nonsense must be refused");
    assert!(
        matches!(TlsFailure::of(&err), Some(TlsFailure::Rejected(_))),
        "{err}"
    );
    drop(writer.join().unwrap());
}

/// A small deterministic generator for split points (xorshift64*).
struct Splits(u64);

impl Splits {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

#[test]
fn random_record_splits_write_sizes_and_flush_points_keep_both_directions_intact() {
    let dir = TempDir::new("tls-splits");
    let pki = pki(&dir);
    let settings = TlsSettings::load(&pki.cert, &pki.key).unwrap();
    for seed in 1..=6u64 {
        let versions = if seed % 2 == 0 {
            &[&TLS12][..]
        } else {
            &[&TLS13][..]
        };
        let (mut server, mut sock) = pair(settings.config());
        sock.set_nodelay(true).unwrap();
        let config = pki.client_config(versions, &[b"http/1.1"]);
        let mut splits = Splits(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // What the client sends: messages of 1 B to 40 kB.
        let mut upstream = Vec::new();
        for _ in 0..30 {
            let len = 1 + splits.below(40_000);
            upstream.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed as u8)));
        }
        let total_up = upstream.len();
        let client_seed = splits.0;
        let client = thread::spawn(move || {
            let mut splits = Splits(client_seed);
            let mut conn = rustls::ClientConnection::new(config, localhost()).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).unwrap();
            }
            // Each message becomes records; the records go out cut at
            // random points, some with a pause between the pieces.
            let mut sent = 0;
            while sent < upstream.len() {
                let len = (1 + splits.below(40_000)).min(upstream.len() - sent);
                conn.writer()
                    .write_all(&upstream[sent..sent + len])
                    .unwrap();
                sent += len;
                let mut wire = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut wire).unwrap();
                }
                let mut at = 0;
                while at < wire.len() {
                    let piece = (1 + splits.below(3_000)).min(wire.len() - at);
                    sock.write_all(&wire[at..at + piece]).unwrap();
                    at += piece;
                    if splits.below(8) == 0 {
                        thread::sleep(Duration::from_micros(200));
                    }
                }
            }
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut echoed = vec![0u8; upstream.len()];
            tls.read_exact(&mut echoed).unwrap();
            echoed == upstream
        });
        let got = read_exactly(&mut server, total_up).unwrap();
        assert_eq!(got.len(), total_up);
        // Echo it in random write sizes, flushing only at random points.
        let mut at = 0;
        while at < got.len() {
            let len = (1 + splits.below(20_000)).min(got.len() - at);
            match server.write(&got[at..at + len]) {
                Ok(n) => at += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    server.flush_pending().unwrap();
                    thread::sleep(STEP);
                }
                Err(err) => panic!("write: {err}"),
            }
            if splits.below(3) == 0 {
                server.flush_pending().unwrap();
            }
        }
        flush_all(&mut server);
        assert!(
            client.join().unwrap(),
            "seed {seed}: the echo came back intact ({versions:?})"
        );
        assert!(!server.holds_buffers(), "seed {seed}: nothing left inside");
    }
}
