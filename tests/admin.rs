//! The admin API and the console (PROTOCOL section 11), against a real
//! server: every row of the check table in its order, bodies over several
//! writes or never completed, publish, private announcements, kicks, the
//! log, and `--console` with standard input a pipe.

mod common;

use common::client::{Client, assert_fields, user_names};
use common::raw::{self, Next, Raw, Response, request};
use common::server::{BinServer, TestServer, bin};
use common::{QUIET, READ_TIMEOUT};
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

const TOKEN: &str = "admin-token-0123456789";

fn admin_server() -> TestServer {
    TestServer::with(|c| c.admin_token = Some(TOKEN.into()))
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

/// A request head with `Host`, the given headers and, for `Some(body)`, a
/// matching `Content-Length` followed by the body.
fn api_request(method_path: &str, headers: &[&str], body: Option<&str>) -> String {
    let mut lines = vec!["Host: 127.0.0.1".to_string()];
    lines.extend(headers.iter().map(|h| h.to_string()));
    if let Some(body) = body {
        lines.push(format!("Content-Length: {}", body.len()));
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut text = request(&format!("{method_path} HTTP/1.1"), &refs);
    text.push_str(body.unwrap_or_default());
    text
}

fn call(addr: SocketAddr, method_path: &str, headers: &[&str], body: Option<&str>) -> Response {
    raw::http(addr, &api_request(method_path, headers, body))
}

/// An authorised POST with a JSON body.
fn post(addr: SocketAddr, path: &str, body: &Value) -> Response {
    call(
        addr,
        &format!("POST {path}"),
        &[&bearer()],
        Some(&body.to_string()),
    )
}

/// Every admin answer is JSON with `Connection: close`; every error has
/// `{"error": code, "message": text}`.
fn json_body(response: &Response) -> Value {
    assert_eq!(
        response.header("Content-Type"),
        Some("application/json"),
        "{response:?}"
    );
    assert_eq!(response.header("Connection"), Some("close"));
    assert_eq!(
        response.header("Content-Length"),
        Some(response.body.len().to_string().as_str()),
    );
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", response.body_text()))
}

fn assert_error(response: &Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status, status, "{:?}", response.body_text());
    let body = json_body(response);
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

#[test]
fn checks_run_in_the_order_of_the_table() {
    let server = admin_server();
    let addr = server.addr;
    let wrong = "Authorization: Bearer not-the-token-0123456789";
    // 1. No such admin path, whatever the method and token.
    for method in ["GET", "POST", "DELETE"] {
        let r = call(addr, &format!("{method} /api/nope"), &[], None);
        assert_error(&r, 404, "not_found");
    }
    assert_error(
        &call(addr, "GET /api/", &[&bearer()], None),
        404,
        "not_found",
    );
    // 2. The wrong method, before the token is looked at: 405 before 401.
    let r = call(addr, "POST /api/users", &[], Some("{}"));
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    for path in ["/api/publish", "/api/kick"] {
        for method in ["GET", "HEAD", "PUT", "DELETE"] {
            let (_, r) =
                raw::http_head_only(addr, &api_request(&format!("{method} {path}"), &[], None));
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("Allow"), Some("POST"), "{method} {path}");
        }
    }
    // 3. The token, before the body's length: 401 before 411 and 413.
    for auth in [
        None,
        Some(wrong),
        Some("Authorization: Basic YWRtaW46cGFzcw=="),
        Some("Authorization: Bearer"),
        Some("Authorization: Bearer admin-token-012345678"),
        Some("Authorization: Bearer admin-token-0123456789x"),
        Some("Authorization: BearerXadmin-token-0123456789"),
    ] {
        let headers: Vec<&str> = auth.into_iter().collect();
        for (path, body) in [("GET /api/users", None), ("POST /api/publish", None)] {
            let r = call(addr, path, &headers, body);
            assert_error(&r, 401, "unauthorized");
            assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"), "{auth:?}");
        }
        let mut oversized = headers.clone();
        oversized.push("Content-Length: 70000");
        let r = call(addr, "POST /api/kick", &oversized, None);
        assert_error(&r, 401, "unauthorized");
    }
    // The scheme in any case, one or more spaces.
    for auth in [
        format!("Authorization: bearer {TOKEN}"),
        format!("Authorization: BEARER    {TOKEN}"),
    ] {
        assert_eq!(call(addr, "GET /api/users", &[&auth], None).status, 200);
    }
    // 4. A POST without Content-Length (chunked included): 411 before 413.
    let r = call(addr, "POST /api/publish", &[&bearer()], None);
    assert_error(&r, 411, "length_required");
    let r = call(
        addr,
        "POST /api/publish",
        &[&bearer(), "Transfer-Encoding: chunked"],
        None,
    );
    assert_error(&r, 411, "length_required");
    // 5. Over 64 KiB, judged from the header before any body is sent.
    let r = call(
        addr,
        "POST /api/kick",
        &[&bearer(), "Content-Length: 65537"],
        None,
    );
    assert_error(&r, 413, "too_large");
    // 7. Then the body; 9. then the user.
    let r = post(addr, "/api/kick", &json!({"name": 5}));
    assert_error(&r, 400, "bad_request");
    let r = post(addr, "/api/kick", &json!({"name": "nobody"}));
    assert_error(&r, 404, "unknown_user");
}

#[test]
fn head_gets_the_headers_only() {
    let server = admin_server();
    let get = call(server.addr, "GET /api/users", &[&bearer()], None);
    assert_eq!(get.status, 200);
    let (mut raw, head) = raw::http_head_only(
        server.addr,
        &api_request("HEAD /api/users", &[&bearer()], None),
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Type"), Some("application/json"));
    assert_eq!(
        head.header("Content-Length"),
        Some(get.body.len().to_string().as_str())
    );
    assert!(raw.read_to_eof().is_empty(), "HEAD got a body");
    for (path, status) in [("/api/nope", 404), ("/api/publish", 405)] {
        let (mut raw, head) = raw::http_head_only(
            server.addr,
            &api_request(&format!("HEAD {path}"), &[], None),
        );
        assert_eq!(head.status, status);
        assert_eq!(head.header("Content-Type"), Some("application/json"));
        assert_ne!(head.header("Content-Length"), Some("0"));
        assert!(raw.read_to_eof().is_empty(), "HEAD {path} got a body");
    }
    let (mut raw, head) =
        raw::http_head_only(server.addr, &api_request("HEAD /api/users", &[], None));
    assert_eq!(head.status, 401);
    assert!(raw.read_to_eof().is_empty());
}

#[test]
fn bad_bodies_are_400() {
    let server = TestServer::with(|c| {
        c.admin_token = Some(TOKEN.into());
        c.max_chat_chars = 10;
    });
    let addr = server.addr;
    let mut alice = Client::named(addr, "alice");
    for (path, body) in [
        ("/api/publish", ""),
        ("/api/publish", "not json"),
        ("/api/publish", "[]"),
        ("/api/publish", "\"message\""),
        ("/api/publish", "{\"message\":\"hi\"} trailing"),
        ("/api/publish", "{}"),
        ("/api/publish", "{\"message\":null}"),
        ("/api/publish", "{\"message\":5}"),
        ("/api/publish", "{\"message\":[\"hi\"]}"),
        ("/api/publish", "{\"message\":\"  \\t \"}"),
        ("/api/publish", "{\"message\":\"hi\",\"toname\":3}"),
        ("/api/publish", "{\"message\":\"hi\",\"toname\":{}}"),
        ("/api/publish", "{\"message\":\"\\ud800\"}"),
        // Eleven characters, two bytes each, after trimming.
        ("/api/publish", "{\"message\":\" ééééééééééé \"}"),
        ("/api/kick", "{}"),
        ("/api/kick", "{\"name\":null}"),
        ("/api/kick", "{\"name\":[]}"),
        ("/api/kick", "{\"name\":\"alice\",\"reason\":1}"),
    ] {
        let r = call(addr, &format!("POST {path}"), &[&bearer()], Some(body));
        let answer = assert_error(&r, 400, "bad_request");
        assert!(answer["message"].is_string(), "{body}: {answer}");
    }
    // A reason of 101 characters is refused, 100 accepted.
    let r = post(
        addr,
        "/api/kick",
        &json!({"name": "alice", "reason": "r".repeat(101)}),
    );
    assert_error(&r, 400, "bad_request");
    // Nothing of the refused requests reached the chat.
    alice.expect_quiet();
    // Exactly the limit, with unknown fields and a null toname.
    let r = post(
        addr,
        "/api/publish",
        &json!({"message": " éééééééééé ", "toname": null, "extra": [1]}),
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(alice.recv()["message"], "éééééééééé");
}

#[test]
fn wrong_json_types_answer_before_the_user_check() {
    let server = admin_server();
    // An unknown user with a bad reason is still a 400 (check 7 before 9).
    let r = post(
        server.addr,
        "/api/kick",
        &json!({"name": "nobody", "reason": false}),
    );
    assert_error(&r, 400, "bad_request");
    let r = post(
        server.addr,
        "/api/publish",
        &json!({"message": 1, "toname": "nobody"}),
    );
    assert_error(&r, 400, "bad_request");
}

#[test]
fn unknown_users_are_404() {
    let server = admin_server();
    let _bob = Client::named(server.addr, "bob");
    let r = post(
        server.addr,
        "/api/publish",
        &json!({"message": "hi", "toname": "alice"}),
    );
    let body = assert_error(&r, 404, "unknown_user");
    assert!(
        body["message"].as_str().unwrap().contains("alice"),
        "{body}"
    );
    let r = post(server.addr, "/api/kick", &json!({"name": "alice"}));
    assert_error(&r, 404, "unknown_user");
    let r = post(server.addr, "/api/kick", &json!({"name": "   "}));
    assert_error(&r, 404, "unknown_user");
}

#[test]
fn users_lists_every_named_user_with_colour() {
    let server = admin_server();
    let r = call(server.addr, "GET /api/users?x=1", &[&bearer()], None);
    assert_eq!(json_body(&r), json!({"users": []}));
    let mut alice = Client::chat(server.addr);
    alice.send(json!({"type": "join", "name": "Alice", "color": "#00aa00"}));
    alice.recv();
    let _bob = Client::named(server.addr, "bob");
    let _unnamed = Client::chat(server.addr);
    let r = call(server.addr, "GET /api/users", &[&bearer()], None);
    assert_eq!(r.status, 200);
    let body = json_body(&r);
    let mut names = user_names(&body);
    names.sort();
    assert_eq!(names, ["Alice", "bob"]);
    let alice_entry = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "Alice")
        .unwrap();
    assert_eq!(alice_entry["color"], "00AA00");
}

#[test]
fn publish_reaches_every_chat_client_with_an_id_and_is_kept() {
    let server = admin_server();
    let mut alice = Client::named(server.addr, "alice");
    let mut unnamed = Client::chat(server.addr);
    let before = now_ms();
    let r = post(
        server.addr,
        "/api/publish",
        &json!({"message": "  Maintenance at 18:00 \n", "toname": "  "}),
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let answer = json_body(&r);
    assert_eq!(answer["ok"], true);
    let id = answer["id"]
        .as_str()
        .expect("a broadcast has an id")
        .to_string();
    assert!(
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{id}"
    );
    let mut seen = Vec::new();
    for client in [&mut alice, &mut unnamed] {
        let event = client.recv();
        assert_fields(
            &event,
            &json!({"type": "system", "event": "announce", "message": "Maintenance at 18:00", "id": id}),
        );
        let ts = event["ts"].as_u64().expect("ts");
        assert!(ts >= before && ts <= now_ms() + 1, "{ts}");
        assert!(event.get("name").is_none(), "{event}");
        seen.push(event);
    }
    assert_eq!(seen[0], seen[1], "everyone gets the same event");
    // Kept in the history exactly as delivered.
    let (_, _, history) = Client::greeted(server.addr, "/");
    assert_eq!(history["messages"], json!([seen[0]]));
    // A second one gets another id.
    let r = post(server.addr, "/api/publish", &json!({"message": "again"}));
    assert_ne!(json_body(&r)["id"], id);
}

#[test]
fn private_publish_reaches_that_user_alone_without_an_id() {
    let server = admin_server();
    let mut alice = Client::named(server.addr, "Alice");
    let mut bob = Client::named(server.addr, "bob");
    alice.recv(); // bob's join
    let r = post(
        server.addr,
        "/api/publish",
        &json!({"message": "just you", "toname": " ALICE "}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(json_body(&r), json!({"ok": true}));
    let event = alice.recv();
    assert_fields(
        &event,
        &json!({"type": "system", "event": "announce", "message": "just you"}),
    );
    assert!(event.get("id").is_none(), "{event}");
    bob.expect_quiet();
    let (_, _, history) = Client::greeted(server.addr, "/");
    assert_eq!(history["messages"], json!([]));
}

/// Reads frames until a close frame; returns its code and reason.
fn close_of(raw: &mut Raw) -> (u16, String) {
    loop {
        match raw.next_within(READ_TIMEOUT) {
            Next::Frame(f) if f.opcode == raw::CLOSE => {
                let code = f.close_code().expect("a close code");
                let reason = String::from_utf8(f.payload[2..].to_vec()).expect("UTF-8 reason");
                return (code, reason);
            }
            Next::Frame(_) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[test]
fn kick_closes_with_1008_the_leave_follows_and_the_name_is_free_at_once() {
    let server = admin_server();
    let mut eve = raw::chat_named(server.addr, "Eve");
    let mut bob = Client::named(server.addr, "bob");
    // 100 two-byte characters: "kicked: " and 57 of them fit 123 bytes.
    let reason = "ü".repeat(100);
    let r = post(
        server.addr,
        "/api/kick",
        &json!({"name": " eve ", "reason": reason}),
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(json_body(&r), json!({"ok": true}));
    let (code, got) = close_of(&mut eve);
    assert_eq!(code, 1008);
    assert_eq!(got, format!("kicked: {}", "ü".repeat(57)));
    assert!(got.len() <= 123);
    assert_fields(
        &bob.recv(),
        &json!({"type": "system", "event": "leave", "name": "Eve"}),
    );
    // Claimable again at once, even before Eve answered the close.
    let mut again = Client::chat(server.addr);
    again.join("eve");
    eve.reply_close(1008);

    // Without a reason: just "kicked"; four-byte characters cut whole.
    let mut mallory = raw::chat_named(server.addr, "mallory");
    let r = post(
        server.addr,
        "/api/kick",
        &json!({"name": "MALLORY", "reason": null}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(close_of(&mut mallory), (1008, "kicked".to_string()));
    let mut trudy = raw::chat_named(server.addr, "trudy");
    let r = post(
        server.addr,
        "/api/kick",
        &json!({"name": "trudy", "reason": "😀".repeat(100)}),
    );
    assert_eq!(r.status, 200);
    let (_, got) = close_of(&mut trudy);
    assert_eq!(got, format!("kicked: {}", "😀".repeat(28)));
}

#[test]
fn a_body_split_across_writes_is_read_whole() {
    let server = admin_server();
    let mut alice = Client::named(server.addr, "alice");
    let body = json!({"message": "in pieces"}).to_string();
    let head = api_request(
        "POST /api/publish",
        &[&bearer(), &format!("Content-Length: {}", body.len())],
        None,
    );
    let mut raw = Raw::connect(server.addr);
    // The head in two writes, the body in three.
    let (a, b) = head.split_at(10);
    raw.send(a.as_bytes());
    thread::sleep(Duration::from_millis(50));
    raw.send(b.as_bytes());
    for part in [&body[..3], &body[3..9], &body[9..]] {
        thread::sleep(Duration::from_millis(50));
        raw.send(part.as_bytes());
    }
    let r = raw.read_response();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(alice.recv()["message"], "in pieces");
}

#[test]
fn expect_100_continue_is_invited() {
    let server = admin_server();
    let body = json!({"message": "after continue"}).to_string();
    let head = api_request(
        "POST /api/publish",
        &[
            &bearer(),
            "Expect: 100-continue",
            &format!("Content-Length: {}", body.len()),
        ],
        None,
    );
    let mut raw = Raw::connect(server.addr);
    raw.send(head.as_bytes());
    let interim = raw.read_head();
    assert_eq!(interim.status, 100);
    raw.send(body.as_bytes());
    let r = raw.read_response();
    assert_eq!(r.status, 200, "{}", r.body_text());
    // A refused head gets its final answer, not an invitation.
    let head = api_request(
        "POST /api/publish",
        &["Expect: 100-continue", "Content-Length: 5"],
        None,
    );
    let (_, r) = raw::http_head_only(server.addr, &head);
    assert_eq!(r.status, 401);
}

#[test]
fn a_body_that_never_completes_is_closed_without_a_response() {
    let server = TestServer::with(|c| {
        c.admin_token = Some(TOKEN.into());
        c.handshake_timeout = Duration::from_secs(1);
    });
    let mut alice = Client::named(server.addr, "alice");
    let mut raw = Raw::connect(server.addr);
    let start = Instant::now();
    raw.send(
        api_request(
            "POST /api/publish",
            &[&bearer(), "Content-Length: 40"],
            None,
        )
        .as_bytes(),
    );
    raw.send(br#"{"message":"never fin"#);
    match raw.next_within(Duration::from_secs(4)) {
        Next::Eof | Next::Reset => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
    let took = start.elapsed();
    assert!(
        raw.buf.is_empty(),
        "a response was sent: {:?}",
        String::from_utf8_lossy(&raw.buf)
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    alice.expect_quiet();
}

#[test]
fn bodies_up_to_64_kib_are_read_and_one_byte_more_is_413() {
    let server = admin_server();
    let mut alice = Client::named(server.addr, "alice");
    let mut body = json!({"message": "padded"}).to_string();
    body.push_str(&" ".repeat(65536 - body.len()));
    assert_eq!(body.len(), 65536);
    let r = call(server.addr, "POST /api/publish", &[&bearer()], Some(&body));
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(alice.recv()["message"], "padded");
    body.push(' ');
    let mut raw = Raw::connect(server.addr);
    let head = api_request(
        "POST /api/publish",
        &[&bearer(), "Content-Length: 65537"],
        None,
    );
    raw.send(head.as_bytes());
    // The answer comes from the head alone; the body may then be refused.
    let r = raw.read_head();
    assert_eq!(r.status, 413);
    let _ = raw.try_send(body.as_bytes());
    alice.expect_quiet();
}

#[test]
fn a_handshake_to_api_paths_is_a_chat_upgrade() {
    let server = admin_server();
    let mut raw = raw::ws(server.addr, "/api/users");
    assert_eq!(raw.read_json()["type"], "users");
    assert_eq!(raw.read_json()["type"], "history");
}

#[test]
fn without_a_token_api_paths_are_plain_404() {
    let server = TestServer::new();
    let r = call(server.addr, "GET /api/users", &[&bearer()], None);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    let r = call(server.addr, "POST /api/publish", &[&bearer()], Some("{}"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    // And other paths keep section 2's method check with the API on.
    let server = admin_server();
    let r = call(server.addr, "POST /apix", &[&bearer()], Some("{}"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
}

#[test]
fn metrics_do_not_count_admin_answers_as_rejections() {
    let server = admin_server();
    call(server.addr, "GET /api/users", &[], None);
    let metrics = common::metrics::scrape(server.addr);
    assert_eq!(
        metrics.get("wschat_connections_rejected_total{reason=\"bad_request\"}"),
        0.0
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The binary with the admin API, logging at info.
fn admin_binary(extra: &[&str]) -> std::process::Command {
    let mut cmd = bin();
    cmd.args(["0", "--host", "127.0.0.1", "--admin-token", TOKEN])
        .args(extra)
        .env("RUST_LOG", "info");
    cmd
}

#[test]
fn every_admin_request_is_logged_without_token_or_body() {
    let mut server = BinServer::start(admin_binary(&[]));
    let addr = server.addr;
    let _alice = Client::named(addr, "alice");
    let secret = "body-secret-words-never-logged";
    assert_eq!(
        post(addr, "/api/publish", &json!({"message": secret})).status,
        200
    );
    assert_eq!(call(addr, "GET /api/users", &[], None).status, 401);
    let wrong = format!("Authorization: Bearer {secret}");
    assert_eq!(call(addr, "GET /api/users", &[&wrong], None).status, 401);
    assert_eq!(
        post(
            addr,
            "/api/kick",
            &json!({"name": "nobody", "reason": secret})
        )
        .status,
        404
    );
    assert_eq!(call(addr, "GET /api/nope", &[&bearer()], None).status, 404);
    // A body cut short by the client's EOF: logged without a status.
    let mut raw = Raw::connect(addr);
    raw.send(api_request("POST /api/kick", &[&bearer(), "Content-Length: 99"], None).as_bytes());
    raw.send(secret.as_bytes());
    raw.shutdown_write();
    assert!(raw.read_to_eof().is_empty());
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    let log = server.stderr_text();
    assert!(!log.contains(TOKEN), "token in the log:\n{log}");
    assert!(!log.contains(secret), "body or header in the log:\n{log}");
    let admin_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("admin request"))
        .collect();
    assert_eq!(admin_lines.len(), 6, "{log}");
    for (line, want) in admin_lines.iter().zip([
        "POST /api/publish -> 200",
        "GET /api/users -> 401",
        "GET /api/users -> 401",
        "POST /api/kick -> 404",
        "GET /api/nope -> 404",
        "POST /api/kick -> closed without a response",
    ]) {
        assert!(line.contains("127.0.0.1:") && line.contains(want), "{line}");
        assert!(line.contains(" INFO "), "{line}");
    }
}

#[test]
fn console_lines_are_announced_and_end_of_input_keeps_serving() {
    let (mut server, mut stdin) =
        BinServer::start_piped(admin_binary(&["--console", "--max-chat-chars", "20"]));
    let addr = server.addr;
    let mut alice = Client::named(addr, "alice");
    stdin.write_all(b"  Maintenance at 18:00  \n\n").unwrap();
    stdin.flush().unwrap();
    let event = alice.recv();
    assert_fields(
        &event,
        &json!({"type": "system", "event": "announce", "message": "Maintenance at 18:00"}),
    );
    assert!(event["id"].is_string(), "{event}");
    // Over --max-chat-chars: refused, nothing sent.
    stdin
        .write_all(format!("{}\n", "x".repeat(21)).as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    alice.expect_quiet();
    stdin.write_all("second ü\n".as_bytes()).unwrap();
    stdin.flush().unwrap();
    let second = alice.recv();
    assert_eq!(second["message"], "second ü");
    assert_ne!(second["id"], event["id"]);
    // Kept in the history like a published announcement.
    let (_, _, history) = Client::greeted(addr, "/");
    assert_eq!(history["messages"], json!([event, second]));
    // End of input: the server goes on.
    drop(stdin);
    thread::sleep(QUIET);
    let health = raw::get(addr, "/healthz");
    assert_eq!((health.status, health.body_text().as_str()), (200, "ok\n"));
    alice.send(json!({"message": "still here"}));
    assert_eq!(alice.recv()["message"], "still here");
    assert_eq!(
        post(addr, "/api/publish", &json!({"message": "api"})).status,
        200
    );
    assert_eq!(alice.recv()["message"], "api");
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    let log = server.stderr_text();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(
        refusals,
        ["wschat: console: line over 20 characters refused"],
        "{log}"
    );
    assert!(log.contains("end of standard input"), "{log}");
}
