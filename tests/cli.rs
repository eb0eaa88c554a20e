//! The `wschat` binary: flags, `WSCHAT_*` variables, exit statuses and
//! signals (PROTOCOL sections 7 and 8).

mod common;

use common::client::{Client, assert_fields};
use common::raw::{self, Next, Raw, new_key, upgrade_request};
use common::server::{BinServer, bin, run_to_exit};
use serde_json::json;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// `wschat 0 --host 127.0.0.1 ARGS...`
fn local(args: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.args(["0", "--host", "127.0.0.1"]).args(args);
    cmd
}

fn non_empty_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// The command must exit with status 2 and one stderr line containing
/// `names`.
fn assert_usage_error(cmd: Command, names: &str) {
    let (status, stdout, stderr) = run_to_exit(cmd, EXIT_WITHIN);
    assert_eq!(status.code(), Some(2), "stderr: {stderr:?}");
    let lines = non_empty_lines(&stderr);
    assert_eq!(lines.len(), 1, "expected one stderr line, got {stderr:?}");
    assert!(
        lines[0].contains(names),
        "stderr line {:?} does not name {names:?}",
        lines[0]
    );
    assert!(
        !stdout.contains("listening"),
        "started despite a bad setting: {stdout:?}"
    );
}

#[test]
fn help_prints_usage_and_exits_0() {
    for flag in ["--help", "-h"] {
        let mut cmd = bin();
        cmd.arg(flag);
        let (status, stdout, _) = run_to_exit(cmd, EXIT_WITHIN);
        assert!(status.success(), "{flag}: {status:?}");
        for needle in [
            "--max-connections",
            "--echo",
            "--allowed-origin",
            "--idle-timeout",
        ] {
            assert!(stdout.contains(needle), "{flag} output lacks {needle}");
        }
    }
}

#[test]
fn version_prints_the_version_and_exits_0() {
    for flag in ["--version", "-V"] {
        let mut cmd = bin();
        cmd.arg(flag);
        let (status, stdout, _) = run_to_exit(cmd, EXIT_WITHIN);
        assert!(status.success(), "{flag}: {status:?}");
        assert!(
            stdout.contains(env!("CARGO_PKG_VERSION")),
            "{flag} printed {stdout:?}"
        );
    }
}

#[test]
fn unknown_flag_exits_2_naming_it() {
    assert_usage_error(local(&["--bogus"]), "--bogus");
    assert_usage_error(local(&["--max-conections", "5"]), "--max-conections");
}

#[test]
fn bad_values_exit_2_naming_the_flag() {
    for (flag, value) in [
        ("--rate-limit", "fast"),
        ("--max-connections", "-1"),
        ("--max-message-bytes", "1e6"),
        ("--idle-timeout", "1.5"),
        ("--handshake-timeout", ""),
        ("--max-chat-chars", "ten"),
        ("--max-output-bytes", "99999999999999999999999"),
        ("--max-total-output-bytes", "-1"),
        ("--close-timeout", "-3"),
        ("--shutdown-timeout", "x"),
    ] {
        assert_usage_error(local(&[flag, value]), flag);
    }
    // A flag without its value.
    assert_usage_error(local(&["--rate-limit"]), "--rate-limit");
}

#[test]
fn bad_port_exits_2() {
    let mut cmd = bin();
    cmd.args(["70000", "--host", "127.0.0.1"]);
    let (status, _, stderr) = run_to_exit(cmd, EXIT_WITHIN);
    assert_eq!(status.code(), Some(2), "{stderr:?}");
    assert_eq!(non_empty_lines(&stderr).len(), 1, "{stderr:?}");
    assert!(
        stderr.contains("70000") || stderr.contains("PORT"),
        "{stderr:?}"
    );
}

#[test]
fn bad_variables_exit_2_naming_them() {
    for (var, value) in [
        ("WSCHAT_RATE_LIMIT", "fast"),
        ("WSCHAT_MAX_CONNECTIONS", "-5"),
        ("WSCHAT_IDLE_TIMEOUT", "soon"),
        ("WSCHAT_ECHO", "maybe"),
        ("WSCHAT_ECHO", "yes"),
    ] {
        let mut cmd = local(&[]);
        cmd.env(var, value);
        assert_usage_error(cmd, var);
    }
}

#[test]
fn port_in_use_exits_1_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut cmd = bin();
    cmd.env_remove("RUST_LOG");
    cmd.args([port.as_str(), "--host", "127.0.0.1"]);
    let (status, _, stderr) = run_to_exit(cmd, EXIT_WITHIN);
    assert_eq!(status.code(), Some(1), "{stderr:?}");
    let lines = non_empty_lines(&stderr);
    assert_eq!(lines.len(), 1, "expected one stderr line, got {stderr:?}");
    assert!(
        lines[0].contains(&port),
        "{:?} does not name the port",
        lines[0]
    );
}

#[test]
fn listening_line_and_serving() {
    let server = BinServer::start(local(&[]));
    let response = raw::get(server.addr, "/healthz");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok\n");
}

#[test]
fn echo_variable_and_flag() {
    for (var, arg) in [
        (Some("1"), None),
        (Some("true"), None),
        (None, Some("--echo")),
    ] {
        let mut cmd = local(&[]);
        if let Some(value) = var {
            cmd.env("WSCHAT_ECHO", value);
        }
        if let Some(arg) = arg {
            cmd.arg(arg);
        }
        let server = BinServer::start(cmd);
        let mut ws = raw::ws(server.addr, "/echo");
        ws.send_text("ping?");
        let f = ws.read_frame();
        assert_eq!((f.opcode, f.payload.as_slice()), (raw::TEXT, &b"ping?"[..]));
    }
    // WSCHAT_ECHO=0: /echo is chat.
    let mut cmd = local(&[]);
    cmd.env("WSCHAT_ECHO", "false");
    let server = BinServer::start(cmd);
    let (_c, users) = Client::chat_at(server.addr, "/echo");
    assert_eq!(users["type"], "users");
}

#[test]
fn flag_wins_over_variable() {
    let mut cmd = local(&["--max-chat-chars", "10"]);
    cmd.env("WSCHAT_MAX_CHAT_CHARS", "5");
    let server = BinServer::start(cmd);
    let mut c = Client::named(server.addr, "alice");
    c.send(json!({"message": "eight ch"}));
    assert_fields(
        &c.recv(),
        &json!({"type": "usermsg", "message": "eight ch"}),
    );
    c.send(json!({"message": "eleven char"}));
    c.expect_error("too_long");

    // The variable alone applies.
    let mut cmd = local(&[]);
    cmd.env("WSCHAT_MAX_CHAT_CHARS", "5");
    let server = BinServer::start(cmd);
    let mut c = Client::named(server.addr, "alice");
    c.send(json!({"message": "eight ch"}));
    c.expect_error("too_long");
}

#[test]
fn allowed_origin_variable_takes_a_list() {
    let mut cmd = local(&[]);
    cmd.env(
        "WSCHAT_ALLOWED_ORIGIN",
        "https://a.example,https://b.example:8443",
    );
    let server = BinServer::start(cmd);
    for (origin, status) in [
        ("https://a.example", 101),
        ("https://B.example:8443", 101),
        ("https://c.example", 403),
    ] {
        let key = new_key();
        let line = format!("Origin: {origin}");
        let mut raw = Raw::connect(server.addr);
        raw.send(upgrade_request("/", &key, &[&line]).as_bytes());
        assert_eq!(raw.read_head().status, status, "{origin}");
    }
    // Repeated flags, and a flag replaces the variable's list.
    let mut cmd = local(&[
        "--allowed-origin",
        "https://x.example",
        "--allowed-origin",
        "https://y.example",
    ]);
    cmd.env("WSCHAT_ALLOWED_ORIGIN", "https://a.example");
    let server = BinServer::start(cmd);
    for (origin, status) in [
        ("https://x.example", 101),
        ("https://y.example", 101),
        ("https://a.example", 403),
    ] {
        let key = new_key();
        let line = format!("Origin: {origin}");
        let mut raw = Raw::connect(server.addr);
        raw.send(upgrade_request("/", &key, &[&line]).as_bytes());
        assert_eq!(raw.read_head().status, status, "{origin}");
    }
}

#[test]
fn max_connections_variable() {
    let mut cmd = local(&[]);
    cmd.env("WSCHAT_MAX_CONNECTIONS", "1");
    let server = BinServer::start(cmd);
    let _hold = raw::chat(server.addr);
    let mut next = Raw::connect(server.addr);
    assert_eq!(next.read_response().status, 503);
}

fn signal_test(signal: &str) {
    let mut server = BinServer::start(local(&["--shutdown-timeout", "2"]));
    let mut a = raw::chat_named(server.addr, "alice");
    let mut b = raw::chat(server.addr);
    let mut c = Client::chat(server.addr);
    let mut pending = Raw::connect(server.addr);
    pending.send(b"GET /healthz HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(server.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
    a.expect_close(Some(1001));
    b.expect_close(Some(1001));
    assert_eq!(c.expect_close(), Some(1001));
    a.reply_close(1001);
    b.reply_close(1001);
    // tungstenite replied to the close when it read it; flush it out.
    let _ = c.ws.flush();
    match pending.next_within(Duration::from_secs(2)) {
        Next::Eof | Next::Reset => {}
        other => panic!("plain connection not closed at shutdown: {other:?}"),
    }
    let exit = server
        .wait_exit(Duration::from_secs(4))
        .unwrap_or_else(|| panic!("wschat still running 4 s after SIG{signal}"));
    assert_eq!(exit.code(), Some(0), "exit after SIG{signal}: {exit:?}");
    // All replied: no need to wait for the 2 s shutdown timeout.
    assert!(
        start.elapsed() < Duration::from_millis(1800),
        "took {:?} although every client replied",
        start.elapsed()
    );
}

#[test]
fn sigterm_sends_1001_to_everyone_and_exits_0() {
    signal_test("TERM");
}

#[test]
fn sigint_sends_1001_to_everyone_and_exits_0() {
    signal_test("INT");
}

#[test]
fn sigterm_with_a_silent_client_exits_after_the_shutdown_timeout() {
    let mut server = BinServer::start(local(&["--shutdown-timeout", "1"]));
    let mut silent = raw::chat(server.addr);
    let start = Instant::now();
    server.sigterm();
    silent.expect_close(Some(1001));
    let exit = server
        .wait_exit(Duration::from_secs(4))
        .expect("wschat still running 4 s after SIGTERM");
    assert_eq!(exit.code(), Some(0));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "exited after {took:?}, without waiting for the close reply"
    );
    assert!(took <= Duration::from_millis(2500), "exited after {took:?}");
    let _ = server.stderr_text();
}

#[test]
fn bad_admin_tokens_exit_2_with_one_line_and_never_echo_the_token() {
    let dir = std::env::temp_dir().join(format!("wschat-cli-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good_file = dir.join("good");
    std::fs::write(&good_file, "\n  file-token-0123456789abcdef \n").unwrap();
    let short_file = dir.join("short");
    std::fs::write(&short_file, "tiny-secret\n").unwrap();
    let good_file = good_file.to_str().unwrap();
    let short_file = short_file.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["--admin-token", "tiny-secret"],
            "--admin-token",
            "tiny-secret",
        ),
        (
            vec!["--admin-token", "has spaces in it but long"],
            "--admin-token",
            "has spaces",
        ),
        (
            vec!["--admin-token-file", short_file],
            "--admin-token-file",
            "tiny-secret",
        ),
        (
            vec![
                "--admin-token",
                "cli-token-0123456789abcdef",
                "--admin-token-file",
                good_file,
            ],
            "--admin-token",
            "0123456789abcdef",
        ),
    ];
    for (args, names, secret) in cases {
        let (status, stdout, stderr) = run_to_exit(local(&args), EXIT_WITHIN);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout:?}");
        assert_eq!(non_empty_lines(&stderr).len(), 1, "{args:?}: {stderr:?}");
        assert!(stderr.contains(names), "{args:?}: {stderr:?}");
        assert!(!stderr.contains(secret), "the token was echoed: {stderr:?}");
    }
    let mut cmd = local(&[]);
    cmd.env("WSCHAT_ADMIN_TOKEN", "short");
    let (status, _, stderr) = run_to_exit(cmd, EXIT_WITHIN);
    assert_eq!(status.code(), Some(2), "{stderr:?}");
    assert_eq!(non_empty_lines(&stderr).len(), 1, "{stderr:?}");
    assert!(stderr.contains("WSCHAT_ADMIN_TOKEN"), "{stderr:?}");
    // The file's token, trimmed, opens the API.
    let server = BinServer::start(local(&["--admin-token-file", good_file]));
    let auth = "Authorization: Bearer file-token-0123456789abcdef";
    let response = raw::http(
        server.addr,
        &raw::request("GET /api/users HTTP/1.1", &["Host: x", auth]),
    );
    assert_eq!(response.status, 200, "{}", response.body_text());
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
