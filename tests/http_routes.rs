//! Plain HTTP on the WebSocket port (PROTOCOL section 2, route table).

mod common;

use common::metrics;
use common::raw::{self, Response, request};
use common::server::TestServer;
use std::net::SocketAddr;

fn head(addr: SocketAddr, path: &str) -> Response {
    raw::http(
        addr,
        &request(&format!("HEAD {path} HTTP/1.1"), &["Host: 127.0.0.1"]),
    )
}

fn assert_connection_close(response: &Response) {
    let value = response
        .header("Connection")
        .unwrap_or_else(|| panic!("plain response without Connection header: {response:?}"));
    assert!(value.eq_ignore_ascii_case("close"), "{response:?}");
}

fn assert_content_length_matches(response: &Response) {
    if let Some(len) = response.header("Content-Length") {
        assert_eq!(
            len.parse::<usize>().expect("numeric Content-Length"),
            response.body.len(),
            "Content-Length does not match the body"
        );
    }
}

#[test]
fn root_and_index_serve_the_web_client() {
    let server = TestServer::new();
    let root = raw::get(server.addr, "/");
    assert_eq!(root.status, 200, "{root:?}");
    assert_eq!(
        root.header("Content-Type")
            .map(|v| v.to_ascii_lowercase().replace(' ', "")),
        Some("text/html;charset=utf-8".to_string())
    );
    assert_connection_close(&root);
    assert_content_length_matches(&root);
    let body = root.body_text().to_ascii_lowercase();
    assert!(
        body.contains("<html") || body.contains("<!doctype html"),
        "not HTML: {body:.200}"
    );

    let index = raw::get(server.addr, "/index.html");
    assert_eq!(index.status, 200);
    assert_eq!(index.header("Content-Type"), root.header("Content-Type"));
    assert_eq!(
        index.body, root.body,
        "/ and /index.html serve the same page"
    );
}

#[test]
fn healthz_says_ok() {
    let server = TestServer::new();
    let response = raw::get(server.addr, "/healthz");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok\n");
    assert!(
        response
            .header("Content-Type")
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/plain")),
        "{response:?}"
    );
    assert_connection_close(&response);
    assert_content_length_matches(&response);
}

#[test]
fn metrics_exposes_the_contract_names() {
    let server = TestServer::new();
    let response = raw::get(server.addr, "/metrics");
    assert_eq!(response.status, 200);
    let content_type = response
        .header("Content-Type")
        .expect("Content-Type")
        .to_ascii_lowercase()
        .replace(' ', "");
    assert!(
        content_type.starts_with("text/plain;version=0.0.4"),
        "{content_type}"
    );
    assert_connection_close(&response);
    assert_content_length_matches(&response);
    let m = metrics::parse(&response.body_text());
    for name in [
        "wschat_connections_open",
        "wschat_connections_accepted_total",
        "wschat_connections_rejected_total",
        "wschat_messages_received_total",
        "wschat_messages_sent_total",
        "wschat_bytes_received_total",
        "wschat_bytes_sent_total",
        "wschat_closes_total",
        "wschat_slow_consumers_dropped_total",
        "wschat_rate_limited_total",
        "wschat_users_named",
    ] {
        assert!(m.mentions(name), "/metrics lacks {name}:\n{}", m.text);
    }
    for state in ["handshake", "open", "closing", "http"] {
        let series = format!("wschat_connections_open{{state=\"{state}\"}}");
        assert!(
            m.text.contains(&series),
            "/metrics lacks {series}:\n{}",
            m.text
        );
    }
    // This very scrape is an open plain HTTP connection.
    assert!(
        m.get(r#"wschat_connections_open{state="http"}"#) >= 1.0,
        "{}",
        m.text
    );
    assert!(
        m.get("wschat_connections_accepted_total") >= 1.0,
        "{}",
        m.text
    );
}

#[test]
fn unknown_paths_are_404() {
    let server = TestServer::new();
    for path in [
        "/nope",
        "/index.htm",
        "/healthz/extra",
        "/metrics2",
        "/echo",
    ] {
        let response = raw::get(server.addr, path);
        assert_eq!(response.status, 404, "{path}: {response:?}");
        assert_connection_close(&response);
        assert_content_length_matches(&response);
    }
}

#[test]
fn head_gets_status_and_headers_without_body() {
    let server = TestServer::new();
    for path in ["/", "/index.html", "/healthz", "/metrics", "/nope"] {
        let get = raw::get(server.addr, path);
        let head = head(server.addr, path);
        assert_eq!(head.status, get.status, "{path}");
        assert!(
            head.body.is_empty(),
            "HEAD {path} got a body: {:?}",
            head.body_text()
        );
        assert_eq!(
            head.header("Content-Type"),
            get.header("Content-Type"),
            "{path}"
        );
        assert_connection_close(&head);
        if path != "/metrics" {
            // The metrics body changes between scrapes; the others do not.
            assert_eq!(
                head.header("Content-Length"),
                get.header("Content-Length"),
                "{path}"
            );
        }
    }
}

#[test]
fn query_string_is_ignored_by_routing() {
    let server = TestServer::new();
    let response = raw::get(server.addr, "/healthz?x=1");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok\n");
    let response = raw::get(server.addr, "/?room=lobby&x");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("Content-Type")
            .is_some_and(|v| v.starts_with("text/html")),
        "{response:?}"
    );
    assert_eq!(raw::get(server.addr, "/metrics?format=text").status, 200);
    assert_eq!(raw::get(server.addr, "/index.html?v=2").status, 200);
    assert_eq!(raw::get(server.addr, "/nope?healthz").status, 404);
}

#[test]
fn plain_http_needs_no_host_and_accepts_http_1_0() {
    // Check 5 (plain HTTP) comes before the handshake checks of row 6.
    let server = TestServer::new();
    let response = raw::http(server.addr, &request("GET /healthz HTTP/1.0", &[]));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"ok\n");
}

#[test]
fn plain_http_closes_even_when_the_client_asks_for_keep_alive() {
    let server = TestServer::new();
    let response = raw::http(
        server.addr,
        &request(
            "GET /healthz HTTP/1.1",
            &["Host: 127.0.0.1", "Connection: keep-alive"],
        ),
    );
    // read_response only returns once the server has closed.
    assert_eq!(response.status, 200);
    assert_connection_close(&response);
}

#[test]
fn request_followed_by_half_close_still_gets_its_response() {
    // Like `printf 'GET /healthz ...' | nc -N`: the client ends its side
    // right after the request.
    let server = TestServer::new();
    let mut raw = raw::Raw::connect(server.addr);
    raw.send(request("GET /healthz HTTP/1.1", &["Host: 127.0.0.1"]).as_bytes());
    raw.shutdown_write();
    let response = raw.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok\n");
}
